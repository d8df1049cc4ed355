#include "relay/io/loop.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/unit/io/fake_ring.h"

namespace derpd::io {
namespace {

using testing::FakeRing;
using testing::ManualClock;
using namespace std::chrono_literals;

struct Recorder final : Handler {
  std::vector<std::pair<std::uint8_t, std::int32_t>> completions;
  std::vector<std::uint16_t> timers;
  void on_completion(const UserData& ud, const Completion& c) override { completions.emplace_back(ud.op, c.res); }
  void on_timer(std::uint16_t cookie) override { timers.push_back(cookie); }
};

TEST(UserData, RoundTripsEveryField) {
  UserData ud{0xAB, 0xFEDCBA, 0x1234, 0xBEEF};
  UserData back = UserData::decode(ud.encode());
  EXPECT_EQ(back.op, 0xAB);
  EXPECT_EQ(back.slot, 0xFEDCBAu);
  EXPECT_EQ(back.gen, 0x1234);
  EXPECT_EQ(back.aux, 0xBEEF);
}

TEST(Loop, DeliversCompletionToItsHandler) {
  FakeRing ring;
  ManualClock clock;
  Loop loop(ring, clock);
  Recorder r;
  auto slot = loop.attach(&r);
  ring.complete(loop.user_data(slot, 7), 42);
  loop.run_once(0ns);
  ASSERT_EQ(r.completions.size(), 1u);
  EXPECT_EQ(r.completions[0].first, 7);
  EXPECT_EQ(r.completions[0].second, 42);
}

TEST(Loop, StaleCompletionAfterDetachNeverReachesTheSlotsNextOwner) {
  FakeRing ring;
  ManualClock clock;
  Loop loop(ring, clock);
  Recorder old_owner, new_owner;
  auto slot = loop.attach(&old_owner);
  std::uint64_t old_ud = loop.user_data(slot, 3);
  loop.detach(slot);
  auto reused = loop.attach(&new_owner);
  ASSERT_EQ(reused, slot) << "the arena reuses freed slots";
  ring.complete(old_ud, -ECANCELED);
  ring.complete(loop.user_data(reused, 4), 1);
  loop.run_once(0ns);
  EXPECT_TRUE(old_owner.completions.empty());
  ASSERT_EQ(new_owner.completions.size(), 1u);
  EXPECT_EQ(new_owner.completions[0].first, 4);
  EXPECT_EQ(loop.stats().stale_completions, 1u);
}

TEST(Loop, CompletionForUnknownSlotIsCountedNotCrashed) {
  FakeRing ring;
  ManualClock clock;
  Loop loop(ring, clock);
  ring.complete(UserData{1, 999'999, 1, 0}.encode(), 0);
  loop.run_once(0ns);
  EXPECT_EQ(loop.stats().stale_completions, 1u);
}

TEST(Loop, ReapsMoreThanOneBatchInOneTurn) {
  FakeRing ring;
  ManualClock clock;
  Loop loop(ring, clock);
  Recorder r;
  auto slot = loop.attach(&r);
  for (int i = 0; i < 1000; ++i) ring.complete(loop.user_data(slot, 1), i);
  loop.run_once(0ns);
  EXPECT_EQ(r.completions.size(), 1000u);
}

TEST(Loop, TimersFireInDeadlineOrderAndOnlyWhenDue) {
  FakeRing ring;
  ManualClock clock;
  Loop loop(ring, clock);
  Recorder r;
  auto slot = loop.attach(&r);
  loop.add_timer(slot, clock.t + 30ms, 3);
  loop.add_timer(slot, clock.t + 10ms, 1);
  loop.add_timer(slot, clock.t + 20ms, 2);
  loop.run_once(1s);
  EXPECT_TRUE(r.timers.empty());
  EXPECT_EQ(ring.waits.back(), 10ms) << "the wait never overshoots the next timer";
  clock.t += 25ms;
  loop.run_once(1s);
  EXPECT_EQ(r.timers, (std::vector<std::uint16_t>{1, 2}));
  clock.t += 10ms;
  loop.run_once(1s);
  EXPECT_EQ(r.timers, (std::vector<std::uint16_t>{1, 2, 3}));
}

TEST(Loop, TimerOfDetachedHandlerDoesNotFire) {
  FakeRing ring;
  ManualClock clock;
  Loop loop(ring, clock);
  Recorder a, b;
  auto slot = loop.attach(&a);
  loop.add_timer(slot, clock.t + 1ms, 9);
  loop.detach(slot);
  ASSERT_EQ(loop.attach(&b), slot);
  clock.t += 2ms;
  loop.run_once(0ns);
  EXPECT_TRUE(a.timers.empty());
  EXPECT_TRUE(b.timers.empty());
}

TEST(Loop, ArmsItsWakeupAndReArmsAfterEachWake) {
  FakeRing ring;
  ManualClock clock;
  Loop loop(ring, clock);
  auto reads = ring.of_kind(testing::Submitted::kRead);
  ASSERT_EQ(reads.size(), 1u);
  ring.complete(reads[0].ud, 8);
  loop.run_once(0ns);
  EXPECT_EQ(ring.of_kind(testing::Submitted::kRead).size(), 2u);
}

}  // namespace
}  // namespace derpd::io
