// TcpListener: one worker's listening TCP socket, accepting with one multishot accept.
//
// Each worker opens its own SO_REUSEPORT socket on the same address (open_tcp_listener), so the
// kernel spreads connections over the workers and no accept is shared between threads. Accepted
// sockets (non-blocking, close-on-exec) go to the AcceptSink, which owns them from then on.
//
// Limits:
//  - max_connections: the sink reports each accepted connection's end with connection_closed();
//    while `active()` is at the limit, new connections are refused cleanly: closed at once and
//    counted, without reaching the sink.
//  - Out of descriptors (-EMFILE / -ENFILE) or kernel memory (-ENOMEM / -ENOBUFS): counted, and
//    the accept is re-armed only after a back-off timer (doubling from backoff_min to
//    backoff_max, reset by the next successful accept) - the waiting connections stay in the
//    kernel backlog and the loop never spins on a failing accept. Out of descriptors after some
//    were given back since the accept was armed (a burst of refusals: each needs a descriptor
//    for a moment) re-arms at once instead, so a burst beyond the limit is refused promptly. Other errors (a connection
//    aborted before it was accepted, ...) re-arm at once, unless they repeat: after
//    kMaxErrorStreak in a row the back-off applies too.
//
// close() cancels the accept and closes the socket; a connection the kernel accepted before the
// cancel took effect is closed when its completion arrives. Keep the listener alive until
// closed() is true if that matters (at process exit it does not). Owned by the worker thread.
#pragma once

#include <cstdint>
#include <optional>

#include "relay/base/endpoint.h"
#include "relay/base/result.h"
#include "relay/io/loop.h"
#include "relay/io/tcp_context.h"

namespace derpd::io {

class TcpListener;

class AcceptSink {
 public:
  // A new connection; the sink owns `fd` from now on and calls l.connection_closed() when it ends.
  virtual void on_accept(TcpListener& l, int fd) = 0;

 protected:
  ~AcceptSink() = default;
};

struct TcpListenerOptions {
  std::uint32_t max_connections = 100'000;
  Nanos backoff_min = std::chrono::milliseconds(20);
  Nanos backoff_max = std::chrono::seconds(1);
};

// Written by the worker thread, readable (relaxed) from any thread.
struct TcpListenerCounters {
  RelaxedCounter accepted;       // handed to the sink
  RelaxedCounter refused;        // closed at once: at max_connections, or while closing
  RelaxedCounter fd_exhausted;   // -EMFILE / -ENFILE
  RelaxedCounter no_memory;      // -ENOMEM / -ENOBUFS
  RelaxedCounter accept_errors;  // any other error
  RelaxedCounter backoffs;       // re-arms delayed by the back-off timer
  RelaxedCounter rearms;         // the kernel ended the multishot and we armed it again
};

enum class TcpOpenError : std::uint8_t { kSocket, kOption, kBind, kListen };

// Opens a non-blocking listening socket on `addr` with SO_REUSEADDR and SO_REUSEPORT (IPv6:
// V6ONLY). With port 0 every call gets its own port: bind the first worker's socket, read its port
// with local_endpoint(), then open the others on that port. On failure sets errno_out.
Result<int, TcpOpenError> open_tcp_listener(const Endpoint& addr, int backlog, int& errno_out);
std::optional<Endpoint> local_endpoint(int fd);
std::optional<Endpoint> peer_endpoint(int fd);

class TcpListener final : public Handler {
 public:
  static constexpr std::uint32_t kMaxErrorStreak = 8;

  // Takes ownership of the listening socket `fd`.
  TcpListener(Loop& loop, int fd, AcceptSink& sink, const TcpListenerOptions& opts = {});
  ~TcpListener();
  TcpListener(const TcpListener&) = delete;
  TcpListener& operator=(const TcpListener&) = delete;

  // Arms the multishot accept.
  void start();
  void close();
  // The accept has ended and the slot is released (close() was called and the kernel confirmed).
  bool closed() const { return state_ == State::kDetached; }

  // One connection handed to the sink has ended.
  void connection_closed() {
    if (active_ > 0) --active_;
    freed_since_arm_ = true;
  }
  std::uint32_t active() const { return active_; }
  int fd() const { return fd_; }
  const TcpListenerCounters& counters() const { return counters_; }

  void on_completion(const UserData& ud, const Completion& c) override;
  void on_timer(std::uint16_t cookie) override;

 private:
  enum class State : std::uint8_t { kIdle, kListening, kClosing, kDetached };

  void arm();
  void back_off();

  Loop& loop_;
  int fd_;
  AcceptSink& sink_;
  const TcpListenerOptions opts_;
  std::uint32_t slot_;
  std::uint64_t accept_ud_;
  State state_ = State::kIdle;
  bool armed_ = false;
  bool waiting_ = false;  // a back-off timer is pending
  bool freed_since_arm_ = false;  // a refusal or an ended connection gave a descriptor back
  Nanos backoff_{0};
  std::uint32_t error_streak_ = 0;
  std::uint32_t active_ = 0;
  TcpListenerCounters counters_;
};

}  // namespace derpd::io
