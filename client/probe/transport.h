// The narrow interface between the NAT prober (client/probe/prober.h) and the network: UDP
// sockets, a monotonic clock and a wait for the next datagram. The prober never makes a syscall
// itself, so unit tests drive it with a simulated network and virtual time, and the real tool
// plugs in UdpTransport (client/probe/udp_transport.h).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"
#include "relay/base/result.h"

namespace derpd::probe {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

using SocketId = std::uint32_t;

enum class NetError : std::uint8_t {
  kNoFamily,     // the host has no socket support or no address of this family
  kUnreachable,  // no route to the destination (ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL)
  kRefused,      // the kernel reported ICMP port unreachable (ECONNREFUSED)
  kNoBuffers,    // ENOBUFS / EAGAIN on send
  kOther,        // anything else (the real transport keeps errno for messages)
  kCount,
};
std::string_view to_string(NetError e);

struct Received {
  SocketId socket = 0;
  Endpoint from;
  std::size_t size = 0;    // bytes copied into the caller's buffer
  bool truncated = false;  // the datagram was larger than the buffer (size = buffer size)
};

class Transport {
 public:
  virtual ~Transport() = default;

  virtual TimePoint now() const = 0;

  // A UDP socket of family `f` bound to an ephemeral port (the wildcard address for the real
  // transport). Sockets stay open until close() or the transport's destruction.
  virtual Result<SocketId, NetError> open(Family f) = 0;
  // The socket's bound address: wildcard or concrete IP, and its port.
  virtual Endpoint local(SocketId s) const = 0;
  virtual Status<NetError> send(SocketId s, const Endpoint& to, Bytes datagram) = 0;
  // Waits until a datagram is available on any open socket or `until` passes. Copies one
  // datagram into `buf`; nullopt when the time ran out.
  virtual std::optional<Received> receive(TimePoint until, MutBytes buf) = 0;
  virtual void close(SocketId s) = 0;

  // The source address the host would use to reach `to` (PCP needs it), if it has a route.
  virtual std::optional<IpAddr> source_address_for(const Endpoint& to) = 0;
  // The host's own addresses of family `f`, so "no NAT" is recognised for wildcard sockets.
  virtual std::vector<IpAddr> interface_addresses(Family f) = 0;
};

}  // namespace derpd::probe
