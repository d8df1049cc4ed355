// SpscByteRing: a bounded single-producer / single-consumer ring of variable-size records, for
// messages between two worker threads. Lock-free: the producer publishes with a release store of
// its head, the consumer frees space with a release store of its tail; each side caches the other
// side's index and re-reads it (acquire) only when the cache says full / empty.
//
// Records are copied in and read in place: a cross-worker packet travels as one record holding a
// small header and the packet bytes, so the steady state allocates nothing and no buffer is ever
// owned by two threads (the consumer copies the bytes out before releasing the record).
//
// Layout: capacity is a power of two; every record starts 8-byte aligned with an 8-byte header
// (u32 length + pad) followed by the body. A record never wraps: when it does not fit before the
// end, the producer writes a wrap marker and the record starts at offset 0. The largest record is
// capacity/2 - 8 bytes, which always fits once the consumer has caught up.
//
// Full: try_reserve()/try_write() return empty/false and the caller decides (count a drop, or
// park a control message). Exactly one thread may call the producer methods and one thread the
// consumer methods; which threads may change over time only through a synchronising handover.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "relay/base/bytes.h"

namespace derpd::server {

class SpscByteRing {
 public:
  static constexpr std::size_t kMinCapacity = 4096;
  static constexpr std::size_t kRecordHeader = 8;

  // Capacity rounded up to a power of two, at least kMinCapacity.
  explicit SpscByteRing(std::size_t capacity_bytes);
  SpscByteRing(const SpscByteRing&) = delete;
  SpscByteRing& operator=(const SpscByteRing&) = delete;

  std::size_t capacity() const { return cap_; }
  std::size_t max_record() const { return cap_ / 2 - kRecordHeader; }

  // --- producer --------------------------------------------------------------------------------
  // Space for a record of exactly `n` bytes (n <= max_record()), or a span with a null data()
  // when the ring has no room now (or n is too large). Fill it, then commit(). One reservation
  // at a time; a reservation that is not committed is simply forgotten.
  MutBytes try_reserve(std::size_t n);
  // Publishes the record reserved last.
  void commit();
  // Copies a + b into one record; false (nothing written) when there is no room.
  bool try_write(Bytes a, Bytes b = {});

  // --- consumer --------------------------------------------------------------------------------
  // The oldest record, valid until pop(); empty when there is none.
  Bytes front();
  // Releases the record returned by front().
  void pop();

  // Approximate bytes in use (any thread; for stats).
  std::size_t used_bytes() const;

 private:
  static constexpr std::uint32_t kWrapMarker = 0xffffffffu;

  std::size_t cap_;
  std::size_t mask_;
  std::unique_ptr<std::byte[]> buf_;

  // Producer side.
  alignas(64) std::atomic<std::uint64_t> head_{0};  // written by the producer (release)
  std::uint64_t prod_head_ = 0;        // producer's own copy of head_
  std::uint64_t prod_tail_cache_ = 0;  // last tail_ seen
  std::uint64_t reserved_at_ = 0;      // start of the reserved record (after any wrap)
  std::uint64_t reserved_end_ = 0;     // head after the reserved record
  std::uint32_t reserved_len_ = 0;
  bool reserved_wraps_ = false;

  // Consumer side.
  alignas(64) std::atomic<std::uint64_t> tail_{0};  // written by the consumer (release)
  std::uint64_t cons_tail_ = 0;        // consumer's own copy (may be ahead of tail_ past markers)
  std::uint64_t cons_head_cache_ = 0;  // last head_ seen
  std::uint64_t front_end_ = 0;        // tail after the record returned by front()
};

}  // namespace derpd::server
