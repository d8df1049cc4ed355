// Mesh links: mesh-with parsing, the worker-side bridge against a real RelayShard (a fake link
// drives the channel by hand), and whole links against an in-process fake mesh peer on loopback.
#include "relay/daemon/mesh_links.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "relay/protocol/handshake.h"
#include "tests/unit/dclient/fake_server.h"
#include "tests/unit/server/harness.h"

namespace derpd::daemon {
namespace {

using protocol::FrameType;
using protocol::NodePublic;
using derpclient::testing::ServerConn;
using server::ClientId;
using server::test::Node;
using server::test::Rx;
using server::test::key_homed;
using namespace std::chrono_literals;

// --- mesh-with entries ---------------------------------------------------------------------------

struct TargetCase {
  std::string entry;
  bool tls;
  std::string url;        // "" = skipped (this node); "error" = refused
  std::string dial_host;
};

class ParseMeshTarget : public ::testing::TestWithParam<TargetCase> {};

TEST_P(ParseMeshTarget, Resolves) {
  const TargetCase& c = GetParam();
  auto t = parse_mesh_target(c.entry, c.tls, "derp1.example.com", 443);
  if (c.url == "error") {
    ASSERT_FALSE(t.ok()) << c.entry;
    EXPECT_NE(t.error().find(c.entry.empty() ? "empty" : c.entry), std::string::npos) << t.error();
    return;
  }
  ASSERT_TRUE(t.ok()) << t.error();
  if (c.url.empty()) {
    EXPECT_FALSE(t->has_value()) << c.entry << " names this node";
    return;
  }
  ASSERT_TRUE(t->has_value());
  EXPECT_EQ((*t)->url, c.url);
  EXPECT_EQ((*t)->dial_host, c.dial_host);
  EXPECT_EQ((*t)->entry, c.entry);
}

INSTANTIATE_TEST_SUITE_P(
    Entries, ParseMeshTarget,
    ::testing::Values(TargetCase{"derp2.example.com", true, "https://derp2.example.com/derp", ""},
                      TargetCase{"derp2.example.com", false, "http://derp2.example.com/derp", ""},
                      TargetCase{"derp2.example.com:8443", true, "https://derp2.example.com:8443/derp", ""},
                      TargetCase{"127.0.0.1:3341", false, "http://127.0.0.1:3341/derp", ""},
                      TargetCase{"[::1]:3341", false, "http://[::1]:3341/derp", ""},
                      // host/dialhost: connect to the second, speak to the first (URL, SNI,
                      // certificate name, Host header), as derper does.
                      TargetCase{"derp2.example.com/10.0.0.2", true, "https://derp2.example.com/derp", "10.0.0.2"},
                      TargetCase{"derp2.example.com:8443/10.0.0.2", true, "https://derp2.example.com:8443/derp",
                                 "10.0.0.2"},
                      TargetCase{"derp2.example.com/fd00::2", true, "https://derp2.example.com/derp", "fd00::2"},
                      TargetCase{"derp2.example.com/[fd00::2]", true, "https://derp2.example.com/derp", "fd00::2"},
                      TargetCase{"derp2.example.com/10.0.0.2", false, "http://derp2.example.com/derp", "10.0.0.2"},
                      TargetCase{"derp2.example.com/derp2-internal", true, "https://derp2.example.com/derp",
                                 "derp2-internal"},
                      TargetCase{"derp2.example.com/DERP2.example.com", true, "https://derp2.example.com/derp", ""},
                      // Explicit URLs are taken as they are.
                      TargetCase{"http://127.0.0.1:9/derp", true, "http://127.0.0.1:9/derp", ""},
                      TargetCase{"https://derp1.example.com/derp", true, "https://derp1.example.com/derp", ""},
                      // This node: its host name, with no port or its own port (any case).
                      TargetCase{"derp1.example.com", true, "", ""},
                      TargetCase{"DERP1.example.com", true, "", ""},
                      TargetCase{"derp1.example.com:443", true, "", ""},
                      TargetCase{"derp1.example.com/10.0.0.1", true, "", ""},
                      TargetCase{"derp1.example.com:444", true, "https://derp1.example.com:444/derp", ""},
                      // Refused.
                      TargetCase{"", true, "error", ""}, TargetCase{"a/b/c", true, "error", ""},
                      TargetCase{"host/", true, "error", ""}, TargetCase{"host:0", true, "error", ""},
                      TargetCase{"host:99999", true, "error", ""}, TargetCase{"ftp://host/derp", true, "error", ""},
                      TargetCase{"host/bad host", true, "error", ""}));

TEST(MeshOptions, FromConfigNeedsTheMeshKeyAndDropsThisNode) {
  config::Config cfg;
  cfg.hostname = "127.0.0.1";
  cfg.mesh_with = {"127.0.0.1:3340", "127.0.0.1:3341", "127.0.0.1:3341", "127.0.0.1:3342"};
  const auto priv = protocol::NodePrivate::generate();
  EXPECT_THROW(mesh_options_from_config(cfg, priv, protocol::MeshKey{}, false, 3340, 2), std::runtime_error);

  auto mk = protocol::MeshKey::parse(std::string(64, 'a'));
  ASSERT_TRUE(mk.ok());
  MeshOptions o = mesh_options_from_config(cfg, priv, *mk, false, 3340, 2);
  ASSERT_EQ(o.targets.size(), 2u) << "this node and the duplicate dropped";
  EXPECT_EQ(o.targets[0].url, "http://127.0.0.1:3341/derp");
  EXPECT_EQ(o.targets[1].url, "http://127.0.0.1:3342/derp");
  EXPECT_EQ(o.workers, 2u);
  EXPECT_TRUE(o.mesh_key.equals(*mk));

  cfg.mesh_with = {"a/b/c"};
  EXPECT_THROW(mesh_options_from_config(cfg, priv, *mk, false, 3340, 2), std::runtime_error);
  cfg.mesh_with.clear();
  EXPECT_TRUE(mesh_options_from_config(cfg, priv, protocol::MeshKey{}, false, 3340, 2).targets.empty());
}

// --- the bridge with a real shard ----------------------------------------------------------------

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

// One worker (a single-shard node) with a bridge, and a fake link thread driven by the test.
struct BridgeRig {
  explicit BridgeRig(std::size_t frame_ring = 1 << 20, std::size_t event_ring = 256 << 10)
      : node(1), channel(bridge.wake_fd(), event_ring, frame_ring) {
    bridge.add(&channel);
  }

  server::RelayShard& shard() { return node[0]; }

  void post(LinkEventType t, std::uint32_t gen, const NodePublic& key = {},
            server::ConnEnd how = server::ConnEnd::kPeerClosed) {
    ASSERT_TRUE(channel.try_post(LinkEvent{t, how, gen, key}));
  }
  // The worker's turn after its wake fd fired: events, then the shard's outputs.
  void wake() {
    bridge.on_wake(shard(), node.now);
    flush();
  }
  void flush() {
    server::ShardOutputs out;
    shard().take_outputs(out);
    for (const auto& c : out.closes)
      if (bridge.owns(c.id)) bridge.close_requested(shard(), c.id);
    for (ClientId id : out.writable)
      if (bridge.owns(id)) bridge.pump(shard(), id);
  }
  bool send(ClientId from, const NodePublic& dst, const std::vector<std::byte>& pkt) {
    const bool open = shard().frame_received(from, protocol::SendPacket{dst, pkt}, node.now);
    flush();
    return open;
  }
  // What the link thread would write to its peer, for connection `gen`.
  std::vector<Rx> link_frames(std::uint32_t gen, std::size_t max_records = 1 << 20) {
    std::vector<std::byte> bytes;
    channel.consume_frames(
        gen,
        [&](Bytes b) {
          bytes.insert(bytes.end(), b.begin(), b.end());
          return true;
        },
        max_records, &discarded);
    return server::test::decode(bytes, /*link=*/true);
  }

  Node node;
  MeshBridge bridge;
  LinkChannel channel;
  RelaxedCounter discarded;
};

const NodePublic kPeerServer = key_homed(500, 0, 1);

TEST(MeshBridge, KeyPresentOnlyOnTheLinkGoesOutAsForwardPacket) {
  BridgeRig rig;
  const NodePublic ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = rig.node.connect(0, ka);
  rig.post(LinkEventType::kOpened, 1, kPeerServer);
  rig.post(LinkEventType::kPresent, 1, kb);
  rig.channel.wake_worker();
  ASSERT_TRUE(readable(rig.bridge.wake_fd())) << "the link's wake reaches the worker's fd";
  rig.wake();
  EXPECT_FALSE(readable(rig.bridge.wake_fd())) << "on_wake resets the eventfd";
  EXPECT_EQ(rig.bridge.open_links(), 1u);
  const server::ReplicaEntry* e = rig.shard().directory().find(kb);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->forwarder.valid());
  EXPECT_TRUE(rig.bridge.owns(e->forwarder.client()));
  EXPECT_FALSE(rig.bridge.owns(a));

  const auto pkt = server::test::other_packet(1200, 0x5a);
  ASSERT_TRUE(rig.send(a, kb, pkt));
  const auto rx = rig.link_frames(1);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kForwardPacket);
  EXPECT_EQ(rx[0].key, ka);
  EXPECT_EQ(rx[0].dst, kb);
  EXPECT_EQ(rx[0].packet, pkt);
  EXPECT_EQ(rig.node.totals().packets_forwarded_out, 1u);
  // Nothing for a key the link never reported.
  ASSERT_TRUE(rig.send(a, key_homed(3, 0, 1), pkt));
  EXPECT_TRUE(rig.link_frames(1).empty());
}

TEST(MeshBridge, PeerGoneRemovesTheKeyAndTellsWhoHeardFromIt) {
  BridgeRig rig;
  const NodePublic ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1), km = key_homed(3, 0, 1);
  const ClientId a = rig.node.connect(0, ka);
  rig.post(LinkEventType::kOpened, 1, kPeerServer);
  rig.post(LinkEventType::kPresent, 1, kb);
  rig.wake();
  // The peer node forwards a packet from kb to a (as the peer's own link to us would).
  const ClientId m = rig.node.connect(0, km, /*mesh=*/true);
  const auto pkt = server::test::other_packet(100);
  ASSERT_TRUE(rig.shard().frame_received(m, protocol::ForwardPacket{kb, ka, pkt}, rig.node.now));
  rig.flush();
  auto rx = server::test::drain(rig.shard(), a);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kRecvPacket);
  EXPECT_EQ(rx[0].key, kb);

  rig.post(LinkEventType::kGone, 1, kb);
  rig.wake();
  EXPECT_EQ(rig.shard().directory().find(kb), nullptr);
  rx = server::test::drain(rig.shard(), a);
  ASSERT_EQ(rx.size(), 1u) << "derper's notePeerGoneFromRegion";
  EXPECT_EQ(rx[0].type, FrameType::kPeerGone);
  EXPECT_EQ(rx[0].key, kb);
  EXPECT_EQ(rx[0].reason, protocol::PeerGoneReason::kDisconnected);

  // Now kb is unknown: an ordinary packet drops, a disco one earns PeerGone(not here).
  const auto before = rig.node.totals();
  ASSERT_TRUE(rig.send(a, kb, pkt));
  ASSERT_TRUE(rig.send(a, kb, server::test::disco_packet()));
  EXPECT_TRUE(rig.link_frames(1).empty());
  EXPECT_EQ(rig.node.totals().packets_forwarded_out, before.packets_forwarded_out);
  rx = server::test::drain(rig.shard(), a);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].type, FrameType::kPeerGone);
  EXPECT_EQ(rx[0].reason, protocol::PeerGoneReason::kNotHere);
}

TEST(MeshBridge, LinkClosedRemovesEveryKeyItReached) {
  BridgeRig rig;
  const NodePublic ka = key_homed(1, 0, 1), k1 = key_homed(2, 0, 1), k2 = key_homed(3, 0, 1);
  const ClientId a = rig.node.connect(0, ka);
  rig.post(LinkEventType::kOpened, 1, kPeerServer);
  rig.post(LinkEventType::kPresent, 1, k1);
  rig.post(LinkEventType::kPresent, 1, k2);
  rig.wake();
  ASSERT_NE(rig.shard().directory().find(k1), nullptr);
  const ClientId link = rig.shard().directory().find(k1)->forwarder.client();

  rig.post(LinkEventType::kClosed, 1, {}, server::ConnEnd::kReadError);
  rig.wake();
  EXPECT_EQ(rig.bridge.open_links(), 0u);
  EXPECT_FALSE(rig.bridge.owns(link));
  EXPECT_EQ(rig.shard().directory().find(k1), nullptr);
  EXPECT_EQ(rig.shard().directory().find(k2), nullptr);
  ASSERT_TRUE(rig.send(a, k1, server::test::other_packet(64)));
  ASSERT_TRUE(rig.send(a, k2, server::test::other_packet(64)));
  EXPECT_TRUE(rig.link_frames(1).empty());
  EXPECT_EQ(rig.node.totals().packets_forwarded_out, 0u);

  // Late events of the closed connection change nothing; the next connection starts clean.
  rig.post(LinkEventType::kPresent, 1, k1);
  rig.wake();
  EXPECT_EQ(rig.shard().directory().find(k1), nullptr);
  rig.post(LinkEventType::kOpened, 2, kPeerServer);
  rig.post(LinkEventType::kPresent, 2, k2);
  rig.wake();
  ASSERT_TRUE(rig.send(a, k2, server::test::other_packet(64)));
  const auto rx = rig.link_frames(2);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].dst, k2);
}

TEST(MeshBridge, FramesPulledForABrokenConnectionAreDiscarded) {
  BridgeRig rig;
  const NodePublic ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = rig.node.connect(0, ka);
  rig.post(LinkEventType::kOpened, 1, kPeerServer);
  rig.post(LinkEventType::kPresent, 1, kb);
  rig.wake();
  const auto first = server::test::other_packet(300, 0x01);
  ASSERT_TRUE(rig.send(a, kb, first));  // pulled into the ring for connection 1 ...
  // ... which breaks before the link thread wrote it; the link redials at once.
  rig.post(LinkEventType::kClosed, 1);
  rig.post(LinkEventType::kOpened, 2, kPeerServer);
  rig.post(LinkEventType::kPresent, 2, kb);
  rig.wake();
  const auto second = server::test::other_packet(200, 0x02);
  ASSERT_TRUE(rig.send(a, kb, second));
  const auto rx = rig.link_frames(2);
  ASSERT_EQ(rx.size(), 1u) << "only connection 2's frames reach connection 2";
  EXPECT_EQ(rx[0].packet, second);
  EXPECT_EQ(rig.discarded.get(), protocol::frame_size(64 + first.size()));
}

TEST(MeshBridge, FullFrameRingLeavesPacketsInTheShardUntilTheLinkMakesRoom) {
  BridgeRig rig(server::SpscByteRing::kMinCapacity);  // 4 KiB: about three 1200-byte frames
  const NodePublic ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = rig.node.connect(0, ka);
  rig.post(LinkEventType::kOpened, 1, kPeerServer);
  rig.post(LinkEventType::kPresent, 1, kb);
  rig.wake();
  const std::size_t sent = 20;  // under the shard's queue depth (32): nothing is dropped
  for (std::size_t i = 0; i < sent; ++i)
    ASSERT_TRUE(rig.send(a, kb, server::test::other_packet(1200, static_cast<std::uint8_t>(i))));
  const ClientId link = rig.shard().directory().find(kb)->forwarder.client();
  EXPECT_TRUE(rig.shard().has_output(link)) << "the rest waits in the link's queue";
  EXPECT_FALSE(readable(rig.bridge.wake_fd()));

  // Records split frames: collect the stream, decode it at the end.
  std::vector<std::byte> stream;
  for (int round = 0; round < 100; ++round) {
    rig.channel.consume_frames(
        1,
        [&](Bytes b) {
          stream.insert(stream.end(), b.begin(), b.end());
          return true;
        },
        1 << 20);
    if (!rig.shard().has_output(link)) break;
    ASSERT_TRUE(readable(rig.bridge.wake_fd())) << "consuming from a full ring wakes the worker";
    rig.wake();
  }
  rig.channel.consume_frames(
      1,
      [&](Bytes b) {
        stream.insert(stream.end(), b.begin(), b.end());
        return true;
      },
      1 << 20);
  const auto got = server::test::decode(stream, /*link=*/true);
  ASSERT_EQ(got.size(), sent);
  for (std::size_t i = 0; i < sent; ++i) EXPECT_EQ(got[i].packet[1], std::byte{static_cast<std::uint8_t>(i)}) << i;
  EXPECT_EQ(rig.node.totals().packets_forwarded_out, sent);
}

TEST(MeshBridge, EventsBeyondTheBudgetWaitForTheNextTurn) {
  BridgeRig rig;
  rig.post(LinkEventType::kOpened, 1, kPeerServer);
  const std::size_t n = MeshBridge::kEventBudget + 10;
  for (std::uint32_t i = 0; i < n; ++i) rig.post(LinkEventType::kPresent, 1, key_homed(1000 + i, 0, 1));
  rig.bridge.on_wake(rig.shard(), rig.node.now);
  EXPECT_EQ(rig.shard().directory().size(), MeshBridge::kEventBudget - 1);
  EXPECT_TRUE(readable(rig.bridge.wake_fd())) << "the bridge re-arms its own wake for the rest";
  rig.bridge.on_wake(rig.shard(), rig.node.now);
  EXPECT_EQ(rig.shard().directory().size(), n);
}

TEST(MeshBridge, FullEventRingRefusesUntilTheWorkerDrainsIt) {
  BridgeRig rig(1 << 20, server::SpscByteRing::kMinCapacity);
  std::uint32_t posted = 0;
  while (rig.channel.try_post(LinkEvent{LinkEventType::kPresent, server::ConnEnd::kPeerClosed, 1,
                                        key_homed(posted, 0, 1)}))
    ++posted;
  ASSERT_GT(posted, 10u);
  ASSERT_LT(posted, 200u);
  rig.bridge.on_wake(rig.shard(), rig.node.now);
  EXPECT_TRUE(rig.channel.try_post(LinkEvent{LinkEventType::kOpened, server::ConnEnd::kPeerClosed, 1, kPeerServer}));
}

TEST(MeshBridge, CloseRequestedByTheShardResetsTheLink) {
  BridgeRig rig;
  const NodePublic kb = key_homed(2, 0, 1);
  rig.post(LinkEventType::kOpened, 1, kPeerServer);
  rig.post(LinkEventType::kPresent, 1, kb);
  rig.wake();
  ASSERT_EQ(rig.bridge.open_links(), 1u);
  rig.shard().close_all(server::CloseReason::kShutdown);
  rig.flush();
  EXPECT_EQ(rig.bridge.open_links(), 0u);
  EXPECT_EQ(rig.shard().directory().find(kb), nullptr);
  EXPECT_TRUE(readable(rig.channel.link_fd())) << "the link thread is woken";
  EXPECT_TRUE(rig.channel.take_reset_request());
  EXPECT_FALSE(rig.channel.take_reset_request());
  rig.post(LinkEventType::kPresent, 1, kb);  // in flight from the old connection: ignored
  rig.wake();
  EXPECT_EQ(rig.shard().directory().find(kb), nullptr);
}

TEST(MeshBridge, WaitReturnsWhenTheWorkerQueuesFrames) {
  BridgeRig rig;
  const NodePublic ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = rig.node.connect(0, ka);
  rig.post(LinkEventType::kOpened, 1, kPeerServer);
  rig.post(LinkEventType::kPresent, 1, kb);
  rig.wake();
  std::atomic<bool> woke{false};
  std::thread link([&] {
    rig.channel.wait(10s);
    woke = true;
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(woke.load());
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(rig.send(a, kb, server::test::other_packet(100)));
  link.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(rig.link_frames(1).size(), 1u);
}

// --- whole links against a fake mesh peer --------------------------------------------------------

// One accepted connection of the fake peer: dclient's fake-server connection (blocking; a read
// gives up after 5 s) on a socket it owns.
class PeerConn {
 public:
  explicit PeerConn(int fd) : fd_(fd), conn_(fd, nullptr) {
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~PeerConn() { close(); }
  PeerConn(const PeerConn&) = delete;
  PeerConn& operator=(const PeerConn&) = delete;

  // The DERP login, answered as the server with `key`; false when the link left or misbehaved.
  bool login(const protocol::NodePrivate& key) {
    auto h = conn_.login(key);
    if (h) hello_ = *h;
    return h.has_value();
  }
  const protocol::ClientHello& hello() const { return hello_; }

  bool write(Bytes b) { return conn_.write(b); }
  bool peer_present(const NodePublic& k, std::uint8_t flags = protocol::kPeerPresentIsRegular) {
    std::array<std::byte, protocol::frame_size(protocol::kPeerPresentLen)> f{};
    const std::size_t n = protocol::write_peer_present(f, k, Endpoint{*IpAddr::parse("192.0.2.1"), 41641}, flags);
    return write(Bytes(f.data(), n));
  }
  bool peer_gone(const NodePublic& k) {
    std::array<std::byte, protocol::frame_size(protocol::kPeerGoneLen)> f{};
    const std::size_t n = protocol::write_peer_gone(f, k, protocol::PeerGoneReason::kDisconnected);
    return write(Bytes(f.data(), n));
  }
  using Owned = ServerConn::OwnedFrame;
  // The next frame from the link (as a server reads it), or nullopt on EOF / timeout.
  std::optional<Owned> read() { return conn_.read_frame(&protocol::server_limits()); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
  ServerConn conn_;
  protocol::ClientHello hello_;
};

// A DERP server on loopback that accepts any number of logins (the plain HTTP upgrade, ServerKey,
// ClientInfo, ServerInfo) and hands each logged-in connection to the test.
class FakePeer {
 public:
  explicit FakePeer(protocol::NodePrivate key) : key_(std::move(key)) {
    listen_fd_ = derpclient::testing::listen_on_loopback(&port_, "fake peer");
    thread_ = std::thread([this] { accept_loop(); });
  }
  ~FakePeer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/derp"; }
  int attempts() const { return attempts_.load(); }

  std::unique_ptr<PeerConn> next(std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    if (!cv_.wait_for(lk, timeout, [&] { return !ready_.empty(); })) return nullptr;
    auto c = std::move(ready_.front());
    ready_.pop_front();
    return c;
  }

 private:
  void accept_loop() {
    for (int i = 0; i < 2000 && !stop_; ++i) {  // bounded: 2000 x 50 ms
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) != 1) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++attempts_;
      auto c = std::make_unique<PeerConn>(fd);
      if (!c->login(key_)) continue;  // closed with c
      std::lock_guard lk(mu_);
      ready_.push_back(std::move(c));
      cv_.notify_all();
    }
  }

  protocol::NodePrivate key_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> attempts_{0};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<PeerConn>> ready_;
};

protocol::MeshKey test_mesh_key() { return *protocol::MeshKey::parse(std::string(64, 'c')); }

MeshOptions fast_options(const protocol::NodePrivate& me, const std::string& url) {
  MeshOptions o;
  o.server_private = me;
  o.mesh_key = test_mesh_key();
  o.targets = {MeshTarget{url, url, ""}};
  o.workers = 1;
  o.min_backoff = 20ms;
  o.max_backoff = 100ms;
  o.connect_timeout = 2000ms;
  return o;
}

// The test thread plays worker 0: it runs the bridge and the shard until `done` holds (bounded).
struct WorkerLoop {
  WorkerLoop(MeshLinks& links) : bridge(*links.bridge(0)) {}
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout = 5s) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{bridge.wake_fd(), POLLIN, 0};
      (void)::poll(&p, 1, 10);
      bridge.on_wake(node[0], node.now);
      flush();
      if (done()) return true;
    }
    return false;
  }
  void flush() {
    server::ShardOutputs out;
    node[0].take_outputs(out);
    for (ClientId id : out.writable)
      if (bridge.owns(id)) bridge.pump(node[0], id);
  }
  bool forwarder_for(const NodePublic& k) {
    const server::ReplicaEntry* e = node[0].directory().find(k);
    return e != nullptr && e->forwarder.valid();
  }

  MeshBridge& bridge;
  Node node{1};
};

TEST(MeshLinks, LogsInWatchesForwardsAndRedialsAfterABreak) {
  const auto me = protocol::NodePrivate::generate();
  FakePeer peer(protocol::NodePrivate::generate());
  MeshLinks links(fast_options(me, peer.url()));
  ASSERT_NE(links.bridge(0), nullptr);
  WorkerLoop w(links);
  links.start();

  auto c1 = peer.next(5s);
  ASSERT_NE(c1, nullptr) << "the link dialed the peer";
  EXPECT_EQ(c1->hello().key, me.public_key()) << "logged in with this node's server key";
  EXPECT_TRUE(c1->hello().info.mesh_key.equals(test_mesh_key()));
  auto f = c1->read();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, FrameType::kWatchConns);

  const NodePublic ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1), kc = key_homed(3, 0, 1);
  const ClientId a = w.node.connect(0, ka);
  ASSERT_TRUE(c1->peer_present(kb));
  ASSERT_TRUE(c1->peer_present(kc));
  ASSERT_TRUE(w.run_until([&] { return w.forwarder_for(kb) && w.forwarder_for(kc); }));
  EXPECT_EQ(links.counters(0).present.get(), 2u);
  EXPECT_TRUE(links.counters(0).connected.load());

  const auto pkt = server::test::other_packet(1000, 0x77);
  ASSERT_TRUE(w.node[0].frame_received(a, protocol::SendPacket{kb, pkt}, w.node.now));
  w.flush();
  std::optional<PeerConn::Owned> fwd;
  std::thread reader([&] { fwd = c1->read(); });
  ASSERT_TRUE(w.run_until([&] { return links.counters(0).frames_out.get() == 1; }));
  reader.join();
  ASSERT_TRUE(fwd);
  ASSERT_EQ(fwd->type, FrameType::kForwardPacket);
  ASSERT_EQ(fwd->payload.size(), 64 + pkt.size());
  EXPECT_TRUE(std::equal(ka.bytes().begin(), ka.bytes().end(), fwd->payload.begin()));
  EXPECT_TRUE(std::equal(kb.bytes().begin(), kb.bytes().end(), fwd->payload.begin() + 32));
  EXPECT_TRUE(std::equal(pkt.begin(), pkt.end(), fwd->payload.begin() + 64));

  ASSERT_TRUE(c1->peer_gone(kb));
  ASSERT_TRUE(w.run_until([&] { return !w.forwarder_for(kb); }));
  EXPECT_TRUE(w.forwarder_for(kc));

  // The peer drops the connection: every key it reached goes, and the link redials.
  c1->close();
  ASSERT_TRUE(w.run_until([&] { return !w.forwarder_for(kc) && w.bridge.open_links() == 0; }));
  auto c2 = peer.next(5s);
  ASSERT_NE(c2, nullptr) << "redialed";
  f = c2->read();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, FrameType::kWatchConns);
  ASSERT_TRUE(c2->peer_present(kc));
  ASSERT_TRUE(w.run_until([&] { return w.forwarder_for(kc) && w.bridge.open_links() == 1; }));
  EXPECT_EQ(links.counters(0).connects.get(), 2u);
  EXPECT_EQ(links.counters(0).disconnects.get(), 1u);

  links.stop();
  EXPECT_FALSE(links.counters(0).connected.load());
}

// Context switches of the thread named `name` in this process (from /proc), or -1.
long thread_switches(const std::string& name) {
  long total = -1;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string c;
    std::getline(comm, c);
    if (c != name) continue;
    std::ifstream status(task.path() / "status");
    std::string line;
    long n = 0;
    while (std::getline(status, line))
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 || line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
        n += std::stol(line.substr(line.find(':') + 1));
    total = std::max(total, 0L) + n;
  }
  return total;
}

TEST(MeshLinks, IdleLinkSleepsUntilThePeerSendsOrAWorkerQueues) {
  const auto me = protocol::NodePrivate::generate();
  FakePeer peer(protocol::NodePrivate::generate());
  MeshLinks links(fast_options(me, peer.url()));
  WorkerLoop w(links);
  links.start();
  auto c = peer.next(5s);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->read());  // WatchConns
  ASSERT_TRUE(w.run_until([&] { return w.bridge.open_links() == 1; }));

  // Idle: no periodic wake-up (a 10 ms poll would wake ~50 times in 500 ms).
  const std::uint64_t wakeups0 = links.counters(0).wakeups.get();
  const long switches0 = thread_switches("derpd-mesh0");
  ASSERT_GE(switches0, 0) << "the link thread is named derpd-mesh0";
  std::this_thread::sleep_for(500ms);
  EXPECT_LE(links.counters(0).wakeups.get() - wakeups0, 1u);
  EXPECT_LE(thread_switches("derpd-mesh0") - switches0, 2);

  // The peer sends: the sleeping link reads it at once.
  const NodePublic ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = w.node.connect(0, ka);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(c->peer_present(kb));
  ASSERT_TRUE(w.run_until([&] { return w.forwarder_for(kb); }));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(links.counters(0).peers.load(), 1);

  // A worker queues a packet: the sleeping link writes it at once.
  std::this_thread::sleep_for(100ms);
  const std::uint64_t wakeups1 = links.counters(0).wakeups.get();
  const auto pkt = server::test::other_packet(500, 0x42);
  t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(w.node[0].frame_received(a, protocol::SendPacket{kb, pkt}, w.node.now));
  w.flush();
  auto fwd = c->read();
  ASSERT_TRUE(fwd);
  EXPECT_EQ(fwd->type, FrameType::kForwardPacket);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_GE(links.counters(0).wakeups.get(), wakeups1 + 1) << "woken by the worker, not by a timer";

  // Presence bookkeeping: a repeated PeerPresent counts once, PeerGone removes, a break clears.
  ASSERT_TRUE(c->peer_present(kb));
  ASSERT_TRUE(c->peer_present(key_homed(3, 0, 1)));
  ASSERT_TRUE(w.run_until([&] { return links.counters(0).present.get() == 3; }));
  EXPECT_EQ(links.counters(0).peers.load(), 2);
  ASSERT_TRUE(c->peer_gone(kb));
  ASSERT_TRUE(w.run_until([&] { return links.counters(0).gone.get() == 1; }));
  EXPECT_EQ(links.counters(0).peers.load(), 1);
  // Mesh links connected to the peer (this node's own, another node's) are not its clients.
  const NodePublic other_node = key_homed(4, 0, 1);
  ASSERT_TRUE(c->peer_present(me.public_key()));
  ASSERT_TRUE(c->peer_present(other_node, protocol::kPeerPresentIsMeshPeer));
  ASSERT_TRUE(w.run_until([&] { return links.counters(0).present.get() == 5; }));
  EXPECT_EQ(links.counters(0).peers.load(), 1);
  ASSERT_TRUE(c->peer_gone(other_node));
  ASSERT_TRUE(w.run_until([&] { return links.counters(0).gone.get() == 2; }));
  EXPECT_EQ(links.counters(0).peers.load(), 1);
  std::vector<metrics::MeshLinkTotals> report;
  links.report(report);
  ASSERT_EQ(report.size(), 1u);
  EXPECT_EQ(report[0].peer, peer.url());
  EXPECT_TRUE(report[0].up);
  EXPECT_FALSE(report[0].self);
  EXPECT_EQ(report[0].connects, 1u);
  EXPECT_EQ(report[0].clients, 1);
  EXPECT_EQ(report[0].present_events, 5u);
  EXPECT_EQ(report[0].gone_events, 2u);
  EXPECT_EQ(report[0].forwarded_packets, 1u);
  EXPECT_EQ(report[0].forwarded_bytes, pkt.size());

  c->close();
  ASSERT_TRUE(w.run_until([&] { return !links.counters(0).connected.load(); }));
  EXPECT_EQ(links.counters(0).peers.load(), 0);
  report.clear();
  links.report(report);
  EXPECT_FALSE(report[0].up);
  EXPECT_EQ(report[0].clients, 0);
  EXPECT_EQ(report[0].disconnects, 1u);
}

TEST(MeshLinks, PresenceFloodThroughASmallEventRingLosesNothing) {
  const auto me = protocol::NodePrivate::generate();
  FakePeer peer(protocol::NodePrivate::generate());
  MeshOptions o = fast_options(me, peer.url());
  o.event_ring_bytes = server::SpscByteRing::kMinCapacity;  // ~85 events: the link must wait for room
  MeshLinks links(o);
  WorkerLoop w(links);
  links.start();
  auto c = peer.next(5s);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->read());  // WatchConns
  constexpr std::uint32_t kKeys = 3000;
  std::vector<std::byte> burst;  // one write: the link reads them as fast as it can
  for (std::uint32_t i = 0; i < kKeys; ++i) {
    std::array<std::byte, protocol::frame_size(protocol::kPeerPresentLen)> f{};
    const std::size_t n = protocol::write_peer_present(f, key_homed(10 + i, 0, 1),
                                                       Endpoint{*IpAddr::parse("192.0.2.1"), 1}, 1);
    burst.insert(burst.end(), f.begin(), f.begin() + static_cast<std::ptrdiff_t>(n));
  }
  std::thread writer([&] { EXPECT_TRUE(c->write(burst)); });
  // Gone for the first half, after the flood.
  ASSERT_TRUE(w.run_until([&] { return w.node[0].directory().size() == kKeys; }, 10s))
      << w.node[0].directory().size() << " of " << kKeys;
  writer.join();
  for (std::uint32_t i = 0; i < kKeys / 2; ++i) ASSERT_TRUE(c->peer_gone(key_homed(10 + i, 0, 1)));
  ASSERT_TRUE(w.run_until([&] { return w.node[0].directory().size() == kKeys - kKeys / 2; }, 10s));
  EXPECT_TRUE(w.forwarder_for(key_homed(10 + kKeys - 1, 0, 1)));
  EXPECT_FALSE(w.forwarder_for(key_homed(10, 0, 1)));
  EXPECT_EQ(links.counters(0).present.get(), kKeys);
  EXPECT_EQ(links.counters(0).gone.get(), kKeys / 2);
}

TEST(MeshLinks, StopsForGoodWhenThePeerIsThisNode) {
  const auto me = protocol::NodePrivate::generate();
  FakePeer peer(me);  // answers with our own server key
  MeshLinks links(fast_options(me, peer.url()));
  links.start();
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (!links.counters(0).self.load() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
  EXPECT_TRUE(links.counters(0).self.load());
  std::this_thread::sleep_for(300ms);  // several backoff periods
  EXPECT_EQ(peer.attempts(), 1) << "no redial after a self-connect";
  std::vector<metrics::MeshLinkTotals> report;
  links.report(report);
  ASSERT_EQ(report.size(), 1u);
  EXPECT_TRUE(report[0].self);
  EXPECT_FALSE(report[0].up);
  EXPECT_EQ(links.counters(0).connects.get(), 0u);
  EXPECT_FALSE(readable(links.bridge(0)->wake_fd())) << "nothing was reported to the worker";
}

TEST(MeshLinks, RetriesAnUnreachablePeerWithBackoffAndStopsPromptly) {
  // A port that refuses: bind, note it, close.
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(::getsockname(s, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  ::close(s);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(sa.sin_port)) + "/derp";

  MeshOptions o = fast_options(protocol::NodePrivate::generate(), url);
  o.max_backoff = 5000ms;
  MeshLinks links(o);
  const auto start = std::chrono::steady_clock::now();
  links.start();
  // Sleeps of 20, 40, 80, 160 ms, each jittered down to at most half: the fifth try comes after
  // at least 150 ms, and a second holds a handful of tries, not hundreds.
  while (links.counters(0).connect_failures.get() < 5 && std::chrono::steady_clock::now() - start < 10s)
    std::this_thread::sleep_for(1ms);
  ASSERT_GE(links.counters(0).connect_failures.get(), 5u) << "the link keeps retrying";
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
  std::this_thread::sleep_until(start + 1s);
  EXPECT_LE(links.counters(0).connect_failures.get(), 12u);
  const auto t0 = std::chrono::steady_clock::now();
  links.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s) << "stop() interrupts the backoff sleep";
  EXPECT_EQ(links.counters(0).connects.get(), 0u);
}

TEST(MeshLinks, SpreadsLinksOverWorkers) {
  MeshOptions o;
  o.server_private = protocol::NodePrivate::generate();
  o.mesh_key = test_mesh_key();
  for (int i = 0; i < 3; ++i) o.targets.push_back(MeshTarget{"x", "http://127.0.0.1:9/derp", ""});
  o.workers = 2;
  MeshLinks links(o);  // never started
  ASSERT_NE(links.bridge(0), nullptr);
  ASSERT_NE(links.bridge(1), nullptr);
  EXPECT_EQ(links.bridge(2), nullptr);
  EXPECT_NE(links.bridge(0)->wake_fd(), links.bridge(1)->wake_fd());
  o.targets.resize(1);
  MeshLinks one(o);
  EXPECT_NE(one.bridge(0), nullptr);
  EXPECT_EQ(one.bridge(1), nullptr) << "worker 1 owns no link";
}

}  // namespace
}  // namespace derpd::daemon
