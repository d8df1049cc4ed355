// STUN message codec, part 2: decoding attribute values. Each decoder takes the value bytes of
// one Attribute (see stun/message.h), checks its exact length and fields before reading, and
// returns a small value or an AttrError. Nothing here allocates; string_views alias the message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"
#include "relay/base/result.h"
#include "stun/message.h"

namespace derpd::stun {

enum class AttrError : std::uint8_t {
  kBadLength,  // value size wrong for the attribute (or for the address family)
  kBadFamily,  // address family neither 1 (IPv4) nor 2 (IPv6)
  kBadValue,   // a field out of range (error class, port 0 in RESPONSE-PORT, ...)
  kCount,
};
std::string_view to_string(AttrError e);

inline constexpr std::uint8_t kFamilyV4 = 0x01;
inline constexpr std::uint8_t kFamilyV6 = 0x02;

// Wire size of an address attribute value: 8 for IPv4, 20 for IPv6.
inline std::size_t address_value_size(const IpAddr& a) { return a.is_v4() ? 8 : 20; }

// MAPPED-ADDRESS, SOURCE-ADDRESS, CHANGED-ADDRESS, RESPONSE-ORIGIN, OTHER-ADDRESS,
// ALTERNATE-SERVER: | reserved | family | port | address |, value exactly 8 or 20 bytes.
// An IPv4-mapped IPv6 address comes back as IPv4 (IpAddr normalises).
Result<Endpoint, AttrError> decode_address(Bytes value);
// XOR-MAPPED-ADDRESS (0x0020 and 0x8020): port XOR 0x2112, address XOR the 16 bytes at header
// offset 4 (cookie, then for IPv6 the transaction id).
Result<Endpoint, AttrError> decode_xor_address(Bytes value, const TxId& txid);

// CHANGE-REQUEST flags (RFC 5780 §7.2, RFC 3489 §11.2.4).
struct ChangeRequest {
  static constexpr std::uint32_t kChangeIp = 0x04;
  static constexpr std::uint32_t kChangePort = 0x02;
  bool change_ip = false;
  bool change_port = false;
  std::uint32_t bits() const { return (change_ip ? kChangeIp : 0u) | (change_port ? kChangePort : 0u); }
  bool any() const { return change_ip || change_port; }
  friend bool operator==(const ChangeRequest&, const ChangeRequest&) = default;
};
// Value exactly 4 bytes; bits other than 0x04 and 0x02 are ignored (RFC 5780 says so).
Result<ChangeRequest, AttrError> decode_change_request(Bytes value);

// RESPONSE-PORT: exactly 4 bytes, port in the first two; port 0 is kBadValue (nowhere to send).
Result<std::uint16_t, AttrError> decode_response_port(Bytes value);

struct ErrorCode {
  std::uint16_t code = 0;   // 300..699
  std::string_view reason;  // UTF-8 as received (aliases the message)
};
// ERROR-CODE: at least 4 bytes; class 3..6, number 0..99.
Result<ErrorCode, AttrError> decode_error_code(Bytes value);

// UNKNOWN-ATTRIBUTES: an even number of bytes, a list of u16 types. View over the value.
class UnknownAttributes {
 public:
  explicit UnknownAttributes(Bytes value) : v_(value) {}
  std::size_t size() const { return v_.size() / 2; }
  std::uint16_t operator[](std::size_t i) const { return load_be16(v_.data() + 2 * i); }

 private:
  Bytes v_;
};
Result<UnknownAttributes, AttrError> decode_unknown_attributes(Bytes value);

// SOFTWARE, USERNAME, REALM, ...: the bytes as text (not validated as UTF-8).
inline std::string_view decode_text(Bytes value) { return as_chars(value); }

// Standard reason phrases (RFC 8489 §14.8) for the codes this server sends.
std::string_view reason_phrase(std::uint16_t code);

}  // namespace derpd::stun
