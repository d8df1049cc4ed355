// Big-endian loads and stores on byte spans. Callers check bounds first; these assert in debug.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace derpd {

using Bytes = std::span<const std::byte>;
using MutBytes = std::span<std::byte>;

inline std::uint16_t load_be16(const std::byte* p) {
  return static_cast<std::uint16_t>((std::to_integer<unsigned>(p[0]) << 8) | std::to_integer<unsigned>(p[1]));
}
inline std::uint32_t load_be32(const std::byte* p) {
  return (std::uint32_t{std::to_integer<std::uint8_t>(p[0])} << 24) |
         (std::uint32_t{std::to_integer<std::uint8_t>(p[1])} << 16) |
         (std::uint32_t{std::to_integer<std::uint8_t>(p[2])} << 8) | std::uint32_t{std::to_integer<std::uint8_t>(p[3])};
}
inline void store_be16(std::byte* p, std::uint16_t v) {
  p[0] = static_cast<std::byte>(v >> 8);
  p[1] = static_cast<std::byte>(v);
}
inline void store_be32(std::byte* p, std::uint32_t v) {
  p[0] = static_cast<std::byte>(v >> 24);
  p[1] = static_cast<std::byte>(v >> 16);
  p[2] = static_cast<std::byte>(v >> 8);
  p[3] = static_cast<std::byte>(v);
}

inline Bytes as_bytes(std::string_view s) { return std::as_bytes(std::span<const char>(s.data(), s.size())); }
inline std::string_view as_chars(Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

}  // namespace derpd
