// IpAddr and Endpoint: strong types for IPv4/IPv6 addresses and address:port pairs.
//
// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is normalised to IPv4 on construction from a
// sockaddr, so one peer has one identity whatever socket family it arrived on.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace derpd {

enum class Family : std::uint8_t { V4 = 4, V6 = 6 };

class IpAddr {
 public:
  IpAddr() = default;  // 0.0.0.0
  static IpAddr v4(std::array<std::uint8_t, 4> b);
  static IpAddr v6(const std::array<std::uint8_t, 16>& b);  // unmaps ::ffff:a.b.c.d
  static std::optional<IpAddr> parse(std::string_view text);  // "1.2.3.4", "::1", "[::1]"
  static IpAddr any(Family f);
  static IpAddr loopback(Family f);

  Family family() const { return family_; }
  bool is_v4() const { return family_ == Family::V4; }
  bool is_unspecified() const;
  bool is_loopback() const;
  // 4 bytes for IPv4, 16 for IPv6.
  const std::uint8_t* data() const { return bytes_.data(); }
  std::size_t size() const { return is_v4() ? 4 : 16; }
  // IPv6 form (IPv4 as ::ffff:a.b.c.d), as derp PeerPresent and dual-stack sockets want.
  std::array<std::uint8_t, 16> as16() const;
  std::string to_string() const;

  friend bool operator==(const IpAddr&, const IpAddr&) = default;
  friend auto operator<=>(const IpAddr&, const IpAddr&) = default;

 private:
  Family family_ = Family::V4;
  std::array<std::uint8_t, 16> bytes_{};  // first 4 used for IPv4, rest zero
};

struct Endpoint {
  IpAddr addr;
  std::uint16_t port = 0;

  // "1.2.3.4:80", "[::1]:80"; ":80" and "80"-less forms are not endpoints (see parse_listen).
  static std::optional<Endpoint> parse(std::string_view text);
  // Listen-address form as derper's -a: ":443" (all interfaces, IPv4 here), "ip:port", "[ip]:port".
  static std::optional<Endpoint> parse_listen(std::string_view text);
  static std::optional<Endpoint> from_sockaddr(const sockaddr* sa, socklen_t len);
  // Writes a sockaddr_in or sockaddr_in6 (by family) and returns its length.
  socklen_t to_sockaddr(sockaddr_storage& out) const;
  // Writes a sockaddr_in6 (IPv4 mapped) for use on an AF_INET6 socket.
  socklen_t to_sockaddr6(sockaddr_storage& out) const;
  std::string to_string() const;

  friend bool operator==(const Endpoint&, const Endpoint&) = default;
  friend auto operator<=>(const Endpoint&, const Endpoint&) = default;
};

}  // namespace derpd

template <>
struct std::hash<derpd::IpAddr> {
  std::size_t operator()(const derpd::IpAddr& a) const noexcept;
};
template <>
struct std::hash<derpd::Endpoint> {
  std::size_t operator()(const derpd::Endpoint& e) const noexcept;
};
