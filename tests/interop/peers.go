package interop

// DERP servers for the client interop tests, started on loopback and stopped (by PID) in
// t.Cleanup: Tailscale's derper, built from the pinned module (go.mod: tool tailscale.com/cmd/derper),
// and derpd. Tests range over derpServers, so adding a server is one line there.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// serverOpts selects what a started server offers.
type serverOpts struct {
	TLS     bool   // HTTPS with a self-signed certificate for 127.0.0.1 (plus the DERP meta cert)
	MeshKey string // 64 hex digits: the region mesh key; empty for none
	Workers int    // derpd --workers; 0 for the default of 2 (derper has no workers: ignored)
}

// derpdWorkersArgs: derpd's --workers flag for o.
func derpdWorkersArgs(o serverOpts) []string {
	workers := 2
	if o.Workers > 0 {
		workers = o.Workers
	}
	return []string{"--workers", strconv.Itoa(workers)}
}

// derpServer is a running DERP server as its clients see it.
type derpServer struct {
	Name     string
	URL      string // http(s)://127.0.0.1:PORT/derp
	CertName string // "sha256-raw:<hex>" of the server certificate (TLS only)
	CertFile string // PEM of the self-signed server certificate (TLS only): a root for Go clients
}

// TLSConfig trusts the server's self-signed certificate (for Tailscale's derphttp client, whose
// tlsdial takes extra roots from RootCAs and refuses InsecureSkipVerify).
func (s *derpServer) TLSConfig(t *testing.T) *tls.Config {
	t.Helper()
	if s.CertFile == "" {
		return nil
	}
	pemBytes, err := os.ReadFile(s.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("no certificate in %s", s.CertFile)
	}
	return &tls.Config{RootCAs: pool}
}

type serverKind struct {
	name  string
	start func(t *testing.T, o serverOpts) *derpServer
}

// derpServers: every DERP server implementation the client tests run against.
var derpServers = []serverKind{
	{"derper", startDerper},
	{"derpd", startDerpdRelay},
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// goCommand is one of Tailscale's commands: $env when set, else built once per test run from the
// module pinned in go.mod (tool directive; works with GOFLAGS=-mod=readonly after `go mod
// download`) into a reused temp path.
type goCommand struct {
	env, pkg string
	once     sync.Once
	path     string
	err      error
}

var (
	derperCommand    = &goCommand{env: "DERPER_BIN", pkg: "tailscale.com/cmd/derper"}
	derpprobeCommand = &goCommand{env: "DERPPROBE_BIN", pkg: "tailscale.com/cmd/derpprobe"}
)

func (c *goCommand) binary(t *testing.T) string {
	t.Helper()
	c.once.Do(func() {
		if p := os.Getenv(c.env); p != "" {
			c.path = p
			return
		}
		dir := filepath.Join(os.TempDir(), "derpd-interop")
		if c.err = os.MkdirAll(dir, 0o755); c.err != nil {
			return
		}
		out := filepath.Join(dir, filepath.Base(c.pkg))
		tmp := fmt.Sprintf("%s.%d", out, os.Getpid())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goTool(), "build", "-o", tmp, c.pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			c.err = fmt.Errorf("go build %s: %v\n%s", c.pkg, err, b)
			return
		}
		c.err = os.Rename(tmp, out) // atomic: concurrent runs never see a half-written binary
		c.path = out
	})
	if c.err != nil {
		t.Fatal(c.err)
	}
	return c.path
}

// derperBinary is Tailscale's derper ($DERPER_BIN, or built).
func derperBinary(t *testing.T) string { return derperCommand.binary(t) }

// derpprobeBinary is Tailscale's derpprobe ($DERPPROBE_BIN, or built).
func derpprobeBinary(t *testing.T) string { return derpprobeCommand.binary(t) }

// derpdBinary is $DERPD_BIN (set by ctest).
func derpdBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("DERPD_BIN")
	if bin == "" {
		t.Fatal("DERPD_BIN is not set (run through ctest / tools/test)")
	}
	return bin
}

// process is a server process with its combined output kept for failure messages.
type process struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	out strings.Builder
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *process) text() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startProcess runs bin with args, stops it by PID in t.Cleanup (SIGTERM, then SIGKILL after 10 s),
// and waits until addr accepts TCP connections.
func startProcess(t *testing.T, addr, bin string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...)}
	p.cmd.Stdout = p
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { p.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("%s exited before listening on %s:\n%s", filepath.Base(bin), addr, p.text())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s after 20s:\n%s", filepath.Base(bin), addr, p.text())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startDerper runs Tailscale's derper (see startDerpLike).
func startDerper(t *testing.T, o serverOpts) *derpServer {
	t.Helper()
	return startDerpLike(t, "derper", derperBinary(t), o)
}

// startDerpdRelay runs derpd (DERPD_BIN) exactly as derper: derpd takes derper's flags.
func startDerpdRelay(t *testing.T, o serverOpts) *derpServer {
	t.Helper()
	// Metrics off: tests run several nodes at once, and 127.0.0.1:9100 is the default.
	return startDerpLike(t, "derpd", derpdBinary(t), o, append([]string{"--metrics-addr", "127.0.0.1:0"}, derpdWorkersArgs(o)...)...)
}

// startDerpLike runs a server that takes derper's flags on 127.0.0.1 (no STUN, no port 80; see
// derperArgs). With TLS derper serves its DERP meta cert after the certificate, so TLS 1.3 clients
// get fast start.
func startDerpLike(t *testing.T, name, bin string, o serverOpts, extra ...string) *derpServer {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s, args := derperArgs(t, name, t.TempDir(), addr, o, "")
	startProcess(t, addr, bin, append(append(args, "-stun=false"), extra...)...)
	return s
}

// derperArgs are derper's flags, but for STUN, for a server on addr with its files in dir (the
// node key, certificates, mesh key), no port 80, and s, the server as its clients see it. With TLS:
// -certmode manual with a fresh certificate for tlsHost ("" for 127.0.0.1; see writeCertFor), which
// is also -hostname. With a mesh key: -mesh-psk-file.
func derperArgs(t *testing.T, name, dir, addr string, o serverOpts, tlsHost string) (s *derpServer, args []string) {
	t.Helper()
	args = []string{"-a", addr, "-http-port", "-1", "-c", filepath.Join(dir, "derper.key")}
	s = &derpServer{Name: name, URL: fmt.Sprintf("http://%s/derp", addr)}
	if o.TLS {
		if tlsHost == "" {
			tlsHost = "127.0.0.1"
		}
		certDir := filepath.Join(dir, "certs")
		crt, err := writeCertFor(certDir, tlsHost)
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "-certmode", "manual", "-hostname", tlsHost, "-certdir", certDir)
		s.URL = fmt.Sprintf("https://%s/derp", addr)
		s.CertFile = crt
		if s.CertName, err = certPin(crt); err != nil {
			t.Fatal(err)
		}
	}
	if o.MeshKey != "" {
		f := filepath.Join(dir, "mesh.key")
		if err := os.WriteFile(f, []byte(o.MeshKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-mesh-psk-file", f)
	}
	return s, args
}

// certSpec describes a throwaway self-signed server certificate for the tests.
type certSpec struct {
	file     string   // <dir>/<file>.crt and .key: the names -certmode manual looks for
	cn       string   // subject common name
	dnsNames []string // subject alternative names
	ips      []net.IP
	ca       bool // also a CA (a trust anchor for peers that verify against it)
}

// writeCert writes spec's ECDSA P-256 certificate (valid for a day) and key; returns the .crt path.
func writeCert(dir string, spec certSpec) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: spec.cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              spec.dnsNames,
		IPAddresses:           spec.ips,
	}
	if spec.ca {
		tmpl.IsCA = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		return "", err
	}
	crtPath := filepath.Join(dir, spec.file+".crt")
	if err := os.WriteFile(crtPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, spec.file+".key"), keyPEM, 0o600); err != nil {
		return "", err
	}
	return crtPath, nil
}

// writeSelfSignedCert writes <dir>/<ip>.crt and .key: a certificate for the IP address.
func writeSelfSignedCert(dir, ip string) (string, error) {
	return writeCert(dir, certSpec{file: ip, cn: ip, ips: []net.IP{net.ParseIP(ip)}})
}

// writeCertFor is writeSelfSignedCert for a host name: <dir>/<name>.crt and .key, a certificate
// valid for the name and for 127.0.0.1.
func writeCertFor(dir, name string) (string, error) {
	if net.ParseIP(name) != nil {
		return writeSelfSignedCert(dir, name)
	}
	return writeCert(dir, certSpec{file: name, cn: name, dnsNames: []string{name},
		ips: []net.IP{net.ParseIP("127.0.0.1")}})
}

// certPin is the DERP map CertName form of a PEM certificate: "sha256-raw:" + hex(SHA-256(DER)).
func certPin(pemFile string) (string, error) {
	b, err := os.ReadFile(pemFile)
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", errors.New("no PEM certificate in " + pemFile)
	}
	sum := sha256.Sum256(block.Bytes)
	return "sha256-raw:" + hex.EncodeToString(sum[:]), nil
}
