// The HTTP/1.1 side of a DERP connection: the upgrade request exactly as Tailscale's Go client
// writes it, and the server's response head (relay/http/response_head.h). Pure: no I/O.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "client/derp/url.h"
#include "relay/http/response_head.h"

namespace derpd::derpclient {

inline constexpr std::size_t kMaxResponseHead = http::kMaxHeadSize;

// "GET <target> HTTP/1.1", Host, User-Agent, Upgrade: DERP, Connection: Upgrade, and with
// `fast_start` "Derp-Fast-Start: 1" (the server then writes no HTTP response), and Ideal-Node when
// non-empty.
std::string upgrade_request(const DerpUrl& url, bool fast_start, std::string_view ideal_node = {});

// The server's answer: http::parse_response_head (relay/http/response_head.h), whose views alias
// the input; head_size is where the DERP stream begins.
using http::ResponseHead;
using http::parse_response_head;

}  // namespace derpd::derpclient
