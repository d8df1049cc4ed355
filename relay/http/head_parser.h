// Private to relay/http: the libhttp-parser run that parse_request_head and parse_response_head
// share. It applies the rules head.h lists for both; each caller checks its own start line.
#pragma once

#include <cstdint>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/result.h"
#include "relay/http/head.h"

namespace derpd::http::detail {

enum class HeadKind : std::uint8_t { kRequest, kResponse };

// The start line, as far as libhttp-parser has checked it.
struct StartLine {
  std::string_view text;    // a request's request-target, a response's reason phrase (aliases input)
  std::string_view method;  // a request's method: a static string, valid forever
  int status = 0;           // a response's status code
};

// Fills `head` (version, framing, headers, head_size) and returns the start line.
Result<StartLine, ParseError> parse_head(HeadKind kind, Bytes input, HeadFields& head);

}  // namespace derpd::http::detail
