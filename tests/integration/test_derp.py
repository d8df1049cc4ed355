"""derpd's DERP port under bad input, at the HTTP and connection level, on loopback.

Every case also checks that a normal client still works afterwards: derpcat (DERPCAT_BIN, or
tools/derpcat/derpcat in the build directory of DERPD_BIN) runs its `check` (two clients, packets
both ways, ping, PeerGone). Frame-level cases that need the DERP handshake crypto are in
tests/interop/badinput_test.go. With DERPER_BIN set, the same cases also run against Tailscale's
derper as the control.
"""
import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from harness import DERPD, Daemon

DERPCAT = os.environ.get("DERPCAT_BIN") or (
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(DERPD))), "tools", "derpcat", "derpcat")
    if DERPD else "")
DERPER = os.environ.get("DERPER_BIN", "")

MAGIC = b"DERP\xf0\x9f\x94\x91"
FRAME_SERVER_KEY, FRAME_CLIENT_INFO, FRAME_SERVER_INFO = 0x01, 0x02, 0x03
UPGRADE = (b"GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Go-http-client/1.1\r\n"
           b"Connection: Upgrade\r\nUpgrade: DERP\r\n\r\n")


# ---- servers ----

class DerpdRelay:
    name = "derpd"
    tls = False

    def __init__(self, tmp):
        tls_args = ("-certmode", "dev", "-hostname", "127.0.0.1") if self.tls else ()
        self.d = Daemon("-a", "127.0.0.1:0", "-http-port=-1", "-stun=false", "-c", os.path.join(tmp, "derpd.key"),
                        "--metrics-addr", "127.0.0.1:0", "--workers", "2", *tls_args)
        ports = [int(m.group(1)) for line in self.d.lines
                 for m in [re.search(r"derp listening on tcp 127\.0\.0\.1:(\d+)", line)] if m]
        if not ports:
            self.d.stop()
            raise RuntimeError("derpd logged no DERP listener:\n" + self.d.log())
        self.port = ports[0]
        self.pid = self.d.proc.pid
        self.cert_name = ""
        if self.tls:  # the self-signed certificate's pin, from the DERP map derpd prints
            for line in self.d.lines:
                m = re.search(r"derp map: (\{.*\})", line)
                if m:
                    nodes = [n for r in json.loads(m.group(1))["Regions"].values() for n in r["Nodes"]]
                    self.cert_name = nodes[0].get("CertName", "")
            if not self.cert_name:
                self.d.stop()
                raise RuntimeError("no CertName in derpd's DERP map:\n" + self.d.log())

    def log(self):
        return self.d.log()

    def stop(self):
        self.d.stop()


class DerpdTLSRelay(DerpdRelay):
    tls = True


class DerperRelay:
    name = "derper"
    tls = False
    cert_name = ""

    def __init__(self, tmp):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.out = open(os.path.join(tmp, "derper.log"), "w+")
        self.proc = subprocess.Popen([DERPER, "-a", "127.0.0.1:%d" % self.port, "-http-port=-1", "-stun=false",
                                      "-c", os.path.join(tmp, "derper.key")], stdout=self.out, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("derper did not start:\n" + self.log())
                time.sleep(0.05)

    def log(self):
        self.out.flush()
        with open(self.out.name) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


# ---- raw connections ----

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Target:
    """Opens connections to the relay's port: TCP, or TLS for a TLS relay (the certificate is not
    verified here: derpcat checks the pin; these cases are about bytes)."""

    def __init__(self, port, tls):
        self.port = port
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.ctx.check_hostname = False
            self.ctx.verify_mode = ssl.CERT_NONE

    def tcp(self, timeout=5.0):
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def open(self, timeout=5.0):
        s = self.tcp(timeout)
        return self.ctx.wrap_socket(s, server_hostname="127.0.0.1") if self.ctx else s


def recv(sock, n=65536):
    """sock.recv, with a TLS connection ending without close_notify read as end of stream."""
    try:
        return sock.recv(n)
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
        return b""


def read_response(sock, head_request=False, timeout=5.0):
    """(status, headers with lower-case names, body, bytes after the body) of one HTTP response."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = recv(sock)
        if not d:
            raise AssertionError("connection closed inside the response head: %r" % buf[:300])
        buf += d
        if len(buf) > 1 << 20:
            raise AssertionError("response head over 1 MiB")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if not m:
        raise AssertionError("bad status line %r" % lines[0])
    status = int(m.group(1))
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = 0 if head_request or status in (101, 204, 304) else int(headers.get("content-length", "0"))
    while len(rest) < n:
        d = recv(sock)
        if not d:
            break
        rest += d
    return status, headers, rest[:n], rest[n:]


class _Prefixed:
    """A socket whose first bytes were already read (left over after the previous response)."""

    def __init__(self, sock, prefix):
        self.sock, self.prefix = sock, prefix

    def settimeout(self, t):
        self.sock.settimeout(t)

    def recv(self, n):
        if self.prefix:
            b, self.prefix = self.prefix[:n], self.prefix[n:]
            return b
        return recv(self.sock, n)


def request(target, raw, head_request=False):
    with target.open() as s:
        s.sendall(raw)
        status, headers, body, _ = read_response(s, head_request)
        return status, headers, body


def get(target, path, headers=(), method="GET"):
    raw = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sConnection: close\r\n\r\n" % (
        method, path, "".join("%s: %s\r\n" % h for h in headers))
    return request(target, raw.encode(), head_request=(method == "HEAD"))


def wait_closed(sock, timeout):
    """Reads (discarding) until the peer closes: (True, seconds) on FIN/RST, (False, timeout) if still open."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, timeout
        sock.settimeout(min(left, 0.5))
        try:
            if recv(sock) == b"":
                return True, time.monotonic() - t0
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return True, time.monotonic() - t0


def upgraded(target):
    """A connection after the DERP upgrade and the ServerKey frame: (socket, 101 headers, server key)."""
    s = target.open()
    s.sendall(UPGRADE)
    status, headers, _, rest = read_response(s)
    if status != 101:
        s.close()
        raise AssertionError("upgrade answered %d" % status)
    while len(rest) < 5 + 40:
        d = recv(s)
        if not d:
            raise AssertionError("closed before ServerKey")
        rest += d
    typ, n = struct.unpack("!BI", rest[:5])
    if typ != FRAME_SERVER_KEY or n < 40 or rest[5:13] != MAGIC:
        raise AssertionError("first frame %r" % rest[:45])
    return s, headers, rest[13:45]


def send_ignoring_close(sock, data):
    """sendall that tolerates the server hanging up mid-way (it may close as soon as it has seen enough)."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass


# ---- the cases ----

class DerpBadInput:
    """Mixin: the cases, run against cls.relay_class."""
    relay_class = None

    @classmethod
    def setUpClass(cls):
        if not DERPCAT or not os.path.exists(DERPCAT):
            raise RuntimeError("derpcat not found (set DERPCAT_BIN or build tools/derpcat next to DERPD_BIN): %r" % DERPCAT)
        cls.tmp = tempfile.mkdtemp(prefix="test_derp.")
        cls.relay = cls.relay_class(cls.tmp)
        cls.port = cls.relay.port
        cls.target = Target(cls.port, cls.relay.tls)
        cls.url = "%s://127.0.0.1:%d/derp" % ("https" if cls.relay.tls else "http", cls.port)
        cls.derpcat = [DERPCAT, "--url", cls.url] + (["--cert-name", cls.relay.cert_name] if cls.relay.cert_name else [])

    @classmethod
    def tearDownClass(cls):
        cls.relay.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def tearDown(self):
        # Every case ends with an ordinary client round trip through the same server.
        r = subprocess.run(self.derpcat + ["--connect-timeout", "10", "check", "--count", "2", "--timeout", "10"],
                           capture_output=True, text=True, timeout=90)
        self.assertEqual(r.returncode, 0, "derpcat check failed after the case:\n%s\n%s\nserver log tail:\n%s"
                         % (r.stdout, r.stderr, self.relay.log()[-3000:]))

    # HTTP level

    def test_garbage_instead_of_http_gets_400_and_close(self):
        for junk in (b"hello garbage\r\n\r\n", b"\x00\x01\x02\xff" * 100 + b"\r\n\r\n", b"GET\r\n\r\n",
                     b"GET /derp HTTP/1.1\r\nno colon here\r\n\r\n"):
            with self.subTest(junk=junk[:20]), self.target.open() as s:
                s.sendall(junk)
                status, _, _, _ = read_response(s)
                self.assertEqual(status, 400)
                closed, _ = wait_closed(s, 5)
                self.assertTrue(closed, "connection left open after 400")

    def test_huge_http_head_gets_431(self):
        head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(2048)) + b"\r\n"
        with self.target.open() as s:
            sender = threading.Thread(target=send_ignoring_close, args=(s, head), daemon=True)
            sender.start()  # the server answers (and hangs up) long before 2 MiB
            status, _, _, _ = read_response(s, timeout=10)
            self.assertEqual(status, 431)
            closed, _ = wait_closed(s, 10)
            self.assertTrue(closed)
            sender.join(10)

    def test_derp_without_upgrade_gets_426(self):
        for extra in ((), (("Upgrade", "foo"), ("Connection", "Upgrade")), (("Upgrade", "h2c"),)):
            with self.subTest(headers=extra):
                status, _, body = get(self.target, "/derp", extra)
                self.assertEqual(status, 426)
                self.assertEqual(body.strip(), b"DERP requires connection upgrade")

    def test_probe_endpoints(self):
        for path in ("/derp/probe", "/derp/latency-check"):
            for method in ("GET", "HEAD"):
                with self.subTest(path=path, method=method):
                    status, headers, body = get(self.target, path, method=method)
                    self.assertEqual(status, 200)
                    self.assertEqual(headers.get("access-control-allow-origin"), "*")
                    self.assertEqual(body, b"")
            with self.subTest(path=path, method="POST"):
                status, _, _ = get(self.target, path, method="POST")
                self.assertEqual(status, 405)

    def test_generate_204_challenge(self):
        ok = "abc-XYZ_09.:" + "z" * 52  # 64 characters of the allowed set
        status, headers, body = get(self.target, "/generate_204", [("X-Tailscale-Challenge", ok)])
        self.assertEqual((status, body), (204, b""))
        self.assertEqual(headers.get("x-tailscale-response"), "response " + ok)
        for bad in ("a b", "z" * 65, "x/y", "caf\u00e9".encode("utf-8").decode("latin-1")):
            with self.subTest(challenge=bad[:10]):
                status, headers, _ = get(self.target, "/generate_204", [("X-Tailscale-Challenge", bad)])
                self.assertEqual(status, 204)
                self.assertNotIn("x-tailscale-response", headers)
        status, headers, _ = get(self.target, "/generate_204")
        self.assertEqual(status, 204)
        self.assertNotIn("x-tailscale-response", headers)

    def test_robots_and_home(self):
        status, _, body = get(self.target, "/robots.txt")
        self.assertEqual((status, body), (200, b"User-agent: *\nDisallow: /\n"))
        status, headers, body = get(self.target, "/")
        self.assertEqual(status, 200)
        self.assertTrue(headers.get("content-type", "").startswith("text/html"), headers)
        self.assertIn(b"DERP", body)

    def test_upgrade_sends_server_key(self):
        s, headers, key = upgraded(self.target)
        s.close()
        self.assertEqual(headers.get("upgrade", "").lower(), "derp")
        self.assertEqual(headers.get("derp-version"), "2")
        self.assertEqual(headers.get("derp-public-key"), key.hex())

    def test_keepalive_pipelined_requests_then_upgrade(self):
        """Two pipelined requests and an upgrade in one write: answered in order on one connection."""
        with self.target.open() as s:
            s.sendall(b"GET /derp/probe HTTP/1.1\r\nHost: x\r\n\r\nGET /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n" + UPGRADE)
            status, _, body, rest = read_response(s)
            self.assertEqual((status, body), (200, b""))
            s2 = _Prefixed(s, rest)
            status, _, body, rest = read_response(s2)
            self.assertEqual((status, body), (200, b"User-agent: *\nDisallow: /\n"))
            status, headers, _, rest = read_response(_Prefixed(s, rest))
            self.assertEqual(status, 101)
            while len(rest) < 45:
                d = recv(s)
                if not d:
                    break
                rest += d
            self.assertEqual(rest[:5], struct.pack("!BI", FRAME_SERVER_KEY, 40))
            self.assertEqual(rest[5:13], MAGIC)
            self.assertEqual(rest[13:45].hex(), headers.get("derp-public-key"))

    # connection level

    def test_half_open_handshake_and_head_are_closed(self):
        """Upgrade then silence: closed by the server's 10 s handshake deadline (bound: 15 s). A request
        head that never ends: closed too (derper: 30 s read timeout; bound: 40 s)."""
        hs, _, _ = upgraded(self.target)
        head = self.target.open()
        head.sendall(b"GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\n")
        results = {}

        def watch(name, sock, timeout):
            results[name] = wait_closed(sock, timeout)

        threads = [threading.Thread(target=watch, args=("handshake", hs, 15)),
                   threading.Thread(target=watch, args=("head", head, 40))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(45)
        hs.close()
        head.close()
        closed, secs = results["handshake"]
        self.assertTrue(closed, "half-open DERP handshake still open after 15 s")
        self.assertGreaterEqual(secs, 2.0, "closed after %.1f s: clients get 10 s to send ClientInfo" % secs)
        closed, secs = results["head"]
        self.assertTrue(closed, "unfinished HTTP head still open after 40 s")

    def test_client_info_that_does_not_decrypt_closes(self):
        s, _, _ = upgraded(self.target)
        # A well-formed ClientInfo frame: a key, a nonce and a "box" of random bytes.
        payload = secrets.token_bytes(32) + secrets.token_bytes(24) + secrets.token_bytes(64)
        s.sendall(struct.pack("!BI", FRAME_CLIENT_INFO, len(payload)) + payload)
        s.settimeout(10)
        data = b""
        try:
            while True:
                d = recv(s)
                if not d:
                    break
                data += d
        except (ConnectionResetError, ssl.SSLError):
            pass
        except socket.timeout:
            self.fail("connection still open 10 s after an undecryptable ClientInfo")
        finally:
            s.close()
        if len(data) >= 5:
            self.assertNotEqual(data[0], FRAME_SERVER_INFO, "the server answered ServerInfo")

    def test_frame_length_4gib_closes_without_growing(self):
        before = rss_kib(self.relay.pid)
        for _ in range(20):
            s, _, _ = upgraded(self.target)
            send_ignoring_close(s, struct.pack("!BI", FRAME_CLIENT_INFO, 0xFFFFFFFF) + secrets.token_bytes(64 << 10))
            closed, _ = wait_closed(s, 10)
            s.close()
            self.assertTrue(closed, "still open after a ClientInfo claiming 4 GiB")
        time.sleep(0.2)
        after = rss_kib(self.relay.pid)
        self.assertLess(after - before, 10 << 10, "RSS %d KiB -> %d KiB" % (before, after))

    def test_2000_abandoned_connections(self):
        """2,000 connections opened and dropped at every stage of the upgrade (over TLS: before,
        inside and after the TLS handshake), 200 at a time."""
        base_fds = open_fds(self.relay.pid)
        t0 = time.monotonic()
        total = 0
        partial = b"\x16\x03\x01\x02\x00\x01\x00" if self.target.ctx else b"GET /derp HTTP/1.1\r\nHost:"
        for batch in range(10):
            socks = []
            try:
                for i in range(200):
                    style = (batch * 200 + i) % 5
                    s = self.target.open() if style in (2, 3) else self.target.tcp()
                    socks.append(s)
                    if style == 1:  # a partial HTTP head (TLS: a partial ClientHello)
                        s.sendall(partial)
                    elif style in (2, 3):
                        s.sendall(UPGRADE)
                    elif style == 4:  # reset instead of FIN
                        s.sendall(partial[:5])
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                for i, s in enumerate(socks):
                    if (batch * 200 + i) % 5 == 3:  # wait for the 101 and ServerKey, then leave
                        s.settimeout(5)
                        got = b""
                        while len(got) < 45 and b"\r\n\r\n" not in got:
                            d = recv(s, 4096)
                            if not d:
                                break
                            got += d
                        self.assertTrue(got.startswith(b"HTTP/1.1 101"), got[:100])
            finally:
                for s in socks:
                    s.close()
            total += len(socks)
            self.assertLess(time.monotonic() - t0, 120, "2,000 connections took over 2 minutes")
        self.assertEqual(total, 2000)
        # Everything abandoned is released: the server's descriptors come back to where they were.
        deadline = time.monotonic() + 30
        while open_fds(self.relay.pid) > base_fds + 16 and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertLessEqual(open_fds(self.relay.pid), base_fds + 16,
                             "descriptors %d -> %d" % (base_fds, open_fds(self.relay.pid)))

    def test_flood_to_a_client_that_never_reads(self):
        """A stopped receiver (SIGSTOP: it never reads) flooded with 20,000 x 1 KiB: the server's RSS
        stays bounded and the sender is not disconnected (derpcat send ends with a ping round trip)."""
        rx = subprocess.Popen(self.derpcat + ["--json", "recv", "--timeout", "120"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in rx.stdout], daemon=True).start()
        try:
            rx_key = None
            deadline = time.monotonic() + 20
            while rx_key is None and time.monotonic() < deadline:
                try:
                    e = json.loads(lines.get(timeout=1))
                except queue.Empty:
                    continue
                except ValueError:
                    continue
                if e.get("event") == "connected":
                    rx_key = e["me"]
            self.assertIsNotNone(rx_key, "derpcat recv did not connect")
            os.kill(rx.pid, signal.SIGSTOP)
            before = peak = rss_kib(self.relay.pid)
            with tempfile.TemporaryFile("w+") as out:
                tx = subprocess.Popen(self.derpcat + ["--json", "send", "--to", rx_key,
                                       "--count", "20000", "--size", "1024"], stdout=out, stderr=subprocess.STDOUT, text=True)
                deadline = time.monotonic() + 120
                while tx.poll() is None and time.monotonic() < deadline:
                    peak = max(peak, rss_kib(self.relay.pid))
                    time.sleep(0.02)
                if tx.poll() is None:
                    tx.kill()
                    tx.wait()
                    self.fail("derpcat send of 20,000 packets did not finish in 120 s")
                peak = max(peak, rss_kib(self.relay.pid))
                out.seek(0)
                text = out.read()
            self.assertEqual(tx.returncode, 0, "flood sender failed (disconnected?):\n" + text[-2000:])
            done = [json.loads(line) for line in text.splitlines() if '"done"' in line]
            self.assertTrue(done and done[-1].get("sent") == 20000, text[-500:])
            self.assertLess(peak - before, 64 << 10, "RSS %d KiB -> peak %d KiB" % (before, peak))
        finally:
            os.kill(rx.pid, signal.SIGCONT)
            rx.terminate()
            try:
                rx.wait(10)
            except subprocess.TimeoutExpired:
                rx.kill()
                rx.wait()
            rx.stdout.close()


class Derpd(DerpBadInput, unittest.TestCase):
    relay_class = DerpdRelay


class DerpdTLS(DerpBadInput, unittest.TestCase):
    """The same cases over TLS (derpd -certmode dev), plus bad input at the TLS layer."""
    relay_class = DerpdTLSRelay

    def test_plain_http_to_the_tls_port(self):
        with self.target.tcp() as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, _, rest = read_response(s)
            self.assertEqual(status, 400)
            closed, _ = wait_closed(s, 5)
            self.assertTrue(closed)

    def test_bogus_tls_records_are_refused(self):
        for junk in (b"\x16\x03\x01\x00\x05hello", secrets.token_bytes(4096), b"\x16\x03\x01\xff\xff" + b"\x00" * 1000):
            with self.subTest(junk=junk[:8]), self.target.tcp() as s:
                send_ignoring_close(s, junk)
                closed, _ = wait_closed(s, 35)
                self.assertTrue(closed, "connection left open after bogus TLS bytes")

    def test_silent_connections_are_closed(self):
        """No ClientHello at all, and a finished TLS handshake with no request: both closed
        (derpd: 10 s; derper's read timeout: 30 s; bound: 40 s)."""
        idle = self.target.tcp()
        tls_idle = self.target.open()
        self.assertEqual(tls_idle.version(), "TLSv1.3")
        results = {}
        threads = [threading.Thread(target=lambda n=n, s=s: results.__setitem__(n, wait_closed(s, 40)))
                   for n, s in (("tcp", idle), ("tls", tls_idle))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(45)
        idle.close()
        tls_idle.close()
        for name in ("tcp", "tls"):
            self.assertTrue(results[name][0], "%s connection with no request still open after 40 s" % name)


@unittest.skipUnless(DERPER and os.path.exists(DERPER), "DERPER_BIN not set: no derper control run")
class Derper(DerpBadInput, unittest.TestCase):
    relay_class = DerperRelay


if __name__ == "__main__":
    unittest.main()
