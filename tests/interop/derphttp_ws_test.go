//go:build ts_debug_websockets

package interop

// Tailscale's derphttp client itself over WebSocket: only compiled with the build tag that turns
// its WebSocket dialer on, and used when TS_DEBUG_DERP_WS_CLIENT is set:
//
//	go test -tags ts_debug_websockets -run TestDerpHTTPWebSocketClient ./...
//
// (TestDerpWebSocket in derphttp_test.go runs the same dialer code without the tag.) Plain HTTP
// only: that dialer uses http.DefaultClient and ignores the client's TLSConfig, so it cannot be
// told to trust the tests' self-signed certificate.

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"
)

func TestDerpHTTPWebSocketClient(t *testing.T) {
	t.Setenv("TS_DEBUG_DERP_WS_CLIENT", "1")
	for _, k := range derpServers {
		t.Run(k.name, func(t *testing.T) {
			skipWebSocketOnDerpd(t, k.name)
			s := k.start(t, serverOpts{})
			a, aKey, aSt := loggedIn(t, s, "a")
			b, bKey, bSt := loggedIn(t, s, "b")
			if _, ok := a.TLSConnectionState(); ok {
				t.Fatal("TLS state on a plain WebSocket client")
			}
			for _, n := range []int{1, 1200, 16384, 32000} {
				p := make([]byte, n)
				rand.Read(p)
				if err := a.Send(bKey, p); err != nil {
					t.Fatal(err)
				}
				got, err := bSt.nextPacket(10 * time.Second)
				if err != nil || got.Source != aKey || !bytes.Equal(got.Data, p) {
					t.Fatalf("b: %d bytes from %v (%v), want %d from %v", len(got.Data), got.Source, err, n, aKey)
				}
				if err := b.Send(aKey, p); err != nil {
					t.Fatal(err)
				}
				got, err = aSt.nextPacket(10 * time.Second)
				if err != nil || got.Source != bKey || !bytes.Equal(got.Data, p) {
					t.Fatalf("a: %d bytes from %v (%v)", len(got.Data), got.Source, err)
				}
			}
			if err := pingPong(a, aSt, [8]byte{'w', 's'}, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
}
