// Loop: one worker's event loop over a Ring.
//
// Handlers (sockets, connections, services) attach to a slot arena and receive the completions
// of the submissions they tagged with user_data(slot, op, aux). Detaching a slot bumps its
// generation, so completions still in flight for the old owner are recognised as stale and
// dropped (counted) instead of reaching whoever reuses the slot. Completions are reaped in
// batches with one CQ advance; timers are a min-heap checked after each batch, and the wait for
// completions never overshoots the next timer. Everything here is owned by the worker thread,
// except wake(), which any thread may call.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "relay/io/ring.h"
#include "relay/io/user_data.h"

namespace derpd::io {

using Nanos = std::chrono::nanoseconds;

// Monotonic time source; tests inject a manual one.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual Nanos now() const = 0;
};

class MonotonicClock final : public Clock {
 public:
  Nanos now() const override;
};

class Handler {
 public:
  virtual void on_completion(const UserData& ud, const Completion& c) = 0;
  virtual void on_timer(std::uint16_t /*cookie*/) {}

 protected:
  ~Handler() = default;
};

struct LoopStats {
  std::uint64_t completions = 0;
  std::uint64_t stale_completions = 0;  // arrived for a detached slot generation
  std::uint64_t turns = 0;
};

class Loop {
 public:
  Loop(Ring& ring, const Clock& clock);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  Ring& ring() { return ring_; }
  const Clock& clock() const { return clock_; }
  Nanos now() const { return clock_.now(); }
  // The time this turn's completions were reaped: read once per turn, so per-event timestamps
  // (frames, write deadlines) cost nothing; at most one turn old. Use now() where that matters.
  Nanos turn_now() const { return turn_now_; }

  // Gives `h` a slot. Throws std::length_error when the arena is full (2^24 slots).
  std::uint32_t attach(Handler* h);
  // Frees the slot; pending completions and timers of the old generation are dropped.
  void detach(std::uint32_t slot);
  std::uint64_t user_data(std::uint32_t slot, std::uint8_t op, std::uint16_t aux = 0) const;

  // Calls the slot's handler on_timer(cookie) once `deadline` has passed, unless detached first.
  void add_timer(std::uint32_t slot, Nanos deadline, std::uint16_t cookie);

  // One turn: submit, wait for completions up to max_wait (sooner if a timer is due), dispatch
  // every ready completion, fire due timers.
  void run_once(Nanos max_wait);
  // Turns until stop() (from any thread; wakes the loop) or until `should_stop` reads true.
  void run();
  void stop();
  bool stopping() const { return stop_.load(std::memory_order_acquire); }

  // Wakes a sleeping loop from another thread (eventfd). Safe from any thread.
  void wake();

  const LoopStats& stats() const { return stats_; }

 private:
  struct Slot {
    Handler* handler = nullptr;
    std::uint16_t gen = 1;
    std::uint32_t next_free = 0;
  };
  struct Timer {
    Nanos deadline;
    std::uint32_t slot;
    std::uint16_t gen;
    std::uint16_t cookie;
  };
  struct TimerLater;
  struct WakeHandler final : Handler {
    Loop* loop = nullptr;
    void on_completion(const UserData& ud, const Completion& c) override;
  };

  void dispatch(const Completion& c);
  void fire_timers();
  void arm_wake();

  Ring& ring_;
  const Clock& clock_;
  std::vector<Slot> slots_;
  std::uint32_t free_head_ = 0;  // 0 = none (slot 0 is reserved)
  std::vector<Timer> timers_;    // min-heap on deadline
  LoopStats stats_;
  Nanos turn_now_{0};
  std::atomic<bool> stop_{false};
  int wake_fd_ = -1;
  std::uint64_t wake_buf_ = 0;
  WakeHandler wake_handler_;
  std::uint32_t wake_slot_ = 0;
};

}  // namespace derpd::io
