#include "relay/base/endpoint.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace derpd {

IpAddr IpAddr::v4(std::array<std::uint8_t, 4> b) {
  IpAddr a;
  a.family_ = Family::V4;
  std::memcpy(a.bytes_.data(), b.data(), 4);
  return a;
}

IpAddr IpAddr::v6(const std::array<std::uint8_t, 16>& b) {
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(b.data(), kMapped, 12) == 0) return v4({b[12], b[13], b[14], b[15]});
  IpAddr a;
  a.family_ = Family::V6;
  a.bytes_ = b;
  return a;
}

IpAddr IpAddr::any(Family f) {
  IpAddr a;
  a.family_ = f;
  return a;
}

IpAddr IpAddr::loopback(Family f) {
  if (f == Family::V4) return v4({127, 0, 0, 1});
  std::array<std::uint8_t, 16> b{};
  b[15] = 1;
  return v6(b);
}

std::optional<IpAddr> IpAddr::parse(std::string_view text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
  if (text.empty() || text.size() > INET6_ADDRSTRLEN) return std::nullopt;
  char buf[INET6_ADDRSTRLEN + 1];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  std::array<std::uint8_t, 16> b{};
  if (inet_pton(AF_INET, buf, b.data()) == 1) return v4({b[0], b[1], b[2], b[3]});
  if (inet_pton(AF_INET6, buf, b.data()) == 1) {
    return v6(b);
  }
  return std::nullopt;
}

bool IpAddr::is_unspecified() const {
  for (std::size_t i = 0; i < size(); ++i)
    if (bytes_[i] != 0) return false;
  return true;
}

bool IpAddr::is_loopback() const {
  if (is_v4()) return bytes_[0] == 127;
  for (int i = 0; i < 15; ++i)
    if (bytes_[i] != 0) return false;
  return bytes_[15] == 1;
}

std::array<std::uint8_t, 16> IpAddr::as16() const {
  if (!is_v4()) return bytes_;
  std::array<std::uint8_t, 16> b{};
  b[10] = b[11] = 0xff;
  std::memcpy(&b[12], bytes_.data(), 4);
  return b;
}

std::string IpAddr::to_string() const {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(is_v4() ? AF_INET : AF_INET6, bytes_.data(), buf, sizeof buf);
  return buf;
}

namespace {
std::optional<std::uint16_t> parse_port(std::string_view s) {
  unsigned v = 0;
  if (s.empty() || s.size() > 5) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(v);
}

// Splits "host:port" / "[v6]:port" into host and port text; host may be empty (":443").
std::optional<std::pair<std::string_view, std::string_view>> split_host_port(std::string_view text) {
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
    return std::pair{text.substr(1, close - 1), text.substr(close + 2)};
  }
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  if (text.find(':') != colon) return std::nullopt;  // bare IPv6 without brackets is ambiguous
  return std::pair{text.substr(0, colon), text.substr(colon + 1)};
}
}  // namespace

std::optional<Endpoint> Endpoint::parse(std::string_view text) {
  auto hp = split_host_port(text);
  if (!hp || hp->first.empty()) return std::nullopt;
  auto ip = IpAddr::parse(hp->first);
  auto port = parse_port(hp->second);
  if (!ip || !port) return std::nullopt;
  return Endpoint{*ip, *port};
}

std::optional<Endpoint> Endpoint::parse_listen(std::string_view text) {
  auto hp = split_host_port(text);
  if (!hp) return std::nullopt;
  auto port = parse_port(hp->second);
  if (!port) return std::nullopt;
  if (hp->first.empty()) return Endpoint{IpAddr::any(Family::V4), *port};
  auto ip = IpAddr::parse(hp->first);
  if (!ip) return std::nullopt;
  return Endpoint{*ip, *port};
}

std::optional<Endpoint> Endpoint::from_sockaddr(const sockaddr* sa, socklen_t len) {
  if (sa == nullptr) return std::nullopt;
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    std::array<std::uint8_t, 4> b;
    std::memcpy(b.data(), &in->sin_addr, 4);
    return Endpoint{IpAddr::v4(b), ntohs(in->sin_port)};
  }
  if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    std::array<std::uint8_t, 16> b;
    std::memcpy(b.data(), &in6->sin6_addr, 16);
    return Endpoint{IpAddr::v6(b), ntohs(in6->sin6_port)};
  }
  return std::nullopt;
}

socklen_t Endpoint::to_sockaddr(sockaddr_storage& out) const {
  std::memset(&out, 0, sizeof out);
  if (addr.is_v4()) {
    auto* in = reinterpret_cast<sockaddr_in*>(&out);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    std::memcpy(&in->sin_addr, addr.data(), 4);
    return sizeof(sockaddr_in);
  }
  return to_sockaddr6(out);
}

socklen_t Endpoint::to_sockaddr6(sockaddr_storage& out) const {
  std::memset(&out, 0, sizeof out);
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  auto b = addr.as16();
  std::memcpy(&in6->sin6_addr, b.data(), 16);
  return sizeof(sockaddr_in6);
}

std::string Endpoint::to_string() const {
  if (addr.is_v4()) return addr.to_string() + ":" + std::to_string(port);
  return "[" + addr.to_string() + "]:" + std::to_string(port);
}

}  // namespace derpd

std::size_t std::hash<derpd::IpAddr>::operator()(const derpd::IpAddr& a) const noexcept {
  std::uint64_t h = 1469598103934665603ull ^ static_cast<std::uint64_t>(a.family());
  for (std::size_t i = 0; i < a.size(); ++i) h = (h ^ a.data()[i]) * 1099511628211ull;
  return static_cast<std::size_t>(h);
}

std::size_t std::hash<derpd::Endpoint>::operator()(const derpd::Endpoint& e) const noexcept {
  return std::hash<derpd::IpAddr>()(e.addr) * 31 + e.port;
}
