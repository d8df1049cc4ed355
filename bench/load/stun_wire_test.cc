// Fixtures: the Tailscale vectors come from Tailscale's own net/stun (v1.102.5) Request() and
// Response() with transaction ID a0 a1 .. ab; the coturn vector is a real answer captured from
// coturn 4.6.1 (turnserver -S) to that request sent from 127.0.0.1:40000. The client-side helpers
// run on the stun/ library, so these tests also check it against Tailscale's and coturn's bytes.
#include "bench/load/stun_wire.h"

#include "stun/builder.h"

#include <gtest/gtest.h>

#include <array>
#include <cctype>
#include <string>
#include <vector>

// Heap allocations made by this test binary so far (alloc_counter.cc replaces operator new).
std::size_t allocation_count();

namespace derpd::bench {
namespace {

std::vector<std::byte> unhex(const std::string& s) {
  std::vector<std::byte> out;
  for (std::size_t i = 0; i + 1 < s.size(); i += 2) {
    out.push_back(static_cast<std::byte>(std::stoul(s.substr(i, 2), nullptr, 16)));
  }
  return out;
}

std::array<std::byte, 12> test_id() {
  std::array<std::byte, 12> id;
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = static_cast<std::byte>(0xa0 + i);
  return id;
}
TxId test_txid() { return TxId::from_bytes(test_id()); }

const std::string kTailscaleRequest = "000100142112a442a0a1a2a3a4a5a6a7a8a9aaab802200087461696c6e6f64658028000428a54bbb";
const std::string kDerperResponseV4 = "0101000c2112a442a0a1a2a3a4a5a6a7a8a9aaab002000080001bd525e12a443";  // 127.0.0.1:40000
const std::string kDerperResponseV6 =
    "010100182112a442a0a1a2a3a4a5a6a7a8a9aaab002000140002bd522112a442a0a1a2a3a4a5a6a7a8a9aaaa";  // [::1]:40000
const std::string kCoturnResponse =
    "010100442112a442a0a1a2a3a4a5a6a7a8a9aaab002000080001bd525e12a4430001000800019c407f000001802b0008000187dd7f000001"
    "80220014436f7475726e2d342e362e312027476f7273742780280004da0ac439";

Endpoint ep(const char* text) { return *Endpoint::parse(text); }

TEST(StunWire, TailscaleRequestIsByteExact) {
  std::array<std::byte, kMaxRequestSize> buf{};
  const std::size_t n = build_request(RequestFormat::kTailscale, test_txid(), buf);
  ASSERT_EQ(n, 40u);
  EXPECT_EQ(std::vector<std::byte>(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n)), unhex(kTailscaleRequest));
}

TEST(StunWire, OtherRequestFormats) {
  std::array<std::byte, kMaxRequestSize> buf{};
  ASSERT_EQ(build_request(RequestFormat::kBare, test_txid(), buf), 20u);
  EXPECT_EQ(load_be16(buf.data() + 2), 0u);
  TxId tx;
  ASSERT_TRUE(peek_txid(Bytes(buf.data(), 20), tx));
  EXPECT_EQ(tx, test_txid());

  ASSERT_EQ(build_request(RequestFormat::kRfc8489, test_txid(), buf), 28u);
  EXPECT_EQ(load_be16(buf.data() + 2), 8u);
  EXPECT_EQ(load_be16(buf.data() + 20), 0x8028u);  // FINGERPRINT
  // Not a tailnode request: derper (and udp_echo_stun) ignore it.
  std::array<std::byte, 12> id{};
  EXPECT_FALSE(parse_tailnode_request(Bytes(buf.data(), 28), id));

  std::array<std::byte, 39> small{};
  EXPECT_EQ(build_request(RequestFormat::kTailscale, test_txid(), small), 0u);
}

TEST(StunWire, ParsesTailnodeRequestLikeDerper) {
  const auto req = unhex(kTailscaleRequest);
  std::array<std::byte, 12> tx{};
  ASSERT_TRUE(parse_tailnode_request(req, tx));
  EXPECT_EQ(tx, test_id());

  auto bad_fp = req;
  bad_fp.back() ^= std::byte{1};
  EXPECT_FALSE(parse_tailnode_request(bad_fp, tx));

  // Same shape with a correct fingerprint: only the SOFTWARE value decides.
  for (std::string_view software : {"tailnode", "Tailnode", "tailnod", "tailnode2"}) {
    std::array<std::byte, 64> buf{};
    stun::MessageBuilder b(buf, stun::MessageType::kBindingRequest, test_txid());
    b.add_software(software);
    b.add_fingerprint();
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(parse_tailnode_request(Bytes(buf.data(), b.size()), tx), software == "tailnode") << software;
  }
  // Fingerprint present but not last.
  {
    std::array<std::byte, 64> buf{};
    stun::MessageBuilder b(buf, stun::MessageType::kBindingRequest, test_txid());
    b.add_software("tailnode");
    b.add_fingerprint();
    b.add_software("x");
    EXPECT_FALSE(parse_tailnode_request(Bytes(buf.data(), b.size()), tx));
  }

  auto not_request = req;
  not_request[1] = std::byte{0x11};
  EXPECT_FALSE(parse_tailnode_request(not_request, tx));

  // An attribute whose length runs past the end.
  auto overrun = req;
  store_be16(overrun.data() + 22, 200);
  EXPECT_FALSE(parse_tailnode_request(overrun, tx));

  for (std::size_t len = 0; len < req.size(); ++len) {
    EXPECT_FALSE(parse_tailnode_request(Bytes(req.data(), len), tx)) << "prefix of " << len << " bytes";
  }
}

TEST(StunWire, DerperResponseIsByteExact) {
  std::array<std::byte, kMaxDerperResponseSize> buf{};
  std::size_t n = build_derper_response(test_id(), ep("127.0.0.1:40000"), buf);
  EXPECT_EQ(std::vector<std::byte>(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n)), unhex(kDerperResponseV4));
  n = build_derper_response(test_id(), ep("[::1]:40000"), buf);
  EXPECT_EQ(std::vector<std::byte>(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n)), unhex(kDerperResponseV6));
  std::array<std::byte, 31> small{};
  EXPECT_EQ(build_derper_response(test_id(), ep("127.0.0.1:1"), small), 0u);
}

TEST(StunWire, AcceptsValidResponses) {
  EXPECT_EQ(check_response(unhex(kDerperResponseV4), ep("127.0.0.1:40000"), {true}), Verdict::kOk);
  EXPECT_EQ(check_response(unhex(kDerperResponseV6), ep("[::1]:40000"), {true}), Verdict::kOk);
  EXPECT_EQ(check_response(unhex(kCoturnResponse), ep("127.0.0.1:40000"), {false}), Verdict::kOk);
}

struct BadCase {
  const char* name;
  std::string hex;
  const char* self;
  bool derper_format;
  Verdict want;
};

class CheckResponseRejects : public ::testing::TestWithParam<BadCase> {};

TEST_P(CheckResponseRejects, WithReason) {
  const auto& c = GetParam();
  EXPECT_EQ(check_response(unhex(c.hex), ep(c.self), {c.derper_format}), c.want) << c.name;
}

std::string with_byte(std::string hex, std::size_t index, const char* two) {
  hex.replace(index * 2, 2, two);
  return hex;
}

INSTANTIATE_TEST_SUITE_P(
    StunWire, CheckResponseRejects,
    ::testing::Values(
        BadCase{"wrong port", kDerperResponseV4, "127.0.0.1:40001", true, Verdict::kWrongAddress},
        BadCase{"wrong ip", kDerperResponseV4, "127.0.0.2:40000", true, Verdict::kWrongAddress},
        BadCase{"family mismatch", kDerperResponseV4, "[::1]:40000", true, Verdict::kWrongAddress},
        BadCase{"v6 wrong ip", kDerperResponseV6, "[::2]:40000", true, Verdict::kWrongAddress},
        BadCase{"coturn in strict mode", kCoturnResponse, "127.0.0.1:40000", true, Verdict::kNotDerperFormat},
        BadCase{"coturn bad fingerprint", with_byte(kCoturnResponse, 87, "00"), "127.0.0.1:40000", false,
                Verdict::kBadFingerprint},
        BadCase{"error response", with_byte(kDerperResponseV4, 1, "11"), "127.0.0.1:40000", false, Verdict::kNotSuccess},
        BadCase{"request echoed", kTailscaleRequest, "127.0.0.1:40000", false, Verdict::kNotSuccess},
        BadCase{"no cookie", with_byte(kDerperResponseV4, 4, "00"), "127.0.0.1:40000", false, Verdict::kNotStun},
        BadCase{"truncated header", kDerperResponseV4.substr(0, 30), "127.0.0.1:40000", false, Verdict::kNotStun},
        BadCase{"length too long", with_byte(kDerperResponseV4, 3, "10"), "127.0.0.1:40000", false, Verdict::kMalformed},
        BadCase{"length not /4", with_byte(kDerperResponseV4, 3, "0b"), "127.0.0.1:40000", false, Verdict::kMalformed},
        BadCase{"attr overrun", with_byte(kDerperResponseV4, 23, "0c"), "127.0.0.1:40000", false,
                Verdict::kMalformed},
        BadCase{"only 0x8020", with_byte(kDerperResponseV4, 20, "80"), "127.0.0.1:40000", false,
                Verdict::kNoXorMappedAddress},
        BadCase{"only mapped-address", with_byte(kDerperResponseV4, 21, "01"), "127.0.0.1:40000", false,
                Verdict::kNoXorMappedAddress},
        BadCase{"header only", "010100002112a442a0a1a2a3a4a5a6a7a8a9aaab", "127.0.0.1:40000", false,
                Verdict::kNoXorMappedAddress}),
    [](const ::testing::TestParamInfo<BadCase>& param_info) {
      std::string n = param_info.param.name;
      for (auto& ch : n)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return n;
    });

TEST(StunWire, PacketPathsDoNotAllocate) {
  const auto resp = unhex(kCoturnResponse);
  const auto req = unhex(kTailscaleRequest);
  const Endpoint self = ep("127.0.0.1:40000");
  std::array<std::byte, kMaxRequestSize> out{};
  std::array<std::byte, kMaxDerperResponseSize> reply{};
  const std::size_t before = allocation_count();
  std::array<std::byte, 12> tx{};
  int ok = 0;
  for (int i = 0; i < 100; ++i) {
    ok += build_request(RequestFormat::kTailscale, test_txid(), out) == 40;
    ok += parse_tailnode_request(req, tx);
    ok += build_derper_response(tx, self, reply) != 0;
    TxId peeked;
    ok += peek_txid(resp, peeked) && peeked == test_txid();
    ok += check_response(resp, self, {false}) == Verdict::kOk;
  }
  EXPECT_EQ(allocation_count(), before);
  EXPECT_EQ(ok, 500);
}

}  // namespace
}  // namespace derpd::bench
