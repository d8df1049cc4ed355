// The exposition and the STUN families: labels, sums over workers, text format, promtool.
#include <gtest/gtest.h>
#include <prometheus/counter.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "relay/metrics/exposition.h"
#include "relay/metrics/stun_metrics.h"
#include "tests/unit/metrics/promtool.h"

namespace derpd::metrics {
namespace {

// A stand-in for one worker's counters: relaxed atomics written by "the worker".
struct WorkerCounts {
  std::array<std::atomic<std::uint64_t>, kStunDispositions> disposition{};
  std::atomic<std::uint64_t> read_error{0}, write_error{0}, send_dropped{0}, ipv4{0}, ipv6{0};

  StunMetrics::Source source() {
    return [this](StunTotals& t) {
      for (std::size_t i = 0; i < kStunDispositions; ++i) t.disposition[i] += disposition[i].load(std::memory_order_relaxed);
      t.read_error += read_error.load(std::memory_order_relaxed);
      t.write_error += write_error.load(std::memory_order_relaxed);
      t.send_dropped += send_dropped.load(std::memory_order_relaxed);
      t.ipv4 += ipv4.load(std::memory_order_relaxed);
      t.ipv6 += ipv6.load(std::memory_order_relaxed);
    };
  }
};

bool contains_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

std::size_t idx(stun::Disposition d) { return static_cast<std::size_t>(d); }

TEST(StunMetrics, DispositionLabelsAreTheResponderNamesPlusSocketOutcomes) {
  EXPECT_EQ(StunMetrics::disposition_labels(),
            (std::vector<std::string_view>{"success", "success_classic", "error_response", "not_stun", "malformed",
                                           "ignored", "read_error", "write_error", "send_dropped"}));
}

TEST(StunMetrics, EveryLabelIsExposedAtZeroBeforeAnyTraffic) {
  Exposition ex;
  ex.add(std::make_shared<StunMetrics>());
  const std::string text = ex.render();
  for (std::string_view label : StunMetrics::disposition_labels())
    EXPECT_TRUE(contains_line(text, "stun_requests_total{disposition=\"" + std::string(label) + "\"} 0")) << label << "\n"
                                                                                                          << text;
  EXPECT_TRUE(contains_line(text, "stun_addrfamily_total{family=\"ipv4\"} 0")) << text;
  EXPECT_TRUE(contains_line(text, "stun_addrfamily_total{family=\"ipv6\"} 0")) << text;
  EXPECT_TRUE(contains_line(text, "# TYPE stun_requests_total counter")) << text;
  EXPECT_TRUE(contains_line(text, "# TYPE stun_addrfamily_total counter")) << text;
}

TEST(StunMetrics, ScrapeSumsEveryWorker) {
  auto stun = std::make_shared<StunMetrics>();
  WorkerCounts a, b;
  stun->add_source(a.source());
  stun->add_source(b.source());
  a.disposition[idx(stun::Disposition::kSuccess)] = 5;
  b.disposition[idx(stun::Disposition::kSuccess)] = 7;
  b.disposition[idx(stun::Disposition::kNotStun)] = 2;
  a.ipv4 = 4;
  b.ipv4 = 1;
  b.ipv6 = 9;
  a.send_dropped = 3;
  b.read_error = 11;
  a.write_error = 13;
  Exposition ex;
  ex.add(stun);
  const std::string text = ex.render();
  EXPECT_TRUE(contains_line(text, "stun_requests_total{disposition=\"success\"} 12")) << text;
  EXPECT_TRUE(contains_line(text, "stun_requests_total{disposition=\"not_stun\"} 2")) << text;
  EXPECT_TRUE(contains_line(text, "stun_requests_total{disposition=\"malformed\"} 0")) << text;
  EXPECT_TRUE(contains_line(text, "stun_requests_total{disposition=\"send_dropped\"} 3")) << text;
  EXPECT_TRUE(contains_line(text, "stun_requests_total{disposition=\"read_error\"} 11")) << text;
  EXPECT_TRUE(contains_line(text, "stun_requests_total{disposition=\"write_error\"} 13")) << text;
  EXPECT_TRUE(contains_line(text, "stun_addrfamily_total{family=\"ipv4\"} 5")) << text;
  EXPECT_TRUE(contains_line(text, "stun_addrfamily_total{family=\"ipv6\"} 9")) << text;
  // Later scrapes see later values.
  a.disposition[idx(stun::Disposition::kSuccess)] = 6;
  EXPECT_EQ(stun->totals().disposition[idx(stun::Disposition::kSuccess)], 13u);
}

TEST(StunMetrics, ScrapingWhileWorkersCountIsSafeAndMonotonic) {
  auto stun = std::make_shared<StunMetrics>();
  std::vector<std::unique_ptr<WorkerCounts>> workers;
  for (int i = 0; i < 3; ++i) {
    workers.push_back(std::make_unique<WorkerCounts>());
    stun->add_source(workers.back()->source());
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    threads.emplace_back([&stop, c = w.get()] {
      auto& s = c->disposition[idx(stun::Disposition::kSuccess)];
      for (int i = 0; i < 200000 && !stop.load(std::memory_order_relaxed); ++i)
        s.store(s.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    });
  }
  std::uint64_t last = 0;
  for (int i = 0; i < 1000; ++i) {
    std::uint64_t now = stun->totals().disposition[idx(stun::Disposition::kSuccess)];
    ASSERT_GE(now, last);
    last = now;
  }
  stop = true;
  for (auto& t : threads) t.join();
  std::uint64_t expected = 0;
  for (auto& w : workers) expected += w->disposition[idx(stun::Disposition::kSuccess)].load();
  EXPECT_EQ(stun->totals().disposition[idx(stun::Disposition::kSuccess)], expected);
}

TEST(Exposition, RegistryFamiliesAndCollectablesRenderTogether) {
  Exposition ex;
  auto& fam = prometheus::BuildCounter().Name("derpd_test_events_total").Help("Test events").Register(ex.registry());
  fam.Add({{"kind", "a"}}).Increment(3);
  ex.add(std::make_shared<StunMetrics>());
  const std::string text = ex.render();
  EXPECT_TRUE(contains_line(text, "derpd_test_events_total{kind=\"a\"} 3")) << text;
  EXPECT_LT(text.find("derpd_test_events_total"), text.find("stun_requests_total"));
}

TEST(Exposition, PassesPromtool) {
  if (!testing::have_promtool()) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  Exposition ex;
  auto stun = std::make_shared<StunMetrics>();
  WorkerCounts w;
  w.disposition[idx(stun::Disposition::kSuccess)] = 1234567;
  w.ipv6 = 42;
  stun->add_source(w.source());
  ex.add(stun);
  auto r = testing::promtool_check(ex.render());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "") << "lint findings";
}

TEST(Exposition, PromtoolCatchesABadExposition) {
  // Guards the check above: promtool must actually reject something.
  if (!testing::have_promtool()) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  auto r = testing::promtool_check("# TYPE foo counter\nfoo 1\n");
  EXPECT_NE(r.exit_code, 0) << "a counter without _total and without HELP should be flagged";
}

}  // namespace
}  // namespace derpd::metrics
