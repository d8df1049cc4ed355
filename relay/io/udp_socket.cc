#include "relay/io/udp_socket.h"

#include <fcntl.h>
#include <netinet/ip.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace derpd::io {

namespace {
constexpr std::uint8_t kOpRecv = 1;
constexpr std::uint8_t kOpSend = 2;
// Space the kernel writes before each payload: source address and packet-info control message.
constexpr socklen_t kNameLen = sizeof(sockaddr_in6);
constexpr socklen_t kControlLen = CMSG_SPACE(sizeof(in6_pktinfo));
}  // namespace

Result<int, UdpOpenError> open_udp_socket(const Endpoint& addr, int& errno_out) {
  int family = addr.addr.is_v4() ? AF_INET : AF_INET6;
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    errno_out = errno;
    return Err{UdpOpenError::kSocket};
  }
  int one = 1;
  bool ok = setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0;
  if (family == AF_INET6) ok = ok && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == 0;
  if (addr.addr.is_unspecified()) {
    if (family == AF_INET)
      ok = ok && setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one) == 0;
    else
      ok = ok && setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one) == 0;
  }
  int rcvbuf = 4 << 20;  // absorb bursts; the kernel caps this at net.core.rmem_max
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (!ok) {
    errno_out = errno;
    ::close(fd);
    return Err{UdpOpenError::kOption};
  }
  sockaddr_storage ss;
  socklen_t len = addr.to_sockaddr(ss);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    errno_out = errno;
    ::close(fd);
    return Err{UdpOpenError::kBind};
  }
  return fd;
}

UdpSocket::UdpSocket(Loop& loop, int fd, const Endpoint& bound, BufRing& buffers, DatagramSink& sink,
                     UdpStats& stats, std::uint16_t send_slots)
    : loop_(loop),
      fd_(fd),
      bound_(bound),
      buffers_(buffers),
      sink_(sink),
      slot_(loop.attach(this)),
      stats_(stats),
      send_slots_(new SendSlot[send_slots]),
      send_count_(send_slots),
      free_head_(0) {
  recv_tmpl_.msg_namelen = kNameLen;
  recv_tmpl_.msg_controllen = kControlLen;
  for (std::uint16_t i = 0; i < send_slots; ++i) {
    SendSlot& s = send_slots_[i];
    s.index = i;
    s.next_free = static_cast<std::uint16_t>(i + 1 < send_slots ? i + 1 : kNone);
  }
}

UdpSocket::~UdpSocket() { close(); }

void UdpSocket::start() { arm_recv(); }

void UdpSocket::arm_recv() {
  if (closed_) return;
  loop_.ring().prep_recvmsg_multishot(fd_, &recv_tmpl_, buffers_, loop_.user_data(slot_, kOpRecv));
}

void UdpSocket::close() {
  if (closed_) return;
  closed_ = true;
  // Cancel by user_data, not by fd: once closed, the fd number can belong to a new socket at once.
  loop_.ring().prep_cancel(loop_.user_data(slot_, kOpRecv), kIgnoredUserData);
  loop_.detach(slot_);  // in-flight completions now arrive stale and are dropped
  ::close(fd_);
  fd_ = -1;
}

UdpSocket::SendSlot* UdpSocket::acquire() {
  if (free_head_ == kNone) {
    stats_.send_busy.inc();
    return nullptr;
  }
  SendSlot* s = &send_slots_[free_head_];
  free_head_ = s->next_free;
  return s;
}

void UdpSocket::release(SendSlot* s) {
  s->next_free = free_head_;
  free_head_ = s->index;
}

void UdpSocket::send(SendSlot* s, std::size_t len, const Endpoint& to, const IpAddr& source) {
  std::memset(&s->msg, 0, sizeof s->msg);
  s->iov.iov_base = s->payload;
  s->iov.iov_len = len;
  s->msg.msg_iov = &s->iov;
  s->msg.msg_iovlen = 1;
  s->msg.msg_name = &s->to;
  s->msg.msg_namelen = bound_.addr.is_v4() ? to.to_sockaddr(s->to) : to.to_sockaddr6(s->to);
  if (wildcard() && !source.is_unspecified()) {
    std::memset(s->control, 0, sizeof s->control);
    s->msg.msg_control = s->control;
    if (bound_.addr.is_v4()) {
      s->msg.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo));
      cmsghdr* cm = CMSG_FIRSTHDR(&s->msg);
      cm->cmsg_level = IPPROTO_IP;
      cm->cmsg_type = IP_PKTINFO;
      cm->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
      in_pktinfo pi{};
      std::memcpy(&pi.ipi_spec_dst, source.data(), 4);
      std::memcpy(CMSG_DATA(cm), &pi, sizeof pi);
    } else {
      s->msg.msg_controllen = CMSG_SPACE(sizeof(in6_pktinfo));
      cmsghdr* cm = CMSG_FIRSTHDR(&s->msg);
      cm->cmsg_level = IPPROTO_IPV6;
      cm->cmsg_type = IPV6_PKTINFO;
      cm->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
      in6_pktinfo pi{};
      auto b = source.as16();
      std::memcpy(&pi.ipi6_addr, b.data(), 16);
      std::memcpy(CMSG_DATA(cm), &pi, sizeof pi);
    }
  }
  if (!loop_.ring().prep_sendmsg(fd_, &s->msg, 0, loop_.user_data(slot_, kOpSend, s->index))) {
    stats_.send_errors.inc();
    release(s);
  }
}

void UdpSocket::on_completion(const UserData& ud, const Completion& c) {
  if (ud.op == kOpRecv) {
    on_recv(c);
    return;
  }
  if (ud.op == kOpSend) {
    if (ud.aux >= send_count_) return;
    if (c.res < 0)
      stats_.send_errors.inc();
    else
      stats_.sent.inc();
    release(&send_slots_[ud.aux]);
  }
}

void UdpSocket::on_recv(const Completion& c) {
  const bool more = (c.flags & IORING_CQE_F_MORE) != 0;
  if (c.res < 0) {
    if (c.res == -ENOBUFS) {
      stats_.no_buffers.inc();  // buffers come back as the sink finishes with them; re-arm below
    } else if (c.res != -ECANCELED) {
      stats_.recv_errors.inc();
    }
  } else if (completion_has_buffer(c.flags)) {
    std::uint16_t bid = completion_buffer_id(c.flags);
    buffers_.note_consumed();
    auto buf = buffers_.buffer(bid);
    msghdr tmpl = recv_tmpl_;
    io_uring_recvmsg_out* out = io_uring_recvmsg_validate(buf.data(), c.res, &tmpl);
    if (out == nullptr) {
      stats_.recv_errors.inc();
    } else if ((out->flags & MSG_TRUNC) != 0) {
      stats_.truncated.inc();
    } else {
      stats_.received.inc();
      auto from = Endpoint::from_sockaddr(static_cast<const sockaddr*>(io_uring_recvmsg_name(out)),
                                          std::min<socklen_t>(out->namelen, kNameLen));
      Endpoint local = bound_;
      if (wildcard()) {
        for (cmsghdr* cm = io_uring_recvmsg_cmsg_firsthdr(out, &tmpl); cm != nullptr;
             cm = io_uring_recvmsg_cmsg_nexthdr(out, &tmpl, cm)) {
          if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO &&
              cm->cmsg_len >= CMSG_LEN(sizeof(in_pktinfo))) {
            in_pktinfo pi;
            std::memcpy(&pi, CMSG_DATA(cm), sizeof pi);
            std::array<std::uint8_t, 4> a;
            std::memcpy(a.data(), &pi.ipi_addr, 4);
            local.addr = IpAddr::v4(a);
          } else if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO &&
                     cm->cmsg_len >= CMSG_LEN(sizeof(in6_pktinfo))) {
            in6_pktinfo pi;
            std::memcpy(&pi, CMSG_DATA(cm), sizeof pi);
            std::array<std::uint8_t, 16> a;
            std::memcpy(a.data(), &pi.ipi6_addr, 16);
            local.addr = IpAddr::v6(a);
          }
        }
      }
      if (from) {
        auto* payload = static_cast<const std::byte*>(io_uring_recvmsg_payload(out, &tmpl));
        std::size_t len = io_uring_recvmsg_payload_length(out, c.res, &tmpl);
        sink_.on_datagram(*this, Bytes(payload, len), *from, local);
      } else {
        stats_.recv_errors.inc();
      }
    }
    buffers_.recycle(bid);
    buffers_.publish();
  }
  if (!more && !closed_) {
    stats_.rearms.inc();
    arm_recv();
  }
}

}  // namespace derpd::io
