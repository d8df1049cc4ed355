#include "relay/server/counters.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "relay/server/types.h"

namespace derpd::server {
namespace {

TEST(Counters, LabelsAreDerpersAndDistinct) {
  const std::set<std::string> want = {"unknown_dest", "unknown_dest_on_fwd", "gone_disconnected", "queue_head",
                                      "queue_tail",   "write_error",         "dup_client"};
  std::set<std::string> got;
  for (std::size_t r = 0; r < kDropReasons; ++r) got.insert(std::string(to_string(static_cast<DropReason>(r))));
  EXPECT_EQ(got, want);
  EXPECT_EQ(to_string(PacketKind::kDisco), "disco");
  EXPECT_EQ(to_string(PacketKind::kOther), "other");
  EXPECT_EQ(peer_gone_label(protocol::PeerGoneReason::kDisconnected), "disconnected");
  EXPECT_EQ(peer_gone_label(protocol::PeerGoneReason::kNotHere), "not_here");
  for (std::size_t r = 0; r < static_cast<std::size_t>(CloseReason::kCount); ++r)
    EXPECT_NE(to_string(static_cast<CloseReason>(r)), "unknown");
}

TEST(Counters, AccumulateSumsShards) {
  ShardCounters a, b;
  a.drop(DropReason::kQueueHead, PacketKind::kDisco, 100);
  b.drop(DropReason::kQueueHead, PacketKind::kDisco, 50);
  b.drop(DropReason::kDupClient, PacketKind::kOther, 7);
  a.current_connections.add(3);
  b.current_connections.add(2);
  b.current_connections.sub();
  a.packets_sent.add(10);
  CounterTotals t;
  a.accumulate(t);
  b.accumulate(t);
  EXPECT_EQ(t.dropped(DropReason::kQueueHead, PacketKind::kDisco), 2u);
  EXPECT_EQ(t.bytes_dropped[static_cast<std::size_t>(DropReason::kQueueHead)][0], 150u);
  EXPECT_EQ(t.dropped(DropReason::kDupClient), 1u);
  EXPECT_EQ(t.dropped_total(), 3u);
  EXPECT_EQ(t.current_connections, 4);
  EXPECT_EQ(t.packets_sent, 10u);
  // Every (reason, kind) pair exists at zero from the start.
  const CounterTotals z = ShardCounters{}.snapshot();
  for (const auto& row : z.packets_dropped)
    for (auto v : row) EXPECT_EQ(v, 0u);
}

}  // namespace
}  // namespace derpd::server
