// Micro-benchmarks of the DERP protocol hot paths: the server reads client frames from receive
// buffers (FrameReader + parse_client_message) and writes RecvPacket frames to destinations.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "relay/protocol/frame.h"
#include "relay/protocol/messages.h"

namespace derpd::protocol {
namespace {

NodePublic key_of(std::uint8_t b) {
  std::array<std::uint8_t, kKeyLen> raw{};
  raw.fill(b);
  return NodePublic::from_raw(std::span<const std::uint8_t, kKeyLen>(raw));
}

// A stream of `count` SendPacket frames with `packet` bytes each.
std::vector<std::byte> send_stream(std::size_t packet, std::size_t count) {
  std::vector<std::byte> pkt(packet, std::byte{0x5a});
  std::vector<std::byte> stream(count * frame_size(kKeyLen + packet));
  std::size_t at = 0;
  for (std::size_t i = 0; i < count; ++i) {
    at += write_send_packet(MutBytes(stream).subspan(at), key_of(static_cast<std::uint8_t>(i)), pkt);
  }
  return stream;
}

// Server receive path: the stream arrives in `chunk`-byte receive buffers, not aligned to frames;
// every frame is read and parsed. Args: packet size, receive-buffer size.
void BM_ReadSendPackets(benchmark::State& state) {
  const auto packet = static_cast<std::size_t>(state.range(0));
  const auto chunk = static_cast<std::size_t>(state.range(1));
  const std::size_t frames_per_pass = std::max<std::size_t>(1, (1 << 20) / frame_size(kKeyLen + packet));
  const std::vector<std::byte> stream = send_stream(packet, frames_per_pass);
  FrameReader reader(server_limits());
  std::size_t frames = 0;
  for (auto _ : state) {
    for (std::size_t pos = 0; pos < stream.size(); pos += chunk) {
      Bytes in(stream.data() + pos, std::min(chunk, stream.size() - pos));
      Frame f;
      while (reader.next(in, f) == FrameReader::Status::kFrame) {
        auto m = parse_client_message(f);
        benchmark::DoNotOptimize(m);
        ++frames;
      }
    }
  }
  if (reader.failed()) state.SkipWithError("reader failed");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * stream.size()));
  state.SetItemsProcessed(static_cast<std::int64_t>(frames));
}
BENCHMARK(BM_ReadSendPackets)
    ->ArgNames({"packet", "chunk"})
    ->Args({64, 16384})
    ->Args({1280, 4096})
    ->Args({1280, 16384})
    ->Args({1280, 65536})
    ->Args({16384, 16384})
    ->Args({65536, 16384});

// Server send path: one RecvPacket frame (header + source key + packet copy) into a send buffer.
void BM_WriteRecvPacket(benchmark::State& state) {
  const auto packet = static_cast<std::size_t>(state.range(0));
  const std::vector<std::byte> pkt(packet, std::byte{0x33});
  std::vector<std::byte> out(frame_size(kKeyLen + packet));
  const NodePublic src = key_of(7);
  for (auto _ : state) {
    std::size_t n = write_recv_packet(out, src, pkt);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * out.size()));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_WriteRecvPacket)->Arg(64)->Arg(1280)->Arg(65536);

// Scatter-gather form: only the 37-byte header + key is written; the packet is sent in place.
void BM_WriteRecvPacketHeader(benchmark::State& state) {
  std::array<std::byte, frame_size(kKeyLen)> out{};
  const NodePublic src = key_of(7);
  for (auto _ : state) {
    std::size_t n = write_recv_packet_header(out, src, 1280);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_WriteRecvPacketHeader);

// The relay step end to end: read a SendPacket from a receive buffer, write the RecvPacket.
void BM_RelayStep(benchmark::State& state) {
  const auto packet = static_cast<std::size_t>(state.range(0));
  const std::vector<std::byte> stream = send_stream(packet, 1);
  std::vector<std::byte> out(frame_size(kKeyLen + packet));
  FrameReader reader(server_limits());
  const NodePublic src = key_of(9);
  for (auto _ : state) {
    Bytes in(stream.data(), stream.size());
    Frame f;
    if (reader.next(in, f) != FrameReader::Status::kFrame) {
      state.SkipWithError("no frame");
      break;
    }
    auto m = parse_client_message(f);
    const auto* sp = m.ok() ? std::get_if<SendPacket>(&*m) : nullptr;
    if (sp == nullptr) {
      state.SkipWithError("not a SendPacket");
      break;
    }
    std::size_t n = write_recv_packet(out, src, sp->packet);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_RelayStep)->Arg(64)->Arg(1280);

}  // namespace
}  // namespace derpd::protocol
