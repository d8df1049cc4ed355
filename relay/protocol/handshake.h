// The DERP login handshake, both sides. No I/O: frames in, frames out.
//
//   server: write_server_key()            (frame.h)  ->
//   client: parse_server_key()                        (skipped by fast-start clients)
//   client: write_client_info()                       ->
//   server: open_client_info(), admission, is_mesh_peer()
//   server: write_server_info()                       ->
//   client: open_server_info()                        (arrives as ServerInfoFrame, messages.h)
//
// Boxes are NaCl crypto_box (Curve25519, XSalsa20-Poly1305) through libsodium's crypto_box_easy /
// crypto_box_open_easy, with a fresh random 24-byte nonce in front, exactly Tailscale's
// key.NodePrivate.SealTo/OpenFrom. JSON is decoded leniently like Go's encoding/json (field names
// case-insensitive, unknown fields ignored, later duplicates win, null leaves a field unset); a
// known field of the wrong type, or a meshKey that is not 64 hex digits, fails the handshake as it
// does in Go.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/result.h"
#include "relay/protocol/frame.h"
#include "relay/protocol/key.h"

namespace derpd::protocol {

enum class HandshakeError : std::uint8_t {
  kUnexpectedFrame,  // not the frame type this step expects
  kTooShort,         // ClientInfo < 56 bytes, ServerKey < 40, ServerInfo < 24
  kTooLong,          // ClientInfo > 256 KiB, ServerKey > 1 KiB, ServerInfo box > 1 MiB
  kBadMagic,         // ServerKey does not start with "DERP🔑"
  kZeroKey,          // the peer's public key (or our private key) is all zero
  kOpenFailed,       // the box does not open (wrong keys, tampered, or shorter than its tag)
  kBadJson,          // not JSON, or not an object (null is accepted, as in Go)
  kBadField,         // a known field has the wrong JSON type, or meshKey is not 64 hex digits
  kBufferTooSmall,   // the output span cannot hold the frame
  kCryptoInit,       // libsodium failed to initialise
  kCount,
};
std::string_view to_string(HandshakeError e);

// The JSON a client sends in ClientInfo (Go: derp.ClientInfo).
struct ClientInfo {
  MeshKey mesh_key;           // "meshKey": zero = none (Go omits a zero key)
  std::int64_t version = 0;   // "version": the client's protocol version (2 today)
  bool can_ack_pings = false; // "CanAckPings"
  bool is_prober = false;     // "IsProber"
  std::string app_name;       // "AppName": opaque, for stats
};

// The JSON a server sends in ServerInfo (Go: derp.ServerInfo). derpd sends only the version: a Go
// client that sees TokenBucket* fields silently drops its own sends above that rate.
struct ServerInfo {
  std::int64_t version = 0;                        // "version"
  std::int64_t token_bucket_bytes_per_second = 0;  // "TokenBucketBytesPerSecond"
  std::int64_t token_bucket_bytes_burst = 0;       // "TokenBucketBytesBurst"
};

// --- server side ------------------------------------------------------------------------------

struct ClientHello {
  NodePublic key;   // the client's identity (proven: it sealed the box with the matching key)
  ClientInfo info;
};

// Validates and opens the client's first frame (read with server_handshake_limits()). The payload
// is copied out as it is decrypted, so `frame` may be released afterwards.
Result<ClientHello, HandshakeError> open_client_info(const Frame& frame, const NodePrivate& server_private);

// Whether the client presented the region's mesh key (constant-time; a zero key never matches).
bool is_mesh_peer(const ClientInfo& info, const MeshKey& server_mesh_key);

// The exact JSON derper sends: {"version":2}.
inline constexpr std::string_view kServerInfoJson = R"({"version":2})";
inline constexpr std::size_t kServerInfoFrameLen = kFrameHeaderLen + kNonceLen + kBoxOverhead + kServerInfoJson.size();

// Writes the ServerInfo frame (kServerInfoFrameLen bytes) sealed from the server to `client`.
Result<std::size_t, HandshakeError> write_server_info(MutBytes out, const NodePrivate& server_private,
                                                      const NodePublic& client);

// --- client side ------------------------------------------------------------------------------

// Validates the server's greeting (read with client_handshake_limits()) and returns its key.
Result<NodePublic, HandshakeError> parse_server_key(const Frame& frame);

// ClientInfo as the Go client marshals it: {"meshKey":..,"version":..,"CanAckPings":..,"IsProber":..,
// "AppName":..} with meshKey omitted when zero, version when 0, IsProber when false, AppName when
// empty; CanAckPings is always present.
std::string client_info_json(const ClientInfo& info);

constexpr std::size_t client_info_frame_size(std::size_t json_len) {
  return kFrameHeaderLen + kKeyLen + kNonceLen + kBoxOverhead + json_len;
}

// Writes the ClientInfo frame (client_info_frame_size(json.size()) bytes): our public key, then
// `json` sealed to the server. kTooLong if the payload would exceed what a Go server accepts.
Result<std::size_t, HandshakeError> write_client_info(MutBytes out, const NodePrivate& client_private,
                                                      const NodePublic& server, std::string_view json);

// Opens a ServerInfo payload (ServerInfoFrame::sealed: nonce + box) from `server`.
Result<ServerInfo, HandshakeError> open_server_info(Bytes sealed, const NodePrivate& client_private,
                                                    const NodePublic& server);

}  // namespace derpd::protocol
