// TlsContext: loading, the served chain with the meta cert, SNI and ALPN rules, versions and
// ciphers, hot reload.
#include "relay/tls/tls_context.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "relay/tls/detail/x509.h"
#include "relay/tls/tls_connection.h"
#include "tests/unit/tls/test_util.h"

namespace derpd::tls {
namespace {

using testing::Client;
using testing::ClientOptions;
using testing::Pump;
using testing::TempDir;

constexpr const char* kHost = "derp.example.com";

struct Files {
  TempDir dir;
  std::string crt = dir.file("derp.example.com.crt");
  std::string key = dir.file("derp.example.com.key");
};

std::unique_ptr<TlsContext> context_from(const Files& f, const std::string& chain_pem, const std::string& key_pem,
                                         const std::string& hostname = kHost) {
  testing::write_file(f.crt, chain_pem);
  testing::write_file(f.key, key_pem);
  auto ctx = TlsContext::from_files(testing::settings_for(hostname), f.crt, f.key);
  EXPECT_TRUE(ctx.ok()) << ctx.error();
  return ctx ? std::move(*ctx) : nullptr;
}

// Handshakes a fresh connection with an in-memory client; returns the connection.
std::unique_ptr<TlsConnection> connect(const TlsContext& ctx, Client& client) {
  auto conn = TlsConnection::accept(ctx);
  EXPECT_TRUE(conn.ok());
  Pump pump{**conn, client};
  pump.run();
  return std::move(*conn);
}

// The chain as the client received it, as subject CNs.
std::vector<std::string> peer_chain_cns(SSL* ssl) {
  std::vector<std::string> out;
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
  for (int i = 0; chain != nullptr && i < sk_X509_num(chain); ++i)
    out.push_back(testing::common_name(sk_X509_value(chain, i)));
  return out;
}

X509* peer_cert(SSL* ssl, int i) {
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
  return chain != nullptr && i < sk_X509_num(chain) ? sk_X509_value(chain, i) : nullptr;
}

// --- loading ----------------------------------------------------------------------------------

TEST(TlsContextLoad, ServesFileChainThenMetaCert) {
  Files f;
  auto pki = testing::make_pki(kHost);
  auto ctx = context_from(f, pki.chain_pem(), pki.leaf.key_pem);
  ASSERT_NE(ctx, nullptr);
  auto sc = ctx->current();
  EXPECT_EQ(sc->generation(), 1u);
  EXPECT_EQ(sc->chain_length(), 2u);
  EXPECT_FALSE(sc->hostname_is_ip());
  EXPECT_EQ(sc->cert_name(), "sha256-raw:" + testing::digest_hex(pki.leaf.cert.get()));

  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    ClientOptions o;
    o.sni = kHost;
    o.max_version = version;
    Client client(o);
    auto conn = connect(*ctx, client);
    ASSERT_TRUE(conn->handshake_done()) << conn->error_reason();
    ASSERT_TRUE(client.handshake_done()) << client.failure;
    EXPECT_EQ(SSL_version(client.ssl()), version);
    EXPECT_EQ(peer_chain_cns(client.ssl()), (std::vector<std::string>{kHost, "derpd test intermediate",
                                                                      "derpkey" + testing::key_hex(testing::server_key())}));
    X509* meta = peer_cert(client.ssl(), 2);
    ASSERT_NE(meta, nullptr);
    EXPECT_EQ(ASN1_INTEGER_get(X509_get0_serialNumber(meta)), 2);
    EXPECT_EQ(EVP_PKEY_get_id(X509_get0_pubkey(meta)), EVP_PKEY_ED25519);
    EXPECT_EQ(X509_cmp(peer_cert(client.ssl(), 0), pki.leaf.cert.get()), 0);
    EXPECT_EQ(X509_cmp(peer_cert(client.ssl(), 1), pki.intermediate.cert.get()), 0);
  }
}

TEST(TlsContextLoad, MetaCertCanBeLeftOut) {
  Files f;
  auto pki = testing::make_pki(kHost);
  testing::write_file(f.crt, pki.chain_pem());
  testing::write_file(f.key, pki.leaf.key_pem);
  auto settings = testing::settings_for(kHost);
  settings.meta_cert = false;
  auto ctx = TlsContext::from_files(settings, f.crt, f.key);
  ASSERT_TRUE(ctx.ok()) << ctx.error();
  ClientOptions o;
  o.sni = kHost;
  Client client(o);
  auto conn = connect(**ctx, client);
  EXPECT_EQ(peer_chain_cns(client.ssl()), (std::vector<std::string>{kHost, "derpd test intermediate"}));
}

TEST(TlsContextLoad, RsaAndEd25519LeavesWork) {
  for (auto kt : {testing::KeyType::kRsa2048, testing::KeyType::kEd25519}) {
    Files f;
    auto pki = testing::make_pki(kHost, kt);
    auto ctx = context_from(f, pki.chain_pem(), pki.leaf.key_pem);
    ASSERT_NE(ctx, nullptr);
    ClientOptions o;
    o.sni = kHost;
    Client client(o);
    auto conn = connect(*ctx, client);
    EXPECT_TRUE(conn->handshake_done()) << conn->error_reason();
  }
}

struct LoadErrorCase {
  const char* name;
  std::string cert;  // "" = do not create the file
  std::string key;
  std::vector<std::string> expect;  // substrings of the error; "$CRT"/"$KEY" = the path
};

TEST(TlsContextLoadErrors, NameTheFileAndTheReason) {
  auto pki = testing::make_pki(kHost);
  auto other = testing::make_pki(kHost);
  auto wrong_host = testing::make_pki("other.example.com");
  std::string encrypted;
  {
    detail::BioPtr b(BIO_new(BIO_s_mem()));
    ASSERT_EQ(PEM_write_bio_PKCS8PrivateKey(b.get(), pki.leaf.key.get(), EVP_aes_128_cbc(), nullptr, 0, nullptr,
                                            const_cast<char*>("secret")),
              1);
    BUF_MEM* m = nullptr;
    BIO_get_mem_ptr(b.get(), &m);
    encrypted.assign(m->data, m->length);
  }
  std::string truncated = pki.leaf.cert_pem.substr(0, pki.leaf.cert_pem.size() / 2);
  const std::vector<LoadErrorCase> cases = {
      {"missing cert", "", pki.leaf.key_pem, {"certificate file $CRT", "No such file or directory"}},
      {"missing key", pki.chain_pem(), "", {"key file $KEY", "No such file or directory"}},
      {"garbage cert", "hello\n", pki.leaf.key_pem, {"certificate file $CRT", "no certificate found"}},
      {"truncated cert", truncated, pki.leaf.key_pem, {"certificate file $CRT"}},
      {"garbage key", pki.chain_pem(), "hello\n", {"key file $KEY", "no private key found"}},
      {"mismatch", pki.chain_pem(), other.leaf.key_pem, {"key file $KEY does not match certificate file $CRT"}},
      {"wrong host", wrong_host.chain_pem(), wrong_host.leaf.key_pem,
       {"certificate file $CRT is not valid for hostname \"derp.example.com\""}},
      {"encrypted key", pki.chain_pem(), encrypted, {"key file $KEY", "encrypted"}},
  };
  for (const auto& c : cases) {
    Files f;
    if (!c.cert.empty()) testing::write_file(f.crt, c.cert);
    if (!c.key.empty()) testing::write_file(f.key, c.key);
    auto ctx = TlsContext::from_files(testing::settings_for(kHost), f.crt, f.key);
    ASSERT_FALSE(ctx.ok()) << c.name;
    for (std::string want : c.expect) {
      for (auto [tok, val] : {std::pair<std::string, std::string>{"$CRT", f.crt}, {"$KEY", f.key}}) {
        if (auto p = want.find(tok); p != std::string::npos) want.replace(p, tok.size(), val);
      }
      EXPECT_NE(ctx.error().find(want), std::string::npos) << c.name << ": " << ctx.error();
    }
  }
}

TEST(TlsContextLoad, FromPemWithADevCertificate) {
  auto dev = generate_self_signed("127.0.0.1", std::time(nullptr));
  ASSERT_TRUE(dev.ok());
  auto ctx = TlsContext::from_pem(testing::settings_for("127.0.0.1"), dev->cert_pem, dev->key_pem);
  ASSERT_TRUE(ctx.ok()) << ctx.error();
  EXPECT_EQ((*ctx)->current()->cert_name(), dev->cert_name);
  EXPECT_EQ((*ctx)->current()->chain_length(), 1u);
  Client client;
  auto conn = connect(**ctx, client);
  ASSERT_TRUE(conn->handshake_done());
  // What a pinned Go client checks: one certificate besides the meta cert, hashing to the pin.
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(client.ssl());
  ASSERT_EQ(sk_X509_num(chain), 2);
  EXPECT_EQ("sha256-raw:" + testing::digest_hex(sk_X509_value(chain, 0)), dev->cert_name);
  EXPECT_EQ(testing::common_name(sk_X509_value(chain, 1)).rfind("derpkey", 0), 0u);
  EXPECT_TRUE(detail::cert_matches_host(sk_X509_value(chain, 0), "127.0.0.1"));
}

// --- SNI ----------------------------------------------------------------------------------------

struct SniCase {
  const char* hostname;  // the server's -hostname
  const char* sni;       // "" = none sent
  bool accepted;
};

class Sni : public ::testing::TestWithParam<SniCase> {};

TEST_P(Sni, AsDerperManualMode) {
  const SniCase& c = GetParam();
  auto dev = generate_self_signed(c.hostname, std::time(nullptr));
  ASSERT_TRUE(dev.ok()) << dev.error();
  auto ctx = TlsContext::from_pem(testing::settings_for(c.hostname), dev->cert_pem, dev->key_pem);
  ASSERT_TRUE(ctx.ok()) << ctx.error();
  EXPECT_EQ((*ctx)->current()->accepts_server_name(*c.sni ? c.sni : nullptr), c.accepted);
  ClientOptions o;
  o.sni = c.sni;
  Client client(o);
  auto conn = connect(**ctx, client);
  if (c.accepted) {
    EXPECT_TRUE(conn->handshake_done()) << conn->error_reason();
    EXPECT_TRUE(client.handshake_done());
    EXPECT_EQ(conn->server_name(), c.sni);
  } else {
    EXPECT_EQ(conn->state(), TlsState::kFailed);
    EXPECT_EQ(conn->error(), TlsError::kSniRejected);
    EXPECT_NE(conn->error_reason().find(*c.sni ? "asked for server name" : "no server name"), std::string::npos)
        << conn->error_reason();
    EXPECT_TRUE(client.failed);
    EXPECT_NE(client.failure.find("unrecognized name"), std::string::npos) << client.failure;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Rules, Sni,
    ::testing::Values(SniCase{"derp.example.com", "derp.example.com", true},
                      SniCase{"derp.example.com", "", false},  // no SNI with a DNS hostname
                      SniCase{"derp.example.com", "other.example.com", false},
                      SniCase{"derp.example.com", "DERP.example.com", false},  // byte for byte, as Go compares
                      SniCase{"derp.example.com", "derp.example.com.", false}, // Go refuses a trailing dot
                      SniCase{"derp.example.com", "example.com", false},
                      SniCase{"127.0.0.1", "", true},                          // IP hostname: anything goes
                      SniCase{"127.0.0.1", "anything.example.org", true},
                      SniCase{"127.0.0.1", "anything.example.org.", false},
                      SniCase{"::1", "", true}));

// --- ALPN, versions, ciphers ------------------------------------------------------------------

TEST(TlsContextPolicy, AlpnPicksHttp11OrNothing) {
  auto dev = generate_self_signed("127.0.0.1", std::time(nullptr));
  ASSERT_TRUE(dev.ok());
  auto ctx = TlsContext::from_pem(testing::settings_for("127.0.0.1"), dev->cert_pem, dev->key_pem);
  ASSERT_TRUE(ctx.ok());
  struct Case {
    std::string offer;
    const char* selected;
  };
  for (const Case& c : {Case{std::string("\x02h2\x08http/1.1", 12), "http/1.1"},
                        Case{std::string("\x08http/1.1"), "http/1.1"}, Case{std::string("\x02h2"), ""},
                        Case{std::string(), ""}}) {
    ClientOptions o;
    o.alpn_wire = c.offer;
    Client client(o);
    auto conn = connect(**ctx, client);
    ASSERT_TRUE(conn->handshake_done()) << conn->error_reason();
    EXPECT_EQ(conn->alpn(), c.selected);
    const unsigned char* p = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(client.ssl(), &p, &len);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(p), len), c.selected);
  }
}

TEST(TlsContextPolicy, VersionsAndCiphers) {
  auto dev = generate_self_signed("127.0.0.1", std::time(nullptr));
  ASSERT_TRUE(dev.ok());
  auto ctx = TlsContext::from_pem(testing::settings_for("127.0.0.1"), dev->cert_pem, dev->key_pem);
  ASSERT_TRUE(ctx.ok());
  struct Case {
    const char* name;
    int min, max;
    const char* ciphers;
    bool ok;
    const char* version;
  };
  const Case cases[] = {
      {"default", 0, 0, "", true, "TLSv1.3"},
      {"tls1.2", 0, TLS1_2_VERSION, "", true, "TLSv1.2"},
      {"tls1.2 chacha", 0, TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305", true, "TLSv1.2"},
      {"tls1.1", TLS1_VERSION, TLS1_1_VERSION, "ALL:@SECLEVEL=0", false, ""},
      {"tls1.0", TLS1_VERSION, TLS1_VERSION, "ALL:@SECLEVEL=0", false, ""},
      {"tls1.2 cbc only", 0, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384", false, ""},
  };
  for (const Case& c : cases) {
    ClientOptions o;
    o.min_version = c.min;
    o.max_version = c.max;
    o.tls12_ciphers = c.ciphers;
    o.security_level = 0;
    Client client(o);
    auto conn = connect(**ctx, client);
    EXPECT_EQ(conn->handshake_done(), c.ok) << c.name << ": " << conn->error_reason();
    if (c.ok) {
      EXPECT_EQ(conn->protocol_version(), c.version) << c.name;
    } else {
      EXPECT_EQ(conn->error(), TlsError::kHandshake) << c.name;
      EXPECT_FALSE(conn->error_reason().empty());
    }
  }
}

TEST(TlsContextPolicy, ServerCipherOrderWithChaChaForClientsThatPreferIt) {
  // As Go's server: AES-128-GCM over AES-256-GCM whatever the client's order, unless the client
  // lists ChaCha20-Poly1305 first (it has no AES hardware); then ChaCha20-Poly1305.
  auto dev = generate_self_signed("127.0.0.1", std::time(nullptr));
  ASSERT_TRUE(dev.ok());
  auto ctx = TlsContext::from_pem(testing::settings_for("127.0.0.1"), dev->cert_pem, dev->key_pem);
  ASSERT_TRUE(ctx.ok());
  struct Case {
    int max;
    const char* tls13;
    const char* tls12;
    const char* chosen;
  };
  const Case cases[] = {
      {0, "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256", "", "TLS_AES_128_GCM_SHA256"},
      {0, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256", "", "TLS_AES_128_GCM_SHA256"},
      {0, "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", "",
       "TLS_CHACHA20_POLY1305_SHA256"},
      {0, "TLS_AES_256_GCM_SHA384", "", "TLS_AES_256_GCM_SHA384"},
      {TLS1_2_VERSION, "", "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305",
       "ECDHE-ECDSA-AES128-GCM-SHA256"},
      {TLS1_2_VERSION, "", "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256",
       "ECDHE-ECDSA-CHACHA20-POLY1305"},
  };
  for (const Case& c : cases) {
    ClientOptions o;
    o.max_version = c.max;
    o.tls13_suites = c.tls13;
    o.tls12_ciphers = c.tls12;
    Client client(o);
    auto conn = connect(**ctx, client);
    ASSERT_TRUE(conn->handshake_done()) << c.tls13 << c.tls12 << ": " << conn->error_reason();
    EXPECT_EQ(conn->cipher(), c.chosen) << c.tls13 << c.tls12;
    EXPECT_EQ(std::string_view(SSL_get_cipher_name(client.ssl())), c.chosen);
  }
}

// --- reload -------------------------------------------------------------------------------------

TEST(TlsContextReload, NewConnectionsOnlyAndSurvivesABrokenReload) {
  Files f;
  auto a = testing::make_pki(kHost);
  auto b = testing::make_pki(kHost);
  auto ctx = context_from(f, a.chain_pem(), a.leaf.key_pem);
  ASSERT_NE(ctx, nullptr);
  ClientOptions o;
  o.sni = kHost;

  Client c1(o);
  auto conn1 = connect(*ctx, c1);  // established on A
  ASSERT_TRUE(conn1->handshake_done());
  auto conn_pending = TlsConnection::accept(*ctx);  // accepted on A, handshake after the reload
  ASSERT_TRUE(conn_pending.ok());

  testing::write_file(f.crt, b.chain_pem());
  testing::write_file(f.key, b.leaf.key_pem);
  auto st = ctx->reload();
  ASSERT_TRUE(st.ok()) << st.error();
  EXPECT_EQ(ctx->current()->generation(), 2u);
  EXPECT_EQ(ctx->current()->cert_name(), "sha256-raw:" + testing::digest_hex(b.leaf.cert.get()));

  Client c2(o);
  auto conn2 = connect(*ctx, c2);
  ASSERT_TRUE(conn2->handshake_done());
  EXPECT_EQ(X509_cmp(peer_cert(c2.ssl(), 0), b.leaf.cert.get()), 0);

  Client c3(o);
  Pump p3{**conn_pending, c3};
  p3.run();
  ASSERT_TRUE((*conn_pending)->handshake_done());
  EXPECT_EQ(X509_cmp(peer_cert(c3.ssl(), 0), a.leaf.cert.get()), 0);
  EXPECT_EQ((*conn_pending)->context().generation(), 1u);

  // A broken reload keeps B for new connections and reports why.
  testing::write_file(f.crt, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
  auto broken = ctx->reload();
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.error().find(f.crt), std::string::npos) << broken.error();
  EXPECT_EQ(ctx->current()->generation(), 2u);
  testing::write_file(f.crt, a.chain_pem());  // A's cert with B's key: mismatch
  auto mismatch = ctx->reload();
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.error().find("does not match"), std::string::npos) << mismatch.error();
  EXPECT_EQ(ctx->current()->generation(), 2u);

  Client c4(o);
  auto conn4 = connect(*ctx, c4);
  ASSERT_TRUE(conn4->handshake_done());
  EXPECT_EQ(X509_cmp(peer_cert(c4.ssl(), 0), b.leaf.cert.get()), 0);

  // The connection made before every reload still carries data both ways.
  Pump p1{*conn1, c1};
  ASSERT_TRUE(c1.write("ping"));
  p1.run();
  EXPECT_EQ(p1.server_received, "ping");
  auto w = conn1->write_plaintext(derpd::as_bytes("pong"));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, 4u);
  p1.run();
  EXPECT_EQ(c1.received, "pong");
}

TEST(TlsContextReload, SessionTicketsSurviveAReload) {
  Files f;
  auto a = testing::make_pki(kHost);
  auto ctx = context_from(f, a.chain_pem(), a.leaf.key_pem);
  ASSERT_NE(ctx, nullptr);
  ClientOptions o;
  o.sni = kHost;
  Client c1(o);
  auto conn1 = connect(*ctx, c1);
  ASSERT_TRUE(conn1->handshake_done());
  SSL_SESSION* session = SSL_get1_session(c1.ssl());  // TLS 1.3: from the server's ticket
  ASSERT_NE(session, nullptr);
  ASSERT_EQ(SSL_SESSION_is_resumable(session), 1);

  ASSERT_TRUE(ctx->reload().ok());
  o.session = session;
  Client c2(o);
  auto conn2 = connect(*ctx, c2);
  ASSERT_TRUE(conn2->handshake_done());
  EXPECT_EQ(SSL_session_reused(c2.ssl()), 1);
  SSL_SESSION_free(session);
}

}  // namespace
}  // namespace derpd::tls

namespace derpd::tls {
namespace {

TEST(TlsContextReload, ConcurrentWithHandshakesOnOtherThreads) {
  Files f;
  auto a = testing::make_pki(kHost);
  auto b = testing::make_pki(kHost);
  auto ctx = context_from(f, a.chain_pem(), a.leaf.key_pem);
  ASSERT_NE(ctx, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<int> handshakes{0};
  std::atomic<int> failures{0};
  auto worker = [&] {
    ClientOptions o;
    o.sni = kHost;
    for (int i = 0; i < 2000 && !stop.load(); ++i) {
      Client client(o);
      auto conn = connect(*ctx, client);
      if (conn->handshake_done() && client.handshake_done()) {
        handshakes.fetch_add(1);
      } else {
        failures.fetch_add(1);
      }
    }
  };
  std::thread t1(worker);
  std::thread t2(worker);
  int reloads = 0;
  for (int i = 0; i < 40; ++i) {
    const auto& pki = i % 2 == 0 ? b : a;
    testing::write_file(f.crt + ".new", pki.chain_pem());
    testing::write_file(f.key + ".new", pki.leaf.key_pem);
    std::rename((f.key + ".new").c_str(), f.key.c_str());
    std::rename((f.crt + ".new").c_str(), f.crt.c_str());
    auto st = ctx->reload();
    EXPECT_TRUE(st.ok()) << st.error();
    if (st.ok()) ++reloads;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  stop.store(true);
  t1.join();
  t2.join();
  EXPECT_EQ(reloads, 40);
  EXPECT_EQ(ctx->current()->generation(), static_cast<std::uint64_t>(reloads) + 1);
  EXPECT_GT(handshakes.load(), 0);
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace derpd::tls
