// TcpContext: what every TCP connection of one worker shares: the loop, the provided-buffer group
// its receives select from, the worker's connection counters, and the connections that were
// released by their owner but still wait for the kernel to finish their last operations.
//
// Owned by the worker thread. Destroy it after the loop has stopped running (it frees the
// connections still finishing their close) and before the buffer ring.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "relay/io/buf_ring.h"
#include "relay/io/loop.h"

namespace derpd::io {

class TcpConnection;

// A counter written by one thread and read (relaxed) by others, e.g. the metrics exporter.
// add() is a plain load + store: no locked instruction on the hot path.
struct RelaxedCounter {
  std::atomic<std::uint64_t> v{0};
  void add(std::uint64_t n = 1) { v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  std::uint64_t get() const { return v.load(std::memory_order_relaxed); }
};

// Why a connection ended on its own (not by its owner's close()). Doubles as a metric label.
enum class TcpError : std::uint8_t {
  kPeerReset,         // -ECONNRESET
  kBrokenPipe,        // -EPIPE: sending after the peer went away
  kTimedOut,          // -ETIMEDOUT: the kernel gave up (retransmissions, keepalive)
  kIdleTimeout,       // no bytes moved either way for the connection's idle timeout
  kDeadline,          // the owner's deadline (set_deadline(), e.g. a handshake timeout) passed
  kRecvFailed,        // any other receive error
  kSendFailed,        // any other send error, or a send that made no progress
  kCount,
};
std::string_view to_string(TcpError e);

// Per worker, for every connection opened through the context.
struct TcpCounters {
  RelaxedCounter opened;
  RelaxedCounter closed;          // by the owner or by an error
  RelaxedCounter bytes_received;
  RelaxedCounter bytes_sent;
  RelaxedCounter no_buffers;      // -ENOBUFS: the worker's receive buffers ran out
  RelaxedCounter recv_throttled;  // receive paused for a turn: the per-turn budget was used up
  RelaxedCounter partial_sends;   // a send moved fewer bytes than asked (continued)
  RelaxedCounter write_refused;   // write() over the connection's queue limit
  RelaxedCounter submit_failed;   // submission queue full even after a flush (retried by timer)
  std::array<RelaxedCounter, static_cast<std::size_t>(TcpError::kCount)> errors;
};

class TcpContext {
 public:
  TcpContext(Loop& loop, BufRing& buffers) : loop_(loop), buffers_(buffers) {}
  ~TcpContext();
  TcpContext(const TcpContext&) = delete;
  TcpContext& operator=(const TcpContext&) = delete;

  Loop& loop() { return loop_; }
  BufRing& buffers() { return buffers_; }
  TcpCounters& counters() { return counters_; }
  const TcpCounters& counters() const { return counters_; }
  // Connections released by their owner that still wait for completions.
  std::size_t finishing() const { return finishing_count_; }

 private:
  friend class TcpConnection;
  void adopt(TcpConnection* c);   // the connection frees itself later; the context frees it at exit
  void forget(TcpConnection* c);  // it did

  Loop& loop_;
  BufRing& buffers_;
  TcpCounters counters_;
  TcpConnection* finishing_ = nullptr;  // intrusive doubly linked list
  std::size_t finishing_count_ = 0;
};

}  // namespace derpd::io
