#include "bench/load/derp_conn.h"

#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <variant>

#include "client/derp/conn.h"
#include "client/derp/http_upgrade.h"
#include "relay/protocol/handshake.h"

namespace derpd::bench {
namespace {

constexpr std::size_t kMaxHttpHead = 16 << 10;

ConnError from_errno(int e) {
  switch (e) {
    case ECONNREFUSED:
      return ConnError::kRefused;
    case ECONNRESET:
    case EPIPE:
      return ConnError::kReset;
    case ETIMEDOUT:
      return ConnError::kTimeout;
    default:
      return ConnError::kIo;
  }
}

}  // namespace

std::string_view to_string(ConnError e) {
  switch (e) {
    case ConnError::kNone: return "none";
    case ConnError::kSocket: return "socket";
    case ConnError::kRefused: return "refused";
    case ConnError::kReset: return "reset";
    case ConnError::kClosedByPeer: return "closed_by_peer";
    case ConnError::kTls: return "tls";
    case ConnError::kHttp: return "http";
    case ConnError::kHandshake: return "handshake";
    case ConnError::kProtocol: return "protocol";
    case ConnError::kIo: return "io";
    case ConnError::kOutputFull: return "output_full";
    case ConnError::kTimeout: return "timeout";
    case ConnError::kCount: break;
  }
  return "unknown";
}

LoadConn::~LoadConn() {
  if (ssl_ != nullptr) SSL_free(ssl_);
  if (fd_ >= 0) ::close(fd_);
}

bool LoadConn::start(const ConnEnv& env, int epfd, std::uint32_t index, const protocol::NodePrivate& key,
                     const sockaddr_in* src, std::uint64_t now_ns) {
  index_ = index;
  key_ = &key;
  started_ns_ = now_ns;
  state_ = ConnState::kConnecting;
  fd_ = ::socket(env.target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    close(env, ConnError::kSocket);
    return false;
  }
  const int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (src != nullptr) {
    // The port is picked at connect() with the whole 4-tuple: each source address has its own
    // ephemeral range.
    setsockopt(fd_, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(src), sizeof *src) != 0) {
      close(env, ConnError::kSocket);
      return false;
    }
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u32 = index;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd_, &ev) != 0) {
    close(env, ConnError::kSocket);
    return false;
  }
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&env.target), env.target_len) == 0) {
    after_connect(env);
  } else if (errno != EINPROGRESS) {
    close(env, errno == ECONNREFUSED ? ConnError::kRefused : ConnError::kSocket);
  }
  return state_ != ConnState::kClosed;
}

void LoadConn::on_event(const ConnEnv& env, std::uint32_t events) {
  switch (state_) {
    case ConnState::kIdle:
    case ConnState::kClosed:
      return;
    case ConnState::kConnecting: {
      if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err != 0) {
        close(env, from_errno(err));
        return;
      }
      after_connect(env);
      return;
    }
    case ConnState::kTlsHandshake:
      drive_tls(env);
      return;
    default:
      break;
  }
  if ((events & EPOLLOUT) != 0 && queued() > 0 && !flush(env)) return;
  read_all(env);
}

void LoadConn::after_connect(const ConnEnv& env) {
  if (env.tls != nullptr) {
    ssl_ = SSL_new(env.tls);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) {
      close(env, ConnError::kTls);
      return;
    }
    SSL_set_connect_state(ssl_);
    state_ = ConnState::kTlsHandshake;
    drive_tls(env);
    return;
  }
  state_ = ConnState::kWaitHttp;
  if (!append(as_bytes(env.request_slow))) return;
  if (!flush(env)) return;
  read_all(env);
}

void LoadConn::drive_tls(const ConnEnv& env) {
  ERR_clear_error();
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    after_tls(env);
    return;
  }
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
  if (e == SSL_ERROR_ZERO_RETURN) {
    close(env, ConnError::kClosedByPeer);
  } else if (e == SSL_ERROR_SYSCALL) {
    close(env, errno == 0 ? ConnError::kClosedByPeer : from_errno(errno));
  } else {
    close(env, ConnError::kTls);
  }
}

void LoadConn::after_tls(const ConnEnv& env) {
  std::optional<derpclient::MetaCert> meta;
  if (env.allow_fast_start && SSL_version(ssl_) == TLS1_3_VERSION) {
    // The Go client looks for the meta cert only under TLS 1.3.
    STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl_);
    const int n = chain == nullptr ? 0 : sk_X509_num(chain);
    for (int i = 0; i < n && !meta; ++i) meta = derpclient::parse_meta_cert(sk_X509_value(chain, i));
  }
  if (meta) {
    fast_ = true;
    server_key_ = meta->server_key;
    state_ = ConnState::kWaitServerKey;
    if (!append(as_bytes(env.request_fast)) || !send_client_info(env)) return;
  } else {
    state_ = ConnState::kWaitHttp;
    if (!append(as_bytes(env.request_slow))) return;
  }
  if (!flush(env)) return;
  read_all(env);
}

bool LoadConn::send_client_info(const ConnEnv& env) {
  const std::size_t size = protocol::client_info_frame_size(env.client_info_json.size());
  MutBytes out = reserve(size);
  if (out.empty()) {
    close(env, ConnError::kOutputFull);
    return false;
  }
  auto n = protocol::write_client_info(out, *key_, server_key_, env.client_info_json);
  if (!n) {
    close(env, ConnError::kHandshake);
    return false;
  }
  commit(*n);
  return true;
}

long LoadConn::raw_read(const ConnEnv& env, MutBytes buf) {
  const int want = static_cast<int>(std::min<std::size_t>(buf.size(), INT_MAX));
  if (ssl_ != nullptr) {
    ERR_clear_error();
    const int r = SSL_read(ssl_, buf.data(), want);
    if (r > 0) return r;
    const int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return -1;
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    if (e == SSL_ERROR_SYSCALL) {
      if (errno == 0) return 0;
      close(env, from_errno(errno));
    } else {
      close(env, ConnError::kTls);
    }
    return -2;
  }
  for (;;) {
    const ssize_t r = ::recv(fd_, buf.data(), static_cast<std::size_t>(want), 0);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
    close(env, from_errno(errno));
    return -2;
  }
}

void LoadConn::read_all(const ConnEnv& env) {
  read_pending_ = false;
  for (int i = 0; i < kReadsPerTurn; ++i) {
    if (state_ == ConnState::kClosed) return;
    const long n = raw_read(env, env.read_buffer);
    if (n > 0) {
      consume(env, Bytes(env.read_buffer.data(), static_cast<std::size_t>(n)));
      continue;
    }
    if (n == 0) close(env, ConnError::kClosedByPeer);
    return;  // would block, or closed
  }
  read_pending_ = state_ != ConnState::kClosed;
}

void LoadConn::consume(const ConnEnv& env, Bytes data) {
  if (state_ != ConnState::kWaitHttp) {
    feed_frames(env, data);
    return;
  }
  if (http_.size() + data.size() > kMaxHttpHead) {
    close(env, ConnError::kHttp);
    return;
  }
  http_.append(as_chars(data));
  if (http_.find("\r\n\r\n") == std::string::npos) return;
  auto head = derpclient::parse_response_head(as_bytes(http_));
  if (!head || head->status != 101) {
    close(env, ConnError::kHttp);
    return;
  }
  if (auto hex = head->header("Derp-Public-Key")) {
    auto key = protocol::NodePublic::parse_untyped_hex(*hex);
    if (!key) {
      close(env, ConnError::kHttp);
      return;
    }
    server_key_ = *key;
  }
  std::string rest = http_.substr(head->head_size);
  http_.clear();
  http_.shrink_to_fit();
  state_ = ConnState::kWaitServerKey;
  if (!rest.empty()) feed_frames(env, as_bytes(rest));
}

void LoadConn::feed_frames(const ConnEnv& env, Bytes data) {
  protocol::Frame f;
  for (;;) {
    switch (reader_.next(data, f)) {
      case protocol::FrameReader::Status::kFrame:
        on_frame(env, f);
        if (state_ == ConnState::kClosed) return;
        break;
      case protocol::FrameReader::Status::kNeedMore:
        return;
      case protocol::FrameReader::Status::kError:
        close(env, ConnError::kProtocol);
        return;
    }
  }
}

void LoadConn::on_frame(const ConnEnv& env, const protocol::Frame& f) {
  if (state_ == ConnState::kWaitServerKey) {
    auto key = protocol::parse_server_key(f);
    // With fast start the key came from the meta cert; over HTTP from Derp-Public-Key: both
    // must agree with the ServerKey frame.
    if (!key || (!server_key_.is_zero() && *key != server_key_)) {
      close(env, ConnError::kHandshake);
      return;
    }
    server_key_ = *key;
    reader_.set_limits(protocol::client_limits());
    state_ = ConnState::kWaitServerInfo;
    if (!fast_ && (!send_client_info(env) || !flush(env))) return;
    return;
  }
  auto msg = protocol::parse_server_message(f);
  if (!msg) {
    close(env, ConnError::kProtocol);
    return;
  }
  if (state_ == ConnState::kWaitServerInfo) {
    const auto* info = std::get_if<protocol::ServerInfoFrame>(&*msg);
    if (info == nullptr) return;  // nothing else is expected first; the Go client ignores it too
    if (!protocol::open_server_info(info->sealed, *key_, server_key_)) {
      close(env, ConnError::kHandshake);
      return;
    }
    state_ = ConnState::kReady;
    env.sink->on_ready(index_);
    return;
  }
  if (const auto* p = std::get_if<protocol::RecvPacket>(&*msg)) {
    env.sink->on_packet(index_, *p);
    return;
  }
  if (const auto* ping = std::get_if<protocol::Ping>(&*msg)) {
    MutBytes out = reserve(protocol::frame_size(protocol::kPingLen));
    if (out.empty()) {
      close(env, ConnError::kOutputFull);
      return;
    }
    commit(protocol::write_pong(out, ping->data));
    if (!flush(env)) return;
  }
  env.sink->on_other(index_, *msg);
}

bool LoadConn::append(Bytes b) {
  MutBytes out = reserve(b.size());
  if (out.size() != b.size()) return false;
  std::memcpy(out.data(), b.data(), b.size());
  commit(b.size());
  return true;
}

MutBytes LoadConn::reserve(std::size_t n) {
  if (state_ == ConnState::kClosed) return {};
  if (out_head_ == out_len_) out_head_ = out_len_ = 0;
  const std::size_t have = out_len_ - out_head_;
  if (have + n > kMaxQueued) return {};
  if (out_len_ + n > out_cap_) {
    if (have + n <= out_cap_ && out_head_ > 0) {
      std::memmove(out_.get(), out_.get() + out_head_, have);
    } else {
      const std::size_t cap = std::max({have + n, out_cap_ * 2, std::size_t{4096}});
      auto bigger = std::make_unique<std::byte[]>(cap);
      if (have > 0) std::memcpy(bigger.get(), out_.get() + out_head_, have);
      out_ = std::move(bigger);
      out_cap_ = cap;
    }
    out_head_ = 0;
    out_len_ = have;
  }
  return {out_.get() + out_len_, n};
}

bool LoadConn::flush(const ConnEnv& env) {
  if (state_ == ConnState::kClosed) return false;
  want_write_ = false;
  while (out_head_ < out_len_) {
    const std::byte* p = out_.get() + out_head_;
    const std::size_t len = out_len_ - out_head_;
    if (ssl_ != nullptr) {
      ERR_clear_error();
      const int r = SSL_write(ssl_, p, static_cast<int>(std::min<std::size_t>(len, INT_MAX)));
      if (r > 0) {
        out_head_ += static_cast<std::size_t>(r);
        continue;
      }
      const int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        want_write_ = true;
        return true;
      }
      close(env, e == SSL_ERROR_SYSCALL && errno != 0 ? from_errno(errno) : ConnError::kTls);
      return false;
    }
    const ssize_t r = ::send(fd_, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r > 0) {
      out_head_ += static_cast<std::size_t>(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      want_write_ = true;
      return true;
    }
    close(env, r < 0 ? from_errno(errno) : ConnError::kIo);
    return false;
  }
  out_head_ = out_len_ = 0;
  return true;
}

void LoadConn::close(const ConnEnv& env, ConnError e) {
  if (state_ == ConnState::kClosed) return;
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (fd_ >= 0) {
    ::close(fd_);  // also leaves the epoll set (the descriptor is never duplicated)
    fd_ = -1;
  }
  state_ = ConnState::kClosed;
  error_ = e;
  read_pending_ = false;
  out_.reset();
  out_cap_ = out_head_ = out_len_ = 0;
  http_.clear();
  http_.shrink_to_fit();
  reader_.release_memory();
  if (e != ConnError::kNone && env.sink != nullptr) env.sink->on_closed(index_, e);
}

void LoadConn::trim() {
  if (queued() == 0) {
    out_.reset();
    out_cap_ = out_head_ = out_len_ = 0;
  }
  reader_.release_memory();
}

std::string LoadConn::tls_description() const {
  if (ssl_ == nullptr) return {};
  return std::string(SSL_get_version(ssl_)) + " " + SSL_get_cipher_name(ssl_);
}

}  // namespace derpd::bench
