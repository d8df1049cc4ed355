#include "relay/http/head.h"

#include <http_parser.h>

#include <algorithm>
#include <climits>

#include "relay/http/head_parser.h"

namespace derpd::http {

namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// RFC 9110 token characters: what a header name may hold. http-parser lets "Host : x" through;
// RFC 9112 §5.1 says a server must reject white space before the colon (request smuggling).
bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    const bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alnum && std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Parser state shared with the callbacks through http_parser::data.
struct State {
  HeadFields* head;
  detail::StartLine* line;
  bool complete = false;
  bool too_many = false;
  bool folded = false;  // a piece that does not continue the last one: obsolete line folding
  enum class Last : std::uint8_t { kNone, kField, kValue } last = Last::kNone;
};

State& state(http_parser* p) { return *static_cast<State*>(p->data); }

// Appends a piece to a view, which must continue exactly where the view ends.
bool extend(std::string_view& v, const char* at, std::size_t len) {
  if (v.empty()) {
    v = {at, len};
    return true;
  }
  if (v.data() + v.size() != at) return false;
  v = {v.data(), v.size() + len};
  return true;
}

// The request-target (on_url) or the reason phrase (on_status).
int on_start_text(http_parser* p, const char* at, std::size_t len) {
  State& s = state(p);
  if (!extend(s.line->text, at, len)) s.folded = true;
  return 0;
}

int on_header_field(http_parser* p, const char* at, std::size_t len) {
  State& s = state(p);
  HeadFields& h = *s.head;
  if (s.last != State::Last::kField) {
    if (h.header_count == kMaxHeaders) {
      s.too_many = true;
      return 1;  // stops the parser
    }
    h.header_storage[h.header_count++] = Header{{at, len}, {}};
  } else if (!extend(h.header_storage[h.header_count - 1].name, at, len)) {
    s.folded = true;
  }
  s.last = State::Last::kField;
  return 0;
}

int on_header_value(http_parser* p, const char* at, std::size_t len) {
  State& s = state(p);
  HeadFields& h = *s.head;
  if (h.header_count == 0) return 1;
  std::string_view& v = h.header_storage[h.header_count - 1].value;
  if (s.last == State::Last::kValue && !extend(v, at, len)) s.folded = true;
  if (s.last != State::Last::kValue) v = {at, len};
  s.last = State::Last::kValue;
  return 0;
}

int on_headers_complete(http_parser* p) {
  State& s = state(p);
  s.complete = true;
  // Stop right after the head: what follows is a body or another protocol, not ours to parse.
  http_parser_pause(p, 1);
  return 0;
}

const http_parser_settings& settings() {
  static const http_parser_settings s = [] {
    http_parser_settings x;
    http_parser_settings_init(&x);
    x.on_url = on_start_text;
    x.on_status = on_start_text;
    x.on_header_field = on_header_field;
    x.on_header_value = on_header_value;
    x.on_headers_complete = on_headers_complete;
    return x;
  }();
  return s;
}

}  // namespace

std::string_view to_string(ParseError e) {
  switch (e) {
    case ParseError::kIncomplete: return "incomplete";
    case ParseError::kMalformed: return "malformed";
    case ParseError::kTooLarge: return "too_large";
    case ParseError::kTooManyHeaders: return "too_many_headers";
  }
  return "unknown";
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::optional<std::string_view> HeadFields::header(std::string_view name) const {
  for (const Header& h : headers())
    if (iequals(h.name, name)) return h.value;
  return std::nullopt;
}

bool HeadFields::header_has_token(std::string_view name, std::string_view token) const {
  for (const Header& h : headers()) {
    if (!iequals(h.name, name)) continue;
    std::string_view rest = h.value;
    while (!rest.empty()) {
      std::size_t comma = rest.find(',');
      std::string_view item = trim(rest.substr(0, comma));
      if (iequals(item, token)) return true;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return false;
}

namespace detail {

Result<StartLine, ParseError> parse_head(HeadKind kind, Bytes input, HeadFields& head) {
  const std::size_t len = std::min(input.size(), kMaxHeadSize);
  const char* data = reinterpret_cast<const char*>(input.data());

  StartLine line;
  State st{&head, &line};
  http_parser parser;
  http_parser_init(&parser, kind == HeadKind::kRequest ? HTTP_REQUEST : HTTP_RESPONSE);
  parser.data = &st;
  const std::size_t used = http_parser_execute(&parser, &settings(), data, len);
  const auto err = static_cast<http_errno>(parser.http_errno);

  if (st.too_many) return Err{ParseError::kTooManyHeaders};
  if (!st.complete) {
    if (err != HPE_OK) return Err{ParseError::kMalformed};
    return Err{input.size() >= kMaxHeadSize ? ParseError::kTooLarge : ParseError::kIncomplete};
  }
  if (err != HPE_PAUSED || st.folded) return Err{ParseError::kMalformed};
  // Paused inside on_headers_complete, the parser stops on the final '\n' of the head without
  // counting it.
  if (used >= len || data[used] != '\n') return Err{ParseError::kMalformed};
  head.head_size = used + 1;

  if (kind == HeadKind::kRequest) line.method = http_method_str(static_cast<http_method>(parser.method));
  else line.status = static_cast<int>(parser.status_code);
  head.version_major = parser.http_major;
  head.version_minor = parser.http_minor;
  head.keep_alive = http_should_keep_alive(&parser) != 0;
  head.upgrade = parser.upgrade != 0;
  head.chunked = (parser.flags & F_CHUNKED) != 0;
  if ((parser.flags & F_CONTENTLENGTH) != 0 && parser.content_length != ULLONG_MAX)
    head.content_length = parser.content_length;
  for (std::size_t i = 0; i < head.header_count; ++i) {
    if (!is_token(head.header_storage[i].name)) return Err{ParseError::kMalformed};
    head.header_storage[i].value = trim(head.header_storage[i].value);
  }
  return line;
}

}  // namespace detail

}  // namespace derpd::http
