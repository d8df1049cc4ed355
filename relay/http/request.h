// HTTP/1.1 request heads: bytes in, method/target/headers out (libhttp-parser underneath).
//
// Pure: no I/O, no allocation. head.h says what the parser answers and what it refuses; here
// "complete" is followed by whatever the client sent after the head - a request body, or the
// upgraded protocol: a DERP client with fast start sends its first frame in the same write as the
// upgrade request. An error is answered with 400 (kMalformed) or 431 and a close.
//
// Every view in RequestHead aliases the input and is valid only while the input is.
//
// On top of head.h's rules, a request-target that does not parse as a URL is kMalformed.
#pragma once

#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/result.h"
#include "relay/http/head.h"

namespace derpd::http {

struct RequestHead : HeadFields {
  std::string_view method;  // "GET"; a static string, valid forever
  std::string_view target;  // the request-target as sent: "/derp?x=1"
  std::string_view path;    // "/derp" ("/" when an absolute-form target has none)
  std::string_view query;   // "x=1", or empty
};

Result<RequestHead, ParseError> parse_request_head(Bytes input);

}  // namespace derpd::http
