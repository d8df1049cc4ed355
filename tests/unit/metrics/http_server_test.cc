// MetricsHttpServer on a real ring (MetricsThread) over loopback TCP.
#include "relay/metrics/http_server.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "relay/http/request.h"
#include "relay/io/probe.h"
#include "relay/metrics/stun_metrics.h"
#include "tests/unit/metrics/promtool.h"

namespace derpd::metrics {
namespace {

using namespace std::chrono_literals;

struct Response {
  int status = 0;
  std::string head;
  std::string body;
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

void send_all(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t w = send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (w <= 0) return;
    s.remove_prefix(static_cast<std::size_t>(w));
  }
}

// recv() that retries EINTR: with SO_RCVTIMEO set, io_uring task work queued on this thread (the
// kernel probe made a ring here) interrupts a blocking recv with EINTR instead of restarting it.
ssize_t recv_retry(int fd, char* buf, std::size_t len) {
  for (int i = 0; i < 100; ++i) {
    ssize_t r = recv(fd, buf, len, 0);
    if (r >= 0 || errno != EINTR) return r;
  }
  return -1;
}

// Reads until the peer closes (bounded by the 5 s receive timeout and 16 MiB).
std::string read_to_eof(int fd) {
  std::string out;
  char buf[16384];
  while (out.size() < (16u << 20)) {
    ssize_t r = recv_retry(fd, buf, sizeof buf);
    if (r <= 0) break;
    out.append(buf, static_cast<std::size_t>(r));
  }
  return out;
}

// Splits a stream of responses (each with Content-Length) into responses.
std::vector<Response> split_responses(std::string_view s, bool head_only = false) {
  std::vector<Response> v;
  while (!s.empty()) {
    std::size_t end = s.find("\r\n\r\n");
    if (end == std::string_view::npos) break;
    Response r;
    r.head = std::string(s.substr(0, end + 4));
    r.status = std::atoi(r.head.c_str() + 9);
    std::size_t cl = 0;
    auto p = r.head.find("Content-Length: ");
    if (p != std::string::npos) cl = std::strtoul(r.head.c_str() + p + 16, nullptr, 10);
    s.remove_prefix(end + 4);
    if (!head_only) {
      r.body = std::string(s.substr(0, cl));
      s.remove_prefix(std::min(cl, s.size()));
    }
    v.push_back(std::move(r));
  }
  return v;
}

struct ServerFixture : ::testing::Test {
  void SetUp() override {
    io::KernelProbe probe = io::probe_kernel();
    if (!probe.ok()) GTEST_SKIP() << "kernel lacks what derpd needs: " << probe.explain();
    stun = std::make_shared<StunMetrics>();
    stun->add_source([this](StunTotals& t) {
      t.disposition[0] += successes;
      t.ipv4 += successes;
    });
    exposition.add(stun);
    server = std::make_unique<MetricsThread>(exposition, opts);
    std::string why = server->start(*Endpoint::parse("127.0.0.1:0"));
    ASSERT_EQ(why, "");
    ASSERT_NE(server->bound().port, 0);
  }
  void TearDown() override {
    if (server) server->stop();
  }
  std::vector<Response> exchange(std::string_view request, bool head_only = false) {
    int fd = connect_to(server->bound());
    EXPECT_GE(fd, 0);
    if (fd < 0) return {};
    send_all(fd, request);
    std::string raw = read_to_eof(fd);
    ::close(fd);
    return split_responses(raw, head_only);
  }

  Exposition exposition;
  std::shared_ptr<StunMetrics> stun;
  std::uint64_t successes = 3;
  MetricsServerOptions opts;
  std::unique_ptr<MetricsThread> server;
};

TEST_F(ServerFixture, ServesMetricsThatPassPromtool) {
  auto rs = exchange("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, 200);
  EXPECT_NE(rs[0].head.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), std::string::npos)
      << rs[0].head;
  EXPECT_NE(rs[0].body.find("stun_requests_total{disposition=\"success\"} 3\n"), std::string::npos) << rs[0].body;
  EXPECT_NE(rs[0].body.find("stun_addrfamily_total{family=\"ipv6\"} 0\n"), std::string::npos) << rs[0].body;
  EXPECT_EQ(server->counters().scrapes.get(), 1u);
  if (!testing::have_promtool()) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  auto check = testing::promtool_check(rs[0].body);
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_EQ(check.output, "");
}

TEST_F(ServerFixture, OtherPathsAre404AndOtherMethods405) {
  auto nf = exchange("GET /derp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(nf.size(), 1u);
  EXPECT_EQ(nf[0].status, 404);
  auto na = exchange("DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(na.size(), 1u);
  EXPECT_EQ(na[0].status, 405);
  EXPECT_NE(na[0].head.find("Allow: GET, HEAD\r\n"), std::string::npos);
  EXPECT_EQ(server->counters().not_found.get(), 1u);
}

TEST_F(ServerFixture, HeadGetsHeadersOnly) {
  auto rs = exchange("HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", /*head_only=*/true);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, 200);
  EXPECT_NE(rs[0].head.find("Content-Length: "), std::string::npos);
}

TEST_F(ServerFixture, KeepAliveAndPipelinedRequestsAreAnsweredInOrder) {
  auto rs = exchange(
      "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[0].status, 200);
  EXPECT_EQ(rs[1].status, 404);
  EXPECT_EQ(rs[2].status, 200);
  EXPECT_NE(rs[2].head.find("Connection: close"), std::string::npos);
}

TEST_F(ServerFixture, RequestSplitAcrossWritesIsReassembled) {
  int fd = connect_to(server->bound());
  ASSERT_GE(fd, 0);
  const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  for (char ch : req) {
    send_all(fd, std::string_view(&ch, 1));
    std::this_thread::sleep_for(1ms);
  }
  auto rs = split_responses(read_to_eof(fd));
  ::close(fd);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, 200);
}

TEST_F(ServerFixture, GarbageGets400AndTheConnectionCloses) {
  auto rs = exchange(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11));
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, 400);
  auto big = exchange("GET /metrics HTTP/1.1\r\nX: " + std::string(http::kMaxHeadSize, 'a'));
  ASSERT_EQ(big.size(), 1u);
  EXPECT_EQ(big[0].status, 431);
  auto body = exchange("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
  ASSERT_EQ(body.size(), 1u);
  EXPECT_EQ(body[0].status, 413);
}

TEST(MetricsThread, ReportsABindFailure) {
  io::KernelProbe probe = io::probe_kernel();
  if (!probe.ok()) GTEST_SKIP() << "kernel lacks what derpd needs: " << probe.explain();
  Exposition ex;
  MetricsThread a(ex);
  ASSERT_EQ(a.start(*Endpoint::parse("127.0.0.1:0")), "");
  // A plain (non-SO_REUSEPORT) socket holding a port makes the server's bind fail.
  int blocker = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(blocker, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
  ASSERT_EQ(listen(blocker, 1), 0);
  socklen_t len = sizeof sin;
  getsockname(blocker, reinterpret_cast<sockaddr*>(&sin), &len);
  MetricsThread b(ex);
  std::string why = b.start(*Endpoint::parse("127.0.0.1:" + std::to_string(ntohs(sin.sin_port))));
  EXPECT_NE(why, "");
  ::close(blocker);
  a.stop();
}

TEST(MetricsThread, IdleAndSlowClientsAreClosedByTimeouts) {
  io::KernelProbe probe = io::probe_kernel();
  if (!probe.ok()) GTEST_SKIP() << "kernel lacks what derpd needs: " << probe.explain();
  Exposition ex;
  MetricsServerOptions o;
  o.request_timeout = 100ms;
  MetricsThread t(ex, o);
  ASSERT_EQ(t.start(*Endpoint::parse("127.0.0.1:0")), "");
  int fd = connect_to(t.bound());
  ASSERT_GE(fd, 0);
  send_all(fd, "GET /metr");  // and never finish
  auto start = std::chrono::steady_clock::now();
  char buf[64];
  ssize_t r = recv_retry(fd, buf, sizeof buf);
  EXPECT_EQ(r, 0) << "closed without an answer";
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, 90ms) << "not before the request timeout";
  EXPECT_LT(waited, 3s);
  ::close(fd);
  t.stop();
}

}  // namespace
}  // namespace derpd::metrics
