// ByteQueue (relay/base): the FIFO behind TLS ciphertext and WebSocket output.
#include "relay/base/byte_queue.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace derpd {
namespace {

Bytes bytes_of(const std::string& s) { return as_bytes(s); }
std::string str(Bytes b) { return std::string(as_chars(b)); }

TEST(ByteQueue, AppendsReadsAndFreesWhenDrained) {
  ByteQueue q;
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.capacity(), 0u);
  ASSERT_TRUE(q.append(bytes_of("hello ")));
  EXPECT_EQ(q.capacity(), ByteQueue::kMinCapacity);
  ASSERT_TRUE(q.append(bytes_of("world")));
  EXPECT_EQ(str(q.view()), "hello world");
  std::byte buf[6];
  EXPECT_EQ(q.read(buf), 6u);
  EXPECT_EQ(str(Bytes(buf, 6)), "hello ");
  EXPECT_EQ(str(q.view()), "world");
  q.consume(100);  // more than queued: everything
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.capacity(), 0u);  // freed, not just emptied
  EXPECT_EQ(q.read(buf), 0u);
  ASSERT_TRUE(q.append({}));
  EXPECT_EQ(q.capacity(), 0u);  // an empty append allocates nothing
}

TEST(ByteQueue, FirstAllocationFitsABigAppend) {
  ByteQueue q;
  const std::string big(20000, 'x');
  ASSERT_TRUE(q.append(bytes_of(big)));
  EXPECT_EQ(q.capacity(), big.size());
  EXPECT_EQ(q.size(), big.size());
}

TEST(ByteQueue, SlidesInsteadOfGrowingWhenDrainedAsFilled) {
  ByteQueue q;
  ASSERT_TRUE(q.append(bytes_of(std::string(200, 'a'))));
  const std::size_t cap = q.capacity();
  for (int i = 0; i < 1000; ++i) {
    q.consume(100);
    ASSERT_TRUE(q.append(bytes_of(std::string(100, static_cast<char>('b' + i % 20)))));
    ASSERT_EQ(q.size(), 200u);
  }
  EXPECT_EQ(q.capacity(), cap);
}

TEST(ByteQueue, ReserveKeepsContentAndRoom) {
  ByteQueue q;
  ASSERT_TRUE(q.append(bytes_of("abc")));
  ASSERT_TRUE(q.reserve(5000));
  EXPECT_GE(q.capacity(), 5000u);
  const std::size_t cap = q.capacity();
  ASSERT_TRUE(q.append(bytes_of(std::string(4997, 'z'))));
  EXPECT_EQ(q.capacity(), cap);  // no reallocation below the reserved size
  EXPECT_EQ(str(q.view().first(4)), "abcz");
}

TEST(ByteQueue, RandomOperationsMatchAReferenceFifo) {
  std::mt19937 rng(7);
  ByteQueue q;
  std::string ref;
  std::vector<std::byte> buf(5000);
  for (int i = 0; i < 20000; ++i) {
    switch (rng() % 3) {
      case 0: {
        std::string s(rng() % 3000, '\0');
        for (auto& c : s) c = static_cast<char>(rng());
        ASSERT_TRUE(q.append(bytes_of(s)));
        ref += s;
        break;
      }
      case 1: {
        const std::size_t n = q.read(MutBytes(buf).first(rng() % buf.size()));
        ASSERT_EQ(str(Bytes(buf.data(), n)), ref.substr(0, n));
        ref.erase(0, n);
        break;
      }
      default: {
        const std::size_t n = rng() % 4000;
        q.consume(n);
        ref.erase(0, std::min(n, ref.size()));
        break;
      }
    }
    ASSERT_EQ(q.size(), ref.size());
    ASSERT_EQ(str(q.view()), ref);
    if (ref.empty()) {
      ASSERT_EQ(q.capacity(), 0u);
    }
  }
}

}  // namespace
}  // namespace derpd
