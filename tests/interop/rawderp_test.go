package interop

// Helpers shared by the DERP client tests (derphttp_test.go) and the frame-level bad-input tests
// (badinput_test.go): a server starter that also hands back the process (PID for RSS, STUN port),
// a stream of messages from Tailscale's derphttp client, and a raw DERP connection that speaks the
// protocol frame by frame (Tailscale's key and derp packages do the crypto and framing).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/types/key"
)

// relayOpts: serverOpts plus what only some tests need.
type relayOpts struct {
	serverOpts
	STUNPort int // > 0: serve STUN on 127.0.0.1:STUNPort
	// Hostname for TLS (-hostname, certificate name); default 127.0.0.1. A DNS name gets a
	// certificate for that name and 127.0.0.1.
	Hostname string
}

// relay is a started DERP server together with its process.
type relay struct {
	*derpServer
	proc       *process
	Port       int
	MetricsURL string // Prometheus text: derpd's --metrics-addr, derper's /debug/varz (plain HTTP only)
}

// pid of the server process.
func (r *relay) pid() int { return r.proc.cmd.Process.Pid }

// startRelay starts derper or derpd with derper's flags, like startDerpLike in peers.go, but keeps the
// process (for its PID) and can serve STUN.
func startRelay(t *testing.T, kind string, o relayOpts) *relay {
	t.Helper()
	var bin string
	var extra []string
	switch kind {
	case "derper":
		bin = derperBinary(t)
	case "derpd":
		bin = derpdBinary(t)
		extra = derpdWorkersArgs(o.serverOpts)
	default:
		t.Fatalf("unknown server kind %q", kind)
	}
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s, args := derperArgs(t, kind, t.TempDir(), addr, o.serverOpts, o.Hostname)
	if o.STUNPort > 0 {
		args = append(args, "-stun-port", strconv.Itoa(o.STUNPort))
	} else {
		args = append(args, "-stun=false")
	}
	metricsURL := fmt.Sprintf("http://%s/debug/varz", addr)
	if kind == "derpd" {
		mport := freePort(t)
		extra = append(extra, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mport))
		metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
	}
	p := startProcess(t, addr, bin, append(args, extra...)...)
	return &relay{derpServer: s, proc: p, Port: port, MetricsURL: metricsURL}
}

// freeUDPPort returns a loopback UDP port that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// rssKiB is VmRSS of a process in KiB (from /proc/PID/status).
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				n, err := strconv.Atoi(f[0])
				if err == nil {
					return n
				}
			}
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// safeLogf is t.Logf until the test ends, then silent: client goroutines may still log after it.
func safeLogf(t *testing.T) func(string, ...any) {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() { mu.Lock(); done = true; mu.Unlock() })
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Logf(format, args...)
		}
	}
}

// msgStream reads every message of one derphttp client connection into a channel, until the first
// error (the connection is then dead; nothing here reconnects).
type msgStream struct {
	name string
	msgs chan derp.ReceivedMessage
	done chan struct{}
	quit chan struct{}
	err  error // valid after done is closed
}

func newStream(t *testing.T, name string, c *derphttp.Client) *msgStream {
	s := &msgStream{name: name, msgs: make(chan derp.ReceivedMessage, 4096), done: make(chan struct{}), quit: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			m, err := c.Recv()
			if err != nil {
				s.err = err
				return
			}
			if rp, ok := m.(derp.ReceivedPacket); ok {
				rp.Data = bytes.Clone(rp.Data) // Recv's buffer is reused
				m = rp
			}
			select {
			case s.msgs <- m:
			case <-s.quit:
				return
			}
		}
	}()
	t.Cleanup(func() { close(s.quit); c.Close() })
	return s
}

// nextMatch returns the first message for which match is true (others are discarded), or an error
// when the connection ends or nothing matched within timeout.
func (s *msgStream) nextMatch(timeout time.Duration, match func(derp.ReceivedMessage) bool) (derp.ReceivedMessage, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case m := <-s.msgs:
			if match(m) {
				return m, nil
			}
		case <-s.done:
			// Messages read before the error are still in the channel.
			for {
				select {
				case m := <-s.msgs:
					if match(m) {
						return m, nil
					}
				default:
					return nil, fmt.Errorf("%s: connection ended: %v", s.name, s.err)
				}
			}
		case <-timer.C:
			return nil, fmt.Errorf("%s: nothing expected arrived within %v", s.name, timeout)
		}
	}
}

func (s *msgStream) next(t *testing.T, timeout time.Duration, match func(derp.ReceivedMessage) bool) derp.ReceivedMessage {
	t.Helper()
	m, err := s.nextMatch(timeout, match)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// nextPacket waits for the next data packet.
func (s *msgStream) nextPacket(timeout time.Duration) (derp.ReceivedPacket, error) {
	m, err := s.nextMatch(timeout, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.ReceivedPacket); return ok })
	if err != nil {
		return derp.ReceivedPacket{}, err
	}
	return m.(derp.ReceivedPacket), nil
}

// waitServerInfo waits for ServerInfo: the server has registered the client, so packets sent to
// its key from now on are delivered.
func (s *msgStream) waitServerInfo(t *testing.T) {
	t.Helper()
	s.next(t, 15*time.Second, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.ServerInfoMessage); return ok })
}

// waitClosed expects the server to end the connection within timeout; returns the messages seen.
func (s *msgStream) waitClosed(t *testing.T, timeout time.Duration) []derp.ReceivedMessage {
	t.Helper()
	var seen []derp.ReceivedMessage
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case m := <-s.msgs:
			seen = append(seen, m)
		case <-s.done:
			for {
				select {
				case m := <-s.msgs:
					seen = append(seen, m)
				default:
					return seen
				}
			}
		case <-timer.C:
			t.Fatalf("%s: the server did not close the connection within %v (saw %s)", s.name, timeout, describe(seen))
		}
	}
}

// alive reports whether the connection is still open (it has not ended).
func (s *msgStream) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func describe(ms []derp.ReceivedMessage) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("%T", m))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// dialClient connects Tailscale's derphttp client to s (opts run before Connect) and starts
// reading its messages. It does not wait for ServerInfo.
func dialClient(t *testing.T, s *derpServer, name string, opts ...func(*derphttp.Client)) (*derphttp.Client, key.NodePublic, *msgStream) {
	t.Helper()
	return dialClientKey(t, s, name, key.NewNode(), opts...)
}

// dialClientKey is dialClient with a given node key.
func dialClientKey(t *testing.T, s *derpServer, name string, priv key.NodePrivate, opts ...func(*derphttp.Client)) (*derphttp.Client, key.NodePublic, *msgStream) {
	t.Helper()
	c, err := derphttp.NewClient(priv, s.URL, safeLogf(t), netmon.NewStatic())
	if err != nil {
		t.Fatal(err)
	}
	c.TLSConfig = s.TLSConfig(t)
	for _, o := range opts {
		o(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		c.Close()
		t.Fatalf("derphttp connect %s: %v", s.URL, err)
	}
	return c, priv.Public(), newStream(t, name, c)
}

// loggedIn is dialClient plus waiting for ServerInfo.
func loggedIn(t *testing.T, s *derpServer, name string, opts ...func(*derphttp.Client)) (*derphttp.Client, key.NodePublic, *msgStream) {
	t.Helper()
	c, k, st := dialClient(t, s, name, opts...)
	st.waitServerInfo(t)
	return c, k, st
}

// pingPong sends a DERP ping with data and waits for the Pong carrying the same 8 bytes.
func pingPong(c *derphttp.Client, st *msgStream, data [8]byte, timeout time.Duration) error {
	if err := c.SendPing(data); err != nil {
		return err
	}
	_, err := st.nextMatch(timeout, func(m derp.ReceivedMessage) bool {
		p, ok := m.(derp.PongMessage)
		return ok && p == derp.PongMessage(data)
	})
	return err
}

// ---- raw DERP connections ----

// rawConn is one DERP connection driven frame by frame.
type rawConn struct {
	nc        net.Conn
	br        *bufio.Reader
	priv      key.NodePrivate
	serverKey key.NodePublic
	resp      *http.Response // the 101 answer (nil with fast start)
	tlsState  *tls.ConnectionState
}

// upgradeRequest is the HTTP request Tailscale's client sends (with or without fast start).
func upgradeRequest(fastStart bool) string {
	req := "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n"
	if fastStart {
		req += "Derp-Fast-Start: 1\r\n"
	}
	return req + "\r\n"
}

// dialServer opens a TCP (or TLS, trusting the server's certificate) connection to s.
func dialServer(t *testing.T, s *derpServer, dialer *net.Dialer) (net.Conn, *tls.ConnectionState) {
	t.Helper()
	if dialer == nil {
		dialer = &net.Dialer{Timeout: 10 * time.Second}
	}
	host := strings.TrimSuffix(strings.SplitN(s.URL, "://", 2)[1], "/derp")
	nc, err := dialer.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if !strings.HasPrefix(s.URL, "https://") {
		return nc, nil
	}
	conf := s.TLSConfig(t)
	conf.ServerName = "127.0.0.1"
	tc := tls.Client(nc, conf)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	cs := tc.ConnectionState()
	return tc, &cs
}

// openRaw dials s, sends the upgrade request and reads up to the server's key (after the 101 unless
// fastStart). With prefix, those bytes go in the same write as the request.
func openRaw(t *testing.T, s *derpServer, fastStart bool, dialer *net.Dialer) *rawConn {
	t.Helper()
	nc, cs := dialServer(t, s, dialer)
	r := &rawConn{nc: nc, br: bufio.NewReaderSize(nc, 64<<10), priv: key.NewNode(), tlsState: cs}
	r.write(t, []byte(upgradeRequest(fastStart)))
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if !fastStart {
		resp, err := http.ReadResponse(r.br, nil)
		if err != nil {
			t.Fatalf("reading the upgrade response: %v", err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			t.Fatalf("upgrade: %s %q", resp.Status, b)
		}
		r.resp = resp
	}
	r.serverKey = r.readServerKey(t)
	nc.SetReadDeadline(time.Time{})
	return r
}

func (r *rawConn) write(t *testing.T, b []byte) {
	t.Helper()
	r.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.nc.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// frame is a DERP frame: type, big-endian length, payload.
func frame(typ derp.FrameType, payload []byte) []byte {
	return append(frameHeader(typ, uint32(len(payload))), payload...)
}

func frameHeader(typ derp.FrameType, n uint32) []byte {
	return []byte{byte(typ), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// readFrame reads one frame (refusing more than 1 MiB, as Tailscale's client does).
func (r *rawConn) readFrame(timeout time.Duration) (derp.FrameType, []byte, error) {
	r.nc.SetReadDeadline(time.Now().Add(timeout))
	defer r.nc.SetReadDeadline(time.Time{})
	typ, n, err := derp.ReadFrameHeader(r.br)
	if err != nil {
		return 0, nil, err
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("frame type %#x claims %d bytes", typ, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.br, b); err != nil {
		return 0, nil, err
	}
	return typ, b, nil
}

func (r *rawConn) readServerKey(t *testing.T) key.NodePublic {
	t.Helper()
	typ, b, err := r.readFrame(10 * time.Second)
	if err != nil {
		t.Fatalf("reading ServerKey: %v", err)
	}
	if typ != derp.FrameServerKey || len(b) < 40 || string(b[:8]) != derp.Magic {
		t.Fatalf("first frame: type %#x, %d bytes %x; want ServerKey (magic + 32-byte key)", typ, len(b), b)
	}
	var k key.NodePublic
	if err := k.UnmarshalText([]byte("nodekey:" + fmt.Sprintf("%x", b[8:40]))); err != nil {
		t.Fatal(err)
	}
	return k
}

// clientInfo is a ClientInfo frame payload: our key + the JSON info sealed to the server key.
func (r *rawConn) clientInfo(t *testing.T, info derp.ClientInfo) []byte {
	t.Helper()
	msg, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	pub := r.priv.Public()
	return append(pub.AppendTo(nil), r.priv.SealTo(r.serverKey, msg)...)
}

// login sends a ClientInfo and waits for a ServerInfo that opens with our key (version 2).
func (r *rawConn) login(t *testing.T, info derp.ClientInfo) {
	t.Helper()
	if info.Version == 0 {
		info.Version = derp.ProtocolVersion
	}
	r.write(t, frame(derp.FrameClientInfo, r.clientInfo(t, info)))
	r.expectServerInfo(t)
}

func (r *rawConn) expectServerInfo(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		typ, b, err := r.readFrame(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for ServerInfo: %v", err)
		}
		if typ != derp.FrameServerInfo {
			continue // KeepAlive, Health ...
		}
		plain, ok := r.priv.OpenFrom(r.serverKey, b)
		if !ok {
			t.Fatalf("ServerInfo (%d bytes) does not open with our key", len(b))
		}
		var si struct{ Version int }
		if err := json.Unmarshal(plain, &si); err != nil || si.Version != derp.ProtocolVersion {
			t.Fatalf("ServerInfo JSON %q (version %d, err %v)", plain, si.Version, err)
		}
		return
	}
	t.Fatal("no ServerInfo within 10s")
}

// pingPong sends a Ping frame with payload and waits for the Pong echoing its first 8 bytes.
func (r *rawConn) pingPong(t *testing.T, payload []byte) {
	t.Helper()
	r.write(t, frame(derp.FramePing, payload))
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		typ, b, err := r.readFrame(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for Pong: %v", err)
		}
		if typ == derp.FramePong {
			if !bytes.Equal(b, payload[:8]) {
				t.Fatalf("Pong %x, want %x", b, payload[:8])
			}
			return
		}
	}
	t.Fatal("no Pong within 10s")
}

// isClosedErr: the peer closed (FIN or RST), as opposed to our read deadline.
func isClosedErr(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset")
}

// expectClosed reads (and discards frames) until the server closes the connection; fails if it is
// still open after timeout. Returns the frame types seen before the close.
func (r *rawConn) expectClosed(t *testing.T, timeout time.Duration) []derp.FrameType {
	t.Helper()
	var seen []derp.FrameType
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("connection still open after %v (frames seen: %x)", timeout, seen)
		}
		r.nc.SetReadDeadline(deadline)
		typ, n, err := derp.ReadFrameHeader(r.br)
		if err == nil {
			seen = append(seen, typ)
			_, err = io.CopyN(io.Discard, r.br, int64(n))
		}
		if err != nil {
			if isClosedErr(err) {
				return seen
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("connection still open after %v (frames seen: %x)", timeout, seen)
			}
			t.Fatalf("read: %v", err)
		}
	}
}
