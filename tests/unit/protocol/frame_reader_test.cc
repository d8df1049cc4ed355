#include <cstdint>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "relay/protocol/frame.h"
#include "tests/unit/protocol/alloc_counter.h"
#include "tests/unit/protocol/test_util.h"

namespace derpd::protocol {
namespace {

using testing::AllocationScope;
using testing::Buf;
using testing::bytes;
using testing::cat;
using testing::header;
using testing::view;

struct Expected {
  FrameType type;
  std::uint32_t length;
  Buf payload;  // empty for skipped frames
  bool skipped;
};

struct Got {
  FrameType type;
  std::uint32_t length;
  Buf payload;
  bool skipped;
};

// Feeds `stream` split at the given chunk sizes (cycled), collecting copies of every frame.
std::vector<Got> read_all(FrameReader& r, const Buf& stream, const std::vector<std::size_t>& chunks,
                          FrameReader::Status* last = nullptr) {
  std::vector<Got> out;
  std::size_t pos = 0;
  std::size_t ci = 0;
  while (pos < stream.size()) {
    const std::size_t n = std::min(chunks[ci++ % chunks.size()], stream.size() - pos);
    // Each chunk lives in its own buffer, which is destroyed after use, as a recycled receive
    // buffer would be: views must not outlive it.
    Buf chunk(stream.begin() + static_cast<std::ptrdiff_t>(pos), stream.begin() + static_cast<std::ptrdiff_t>(pos + n));
    pos += n;
    Bytes in(chunk.data(), chunk.size());
    for (;;) {
      Frame f;
      const auto st = r.next(in, f);
      if (last) *last = st;
      if (st == FrameReader::Status::kError) return out;
      if (st == FrameReader::Status::kNeedMore) {
        EXPECT_TRUE(in.empty());
        break;
      }
      out.push_back(Got{f.type, f.length, Buf(f.payload.begin(), f.payload.end()), f.skipped});
    }
  }
  return out;
}

// A server-side stream mixing every frame a client sends, including ones spanning any chunking:
// packets of 0..64 KiB, empty frames, unknown types that are skipped.
struct Stream {
  Buf bytes;
  std::vector<Expected> frames;
};

Stream make_server_stream(std::uint32_t seed) {
  std::mt19937 rng(seed);
  Stream s;
  auto add = [&](FrameType t, Buf payload, bool skipped) {
    const Buf h = header(static_cast<int>(t), static_cast<std::uint32_t>(payload.size()));
    s.bytes.insert(s.bytes.end(), h.begin(), h.end());
    s.bytes.insert(s.bytes.end(), payload.begin(), payload.end());
    s.frames.push_back(Expected{t, static_cast<std::uint32_t>(payload.size()), skipped ? Buf{} : payload, skipped});
  };
  auto random_bytes = [&](std::size_t n) {
    Buf b(n);
    for (auto& x : b) x = static_cast<std::byte>(rng());
    return b;
  };
  const std::size_t sizes[] = {32, 33, 100, 1280, 1500, 4000, 32 + 65536};
  for (int i = 0; i < 60; ++i) {
    switch (rng() % 7) {
      case 0: add(FrameType::kSendPacket, random_bytes(sizes[rng() % std::size(sizes)]), false); break;
      case 1: add(FrameType::kForwardPacket, random_bytes(64 + rng() % 2000), false); break;
      case 2: add(FrameType::kNotePreferred, bytes({1}), false); break;
      case 3: add(FrameType::kWatchConns, {}, false); break;
      case 4: add(FrameType::kPing, random_bytes(8 + rng() % 993), false); break;
      case 5: add(FrameType::kPong, random_bytes(rng() % 3000), true); break;        // skipped
      case 6: add(static_cast<FrameType>(0x42), random_bytes(rng() % 70000), true); break;  // unknown
    }
  }
  return s;
}

void expect_same(const std::vector<Got>& got, const std::vector<Expected>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(got[i].type, want[i].type);
    EXPECT_EQ(got[i].length, want[i].length);
    EXPECT_EQ(got[i].skipped, want[i].skipped);
    EXPECT_TRUE(got[i].payload == want[i].payload);
  }
}

TEST(FrameReader, WholeStreamInOneChunk) {
  const Stream s = make_server_stream(1);
  FrameReader r(server_limits());
  expect_same(read_all(r, s.bytes, {s.bytes.size()}), s.frames);
  EXPECT_TRUE(r.idle());
  EXPECT_EQ(r.spill_capacity(), 0u);  // nothing spanned a chunk: nothing copied
}

TEST(FrameReader, OneByteAtATime) {
  const Stream s = make_server_stream(2);
  FrameReader r(server_limits());
  expect_same(read_all(r, s.bytes, {1}), s.frames);
  EXPECT_TRUE(r.idle());
  // The spill buffer never grew past the largest frame delivered.
  EXPECT_LE(r.spill_capacity(), kKeyLen + kMaxPacketSize);
}

TEST(FrameReader, RandomChunkingsSeeded) {
  for (std::uint32_t seed = 10; seed < 40; ++seed) {
    SCOPED_TRACE(seed);
    const Stream s = make_server_stream(seed);
    std::mt19937 rng(seed * 7919u);
    std::vector<std::size_t> chunks;
    for (int i = 0; i < 50; ++i) {
      // Mostly small, sometimes header-splitting, sometimes large.
      const std::size_t choice = rng() % 4;
      chunks.push_back(choice == 0 ? 1 + rng() % 6 : choice == 1 ? 1 + rng() % 1500 : choice == 2 ? 1 + rng() % 16384 : 1 + rng() % 80000);
    }
    FrameReader r(server_limits());
    expect_same(read_all(r, s.bytes, chunks), s.frames);
    EXPECT_TRUE(r.idle());
  }
}

TEST(FrameReader, FrameInsideChunkIsAViewNotACopy) {
  const Buf stream = cat({view(header(0x04, 40)), view(Buf(40, std::byte{7})), view(header(0x06, 0))});
  FrameReader r(server_limits());
  Bytes in(stream.data(), stream.size());
  Frame f;
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kFrame);
  EXPECT_EQ(f.type, FrameType::kSendPacket);
  EXPECT_EQ(f.payload.data(), stream.data() + 5);  // aliases the input
  EXPECT_EQ(f.payload.size(), 40u);
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kFrame);
  EXPECT_EQ(f.type, FrameType::kKeepAlive);  // skipped on the server
  EXPECT_TRUE(f.skipped);
  EXPECT_EQ(r.next(in, f), FrameReader::Status::kNeedMore);
  EXPECT_TRUE(in.empty());
}

TEST(FrameReader, SplitHeaderWithPayloadInNextChunkIsStillAView) {
  const Buf a = bytes({0x04, 0, 0});
  const Buf b = cat({view(bytes({0, 33})), view(Buf(33, std::byte{9}))});
  FrameReader r(server_limits());
  Frame f;
  Bytes in(a.data(), a.size());
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kNeedMore);
  EXPECT_FALSE(r.idle());
  in = Bytes(b.data(), b.size());
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kFrame);
  EXPECT_EQ(f.length, 33u);
  EXPECT_EQ(f.payload.data(), b.data() + 2);
  EXPECT_EQ(r.spill_capacity(), 0u);
}

TEST(FrameReader, SpanningFrameIsCopiedAndBufferReleasable) {
  const Buf payload(1000, std::byte{3});
  const Buf stream = cat({view(header(0x04, 1000)), view(payload)});
  FrameReader r(server_limits());
  Frame f;
  Bytes in(stream.data(), 600);
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kNeedMore);
  EXPECT_EQ(r.spilled(), 595u);
  in = Bytes(stream.data() + 600, stream.size() - 600);
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kFrame);
  EXPECT_TRUE(Buf(f.payload.begin(), f.payload.end()) == payload);
  EXPECT_LE(r.spill_capacity(), 1000u);  // bounded by the frame's length
  r.release_memory();
  EXPECT_EQ(r.spill_capacity(), 0u);
}

TEST(FrameReader, ReleaseMemoryKeepsAPendingPartialFrame) {
  const Buf stream = cat({view(header(0x04, 100)), view(Buf(100, std::byte{5}))});
  FrameReader r(server_limits());
  Frame f;
  Bytes in(stream.data(), 50);
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kNeedMore);
  r.release_memory();  // must not drop the 45 buffered bytes
  in = Bytes(stream.data() + 50, stream.size() - 50);
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kFrame);
  EXPECT_TRUE(Buf(f.payload.begin(), f.payload.end()) == Buf(100, std::byte{5}));
}

// --- limits and hostile lengths -----------------------------------------------------------

TEST(FrameReader, OversizeClaimsAreRejectedWithoutAllocating) {
  for (const FrameLimits* limits : {&server_limits(), &server_handshake_limits(), &client_limits()}) {
    for (int type : {0x04, 0x02, 0x05, 0x42, 0x0a, 0x12}) {
      SCOPED_TRACE(type);
      const Buf h = header(type, 0xFFFFFFFFu);
      FrameReader r(*limits);
      Frame f;
      Bytes in(h.data(), h.size());
      AllocationScope scope;
      const auto st = r.next(in, f);
      const std::size_t allocations = scope.allocations();
      EXPECT_EQ(st, FrameReader::Status::kError);
      EXPECT_EQ(allocations, 0u);
      EXPECT_EQ(r.spill_capacity(), 0u);
      EXPECT_TRUE(r.error() == FrameError::kFrameTooLarge || r.error() == FrameError::kUnexpectedFrame);
      // Sticky: the connection is done.
      Bytes more(h.data(), h.size());
      EXPECT_EQ(r.next(more, f), FrameReader::Status::kError);
    }
  }
}

TEST(FrameReader, LimitIsInclusiveAndOneMoreIsAnError) {
  struct Case {
    int type;
    std::uint32_t ok_len;
  };
  for (const Case c : {Case{0x04, 32 + 65536}, Case{0x0a, 64 + 65536}, Case{0x07, 1}, Case{0x10, 0}, Case{0x11, 32},
                       Case{0x12, 1000}, Case{0x42, kMaxFrameSize}, Case{0x13, kMaxFrameSize}}) {
    SCOPED_TRACE(c.type);
    {
      const Buf h = header(c.type, c.ok_len);
      FrameReader r(server_limits());
      Frame f;
      Bytes in(h.data(), h.size());
      EXPECT_NE(r.next(in, f), FrameReader::Status::kError);
    }
    {
      const Buf h = header(c.type, c.ok_len + 1);
      FrameReader r(server_limits());
      Frame f;
      Bytes in(h.data(), h.size());
      EXPECT_EQ(r.next(in, f), FrameReader::Status::kError);
      EXPECT_EQ(r.error(), FrameError::kFrameTooLarge);
    }
  }
}

TEST(FrameReader, ClaimedLengthIsNotPreallocated) {
  // A 256 KiB ClientInfo claim followed by a trickle: memory follows the bytes that arrived.
  const Buf h = header(0x02, kMaxClientInfoLen);
  const Buf some(100, std::byte{1});
  FrameReader r(server_handshake_limits());
  Frame f;
  Bytes in(h.data(), h.size());
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kNeedMore);
  in = Bytes(some.data(), some.size());
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kNeedMore);
  EXPECT_EQ(r.spilled(), 100u);
  EXPECT_LE(r.spill_capacity(), 200u);
}

TEST(FrameReader, SkippedFramesAreNeverBuffered) {
  // An unknown type of 1 MiB, streamed in 4 KiB chunks: reported once at its header, no memory.
  const Buf h = header(0x7f, kMaxFrameSize);
  const Buf chunk(4096, std::byte{0xaa});
  FrameReader r(server_limits());
  Frame f;
  AllocationScope scope;
  Bytes in(h.data(), h.size());
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kFrame);
  EXPECT_TRUE(f.skipped);
  EXPECT_EQ(f.length, kMaxFrameSize);
  EXPECT_EQ(r.next(in, f), FrameReader::Status::kNeedMore);
  for (std::size_t sent = 0; sent < kMaxFrameSize; sent += chunk.size()) {
    in = Bytes(chunk.data(), chunk.size());
    ASSERT_EQ(r.next(in, f), FrameReader::Status::kNeedMore);
  }
  EXPECT_TRUE(r.idle());
  EXPECT_EQ(scope.allocations(), 0u);
}

TEST(FrameReader, SteadyStateIsAllocationFree) {
  const Stream s = make_server_stream(77);
  FrameReader r(server_limits());
  // Warm-up pass grows the spill buffer to the largest spanning frame; later passes reuse it.
  const std::vector<std::size_t> chunks = {1500, 3, 9000, 64, 70000};
  auto consume = [&] {
    std::size_t frames = 0;
    std::size_t pos = 0;
    std::size_t ci = 0;
    while (pos < s.bytes.size()) {
      const std::size_t n = std::min(chunks[ci++ % chunks.size()], s.bytes.size() - pos);
      Bytes in(s.bytes.data() + pos, n);
      pos += n;
      Frame f;
      FrameReader::Status st;
      while ((st = r.next(in, f)) == FrameReader::Status::kFrame) ++frames;
      if (st == FrameReader::Status::kError) return std::size_t{0};
    }
    return frames;
  };
  ASSERT_EQ(consume(), s.frames.size());
  AllocationScope scope;
  const std::size_t frames = consume();
  const std::size_t allocations = scope.allocations();
  EXPECT_EQ(frames, s.frames.size());
  EXPECT_EQ(allocations, 0u);
}

TEST(FrameReader, HandshakeLimitsRejectAnythingButTheExpectedFrame) {
  {
    const Buf h = header(0x04, 40);  // SendPacket before ClientInfo
    FrameReader r(server_handshake_limits());
    Frame f;
    Bytes in(h.data(), h.size());
    EXPECT_EQ(r.next(in, f), FrameReader::Status::kError);
    EXPECT_EQ(r.error(), FrameError::kUnexpectedFrame);
  }
  {
    const Buf h = header(0x01, kMaxServerKeyLen + 1);  // the Go client reads at most 1 KiB
    FrameReader r(client_handshake_limits());
    Frame f;
    Bytes in(h.data(), h.size());
    EXPECT_EQ(r.next(in, f), FrameReader::Status::kError);
    EXPECT_EQ(r.error(), FrameError::kFrameTooLarge);
  }
  {
    const Buf h = header(0x06, 0);  // KeepAlive before ServerKey
    FrameReader r(client_handshake_limits());
    Frame f;
    Bytes in(h.data(), h.size());
    EXPECT_EQ(r.next(in, f), FrameReader::Status::kError);
    EXPECT_EQ(r.error(), FrameError::kUnexpectedFrame);
  }
}

TEST(FrameReader, LimitsSwitchBetweenFramesOfOneChunk) {
  // Fast start: ClientInfo and the first SendPacket arrive in one read.
  const Buf stream = cat({view(header(0x02, 80)), view(Buf(80, std::byte{1})), view(header(0x04, 32)),
                          view(Buf(32, std::byte{2}))});
  FrameReader r(server_handshake_limits());
  Bytes in(stream.data(), stream.size());
  Frame f;
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kFrame);
  EXPECT_EQ(f.type, FrameType::kClientInfo);
  r.set_limits(server_limits());
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kFrame);
  EXPECT_EQ(f.type, FrameType::kSendPacket);
  EXPECT_EQ(r.next(in, f), FrameReader::Status::kNeedMore);
}

TEST(FrameReader, ClientRejectsFramesOverOneMiB) {
  // derp_client.go: "unexpectedly large frame" for n > 1<<20, any type.
  for (int type : {0x05, 0x14, 0x01, 0x7e}) {
    const Buf h = header(type, kMaxFrameSize + 1);
    FrameReader r(client_limits());
    Frame f;
    Bytes in(h.data(), h.size());
    EXPECT_EQ(r.next(in, f), FrameReader::Status::kError);
    EXPECT_EQ(r.error(), FrameError::kFrameTooLarge);
  }
}

TEST(FrameReader, GoReadFrameHeaderVectors) {
  // derp_test.go TestReadFrameHeader: {04 00 00 04 00} -> SendPacket, 1024.
  const Buf stream = cat({view(bytes({0x04, 0x00, 0x00, 0x04, 0x00})), view(Buf(1024, std::byte{0}))});
  FrameReader r(server_limits());
  Bytes in(stream.data(), stream.size());
  Frame f;
  ASSERT_EQ(r.next(in, f), FrameReader::Status::kFrame);
  EXPECT_EQ(f.type, FrameType::kSendPacket);
  EXPECT_EQ(f.length, 1024u);
}

}  // namespace
}  // namespace derpd::protocol
