// The node's private key file (derper -c): created on first start with mode 0600, reused forever
// after. An unreadable or malformed file is an error, never a silent regeneration: a new key
// would change the node's identity under every client's DERP map.
#pragma once

#include <string>

#include "relay/protocol/key.h"

namespace derpd::daemon {

struct LoadedKey {
  protocol::NodePrivate key;
  bool created = false;  // the file did not exist and was written now
};

// `path` empty: a throwaway key (development). Throws std::runtime_error naming the file and the
// problem (start-up only).
LoadedKey load_or_create_node_key(const std::string& path);

}  // namespace derpd::daemon
