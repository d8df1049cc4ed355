#include "tests/unit/tls/openssl_alloc_counter.h"

#include <malloc.h>
#include <openssl/crypto.h>

#include <atomic>
#include <cstdlib>

namespace derpd::tls::testing {
namespace {

std::atomic<std::int64_t> g_bytes{0};
std::atomic<std::int64_t> g_blocks{0};

std::int64_t usable(void* p) { return p != nullptr ? static_cast<std::int64_t>(::malloc_usable_size(p)) : 0; }

void* counted_malloc(std::size_t n, const char* /*file*/, int /*line*/) {
  void* p = std::malloc(n);
  if (p != nullptr) {
    g_bytes.fetch_add(usable(p), std::memory_order_relaxed);
    g_blocks.fetch_add(1, std::memory_order_relaxed);
  }
  return p;
}

void* counted_realloc(void* p, std::size_t n, const char* /*file*/, int /*line*/) {
  std::int64_t before = usable(p);
  void* q = std::realloc(p, n);
  if (q != nullptr) {
    g_bytes.fetch_add(usable(q) - before, std::memory_order_relaxed);
    if (p == nullptr) g_blocks.fetch_add(1, std::memory_order_relaxed);
  }
  return q;
}

void counted_free(void* p, const char* /*file*/, int /*line*/) {
  if (p == nullptr) return;
  g_bytes.fetch_sub(usable(p), std::memory_order_relaxed);
  g_blocks.fetch_sub(1, std::memory_order_relaxed);
  std::free(p);
}

const bool g_installed = CRYPTO_set_mem_functions(counted_malloc, counted_realloc, counted_free) == 1;

}  // namespace

OpensslHeap openssl_heap() {
  return {g_installed, g_bytes.load(std::memory_order_relaxed), g_blocks.load(std::memory_order_relaxed)};
}

std::int64_t heap_in_use() {
  struct mallinfo2 mi = ::mallinfo2();
  return static_cast<std::int64_t>(mi.uordblks + mi.hblkhd);
}

}  // namespace derpd::tls::testing
