#include "relay/protocol/frame.h"

#include <algorithm>
#include <cstring>

namespace derpd::protocol {
namespace {

constexpr std::size_t idx(FrameType t) { return static_cast<std::uint8_t>(t); }

constexpr FrameLimits all(FrameAction action, std::uint32_t max_len) {
  FrameLimits l;
  l.action.fill(action);
  l.max_len.fill(max_len);
  return l;
}

constexpr void set(FrameLimits& l, FrameType t, FrameAction action, std::uint32_t max_len) {
  l.action[idx(t)] = action;
  l.max_len[idx(t)] = max_len;
}

constexpr FrameLimits make_server_handshake() {
  FrameLimits l = all(FrameAction::kReject, 0);
  set(l, FrameType::kClientInfo, FrameAction::kDeliver, kMaxClientInfoLen);
  return l;
}

constexpr FrameLimits make_server() {
  FrameLimits l = all(FrameAction::kSkip, kMaxFrameSize);
  set(l, FrameType::kSendPacket, FrameAction::kDeliver, kKeyLen + kMaxPacketSize);
  set(l, FrameType::kForwardPacket, FrameAction::kDeliver, 2 * kKeyLen + kMaxPacketSize);
  set(l, FrameType::kNotePreferred, FrameAction::kDeliver, 1);
  set(l, FrameType::kWatchConns, FrameAction::kDeliver, 0);
  set(l, FrameType::kClosePeer, FrameAction::kDeliver, kKeyLen);
  set(l, FrameType::kPing, FrameAction::kDeliver, kMaxPingLen);
  return l;
}

constexpr FrameLimits make_client_handshake() {
  FrameLimits l = all(FrameAction::kReject, 0);
  set(l, FrameType::kServerKey, FrameAction::kDeliver, kMaxServerKeyLen);
  return l;
}

constexpr FrameLimits make_client() {
  FrameLimits l = all(FrameAction::kSkip, kMaxFrameSize);
  for (FrameType t : {FrameType::kServerInfo, FrameType::kRecvPacket, FrameType::kKeepAlive, FrameType::kPeerGone,
                      FrameType::kPeerPresent, FrameType::kPing, FrameType::kPong, FrameType::kHealth,
                      FrameType::kRestarting}) {
    set(l, t, FrameAction::kDeliver, kMaxFrameSize);
  }
  return l;
}

constexpr FrameLimits kServerHandshakeLimits = make_server_handshake();
constexpr FrameLimits kServerLimits = make_server();
constexpr FrameLimits kClientHandshakeLimits = make_client_handshake();
constexpr FrameLimits kClientLimits = make_client();

// Writes the header at out[0..5); the caller checked the size.
std::byte* put_header(MutBytes out, FrameType type, std::size_t payload_len) {
  out[0] = static_cast<std::byte>(type);
  store_be32(out.data() + 1, static_cast<std::uint32_t>(payload_len));
  return out.data() + kFrameHeaderLen;
}

std::byte* put_key(std::byte* p, const NodePublic& k) {
  std::memcpy(p, k.data(), kKeyLen);
  return p + kKeyLen;
}

std::size_t write_fixed(MutBytes out, FrameType type, Bytes payload) {
  const std::size_t n = frame_size(payload.size());
  if (out.size() < n) return 0;
  std::byte* p = put_header(out, type, payload.size());
  if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
  return n;
}

}  // namespace

std::string_view to_string(FrameType t) {
  switch (t) {
    case FrameType::kServerKey: return "server_key";
    case FrameType::kClientInfo: return "client_info";
    case FrameType::kServerInfo: return "server_info";
    case FrameType::kSendPacket: return "send_packet";
    case FrameType::kRecvPacket: return "recv_packet";
    case FrameType::kKeepAlive: return "keep_alive";
    case FrameType::kNotePreferred: return "note_preferred";
    case FrameType::kPeerGone: return "peer_gone";
    case FrameType::kPeerPresent: return "peer_present";
    case FrameType::kForwardPacket: return "forward_packet";
    case FrameType::kWatchConns: return "watch_conns";
    case FrameType::kClosePeer: return "close_peer";
    case FrameType::kPing: return "ping";
    case FrameType::kPong: return "pong";
    case FrameType::kHealth: return "health";
    case FrameType::kRestarting: return "restarting";
  }
  return "unknown";
}

bool is_known(FrameType t) { return to_string(t) != "unknown"; }

bool requires_mesh(FrameType t) {
  return t == FrameType::kWatchConns || t == FrameType::kClosePeer || t == FrameType::kForwardPacket;
}

std::string_view to_string(FrameError e) {
  switch (e) {
    case FrameError::kFrameTooLarge: return "frame_too_large";
    case FrameError::kUnexpectedFrame: return "unexpected_frame";
    case FrameError::kTooShort: return "too_short";
    case FrameError::kTooLong: return "too_long";
    case FrameError::kBadLength: return "bad_length";
    case FrameError::kPacketTooLarge: return "packet_too_large";
    case FrameError::kCount: break;
  }
  return "unknown";
}

const FrameLimits& server_handshake_limits() { return kServerHandshakeLimits; }
const FrameLimits& server_limits() { return kServerLimits; }
const FrameLimits& client_handshake_limits() { return kClientHandshakeLimits; }
const FrameLimits& client_limits() { return kClientLimits; }

// --- FrameReader --------------------------------------------------------------------------------

FrameReader::Status FrameReader::fail(FrameError e) {
  state_ = State::kError;
  error_ = e;
  return Status::kError;
}

void FrameReader::spill(Bytes b) {
  const std::size_t need = spill_.size() + b.size();  // <= length_ by construction
  if (need > spill_.capacity()) {
    // Grow geometrically with what arrived, never past this frame's (validated) length.
    spill_.reserve(std::min<std::size_t>(std::max<std::size_t>(need, 2 * spill_.capacity()), length_));
  }
  spill_.insert(spill_.end(), b.begin(), b.end());
}

void FrameReader::release_memory() {
  if (state_ == State::kPayload) return;
  std::vector<std::byte>().swap(spill_);
}

FrameReader::Status FrameReader::next(Bytes& in, Frame& out) {
  for (;;) {
    switch (state_) {
      case State::kError:
        return Status::kError;

      case State::kSkip: {
        if (remaining_ == 0) {
          state_ = State::kHeader;
          continue;
        }
        if (in.empty()) return Status::kNeedMore;
        const std::size_t n = std::min<std::size_t>(remaining_, in.size());
        in = in.subspan(n);
        remaining_ -= static_cast<std::uint32_t>(n);
        continue;
      }

      case State::kPayload: {
        if (in.empty()) return Status::kNeedMore;
        const std::size_t n = std::min<std::size_t>(remaining_, in.size());
        spill(in.first(n));
        in = in.subspan(n);
        remaining_ -= static_cast<std::uint32_t>(n);
        if (remaining_ != 0) return Status::kNeedMore;  // `in` is exhausted
        state_ = State::kHeader;
        out = Frame{type_, length_, Bytes(spill_.data(), spill_.size()), false};
        return Status::kFrame;
      }

      case State::kHeader: {
        const std::byte* h = nullptr;
        if (header_have_ == 0 && in.size() >= kFrameHeaderLen) {
          h = in.data();
          in = in.subspan(kFrameHeaderLen);
        } else {
          if (in.empty()) return Status::kNeedMore;
          const std::size_t n = std::min<std::size_t>(kFrameHeaderLen - header_have_, in.size());
          std::memcpy(header_.data() + header_have_, in.data(), n);
          header_have_ = static_cast<std::uint8_t>(header_have_ + n);
          in = in.subspan(n);
          if (header_have_ < kFrameHeaderLen) return Status::kNeedMore;
          header_have_ = 0;
          h = header_.data();
        }
        type_ = static_cast<FrameType>(h[0]);
        length_ = load_be32(h + 1);
        const std::size_t t = idx(type_);
        const FrameAction action = limits_->action[t];
        if (action == FrameAction::kReject) return fail(FrameError::kUnexpectedFrame);
        if (length_ > limits_->max_len[t]) return fail(FrameError::kFrameTooLarge);
        if (action == FrameAction::kSkip) {
          remaining_ = length_;
          state_ = State::kSkip;
          out = Frame{type_, length_, Bytes{}, true};
          return Status::kFrame;
        }
        if (in.size() >= length_) {  // wholly inside this chunk: a view, no copy
          out = Frame{type_, length_, in.first(length_), false};
          in = in.subspan(length_);
          return Status::kFrame;
        }
        spill_.clear();
        spill(in);
        remaining_ = length_ - static_cast<std::uint32_t>(in.size());
        in = in.subspan(in.size());
        state_ = State::kPayload;
        return Status::kNeedMore;
      }
    }
  }
}

// --- writers ------------------------------------------------------------------------------------

std::size_t write_frame_header(MutBytes out, FrameType type, std::uint32_t payload_len) {
  if (out.size() < kFrameHeaderLen) return 0;
  put_header(out, type, payload_len);
  return kFrameHeaderLen;
}

std::size_t write_server_key(MutBytes out, const NodePublic& server) {
  const std::size_t n = frame_size(kServerKeyLen);
  if (out.size() < n) return 0;
  std::byte* p = put_header(out, FrameType::kServerKey, kServerKeyLen);
  std::memcpy(p, kMagic.data(), kMagic.size());
  put_key(p + kMagic.size(), server);
  return n;
}

std::size_t write_recv_packet_header(MutBytes out, const NodePublic& src, std::size_t packet_len) {
  if (packet_len > kMaxPacketSize || out.size() < frame_size(kKeyLen)) return 0;
  put_key(put_header(out, FrameType::kRecvPacket, kKeyLen + packet_len), src);
  return frame_size(kKeyLen);
}

std::size_t write_recv_packet(MutBytes out, const NodePublic& src, Bytes packet) {
  const std::size_t n = frame_size(kKeyLen + packet.size());
  if (out.size() < n || write_recv_packet_header(out, src, packet.size()) == 0) return 0;
  if (!packet.empty()) std::memcpy(out.data() + frame_size(kKeyLen), packet.data(), packet.size());
  return n;
}

std::size_t write_keep_alive(MutBytes out) { return write_fixed(out, FrameType::kKeepAlive, {}); }

std::size_t write_peer_gone(MutBytes out, const NodePublic& peer, PeerGoneReason reason) {
  const std::size_t n = frame_size(kPeerGoneLen);
  if (out.size() < n) return 0;
  std::byte* p = put_key(put_header(out, FrameType::kPeerGone, kPeerGoneLen), peer);
  *p = static_cast<std::byte>(reason);
  return n;
}

std::size_t write_peer_present(MutBytes out, const NodePublic& peer, const Endpoint& endpoint, std::uint8_t flags) {
  const std::size_t n = frame_size(kPeerPresentLen);
  if (out.size() < n) return 0;
  std::byte* p = put_key(put_header(out, FrameType::kPeerPresent, kPeerPresentLen), peer);
  const std::array<std::uint8_t, 16> ip = endpoint.addr.as16();
  std::memcpy(p, ip.data(), ip.size());
  store_be16(p + 16, endpoint.port);
  p[18] = static_cast<std::byte>(flags);
  return n;
}

std::size_t write_health(MutBytes out, std::string_view problem) {
  if (problem.size() > kMaxFrameSize) return 0;
  return write_fixed(out, FrameType::kHealth, as_bytes(problem));
}

std::size_t write_restarting(MutBytes out, std::uint32_t reconnect_in_ms, std::uint32_t try_for_ms) {
  std::array<std::byte, kRestartingLen> payload{};
  store_be32(payload.data(), reconnect_in_ms);
  store_be32(payload.data() + 4, try_for_ms);
  return write_fixed(out, FrameType::kRestarting, payload);
}

std::size_t write_ping(MutBytes out, const PingData& data) { return write_fixed(out, FrameType::kPing, data); }
std::size_t write_pong(MutBytes out, const PingData& data) { return write_fixed(out, FrameType::kPong, data); }

std::size_t write_send_packet_header(MutBytes out, const NodePublic& dst, std::size_t packet_len) {
  if (packet_len > kMaxPacketSize || out.size() < frame_size(kKeyLen)) return 0;
  put_key(put_header(out, FrameType::kSendPacket, kKeyLen + packet_len), dst);
  return frame_size(kKeyLen);
}

std::size_t write_send_packet(MutBytes out, const NodePublic& dst, Bytes packet) {
  const std::size_t n = frame_size(kKeyLen + packet.size());
  if (out.size() < n || write_send_packet_header(out, dst, packet.size()) == 0) return 0;
  if (!packet.empty()) std::memcpy(out.data() + frame_size(kKeyLen), packet.data(), packet.size());
  return n;
}

std::size_t write_note_preferred(MutBytes out, bool preferred) {
  const std::array<std::byte, 1> payload{preferred ? std::byte{1} : std::byte{0}};
  return write_fixed(out, FrameType::kNotePreferred, payload);
}

std::size_t write_watch_conns(MutBytes out) { return write_fixed(out, FrameType::kWatchConns, {}); }

std::size_t write_close_peer(MutBytes out, const NodePublic& peer) {
  return write_fixed(out, FrameType::kClosePeer, peer.bytes());
}

std::size_t write_forward_packet_header(MutBytes out, const NodePublic& src, const NodePublic& dst,
                                        std::size_t packet_len) {
  if (packet_len > kMaxPacketSize || out.size() < frame_size(2 * kKeyLen)) return 0;
  put_key(put_key(put_header(out, FrameType::kForwardPacket, 2 * kKeyLen + packet_len), src), dst);
  return frame_size(2 * kKeyLen);
}

std::size_t write_forward_packet(MutBytes out, const NodePublic& src, const NodePublic& dst, Bytes packet) {
  const std::size_t n = frame_size(2 * kKeyLen + packet.size());
  if (out.size() < n || write_forward_packet_header(out, src, dst, packet.size()) == 0) return 0;
  if (!packet.empty()) std::memcpy(out.data() + frame_size(2 * kKeyLen), packet.data(), packet.size());
  return n;
}

}  // namespace derpd::protocol
