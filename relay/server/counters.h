// Relay counters: every metric derper exports (names as Prometheus shows them, derp_*) kept per
// shard as relaxed atomics. Each shard is the only writer of its counters (its worker thread); a
// metrics thread reads them with relaxed loads and sums the shards (accumulate()).
//
// Gauges are per-shard contributions: a shard counts its own connections, its own watchers and
// the keys it is home for; the node's value is the sum over shards.
//
// Drop reasons and packet kinds are enums usable as metric labels (to_string gives derper's label
// values); every (reason, kind) pair exists from the start, at zero.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "relay/protocol/frame.h"

namespace derpd::server {

// derp_packets_dropped{reason}: derper's dropReason values.
enum class DropReason : std::uint8_t {
  kUnknownDest,       // unknown_dest: no connection for the destination key
  kUnknownDestOnFwd,  // unknown_dest_on_fwd: same, for a packet a mesh peer forwarded to us
  kGoneDisconnected,  // gone_disconnected: the destination disconnected with the packet queued
  kQueueHead,         // queue_head: destination queue full, its oldest packet dropped
  kQueueTail,         // queue_tail: no room at all (cross-worker ring full): the new packet dropped
  kWriteError,        // write_error: the write carrying the packet failed
  kDupClient,         // dup_client: key connected 2+ times with no active connection
  kCount,
};
inline constexpr std::size_t kDropReasons = static_cast<std::size_t>(DropReason::kCount);
std::string_view to_string(DropReason r);

// derp_packets_dropped{kind}: disco packets (TS💬 wrapper) vs everything else.
enum class PacketKind : std::uint8_t { kDisco, kOther, kCount };
inline constexpr std::size_t kPacketKinds = static_cast<std::size_t>(PacketKind::kCount);
std::string_view to_string(PacketKind k);

// derper counts PeerGone frames written, by reason.
std::string_view peer_gone_label(protocol::PeerGoneReason r);  // "disconnected", "not_here"

// One writer, many readers: increments are a relaxed load + store (no locked instruction).
class Counter {
 public:
  void add(std::uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  std::uint64_t load() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

class Gauge {
 public:
  void add(std::int64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  void sub(std::int64_t n = 1) { add(-n); }
  void set(std::int64_t v) { v_.store(v, std::memory_order_relaxed); }
  std::int64_t load() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> v_{0};
};

// Plain totals (one shard's snapshot, or the sum of all of them).
struct CounterTotals {
  // gauges
  std::int64_t current_connections = 0;          // derp_current_connections
  std::int64_t current_home_connections = 0;     // derp_current_home_connections (NotePreferred true)
  std::int64_t current_notideal_connections = 0; // derp_current_notideal_connections
  std::int64_t watchers = 0;                     // derp_watchers
  std::int64_t current_dup_client_keys = 0;      // derp_current_dup_client_keys
  std::int64_t current_dup_client_conns = 0;     // derp_current_dup_client_conns
  std::int64_t clients_total = 0;                // derp_clients_total: keys in the region (local or via mesh)
  std::int64_t clients_local = 0;                // derp_clients_local: keys with a connection here
  std::int64_t clients_remote = 0;               // derp_clients_remote: keys reachable only via mesh
  // counters
  std::uint64_t accepts = 0;                     // derp_accepts
  std::uint64_t bytes_received = 0;              // derp_bytes_received (SendPacket contents)
  std::uint64_t bytes_sent = 0;                  // derp_bytes_sent (RecvPacket contents)
  std::uint64_t packets_received = 0;            // derp_packets_received
  std::uint64_t packets_sent = 0;                // derp_packets_sent
  std::array<std::uint64_t, kPacketKinds> packets_received_kind{};  // derp_packets_received_kind{kind}
  std::array<std::array<std::uint64_t, kPacketKinds>, kDropReasons> packets_dropped{};  // [reason][kind]
  std::array<std::array<std::uint64_t, kPacketKinds>, kDropReasons> bytes_dropped{};    // derp_bytes_dropped
  std::uint64_t packets_forwarded_out = 0;       // derp_packets_forwarded_out
  std::uint64_t packets_forwarded_in = 0;        // derp_packets_forwarded_in
  std::uint64_t got_ping = 0;                    // derp_got_ping
  std::uint64_t sent_pong = 0;                   // derp_sent_pong
  std::uint64_t peer_gone_disconnected_frames = 0;  // derp_peer_gone_disconnected_frames
  std::uint64_t peer_gone_not_here_frames = 0;      // derp_peer_gone_not_here_frames
  std::uint64_t home_moves_in = 0;               // derp_home_moves_in
  std::uint64_t home_moves_out = 0;              // derp_home_moves_out
  std::uint64_t unknown_frames = 0;              // derp_unknown_frames
  std::uint64_t dup_client_conn_total = 0;       // derp_counter_total_dup_client_conns
  // derpd's own (not in derper)
  std::uint64_t control_deferred = 0;            // control messages parked because a ring was full
  std::uint64_t control_frames_dropped = 0;      // PeerGone frames not queued: the client's backlog was full
  std::uint64_t keepalives_sent = 0;
  std::uint64_t dup_switch_holds = 0;            // frames held until a duplicate key's switch showed everywhere
  std::uint64_t dup_switch_timeouts = 0;         // holds released before every shard had acked

  std::uint64_t dropped(DropReason r, PacketKind k) const {
    return packets_dropped[static_cast<std::size_t>(r)][static_cast<std::size_t>(k)];
  }
  std::uint64_t dropped(DropReason r) const {
    std::uint64_t n = 0;
    for (auto v : packets_dropped[static_cast<std::size_t>(r)]) n += v;
    return n;
  }
  std::uint64_t dropped_total() const;
};

// One shard's counters. Written only by the shard's worker thread.
struct ShardCounters {
  Gauge current_connections;
  Gauge current_home_connections;
  Gauge current_notideal_connections;
  Gauge watchers;
  Gauge current_dup_client_keys;
  Gauge current_dup_client_conns;
  Gauge clients_total;
  Gauge clients_local;
  Gauge clients_remote;

  Counter accepts;
  Counter bytes_received;
  Counter bytes_sent;
  Counter packets_received;
  Counter packets_sent;
  std::array<Counter, kPacketKinds> packets_received_kind;
  std::array<std::array<Counter, kPacketKinds>, kDropReasons> packets_dropped;
  std::array<std::array<Counter, kPacketKinds>, kDropReasons> bytes_dropped;
  Counter packets_forwarded_out;
  Counter packets_forwarded_in;
  Counter got_ping;
  Counter sent_pong;
  Counter peer_gone_disconnected_frames;
  Counter peer_gone_not_here_frames;
  Counter home_moves_in;
  Counter home_moves_out;
  Counter unknown_frames;
  Counter dup_client_conn_total;
  Counter control_deferred;
  Counter control_frames_dropped;
  Counter keepalives_sent;
  Counter dup_switch_holds;
  Counter dup_switch_timeouts;

  void drop(DropReason r, PacketKind k, std::size_t bytes) {
    packets_dropped[static_cast<std::size_t>(r)][static_cast<std::size_t>(k)].add(1);
    bytes_dropped[static_cast<std::size_t>(r)][static_cast<std::size_t>(k)].add(bytes);
  }

  // Adds this shard's values into `t` (relaxed loads; callable from any thread).
  void accumulate(CounterTotals& t) const;
  CounterTotals snapshot() const {
    CounterTotals t;
    accumulate(t);
    return t;
  }
};

}  // namespace derpd::server
