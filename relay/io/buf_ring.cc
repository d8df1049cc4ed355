#include "relay/io/buf_ring.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace derpd::io {

BufRing::BufRing(std::uint16_t group_id, std::uint32_t count, std::uint32_t size)
    : group_id_(group_id), count_(count), size_(size) {
  if (count == 0 || count > 32768 || (count & (count - 1)) != 0)
    throw std::runtime_error("buffer ring size must be a power of two <= 32768");
  ring_bytes_ = count * sizeof(io_uring_buf);
  void* r = mmap(nullptr, ring_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (r == MAP_FAILED) throw std::runtime_error(std::string("mmap buffer ring: ") + std::strerror(errno));
  data_bytes_ = std::size_t{count} * size;
  void* d = mmap(nullptr, data_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (d == MAP_FAILED) {
    munmap(r, ring_bytes_);
    throw std::runtime_error(std::string("mmap receive buffers: ") + std::strerror(errno));
  }
  ring_ = static_cast<io_uring_buf_ring*>(r);
  base_ = static_cast<std::byte*>(d);
  io_uring_buf_ring_init(ring_);
  for (std::uint32_t i = 0; i < count; ++i) recycle(static_cast<std::uint16_t>(i));
  publish();
}

BufRing::~BufRing() {
  if (ring_ != nullptr) munmap(ring_, ring_bytes_);
  if (base_ != nullptr) munmap(base_, data_bytes_);
}

void BufRing::recycle(std::uint16_t bid) {
  io_uring_buf_ring_add(ring_, base_ + std::size_t{bid} * size_, size_, bid,
                        io_uring_buf_ring_mask(count_), pending_);
  ++pending_;
}

void BufRing::publish() {
  if (pending_ == 0) return;
  io_uring_buf_ring_advance(ring_, pending_);
  available_ += pending_;
  pending_ = 0;
}

}  // namespace derpd::io
