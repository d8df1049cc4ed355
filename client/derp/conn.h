// A client byte stream to a DERP server: TCP, optionally TLS (OpenSSL over memory BIOs, so every
// socket call is ours: non-blocking, bounded by a deadline, never SIGPIPE). Blocking API with
// deadlines: this is client-side code for tools and tests, not the relay's data path.
//
// Not thread-safe: one thread owns a Conn.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <openssl/types.h>

#include "client/derp/error.h"
#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"
#include "relay/base/result.h"
#include "relay/protocol/key.h"

namespace derpd::derpclient {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// How the server certificate is checked (the TLS part of Tailscale's DERPNode).
struct TlsOptions {
  // Accept any certificate (tests against self-signed servers only).
  bool insecure_skip_verify = false;
  // DERPNode.CertName: "sha256-raw:<64 hex>" pins the server certificate (exactly one besides the
  // DERP meta cert, hashed over its DER; host name and validity still checked); any other
  // non-empty value is the name the certificate must carry instead of the URL host.
  std::string cert_name;
  // PEM trust anchors instead of the system roots.
  std::string ca_file;
};

// The DERP meta certificate derper appends to its chain: CN "derpkey<64 hex server key>", serial
// number = the server's DERP protocol version (1..255).
struct MetaCert {
  protocol::NodePublic server_key;
  int protocol_version = 0;
};
// The meta-cert reading of one certificate, if it is one (Go: derphttp parseMetaCert).
std::optional<MetaCert> parse_meta_cert(X509* cert);
// Lowercase hex SHA-256 of the certificate's DER encoding (the "sha256-raw:" pin form).
std::string cert_sha256_hex(X509* cert);

struct TlsInfo {
  std::string version;             // "TLSv1.3"
  std::string cipher;              // "TLS_AES_128_GCM_SHA256"
  std::optional<MetaCert> meta;    // found in the chain (looked for only under TLS 1.3, as Go does)
  std::string leaf_sha256;         // "sha256-raw" hash of the server's certificate
};

class Conn {
 public:
  Conn();
  ~Conn();
  Conn(Conn&&) noexcept;
  Conn& operator=(Conn&&) noexcept;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Resolves `host` and connects to the first address that accepts, all before `deadline`.
  // `why` (optional) receives a human-readable reason on error.
  static Result<Conn, Error> dial(std::string_view host, std::uint16_t port, Deadline deadline,
                                  std::string* why);

  // TLS client handshake over the connected socket; SNI = `host` unless it is an IP literal.
  Status<Error> start_tls(const TlsOptions& options, std::string_view host, Deadline deadline,
                          std::string* why);

  // Reads at least one byte (kClosed at end of stream, kTimeout at the deadline: no state is lost,
  // the call may be repeated).
  Result<std::size_t, Error> read_some(MutBytes out, Deadline deadline, std::string* why);
  // Writes everything (kTimeout leaves the stream in an unknown state: close it).
  Status<Error> write_all(Bytes data, Deadline deadline, std::string* why);

  bool is_open() const { return fd_ >= 0; }
  // The socket (non-blocking, owned), for waiting on it with poll alongside other descriptors;
  // -1 once closed. Read and write only through this class.
  int fd() const { return fd_; }
  bool is_tls() const;
  const TlsInfo& tls_info() const { return tls_info_; }
  std::optional<Endpoint> local_endpoint() const;
  std::optional<Endpoint> remote_endpoint() const;
  void close();

 private:
  struct Tls;

  Status<Error> wait(short events, Deadline deadline, std::string* why);
  Result<std::size_t, Error> raw_read(MutBytes out, Deadline deadline, std::string* why);
  Status<Error> raw_write_all(Bytes data, Deadline deadline, std::string* why);
  Status<Error> flush_tls(Deadline deadline, std::string* why);
  Status<Error> fill_tls(Deadline deadline, std::string* why);
  template <typename Op>
  Result<int, Error> drive_tls(Op&& op, Deadline deadline, std::string* why);

  int fd_ = -1;               // owned; non-blocking
  bool eof_ = false;          // the peer finished sending
  std::unique_ptr<Tls> tls_;  // null for plaintext
  TlsInfo tls_info_;
};

}  // namespace derpd::derpclient
