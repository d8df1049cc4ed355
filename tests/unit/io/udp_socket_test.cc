#include "relay/io/udp_socket.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "relay/io/probe.h"
#include "relay/io/uring.h"
#include "tests/unit/io/fake_ring.h"

namespace derpd::io {
namespace {

using testing::FakeRing;
using testing::ManualClock;
using testing::Submitted;
using namespace std::chrono_literals;

struct Got {
  std::string payload;
  Endpoint from, local;
};

struct Sink final : DatagramSink {
  std::vector<Got> got;
  bool echo = false;
  void on_datagram(UdpSocket& s, Bytes payload, const Endpoint& from, const Endpoint& local) override {
    got.push_back({std::string(as_chars(payload)), from, local});
    if (echo) {
      auto* slot = s.acquire();
      ASSERT_NE(slot, nullptr);
      std::memcpy(slot->payload, payload.data(), payload.size());
      s.send(slot, payload.size(), from, local.addr);
    }
  }
};

int udp_fd() { return socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0); }

// Lays out a received datagram in a provided buffer as the kernel does for multishot recvmsg.
std::int32_t fill_buffer(std::span<std::byte> buf, const msghdr& tmpl, const Endpoint& from, std::string_view payload,
                         std::uint32_t msg_flags = 0) {
  io_uring_recvmsg_out out{};
  sockaddr_storage ss;
  out.namelen = from.to_sockaddr(ss);
  out.controllen = 0;
  out.payloadlen = static_cast<std::uint32_t>(payload.size());
  out.flags = msg_flags;
  std::byte* p = buf.data();
  std::memcpy(p, &out, sizeof out);
  std::memcpy(p + sizeof out, &ss, std::min<std::size_t>(out.namelen, tmpl.msg_namelen));
  std::size_t off = sizeof out + tmpl.msg_namelen + tmpl.msg_controllen;
  std::memcpy(p + off, payload.data(), payload.size());
  return static_cast<std::int32_t>(off + payload.size());
}

std::uint32_t buffer_flags(std::uint16_t bid, bool more) {
  return IORING_CQE_F_BUFFER | (std::uint32_t{bid} << IORING_CQE_BUFFER_SHIFT) | (more ? IORING_CQE_F_MORE : 0);
}

struct FakeFixture : ::testing::Test {
  FakeRing ring;
  ManualClock clock;
  Loop loop{ring, clock};
  BufRing bufs{1, 8, 512};
  Sink sink;
  UdpStats stats;
  Endpoint bound{IpAddr::loopback(Family::V4), 3478};
  Endpoint peer = *Endpoint::parse("127.0.0.9:5555");
};

TEST_F(FakeFixture, ArmsMultishotReceiveOnStart) {
  UdpSocket s(loop, udp_fd(), bound, bufs, sink, stats);
  s.start();
  auto recvs = ring.of_kind(Submitted::kRecvMultishot);
  ASSERT_EQ(recvs.size(), 1u);
  EXPECT_EQ(recvs[0].group, 1);
}

TEST_F(FakeFixture, DeliversPayloadAndSourceThenRecyclesTheBuffer) {
  UdpSocket s(loop, udp_fd(), bound, bufs, sink, stats);
  s.start();
  auto armed = ring.of_kind(Submitted::kRecvMultishot)[0];
  const std::uint32_t before = bufs.available();
  std::int32_t res = fill_buffer(bufs.buffer(3), *armed.msg, peer, "hello");
  ring.complete(armed.ud, res, buffer_flags(3, true));
  bufs.note_consumed();  // what the kernel's take of buffer 3 would look like from our side
  loop.run_once(0ns);
  ASSERT_EQ(sink.got.size(), 1u);
  EXPECT_EQ(sink.got[0].payload, "hello");
  EXPECT_EQ(sink.got[0].from, peer);
  EXPECT_EQ(sink.got[0].local, bound);
  EXPECT_EQ(s.stats().received.get(), 1u);
  EXPECT_EQ(bufs.available(), before - 1) << "buffer given back to the kernel";
  EXPECT_EQ(ring.of_kind(Submitted::kRecvMultishot).size(), 1u) << "still armed: no re-arm while F_MORE";
}

TEST_F(FakeFixture, ReArmsWhenTheKernelEndsTheMultishot) {
  UdpSocket s(loop, udp_fd(), bound, bufs, sink, stats);
  s.start();
  auto armed = ring.of_kind(Submitted::kRecvMultishot)[0];
  std::int32_t res = fill_buffer(bufs.buffer(0), *armed.msg, peer, "x");
  ring.complete(armed.ud, res, buffer_flags(0, false));
  loop.run_once(0ns);
  EXPECT_EQ(sink.got.size(), 1u);
  EXPECT_EQ(ring.of_kind(Submitted::kRecvMultishot).size(), 2u);
  EXPECT_EQ(s.stats().rearms.get(), 1u);
}

TEST_F(FakeFixture, NoBuffersIsCountedAndReArmed) {
  UdpSocket s(loop, udp_fd(), bound, bufs, sink, stats);
  s.start();
  auto armed = ring.of_kind(Submitted::kRecvMultishot)[0];
  ring.complete(armed.ud, -ENOBUFS, 0);
  loop.run_once(0ns);
  EXPECT_EQ(s.stats().no_buffers.get(), 1u);
  EXPECT_EQ(ring.of_kind(Submitted::kRecvMultishot).size(), 2u);
  EXPECT_TRUE(sink.got.empty());
}

TEST_F(FakeFixture, TruncatedDatagramIsDroppedAndCounted) {
  UdpSocket s(loop, udp_fd(), bound, bufs, sink, stats);
  s.start();
  auto armed = ring.of_kind(Submitted::kRecvMultishot)[0];
  std::int32_t res = fill_buffer(bufs.buffer(1), *armed.msg, peer, "partial", MSG_TRUNC);
  ring.complete(armed.ud, res, buffer_flags(1, true));
  loop.run_once(0ns);
  EXPECT_TRUE(sink.got.empty());
  EXPECT_EQ(s.stats().truncated.get(), 1u);
}

TEST_F(FakeFixture, CompletionShorterThanItsHeaderIsAnErrorNotARead) {
  UdpSocket s(loop, udp_fd(), bound, bufs, sink, stats);
  s.start();
  auto armed = ring.of_kind(Submitted::kRecvMultishot)[0];
  ring.complete(armed.ud, 4, buffer_flags(2, true));
  loop.run_once(0ns);
  EXPECT_TRUE(sink.got.empty());
  EXPECT_EQ(s.stats().recv_errors.get(), 1u);
}

TEST_F(FakeFixture, SendSlotsAreBoundedAndReturnOnCompletion) {
  UdpSocket s(loop, udp_fd(), bound, bufs, sink, stats, /*send_slots=*/2);
  auto* a = s.acquire();
  auto* b = s.acquire();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(s.acquire(), nullptr);
  EXPECT_EQ(s.stats().send_busy.get(), 1u);
  std::memcpy(a->payload, "hi", 2);
  s.send(a, 2, peer, IpAddr{});
  auto sends = ring.of_kind(Submitted::kSendmsg);
  ASSERT_EQ(sends.size(), 1u);
  const msghdr* m = sends[0].msg;
  EXPECT_EQ(m->msg_iov[0].iov_len, 2u);
  auto to = Endpoint::from_sockaddr(static_cast<const sockaddr*>(m->msg_name), m->msg_namelen);
  ASSERT_TRUE(to);
  EXPECT_EQ(*to, peer);
  EXPECT_EQ(m->msg_controllen, 0u) << "a socket bound to one address needs no source selection";
  ring.complete(sends[0].ud, 2);
  loop.run_once(0ns);
  EXPECT_EQ(s.stats().sent.get(), 1u);
  EXPECT_NE(s.acquire(), nullptr) << "slot returned after completion";
}

TEST_F(FakeFixture, CompletionsAfterCloseAreStale) {
  auto s = std::make_unique<UdpSocket>(loop, udp_fd(), bound, bufs, sink, stats);
  s->start();
  auto armed = ring.of_kind(Submitted::kRecvMultishot)[0];
  s->close();
  EXPECT_EQ(ring.of_kind(Submitted::kCancel).size(), 1u) << "cancelled by user_data, not by fd number";
  ring.complete(armed.ud, -ECANCELED, 0);
  loop.run_once(0ns);
  EXPECT_EQ(loop.stats().stale_completions, 1u);
}

// The same socket on a real io_uring over loopback: datagrams in, echoes out.
TEST(UdpSocketKernel, EchoesOverLoopbackOnARealRing) {
  KernelProbe probe = probe_kernel();
  if (!probe.ok()) GTEST_SKIP() << "kernel lacks what derpd needs: " << probe.explain();
  UringRing ring(RingOptions{256, 1024, true});
  MonotonicClock clock;
  Loop loop(ring, clock);
  BufRing bufs(1, 64, 2048);
  ASSERT_EQ(ring.register_buf_ring(bufs), 0);
  int err = 0;
  auto fd = open_udp_socket(*Endpoint::parse("127.0.0.1:0"), err);
  ASSERT_TRUE(fd) << strerror(err);
  sockaddr_storage ss;
  socklen_t len = sizeof ss;
  getsockname(*fd, reinterpret_cast<sockaddr*>(&ss), &len);
  Endpoint server = *Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  Sink sink;
  sink.echo = true;
  UdpStats stats;
  UdpSocket s(loop, *fd, server, bufs, sink, stats);
  s.start();

  int client = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  timeval tv{2, 0};
  setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  server.to_sockaddr(ss);
  constexpr int kCount = 200;  // more than the 64 buffers: they must be recycled
  for (int i = 0; i < kCount; ++i) {
    std::string msg = "ping " + std::to_string(i);
    ASSERT_EQ(sendto(client, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&ss), sizeof(sockaddr_in)),
              static_cast<ssize_t>(msg.size()));
    for (int turns = 0; turns < 100 && sink.got.size() < static_cast<std::size_t>(i + 1); ++turns) loop.run_once(10ms);
    char buf[64];
    loop.run_once(0ns);  // submit the echo prepared during the last turn
    ssize_t n = recv(client, buf, sizeof buf, 0);
    ASSERT_GT(n, 0) << strerror(errno);
    ASSERT_EQ(std::string(buf, std::max<ssize_t>(n, 0)), msg);
  }
  loop.run_once(0ns);
  EXPECT_EQ(s.stats().received.get(), static_cast<std::uint64_t>(kCount));
  EXPECT_EQ(s.stats().sent.get(), static_cast<std::uint64_t>(kCount));
  close(client);
}

}  // namespace
}  // namespace derpd::io
