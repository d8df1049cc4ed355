#include "relay/http/response.h"

#include <gtest/gtest.h>

#include <array>
#include <string>

namespace derpd::http {
namespace {

TEST(Response, StatusLineHeadersLengthAndBody) {
  std::string out = "prefix:";
  const Header h[] = {{"Content-Type", "text/plain; version=0.0.4; charset=utf-8"}};
  ASSERT_TRUE(append_response(out, 200, h, "a 1\n"));
  EXPECT_EQ(out,
            "prefix:HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: 4\r\n"
            "\r\n"
            "a 1\n");
}

TEST(Response, DerpUpgradeHasNoLength) {
  std::string out;
  const Header h[] = {{"Upgrade", "DERP"},
                      {"Connection", "Upgrade"},
                      {"Derp-Version", "2"},
                      {"Derp-Public-Key", "0011223344556677889900112233445566778899001122334455667788990011"}};
  ASSERT_TRUE(append_response(out, 101, h, {}, Body::kNone));
  EXPECT_EQ(out,
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: DERP\r\n"
            "Connection: Upgrade\r\n"
            "Derp-Version: 2\r\n"
            "Derp-Public-Key: 0011223344556677889900112233445566778899001122334455667788990011\r\n"
            "\r\n");
}

TEST(Response, HeadRequestGetsTheLengthButNoBody) {
  std::string out;
  ASSERT_TRUE(append_response(out, 200, {}, "twelve bytes", Body::kHeadOnly));
  EXPECT_EQ(out, "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
}

TEST(Response, RefusesHeaderInjection) {
  std::string out = "keep";
  const Header crlf[] = {{"X-A", "ok\r\nSet-Cookie: evil=1"}};
  EXPECT_FALSE(append_response(out, 200, crlf, "x"));
  const Header colon[] = {{"X-A: b", "c"}};
  EXPECT_FALSE(append_response(out, 200, colon, "x"));
  const Header empty[] = {{"", "c"}};
  EXPECT_FALSE(append_response(out, 200, empty, "x"));
  EXPECT_FALSE(append_response(out, 42, {}, "x"));
  EXPECT_EQ(out, "keep");
}

TEST(Response, WriteIntoAFixedBufferReportsTheSizeOrZeroWhenTooSmall) {
  const Header h[] = {{"Connection", "close"}};
  const std::size_t n = response_size(404, h, "not found\n");
  std::string expect = "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 10\r\n\r\nnot found\n";
  ASSERT_EQ(n, expect.size());
  std::array<std::byte, 256> buf{};
  ASSERT_EQ(write_response(buf, 404, h, "not found\n"), n);
  EXPECT_EQ(as_chars(Bytes(buf.data(), n)), expect);
  std::array<std::byte, 256> small{};
  EXPECT_EQ(write_response(std::span(small).first(n - 1), 404, h, "not found\n"), 0u);
  EXPECT_EQ(small[n - 1], std::byte{0}) << "nothing written past the end";
}

TEST(Response, ReasonPhrases) {
  EXPECT_EQ(reason_phrase(405), "Method Not Allowed");
  EXPECT_EQ(reason_phrase(431), "Request Header Fields Too Large");
  EXPECT_EQ(reason_phrase(299), "Unknown");
}

}  // namespace
}  // namespace derpd::http
