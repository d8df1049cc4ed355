// Private to relay/tls: PEM parsing into OpenSSL objects, hostname checks, the meta cert.
#pragma once

#include <ctime>
#include <string>
#include <string_view>

#include "relay/base/result.h"
#include "relay/tls/certs.h"
#include "relay/tls/detail/openssl.h"

namespace derpd::tls::detail {

struct CertChain {
  X509Ptr leaf;
  X509StackPtr chain;  // the certificates after the leaf, in file order (never null)
};

// Every CERTIFICATE block of `pem`, in order (other PEM blocks are skipped, as Go's
// tls.X509KeyPair does). Errors: no certificate, or a malformed block.
Result<CertChain, std::string> parse_cert_chain(std::string_view pem);

// The first private key of `pem` (PKCS#8, SEC1 EC or PKCS#1 RSA). An encrypted key is refused
// without prompting for a passphrase.
Result<EvpPkeyPtr, std::string> parse_private_key(std::string_view pem);

// Go's x509.Certificate.VerifyHostname as derper uses it: an IP literal must be an iPAddress
// SAN; a DNS name must match a dNSName SAN (case-insensitive, whole-label wildcards only). The
// subject CN is never consulted.
bool cert_matches_host(X509* cert, std::string_view hostname);

// Whether `key` is the private key of `cert`.
bool key_matches_cert(X509* cert, EVP_PKEY* key);

X509Ptr make_meta_cert_x509(ServerPublicKey server_key, std::time_t now, std::string& error);

// DER encoding of `cert`; empty on failure.
std::vector<std::byte> der_of(X509* cert);

// notAfter as time_t (0 if unreadable).
std::time_t not_after_of(X509* cert);

}  // namespace derpd::tls::detail
