#include "tests/unit/nat/nat_sim.h"

#include <algorithm>
#include <array>

#include "client/nat/stun_observe.h"
#include "stun/responder.h"

namespace derpd::nat::sim {

namespace {

IpAddr ip(const char* text) { return *IpAddr::parse(text); }

// Where a server listens: its primary, and with an alternate the four RFC 5780 addresses.
bool listens_on(const Server& s, const Endpoint& at) {
  if (at == s.primary) return true;
  if (!s.alt) return false;
  const bool ip_ok = at.addr == s.primary.addr || at.addr == s.alt->addr;
  const bool port_ok = at.port == s.primary.port || at.port == s.alt->port;
  return ip_ok && port_ok;
}

Endpoint flip(const Server& s, const Endpoint& at, ChangeFlags f) {
  Endpoint r = at;
  if (f.ip) r.addr = at.addr == s.primary.addr ? s.alt->addr : s.primary.addr;
  if (f.port) r.port = at.port == s.primary.port ? s.alt->port : s.primary.port;
  return r;
}

struct ServerReply {
  // kRealResponder: the response datagram and the request's transaction id; the fields below
  // are then unused except `from`.
  std::vector<std::byte> datagram;
  stun::TxId txid;
  bool error = false;
  Endpoint from;  // where the packet leaves
  std::optional<Endpoint> mapped;
  std::optional<Endpoint> origin;
  std::optional<Endpoint> other;
};

class ServerSim {
 public:
  explicit ServerSim(const Server& s) : s_(s) {}

  std::optional<ServerReply> handle(const Endpoint& client, const Endpoint& at, ChangeFlags change, Family fam) {
    if (!listens_on(s_, at)) return std::nullopt;
    if (s_.quirk == Quirk::kRealResponder) return real(client, at, change);
    ++replies_;
    ServerReply r;
    r.from = at;
    r.mapped = client;
    if (s_.quirk == Quirk::kWrongFamilyMapped) {
      r.mapped = fam == Family::V4 ? Endpoint{ip("2001:db8:ffff::1"), client.port}
                                   : Endpoint{ip("192.0.2.250"), client.port};
    }
    // OTHER-ADDRESS as advertised.
    switch (s_.quirk) {
      case Quirk::kOtherIsPrimary:
        r.other = s_.primary;
        break;
      case Quirk::kOtherNowhere:
        r.other = Endpoint{bogus_alt_ip(fam), static_cast<std::uint16_t>(s_.primary.port + 1)};
        break;
      default:
        if (s_.alt) r.other = flip(s_, at, ChangeFlags{true, true});
        if (s_.alt && s_.quirk == Quirk::kOtherChanges && replies_ > 1) r.other->port = 5555;
        break;
    }
    if (change.any()) {
      const bool honours = s_.alt && (s_.quirk == Quirk::kHonest || s_.quirk == Quirk::kNoResponseOrigin ||
                                      s_.quirk == Quirk::kOtherChanges || s_.quirk == Quirk::kWrongFamilyMapped);
      if (!s_.alt && s_.quirk == Quirk::kHonest) {
        r.error = true;  // 420: no alternate address
        r.mapped.reset();
        r.other.reset();
      } else if (honours) {
        r.from = flip(s_, at, change);
      } else if (s_.quirk == Quirk::kThirdAddress) {
        r.from = Endpoint{s_.primary.addr, 3999};
      }
    }
    r.origin = r.from;
    if (change.any() && s_.quirk == Quirk::kLiesOrigin) r.origin = flip(s_, at, change);
    if (s_.quirk == Quirk::kNoResponseOrigin) r.origin.reset();
    return r;
  }

  std::optional<ServerReply> real(const Endpoint& client, const Endpoint& at, ChangeFlags change) {
    const auto addrs = stun::ServerAddresses::of(s_.primary, s_.alt);
    ServerReply r;
    r.txid = stun::new_txid();
    std::array<std::byte, 256> request{};
    const std::size_t n = build_test_request(r.txid, change, request);
    if (n == 0) return std::nullopt;
    stun::Request req;
    req.datagram = Bytes(request.data(), n);
    req.remote = client;
    req.local = at;
    req.received_on = stun::SocketIndex{static_cast<std::uint8_t>(at.addr == s_.primary.addr ? 0 : 1),
                                        static_cast<std::uint8_t>(at.port == s_.primary.port ? 0 : 1)};
    std::array<std::byte, stun::kMaxResponseSize> out{};
    stun::Reply reply;
    stun::respond(req, addrs, out, reply);
    if (reply.size == 0 || reply.destination != client) return std::nullopt;
    r.from = Endpoint{addrs.ip[reply.send_from.ip & 1], addrs.port[reply.send_from.port & 1]};
    r.datagram.assign(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(reply.size));
    return r;
  }

  static IpAddr bogus_alt_ip(Family f) { return f == Family::V4 ? ip("203.0.113.99") : ip("2001:db8:99::99"); }

 private:
  const Server& s_;
  int replies_ = 0;
};

class NetworkSim {
 public:
  explicit NetworkSim(const World& w) : w_(w) {
    for (const auto& l : w.layers) nats_.emplace_back(l);
    for (const auto& s : w.servers) servers_.emplace_back(s);
  }

  TestRecord exchange(std::size_t server, const Endpoint& local, const Endpoint& dst, ChangeFlags change) {
    TestRecord t;
    t.server = server;
    t.local = local;
    t.sent_to = dst;
    t.change = change;
    t.outcome = Outcome::kTimeout;
    if (w_.udp_blocked) return t;
    Endpoint src = local;
    for (auto& n : nats_) src = n.outbound(src, dst);
    auto reply = servers_[server].handle(src, dst, change, w_.family);
    if (!reply) return t;
    // Back through the NATs, outermost first.
    std::optional<Endpoint> to = src;
    for (auto it = nats_.rbegin(); it != nats_.rend() && to; ++it) to = it->inbound(reply->from, *to);
    if (!to) return t;  // filtered
    const auto rtt = std::chrono::microseconds(20000 + 1000 * static_cast<int>(server));
    if (!reply->datagram.empty()) {
      auto st = record_response(t, reply->txid, reply->datagram, reply->from, rtt);
      if (!st.ok()) t.outcome = Outcome::kTimeout;  // an unreadable answer is no answer
      return t;
    }
    t.outcome = reply->error ? Outcome::kErrorReply : Outcome::kReply;
    t.error_code = reply->error ? 420 : 0;
    t.mapped = reply->mapped;
    t.response_origin = reply->origin;
    t.other_address = reply->other;
    t.source = reply->from;
    t.rtt = rtt;
    return t;
  }

 private:
  const World& w_;
  std::vector<Nat> nats_;
  std::vector<ServerSim> servers_;
};

}  // namespace

Endpoint Nat::outbound(const Endpoint& src, const Endpoint& dst) {
  Endpoint key_dst;  // EIM and no-NAT: one mapping per inner endpoint
  if (spec_.map == Map::kAdm) key_dst = Endpoint{dst.addr, 0};
  if (spec_.map == Map::kApdm) key_dst = dst;
  auto key = std::make_pair(src, key_dst);
  auto it = by_key_.find(key);
  std::size_t idx;
  if (it != by_key_.end()) {
    idx = it->second;
  } else {
    Endpoint ext = src;
    if (spec_.map != Map::kNone) {
      ext.addr = spec_.public_ip;
      if (!spec_.preserve_port || by_external_.count(ext)) {
        do {
          ext.port = next_port_++;
        } while (by_external_.count(ext));
      }
    }
    idx = mappings_.size();
    mappings_.push_back(Mapping{src, ext, {}});
    by_key_[key] = idx;
    by_external_[ext] = idx;
  }
  mappings_[idx].contacted.insert(dst);
  return mappings_[idx].external;
}

std::optional<Endpoint> Nat::inbound(const Endpoint& src, const Endpoint& dst) {
  auto it = by_external_.find(dst);
  if (it == by_external_.end()) {
    if (spec_.map == Map::kNone && spec_.filt == Filt::kOpen) return dst;
    return std::nullopt;
  }
  const Mapping& m = mappings_[it->second];
  switch (spec_.filt) {
    case Filt::kOpen:
    case Filt::kEif:
      return m.inner;
    case Filt::kAdf:
      for (const auto& c : m.contacted)
        if (c.addr == src.addr) return m.inner;
      return std::nullopt;
    case Filt::kApdf:
      if (m.contacted.count(src)) return m.inner;
      return std::nullopt;
  }
  return std::nullopt;
}

FamilyObservations run_probe(const World& world) {
  FamilyObservations obs;
  obs.family = world.family;
  obs.interface_addresses = world.interface_addresses;
  NetworkSim net(world);
  for (const auto& s : world.servers) obs.servers.push_back(ServerInfo{s.name, s.primary, std::nullopt});

  const Endpoint l0{world.host.addr, 40000};
  auto run = [&](std::size_t s, const Endpoint& local, const Endpoint& dst, ChangeFlags change) {
    obs.tests.push_back(net.exchange(s, local, dst, change));
    const TestRecord& t = obs.tests.back();
    if (t.outcome == Outcome::kReply && !obs.servers[s].other_address && t.other_address && dst == obs.servers[s].primary)
      obs.servers[s].other_address = t.other_address;
  };

  for (std::size_t s = 0; s < world.servers.size(); ++s) run(s, l0, obs.servers[s].primary, {});
  for (std::size_t s = 0; s < world.servers.size(); ++s) {
    if (!obs.servers[s].other_address) continue;
    const Endpoint p = obs.servers[s].primary;
    const Endpoint o = *obs.servers[s].other_address;
    run(s, l0, Endpoint{o.addr, p.port}, {});
    run(s, l0, o, {});
    run(s, l0, Endpoint{p.addr, o.port}, {});
    run(s, l0, p, ChangeFlags{true, true});
    run(s, l0, p, ChangeFlags{false, true});
    run(s, l0, p, ChangeFlags{true, false});
  }
  for (std::size_t s = 0; s < world.servers.size(); ++s) {
    if (!obs.servers[s].other_address) continue;
    const Endpoint fresh{world.host.addr, static_cast<std::uint16_t>(41000 + s)};
    const Endpoint p = obs.servers[s].primary;
    run(s, fresh, p, {});
    run(s, fresh, p, ChangeFlags{true, true});
    run(s, fresh, p, ChangeFlags{false, true});
  }
  obs.hairpin = Hairpin::kUntested;
  return obs;
}

Server rfc5780_server(Family f, Quirk q) {
  if (f == Family::V4) {
    return Server{"rfc5780", Endpoint{ip("203.0.113.10"), 3478}, Endpoint{ip("203.0.113.11"), 3479}, q};
  }
  return Server{"rfc5780", Endpoint{ip("2001:db8:10::10"), 3478}, Endpoint{ip("2001:db8:10::11"), 3479}, q};
}

Server single_ip_server(Family f, int which, std::uint16_t port, Quirk q) {
  const std::string n = "single" + std::to_string(which) + ":" + std::to_string(port);
  if (f == Family::V4) {
    return Server{n, Endpoint{ip(which == 1 ? "198.51.100.30" : "198.51.100.40"), port}, std::nullopt, q};
  }
  return Server{n, Endpoint{ip(which == 1 ? "2001:db8:30::30" : "2001:db8:40::40"), port}, std::nullopt, q};
}

}  // namespace derpd::nat::sim
