// The HTTP/1.1 side of a DERP connection: the upgrade request exactly as Tailscale's Go client
// writes it, and the server's response head (libhttp-parser underneath). Pure: no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/derp/url.h"
#include "relay/base/bytes.h"
#include "relay/base/result.h"

namespace derpd::derpclient {

inline constexpr std::size_t kMaxResponseHead = 8192;
inline constexpr std::size_t kMaxResponseHeaders = 64;

// "GET <target> HTTP/1.1", Host, User-Agent, Upgrade: DERP, Connection: Upgrade, and with
// `fast_start` "Derp-Fast-Start: 1" (the server then writes no HTTP response), and Ideal-Node when
// non-empty.
std::string upgrade_request(const DerpUrl& url, bool fast_start, std::string_view ideal_node = {});

enum class HeadError : std::uint8_t {
  kIncomplete,  // the head has not ended yet: read more
  kMalformed,   // not an HTTP/1.x response head
  kTooLarge,    // no end of head within kMaxResponseHead bytes, or too many header lines
};

struct ResponseHead {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;  // in order, values trimmed
  std::size_t head_size = 0;  // bytes of the input making up the head; the rest is the DERP stream

  // The first header of that name (ASCII case-insensitive).
  std::optional<std::string_view> header(std::string_view name) const;
};

Result<ResponseHead, HeadError> parse_response_head(Bytes input);

}  // namespace derpd::derpclient
