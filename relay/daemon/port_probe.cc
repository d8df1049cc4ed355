#include "relay/daemon/port_probe.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace derpd::daemon {

std::string probe_port_free(const Endpoint& addr, int type) {
  if (addr.port == 0) return "";
  int fd = socket(addr.addr.is_v4() ? AF_INET : AF_INET6, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";  // the real bind reports it
  int one = 1;
  if (!addr.addr.is_v4()) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (type == SOCK_STREAM) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // TIME_WAIT is fine
  sockaddr_storage ss;
  socklen_t len = addr.to_sockaddr(ss);
  std::string why;
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno == EADDRINUSE) {
    why = fmt::format("{} {} is already in use (another derpd or derper?)", type == SOCK_STREAM ? "tcp" : "udp",
                      addr.to_string());
  }
  close(fd);
  return why;
}

}  // namespace derpd::daemon
