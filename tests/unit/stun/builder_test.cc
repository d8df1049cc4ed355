#include "stun/builder.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "stun/message.h"
#include "tests/unit/stun/vectors.h"

namespace derpd::stun {
namespace {

using test::hex;
using test::txid_1_to_12;

std::vector<std::byte> built(const MessageBuilder& b, const std::array<std::byte, 600>& buf) {
  return {buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(b.size())};
}

// Rebuilds the RFC 5769 IPv4 response, MESSAGE-INTEGRITY copied as an opaque value: the builder's
// padding, length bookkeeping, XOR address and fingerprint must reproduce the vector exactly.
TEST(Builder, ReproducesRfc5769Ipv4Response) {
  const auto want = hex(test::kRfc5769ResponseV4);
  auto id = hex(test::kRfc5769TxId);
  std::array<std::byte, 600> buf{};
  MessageBuilder b(buf, MessageType::kBindingSuccess, TxId::from_bytes(std::span<const std::byte, 12>(id.data(), 12)));
  // RFC 5769 pads SOFTWARE with a space (0x20) where the builder writes a zero byte.
  b.add(AttrType::kSoftware, as_bytes("test vector"));
  b.add_xor_address(AttrType::kXorMappedAddress, *Endpoint::parse("192.0.2.1:32853"));
  b.add(AttrType::kMessageIntegrity, Bytes(want).subspan(52, 20));
  b.add_fingerprint();
  ASSERT_TRUE(b.ok());
  auto got = built(b, buf);
  ASSERT_EQ(got.size(), want.size());
  // Only the SOFTWARE pad byte differs (0x00 here, 0x20 in the RFC), and with it the FINGERPRINT.
  auto patched = got;
  patched[20 + 4 + 11] = std::byte{0x20};
  EXPECT_NE(got, want);
  store_be32(patched.data() + patched.size() - 4, fingerprint(Bytes(patched).first(patched.size() - 8)));
  EXPECT_EQ(patched, want);
  // And what was built is itself valid.
  auto m = Message::parse(got);
  ASSERT_TRUE(m) << to_string(m.error());
  EXPECT_TRUE(m->has_fingerprint());
}

TEST(Builder, HeaderAndLengthTracking) {
  std::array<std::byte, 600> buf{};
  MessageBuilder b(buf, MessageType::kBindingRequest, txid_1_to_12());
  EXPECT_EQ(b.size(), 20u);
  EXPECT_EQ(built(b, buf), hex("0001 0000 2112a442 01020304 05060708 090a0b0c"));
  b.add_software("abc");
  EXPECT_EQ(b.size(), 28u);
  EXPECT_EQ(load_be16(buf.data() + 2), 8);
  EXPECT_EQ(std::vector<std::byte>(buf.begin() + 20, buf.begin() + 28), hex("80220003 61626300"));
  b.add_change_request(ChangeRequest{true, true});
  b.add_response_port(5555);
  b.add_padding(5);  // rounded up to 8
  EXPECT_EQ(std::vector<std::byte>(buf.begin() + 28, buf.begin() + 56),
            hex("00030004 00000006 00270004 15b30000 00260008 00000000 00000000"));
  EXPECT_EQ(load_be16(buf.data() + 2), 36);
}

TEST(Builder, AddressesRoundTrip) {
  std::array<std::byte, 600> buf{};
  const TxId txid = txid_1_to_12();
  const Endpoint v4 = *Endpoint::parse("198.51.100.7:40000");
  const Endpoint v6 = *Endpoint::parse("[2001:db8::7]:40000");
  MessageBuilder b(buf, MessageType::kBindingSuccess, txid);
  b.add_xor_address(AttrType::kXorMappedAddress, v6);
  b.add_address(AttrType::kMappedAddress, v4);
  b.add_address(AttrType::kOtherAddress, v6);
  b.add_fingerprint();
  ASSERT_TRUE(b.ok());
  auto m = Message::parse(Bytes(buf).first(b.size()));
  ASSERT_TRUE(m);
  EXPECT_EQ(*decode_xor_address(m->find(AttrType::kXorMappedAddress)->value, txid), v6);
  EXPECT_EQ(m->find(AttrType::kXorMappedAddress)->value.size(), 20u);
  EXPECT_EQ(*decode_address(m->find(AttrType::kMappedAddress)->value), v4);
  EXPECT_EQ(m->find(AttrType::kMappedAddress)->value.size(), 8u);
  EXPECT_EQ(*decode_address(m->find(AttrType::kOtherAddress)->value), v6);
}

TEST(Builder, ErrorCodeAndUnknownAttributes) {
  std::array<std::byte, 600> buf{};
  MessageBuilder b(buf, MessageType::kBindingError, txid_1_to_12());
  b.add_error_code(420, "Unknown Attribute");
  const std::array<std::uint16_t, 3> types{0x0024, 0x0003, 0x0025};
  b.add_unknown_attributes(types, /*classic_repeat=*/false);
  ASSERT_TRUE(b.ok());
  // ERROR-CODE: 4 + 17 bytes, padded to 24; UNKNOWN-ATTRIBUTES: 6 bytes padded to 8.
  EXPECT_EQ(b.size(), 20u + 4 + 24 + 4 + 8);
  EXPECT_EQ(std::vector<std::byte>(buf.begin() + 20, buf.begin() + 28), hex("00090015 00000414"));
  EXPECT_EQ(std::vector<std::byte>(buf.begin() + 48, buf.begin() + 60), hex("000a0006 00240003 00250000"));

  MessageBuilder c(buf, MessageType::kBindingError, txid_1_to_12());
  c.add_unknown_attributes(types, /*classic_repeat=*/true);
  EXPECT_EQ(std::vector<std::byte>(buf.begin() + 20, buf.begin() + 32), hex("000a0008 00240003 00250025"));

  MessageBuilder bad(buf, MessageType::kBindingError, txid_1_to_12());
  EXPECT_FALSE(bad.add_error_code(700, "x"));
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.size(), 0u);
}

TEST(Builder, OverflowFailsAndStaysFailed) {
  std::array<std::byte, 600> buf{};
  MessageBuilder tiny(MutBytes(buf).first(19), MessageType::kBindingRequest, TxId{});
  EXPECT_FALSE(tiny.ok());
  EXPECT_EQ(tiny.size(), 0u);
  EXPECT_FALSE(tiny.add_software("x"));

  MessageBuilder b(MutBytes(buf).first(32), MessageType::kBindingRequest, TxId{});
  EXPECT_TRUE(b.add_software("12345678"));  // exactly fills 32 bytes
  EXPECT_EQ(b.size(), 32u);
  EXPECT_EQ(b.remaining(), 0u);
  EXPECT_FALSE(b.add_padding(0));
  EXPECT_FALSE(b.ok());
  EXPECT_EQ(b.size(), 0u);
  EXPECT_FALSE(b.add_software(""));  // still failed

  // The 16-bit length field caps a message at 0xFFFC attribute bytes.
  std::vector<std::byte> big(70000);
  MessageBuilder l(big, MessageType::kBindingRequest, TxId{});
  EXPECT_TRUE(l.add_padding(0xFFF0));
  EXPECT_FALSE(l.add_padding(16));
  EXPECT_FALSE(l.ok());
}

TEST(Builder, NothingAfterFingerprint) {
  std::array<std::byte, 600> buf{};
  MessageBuilder b(buf, MessageType::kBindingRequest, TxId{});
  EXPECT_TRUE(b.add_fingerprint());
  EXPECT_EQ(b.size(), 28u);
  EXPECT_FALSE(b.add_software("late"));
  EXPECT_FALSE(b.ok());
}

TEST(Builder, ClassicHeader) {
  std::array<std::byte, 16> id{};
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = std::byte(0xA0 + i);
  std::array<std::byte, 600> buf{};
  MessageBuilder b(buf, MessageType::kBindingRequest, TxId::from_classic_bytes(id));
  b.add_change_request(ChangeRequest{true, false});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(built(b, buf), hex("0001 0008 a0a1a2a3 a4a5a6a7 a8a9aaab acadaeaf 00030004 00000004"));
}

}  // namespace
}  // namespace derpd::stun
