// Two shards on two threads, as two workers: every packet crosses the SPSC ring for real and
// arrives intact and in order. Bounded in count and time.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "tests/unit/server/harness.h"

namespace derpd::server::test {
namespace {

TEST(ShardThreads, PacketsCrossWorkersIntactAndInOrder) {
  Node node(2);
  const auto ka = key_homed(1, 1, 2), kb = key_homed(2, 0, 2);
  const ClientId a = node.connect(0, ka);
  const ClientId b = node.connect(1, kb);
  constexpr std::uint32_t kPackets = 50000;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::atomic<bool> sender_done{false};
  std::atomic<bool> timed_out{false};
  RelayShard& s0 = node[0];
  RelayShard& s1 = node[1];
  SpscByteRing& ring = node.fabric.ring(0, 1);

  std::thread sender([&] {
    ShardOutputs o;
    std::vector<std::byte> pkt(300);
    for (std::uint32_t i = 0; i < kPackets; ++i) {
      // Back off while the ring is half full, as a worker whose receivers have nothing to read.
      while (ring.used_bytes() > ring.capacity() / 2) {
        if (std::chrono::steady_clock::now() > deadline) {
          timed_out = true;
          sender_done = true;
          return;
        }
        std::this_thread::yield();
      }
      pkt[0] = std::byte{0x01};
      std::memcpy(pkt.data() + 1, &i, sizeof i);
      for (std::size_t k = 5; k < pkt.size(); ++k) pkt[k] = static_cast<std::byte>((i + k) & 0xff);
      s0.frame_received(a, protocol::SendPacket{kb, pkt}, node.now);
      s0.take_outputs(o);
    }
    sender_done = true;
  });

  // Receiver: this thread owns shard 1.
  std::vector<std::byte> stream;
  std::vector<std::byte> buf(1 << 16);
  ShardOutputs o;
  for (;;) {
    const bool done = sender_done.load();
    const std::size_t n = s1.poll_inbox(32);
    s1.take_outputs(o);
    while (s1.has_output(b)) {
      const std::size_t k = s1.pull(b, buf);
      stream.insert(stream.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(k));
    }
    if (done && n == 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      timed_out = true;
      break;
    }
    if (n == 0) std::this_thread::yield();
  }
  sender.join();
  ASSERT_FALSE(timed_out);

  const auto rx = decode(stream);
  ASSERT_EQ(rx.size(), kPackets);
  std::uint32_t bad = 0;
  for (std::uint32_t i = 0; i < kPackets; ++i) {
    std::uint32_t seq;
    std::memcpy(&seq, rx[i].packet.data() + 1, sizeof seq);
    if (seq != i || rx[i].key != ka) ++bad;
    for (std::size_t k = 5; k < rx[i].packet.size(); ++k)
      if (rx[i].packet[k] != static_cast<std::byte>((i + k) & 0xff)) {
        ++bad;
        break;
      }
  }
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(node.totals().dropped_total(), 0u);
}

}  // namespace
}  // namespace derpd::server::test
