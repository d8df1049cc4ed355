// WebSocketServer: the server side of one WebSocket connection (RFC 6455) that carries DERP, as a
// byte pump with no socket, on libwslay's event API.
//
// After the HTTP 101 (route() in relay/http/site.h, subprotocol "derp"), derper's clients speak
// DERP inside WebSocket BINARY messages: the DERP byte stream is cut into messages anywhere, not
// at DERP frame boundaries, in both directions. Client frames are masked, ours are not; no
// extension is negotiated (no compression, RSV bits must be 0). This object turns WebSocket
// frames into DERP stream bytes and back; the io layer (and TLS below it) moves the bytes:
//
//   network -> feed(bytes, sink)       binary payload bytes reach sink.on_payload(view) in order
//   write(bytes) -> accepted count     DERP stream bytes framed as binary messages into the output
//   pending_output() + consume_output(n), or take_output(buf)  -> network
//   close(code)                        queues our Close; feed() goes on until the peer's Close
//
// After EVERY call (feed/write/close), send what pending_output() holds: pongs and Close replies
// appear there from feed(). Pings are answered by themselves; unsolicited pongs are ignored.
//
// Flow of a server connection (the 101 already sent; bytes after the request head are frames):
//   WebSocketServer ws;                       // per upgraded connection; allocates nothing yet
//   on receive:  auto st = ws.feed(data, sink);   // sink.on_payload(b): DERP bytes, e.g. on_derp(b)
//                send(ws.pending_output()); ws.consume_output(sent);
//                if (!st) -> kPeerClosed: the peer's Close was answered; anything else: the peer
//                broke the protocol and our Close (with the status) is queued. Either way: send
//                the pending output, then close the socket.
//   to send:     n = ws.write(bytes) (an accepted prefix; 0 while max_pending_output bytes wait),
//                then send the output as above.
//   to close:    ws.close(WsCloseCode::kNormal), send, then wait (bounded) for feed() to return
//                kPeerClosed, or close the socket after a timeout.
//   when quiet:  ws.release_memory() frees libwslay's context (about 8.8 KB) if no frame is
//                half-received; it comes back by itself on the next call.
//
// Messages. Incoming: only binary messages (fragmented or not, control frames may interleave).
// A text message is refused with Close 1003 (derper's wsconn does the same: StatusUnsupportedData).
// A message longer than max_message_in is refused with Close 1009 as soon as its frame header
// claims it; nothing is ever allocated from a claimed length (payload is handed to the sink
// straight from libwslay's fixed 4 KiB input buffer). Outgoing: write() cuts its accepted bytes
// into binary messages of at most max_message_out bytes, one unfragmented frame each. Keep that
// at or below 32768: Tailscale's Go client (coder/websocket via net/wsconn) refuses larger
// messages with its default read limit.
//
// Errors (the Close we queue, then kFailed; errors are sticky, every later call returns the same):
//   unmasked client frame, reserved opcode, RSV bits, stray or interrupted continuation,
//   fragmented or > 125-byte control frame, non-minimal or 2^63 length, bad close code or a
//   1-byte Close body -> 1002
//   text message -> 1003; Close reason not UTF-8 -> 1007; message over max_message_in -> 1009;
//   the peer makes us queue control replies (pongs) past the output limit without reading ->
//   kOutputOverflow with no Close (our output is not moving anyway).
//
// Memory: libwslay's context (about 8.8 KB of heap: two 4 KiB frame buffers) is created on the first
// feed/write/close and freed by release_memory() when no frame or fragmented message is half
// received; the output queue is freed (not just emptied) whenever it drains. An idle connection
// after release_memory() costs sizeof(WebSocketServer) and no heap. Each written message costs
// libwslay three transient heap allocations (message copy and queue entries), freed before write()
// returns; receiving binary data allocates nothing (control frames: a few bytes, transient).
//
// Everything here is owned by one thread (the connection's worker). The object must not move
// while in use (libwslay holds a pointer to it): keep it in a unique_ptr or emplace it in place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "relay/base/byte_queue.h"
#include "relay/base/bytes.h"
#include "relay/base/result.h"

struct wslay_event_context;  // libwslay's event context

namespace derpd::http {

enum class WsError : std::uint8_t {
  kPeerClosed,      // the peer's Close arrived and was answered: its stream ended (not a failure)
  kClosed,          // this side called close(): no more writes
  kProtocol,        // broken framing (see the list above); Close 1002 queued
  kTextMessage,     // a text message: DERP rides in binary messages only; Close 1003 queued
  kInvalidUtf8,     // the peer's Close carried a reason that is not UTF-8; Close 1007 queued
  kMessageTooBig,   // a message longer than max_message_in; Close 1009 queued
  kOutputOverflow,  // control replies piled up past max_pending_output + kControlSlack unread
  kInternal,        // out of memory
};
std::string_view to_string(WsError e);

enum class WsState : std::uint8_t {
  kOpen,     // binary messages flow both ways
  kClosing,  // close() queued our Close; payload still arrives until the peer's Close
  kClosed,   // the peer's Close arrived (ours is queued or was sent): flush, then close the socket
  kFailed,   // the peer broke the protocol: error() says how; our Close is in pending_output()
};

// Status codes this side sends in a Close frame (RFC 6455 §7.4.1).
enum class WsCloseCode : std::uint16_t {
  kNormal = 1000,
  kGoingAway = 1001,        // server shutting down
  kProtocolError = 1002,
  kUnsupportedData = 1003,  // e.g. a text message
  kInvalidPayload = 1007,
  kPolicyViolation = 1008,
  kMessageTooBig = 1009,
  kInternalError = 1011,
};

struct WebSocketOptions {
  // Longest incoming message (all its frames together). DERP's largest frame is 1 MiB plus its
  // 5-byte header, and a message may hold the tail of one frame and the head of the next.
  std::size_t max_message_in = (1u << 20) + 16 * 1024;
  // write() frames its bytes as binary messages of at most this many payload bytes.
  std::size_t max_message_out = 16 * 1024;
  // write() accepts nothing more while this many output bytes wait to be sent.
  std::size_t max_pending_output = 64 * 1024;
};

// Receives the payload of binary messages, in order, as it arrives (not aligned to messages or
// DERP frames). `data` aliases libwslay's input buffer: it is valid only during the call. The
// sink may call write() or close() on the WebSocketServer that calls it, but must not destroy it.
class PayloadSink {
 public:
  virtual ~PayloadSink() = default;
  virtual void on_payload(Bytes data) = 0;
};

class WebSocketServer {
 public:
  // Output may exceed max_pending_output by this much with control replies before feed() fails
  // with kOutputOverflow (a pong is never longer than the ping that asked for it).
  static constexpr std::size_t kControlSlack = 64 * 1024;

  // Allocates nothing; libwslay's context is created on first use.
  explicit WebSocketServer(const WebSocketOptions& opts = {});
  WebSocketServer(const WebSocketServer&) = delete;
  WebSocketServer& operator=(const WebSocketServer&) = delete;
  ~WebSocketServer();

  // --- from the network ---------------------------------------------------------------------
  // Parses `data` (bytes received from the peer, after the HTTP head): binary payload goes to
  // `sink` as it arrives, pings and Closes are answered into pending_output(). Takes all of
  // `data` (a partial frame header is kept inside); nothing refers to `data` after the call.
  // ok() while the connection is open or closing. kPeerClosed once the peer's Close is reached
  // (after the payload before it was delivered; later bytes are ignored); a protocol error
  // returns its WsError with our Close queued. After either, every call returns the same.
  Status<WsError> feed(Bytes data, PayloadSink& sink);

  // --- to the peer ---------------------------------------------------------------------------
  // Frames a prefix of `data` as binary messages (max_message_out bytes each) into the output;
  // returns how much was accepted: min(data.size(), room) where room is what is left below
  // max_pending_output (0 when full; the queue may pass the limit by the frame headers, at most
  // 10 bytes per message). kClosed after close(), kPeerClosed after the peer's Close, the error
  // after a failure.
  Result<std::size_t, WsError> write(Bytes data);

  // Bytes waiting to be sent. The view is valid until the next non-const call.
  Bytes pending_output() const { return out_.view(); }
  std::size_t pending_output_bytes() const { return out_.size(); }
  // Drops the first `n` pending bytes (n <= pending_output_bytes()) once they were sent.
  void consume_output(std::size_t n);
  // Copies up to out.size() pending bytes into `out` and consumes them; returns the count.
  std::size_t take_output(MutBytes out);

  // --- closing -------------------------------------------------------------------------------
  // Queues our Close with `code` and `reason` (cut to 123 bytes; keep it ASCII) once; later calls
  // do nothing. Writes fail with kClosed from now on; feed() goes on until the peer's Close. After
  // the peer's Close it does nothing (the reply is already queued). The error after a failure.
  Status<WsError> close(WsCloseCode code = WsCloseCode::kNormal, std::string_view reason = {});

  // --- state ---------------------------------------------------------------------------------
  WsState state() const { return state_; }
  // The failure (meaningful when state() == kFailed).
  WsError error() const { return error_; }
  // The peer's Close arrived.
  bool peer_closed() const { return peer_close_code_ != 0; }
  // Our Close is in the output (or was sent).
  bool close_sent() const { return sent_close_code_ != 0; }
  // Status in the peer's Close: 0 if none arrived yet, 1005 if it carried none.
  std::uint16_t peer_close_code() const { return peer_close_code_; }
  // Status in our Close: 0 if none was queued, 1005 if it carried none.
  std::uint16_t sent_close_code() const { return sent_close_code_; }

  // --- memory --------------------------------------------------------------------------------
  // No partial frame or fragmented message is held, no output waits, and the connection is open.
  bool idle() const;
  // Frees libwslay's context if it holds no partial frame or message and the connection is open
  // (the output queue frees itself when drained). Cheap to call; recreating the context costs a
  // 8.8 KB allocation, so call it when the connection goes quiet rather than after every feed.
  void release_memory();
  // libwslay's context exists right now.
  bool has_context() const { return ctx_ != nullptr; }
  // Heap bytes held by the output queue right now (0 when drained).
  std::size_t output_capacity() const { return out_.capacity(); }

 private:
  bool ensure_context();
  bool flush();  // runs libwslay's sender into out_; false if memory ran out
  void note_close_sent();
  Status<WsError> fail(WsError e);
  // A refusal decided in a callback: queue Close `code`, stop reading; feed() reports `e`.
  void reject(WsError e, WsCloseCode code, std::string_view reason);

  // libwslay callbacks (see websocket.cc) reach the members below.
  friend struct WslayAccess;

  const WebSocketOptions opts_;  // immutable after construction
  wslay_event_context* ctx_ = nullptr;
  ByteQueue out_;  // frames produced, not yet taken by the io layer

  // Input side, valid during feed() only.
  Bytes in_;
  PayloadSink* sink_ = nullptr;

  // Frame accounting (for idle()): bytes handed to libwslay vs. bytes of frames it completed.
  std::uint64_t fed_ = 0;
  std::uint64_t framed_ = 0;
  std::uint64_t frame_len_ = 0;    // header + payload of the frame being received
  std::uint64_t message_len_ = 0;  // payload so far of the binary message being received
  std::uint8_t frame_opcode_ = 0;  // opcode of the frame being received
  bool in_message_ = false;        // a fragmented binary message has not seen its final frame

  WsState state_ = WsState::kOpen;
  WsError error_ = WsError::kInternal;
  bool rejecting_ = false;    // reject() was called during this feed()
  bool send_failed_ = false;  // sending a pong during this feed() ran out of memory
  WsError reject_error_ = WsError::kInternal;
  std::uint16_t peer_close_code_ = 0;
  std::uint16_t sent_close_code_ = 0;
};

}  // namespace derpd::http
