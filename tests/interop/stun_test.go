// Interop: Tailscale's own STUN code (tailscale.com/net/stun and net/stunserver) against derpd.
package interop

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"tailscale.com/net/stun"
	"tailscale.com/net/stunserver"
)

func exchange(t *testing.T, conn *net.UDPConn, server netip.AddrPort, req []byte) []byte {
	t.Helper()
	if _, err := conn.WriteToUDPAddrPort(req, server); err != nil {
		t.Fatalf("send to %v: %v", server, err)
	}
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no reply from %v: %v", server, err)
	}
	if from != server {
		t.Fatalf("reply came from %v, want %v", from, server)
	}
	return buf[:n]
}

// Tailscale's client parses derpd's answers to its requests and learns its own address.
func TestTailscaleNetStunParsesDerpd(t *testing.T) {
	for _, family := range []string{"127.0.0.1", "::1"} {
		t.Run(family, func(t *testing.T) {
			d := startDerpd(t, "-derp=false", "-http-port=-1", "--metrics-addr", "127.0.0.1:0",
				"--stun-addr", netip.AddrPortFrom(netip.MustParseAddr(family), 0).String())
			server := d.stunAddrs[0]
			conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(server.Addr(), 0)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
			for i := 0; i < 100; i++ {
				txid := stun.NewTxID()
				reply := exchange(t, conn, server, stun.Request(txid))
				gotTx, addr, err := stun.ParseResponse(reply)
				if err != nil {
					t.Fatalf("net/stun cannot parse derpd's reply %x: %v", reply, err)
				}
				if gotTx != txid {
					t.Fatalf("txid %x, want %x", gotTx, txid)
				}
				if addr != local {
					t.Fatalf("mapped address %v, want %v", addr, local)
				}
			}
		})
	}
}

// derpd's reply to a Tailscale request is byte for byte what Tailscale's own STUN server sends.
func TestRepliesMatchTailscaleStunServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, family := range []string{"127.0.0.1", "::1"} {
		t.Run(family, func(t *testing.T) {
			ts := stunserver.New(ctx)
			if err := ts.Listen(net.JoinHostPort(family, "0")); err != nil {
				t.Fatal(err)
			}
			go ts.Serve()
			tsAddr := ts.LocalAddr().(*net.UDPAddr).AddrPort()

			d := startDerpd(t, "-derp=false", "-http-port=-1", "--metrics-addr", "127.0.0.1:0",
				"--stun-addr", netip.AddrPortFrom(netip.MustParseAddr(family), 0).String())
			conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tsAddr.Addr(), 0)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for i := 0; i < 20; i++ {
				req := stun.Request(stun.NewTxID())
				want := exchange(t, conn, netip.AddrPortFrom(tsAddr.Addr().Unmap(), tsAddr.Port()), req)
				got := exchange(t, conn, d.stunAddrs[0], req)
				if !bytes.Equal(got, want) {
					t.Fatalf("derpd replied\n  %x\nTailscale's stunserver replied\n  %x", got, want)
				}
			}
		})
	}
}
