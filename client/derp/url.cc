#include "client/derp/url.h"

#include <http_parser.h>

#include <charconv>

#include "relay/base/endpoint.h"
#include "relay/http/head.h"

namespace derpd::derpclient {
namespace {

std::string_view field(std::string_view text, const http_parser_url& u, http_parser_url_fields f) {
  if ((u.field_set & (1u << f)) == 0) return {};
  return text.substr(u.field_data[f].off, u.field_data[f].len);
}

}  // namespace

bool DerpUrl::host_is_ip() const { return IpAddr::parse(host).has_value(); }

std::string DerpUrl::host_header() const {
  const bool v6 = host.find(':') != std::string::npos;
  std::string h = v6 ? "[" + host + "]" : host;
  if (explicit_port) h += ":" + std::to_string(port);
  return h;
}

std::string DerpUrl::to_string() const { return (tls ? "https://" : "http://") + host_header() + target; }

Result<DerpUrl, Error> parse_url(std::string_view text) {
  if (text.empty() || text.size() > 2048) return Err{Error::kBadUrl};
  for (char c : text)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return Err{Error::kBadUrl};
  http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(text.data(), text.size(), 0, &u) != 0) return Err{Error::kBadUrl};
  if ((u.field_set & ((1u << UF_USERINFO) | (1u << UF_FRAGMENT))) != 0) return Err{Error::kBadUrl};

  DerpUrl out;
  const std::string_view scheme = field(text, u, UF_SCHEMA);
  if (http::iequals(scheme, "https")) {
    out.tls = true;
    out.port = 443;
  } else if (http::iequals(scheme, "http")) {
    out.tls = false;
    out.port = 80;
  } else {
    return Err{Error::kBadUrl};
  }
  out.host = std::string(field(text, u, UF_HOST));
  if (out.host.empty()) return Err{Error::kBadUrl};
  // http-parser reports an IPv6 literal without its brackets: bracketed means IPv6, and anything
  // with a colon must be bracketed IPv6.
  const std::size_t host_off = u.field_data[UF_HOST].off;
  const bool bracketed = host_off > 0 && text[host_off - 1] == '[';
  if (bracketed || out.host.find(':') != std::string::npos) {
    auto ip = IpAddr::parse(out.host);
    if (!ip || ip->is_v4()) return Err{Error::kBadUrl};
  }
  if ((u.field_set & (1u << UF_PORT)) != 0) {
    const std::string_view p = field(text, u, UF_PORT);
    unsigned v = 0;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
    if (ec != std::errc{} || end != p.data() + p.size() || v == 0 || v > 65535) return Err{Error::kBadUrl};
    out.port = static_cast<std::uint16_t>(v);
    out.explicit_port = true;
  }
  std::string_view path = field(text, u, UF_PATH);
  out.target = path.empty() ? std::string("/derp") : std::string(path);
  if ((u.field_set & (1u << UF_QUERY)) != 0) out.target += "?" + std::string(field(text, u, UF_QUERY));
  return out;
}

}  // namespace derpd::derpclient
