// Minimal STUN wire code for the load tools: request builders, the derper-format responder used
// by udp_echo_stun, and a strict response check for stun_load. No I/O, no allocation; every
// function writes into caller-owned buffers and bounds-checks the bytes it reads.
//
// Protocol flow (what the tools exchange):
//   client -> server  Binding request (0x0001). Tailscale form: SOFTWARE "tailnode" + FINGERPRINT,
//                     40 bytes, byte-exact with Tailscale's net/stun Request(). RFC 8489 form:
//                     header + FINGERPRINT (28 bytes). Bare form: header only (20 bytes).
//   server -> client  Binding success (0x0101) with XOR-MAPPED-ADDRESS (0x0020) = the client's
//                     source address. derper's form carries that one attribute and nothing else.
//
// This is deliberately small and separate from stun/ (the daemon's codec) so that the load
// generator checks the daemon against an independent implementation.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"

namespace derpd::bench {

inline constexpr std::size_t kHeaderSize = 20;
inline constexpr std::uint32_t kMagicCookie = 0x2112A442;
inline constexpr std::uint16_t kBindingRequest = 0x0001;
inline constexpr std::uint16_t kBindingSuccess = 0x0101;
inline constexpr std::uint16_t kAttrXorMappedAddress = 0x0020;
inline constexpr std::uint16_t kAttrSoftware = 0x8022;
inline constexpr std::uint16_t kAttrFingerprint = 0x8028;
inline constexpr std::uint32_t kFingerprintXor = 0x5354554E;
inline constexpr std::string_view kTailscaleSoftware = "tailnode";  // 8 bytes: no padding

// The largest request any RequestFormat produces, and the largest derper-format response.
inline constexpr std::size_t kMaxRequestSize = 40;
inline constexpr std::size_t kMaxDerperResponseSize = kHeaderSize + 4 + 20;

// 96-bit STUN transaction ID.
struct TxId {
  std::array<std::byte, 12> bytes{};
  friend bool operator==(const TxId&, const TxId&) = default;
};

enum class RequestFormat : std::uint8_t {
  kTailscale,  // SOFTWARE "tailnode" + FINGERPRINT: what netcheck sends (derper answers only these)
  kRfc8489,    // header + FINGERPRINT: a plain RFC 8489 Binding request
  kBare,       // header only
};
std::string_view to_string(RequestFormat f);

// Size in bytes of a request of format `f`.
std::size_t request_size(RequestFormat f);

// Writes a Binding request with transaction ID `tx` into `out` and returns its size, or 0 when
// `out` is smaller than request_size(f).
std::size_t build_request(RequestFormat f, const TxId& tx, MutBytes out);

// FINGERPRINT value over `b` (CRC-32 XOR 0x5354554E).
std::uint32_t fingerprint(Bytes b);

// The transaction ID of a STUN-looking datagram (at least a header, magic cookie, top bits 0).
// Returns false for anything else.
bool peek_txid(Bytes datagram, TxId& out);

// Accepts exactly what derper accepts (Tailscale's ParseBindingRequest): a Binding request whose
// attributes are well formed, include SOFTWARE "tailnode", and end with a correct FINGERPRINT.
bool parse_tailnode_request(Bytes datagram, TxId& out);

// derper's answer to a tailnode request: header + one XOR-MAPPED-ADDRESS of `remote`. Returns the
// size written, or 0 when `out` is too small (kMaxDerperResponseSize always suffices).
std::size_t build_derper_response(const TxId& tx, const Endpoint& remote, MutBytes out);

// Why a response was rejected; kOk when it was accepted. Doubles as a JSON key.
enum class Verdict : std::uint8_t {
  kOk,
  kTruncated,         // did not fit the receive buffer
  kNotStun,           // too short, top bits set, or no magic cookie
  kNotSuccess,        // not a Binding success response (error response, other method/class)
  kBadLength,         // header length not a multiple of 4 or not equal to the datagram's rest
  kMalformedAttrs,    // an attribute runs past the end of the message
  kNoMappedAddress,   // no XOR-MAPPED-ADDRESS (0x0020)
  kWrongAddress,      // XOR-MAPPED-ADDRESS differs from the socket's own address
  kBadFingerprint,    // FINGERPRINT present but wrong, or not the last attribute
  kNotDerperFormat,   // strict mode: more than the single XOR-MAPPED-ADDRESS derper sends
  kCount,
};
std::string_view to_string(Verdict v);

struct CheckOptions {
  bool derper_format = false;  // require exactly header + one XOR-MAPPED-ADDRESS
};

// Validates a response to a Binding request sent from `self`. The caller has already matched the
// transaction ID (peek_txid); the XOR for IPv6 uses the datagram's own ID.
Verdict check_response(Bytes datagram, const Endpoint& self, CheckOptions opts);

}  // namespace derpd::bench
