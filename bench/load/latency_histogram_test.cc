#include "bench/load/latency_histogram.h"

#include <gtest/gtest.h>

#include <cmath>

namespace derpd::bench {
namespace {

TEST(LatencyHistogram, BucketsAreContiguousAndOrdered) {
  for (std::uint64_t v = 0; v < 1'000'000; ++v) {
    const std::size_t i = LatencyHistogram::index(v);
    ASSERT_LE(LatencyHistogram::lower_bound(i), v);
    ASSERT_LT(v, LatencyHistogram::lower_bound(i + 1)) << v;
  }
  EXPECT_EQ(LatencyHistogram::index(LatencyHistogram::kMaxValue), LatencyHistogram::kBuckets - 1);
}

TEST(LatencyHistogram, SmallValuesAreExact) {
  LatencyHistogram h;
  for (std::uint64_t v = 1; v <= 100; ++v) h.record(v);
  EXPECT_EQ(h.count(), 100u);
  EXPECT_EQ(h.percentile(0.5), 50u);
  EXPECT_EQ(h.percentile(0.99), 99u);
  EXPECT_EQ(h.percentile(1.0), 100u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_DOUBLE_EQ(h.mean(), 50.5);
}

TEST(LatencyHistogram, PercentilesWithinRelativeError) {
  LatencyHistogram h;
  // 1 us .. 10 ms uniformly: the q-quantile is about 1000 + q * (10'000'000 - 1000).
  const std::uint64_t lo = 1000, hi = 10'000'000, n = 200'000;
  for (std::uint64_t i = 0; i < n; ++i) h.record(lo + (hi - lo) * i / (n - 1));
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const double want = static_cast<double>(lo) + q * static_cast<double>(hi - lo);
    const double got = static_cast<double>(h.percentile(q));
    EXPECT_NEAR(got / want, 1.0, 0.01) << "q=" << q;
  }
  EXPECT_EQ(h.max(), hi);
}

TEST(LatencyHistogram, TailIsSeparated) {
  LatencyHistogram h;
  for (int i = 0; i < 9990; ++i) h.record(50'000);
  for (int i = 0; i < 10; ++i) h.record(5'000'000);
  EXPECT_NEAR(static_cast<double>(h.percentile(0.99)), 50'000.0, 500.0);
  EXPECT_NEAR(static_cast<double>(h.percentile(0.9995)), 5'000'000.0, 50'000.0);
}

TEST(LatencyHistogram, ClampsHugeValues) {
  LatencyHistogram h;
  h.record(~std::uint64_t{0});
  EXPECT_EQ(h.saturated(), 1u);
  EXPECT_EQ(h.max(), LatencyHistogram::kMaxValue);
  EXPECT_EQ(LatencyHistogram().percentile(0.5), 0u);
}

}  // namespace
}  // namespace derpd::bench
