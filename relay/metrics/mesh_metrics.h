// MeshMetrics: the region mesh families of /metrics, one series per outbound mesh link (label
// peer = the mesh-with entry as configured), read from the links' counters at scrape time.
//
//   derpd_mesh_link_up{peer}                       1 while the link is logged in and watching
//   derpd_mesh_link_self{peer}                     1 when the entry turned out to be this node
//                                                  (derper's self-connect rule: the link stopped)
//   derpd_mesh_link_connects_total{peer}           logins that succeeded (the first and every
//                                                  reconnect: reconnects = connects - 1)
//   derpd_mesh_link_connect_failures_total{peer}   dial / TLS / login attempts that failed
//   derpd_mesh_link_disconnects_total{peer}        established connections that broke
//   derpd_mesh_link_clients{peer}                  clients the peer reports connected to it now
//                                                  (WatchConns: PeerPresent minus PeerGone; other
//                                                  nodes' mesh links, this one's included, are not
//                                                  clients)
//   derpd_mesh_link_presence_events_total{peer,event}  PeerPresent (event="present") and
//                                                  PeerGone (event="gone") frames received
//   derpd_mesh_link_forwarded_packets_total{peer}  packets written to the peer (ForwardPacket)
//   derpd_mesh_link_forwarded_bytes_total{peer}    their payload bytes
//
// Every configured link has its series from the first scrape on (at zero until it connects).
// Thread-safety: set_source() and Collect() may run on any threads.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace derpd::metrics {

// One link's values at scrape time.
struct MeshLinkTotals {
  std::string peer;  // the label value
  bool up = false;
  bool self = false;
  std::uint64_t connects = 0;
  std::uint64_t connect_failures = 0;
  std::uint64_t disconnects = 0;
  std::int64_t clients = 0;
  std::uint64_t present_events = 0;
  std::uint64_t gone_events = 0;
  std::uint64_t forwarded_packets = 0;
  std::uint64_t forwarded_bytes = 0;
};

class MeshMetrics final : public prometheus::Collectable {
 public:
  // Appends one MeshLinkTotals per link (relaxed loads). Called on the scraping thread; must stay
  // callable (and whatever it reads alive) while scraping can happen.
  using Source = std::function<void(std::vector<MeshLinkTotals>&)>;

  void set_source(Source s);
  std::vector<MeshLinkTotals> links() const;

  std::vector<prometheus::MetricFamily> Collect() const override;
  // The families for given values (what Collect() renders; for tests).
  static std::vector<prometheus::MetricFamily> families(const std::vector<MeshLinkTotals>& links);

 private:
  mutable std::mutex mu_;
  Source source_;  // guarded by mu_
};

}  // namespace derpd::metrics
