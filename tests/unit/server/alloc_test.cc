// The forwarding path allocates nothing per packet once warm: within a shard, across shards,
// through a mesh link, and when a full queue drops its oldest packet.
#include <gtest/gtest.h>

#include "tests/unit/server/alloc_counter.h"
#include "tests/unit/server/harness.h"

namespace derpd::server::test {
namespace {

struct Counting {
  Counting() { set_alloc_counting(true); }
  ~Counting() { set_alloc_counting(false); }
  std::size_t stop() {
    set_alloc_counting(false);
    return alloc_count();
  }
};

TEST(ServerAllocations, CounterSeesAllocations) {
  Counting c;
  auto* v = new std::vector<int>(100);
  const std::size_t n = c.stop();
  delete v;
  EXPECT_GE(n, 2u);
}

// Runs `rounds` iterations of: sender sends one packet, outputs are taken, receiver pulls.
std::size_t forward_allocs(Node& node, std::size_t src_shard, ClientId src, std::size_t dst_shard, ClientId dst,
                           const NodePublic& dst_key, bool drain_dst, std::size_t rounds) {
  const auto other = other_packet(1200);
  const auto disco = disco_packet();
  std::vector<std::byte> buf(1 << 16);
  ShardOutputs outs[4];
  auto one = [&](std::size_t i) {
    const auto& pkt = i % 5 == 0 ? disco : other;
    // As the io layer does: ask first (a duplicated key's switch may hold the frame).
    if (node[src_shard].frame_may_proceed(src, node.now))
      node[src_shard].frame_received(src, protocol::SendPacket{dst_key, pkt}, node.now);
    for (std::size_t s = 0; s < node.shards.size(); ++s) {
      node[s].poll_inbox(64);
      node[s].take_outputs(outs[s]);
    }
    if (drain_dst) {
      while (node[dst_shard].has_output(dst)) node[dst_shard].pull(dst, buf);
    }
  };
  for (std::size_t i = 0; i < 500; ++i) one(i);  // warm up: pools, vectors, first-contact maps
  Counting c;
  for (std::size_t i = 0; i < rounds; ++i) one(i);
  return c.stop();
}

TEST(ServerAllocations, WithinOneShardZeroPerPacket) {
  Node node(1);
  const auto ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(0, kb);
  EXPECT_EQ(forward_allocs(node, 0, a, 0, b, kb, true, 10000), 0u);
  EXPECT_EQ(node.totals().packets_sent, 10500u);
}

TEST(ServerAllocations, AcrossShardsZeroPerPacket) {
  Node node(2);
  const auto ka = key_homed(1, 1, 2), kb = key_homed(2, 0, 2);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(1, kb);
  EXPECT_EQ(forward_allocs(node, 0, a, 1, b, kb, true, 10000), 0u);
  EXPECT_EQ(node[1].counters().snapshot().packets_sent, 10500u);
}

TEST(ServerAllocations, DuplicatedKeysActiveWriterZeroPerPacket) {
  Node node(2);
  const auto ka = key_homed(1, 1, 2), kb = key_homed(2, 0, 2);
  node.connect(0, ka);
  const ClientId a2 = node.connect(1, ka);  // the newest: active
  const ClientId b = node.connect(0, kb);
  EXPECT_EQ(forward_allocs(node, 1, a2, 0, b, kb, true, 10000), 0u);
  EXPECT_EQ(node[0].counters().snapshot().packets_sent, 10500u);
  EXPECT_EQ(node.totals().dup_switch_holds, 0u);
}

TEST(ServerAllocations, FullQueueDropsWithoutAllocating) {
  Node node(2);
  const auto ka = key_homed(1, 1, 2), kb = key_homed(2, 0, 2);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(1, kb);
  EXPECT_EQ(forward_allocs(node, 0, a, 1, b, kb, false, 10000), 0u);
  EXPECT_GT(node.totals().dropped(DropReason::kQueueHead), 10000u);
}

TEST(ServerAllocations, ThroughAMeshLinkZeroPerPacket) {
  Node node(2);
  const auto ka = key_homed(1, 1, 2), kr = key_homed(2, 0, 2);
  const ClientId a = node.connect(0, ka);
  const ClientId link = node[1].mesh_link_opened(key_homed(500, 0, 2), node.now);
  node[1].mesh_link_peer_present(link, kr);
  node.pump();
  EXPECT_EQ(forward_allocs(node, 0, a, 1, link, kr, true, 10000), 0u);
  EXPECT_EQ(node.totals().packets_forwarded_out, 10500u);
}

}  // namespace
}  // namespace derpd::server::test
