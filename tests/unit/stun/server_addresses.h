// The STUN server the responder tests and bench/micro/stun_bench.cc answer as: documentation
// addresses (RFC 5737, RFC 3849), never a real host. Header-only: it needs only derpd_stun.
#pragma once

#include "relay/base/endpoint.h"
#include "stun/responder.h"

namespace derpd::stun::test {

// Primary x.1:3478, alternate x.2:3479 (203.0.113.0/24 or 2001:db8::/32); the alternate's
// addresses are filled in either way, and used only when `alternate`.
inline ServerAddresses server_addresses(bool v6, bool alternate) {
  ServerAddresses s;
  s.ip[0] = *IpAddr::parse(v6 ? "2001:db8::1" : "203.0.113.1");
  s.ip[1] = *IpAddr::parse(v6 ? "2001:db8::2" : "203.0.113.2");
  s.port[0] = 3478;
  s.port[1] = 3479;
  s.has_alternate = alternate;
  return s;
}

}  // namespace derpd::stun::test
