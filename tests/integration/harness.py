"""Shared helpers for derpd's integration tests: start the real daemon on loopback, talk STUN to it.

Every process a test starts is stopped by its PID in tearDown; nothing here sends traffic
anywhere but loopback.
"""
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib

DERPD = os.environ.get("DERPD_BIN", "")
MAGIC = 0x2112A442


class Daemon:
    """A derpd process; its stdout is collected so tests can read the log."""

    def __init__(self, *args, timeout=10.0):
        if not DERPD or not os.path.exists(DERPD):
            raise RuntimeError("DERPD_BIN does not point at a derpd binary")
        self.args = [DERPD, *args]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("derpd did not become ready:\n" + self.log())

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "derpd ready" in line:
                self._ready.set()
        self._ready.set()  # process ended: let the waiter look at the log

    def log(self):
        return "\n".join(self.lines)

    def stun_ports(self):
        """Every 'udp IP:PORT' the daemon said it listens on, as (ip, port) tuples."""
        out = []
        for line in self.lines:
            m = re.search(r"stun listening on udp (?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d+)", line)
            if m:
                out.append((m.group(1) or m.group(2), int(m.group(3))))
        return out

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)
        return self.proc.returncode


def run_derpd(*args, timeout=10.0):
    """Runs derpd expecting it to exit by itself (bad config, bind failure)."""
    return subprocess.run([DERPD, *args], capture_output=True, text=True, timeout=timeout)


def free_udp_port(ip="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def rfc5780_daemon(*args):
    """derpd with `args`, serving STUN on 127.0.0.1 and, as its RFC 5780 alternate, on 127.0.0.2,
    each at a free UDP port (two ports, so four sockets), with two workers. Returns (daemon, (p1, p2))."""
    p1 = free_udp_port("127.0.0.1")
    p2 = free_udp_port("127.0.0.2")
    if p2 == p1:
        p2 = free_udp_port("127.0.0.2")
    d = Daemon(*args, "--stun-addr", f"127.0.0.1:{p1}", "--stun-alt-addr", f"127.0.0.2:{p2}", "--workers", "2")
    return d, (p1, p2)


def fingerprint(b):
    return (zlib.crc32(b) & 0xFFFFFFFF) ^ 0x5354554E


def attr(t, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", t, len(value)) + value + b"\0" * pad


def message(msg_type, txid, attrs=b"", with_fingerprint=False):
    body = attrs
    if with_fingerprint:
        hdr = struct.pack("!HHI", msg_type, len(body) + 8, MAGIC) + txid
        body += attr(0x8028, struct.pack("!I", fingerprint(hdr + body)))
    return struct.pack("!HHI", msg_type, len(body), MAGIC) + txid + body


def tailscale_request(txid):
    """Byte for byte what Tailscale's net/stun Request() sends."""
    return message(0x0001, txid, attr(0x8022, b"tailnode"), with_fingerprint=True)


def parse_attrs(b):
    """(type, length, attributes dict of type -> list of values) of a STUN message."""
    msg_type, length = struct.unpack("!HH", b[:4])
    attrs = {}
    i = 20
    while i + 4 <= 20 + length:
        t, n = struct.unpack("!HH", b[i:i + 4])
        attrs.setdefault(t, []).append(b[i + 4:i + 4 + n])
        i += 4 + n + (4 - n % 4) % 4
    return msg_type, length, attrs


def xor_address(value, txid):
    fam, xport = value[1], struct.unpack("!H", value[2:4])[0]
    port = xport ^ 0x2112
    if fam == 1:
        ip = bytes(a ^ b for a, b in zip(value[4:8], struct.pack("!I", MAGIC)))
        return socket.inet_ntop(socket.AF_INET, ip), port
    key = struct.pack("!I", MAGIC) + txid
    ip = bytes(a ^ b for a, b in zip(value[4:20], key))
    return socket.inet_ntop(socket.AF_INET6, ip), port


def plain_address(value):
    fam, port = value[1], struct.unpack("!H", value[2:4])[0]
    if fam == 1:
        return socket.inet_ntop(socket.AF_INET, value[4:8]), port
    return socket.inet_ntop(socket.AF_INET6, value[4:20]), port


def new_txid():
    return secrets.token_bytes(12)


def udp_socket(ip="127.0.0.1", timeout=2.0):
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    s.settimeout(timeout)
    return s


def exchange(sock, request, server, timeout=2.0):
    """Sends one request and returns (reply bytes, reply source) or (None, None) on timeout."""
    sock.settimeout(timeout)
    sock.sendto(request, server)
    try:
        data, src = sock.recvfrom(2048)
        return data, src[:2]
    except socket.timeout:
        return None, None
