#include "tests/unit/protocol/alloc_counter.h"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<std::size_t> g_allocations{0};
}

namespace derpd::protocol::testing {
std::size_t allocation_count() { return g_allocations.load(std::memory_order_relaxed); }
}  // namespace derpd::protocol::testing

// The default array, nothrow and sized forms forward to these two.
void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
