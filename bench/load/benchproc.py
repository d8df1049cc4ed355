"""Process handling shared by the compare scripts: every process a benchmark starts is recorded in
STARTED and stopped by its PID (SIGTERM, then SIGKILL), also on Ctrl-C or an error."""
import atexit
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


def stop_all_on_exit():
    """Arms stop_all() for the script's end, Ctrl-C and SIGTERM."""
    atexit.register(stop_all)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def require_cpus(parser, *cpus):
    """Ends the script with a usage error unless every CPU may run this process."""
    for cpu in cpus:
        if cpu not in os.sched_getaffinity(0):
            parser.error(f"cpu {cpu} is not available here")


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
