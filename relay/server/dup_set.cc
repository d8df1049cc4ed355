#include "relay/server/dup_set.h"

#include <algorithm>

namespace derpd::server {

const DupMember* KeyConns::find(const ConnRef& c) const {
  if (!c.valid()) return nullptr;
  for (const DupMember& m : members_)
    if (m.ref == c) return &m;
  return nullptr;
}

DupMember* KeyConns::find_mut(const ConnRef& c) { return const_cast<DupMember*>(find(c)); }

ConnRef KeyConns::pick_active() const {
  if (!dup_) return active_;
  const DupMember* l = find(last_);
  if (l != nullptr && !l->disabled) return last_;
  return kNoConn;
}

void KeyConns::add(const ConnRef& c, const Endpoint& endpoint, std::uint8_t flags, DupDelta& delta) {
  const ConnRef was = active_;
  DupMember m{c, endpoint, flags, false, false};
  if (was.valid()) {
    if (DupMember* w = find_mut(was)) w->is_dup = true;
    m.is_dup = true;
  }
  members_.push_back(m);
  if (!dup_ && was.valid()) {
    dup_ = true;
    delta.dup_keys += 1;
    delta.dup_conns += 2;  // both the old and the new one
    delta.dup_conn_total += 1;
    last_ = c;
    history_.assign(1, was);
  } else if (dup_) {
    delta.dup_conns += 1;
    delta.dup_conn_total += 1;
    last_ = c;
    std::erase(history_, c);
    history_.push_back(c);
  }
  active_ = c;
}

bool KeyConns::remove(const ConnRef& c, DupDelta& delta) {
  auto it = std::find_if(members_.begin(), members_.end(), [&](const DupMember& m) { return m.ref == c; });
  if (it == members_.end()) return false;
  if (!dup_) {
    members_.clear();
    active_ = kNoConn;
    return true;
  }
  members_.erase(it);
  if (last_ == c) last_ = kNoConn;
  std::erase(history_, c);  // one entry per member: no adjacent duplicates to fold
  if (!last_.valid() && !history_.empty()) last_ = history_.back();
  delta.dup_conns -= 1;
  if (members_.size() == 1) {
    // Back to a single connection: it is active and no longer a duplicate.
    dup_ = false;
    delta.dup_conns -= 1;  // the survivor no longer counts
    delta.dup_keys -= 1;
    DupMember& remain = members_.front();
    remain.disabled = false;
    remain.is_dup = false;
    active_ = remain.ref;
    last_ = kNoConn;
    history_.clear();
  } else {
    active_ = pick_active();
  }
  return true;
}

void KeyConns::note_activity(const ConnRef& c, DupPolicy policy) {
  DupMember* m = find_mut(c);
  if (m == nullptr || !m->is_dup || m->disabled || !dup_) return;
  if (policy == DupPolicy::kLastWriterIsActive || !last_.valid()) {
    last_ = c;
    active_ = c;
  }
  if (!history_.empty() && history_.back() == c) return;
  const bool sent_before = std::find(history_.begin(), history_.end(), c) != history_.end();
  if (policy == DupPolicy::kDisableFighters && sent_before) {
    for (DupMember& x : members_) {
      x.disabled = true;
      if (active_ == x.ref) active_ = kNoConn;
    }
  }
  if (sent_before) std::erase(history_, c);
  history_.push_back(c);
}

}  // namespace derpd::server
