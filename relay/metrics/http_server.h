// MetricsHttpServer: GET /metrics over plain HTTP/1.1 on its own listening socket (never the DERP
// port), served from an io::Loop.
//
//   GET|HEAD /metrics   200, Content-Type: text/plain; version=0.0.4; charset=utf-8
//   other method there  405 (Allow: GET, HEAD)
//   any other path      404
//   bad request head    400 / 431, then close
//   a request body      413, then close (nothing here takes one)
// Keep-alive and pipelined requests are served in order; "Connection: close" (or HTTP/1.0) closes
// after the response. A request head must complete within request_timeout; a quiet connection is
// closed after idle_timeout; at most max_connections at once (more are refused by the listener).
//
// Where it runs: MetricsThread gives it a small thread with its own ring and loop. That is the
// recommended wiring: a scrape renders and formats every family (tens of microseconds, more as
// families grow) and parses untrusted input, none of which should sit on a DERP worker's loop or
// take that worker's receive buffers and connection budget; the counters it reads are relaxed
// atomics, so a separate thread costs nothing on the hot path. MetricsHttpServer itself works on
// any loop (given a TcpContext), e.g. a worker's, if a thread is not wanted.
#pragma once

#include <atomic>
#include <cstdint>
#include <future>
#include <list>
#include <string>
#include <thread>

#include "relay/base/endpoint.h"
#include "relay/io/loop.h"
#include "relay/io/tcp_connection.h"
#include "relay/io/tcp_listener.h"
#include "relay/metrics/exposition.h"

namespace derpd::metrics {

struct MetricsServerOptions {
  std::uint32_t max_connections = 64;
  io::Nanos request_timeout = std::chrono::seconds(10);
  io::Nanos idle_timeout = std::chrono::seconds(120);
  std::size_t max_queued_bytes = 16u << 20;  // per connection: the largest response it may hold
};

// Written by the server's loop thread, readable from any thread.
struct MetricsServerCounters {
  io::RelaxedCounter scrapes;        // 200 responses to /metrics
  io::RelaxedCounter not_found;      // 404
  io::RelaxedCounter bad_requests;   // 400 / 405 / 413 / 431
  io::RelaxedCounter dropped;        // response did not fit the connection's queue: closed
};

class MetricsHttpServer final : public io::AcceptSink {
 public:
  // Serves `exposition` on the listening socket `listen_fd` (taken) on ctx's loop. `exposition`
  // (and `counters`, when given: otherwise the server keeps its own) must outlive the server.
  MetricsHttpServer(io::TcpContext& ctx, int listen_fd, const Exposition& exposition,
                    const MetricsServerOptions& opts = {}, MetricsServerCounters* counters = nullptr);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  void start();
  // Stops accepting and closes every connection.
  void close();

  std::size_t connections() const { return clients_.size(); }
  const io::TcpListener& listener() const { return listener_; }
  const MetricsServerCounters& counters() const { return counters_; }

  void on_accept(io::TcpListener& l, int fd) override;

 private:
  struct Client final : io::StreamSink {
    MetricsHttpServer* server = nullptr;
    io::TcpConnection::Ptr conn;
    std::string in;  // bytes of request heads not yet answered (at most kMaxHeadSize + one read)
    std::list<Client>::iterator self;

    void on_data(io::TcpConnection& c, Bytes data) override;
    void on_peer_closed(io::TcpConnection& c) override;
    void on_error(io::TcpConnection& c, io::TcpError e, int err) override;
    void on_closed(io::TcpConnection& c) override;
  };

  void serve(Client& cl);
  // Queues one response; false when it does not fit (the client was closed).
  bool respond(Client& cl, int status, bool head_only, bool close, std::string_view content_type,
               std::string_view body, std::string_view allow = {});
  void drop(Client& cl);

  io::TcpContext& ctx_;
  const Exposition& exposition_;
  const MetricsServerOptions opts_;
  io::TcpListener listener_;
  std::list<Client> clients_;
  MetricsServerCounters own_counters_;
  MetricsServerCounters& counters_;
};

// A MetricsHttpServer on its own thread, ring and loop.
class MetricsThread {
 public:
  explicit MetricsThread(const Exposition& exposition, const MetricsServerOptions& opts = {});
  ~MetricsThread();
  MetricsThread(const MetricsThread&) = delete;
  MetricsThread& operator=(const MetricsThread&) = delete;

  // Binds `addr` (port 0 picks one) on the calling thread, then serves on a new thread. Returns ""
  // once it is serving, else why it could not start (bind error, no io_uring, ...).
  std::string start(const Endpoint& addr);
  // The bound address (port resolved), valid after a successful start().
  const Endpoint& bound() const { return bound_; }
  // Stops the loop and joins. Idempotent.
  void stop();
  const MetricsServerCounters& counters() const { return counters_; }

 private:
  void main(int fd, std::promise<std::string> ready);

  const Exposition& exposition_;
  const MetricsServerOptions opts_;
  Endpoint bound_;
  std::thread thread_;
  std::atomic<io::Loop*> loop_{nullptr};
  MetricsServerCounters counters_;
};

}  // namespace derpd::metrics
