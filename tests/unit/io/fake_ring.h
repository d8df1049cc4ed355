// FakeRing: a behavioural stand-in for io_uring. Records what was submitted and lets a test
// inject completions, so loop and socket logic run without a kernel.
#pragma once

#include <deque>
#include <vector>

#include "relay/io/buf_ring.h"
#include "relay/io/ring.h"

namespace derpd::io::testing {

struct Submitted {
  enum Kind { kRecvMultishot, kSendmsg, kRead, kCancelFd, kAcceptMultishot, kRecvStream, kSend, kCancel } kind;
  int fd;
  std::uint64_t ud;
  const msghdr* msg = nullptr;
  std::uint16_t group = 0;
  const void* buf = nullptr;  // kSend: the bytes being sent
  std::size_t len = 0;        // kSend
  std::uint64_t target = 0;   // kCancel: the user_data being cancelled
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
  bool prep_recv_multishot(int fd, const BufRing& group, std::uint64_t ud) override {
    submitted.push_back({Submitted::kRecvStream, fd, ud, nullptr, group.group_id(), nullptr, 0, 0});
    return true;
  }
  bool prep_send(int fd, const void* buf, std::size_t len, unsigned, std::uint64_t ud) override {
    if (full) return false;
    submitted.push_back({Submitted::kSend, fd, ud, nullptr, 0, buf, len, 0});
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
  std::vector<std::chrono::nanoseconds> waits;
};

class ManualClock final : public Clock {
 public:
  Nanos now() const override { return t; }
  Nanos t{1'000'000'000};
};

}  // namespace derpd::io::testing
