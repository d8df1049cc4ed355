// TcpContext: what every TCP connection of one worker shares: the loop, the provided-buffer group
// its receives select from, the worker's connection counters, the ring's table of registered
// files, a pool of send buffers, and the connections that were released by their owner but still
// wait for the kernel to finish their last operations.
//
// Registered files: with use_file_table(n) after the ring registered a table of n slots, each new
// connection moves its socket into a free slot and closes its descriptor, so the process
// descriptor limit bounds only sockets being accepted, not connections held (each ring's table
// can hold up to RLIMIT_NOFILE). When the table is full, connections keep their descriptor.
//
// Send buffers: a connection's send buffers go back to the pool when its queue drains and are
// taken again on its next write, so a busy connection does not pay malloc/free (or mmap/munmap
// for large buffers) per drain, and an idle one holds none. Sizes are powers of two from 4 KiB;
// the pool keeps at most `pool_limit` bytes and frees the rest.
//
// Owned by the worker thread. Destroy it after the loop has stopped running (it frees the
// connections still finishing their close) and before the buffer ring.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

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
  RelaxedCounter registered;      // connections whose socket moved into the ring's file table
  RelaxedCounter register_failed; // the table was full or refused: the connection kept its descriptor
  std::array<RelaxedCounter, static_cast<std::size_t>(TcpError::kCount)> errors;
};

// Send buffers by power-of-two size class, 4 KiB .. 4 MiB; larger ones are not pooled.
class SendBufferPool {
 public:
  static constexpr std::size_t kMinSize = 4096;
  static constexpr unsigned kClasses = 11;

  explicit SendBufferPool(std::size_t limit) : limit_(limit) {}
  // The size a request for `n` bytes gets: the next class size (or n itself beyond the classes).
  static std::size_t round_up(std::size_t n);
  std::unique_ptr<std::byte[]> take(std::size_t size);
  void give(std::unique_ptr<std::byte[]> buf, std::size_t size);
  std::size_t held_bytes() const { return held_; }

 private:
  static int class_of(std::size_t size);  // -1: not a class size
  std::size_t limit_;
  std::size_t held_ = 0;
  std::array<std::vector<std::unique_ptr<std::byte[]>>, kClasses> free_;
};

class TcpContext {
 public:
  static constexpr std::size_t kDefaultPoolLimit = 8 * 1024 * 1024;
  TcpContext(Loop& loop, BufRing& buffers, std::size_t pool_limit = kDefaultPoolLimit)
      : loop_(loop), buffers_(buffers), pool_(pool_limit) {}
  ~TcpContext();
  TcpContext(const TcpContext&) = delete;
  TcpContext& operator=(const TcpContext&) = delete;

  Loop& loop() { return loop_; }
  BufRing& buffers() { return buffers_; }
  TcpCounters& counters() { return counters_; }
  const TcpCounters& counters() const { return counters_; }
  // Connections released by their owner that still wait for completions.
  std::size_t finishing() const { return finishing_count_; }
  SendBufferPool& send_buffers() { return pool_; }

  // The ring has a table of `slots` registered files (Ring::register_file_table): new connections
  // move their sockets into it.
  void use_file_table(unsigned slots);
  unsigned file_slots() const { return table_size_; }
  unsigned file_slots_free() const { return static_cast<unsigned>(free_slots_.size()); }

 private:
  friend class TcpConnection;
  void adopt(TcpConnection* c);   // the connection frees itself later; the context frees it at exit
  void forget(TcpConnection* c);  // it did
  int take_file_slot();            // -1: none free
  void give_file_slot(int slot);

  Loop& loop_;
  BufRing& buffers_;
  TcpCounters counters_;
  SendBufferPool pool_;
  unsigned table_size_ = 0;
  std::vector<std::uint32_t> free_slots_;  // stack of free table slots
  TcpConnection* finishing_ = nullptr;  // intrusive doubly linked list
  std::size_t finishing_count_ = 0;
};

}  // namespace derpd::io
