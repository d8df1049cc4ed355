#include "relay/http/site.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace derpd::http {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

const std::string kKey(64, 'a');

struct Routed {
  std::string raw;  // keeps the views of `head` alive
  Route r;
};

Routed go(std::string raw, SiteConfig site = {kKey, true, "", false}, std::string_view dns = "{}") {
  Routed out{std::move(raw), {}};
  auto head = parse_request_head(as_bytes(out.raw));
  EXPECT_TRUE(head.ok()) << out.raw;
  if (head.ok()) out.r = route(*head, site, dns);
  return out;
}

TEST(Site, DerpUpgradeAnswers101WithVersionAndKey) {
  auto [raw, r] = go("GET /derp HTTP/1.1\r\nHost: d\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n");
  EXPECT_EQ(r.kind, RouteKind::kUpgradeDerp);
  EXPECT_FALSE(r.fast_start);
  EXPECT_THAT(r.response, StartsWith("HTTP/1.1 101 Switching Protocols\r\n"));
  EXPECT_THAT(r.response, HasSubstr("Upgrade: DERP\r\n"));
  EXPECT_THAT(r.response, HasSubstr("Connection: Upgrade\r\n"));
  EXPECT_THAT(r.response, HasSubstr("Derp-Version: 2\r\n"));
  EXPECT_THAT(r.response, HasSubstr("Derp-Public-Key: " + kKey + "\r\n"));
}

TEST(Site, UpgradeValueIsCaseInsensitiveAndMethodIsNotChecked) {
  auto [raw, r] = go("POST /derp HTTP/1.1\r\nUpgrade: dErP\r\nConnection: Upgrade\r\n\r\n");
  EXPECT_EQ(r.kind, RouteKind::kUpgradeDerp);
}

TEST(Site, FastStartWritesNoHttpResponse) {
  auto [raw, r] = go("GET /derp HTTP/1.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Fast-Start: 1\r\n\r\n");
  EXPECT_EQ(r.kind, RouteKind::kUpgradeDerp);
  EXPECT_TRUE(r.fast_start);
  EXPECT_TRUE(r.response.empty());
}

TEST(Site, NoUpgradeGets426) {
  auto [raw, r] = go("GET /derp HTTP/1.1\r\nHost: d\r\n\r\n");
  EXPECT_EQ(r.kind, RouteKind::kRespond);
  EXPECT_EQ(r.status, 426);
  EXPECT_THAT(r.response, HasSubstr("\r\n\r\nDERP requires connection upgrade\n"));
  auto [raw2, r2] = go("GET /derp HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n");
  EXPECT_EQ(r2.status, 426);
}

TEST(Site, DerpDisabledIs404) {
  auto [raw, r] = go("GET /derp HTTP/1.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n", {kKey, false, "", false});
  EXPECT_EQ(r.status, 404);
}

TEST(Site, WebSocketWithDerpSubprotocolUpgrades) {
  // RFC 6455 §1.3 example key and accept value.
  auto [raw, r] = go(
      "GET /derp HTTP/1.1\r\nHost: d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: derp\r\nSec-WebSocket-Version: 13\r\n\r\n");
  EXPECT_EQ(r.kind, RouteKind::kUpgradeWebSocket);
  EXPECT_THAT(r.response, StartsWith("HTTP/1.1 101 "));
  EXPECT_THAT(r.response, HasSubstr("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
  EXPECT_THAT(r.response, HasSubstr("Sec-WebSocket-Protocol: derp\r\n"));
}

TEST(Site, WebSocketWithoutDerpSubprotocolFallsBackToDerpHandler) {
  auto [raw, r] = go(
      "GET /derp HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\n\r\n");
  // derper: the base handler accepts "websocket" as an upgrade value and speaks raw DERP.
  EXPECT_EQ(r.kind, RouteKind::kUpgradeDerp);
}

TEST(Site, ProbeEndpoints) {
  for (const char* path : {"/derp/probe", "/derp/latency-check"}) {
    auto [raw, r] = go(std::string("GET ") + path + " HTTP/1.1\r\n\r\n");
    EXPECT_EQ(r.status, 200) << path;
    EXPECT_THAT(r.response, HasSubstr("Access-Control-Allow-Origin: *\r\n"));
    EXPECT_THAT(r.response, HasSubstr("Content-Length: 0\r\n"));
    auto [raw2, h] = go(std::string("HEAD ") + path + " HTTP/1.1\r\n\r\n");
    EXPECT_EQ(h.status, 200);
    auto [raw3, p] = go(std::string("POST ") + path + " HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    EXPECT_EQ(p.status, 405);
  }
}

TEST(Site, Generate204EchoesOnlyValidChallenges) {
  auto [raw, r] = go("GET /generate_204 HTTP/1.1\r\nX-Tailscale-Challenge: abc-1.2_3:x\r\n\r\n");
  EXPECT_EQ(r.status, 204);
  EXPECT_THAT(r.response, HasSubstr("X-Tailscale-Response: response abc-1.2_3:x\r\n"));
  EXPECT_THAT(r.response, Not(HasSubstr("Content-Length")));
  auto [raw2, bad] = go("GET /generate_204 HTTP/1.1\r\nX-Tailscale-Challenge: a b\r\n\r\n");
  EXPECT_EQ(bad.status, 204);
  EXPECT_THAT(bad.response, Not(HasSubstr("X-Tailscale-Response")));
  auto [raw3, lng] = go("GET /generate_204 HTTP/1.1\r\nX-Tailscale-Challenge: " + std::string(65, 'a') + "\r\n\r\n");
  EXPECT_THAT(lng.response, Not(HasSubstr("X-Tailscale-Response")));
  auto [raw4, ok64] = go("GET /generate_204 HTTP/1.1\r\nX-Tailscale-Challenge: " + std::string(64, 'a') + "\r\n\r\n");
  EXPECT_THAT(ok64.response, HasSubstr("X-Tailscale-Response"));
}

TEST(Site, RobotsBootstrapAndHome) {
  auto [raw, robots] = go("GET /robots.txt HTTP/1.1\r\n\r\n");
  EXPECT_THAT(robots.response, HasSubstr("\r\n\r\nUser-agent: *\nDisallow: /\n"));
  EXPECT_THAT(robots.response, HasSubstr("X-Frame-Options: DENY\r\n"));
  auto [raw2, dns] = go("GET /bootstrap-dns HTTP/1.1\r\n\r\n", {kKey, true, "", false}, R"({"a.example":["192.0.2.1"]})");
  EXPECT_THAT(dns.response, HasSubstr("Content-Type: application/json\r\n"));
  EXPECT_THAT(dns.response, HasSubstr(R"({"a.example":["192.0.2.1"]})"));
  EXPECT_TRUE(dns.close_after);
  auto [raw3, home] = go("GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(home.status, 200);
  EXPECT_THAT(home.response, HasSubstr("<h1>DERP</h1>"));
  auto [raw4, other] = go("GET /anything HTTP/1.1\r\n\r\n");
  EXPECT_EQ(other.status, 200) << "derper's '/' pattern catches every other path";
  auto [raw5, blank] = go("GET / HTTP/1.1\r\n\r\n", {kKey, true, "blank", false});
  EXPECT_THAT(blank.response, HasSubstr("Content-Length: 0\r\n"));
  auto [raw6, redir] = go("GET / HTTP/1.1\r\n\r\n", {kKey, true, "https://example.com/", false});
  EXPECT_EQ(redir.status, 302);
  EXPECT_THAT(redir.response, HasSubstr("Location: https://example.com/\r\n"));
}

TEST(Site, Port80RedirectsToHttpsButServes204) {
  SiteConfig p80{kKey, true, "", true};
  auto [raw, r] = go("GET /some/path?q=1 HTTP/1.1\r\nHost: derp.example.com\r\n\r\n", p80);
  EXPECT_EQ(r.status, 302);
  EXPECT_THAT(r.response, HasSubstr("Location: https://derp.example.com/some/path?q=1\r\n"));
  auto [raw2, n] = go("GET /generate_204 HTTP/1.1\r\nHost: x\r\n\r\n", p80);
  EXPECT_EQ(n.status, 204);
  auto [raw3, post] = go("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", p80);
  EXPECT_EQ(post.status, 400);
  auto [raw4, nohost] = go("GET / HTTP/1.0\r\n\r\n", p80);
  EXPECT_EQ(nohost.status, 400);
}

TEST(Site, ConnectionCloseIsHonoured) {
  auto [raw, r] = go("GET /robots.txt HTTP/1.1\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(r.close_after);
  auto [raw2, k] = go("GET /robots.txt HTTP/1.1\r\n\r\n");
  EXPECT_FALSE(k.close_after);
}

}  // namespace
}  // namespace derpd::http
