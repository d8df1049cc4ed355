// HTTP/1.1 message heads: what request heads (request.h) and response heads (response_head.h)
// share - the limits, the errors, and the header lines with their lookups.
//
// Both parsers are pure (no I/O, no allocation) and run libhttp-parser over everything received
// so far. They answer either "complete" (with head_size: where the head ended, so input[head_size..]
// belongs to whatever follows - a body, or the upgraded protocol), or kIncomplete (read more and
// call again), or an error.
//
// Every view in a head aliases the input and is valid only while the input is.
//
// Hostile input, the same for both: a head longer than kMaxHeadSize is kTooLarge whether or not it
// would end later; more than kMaxHeaders header lines is kTooManyHeaders; anything libhttp-parser
// rejects (bad start line, bad version, control bytes, bad or repeated Content-Length), a header
// name that is not an RFC 9110 token (white space before the colon), and obsolete line folding
// are kMalformed.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

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

// The part of a head that requests and responses share.
struct HeadFields {
  std::uint16_t version_major = 1;
  std::uint16_t version_minor = 1;
  std::size_t head_size = 0;  // bytes of the input that make up the head
  bool keep_alive = false;    // HTTP/1.1 without "Connection: close", or 1.0 with keep-alive
  bool upgrade = false;       // "Connection: upgrade" with an Upgrade header (a response: and 101)
  bool chunked = false;       // Transfer-Encoding: chunked
  std::optional<std::uint64_t> content_length;

  std::array<Header, kMaxHeaders> header_storage{};  // values trimmed of spaces and tabs
  std::size_t header_count = 0;

  std::span<const Header> headers() const { return {header_storage.data(), header_count}; }
  // The first header with this name (case-insensitive), if any.
  std::optional<std::string_view> header(std::string_view name) const;
  // Does a comma-separated header (e.g. Connection, Upgrade) list `token` (case-insensitive)?
  bool header_has_token(std::string_view name, std::string_view token) const;
  // A head that says a body follows.
  bool has_body() const { return chunked || (content_length && *content_length > 0); }
};

}  // namespace derpd::http
