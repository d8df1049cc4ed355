"""Capacity: the real derpd holding 10k concurrent DERP connections on loopback, every one of them
able to send and receive; its memory per connection measured; and what happens at the connection
limit (connections beyond it refused promptly and counted, the connected ones unharmed). Sockets
live in each worker ring's registered-file table (up to RLIMIT_NOFILE slots per ring) and fall back
to descriptors when it is full, so one worker's limit is its table plus its descriptor share.

The connections come from bench/load/derp_load (idle mode: one epoll thread, every connection
with its own node key and the full DERP handshake), spread over source addresses 127.0.0.1..16.
derp_load's binary: DERP_LOAD_BIN, else bench/load/derp_load in the build tree holding DERPD_BIN.
Every process started here is stopped by its PID; traffic stays on loopback.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

from harness import DERPD

CONNECTIONS = 10_000
# The relay's budget for an idle connection (the benchmark target is 8 KiB for TLS; plaintext
# must fit in it too).
MAX_RSS_PER_CONN = 8 * 1024
FD_LIMIT = 1000
# One worker: table 1000 + descriptors 1000 - 80 reserved = a limit of 1920 connections.
CONN_LIMIT = 1920
HELD = 1500          # connections held when the limit is probed: more than the descriptor limit
BEYOND = 1000        # then this many more: ~CONN_LIMIT - HELD fit, the rest must be refused
REFUSAL_DEADLINE_MS = 3000


def derp_load_path():
    explicit = os.environ.get("DERP_LOAD_BIN", "")
    if explicit:
        return explicit
    build = os.path.dirname(os.path.dirname(os.path.abspath(DERPD))) if DERPD else ""
    return os.path.join(build, "bench", "load", "derp_load")


DERP_LOAD = derp_load_path()


def free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A process whose output lines are collected by threads (stdout and stderr apart, or merged)."""

    def __init__(self, argv, merge_stderr=False):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
        self.out, self.err = [], []
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True)]
        if not merge_stderr:
            self._threads.append(threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True))
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_line(self, pattern, stream, timeout):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(stream):
                m = rx.search(line)
                if m:
                    return m
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the reader threads catch the last lines
                for line in list(stream):
                    m = rx.search(line)
                    if m:
                        return m
                return None
            time.sleep(0.05)
        return None

    def _join(self):
        for t in self._threads:
            t.join(2)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def wait(self, timeout):
        try:
            self.proc.wait(timeout)
        finally:
            self._join()
        return self.proc.returncode

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._join()

    def log(self):
        return "\n".join(self.out + self.err)


class Derpd(Proc):
    """derpd serving plaintext DERP on 127.0.0.1 (kernel-chosen port), metrics on another port."""

    def __init__(self, workdir, workers=2, nofile=None, extra=()):
        self.metrics_port = free_tcp_port()
        argv = [DERPD, "-a", "127.0.0.1:0", "-http-port", "-1", "-stun=false",
                "-c", os.path.join(workdir, "derper.key"), "--workers", str(workers),
                "--metrics-addr", f"127.0.0.1:{self.metrics_port}", *extra]
        if nofile is not None:
            # prlimit execs derpd: the limit applies to the very process we started (same PID).
            argv = ["prlimit", f"--nofile={nofile}:{nofile}", "--"] + argv
        super().__init__(argv, merge_stderr=True)
        if self.wait_line(r"derpd ready", self.out, 15) is None:
            self.stop()
            raise RuntimeError("derpd did not become ready:\n" + self.log())
        m = self.wait_line(r"derp listening on tcp 127\.0\.0\.1:(\d+)", self.out, 1)
        if m is None:
            self.stop()
            raise RuntimeError("derpd did not say where it listens:\n" + self.log())
        self.port = int(m.group(1))
        self.target = f"127.0.0.1:{self.port}"

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()


def metric_sum(text, name, labels=None):
    """Sum of every sample of `name` whose labels include `labels`; None if there is none."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        if labels and not all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
            continue
        total += float(m.group(3))
        seen = True
    return total if seen else None


def load_args(target, *extra):
    return [DERP_LOAD, target, "--mode", "idle", "--json", "--size", "100", *extra]


def run_load(target, *extra, timeout=120):
    r = subprocess.run(load_args(target, *extra), capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"derp_load exited {r.returncode}, not JSON: {r.stdout!r} {r.stderr!r}")


@unittest.skipUnless(os.path.exists(DERP_LOAD), f"derp_load not built at {DERP_LOAD} (build the derp_load target)")
class Capacity(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="derpd_capacity_")
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, proc):
        self.procs.append(proc)
        return proc

    def test_10k_connections_each_send_and_receive(self):
        d = self.start(Derpd(self.dir, workers=2))
        t = time.monotonic()
        r = run_load(d.target, "--connections", str(CONNECTIONS), "--src-ips", "16", "--hold", "1",
                     "--verify-batch", "200", "--server-pid", str(d.proc.pid))
        secs = time.monotonic() - t
        c, v = r["connect"], r["verify"]
        per_conn = r["server_rss_per_conn_bytes"]
        print(f"\n10k: {c['ready']} ready in {c['seconds']:.1f} s (handshake p99 {c['handshake_ms']['p99']:.1f} ms), "
              f"{v['connections_ok']}/{v['connections_checked']} sent and received in {v['seconds']:.1f} s; "
              f"derpd RSS {r['server_rss_kib']['before']} -> {r['server_rss_kib']['after_connect']} KiB = "
              f"{per_conn:.0f} bytes per connection; whole run {secs:.1f} s")
        self.assertEqual(c["ready"], CONNECTIONS, f"failed handshakes: {c['failed_reasons']}")
        self.assertEqual(r["open_after_hold"], CONNECTIONS, f"closed while idle: {r['counters']['closed_reasons']}")
        self.assertEqual(v["connections_checked"], CONNECTIONS)
        self.assertEqual(v["connections_ok"], CONNECTIONS,
                         f"connections that could not both send and receive, first ones: {v['first_failed']}")
        for k in ("misrouted", "corrupt", "foreign"):
            self.assertEqual(r["counters"][k], 0, k)
        self.assertGreater(per_conn, 0, "RSS did not grow: not measured")
        self.assertLessEqual(per_conn, MAX_RSS_PER_CONN, "idle connection memory over budget")
        self.assertTrue(d.alive(), "derpd exited:\n" + d.log())

    def test_max_connections_is_a_budget_the_node_keeps(self):
        # The operator's budget, not a descriptor limit: 300 connections, the rest refused at once.
        d = self.start(Derpd(self.dir, workers=1, extra=("--max-connections", "300")))
        self.assertIsNotNone(d.wait_line(r"connection limit 300 per worker", d.out, 1), d.log())
        r = run_load(d.target, "--connections", "400", "--hold", "0", "--handshake-timeout", "8",
                     "--concurrency", "400")
        c = r["connect"]
        self.assertEqual(c["ready"], 300, c["failed_reasons"])
        self.assertEqual(c["failed"], 100)
        self.assertEqual(c["failed_reasons"].get("timeout", 0), 0, "refusals left hanging")
        self.assertLess(c["max_fail_ms"], REFUSAL_DEADLINE_MS, "refusals were not prompt")
        self.assertEqual(metric_sum(d.metrics(), "derpd_tcp_connections_refused_total"), 100)

    def test_connections_beyond_the_fd_limit_are_refused_promptly(self):
        if shutil.which("prlimit") is None:
            self.skipTest("prlimit (util-linux) not installed")
        d = self.start(Derpd(self.dir, workers=1, nofile=FD_LIMIT))
        before = d.metrics()
        held = self.start(Proc(load_args(d.target, "--connections", str(HELD), "--hold", "60",
                                         "--server-pid", str(d.proc.pid))))
        m = held.wait_line(r"holding (\d+) connections", held.err, 60)
        self.assertIsNotNone(m, "the first connections never settled:\n" + held.log())
        self.assertEqual(int(m.group(1)), HELD, "could not even open the connections below the limit")

        t = time.monotonic()
        r = run_load(d.target, "--connections", str(BEYOND), "--hold", "0", "--handshake-timeout", "8",
                     "--concurrency", str(BEYOND))
        secs = time.monotonic() - t
        c = r["connect"]
        refused = c["failed"]
        print(f"\nfd limit {FD_LIMIT} (connection limit {CONN_LIMIT}), {HELD} held: {BEYOND} more -> {c['ready']} ready, {refused} failed "
              f"{c['failed_reasons']}, slowest failure {c['max_fail_ms']:.0f} ms, run {secs:.1f} s")

        # Released now: the held connections verify while the server is still at its limit.
        held.proc.send_signal(signal.SIGUSR1)
        self.assertEqual(held.wait(60), 0, held.log())
        h = json.loads(held.out[-1])

        self.assertTrue(d.alive(), "derpd exited at its descriptor limit:\n" + d.log())
        self.assertEqual(c["ready"] + refused, BEYOND)
        self.assertGreater(refused, 0, "no connection was refused: the limit was not reached")
        self.assertEqual(c["ready"], CONN_LIMIT - HELD, "the limit is the table plus the descriptor share")
        hung = c["failed_reasons"].get("timeout", 0)
        self.assertEqual(hung, 0, f"{hung} connections were left hanging (no answer within 8 s) instead of refused")
        # A refusal: the connection closed or reset, or an HTTP error status instead of 101.
        self.assertLessEqual(set(c["failed_reasons"]), {"refused", "reset", "closed_by_peer", "http"},
                             c["failed_reasons"])
        self.assertLess(c["max_fail_ms"], REFUSAL_DEADLINE_MS, "refusals were not prompt")
        self.assertEqual(h["open_after_hold"], HELD, f"held connections were closed: {h['counters']['closed_reasons']}")
        self.assertEqual(h["verify"]["connections_ok"], HELD, "held connections stopped working at the limit")

        after = d.metrics()
        counted = [metric_sum(after, "derpd_tcp_connections_refused_total"),
                   metric_sum(after, "derpd_tcp_accept_errors_total", {"reason": "fd_exhausted"})]
        counted_before = [metric_sum(before, "derpd_tcp_connections_refused_total") or 0,
                          metric_sum(before, "derpd_tcp_accept_errors_total", {"reason": "fd_exhausted"}) or 0]
        self.assertTrue(any(v is not None for v in counted), "no refusal metric is exported")
        self.assertGreater(sum(v or 0 for v in counted), sum(counted_before), "refusals were not counted")
        # The first FD_LIMIT sockets filled the worker's registered-file table; the rest held descriptors.
        self.assertGreaterEqual(metric_sum(after, "derpd_tcp_sockets_registered_total") or 0, FD_LIMIT)
        self.assertGreater(metric_sum(after, "derpd_tcp_register_fallbacks_total") or 0, 0)

        # Once the descriptors are free again, new connections work.
        r2 = run_load(d.target, "--connections", "200", "--hold", "0")
        self.assertEqual(r2["connect"]["ready"], 200, r2["connect"]["failed_reasons"])
        self.assertEqual(r2["verify"]["connections_ok"], 200)


if __name__ == "__main__":
    unittest.main()
