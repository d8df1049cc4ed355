#include "relay/http/response_head.h"

#include "relay/http/head_parser.h"

namespace derpd::http {

Result<ResponseHead, ParseError> parse_response_head(Bytes input) {
  ResponseHead head;
  auto line = detail::parse_head(detail::HeadKind::kResponse, input, head);
  if (!line) return Err{line.error()};
  if (head.version_major != 1) return Err{ParseError::kMalformed};
  head.status = line->status;
  head.reason = line->text;
  return head;
}

}  // namespace derpd::http
