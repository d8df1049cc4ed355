// StunService: a worker's STUN responder, wired to its UDP sockets.
//
// For each address family the worker holds one socket (no RFC 5780 alternate) or four (both IPs x
// both ports). A datagram goes through stun::respond(); the reply leaves from the socket the
// responder picked. Counters are per worker, written by the worker thread only and read (relaxed)
// by the metrics exporter.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "relay/base/counter.h"
#include "relay/io/udp_socket.h"
#include "stun/responder.h"

namespace derpd::daemon {

// One worker's STUN statistics; outlives the worker so /metrics can read it at any time.
struct StunCounters {
  std::array<RelaxedCounter, static_cast<std::size_t>(stun::Disposition::kCount)> disposition{};
  RelaxedCounter ipv4;
  RelaxedCounter ipv6;
  io::UdpStats udp;  // shared by the worker's STUN sockets (send_busy: reply dropped, no free slot)
};

// One family's sockets: sockets[ip][port]; [1][*] and [*][1] are null without an alternate.
struct StunSite {
  stun::ServerAddresses addrs;
  io::UdpSocket* sockets[2][2] = {{nullptr, nullptr}, {nullptr, nullptr}};
};

class StunService final : public io::DatagramSink {
 public:
  explicit StunService(StunCounters& counters) : counters_(counters) {}

  // Registers one family's sockets (tags them); returns the site index.
  std::uint32_t add_site(const StunSite& site);

  void on_datagram(io::UdpSocket& sock, Bytes payload, const Endpoint& from, const Endpoint& local) override;

 private:
  StunCounters& counters_;
  std::vector<StunSite> sites_;
  std::byte scratch_[stun::kMaxResponseSize];
};

}  // namespace derpd::daemon
