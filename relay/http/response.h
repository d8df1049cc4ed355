// HTTP/1.1 response builders: status line, headers, body.
//
// write_response() fills a caller-owned buffer and reports the size (no allocation), e.g. straight
// into a connection's send queue (TcpConnection::reserve); append_response() is the same onto a
// std::string. A header name or value holding CR, LF or NUL (response splitting) or a name that is
// empty or holds ':' or white space is refused: nothing is written and the size is 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/http/request.h"

namespace derpd::http {

enum class Body : std::uint8_t {
  kWith,      // Content-Length: body.size(), then the body
  kHeadOnly,  // answer to HEAD: Content-Length of the body that GET would get, no body
  kNone,      // no Content-Length and no body (101 Switching Protocols, 204, 304)
};

// "OK", "Not Found", ...; "Unknown" for codes not listed.
std::string_view reason_phrase(int status);

// Exact size of the response, or 0 when it would be refused (see above; status outside 100..999).
std::size_t response_size(int status, std::span<const Header> headers, std::string_view body, Body mode = Body::kWith);

// Writes the response into `out`; returns its size, or 0 when `out` is too small or it is refused.
std::size_t write_response(MutBytes out, int status, std::span<const Header> headers, std::string_view body,
                           Body mode = Body::kWith);

// Appends the response to `out`; false (and `out` unchanged) when refused.
bool append_response(std::string& out, int status, std::span<const Header> headers, std::string_view body,
                     Body mode = Body::kWith);

}  // namespace derpd::http
