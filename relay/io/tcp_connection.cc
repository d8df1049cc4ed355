#include "relay/io/tcp_connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>

namespace derpd::io {

namespace {
constexpr std::uint8_t kOpRecv = 1;
constexpr std::uint8_t kOpSend = 2;
constexpr std::uint8_t kOpUnregister = 3;

constexpr std::uint16_t kTimerFlush = 1;     // end of turn: hand the staging buffer to the kernel
constexpr std::uint16_t kTimerRearm = 2;     // re-arm the receive (after throttling or a failed submit)
constexpr std::uint16_t kTimerDeadline = 3;  // idle timeout / owner deadline

// A timer at time 0 is due at once: it fires when this turn's timers run, after every completion
// of the turn was dispatched.
constexpr Nanos kEndOfTurn{0};
// Retry delay when the submission queue stayed full, and when -ENOBUFS keeps coming back.
constexpr Nanos kRetryDelay = std::chrono::milliseconds(1);
constexpr std::uint8_t kNoBufsBeforeBackoff = 4;
}  // namespace

std::string_view to_string(TcpError e) {
  switch (e) {
    case TcpError::kPeerReset: return "peer_reset";
    case TcpError::kBrokenPipe: return "broken_pipe";
    case TcpError::kTimedOut: return "timed_out";
    case TcpError::kIdleTimeout: return "idle_timeout";
    case TcpError::kDeadline: return "deadline";
    case TcpError::kRecvFailed: return "recv_failed";
    case TcpError::kSendFailed: return "send_failed";
    case TcpError::kCount: break;
  }
  return "unknown";
}

// ---- TcpContext ------------------------------------------------------------------------------

TcpContext::~TcpContext() {
  while (finishing_ != nullptr) {
    TcpConnection* c = finishing_;
    forget(c);
    delete c;
  }
}

void TcpContext::adopt(TcpConnection* c) {
  c->prev_ = nullptr;
  c->next_ = finishing_;
  if (finishing_ != nullptr) finishing_->prev_ = c;
  finishing_ = c;
  ++finishing_count_;
}

void TcpContext::forget(TcpConnection* c) {
  if (c->prev_ != nullptr)
    c->prev_->next_ = c->next_;
  else
    finishing_ = c->next_;
  if (c->next_ != nullptr) c->next_->prev_ = c->prev_;
  c->prev_ = c->next_ = nullptr;
  --finishing_count_;
}

void TcpContext::use_file_table(unsigned slots) {
  table_size_ = slots;
  free_slots_.clear();
  free_slots_.reserve(slots);
  for (unsigned i = slots; i > 0; --i) free_slots_.push_back(i - 1);  // lowest slots first
}

int TcpContext::take_file_slot() {
  if (free_slots_.empty()) return -1;
  int slot = static_cast<int>(free_slots_.back());
  free_slots_.pop_back();
  return slot;
}

void TcpContext::give_file_slot(int slot) {
  if (slot >= 0 && static_cast<unsigned>(slot) < table_size_) free_slots_.push_back(static_cast<std::uint32_t>(slot));
}

// ---- SendBufferPool --------------------------------------------------------------------------

int SendBufferPool::class_of(std::size_t size) {
  std::size_t s = kMinSize;
  for (unsigned c = 0; c < kClasses; ++c, s <<= 1)
    if (s == size) return static_cast<int>(c);
  return -1;
}

std::size_t SendBufferPool::round_up(std::size_t n) {
  std::size_t s = kMinSize;
  for (unsigned c = 0; c < kClasses; ++c, s <<= 1)
    if (n <= s) return s;
  return n;
}

std::unique_ptr<std::byte[]> SendBufferPool::take(std::size_t size) {
  int c = class_of(size);
  if (c >= 0 && !free_[c].empty()) {
    auto buf = std::move(free_[c].back());
    free_[c].pop_back();
    held_ -= size;
    return buf;
  }
  return std::unique_ptr<std::byte[]>(new std::byte[size]);
}

void SendBufferPool::give(std::unique_ptr<std::byte[]> buf, std::size_t size) {
  int c = class_of(size);
  if (c < 0 || held_ + size > limit_) return;  // freed here
  free_[c].push_back(std::move(buf));
  held_ += size;
}

// ---- Buffer ----------------------------------------------------------------------------------

void TcpConnection::Buffer::reserve_total(std::size_t total, std::size_t limit, SendBufferPool& pool) {
  if (total <= cap) return;
  std::size_t grown = std::max(SendBufferPool::kMinSize, cap * 2);
  std::size_t next = SendBufferPool::round_up(std::max(total, std::min(grown, limit)));
  std::unique_ptr<std::byte[]> fresh = pool.take(next);
  if (size > 0) std::memcpy(fresh.get(), data.get(), size);
  if (data) pool.give(std::move(data), cap);
  data = std::move(fresh);
  cap = next;
}

// ---- life cycle ------------------------------------------------------------------------------

TcpConnection::Ptr TcpConnection::open(TcpContext& ctx, int fd, StreamSink& sink, const TcpConnectionOptions& opts) {
  Ptr c(new TcpConnection(ctx, fd, sink, opts));
  c->arm_recv();
  if (opts.idle_timeout.count() > 0) c->arm_deadline_timer();
  return c;
}

TcpConnection::TcpConnection(TcpContext& ctx, int fd, StreamSink& sink, const TcpConnectionOptions& opts)
    : ctx_(ctx), loop_(ctx.loop()), sink_(sink), opts_(opts), sock_(fd), slot_(loop_.attach(this)) {
  recv_ud_ = loop_.user_data(slot_, kOpRecv);
  send_ud_ = loop_.user_data(slot_, kOpSend);
  if (opts_.nodelay) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // not a TCP socket in some tests
  }
  if (ctx_.file_slots() > 0) {
    const int table_slot = ctx_.take_file_slot();
    if (table_slot >= 0 && loop_.ring().update_file(static_cast<unsigned>(table_slot), fd) == 0) {
      ::close(fd);
      sock_ = FileRef::table(table_slot);
      ctx_.counters().registered.add();
    } else {
      ctx_.give_file_slot(table_slot);
      ctx_.counters().register_failed.add();
    }
  }
  if (opts_.idle_timeout.count() > 0) last_activity_ = loop_.now();
  ctx_.counters().opened.add();
}

TcpConnection::~TcpConnection() {
  // Reached from release() once finished, or from ~TcpContext at worker exit.
  if (state_ == State::kOpen || state_ == State::kFlushing) do_close();
  if (state_ != State::kDetached) loop_.detach(slot_);
}

void TcpConnection::release() {
  if (released_) return;
  released_ = true;
  if (state_ == State::kOpen || state_ == State::kFlushing) do_close();
  if (state_ == State::kDetached && depth_ == 0) {
    delete this;
    return;
  }
  // Still waiting for completions, or inside one of our own callbacks: maybe_finish() frees us.
  ctx_.adopt(this);
}

void TcpConnection::maybe_finish() {
  if (depth_ != 0) return;
  if (state_ == State::kClosed && recv_ == RecvState::kIdle && !send_in_flight_ && !unregistering_) {
    state_ = State::kDetached;
    loop_.detach(slot_);
  }
  if (released_ && state_ == State::kDetached) {
    ctx_.forget(this);
    delete this;
  }
}

void TcpConnection::do_close() {
  state_ = State::kClosed;
  staging_.free(ctx_.send_buffers());
  reserved_ = 0;
  // shutdown() first: it ends the armed receive and any send waiting for socket space right away,
  // without reading the send buffer again, even if a cancel below could not be submitted.
  if (!sock_.registered) ::shutdown(sock_.index, SHUT_RDWR);
  if (recv_ == RecvState::kArmed) {
    if (loop_.ring().prep_cancel(recv_ud_, kIgnoredUserData))
      recv_ = RecvState::kCancelling;
    else
      ctx_.counters().submit_failed.add();
  }
  if (send_in_flight_ && !loop_.ring().prep_cancel(send_ud_, kIgnoredUserData)) ctx_.counters().submit_failed.add();
  close_socket();
  ctx_.counters().closed.add();
}

void TcpConnection::close_socket() {
  if (!sock_.registered) {
    // Cancels go by user_data, so closing the fd number now is safe even if the next accept
    // reuses it.
    ::close(sock_.index);
    sock_ = FileRef(-1);
    return;
  }
  // The slot returns to the context only when the kernel has emptied it (on_unregistered), so the
  // next connection cannot be given a slot that still holds this socket.
  if (loop_.ring().prep_shutdown_unregister(sock_.index, loop_.user_data(slot_, kOpUnregister))) {
    unregistering_ = true;
    return;
  }
  ctx_.counters().submit_failed.add();
  loop_.ring().update_file(static_cast<unsigned>(sock_.index), -1);  // synchronous fallback
  ctx_.give_file_slot(sock_.index);
  sock_ = FileRef(-1);
}

void TcpConnection::on_unregistered() {
  unregistering_ = false;
  ctx_.give_file_slot(sock_.index);
  sock_ = FileRef(-1);
}

void TcpConnection::close() {
  if (state_ != State::kOpen && state_ != State::kFlushing) return;
  do_close();
  maybe_finish();
}

void TcpConnection::close_after_flush() {
  if (state_ != State::kOpen) return;
  state_ = State::kFlushing;
  cancel_recv();
  if (queued_bytes() == 0 && !send_in_flight_) {
    close();
    return;
  }
  schedule_flush();
}

void TcpConnection::fail(TcpError e, int err) {
  if (state_ != State::kOpen && state_ != State::kFlushing) return;
  do_close();
  ctx_.counters().errors[static_cast<std::size_t>(e)].add();
  sink_.on_error(*this, e, err);
}

// ---- receive ---------------------------------------------------------------------------------

void TcpConnection::arm_recv() {
  if (recv_ != RecvState::kIdle || !want_read() || throttled_) return;
  if (loop_.ring().prep_recv_multishot(sock_, ctx_.buffers(), recv_ud_)) {
    recv_ = RecvState::kArmed;
    return;
  }
  ctx_.counters().submit_failed.add();
  if (!rearm_timer_) {
    rearm_timer_ = true;
    loop_.add_timer(slot_, loop_.now() + kRetryDelay, kTimerRearm);
  }
}

bool TcpConnection::cancel_recv() {
  if (recv_ != RecvState::kArmed) return false;
  if (loop_.ring().prep_cancel(recv_ud_, kIgnoredUserData)) {
    recv_ = RecvState::kCancelling;
    return true;
  }
  ctx_.counters().submit_failed.add();  // still armed: data keeps arriving and is handled
  return false;
}

void TcpConnection::pause_reading() {
  paused_ = true;
  cancel_recv();
}

void TcpConnection::resume_reading() {
  if (!paused_) return;
  paused_ = false;
  arm_recv();  // when the cancelled receive is still finishing, its last completion re-arms
}

void TcpConnection::on_recv(const Completion& c) {
  const bool more = (c.flags & IORING_CQE_F_MORE) != 0;
  if (!more) recv_ = RecvState::kIdle;
  BufRing& buffers = ctx_.buffers();
  if (completion_has_buffer(c.flags)) {
    const std::uint16_t bid = completion_buffer_id(c.flags);
    buffers.note_consumed();
    auto buf = buffers.buffer(bid);
    if (c.res > 0 && static_cast<std::size_t>(c.res) <= buf.size() && state_ == State::kOpen && !peer_closed_) {
      const auto n = static_cast<std::size_t>(c.res);
      nobufs_streak_ = 0;
      stats_.bytes_received += n;
      ctx_.counters().bytes_received.add(n);
      touch();
      const std::uint64_t turn = loop_.stats().turns;
      if (turn != turn_) {
        turn_ = turn;
        turn_bytes_ = 0;
      }
      turn_bytes_ += n;
      sink_.on_data(*this, Bytes(buf.data(), n));
      if (turn_bytes_ > opts_.recv_budget_per_turn && want_read() && !throttled_ && cancel_recv()) {
        throttled_ = true;
        ctx_.counters().recv_throttled.add();
      }
    }
    buffers.recycle(bid);
    buffers.publish();
  }
  bool no_buffers = false;
  if (c.res == 0) {
    if (state_ == State::kOpen && !peer_closed_) {
      peer_closed_ = true;
      cancel_recv();  // a multishot ends on EOF by itself; this only matters if it did not
      sink_.on_peer_closed(*this);
    }
  } else if (c.res < 0) {
    switch (-c.res) {
      case ENOBUFS:
        no_buffers = true;
        ctx_.counters().no_buffers.add();
        buffers.publish();  // replenish before re-arming
        break;
      case ECANCELED: break;  // ours: pause, throttle or close
      case ECONNRESET: fail(TcpError::kPeerReset, -c.res); break;
      case ETIMEDOUT: fail(TcpError::kTimedOut, -c.res); break;
      case EPIPE: fail(TcpError::kBrokenPipe, -c.res); break;
      default: fail(TcpError::kRecvFailed, -c.res); break;
    }
  }
  if (recv_ == RecvState::kIdle) after_recv_ended(no_buffers);
}

void TcpConnection::after_recv_ended(bool no_buffers) {
  if (no_buffers) {
    if (nobufs_streak_ < 255) ++nobufs_streak_;
  }
  if (!want_read() || rearm_timer_) return;
  if (throttled_) {
    rearm_timer_ = true;
    loop_.add_timer(slot_, kEndOfTurn, kTimerRearm);
    return;
  }
  if (no_buffers && nobufs_streak_ >= kNoBufsBeforeBackoff) {
    // The pool stays empty (every buffer is queued in completions not yet reaped): give the
    // worker a moment instead of spinning on -ENOBUFS.
    rearm_timer_ = true;
    loop_.add_timer(slot_, loop_.now() + kRetryDelay, kTimerRearm);
    return;
  }
  arm_recv();
}

// ---- send ------------------------------------------------------------------------------------

std::size_t TcpConnection::queued_bytes() const { return (inflight_.size - sent_) + staging_.size; }

std::size_t TcpConnection::write_room() const {
  std::size_t q = queued_bytes();
  return q >= opts_.max_queued_bytes ? 0 : opts_.max_queued_bytes - q;
}

Status<WriteError> TcpConnection::write(Bytes data) {
  if (state_ != State::kOpen) return Err{WriteError::kClosed};
  if (data.empty()) return {};
  if (data.size() > write_room()) {
    ctx_.counters().write_refused.add();
    return Err{WriteError::kQueueFull};
  }
  staging_.reserve_total(staging_.size + data.size(), opts_.max_queued_bytes, ctx_.send_buffers());
  std::memcpy(staging_.data.get() + staging_.size, data.data(), data.size());
  staging_.size += data.size();
  schedule_flush();
  return {};
}

MutBytes TcpConnection::reserve(std::size_t n) {
  reserved_ = 0;
  if (state_ != State::kOpen || n == 0) return {};
  if (n > write_room()) {
    ctx_.counters().write_refused.add();
    return {};
  }
  staging_.reserve_total(staging_.size + n, opts_.max_queued_bytes, ctx_.send_buffers());
  reserved_ = n;
  return {staging_.data.get() + staging_.size, n};
}

void TcpConnection::commit(std::size_t n) {
  if (state_ != State::kOpen) return;
  n = std::min(n, reserved_);
  reserved_ = 0;
  if (n == 0) return;
  staging_.size += n;
  schedule_flush();
}

void TcpConnection::schedule_flush() {
  if (flush_scheduled_ || send_in_flight_) return;  // a send completion flushes what gathered
  flush_scheduled_ = true;
  loop_.add_timer(slot_, kEndOfTurn, kTimerFlush);
}

void TcpConnection::start_send() {
  if (send_in_flight_) return;
  if (state_ != State::kOpen && state_ != State::kFlushing) return;
  if (sent_ == inflight_.size) {  // nothing left of the last send (a failed submit leaves some)
    if (staging_.size == 0) return;
    std::swap(inflight_, staging_);  // the old in-flight buffer (empty) becomes the next staging buffer
    staging_.size = 0;
    sent_ = 0;
  }
  submit_send();
}

void TcpConnection::submit_send() {
  if (loop_.ring().prep_send(sock_, inflight_.data.get() + sent_, inflight_.size - sent_, MSG_NOSIGNAL, send_ud_)) {
    send_in_flight_ = true;
    ++stats_.sends;
    return;
  }
  ctx_.counters().submit_failed.add();
  if (!flush_scheduled_) {
    flush_scheduled_ = true;
    loop_.add_timer(slot_, loop_.now() + kRetryDelay, kTimerFlush);
  }
}

void TcpConnection::on_send(const Completion& c) {
  send_in_flight_ = false;
  if (state_ != State::kOpen && state_ != State::kFlushing) {
    inflight_.free(ctx_.send_buffers());  // the kernel is done with it
    sent_ = 0;
    return;
  }
  if (c.res <= 0) {
    switch (-c.res) {
      case EPIPE: fail(TcpError::kBrokenPipe, EPIPE); break;
      case ECONNRESET: fail(TcpError::kPeerReset, ECONNRESET); break;
      case ETIMEDOUT: fail(TcpError::kTimedOut, ETIMEDOUT); break;
      case EINTR:
      case EAGAIN: submit_send(); break;  // transient: send the same bytes again
      default: fail(TcpError::kSendFailed, -c.res); break;  // includes 0: no progress
    }
    if (state_ == State::kClosed) {
      inflight_.free(ctx_.send_buffers());
      sent_ = 0;
    }
    return;
  }
  const auto n = std::min(static_cast<std::size_t>(c.res), inflight_.size - sent_);
  sent_ += n;
  stats_.bytes_sent += n;
  ctx_.counters().bytes_sent.add(n);
  touch();
  if (sent_ < inflight_.size) {
    ctx_.counters().partial_sends.add();
    submit_send();  // continue where the kernel stopped
    return;
  }
  inflight_.size = 0;
  sent_ = 0;
  if (staging_.size > 0) {
    schedule_flush();  // what gathered behind this send leaves at the end of the turn
    return;
  }
  drained();
}

void TcpConnection::drained() {
  inflight_.free(ctx_.send_buffers());
  staging_.free(ctx_.send_buffers());
  if (state_ == State::kFlushing) {
    close();
    sink_.on_closed(*this);
    return;
  }
  sink_.on_drained(*this);
}

// ---- timers ----------------------------------------------------------------------------------

void TcpConnection::touch() {
  if (opts_.idle_timeout.count() > 0) last_activity_ = loop_.now();
}

void TcpConnection::set_deadline(Nanos when) {
  deadline_ = when.count() == 0 ? Nanos{1} : when;
  arm_deadline_timer();
}

void TcpConnection::clear_deadline() { deadline_ = Nanos{0}; }

void TcpConnection::arm_deadline_timer() {
  if (state_ != State::kOpen && state_ != State::kFlushing) return;
  Nanos next{0};
  if (deadline_.count() != 0) next = deadline_;
  if (opts_.idle_timeout.count() > 0) {
    Nanos idle_at = last_activity_ + opts_.idle_timeout;
    if (next.count() == 0 || idle_at < next) next = idle_at;
  }
  if (next.count() == 0) return;
  if (timer_at_.count() != 0 && timer_at_ <= next) return;  // an earlier timer will re-check
  timer_at_ = next;
  loop_.add_timer(slot_, next, kTimerDeadline);
}

void TcpConnection::check_deadlines() {
  const Nanos now = loop_.now();
  if (timer_at_ <= now) timer_at_ = Nanos{0};
  if (deadline_.count() != 0 && now >= deadline_) {
    fail(TcpError::kDeadline, ETIMEDOUT);
    return;
  }
  if (opts_.idle_timeout.count() > 0 && now - last_activity_ >= opts_.idle_timeout) {
    fail(TcpError::kIdleTimeout, ETIMEDOUT);
    return;
  }
  arm_deadline_timer();
}

// ---- dispatch --------------------------------------------------------------------------------

void TcpConnection::on_completion(const UserData& ud, const Completion& c) {
  ++depth_;
  if (ud.op == kOpRecv)
    on_recv(c);
  else if (ud.op == kOpSend)
    on_send(c);
  else if (ud.op == kOpUnregister)
    on_unregistered();
  --depth_;
  maybe_finish();
}

void TcpConnection::on_timer(std::uint16_t cookie) {
  ++depth_;
  switch (cookie) {
    case kTimerFlush:
      flush_scheduled_ = false;
      start_send();
      break;
    case kTimerRearm:
      rearm_timer_ = false;
      throttled_ = false;
      arm_recv();
      break;
    case kTimerDeadline:
      if (state_ == State::kOpen || state_ == State::kFlushing) check_deadlines();
      break;
    default: break;
  }
  --depth_;
  maybe_finish();
}

}  // namespace derpd::io
