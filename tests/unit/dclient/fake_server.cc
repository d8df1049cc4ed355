#include "tests/unit/dclient/fake_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <array>
#include <csignal>
#include <stdexcept>
#include <utility>

namespace derpd::derpclient::testing {

namespace proto = derpd::protocol;

CertKey::CertKey(CertKey&& o) noexcept : cert(std::exchange(o.cert, nullptr)), key(std::exchange(o.key, nullptr)) {}
CertKey& CertKey::operator=(CertKey&& o) noexcept {
  std::swap(cert, o.cert);
  std::swap(key, o.key);
  return *this;
}
CertKey::~CertKey() {
  X509_free(cert);
  EVP_PKEY_free(key);
}

std::string CertKey::pem() const {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, cert);
  char* data = nullptr;
  const long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(b);
  return out;
}

namespace {

// Delivers every frame type up to 1 MiB: the fake wants to see Pongs too.
const proto::FrameLimits& deliver_all() {
  static const proto::FrameLimits limits = [] {
    proto::FrameLimits l;
    l.action.fill(proto::FrameAction::kDeliver);
    l.max_len.fill(proto::kMaxFrameSize);
    return l;
  }();
  return limits;
}

CertKey build(EVP_PKEY* key, const std::string& cn, long serial, long not_after_days, const char* san,
              const EVP_MD* md) {
  if (key == nullptr) throw std::runtime_error("key generation failed");
  CertKey ck;
  ck.key = key;
  ck.cert = X509_new();
  X509_set_version(ck.cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(ck.cert), serial);
  X509_gmtime_adj(X509_getm_notBefore(ck.cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(ck.cert), not_after_days * 86400);
  X509_set_pubkey(ck.cert, key);
  X509_NAME* name = X509_get_subject_name(ck.cert);
  // A plain string type skips OpenSSL's 64-character CN limit: derper's "derpkey<64 hex>" is 71.
  X509_NAME_add_entry_by_NID(name, NID_commonName, V_ASN1_UTF8STRING,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), static_cast<int>(cn.size()), -1, 0);
  X509_set_issuer_name(ck.cert, name);
  if (san != nullptr) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, ck.cert, ck.cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, san);
    X509_add_ext(ck.cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(ck.cert, key, md) == 0) throw std::runtime_error("X509_sign failed");
  return ck;
}

}  // namespace

CertKey make_server_cert(const std::string& cn, long not_after_days, const std::string& san) {
  return build(EVP_EC_gen("P-256"), cn, 4242, not_after_days, san.c_str(), EVP_sha256());
}

CertKey make_meta_cert(const proto::NodePublic& server_key, long version) {
  return build(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"), "derpkey" + server_key.untyped_hex(), version, 365,
               nullptr, nullptr);
}

CertKey make_cert_with(const std::string& cn, long serial) {
  return build(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"), cn, serial, 365, nullptr, nullptr);
}

// --- ServerConn ---------------------------------------------------------------------------------

std::string ServerConn::sni() const {
  if (ssl_ == nullptr) return {};
  const char* name = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
  return name == nullptr ? std::string() : std::string(name);
}

bool ServerConn::fill() {
  std::array<std::byte, 16384> tmp;
  ssize_t n = 0;
  if (ssl_ != nullptr) {
    n = SSL_read(ssl_, tmp.data(), static_cast<int>(tmp.size()));
  } else {
    n = ::recv(fd_, tmp.data(), tmp.size(), 0);
  }
  if (n <= 0) return false;
  buf_.insert(buf_.end(), tmp.begin(), tmp.begin() + n);
  return true;
}

std::string ServerConn::read_head() {
  for (int i = 0; i < 64; ++i) {
    const std::string_view s(reinterpret_cast<const char*>(buf_.data()), buf_.size());
    if (auto end = s.find("\r\n\r\n"); end != std::string_view::npos) {
      last_head = std::string(s.substr(0, end + 4));
      buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(end + 4));
      return last_head;
    }
    if (buf_.size() > 16384 || !fill()) break;
  }
  return {};
}

std::optional<ServerConn::OwnedFrame> ServerConn::read_frame(const proto::FrameLimits* limits) {
  reader_.set_limits(limits != nullptr ? *limits : deliver_all());
  for (int i = 0; i < 1024; ++i) {
    Bytes in(buf_.data(), buf_.size());
    proto::Frame f;
    const auto st = reader_.next(in, f);
    const std::size_t used = buf_.size() - in.size();
    if (st == proto::FrameReader::Status::kError) return std::nullopt;
    if (st == proto::FrameReader::Status::kFrame) {
      OwnedFrame out{f.type, std::vector<std::byte>(f.payload.begin(), f.payload.end())};
      buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(used));
      return out;
    }
    buf_.clear();
    if (!fill()) return std::nullopt;
  }
  return std::nullopt;
}

bool ServerConn::write(Bytes b) {
  while (!b.empty()) {
    ssize_t n = 0;
    if (ssl_ != nullptr) {
      n = SSL_write(ssl_, b.data(), static_cast<int>(b.size()));
    } else {
      n = ::send(fd_, b.data(), b.size(), MSG_NOSIGNAL);
    }
    if (n <= 0) return false;
    b = b.subspan(static_cast<std::size_t>(n));
  }
  return true;
}

bool ServerConn::wait_closed() {
  for (int i = 0; i < 4096; ++i) {
    buf_.clear();
    if (!fill()) return true;
  }
  return false;
}

bool ServerConn::send_101(const proto::NodePublic& server_key) {
  return write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\n"
               "Derp-Public-Key: " + server_key.untyped_hex() + "\r\n\r\n");
}

bool ServerConn::send_server_key(const proto::NodePublic& server_key) {
  std::array<std::byte, proto::frame_size(proto::kServerKeyLen)> f{};
  const std::size_t n = proto::write_server_key(f, server_key);
  return n != 0 && write(Bytes(f.data(), n));
}

std::optional<proto::ClientHello> ServerConn::read_client_info(const proto::NodePrivate& server_private) {
  auto f = read_frame(&proto::server_handshake_limits());
  if (!f) return std::nullopt;
  proto::Frame frame;
  frame.type = f->type;
  frame.length = static_cast<std::uint32_t>(f->payload.size());
  frame.payload = f->payload;
  auto hello = proto::open_client_info(frame, server_private);
  if (!hello) return std::nullopt;
  return *hello;
}

bool ServerConn::send_server_info(const proto::NodePrivate& server_private, const proto::NodePublic& client) {
  std::array<std::byte, proto::kServerInfoFrameLen> f{};
  auto n = proto::write_server_info(f, server_private, client);
  return n.ok() && write(Bytes(f.data(), *n));
}

std::optional<proto::ClientHello> ServerConn::login(const proto::NodePrivate& server_private) {
  if (read_head().empty()) return std::nullopt;
  if (!send_101(server_private.public_key()) || !send_server_key(server_private.public_key())) return std::nullopt;
  auto hello = read_client_info(server_private);
  if (!hello) return std::nullopt;
  if (!send_server_info(server_private, hello->key)) return std::nullopt;
  return hello;
}

int listen_on_loopback(std::uint16_t* port, const char* who) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 8) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error(std::string(who) + ": cannot listen on loopback");
  }
  *port = ntohs(sa.sin_port);
  return fd;
}

// --- FakeServer ---------------------------------------------------------------------------------

FakeServer::FakeServer(Handler handler, const TlsSetup* tls) {
  // The fake writes to sockets the client may have closed (OpenSSL's socket BIO uses write()).
  std::signal(SIGPIPE, SIG_IGN);
  listen_fd_ = listen_on_loopback(&port_, "fake server");
  if (tls != nullptr) {
    tls_ = true;
    ctx_ = SSL_CTX_new(TLS_server_method());
    if (tls->max_tls12) SSL_CTX_set_max_proto_version(ctx_, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate(ctx_, tls->leaf->cert) != 1 || SSL_CTX_use_PrivateKey(ctx_, tls->leaf->key) != 1)
      throw std::runtime_error("fake server: bad certificate");
    if (tls->meta != nullptr && SSL_CTX_add1_chain_cert(ctx_, tls->meta->cert) != 1)
      throw std::runtime_error("fake server: cannot add the meta cert");
  }
  thread_ = std::thread([this, h = std::move(handler)] {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) return;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    SSL* ssl = nullptr;
    if (ctx_ != nullptr) {
      ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        ::close(fd);
        return;
      }
    }
    ServerConn conn(fd, ssl);
    h(conn);
    SSL_free(ssl);
    ::close(fd);
  });
}

void FakeServer::join() {
  if (thread_.joinable()) thread_.join();
}

FakeServer::~FakeServer() {
  join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  SSL_CTX_free(ctx_);
}

Options client_options(const std::string& url) {
  using namespace std::chrono_literals;
  Options o;
  o.url = url;
  o.connect_timeout = 3s;
  o.write_timeout = 3s;
  return o;
}

std::string FakeServer::url() const {
  return (tls_ ? "https://127.0.0.1:" : "http://127.0.0.1:") + std::to_string(port_) + "/derp";
}

}  // namespace derpd::derpclient::testing
