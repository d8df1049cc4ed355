// TcpConnection: one accepted (or connected) TCP socket on a worker's ring.
//
// Receive: one multishot recv selecting buffers from the worker's BufRing. Each filled buffer
// reaches the StreamSink as a view valid only during the call; the buffer goes back to the kernel
// right after, so a connection holds no receive memory between calls (the consumer copies only
// what spans calls, e.g. a partial frame). -ENOBUFS: the buffers are republished and the receive
// re-armed; a multishot the kernel ended (IORING_CQE_F_MORE clear) is re-armed.
//
// Fairness: a connection may take at most `recv_budget_per_turn` bytes in one loop turn. Past it
// the multishot is cancelled and re-armed after every other completion and timer of the turn ran,
// so one fast sender cannot keep the worker's buffers and the turn to itself.
//
// Send: ONE send in flight per connection. write() appends to a staging buffer; the staging buffer
// is handed to the kernel at the end of the loop turn (a due-now timer), so every write of a turn
// leaves in one send. Writes made while a send is in flight gather behind it and leave together
// when it completes; a partial send continues from where it stopped. The queue is bounded
// (max_queued_bytes): write() refuses what would exceed it, and queued_bytes() lets the owner
// decide before writing. Both buffers come from the worker's SendBufferPool on first use and go
// back to it when the queue drains, so an idle connection holds no send memory.
//
// Socket: when the context has a registered-file table with a free slot, the socket moves into it
// and its descriptor is closed (see TcpContext); otherwise the connection keeps the descriptor.
//
// Close: close() shuts the socket down, cancels its operations by user_data, closes the fd (a
// registered socket: its slot is emptied by a linked submission and returned to the context when
// that completes) and drops queued bytes; the sink hears nothing more. The kernel may still complete operations
// (received data in filled buffers, the last send reading its buffer), so the connection stays
// attached to its loop slot until those completions have arrived (buffers they carry go back to
// the ring; nothing leaks), then detaches: anything later for the old generation is stale.
// Connections are owned through TcpConnection::Ptr; releasing it closes the connection and lets
// it free itself once the kernel is done. Releasing (or closing) from inside a sink callback is
// allowed: the connection defers its own deletion until the callback has returned.
//
// Errors (-ECONNRESET, -EPIPE, ...) and timeouts close the connection and are reported once with
// on_error(); the peer's half-close (recv returns 0) is reported once with on_peer_closed() and
// stops reading, while writing may go on.
//
// Memory of an idle connection: this object (~200 bytes), no buffers.
//
// Everything here is owned by the worker thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "relay/base/bytes.h"
#include "relay/base/result.h"
#include "relay/io/loop.h"
#include "relay/io/tcp_context.h"

namespace derpd::io {

class TcpConnection;

class StreamSink {
 public:
  // Bytes received. `data` aliases a receive buffer and is valid only during the call.
  virtual void on_data(TcpConnection& c, Bytes data) = 0;
  // The peer will send nothing more (FIN). Called at most once; reading has stopped.
  virtual void on_peer_closed(TcpConnection& c) = 0;
  // The connection failed or timed out and is already closed. Called at most once and never after
  // the owner's own close(); nothing else follows.
  virtual void on_error(TcpConnection& c, TcpError e, int err) = 0;
  // The send queue went empty: everything written has been handed to the kernel's socket buffer.
  virtual void on_drained(TcpConnection& /*c*/) {}
  // close_after_flush() finished: the queue drained and the connection is now closed. Not called
  // when close_after_flush() found nothing queued and closed at once (is_open() tells the caller).
  virtual void on_closed(TcpConnection& /*c*/) {}

 protected:
  ~StreamSink() = default;
};

struct TcpConnectionOptions {
  std::size_t max_queued_bytes = 256 * 1024;      // staged + in flight; write() refuses beyond
  std::size_t recv_budget_per_turn = 256 * 1024;  // fairness cap, see above
  Nanos idle_timeout{0};                          // no bytes either way for this long: close (0 = never)
  bool nodelay = true;                            // TCP_NODELAY: writes are coalesced here already
};

enum class WriteError : std::uint8_t {
  kClosed,     // closed, closing after flush, or failed
  kQueueFull,  // would exceed max_queued_bytes; nothing was queued
};

// Per connection, owned by the worker thread.
struct TcpConnectionStats {
  std::uint64_t bytes_received = 0;
  std::uint64_t bytes_sent = 0;
  std::uint32_t sends = 0;  // send submissions (coalesced writes count once)
};

class TcpConnection final : public Handler {
 public:
  struct Release {
    void operator()(TcpConnection* c) const { c->release(); }
  };
  using Ptr = std::unique_ptr<TcpConnection, Release>;

  // Takes ownership of the connected socket `fd` and starts receiving.
  static Ptr open(TcpContext& ctx, int fd, StreamSink& sink, const TcpConnectionOptions& opts = {});

  TcpConnection(const TcpConnection&) = delete;
  TcpConnection& operator=(const TcpConnection&) = delete;

  // Queues all of `data` or nothing.
  Status<WriteError> write(Bytes data);
  // Room at the end of the queue for exactly `n` bytes, to be filled in place and committed; an
  // empty span when the connection is closed or `n` would exceed the limit (counted as refused).
  MutBytes reserve(std::size_t n);
  // Queues the first `n` bytes of the last reserve() (n <= its size).
  void commit(std::size_t n);
  // Bytes written but not yet accepted by the kernel (staged + the unsent rest of the send in flight).
  std::size_t queued_bytes() const;
  std::size_t write_room() const;
  bool send_in_flight() const { return send_in_flight_; }
  // Send memory held right now (capacity of both buffers): 0 whenever the queue is empty.
  std::size_t send_buffer_bytes() const { return inflight_.cap + staging_.cap; }

  // Stops / restarts receiving (backpressure). Data the kernel had already received when the
  // receive was cancelled is still delivered.
  void pause_reading();
  void resume_reading();

  // Fails the connection with TcpError::kDeadline at `when` (loop clock) unless cleared first,
  // e.g. a handshake timeout. One deadline at a time; setting replaces.
  void set_deadline(Nanos when);
  void clear_deadline();

  // Abortive close: queued bytes are dropped, no callback follows. Idempotent.
  void close();
  // Stops reading and closes once every queued byte is with the kernel, then reports on_closed()
  // (errors and timeouts before that are reported as usual). Later writes are refused.
  void close_after_flush();

  // Open: reading and writing. Neither open nor closed: flushing after close_after_flush().
  bool is_open() const { return state_ == State::kOpen; }
  bool is_closed() const { return state_ == State::kClosed || state_ == State::kDetached; }
  // The socket's descriptor, or -1 once it moved into the registered-file table (or closed).
  int fd() const { return sock_.registered ? -1 : sock_.index; }
  bool registered() const { return sock_.registered; }
  const TcpConnectionStats& stats() const { return stats_; }
  // The loop slot, for tests and logs.
  std::uint32_t slot() const { return slot_; }

  void on_completion(const UserData& ud, const Completion& c) override;
  void on_timer(std::uint16_t cookie) override;

 private:
  friend class TcpContext;

  enum class State : std::uint8_t {
    kOpen,
    kFlushing,  // close_after_flush(): sending what is queued, then closing
    kClosed,    // fd closed; waiting for the kernel's last completions
    kDetached,  // slot released; only the owner's release (or the context) remains
  };
  enum class RecvState : std::uint8_t { kIdle, kArmed, kCancelling };

  // A growable byte buffer from the context's pool, given back (not just cleared) when the queue
  // drains.
  struct Buffer {
    std::unique_ptr<std::byte[]> data;
    std::size_t size = 0;
    std::size_t cap = 0;
    void reserve_total(std::size_t total, std::size_t limit, SendBufferPool& pool);
    void free(SendBufferPool& pool) {
      if (data) pool.give(std::move(data), cap);
      size = cap = 0;
    }
  };

  TcpConnection(TcpContext& ctx, int fd, StreamSink& sink, const TcpConnectionOptions& opts);
  ~TcpConnection();

  void release();
  bool want_read() const { return state_ == State::kOpen && !paused_ && !peer_closed_; }
  void arm_recv();
  bool cancel_recv();
  void on_recv(const Completion& c);
  void after_recv_ended(bool no_buffers);
  void schedule_flush();
  void start_send();
  void submit_send();
  void on_send(const Completion& c);
  void drained();
  void touch();
  void arm_deadline_timer();
  void check_deadlines();
  void do_close();
  void close_socket();
  void on_unregistered();
  void fail(TcpError e, int err);
  void maybe_finish();

  TcpContext& ctx_;
  Loop& loop_;
  StreamSink& sink_;
  const TcpConnectionOptions opts_;
  FileRef sock_;
  std::uint32_t slot_;
  std::uint64_t recv_ud_;
  std::uint64_t send_ud_;

  State state_ = State::kOpen;
  RecvState recv_ = RecvState::kIdle;
  bool paused_ = false;
  bool peer_closed_ = false;
  bool throttled_ = false;        // re-arm waits for the end of the turn
  bool rearm_timer_ = false;      // a re-arm timer is pending
  bool flush_scheduled_ = false;
  bool send_in_flight_ = false;
  bool released_ = false;         // the owner let go; free when finished
  bool unregistering_ = false;    // the registered socket's slot is being emptied
  std::uint8_t nobufs_streak_ = 0;
  std::uint16_t depth_ = 0;       // nesting of on_completion/on_timer frames

  std::uint64_t turn_ = 0;        // loop turn the budget below belongs to
  std::size_t turn_bytes_ = 0;

  Buffer inflight_;               // being sent: [sent_, size)
  std::size_t sent_ = 0;
  Buffer staging_;                // written since the last send started
  std::size_t reserved_ = 0;      // bytes of staging_ handed out by reserve(), not yet committed

  Nanos deadline_{0};             // 0: none
  Nanos last_activity_{0};
  Nanos timer_at_{0};             // earliest pending deadline timer (0: none)

  TcpConnectionStats stats_;

  // TcpContext's list of released connections still finishing.
  TcpConnection* prev_ = nullptr;
  TcpConnection* next_ = nullptr;
};

}  // namespace derpd::io
