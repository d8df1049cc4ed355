// KeyConns: every connection of one node key on this node, and which one receives its packets.
// This is derper's clientSet + dupClientSet, kept by the key's home shard (see peer_directory.h).
//
// One connection (the common case): it is active. A second connection for the key makes a
// duplicate set ("dup"): both stay open; the newest is active. Then activity decides:
//   kLastWriterIsActive (derper's default): the connection that most recently sent a frame is
//     active. When the active one leaves, the member that most recently sent (or registered)
//     takes over.
//   kDisableFighters: the first sender is active; if a member that already sent sends again
//     after another member did, the members are fighting (a cloned key) and all are disabled: no
//     active connection, packets for the key drop as dup_client. A newly registered connection
//     becomes active (not disabled).
// Dropping back to one connection ends the dup state and re-enables the survivor.
//
// Faithful to derper's quirks: the connection that created the dup set (the second one) is not
// in the send history until it sends; a connection registering while no member is active is not
// marked duplicate, so its activity is ignored. Unlike derper, the history keeps one entry per
// member (most recent position), which bounds it by the set size and changes nothing observable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "relay/base/endpoint.h"
#include "relay/server/types.h"

namespace derpd::server {

// Gauge/counter changes caused by one operation (derp_current_dup_client_keys, ..._conns,
// derp_counter_total_dup_client_conns).
struct DupDelta {
  int dup_keys = 0;
  int dup_conns = 0;
  int dup_conn_total = 0;
};

struct DupMember {
  ConnRef ref;
  Endpoint endpoint;       // for PeerPresent
  std::uint8_t flags = 0;  // PeerPresent flags
  bool is_dup = false;     // derper's isDup
  bool disabled = false;   // derper's isDisabled (kDisableFighters only)
};

class KeyConns {
 public:
  // registerClient
  void add(const ConnRef& c, const Endpoint& endpoint, std::uint8_t flags, DupDelta& delta);
  // unregisterClient; false if `c` is not a member (nothing changes)
  bool remove(const ConnRef& c, DupDelta& delta);
  // noteClientActivity: `c` sent a frame.
  void note_activity(const ConnRef& c, DupPolicy policy);

  bool empty() const { return members_.empty(); }
  std::size_t size() const { return members_.size(); }
  bool is_dup() const { return dup_; }
  ConnRef active() const { return active_; }   // kNoConn if none
  const DupMember* active_member() const { return find(active_); }
  ConnRef last() const { return last_; }
  ConnRef history_back() const { return history_.empty() ? kNoConn : history_.back(); }
  std::span<const DupMember> members() const { return members_; }
  std::span<const ConnRef> history() const { return history_; }
  const DupMember* find(const ConnRef& c) const;

 private:
  DupMember* find_mut(const ConnRef& c);
  ConnRef pick_active() const;

  std::vector<DupMember> members_;  // registration order
  ConnRef active_ = kNoConn;
  bool dup_ = false;
  ConnRef last_ = kNoConn;          // dup only
  std::vector<ConnRef> history_;    // dup only: who sent (or registered), oldest first
};

}  // namespace derpd::server
