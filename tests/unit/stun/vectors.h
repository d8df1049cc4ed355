// Test fixtures: RFC 5769 test vectors and small helpers shared by the STUN tests.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "relay/base/bytes.h"
#include "stun/message.h"

namespace derpd::stun::test {

// The transaction id 01 02 .. 0c (after the magic cookie).
inline TxId txid_1_to_12() {
  std::array<std::byte, TxId::kSize> id{};
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = std::byte(i + 1);
  return TxId::from_bytes(id);
}

// "0001 0058 ..." -> bytes; spaces and newlines ignored.
inline std::vector<std::byte> hex(std::string_view s) {
  std::vector<std::byte> out;
  int hi = -1;
  for (char c : s) {
    int v;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      v = c - 'A' + 10;
    } else {
      continue;
    }
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<std::byte>(hi * 16 + v));
      hi = -1;
    }
  }
  return out;
}

// RFC 5769 §2.1: Binding request with SOFTWARE "STUN test client", PRIORITY, ICE-CONTROLLED,
// USERNAME "evtj:h6vY" (padded with spaces), MESSAGE-INTEGRITY, FINGERPRINT.
inline constexpr std::string_view kRfc5769Request =
    "00010058 2112a442 b7e7a701 bc34d686 fa87dfae"
    "80220010 5354554e 20746573 7420636c 69656e74"
    "00240004 6e0001ff"
    "80290008 932ff9b1 51263b36"
    "00060009 6576746a 3a683676 59202020"
    "00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2"
    "80280004 e57a3bcf";

// RFC 5769 §2.2: success response, SOFTWARE "test vector", XOR-MAPPED-ADDRESS 192.0.2.1:32853,
// MESSAGE-INTEGRITY, FINGERPRINT.
inline constexpr std::string_view kRfc5769ResponseV4 =
    "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae"
    "8022000b 74657374 20766563 746f7220"
    "00200008 0001a147 e112a643"
    "00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7"
    "80280004 c07d4c96";

// RFC 5769 §2.3: as above with XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853.
inline constexpr std::string_view kRfc5769ResponseV6 =
    "01010048 2112a442 b7e7a701 bc34d686 fa87dfae"
    "8022000b 74657374 20766563 746f7220"
    "00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9"
    "00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41"
    "80280004 c8fb0b4c";

inline constexpr std::string_view kRfc5769TxId = "b7e7a701 bc34d686 fa87dfae";

}  // namespace derpd::stun::test
