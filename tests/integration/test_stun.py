"""derpd's STUN responder, started as the real daemon and asked by real clients over loopback."""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import unittest
import urllib.error
import urllib.request

from harness import (Daemon, exchange, message, new_txid, parse_attrs, plain_address, rfc5780_daemon,
                     run_derpd, tailscale_request, udp_socket, xor_address, attr, MAGIC)

BASE = ["-derp=false", "-http-port=-1", "--metrics-addr", "127.0.0.1:0"]


class TailscaleClients(unittest.TestCase):
    """Requests exactly as Tailscale's netcheck sends them get derper's exact answer."""

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(*BASE, "--stun-addr", "127.0.0.1:0", "--stun-addr", "[::1]:0", "--workers", "2")
        cls.ports = dict((ip, port) for ip, port in cls.d.stun_ports())

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def check_derper_reply(self, ip):
        s = udp_socket(ip)
        txid = new_txid()
        reply, src = exchange(s, tailscale_request(txid), (ip, self.ports[ip]))
        self.assertIsNotNone(reply, "no reply to a Tailscale request")
        mine = s.getsockname()[:2]
        fam = 1 if ":" not in ip else 2
        addr_len = 4 if fam == 1 else 16
        # derper: header (success, attribute length, cookie, txid) + one XOR-MAPPED-ADDRESS.
        self.assertEqual(reply[:4], struct.pack("!HH", 0x0101, 8 + addr_len))
        self.assertEqual(reply[4:8], struct.pack("!I", MAGIC))
        self.assertEqual(reply[8:20], txid)
        self.assertEqual(struct.unpack("!HH", reply[20:24]), (0x0020, 4 + addr_len))
        self.assertEqual(len(reply), 20 + 4 + 4 + addr_len)
        self.assertEqual(xor_address(reply[24:], txid), mine)
        self.assertEqual(src, (ip, self.ports[ip]))
        s.close()

    def test_ipv4_reply_is_byte_identical_to_derper(self):
        self.check_derper_reply("127.0.0.1")

    def test_ipv6_reply_is_byte_identical_to_derper(self):
        self.check_derper_reply("::1")

    def test_many_source_ports_each_see_their_own_mapping(self):
        for _ in range(50):
            self.check_derper_reply("127.0.0.1")


class GenericClients(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(*BASE, "--stun-addr", "127.0.0.1:0", "--workers", "1")
        cls.port = cls.d.stun_ports()[0][1]
        cls.server = ("127.0.0.1", cls.port)

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_rfc8489_request_without_software_is_answered(self):
        s = udp_socket()
        txid = new_txid()
        reply, _ = exchange(s, message(0x0001, txid), self.server)
        self.assertIsNotNone(reply)
        t, _, attrs = parse_attrs(reply)
        self.assertEqual(t, 0x0101)
        self.assertEqual(xor_address(attrs[0x0020][0], txid), s.getsockname())
        self.assertEqual(plain_address(attrs[0x0001][0]), s.getsockname())
        self.assertEqual(plain_address(attrs[0x802B][0]), self.server)  # RESPONSE-ORIGIN
        self.assertNotIn(0x802C, attrs, "no OTHER-ADDRESS without an alternate")
        self.assertIn(0x8028, attrs)

    def test_change_request_without_alternate_gets_420(self):
        s = udp_socket()
        txid = new_txid()
        reply, _ = exchange(s, message(0x0001, txid, attr(0x0003, struct.pack("!I", 6))), self.server)
        self.assertIsNotNone(reply)
        t, _, attrs = parse_attrs(reply)
        self.assertEqual(t, 0x0111)
        code = attrs[0x0009][0]
        self.assertEqual(code[2] * 100 + code[3], 420)
        self.assertEqual(attrs[0x000A][0][:2], struct.pack("!H", 0x0003))

    def test_unknown_comprehension_required_attribute_gets_420(self):
        s = udp_socket()
        reply, _ = exchange(s, message(0x0001, new_txid(), attr(0x0077, b"abcd")), self.server)
        t, _, attrs = parse_attrs(reply)
        self.assertEqual(t, 0x0111)
        self.assertEqual(attrs[0x000A][0][:2], struct.pack("!H", 0x0077))

    def test_classic_rfc3489_request_gets_mapped_address(self):
        s = udp_socket()
        txid16 = new_txid() + b"abcd"
        req = struct.pack("!HH", 0x0001, 0) + txid16
        reply, _ = exchange(s, req, self.server)
        self.assertIsNotNone(reply)
        t, _, attrs = parse_attrs(reply)
        self.assertEqual(t, 0x0101)
        self.assertEqual(reply[4:20], txid16)
        self.assertEqual(plain_address(attrs[0x0001][0]), s.getsockname())

    def test_garbage_is_dropped_and_the_server_keeps_serving(self):
        s = udp_socket(timeout=0.3)
        junk = [b"", b"\x00", b"\xff" * 19, b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"\0" * 11,
                message(0x0001, new_txid())[:-1] + b"\x01\x02\x03",  # length lies
                struct.pack("!HHI", 0x0001, 8, MAGIC) + new_txid() + struct.pack("!HH", 0x8022, 400),
                tailscale_request(new_txid())[:-1] + b"\x00",  # bad fingerprint
                os.urandom(1400)]
        for j in junk:
            reply, _ = exchange(s, j, self.server, timeout=0.3)
            self.assertIsNone(reply, f"answered garbage {j[:24]!r}")
        s.settimeout(2)
        txid = new_txid()
        reply, _ = exchange(s, tailscale_request(txid), self.server)
        self.assertIsNotNone(reply, "stopped serving after garbage")

    @unittest.skipUnless(shutil.which("turnutils_stunclient"), "coturn's turnutils_stunclient not installed")
    def test_coturn_stunclient(self):
        out = subprocess.run(["timeout", "10", "turnutils_stunclient", "-p", str(self.port), "127.0.0.1"],
                             capture_output=True, text=True)
        text = out.stdout + out.stderr
        self.assertEqual(out.returncode, 0, text)
        self.assertRegex(text, r"UDP reflexive addr: 127\.0\.0\.1:\d+", text)

    @unittest.skipUnless(shutil.which("stun"), "Vovida stun client not installed")
    def test_vovida_stun_client(self):
        out = subprocess.run(["timeout", "20", "stun", f"127.0.0.1:{self.port}", "-v"], capture_output=True, text=True)
        text = out.stdout + out.stderr
        self.assertIn("MappedAddress = 127.0.0.1:", text, text)


class Rfc5780(unittest.TestCase):
    """Two addresses (127.0.0.1 and 127.0.0.2) x two ports: behaviour discovery works."""

    @classmethod
    def setUpClass(cls):
        cls.d, cls.p = rfc5780_daemon(*BASE)
        p1, p2 = cls.p
        cls.primary = ("127.0.0.1", p1)
        cls.other = ("127.0.0.2", p2)

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_listens_on_all_four_combinations(self):
        got = set(self.d.stun_ports())
        want = {("127.0.0.1", self.p[0]), ("127.0.0.1", self.p[1]), ("127.0.0.2", self.p[0]), ("127.0.0.2", self.p[1])}
        self.assertEqual(got, want)

    def test_change_request_replies_come_from_the_chosen_address(self):
        cases = {0: self.primary, 4: ("127.0.0.2", self.p[0]), 2: ("127.0.0.1", self.p[1]), 6: self.other}
        for flags, origin in cases.items():
            with self.subTest(flags=flags):
                s = udp_socket()
                txid = new_txid()
                reply, src = exchange(s, message(0x0001, txid, attr(0x0003, struct.pack("!I", flags))), self.primary)
                self.assertIsNotNone(reply)
                t, _, attrs = parse_attrs(reply)
                self.assertEqual(t, 0x0101)
                self.assertEqual(src, origin)
                self.assertEqual(plain_address(attrs[0x802B][0]), origin)
                self.assertEqual(plain_address(attrs[0x802C][0]), self.other)
                self.assertEqual(xor_address(attrs[0x0020][0], txid), s.getsockname())

    def test_other_address_is_relative_to_the_receiving_socket(self):
        s = udp_socket()
        reply, _ = exchange(s, message(0x0001, new_txid()), self.other)
        _, _, attrs = parse_attrs(reply)
        self.assertEqual(plain_address(attrs[0x802C][0]), self.primary)

    def test_classic_request_gets_changed_and_source_address(self):
        s = udp_socket()
        req = struct.pack("!HH", 0x0001, 0) + os.urandom(16)
        reply, _ = exchange(s, req, self.primary)
        _, _, attrs = parse_attrs(reply)
        self.assertEqual(plain_address(attrs[0x0004][0]), self.primary)  # SOURCE-ADDRESS
        self.assertEqual(plain_address(attrs[0x0005][0]), self.other)    # CHANGED-ADDRESS

    @unittest.skipUnless(shutil.which("turnutils_stunclient"), "coturn's turnutils_stunclient not installed")
    def test_coturn_stunclient_rfc5780(self):
        out = subprocess.run(["timeout", "10", "turnutils_stunclient", "-f", "-p", str(self.p[0]), "127.0.0.1"],
                             capture_output=True, text=True)
        text = out.stdout + out.stderr
        self.assertEqual(out.returncode, 0, text)
        # coturn prints e.g. "IPv4. Other addr: : 127.0.0.2:3479"
        self.assertRegex(text, rf"Other addr:[ :]*127\.0\.0\.2:{self.p[1]}\b", text)
        self.assertRegex(text, rf"Response origin:[ :]*127\.0\.0\.1:{self.p[0]}\b", text)
        # Its change-request probes came back from the alternate address.
        self.assertRegex(text, rf"Response origin:[ :]*127\.0\.0\.2:{self.p[1]}\b", text)

    @unittest.skipUnless(shutil.which("turnutils_natdiscovery"), "coturn's turnutils_natdiscovery not installed")
    def test_coturn_natdiscovery_sees_no_nat_on_loopback(self):
        out = subprocess.run(["timeout", "30", "turnutils_natdiscovery", "-m", "-f", "-L", "127.0.0.1", "-p",
                              str(self.p[0]), "127.0.0.1"], capture_output=True, text=True)
        text = out.stdout + out.stderr
        self.assertIn("No NAT", text, text)


class StartupAndShutdown(unittest.TestCase):
    def test_bind_failure_exits_nonzero_with_a_clear_message(self):
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        try:
            r = run_derpd(*BASE, "--stun-addr", f"127.0.0.1:{port}")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(f"udp 127.0.0.1:{port} is already in use", r.stdout + r.stderr)
        finally:
            blocker.close()

    def test_bad_config_names_the_key_and_line(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write("workers: 1\nstun-port: banana\n")
        try:
            r = run_derpd("--config", f.name)
            self.assertEqual(r.returncode, 2)
            self.assertIn(":2:", r.stderr)
            self.assertIn("stun-port", r.stderr)
        finally:
            os.unlink(f.name)

    def test_sigterm_stops_cleanly_and_reports_dispositions(self):
        d = Daemon(*BASE, "--stun-addr", "127.0.0.1:0", "--workers", "2")
        port = d.stun_ports()[0][1]
        s = udp_socket()
        for _ in range(5):
            self.assertIsNotNone(exchange(s, tailscale_request(new_txid()), ("127.0.0.1", port))[0])
        s.sendto(b"not stun at all, not stun at all", ("127.0.0.1", port))
        # Same source, same socket, same worker: once this is answered the junk was counted.
        self.assertIsNotNone(exchange(s, tailscale_request(new_txid()), ("127.0.0.1", port))[0])
        self.assertEqual(d.stop(), 0)
        totals = [l for l in d.lines if "stun totals" in l]
        self.assertEqual(len(totals), 1, d.log())
        self.assertIn("success=6", totals[0])
        self.assertIn("not_stun=1", totals[0])

    def test_metrics_count_dispositions_and_pass_promtool(self):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            mport = t.getsockname()[1]
        d = Daemon("-derp=false", "-http-port=-1", "--metrics-addr", f"127.0.0.1:{mport}",
                   "--stun-addr", "127.0.0.1:0", "--workers", "2")
        try:
            port = d.stun_ports()[0][1]
            s = udp_socket()
            for _ in range(3):
                self.assertIsNotNone(exchange(s, tailscale_request(new_txid()), ("127.0.0.1", port))[0])
            s.sendto(struct.pack("!HHI", 1, 8, MAGIC) + new_txid(), ("127.0.0.1", port))  # length lies
            self.assertIsNotNone(exchange(s, message(0x0001, new_txid()), ("127.0.0.1", port))[0])
            s.close()
            body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
            self.assertIn('stun_requests_total{disposition="success"} 4', body)
            self.assertIn('stun_requests_total{disposition="malformed"} 1', body)
            self.assertIn('stun_requests_total{disposition="write_error"} 0', body)
            self.assertIn('stun_addrfamily_total{family="ipv4"} 5', body)
            if shutil.which("promtool"):
                r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{mport}/other", timeout=5)
            self.assertEqual(e.exception.code, 404)
        finally:
            d.stop()

    def test_help_and_version(self):
        r = run_derpd("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"derpd \d+\.\d+\.\d+")
        r = run_derpd("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--stun-alt-addr", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
