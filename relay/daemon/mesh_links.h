// MeshLinks: this node's outbound DERP region mesh links, one per `mesh-with` peer.
//
// Each link dials its peer as a DERP client with THIS node's server key and the region mesh key
// (client/derp, blocking), checks that the peer is not this node (derper's self-connect rule: the
// server key it answers with is ours; then the link stops for good), sends WatchConns, and from
// then on reports the peer's PeerPresent / PeerGone and writes the ForwardPacket frames our relay
// queues for keys that only the peer has. When the connection breaks it reconnects after a
// jittered, doubling backoff (at most 5 s, derper's retry interval), until stop().
//
// Threads: one per link. The client library blocks (connect, TLS, writes with deadlines), and one
// unreachable or slow peer must never delay another's traffic or reconnects; a region has a
// handful of nodes, so a thread each costs little. The worker threads never block on a link.
//
// Between a link thread and the worker whose shard holds the link (links are spread over the
// workers: link i belongs to worker i % workers) there is a LinkChannel: two SpscByteRings and
// two eventfds.
//   link -> worker  events: opened(peer server key), present(key), gone(key), closed(how); the
//                   worker's eventfd (MeshBridge::wake_fd) is written once per batch.
//   worker -> link  the raw ForwardPacket frame stream the shard produces for the link (pulled
//                   like a client's output); the link's own eventfd wakes it when it sleeps.
// Every record carries the link's connection generation, so bytes pulled for a connection that
// already broke are discarded and never start a new connection mid-frame.
// Backpressure: a full event ring makes the link thread wait (it stops reading its socket); a full
// frame ring leaves the frames queued in the shard under its usual per-client limits
// (drop-oldest), and the link thread wakes the worker once it has made room.
//
// Between turns the link thread sleeps in one poll() on its eventfd and the peer's socket, so
// forwarded packets leave and presence changes reach the shard at once, and an idle link does not
// wake at all (until its read-idle deadline, which the peer's keepalives keep pushing back).
//
// Worker side (MeshBridge), on the worker's thread:
//   wake_fd()            watch it for readability (io_uring read or poll); then call on_wake().
//   on_wake(shard, now)  applies the links' events to the shard (mesh_link_opened / peer_present /
//                        peer_gone / client_closed) and pulls every open link's output into its
//                        frame ring. Call take_outputs() afterwards as after any shard input.
//   owns(id)             for each id in ShardOutputs::writable: when the bridge owns it, call
//                        pump(shard, id) instead of looking for a TCP connection.
//   close_requested(shard, id)  for each ShardOutputs::closes entry the bridge owns (close_all at
//                        shutdown): reports client_closed(kRequested); the link reconnects.
//   Also call on_wake() from the periodic tick (cheap when there is nothing to do).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "config/config.h"
#include "relay/base/counter.h"
#include "relay/base/result.h"
#include "relay/metrics/mesh_metrics.h"
#include "relay/protocol/key.h"
#include "relay/server/relay_shard.h"
#include "relay/server/spsc_ring.h"
#include "relay/server/types.h"

namespace derpd::daemon {

// --- configuration -------------------------------------------------------------------------------

// One peer to dial, resolved from a `mesh-with` entry.
struct MeshTarget {
  std::string entry;      // as written in mesh-with (for logs and the metrics' peer label)
  std::string url;        // "http(s)://host[:port]/derp": Host header, TLS name (SNI and certificate)
  std::string dial_host;  // when non-empty, the address dialed instead of the URL's host (same port)
};

// One mesh-with entry. Forms (derper's, plus an explicit URL for tests and unusual setups):
//   "host[:port]"            dial scheme://host[:port]/derp
//   "host[:port]/dialhost"   connect to dialhost (same port) but speak to host: SNI, certificate
//                            name and Host header are host's, as derper's SetURLDialer does
//   "http(s)://host[:port]/path"  dial exactly that URL
// The scheme of the host forms is https when `tls` (this node serves TLS, derper's case) and http
// otherwise. Returns std::nullopt when the entry names this node: its host is `own_hostname`
// (case-insensitive) with no port or with `own_port`. A malformed entry is an error (message).
Result<std::optional<MeshTarget>, std::string> parse_mesh_target(std::string_view entry, bool tls,
                                                                std::string_view own_hostname,
                                                                std::uint16_t own_port);

struct MeshOptions {
  protocol::NodePrivate server_private;  // this node's key: the links log in with it
  protocol::MeshKey mesh_key;
  std::vector<MeshTarget> targets;
  unsigned workers = 1;                   // links are spread over this many workers
  std::chrono::milliseconds connect_timeout{5'000};  // dial + TLS + upgrade + login (bounds stop())
  std::chrono::milliseconds write_timeout{5'000};    // one ForwardPacket write (derper: 5 s)
  std::chrono::milliseconds min_backoff{250};         // first retry after [min/2, min]
  std::chrono::milliseconds max_backoff{5'000};       // derper's retry interval
  std::chrono::milliseconds read_idle_timeout{protocol::kClientReadTimeout};  // nothing from the peer: redial
  std::size_t event_ring_bytes = 256 << 10;
  std::size_t frame_ring_bytes = 1 << 20;
};

// The options for cfg's mesh-with list (entries naming this node dropped). `tls`: this node serves
// TLS; `derp_port`: its bound DERP port. Throws std::runtime_error for a malformed entry, or
// mesh-with without a mesh key (derper: "--mesh-with requires --mesh-psk-file").
MeshOptions mesh_options_from_config(const config::Config& cfg, const protocol::NodePrivate& server_private,
                                     const protocol::MeshKey& mesh_key, bool tls, std::uint16_t derp_port,
                                     unsigned workers);

// --- the channel between one link thread and its worker ------------------------------------------

enum class LinkEventType : std::uint8_t { kOpened, kPresent, kGone, kClosed };

struct LinkEvent {
  LinkEventType type = LinkEventType::kOpened;
  server::ConnEnd how = server::ConnEnd::kPeerClosed;  // kClosed
  std::uint32_t gen = 0;                               // connection generation (1, 2, ...)
  protocol::NodePublic key;                            // kOpened: the peer's server key; else the peer's client
};

// Counters of one link (relaxed atomics; any thread reads them).
struct LinkCounters {
  RelaxedCounter connects;          // logins that succeeded (WatchConns sent)
  RelaxedCounter connect_failures;
  RelaxedCounter disconnects;       // established connections that broke
  RelaxedCounter present;           // PeerPresent received
  RelaxedCounter gone;              // PeerGone received
  RelaxedCounter frames_out;        // ForwardPacket frames written to the peer
  RelaxedCounter bytes_out;         // their packet bytes
  RelaxedCounter bytes_discarded;   // pulled for a connection that had broken meanwhile
  RelaxedCounter bad_frames;        // the frame stream from the shard did not parse (never expected)
  RelaxedCounter wakeups;           // times the connected link thread woke from its wait
  std::atomic<std::int64_t> peers{0};  // clients the peer reports present now (mesh links not counted)
  std::atomic<bool> connected{false};
  std::atomic<bool> self{false};    // the peer turned out to be this node: the link stopped
};

// Public so that tests can drive either side; production code uses it through MeshLinks and
// MeshBridge. Exactly one link thread and one worker thread use a channel.
class LinkChannel {
 public:
  // `worker_wake_fd`: the owning worker's MeshBridge eventfd (not owned).
  LinkChannel(int worker_wake_fd, std::size_t event_ring_bytes, std::size_t frame_ring_bytes);
  ~LinkChannel();
  LinkChannel(const LinkChannel&) = delete;
  LinkChannel& operator=(const LinkChannel&) = delete;

  // --- link side ---------------------------------------------------------------------------------
  // Queues an event; false when the ring is full (then wake_worker() and wait()).
  bool try_post(const LinkEvent& e);
  // Wakes the worker (after a batch of events).
  void wake_worker();
  // Consumes up to `max_records` records of the frame stream: `sink(bytes)` for each record of
  // generation `gen` (a record holds whole or partial frames, in order); records of other
  // generations are dropped (their bytes counted in `discarded`). Stops early after a sink that
  // returns false. Returns the records consumed; wakes the worker when it had found the ring full.
  template <typename Sink>
  std::size_t consume_frames(std::uint32_t gen, Sink&& sink, std::size_t max_records,
                             RelaxedCounter* discarded = nullptr);
  bool frames_pending();
  // Sleeps until the worker wakes this link (frames queued, events consumed), wake_link() is called,
  // `peer_fd` (when >= 0) turns readable, or `timeout`. With `return_on_frames`, returns at once
  // when frames are already waiting.
  void wait(std::chrono::milliseconds timeout, bool return_on_frames = true, int peer_fd = -1);

  // --- worker side -------------------------------------------------------------------------------
  bool pop_event(LinkEvent& e);
  // Pulls `id`'s pending output (generation `gen`) into the frame ring. Returns the bytes moved.
  std::size_t pull_frames(server::RelayShard& shard, server::ClientId id, std::uint32_t gen);
  // Wakes the link thread if it sleeps (after events were consumed or frames queued).
  void wake_link_if_sleeping();

  // --- either ------------------------------------------------------------------------------------
  // Asks the link thread to drop its connection and redial (the worker closed the link).
  void request_reset();
  bool take_reset_request() { return reset_.exchange(false, std::memory_order_acq_rel); }
  // Wakes the link thread unconditionally (stop).
  void wake_link();
  int link_fd() const { return link_fd_; }

 private:
  static constexpr std::size_t kFrameHeader = 8;  // u32 generation + u32 length, before the bytes
  void wake_worker_for_room();

  int worker_fd_;                 // not owned
  int link_fd_ = -1;              // owned eventfd: wakes the link thread
  server::SpscByteRing events_;   // link -> worker
  server::SpscByteRing frames_;   // worker -> link
  std::atomic<bool> link_sleeping_{false};
  std::atomic<bool> worker_wants_room_{false};
  std::atomic<bool> reset_{false};
};

// --- worker side -----------------------------------------------------------------------------------

class MeshBridge {
 public:
  // Creates the worker's wake eventfd; throws std::runtime_error when it cannot.
  MeshBridge();
  ~MeshBridge();
  MeshBridge(const MeshBridge&) = delete;
  MeshBridge& operator=(const MeshBridge&) = delete;

  // Registers a link's channel (before any thread runs; the channel outlives the bridge's use).
  void add(LinkChannel* channel);

  int wake_fd() const { return wake_fd_; }
  // See the file comment. Reads (resets) the eventfd itself, so a poll-style watcher also works.
  void on_wake(server::RelayShard& shard, server::Nanos now);
  bool owns(server::ClientId id) const;
  void pump(server::RelayShard& shard, server::ClientId id);
  void close_requested(server::RelayShard& shard, server::ClientId id);

  // Links currently registered with the shard (for tests and logs).
  std::size_t open_links() const;
  // Events applied per link per on_wake() before yielding (the bridge re-arms its own wake).
  static constexpr std::size_t kEventBudget = 4096;

 private:
  struct Slot {
    LinkChannel* channel = nullptr;
    bool open = false;
    std::uint32_t gen = 0;
    server::ClientId id;
  };
  void close_slot(server::RelayShard& shard, Slot& s, server::ConnEnd how);

  int wake_fd_ = -1;
  std::vector<Slot> slots_;  // owned by the worker thread after start
};

// --- the links -------------------------------------------------------------------------------------

class MeshLinks {
 public:
  // Creates the channels and one bridge per worker that owns a link; no thread yet.
  explicit MeshLinks(MeshOptions options);
  ~MeshLinks();  // stop()
  MeshLinks(const MeshLinks&) = delete;
  MeshLinks& operator=(const MeshLinks&) = delete;

  // Worker w's bridge, or nullptr when w owns no link. Valid until destruction.
  MeshBridge* bridge(unsigned worker) const;
  std::size_t size() const { return links_.size(); }
  const MeshTarget& target(std::size_t i) const;
  const LinkCounters& counters(std::size_t i) const;
  // Appends every link's counters as /metrics shows them (relaxed loads; any thread).
  void report(std::vector<metrics::MeshLinkTotals>& out) const;

  // Starts the link threads (call once the workers serve).
  void start();
  // Stops and joins them; bounded by connect_timeout / write_timeout of a call in progress.
  void stop();

 private:
  struct Link;
  void run(Link& link);

  MeshOptions options_;
  protocol::NodePublic own_key_;
  std::vector<std::unique_ptr<MeshBridge>> bridges_;  // index = worker; null when it owns no link
  std::vector<std::unique_ptr<Link>> links_;
  std::atomic<bool> stop_{false};
  bool started_ = false;
};

// --- template ----------------------------------------------------------------------------------------

template <typename Sink>
std::size_t LinkChannel::consume_frames(std::uint32_t gen, Sink&& sink, std::size_t max_records,
                                        RelaxedCounter* discarded) {
  std::size_t n = 0;
  bool more = true;
  while (more && n < max_records) {
    Bytes rec = frames_.front();
    if (rec.empty()) break;
    std::uint32_t rgen = 0, len = 0;
    if (rec.size() >= kFrameHeader) {
      std::memcpy(&rgen, rec.data(), 4);
      std::memcpy(&len, rec.data() + 4, 4);
    }
    const Bytes body = rec.size() >= kFrameHeader && len <= rec.size() - kFrameHeader
                           ? rec.subspan(kFrameHeader, len)
                           : Bytes{};
    if (rgen == gen && !body.empty()) {
      more = sink(body);
    } else if (discarded != nullptr) {
      discarded->inc(body.size());
    }
    frames_.pop();
    ++n;
  }
  if (n != 0) wake_worker_for_room();
  return n;
}

}  // namespace derpd::daemon
