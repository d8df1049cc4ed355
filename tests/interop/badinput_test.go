package interop

// Hostile and malformed DERP frames, written byte by byte over a raw connection (the handshake
// crypto is Tailscale's key package), against derpd and derper as the control. Every case checks
// what happens to the offending connection (closed, or still answering pings) and that ordinary
// clients keep working afterwards; length fields that claim gigabytes must not grow the server.

import (
	"bytes"
	"crypto/rand"
	"net"
	"syscall"
	"testing"
	"time"

	"tailscale.com/derp"
	"tailscale.com/types/key"
)

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// bystanders are two ordinary clients connected before the bad input; healthy checks that they,
// and a fresh connection, still work.
type bystanders struct {
	s          *derpServer
	a, b       *msgStream
	aKey, bKey key.NodePublic
	send       func(from int, to key.NodePublic, p []byte) error
	ping       func(t *testing.T)
}

func newBystanders(t *testing.T, s *derpServer) *bystanders {
	a, aKey, aSt := loggedIn(t, s, "bystander-a")
	b, bKey, bSt := loggedIn(t, s, "bystander-b")
	by := &bystanders{s: s, a: aSt, b: bSt, aKey: aKey, bKey: bKey}
	by.send = func(from int, to key.NodePublic, p []byte) error {
		if from == 0 {
			return a.Send(to, p)
		}
		return b.Send(to, p)
	}
	by.ping = func(t *testing.T) {
		t.Helper()
		if err := pingPong(a, aSt, [8]byte{'b', 'y', 's', 't'}, 10*time.Second); err != nil {
			t.Fatalf("bystander ping: %v", err)
		}
	}
	return by
}

func (by *bystanders) healthy(t *testing.T) {
	t.Helper()
	msg := randBytes(1200)
	if err := by.send(0, by.bKey, msg); err != nil {
		t.Fatal(err)
	}
	if p, err := by.b.nextPacket(10 * time.Second); err != nil || p.Source != by.aKey || !bytes.Equal(p.Data, msg) {
		t.Fatalf("bystander a->b after bad input: %v", err)
	}
	if err := by.send(1, by.aKey, msg); err != nil {
		t.Fatal(err)
	}
	if p, err := by.a.nextPacket(10 * time.Second); err != nil || p.Source != by.bKey || !bytes.Equal(p.Data, msg) {
		t.Fatalf("bystander b->a after bad input: %v", err)
	}
	by.ping(t)
	fresh := openRaw(t, by.s, false, nil)
	fresh.login(t, derp.ClientInfo{})
	fresh.pingPong(t, []byte("freshcon"))
	fresh.nc.Close()
}

type badCase struct {
	name     string
	bytes    func(t *testing.T, r *rawConn) []byte // written after ServerKey (pre) or after login (post)
	bigClaim bool                                  // claims a huge length: RSS must not grow
}

func TestDerpBadFrames(t *testing.T) {
	var wrongServer = key.NewNode()
	preLogin := []badCase{
		{name: "clientinfo-undecryptable", bytes: func(t *testing.T, r *rawConn) []byte {
			// Well-formed frame: our key, a nonce, then random bytes where the box should be.
			return frame(derp.FrameClientInfo, append(r.priv.Public().AppendTo(nil), randBytes(24+80)...))
		}},
		{name: "clientinfo-sealed-to-another-key", bytes: func(t *testing.T, r *rawConn) []byte {
			msg := []byte(`{"version":2}`)
			return frame(derp.FrameClientInfo, append(r.priv.Public().AppendTo(nil), r.priv.SealTo(wrongServer.Public(), msg)...))
		}},
		{name: "clientinfo-key-not-the-sealer", bytes: func(t *testing.T, r *rawConn) []byte {
			// Sealed by our key but claiming to come from another one.
			msg := []byte(`{"version":2}`)
			return frame(derp.FrameClientInfo, append(key.NewNode().Public().AppendTo(nil), r.priv.SealTo(r.serverKey, msg)...))
		}},
		{name: "clientinfo-not-json", bytes: func(t *testing.T, r *rawConn) []byte {
			return frame(derp.FrameClientInfo, append(r.priv.Public().AppendTo(nil), r.priv.SealTo(r.serverKey, []byte("not json {"))...))
		}},
		{name: "clientinfo-short", bytes: func(t *testing.T, r *rawConn) []byte {
			return frame(derp.FrameClientInfo, append(r.priv.Public().AppendTo(nil), randBytes(23)...)) // 55 < 56
		}},
		{name: "clientinfo-over-256KiB", bytes: func(t *testing.T, r *rawConn) []byte {
			return append(frameHeader(derp.FrameClientInfo, 256<<10+1), randBytes(4096)...)
		}},
		{name: "clientinfo-claims-4GiB", bigClaim: true, bytes: func(t *testing.T, r *rawConn) []byte {
			return append(frameHeader(derp.FrameClientInfo, 0xFFFFFFFF), randBytes(64<<10)...)
		}},
		{name: "sendpacket-before-login", bytes: func(t *testing.T, r *rawConn) []byte {
			return frame(derp.FrameSendPacket, append(key.NewNode().Public().AppendTo(nil), "hello"...))
		}},
	}
	postLogin := []badCase{
		{name: "notepreferred-len2", bytes: func(*testing.T, *rawConn) []byte { return frame(derp.FrameNotePreferred, []byte{1, 1}) }},
		{name: "notepreferred-len0", bytes: func(*testing.T, *rawConn) []byte { return frame(derp.FrameNotePreferred, nil) }},
		{name: "sendpacket-len31", bytes: func(*testing.T, *rawConn) []byte { return frame(derp.FrameSendPacket, randBytes(31)) }},
		{name: "sendpacket-len0", bytes: func(*testing.T, *rawConn) []byte { return frame(derp.FrameSendPacket, nil) }},
		{name: "sendpacket-65537", bytes: func(*testing.T, *rawConn) []byte {
			return frame(derp.FrameSendPacket, append(key.NewNode().Public().AppendTo(nil), randBytes(65537)...))
		}},
		{name: "sendpacket-claims-4GiB", bigClaim: true, bytes: func(*testing.T, *rawConn) []byte {
			return append(frameHeader(derp.FrameSendPacket, 0xFFFFFFFF), randBytes(64<<10)...)
		}},
		{name: "ping-len7", bytes: func(*testing.T, *rawConn) []byte { return frame(derp.FramePing, randBytes(7)) }},
		{name: "ping-len0", bytes: func(*testing.T, *rawConn) []byte { return frame(derp.FramePing, nil) }},
		{name: "ping-len1001", bytes: func(*testing.T, *rawConn) []byte { return frame(derp.FramePing, randBytes(1001)) }},
		{name: "watchconns-not-mesh", bytes: func(*testing.T, *rawConn) []byte { return frame(derp.FrameWatchConns, nil) }},
		{name: "closepeer-not-mesh", bytes: func(*testing.T, *rawConn) []byte {
			return frame(derp.FrameClosePeer, key.NewNode().Public().AppendTo(nil))
		}},
		{name: "forwardpacket-not-mesh", bytes: func(*testing.T, *rawConn) []byte {
			return frame(derp.FrameForwardPacket, append(append(key.NewNode().Public().AppendTo(nil), key.NewNode().Public().AppendTo(nil)...), "forged"...))
		}},
	}
	// Frames a server must accept (or skip) without closing: the connection still answers a ping.
	accepted := []badCase{
		{name: "notepreferred-1", bytes: func(*testing.T, *rawConn) []byte { return frame(derp.FrameNotePreferred, []byte{1}) }},
		{name: "notepreferred-0", bytes: func(*testing.T, *rawConn) []byte { return frame(derp.FrameNotePreferred, []byte{0}) }},
		{name: "ping-len1000", bytes: nil}, // checked by the Pong itself (first 8 of 1000 bytes)
		{name: "unknown-type-0x7f", bytes: func(*testing.T, *rawConn) []byte { return frame(0x7f, randBytes(100)) }},
		{name: "unknown-type-empty", bytes: func(*testing.T, *rawConn) []byte { return frame(0xfe, nil) }},
		{name: "keepalive-from-client", bytes: func(*testing.T, *rawConn) []byte { return frame(derp.FrameKeepAlive, nil) }},
		{name: "pong-from-client", bytes: func(*testing.T, *rawConn) []byte { return frame(derp.FramePong, randBytes(8)) }},
		{name: "clientinfo-again", bytes: func(t *testing.T, r *rawConn) []byte {
			return frame(derp.FrameClientInfo, r.clientInfo(t, derp.ClientInfo{Version: 2}))
		}},
		{name: "sendpacket-empty-to-unknown", bytes: func(*testing.T, *rawConn) []byte {
			return frame(derp.FrameSendPacket, key.NewNode().Public().AppendTo(nil))
		}},
	}

	for _, kind := range []string{"derper", "derpd"} {
		t.Run(kind, func(t *testing.T) {
			r := startRelay(t, kind, relayOpts{serverOpts: serverOpts{MeshKey: testMeshKey}})
			by := newBystanders(t, r.derpServer)
			rss := func(t *testing.T, c badCase, run func()) {
				t.Helper()
				if !c.bigClaim {
					run()
					return
				}
				before := rssKiB(t, r.pid())
				run()
				after := rssKiB(t, r.pid())
				t.Logf("%s RSS %d KiB -> %d KiB", kind, before, after)
				if after-before > 10<<10 {
					t.Fatalf("RSS grew by %d KiB after a frame claiming 4 GiB", after-before)
				}
			}
			for _, c := range preLogin {
				t.Run("pre/"+c.name, func(t *testing.T) {
					rc := openRaw(t, r.derpServer, false, nil)
					rss(t, c, func() {
						rc.write(t, c.bytes(t, rc))
						for _, ft := range rc.expectClosed(t, 10*time.Second) {
							if ft == derp.FrameServerInfo {
								t.Fatal("the server sent ServerInfo: it accepted the bad ClientInfo")
							}
						}
					})
					by.healthy(t)
				})
			}
			for _, c := range postLogin {
				t.Run("post/"+c.name, func(t *testing.T) {
					rc := openRaw(t, r.derpServer, false, nil)
					rc.login(t, derp.ClientInfo{})
					rss(t, c, func() {
						rc.write(t, c.bytes(t, rc))
						rc.expectClosed(t, 10*time.Second)
					})
					by.healthy(t)
				})
			}
			for _, c := range accepted {
				t.Run("ok/"+c.name, func(t *testing.T) {
					rc := openRaw(t, r.derpServer, false, nil)
					rc.login(t, derp.ClientInfo{})
					if c.bytes == nil {
						rc.pingPong(t, randBytes(1000))
					} else {
						rc.write(t, c.bytes(t, rc))
						rc.pingPong(t, randBytes(8)) // frames are handled in order: the bad one was skipped
					}
					by.healthy(t)
				})
			}
			// An unknown frame type claiming 4 GiB: a server may skip it (reading on) or hang up,
			// but must not allocate what it claims.
			t.Run("unknown-type-claims-4GiB", func(t *testing.T) {
				rc := openRaw(t, r.derpServer, false, nil)
				rc.login(t, derp.ClientInfo{})
				before := rssKiB(t, r.pid())
				rc.write(t, frameHeader(0x7f, 0xFFFFFFFF))
				junk := randBytes(64 << 10)
				for i := 0; i < 16; i++ { // 1 MiB, if the server still reads
					rc.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if _, err := rc.nc.Write(junk); err != nil {
						break
					}
				}
				time.Sleep(200 * time.Millisecond)
				after := rssKiB(t, r.pid())
				t.Logf("%s RSS %d KiB -> %d KiB", kind, before, after)
				if after-before > 10<<10 {
					t.Fatalf("RSS grew by %d KiB", after-before)
				}
				rc.nc.Close()
				by.healthy(t)
			})
		})
	}
}

// A client that never reads while another floods it: the server's memory stays bounded (its
// per-client queue drops), and the flooding sender is not disconnected.
func TestDerpFloodNonReader(t *testing.T) {
	const packets, size = 20000, 1024
	for _, kind := range []string{"derper", "derpd"} {
		t.Run(kind, func(t *testing.T) {
			r := startRelay(t, kind, relayOpts{})
			by := newBystanders(t, r.derpServer)
			// The receiver logs in and then never reads; a small receive buffer makes the server's
			// writes to it stall early.
			d := &net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
				var serr error
				c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
				return serr
			}}
			rx := openRaw(t, r.derpServer, false, d)
			rx.login(t, derp.ClientInfo{})
			rxKey := rx.priv.Public()

			tx, _, txSt := loggedIn(t, r.derpServer, "flooder")
			before := rssKiB(t, r.pid())
			peak := before
			start := time.Now()
			p := randBytes(size)
			for i := 0; i < packets; i++ {
				if err := tx.Send(rxKey, p); err != nil {
					t.Fatalf("flood send %d: %v", i, err)
				}
				if i%2000 == 0 {
					peak = max(peak, rssKiB(t, r.pid()))
				}
				if time.Since(start) > 60*time.Second {
					t.Fatalf("only %d packets sent in 60s", i)
				}
			}
			// The sender is still connected: its ping is answered after all its packets.
			if err := pingPong(tx, txSt, [8]byte{'f', 'l', 'o', 'o', 'd'}, 10*time.Second); err != nil {
				t.Fatalf("flooder after %d packets: %v", packets, err)
			}
			peak = max(peak, rssKiB(t, r.pid()))
			t.Logf("%s: %d x %d B in %v; RSS %d KiB -> peak %d KiB", kind, packets, size, time.Since(start).Round(time.Millisecond), before, peak)
			if peak-before > 64<<10 {
				t.Fatalf("RSS grew by %d KiB while a non-reading client was flooded", peak-before)
			}
			if !txSt.alive() {
				t.Fatalf("flooder disconnected: %v", txSt.err)
			}
			by.healthy(t)
		})
	}
}
