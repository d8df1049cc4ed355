#include "relay/server/packet_pool.h"

#include <cstring>
#include <new>

namespace derpd::server {

static_assert(sizeof(PacketBuf) % 8 == 0, "packet bytes start 8-byte aligned");

std::size_t PacketPool::class_bytes(std::size_t c) {
  if (c + 1 < kClasses) return std::size_t{256} << c;  // 256 B .. 64 KiB
  return sizeof(PacketBuf) + protocol::kMaxPacketSize;
}

std::size_t PacketPool::class_for(std::size_t len) {
  const std::size_t total = sizeof(PacketBuf) + len;
  for (std::size_t c = 0; c + 1 < kClasses; ++c)
    if (total <= class_bytes(c)) return c;
  return kClasses - 1;
}

PacketPool::PacketPool(std::size_t max_free_bytes) : max_free_bytes_(max_free_bytes) {}

PacketPool::~PacketPool() {
  for (PacketBuf*& head : free_) {
    while (head != nullptr) {
      PacketBuf* p = head;
      head = p->next;
      p->~PacketBuf();
      ::operator delete(static_cast<void*>(p));
    }
  }
}

PacketBuf* PacketPool::make(Bytes packet, const protocol::NodePublic& src, const protocol::NodePublic& dst,
                            Nanos now) {
  if (packet.size() > protocol::kMaxPacketSize) return nullptr;
  const std::size_t c = class_for(packet.size());
  PacketBuf* p = free_[c];
  if (p != nullptr) {
    free_[c] = p->next;
    free_bytes_ -= class_bytes(c);
  } else {
    void* mem = ::operator new(class_bytes(c));
    ++heap_allocs_;
    p = new (mem) PacketBuf;
    p->size_class = static_cast<std::uint8_t>(c);
    p->cap = static_cast<std::uint32_t>(class_bytes(c) - sizeof(PacketBuf));
  }
  p->next = nullptr;
  p->src = src;
  p->dst = dst;
  p->enqueued_at = now;
  p->len = static_cast<std::uint32_t>(packet.size());
  p->kind = packet_kind(packet);
  if (!packet.empty()) std::memcpy(p->data(), packet.data(), packet.size());
  ++live_;
  return p;
}

void PacketPool::free(PacketBuf* p) {
  if (p == nullptr) return;
  --live_;
  const std::size_t c = p->size_class;
  if (free_bytes_ + class_bytes(c) > max_free_bytes_) {
    p->~PacketBuf();
    ::operator delete(static_cast<void*>(p));
    return;
  }
  p->next = free_[c];
  free_[c] = p;
  free_bytes_ += class_bytes(c);
}

}  // namespace derpd::server
