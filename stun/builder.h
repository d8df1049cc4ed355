// STUN message codec, part 3: building messages into a caller-owned buffer.
//
// MessageBuilder writes the header at construction and appends attributes, keeping the header's
// length field current after every call. It never allocates. When an attribute does not fit, the
// builder enters a failed state: that and every later call do nothing, ok() is false and size()
// is 0, so a chain of add_*() calls needs one check at the end. add_fingerprint() must be the
// last call; anything added after it fails the builder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"
#include "stun/attributes.h"
#include "stun/message.h"

namespace derpd::stun {

class MessageBuilder {
 public:
  // Writes the 20-byte header (type, length 0, then txid.bytes16(): cookie + id, or the classic
  // 16-byte id) into `out`.
  MessageBuilder(MutBytes out, MessageType type, const TxId& txid);

  // Generic attribute: header, value, zero padding to 4 bytes. value.size() <= 0xFFFF.
  bool add(AttrType type, Bytes value);
  // A plain address attribute (MAPPED-ADDRESS, RESPONSE-ORIGIN, OTHER-ADDRESS, ...).
  bool add_address(AttrType type, const Endpoint& ep);
  // An XOR address attribute (XOR-MAPPED-ADDRESS) keyed with this message's txid.
  bool add_xor_address(AttrType type, const Endpoint& ep);
  bool add_text(AttrType type, std::string_view text) { return add(type, as_bytes(text)); }
  bool add_software(std::string_view name) { return add_text(AttrType::kSoftware, name); }
  bool add_change_request(const ChangeRequest& c);
  bool add_response_port(std::uint16_t port);
  // PADDING of `len` zero bytes (rounded up to a multiple of 4).
  bool add_padding(std::size_t len);
  // ERROR-CODE with `code` 300..699 and a reason phrase.
  bool add_error_code(std::uint16_t code, std::string_view reason);
  // UNKNOWN-ATTRIBUTES. RFC 3489 wants a whole number of 32-bit words, repeating one type when
  // the count is odd (`classic_repeat`); RFC 8489 pads with zero bytes instead.
  bool add_unknown_attributes(std::span<const std::uint16_t> types, bool classic_repeat);
  // FINGERPRINT over everything written so far; must be the last attribute.
  bool add_fingerprint();

  bool ok() const { return !failed_; }
  // Bytes written so far (header included), or 0 after a failure.
  std::size_t size() const { return failed_ ? 0 : size_; }
  // Room left for more attribute bytes (headers included).
  std::size_t remaining() const { return failed_ ? 0 : out_.size() - size_; }
  const TxId& txid() const { return txid_; }

 private:
  // Reserves an attribute of `len` value bytes and returns a pointer to its value (zeroed
  // padding already written), or nullptr after marking the builder failed.
  std::byte* reserve(AttrType type, std::size_t len);
  MutBytes out_;
  TxId txid_;
  std::size_t size_ = 0;
  bool failed_ = false;
  bool sealed_ = false;  // FINGERPRINT written
};

}  // namespace derpd::stun
