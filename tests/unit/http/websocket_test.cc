// WebSocketServer against a WebSocket client built on libwslay in client mode (masked frames,
// its own frame checks on what the server sends) and against hand-built frames (RFC 6455 §5.7
// examples, malformed headers, hostile lengths).
#include "relay/http/websocket.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <wslay/wslay.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace derpd::http {
namespace {

using ::testing::ElementsAre;

// --- helpers -----------------------------------------------------------------------------------

std::string str(Bytes b) { return std::string(as_chars(b)); }

// Collects what the server hands to its sink.
struct Collect : PayloadSink {
  std::string got;
  std::size_t calls = 0;
  void on_payload(Bytes b) override {
    got.append(as_chars(b));
    ++calls;
  }
};

Status<WsError> feed(WebSocketServer& s, std::string_view bytes, PayloadSink& sink) {
  return s.feed(as_bytes(bytes), sink);
}

// Takes all pending output.
std::string drain(WebSocketServer& s) {
  std::string out = str(s.pending_output());
  s.consume_output(out.size());
  return out;
}

std::string pattern(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A client frame built by hand: `first` is FIN|RSV|opcode, payload masked with `key` unless
// `masked` is false. `len_form` forces the length encoding: 0 = shortest, 126 or 127.
std::string frame(std::uint8_t first, std::string_view payload, bool masked = true, int len_form = 0,
                  std::array<std::uint8_t, 4> key = {0x37, 0xfa, 0x21, 0x3d}) {
  std::string f;
  f.push_back(static_cast<char>(first));
  const std::uint8_t m = masked ? 0x80 : 0;
  const std::uint64_t n = payload.size();
  if (len_form == 0) len_form = n < 126 ? 0 : n < 65536 ? 126 : 127;
  if (len_form == 0) {
    f.push_back(static_cast<char>(m | n));
  } else if (len_form == 126) {
    f.push_back(static_cast<char>(m | 126));
    f.push_back(static_cast<char>(n >> 8));
    f.push_back(static_cast<char>(n));
  } else {
    f.push_back(static_cast<char>(m | 127));
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>(n >> (8 * i)));
  }
  if (masked) f.append(reinterpret_cast<const char*>(key.data()), 4);
  for (std::size_t i = 0; i < payload.size(); ++i) {
    f.push_back(static_cast<char>(payload[i] ^ (masked ? static_cast<char>(key[i % 4]) : 0)));
  }
  return f;
}

// A masked header claiming `claimed` payload bytes with a 64-bit length, and no payload.
std::string claim_header(std::uint8_t first, std::uint64_t claimed) {
  std::string f;
  f.push_back(static_cast<char>(first));
  f.push_back(static_cast<char>(0x80 | 127));
  for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>(claimed >> (8 * i)));
  f.append("\x01\x02\x03\x04", 4);
  return f;
}

constexpr std::uint8_t kFin = 0x80;
constexpr std::uint8_t kBinary = 0x2;
constexpr std::uint8_t kText = 0x1;
constexpr std::uint8_t kCont = 0x0;
constexpr std::uint8_t kClose = 0x8;
constexpr std::uint8_t kPing = 0x9;
constexpr std::uint8_t kPong = 0xA;

std::string close_payload(std::uint16_t code, std::string_view reason = {}) {
  std::string p;
  p.push_back(static_cast<char>(code >> 8));
  p.push_back(static_cast<char>(code));
  p.append(reason);
  return p;
}

// An unmasked server frame as the server must write it.
std::string server_frame(std::uint8_t first, std::string_view payload) { return frame(first, payload, false); }

// A WebSocket client on libwslay (client mode): masks what it sends, checks what it receives
// (a masked or malformed server frame fails it).
class WsClient {
 public:
  struct Message {
    std::uint8_t opcode;
    std::string data;
    std::uint16_t status;  // Close only
  };

  WsClient() {
    wslay_event_callbacks cbs{};
    cbs.recv_callback = &WsClient::recv_cb;
    cbs.send_callback = &WsClient::send_cb;
    cbs.genmask_callback = &WsClient::genmask_cb;
    cbs.on_msg_recv_callback = &WsClient::msg_cb;
    EXPECT_EQ(wslay_event_context_client_init(&ctx_, &cbs, this), 0);
    wslay_event_config_set_max_recv_msg_length(ctx_, 16 << 20);
  }
  ~WsClient() { wslay_event_context_free(ctx_); }
  WsClient(const WsClient&) = delete;
  WsClient& operator=(const WsClient&) = delete;

  // Queues one message and returns the wire bytes libwslay produced for it.
  std::string send(std::uint8_t opcode, std::string_view payload) {
    wslay_event_msg m{opcode, reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()};
    EXPECT_EQ(wslay_event_queue_msg(ctx_, &m), 0);
    return run_send();
  }
  std::string close(std::uint16_t code, std::string_view reason = {}) {
    EXPECT_EQ(wslay_event_queue_close(ctx_, code, reinterpret_cast<const std::uint8_t*>(reason.data()), reason.size()),
              0);
    return run_send();
  }
  // Parses what the server sent; returns false if libwslay found it malformed.
  bool receive(std::string_view bytes) {
    in_.append(bytes);
    const int rv = wslay_event_recv(ctx_);
    return rv == 0 && !(wslay_event_get_read_enabled(ctx_) == 0 && !wslay_event_get_close_received(ctx_));
  }
  // Replies libwslay queued by itself (pong, Close echo).
  std::string replies() { return run_send(); }

  std::vector<Message> messages;
  std::string binary_stream() const {
    std::string s;
    for (const auto& m : messages)
      if (m.opcode == kBinary) s += m.data;
    return s;
  }

 private:
  std::string run_send() {
    out_.clear();
    EXPECT_EQ(wslay_event_send(ctx_), 0);
    return out_;
  }
  static ssize_t recv_cb(wslay_event_context_ptr ctx, std::uint8_t* buf, std::size_t len, int, void* ud) {
    auto* c = static_cast<WsClient*>(ud);
    if (c->in_.empty()) {
      wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
      return -1;
    }
    const std::size_t n = std::min(len, c->in_.size());
    std::memcpy(buf, c->in_.data(), n);
    c->in_.erase(0, n);
    return static_cast<ssize_t>(n);
  }
  static ssize_t send_cb(wslay_event_context_ptr, const std::uint8_t* data, std::size_t len, int, void* ud) {
    static_cast<WsClient*>(ud)->out_.append(reinterpret_cast<const char*>(data), len);
    return static_cast<ssize_t>(len);
  }
  static int genmask_cb(wslay_event_context_ptr, std::uint8_t* buf, std::size_t len, void* ud) {
    auto* c = static_cast<WsClient*>(ud);
    for (std::size_t i = 0; i < len; ++i) buf[i] = static_cast<std::uint8_t>(c->rng_());
    return 0;
  }
  static void msg_cb(wslay_event_context_ptr, const wslay_event_on_msg_recv_arg* arg, void* ud) {
    static_cast<WsClient*>(ud)->messages.push_back(
        {arg->opcode, std::string(reinterpret_cast<const char*>(arg->msg), arg->msg_length), arg->status_code});
  }

  wslay_event_context_ptr ctx_ = nullptr;
  std::string in_;
  std::string out_;
  std::mt19937 rng_{7};
};

// --- RFC 6455 §5.7 examples --------------------------------------------------------------------

TEST(WebSocket, Rfc6455MaskedHelloReachesTheSink) {
  // §5.7 "A single-frame masked text message" with the opcode changed to binary.
  const std::string f("\x82\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11);
  WebSocketServer s;
  Collect sink;
  ASSERT_TRUE(feed(s, f, sink).ok());
  EXPECT_EQ(sink.got, "Hello");
  EXPECT_EQ(s.pending_output_bytes(), 0u);
  EXPECT_EQ(s.state(), WsState::kOpen);
}

TEST(WebSocket, Rfc6455ServerFramesAreUnmaskedWithShortestLength) {
  WebSocketServer s(WebSocketOptions{.max_message_in = 1 << 20, .max_message_out = 1 << 17,
                                     .max_pending_output = 1 << 18});
  auto w = s.write(as_bytes("Hello"));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, 5u);
  EXPECT_EQ(drain(s), std::string("\x82\x05Hello", 7));

  // §5.7: 256 bytes binary -> 0x82 0x7E 0x0100; 64 KiB -> 0x82 0x7F 0x0000000000010000.
  const std::string p256 = pattern(256, 1);
  ASSERT_EQ(*s.write(as_bytes(p256)), 256u);
  EXPECT_EQ(drain(s), std::string("\x82\x7e\x01\x00", 4) + p256);
  const std::string p64k = pattern(65536, 2);
  ASSERT_EQ(*s.write(as_bytes(p64k)), 65536u);
  EXPECT_EQ(drain(s), std::string("\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10) + p64k);
}

TEST(WebSocket, Rfc6455PingGetsPongWithTheSamePayload) {
  WebSocketServer s;
  Collect sink;
  // §5.7 "Unmasked Ping request ... containing Hello", masked as a client must.
  ASSERT_TRUE(feed(s, frame(kFin | kPing, "Hello"), sink).ok());
  EXPECT_EQ(drain(s), std::string("\x8a\x05Hello", 7));  // §5.7 pong, unmasked
  EXPECT_EQ(sink.got, "");
  // An unsolicited pong is ignored.
  ASSERT_TRUE(feed(s, frame(kFin | kPong, "x"), sink).ok());
  EXPECT_EQ(s.pending_output_bytes(), 0u);
  EXPECT_EQ(s.state(), WsState::kOpen);
}

// --- data both ways ----------------------------------------------------------------------------

TEST(WebSocket, BinaryBothWaysWithAWslayClient) {
  WebSocketServer s;
  WsClient c;
  Collect sink;
  std::string sent;
  for (unsigned i = 0; i < 20; ++i) {
    const std::string p = pattern(1 + i * 97, i);
    sent += p;
    ASSERT_TRUE(feed(s, c.send(kBinary, p), sink).ok());
  }
  EXPECT_EQ(sink.got, sent);

  std::string back;
  for (unsigned i = 0; i < 20; ++i) {
    const std::string p = pattern(3 + i * 211, 100 + i);
    back += p;
    auto w = s.write(as_bytes(p));
    ASSERT_TRUE(w.ok());
    ASSERT_EQ(*w, p.size());
    ASSERT_TRUE(c.receive(drain(s)));
  }
  EXPECT_EQ(c.binary_stream(), back);
  ASSERT_EQ(c.messages.size(), 20u);  // one message per write() below max_message_out
  for (const auto& m : c.messages) EXPECT_EQ(m.opcode, kBinary);
}

TEST(WebSocket, FragmentedMessageWithInterleavedPing) {
  WebSocketServer s;
  Collect sink;
  std::string wire = frame(kBinary, "abc") + frame(kCont, "") + frame(kFin | kPing, "p1") + frame(kCont, "defg") +
                     frame(kFin | kCont, "hij");
  ASSERT_TRUE(feed(s, wire, sink).ok());
  EXPECT_EQ(sink.got, "abcdefghij");
  EXPECT_EQ(drain(s), server_frame(kFin | kPong, "p1"));
  // The next message starts cleanly.
  ASSERT_TRUE(feed(s, frame(kFin | kBinary, "k"), sink).ok());
  EXPECT_EQ(sink.got, "abcdefghijk");
}

TEST(WebSocket, ManySmallFramesInOneFeed) {
  WebSocketServer s;
  Collect sink;
  std::string wire, expect;
  for (int i = 0; i <= 5000; ++i) {  // ends with a final continuation
    const char ch = static_cast<char>('a' + i % 26);
    expect.push_back(ch);
    // Alternate one-frame messages and fragments of long messages.
    if (i % 3 == 0) {
      wire += frame(kFin | kBinary, std::string(1, ch));
    } else if (i % 3 == 1) {
      wire += frame(kBinary, std::string(1, ch));
    } else {
      wire += frame(kFin | kCont, std::string(1, ch));
    }
  }
  ASSERT_TRUE(feed(s, wire, sink).ok());
  EXPECT_EQ(sink.got, expect);
  EXPECT_TRUE(s.idle());
}

TEST(WebSocket, SixtyFourKiBMessageBothWays) {
  WebSocketServer s;
  WsClient c;
  Collect sink;
  const std::string big = pattern(64 * 1024, 9);
  ASSERT_TRUE(feed(s, c.send(kBinary, big), sink).ok());
  EXPECT_EQ(sink.got, big);

  // The server splits into max_message_out (16 KiB) messages, below the Go client's 32 KiB limit.
  auto w = s.write(as_bytes(big));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, big.size());
  ASSERT_TRUE(c.receive(drain(s)));
  EXPECT_EQ(c.binary_stream(), big);
  ASSERT_EQ(c.messages.size(), 4u);
  for (const auto& m : c.messages) EXPECT_EQ(m.data.size(), 16u * 1024);
}

TEST(WebSocket, WriteIsBoundedByPendingOutput) {
  WebSocketServer s(WebSocketOptions{.max_message_in = 1 << 20, .max_message_out = 1000, .max_pending_output = 4000});
  const std::string p = pattern(10000, 3);
  auto w = s.write(as_bytes(p));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, 4000u);  // a prefix, as 4 messages
  EXPECT_EQ(s.pending_output_bytes(), 4000u + 4 * 4);
  auto w2 = s.write(as_bytes(p));
  ASSERT_TRUE(w2.ok());
  EXPECT_EQ(*w2, 0u);  // full
  EXPECT_TRUE(s.write({}).ok());

  WsClient c;
  std::byte buf[1500];
  std::string wire;
  while (std::size_t n = s.take_output(buf)) wire += str(Bytes(buf, n));
  EXPECT_EQ(s.output_capacity(), 0u);  // freed when drained
  ASSERT_TRUE(c.receive(wire));
  EXPECT_EQ(c.binary_stream(), p.substr(0, 4000));
  EXPECT_EQ(c.messages.size(), 4u);

  // Room again after draining.
  auto w3 = s.write(as_bytes(std::string_view(p).substr(4000)));
  ASSERT_TRUE(w3.ok());
  EXPECT_EQ(*w3, 4000u);
}

// --- closing -----------------------------------------------------------------------------------

TEST(WebSocket, PeerCloseIsAnsweredAndEndsTheStream) {
  WebSocketServer s;
  WsClient c;
  Collect sink;
  std::string wire = c.send(kBinary, "last");
  wire += c.close(1000, "bye");
  wire += frame(kFin | kBinary, "ignored");
  auto st = feed(s, wire, sink);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error(), WsError::kPeerClosed);
  EXPECT_EQ(sink.got, "last");
  EXPECT_EQ(s.state(), WsState::kClosed);
  EXPECT_TRUE(s.peer_closed());
  EXPECT_EQ(s.peer_close_code(), 1000);
  EXPECT_EQ(s.sent_close_code(), 1000);
  EXPECT_EQ(drain(s), server_frame(kFin | kClose, close_payload(1000, "bye")));
  // Sticky, and no more writes.
  EXPECT_EQ(feed(s, frame(kFin | kBinary, "x"), sink).error(), WsError::kPeerClosed);
  EXPECT_EQ(s.write(as_bytes("x")).error(), WsError::kPeerClosed);
  EXPECT_TRUE(s.close().ok());
  EXPECT_EQ(s.pending_output_bytes(), 0u);
}

TEST(WebSocket, PeerCloseWithoutStatus) {
  WebSocketServer s;
  Collect sink;
  EXPECT_EQ(feed(s, frame(kFin | kClose, ""), sink).error(), WsError::kPeerClosed);
  EXPECT_EQ(s.peer_close_code(), 1005);
  EXPECT_EQ(drain(s), server_frame(kFin | kClose, ""));
}

TEST(WebSocket, ServerInitiatedCloseHandshake) {
  WebSocketServer s;
  WsClient c;
  Collect sink;
  ASSERT_TRUE(s.close(WsCloseCode::kGoingAway, "restarting").ok());
  EXPECT_EQ(s.state(), WsState::kClosing);
  EXPECT_TRUE(s.close_sent());
  EXPECT_EQ(s.sent_close_code(), 1001);
  const std::string closing = drain(s);
  EXPECT_EQ(closing, server_frame(kFin | kClose, close_payload(1001, "restarting")));
  EXPECT_EQ(s.write(as_bytes("x")).error(), WsError::kClosed);
  EXPECT_TRUE(s.close().ok());  // once only
  EXPECT_EQ(s.pending_output_bytes(), 0u);

  // Data still in flight from the client arrives; its pings get no pong after our Close.
  std::string late = c.send(kBinary, "in flight");
  late += c.send(kPing, "p");
  ASSERT_TRUE(feed(s, late, sink).ok());
  EXPECT_EQ(sink.got, "in flight");
  EXPECT_EQ(s.pending_output_bytes(), 0u);

  // The client sees our Close and answers it.
  ASSERT_TRUE(c.receive(closing));
  ASSERT_EQ(c.messages.size(), 1u);
  EXPECT_EQ(c.messages[0].opcode, kClose);
  EXPECT_EQ(c.messages[0].status, 1001);
  auto st = feed(s, c.replies(), sink);
  EXPECT_EQ(st.error(), WsError::kPeerClosed);
  EXPECT_EQ(s.state(), WsState::kClosed);
  EXPECT_EQ(s.peer_close_code(), 1001);
  EXPECT_EQ(s.pending_output_bytes(), 0u);  // no second Close
}

TEST(WebSocket, CloseReasonIsCut) {
  WebSocketServer s;
  ASSERT_TRUE(s.close(WsCloseCode::kNormal, std::string(300, 'r')).ok());
  const std::string out = drain(s);
  EXPECT_EQ(out, server_frame(kFin | kClose, close_payload(1000, std::string(123, 'r'))));
}

// --- refusals ----------------------------------------------------------------------------------

struct Refusal {
  const char* name;
  std::string wire;
  WsError error;
  std::uint16_t close_code;
};

class WebSocketRefusal : public ::testing::TestWithParam<Refusal> {};

TEST_P(WebSocketRefusal, ClosesWithTheRightStatus) {
  const Refusal& r = GetParam();
  WebSocketServer s(WebSocketOptions{.max_message_in = 1000});
  Collect sink;
  // A good message first: it is delivered, the bad frame after it is not.
  auto st = feed(s, frame(kFin | kBinary, "ok") + r.wire + frame(kFin | kBinary, "after"), sink);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error(), r.error) << to_string(st.error());
  EXPECT_EQ(s.state(), WsState::kFailed);
  EXPECT_EQ(s.error(), r.error);
  EXPECT_EQ(sink.got.substr(0, 2), "ok");
  EXPECT_EQ(sink.got.find("after"), std::string::npos);
  EXPECT_EQ(s.sent_close_code(), r.close_code);

  // What we sent is one well-formed Close with that status.
  const std::string out = drain(s);
  WsClient c;
  ASSERT_TRUE(c.receive(out));
  ASSERT_EQ(c.messages.size(), 1u);
  EXPECT_EQ(c.messages[0].opcode, kClose);
  EXPECT_EQ(c.messages[0].status, r.close_code);

  // Sticky.
  EXPECT_EQ(feed(s, frame(kFin | kBinary, "x"), sink).error(), r.error);
  EXPECT_EQ(s.write(as_bytes("x")).error(), r.error);
  EXPECT_EQ(s.close().error(), r.error);
  EXPECT_EQ(s.pending_output_bytes(), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Frames, WebSocketRefusal,
    ::testing::Values(
        Refusal{"text", frame(kFin | kText, "Hello"), WsError::kTextMessage, 1003},
        Refusal{"text_fragment", frame(kText, "He") + frame(kFin | kCont, "llo"), WsError::kTextMessage, 1003},
        Refusal{"unmasked", frame(kFin | kBinary, "data", false), WsError::kProtocol, 1002},
        Refusal{"reserved_opcode_3", frame(kFin | 0x3, "x"), WsError::kProtocol, 1002},
        Refusal{"reserved_opcode_b", frame(kFin | 0xB, ""), WsError::kProtocol, 1002},
        Refusal{"rsv1_compression", frame(kFin | 0x40 | kBinary, "x"), WsError::kProtocol, 1002},
        Refusal{"rsv3", frame(kFin | 0x10 | kBinary, "x"), WsError::kProtocol, 1002},
        Refusal{"stray_continuation", frame(kFin | kCont, "x"), WsError::kProtocol, 1002},
        Refusal{"binary_inside_fragmented", frame(kBinary, "a") + frame(kFin | kBinary, "b"), WsError::kProtocol,
                1002},
        Refusal{"fragmented_ping", frame(kPing, "x"), WsError::kProtocol, 1002},
        Refusal{"long_ping", frame(kFin | kPing, std::string(126, 'p')), WsError::kProtocol, 1002},
        Refusal{"non_minimal_16", frame(kFin | kBinary, "short", true, 126), WsError::kProtocol, 1002},
        Refusal{"non_minimal_64", frame(kFin | kBinary, "short", true, 127), WsError::kProtocol, 1002},
        Refusal{"length_msb", claim_header(kFin | kBinary, 1ull << 63), WsError::kProtocol, 1002},
        Refusal{"close_code_1005", frame(kFin | kClose, close_payload(1005)), WsError::kProtocol, 1002},
        Refusal{"close_code_999", frame(kFin | kClose, close_payload(999)), WsError::kProtocol, 1002},
        Refusal{"close_one_byte", frame(kFin | kClose, "x"), WsError::kProtocol, 1002},
        Refusal{"close_reason_not_utf8", frame(kFin | kClose, close_payload(1000, "\xff\xfe")), WsError::kInvalidUtf8,
                1007},
        Refusal{"oversized_frame", frame(kFin | kBinary, std::string(1001, 'x')), WsError::kMessageTooBig, 1009},
        Refusal{"oversized_claim", claim_header(kFin | kBinary, 1ull << 62), WsError::kMessageTooBig, 1009},
        Refusal{"oversized_fragments", frame(kBinary, std::string(600, 'x')) + frame(kFin | kCont, std::string(401, 'y')),
                WsError::kMessageTooBig, 1009},
        Refusal{"http_request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", WsError::kProtocol, 1002}),
    [](const ::testing::TestParamInfo<Refusal>& i) { return std::string(i.param.name); });

TEST(WebSocket, MessageOfExactlyTheLimitIsAccepted) {
  WebSocketServer s(WebSocketOptions{.max_message_in = 1000});
  Collect sink;
  ASSERT_TRUE(feed(s, frame(kBinary, std::string(600, 'x')) + frame(kFin | kCont, std::string(400, 'y')), sink).ok());
  ASSERT_TRUE(feed(s, frame(kFin | kBinary, std::string(1000, 'z')), sink).ok());
  EXPECT_EQ(sink.got.size(), 2000u);
}

TEST(WebSocket, OversizedClaimIsRefusedBeforeAnyPayload) {
  // The default limit (1 MiB + 16 KiB): a frame claiming 4 GiB is refused from its header alone.
  WebSocketServer s;
  Collect sink;
  // libwslay looks at a frame once its first payload byte is there.
  auto st = feed(s, claim_header(kFin | kBinary, 4ull << 30) + "x", sink);
  EXPECT_EQ(st.error(), WsError::kMessageTooBig);
  EXPECT_EQ(sink.calls, 0u);
  // A frame of exactly DERP's largest frame plus header passes.
  WebSocketServer s2;
  Collect sink2;
  const std::string big((1u << 20) + 5, 'd');
  ASSERT_TRUE(feed(s2, frame(kFin | kBinary, big), sink2).ok());
  EXPECT_EQ(sink2.got.size(), big.size());
}

TEST(WebSocket, PingFloodWithoutReadingOverflows) {
  WebSocketServer s(WebSocketOptions{.max_pending_output = 1024});
  Collect sink;
  const std::string ping = frame(kFin | kPing, std::string(125, 'p'));
  Status<WsError> st;
  int rounds = 0;
  for (; rounds < 10000 && st.ok(); ++rounds) st = feed(s, ping, sink);  // output never drained
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error(), WsError::kOutputOverflow);
  EXPECT_GT(s.pending_output_bytes(), 1024 + WebSocketServer::kControlSlack);
  EXPECT_LT(s.pending_output_bytes(), 1024 + WebSocketServer::kControlSlack + 200);
  EXPECT_LT(rounds, 10000);
}

// --- hostile and odd input ---------------------------------------------------------------------

TEST(WebSocket, GarbageNeverCrashesAndOutputStaysWellFormed) {
  std::mt19937 rng(12345);
  int failed = 0;
  for (int round = 0; round < 3000; ++round) {
    WebSocketServer s(WebSocketOptions{.max_message_in = 4096});
    Collect sink;
    std::string wire;
    // Half the rounds start like a real frame so the parser gets past the first header.
    if (round % 2 == 0) wire = frame(kFin | kBinary, "hdr");
    const std::size_t n = 1 + rng() % 300;
    for (std::size_t i = 0; i < n; ++i) wire.push_back(static_cast<char>(rng()));
    Status<WsError> st;
    for (std::size_t off = 0; off < wire.size() && st.ok();) {
      const std::size_t k = std::min<std::size_t>(1 + rng() % 64, wire.size() - off);
      st = feed(s, std::string_view(wire).substr(off, k), sink);
      off += k;
    }
    if (!st.ok()) {
      ++failed;
      EXPECT_EQ(feed(s, "\x82", sink).error(), st.error());
    }
    WsClient c;
    EXPECT_TRUE(c.receive(drain(s))) << "round " << round;
  }
  EXPECT_GT(failed, 1000);  // random bytes are mostly refused
}

// A stream with every kind of frame, for split-feeding tests.
std::string mixed_stream(std::string& payload) {
  WsClient c;
  std::string w;
  w += c.send(kBinary, "hello");
  payload += "hello";
  w += frame(kBinary, "frag1-") + frame(kFin | kPing, "pp") + frame(kCont, "frag2-") + frame(kFin | kCont, "frag3");
  payload += "frag1-frag2-frag3";
  const std::string big = pattern(70000, 4);  // 64-bit length
  w += c.send(kBinary, big);
  payload += big;
  w += frame(kFin | kPong, "unsolicited");
  w += frame(kFin | kBinary, "");  // empty message
  const std::string mid = pattern(200, 5);  // 16-bit length
  w += c.send(kBinary, mid);
  payload += mid;
  w += c.send(kPing, "");
  w += c.close(1000, "done");
  return w;
}

TEST(WebSocket, OneByteAtATimeMatchesOneFeed) {
  std::string payload;
  const std::string wire = mixed_stream(payload);

  WebSocketServer whole;
  Collect whole_sink;
  EXPECT_EQ(feed(whole, wire, whole_sink).error(), WsError::kPeerClosed);
  EXPECT_EQ(whole_sink.got, payload);
  const std::string whole_out = drain(whole);

  WebSocketServer s;
  Collect sink;
  std::string out;
  Status<WsError> st;
  std::size_t i = 0;
  for (; i < wire.size() && st.ok(); ++i) {
    st = feed(s, std::string_view(wire).substr(i, 1), sink);
    out += drain(s);
  }
  EXPECT_EQ(i, wire.size());  // the Close is the last byte
  EXPECT_EQ(st.error(), WsError::kPeerClosed);
  EXPECT_EQ(sink.got, payload);
  EXPECT_EQ(out, whole_out);

  WsClient c;
  ASSERT_TRUE(c.receive(out));
  ASSERT_EQ(c.messages.size(), 3u);
  EXPECT_EQ(c.messages[0].opcode, kPong);
  EXPECT_EQ(c.messages[0].data, "pp");
  EXPECT_EQ(c.messages[1].opcode, kPong);
  EXPECT_EQ(c.messages[1].data, "");
  EXPECT_EQ(c.messages[2].opcode, kClose);
  EXPECT_EQ(c.messages[2].status, 1000);
}

TEST(WebSocket, SinkMayWriteAndCloseDuringFeed) {
  struct Echo : PayloadSink {
    WebSocketServer* s = nullptr;
    std::string got;
    void on_payload(Bytes b) override {
      got.append(as_chars(b));
      auto w = s->write(b);  // echo until we closed
      EXPECT_EQ(w.ok(), !s->close_sent());
      if (got.size() >= 6) {
        EXPECT_TRUE(s->close(WsCloseCode::kNormal, "enough").ok());
      }
    }
  };
  WebSocketServer s;
  Echo echo;
  echo.s = &s;
  WsClient c;
  std::string wire = c.send(kBinary, "abc");
  wire += c.send(kPing, "q");
  wire += c.send(kBinary, "def");
  wire += c.send(kBinary, "ghi");
  ASSERT_TRUE(s.feed(as_bytes(wire), echo).ok());
  EXPECT_EQ(s.state(), WsState::kClosing);
  EXPECT_EQ(echo.got, "abcdefghi");  // data after our Close still arrives
  ASSERT_TRUE(c.receive(drain(s)));
  ASSERT_EQ(c.messages.size(), 4u);
  EXPECT_EQ(c.messages[0].opcode, kBinary);
  EXPECT_EQ(c.messages[0].data, "abc");
  EXPECT_EQ(c.messages[1].opcode, kPong);
  EXPECT_EQ(c.messages[2].data, "def");
  EXPECT_EQ(c.messages[3].opcode, kClose);
  EXPECT_EQ(c.messages[3].status, 1000);
}

// --- memory ------------------------------------------------------------------------------------

TEST(WebSocket, NothingAllocatedUntilUsedAndOutputFreedWhenDrained) {
  WebSocketServer s;
  EXPECT_FALSE(s.has_context());
  EXPECT_TRUE(s.idle());
  Collect sink;
  ASSERT_TRUE(feed(s, frame(kFin | kPing, "x"), sink).ok());
  EXPECT_TRUE(s.has_context());
  EXPECT_GT(s.output_capacity(), 0u);
  EXPECT_FALSE(s.idle());  // the pong waits
  drain(s);
  EXPECT_EQ(s.output_capacity(), 0u);
  EXPECT_TRUE(s.idle());
  s.release_memory();
  EXPECT_FALSE(s.has_context());
}

TEST(WebSocket, ReleaseKeepsPartialFramesAndMessages) {
  WebSocketServer s;
  Collect sink;
  const std::string f = frame(kFin | kBinary, "0123456789");
  ASSERT_TRUE(feed(s, std::string_view(f).substr(0, 4), sink).ok());  // half a header
  s.release_memory();
  EXPECT_TRUE(s.has_context());
  EXPECT_FALSE(s.idle());
  ASSERT_TRUE(feed(s, std::string_view(f).substr(4, 8), sink).ok());  // header + part of payload
  s.release_memory();
  EXPECT_TRUE(s.has_context());
  ASSERT_TRUE(feed(s, std::string_view(f).substr(12), sink).ok());
  EXPECT_EQ(sink.got, "0123456789");
  EXPECT_TRUE(s.idle());
  s.release_memory();
  EXPECT_FALSE(s.has_context());

  // Between the frames of a fragmented message the context stays.
  ASSERT_TRUE(feed(s, frame(kBinary, "ab"), sink).ok());
  s.release_memory();
  EXPECT_TRUE(s.has_context());
  ASSERT_TRUE(feed(s, frame(kFin | kCont, "cd"), sink).ok());
  s.release_memory();
  EXPECT_FALSE(s.has_context());
  EXPECT_EQ(sink.got, "0123456789abcd");

  // Closing or closed connections keep theirs (close codes live there).
  ASSERT_TRUE(s.close().ok());
  s.release_memory();
  EXPECT_TRUE(s.has_context());
}

TEST(WebSocket, ReleasingAfterEveryByteChangesNothing) {
  std::string payload;
  const std::string wire = mixed_stream(payload);
  WebSocketServer whole;
  Collect whole_sink;
  (void)feed(whole, wire, whole_sink);
  const std::string whole_out = drain(whole);

  WebSocketServer s;
  Collect sink;
  std::string out;
  Status<WsError> st;
  int released = 0;
  for (std::size_t i = 0; i < wire.size() && st.ok(); ++i) {
    st = feed(s, std::string_view(wire).substr(i, 1), sink);
    out += drain(s);
    s.release_memory();
    if (!s.has_context()) ++released;
  }
  EXPECT_EQ(st.error(), WsError::kPeerClosed);
  EXPECT_EQ(sink.got, payload);
  EXPECT_EQ(out, whole_out);
  EXPECT_GE(released, 5);  // at the frame boundaries between whole messages
  EXPECT_TRUE(s.has_context());
}

TEST(WebSocket, IdleConnectionsHoldNoHeapAfterRelease) {
  constexpr int kConns = 300;
  std::vector<std::unique_ptr<WebSocketServer>> conns;
  conns.reserve(kConns);
  const std::size_t before = ::mallinfo2().uordblks;
  Collect sink;
  for (int i = 0; i < kConns; ++i) {
    conns.push_back(std::make_unique<WebSocketServer>());
    ASSERT_TRUE(feed(*conns.back(), frame(kFin | kBinary, "payload"), sink).ok());
    ASSERT_EQ(*conns.back()->write(as_bytes("reply")), 5u);
    drain(*conns.back());
  }
  const std::size_t busy = ::mallinfo2().uordblks;
  for (auto& c : conns) {
    EXPECT_TRUE(c->idle());
    c->release_memory();
    EXPECT_FALSE(c->has_context());
    EXPECT_EQ(c->output_capacity(), 0u);
  }
  const std::size_t idle = ::mallinfo2().uordblks;
  if (busy == before) {
    std::printf("[ memory   ] heap totals unavailable (another allocator is in use)\n");
    return;
  }
  const double per_busy = static_cast<double>(busy - before) / kConns;
  const double per_idle = (static_cast<double>(idle) - static_cast<double>(before)) / kConns;
  std::printf("[ memory   ] per connection: %.0f bytes with libwslay's context, %.0f after release_memory()\n",
              per_busy, per_idle);
  EXPECT_GT(per_busy, 8000);   // two 4 KiB frame buffers
  EXPECT_LT(per_busy, 12000);
  EXPECT_LT(per_idle, sizeof(WebSocketServer) + 64.0);  // the object itself, no buffers
}

}  // namespace
}  // namespace derpd::http
