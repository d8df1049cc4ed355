// SendQueue: one client's bounded FIFO of packets waiting to be written (derper's sendQueue /
// discoSendQueue channels, 32 deep by default). Full: the oldest packet is pushed out to make
// room (derper drops at the queue head to favour fresh packets; the caller counts queue_head).
//
// Fixed capacity, allocated once (init); a client that never reads holds at most `depth`
// packets here. Owned by the worker thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "relay/server/packet_pool.h"

namespace derpd::server {

class SendQueue {
 public:
  SendQueue() = default;
  SendQueue(const SendQueue&) = delete;
  SendQueue& operator=(const SendQueue&) = delete;

  // Sets the capacity (depth >= 1). Must be empty.
  void init(std::size_t depth);

  std::size_t capacity() const { return depth_; }
  std::size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  bool full() const { return count_ == depth_; }
  std::size_t bytes() const { return bytes_; }  // sum of queued packet lengths

  // Appends `p`. If the queue was full, its oldest packet is removed and returned (the caller
  // counts and frees it); otherwise nullptr.
  PacketBuf* push(PacketBuf* p);
  // The oldest packet, removed; nullptr when empty.
  PacketBuf* pop();
  const PacketBuf* front() const { return count_ == 0 ? nullptr : slots_[head_]; }

 private:
  std::unique_ptr<PacketBuf*[]> slots_;
  std::size_t depth_ = 0;
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace derpd::server
