"""Process handling shared by the compare scripts: every process a benchmark starts is recorded in
STARTED and stopped by its PID (SIGTERM, then SIGKILL), also on Ctrl-C or an error."""
import os
import platform
import signal
import subprocess
import sys

STARTED = []  # Popen objects of the processes this script started


def stop(proc, grace=5.0):
    """Stops one process we started, by its PID: SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


def stop_all():
    for proc in STARTED:
        stop(proc)


def on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


def machine_details():
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/loadavg", encoding="ascii") as f:
        loadavg = " ".join(f.read().split()[:3])
    return {"cpu_model": model, "kernel": platform.release(), "nproc": len(os.sched_getaffinity(0)),
            "loadavg": loadavg}
