// DerpMetrics: the DERP families of /metrics (the ones derper users graph, under Prometheus
// names), plus derpd's own operational families, summed over the workers at scrape time.
//
// Sources are std::function callbacks run on the scraping thread, each adding one worker's (or
// one component's) current values into a DerpTotals with relaxed loads, exactly like StunMetrics.
// Hot-path counters stay single-writer relaxed atomics in their owners (server::ShardCounters,
// io::TcpCounters, io::TcpListenerCounters, the daemon's DerpConnCounters); nothing is copied
// between scrapes, so there is one copy of every count and a sum over monotonic counters stays
// monotonic while the set of sources is fixed.
//
// Naming (derper's expvar name -> derpd's), every label present from the first scrape on:
//   gauge_current_connections            derp_current_connections
//   gauge_current_home_connections       derp_current_home_connections
//   gauge_current_notideal_connections   derp_current_notideal_connections
//   gauge_watchers                       derp_watchers
//   gauge_current_dup_client_keys        derp_current_dup_client_keys
//   gauge_current_dup_client_conns       derp_current_dup_client_conns
//   gauge_clients_local / _remote        derp_clients{location="local"|"remote"} (total = sum)
//   counter_total_dup_client_conns       derp_dup_client_conns_total
//   accepts                              derp_accepts_total
//   bytes_received / bytes_sent          derp_bytes_received_total / derp_bytes_sent_total
//   packets_received / packets_sent      derp_packets_received_total / derp_packets_sent_total
//   counter_packets_received_kind{kind}  derp_packets_received_kind_total{kind}
//   derp_packets_dropped{reason,kind}    derp_packets_dropped_total{reason,kind}
//   derp_bytes_dropped{reason,kind}      derp_bytes_dropped_total{reason,kind}
//   packets_forwarded_out / _in          derp_packets_forwarded_out_total / _in_total
//   got_ping / sent_pong                 derp_got_ping_total / derp_sent_pong_total
//   peer_gone_disconnected_frames        derp_peer_gone_frames_total{reason="disconnected"}
//   peer_gone_not_here_frames            derp_peer_gone_frames_total{reason="not_here"}
//   home_moves_in / home_moves_out       derp_home_moves_total{direction="in"|"out"}
//   unknown_frames                       derp_unknown_frames_total
//   bootstrap_dns_requests               derpd_bootstrap_dns_requests_total
//   bootstrap_dns_published_hits         derpd_bootstrap_dns_queries_total{result="published_hit"}
//   bootstrap_dns_unpublished_hits       derpd_bootstrap_dns_queries_total{result="unpublished_hit"}
//   bootstrap_dns_unpublished_misses     derpd_bootstrap_dns_queries_total{result="miss"}
// derpd only: derpd_workers, derpd_derp_workers_serving, derpd_control_deferred_total,
// derpd_control_frames_dropped_total, derpd_keepalives_sent_total, derpd_http_requests_total,
// derpd_derp_upgrades_total{transport}, derpd_tls_errors_total, derpd_handshake_errors_total,
// derpd_protocol_errors_total, derpd_timeouts_total, derpd_tcp_* (listener and connection
// counters), derpd_bootstrap_dns_resolutions_total{result}, derpd_bootstrap_dns_names{list}.
//
// Thread-safety: add_source()/set_workers() and Collect() may run on any threads.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string_view>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "relay/io/tcp_context.h"
#include "relay/io/tcp_listener.h"
#include "relay/server/counters.h"

namespace derpd::server {
class RelayShard;
}

namespace derpd::metrics {

inline constexpr std::size_t kTcpErrors = static_cast<std::size_t>(io::TcpError::kCount);

// The daemon's per-connection lifecycle counters (daemon::DerpConnCounters), summed.
struct DerpConnTotals {
  std::uint64_t http_requests = 0;       // request heads parsed on the DERP / HTTP ports
  std::uint64_t upgrades = 0;            // /derp upgrades (Upgrade: DERP, fast start or 101)
  std::uint64_t websocket_upgrades = 0;  // /derp upgrades over WebSocket
  std::uint64_t tls_errors = 0;
  std::uint64_t handshake_errors = 0;
  std::uint64_t protocol_errors = 0;
  std::uint64_t timeouts = 0;
};

// The DERP port's TCP listener and connection counters, summed.
struct TcpTotals {
  // io::TcpListenerCounters
  std::uint64_t accepted = 0;
  std::uint64_t refused = 0;
  std::uint64_t fd_exhausted = 0;
  std::uint64_t no_memory = 0;
  std::uint64_t accept_errors = 0;  // any other accept error
  std::uint64_t accept_backoffs = 0;
  // io::TcpCounters
  std::uint64_t opened = 0;
  std::uint64_t closed = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t no_buffers = 0;
  std::uint64_t write_refused = 0;
  std::uint64_t submit_failed = 0;
  std::uint64_t registered = 0;
  std::uint64_t register_failed = 0;
  std::array<std::uint64_t, kTcpErrors> errors{};  // indexed by io::TcpError
};

// The /bootstrap-dns endpoint and its resolver (daemon::BootstrapDns), at scrape time.
struct BootstrapDnsTotals {
  std::uint64_t requests = 0;             // every /bootstrap-dns request
  std::uint64_t published_hits = 0;       // ?q= for a published name (answer: the whole list)
  std::uint64_t unpublished_hits = 0;     // ?q= answered from the unpublished names
  std::uint64_t misses = 0;               // ?q= for a name with no answer in either list
  std::uint64_t resolved = 0;             // lookups that gave addresses
  std::uint64_t no_address = 0;           // lookups that said the name has none
  std::uint64_t failed = 0;               // lookups that failed (previous answer kept)
  std::int64_t published_names = 0;       // names with an answer now
  std::int64_t unpublished_names = 0;
};

struct DerpTotals {
  server::CounterTotals relay;        // every shard: server::ShardCounters::accumulate()
  std::int64_t workers_serving = 0;   // shards that are serving (sources add 1 each)
  DerpConnTotals conn;
  TcpTotals tcp;
  BootstrapDnsTotals bootstrap_dns;
};

// Adds an io counter set into the totals (relaxed loads; any thread).
void accumulate(TcpTotals& t, const io::TcpListenerCounters& c);
void accumulate(TcpTotals& t, const io::TcpCounters& c);

class DerpMetrics final : public prometheus::Collectable {
 public:
  // Adds current values into the totals (relaxed loads). Called on the scraping thread; must stay
  // callable (and whatever it reads alive) for the life of this object, or until scraping stops.
  using Source = std::function<void(DerpTotals&)>;

  void add_source(Source s);
  // A source for one worker's relay shard, published by the worker in `slot` while it serves
  // (null otherwise: that worker then adds nothing, and does not count in workers_serving).
  // `slot` must outlive the scraping; the shard must stay alive while published.
  static Source shard_source(const std::atomic<const server::RelayShard*>& slot);
  // derpd_workers: the configured worker count.
  void set_workers(std::int64_t n) { workers_.store(n, std::memory_order_relaxed); }

  // The sum over every source, now.
  DerpTotals totals() const;

  std::vector<prometheus::MetricFamily> Collect() const override;
  // The families for given totals (what Collect() renders; for tests and the exit summary).
  std::vector<prometheus::MetricFamily> families(const DerpTotals& t) const;

  // Label values in exposition order.
  static std::vector<std::string_view> drop_reason_labels();       // server::to_string(DropReason)
  static std::vector<std::string_view> packet_kind_labels();       // disco, other
  static std::vector<std::string_view> tcp_error_labels();         // io::to_string(TcpError)

 private:
  std::atomic<std::int64_t> workers_{0};
  mutable std::mutex mu_;
  std::vector<Source> sources_;  // guarded by mu_
};

}  // namespace derpd::metrics
