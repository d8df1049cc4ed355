// The real Transport: plain non-blocking UDP sockets and ppoll(2). A client tool that sends a few
// dozen datagrams needs nothing more (no io_uring here).
//
// Sockets bind to the wildcard address of their family (IPv6 ones with IPV6_V6ONLY) and port 0,
// so the kernel picks the source address per destination as it would for any application.
// Ownership: the transport owns every descriptor it opened and closes them on destruction; it is
// used from one thread.
#pragma once

#include <cstddef>
#include <vector>

#include "client/probe/transport.h"

namespace derpd::probe {

class UdpTransport final : public Transport {
 public:
  UdpTransport() = default;
  ~UdpTransport() override;
  UdpTransport(const UdpTransport&) = delete;
  UdpTransport& operator=(const UdpTransport&) = delete;

  TimePoint now() const override { return Clock::now(); }
  Result<SocketId, NetError> open(Family f) override;
  Endpoint local(SocketId s) const override;
  Status<NetError> send(SocketId s, const Endpoint& to, Bytes datagram) override;
  std::optional<Received> receive(TimePoint until, MutBytes buf) override;
  void close(SocketId s) override;
  std::optional<IpAddr> source_address_for(const Endpoint& to) override;
  std::vector<IpAddr> interface_addresses(Family f) override;

  // errno of the last failed open() or send(), for messages.
  int last_errno() const { return last_errno_; }

 private:
  struct Sock {
    int fd = -1;  // -1 once closed
    Family family = Family::V4;
    Endpoint local;
  };
  std::optional<Received> try_read(std::size_t index, MutBytes buf);

  std::vector<Sock> socks_;  // indexed by SocketId
  std::size_t next_read_ = 0;  // round-robin start, so one busy socket cannot starve the others
  int last_errno_ = 0;
};

}  // namespace derpd::probe
