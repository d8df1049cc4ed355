// Frame payload validation, against what Tailscale's Go server (sclient.run and its handlers) and
// Go client (Client.recvTimeout) accept, drop or close on.
#include "relay/protocol/messages.h"

#include <deque>
#include <string>
#include <utility>
#include <variant>

#include <gtest/gtest.h>

#include "tests/unit/protocol/test_util.h"

namespace derpd::protocol {
namespace {

using testing::Buf;
using testing::bytes;
using testing::cat;
using testing::filled;
using testing::header;
using testing::key_of;
using testing::view;

// Frames and messages alias the wire bytes: keep every wire buffer alive for the whole test run.
const Buf& keep(Buf wire) {
  static std::deque<Buf> store;
  store.push_back(std::move(wire));
  return store.back();
}

// Reads one complete frame from `wire` with `limits`; returns the reader status and the frame.
struct ReadResult {
  FrameReader::Status status;
  FrameError error;
  Frame frame;
};
ReadResult read_frame(Buf wire_in, const FrameLimits& limits) {
  const Buf& wire = keep(std::move(wire_in));
  FrameReader r(limits);
  Bytes in(wire.data(), wire.size());
  ReadResult out{};
  out.status = r.next(in, out.frame);
  if (out.status == FrameReader::Status::kError) out.error = r.error();
  return out;
}

Buf frame_of(int type, const Buf& payload) {
  return cat({view(header(type, static_cast<std::uint32_t>(payload.size()))), view(payload)});
}

// --- server side: every "close the connection" case ------------------------------------------

struct CloseCase {
  const char* name;
  int type;
  std::size_t payload_len;
};

class ServerClosesOn : public ::testing::TestWithParam<CloseCase> {};

TEST_P(ServerClosesOn, ReaderOrParserReportsAnError) {
  const CloseCase c = GetParam();
  Buf wire = frame_of(c.type, filled(c.payload_len, 1));
  const ReadResult r = read_frame(std::move(wire), server_limits());
  if (r.status == FrameReader::Status::kError) {
    EXPECT_EQ(r.error, FrameError::kFrameTooLarge);
    return;
  }
  ASSERT_EQ(r.status, FrameReader::Status::kFrame);
  ASSERT_FALSE(r.frame.skipped);
  EXPECT_FALSE(parse_client_message(r.frame).ok());
}

INSTANTIATE_TEST_SUITE_P(
    GoServer, ServerClosesOn,
    ::testing::Values(CloseCase{"NotePreferredEmpty", 0x07, 0}, CloseCase{"NotePreferredTwo", 0x07, 2},
                      CloseCase{"SendPacketShort", 0x04, 31}, CloseCase{"SendPacketEmpty", 0x04, 0},
                      CloseCase{"SendPacketOver64K", 0x04, 32 + 65536 + 1},
                      CloseCase{"ForwardPacketShort", 0x0a, 63},
                      CloseCase{"ForwardPacketOver64K", 0x0a, 64 + 65536 + 1}, CloseCase{"PingShort", 0x12, 7},
                      CloseCase{"PingEmpty", 0x12, 0}, CloseCase{"PingOver1000", 0x12, 1001},
                      CloseCase{"WatchConnsWithPayload", 0x10, 1}, CloseCase{"ClosePeerShort", 0x11, 31},
                      CloseCase{"ClosePeerLong", 0x11, 33}, CloseCase{"UnknownOver1MiB", 0x42, (1u << 20) + 1}),
    [](const ::testing::TestParamInfo<CloseCase>& i) { return std::string(i.param.name); });

TEST(ParseClientMessage, ErrorsNameTheProblem) {
  auto parse = [](int type, std::size_t len) {
    const Buf p = filled(len, 0);
    Frame f{static_cast<FrameType>(type), static_cast<std::uint32_t>(len), Bytes(p.data(), p.size()), false};
    return parse_client_message(f);
  };
  EXPECT_EQ(parse(0x07, 2).error(), FrameError::kBadLength);
  EXPECT_EQ(parse(0x10, 1).error(), FrameError::kBadLength);
  EXPECT_EQ(parse(0x11, 33).error(), FrameError::kBadLength);
  EXPECT_EQ(parse(0x04, 31).error(), FrameError::kTooShort);
  EXPECT_EQ(parse(0x0a, 63).error(), FrameError::kTooShort);
  EXPECT_EQ(parse(0x12, 7).error(), FrameError::kTooShort);
  EXPECT_EQ(parse(0x12, 1001).error(), FrameError::kTooLong);
  // Parsers validate even when handed a frame a permissive reader let through.
  EXPECT_EQ(parse(0x04, 32 + 65537).error(), FrameError::kPacketTooLarge);
  EXPECT_EQ(parse(0x0a, 64 + 65537).error(), FrameError::kPacketTooLarge);
}

TEST(ParseClientMessage, AcceptsTheBoundaries) {
  for (const auto& [type, len] : std::vector<std::pair<int, std::size_t>>{
           {0x04, 32}, {0x04, 32 + 65536}, {0x0a, 64}, {0x0a, 64 + 65536}, {0x12, 8}, {0x12, 1000}, {0x07, 1},
           {0x10, 0}, {0x11, 32}}) {
    SCOPED_TRACE(type);
    SCOPED_TRACE(len);
    const ReadResult r = read_frame(frame_of(type, filled(len, 0)), server_limits());
    ASSERT_EQ(r.status, FrameReader::Status::kFrame);
    EXPECT_TRUE(parse_client_message(r.frame).ok());
  }
}

TEST(ParseClientMessage, PingEchoesTheFirstEightBytes) {
  Buf payload = bytes({1, 2, 3, 4, 5, 6, 7, 8});
  payload.resize(1000, std::byte{0xee});
  const ReadResult r = read_frame(frame_of(0x12, payload), server_limits());
  ASSERT_EQ(r.status, FrameReader::Status::kFrame);
  auto m = parse_client_message(r.frame);
  ASSERT_TRUE(m.ok());
  const PingData want{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4},
                      std::byte{5}, std::byte{6}, std::byte{7}, std::byte{8}};
  EXPECT_EQ(std::get<Ping>(*m).data, want);
}

TEST(ParseClientMessage, NotePreferredAnyNonZeroIsTrue) {
  const ReadResult r = read_frame(frame_of(0x07, bytes({0x80})), server_limits());
  auto m = parse_client_message(r.frame);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(std::get<NotePreferred>(*m).preferred);
}

TEST(ParseClientMessage, UnhandledTypesAreIgnoredNotFatal) {
  // The Go server discards (by length) every type it does not handle, including Pong and a second
  // ClientInfo; derpd's server limits skip them without buffering.
  for (int type : {0x13, 0x02, 0x05, 0x06, 0x7f, 0xff}) {
    SCOPED_TRACE(type);
    const ReadResult r = read_frame(frame_of(type, filled(100, 0)), server_limits());
    ASSERT_EQ(r.status, FrameReader::Status::kFrame);
    EXPECT_TRUE(r.frame.skipped);
    auto m = parse_client_message(r.frame);
    ASSERT_TRUE(m.ok());
    const auto* ig = std::get_if<Ignored>(&*m);
    ASSERT_NE(ig, nullptr);
    EXPECT_EQ(ig->type, static_cast<FrameType>(type));
    EXPECT_EQ(ig->length, 100u);
    EXPECT_EQ(ig->reason, IgnoreReason::kUnhandledType);
  }
}

TEST(FrameTypes, MeshOnlyFrames) {
  EXPECT_TRUE(requires_mesh(FrameType::kWatchConns));
  EXPECT_TRUE(requires_mesh(FrameType::kClosePeer));
  EXPECT_TRUE(requires_mesh(FrameType::kForwardPacket));
  EXPECT_FALSE(requires_mesh(FrameType::kSendPacket));
  EXPECT_FALSE(requires_mesh(FrameType::kPing));
  EXPECT_TRUE(is_known(FrameType::kRestarting));
  EXPECT_FALSE(is_known(static_cast<FrameType>(0x0b)));
  EXPECT_EQ(to_string(FrameType::kSendPacket), "send_packet");
  EXPECT_EQ(to_string(static_cast<FrameType>(0x99)), "unknown");
}

// --- client side: Go client Recv behaviour ------------------------------------------------------

ServerMessage parse_ok(Buf wire) {
  const ReadResult r = read_frame(std::move(wire), client_limits());
  EXPECT_EQ(r.status, FrameReader::Status::kFrame);
  auto m = parse_server_message(r.frame);
  EXPECT_TRUE(m.ok());
  return m.ok() ? *m : ServerMessage{Ignored{}};
}

TEST(ParseServerMessage, GoClientRecvVectors) {
  // derp/client_test.go TestClientRecv.
  const PingData d{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4},
                   std::byte{5}, std::byte{6}, std::byte{7}, std::byte{8}};
  auto m = parse_ok(bytes({0x12, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}));
  ASSERT_TRUE(std::holds_alternative<Ping>(m));
  EXPECT_EQ(std::get<Ping>(m).data, d);
  m = parse_ok(bytes({0x13, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}));
  ASSERT_TRUE(std::holds_alternative<Pong>(m));
  EXPECT_EQ(std::get<Pong>(m).data, d);
  m = parse_ok(bytes({0x14, 0, 0, 0, 3, 'B', 'A', 'D'}));
  ASSERT_TRUE(std::holds_alternative<Health>(m));
  EXPECT_EQ(std::get<Health>(m).problem, "BAD");
  m = parse_ok(bytes({0x14, 0, 0, 0, 0}));
  ASSERT_TRUE(std::holds_alternative<Health>(m));
  EXPECT_EQ(std::get<Health>(m).problem, "");
  m = parse_ok(bytes({0x15, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 2}));
  ASSERT_TRUE(std::holds_alternative<Restarting>(m));
  EXPECT_EQ(std::get<Restarting>(m).reconnect_in_ms, 1u);
  EXPECT_EQ(std::get<Restarting>(m).try_for_ms, 2u);
}

TEST(ParseServerMessage, ShortFramesAreDroppedNotFatal) {
  // "[unexpected] dropping short ... frame": RecvPacket/PeerGone/PeerPresent < 32, Ping/Pong/
  // Restarting < 8.
  for (const auto& [type, len] : std::vector<std::pair<int, std::size_t>>{
           {0x05, 31}, {0x08, 31}, {0x09, 31}, {0x12, 7}, {0x13, 0}, {0x15, 7}}) {
    SCOPED_TRACE(type);
    auto m = parse_ok(frame_of(type, filled(len, 0)));
    const auto* ig = std::get_if<Ignored>(&m);
    ASSERT_NE(ig, nullptr);
    EXPECT_EQ(ig->reason, IgnoreReason::kTooShort);
  }
}

TEST(ParseServerMessage, PeerGoneReasonByteIsOptional) {
  auto m = parse_ok(frame_of(0x08, filled(32, 4)));  // old server: no reason
  ASSERT_TRUE(std::holds_alternative<PeerGone>(m));
  EXPECT_EQ(std::get<PeerGone>(m).peer, key_of(4));
  EXPECT_EQ(std::get<PeerGone>(m).reason, PeerGoneReason::kDisconnected);
  m = parse_ok(frame_of(0x08, cat({view(filled(32, 4)), view(bytes({1, 0xaa}))})));
  EXPECT_EQ(std::get<PeerGone>(m).reason, PeerGoneReason::kNotHere);
}

TEST(ParseServerMessage, PeerPresentOlderAndNewerForms) {
  const Buf key = filled(32, 8);
  const Buf ip_port = bytes({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3, 0x1f, 0x90});
  {  // key only (oldest servers), and key + fewer than 18 bytes: no endpoint
    for (std::size_t extra : {0u, 17u}) {
      auto m = parse_ok(frame_of(0x09, cat({view(key), view(filled(extra, 1))})));
      ASSERT_TRUE(std::holds_alternative<PeerPresent>(m));
      EXPECT_EQ(std::get<PeerPresent>(m).peer, key_of(8));
      EXPECT_FALSE(std::get<PeerPresent>(m).endpoint.has_value());
      EXPECT_EQ(std::get<PeerPresent>(m).flags, 0);
    }
  }
  {  // key + IP + port, no flags
    auto m = parse_ok(frame_of(0x09, cat({view(key), view(ip_port)})));
    const auto& pp = std::get<PeerPresent>(m);
    ASSERT_TRUE(pp.endpoint.has_value());
    EXPECT_EQ(pp.endpoint->to_string(), "10.1.2.3:8080");
    EXPECT_EQ(pp.flags, 0);
  }
  {  // current (51 bytes) and a future longer form
    for (std::size_t extra : {0u, 9u}) {
      auto m = parse_ok(frame_of(0x09, cat({view(key), view(ip_port), view(bytes({0x03})), view(filled(extra, 7))})));
      const auto& pp = std::get<PeerPresent>(m);
      ASSERT_TRUE(pp.endpoint.has_value());
      EXPECT_EQ(pp.flags, kPeerPresentIsRegular | kPeerPresentIsMeshPeer);
    }
  }
}

TEST(ParseServerMessage, ServerInfoShorterThanNonceIsFatal) {
  const ReadResult r = read_frame(frame_of(0x03, filled(23, 0)), client_limits());
  ASSERT_EQ(r.status, FrameReader::Status::kFrame);
  EXPECT_EQ(parse_server_message(r.frame).error(), FrameError::kTooShort);
  auto m = parse_ok(frame_of(0x03, filled(40, 0)));
  ASSERT_TRUE(std::holds_alternative<ServerInfoFrame>(m));
  EXPECT_EQ(std::get<ServerInfoFrame>(m).sealed.size(), 40u);
}

TEST(ParseServerMessage, RecvPacketKeepAliveAndIgnoredTypes) {
  auto m = parse_ok(frame_of(0x05, cat({view(filled(32, 2)), view(bytes({9, 9}))})));
  ASSERT_TRUE(std::holds_alternative<RecvPacket>(m));
  EXPECT_EQ(std::get<RecvPacket>(m).packet.size(), 2u);
  m = parse_ok(frame_of(0x05, filled(32, 2)));  // empty packet is fine
  EXPECT_TRUE(std::get<RecvPacket>(m).packet.empty());
  m = parse_ok(frame_of(0x06, filled(3, 0)));  // KeepAlive payload is ignored
  EXPECT_TRUE(std::holds_alternative<KeepAlive>(m));
  for (int type : {0x01, 0x04, 0x60}) {  // ServerKey after login, client-only and unknown types
    m = parse_ok(frame_of(type, filled(50, 0)));
    ASSERT_TRUE(std::holds_alternative<Ignored>(m));
    EXPECT_EQ(std::get<Ignored>(m).reason, IgnoreReason::kUnhandledType);
  }
}

}  // namespace
}  // namespace derpd::protocol
