// Received DERP messages: frames decoded into small structs, validated exactly as Tailscale's Go
// server (client -> server messages) and Go client (server -> client messages) validate them.
//
// VIEWS: every `Bytes` / `std::string_view` member below ALIASES the Frame's payload, i.e. the
// FrameReader's input chunk or spill buffer. It is valid only as long as that Frame is (until the
// next FrameReader::next()); copy what must outlive it. Keys and small fields are copied.
//
// Error rule, both sides: a returned FrameError means close the connection. Frames a Go peer
// would silently ignore come back as `Ignored` (skipped or unknown types, and on the client the
// short frames the Go client logs and drops).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <variant>

#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"
#include "relay/base/result.h"
#include "relay/protocol/frame.h"
#include "relay/protocol/key.h"

namespace derpd::protocol {

// --- client -> server (parsed by the server) ---------------------------------------------------
struct SendPacket {
  NodePublic dst;
  Bytes packet;  // view, <= kMaxPacketSize
};
struct ForwardPacket {  // mesh only
  NodePublic src;
  NodePublic dst;
  Bytes packet;  // view, <= kMaxPacketSize
};
struct NotePreferred {
  bool preferred = false;  // any non-zero byte means true, as in Go
};
struct WatchConns {};  // mesh only
struct ClosePeer {     // mesh only
  NodePublic peer;
};

// --- either direction --------------------------------------------------------------------------
struct Ping {
  PingData data{};  // the first 8 payload bytes; answer with write_pong(data)
};
struct Pong {
  PingData data{};
};

// --- server -> client (parsed by the client) ---------------------------------------------------
struct RecvPacket {
  NodePublic src;
  Bytes packet;  // view (the Go client accepts up to kMaxFrameSize - 32)
};
struct KeepAlive {};
struct PeerGone {
  NodePublic peer;
  PeerGoneReason reason = PeerGoneReason::kDisconnected;  // absent byte (old server) = disconnected
};
struct PeerPresent {
  NodePublic peer;
  std::optional<Endpoint> endpoint;  // absent from old servers; v4-mapped addresses unmapped
  std::uint8_t flags = 0;            // kPeerPresent* bits; 0 = old server without flags
};
struct Health {
  std::string_view problem;  // view; empty = healthy again
};
struct Restarting {
  std::uint32_t reconnect_in_ms = 0;
  std::uint32_t try_for_ms = 0;
};
// ServerInfo after the handshake frame: open `sealed` with open_server_info() (handshake.h); a
// failure there is fatal, as in the Go client.
struct ServerInfoFrame {
  Bytes sealed;  // view: nonce(24) + box
};

enum class IgnoreReason : std::uint8_t {
  kUnhandledType,  // a type this side does not act on (includes unknown and skipped types)
  kTooShort,       // Go client: "[unexpected] dropping short ... frame"
};
struct Ignored {
  FrameType type{};
  std::uint32_t length = 0;
  IgnoreReason reason = IgnoreReason::kUnhandledType;
};

// What a client can send, as the server sees it.
using ClientMessage = std::variant<SendPacket, ForwardPacket, NotePreferred, WatchConns, ClosePeer, Ping, Ignored>;
// What a server can send, as the client sees it.
using ServerMessage =
    std::variant<RecvPacket, KeepAlive, PeerGone, PeerPresent, Ping, Pong, Health, Restarting, ServerInfoFrame, Ignored>;

// Server side, after the handshake. Validation as derpserver's sclient.run:
//   SendPacket    >= 32 bytes, packet <= 64 KiB        else kTooShort / kPacketTooLarge
//   ForwardPacket >= 64 bytes, packet <= 64 KiB        else kTooShort / kPacketTooLarge
//   NotePreferred exactly 1 byte                       else kBadLength
//   WatchConns    exactly 0 bytes                      else kBadLength
//   ClosePeer     exactly 32 bytes                     else kBadLength
//   Ping          8..1000 bytes (first 8 echoed)       else kTooShort / kTooLong
//   anything else (Pong, ClientInfo again, unknown)    Ignored
// Mesh permission (requires_mesh()) is the server's check: the parser does not know the client.
Result<ClientMessage, FrameError> parse_client_message(const Frame& frame);

// Client side, after the handshake. As the Go client's Recv:
//   RecvPacket >= 32, PeerGone >= 32, PeerPresent >= 32, Ping/Pong >= 8, Restarting >= 8; shorter
//   ones are Ignored{kTooShort}. ServerInfo < 24 bytes is the only error (kTooShort). Extra trailing
//   bytes are ignored everywhere (PeerPresent reads IP+port only if 18 more bytes are there, flags
//   only if one more). ServerKey and unknown types are Ignored.
Result<ServerMessage, FrameError> parse_server_message(const Frame& frame);

}  // namespace derpd::protocol
