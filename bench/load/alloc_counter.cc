// Replaces the global operator new/delete of a test binary to count heap allocations, so tests can
// check that per-packet paths allocate nothing. Kept in its own file so the compiler never sees
// malloc and operator delete together.
#include <cstddef>
#include <cstdlib>
#include <new>

namespace {
std::size_t g_allocations = 0;  // test binaries count on one thread
}

std::size_t allocation_count() { return g_allocations; }

void* operator new(std::size_t n) {
  ++g_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
