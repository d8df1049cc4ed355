// Packet forwarding through one, two and three shards: delivery, unknown destinations,
// PeerGone, queue limits and the races of a replicated directory.
#include <gtest/gtest.h>

#include <set>

#include "tests/unit/server/harness.h"

namespace derpd::server::test {
namespace {

using protocol::FrameType;
using protocol::PeerGoneReason;

TEST(ShardForwarding, WithinOneShard) {
  Node node(1);
  const auto ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(0, kb);
  const auto pkt = other_packet(1200);
  ASSERT_TRUE(node.send(0, a, kb, pkt));

  ShardOutputs out;
  node[0].take_outputs(out);
  ASSERT_EQ(out.writable.size(), 1u);
  EXPECT_EQ(out.writable[0], b);
  EXPECT_TRUE(out.wake.empty()) << "no other worker involved";

  const auto rx = drain(node[0], b);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kRecvPacket);
  EXPECT_EQ(rx[0].key, ka);
  EXPECT_EQ(rx[0].packet, pkt);
  EXPECT_FALSE(node[0].has_output(a));

  const auto t = node.totals();
  EXPECT_EQ(t.packets_received, 1u);
  EXPECT_EQ(t.bytes_received, 1200u);
  EXPECT_EQ(t.packets_sent, 1u);
  EXPECT_EQ(t.bytes_sent, 1200u);
  EXPECT_EQ(t.packets_received_kind[static_cast<std::size_t>(PacketKind::kOther)], 1u);
  EXPECT_EQ(t.dropped_total(), 0u);
  EXPECT_EQ(t.current_connections, 2);
}

TEST(ShardForwarding, AcrossTwoShards) {
  Node node(2);
  // Keys homed on the other shard than their connection, so registration crosses too.
  const auto ka = key_homed(1, 1, 2), kb = key_homed(2, 0, 2);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(1, kb);
  EXPECT_EQ(node[0].lookup(kb), (ConnRef{1, b.slot, b.gen}));
  EXPECT_EQ(node[1].lookup(ka), (ConnRef{0, a.slot, a.gen}));

  const auto pkt = other_packet(500, 0x5a);
  node[0].frame_received(a, protocol::SendPacket{kb, pkt}, node.now);
  ShardOutputs out;
  node[0].take_outputs(out);
  ASSERT_EQ(out.wake.size(), 1u);
  EXPECT_EQ(out.wake[0], 1) << "the destination worker must be woken";
  EXPECT_FALSE(node[1].has_output(b)) << "not before the destination polls its inbox";
  node.pump();
  const auto rx = drain(node[1], b);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].key, ka);
  EXPECT_EQ(rx[0].packet, pkt);
  EXPECT_EQ(node[0].counters().snapshot().packets_received, 1u);
  EXPECT_EQ(node[1].counters().snapshot().packets_sent, 1u);

  // And back.
  node.send(1, b, ka, other_packet(64));
  EXPECT_EQ(only(drain(node[0], a), FrameType::kRecvPacket).size(), 1u);
}

TEST(ShardForwarding, ThreeShardsShareOneDirectory) {
  Node node(3);
  std::vector<std::pair<ClientId, NodePublic>> clients;
  for (std::uint32_t i = 0; i < 9; ++i) {
    const auto k = key_homed(i, static_cast<WorkerId>((i + 1) % 3), 3);
    clients.emplace_back(node.connect(i % 3, k), k);
  }
  for (std::uint32_t i = 0; i < 9; ++i) {
    const ConnRef want{static_cast<WorkerId>(i % 3), clients[i].first.slot, clients[i].first.gen};
    for (int s = 0; s < 3; ++s) EXPECT_EQ(node[s].lookup(clients[i].second), want) << "shard " << s << " key " << i;
  }
  // Everyone sends to everyone else.
  for (std::uint32_t i = 0; i < 9; ++i)
    for (std::uint32_t j = 0; j < 9; ++j)
      if (i != j) node.send(i % 3, clients[i].first, clients[j].second, other_packet(100, static_cast<std::uint8_t>(i)));
  for (std::uint32_t j = 0; j < 9; ++j) {
    const auto rx = only(drain(node[j % 3], clients[j].first), FrameType::kRecvPacket);
    ASSERT_EQ(rx.size(), 8u);
    std::set<std::uint32_t> senders;
    for (const auto& r : rx) {
      const auto i = std::to_integer<std::uint32_t>(r.packet[1]);  // the sender's index
      ASSERT_LT(i, 9u);
      EXPECT_NE(i, j);
      EXPECT_EQ(r.key, clients[i].second) << "source key must match the sender";
      senders.insert(i);
    }
    EXPECT_EQ(senders.size(), 8u);
  }
  const auto t = node.totals();
  EXPECT_EQ(t.packets_received, 72u);
  EXPECT_EQ(t.packets_sent, 72u);
  EXPECT_EQ(t.dropped_total(), 0u);
  EXPECT_EQ(t.clients_total, 9);
  EXPECT_EQ(t.clients_local, 9);
}

TEST(ShardForwarding, UnknownDestinationIsCountedWithoutReply) {
  Node node(2);
  const auto ka = key_homed(1, 0, 2);
  const ClientId a = node.connect(1, ka);
  const auto nobody = key_homed(50, 1, 2);
  node.send(1, a, nobody, other_packet(300));
  const auto t = node.totals();
  EXPECT_EQ(t.dropped(DropReason::kUnknownDest, PacketKind::kOther), 1u);
  EXPECT_EQ(t.bytes_dropped[static_cast<std::size_t>(DropReason::kUnknownDest)][1], 300u);
  EXPECT_TRUE(drain(node[1], a).empty()) << "non-disco packets get no PeerGone";
}

TEST(ShardForwarding, DiscoToUnknownGetsRateLimitedPeerGoneNotHere) {
  Node node(1);
  const auto ka = key_homed(1, 0, 1);
  const ClientId a = node.connect(0, ka);
  const auto nobody = key_homed(50, 0, 1);
  for (int i = 0; i < 10; ++i) node.send(0, a, nobody, disco_packet());
  auto rx = drain(node[0], a);
  ASSERT_EQ(rx.size(), 3u) << "burst of 3";
  for (const auto& r : rx) {
    EXPECT_EQ(r.type, FrameType::kPeerGone);
    EXPECT_EQ(r.key, nobody);
    EXPECT_EQ(r.reason, PeerGoneReason::kNotHere);
  }
  node.now += 500ms;
  node.send(0, a, nobody, disco_packet());
  EXPECT_TRUE(drain(node[0], a).empty());
  node.now += 500ms;  // one second after the burst: one token
  node.send(0, a, nobody, disco_packet());
  node.send(0, a, nobody, disco_packet());
  EXPECT_EQ(drain(node[0], a).size(), 1u);
  node.now += 1s;
  node.send(0, a, nobody, disco_packet());
  EXPECT_EQ(drain(node[0], a).size(), 1u);

  const auto t = node.totals();
  EXPECT_EQ(t.dropped(DropReason::kUnknownDest, PacketKind::kDisco), 14u);
  EXPECT_EQ(t.peer_gone_not_here_frames, 5u);
  EXPECT_EQ(t.packets_received_kind[static_cast<std::size_t>(PacketKind::kDisco)], 14u);
}

TEST(ShardForwarding, PeerGoneDisconnectedOnlyToThoseWhoReceivedFromIt) {
  Node node(2);
  const auto ka = key_homed(1, 1, 2), kb = key_homed(2, 0, 2), kc = key_homed(3, 1, 2), kd = key_homed(4, 0, 2);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(0, kb);  // same shard as A
  const ClientId c = node.connect(1, kc);  // other shard
  const ClientId d = node.connect(1, kd);  // never hears from A
  node.send(0, a, kb, other_packet(10));
  node.send(0, a, kc, other_packet(10));
  node.send(1, d, kb, other_packet(10));  // D talks to B, not the other way round
  ASSERT_EQ(drain(node[0], b).size(), 2u);
  ASSERT_EQ(drain(node[1], c).size(), 1u);

  node[0].client_closed(a, ConnEnd::kPeerClosed);
  node.pump();
  for (auto [shard, id] : {std::pair{0, b}, std::pair{1, c}}) {
    const auto rx = drain(node[shard], id);
    ASSERT_EQ(rx.size(), 1u);
    EXPECT_EQ(rx[0].type, FrameType::kPeerGone);
    EXPECT_EQ(rx[0].key, ka);
    EXPECT_EQ(rx[0].reason, PeerGoneReason::kDisconnected);
  }
  EXPECT_TRUE(drain(node[1], d).empty());
  EXPECT_EQ(node.totals().peer_gone_disconnected_frames, 2u);
  EXPECT_EQ(node[0].lookup(ka), kNoConn);
  EXPECT_EQ(node[1].lookup(ka), kNoConn);

  // D leaves: only B heard from D.
  node[1].client_closed(d, ConnEnd::kPeerClosed);
  node.pump();
  const auto rx = drain(node[0], b);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].key, kd);
  EXPECT_TRUE(drain(node[1], c).empty());
}

// A receiver fed by one source skips the bookkeeping per packet; when that source leaves and comes
// back, its packets count again, so its second departure is announced too.
TEST(ShardForwarding, PeerGoneAgainAfterTheSourceReturnsAndSendsAgain) {
  Node node(2);
  const auto ka = key_homed(1, 1, 2), kb = key_homed(2, 0, 2);
  const ClientId b = node.connect(0, kb);
  for (int round = 0; round < 2; ++round) {
    const ClientId a = node.connect(1, ka);
    for (int i = 0; i < 3; ++i) node.send(1, a, kb, other_packet(10));
    node.pump();
    ASSERT_EQ(drain(node[0], b).size(), 3u) << "round " << round;
    node[1].client_closed(a, ConnEnd::kPeerClosed);
    node.pump();
    const auto rx = drain(node[0], b);
    ASSERT_EQ(rx.size(), 1u) << "round " << round;
    EXPECT_EQ(rx[0].type, FrameType::kPeerGone);
    EXPECT_EQ(rx[0].key, ka);
  }
  EXPECT_EQ(node.totals().peer_gone_disconnected_frames, 2u);
}

TEST(ShardForwarding, PeerGoneWaitsForTheKeysLastConnection) {
  Node node(2);
  const auto ka = key_homed(1, 0, 2), kb = key_homed(2, 1, 2);
  const ClientId a1 = node.connect(0, ka);
  const ClientId a2 = node.connect(1, ka);  // the same key again, elsewhere
  const ClientId b = node.connect(0, kb);
  node.send(1, a2, kb, other_packet(10));
  ASSERT_EQ(drain(node[0], b).size(), 1u);
  node[1].client_closed(a2, ConnEnd::kPeerClosed);
  node.pump();
  EXPECT_TRUE(drain(node[0], b).empty()) << "the key is still connected (a1)";
  node[0].client_closed(a1, ConnEnd::kPeerClosed);
  node.pump();
  const auto rx = drain(node[0], b);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kPeerGone);
}

TEST(ShardForwarding, QueueOverflowDropsOldestAndDiscoHasItsOwnQueue) {
  Node node(1);
  const auto ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(0, kb);
  for (int i = 0; i < 40; ++i) node.send(0, a, kb, other_packet(100, static_cast<std::uint8_t>(i)));
  for (int i = 0; i < 5; ++i) node.send(0, a, kb, disco_packet(static_cast<std::uint8_t>(200 + i)));
  auto st = node[0].client_stats(b);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->queued_packets, 37u);
  EXPECT_EQ(st->queued_disco, 5u);
  auto t = node.totals();
  EXPECT_EQ(t.dropped(DropReason::kQueueHead, PacketKind::kOther), 8u);
  EXPECT_EQ(t.dropped(DropReason::kQueueHead, PacketKind::kDisco), 0u);

  const auto rx = drain(node[0], b);
  ASSERT_EQ(rx.size(), 37u);
  // Disco first, then the 32 freshest others (8..39) in order.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(rx[i].packet.back(), std::byte(200 + i));
  for (int i = 0; i < 32; ++i) EXPECT_EQ(rx[5 + i].packet.back(), std::byte(8 + i));

  // Disco overflow is counted as disco.
  for (int i = 0; i < 35; ++i) node.send(0, a, kb, disco_packet());
  t = node.totals();
  EXPECT_EQ(t.dropped(DropReason::kQueueHead, PacketKind::kDisco), 3u);
}

TEST(ShardForwarding, ConfiguredQueueDepthIsHonoured) {
  Node node(1, kDefaultRingBytes, [](ShardConfig& c) { c.queue_depth = 4; });
  const auto ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(0, kb);
  for (int i = 0; i < 10; ++i) node.send(0, a, kb, other_packet(50));
  EXPECT_EQ(node[0].client_stats(b)->queued_packets, 4u);
  EXPECT_EQ(node.totals().dropped(DropReason::kQueueHead), 6u);
}

TEST(ShardForwarding, ClientThatNeverReadsCostsBoundedMemory) {
  Node node(2);
  const auto ka = key_homed(1, 0, 2), kb = key_homed(2, 1, 2);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(1, kb);
  for (int i = 0; i < 20000; ++i) {
    node[0].frame_received(a, protocol::SendPacket{kb, other_packet(1400)}, node.now);
    if (i % 7 == 0) node[0].frame_received(a, protocol::SendPacket{kb, disco_packet()}, node.now);
    if (i % 64 == 0) node.pump();
  }
  node.pump();
  const auto st = node[1].client_stats(b);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->queued_packets, 64u);
  EXPECT_LE(st->pending_bytes, 32u * (1400 + 37) + 32u * (kDiscoMinLen + 20 + 37));
  EXPECT_EQ(node[1].pool().live(), 64u) << "only queued packets hold buffers";
  EXPECT_LE(node[1].pool().heap_allocations(), 80u) << "buffers are recycled, not accumulated";
  EXPECT_EQ(node[0].pool().live(), 0u);
  const auto t = node.totals();
  EXPECT_GT(t.dropped(DropReason::kQueueHead), 19000u);
  EXPECT_EQ(t.dropped_total(), t.packets_received - 64);
}

TEST(ShardForwarding, DropsQueuedPacketsAsGoneDisconnectedOnClose) {
  Node node(1);
  const auto ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(0, kb);
  for (int i = 0; i < 3; ++i) node.send(0, a, kb, other_packet(10));
  node.send(0, a, kb, disco_packet());
  node[0].client_closed(b, ConnEnd::kPeerClosed);
  const auto t = node.totals();
  EXPECT_EQ(t.dropped(DropReason::kGoneDisconnected, PacketKind::kOther), 3u);
  EXPECT_EQ(t.dropped(DropReason::kGoneDisconnected, PacketKind::kDisco), 1u);
  EXPECT_EQ(node[0].pool().live(), 0u);
  EXPECT_EQ(t.current_connections, 1);
}

TEST(ShardForwarding, PacketForAKeyThatJustLeftIsAnUnknownDestDrop) {
  Node node(2);
  const auto ka = key_homed(1, 0, 2), kb = key_homed(2, 0, 2);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(1, kb);
  // A sends while B's worker has not yet seen anything; then B disconnects before polling.
  node[0].frame_received(a, protocol::SendPacket{kb, other_packet(80)}, node.now);
  node[1].client_closed(b, ConnEnd::kPeerClosed);
  node.pump();
  auto t = node.totals();
  EXPECT_EQ(t.dropped(DropReason::kUnknownDest, PacketKind::kOther), 1u);
  EXPECT_EQ(t.packets_sent, 0u);

  // Again, but B reconnects before its worker polls: the new connection reuses the slot with a
  // new generation, and the packet addressed to the old one must not reach it.
  const ClientId b_old = node.connect(1, kb);
  node[0].frame_received(a, protocol::SendPacket{kb, other_packet(90)}, node.now);
  node[1].client_closed(b_old, ConnEnd::kPeerClosed);
  const ClientId b_new = node[1].client_registered(ClientParams{kb, {}, false, false, false, false}, node.now);
  ASSERT_EQ(b_new.slot, b_old.slot);
  ASSERT_NE(b_new.gen, b_old.gen);
  node.pump();
  t = node.totals();
  EXPECT_EQ(t.dropped(DropReason::kUnknownDest, PacketKind::kOther), 2u);
  EXPECT_TRUE(only(drain(node[1], b_new), FrameType::kRecvPacket).empty());
  EXPECT_EQ(node[0].lookup(kb), (ConnRef{1, b_new.slot, b_new.gen}));
}

TEST(ShardForwarding, KeyMovingBetweenShardsReroutes) {
  Node node(3);
  const auto ka = key_homed(1, 2, 3), kb = key_homed(2, 2, 3);
  const ClientId a = node.connect(0, ka);
  ClientId b = node.connect(1, kb);
  // In flight to the old connection when B moves to shard 2.
  node[0].frame_received(a, protocol::SendPacket{kb, other_packet(30)}, node.now);
  node[1].client_closed(b, ConnEnd::kPeerClosed);
  b = node[2].client_registered(ClientParams{kb, {}, false, false, false, false}, node.now);
  node.pump();
  EXPECT_EQ(node.totals().dropped(DropReason::kUnknownDest), 1u);
  // The directory converged on the new home of B everywhere.
  for (int s = 0; s < 3; ++s) EXPECT_EQ(node[s].lookup(kb), (ConnRef{2, b.slot, b.gen}));
  node.send(0, a, kb, other_packet(30));
  EXPECT_EQ(drain(node[2], b).size(), 1u);
}

TEST(ShardForwarding, FullRingDropsPacketsButNeverControl) {
  Node node(2, 4096);  // tiny rings
  const auto ka = key_homed(1, 0, 2), kb = key_homed(2, 0, 2);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(1, kb);
  // Without pumping, fill ring 0 -> 1.
  int sent = 0;
  for (; sent < 10; ++sent) node[0].frame_received(a, protocol::SendPacket{kb, other_packet(1000)}, node.now);
  const auto t0 = node.totals();
  EXPECT_GT(t0.dropped(DropReason::kQueueTail, PacketKind::kOther), 0u);
  const std::uint64_t tail = t0.dropped(DropReason::kQueueTail, PacketKind::kOther);

  // Control traffic from shard 0 to shard 1 while the ring is full: many registrations homed on 1.
  std::vector<NodePublic> keys;
  for (std::uint32_t i = 0; i < 50; ++i) {
    keys.push_back(key_homed(100 + i, 1, 2));
    node[0].client_registered(ClientParams{keys.back(), {}, false, false, false, false}, node.now);
  }
  EXPECT_GT(node[0].outbox().parked(), 0u);
  node.pump();
  EXPECT_EQ(node[0].outbox().parked(), 0u);
  for (const auto& k : keys) {
    EXPECT_TRUE(node[1].lookup(k).valid());
    EXPECT_TRUE(node[0].lookup(k).valid());
  }
  EXPECT_EQ(only(drain(node[1], b), protocol::FrameType::kRecvPacket).size(), static_cast<std::size_t>(sent) - tail);
}

}  // namespace
}  // namespace derpd::server::test
