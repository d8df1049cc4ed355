#include "relay/metrics/derp_metrics.h"

#include <string>

#include "relay/metrics/family_builder.h"
#include "relay/server/relay_shard.h"

namespace derpd::metrics {

using detail::d;

namespace {

// A family over every drop reason and packet kind.
void by_reason_and_kind(detail::FamilyBuilder& f, const decltype(server::CounterTotals::packets_dropped)& table) {
  for (std::size_t i = 0; i < server::kDropReasons; ++i)
    for (std::size_t k = 0; k < server::kPacketKinds; ++k)
      f.sample(d(table[i][k]), {{"reason", server::to_string(static_cast<server::DropReason>(i))},
                                {"kind", server::to_string(static_cast<server::PacketKind>(k))}});
}

}  // namespace

void accumulate(TcpTotals& t, const io::TcpListenerCounters& c) {
  t.accepted += c.accepted.get();
  t.refused += c.refused.get();
  t.fd_exhausted += c.fd_exhausted.get();
  t.no_memory += c.no_memory.get();
  t.accept_errors += c.accept_errors.get();
  t.accept_backoffs += c.backoffs.get();
}

void accumulate(TcpTotals& t, const io::TcpCounters& c) {
  t.opened += c.opened.get();
  t.closed += c.closed.get();
  t.bytes_received += c.bytes_received.get();
  t.bytes_sent += c.bytes_sent.get();
  t.no_buffers += c.no_buffers.get();
  t.write_refused += c.write_refused.get();
  t.submit_failed += c.submit_failed.get();
  t.registered += c.registered.get();
  t.register_failed += c.register_failed.get();
  for (std::size_t i = 0; i < kTcpErrors; ++i) t.errors[i] += c.errors[i].get();
}

void DerpMetrics::add_source(Source s) {
  std::lock_guard lock(mu_);
  sources_.push_back(std::move(s));
}

DerpMetrics::Source DerpMetrics::shard_source(const std::atomic<const server::RelayShard*>& slot) {
  return [&slot](DerpTotals& t) {
    if (const server::RelayShard* shard = slot.load(std::memory_order_acquire)) {
      shard->counters().accumulate(t.relay);
      ++t.workers_serving;
    }
  };
}

DerpTotals DerpMetrics::totals() const {
  DerpTotals t;
  std::lock_guard lock(mu_);
  for (const Source& s : sources_) s(t);
  return t;
}

std::vector<std::string_view> DerpMetrics::drop_reason_labels() {
  std::vector<std::string_view> v;
  for (std::size_t r = 0; r < server::kDropReasons; ++r) v.push_back(server::to_string(static_cast<server::DropReason>(r)));
  return v;
}

std::vector<std::string_view> DerpMetrics::packet_kind_labels() {
  std::vector<std::string_view> v;
  for (std::size_t k = 0; k < server::kPacketKinds; ++k) v.push_back(server::to_string(static_cast<server::PacketKind>(k)));
  return v;
}

std::vector<std::string_view> DerpMetrics::tcp_error_labels() {
  std::vector<std::string_view> v;
  for (std::size_t e = 0; e < kTcpErrors; ++e) v.push_back(io::to_string(static_cast<io::TcpError>(e)));
  return v;
}

std::vector<prometheus::MetricFamily> DerpMetrics::Collect() const { return families(totals()); }

std::vector<prometheus::MetricFamily> DerpMetrics::families(const DerpTotals& t) const {
  const server::CounterTotals& r = t.relay;
  std::vector<prometheus::MetricFamily> out;
  out.reserve(64);
  detail::FamilyBuilder f(out);

  // --- derper's families ------------------------------------------------------------------------
  f.gauge("derp_current_connections", "DERP connections now (after the handshake)")
      .sample(d(r.current_connections));
  f.gauge("derp_current_home_connections", "DERP connections whose client says this node is its home (NotePreferred)")
      .sample(d(r.current_home_connections));
  f.gauge("derp_current_notideal_connections", "DERP connections whose client said this node is not its ideal one")
      .sample(d(r.current_notideal_connections));
  f.gauge("derp_watchers", "mesh peers watching this node's connections (WatchConns)").sample(d(r.watchers));
  f.gauge("derp_current_dup_client_keys", "public keys with two or more connections now")
      .sample(d(r.current_dup_client_keys));
  f.gauge("derp_current_dup_client_conns", "connections sharing a public key with another connection now")
      .sample(d(r.current_dup_client_conns));
  f.gauge("derp_clients", "public keys in the region by where they are connected: here (local) or only via a mesh peer")
      .sample(d(r.clients_local), {{"location", "local"}})
      .sample(d(r.clients_remote), {{"location", "remote"}});

  f.counter("derp_accepts_total", "DERP connections accepted (/derp upgrades)").sample(d(r.accepts));
  f.counter("derp_dup_client_conns_total", "connections accepted while another connection had the same key")
      .sample(d(r.dup_client_conn_total));
  f.counter("derp_bytes_received_total", "packet payload bytes received from clients")
      .sample(d(r.bytes_received));
  f.counter("derp_bytes_sent_total", "packet payload bytes sent to clients (RecvPacket)").sample(d(r.bytes_sent));
  f.counter("derp_packets_received_total", "packets received from clients").sample(d(r.packets_received));
  f.counter("derp_packets_sent_total", "packets sent to clients").sample(d(r.packets_sent));
  f.counter("derp_packets_received_kind_total", "packets received from clients, by kind (disco or other)");
  for (std::size_t k = 0; k < server::kPacketKinds; ++k)
    f.sample(d(r.packets_received_kind[k]), {{"kind", server::to_string(static_cast<server::PacketKind>(k))}});
  by_reason_and_kind(f.counter("derp_packets_dropped_total", "packets dropped, by reason and by kind"),
                     r.packets_dropped);
  by_reason_and_kind(f.counter("derp_bytes_dropped_total", "packet payload bytes dropped, by reason and by kind"),
                     r.bytes_dropped);
  f.counter("derp_packets_forwarded_out_total", "packets forwarded to a mesh peer for a key connected there")
      .sample(d(r.packets_forwarded_out));
  f.counter("derp_packets_forwarded_in_total", "packets a mesh peer forwarded here (ForwardPacket)")
      .sample(d(r.packets_forwarded_in));
  f.counter("derp_got_ping_total", "Ping frames received from clients").sample(d(r.got_ping));
  f.counter("derp_sent_pong_total", "Pong frames queued to clients").sample(d(r.sent_pong));
  f.counter("derp_peer_gone_frames_total", "PeerGone frames sent to clients, by reason")
      .sample(d(r.peer_gone_disconnected_frames), {{"reason", "disconnected"}})
      .sample(d(r.peer_gone_not_here_frames), {{"reason", "not_here"}});
  f.counter("derp_home_moves_total",
            "established clients that changed whether this node is their home: in (became it), out (left it)")
      .sample(d(r.home_moves_in), {{"direction", "in"}})
      .sample(d(r.home_moves_out), {{"direction", "out"}});
  f.counter("derp_unknown_frames_total", "frames of a type this server does not know, ignored")
      .sample(d(r.unknown_frames));

  // --- derpd's own -------------------------------------------------------------------------------
  f.gauge("derpd_workers", "worker threads configured").sample(d(workers_.load(std::memory_order_relaxed)));
  f.gauge("derpd_derp_workers_serving", "workers whose DERP relay is serving now").sample(d(t.workers_serving));
  f.counter("derpd_control_deferred_total", "cross-worker control messages parked because the ring to a worker was full")
      .sample(d(r.control_deferred));
  f.counter("derpd_dup_switch_holds_total",
            "frames held until a duplicate key's switch to their connection was seen by every worker")
      .sample(d(r.dup_switch_holds));
  f.counter("derpd_dup_switch_timeouts_total", "holds released after 1 s (or 1 MiB of input) before every worker had seen the switch")
      .sample(d(r.dup_switch_timeouts));
  f.counter("derpd_control_frames_dropped_total", "PeerGone frames not queued because the client's backlog was full")
      .sample(d(r.control_frames_dropped));
  f.counter("derpd_keepalives_sent_total", "KeepAlive frames sent to clients").sample(d(r.keepalives_sent));

  const DerpConnTotals& c = t.conn;
  f.counter("derpd_http_requests_total", "HTTP request heads received on the DERP and plain-HTTP ports")
      .sample(d(c.http_requests));
  f.counter("derpd_derp_upgrades_total", "requests upgraded to DERP, by transport")
      .sample(d(c.upgrades), {{"transport", "derp"}})
      .sample(d(c.websocket_upgrades), {{"transport", "websocket"}});
  f.counter("derpd_tls_errors_total", "connections ended by a TLS error (handshake or record)").sample(d(c.tls_errors));
  f.counter("derpd_handshake_errors_total", "connections ended by a bad DERP handshake (ClientInfo, first frame)")
      .sample(d(c.handshake_errors));
  f.counter("derpd_protocol_errors_total", "connections ended by a frame refused after the handshake")
      .sample(d(c.protocol_errors));
  f.counter("derpd_timeouts_total", "connections ended because a handshake or write deadline passed")
      .sample(d(c.timeouts));

  const TcpTotals& p = t.tcp;
  f.counter("derpd_tcp_connections_accepted_total", "TCP connections accepted on the DERP and plain-HTTP ports")
      .sample(d(p.accepted));
  f.counter("derpd_tcp_connections_refused_total",
            "TCP connections closed at once: at the connection limit, or while shutting down")
      .sample(d(p.refused));
  f.counter("derpd_tcp_accept_errors_total", "accept() failures, by reason")
      .sample(d(p.fd_exhausted), {{"reason", "fd_exhausted"}})
      .sample(d(p.no_memory), {{"reason", "no_memory"}})
      .sample(d(p.accept_errors), {{"reason", "other"}});
  f.counter("derpd_tcp_accept_backoffs_total", "accept re-arms delayed after errors").sample(d(p.accept_backoffs));
  f.counter("derpd_tcp_connections_opened_total", "TCP connections set up on the workers").sample(d(p.opened));
  f.counter("derpd_tcp_connections_closed_total", "TCP connections closed on the workers").sample(d(p.closed));
  f.counter("derpd_tcp_connection_errors_total", "TCP connections that ended on their own, by reason");
  for (std::size_t e = 0; e < kTcpErrors; ++e)
    f.sample(d(p.errors[e]), {{"reason", io::to_string(static_cast<io::TcpError>(e))}});
  f.counter("derpd_tcp_received_bytes_total", "bytes received on DERP-port TCP connections (TLS included)")
      .sample(d(p.bytes_received));
  f.counter("derpd_tcp_sent_bytes_total", "bytes sent on DERP-port TCP connections (TLS included)")
      .sample(d(p.bytes_sent));
  f.counter("derpd_tcp_recv_no_buffers_total", "receives that found the worker's receive buffers exhausted")
      .sample(d(p.no_buffers));
  f.counter("derpd_tcp_write_refused_total", "writes refused for exceeding a connection's send queue limit")
      .sample(d(p.write_refused));
  f.counter("derpd_tcp_submit_failed_total", "operations delayed because the io_uring submission queue was full")
      .sample(d(p.submit_failed));
  f.counter("derpd_tcp_sockets_registered_total",
            "connections whose socket moved into the worker's io_uring file table (no descriptor held)")
      .sample(d(p.registered));
  f.counter("derpd_tcp_register_fallbacks_total",
            "connections that kept a descriptor because the worker's io_uring file table was full")
      .sample(d(p.register_failed));

  const BootstrapDnsTotals& b = t.bootstrap_dns;
  f.counter("derpd_bootstrap_dns_requests_total", "/bootstrap-dns requests").sample(d(b.requests));
  f.counter("derpd_bootstrap_dns_queries_total",
            "/bootstrap-dns requests with ?q=, by answer: a published name, an unpublished name, or none")
      .sample(d(b.published_hits), {{"result", "published_hit"}})
      .sample(d(b.unpublished_hits), {{"result", "unpublished_hit"}})
      .sample(d(b.misses), {{"result", "miss"}});
  f.counter("derpd_bootstrap_dns_resolutions_total",
            "bootstrap DNS name lookups, by result (failed lookups keep the previous answer)")
      .sample(d(b.resolved), {{"result", "ok"}})
      .sample(d(b.no_address), {{"result", "no_address"}})
      .sample(d(b.failed), {{"result", "failed"}});
  f.gauge("derpd_bootstrap_dns_names", "bootstrap DNS names that have an answer now, by list")
      .sample(d(b.published_names), {{"list", "published"}})
      .sample(d(b.unpublished_names), {{"list", "unpublished"}});
  return out;
}

}  // namespace derpd::metrics
