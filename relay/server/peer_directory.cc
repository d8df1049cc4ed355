#include "relay/server/peer_directory.h"

#include <algorithm>

namespace derpd::server {

WorkerId home_of(const protocol::NodePublic& key, std::uint16_t workers) {
  if (workers <= 1) return 0;
  // Node keys are Curve25519 public keys: their bytes are already uniform.
  const std::uint8_t* p = key.data();
  const std::uint32_t v = (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
  return static_cast<WorkerId>(v % workers);
}

void PeerDirectory::apply(const EntryUpdate& u) {
  if (u.events & kEventRegionGone) {
    map_.erase(u.key);
    return;
  }
  map_.insert_or_assign(u.key, u.entry);
}

ReplicaEntry HomeEntry::view() const {
  ReplicaEntry e;
  e.active = conns.active();
  e.conns = static_cast<std::uint32_t>(conns.size());
  e.history_back = conns.history_back();
  e.forwarder = forwarders.empty() ? kNoConn : forwarders.front();
  if (const DupMember* m = conns.active_member()) {
    e.active_endpoint = m->endpoint;
    e.active_flags = m->flags;
  }
  return e;
}

bool HomeDirectory::finish(const protocol::NodePublic& key, HomeEntry& h, const ReplicaEntry& before, bool was_local,
                           std::uint8_t events, EntryUpdate& out) {
  const bool is_local = !h.conns.empty();
  if (was_local && !is_local) {
    --local_keys_;
    events |= kEventLocalGone;
  } else if (!was_local && is_local) {
    ++local_keys_;
  }
  out.key = key;
  out.events = events;
  if (h.conns.empty() && h.forwarders.empty()) {
    out.events |= kEventRegionGone;
    out.entry = ReplicaEntry{};
    map_.erase(key);
    return true;
  }
  out.entry = h.view();
  return out.events != 0 || !(out.entry == before);
}

bool HomeDirectory::add_conn(const protocol::NodePublic& key, const ConnRef& c, const Endpoint& endpoint,
                             std::uint8_t flags, DupDelta& delta, EntryUpdate& out) {
  HomeEntry& h = map_[key];
  const ReplicaEntry before = h.view();
  const bool was_local = !h.conns.empty();
  h.conns.add(c, endpoint, flags, delta);
  out.present_endpoint = endpoint;
  out.present_flags = flags;
  return finish(key, h, before, was_local, kEventPresent, out);
}

bool HomeDirectory::remove_conn(const protocol::NodePublic& key, const ConnRef& c, DupDelta& delta,
                                EntryUpdate& out) {
  auto it = map_.find(key);
  if (it == map_.end()) return false;
  HomeEntry& h = it->second;
  const ReplicaEntry before = h.view();
  const bool was_local = !h.conns.empty();
  if (!h.conns.remove(c, delta)) return false;
  return finish(key, h, before, was_local, 0, out);
}

bool HomeDirectory::note_activity(const protocol::NodePublic& key, const ConnRef& c, EntryUpdate& out) {
  auto it = map_.find(key);
  if (it == map_.end()) return false;
  HomeEntry& h = it->second;
  const ReplicaEntry before = h.view();
  h.conns.note_activity(c, policy_);
  return finish(key, h, before, !h.conns.empty(), 0, out);
}

bool HomeDirectory::add_forwarder(const protocol::NodePublic& key, const ConnRef& link, EntryUpdate& out) {
  HomeEntry& h = map_[key];
  const ReplicaEntry before = h.view();
  const bool was_local = !h.conns.empty();
  if (std::find(h.forwarders.begin(), h.forwarders.end(), link) == h.forwarders.end()) h.forwarders.push_back(link);
  return finish(key, h, before, was_local, 0, out);
}

bool HomeDirectory::remove_forwarder(const protocol::NodePublic& key, const ConnRef& link, bool& found,
                                     EntryUpdate& out) {
  found = false;
  auto it = map_.find(key);
  if (it == map_.end()) return false;
  HomeEntry& h = it->second;
  auto f = std::find(h.forwarders.begin(), h.forwarders.end(), link);
  if (f == h.forwarders.end()) return false;
  found = true;
  const ReplicaEntry before = h.view();
  const bool was_local = !h.conns.empty();
  h.forwarders.erase(f);
  return finish(key, h, before, was_local, 0, out);
}

}  // namespace derpd::server
