// Refuses to start on a port another process already serves.
//
// derpd's listeners use SO_REUSEPORT (one socket per worker), and the kernel lets a second derpd of
// the same user join such a port silently, taking half of the new connections. Binding once
// without SO_REUSEPORT first turns that into a clear "address already in use".
#pragma once

#include <string>

#include "relay/base/endpoint.h"

namespace derpd::daemon {

// "" when `addr` is free for `type` (SOCK_STREAM or SOCK_DGRAM), else why not. Port 0 is always free.
std::string probe_port_free(const Endpoint& addr, int type);

}  // namespace derpd::daemon
