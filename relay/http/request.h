// HTTP/1.1 request heads: bytes in, method/target/headers out (libhttp-parser underneath).
//
// Pure: no I/O, no allocation. The parser looks at everything received so far and answers either
// "complete" (with head_size: where the head ended, so input[head_size..] belongs to whatever
// follows - a request body, or the upgraded protocol: a DERP client with fast start sends its first
// frame in the same write as the upgrade request), or kIncomplete (read more and call again), or
// an error to answer with 400 / 431 and close.
//
// Every view in RequestHead aliases the input and is valid only while the input is.
//
// Hostile input: a head longer than kMaxHeadSize is kTooLarge whether or not it would end later;
// more than kMaxHeaders header lines is kTooManyHeaders; anything libhttp-parser rejects (bad
// method, bad version, control bytes, bad Content-Length), obsolete line folding, and a
// request-target that does not parse as a URL are kMalformed.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/result.h"

namespace derpd::http {

inline constexpr std::size_t kMaxHeadSize = 8192;
inline constexpr std::size_t kMaxHeaders = 64;

enum class ParseError : std::uint8_t {
  kIncomplete,       // no end of head yet: read more (not an error until kMaxHeadSize)
  kMalformed,        // 400
  kTooLarge,         // 431: the head does not end within kMaxHeadSize bytes
  kTooManyHeaders,   // 431
};
std::string_view to_string(ParseError e);

struct Header {
  std::string_view name;
  std::string_view value;
};

// ASCII case-insensitive equality (header names, tokens).
bool iequals(std::string_view a, std::string_view b);

struct RequestHead {
  std::string_view method;  // "GET"; a static string, valid forever
  std::string_view target;  // the request-target as sent: "/derp?x=1"
  std::string_view path;    // "/derp" ("/" when an absolute-form target has none)
  std::string_view query;   // "x=1", or empty
  std::uint16_t version_major = 1;
  std::uint16_t version_minor = 1;
  std::size_t head_size = 0;  // bytes of the input that make up the head
  bool keep_alive = false;    // HTTP/1.1 without "Connection: close", or 1.0 with keep-alive
  bool upgrade = false;       // "Connection: upgrade" with an Upgrade header
  bool chunked = false;       // Transfer-Encoding: chunked
  std::optional<std::uint64_t> content_length;

  std::array<Header, kMaxHeaders> header_storage{};
  std::size_t header_count = 0;

  std::span<const Header> headers() const { return {header_storage.data(), header_count}; }
  // The first header with this name (case-insensitive), if any.
  std::optional<std::string_view> header(std::string_view name) const;
  // Does a comma-separated header (e.g. Connection, Upgrade) list `token` (case-insensitive)?
  bool header_has_token(std::string_view name, std::string_view token) const;
  // A request that says it has a body.
  bool has_body() const { return chunked || (content_length && *content_length > 0); }
};

Result<RequestHead, ParseError> parse_request_head(Bytes input);

}  // namespace derpd::http
