// DERP server URLs: "https://derp.example.com/derp", "http://127.0.0.1:3340/derp", "https://[::1]:8443/derp".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "client/derp/error.h"
#include "relay/base/result.h"

namespace derpd::derpclient {

struct DerpUrl {
  bool tls = true;            // https (TLS) or http (plaintext)
  std::string host;           // DNS name or IP literal, IPv6 without brackets
  std::uint16_t port = 443;   // explicit, or 443 / 80 by scheme
  bool explicit_port = false; // the URL named the port (then the Host header carries it, as in Go)
  std::string target;         // path and query: "/derp" (an empty path becomes "/derp")

  bool host_is_ip() const;
  // The Host header value: "host" or "host:port", IPv6 in brackets.
  std::string host_header() const;
  // "https://host[:port]/derp".
  std::string to_string() const;
};

// kBadUrl for other schemes, user info, fragments, an empty host, port 0 or out of range.
Result<DerpUrl, Error> parse_url(std::string_view text);

}  // namespace derpd::derpclient
