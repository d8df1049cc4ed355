#include "relay/server/spsc_ring.h"

#include <bit>
#include <cassert>
#include <cstring>

namespace derpd::server {
namespace {

constexpr std::uint64_t align8(std::uint64_t n) { return (n + 7) & ~std::uint64_t{7}; }

std::uint32_t load_u32(const std::byte* p) {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void store_u32(std::byte* p, std::uint32_t v) { std::memcpy(p, &v, sizeof v); }

}  // namespace

SpscByteRing::SpscByteRing(std::size_t capacity_bytes)
    : cap_(std::bit_ceil(capacity_bytes < kMinCapacity ? kMinCapacity : capacity_bytes)),
      mask_(cap_ - 1),
      buf_(new std::byte[cap_]) {}

MutBytes SpscByteRing::try_reserve(std::size_t n) {
  if (n > max_record()) return {};
  const std::uint64_t need = kRecordHeader + align8(n);
  const std::uint64_t idx = prod_head_ & mask_;
  const bool wraps = idx + need > cap_;
  const std::uint64_t start = wraps ? prod_head_ + (cap_ - idx) : prod_head_;
  const std::uint64_t end = start + need;
  if (end - prod_tail_cache_ > cap_) {
    prod_tail_cache_ = tail_.load(std::memory_order_acquire);
    if (end - prod_tail_cache_ > cap_) return {};
  }
  reserved_at_ = start;
  reserved_end_ = end;
  reserved_len_ = static_cast<std::uint32_t>(n);
  reserved_wraps_ = wraps;
  return {buf_.get() + (start & mask_) + kRecordHeader, n};
}

void SpscByteRing::commit() {
  assert(reserved_end_ > prod_head_);
  if (reserved_wraps_) store_u32(buf_.get() + (prod_head_ & mask_), kWrapMarker);
  store_u32(buf_.get() + (reserved_at_ & mask_), reserved_len_);
  prod_head_ = reserved_end_;
  head_.store(prod_head_, std::memory_order_release);
}

bool SpscByteRing::try_write(Bytes a, Bytes b) {
  MutBytes out = try_reserve(a.size() + b.size());
  if (out.data() == nullptr) return false;
  if (!a.empty()) std::memcpy(out.data(), a.data(), a.size());
  if (!b.empty()) std::memcpy(out.data() + a.size(), b.data(), b.size());
  commit();
  return true;
}

Bytes SpscByteRing::front() {
  for (;;) {
    if (cons_tail_ == cons_head_cache_) {
      cons_head_cache_ = head_.load(std::memory_order_acquire);
      if (cons_tail_ == cons_head_cache_) return {};
    }
    const std::uint64_t idx = cons_tail_ & mask_;
    const std::uint32_t len = load_u32(buf_.get() + idx);
    if (len == kWrapMarker) {
      cons_tail_ += cap_ - idx;  // published with the next pop()
      continue;
    }
    front_end_ = cons_tail_ + kRecordHeader + align8(len);
    return {buf_.get() + idx + kRecordHeader, len};
  }
}

void SpscByteRing::pop() {
  assert(front_end_ > cons_tail_);
  cons_tail_ = front_end_;
  tail_.store(cons_tail_, std::memory_order_release);
}

std::size_t SpscByteRing::used_bytes() const {
  const std::uint64_t h = head_.load(std::memory_order_relaxed);
  const std::uint64_t t = tail_.load(std::memory_order_relaxed);
  return h >= t ? static_cast<std::size_t>(h - t) : 0;
}

}  // namespace derpd::server
