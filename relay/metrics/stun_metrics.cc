#include "relay/metrics/stun_metrics.h"

#include <string>

namespace derpd::metrics {

namespace {

prometheus::ClientMetric counter(std::string_view label, std::string_view value, std::uint64_t n) {
  prometheus::ClientMetric m;
  m.label.push_back({std::string(label), std::string(value)});
  m.counter.value = static_cast<double>(n);
  return m;
}

}  // namespace

void StunMetrics::add_source(Source s) {
  std::lock_guard lock(mu_);
  sources_.push_back(std::move(s));
}

StunTotals StunMetrics::totals() const {
  StunTotals t;
  std::lock_guard lock(mu_);
  for (const Source& s : sources_) s(t);
  return t;
}

std::vector<std::string_view> StunMetrics::disposition_labels() {
  std::vector<std::string_view> v;
  for (std::size_t i = 0; i < kStunDispositions; ++i) v.push_back(stun::to_string(static_cast<stun::Disposition>(i)));
  v.insert(v.end(), {"read_error", "write_error", "send_dropped"});
  return v;
}

std::vector<prometheus::MetricFamily> StunMetrics::Collect() const {
  const StunTotals t = totals();
  std::vector<prometheus::MetricFamily> out(2);

  prometheus::MetricFamily& req = out[0];
  req.name = "stun_requests_total";
  req.help =
      "STUN datagrams received, by what was done with them; read_error and write_error count socket "
      "errors, send_dropped replies dropped for want of a free send slot";
  req.type = prometheus::MetricType::Counter;
  for (std::size_t i = 0; i < kStunDispositions; ++i)
    req.metric.push_back(counter("disposition", stun::to_string(static_cast<stun::Disposition>(i)), t.disposition[i]));
  req.metric.push_back(counter("disposition", "read_error", t.read_error));
  req.metric.push_back(counter("disposition", "write_error", t.write_error));
  req.metric.push_back(counter("disposition", "send_dropped", t.send_dropped));

  prometheus::MetricFamily& fam = out[1];
  fam.name = "stun_addrfamily_total";
  fam.help = "STUN datagrams received, by the address family of the sender";
  fam.type = prometheus::MetricType::Counter;
  fam.metric.push_back(counter("family", "ipv4", t.ipv4));
  fam.metric.push_back(counter("family", "ipv6", t.ipv6));
  return out;
}

}  // namespace derpd::metrics
