// TokenBucket: Go's rate.Limiter as derper uses it for PeerGone(not here) replies
// (rate.NewLimiter(rate.Every(time.Second), 3)): `burst` tokens at the start, one more every
// `interval`, never more than `burst`; allow() takes one if there is one. Time is passed in.
#pragma once

#include <algorithm>
#include <cstdint>

#include "relay/server/types.h"

namespace derpd::server {

class TokenBucket {
 public:
  TokenBucket() = default;
  TokenBucket(Nanos interval, std::uint32_t burst) : interval_(interval), burst_(burst) {}

  bool allow(Nanos now) {
    if (interval_.count() <= 0) return true;
    const std::int64_t full = interval_.count() * static_cast<std::int64_t>(burst_);
    if (!started_) {
      started_ = true;
      credit_ = full;
      last_ = now;
    } else if (now > last_) {
      credit_ = std::min(full, credit_ + (now - last_).count());
      last_ = now;
    }
    if (credit_ < interval_.count()) return false;
    credit_ -= interval_.count();
    return true;
  }

 private:
  Nanos interval_{0};
  std::uint32_t burst_ = 0;
  bool started_ = false;
  std::int64_t credit_ = 0;  // tokens * interval, in nanoseconds
  Nanos last_{0};
};

}  // namespace derpd::server
