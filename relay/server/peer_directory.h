// The node's peer directory, in two parts.
//
// HomeDirectory (authority). Every key has a home shard: home_of(key, workers). The home keeps
// the key's KeyConns (all its connections on this node, whichever worker holds them; dup sets;
// who is active) and its mesh forwarders (links to other nodes of the region that reported the
// key). Registrations, departures, send activity and forwarder changes for a key are sent to its
// home, which applies derper's rules in one place and in one order, then broadcasts the resulting
// EntryUpdate to every shard (itself included).
//
// PeerDirectory (replica). Each shard holds a replica key -> ReplicaEntry, changed only by
// EntryUpdates. The hot path (a SendPacket's destination lookup) reads only the local replica:
// no locks, no cross-thread reads. Because one home sends all of a key's updates through FIFO
// rings, every replica sees them in the same order and converges on the same state; a packet
// routed by a replica that is momentarily behind lands on a stale ConnRef, which the owning
// worker detects by generation and counts as an unknown_dest drop. On a duplicated key a replica
// that is behind would route to a live connection that is no longer the active one; there the
// home follows the update with a barrier that every shard acknowledges before the new active
// connection is served (cross_worker.h, relay_shard.h).
//
// Owned by the shard's worker thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "relay/base/endpoint.h"
#include "relay/protocol/key.h"
#include "relay/server/dup_set.h"
#include "relay/server/types.h"

namespace derpd::server {

// Which shard is home for `key` (a fixed function of the key bytes, the same on every shard).
WorkerId home_of(const protocol::NodePublic& key, std::uint16_t workers);

// A replica's view of one key. Trivially copyable (travels in EntryUpdate).
struct ReplicaEntry {
  ConnRef active = kNoConn;        // connection that receives the key's packets (none: see conns)
  std::uint32_t conns = 0;         // connections for the key on this node (derper's clientSet.Len)
  ConnRef history_back = kNoConn;  // dup sets: most recent sender (decides when activity is news)
  ConnRef forwarder = kNoConn;     // preferred mesh link, used only when conns == 0
  Endpoint active_endpoint;        // the active connection's address and PeerPresent flags,
  std::uint8_t active_flags = 0;   // for the WatchConns dump

  friend bool operator==(const ReplicaEntry&, const ReplicaEntry&) = default;
};

enum UpdateEvent : std::uint8_t {
  kEventPresent = 1 << 0,     // a connection registered: watchers get PeerPresent(present_*)
  kEventLocalGone = 1 << 1,   // the key's last connection on this node left: watchers get PeerGone
  kEventRegionGone = 1 << 2,  // no connection and no forwarder left: entry removed; clients that
                              // received from the key get PeerGone(disconnected)
};

struct EntryUpdate {
  protocol::NodePublic key;
  ReplicaEntry entry;  // new state (meaningless with kEventRegionGone)
  std::uint8_t events = 0;
  std::uint8_t present_flags = 0;
  Endpoint present_endpoint;
};

class PeerDirectory {
 public:
  const ReplicaEntry* find(const protocol::NodePublic& key) const {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second;
  }
  void apply(const EntryUpdate& u);
  std::size_t size() const { return map_.size(); }
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& [k, e] : map_) f(k, e);
  }

 private:
  std::unordered_map<protocol::NodePublic, ReplicaEntry> map_;
};

struct HomeEntry {
  KeyConns conns;
  std::vector<ConnRef> forwarders;  // insertion order; front() is preferred (derper's multiForwarder)

  ReplicaEntry view() const;
};

// The keys this shard is home for. Each mutator returns whether an EntryUpdate must be broadcast
// (and fills it).
class HomeDirectory {
 public:
  explicit HomeDirectory(DupPolicy policy) : policy_(policy) {}

  bool add_conn(const protocol::NodePublic& key, const ConnRef& c, const Endpoint& endpoint, std::uint8_t flags,
                DupDelta& delta, EntryUpdate& out);
  bool remove_conn(const protocol::NodePublic& key, const ConnRef& c, DupDelta& delta, EntryUpdate& out);
  bool note_activity(const protocol::NodePublic& key, const ConnRef& c, EntryUpdate& out);
  bool add_forwarder(const protocol::NodePublic& key, const ConnRef& link, EntryUpdate& out);
  // `found` tells whether (key, link) was registered (derper counts the other case).
  bool remove_forwarder(const protocol::NodePublic& key, const ConnRef& link, bool& found, EntryUpdate& out);

  const HomeEntry* find(const protocol::NodePublic& key) const {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second;
  }
  std::size_t keys() const { return map_.size(); }          // derper's clientsMesh (this home's part)
  std::size_t local_keys() const { return local_keys_; }    // keys with a connection on this node

 private:
  bool finish(const protocol::NodePublic& key, HomeEntry& h, const ReplicaEntry& before, bool was_local,
              std::uint8_t events, EntryUpdate& out);

  DupPolicy policy_;
  std::unordered_map<protocol::NodePublic, HomeEntry> map_;
  std::size_t local_keys_ = 0;
};

}  // namespace derpd::server
