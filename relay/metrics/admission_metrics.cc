#include "relay/metrics/admission_metrics.h"

#include "relay/metrics/family_builder.h"

namespace derpd::metrics {

using detail::d;

void AdmissionMetrics::set_source(Source s) {
  std::lock_guard lock(mu_);
  source_ = std::move(s);
}

AdmissionTotals AdmissionMetrics::totals() const {
  AdmissionTotals t;
  std::lock_guard lock(mu_);
  if (source_) source_(t);
  return t;
}

std::vector<prometheus::MetricFamily> AdmissionMetrics::Collect() const { return families(totals()); }

std::vector<prometheus::MetricFamily> AdmissionMetrics::families(const AdmissionTotals& t) {
  std::vector<prometheus::MetricFamily> out;
  if (t.decisions.empty()) return out;  // no source: admission is not configured
  detail::FamilyBuilder f(out);
  f.counter("derpd_admission_decisions_total",
            "admission controller decisions by result; unreachable, timeout, too_many_redirects and overloaded "
            "(queue full) are decided by the fail-open policy");
  for (const auto& [label, n] : t.decisions) f.sample(d(n), {{"result", label}});
  f.counter("derpd_admission_fail_open_admits_total",
            "clients admitted by the fail-open policy without an answer from the admission controller")
      .sample(d(t.fail_open_admits));
  f.gauge("derpd_admission_pending", "admission decisions asked for and not delivered yet").sample(d(t.pending));
  f.histogram("derpd_admission_duration_seconds", "time from asking the admission controller to its decision")
      .histogram_sample(t.latency_bounds, t.latency_counts, t.latency_sum);
  return out;
}

}  // namespace derpd::metrics
