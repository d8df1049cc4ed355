#include "relay/metrics/mesh_metrics.h"

#include <string_view>

#include "relay/metrics/family_builder.h"

namespace derpd::metrics {

namespace {

using detail::d;

// The families with one sample per link, in exposition order.
struct PerLink {
  std::string_view name;
  std::string_view help;
  prometheus::MetricType type;
  double (*value)(const MeshLinkTotals&);
};

constexpr auto kGauge = prometheus::MetricType::Gauge;
constexpr auto kCounter = prometheus::MetricType::Counter;

constexpr PerLink kPerLink[] = {
    {"derpd_mesh_link_up", "1 while the mesh link to this peer is logged in and watching its clients", kGauge,
     [](const MeshLinkTotals& l) { return l.up ? 1.0 : 0.0; }},
    {"derpd_mesh_link_self", "1 when this mesh-with entry turned out to be this node (the link stopped)", kGauge,
     [](const MeshLinkTotals& l) { return l.self ? 1.0 : 0.0; }},
    {"derpd_mesh_link_connects_total", "mesh link logins that succeeded (the first and every reconnect)", kCounter,
     [](const MeshLinkTotals& l) { return d(l.connects); }},
    {"derpd_mesh_link_connect_failures_total", "mesh link dial, TLS or login attempts that failed", kCounter,
     [](const MeshLinkTotals& l) { return d(l.connect_failures); }},
    {"derpd_mesh_link_disconnects_total", "established mesh link connections that broke", kCounter,
     [](const MeshLinkTotals& l) { return d(l.disconnects); }},
    {"derpd_mesh_link_clients",
     "clients the mesh peer reports connected to it now (WatchConns; mesh links not counted)", kGauge,
     [](const MeshLinkTotals& l) { return d(l.clients); }},
    {"derpd_mesh_link_forwarded_packets_total", "packets forwarded to the mesh peer (ForwardPacket)", kCounter,
     [](const MeshLinkTotals& l) { return d(l.forwarded_packets); }},
    {"derpd_mesh_link_forwarded_bytes_total", "payload bytes of the packets forwarded to the mesh peer", kCounter,
     [](const MeshLinkTotals& l) { return d(l.forwarded_bytes); }},
};

}  // namespace

void MeshMetrics::set_source(Source s) {
  std::lock_guard lock(mu_);
  source_ = std::move(s);
}

std::vector<MeshLinkTotals> MeshMetrics::links() const {
  std::vector<MeshLinkTotals> out;
  std::lock_guard lock(mu_);
  if (source_) source_(out);
  return out;
}

std::vector<prometheus::MetricFamily> MeshMetrics::Collect() const { return families(links()); }

std::vector<prometheus::MetricFamily> MeshMetrics::families(const std::vector<MeshLinkTotals>& links) {
  std::vector<prometheus::MetricFamily> out;
  if (links.empty()) return out;
  detail::FamilyBuilder f(out);
  for (const PerLink& p : kPerLink) {
    f.family(p.name, p.help, p.type);
    for (const MeshLinkTotals& l : links) f.sample(p.value(l), {{"peer", l.peer}});
  }
  f.counter("derpd_mesh_link_presence_events_total",
            "PeerPresent and PeerGone frames received from the mesh peer (WatchConns), by event");
  for (const MeshLinkTotals& l : links)
    f.sample(d(l.present_events), {{"peer", l.peer}, {"event", "present"}})
        .sample(d(l.gone_events), {{"peer", l.peer}, {"event", "gone"}});
  return out;
}

}  // namespace derpd::metrics
