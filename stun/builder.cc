#include "stun/builder.h"

#include <cstring>

namespace derpd::stun {

MessageBuilder::MessageBuilder(MutBytes out, MessageType type, const TxId& txid) : out_(out), txid_(txid) {
  if (out_.size() < kHeaderSize) {
    failed_ = true;
    return;
  }
  store_be16(out_.data(), static_cast<std::uint16_t>(type));
  store_be16(out_.data() + 2, 0);
  std::memcpy(out_.data() + 4, txid.bytes16().data(), TxId::kClassicSize);
  size_ = kHeaderSize;
}

std::byte* MessageBuilder::reserve(AttrType type, std::size_t len) {
  if (failed_) return nullptr;
  const std::size_t total = kAttrHeaderSize + padded_length(len);
  // The length field counts attribute bytes and is 16 bits.
  if (sealed_ || len > 0xFFFF || total > out_.size() - size_ || size_ - kHeaderSize + total > 0xFFFC) {
    failed_ = true;
    return nullptr;
  }
  std::byte* p = out_.data() + size_;
  store_be16(p, static_cast<std::uint16_t>(type));
  store_be16(p + 2, static_cast<std::uint16_t>(len));
  std::memset(p + kAttrHeaderSize + len, 0, padded_length(len) - len);
  size_ += total;
  store_be16(out_.data() + 2, static_cast<std::uint16_t>(size_ - kHeaderSize));
  return p + kAttrHeaderSize;
}

bool MessageBuilder::add(AttrType type, Bytes value) {
  std::byte* p = reserve(type, value.size());
  if (p == nullptr) return false;
  if (!value.empty()) std::memcpy(p, value.data(), value.size());
  return true;
}

namespace {
void write_addr(std::byte* p, const Endpoint& ep, const std::byte* key, std::uint16_t port_key) {
  p[0] = std::byte{0};
  p[1] = std::byte{ep.addr.is_v4() ? kFamilyV4 : kFamilyV6};
  store_be16(p + 2, static_cast<std::uint16_t>(ep.port ^ port_key));
  const std::uint8_t* ip = ep.addr.data();
  for (std::size_t i = 0; i < ep.addr.size(); ++i) {
    std::byte b{ip[i]};
    if (key != nullptr) b ^= key[i];
    p[4 + i] = b;
  }
}
}  // namespace

bool MessageBuilder::add_address(AttrType type, const Endpoint& ep) {
  std::byte* p = reserve(type, address_value_size(ep.addr));
  if (p == nullptr) return false;
  write_addr(p, ep, nullptr, 0);
  return true;
}

bool MessageBuilder::add_xor_address(AttrType type, const Endpoint& ep) {
  std::byte* p = reserve(type, address_value_size(ep.addr));
  if (p == nullptr) return false;
  write_addr(p, ep, txid_.bytes16().data(), static_cast<std::uint16_t>(kMagicCookie >> 16));
  return true;
}

bool MessageBuilder::add_change_request(const ChangeRequest& c) {
  std::byte* p = reserve(AttrType::kChangeRequest, 4);
  if (p == nullptr) return false;
  store_be32(p, c.bits());
  return true;
}

bool MessageBuilder::add_response_port(std::uint16_t port) {
  std::byte* p = reserve(AttrType::kResponsePort, 4);
  if (p == nullptr) return false;
  store_be16(p, port);
  store_be16(p + 2, 0);
  return true;
}

bool MessageBuilder::add_padding(std::size_t len) {
  const std::size_t n = padded_length(len);
  std::byte* p = reserve(AttrType::kPadding, n);
  if (p == nullptr) return false;
  std::memset(p, 0, n);
  return true;
}

bool MessageBuilder::add_error_code(std::uint16_t code, std::string_view reason) {
  if (code < 300 || code > 699 || reason.size() > 763) {
    failed_ = true;
    return false;
  }
  std::byte* p = reserve(AttrType::kErrorCode, 4 + reason.size());
  if (p == nullptr) return false;
  p[0] = std::byte{0};
  p[1] = std::byte{0};
  p[2] = static_cast<std::byte>(code / 100);
  p[3] = static_cast<std::byte>(code % 100);
  if (!reason.empty()) std::memcpy(p + 4, reason.data(), reason.size());
  return true;
}

bool MessageBuilder::add_unknown_attributes(std::span<const std::uint16_t> types, bool classic_repeat) {
  const bool repeat = classic_repeat && types.size() % 2 == 1;
  const std::size_t n = types.size() + (repeat ? 1 : 0);
  std::byte* p = reserve(AttrType::kUnknownAttributes, 2 * n);
  if (p == nullptr) return false;
  for (std::size_t i = 0; i < types.size(); ++i) store_be16(p + 2 * i, types[i]);
  if (repeat) store_be16(p + 2 * types.size(), types.back());
  return true;
}

bool MessageBuilder::add_fingerprint() {
  std::byte* p = reserve(AttrType::kFingerprint, 4);
  if (p == nullptr) return false;
  // The length field already counts the fingerprint; the CRC covers everything before it.
  store_be32(p, fingerprint(Bytes(out_.data(), size_ - kFingerprintAttrSize)));
  sealed_ = true;
  return true;
}

}  // namespace derpd::stun
