#include "client/derp/conn.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>

#include <fmt/format.h>

namespace derpd::derpclient {
namespace {

constexpr std::string_view kMetaCertPrefix = "derpkey";
constexpr std::string_view kSha256RawPrefix = "sha256-raw:";
constexpr std::size_t kTlsChunk = 16 * 1024;

void set_why(std::string* why, std::string text) {
  if (why != nullptr) *why = std::move(text);
}

std::string errno_text(int e) { return std::strerror(e); }

// Drains OpenSSL's error queue into one line.
std::string openssl_errors() {
  std::string out;
  unsigned long e = 0;
  while ((e = ERR_get_error()) != 0) {
    std::array<char, 256> buf{};
    ERR_error_string_n(e, buf.data(), buf.size());
    if (!out.empty()) out += "; ";
    out += buf.data();
  }
  return out.empty() ? std::string("unknown TLS error") : out;
}

int poll_timeout_ms(Deadline deadline) {
  const auto now = Clock::now();
  if (deadline <= now) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
  return static_cast<int>(std::min<long long>(ms, INT_MAX));
}

// The last CN of the subject (Go's pkix.Name keeps the last one), as UTF-8.
std::optional<std::string> common_name(X509* cert) {
  X509_NAME* subject = X509_get_subject_name(cert);
  if (subject == nullptr) return std::nullopt;
  int idx = -1;
  for (int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0;
       i = X509_NAME_get_index_by_NID(subject, NID_commonName, i))
    idx = i;
  if (idx < 0) return std::nullopt;
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
  if (data == nullptr) return std::nullopt;
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return std::nullopt;
  std::string cn(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(n));
  OPENSSL_free(utf8);
  return cn;
}

bool is_meta_cert_name(X509* cert) {
  auto cn = common_name(cert);
  return cn && cn->starts_with(kMetaCertPrefix);
}

bool is_ip_literal(std::string_view host) { return IpAddr::parse(host).has_value(); }

}  // namespace

std::optional<MetaCert> parse_meta_cert(X509* cert) {
  if (cert == nullptr) return std::nullopt;
  auto cn = common_name(cert);
  if (!cn || !cn->starts_with(kMetaCertPrefix)) return std::nullopt;
  auto key = protocol::NodePublic::parse_untyped_hex(std::string_view(*cn).substr(kMetaCertPrefix.size()));
  if (!key || key->is_zero()) return std::nullopt;
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert);
  if (serial == nullptr) return std::nullopt;
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  if (bn == nullptr) return std::nullopt;
  const bool fits = !BN_is_negative(bn) && BN_num_bits(bn) <= 8;  // Go: BitLen() <= 8
  const auto version = static_cast<int>(BN_get_word(bn));
  BN_free(bn);
  if (!fits || version == 0) return std::nullopt;  // Go uses it only when the version is non-zero
  return MetaCert{*key, version};
}

std::string cert_sha256_hex(X509* cert) {
  unsigned char* der = nullptr;
  const int len = i2d_X509(cert, &der);
  if (len <= 0) return {};
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int md_len = 0;
  const bool ok = EVP_Digest(der, static_cast<std::size_t>(len), md.data(), &md_len, EVP_sha256(), nullptr) == 1;
  OPENSSL_free(der);
  if (!ok) return {};
  std::string hex;
  for (unsigned i = 0; i < md_len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

struct Conn::Tls {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;   // owns both BIOs
  BIO* rbio = nullptr;  // network -> SSL
  BIO* wbio = nullptr;  // SSL -> network
  ~Tls() {
    SSL_free(ssl);
    SSL_CTX_free(ctx);
  }
};

Conn::Conn() = default;
Conn::~Conn() { close(); }
Conn::Conn(Conn&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), eof_(o.eof_), tls_(std::move(o.tls_)), tls_info_(std::move(o.tls_info_)) {}
Conn& Conn::operator=(Conn&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = std::exchange(o.fd_, -1);
    eof_ = o.eof_;
    tls_ = std::move(o.tls_);
    tls_info_ = std::move(o.tls_info_);
  }
  return *this;
}

bool Conn::is_tls() const { return tls_ != nullptr; }

void Conn::close() {
  tls_.reset();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::optional<Endpoint> Conn::local_endpoint() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (fd_ < 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
  return Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

std::optional<Endpoint> Conn::remote_endpoint() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (fd_ < 0 || ::getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
  return Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

Status<Error> Conn::wait(short events, Deadline deadline, std::string* why) {
  for (;;) {
    pollfd p{fd_, events, 0};
    const int n = ::poll(&p, 1, poll_timeout_ms(deadline));
    if (n > 0) return {};
    if (n == 0) {
      set_why(why, "deadline passed");
      return Err{Error::kTimeout};
    }
    if (errno != EINTR) {
      set_why(why, "poll: " + errno_text(errno));
      return Err{Error::kIo};
    }
  }
}

Result<Conn, Error> Conn::dial(std::string_view host, std::uint16_t port, Deadline deadline, std::string* why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* list = nullptr;
  const std::string host_z(host);
  const std::string port_z = std::to_string(port);
  if (const int rc = ::getaddrinfo(host_z.c_str(), port_z.c_str(), &hints, &list); rc != 0) {
    set_why(why, fmt::format("resolve {}: {}", host, ::gai_strerror(rc)));
    return Err{Error::kResolve};
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(list, &::freeaddrinfo);

  Error last = Error::kConnect;
  std::string last_why = "no addresses";
  for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    Conn c;
    c.fd_ = ::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (c.fd_ < 0) {
      last_why = "socket: " + errno_text(errno);
      continue;
    }
    const int one = 1;
    (void)::setsockopt(c.fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const auto ep = Endpoint::from_sockaddr(ai->ai_addr, ai->ai_addrlen);
    const std::string where = ep ? ep->to_string() : host_z;
    if (::connect(c.fd_, ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        last_why = fmt::format("connect {}: {}", where, errno_text(errno));
        continue;
      }
      std::string wait_why;
      if (auto w = c.wait(POLLOUT, deadline, &wait_why); !w) {
        last = w.error() == Error::kTimeout ? Error::kTimeout : Error::kConnect;
        last_why = fmt::format("connect {}: {}", where, wait_why);
        if (last == Error::kTimeout) break;  // no time left for another address
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(c.fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err != 0) {
        last = Error::kConnect;
        last_why = fmt::format("connect {}: {}", where, errno_text(err));
        continue;
      }
    }
    return c;
  }
  set_why(why, last_why);
  return Err{last};
}

Result<std::size_t, Error> Conn::raw_read(MutBytes out, Deadline deadline, std::string* why) {
  if (fd_ < 0) return Err{Error::kBroken};
  for (;;) {
    const ssize_t n = ::recv(fd_, out.data(), out.size(), 0);
    if (n > 0) return static_cast<std::size_t>(n);
    if (n == 0) {
      eof_ = true;
      set_why(why, "connection closed by the server");
      return Err{Error::kClosed};
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      set_why(why, "recv: " + errno_text(errno));
      return Err{errno == ECONNRESET ? Error::kClosed : Error::kIo};
    }
    if (auto w = wait(POLLIN, deadline, why); !w) return Err{w.error()};
  }
}

Status<Error> Conn::raw_write_all(Bytes data, Deadline deadline, std::string* why) {
  if (fd_ < 0) return Err{Error::kBroken};
  while (!data.empty()) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      data = data.subspan(static_cast<std::size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      set_why(why, "send: " + errno_text(errno));
      return Err{(errno == EPIPE || errno == ECONNRESET) ? Error::kClosed : Error::kIo};
    }
    if (auto w = wait(POLLOUT, deadline, why); !w) return w;
  }
  return {};
}

Status<Error> Conn::flush_tls(Deadline deadline, std::string* why) {
  std::array<std::byte, kTlsChunk> buf;
  while (BIO_ctrl_pending(tls_->wbio) > 0) {
    const int n = BIO_read(tls_->wbio, buf.data(), static_cast<int>(buf.size()));
    if (n <= 0) break;
    if (auto s = raw_write_all(Bytes(buf.data(), static_cast<std::size_t>(n)), deadline, why); !s) return s;
  }
  return {};
}

Status<Error> Conn::fill_tls(Deadline deadline, std::string* why) {
  if (eof_) {
    set_why(why, "connection closed by the server");
    return Err{Error::kClosed};
  }
  std::array<std::byte, kTlsChunk> buf;
  auto n = raw_read(buf, deadline, why);
  if (!n) return Err{n.error()};
  if (BIO_write(tls_->rbio, buf.data(), static_cast<int>(*n)) != static_cast<int>(*n)) {
    set_why(why, "TLS input buffer: " + openssl_errors());
    return Err{Error::kTls};
  }
  return {};
}

template <typename Op>
Result<int, Error> Conn::drive_tls(Op&& op, Deadline deadline, std::string* why) {
  for (;;) {
    ERR_clear_error();
    const int r = op();
    const int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(tls_->ssl, r);
    std::string ssl_why;
    if (e == SSL_ERROR_SSL || e == SSL_ERROR_SYSCALL) ssl_why = openssl_errors();
    // Whatever the operation produced (records, alerts) goes out first.
    if (auto s = flush_tls(deadline, why); !s) return Err{s.error()};
    switch (e) {
      case SSL_ERROR_NONE:
        return r;
      case SSL_ERROR_WANT_READ:
        if (auto s = fill_tls(deadline, why); !s) return Err{s.error()};
        continue;
      case SSL_ERROR_WANT_WRITE:  // memory BIO: already flushed
        continue;
      case SSL_ERROR_ZERO_RETURN:
        set_why(why, "TLS connection closed by the server");
        return Err{Error::kClosed};
      default:
        set_why(why, ssl_why);
        return Err{Error::kTls};
    }
  }
}

Status<Error> Conn::start_tls(const TlsOptions& options, std::string_view host, Deadline deadline,
                              std::string* why) {
  if (fd_ < 0) return Err{Error::kBroken};
  std::string pin;
  std::string verify_name(host);
  if (options.cert_name.starts_with(kSha256RawPrefix)) {
    pin = options.cert_name.substr(kSha256RawPrefix.size());
    std::transform(pin.begin(), pin.end(), pin.begin(),
                   [](char c) { return (c >= 'A' && c <= 'F') ? static_cast<char>(c - 'A' + 'a') : c; });
    if (pin.size() != 64 || pin.find_first_not_of("0123456789abcdef") != std::string::npos) {
      set_why(why, "cert name: sha256-raw: needs 64 hex digits");
      return Err{Error::kBadOptions};
    }
  } else if (!options.cert_name.empty()) {
    verify_name = options.cert_name;
  }

  auto tls = std::make_unique<Tls>();
  tls->ctx = SSL_CTX_new(TLS_client_method());
  if (tls->ctx == nullptr) {
    set_why(why, openssl_errors());
    return Err{Error::kTls};
  }
  SSL_CTX_set_min_proto_version(tls->ctx, TLS1_2_VERSION);
  const bool verify_chain = !options.insecure_skip_verify && pin.empty();
  if (verify_chain) {
    const int loaded = options.ca_file.empty()
                           ? SSL_CTX_set_default_verify_paths(tls->ctx)
                           : SSL_CTX_load_verify_locations(tls->ctx, options.ca_file.c_str(), nullptr);
    if (loaded != 1) {
      set_why(why, fmt::format("trust anchors {}: {}", options.ca_file.empty() ? "(system)" : options.ca_file,
                               openssl_errors()));
      return Err{Error::kBadOptions};
    }
  }
  tls->ssl = SSL_new(tls->ctx);
  tls->rbio = BIO_new(BIO_s_mem());
  tls->wbio = BIO_new(BIO_s_mem());
  if (tls->ssl == nullptr || tls->rbio == nullptr || tls->wbio == nullptr) {
    BIO_free(tls->rbio);
    BIO_free(tls->wbio);
    tls->rbio = tls->wbio = nullptr;
    set_why(why, openssl_errors());
    return Err{Error::kTls};
  }
  SSL_set_bio(tls->ssl, tls->rbio, tls->wbio);
  SSL_set_connect_state(tls->ssl);
  const std::string host_z(host);
  if (!is_ip_literal(host)) SSL_set_tlsext_host_name(tls->ssl, host_z.c_str());
  if (verify_chain) {
    SSL_set_verify(tls->ssl, SSL_VERIFY_PEER, nullptr);
    X509_VERIFY_PARAM* param = SSL_get0_param(tls->ssl);
    const auto ip = IpAddr::parse(verify_name);
    const int set = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, ip->to_string().c_str())
                       : SSL_set1_host(tls->ssl, verify_name.c_str());
    if (set != 1) {
      set_why(why, "certificate name: " + openssl_errors());
      return Err{Error::kBadOptions};
    }
  } else {
    SSL_set_verify(tls->ssl, SSL_VERIFY_NONE, nullptr);
  }
  tls_ = std::move(tls);

  SSL* ssl = tls_->ssl;
  auto hs = drive_tls([ssl] { return SSL_do_handshake(ssl); }, deadline, why);
  if (!hs) {
    const long vr = SSL_get_verify_result(ssl);
    if (verify_chain && vr != X509_V_OK) {
      set_why(why, fmt::format("certificate verify failed: {}", X509_verify_cert_error_string(vr)));
      tls_.reset();
      return Err{Error::kCertVerify};
    }
    if (hs.error() == Error::kClosed) set_why(why, "server closed the connection during the TLS handshake");
    tls_.reset();
    return Err{hs.error() == Error::kClosed ? Error::kTls : hs.error()};
  }

  tls_info_ = TlsInfo{};
  tls_info_.version = SSL_get_version(ssl);
  tls_info_.cipher = SSL_get_cipher_name(ssl);
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);  // client side: leaf first
  X509* leaf = SSL_get0_peer_certificate(ssl);
  if (leaf != nullptr) tls_info_.leaf_sha256 = cert_sha256_hex(leaf);
  if (SSL_version(ssl) >= TLS1_3_VERSION && chain != nullptr) {
    for (int i = 0; i < sk_X509_num(chain) && !tls_info_.meta; ++i) tls_info_.meta = parse_meta_cert(sk_X509_value(chain, i));
  }

  if (!pin.empty()) {
    // Tailscale's tlsdial.SetConfigExpectedCertHash: exactly one certificate besides the meta cert,
    // whose DER hashes to the pin, valid now, for the dialed host name (not checked for IP literals,
    // which Go sends no server name for).
    X509* good = nullptr;
    const int n = chain == nullptr ? 0 : sk_X509_num(chain);
    for (int i = 0; i < n; ++i) {
      X509* c = sk_X509_value(chain, i);
      if (is_meta_cert_name(c)) continue;
      std::string problem;
      if (good != nullptr) problem = "unexpected multiple certificates presented";
      else if (cert_sha256_hex(c) != pin) problem = "certificate hash does not match the pinned sha256-raw";
      else if (!is_ip_literal(host) && X509_check_host(c, host_z.data(), host_z.size(), 0, nullptr) != 1)
        problem = fmt::format("certificate does not match server name \"{}\"", host);
      else if (X509_cmp_current_time(X509_get0_notAfter(c)) < 0) problem = "certificate expired";
      else if (X509_cmp_current_time(X509_get0_notBefore(c)) > 0) problem = "certificate not yet valid";
      if (!problem.empty()) {
        set_why(why, problem);
        tls_.reset();
        return Err{Error::kCertVerify};
      }
      good = c;
    }
    if (good == nullptr) {
      set_why(why, "expected certificate not presented");
      tls_.reset();
      return Err{Error::kCertVerify};
    }
  }
  return {};
}

Result<std::size_t, Error> Conn::read_some(MutBytes out, Deadline deadline, std::string* why) {
  if (fd_ < 0) return Err{Error::kBroken};
  if (out.empty()) return std::size_t{0};
  if (!tls_) return raw_read(out, deadline, why);
  SSL* ssl = tls_->ssl;
  const int want = static_cast<int>(std::min<std::size_t>(out.size(), INT_MAX));
  auto r = drive_tls([&] { return SSL_read(ssl, out.data(), want); }, deadline, why);
  if (!r) return Err{r.error()};
  return static_cast<std::size_t>(*r);
}

Status<Error> Conn::write_all(Bytes data, Deadline deadline, std::string* why) {
  if (fd_ < 0) return Err{Error::kBroken};
  if (!tls_) return raw_write_all(data, deadline, why);
  SSL* ssl = tls_->ssl;
  while (!data.empty()) {
    const int len = static_cast<int>(std::min<std::size_t>(data.size(), 1 << 20));
    auto r = drive_tls([&] { return SSL_write(ssl, data.data(), len); }, deadline, why);
    if (!r) return Err{r.error()};
    data = data.subspan(static_cast<std::size_t>(*r));
  }
  return {};
}

}  // namespace derpd::derpclient
