// BufRing: a ring-mapped provided-buffer group (io_uring_register_buf_ring, kernel 5.19+).
//
// Owns `count` buffers of `size` bytes each and the shared ring that hands them to the kernel.
// A receive completion names the buffer it filled (IORING_CQE_F_BUFFER, id in the upper flag
// bits); the owner reads it and gives it back with recycle(); publish() makes every recycled
// buffer visible to the kernel in one store. Owned by one worker thread.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace derpd::io {

class BufRing {
 public:
  // count must be a power of two <= 32768. Throws std::runtime_error on allocation failure
  // (start-up only).
  BufRing(std::uint16_t group_id, std::uint32_t count, std::uint32_t size);
  ~BufRing();
  BufRing(const BufRing&) = delete;
  BufRing& operator=(const BufRing&) = delete;

  std::uint16_t group_id() const { return group_id_; }
  std::uint32_t count() const { return count_; }
  std::uint32_t buffer_size() const { return size_; }
  io_uring_buf_ring* ring() const { return ring_; }

  std::span<std::byte> buffer(std::uint16_t bid) { return {base_ + std::size_t{bid} * size_, size_}; }
  // Queues buffer `bid` for return to the kernel; visible after publish().
  void recycle(std::uint16_t bid);
  // Publishes all recycled buffers with one tail update.
  void publish();
  // A completion handed buffer `bid` to us (call once per buffer-carrying completion).
  void note_consumed() {
    if (available_ > 0) --available_;
  }
  // Buffers currently owned by the kernel (available for receives).
  std::uint32_t available() const { return available_; }

 private:
  std::uint16_t group_id_;
  std::uint32_t count_;
  std::uint32_t size_;
  io_uring_buf_ring* ring_ = nullptr;  // page-aligned, count entries
  std::byte* base_ = nullptr;          // count * size bytes
  std::size_t ring_bytes_ = 0;
  std::size_t data_bytes_ = 0;
  std::uint16_t pending_ = 0;          // recycled but not yet published
  std::uint32_t available_ = 0;
};

// The buffer id carried by a completion, if it used one.
inline bool completion_has_buffer(std::uint32_t cqe_flags) { return (cqe_flags & IORING_CQE_F_BUFFER) != 0; }
inline std::uint16_t completion_buffer_id(std::uint32_t cqe_flags) {
  return static_cast<std::uint16_t>(cqe_flags >> IORING_CQE_BUFFER_SHIFT);
}

}  // namespace derpd::io
