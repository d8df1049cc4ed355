// Shared vocabulary of the relay server logic: identities of connections inside one worker
// (ClientId) and across the node (ConnRef), what the io layer tells the shard about a new client,
// and why connections end.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "relay/base/endpoint.h"
#include "relay/protocol/key.h"

namespace derpd::server {

using Nanos = std::chrono::nanoseconds;  // same type as io::Nanos (monotonic clock)
using WorkerId = std::uint16_t;
inline constexpr WorkerId kNoWorker = 0xffff;
inline constexpr std::uint16_t kMaxWorkers = 1024;

// A connection inside one shard: slot in the shard's arena + generation. A slot is reused after
// client_closed(); the generation tells a stale id from the new occupant.
struct ClientId {
  std::uint32_t slot = 0;
  std::uint32_t gen = 0;
  friend bool operator==(const ClientId&, const ClientId&) = default;
};

// A connection anywhere on this node: the worker that owns it and its ClientId there.
// Trivially copyable: it travels through the cross-worker rings.
struct ConnRef {
  WorkerId worker = kNoWorker;
  std::uint32_t slot = 0;
  std::uint32_t gen = 0;

  bool valid() const { return worker != kNoWorker; }
  ClientId client() const { return ClientId{slot, gen}; }
  friend bool operator==(const ConnRef&, const ConnRef&) = default;
};
inline constexpr ConnRef kNoConn{};

// What the io layer knows about a client once the handshake succeeded.
struct ClientParams {
  protocol::NodePublic key;  // proven by the ClientInfo box
  Endpoint remote;           // peer address of the TCP connection
  bool mesh_peer = false;    // presented the region's mesh key (protocol::is_mesh_peer)
  bool prober = false;       // ClientInfo.IsProber
  bool can_ack_pings = false;
  bool not_ideal = false;    // the upgrade request carried an Ideal-Node header
};

// Why the shard wants a connection closed (ShardOutputs::closes).
enum class CloseReason : std::uint8_t {
  kNotMeshPeer,     // WatchConns / ClosePeer / ForwardPacket without the mesh key ("insufficient permissions")
  kClosedByMeshPeer,// a mesh peer sent ClosePeer for this key
  kWatcherBacklog,  // a watcher let its PeerPresent/PeerGone backlog exceed the limit
  kShutdown,        // close_all()
  kCount,
};
std::string_view to_string(CloseReason r);

// How a connection ended, as the io layer reports it in client_closed().
enum class ConnEnd : std::uint8_t {
  kRequested,      // the shard asked for the close (ShardOutputs::closes)
  kPeerClosed,     // EOF from the peer
  kProtocolError,  // the frame reader or parser refused a frame
  kReadError,      // recv failed
  kWriteError,     // send failed or timed out: the frames of the last pull count as write_error drops
  kShutdown,       // the worker is stopping
};

// Mesh duplicate-key policy (derper's dupPolicy). derper runs kLastWriterIsActive; its
// kDisableFighters variant (silence every connection of a key whose connections take turns
// sending) is kept for parity and tests.
enum class DupPolicy : std::uint8_t { kLastWriterIsActive, kDisableFighters };

}  // namespace derpd::server
