"""derpd's admission webhook and region mesh end to end on loopback, as /metrics reports them.

Admission: derpd asks a local controller (Python's http.server) about every client; the
controller answers only after redirects (307 keeps the POST, 302 turns it into a GET, a loop never
ends), which derpd follows as derper's Go HTTP client does. Mesh: two derpd nodes dial each other
(-mesh-with), a packet crosses from a client on one node to a client on the other, and each node's
/metrics shows the link up, the peer's clients learned through WatchConns and the forwarded packet.
Every family passes `promtool check metrics` when promtool is installed.

Clients are derpcat (DERPCAT_BIN, or tools/derpcat/derpcat in the build directory of DERPD_BIN).
Every process is stopped by its PID; nothing leaves loopback; every wait is bounded.
"""
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

from harness import DERPD, Daemon

DERPCAT = os.environ.get("DERPCAT_BIN") or (
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(DERPD))), "tools", "derpcat", "derpcat")
    if DERPD else "")
MESH_KEY = "ab" * 32


def port_from(daemon, pattern):
    for line in daemon.lines:
        m = re.search(pattern, line)
        if m:
            return int(m.group(1))
    raise AssertionError("no %r in derpd's log:\n%s" % (pattern, daemon.log()))


def free_tcp_ports(n):
    """n loopback ports free right now (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Node:
    """One derpd with plaintext DERP (port 0 unless -a is given) and /metrics on loopback."""

    def __init__(self, tmp, name, *extra, metrics_port=None):
        metrics_port = metrics_port or free_tcp_ports(1)[0]  # port 0 turns /metrics off
        self.d = Daemon("-a", "127.0.0.1:0", "-http-port=-1", "-stun=false", "-c", os.path.join(tmp, name + ".key"),
                        "--metrics-addr", "127.0.0.1:%d" % metrics_port, "--workers", "2", *extra)
        self.port = port_from(self.d, r"derp listening on tcp 127\.0\.0\.1:(\d+)")
        self.metrics_port = port_from(self.d, r"metrics listening on http://127\.0\.0\.1:(\d+)/metrics")
        self.url = "http://127.0.0.1:%d/derp" % self.port

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=5) as r:
            return r.read().decode()

    def sample(self, name, **labels):
        """The value of one series, or None."""
        want = name + ("{" + ",".join('%s="%s"' % kv for kv in labels.items()) + "}" if labels else "")
        for line in self.metrics().splitlines():
            series, _, value = line.rpartition(" ")
            if series == want:
                return float(value)
        return None

    def wait_sample(self, name, pred, timeout=15.0, **labels):
        deadline = time.monotonic() + timeout
        v = None
        while time.monotonic() < deadline:
            v = self.sample(name, **labels)
            if v is not None and pred(v):
                return v
            time.sleep(0.05)
        raise AssertionError("%s%r stayed at %r\n%s" % (name, labels, v, self.d.log()))

    def stop(self):
        self.d.stop()


def derpcat(*args, timeout=20):
    return subprocess.run([DERPCAT, *args], capture_output=True, text=True, timeout=timeout)


def keygen(tmp, name):
    path = os.path.join(tmp, name + ".json")
    r = derpcat("keygen", "--out", path)
    if r.returncode != 0:
        raise AssertionError("derpcat keygen: " + r.stdout + r.stderr)
    r = derpcat("--key", path, "pubkey")
    return path, r.stdout.strip()


def promtool_check(test, text):
    if not shutil.which("promtool"):
        return
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    test.assertEqual(r.returncode, 0, r.stdout + r.stderr + "\n" + text)
    test.assertEqual(r.stdout + r.stderr, "", "lint findings")


class Tools(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not DERPCAT or not os.path.exists(DERPCAT):
            raise RuntimeError("derpcat not found (set DERPCAT_BIN or build tools/derpcat next to DERPD_BIN): %r"
                               % DERPCAT)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="derpd-mesh-adm-")
        self.nodes = []

    def tearDown(self):
        for n in self.nodes:
            n.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def node(self, name, *extra):
        n = Node(self.tmp, name, *extra)
        self.nodes.append(n)
        return n


# ---- admission ----

class Controller:
    """An admission controller behind redirects. /start -> 307 /hop -> 302 /decide: the decision
    arrives as a GET (the body was dropped at the 302), so /hop, which still sees the POST, records
    the key for /decide. /loop redirects to itself forever."""

    def __init__(self, allowed):
        self.allowed = allowed
        self.requests = []  # (method, path, body)
        self.lock = threading.Lock()
        ctl = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def handle_one(self):
                n = min(int(self.headers.get("Content-Length", "0") or 0), 1 << 16)
                body = self.rfile.read(n).decode() if n else ""
                with ctl.lock:
                    ctl.requests.append((self.command, self.path, body))
                if self.path == "/start":
                    return self.redirect(307, "/hop")
                if self.path == "/loop":
                    return self.redirect(307, "/loop")
                if self.path == "/hop":
                    key = json.loads(body)["NodePublic"]
                    return self.redirect(302, "/decide?key=" + key)
                if self.path.startswith("/decide?key="):
                    allow = self.path.split("=", 1)[1] in ctl.allowed
                    return self.reply(200, json.dumps({"Allow": allow}).encode())
                return self.reply(404, b"")

            def redirect(self, status, where):
                self.send_response(status)
                self.send_header("Location", where)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def reply(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = handle_one
            do_POST = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Admission(Tools):
    def setUp(self):
        super().setUp()
        self.good, self.good_pub = keygen(self.tmp, "good")
        self.bad, self.bad_pub = keygen(self.tmp, "bad")
        self.ctl = Controller({self.good_pub})
        self.addCleanup(self.ctl.stop)

    def ping(self, node, key):
        return derpcat("--url", node.url, "--key", key, "--connect-timeout", "8", "ping", "--count", "1",
                       "--timeout", "5")

    def test_decisions_arrive_through_redirects_and_are_counted(self):
        n = self.node("adm", "--verify-client-url", self.ctl.url("/start"), "--verify-client-url-fail-open=false")
        text = n.metrics()
        for result in ("allowed", "denied", "http_status", "bad_response", "unreachable", "timeout",
                       "too_many_redirects", "overloaded"):
            self.assertIn('derpd_admission_decisions_total{result="%s"} 0' % result, text)
        self.assertIn('derpd_admission_duration_seconds_bucket{le="+Inf"} 0', text)

        r = self.ping(n, self.good)
        self.assertEqual(r.returncode, 0, "allowed client: " + r.stdout + r.stderr + "\n" + n.d.log())
        r = self.ping(n, self.bad)
        self.assertNotEqual(r.returncode, 0, "denied client got in: " + r.stdout)

        with self.ctl.lock:
            seen = [(m, p.split("?")[0]) for m, p, _ in self.ctl.requests]
            bodies = [b for m, p, b in self.ctl.requests if p == "/hop"]
        self.assertEqual(seen, [("POST", "/start"), ("POST", "/hop"), ("GET", "/decide")] * 2)
        self.assertEqual(len(bodies), 2)
        self.assertEqual(json.loads(bodies[0])["NodePublic"], self.good_pub, "307 kept the POST body")

        self.assertEqual(n.wait_sample("derpd_admission_decisions_total", lambda v: v == 1, result="allowed"), 1)
        self.assertEqual(n.sample("derpd_admission_decisions_total", result="denied"), 1)
        self.assertEqual(n.sample("derpd_admission_duration_seconds_count"), 2)
        self.assertEqual(n.sample("derpd_admission_pending"), 0)
        self.assertEqual(n.sample("derpd_admission_fail_open_admits_total"), 0)
        promtool_check(self, n.metrics())

    def test_a_redirect_loop_is_no_answer_and_the_policy_decides(self):
        closed = self.node("closed", "--verify-client-url", self.ctl.url("/loop"), "--verify-client-url-fail-open=false")
        r = self.ping(closed, self.good)
        self.assertNotEqual(r.returncode, 0, "fail-closed admitted a client without an answer: " + r.stdout)
        self.assertEqual(closed.wait_sample("derpd_admission_decisions_total", lambda v: v == 1,
                                            result="too_many_redirects"), 1)
        with self.ctl.lock:
            loops = [p for _, p, _ in self.ctl.requests if p == "/loop"]
        self.assertEqual(len(loops), 10, "Go's client sends ten requests, then gives up")

        opened = self.node("open", "--verify-client-url", self.ctl.url("/loop"))  # fail-open by default
        r = self.ping(opened, self.bad)
        self.assertEqual(r.returncode, 0, "fail-open: " + r.stdout + r.stderr)
        self.assertEqual(opened.sample("derpd_admission_fail_open_admits_total"), 1)
        promtool_check(self, opened.metrics())


# ---- mesh ----

class Mesh(Tools):
    def test_two_nodes_mesh_and_report_it(self):
        key_file = os.path.join(self.tmp, "mesh.key")
        with open(key_file, "w") as f:
            f.write(MESH_KEY + "\n")
        # Each node's -mesh-with names both nodes (derper's convention), so both ports are picked first.
        ports = free_tcp_ports(2)
        entries = ",".join("127.0.0.1:%d" % p for p in ports)
        nodes = []
        for i, p in enumerate(ports):
            n = Node(self.tmp, "node%d" % i, "-a", "127.0.0.1:%d" % p, "--mesh-psk-file", key_file,
                     "--mesh-with", entries, "--hostname", "127.0.0.1")
            self.nodes.append(n)
            nodes.append(n)
        a, b = nodes
        peer_of = {0: "127.0.0.1:%d" % ports[1], 1: "127.0.0.1:%d" % ports[0]}
        for i, n in enumerate(nodes):
            self.assertEqual(n.wait_sample("derpd_mesh_link_up", lambda v: v == 1, peer=peer_of[i]), 1)
            self.assertEqual(n.sample("derpd_mesh_link_connects_total", peer=peer_of[i]), 1)
            self.assertEqual(n.sample("derpd_mesh_link_self", peer=peer_of[i]), 0)
            text = n.metrics()
            self.assertNotIn('peer="127.0.0.1:%d"' % n.port, text, "this node's own entry is not a link")

        # A client on b; a learns it through its link's WatchConns and forwards a's packet to b.
        rkey, rpub = keygen(self.tmp, "receiver")
        receiver = subprocess.Popen([DERPCAT, "--url", b.url, "--key", rkey, "recv", "--count", "1", "--timeout", "20"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            a.wait_sample("derpd_mesh_link_clients", lambda v: v >= 1, peer=peer_of[0])
            for _ in range(40):
                r = derpcat("--url", a.url, "send", "--to", rpub, "--data", "across the mesh")
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                try:
                    receiver.wait(0.25)
                    break
                except subprocess.TimeoutExpired:
                    pass
            out = receiver.communicate(timeout=20)[0]
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.wait()
        self.assertEqual(receiver.returncode, 0, out)
        self.assertIn("across the mesh", out)
        self.assertGreaterEqual(a.sample("derpd_mesh_link_forwarded_packets_total", peer=peer_of[0]), 1)
        self.assertGreaterEqual(a.sample("derpd_mesh_link_forwarded_bytes_total", peer=peer_of[0]),
                                len("across the mesh"))
        self.assertGreaterEqual(a.sample("derpd_mesh_link_presence_events_total", peer=peer_of[0], event="present"), 1)
        # The receiver left: a hears it is gone.
        a.wait_sample("derpd_mesh_link_clients", lambda v: v == 0, peer=peer_of[0])
        self.assertGreaterEqual(a.sample("derpd_mesh_link_presence_events_total", peer=peer_of[0], event="gone"), 1)

        # b stops: a's link goes down and counts the break.
        b.stop()
        a.wait_sample("derpd_mesh_link_up", lambda v: v == 0, peer=peer_of[0])
        self.assertEqual(a.sample("derpd_mesh_link_disconnects_total", peer=peer_of[0]), 1)
        a.wait_sample("derpd_mesh_link_connect_failures_total", lambda v: v >= 1, peer=peer_of[0])
        promtool_check(self, a.metrics())


if __name__ == "__main__":
    unittest.main()
