#include "relay/protocol/messages.h"

#include <cstring>

namespace derpd::protocol {
namespace {

NodePublic key_at(Bytes b, std::size_t offset) { return NodePublic::from_raw(b.subspan(offset).first<kKeyLen>()); }

PingData ping_data(Bytes b) {
  PingData d{};
  std::memcpy(d.data(), b.data(), d.size());
  return d;
}

Ignored ignored(const Frame& f, IgnoreReason reason) { return Ignored{f.type, f.length, reason}; }

}  // namespace

Result<ClientMessage, FrameError> parse_client_message(const Frame& frame) {
  if (frame.skipped) return ClientMessage{ignored(frame, IgnoreReason::kUnhandledType)};
  const Bytes p = frame.payload;
  switch (frame.type) {
    case FrameType::kSendPacket:
      if (p.size() < kKeyLen) return Err{FrameError::kTooShort};
      if (p.size() - kKeyLen > kMaxPacketSize) return Err{FrameError::kPacketTooLarge};
      return ClientMessage{SendPacket{key_at(p, 0), p.subspan(kKeyLen)}};
    case FrameType::kForwardPacket:
      if (p.size() < 2 * kKeyLen) return Err{FrameError::kTooShort};
      if (p.size() - 2 * kKeyLen > kMaxPacketSize) return Err{FrameError::kPacketTooLarge};
      return ClientMessage{ForwardPacket{key_at(p, 0), key_at(p, kKeyLen), p.subspan(2 * kKeyLen)}};
    case FrameType::kNotePreferred:
      if (p.size() != 1) return Err{FrameError::kBadLength};
      return ClientMessage{NotePreferred{p[0] != std::byte{0}}};
    case FrameType::kWatchConns:
      if (!p.empty()) return Err{FrameError::kBadLength};
      return ClientMessage{WatchConns{}};
    case FrameType::kClosePeer:
      if (p.size() != kKeyLen) return Err{FrameError::kBadLength};
      return ClientMessage{ClosePeer{key_at(p, 0)}};
    case FrameType::kPing:
      if (p.size() < kPingLen) return Err{FrameError::kTooShort};
      if (p.size() > kMaxPingLen) return Err{FrameError::kTooLong};
      return ClientMessage{Ping{ping_data(p)}};
    default:
      return ClientMessage{ignored(frame, IgnoreReason::kUnhandledType)};
  }
}

Result<ServerMessage, FrameError> parse_server_message(const Frame& frame) {
  if (frame.skipped) return ServerMessage{ignored(frame, IgnoreReason::kUnhandledType)};
  const Bytes p = frame.payload;
  const auto too_short = [&] { return ServerMessage{ignored(frame, IgnoreReason::kTooShort)}; };
  switch (frame.type) {
    case FrameType::kServerInfo:
      if (p.size() < kNonceLen) return Err{FrameError::kTooShort};
      return ServerMessage{ServerInfoFrame{p}};
    case FrameType::kKeepAlive:
      return ServerMessage{KeepAlive{}};
    case FrameType::kRecvPacket:
      if (p.size() < kKeyLen) return too_short();
      return ServerMessage{RecvPacket{key_at(p, 0), p.subspan(kKeyLen)}};
    case FrameType::kPeerGone: {
      if (p.size() < kKeyLen) return too_short();
      PeerGone m{key_at(p, 0), PeerGoneReason::kDisconnected};
      if (p.size() > kKeyLen) m.reason = static_cast<PeerGoneReason>(p[kKeyLen]);
      return ServerMessage{m};
    }
    case FrameType::kPeerPresent: {
      if (p.size() < kKeyLen) return too_short();
      PeerPresent m{key_at(p, 0), std::nullopt, 0};
      Bytes rest = p.subspan(kKeyLen);
      if (rest.size() >= 16 + 2) {
        std::array<std::uint8_t, 16> ip{};
        std::memcpy(ip.data(), rest.data(), ip.size());
        m.endpoint = Endpoint{IpAddr::v6(ip), load_be16(rest.data() + 16)};
        rest = rest.subspan(16 + 2);
        if (!rest.empty()) m.flags = std::to_integer<std::uint8_t>(rest[0]);
      }
      return ServerMessage{m};
    }
    case FrameType::kPing:
      if (p.size() < kPingLen) return too_short();
      return ServerMessage{Ping{ping_data(p)}};
    case FrameType::kPong:
      if (p.size() < kPingLen) return too_short();
      return ServerMessage{Pong{ping_data(p)}};
    case FrameType::kHealth:
      return ServerMessage{Health{as_chars(p)}};
    case FrameType::kRestarting:
      if (p.size() < kRestartingLen) return too_short();
      return ServerMessage{Restarting{load_be32(p.data()), load_be32(p.data() + 4)}};
    default:
      return ServerMessage{ignored(frame, IgnoreReason::kUnhandledType)};
  }
}

}  // namespace derpd::protocol
