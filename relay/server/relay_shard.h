// RelayShard: the DERP relay logic of one worker, as a state machine with no I/O. The io layer
// owns the sockets, TLS, the handshake and frame parsing; it feeds the shard events and pulls
// what the shard decided.
//
// Inputs (all on the worker's thread; `now` is the worker's monotonic clock):
//   note_accept()                     a /derp upgrade was accepted (derp_accepts)
//   client_registered(params, now)    handshake done; returns the ClientId. Once
//                                     registration_visible(id), write ServerInfo to the
//                                     connection, then start pulling (below).
//   frame_may_proceed(id, now)        before each frame: false means hold it (duplicate keys,
//                                     below) until out.resume lists the id.
//   frame_received(id, msg, now)      one parsed client frame (parse_client_message after
//                                     server_limits()); FrameErrors are the io layer's: close and
//                                     report client_closed(kProtocolError). Returns false once
//                                     the client is closing: stop reading it.
//   client_closed(id, how)            the connection is gone (after a requested close too).
//                                     Exactly once per registered id; the id is invalid after.
//   tick(now)                         keep-alive timers, parked control retries. Call at least
//                                     every next_deadline() (or each loop turn).
//   poll_inbox(budget)                handle up to `budget` messages other workers sent us.
//   mesh_link_opened/peer_present/peer_gone   our outbound mesh links (see below).
//
// Outputs:
//   take_outputs(out): since the last call,
//     out.writable  clients with new bytes to send (each once). For each: while
//                   has_output(id) and the connection has room, reserve space, n = pull(id, span),
//                   commit n. pull() copies whole or partial frames (a frame may span pulls) and
//                   never blocks; bytes not pulled stay queued under the queue limits, so a
//                   connection that cannot send costs bounded memory. When a connection drains,
//                   pull again if has_output(id).
//     out.closes    (id, reason): close the connection now (abortive, as derper's nc.Close), then
//                   call client_closed(id, ConnEnd::kRequested). The shard already unregistered it.
//     out.wake      workers this shard wrote messages to: wake each (MSG_RING or eventfd) so it
//                   calls poll_inbox().
//     out.resume    clients whose held frame may now go to frame_received(); then read on.
//   write_timeout(id): the per-write deadline derper uses (2 s, 30 s for mesh peers).
//
// Cross-worker flow: shards share one Fabric (SPSC rings for every ordered worker pair). A
// SendPacket for a key whose active connection lives on worker W is copied into ring(self, W);
// W's poll_inbox() copies it into W's packet pool and the destination's queue. Directory changes
// go to the key's home shard and come back as EntryUpdates (peer_directory.h). A packet whose
// destination moved or left meanwhile drops as unknown_dest on the owning worker.
//
// Duplicate keys: derper makes the connection that most recently sent a frame the key's active
// one, under its one mutex, before it handles that frame; so whatever the frame causes (its Pong,
// a packet it sends) happens after every sender routes to the new writer. Here the key's home
// makes the change and the replicas learn it through their rings, so a connection taking over
// holds that frame until every shard acknowledged the change (the barrier in cross_worker.h):
// frame_may_proceed() returns false, the io layer keeps the frame and stops reading the
// connection, and out.resume gives the go-ahead (at worst after ShardConfig::switch_wait). The
// same barrier follows a registration while the key has other connections, and
// registration_visible() waits for it, so ServerInfo means every shard routes to the newcomer.
// A connection that is already active needs no hold (no route changes); a key with one
// connection never pays more than one flag test per frame. When connections of one key send at
// the same moment, the home's order decides, as derper's mutex does.
//
// Mesh: a client that presented the mesh key may WatchConns (PeerPresent for every connected
// key, then each registration; PeerGone when a key's last connection leaves), ForwardPacket
// (delivered to local connections only, never forwarded again) and ClosePeer. Outbound: when the
// daemon dials another node of the region and watches it, it registers the link here
// (mesh_link_opened) and reports that node's PeerPresent / PeerGone; packets for keys reachable
// only through a link are queued on the link as ForwardPacket frames, pulled like a client's.
// The link's own protocol (ServerKey, ClientInfo, WatchConns, answering pings) is the caller's.
//
// Thread-safety: everything is owned by the worker thread, except counters(), which any thread
// may read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <unordered_map>
#include <vector>

#include "relay/base/bytes.h"
#include "relay/protocol/frame.h"
#include "relay/protocol/key.h"
#include "relay/protocol/messages.h"
#include "relay/server/client.h"
#include "relay/server/counters.h"
#include "relay/server/cross_worker.h"
#include "relay/server/packet_pool.h"
#include "relay/server/peer_directory.h"
#include "relay/server/types.h"

namespace derpd::server {

struct ShardConfig {
  WorkerId worker = 0;
  protocol::NodePublic server_key;   // WatchConns from a connection with our own key is ignored
  std::size_t queue_depth = 32;      // derper's perClientSendQueueDepth (each of normal / disco)
  DupPolicy dup_policy = DupPolicy::kLastWriterIsActive;
  Nanos keepalive_interval = protocol::kKeepAliveInterval;
  Nanos keepalive_max_jitter = protocol::kKeepAliveMaxJitter;  // per client, uniform in [0, max)
  Nanos write_timeout = std::chrono::seconds(2);                // derper's default tcp write timeout
  Nanos mesh_write_timeout = std::chrono::seconds(30);          // privilegedWriteTimeout
  Nanos switch_wait = std::chrono::seconds(1);  // longest hold of a frame for a dup-key switch
  Nanos peer_gone_interval = std::chrono::seconds(1);           // PeerGone(not here) limiter
  std::uint32_t peer_gone_burst = 3;
  std::size_t max_control_bytes = 64 * 1024;     // a client's unsent PeerGone frames; more are dropped
  std::size_t max_watcher_backlog = 32u << 20;   // a watcher's unsent PeerPresent/PeerGone; more: close
  std::size_t pool_max_free_bytes = 32u << 20;   // packet buffers kept for reuse
  // Random bits for keep-alive jitter. Default: a SplitMix64 sequence seeded from `worker`.
  std::function<std::uint64_t()> random;
};

struct CloseRequest {
  ClientId id;
  CloseReason reason = CloseReason::kShutdown;
};

struct ShardOutputs {
  std::vector<ClientId> writable;
  std::vector<CloseRequest> closes;
  std::vector<WorkerId> wake;
  std::vector<ClientId> resume;
  void clear() {
    writable.clear();
    closes.clear();
    wake.clear();
    resume.clear();
  }
  bool empty() const { return writable.empty() && closes.empty() && wake.empty() && resume.empty(); }
};

// For tests, logs and the debug page.
struct ClientStats {
  std::size_t queued_packets = 0;
  std::size_t queued_disco = 0;
  std::size_t queued_bytes = 0;    // packet bytes in both queues
  std::size_t control_bytes = 0;   // serialized control frames waiting
  std::size_t control_capacity = 0;
  std::size_t pending_bytes = 0;   // everything pull() would still produce
  std::size_t saw_src = 0;
  bool preferred = false;
  bool watcher = false;
  bool closing = false;
  Nanos keepalive_period{0};
};

class RelayShard {
 public:
  RelayShard(ShardConfig config, Fabric& fabric);
  ~RelayShard();
  RelayShard(const RelayShard&) = delete;
  RelayShard& operator=(const RelayShard&) = delete;

  // --- inputs ----------------------------------------------------------------------------------
  void note_accept() { counters_.accepts.add(); }
  ClientId client_registered(const ClientParams& params, Nanos now);
  // Duplicate keys (see above): whether the client's next frame may go to frame_received() now.
  // False: keep the frame, stop reading, and pass it on when out.resume lists the id.
  bool frame_may_proceed(ClientId id, Nanos now);
  // Ends a hold early (the io layer cannot buffer more input): the held frame may go to
  // frame_received() now, without the ordering. Counted as a dup_switch_timeout.
  void release_held(ClientId id);
  // True once ServerInfo may be sent: this shard's replica routes the key to `id` and, if the key
  // has other connections, every shard acknowledged the registration.
  bool registration_visible(ClientId id) const;
  bool frame_received(ClientId id, const protocol::ClientMessage& msg, Nanos now);
  void client_closed(ClientId id, ConnEnd how);
  void tick(Nanos now);
  std::size_t poll_inbox(std::size_t budget = 1024);
  // Earliest time tick() has work (a keep-alive is due); nullopt if none is scheduled.
  std::optional<Nanos> next_deadline() const;
  // Asks every connection to close (ShardOutputs::closes).
  void close_all(CloseReason reason);

  // Outbound mesh links.
  ClientId mesh_link_opened(const protocol::NodePublic& peer_server_key, Nanos now);
  void mesh_link_peer_present(ClientId link, const protocol::NodePublic& key);
  void mesh_link_peer_gone(ClientId link, const protocol::NodePublic& key);

  // --- outputs ---------------------------------------------------------------------------------
  // Moves everything produced since the last call into `out` (whose old contents are dropped;
  // the vectors are swapped, so a steady state allocates nothing).
  void take_outputs(ShardOutputs& out);
  bool has_output(ClientId id) const;
  std::size_t pending_bytes(ClientId id) const;
  // Copies up to out.size() bytes of frames for `id`; returns the count (0: nothing, or unknown id).
  std::size_t pull(ClientId id, MutBytes out);
  Nanos write_timeout(ClientId id) const;

  // --- introspection ---------------------------------------------------------------------------
  WorkerId worker() const { return cfg_.worker; }
  const ShardConfig& config() const { return cfg_; }
  const ShardCounters& counters() const { return counters_; }
  const PeerDirectory& directory() const { return directory_; }
  const HomeDirectory& home() const { return home_; }
  const PacketPool& pool() const { return pool_; }
  const Outbox& outbox() const { return outbox_; }
  std::size_t clients() const { return arena_.live(); }
  std::optional<ClientStats> client_stats(ClientId id) const;
  // Node-wide connection for a key as this shard's replica sees it.
  ConnRef lookup(const protocol::NodePublic& key) const;

 private:
  struct KeepAliveDue {
    Nanos due;
    std::uint32_t slot;
    std::uint32_t gen;
    bool operator>(const KeepAliveDue& o) const { return due > o.due; }
  };

  ConnRef ref(ClientId id) const { return ConnRef{cfg_.worker, id.slot, id.gen}; }

  // Frames from clients.
  void note_activity(ClientId id, Client& c);
  void request_switch(ClientId id, Client& c, Client::Switch state);
  void handle_send(ClientId id, Client& c, const protocol::SendPacket& m, Nanos now);
  void handle_forward(ClientId id, Client& c, const protocol::ForwardPacket& m, Nanos now);
  void handle_watch(ClientId id, Client& c);
  void set_preferred(Client& c, bool v, Nanos now);
  void peer_gone_limited(ClientId id, Client& c, const protocol::NodePublic& dst, Bytes packet, Nanos now);

  // Delivery.
  void deliver(const ConnRef& to, const protocol::NodePublic& src, const protocol::NodePublic& dst, Bytes packet,
               std::uint8_t flags, Nanos now);
  void enqueue_local(ClientId id, const protocol::NodePublic& src, const protocol::NodePublic& dst, Bytes packet,
                     std::uint8_t flags, Nanos now);
  void drop(DropReason r, Bytes packet) { counters_.drop(r, packet_kind(packet), packet.size()); }
  void drop(DropReason r, const PacketBuf& p) { counters_.drop(r, p.kind, p.len); }

  // Per-client output.
  void mark_ready(ClientId id, Client& c);
  void queue_control(ClientId id, Client& c, Bytes frame);
  void queue_peer_gone(ClientId id, Client& c, const protocol::NodePublic& peer, protocol::PeerGoneReason r);
  void queue_peer_present(ClientId id, Client& c, const protocol::NodePublic& peer, const Endpoint& ep,
                          std::uint8_t flags);
  bool start_next_frame(ClientId id, Client& c);
  void note_send_from_src(ClientId id, Client& c, const protocol::NodePublic& src);

  // Lifecycle.
  void request_close(ClientId id, Client& c, CloseReason reason);
  void unregister(ClientId id, Client& c);
  void discard_output(Client& c);
  void schedule_keepalive(ClientId id, Nanos due);

  // Home (authority) and replica.
  template <typename T>
  void to_home(const protocol::NodePublic& key, MsgType type, const T& body);
  void home_message(MsgType type, const MsgView& m);
  void broadcast(const EntryUpdate& u);
  void apply_update(const EntryUpdate& u);
  void close_conn(const ConnRef& c, CloseReason reason);
  void handle_message(const MsgView& m);
  void notify_region_gone(const protocol::NodePublic& key);
  void apply_dup_delta(const DupDelta& d);
  void broadcast_barrier(const ConnRef& conn, std::uint32_t seq);
  void switch_barrier(const SwitchMsg& m);
  void switch_ack(const SwitchMsg& m);
  void publish_home_gauges();

  ShardConfig cfg_;
  Fabric& fabric_;
  Outbox outbox_;
  ShardCounters counters_;
  PacketPool pool_;
  ClientArena arena_;
  PeerDirectory directory_;
  HomeDirectory home_;
  Nanos now_{0};
  std::uint64_t rng_state_;

  // Local clients by key (for the dup hints carried by EntryUpdates).
  std::unordered_map<protocol::NodePublic, std::vector<std::uint32_t>> local_by_key_;
  // For each source key, the local clients that were sent packets from it (derper's
  // peerGoneWatchers).
  std::unordered_map<protocol::NodePublic, std::vector<ClientId>> peer_gone_watchers_;
  std::vector<ClientId> watchers_;  // local mesh clients that sent WatchConns (closed ones removed lazily)
  std::vector<ClientId> held_;      // clients with Switch::kHeld (others removed lazily), for switch_wait
  std::uint32_t switch_seq_ = 0;    // last barrier number handed out
  int watcher_loop_depth_ = 0;
  std::priority_queue<KeepAliveDue, std::vector<KeepAliveDue>, std::greater<>> keepalives_;
  ShardOutputs out_;
  std::size_t poll_start_ = 0;  // round-robin over incoming rings
  int poll_depth_ = 0;          // poll_inbox() called from inside a frame's handling
};

template <typename T>
void RelayShard::to_home(const protocol::NodePublic& key, MsgType type, const T& body) {
  const WorkerId h = home_of(key, fabric_.workers());
  if (h == cfg_.worker) {
    home_message(type, MsgView{type, Bytes(reinterpret_cast<const std::byte*>(&body), sizeof(T))});
  } else {
    outbox_.post_control(h, type, body);
  }
}

}  // namespace derpd::server
