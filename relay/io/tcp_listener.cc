#include "relay/io/tcp_listener.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace derpd::io {

namespace {
constexpr std::uint8_t kOpAccept = 1;
constexpr std::uint16_t kTimerRearm = 1;
}  // namespace

Result<int, TcpOpenError> open_tcp_listener(const Endpoint& addr, int backlog, int& errno_out) {
  const int family = addr.addr.is_v4() ? AF_INET : AF_INET6;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    errno_out = errno;
    return Err{TcpOpenError::kSocket};
  }
  int one = 1;
  bool ok = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0;
  if (family == AF_INET6) ok = ok && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == 0;
  if (!ok) {
    errno_out = errno;
    ::close(fd);
    return Err{TcpOpenError::kOption};
  }
  sockaddr_storage ss;
  socklen_t len = addr.to_sockaddr(ss);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    errno_out = errno;
    ::close(fd);
    return Err{TcpOpenError::kBind};
  }
  if (listen(fd, backlog) != 0) {
    errno_out = errno;
    ::close(fd);
    return Err{TcpOpenError::kListen};
  }
  return fd;
}

std::optional<Endpoint> local_endpoint(int fd) {
  sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
  return Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
}

std::optional<Endpoint> peer_endpoint(int fd) {
  sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
  return Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
}

TcpListener::TcpListener(Loop& loop, int fd, AcceptSink& sink, const TcpListenerOptions& opts)
    : loop_(loop), fd_(fd), sink_(sink), opts_(opts), slot_(loop.attach(this)) {
  accept_ud_ = loop_.user_data(slot_, kOpAccept);
  backoff_ = opts_.backoff_min;
}

TcpListener::~TcpListener() {
  close();
  if (state_ != State::kDetached) loop_.detach(slot_);  // a late accept is stale: its fd leaks
}

void TcpListener::start() {
  if (state_ != State::kIdle) return;
  state_ = State::kListening;
  arm();
}

void TcpListener::arm() {
  if (state_ != State::kListening || armed_ || waiting_) return;
  if (loop_.ring().prep_accept_multishot(fd_, accept_ud_)) {
    armed_ = true;
    freed_since_arm_ = false;
    return;
  }
  back_off();  // submission queue full: try again after a pause
}

void TcpListener::back_off() {
  if (waiting_) return;
  waiting_ = true;
  counters_.backoffs.add();
  loop_.add_timer(slot_, loop_.now() + backoff_, kTimerRearm);
  backoff_ = std::min(backoff_ * 2, opts_.backoff_max);
}

void TcpListener::close() {
  if (state_ == State::kClosing || state_ == State::kDetached) return;
  const bool was_armed = armed_;
  state_ = State::kClosing;
  if (was_armed && !loop_.ring().prep_cancel(accept_ud_, kIgnoredUserData)) {
    ::shutdown(fd_, SHUT_RDWR);  // ends the accept too
  }
  ::close(fd_);  // the cancel goes by user_data: a reuse of this fd number is not affected
  fd_ = -1;
  if (!was_armed) {
    state_ = State::kDetached;
    loop_.detach(slot_);
  }
}

void TcpListener::on_completion(const UserData& ud, const Completion& c) {
  if (ud.op != kOpAccept) return;
  const bool more = (c.flags & IORING_CQE_F_MORE) != 0;
  if (!more) armed_ = false;
  if (c.res >= 0) {
    const int fd = c.res;
    if (state_ != State::kListening || active_ >= opts_.max_connections) {
      ::close(fd);
      freed_since_arm_ = true;
      counters_.refused.add();
    } else {
      error_streak_ = 0;
      backoff_ = opts_.backoff_min;
      ++active_;
      counters_.accepted.add();
      sink_.on_accept(*this, fd);
    }
  }
  if (state_ == State::kClosing) {
    if (!armed_) {
      state_ = State::kDetached;
      loop_.detach(slot_);
    }
    return;
  }
  if (armed_) return;
  bool delay = false;
  if (c.res < 0) {
    switch (-c.res) {
      case EMFILE:
      case ENFILE:
        counters_.fd_exhausted.add();
        // Descriptors were given back since the accept was armed (refusals, ended connections):
        // try again at once; the back-off is for exhaustion that nothing relieves.
        delay = !freed_since_arm_;
        break;
      case ENOMEM:
      case ENOBUFS:
        counters_.no_memory.add();
        delay = true;
        break;
      default:
        counters_.accept_errors.add();
        delay = ++error_streak_ >= kMaxErrorStreak;
        break;
    }
  }
  if (delay) {
    back_off();
    return;
  }
  counters_.rearms.add();
  arm();
}

void TcpListener::on_timer(std::uint16_t cookie) {
  if (cookie != kTimerRearm) return;
  waiting_ = false;
  if (state_ == State::kListening) error_streak_ = 0;
  arm();
}

}  // namespace derpd::io
