// The STUN responder as a pure function: request bytes + addresses -> response bytes + the socket
// that must send them. No I/O, no allocation; the caller owns every buffer.
//
// Protocol flow (server side): a datagram arrives on one of up to four sockets of one address
// family: (ip_index, port_index) in {primary, alternate} x {primary, alternate}. Without an RFC
// 5780 alternate only (0, 0) exists. respond() decides what to answer and from which socket:
//  - Tailscale netcheck requests (Binding, SOFTWARE "tailnode", FINGERPRINT last and valid):
//    answered exactly as Tailscale's derper does (header + one XOR-MAPPED-ADDRESS, nothing else,
//    from the receiving socket), whatever other attributes the request carries;
//  - any other valid RFC 8489 Binding request: XOR-MAPPED-ADDRESS, MAPPED-ADDRESS,
//    RESPONSE-ORIGIN (the sending socket), OTHER-ADDRESS (only with an alternate: the socket
//    differing from the receiving one in both IP and port), SOFTWARE "derpd", FINGERPRINT;
//  - RFC 5780 CHANGE-REQUEST: flags 0x04 (change IP) and 0x02 (change port) pick the sending
//    socket relative to the receiving one; without an alternate, any set flag gets 420 (Unknown
//    Attribute) listing CHANGE-REQUEST. Zero flags are accepted with or without an alternate
//    (some clients always send the attribute). A CHANGE-REQUEST that is not 4 bytes gets 400;
//  - RESPONSE-PORT: the reply goes to the request's source IP at that port (RFC 5780 §7.5);
//    port 0 or a value that is not 4 bytes gets 400;
//  - PADDING (RFC 5780 §7.6) is understood. The RFC asks a server to pad its response to the
//    MTU; derpd includes a PADDING attribute but sizes it so the response is never larger than
//    the request datagram, the request's padding, or kMaxResponseSize: a STUN server must not be
//    a traffic amplifier, and a 548-byte cap makes MTU-sized fragmentation tests impossible
//    anyway. PADDING together with RESPONSE-PORT gets 400, as RFC 5780 §6.1 says;
//  - classic RFC 3489 requests (no magic cookie): MAPPED-ADDRESS and SOURCE-ADDRESS (the sending
//    socket), plus CHANGED-ADDRESS when an alternate exists; no SOFTWARE or FINGERPRINT. The
//    CHANGE-REQUEST rules above apply. RESPONSE-ADDRESS is not supported (420);
//  - unknown comprehension-required attributes (< 0x8000): 420 + UNKNOWN-ATTRIBUTES (the first
//    16). USERNAME, MESSAGE-INTEGRITY(-SHA256), USERHASH, REALM and NONCE are understood and
//    ignored: Binding requests are not authenticated. Error responses go from the receiving
//    socket to the request's source (RESPONSE-PORT is not applied) and carry SOFTWARE and
//    FINGERPRINT unless classic;
//  - everything else gets no answer, and a Disposition saying why: kNotStun for datagrams under
//    20 bytes, with either top bit set, or cookie-less ones that fail validation; kMalformed for
//    cookie-carrying ones that fail validation (lengths, attribute bounds, FINGERPRINT wrong or
//    not last); kIgnored for valid STUN that is not a Binding request (responses, indications,
//    other methods), and for an output buffer smaller than kMaxResponseSize.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"

namespace derpd::stun {

// Large enough for every response respond() builds (response PADDING is capped to fit).
inline constexpr std::size_t kMaxResponseSize = 548;

// The server's addresses for one address family. ip[1]/port[1] are meaningful only when
// has_alternate. For the receiving socket, an unspecified ip (wildcard bind) or port 0 is replaced
// by Request::local's; the other sockets' addresses must be concrete when has_alternate (they are
// advertised in OTHER-ADDRESS / CHANGED-ADDRESS and used as RESPONSE-ORIGIN).
struct ServerAddresses {
  IpAddr ip[2];
  std::uint16_t port[2] = {0, 0};
  bool has_alternate = false;

  // A server on `primary` and, when given, on `alternate`'s IP and port too (RFC 5780 service).
  static ServerAddresses of(const Endpoint& primary, const std::optional<Endpoint>& alternate = std::nullopt);
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
// never reads outside `req.datagram`; `out` must not overlap it. reply.size == 0 whenever the
// result is kNotStun, kMalformed or kIgnored. An IPv4 remote is answered with address family 1
// (Endpoint has already unmapped ::ffff:a.b.c.d).
Disposition respond(const Request& req, const ServerAddresses& server, std::span<std::byte> out, Reply& reply);

}  // namespace derpd::stun
