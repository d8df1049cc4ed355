#include "stun/message.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>

namespace derpd::stun {

namespace {
constexpr std::array<std::byte, 4> kCookieBytes = {std::byte{0x21}, std::byte{0x12}, std::byte{0xA4},
                                                   std::byte{0x42}};
}  // namespace

TxId::TxId() : b_{} { std::memcpy(b_.data(), kCookieBytes.data(), 4); }

TxId TxId::from_bytes(std::span<const std::byte, kSize> id) {
  TxId t;
  std::memcpy(t.b_.data() + 4, id.data(), kSize);
  return t;
}

TxId TxId::from_classic_bytes(std::span<const std::byte, kClassicSize> id) {
  TxId t;
  std::memcpy(t.b_.data(), id.data(), kClassicSize);
  return t;
}

bool TxId::has_cookie() const { return std::memcmp(b_.data(), kCookieBytes.data(), 4) == 0; }

void AttributeIterator::load() {
  done_ = true;
  if (rest_.empty()) return;
  if (rest_.size() < kAttrHeaderSize) {
    truncated_ = true;
    return;
  }
  const std::uint16_t type = load_be16(rest_.data());
  const std::size_t len = load_be16(rest_.data() + 2);
  const std::size_t padded = padded_length(len);
  if (padded > rest_.size() - kAttrHeaderSize) {
    truncated_ = true;
    return;
  }
  cur_ = Attribute{static_cast<AttrType>(type), rest_.subspan(kAttrHeaderSize, len)};
  step_ = kAttrHeaderSize + padded;
  done_ = false;
}

std::string_view to_string(ParseError e) {
  switch (e) {
    case ParseError::kTooShort: return "too_short";
    case ParseError::kNotStun: return "not_stun";
    case ParseError::kBadLength: return "bad_length";
    case ParseError::kBadAttribute: return "bad_attribute";
    case ParseError::kFingerprintNotLast: return "fingerprint_not_last";
    case ParseError::kBadFingerprint: return "bad_fingerprint";
    case ParseError::kCount: break;
  }
  return "unknown";
}

std::uint32_t fingerprint(Bytes b) {
  // Messages are at most 64 KiB, well within zlib's uInt.
  const auto crc = ::crc32(0L, reinterpret_cast<const Bytef*>(b.data()), static_cast<uInt>(b.size()));
  return static_cast<std::uint32_t>(crc) ^ kFingerprintXor;
}

bool looks_like_stun(Bytes d) {
  return d.size() >= kHeaderSize && (std::to_integer<unsigned>(d[0]) & 0xC0) == 0 &&
         std::memcmp(d.data() + 4, kCookieBytes.data(), 4) == 0;
}

Result<Message, ParseError> Message::parse(Bytes d) {
  if (d.size() < kHeaderSize) return Err{ParseError::kTooShort};
  if ((std::to_integer<unsigned>(d[0]) & 0xC0) != 0) return Err{ParseError::kNotStun};
  const std::size_t len = load_be16(d.data() + 2);
  if (len % 4 != 0 || len != d.size() - kHeaderSize) return Err{ParseError::kBadLength};
  const TxId txid = TxId::from_classic_bytes(d.subspan<4, TxId::kClassicSize>());
  const bool modern = txid.has_cookie();

  bool fp = false;
  AttributeIterator it(d.subspan(kHeaderSize));
  for (; it != std::default_sentinel; ++it) {
    if (fp) return Err{ParseError::kFingerprintNotLast};
    if (modern && it->type == AttrType::kFingerprint) {
      if (it->value.size() != 4) return Err{ParseError::kBadFingerprint};
      // The FINGERPRINT value is the last 4 bytes of the message (len % 4 == 0 and it fits).
      const std::size_t value_off = static_cast<std::size_t>(it->value.data() - d.data());
      const std::size_t covered = value_off - kAttrHeaderSize;
      if (load_be32(it->value.data()) != fingerprint(d.first(covered))) return Err{ParseError::kBadFingerprint};
      fp = true;
    }
  }
  if (it.truncated()) return Err{ParseError::kBadAttribute};
  return Message(d, load_be16(d.data()), txid, fp);
}

std::optional<Attribute> Message::find(AttrType type) const {
  for (const Attribute& a : attributes())
    if (a.type == type) return a;
  return std::nullopt;
}

}  // namespace derpd::stun

std::size_t std::hash<derpd::stun::TxId>::operator()(const derpd::stun::TxId& t) const noexcept {
  std::uint64_t h = 1469598103934665603ull;
  for (std::byte b : t.bytes16()) h = (h ^ std::to_integer<std::uint8_t>(b)) * 1099511628211ull;
  return static_cast<std::size_t>(h);
}
