#include "relay/http/websocket.h"

#include <wslay/wslay.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace derpd::http {

namespace {

// Largest frame header this side writes: 2 bytes, 8 of extended length (servers do not mask).
constexpr std::size_t kMaxOutHeader = 10;
// Close 1002 (protocol error), for the framing errors libwslay answers with a Close carrying no
// status. Our frames are unmasked, so the frame is these four bytes.
constexpr std::byte kCloseProtocolError[] = {std::byte{0x88}, std::byte{0x02}, std::byte{0x03},
                                             std::byte{0xEA}};
constexpr std::size_t kMaxCloseReason = 123;

// Header length of a frame from the client: masked, with the shortest length encoding (libwslay
// refuses any other), so the payload length fixes it.
std::uint64_t client_header_len(std::uint64_t payload) {
  return 2 + 4 + (payload < 126 ? 0 : payload < 65536 ? 2 : 8);
}

}  // namespace

std::string_view to_string(WsError e) {
  switch (e) {
    case WsError::kPeerClosed: return "peer closed";
    case WsError::kClosed: return "closed";
    case WsError::kProtocol: return "websocket protocol error";
    case WsError::kTextMessage: return "text message";
    case WsError::kInvalidUtf8: return "invalid utf-8";
    case WsError::kMessageTooBig: return "message too big";
    case WsError::kOutputOverflow: return "output overflow";
    case WsError::kInternal: return "internal error";
  }
  return "unknown";
}

// --- libwslay callbacks ------------------------------------------------------------------------

struct WslayAccess {
  static WebSocketServer& self(void* user_data) { return *static_cast<WebSocketServer*>(user_data); }

  // Hands libwslay the bytes given to feed(); "would block" once they are used up.
  static ssize_t recv(wslay_event_context_ptr ctx, std::uint8_t* buf, std::size_t len, int /*flags*/,
                      void* user_data) {
    WebSocketServer& s = self(user_data);
    if (s.in_.empty() || len == 0) {
      wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
      return -1;
    }
    const std::size_t n = std::min(len, s.in_.size());
    std::memcpy(buf, s.in_.data(), n);
    s.in_ = s.in_.subspan(n);
    s.fed_ += n;
    return static_cast<ssize_t>(n);
  }

  // Takes everything libwslay writes (so every frame leaves in one go, never half-sent).
  static ssize_t send(wslay_event_context_ptr ctx, const std::uint8_t* data, std::size_t len, int /*flags*/,
                      void* user_data) {
    WebSocketServer& s = self(user_data);
    if (!s.out_.append(Bytes(reinterpret_cast<const std::byte*>(data), len))) {
      wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
      return -1;
    }
    return static_cast<ssize_t>(len);
  }

  // Called once per frame that passed libwslay's checks (mask, opcode, RSV, per-frame length).
  static void frame_start(wslay_event_context_ptr, const wslay_event_on_frame_recv_start_arg* arg,
                          void* user_data) {
    WebSocketServer& s = self(user_data);
    s.frame_opcode_ = arg->opcode;
    s.frame_len_ = client_header_len(arg->payload_length) + arg->payload_length;
    switch (arg->opcode) {
      case WSLAY_TEXT_FRAME:
        s.reject(WsError::kTextMessage, WsCloseCode::kUnsupportedData, "binary messages only");
        return;
      case WSLAY_BINARY_FRAME:
        s.message_len_ = arg->payload_length;
        s.in_message_ = arg->fin == 0;
        break;
      case WSLAY_CONTINUATION_FRAME:  // libwslay checked that a message is in progress
        s.message_len_ += arg->payload_length;
        s.in_message_ = arg->fin == 0;
        break;
      case WSLAY_CONNECTION_CLOSE:
        // A Close body is empty or starts with a 2-byte status; libwslay reads 1 byte as "none".
        if (arg->payload_length == 1) s.reject(WsError::kProtocol, WsCloseCode::kProtocolError, {});
        return;
      default:  // ping, pong: libwslay answers pings
        return;
    }
    if (s.message_len_ > s.opts_.max_message_in) {
      s.reject(WsError::kMessageTooBig, WsCloseCode::kMessageTooBig, {});
    }
  }

  static void frame_chunk(wslay_event_context_ptr, const wslay_event_on_frame_recv_chunk_arg* arg,
                          void* user_data) {
    WebSocketServer& s = self(user_data);
    if (s.rejecting_ || arg->data_length == 0 || s.sink_ == nullptr) return;
    if (s.frame_opcode_ != WSLAY_BINARY_FRAME && s.frame_opcode_ != WSLAY_CONTINUATION_FRAME) return;
    s.sink_->on_payload(Bytes(reinterpret_cast<const std::byte*>(arg->data), arg->data_length));
  }

  // Called after each whole message; libwslay has just queued the pong for a ping. Send it now,
  // so a Close later in the same input does not make libwslay drop it (and the output does not
  // depend on how the input was split).
  static void message(wslay_event_context_ptr ctx, const wslay_event_on_msg_recv_arg* arg, void* user_data) {
    if (arg->opcode != WSLAY_PING) return;
    WebSocketServer& s = self(user_data);
    if (wslay_event_send(ctx) != 0) s.send_failed_ = true;
  }

  static void frame_end(wslay_event_context_ptr, void* user_data) {
    WebSocketServer& s = self(user_data);
    s.framed_ += s.frame_len_;
    s.frame_len_ = 0;
  }
};

// --- WebSocketServer ---------------------------------------------------------------------------

WebSocketServer::WebSocketServer(const WebSocketOptions& opts) : opts_(opts) {}

WebSocketServer::~WebSocketServer() {
  if (ctx_ != nullptr) wslay_event_context_free(ctx_);
}

bool WebSocketServer::ensure_context() {
  if (ctx_ != nullptr) return true;
  wslay_event_callbacks cbs{};
  cbs.recv_callback = &WslayAccess::recv;
  cbs.send_callback = &WslayAccess::send;
  cbs.on_frame_recv_start_callback = &WslayAccess::frame_start;
  cbs.on_frame_recv_chunk_callback = &WslayAccess::frame_chunk;
  cbs.on_frame_recv_end_callback = &WslayAccess::frame_end;
  // libwslay answers pings and Closes by itself; data messages are streamed chunk by chunk (no
  // buffering), so the per-message callback only flushes pongs.
  cbs.on_msg_recv_callback = &WslayAccess::message;
  if (wslay_event_context_server_init(&ctx_, &cbs, this) != 0) {
    ctx_ = nullptr;
    return false;
  }
  wslay_event_config_set_no_buffering(ctx_, 1);
  // Without buffering libwslay checks this per frame; frame_start() checks whole messages.
  wslay_event_config_set_max_recv_msg_length(ctx_, opts_.max_message_in);
  return true;
}

bool WebSocketServer::flush() {
  const int rv = wslay_event_send(ctx_);
  note_close_sent();
  return rv == 0;
}

void WebSocketServer::note_close_sent() {
  if (sent_close_code_ == 0 && wslay_event_get_close_sent(ctx_)) {
    sent_close_code_ = wslay_event_get_status_code_sent(ctx_);
  }
}

Status<WsError> WebSocketServer::fail(WsError e) {
  state_ = WsState::kFailed;
  error_ = e;
  return Err{e};
}

void WebSocketServer::reject(WsError e, WsCloseCode code, std::string_view reason) {
  if (rejecting_) return;
  rejecting_ = true;
  reject_error_ = e;
  // NO_MORE_MSG when our Close is already out (closing): then there is nothing more to say.
  (void)wslay_event_queue_close(ctx_, static_cast<std::uint16_t>(code),
                                reinterpret_cast<const std::uint8_t*>(reason.data()), reason.size());
  wslay_event_shutdown_read(ctx_);
}

Status<WsError> WebSocketServer::feed(Bytes data, PayloadSink& sink) {
  if (state_ == WsState::kFailed) return Err{error_};
  if (peer_closed()) return Err{WsError::kPeerClosed};
  if (data.empty()) return {};
  if (!ensure_context()) return fail(WsError::kInternal);

  const bool close_was_sent = close_sent();
  in_ = data;
  sink_ = &sink;
  rejecting_ = false;
  send_failed_ = false;
  const int rv = wslay_event_recv(ctx_);
  in_ = {};
  sink_ = nullptr;

  if (rv == WSLAY_ERR_CALLBACK_FAILURE) {
    // Our recv callback only ever says "would block", so this is libwslay's frame parser refusing
    // a header (oversized or fragmented control frame, bad length encoding). It queued a Close
    // without a status; send 1002 instead.
    wslay_event_shutdown_write(ctx_);
    if (!close_sent()) {
      if (!out_.append(Bytes(kCloseProtocolError))) return fail(WsError::kInternal);
      sent_close_code_ = static_cast<std::uint16_t>(WsCloseCode::kProtocolError);
    }
    return fail(WsError::kProtocol);
  }
  if (rv != 0 || send_failed_) return fail(WsError::kInternal);  // WSLAY_ERR_NOMEM
  if (!flush()) return fail(WsError::kInternal);

  if (rejecting_) return fail(reject_error_);
  if (wslay_event_get_close_received(ctx_)) {
    peer_close_code_ = wslay_event_get_status_code_received(ctx_);
    state_ = WsState::kClosed;
    error_ = WsError::kPeerClosed;
    return Err{WsError::kPeerClosed};
  }
  if (!wslay_event_get_read_enabled(ctx_)) {
    // libwslay refused a frame itself and queued a Close whose status names the reason.
    WsError e = WsError::kProtocol;
    if (!close_was_sent && close_sent()) {
      if (sent_close_code_ == static_cast<std::uint16_t>(WsCloseCode::kMessageTooBig)) e = WsError::kMessageTooBig;
      if (sent_close_code_ == static_cast<std::uint16_t>(WsCloseCode::kInvalidPayload)) e = WsError::kInvalidUtf8;
    }
    return fail(e);
  }
  if (out_.size() > opts_.max_pending_output + kControlSlack) return fail(WsError::kOutputOverflow);
  return {};
}

Result<std::size_t, WsError> WebSocketServer::write(Bytes data) {
  if (state_ == WsState::kFailed) return Err{error_};
  if (peer_closed()) return Err{WsError::kPeerClosed};
  if (close_sent()) return Err{WsError::kClosed};
  if (data.empty() || out_.size() >= opts_.max_pending_output) return std::size_t{0};
  if (!ensure_context()) return Err{fail(WsError::kInternal).error()};

  const std::size_t n = std::min(data.size(), opts_.max_pending_output - out_.size());
  const std::size_t per_message = std::max<std::size_t>(1, opts_.max_message_out);
  const std::size_t messages = (n + per_message - 1) / per_message;
  if (!out_.reserve(out_.size() + n + messages * kMaxOutHeader)) return Err{fail(WsError::kInternal).error()};
  for (std::size_t off = 0; off < n;) {
    const std::size_t m = std::min(per_message, n - off);
    wslay_event_msg msg{};
    msg.opcode = WSLAY_BINARY_FRAME;
    msg.msg = reinterpret_cast<const std::uint8_t*>(data.data() + off);
    msg.msg_length = m;
    const int rv = wslay_event_queue_msg(ctx_, &msg);
    if (rv == WSLAY_ERR_NO_MORE_MSG) {
      // A Close went out during this feed() (the sink writes before feed() reports it).
      if (off > 0) return off;
      return Err{wslay_event_get_close_received(ctx_) ? WsError::kPeerClosed : WsError::kClosed};
    }
    if (rv != 0 || !flush()) return Err{fail(WsError::kInternal).error()};
    off += m;
  }
  return n;
}

void WebSocketServer::consume_output(std::size_t n) { out_.consume(n); }

std::size_t WebSocketServer::take_output(MutBytes out) { return out_.read(out); }

Status<WsError> WebSocketServer::close(WsCloseCode code, std::string_view reason) {
  if (state_ == WsState::kFailed) return Err{error_};
  if (peer_closed() || close_sent()) return {};
  if (!ensure_context()) return fail(WsError::kInternal);
  reason = reason.substr(0, kMaxCloseReason);
  const int rv = wslay_event_queue_close(ctx_, static_cast<std::uint16_t>(code),
                                         reinterpret_cast<const std::uint8_t*>(reason.data()), reason.size());
  if (rv == WSLAY_ERR_NO_MORE_MSG) return {};  // a Close is already on its way (during feed())
  if (rv != 0 || !flush()) return fail(WsError::kInternal);
  if (state_ == WsState::kOpen) state_ = WsState::kClosing;
  return {};
}

bool WebSocketServer::idle() const {
  return state_ == WsState::kOpen && !in_message_ && fed_ == framed_ && out_.size() == 0;
}

void WebSocketServer::release_memory() {
  if (ctx_ == nullptr || sink_ != nullptr) return;  // nothing to free, or inside feed()
  if (state_ != WsState::kOpen || in_message_ || fed_ != framed_) return;
  if (wslay_event_get_queued_msg_count(ctx_) != 0) return;  // never: every write flushes
  // A context at a frame boundary with nothing queued is the same as a fresh one.
  wslay_event_context_free(ctx_);
  ctx_ = nullptr;
}

}  // namespace derpd::http
