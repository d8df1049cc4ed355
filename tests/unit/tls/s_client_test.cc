// A real `openssl s_client` against TlsConnection behind a loopback TCP server run here (plain
// blocking sockets and a thread). Skipped when the openssl binary is missing.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "relay/tls/tls_connection.h"
#include "tests/unit/tls/test_util.h"

namespace derpd::tls {
namespace {

constexpr const char* kHost = "derp.example.com";
constexpr const char* kGreeting = "hello from derpd";

std::string find_openssl() {
  for (const char* p : {"/usr/bin/openssl", "/usr/local/bin/openssl", "/bin/openssl"})
    if (::access(p, X_OK) == 0) return p;
  return {};
}

// Listens on 127.0.0.1:0 and serves one TLS connection: after the handshake it sends the
// greeting and close_notify, then closes. Bounded in time (poll/recv timeouts) and rounds.
class OneShotServer {
 public:
  explicit OneShotServer(const TlsContext& ctx) : ctx_(ctx) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 4) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      return;
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~OneShotServer() {
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }
  OneShotServer(const OneShotServer&) = delete;
  OneShotServer& operator=(const OneShotServer&) = delete;

  std::uint16_t port() const { return port_; }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

  // Filled by the server thread; read after join().
  bool handshake_done = false;
  std::string version;
  std::string failure;

 private:
  static bool send_all(int fd, TlsConnection& c) {
    while (c.pending_ciphertext_bytes() > 0) {
      Bytes out = c.pending_ciphertext();
      ssize_t n = ::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      c.consume_ciphertext(static_cast<std::size_t>(n));
    }
    return true;
  }

  void serve() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 20000) != 1) {
      failure = "no connection within 20 s";
      return;
    }
    int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      failure = "accept failed";
      return;
    }
    timeval tv{10, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto conn = TlsConnection::accept(ctx_).value();
    std::vector<std::byte> buf(16384);
    for (int round = 0; round < 1000; ++round) {
      ssize_t n = ::recv(c, buf.data(), buf.size(), 0);
      if (n <= 0) break;
      conn->feed_ciphertext(std::span(buf).first(static_cast<std::size_t>(n)));
      auto r = conn->read_plaintext(buf);
      bool ended = !r.ok();
      if (!r.ok() && r.error() != TlsError::kPeerClosed) failure = conn->error_reason();
      if (conn->handshake_done() && !handshake_done) {
        handshake_done = true;
        version = conn->protocol_version();
        (void)conn->write_plaintext(derpd::as_bytes(std::string(kGreeting) + "\n"));
        (void)conn->shutdown();
        ended = true;
      }
      if (!send_all(c, *conn) || ended) break;
    }
    ::close(c);
  }

  const TlsContext& ctx_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

std::string run(const std::string& cmd) {
  std::string out;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  ::pclose(f);
  return out;
}

TEST(SClient, NegotiatesAndSeesTheMetaCert) {
  std::string openssl = find_openssl();
  if (openssl.empty()) GTEST_SKIP() << "the openssl binary is not installed (apt install openssl)";
  std::string timeout = ::access("/usr/bin/timeout", X_OK) == 0 ? "/usr/bin/timeout 30 " : "";

  testing::TempDir dir;
  auto pki = testing::make_pki(kHost);
  testing::write_file(dir.file("derp.example.com.crt"), pki.chain_pem());
  testing::write_file(dir.file("derp.example.com.key"), pki.leaf.key_pem);
  testing::write_file(dir.file("ca.pem"), pki.root.cert_pem);
  auto ctx = TlsContext::from_files(testing::settings_for(kHost), dir.file("derp.example.com.crt"),
                                    dir.file("derp.example.com.key"));
  ASSERT_TRUE(ctx.ok()) << ctx.error();
  const std::string meta_cn = "derpkey" + testing::key_hex(testing::server_key());

  for (const char* version : {"-tls1_3", "-tls1_2"}) {
    OneShotServer server(**ctx);
    ASSERT_NE(server.port(), 0);
    std::string out = run(fmt::format(
        "{}{} s_client -connect 127.0.0.1:{} -servername {} {} -showcerts -CAfile {} -verify_hostname {} "
        "-verify_return_error -ign_eof </dev/null 2>&1",
        timeout, openssl, server.port(), kHost, version, dir.file("ca.pem"), kHost));
    server.join();
    SCOPED_TRACE(out);
    EXPECT_TRUE(server.handshake_done) << server.failure;
    const std::string want = version == std::string("-tls1_3") ? "TLSv1.3" : "TLSv1.2";
    EXPECT_EQ(server.version, want);
    EXPECT_NE(out.find("Protocol  : " + want), std::string::npos);
    // The chain: leaf, intermediate, then the meta cert; standard verification still succeeds.
    EXPECT_NE(out.find(" 0 s:CN = derp.example.com"), std::string::npos);
    EXPECT_NE(out.find(" 1 s:CN = derpd test intermediate"), std::string::npos);
    EXPECT_NE(out.find(" 2 s:CN = " + meta_cn), std::string::npos);
    EXPECT_NE(out.find("Verify return code: 0 (ok)"), std::string::npos);
    EXPECT_NE(out.find(kGreeting), std::string::npos);
  }
}

TEST(SClient, WrongServerNameIsRefused) {
  std::string openssl = find_openssl();
  if (openssl.empty()) GTEST_SKIP() << "the openssl binary is not installed (apt install openssl)";
  std::string timeout = ::access("/usr/bin/timeout", X_OK) == 0 ? "/usr/bin/timeout 30 " : "";
  auto dev = generate_self_signed(kHost, std::time(nullptr));
  ASSERT_TRUE(dev.ok());
  auto ctx = TlsContext::from_pem(testing::settings_for(kHost), dev->cert_pem, dev->key_pem);
  ASSERT_TRUE(ctx.ok());
  OneShotServer server(**ctx);
  ASSERT_NE(server.port(), 0);
  std::string out = run(fmt::format("{}{} s_client -connect 127.0.0.1:{} -servername other.example.com -ign_eof "
                                    "</dev/null 2>&1",
                                    timeout, openssl, server.port()));
  server.join();
  EXPECT_FALSE(server.handshake_done);
  EXPECT_NE(server.failure.find("other.example.com"), std::string::npos) << server.failure;
  EXPECT_NE(out.find("unrecognized name"), std::string::npos) << out;
}

}  // namespace
}  // namespace derpd::tls
