#include "relay/http/request.h"

#include <http_parser.h>

#include "relay/http/head_parser.h"

namespace derpd::http {

Result<RequestHead, ParseError> parse_request_head(Bytes input) {
  RequestHead head;
  auto line = detail::parse_head(detail::HeadKind::kRequest, input, head);
  if (!line) return Err{line.error()};
  head.method = line->method;
  head.target = line->text;

  http_parser_url url;
  http_parser_url_init(&url);
  if (head.target.empty() || http_parser_parse_url(head.target.data(), head.target.size(), 0, &url) != 0)
    return Err{ParseError::kMalformed};
  if ((url.field_set & (1u << UF_PATH)) != 0)
    head.path = head.target.substr(url.field_data[UF_PATH].off, url.field_data[UF_PATH].len);
  else
    head.path = "/";
  if ((url.field_set & (1u << UF_QUERY)) != 0)
    head.query = head.target.substr(url.field_data[UF_QUERY].off, url.field_data[UF_QUERY].len);
  return head;
}

}  // namespace derpd::http
