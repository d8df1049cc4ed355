// RelayShard: the home (authority) side of the peer directory, the replica side, and the
// messages other workers send us.
#include <algorithm>
#include <optional>

#include "relay/server/relay_shard.h"

namespace derpd::server {

// --- cross-worker inbox ----------------------------------------------------------------------

std::size_t RelayShard::poll_inbox(std::size_t budget) {
  outbox_.flush();
  const std::uint16_t n = fabric_.workers();
  if (n <= 1) return 0;
  std::size_t handled = 0;
  for (std::size_t i = 0; i < n && handled < budget; ++i) {
    const auto from = static_cast<WorkerId>((poll_start_ + i) % n);
    if (from == cfg_.worker) continue;
    SpscByteRing& ring = fabric_.ring(from, cfg_.worker);
    while (handled < budget) {
      const Bytes rec = ring.front();
      if (rec.empty()) break;
      MsgView m;
      if (decode_msg(rec, m)) handle_message(m);
      ring.pop();
      ++handled;
    }
  }
  poll_start_ = (poll_start_ + 1) % n;
  return handled;
}

void RelayShard::handle_message(const MsgView& m) {
  switch (m.type) {
    case MsgType::kPacket: {
      PacketMsg p;
      Bytes packet;
      if (!m.body_as(p, &packet) || packet.size() != p.len) return;
      if (p.dst.worker != cfg_.worker) {
        drop(DropReason::kUnknownDest, packet);
        return;
      }
      enqueue_local(p.dst.client(), p.src, p.dst_key, packet, p.flags, now_);
      return;
    }
    case MsgType::kEntryUpdate: {
      EntryUpdate u;
      if (m.body_as(u)) apply_update(u);
      return;
    }
    case MsgType::kSwitchBarrier: {
      SwitchMsg sm;
      if (m.body_as(sm)) switch_barrier(sm);
      return;
    }
    case MsgType::kSwitchAck: {
      SwitchMsg sm;
      if (m.body_as(sm)) switch_ack(sm);
      return;
    }
    case MsgType::kCloseConn: {
      CloseConnMsg cm;
      if (!m.body_as(cm) || cm.conn.worker != cfg_.worker) return;
      Client* c = arena_.get(cm.conn.client());
      if (c != nullptr && c->state == Client::State::kActive && c->kind == Client::Kind::kClient)
        request_close(cm.conn.client(), *c, cm.reason);
      return;
    }
    default:
      home_message(m.type, m);
      return;
  }
}

// --- home ------------------------------------------------------------------------------------

void RelayShard::apply_dup_delta(const DupDelta& d) {
  if (d.dup_keys != 0) counters_.current_dup_client_keys.add(d.dup_keys);
  if (d.dup_conns != 0) counters_.current_dup_client_conns.add(d.dup_conns);
  if (d.dup_conn_total > 0) counters_.dup_client_conn_total.add(static_cast<std::uint64_t>(d.dup_conn_total));
}

void RelayShard::publish_home_gauges() {
  const auto total = static_cast<std::int64_t>(home_.keys());
  const auto local = static_cast<std::int64_t>(home_.local_keys());
  counters_.clients_total.set(total);
  counters_.clients_local.set(local);
  counters_.clients_remote.set(total - local);
}

void RelayShard::home_message(MsgType type, const MsgView& m) {
  EntryUpdate u;
  DupDelta delta;
  bool changed = false;
  std::optional<SwitchMsg> barrier;  // follows the update: the key's owner waits for its acks
  switch (type) {
    case MsgType::kRegister: {
      RegisterMsg r;
      if (!m.body_as(r) || home_of(r.key, fabric_.workers()) != cfg_.worker) return;
      changed = home_.add_conn(r.key, r.conn, r.endpoint, r.flags, delta, u);
      // Other connections for the key: replicas that lag would route to one of them.
      if (const HomeEntry* h = home_.find(r.key); h != nullptr && h->conns.size() >= 2)
        barrier = SwitchMsg{r.conn, r.seq};
      break;
    }
    case MsgType::kUnregister: {
      ConnKeyMsg r;
      if (!m.body_as(r) || home_of(r.key, fabric_.workers()) != cfg_.worker) return;
      changed = home_.remove_conn(r.key, r.conn, delta, u);
      break;
    }
    case MsgType::kActivity: {
      ActivityMsg r;
      if (!m.body_as(r) || home_of(r.key, fabric_.workers()) != cfg_.worker) return;
      changed = home_.note_activity(r.key, r.conn, u);
      barrier = SwitchMsg{r.conn, r.seq};  // also when nothing changed: the owner is waiting
      break;
    }
    case MsgType::kForwarderAdd: {
      ConnKeyMsg r;
      if (!m.body_as(r) || home_of(r.key, fabric_.workers()) != cfg_.worker) return;
      changed = home_.add_forwarder(r.key, r.conn, u);
      break;
    }
    case MsgType::kForwarderRemove: {
      ConnKeyMsg r;
      if (!m.body_as(r) || home_of(r.key, fabric_.workers()) != cfg_.worker) return;
      bool found = false;
      changed = home_.remove_forwarder(r.key, r.conn, found, u);
      break;
    }
    case MsgType::kClosePeer: {
      KeyMsg r;
      if (!m.body_as(r) || home_of(r.key, fabric_.workers()) != cfg_.worker) return;
      const HomeEntry* h = home_.find(r.key);
      if (h == nullptr) return;
      // Copy first: closing a local connection unregisters it from this very entry.
      std::vector<ConnRef> conns;
      conns.reserve(h->conns.size());
      for (const DupMember& mem : h->conns.members()) conns.push_back(mem.ref);
      for (const ConnRef& c : conns) close_conn(c, CloseReason::kClosedByMeshPeer);
      return;
    }
    default:
      return;
  }
  apply_dup_delta(delta);
  publish_home_gauges();
  if (changed) broadcast(u);
  if (barrier) broadcast_barrier(barrier->conn, barrier->seq);
}

// --- duplicate-key switch barrier (cross_worker.h) -----------------------------------------------

void RelayShard::broadcast_barrier(const ConnRef& conn, std::uint32_t seq) {
  const SwitchMsg m{conn, seq};
  for (WorkerId w = 0; w < fabric_.workers(); ++w)
    if (w != cfg_.worker) outbox_.post_control(w, MsgType::kSwitchBarrier, m);
  switch_barrier(m);
}

void RelayShard::switch_barrier(const SwitchMsg& m) {
  // Everything the home sent before the barrier is applied here: acknowledge to the owner.
  if (m.conn.worker == cfg_.worker) {
    switch_ack(m);
  } else if (m.conn.worker < fabric_.workers()) {
    outbox_.post_control(m.conn.worker, MsgType::kSwitchAck, m);
  }
}

void RelayShard::switch_ack(const SwitchMsg& m) {
  if (m.conn.worker != cfg_.worker) return;
  const ClientId id = m.conn.client();
  Client* c = arena_.get(id);
  if (c == nullptr || c->switch_seq != m.seq) return;  // gone, or an older switch
  using S = Client::Switch;
  if (c->sw != S::kRegistered && c->sw != S::kNoted && c->sw != S::kHeld) return;
  if (++c->switch_acks < fabric_.workers()) return;
  // Every shard has applied the change: no replica routes the key by an older state.
  if (c->sw == S::kHeld) {
    c->sw = S::kReleased;
    out_.resume.push_back(id);
  } else {
    c->sw = S::kNone;
  }
}

void RelayShard::close_conn(const ConnRef& c, CloseReason reason) {
  if (c.worker != cfg_.worker) {
    outbox_.post_control(c.worker, MsgType::kCloseConn, CloseConnMsg{c, reason});
    return;
  }
  Client* cl = arena_.get(c.client());
  if (cl != nullptr && cl->state == Client::State::kActive && cl->kind == Client::Kind::kClient)
    request_close(c.client(), *cl, reason);
}

void RelayShard::broadcast(const EntryUpdate& u) {
  for (WorkerId w = 0; w < fabric_.workers(); ++w)
    if (w != cfg_.worker) outbox_.post_control(w, MsgType::kEntryUpdate, u);
  apply_update(u);
}

// --- replica ---------------------------------------------------------------------------------

void RelayShard::apply_update(const EntryUpdate& u) {
  directory_.apply(u);
  const bool gone = (u.events & kEventRegionGone) != 0;

  if (auto it = local_by_key_.find(u.key); it != local_by_key_.end()) {
    for (std::uint32_t slot : it->second) {
      Client* c = arena_.at_slot(slot);
      if (c == nullptr) continue;
      const ConnRef me{cfg_.worker, slot, c->gen};
      c->dup_hint = !gone && u.entry.conns >= 2;
      c->active_hint = !gone && u.entry.active == me;
      c->history_back_hint = !gone && u.entry.history_back == me;
      c->activity_noted = false;
    }
  }

  if ((u.events & (kEventPresent | kEventLocalGone)) != 0 && !watchers_.empty()) {
    // Drop watchers that closed since (unregister leaves them listed), then tell the others. A
    // watcher closed inside the loop (backlog overflow) can trigger a nested update; only the
    // outermost loop compacts, so the list never shrinks under an iteration.
    if (watcher_loop_depth_ == 0) {
      std::erase_if(watchers_, [&](const ClientId& id) {
        const Client* c = arena_.get(id);
        return c == nullptr || !c->watcher;
      });
    }
    ++watcher_loop_depth_;
    for (std::size_t i = 0; i < watchers_.size(); ++i) {
      const ClientId id = watchers_[i];
      Client* c = arena_.get(id);
      if (c == nullptr || !c->watcher) continue;
      if (u.events & kEventPresent) queue_peer_present(id, *c, u.key, u.present_endpoint, u.present_flags);
      if (u.events & kEventLocalGone) queue_peer_gone(id, *c, u.key, protocol::PeerGoneReason::kDisconnected);
    }
    --watcher_loop_depth_;
  }

  if (gone) notify_region_gone(u.key);
}

void RelayShard::notify_region_gone(const protocol::NodePublic& key) {
  auto it = peer_gone_watchers_.find(key);
  if (it == peer_gone_watchers_.end()) return;
  std::vector<ClientId> ids = std::move(it->second);
  peer_gone_watchers_.erase(it);
  for (const ClientId& id : ids) {
    Client* c = arena_.get(id);
    if (c == nullptr || c->state != Client::State::kActive) continue;
    c->saw_src.erase(key);
    c->saw_src_memo = false;
    queue_peer_gone(id, *c, key, protocol::PeerGoneReason::kDisconnected);
  }
}

}  // namespace derpd::server
