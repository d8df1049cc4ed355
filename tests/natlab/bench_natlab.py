#!/usr/bin/env python3
"""NAT lab benchmark: wall time of a full natprobe verdict versus stunner, per NAT kind.

Every kind gets its own lab (lab.py) with derpd as the RFC 5780 server; all kinds run at the same
time unless --serial. natprobe runs --runs times per kind (min / median / max reported, and
whether the median is within the 1.5 s target); stunner runs once against derpd and once against
Vovida's stund (stunner's FINGERPRINT is wrong, so derpd drops its requests: see README.md).
Needs root. Not a test: it prints a table and exits 0 unless a tool could not run at all.

  sudo python3 bench_natlab.py [--natprobe PATH] [--derpd PATH] [--stunner PATH]
                               [--kinds a,b] [--runs N] [--serial]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import lab  # noqa: E402
from test_natlab import STUND_PORT, parse_stunner, verdict_text  # noqa: E402

TARGET_S = 1.5


def first_existing(*paths):
    for p in paths:
        if p and os.access(p, os.X_OK):
            return p
    return None


def bench_kind(kind: lab.Kind, derpd: str, natprobe: str, stunner: str | None, runs: int) -> dict:
    out = {"kind": kind.name, "natprobe_s": [], "natprobe_verdicts": set(), "error": ""}
    L = lab.Lab(kind, tag=f"b-{kind.name}")
    try:
        L.up()
        L.start_derpd(derpd)
        if stunner:
            L.start_stund(STUND_PORT)
        for _ in range(runs):
            t = time.monotonic()
            p = L.exec(L.cli, [natprobe, "--server", f"{lab.SERVER_IP1}:{lab.STUN_PORT1}", "--json"], timeout=60)
            out["natprobe_s"].append(time.monotonic() - t)
            try:
                j = json.loads(p.stdout)
                out["natprobe_verdicts"].add("UDP blocked" if not j.get("udp") else
                                             verdict_text(j.get("mapping"), j.get("filtering")))
            except ValueError:
                out["natprobe_verdicts"].add(f"exit {p.returncode}, no JSON")
        if stunner:
            for label, port in (("derpd", lab.STUN_PORT1), ("stund", STUND_PORT)):
                t = time.monotonic()
                p = L.exec(L.cli, [stunner, "--stun-server", lab.SERVER_IP1, "--stun-server", lab.SERVER_IP2,
                                   "--stun-port", str(port)], timeout=120)
                out[f"stunner_{label}_s"] = time.monotonic() - t
                out[f"stunner_{label}"] = parse_stunner(p.stdout).nat_type or f"exit {p.returncode}"
    except (lab.LabError, subprocess.TimeoutExpired, OSError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        L.down()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--natprobe", default=os.environ.get("NATPROBE_BIN"))
    ap.add_argument("--derpd", default=os.environ.get("DERPD_BIN"))
    ap.add_argument("--stunner", default=os.environ.get("STUNNER_BIN"))
    ap.add_argument("--kinds", default=",".join(lab.KINDS))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--serial", action="store_true", help="one kind at a time")
    a = ap.parse_args()
    if not 1 <= a.runs <= 50:
        ap.error("--runs must be 1..50")
    build = os.path.join(ROOT, "build")
    natprobe = first_existing(a.natprobe, os.path.join(build, "tools", "natprobe", "natprobe"))
    derpd = first_existing(a.derpd, os.path.join(build, "relay", "derpd"))
    stunner = first_existing(a.stunner, os.path.join(build, "tests", "natlab", "tools", "bin", "stunner"))
    if not natprobe or not derpd:
        print(f"need natprobe ({natprobe}) and derpd ({derpd}): build them or pass --natprobe/--derpd")
        return 2
    reason = lab.can_run()
    if reason:
        print(f"cannot build the lab: {reason}")
        return 2
    lab.install_signal_teardown()
    lab.remove_stale()
    kinds = [lab.KINDS[k] for k in a.kinds.split(",") if k]

    t0 = time.monotonic()
    workers = 1 if a.serial else len(kinds)
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(lambda k: bench_kind(k, derpd, natprobe, stunner, a.runs), kinds))
    total = time.monotonic() - t0

    head = ["kind", "natprobe verdict", "natprobe min", "median", "max", f"<= {TARGET_S}s",
            "stunner@derpd", "s", "stunner@stund", "s"]
    rows = [head]
    worst = 0.0
    for r in results:
        ts = r["natprobe_s"]
        med = statistics.median(ts) if ts else None
        worst = max(worst, med or 0.0)
        rows.append([
            r["kind"], "/".join(sorted(r["natprobe_verdicts"])) or r["error"] or "-",
            f"{min(ts):.3f}" if ts else "-", f"{med:.3f}" if med is not None else "-",
            f"{max(ts):.3f}" if ts else "-", ("yes" if med <= TARGET_S else "NO") if med is not None else "-",
            r.get("stunner_derpd", "-"), f"{r['stunner_derpd_s']:.1f}" if "stunner_derpd_s" in r else "-",
            r.get("stunner_stund", "-"), f"{r['stunner_stund_s']:.1f}" if "stunner_stund_s" in r else "-",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    mode = "serial" if a.serial else f"{len(kinds)} kinds in parallel"
    print(f"\n{mode}, {a.runs} natprobe runs per kind, {os.cpu_count()} CPUs, total {total:.1f} s; "
          f"slowest natprobe median {worst:.3f} s (target {TARGET_S} s)")
    print(f"stunner: {stunner or 'not available'}")
    errors = [r for r in results if r["error"]]
    for r in errors:
        print(f"{r['kind']}: {r['error']}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
