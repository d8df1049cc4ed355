// Ring: the narrow interface the event loop uses to talk to io_uring.
//
// UringRing (uring.h) is the real implementation; tests use a fake that records submissions and
// injects completions, so loop and socket logic are unit-tested without a kernel.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

namespace derpd::io {

struct Completion {
  std::uint64_t user_data = 0;
  std::int32_t res = 0;
  std::uint32_t flags = 0;  // IORING_CQE_F_*
};

class BufRing;

// A socket as a submission names it: a process file descriptor, or an index into the ring's table
// of registered files. A registered socket uses no descriptor of the process (the table is sized
// per ring, each up to RLIMIT_NOFILE), and the kernel skips the descriptor lookup on every
// operation.
struct FileRef {
  int index = -1;
  bool registered = false;
  constexpr FileRef(int fd) : index(fd) {}  // NOLINT(google-explicit-constructor): a plain descriptor
  static constexpr FileRef table(int slot) {
    FileRef f(slot);
    f.registered = true;
    return f;
  }
};

class Ring {
 public:
  virtual ~Ring() = default;

  // Each prep_* queues one submission; false means the submission queue is full even after
  // flushing it to the kernel (the caller retries on a later loop turn).
  // Multishot recvmsg selecting buffers from `group`. `tmpl` gives msg_namelen/msg_controllen
  // and must stay valid while the operation is armed.
  virtual bool prep_recvmsg_multishot(int fd, msghdr* tmpl, const BufRing& group, std::uint64_t ud) = 0;
  // `msg` and everything it points to must stay valid until the completion.
  virtual bool prep_sendmsg(int fd, const msghdr* msg, unsigned flags, std::uint64_t ud) = 0;
  virtual bool prep_read(int fd, void* buf, unsigned len, std::uint64_t ud) = 0;
  // Cancels every operation on fd (completions arrive with -ECANCELED).
  virtual bool prep_cancel_fd(int fd, std::uint64_t ud) = 0;

  // Stream sockets (TCP).
  // Multishot accept on a listening socket: one completion per connection (res = the new fd,
  // opened SOCK_NONBLOCK | SOCK_CLOEXEC) with IORING_CQE_F_MORE while still armed. No peer address
  // is written (a shared address buffer would be overwritten by the next accept): getpeername().
  virtual bool prep_accept_multishot(int fd, std::uint64_t ud) = 0;
  // Multishot recv on a connected stream socket, each completion filling one buffer of `group`.
  virtual bool prep_recv_multishot(FileRef f, const BufRing& group, std::uint64_t ud) = 0;
  // One send of buf[0..len); `buf` must stay valid until the completion.
  virtual bool prep_send(FileRef f, const void* buf, std::size_t len, unsigned flags, std::uint64_t ud) = 0;
  // Registered sockets: shutdown(SHUT_RDWR), then (whatever the shutdown's result) removes the
  // socket from the table; one completion, tagged `ud`, when the slot is free again.
  virtual bool prep_shutdown_unregister(int slot, std::uint64_t ud) = 0;
  // Cancels every operation that was submitted with user_data `target` (exact: unlike a cancel by
  // fd it cannot hit a later owner of a reused fd number).
  virtual bool prep_cancel(std::uint64_t target, std::uint64_t ud) = 0;

  // Submits queued work and waits until at least one completion is ready or `timeout` passes
  // (negative: wait without limit). Returns 0 or a negative errno (-ETIME/-EINTR are normal).
  virtual int submit_and_wait(std::chrono::nanoseconds timeout) = 0;
  // Moves up to out.size() ready completions into `out` and consumes them (one CQ advance).
  virtual unsigned reap(std::span<Completion> out) = 0;

  // Makes `group` available to buffer-selecting receives. Fails with a negative errno.
  virtual int register_buf_ring(BufRing& group) = 0;
  // Creates the ring's table of `slots` registered files, all empty. Fails with a negative errno
  // (-EMFILE: more than RLIMIT_NOFILE slots asked).
  virtual int register_file_table(unsigned slots) = 0;
  // Puts the socket `fd` into table slot `slot` (the table takes its own reference: the caller
  // still closes `fd`), or with fd = -1 empties the slot at once. 0 or a negative errno.
  virtual int update_file(unsigned slot, int fd) = 0;
};

}  // namespace derpd::io
