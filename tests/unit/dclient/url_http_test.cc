#include <gtest/gtest.h>

#include <string>

#include "client/derp/http_upgrade.h"
#include "client/derp/url.h"

namespace derpd::derpclient {
namespace {

TEST(ParseUrl, HttpsDefaults) {
  auto u = parse_url("https://derp.example.com/derp");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "derp.example.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_FALSE(u->explicit_port);
  EXPECT_EQ(u->target, "/derp");
  EXPECT_EQ(u->host_header(), "derp.example.com");
  EXPECT_FALSE(u->host_is_ip());
}

TEST(ParseUrl, HttpWithPortAndQuery) {
  auto u = parse_url("http://127.0.0.1:3340/derp?x=1");
  ASSERT_TRUE(u.ok());
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 3340);
  EXPECT_EQ(u->target, "/derp?x=1");
  EXPECT_EQ(u->host_header(), "127.0.0.1:3340");
  EXPECT_TRUE(u->host_is_ip());
  EXPECT_EQ(u->to_string(), "http://127.0.0.1:3340/derp?x=1");
}

TEST(ParseUrl, Ipv6LiteralAndEmptyPath) {
  auto u = parse_url("HTTPS://[::1]:8443");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 8443);
  EXPECT_EQ(u->target, "/derp");
  EXPECT_EQ(u->host_header(), "[::1]:8443");
}

TEST(ParseUrl, Rejects) {
  for (const char* bad : {"", "derp.example.com/derp", "ftp://h/derp", "https://", "https://:443/derp",
                          "https://h:0/derp", "https://h:65536/derp", "https://h:12x/derp",
                          "https://user@h/derp", "https://h/derp#frag", "https://h/de rp", "https://[::1/derp",
                          "https://[1.2.3.4]/derp"}) {
    auto u = parse_url(bad);
    EXPECT_FALSE(u.ok()) << bad;
    if (!u.ok()) {
      EXPECT_EQ(u.error(), Error::kBadUrl) << bad;
    }
  }
}

TEST(UpgradeRequest, MatchesTheGoClientHeaders) {
  auto u = parse_url("https://derp.example.com/derp");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(upgrade_request(*u, false),
            "GET /derp HTTP/1.1\r\nHost: derp.example.com\r\nUser-Agent: derpd-client/1\r\n"
            "Connection: Upgrade\r\nUpgrade: DERP\r\n\r\n");
  EXPECT_EQ(upgrade_request(*u, true, "node1"),
            "GET /derp HTTP/1.1\r\nHost: derp.example.com\r\nUser-Agent: derpd-client/1\r\n"
            "Connection: Upgrade\r\nDerp-Fast-Start: 1\r\nIdeal-Node: node1\r\nUpgrade: DERP\r\n\r\n");
}

Bytes b(std::string_view s) { return as_bytes(s); }

TEST(ResponseHead, SwitchingProtocolsWithTrailingStream) {
  const std::string head =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\n"
      "Derp-Public-Key: ab\r\n\r\n";
  const std::string all = head + "\x01\x00\x00\x00\x28";
  auto r = parse_response_head(b(all));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 101);
  EXPECT_EQ(r->reason, "Switching Protocols");
  EXPECT_EQ(r->head_size, head.size());
  EXPECT_EQ(r->header("derp-version").value_or(""), "2");
  EXPECT_EQ(r->header("DERP-PUBLIC-KEY").value_or(""), "ab");
  EXPECT_FALSE(r->header("missing").has_value());
}

TEST(ResponseHead, NotFoundIsAHeadToo) {
  auto r = parse_response_head(b("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot here\n"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->reason, "Not Found");
}

TEST(ResponseHead, IncompleteThenComplete) {
  const std::string full = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n\r\n";
  for (std::size_t i = 0; i < full.size(); ++i) {
    auto r = parse_response_head(b(std::string_view(full).substr(0, i)));
    ASSERT_FALSE(r.ok()) << i;
    EXPECT_EQ(r.error(), http::ParseError::kIncomplete) << i;
  }
  EXPECT_TRUE(parse_response_head(b(full)).ok());
}

TEST(ResponseHead, GarbageIsMalformed) {
  for (std::string_view bad : {std::string_view("hello world\r\n\r\n"), std::string_view("HTTP/1.1 abc OK\r\n\r\n"),
                               std::string_view("\x01\x00\x00\x00\x28" "DERP", 9), std::string_view("SSH-2.0-x\r\n\r\n"),
                               std::string_view("HTTP/2 101 x\r\n\r\n")}) {
    auto r = parse_response_head(b(bad));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), http::ParseError::kMalformed);
  }
}

}  // namespace
}  // namespace derpd::derpclient
