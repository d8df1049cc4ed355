package interop

// Our C++ DERP client (derpcat, over client/derp) against real DERP servers (see peers.go), with
// Tailscale's own Go client (derp/derphttp) in the same tests as a control and as a peer.
//
// Needs DERPCAT_BIN (the derpcat binary); derper is built from the pinned module unless DERPER_BIN
// points at one.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/types/key"
)

const testMeshKey = "6d657368206b657920666f722074686520696e7465726f70207465737473210a"

func derpcatBin(t *testing.T) string {
	t.Helper()
	p := os.Getenv("DERPCAT_BIN")
	if p == "" {
		t.Skip("DERPCAT_BIN is not set (run through ctest / tools/test)")
	}
	return p
}

// derpcatArgs: --url and how to trust the server, then extra.
func derpcatArgs(s *derpServer, extra ...string) []string {
	args := []string{"--url", s.URL}
	if s.CertName != "" {
		args = append(args, "--cert-name", s.CertName)
	}
	return append(args, extra...)
}

type derpcatResult struct {
	code   int
	stdout string
	stderr string
	events []map[string]any // --json lines
}

func (r derpcatResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// find returns the events named name.
func (r derpcatResult) find(name string) []map[string]any {
	var out []map[string]any
	for _, e := range r.events {
		if e["event"] == name {
			out = append(out, e)
		}
	}
	return out
}

func parseEvents(t *testing.T, stdout string) []map[string]any {
	t.Helper()
	var events []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("derpcat printed bad JSON %q: %v", line, err)
		}
		events = append(events, e)
	}
	return events
}

// runDerpcat runs derpcat to completion (bounded by timeout).
func runDerpcat(t *testing.T, timeout time.Duration, args ...string) derpcatResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, derpcatBin(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	r := derpcatResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	default:
		t.Fatalf("derpcat %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("derpcat %v did not finish within %v\n%s", args, timeout, r)
	}
	r.events = parseEvents(t, r.stdout)
	return r
}

// goClient connects Tailscale's derphttp client to s; closed in t.Cleanup.
func goClient(t *testing.T, s *derpServer) (*derphttp.Client, key.NodePublic) {
	t.Helper()
	priv := key.NewNode()
	c, err := derphttp.NewClient(priv, s.URL, t.Logf, netmon.NewStatic())
	if err != nil {
		t.Fatal(err)
	}
	c.TLSConfig = s.TLSConfig(t)
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("derphttp connect %s: %v", s.URL, err)
	}
	// The server registers a client before it sends ServerInfo: once that arrived, packets sent
	// to this key are delivered (the Go client itself does not wait for it).
	recvUntil(t, c, 15*time.Second, func(m derp.ReceivedMessage) bool {
		_, ok := m.(derp.ServerInfoMessage)
		return ok
	})
	return c, priv.Public()
}

type packet struct {
	src  key.NodePublic
	data []byte
}

// recvUntil reads messages from c (bounded by timeout) until keep returns true for one.
func recvUntil(t *testing.T, c *derphttp.Client, timeout time.Duration, keep func(derp.ReceivedMessage) bool) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		for {
			m, err := c.Recv()
			if err != nil {
				done <- err
				return
			}
			if keep(m) {
				done <- nil
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("derphttp recv: %v", err)
		}
	case <-time.After(timeout):
		c.Close() // unblocks the reader
		<-done
		t.Fatalf("nothing expected arrived within %v", timeout)
	}
}

// recvPacket waits (bounded) for the next packet on c, skipping other messages.
func recvPacket(t *testing.T, c *derphttp.Client, timeout time.Duration) packet {
	t.Helper()
	var p packet
	recvUntil(t, c, timeout, func(m derp.ReceivedMessage) bool {
		rp, ok := m.(derp.ReceivedPacket)
		if ok {
			p = packet{rp.Source, append([]byte(nil), rp.Data...)}
		}
		return ok
	})
	return p
}

type serverCase struct {
	name string
	kind serverKind
	opts serverOpts
}

func serverCases() []serverCase {
	var out []serverCase
	for _, k := range derpServers {
		out = append(out, serverCase{k.name + "/plain", k, serverOpts{}}, serverCase{k.name + "/tls", k, serverOpts{TLS: true}})
	}
	return out
}

// The control: Tailscale's own client works with the server (both directions).
func TestGoClientControl(t *testing.T) {
	for _, sc := range serverCases() {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.kind.start(t, sc.opts)
			a, aKey := goClient(t, s)
			b, bKey := goClient(t, s)
			for i := 0; i < 3; i++ {
				msg := []byte(fmt.Sprintf("go control %d", i))
				if err := a.Send(bKey, msg); err != nil {
					t.Fatal(err)
				}
				p := recvPacket(t, b, 10*time.Second)
				if p.src != aKey || !bytes.Equal(p.data, msg) {
					t.Fatalf("b got %q from %v, want %q from %v", p.data, p.src, msg, aKey)
				}
				if err := b.Send(aKey, msg); err != nil {
					t.Fatal(err)
				}
				if p := recvPacket(t, a, 10*time.Second); p.src != bKey || !bytes.Equal(p.data, msg) {
					t.Fatalf("a got %q from %v", p.data, p.src)
				}
			}
		})
	}
}

// derpcat check: two C++ clients through the server, both ways, ping, PeerGone.
func TestDerpcatCheck(t *testing.T) {
	for _, sc := range serverCases() {
		t.Run(sc.name, func(t *testing.T) {
			derpcatBin(t)
			s := sc.kind.start(t, sc.opts)
			variants := [][]string{{}}
			if sc.opts.TLS {
				variants = append(variants, []string{"--no-fast-start"})
			}
			for _, extra := range variants {
				args := derpcatArgs(s, append(extra, "--json", "check", "--count", "3", "--size", "1200")...)
				r := runDerpcat(t, 90*time.Second, args...)
				if r.code != 0 {
					t.Fatalf("derpcat check failed:\n%s", r)
				}
				res := r.find("check_result")
				if len(res) != 1 || res[0]["pass"] != true {
					t.Fatalf("no passing check_result:\n%s", r)
				}
				steps, _ := res[0]["steps"].([]any)
				names := map[string]map[string]any{}
				for _, st := range steps {
					m := st.(map[string]any)
					names[m["name"].(string)] = m
					if m["ok"] != true {
						t.Errorf("step %v failed: %v", m["name"], m["error"])
					}
				}
				for _, want := range []string{"connect_a", "connect_b", "ping_a", "ping_b", "a_to_b", "b_to_a", "unknown_peer", "peer_gone"} {
					if names[want] == nil {
						t.Errorf("step %s missing:\n%s", want, r)
					}
				}
				ca := names["connect_a"]
				wantFast := sc.opts.TLS && len(extra) == 0
				if ca["fast_start"] != wantFast {
					t.Errorf("fast_start = %v, want %v", ca["fast_start"], wantFast)
				}
				if sc.opts.TLS && ca["tls"] != "TLSv1.3" {
					t.Errorf("tls = %v, want TLSv1.3", ca["tls"])
				}
				if !sc.opts.TLS && ca["tls"] != "none" {
					t.Errorf("tls = %v, want none", ca["tls"])
				}
				if names["a_to_b"]["packets"] != "3/3" || names["b_to_a"]["packets"] != "3/3" {
					t.Errorf("packets: %v %v", names["a_to_b"]["packets"], names["b_to_a"]["packets"])
				}
			}
			// The plain-text form ends in PASS with exit code 0 too.
			r := runDerpcat(t, 90*time.Second, derpcatArgs(s, "check", "--count", "1")...)
			if r.code != 0 || !strings.Contains(r.stdout, "\nPASS ") {
				t.Fatalf("plain check:\n%s", r)
			}
		})
	}
}

// derpcat and the Go client as peers of each other, in both directions.
func TestDerpcatWithGoClient(t *testing.T) {
	for _, sc := range serverCases() {
		t.Run(sc.name, func(t *testing.T) {
			bin := derpcatBin(t)
			s := sc.kind.start(t, sc.opts)
			g, gKey := goClient(t, s)

			// derpcat -> Go.
			r := runDerpcat(t, 60*time.Second, derpcatArgs(s, "--json", "send", "--to", gKey.String(), "--count", "3", "--data", "from derpcat")...)
			if r.code != 0 {
				t.Fatalf("derpcat send:\n%s", r)
			}
			conn := r.find("connected")
			if len(conn) != 1 {
				t.Fatalf("no connected event:\n%s", r)
			}
			var sender key.NodePublic
			if err := sender.UnmarshalText([]byte(conn[0]["me"].(string))); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				p := recvPacket(t, g, 10*time.Second)
				if p.src != sender || string(p.data) != "from derpcat" {
					t.Fatalf("Go client got %q from %v, want %q from %v", p.data, p.src, "from derpcat", sender)
				}
			}

			// Go -> derpcat: derpcat recv runs in the background; its first line names its key.
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, derpcatArgs(s, "--json", "recv", "--count", "2", "--timeout", "30")...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			scanner := bufio.NewScanner(stdout)
			var lines []string
			var receiver key.NodePublic
			for scanner.Scan() {
				lines = append(lines, scanner.Text())
				var e map[string]any
				if json.Unmarshal(scanner.Bytes(), &e) == nil && e["event"] == "connected" {
					if err := receiver.UnmarshalText([]byte(e["me"].(string))); err != nil {
						t.Fatal(err)
					}
					break
				}
			}
			if receiver.IsZero() {
				cmd.Wait()
				t.Fatalf("derpcat recv did not connect: %s\n%s", strings.Join(lines, "\n"), stderr.String())
			}
			for i := 0; i < 2; i++ {
				if err := g.Send(receiver, []byte(fmt.Sprintf("from go %d", i))); err != nil {
					t.Fatal(err)
				}
			}
			for scanner.Scan() {
				lines = append(lines, scanner.Text())
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("derpcat recv: %v\n%s\n%s", err, strings.Join(lines, "\n"), stderr.String())
			}
			events := parseEvents(t, strings.Join(lines, "\n"))
			var got []string
			for _, e := range events {
				if e["event"] == "packet" {
					if e["from"] != gKey.String() {
						t.Errorf("packet from %v, want %v", e["from"], gKey)
					}
					got = append(got, e["data"].(string))
				}
			}
			if strings.Join(got, ",") != "from go 0,from go 1" {
				t.Fatalf("derpcat received %q\n%s", got, strings.Join(lines, "\n"))
			}
		})
	}
}

// derpcat ping, and a wrong certificate pin that must be refused.
func TestDerpcatPingAndPin(t *testing.T) {
	for _, k := range derpServers {
		t.Run(k.name, func(t *testing.T) {
			derpcatBin(t)
			s := k.start(t, serverOpts{TLS: true})
			r := runDerpcat(t, 60*time.Second, derpcatArgs(s, "--json", "ping", "--count", "3", "--interval-ms", "10")...)
			if r.code != 0 || len(r.find("pong")) != 3 {
				t.Fatalf("derpcat ping:\n%s", r)
			}
			wrong := *s
			wrong.CertName = "sha256-raw:" + strings.Repeat("00", 32)
			r = runDerpcat(t, 60*time.Second, derpcatArgs(&wrong, "ping", "--count", "1")...)
			if r.code != 1 || !strings.Contains(r.stderr, "hash does not match") {
				t.Fatalf("wrong pin accepted or wrong error:\n%s", r)
			}
			// Without a pin, the self-signed certificate fails system-root verification.
			noPin := *s
			noPin.CertName = ""
			r = runDerpcat(t, 60*time.Second, derpcatArgs(&noPin, "ping", "--count", "1")...)
			if r.code != 1 || !strings.Contains(r.stderr, "cert_verify") {
				t.Fatalf("self-signed certificate accepted:\n%s", r)
			}
		})
	}
}

// derpcat watch with the mesh key lists the server's clients (PeerPresent).
func TestDerpcatWatchWithMeshKey(t *testing.T) {
	for _, k := range derpServers {
		t.Run(k.name, func(t *testing.T) {
			derpcatBin(t)
			s := k.start(t, serverOpts{MeshKey: testMeshKey})
			_, gKey := goClient(t, s)
			meshFile := filepath.Join(t.TempDir(), "mesh.key")
			if err := os.WriteFile(meshFile, []byte(testMeshKey), 0o600); err != nil {
				t.Fatal(err)
			}
			r := runDerpcat(t, 60*time.Second, derpcatArgs(s, "--json", "--mesh-key-file", meshFile, "watch", "--timeout", "2")...)
			if r.code != 0 {
				t.Fatalf("derpcat watch:\n%s", r)
			}
			seen := false
			for _, e := range r.find("peer_present") {
				if e["peer"] == gKey.String() {
					seen = true
				}
			}
			if !seen {
				t.Fatalf("no peer_present for the Go client %v:\n%s", gKey, r)
			}
		})
	}
}
