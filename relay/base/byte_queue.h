// ByteQueue: a FIFO of bytes whose storage is freed, not just emptied, when it drains, so an owner
// that is idle holds no heap. Used for the bytes a protocol engine produced and the io layer has
// not taken yet (TLS ciphertext, WebSocket frames) and for input waiting to be parsed.
//
// Appends copy into one contiguous block; view() is everything queued, in order. The first
// allocation is kMinCapacity bytes or what the append needs, later ones at least double. Consumed
// bytes at the front are reclaimed by sliding the rest down when that makes room, so a queue that
// is drained as fast as it is filled does not grow. Allocation failure is reported (false), never
// thrown: the data path does not throw.
//
// Not thread-safe; owned by one thread like the connection it belongs to.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>

#include "relay/base/bytes.h"

namespace derpd {

class ByteQueue {
 public:
  // Smallest allocation: a WebSocket pong or Close, a TLS alert, fit many times.
  static constexpr std::size_t kMinCapacity = 256;

  ByteQueue() = default;
  ByteQueue(const ByteQueue&) = delete;
  ByteQueue& operator=(const ByteQueue&) = delete;

  std::size_t size() const { return end_ - begin_; }
  bool empty() const { return end_ == begin_; }
  // Heap bytes held (0 whenever the queue is empty).
  std::size_t capacity() const { return cap_; }
  // The queued bytes; valid until the next non-const call.
  Bytes view() const { return {data_.get() + begin_, size()}; }

  // Makes room for `total` queued bytes in one block without reallocating later appends below
  // that size. False if memory ran out (the queue is unchanged).
  bool reserve(std::size_t total) {
    if (cap_ - begin_ >= total) return true;
    const std::size_t used = size();
    if (total <= cap_) {
      std::memmove(data_.get(), data_.get() + begin_, used);
    } else {
      const std::size_t cap = std::max({total, cap_ * 2, kMinCapacity});
      std::unique_ptr<std::byte[]> bigger(new (std::nothrow) std::byte[cap]);
      if (!bigger) return false;
      if (used > 0) std::memcpy(bigger.get(), data_.get() + begin_, used);
      data_ = std::move(bigger);
      cap_ = cap;
    }
    begin_ = 0;
    end_ = used;
    return true;
  }

  // Queues a copy of `data`. False if memory ran out (nothing was queued).
  bool append(Bytes data) {
    if (data.empty()) return true;
    if (cap_ - end_ < data.size() && !reserve(size() + data.size())) return false;
    std::memcpy(data_.get() + end_, data.data(), data.size());
    end_ += data.size();
    return true;
  }

  // Copies up to out.size() bytes from the front into `out` and consumes them; returns the count.
  std::size_t read(MutBytes out) {
    const std::size_t n = std::min(out.size(), size());
    if (n > 0) std::memcpy(out.data(), data_.get() + begin_, n);
    consume(n);
    return n;
  }

  // Drops the first `n` bytes (all of them if n > size()); frees the storage once empty.
  void consume(std::size_t n) {
    begin_ += std::min(n, size());
    if (begin_ == end_) clear();
  }

  // Drops everything and frees the storage.
  void clear() {
    data_.reset();
    begin_ = end_ = cap_ = 0;
  }

 private:
  std::unique_ptr<std::byte[]> data_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::size_t cap_ = 0;
};

}  // namespace derpd
