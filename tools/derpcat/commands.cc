#include "tools/derpcat/commands.h"

#include <algorithm>
#include <cstdio>
#include <thread>

#include <fmt/format.h>

#include "client/derp/keys.h"

namespace derpcat {

namespace dc = derpd::derpclient;
namespace proto = derpd::protocol;

std::chrono::milliseconds seconds_to_ms(double s) {
  return std::chrono::milliseconds(static_cast<long long>(std::max(0.0, s) * 1000.0));
}

double to_ms(std::chrono::nanoseconds d) { return static_cast<double>(d.count()) / 1e6; }

bool make_options(const Global& g, dc::Options& out, const Output& o) {
  out.url = g.url;
  out.tls.insecure_skip_verify = g.insecure;
  out.tls.cert_name = g.cert_name;
  out.tls.ca_file = g.ca_file;
  out.app_name = g.app_name;
  out.fast_start = !g.no_fast_start;
  out.connect_timeout = seconds_to_ms(g.connect_timeout_s);
  std::string why;
  if (!g.key_file.empty()) {
    auto k = dc::load_key_file(g.key_file, &why);
    if (!k) {
      o.error("key", why);
      return false;
    }
    out.private_key = *k;
  }
  if (!g.mesh_key_file.empty()) {
    auto m = dc::load_mesh_key_file(g.mesh_key_file, &why);
    if (!m) {
      o.error("mesh key", why);
      return false;
    }
    out.mesh_key = *m;
  }
  return true;
}

Fields connect_fields(const dc::Client& c) {
  const auto& i = c.info();
  Fields f;
  f["url"] = i.url.to_string();
  f["me"] = c.public_key().to_string();
  f["server"] = c.server_key().to_string();
  f["tls"] = i.tls.version.empty() ? std::string("none") : i.tls.version;
  f["fast_start"] = i.fast_start;
  f["connect_ms"] = to_ms(i.connect_time);
  if (i.remote) f["remote"] = i.remote->to_string();
  return f;
}

std::optional<dc::Client> connect_and_report(const dc::Options& options, const Output& o, std::string_view role) {
  std::string why;
  auto c = dc::Client::connect(options, &why);
  if (!c) {
    o.error(fmt::format("connect {}", options.url), fmt::format("{}: {}", dc::to_string(c.error()), why));
    return std::nullopt;
  }
  Fields f = Fields::object();
  if (!role.empty()) f["role"] = role;
  f.update(connect_fields(*c));
  o.event("connected", f);
  return std::move(*c);
}

int cmd_keygen(const std::string& out_path, const Output& o) {
  if (!proto::crypto_init()) {
    o.error("keygen", "libsodium failed to initialise");
    return kExitFail;
  }
  const auto key = proto::NodePrivate::generate();
  if (out_path.empty()) {
    if (o.json()) {
      o.event("key", Fields{{"public", key.public_key().to_string()}, {"private", key.to_text()}});
    } else {
      std::fputs((proto::format_key_file(key) + "\n").c_str(), stdout);
    }
    return kExitOk;
  }
  std::string why;
  if (auto s = dc::save_key_file(out_path, key, &why); !s) {
    o.error("keygen", why);
    return kExitFail;
  }
  o.event("key", Fields{{"file", out_path}, {"public", key.public_key().to_string()}});
  return kExitOk;
}

int cmd_pubkey(const Global& g, const Output& o) {
  if (g.key_file.empty()) {
    o.error("pubkey", "needs --key FILE");
    return kExitUsage;
  }
  std::string why;
  auto k = dc::load_key_file(g.key_file, &why);
  if (!k) {
    o.error("pubkey", why);
    return kExitFail;
  }
  if (o.json()) {
    o.event("key", Fields{{"file", g.key_file}, {"public", k->public_key().to_string()}});
  } else {
    std::printf("%s\n", k->public_key().to_string().c_str());
  }
  return kExitOk;
}

namespace {

std::string filler(int seq, std::size_t size) {
  std::string s = fmt::format("derpcat {} ", seq);
  if (s.size() > size) s.resize(size);
  while (s.size() < size) s += static_cast<char>('a' + s.size() % 26);
  return s;
}

}  // namespace

int cmd_send(const Global& g, const SendArgs& a, const Output& o) {
  auto to = proto::NodePublic::parse(a.to);
  if (!to) {
    o.error("send", fmt::format("--to: not a nodekey:<64 hex> key ({})", proto::to_string(to.error())));
    return kExitUsage;
  }
  if (a.count < 1 || a.size > proto::kMaxPacketSize || a.data.size() > proto::kMaxPacketSize) {
    o.error("send", fmt::format("--count must be >= 1 and packets at most {} bytes", proto::kMaxPacketSize));
    return kExitUsage;
  }
  dc::Options opt;
  if (!make_options(g, opt, o)) return kExitUsage;
  auto conn = connect_and_report(opt, o, {});
  if (!conn) return kExitFail;
  dc::Client& c = *conn;
  for (int i = 0; i < a.count; ++i) {
    const std::string payload = a.data.empty() ? filler(i, a.size) : a.data;
    if (auto s = c.send(*to, derpd::as_bytes(payload)); !s) {
      o.error("send", fmt::format("{}: {}", dc::to_string(s.error()), c.error_detail()));
      return kExitFail;
    }
    o.event("sent", Fields{{"to", to->to_string()}, {"seq", i}, {"bytes", payload.size()}});
    if (a.interval_ms > 0 && i + 1 < a.count) std::this_thread::sleep_for(std::chrono::milliseconds(a.interval_ms));
  }
  // A ping round trip: the server has handled every packet before it answers.
  auto rtt = c.ping(std::chrono::seconds(5));
  if (!rtt) {
    o.error("send", fmt::format("server did not confirm: {}: {}", dc::to_string(rtt.error()), c.error_detail()));
    return kExitFail;
  }
  o.event("done", Fields{{"sent", a.count}, {"rtt_ms", to_ms(*rtt)}});
  return kExitOk;
}

std::string_view reason_name(proto::PeerGoneReason r) {
  switch (r) {
    case proto::PeerGoneReason::kDisconnected: return "disconnected";
    case proto::PeerGoneReason::kNotHere: return "not_here";
    case proto::PeerGoneReason::kMeshConnBroke: return "mesh_conn_broke";
  }
  return "unknown";
}

// Prints the informational messages every command may see; false for the ones it should handle.
bool print_side_message(const dc::Message& m, const Output& o) {
  if (const auto* h = std::get_if<dc::Health>(&m)) {
    o.event("health", Fields{{"problem", h->problem}});
    return true;
  }
  if (const auto* r = std::get_if<dc::Restarting>(&m)) {
    o.event("restarting", Fields{{"reconnect_in_ms", r->reconnect_in.count()}, {"try_for_ms", r->try_for.count()}});
    return true;
  }
  return std::holds_alternative<dc::KeepAlive>(m) || std::holds_alternative<dc::Ping>(m) ||
         std::holds_alternative<dc::Pong>(m);
}

int cmd_recv(const Global& g, const RecvArgs& a, const Output& o) {
  std::optional<proto::NodePublic> from;
  if (!a.from.empty()) {
    auto k = proto::NodePublic::parse(a.from);
    if (!k) {
      o.error("recv", "--from: not a nodekey:<64 hex> key");
      return kExitUsage;
    }
    from = *k;
  }
  if (a.count < 0 || a.timeout_s < 0) {
    o.error("recv", "--count and --timeout must not be negative");
    return kExitUsage;
  }
  dc::Options opt;
  if (!make_options(g, opt, o)) return kExitUsage;
  auto conn = connect_and_report(opt, o, {});
  if (!conn) return kExitFail;
  dc::Client& c = *conn;
  const bool forever = a.timeout_s == 0;
  const auto deadline = dc::Clock::now() + seconds_to_ms(a.timeout_s);
  int got = 0;
  while (a.count == 0 || got < a.count) {
    const auto left = forever ? std::chrono::milliseconds(60'000)
                              : std::chrono::duration_cast<std::chrono::milliseconds>(deadline - dc::Clock::now());
    if (left.count() <= 0) break;
    auto m = c.recv(left);
    if (!m) {
      if (m.error() == dc::Error::kTimeout) continue;
      o.error("recv", fmt::format("{}: {}", dc::to_string(m.error()), c.error_detail()));
      return kExitFail;
    }
    if (const auto* p = std::get_if<dc::RecvPacket>(&*m)) {
      if (from && p->src != *from) continue;
      const std::string data(reinterpret_cast<const char*>(p->data.data()), p->data.size());
      o.event("packet", Fields{{"from", p->src.to_string()}, {"bytes", p->data.size()}, {"data", preview(data)}});
      ++got;
    } else if (const auto* pg = std::get_if<dc::PeerGone>(&*m)) {
      o.event("peer_gone", Fields{{"peer", pg->peer.to_string()}, {"reason", reason_name(pg->reason)}});
    } else {
      print_side_message(*m, o);
    }
  }
  const bool ok = a.count == 0 || got >= a.count;
  o.event("done", Fields{{"received", got}, {"ok", ok}});
  return ok ? kExitOk : kExitFail;
}

int cmd_ping(const Global& g, const PingArgs& a, const Output& o) {
  if (a.count < 1 || a.timeout_s <= 0) {
    o.error("ping", "--count must be >= 1 and --timeout > 0");
    return kExitUsage;
  }
  dc::Options opt;
  if (!make_options(g, opt, o)) return kExitUsage;
  auto conn = connect_and_report(opt, o, {});
  if (!conn) return kExitFail;
  dc::Client& c = *conn;
  int received = 0;
  double min = 0, max = 0, sum = 0;
  for (int i = 0; i < a.count; ++i) {
    auto rtt = c.ping(seconds_to_ms(a.timeout_s));
    if (rtt) {
      const double ms = to_ms(*rtt);
      min = received == 0 ? ms : std::min(min, ms);
      max = std::max(max, ms);
      sum += ms;
      ++received;
      o.event("pong", Fields{{"seq", i}, {"rtt_ms", ms}});
    } else if (rtt.error() == dc::Error::kTimeout) {
      o.event("ping_timeout", Fields{{"seq", i}});
    } else {
      o.error("ping", fmt::format("{}: {}", dc::to_string(rtt.error()), c.error_detail()));
      break;
    }
    if (a.interval_ms > 0 && i + 1 < a.count) std::this_thread::sleep_for(std::chrono::milliseconds(a.interval_ms));
  }
  Fields f{{"sent", a.count}, {"received", received}};
  if (received > 0) {
    f["min_ms"] = min;
    f["avg_ms"] = sum / received;
    f["max_ms"] = max;
  }
  f["ok"] = received == a.count;
  o.event("done", f);
  return received == a.count ? kExitOk : kExitFail;
}

int cmd_watch(const Global& g, const WatchArgs& a, const Output& o) {
  if (g.mesh_key_file.empty()) {
    o.error("watch", "needs --mesh-key-file (the server only lets mesh peers watch)");
    return kExitUsage;
  }
  if (a.count < 0 || a.timeout_s <= 0) {
    o.error("watch", "--count must not be negative and --timeout > 0");
    return kExitUsage;
  }
  dc::Options opt;
  if (!make_options(g, opt, o)) return kExitUsage;
  opt.watch_conns = true;
  auto conn = connect_and_report(opt, o, {});
  if (!conn) return kExitFail;
  dc::Client& c = *conn;
  const auto deadline = dc::Clock::now() + seconds_to_ms(a.timeout_s);
  int events = 0;
  while (a.count == 0 || events < a.count) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - dc::Clock::now());
    if (left.count() <= 0) break;
    auto m = c.recv(left);
    if (!m) {
      if (m.error() == dc::Error::kTimeout) break;
      o.error("watch", fmt::format("{}: {}", dc::to_string(m.error()), c.error_detail()));
      return kExitFail;
    }
    if (const auto* pp = std::get_if<dc::PeerPresent>(&*m)) {
      Fields f{{"peer", pp->peer.to_string()}, {"flags", pp->flags}};
      if (pp->endpoint) f["endpoint"] = pp->endpoint->to_string();
      o.event("peer_present", f);
      ++events;
    } else if (const auto* pg = std::get_if<dc::PeerGone>(&*m)) {
      o.event("peer_gone", Fields{{"peer", pg->peer.to_string()}, {"reason", reason_name(pg->reason)}});
      ++events;
    } else {
      print_side_message(*m, o);
    }
  }
  const bool ok = a.count == 0 || events >= a.count;
  o.event("done", Fields{{"events", events}, {"ok", ok}});
  return ok ? kExitOk : kExitFail;
}

}  // namespace derpcat
