#include "client/nat/stun_observe.h"

namespace derpd::nat {

std::size_t build_test_request(const stun::TxId& txid, ChangeFlags change, MutBytes out) {
  stun::BindingRequestOptions opts;
  opts.form = stun::RequestForm::kRfc8489;
  if (change.any()) opts.change_request = stun::ChangeRequest{change.ip, change.port};
  return stun::build_binding_request(txid, opts, out);
}

std::string_view to_string(RecordError e) {
  switch (e) {
    case RecordError::kNotAResponse:
      return "not_a_response";
    case RecordError::kWrongTransaction:
      return "wrong_transaction";
    case RecordError::kCount:
      break;
  }
  return "invalid";
}

Status<RecordError> record_response(TestRecord& t, const stun::TxId& txid, Bytes datagram, const Endpoint& source,
                                    std::chrono::microseconds rtt) {
  auto parsed = stun::parse_binding_response(datagram);
  if (!parsed) return Err(RecordError::kNotAResponse);
  const stun::BindingResponse& r = *parsed;
  if (r.txid != txid) return Err(RecordError::kWrongTransaction);
  t.outcome = r.is_error ? Outcome::kErrorReply : Outcome::kReply;
  t.error_code = r.is_error ? r.error_code : 0;
  t.mapped = r.mapped;
  t.response_origin = r.response_origin ? r.response_origin : r.source_address;
  t.other_address = r.other_address ? r.other_address : r.changed_address;
  t.source = source;
  t.rtt = rtt;
  return {};
}

}  // namespace derpd::nat
