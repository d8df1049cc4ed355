// The DERP client over TLS against the fake server: fast start through the meta cert, the regular
// upgrade when there is none (or under TLS 1.2), and every way of checking the certificate.
#include <gtest/gtest.h>

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "client/derp/client.h"
#include "relay/protocol/frame.h"
#include "tests/unit/dclient/fake_server.h"

namespace derpd::derpclient {
namespace {

namespace proto = derpd::protocol;
using namespace std::chrono_literals;
using testing::CertKey;
using testing::client_options;
using testing::FakeServer;
using testing::make_meta_cert;
using testing::make_server_cert;
using testing::ServerConn;
using testing::ServerIdentity;
using testing::TlsSetup;

// What a fast-start login looked like from the server.
struct FastStartSeen {
  std::string head;
  bool client_info_in_first_read = false;
  std::optional<proto::ClientHello> hello;
};

// A fast-start server: no HTTP response at all; ServerKey then ServerInfo.
void fast_start_login(ServerConn& c, const ServerIdentity& s, FastStartSeen& seen) {
  seen.head = c.read_head();
  // One TLS record carries one SSL_write: if the ClientInfo frame came in the same write as the
  // request, its bytes are already here.
  seen.client_info_in_first_read = c.buffered() >= proto::client_info_frame_size(0);
  if (seen.head.find("Derp-Fast-Start: 1") == std::string::npos) {
    // Not fast start: behave like a normal server so the test sees the difference.
    c.send_101(s.pub);
  }
  c.send_server_key(s.pub);
  seen.hello = c.read_client_info(s.priv);
  if (seen.hello) c.send_server_info(s.priv, seen.hello->key);
}

TEST(Tls, FastStartWithTheMetaCert) {
  ServerIdentity server;
  CertKey leaf = make_server_cert();
  CertKey meta = make_meta_cert(server.pub);
  TlsSetup tls{&leaf, &meta};
  FastStartSeen seen;
  const proto::NodePublic peer = proto::NodePrivate::generate().public_key();
  std::vector<std::byte> sent;
  FakeServer fake(
      [&](ServerConn& c) {
        fast_start_login(c, server, seen);
        auto f = c.read_frame();
        if (f && f->type == proto::FrameType::kSendPacket) sent.assign(f->payload.begin() + 32, f->payload.end());
        c.wait_closed();
      },
      &tls);
  Options o = client_options(fake.url());
  o.tls.cert_name = "sha256-raw:" + cert_sha256_hex(leaf.cert);
  auto client = Client::connect(o);
  ASSERT_TRUE(client.ok()) << to_string(client.error());
  EXPECT_TRUE(client->info().fast_start);
  EXPECT_EQ(client->info().meta_cert_version, 2);
  EXPECT_EQ(client->info().tls.version, "TLSv1.3");
  EXPECT_EQ(client->server_key(), server.pub);
  EXPECT_EQ(client->info().tls.leaf_sha256, cert_sha256_hex(leaf.cert));
  ASSERT_TRUE(client->info().server_info.has_value());
  ASSERT_TRUE(client->send(peer, as_bytes(std::string_view("over tls"))).ok());
  client->close();
  fake.join();
  EXPECT_NE(seen.head.find("\r\nDerp-Fast-Start: 1\r\n"), std::string::npos);
  EXPECT_NE(seen.head.find("\r\nUpgrade: DERP\r\n"), std::string::npos);
  EXPECT_TRUE(seen.client_info_in_first_read);
  ASSERT_TRUE(seen.hello.has_value());
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(sent.data()), sent.size()), "over tls");
}

TEST(Tls, NoMetaCertMeansTheRegularUpgrade) {
  ServerIdentity server;
  CertKey leaf = make_server_cert();
  TlsSetup tls{&leaf, nullptr};
  FastStartSeen seen;
  FakeServer fake([&](ServerConn& c) { fast_start_login(c, server, seen); c.wait_closed(); }, &tls);
  Options o = client_options(fake.url());
  o.tls.insecure_skip_verify = true;
  auto client = Client::connect(o);
  ASSERT_TRUE(client.ok()) << to_string(client.error());
  EXPECT_FALSE(client->info().fast_start);
  EXPECT_EQ(client->server_key(), server.pub);
  client->close();
  fake.join();
  EXPECT_EQ(seen.head.find("Derp-Fast-Start"), std::string::npos);
  EXPECT_FALSE(seen.client_info_in_first_read);
}

TEST(Tls, MetaCertIgnoredUnderTls12AndWhenDisabled) {
  for (const bool tls12 : {true, false}) {
    ServerIdentity server;
    CertKey leaf = make_server_cert();
    CertKey meta = make_meta_cert(server.pub);
    TlsSetup tls{&leaf, &meta, tls12};
    FastStartSeen seen;
    FakeServer fake([&](ServerConn& c) { fast_start_login(c, server, seen); c.wait_closed(); }, &tls);
    Options o = client_options(fake.url());
    o.tls.insecure_skip_verify = true;
    o.fast_start = tls12;  // under 1.3, the option alone turns fast start off
    auto client = Client::connect(o);
    ASSERT_TRUE(client.ok()) << to_string(client.error());
    EXPECT_FALSE(client->info().fast_start) << tls12;
    EXPECT_EQ(client->info().tls.version, tls12 ? "TLSv1.2" : "TLSv1.3");
    EXPECT_EQ(client->server_key(), server.pub);
    client->close();
    fake.join();
    EXPECT_EQ(seen.head.find("Derp-Fast-Start"), std::string::npos);
  }
}

TlsOptions topt(std::string cert_name, std::string ca_file = {}, bool insecure = false) {
  TlsOptions t;
  t.cert_name = std::move(cert_name);
  t.ca_file = std::move(ca_file);
  t.insecure_skip_verify = insecure;
  return t;
}

struct TempFile {
  std::string path;
  explicit TempFile(const std::string& content) {
    char tmpl[] = "/tmp/dclient-ca-XXXXXX";
    const int fd = ::mkstemp(tmpl);
    path = tmpl;
    std::ofstream(path) << content;
    ::close(fd);
  }
  ~TempFile() { std::remove(path.c_str()); }
};

// Runs one connect against a TLS fake (with meta cert) using `tls_options`.
Result<Client, Error> connect_tls(const CertKey& leaf, const TlsOptions& tls_options, std::string* why,
                                  const std::string& host = "127.0.0.1") {
  ServerIdentity server;
  CertKey meta = make_meta_cert(server.pub);
  TlsSetup tls{&leaf, &meta};
  FastStartSeen seen;
  FakeServer fake([&](ServerConn& c) { fast_start_login(c, server, seen); c.wait_closed(); }, &tls);
  Options o = client_options("https://" + host + ":" + std::to_string(fake.port()) + "/derp");
  o.tls = tls_options;
  auto r = Client::connect(o, why);
  if (r.ok()) r->close();
  fake.join();
  return r;
}

TEST(Tls, CertificateChecks) {
  CertKey leaf = make_server_cert();
  TempFile ca(leaf.pem());
  std::string why;

  // System roots do not know a self-signed certificate.
  auto sys = connect_tls(leaf, TlsOptions{}, &why);
  ASSERT_FALSE(sys.ok());
  EXPECT_EQ(sys.error(), Error::kCertVerify);
  EXPECT_NE(why.find("certificate verify failed"), std::string::npos) << why;

  // With it as the trust anchor: fine for the IP in its SAN and for "localhost".
  EXPECT_TRUE(connect_tls(leaf, topt("", ca.path), &why).ok()) << why;
  EXPECT_TRUE(connect_tls(leaf, topt("", ca.path), &why, "localhost").ok()) << why;
  // CertName other than the host: the certificate must carry that name.
  auto wrong_name = connect_tls(leaf, topt("derp.example.com", ca.path), &why);
  ASSERT_FALSE(wrong_name.ok());
  EXPECT_EQ(wrong_name.error(), Error::kCertVerify);
  EXPECT_TRUE(connect_tls(leaf, topt("localhost", ca.path), &why).ok()) << why;

  // sha256-raw pins: the right hash (either case), a wrong one, a malformed one.
  std::string upper = cert_sha256_hex(leaf.cert);
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  EXPECT_TRUE(connect_tls(leaf, topt("sha256-raw:" + upper), &why).ok()) << why;
  auto pin_bad = connect_tls(leaf, topt("sha256-raw:" + std::string(64, '0')), &why);
  ASSERT_FALSE(pin_bad.ok());
  EXPECT_EQ(pin_bad.error(), Error::kCertVerify);
  EXPECT_NE(why.find("hash does not match"), std::string::npos) << why;
  // A malformed pin is an option error.
  auto malformed = connect_tls(leaf, topt("sha256-raw:abc"), &why);
  ASSERT_FALSE(malformed.ok());
  EXPECT_EQ(malformed.error(), Error::kBadOptions);
  // Pinned, but dialed by a name the certificate does not carry; by IP there is no name check (Go
  // sends no server name for IP literals either).
  CertKey other = make_server_cert("other.example", 1, "DNS:other.example");
  const std::string other_pin = "sha256-raw:" + cert_sha256_hex(other.cert);
  auto by_name = connect_tls(other, topt(other_pin), &why, "localhost");
  ASSERT_FALSE(by_name.ok());
  EXPECT_EQ(by_name.error(), Error::kCertVerify);
  EXPECT_NE(why.find("does not match server name"), std::string::npos) << why;
  EXPECT_TRUE(connect_tls(other, topt(other_pin), &why).ok()) << why;

  // Insecure accepts anything.
  EXPECT_TRUE(connect_tls(leaf, topt("", "", true), &why).ok()) << why;

  // Expired certificate: rejected by root verification and by the pin check.
  CertKey expired = make_server_cert("localhost", -1);
  TempFile ca_expired(expired.pem());
  auto exp_roots = connect_tls(expired, topt("", ca_expired.path), &why);
  ASSERT_FALSE(exp_roots.ok());
  EXPECT_EQ(exp_roots.error(), Error::kCertVerify);
  auto exp_pin = connect_tls(expired, topt("sha256-raw:" + cert_sha256_hex(expired.cert)), &why);
  ASSERT_FALSE(exp_pin.ok());
  EXPECT_EQ(exp_pin.error(), Error::kCertVerify);
  EXPECT_NE(why.find("expired"), std::string::npos) << why;
}

// derper's host/dialhost: connect to one address, speak TLS and HTTP to a name. The certificate
// carries only the name (not the dialed IP), so only a client that checks it for the name passes;
// the server sees the name as SNI and in the Host header.
TEST(Tls, DialHostKeepsTheUrlHostForSniCertificateAndHostHeader) {
  CertKey leaf = make_server_cert("derp2.mesh.test", 1, "DNS:derp2.mesh.test");
  TempFile ca(leaf.pem());
  TlsSetup tls{&leaf, nullptr};
  ServerIdentity server;
  std::string sni, head;
  FakeServer fake(
      [&](ServerConn& c) {
        sni = c.sni();
        auto hello = c.login(server.priv);
        head = c.last_head;
        c.wait_closed();
      },
      &tls);
  Options o = client_options("https://derp2.mesh.test:" + std::to_string(fake.port()) + "/derp");
  o.dial_host = "127.0.0.1";
  o.tls.ca_file = ca.path;
  std::string why;
  auto c = Client::connect(o, &why);
  ASSERT_TRUE(c.ok()) << why;
  EXPECT_EQ(c->server_key(), server.pub);
  EXPECT_EQ(c->info().remote->to_string(), "127.0.0.1:" + std::to_string(fake.port()));
  c->close();
  fake.join();
  EXPECT_EQ(sni, "derp2.mesh.test");
  EXPECT_NE(head.find("\r\nHost: derp2.mesh.test:" + std::to_string(fake.port()) + "\r\n"), std::string::npos) << head;
}

TEST(Tls, DialHostStillChecksTheCertificateForTheUrlHost) {
  CertKey leaf = make_server_cert("other.mesh.test", 1, "DNS:other.mesh.test,IP:127.0.0.1");
  TempFile ca(leaf.pem());
  TlsSetup tls{&leaf, nullptr};
  FakeServer fake([](ServerConn& c) { c.wait_closed(); }, &tls);
  Options o = client_options("https://derp2.mesh.test:" + std::to_string(fake.port()) + "/derp");
  o.dial_host = "127.0.0.1";  // in the certificate, but not the name asked for
  o.tls.ca_file = ca.path;
  std::string why;
  auto c = Client::connect(o, &why);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error(), Error::kCertVerify) << why;
  fake.join();
}

// After recv() timed out, nothing is left buffered inside the client: several frames in separate
// TLS records arriving together are all returned before the timeout, and from then on the socket's
// readability is the only thing to wait for.
TEST(Tls, AfterARecvTimeoutOnlyTheSocketHasNews) {
  CertKey leaf = make_server_cert();
  TempFile ca(leaf.pem());
  TlsSetup tls{&leaf, nullptr};
  ServerIdentity server;
  std::atomic<bool> go{false};
  FakeServer fake(
      [&](ServerConn& c) {
        auto hello = c.login(server.priv);
        if (!hello) return;
        for (int i = 0; i < 200 && !go.load(); ++i) std::this_thread::sleep_for(10ms);
        for (int i = 0; i < 3; ++i) {  // one SSL_write each: three records
          std::array<std::byte, proto::frame_size(0)> f{};
          const std::size_t n = proto::write_keep_alive(f);
          c.write(Bytes(f.data(), n));
        }
        c.wait_closed();
      },
      &tls);
  Options o = client_options(fake.url());
  o.tls.ca_file = ca.path;
  std::string why;
  auto c = Client::connect(o, &why);
  ASSERT_TRUE(c.ok()) << why;
  ASSERT_GE(c->fd(), 0);
  auto r = c->recv(0ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Error::kTimeout);
  pollfd p{c->fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 50), 0) << "nothing sent yet";
  go = true;
  ASSERT_EQ(::poll(&p, 1, 3000), 1) << "the server's frames make the socket readable";
  std::this_thread::sleep_for(50ms);  // all three records have arrived
  int got = 0;
  for (;;) {
    auto m = c->recv(0ms);
    if (!m.ok()) {
      EXPECT_EQ(m.error(), Error::kTimeout);
      break;
    }
    EXPECT_TRUE(std::holds_alternative<KeepAlive>(*m));
    ++got;
  }
  EXPECT_EQ(got, 3);
  p.revents = 0;
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "kTimeout left nothing unread on the socket";
  c->close();
  EXPECT_EQ(c->fd(), -1);
  fake.join();
}

TEST(Tls, PlaintextServerOnAnHttpsUrl) {
  ServerIdentity server;
  FakeServer fake([&](ServerConn& c) {
    // Whatever the client says, answer in plain HTTP.
    c.write("HTTP/1.1 400 Bad Request\r\n\r\n");
    c.wait_closed();
  });
  Options o = client_options("https://127.0.0.1:" + std::to_string(fake.port()) + "/derp");
  o.tls.insecure_skip_verify = true;
  std::string why;
  auto client = Client::connect(o, &why);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error(), Error::kTls) << why;
  fake.join();
}

TEST(Tls, SilentTlsServerTimesOut) {
  FakeServer fake([&](ServerConn& c) { c.wait_closed(); });
  Options o = client_options("https://127.0.0.1:" + std::to_string(fake.port()) + "/derp");
  o.connect_timeout = 300ms;
  o.tls.insecure_skip_verify = true;
  const auto t0 = Clock::now();
  auto client = Client::connect(o);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error(), Error::kTimeout);
  EXPECT_LT(Clock::now() - t0, 2s);
  fake.join();
}

}  // namespace
}  // namespace derpd::derpclient
