// One client's life: ping/pong, keep-alives, NotePreferred, partial pulls, write errors,
// timeouts and shutdown.
#include <gtest/gtest.h>

#include "tests/unit/server/harness.h"

namespace derpd::server::test {
namespace {

using protocol::FrameType;

TEST(ShardLifecycle, PingIsAnsweredWithTheSameBytesOncePerPull) {
  Node node(1);
  const ClientId a = node.connect(0, key_homed(1, 0, 1));
  protocol::PingData d{};
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = std::byte(0xa0 + i);
  node[0].frame_received(a, protocol::Ping{d}, node.now);
  protocol::PingData d2{};
  d2[0] = std::byte{9};
  node[0].frame_received(a, protocol::Ping{d2}, node.now);  // while a pong is pending: ignored
  auto rx = drain(node[0], a);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kPong);
  EXPECT_EQ(rx[0].ping, d);
  node[0].frame_received(a, protocol::Ping{d2}, node.now);
  rx = drain(node[0], a);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].ping, d2);
  const auto t = node.totals();
  EXPECT_EQ(t.got_ping, 3u);
  EXPECT_EQ(t.sent_pong, 2u);
}

TEST(ShardLifecycle, KeepAliveEveryIntervalPlusJitter) {
  std::uint64_t next_random = 1'500'000'000;  // 1.5 s of jitter
  Node node(1, kDefaultRingBytes, [&](ShardConfig& c) { c.random = [&] { return next_random; }; });
  const Nanos t0 = node.now;
  const ClientId a = node.connect(0, key_homed(1, 0, 1));
  EXPECT_EQ(node[0].client_stats(a)->keepalive_period, 61500ms);
  ASSERT_TRUE(node[0].next_deadline());
  EXPECT_EQ(*node[0].next_deadline(), t0 + 61500ms);

  node[0].tick(t0 + 61499ms);
  EXPECT_FALSE(node[0].has_output(a));
  node[0].tick(t0 + 61500ms);
  auto rx = drain(node[0], a);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kKeepAlive);
  EXPECT_EQ(*node[0].next_deadline(), t0 + 123000ms);

  // Not pulled for several periods: one keep-alive waits, they do not pile up.
  node[0].tick(t0 + 123000ms);
  node[0].tick(t0 + 184500ms);
  node[0].tick(t0 + 400000ms);
  rx = drain(node[0], a);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kKeepAlive);
  // The schedule stays on the client's own period.
  EXPECT_EQ(*node[0].next_deadline(), t0 + 61500ms * 7);
  EXPECT_EQ(node.totals().keepalives_sent, 2u);
}

TEST(ShardLifecycle, JitterIsBelowTheMaximum) {
  Node node(1, kDefaultRingBytes, [](ShardConfig& c) { c.random = nullptr; });  // built-in source
  std::set<std::int64_t> periods;
  for (std::uint32_t i = 0; i < 50; ++i) {
    const ClientId id = node.connect(0, key_homed(i, 0, 1));
    const Nanos p = node[0].client_stats(id)->keepalive_period;
    EXPECT_GE(p, 60s);
    EXPECT_LT(p, 65s);
    periods.insert(p.count());
  }
  EXPECT_GT(periods.size(), 40u) << "jitter spreads the clients";
}

TEST(ShardLifecycle, ClosedClientsGetNoKeepAlive) {
  Node node(1);
  const ClientId a = node.connect(0, key_homed(1, 0, 1));
  node[0].client_closed(a, ConnEnd::kPeerClosed);
  const ClientId b = node.connect(0, key_homed(2, 0, 1));  // reuses the slot
  ASSERT_EQ(a.slot, b.slot);
  node.now += 2min;
  node[0].tick(node.now);
  const auto rx = drain(node[0], b);
  EXPECT_EQ(rx.size(), 1u) << "only b's own timer fires";
}

TEST(ShardLifecycle, NotePreferredDrivesHomeConnections) {
  Node node(2);
  const ClientId a = node.connect(0, key_homed(1, 1, 2));
  const ClientId b = node.connect(1, key_homed(2, 0, 2));
  node[0].frame_received(a, protocol::NotePreferred{true}, node.now);
  node[1].frame_received(b, protocol::NotePreferred{true}, node.now);
  node[1].frame_received(b, protocol::NotePreferred{true}, node.now);  // repeated: no change
  auto t = node.totals();
  EXPECT_EQ(t.current_home_connections, 2);
  EXPECT_EQ(t.home_moves_in, 0u) << "the first seconds of a connection do not count as moves";
  node.now += 10s;
  node[1].frame_received(b, protocol::NotePreferred{false}, node.now);
  node[1].frame_received(b, protocol::NotePreferred{true}, node.now);
  t = node.totals();
  EXPECT_EQ(t.current_home_connections, 2);
  EXPECT_EQ(t.home_moves_out, 1u);
  EXPECT_EQ(t.home_moves_in, 1u);
  node[0].client_closed(a, ConnEnd::kPeerClosed);
  EXPECT_EQ(node.totals().current_home_connections, 1);
  EXPECT_FALSE(node[0].client_stats(a));
}

TEST(ShardLifecycle, NotIdealConnectionsAreCounted) {
  Node node(1);
  ClientParams p;
  p.key = key_homed(1, 0, 1);
  p.not_ideal = true;
  const ClientId a = node[0].client_registered(p, node.now);
  EXPECT_EQ(node.totals().current_notideal_connections, 1);
  node[0].client_closed(a, ConnEnd::kPeerClosed);
  EXPECT_EQ(node.totals().current_notideal_connections, 0);
  node[0].note_accept();
  EXPECT_EQ(node.totals().accepts, 1u);
}

TEST(ShardLifecycle, FramesSurvivePullsOfAnySize) {
  Node node(1);
  const auto ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(0, kb);
  std::vector<std::vector<std::byte>> sent;
  for (std::size_t n : {1u, 100u, 5000u, 65536u, 0u, 77u}) {
    sent.push_back(other_packet(n, static_cast<std::uint8_t>(n)));
    node.send(0, a, kb, sent.back());
  }
  node[0].frame_received(b, protocol::Ping{}, node.now);
  node.send(0, a, kb, disco_packet());
  const std::size_t pending = node[0].pending_bytes(b);
  // Pull 1, 2, 3, ... bytes at a time.
  std::vector<std::byte> all, buf(70000);
  for (std::size_t step = 1; node[0].has_output(b); step = step % 97 + 1) {
    const std::size_t n = node[0].pull(b, MutBytes(buf).first(step));
    ASSERT_GT(n, 0u);
    ASSERT_LE(n, step);
    all.insert(all.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
  }
  EXPECT_EQ(all.size(), pending);
  const auto rx = decode(all);
  ASSERT_EQ(rx.size(), 8u);
  EXPECT_EQ(rx[0].type, FrameType::kPong);
  EXPECT_EQ(rx[1].packet, disco_packet());
  for (std::size_t i = 0; i < sent.size(); ++i) EXPECT_EQ(rx[2 + i].packet, sent[i]);
  EXPECT_EQ(node[0].pull(b, buf), 0u);
}

TEST(ShardLifecycle, WriteErrorChargesTheLastPull) {
  Node node(1);
  const auto ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(0, kb);
  for (int i = 0; i < 3; ++i) node.send(0, a, kb, other_packet(100));
  node.send(0, a, kb, disco_packet());
  std::vector<std::byte> buf(1 << 16);
  ASSERT_GT(node[0].pull(b, buf), 0u);
  node.send(0, a, kb, other_packet(100));  // queued after the failed write
  node[0].client_closed(b, ConnEnd::kWriteError);
  const auto t = node.totals();
  EXPECT_EQ(t.dropped(DropReason::kWriteError, PacketKind::kOther), 3u);
  EXPECT_EQ(t.dropped(DropReason::kWriteError, PacketKind::kDisco), 1u);
  EXPECT_EQ(t.dropped(DropReason::kGoneDisconnected, PacketKind::kOther), 1u);
}

TEST(ShardLifecycle, WriteTimeoutsFollowDerper) {
  Node node(1);
  const ClientId a = node.connect(0, key_homed(1, 0, 1));
  const ClientId m = node.connect(0, key_homed(2, 0, 1), true);
  EXPECT_EQ(node[0].write_timeout(a), 2s);
  EXPECT_EQ(node[0].write_timeout(m), 30s);
}

TEST(ShardLifecycle, CloseAllAsksEveryConnectionToClose) {
  Node node(2);
  const ClientId a = node.connect(0, key_homed(1, 1, 2));
  const ClientId b = node.connect(0, key_homed(2, 0, 2));
  node[0].close_all(CloseReason::kShutdown);
  auto closes = node.closes(0);
  ASSERT_EQ(closes.size(), 2u);
  EXPECT_EQ(closes[0].reason, CloseReason::kShutdown);
  node[0].client_closed(a, ConnEnd::kRequested);
  node[0].client_closed(b, ConnEnd::kRequested);
  node.pump();
  EXPECT_EQ(node[0].clients(), 0u);
  EXPECT_EQ(node[1].directory().size(), 0u);
  EXPECT_EQ(node.totals().current_connections, 0);
  EXPECT_EQ(node.totals().clients_total, 0);
}

TEST(ShardLifecycle, UnknownFramesAreCountedAndIgnored) {
  Node node(1);
  const ClientId a = node.connect(0, key_homed(1, 0, 1));
  EXPECT_TRUE(node[0].frame_received(a, protocol::Ignored{FrameType::kPong, 8}, node.now));
  EXPECT_EQ(node.totals().unknown_frames, 1u);
  EXPECT_FALSE(node[0].frame_received(ClientId{a.slot, a.gen + 5}, protocol::Ping{}, node.now));
}

TEST(ShardLifecycle, StaleIdsAreHarmless) {
  Node node(1);
  const ClientId a = node.connect(0, key_homed(1, 0, 1));
  node[0].client_closed(a, ConnEnd::kPeerClosed);
  node[0].client_closed(a, ConnEnd::kPeerClosed);  // twice
  std::vector<std::byte> buf(100);
  EXPECT_EQ(node[0].pull(a, buf), 0u);
  EXPECT_FALSE(node[0].has_output(a));
  EXPECT_FALSE(node[0].frame_received(a, protocol::Ping{}, node.now));
  EXPECT_EQ(node.totals().current_connections, 0);
}

}  // namespace
}  // namespace derpd::server::test
