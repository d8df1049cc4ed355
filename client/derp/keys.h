// Node keys for DERP clients: a throwaway key, or derper's JSON key file
// ({"PrivateKey": "privkey:<hex>"}, the form `derper -c` reads and writes).
#pragma once

#include <string>

#include "client/derp/error.h"
#include "relay/base/result.h"
#include "relay/protocol/key.h"

namespace derpd::derpclient {

// Reads and parses a derper key file (at most 64 KiB). kBadOptions with `why` on any problem.
Result<protocol::NodePrivate, Error> load_key_file(const std::string& path, std::string* why = nullptr);
// Writes `key` in derper's format to `path`, created with mode 0600 (an existing file is refused).
Status<Error> save_key_file(const std::string& path, const protocol::NodePrivate& key, std::string* why = nullptr);

// A mesh key file: 64 hex digits, surrounding white space ignored (derper -mesh-psk-file).
Result<protocol::MeshKey, Error> load_mesh_key_file(const std::string& path, std::string* why = nullptr);

}  // namespace derpd::derpclient
