// An in-process fake DERP server for the client's unit tests: a loopback listener and one thread
// that accepts one connection and runs a scripted handler on it (plain TCP or TLS, blocking with
// 5 s socket timeouts so nothing hangs). Server-side framing uses relay/protocol.
#pragma once

#include <openssl/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "client/derp/client.h"
#include "relay/base/bytes.h"
#include "relay/protocol/frame.h"
#include "relay/protocol/handshake.h"
#include "relay/protocol/key.h"

namespace derpd::derpclient::testing {

// A certificate and its key (owned).
struct CertKey {
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
  CertKey() = default;
  CertKey(CertKey&&) noexcept;
  CertKey& operator=(CertKey&&) noexcept;
  ~CertKey();
  std::string pem() const;  // the certificate in PEM
};
// Self-signed P-256 server certificate for CN `cn` with the given subjectAltName (OpenSSL conf form).
CertKey make_server_cert(const std::string& cn = "localhost", long not_after_days = 1,
                         const std::string& san = "IP:127.0.0.1,DNS:localhost");
// derper's meta cert: Ed25519, CN "derpkey<hex>", serial = `version`.
CertKey make_meta_cert(const protocol::NodePublic& server_key, long version = 2);
// A certificate with an arbitrary CN and serial, for parse_meta_cert tests.
CertKey make_cert_with(const std::string& cn, long serial);

struct TlsSetup {
  const CertKey* leaf = nullptr;
  const CertKey* meta = nullptr;  // appended to the chain when set
  bool max_tls12 = false;
};

// One accepted connection, server side.
class ServerConn {
 public:
  ServerConn(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}

  // Reads until the request head ends ("\r\n\r\n"); bytes after it stay buffered. Empty on failure.
  std::string read_head();
  // Bytes received but not consumed yet (after read_head: what came with the head).
  std::size_t buffered() const { return buf_.size(); }
  // Reads one frame (with `limits`; by default every type up to 1 MiB), payload copied.
  // std::nullopt on EOF, timeout or bad frame.
  struct OwnedFrame {
    protocol::FrameType type{};
    std::vector<std::byte> payload;
  };
  std::optional<OwnedFrame> read_frame(const protocol::FrameLimits* limits = nullptr);
  bool write(Bytes b);
  bool write(std::string_view s) { return write(as_bytes(s)); }
  // Waits (bounded) until the client closes; true if it did.
  bool wait_closed();

  // Standard DERP server steps.
  bool send_101(const protocol::NodePublic& server_key);
  bool send_server_key(const protocol::NodePublic& server_key);
  std::optional<protocol::ClientHello> read_client_info(const protocol::NodePrivate& server_private);
  bool send_server_info(const protocol::NodePrivate& server_private, const protocol::NodePublic& client);
  // The whole non-fast-start login: read head, 101 + ServerKey, ClientInfo, ServerInfo.
  std::optional<protocol::ClientHello> login(const protocol::NodePrivate& server_private);

  // The server name the client sent (TLS SNI); empty for plaintext or none sent.
  std::string sni() const;

  std::string last_head;  // set by read_head()

 private:
  bool fill();

  int fd_;
  SSL* ssl_;
  std::vector<std::byte> buf_;
  protocol::FrameReader reader_{protocol::server_limits()};
};

class FakeServer {
 public:
  using Handler = std::function<void(ServerConn&)>;
  explicit FakeServer(Handler handler, const TlsSetup* tls = nullptr);
  ~FakeServer();
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  std::uint16_t port() const { return port_; }
  std::string url() const;  // http(s)://127.0.0.1:<port>/derp
  // Waits for the handler to finish (bounded by the socket timeouts).
  void join();

 private:
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  bool tls_ = false;
  SSL_CTX* ctx_ = nullptr;
  std::thread thread_;
};

// A TCP listener on 127.0.0.1 at a port the kernel picks (stored in *port); throws
// std::runtime_error naming `who` when it cannot.
int listen_on_loopback(std::uint16_t* port, const char* who);

// The client's options for a test server at `url`: 3 s to connect and to write.
Options client_options(const std::string& url);

// A fresh server identity.
struct ServerIdentity {
  protocol::NodePrivate priv = protocol::NodePrivate::generate();
  protocol::NodePublic pub = priv.public_key();
};

}  // namespace derpd::derpclient::testing
