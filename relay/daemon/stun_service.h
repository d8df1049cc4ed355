// StunService: a worker's STUN responder, wired to its UDP sockets.
//
// For each address family the worker holds one socket (no RFC 5780 alternate) or four (both IPs x
// both ports). A datagram goes through stun::respond(); the reply leaves from the socket the
// responder picked. Counters are per worker, written by the worker thread only and read (relaxed)
// by the metrics exporter.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "relay/io/udp_socket.h"
#include "stun/responder.h"

namespace derpd::daemon {

struct StunCounters {
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(stun::Disposition::kCount)> disposition{};
  std::atomic<std::uint64_t> ipv4{0};
  std::atomic<std::uint64_t> ipv6{0};
  std::atomic<std::uint64_t> send_dropped{0};  // no free send slot on the chosen socket

  void add(std::atomic<std::uint64_t>& c) { c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }
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
