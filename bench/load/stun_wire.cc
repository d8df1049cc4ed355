#include "bench/load/stun_wire.h"

#include <zlib.h>

#include <cstring>

#include "stun/client.h"

namespace derpd::bench {
namespace {

using stun::kHeaderSize;
using stun::kMagicCookie;
constexpr std::size_t kFingerprintAttrSize = stun::kFingerprintAttrSize;
constexpr std::uint16_t kBindingRequest = 0x0001;
constexpr std::uint16_t kBindingSuccess = 0x0101;
constexpr std::uint16_t kAttrXorMappedAddress = 0x0020;
constexpr std::uint16_t kAttrSoftware = 0x8022;
constexpr std::uint16_t kAttrFingerprint = 0x8028;
constexpr std::string_view kTailscaleSoftware = "tailnode";

bool looks_like_stun(Bytes b) {
  return b.size() >= kHeaderSize && (std::to_integer<unsigned>(b[0]) & 0xC0u) == 0 && load_be32(b.data() + 4) == kMagicCookie;
}

std::uint32_t fingerprint(Bytes b) {
  // zlib's crc32 is the IEEE CRC-32 that RFC 8489 names; STUN messages are far below uInt's range.
  const auto crc = ::crc32(0L, reinterpret_cast<const Bytef*>(b.data()), static_cast<uInt>(b.size()));
  return static_cast<std::uint32_t>(crc) ^ stun::kFingerprintXor;
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
    case Verdict::kMalformed: return "malformed";
    case Verdict::kBadFingerprint: return "bad_fingerprint";
    case Verdict::kNotSuccess: return "not_success";
    case Verdict::kNoXorMappedAddress: return "no_xor_mapped_address";
    case Verdict::kWrongAddress: return "wrong_address";
    case Verdict::kNotDerperFormat: return "not_derper_format";
    case Verdict::kCount: break;
  }
  return "unknown";
}

std::size_t build_request(RequestFormat f, const TxId& tx, MutBytes out) {
  stun::BindingRequestOptions o;
  switch (f) {
    case RequestFormat::kTailscale: o.form = stun::RequestForm::kTailnode; break;
    case RequestFormat::kRfc8489:
      o.form = stun::RequestForm::kRfc8489;
      o.software = {};
      o.fingerprint = true;
      break;
    case RequestFormat::kBare:
      o.form = stun::RequestForm::kRfc8489;
      o.software = {};
      o.fingerprint = false;
      break;
  }
  return stun::build_binding_request(tx, o, out);
}

bool peek_txid(Bytes datagram, TxId& out) {
  if (!looks_like_stun(datagram)) return false;
  out = TxId::from_bytes(std::span<const std::byte, TxId::kSize>(datagram.data() + 8, TxId::kSize));
  return true;
}

Verdict check_response(Bytes datagram, const Endpoint& self, CheckOptions opts) {
  auto parsed = stun::parse_binding_response(datagram);
  if (!parsed) {
    switch (parsed.error()) {
      case stun::ResponseError::kNotStun: return Verdict::kNotStun;
      case stun::ResponseError::kMalformed:
      case stun::ResponseError::kBadAttribute: return Verdict::kMalformed;
      case stun::ResponseError::kBadFingerprint: return Verdict::kBadFingerprint;
      case stun::ResponseError::kNotBindingResponse:
      case stun::ResponseError::kNoErrorCode: return Verdict::kNotSuccess;
      case stun::ResponseError::kNoMappedAddress: return Verdict::kNoXorMappedAddress;
      case stun::ResponseError::kCount: break;
    }
    return Verdict::kMalformed;
  }
  const stun::BindingResponse& r = *parsed;
  if (r.classic) return Verdict::kNotStun;
  if (r.is_error) return Verdict::kNotSuccess;
  if (r.mapped_from != stun::MappedFrom::kXorMapped) return Verdict::kNoXorMappedAddress;
  if (r.mapped != self) return Verdict::kWrongAddress;
  // derper's form is the header and one XOR-MAPPED-ADDRESS of the client's family, nothing else.
  if (opts.derper_format && datagram.size() != kHeaderSize + 8 + self.addr.size()) return Verdict::kNotDerperFormat;
  return Verdict::kOk;
}

bool parse_tailnode_request(Bytes datagram, std::span<std::byte, 12> id) {
  if (!looks_like_stun(datagram) || load_be16(datagram.data()) != kBindingRequest) return false;
  bool software_ok = false;
  std::uint16_t last_type = 0;
  std::uint32_t got_fp = 0;
  // Walk the attributes: every header and padded value must fit in what remains.
  const Bytes body = datagram.subspan(kHeaderSize);
  std::size_t off = 0;
  while (off < body.size()) {
    if (body.size() - off < 4) return false;
    const std::uint16_t type = load_be16(body.data() + off);
    const std::size_t len = load_be16(body.data() + off + 2);
    const std::size_t padded = (len + 3) & ~std::size_t{3};
    off += 4;
    if (padded > body.size() - off) return false;
    const Bytes value = body.subspan(off, len);
    last_type = type;
    if (type == kAttrSoftware && as_chars(value) == kTailscaleSoftware) software_ok = true;
    if (type == kAttrFingerprint && len == 4) got_fp = load_be32(value.data());
    off += padded;
  }
  if (!software_ok || last_type != kAttrFingerprint || datagram.size() < kHeaderSize + kFingerprintAttrSize) return false;
  // As derper: the CRC of everything before the final 8 bytes.
  if (fingerprint(datagram.first(datagram.size() - kFingerprintAttrSize)) != got_fp) return false;
  std::memcpy(id.data(), datagram.data() + 8, id.size());
  return true;
}

std::size_t build_derper_response(std::span<const std::byte, 12> id, const Endpoint& remote, MutBytes out) {
  const std::size_t addr_len = remote.addr.size();
  const std::size_t attr_len = 4 + addr_len;
  const std::size_t size = kHeaderSize + 4 + attr_len;
  if (out.size() < size) return 0;
  std::byte* p = out.data();
  store_be16(p, kBindingSuccess);
  store_be16(p + 2, static_cast<std::uint16_t>(4 + attr_len));
  store_be32(p + 4, kMagicCookie);
  std::memcpy(p + 8, id.data(), id.size());
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

}  // namespace derpd::bench
