// Replaces the global operator new/delete of server_test to count allocations per thread. Kept in
// its own file so the compiler never sees malloc and operator delete together.
#include "tests/unit/server/alloc_counter.h"

#include <cstdlib>
#include <new>

namespace {
thread_local bool t_counting = false;
thread_local std::size_t t_allocs = 0;

void* counted_alloc(std::size_t n) {
  if (t_counting) ++t_allocs;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
}  // namespace

namespace derpd::server::test {
void set_alloc_counting(bool on) {
  if (on) t_allocs = 0;
  t_counting = on;
}
std::size_t alloc_count() { return t_allocs; }
}  // namespace derpd::server::test

void* operator new(std::size_t n) { return counted_alloc(n); }
void* operator new[](std::size_t n) { return counted_alloc(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
