// TcpListener and TcpConnection on a real io_uring over loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <list>
#include <string>
#include <thread>
#include <vector>

#include "relay/io/probe.h"
#include "relay/io/tcp_connection.h"
#include "relay/io/tcp_listener.h"
#include "relay/io/uring.h"

namespace derpd::io {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// Accepts every connection and echoes what it receives; stops reading while its queue is long
// (backpressure) and resumes once it drained.
struct EchoServer final : AcceptSink {
  static constexpr std::size_t kPauseAbove = 256 * 1024;
  struct Conn final : StreamSink {
    EchoServer* server = nullptr;
    TcpConnection::Ptr conn;
    std::list<Conn>::iterator self;
    void on_data(TcpConnection& c, Bytes d) override {
      if (!c.write(d).ok()) ++server->refused_writes;
      if (c.queued_bytes() > kPauseAbove) {
        ++server->pauses;
        c.pause_reading();
      }
    }
    void on_drained(TcpConnection& c) override { c.resume_reading(); }
    void on_peer_closed(TcpConnection&) override { server->drop(this); }
    void on_error(TcpConnection&, TcpError, int) override { server->drop(this); }
  };

  TcpContext& ctx;
  TcpListener* listener = nullptr;
  std::list<Conn> conns;
  TcpConnectionOptions opts;
  int refused_writes = 0;
  int pauses = 0;
  int closed = 0;

  explicit EchoServer(TcpContext& c) : ctx(c) {}
  void on_accept(TcpListener& l, int fd) override {
    listener = &l;
    conns.emplace_back();
    Conn& c = conns.back();
    c.server = this;
    c.self = std::prev(conns.end());
    c.conn = TcpConnection::open(ctx, fd, c, opts);
  }
  void drop(Conn* c) {
    ++closed;
    listener->connection_closed();
    conns.erase(c->self);  // releases the connection from inside its own callback
  }
};

struct KernelFixture : ::testing::Test {
  void SetUp() override {
    KernelProbe probe = probe_kernel();
    if (!probe.ok()) GTEST_SKIP() << "kernel lacks what derpd needs: " << probe.explain();
    ring = std::make_unique<UringRing>(RingOptions{1024, 8192, true});
    loop = std::make_unique<Loop>(*ring, clock);
    bufs = std::make_unique<BufRing>(1, 256, 4096);
    ASSERT_EQ(ring->register_buf_ring(*bufs), 0);
    ctx = std::make_unique<TcpContext>(*loop, *bufs);
  }
  void TearDown() override {
    ctx.reset();
    loop.reset();
    ring.reset();
  }
  // Opens a listener on 127.0.0.1 with an ephemeral port.
  int listen_fd(Endpoint& bound) {
    int err = 0;
    auto fd = open_tcp_listener(*Endpoint::parse("127.0.0.1:0"), 1024, err);
    EXPECT_TRUE(fd) << strerror(err);
    if (!fd) return -1;
    bound = *local_endpoint(*fd);
    return *fd;
  }
  // Runs the loop until `done` or the time limit.
  template <typename F>
  bool run_until(F done, std::chrono::milliseconds limit = 10s) {
    auto end = SteadyClock::now() + limit;
    while (!done()) {
      if (SteadyClock::now() > end) return false;
      loop->run_once(5ms);
    }
    return true;
  }

  MonotonicClock clock;
  std::unique_ptr<UringRing> ring;
  std::unique_ptr<Loop> loop;
  std::unique_ptr<BufRing> bufs;
  std::unique_ptr<TcpContext> ctx;
};

int connect_to(const Endpoint& ep) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_storage ss;
  socklen_t len = ep.to_sockaddr(ss);
  if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

bool read_exactly(int fd, std::string& out, std::size_t n) {
  out.clear();
  char buf[4096];
  while (out.size() < n) {
    ssize_t r = recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
    if (r <= 0) return false;
    out.append(buf, static_cast<std::size_t>(r));
  }
  return true;
}

// kConns connections, each echoing kRounds messages, all in flight at once; every one closes and
// frees itself.
void echo_over_many_connections(KernelFixture& f) {
  auto& loop = f.loop;
  auto& ctx = f.ctx;
  auto& bufs = f.bufs;
  Endpoint bound;
  int lfd = f.listen_fd(bound);
  ASSERT_GE(lfd, 0);
  EchoServer server(*ctx);
  TcpListener listener(*loop, lfd, server);
  listener.start();

  constexpr int kConns = 200;
  constexpr int kRounds = 3;
  std::atomic<int> ok{0};
  std::atomic<bool> client_done{false};
  std::string failure;
  std::thread client([&] {
    std::vector<int> fds;
    for (int i = 0; i < kConns; ++i) {
      int fd = connect_to(bound);
      if (fd < 0) {
        failure = "connect failed";
        break;
      }
      fds.push_back(fd);
    }
    for (int round = 0; round < kRounds && failure.empty(); ++round) {
      // Every connection sends, then every connection reads its echo: all in flight at once.
      for (std::size_t i = 0; i < fds.size(); ++i) {
        std::string msg = "conn " + std::to_string(i) + " round " + std::to_string(round) + std::string(i * 7, 'x');
        if (send(fds[i], msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size())) failure = "send";
      }
      for (std::size_t i = 0; i < fds.size() && failure.empty(); ++i) {
        std::string want = "conn " + std::to_string(i) + " round " + std::to_string(round) + std::string(i * 7, 'x');
        std::string got;
        if (!read_exactly(fds[i], got, want.size()) || got != want) {
          failure = "echo mismatch on connection " + std::to_string(i);
          break;
        }
        ok.fetch_add(1);
      }
    }
    for (int fd : fds) ::close(fd);
    client_done = true;
  });
  bool finished = f.run_until([&] { return client_done.load() && server.conns.empty(); });
  client.join();
  ASSERT_TRUE(failure.empty()) << failure;
  EXPECT_TRUE(finished);
  EXPECT_EQ(ok.load(), kConns * kRounds);
  EXPECT_EQ(listener.counters().accepted.get(), static_cast<std::uint64_t>(kConns));
  EXPECT_EQ(server.closed, kConns) << "every peer close was reported";
  EXPECT_EQ(listener.active(), 0u);
  EXPECT_EQ(server.refused_writes, 0);
  f.run_until([&] { return ctx->finishing() == 0; }, 2s);
  EXPECT_EQ(ctx->finishing(), 0u) << "closed connections freed themselves";
  EXPECT_EQ(bufs->available(), bufs->count()) << "every receive buffer is back with the kernel";
}

TEST_F(KernelFixture, EchoesOverManyConnections) { echo_over_many_connections(*this); }

// With a registered-file table smaller than the number of connections: the first connections'
// sockets live in the table (their descriptors closed), the rest keep descriptors, all echo, and
// every slot is empty and free again once they closed.
TEST_F(KernelFixture, EchoesWithSocketsInTheRegisteredFileTable) {
  constexpr unsigned kSlots = 64;
  ASSERT_EQ(ring->register_file_table(kSlots), 0);
  ctx->use_file_table(kSlots);
  echo_over_many_connections(*this);
  EXPECT_EQ(ctx->counters().registered.get(), kSlots) << "the table was used";
  EXPECT_GT(ctx->counters().register_failed.get(), 0u) << "and the rest fell back to descriptors";
  EXPECT_EQ(ctx->file_slots_free(), kSlots) << "every slot came back";
  // Registered sockets work again in reused slots.
  echo_over_many_connections(*this);
  EXPECT_EQ(ctx->counters().registered.get(), 2 * kSlots);
  EXPECT_EQ(ctx->file_slots_free(), kSlots);
}

// A client that connects and never reads: the server writes as fast as it may, and what it holds
// for that client stays within the connection's limit; writes beyond are refused.
// The server's side of a registered socket ends as a descriptor's would: after a flushing close
// the client reads everything and then end of stream; after an abortive close it reads end of
// stream (or a reset) at once rather than waiting.
TEST_F(KernelFixture, ClosingARegisteredSocketEndsTheStreamForThePeer) {
  ASSERT_EQ(ring->register_file_table(4), 0);
  ctx->use_file_table(4);
  Endpoint bound;
  int lfd = listen_fd(bound);
  ASSERT_GE(lfd, 0);
  struct Closer final : AcceptSink, StreamSink {
    TcpContext* ctx = nullptr;
    std::vector<TcpConnection::Ptr> conns;
    void on_accept(TcpListener&, int fd) override {
      conns.push_back(TcpConnection::open(*ctx, fd, *this));
      TcpConnection& c = *conns.back();
      if (conns.size() == 1) {
        EXPECT_TRUE(c.write(as_bytes("bye")).ok());
        c.close_after_flush();
      } else {
        c.close();
      }
    }
    void on_data(TcpConnection&, Bytes) override {}
    void on_peer_closed(TcpConnection&) override {}
    void on_error(TcpConnection&, TcpError, int) override {}
  } closer;
  closer.ctx = ctx.get();
  TcpListener listener(*loop, lfd, closer);
  listener.start();
  std::string first;
  ssize_t first_end = 99, second_end = 99;
  int second_errno = 0;
  std::atomic<bool> done{false};
  std::thread client([&] {
    int a = connect_to(bound);
    if (a >= 0) {
      read_exactly(a, first, 3);
      char c;
      first_end = recv(a, &c, 1, 0);
      ::close(a);
    }
    int b = connect_to(bound);
    if (b >= 0) {
      char c;
      second_end = recv(b, &c, 1, 0);
      second_errno = errno;
      ::close(b);
    }
    done = true;
  });
  run_until([&] { return done.load(); });
  client.join();
  EXPECT_EQ(ctx->counters().registered.get(), 2u);
  EXPECT_EQ(first, "bye");
  EXPECT_EQ(first_end, 0) << "end of stream after the flushed bytes";
  EXPECT_TRUE(second_end == 0 || (second_end < 0 && second_errno == ECONNRESET))
      << "an abortive close ends the stream at once, not by the client's 5 s receive timeout: " << second_end << " "
      << strerror(second_errno);
  closer.conns.clear();
  run_until([&] { return ctx->file_slots_free() == 4u && ctx->finishing() == 0; }, 2s);
  EXPECT_EQ(ctx->file_slots_free(), 4u);
}

TEST_F(KernelFixture, QueueStaysBoundedForAClientThatNeverReads) {
  Endpoint bound;
  int lfd = listen_fd(bound);
  ASSERT_GE(lfd, 0);
  struct Holder final : AcceptSink, StreamSink {
    TcpContext* ctx = nullptr;
    TcpConnection::Ptr conn;
    TcpConnectionOptions opts;
    int errors = 0;
    void on_accept(TcpListener&, int fd) override { conn = TcpConnection::open(*ctx, fd, *this, opts); }
    void on_data(TcpConnection&, Bytes) override {}
    void on_peer_closed(TcpConnection&) override {}
    void on_error(TcpConnection&, TcpError, int) override { ++errors; }
  } holder;
  holder.ctx = ctx.get();
  holder.opts.max_queued_bytes = 64 * 1024;
  TcpListener listener(*loop, lfd, holder);
  listener.start();

  int client = connect_to(bound);
  ASSERT_GE(client, 0);
  int small = 4096;
  setsockopt(client, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  ASSERT_TRUE(run_until([&] { return holder.conn != nullptr; }));
  TcpConnection& c = *holder.conn;
  int snd = 4096;
  setsockopt(c.fd(), SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd);

  const std::string chunk(8192, 'z');
  std::size_t max_seen = 0;
  std::uint64_t refused = 0;
  std::uint64_t accepted = 0;
  auto end = SteadyClock::now() + 3s;
  std::uint64_t last_sent = 0;
  auto stalled_since = SteadyClock::now();
  while (SteadyClock::now() < end) {
    while (c.write_room() >= chunk.size()) {
      ASSERT_TRUE(c.write(as_bytes(chunk)).ok());
      accepted += chunk.size();
    }
    if (!c.write(as_bytes(chunk)).ok()) ++refused;
    max_seen = std::max(max_seen, c.queued_bytes());
    loop->run_once(2ms);
    if (c.stats().bytes_sent != last_sent) {
      last_sent = c.stats().bytes_sent;
      stalled_since = SteadyClock::now();
    } else if (SteadyClock::now() - stalled_since > 300ms) {
      break;  // the kernel's buffers are full and nothing moves: the steady state
    }
  }
  EXPECT_GT(refused, 0u) << "the owner was told to stop";
  EXPECT_LE(max_seen, holder.opts.max_queued_bytes);
  EXPECT_GT(max_seen, 0u);
  EXPECT_EQ(c.queued_bytes(), accepted - c.stats().bytes_sent);
  EXPECT_LT(c.stats().bytes_sent, 16u << 20) << "the peer never read: the kernel cannot have taken it all";
  EXPECT_EQ(holder.errors, 0);
  ::close(client);
  // The reset (unread data) reaches the server as an error, once.
  run_until([&] { return holder.errors > 0; }, 3s);
  EXPECT_EQ(holder.errors, 1);
}

TEST_F(KernelFixture, ConnectionsOverTheLimitAreRefusedCleanly) {
  Endpoint bound;
  int lfd = listen_fd(bound);
  ASSERT_GE(lfd, 0);
  EchoServer server(*ctx);
  TcpListenerOptions o;
  o.max_connections = 1;
  TcpListener listener(*loop, lfd, server, o);
  listener.start();
  int a = connect_to(bound);
  ASSERT_TRUE(run_until([&] { return server.conns.size() == 1; }));
  int b = connect_to(bound);
  ASSERT_TRUE(run_until([&] { return listener.counters().refused.get() == 1; }));
  char buf[8];
  ssize_t r = -1;
  for (int i = 0; i < 100; ++i) {  // io_uring task work on this thread can interrupt a timed recv
    r = recv(b, buf, sizeof buf, 0);
    if (r >= 0 || errno != EINTR) break;
  }
  EXPECT_TRUE(r == 0 || (r < 0 && errno == ECONNRESET)) << "the refused client sees the connection end: " << r;
  ASSERT_EQ(send(a, "ok", 2, MSG_NOSIGNAL), 2);
  std::string got;
  std::thread reader([&] { read_exactly(a, got, 2); });
  run_until([&] { return got.size() == 2; }, 3s);
  reader.join();
  EXPECT_EQ(got, "ok") << "the admitted connection is unaffected";
  ::close(a);
  ::close(b);
  run_until([&] { return server.conns.empty(); }, 3s);
}

TEST_F(KernelFixture, LargeTransferArrivesIntactThroughPartialSendsAndBufferRecycling) {
  Endpoint bound;
  int lfd = listen_fd(bound);
  ASSERT_GE(lfd, 0);
  EchoServer server(*ctx);
  server.opts.max_queued_bytes = 4u << 20;  // far above the pause point: a refusal would be a bug
  TcpListener listener(*loop, lfd, server);
  listener.start();
  // 4 MiB through 4 KiB receive buffers (256 of them): far more than the pool, so recycling and
  // the per-turn budget both come into play; the echo side is bounded by its queue limit, so the
  // client reads while it writes.
  constexpr std::size_t kTotal = 4u << 20;
  std::string payload(kTotal, '\0');
  for (std::size_t i = 0; i < kTotal; ++i) payload[i] = static_cast<char>((i * 131 + i / 4096) & 0xFF);
  std::string got;
  std::atomic<bool> done{false};
  std::thread client([&] {
    int fd = connect_to(bound);
    if (fd < 0) {
      done = true;
      return;
    }
    std::size_t off = 0;
    char buf[65536];
    while (got.size() < kTotal) {
      pollfd p{fd, static_cast<short>(POLLIN | (off < kTotal ? POLLOUT : 0)), 0};
      if (poll(&p, 1, 5000) <= 0) break;
      if ((p.revents & POLLOUT) && off < kTotal) {
        ssize_t w = send(fd, payload.data() + off, std::min<std::size_t>(65536, kTotal - off), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) off += static_cast<std::size_t>(w);
      }
      if (p.revents & POLLIN) {
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0) break;
        if (r > 0) got.append(buf, static_cast<std::size_t>(r));
      }
    }
    ::close(fd);
    done = true;
  });
  run_until([&] { return done.load(); }, 20s);
  client.join();
  EXPECT_EQ(server.refused_writes, 0);
  ASSERT_EQ(got.size(), kTotal);
  EXPECT_TRUE(got == payload) << "bytes arrived out of order or corrupted";
}

}  // namespace
}  // namespace derpd::io
