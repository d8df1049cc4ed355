// The daemon: configuration in, workers running, signals handled, a clean exit.
#pragma once

#include "config/config.h"

namespace derpd::daemon {

// Runs until SIGINT/SIGTERM. Returns the process exit code; prints why on failure.
int run(const config::Config& cfg);

}  // namespace derpd::daemon
