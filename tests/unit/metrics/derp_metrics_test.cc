// The DERP families of /metrics: names, types, every label at zero, sums over real shard counters
// and io counters, a real relay shard published through its worker slot, promtool (lint included).
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "relay/metrics/derp_metrics.h"
#include "relay/metrics/exposition.h"
#include "relay/metrics/stun_metrics.h"
#include "relay/server/relay_shard.h"
#include "tests/unit/metrics/exposition_text.h"
#include "tests/unit/metrics/promtool.h"

namespace derpd::metrics {
namespace {

using testing::contains_line;
using testing::types_of;

std::string render(std::shared_ptr<DerpMetrics> m) {
  Exposition ex;
  ex.add(std::move(m));
  return ex.render();
}

std::string dropped(std::string_view reason, std::string_view kind, std::uint64_t n) {
  return "derp_packets_dropped_total{reason=\"" + std::string(reason) + "\",kind=\"" + std::string(kind) + "\"} " +
         std::to_string(n);
}

TEST(DerpMetrics, LabelValuesAreTheEnumNames) {
  EXPECT_EQ(DerpMetrics::drop_reason_labels(),
            (std::vector<std::string_view>{"unknown_dest", "unknown_dest_on_fwd", "gone_disconnected", "queue_head",
                                           "queue_tail", "write_error", "dup_client"}));
  EXPECT_EQ(DerpMetrics::packet_kind_labels(), (std::vector<std::string_view>{"disco", "other"}));
  EXPECT_EQ(DerpMetrics::tcp_error_labels(),
            (std::vector<std::string_view>{"peer_reset", "broken_pipe", "timed_out", "idle_timeout", "deadline",
                                           "recv_failed", "send_failed"}));
}

TEST(DerpMetrics, EveryFamilyHasTheExpectedTypeAndPrometheusName) {
  const std::map<std::string, std::string> want = {
      {"derp_current_connections", "gauge"},
      {"derp_current_home_connections", "gauge"},
      {"derp_current_notideal_connections", "gauge"},
      {"derp_watchers", "gauge"},
      {"derp_current_dup_client_keys", "gauge"},
      {"derp_current_dup_client_conns", "gauge"},
      {"derp_clients", "gauge"},
      {"derp_accepts_total", "counter"},
      {"derp_dup_client_conns_total", "counter"},
      {"derp_bytes_received_total", "counter"},
      {"derp_bytes_sent_total", "counter"},
      {"derp_packets_received_total", "counter"},
      {"derp_packets_sent_total", "counter"},
      {"derp_packets_received_kind_total", "counter"},
      {"derp_packets_dropped_total", "counter"},
      {"derp_bytes_dropped_total", "counter"},
      {"derp_packets_forwarded_out_total", "counter"},
      {"derp_packets_forwarded_in_total", "counter"},
      {"derp_got_ping_total", "counter"},
      {"derp_sent_pong_total", "counter"},
      {"derp_peer_gone_frames_total", "counter"},
      {"derp_home_moves_total", "counter"},
      {"derp_unknown_frames_total", "counter"},
      {"derpd_workers", "gauge"},
      {"derpd_derp_workers_serving", "gauge"},
      {"derpd_control_deferred_total", "counter"},
      {"derpd_dup_switch_holds_total", "counter"},
      {"derpd_dup_switch_timeouts_total", "counter"},
      {"derpd_control_frames_dropped_total", "counter"},
      {"derpd_keepalives_sent_total", "counter"},
      {"derpd_http_requests_total", "counter"},
      {"derpd_derp_upgrades_total", "counter"},
      {"derpd_tls_errors_total", "counter"},
      {"derpd_handshake_errors_total", "counter"},
      {"derpd_protocol_errors_total", "counter"},
      {"derpd_timeouts_total", "counter"},
      {"derpd_tcp_connections_accepted_total", "counter"},
      {"derpd_tcp_connections_refused_total", "counter"},
      {"derpd_tcp_accept_errors_total", "counter"},
      {"derpd_tcp_accept_backoffs_total", "counter"},
      {"derpd_tcp_connections_opened_total", "counter"},
      {"derpd_tcp_connections_closed_total", "counter"},
      {"derpd_tcp_connection_errors_total", "counter"},
      {"derpd_tcp_received_bytes_total", "counter"},
      {"derpd_tcp_sent_bytes_total", "counter"},
      {"derpd_tcp_recv_no_buffers_total", "counter"},
      {"derpd_tcp_write_refused_total", "counter"},
      {"derpd_tcp_submit_failed_total", "counter"},
      {"derpd_tcp_sockets_registered_total", "counter"},
      {"derpd_tcp_register_fallbacks_total", "counter"},
      {"derpd_bootstrap_dns_requests_total", "counter"},
      {"derpd_bootstrap_dns_queries_total", "counter"},
      {"derpd_bootstrap_dns_resolutions_total", "counter"},
      {"derpd_bootstrap_dns_names", "gauge"},
  };
  EXPECT_EQ(types_of(render(std::make_shared<DerpMetrics>())), want);
}

TEST(DerpMetrics, EveryLabelIsExposedAtZeroBeforeAnyTraffic) {
  const std::string text = render(std::make_shared<DerpMetrics>());
  for (std::string_view r : DerpMetrics::drop_reason_labels())
    for (std::string_view k : DerpMetrics::packet_kind_labels()) {
      EXPECT_TRUE(contains_line(text, dropped(r, k, 0))) << r << "/" << k << "\n" << text;
      EXPECT_TRUE(contains_line(text, "derp_bytes_dropped_total{reason=\"" + std::string(r) + "\",kind=\"" +
                                          std::string(k) + "\"} 0"))
          << text;
    }
  for (std::string_view k : DerpMetrics::packet_kind_labels())
    EXPECT_TRUE(contains_line(text, "derp_packets_received_kind_total{kind=\"" + std::string(k) + "\"} 0")) << text;
  for (std::string_view e : DerpMetrics::tcp_error_labels())
    EXPECT_TRUE(contains_line(text, "derpd_tcp_connection_errors_total{reason=\"" + std::string(e) + "\"} 0"))
        << text;
  for (const char* line : {
           "derp_current_connections 0",
           "derp_clients{location=\"local\"} 0",
           "derp_clients{location=\"remote\"} 0",
           "derp_peer_gone_frames_total{reason=\"disconnected\"} 0",
           "derp_peer_gone_frames_total{reason=\"not_here\"} 0",
           "derp_home_moves_total{direction=\"in\"} 0",
           "derp_home_moves_total{direction=\"out\"} 0",
           "derpd_derp_upgrades_total{transport=\"derp\"} 0",
           "derpd_derp_upgrades_total{transport=\"websocket\"} 0",
           "derpd_tcp_accept_errors_total{reason=\"fd_exhausted\"} 0",
           "derpd_tcp_accept_errors_total{reason=\"no_memory\"} 0",
           "derpd_tcp_accept_errors_total{reason=\"other\"} 0",
           "derpd_bootstrap_dns_queries_total{result=\"published_hit\"} 0",
           "derpd_bootstrap_dns_queries_total{result=\"unpublished_hit\"} 0",
           "derpd_bootstrap_dns_queries_total{result=\"miss\"} 0",
           "derpd_bootstrap_dns_resolutions_total{result=\"ok\"} 0",
           "derpd_bootstrap_dns_resolutions_total{result=\"no_address\"} 0",
           "derpd_bootstrap_dns_resolutions_total{result=\"failed\"} 0",
           "derpd_bootstrap_dns_names{list=\"published\"} 0",
           "derpd_bootstrap_dns_names{list=\"unpublished\"} 0",
           "derpd_derp_workers_serving 0",
       })
    EXPECT_TRUE(contains_line(text, line)) << line << "\n" << text;
}

TEST(DerpMetrics, ScrapeSumsEveryShardsCounters) {
  server::ShardCounters a, b;
  a.current_connections.add(3);
  b.current_connections.add(2);
  b.current_connections.sub();
  a.current_home_connections.add(2);
  a.clients_local.set(4);
  b.clients_local.set(1);
  b.clients_remote.set(6);
  a.accepts.add(10);
  b.accepts.add(5);
  a.bytes_received.add(1000);
  b.bytes_sent.add(777);
  a.packets_received_kind[static_cast<std::size_t>(server::PacketKind::kDisco)].add(3);
  a.drop(server::DropReason::kQueueHead, server::PacketKind::kDisco, 100);
  b.drop(server::DropReason::kQueueHead, server::PacketKind::kDisco, 50);
  b.drop(server::DropReason::kUnknownDestOnFwd, server::PacketKind::kOther, 7);
  a.peer_gone_not_here_frames.add(4);
  b.home_moves_out.add(2);
  b.dup_client_conn_total.add(9);
  auto m = std::make_shared<DerpMetrics>();
  m->add_source([&a](DerpTotals& t) { a.accumulate(t.relay); });
  m->add_source([&b](DerpTotals& t) { b.accumulate(t.relay); });
  m->set_workers(2);

  const std::string text = render(m);
  for (const std::string& line : {
           std::string("derp_current_connections 4"),
           std::string("derp_current_home_connections 2"),
           std::string("derp_clients{location=\"local\"} 5"),
           std::string("derp_clients{location=\"remote\"} 6"),
           std::string("derp_accepts_total 15"),
           std::string("derp_bytes_received_total 1000"),
           std::string("derp_bytes_sent_total 777"),
           std::string("derp_packets_received_kind_total{kind=\"disco\"} 3"),
           dropped("queue_head", "disco", 2),
           dropped("queue_head", "other", 0),
           dropped("unknown_dest_on_fwd", "other", 1),
           std::string("derp_bytes_dropped_total{reason=\"queue_head\",kind=\"disco\"} 150"),
           std::string("derp_peer_gone_frames_total{reason=\"not_here\"} 4"),
           std::string("derp_peer_gone_frames_total{reason=\"disconnected\"} 0"),
           std::string("derp_home_moves_total{direction=\"out\"} 2"),
           std::string("derp_dup_client_conns_total 9"),
           std::string("derpd_workers 2"),
       })
    EXPECT_TRUE(contains_line(text, line)) << line << "\n" << text;
  // A later scrape sees later values.
  a.accepts.add(1);
  EXPECT_EQ(m->totals().relay.accepts, 16u);
}

TEST(DerpMetrics, IoAndConnectionCountersAreSummed) {
  io::TcpListenerCounters l1, l2;
  l1.accepted.add(7);
  l2.accepted.add(3);
  l1.refused.add(2);
  l2.fd_exhausted.add(1);
  l2.no_memory.add(4);
  l1.accept_errors.add(5);
  io::TcpCounters c1;
  c1.errors[static_cast<std::size_t>(io::TcpError::kPeerReset)].add(6);
  c1.errors[static_cast<std::size_t>(io::TcpError::kDeadline)].add(1);
  c1.bytes_received.add(4096);
  c1.opened.add(11);
  c1.closed.add(8);
  auto m = std::make_shared<DerpMetrics>();
  m->add_source([&](DerpTotals& t) {
    accumulate(t.tcp, l1);
    accumulate(t.tcp, l2);
    accumulate(t.tcp, c1);
    t.conn.http_requests += 12;
    t.conn.upgrades += 9;
    t.conn.tls_errors += 3;
    t.conn.timeouts += 2;
  });
  const std::string text = render(m);
  for (const char* line : {
           "derpd_tcp_connections_accepted_total 10",
           "derpd_tcp_connections_refused_total 2",
           "derpd_tcp_accept_errors_total{reason=\"fd_exhausted\"} 1",
           "derpd_tcp_accept_errors_total{reason=\"no_memory\"} 4",
           "derpd_tcp_accept_errors_total{reason=\"other\"} 5",
           "derpd_tcp_connection_errors_total{reason=\"peer_reset\"} 6",
           "derpd_tcp_connection_errors_total{reason=\"deadline\"} 1",
           "derpd_tcp_connection_errors_total{reason=\"broken_pipe\"} 0",
           "derpd_tcp_received_bytes_total 4096",
           "derpd_tcp_connections_opened_total 11",
           "derpd_tcp_connections_closed_total 8",
           "derpd_http_requests_total 12",
           "derpd_derp_upgrades_total{transport=\"derp\"} 9",
           "derpd_tls_errors_total 3",
           "derpd_timeouts_total 2",
       })
    EXPECT_TRUE(contains_line(text, line)) << line << "\n" << text;
}

// A real relay shard, published in its worker slot the way the daemon's workers do.
TEST(DerpMetrics, ShardSourceReadsThePublishedShardAndSkipsAnEmptySlot) {
  server::Fabric fabric(1);
  server::ShardConfig cfg;
  cfg.worker = 0;
  cfg.random = [] { return std::uint64_t{0}; };
  server::RelayShard shard(cfg, fabric);
  std::array<std::uint8_t, 32> raw{};
  raw[0] = 1;
  const auto alice = protocol::NodePublic::from_raw(std::span<const std::uint8_t, 32>(raw));
  raw[0] = 2;
  const auto nobody = protocol::NodePublic::from_raw(std::span<const std::uint8_t, 32>(raw));
  const server::Nanos now{1'000'000'000};
  server::ClientParams p;
  p.key = alice;
  const server::ClientId id = shard.client_registered(p, now);
  shard.frame_received(id, protocol::Ping{}, now);
  std::vector<std::byte> other(40, std::byte{0x01});
  shard.frame_received(id, protocol::SendPacket{nobody, Bytes(other)}, now);

  std::atomic<const server::RelayShard*> slot{nullptr};
  auto m = std::make_shared<DerpMetrics>();
  m->add_source(DerpMetrics::shard_source(slot));
  EXPECT_EQ(m->totals().workers_serving, 0);
  EXPECT_EQ(m->totals().relay.current_connections, 0);

  slot.store(&shard, std::memory_order_release);
  const std::string text = render(m);
  for (const std::string& line : {
           std::string("derpd_derp_workers_serving 1"),
           std::string("derp_current_connections 1"),
           std::string("derp_got_ping_total 1"),
           std::string("derp_packets_received_total 1"),
           dropped("unknown_dest", "other", 1),
           dropped("unknown_dest", "disco", 0),
       })
    EXPECT_TRUE(contains_line(text, line)) << line << "\n" << text;

  slot.store(nullptr, std::memory_order_release);
  EXPECT_EQ(m->totals().workers_serving, 0);
  EXPECT_EQ(m->totals().relay.got_ping, 0u);
}

TEST(DerpMetrics, ScrapingWhileShardsCountIsMonotonic) {
  std::vector<std::unique_ptr<server::ShardCounters>> shards;
  auto m = std::make_shared<DerpMetrics>();
  for (int i = 0; i < 2; ++i) {
    shards.push_back(std::make_unique<server::ShardCounters>());
    m->add_source([c = shards.back().get()](DerpTotals& t) { c->accumulate(t.relay); });
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (auto& s : shards)
    threads.emplace_back([&stop, c = s.get()] {
      for (int i = 0; i < 200000 && !stop.load(std::memory_order_relaxed); ++i) {
        c->packets_sent.add();
        c->drop(server::DropReason::kQueueTail, server::PacketKind::kOther, 10);
      }
    });
  std::uint64_t last_sent = 0, last_dropped = 0;
  for (int i = 0; i < 500; ++i) {
    const DerpTotals t = m->totals();
    ASSERT_GE(t.relay.packets_sent, last_sent);
    ASSERT_GE(t.relay.dropped(server::DropReason::kQueueTail), last_dropped);
    last_sent = t.relay.packets_sent;
    last_dropped = t.relay.dropped(server::DropReason::kQueueTail);
  }
  stop = true;
  for (auto& t : threads) t.join();
  std::uint64_t sent = 0;
  for (auto& s : shards) sent += s->packets_sent.load();
  EXPECT_EQ(m->totals().relay.packets_sent, sent);
}

TEST(DerpMetrics, PassesPromtoolWithTheStunFamilies) {
  if (!testing::have_promtool()) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  server::ShardCounters c;
  c.current_connections.add(12345);
  c.bytes_received.add(std::uint64_t{1} << 40);
  c.drop(server::DropReason::kDupClient, server::PacketKind::kDisco, 77);
  auto m = std::make_shared<DerpMetrics>();
  m->add_source([&c](DerpTotals& t) {
    c.accumulate(t.relay);
    t.bootstrap_dns.requests = 3;
    t.bootstrap_dns.published_names = 2;
  });
  m->set_workers(4);
  Exposition ex;
  ex.add(std::make_shared<StunMetrics>());
  ex.add(m);
  const std::string text = ex.render();
  auto r = testing::promtool_check(text);
  EXPECT_EQ(r.exit_code, 0) << r.output << "\n" << text;
  EXPECT_EQ(r.output, "") << "lint findings";
}

}  // namespace
}  // namespace derpd::metrics
