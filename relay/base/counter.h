// RelaxedCounter: a statistic with one writer (its worker thread) and any number of readers (the
// metrics exporter). Increments are a relaxed load + store, not a locked read-modify-write:
// correct only because a single thread ever writes it.
#pragma once

#include <atomic>
#include <cstdint>

namespace derpd {

class RelaxedCounter {
 public:
  void inc(std::uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  std::uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

}  // namespace derpd
