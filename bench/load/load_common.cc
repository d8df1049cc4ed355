#include "bench/load/load_common.h"

#include <sched.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fmt/core.h>
#include <stdexcept>

namespace derpd::bench {

std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * kNsPerS + static_cast<std::uint64_t>(ts.tv_nsec);
}

double own_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

void pin_to_cpu(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) throw std::runtime_error(fmt::format("cannot pin to CPU {}: no such CPU", cpu));
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    throw std::runtime_error(fmt::format("cannot pin to CPU {}: {}", cpu, std::strerror(errno)));
  }
}

Endpoint loopback_endpoint(std::string_view text, std::string_view what, std::string_view example, bool port_zero_ok) {
  const auto ep = Endpoint::parse(text);
  if (!ep || (ep->port == 0 && !port_zero_ok)) {
    throw std::invalid_argument(fmt::format("bad {} '{}': want IP:PORT, e.g. {}", what, text, example));
  }
  if (!ep->addr.is_loopback()) {
    throw std::invalid_argument(
        fmt::format("refusing {} {}: only loopback (127.0.0.0/8, ::1) may be used", what, ep->to_string()));
  }
  return *ep;
}

}  // namespace derpd::bench
