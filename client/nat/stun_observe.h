// The bytes-in edge of the NAT classifier: STUN requests for a probe test, and a received
// response datagram turned into the reply fields of a TestRecord (client/nat/observations.h).
// No I/O; the prober owns sockets, buffers and the clock. Separate target (derpd_nat_stun) so
// derpd_nat itself needs no STUN codec.
//
// Protocol flow per test: pick stun::new_txid(), build_test_request() into a buffer, send it to
// TestRecord::sent_to from TestRecord::local, and for every datagram arriving on that socket
// call record_response() until it returns ok (then the test is done) or the retransmission
// schedule (stun::RetransmitSchedule) runs out (leave outcome = kTimeout).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "client/nat/observations.h"
#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"
#include "relay/base/result.h"
#include "stun/client.h"

namespace derpd::nat {

// An RFC 8489 Binding request with SOFTWARE and FINGERPRINT, plus CHANGE-REQUEST when
// change.any(). Returns its size, 0 when `out` is too small.
std::size_t build_test_request(const stun::TxId& txid, ChangeFlags change, MutBytes out);

enum class RecordError : std::uint8_t {
  kNotAResponse,      // not a parseable Binding response (a stray or corrupt datagram): keep waiting
  kWrongTransaction,  // a valid response, but to another request: keep waiting
  kCount,
};
std::string_view to_string(RecordError e);

// Parses `datagram` (received from `source`) and, when it answers the request with `txid`, sets
// t.outcome (kReply or kErrorReply), mapped, response_origin (RESPONSE-ORIGIN, else an RFC 3489
// SOURCE-ADDRESS), other_address (OTHER-ADDRESS, else CHANGED-ADDRESS), source, error_code and
// rtt. On error `t` is left unchanged. Nothing of `datagram` is kept.
Status<RecordError> record_response(TestRecord& t, const stun::TxId& txid, Bytes datagram, const Endpoint& source,
                                    std::chrono::microseconds rtt);

}  // namespace derpd::nat
