// FakeRing: a behavioural stand-in for io_uring. Records what was submitted and lets a test
// inject completions, so loop and socket logic run without a kernel.
#pragma once

#include <deque>
#include <vector>

#include "relay/io/buf_ring.h"
#include "relay/io/ring.h"

namespace derpd::io::testing {

struct Submitted {
  enum Kind { kRecvMultishot, kSendmsg, kRead, kCancelFd, kAcceptMultishot, kRecvStream, kSend, kCancel, kShutdownUnregister } kind;
  int fd;  // or the table slot of a registered socket (see `registered`)
  std::uint64_t ud;
  const msghdr* msg = nullptr;
  std::uint16_t group = 0;
  const void* buf = nullptr;  // kSend: the bytes being sent
  std::size_t len = 0;        // kSend
  std::uint64_t target = 0;   // kCancel: the user_data being cancelled
  bool registered = false;    // fd names a slot of the registered-file table
};

class FakeRing final : public Ring {
 public:
  bool prep_recvmsg_multishot(int fd, msghdr* tmpl, const BufRing& group, std::uint64_t ud) override {
    submitted.push_back({Submitted::kRecvMultishot, fd, ud, tmpl, group.group_id()});
    return true;
  }
  bool prep_sendmsg(int fd, const msghdr* msg, unsigned, std::uint64_t ud) override {
    submitted.push_back({Submitted::kSendmsg, fd, ud, msg, 0});
    return true;
  }
  bool prep_read(int fd, void*, unsigned, std::uint64_t ud) override {
    submitted.push_back({Submitted::kRead, fd, ud, nullptr, 0});
    return true;
  }
  bool prep_cancel_fd(int fd, std::uint64_t ud) override {
    submitted.push_back({Submitted::kCancelFd, fd, ud, nullptr, 0});
    return true;
  }
  bool prep_accept_multishot(int fd, std::uint64_t ud) override {
    submitted.push_back({Submitted::kAcceptMultishot, fd, ud, nullptr, 0, nullptr, 0, 0});
    return true;
  }
  bool prep_recv_multishot(FileRef f, const BufRing& group, std::uint64_t ud) override {
    submitted.push_back({Submitted::kRecvStream, f.index, ud, nullptr, group.group_id(), nullptr, 0, 0, f.registered});
    return true;
  }
  bool prep_send(FileRef f, const void* buf, std::size_t len, unsigned, std::uint64_t ud) override {
    if (full) return false;
    submitted.push_back({Submitted::kSend, f.index, ud, nullptr, 0, buf, len, 0, f.registered});
    return true;
  }
  bool prep_shutdown_unregister(int slot, std::uint64_t ud) override {
    if (full) return false;
    submitted.push_back({Submitted::kShutdownUnregister, slot, ud, nullptr, 0, nullptr, 0, 0, true});
    return true;
  }
  bool prep_cancel(std::uint64_t target, std::uint64_t ud) override {
    submitted.push_back({Submitted::kCancel, -1, ud, nullptr, 0, nullptr, 0, target});
    return true;
  }
  int submit_and_wait(std::chrono::nanoseconds timeout) override {
    waits.push_back(timeout);
    return ready.empty() ? -ETIME : 0;
  }
  unsigned reap(std::span<Completion> out) override {
    unsigned n = 0;
    while (n < out.size() && !ready.empty()) {
      out[n++] = ready.front();
      ready.pop_front();
    }
    return n;
  }
  int register_buf_ring(BufRing&) override { return 0; }
  int register_file_table(unsigned slots) override {
    table.assign(slots, -1);
    return 0;
  }
  // Records the slot's socket; update_fails makes the next update fail like a kernel refusal.
  int update_file(unsigned slot, int fd) override {
    if (update_fails) return -EBADF;
    if (slot >= table.size()) return -EINVAL;
    table[slot] = fd;
    return 0;
  }

  void complete(std::uint64_t ud, std::int32_t res, std::uint32_t flags = 0) { ready.push_back({ud, res, flags}); }
  std::vector<Submitted> of_kind(Submitted::Kind k) const {
    std::vector<Submitted> v;
    for (const auto& s : submitted)
      if (s.kind == k) v.push_back(s);
    return v;
  }

  std::vector<Submitted> submitted;
  std::deque<Completion> ready;
  bool full = false;  // prep_send reports a full submission queue
  bool update_fails = false;
  std::vector<int> table;  // registered files: the descriptor each slot was given (-1: empty)
  std::vector<std::chrono::nanoseconds> waits;
};

class ManualClock final : public Clock {
 public:
  Nanos now() const override { return t; }
  Nanos t{1'000'000'000};
};

}  // namespace derpd::io::testing
