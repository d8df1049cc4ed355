// UringRing: the Ring interface on a real io_uring (liburing).
#pragma once

#include <liburing.h>

#include <string>

#include "relay/io/ring.h"

namespace derpd::io {

struct RingOptions {
  unsigned entries = 4096;      // submission queue entries
  unsigned cq_entries = 32768;  // large CQ: multishot receives post many completions per submit
  bool single_issuer = true;    // IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN when the kernel has them
};

class UringRing final : public Ring {
 public:
  // Throws std::runtime_error naming the failure (start-up only).
  explicit UringRing(const RingOptions& opts);
  ~UringRing() override;
  UringRing(const UringRing&) = delete;
  UringRing& operator=(const UringRing&) = delete;

  bool prep_recvmsg_multishot(int fd, msghdr* tmpl, const BufRing& group, std::uint64_t ud) override;
  bool prep_sendmsg(int fd, const msghdr* msg, unsigned flags, std::uint64_t ud) override;
  bool prep_read(int fd, void* buf, unsigned len, std::uint64_t ud) override;
  bool prep_cancel_fd(int fd, std::uint64_t ud) override;
  bool prep_accept_multishot(int fd, std::uint64_t ud) override;
  bool prep_recv_multishot(FileRef f, const BufRing& group, std::uint64_t ud) override;
  bool prep_send(FileRef f, const void* buf, std::size_t len, unsigned flags, std::uint64_t ud) override;
  bool prep_shutdown_unregister(int slot, std::uint64_t ud) override;
  bool prep_cancel(std::uint64_t target, std::uint64_t ud) override;
  int submit_and_wait(std::chrono::nanoseconds timeout) override;
  unsigned reap(std::span<Completion> out) override;
  int register_buf_ring(BufRing& group) override;
  int register_file_table(unsigned slots) override;
  int update_file(unsigned slot, int fd) override;

  // The setup flags actually in effect, for the start-up log.
  std::string describe() const;
  int fd() const { return ring_.ring_fd; }

 private:
  io_uring_sqe* get_sqe();

  io_uring ring_{};
  unsigned setup_flags_ = 0;
};

}  // namespace derpd::io
