// Micro-benchmarks of the relay logic (relay/server): packets per second from a SendPacket frame
// to RecvPacket bytes pulled for the destination, within one shard, across two shards (the SPSC
// ring hop, run in one thread so only CPU cost is measured), across two shards on two threads
// (throughput with the ring shared for real), and the bare ring for reference.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "relay/server/relay_shard.h"
#include "relay/server/spsc_ring.h"

namespace derpd::server {
namespace {

using protocol::NodePublic;

NodePublic key_homed(std::uint32_t id, WorkerId home, std::uint16_t workers) {
  std::array<std::uint8_t, 32> raw{};
  const std::uint32_t v = home + workers * (id + 1);
  raw[0] = static_cast<std::uint8_t>(v >> 24);
  raw[1] = static_cast<std::uint8_t>(v >> 16);
  raw[2] = static_cast<std::uint8_t>(v >> 8);
  raw[3] = static_cast<std::uint8_t>(v);
  raw[4] = static_cast<std::uint8_t>(id);
  return NodePublic::from_raw(std::span<const std::uint8_t, 32>(raw));
}

struct Bench {
  explicit Bench(std::uint16_t workers) : fabric(workers) {
    for (WorkerId w = 0; w < workers; ++w) {
      ShardConfig c;
      c.worker = w;
      shards.push_back(std::make_unique<RelayShard>(c, fabric));
    }
  }
  void pump() {
    for (int round = 0; round < 100; ++round) {
      std::size_t n = 0;
      for (auto& s : shards) n += s->poll_inbox(1 << 20);
      if (n == 0) return;
    }
  }
  ClientId connect(std::size_t shard, const NodePublic& k) {
    ClientParams p;
    p.key = k;
    const ClientId id = shards[shard]->client_registered(p, Nanos{1});
    pump();
    return id;
  }
  Fabric fabric;
  std::vector<std::unique_ptr<RelayShard>> shards;
};

std::vector<std::byte> packet_of(std::size_t n) {
  std::vector<std::byte> p(n, std::byte{0x5a});
  if (n > 0) p[0] = std::byte{0x01};
  return p;
}

// One packet per iteration: frame_received(SendPacket), take_outputs, pull into a send buffer.
// Arg: packet size.
void BM_ForwardOneShard(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  Bench b(1);
  const auto ka = key_homed(1, 0, 1), kb = key_homed(2, 0, 1);
  const ClientId a = b.connect(0, ka);
  const ClientId dst = b.connect(0, kb);
  RelayShard& s = *b.shards[0];
  const auto pkt = packet_of(size);
  std::vector<std::byte> out(1 << 17);
  ShardOutputs o;
  for (auto _ : state) {
    s.frame_received(a, protocol::SendPacket{kb, pkt}, Nanos{2});
    s.take_outputs(o);
    benchmark::DoNotOptimize(s.pull(dst, out));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
  if (s.counters().snapshot().packets_sent != static_cast<std::uint64_t>(state.iterations()))
    state.SkipWithError("packets were lost");
}
BENCHMARK(BM_ForwardOneShard)->Arg(100)->Arg(1280)->Arg(16384);

// Sender on shard 0, destination on shard 1, both driven from this thread: the cost of the hop
// (copy into the ring, copy out into the destination's pool) on top of the one-shard path.
// Arg: packet size; a batch of packets per poll, as a worker turn would (32, fewer for large
// packets so a batch fits in the ring).
int batch_for(std::size_t size) {
  const std::size_t fit = kDefaultRingBytes / (2 * (size + 128));
  return static_cast<int>(std::clamp<std::size_t>(fit, 1, 32));
}

void BM_ForwardTwoShards(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  Bench b(2);
  const auto ka = key_homed(1, 1, 2), kb = key_homed(2, 0, 2);
  const ClientId a = b.connect(0, ka);
  const ClientId dst = b.connect(1, kb);
  RelayShard& s0 = *b.shards[0];
  RelayShard& s1 = *b.shards[1];
  const auto pkt = packet_of(size);
  std::vector<std::byte> out(1 << 20);
  ShardOutputs o0, o1;
  const int kBatch = batch_for(size);
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) s0.frame_received(a, protocol::SendPacket{kb, pkt}, Nanos{2});
    s0.take_outputs(o0);
    s1.poll_inbox(1024);
    s1.take_outputs(o1);
    while (s1.has_output(dst)) benchmark::DoNotOptimize(s1.pull(dst, out));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kBatch));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kBatch * size));
  const auto t1 = s1.counters().snapshot();
  if (t1.packets_sent != static_cast<std::uint64_t>(state.iterations() * kBatch)) state.SkipWithError("packets were lost");
}
BENCHMARK(BM_ForwardTwoShards)->Arg(100)->Arg(1280)->Arg(16384);

// Two threads, as two workers: the sender thread feeds shard 0; the receiver thread polls shard 1
// and pulls. The sender backs off while the ring is more than half full (as a worker whose
// sockets stop delivering would), so the rate is what the hop sustains. Reports delivered
// packets per second and how many the full ring dropped (queue_tail) or the destination queue
// pushed out (queue_head). Arg: packet size.
void BM_ForwardTwoShardsThreaded(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  Bench b(2);
  const auto ka = key_homed(1, 1, 2), kb = key_homed(2, 0, 2);
  const ClientId a = b.connect(0, ka);
  const ClientId dst = b.connect(1, kb);
  RelayShard& s0 = *b.shards[0];
  RelayShard& s1 = *b.shards[1];
  const auto pkt = packet_of(size);
  std::atomic<bool> stop{false};
  std::thread receiver([&] {
    std::vector<std::byte> out(1 << 20);
    ShardOutputs o;
    while (!stop.load(std::memory_order_relaxed)) {
      if (s1.poll_inbox(32) == 0) std::this_thread::yield();  // no more than a queue's depth per pull
      s1.take_outputs(o);
      while (s1.has_output(dst)) s1.pull(dst, out);
    }
    do {
      while (s1.has_output(dst)) s1.pull(dst, out);
    } while (s1.poll_inbox(32) != 0);
  });
  ShardOutputs o0;
  constexpr int kBatch = 32;
  SpscByteRing& ring = b.fabric.ring(0, 1);
  for (auto _ : state) {
    while (ring.used_bytes() > ring.capacity() / 2) std::this_thread::yield();
    for (int i = 0; i < kBatch; ++i) s0.frame_received(a, protocol::SendPacket{kb, pkt}, Nanos{2});
    s0.take_outputs(o0);
  }
  stop = true;
  receiver.join();
  const auto t0 = s0.counters().snapshot();
  const auto t1 = s1.counters().snapshot();
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kBatch));
  state.counters["delivered"] = benchmark::Counter(static_cast<double>(t1.packets_sent));
  state.counters["delivered_rate"] =
      benchmark::Counter(static_cast<double>(t1.packets_sent), benchmark::Counter::kIsRate);
  state.counters["ring_full_drops"] = benchmark::Counter(static_cast<double>(t0.dropped(DropReason::kQueueTail)));
  state.counters["queue_head_drops"] = benchmark::Counter(static_cast<double>(t1.dropped(DropReason::kQueueHead)));
}
BENCHMARK(BM_ForwardTwoShardsThreaded)->Arg(1280)->UseRealTime();

// The bare ring: write one record of `size` bytes and read it back.
void BM_SpscRingRecord(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  SpscByteRing ring(kDefaultRingBytes);
  const auto pkt = packet_of(size);
  std::vector<std::byte> sink(size);
  for (auto _ : state) {
    ring.try_write(pkt);
    Bytes r = ring.front();
    std::memcpy(sink.data(), r.data(), r.size());
    ring.pop();
    benchmark::DoNotOptimize(sink.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
}
BENCHMARK(BM_SpscRingRecord)->Arg(100)->Arg(1280);

}  // namespace
}  // namespace derpd::server
