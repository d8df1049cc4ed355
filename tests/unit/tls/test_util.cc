#include "tests/unit/tls/test_util.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

#include "relay/base/endpoint.h"

namespace derpd::tls::testing {

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
    throw std::runtime_error(fmt::format("test setup: {} failed: {}", what, buf));
  }
}

EvpPkeyPtr make_key(KeyType t) {
  switch (t) {
    case KeyType::kEcP256:
      return EvpPkeyPtr(EVP_EC_gen("P-256"));
    case KeyType::kRsa2048:
      return EvpPkeyPtr(EVP_RSA_gen(2048));
    case KeyType::kEd25519:
      return EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  }
  return nullptr;
}

void add_ext(X509* x, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
  detail::X509ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  check(ext != nullptr, "X509V3_EXT_conf_nid");
  check(X509_add_ext(x, ext.get(), -1) == 1, "X509_add_ext");
}

}  // namespace

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "derpd-tls-test-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::array<std::byte, 32> server_key(std::uint8_t seed) {
  std::array<std::byte, 32> k{};
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::byte>(seed * 31 + i * 7 + 1);
  return k;
}

std::string key_hex(const std::array<std::byte, 32>& k) {
  std::string out;
  for (std::byte b : k) out += fmt::format("{:02x}", std::to_integer<unsigned>(b));
  return out;
}

Issued issue(const CertSpec& spec, const Issued* issuer) {
  Issued out;
  out.key = make_key(spec.key);
  check(out.key != nullptr, "key generation");
  out.cert.reset(X509_new());
  X509* x = out.cert.get();
  check(X509_set_version(x, X509_VERSION_3) == 1, "X509_set_version");
  check(ASN1_INTEGER_set(X509_get_serialNumber(x), spec.serial) == 1, "serial");
  X509_NAME* name = X509_get_subject_name(x);
  check(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(spec.cn.c_str()),
                                   -1, -1, 0) == 1,
        "CN");
  X509* signer_cert = issuer != nullptr ? issuer->cert.get() : x;
  EVP_PKEY* signer_key = issuer != nullptr ? issuer->key.get() : out.key.get();
  check(X509_set_issuer_name(x, X509_get_subject_name(signer_cert)) == 1, "issuer");
  check(X509_gmtime_adj(X509_getm_notBefore(x), -3600) != nullptr, "notBefore");
  check(X509_gmtime_adj(X509_getm_notAfter(x), 30L * 24 * 3600) != nullptr, "notAfter");
  check(X509_set_pubkey(x, out.key.get()) == 1, "pubkey");
  if (spec.ca) {
    add_ext(x, signer_cert, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, signer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
    add_ext(x, signer_cert, NID_subject_key_identifier, "hash");
  } else {
    add_ext(x, signer_cert, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(x, signer_cert, NID_ext_key_usage, "serverAuth");
  }
  std::string san;
  for (const auto& d : spec.dns) san += (san.empty() ? "" : ",") + std::string("DNS:") + d;
  for (const auto& i : spec.ips) san += (san.empty() ? "" : ",") + std::string("IP:") + i;
  if (!san.empty()) add_ext(x, signer_cert, NID_subject_alt_name, san);
  const EVP_MD* md = EVP_PKEY_get_id(signer_key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  check(X509_sign(x, signer_key, md) > 0, "X509_sign");

  detail::BioPtr cb(BIO_new(BIO_s_mem()));
  check(PEM_write_bio_X509(cb.get(), x) == 1, "PEM cert");
  BUF_MEM* m = nullptr;
  BIO_get_mem_ptr(cb.get(), &m);
  out.cert_pem.assign(m->data, m->length);
  detail::BioPtr kb(BIO_new(BIO_s_mem()));
  check(PEM_write_bio_PrivateKey(kb.get(), out.key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1, "PEM key");
  BIO_get_mem_ptr(kb.get(), &m);
  out.key_pem.assign(m->data, m->length);
  return out;
}

TestPki make_pki(const std::string& hostname, KeyType leaf_key) {
  TestPki p;
  CertSpec root;
  root.cn = "derpd test root";
  root.ca = true;
  root.serial = 1;
  p.root = issue(root);
  CertSpec mid;
  mid.cn = "derpd test intermediate";
  mid.ca = true;
  mid.serial = 2;
  p.intermediate = issue(mid, &p.root);
  CertSpec leaf;
  leaf.cn = hostname;
  leaf.key = leaf_key;
  leaf.serial = 3;
  if (is_ip_literal(hostname)) {
    leaf.ips = {hostname};
  } else {
    leaf.dns = {hostname};
  }
  p.leaf = issue(leaf, &p.intermediate);
  return p;
}

TlsSettings settings_for(const std::string& hostname) {
  TlsSettings s;
  s.hostname = hostname;
  s.server_public_key = server_key();
  return s;
}

std::string common_name(X509* cert) {
  char buf[512] = {};
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

std::string digest_hex(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  check(X509_digest(cert, EVP_sha256(), md, &len) == 1, "X509_digest");
  std::string out;
  for (unsigned int i = 0; i < len; ++i) out += fmt::format("{:02x}", md[i]);
  return out;
}

Client::Client(const ClientOptions& opts) {
  ctx_.reset(SSL_CTX_new(TLS_client_method()));
  check(ctx_ != nullptr, "SSL_CTX_new(client)");
  if (opts.security_level >= 0) SSL_CTX_set_security_level(ctx_.get(), opts.security_level);
  if (opts.min_version != 0) check(SSL_CTX_set_min_proto_version(ctx_.get(), opts.min_version) == 1, "min version");
  if (opts.max_version != 0) check(SSL_CTX_set_max_proto_version(ctx_.get(), opts.max_version) == 1, "max version");
  if (!opts.tls12_ciphers.empty())
    check(SSL_CTX_set_cipher_list(ctx_.get(), opts.tls12_ciphers.c_str()) == 1, "cipher list");
  if (!opts.tls13_suites.empty())
    check(SSL_CTX_set_ciphersuites(ctx_.get(), opts.tls13_suites.c_str()) == 1, "TLS 1.3 suites");
  SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_NONE, nullptr);
  ssl_.reset(SSL_new(ctx_.get()));
  check(ssl_ != nullptr, "SSL_new(client)");
  if (!opts.sni.empty()) check(SSL_set_tlsext_host_name(ssl_.get(), opts.sni.c_str()) == 1, "SNI");
  if (!opts.alpn_wire.empty())
    check(SSL_set_alpn_protos(ssl_.get(), reinterpret_cast<const unsigned char*>(opts.alpn_wire.data()),
                              static_cast<unsigned>(opts.alpn_wire.size())) == 0,
          "ALPN");
  if (opts.session != nullptr) check(SSL_set_session(ssl_.get(), opts.session) == 1, "session");
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  check(rbio_ != nullptr && wbio_ != nullptr, "BIO_new");
  BIO_set_mem_eof_return(rbio_, -1);  // empty = retry, not EOF
  SSL_set_bio(ssl_.get(), rbio_, wbio_);
  SSL_set_connect_state(ssl_.get());
}

std::string Client::take_output() {
  std::string out;
  char buf[16384];
  for (;;) {
    int n = BIO_read(wbio_, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

void Client::feed(derpd::Bytes data) {
  if (!data.empty()) BIO_write(rbio_, data.data(), static_cast<int>(data.size()));
}

void Client::step() {
  if (failed) return;
  ERR_clear_error();
  if (!handshake_done()) {
    int rc = SSL_do_handshake(ssl_.get());
    if (rc != 1) {
      int e = SSL_get_error(ssl_.get(), rc);
      if (e != SSL_ERROR_WANT_READ) {
        failed = true;
        char buf[256];
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        failure = buf;
      }
      return;
    }
  }
  char buf[16384];
  for (;;) {
    std::size_t n = 0;
    int rc = SSL_read_ex(ssl_.get(), buf, sizeof buf, &n);
    if (rc == 1) {
      received.append(buf, n);
      continue;
    }
    int e = SSL_get_error(ssl_.get(), rc);
    if (e == SSL_ERROR_ZERO_RETURN) {
      got_close_notify = true;
    } else if (e != SSL_ERROR_WANT_READ) {
      failed = true;
      char ebuf[256];
      ERR_error_string_n(ERR_get_error(), ebuf, sizeof ebuf);
      failure = ebuf;
    }
    break;
  }
}

bool Client::write(const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    std::size_t n = 0;
    if (SSL_write_ex(ssl_.get(), data.data() + off, data.size() - off, &n) != 1) return false;
    off += n;
  }
  return true;
}

void Pump::run(std::size_t chunk, int max_rounds) {
  std::string to_server;
  std::vector<std::byte> buf(64 * 1024);
  for (int round = 0; round < max_rounds; ++round) {
    bool progress = false;
    client.step();
    to_server += client.take_output();
    std::string lent;  // what read_plaintext(data, out) gets this round
    if (!to_server.empty()) {
      std::size_t n = chunk == 0 ? to_server.size() : std::min(chunk, to_server.size());
      if (lend_input) {
        lent = to_server.substr(0, n);
      } else {
        server.feed_ciphertext(derpd::as_bytes(std::string_view(to_server).substr(0, n)));
      }
      to_server.erase(0, n);
      progress = true;
    }
    if (!server_failed && !server_peer_closed) {
      for (;;) {
        auto r = lent.empty() ? server.read_plaintext(buf) : server.read_plaintext(derpd::as_bytes(lent), buf);
        if (!lent.empty()) lent.assign(lent.size(), '\xee');  // nothing may read the lent bytes later
        lent.clear();
        if (!r) {
          if (r.error() == TlsError::kPeerClosed) {
            server_peer_closed = true;
          } else {
            server_failed = true;
          }
          break;
        }
        if (*r == 0) break;
        server_received.append(reinterpret_cast<const char*>(buf.data()), *r);
        progress = true;
      }
    }
    if (server.pending_ciphertext_bytes() > 0) {
      client.feed(server.pending_ciphertext());
      server.consume_ciphertext(server.pending_ciphertext_bytes());
      progress = true;
    }
    if (!progress && to_server.empty()) break;
  }
}

}  // namespace derpd::tls::testing
