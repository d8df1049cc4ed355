// The development configuration embedded in the binary (config::dev_yaml()).
#include "config/config.h"

namespace derpd::config {

std::string_view dev_yaml() {
  return R"yaml(# derpd development configuration: everything on loopback, no TLS, no root needed.
#
# `dev: true` changes the defaults to:
#   DERP     http://127.0.0.1:3340   (certmode plaintext, no port-80 listener)
#   STUN     udp 127.0.0.1:3478      (derived: the IP of addr and stun-port)
#   metrics  http://127.0.0.1:9100/metrics
#   key      a throwaway node key generated at start-up (key-file "")
# Keys set below and flags on the command line still win, e.g.
#   derpd --config dev.yaml -a 127.0.0.1:4000     serves DERP on port 4000.
dev: true

# The name clients are told to dial; an IP address is fine without TLS.
hostname: 127.0.0.1

# Two workers keep the cross-worker forwarding path exercised on any laptop.
workers: 2

# debug, info, warn or error.
log-level: debug

# Uncomment to answer STUN on IPv6 loopback too (at most one address per family):
# stun-addr: ["127.0.0.1:3478", "[::1]:3478"]
)yaml";
}

}  // namespace derpd::config
