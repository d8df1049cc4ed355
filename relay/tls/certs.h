// Certificates derpd serves, and the DERP map pin that goes with a self-signed one.
//
// The DERP meta cert (derper's initMetacert): a self-signed Ed25519 certificate appended after
// the real chain. Its subject CN is "derpkey" + the server's public key in 64 lowercase hex
// digits and its serial number is the DERP protocol version (2). A Tailscale client on TLS 1.3
// that finds it knows the server key before the DERP handshake and starts with
// `Derp-Fast-Start: 1`. Nothing verifies it; clients only read CN and serial. Like derper: v3,
// issuer = subject = that CN (PrintableString), valid from now - 30 days to now + 30 days, one
// extension (basicConstraints, critical, CA:FALSE; macOS wants it on self-signed certificates).
//
// Self-signed certificates (certmode dev, and derper's certmode manual when -hostname is an IP
// address and the files are missing), built like derper's createSelfSignedIPCert: ECDSA P-256,
// random 128-bit serial, CN = hostname, valid from now for one year (longer is refused by
// macOS), keyUsage digitalSignature + keyEncipherment (critical), extKeyUsage serverAuth,
// basicConstraints CA:FALSE (critical), and the hostname as subjectAltName (an iPAddress entry
// for an IP literal, a dNSName otherwise; Go checks SANs only, never the CN). The key is written
// as a SEC1 "EC PRIVATE KEY" PEM, as derper writes it.
//
// CertName pin: a DERP map node with CertName "sha256-raw:<hex>" makes a Tailscale client accept
// exactly one certificate besides the meta cert, whose raw DER hashes (SHA-256, lowercase hex)
// to <hex> and which is valid for the dialled HostName (net/tlsdial SetConfigExpectedCertHash).
// So a pinned server must present a single leaf (no intermediates) plus the meta cert.
//
// All of this runs at start-up or on reload; errors are messages for the operator.
#pragma once

#include <cstddef>
#include <ctime>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "relay/base/bytes.h"
#include "relay/base/result.h"

namespace derpd::tls {

inline constexpr std::size_t kServerKeyLen = 32;
// The DERP server's Curve25519 public key, raw (protocol::NodePublic::bytes() fits).
using ServerPublicKey = std::span<const std::byte, kServerKeyLen>;

inline constexpr long kMetaCertSerial = 2;  // DERP protocol version
inline constexpr std::string_view kMetaCertCommonNamePrefix = "derpkey";
inline constexpr std::string_view kCertNamePrefix = "sha256-raw:";
// PEM files larger than this are refused before parsing.
inline constexpr std::size_t kMaxPemFileBytes = 1 << 20;

// Whether derper would treat `hostname` as an IP address (Go's net.ParseIP accepts it):
// dotted-quad IPv4 or IPv6 text, without brackets or a zone.
bool is_ip_literal(std::string_view hostname);

// The meta cert for `server_key`, DER-encoded, dated around `now`. A fresh Ed25519 key signs it.
Result<std::vector<std::byte>, std::string> make_meta_cert(ServerPublicKey server_key, std::time_t now);

// "sha256-raw:<64 lowercase hex>" for a certificate's DER bytes.
std::string cert_name_for_der(Bytes der);
// The same for the first certificate of a PEM text.
Result<std::string, std::string> cert_name_for_pem(std::string_view cert_pem);

struct SelfSignedCert {
  std::string cert_pem;   // one CERTIFICATE block
  std::string key_pem;    // one EC PRIVATE KEY block
  std::string cert_name;  // "sha256-raw:<hex>" for the DERP map
  std::time_t not_after = 0;
  bool created = false;   // load_or_create_self_signed(): generated (and written) just now
};

// A new self-signed certificate for `hostname` (IP literal or DNS name), valid from `now`.
Result<SelfSignedCert, std::string> generate_self_signed(std::string_view hostname, std::time_t now);

// Keeps a self-signed certificate stable across restarts: when both files exist they are loaded
// and checked (parsable, key matches, valid for `hostname`; an expired certificate is returned
// as is, see not_after); when neither exists a new one is generated and written (the directory
// is created 0700, the key 0600, the certificate 0644, each through a temporary file and a
// rename). When only one of the two exists nothing is written and an error names the missing one.
// Paths as derper's certmode manual names them (config::manual_cert_paths).
Result<SelfSignedCert, std::string> load_or_create_self_signed(const std::string& cert_path,
                                                               const std::string& key_path,
                                                               std::string_view hostname);

// Reads a whole PEM file (regular file, at most kMaxPemFileBytes). `what` names it in errors:
// "certificate file /etc/derpd/x.crt: No such file or directory".
Result<std::string, std::string> read_pem_file(const std::string& path, std::string_view what);

}  // namespace derpd::tls
