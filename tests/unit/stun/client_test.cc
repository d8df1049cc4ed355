#include "stun/client.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "stun/builder.h"
#include "tests/unit/stun/vectors.h"

namespace derpd::stun {
namespace {

using test::hex;
using test::txid_1_to_12;

std::vector<std::byte> build(const TxId& txid, const BindingRequestOptions& o) {
  std::array<std::byte, 2048> buf{};
  const std::size_t n = build_binding_request(txid, o, buf);
  return {buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n)};
}

// Tailscale's net/stun Request(txid) for txid 01..0c, assembled from the spec:
//   0001 0014            Binding request, 20 bytes of attributes (12 SOFTWARE + 8 FINGERPRINT)
//   2112a442             magic cookie
//   0102...0c            transaction id
//   8022 0008 "tailnode" SOFTWARE, 8 bytes, no padding needed
//   8028 0004 b32c370f   FINGERPRINT = CRC-32(first 32 bytes) ^ 0x5354554e
// The CRC constant was computed independently of this code base (IEEE CRC-32 of the 32 bytes).
TEST(TailnodeRequest, ExactBytes) {
  const auto want = hex(
      "0001 0014 2112a442 01020304 05060708 090a0b0c"
      "8022 0008 7461696c 6e6f6465"
      "8028 0004 b32c370f");
  ASSERT_EQ(want.size(), kTailnodeRequestSize);
  BindingRequestOptions o;
  o.form = RequestForm::kTailnode;
  o.software = "ignored";
  o.change_request = ChangeRequest{true, true};  // ignored in this form
  EXPECT_EQ(build(txid_1_to_12(), o), want);
  // The CRC agrees with our own fingerprint().
  EXPECT_EQ(fingerprint(Bytes(want).first(32)), 0xb32c370fu);
}

TEST(BuildRequest, Rfc8489Options) {
  const TxId txid = txid_1_to_12();
  BindingRequestOptions o;  // defaults: SOFTWARE "derpd" + FINGERPRINT
  auto d = build(txid, o);
  auto m = Message::parse(d);
  ASSERT_TRUE(m) << to_string(m.error());
  EXPECT_EQ(m->type(), MessageType::kBindingRequest);
  EXPECT_EQ(m->txid(), txid);
  EXPECT_TRUE(m->has_fingerprint());
  EXPECT_EQ(decode_text(m->find(AttrType::kSoftware)->value), "derpd");
  EXPECT_EQ(d.size(), 20u + 12 + 8);

  o.software = {};
  o.fingerprint = false;
  EXPECT_EQ(build(txid, o), hex("0001 0000 2112a442 01020304 05060708 090a0b0c"));

  o.change_request = ChangeRequest{false, true};
  o.response_port = 4000;
  o.padding = 30;
  o.fingerprint = true;
  d = build(txid, o);
  m = Message::parse(d);
  ASSERT_TRUE(m);
  EXPECT_EQ(*decode_change_request(m->find(AttrType::kChangeRequest)->value), (ChangeRequest{false, true}));
  EXPECT_EQ(*decode_response_port(m->find(AttrType::kResponsePort)->value), 4000);
  EXPECT_EQ(m->find(AttrType::kPadding)->value.size(), 32u);
  EXPECT_TRUE(m->has_fingerprint());

  // Present even with no flags set.
  o = {};
  o.change_request = ChangeRequest{};
  m = Message::parse(d = build(txid, o));
  ASSERT_TRUE(m);
  EXPECT_EQ(*decode_change_request(m->find(AttrType::kChangeRequest)->value), ChangeRequest{});
}

TEST(BuildRequest, Classic) {
  std::array<std::byte, 16> id{};
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = std::byte(0xB0 + i);
  const TxId classic = TxId::from_classic_bytes(id);
  BindingRequestOptions o;
  o.form = RequestForm::kClassic;
  EXPECT_EQ(build(classic, o), hex("0001 0000 b0b1b2b3 b4b5b6b7 b8b9babb bcbdbebf"));
  o.change_request = ChangeRequest{true, true};
  EXPECT_EQ(build(classic, o), hex("0001 0008 b0b1b2b3 b4b5b6b7 b8b9babb bcbdbebf 00030004 00000006"));
}

TEST(BuildRequest, TxidMustFitTheForm) {
  std::array<std::byte, 16> id{};
  id[0] = std::byte{1};
  BindingRequestOptions o;
  o.form = RequestForm::kClassic;
  EXPECT_TRUE(build(txid_1_to_12(), o).empty());
  o.form = RequestForm::kRfc8489;
  EXPECT_TRUE(build(TxId::from_classic_bytes(id), o).empty());
  o.form = RequestForm::kTailnode;
  EXPECT_TRUE(build(TxId::from_classic_bytes(id), o).empty());
}

TEST(BuildRequest, TooSmallBuffer) {
  std::array<std::byte, 39> small{};
  BindingRequestOptions o;
  o.form = RequestForm::kTailnode;
  EXPECT_EQ(build_binding_request(txid_1_to_12(), o, small), 0u);
  std::array<std::byte, 40> exact{};
  EXPECT_EQ(build_binding_request(txid_1_to_12(), o, exact), 40u);
}

TEST(NewTxId, RandomAndWellFormed) {
  const TxId a = new_txid(), b = new_txid();
  EXPECT_TRUE(a.has_cookie());
  EXPECT_NE(a, b);  // 2^-96 chance of a false failure
  const TxId c = new_classic_txid();
  EXPECT_FALSE(c.has_cookie());
  EXPECT_NE(c, new_classic_txid());
}

TEST(ParseResponse, Rfc5769Vectors) {
  auto v4 = hex(test::kRfc5769ResponseV4);
  auto r = parse_binding_response(v4);
  ASSERT_TRUE(r) << to_string(r.error());
  EXPECT_FALSE(r->is_error);
  EXPECT_FALSE(r->classic);
  EXPECT_TRUE(r->fingerprint);
  EXPECT_EQ(r->mapped_from, MappedFrom::kXorMapped);
  EXPECT_EQ(*r->mapped, *Endpoint::parse("192.0.2.1:32853"));
  EXPECT_EQ(r->software, "test vector");
  EXPECT_FALSE(r->response_origin);

  auto v6 = hex(test::kRfc5769ResponseV6);
  auto r6 = parse_binding_response(v6);
  ASSERT_TRUE(r6);
  EXPECT_EQ(*r6->mapped, *Endpoint::parse("[2001:db8:1234:5678:11:2233:4455:6677]:32853"));
  auto id = hex(test::kRfc5769TxId);
  EXPECT_EQ(r6->txid, TxId::from_bytes(std::span<const std::byte, 12>(id.data(), 12)));
}

// A Tailscale derper response for txid 01..0c and 192.0.2.1:32853 (header + XOR-MAPPED-ADDRESS).
TEST(ParseResponse, DerperStyle) {
  auto d = hex("0101 000c 2112a442 01020304 05060708 090a0b0c 0020 0008 0001 a147 e112a643");
  auto r = parse_binding_response(d);
  ASSERT_TRUE(r) << to_string(r.error());
  EXPECT_EQ(r->txid, txid_1_to_12());
  EXPECT_FALSE(r->fingerprint);
  EXPECT_EQ(*r->mapped, *Endpoint::parse("192.0.2.1:32853"));
}

TEST(ParseResponse, AddressPrecedenceAndRfc5780Fields) {
  const TxId txid = txid_1_to_12();
  const Endpoint xor_ep = *Endpoint::parse("198.51.100.1:1000");
  const Endpoint alt_ep = *Endpoint::parse("198.51.100.2:2000");
  const Endpoint plain_ep = *Endpoint::parse("198.51.100.3:3000");
  std::array<std::byte, 600> buf{};
  {
    // A Vovida-style answer: MAPPED, SOURCE, CHANGED, XOR at 0x8020, SOFTWARE.
    MessageBuilder b(buf, MessageType::kBindingSuccess, txid);
    b.add_address(AttrType::kMappedAddress, plain_ep);
    b.add_address(AttrType::kSourceAddress, *Endpoint::parse("203.0.113.1:3478"));
    b.add_address(AttrType::kChangedAddress, *Endpoint::parse("203.0.113.2:3479"));
    b.add_xor_address(AttrType::kXorMappedAddressAlt, alt_ep);
    b.add_software("Vovida.org 0.96");
    auto r = parse_binding_response(Bytes(buf).first(b.size()));
    ASSERT_TRUE(r) << to_string(r.error());
    EXPECT_EQ(r->mapped_from, MappedFrom::kXorMappedAlt);
    EXPECT_EQ(*r->mapped, alt_ep);
    EXPECT_EQ(*r->source_address, *Endpoint::parse("203.0.113.1:3478"));
    EXPECT_EQ(*r->changed_address, *Endpoint::parse("203.0.113.2:3479"));
    EXPECT_EQ(r->software, "Vovida.org 0.96");
  }
  {
    MessageBuilder b(buf, MessageType::kBindingSuccess, txid);
    b.add_xor_address(AttrType::kXorMappedAddressAlt, alt_ep);
    b.add_address(AttrType::kMappedAddress, plain_ep);
    b.add_xor_address(AttrType::kXorMappedAddress, xor_ep);
    b.add_address(AttrType::kResponseOrigin, *Endpoint::parse("203.0.113.2:3478"));
    b.add_address(AttrType::kOtherAddress, *Endpoint::parse("203.0.113.2:3479"));
    b.add_fingerprint();
    auto r = parse_binding_response(Bytes(buf).first(b.size()));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->mapped_from, MappedFrom::kXorMapped);
    EXPECT_EQ(*r->mapped, xor_ep);
    EXPECT_EQ(*r->response_origin, *Endpoint::parse("203.0.113.2:3478"));
    EXPECT_EQ(*r->other_address, *Endpoint::parse("203.0.113.2:3479"));
    EXPECT_TRUE(r->fingerprint);
  }
  {
    // Classic server: MAPPED only, 16-byte id.
    std::array<std::byte, 16> id{};
    id[0] = std::byte{0x55};
    MessageBuilder b(buf, MessageType::kBindingSuccess, TxId::from_classic_bytes(id));
    b.add_address(AttrType::kMappedAddress, plain_ep);
    auto r = parse_binding_response(Bytes(buf).first(b.size()));
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->classic);
    EXPECT_EQ(r->mapped_from, MappedFrom::kMapped);
    EXPECT_EQ(*r->mapped, plain_ep);
  }
}

TEST(ParseResponse, ErrorResponse) {
  std::array<std::byte, 600> buf{};
  MessageBuilder b(buf, MessageType::kBindingError, txid_1_to_12());
  b.add_error_code(420, "Unknown Attribute");
  const std::array<std::uint16_t, 2> types{0x0003, 0x0024};
  b.add_unknown_attributes(types, false);
  b.add_fingerprint();
  auto r = parse_binding_response(Bytes(buf).first(b.size()));
  ASSERT_TRUE(r) << to_string(r.error());
  EXPECT_TRUE(r->is_error);
  EXPECT_EQ(r->error_code, 420);
  EXPECT_EQ(r->error_reason, "Unknown Attribute");
  ASSERT_EQ(r->unknown_count, 2u);
  EXPECT_EQ(r->unknown[0], 0x0003);
  EXPECT_EQ(r->unknown[1], 0x0024);
  EXPECT_FALSE(r->mapped);
}

TEST(ParseResponse, Rejects) {
  const TxId txid = txid_1_to_12();
  std::array<std::byte, 600> buf{};
  auto one = [&](MessageType t, auto&& fill) {
    MessageBuilder b(buf, t, txid);
    fill(b);
    return parse_binding_response(Bytes(buf).first(b.size()));
  };
  EXPECT_EQ(parse_binding_response(hex("")).error(), ResponseError::kNotStun);
  EXPECT_EQ(parse_binding_response(hex("ffff0000 2112a442 00000000 00000000 00000000")).error(),
            ResponseError::kNotStun);
  EXPECT_EQ(parse_binding_response(hex("01010004 2112a442 00000000 00000000 00000000")).error(),
            ResponseError::kMalformed);
  EXPECT_EQ(one(MessageType::kBindingSuccess,
                [](MessageBuilder& b) {
                  b.add(AttrType::kFingerprint, hex("00000000"));
                })
                .error(),
            ResponseError::kBadFingerprint);
  EXPECT_EQ(one(MessageType::kBindingRequest, [](MessageBuilder&) {}).error(), ResponseError::kNotBindingResponse);
  EXPECT_EQ(one(MessageType::kBindingIndication, [](MessageBuilder&) {}).error(),
            ResponseError::kNotBindingResponse);
  EXPECT_EQ(one(static_cast<MessageType>(make_type(0x003, MessageClass::kSuccessResponse)), [](MessageBuilder&) {})
                .error(),
            ResponseError::kNotBindingResponse);
  EXPECT_EQ(one(MessageType::kBindingSuccess, [](MessageBuilder& b) { b.add_software("x"); }).error(),
            ResponseError::kNoMappedAddress);
  EXPECT_EQ(one(MessageType::kBindingSuccess,
                [](MessageBuilder& b) { b.add(AttrType::kXorMappedAddress, hex("0003 a147 e112a643")); })
                .error(),
            ResponseError::kBadAttribute);
  EXPECT_EQ(one(MessageType::kBindingSuccess,
                [](MessageBuilder& b) {
                  b.add_address(AttrType::kMappedAddress, *Endpoint::parse("192.0.2.1:1"));
                  b.add(AttrType::kOtherAddress, hex("0001 0d96"));
                })
                .error(),
            ResponseError::kBadAttribute);
  EXPECT_EQ(one(MessageType::kBindingError, [](MessageBuilder& b) { b.add_software("x"); }).error(),
            ResponseError::kNoErrorCode);
  EXPECT_EQ(one(MessageType::kBindingError, [](MessageBuilder& b) { b.add(AttrType::kErrorCode, hex("00000100")); })
                .error(),
            ResponseError::kNoErrorCode);
}

TEST(RetransmitScheduleTest, Rfc8489Defaults) {
  RetransmitSchedule s;
  const std::array<long, 7> want{0, 500, 1500, 3500, 7500, 15500, 31500};
  for (int i = 0; i < 7; ++i) EXPECT_EQ(s.send_at(i).count(), want[static_cast<std::size_t>(i)]) << i;
  EXPECT_EQ(s.deadline().count(), 39500);
  RetransmitSchedule fast{std::chrono::milliseconds(100), 3, 2};
  EXPECT_EQ(fast.send_at(2).count(), 300);
  EXPECT_EQ(fast.deadline().count(), 500);
}

}  // namespace
}  // namespace derpd::stun
