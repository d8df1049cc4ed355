#include "tests/unit/probe/fake_net.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "client/nat/stun_observe.h"
#include "client/probe/portmap.h"
#include "stun/message.h"
#include "stun/responder.h"

namespace derpd::probe::fake {

namespace {

bool listens_on(const FakeServer& s, const Endpoint& at) {
  if (at == s.primary) return true;
  if (!s.alt) return false;
  return (at.addr == s.primary.addr || at.addr == s.alt->addr) && (at.port == s.primary.port || at.port == s.alt->port);
}

bool is_tailnode_request(Bytes data) {
  auto m = stun::Message::parse(data);
  if (!m || m->type() != stun::MessageType::kBindingRequest) return false;
  auto sw = m->find(stun::AttrType::kSoftware);
  return sw && as_chars(sw->value) == "tailnode" && m->has_fingerprint();
}

std::vector<std::byte> copy(Bytes b) { return std::vector<std::byte>(b.begin(), b.end()); }

}  // namespace

FakeNet::FakeNet() : start_(Clock::now()), now_(start_) {}
FakeNet::~FakeNet() = default;

std::chrono::microseconds FakeNet::elapsed() const {
  return std::chrono::duration_cast<std::chrono::microseconds>(now_ - start_);
}

int FakeNet::open_sockets() const {
  return static_cast<int>(std::count_if(socks_.begin(), socks_.end(), [](const Sock& s) { return s.open; }));
}

nat::sim::Nat& FakeNet::layer(Family f, std::size_t i) {
  auto& v = f == Family::V4 ? nats_v4_ : nats_v6_;
  while (v.size() < layers.size()) {
    nat::sim::NatLayer spec = layers[v.size()];
    if (f == Family::V6 && spec.public_ip.is_v4()) {
      // Same behaviour for IPv6, with a documentation-prefix public address per layer.
      spec.public_ip = *IpAddr::parse(v.size() == 0 ? "2001:db8:1::1" : "2001:db8:2::1");
    }
    layer_public_[f == Family::V4 ? 0 : 1].push_back(spec.public_ip);
    v.push_back(std::make_unique<nat::sim::Nat>(spec));
  }
  return *v[i];
}

IpAddr FakeNet::public_ip(Family f) {
  IpAddr ip = f == Family::V4 ? host_v4 : host_v6;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    layer(f, i);  // creates the layer, fixing its IPv6 public address
    if (layers[i].map != nat::sim::Map::kNone) ip = layer_public_[f == Family::V4 ? 0 : 1][i];
  }
  return ip;
}

Result<SocketId, NetError> FakeNet::open(Family f) {
  if (f == Family::V6 && !has_v6) return Err(NetError::kNoFamily);
  socks_.push_back(Sock{Endpoint{f == Family::V4 ? host_v4 : host_v6, next_port_++}, true});
  return static_cast<SocketId>(socks_.size() - 1);
}

Endpoint FakeNet::local(SocketId s) const { return s < socks_.size() ? socks_[s].local : Endpoint{}; }

void FakeNet::close(SocketId s) {
  if (s < socks_.size()) socks_[s].open = false;
}

std::optional<IpAddr> FakeNet::source_address_for(const Endpoint& to) {
  if (to.addr.is_v4()) return host_v4;
  if (has_v6) return host_v6;
  return std::nullopt;
}

std::vector<IpAddr> FakeNet::interface_addresses(Family f) {
  if (f == Family::V4) return {host_v4};
  if (has_v6) return {host_v6};
  return {};
}

Status<NetError> FakeNet::send(SocketId s, const Endpoint& to, Bytes datagram) {
  if (s >= socks_.size() || !socks_[s].open) return Err(NetError::kOther);
  if (to.addr.family() != socks_[s].local.addr.family()) return Err(NetError::kNoFamily);
  sent_.push_back(Sent{elapsed(), s, to, copy(datagram)});
  from_host(socks_[s].local, to, datagram);
  return {};
}

void FakeNet::from_host(const Endpoint& src, const Endpoint& dst, Bytes data) {
  const Family f = dst.addr.family();
  const TimePoint arrive = now_ + one_way;
  // The gateway is on the LAN side of every NAT; so is the SSDP multicast group.
  if (gateway && f == Family::V4 && (dst.addr == gateway->address || dst.addr == ssdp_multicast_address())) {
    gateway_receive(src, dst, data);
    return;
  }
  Endpoint outer = src;
  for (std::size_t i = 0; i < layers.size(); ++i) outer = layer(f, i).outbound(outer, dst);
  // Hairpinning: a packet for the outermost NAT's own public address (or, without NAT, for the
  // host itself) comes straight back in.
  if (dst.addr == public_ip(f)) {
    if (layers.empty()) {
      queue_.push_back(Delivery{arrive, seq_++, src, dst, copy(data)});
    } else if (hairpin) {
      to_host(outer, dst, copy(data), arrive);
    }
    return;
  }
  for (std::size_t i = 0; i < servers.size(); ++i) {
    if (!listens_on(servers[i], dst)) continue;
    int& count = received_[i];
    if (count++ < servers[i].drop_first) return;  // lost on the way
    // The server answers at arrival time; server_receive queues replies from then.
    const TimePoint saved = now_;
    now_ = arrive;
    server_receive(i, outer, dst, data);
    now_ = saved;
    return;
  }
}

void FakeNet::to_host(const Endpoint& from, const Endpoint& public_dst, std::vector<std::byte> data, TimePoint at) {
  const Family f = public_dst.addr.family();
  std::optional<Endpoint> inner = public_dst;
  for (std::size_t i = layers.size(); i-- > 0 && inner;) inner = layer(f, i).inbound(from, *inner);
  if (!inner) return;  // filtered
  queue_.push_back(Delivery{at, seq_++, from, *inner, std::move(data)});
}

void FakeNet::server_receive(std::size_t index, const Endpoint& client, const Endpoint& at, Bytes data) {
  const FakeServer& s = servers[index];
  const TimePoint back = now_ + one_way;
  if (s.behaviour == Behaviour::kSilent) return;
  if (s.behaviour == Behaviour::kTailnodeOnly && !is_tailnode_request(data)) return;

  const auto addrs = stun::ServerAddresses::of(s.primary, s.alt);
  stun::SocketIndex on;
  on.ip = at.addr == s.primary.addr ? 0 : 1;
  on.port = at.port == s.primary.port ? 0 : 1;

  std::vector<std::byte> request = copy(data);
  if (s.behaviour == Behaviour::kWrongTxid) {
    // A valid request for another transaction, so the answer is valid STUN with a foreign id.
    auto m = stun::Message::parse(data);
    if (!m) return;
    nat::ChangeFlags change;
    if (auto cr = m->find(stun::AttrType::kChangeRequest); cr && cr->value.size() == 4) {
      const auto flags = load_be32(cr->value.data());
      change.ip = (flags & 0x04) != 0;
      change.port = (flags & 0x02) != 0;
    }
    std::array<std::byte, 128> buf{};
    const auto n = nat::build_test_request(stun::new_txid(), change, buf);
    request.assign(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
  }
  std::array<std::byte, stun::kMaxResponseSize> out{};
  stun::Reply reply;
  stun::Request req{Bytes(request.data(), request.size()), client, at, on};
  stun::respond(req, addrs, out, reply);
  if (reply.size == 0) return;
  Endpoint from{addrs.ip[reply.send_from.ip], addrs.port[reply.send_from.port]};
  std::vector<std::byte> answer(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(reply.size));
  switch (s.behaviour) {
    case Behaviour::kOtherSource:
      from.port = static_cast<std::uint16_t>(from.port + 7);
      break;
    case Behaviour::kGarbageFirst: {
      std::vector<std::byte> junk(37, std::byte{0xA5});
      to_host(from, reply.destination, junk, back);
      std::vector<std::byte> cut(answer.begin(), answer.begin() + static_cast<std::ptrdiff_t>(answer.size() - 3));
      to_host(from, reply.destination, cut, back);
      break;
    }
    case Behaviour::kDuplicate:
      to_host(from, reply.destination, answer, back);
      break;
    default:
      break;
  }
  to_host(from, reply.destination, std::move(answer), back);
}

void FakeNet::gateway_receive(const Endpoint& client, const Endpoint& at, Bytes data) {
  const FakeGateway& gw = *gateway;
  const TimePoint back = now_ + 2 * one_way;
  const Endpoint from{gw.address, at.port};
  auto answer = [&](std::vector<std::byte> bytes) { queue_.push_back(Delivery{back, seq_++, from, client, std::move(bytes)}); };
  if (at.port == kPortMapPort && at.addr == gw.address) {
    if (data.empty()) return;
    const auto version = std::to_integer<std::uint8_t>(data[0]);
    const bool pmp = gw.port_mapping == GatewayProto::kNatPmp || gw.port_mapping == GatewayProto::kPcpAndPmp;
    const bool pcp = gw.port_mapping == GatewayProto::kPcp || gw.port_mapping == GatewayProto::kPcpAndPmp;
    if (version == 0 && pmp && data.size() == 2) {
      answer({std::byte{0}, std::byte{0x80}, std::byte{0}, std::byte{0}, std::byte{0}, std::byte{0}, std::byte{0},
              std::byte{7}, std::byte{198}, std::byte{51}, std::byte{100}, std::byte{9}});
    } else if (version == 2 && pcp && data.size() >= 24) {
      std::vector<std::byte> r(24, std::byte{0});
      r[0] = std::byte{2};
      r[1] = std::byte{0x80};
      answer(r);
    } else if (version == 2 && pmp && !pcp) {
      // NAT-PMP only: "unsupported version".
      answer({std::byte{0}, std::byte{0x80}, std::byte{0}, std::byte{1}, std::byte{0}, std::byte{0}, std::byte{0},
              std::byte{7}});
    }
    return;
  }
  if (at.port == kSsdpPort && gw.upnp) {
    const std::string_view text =
        "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
        "USN: uuid:1234::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://10.0.0.1:5000/igd.xml\r\n\r\n";
    const auto b = as_bytes(text);
    // Answers to unicast and multicast alike, from its SSDP port.
    queue_.push_back(Delivery{back, seq_++, Endpoint{gw.address, kSsdpPort}, client, copy(b)});
  }
}

std::optional<Received> FakeNet::receive(TimePoint until, MutBytes buf) {
  // Earliest delivery for a socket that is still open.
  for (;;) {
    auto best = queue_.end();
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (best == queue_.end() || it->at < best->at || (it->at == best->at && it->seq < best->seq)) best = it;
    }
    if (best == queue_.end() || best->at > until) {
      if (until != TimePoint::max()) now_ = std::max(now_, until);
      return std::nullopt;
    }
    Delivery d = std::move(*best);
    queue_.erase(best);
    now_ = std::max(now_, d.at);
    for (std::size_t i = 0; i < socks_.size(); ++i) {
      if (!socks_[i].open || socks_[i].local != d.to) continue;
      Received r;
      r.socket = static_cast<SocketId>(i);
      r.from = d.from;
      r.truncated = d.datagram.size() > buf.size();
      r.size = std::min(d.datagram.size(), buf.size());
      std::memcpy(buf.data(), d.datagram.data(), r.size);
      return r;
    }
    // Nobody listens there any more: dropped, look at the next one.
  }
}

}  // namespace derpd::probe::fake
