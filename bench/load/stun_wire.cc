#include "bench/load/stun_wire.h"

#include <zlib.h>

#include <cstring>

namespace derpd::bench {
namespace {

constexpr std::size_t kFingerprintAttrSize = 8;  // type + length + CRC

bool looks_like_stun(Bytes b) {
  return b.size() >= kHeaderSize && (std::to_integer<unsigned>(b[0]) & 0xC0u) == 0 && load_be32(b.data() + 4) == kMagicCookie;
}

void write_header(std::byte* p, std::uint16_t type, std::uint16_t length, const TxId& tx) {
  store_be16(p, type);
  store_be16(p + 2, length);
  store_be32(p + 4, kMagicCookie);
  std::memcpy(p + 8, tx.bytes.data(), tx.bytes.size());
}

// Appends FINGERPRINT at `p + at`; the header length must already count it.
void write_fingerprint(std::byte* p, std::size_t at) {
  const std::uint32_t fp = fingerprint(Bytes(p, at));
  store_be16(p + at, kAttrFingerprint);
  store_be16(p + at + 2, 4);
  store_be32(p + at + 4, fp);
}

// Walks the attributes of `body` (the bytes after the header), calling fn(type, value) for each.
// Returns false when an attribute (with its padding) runs past the end.
template <typename Fn>
bool for_each_attr(Bytes body, Fn&& fn) {
  std::size_t off = 0;
  while (off < body.size()) {
    if (body.size() - off < 4) return false;
    const std::uint16_t type = load_be16(body.data() + off);
    const std::size_t len = load_be16(body.data() + off + 2);
    const std::size_t padded = (len + 3) & ~std::size_t{3};
    off += 4;
    if (padded > body.size() - off) return false;
    if (!fn(type, body.subspan(off, len), off - 4)) return true;
    off += padded;
  }
  return true;
}

}  // namespace

std::string_view to_string(RequestFormat f) {
  switch (f) {
    case RequestFormat::kTailscale: return "tailscale";
    case RequestFormat::kRfc8489: return "rfc8489";
    case RequestFormat::kBare: return "bare";
  }
  return "unknown";
}

std::string_view to_string(Verdict v) {
  switch (v) {
    case Verdict::kOk: return "ok";
    case Verdict::kTruncated: return "truncated";
    case Verdict::kNotStun: return "not_stun";
    case Verdict::kNotSuccess: return "not_success";
    case Verdict::kBadLength: return "bad_length";
    case Verdict::kMalformedAttrs: return "malformed_attrs";
    case Verdict::kNoMappedAddress: return "no_xor_mapped_address";
    case Verdict::kWrongAddress: return "wrong_address";
    case Verdict::kBadFingerprint: return "bad_fingerprint";
    case Verdict::kNotDerperFormat: return "not_derper_format";
    case Verdict::kCount: break;
  }
  return "unknown";
}

std::uint32_t fingerprint(Bytes b) {
  // zlib's crc32 is the IEEE CRC-32 that RFC 8489 names; uInt is at least 32 bits and STUN
  // messages are far below that.
  const auto crc = ::crc32(0L, reinterpret_cast<const Bytef*>(b.data()), static_cast<uInt>(b.size()));
  return static_cast<std::uint32_t>(crc) ^ kFingerprintXor;
}

std::size_t request_size(RequestFormat f) {
  switch (f) {
    case RequestFormat::kTailscale: return kHeaderSize + 4 + kTailscaleSoftware.size() + kFingerprintAttrSize;
    case RequestFormat::kRfc8489: return kHeaderSize + kFingerprintAttrSize;
    case RequestFormat::kBare: return kHeaderSize;
  }
  return 0;
}

std::size_t build_request(RequestFormat f, const TxId& tx, MutBytes out) {
  const std::size_t size = request_size(f);
  if (size == 0 || out.size() < size) return 0;
  std::byte* p = out.data();
  write_header(p, kBindingRequest, static_cast<std::uint16_t>(size - kHeaderSize), tx);
  std::size_t at = kHeaderSize;
  if (f == RequestFormat::kTailscale) {
    store_be16(p + at, kAttrSoftware);
    store_be16(p + at + 2, static_cast<std::uint16_t>(kTailscaleSoftware.size()));
    std::memcpy(p + at + 4, kTailscaleSoftware.data(), kTailscaleSoftware.size());
    at += 4 + kTailscaleSoftware.size();
  }
  if (f != RequestFormat::kBare) write_fingerprint(p, at);
  return size;
}

bool peek_txid(Bytes datagram, TxId& out) {
  if (!looks_like_stun(datagram)) return false;
  std::memcpy(out.bytes.data(), datagram.data() + 8, out.bytes.size());
  return true;
}

bool parse_tailnode_request(Bytes datagram, TxId& out) {
  if (!looks_like_stun(datagram) || load_be16(datagram.data()) != kBindingRequest) return false;
  bool software_ok = false;
  std::uint16_t last_type = 0;
  std::uint32_t got_fp = 0;
  std::size_t fp_offset = 0;
  const bool well_formed = for_each_attr(datagram.subspan(kHeaderSize), [&](std::uint16_t type, Bytes value, std::size_t at) {
    last_type = type;
    if (type == kAttrSoftware && as_chars(value) == kTailscaleSoftware) software_ok = true;
    if (type == kAttrFingerprint && value.size() == 4) {
      got_fp = load_be32(value.data());
      fp_offset = kHeaderSize + at;
    }
    return true;
  });
  if (!well_formed || !software_ok || last_type != kAttrFingerprint) return false;
  // derper checks the CRC of everything before the final 8 bytes.
  if (datagram.size() < kHeaderSize + kFingerprintAttrSize || fp_offset != datagram.size() - kFingerprintAttrSize) return false;
  if (fingerprint(datagram.first(fp_offset)) != got_fp) return false;
  std::memcpy(out.bytes.data(), datagram.data() + 8, out.bytes.size());
  return true;
}

std::size_t build_derper_response(const TxId& tx, const Endpoint& remote, MutBytes out) {
  const std::size_t addr_len = remote.addr.size();
  const std::size_t attr_len = 4 + addr_len;
  const std::size_t size = kHeaderSize + 4 + attr_len;
  if (out.size() < size) return 0;
  std::byte* p = out.data();
  write_header(p, kBindingSuccess, static_cast<std::uint16_t>(4 + attr_len), tx);
  std::byte* a = p + kHeaderSize;
  store_be16(a, kAttrXorMappedAddress);
  store_be16(a + 2, static_cast<std::uint16_t>(attr_len));
  a[4] = std::byte{0};
  a[5] = std::byte{static_cast<std::uint8_t>(remote.addr.is_v4() ? 1 : 2)};
  store_be16(a + 6, static_cast<std::uint16_t>(remote.port ^ (kMagicCookie >> 16)));
  // The XOR key is the cookie followed by the transaction ID: exactly header bytes 4..19.
  const std::uint8_t* ip = remote.addr.data();
  for (std::size_t i = 0; i < addr_len; ++i) a[8 + i] = static_cast<std::byte>(ip[i]) ^ p[4 + i];
  return size;
}

Verdict check_response(Bytes datagram, const Endpoint& self, CheckOptions opts) {
  if (!looks_like_stun(datagram)) return Verdict::kNotStun;
  if (load_be16(datagram.data()) != kBindingSuccess) return Verdict::kNotSuccess;
  const std::size_t length = load_be16(datagram.data() + 2);
  if (length % 4 != 0 || length != datagram.size() - kHeaderSize) return Verdict::kBadLength;

  int attrs = 0;
  int xor_mapped = 0;
  bool address_ok = false;
  bool fingerprint_seen = false;
  bool fingerprint_ok = true;
  const Bytes body = datagram.subspan(kHeaderSize);
  const bool well_formed = for_each_attr(body, [&](std::uint16_t type, Bytes value, std::size_t at) {
    ++attrs;
    if (fingerprint_seen) fingerprint_ok = false;  // FINGERPRINT must be last
    if (type == kAttrFingerprint) {
      fingerprint_seen = true;
      const std::size_t end = kHeaderSize + at;
      if (value.size() != 4 || fingerprint(datagram.first(end)) != load_be32(value.data())) fingerprint_ok = false;
    } else if (type == kAttrXorMappedAddress) {
      ++xor_mapped;
      if (value.size() < 4) return true;
      const unsigned family = std::to_integer<unsigned>(value[1]);
      const std::size_t want_family = self.addr.is_v4() ? 1 : 2;
      const std::size_t addr_len = self.addr.size();
      if (family != want_family || value.size() != 4 + addr_len) return true;
      const std::uint16_t port = static_cast<std::uint16_t>(load_be16(value.data() + 2) ^ (kMagicCookie >> 16));
      bool same = port == self.port;
      const std::uint8_t* ip = self.addr.data();
      for (std::size_t i = 0; i < addr_len && same; ++i) {
        same = (value[4 + i] ^ datagram[4 + i]) == static_cast<std::byte>(ip[i]);
      }
      address_ok = same;
    }
    return true;
  });
  if (!well_formed) return Verdict::kMalformedAttrs;
  if (!fingerprint_ok) return Verdict::kBadFingerprint;
  if (xor_mapped == 0) return Verdict::kNoMappedAddress;
  if (xor_mapped != 1 || !address_ok) return Verdict::kWrongAddress;
  if (opts.derper_format && attrs != 1) return Verdict::kNotDerperFormat;
  return Verdict::kOk;
}

}  // namespace derpd::bench
