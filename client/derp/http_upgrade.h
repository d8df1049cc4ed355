// The HTTP/1.1 side of a DERP connection: the upgrade request exactly as Tailscale's Go client
// writes it, and the server's response head (relay/http/response_head.h). Pure: no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "client/derp/url.h"
#include "relay/base/bytes.h"
#include "relay/base/result.h"
#include "relay/http/response_head.h"

namespace derpd::derpclient {

inline constexpr std::size_t kMaxResponseHead = http::kMaxHeadSize;

// "GET <target> HTTP/1.1", Host, User-Agent, Upgrade: DERP, Connection: Upgrade, and with
// `fast_start` "Derp-Fast-Start: 1" (the server then writes no HTTP response), and Ideal-Node when
// non-empty.
std::string upgrade_request(const DerpUrl& url, bool fast_start, std::string_view ideal_node = {});

enum class HeadError : std::uint8_t {
  kIncomplete,  // the head has not ended yet: read more
  kMalformed,   // not an HTTP/1.x response head
  kTooLarge,    // no end of head within kMaxResponseHead bytes, or too many header lines
};

// Views into `input` (see relay/http/response_head.h); head_size is where the DERP stream begins.
using ResponseHead = http::ResponseHead;

// http::parse_response_head with its two "too large" errors as one.
Result<ResponseHead, HeadError> parse_response_head(Bytes input);

}  // namespace derpd::derpclient
