// HTTP/1.1 response heads: bytes in, status/reason/headers out (libhttp-parser underneath), for
// clients such as the DERP client reading the server's answer to its upgrade request.
//
// Pure: no I/O, no allocation. head.h says what the parser answers and what it refuses; here
// "complete" is followed by whatever the server sent after the head - a body, or the upgraded
// protocol (after "101 Switching Protocols", the DERP stream, often in the same read).
//
// Every view in ResponseHead aliases the input and is valid only while the input is.
//
// On top of head.h's rules, a version other than HTTP/1.x is kMalformed. The status code is what
// libhttp-parser takes (three digits at most); the reason phrase is passed on as sent.
#pragma once

#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/result.h"
#include "relay/http/head.h"

namespace derpd::http {

struct ResponseHead : HeadFields {
  int status = 0;           // 101, 404, ...
  std::string_view reason;  // "Switching Protocols", or empty
};

Result<ResponseHead, ParseError> parse_response_head(Bytes input);

}  // namespace derpd::http
