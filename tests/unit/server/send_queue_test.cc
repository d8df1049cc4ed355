#include "relay/server/send_queue.h"

#include <gtest/gtest.h>

#include <vector>

#include "relay/server/packet_pool.h"
#include "tests/unit/server/harness.h"

namespace derpd::server {
namespace {

using test::disco_packet;
using test::other_packet;

TEST(PacketPool, CopiesPacketAndClassifiesDisco) {
  PacketPool pool;
  const auto src = test::key_homed(1, 0, 1);
  const auto dst = test::key_homed(2, 0, 1);
  auto d = disco_packet();
  PacketBuf* p = pool.make(d, src, dst, Nanos{5});
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->kind, PacketKind::kDisco);
  EXPECT_EQ(p->src, src);
  EXPECT_EQ(p->dst, dst);
  ASSERT_EQ(p->len, d.size());
  EXPECT_TRUE(std::equal(d.begin(), d.end(), p->bytes().begin()));
  EXPECT_GE(p->cap, p->len);
  pool.free(p);

  // One byte short of the wrapper, or the wrong magic: other.
  auto short_disco = disco_packet(0x22, kDiscoMinLen - 1);
  EXPECT_EQ(packet_kind(short_disco), PacketKind::kOther);
  EXPECT_EQ(packet_kind(other_packet(100)), PacketKind::kOther);
  EXPECT_EQ(packet_kind(disco_packet(0x22, kDiscoMinLen)), PacketKind::kDisco);
}

TEST(PacketPool, ReusesFreedBuffersPerSizeClass) {
  PacketPool pool;
  const protocol::NodePublic k;
  std::vector<PacketBuf*> held;
  for (std::size_t n : {10u, 1200u, 9000u, 65536u}) held.push_back(pool.make(other_packet(n), k, k, Nanos{0}));
  EXPECT_EQ(pool.heap_allocations(), 4u);
  EXPECT_EQ(pool.live(), 4u);
  for (auto* p : held) pool.free(p);
  EXPECT_EQ(pool.live(), 0u);
  for (int round = 0; round < 100; ++round) {
    for (std::size_t n : {10u, 1200u, 9000u, 65536u}) pool.free(pool.make(other_packet(n), k, k, Nanos{0}));
  }
  EXPECT_EQ(pool.heap_allocations(), 4u) << "steady state must reuse buffers";
  EXPECT_EQ(pool.make(other_packet(protocol::kMaxPacketSize + 1), k, k, Nanos{0}), nullptr);
}

TEST(PacketPool, FreeListsAreBounded) {
  PacketPool pool(8192);  // keep at most 8 KiB of free buffers
  const protocol::NodePublic k;
  std::vector<PacketBuf*> held;
  for (int i = 0; i < 20; ++i) held.push_back(pool.make(other_packet(1500), k, k, Nanos{0}));
  for (auto* p : held) pool.free(p);
  EXPECT_LE(pool.free_bytes(), 8192u);
  EXPECT_GT(pool.free_bytes(), 0u);
}

TEST(SendQueue, FifoAndDropOldestWhenFull) {
  PacketPool pool;
  const protocol::NodePublic k;
  SendQueue q;
  q.init(4);
  std::vector<PacketBuf*> dropped;
  for (int i = 0; i < 7; ++i) {
    PacketBuf* p = pool.make(other_packet(10 + i), k, k, Nanos{i});
    if (PacketBuf* old = q.push(p)) dropped.push_back(old);
  }
  EXPECT_EQ(q.size(), 4u);
  EXPECT_TRUE(q.full());
  ASSERT_EQ(dropped.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(dropped[i]->len, 10u + i) << "oldest first";
  EXPECT_EQ(q.bytes(), 13u + 14 + 15 + 16);
  for (int i = 3; i < 7; ++i) {
    PacketBuf* p = q.pop();
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->len, 10u + i);
    pool.free(p);
  }
  EXPECT_EQ(q.pop(), nullptr);
  EXPECT_EQ(q.bytes(), 0u);
  for (auto* p : dropped) pool.free(p);
}

TEST(TokenBucket, BurstThenOnePerInterval) {
  TokenBucket b(std::chrono::seconds(1), 3);
  const Nanos t0 = std::chrono::hours(2);
  EXPECT_TRUE(b.allow(t0));
  EXPECT_TRUE(b.allow(t0));
  EXPECT_TRUE(b.allow(t0));
  EXPECT_FALSE(b.allow(t0));
  EXPECT_FALSE(b.allow(t0 + std::chrono::milliseconds(999)));
  EXPECT_TRUE(b.allow(t0 + std::chrono::seconds(1)));
  EXPECT_FALSE(b.allow(t0 + std::chrono::seconds(1)));
  // A long pause refills to the burst, not beyond.
  const Nanos t1 = t0 + std::chrono::seconds(100);
  EXPECT_TRUE(b.allow(t1));
  EXPECT_TRUE(b.allow(t1));
  EXPECT_TRUE(b.allow(t1));
  EXPECT_FALSE(b.allow(t1));
}

}  // namespace
}  // namespace derpd::server
