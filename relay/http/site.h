// The HTTP side of a DERP node, as a pure function: a parsed request head in, what to do out.
//
// Routes exactly as Tailscale's derper does on its DERP port:
//   /derp                     Upgrade: DERP -> 101 with Derp-Version / Derp-Public-Key, or nothing
//                             at all with Derp-Fast-Start: 1; Upgrade: websocket with subprotocol
//                             "derp" -> WebSocket 101; anything else -> 426 "DERP requires
//                             connection upgrade"; with DERP disabled -> 404
//   /derp/probe, /derp/latency-check   GET/HEAD -> 200 empty, Access-Control-Allow-Origin: *;
//                             other methods -> 405
//   /generate_204             204, echoing a valid X-Tailscale-Challenge as X-Tailscale-Response
//   /bootstrap-dns            the resolved names as JSON (Connection: close)
//   /robots.txt               "User-agent: *\nDisallow: /\n"
//   / and anything else       home page ("" default page, "blank", or a redirect URL), as
//                             derper's catch-all "/" pattern
// and on the plain-HTTP port (-http-port): /generate_204 as above, everything else GET/HEAD ->
// 302 to https://<Host><target>, other methods -> 400 "Use HTTPS".
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "relay/http/request.h"

namespace derpd::http {

struct SiteConfig {
  std::string server_key_hex;  // 64 lowercase hex (Derp-Public-Key)
  bool derp_enabled = true;
  std::string home;            // "", "blank", or an http(s):// URL
  bool port80 = false;         // this is the plain-HTTP redirect port
};

enum class RouteKind : std::uint8_t {
  kRespond,           // write `response`, then close if close_after, else read the next request
  kUpgradeDerp,       // write `response` (empty with fast start), then speak DERP
  kUpgradeWebSocket,  // write `response` (101), then speak DERP inside WebSocket binary messages
};

struct Route {
  RouteKind kind = RouteKind::kRespond;
  std::string response;   // complete HTTP response bytes
  bool close_after = false;
  bool fast_start = false;
  int status = 0;         // for logs and metrics
};

// `bootstrap_json` is the current /bootstrap-dns document ("{}" when there are no names).
Route route(const RequestHead& req, const SiteConfig& site, std::string_view bootstrap_json);

// Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2).
std::string websocket_accept(std::string_view key);

}  // namespace derpd::http
