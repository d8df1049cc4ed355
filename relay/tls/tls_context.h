// TlsContext: the server's TLS configuration (an OpenSSL SSL_CTX with the certificate chain, the
// DERP meta cert and the SNI rule) and its hot reload.
//
// Settings, after Tailscale's derper:
//   - TLS 1.2 and 1.3 only (derper sets MinVersion TLS 1.2). TLS 1.2 only ECDHE with AES-GCM
//     or ChaCha20-Poly1305. Groups X25519, P-256, P-384.
//   - The server's cipher order decides, AES-128-GCM first (cheapest per byte with AES-NI), then
//     AES-256-GCM, then ChaCha20-Poly1305; a client that lists ChaCha20-Poly1305 first (one
//     without AES hardware) gets it. That is Go's server rule, so clients get what derper gives.
//   - ALPN: derper's Go server offers "http/1.1" then "h2"; derpd speaks HTTP/1.1 only, so it
//     selects "http/1.1" when the client offers it and otherwise answers without ALPN (HTTP/1.1
//     is then implied). Tailscale's DERP client sends no ALPN at all.
//   - Session tickets on (stateless; the server keeps no session cache), ticket keys kept across
//     reloads so clients can still resume. No renegotiation (Go has none either).
//   - SSL_MODE_RELEASE_BUFFERS: an idle connection holds no record buffers. Read-ahead: OpenSSL
//     takes what was received in one read and decrypts records from its own buffer.
//   - The chain served is the certificate file's chain in file order followed by the DERP meta
//     cert (see certs.h), as derper's ModifyTLSConfigToAddMetaCert does.
//   - SNI, as derper's manual certificate manager: when -hostname is a DNS name the ClientHello
//     must name exactly that host (byte for byte, as Go compares it); a missing or different SNI
//     fails the handshake. When -hostname is an IP address any SNI, or none, is accepted.
//     Go rejects an SNI with a trailing dot while parsing; derpd rejects it too. derpd answers a
//     rejected name with the unrecognized_name alert (RFC 6066) where Go sends internal_error.
//   - At load, like derper, the key must match the certificate and the certificate must be valid
//     for the hostname (a SAN; the CN is not consulted).
//
// Hot reload (RCU style): each load builds an immutable ServerContext; TlsContext publishes the
// current one through an atomic shared_ptr. New connections take the current ServerContext and
// keep it for their lifetime, so reload() changes what NEW connections get and never disturbs a
// live one. A failed reload leaves the current ServerContext in place and returns the reason.
//
// Threads: current() and reload() may be called from any thread (reloads are serialised).
// ServerContext is immutable after construction and shared by every worker.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "relay/base/result.h"
#include "relay/tls/certs.h"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace derpd::tls {

struct TlsSettings {
  // derper -hostname: a DNS name or an IP literal. Decides the SNI rule and is checked against
  // the certificate at load.
  std::string hostname;
  // The DERP server's public key, for the meta cert's CN.
  std::array<std::byte, kServerKeyLen> server_public_key{};
  // Append the DERP meta cert to the chain (derper always does).
  bool meta_cert = true;
};

// One built configuration. Immutable after construction; shared by the connections made from it.
class ServerContext {
 public:
  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // The OpenSSL context (for TlsConnection, tests and optional offloads). Owned by this object.
  ssl_ctx_st* native() const { return ctx_; }
  const std::string& hostname() const { return hostname_; }
  bool hostname_is_ip() const { return hostname_is_ip_; }
  // "sha256-raw:<hex>" of the leaf certificate: the DERP map's CertName when the leaf is a
  // self-signed certificate pinned by hash (meaningful only when the chain is that one leaf).
  const std::string& cert_name() const { return cert_name_; }
  // Certificates served before the meta cert (the leaf and its chain from the file).
  std::size_t chain_length() const { return chain_length_; }
  std::time_t leaf_not_after() const { return leaf_not_after_; }
  // 1 for the first load, +1 per successful reload.
  std::uint64_t generation() const { return generation_; }

  // Whether the SNI `server_name` (nullptr: none sent) may be served, by the rule above.
  bool accepts_server_name(const char* server_name) const;

 private:
  friend class TlsContext;
  ServerContext() = default;

  ssl_ctx_st* ctx_ = nullptr;
  std::string hostname_;
  bool hostname_is_ip_ = false;
  std::string cert_name_;
  std::size_t chain_length_ = 0;
  std::time_t leaf_not_after_ = 0;
  std::uint64_t generation_ = 0;
};

class TlsContext {
 public:
  // certmode manual: the certificate chain and key from PEM files (paths as
  // config::manual_cert_paths). Errors name the file and give OpenSSL's reason.
  static Result<std::unique_ptr<TlsContext>, std::string> from_files(TlsSettings settings, std::string cert_path,
                                                                     std::string key_path);
  // An in-memory certificate chain and key (certmode dev: generate_self_signed()).
  static Result<std::unique_ptr<TlsContext>, std::string> from_pem(TlsSettings settings, std::string cert_pem,
                                                                   std::string key_pem);

  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  ~TlsContext();

  // The configuration for a new connection.
  std::shared_ptr<const ServerContext> current() const { return current_.load(std::memory_order_acquire); }

  // Builds a new configuration from the same source (re-reading the files) and publishes it for
  // new connections. On failure the current one stays and the error says why.
  Status<std::string> reload();

  const TlsSettings& settings() const { return settings_; }
  // Where the certificate comes from, for logs: "/etc/derpd/x.crt" or "(in memory)".
  const std::string& source() const { return cert_path_; }

 private:
  TlsContext(TlsSettings settings, std::string cert_path, std::string key_path, std::string cert_pem,
             std::string key_pem);
  Result<std::shared_ptr<const ServerContext>, std::string> build(const ServerContext* previous) const;

  const TlsSettings settings_;   // immutable after construction
  const std::string cert_path_;  // "(in memory)" for from_pem
  const std::string key_path_;
  const std::string cert_pem_;  // from_pem only
  const std::string key_pem_;
  const bool from_files_;

  std::mutex reload_mu_;  // serialises reload()
  std::atomic<std::shared_ptr<const ServerContext>> current_;
};

}  // namespace derpd::tls
