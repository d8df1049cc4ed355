package interop

// Tailscale's own DERP client (derp/derphttp, pinned in go.mod) against derpd, every case also run
// against Tailscale's derper as the control: the same assertions must hold on both.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"tailscale.com/derp"
	"tailscale.com/derp/derpconst"
	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/net/wsconn"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// discoPacket is a packet that looks like a disco message to a DERP server: the magic "TS💬" and
// at least 62 bytes (magic 6 + key 32 + nonce 24).
func discoPacket(n int) []byte {
	p := make([]byte, n)
	rand.Read(p)
	copy(p, "TS\xf0\x9f\x92\xac")
	return p
}

func randomKey() key.NodePublic { return key.NewNode().Public() }

// checkFastStart: over TLS 1.3 the server's chain carries the DERP meta cert naming the server key
// (protocol version 2 as the serial), which is what makes derphttp skip the HTTP 101 (fast start).
func checkFastStart(t *testing.T, c *derphttp.Client) {
	t.Helper()
	cs, ok := c.TLSConnectionState()
	if !ok {
		t.Fatal("no TLS connection state on a https:// client")
	}
	if cs.Version != tls.VersionTLS13 {
		t.Fatalf("TLS version %#x, want TLS 1.3", cs.Version)
	}
	found := false
	for _, cert := range cs.PeerCertificates {
		hexKey, ok := strings.CutPrefix(cert.Subject.CommonName, derpconst.MetaCertCommonNamePrefix)
		if !ok {
			continue
		}
		var k key.NodePublic
		if err := k.UnmarshalText([]byte("nodekey:" + hexKey)); err != nil {
			t.Fatalf("meta cert CN %q: %v", cert.Subject.CommonName, err)
		}
		if k != c.ServerPublicKey() {
			t.Fatalf("meta cert key %v, server key from the DERP handshake %v", k, c.ServerPublicKey())
		}
		if cert.SerialNumber.Int64() != derp.ProtocolVersion {
			t.Fatalf("meta cert serial %v, want %d", cert.SerialNumber, derp.ProtocolVersion)
		}
		found = true
	}
	if !found {
		t.Fatalf("no DERP meta cert in the TLS chain (%d certs): the client did not use fast start", len(cs.PeerCertificates))
	}
}

// packetsLost: packets first..next-1 never arrived; packet next did, intact.
type packetsLost struct{ first, next, size int }

func (e *packetsLost) Error() string {
	return fmt.Sprintf("packets %d..%d lost (the first of them %d bytes); packet %d arrived intact", e.first, e.next-1, e.size, e.next)
}

// transfer sends pkts from one client to another with at most window packets in flight (a DERP
// server may drop the oldest of a full per-client queue) and checks they arrive complete, in
// order and from the right key.
func transfer(from *derphttp.Client, fromKey key.NodePublic, to *msgStream, toKey key.NodePublic, pkts [][]byte, window int) error {
	sem := make(chan struct{}, window)
	sendErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i, p := range pkts {
			select {
			case sem <- struct{}{}:
			case <-stop:
				return
			}
			if err := from.Send(toKey, p); err != nil {
				sendErr <- fmt.Errorf("send %d (%d bytes): %v", i, len(p), err)
				return
			}
		}
	}()
	for i, want := range pkts {
		select {
		case err := <-sendErr:
			return err
		default:
		}
		got, err := to.nextPacket(20 * time.Second)
		if err != nil {
			return fmt.Errorf("packet %d of %d: %v", i, len(pkts), err)
		}
		if got.Source != fromKey {
			return fmt.Errorf("packet %d from %v, want %v", i, got.Source, fromKey)
		}
		if !bytes.Equal(got.Data, want) {
			if len(got.Data) >= 4 {
				seq := int(binary.BigEndian.Uint32(got.Data))
				if seq > i && seq < len(pkts) && bytes.Equal(got.Data, pkts[seq]) {
					return &packetsLost{first: i, next: seq, size: len(want)}
				}
			}
			return fmt.Errorf("packet %d (%d bytes): got %d other bytes (reordered or corrupted)", i, len(want), len(got.Data))
		}
		<-sem
	}
	return nil
}

func testPackets(n int) [][]byte {
	sizes := []int{0, 1, 8, 31, 32, 33, 61, 62, 100, 1200, 1280, 1500, 4096, 9000, 16384, 32768, 65000, 65535, 65536}
	for len(sizes) < n {
		if len(sizes)%5 == 0 {
			sizes = append(sizes, 60000+mrand.IntN(65536-60000+1))
		} else {
			sizes = append(sizes, mrand.IntN(65536+1))
		}
	}
	var pkts [][]byte
	for i, n := range sizes {
		p := make([]byte, n)
		rand.Read(p)
		if n >= 4 {
			binary.BigEndian.PutUint32(p, uint32(i)) // names the packet in failure messages
		}
		pkts = append(pkts, p)
	}
	return pkts
}

// Two clients exchange many packets of every size up to 64 KiB, both directions at once, over
// plain HTTP and over TLS 1.3 with fast start.
func TestDerpHTTPExchange(t *testing.T) {
	for _, sc := range serverCases() {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.kind.start(t, sc.opts)
			a, aKey, aSt := loggedIn(t, s, "a")
			b, bKey, bSt := loggedIn(t, s, "b")
			if sc.opts.TLS {
				checkFastStart(t, a)
				checkFastStart(t, b)
			} else if _, ok := a.TLSConnectionState(); ok {
				t.Fatal("TLS state on a plain http:// client")
			}
			if a.ServerPublicKey().IsZero() || a.ServerPublicKey() != b.ServerPublicKey() {
				t.Fatalf("server keys %v / %v", a.ServerPublicKey(), b.ServerPublicKey())
			}
			ab, ba := testPackets(300), testPackets(300)
			errs := make(chan error, 2)
			go func() { errs <- transfer(a, aKey, bSt, bKey, ab, 16) }()
			go func() { errs <- transfer(b, bKey, aSt, aKey, ba, 16) }()
			var firstErr error
			for i := 0; i < 2; i++ {
				if err := <-errs; err != nil && firstErr == nil {
					firstErr = err
				}
			}
			// (derpd once dropped large packets between its workers here: a queue far from full.)
			if firstErr != nil {
				t.Fatal(firstErr)
			}
			if !aSt.alive() || !bSt.alive() {
				t.Fatalf("a connection ended: %v / %v", aSt.err, bSt.err)
			}
		})
	}
}

// The upgrade at byte level: 101 with derper's headers, or with Derp-Fast-Start no HTTP answer at
// all; a fast-start ClientInfo sent in the same write as the request is read as DERP.
func TestDerpHTTPUpgradeBytes(t *testing.T) {
	for _, sc := range serverCases() {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.kind.start(t, sc.opts)

			slow := openRaw(t, s, false, nil)
			h := slow.resp.Header
			if !strings.EqualFold(h.Get("Upgrade"), "DERP") || !strings.EqualFold(h.Get("Connection"), "Upgrade") ||
				h.Get("Derp-Version") != "2" {
				t.Fatalf("101 headers %v", h)
			}
			if want := hex.EncodeToString(slow.serverKey.AppendTo(nil)); h.Get("Derp-Public-Key") != want {
				t.Fatalf("Derp-Public-Key %q, ServerKey frame says %q", h.Get("Derp-Public-Key"), want)
			}
			slow.login(t, derp.ClientInfo{})
			slow.pingPong(t, []byte("12345678"))

			fast := openRaw(t, s, true, nil) // fails unless the first bytes are a ServerKey frame
			if fast.serverKey != slow.serverKey {
				t.Fatalf("server key %v vs %v", fast.serverKey, slow.serverKey)
			}
			fast.login(t, derp.ClientInfo{})
			fast.pingPong(t, []byte("abcdefgh"))
			if sc.opts.TLS {
				// The meta cert names the same key.
				found := false
				for _, c := range fast.tlsState.PeerCertificates {
					if c.Subject.CommonName == derpconst.MetaCertCommonNamePrefix+hex.EncodeToString(fast.serverKey.AppendTo(nil)) {
						found = true
					}
				}
				if !found || fast.tlsState.Version != tls.VersionTLS13 {
					t.Fatalf("TLS %#x, meta cert found %v", fast.tlsState.Version, found)
				}
			}

			// Fast start with the ClientInfo in the same write as the request (what derphttp does).
			nc, _ := dialServer(t, s, nil)
			r := &rawConn{nc: nc, br: bufio.NewReader(nc), priv: key.NewNode(), serverKey: slow.serverKey}
			r.write(t, append([]byte(upgradeRequest(true)), frame(derp.FrameClientInfo, r.clientInfo(t, derp.ClientInfo{Version: 2}))...))
			if k := r.readServerKey(t); k != slow.serverKey {
				t.Fatalf("server key %v", k)
			}
			r.expectServerInfo(t)
			r.pingPong(t, []byte("pipeline"))
		})
	}
}

// PeerGone(disconnected) reaches a client that received packets from a peer that then leaves.
func TestDerpHTTPPeerGoneDisconnected(t *testing.T) {
	for _, sc := range serverCases() {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.kind.start(t, sc.opts)
			a, aKey, _ := loggedIn(t, s, "a")
			_, bKey, bSt := loggedIn(t, s, "b")
			_, _, cSt := loggedIn(t, s, "c") // received nothing from a
			if err := a.Send(bKey, []byte("hello b")); err != nil {
				t.Fatal(err)
			}
			if p, err := bSt.nextPacket(10 * time.Second); err != nil || p.Source != aKey {
				t.Fatalf("b: %v %v", p.Source, err)
			}
			a.Close()
			m := bSt.next(t, 10*time.Second, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.PeerGoneMessage); return ok })
			if pg := m.(derp.PeerGoneMessage); pg.Peer != aKey || pg.Reason != derp.PeerGoneReasonDisconnected {
				t.Fatalf("PeerGone %v reason %d, want %v reason 0 (disconnected)", pg.Peer, pg.Reason, aKey)
			}
			if m, err := cSt.nextMatch(time.Second, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.PeerGoneMessage); return ok }); err == nil {
				t.Fatalf("c, which never heard from a, got %+v", m)
			}
		})
	}
}

// PeerGone(not here) answers a disco packet to an unknown key; short or non-disco packets to
// unknown keys are dropped silently.
func TestDerpHTTPPeerGoneNotHere(t *testing.T) {
	for _, sc := range serverCases() {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.kind.start(t, sc.opts)
			a, _, aSt := loggedIn(t, s, "a")
			short, plain, disco := randomKey(), randomKey(), randomKey()
			if err := a.Send(short, discoPacket(61)); err != nil { // one byte too short for disco
				t.Fatal(err)
			}
			if err := a.Send(plain, bytes.Repeat([]byte{0x42}, 100)); err != nil {
				t.Fatal(err)
			}
			if err := a.Send(disco, discoPacket(62)); err != nil {
				t.Fatal(err)
			}
			m := aSt.next(t, 10*time.Second, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.PeerGoneMessage); return ok })
			pg := m.(derp.PeerGoneMessage)
			if pg.Peer != disco || pg.Reason != derp.PeerGoneReasonNotHere {
				names := map[key.NodePublic]string{short: "61-byte disco", plain: "non-disco", disco: "disco"}
				t.Fatalf("first PeerGone: %v (%s) reason %d; want the disco destination, reason 1 (not here)", pg.Peer, names[pg.Peer], pg.Reason)
			}
			// A larger disco packet to another unknown key: also answered.
			other := randomKey()
			if err := a.Send(other, discoPacket(300)); err != nil {
				t.Fatal(err)
			}
			m = aSt.next(t, 10*time.Second, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.PeerGoneMessage); return ok })
			if pg := m.(derp.PeerGoneMessage); pg.Peer != other || pg.Reason != derp.PeerGoneReasonNotHere {
				t.Fatalf("PeerGone %v reason %d, want %v reason 1", pg.Peer, pg.Reason, other)
			}
		})
	}
}

// PeerGone(not here) is rate-limited per client (derper: 1/s, burst 3): a burst of disco packets
// to unknown keys gets at least the burst answered and not much more.
func TestDerpHTTPPeerGoneRateLimit(t *testing.T) {
	for _, k := range derpServers {
		t.Run(k.name, func(t *testing.T) {
			s := k.start(t, serverOpts{})
			a, _, aSt := loggedIn(t, s, "a")
			unknown := map[key.NodePublic]bool{}
			start := time.Now()
			for i := 0; i < 20; i++ {
				k := randomKey()
				unknown[k] = true
				if err := a.Send(k, discoPacket(100)); err != nil {
					t.Fatal(err)
				}
			}
			got := 0
			for {
				m, err := aSt.nextMatch(1500*time.Millisecond, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.PeerGoneMessage); return ok })
				if err != nil {
					break
				}
				pg := m.(derp.PeerGoneMessage)
				if !unknown[pg.Peer] || pg.Reason != derp.PeerGoneReasonNotHere {
					t.Fatalf("PeerGone %v reason %d", pg.Peer, pg.Reason)
				}
				got++
			}
			// Burst 3 plus one token per second elapsed (the last wait adds 1.5 s).
			allowed := 3 + int(time.Since(start).Seconds()) + 1
			if got < 3 || got > allowed {
				t.Fatalf("%d PeerGone(not here) for 20 disco packets in %v; want 3..%d", got, time.Since(start).Round(time.Millisecond), allowed)
			}
		})
	}
}

// Tailscale's client over TLS 1.2 finds no meta cert (derphttp only looks under TLS 1.3), so it
// waits for the HTTP 101: the slow path works too.
func TestDerpHTTPTLS12(t *testing.T) {
	for _, k := range derpServers {
		t.Run(k.name, func(t *testing.T) {
			s := k.start(t, serverOpts{TLS: true})
			tls12 := func(c *derphttp.Client) { c.TLSConfig.MaxVersion = tls.VersionTLS12 }
			a, aKey, aSt := loggedIn(t, s, "a", tls12)
			b, bKey, bSt := loggedIn(t, s, "b", tls12)
			cs, ok := a.TLSConnectionState()
			if !ok || cs.Version != tls.VersionTLS12 {
				t.Fatalf("TLS state %v %#x, want TLS 1.2", ok, cs.Version)
			}
			if err := transfer(a, aKey, bSt, bKey, testPackets(40), 1); err != nil {
				t.Fatal(err)
			}
			if err := transfer(b, bKey, aSt, aKey, testPackets(40), 1); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Once a client has its ServerInfo, the server has registered it: a packet sent to it at that
// moment (here a disco packet) is delivered, and its sender is not told PeerGone(not here).
// (derpd once sent ServerInfo before the other workers knew the client.)
func TestDerpHTTPDeliveryRightAfterServerInfo(t *testing.T) {
	for _, k := range derpServers {
		t.Run(k.name, func(t *testing.T) {
			s := k.start(t, serverOpts{})
			a, _, aSt := loggedIn(t, s, "a")
			start := time.Now()
			var failure error
			for i := 0; i < 100 && failure == nil && time.Since(start) < 60*time.Second; i++ {
				b, bKey, bSt := loggedIn(t, s, fmt.Sprintf("b%d", i))
				pkt := discoPacket(100)
				if err := a.Send(bKey, pkt); err != nil {
					t.Fatal(err)
				}
				if p, err := bSt.nextPacket(2 * time.Second); err != nil || !bytes.Equal(p.Data, pkt) {
					failure = fmt.Errorf("client %d: the packet sent right after its ServerInfo never arrived (%v)", i, err)
				}
				if m, err := aSt.nextMatch(time.Millisecond, func(m derp.ReceivedMessage) bool {
					pg, ok := m.(derp.PeerGoneMessage)
					return ok && pg.Peer == bKey
				}); err == nil && failure == nil {
					failure = fmt.Errorf("client %d: sender told %+v although it was registered", i, m)
				}
				b.Close()
			}
			if failure != nil {
				t.Fatal(failure)
			}
		})
	}
}

// Two connections with one key (derper's "last writer is active"): packets go to the connection
// that most recently sent a frame (the newest at first); when one leaves the other takes over;
// those it sent to hear PeerGone only when the key's last connection leaves.
func TestDerpHTTPDuplicateKeys(t *testing.T) {
	var cases []serverCase
	for _, k := range derpServers {
		cases = append(cases, serverCase{k.name, k, serverOpts{}})
		if k.name == "derpd" {
			// Room for the key's two connections and the sender each on a worker of its own.
			cases = append(cases, serverCase{"derpd/workers3", k, serverOpts{Workers: 3}})
		}
	}
	for _, sc := range cases {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.kind.start(t, sc.opts)
			a, aKey, aSt := loggedIn(t, s, "a")
			priv := key.NewNode()
			dupKey := priv.Public()
			x1, _, x1St := dialClientKey(t, s, "x1", priv)
			x1St.waitServerInfo(t)
			x2, _, x2St := dialClientKey(t, s, "x2", priv)
			x2St.waitServerInfo(t)
			isPkt := func(m derp.ReceivedMessage) bool { _, ok := m.(derp.ReceivedPacket); return ok }
			// expect: a's packet reaches st and not other. As with derper, the switch to a new
			// last writer is complete before its frame has any effect (derpd: before the Pong), on
			// every worker, and so is a newcomer's registration once it has ServerInfo.
			expect := func(st, other *msgStream, msg string) {
				t.Helper()
				if err := a.Send(dupKey, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				deadline := time.Now().Add(10 * time.Second)
				for time.Now().Before(deadline) {
					if p, err := st.nextPacket(50 * time.Millisecond); err == nil {
						if string(p.Data) != msg {
							t.Fatalf("%s got %q, want %q", st.name, p.Data, msg)
						}
						if m, err := other.nextMatch(300*time.Millisecond, isPkt); err == nil {
							t.Fatalf("%s also got %q", other.name, m.(derp.ReceivedPacket).Data)
						}
						return
					}
					if m, err := other.nextMatch(50*time.Millisecond, isPkt); err == nil {
						t.Fatalf("%q went to %s, not %s", m.(derp.ReceivedPacket).Data, other.name, st.name)
					}
				}
				t.Fatalf("%q reached neither connection", msg)
			}
			expect(x2St, x1St, "to the newest")
			if err := pingPong(x1, x1St, [8]byte{'x', '1'}, 10*time.Second); err != nil { // x1 writes: now active
				t.Fatal(err)
			}
			expect(x1St, x2St, "to the last writer")
			// a hears from the key, so it is told when the key (its last connection) leaves.
			if err := x1.Send(aKey, []byte("from the dup key")); err != nil {
				t.Fatal(err)
			}
			if p, err := aSt.nextPacket(10 * time.Second); err != nil || p.Source != dupKey {
				t.Fatalf("a: %v from %v", err, p.Source)
			}
			if err := pingPong(x2, x2St, [8]byte{'x', '2'}, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			expect(x2St, x1St, "to the last writer again")
			x2.Close()
			// The server notices the close asynchronously: send until the remaining one gets a packet.
			deadline := time.Now().Add(10 * time.Second)
			for {
				if err := a.Send(dupKey, []byte("to the one left")); err != nil {
					t.Fatal(err)
				}
				if p, err := x1St.nextPacket(200 * time.Millisecond); err == nil {
					if string(p.Data) != "to the one left" {
						t.Fatalf("x1 got %q", p.Data)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("after x2 left, packets to the key never reached x1")
				}
			}
			if m, err := aSt.nextMatch(300*time.Millisecond, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.PeerGoneMessage); return ok }); err == nil {
				t.Fatalf("PeerGone %+v while the key is still connected", m)
			}
			x1.Close()
			pg := aSt.next(t, 10*time.Second, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.PeerGoneMessage); return ok }).(derp.PeerGoneMessage)
			if pg.Peer != dupKey || pg.Reason != derp.PeerGoneReasonDisconnected {
				t.Fatalf("PeerGone %v reason %d", pg.Peer, pg.Reason)
			}
		})
	}
}

// Ping -> Pong with the same 8 bytes, many times, interleaved with packets.
func TestDerpHTTPPingPong(t *testing.T) {
	for _, sc := range serverCases() {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.kind.start(t, sc.opts)
			a, _, aSt := loggedIn(t, s, "a")
			for i := 0; i < 50; i++ {
				var data [8]byte
				rand.Read(data[:])
				if err := pingPong(a, aSt, data, 10*time.Second); err != nil {
					t.Fatalf("ping %d %x: %v", i, data, err)
				}
			}
			// derphttp's own Ping (random payload, matched by the client).
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.Ping(ctx); err != nil {
				t.Fatalf("derphttp Ping: %v", err)
			}
		})
	}
}

// derpMetric reads one unlabelled gauge/counter from a Prometheus text page; ok false when absent.
func derpMetric(t *testing.T, url, name string) (float64, bool) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` ([0-9.eE+-]+)$`)
	m := re.FindSubmatch(b)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v, true
}

// NotePreferred(true/false) is accepted: the connection stays up and keeps relaying. Where the
// server exports derp_current_home_connections, the gauge follows the flag.
func TestDerpHTTPNotePreferred(t *testing.T) {
	for _, kind := range []string{"derper", "derpd"} {
		t.Run(kind, func(t *testing.T) {
			r := startRelay(t, kind, relayOpts{})
			metricsURL := r.MetricsURL
			a, aKey, aSt := loggedIn(t, r.derpServer, "a")
			b, bKey, bSt := loggedIn(t, r.derpServer, "b")
			haveMetric := false
			if _, ok := derpMetric(t, metricsURL, "derp_current_connections"); ok {
				haveMetric = true
			}
			home := func(want float64) {
				t.Helper()
				if !haveMetric {
					return
				}
				deadline := time.Now().Add(5 * time.Second)
				for {
					v, ok := derpMetric(t, metricsURL, "derp_current_home_connections")
					if ok && v == want {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("derp_current_home_connections = %v (present %v), want %v", v, ok, want)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			home(0)
			for i, pref := range []bool{true, false, true} {
				a.NotePreferred(pref)
				if err := pingPong(a, aSt, [8]byte{'p', 'r', 'e', 'f', byte(i)}, 10*time.Second); err != nil {
					t.Fatalf("after NotePreferred(%v): %v", pref, err)
				}
				if pref {
					home(1)
				} else {
					home(0)
				}
				msg := []byte(fmt.Sprintf("after NotePreferred(%v)", pref))
				if err := b.Send(aKey, msg); err != nil {
					t.Fatal(err)
				}
				if p, err := aSt.nextPacket(10 * time.Second); err != nil || !bytes.Equal(p.Data, msg) {
					t.Fatalf("a: %q %v", p.Data, err)
				}
				if err := a.Send(bKey, msg); err != nil {
					t.Fatal(err)
				}
				if p, err := bSt.nextPacket(10 * time.Second); err != nil || !bytes.Equal(p.Data, msg) {
					t.Fatalf("b: %q %v", p.Data, err)
				}
			}
			a.Close()
			home(0)
			if !haveMetric {
				t.Logf("%s exports no derp_current_connections at %s: home-connection gauge not checked", kind, metricsURL)
			}
		})
	}
}

func meshKeyOpt(t *testing.T, hexKey string) func(*derphttp.Client) {
	k, err := key.ParseDERPMesh(hexKey)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *derphttp.Client) { c.MeshKey = k }
}

func isPresent(k key.NodePublic) func(derp.ReceivedMessage) bool {
	return func(m derp.ReceivedMessage) bool { p, ok := m.(derp.PeerPresentMessage); return ok && p.Key == k }
}

func isGone(k key.NodePublic) func(derp.ReceivedMessage) bool {
	return func(m derp.ReceivedMessage) bool { p, ok := m.(derp.PeerGoneMessage); return ok && p.Peer == k }
}

// A mesh client (mesh key) that sends WatchConns learns every connected client (PeerPresent with
// its address and flags), newcomers, and departures (PeerGone); it may ClosePeer and
// ForwardPacket.
func TestDerpHTTPMeshWatch(t *testing.T) {
	for _, k := range derpServers {
		t.Run(k.name, func(t *testing.T) {
			s := k.start(t, serverOpts{MeshKey: testMeshKey})
			a, aKey, _ := loggedIn(t, s, "a")
			b, bKey, bSt := loggedIn(t, s, "b")
			p, pKey, _ := loggedIn(t, s, "prober", func(c *derphttp.Client) { c.IsProber = true })

			w, _, wSt := loggedIn(t, s, "watcher", meshKeyOpt(t, testMeshKey), func(c *derphttp.Client) { c.WatchConnectionChanges = true })
			check := func(c *derphttp.Client, k key.NodePublic, flags derp.PeerPresentFlags) {
				t.Helper()
				pp := wSt.next(t, 10*time.Second, isPresent(k)).(derp.PeerPresentMessage)
				local, err := c.LocalAddr()
				if err != nil {
					t.Fatal(err)
				}
				if pp.IPPort != local {
					t.Errorf("PeerPresent address %v, client's local address %v", pp.IPPort, local)
				}
				if pp.Flags != flags {
					t.Errorf("PeerPresent flags %#x, want %#x", pp.Flags, flags)
				}
			}
			// The initial dump (any order: each wait skips the others, so check in one pass).
			seen := map[key.NodePublic]derp.PeerPresentMessage{}
			for len(seen) < 3 {
				m := wSt.next(t, 10*time.Second, func(m derp.ReceivedMessage) bool {
					pp, ok := m.(derp.PeerPresentMessage)
					return ok && (pp.Key == aKey || pp.Key == bKey || pp.Key == pKey)
				})
				pp := m.(derp.PeerPresentMessage)
				seen[pp.Key] = pp
			}
			for _, x := range []struct {
				c     *derphttp.Client
				k     key.NodePublic
				flags derp.PeerPresentFlags
			}{{a, aKey, derp.PeerPresentIsRegular}, {b, bKey, derp.PeerPresentIsRegular}, {p, pKey, derp.PeerPresentIsProber}} {
				local, _ := x.c.LocalAddr()
				if pp := seen[x.k]; pp.IPPort != local || pp.Flags != x.flags {
					t.Errorf("PeerPresent for %v: %v flags %#x; want %v flags %#x", x.k.ShortString(), pp.IPPort, pp.Flags, local, x.flags)
				}
			}

			// A newcomer.
			c, cKey, cSt := loggedIn(t, s, "c")
			check(c, cKey, derp.PeerPresentIsRegular)

			// A departure.
			a.Close()
			if pg := wSt.next(t, 10*time.Second, isGone(aKey)).(derp.PeerGoneMessage); pg.Reason != derp.PeerGoneReasonDisconnected {
				t.Fatalf("PeerGone reason %d", pg.Reason)
			}

			// ClosePeer: the server hangs up on b; the watcher hears it leave.
			if err := w.ClosePeer(bKey); err != nil {
				t.Fatal(err)
			}
			bSt.waitClosed(t, 10*time.Second)
			wSt.next(t, 10*time.Second, isGone(bKey))
			_ = b

			// ForwardPacket: delivered to the local client with the given source.
			src := randomKey()
			if err := w.ForwardPacket(src, cKey, []byte("forwarded")); err != nil {
				t.Fatal(err)
			}
			pkt, err := cSt.nextPacket(10 * time.Second)
			if err != nil || pkt.Source != src || string(pkt.Data) != "forwarded" {
				t.Fatalf("c got %q from %v (%v), want \"forwarded\" from %v", pkt.Data, pkt.Source, err, src)
			}
			if !wSt.alive() {
				t.Fatalf("watcher disconnected: %v", wSt.err)
			}
		})
	}
}

// A region client that had to skip the region's first node sends Ideal-Node; watchers see it
// flagged "not ideal". One whose first node is this server is a regular client.
func TestDerpHTTPIdealNode(t *testing.T) {
	for _, k := range derpServers {
		t.Run(k.name, func(t *testing.T) {
			s := k.start(t, serverOpts{TLS: true, MeshKey: testMeshKey})
			_, _, wSt := loggedIn(t, s, "watcher", meshKeyOpt(t, testMeshKey), func(c *derphttp.Client) { c.WatchConnectionChanges = true })
			port, err := strconv.Atoi(strings.TrimSuffix(s.URL[strings.LastIndex(s.URL, ":")+1:], "/derp"))
			if err != nil {
				t.Fatal(err)
			}
			live := &tailcfg.DERPNode{Name: "1b", RegionID: 1, HostName: "127.0.0.1", IPv4: "127.0.0.1", DERPPort: port, CertName: s.CertName}
			dead := &tailcfg.DERPNode{Name: "1a", RegionID: 1, HostName: "127.0.0.1", IPv4: "127.0.0.1", DERPPort: freePort(t)} // refuses
			for _, tc := range []struct {
				name  string
				nodes []*tailcfg.DERPNode
				flags derp.PeerPresentFlags
			}{
				{"first-node", []*tailcfg.DERPNode{live}, derp.PeerPresentIsRegular},
				{"second-node", []*tailcfg.DERPNode{dead, live}, derp.PeerPresentNotIdeal},
			} {
				t.Run(tc.name, func(t *testing.T) {
					priv := key.NewNode()
					region := &tailcfg.DERPRegion{RegionID: 1, RegionCode: "loop", Nodes: tc.nodes}
					c := derphttp.NewRegionClient(priv, safeLogf(t), netmon.NewStatic(), func() *tailcfg.DERPRegion { return region })
					c.TLSConfig = s.TLSConfig(t)
					ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
					defer cancel()
					if err := c.Connect(ctx); err != nil {
						c.Close()
						t.Fatal(err)
					}
					st := newStream(t, tc.name, c)
					st.waitServerInfo(t)
					pp := wSt.next(t, 10*time.Second, isPresent(priv.Public())).(derp.PeerPresentMessage)
					if pp.Flags != tc.flags {
						t.Fatalf("PeerPresent flags %#x, want %#x", pp.Flags, tc.flags)
					}
				})
			}
		})
	}
}

// WatchConns (and ClosePeer) from a client without the mesh key, or with a wrong one, gets it
// disconnected; its target is untouched.
func TestDerpHTTPWatchConnsWithoutMeshKey(t *testing.T) {
	wrongKey := strings.Repeat("ab", 32)
	for _, k := range derpServers {
		t.Run(k.name, func(t *testing.T) {
			s := k.start(t, serverOpts{MeshKey: testMeshKey})
			_, vKey, vSt := loggedIn(t, s, "victim")
			cases := []struct {
				name string
				opts []func(*derphttp.Client)
				act  func(c *derphttp.Client) error
			}{
				{"watch/no-key", []func(*derphttp.Client){func(c *derphttp.Client) { c.WatchConnectionChanges = true }}, nil},
				{"watch/wrong-key", []func(*derphttp.Client){meshKeyOpt(t, wrongKey), func(c *derphttp.Client) { c.WatchConnectionChanges = true }}, nil},
				{"closepeer/no-key", nil, func(c *derphttp.Client) error { return c.ClosePeer(vKey) }},
				{"forward/wrong-key", []func(*derphttp.Client){meshKeyOpt(t, wrongKey)}, func(c *derphttp.Client) error {
					return c.ForwardPacket(randomKey(), vKey, []byte("forged"))
				}},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					c, _, st := dialClient(t, s, tc.name, tc.opts...)
					if tc.act != nil {
						st.waitServerInfo(t)
						if err := tc.act(c); err != nil {
							t.Fatal(err)
						}
					}
					for _, m := range st.waitClosed(t, 10*time.Second) {
						if _, ok := m.(derp.PeerPresentMessage); ok {
							t.Fatalf("non-mesh client got PeerPresent %+v", m)
						}
					}
				})
			}
			// The victim was neither closed nor sent a forged packet.
			if m, err := vSt.nextMatch(500*time.Millisecond, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.ReceivedPacket); return ok }); err == nil {
				t.Fatalf("victim got %+v", m)
			}
			if !vSt.alive() {
				t.Fatalf("victim disconnected: %v", vSt.err)
			}
		})
	}
}

// ---- derpprobe ----

// Tailscale's derpprobe, run once against a one-node DERP map (file://) naming the server: TLS
// certificate, STUN, DERP round trip (mesh probe of the node with itself, as prober with the mesh
// key) and a 1 MB bandwidth probe must all pass.
func TestDerpprobe(t *testing.T) {
	for _, kind := range []string{"derper", "derpd"} {
		t.Run(kind, func(t *testing.T) {
			bin := derpprobeBinary(t)
			stunPort := freeUDPPort(t)
			// A DNS name: derpprobe's DERP probe compares the TLS ServerName with the node's
			// HostName, and Go records no ServerName for an IP address. The node's IPv4 is given, so
			// the DERP clients dial 127.0.0.1 directly; the TLS probe resolves localhost.
			r := startRelay(t, kind, relayOpts{serverOpts: serverOpts{TLS: true, MeshKey: testMeshKey}, STUNPort: stunPort, Hostname: "localhost"})
			dir := t.TempDir()
			dm := map[string]any{"Regions": map[string]any{"900": map[string]any{
				"RegionID": 900, "RegionCode": "loop", "RegionName": "loopback",
				"Nodes": []map[string]any{{
					"Name": "900a", "RegionID": 900, "HostName": "localhost", "IPv4": "127.0.0.1", "IPv6": "",
					"DERPPort": r.Port, "STUNPort": stunPort,
				}},
			}}}
			b, _ := json.Marshal(dm)
			mapFile := filepath.Join(dir, "derpmap.json")
			meshFile := filepath.Join(dir, "mesh.key")
			if err := os.WriteFile(mapFile, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(meshFile, []byte(testMeshKey+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-once", "-spread=false", "-derp-map", "file://"+mapFile,
				"-mesh-psk-file", meshFile, "-interval", "1s", "-mesh-interval", "1s", "-stun-interval", "1s",
				"-tls-interval", "1s", "-bw-interval", "1s", "-bw-probe-size-bytes", "1000000", "-listen", "127.0.0.1:0")
			// The self-signed server certificate is the only trust anchor (TLS probe and DERP clients).
			cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+r.CertFile, "SSL_CERT_DIR="+dir)
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("derpprobe did not finish in 120s:\n%s", out)
			}
			text := string(out)
			if err != nil {
				t.Fatalf("derpprobe failed (%v):\n%s", err, out)
			}
			for _, want := range []string{
				"good: derp/loop/900a/tls",
				"good: derp/loop/900a/udp",
				"good: derp/loop/900a/900a/mesh",
				"good: derp/loop/900a/900a/bw",
			} {
				if !strings.Contains(text, want+":") {
					t.Errorf("derpprobe output lacks %q:\n%s", want, text)
				}
			}
			if strings.Contains(text, "bad: ") {
				t.Errorf("derpprobe reported failures:\n%s", text)
			}
		})
	}
}

// ---- WebSocket ----

// wsClient is what derphttp does with build tag ts_debug_websockets (websocket.go): dial with
// subprotocol "derp", wrap binary messages as a net.Conn, run derp.NewClient over it.
func wsClient(t *testing.T, s *derpServer, name string) (*derp.Client, key.NodePublic, net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	opts := &websocket.DialOptions{Subprotocols: []string{"derp"}}
	if conf := s.TLSConfig(t); conf != nil {
		opts.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
	}
	c, res, err := websocket.Dial(ctx, s.URL, opts)
	if err != nil {
		status := "no response"
		if res != nil {
			status = res.Status
		}
		t.Fatalf("websocket dial %s: %v (%s)", s.URL, err, status)
	}
	if c.Subprotocol() != "derp" {
		t.Fatalf("subprotocol %q, want derp", c.Subprotocol())
	}
	nc := wsconn.NetConn(context.Background(), c, websocket.MessageBinary, s.URL)
	t.Cleanup(func() { nc.Close() })
	priv := key.NewNode()
	brw := bufio.NewReadWriter(bufio.NewReader(nc), bufio.NewWriter(nc))
	dc, err := derp.NewClient(priv, nc, brw, safeLogf(t))
	if err != nil {
		t.Fatalf("%s: DERP over WebSocket: %v", name, err)
	}
	return dc, priv.Public(), nc
}

// wsRecv reads from a derp.Client until match (bounded).
func wsRecv(t *testing.T, c *derp.Client, nc net.Conn, match func(derp.ReceivedMessage) bool) derp.ReceivedMessage {
	t.Helper()
	type res struct {
		m   derp.ReceivedMessage
		err error
	}
	ch := make(chan res, 1)
	go func() {
		for {
			m, err := c.Recv()
			if err != nil {
				ch <- res{nil, err}
				return
			}
			if rp, ok := m.(derp.ReceivedPacket); ok {
				rp.Data = bytes.Clone(rp.Data)
				m = rp
			}
			if match(m) {
				ch <- res{m, nil}
				return
			}
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("recv: %v", r.err)
		}
		return r.m
	case <-time.After(15 * time.Second):
		nc.Close()
		<-ch
		t.Fatal("nothing expected arrived within 15s")
		return nil
	}
}

// skipWebSocketOnDerpd: DERPD_WEBSOCKET=0 skips the WebSocket cases on derpd (for builds without
// WebSocket support, which answer 501).
func skipWebSocketOnDerpd(t *testing.T, kind string) {
	if kind == "derpd" && os.Getenv("DERPD_WEBSOCKET") == "0" {
		t.Skip("DERPD_WEBSOCKET=0: DERP over WebSocket not checked on derpd")
	}
}

// DERP over WebSocket (subprotocol "derp", binary messages): login, packets both ways, a burst,
// ping. Tailscale's WebSocket client keeps coder/websocket's default read limit of 32768 bytes
// per message, so a server must not put more than that in one message: packets here stay at or
// under 32 KiB (derper writes a larger packet as one message, which that client refuses), and a
// burst of small packets checks that the server does not coalesce past the limit either.
func TestDerpWebSocket(t *testing.T) {
	for _, sc := range serverCases() {
		t.Run(sc.name, func(t *testing.T) {
			skipWebSocketOnDerpd(t, sc.kind.name)
			s := sc.kind.start(t, sc.opts)
			a, aKey, anc := wsClient(t, s, "a")
			b, bKey, bnc := wsClient(t, s, "b")
			isInfo := func(m derp.ReceivedMessage) bool { _, ok := m.(derp.ServerInfoMessage); return ok }
			wsRecv(t, a, anc, isInfo)
			wsRecv(t, b, bnc, isInfo)
			isPkt := func(m derp.ReceivedMessage) bool { _, ok := m.(derp.ReceivedPacket); return ok }
			for _, n := range []int{0, 1, 1200, 16384, 32000} {
				p := make([]byte, n)
				rand.Read(p)
				if err := a.Send(bKey, p); err != nil {
					t.Fatal(err)
				}
				if got := wsRecv(t, b, bnc, isPkt).(derp.ReceivedPacket); got.Source != aKey || !bytes.Equal(got.Data, p) {
					t.Fatalf("b got %d bytes from %v, want %d from %v", len(got.Data), got.Source, n, aKey)
				}
				if err := b.Send(aKey, p); err != nil {
					t.Fatal(err)
				}
				if got := wsRecv(t, a, anc, isPkt).(derp.ReceivedPacket); got.Source != bKey || !bytes.Equal(got.Data, p) {
					t.Fatalf("a got %d bytes from %v", len(got.Data), got.Source)
				}
			}
			// A burst: 16 packets of 1200 bytes sent back to back (under the 32-packet queue).
			var burst [][]byte
			for i := 0; i < 16; i++ {
				p := make([]byte, 1200)
				rand.Read(p)
				binary.BigEndian.PutUint32(p, uint32(i))
				burst = append(burst, p)
				if err := a.Send(bKey, p); err != nil {
					t.Fatal(err)
				}
			}
			for i, want := range burst {
				if got := wsRecv(t, b, bnc, isPkt).(derp.ReceivedPacket); !bytes.Equal(got.Data, want) {
					t.Fatalf("burst packet %d: got %d bytes", i, len(got.Data))
				}
			}
			data := [8]byte{'w', 's', 'p', 'i', 'n', 'g', '0', '1'}
			if err := a.SendPing(data); err != nil {
				t.Fatal(err)
			}
			wsRecv(t, a, anc, func(m derp.ReceivedMessage) bool {
				p, ok := m.(derp.PongMessage)
				return ok && p == derp.PongMessage(data)
			})
		})
	}
}
