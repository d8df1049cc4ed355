// user_data encoding for io_uring submissions: op | slot | generation | aux.
//
//   bits 56..63  op          what the submission was (handler-defined, 0 reserved)
//   bits 32..55  slot        index into the Loop's handler arena (16M handlers per worker)
//   bits 16..31  generation  of that slot when submitted; a completion whose generation differs
//                            from the slot's current one is stale (its owner was closed) and is
//                            dropped without touching the new owner
//   bits  0..15  aux         handler-defined (e.g. which send buffer of a socket)
#pragma once

#include <cstdint>

namespace derpd::io {

struct UserData {
  std::uint8_t op = 0;
  std::uint32_t slot = 0;  // 24 bits used
  std::uint16_t gen = 0;
  std::uint16_t aux = 0;

  static constexpr std::uint32_t kMaxSlots = 1u << 24;

  constexpr std::uint64_t encode() const {
    return (std::uint64_t{op} << 56) | (std::uint64_t{slot & 0xFFFFFF} << 32) | (std::uint64_t{gen} << 16) | aux;
  }
  static constexpr UserData decode(std::uint64_t v) {
    return UserData{static_cast<std::uint8_t>(v >> 56), static_cast<std::uint32_t>((v >> 32) & 0xFFFFFF),
                    static_cast<std::uint16_t>(v >> 16), static_cast<std::uint16_t>(v)};
  }
};

// Reserved user_data for submissions whose completion is ignored (e.g. cancellations).
inline constexpr std::uint64_t kIgnoredUserData = 0;

}  // namespace derpd::io
