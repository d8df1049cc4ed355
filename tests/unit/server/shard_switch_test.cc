// Duplicate keys: a connection taking over as the key's active one (last writer, or a newcomer's
// registration) waits until every shard's replica routes the key to it. The shards are driven
// one inbox at a time, so the orders that used to leave a replica behind are played exactly.
#include <gtest/gtest.h>

#include <random>

#include "tests/unit/server/harness.h"

namespace derpd::server::test {
namespace {

using protocol::FrameType;

ConnRef R(WorkerId w, ClientId id) { return ConnRef{w, id.slot, id.gen}; }

std::vector<ClientId> resumed(RelayShard& s) {
  ShardOutputs o;
  s.take_outputs(o);
  return o.resume;
}

bool contains(const std::vector<ClientId>& v, ClientId id) { return std::find(v.begin(), v.end(), id) != v.end(); }

// Polls every shard but `skip` until none of them has anything left.
void pump_except(Node& node, std::size_t skip) {
  for (int round = 0; round < 100; ++round) {
    std::size_t n = 0;
    for (std::size_t s = 0; s < node.shards.size(); ++s)
      if (s != skip) n += node[s].poll_inbox(1 << 20);
    if (n == 0) return;
  }
  ADD_FAILURE() << "shards did not quiesce";
}

// x1 on shard 0, x2 on shard 1 (both key k, whose home is the parameter), sender a on shard 2.
class SwitchOrder : public ::testing::TestWithParam<WorkerId> {
 protected:
  SwitchOrder() : node(3), k(key_homed(1, GetParam(), 3)), ka(key_homed(2, 0, 3)) {
    x1 = node.connect(0, k);
    x2 = node.connect(1, k);
    a = node.connect(2, ka);
    for (std::size_t s = 0; s < 3; ++s) EXPECT_EQ(node[s].lookup(k), R(1, x2)) << "the newest is active";
    for (std::size_t s = 0; s < 3; ++s) resumed(node[s]);
  }
  Node node;
  NodePublic k, ka;
  ClientId x1, x2, a;
};

TEST_P(SwitchOrder, HeldFrameWaitsUntilTheSendersShardRoutesToTheNewWriter) {
  ASSERT_FALSE(node[0].frame_may_proceed(x1, node.now)) << "x1 is not active: its frame waits";
  EXPECT_FALSE(node[0].frame_may_proceed(x1, node.now)) << "still waiting";
  EXPECT_EQ(node.totals().dup_switch_holds, 1u);

  // Everyone but the sender's shard hears of the switch (unless it is the home, which is never
  // behind): x1's own replica already routes to x1.
  pump_except(node, 2);
  if (GetParam() != 2) {
    EXPECT_EQ(node[0].lookup(k), R(0, x1));
    EXPECT_EQ(node[2].lookup(k), R(1, x2)) << "the sender's replica lags";
    // derper would already have sent x1's Pong; a packet from a would then go to x2.
    EXPECT_FALSE(contains(resumed(node[0]), x1)) << "released before the sender's shard acknowledged";
    EXPECT_FALSE(node[0].frame_may_proceed(x1, node.now));
  }

  node.pump();
  ASSERT_TRUE(contains(resumed(node[0]), x1));
  for (std::size_t s = 0; s < 3; ++s) EXPECT_EQ(node[s].lookup(k), R(0, x1)) << "shard " << s;

  // The held frame (a Ping) is handled now; it asks for nothing more.
  ASSERT_TRUE(node[0].frame_may_proceed(x1, node.now));
  protocol::PingData ping{};
  ping[0] = std::byte{0x51};
  ASSERT_TRUE(node[0].frame_received(x1, protocol::Ping{ping}, node.now));
  EXPECT_EQ(node.pump(), 0u) << "the released frame sends no second activity report";
  const auto pongs = only(drain(node[0], x1), FrameType::kPong);
  ASSERT_EQ(pongs.size(), 1u);
  EXPECT_EQ(pongs[0].ping, ping);

  // After the Pong, a's packet goes to x1, never to x2.
  node.send(2, a, k, other_packet(20, 0x33));
  EXPECT_EQ(only(drain(node[0], x1), FrameType::kRecvPacket).size(), 1u);
  EXPECT_TRUE(drain(node[1], x2).empty());
  EXPECT_EQ(node.totals().dup_switch_timeouts, 0u);
  EXPECT_EQ(node.totals().dropped_total(), 0u);

  // Further frames from x1 pass at once and send nothing.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(node[0].frame_may_proceed(x1, node.now));
  node[0].frame_received(x1, protocol::NotePreferred{true}, node.now);
  EXPECT_EQ(node.pump(), 0u);
}

TEST_P(SwitchOrder, ANewcomerHasServerInfoOnlyOnceEveryShardRoutesToIt) {
  ClientParams p;
  p.key = k;
  p.remote = Endpoint{*IpAddr::parse("192.0.2.9"), 40001};
  const ClientId x3 = node[0].client_registered(p, node.now);
  EXPECT_FALSE(node[0].registration_visible(x3));
  pump_except(node, 2);
  if (GetParam() != 2) {
    EXPECT_EQ(node[0].lookup(k), R(0, x3)) << "its own replica shows it";
    EXPECT_EQ(node[2].lookup(k), R(1, x2));
    EXPECT_FALSE(node[0].registration_visible(x3)) << "the key has other connections: every shard must ack";
  }
  node.pump();
  EXPECT_TRUE(node[0].registration_visible(x3));
  for (std::size_t s = 0; s < 3; ++s) EXPECT_EQ(node[s].lookup(k), R(0, x3)) << "shard " << s;
  // It is active and sent nothing yet: its first frame passes (only the send history changes).
  EXPECT_TRUE(node[0].frame_may_proceed(x3, node.now));
}

INSTANTIATE_TEST_SUITE_P(Home, SwitchOrder, ::testing::Values(WorkerId{0}, WorkerId{1}, WorkerId{2}),
                         [](const ::testing::TestParamInfo<WorkerId>& p) { return "home" + std::to_string(p.param); });

TEST(ShardSwitch, FirstConnectionOfAKeyWaitsOnlyForItsOwnReplica) {
  Node node(3);
  const auto k = key_homed(1, 1, 3);
  ClientParams p;
  p.key = k;
  const ClientId x = node[0].client_registered(p, node.now);
  EXPECT_FALSE(node[0].registration_visible(x));
  node[1].poll_inbox();  // the home takes it
  node[0].poll_inbox();  // and this replica shows it; shard 2 has not looked yet
  EXPECT_EQ(node[2].lookup(k), kNoConn);
  EXPECT_TRUE(node[0].registration_visible(x)) << "no other connection to route to: no barrier";
  EXPECT_EQ(node.pump(), 1u) << "only shard 2's copy of the update was left";
}

TEST(ShardSwitch, OneConnectionPerKeyCostsNoMessage) {
  Node node(2);
  const auto ka = key_homed(1, 1, 2), kb = key_homed(2, 0, 2);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(1, kb);
  for (int i = 0; i < 30; ++i) {  // within the queue depth
    ASSERT_TRUE(node[0].frame_may_proceed(a, node.now));
    node[0].frame_received(a, protocol::SendPacket{kb, other_packet(30)}, node.now);
  }
  EXPECT_EQ(node.pump(), 30u) << "the packets and nothing else";
  EXPECT_EQ(only(drain(node[1], b), FrameType::kRecvPacket).size(), 30u);
  EXPECT_EQ(node.totals().dup_switch_holds, 0u);
}

TEST(ShardSwitch, OneWorkerSwitchesInPlace) {
  Node node(1);
  const auto k = key_homed(1, 0, 1);
  const ClientId x1 = node.connect(0, k);
  const ClientId x2 = node.connect(0, k);
  EXPECT_EQ(node[0].lookup(k), R(0, x2));
  ASSERT_TRUE(node[0].frame_may_proceed(x1, node.now));
  node[0].frame_received(x1, protocol::Ping{}, node.now);
  EXPECT_EQ(node[0].lookup(k), R(0, x1)) << "the only replica changed before the frame was handled";
  EXPECT_EQ(node.totals().dup_switch_holds, 0u);
}

// Any order of message delivery: whenever a held frame is let go, every replica routes the key to
// its connection. The writers take turns, one message delivered at a time in a random order.
TEST(ShardSwitch, RandomDeliveryOrdersNeverReleaseEarly) {
  constexpr std::uint16_t kWorkers = 4;
  for (std::uint32_t seed = 1; seed <= 200; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    std::mt19937 rng(seed);
    Node node(kWorkers);
    const auto k = key_homed(seed, static_cast<WorkerId>(rng() % kWorkers), kWorkers);
    const auto w1 = static_cast<WorkerId>(rng() % kWorkers);
    const auto w2 = static_cast<WorkerId>((w1 + 1 + rng() % (kWorkers - 1)) % kWorkers);
    const ClientId c1 = node.connect(w1, k);
    const ClientId c2 = node.connect(w2, k);
    struct Writer {
      WorkerId w;
      ClientId id;
    } writers[2] = {{w1, c1}, {w2, c2}};
    for (int turn = 0; turn < 4; ++turn) {
      const Writer& me = writers[turn % 2];  // c1 first: c2, the newest, is active
      ASSERT_FALSE(node[me.w].frame_may_proceed(me.id, node.now));
      bool released = false;
      for (int step = 0; step < 10000 && !released; ++step) {
        node[rng() % kWorkers].poll_inbox(1);
        released = contains(resumed(node[me.w]), me.id);
      }
      ASSERT_TRUE(released) << "turn " << turn;
      for (WorkerId s = 0; s < kWorkers; ++s) ASSERT_EQ(node[s].lookup(k), R(me.w, me.id)) << "shard " << s;
      ASSERT_TRUE(node[me.w].frame_may_proceed(me.id, node.now));
      node[me.w].frame_received(me.id, protocol::Ping{}, node.now);
      node.pump();
      drain(node[me.w], me.id);
    }
    EXPECT_EQ(node.totals().dup_switch_timeouts, 0u);
  }
}

TEST(ShardSwitch, AHoldEndsAfterSwitchWaitWhenAShardDoesNotAnswer) {
  Node node(3, kDefaultRingBytes, [](ShardConfig& c) { c.switch_wait = std::chrono::milliseconds(200); });
  const auto k = key_homed(1, 0, 3);
  const ClientId x1 = node.connect(0, k);
  const ClientId x2 = node.connect(1, k);
  (void)x2;
  const Nanos t0 = node.now;
  ASSERT_FALSE(node[0].frame_may_proceed(x1, t0));
  ASSERT_TRUE(node[0].next_deadline().has_value());
  EXPECT_LE(*node[0].next_deadline(), t0 + std::chrono::milliseconds(200));
  node[0].tick(t0 + std::chrono::milliseconds(199));
  EXPECT_FALSE(contains(resumed(node[0]), x1));
  node[0].tick(t0 + std::chrono::milliseconds(200));  // shard 2 never polled its inbox
  EXPECT_TRUE(contains(resumed(node[0]), x1));
  EXPECT_EQ(node.totals().dup_switch_timeouts, 1u);
  ASSERT_TRUE(node[0].frame_may_proceed(x1, t0));
  node[0].frame_received(x1, protocol::Ping{}, t0);
  EXPECT_EQ(only(drain(node[0], x1), FrameType::kPong).size(), 1u);
  // The late acknowledgements change nothing.
  node.pump();
  EXPECT_FALSE(contains(resumed(node[0]), x1));
  EXPECT_TRUE(node[0].frame_may_proceed(x1, t0));
  EXPECT_EQ(node[2].lookup(k), R(0, x1));
}

TEST(ShardSwitch, ReleaseHeldLetsTheFrameGoAtOnce) {
  Node node(2);
  const auto k = key_homed(1, 1, 2);
  const ClientId x1 = node.connect(0, k);
  node.connect(1, k);
  ASSERT_FALSE(node[0].frame_may_proceed(x1, node.now));
  node[0].release_held(x1);
  EXPECT_TRUE(node[0].frame_may_proceed(x1, node.now));
  node[0].frame_received(x1, protocol::Ping{}, node.now);
  node.pump();
  EXPECT_FALSE(contains(resumed(node[0]), x1)) << "the caller already let the frame go";
  EXPECT_EQ(node.totals().dup_switch_timeouts, 1u);
  EXPECT_EQ(node[1].lookup(k), R(0, x1)) << "the switch itself still happened";
}

TEST(ShardSwitch, AConnectionClosedWhileHeldIsNotResumed) {
  Node node(3);
  const auto k = key_homed(1, 2, 3);
  const ClientId x1 = node.connect(0, k);
  const ClientId x2 = node.connect(1, k);
  ASSERT_FALSE(node[0].frame_may_proceed(x1, node.now));
  node[2].poll_inbox();  // the home switched to x1 and sent the barrier
  node[0].client_closed(x1, ConnEnd::kPeerClosed);
  ClientParams p;
  p.key = k;
  const ClientId x1b = node[0].client_registered(p, node.now);
  EXPECT_EQ(x1b.slot, x1.slot) << "the slot is reused by a new generation";
  node.pump();
  EXPECT_FALSE(contains(resumed(node[0]), x1));
  EXPECT_FALSE(contains(resumed(node[0]), x1b)) << "acks for the old generation are not the newcomer's";
  EXPECT_TRUE(node[0].registration_visible(x1b));
  for (std::size_t s = 0; s < 3; ++s) EXPECT_EQ(node[s].lookup(k), R(0, x1b));
  node[0].client_closed(x1b, ConnEnd::kPeerClosed);
  node.pump();
  for (std::size_t s = 0; s < 3; ++s) EXPECT_EQ(node[s].lookup(k), R(1, x2));
}

TEST(ShardSwitch, DisabledFightersAreHeldOnceNotPerFrame) {
  Node node(2, kDefaultRingBytes, [](ShardConfig& c) { c.dup_policy = DupPolicy::kDisableFighters; });
  const auto k = key_homed(1, 0, 2), kb = key_homed(2, 0, 2);
  const ClientId x1 = node.connect(0, k);
  const ClientId x2 = node.connect(1, k);
  node.connect(0, kb);
  // The way the io layer feeds frames: hold, deliver, then hand the frame over.
  auto frame = [&](WorkerId w, ClientId id) {
    if (!node[w].frame_may_proceed(id, node.now)) {
      node.pump();
      EXPECT_TRUE(contains(resumed(node[w]), id));
      EXPECT_TRUE(node[w].frame_may_proceed(id, node.now));
    }
    node[w].frame_received(id, protocol::SendPacket{kb, other_packet(10)}, node.now);
    node.pump();
  };
  frame(1, x2);
  frame(0, x1);  // x1 had registered first, x2 sent, now x1: fighting
  for (std::size_t s = 0; s < 2; ++s) EXPECT_EQ(node[s].lookup(k), kNoConn);
  // Disabled: the next frame asks once; the answer changes nothing, so later frames do not ask.
  const auto holds = node.totals().dup_switch_holds;
  frame(0, x1);
  EXPECT_EQ(node.totals().dup_switch_holds, holds + 1);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(node[0].frame_may_proceed(x1, node.now));
  node[0].frame_received(x1, protocol::NotePreferred{true}, node.now);
  EXPECT_EQ(node.pump(), 0u);
}

}  // namespace
}  // namespace derpd::server::test
