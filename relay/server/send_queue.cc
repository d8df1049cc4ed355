#include "relay/server/send_queue.h"

#include <cassert>

namespace derpd::server {

void SendQueue::init(std::size_t depth) {
  assert(count_ == 0);
  if (depth == 0) depth = 1;
  if (depth != depth_ || !slots_) {
    slots_ = std::make_unique<PacketBuf*[]>(depth);
    depth_ = depth;
  }
  head_ = 0;
  bytes_ = 0;
}

PacketBuf* SendQueue::push(PacketBuf* p) {
  PacketBuf* dropped = nullptr;
  if (count_ == depth_) dropped = pop();
  slots_[(head_ + count_) % depth_] = p;
  ++count_;
  bytes_ += p->len;
  return dropped;
}

PacketBuf* SendQueue::pop() {
  if (count_ == 0) return nullptr;
  PacketBuf* p = slots_[head_];
  slots_[head_] = nullptr;
  head_ = (head_ + 1) % depth_;
  --count_;
  bytes_ -= p->len;
  return p;
}

}  // namespace derpd::server
