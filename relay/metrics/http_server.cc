#include "relay/metrics/http_server.h"

#include <unistd.h>

#include <cstring>
#include <exception>

#include "relay/http/request.h"
#include "relay/http/response.h"
#include "relay/io/buf_ring.h"
#include "relay/io/uring.h"

namespace derpd::metrics {

namespace {
constexpr std::string_view kPath = "/metrics";
constexpr std::string_view kPlain = "text/plain; charset=utf-8";
}  // namespace

MetricsHttpServer::MetricsHttpServer(io::TcpContext& ctx, int listen_fd, const Exposition& exposition,
                                     const MetricsServerOptions& opts, MetricsServerCounters* counters)
    : ctx_(ctx),
      exposition_(exposition),
      opts_(opts),
      listener_(ctx.loop(), listen_fd, *this, io::TcpListenerOptions{opts.max_connections}),
      counters_(counters != nullptr ? *counters : own_counters_) {}

MetricsHttpServer::~MetricsHttpServer() { close(); }

void MetricsHttpServer::start() { listener_.start(); }

void MetricsHttpServer::close() {
  listener_.close();
  clients_.clear();  // releasing each connection closes it
}

void MetricsHttpServer::on_accept(io::TcpListener&, int fd) {
  clients_.emplace_back();
  Client& cl = clients_.back();
  cl.server = this;
  cl.self = std::prev(clients_.end());
  io::TcpConnectionOptions co;
  co.max_queued_bytes = opts_.max_queued_bytes;
  co.idle_timeout = opts_.idle_timeout;
  cl.conn = io::TcpConnection::open(ctx_, fd, cl, co);
  cl.conn->set_deadline(ctx_.loop().now() + opts_.request_timeout);
}

void MetricsHttpServer::drop(Client& cl) {
  listener_.connection_closed();
  clients_.erase(cl.self);  // releases the connection (also from inside its own callback)
}

void MetricsHttpServer::Client::on_data(io::TcpConnection&, Bytes data) {
  // Keep at most one head's worth plus this read: the parser decides "too large" from that.
  const std::size_t room = in.size() < http::kMaxHeadSize ? http::kMaxHeadSize + 1 - in.size() : 0;
  in.append(as_chars(data.first(std::min(room, data.size()))));
  server->serve(*this);
}

void MetricsHttpServer::Client::on_peer_closed(io::TcpConnection& c) {
  // The client sent everything; close once what was answered is written.
  c.close_after_flush();
  if (c.is_closed()) server->drop(*this);  // nothing was queued: closed at once
}

void MetricsHttpServer::Client::on_error(io::TcpConnection&, io::TcpError, int) { server->drop(*this); }

void MetricsHttpServer::Client::on_closed(io::TcpConnection&) { server->drop(*this); }

void MetricsHttpServer::serve(Client& cl) {
  io::TcpConnection& c = *cl.conn;
  while (c.is_open() && !cl.in.empty()) {
    auto head = http::parse_request_head(as_bytes(cl.in));
    if (!head.ok()) {
      switch (head.error()) {
        case http::ParseError::kIncomplete: return;  // the deadline set below still runs
        case http::ParseError::kTooLarge:
        case http::ParseError::kTooManyHeaders:
          counters_.bad_requests.add();
          respond(cl, 431, false, true, kPlain, "request head too large\n");
          return;
        case http::ParseError::kMalformed:
          counters_.bad_requests.add();
          respond(cl, 400, false, true, kPlain, "bad request\n");
          return;
      }
      return;
    }
    const http::RequestHead& h = *head;
    const bool close = !h.keep_alive;
    const bool is_head = h.method == "HEAD";
    bool sent;
    if (h.has_body()) {
      counters_.bad_requests.add();
      sent = respond(cl, 413, false, true, kPlain, "no request body expected\n");
    } else if (h.path != kPath) {
      counters_.not_found.add();
      sent = respond(cl, 404, is_head, close, kPlain, "not found; metrics are at /metrics\n");
    } else if (h.method != "GET" && !is_head) {
      counters_.bad_requests.add();
      sent = respond(cl, 405, false, close, kPlain, "method not allowed\n", "GET, HEAD");
    } else {
      counters_.scrapes.add();
      sent = respond(cl, 200, is_head, close, kTextContentType, exposition_.render());
    }
    if (!sent || !c.is_open()) return;
    cl.in.erase(0, h.head_size);  // invalidates `h`, which is not used again
    // The next request (pipelined, or on a kept-alive connection) gets its own time limit.
    if (cl.in.empty())
      c.clear_deadline();
    else
      c.set_deadline(ctx_.loop().now() + opts_.request_timeout);
  }
}

bool MetricsHttpServer::respond(Client& cl, int status, bool head_only, bool close, std::string_view content_type,
                                std::string_view body, std::string_view allow) {
  io::TcpConnection& c = *cl.conn;
  http::Header headers[3];
  std::size_t n = 0;
  headers[n++] = {"Content-Type", content_type};
  if (!allow.empty()) headers[n++] = {"Allow", allow};
  if (close) headers[n++] = {"Connection", "close"};
  const std::span<const http::Header> hs(headers, n);
  const auto mode = head_only ? http::Body::kHeadOnly : http::Body::kWith;
  const std::size_t size = http::response_size(status, hs, body, mode);
  MutBytes room = c.reserve(size);
  if (size == 0 || room.size() != size || http::write_response(room, status, hs, body, mode) != size) {
    counters_.dropped.add();
    c.close();
    drop(cl);
    return false;
  }
  c.commit(size);
  if (close) c.close_after_flush();
  return true;
}

// ---- MetricsThread -------------------------------------------------------------------------------

MetricsThread::MetricsThread(const Exposition& exposition, const MetricsServerOptions& opts)
    : exposition_(exposition), opts_(opts) {}

MetricsThread::~MetricsThread() { stop(); }

std::string MetricsThread::start(const Endpoint& addr) {
  if (thread_.joinable()) return "already running";
  int err = 0;
  auto fd = io::open_tcp_listener(addr, 64, err);
  if (!fd) return "metrics listener on " + addr.to_string() + ": " + std::strerror(err);
  auto local = io::local_endpoint(*fd);
  if (!local) {
    ::close(*fd);
    return "metrics listener: getsockname failed";
  }
  bound_ = *local;
  std::promise<std::string> ready;
  auto result = ready.get_future();
  thread_ = std::thread([this, lfd = *fd, p = std::move(ready)]() mutable { main(lfd, std::move(p)); });
  std::string why = result.get();
  if (!why.empty()) thread_.join();
  return why;
}

void MetricsThread::stop() {
  if (!thread_.joinable()) return;
  if (io::Loop* l = loop_.load(std::memory_order_acquire)) l->stop();
  thread_.join();
}

void MetricsThread::main(int fd, std::promise<std::string> ready) {
  // The ring is made here: a SINGLE_ISSUER ring belongs to the thread that creates it.
  // Declared before the ring so they outlive it: the kernel must be gone before the buffers.
  std::unique_ptr<io::BufRing> buffers;
  std::unique_ptr<io::UringRing> ring;
  try {
    ring = std::make_unique<io::UringRing>(io::RingOptions{256, 1024, true});
    buffers = std::make_unique<io::BufRing>(0, 64, 4096);
  } catch (const std::exception& e) {
    ::close(fd);
    ready.set_value(std::string("metrics server: ") + e.what());
    return;
  }
  if (int rc = ring->register_buf_ring(*buffers); rc < 0) {
    ::close(fd);
    ready.set_value(std::string("metrics server: registering receive buffers: ") + std::strerror(-rc));
    return;
  }
  io::MonotonicClock clock;
  io::Loop loop(*ring, clock);
  {
    io::TcpContext ctx(loop, *buffers);
    MetricsHttpServer server(ctx, fd, exposition_, opts_, &counters_);
    server.start();
    loop_.store(&loop, std::memory_order_release);
    ready.set_value("");
    loop.run();
    server.close();
    loop.run_once(std::chrono::milliseconds(0));  // submit the cancels before the ring goes
  }
  loop_.store(nullptr, std::memory_order_release);
}

}  // namespace derpd::metrics
