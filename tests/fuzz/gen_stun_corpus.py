#!/usr/bin/env python3
"""Writes the seed corpus of the STUN fuzz target (tests/fuzz/corpus/stun/).

Deterministic: running it again rewrites identical files. The messages are assembled here from
the RFC wire format (Python's zlib.crc32 for FINGERPRINT), independently of the C++ codec.

    python3 tests/fuzz/gen_stun_corpus.py [output_dir]
"""
import os
import struct
import sys
import zlib

COOKIE = 0x2112A442
TXID = bytes(range(1, 13))
CLASSIC_TXID = bytes(range(0xC0, 0xD0))


def attr(atype, value):
    pad = (-len(value)) % 4
    return struct.pack(">HH", atype, len(value)) + value + b"\0" * pad


def message(mtype, attrs, txid=TXID, cookie=True, fingerprint=True):
    body = b"".join(attrs)
    head_id = struct.pack(">I", COOKIE) + txid if cookie else txid
    if fingerprint:
        head = struct.pack(">HH", mtype, len(body) + 8) + head_id
        crc = zlib.crc32(head + body) ^ 0x5354554E
        return head + body + attr(0x8028, struct.pack(">I", crc))
    return struct.pack(">HH", mtype, len(body)) + head_id + body


def addr(family_v6, ip, port):
    return struct.pack(">BBH", 0, 2 if family_v6 else 1, port) + ip


def xor_addr(ip, port, txid=TXID):
    key = struct.pack(">I", COOKIE) + txid
    x = bytes(b ^ k for b, k in zip(ip, key))
    return struct.pack(">BBH", 0, 2 if len(ip) == 16 else 1, port ^ 0x2112) + x


def change(flags):
    return attr(0x0003, struct.pack(">I", flags))


V4 = bytes([192, 0, 2, 1])
V6 = bytes.fromhex("20010db8123456780011223344556677")

RFC5769 = {
    "rfc5769_request": "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74"
    "002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf",
    "rfc5769_response_v4": "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220"
    "002000080001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96",
    "rfc5769_response_v6": "010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c",
}


def corpus():
    c = {name: bytes.fromhex(h) for name, h in RFC5769.items()}
    c["tailnode_request"] = message(0x0001, [attr(0x8022, b"tailnode")])
    c["generic_request"] = message(0x0001, [attr(0x8022, b"natprobe")])
    c["bare_request"] = message(0x0001, [], fingerprint=False)
    c["change_request_ip_port"] = message(0x0001, [change(0x06)])
    c["change_request_port"] = message(0x0001, [change(0x02), attr(0x8022, b"derpd")])
    c["response_port_request"] = message(0x0001, [attr(0x0027, struct.pack(">HH", 5555, 0))])
    c["padding_request"] = message(0x0001, [attr(0x0026, b"\0" * 64)])
    c["unknown_required_request"] = message(0x0001, [attr(0x0024, bytes.fromhex("6e0001ff")), attr(0x7FFF, b"")])
    c["classic_request"] = message(0x0001, [], txid=CLASSIC_TXID, cookie=False, fingerprint=False)
    c["classic_change_request"] = message(0x0001, [change(0x04)], txid=CLASSIC_TXID, cookie=False, fingerprint=False)
    c["derper_response_v4"] = message(0x0101, [attr(0x0020, xor_addr(V4, 32853))], fingerprint=False)
    c["derper_response_v6"] = message(0x0101, [attr(0x0020, xor_addr(V6, 32853))], fingerprint=False)
    c["rfc5780_response"] = message(
        0x0101,
        [
            attr(0x0020, xor_addr(V4, 40000)),
            attr(0x0001, addr(False, V4, 40000)),
            attr(0x802B, addr(False, bytes([203, 0, 113, 2]), 3479)),
            attr(0x802C, addr(False, bytes([203, 0, 113, 2]), 3479)),
            attr(0x8022, b"derpd"),
        ],
    )
    c["classic_response"] = message(
        0x0101,
        [
            attr(0x0001, addr(False, V4, 40000)),
            attr(0x0004, addr(False, bytes([203, 0, 113, 1]), 3478)),
            attr(0x0005, addr(False, bytes([203, 0, 113, 2]), 3479)),
            attr(0x8020, xor_addr(V4, 40000, CLASSIC_TXID[4:])),
        ],
        txid=CLASSIC_TXID,
        cookie=False,
        fingerprint=False,
    )
    c["error_420_response"] = message(
        0x0111,
        [
            attr(0x0009, bytes([0, 0, 4, 20]) + b"Unknown Attribute"),
            attr(0x000A, struct.pack(">HH", 0x0003, 0x0024)),
        ],
    )
    bad = bytearray(c["tailnode_request"])
    bad[-1] ^= 1
    c["bad_fingerprint_request"] = bytes(bad)
    return c


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "stun")
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(corpus().items()):
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(data)
        print(f"{name}.bin {len(data)} bytes")


if __name__ == "__main__":
    main()
