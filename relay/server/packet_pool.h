// Packet buffers for the per-client send queues, from a per-shard pool.
//
// A packet read from a connection lives in a receive buffer that the io layer recycles as soon as
// the frame is handled, so a packet queued for a destination is copied once into a PacketBuf. The
// pool keeps freed buffers on per-size-class free lists (power-of-two sizes from 256 B to 64 KiB,
// plus one class for a full 64 KiB packet with its header), so steady-state forwarding allocates
// nothing. Free lists are bounded (max_free_bytes): after a burst the excess goes back to the heap.
//
// Owned by one worker thread; a PacketBuf never crosses threads (cross-worker packets are copied
// through the SPSC ring into the destination worker's own pool).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "relay/base/bytes.h"
#include "relay/protocol/frame.h"
#include "relay/protocol/key.h"
#include "relay/server/counters.h"
#include "relay/server/types.h"

namespace derpd::server {

// The disco wrapper: magic "TS💬" then a 32-byte key and a 24-byte nonce (Tailscale's
// disco.LooksLikeDiscoWrapper). Such packets use the separate disco queue and are the only ones
// answered with PeerGone(not here).
inline constexpr std::array<std::byte, 6> kDiscoMagic = {std::byte{0x54}, std::byte{0x53}, std::byte{0xf0},
                                                         std::byte{0x9f}, std::byte{0x92}, std::byte{0xac}};
inline constexpr std::size_t kDiscoMinLen = kDiscoMagic.size() + 32 + 24;
inline bool looks_like_disco(Bytes p) {
  if (p.size() < kDiscoMinLen) return false;
  for (std::size_t i = 0; i < kDiscoMagic.size(); ++i)
    if (p[i] != kDiscoMagic[i]) return false;
  return true;
}
inline PacketKind packet_kind(Bytes p) { return looks_like_disco(p) ? PacketKind::kDisco : PacketKind::kOther; }

struct PacketBuf {
  PacketBuf* next = nullptr;  // free-list link (owned by the pool while free)
  protocol::NodePublic src;   // who sent it (RecvPacket source / ForwardPacket source)
  protocol::NodePublic dst;   // destination key (ForwardPacket destination on a mesh link)
  Nanos enqueued_at{0};
  std::uint32_t len = 0;
  std::uint32_t cap = 0;
  std::uint8_t size_class = 0;
  PacketKind kind = PacketKind::kOther;

  std::byte* data() { return reinterpret_cast<std::byte*>(this + 1); }
  Bytes bytes() const { return {reinterpret_cast<const std::byte*>(this + 1), len}; }
};

class PacketPool {
 public:
  static constexpr std::size_t kClasses = 10;

  explicit PacketPool(std::size_t max_free_bytes = 32u << 20);
  ~PacketPool();
  PacketPool(const PacketPool&) = delete;
  PacketPool& operator=(const PacketPool&) = delete;

  // A buffer holding a copy of `packet` (<= protocol::kMaxPacketSize, else nullptr).
  PacketBuf* make(Bytes packet, const protocol::NodePublic& src, const protocol::NodePublic& dst, Nanos now);
  void free(PacketBuf* p);

  std::size_t live() const { return live_; }              // buffers handed out
  std::size_t free_bytes() const { return free_bytes_; }  // bytes parked on free lists
  std::size_t heap_allocations() const { return heap_allocs_; }

 private:
  static std::size_t class_for(std::size_t len);
  static std::size_t class_bytes(std::size_t c);

  std::size_t max_free_bytes_;
  std::array<PacketBuf*, kClasses> free_{};
  std::size_t free_bytes_ = 0;
  std::size_t live_ = 0;
  std::size_t heap_allocs_ = 0;
};

}  // namespace derpd::server
