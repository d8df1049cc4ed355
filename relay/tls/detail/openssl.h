// Private to relay/tls: owning pointers for OpenSSL objects and the error-queue helpers.
#pragma once

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <string_view>

namespace derpd::tls::detail {

template <auto Fn>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    Fn(p);
  }
};

using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using EvpPkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, Deleter<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, Deleter<SSL_free>>;
using X509ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, Deleter<BN_free>>;

struct X509StackDeleter {
  void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};
using X509StackPtr = std::unique_ptr<STACK_OF(X509), X509StackDeleter>;

// Text for one packed OpenSSL error code: "reason (library)", e.g. "no start line (PEM routines)".
std::string describe_error(unsigned long code);

// Drains this thread's OpenSSL error queue and describes its first (root) error; `fallback`
// when the queue is empty.
std::string take_error(std::string_view fallback = "unknown OpenSSL error");

// Lowercase hex of `len` bytes.
std::string hex(const unsigned char* p, std::size_t len);

}  // namespace derpd::tls::detail

namespace derpd::tls::detail {

// SSL ex_data slot the SNI callback marks (non-null) when it rejects the ClientHello's name.
int sni_rejected_index();

}  // namespace derpd::tls::detail
