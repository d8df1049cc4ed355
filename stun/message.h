// STUN message codec, part 1: wire constants, the transaction id, and a zero-copy validating
// message view (RFC 8489 / RFC 5389, classic RFC 3489, RFC 5780 attributes). No I/O.
//
// Wire format (all big-endian):
//
//   0                   1                   2                   3
//   |0 0|  message type (14 bits)   |   message length (attrs only) |
//   |              magic cookie 0x2112A442 (RFC 5389+)              |
//   |              transaction id (96 bits)                         |
//   then attributes: | type (16) | length (16, unpadded) | value, zero-padded to 4 bytes |
//
// A classic RFC 3489 message has no magic cookie: the 32 bits at offset 4 are part of a 128-bit
// transaction id. A message is classic when those 32 bits are not the cookie.
//
// Protocol flow (Binding): the client sends a Binding request (0x0001) with a fresh transaction
// id; the server answers with a success (0x0101) or error (0x0111) response echoing the id, and
// the client reads its public address from XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS). Message::parse
// validates everything a responder needs before it looks at a single attribute value.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <optional>
#include <span>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/result.h"

namespace derpd::stun {

inline constexpr std::size_t kHeaderSize = 20;
inline constexpr std::uint32_t kMagicCookie = 0x2112A442;
inline constexpr std::uint32_t kFingerprintXor = 0x5354554E;  // "STUN"
inline constexpr std::size_t kAttrHeaderSize = 4;
inline constexpr std::size_t kFingerprintAttrSize = 8;  // header + CRC-32
// The length field is 16 bits and a multiple of 4.
inline constexpr std::size_t kMaxMessageSize = kHeaderSize + 0xFFFC;

// Message type = method (12 bits) interleaved with class (2 bits): M11..M7 C1 M6..M4 C0 M3..M0.
enum class MessageClass : std::uint8_t {
  kRequest = 0,
  kIndication = 1,
  kSuccessResponse = 2,
  kErrorResponse = 3,
};

inline constexpr std::uint16_t kMethodBinding = 0x001;

enum class MessageType : std::uint16_t {
  kBindingRequest = 0x0001,     // client -> server; attributes optional
  kBindingIndication = 0x0011,  // keepalive; never answered
  kBindingSuccess = 0x0101,     // XOR-MAPPED-ADDRESS (+ MAPPED-ADDRESS, RFC 5780 addresses)
  kBindingError = 0x0111,       // ERROR-CODE (+ UNKNOWN-ATTRIBUTES for 420)
};

constexpr std::uint16_t make_type(std::uint16_t method, MessageClass c) {
  const auto cls = static_cast<std::uint16_t>(c);
  return static_cast<std::uint16_t>((method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) |
                                    ((cls & 0x1) << 4) | ((cls & 0x2) << 7));
}
constexpr std::uint16_t method_of(std::uint16_t type) {
  return static_cast<std::uint16_t>((type & 0x000F) | ((type & 0x00E0) >> 1) | ((type & 0x3E00) >> 2));
}
constexpr MessageClass class_of(std::uint16_t type) {
  return static_cast<MessageClass>(((type >> 4) & 0x1) | ((type >> 7) & 0x2));
}

// Attribute types. 0x0000-0x7FFF are comprehension-required (a server that does not know one
// answers 420), 0x8000-0xFFFF comprehension-optional. Values outside this list are legal on the
// wire and simply have no enumerator. Addresses: | 0 | family (1 IPv4, 2 IPv6) | port | ip |.
enum class AttrType : std::uint16_t {
  kMappedAddress = 0x0001,           // address, plain (RFC 3489, RFC 8489 fallback)
  kResponseAddress = 0x0002,         // RFC 3489 only; unsupported (reflection risk)
  kChangeRequest = 0x0003,           // u32 flags: 0x04 change IP, 0x02 change port (RFC 5780 / 3489)
  kSourceAddress = 0x0004,           // address the response was sent from (RFC 3489)
  kChangedAddress = 0x0005,          // the server's alternate ip:port (RFC 3489)
  kUsername = 0x0006,                // UTF-8, <= 763 bytes
  kPassword = 0x0007,                // RFC 3489 only
  kMessageIntegrity = 0x0008,        // HMAC-SHA1, 20 bytes
  kErrorCode = 0x0009,               // | 0 0 | class (3 bits) | number (8 bits) | reason UTF-8 |
  kUnknownAttributes = 0x000A,       // list of u16 attribute types
  kReflectedFrom = 0x000B,           // RFC 3489 only
  kRealm = 0x0014,                   // UTF-8
  kNonce = 0x0015,                   // opaque
  kMessageIntegritySha256 = 0x001C,  // HMAC-SHA256, 16..32 bytes
  kPasswordAlgorithm = 0x001D,       // RFC 8489
  kUserhash = 0x001E,                // 32 bytes
  kXorMappedAddress = 0x0020,        // address XOR cookie (and cookie||txid for IPv6)
  kPadding = 0x0026,                 // opaque filler (RFC 5780)
  kResponsePort = 0x0027,            // | port (16) | 0 (16) | (RFC 5780)
  kPasswordAlgorithms = 0x8002,      // RFC 8489
  kAlternateDomain = 0x8003,         // RFC 8489
  kXorMappedAddressAlt = 0x8020,     // same as 0x0020; sent by some old servers (e.g. Vovida)
  kSoftware = 0x8022,                // UTF-8, < 128 characters
  kAlternateServer = 0x8023,         // address, plain
  kFingerprint = 0x8028,             // u32 CRC-32 of the message before it, XOR 0x5354554E; last
  kResponseOrigin = 0x802B,          // address the response was sent from (RFC 5780)
  kOtherAddress = 0x802C,            // the server's alternate ip:port (RFC 5780)
};

constexpr bool is_comprehension_required(AttrType t) { return static_cast<std::uint16_t>(t) < 0x8000; }
constexpr std::size_t padded_length(std::size_t n) { return (n + 3) & ~std::size_t{3}; }

// Transaction id: the 16 bytes at header offset 4. RFC 5389+ messages start them with the magic
// cookie, leaving a 96-bit id; classic RFC 3489 messages use all 128 bits as the id. Keeping the
// 16 bytes lets one type carry both, and they are exactly the XOR key of an IPv6 XOR address.
class TxId {
 public:
  static constexpr std::size_t kSize = 12;         // RFC 5389+ id, after the cookie
  static constexpr std::size_t kClassicSize = 16;  // RFC 3489 id, cookie position included

  TxId();  // the cookie followed by 12 zero bytes
  static TxId from_bytes(std::span<const std::byte, kSize> id);
  // Any 16 bytes; the result has_cookie() if they happen to start with the cookie.
  static TxId from_classic_bytes(std::span<const std::byte, kClassicSize> id);

  bool has_cookie() const;
  std::span<const std::byte, kSize> id() const { return std::span<const std::byte, kSize>(b_.data() + 4, kSize); }
  std::span<const std::byte, kClassicSize> bytes16() const { return b_; }

  friend bool operator==(const TxId&, const TxId&) = default;
  friend auto operator<=>(const TxId&, const TxId&) = default;

 private:
  std::array<std::byte, kClassicSize> b_;
};

// One attribute; `value` aliases the message buffer and excludes the alignment padding.
struct Attribute {
  AttrType type{};
  Bytes value;
};

// Walks an attribute section. Every step checks that the 4-byte header and the padded value fit
// in what remains before slicing; a walk that would run past the end stops early and sets
// truncated(). On a section accepted by Message::parse it never stops early.
class AttributeIterator {
 public:
  using value_type = Attribute;
  using difference_type = std::ptrdiff_t;

  AttributeIterator() = default;
  explicit AttributeIterator(Bytes section) : rest_(section) { load(); }

  const Attribute& operator*() const { return cur_; }
  const Attribute* operator->() const { return &cur_; }
  AttributeIterator& operator++() {
    rest_ = rest_.subspan(step_);
    load();
    return *this;
  }
  void operator++(int) { ++*this; }
  bool operator==(std::default_sentinel_t) const { return done_; }
  bool truncated() const { return truncated_; }

 private:
  void load();
  Bytes rest_;
  Attribute cur_;
  std::size_t step_ = 0;
  bool done_ = true;
  bool truncated_ = false;
};

struct AttributeRange {
  Bytes section;
  AttributeIterator begin() const { return AttributeIterator(section); }
  std::default_sentinel_t end() const { return {}; }
};

enum class ParseError : std::uint8_t {
  kTooShort,           // fewer than 20 bytes
  kNotStun,            // one of the top two bits of the type is set
  kBadLength,          // length field not a multiple of 4, or not equal to the bytes that follow
  kBadAttribute,       // an attribute's (padded) length runs past the end of the message
  kFingerprintNotLast, // an attribute follows FINGERPRINT
  kBadFingerprint,     // FINGERPRINT of the wrong size or with a CRC that does not match
  kCount,
};
std::string_view to_string(ParseError e);

// CRC-32 (IEEE) of `b` XOR 0x5354554E: the FINGERPRINT value of a message whose first
// b.size() bytes are `b` (with the length field already counting the fingerprint).
std::uint32_t fingerprint(Bytes b);

// A validated STUN message. IT ALIASES the buffer it was parsed from (usually the receive
// buffer): keep that buffer alive and unchanged while the view or any Attribute from it is used.
//
// parse() checks: at least 20 bytes; top two type bits zero; length a multiple of 4 and equal to
// the bytes after the header (trailing bytes are an error, as on UDP a datagram is one message);
// every attribute fits; for RFC 5389+ messages, a FINGERPRINT is last, 4 bytes, and matches.
// In a classic (cookie-less) message 0x8028 is just an unknown optional attribute.
class Message {
 public:
  static Result<Message, ParseError> parse(Bytes datagram);

  MessageType type() const { return static_cast<MessageType>(type_); }
  std::uint16_t type_bits() const { return type_; }
  std::uint16_t method() const { return method_of(type_); }
  MessageClass message_class() const { return class_of(type_); }
  bool is_classic() const { return !txid_.has_cookie(); }
  const TxId& txid() const { return txid_; }

  Bytes bytes() const { return data_; }
  Bytes attribute_bytes() const { return data_.subspan(kHeaderSize); }
  AttributeRange attributes() const { return AttributeRange{attribute_bytes()}; }
  // First attribute of `type`, if any.
  std::optional<Attribute> find(AttrType type) const;
  // True when a FINGERPRINT attribute was present (and, by parse(), verified).
  bool has_fingerprint() const { return fingerprint_; }

 private:
  Message(Bytes data, std::uint16_t type, const TxId& txid, bool fp)
      : data_(data), txid_(txid), type_(type), fingerprint_(fp) {}
  Bytes data_;
  TxId txid_;
  std::uint16_t type_ = 0;
  bool fingerprint_ = false;
};

// Cheap pre-check on raw bytes: 20+ bytes, top bits zero, magic cookie present (what Tailscale
// calls "is STUN"). Classic messages fail it by design.
bool looks_like_stun(Bytes datagram);

}  // namespace derpd::stun

template <>
struct std::hash<derpd::stun::TxId> {
  std::size_t operator()(const derpd::stun::TxId& t) const noexcept;
};
