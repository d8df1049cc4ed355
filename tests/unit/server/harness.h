// Test harness: a node of N shards wired through one Fabric in this thread, a manual clock, and
// helpers that pull a client's bytes and decode them with the protocol library's own reader.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "relay/protocol/frame.h"
#include "relay/protocol/messages.h"
#include "relay/server/relay_shard.h"

namespace derpd::server::test {

using protocol::NodePublic;
using namespace std::chrono_literals;

// A key whose home is `home` among `workers` shards; `id` makes it unique.
inline NodePublic key_homed(std::uint32_t id, WorkerId home, std::uint16_t workers) {
  std::array<std::uint8_t, 32> raw{};
  const std::uint32_t v = home + workers * (id + 1);
  raw[0] = static_cast<std::uint8_t>(v >> 24);
  raw[1] = static_cast<std::uint8_t>(v >> 16);
  raw[2] = static_cast<std::uint8_t>(v >> 8);
  raw[3] = static_cast<std::uint8_t>(v);
  raw[4] = static_cast<std::uint8_t>(id);
  raw[31] = 0x42;
  return NodePublic::from_raw(std::span<const std::uint8_t, 32>(raw));
}

inline std::vector<std::byte> other_packet(std::size_t n, std::uint8_t fill = 0x11) {
  std::vector<std::byte> p(n, std::byte{fill});
  if (n > 0) p[0] = std::byte{0x01};  // not the disco magic
  return p;
}

inline std::vector<std::byte> disco_packet(std::uint8_t fill = 0x22, std::size_t n = kDiscoMinLen + 20) {
  std::vector<std::byte> p(n, std::byte{fill});
  std::memcpy(p.data(), kDiscoMagic.data(), kDiscoMagic.size());
  return p;
}

// One decoded frame the shard produced.
struct Rx {
  protocol::FrameType type{};
  NodePublic key;  // RecvPacket source, PeerGone / PeerPresent peer, ForwardPacket source
  NodePublic dst;  // ForwardPacket destination
  std::vector<std::byte> packet;
  protocol::PeerGoneReason reason = protocol::PeerGoneReason::kDisconnected;
  std::optional<Endpoint> endpoint;
  std::uint8_t flags = 0;
  protocol::PingData ping{};
};

// Decodes a server -> client byte stream (or a mesh link's ForwardPacket stream if `link`).
inline std::vector<Rx> decode(const std::vector<std::byte>& bytes, bool link = false) {
  std::vector<Rx> out;
  protocol::FrameReader reader(link ? protocol::server_limits() : protocol::client_limits());
  Bytes in(bytes);
  protocol::Frame f;
  for (;;) {
    const auto st = reader.next(in, f);
    if (st == protocol::FrameReader::Status::kNeedMore) break;
    EXPECT_NE(st, protocol::FrameReader::Status::kError) << "shard produced a bad frame stream";
    if (st == protocol::FrameReader::Status::kError) break;
    Rx rx;
    rx.type = f.type;
    if (link) {
      auto m = protocol::parse_client_message(f);
      EXPECT_TRUE(m.ok());
      if (!m.ok()) break;
      if (auto* fp = std::get_if<protocol::ForwardPacket>(&*m)) {
        rx.key = fp->src;
        rx.dst = fp->dst;
        rx.packet.assign(fp->packet.begin(), fp->packet.end());
      }
      out.push_back(std::move(rx));
      continue;
    }
    auto m = protocol::parse_server_message(f);
    EXPECT_TRUE(m.ok());
    if (!m.ok()) break;
    if (auto* rp = std::get_if<protocol::RecvPacket>(&*m)) {
      rx.key = rp->src;
      rx.packet.assign(rp->packet.begin(), rp->packet.end());
    } else if (auto* pg = std::get_if<protocol::PeerGone>(&*m)) {
      rx.key = pg->peer;
      rx.reason = pg->reason;
    } else if (auto* pp = std::get_if<protocol::PeerPresent>(&*m)) {
      rx.key = pp->peer;
      rx.endpoint = pp->endpoint;
      rx.flags = pp->flags;
    } else if (auto* po = std::get_if<protocol::Pong>(&*m)) {
      rx.ping = po->data;
    }
    out.push_back(std::move(rx));
  }
  EXPECT_TRUE(reader.idle()) << "partial frame left over";
  return out;
}

inline std::vector<std::byte> pull_all(RelayShard& s, ClientId id, std::size_t chunk = 4096) {
  std::vector<std::byte> out;
  std::vector<std::byte> buf(chunk);
  for (int guard = 0; guard < 100000 && s.has_output(id); ++guard) {
    const std::size_t n = s.pull(id, buf);
    if (n == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
  }
  return out;
}

inline std::vector<Rx> drain(RelayShard& s, ClientId id, bool link = false) { return decode(pull_all(s, id), link); }

inline std::vector<Rx> only(const std::vector<Rx>& v, protocol::FrameType t) {
  std::vector<Rx> r;
  for (const auto& x : v)
    if (x.type == t) r.push_back(x);
  return r;
}

struct Node {
  explicit Node(std::uint16_t workers, std::size_t ring_bytes = kDefaultRingBytes,
                const std::function<void(ShardConfig&)>& tweak = {})
      : fabric(workers, ring_bytes) {
    for (WorkerId w = 0; w < workers; ++w) {
      ShardConfig c;
      c.worker = w;
      c.server_key = key_homed(9999, 0, workers);
      c.random = [] { return std::uint64_t{0}; };  // no keep-alive jitter unless a test sets one
      if (tweak) tweak(c);
      shards.push_back(std::make_unique<RelayShard>(c, fabric));
    }
  }

  RelayShard& operator[](std::size_t i) { return *shards[i]; }
  std::uint16_t workers() const { return fabric.workers(); }

  // Delivers every cross-worker message until the node is quiet (bounded).
  std::size_t pump() {
    std::size_t total = 0;
    for (int round = 0; round < 1000; ++round) {
      std::size_t n = 0;
      for (auto& s : shards) n += s->poll_inbox(1 << 20);
      bool parked = false;
      for (auto& s : shards) parked = parked || s->outbox().parked() != 0;
      total += n;
      if (n == 0 && !parked) return total;
    }
    ADD_FAILURE() << "node did not quiesce";
    return total;
  }

  ClientId connect(std::size_t shard, const NodePublic& key, bool mesh = false, std::uint16_t port = 40000) {
    ClientParams p;
    p.key = key;
    p.remote = Endpoint{*IpAddr::parse("192.0.2.7"), port};
    p.mesh_peer = mesh;
    const ClientId id = shards[shard]->client_registered(p, now);
    pump();
    return id;
  }

  bool send(std::size_t shard, ClientId from, const NodePublic& dst, const std::vector<std::byte>& pkt) {
    const bool open = shards[shard]->frame_received(from, protocol::SendPacket{dst, pkt}, now);
    pump();
    return open;
  }

  CounterTotals totals() const {
    CounterTotals t;
    for (const auto& s : shards) s->counters().accumulate(t);
    return t;
  }

  std::vector<CloseRequest> closes(std::size_t shard) {
    ShardOutputs o;
    shards[shard]->take_outputs(o);
    return o.closes;
  }

  Fabric fabric;
  std::vector<std::unique_ptr<RelayShard>> shards;
  Nanos now{std::chrono::hours(1)};
};

}  // namespace derpd::server::test
