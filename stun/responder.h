// The STUN responder as a pure function: request bytes + addresses -> response bytes + the socket
// that must send them. No I/O, no allocation; the caller owns every buffer.
//
// Protocol flow (server side): a datagram arrives on one of up to four sockets of one address
// family: (ip_index, port_index) in {primary, alternate} x {primary, alternate}. Without an RFC
// 5780 alternate only (0, 0) exists. respond() decides what to answer and from which socket:
//  - Tailscale netcheck requests (Binding, SOFTWARE "tailnode", FINGERPRINT last): answered exactly
//    as Tailscale's derper does (header + one XOR-MAPPED-ADDRESS, nothing else);
//  - any other valid RFC 8489 Binding request: XOR-MAPPED-ADDRESS, MAPPED-ADDRESS,
//    RESPONSE-ORIGIN, OTHER-ADDRESS (only with an alternate), SOFTWARE, FINGERPRINT;
//  - RFC 5780 CHANGE-REQUEST: answered from the socket the flags select; without an alternate,
//    420 (Unknown Attribute) listing CHANGE-REQUEST; RESPONSE-PORT redirects the reply's port;
//  - classic RFC 3489 requests (no magic cookie): MAPPED-ADDRESS, plus SOURCE-ADDRESS and
//    CHANGED-ADDRESS when an alternate exists;
//  - unknown comprehension-required attributes: 420 + UNKNOWN-ATTRIBUTES;
//  - everything else (not STUN, malformed, not a request): no answer, and a Disposition saying why.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"

namespace derpd::stun {

// Large enough for every response respond() builds (a reply never echoes request padding).
inline constexpr std::size_t kMaxResponseSize = 548;

// The server's addresses for one address family. ip[1]/port[1] are meaningful only when
// has_alternate; an unspecified ip (wildcard bind) is replaced by Request::local's address.
struct ServerAddresses {
  IpAddr ip[2];
  std::uint16_t port[2] = {0, 0};
  bool has_alternate = false;
};

struct SocketIndex {
  std::uint8_t ip = 0;    // 0 primary, 1 alternate
  std::uint8_t port = 0;  // 0 primary, 1 alternate
  friend bool operator==(const SocketIndex&, const SocketIndex&) = default;
};

struct Request {
  Bytes datagram;         // the received bytes (aliases the receive buffer)
  Endpoint remote;        // where it came from
  Endpoint local;         // where it arrived (real destination address, e.g. from IP_PKTINFO)
  SocketIndex received_on;
};

// Why a datagram was answered or not; doubles as the `disposition` label of stun_requests_total.
enum class Disposition : std::uint8_t {
  kSuccess,        // Binding success response built
  kSuccessClassic, // RFC 3489 response built
  kErrorResponse,  // error response built (420 unknown attribute, 400 bad request)
  kNotStun,        // not a STUN message at all
  kMalformed,      // looks like STUN but fails validation (lengths, attributes, fingerprint)
  kIgnored,        // valid STUN but nothing to answer (responses, indications, other methods)
  kCount,
};
std::string_view to_string(Disposition d);

struct Reply {
  std::size_t size = 0;     // bytes written to the output buffer; 0 = send nothing
  SocketIndex send_from;    // which local socket sends it
  Endpoint destination;     // where to send it (remote, or remote IP with RESPONSE-PORT)
};

// Builds the answer to `req` into `out` (at least kMaxResponseSize bytes). Never allocates,
// never reads outside `req.datagram`.
Disposition respond(const Request& req, const ServerAddresses& server, std::span<std::byte> out, Reply& reply);

}  // namespace derpd::stun
