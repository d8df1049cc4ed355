#include "relay/http/site.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <array>
#include <vector>

#include "relay/http/response.h"

namespace derpd::http {

namespace {

constexpr std::string_view kHomePage =
    "<html><body>\n<h1>DERP</h1>\n<p>\n  This is a DERP relay (derpd): it relays end-to-end encrypted\n"
    "  traffic between Tailscale clients that cannot reach each other directly, and answers STUN.\n</p>\n"
    "</body>\n</html>\n";

// Headers derper adds to every page a browser may show (tsweb.AddBrowserHeaders).
constexpr Header kBrowserHeaders[] = {
    {"Strict-Transport-Security", "max-age=63072000; includeSubDomains"},
    {"Content-Security-Policy",
     "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'; block-all-mixed-content; "
     "object-src 'none'"},
    {"X-Frame-Options", "DENY"},
    {"X-Content-Type-Options", "nosniff"},
};

bool is_get_or_head(const RequestHead& r) { return r.method == "GET" || r.method == "HEAD"; }

Body body_mode(const RequestHead& r) { return r.method == "HEAD" ? Body::kHeadOnly : Body::kWith; }

Route respond(const RequestHead& req, int status, std::vector<Header> headers, std::string_view body,
              bool force_close = false) {
  Route r;
  r.status = status;
  r.close_after = force_close || !req.keep_alive || req.has_body();
  if (r.close_after) headers.push_back({"Connection", "close"});
  Body mode = status == 204 || status == 304 ? Body::kNone : body_mode(req);
  append_response(r.response, status, headers, body, mode);
  return r;
}

Route text(const RequestHead& req, int status, std::string_view body, bool close = false) {
  return respond(req, status, {{"Content-Type", "text/plain; charset=utf-8"}, {"X-Content-Type-Options", "nosniff"}},
                 body, close);
}

bool challenge_ok(std::string_view c) {
  if (c.size() > 64) return false;
  for (char ch : c) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '-' || ch == '_' || ch == ':';
    if (!ok) return false;
  }
  return true;
}

Route no_content(const RequestHead& req) {
  std::vector<Header> h{{"Cache-Control", "no-cache, no-store, must-revalidate, no-transform, max-age=0"}};
  std::string value;
  if (auto c = req.header("X-Tailscale-Challenge"); c && !c->empty() && challenge_ok(*c)) {
    value = "response " + std::string(*c);
    h.push_back({"X-Tailscale-Response", value});
  }
  return respond(req, 204, std::move(h), {});
}

Route probe(const RequestHead& req) {
  if (!is_get_or_head(req)) return text(req, 405, "bogus probe method\n");
  return respond(req, 200, {{"Access-Control-Allow-Origin", "*"}, {"Content-Type", "text/plain; charset=utf-8"}}, {});
}

Route derp(const RequestHead& req, const SiteConfig& site) {
  if (!site.derp_enabled) return text(req, 404, "derp server disabled\n");
  std::string_view up = req.header("Upgrade").value_or("");
  const bool ws = iequals(up, "websocket");
  if (ws && req.header("Sec-WebSocket-Protocol").value_or("").find("derp") != std::string_view::npos) {
    auto key = req.header("Sec-WebSocket-Key");
    if (!key || key->empty()) return text(req, 400, "missing Sec-WebSocket-Key\n", true);
    Route r;
    r.kind = RouteKind::kUpgradeWebSocket;
    r.status = 101;
    std::string accept = websocket_accept(*key);
    Header h[] = {{"Upgrade", "websocket"}, {"Connection", "Upgrade"}, {"Sec-WebSocket-Accept", accept},
                  {"Sec-WebSocket-Protocol", "derp"}};
    append_response(r.response, 101, h, {}, Body::kNone);
    return r;
  }
  if (!ws && !iequals(up, "derp")) return text(req, 426, "DERP requires connection upgrade\n");
  Route r;
  r.kind = RouteKind::kUpgradeDerp;
  r.status = 101;
  r.fast_start = req.header("Derp-Fast-Start").value_or("") == "1";
  if (!r.fast_start) {
    Header h[] = {{"Upgrade", "DERP"}, {"Connection", "Upgrade"}, {"Derp-Version", "2"},
                  {"Derp-Public-Key", site.server_key_hex}};
    append_response(r.response, 101, h, {}, Body::kNone);
  }
  return r;
}

Route home(const RequestHead& req, const SiteConfig& site) {
  if (site.home.rfind("http://", 0) == 0 || site.home.rfind("https://", 0) == 0) {
    return respond(req, 302, {{"Location", site.home}, {"Content-Type", "text/html; charset=utf-8"}}, {});
  }
  std::vector<Header> h(std::begin(kBrowserHeaders), std::end(kBrowserHeaders));
  h.push_back({"Content-Type", "text/html; charset=utf-8"});
  return respond(req, 200, std::move(h), site.home == "blank" ? std::string_view{} : kHomePage);
}

Route port80(const RequestHead& req) {
  if (req.path == "/generate_204") return no_content(req);
  if (!is_get_or_head(req)) return text(req, 400, "Use HTTPS\n");
  std::string_view host = req.header("Host").value_or("");
  // A Host that could split the Location header is refused by the response builder; answer 400.
  std::string target = "https://" + std::string(host) + std::string(req.target);
  Route r = respond(req, 302, {{"Location", target}, {"Content-Type", "text/html; charset=utf-8"}}, {});
  if (r.response.empty() || host.empty()) return text(req, 400, "bad Host\n", true);
  return r;
}

}  // namespace

Route route(const RequestHead& req, const SiteConfig& site, std::string_view bootstrap_json) {
  if (site.port80) return port80(req);
  const std::string_view p = req.path;
  if (p == "/derp/probe" || p == "/derp/latency-check") return probe(req);
  if (p == "/derp") return derp(req, site);
  if (p == "/generate_204") return no_content(req);
  if (p == "/robots.txt") {
    std::vector<Header> h(std::begin(kBrowserHeaders), std::end(kBrowserHeaders));
    h.push_back({"Content-Type", "text/plain; charset=utf-8"});
    return respond(req, 200, std::move(h), "User-agent: *\nDisallow: /\n");
  }
  if (p == "/bootstrap-dns") {
    std::vector<Header> h(std::begin(kBrowserHeaders), std::end(kBrowserHeaders));
    h.push_back({"Content-Type", "application/json"});
    return respond(req, 200, std::move(h), bootstrap_json, /*force_close=*/true);
  }
  // derper's mux sends every other path to the home handler ("/" is a catch-all pattern).
  return home(req, site);
}

std::string websocket_accept(std::string_view key) {
  static constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string in(key);
  in += kGuid;
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(in.data()), in.size(), digest);
  unsigned char out[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
  int n = EVP_EncodeBlock(out, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
}

}  // namespace derpd::http
