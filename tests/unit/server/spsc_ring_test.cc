#include "relay/server/spsc_ring.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace derpd::server {
namespace {

std::vector<std::byte> pattern(std::size_t n, std::uint32_t seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((seed * 131 + i * 7) & 0xff);
  return v;
}

TEST(SpscByteRing, CapacityIsPowerOfTwoWithFloor) {
  EXPECT_EQ(SpscByteRing(1).capacity(), SpscByteRing::kMinCapacity);
  EXPECT_EQ(SpscByteRing(5000).capacity(), 8192u);
  EXPECT_EQ(SpscByteRing(8192).max_record(), 4096u - 8);
}

TEST(SpscByteRing, RecordsComeOutInOrderAcrossManyWraps) {
  SpscByteRing r(4096);
  std::uint32_t written = 0, read = 0;
  // Sizes chosen so records regularly hit the end of the buffer and need a wrap marker.
  const std::size_t sizes[] = {1, 7, 8, 100, 333, 1000, 2040, 0, 17};
  for (int round = 0; round < 2000; ++round) {
    const std::size_t n = sizes[round % std::size(sizes)];
    auto p = pattern(n, written);
    while (!r.try_write(p)) {
      Bytes f = r.front();
      ASSERT_NE(f.data(), nullptr) << "ring reports full while empty";
      auto want = pattern(sizes[read % std::size(sizes)], read);
      ASSERT_EQ(f.size(), want.size());
      ASSERT_TRUE(std::equal(f.begin(), f.end(), want.begin()));
      r.pop();
      ++read;
    }
    ++written;
  }
  while (read < written) {
    Bytes f = r.front();
    ASSERT_NE(f.data(), nullptr);
    auto want = pattern(sizes[read % std::size(sizes)], read);
    ASSERT_TRUE(std::equal(f.begin(), f.end(), want.begin(), want.end()));
    r.pop();
    ++read;
  }
  EXPECT_TRUE(r.front().empty());
  EXPECT_EQ(r.used_bytes(), 0u);
}

TEST(SpscByteRing, FullRefusesUntilConsumerFreesSpace) {
  SpscByteRing r(4096);
  auto p = pattern(1000, 1);
  int n = 0;
  while (r.try_write(p)) ++n;
  EXPECT_EQ(n, 4);  // 4 * (8 + 1000) fits in 4096; a fifth does not
  EXPECT_EQ(r.try_reserve(1000).data(), nullptr);
  r.front();
  r.pop();
  EXPECT_TRUE(r.try_write(p));
}

TEST(SpscByteRing, OversizedRecordIsRefused) {
  SpscByteRing r(4096);
  EXPECT_EQ(r.try_reserve(r.max_record() + 1).data(), nullptr);
  EXPECT_NE(r.try_reserve(r.max_record()).data(), nullptr);
}

TEST(SpscByteRing, UncommittedReservationIsInvisible) {
  SpscByteRing r(4096);
  MutBytes m = r.try_reserve(10);
  ASSERT_NE(m.data(), nullptr);
  EXPECT_TRUE(r.front().empty());
  std::memset(m.data(), 0xab, m.size());
  r.commit();
  Bytes f = r.front();
  ASSERT_EQ(f.size(), 10u);
  EXPECT_EQ(f[9], std::byte{0xab});
}

// A producer and a consumer thread; every record carries its sequence number and a pattern the
// consumer checks. Bounded by count; a stuck side fails the deadline instead of hanging.
TEST(SpscByteRing, TwoThreadsKeepOrderAndContents) {
  SpscByteRing r(16384);
  constexpr std::uint32_t kRecords = 200000;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::atomic<bool> timed_out{false};

  std::thread producer([&] {
    for (std::uint32_t i = 0; i < kRecords; ++i) {
      const std::size_t n = 4 + (i * 37) % 1500;
      for (;;) {
        MutBytes m = r.try_reserve(n);
        if (m.data() != nullptr) {
          std::memcpy(m.data(), &i, 4);
          for (std::size_t k = 4; k < n; ++k) m[k] = static_cast<std::byte>((i + k) & 0xff);
          r.commit();
          break;
        }
        if (std::chrono::steady_clock::now() > deadline) {
          timed_out = true;
          return;
        }
        std::this_thread::yield();
      }
    }
  });

  std::uint32_t bad = 0;
  for (std::uint32_t i = 0; i < kRecords && !timed_out;) {
    Bytes f = r.front();
    if (f.empty()) {
      if (std::chrono::steady_clock::now() > deadline) {
        timed_out = true;
        break;
      }
      std::this_thread::yield();
      continue;
    }
    std::uint32_t seq;
    std::memcpy(&seq, f.data(), 4);
    if (seq != i || f.size() != 4 + (i * 37) % 1500) ++bad;
    for (std::size_t k = 4; k < f.size(); ++k)
      if (f[k] != static_cast<std::byte>((i + k) & 0xff)) {
        ++bad;
        break;
      }
    r.pop();
    ++i;
  }
  producer.join();
  EXPECT_FALSE(timed_out);
  EXPECT_EQ(bad, 0u);
  EXPECT_TRUE(r.front().empty());
}

}  // namespace
}  // namespace derpd::server
