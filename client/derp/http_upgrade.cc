#include "client/derp/http_upgrade.h"

#include <http_parser.h>

#include <algorithm>

namespace derpd::derpclient {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

struct State {
  ResponseHead* head;
  bool complete = false;
  bool too_many = false;
  bool last_was_value = true;
};

State& state(http_parser* p) { return *static_cast<State*>(p->data); }

int on_status(http_parser* p, const char* at, std::size_t len) {
  state(p).head->reason.append(at, len);
  return 0;
}

int on_header_field(http_parser* p, const char* at, std::size_t len) {
  State& s = state(p);
  if (s.last_was_value) {
    if (s.head->headers.size() == kMaxResponseHeaders) {
      s.too_many = true;
      return 1;
    }
    s.head->headers.emplace_back();
  }
  s.head->headers.back().first.append(at, len);
  s.last_was_value = false;
  return 0;
}

int on_header_value(http_parser* p, const char* at, std::size_t len) {
  State& s = state(p);
  if (s.head->headers.empty()) return 1;
  s.head->headers.back().second.append(at, len);
  s.last_was_value = true;
  return 0;
}

int on_headers_complete(http_parser* p) {
  state(p).complete = true;
  // Stop at the end of the head: what follows is the DERP stream.
  http_parser_pause(p, 1);
  return 0;
}

const http_parser_settings& settings() {
  static const http_parser_settings s = [] {
    http_parser_settings x;
    http_parser_settings_init(&x);
    x.on_status = on_status;
    x.on_header_field = on_header_field;
    x.on_header_value = on_header_value;
    x.on_headers_complete = on_headers_complete;
    return x;
  }();
  return s;
}

}  // namespace

std::string upgrade_request(const DerpUrl& url, bool fast_start, std::string_view ideal_node) {
  std::string r;
  r.reserve(256);
  r += "GET " + url.target + " HTTP/1.1\r\n";
  r += "Host: " + url.host_header() + "\r\n";
  r += "User-Agent: derpd-client/1\r\n";
  r += "Connection: Upgrade\r\n";
  if (fast_start) r += "Derp-Fast-Start: 1\r\n";
  if (!ideal_node.empty()) r += "Ideal-Node: " + std::string(ideal_node) + "\r\n";
  r += "Upgrade: DERP\r\n\r\n";
  return r;
}

std::optional<std::string_view> ResponseHead::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return std::string_view(v);
  return std::nullopt;
}

Result<ResponseHead, HeadError> parse_response_head(Bytes input) {
  const std::size_t len = std::min(input.size(), kMaxResponseHead);
  const char* data = reinterpret_cast<const char*>(input.data());
  ResponseHead head;
  State st{&head};
  http_parser parser;
  http_parser_init(&parser, HTTP_RESPONSE);
  parser.data = &st;
  const std::size_t used = http_parser_execute(&parser, &settings(), data, len);
  const auto err = static_cast<http_errno>(parser.http_errno);
  if (st.too_many) return Err{HeadError::kTooLarge};
  if (!st.complete) {
    if (err != HPE_OK) return Err{HeadError::kMalformed};
    return Err{input.size() >= kMaxResponseHead ? HeadError::kTooLarge : HeadError::kIncomplete};
  }
  // Paused in on_headers_complete, the parser stops on the head's final '\n' without counting it.
  if (err != HPE_PAUSED || used >= len || data[used] != '\n') return Err{HeadError::kMalformed};
  if (parser.http_major != 1) return Err{HeadError::kMalformed};
  head.head_size = used + 1;
  head.status = parser.status_code;
  for (auto& [k, v] : head.headers) v = std::string(trim(v));
  return head;
}

}  // namespace derpd::derpclient
