#include "stun/attributes.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "stun/builder.h"
#include "tests/unit/stun/vectors.h"

namespace derpd::stun {
namespace {

using test::hex;

TEST(DecodeAddress, Ipv4AndIpv6) {
  auto v4 = decode_address(hex("0001 0d96 c0000201"));  // 192.0.2.1:3478
  ASSERT_TRUE(v4);
  EXPECT_EQ(*v4, *Endpoint::parse("192.0.2.1:3478"));

  auto v6 = decode_address(hex("0002 0050 20010db8 00000000 00000000 00000001"));
  ASSERT_TRUE(v6);
  EXPECT_EQ(*v6, *Endpoint::parse("[2001:db8::1]:80"));

  // ::ffff:10.0.0.1 comes back as IPv4.
  auto mapped = decode_address(hex("0002 0050 00000000 00000000 0000ffff 0a000001"));
  ASSERT_TRUE(mapped);
  EXPECT_TRUE(mapped->addr.is_v4());
  EXPECT_EQ(*mapped, *Endpoint::parse("10.0.0.1:80"));
}

TEST(DecodeAddress, Rejects) {
  EXPECT_EQ(decode_address(hex("")).error(), AttrError::kBadLength);
  EXPECT_EQ(decode_address(hex("0001 0d96")).error(), AttrError::kBadLength);
  EXPECT_EQ(decode_address(hex("0001 0d96 c00002")).error(), AttrError::kBadLength);
  EXPECT_EQ(decode_address(hex("0001 0d96 c0000201 00000000")).error(), AttrError::kBadLength);
  EXPECT_EQ(decode_address(hex("0002 0d96 c0000201")).error(), AttrError::kBadLength);  // v6 family, v4 size
  EXPECT_EQ(decode_address(hex("0003 0d96 c0000201")).error(), AttrError::kBadFamily);
  EXPECT_EQ(decode_address(hex("0000 0d96 c0000201")).error(), AttrError::kBadFamily);
}

TEST(DecodeXorAddress, UsesCookieAndTxid) {
  const TxId txid = test::txid_1_to_12();
  // 192.0.2.1:32853: port 0x8055 ^ 0x2112 = 0xa147; c0 00 02 01 ^ 21 12 a4 42 = e1 12 a6 43.
  auto v4 = decode_xor_address(hex("0001 a147 e112a643"), txid);
  ASSERT_TRUE(v4);
  EXPECT_EQ(*v4, *Endpoint::parse("192.0.2.1:32853"));
  // IPv6: the last 12 bytes are XOR-ed with the txid 01..0c.
  // 2001:0db8:0000:0000:0000:0000:0000:0001 ^ 2112a442 0102030405060708090a0b0c
  auto v6 = decode_xor_address(hex("0002 a147 0113a9fa 01020304 05060708 090a0b0d"), txid);
  ASSERT_TRUE(v6);
  EXPECT_EQ(*v6, *Endpoint::parse("[2001:db8::1]:32853"));
  EXPECT_EQ(decode_xor_address(hex("0004 a147 e112a643"), txid).error(), AttrError::kBadFamily);
}

TEST(DecodeChangeRequest, FlagsAndLength) {
  EXPECT_EQ(*decode_change_request(hex("00000000")), (ChangeRequest{false, false}));
  EXPECT_EQ(*decode_change_request(hex("00000004")), (ChangeRequest{true, false}));
  EXPECT_EQ(*decode_change_request(hex("00000002")), (ChangeRequest{false, true}));
  EXPECT_EQ(*decode_change_request(hex("00000006")), (ChangeRequest{true, true}));
  EXPECT_EQ(*decode_change_request(hex("fffffff9")), (ChangeRequest{false, false}));  // other bits ignored
  EXPECT_EQ(decode_change_request(hex("000006")).error(), AttrError::kBadLength);
  EXPECT_EQ(decode_change_request(hex("0000000600000000")).error(), AttrError::kBadLength);
  EXPECT_EQ((ChangeRequest{true, true}).bits(), 6u);
}

TEST(DecodeResponsePort, Values) {
  EXPECT_EQ(*decode_response_port(hex("15b3 0000")), 5555);
  EXPECT_EQ(*decode_response_port(hex("15b3 ffff")), 5555);  // padding bits ignored
  EXPECT_EQ(decode_response_port(hex("0000 0000")).error(), AttrError::kBadValue);
  EXPECT_EQ(decode_response_port(hex("15b3")).error(), AttrError::kBadLength);
}

TEST(DecodeErrorCode, ClassNumberReason) {
  const auto value = hex("00000414 556e6b6e 6f776e");  // 420 "Unknown"; the result aliases it
  auto e = decode_error_code(value);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, 420);
  EXPECT_EQ(e->reason, "Unknown");
  EXPECT_EQ(decode_error_code(hex("00000300"))->code, 300);
  EXPECT_EQ(decode_error_code(hex("00000663"))->code, 699);
  EXPECT_EQ(decode_error_code(hex("00000200")).error(), AttrError::kBadValue);
  EXPECT_EQ(decode_error_code(hex("00000464")).error(), AttrError::kBadValue);  // number 100
  EXPECT_EQ(decode_error_code(hex("000004")).error(), AttrError::kBadLength);
}

TEST(DecodeUnknownAttributes, List) {
  const auto value = hex("0024 0003 8029");  // the view aliases it
  auto u = decode_unknown_attributes(value);
  ASSERT_TRUE(u);
  ASSERT_EQ(u->size(), 3u);
  EXPECT_EQ((*u)[0], 0x0024);
  EXPECT_EQ((*u)[2], 0x8029);
  EXPECT_EQ(decode_unknown_attributes(hex("002400")).error(), AttrError::kBadLength);
}

TEST(ReasonPhrase, Known) {
  EXPECT_EQ(reason_phrase(420), "Unknown Attribute");
  EXPECT_EQ(reason_phrase(400), "Bad Request");
}

}  // namespace
}  // namespace derpd::stun
