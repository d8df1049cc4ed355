#include "relay/server/client.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace derpd::server {

void ControlStream::append(Bytes frame) {
  if (read_ == buf_.size()) {
    buf_.clear();
    read_ = 0;
  }
  buf_.insert(buf_.end(), frame.begin(), frame.end());
}

std::size_t ControlStream::pop_frame(MutBytes out) {
  if (empty()) return 0;
  assert(size() >= protocol::kFrameHeaderLen);
  const std::size_t len = protocol::kFrameHeaderLen + load_be32(buf_.data() + read_ + 1);
  assert(len <= size() && len <= out.size());
  std::memcpy(out.data(), buf_.data() + read_, len);
  read_ += len;
  if (read_ == buf_.size()) {
    if (buf_.capacity() > kKeepCapacity) {
      std::vector<std::byte>().swap(buf_);
    } else {
      buf_.clear();
    }
    read_ = 0;
  }
  return len;
}

void ControlStream::clear() {
  std::vector<std::byte>().swap(buf_);
  read_ = 0;
}

std::size_t OutFrame::copy_to(MutBytes out, bool& done) {
  std::size_t n = 0;
  if (off < head_len) {
    const std::size_t k = std::min<std::size_t>(head_len - off, out.size());
    std::memcpy(out.data(), head.data() + off, k);
    off += static_cast<std::uint32_t>(k);
    n += k;
  }
  if (body != nullptr && off >= head_len && n < out.size()) {
    const std::size_t body_off = off - head_len;
    const std::size_t k = std::min<std::size_t>(body->len - body_off, out.size() - n);
    if (k != 0) std::memcpy(out.data() + n, body->data() + body_off, k);
    off += static_cast<std::uint32_t>(k);
    n += k;
  }
  done = off == total();
  return n;
}

ClientId ClientArena::alloc(std::size_t queue_depth, Client*& out) {
  std::uint32_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else {
    slot = static_cast<std::uint32_t>(slots_.size());
    slots_.push_back(std::make_unique<Client>());
  }
  Client& c = *slots_[slot];
  c.state = Client::State::kActive;
  if (c.normal.capacity() != queue_depth) {
    c.normal.init(queue_depth);
    c.disco.init(queue_depth);
  }
  ++live_;
  out = &c;
  return ClientId{slot, c.gen};
}

void ClientArena::release(ClientId id) {
  Client* c = get(id);
  if (c == nullptr) return;
  assert(c->normal.empty() && c->disco.empty() && c->current.body == nullptr);
  // Reset everything but the reusable queue storage.
  const std::uint32_t next_gen = c->gen + 1 == 0 ? 1 : c->gen + 1;
  c->state = Client::State::kFree;
  c->gen = next_gen;
  c->kind = Client::Kind::kClient;
  c->params = ClientParams{};
  c->present_flags = 0;
  c->connected_at = Nanos{0};
  c->keepalive_period = Nanos{0};
  c->preferred = c->watcher = c->in_ready = c->pong_pending = c->keepalive_pending = false;
  c->dup_hint = c->active_hint = c->history_back_hint = false;
  c->sw = Client::Switch::kNone;
  c->activity_noted = false;
  c->switch_acks = 0;
  c->switch_seq = 0;
  c->held_since = Nanos{0};
  c->peer_gone_limit = TokenBucket{};
  c->control.clear();
  c->current = OutFrame{};
  c->pending = 0;
  c->last_pull_packets = {};
  c->last_pull_bytes = {};
  std::unordered_set<protocol::NodePublic>().swap(c->saw_src);
  c->saw_src_memo = false;
  std::unordered_set<protocol::NodePublic>().swap(c->link_keys);
  free_.push_back(id.slot);
  --live_;
}

}  // namespace derpd::server
