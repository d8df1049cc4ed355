#!/usr/bin/env python3
"""Compare derpd with Tailscale's derper under the same DERP load, in one run.

For each mode (plaintext, TLS) and each server (derper first, then derpd), with the same flags
(-a 127.0.0.1:PORT -http-port -1 -stun=false -c KEYFILE; TLS: -certmode manual -hostname
127.0.0.1 -certdir DIR with a self-signed ECDSA certificate made by the openssl CLI; derpd also
--metrics-addr 127.0.0.1:0 --workers 1), the server is pinned to one core and derp_load to the
other (taskset), and:
  1. saturation: closed loop (P pairs, W packets in flight per direction) per packet size ->
     delivered packets/s, and the server's CPU time per packet (/proc/<pid>/stat, read by
     derp_load at the edges of the measured window);
  2. latency: open loop at 80 % of derper's measured ceiling (same mode and size) -> p50, p99,
     p999 one-way latency and loss;
  3. memory: a fresh server, N idle connections (handshake done) -> VmRSS growth per connection,
     then every connection of a sample of pairs sends and receives one packet.
Prints the tables, derpd/derper ratios and whether the targets are met. With --capacity N it
then holds N idle plaintext connections to one derpd (several derp_load processes, source
addresses spread over 127.0.0.x) and reports how many it held and what they cost.

Traffic goes to 127.0.0.1 only. Every server this script starts is stopped by its PID on exit.
Standard library only.

Usage: compare_derp.py BUILD_DIR [--derper PATH] [--quick] [--json] [--capacity N] ...
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from benchproc import STARTED, machine_details, require_cpus, stop, stop_all_on_exit

ALL_SERVERS = ("derper", "derpd")
ALL_MODES = ("plain", "tls")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The issue's targets (TLS): derpd/derper delivered packets per core >= 3; p99 at 80 % of
# derper's ceiling <= half of derper's; RSS per idle TLS connection <= 8 KiB.
TARGET_THROUGHPUT_RATIO = 3.0
TARGET_P99_RATIO = 0.5
TARGET_IDLE_BYTES = 8 * 1024


def set_autogroup_nice(pid, nice):
    """Gives the process's scheduler autogroup (its session: started with start_new_session) this
    nice value, so a benchmark on a shared machine gets its cores against other sessions' work."""
    if nice is None:
        return
    try:
        with open(f"/proc/{pid}/autogroup", "w", encoding="ascii") as f:
            f.write(str(nice))
    except OSError as e:
        print(f"warning: cannot set the autogroup nice of {pid}: {e}", file=sys.stderr)


def spawn(argv, args, **kw):
    """Starts a process in its own session (own autogroup), remembered for stop_all()."""
    proc = subprocess.Popen(argv, start_new_session=True, **kw)
    STARTED.append(proc)
    set_autogroup_nice(proc.pid, args.autogroup_nice)
    return proc


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def nofile_limit(pid):
    with open(f"/proc/{pid}/limits", encoding="ascii") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])  # soft limit
    return -1


def make_cert(certdir):
    os.makedirs(certdir, mode=0o700, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", os.path.join(certdir, "127.0.0.1.key"),
                    "-out", os.path.join(certdir, "127.0.0.1.crt"), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "extendedKeyUsage=serverAuth"],
                   check=True, capture_output=True, timeout=30)


def find_derper(args):
    """The derper binary: --derper, else built once from tests/interop's pinned module."""
    if args.derper:
        return args.derper if os.access(args.derper, os.X_OK) else None
    out = os.path.join(args.build, "bench", "load", "derper")
    if os.access(out, os.X_OK):
        return out
    if shutil.which("go") is None:
        return None
    print(f"building derper from {REPO}/tests/interop (go build tailscale.com/cmd/derper) ...", flush=True)
    r = subprocess.run(["go", "build", "-o", out, "tailscale.com/cmd/derper"], cwd=os.path.join(REPO, "tests", "interop"),
                       capture_output=True, text=True, timeout=600, check=False)
    if r.returncode != 0:
        print(f"derper build failed: {r.stderr.strip()[-400:]}", file=sys.stderr)
        return None
    return out


class Server:
    """One server process on 127.0.0.1:port, pinned to the server CPU."""

    def __init__(self, name, mode, args, workdir, workers=None):
        self.name, self.mode, self.args = name, mode, args
        self.port = free_port()
        self.log_path = os.path.join(workdir, f"{name}-{mode}-{self.port}.log")
        key = os.path.join(workdir, f"{name}.key")
        flags = ["-a", f"127.0.0.1:{self.port}", "-http-port", "-1", "-stun=false", "-c", key]
        if mode == "tls":
            flags += ["-certmode", "manual", "-hostname", "127.0.0.1", "-certdir", os.path.join(workdir, "certs")]
        if name == "derpd":
            exe = os.path.join(args.build, "relay", "derpd")
            flags += ["--metrics-addr", "127.0.0.1:0", "--workers", str(workers or args.derpd_workers)]
        else:
            exe = args.derper_bin
        with open(self.log_path, "w", encoding="utf-8") as log:
            self.proc = spawn(["taskset", "-c", str(args.server_cpu), exe] + flags, args, stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.target = f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout):
        """True once the port accepts and two DERP clients can exchange a packet through it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            return False
        r = derp_load(self.args, self.target, self.mode, ["--mode", "idle", "--connections", "2", "--hold", "0"], 30)
        return "error" not in r and r.get("verify", {}).get("connections_ok") == 2

    def log_tail(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-600:]

    def stop(self):
        stop(self.proc)


def derp_load(args, target, mode, extra, timeout, server=None):
    argv = ["taskset", "-c", str(args.client_cpu), args.derp_load, target, "--json"] + extra
    if mode == "tls":
        argv.append("--tls")
    if server is not None:
        argv += ["--server-pid", str(server.proc.pid)]
    proc = spawn(argv, args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        return {"error": f"derp_load did not finish in {timeout:.0f} s"}
    try:
        return json.loads(out)
    except ValueError:
        return {"error": f"derp_load exited {proc.returncode}: {err.strip()[-400:]}"}


def load_shape(args):
    return ["--pairs", str(args.pairs), "--duration", str(args.duration), "--warmup", str(args.warmup)]


def run_server(name, mode, args, workdir, results):
    """Saturation and open-loop runs on one server process, then idle on a fresh one."""
    res = {"saturation": {}, "open": {}}
    s = Server(name, mode, args, workdir)
    try:
        if not s.wait_ready(args.start_timeout):
            res["failed"] = f"not serving DERP on {s.target}; log tail:\n{s.log_tail()}"
            return res
        budget = args.duration + args.warmup + 60
        for size in args.sizes:
            r = derp_load(args, s.target, mode, ["--mode", "closed", "--window", str(args.window), "--size", str(size)]
                          + load_shape(args), budget, s)
            res["saturation"][size] = r
            print(f"  {name:<6} {mode:<5} closed {size:>5} B: {summary(r)}", flush=True)
        for size in args.sizes:
            ceiling = results.get("derper", {}).get("saturation", {}).get(size, {}).get("delivered_per_s")
            basis = "derper"
            if not ceiling:
                ceiling, basis = res["saturation"][size].get("delivered_per_s"), name
            if not ceiling:
                continue
            rate = args.open_fraction * ceiling
            r = derp_load(args, s.target, mode, ["--mode", "open", "--rate", f"{rate:.0f}", "--burst", str(args.burst),
                                                 "--size", str(size)] + load_shape(args), budget, s)
            r["rate_basis"] = basis
            res["open"][size] = r
            print(f"  {name:<6} {mode:<5} open   {size:>5} B at {rate:.0f}/s: {summary(r)}", flush=True)
    finally:
        s.stop()

    s = Server(name, mode, args, workdir)
    try:
        if not s.wait_ready(args.start_timeout):
            res["idle"] = {"error": f"not serving DERP; log tail:\n{s.log_tail()}"}
            return res
        r = derp_load(args, s.target, mode, ["--mode", "idle", "--connections", str(args.idle_conns), "--src-ips", "16",
                                             "--hold", str(args.hold), "--verify-pairs", str(args.verify_pairs),
                                             "--size", "100"], 300, s)
        res["idle"] = r
        print(f"  {name:<6} {mode:<5} idle   {args.idle_conns} conns: {idle_summary(r)}", flush=True)
    finally:
        s.stop()
    return res


def summary(r):
    if "error" in r:
        return "ERROR " + r["error"]
    return (f"{r['delivered_per_s']:.0f} pkt/s, {r.get('packets_per_server_cpu_s', 0):.0f}/cpu-s, "
            f"busy {r.get('server_busy', 0) * 100:.0f}%, loss {r['loss_ratio'] * 100:.3f}%, "
            f"p99 {r['latency_us']['p99']:.0f} us")


def idle_summary(r):
    if "error" in r:
        return "ERROR " + r["error"]
    return (f"{r['connect']['ready']} ready, {r.get('server_rss_per_conn_bytes', 0) / 1024:.1f} KiB/conn, "
            f"{r['verify']['connections_ok']}/{r['verify']['connections_checked']} verified")


def fnum(v, spec):
    return "n/a" if v is None else format(v, spec)


def ratio(a, b):
    return a / b if a and b else None


def fratio(v):
    return "n/a" if v is None else f"x{v:.2f}"


def print_report(machine, args, results, elapsed):
    print()
    print(f"machine: {machine['cpu_model']} | kernel {machine['kernel']} | nproc {machine['nproc']} | "
          f"loadavg at start {machine['loadavg']}")
    print(f"servers on cpu {args.server_cpu} (derpd --workers {args.derpd_workers}), derp_load on cpu {args.client_cpu}; "
          f"{args.pairs} pairs, window {args.window}, {args.duration:g} s measured after {args.warmup:g} s warm-up; "
          f"open loop at {args.open_fraction * 100:.0f}% of derper's ceiling in bursts of {args.burst}; "
          f"idle {args.idle_conns} connections; autogroup nice {args.autogroup_nice}")
    print()
    head = (f"{'mode':<5} {'server':<6} {'size':>5} {'deliv pkt/s':>11} {'pkt/cpu-s':>10} {'us/pkt':>7} {'busy':>5} "
            f"{'loss %':>7} | {'open rate':>9} {'p50 us':>8} {'p99 us':>8} {'p999 us':>8} {'loss %':>7}")
    print(head)
    print("-" * len(head))
    for mode in args.modes:
        for name in args.servers:
            res = results.get(mode, {}).get(name, {})
            if "skipped" in res or "failed" in res:
                print(f"{mode:<5} {name:<6} {res.get('skipped') or 'FAILED: ' + res['failed']}")
                continue
            for size in args.sizes:
                sat = res["saturation"].get(size, {})
                op = res["open"].get(size, {})
                if "error" in sat:
                    print(f"{mode:<5} {name:<6} {size:>5} ERROR {sat['error']}")
                    continue
                line = (f"{mode:<5} {name:<6} {size:>5} {sat['delivered_per_s']:>11.0f} "
                        f"{fnum(sat.get('packets_per_server_cpu_s'), '.0f'):>10} "
                        f"{fnum(sat.get('server_cpu_us_per_packet'), '.2f'):>7} "
                        f"{fnum(sat.get('server_busy', 0) * 100, '.0f'):>4}% {sat['loss_ratio'] * 100:>7.3f} | ")
                if op and "error" not in op:
                    lat = op["latency_us"]
                    line += (f"{op['target_rate']:>9.0f} {lat['p50']:>8.0f} {lat['p99']:>8.0f} {lat['p999']:>8.0f} "
                             f"{op['loss_ratio'] * 100:>7.3f}")
                elif op:
                    line += "ERROR " + op["error"]
                print(line)
    print()
    head = f"{'mode':<5} {'server':<6} {'idle conns':>10} {'ready':>6} {'conn/s':>7} {'RSS/conn':>10} {'verified':>11}"
    print(head)
    print("-" * len(head))
    for mode in args.modes:
        for name in args.servers:
            r = results.get(mode, {}).get(name, {}).get("idle")
            if not r:
                continue
            if "error" in r:
                print(f"{mode:<5} {name:<6} ERROR {r['error']}")
                continue
            per = r.get("server_rss_per_conn_bytes")
            print(f"{mode:<5} {name:<6} {args.idle_conns:>10} {r['connect']['ready']:>6} {r['connect']['per_s']:>7.0f} "
                  f"{fnum(per / 1024 if per is not None else None, '.1f'):>6} KiB "
                  f"{r['verify']['connections_ok']:>5}/{r['verify']['connections_checked']:<5}")
    print()
    if "derpd" in args.servers and "derper" in args.servers:
        print("derpd/derper (throughput and per-core: higher is better; p99 and memory: lower is better):")
        for mode in args.modes:
            d, g = results.get(mode, {}).get("derpd", {}), results.get(mode, {}).get("derper", {})
            for size in args.sizes:
                ds, gs = d.get("saturation", {}).get(size, {}), g.get("saturation", {}).get(size, {})
                do, go = d.get("open", {}).get(size, {}), g.get("open", {}).get(size, {})
                p99 = ratio(do.get("latency_us", {}).get("p99"), go.get("latency_us", {}).get("p99"))
                print(f"  {mode:<5} {size:>5} B: delivered/s {fratio(ratio(ds.get('delivered_per_s'), gs.get('delivered_per_s')))}, "
                      f"per core {fratio(ratio(ds.get('packets_per_server_cpu_s'), gs.get('packets_per_server_cpu_s')))}, "
                      f"p99 at 80% {fratio(p99)}")
            di, gi = d.get("idle", {}), g.get("idle", {})
            print(f"  {mode:<5} idle RSS per connection {fratio(ratio(di.get('server_rss_per_conn_bytes'), gi.get('server_rss_per_conn_bytes')))}")
        print()
        print_targets(args, results)
    print(f"total time {elapsed:.0f} s")


def print_targets(args, results):
    tls = results.get("tls", {})
    d, g = tls.get("derpd", {}), tls.get("derper", {})
    if not d or not g:
        return
    print("targets (TLS):")
    for size in args.sizes:
        per = ratio(d.get("saturation", {}).get(size, {}).get("packets_per_server_cpu_s"),
                    g.get("saturation", {}).get(size, {}).get("packets_per_server_cpu_s"))
        verdict = "n/a" if per is None else ("MET" if per >= TARGET_THROUGHPUT_RATIO else "MISSED")
        print(f"  delivered packets per core >= {TARGET_THROUGHPUT_RATIO:g}x derper, {size} B: {fratio(per)} {verdict}")
    for size in args.sizes:
        p99 = ratio(d.get("open", {}).get(size, {}).get("latency_us", {}).get("p99"),
                    g.get("open", {}).get(size, {}).get("latency_us", {}).get("p99"))
        verdict = "n/a" if p99 is None else ("MET" if p99 <= TARGET_P99_RATIO else "MISSED")
        print(f"  p99 at 80% of derper's ceiling <= {TARGET_P99_RATIO:g}x derper's, {size} B: {fratio(p99)} {verdict}")
    per = d.get("idle", {}).get("server_rss_per_conn_bytes")
    verdict = "n/a" if per is None else ("MET" if per <= TARGET_IDLE_BYTES else "MISSED")
    ref = g.get("idle", {}).get("server_rss_per_conn_bytes")
    print(f"  RSS per idle TLS connection <= {TARGET_IDLE_BYTES // 1024} KiB: derpd {fnum(per / 1024 if per else None, '.1f')} KiB "
          f"(derper {fnum(ref / 1024 if ref else None, '.1f')} KiB) {verdict}")


def run_capacity(args, workdir):
    """N idle plaintext connections to one derpd, from as many derp_load processes as descriptors need."""
    print(f"\ncapacity: {args.capacity} idle plaintext connections to derpd --workers {args.capacity_workers}", flush=True)
    s = Server("derpd", "plain", args, workdir, workers=args.capacity_workers)
    res = {"requested": args.capacity}
    try:
        if not s.wait_ready(args.start_timeout):
            res["error"] = f"not serving; log tail:\n{s.log_tail()}"
            return res
        res["server_nofile_limit"] = nofile_limit(s.proc.pid)
        # Sockets live in each worker ring's registered-file table (up to RLIMIT_NOFILE slots per
        # ring) plus a share of descriptors; derpd logs the resulting limit per worker.
        with open(s.log_path, encoding="utf-8", errors="replace") as f:
            m = re.search(r"connection limit (\d+) per worker", f.read())
        node_limit = int(m.group(1)) * args.capacity_workers if m else 0
        res["server_connection_limit"] = node_limit
        want = args.capacity
        if 0 < node_limit < args.capacity:
            # Past the limit connections are refused (integration_capacity's business); SO_REUSEPORT
            # spreads them unevenly over the workers, so stay 5 % below it.
            want = int(node_limit * 0.95)
            print(f"  derpd's connection limit is {node_limit} with {args.capacity_workers} workers and "
                  f"RLIMIT_NOFILE {res['server_nofile_limit']}: trying {want}", flush=True)
        res["attempted"] = want
        per_proc = args.capacity_per_process
        nproc = math.ceil(want / per_proc)
        rss0 = rss_kib(s.proc.pid)
        procs = []
        for i in range(nproc):
            n = min(per_proc, want - i * per_proc)
            argv = ["taskset", "-c", str(args.client_cpu), args.derp_load, s.target, "--json", "--mode", "idle",
                    "--connections", str(n), "--src-ips", "64", "--hold", "600", "--verify-pairs", "0", "--verify-batch", "200",
                    "--size", "100", "--handshake-timeout", "30", "--connect-timeout", "300"]
            procs.append(spawn(argv, args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL))
        t0 = time.monotonic()
        holding = 0
        for p in procs:  # each prints "holding N connections" once its connect phase ended
            line = p.stderr.readline()
            if "holding" in line:
                holding += int(line.split()[2])
        res["connect_seconds"] = time.monotonic() - t0
        time.sleep(1)
        rss1 = rss_kib(s.proc.pid)
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGUSR1)
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=120)
            try:
                outs.append(json.loads(out))
            except ValueError:
                outs.append({"error": "no JSON"})
        failed = {}
        for o in outs:
            for k, v in o.get("connect", {}).get("failed_reasons", {}).items():
                failed[k] = failed.get(k, 0) + v
        res.update({
            "processes": nproc,
            "held": holding,
            "failed_reasons": failed,
            "verified": sum(o.get("verify", {}).get("connections_ok", 0) for o in outs),
            "checked": sum(o.get("verify", {}).get("connections_checked", 0) for o in outs),
            "server_rss_kib": [rss0, rss1],
            "rss_per_conn_bytes": (rss1 - rss0) * 1024 / holding if holding else None,
            "server_alive": s.proc.poll() is None,
            # Per load process: connections that failed the check, and the packets it gave up on.
            "verify_failures": [{"failed": o.get("verify", {}).get("connections_checked", 0)
                                 - o.get("verify", {}).get("connections_ok", 0),
                                 "first_failed": o.get("verify", {}).get("first_failed", [])[:5],
                                 "timeouts": o.get("counters", {}).get("timeouts"),
                                 "error": o.get("error")} for o in outs],
        })
        print(f"  held {holding} of {want} in {res['connect_seconds']:.1f} s ({nproc} load processes), "
              f"failed {failed}; verified {res['verified']}/{res['checked']}; derpd RSS {rss0} -> {rss1} KiB = "
              f"{fnum(res['rss_per_conn_bytes'], '.0f')} bytes/conn; derpd alive: {res['server_alive']}", flush=True)
        every = holding == args.capacity and res["verified"] == holding and res["server_alive"]
        print(f"  {args.capacity} connections held, every one sending and receiving: {'MET' if every else 'MISSED'}",
              flush=True)
    finally:
        s.stop()
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("build", help="build directory (with bench/load/derp_load and relay/derpd)")
    p.add_argument("--derper", default="", help="derper binary (default: BUILD/bench/load/derper, built with go if missing)")
    p.add_argument("--servers", default=",".join(ALL_SERVERS), help="comma list of derper,derpd")
    p.add_argument("--modes", default=",".join(ALL_MODES), help="comma list of plain,tls")
    p.add_argument("--sizes", default="100,1400", help="packet sizes, one saturation and one open-loop run each")
    p.add_argument("--duration", type=float, default=4.0, help="measured seconds per run (max 60)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of traffic before each measurement")
    p.add_argument("--pairs", type=int, default=100, help="connection pairs in the load runs")
    p.add_argument("--window", type=int, default=16, help="closed loop: packets in flight per direction of a pair")
    p.add_argument("--burst", type=int, default=8,
                   help="open loop: packets a sender sends back to back (bursts at rate / burst per second)")
    p.add_argument("--open-fraction", type=float, default=0.8, help="open-loop rate as a fraction of derper's ceiling")
    p.add_argument("--idle-conns", type=int, default=10000, help="idle connections for the memory run")
    p.add_argument("--hold", type=float, default=2.0, help="seconds the idle connections are held before RSS is read")
    p.add_argument("--verify-pairs", type=int, default=1000, help="idle: pairs checked after the hold (0: all)")
    p.add_argument("--derpd-workers", type=int, default=1)
    p.add_argument("--server-cpu", type=int, default=1)
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--start-timeout", type=float, default=15.0)
    p.add_argument("--autogroup-nice", type=int, default=None,
                   help="nice value for the scheduler autogroup of every process started (each runs in its own "
                        "session); e.g. -15 on a machine shared with builds (root, CONFIG_SCHED_AUTOGROUP)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1400 B, 1 s runs, 20 pairs, 1000 idle connections")
    p.add_argument("--capacity", type=int, default=0, help="afterwards, hold this many idle connections to derpd")
    p.add_argument("--capacity-workers", type=int, default=2)
    p.add_argument("--capacity-per-process", type=int, default=15000, help="connections per derp_load process")
    p.add_argument("--json", action="store_true", help="also print all results as one JSON object")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.duration, args.warmup, args.pairs, args.idle_conns, args.hold = "1400", 1.0, 0.3, 20, 1000, 0.5
    args.build = os.path.abspath(args.build)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    try:
        args.sizes = [int(s) for s in str(args.sizes).split(",")]
    except ValueError:
        p.error("--sizes: comma list of integers")
    for s in args.servers:
        if s not in ALL_SERVERS:
            p.error(f"unknown server {s!r}")
    for m in args.modes:
        if m not in ALL_MODES:
            p.error(f"unknown mode {m!r}")
    if not 0 < args.duration <= 60 or not 0 <= args.warmup <= 10:
        p.error("--duration must be in (0, 60] and --warmup in [0, 10]")
    if not 1 <= args.burst <= 64:
        p.error("--burst must be in [1, 64]")
    if args.autogroup_nice is not None and not -20 <= args.autogroup_nice <= 19:
        p.error("--autogroup-nice must be in [-20, 19]")
    if not 0 < args.open_fraction <= 2:
        p.error("--open-fraction must be in (0, 2]")
    if not 0 <= args.capacity <= 200000:
        p.error("--capacity must be in [0, 200000]")
    args.derp_load = os.path.join(args.build, "bench", "load", "derp_load")
    if not os.access(args.derp_load, os.X_OK):
        p.error(f"{args.derp_load} not found: cmake --build {args.build} --target derp_load derpd")
    for tool in ("taskset", "openssl"):
        if shutil.which(tool) is None:
            p.error(f"{tool} is required")
    require_cpus(p, args.server_cpu, args.client_cpu)

    stop_all_on_exit()

    machine = machine_details()
    t0 = time.monotonic()
    results = {}
    skipped = {}
    if "derper" in args.servers:
        args.derper_bin = find_derper(args)
        if args.derper_bin is None:
            skipped["derper"] = "derper not found (pass --derper, or install go to build it)"
    if "derpd" in args.servers and not os.access(os.path.join(args.build, "relay", "derpd"), os.X_OK):
        skipped["derpd"] = "relay/derpd not built"
    with tempfile.TemporaryDirectory(prefix="compare_derp_") as workdir:
        if "tls" in args.modes:
            make_cert(os.path.join(workdir, "certs"))
        for mode in args.modes:
            print(f"{mode}:", flush=True)
            results[mode] = {}
            for name in args.servers:  # derper first: its ceiling sets the open-loop rate
                if name in skipped:
                    results[mode][name] = {"skipped": skipped[name]}
                    continue
                results[mode][name] = run_server(name, mode, args, workdir, results[mode])
        capacity = run_capacity(args, workdir) if args.capacity and "derpd" not in skipped else None
    print_report(machine, args, results, time.monotonic() - t0)
    if args.json:
        print(json.dumps({"machine": machine, "results": results, "capacity": capacity,
                          "settings": {k: v for k, v in vars(args).items() if k not in ("derp_load",)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
