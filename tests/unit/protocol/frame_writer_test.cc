// Frame writers: exact byte layouts (hand-built from Tailscale's derp.go / derpserver.go /
// derp_client.go writers), size checks, allocation-free operation, and round trips through the
// reader and the parsers.
#include <array>
#include <variant>

#include <gtest/gtest.h>

#include "relay/protocol/frame.h"
#include "relay/protocol/messages.h"
#include "tests/unit/protocol/alloc_counter.h"
#include "tests/unit/protocol/test_util.h"

namespace derpd::protocol {
namespace {

using testing::AllocationScope;
using testing::Buf;
using testing::bytes;
using testing::cat;
using testing::filled;
using testing::from_string;
using testing::header;
using testing::key_of;
using testing::view;

Buf written(std::size_t n, const std::array<std::byte, 70000>& out) { return Buf(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n)); }

class Writers : public ::testing::Test {
 protected:
  std::array<std::byte, 70000> out_{};
  MutBytes out() { return MutBytes(out_); }
};

TEST_F(Writers, ServerKeyIsMagicThenKey) {
  // sendServerKey: WriteFrame(FrameServerKey, Magic + public key).
  const std::size_t n = write_server_key(out(), key_of(0xab));
  const Buf want = cat({view(bytes({0x01, 0, 0, 0, 0x28, 0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91})),
                        view(filled(32, 0xab))});
  EXPECT_TRUE(written(n, out_) == want);
  static_assert(kPeerPresentLen == 51);
}

TEST_F(Writers, RecvPacketIsSourceKeyThenPacket) {
  const Buf pkt = from_string("hello");
  const std::size_t n = write_recv_packet(out(), key_of(1), view(pkt));
  EXPECT_TRUE(written(n, out_) == cat({view(header(0x05, 37)), view(filled(32, 1)), view(pkt)}));
  // Header-only form for scatter-gather: same first 37 bytes, same length field.
  std::array<std::byte, 37> h{};
  ASSERT_EQ(write_recv_packet_header(h, key_of(1), pkt.size()), 37u);
  EXPECT_TRUE(Buf(h.begin(), h.end()) == Buf(out_.begin(), out_.begin() + 37));
}

TEST_F(Writers, ServerSideFixedFrames) {
  EXPECT_TRUE(written(write_keep_alive(out()), out_) == bytes({0x06, 0, 0, 0, 0}));
  EXPECT_TRUE(written(write_peer_gone(out(), key_of(2), PeerGoneReason::kNotHere), out_) ==
              cat({view(header(0x08, 33)), view(filled(32, 2)), view(bytes({1}))}));
  EXPECT_TRUE(written(write_health(out(), "BAD"), out_) == bytes({0x14, 0, 0, 0, 3, 'B', 'A', 'D'}));
  EXPECT_TRUE(written(write_health(out(), ""), out_) == bytes({0x14, 0, 0, 0, 0}));
  EXPECT_TRUE(written(write_restarting(out(), 1, 2), out_) == bytes({0x15, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 2}));
  const PingData d{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4},
                   std::byte{5}, std::byte{6}, std::byte{7}, std::byte{8}};
  EXPECT_TRUE(written(write_ping(out(), d), out_) == bytes({0x12, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_TRUE(written(write_pong(out(), d), out_) == bytes({0x13, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST_F(Writers, PeerPresentMapsIPv4AndAddsPortAndFlags) {
  // sendPeerPresent: key + ipPort.Addr().As16() + BE port + flags = 32+16+2+1 = 51 bytes (the
  // "current servers send 41 bytes" comment in derp.go is stale; peerPresentFrameLen is 51).
  const auto ep = Endpoint::parse("1.2.3.4:5678");
  ASSERT_TRUE(ep.has_value());
  const std::size_t n = write_peer_present(out(), key_of(3), *ep, kPeerPresentIsRegular | kPeerPresentNotIdeal);
  const Buf want = cat({view(header(0x09, 51)), view(filled(32, 3)),
                        view(bytes({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4, 0x16, 0x2e, 0x09}))});
  EXPECT_TRUE(written(n, out_) == want);
  static_assert(kPeerPresentLen == 51);

  const auto ep6 = Endpoint::parse("[2001:db8::1]:443");
  ASSERT_TRUE(ep6.has_value());
  const std::size_t n6 = write_peer_present(out(), key_of(3), *ep6, kPeerPresentIsMeshPeer);
  const Buf want6 = cat({view(header(0x09, 51)), view(filled(32, 3)),
                         view(bytes({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x01, 0xbb, 0x02}))});
  EXPECT_TRUE(written(n6, out_) == want6);
}

TEST_F(Writers, ClientSideFrames) {
  const Buf pkt = from_string("wg");
  EXPECT_TRUE(written(write_send_packet(out(), key_of(4), view(pkt)), out_) ==
              cat({view(header(0x04, 34)), view(filled(32, 4)), view(pkt)}));
  EXPECT_TRUE(written(write_note_preferred(out(), true), out_) == bytes({0x07, 0, 0, 0, 1, 1}));
  EXPECT_TRUE(written(write_note_preferred(out(), false), out_) == bytes({0x07, 0, 0, 0, 1, 0}));
  EXPECT_TRUE(written(write_watch_conns(out()), out_) == bytes({0x10, 0, 0, 0, 0}));
  EXPECT_TRUE(written(write_close_peer(out(), key_of(5)), out_) == cat({view(header(0x11, 32)), view(filled(32, 5))}));
  EXPECT_TRUE(written(write_forward_packet(out(), key_of(6), key_of(7), view(pkt)), out_) ==
              cat({view(header(0x0a, 66)), view(filled(32, 6)), view(filled(32, 7)), view(pkt)}));
  std::array<std::byte, 69> fh{};
  ASSERT_EQ(write_forward_packet_header(fh, key_of(6), key_of(7), 2), 69u);
  EXPECT_TRUE(Buf(fh.begin(), fh.end()) == Buf(out_.begin(), out_.begin() + 69));
  std::array<std::byte, 37> sh{};
  ASSERT_EQ(write_send_packet_header(sh, key_of(4), 2), 37u);
  EXPECT_TRUE(Buf(sh.begin(), sh.end()) == cat({view(header(0x04, 34)), view(filled(32, 4))}));
}

TEST_F(Writers, TooSmallBufferOrOversizePacketWritesNothing) {
  const Buf pkt(100, std::byte{0});
  std::array<std::byte, 136> exact{};
  EXPECT_EQ(write_send_packet(exact, key_of(1), view(pkt)), 0u);  // one byte short
  std::array<std::byte, 137> fits{};
  EXPECT_EQ(write_send_packet(fits, key_of(1), view(pkt)), 137u);
  std::array<std::byte, 4> tiny{};
  EXPECT_EQ(write_keep_alive(tiny), 0u);
  EXPECT_EQ(write_frame_header(tiny, FrameType::kPing, 8), 0u);
  std::array<std::byte, 40> small{};
  EXPECT_EQ(write_server_key(small, key_of(1)), 0u);
  EXPECT_EQ(write_peer_gone(MutBytes(small).first(37), key_of(1), PeerGoneReason::kDisconnected), 0u);

  const Buf too_big(kMaxPacketSize + 1, std::byte{0});
  EXPECT_EQ(write_send_packet(out(), key_of(1), view(too_big)), 0u);
  EXPECT_EQ(write_recv_packet(out(), key_of(1), view(too_big)), 0u);
  EXPECT_EQ(write_forward_packet(out(), key_of(1), key_of(2), view(too_big)), 0u);
  EXPECT_EQ(write_recv_packet_header(out(), key_of(1), kMaxPacketSize + 1), 0u);
  const Buf max(kMaxPacketSize, std::byte{0});
  EXPECT_EQ(write_send_packet(out(), key_of(1), view(max)), 5u + 32u + kMaxPacketSize);
}

TEST_F(Writers, WritersDoNotAllocate) {
  const Buf pkt(1400, std::byte{0x5a});
  const auto ep = Endpoint::parse("10.0.0.1:41641");
  ASSERT_TRUE(ep.has_value());
  const NodePublic a = key_of(1);
  const NodePublic b = key_of(2);
  const PingData d{};
  std::size_t total = 0;
  AllocationScope scope;
  for (int i = 0; i < 100; ++i) {
    total += write_recv_packet(out(), a, view(pkt));
    total += write_send_packet(out(), b, view(pkt));
    total += write_forward_packet(out(), a, b, view(pkt));
    total += write_peer_present(out(), a, *ep, kPeerPresentIsRegular);
    total += write_peer_gone(out(), a, PeerGoneReason::kDisconnected);
    total += write_keep_alive(out());
    total += write_pong(out(), d);
    total += write_health(out(), "duplicate");
  }
  const std::size_t allocations = scope.allocations();
  EXPECT_EQ(allocations, 0u);
  EXPECT_GT(total, 0u);
}

// --- round trips: writer -> reader -> parser ---------------------------------------------------

template <typename Parse>
auto read_one(Bytes wire, const FrameLimits& limits, Parse parse) {
  FrameReader r(limits);
  Frame f;
  Bytes in = wire;
  EXPECT_EQ(r.next(in, f), FrameReader::Status::kFrame);
  EXPECT_TRUE(in.empty());
  return parse(f);
}

TEST_F(Writers, RoundTripClientFramesThroughTheServerParser) {
  const Buf pkt = from_string("a wireguard packet");
  auto parse = [](const Frame& f) {
    auto m = parse_client_message(f);
    EXPECT_TRUE(m.ok());
    return *m;
  };
  {
    const std::size_t n = write_send_packet(out(), key_of(9), view(pkt));
    auto m = read_one(MutBytes(out_).first(n), server_limits(), parse);
    const auto* sp = std::get_if<SendPacket>(&m);
    ASSERT_NE(sp, nullptr);
    EXPECT_EQ(sp->dst, key_of(9));
    EXPECT_TRUE(Buf(sp->packet.begin(), sp->packet.end()) == pkt);
  }
  {
    const std::size_t n = write_forward_packet(out(), key_of(1), key_of(2), view(pkt));
    auto m = read_one(MutBytes(out_).first(n), server_limits(), parse);
    const auto* fp = std::get_if<ForwardPacket>(&m);
    ASSERT_NE(fp, nullptr);
    EXPECT_EQ(fp->src, key_of(1));
    EXPECT_EQ(fp->dst, key_of(2));
    EXPECT_TRUE(Buf(fp->packet.begin(), fp->packet.end()) == pkt);
  }
  for (bool pref : {true, false}) {
    const std::size_t n = write_note_preferred(out(), pref);
    auto m = read_one(MutBytes(out_).first(n), server_limits(), parse);
    ASSERT_TRUE(std::holds_alternative<NotePreferred>(m));
    EXPECT_EQ(std::get<NotePreferred>(m).preferred, pref);
  }
  {
    const std::size_t n = write_watch_conns(out());
    EXPECT_TRUE(std::holds_alternative<WatchConns>(read_one(MutBytes(out_).first(n), server_limits(), parse)));
  }
  {
    const std::size_t n = write_close_peer(out(), key_of(3));
    auto m = read_one(MutBytes(out_).first(n), server_limits(), parse);
    ASSERT_TRUE(std::holds_alternative<ClosePeer>(m));
    EXPECT_EQ(std::get<ClosePeer>(m).peer, key_of(3));
  }
  {
    const PingData d{std::byte{9}, std::byte{8}, std::byte{7}, std::byte{6},
                     std::byte{5}, std::byte{4}, std::byte{3}, std::byte{2}};
    const std::size_t n = write_ping(out(), d);
    auto m = read_one(MutBytes(out_).first(n), server_limits(), parse);
    ASSERT_TRUE(std::holds_alternative<Ping>(m));
    EXPECT_EQ(std::get<Ping>(m).data, d);
  }
}

TEST_F(Writers, RoundTripServerFramesThroughTheClientParser) {
  const Buf pkt = from_string("relayed");
  auto parse = [](const Frame& f) {
    auto m = parse_server_message(f);
    EXPECT_TRUE(m.ok());
    return *m;
  };
  {
    const std::size_t n = write_recv_packet(out(), key_of(4), view(pkt));
    auto m = read_one(MutBytes(out_).first(n), client_limits(), parse);
    const auto* rp = std::get_if<RecvPacket>(&m);
    ASSERT_NE(rp, nullptr);
    EXPECT_EQ(rp->src, key_of(4));
    EXPECT_TRUE(Buf(rp->packet.begin(), rp->packet.end()) == pkt);
  }
  {
    const std::size_t n = write_keep_alive(out());
    EXPECT_TRUE(std::holds_alternative<KeepAlive>(read_one(MutBytes(out_).first(n), client_limits(), parse)));
  }
  for (auto reason : {PeerGoneReason::kDisconnected, PeerGoneReason::kNotHere}) {
    const std::size_t n = write_peer_gone(out(), key_of(5), reason);
    auto m = read_one(MutBytes(out_).first(n), client_limits(), parse);
    ASSERT_TRUE(std::holds_alternative<PeerGone>(m));
    EXPECT_EQ(std::get<PeerGone>(m).peer, key_of(5));
    EXPECT_EQ(std::get<PeerGone>(m).reason, reason);
  }
  for (const char* text : {"192.0.2.7:41641", "[2001:db8::9]:3478"}) {
    const auto ep = Endpoint::parse(text);
    ASSERT_TRUE(ep.has_value());
    const std::size_t n = write_peer_present(out(), key_of(6), *ep, kPeerPresentIsProber);
    auto m = read_one(MutBytes(out_).first(n), client_limits(), parse);
    ASSERT_TRUE(std::holds_alternative<PeerPresent>(m));
    const auto& pp = std::get<PeerPresent>(m);
    EXPECT_EQ(pp.peer, key_of(6));
    ASSERT_TRUE(pp.endpoint.has_value());
    EXPECT_EQ(*pp.endpoint, *ep);  // IPv4 comes back unmapped
    EXPECT_EQ(pp.flags, kPeerPresentIsProber);
  }
  {
    const PingData d{std::byte{1}, std::byte{1}, std::byte{2}, std::byte{3},
                     std::byte{5}, std::byte{8}, std::byte{13}, std::byte{21}};
    auto m = read_one(MutBytes(out_).first(write_ping(out(), d)), client_limits(), parse);
    ASSERT_TRUE(std::holds_alternative<Ping>(m));
    EXPECT_EQ(std::get<Ping>(m).data, d);
    m = read_one(MutBytes(out_).first(write_pong(out(), d)), client_limits(), parse);
    ASSERT_TRUE(std::holds_alternative<Pong>(m));
    EXPECT_EQ(std::get<Pong>(m).data, d);
  }
  {
    auto m = read_one(MutBytes(out_).first(write_health(out(), "duplicate client")), client_limits(), parse);
    ASSERT_TRUE(std::holds_alternative<Health>(m));
    EXPECT_EQ(std::get<Health>(m).problem, "duplicate client");
  }
  {
    auto m = read_one(MutBytes(out_).first(write_restarting(out(), 1500, 30000)), client_limits(), parse);
    ASSERT_TRUE(std::holds_alternative<Restarting>(m));
    EXPECT_EQ(std::get<Restarting>(m).reconnect_in_ms, 1500u);
    EXPECT_EQ(std::get<Restarting>(m).try_for_ms, 30000u);
  }
}

}  // namespace
}  // namespace derpd::protocol
