// AdmissionMetrics: the admission controller (-verify-client-url) families of /metrics, read from
// the admission client's counters at scrape time. derper has no such metrics.
//
//   derpd_admission_decisions_total{result}   decisions by outcome: allowed, denied, http_status
//                                             (an answer other than 200), bad_response (200 with a
//                                             body that does not decide), unreachable, timeout,
//                                             too_many_redirects, overloaded (queue full, answered
//                                             at once). The last four are decided by the
//                                             fail-open policy.
//   derpd_admission_fail_open_admits_total    clients admitted by the fail-open policy without an
//                                             answer from the controller
//   derpd_admission_pending                   decisions asked for and not delivered yet
//   derpd_admission_duration_seconds          histogram: from asking to the decision (every
//                                             outcome but overloaded)
//
// Every result label is present (at zero) from the first scrape on.
// Thread-safety: set_source() and Collect() may run on any threads.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace derpd::metrics {

struct AdmissionTotals {
  // Every outcome label (static strings) with its count, in exposition order, zeros included.
  std::vector<std::pair<std::string_view, std::uint64_t>> decisions;
  std::uint64_t fail_open_admits = 0;
  std::int64_t pending = 0;
  std::span<const double> latency_bounds;      // seconds, ascending (static storage)
  std::vector<std::uint64_t> latency_counts;   // per bound, not cumulative, plus one above them all
  double latency_sum = 0;                      // seconds
};

class AdmissionMetrics final : public prometheus::Collectable {
 public:
  // Fills the totals (relaxed loads). Called on the scraping thread; must stay callable (and
  // whatever it reads alive) while scraping can happen.
  using Source = std::function<void(AdmissionTotals&)>;

  void set_source(Source s);
  AdmissionTotals totals() const;

  std::vector<prometheus::MetricFamily> Collect() const override;
  static std::vector<prometheus::MetricFamily> families(const AdmissionTotals& t);

 private:
  mutable std::mutex mu_;
  Source source_;  // guarded by mu_
};

}  // namespace derpd::metrics
