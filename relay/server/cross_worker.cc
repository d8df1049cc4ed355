#include "relay/server/cross_worker.h"

#include <stdexcept>

namespace derpd::server {

Fabric::Fabric(std::uint16_t workers, std::size_t ring_bytes) : workers_(workers) {
  if (workers == 0 || workers > kMaxWorkers) throw std::invalid_argument("worker count out of range");
  rings_.resize(std::size_t{workers} * workers);
  for (std::size_t from = 0; from < workers; ++from)
    for (std::size_t to = 0; to < workers; ++to)
      if (from != to) rings_[from * workers + to] = std::make_unique<SpscByteRing>(ring_bytes);
}

bool decode_msg(Bytes record, MsgView& out) {
  if (record.size() < kMsgTagLen) return false;
  out.type = static_cast<MsgType>(std::to_integer<std::uint8_t>(record[0]));
  out.body = record.subspan(kMsgTagLen);
  return true;
}

Outbox::Outbox(Fabric& fabric, WorkerId self)
    : fabric_(fabric), self_(self), backlog_(fabric.workers()), wake_flag_(fabric.workers(), 0) {
  wakes_.reserve(fabric.workers());
}

bool Outbox::write(WorkerId to, MsgType type, Bytes body, Bytes tail) {
  SpscByteRing& ring = fabric_.ring(self_, to);
  MutBytes out = ring.try_reserve(kMsgTagLen + body.size() + tail.size());
  if (out.data() == nullptr) return false;
  std::memset(out.data(), 0, kMsgTagLen);
  out[0] = static_cast<std::byte>(type);
  std::memcpy(out.data() + kMsgTagLen, body.data(), body.size());
  if (!tail.empty()) std::memcpy(out.data() + kMsgTagLen + body.size(), tail.data(), tail.size());
  ring.commit();
  note_wake(to);
  return true;
}

void Outbox::note_wake(WorkerId to) {
  if (wake_flag_[to]) return;
  wake_flag_[to] = 1;
  wakes_.push_back(to);
}

bool Outbox::post_packet(WorkerId to, const PacketMsg& m, Bytes packet) {
  return write(to, MsgType::kPacket, Bytes(reinterpret_cast<const std::byte*>(&m), sizeof m), packet);
}

void Outbox::post_control_bytes(WorkerId to, MsgType type, Bytes body) {
  auto& q = backlog_[to];
  if (q.empty() && write(to, type, body, {})) return;
  std::vector<std::byte> rec(1 + body.size());
  rec[0] = static_cast<std::byte>(type);
  std::memcpy(rec.data() + 1, body.data(), body.size());
  q.push_back(std::move(rec));
  ++parked_;
  ++parked_total_;
}

bool Outbox::flush() {
  if (parked_ == 0) return true;
  for (std::size_t to = 0; to < backlog_.size(); ++to) {
    auto& q = backlog_[to];
    while (!q.empty()) {
      const auto& rec = q.front();
      const auto type = static_cast<MsgType>(std::to_integer<std::uint8_t>(rec[0]));
      if (!write(static_cast<WorkerId>(to), type, Bytes(rec).subspan(1), {})) break;
      q.pop_front();
      --parked_;
    }
  }
  return parked_ == 0;
}

void Outbox::take_wakes(std::vector<WorkerId>& out) {
  for (WorkerId w : wakes_) {
    wake_flag_[w] = 0;
    out.push_back(w);
  }
  wakes_.clear();
}

}  // namespace derpd::server
