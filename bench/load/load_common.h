// What the load tools (derp_load, stun_load, udp_echo_stun) share at start-up and for timing:
// the loopback-only address check (the network rule for every benchmark), CPU pinning, and the
// clocks they measure with.
#pragma once

#include <cstdint>
#include <string_view>

#include "relay/base/endpoint.h"

namespace derpd::bench {

inline constexpr std::uint64_t kNsPerS = 1'000'000'000ull;

// CLOCK_MONOTONIC in nanoseconds.
std::uint64_t now_ns();

// User + system CPU time of this process so far, in seconds.
double own_cpu_seconds();

// Pins the calling thread (and the threads it starts afterwards) to one CPU. Start-up only:
// throws std::runtime_error naming the CPU and the reason.
void pin_to_cpu(int cpu);

// Parses an "IP:PORT" a load tool is to send to or listen on and refuses any address off
// loopback (127.0.0.0/8, ::1). `what` names it in the error ("target", "listen address"),
// `example` shows the form ("127.0.0.1:3478 or [::1]:3478"); port 0 passes only with
// `port_zero_ok` (a listener that lets the kernel pick). Start-up only: throws
// std::invalid_argument with a message for the user.
Endpoint loopback_endpoint(std::string_view text, std::string_view what, std::string_view example,
                           bool port_zero_ok = false);

}  // namespace derpd::bench
