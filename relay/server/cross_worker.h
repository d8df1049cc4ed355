// Messages between the shards of one node.
//
// Fabric: one SpscByteRing per ordered pair of workers (from -> to), built once at start-up and
// shared by every shard; ring(from, to) is written only by worker `from` and read only by `to`.
// Memory: workers * (workers - 1) * ring_bytes (pages are touched as a ring is used).
//
// A message is one ring record: an 8-byte tag (MsgType) followed by a trivially copyable body and,
// for packets, the packet bytes. Bodies are memcpy'd in and out (no alignment assumptions, no
// pointers across threads, no allocation).
//
// Why packets are copied through the ring rather than handed over as pooled buffers: a handed-over
// buffer would be freed on the consumer's thread and must find its way back to the producer's pool
// (a second ring in the other direction, and a buffer that two threads touch). Copying keeps every
// pool single-threaded, makes a full ring the only back-pressure signal, and costs one memcpy of a
// packet that is usually ~1.3 KB. bench_server measures it: BM_ForwardTwoShards against
// BM_ForwardOneShard is the whole hop (ring in, ring out, second pool copy), a few tens of ns per
// 1280-byte packet on the development VM, next to ~140 ns for the one-shard path.
//
// Outbox: the producer side of one shard. Packets go straight into the ring; a full ring drops
// the packet (the caller counts queue_tail: no room even after the queue's own head drops).
// Control messages (directory traffic, closes) must never be lost, or replicas would diverge:
// when their ring is full they are parked, in order, in a per-destination backlog that is retried
// first on every flush(); while a backlog exists, later control messages to that worker queue
// behind it so their order is kept. Only the backlog allocates, and only when a ring is full.
//
// Every worker a message was written to is recorded for wake-up (the io layer posts one
// MSG_RING / eventfd per worker per turn).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <type_traits>
#include <vector>

#include "relay/base/bytes.h"
#include "relay/protocol/key.h"
#include "relay/server/peer_directory.h"
#include "relay/server/spsc_ring.h"
#include "relay/server/types.h"

namespace derpd::server {

inline constexpr std::size_t kDefaultRingBytes = 256 * 1024;  // >= 2 records of a 64 KiB packet

class Fabric {
 public:
  // workers in [1, kMaxWorkers]; ring_bytes >= kDefaultRingBytes for 64 KiB packets to fit.
  explicit Fabric(std::uint16_t workers, std::size_t ring_bytes = kDefaultRingBytes);
  std::uint16_t workers() const { return workers_; }
  // from != to.
  SpscByteRing& ring(WorkerId from, WorkerId to) { return *rings_[std::size_t{from} * workers_ + to]; }

 private:
  std::uint16_t workers_;
  std::vector<std::unique_ptr<SpscByteRing>> rings_;  // [from * workers + to]; null when from == to
};

enum class MsgType : std::uint8_t {
  kPacket = 1,       // PacketMsg + packet bytes, to the worker owning the destination connection
  kRegister,         // RegisterMsg, to the key's home
  kUnregister,       // ConnKeyMsg, to the key's home
  kActivity,         // ActivityMsg, to the key's home (a duplicate connection sent a frame)
  kForwarderAdd,     // ConnKeyMsg (conn = mesh link), to the key's home
  kForwarderRemove,  // ConnKeyMsg (conn = mesh link), to the key's home
  kClosePeer,        // KeyMsg, to the key's home (a mesh peer asked to close the key's connections)
  kCloseConn,        // CloseConnMsg, to the worker owning the connection
  kEntryUpdate,      // EntryUpdate, from a home to every other shard
  kSwitchBarrier,    // SwitchMsg, from a home to every other shard, after the update it follows
  kSwitchAck,        // SwitchMsg, to the worker owning `conn`: the sender applied the update
};

// Duplicate-key switches (derper changes a key's active connection under its one mutex, before
// the frame that caused the change is handled). Here the change is made by the key's home and
// reaches the other replicas through their rings, so a connection that takes over a duplicated
// key waits until every replica shows it:
//   owner --kActivity / kRegister (seq)--> home: applies the change, broadcasts the EntryUpdate,
//   then a kSwitchBarrier (conn, seq) to every shard (itself included, in process);
//   each shard, on the barrier (which its ring delivers after the update): kSwitchAck to the
//   owner (the owner counts its own barrier directly).
// With one ack per shard the owner knows that no replica routes by an older state of the key.

inline constexpr std::uint8_t kPacketFromForward = 1 << 0;  // arrived as ForwardPacket (mesh)
inline constexpr std::uint8_t kPacketToLink = 1 << 1;       // destination is a mesh link: write ForwardPacket

struct PacketMsg {
  ConnRef dst;                     // destination connection (slot + generation on its worker)
  protocol::NodePublic src;
  protocol::NodePublic dst_key;
  std::uint32_t len = 0;
  std::uint8_t flags = 0;          // kPacket*
};
struct RegisterMsg {
  protocol::NodePublic key;
  ConnRef conn;
  Endpoint endpoint;
  std::uint8_t flags = 0;          // PeerPresent flags
  std::uint32_t seq = 0;           // barrier number, used when the key has other connections
};
struct ActivityMsg {
  protocol::NodePublic key;
  ConnRef conn;
  std::uint32_t seq = 0;           // barrier number (owner's counter)
};
struct SwitchMsg {
  ConnRef conn;                    // the connection waiting for the switch
  std::uint32_t seq = 0;
};
struct ConnKeyMsg {
  protocol::NodePublic key;
  ConnRef conn;
};
struct KeyMsg {
  protocol::NodePublic key;
};
struct CloseConnMsg {
  ConnRef conn;
  CloseReason reason = CloseReason::kClosedByMeshPeer;
};

static_assert(std::is_trivially_copyable_v<PacketMsg>);
static_assert(std::is_trivially_copyable_v<RegisterMsg>);
static_assert(std::is_trivially_copyable_v<ConnKeyMsg>);
static_assert(std::is_trivially_copyable_v<ActivityMsg>);
static_assert(std::is_trivially_copyable_v<SwitchMsg>);
static_assert(std::is_trivially_copyable_v<EntryUpdate>);
static_assert(std::is_trivially_copyable_v<CloseConnMsg>);

inline constexpr std::size_t kMsgTagLen = 8;

// A decoded record: type, body bytes (copy out with body_as) and trailing packet bytes.
struct MsgView {
  MsgType type{};
  Bytes body;  // aliases the ring record: valid until the record is popped
  template <typename T>
  bool body_as(T& out, Bytes* tail = nullptr) const {
    static_assert(std::is_trivially_copyable_v<T>);
    if (body.size() < sizeof(T)) return false;
    std::memcpy(&out, body.data(), sizeof(T));
    if (tail != nullptr) *tail = body.subspan(sizeof(T));
    return true;
  }
};
// False if the record is too short to carry a tag.
bool decode_msg(Bytes record, MsgView& out);

class Outbox {
 public:
  Outbox(Fabric& fabric, WorkerId self);

  // False when the ring to `to` is full (or the record cannot fit at all): nothing was sent.
  bool post_packet(WorkerId to, const PacketMsg& m, Bytes packet);

  template <typename T>
  void post_control(WorkerId to, MsgType type, const T& body) {
    static_assert(std::is_trivially_copyable_v<T>);
    post_control_bytes(to, type, Bytes(reinterpret_cast<const std::byte*>(&body), sizeof(T)));
  }

  // Retries parked control messages, oldest first. True when nothing is parked any more.
  bool flush();
  std::size_t parked() const { return parked_; }
  // Control messages that had to be parked since construction.
  std::uint64_t parked_total() const { return parked_total_; }

  // Workers written to since the last take_wakes(); appended to `out`.
  void take_wakes(std::vector<WorkerId>& out);

 private:
  void post_control_bytes(WorkerId to, MsgType type, Bytes body);
  bool write(WorkerId to, MsgType type, Bytes body, Bytes tail);
  void note_wake(WorkerId to);

  Fabric& fabric_;
  WorkerId self_;
  std::vector<std::deque<std::vector<std::byte>>> backlog_;  // per destination; each entry = tag + body
  std::size_t parked_ = 0;
  std::uint64_t parked_total_ = 0;
  std::vector<std::uint8_t> wake_flag_;
  std::vector<WorkerId> wakes_;
};

}  // namespace derpd::server
