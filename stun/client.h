// Client side of STUN Binding: build a request, parse a response, and the RFC 8489
// retransmission schedule. Used by the NAT prober, the load generator and tests. No I/O here: the
// caller owns the socket, the buffers and the clock.
//
// Protocol flow: pick a fresh TxId (new_txid() / new_classic_txid()), build_binding_request()
// into a buffer, send it, and resend per RetransmitSchedule until a datagram arrives for which
// parse_binding_response() succeeds with the same txid. Check the packet's real source address
// too (RFC 5780 tests compare it with RESPONSE-ORIGIN).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"
#include "relay/base/result.h"
#include "stun/attributes.h"
#include "stun/message.h"

namespace derpd::stun {

// Random ids from getrandom(2). A classic id never starts with the magic cookie.
TxId new_txid();
TxId new_classic_txid();

enum class RequestForm : std::uint8_t {
  kTailnode,  // exactly Tailscale's netcheck request: SOFTWARE "tailnode" + FINGERPRINT, 40 bytes;
              // every other option is ignored
  kRfc8489,   // magic cookie; SOFTWARE, RFC 5780 attributes and FINGERPRINT as the options say
  kClassic,   // RFC 3489: no cookie (the txid must not have one), only CHANGE-REQUEST
};

struct BindingRequestOptions {
  RequestForm form = RequestForm::kRfc8489;
  std::string_view software = "derpd";  // kRfc8489: SOFTWARE value; empty = no SOFTWARE
  bool fingerprint = true;              // kRfc8489: append FINGERPRINT
  // kRfc8489 and kClassic: send CHANGE-REQUEST with these flags (present even if both false).
  std::optional<ChangeRequest> change_request;
  std::uint16_t response_port = 0;  // kRfc8489: RESPONSE-PORT when non-zero
  std::uint16_t padding = 0;        // kRfc8489: PADDING of this many bytes (rounded up to 4)
};

// Size of the Tailscale-form request.
inline constexpr std::size_t kTailnodeRequestSize = kHeaderSize + 4 + 8 + kFingerprintAttrSize;

// Builds a Binding request into `out` and returns its size; 0 when `out` is too small or the
// txid does not fit the form (kClassic needs a cookie-less id, the others an id with the cookie).
std::size_t build_binding_request(const TxId& txid, const BindingRequestOptions& opts, MutBytes out);

enum class ResponseError : std::uint8_t {
  kNotStun,             // too short or top bits set
  kMalformed,           // lengths or attribute bounds wrong
  kBadFingerprint,      // FINGERPRINT wrong or not last
  kNotBindingResponse,  // a request, an indication, or another method
  kBadAttribute,        // an attribute this parser reads is malformed (bad family, size, ...)
  kNoMappedAddress,     // success response without XOR-MAPPED-ADDRESS / MAPPED-ADDRESS
  kNoErrorCode,         // error response without a valid ERROR-CODE
  kCount,
};
std::string_view to_string(ResponseError e);

enum class MappedFrom : std::uint8_t {
  kNone,
  kXorMapped,     // 0x0020
  kXorMappedAlt,  // 0x8020
  kMapped,        // 0x0001 (classic servers)
};

struct BindingResponse {
  static constexpr std::size_t kMaxUnknown = 16;  // as many as respond() lists

  TxId txid;
  bool classic = false;       // no magic cookie (RFC 3489 server)
  bool is_error = false;      // error response; see error_code
  bool fingerprint = false;   // FINGERPRINT present and verified
  std::uint16_t error_code = 0;
  std::string_view error_reason;  // aliases the datagram
  std::string_view software;      // aliases the datagram; empty if absent

  // Our address as the server saw it: XOR-MAPPED-ADDRESS, else 0x8020, else MAPPED-ADDRESS.
  std::optional<Endpoint> mapped;
  MappedFrom mapped_from = MappedFrom::kNone;
  std::optional<Endpoint> response_origin;  // RFC 5780
  std::optional<Endpoint> other_address;    // RFC 5780
  std::optional<Endpoint> source_address;   // RFC 3489
  std::optional<Endpoint> changed_address;  // RFC 3489

  // From a 420 response's UNKNOWN-ATTRIBUTES (first kMaxUnknown entries).
  std::array<std::uint16_t, kMaxUnknown> unknown{};
  std::size_t unknown_count = 0;
};

// Parses a Binding success or error response. The result's string_views alias `datagram`.
Result<BindingResponse, ResponseError> parse_binding_response(Bytes datagram);

// RFC 8489 §6.2.1 retransmissions over UDP: send at 0, RTO, 3 RTO, 7 RTO, ... (max_sends sends
// in all, doubling the interval), then give up final_wait_rto RTOs after the last send.
struct RetransmitSchedule {
  std::chrono::milliseconds rto{500};
  int max_sends = 7;        // Rc
  int final_wait_rto = 16;  // Rm

  // Time after the first send at which send number n (0-based, < max_sends) goes out.
  std::chrono::milliseconds send_at(int n) const { return rto * ((1LL << n) - 1); }
  // Time after the first send at which the transaction times out.
  std::chrono::milliseconds deadline() const { return send_at(max_sends - 1) + rto * final_wait_rto; }
};

}  // namespace derpd::stun
