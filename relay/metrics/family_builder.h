// FamilyBuilder: appends Prometheus families whose samples are computed at scrape time (the
// Collectables of this folder). Internal to relay/metrics.
//
//   FamilyBuilder f(out);
//   f.counter("x_total", "help").sample(3).sample(4, {{"reason", "a"}});
//   f.histogram("y_seconds", "help").histogram_sample(bounds, per_bucket_counts, sum);
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <prometheus/metric_family.h>

namespace derpd::metrics::detail {

using Label = std::pair<std::string_view, std::string_view>;

class FamilyBuilder {
 public:
  explicit FamilyBuilder(std::vector<prometheus::MetricFamily>& out) : out_(out) {}

  // Starts a family; the following sample() calls add to it.
  FamilyBuilder& counter(std::string_view name, std::string_view help) {
    return start(name, help, prometheus::MetricType::Counter);
  }
  FamilyBuilder& gauge(std::string_view name, std::string_view help) {
    return start(name, help, prometheus::MetricType::Gauge);
  }
  FamilyBuilder& histogram(std::string_view name, std::string_view help) {
    return start(name, help, prometheus::MetricType::Histogram);
  }
  FamilyBuilder& family(std::string_view name, std::string_view help, prometheus::MetricType type) {
    return start(name, help, type);
  }

  // One counter or gauge sample of the current family.
  FamilyBuilder& sample(double v, std::initializer_list<Label> labels = {}) {
    prometheus::ClientMetric& m = add(labels);
    if (out_.back().type == prometheus::MetricType::Counter)
      m.counter.value = v;
    else
      m.gauge.value = v;
    return *this;
  }

  // One histogram sample: `counts` has one entry per bound (observations <= it and above the
  // previous bound) and one more for those above every bound; the +Inf bucket is added here.
  FamilyBuilder& histogram_sample(std::span<const double> bounds, std::span<const std::uint64_t> counts, double sum,
                                  std::initializer_list<Label> labels = {}) {
    prometheus::ClientMetric& m = add(labels);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds.size(); ++i) {
      cumulative += i < counts.size() ? counts[i] : 0;
      m.histogram.bucket.push_back({cumulative, bounds[i]});
    }
    if (counts.size() > bounds.size()) cumulative += counts[bounds.size()];
    m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = sum;
    return *this;
  }

 private:
  FamilyBuilder& start(std::string_view name, std::string_view help, prometheus::MetricType type) {
    prometheus::MetricFamily& f = out_.emplace_back();
    f.name = std::string(name);
    f.help = std::string(help);
    f.type = type;
    return *this;
  }
  prometheus::ClientMetric& add(std::initializer_list<Label> labels) {
    prometheus::ClientMetric& m = out_.back().metric.emplace_back();
    for (const Label& l : labels) m.label.push_back({std::string(l.first), std::string(l.second)});
    return m;
  }

  std::vector<prometheus::MetricFamily>& out_;
};

inline double d(std::uint64_t v) { return static_cast<double>(v); }
inline double d(std::int64_t v) { return static_cast<double>(v); }

}  // namespace derpd::metrics::detail
