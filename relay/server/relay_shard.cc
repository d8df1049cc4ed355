// RelayShard: client events, packet delivery, per-client output and lifecycle. The home /
// replica side and cross-worker message handling are in shard_directory.cc.
#include "relay/server/relay_shard.h"

#include <algorithm>
#include <stdexcept>
#include <type_traits>
#include <variant>

namespace derpd::server {
namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

std::uint8_t present_flags_of(const ClientParams& p) {
  std::uint8_t f = 0;
  if (p.prober) f |= protocol::kPeerPresentIsProber;
  if (p.mesh_peer) f |= protocol::kPeerPresentIsMeshPeer;
  if (p.not_ideal) f |= protocol::kPeerPresentNotIdeal;
  return f == 0 ? protocol::kPeerPresentIsRegular : f;
}

// derper counts home moves only after the client's first few seconds (its initial NotePreferred).
constexpr Nanos kHomeMoveGrace = std::chrono::seconds(5);

}  // namespace

RelayShard::RelayShard(ShardConfig config, Fabric& fabric)
    : cfg_(std::move(config)),
      fabric_(fabric),
      outbox_(fabric, cfg_.worker),
      pool_(cfg_.pool_max_free_bytes),
      home_(cfg_.dup_policy),
      rng_state_(0x9e3779b97f4a7c15ull * (std::uint64_t{cfg_.worker} + 1)) {
  if (cfg_.worker >= fabric.workers()) throw std::invalid_argument("shard worker id outside the fabric");
  if (cfg_.queue_depth == 0) cfg_.queue_depth = 1;
  out_.writable.reserve(256);
  out_.closes.reserve(16);
  out_.wake.reserve(fabric.workers());
}

RelayShard::~RelayShard() {
  arena_.for_each_live([&](ClientId, Client& c) {
    while (PacketBuf* p = c.normal.pop()) pool_.free(p);
    while (PacketBuf* p = c.disco.pop()) pool_.free(p);
    if (c.current.body != nullptr) pool_.free(c.current.body);
    c.current.body = nullptr;
  });
}

// --- inputs ----------------------------------------------------------------------------------

ClientId RelayShard::client_registered(const ClientParams& params, Nanos now) {
  now_ = now;
  Client* c = nullptr;
  const ClientId id = arena_.alloc(cfg_.queue_depth, c);
  c->kind = Client::Kind::kClient;
  c->params = params;
  c->present_flags = present_flags_of(params);
  c->connected_at = now;
  Nanos jitter{0};
  if (cfg_.keepalive_max_jitter.count() > 0) {
    std::uint64_t bits;
    if (cfg_.random) {
      bits = cfg_.random();
    } else {  // SplitMix64
      std::uint64_t z = (rng_state_ += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      bits = z ^ (z >> 31);
    }
    jitter = Nanos(static_cast<std::int64_t>(bits % static_cast<std::uint64_t>(cfg_.keepalive_max_jitter.count())));
  }
  c->keepalive_period = cfg_.keepalive_interval + jitter;
  c->peer_gone_limit = TokenBucket(cfg_.peer_gone_interval, cfg_.peer_gone_burst);

  counters_.current_connections.add();
  if (params.not_ideal) counters_.current_notideal_connections.add();
  local_by_key_[params.key].push_back(id.slot);
  if (c->keepalive_period.count() > 0) schedule_keepalive(id, now + c->keepalive_period);
  c->sw = Client::Switch::kRegistered;
  c->switch_seq = ++switch_seq_;
  c->switch_acks = 0;
  to_home(params.key, MsgType::kRegister,
          RegisterMsg{params.key, ref(id), params.remote, c->present_flags, c->switch_seq});
  return id;
}

bool RelayShard::registration_visible(ClientId id) const {
  const Client* c = arena_.get(id);
  if (c == nullptr || c->sw != Client::Switch::kRegistered) return true;  // acked, or moved on
  // No barrier comes while the key has no other connection: this replica showing it is enough.
  const ReplicaEntry* e = directory_.find(c->params.key);
  return e != nullptr && e->active == ref(id) && e->conns < 2;
}

bool RelayShard::frame_may_proceed(ClientId id, Nanos now) {
  Client* c = arena_.get(id);
  if (c == nullptr) return true;  // frame_received() refuses it
  if (c->sw == Client::Switch::kHeld) return false;
  if (c->sw == Client::Switch::kReleased) return true;
  if (!c->dup_hint) return true;  // the common case: one connection for the key
  if (c->kind != Client::Kind::kClient || c->state != Client::State::kActive) return true;
  if (c->activity_noted && c->sw == Client::Switch::kNone) return true;  // asked; nothing changed since
  // Already active: no route changes (only the send history, which frame_received() reports
  // without waiting). With kDisableFighters that report may disable the set, so it waits too.
  if (c->active_hint && (c->history_back_hint || cfg_.dup_policy == DupPolicy::kLastWriterIsActive)) return true;
  if (fabric_.workers() == 1) return true;  // one replica: frame_received() switches in place
  // A report still on its way (kNoted) is not waited for: it left before the update that made
  // this connection inactive, so its barrier proves nothing about this frame.
  request_switch(id, *c, Client::Switch::kHeld);
  c->held_since = now;
  held_.push_back(id);
  counters_.dup_switch_holds.add();
  return false;
}

void RelayShard::release_held(ClientId id) {
  Client* c = arena_.get(id);
  if (c == nullptr || c->sw != Client::Switch::kHeld) return;
  c->sw = Client::Switch::kReleased;  // the barrier's acks still arrive and are ignored
  counters_.dup_switch_timeouts.add();
}

bool RelayShard::frame_received(ClientId id, const protocol::ClientMessage& msg, Nanos now) {
  now_ = now;
  Client* c = arena_.get(id);
  if (c == nullptr || c->state != Client::State::kActive || c->kind != Client::Kind::kClient) return false;
  note_activity(id, *c);
  std::visit(Overloaded{
                 [&](const protocol::SendPacket& m) { handle_send(id, *c, m, now); },
                 [&](const protocol::ForwardPacket& m) { handle_forward(id, *c, m, now); },
                 [&](const protocol::NotePreferred& m) { set_preferred(*c, m.preferred, now); },
                 [&](const protocol::WatchConns&) { handle_watch(id, *c); },
                 [&](const protocol::ClosePeer& m) {
                   if (!c->is_mesh_peer()) {
                     request_close(id, *c, CloseReason::kNotMeshPeer);
                     return;
                   }
                   to_home(m.peer, MsgType::kClosePeer, KeyMsg{m.peer});
                 },
                 [&](const protocol::Ping& m) {
                   counters_.got_ping.add();
                   if (c->pong_pending) return;  // pinging faster than we answer: ignored, as derper
                   c->pong_pending = true;
                   c->pong = m.data;
                   c->pending += protocol::frame_size(protocol::kPingLen);
                   mark_ready(id, *c);
                 },
                 [&](const protocol::Ignored&) { counters_.unknown_frames.add(); },
             },
             msg);
  c = arena_.get(id);  // a SendPacket may have polled the inbox
  return c != nullptr && c->state == Client::State::kActive;
}

void RelayShard::client_closed(ClientId id, ConnEnd how) {
  Client* c = arena_.get(id);
  if (c == nullptr) return;
  if (how == ConnEnd::kWriteError) {
    for (std::size_t k = 0; k < kPacketKinds; ++k) {
      if (c->last_pull_packets[k] == 0) continue;
      counters_.packets_dropped[static_cast<std::size_t>(DropReason::kWriteError)][k].add(c->last_pull_packets[k]);
      counters_.bytes_dropped[static_cast<std::size_t>(DropReason::kWriteError)][k].add(c->last_pull_bytes[k]);
    }
  }
  if (c->state == Client::State::kActive) {
    c->state = Client::State::kClosing;
    unregister(id, *c);
  }
  arena_.release(id);
}

void RelayShard::tick(Nanos now) {
  now_ = now;
  outbox_.flush();
  if (!held_.empty()) {
    // A hold outlasting switch_wait means a worker is not polling its inbox: let the frame go.
    std::size_t keep = 0;
    for (const ClientId& id : held_) {
      Client* c = arena_.get(id);
      if (c == nullptr || c->sw != Client::Switch::kHeld) continue;
      if (now - c->held_since >= cfg_.switch_wait) {
        c->sw = Client::Switch::kReleased;
        counters_.dup_switch_timeouts.add();
        out_.resume.push_back(id);
        continue;
      }
      held_[keep++] = id;
    }
    held_.resize(keep);
  }
  while (!keepalives_.empty() && keepalives_.top().due <= now) {
    const KeepAliveDue k = keepalives_.top();
    keepalives_.pop();
    const ClientId id{k.slot, k.gen};
    Client* c = arena_.get(id);
    if (c == nullptr || c->state != Client::State::kActive || c->kind != Client::Kind::kClient) continue;
    if (!c->keepalive_pending) {  // a ticker with a one-slot channel: ticks do not pile up
      c->keepalive_pending = true;
      c->pending += protocol::kFrameHeaderLen;
      mark_ready(id, *c);
    }
    const Nanos period = c->keepalive_period;
    Nanos next = k.due + period;
    if (next <= now) next = k.due + period * ((now - k.due) / period + 1);
    keepalives_.push({next, k.slot, k.gen});
  }
}

std::optional<Nanos> RelayShard::next_deadline() const {
  std::optional<Nanos> next;
  if (!keepalives_.empty()) next = keepalives_.top().due;
  for (const ClientId& id : held_) {
    const Client* c = arena_.get(id);
    if (c == nullptr || c->sw != Client::Switch::kHeld) continue;
    const Nanos due = c->held_since + cfg_.switch_wait;
    if (!next || due < *next) next = due;
  }
  return next;
}

void RelayShard::schedule_keepalive(ClientId id, Nanos due) { keepalives_.push({due, id.slot, id.gen}); }

void RelayShard::close_all(CloseReason reason) {
  arena_.for_each_live([&](ClientId id, Client& c) {
    if (c.state == Client::State::kActive) request_close(id, c, reason);
  });
}

// --- mesh links ------------------------------------------------------------------------------

ClientId RelayShard::mesh_link_opened(const protocol::NodePublic& peer_server_key, Nanos now) {
  now_ = now;
  Client* c = nullptr;
  const ClientId id = arena_.alloc(cfg_.queue_depth, c);
  c->kind = Client::Kind::kMeshLink;
  c->params.key = peer_server_key;
  c->params.mesh_peer = true;
  c->connected_at = now;
  return id;
}

void RelayShard::mesh_link_peer_present(ClientId link, const protocol::NodePublic& key) {
  Client* c = arena_.get(link);
  if (c == nullptr || c->kind != Client::Kind::kMeshLink || c->state != Client::State::kActive) return;
  if (c->link_keys.insert(key).second) to_home(key, MsgType::kForwarderAdd, ConnKeyMsg{key, ref(link)});
}

void RelayShard::mesh_link_peer_gone(ClientId link, const protocol::NodePublic& key) {
  Client* c = arena_.get(link);
  if (c == nullptr || c->kind != Client::Kind::kMeshLink || c->state != Client::State::kActive) return;
  if (c->link_keys.erase(key) != 0) to_home(key, MsgType::kForwarderRemove, ConnKeyMsg{key, ref(link)});
}

// --- frames ----------------------------------------------------------------------------------

void RelayShard::note_activity(ClientId id, Client& c) {
  // derper's noteClientActivity: only duplicate connections matter. Tell the home when this
  // connection is not yet the active, most recent sender; one message in flight at a time.
  if (c.sw == Client::Switch::kReleased) {  // the held frame: its switch was made already
    c.sw = Client::Switch::kNone;
    return;
  }
  if (!c.dup_hint || c.activity_noted || (c.active_hint && c.history_back_hint)) return;
  request_switch(id, c, Client::Switch::kNoted);
}

void RelayShard::request_switch(ClientId id, Client& c, Client::Switch state) {
  c.sw = state;  // before to_home(): a local home may answer in place
  c.activity_noted = true;
  c.switch_seq = ++switch_seq_;
  c.switch_acks = 0;
  to_home(c.params.key, MsgType::kActivity, ActivityMsg{c.params.key, ref(id), c.switch_seq});
}

void RelayShard::handle_send(ClientId id, Client& c, const protocol::SendPacket& m, Nanos now) {
  const PacketKind kind = packet_kind(m.packet);
  counters_.packets_received.add();
  counters_.bytes_received.add(m.packet.size());
  counters_.packets_received_kind[static_cast<std::size_t>(kind)].add();

  const ReplicaEntry* e = directory_.find(m.dst);
  if (e == nullptr && fabric_.workers() > 1 && poll_depth_ == 0) {
    // Not in this replica: the key may have just registered on another worker, its update
    // already in our inbox but not applied (derper's one directory has no such window). Apply
    // what is queued and look once more. Polling can close clients, so `c` is looked up again.
    ++poll_depth_;
    poll_inbox();
    --poll_depth_;
    e = directory_.find(m.dst);
    if (arena_.get(id) == nullptr) {
      drop(e != nullptr ? DropReason::kGoneDisconnected : DropReason::kUnknownDest, m.packet);
      return;
    }
  }
  if (e != nullptr && e->active.valid()) {
    deliver(e->active, c.params.key, m.dst, m.packet, 0, now);
    return;
  }
  const std::uint32_t conns = e != nullptr ? e->conns : 0;
  if (conns < 1 && e != nullptr && e->forwarder.valid()) {
    counters_.packets_forwarded_out.add();
    deliver(e->forwarder, c.params.key, m.dst, m.packet, kPacketToLink, now);
    return;
  }
  if (conns > 1) {
    drop(DropReason::kDupClient, m.packet);
    return;
  }
  peer_gone_limited(id, c, m.dst, m.packet, now);
  drop(DropReason::kUnknownDest, m.packet);
}

void RelayShard::handle_forward(ClientId id, Client& c, const protocol::ForwardPacket& m, Nanos now) {
  if (!c.is_mesh_peer()) {
    request_close(id, c, CloseReason::kNotMeshPeer);
    return;
  }
  counters_.packets_forwarded_in.add();
  // Local connections only: a forwarded packet is never forwarded again.
  const ReplicaEntry* e = directory_.find(m.dst);
  if (e != nullptr && e->active.valid()) {
    deliver(e->active, m.src, m.dst, m.packet, kPacketFromForward, now);
    return;
  }
  if (e != nullptr && e->conns > 1) {
    drop(DropReason::kDupClient, m.packet);
    return;
  }
  peer_gone_limited(id, c, m.dst, m.packet, now);
  drop(DropReason::kUnknownDestOnFwd, m.packet);
}

void RelayShard::handle_watch(ClientId id, Client& c) {
  if (!c.is_mesh_peer()) {
    request_close(id, c, CloseReason::kNotMeshPeer);
    return;
  }
  if (c.params.key == cfg_.server_key) return;  // we are watching ourselves: nothing to do
  if (!c.watcher) {
    c.watcher = true;
    watchers_.push_back(id);
    counters_.watchers.add();
  }
  // Every key with an active connection on this node, as this replica knows it. The backlog is
  // checked up front: closing the watcher in the middle would change the directory under the walk.
  std::size_t present = 0;
  directory_.for_each([&](const protocol::NodePublic&, const ReplicaEntry& e) { present += e.active.valid() ? 1 : 0; });
  if (c.control.size() + present * protocol::frame_size(protocol::kPeerPresentLen) > cfg_.max_watcher_backlog) {
    request_close(id, c, CloseReason::kWatcherBacklog);
    return;
  }
  directory_.for_each([&](const protocol::NodePublic& key, const ReplicaEntry& e) {
    if (e.active.valid()) queue_peer_present(id, c, key, e.active_endpoint, e.active_flags);
  });
}

void RelayShard::set_preferred(Client& c, bool v, Nanos now) {
  if (c.preferred == v) return;
  c.preferred = v;
  if (v) {
    counters_.current_home_connections.add();
  } else {
    counters_.current_home_connections.sub();
  }
  if (now - c.connected_at > kHomeMoveGrace) (v ? counters_.home_moves_in : counters_.home_moves_out).add();
}

void RelayShard::peer_gone_limited(ClientId id, Client& c, const protocol::NodePublic& dst, Bytes packet, Nanos now) {
  if (!looks_like_disco(packet)) return;
  if (c.peer_gone_limit.allow(now)) queue_peer_gone(id, c, dst, protocol::PeerGoneReason::kNotHere);
}

// --- delivery --------------------------------------------------------------------------------

void RelayShard::deliver(const ConnRef& to, const protocol::NodePublic& src, const protocol::NodePublic& dst,
                         Bytes packet, std::uint8_t flags, Nanos now) {
  if (to.worker == cfg_.worker) {
    enqueue_local(to.client(), src, dst, packet, flags, now);
    return;
  }
  const PacketMsg m{to, src, dst, static_cast<std::uint32_t>(packet.size()), flags};
  if (to.worker >= fabric_.workers() || !outbox_.post_packet(to.worker, m, packet)) drop(DropReason::kQueueTail, packet);
}

void RelayShard::enqueue_local(ClientId id, const protocol::NodePublic& src, const protocol::NodePublic& dst,
                               Bytes packet, std::uint8_t flags, Nanos now) {
  Client* c = arena_.get(id);
  const bool to_link = (flags & kPacketToLink) != 0;
  if (c == nullptr || (c->kind == Client::Kind::kMeshLink) != to_link) {
    // The destination moved or left after the sender's replica looked it up.
    drop((flags & kPacketFromForward) != 0 ? DropReason::kUnknownDestOnFwd : DropReason::kUnknownDest, packet);
    return;
  }
  if (c->state != Client::State::kActive) {
    drop(DropReason::kGoneDisconnected, packet);
    return;
  }
  PacketBuf* p = pool_.make(packet, src, dst, now);
  if (p == nullptr) {  // over 64 KiB: the parsers never let one through
    drop(DropReason::kQueueTail, packet);
    return;
  }
  SendQueue& q = p->kind == PacketKind::kDisco ? c->disco : c->normal;
  c->pending += packet_frame_size(c->kind, p->len);
  if (PacketBuf* old = q.push(p)) {
    drop(DropReason::kQueueHead, *old);
    c->pending -= packet_frame_size(c->kind, old->len);
    pool_.free(old);
  }
  mark_ready(id, *c);
}

// --- output ----------------------------------------------------------------------------------

void RelayShard::mark_ready(ClientId id, Client& c) {
  if (c.in_ready) return;
  c.in_ready = true;
  out_.writable.push_back(id);
}

void RelayShard::queue_control(ClientId id, Client& c, Bytes frame) {
  if (c.kind != Client::Kind::kClient || c.state != Client::State::kActive) return;
  const std::size_t limit = c.watcher ? cfg_.max_watcher_backlog : cfg_.max_control_bytes;
  if (c.control.size() + frame.size() > limit) {
    if (c.watcher) {
      request_close(id, c, CloseReason::kWatcherBacklog);
    } else {
      counters_.control_frames_dropped.add();
    }
    return;
  }
  c.control.append(frame);
  c.pending += frame.size();
  mark_ready(id, c);
}

void RelayShard::queue_peer_gone(ClientId id, Client& c, const protocol::NodePublic& peer,
                                 protocol::PeerGoneReason r) {
  std::array<std::byte, protocol::frame_size(protocol::kPeerGoneLen)> buf;
  const std::size_t n = protocol::write_peer_gone(buf, peer, r);
  queue_control(id, c, Bytes(buf).first(n));
}

void RelayShard::queue_peer_present(ClientId id, Client& c, const protocol::NodePublic& peer, const Endpoint& ep,
                                    std::uint8_t flags) {
  std::array<std::byte, protocol::frame_size(protocol::kPeerPresentLen)> buf;
  const std::size_t n = protocol::write_peer_present(buf, peer, ep, flags);
  queue_control(id, c, Bytes(buf).first(n));
}

void RelayShard::take_outputs(ShardOutputs& out) {
  outbox_.take_wakes(out_.wake);
  for (const ClientId& id : out_.writable)
    if (Client* c = arena_.get(id)) c->in_ready = false;
  std::swap(out.writable, out_.writable);
  std::swap(out.closes, out_.closes);
  std::swap(out.wake, out_.wake);
  std::swap(out.resume, out_.resume);
  out_.clear();
}

bool RelayShard::has_output(ClientId id) const {
  const Client* c = arena_.get(id);
  return c != nullptr && c->state == Client::State::kActive && c->pending != 0;
}

std::size_t RelayShard::pending_bytes(ClientId id) const {
  const Client* c = arena_.get(id);
  return c != nullptr && c->state == Client::State::kActive ? c->pending : 0;
}

Nanos RelayShard::write_timeout(ClientId id) const {
  const Client* c = arena_.get(id);
  return c != nullptr && c->is_mesh_peer() ? cfg_.mesh_write_timeout : cfg_.write_timeout;
}

std::size_t RelayShard::pull(ClientId id, MutBytes out) {
  Client* c = arena_.get(id);
  if (c == nullptr || c->state != Client::State::kActive) return 0;
  c->last_pull_packets = {};
  c->last_pull_bytes = {};
  std::size_t n = 0;
  while (n < out.size()) {
    if (!c->current.active() && !start_next_frame(id, *c)) break;
    bool done = false;
    const std::size_t k = c->current.copy_to(out.subspan(n), done);
    n += k;
    c->pending -= k;
    if (done) {
      if (c->current.body != nullptr) pool_.free(c->current.body);
      c->current.body = nullptr;
      c->current.head_len = 0;
      c->current.off = 0;
    }
  }
  return n;
}

bool RelayShard::start_next_frame(ClientId id, Client& c) {
  OutFrame& f = c.current;
  f.off = 0;
  f.body = nullptr;
  if (c.pong_pending) {
    c.pong_pending = false;
    f.head_len = static_cast<std::uint32_t>(protocol::write_pong(f.head, c.pong));
    counters_.sent_pong.add();
    return true;
  }
  if (c.keepalive_pending) {
    c.keepalive_pending = false;
    f.head_len = static_cast<std::uint32_t>(protocol::write_keep_alive(f.head));
    counters_.keepalives_sent.add();
    return true;
  }
  if (!c.control.empty()) {
    f.head_len = static_cast<std::uint32_t>(c.control.pop_frame(f.head));
    if (static_cast<protocol::FrameType>(f.head[0]) == protocol::FrameType::kPeerGone) {
      const auto reason = static_cast<protocol::PeerGoneReason>(f.head[protocol::kFrameHeaderLen + protocol::kKeyLen]);
      (reason == protocol::PeerGoneReason::kNotHere ? counters_.peer_gone_not_here_frames
                                                    : counters_.peer_gone_disconnected_frames)
          .add();
    }
    return true;
  }
  PacketBuf* p = c.disco.pop();
  if (p == nullptr) p = c.normal.pop();
  if (p == nullptr) return false;
  f.body = p;
  if (c.kind == Client::Kind::kMeshLink) {
    f.head_len = static_cast<std::uint32_t>(protocol::write_forward_packet_header(f.head, p->src, p->dst, p->len));
  } else {
    f.head_len = static_cast<std::uint32_t>(protocol::write_recv_packet_header(f.head, p->src, p->len));
    counters_.packets_sent.add();
    counters_.bytes_sent.add(p->len);
    note_send_from_src(id, c, p->src);
  }
  const auto k = static_cast<std::size_t>(p->kind);
  c.last_pull_packets[k] += 1;
  c.last_pull_bytes[k] += p->len;
  return true;
}

void RelayShard::note_send_from_src(ClientId id, Client& c, const protocol::NodePublic& src) {
  if (c.saw_src_memo && c.last_src == src) return;
  if (c.saw_src.insert(src).second) peer_gone_watchers_[src].push_back(id);
  c.last_src = src;
  c.saw_src_memo = true;
}

// --- lifecycle -------------------------------------------------------------------------------

void RelayShard::request_close(ClientId id, Client& c, CloseReason reason) {
  if (c.state != Client::State::kActive) return;
  c.state = Client::State::kClosing;
  unregister(id, c);
  out_.closes.push_back({id, reason});
}

void RelayShard::unregister(ClientId id, Client& c) {
  if (c.kind == Client::Kind::kClient) {
    counters_.current_connections.sub();
    if (c.preferred) counters_.current_home_connections.sub();
    if (c.params.not_ideal) counters_.current_notideal_connections.sub();
    if (c.watcher) {
      c.watcher = false;  // watchers_ drops the id lazily
      counters_.watchers.sub();
    }
    for (const protocol::NodePublic& src : c.saw_src) {
      auto it = peer_gone_watchers_.find(src);
      if (it == peer_gone_watchers_.end()) continue;
      std::erase(it->second, id);
      if (it->second.empty()) peer_gone_watchers_.erase(it);
    }
    c.saw_src.clear();
    c.saw_src_memo = false;
    if (auto it = local_by_key_.find(c.params.key); it != local_by_key_.end()) {
      std::erase(it->second, id.slot);
      if (it->second.empty()) local_by_key_.erase(it);
    }
    to_home(c.params.key, MsgType::kUnregister, ConnKeyMsg{c.params.key, ref(id)});
  } else {
    // A broken link no longer reaches anything (derper's watch loop clears its mappings).
    std::vector<protocol::NodePublic> keys(c.link_keys.begin(), c.link_keys.end());
    c.link_keys.clear();
    for (const auto& key : keys) to_home(key, MsgType::kForwarderRemove, ConnKeyMsg{key, ref(id)});
  }
  discard_output(c);
}

void RelayShard::discard_output(Client& c) {
  while (PacketBuf* p = c.disco.pop()) {
    drop(DropReason::kGoneDisconnected, *p);
    pool_.free(p);
  }
  while (PacketBuf* p = c.normal.pop()) {
    drop(DropReason::kGoneDisconnected, *p);
    pool_.free(p);
  }
  if (c.current.body != nullptr) pool_.free(c.current.body);
  c.current.body = nullptr;
  c.current.head_len = 0;
  c.current.off = 0;
  c.control.clear();
  c.pong_pending = false;
  c.keepalive_pending = false;
  c.pending = 0;
}

// --- introspection ---------------------------------------------------------------------------

std::optional<ClientStats> RelayShard::client_stats(ClientId id) const {
  const Client* c = arena_.get(id);
  if (c == nullptr) return std::nullopt;
  ClientStats s;
  s.queued_packets = c->normal.size() + c->disco.size();
  s.queued_disco = c->disco.size();
  s.queued_bytes = c->normal.bytes() + c->disco.bytes();
  s.control_bytes = c->control.size();
  s.control_capacity = c->control.capacity();
  s.pending_bytes = c->pending;
  s.saw_src = c->saw_src.size();
  s.preferred = c->preferred;
  s.watcher = c->watcher;
  s.closing = c->state == Client::State::kClosing;
  s.keepalive_period = c->keepalive_period;
  return s;
}

ConnRef RelayShard::lookup(const protocol::NodePublic& key) const {
  const ReplicaEntry* e = directory_.find(key);
  return e != nullptr ? e->active : kNoConn;
}

}  // namespace derpd::server
