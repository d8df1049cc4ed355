#include "relay/protocol/key.h"

#include <sodium.h>

#include <cctype>
#include <cstring>
#include <set>
#include <string>
#include <unordered_set>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "tests/unit/protocol/test_util.h"

namespace derpd::protocol {
namespace {

using testing::key_of;

// Vectors from Tailscale's types/key/node_test.go (TestNodeSerialization).
constexpr std::string_view kGoPriv = "privkey:40ab1b58e9076c7a4d9d07291f5edf9d1aa017eb949624ba683317f48a640369";
constexpr std::string_view kGoPub = "nodekey:50d20b455ecf12bc453f83c2cfdb2a24925d06cf2598dcaa54e91af82ce9f765";

// RFC 7748 section 6.1: Alice's X25519 key pair.
constexpr std::string_view kRfcAlicePriv = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
constexpr std::string_view kRfcAlicePub = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

TEST(NodePublic, ParsesGoTextFormAndRoundTrips) {
  auto k = NodePublic::parse(kGoPub);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->data()[0], 0x50);
  EXPECT_EQ(k->data()[1], 0xd2);
  EXPECT_EQ(k->data()[31], 0x65);
  EXPECT_EQ(k->to_string(), kGoPub);
  EXPECT_EQ(k->untyped_hex(), kGoPub.substr(8));
  EXPECT_EQ(fmt::format("{}", *k), kGoPub);
}

TEST(NodePublic, HexIsCaseInsensitivePrefixIsNot) {
  std::string upper(kGoPub);
  for (std::size_t i = 8; i < upper.size(); ++i) upper[i] = static_cast<char>(std::toupper(upper[i]));
  auto k = NodePublic::parse(upper);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->to_string(), kGoPub);  // written lowercase

  std::string bad_prefix(kGoPub);
  bad_prefix.replace(0, 8, "NODEKEY:");
  EXPECT_EQ(NodePublic::parse(bad_prefix).error(), KeyError::kBadPrefix);
  EXPECT_EQ(NodePublic::parse(kGoPub.substr(8)).error(), KeyError::kBadPrefix);
  EXPECT_EQ(NodePublic::parse(kGoPriv).error(), KeyError::kBadPrefix);
}

TEST(NodePublic, RejectsWrongLengthAndBadHex) {
  EXPECT_EQ(NodePublic::parse(kGoPub.substr(0, kGoPub.size() - 1)).error(), KeyError::kBadLength);
  EXPECT_EQ(NodePublic::parse(std::string(kGoPub) + "0").error(), KeyError::kBadLength);
  EXPECT_EQ(NodePublic::parse("nodekey:").error(), KeyError::kBadLength);
  std::string bad(kGoPub);
  bad[20] = 'g';
  EXPECT_EQ(NodePublic::parse(bad).error(), KeyError::kBadHex);
  bad[20] = ' ';
  EXPECT_EQ(NodePublic::parse(bad).error(), KeyError::kBadHex);
}

TEST(NodePublic, UntypedHexForTheDerpPublicKeyHeader) {
  auto k = NodePublic::parse_untyped_hex(kGoPub.substr(8));
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->to_string(), kGoPub);
  EXPECT_EQ(NodePublic::parse_untyped_hex(kGoPub).error(), KeyError::kBadLength);
}

TEST(NodePublic, ZeroShortStringAndOrdering) {
  EXPECT_TRUE(NodePublic{}.is_zero());
  EXPECT_EQ(NodePublic{}.short_string(), "");
  EXPECT_FALSE(key_of(1).is_zero());
  // base64(00 01 02 03) = "AAECAw==" -> derper shows "[AAECA]".
  testing::Buf raw(kKeyLen, std::byte{0});
  for (int i = 0; i < 4; ++i) raw[i] = static_cast<std::byte>(i);
  const auto k = NodePublic::from_raw(std::span<const std::byte, kKeyLen>(raw.data(), kKeyLen));
  EXPECT_EQ(k.short_string(), "[AAECA]");

  EXPECT_LT(key_of(1), key_of(2));
  EXPECT_EQ(key_of(7), key_of(7));
  EXPECT_NE(key_of(7), key_of(8));
  std::set<NodePublic> ordered{key_of(3), key_of(1), key_of(2)};
  EXPECT_EQ(*ordered.begin(), key_of(1));
}

TEST(NodePublic, HashIsConsistentAndSpreads) {
  EXPECT_EQ(std::hash<NodePublic>{}(key_of(9)), std::hash<NodePublic>{}(key_of(9)));
  std::unordered_set<std::size_t> hashes;
  std::unordered_set<NodePublic> keys;
  for (int i = 0; i < 256; ++i) {
    hashes.insert(key_of(i).hash());
    keys.insert(key_of(i));
  }
  EXPECT_EQ(keys.size(), 256u);
  EXPECT_EQ(hashes.size(), 256u);  // SipHash-2-4: 256 distinct inputs do not collide in 64 bits
  EXPECT_TRUE(keys.contains(key_of(200)));
}

TEST(NodePrivate, ParsesGoTextFormAndRoundTrips) {
  auto k = NodePrivate::parse(kGoPriv);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->data()[0], 0x40);
  EXPECT_EQ(k->data()[31], 0x69);
  EXPECT_EQ(k->to_text(), kGoPriv);
  EXPECT_EQ(NodePrivate::parse(kGoPub).error(), KeyError::kBadPrefix);
  EXPECT_EQ(NodePrivate::parse("privkey:abc").error(), KeyError::kBadLength);
}

TEST(NodePrivate, PublicKeyMatchesRfc7748Vector) {
  auto priv = NodePrivate::parse(std::string("privkey:") + std::string(kRfcAlicePriv));
  ASSERT_TRUE(priv.ok());
  EXPECT_EQ(priv->public_key().untyped_hex(), kRfcAlicePub);
}

TEST(NodePrivate, GenerateIsClampedRandomAndConsistent) {
  const NodePrivate a = NodePrivate::generate();
  const NodePrivate b = NodePrivate::generate();
  EXPECT_FALSE(a.is_zero());
  EXPECT_FALSE(a.equals(b));
  EXPECT_TRUE(a.equals(a));
  EXPECT_EQ(a.data()[0] & 7, 0);
  EXPECT_EQ(a.data()[31] & 0xc0, 0x40);
  unsigned char pub[crypto_box_PUBLICKEYBYTES];
  crypto_scalarmult_base(pub, a.data());
  EXPECT_EQ(std::memcmp(pub, a.public_key().data(), sizeof pub), 0);
  auto reparsed = NodePrivate::parse(a.to_text());
  ASSERT_TRUE(reparsed.ok());
  EXPECT_TRUE(reparsed->equals(a));
  EXPECT_NE(a.public_key(), b.public_key());
}

TEST(MeshKey, ParsesLikeDerperMeshPskFile) {
  // derpserver_test.go's testMeshKey.
  constexpr std::string_view kHex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  auto k = MeshKey::parse(kHex);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->to_hex(), kHex);
  EXPECT_EQ(k->data()[0], 0x01);
  EXPECT_FALSE(k->is_zero());

  auto trimmed = MeshKey::parse(std::string(" \t") + std::string(kHex) + "\r\n");
  ASSERT_TRUE(trimmed.ok());
  EXPECT_TRUE(trimmed->equals(*k));

  std::string upper(kHex);
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  auto up = MeshKey::parse(upper);
  ASSERT_TRUE(up.ok());
  EXPECT_TRUE(up->equals(*k));

  EXPECT_EQ(MeshKey::parse("badf00d").error(), KeyError::kBadLength);
  EXPECT_EQ(MeshKey::parse(kHex.substr(1)).error(), KeyError::kBadLength);
  std::string bad(kHex);
  bad[3] = 'x';
  EXPECT_EQ(MeshKey::parse(bad).error(), KeyError::kBadHex);
  std::string inner_space(kHex);
  inner_space[10] = ' ';
  EXPECT_EQ(MeshKey::parse(inner_space).error(), KeyError::kBadHex);

  auto other = MeshKey::parse("6d529e9d4ef632d22d4a4214cb49da8f1ba1b72697061fb24e312984c35ec8d8");
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->equals(*k));
  EXPECT_TRUE(MeshKey{}.is_zero());
}

TEST(KeyFile, ParsesDerperKeyFile) {
  const std::string file = std::string("{\n\t\"PrivateKey\": \"") + std::string(kGoPriv) + "\"\n}";
  auto k = parse_key_file(file);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->to_text(), kGoPriv);
  EXPECT_EQ(format_key_file(*k), file);  // the exact bytes derper writes

  // Go's encoding/json: field names case-insensitive, unknown fields ignored.
  auto lower = parse_key_file(std::string(R"({"extra":[1,{"PrivateKey":5}],"privatekey":")") + std::string(kGoPriv) + "\"}");
  ASSERT_TRUE(lower.ok());
  EXPECT_EQ(lower->to_text(), kGoPriv);
}

TEST(KeyFile, RejectsBadFiles) {
  EXPECT_EQ(parse_key_file("{}").error(), KeyError::kMissingKey);
  EXPECT_EQ(parse_key_file("null").error(), KeyError::kMissingKey);
  EXPECT_EQ(parse_key_file(R"({"PrivateKey":null})").error(), KeyError::kMissingKey);
  EXPECT_EQ(parse_key_file(R"({"PrivateKey":5})").error(), KeyError::kBadJson);
  EXPECT_EQ(parse_key_file(R"({"PrivateKey":"nodekey:00"})").error(), KeyError::kBadPrefix);
  EXPECT_EQ(parse_key_file(R"({"PrivateKey":"privkey:00"})").error(), KeyError::kBadLength);
  EXPECT_EQ(parse_key_file(std::string(R"({"PrivateKey":"privkey:)") + std::string(64, '0') + "\"}").error(),
            KeyError::kZeroKey);
  EXPECT_EQ(parse_key_file("").error(), KeyError::kBadJson);
  EXPECT_EQ(parse_key_file("[]").error(), KeyError::kBadJson);
  EXPECT_EQ(parse_key_file(std::string(R"({"PrivateKey":")") + std::string(kGoPriv) + "\"} x").error(),
            KeyError::kBadJson);
}

TEST(KeyFile, GeneratedKeyRoundTrips) {
  const NodePrivate k = NodePrivate::generate();
  auto back = parse_key_file(format_key_file(k));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->equals(k));
}

}  // namespace
}  // namespace derpd::protocol
