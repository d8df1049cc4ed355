// Mesh: watchers (WatchConns -> PeerPresent / PeerGone), ForwardPacket in, mesh links out,
// ClosePeer, and what a client without the mesh key may not do.
#include <gtest/gtest.h>

#include <map>

#include "tests/unit/server/harness.h"

namespace derpd::server::test {
namespace {

using protocol::FrameType;
using protocol::PeerGoneReason;

TEST(ShardMesh, WatcherGetsExistingThenNewClientsThenLastDisconnect) {
  Node node(2);
  const auto ka = key_homed(1, 1, 2), kb = key_homed(2, 0, 2), km = key_homed(3, 1, 2), kc = key_homed(4, 0, 2);
  node.connect(0, ka, false, 1001);
  node.connect(1, kb, false, 1002);
  const ClientId m = node.connect(0, km, /*mesh=*/true, 1003);
  node[0].frame_received(m, protocol::WatchConns{}, node.now);
  node.pump();
  EXPECT_EQ(node.totals().watchers, 1);

  auto rx = drain(node[0], m);
  ASSERT_EQ(rx.size(), 3u) << "a, b and the watcher itself";
  std::map<NodePublic, Rx> seen;
  for (const auto& r : rx) {
    EXPECT_EQ(r.type, FrameType::kPeerPresent);
    seen[r.key] = r;
  }
  ASSERT_TRUE(seen.count(ka) && seen.count(kb) && seen.count(km));
  ASSERT_TRUE(seen[kb].endpoint);
  EXPECT_EQ(seen[kb].endpoint->port, 1002);
  EXPECT_EQ(seen[kb].endpoint->addr.to_string(), "192.0.2.7");
  EXPECT_EQ(seen[kb].flags, protocol::kPeerPresentIsRegular);
  EXPECT_EQ(seen[km].flags, protocol::kPeerPresentIsMeshPeer);

  // A new client on the other shard, then a duplicate of it: one PeerPresent per connection.
  ClientParams p{kc, Endpoint{*IpAddr::parse("2001:db8::5"), 7}, false, true, false, true};
  const ClientId c1 = node[1].client_registered(p, node.now);
  node.pump();
  rx = drain(node[0], m);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kPeerPresent);
  EXPECT_EQ(rx[0].key, kc);
  EXPECT_EQ(rx[0].endpoint->port, 7);
  EXPECT_EQ(rx[0].endpoint->addr.to_string(), "2001:db8::5");
  EXPECT_EQ(rx[0].flags, protocol::kPeerPresentIsProber | protocol::kPeerPresentNotIdeal);
  const ClientId c2 = node.connect(0, kc);
  rx = drain(node[0], m);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kPeerPresent);

  // The first of the two leaves: the key is still here, no PeerGone. The last one: PeerGone.
  node[1].client_closed(c1, ConnEnd::kPeerClosed);
  node.pump();
  EXPECT_TRUE(drain(node[0], m).empty());
  node[0].client_closed(c2, ConnEnd::kPeerClosed);
  node.pump();
  rx = drain(node[0], m);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kPeerGone);
  EXPECT_EQ(rx[0].key, kc);
  EXPECT_EQ(rx[0].reason, PeerGoneReason::kDisconnected);
  EXPECT_EQ(node.totals().peer_gone_disconnected_frames, 1u);

  node[0].client_closed(m, ConnEnd::kPeerClosed);
  node.pump();
  EXPECT_EQ(node.totals().watchers, 0);
}

TEST(ShardMesh, WatcherOnEveryShardHearsEveryRegistration) {
  Node node(3);
  const ClientId m0 = node.connect(0, key_homed(1, 2, 3), true);
  const ClientId m2 = node.connect(2, key_homed(2, 1, 3), true);
  node[0].frame_received(m0, protocol::WatchConns{}, node.now);
  node[2].frame_received(m2, protocol::WatchConns{}, node.now);
  node.pump();
  drain(node[0], m0);
  drain(node[2], m2);
  for (std::uint32_t i = 0; i < 6; ++i) node.connect(i % 3, key_homed(10 + i, static_cast<WorkerId>(i % 3), 3));
  EXPECT_EQ(only(drain(node[0], m0), FrameType::kPeerPresent).size(), 6u);
  EXPECT_EQ(only(drain(node[2], m2), FrameType::kPeerPresent).size(), 6u);
}

TEST(ShardMesh, WatchConnsFromOurOwnKeyIsIgnored) {
  Node node(1);
  node.connect(0, key_homed(1, 0, 1));
  const ClientId self = node.connect(0, node[0].config().server_key, true);
  EXPECT_TRUE(node[0].frame_received(self, protocol::WatchConns{}, node.now));
  EXPECT_TRUE(drain(node[0], self).empty());
  EXPECT_EQ(node.totals().watchers, 0);
}

TEST(ShardMesh, WatcherThatNeverReadsIsClosedPastItsBacklog) {
  Node node(1, kDefaultRingBytes, [](ShardConfig& c) { c.max_watcher_backlog = 56 * 10; });
  const ClientId m = node.connect(0, key_homed(1, 0, 1), true);
  node[0].frame_received(m, protocol::WatchConns{}, node.now);
  for (std::uint32_t i = 0; i < 20; ++i) node.connect(0, key_homed(10 + i, 0, 1));
  const auto closes = node.closes(0);
  ASSERT_EQ(closes.size(), 1u);
  EXPECT_EQ(closes[0].id, m);
  EXPECT_EQ(closes[0].reason, CloseReason::kWatcherBacklog);
  EXPECT_EQ(node.totals().watchers, 0);
  node[0].client_closed(m, ConnEnd::kRequested);
  // Later registrations do not touch the closed watcher.
  node.connect(0, key_homed(99, 0, 1));
  EXPECT_EQ(node[0].clients(), 21u);
}

TEST(ShardMesh, WatchConnsWhoseDumpExceedsTheBacklogIsClosed) {
  Node node(2, kDefaultRingBytes, [](ShardConfig& c) { c.max_watcher_backlog = 56 * 5; });
  for (std::uint32_t i = 0; i < 8; ++i) node.connect(i % 2, key_homed(10 + i, static_cast<WorkerId>(i % 2), 2));
  const auto km = key_homed(1, 0, 2);
  const ClientId m = node.connect(0, km, true);
  EXPECT_FALSE(node[0].frame_received(m, protocol::WatchConns{}, node.now));
  node.pump();
  const auto closes = node.closes(0);
  ASSERT_EQ(closes.size(), 1u);
  EXPECT_EQ(closes[0].reason, CloseReason::kWatcherBacklog);
  EXPECT_FALSE(node[0].has_output(m));
  EXPECT_EQ(node[1].lookup(km), kNoConn);
  EXPECT_EQ(node.totals().watchers, 0);
}

TEST(ShardMesh, ForwardPacketIsDeliveredLocally) {
  Node node(2);
  const auto kb = key_homed(2, 1, 2), kx = key_homed(77, 0, 2);
  const ClientId m = node.connect(0, key_homed(1, 0, 2), true);
  const ClientId b = node.connect(1, kb);
  const auto pkt = other_packet(222);
  EXPECT_TRUE(node[0].frame_received(m, protocol::ForwardPacket{kx, kb, pkt}, node.now));
  node.pump();
  const auto rx = drain(node[1], b);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kRecvPacket);
  EXPECT_EQ(rx[0].key, kx) << "the original sender, not the mesh peer";
  EXPECT_EQ(rx[0].packet, pkt);
  const auto t = node.totals();
  EXPECT_EQ(t.packets_forwarded_in, 1u);
  EXPECT_EQ(t.packets_received, 0u) << "derper does not count forwarded packets as received";
  EXPECT_EQ(t.packets_sent, 1u);
}

TEST(ShardMesh, ForwardPacketToUnknownDropsAndDiscoGetsNotHere) {
  Node node(1);
  const ClientId m = node.connect(0, key_homed(1, 0, 1), true);
  const auto nobody = key_homed(5, 0, 1), kx = key_homed(6, 0, 1);
  node[0].frame_received(m, protocol::ForwardPacket{kx, nobody, other_packet(30)}, node.now);
  node[0].frame_received(m, protocol::ForwardPacket{kx, nobody, disco_packet()}, node.now);
  const auto t = node.totals();
  EXPECT_EQ(t.dropped(DropReason::kUnknownDestOnFwd, PacketKind::kOther), 1u);
  EXPECT_EQ(t.dropped(DropReason::kUnknownDestOnFwd, PacketKind::kDisco), 1u);
  const auto rx = drain(node[0], m);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kPeerGone);
  EXPECT_EQ(rx[0].key, nobody);
  EXPECT_EQ(rx[0].reason, PeerGoneReason::kNotHere);
}

TEST(ShardMesh, PacketsForKeysBehindAMeshLinkAreForwardedOnce) {
  Node node(2);
  const auto ka = key_homed(1, 1, 2), kr = key_homed(2, 0, 2);
  const ClientId a = node.connect(0, ka);
  // Our link to another node of the region lives on shard 1 and reports key R there.
  const ClientId link = node[1].mesh_link_opened(key_homed(500, 0, 2), node.now);
  node[1].mesh_link_peer_present(link, kr);
  node.pump();
  EXPECT_EQ(node.totals().clients_remote, 1);

  const auto pkt = other_packet(333);
  node.send(0, a, kr, pkt);
  auto rx = drain(node[1], link, /*link=*/true);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kForwardPacket);
  EXPECT_EQ(rx[0].key, ka);
  EXPECT_EQ(rx[0].dst, kr);
  EXPECT_EQ(rx[0].packet, pkt);
  EXPECT_EQ(node.totals().packets_forwarded_out, 1u);

  // A mesh peer forwarding to R: never forwarded again.
  const ClientId m = node.connect(0, key_homed(3, 0, 2), true);
  node[0].frame_received(m, protocol::ForwardPacket{ka, kr, pkt}, node.now);
  node.pump();
  EXPECT_TRUE(drain(node[1], link, true).empty());
  EXPECT_EQ(node.totals().dropped(DropReason::kUnknownDestOnFwd), 1u);
  EXPECT_EQ(node.totals().packets_forwarded_out, 1u);

  // R gets a local connection: it wins over the link. R talks to A.
  const ClientId r = node.connect(1, kr);
  node.send(0, a, kr, pkt);
  EXPECT_TRUE(drain(node[1], link, true).empty());
  EXPECT_EQ(only(drain(node[1], r), FrameType::kRecvPacket).size(), 1u);
  node.send(1, r, ka, pkt);
  ASSERT_EQ(only(drain(node[0], a), FrameType::kRecvPacket).size(), 1u);
  node[1].client_closed(r, ConnEnd::kPeerClosed);
  node.pump();
  // Gone locally but still in the region through the link: no PeerGone for A, packets go to the link.
  EXPECT_TRUE(drain(node[0], a).empty());
  node.send(0, a, kr, pkt);
  EXPECT_EQ(drain(node[1], link, true).size(), 1u);

  // When the link breaks, R leaves the region: A, who heard from R, is told.
  node[1].client_closed(link, ConnEnd::kReadError);
  node.pump();
  const auto gone = drain(node[0], a);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].type, FrameType::kPeerGone);
  EXPECT_EQ(gone[0].key, kr);
  EXPECT_EQ(node[0].lookup(kr), kNoConn);
  EXPECT_EQ(node.totals().clients_remote, 0);
  node.send(0, a, kr, other_packet(10));
  EXPECT_EQ(node.totals().dropped(DropReason::kUnknownDest), 1u);
}

TEST(ShardMesh, RegionGoneAfterLinkReportsPeerGone) {
  Node node(1);
  const auto ka = key_homed(1, 0, 1), kr = key_homed(2, 0, 1);
  const ClientId a = node.connect(0, ka);
  const ClientId m = node.connect(0, key_homed(3, 0, 1), true);
  const ClientId link = node[0].mesh_link_opened(key_homed(500, 0, 1), node.now);
  node[0].mesh_link_peer_present(link, kr);
  // A receives a packet from R through the mesh, so A will want to hear when R is gone.
  node[0].frame_received(m, protocol::ForwardPacket{kr, ka, other_packet(20)}, node.now);
  ASSERT_EQ(only(drain(node[0], a), FrameType::kRecvPacket).size(), 1u);
  node[0].mesh_link_peer_gone(link, kr);
  const auto rx = drain(node[0], a);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kPeerGone);
  EXPECT_EQ(rx[0].key, kr);
}

TEST(ShardMesh, ClosePeerClosesEveryConnectionOfTheKey) {
  Node node(2);
  const auto kb = key_homed(2, 0, 2);
  const ClientId m = node.connect(0, key_homed(1, 1, 2), true);
  const ClientId b1 = node.connect(1, kb);
  const ClientId b2 = node.connect(0, kb);
  const ClientId other = node.connect(1, key_homed(3, 0, 2));
  EXPECT_TRUE(node[0].frame_received(m, protocol::ClosePeer{kb}, node.now));
  node.pump();
  auto c0 = node.closes(0);
  auto c1 = node.closes(1);
  ASSERT_EQ(c0.size(), 1u);
  EXPECT_EQ(c0[0].id, b2);
  EXPECT_EQ(c0[0].reason, CloseReason::kClosedByMeshPeer);
  ASSERT_EQ(c1.size(), 1u);
  EXPECT_EQ(c1[0].id, b1);
  node[0].client_closed(b2, ConnEnd::kRequested);
  node[1].client_closed(b1, ConnEnd::kRequested);
  node.pump();
  EXPECT_EQ(node[0].lookup(kb), kNoConn);
  EXPECT_EQ(node[0].lookup(key_homed(3, 0, 2)), (ConnRef{1, other.slot, other.gen})) << "other keys untouched";
  EXPECT_EQ(node.totals().current_connections, 2);
  // Unknown key: nothing happens.
  node[0].frame_received(m, protocol::ClosePeer{key_homed(88, 1, 2)}, node.now);
  node.pump();
  EXPECT_TRUE(node.closes(0).empty());
  EXPECT_TRUE(node.closes(1).empty());
}

class NonMeshClient : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(Frames, NonMeshClient, ::testing::Values(0, 1, 2));

TEST_P(NonMeshClient, MeshOnlyFramesCloseTheConnection) {
  Node node(1);
  const auto ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(0, kb);
  node.send(0, b, ka, other_packet(10));  // something queued for A
  protocol::ClientMessage msg;
  switch (GetParam()) {
    case 0: msg = protocol::WatchConns{}; break;
    case 1: msg = protocol::ForwardPacket{kb, kb, other_packet(5)}; break;
    default: msg = protocol::ClosePeer{kb}; break;
  }
  EXPECT_FALSE(node[0].frame_received(a, msg, node.now));
  const auto closes = node.closes(0);
  ASSERT_EQ(closes.size(), 1u);
  EXPECT_EQ(closes[0].id, a);
  EXPECT_EQ(closes[0].reason, CloseReason::kNotMeshPeer);
  EXPECT_FALSE(node[0].has_output(a));
  EXPECT_EQ(node[0].lookup(ka), kNoConn) << "unregistered at once";
  EXPECT_EQ(node.totals().dropped(DropReason::kGoneDisconnected), 1u);
  EXPECT_FALSE(node[0].frame_received(a, protocol::Ping{}, node.now)) << "a closing client is not served";
  // The victim of ClosePeer was not touched.
  EXPECT_TRUE(node[0].lookup(kb).valid());
  node[0].client_closed(a, ConnEnd::kRequested);
  EXPECT_EQ(node[0].clients(), 1u);
}

}  // namespace
}  // namespace derpd::server::test
