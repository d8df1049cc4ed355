#include "relay/http/request.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace derpd::http {
namespace {

Result<RequestHead, ParseError> parse(std::string_view s) { return parse_request_head(as_bytes(s)); }

// What Tailscale's DERP client writes with fast start (Go's Request.Write: Host, User-Agent, then
// the other headers sorted by name), followed in the same write by its first DERP frame
// (frameClientInfo = 0x02, a 4-byte big-endian length, then the key and the sealed box).
std::string fast_start_request() {
  std::string s =
      "GET /derp HTTP/1.1\r\n"
      "Host: derp.example.com\r\n"
      "User-Agent: Go-http-client/1.1\r\n"
      "Connection: Upgrade\r\n"
      "Derp-Fast-Start: 1\r\n"
      "Upgrade: DERP\r\n"
      "\r\n";
  return s;
}

std::string client_info_frame() {
  std::string f = {'\x02', '\x00', '\x00', '\x00', '\x48'};
  for (int i = 0; i < 0x48; ++i) f.push_back(static_cast<char>(i * 37 + 1));  // includes 0x00, \r, \n
  f[10] = '\r';
  f[11] = '\n';
  f[12] = '\r';
  f[13] = '\n';
  return f;
}

TEST(RequestHead, FastStartUpgradeEndsWhereTheDerpFrameBegins) {
  const std::string head = fast_start_request();
  const std::string frame = client_info_frame();
  const std::string wire = head + frame;
  auto r = parse(wire);
  ASSERT_TRUE(r.ok()) << to_string(r.error());
  EXPECT_EQ(r->head_size, head.size());
  EXPECT_EQ(wire.substr(r->head_size), frame) << "the bytes after the head belong to DERP";
  EXPECT_EQ(r->method, "GET");
  EXPECT_EQ(r->path, "/derp");
  EXPECT_EQ(r->target, "/derp");
  EXPECT_TRUE(r->query.empty());
  EXPECT_TRUE(r->upgrade);
  EXPECT_EQ(r->header("upgrade"), "DERP") << "lookup ignores case";
  EXPECT_EQ(r->header("DERP-FAST-START"), "1");
  EXPECT_TRUE(r->header_has_token("connection", "upgrade"));
  EXPECT_EQ(r->header("Host"), "derp.example.com");
  EXPECT_FALSE(r->header("Ideal-Node").has_value());
  EXPECT_EQ(r->headers().size(), 5u);
  EXPECT_FALSE(r->has_body());
}

TEST(RequestHead, EveryPrefixOfTheHeadIsIncomplete) {
  const std::string head = fast_start_request();
  for (std::size_t n = 0; n < head.size(); ++n) {
    auto r = parse(std::string_view(head).substr(0, n));
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.error(), ParseError::kIncomplete) << "prefix of " << n << " bytes";
  }
}

TEST(RequestHead, PlainGetWithQueryAndKeepAlive) {
  auto r = parse("GET /metrics?name%5B%5D=x&y=2 HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nAccept: text/plain\r\n\r\n");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->path, "/metrics");
  EXPECT_EQ(r->query, "name%5B%5D=x&y=2");
  EXPECT_TRUE(r->keep_alive);
  EXPECT_FALSE(r->upgrade);
  EXPECT_EQ(r->version_major, 1);
  EXPECT_EQ(r->version_minor, 1);
}

TEST(RequestHead, PipelinedRequestIsLeftForTheNextCall) {
  const std::string first = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string second = "GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  const std::string wire = first + second;
  auto r = parse(wire);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->head_size, first.size());
  auto r2 = parse(std::string_view(wire).substr(r->head_size));
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->path, "/b");
  EXPECT_FALSE(r2->keep_alive);
}

TEST(RequestHead, BodyIsNotPartOfTheHead) {
  const std::string head = "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
  const std::string wire = head + "hello";  // the result's views point into it: keep it alive
  auto r = parse(wire);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->head_size, head.size());
  ASSERT_TRUE(r->content_length.has_value());
  EXPECT_EQ(*r->content_length, 5u);
  EXPECT_TRUE(r->has_body());
  auto c = parse("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->chunked);
}

TEST(RequestHead, Http10ClosesByDefault) {
  auto r = parse("GET / HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->keep_alive);
  EXPECT_EQ(r->version_minor, 0);
}

TEST(RequestHead, HeaderValuesAreTrimmedAndTokensListed) {
  auto r = parse("GET / HTTP/1.1\r\nConnection:  keep-alive, Upgrade \r\nX-Empty:\r\n\r\n");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->header("connection"), "keep-alive, Upgrade");
  EXPECT_TRUE(r->header_has_token("Connection", "upgrade"));
  EXPECT_TRUE(r->header_has_token("Connection", "KEEP-ALIVE"));
  EXPECT_FALSE(r->header_has_token("Connection", "close"));
  EXPECT_EQ(r->header("x-empty"), "");
}

struct Garbage {
  const char* name;
  std::string bytes;
};

class GarbageTest : public ::testing::TestWithParam<Garbage> {};

TEST_P(GarbageTest, IsMalformed) {
  auto r = parse(GetParam().bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), ParseError::kMalformed);
}

INSTANTIATE_TEST_SUITE_P(
    RequestHead, GarbageTest,
    ::testing::Values(
        // A TLS ClientHello sent to the plain-HTTP port.
        Garbage{"tls_client_hello", std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11)},
        // A STUN binding request sent over TCP.
        Garbage{"stun", std::string("\x00\x01\x00\x00\x21\x12\xa4\x42" "abcdefghijkl", 20)},
        Garbage{"bad_method", "FROB / HTTP/1.1\r\n\r\n"},
        Garbage{"bad_version", "GET / HTTP/9x\r\n\r\n"},
        Garbage{"no_target", "GET  HTTP/1.1\r\n\r\n"},
        Garbage{"control_in_header_name", "GET / HTTP/1.1\r\nX\x01Y: z\r\n\r\n"},
        Garbage{"space_before_colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n"},
        Garbage{"bad_content_length", "POST / HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n"},
        Garbage{"two_content_lengths", "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"},
        Garbage{"folded_header", "GET / HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n"},
        Garbage{"response_not_request", "HTTP/1.1 200 OK\r\n\r\n"}),
    [](const ::testing::TestParamInfo<Garbage>& i) { return std::string(i.param.name); });

TEST(RequestHead, OversizedHeadIsTooLargeEvenIfItWouldEndLater) {
  std::string big = "GET / HTTP/1.1\r\nX-Pad: " + std::string(kMaxHeadSize, 'a') + "\r\n\r\n";
  auto r = parse(big);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), ParseError::kTooLarge);
  // Right under the cap it is fine.
  std::string fits = "GET / HTTP/1.1\r\nX-Pad: ";
  fits += std::string(kMaxHeadSize - fits.size() - 4, 'a') + "\r\n\r\n";
  ASSERT_EQ(fits.size(), kMaxHeadSize);
  auto ok = parse(fits);
  ASSERT_TRUE(ok.ok()) << to_string(ok.error());
  EXPECT_EQ(ok->head_size, kMaxHeadSize);
  // Short but unfinished is only incomplete.
  auto partial = parse(std::string_view(big).substr(0, 100));
  ASSERT_FALSE(partial.ok());
  EXPECT_EQ(partial.error(), ParseError::kIncomplete);
}

TEST(RequestHead, TooManyHeadersIsRefused) {
  std::string s = "GET / HTTP/1.1\r\n";
  for (std::size_t i = 0; i <= kMaxHeaders; ++i) s += "X-" + std::to_string(i) + ": v\r\n";
  s += "\r\n";
  auto r = parse(s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), ParseError::kTooManyHeaders);
}

TEST(RequestHead, BareLineFeedsAreAccepted) {
  const std::string head = "GET /derp HTTP/1.1\nUpgrade: DERP\nConnection: Upgrade\n\n";
  const std::string wire = head + "\x02rest";
  auto r = parse(wire);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->head_size, head.size());
}

}  // namespace
}  // namespace derpd::http
