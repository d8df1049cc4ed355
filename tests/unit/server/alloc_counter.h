// Counts heap allocations made by the calling thread while counting is on (alloc_counter.cc
// replaces the global operator new of the test binary).
#pragma once

#include <cstddef>

namespace derpd::server::test {
void set_alloc_counting(bool on);
std::size_t alloc_count();  // since counting was last switched on
}  // namespace derpd::server::test
