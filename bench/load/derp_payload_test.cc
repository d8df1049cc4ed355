#include "bench/load/derp_payload.h"

#include <gtest/gtest.h>

#include <vector>

namespace derpd::bench {
namespace {

constexpr std::uint32_t kTag = 0xD1ABCDEF;

std::vector<std::byte> packet(std::size_t size, std::uint64_t seq) {
  std::vector<std::byte> p(size, std::byte{0x55});
  EXPECT_TRUE(write_payload(p, PayloadHeader{kTag, 7, seq, 123456789012345ull, 1}));
  return p;
}

TEST(DerpPayload, RoundTripsEveryField) {
  for (std::size_t size : {kPayloadMin, std::size_t{100}, std::size_t{1400}, std::size_t{65536}}) {
    auto p = packet(size, 0x0102030405060708ull);
    PayloadHeader h;
    ASSERT_EQ(read_payload(p, kTag, h), PayloadVerdict::kOk) << size;
    EXPECT_EQ(h.run_tag, kTag);
    EXPECT_EQ(h.sender, 7u);
    EXPECT_EQ(h.seq, 0x0102030405060708ull);
    EXPECT_EQ(h.sent_ns, 123456789012345ull);
    EXPECT_EQ(h.phase, 1);
    // Filler between the header and the tail is zero: the old contents are gone.
    for (std::size_t i = 25; i < size - 8; ++i) ASSERT_EQ(p[i], std::byte{0}) << i;
  }
}

TEST(DerpPayload, NeverLooksLikeDisco) {
  auto p = packet(100, 1);
  // Tailscale's disco magic starts "TS\xf0\x9f"; a relay treats such packets differently.
  EXPECT_NE(p[0], std::byte{'T'});
}

TEST(DerpPayload, RefusesShortForeignAndCorrupt) {
  std::vector<std::byte> small(kPayloadMin - 1);
  EXPECT_FALSE(write_payload(small, PayloadHeader{kTag, 0, 0, 0, 0}));
  PayloadHeader h;
  EXPECT_EQ(read_payload(small, kTag, h), PayloadVerdict::kTooShort);

  auto p = packet(200, 42);
  EXPECT_EQ(read_payload(p, kTag + 1, h), PayloadVerdict::kForeign);

  auto tail = p;
  tail.back() ^= std::byte{1};  // the repeated sequence number no longer matches
  EXPECT_EQ(read_payload(tail, kTag, h), PayloadVerdict::kCorrupt);

  auto cut = std::vector<std::byte>(p.begin(), p.begin() + 150);  // truncated: tail is filler
  EXPECT_EQ(read_payload(cut, kTag, h), PayloadVerdict::kCorrupt);

  auto phase = p;
  phase[24] = std::byte{2};
  EXPECT_EQ(read_payload(phase, kTag, h), PayloadVerdict::kCorrupt);
}

}  // namespace
}  // namespace derpd::bench
