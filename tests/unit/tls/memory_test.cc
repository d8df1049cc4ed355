// Memory held by idle TLS connections, measured over 1000 handshaken connections.
//
// Each connection completes a TLS handshake with an in-memory OpenSSL client, carries one small
// request and reply, and is then left idle; the client is freed, so only the server side stays.
// Reported: whole-heap growth per connection (glibc mallinfo2, so allocator overhead included),
// the part OpenSSL allocated (counted through CRYPTO_set_mem_functions) and its block count.
// For comparison, the same server SSL on OpenSSL's own BIO_s_mem and on a BIO pair. Printed, and
// asserted only against generous bounds (the numbers depend on the OpenSSL build).
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "relay/tls/tls_connection.h"
#include "tests/unit/tls/openssl_alloc_counter.h"
#include "tests/unit/tls/test_util.h"

namespace derpd::tls {
namespace {

using testing::Client;
using testing::ClientOptions;
using testing::Pump;

constexpr int kConnections = 1000;
constexpr const char* kRequest = "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\n\r\n";
constexpr const char* kReply = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n\r\n";

struct Measurement {
  double heap_per_conn = 0;
  double openssl_per_conn = 0;
  double openssl_blocks_per_conn = 0;
};

// Runs `make` kConnections times (each returns an opaque idle connection kept alive), measuring
// the heap before and after.
Measurement measure(const std::function<std::shared_ptr<void>()>& make) {
  for (int i = 0; i < 3; ++i) make();  // warm-up: lazily built OpenSSL tables, method stores
  std::vector<std::shared_ptr<void>> keep;
  keep.reserve(kConnections);
  std::int64_t heap0 = testing::heap_in_use();
  auto ossl0 = testing::openssl_heap();
  for (int i = 0; i < kConnections; ++i) keep.push_back(make());
  std::int64_t heap1 = testing::heap_in_use();
  auto ossl1 = testing::openssl_heap();
  Measurement m;
  m.heap_per_conn = static_cast<double>(heap1 - heap0) / kConnections;
  m.openssl_per_conn = static_cast<double>(ossl1.live_bytes - ossl0.live_bytes) / kConnections;
  m.openssl_blocks_per_conn = static_cast<double>(ossl1.live_blocks - ossl0.live_blocks) / kConnections;
  return m;
}

std::unique_ptr<TlsContext> dev_context() {
  auto dev = generate_self_signed("127.0.0.1", std::time(nullptr));
  EXPECT_TRUE(dev.ok());
  auto ctx = TlsContext::from_pem(testing::settings_for("127.0.0.1"), dev->cert_pem, dev->key_pem);
  EXPECT_TRUE(ctx.ok());
  return ctx ? std::move(*ctx) : nullptr;
}

// A server SSL on OpenSSL's own BIOs, for comparison with TlsConnection's.
class RawServer {
 public:
  enum class Kind { kMemBio, kBioPair4k };
  RawServer(SSL_CTX* ctx, Kind kind) : ssl_(SSL_new(ctx)) {
    if (kind == Kind::kMemBio) {
      rbio_ = BIO_new(BIO_s_mem());
      wbio_ = BIO_new(BIO_s_mem());
      BIO_set_mem_eof_return(rbio_, -1);
      SSL_set_bio(ssl_.get(), rbio_, wbio_);
    } else {
      BIO* inner = nullptr;
      BIO_new_bio_pair(&inner, 4096, &net_, 4096);
      SSL_set_bio(ssl_.get(), inner, inner);
      rbio_ = wbio_ = net_;
    }
    SSL_set_accept_state(ssl_.get());
  }
  ~RawServer() {
    ssl_.reset();
    if (net_ != nullptr) BIO_free(net_);
  }
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;

  // Feeds what fits; erases it from `data`.
  void feed(std::string& data) {
    if (data.empty()) return;
    std::size_t room = net_ != nullptr ? BIO_ctrl_get_write_guarantee(net_) : data.size();
    int n = BIO_write(rbio_, data.data(), static_cast<int>(std::min(room, data.size())));
    if (n > 0) data.erase(0, static_cast<std::size_t>(n));
  }
  std::string take() {
    std::string out;
    char buf[4096];
    int n;
    while ((n = BIO_read(wbio_, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    return out;
  }
  void step() {
    char buf[4096];
    std::size_t n = 0;
    while (SSL_read_ex(ssl_.get(), buf, sizeof buf, &n) == 1) received.append(buf, n);
  }
  bool write(const std::string& s) {
    std::size_t n = 0;
    return SSL_write_ex(ssl_.get(), s.data(), s.size(), &n) == 1 && n == s.size();
  }
  bool done() const { return SSL_is_init_finished(ssl_.get()) != 0; }

  std::string received;

 private:
  testing::SslPtr ssl_;
  BIO* rbio_ = nullptr;
  BIO* wbio_ = nullptr;
  BIO* net_ = nullptr;  // the pair's network end, owned here
};

void pump_raw(RawServer& server, Client& client) {
  std::string to_server;
  for (int round = 0; round < 1000; ++round) {
    client.step();
    to_server += client.take_output();
    std::size_t before = to_server.size();
    server.feed(to_server);
    server.step();
    std::string out = server.take();
    client.feed(out);
    if (out.empty() && before == to_server.size() && to_server.empty()) {
      client.step();
      if (client.take_output().empty()) break;
    }
  }
}

void print(const char* what, const Measurement& m) {
  std::printf("[ memory   ] %-44s %7.0f heap bytes/conn, OpenSSL %7.0f bytes in %4.1f blocks/conn\n", what,
              m.heap_per_conn, m.openssl_per_conn, m.openssl_blocks_per_conn);
}

TEST(TlsMemory, IdleConnectionsAfterTheHandshake) {
  auto heap = testing::openssl_heap();
  if (!heap.installed) std::printf("[ memory   ] OpenSSL allocation hook not installed; heap totals only\n");
  auto ctx = dev_context();
  ASSERT_NE(ctx, nullptr);
  std::printf("[ memory   ] sizeof(TlsConnection) = %zu\n", sizeof(TlsConnection));

  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    bool all_idle = true;
    bool all_ok = true;
    auto m = measure([&]() -> std::shared_ptr<void> {
      auto conn = TlsConnection::accept(*ctx).value();
      {
        ClientOptions o;
        o.max_version = version;
        Client client(o);
        Pump pump(*conn, client);
        pump.run();
        all_ok = all_ok && client.write(kRequest);
        pump.run();
        all_ok = all_ok && conn->write_plaintext(derpd::as_bytes(kReply)).ok();
        pump.run();
        all_ok = all_ok && conn->handshake_done() && pump.server_received == kRequest && client.received == kReply;
      }  // the client is freed: only the server side remains
      all_idle = all_idle && conn->buffer_bytes() == 0 && conn->pending_ciphertext_bytes() == 0;
      return std::shared_ptr<TlsConnection>(std::move(conn));
    });
    EXPECT_TRUE(all_ok);
    EXPECT_TRUE(all_idle);  // both byte queues freed on every idle connection
    print(version == TLS1_3_VERSION ? "TlsConnection, TLS 1.3 (custom BIO)" : "TlsConnection, TLS 1.2 (custom BIO)", m);
    // Generous: OpenSSL 3.0 needs several KiB of connection, session and cipher state; 32 KiB
    // or more would mean record buffers (2 x 16 KiB+) are being held by idle connections.
    // mallinfo2 sees nothing under a sanitizer's allocator; the OpenSSL count still works.
    const bool heap_visible = m.heap_per_conn > 0;
    if (!heap_visible) std::printf("[ memory   ] heap totals unavailable (another allocator is in use)\n");
    if (heap_visible) {
      EXPECT_GT(m.heap_per_conn, 1000);
      EXPECT_LT(m.heap_per_conn, 32 * 1024);
    }
    if (heap.installed) {
      EXPECT_GT(m.openssl_per_conn, 1000);
      EXPECT_LT(m.openssl_per_conn, 32 * 1024);
      if (heap_visible) {
        EXPECT_LT(m.openssl_per_conn, m.heap_per_conn);
      }
    }
  }

  for (auto kind : {RawServer::Kind::kMemBio, RawServer::Kind::kBioPair4k}) {
    bool all_ok = true;
    auto m = measure([&]() -> std::shared_ptr<void> {
      auto server = std::make_shared<RawServer>(ctx->current()->native(), kind);
      Client client;
      pump_raw(*server, client);
      all_ok = all_ok && client.write(kRequest);
      pump_raw(*server, client);
      all_ok = all_ok && server->write(kReply);
      pump_raw(*server, client);
      all_ok = all_ok && server->done() && server->received == kRequest && client.received == kReply;
      return server;
    });
    EXPECT_TRUE(all_ok);
    print(kind == RawServer::Kind::kMemBio ? "SSL + 2 x BIO_s_mem, TLS 1.3 (comparison)"
                                           : "SSL + BIO pair 2 x 4 KiB, TLS 1.3 (comparison)",
          m);
  }
}

}  // namespace
}  // namespace derpd::tls
