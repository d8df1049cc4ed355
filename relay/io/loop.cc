#include "relay/io/loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <stdexcept>

namespace derpd::io {

struct Loop::TimerLater {
  bool operator()(const Timer& a, const Timer& b) const { return a.deadline > b.deadline; }
};

namespace {
constexpr std::uint8_t kOpWake = 1;
constexpr unsigned kReapBatch = 256;

}  // namespace

Nanos MonotonicClock::now() const {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return Nanos{std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec};
}

Loop::Loop(Ring& ring, const Clock& clock) : ring_(ring), clock_(clock), turn_now_(clock.now()) {
  slots_.reserve(1024);
  slots_.emplace_back();  // slot 0 is reserved: user_data 0 means "ignore"
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw std::runtime_error("eventfd failed");
  wake_handler_.loop = this;
  wake_slot_ = attach(&wake_handler_);
  arm_wake();
}

Loop::~Loop() {
  if (wake_fd_ >= 0) close(wake_fd_);
}

std::uint32_t Loop::attach(Handler* h) {
  std::uint32_t idx;
  if (free_head_ != 0) {
    idx = free_head_;
    free_head_ = slots_[idx].next_free;
  } else {
    if (slots_.size() >= UserData::kMaxSlots) throw std::length_error("handler arena full");
    idx = static_cast<std::uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  slots_[idx].handler = h;
  slots_[idx].next_free = 0;
  return idx;
}

void Loop::detach(std::uint32_t slot) {
  Slot& s = slots_[slot];
  s.handler = nullptr;
  s.gen = static_cast<std::uint16_t>(s.gen + 1 == 0 ? 1 : s.gen + 1);
  s.next_free = free_head_;
  free_head_ = slot;
}

std::uint64_t Loop::user_data(std::uint32_t slot, std::uint8_t op, std::uint16_t aux) const {
  return UserData{op, slot, slots_[slot].gen, aux}.encode();
}

void Loop::add_timer(std::uint32_t slot, Nanos deadline, std::uint16_t cookie) {
  timers_.push_back(Timer{deadline, slot, slots_[slot].gen, cookie});
  std::push_heap(timers_.begin(), timers_.end(), TimerLater{});
}

void Loop::dispatch(const Completion& c) {
  ++stats_.completions;
  if (c.user_data == kIgnoredUserData) return;
  UserData ud = UserData::decode(c.user_data);
  if (ud.slot >= slots_.size()) {
    ++stats_.stale_completions;
    return;
  }
  Slot& s = slots_[ud.slot];
  if (s.handler == nullptr || s.gen != ud.gen) {
    ++stats_.stale_completions;
    return;
  }
  s.handler->on_completion(ud, c);
}

void Loop::fire_timers() {
  if (timers_.empty()) return;
  Nanos t = clock_.now();
  while (!timers_.empty() && timers_.front().deadline <= t) {
    std::pop_heap(timers_.begin(), timers_.end(), TimerLater{});
    Timer tm = timers_.back();
    timers_.pop_back();
    Slot& s = slots_[tm.slot];
    if (s.handler != nullptr && s.gen == tm.gen) s.handler->on_timer(tm.cookie);
  }
}

void Loop::run_once(Nanos max_wait) {
  ++stats_.turns;
  Nanos wait = max_wait;
  if (!timers_.empty()) {
    Nanos until = timers_.front().deadline - clock_.now();
    wait = std::max(Nanos{0}, std::min(wait, until));
  }
  int rc = ring_.submit_and_wait(wait);
  (void)rc;  // -ETIME / -EINTR: just look at what is ready
  turn_now_ = clock_.now();
  Completion batch[kReapBatch];
  for (;;) {
    unsigned n = ring_.reap(batch);
    for (unsigned i = 0; i < n; ++i) dispatch(batch[i]);
    if (n < kReapBatch) break;
  }
  fire_timers();
}

void Loop::run() {
  while (!stopping()) run_once(std::chrono::seconds(1));
}

void Loop::stop() {
  stop_.store(true, std::memory_order_release);
  wake();
}

void Loop::wake() {
  std::uint64_t one = 1;
  ssize_t w = write(wake_fd_, &one, sizeof one);
  (void)w;  // EAGAIN means a wake-up is already pending
}

void Loop::arm_wake() { ring_.prep_read(wake_fd_, &wake_buf_, sizeof wake_buf_, user_data(wake_slot_, kOpWake)); }

void Loop::WakeHandler::on_completion(const UserData&, const Completion&) { loop->arm_wake(); }

}  // namespace derpd::io
