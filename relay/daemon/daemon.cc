#include "relay/daemon/daemon.h"

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "relay/daemon/derp_setup.h"
#include "relay/daemon/port_probe.h"
#include "relay/daemon/worker.h"
#include "relay/io/probe.h"
#include "relay/io/udp_socket.h"
#include "relay/metrics/admission_metrics.h"
#include "relay/metrics/derp_metrics.h"
#include "relay/metrics/mesh_metrics.h"
#include "relay/metrics/exposition.h"
#include "relay/metrics/http_server.h"
#include "relay/metrics/stun_metrics.h"

namespace derpd::daemon {

namespace {

unsigned worker_count(const config::Config& cfg) {
  if (cfg.workers > 0) return cfg.workers;
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

// Binds one UDP socket; a port of 0 is resolved so later workers share the same port.
int bind_udp(Endpoint& addr, bool first) {
  // Before the first SO_REUSEPORT bind: is someone else already serving this port?
  if (first)
    if (std::string busy = probe_port_free(addr, SOCK_DGRAM); !busy.empty()) throw std::runtime_error(busy);
  int err = 0;
  auto fd = io::open_udp_socket(addr, err);
  if (!fd) {
    throw std::runtime_error(fmt::format("cannot listen on udp {}: {}", addr.to_string(), std::strerror(err)));
  }
  if (addr.port == 0) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    getsockname(*fd, reinterpret_cast<sockaddr*>(&ss), &len);
    if (auto e = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len)) addr.port = e->port;
  }
  return *fd;
}

bool ipv6_available() {
  int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_any;
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

// The STUN sites (one per address family), with addresses resolved, before any worker exists.
std::vector<stun::ServerAddresses> stun_sites(const config::Config& cfg) {
  std::vector<stun::ServerAddresses> out;
  if (!cfg.stun_enabled) return out;
  for (const Endpoint& primary : config::effective_stun_addrs(cfg)) {
    // A wildcard listener derived from -a covers IPv6 only where the host has IPv6 at all.
    if (cfg.stun_addrs.empty() && !primary.addr.is_v4() && primary.addr.is_unspecified() && !ipv6_available()) {
      spdlog::warn("no IPv6 on this host: STUN serves IPv4 only");
      continue;
    }
    // The alternate address serves only the site of its own family.
    std::optional<Endpoint> alternate;
    if (cfg.stun_alt_addr && cfg.stun_alt_addr->addr.family() == primary.addr.family()) alternate = cfg.stun_alt_addr;
    out.push_back(stun::ServerAddresses::of(primary, alternate));
  }
  return out;
}

// Opens every worker's sockets. Port 0 (tests) is resolved on the first bind of each address.
std::vector<WorkerPlan> plan_workers(unsigned n, std::vector<stun::ServerAddresses>& sites) {
  std::vector<WorkerPlan> plans(n);
  for (unsigned w = 0; w < n; ++w) {
    plans[w].index = w;
    for (auto& site : sites) {
      StunSitePlan sp;
      for (int ip = 0; ip < (site.has_alternate ? 2 : 1); ++ip)
        for (int port = 0; port < (site.has_alternate ? 2 : 1); ++port) {
          Endpoint e{site.ip[ip], site.port[port]};
          sp.fds[ip][port] = bind_udp(e, w == 0);
          sp.bound[ip][port] = e;
          // Resolved ports apply to every later bind of this site.
          if (site.port[port] == 0) site.port[port] = e.port;
        }
      sp.addrs = site;
      plans[w].stun_sites.push_back(sp);
    }
  }
  // Earlier workers' plans may hold a port of 0 if it was resolved later in the loop; fix up.
  for (auto& p : plans)
    for (std::size_t i = 0; i < sites.size(); ++i) p.stun_sites[i].addrs = sites[i];
  return plans;
}

}  // namespace

int run(const config::Config& cfg) {
  io::KernelProbe probe = io::probe_kernel();
  if (!probe.ok()) {
    spdlog::error("this kernel cannot run derpd:\n{}", probe.explain());
    return 1;
  }
  spdlog::info("kernel {}: io_uring ok{}", probe.kernel, probe.defer_taskrun ? " (defer-taskrun)" : "");
  for (const auto& u : cfg.unsupported) spdlog::warn("flag {} is accepted but not supported yet; ignoring it", u);

  // Signals are handled by this thread alone (sigwait); workers inherit the blocked mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  const unsigned n = worker_count(cfg);
  std::vector<stun::ServerAddresses> sites = stun_sites(cfg);
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::unique_ptr<StunCounters>> counters;
  std::unique_ptr<DerpSetup> derp;
  try {
    if (cfg.derp_enabled) derp = std::make_unique<DerpSetup>(cfg, n);
    std::vector<WorkerPlan> plans = plan_workers(n, sites);
    for (auto& plan : plans) {
      if (derp) derp->hand_over(plan);
      counters.push_back(std::make_unique<StunCounters>());
      workers.push_back(std::make_unique<Worker>(std::move(plan), *counters.back(), derp ? &derp->shared() : nullptr));
    }
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  // /metrics: summed from the workers' counters at scrape time, served on its own thread.
  auto stun_metrics = std::make_shared<metrics::StunMetrics>();
  for (auto& c : counters) {
    const StunCounters* sc = c.get();
    stun_metrics->add_source([sc](metrics::StunTotals& t) {
      for (std::size_t d = 0; d < t.disposition.size(); ++d) t.disposition[d] += sc->disposition[d].get();
      t.ipv4 += sc->ipv4.get();
      t.ipv6 += sc->ipv6.get();
      t.read_error += sc->udp.recv_errors.get() + sc->udp.truncated.get();
      t.write_error += sc->udp.send_errors.get();
      t.send_dropped += sc->udp.send_busy.get();
    });
  }
  metrics::Exposition exposition;
  exposition.add(stun_metrics);
  auto derp_metrics = std::make_shared<metrics::DerpMetrics>();
  derp_metrics->set_workers(n);
  if (derp) {
    for (auto& slot : derp->shards()) derp_metrics->add_source(metrics::DerpMetrics::shard_source(slot));
    for (const DerpConnCounters& c : derp->conn_counters()) {
      derp_metrics->add_source([&c](metrics::DerpTotals& t) {
        t.conn.http_requests += c.http_requests.get();
        t.conn.upgrades += c.upgrades.get();
        t.conn.websocket_upgrades += c.websocket_upgrades.get();
        t.conn.tls_errors += c.tls_errors.get();
        t.conn.handshake_errors += c.handshake_errors.get();
        t.conn.protocol_errors += c.protocol_errors.get();
        t.conn.timeouts += c.timeouts.get();
      });
    }
    for (auto& slot : derp->services()) {
      derp_metrics->add_source([&slot](metrics::DerpTotals& t) {
        const DerpService* svc = slot.load(std::memory_order_acquire);
        if (svc == nullptr) return;
        if (const io::TcpListener* l = svc->listener()) metrics::accumulate(t.tcp, l->counters());
        if (const io::TcpListener* l = svc->port80_listener()) metrics::accumulate(t.tcp, l->counters());
        metrics::accumulate(t.tcp, svc->tcp_counters());
      });
    }
    derp_metrics->add_source([b = &derp->bootstrap_dns()](metrics::DerpTotals& t) { b->accumulate(t.bootstrap_dns); });
    derp->bootstrap_dns().start();
  }
  exposition.add(derp_metrics);
  // The admission controller and the mesh links live as long as `derp`, past metrics_thread.stop().
  if (derp && derp->admission() != nullptr) {
    auto m = std::make_shared<metrics::AdmissionMetrics>();
    m->set_source([a = derp->admission()](metrics::AdmissionTotals& t) { a->report(t); });
    exposition.add(m);
  }
  if (derp && derp->mesh() != nullptr) {
    auto m = std::make_shared<metrics::MeshMetrics>();
    m->set_source([l = derp->mesh()](std::vector<metrics::MeshLinkTotals>& out) { l->report(out); });
    exposition.add(m);
  }
  metrics::MetricsThread metrics_thread(exposition);
  if (cfg.metrics_addr.port != 0) {
    if (std::string err = metrics_thread.start(cfg.metrics_addr); !err.empty()) {
      spdlog::error("cannot serve metrics on {}: {}", cfg.metrics_addr.to_string(), err);
      return 1;
    }
    spdlog::info("metrics listening on http://{}/metrics", metrics_thread.bound().to_string());
  }

  for (auto& w : workers) {
    std::string err = w->start();
    if (!err.empty()) {
      spdlog::error("worker {} failed to start: {}", w->index(), err);
      for (auto& o : workers) o->stop();
      return 1;
    }
  }

  static constexpr const char* kRole[2][2] = {{"", " (RFC 5780: alternate port)"},
                                               {" (RFC 5780: alternate IP)", " (RFC 5780: alternate IP and port)"}};
  for (const auto& s : sites)
    for (int ip = 0; ip < (s.has_alternate ? 2 : 1); ++ip)
      for (int port = 0; port < (s.has_alternate ? 2 : 1); ++port)
        spdlog::info("stun listening on udp {}{}", Endpoint{s.ip[ip], s.port[port]}.to_string(), kRole[ip][port]);
  if (derp) {
    spdlog::info("derp listening on tcp {} ({})", derp->bound().to_string(), derp->tls() ? "tls" : "plaintext");
    if (derp->http_port() > 0)
      spdlog::info("http listening on tcp {} (generate_204, redirect to https)",
                   Endpoint{cfg.derp_addr.addr, static_cast<std::uint16_t>(derp->http_port())}.to_string());
    int stun_port = sites.empty() ? -1 : sites[0].port[0];
    spdlog::info("derp map: {}", derp->derp_map_json(cfg, stun_port));
  }
  if (derp && derp->mesh() != nullptr) derp->mesh()->start();
  spdlog::info("derpd ready: {} worker{}", n, n == 1 ? "" : "s");
  sd_notify(0, "READY=1");

  for (;;) {
    int sig = 0;
    if (sigwait(&sigs, &sig) != 0) continue;
    if (sig == SIGHUP) {
      if (derp && derp->tls()) {
        auto st = derp->tls()->reload();
        if (st.ok())
          spdlog::info("SIGHUP: certificates reloaded; new connections use them");
        else
          spdlog::error("SIGHUP: certificate reload failed, still serving the previous ones: {}", st.error());
      } else {
        spdlog::info("SIGHUP: nothing to reload");
      }
      continue;
    }
    spdlog::info("{}: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    break;
  }
  sd_notify(0, "STOPPING=1");
  metrics_thread.stop();  // before the workers: /metrics reads their shards' counters
  if (derp) derp->bootstrap_dns().request_stop();
  if (derp && derp->mesh() != nullptr) derp->mesh()->stop();
  for (auto& w : workers) w->stop();

  metrics::StunTotals t = stun_metrics->totals();
  std::string by;
  for (std::size_t d = 0; d < t.disposition.size(); ++d)
    by += fmt::format(" {}={}", stun::to_string(static_cast<stun::Disposition>(d)), t.disposition[d]);
  spdlog::info("stun totals:{} read_error={} write_error={} send_dropped={} ipv4={} ipv6={}", by, t.read_error,
               t.write_error, t.send_dropped, t.ipv4, t.ipv6);
  metrics_thread.stop();
  return 0;
}

}  // namespace derpd::daemon
