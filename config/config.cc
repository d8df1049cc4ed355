// load(): command line + YAML file -> Config, dev defaults, cross-field rules, derived values.
#include "config/config.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>

#include "config/options.h"

#ifndef DERPD_VERSION
#error "DERPD_VERSION must be defined by the build (CMake PROJECT_VERSION)"
#endif

namespace derpd::config {
namespace detail {
namespace {

// Reads at most limit + 1 bytes so parse_yaml can reject an oversized file without us reading
// all of it (a path like /dev/zero must not hang start-up).
std::string read_config_file(const std::string& path, std::size_t limit) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("--config {}: cannot open: {}", path, std::strerror(errno)));
  std::string text;
  char buf[16384];
  while (text.size() <= limit) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      throw Error(fmt::format("--config {}: cannot read: {}", path, std::strerror(err)));
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

void apply_all(Config& c, std::span<const Setting> settings) {
  for (const Setting& s : settings) {
    const Option& o = *s.option;
    if (o.scope == Scope::kUnsupported) {
      // Go semantics: the last value wins, so one entry per flag.
      std::string prefix = fmt::format("-{}=", o.name);
      std::erase_if(c.unsupported, [&](const std::string& u) { return u.starts_with(prefix); });
      c.unsupported.push_back(prefix + (o.secret ? std::string("(redacted)") : s.values.at(0)));
      continue;
    }
    if (o.apply == nullptr) continue;
    if (o.kind != ValueKind::kList && o.kind != ValueKind::kRepeated && s.values.size() != 1) {
      throw Error(fmt::format("{}: expected one value, got {}", s.where, s.values.size()));
    }
    try {
      o.apply(c, s.values);
    } catch (const BadValue& e) {
      const std::string& where = e.item() < s.item_where.size() ? s.item_where[e.item()] : s.where;
      throw Error(fmt::format("{}: {}", where, e.what()));
    }
  }
}

bool overlaps(const IpAddr& a, const IpAddr& b) {
  return a.family() == b.family() && (a == b || a.is_unspecified() || b.is_unspecified());
}

std::string family_name(const IpAddr& a) { return a.is_v4() ? "IPv4" : "IPv6"; }

}  // namespace

std::string where_in(std::span<const Setting> settings, std::string_view key) {
  for (auto it = settings.rbegin(); it != settings.rend(); ++it) {
    if (it->option->name == key) return it->where;
  }
  return fmt::format("key \"{}\"", key);
}

Config with_dev_defaults(Config c) {
  c.dev = true;
  c.derp_addr = Endpoint{IpAddr::loopback(Family::V4), 3340};
  c.certmode = CertMode::kPlaintext;
  c.http_port = -1;
  c.metrics_addr = Endpoint{IpAddr::loopback(Family::V4), 9100};
  c.key_file.clear();
  // STUN stays derived from derp_addr: 127.0.0.1 + stun_port (3478).
  return c;
}

Config build(const Config& base, std::span<const Setting> settings) {
  Config c = base;
  apply_all(c, settings);
  if (c.dev && !base.dev) {
    // dev changes the defaults; apply the same settings again over them so explicit values win.
    c = with_dev_defaults(base);
    apply_all(c, settings);
  }
  return c;
}

void finalize_at(Config& c, const std::function<std::string(std::string_view key)>& where) {
  // STUN: one address per family.
  for (std::size_t i = 0; i < c.stun_addrs.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (c.stun_addrs[i].addr.family() == c.stun_addrs[j].addr.family()) {
        throw Error(fmt::format("{}: at most one address per family, got {} and {}", where("stun-addr"),
                                c.stun_addrs[j].to_string(), c.stun_addrs[i].to_string()));
      }
    }
  }

  // RFC 5780 alternate: same family as a primary, another IP and another port.
  if (c.stun_alt_addr) {
    const Endpoint& alt = *c.stun_alt_addr;
    std::string at = where("stun-alt-addr");
    std::optional<Endpoint> primary;
    if (c.stun_addrs.empty()) {
      Endpoint derived{c.derp_addr.addr, static_cast<std::uint16_t>(c.stun_port)};
      if (derived.addr.family() != alt.addr.family()) {
        throw Error(fmt::format("{}: {} is {} but the STUN address derived from addr is {} ({}); add a stun-addr of "
                                "that family",
                                at, alt.to_string(), family_name(alt.addr), family_name(derived.addr),
                                derived.to_string()));
      }
      primary = derived;
    } else {
      for (const auto& e : c.stun_addrs) {
        if (e.addr.family() == alt.addr.family()) primary = e;
      }
      if (!primary) {
        throw Error(fmt::format("{}: {} is {} but no stun-addr is {}", at, alt.to_string(), family_name(alt.addr),
                                family_name(alt.addr)));
      }
    }
    if (alt.addr.is_unspecified()) {
      throw Error(fmt::format("{}: the alternate IP must be a specific address, got {}", at, alt.to_string()));
    }
    if (primary->addr.is_unspecified()) {
      throw Error(fmt::format("{}: an alternate address needs a specific primary IP, but the primary STUN address "
                              "is {}; set stun-addr",
                              at, primary->to_string()));
    }
    if (alt.addr == primary->addr) {
      throw Error(fmt::format("{}: the alternate IP must differ from the primary IP ({} vs {})", at, alt.to_string(),
                              primary->to_string()));
    }
    // Port 0 on both sides (tests) means two kernel-chosen ports, which differ.
    if (alt.port != 0 && alt.port == primary->port) {
      throw Error(fmt::format("{}: the alternate port must differ from the primary port ({} vs {})", at,
                              alt.to_string(), primary->to_string()));
    }
  }

  if (c.certmode == CertMode::kManual && c.certdir.empty()) {
    throw Error(fmt::format("{}: certmode manual needs certdir (the directory holding {}.crt and .key)",
                            where("certmode"), c.hostname));
  }

  // TCP listeners that would collide.
  bool tls = serves_tls(c);
  if (c.derp_enabled && c.metrics_addr.port != 0 && c.metrics_addr.port == c.derp_addr.port &&
      overlaps(c.metrics_addr.addr, c.derp_addr.addr)) {
    throw Error(fmt::format("{}: {} clashes with the DERP listener {}", where("metrics-addr"),
                            c.metrics_addr.to_string(), c.derp_addr.to_string()));
  }
  if (c.derp_enabled && tls && c.http_port > 0) {
    if (c.http_port == c.derp_addr.port) {
      throw Error(fmt::format("{}: port {} is also the DERP port of addr {}", where("http-port"), c.http_port,
                              c.derp_addr.to_string()));
    }
    if (c.metrics_addr.port == c.http_port && overlaps(c.metrics_addr.addr, c.derp_addr.addr)) {
      throw Error(fmt::format("{}: {} clashes with the HTTP listener on port {}", where("metrics-addr"),
                              c.metrics_addr.to_string(), c.http_port));
    }
  }

  // derper's default certmode needs an ACME client: say so instead of failing later in silence.
  bool noted = std::any_of(c.unsupported.begin(), c.unsupported.end(),
                           [](const std::string& u) { return u.starts_with("-certmode="); });
  if (c.certmode == CertMode::kLetsEncrypt && c.derp_enabled && tls && !noted) {
    c.unsupported.emplace_back("-certmode=letsencrypt");
  }
}

}  // namespace detail

LoadResult load(int argc, const char* const* argv) { return load(argc, argv, std::cout); }

LoadResult load(int argc, const char* const* argv, std::ostream& out) {
  using namespace detail;
  LoadResult r;
  CommandLine cl = parse_command_line(argc, argv);
  if (cl.help) {
    out << usage();
    r.exit_now = true;
    return r;
  }
  if (cl.version) {
    out << "derpd " << version() << "\n";
    r.exit_now = true;
    return r;
  }

  std::vector<Setting> settings;
  if (!cl.config_path.empty()) {
    settings = parse_yaml(read_config_file(cl.config_path, kMaxYamlBytes), cl.config_path);
  }
  // Flags after the file: they win whatever their position on the command line.
  settings.insert(settings.end(), std::make_move_iterator(cl.settings.begin()),
                  std::make_move_iterator(cl.settings.end()));

  r.config = build(Config{}, settings);
  finalize_at(r.config, [&](std::string_view key) { return where_in(settings, key); });
  return r;
}

void apply_yaml(Config& cfg, const std::string& yaml_text, const std::string& origin) {
  using namespace detail;
  std::vector<Setting> settings = parse_yaml(yaml_text, origin);
  Config c = build(cfg, settings);
  finalize_at(c, [&](std::string_view key) { return where_in(settings, key); });
  cfg = std::move(c);
}

void finalize(Config& cfg) {
  detail::finalize_at(cfg, [](std::string_view key) { return fmt::format("key \"{}\"", key); });
}

std::string_view version() { return DERPD_VERSION; }

std::vector<Endpoint> effective_stun_addrs(const Config& cfg) {
  if (!cfg.stun_enabled) return {};
  if (!cfg.stun_addrs.empty()) return cfg.stun_addrs;
  const auto port = static_cast<std::uint16_t>(cfg.stun_port);
  // derper binds ":PORT", every interface of both families; so does derpd for a wildcard -a.
  if (cfg.derp_addr.addr.is_v4() && cfg.derp_addr.addr.is_unspecified())
    return {Endpoint{cfg.derp_addr.addr, port}, Endpoint{IpAddr::any(Family::V6), port}};
  return {Endpoint{cfg.derp_addr.addr, port}};
}

bool serves_tls(const Config& cfg) {
  switch (cfg.certmode) {
    case CertMode::kManual:
    case CertMode::kDev:
      return true;
    case CertMode::kPlaintext:
      return false;
    case CertMode::kLetsEncrypt:
      return cfg.derp_addr.port == 443;
  }
  return false;
}

std::pair<std::string, std::string> manual_cert_paths(const Config& cfg) {
  std::string name;
  for (char ch : cfg.hostname) {
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.') {
      name.push_back(ch);
    }
  }
  std::string dir = cfg.certdir;
  if (!dir.empty() && dir.back() != '/') dir.push_back('/');
  return {dir + name + ".crt", dir + name + ".key"};
}

}  // namespace derpd::config
