// KeyConns against the duplicate-connection cases of derper's TestServerDupClients.
#include "relay/server/dup_set.h"

#include <gtest/gtest.h>

namespace derpd::server {
namespace {

const ConnRef c1{0, 1, 1};
const ConnRef c2{1, 2, 1};
const ConnRef c3{0, 3, 7};

struct Fixture {
  KeyConns set;
  DupDelta total;
  void add(ConnRef c) {
    DupDelta d;
    set.add(c, Endpoint{}, 1, d);
    acc(d);
  }
  bool remove(ConnRef c) {
    DupDelta d;
    const bool ok = set.remove(c, d);
    acc(d);
    return ok;
  }
  void acc(const DupDelta& d) {
    total.dup_keys += d.dup_keys;
    total.dup_conns += d.dup_conns;
    total.dup_conn_total += d.dup_conn_total;
  }
  bool disabled(ConnRef c) const { return set.find(c)->disabled; }
  bool is_dup(ConnRef c) const { return set.find(c)->is_dup; }
};

class DupBoth : public ::testing::TestWithParam<DupPolicy> {};
INSTANTIATE_TEST_SUITE_P(Policies, DupBoth,
                         ::testing::Values(DupPolicy::kLastWriterIsActive, DupPolicy::kDisableFighters));

TEST_P(DupBoth, OneComesAndGoes) {
  Fixture f;
  f.add(c1);
  EXPECT_FALSE(f.set.is_dup());
  EXPECT_EQ(f.set.active(), c1);
  EXPECT_TRUE(f.remove(c1));
  EXPECT_TRUE(f.set.empty());
  EXPECT_FALSE(f.set.active().valid());
}

TEST_P(DupBoth, SmallOverlapReplacement) {
  Fixture f;
  f.add(c1);
  EXPECT_EQ(f.total.dup_keys, 0);
  f.add(c2);  // wifi dies; the replacement connects
  EXPECT_TRUE(f.set.is_dup());
  EXPECT_EQ(f.total.dup_conns, 2);
  EXPECT_EQ(f.total.dup_keys, 1);
  EXPECT_TRUE(f.is_dup(c1));
  EXPECT_TRUE(f.is_dup(c2));
  EXPECT_FALSE(f.disabled(c1));
  EXPECT_FALSE(f.disabled(c2));
  EXPECT_EQ(f.set.active(), c2);  // sends go to the replacement

  EXPECT_TRUE(f.remove(c1));  // the old one finally times out
  EXPECT_FALSE(f.set.is_dup());
  EXPECT_FALSE(f.is_dup(c2));
  EXPECT_EQ(f.set.active(), c2);
  EXPECT_EQ(f.total.dup_conns, 0);
  EXPECT_EQ(f.total.dup_keys, 0);
  EXPECT_EQ(f.total.dup_conn_total, 1);
}

TEST(Dup, ConcurrentDupsGetDisabled) {
  const auto p = DupPolicy::kDisableFighters;
  Fixture f;
  f.add(c1);
  f.add(c2);
  EXPECT_EQ(f.total.dup_keys, 1);
  EXPECT_EQ(f.total.dup_conns, 2);
  EXPECT_EQ(f.set.active(), c2);
  f.set.note_activity(c2, p);
  EXPECT_FALSE(f.disabled(c1));
  EXPECT_FALSE(f.disabled(c2));
  f.set.note_activity(c1, p);
  EXPECT_TRUE(f.disabled(c1));
  EXPECT_TRUE(f.disabled(c2));
  EXPECT_FALSE(f.set.active().valid());

  f.add(c3);
  EXPECT_EQ(f.set.active(), c3);
  EXPECT_FALSE(f.disabled(c3));
  EXPECT_EQ(f.total.dup_keys, 1);
  EXPECT_EQ(f.total.dup_conns, 3);

  EXPECT_TRUE(f.remove(c3));
  EXPECT_FALSE(f.set.active().valid());
  EXPECT_EQ(f.total.dup_conns, 2);

  EXPECT_TRUE(f.remove(c2));
  EXPECT_FALSE(f.set.is_dup());
  EXPECT_EQ(f.set.active(), c1);
  EXPECT_FALSE(f.disabled(c1));
  EXPECT_EQ(f.total.dup_keys, 0);
  EXPECT_EQ(f.total.dup_conns, 0);
}

TEST(Dup, ConcurrentDupsThreeParties) {
  const auto p = DupPolicy::kDisableFighters;
  Fixture f;
  f.add(c1);
  f.add(c2);
  f.add(c3);
  f.set.note_activity(c1, p);
  EXPECT_TRUE(f.disabled(c1));
  EXPECT_TRUE(f.disabled(c2));
  EXPECT_TRUE(f.disabled(c3));
  EXPECT_FALSE(f.set.active().valid());
}

TEST(Dup, ActivityPromotesPrimaryWhenNil) {
  const auto p = DupPolicy::kDisableFighters;
  Fixture f;
  f.add(c1);
  EXPECT_EQ(f.set.active(), c1);
  f.add(c2);
  EXPECT_EQ(f.set.active(), c2);
  f.add(c3);
  f.set.note_activity(c2, p);
  EXPECT_EQ(f.set.active(), c3);
  // When the last one goes, the one with the most recent activity wins.
  EXPECT_TRUE(f.remove(c3));
  EXPECT_EQ(f.set.active(), c2);
}

TEST(Dup, ThreePartiesLastWriter) {
  const auto p = DupPolicy::kLastWriterIsActive;
  Fixture f;
  f.add(c1);
  EXPECT_EQ(f.set.active(), c1);
  f.add(c2);
  EXPECT_EQ(f.set.active(), c2);
  f.set.note_activity(c1, p);
  EXPECT_FALSE(f.disabled(c1));
  EXPECT_FALSE(f.disabled(c2));
  EXPECT_EQ(f.set.active(), c1);
  f.set.note_activity(c2, p);
  EXPECT_EQ(f.set.active(), c2);
  EXPECT_TRUE(f.remove(c2));
  EXPECT_FALSE(f.disabled(c1));
  EXPECT_EQ(f.set.active(), c1);
}

TEST(Dup, LastWriterFallsBackToMostRecentSender) {
  const auto p = DupPolicy::kLastWriterIsActive;
  Fixture f;
  f.add(c1);
  f.add(c2);
  f.add(c3);  // active c3
  f.set.note_activity(c2, p);
  f.set.note_activity(c1, p);
  f.set.note_activity(c2, p);  // most recent sender: c2, then c1
  EXPECT_EQ(f.set.active(), c2);
  EXPECT_TRUE(f.remove(c2));
  EXPECT_EQ(f.set.active(), c1);
  // Alternating senders do not grow the history beyond the members.
  for (int i = 0; i < 1000; ++i) f.set.note_activity(i % 2 ? c1 : c3, p);
  EXPECT_LE(f.set.history().size(), f.set.size());
}

TEST(Dup, RemovingUnknownConnectionChangesNothing) {
  Fixture f;
  f.add(c1);
  EXPECT_FALSE(f.remove(c2));
  EXPECT_EQ(f.set.active(), c1);
  f.add(c2);
  EXPECT_FALSE(f.remove(c3));
  EXPECT_EQ(f.set.size(), 2u);
}

TEST(Dup, ActivityOfSingleConnectionIsIgnored) {
  Fixture f;
  f.add(c1);
  f.set.note_activity(c1, DupPolicy::kDisableFighters);
  f.set.note_activity(c1, DupPolicy::kDisableFighters);
  EXPECT_EQ(f.set.active(), c1);
  EXPECT_FALSE(f.disabled(c1));
  EXPECT_TRUE(f.set.history().empty());
}

}  // namespace
}  // namespace derpd::server
