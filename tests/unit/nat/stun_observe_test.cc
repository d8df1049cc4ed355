#include "client/nat/stun_observe.h"

#include <gtest/gtest.h>

#include <array>

#include "stun/builder.h"
#include "stun/message.h"

namespace derpd::nat {
namespace {

Endpoint ep(const char* t) { return *Endpoint::parse(t); }

TEST(StunObserve, RequestCarriesChangeRequestOnlyWhenAsked) {
  const stun::TxId txid = stun::new_txid();
  std::array<std::byte, 256> buf{};
  for (ChangeFlags f : {ChangeFlags{}, ChangeFlags{true, true}, ChangeFlags{false, true}, ChangeFlags{true, false}}) {
    const std::size_t n = build_test_request(txid, f, buf);
    ASSERT_GT(n, stun::kHeaderSize);
    auto m = stun::Message::parse(Bytes(buf.data(), n));
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->type(), stun::MessageType::kBindingRequest);
    EXPECT_EQ(m->txid(), txid);
    EXPECT_TRUE(m->has_fingerprint());
    const auto cr = m->find(stun::AttrType::kChangeRequest);
    ASSERT_EQ(cr.has_value(), f.any());
    if (cr) {
      auto flags = stun::decode_change_request(cr->value);
      ASSERT_TRUE(flags.ok());
      EXPECT_EQ(flags->change_ip, f.ip);
      EXPECT_EQ(flags->change_port, f.port);
    }
  }
  std::array<std::byte, 8> tiny{};
  EXPECT_EQ(build_test_request(txid, {}, tiny), 0u);
}

TEST(StunObserve, SuccessResponse) {
  const stun::TxId txid = stun::new_txid();
  std::array<std::byte, 256> buf{};
  stun::MessageBuilder b(buf, stun::MessageType::kBindingSuccess, txid);
  b.add_xor_address(stun::AttrType::kXorMappedAddress, ep("192.0.2.1:40000"));
  b.add_address(stun::AttrType::kResponseOrigin, ep("203.0.113.11:3479"));
  b.add_address(stun::AttrType::kOtherAddress, ep("203.0.113.10:3478"));
  b.add_fingerprint();
  ASSERT_TRUE(b.ok());

  TestRecord t;
  auto st = record_response(t, txid, Bytes(buf.data(), b.size()), ep("203.0.113.11:3479"), std::chrono::microseconds(1234));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(t.outcome, Outcome::kReply);
  EXPECT_EQ(t.mapped, ep("192.0.2.1:40000"));
  EXPECT_EQ(t.response_origin, ep("203.0.113.11:3479"));
  EXPECT_EQ(t.other_address, ep("203.0.113.10:3478"));
  EXPECT_EQ(t.source, ep("203.0.113.11:3479"));
  EXPECT_EQ(t.rtt, std::chrono::microseconds(1234));
}

TEST(StunObserve, ClassicResponseFallsBackToSourceAndChangedAddress) {
  std::array<std::byte, 16> id{};
  id[0] = std::byte{0x11};  // not the magic cookie
  const stun::TxId txid = stun::TxId::from_classic_bytes(id);
  std::array<std::byte, 256> buf{};
  stun::MessageBuilder b(buf, stun::MessageType::kBindingSuccess, txid);
  b.add_address(stun::AttrType::kMappedAddress, ep("192.0.2.1:40000"));
  b.add_address(stun::AttrType::kSourceAddress, ep("203.0.113.10:3478"));
  b.add_address(stun::AttrType::kChangedAddress, ep("203.0.113.11:3479"));
  ASSERT_TRUE(b.ok());
  TestRecord t;
  ASSERT_TRUE(record_response(t, txid, Bytes(buf.data(), b.size()), ep("203.0.113.10:3478"), {}).ok());
  EXPECT_EQ(t.mapped, ep("192.0.2.1:40000"));
  EXPECT_EQ(t.response_origin, ep("203.0.113.10:3478"));
  EXPECT_EQ(t.other_address, ep("203.0.113.11:3479"));
}

TEST(StunObserve, ErrorResponse) {
  const stun::TxId txid = stun::new_txid();
  std::array<std::byte, 256> buf{};
  stun::MessageBuilder b(buf, stun::MessageType::kBindingError, txid);
  b.add_error_code(420, "Unknown Attribute");
  const std::uint16_t unknown[] = {0x0003};
  b.add_unknown_attributes(unknown, false);
  b.add_fingerprint();
  ASSERT_TRUE(b.ok());
  TestRecord t;
  ASSERT_TRUE(record_response(t, txid, Bytes(buf.data(), b.size()), ep("198.51.100.30:3478"), {}).ok());
  EXPECT_EQ(t.outcome, Outcome::kErrorReply);
  EXPECT_EQ(t.error_code, 420);
  EXPECT_FALSE(t.mapped);
}

TEST(StunObserve, StrayDatagramsLeaveTheRecordAlone) {
  const stun::TxId txid = stun::new_txid();
  std::array<std::byte, 256> buf{};
  stun::MessageBuilder b(buf, stun::MessageType::kBindingSuccess, stun::new_txid());  // another id
  b.add_xor_address(stun::AttrType::kXorMappedAddress, ep("192.0.2.1:40000"));
  ASSERT_TRUE(b.ok());
  TestRecord t;
  auto st = record_response(t, txid, Bytes(buf.data(), b.size()), ep("203.0.113.10:3478"), {});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error(), RecordError::kWrongTransaction);
  EXPECT_EQ(t.outcome, Outcome::kTimeout);
  EXPECT_FALSE(t.mapped);

  // Our own request echoed back, truncated bytes, and garbage are not responses.
  std::array<std::byte, 256> req{};
  const std::size_t n = build_test_request(txid, {}, req);
  for (std::size_t len : {n, n - 1, std::size_t{3}, std::size_t{0}}) {
    auto r = record_response(t, txid, Bytes(req.data(), len), ep("203.0.113.10:3478"), {});
    ASSERT_FALSE(r.ok()) << len;
    EXPECT_EQ(r.error(), RecordError::kNotAResponse) << len;
  }
  EXPECT_EQ(t.outcome, Outcome::kTimeout);
}

}  // namespace
}  // namespace derpd::nat
