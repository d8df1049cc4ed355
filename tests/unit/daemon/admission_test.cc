// AdmissionClient against a small HTTP server on 127.0.0.1 (plain sockets, thread per
// connection): decisions, the exact request, timeouts, fail-open vs fail-closed, bounded queues,
// many concurrent decisions delivered to the right worker. Every wait is bounded.
#include "relay/daemon/admission.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace derpd::daemon {
namespace {

using namespace std::chrono_literals;
using Ms = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// Requests go to loopback only: make sure no proxy from the environment is used.
class NoProxyEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    for (const char* v : {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"})
      ::unsetenv(v);
  }
};
[[maybe_unused]] const auto* const kNoProxy = ::testing::AddGlobalTestEnvironment(new NoProxyEnvironment);

// --- a tiny HTTP/1.1 server ------------------------------------------------------------------------

struct HttpRequest {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  std::optional<std::string> header(std::string_view name) const {
    for (const auto& [k, v] : headers) {
      if (k.size() == name.size() && std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
          }))
        return v;
    }
    return std::nullopt;
  }
};

// What the server does with one request: write `head`, wait `stall` (cut short when the server
// stops), write `tail`, then keep the connection or close it.
struct Reply {
  std::string head{};
  Ms stall{0};
  std::string tail{};
  bool close = false;
};

std::string json_reply(int status, std::string_view body, std::string_view reason = "OK") {
  return "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
         std::string(body);
}

class TestServer {
 public:
  using Handler = std::function<Reply(const HttpRequest&)>;

  explicit TestServer(Handler h) : handler_(std::move(h)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 128) != 0) std::abort();
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    accept_thread_ = std::thread([this] { accept_loop(); });
  }

  ~TestServer() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    accept_thread_.join();
    std::vector<std::thread> ts;
    {
      std::lock_guard lk(mu_);
      ts.swap(conn_threads_);
    }
    for (auto& t : ts) t.join();
    ::close(fd_);
  }

  std::string url(std::string_view path = "/verify") const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
  }
  std::vector<HttpRequest> requests() const {
    std::lock_guard lk(mu_);
    return requests_;
  }
  int max_active() const { return max_active_.load(); }
  std::uint16_t port() const { return port_; }

 private:
  static constexpr std::size_t kMaxConns = 64;
  static constexpr std::size_t kMaxHead = 64 * 1024;

  bool stopping() const {
    std::lock_guard lk(mu_);
    return stop_;
  }

  void accept_loop() {
    while (!stopping()) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::lock_guard lk(mu_);
      if (conn_threads_.size() >= kMaxConns) {
        ::close(c);
        continue;
      }
      conn_threads_.emplace_back([this, c] { serve(c); });
    }
  }

  // Reads until `pred(buf)` or the server stops / the peer closes. Bounded by kMaxHead.
  bool read_until(int c, std::string& buf, const std::function<bool(const std::string&)>& pred) {
    char tmp[4096];
    while (!pred(buf)) {
      if (stopping() || buf.size() > kMaxHead) return false;
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
      if (n <= 0) return false;
      buf.append(tmp, static_cast<std::size_t>(n));
    }
    return true;
  }

  void send_all(int c, std::string_view s) {
    while (!s.empty()) {
      ssize_t n = ::send(c, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      s.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  void serve(int c) {
    std::string buf;
    for (;;) {
      if (!read_until(c, buf, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; })) break;
      const std::size_t head_end = buf.find("\r\n\r\n") + 4;
      HttpRequest req;
      std::string_view head(buf.data(), head_end - 4);
      std::size_t eol = head.find("\r\n");
      std::string_view line = head.substr(0, eol);
      std::size_t sp1 = line.find(' ');
      std::size_t sp2 = line.find(' ', sp1 + 1);
      req.method = std::string(line.substr(0, sp1));
      req.target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
      while (eol != std::string_view::npos) {
        head.remove_prefix(eol + 2);
        eol = head.find("\r\n");
        std::string_view h = head.substr(0, eol);
        std::size_t colon = h.find(':');
        if (colon == std::string_view::npos) continue;
        std::string_view v = h.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
        req.headers.emplace_back(std::string(h.substr(0, colon)), std::string(v));
      }
      std::size_t clen = 0;
      if (auto cl = req.header("Content-Length")) clen = std::min<std::size_t>(std::stoul(*cl), kMaxHead);
      if (!read_until(c, buf, [&](const std::string& b) { return b.size() >= head_end + clen; })) break;
      req.body = buf.substr(head_end, clen);
      buf.erase(0, head_end + clen);
      {
        std::lock_guard lk(mu_);
        requests_.push_back(req);
      }
      const int now_active = ++active_;
      int prev = max_active_.load();
      while (now_active > prev && !max_active_.compare_exchange_weak(prev, now_active)) {
      }
      Reply r = handler_(req);
      send_all(c, r.head);
      if (r.stall.count() > 0) {
        std::unique_lock lk(mu_);
        cv_.wait_for(lk, r.stall, [this] { return stop_; });
      }
      send_all(c, r.tail);
      --active_;
      if (r.close || stopping()) break;
    }
    ::close(c);
  }

  Handler handler_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread accept_thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                      // guarded by mu_
  std::vector<std::thread> conn_threads_;  // guarded by mu_
  std::vector<HttpRequest> requests_;      // guarded by mu_
  std::atomic<int> active_{0};
  std::atomic<int> max_active_{0};
};

// A loopback port with nothing listening on it (bound, never listen()ed: connects are refused).
class DeadPort {
 public:
  DeadPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) std::abort();
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~DeadPort() { ::close(fd_); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/verify"; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// --- helpers ---------------------------------------------------------------------------------------

protocol::NodePublic key_with(std::uint8_t first, std::uint8_t last = 0) {
  std::array<std::uint8_t, protocol::kKeyLen> raw{};
  for (std::size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<std::uint8_t>(i + 1);
  raw[0] = first;
  raw[31] = last;
  return protocol::NodePublic::from_raw(std::span<const std::uint8_t, protocol::kKeyLen>(raw));
}

const IpAddr kSource = IpAddr::v4({192, 0, 2, 7});

// Waits on the worker's eventfd (as the worker's io_uring read would) until `want` results are
// drained or `limit` passes.
std::vector<AdmissionResult> wait_results(AdmissionClient& c, std::size_t worker, std::size_t want,
                                          Ms limit = Ms(5000)) {
  std::vector<AdmissionResult> out;
  const auto deadline = SteadyClock::now() + limit;
  while (out.size() < want && SteadyClock::now() < deadline) {
    pollfd p{c.wake_fd(worker), POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    std::uint64_t v = 0;
    EXPECT_EQ(::read(c.wake_fd(worker), &v, sizeof v), static_cast<ssize_t>(sizeof v));
    c.drain(worker, out);
  }
  return out;
}

AdmissionOptions opts_for(std::string url, bool fail_open, std::size_t workers = 1) {
  AdmissionOptions o;
  o.url = std::move(url);
  o.fail_open = fail_open;
  o.workers = workers;
  return o;
}

// One decision end to end; returns the single result (or a sentinel with token 0 on timeout).
AdmissionResult decide(AdmissionClient& c, std::uint64_t token = 42) {
  EXPECT_EQ(c.submit(0, token, key_with(9), kSource), AdmissionSubmit::kPending);
  auto rs = wait_results(c, 0, 1);
  if (rs.size() != 1) {
    ADD_FAILURE() << "expected one result, got " << rs.size();
    return AdmissionResult{};
  }
  EXPECT_EQ(rs[0].token, token);
  return rs[0];
}

// --- pure parts ------------------------------------------------------------------------------------

struct BodyCase {
  const char* body;
  AdmitBody want;
};

class ParseAdmitBodyTest : public ::testing::TestWithParam<BodyCase> {};

TEST_P(ParseAdmitBodyTest, DecodesAsGoDoes) {
  EXPECT_EQ(parse_admit_body(GetParam().body), GetParam().want) << "body: " << GetParam().body;
}

INSTANTIATE_TEST_SUITE_P(
    Bodies, ParseAdmitBodyTest,
    ::testing::Values(BodyCase{R"({"Allow":true})", AdmitBody::kAllow},
                      BodyCase{R"({"Allow":false})", AdmitBody::kDeny},
                      BodyCase{R"(  {"allow":true}  )", AdmitBody::kAllow},      // names match any case
                      BodyCase{R"({"ALLOW":true})", AdmitBody::kAllow},
                      BodyCase{R"({"Allow":true,"Allow":false})", AdmitBody::kDeny},  // last wins
                      BodyCase{R"({"Allow":false,"allow":true})", AdmitBody::kAllow},
                      BodyCase{R"({"Allow":true,"Allow":null})", AdmitBody::kAllow},  // null: unchanged
                      BodyCase{R"({"Allow":null})", AdmitBody::kDeny},
                      BodyCase{R"({})", AdmitBody::kDeny},
                      BodyCase{R"({"Other":1,"Nested":{"Allow":true},"L":[{"Allow":true}]})", AdmitBody::kDeny},
                      BodyCase{R"({"Extra":"x","Allow":true,"More":[1,2,{"a":null}]})", AdmitBody::kAllow},
                      BodyCase{"null", AdmitBody::kDeny},
                      BodyCase{R"({"Allow":true} trailing garbage)", AdmitBody::kAllow},  // first value only
                      BodyCase{R"({"Allow":true}{"Allow":false})", AdmitBody::kAllow},
                      BodyCase{R"({"Allow":"true"})", AdmitBody::kMalformed},  // wrong type
                      BodyCase{R"({"Allow":1})", AdmitBody::kMalformed},
                      BodyCase{R"({"Allow":{}})", AdmitBody::kMalformed},
                      BodyCase{R"({"Allow":[true]})", AdmitBody::kMalformed},
                      BodyCase{R"([{"Allow":true}])", AdmitBody::kMalformed},
                      BodyCase{"true", AdmitBody::kMalformed},
                      BodyCase{R"("Allow")", AdmitBody::kMalformed},
                      BodyCase{"", AdmitBody::kMalformed},
                      BodyCase{"   ", AdmitBody::kMalformed},
                      BodyCase{R"({"Allow":true)", AdmitBody::kMalformed},  // cut short
                      BodyCase{R"({"Allow":tru)", AdmitBody::kMalformed},
                      BodyCase{"not json", AdmitBody::kMalformed},
                      BodyCase{"\xEF\xBB\xBF{\"Allow\":true}", AdmitBody::kMalformed},  // Go refuses a BOM
                      BodyCase{R"({'Allow':true})", AdmitBody::kMalformed}));

TEST(AdmissionText, GoAddrString) {
  EXPECT_EQ(go_addr_string(IpAddr::v4({1, 2, 3, 4})), "1.2.3.4");
  auto v6 = [](const char* s) { return go_addr_string(*IpAddr::parse(s)); };
  EXPECT_EQ(v6("2001:db8::1"), "2001:db8::1");
  EXPECT_EQ(v6("::1"), "::1");
  EXPECT_EQ(v6("::"), "::");
  EXPECT_EQ(v6("2001:0DB8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1");  // one zero group stays
  EXPECT_EQ(v6("1:0:0:2:0:0:0:3"), "1:0:0:2::3");                   // the longest run
  EXPECT_EQ(v6("1:0:0:2:0:0:3:4"), "1::2:0:0:3:4");                 // the first of equal runs
  EXPECT_EQ(v6("fe80::1:2"), "fe80::1:2");
  EXPECT_EQ(v6("1::"), "1::");
  EXPECT_EQ(v6("::102:304"), "::102:304");  // IPv4-compatible: hex, as netip (inet_ntop says ::1.2.3.4)
  EXPECT_EQ(v6("::ffff:10.0.0.1"), "10.0.0.1");  // mapped addresses are IPv4 clients
}

TEST(AdmissionText, RequestBodyIsDerpersBytes) {
  const auto k = key_with(0xab, 0xcd);
  EXPECT_EQ(admission_request_body(k, IpAddr::v4({10, 1, 2, 3})),
            R"({"NodePublic":")" + k.to_string() + R"(","Source":"10.1.2.3"})");
  EXPECT_EQ(admission_request_body(k, *IpAddr::parse("2001:db8::7")),
            R"({"NodePublic":")" + k.to_string() + R"(","Source":"2001:db8::7"})");
  EXPECT_EQ(k.to_string().substr(0, 10), "nodekey:ab");
}

TEST(AdmissionClientConfig, RefusesNonHttpUrlsAndZeroOptions) {
  for (const char* bad : {"", "ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://127.0.0.1/", "127.0.0.1:80/x",
                          "http://", "not a url", "dict://127.0.0.1:1/"}) {
    EXPECT_THROW(AdmissionClient(bad, true, 1), std::invalid_argument) << bad;
  }
  EXPECT_NO_THROW(AdmissionClient("http://127.0.0.1:1/verify", true, 1));
  EXPECT_NO_THROW(AdmissionClient("HTTPS://127.0.0.1:1/verify", false, 2));
  auto o = opts_for("http://127.0.0.1:1/", true);
  o.workers = 0;
  EXPECT_THROW(AdmissionClient{o}, std::invalid_argument);
  o = opts_for("http://127.0.0.1:1/", true);
  o.max_in_flight = 0;
  EXPECT_THROW(AdmissionClient{o}, std::invalid_argument);
  o = opts_for("http://127.0.0.1:1/", true);
  o.queue_per_worker = 0;
  EXPECT_THROW(AdmissionClient{o}, std::invalid_argument);
  o = opts_for("http://127.0.0.1:1/", true);
  o.timeout = Ms(0);
  EXPECT_THROW(AdmissionClient{o}, std::invalid_argument);
}

// --- against the server ----------------------------------------------------------------------------

TEST(AdmissionClient, AllowSendsDerpersRequest) {
  TestServer srv([](const HttpRequest&) { return Reply{json_reply(200, R"({"Allow":true})")}; });
  AdmissionClient c(srv.url("/verify?x=1"), false, 1);
  // Nothing yet: no wake-up, nothing to drain.
  pollfd p{c.wake_fd(0), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);
  std::vector<AdmissionResult> none;
  EXPECT_EQ(c.drain(0, none), 0u);

  const auto k = key_with(0x5a, 0x77);
  ASSERT_EQ(c.submit(0, 0xfeedfacecafebeefull, k, IpAddr::v4({100, 64, 0, 9})), AdmissionSubmit::kPending);
  auto rs = wait_results(c, 0, 1);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].token, 0xfeedfacecafebeefull);
  EXPECT_TRUE(rs[0].allow);
  EXPECT_EQ(rs[0].reason, AdmissionReason::kAllowed);
  EXPECT_EQ(rs[0].http_status, 200);

  auto reqs = srv.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "POST");
  EXPECT_EQ(reqs[0].target, "/verify?x=1");
  EXPECT_EQ(reqs[0].header("Content-Type"), "application/json");
  EXPECT_EQ(reqs[0].header("Content-Length"), std::to_string(reqs[0].body.size()));
  EXPECT_EQ(reqs[0].header("Expect"), std::nullopt);
  EXPECT_EQ(reqs[0].header("Host"), "127.0.0.1:" + std::to_string(srv.port()));
  EXPECT_EQ(reqs[0].body, R"({"NodePublic":")" + k.to_string() + R"(","Source":"100.64.0.9"})");
  auto j = nlohmann::json::parse(reqs[0].body);
  EXPECT_EQ(j.size(), 2u);

  EXPECT_EQ(c.counters().requests.load(), 1u);
  EXPECT_EQ(c.counters().allowed.load(), 1u);
  EXPECT_EQ(c.counters().denied.load(), 0u);
  EXPECT_EQ(c.counters().errors.load(), 0u);
}

struct ServerCase {
  const char* name;
  std::string reply;
  bool fail_open;
  bool allow;
  AdmissionReason reason;
  std::uint16_t status;
};

class AdmissionAnswerTest : public ::testing::TestWithParam<ServerCase> {};

TEST_P(AdmissionAnswerTest, Decides) {
  const ServerCase& sc = GetParam();
  TestServer srv([&](const HttpRequest&) { return Reply{sc.reply, Ms(0), "", /*close=*/true}; });
  AdmissionClient c(srv.url(), sc.fail_open, 1);
  AdmissionResult r = decide(c);
  EXPECT_EQ(r.allow, sc.allow);
  EXPECT_EQ(r.reason, sc.reason) << to_string(r.reason);
  EXPECT_EQ(r.http_status, sc.status);
  EXPECT_EQ(srv.requests().size(), 1u);
  const auto& k = c.counters();
  EXPECT_EQ(k.allowed.load() + k.denied.load() + k.errors.load(), 1u);
  EXPECT_EQ(k.fail_open_admits.load(), 0u);  // the controller answered: the policy does not apply
}

const std::string kBig(100 * 1024, ' ');

INSTANTIATE_TEST_SUITE_P(
    Answers, AdmissionAnswerTest,
    ::testing::Values(
        ServerCase{"allow", json_reply(200, R"({"Allow":true})"), false, true, AdmissionReason::kAllowed, 200},
        ServerCase{"deny", json_reply(200, R"({"Allow":false})"), true, false, AdmissionReason::kDenied, 200},
        ServerCase{"empty_object", json_reply(200, "{}"), true, false, AdmissionReason::kDenied, 200},
        ServerCase{"status500", json_reply(500, R"({"Allow":true})", "Internal Server Error"), true, false,
                   AdmissionReason::kHttpStatus, 500},
        ServerCase{"status403", json_reply(403, "", "Forbidden"), true, false, AdmissionReason::kHttpStatus, 403},
        ServerCase{"status204", "HTTP/1.1 204 No Content\r\n\r\n", true, false, AdmissionReason::kHttpStatus, 204},
        // A redirect without Location is the answer (Go returns it as is).
        ServerCase{"redirect_without_location", "HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", true, false,
                   AdmissionReason::kHttpStatus, 302},
        ServerCase{"garbage", json_reply(200, "<html>welcome</html>"), true, false, AdmissionReason::kBadResponse,
                   200},
        ServerCase{"wrong_type", json_reply(200, R"({"Allow":"yes"})"), true, false, AdmissionReason::kBadResponse,
                   200},
        ServerCase{"lowercase_name", json_reply(200, R"({"allow":true})"), false, true, AdmissionReason::kAllowed,
                   200},
        // Longer than the 4 KiB derper reads: a value complete within it decides ...
        ServerCase{"oversized_value_first", json_reply(200, R"({"Allow":true})" + kBig), false, true,
                   AdmissionReason::kAllowed, 200},
        // ... one that is not is refused, whatever comes later.
        ServerCase{"oversized_value_late", json_reply(200, kBig + R"({"Allow":true})"), true, false,
                   AdmissionReason::kBadResponse, 200},
        ServerCase{"http10_close", "HTTP/1.0 200 OK\r\n\r\n{\"Allow\":true}", false, true,
                   AdmissionReason::kAllowed, 200}),
    [](const ::testing::TestParamInfo<ServerCase>& i) { return std::string(i.param.name); });

TEST(AdmissionClient, NothingListeningFailOpenAdmits) {
  DeadPort dead;
  AdmissionClient c(dead.url(), true, 1);
  AdmissionResult r = decide(c);
  EXPECT_TRUE(r.allow);
  EXPECT_EQ(r.reason, AdmissionReason::kUnreachable);
  EXPECT_EQ(r.http_status, 0);
  EXPECT_EQ(c.counters().errors.load(), 1u);
  EXPECT_EQ(c.counters().fail_open_admits.load(), 1u);
  EXPECT_EQ(c.counters().allowed.load(), 0u);
}

TEST(AdmissionClient, NothingListeningFailClosedRejects) {
  DeadPort dead;
  AdmissionClient c(dead.url(), false, 1);
  AdmissionResult r = decide(c);
  EXPECT_FALSE(r.allow);
  EXPECT_EQ(r.reason, AdmissionReason::kUnreachable);
  EXPECT_EQ(c.counters().errors.load(), 1u);
  EXPECT_EQ(c.counters().fail_open_admits.load(), 0u);
}

// A controller that accepts the request but answers later than the timeout is unreachable.
class SlowTest : public ::testing::TestWithParam<bool> {};

TEST_P(SlowTest, NoAnswerInTimeFollowsPolicy) {
  const bool fail_open = GetParam();
  TestServer srv([](const HttpRequest&) { return Reply{"", Ms(5000), json_reply(200, R"({"Allow":true})")}; });
  auto o = opts_for(srv.url(), fail_open);
  o.timeout = Ms(300);
  AdmissionClient c(o);
  const auto t0 = SteadyClock::now();
  AdmissionResult r = decide(c);
  const auto took = SteadyClock::now() - t0;
  EXPECT_EQ(r.allow, fail_open);
  EXPECT_EQ(r.reason, AdmissionReason::kTimeout);
  EXPECT_GE(took, Ms(250));
  EXPECT_LT(took, Ms(2500));
  EXPECT_EQ(c.counters().fail_open_admits.load(), fail_open ? 1u : 0u);
}

INSTANTIATE_TEST_SUITE_P(Policy, SlowTest, ::testing::Bool());

TEST(AdmissionClient, AnswerHeadThenStalledBodyIsRejectedEvenFailOpen) {
  // The 200 arrived, so the controller was reachable: a body that never completes is a bad
  // answer (derper's decoder fails), not an unreachable controller.
  TestServer srv([](const HttpRequest&) {
    return Reply{"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"Allo", Ms(5000), ""};
  });
  auto o = opts_for(srv.url(), true);
  o.timeout = Ms(300);
  AdmissionClient c(o);
  AdmissionResult r = decide(c);
  EXPECT_FALSE(r.allow);
  EXPECT_EQ(r.reason, AdmissionReason::kBadResponse);
  EXPECT_EQ(c.counters().fail_open_admits.load(), 0u);
}

TEST(AdmissionClient, CompleteValueThenStalledBodyDecides) {
  TestServer srv([](const HttpRequest&) {
    return Reply{"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"Allow\":true}", Ms(5000), ""};
  });
  auto o = opts_for(srv.url(), false);
  o.timeout = Ms(300);
  AdmissionClient c(o);
  AdmissionResult r = decide(c);
  EXPECT_TRUE(r.allow);
  EXPECT_EQ(r.reason, AdmissionReason::kAllowed);
}

class QueueFullTest : public ::testing::TestWithParam<bool> {};

TEST_P(QueueFullTest, BeyondTheQueueThePolicyAnswersAtOnce) {
  const bool fail_open = GetParam();
  TestServer srv([](const HttpRequest&) { return Reply{"", Ms(5000), ""}; });
  auto o = opts_for(srv.url(), fail_open);
  o.queue_per_worker = 2;
  o.timeout = Ms(300);
  AdmissionClient c(o);
  EXPECT_EQ(c.submit(0, 1, key_with(1), kSource), AdmissionSubmit::kPending);
  EXPECT_EQ(c.submit(0, 2, key_with(2), kSource), AdmissionSubmit::kPending);
  EXPECT_EQ(c.submit(0, 3, key_with(3), kSource),
            fail_open ? AdmissionSubmit::kAdmitNow : AdmissionSubmit::kRejectNow);
  EXPECT_EQ(c.counters().queue_full.load(), 1u);
  EXPECT_EQ(c.counters().fail_open_admits.load(), fail_open ? 1u : 0u);

  auto rs = wait_results(c, 0, 2);
  ASSERT_EQ(rs.size(), 2u);
  std::set<std::uint64_t> tokens;
  for (const auto& r : rs) {
    tokens.insert(r.token);
    EXPECT_EQ(r.reason, AdmissionReason::kTimeout);
    EXPECT_EQ(r.allow, fail_open);
  }
  EXPECT_EQ(tokens, (std::set<std::uint64_t>{1, 2}));
  // Drained: room again.
  EXPECT_EQ(c.submit(0, 4, key_with(4), kSource), AdmissionSubmit::kPending);
  EXPECT_EQ(c.counters().requests.load(), 4u);
}

INSTANTIATE_TEST_SUITE_P(Policy, QueueFullTest, ::testing::Bool());

TEST(AdmissionClient, QueuedRequestsShareTheTimeoutFromSubmit) {
  // One request at a time against a controller that never answers: requests waiting behind it
  // must not each get a fresh timeout (that would take 3 x timeout).
  TestServer srv([](const HttpRequest&) { return Reply{"", Ms(10000), ""}; });
  auto o = opts_for(srv.url(), false);
  o.max_in_flight = 1;
  o.timeout = Ms(1000);
  AdmissionClient c(o);
  const auto t0 = SteadyClock::now();
  for (std::uint64_t t = 1; t <= 3; ++t) ASSERT_EQ(c.submit(0, t, key_with(1), kSource), AdmissionSubmit::kPending);
  auto rs = wait_results(c, 0, 3, Ms(6000));
  const auto took = SteadyClock::now() - t0;
  ASSERT_EQ(rs.size(), 3u);
  for (const auto& r : rs) {
    EXPECT_FALSE(r.allow);
    EXPECT_EQ(r.reason, AdmissionReason::kTimeout);
  }
  EXPECT_LT(took, Ms(2500));
  EXPECT_EQ(c.counters().errors.load(), 3u);
}

TEST(AdmissionClient, ManyConcurrentDecisionsReachTheirWorkers) {
  constexpr std::size_t kWorkers = 4;
  constexpr std::size_t kPerWorker = 100;
  constexpr std::size_t kInFlight = 8;
  // Allow exactly the keys whose last byte is even; a short delay lets requests overlap.
  TestServer srv([](const HttpRequest& req) {
    auto j = nlohmann::json::parse(req.body, nullptr, false);
    std::string k = j.is_object() && j.contains("NodePublic") ? j["NodePublic"].get<std::string>() : "";
    auto key = protocol::NodePublic::parse(k);
    if (!key) return Reply{json_reply(400, "", "Bad Request")};
    const bool even = key->data()[31] % 2 == 0;
    return Reply{"", Ms(10), json_reply(200, even ? R"({"Allow":true})" : R"({"Allow":false})")};
  });
  auto o = opts_for(srv.url(), false, kWorkers);
  o.max_in_flight = kInFlight;
  o.queue_per_worker = 128;
  o.timeout = Ms(10000);
  AdmissionClient c(o);

  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (std::size_t w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      for (std::size_t i = 0; i < kPerWorker; ++i) {
        const std::uint64_t token = (static_cast<std::uint64_t>(w) << 32) | i;
        if (c.submit(w, token, key_with(static_cast<std::uint8_t>(w), static_cast<std::uint8_t>(i)), kSource) !=
            AdmissionSubmit::kPending)
          ++failures;
      }
      auto rs = wait_results(c, w, kPerWorker, Ms(20000));
      if (rs.size() != kPerWorker) ++failures;
      std::set<std::uint64_t> seen;
      for (const auto& r : rs) {
        const std::size_t rw = r.token >> 32;
        const std::size_t i = r.token & 0xffffffffu;
        if (rw != w || i >= kPerWorker || !seen.insert(r.token).second) ++failures;
        if (r.allow != (i % 2 == 0)) ++failures;
        if (r.reason != (i % 2 == 0 ? AdmissionReason::kAllowed : AdmissionReason::kDenied)) ++failures;
      }
    });
  }
  for (auto& t : workers) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(srv.requests().size(), kWorkers * kPerWorker);
  EXPECT_LE(srv.max_active(), static_cast<int>(kInFlight));
  EXPECT_GT(srv.max_active(), 1);  // really concurrent
  EXPECT_EQ(c.counters().requests.load(), kWorkers * kPerWorker);
  EXPECT_EQ(c.counters().allowed.load(), kWorkers * kPerWorker / 2);
  EXPECT_EQ(c.counters().denied.load(), kWorkers * kPerWorker / 2);
  EXPECT_EQ(c.counters().queue_full.load(), 0u);
}

// --- redirects (Go's http.Client follows them; so does derper's admission check) -----------------

std::string redirect_to(int status, std::string_view location) {
  return "HTTP/1.1 " + std::to_string(status) + " Moved\r\nLocation: " + std::string(location) +
         "\r\nContent-Length: 0\r\n\r\n";
}

struct RedirectCase {
  int status;
  std::string method;  // of the second request
  bool body;           // the second request repeats the JSON body
};

class RedirectTest : public ::testing::TestWithParam<RedirectCase> {};

TEST_P(RedirectTest, FollowsLikeGo) {
  const RedirectCase& rc = GetParam();
  TestServer srv([&](const HttpRequest& req) {
    if (req.target == "/verify") return Reply{redirect_to(rc.status, "/real?hop=1")};
    return Reply{json_reply(200, R"({"Allow":true})")};
  });
  AdmissionClient c(srv.url(), false, 1);
  AdmissionResult r = decide(c);
  EXPECT_TRUE(r.allow);
  EXPECT_EQ(r.reason, AdmissionReason::kAllowed);
  const auto reqs = srv.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].method, "POST");
  EXPECT_EQ(reqs[1].target, "/real?hop=1");
  EXPECT_EQ(reqs[1].method, rc.method);
  if (rc.body) {
    EXPECT_EQ(reqs[1].body, reqs[0].body);
    EXPECT_EQ(reqs[1].header("Content-Length"), std::to_string(reqs[0].body.size()));
  } else {
    EXPECT_EQ(reqs[1].body, "");
    EXPECT_EQ(reqs[1].header("Content-Length"), std::nullopt);
  }
}

INSTANTIATE_TEST_SUITE_P(Statuses, RedirectTest,
                         ::testing::Values(RedirectCase{301, "GET", false}, RedirectCase{302, "GET", false},
                                           RedirectCase{303, "GET", false}, RedirectCase{307, "POST", true},
                                           RedirectCase{308, "POST", true}),
                         [](const ::testing::TestParamInfo<RedirectCase>& i) {
                           return std::to_string(i.param.status);
                         });

TEST(AdmissionRedirects, ToAnotherServer) {
  TestServer real([](const HttpRequest& req) {
    return Reply{json_reply(200, req.method == "POST" ? R"({"Allow":false})" : R"({"Allow":true})")};
  });
  TestServer front([&](const HttpRequest&) { return Reply{redirect_to(307, real.url("/decide"))}; });
  AdmissionClient c(front.url(), true, 1);
  AdmissionResult r = decide(c);
  EXPECT_FALSE(r.allow);
  EXPECT_EQ(r.reason, AdmissionReason::kDenied);
  ASSERT_EQ(real.requests().size(), 1u);
  EXPECT_EQ(real.requests()[0].header("Host"), "127.0.0.1:" + std::to_string(real.port()));
  EXPECT_EQ(real.requests()[0].target, "/decide");
}

// /hop/N redirects to /hop/N+1 until N reaches `last`, which answers.
Reply hop_chain(const HttpRequest& req, int last) {
  const int n = std::stoi(req.target.substr(req.target.rfind('/') + 1));
  if (n < last) return Reply{redirect_to(302, "/hop/" + std::to_string(n + 1))};
  return Reply{json_reply(200, R"({"Allow":true})")};
}

TEST(AdmissionRedirects, NineAreFollowedTheTenthIsAnErrorAsInGo) {
  {
    TestServer srv([](const HttpRequest& req) { return hop_chain(req, kMaxRedirects); });
    AdmissionClient c(srv.url("/hop/0"), false, 1);
    AdmissionResult r = decide(c);
    EXPECT_TRUE(r.allow);
    EXPECT_EQ(r.reason, AdmissionReason::kAllowed);
    EXPECT_EQ(srv.requests().size(), static_cast<std::size_t>(kMaxRedirects + 1));
  }
  for (const bool fail_open : {false, true}) {
    TestServer srv([](const HttpRequest& req) { return hop_chain(req, kMaxRedirects + 1); });
    AdmissionClient c(srv.url("/hop/0"), fail_open, 1);
    AdmissionResult r = decide(c);
    EXPECT_EQ(r.reason, AdmissionReason::kTooManyRedirects) << to_string(r.reason);
    EXPECT_EQ(r.allow, fail_open) << "no answer: the fail-open policy decides";
    EXPECT_EQ(r.http_status, 0);
    EXPECT_EQ(srv.requests().size(), static_cast<std::size_t>(kMaxRedirects + 1)) << "Go sends ten requests too";
    EXPECT_EQ(c.counters().fail_open_admits.load(), fail_open ? 1u : 0u);
    EXPECT_EQ(c.counters().by_reason[static_cast<std::size_t>(AdmissionReason::kTooManyRedirects)].load(), 1u);
  }
}

TEST(AdmissionRedirects, ALoopEndsAtTheLimit) {
  TestServer srv([](const HttpRequest&) { return Reply{redirect_to(307, "/verify")}; });
  AdmissionClient c(srv.url(), true, 1);
  AdmissionResult r = decide(c);
  EXPECT_EQ(r.reason, AdmissionReason::kTooManyRedirects);
  EXPECT_TRUE(r.allow);
  EXPECT_EQ(srv.requests().size(), static_cast<std::size_t>(kMaxRedirects + 1));
}

TEST(AdmissionRedirects, ToNowhereOrAnotherSchemeIsNoAnswer) {
  DeadPort dead;
  for (const std::string& where : {dead.url(), std::string("ftp://127.0.0.1:1/verify"), std::string("file:///etc/passwd")}) {
    TestServer srv([&](const HttpRequest&) { return Reply{redirect_to(302, where)}; });
    AdmissionClient c(srv.url(), false, 1);
    AdmissionResult r = decide(c);
    EXPECT_EQ(r.reason, AdmissionReason::kUnreachable) << where << ": " << to_string(r.reason);
    EXPECT_FALSE(r.allow);
    EXPECT_EQ(r.http_status, 0);
  }
}

TEST(AdmissionRedirects, EveryHopCountsAgainstTheOneTimeout) {
  TestServer slow([](const HttpRequest&) { return Reply{"", Ms(5000), json_reply(200, R"({"Allow":true})")}; });
  TestServer front([&](const HttpRequest&) { return Reply{"", Ms(200), redirect_to(307, slow.url())}; });
  auto o = opts_for(front.url(), true);
  o.timeout = Ms(500);
  AdmissionClient c(o);
  const auto t0 = SteadyClock::now();
  AdmissionResult r = decide(c);
  const auto took = SteadyClock::now() - t0;
  EXPECT_EQ(r.reason, AdmissionReason::kTimeout) << to_string(r.reason);
  EXPECT_TRUE(r.allow);
  EXPECT_EQ(slow.requests().size(), 1u);
  EXPECT_GE(took, Ms(450));
  EXPECT_LT(took, Ms(2000));
}

// --- what the metrics read --------------------------------------------------------------------------

TEST(AdmissionCounters, ByReasonAndLatencyCoverEveryDecision) {
  TestServer srv([](const HttpRequest& req) {
    if (req.target == "/verify") return Reply{json_reply(200, R"({"Allow":true})")};
    if (req.target == "/deny") return Reply{"", Ms(60), json_reply(200, R"({"Allow":false})")};
    return Reply{json_reply(500, "", "Internal Server Error")};
  });
  for (const char* path : {"/verify", "/deny", "/error"}) {
    auto o = opts_for(srv.url(path), false);
    o.queue_per_worker = 2;
    AdmissionClient c(o);
    for (std::uint64_t t = 1; t <= 2; ++t) ASSERT_EQ(c.submit(0, t, key_with(1), kSource), AdmissionSubmit::kPending);
    EXPECT_EQ(c.submit(0, 3, key_with(1), kSource), AdmissionSubmit::kRejectNow);
    ASSERT_EQ(wait_results(c, 0, 2).size(), 2u);
    const AdmissionCounters& k = c.counters();
    const AdmissionReason want = std::string(path) == "/verify" ? AdmissionReason::kAllowed
                                 : std::string(path) == "/deny" ? AdmissionReason::kDenied
                                                                : AdmissionReason::kHttpStatus;
    for (std::size_t i = 0; i < kAdmissionReasons; ++i) {
      const auto reason = static_cast<AdmissionReason>(i);
      const std::uint64_t expected = reason == want ? 2 : reason == AdmissionReason::kOverloaded ? 1 : 0;
      EXPECT_EQ(k.by_reason[i].load(), expected) << path << " " << to_string(reason);
    }
    std::uint64_t in_histogram = 0;
    for (const auto& b : k.latency) in_histogram += b.load();
    EXPECT_EQ(in_histogram, 2u) << "decisions through drain(), not the one refused at once";
    if (want == AdmissionReason::kDenied) {
      EXPECT_GE(k.latency_sum_us.load(), 2u * 60'000u) << "the controller took 60 ms each";
      std::uint64_t fast = 0;  // at or below 50 ms
      for (std::size_t i = 0; i < kAdmissionLatencyBounds.size() && kAdmissionLatencyBounds[i] <= 0.05; ++i)
        fast += k.latency[i].load();
      EXPECT_EQ(fast, 0u);
    }
  }
}

TEST(AdmissionCounters, ReportGivesEveryResultLabelPendingAndTheHistogram) {
  TestServer srv([](const HttpRequest& req) {
    if (req.target == "/slow") return Reply{"", Ms(3000), json_reply(200, R"({"Allow":true})")};
    return Reply{json_reply(200, R"({"Allow":false})")};
  });
  AdmissionClient c(srv.url(), true, 1);
  metrics::AdmissionTotals t;
  c.report(t);
  ASSERT_EQ(t.decisions.size(), kAdmissionReasons);
  for (std::size_t i = 0; i < kAdmissionReasons; ++i) {
    EXPECT_EQ(t.decisions[i].first, to_string(static_cast<AdmissionReason>(i)));
    EXPECT_EQ(t.decisions[i].second, 0u);
  }
  EXPECT_EQ(t.pending, 0);
  EXPECT_EQ(t.latency_bounds.size(), kAdmissionLatencyBounds.size());
  EXPECT_EQ(t.latency_counts.size(), kAdmissionLatencyBounds.size() + 1);

  (void)decide(c, 1);
  c.report(t);
  EXPECT_EQ(t.decisions[static_cast<std::size_t>(AdmissionReason::kDenied)].second, 1u);
  std::uint64_t n = 0;
  for (auto v : t.latency_counts) n += v;
  EXPECT_EQ(n, 1u);
  EXPECT_GT(t.latency_sum, 0.0);
  EXPECT_LT(t.latency_sum, 3.0);

  // One decision in flight: pending until it is delivered.
  AdmissionClient slow(srv.url("/slow"), true, 1);
  ASSERT_EQ(slow.submit(0, 7, key_with(1), kSource), AdmissionSubmit::kPending);
  slow.report(t);
  EXPECT_EQ(t.pending, 1);
}

TEST(AdmissionClient, DestroyWithRequestsInFlightIsPrompt) {
  TestServer srv([](const HttpRequest&) { return Reply{"", Ms(10000), ""}; });
  auto t0 = SteadyClock::now();
  {
    AdmissionClient c(srv.url(), true, 2);
    for (std::uint64_t t = 0; t < 10; ++t) (void)c.submit(t % 2, t, key_with(1), kSource);
    const auto until = SteadyClock::now() + Ms(3000);
    while (srv.requests().size() < 10 && SteadyClock::now() < until) std::this_thread::sleep_for(Ms(5));
    EXPECT_EQ(srv.requests().size(), 10u);
    t0 = SteadyClock::now();
  }
  EXPECT_LT(SteadyClock::now() - t0, Ms(1000));
}

}  // namespace
}  // namespace derpd::daemon
