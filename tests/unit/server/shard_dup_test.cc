// Duplicate keys across shards: last writer is active, dup_client drops, the dup gauges.
#include <gtest/gtest.h>

#include "tests/unit/server/harness.h"

namespace derpd::server::test {
namespace {

using protocol::FrameType;

ConnRef R(WorkerId w, ClientId id) { return ConnRef{w, id.slot, id.gen}; }

void expect_everywhere(Node& node, const NodePublic& k, const ConnRef& want) {
  for (std::size_t s = 0; s < node.shards.size(); ++s) EXPECT_EQ(node[s].lookup(k), want) << "shard " << s;
}

TEST(ShardDup, LastWriterIsActiveAcrossShards) {
  Node node(3);
  const auto k = key_homed(1, 2, 3), kb = key_homed(2, 0, 3);
  const ClientId a1 = node.connect(0, k);
  const ClientId b = node.connect(0, kb);
  expect_everywhere(node, k, R(0, a1));
  EXPECT_EQ(node.totals().current_dup_client_keys, 0);

  const ClientId a2 = node.connect(1, k);  // same key, another worker
  expect_everywhere(node, k, R(1, a2));    // the newest connection is active
  auto t = node.totals();
  EXPECT_EQ(t.current_dup_client_keys, 1);
  EXPECT_EQ(t.current_dup_client_conns, 2);
  EXPECT_EQ(t.dup_client_conn_total, 1u);
  EXPECT_EQ(t.current_connections, 3);
  EXPECT_EQ(t.clients_total, 2) << "two keys";

  node.send(0, b, k, other_packet(10, 0x01));
  EXPECT_EQ(only(drain(node[1], a2), FrameType::kRecvPacket).size(), 1u);
  EXPECT_TRUE(drain(node[0], a1).empty());

  // The old connection speaks (any frame counts): it becomes active everywhere.
  node[0].frame_received(a1, protocol::NotePreferred{true}, node.now);
  node.pump();
  expect_everywhere(node, k, R(0, a1));
  node.send(0, b, k, other_packet(10, 0x02));
  EXPECT_EQ(only(drain(node[0], a1), FrameType::kRecvPacket).size(), 1u);
  EXPECT_TRUE(drain(node[1], a2).empty());

  // And back.
  node.send(1, a2, kb, other_packet(10));
  expect_everywhere(node, k, R(1, a2));
  drain(node[0], b);

  // The active one leaves: the other takes over, the dup state ends.
  node[1].client_closed(a2, ConnEnd::kPeerClosed);
  node.pump();
  expect_everywhere(node, k, R(0, a1));
  t = node.totals();
  EXPECT_EQ(t.current_dup_client_keys, 0);
  EXPECT_EQ(t.current_dup_client_conns, 0);
  EXPECT_EQ(t.dropped_total(), 0u);
  EXPECT_TRUE(drain(node[0], b).empty()) << "the key never left: no PeerGone";
}

TEST(ShardDup, RepeatedFramesFromTheActiveConnectionSendNothing) {
  Node node(2);
  const auto k = key_homed(1, 1, 2), kb = key_homed(2, 1, 2);
  const ClientId a1 = node.connect(0, k);
  const ClientId a2 = node.connect(0, k);
  const ClientId b = node.connect(0, kb);
  (void)b;
  node[0].frame_received(a1, protocol::NotePreferred{true}, node.now);
  node.pump();
  EXPECT_EQ(node[0].lookup(k), R(0, a1));
  // a1 is now active and the latest sender: further frames need no message to the home.
  for (int i = 0; i < 50; ++i) node[0].frame_received(a1, protocol::Ping{}, node.now);
  EXPECT_EQ(node.pump(), 0u);
  // a2 speaks once: one message, however many frames before the answer.
  for (int i = 0; i < 50; ++i) node[0].frame_received(a2, protocol::Ping{}, node.now);
  // One activity report to the home, the update and the barrier back, and the home's own ack.
  EXPECT_EQ(node.pump(), 4u);
  EXPECT_EQ(node[0].lookup(k), R(0, a2));
}

TEST(ShardDup, FightingClonesDropAsDupClient) {
  Node node(2, kDefaultRingBytes, [](ShardConfig& c) { c.dup_policy = DupPolicy::kDisableFighters; });
  const auto k = key_homed(1, 0, 2), kb = key_homed(2, 0, 2);
  const ClientId a1 = node.connect(0, k);
  const ClientId a2 = node.connect(1, k);
  const ClientId b = node.connect(0, kb);
  node.send(1, a2, kb, other_packet(10));
  node.send(0, a1, kb, other_packet(10));  // a1 had registered first, a2 sent, now a1: fighting
  expect_everywhere(node, k, kNoConn);

  node.send(0, b, k, other_packet(40));
  node.send(0, b, k, disco_packet());
  auto t = node.totals();
  EXPECT_EQ(t.dropped(DropReason::kDupClient, PacketKind::kOther), 1u);
  EXPECT_EQ(t.dropped(DropReason::kDupClient, PacketKind::kDisco), 1u);
  EXPECT_EQ(t.dropped(DropReason::kUnknownDest), 0u);
  EXPECT_EQ(only(drain(node[0], b), FrameType::kPeerGone).size(), 0u) << "dup_client gets no PeerGone(not here)";
  EXPECT_EQ(t.current_dup_client_keys, 1);

  // A fresh connection for the key is active again.
  const ClientId a3 = node.connect(1, k);
  expect_everywhere(node, k, R(1, a3));
  node.send(0, b, k, other_packet(40));
  EXPECT_EQ(only(drain(node[1], a3), FrameType::kRecvPacket).size(), 1u);
  EXPECT_EQ(node.totals().current_dup_client_conns, 3);

  // Down to one: re-enabled.
  node[1].client_closed(a3, ConnEnd::kPeerClosed);
  node[1].client_closed(a2, ConnEnd::kPeerClosed);
  node.pump();
  expect_everywhere(node, k, R(0, a1));
  EXPECT_EQ(node.totals().current_dup_client_keys, 0);
}

}  // namespace
}  // namespace derpd::server::test
