// The packets derp_load sends through a DERP relay: who sent it, its sequence number, when it was
// (meant to be) sent, and whether it counts for the measurement. Sender and receiver are the same
// process, so one CLOCK_MONOTONIC timestamp gives the one-way latency.
//
// Layout (big endian), at least kPayloadMin bytes:
//   [0..4)    run tag: 0xD1 + 3 random bytes per run (never the disco prefix "TS\xf0\x9f")
//   [4..8)    sender connection index
//   [8..16)   sequence number of this sender (0, 1, 2, ...)
//   [16..24)  send timestamp, ns of CLOCK_MONOTONIC (open loop: the scheduled time)
//   [24]      phase: 0 warm-up, 1 measured
//   [25..n-8) zero
//   [n-8..n)  sequence number again: a truncated or corrupted tail shows
// No I/O, no allocation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "relay/base/bytes.h"

namespace derpd::bench {

inline constexpr std::size_t kPayloadMin = 33;
inline constexpr std::byte kRunTagFirst{0xD1};

struct PayloadHeader {
  std::uint32_t run_tag = 0;
  std::uint32_t sender = 0;
  std::uint64_t seq = 0;
  std::uint64_t sent_ns = 0;
  std::uint8_t phase = 0;
};

inline void store_be64(std::byte* p, std::uint64_t v) {
  store_be32(p, static_cast<std::uint32_t>(v >> 32));
  store_be32(p + 4, static_cast<std::uint32_t>(v));
}
inline std::uint64_t load_be64(const std::byte* p) {
  return (std::uint64_t{load_be32(p)} << 32) | load_be32(p + 4);
}

// Fills out[0, out.size()) with a packet; out.size() >= kPayloadMin (else nothing is written and
// false is returned).
inline bool write_payload(MutBytes out, const PayloadHeader& h) {
  if (out.size() < kPayloadMin) return false;
  std::byte* p = out.data();
  store_be32(p, h.run_tag);
  store_be32(p + 4, h.sender);
  store_be64(p + 8, h.seq);
  store_be64(p + 16, h.sent_ns);
  p[24] = std::byte{h.phase};
  std::memset(p + 25, 0, out.size() - 25 - 8);
  store_be64(p + out.size() - 8, h.seq);
  return true;
}

enum class PayloadVerdict : std::uint8_t { kOk, kTooShort, kForeign, kCorrupt };

// Reads a received packet. kForeign: not from this run (tag); kCorrupt: the tail does not repeat
// the sequence number or the phase is unknown.
inline PayloadVerdict read_payload(Bytes in, std::uint32_t run_tag, PayloadHeader& h) {
  if (in.size() < kPayloadMin) return PayloadVerdict::kTooShort;
  const std::byte* p = in.data();
  h.run_tag = load_be32(p);
  if (h.run_tag != run_tag) return PayloadVerdict::kForeign;
  h.sender = load_be32(p + 4);
  h.seq = load_be64(p + 8);
  h.sent_ns = load_be64(p + 16);
  h.phase = std::to_integer<std::uint8_t>(p[24]);
  if (h.phase > 1 || load_be64(p + in.size() - 8) != h.seq) return PayloadVerdict::kCorrupt;
  return PayloadVerdict::kOk;
}

}  // namespace derpd::bench
