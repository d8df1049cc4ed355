package interop

import (
	"bufio"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// derpd is a running derpd process started by a test; it is stopped (by PID) in t.Cleanup.
type derpd struct {
	cmd       *exec.Cmd
	mu        sync.Mutex
	log       []string
	stunAddrs []netip.AddrPort
}

var stunLine = regexp.MustCompile(`stun listening on udp (\S+)`)

func startDerpd(t *testing.T, args ...string) *derpd {
	t.Helper()
	d := &derpd{cmd: exec.Command(derpdBinary(t), args...)}
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = d.cmd.Stdout
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.log = append(d.log, line)
			if m := stunLine.FindStringSubmatch(line); m != nil {
				if ap, err := netip.ParseAddrPort(m[1]); err == nil {
					d.stunAddrs = append(d.stunAddrs, ap)
				}
			}
			d.mu.Unlock()
			if strings.Contains(line, "derpd ready") {
				ready <- true
			}
		}
		ready <- false
	}()
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-done
		}
	})
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("derpd exited before it was ready:\n%s", d.text())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("derpd not ready after 10s:\n%s", d.text())
	}
	return d
}

func (d *derpd) text() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.log, "\n")
}
