#include "relay/io/uring.h"

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "relay/io/buf_ring.h"

namespace derpd::io {

UringRing::UringRing(const RingOptions& opts) {
  io_uring_params p{};
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
  p.cq_entries = opts.cq_entries;
  if (opts.single_issuer) p.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  int rc = io_uring_queue_init_params(opts.entries, &ring_, &p);
  if (rc == -EINVAL && opts.single_issuer) {
    // Kernels before 6.1 lack DEFER_TASKRUN; fall back to cooperative task running.
    p = io_uring_params{};
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
    p.cq_entries = opts.cq_entries;
    rc = io_uring_queue_init_params(opts.entries, &ring_, &p);
  }
  if (rc < 0) throw std::runtime_error(std::string("io_uring_queue_init: ") + std::strerror(-rc));
  setup_flags_ = p.flags;
}

UringRing::~UringRing() { io_uring_queue_exit(&ring_); }

std::string UringRing::describe() const {
  std::string s;
  if (setup_flags_ & IORING_SETUP_SINGLE_ISSUER) s += "single-issuer ";
  if (setup_flags_ & IORING_SETUP_DEFER_TASKRUN) s += "defer-taskrun ";
  if (setup_flags_ & IORING_SETUP_COOP_TASKRUN) s += "coop-taskrun ";
  s += "sq=" + std::to_string(ring_.sq.ring_entries) + " cq=" + std::to_string(ring_.cq.ring_entries);
  return s;
}

io_uring_sqe* UringRing::get_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    io_uring_submit(&ring_);  // make room, then try once more
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

bool UringRing::prep_recvmsg_multishot(int fd, msghdr* tmpl, const BufRing& group, std::uint64_t ud) {
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return false;
  io_uring_prep_recvmsg_multishot(sqe, fd, tmpl, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = group.group_id();
  io_uring_sqe_set_data64(sqe, ud);
  return true;
}

bool UringRing::prep_sendmsg(int fd, const msghdr* msg, unsigned flags, std::uint64_t ud) {
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return false;
  io_uring_prep_sendmsg(sqe, fd, msg, flags);
  io_uring_sqe_set_data64(sqe, ud);
  return true;
}

bool UringRing::prep_read(int fd, void* buf, unsigned len, std::uint64_t ud) {
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return false;
  io_uring_prep_read(sqe, fd, buf, len, 0);
  io_uring_sqe_set_data64(sqe, ud);
  return true;
}

bool UringRing::prep_cancel_fd(int fd, std::uint64_t ud) {
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return false;
  io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, ud);
  return true;
}

bool UringRing::prep_accept_multishot(int fd, std::uint64_t ud) {
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return false;
  io_uring_prep_multishot_accept(sqe, fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, ud);
  return true;
}

bool UringRing::prep_recv_multishot(FileRef f, const BufRing& group, std::uint64_t ud) {
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return false;
  io_uring_prep_recv_multishot(sqe, f.index, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  if (f.registered) sqe->flags |= IOSQE_FIXED_FILE;
  sqe->buf_group = group.group_id();
  io_uring_sqe_set_data64(sqe, ud);
  return true;
}

bool UringRing::prep_send(FileRef f, const void* buf, std::size_t len, unsigned flags, std::uint64_t ud) {
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return false;
  io_uring_prep_send(sqe, f.index, buf, len, static_cast<int>(flags));
  if (f.registered) sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, ud);
  return true;
}

bool UringRing::prep_shutdown_unregister(int slot, std::uint64_t ud) {
  if (io_uring_sq_space_left(&ring_) < 2) io_uring_submit(&ring_);
  if (io_uring_sq_space_left(&ring_) < 2) return false;
  io_uring_sqe* shut = io_uring_get_sqe(&ring_);
  io_uring_prep_shutdown(shut, slot, SHUT_RDWR);
  // A hard link: the close runs even when the shutdown fails (e.g. the peer already reset).
  shut->flags |= IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK;
  io_uring_sqe_set_data64(shut, 0);
  io_uring_sqe* close = io_uring_get_sqe(&ring_);
  io_uring_prep_close_direct(close, static_cast<unsigned>(slot));
  io_uring_sqe_set_data64(close, ud);
  return true;
}

bool UringRing::prep_cancel(std::uint64_t target, std::uint64_t ud) {
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) return false;
  io_uring_prep_cancel64(sqe, target, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, ud);
  return true;
}

int UringRing::submit_and_wait(std::chrono::nanoseconds timeout) {
  io_uring_cqe* cqe = nullptr;
  int rc;
  if (timeout.count() < 0) {
    rc = io_uring_submit_and_wait(&ring_, 1);
  } else {
    __kernel_timespec ts{};
    ts.tv_sec = static_cast<long long>(timeout.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long long>(timeout.count() % 1'000'000'000);
    rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  }
  return rc < 0 ? rc : 0;
}

unsigned UringRing::reap(std::span<Completion> out) {
  io_uring_cqe* cqes[256];
  unsigned want = static_cast<unsigned>(std::min<std::size_t>(out.size(), 256));
  unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, want);
  for (unsigned i = 0; i < n; ++i) out[i] = Completion{cqes[i]->user_data, cqes[i]->res, cqes[i]->flags};
  io_uring_cq_advance(&ring_, n);
  return n;
}

int UringRing::register_buf_ring(BufRing& group) {
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uint64_t>(group.ring());
  reg.ring_entries = group.count();
  reg.bgid = group.group_id();
  return io_uring_register_buf_ring(&ring_, &reg, 0);
}

int UringRing::register_file_table(unsigned slots) { return io_uring_register_files_sparse(&ring_, slots); }

int UringRing::update_file(unsigned slot, int fd) {
  int rc = io_uring_register_files_update(&ring_, slot, &fd, 1);
  return rc < 0 ? rc : 0;
}

}  // namespace derpd::io
