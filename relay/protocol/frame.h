// DERP framing (protocol version 2): frame types, wire limits, an incremental frame reader and
// allocation-free frame writers. No I/O. Reference: Tailscale's derp/derp.go, derp_client.go and
// derp/derpserver/derpserver.go.
//
// Wire format: every frame is a 5-byte header, type(1) + payload length(4, big-endian), followed
// by exactly that many payload bytes. Frames are not aligned to TLS records or WebSocket messages.
//
// Protocol flow:
//   Login   server -> ServerKey (magic + server public key)       [10 s deadline for the client]
//           client -> ClientInfo (client public key + nonce + box(JSON), sealed to the server key)
//           server verifies it (admission, mesh key), registers the client,
//           server -> ServerInfo (nonce + box({"version":2}), sealed to the client key).
//           A fast-start client (Derp-Fast-Start: 1, server key known from the TLS meta cert)
//           sends ClientInfo without waiting; the server still sends ServerKey first.
//   Steady  client -> SendPacket(dst, packet); server -> RecvPacket(src, packet) to dst.
//           server -> KeepAlive every 60 s (+ up to 5 s jitter); either side -> Ping, the other
//           answers Pong with the same 8 bytes; client -> NotePreferred (home region or not);
//           server -> PeerGone when a peer the client heard from left, or a disco packet's
//           destination is not here; server -> Health (text, empty = healthy), Restarting.
//   Mesh    (clients that presented the region's mesh key) WatchConns -> PeerPresent for every
//           connected client, then PeerPresent/PeerGone as they come and go; ForwardPacket
//           (packets relayed on behalf of another node of the region); ClosePeer.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"
#include "relay/protocol/key.h"

namespace derpd::protocol {

// --- constants ------------------------------------------------------------------------------

// "DERP🔑": the first 8 bytes of the ServerKey payload.
inline constexpr std::array<std::byte, 8> kMagic = {
    std::byte{0x44}, std::byte{0x45}, std::byte{0x52}, std::byte{0x50},
    std::byte{0xf0}, std::byte{0x9f}, std::byte{0x94}, std::byte{0x91}};
inline constexpr std::size_t kFrameHeaderLen = 5;
inline constexpr std::size_t kNonceLen = 24;     // NaCl box nonce, sent in front of every box
inline constexpr std::size_t kBoxOverhead = 16;  // Poly1305 tag (crypto_box_MACBYTES)
inline constexpr int kProtocolVersion = 2;
// Largest packet carried by SendPacket/RecvPacket/ForwardPacket (payload minus keys).
inline constexpr std::size_t kMaxPacketSize = 64 << 10;
// Largest frame of any type either side accepts: the Go client refuses longer frames outright.
// (The Go server discards unknown frame types of any length; derpd refuses those above this.)
inline constexpr std::uint32_t kMaxFrameSize = 1 << 20;
// Largest JSON the Go client opens from ServerInfo (derp.MaxInfoLen).
inline constexpr std::size_t kMaxInfoLen = 1 << 20;
// ClientInfo payload bounds the Go server enforces: key + nonce at least, 256 KiB at most.
inline constexpr std::uint32_t kMinClientInfoLen = kKeyLen + kNonceLen;
inline constexpr std::uint32_t kMaxClientInfoLen = 256 << 10;
// ServerKey payload: magic + key; the Go client reads at most 1 KiB (extra bytes: future use).
inline constexpr std::uint32_t kServerKeyLen = kMagic.size() + kKeyLen;
inline constexpr std::uint32_t kMaxServerKeyLen = 1 << 10;
// Ping payload the Go server accepts; it echoes the first 8 bytes.
inline constexpr std::uint32_t kPingLen = 8;
inline constexpr std::uint32_t kMaxPingLen = 1000;
inline constexpr std::uint32_t kPeerGoneLen = kKeyLen + 1;
inline constexpr std::uint32_t kPeerPresentLen = kKeyLen + 16 + 2 + 1;  // key, IP, port, flags
inline constexpr std::uint32_t kRestartingLen = 8;

inline constexpr std::chrono::seconds kKeepAliveInterval{60};  // server keep-alive period
inline constexpr std::chrono::seconds kKeepAliveMaxJitter{5};  // derper adds rand[0, 5 s)
inline constexpr std::chrono::seconds kHandshakeTimeout{10};   // each of ServerKey / ClientInfo
inline constexpr std::chrono::seconds kClientReadTimeout{120}; // Go client's Recv deadline

// --- frame types ------------------------------------------------------------------------------

enum class FrameType : std::uint8_t {
  kServerKey = 0x01,      // S->C  magic(8) + server public key(32) [+ ignored extra bytes]
  kClientInfo = 0x02,     // C->S  client public key(32) + nonce(24) + box(JSON ClientInfo)
  kServerInfo = 0x03,     // S->C  nonce(24) + box(JSON ServerInfo: {"version":2})
  kSendPacket = 0x04,     // C->S  destination key(32) + packet (<= 64 KiB)
  kRecvPacket = 0x05,     // S->C  source key(32) + packet
  kKeepAlive = 0x06,      // S->C  empty
  kNotePreferred = 0x07,  // C->S  exactly 1 byte: 0x01 home region, 0x00 not
  kPeerGone = 0x08,       // S->C  peer key(32) + reason(1) (old servers: no reason = disconnected)
  kPeerPresent = 0x09,    // S->mesh  peer key(32) [+ IPv6 or v4-mapped IP(16) + port BE(2)
                          //          [+ flags(1)]]; shorter forms come from older servers
  kForwardPacket = 0x0a,  // mesh->S  source key(32) + destination key(32) + packet (<= 64 KiB)
  kWatchConns = 0x10,     // mesh->S  empty
  kClosePeer = 0x11,      // mesh->S  peer key(32)
  kPing = 0x12,           // both  8 bytes (a server accepts 8..1000 and echoes the first 8)
  kPong = 0x13,           // both  the 8 bytes of the ping answered
  kHealth = 0x14,         // S->C  UTF-8 problem text; empty = healthy again
  kRestarting = 0x15,     // S->C  reconnect-in ms (BE u32) + try-for ms (BE u32)
};
std::string_view to_string(FrameType t);  // "send_packet", ...; "unknown" for other values
bool is_known(FrameType t);
// WatchConns, ClosePeer and ForwardPacket: the server closes a connection that sends one of these
// without having presented the region's mesh key.
bool requires_mesh(FrameType t);

enum class PeerGoneReason : std::uint8_t {
  kDisconnected = 0x00,   // the peer disconnected from this server
  kNotHere = 0x01,        // the server has no such peer
  kMeshConnBroke = 0xf0,  // never on the wire: a mesh client invents it when its link drops
};

// PeerPresent flag bits (a modern server always sets at least one).
inline constexpr std::uint8_t kPeerPresentIsRegular = 1 << 0;
inline constexpr std::uint8_t kPeerPresentIsMeshPeer = 1 << 1;
inline constexpr std::uint8_t kPeerPresentIsProber = 1 << 2;
inline constexpr std::uint8_t kPeerPresentNotIdeal = 1 << 3;  // client sent an Ideal-Node header

using PingData = std::array<std::byte, kPingLen>;

// --- errors ---------------------------------------------------------------------------------

// Every FrameError means: close the connection.
enum class FrameError : std::uint8_t {
  kFrameTooLarge,    // header claims more than the limit for its type (nothing was buffered)
  kUnexpectedFrame,  // frame type not allowed here (e.g. anything but ClientInfo first)
  kTooShort,         // payload shorter than the type's fixed part
  kTooLong,          // payload longer than the type allows (Ping > 1000)
  kBadLength,        // payload length must be exact (NotePreferred 1, WatchConns 0, ClosePeer 32)
  kPacketTooLarge,   // SendPacket / ForwardPacket packet over 64 KiB
  kCount,
};
std::string_view to_string(FrameError e);

// --- reading ----------------------------------------------------------------------------------

// What a FrameReader does with each frame type.
enum class FrameAction : std::uint8_t {
  kReject,   // error kUnexpectedFrame as soon as the header arrives
  kSkip,     // report the header, then discard the payload as it streams by (never buffered)
  kDeliver,  // deliver the whole payload
};

// Per-type action and largest accepted payload length (inclusive). A header whose length exceeds
// its type's limit is an error before any payload byte is read.
struct FrameLimits {
  std::array<FrameAction, 256> action{};
  std::array<std::uint32_t, 256> max_len{};
};

// Server, before the handshake: only ClientInfo (<= 256 KiB), anything else is rejected.
const FrameLimits& server_handshake_limits();
// Server, after the handshake: delivers SendPacket (<= 32 + 64 KiB), ForwardPacket (<= 64 + 64 KiB),
// NotePreferred (<= 1), WatchConns (0), ClosePeer (<= 32), Ping (<= 1000); skips every other type
// up to kMaxFrameSize (the Go server ignores them too).
const FrameLimits& server_limits();
// Client, before the handshake: only ServerKey (<= 1 KiB), as the Go client.
const FrameLimits& client_handshake_limits();
// Client, after the handshake: delivers ServerInfo, RecvPacket, KeepAlive, PeerGone, PeerPresent,
// Ping, Pong, Health, Restarting; skips other types; every frame at most kMaxFrameSize.
const FrameLimits& client_limits();

// A frame from FrameReader::next().
//
// `payload` ALIASES memory the reader does not own or will reuse: either the input span given to
// next() (the frame lay wholly inside it; no copy) or the reader's spill buffer (the frame spanned
// input chunks). It is valid until the next call to next() on the same reader, and, when it aliases
// the input, only while the caller keeps that input memory alive.
struct Frame {
  FrameType type{};
  std::uint32_t length = 0;  // payload length from the header
  Bytes payload;             // `length` bytes; empty if skipped
  bool skipped = false;      // FrameAction::kSkip: reported at its header, payload discarded
};

// Incremental DERP frame reader for a byte stream delivered in arbitrary chunks.
//
// Usage: for each received chunk `in`, call next(in, frame) until it returns kNeedMore (the chunk
// is then fully consumed and may be recycled) or kError (close the connection). next() advances
// `in` past what it consumed. Frames that lie wholly inside `in` are yielded as views into it;
// only a frame that spans chunks is copied, into a spill buffer that grows with the bytes that
// actually arrived and never beyond that frame's validated length (so at most the largest limit).
// A length is checked against the limits before anything is buffered.
//
// Not thread-safe; owned by the connection's worker thread.
class FrameReader {
 public:
  enum class Status : std::uint8_t { kFrame, kNeedMore, kError };

  explicit FrameReader(const FrameLimits& limits) : limits_(&limits) {}

  Status next(Bytes& in, Frame& out);

  // Switches the limits table (e.g. after the handshake); takes effect at the next header.
  void set_limits(const FrameLimits& limits) { limits_ = &limits; }
  const FrameLimits& limits() const { return *limits_; }

  FrameError error() const { return error_; }
  bool failed() const { return state_ == State::kError; }
  // True at a frame boundary (no partial header, payload or skip pending).
  bool idle() const { return state_ == State::kHeader && header_have_ == 0; }
  // Bytes of a partial frame held in the spill buffer, and the buffer's capacity.
  std::size_t spilled() const { return state_ == State::kPayload ? spill_.size() : 0; }
  std::size_t spill_capacity() const { return spill_.capacity(); }
  // Frees the spill buffer unless a partial payload is pending (idle connections stay small).
  // Invalidates a Frame payload previously returned from the spill buffer.
  void release_memory();

 private:
  enum class State : std::uint8_t { kHeader, kPayload, kSkip, kError };

  Status fail(FrameError e);
  void spill(Bytes b);

  const FrameLimits* limits_;                // not owned; tables live for the program
  State state_ = State::kHeader;
  FrameError error_ = FrameError::kFrameTooLarge;  // meaningful only in State::kError
  std::uint8_t header_have_ = 0;             // bytes of a split header in header_
  std::array<std::byte, kFrameHeaderLen> header_{};
  FrameType type_{};                         // current frame (kPayload / kSkip)
  std::uint32_t length_ = 0;
  std::uint32_t remaining_ = 0;              // payload bytes still to copy or discard
  std::vector<std::byte> spill_;
};

// --- writing ----------------------------------------------------------------------------------
//
// Each writer stores one complete frame at the start of `out` (the caller's free space) and
// returns its size, or 0 (nothing meaningful written) if `out` is too small or the arguments are
// out of the protocol's range (packet over 64 KiB, text over kMaxFrameSize). No allocation.
// The *_header variants write only the header and the keys, for scatter-gather sends where the
// packet stays where it is.

constexpr std::size_t frame_size(std::size_t payload_len) { return kFrameHeaderLen + payload_len; }

std::size_t write_frame_header(MutBytes out, FrameType type, std::uint32_t payload_len);

// Server -> client.
std::size_t write_server_key(MutBytes out, const NodePublic& server);
std::size_t write_recv_packet(MutBytes out, const NodePublic& src, Bytes packet);
std::size_t write_recv_packet_header(MutBytes out, const NodePublic& src, std::size_t packet_len);
std::size_t write_keep_alive(MutBytes out);
std::size_t write_peer_gone(MutBytes out, const NodePublic& peer, PeerGoneReason reason);
// The endpoint goes on the wire as 16 bytes (IPv4 mapped to ::ffff:a.b.c.d) + port.
std::size_t write_peer_present(MutBytes out, const NodePublic& peer, const Endpoint& endpoint,
                               std::uint8_t flags);
std::size_t write_health(MutBytes out, std::string_view problem);
std::size_t write_restarting(MutBytes out, std::uint32_t reconnect_in_ms, std::uint32_t try_for_ms);

// Either direction.
std::size_t write_ping(MutBytes out, const PingData& data);
std::size_t write_pong(MutBytes out, const PingData& data);

// Client -> server.
std::size_t write_send_packet(MutBytes out, const NodePublic& dst, Bytes packet);
std::size_t write_send_packet_header(MutBytes out, const NodePublic& dst, std::size_t packet_len);
std::size_t write_note_preferred(MutBytes out, bool preferred);
std::size_t write_watch_conns(MutBytes out);
std::size_t write_close_peer(MutBytes out, const NodePublic& peer);
std::size_t write_forward_packet(MutBytes out, const NodePublic& src, const NodePublic& dst, Bytes packet);
std::size_t write_forward_packet_header(MutBytes out, const NodePublic& src, const NodePublic& dst,
                                        std::size_t packet_len);

// ServerInfo and ClientInfo carry boxes: see handshake.h.

}  // namespace derpd::protocol
