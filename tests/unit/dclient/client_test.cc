// The DERP client against an in-process fake server over plaintext TCP: login, every message type
// in both directions, and servers that misbehave (each must end in a clean error, within bounds).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "client/derp/client.h"
#include "relay/base/bytes.h"
#include "relay/http/head.h"
#include "relay/protocol/frame.h"
#include "relay/protocol/messages.h"
#include "tests/unit/dclient/fake_server.h"

namespace derpd::derpclient {
namespace {

namespace proto = derpd::protocol;
using namespace std::chrono_literals;
using testing::client_options;
using testing::FakeServer;
using testing::ServerConn;
using testing::ServerIdentity;

std::vector<std::byte> bytes_of(std::string_view s) {
  auto b = as_bytes(s);
  return {b.begin(), b.end()};
}

proto::NodePublic random_key() { return proto::NodePrivate::generate().public_key(); }

// Writes a frame built by one of the protocol writers.
template <typename F>
bool send_frame(ServerConn& c, std::size_t size, F&& writer) {
  std::vector<std::byte> buf(size);
  const std::size_t n = writer(MutBytes(buf));
  return n != 0 && c.write(Bytes(buf.data(), n));
}

TEST(Client, LoginWithoutFastStart) {
  ServerIdentity server;
  std::optional<proto::ClientHello> hello;
  std::string head;
  FakeServer fake([&](ServerConn& c) {
    hello = c.login(server.priv);
    head = c.last_head;
    c.wait_closed();
  });
  Options o = client_options(fake.url());
  o.app_name = "unit";
  auto client = Client::connect(o);
  ASSERT_TRUE(client.ok()) << to_string(client.error());
  EXPECT_EQ(client->server_key(), server.pub);
  EXPECT_FALSE(client->info().fast_start);
  ASSERT_TRUE(client->info().server_info.has_value());
  EXPECT_EQ(client->info().server_info->version, 2);
  EXPECT_TRUE(client->info().tls.version.empty());
  ASSERT_TRUE(client->info().local.has_value());
  EXPECT_TRUE(client->info().local->addr.is_loopback());
  const proto::NodePublic me = client->public_key();
  client->close();
  fake.join();

  ASSERT_TRUE(hello.has_value());
  EXPECT_EQ(hello->key, me);
  EXPECT_EQ(hello->info.version, 2);
  EXPECT_TRUE(hello->info.can_ack_pings);
  EXPECT_FALSE(hello->info.is_prober);
  EXPECT_EQ(hello->info.app_name, "unit");
  EXPECT_TRUE(hello->info.mesh_key.is_zero());
  EXPECT_TRUE(head.starts_with("GET /derp HTTP/1.1\r\n"));
  EXPECT_NE(head.find("\r\nUpgrade: DERP\r\n"), std::string::npos);
  EXPECT_NE(head.find("\r\nConnection: Upgrade\r\n"), std::string::npos);
  EXPECT_NE(head.find("\r\nHost: 127.0.0.1:" + std::to_string(fake.port()) + "\r\n"), std::string::npos);
  EXPECT_EQ(head.find("Derp-Fast-Start"), std::string::npos);
}

TEST(Client, UsesAGivenKey) {
  ServerIdentity server;
  const auto mine = proto::NodePrivate::generate();
  std::optional<proto::ClientHello> hello;
  FakeServer fake([&](ServerConn& c) {
    hello = c.login(server.priv);
    c.wait_closed();
  });
  Options o = client_options(fake.url());
  o.private_key = mine;
  o.is_prober = true;
  auto client = Client::connect(o);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ(client->public_key(), mine.public_key());
  client->close();
  fake.join();
  ASSERT_TRUE(hello.has_value());
  EXPECT_EQ(hello->key, mine.public_key());
  EXPECT_TRUE(hello->info.is_prober);
}

TEST(Client, SendAndReceivePackets) {
  ServerIdentity server;
  const proto::NodePublic peer = random_key();
  std::vector<std::vector<std::byte>> got;
  std::vector<proto::NodePublic> dsts;
  FakeServer fake([&](ServerConn& c) {
    if (!c.login(server.priv)) return;
    for (int i = 0; i < 2; ++i) {
      auto f = c.read_frame();
      if (!f || f->type != proto::FrameType::kSendPacket) return;
      dsts.push_back(proto::NodePublic::from_raw(Bytes(f->payload).first<proto::kKeyLen>()));
      got.emplace_back(f->payload.begin() + proto::kKeyLen, f->payload.end());
      // Echo as if from `peer`.
      Bytes pkt = Bytes(f->payload).subspan(proto::kKeyLen);
      if (!send_frame(c, proto::frame_size(proto::kKeyLen + pkt.size()),
                      [&](MutBytes out) { return proto::write_recv_packet(out, peer, pkt); }))
        return;
    }
    c.wait_closed();
  });
  auto client = Client::connect(client_options(fake.url()));
  ASSERT_TRUE(client.ok());

  const auto small = bytes_of("hello through the relay");
  std::vector<std::byte> max(proto::kMaxPacketSize);
  for (std::size_t i = 0; i < max.size(); ++i) max[i] = static_cast<std::byte>(i * 7);
  std::vector<std::byte> over(proto::kMaxPacketSize + 1);

  ASSERT_TRUE(client->send(peer, small).ok());
  auto too_big = client->send(peer, over);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.error(), Error::kPacketTooLarge);
  EXPECT_FALSE(client->broken());
  ASSERT_TRUE(client->send(peer, max).ok());

  for (const std::vector<std::byte>* want : std::array<const std::vector<std::byte>*, 2>{&small, &max}) {
    auto m = client->recv(3s);
    ASSERT_TRUE(m.ok()) << to_string(m.error()) << " " << client->error_detail();
    auto* p = std::get_if<RecvPacket>(&*m);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->src, peer);
    EXPECT_EQ(p->data, *want);
  }
  client->close();
  fake.join();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], small);
  EXPECT_EQ(got[1], max);
  EXPECT_EQ(dsts[0], peer);
}

TEST(Client, PingPongBothWays) {
  ServerIdentity server;
  std::optional<proto::PingData> pong_seen;
  int pings_answered = 0;
  FakeServer fake([&](ServerConn& c) {
    if (!c.login(server.priv)) return;
    // Answer the client's first ping; ignore the second (the client must time out and survive).
    for (int i = 0; i < 3; ++i) {
      auto f = c.read_frame();
      if (!f || f->type != proto::FrameType::kPing) return;
      if (i == 1) continue;
      proto::PingData d{};
      std::memcpy(d.data(), f->payload.data(), d.size());
      if (!send_frame(c, proto::frame_size(8), [&](MutBytes out) { return proto::write_pong(out, d); })) return;
      ++pings_answered;
    }
    // Now ping the client; it answers by itself.
    const proto::PingData mine = {std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4},
                                  std::byte{5}, std::byte{6}, std::byte{7}, std::byte{8}};
    if (!send_frame(c, proto::frame_size(8), [&](MutBytes out) { return proto::write_ping(out, mine); })) return;
    auto f = c.read_frame();
    if (f && f->type == proto::FrameType::kPong && f->payload.size() == 8) {
      proto::PingData d{};
      std::memcpy(d.data(), f->payload.data(), d.size());
      pong_seen = d;
    }
    c.wait_closed();
  });
  auto client = Client::connect(client_options(fake.url()));
  ASSERT_TRUE(client.ok());
  auto rtt = client->ping(3s);
  ASSERT_TRUE(rtt.ok()) << client->error_detail();
  EXPECT_GT(rtt->count(), 0);
  const auto t0 = Clock::now();
  auto lost = client->ping(200ms);
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.error(), Error::kTimeout);
  EXPECT_LT(Clock::now() - t0, 2s);
  EXPECT_FALSE(client->broken());
  ASSERT_TRUE(client->ping(3s).ok()) << client->error_detail();
  auto m = client->recv(3s);
  ASSERT_TRUE(m.ok());
  auto* ping = std::get_if<Ping>(&*m);
  ASSERT_NE(ping, nullptr);
  EXPECT_EQ(std::to_integer<int>(ping->data[7]), 8);
  client->close();
  fake.join();
  EXPECT_EQ(pings_answered, 2);
  ASSERT_TRUE(pong_seen.has_value());
  EXPECT_EQ(*pong_seen, ping->data);
}

TEST(Client, EveryServerMessageInOrder) {
  ServerIdentity server;
  const proto::NodePublic a = random_key();
  const proto::NodePublic b = random_key();
  const auto ep = *Endpoint::parse("10.1.2.3:41641");
  FakeServer fake([&](ServerConn& c) {
    if (!c.login(server.priv)) return;
    std::vector<std::byte> buf(4096);
    std::size_t n = 0;
    MutBytes out(buf);
    n += proto::write_keep_alive(out.subspan(n));
    n += proto::write_peer_gone(out.subspan(n), a, proto::PeerGoneReason::kDisconnected);
    n += proto::write_peer_gone(out.subspan(n), b, proto::PeerGoneReason::kNotHere);
    n += proto::write_peer_present(out.subspan(n), a, ep, proto::kPeerPresentIsRegular);
    n += proto::write_health(out.subspan(n), "disk on fire");
    n += proto::write_health(out.subspan(n), "");
    n += proto::write_restarting(out.subspan(n), 1500, 30000);
    // An unknown frame type (skipped), then a short RecvPacket (dropped like Go), then a packet.
    n += proto::write_frame_header(out.subspan(n), static_cast<proto::FrameType>(0x7f), 3);
    n += 3;
    n += proto::write_frame_header(out.subspan(n), proto::FrameType::kRecvPacket, 5);
    n += 5;
    n += proto::write_recv_packet(out.subspan(n), b, as_bytes(std::string_view("x")));
    c.write(Bytes(buf.data(), n));
    c.wait_closed();
  });
  auto client = Client::connect(client_options(fake.url()));
  ASSERT_TRUE(client.ok());
  auto next = [&]() {
    auto m = client->recv(3s);
    EXPECT_TRUE(m.ok()) << client->error_detail();
    return m.ok() ? *m : Message{KeepAlive{}};
  };
  EXPECT_TRUE(std::holds_alternative<KeepAlive>(next()));
  auto g1 = next();
  ASSERT_TRUE(std::holds_alternative<PeerGone>(g1));
  EXPECT_EQ(std::get<PeerGone>(g1).peer, a);
  EXPECT_EQ(std::get<PeerGone>(g1).reason, proto::PeerGoneReason::kDisconnected);
  auto g2 = next();
  ASSERT_TRUE(std::holds_alternative<PeerGone>(g2));
  EXPECT_EQ(std::get<PeerGone>(g2).peer, b);
  EXPECT_EQ(std::get<PeerGone>(g2).reason, proto::PeerGoneReason::kNotHere);
  auto pp = next();
  ASSERT_TRUE(std::holds_alternative<PeerPresent>(pp));
  EXPECT_EQ(std::get<PeerPresent>(pp).peer, a);
  EXPECT_EQ(std::get<PeerPresent>(pp).endpoint, ep);
  EXPECT_EQ(std::get<PeerPresent>(pp).flags, proto::kPeerPresentIsRegular);
  auto h1 = next();
  ASSERT_TRUE(std::holds_alternative<Health>(h1));
  EXPECT_EQ(std::get<Health>(h1).problem, "disk on fire");
  auto h2 = next();
  ASSERT_TRUE(std::holds_alternative<Health>(h2));
  EXPECT_EQ(std::get<Health>(h2).problem, "");
  auto r = next();
  ASSERT_TRUE(std::holds_alternative<Restarting>(r));
  EXPECT_EQ(std::get<Restarting>(r).reconnect_in, 1500ms);
  EXPECT_EQ(std::get<Restarting>(r).try_for, 30000ms);
  auto p = next();
  ASSERT_TRUE(std::holds_alternative<RecvPacket>(p));
  EXPECT_EQ(std::get<RecvPacket>(p).src, b);
  EXPECT_EQ(std::get<RecvPacket>(p).data, bytes_of("x"));
  client->close();
  fake.join();
}

TEST(Client, MeshFramesAndNotePreferred) {
  ServerIdentity server;
  const auto mesh = *proto::MeshKey::parse(std::string(64, 'a'));
  const proto::NodePublic src = random_key();
  const proto::NodePublic dst = random_key();
  std::optional<proto::ClientHello> hello;
  std::vector<proto::FrameType> types;
  std::vector<std::vector<std::byte>> payloads;
  FakeServer fake([&](ServerConn& c) {
    hello = c.login(server.priv);
    if (!hello) return;
    for (int i = 0; i < 5; ++i) {
      auto f = c.read_frame();
      if (!f) return;
      types.push_back(f->type);
      payloads.push_back(f->payload);
    }
    c.wait_closed();
  });
  Options o = client_options(fake.url());
  o.mesh_key = mesh;
  o.preferred = true;     // NotePreferred(true) right after login
  o.watch_conns = true;   // then WatchConns
  auto client = Client::connect(o);
  ASSERT_TRUE(client.ok()) << to_string(client.error());
  ASSERT_TRUE(client->close_peer(dst).ok());
  ASSERT_TRUE(client->forward_packet(src, dst, as_bytes(std::string_view("fwd"))).ok());
  ASSERT_TRUE(client->note_preferred(false).ok());
  client->close();
  fake.join();
  ASSERT_TRUE(hello.has_value());
  EXPECT_TRUE(hello->info.mesh_key.equals(mesh));
  ASSERT_EQ(types.size(), 5u);
  EXPECT_EQ(types[0], proto::FrameType::kNotePreferred);
  EXPECT_EQ(payloads[0], std::vector<std::byte>{std::byte{1}});
  EXPECT_EQ(types[1], proto::FrameType::kWatchConns);
  EXPECT_TRUE(payloads[1].empty());
  EXPECT_EQ(types[2], proto::FrameType::kClosePeer);
  EXPECT_EQ(proto::NodePublic::from_raw(Bytes(payloads[2]).first<32>()), dst);
  EXPECT_EQ(types[3], proto::FrameType::kForwardPacket);
  ASSERT_EQ(payloads[3].size(), 67u);
  EXPECT_EQ(proto::NodePublic::from_raw(Bytes(payloads[3]).first<32>()), src);
  EXPECT_EQ(proto::NodePublic::from_raw(Bytes(payloads[3]).subspan(32).first<32>()), dst);
  EXPECT_EQ(types[4], proto::FrameType::kNotePreferred);
  EXPECT_EQ(payloads[4], std::vector<std::byte>{std::byte{0}});
}

TEST(Client, MessagesDuringPingAreKeptButBounded) {
  ServerIdentity server;
  constexpr std::size_t kFlood = Client::kMaxPending + 100;
  FakeServer fake([&](ServerConn& c) {
    if (!c.login(server.priv)) return;
    auto f = c.read_frame();
    if (!f || f->type != proto::FrameType::kPing) return;
    // A flood of packets before the pong.
    std::vector<std::byte> buf;
    std::array<std::byte, proto::frame_size(32 + 4)> one{};
    const proto::NodePublic src = proto::NodePrivate::generate().public_key();
    for (std::size_t i = 0; i < kFlood; ++i) {
      std::array<std::byte, 4> seq{};
      store_be32(seq.data(), static_cast<std::uint32_t>(i));
      const std::size_t n = proto::write_recv_packet(one, src, seq);
      buf.insert(buf.end(), one.begin(), one.begin() + static_cast<std::ptrdiff_t>(n));
    }
    proto::PingData d{};
    std::memcpy(d.data(), f->payload.data(), d.size());
    std::array<std::byte, 13> pong{};
    const std::size_t n = proto::write_pong(pong, d);
    buf.insert(buf.end(), pong.begin(), pong.begin() + static_cast<std::ptrdiff_t>(n));
    c.write(buf);
    c.wait_closed();
  });
  auto client = Client::connect(client_options(fake.url()));
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client->ping(5s).ok()) << client->error_detail();
  EXPECT_EQ(client->pending_dropped(), 100u);
  // The newest kMaxPending packets are there, in order.
  for (std::size_t i = 100; i < kFlood; ++i) {
    auto m = client->recv(0ms);
    ASSERT_TRUE(m.ok()) << i;
    auto* p = std::get_if<RecvPacket>(&*m);
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(p->data.size(), 4u);
    ASSERT_EQ(load_be32(p->data.data()), i);
  }
  auto none = client->recv(50ms);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error(), Error::kTimeout);
  client->close();
  fake.join();
}

TEST(Client, RecvTimeoutMidFrameKeepsTheConnection) {
  ServerIdentity server;
  const proto::NodePublic peer = random_key();
  FakeServer fake([&](ServerConn& c) {
    if (!c.login(server.priv)) return;
    std::vector<std::byte> f(proto::frame_size(32 + 100));
    std::vector<std::byte> pkt(100, std::byte{0x5a});
    const std::size_t n = proto::write_recv_packet(f, peer, pkt);
    c.write(Bytes(f.data(), 20));
    std::this_thread::sleep_for(400ms);
    c.write(Bytes(f.data() + 20, n - 20));
    c.wait_closed();
  });
  auto client = Client::connect(client_options(fake.url()));
  ASSERT_TRUE(client.ok());
  auto first = client->recv(100ms);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.error(), Error::kTimeout);
  EXPECT_FALSE(client->broken());
  auto second = client->recv(3s);
  ASSERT_TRUE(second.ok()) << client->error_detail();
  auto* p = std::get_if<RecvPacket>(&*second);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->data.size(), 100u);
  EXPECT_EQ(p->data[99], std::byte{0x5a});
  client->close();
  fake.join();
}

TEST(Client, NotWaitingForServerInfoStillProcessesIt) {
  ServerIdentity server;
  FakeServer fake([&](ServerConn& c) {
    if (!c.login(server.priv)) return;
    std::array<std::byte, 5> ka{};
    c.write(Bytes(ka.data(), proto::write_keep_alive(ka)));
    c.wait_closed();
  });
  Options o = client_options(fake.url());
  o.wait_for_server_info = false;
  auto client = Client::connect(o);
  ASSERT_TRUE(client.ok());
  auto m = client->recv(3s);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(std::holds_alternative<KeepAlive>(*m));
  ASSERT_TRUE(client->info().server_info.has_value());
  client->close();
  fake.join();
}

// --- misbehaving servers ------------------------------------------------------------------------

struct BadCase {
  const char* name;
  std::function<void(ServerConn&, const ServerIdentity&)> script;
  Error want;
  const char* detail_contains;
};

class BadServer : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadServer, FailsCleanlyAndQuickly) {
  const BadCase& bc = GetParam();
  ServerIdentity server;
  FakeServer fake([&](ServerConn& c) { bc.script(c, server); });
  Options o = client_options(fake.url());
  o.connect_timeout = 1500ms;
  std::string why;
  const auto t0 = Clock::now();
  auto client = Client::connect(o, &why);
  const auto took = Clock::now() - t0;
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error(), bc.want) << to_string(client.error()) << ": " << why;
  EXPECT_NE(why.find(bc.detail_contains), std::string::npos) << why;
  EXPECT_LT(took, 3s);
  fake.join();
}

std::string head_of(ServerConn& c) { return c.read_head(); }

INSTANTIATE_TEST_SUITE_P(
    Handshake, BadServer,
    ::testing::Values(
        BadCase{"wrong_magic",
                [](ServerConn& c, const ServerIdentity& s) {
                  head_of(c);
                  c.send_101(s.pub);
                  std::array<std::byte, 45> f{};
                  proto::write_server_key(f, s.pub);
                  f[5] = std::byte{'X'};  // first magic byte
                  c.write(f);
                  c.wait_closed();
                },
                Error::kBadServerKey, "bad_magic"},
        BadCase{"not_found",
                [](ServerConn& c, const ServerIdentity&) {
                  head_of(c);
                  c.write("HTTP/1.1 404 Not Found\r\nContent-Length: 19\r\n\r\nno derp here, sorry");
                  c.wait_closed();
                },
                Error::kHttpStatus, "HTTP 404 Not Found: no derp here, sorry"},
        BadCase{"upgrade_refused_426",
                [](ServerConn& c, const ServerIdentity&) {
                  head_of(c);
                  c.write("HTTP/1.1 426 Upgrade Required\r\n\r\nDERP requires connection upgrade");
                  c.wait_closed();
                },
                Error::kHttpStatus, "426"},
        BadCase{"garbage",
                [](ServerConn& c, const ServerIdentity&) {
                  head_of(c);
                  c.write("SSH-2.0-OpenSSH_9.2\r\n\r\n");
                  c.wait_closed();
                },
                Error::kBadHttp, "not HTTP"},
        BadCase{"binary_garbage",
                [](ServerConn& c, const ServerIdentity&) {
                  head_of(c);
                  c.write(std::string_view("\x16\x03\x01\x00\x05\x00\x00\x00\x00\x00", 10));
                  c.wait_closed();
                },
                Error::kBadHttp, "not HTTP"},
        BadCase{"endless_head",
                [](ServerConn& c, const ServerIdentity&) {
                  head_of(c);
                  c.write("HTTP/1.1 101 Switching Protocols\r\nX-Pad: ");
                  c.write(std::string(20000, 'a'));
                  c.wait_closed();
                },
                Error::kBadHttp, "too large"},
        BadCase{"too_many_header_lines",  // relay/http's other "too large": the same message
                [](ServerConn& c, const ServerIdentity&) {
                  head_of(c);
                  std::string many = "HTTP/1.1 101 Switching Protocols\r\n";
                  for (std::size_t i = 0; i <= http::kMaxHeaders; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
                  c.write(many + "\r\n");
                  c.wait_closed();
                },
                Error::kBadHttp, "upgrade response head too large"},
        BadCase{"server_key_frame_too_long",
                [](ServerConn& c, const ServerIdentity& s) {
                  head_of(c);
                  c.send_101(s.pub);
                  std::array<std::byte, 5> h{};
                  proto::write_frame_header(h, proto::FrameType::kServerKey, 2048);
                  c.write(h);
                  c.wait_closed();
                },
                Error::kBadServerKey, "invalid server greeting"},
        BadCase{"huge_frame_length",
                [](ServerConn& c, const ServerIdentity& s) {
                  head_of(c);
                  c.send_101(s.pub);
                  c.write(std::string_view("\x01\xff\xff\xff\xff", 5));
                  c.wait_closed();
                },
                Error::kBadServerKey, "invalid server greeting"},
        BadCase{"wrong_first_frame",
                [](ServerConn& c, const ServerIdentity& s) {
                  head_of(c);
                  c.send_101(s.pub);
                  std::array<std::byte, 5> f{};
                  c.write(Bytes(f.data(), proto::write_keep_alive(f)));
                  c.wait_closed();
                },
                Error::kBadServerKey, "invalid server greeting"},
        BadCase{"short_server_key",
                [](ServerConn& c, const ServerIdentity& s) {
                  head_of(c);
                  c.send_101(s.pub);
                  c.write(std::string_view("\x01\x00\x00\x00\x08" "DERP\xf0\x9f\x94\x91", 13));
                  c.wait_closed();
                },
                Error::kBadServerKey, "too_short"},
        BadCase{"silent_server",
                [](ServerConn& c, const ServerIdentity&) {
                  head_of(c);
                  c.wait_closed();
                },
                Error::kTimeout, "deadline"},
        BadCase{"closes_at_once",
                [](ServerConn&, const ServerIdentity&) {},
                Error::kClosed, "closed"},
        BadCase{"rejects_client_info",
                [](ServerConn& c, const ServerIdentity& s) {
                  head_of(c);
                  c.send_101(s.pub);
                  c.send_server_key(s.pub);
                  c.read_frame(&proto::server_handshake_limits());
                },
                Error::kClosed, "after ClientInfo"},
        BadCase{"server_info_sealed_with_another_key",
                [](ServerConn& c, const ServerIdentity& s) {
                  head_of(c);
                  c.send_101(s.pub);
                  c.send_server_key(s.pub);
                  auto hello = c.read_client_info(s.priv);
                  if (!hello) return;
                  c.send_server_info(proto::NodePrivate::generate(), hello->key);
                  c.wait_closed();
                },
                Error::kBadServerInfo, "open_failed"},
        BadCase{"server_info_too_short",
                [](ServerConn& c, const ServerIdentity& s) {
                  head_of(c);
                  c.send_101(s.pub);
                  c.send_server_key(s.pub);
                  if (!c.read_client_info(s.priv)) return;
                  c.write(std::string_view("\x03\x00\x00\x00\x04" "abcd", 9));
                  c.wait_closed();
                },
                Error::kProtocol, "server_info"},
        BadCase{"oversize_frame_after_login",
                [](ServerConn& c, const ServerIdentity& s) {
                  head_of(c);
                  c.send_101(s.pub);
                  c.send_server_key(s.pub);
                  if (!c.read_client_info(s.priv)) return;
                  c.write(std::string_view("\x05\x00\x10\x00\x01", 5));  // 1 MiB + 1
                  c.wait_closed();
                },
                Error::kProtocol, "frame_too_large"}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(Client, OversizeFrameLaterBreaksTheClientForGood) {
  ServerIdentity server;
  FakeServer fake([&](ServerConn& c) {
    if (!c.login(server.priv)) return;
    c.write(std::string_view("\x05\xff\xff\xff\xff", 5));
    c.wait_closed();
  });
  auto client = Client::connect(client_options(fake.url()));
  ASSERT_TRUE(client.ok());
  auto m = client->recv(3s);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error(), Error::kProtocol);
  EXPECT_TRUE(client->broken());
  auto again = client->recv(100ms);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error(), Error::kBroken);
  auto s = client->send(random_key(), as_bytes(std::string_view("x")));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error(), Error::kBroken);
  fake.join();
}

TEST(Client, ServerHangsUpMidStream) {
  ServerIdentity server;
  FakeServer fake([&](ServerConn& c) {
    if (!c.login(server.priv)) return;
    c.write(std::string_view("\x05\x00\x00\x00\x40", 5));  // a RecvPacket header, then EOF
  });
  auto client = Client::connect(client_options(fake.url()));
  ASSERT_TRUE(client.ok());
  auto m = client->recv(3s);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error(), Error::kClosed);
  fake.join();
}

TEST(Client, ConnectionRefusedAndBadUrl) {
  // A bound socket that does not listen: connecting to its port is refused.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  std::string why;
  auto c = Client::connect(client_options("http://127.0.0.1:" + std::to_string(ntohs(sa.sin_port)) + "/derp"), &why);
  ::close(fd);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error(), Error::kConnect);
  EXPECT_NE(why.find("refused"), std::string::npos) << why;

  auto bad = Client::connect(client_options("derp://nowhere"), &why);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error(), Error::kBadUrl);
}

}  // namespace
}  // namespace derpd::derpclient
