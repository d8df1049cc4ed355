// derpd: DERP relay and STUN server. See README.md.
#include <cstdio>
#include <exception>

#include <spdlog/spdlog.h>

#include "config/config.h"
#include "relay/daemon/daemon.h"

int main(int argc, char** argv) {
  derpd::config::LoadResult loaded;
  try {
    loaded = derpd::config::load(argc, argv);
  } catch (const derpd::config::Error& e) {
    std::fprintf(stderr, "derpd: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "derpd: %s\n", e.what());
    return 2;
  }
  if (loaded.exit_now) return loaded.exit_code;

  const auto& cfg = loaded.config;
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  switch (cfg.log_level) {
    case derpd::config::LogLevel::kDebug: spdlog::set_level(spdlog::level::debug); break;
    case derpd::config::LogLevel::kInfo: spdlog::set_level(spdlog::level::info); break;
    case derpd::config::LogLevel::kWarn: spdlog::set_level(spdlog::level::warn); break;
    case derpd::config::LogLevel::kError: spdlog::set_level(spdlog::level::err); break;
  }
  return derpd::daemon::run(cfg);
}
