// StunMetrics: the STUN families of /metrics, summed over the workers at scrape time.
//
//   stun_requests_total{disposition}  one label per stun::Disposition (stun::to_string names:
//                                     success, success_classic, error_response, not_stun,
//                                     malformed, ignored) plus read_error, write_error and
//                                     send_dropped (no free send slot for the reply)
//   stun_addrfamily_total{family}     ipv4, ipv6: who asked
//
// Every label is present (at 0) from the first scrape on.
//
// Why a Collectable and not registry counters updated before each scrape: prometheus::Counter can
// only be incremented, so mirroring sums into it means keeping the last sum per series and adding
// deltas under a lock - a second copy of state that can drift. Summing on demand keeps one copy
// (the workers' atomics), costs the hot path nothing beyond a relaxed store, and stays monotonic:
// each worker's counter only grows, so a later scrape's sum is never smaller.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string_view>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "stun/responder.h"

namespace derpd::metrics {

inline constexpr std::size_t kStunDispositions = static_cast<std::size_t>(stun::Disposition::kCount);

// One worker's counts (or the sum of all of them).
struct StunTotals {
  std::array<std::uint64_t, kStunDispositions> disposition{};  // indexed by stun::Disposition
  std::uint64_t read_error = 0;
  std::uint64_t write_error = 0;
  std::uint64_t send_dropped = 0;
  std::uint64_t ipv4 = 0;
  std::uint64_t ipv6 = 0;
};

class StunMetrics final : public prometheus::Collectable {
 public:
  // Adds one worker's current counts into the totals (relaxed loads of its atomics). Called on
  // the scraping thread; must stay callable for the life of this object.
  using Source = std::function<void(StunTotals&)>;

  void add_source(Source s);
  // The sum over every source, now.
  StunTotals totals() const;

  std::vector<prometheus::MetricFamily> Collect() const override;

  // The disposition label values in exposition order.
  static std::vector<std::string_view> disposition_labels();

 private:
  mutable std::mutex mu_;
  std::vector<Source> sources_;  // guarded by mu_
};

}  // namespace derpd::metrics
