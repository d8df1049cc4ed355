// Client: one connection's state inside its shard, and ClientArena, the slot arena that holds
// them (ClientId = slot + generation; a freed slot bumps its generation, so stale ids and stale
// cross-worker ConnRefs are recognised).
//
// What a client has to send waits in four places, pulled in this order:
//   pong (one pending at most: derper ignores pings while one is pending), keep-alive (one),
//   control frames (PeerGone, PeerPresent; serialized, bounded), then packets: the disco queue
//   before the normal queue (each `queue_depth` deep, drop-oldest).
// Packets stay in their PacketBuf until pulled; frames are built while the io layer copies them
// into its send buffer (OutFrame: a frame may be copied in several pulls).
//
// Owned by the shard's worker thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_set>
#include <vector>

#include "relay/base/bytes.h"
#include "relay/protocol/frame.h"
#include "relay/protocol/key.h"
#include "relay/server/counters.h"
#include "relay/server/packet_pool.h"
#include "relay/server/rate_limiter.h"
#include "relay/server/send_queue.h"
#include "relay/server/types.h"

namespace derpd::server {

// Serialized small frames (PeerGone, PeerPresent) in FIFO order. Memory is released when the
// stream drains after having grown past a few KiB (a watcher's initial dump can be large).
class ControlStream {
 public:
  static constexpr std::size_t kKeepCapacity = 4096;

  bool empty() const { return read_ == buf_.size(); }
  std::size_t size() const { return buf_.size() - read_; }
  std::size_t capacity() const { return buf_.capacity(); }
  void append(Bytes frame);
  // Copies the next whole frame into `out` (which must hold it) and returns its length; 0 if empty.
  std::size_t pop_frame(MutBytes out);
  void clear();

 private:
  std::vector<std::byte> buf_;
  std::size_t read_ = 0;
};

// The frame being copied out: a header (or a whole small frame) built in place plus, for
// packets, the packet's bytes.
struct OutFrame {
  static constexpr std::size_t kHeadMax = 80;  // ForwardPacket header + 2 keys = 69; PeerPresent 56

  std::array<std::byte, kHeadMax> head{};
  std::uint32_t head_len = 0;  // 0: no frame in progress
  PacketBuf* body = nullptr;   // owned while set
  std::uint32_t off = 0;       // bytes of head + body already copied out

  bool active() const { return head_len != 0; }
  std::size_t total() const { return head_len + (body != nullptr ? body->len : 0); }
  std::size_t remaining() const { return total() - off; }
  // Copies as much as fits; returns the count. When the frame completes, `done` is set.
  std::size_t copy_to(MutBytes out, bool& done);
};

struct Client {
  enum class State : std::uint8_t { kFree, kActive, kClosing };
  enum class Kind : std::uint8_t {
    kClient,    // an accepted DERP client (maybe a mesh peer)
    kMeshLink,  // our outbound connection to another node of the region: carries ForwardPacket
  };

  // --- identity (set at registration) ---
  State state = State::kFree;
  Kind kind = Kind::kClient;
  std::uint32_t gen = 1;
  ClientParams params;
  std::uint8_t present_flags = 0;  // PeerPresent flags
  Nanos connected_at{0};
  Nanos keepalive_period{0};       // 60 s + this client's jitter

  // --- status ---
  bool preferred = false;          // NotePreferred(true)
  bool watcher = false;            // sent WatchConns (mesh only)
  bool in_ready = false;           // listed in ShardOutputs::writable
  bool pong_pending = false;
  bool keepalive_pending = false;
  protocol::PingData pong{};
  TokenBucket peer_gone_limit;     // PeerGone(not here) replies

  // Duplicate-key hints from this shard's replica (refreshed by every EntryUpdate for the key),
  // so the per-frame activity check costs no lookup.
  bool dup_hint = false;           // the key has 2+ connections
  bool active_hint = false;        // this connection is the active one
  bool history_back_hint = false;  // this connection is the most recent sender
  // A switch of the key's directory entry to this connection (cross_worker.h: barrier and acks).
  enum class Switch : std::uint8_t {
    kNone,
    kRegistered,  // registration sent; its barrier (if the key has other connections) not yet acked
    kNoted,       // activity sent by frame_received() without a hold; the frame was handled
    kHeld,        // activity sent; the io layer holds the frame until every shard acked
    kReleased,    // acked (or released): the held frame is handled by the next frame_received()
  };
  Switch sw = Switch::kNone;
  // Activity was reported since the key's last EntryUpdate. A report that changed nothing (a
  // disabled fighter, a connection that already left the set) brings no update, and until one
  // comes, asking again would change nothing either.
  bool activity_noted = false;
  std::uint16_t switch_acks = 0;   // barrier acks for switch_seq (one per shard)
  std::uint32_t switch_seq = 0;
  Nanos held_since{0};             // Switch::kHeld: when the hold began

  // --- output ---
  SendQueue normal;
  SendQueue disco;
  ControlStream control;
  OutFrame current;
  std::size_t pending = 0;  // wire bytes waiting (all of the above, minus what was copied out)
  // Packets started by the latest pull (charged as write_error if that write fails).
  std::array<std::uint32_t, kPacketKinds> last_pull_packets{};
  std::array<std::uint64_t, kPacketKinds> last_pull_bytes{};

  // Sources this client was sent packets from: it gets PeerGone(disconnected) when one of them
  // leaves the region (derper's sawSrc).
  std::unordered_set<protocol::NodePublic> saw_src;
  // The last source noted in saw_src: a client fed by one peer skips the set per packet. Only
  // meaningful while saw_src_memo is set (cleared whenever saw_src loses entries).
  protocol::NodePublic last_src{};
  bool saw_src_memo = false;
  // Mesh link: keys it made reachable (removed when the link closes).
  std::unordered_set<protocol::NodePublic> link_keys;

  ClientId id(std::uint32_t slot) const { return ClientId{slot, gen}; }
  bool is_mesh_peer() const { return params.mesh_peer; }
};

// Wire size of a queued packet's frame for this kind of connection.
inline std::size_t packet_frame_size(Client::Kind kind, std::size_t len) {
  return protocol::kFrameHeaderLen + (kind == Client::Kind::kMeshLink ? 2 : 1) * protocol::kKeyLen + len;
}

class ClientArena {
 public:
  // A fresh client in state kActive (queues sized `queue_depth`).
  ClientId alloc(std::size_t queue_depth, Client*& out);
  // Valid (not free, generation matches) or nullptr.
  Client* get(ClientId id) {
    if (id.slot >= slots_.size()) return nullptr;
    Client* c = slots_[id.slot].get();
    return (c->gen == id.gen && c->state != Client::State::kFree) ? c : nullptr;
  }
  const Client* get(ClientId id) const { return const_cast<ClientArena*>(this)->get(id); }
  // The client in `slot` whatever its generation, or nullptr if the slot is free.
  Client* at_slot(std::uint32_t slot) {
    if (slot >= slots_.size() || slots_[slot]->state == Client::State::kFree) return nullptr;
    return slots_[slot].get();
  }
  // Marks the slot free and bumps its generation. The caller has emptied the client first.
  void release(ClientId id);

  std::size_t live() const { return live_; }
  std::size_t slots() const { return slots_.size(); }
  template <typename F>
  void for_each_live(F&& f) {
    for (std::uint32_t s = 0; s < slots_.size(); ++s) {
      Client& c = *slots_[s];
      if (c.state != Client::State::kFree) f(ClientId{s, c.gen}, c);
    }
  }

 private:
  std::vector<std::unique_ptr<Client>> slots_;
  std::vector<std::uint32_t> free_;
  std::size_t live_ = 0;
};

}  // namespace derpd::server
