// Log-linear latency histogram with a fixed footprint: recording never allocates.
//
// Values (nanoseconds) below 128 are exact; above, each power of two is split into 64 buckets, so
// a reported percentile is within 1/128 (0.8 %) of the true value. Values above kMaxValue are
// clamped to it and counted in saturated().
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace derpd::bench {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 6;
  static constexpr std::uint64_t kSub = std::uint64_t{1} << kSubBits;  // 64
  static constexpr std::uint64_t kMaxValue = (std::uint64_t{1} << 40) - 1;  // ~18 minutes in ns
  static constexpr std::size_t kBuckets = (40 - kSubBits + 1) * kSub;  // index of kMaxValue + 1

  void record(std::uint64_t v) {
    if (v > kMaxValue) {
      v = kMaxValue;
      ++saturated_;
    }
    ++counts_[index(v)];
    ++count_;
    sum_ += v;
    max_ = std::max(max_, v);
    min_ = std::min(min_, v);
  }

  std::uint64_t count() const { return count_; }
  std::uint64_t saturated() const { return saturated_; }
  std::uint64_t max() const { return count_ ? max_ : 0; }
  std::uint64_t min() const { return count_ ? min_ : 0; }
  double mean() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0.0; }

  // The value at quantile q in [0, 1] (midpoint of its bucket, clamped to [min, max]); 0 if empty.
  std::uint64_t percentile(double q) const {
    if (count_ == 0) return 0;
    q = std::clamp(q, 0.0, 1.0);
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_) + 0.5);
    rank = std::clamp<std::uint64_t>(rank, 1, count_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::clamp(midpoint(i), min(), max());
    }
    return max();
  }

  static std::size_t index(std::uint64_t v) {
    if (v < 2 * kSub) return static_cast<std::size_t>(v);
    const int msb = 63 - std::countl_zero(v);
    const int shift = msb - kSubBits;  // >= 1
    const std::uint64_t mantissa = v >> shift;  // in [kSub, 2 * kSub)
    return static_cast<std::size_t>(kSub * static_cast<std::uint64_t>(shift + 1) + (mantissa - kSub));
  }

  // Lowest value that lands in bucket i.
  static std::uint64_t lower_bound(std::size_t i) {
    if (i < 2 * kSub) return i;
    const std::uint64_t shift = i / kSub - 1;
    const std::uint64_t mantissa = i % kSub + kSub;
    return mantissa << shift;
  }

  static std::uint64_t midpoint(std::size_t i) {
    if (i < 2 * kSub) return i;
    const std::uint64_t shift = i / kSub - 1;
    return lower_bound(i) + ((std::uint64_t{1} << shift) >> 1);
  }

 private:
  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t saturated_ = 0;
  std::uint64_t sum_ = 0;
  std::uint64_t max_ = 0;
  std::uint64_t min_ = ~std::uint64_t{0};
};

}  // namespace derpd::bench
