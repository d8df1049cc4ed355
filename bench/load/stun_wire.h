// STUN wire helpers of the load tools. No I/O, no allocation; every function writes into
// caller-owned buffers and bounds-checks the bytes it reads.
//
// Protocol flow (what the tools exchange):
//   client -> server  Binding request (0x0001). Tailscale form: SOFTWARE "tailnode" + FINGERPRINT,
//                     40 bytes, byte-exact with Tailscale's net/stun Request(). RFC 8489 form:
//                     header + FINGERPRINT (28 bytes). Bare form: header only (20 bytes).
//   server -> client  Binding success (0x0101) with XOR-MAPPED-ADDRESS (0x0020) = the client's
//                     source address. derper's form carries that one attribute and nothing else.
//
// The client side (stun_load) builds and parses with the project's STUN client API
// (stun/client.h) and adds the checks a load test needs. The server side (udp_echo_stun) is
// deliberately tiny and inline: derper's request check and response, nothing else.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"
#include "stun/message.h"

namespace derpd::bench {

using stun::TxId;

// The largest request any RequestFormat produces, and the size of derper's response.
inline constexpr std::size_t kMaxRequestSize = 40;
inline constexpr std::size_t kMaxDerperResponseSize = stun::kHeaderSize + 4 + 20;

enum class RequestFormat : std::uint8_t {
  kTailscale,  // SOFTWARE "tailnode" + FINGERPRINT: what netcheck sends (derper answers only these)
  kRfc8489,    // header + FINGERPRINT: a plain RFC 8489 Binding request
  kBare,       // header only
};
std::string_view to_string(RequestFormat f);

// Writes a Binding request with transaction ID `tx` (must carry the magic cookie) into `out` and
// returns its size, or 0 when `out` is too small.
std::size_t build_request(RequestFormat f, const TxId& tx, MutBytes out);

// The transaction ID of an RFC 5389+ looking datagram (a whole header, top bits 0, magic cookie);
// false for anything else. Reads the header only: the caller validates with check_response().
bool peek_txid(Bytes datagram, TxId& out);

// Why a response was rejected; kOk when it was accepted. Doubles as a JSON key.
enum class Verdict : std::uint8_t {
  kOk,
  kTruncated,            // did not fit the receive buffer
  kNotStun,              // too short, top bits set, or no magic cookie
  kMalformed,            // lengths or attribute bounds wrong, or an address attribute unreadable
  kBadFingerprint,       // FINGERPRINT wrong or not the last attribute
  kNotSuccess,           // not a Binding success response (error response, request, other method)
  kNoXorMappedAddress,   // no XOR-MAPPED-ADDRESS (0x0020); 0x8020 or MAPPED-ADDRESS alone do not count
  kWrongAddress,         // XOR-MAPPED-ADDRESS differs from the socket's own address
  kNotDerperFormat,      // strict mode: more than the single XOR-MAPPED-ADDRESS derper sends
  kCount,
};
std::string_view to_string(Verdict v);

struct CheckOptions {
  bool derper_format = false;  // require exactly header + one XOR-MAPPED-ADDRESS
};

// Validates a response to a Binding request sent from `self` (stun::parse_binding_response plus
// the address and form checks).
Verdict check_response(Bytes datagram, const Endpoint& self, CheckOptions opts);

// --- server side (udp_echo_stun) ---

// Accepts exactly what derper accepts (Tailscale's ParseBindingRequest): a Binding request whose
// attributes are well formed, include SOFTWARE "tailnode", and end with a correct FINGERPRINT.
// On success stores the 12-byte transaction ID (the bytes after the cookie) in `id`.
bool parse_tailnode_request(Bytes datagram, std::span<std::byte, 12> id);

// derper's answer to a tailnode request with ID `id`: header + one XOR-MAPPED-ADDRESS of `remote`.
// Returns the size written, or 0 when `out` is too small (kMaxDerperResponseSize suffices).
std::size_t build_derper_response(std::span<const std::byte, 12> id, const Endpoint& remote, MutBytes out);

}  // namespace derpd::bench
