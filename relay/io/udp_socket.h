// UdpSocket: one UDP socket on a worker's ring.
//
// Receives with one multishot recvmsg selecting buffers from the worker's BufRing (re-armed when
// the kernel ends it, after replenishing on -ENOBUFS). Each datagram reaches the sink as a view
// into the receive buffer, valid only during the call. Sends use a fixed pool of send slots
// (payload + msghdr + address + control space), so the steady state never allocates; when every
// slot is in flight, acquire() returns nullptr and the caller counts a drop.
//
// For a socket bound to a wildcard address, IP_PKTINFO / IPV6_RECVPKTINFO tell the sink the real
// destination address, and replies carry it as their source so multi-homed hosts answer from the
// address that was asked.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "relay/base/bytes.h"
#include "relay/base/counter.h"
#include "relay/base/endpoint.h"
#include "relay/base/result.h"
#include "relay/io/buf_ring.h"
#include "relay/io/loop.h"

namespace derpd::io {

class UdpSocket;

class DatagramSink {
 public:
  // `payload` aliases the receive buffer: copy what must outlive the call.
  virtual void on_datagram(UdpSocket& sock, Bytes payload, const Endpoint& from, const Endpoint& local) = 0;

 protected:
  ~DatagramSink() = default;
};

// Written by the worker thread only; readable from any thread (metrics). Several sockets of one
// service may share one UdpStats.
struct UdpStats {
  RelaxedCounter received;
  RelaxedCounter truncated;    // larger than a receive buffer: dropped
  RelaxedCounter recv_errors;
  RelaxedCounter no_buffers;   // -ENOBUFS: the kernel ran out of provided buffers
  RelaxedCounter rearms;
  RelaxedCounter sent;
  RelaxedCounter send_errors;
  RelaxedCounter send_busy;    // every send slot in flight: reply dropped
};

enum class UdpOpenError : std::uint8_t { kSocket, kBind, kOption };

// Opens a non-blocking UDP socket bound to `addr` with SO_REUSEPORT (one per worker), IPv6 sockets
// V6ONLY, and packet-info reception for wildcard binds. On failure returns the error and sets
// errno_out.
Result<int, UdpOpenError> open_udp_socket(const Endpoint& addr, int& errno_out);

class UdpSocket final : public Handler {
 public:
  static constexpr std::size_t kSendPayload = 1280;

  struct SendSlot {
    std::byte payload[kSendPayload];
    msghdr msg;
    iovec iov;
    sockaddr_storage to;
    alignas(cmsghdr) std::byte control[64];
    std::uint16_t index;
    std::uint16_t next_free;
  };

  // Takes ownership of fd. `bound` is the address the socket was bound to (port resolved).
  // `stats` must outlive the socket.
  UdpSocket(Loop& loop, int fd, const Endpoint& bound, BufRing& buffers, DatagramSink& sink, UdpStats& stats,
            std::uint16_t send_slots = 512);
  ~UdpSocket();
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;

  // Arms the multishot receive.
  void start();
  // Cancels pending operations and closes the fd (completions still in flight are stale).
  void close();

  const Endpoint& bound() const { return bound_; }
  bool wildcard() const { return bound_.addr.is_unspecified(); }
  int fd() const { return fd_; }
  const UdpStats& stats() const { return stats_; }
  // An owner-defined number (e.g. which of a service's sockets this is).
  void set_tag(std::uint32_t tag) { tag_ = tag; }
  std::uint32_t tag() const { return tag_; }

  // A free send slot, or nullptr when all are in flight.
  SendSlot* acquire();
  // Sends slot->payload[0..len) to `to`; on a wildcard socket `source` (if not unspecified)
  // becomes the packet's source address. The slot returns to the pool on completion.
  void send(SendSlot* slot, std::size_t len, const Endpoint& to, const IpAddr& source);
  // Returns an acquired slot without sending.
  void release(SendSlot* slot);

  void on_completion(const UserData& ud, const Completion& c) override;

 private:
  void on_recv(const Completion& c);
  void arm_recv();

  Loop& loop_;
  int fd_;
  Endpoint bound_;
  BufRing& buffers_;
  DatagramSink& sink_;
  std::uint32_t slot_;
  UdpStats& stats_;
  msghdr recv_tmpl_{};
  std::unique_ptr<SendSlot[]> send_slots_;
  std::uint16_t send_count_;
  std::uint16_t free_head_;
  static constexpr std::uint16_t kNone = 0xFFFF;
  bool closed_ = false;
  std::uint32_t tag_ = 0;
};

}  // namespace derpd::io
