// Byte helpers for the protocol tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string_view>
#include <vector>

#include "relay/base/bytes.h"
#include "relay/protocol/key.h"

namespace derpd::protocol::testing {

using Buf = std::vector<std::byte>;

inline Buf bytes(std::initializer_list<int> v) {
  Buf b;
  for (int x : v) b.push_back(static_cast<std::byte>(x));
  return b;
}

inline Buf from_string(std::string_view s) {
  Buf b;
  for (char c : s) b.push_back(static_cast<std::byte>(c));
  return b;
}

inline Buf filled(std::size_t n, int value) { return Buf(n, static_cast<std::byte>(value)); }

inline Buf cat(std::initializer_list<Bytes> parts) {
  Buf b;
  for (Bytes p : parts) b.insert(b.end(), p.begin(), p.end());
  return b;
}

inline Buf header(int type, std::uint32_t len) {
  return bytes({type, static_cast<int>(len >> 24), static_cast<int>((len >> 16) & 0xff), static_cast<int>((len >> 8) & 0xff),
                static_cast<int>(len & 0xff)});
}

// A recognisable public key: every byte `b`.
inline NodePublic key_of(int b) {
  const Buf raw = filled(kKeyLen, b);
  return NodePublic::from_raw(std::span<const std::byte, kKeyLen>(raw.data(), kKeyLen));
}

inline Bytes view(const Buf& b) { return Bytes(b.data(), b.size()); }

}  // namespace derpd::protocol::testing
