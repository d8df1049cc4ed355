// Counts OpenSSL's heap use in tls_test: CRYPTO_set_mem_functions is installed by a static
// initializer in openssl_alloc_counter.cc, before OpenSSL allocates anything. Sizes are the
// allocator's usable sizes, so the count matches what the heap really holds.
#pragma once

#include <cstddef>
#include <cstdint>

namespace derpd::tls::testing {

struct OpensslHeap {
  bool installed = false;       // false if OpenSSL had allocated before the hook went in
  std::int64_t live_bytes = 0;  // usable bytes of live OpenSSL allocations
  std::int64_t live_blocks = 0;
};
OpensslHeap openssl_heap();

// The whole process heap in use (glibc mallinfo2: arena in-use + mmapped chunks).
std::int64_t heap_in_use();

}  // namespace derpd::tls::testing
