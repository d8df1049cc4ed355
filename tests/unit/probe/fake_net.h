// A simulated network behind the probe::Transport interface, with virtual time: the host's
// sockets, RFC 4787 NAT layers (the NAT simulation of tests/unit/nat/nat_sim.h), STUN servers
// answered by derpd's real responder (stun/responder.h) with scripted misbehaviour, and a
// default gateway that may speak NAT-PMP, PCP or UPnP. Packets take `one_way` each way; nothing
// leaves the process. Every datagram the prober sends is logged so tests can check the
// retransmission schedule.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/probe/transport.h"
#include "tests/unit/nat/nat_sim.h"

namespace derpd::probe::fake {

enum class Behaviour : std::uint8_t {
  kHonest,        // stun::respond(), sent from the address it chose
  kSilent,        // never answers
  kTailnodeOnly,  // answers only Tailscale's tailnode request (like derper)
  kWrongTxid,     // answers with a valid response to another transaction id
  kOtherSource,   // answers correctly, but from the server IP at port + 7
  kGarbageFirst,  // sends a garbage datagram and a truncated response before the real answer
  kDuplicate,     // sends every answer twice
};

struct FakeServer {
  Endpoint primary;
  std::optional<Endpoint> alt;  // RFC 5780 alternate (Ca:Cp)
  Behaviour behaviour = Behaviour::kHonest;
  int drop_first = 0;  // requests lost on the way before the first one arrives
};

enum class GatewayProto : std::uint8_t { kNone, kNatPmp, kPcp, kPcpAndPmp };

struct FakeGateway {
  IpAddr address;
  GatewayProto port_mapping = GatewayProto::kNone;
  bool upnp = false;
};

struct Sent {
  std::chrono::microseconds at{0};  // since the start of the simulation
  SocketId socket = 0;
  Endpoint to;
  std::vector<std::byte> datagram;
};

class FakeNet final : public Transport {
 public:
  FakeNet();
  ~FakeNet() override;

  // Configuration (before the probe runs).
  IpAddr host_v4 = *IpAddr::parse("10.0.0.2");
  IpAddr host_v6 = *IpAddr::parse("fd00::2");
  bool has_v6 = true;
  bool hairpin = false;  // the outermost NAT sends packets for its own public address back in
  std::chrono::microseconds one_way{10000};
  std::vector<nat::sim::NatLayer> layers;  // innermost first (same for both families)
  std::vector<FakeServer> servers;
  std::optional<FakeGateway> gateway;

  // Results.
  const std::vector<Sent>& sent() const { return sent_; }
  std::chrono::microseconds elapsed() const;
  int open_sockets() const;

  TimePoint now() const override { return now_; }
  Result<SocketId, NetError> open(Family f) override;
  Endpoint local(SocketId s) const override;
  Status<NetError> send(SocketId s, const Endpoint& to, Bytes datagram) override;
  std::optional<Received> receive(TimePoint until, MutBytes buf) override;
  void close(SocketId s) override;
  std::optional<IpAddr> source_address_for(const Endpoint& to) override;
  std::vector<IpAddr> interface_addresses(Family f) override;

 private:
  struct Sock {
    Endpoint local;
    bool open = true;
  };
  struct Delivery {
    TimePoint at;
    std::uint64_t seq;  // keeps FIFO order among equal times
    Endpoint from;
    Endpoint to;  // the host-side (inner) address
    std::vector<std::byte> datagram;
  };

  void from_host(const Endpoint& src, const Endpoint& dst, Bytes data);
  void to_host(const Endpoint& from, const Endpoint& public_dst, std::vector<std::byte> data, TimePoint at);
  void server_receive(std::size_t index, const Endpoint& client, const Endpoint& at, Bytes data);
  void gateway_receive(const Endpoint& client, const Endpoint& at, Bytes data);
  nat::sim::Nat& layer(Family f, std::size_t i);
  IpAddr public_ip(Family f);  // the outermost public address (the host's own without NAT)

  TimePoint start_;
  TimePoint now_;
  std::uint64_t seq_ = 0;
  std::vector<Sock> socks_;
  std::uint16_t next_port_ = 40000;
  std::vector<Delivery> queue_;
  std::vector<Sent> sent_;
  std::map<std::size_t, int> received_;  // server index -> requests that reached it
  std::vector<std::unique_ptr<nat::sim::Nat>> nats_v4_;
  std::vector<std::unique_ptr<nat::sim::Nat>> nats_v6_;
  std::vector<IpAddr> layer_public_[2];  // by family, per layer
};

}  // namespace derpd::probe::fake
