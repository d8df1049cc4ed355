package interop

// DERP region mesh: nodes that share a mesh key and name each other in -mesh-with dial each other
// as mesh clients (WatchConns, PeerPresent/PeerGone, ForwardPacket). Two derpd nodes, and a mixed
// region of derpd and Tailscale's derper meshed both ways, with Tailscale's derphttp client on
// each node: packets cross nodes in both directions, and a client that leaves its node is reported
// gone (PeerGone, disconnected) to the clients on the other node that heard from it, as derper does;
// a node that restarts is redialed and packets flow again. A region whose nodes are known by DNS
// names and reached through derper's "host/dialhost" mesh entries: the links connect to the dial
// address but speak TLS to the name (SNI and certificate), which both servers insist on.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/types/key"
)

// meshNodePlan is one node of a test region, planned before any node starts so that every node's
// -mesh-with can name every other node's address.
type meshNodePlan struct {
	kind string // "derpd" or "derper"
	name string // dial-host regions only: the node's DNS name (-hostname, its certificate's only name)
	port int
	dir  string
	crt  string // TLS only: this node's self-signed certificate
}

func (p *meshNodePlan) addr() string { return fmt.Sprintf("127.0.0.1:%d", p.port) }

// regionOpts: how the nodes of a test region know each other.
type regionOpts struct {
	tls bool
	// Nodes are named derpN.mesh.test (never resolved: nothing may look these names up), with a
	// certificate for the name only, and mesh with "derpN.mesh.test:PORT/127.0.0.1". Implies tls.
	dialHost bool
}

// startMeshRegion starts one node per kind, all with the same mesh key and the same -mesh-with
// list (which names every node, this one included, as derper allows). With TLS, each node gets its
// own certificate for 127.0.0.1 and every process trusts all of them through SSL_CERT_FILE (Go's
// and OpenSSL's default trust store override), as a real region trusts its public certificates.
func startMeshRegion(t *testing.T, useTLS bool, kinds ...string) []*meshNode {
	t.Helper()
	return startRegion(t, regionOpts{tls: useTLS}, kinds...)
}

func startRegion(t *testing.T, o regionOpts, kinds ...string) []*meshNode {
	t.Helper()
	useTLS := o.tls || o.dialHost
	plans := make([]*meshNodePlan, len(kinds))
	var meshWith []string
	for i, k := range kinds {
		plans[i] = &meshNodePlan{kind: k, port: freePort(t), dir: t.TempDir()}
		entry := plans[i].addr()
		if o.dialHost {
			plans[i].name = fmt.Sprintf("derp%d.mesh.test", i)
			entry = fmt.Sprintf("%s:%d/127.0.0.1", plans[i].name, plans[i].port)
		}
		meshWith = append(meshWith, entry)
	}
	if useTLS {
		var bundle []byte
		for i, p := range plans {
			var crt string
			var err error
			if p.name != "" {
				crt, err = writeCert(filepath.Join(p.dir, "certs"), certSpec{file: p.name,
					cn: fmt.Sprintf("mesh test node %d", i), dnsNames: []string{p.name}, ca: true})
			} else {
				crt, err = writeNodeCert(filepath.Join(p.dir, "certs"), "127.0.0.1", fmt.Sprintf("mesh test node %d", i))
			}
			if err != nil {
				t.Fatal(err)
			}
			p.crt = crt
			b, err := os.ReadFile(crt)
			if err != nil {
				t.Fatal(err)
			}
			bundle = append(bundle, b...)
		}
		roots := filepath.Join(t.TempDir(), "region-roots.pem")
		if err := os.WriteFile(roots, bundle, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv("SSL_CERT_FILE", roots) // inherited by the server processes started below
	}
	meshKeyFile := filepath.Join(t.TempDir(), "mesh.key")
	if err := os.WriteFile(meshKeyFile, []byte(testMeshKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var nodes []*meshNode
	for _, p := range plans {
		args := []string{"-a", p.addr(), "-http-port", "-1", "-stun=false", "-c", filepath.Join(p.dir, "derper.key"),
			"-mesh-psk-file", meshKeyFile, "-mesh-with", strings.Join(meshWith, ",")}
		s := &derpServer{Name: p.kind, URL: fmt.Sprintf("http://%s/derp", p.addr())}
		if useTLS {
			hostname, host := "127.0.0.1", p.addr()
			if p.name != "" {
				hostname, host = p.name, fmt.Sprintf("%s:%d", p.name, p.port)
			}
			args = append(args, "-certmode", "manual", "-hostname", hostname, "-certdir", filepath.Dir(p.crt))
			s.URL = fmt.Sprintf("https://%s/derp", host)
			s.CertFile = p.crt
		}
		var bin string
		switch p.kind {
		case "derper":
			bin = derperBinary(t)
		case "derpd":
			bin = derpdBinary(t)
			args = append(args, "--metrics-addr", "127.0.0.1:0", "--workers", "2")
		default:
			t.Fatalf("unknown server kind %q", p.kind)
		}
		n := &meshNode{derpServer: s, addr: p.addr(), bin: bin, args: args}
		n.start(t)
		nodes = append(nodes, n)
	}
	return nodes
}

// meshNode is one running node of a test region.
type meshNode struct {
	*derpServer
	addr string
	bin  string
	args []string
	proc *process
}

func (n *meshNode) start(t *testing.T) {
	t.Helper()
	proc := startProcess(t, n.addr, n.bin, n.args...)
	n.proc = proc
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s on %s output:\n%s", n.Name, n.addr, proc.text())
		}
	})
}

// restart stops the node (SIGTERM to its PID), waits until the process is gone (its listeners use
// SO_REUSEPORT: a second process must not share the port with a dying one), and starts it again
// with the same key file, so its server key stays the same.
func (n *meshNode) restart(t *testing.T) {
	t.Helper()
	pid := n.proc.cmd.Process.Pid
	if err := n.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("stop %s: %v", n.Name, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for syscall.Kill(pid, 0) == nil { // reaped by startProcess's Wait once it exited
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still running 15s after SIGTERM", n.Name, pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.start(t)
}

// writeNodeCert writes <dir>/<ip>.crt and .key (the names -certmode manual looks for): a
// self-signed ECDSA P-256 certificate for the IP, valid for a day, whose subject is `cn`. Every node
// of a region needs its own subject: OpenSSL finds a trust anchor by subject name, so two anchors
// with the same subject (peers.go's certificates are all "127.0.0.1") shadow each other.
func writeNodeCert(dir, ip, cn string) (string, error) {
	return writeCert(dir, certSpec{file: ip, cn: cn, ips: []net.IP{net.ParseIP(ip)}, ca: true})
}

// meshPeer is Tailscale's derphttp client on one node, its messages read into a channel. It always
// connects to the node's loopback address, whatever host its URL names (derper's mesh dialer).
type meshPeer struct {
	name string
	c    *derphttp.Client
	key  key.NodePublic
	msgs chan derp.ReceivedMessage
}

func dialMeshPeer(t *testing.T, name string, n *meshNode) *meshPeer {
	t.Helper()
	s := n.derpServer
	priv := key.NewNode()
	c, err := derphttp.NewClient(priv, s.URL, t.Logf, netmon.NewStatic())
	if err != nil {
		t.Fatal(err)
	}
	c.TLSConfig = s.TLSConfig(t)
	var d net.Dialer
	c.SetURLDialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, n.addr)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("%s: derphttp connect %s: %v", name, s.URL, err)
	}
	p := &meshPeer{name: name, c: c, key: priv.Public(), msgs: make(chan derp.ReceivedMessage, 1024)}
	go func() {
		defer close(p.msgs)
		for {
			m, err := c.Recv()
			if err != nil {
				return // closed by the test (Recv after an error would redial)
			}
			if rp, ok := m.(derp.ReceivedPacket); ok {
				rp.Data = append([]byte(nil), rp.Data...) // Data aliases the client's buffer
				m = rp
			}
			select {
			case p.msgs <- m:
			default: // a test that stopped reading: drop
			}
		}
	}()
	t.Cleanup(func() { c.Close() })
	// Registered once ServerInfo arrived: from then on packets to this key are delivered.
	p.await(t, 15*time.Second, "ServerInfo", func(m derp.ReceivedMessage) bool {
		_, ok := m.(derp.ServerInfoMessage)
		return ok
	})
	return p
}

// await reads messages until match returns true (bounded by timeout).
func (p *meshPeer) await(t *testing.T, timeout time.Duration, what string, match func(derp.ReceivedMessage) bool) {
	t.Helper()
	if !p.poll(timeout, match) {
		t.Fatalf("%s: no %s within %v", p.name, what, timeout)
	}
}

func (p *meshPeer) poll(timeout time.Duration, match func(derp.ReceivedMessage) bool) bool {
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-p.msgs:
			if !ok {
				return false
			}
			if match(m) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// sendAcross sends from -> to until one packet arrives (the nodes mesh within a few seconds of
// starting; until then the sender's node does not know the key and drops). Returns the payload that
// arrived, after checking its source.
func sendAcross(t *testing.T, from, to *meshPeer, tag string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for i := 0; time.Now().Before(deadline); i++ {
		payload := []byte(fmt.Sprintf("mesh %s %d", tag, i))
		if err := from.c.Send(to.key, payload); err != nil {
			t.Fatalf("%s: send: %v", from.name, err)
		}
		var got []byte
		if to.poll(250*time.Millisecond, func(m derp.ReceivedMessage) bool {
			rp, ok := m.(derp.ReceivedPacket)
			if ok && rp.Source == from.key && bytes.HasPrefix(rp.Data, []byte("mesh "+tag+" ")) {
				got = rp.Data
				return true
			}
			return false
		}) {
			t.Logf("%s -> %s: %q arrived after %d sends", from.name, to.name, got, i+1)
			return
		}
	}
	t.Fatalf("%s -> %s: no packet crossed the mesh within %v", from.name, to.name, timeout)
}

// leaveAndExpectGone closes `leaver` and waits for `watcher` (which received packets from it, on
// another node) to get PeerGone(leaver, disconnected).
func leaveAndExpectGone(t *testing.T, leaver, watcher *meshPeer) {
	t.Helper()
	leaver.c.Close()
	expectGone(t, watcher, leaver, 10*time.Second, "")
}

// expectGone waits up to `timeout` for `watcher` to get PeerGone(gone, disconnected); `why` says
// what made it go, for the failure message.
func expectGone(t *testing.T, watcher, gone *meshPeer, timeout time.Duration, why string) {
	t.Helper()
	what := "PeerGone for " + gone.name
	if why != "" {
		what += " " + why
	}
	var reason derp.PeerGoneReasonType = 0xff
	watcher.await(t, timeout, what, func(m derp.ReceivedMessage) bool {
		pg, ok := m.(derp.PeerGoneMessage)
		if ok && pg.Peer == gone.key {
			reason = pg.Reason
			return true
		}
		return false
	})
	if reason != derp.PeerGoneReasonDisconnected {
		t.Fatalf("%s: PeerGone reason %d, want disconnected", watcher.name, reason)
	}
}

// exercise: a on node 0, b on node 1; both directions; then b leaves (a hears it is gone), then a
// second pair the other way round (c on node 1 hears that d on node 0 left).
func exerciseMesh(t *testing.T, nodes []*meshNode) {
	t.Helper()
	a := dialMeshPeer(t, "a@"+nodes[0].Name, nodes[0])
	b := dialMeshPeer(t, "b@"+nodes[1].Name, nodes[1])
	sendAcross(t, a, b, "a-to-b", 30*time.Second)
	sendAcross(t, b, a, "b-to-a", 10*time.Second)
	leaveAndExpectGone(t, b, a)

	c := dialMeshPeer(t, "c@"+nodes[1].Name, nodes[1])
	d := dialMeshPeer(t, "d@"+nodes[0].Name, nodes[0])
	sendAcross(t, c, d, "c-to-d", 10*time.Second)
	sendAcross(t, d, c, "d-to-c", 10*time.Second)
	leaveAndExpectGone(t, d, c)
}

func TestMeshDerpdPair(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := "plain"
		if useTLS {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			exerciseMesh(t, startMeshRegion(t, useTLS, "derpd", "derpd"))
		})
	}
}

// derpd and derper in one region: each dials the other (derper always over https, so TLS).
func TestMeshMixedRegion(t *testing.T) {
	t.Run("derpd-first", func(t *testing.T) {
		exerciseMesh(t, startMeshRegion(t, true, "derpd", "derper"))
	})
	t.Run("derper-first", func(t *testing.T) {
		exerciseMesh(t, startMeshRegion(t, true, "derper", "derpd"))
	})
}

// host/dialhost entries: each node dials 127.0.0.1 but must send the peer's name as SNI (both servers
// refuse a ClientHello without it when -hostname is a DNS name) and check the certificate for it
// (the certificates carry only the name). derper does this itself; derpd must do the same.
func TestMeshDialHost(t *testing.T) {
	for _, kinds := range [][]string{{"derpd", "derpd"}, {"derpd", "derper"}} {
		t.Run(kinds[0]+"-"+kinds[1], func(t *testing.T) {
			exerciseMesh(t, startRegion(t, regionOpts{dialHost: true}, kinds...))
		})
	}
}

// A node that goes away takes its clients out of the region (the other node's clients that heard
// from them get PeerGone), and once it is back the other node's link redials it. Both directions:
// derpd's link redials a restarted derper, and derper's link redials a restarted derpd.
func TestMeshNodeRestart(t *testing.T) {
	for _, kinds := range [][]string{{"derpd", "derpd"}, {"derper", "derpd"}, {"derpd", "derper"}} {
		t.Run(kinds[0]+"-sees-"+kinds[1]+"-restart", func(t *testing.T) {
			nodes := startMeshRegion(t, true, kinds...)
			a := dialMeshPeer(t, "a@"+nodes[0].Name, nodes[0])
			b := dialMeshPeer(t, "b@"+nodes[1].Name, nodes[1])
			sendAcross(t, a, b, "before", 30*time.Second)
			sendAcross(t, b, a, "reply", 10*time.Second)

			nodes[1].restart(t)
			expectGone(t, a, b, 15*time.Second, "after its node stopped")
			b2 := dialMeshPeer(t, "b2@"+nodes[1].Name, nodes[1])
			// derper redials after 5 s; derpd's backoff is shorter.
			sendAcross(t, a, b2, "after", 30*time.Second)
			sendAcross(t, b2, a, "after-reply", 10*time.Second)
		})
	}
}
