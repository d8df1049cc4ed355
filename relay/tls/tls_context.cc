#include "relay/tls/tls_context.h"

#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstring>

#include <fmt/format.h>

#include "relay/tls/detail/openssl.h"
#include "relay/tls/detail/x509.h"

namespace derpd::tls {

namespace {

// TLS 1.2: forward secrecy and AEAD only (Mozilla "intermediate"). TLS 1.3 keeps OpenSSL's suites.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
// TLS 1.3: AES-128-GCM first (cheapest per byte with AES-NI), as Go's server orders them.
constexpr const char* kTls13Suites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kGroups = "X25519:P-256:P-384";
constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr std::size_t kTicketKeysLen = 80;  // name(16) + HMAC key(32) + AES key(32)

int select_alpn(SSL* /*ssl*/, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void* /*arg*/) {
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kAlpnHttp11, sizeof kAlpnHttp11, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;  // no ALPN in the answer: HTTP/1.1 implied
}

int check_server_name(SSL* ssl, int* alert, void* arg) {
  const auto* sc = static_cast<const ServerContext*>(arg);
  if (sc->accepts_server_name(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name))) return SSL_TLSEXT_ERR_OK;
  SSL_set_ex_data(ssl, detail::sni_rejected_index(), ssl);  // any non-null marker
  *alert = SSL_AD_UNRECOGNIZED_NAME;
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

}  // namespace

int detail::sni_rejected_index() {
  static const int index = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

ServerContext::~ServerContext() { SSL_CTX_free(ctx_); }

bool ServerContext::accepts_server_name(const char* server_name) const {
  if (server_name == nullptr) return hostname_is_ip_;
  std::size_t len = std::strlen(server_name);
  if (len == 0 || server_name[len - 1] == '.') return false;  // Go refuses a trailing dot
  if (hostname_is_ip_) return true;
  return std::string_view(server_name, len) == hostname_;
}

TlsContext::TlsContext(TlsSettings settings, std::string cert_path, std::string key_path, std::string cert_pem,
                       std::string key_pem)
    : settings_(std::move(settings)),
      cert_path_(std::move(cert_path)),
      key_path_(std::move(key_path)),
      cert_pem_(std::move(cert_pem)),
      key_pem_(std::move(key_pem)),
      from_files_(cert_pem_.empty()) {}

TlsContext::~TlsContext() = default;

Result<std::unique_ptr<TlsContext>, std::string> TlsContext::from_files(TlsSettings settings, std::string cert_path,
                                                                        std::string key_path) {
  std::unique_ptr<TlsContext> c(new TlsContext(std::move(settings), std::move(cert_path), std::move(key_path), {}, {}));
  auto built = c->build(nullptr);
  if (!built) return Err(built.error());
  c->current_.store(std::move(*built), std::memory_order_release);
  return c;
}

Result<std::unique_ptr<TlsContext>, std::string> TlsContext::from_pem(TlsSettings settings, std::string cert_pem,
                                                                      std::string key_pem) {
  if (cert_pem.empty()) return Err(std::string("in-memory certificate: empty"));
  std::unique_ptr<TlsContext> c(
      new TlsContext(std::move(settings), "(in memory)", "(in memory)", std::move(cert_pem), std::move(key_pem)));
  auto built = c->build(nullptr);
  if (!built) return Err(built.error());
  c->current_.store(std::move(*built), std::memory_order_release);
  return c;
}

Status<std::string> TlsContext::reload() {
  std::lock_guard<std::mutex> lock(reload_mu_);
  std::shared_ptr<const ServerContext> previous = current();
  auto built = build(previous.get());
  if (!built) return Err(built.error());
  current_.store(std::move(*built), std::memory_order_release);
  return {};
}

Result<std::shared_ptr<const ServerContext>, std::string> TlsContext::build(const ServerContext* previous) const {
  using namespace detail;
  std::string cert_text;
  std::string key_text;
  if (from_files_) {
    auto c = read_pem_file(cert_path_, "certificate file");
    if (!c) return Err(c.error());
    auto k = read_pem_file(key_path_, "key file");
    if (!k) return Err(k.error());
    cert_text = std::move(*c);
    key_text = std::move(*k);
  } else {
    cert_text = cert_pem_;
    key_text = key_pem_;
  }
  auto chain = parse_cert_chain(cert_text);
  if (!chain) return Err(fmt::format("certificate file {}: {}", cert_path_, chain.error()));
  auto key = parse_private_key(key_text);
  OPENSSL_cleanse(key_text.data(), key_text.size());
  if (!key) return Err(fmt::format("key file {}: {}", key_path_, key.error()));
  if (!key_matches_cert(chain->leaf.get(), key->get()))
    return Err(fmt::format("key file {} does not match certificate file {} (key values mismatch)", key_path_,
                           cert_path_));
  if (!cert_matches_host(chain->leaf.get(), settings_.hostname))
    return Err(fmt::format("certificate file {} is not valid for hostname \"{}\" (no matching subjectAltName)",
                           cert_path_, settings_.hostname));

  std::unique_ptr<ServerContext> sc(new ServerContext());
  sc->hostname_ = settings_.hostname;
  sc->hostname_is_ip_ = is_ip_literal(settings_.hostname);
  sc->cert_name_ = cert_name_for_der(der_of(chain->leaf.get()));
  sc->chain_length_ = 1 + static_cast<std::size_t>(sk_X509_num(chain->chain.get()));
  sc->leaf_not_after_ = not_after_of(chain->leaf.get());
  sc->generation_ = previous != nullptr ? previous->generation() + 1 : 1;

  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return Err(fmt::format("cannot create the TLS context: {}", take_error()));
  sc->ctx_ = ctx;  // owned by sc from here on
  bool ok = SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
            SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) == 1 && SSL_CTX_set_ciphersuites(ctx, kTls13Suites) == 1 &&
            SSL_CTX_set1_groups_list(ctx, kGroups) == 1;
  if (!ok) return Err(fmt::format("cannot configure the TLS context: {}", take_error()));
  // Our cipher order, except that a client listing ChaCha20 first (no AES hardware) gets it.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_PRIORITIZE_CHACHA);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Read whatever was fed in one go and decrypt records from OpenSSL's buffer, instead of two
  // reads (header, body) per record.
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_alpn_select_cb(ctx, select_alpn, nullptr);
  SSL_CTX_set_tlsext_servername_callback(ctx, check_server_name);
  SSL_CTX_set_tlsext_servername_arg(ctx, sc.get());

  if (previous != nullptr) {
    unsigned char keys[kTicketKeysLen];
    if (SSL_CTX_get_tlsext_ticket_keys(previous->native(), keys, sizeof keys) == 1)
      SSL_CTX_set_tlsext_ticket_keys(ctx, keys, sizeof keys);
    OPENSSL_cleanse(keys, sizeof keys);
    ERR_clear_error();
  }

  X509StackPtr served(sk_X509_dup(chain->chain.get()));  // borrows the chain's certificates
  if (!served) return Err(fmt::format("cannot build the certificate chain: {}", take_error()));
  X509Ptr meta;
  if (settings_.meta_cert) {
    std::string error;
    meta = make_meta_cert_x509(settings_.server_public_key, std::time(nullptr), error);
    if (!meta) return Err(std::move(error));
    if (sk_X509_push(served.get(), meta.get()) <= 0)
      return Err(fmt::format("cannot build the certificate chain: {}", take_error()));
  }
  // Takes its own references to the leaf, the key and every chain certificate.
  int used = SSL_CTX_use_cert_and_key(ctx, chain->leaf.get(), key->get(), served.get(), 1);
  // `served` only borrowed its certificates: release the stack without freeing them.
  sk_X509_free(served.release());
  if (used != 1) return Err(fmt::format("certificate file {}: {}", cert_path_, take_error()));
  if (SSL_CTX_check_private_key(ctx) != 1)
    return Err(fmt::format("key file {}: {}", key_path_, take_error()));
  ERR_clear_error();
  return std::shared_ptr<const ServerContext>(std::move(sc));
}

}  // namespace derpd::tls
