#include "stun/attributes.h"

#include <array>

namespace derpd::stun {

std::string_view to_string(AttrError e) {
  switch (e) {
    case AttrError::kBadLength: return "bad_length";
    case AttrError::kBadFamily: return "bad_family";
    case AttrError::kBadValue: return "bad_value";
    case AttrError::kCount: break;
  }
  return "unknown";
}

namespace {

// Shared by both address forms: checks family and exact size, then reads port and address,
// XOR-ing with `key` (16 bytes) and `port_key` when given.
Result<Endpoint, AttrError> decode_addr(Bytes value, const std::byte* key, std::uint16_t port_key) {
  if (value.size() < 4) return Err{AttrError::kBadLength};
  const std::uint8_t family = std::to_integer<std::uint8_t>(value[1]);
  std::size_t ip_len = 0;
  if (family == kFamilyV4) {
    ip_len = 4;
  } else if (family == kFamilyV6) {
    ip_len = 16;
  } else {
    return Err{AttrError::kBadFamily};
  }
  if (value.size() != 4 + ip_len) return Err{AttrError::kBadLength};
  const std::uint16_t port = load_be16(value.data() + 2) ^ port_key;
  std::array<std::uint8_t, 16> ip{};
  for (std::size_t i = 0; i < ip_len; ++i) {
    std::uint8_t b = std::to_integer<std::uint8_t>(value[4 + i]);
    if (key != nullptr) b ^= std::to_integer<std::uint8_t>(key[i]);
    ip[i] = b;
  }
  if (ip_len == 4) return Endpoint{IpAddr::v4({ip[0], ip[1], ip[2], ip[3]}), port};
  return Endpoint{IpAddr::v6(ip), port};
}

}  // namespace

Result<Endpoint, AttrError> decode_address(Bytes value) { return decode_addr(value, nullptr, 0); }

Result<Endpoint, AttrError> decode_xor_address(Bytes value, const TxId& txid) {
  return decode_addr(value, txid.bytes16().data(), static_cast<std::uint16_t>(kMagicCookie >> 16));
}

Result<ChangeRequest, AttrError> decode_change_request(Bytes value) {
  if (value.size() != 4) return Err{AttrError::kBadLength};
  const std::uint32_t bits = load_be32(value.data());
  return ChangeRequest{(bits & ChangeRequest::kChangeIp) != 0, (bits & ChangeRequest::kChangePort) != 0};
}

Result<std::uint16_t, AttrError> decode_response_port(Bytes value) {
  if (value.size() != 4) return Err{AttrError::kBadLength};
  const std::uint16_t port = load_be16(value.data());
  if (port == 0) return Err{AttrError::kBadValue};
  return port;
}

Result<ErrorCode, AttrError> decode_error_code(Bytes value) {
  if (value.size() < 4) return Err{AttrError::kBadLength};
  const unsigned cls = std::to_integer<unsigned>(value[2]) & 0x07;
  const unsigned number = std::to_integer<unsigned>(value[3]);
  if (cls < 3 || cls > 6 || number > 99) return Err{AttrError::kBadValue};
  return ErrorCode{static_cast<std::uint16_t>(cls * 100 + number), as_chars(value.subspan(4))};
}

Result<UnknownAttributes, AttrError> decode_unknown_attributes(Bytes value) {
  if (value.size() % 2 != 0) return Err{AttrError::kBadLength};
  return UnknownAttributes(value);
}

std::string_view reason_phrase(std::uint16_t code) {
  switch (code) {
    case 300: return "Try Alternate";
    case 400: return "Bad Request";
    case 401: return "Unauthenticated";
    case 420: return "Unknown Attribute";
    case 438: return "Stale Nonce";
    case 500: return "Server Error";
    default: return "Error";
  }
}

}  // namespace derpd::stun
