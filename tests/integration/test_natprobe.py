"""natprobe, the real binary, against the real derpd and small Python STUN servers on loopback.

Every run passes --no-portmap: port-mapping requests go to the host's default gateway, which a
test must never touch (the NAT lab runs natprobe with port mapping inside its own namespaces).
Loopback has no NAT, so the verdicts here are ground truth: mapping "none", and filtering "none"
when an RFC 5780 server (127.0.0.1 + 127.0.0.2) proves nothing is filtered.

natprobe's binary: NATPROBE_BIN, else tools/natprobe/natprobe in the build tree holding DERPD_BIN.
"""
import http.server
import json
import os
import pty
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import DERPD, MAGIC, Daemon, attr, free_udp_port, message, parse_attrs, rfc5780_daemon

BASE = ["-derp=false", "-http-port=-1", "--metrics-addr", "127.0.0.1:0"]


def natprobe_path():
    explicit = os.environ.get("NATPROBE_BIN", "")
    if explicit:
        return explicit
    build = os.path.dirname(os.path.dirname(os.path.abspath(DERPD))) if DERPD else ""
    return os.path.join(build, "tools", "natprobe", "natprobe")


NATPROBE = natprobe_path()
FULL_VERDICT_TARGET_S = 1.5


def natprobe(*args, timeout=20, stderr=subprocess.PIPE):
    """Runs natprobe; returns (CompletedProcess, wall seconds)."""
    if not os.path.exists(NATPROBE):
        raise RuntimeError(f"natprobe binary not found at {NATPROBE}: build the natprobe target")
    # DERP-map URLs in these tests are on loopback: never let a proxy setting send them elsewhere.
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["no_proxy"] = env["NO_PROXY"] = "*"
    t = time.monotonic()
    r = subprocess.run([NATPROBE, *args], stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout, env=env)
    return r, time.monotonic() - t


def probe_json(*args, **kw):
    r, secs = natprobe("--no-portmap", "--json", *args, **kw)
    try:
        return r, json.loads(r.stdout), secs
    except ValueError:
        raise AssertionError(f"exit {r.returncode}, not JSON: {r.stdout!r} {r.stderr!r}")


# --- the JSON contract (client/nat/SCHEMA.md) ----------------------------------------------
TOP_KEYS = {"schema", "family", "udp", "mapping", "filtering", "mapping_endpoint_dependent", "public_addresses",
            "port_preservation", "hairpinning", "old_name", "difficulty", "summary", "port_mapping", "duration_ms",
            "ipv4", "ipv6"}
FAMILY_KEYS = {"tested", "udp", "mapping", "filtering", "mapping_endpoint_dependent", "public_addresses",
               "port_preservation", "hairpinning", "servers", "anomalies"}
SERVER_KEYS = {"name", "address", "other_address", "rfc5780", "change_request", "requests", "replies", "mapped",
               "rtt_min_us", "rtt_max_us"}
BEHAVIOURS = {"none", "endpoint-independent", "address-dependent", "address-and-port-dependent", "unknown"}


def check_schema(test, doc):
    test.assertTrue(TOP_KEYS <= set(doc), TOP_KEYS - set(doc))
    test.assertEqual(doc["schema"], 1)
    test.assertIn(doc["mapping"], BEHAVIOURS)
    test.assertIn(doc["filtering"], BEHAVIOURS)
    test.assertIn(doc["difficulty"], {"easy", "hard", "unknown"})
    test.assertEqual(set(doc["port_mapping"]), {"nat_pmp", "pcp", "upnp_igd"})
    test.assertIsInstance(doc["duration_ms"], int)
    for fam in ("ipv4", "ipv6"):
        test.assertTrue(FAMILY_KEYS <= set(doc[fam]), FAMILY_KEYS - set(doc[fam]))
        for s in doc[fam]["servers"]:
            test.assertEqual(SERVER_KEYS, SERVER_KEYS & set(s))
    primary = doc[doc["family"]]
    for k in ("udp", "mapping", "filtering", "mapping_endpoint_dependent", "public_addresses", "port_preservation",
              "hairpinning"):
        test.assertEqual(doc[k], primary[k], k)


# --- small STUN servers written for the tests ------------------------------------------------
def xor_mapped(addr, txid):
    ip, port = addr[:2]
    if ":" in ip:
        key = struct.pack("!I", MAGIC) + txid
        raw = bytes(a ^ b for a, b in zip(socket.inet_pton(socket.AF_INET6, ip), key))
        return attr(0x0020, struct.pack("!BBH", 0, 2, port ^ 0x2112) + raw)
    raw = bytes(a ^ b for a, b in zip(socket.inet_aton(ip), struct.pack("!I", MAGIC)))
    return attr(0x0020, struct.pack("!BBH", 0, 1, port ^ 0x2112) + raw)


def success(txid, mapped_addr):
    return message(0x0101, txid, xor_mapped(mapped_addr, txid), with_fingerprint=True)


def software_of(request):
    try:
        _, _, attrs = parse_attrs(request)
        return attrs.get(0x8022, [b""])[0]
    except struct.error:
        return b""


class ScriptedServer:
    """A UDP socket on 127.0.0.1 whose answers come from `behaviour(request, client, sockets)`,
    which returns a list of (socket index, bytes) to send to the client. Runs in a thread until
    stop(); each wait is bounded."""

    def __init__(self, behaviour, extra_sockets=0):
        self.socks = []
        for _ in range(1 + extra_sockets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.05)
            self.socks.append(s)
        self.addr = self.socks[0].getsockname()
        self.behaviour = behaviour
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        deadline = time.monotonic() + 60  # never outlives a hung test by long
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data, client = self.socks[0].recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.requests += 1
            for idx, out in self.behaviour(data, client, self.socks):
                self.socks[idx].sendto(out, client)

    def spec(self):
        return f"{self.addr[0]}:{self.addr[1]}"

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        for s in self.socks:
            s.close()


class NatprobeTestCase(unittest.TestCase):
    def setUp(self):
        self.cleanup = []

    def tearDown(self):
        for f in reversed(self.cleanup):
            f()

    def server(self, behaviour, extra_sockets=0):
        s = ScriptedServer(behaviour, extra_sockets)
        self.cleanup.append(s.stop)
        return s

    def tempfile(self, text, suffix=".txt"):
        with tempfile.NamedTemporaryFile("w", suffix=suffix, delete=False) as f:
            f.write(text)
        self.cleanup.append(lambda: os.unlink(f.name))
        return f.name


class Rfc5780OnLoopback(NatprobeTestCase):
    """derpd with an alternate address: the full RFC 5780 sequence against the real daemon."""

    @classmethod
    def setUpClass(cls):
        cls.d, cls.p = rfc5780_daemon(*BASE)
        cls.spec = f"127.0.0.1:{cls.p[0]}"

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_no_nat_and_nothing_filtered(self):
        r, doc, secs = probe_json("--server", self.spec)
        self.assertEqual(r.returncode, 0, r.stderr)
        check_schema(self, doc)
        self.assertEqual(doc["family"], "ipv4")
        self.assertTrue(doc["udp"])
        self.assertEqual(doc["mapping"], "none")
        self.assertEqual(doc["filtering"], "none")
        self.assertEqual(doc["old_name"], "open internet")
        self.assertEqual(doc["difficulty"], "easy")
        self.assertFalse(doc["mapping_endpoint_dependent"])
        self.assertEqual(doc["port_preservation"], "yes")
        for pub in doc["public_addresses"]:
            self.assertTrue(pub.startswith("127.0.0.1:"), pub)
        [srv] = doc["ipv4"]["servers"]
        self.assertTrue(srv["rfc5780"])
        self.assertEqual(srv["other_address"], f"127.0.0.2:{self.p[1]}")
        self.assertEqual(srv["change_request"], "honoured")
        self.assertEqual(srv["requests"], srv["replies"])
        self.assertEqual(doc["ipv4"]["anomalies"], [])
        self.assertEqual(doc["port_mapping"], {"nat_pmp": "unknown", "pcp": "unknown", "upnp_igd": "unknown"})
        self.assertLess(secs, FULL_VERDICT_TARGET_S)
        self.assertLessEqual(doc["duration_ms"], secs * 1000 + 1)

    def test_full_verdict_wall_time(self):
        times = []
        for _ in range(5):
            r, doc, secs = probe_json("--server", self.spec, "-4")
            self.assertEqual(r.returncode, 0)
            self.assertEqual((doc["mapping"], doc["filtering"]), ("none", "none"))
            times.append(secs)
        times.sort()
        print(f"\n  natprobe full RFC 5780 verdict on loopback, wall time of the process: min {times[0] * 1000:.1f} ms, "
              f"median {times[2] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms", file=sys.stderr)
        self.assertLess(times[-1], FULL_VERDICT_TARGET_S)

    def test_human_report(self):
        r, _ = natprobe("--no-portmap", "--server", self.spec)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        self.assertIn("Mapping       none: no NAT", out)
        self.assertIn("Filtering     none", out)
        self.assertIn("Old name      open internet", out)
        self.assertIn("Difficulty    easy", out)
        self.assertIn("Any peer that can send UDP can reach this host directly.", out)
        self.assertIn("RFC 5780", out)
        self.assertIn("honoured", out)
        self.assertIn(f"127.0.0.2:{self.p[1]}", out)
        self.assertIn("Port mapping not probed (--no-portmap)", out)
        self.assertEqual(r.stderr, "", "no progress or warnings when stderr is not a terminal")

    def test_hairpin_on_loopback(self):
        r, doc, _ = probe_json("--server", self.spec, "--hairpin")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(doc["hairpinning"], "yes")
        self.assertEqual(doc["filtering"], "none", "the hairpin test does not disturb the filtering tests")

    def test_progress_only_on_a_terminal(self):
        master, slave = pty.openpty()
        try:
            r, _ = natprobe("--no-portmap", "--server", self.spec, stderr=slave)
            os.close(slave)
            slave = -1
            chunks = []
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            if slave >= 0:
                os.close(slave)
            os.close(master)
        self.assertEqual(r.returncode, 0)
        self.assertIn(b"natprobe: probing 1 server", b"".join(chunks))

    def test_derp_map_file_points_at_the_daemon(self):
        derp_map = {"Regions": {
            "1": {"RegionID": 1, "RegionCode": "lo", "Nodes": [
                {"Name": "1a", "RegionID": 1, "HostName": "derp.invalid", "IPv4": "127.0.0.1", "IPv6": "none",
                 "STUNPort": self.p[0]},
                {"Name": "1b", "RegionID": 1, "HostName": "derp.invalid", "STUNPort": -1}]}}}
        path = self.tempfile(json.dumps(derp_map), ".json")
        r, doc, _ = probe_json("--derp-map", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        [srv] = doc["ipv4"]["servers"]
        self.assertEqual(srv["name"], "1a")
        self.assertEqual(srv["address"], f"127.0.0.1:{self.p[0]}")
        self.assertEqual((doc["mapping"], doc["filtering"]), ("none", "none"))
        self.assertFalse(doc["ipv6"]["tested"], "IPv6 \"none\" is honoured: no lookup of the host name")

    def test_derp_map_url_is_fetched(self):
        body = json.dumps({"Regions": {"7": {"RegionID": 7, "Nodes": [
            {"Name": "7a", "HostName": "derp.invalid", "IPv4": "127.0.0.1", "IPv6": "none", "STUNPort": self.p[0]}]}}})
        big = "{" + " " * (5 << 20) + "}"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                pages = {"/derpmap.json": body, "/huge.json": big}
                text = pages.get(self.path)
                if text is None:
                    self.send_error(404)
                    return
                data = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        t.start()
        try:
            base = f"http://127.0.0.1:{httpd.server_address[1]}"
            r, doc, _ = probe_json("--derp-map", f"{base}/derpmap.json")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(doc["ipv4"]["servers"][0]["name"], "7a")
            self.assertEqual((doc["mapping"], doc["filtering"]), ("none", "none"))
            r, _ = natprobe("--no-portmap", "--derp-map", f"{base}/missing.json")
            self.assertEqual(r.returncode, 3)
            self.assertIn("HTTP status 404", r.stderr)
            r, _ = natprobe("--no-portmap", "--derp-map", f"{base}/huge.json")
            self.assertEqual(r.returncode, 3)
            self.assertIn("larger than", r.stderr)
        finally:
            httpd.shutdown()
            httpd.server_close()
            t.join(2)

    def test_servers_file(self):
        path = self.tempfile(f"# loopback lab\n\n{self.spec}   # derpd\n")
        r, doc, _ = probe_json("--servers-file", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(doc["ipv4"]["servers"][0]["name"], self.spec)

    def test_compare_two_runs(self):
        _, a, _ = probe_json("--server", self.spec)
        pa = self.tempfile(json.dumps(a), ".json")
        pb = self.tempfile(json.dumps(a), ".json")
        r, _ = natprobe("compare", pa, pb)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Direct UDP path: yes", r.stdout)
        self.assertIn("both-easy", r.stdout)
        r, _ = natprobe("compare", pa, pb, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        c = json.loads(r.stdout)
        self.assertEqual(c["schema"], 1)
        self.assertEqual(c["direct"], "yes")
        self.assertEqual(c["rule"], "both-easy")
        self.assertEqual(c["family"], "ipv4")
        self.assertTrue(c["same_public_ip"])

    def test_compare_against_a_blocked_host(self):
        _, a, _ = probe_json("--server", self.spec)
        blocked = ScriptedServer(lambda data, client, socks: [])
        try:
            _, b, _ = probe_json("--server", blocked.spec())
        finally:
            blocked.stop()
        self.assertFalse(b["udp"])
        r, _ = natprobe("compare", "--json", self.tempfile(json.dumps(a)), self.tempfile(json.dumps(b)))
        self.assertEqual(r.returncode, 0, r.stderr)
        c = json.loads(r.stdout)
        self.assertEqual((c["direct"], c["rule"]), ("no", "udp-blocked"))


class PlainServers(NatprobeTestCase):
    """Two derpd instances without an alternate address: mapping is judged, filtering cannot be."""

    @classmethod
    def setUpClass(cls):
        cls.d1 = Daemon(*BASE, "--stun-addr", "127.0.0.1:0", "--workers", "1")
        cls.d2 = Daemon(*BASE, "--stun-addr", "127.0.0.3:0", "--workers", "1")
        cls.specs = [f"127.0.0.1:{cls.d1.stun_ports()[0][1]}", f"127.0.0.3:{cls.d2.stun_ports()[0][1]}"]

    @classmethod
    def tearDownClass(cls):
        cls.d1.stop()
        cls.d2.stop()

    def test_mapping_none_filtering_unknown(self):
        r, doc, secs = probe_json("--server", self.specs[0], "--server", self.specs[1])
        self.assertEqual(r.returncode, 0, r.stderr)
        check_schema(self, doc)
        self.assertEqual(doc["mapping"], "none")
        self.assertEqual(doc["filtering"], "unknown")
        self.assertEqual(len(doc["ipv4"]["servers"]), 2)
        for s in doc["ipv4"]["servers"]:
            self.assertFalse(s["rfc5780"])
            self.assertIsNone(s["other_address"])
            self.assertEqual(s["change_request"], "untested")
            self.assertEqual(s["replies"], 1)
        self.assertLess(secs, FULL_VERDICT_TARGET_S)

    def test_tailscale_style_server_answers_only_tailnode_requests(self):
        def derper_like(data, client, socks):
            if software_of(data) != b"tailnode":
                return []
            return [(0, success(data[8:20], client))]

        srv = self.server(derper_like)
        r, _ = natprobe("--no-portmap", "--server", srv.spec(), "--server", self.specs[0])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("tailnode", r.stdout)
        r, doc, _ = probe_json("--server", srv.spec())
        self.assertEqual(r.returncode, 0)
        self.assertEqual(doc["mapping"], "none")
        self.assertEqual(doc["ipv4"]["servers"][0]["replies"], 1)

    @unittest.skipUnless(socket.has_ipv6, "no IPv6 sockets")
    def test_ipv6_loopback(self):
        try:
            d = Daemon(*BASE, "--stun-addr", "[::1]:0", "--workers", "1")
        except RuntimeError as e:
            self.skipTest(f"derpd cannot listen on ::1: {e}")
        try:
            port = d.stun_ports()[0][1]
            r, doc, _ = probe_json("--server", f"[::1]:{port}", "--server", self.specs[0])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(doc["ipv6"]["udp"])
            self.assertEqual(doc["ipv6"]["mapping"], "none")
            self.assertTrue(doc["ipv6"]["public_addresses"][0].startswith("[::1]:"))
            self.assertEqual(doc["family"], "ipv4")
            r, doc, _ = probe_json("-6", "--server", f"[::1]:{port}", "--server", self.specs[0])
            self.assertEqual(doc["family"], "ipv6")
            self.assertFalse(doc["ipv4"]["tested"])
        finally:
            d.stop()


class Coturn(NatprobeTestCase):
    """coturn's turnserver with two loopback addresses (RFC 5780 turns on by itself in 4.6)."""

    def start_turnserver(self):
        """coturn on 127.0.0.1 and .2, ports P and P+1; (P, "") once it answers, else (None, log)."""
        port = None
        for _ in range(20):  # P and P+1 must both be free on both addresses
            p = free_udp_port("127.0.0.1")
            try:
                for ip in ("127.0.0.1", "127.0.0.2"):
                    for q in (p, p + 1):
                        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                            s.bind((ip, q))
                port = p
                break
            except OSError:
                continue
        self.assertIsNotNone(port)
        log = tempfile.TemporaryFile(mode="w+")
        self.cleanup.append(log.close)
        proc = subprocess.Popen(["turnserver", "-n", "-S", "--no-cli", "--no-tls", "--no-dtls", "-L", "127.0.0.1",
                                 "-L", "127.0.0.2", "--listening-port", str(port), "--log-file", "stdout"],
                                stdout=log, stderr=subprocess.STDOUT)

        def stop():
            if proc.poll() is not None:
                return
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.cleanup.append(stop)
        # Ready when it answers a Binding request.
        deadline = time.monotonic() + 10
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while time.monotonic() < deadline and proc.poll() is None:
                s.sendto(message(0x0001, secrets.token_bytes(12)), ("127.0.0.1", port))
                try:
                    s.recvfrom(2048)
                    return port, ""
                except socket.timeout:
                    continue
        stop()
        log.seek(0)
        return None, log.read()[-2000:]

    @unittest.skipUnless(shutil.which("turnserver"), "coturn's turnserver not installed")
    def test_rfc5780_server_from_another_implementation(self):
        port, why = None, ""
        # Free ports are checked, then taken by turnserver: another test may take one in between,
        # so a start that never answers is retried on other ports.
        for _attempt in range(3):
            port, why = self.start_turnserver()
            if port is not None:
                break
        if port is None:
            self.fail("turnserver did not answer on three pairs of ports; its log ends:\n" + why)
        r, doc, secs = probe_json("--server", f"127.0.0.1:{port}")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(doc["mapping"], "none")
        [srv] = doc["ipv4"]["servers"]
        self.assertEqual(srv["other_address"], f"127.0.0.2:{port + 1}")
        self.assertEqual(srv["change_request"], "honoured")
        self.assertEqual(srv["requests"], srv["replies"])
        # coturn 4.6 advertises an OTHER-ADDRESS on its alternate-IP sockets that is neither the
        # advertised one nor the opposite corner, which the classifier sets aside: filtering is
        # then reported unknown rather than guessed. Never anything but none or unknown here.
        self.assertIn(doc["filtering"], ("none", "unknown"))
        self.assertLess(secs, FULL_VERDICT_TARGET_S)


class HostileServers(NatprobeTestCase):
    """Silence, foreign transaction ids, replies from elsewhere and garbage: ignored, never a crash."""

    def test_silent_server_means_udp_blocked_within_the_time_bound(self):
        srv = self.server(lambda data, client, socks: [])
        r, doc, secs = probe_json("--server", srv.spec())
        self.assertEqual(r.returncode, 1)
        check_schema(self, doc)
        self.assertFalse(doc["udp"])
        self.assertEqual(doc["old_name"], "UDP blocked")
        self.assertEqual(doc["mapping"], "unknown")
        self.assertGreater(srv.requests, 2, "it retransmitted")
        self.assertLess(secs, 1.5, "probe schedule gives up after 0.9 s")
        r, _ = natprobe("--no-portmap", "--server", srv.spec())
        self.assertEqual(r.returncode, 1)
        self.assertIn("no STUN reply", r.stdout)

    def test_nothing_listening_and_a_short_time_limit(self):
        port = free_udp_port("127.0.0.1")
        r, doc, secs = probe_json("--server", f"127.0.0.1:{port}", "--time-limit", "300")
        self.assertEqual(r.returncode, 1)
        self.assertFalse(doc["udp"])
        self.assertLess(secs, 0.8)
        self.assertLessEqual(doc["duration_ms"], 400)

    def test_foreign_transaction_id_is_ignored(self):
        def wrong_txid(data, client, socks):
            return [(0, success(secrets.token_bytes(12), client))]

        srv = self.server(wrong_txid)
        r, doc, _ = probe_json("--server", srv.spec())
        self.assertEqual(r.returncode, 1, "answers to other transactions are no answer")
        self.assertFalse(doc["udp"])
        self.assertEqual(doc["ipv4"]["servers"][0]["replies"], 0)
        r, _ = natprobe("--no-portmap", "--server", srv.spec())
        self.assertIn("answering no request of this run (unknown transaction ID)", r.stdout)

    def test_answer_from_another_address_is_ignored(self):
        # Right transaction id, but sent from a second socket, claiming a mapped address that
        # would make loopback look NATed if it were believed.
        def other_source(data, client, socks):
            return [(1, success(data[8:20], ("10.9.9.9", 1)))]

        srv = self.server(other_source, extra_sockets=1)
        r, doc, _ = probe_json("--server", srv.spec())
        self.assertEqual(r.returncode, 1)
        self.assertEqual(doc["public_addresses"], [])
        r, _ = natprobe("--no-portmap", "--server", srv.spec())
        self.assertIn("from an address the answer could not come from", r.stdout)

    def test_garbage_before_the_real_answer(self):
        def garbage_first(data, client, socks):
            txid = data[8:20]
            good = success(txid, client)
            return [(0, b""), (0, b"\x00"), (0, os.urandom(300)), (0, good[:-5]),
                    (0, message(0x0001, txid)),                      # a request, not a response
                    (0, struct.pack("!HHI", 0x0101, 400, MAGIC) + txid),  # length lies
                    (0, b"\x01\x01" + b"\xff" * 3000),                # larger than any STUN reply
                    (0, good)]

        srv = self.server(garbage_first)
        r, doc, _ = probe_json("--server", srv.spec())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(doc["udp"])
        self.assertEqual(doc["mapping"], "none")
        r, _ = natprobe("--no-portmap", "--server", srv.spec())
        self.assertEqual(r.returncode, 0)
        self.assertIn("that were not STUN Binding responses", r.stdout)

    def test_server_that_never_answers_change_request(self):
        # Advertises an alternate address but never answers CHANGE-REQUEST nor the alternate:
        # filtering must come out unknown, never guessed.
        alt_port = free_udp_port("127.0.0.2")

        def no_change(data, client, socks):
            _, _, attrs = parse_attrs(data)
            if 0x0003 in attrs and attrs[0x0003][0] != b"\x00\x00\x00\x00":
                return []
            txid = data[8:20]
            other = attr(0x802C, struct.pack("!BBH", 0, 1, alt_port) + socket.inet_aton("127.0.0.2"))
            origin = attr(0x802B, struct.pack("!BBH", 0, 1, socks[0].getsockname()[1]) + socket.inet_aton("127.0.0.1"))
            return [(0, message(0x0101, txid, xor_mapped(client, txid) + origin + other, with_fingerprint=True))]

        srv = self.server(no_change)
        r, doc, secs = probe_json("--server", srv.spec())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(doc["mapping"], "none")
        self.assertEqual(doc["filtering"], "unknown")
        self.assertEqual(doc["ipv4"]["servers"][0]["change_request"], "unverified")
        self.assertLess(secs, 2.5)

    def test_one_bad_server_does_not_spoil_a_good_one(self):
        d = Daemon(*BASE, "--stun-addr", "127.0.0.1:0", "--workers", "1")
        self.cleanup.append(d.stop)
        good = f"127.0.0.1:{d.stun_ports()[0][1]}"
        bad = self.server(lambda data, client, socks: [(0, os.urandom(64))])
        r, doc, _ = probe_json("--server", bad.spec(), "--server", good)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(doc["mapping"], "none")
        replies = {s["address"]: s["replies"] for s in doc["ipv4"]["servers"]}
        self.assertEqual(replies[good], 1)
        self.assertEqual(replies[bad.spec()], 0)


class BadInput(NatprobeTestCase):
    def test_no_server_is_a_usage_error(self):
        r, _ = natprobe("--no-portmap")
        self.assertEqual(r.returncode, 2)
        self.assertIn("no STUN server given", r.stderr)

    def test_bad_server_spec_and_options(self):
        for args in (["--server", "host:0"], ["--server", "[::1"], ["--server", "a b"], ["--bogus"],
                     ["--rto", "0", "--server", "127.0.0.1"], ["-4", "-6", "--server", "127.0.0.1"]):
            with self.subTest(args=args):
                r, _ = natprobe("--no-portmap", *args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertNotEqual(r.stderr, "")

    def test_help_documents_exit_codes(self):
        r, _ = natprobe("--help")
        self.assertEqual(r.returncode, 0)
        for line in ("0  a verdict was produced", "1  no STUN server answered", "2  usage or configuration error",
                     "3  input file error"):
            self.assertIn(line, r.stdout)
        r, _ = natprobe("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"natprobe \d+\.\d+\.\d+")

    def test_bad_servers_file(self):
        path = self.tempfile("127.0.0.1:3478\nhost:99999\n")
        r, _ = natprobe("--no-portmap", "--servers-file", path)
        self.assertEqual(r.returncode, 3)
        self.assertIn(f"{path}:2:", r.stderr)
        r, _ = natprobe("--no-portmap", "--servers-file", "/nonexistent/servers.txt")
        self.assertEqual(r.returncode, 3)
        self.assertIn("cannot open /nonexistent/servers.txt", r.stderr)
        r, _ = natprobe("--no-portmap", "--servers-file", self.tempfile("# nothing here\n"))
        self.assertEqual(r.returncode, 3)
        self.assertIn("no server in the file", r.stderr)

    def test_bad_derp_maps(self):
        cases = {
            "not JSON": "<html>502 Bad Gateway</html>",
            "no \"Regions\"": json.dumps({"regions": {}}),
            "no STUN-capable node": json.dumps({"Regions": {"1": {"RegionID": 1, "Nodes": [
                {"Name": "1a", "HostName": "derp.invalid", "STUNPort": -1}]}}}),
        }
        for want, text in cases.items():
            with self.subTest(want=want):
                r, _ = natprobe("--no-portmap", "--derp-map", self.tempfile(text, ".json"))
                self.assertEqual(r.returncode, 3, r.stderr)
                self.assertIn(want, r.stderr)
                self.assertEqual(r.stdout, "")
        r, _ = natprobe("--no-portmap", "--derp-map", "/nonexistent/derpmap.json")
        self.assertEqual(r.returncode, 3)

    def test_compare_refuses_bad_reports(self):
        good = {"schema": 1}
        r, _ = natprobe("compare", self.tempfile("not json"), self.tempfile(json.dumps(good)))
        self.assertEqual(r.returncode, 3)
        self.assertIn("not a natprobe report", r.stderr)
        r, _ = natprobe("compare", self.tempfile(json.dumps({"schema": 99})), self.tempfile("{}"))
        self.assertEqual(r.returncode, 3)
        r, _ = natprobe("compare", "/nonexistent/a.json", "/nonexistent/b.json")
        self.assertEqual(r.returncode, 3)
        r, _ = natprobe("compare", self.tempfile("{}"))
        self.assertEqual(r.returncode, 2, "two reports are needed")


if __name__ == "__main__":
    unittest.main(verbosity=2)
