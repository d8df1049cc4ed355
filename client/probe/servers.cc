#include "client/probe/servers.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <future>
#include <map>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace derpd::probe {

std::string_view to_string(SpecError e) {
  switch (e) {
    case SpecError::kEmpty:
      return "empty server";
    case SpecError::kBadPort:
      return "bad port (want 1-65535)";
    case SpecError::kBadBrackets:
      return "bad brackets (want [IPv6] or [IPv6]:port)";
    case SpecError::kBadHost:
      return "bad host name or address";
    case SpecError::kCount:
      break;
  }
  return "invalid";
}

std::string_view to_string(DerpMapError e) {
  switch (e) {
    case DerpMapError::kTooLarge:
      return "DERP map too large";
    case DerpMapError::kNotJson:
      return "DERP map is not JSON";
    case DerpMapError::kNoRegions:
      return "DERP map has no \"Regions\" object";
    case DerpMapError::kNoStunNodes:
      return "DERP map has no STUN-capable node";
    case DerpMapError::kCount:
      break;
  }
  return "invalid";
}

std::string DerpMapFailure::message() const {
  if (detail.empty()) return std::string(to_string(code));
  return fmt::format("{}: {}", to_string(code), detail);
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::optional<std::uint16_t> parse_port(std::string_view s) {
  if (s.empty() || s.size() > 5) return std::nullopt;
  unsigned v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v == 0 || v > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(v);
}

bool valid_host_name(std::string_view h) {
  if (h.empty() || h.size() > kMaxHostLength) return false;
  if (h.front() == '.' || h.front() == '-') return false;
  return std::all_of(h.begin(), h.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_';
  });
}

}  // namespace

Result<ServerSpec, SpecError> parse_server_spec(std::string_view text) {
  text = trim(text);
  if (text.empty()) return Err(SpecError::kEmpty);
  ServerSpec spec;
  spec.name = std::string(text);
  std::string_view host;
  std::string_view port;
  bool has_port = false;
  if (text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return Err(SpecError::kBadBrackets);
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return Err(SpecError::kBadBrackets);
      port = rest.substr(1);
      has_port = true;
    }
    auto ip = IpAddr::parse(host);
    if (!ip || ip->is_v4()) return Err(SpecError::kBadHost);
  } else {
    const auto first = text.find(':');
    const auto last = text.rfind(':');
    if (first == std::string_view::npos) {
      host = text;
    } else if (first == last) {
      host = text.substr(0, first);
      port = text.substr(first + 1);
      has_port = true;
    } else {
      host = text;  // bare IPv6 literal, no port
      auto ip = IpAddr::parse(host);
      if (!ip || ip->is_v4()) return Err(SpecError::kBadHost);
    }
  }
  if (host.empty()) return Err(SpecError::kBadHost);
  if (!IpAddr::parse(host) && !valid_host_name(host)) return Err(SpecError::kBadHost);
  if (has_port) {
    auto p = parse_port(port);
    if (!p) return Err(SpecError::kBadPort);
    spec.port = *p;
  }
  spec.host = std::string(host);
  return spec;
}

ServerList parse_server_list(std::string_view text) {
  ServerList out;
  if (text.size() > kMaxServerFileBytes) {
    out.errors.push_back(ListIssue{0, fmt::format("file larger than {} bytes", kMaxServerFileBytes)});
    return out;
  }
  std::size_t line_no = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    if (const auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    if (line.find_first_of(" \t") != std::string_view::npos) {
      out.errors.push_back(ListIssue{line_no, "one server per line (found blanks inside the entry)"});
      continue;
    }
    auto spec = parse_server_spec(line);
    if (!spec) {
      out.errors.push_back(ListIssue{line_no, std::string(to_string(spec.error()))});
      continue;
    }
    out.servers.push_back(std::move(*spec));
  }
  return out;
}

namespace {

using nlohmann::json;

constexpr std::size_t kMaxWarnings = 20;

// Printable, bounded copy of a string from the map for messages.
std::string shown(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (s.size() > 64) out += "...";
  return out;
}

// The rule for one family from a node's IPv4/IPv6 field.
std::optional<FamilyRule> family_rule(const json& node, const char* key, Family f, std::string& problem) {
  const auto it = node.find(key);
  if (it == node.end() || it->is_null()) return FamilyRule{};
  if (!it->is_string()) {
    problem = fmt::format("\"{}\" is not a string", key);
    return std::nullopt;
  }
  const auto& s = it->get_ref<const std::string&>();
  if (s.empty()) return FamilyRule{};
  auto ip = IpAddr::parse(s);
  if (ip && ip->family() == f) return FamilyRule{AddrRule::kFixed, *ip};
  return FamilyRule{AddrRule::kDisabled, IpAddr{}};  // "none" or an address of the other family
}

}  // namespace

Result<DerpMap, DerpMapFailure> parse_derp_map(std::string_view text) {
  if (text.size() > kMaxDerpMapBytes) {
    return Err(DerpMapFailure{DerpMapError::kTooLarge, fmt::format("{} bytes, limit {}", text.size(), kMaxDerpMapBytes)});
  }
  const json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Err(DerpMapFailure{DerpMapError::kNotJson, {}});
  if (!doc.is_object()) return Err(DerpMapFailure{DerpMapError::kNoRegions, "top level is not an object"});
  const auto regions = doc.find("Regions");
  if (regions == doc.end() || !regions->is_object()) return Err(DerpMapFailure{DerpMapError::kNoRegions, {}});

  DerpMap out;
  std::size_t suppressed = 0;
  auto warn = [&](std::string w) {
    if (out.warnings.size() < kMaxWarnings) {
      out.warnings.push_back(std::move(w));
    } else {
      ++suppressed;
    }
  };

  // Regions in ascending RegionID order (the map's keys are the IDs as text).
  std::multimap<std::int64_t, const json*> ordered;
  for (auto it = regions->begin(); it != regions->end(); ++it) {
    const json& region = it.value();
    if (!region.is_object()) {
      warn(fmt::format("region \"{}\": not an object", shown(it.key())));
      continue;
    }
    std::int64_t id = 0;
    const auto rid = region.find("RegionID");
    if (rid != region.end() && rid->is_number_integer()) {
      id = rid->get<std::int64_t>();
    } else {
      const std::string& k = it.key();
      std::from_chars(k.data(), k.data() + k.size(), id);
    }
    ordered.emplace(id, &region);
  }

  for (const auto& [id, region_ptr] : ordered) {
    const json& region = *region_ptr;
    const auto skip = region.find("NoMeasureNoHome");
    if (skip != region.end() && skip->is_boolean() && skip->get<bool>()) continue;
    const auto nodes = region.find("Nodes");
    if (nodes == region.end() || nodes->is_null()) continue;
    if (!nodes->is_array()) {
      warn(fmt::format("region {}: \"Nodes\" is not an array", id));
      continue;
    }
    std::size_t index = 0;
    for (const json& node : *nodes) {
      ++index;
      const std::string where = fmt::format("region {} node {}", id, index);
      if (!node.is_object()) {
        warn(where + ": not an object");
        continue;
      }
      std::string name;
      if (const auto n = node.find("Name"); n != node.end() && n->is_string()) name = shown(n->get_ref<const std::string&>());
      const std::string label = name.empty() ? where : fmt::format("{} ({})", where, name);

      int stun_port = 0;
      if (const auto p = node.find("STUNPort"); p != node.end() && !p->is_null()) {
        if (!p->is_number_integer() || p->get<std::int64_t>() < -1 || p->get<std::int64_t>() > 65535) {
          warn(label + ": \"STUNPort\" is not -1, 0 or a port number");
          continue;
        }
        stun_port = static_cast<int>(p->get<std::int64_t>());
      }
      if (stun_port == -1) {
        ++out.stun_disabled;
        continue;
      }
      ServerSpec spec;
      spec.port = stun_port == 0 ? kDefaultStunPort : static_cast<std::uint16_t>(stun_port);

      std::string host;
      if (const auto h = node.find("HostName"); h != node.end() && !h->is_null()) {
        if (!h->is_string()) {
          warn(label + ": \"HostName\" is not a string");
          continue;
        }
        host = h->get_ref<const std::string&>();
      }
      std::string problem;
      auto v4 = family_rule(node, "IPv4", Family::V4, problem);
      auto v6 = family_rule(node, "IPv6", Family::V6, problem);
      if (!v4 || !v6) {
        warn(label + ": " + problem);
        continue;
      }
      spec.v4 = *v4;
      spec.v6 = *v6;
      if (const auto t = node.find("STUNTestIP"); t != node.end() && t->is_string() && !t->get_ref<const std::string&>().empty()) {
        auto ip = IpAddr::parse(t->get_ref<const std::string&>());
        if (!ip) {
          warn(label + ": \"STUNTestIP\" is not an IP address");
          continue;
        }
        spec.v4 = ip->is_v4() ? FamilyRule{AddrRule::kFixed, *ip} : FamilyRule{AddrRule::kDisabled, IpAddr{}};
        spec.v6 = ip->is_v4() ? FamilyRule{AddrRule::kDisabled, IpAddr{}} : FamilyRule{AddrRule::kFixed, *ip};
      }
      const bool needs_lookup = spec.v4.rule == AddrRule::kResolve || spec.v6.rule == AddrRule::kResolve;
      if (needs_lookup && !(IpAddr::parse(host) || valid_host_name(host))) {
        // Without a usable HostName only the fixed addresses remain.
        if (spec.v4.rule == AddrRule::kResolve) spec.v4 = FamilyRule{AddrRule::kDisabled, IpAddr{}};
        if (spec.v6.rule == AddrRule::kResolve) spec.v6 = FamilyRule{AddrRule::kDisabled, IpAddr{}};
        if (spec.v4.rule == AddrRule::kDisabled && spec.v6.rule == AddrRule::kDisabled) {
          warn(label + (host.empty() ? ": no \"HostName\" and no address" : ": \"HostName\" is not a host name"));
          continue;
        }
        host.clear();
      }
      if (spec.v4.rule == AddrRule::kDisabled && spec.v6.rule == AddrRule::kDisabled) {
        warn(label + ": both IPv4 and IPv6 disabled");
        continue;
      }
      spec.host = host;
      spec.name = name.empty() ? (host.empty() ? where : shown(host)) : name;
      out.servers.push_back(std::move(spec));
    }
  }
  if (suppressed > 0) out.warnings.push_back(fmt::format("... and {} more skipped nodes", suppressed));
  if (out.servers.empty()) {
    std::string detail;
    if (out.stun_disabled > 0) detail = fmt::format("{} node(s) have STUNPort -1", out.stun_disabled);
    if (!out.warnings.empty()) {
      if (!detail.empty()) detail += "; ";
      detail += out.warnings.front();
    }
    return Err(DerpMapFailure{DerpMapError::kNoStunNodes, detail});
  }
  return out;
}

namespace {

struct Lookup {
  std::optional<IpAddr> v4;
  std::optional<IpAddr> v6;
  int error = 0;  // getaddrinfo error, 0 when fine
};

Lookup lookup(const std::string& host, bool want_v4, bool want_v6) {
  Lookup out;
  if (auto ip = IpAddr::parse(host)) {
    (ip->is_v4() ? out.v4 : out.v6) = *ip;
    return out;
  }
  addrinfo hints{};
  hints.ai_family = want_v4 && want_v6 ? AF_UNSPEC : (want_v4 ? AF_INET : AF_INET6);
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    out.error = rc;
    return out;
  }
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    auto ep = Endpoint::from_sockaddr(a->ai_addr, a->ai_addrlen);
    if (!ep) continue;
    auto& slot = ep->addr.is_v4() ? out.v4 : out.v6;
    if (!slot) slot = ep->addr;
  }
  ::freeaddrinfo(res);
  return out;
}

}  // namespace

Resolved resolve_servers(const std::vector<ServerSpec>& specs, bool want_v4, bool want_v6) {
  Resolved out;
  constexpr std::size_t kParallel = 8;
  std::vector<Lookup> found(specs.size());
  for (std::size_t start = 0; start < specs.size(); start += kParallel) {
    std::vector<std::future<Lookup>> batch;
    for (std::size_t i = start; i < std::min(specs.size(), start + kParallel); ++i) {
      const ServerSpec& s = specs[i];
      const bool need4 = want_v4 && s.v4.rule == AddrRule::kResolve;
      const bool need6 = want_v6 && s.v6.rule == AddrRule::kResolve;
      if ((!need4 && !need6) || s.host.empty()) {
        batch.push_back(std::async(std::launch::deferred, [] { return Lookup{}; }));
      } else {
        batch.push_back(std::async(std::launch::async, lookup, s.host, need4, need6));
      }
    }
    for (std::size_t k = 0; k < batch.size(); ++k) found[start + k] = batch[k].get();
  }

  std::set<Endpoint> seen;
  std::size_t dropped = 0;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const ServerSpec& s = specs[i];
    const Lookup& l = found[i];
    ServerTarget t;
    t.name = s.name;
    auto pick = [&](const FamilyRule& rule, const std::optional<IpAddr>& looked_up, bool want) -> std::optional<Endpoint> {
      if (!want) return std::nullopt;
      switch (rule.rule) {
        case AddrRule::kFixed:
          return Endpoint{rule.addr, s.port};
        case AddrRule::kDisabled:
          return std::nullopt;
        case AddrRule::kResolve:
          if (looked_up) return Endpoint{*looked_up, s.port};
          return std::nullopt;
      }
      return std::nullopt;
    };
    t.v4 = pick(s.v4, l.v4, want_v4);
    t.v6 = pick(s.v6, l.v6, want_v6);
    if (!t.v4 && !t.v6) {
      if (l.error != 0) {
        out.warnings.push_back(fmt::format("{}: cannot resolve \"{}\": {}", s.name, shown(s.host), gai_strerror(l.error)));
      } else {
        out.warnings.push_back(fmt::format("{}: no address in the families asked for", s.name));
      }
      continue;
    }
    if (t.v4 && seen.count(*t.v4)) t.v4.reset();
    if (t.v6 && seen.count(*t.v6)) t.v6.reset();
    if (!t.v4 && !t.v6) {
      out.warnings.push_back(fmt::format("{}: same address as an earlier server (skipped)", s.name));
      continue;
    }
    if (out.targets.size() >= kMaxServers) {
      ++dropped;
      continue;
    }
    if (t.v4) seen.insert(*t.v4);
    if (t.v6) seen.insert(*t.v6);
    out.targets.push_back(std::move(t));
  }
  if (dropped > 0) out.warnings.push_back(fmt::format("only the first {} servers are probed ({} more skipped)", kMaxServers, dropped));
  return out;
}

}  // namespace derpd::probe
