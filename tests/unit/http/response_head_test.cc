#include "relay/http/response_head.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace derpd::http {
namespace {

Result<ResponseHead, ParseError> parse(std::string_view s) { return parse_response_head(as_bytes(s)); }

// What derper writes when it accepts an upgrade without fast start (derpserver/handler.go):
// the head, then at once the ServerKey frame (frameServerKey = 0x01, length 0x28, "DERP🔑", key).
const std::string kDerperHead =
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Upgrade: DERP\r\n"
    "Connection: Upgrade\r\n"
    "Derp-Version: 2\r\n"
    "Derp-Public-Key: 1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988\r\n"
    "\r\n";

std::string server_key_frame() {
  std::string f = {'\x01', '\x00', '\x00', '\x00', '\x28'};
  f += "DERP\xf0\x9f\x94\x91";
  for (int i = 0; i < 32; ++i) f.push_back(static_cast<char>(i == 3 ? '\n' : i * 29));  // 0x00, \r, \n
  return f;
}

TEST(ResponseHead, DerperUpgradeEndsWhereTheDerpStreamBegins) {
  const std::string wire = kDerperHead + server_key_frame();
  auto r = parse(wire);
  ASSERT_TRUE(r.ok()) << to_string(r.error());
  EXPECT_EQ(r->head_size, kDerperHead.size());
  EXPECT_EQ(wire.substr(r->head_size), server_key_frame());
  EXPECT_EQ(r->status, 101);
  EXPECT_EQ(r->reason, "Switching Protocols");
  EXPECT_EQ(r->version_major, 1);
  EXPECT_EQ(r->version_minor, 1);
  EXPECT_TRUE(r->upgrade);
  EXPECT_EQ(r->headers().size(), 4u);
  EXPECT_EQ(r->header("derp-version"), "2") << "lookup ignores case";
  EXPECT_EQ(r->header("DERP-PUBLIC-KEY"), "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988");
  EXPECT_TRUE(r->header_has_token("connection", "UPGRADE"));
  EXPECT_FALSE(r->header("Ideal-Node").has_value());
}

// A split read: every prefix shorter than the head is only incomplete, also when the stream's
// first bytes arrive with the head's last ones.
TEST(ResponseHead, EveryPrefixOfTheHeadIsIncomplete) {
  const std::string wire = kDerperHead + server_key_frame();
  for (std::size_t n = 0; n < kDerperHead.size(); ++n) {
    auto r = parse(std::string_view(wire).substr(0, n));
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.error(), ParseError::kIncomplete) << "prefix of " << n << " bytes";
  }
  for (std::size_t n = kDerperHead.size(); n <= wire.size(); ++n) {
    auto r = parse(std::string_view(wire).substr(0, n));
    ASSERT_TRUE(r.ok()) << n;
    EXPECT_EQ(r->head_size, kDerperHead.size()) << n;
  }
}

TEST(ResponseHead, ErrorStatusWithBodyAndNoReason) {
  const std::string head = "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 31\r\nConnection: close\r\n\r\n";
  const std::string wire = head + "DERP requires connection upgrade";
  auto r = parse(wire);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 426);
  EXPECT_EQ(r->reason, "Upgrade Required");
  EXPECT_EQ(r->head_size, head.size()) << "the body is not part of the head";
  EXPECT_EQ(r->content_length, 31u);
  EXPECT_TRUE(r->has_body());
  EXPECT_FALSE(r->keep_alive);
  EXPECT_FALSE(r->upgrade);

  auto bare = parse("HTTP/1.0 204\r\n\r\n");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->status, 204);
  EXPECT_TRUE(bare->reason.empty());
  EXPECT_EQ(bare->version_minor, 0);
  EXPECT_FALSE(bare->has_body());
}

TEST(ResponseHead, DuplicateHeadersAreKeptInOrderAndTheFirstIsFound) {
  auto r = parse("HTTP/1.1 101 Switching Protocols\r\nDerp-Public-Key: aa\r\nderp-public-key: bb\r\n"
                 "Connection: keep-alive\r\nConnection:  Upgrade \r\n\r\n");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->headers().size(), 4u);
  EXPECT_EQ(r->header("Derp-Public-Key"), "aa");
  EXPECT_EQ(r->headers()[1].value, "bb");
  EXPECT_EQ(r->headers()[3].value, "Upgrade") << "values are trimmed";
  EXPECT_TRUE(r->header_has_token("Connection", "upgrade")) << "every line of a repeated header counts";
}

TEST(ResponseHead, BareLineFeedsAreAccepted) {
  const std::string head = "HTTP/1.1 101 Switching Protocols\nUpgrade: DERP\n\n";
  const std::string wire = head + "\x01rest";  // the result's views point into it: keep it alive
  auto r = parse(wire);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->head_size, head.size());
  EXPECT_EQ(r->header("upgrade"), "DERP");
}

struct Bad {
  const char* name;
  std::string bytes;
};

class BadResponseTest : public ::testing::TestWithParam<Bad> {};

TEST_P(BadResponseTest, IsMalformed) {
  auto r = parse(GetParam().bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), ParseError::kMalformed);
}

INSTANTIATE_TEST_SUITE_P(
    ResponseHead, BadResponseTest,
    ::testing::Values(
        Bad{"text", "hello world\r\n\r\n"},
        Bad{"request_not_response", "GET /derp HTTP/1.1\r\nHost: x\r\n\r\n"},
        // The server spoke DERP at once (a fast-start server to a client that did not ask).
        Bad{"derp_frame", std::string("\x01\x00\x00\x00\x28" "DERP", 9)},
        Bad{"tls_alert", std::string("\x15\x03\x03\x00\x02\x02\x46", 7)},
        Bad{"ssh_banner", "SSH-2.0-OpenSSH_9.2\r\n\r\n"},
        Bad{"status_not_a_number", "HTTP/1.1 abc OK\r\n\r\n"},
        Bad{"status_four_digits", "HTTP/1.1 1010 Switching\r\n\r\n"},
        Bad{"no_space_after_version", "HTTP/1.1101 Switching\r\n\r\n"},
        Bad{"http2_version", "HTTP/2 101 x\r\n\r\n"},
        Bad{"version_2_0", "HTTP/2.0 101 x\r\n\r\n"},
        Bad{"version_0_9", "HTTP/0.9 200 OK\r\n\r\n"},
        Bad{"lowercase_http", "http/1.1 101 x\r\n\r\n"},
        Bad{"control_in_header_name", "HTTP/1.1 101 x\r\nX\x01Y: z\r\n\r\n"},
        Bad{"nul_in_header_value", std::string("HTTP/1.1 101 x\r\nX: a\0b\r\n\r\n", 25)},
        Bad{"empty_header_name", "HTTP/1.1 101 x\r\n: v\r\n\r\n"},
        Bad{"space_before_colon", "HTTP/1.1 101 x\r\nUpgrade : DERP\r\n\r\n"},
        Bad{"folded_header", "HTTP/1.1 101 x\r\nX-A: one\r\n two\r\n\r\n"},
        Bad{"bad_content_length", "HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n"},
        Bad{"two_content_lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"},
        Bad{"length_and_chunked", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"}),
    [](const ::testing::TestParamInfo<Bad>& i) { return std::string(i.param.name); });

TEST(ResponseHead, OversizedHeadIsTooLargeEvenIfItWouldEndLater) {
  const std::string start = "HTTP/1.1 101 Switching Protocols\r\nX-Pad: ";
  std::string fits = start + std::string(kMaxHeadSize - start.size() - 4, 'a') + "\r\n\r\n";
  ASSERT_EQ(fits.size(), kMaxHeadSize);
  auto ok = parse(fits + "DERP stream");
  ASSERT_TRUE(ok.ok()) << to_string(ok.error());
  EXPECT_EQ(ok->head_size, kMaxHeadSize);

  // One byte more and the head no longer ends within the cap, however much follows.
  std::string over = start + std::string(kMaxHeadSize - start.size() - 3, 'a') + "\r\n\r\n";
  auto r = parse(over);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), ParseError::kTooLarge);

  // A head that never ends: incomplete while short, too large from the cap on.
  const std::string endless = start + std::string(4 * kMaxHeadSize, 'a');
  auto shorter = parse(std::string_view(endless).substr(0, kMaxHeadSize - 1));
  ASSERT_FALSE(shorter.ok());
  EXPECT_EQ(shorter.error(), ParseError::kIncomplete);
  auto at_cap = parse(std::string_view(endless).substr(0, kMaxHeadSize));
  ASSERT_FALSE(at_cap.ok());
  EXPECT_EQ(at_cap.error(), ParseError::kTooLarge);
  auto all = parse(endless);
  ASSERT_FALSE(all.ok());
  EXPECT_EQ(all.error(), ParseError::kTooLarge);
}

TEST(ResponseHead, OversizedReasonIsTooLarge) {
  const std::string wire = "HTTP/1.1 101 " + std::string(kMaxHeadSize, 'x') + "\r\n\r\n";
  auto r = parse(wire);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), ParseError::kTooLarge);
}

TEST(ResponseHead, HeaderLinesAreCapped) {
  auto with = [](std::size_t n) {
    std::string s = "HTTP/1.1 101 Switching Protocols\r\n";
    for (std::size_t i = 0; i < n; ++i) s += "X-" + std::to_string(i) + ": v\r\n";
    return s + "\r\n";
  };
  const std::string at_cap = with(kMaxHeaders);
  auto ok = parse(at_cap);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->headers().size(), kMaxHeaders);
  EXPECT_EQ(ok->headers().back().name, "X-" + std::to_string(kMaxHeaders - 1));

  auto r = parse(with(kMaxHeaders + 1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), ParseError::kTooManyHeaders);
  // Also when the head has not ended yet: the count is known before the end.
  const std::string many = with(kMaxHeaders + 1);
  auto partial = parse(std::string_view(many).substr(0, many.size() - 2));
  ASSERT_FALSE(partial.ok());
  EXPECT_EQ(partial.error(), ParseError::kTooManyHeaders);
}

}  // namespace
}  // namespace derpd::http
