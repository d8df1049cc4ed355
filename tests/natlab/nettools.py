#!/usr/bin/env python3
"""Small network helpers the NAT lab runs inside its namespaces (`ip netns exec NS python3
nettools.py ...`). Python 3 standard library only; every wait is bounded; output is one JSON line.

  nettools.py natpmp GATEWAY INTERNAL_PORT LIFETIME
      NAT-PMP (RFC 6886) public-address request, then a UDP mapping request for INTERNAL_PORT.
  nettools.py pcp GATEWAY
      PCP (RFC 6887) ANNOUNCE request; prints the result code.
  nettools.py recv BIND_IP PORT TIMEOUT
      Binds BIND_IP:PORT, prints {"ready": true}, waits for one datagram.
  nettools.py send IP PORT TEXT
      Sends TEXT to IP:PORT three times, 50 ms apart.
"""
import ipaddress
import json
import socket
import struct
import sys
import time

NATPMP_PORT = 5351


def _exchange(sock, payload, addr, timeout, tries=3):
    """Sends payload and waits for one reply, resending up to `tries` times."""
    sock.settimeout(timeout)
    for _ in range(tries):
        sock.sendto(payload, addr)
        try:
            data, src = sock.recvfrom(1100)
            return data, src
        except socket.timeout:
            continue
        except ConnectionRefusedError:
            return None, "refused"
    return None, "timeout"


def natpmp(gateway, internal_port, lifetime):
    out = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        data, src = _exchange(s, b"\x00\x00", (gateway, NATPMP_PORT), 0.5)
        if data is None:
            out["public"] = {"error": src}
        elif len(data) >= 12:
            _ver, op, result, _epoch = struct.unpack("!BBHI", data[:8])
            out["public"] = {"op": op, "result": result, "ip": str(ipaddress.IPv4Address(data[8:12]))}
        else:
            out["public"] = {"error": f"short reply ({len(data)} bytes)"}
        req = struct.pack("!BBHHHI", 0, 1, 0, internal_port, internal_port, lifetime)
        data, src = _exchange(s, req, (gateway, NATPMP_PORT), 0.5)
        if data is None:
            out["map"] = {"error": src}
        elif len(data) >= 16:
            _ver, op, result, _epoch, iport, eport, life = struct.unpack("!BBHIHHI", data[:16])
            out["map"] = {"op": op, "result": result, "internal": iport, "external": eport, "lifetime": life}
        else:
            out["map"] = {"error": f"short reply ({len(data)} bytes)"}
    return out


def pcp(gateway):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((gateway, NATPMP_PORT))
        own = socket.inet_aton(s.getsockname()[0])
        # Version 2, opcode ANNOUNCE (0), lifetime 0, client address as IPv4-mapped IPv6.
        req = struct.pack("!BBHI", 2, 0, 0, 0) + b"\x00" * 10 + b"\xff\xff" + own
        data, src = _exchange(s, req, (gateway, NATPMP_PORT), 0.5)
    if data is None:
        return {"error": src}
    if len(data) < 24:
        return {"error": f"short reply ({len(data)} bytes)"}
    ver, op, _res, result = struct.unpack("!BBBB", data[:4])
    return {"version": ver, "op": op, "result": result}


def recv(bind_ip, port, timeout):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((bind_ip, port))
        print(json.dumps({"ready": True}), flush=True)
        s.settimeout(timeout)
        try:
            data, src = s.recvfrom(2048)
        except socket.timeout:
            return {"error": "timeout"}
    return {"from": f"{src[0]}:{src[1]}", "data": data.decode("utf-8", "replace")}


def send(ip, port, text):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(3):
            s.sendto(text.encode(), (ip, port))
            time.sleep(0.05)
    return {"sent": 3}


def main(argv):
    if len(argv) == 4 and argv[0] == "natpmp":
        res = natpmp(argv[1], int(argv[2]), int(argv[3]))
    elif len(argv) == 2 and argv[0] == "pcp":
        res = pcp(argv[1])
    elif len(argv) == 4 and argv[0] == "recv":
        res = recv(argv[1], int(argv[2]), float(argv[3]))
    elif len(argv) == 4 and argv[0] == "send":
        res = send(argv[1], int(argv[2]), argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
