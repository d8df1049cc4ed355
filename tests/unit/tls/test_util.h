// Test helpers for relay/tls: certificates made with OpenSSL directly, temporary directories,
// and an in-memory OpenSSL client pumped against a server TlsConnection.
#pragma once

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

#include "relay/base/bytes.h"
#include "relay/tls/detail/openssl.h"
#include "relay/tls/tls_connection.h"
#include "relay/tls/tls_context.h"

namespace derpd::tls::testing {

using detail::EvpPkeyPtr;
using detail::SslCtxPtr;
using detail::SslPtr;
using detail::X509Ptr;

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& text);
std::string read_file(const std::string& path);

// A deterministic fake DERP server public key.
std::array<std::byte, 32> server_key(std::uint8_t seed = 1);
std::string key_hex(const std::array<std::byte, 32>& k);

enum class KeyType { kEcP256, kRsa2048, kEd25519 };

struct CertSpec {
  std::string cn;
  std::vector<std::string> dns;  // subjectAltName dNSName entries
  std::vector<std::string> ips;  // subjectAltName iPAddress entries
  KeyType key = KeyType::kEcP256;
  bool ca = false;
  long serial = 1000;
};

struct Issued {
  X509Ptr cert;
  EvpPkeyPtr key;
  std::string cert_pem;
  std::string key_pem;
};

// Issues a certificate for `spec`, signed by `issuer` (nullptr: self-signed).
Issued issue(const CertSpec& spec, const Issued* issuer = nullptr);

// A CA, an intermediate and a leaf for `hostname`: files are leaf+intermediate, as servers use.
struct TestPki {
  Issued root;
  Issued intermediate;
  Issued leaf;
  std::string chain_pem() const { return leaf.cert_pem + intermediate.cert_pem; }
};
TestPki make_pki(const std::string& hostname, KeyType leaf_key = KeyType::kEcP256);

TlsSettings settings_for(const std::string& hostname);

// The subject CN of a certificate ("" if none).
std::string common_name(X509* cert);
// SHA-256 of the certificate's DER as X509_digest computes it, lowercase hex.
std::string digest_hex(X509* cert);

struct ClientOptions {
  std::string sni;            // "" = send none
  int min_version = 0;        // 0 = OpenSSL default
  int max_version = 0;
  std::string alpn_wire;      // ALPN list in wire format ("\x08http/1.1"), "" = none
  std::string tls12_ciphers;  // "" = default
  std::string tls13_suites;   // TLS 1.3 suites in the client's order, "" = default
  SSL_SESSION* session = nullptr;  // to resume
  int security_level = -1;    // -1 = default
};

// An OpenSSL client over two memory BIOs (no verification; tests inspect the peer chain).
class Client {
 public:
  explicit Client(const ClientOptions& opts = {});
  SSL* ssl() const { return ssl_.get(); }
  // Ciphertext the client wants to send.
  std::string take_output();
  void feed(derpd::Bytes data);
  void feed(const std::string& data) { feed(derpd::as_bytes(data)); }
  // Advances the handshake and reads whatever plaintext arrived (into received).
  void step();
  bool handshake_done() const { return SSL_is_init_finished(ssl_.get()) != 0; }
  // Writes plaintext (whole). Returns false on error.
  bool write(const std::string& data);

  std::string received;  // plaintext from the server
  bool got_close_notify = false;
  bool failed = false;
  std::string failure;   // OpenSSL's reason when failed

 private:
  SslCtxPtr ctx_;
  SslPtr ssl_;
  BIO* rbio_ = nullptr;  // owned by ssl_
  BIO* wbio_ = nullptr;
};

// Moves bytes between a server TlsConnection and a Client until neither makes progress (at
// most `max_rounds` exchanges). `chunk` > 0 feeds the server at most that many bytes at a time.
struct Pump {
  Pump(TlsConnection& s, Client& c) : server(s), client(c) {}
  TlsConnection& server;
  Client& client;
  std::string server_received;
  bool server_peer_closed = false;
  bool server_failed = false;
  // Hand received bytes to the server with read_plaintext(data, out) (read in place) instead of
  // feed_ciphertext(data) then read_plaintext(out).
  bool lend_input = false;

  void run(std::size_t chunk = 0, int max_rounds = 10000);
};

}  // namespace derpd::tls::testing
