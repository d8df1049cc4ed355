#include "stun/message.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <unordered_set>
#include <vector>

#include "stun/attributes.h"
#include "tests/unit/stun/vectors.h"

namespace derpd::stun {
namespace {

using test::hex;

std::vector<AttrType> types_of(const Message& m) {
  std::vector<AttrType> v;
  for (const Attribute& a : m.attributes()) v.push_back(a.type);
  return v;
}

TxId rfc5769_txid() {
  auto b = hex(test::kRfc5769TxId);
  return TxId::from_bytes(std::span<const std::byte, 12>(b.data(), 12));
}

TEST(MessageType, EncodesMethodAndClass) {
  EXPECT_EQ(make_type(kMethodBinding, MessageClass::kRequest), 0x0001);
  EXPECT_EQ(make_type(kMethodBinding, MessageClass::kIndication), 0x0011);
  EXPECT_EQ(make_type(kMethodBinding, MessageClass::kSuccessResponse), 0x0101);
  EXPECT_EQ(make_type(kMethodBinding, MessageClass::kErrorResponse), 0x0111);
  EXPECT_EQ(make_type(0x003, MessageClass::kRequest), 0x0003);  // TURN Allocate
  for (std::uint16_t method = 0; method < 0x1000; ++method) {
    for (auto c : {MessageClass::kRequest, MessageClass::kIndication, MessageClass::kSuccessResponse,
                   MessageClass::kErrorResponse}) {
      const std::uint16_t t = make_type(method, c);
      ASSERT_EQ(t & 0xC000, 0);
      ASSERT_EQ(method_of(t), method);
      ASSERT_EQ(class_of(t), c);
    }
  }
}

TEST(TxIdTest, CookieAndClassicForms) {
  TxId zero;
  EXPECT_TRUE(zero.has_cookie());
  EXPECT_EQ(std::to_integer<int>(zero.bytes16()[0]), 0x21);
  EXPECT_EQ(std::to_integer<int>(zero.bytes16()[3]), 0x42);

  std::array<std::byte, 12> id{};
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = std::byte(i + 1);
  TxId t = TxId::from_bytes(id);
  EXPECT_TRUE(t.has_cookie());
  EXPECT_EQ(0, std::memcmp(t.id().data(), id.data(), 12));
  EXPECT_NE(t, zero);

  std::array<std::byte, 16> classic{};
  classic[0] = std::byte{0x99};
  TxId c = TxId::from_classic_bytes(classic);
  EXPECT_FALSE(c.has_cookie());
  EXPECT_EQ(0, std::memcmp(c.bytes16().data(), classic.data(), 16));

  // 16 bytes that begin with the cookie are indistinguishable from an RFC 5389 id, by design.
  std::array<std::byte, 16> with_cookie{std::byte{0x21}, std::byte{0x12}, std::byte{0xA4}, std::byte{0x42}};
  with_cookie[15] = std::byte{7};
  EXPECT_TRUE(TxId::from_classic_bytes(with_cookie).has_cookie());

  std::unordered_set<TxId> set{zero, t, c};
  EXPECT_EQ(set.size(), 3u);
}

TEST(Rfc5769, SampleRequest) {
  auto d = hex(test::kRfc5769Request);
  ASSERT_EQ(d.size(), 108u);
  auto r = Message::parse(d);
  ASSERT_TRUE(r) << to_string(r.error());
  const Message& m = *r;
  EXPECT_EQ(m.type(), MessageType::kBindingRequest);
  EXPECT_EQ(m.method(), kMethodBinding);
  EXPECT_EQ(m.message_class(), MessageClass::kRequest);
  EXPECT_FALSE(m.is_classic());
  EXPECT_EQ(m.txid(), rfc5769_txid());
  EXPECT_TRUE(m.has_fingerprint());
  EXPECT_EQ(m.bytes().data(), d.data());  // a view, not a copy
  EXPECT_EQ(types_of(m), (std::vector<AttrType>{AttrType::kSoftware, static_cast<AttrType>(0x0024),
                                                static_cast<AttrType>(0x8029), AttrType::kUsername,
                                                AttrType::kMessageIntegrity, AttrType::kFingerprint}));
  EXPECT_EQ(decode_text(m.find(AttrType::kSoftware)->value), "STUN test client");
  EXPECT_EQ(decode_text(m.find(AttrType::kUsername)->value), "evtj:h6vY");  // padding excluded
  auto mi = m.find(AttrType::kMessageIntegrity);
  ASSERT_TRUE(mi);
  EXPECT_EQ(mi->value.size(), 20u);
  EXPECT_EQ(std::to_integer<int>(mi->value[0]), 0x9a);
  EXPECT_FALSE(m.find(AttrType::kXorMappedAddress));
  EXPECT_EQ(fingerprint(Bytes(d).first(d.size() - 8)), 0xe57a3bcfu);
}

TEST(Rfc5769, Ipv4Response) {
  auto d = hex(test::kRfc5769ResponseV4);
  auto r = Message::parse(d);
  ASSERT_TRUE(r) << to_string(r.error());
  EXPECT_EQ(r->type(), MessageType::kBindingSuccess);
  EXPECT_TRUE(r->has_fingerprint());
  EXPECT_EQ(r->txid(), rfc5769_txid());
  EXPECT_EQ(decode_text(r->find(AttrType::kSoftware)->value), "test vector");
  auto xa = decode_xor_address(r->find(AttrType::kXorMappedAddress)->value, r->txid());
  ASSERT_TRUE(xa);
  EXPECT_EQ(*xa, *Endpoint::parse("192.0.2.1:32853"));
}

TEST(Rfc5769, Ipv6Response) {
  auto d = hex(test::kRfc5769ResponseV6);
  auto r = Message::parse(d);
  ASSERT_TRUE(r) << to_string(r.error());
  EXPECT_TRUE(r->has_fingerprint());
  auto xa = decode_xor_address(r->find(AttrType::kXorMappedAddress)->value, r->txid());
  ASSERT_TRUE(xa);
  EXPECT_EQ(*xa, *Endpoint::parse("[2001:db8:1234:5678:11:2233:4455:6677]:32853"));
  // Decoding the same bytes as a plain address gives the XOR-ed form, not the address.
  auto plain = decode_address(r->find(AttrType::kXorMappedAddress)->value);
  ASSERT_TRUE(plain);
  EXPECT_NE(*plain, *xa);
}

// No single-bit change anywhere in the message passes as a fingerprinted message: it is caught
// by the CRC, or earlier by the length and attribute checks, or it stops being a message with a
// FINGERPRINT (a flipped attribute type, or a length that swallows the rest). Changing the cookie
// turns the message into a classic one, which has no fingerprint to check.
TEST(Rfc5769, AnyBitFlipIsDetected) {
  for (auto vec : {test::kRfc5769Request, test::kRfc5769ResponseV4, test::kRfc5769ResponseV6}) {
    const auto orig = hex(vec);
    int flips = 0, rejected = 0;
    for (std::size_t i = 0; i < orig.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        auto d = orig;
        d[i] ^= static_cast<std::byte>(1 << bit);
        auto r = Message::parse(d);
        if (i >= 4 && i < 8) {
          ASSERT_TRUE(r) << "byte " << i;
          EXPECT_TRUE(r->is_classic());
          EXPECT_FALSE(r->has_fingerprint());
        } else {
          EXPECT_TRUE(!r || !r->has_fingerprint()) << "byte " << i << " bit " << bit;
          if (!r) ++rejected;
          ++flips;
        }
      }
    }
    EXPECT_GT(rejected, flips * 9 / 10);  // nearly all are rejected outright
  }
}

struct BadCase {
  const char* name;
  std::vector<std::byte> bytes;
  ParseError want;
};

std::vector<std::byte> header(std::uint16_t type, std::uint16_t len, bool cookie = true) {
  std::vector<std::byte> d(20);
  store_be16(d.data(), type);
  store_be16(d.data() + 2, len);
  if (cookie) store_be32(d.data() + 4, kMagicCookie);
  for (int i = 8; i < 20; ++i) d[i] = std::byte(i);
  return d;
}

std::vector<std::byte> with_attr(std::vector<std::byte> d, std::uint16_t type, std::vector<std::byte> value,
                                 std::size_t pad_to = 4) {
  std::size_t off = d.size();
  d.resize(off + 4);
  store_be16(d.data() + off, type);
  store_be16(d.data() + off + 2, static_cast<std::uint16_t>(value.size()));
  d.insert(d.end(), value.begin(), value.end());
  while ((d.size() - 20) % pad_to != 0) d.push_back(std::byte{0});
  store_be16(d.data() + 2, static_cast<std::uint16_t>(d.size() - 20));
  return d;
}

class ParseErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(ParseErrors, Rejected) {
  const BadCase& c = GetParam();
  auto r = Message::parse(c.bytes);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), c.want) << to_string(r.error());
}

std::vector<BadCase> bad_cases() {
  std::vector<BadCase> v;
  v.push_back({"empty", {}, ParseError::kTooShort});
  {
    auto d = header(1, 0);
    d.resize(19);
    v.push_back({"header19", d, ParseError::kTooShort});
  }
  v.push_back({"top_bit", header(0x8001, 0), ParseError::kNotStun});
  v.push_back({"second_bit", header(0x4001, 0), ParseError::kNotStun});
  {
    auto d = header(1, 2);
    d.resize(22);
    v.push_back({"length_not_multiple_of_4", d, ParseError::kBadLength});
  }
  v.push_back({"length_beyond_datagram", header(1, 8), ParseError::kBadLength});
  {
    auto d = header(1, 0);
    d.resize(24);
    v.push_back({"trailing_bytes", d, ParseError::kBadLength});
  }
  {
    auto d = with_attr(header(1, 0), 0x8022, hex("41424344"));
    store_be16(d.data() + 22, 5);  // claims 5 (8 padded) but 4 remain
    v.push_back({"attribute_beyond_end", d, ParseError::kBadAttribute});
  }
  {
    auto d = with_attr(header(1, 0), 0x8022, hex("41424344"));
    store_be16(d.data() + 22, 0xFFFF);
    v.push_back({"attribute_length_ffff", d, ParseError::kBadAttribute});
  }
  {
    // FINGERPRINT valid for what precedes it (with the final length), then another attribute.
    auto d = with_attr(header(1, 0), 0x8028, hex("00000000"));
    d = with_attr(d, 0x8022, hex("41424344"));
    store_be32(d.data() + 24, fingerprint(Bytes(d).first(20)));
    v.push_back({"fingerprint_not_last", d, ParseError::kFingerprintNotLast});
  }
  {
    auto d = with_attr(header(1, 0), 0x8028, hex("0000000000000000"));
    v.push_back({"fingerprint_size_8", d, ParseError::kBadFingerprint});
  }
  {
    auto d = with_attr(header(1, 0), 0x8028, hex("deadbeef"));
    v.push_back({"fingerprint_wrong", d, ParseError::kBadFingerprint});
  }
  {
    // A fingerprint computed before the length field counted it (a classic mistake).
    auto d = header(1, 0);
    const std::uint32_t early = fingerprint(d);
    d = with_attr(d, 0x8028, hex("00000000"));
    store_be32(d.data() + 24, early);
    v.push_back({"fingerprint_over_wrong_length", d, ParseError::kBadFingerprint});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(Stun, ParseErrors, ::testing::ValuesIn(bad_cases()),
                         [](const auto& i) { return std::string(i.param.name); });

TEST(MessageParse, MinimalAndClassic) {
  auto bare = header(1, 0);
  auto r = Message::parse(bare);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->has_fingerprint());
  EXPECT_EQ(r->attributes().begin(), std::default_sentinel);

  auto classic = header(1, 0, /*cookie=*/false);
  auto c = Message::parse(classic);
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->is_classic());
  EXPECT_EQ(0, std::memcmp(c->txid().bytes16().data(), classic.data() + 4, 16));

  // In a classic message 0x8028 is an ordinary optional attribute: not checked.
  auto cfp = with_attr(header(1, 0, false), 0x8028, hex("deadbeef"));
  auto cf = Message::parse(cfp);
  ASSERT_TRUE(cf);
  EXPECT_FALSE(cf->has_fingerprint());
}

TEST(MessageParse, AttributePaddingAndZeroLength) {
  auto d = with_attr(header(1, 0), 0x8022, hex("616263"));  // "abc" + 1 pad byte
  d = with_attr(d, 0x0026, {});                              // zero-length PADDING
  d = with_attr(d, 0x8022, hex("6465666768"));               // "defgh" + 3 pad
  auto r = Message::parse(d);
  ASSERT_TRUE(r) << to_string(r.error());
  std::vector<std::string_view> texts;
  std::size_t n = 0;
  for (const Attribute& a : r->attributes()) {
    ++n;
    if (a.type == AttrType::kSoftware) texts.push_back(decode_text(a.value));
    if (a.type == AttrType::kPadding) {
      EXPECT_TRUE(a.value.empty());
    }
  }
  EXPECT_EQ(n, 3u);
  EXPECT_EQ(texts, (std::vector<std::string_view>{"abc", "defgh"}));
  EXPECT_EQ(decode_text(r->find(AttrType::kSoftware)->value), "abc");  // first wins
}

TEST(AttributeIteratorTest, StopsOnTruncation) {
  auto d = hex("80220008 41424344");  // claims 8, has 4
  AttributeIterator it{Bytes(d)};
  EXPECT_EQ(it, std::default_sentinel);
  EXPECT_TRUE(it.truncated());

  auto d2 = hex("80220004 41424344 8022");  // good attribute, then 2 stray bytes
  AttributeIterator it2{Bytes(d2)};
  ASSERT_NE(it2, std::default_sentinel);
  EXPECT_EQ(decode_text(it2->value), "ABCD");
  ++it2;
  EXPECT_EQ(it2, std::default_sentinel);
  EXPECT_TRUE(it2.truncated());

  AttributeIterator empty{Bytes{}};
  EXPECT_EQ(empty, std::default_sentinel);
  EXPECT_FALSE(empty.truncated());
}

TEST(LooksLikeStun, CookieCheck) {
  EXPECT_TRUE(looks_like_stun(header(1, 0)));
  EXPECT_FALSE(looks_like_stun(header(1, 0, false)));
  EXPECT_FALSE(looks_like_stun(header(0x8001, 0)));
  auto h = header(1, 0);
  EXPECT_FALSE(looks_like_stun(Bytes(h).first(19)));
}

}  // namespace
}  // namespace derpd::stun
