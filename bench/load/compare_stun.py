#!/usr/bin/env python3
"""Compare STUN servers under the same closed-loop load, in one run.

Each server (derpd, coturn, udp_echo_stun) is started pinned to one core (taskset), loaded by
stun_load pinned to another core for the same duration, and its CPU time (utime + stime of the
whole process, from /proc/<pid>/stat) is read before and after. Prints machine details, a table
(responses/s, loss, latency, server CPU per response) and the ratios derpd/echo and derpd/coturn.

Traffic goes to 127.0.0.1 only. Every server this script starts is stopped by its PID on exit.
Standard library only.

Usage: compare_stun.py BUILD_DIR [--duration S] [--servers derpd,coturn,echo] [--json] [--check]
"""

import argparse
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

from benchproc import STARTED, machine_details, require_cpus, stop, stop_all_on_exit

ALL_SERVERS = ("derpd", "coturn", "echo")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    """utime + stime of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces; fields after the closing paren are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port found")


def tailnode_request(txid):
    head = struct.pack(">HHI", 0x0001, 20, 0x2112A442) + txid + struct.pack(">HH", 0x8022, 8) + b"tailnode"
    fp = (zlib.crc32(head) ^ 0x5354554E) & 0xFFFFFFFF
    return head + struct.pack(">HHI", 0x8028, 4, fp)


def wait_answering(proc, port, timeout_s):
    """True once the server answers a tailnode Binding request with a success response."""
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            txid = random.randbytes(12)
            try:
                s.send(tailnode_request(txid))
                data = s.recv(2048)
                if len(data) >= 20 and data[:2] == b"\x01\x01" and data[8:20] == txid:
                    return True
            except (socket.timeout, ConnectionRefusedError):
                time.sleep(0.1)
    return False


def server_command(name, build, port, duration, workdir):
    """(argv, derper_format) for a server, or (None, reason) when it cannot run here."""
    if name == "derpd":
        exe = os.path.join(build, "relay", "derpd")
        if not os.access(exe, os.X_OK):
            return None, f"{exe} not built (yet)"
        return [exe, "--dev", "--workers", "1", "-http-port=-1", "-derp=false",
                "--stun-addr", f"127.0.0.1:{port}", "--metrics-addr", "127.0.0.1:0"], True
    if name == "coturn":
        exe = shutil.which("turnserver")
        if exe is None:
            return None, "turnserver (coturn) not installed"
        return [exe, "-n", "-S", "-m", "0", "--no-cli", "--no-tls", "--no-dtls", "-L", "127.0.0.1",
                "--listening-port", str(port), "--log-file", "stdout",
                "--pidfile", os.path.join(workdir, "turnserver.pid")], False
    if name == "echo":
        exe = os.path.join(build, "bench", "load", "udp_echo_stun")
        if not os.access(exe, os.X_OK):
            return None, f"{exe} not built"
        return [exe, "--listen", f"127.0.0.1:{port}", "--max-seconds", str(int(duration) + 120)], True
    raise ValueError(name)


def coturn_self_check(port):
    """Runs coturn's own client once, to show Binding works without authentication."""
    exe = shutil.which("turnutils_stunclient")
    if exe is None:
        return "turnutils_stunclient not installed"
    try:
        out = subprocess.run(["timeout", "5", exe, "-p", str(port), "127.0.0.1"], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except subprocess.TimeoutExpired:
        return "turnutils_stunclient timed out"
    for line in out.splitlines():
        if "reflexive addr" in line:
            return "turnutils_stunclient: " + line.split(":", 2)[-1].strip()
    return "turnutils_stunclient: no answer"


def run_one(name, args, logdir):
    result = {"server": name}
    port = free_port()
    argv, extra = server_command(name, args.build, port, args.duration, logdir)
    if argv is None:
        result["skipped"] = extra
        return result
    derper_format = extra
    log_path = os.path.join(logdir, f"{name}.log")
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(["taskset", "-c", str(args.server_cpu)] + argv, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    STARTED.append(proc)
    try:
        if not wait_answering(proc, port, args.start_timeout):
            tail = open(log_path, encoding="utf-8", errors="replace").read()[-600:]
            result["failed"] = f"did not answer a Binding request on 127.0.0.1:{port}; log tail:\n{tail}"
            return result
        if name == "coturn":
            result["note"] = coturn_self_check(port)
        load = [os.path.join(args.build, "bench", "load", "stun_load"), f"127.0.0.1:{port}",
                "--duration", str(args.duration), "--sockets", str(args.sockets), "--window", str(args.window),
                "--cpu", str(args.client_cpu), "--json"]
        if derper_format:
            load.append("--derper-format")
        before = cpu_ticks(proc.pid)
        out = subprocess.run(["taskset", "-c", str(args.client_cpu)] + load, capture_output=True, text=True,
                             timeout=args.duration + 60, check=False)
        after = cpu_ticks(proc.pid)
        if out.returncode != 0:
            result["failed"] = f"stun_load exited {out.returncode}: {out.stderr.strip()}"
            return result
        r = json.loads(out.stdout)
        cpu_s = (after - before) / CLK_TCK
        result.update({
            "port": port,
            "responses": r["responses"],
            "responses_per_s": r["responses_per_s"],
            "sent": r["sent"],
            "lost": r["lost"],
            "loss_ratio": r["loss_ratio"],
            "invalid": r["invalid"],
            "invalid_reasons": {k: v for k, v in r["invalid_reasons"].items() if v},
            "p50_us": r["latency_us"]["p50"],
            "p99_us": r["latency_us"]["p99"],
            "p999_us": r["latency_us"]["p999"],
            "elapsed_s": r["elapsed_s"],
            "server_cpu_s": cpu_s,
            "server_cpu_us_per_response": cpu_s * 1e6 / r["responses"] if r["responses"] else None,
            "server_busy": cpu_s / r["elapsed_s"] if r["elapsed_s"] else None,
            "client_cpu_us_per_response": r["client_cpu_us_per_response"],
            "derper_format_check": derper_format,
        })
        return result
    finally:
        stop(proc)


def fmt_num(v, spec):
    return "n/a" if v is None else format(v, spec)


def fmt_ratio(v):
    return "n/a" if v is None else f"x{v:.2f}"


def ratio(results, a, b, key):
    ra, rb = results.get(a, {}), results.get(b, {})
    va, vb = ra.get(key), rb.get(key)
    if not va or not vb:
        return None
    return va / vb


def print_report(machine, args, results):
    print(f"machine: {machine['cpu_model']} | kernel {machine['kernel']} | nproc {machine['nproc']} | "
          f"loadavg {machine['loadavg']}")
    print(f"load: stun_load on cpu {args.client_cpu}, {args.sockets} sockets x {args.window} in flight, "
          f"{args.duration:g} s per server; servers on cpu {args.server_cpu}; tailnode requests")
    print()
    head = f"{'server':<8} {'resp/s':>10} {'loss %':>8} {'invalid':>8} {'p50 us':>9} {'p99 us':>9} " \
           f"{'cpu us/resp':>11} {'srv busy':>8}"
    print(head)
    print("-" * len(head))
    for name in args.servers:
        r = results[name]
        if "skipped" in r:
            print(f"{name:<8} skipped: {r['skipped']}")
            continue
        if "failed" in r:
            print(f"{name:<8} FAILED: {r['failed']}")
            continue
        print(f"{name:<8} {r['responses_per_s']:>10.0f} {r['loss_ratio'] * 100:>8.3f} {r['invalid']:>8} "
              f"{r['p50_us']:>9.1f} {r['p99_us']:>9.1f} {fmt_num(r['server_cpu_us_per_response'], '.2f'):>11} "
              f"{fmt_num(r['server_busy'] * 100 if r['server_busy'] is not None else None, '.0f'):>7}%")
        if r.get("invalid_reasons"):
            print(f"{'':<8} invalid: {r['invalid_reasons']}")
        if r.get("note"):
            print(f"{'':<8} {r['note']}")
    print()
    for a, b in (("derpd", "echo"), ("derpd", "coturn"), ("coturn", "echo")):
        if a not in args.servers or b not in args.servers:
            continue
        cpu = ratio(results, a, b, "server_cpu_us_per_response")
        rate = ratio(results, a, b, "responses_per_s")
        print(f"{a}/{b}: cpu per response {fmt_ratio(cpu)}, responses/s {fmt_ratio(rate)}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("build", help="build directory (with bench/load/stun_load, bench/load/udp_echo_stun, relay/derpd)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per server (default 10, max 120)")
    p.add_argument("--servers", default=",".join(ALL_SERVERS), help="comma list of derpd,coturn,echo")
    p.add_argument("--sockets", type=int, default=64, help="stun_load sockets (source ports)")
    p.add_argument("--window", type=int, default=4, help="stun_load requests in flight per socket")
    p.add_argument("--server-cpu", type=int, default=1)
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--start-timeout", type=float, default=10.0, help="seconds a server may take to answer")
    p.add_argument("--json", action="store_true", help="also print all results as one JSON object")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless every server that ran answered, with no invalid answer and < 1%% loss")
    args = p.parse_args()
    args.build = os.path.abspath(args.build)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in args.servers:
        if s not in ALL_SERVERS:
            p.error(f"unknown server {s!r}; choose from {', '.join(ALL_SERVERS)}")
    if not 0 < args.duration <= 120:
        p.error("--duration must be in (0, 120]")
    stun_load = os.path.join(args.build, "bench", "load", "stun_load")
    if not os.access(stun_load, os.X_OK):
        p.error(f"{stun_load} not found: build it first (cmake --build {args.build} --target stun_load udp_echo_stun)")
    if shutil.which("taskset") is None:
        p.error("taskset (util-linux) is required")
    require_cpus(p, args.server_cpu, args.client_cpu)

    stop_all_on_exit()

    machine = machine_details()
    results = {}
    with tempfile.TemporaryDirectory(prefix="compare_stun_") as logdir:
        for name in args.servers:
            results[name] = run_one(name, args, logdir)
    print_report(machine, args, results)
    if args.json:
        print(json.dumps({"machine": machine, "duration_s": args.duration, "sockets": args.sockets,
                          "window": args.window, "results": results}))
    if args.check:
        ran = [r for r in results.values() if "skipped" not in r]
        bad = [r["server"] for r in ran
               if "failed" in r or r["responses"] == 0 or r["invalid"] != 0 or r["loss_ratio"] >= 0.01]
        if bad or not ran:
            print(f"check failed: {', '.join(bad) or 'no server ran'}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
