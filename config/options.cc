// The option table: every setting derpd knows, listed once. Adding an option means adding one
// row here (and a Config field); the YAML loader, the flag parser and --help pick it up.
#include "config/options.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>

namespace derpd::config::detail {
namespace {

constexpr std::size_t kMaxShownChars = 80;
constexpr std::size_t kMaxHostnameChars = 253;

std::string family_name(const Endpoint& e) { return e.addr.is_v4() ? "IPv4" : "IPv6"; }

long long parse_int(const std::string& text, long long lo, long long hi, std::string_view expected) {
  long long v = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || p != end || v < lo || v > hi) {
    throw BadValue(fmt::format("expected {}, got {}", expected, show(text)));
  }
  return v;
}

Endpoint parse_listen_addr(const std::string& text) {
  auto e = Endpoint::parse_listen(text);
  if (!e) throw BadValue(fmt::format(R"(expected ":PORT", "IP:PORT" or "[IPv6]:PORT", got {})", show(text)));
  return *e;
}

Endpoint parse_ip_port(const std::string& text) {
  auto e = Endpoint::parse(text);
  if (!e) throw BadValue(fmt::format(R"(expected "IP:PORT" or "[IPv6]:PORT", got {})", show(text)));
  return *e;
}

bool has_space_or_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char ch) {
    auto u = static_cast<unsigned char>(ch);
    return u <= 0x20 || u == 0x7f;
  });
}

// List entries (host names, "host/dialhost"): non-empty words.
std::vector<std::string> parse_names(Values v) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i].empty() || has_space_or_control(v[i])) {
      throw BadValue(fmt::format("expected a host name without spaces, got {}", show(v[i])), i);
    }
  }
  return {v.begin(), v.end()};
}

// "" or an http(s) URL; with allow_blank also "blank" (derper's -home).
std::string parse_url_or_empty(const std::string& text, bool allow_blank) {
  bool ok = text.empty() || (allow_blank && text == "blank") ||
            ((text.starts_with("http://") || text.starts_with("https://")) && !has_space_or_control(text));
  if (!ok) {
    throw BadValue(fmt::format("expected {} or an http:// or https:// URL, got {}",
                               allow_blank ? R"("", "blank")" : R"("")", show(text)));
  }
  return text;
}

std::string parse_hostname(const std::string& text) {
  bool ok = !text.empty() && text.size() <= kMaxHostnameChars &&
            std::all_of(text.begin(), text.end(), [](char ch) {
              return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                     ch == '.' || ch == '-' || ch == ':' || ch == '_';
            });
  if (!ok) throw BadValue(fmt::format("expected a DNS name or IP address, got {}", show(text)));
  return text;
}

void set_certmode(Config& c, Values v) {
  const std::string& m = v[0];
  std::erase_if(c.unsupported, [](const std::string& s) { return s.starts_with("-certmode="); });
  if (m == "letsencrypt" || m == "gcp") {
    // Both need an ACME client, which derpd does not have; finalize() keeps the notice.
    c.certmode = CertMode::kLetsEncrypt;
    c.unsupported.push_back("-certmode=" + m);
  } else if (m == "manual") {
    c.certmode = CertMode::kManual;
  } else if (m == "dev") {
    c.certmode = CertMode::kDev;
  } else if (m == "plaintext") {
    c.certmode = CertMode::kPlaintext;
  } else {
    throw BadValue(fmt::format("expected manual, dev, plaintext or letsencrypt, got {}", show(m)));
  }
}

void set_stun_addrs(Config& c, Values v) {
  std::vector<Endpoint> out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    Endpoint e;
    try {
      e = parse_ip_port(v[i]);
    } catch (const BadValue& b) {
      throw BadValue(b.what(), i);
    }
    for (const auto& prev : out) {
      if (prev.addr.family() == e.addr.family()) {
        throw BadValue(fmt::format("at most one address per family, got {} and {} (both {})", prev.to_string(),
                                   e.to_string(), family_name(e)),
                       i);
      }
    }
    out.push_back(e);
  }
  c.stun_addrs = std::move(out);
}

void set_log_level(Config& c, Values v) {
  static constexpr std::array<std::pair<std::string_view, LogLevel>, 4> kLevels{{
      {"debug", LogLevel::kDebug},
      {"info", LogLevel::kInfo},
      {"warn", LogLevel::kWarn},
      {"error", LogLevel::kError},
  }};
  for (const auto& [name, level] : kLevels) {
    if (v[0] == name) {
      c.log_level = level;
      return;
    }
  }
  throw BadValue(fmt::format("expected debug, info, warn or error, got {}", show(v[0])));
}

using K = ValueKind;
using S = Scope;

// clang-format off
const Option kOptions[] = {
  // --- listeners ---------------------------------------------------------------------------------
  {"addr", "a", K::kString, S::kSetting, "ADDR",
   "DERP HTTP/HTTPS listen address: \":port\" (all IPv4 interfaces), \"ip:port\" or \"[ipv6]:port\" "
   "(default \":443\")",
   [](Config& c, Values v) { c.derp_addr = parse_listen_addr(v[0]); }},
  {"derp", "", K::kBool, S::kSetting, "BOOL",
   "run the DERP server; false keeps only the other endpoints (default true)",
   [](Config& c, Values v) { c.derp_enabled = parse_bool(v[0]); }},
  {"http-port", "", K::kInt, S::kSetting, "PORT",
   "plain-HTTP port next to a TLS listener, on the IP of -a; -1 = off (default 80)",
   [](Config& c, Values v) {
     c.http_port = static_cast<int>(parse_int(v[0], -1, 65535, "-1 (off) or a port 1-65535"));
     if (c.http_port == 0) throw BadValue("expected -1 (off) or a port 1-65535, got \"0\"");
   }},
  {"stun", "", K::kBool, S::kSetting, "BOOL", "run the STUN server (default true)",
   [](Config& c, Values v) { c.stun_enabled = parse_bool(v[0]); }},
  {"stun-port", "", K::kInt, S::kSetting, "PORT",
   "UDP port for STUN on the IP of -a, used when no stun-addr is given (default 3478)",
   [](Config& c, Values v) { c.stun_port = static_cast<int>(parse_int(v[0], 1, 65535, "an integer 1-65535")); }},
  {"stun-addr", "", K::kRepeated, S::kSetting, "IP:PORT",
   "STUN listen address; repeat for IPv4 and IPv6 (at most one per family); replaces IP-of-a + stun-port",
   set_stun_addrs},
  {"stun-alt-addr", "", K::kString, S::kSetting, "IP:PORT",
   "RFC 5780 alternate STUN address: another IP and another port, same family as a stun-addr; "
   "\"\" = none (port 0 = kernel-chosen, for tests)",
   [](Config& c, Values v) {
     if (v[0].empty()) {
       c.stun_alt_addr.reset();
       return;
     }
     c.stun_alt_addr = parse_ip_port(v[0]);
   }},
  {"metrics-addr", "", K::kString, S::kSetting, "IP:PORT",
   "Prometheus /metrics listen address; port 0 = off (default 127.0.0.1:9100)",
   [](Config& c, Values v) { c.metrics_addr = parse_ip_port(v[0]); }},
  // --- identity and TLS ----------------------------------------------------------------------------
  {"hostname", "", K::kString, S::kSetting, "NAME",
   "TLS host name (or IP address with certmode manual) (default derp.tailscale.com)",
   [](Config& c, Values v) { c.hostname = parse_hostname(v[0]); }},
  {"certmode", "", K::kString, S::kSetting, "MODE",
   "manual (<certdir>/<hostname>.crt and .key), dev (self-signed at start-up), plaintext (no TLS), "
   "letsencrypt (derper's default; needs ACME, not supported yet)",
   set_certmode},
  {"certdir", "", K::kString, S::kSetting, "DIR", "directory of the certificate files for certmode manual",
   [](Config& c, Values v) { c.certdir = v[0]; }},
  {"key-file", "c", K::kString, S::kSetting, "FILE",
   "node private key file in derper's JSON form, created when missing; \"\" = throwaway key "
   "(default /var/lib/derpd/derper.key)",
   [](Config& c, Values v) { c.key_file = v[0]; }},
  // --- mesh and admission --------------------------------------------------------------------------
  {"mesh-with", "", K::kList, S::kSetting, "HOSTS",
   "region mesh peers, comma-separated (\"host\" or \"host/dialhost\"); may include this host",
   [](Config& c, Values v) { c.mesh_with = parse_names(v); }},
  {"mesh-psk-file", "", K::kString, S::kSetting, "FILE",
   "file holding the mesh key (64 lowercase hex characters)",
   [](Config& c, Values v) { c.mesh_psk_file = v[0]; }},
  {"verify-client-url", "", K::kString, S::kSetting, "URL",
   "admission controller URL asked about every client (tailcfg.DERPAdmitClientRequest)",
   [](Config& c, Values v) { c.verify_client_url = parse_url_or_empty(v[0], false); }},
  {"verify-client-url-fail-open", "", K::kBool, S::kSetting, "BOOL",
   "admit clients when the verify-client-url is unreachable (default true)",
   [](Config& c, Values v) { c.verify_client_url_fail_open = parse_bool(v[0]); }},
  {"bootstrap-dns-names", "", K::kList, S::kSetting, "NAMES",
   "host names served at /bootstrap-dns, comma-separated",
   [](Config& c, Values v) { c.bootstrap_dns_names = parse_names(v); }},
  {"unpublished-bootstrap-dns-names", "", K::kList, S::kSetting, "NAMES",
   "host names served at /bootstrap-dns but not listed, comma-separated",
   [](Config& c, Values v) { c.unpublished_bootstrap_dns_names = parse_names(v); }},
  {"home", "", K::kString, S::kSetting, "WHAT",
   "what / serves: \"\" (default page), \"blank\", or a URL to redirect to",
   [](Config& c, Values v) { c.home = parse_url_or_empty(v[0], true); }},
  // --- runtime -------------------------------------------------------------------------------------
  {"workers", "", K::kInt, S::kSetting, "N", "worker threads; 0 = one per online CPU (default 0, at most 1024)",
   [](Config& c, Values v) {
     c.workers = static_cast<unsigned>(parse_int(v[0], 0, kMaxWorkers, fmt::format("an integer 0-{}", kMaxWorkers)));
   }},
  {"max-connections", "", K::kInt, S::kSetting, "N",
   "DERP connections held at most, split evenly over the workers; beyond it connections are refused at "
   "once and counted; 0 = what the descriptor limit allows (default 0)",
   [](Config& c, Values v) {
     c.max_connections = static_cast<std::uint32_t>(
         parse_int(v[0], 0, kMaxConnectionsLimit, fmt::format("an integer 0-{}", kMaxConnectionsLimit)));
   }},
  {"dev", "", K::kBool, S::kSetting, "BOOL",
   "development mode: plaintext DERP on 127.0.0.1:3340, STUN on 127.0.0.1:3478, no port-80 listener, "
   "throwaway key; explicit flags still win",
   [](Config& c, Values v) { c.dev = parse_bool(v[0]); }},
  {"log-level", "", K::kString, S::kSetting, "LEVEL", "debug, info, warn or error (default info)",
   set_log_level},
  // --- commands ------------------------------------------------------------------------------------
  {"config", "", K::kString, S::kCommand, "FILE", "YAML configuration file; flags win over it"},
  {"version", "", K::kBool, S::kCommand, "", "print the version and exit"},
  {"help", "h", K::kNone, S::kCommand, "", "print this help and exit"},
  // --- derper flags accepted but not implemented: recorded in Config::unsupported ------------------
  {"acme-eab-kid", "", K::kString, S::kUnsupported, "ID", "ACME External Account Binding key ID"},
  {"acme-eab-key", "", K::kString, S::kUnsupported, "KEY", "ACME External Account Binding HMAC key",
   nullptr, true},
  {"acme-email", "", K::kString, S::kUnsupported, "EMAIL", "ACME account contact address"},
  {"acme-ip-certs", "", K::kBool, S::kUnsupported, "BOOL", "ACME certificates for the server's IPs"},
  {"secrets-url", "", K::kString, S::kUnsupported, "URL", "setec server for the mesh key"},
  {"secrets-path-prefix", "", K::kString, S::kUnsupported, "PREFIX", "setec path prefix"},
  {"secrets-cache-dir", "", K::kString, S::kUnsupported, "DIR", "setec cache directory"},
  {"verify-clients", "", K::kBool, S::kUnsupported, "BOOL", "verify clients through a local tailscaled"},
  {"socket", "", K::kString, S::kUnsupported, "PATH", "tailscaled socket for -verify-clients"},
  {"accept-connection-limit", "", K::kString, S::kUnsupported, "RATE", "accept rate limit"},
  {"accept-connection-burst", "", K::kString, S::kUnsupported, "N", "accept burst limit"},
  {"rate-config", "", K::kString, S::kUnsupported, "FILE", "JSON rate limit configuration"},
  {"tcp-keepalive-time", "", K::kString, S::kUnsupported, "DURATION", "TCP keepalive time"},
  {"tcp-user-timeout", "", K::kString, S::kUnsupported, "DURATION", "TCP user timeout"},
  {"tcp-write-timeout", "", K::kString, S::kUnsupported, "DURATION", "TCP write timeout"},
  {"ace", "", K::kBool, S::kUnsupported, "BOOL", "embedded ACE server"},
};
// clang-format on

}  // namespace

std::span<const Option> options() { return kOptions; }

const Option* find_flag(std::string_view name) {
  if (name.empty()) return nullptr;
  for (const auto& o : kOptions) {
    if (o.name == name || o.alias == name) return &o;
  }
  return nullptr;
}

const Option* find_yaml_key(std::string_view key) {
  for (const auto& o : kOptions) {
    if (o.scope == Scope::kSetting && o.name == key) return &o;
  }
  return nullptr;
}

std::string show(std::string_view value) {
  if (value.size() > kMaxShownChars) return fmt::format("{:?}...", value.substr(0, kMaxShownChars));
  return fmt::format("{:?}", value);
}

bool parse_bool(std::string_view text) {
  static constexpr std::array<std::string_view, 6> kTrue{"1", "t", "T", "TRUE", "true", "True"};
  static constexpr std::array<std::string_view, 6> kFalse{"0", "f", "F", "FALSE", "false", "False"};
  if (std::find(kTrue.begin(), kTrue.end(), text) != kTrue.end()) return true;
  if (std::find(kFalse.begin(), kFalse.end(), text) != kFalse.end()) return false;
  throw BadValue(fmt::format("expected true or false, got {}", show(text)));
}

}  // namespace derpd::config::detail
