// Counts heap allocations in the protocol_test binary (global operator new is replaced in
// alloc_counter.cc). Use AllocationScope around the code under test.
#pragma once

#include <cstddef>

namespace derpd::protocol::testing {

std::size_t allocation_count();

class AllocationScope {
 public:
  AllocationScope() : start_(allocation_count()) {}
  std::size_t allocations() const { return allocation_count() - start_; }

 private:
  std::size_t start_;
};

}  // namespace derpd::protocol::testing
