#include "client/probe/udp_transport.h"

#include <ifaddrs.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

namespace derpd::probe {

std::string_view to_string(NetError e) {
  switch (e) {
    case NetError::kNoFamily:
      return "address family not available";
    case NetError::kUnreachable:
      return "network unreachable";
    case NetError::kRefused:
      return "port unreachable";
    case NetError::kNoBuffers:
      return "no buffer space";
    case NetError::kOther:
      return "socket error";
    case NetError::kCount:
      break;
  }
  return "invalid";
}

namespace {

NetError classify_errno(int e) {
  switch (e) {
    case EAFNOSUPPORT:
    case EPROTONOSUPPORT:
      return NetError::kNoFamily;
    case ENETUNREACH:
    case EHOSTUNREACH:
    case EADDRNOTAVAIL:
    case EINVAL:  // e.g. an IPv4 destination on a socket that cannot reach it
      return NetError::kUnreachable;
    case ECONNREFUSED:
      return NetError::kRefused;
    case ENOBUFS:
    case EAGAIN:
      return NetError::kNoBuffers;
    default:
      return NetError::kOther;
  }
}

int af_of(Family f) { return f == Family::V4 ? AF_INET : AF_INET6; }

}  // namespace

UdpTransport::~UdpTransport() {
  for (auto& s : socks_)
    if (s.fd >= 0) ::close(s.fd);
}

Result<SocketId, NetError> UdpTransport::open(Family f) {
  const int fd = ::socket(af_of(f), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    last_errno_ = errno;
    return Err(classify_errno(errno));
  }
  if (f == Family::V6) {
    const int one = 1;
    if (::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) {
      last_errno_ = errno;
      ::close(fd);
      return Err(NetError::kOther);
    }
  }
  sockaddr_storage ss{};
  const socklen_t len = Endpoint{IpAddr::any(f), 0}.to_sockaddr(ss);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    last_errno_ = errno;
    ::close(fd);
    return Err(classify_errno(last_errno_));
  }
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen) != 0) {
    last_errno_ = errno;
    ::close(fd);
    return Err(NetError::kOther);
  }
  auto ep = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&bound), blen);
  Sock s;
  s.fd = fd;
  s.family = f;
  s.local = ep.value_or(Endpoint{IpAddr::any(f), 0});
  socks_.push_back(s);
  return static_cast<SocketId>(socks_.size() - 1);
}

Endpoint UdpTransport::local(SocketId s) const {
  if (s >= socks_.size()) return Endpoint{};
  return socks_[s].local;
}

Status<NetError> UdpTransport::send(SocketId s, const Endpoint& to, Bytes datagram) {
  if (s >= socks_.size() || socks_[s].fd < 0) return Err(NetError::kOther);
  const Sock& sock = socks_[s];
  if (to.addr.family() != sock.family) return Err(NetError::kNoFamily);
  sockaddr_storage ss{};
  const socklen_t len = to.to_sockaddr(ss);
  for (int attempt = 0; attempt < 3; ++attempt) {
    const ssize_t n = ::sendto(sock.fd, datagram.data(), datagram.size(), MSG_NOSIGNAL,
                               reinterpret_cast<sockaddr*>(&ss), len);
    if (n >= 0) return {};
    if (errno == EINTR) continue;
    last_errno_ = errno;
    return Err(classify_errno(errno));
  }
  last_errno_ = EINTR;
  return Err(NetError::kOther);
}

std::optional<Received> UdpTransport::try_read(std::size_t index, MutBytes buf) {
  Sock& sock = socks_[index];
  if (sock.fd < 0) return std::nullopt;
  // Bounded: a socket that keeps failing with errors (ICMP reports) is left for the next turn.
  for (int attempt = 0; attempt < 8; ++attempt) {
    sockaddr_storage from{};
    socklen_t flen = sizeof from;
    const ssize_t n = ::recvfrom(sock.fd, buf.data(), buf.size(), MSG_DONTWAIT | MSG_TRUNC,
                                 reinterpret_cast<sockaddr*>(&from), &flen);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
      continue;  // EINTR, or an error queued by ICMP: nothing to deliver from it
    }
    auto ep = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&from), flen);
    if (!ep) continue;
    Received r;
    r.socket = static_cast<SocketId>(index);
    r.from = *ep;
    r.truncated = static_cast<std::size_t>(n) > buf.size();
    r.size = r.truncated ? buf.size() : static_cast<std::size_t>(n);
    return r;
  }
  return std::nullopt;
}

std::optional<Received> UdpTransport::receive(TimePoint until, MutBytes buf) {
  std::vector<pollfd> fds;
  std::vector<std::size_t> index;
  for (;;) {
    // Anything already queued is returned before sleeping, round-robin over the sockets.
    for (std::size_t k = 0; k < socks_.size(); ++k) {
      const std::size_t i = (next_read_ + k) % socks_.size();
      if (auto r = try_read(i, buf)) {
        next_read_ = i + 1;
        return r;
      }
    }
    const auto left = until - now();
    if (left <= Clock::duration::zero()) return std::nullopt;
    fds.clear();
    index.clear();
    for (std::size_t i = 0; i < socks_.size(); ++i) {
      if (socks_[i].fd < 0) continue;
      fds.push_back(pollfd{socks_[i].fd, POLLIN, 0});
      index.push_back(i);
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    const int rc = ::ppoll(fds.data(), fds.size(), &ts, nullptr);
    if (rc < 0 && errno != EINTR) return std::nullopt;
  }
}

void UdpTransport::close(SocketId s) {
  if (s >= socks_.size() || socks_[s].fd < 0) return;
  ::close(socks_[s].fd);
  socks_[s].fd = -1;
}

std::optional<IpAddr> UdpTransport::source_address_for(const Endpoint& to) {
  const int fd = ::socket(af_of(to.addr.family()), SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_storage ss{};
  const socklen_t len = to.to_sockaddr(ss);
  std::optional<IpAddr> out;
  // connect() on UDP sends nothing: it only asks the routing table for a source address.
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0) {
    sockaddr_storage mine{};
    socklen_t mlen = sizeof mine;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&mine), &mlen) == 0) {
      if (auto ep = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&mine), mlen)) out = ep->addr;
    }
  }
  ::close(fd);
  return out;
}

std::vector<IpAddr> UdpTransport::interface_addresses(Family f) {
  std::vector<IpAddr> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != af_of(f)) continue;
    const socklen_t len = f == Family::V4 ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    auto ep = Endpoint::from_sockaddr(i->ifa_addr, len);
    if (ep && ep->addr.family() == f) out.push_back(ep->addr);
  }
  ::freeifaddrs(list);
  return out;
}

}  // namespace derpd::probe
