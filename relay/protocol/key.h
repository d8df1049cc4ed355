// DERP identities: node keys (Curve25519, NaCl box) and the region mesh key.
//
// Text forms follow Tailscale's types/key exactly:
//   NodePublic   "nodekey:<64 hex>"   (written lowercase; hex digits parsed case-insensitively,
//                                     the "nodekey:" prefix is case-sensitive)
//   NodePrivate  "privkey:<64 hex>"   (same rules)
//   MeshKey      "<64 hex>"           (derper -mesh-psk-file: surrounding whitespace trimmed)
// derper's key file (-c) is the JSON object {"PrivateKey":"privkey:<hex>"}; parse_key_file() and
// format_key_file() convert it from/to text; reading and writing the file is the daemon's job.
//
// No implicit conversion from raw bytes: use from_raw(). NodePublic is hashable (keyed SipHash,
// random key per process) and totally ordered; NodePrivate and MeshKey compare only in constant
// time and wipe themselves on destruction.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "relay/base/result.h"

namespace derpd::protocol {

inline constexpr std::size_t kKeyLen = 32;

using RawKey = std::span<const std::byte, kKeyLen>;

enum class KeyError : std::uint8_t {
  kBadPrefix,   // missing or wrong "nodekey:" / "privkey:" prefix
  kBadLength,   // not exactly 64 hex digits
  kBadHex,      // a character that is not a hex digit
  kZeroKey,     // all-zero key where a real key is required
  kBadJson,     // key file is not valid JSON / not an object / wrong value type
  kMissingKey,  // key file has no (or a null) PrivateKey
};
std::string_view to_string(KeyError e);

// Initialises libsodium (idempotent, thread-safe). Call once at start-up; key generation and the
// handshake functions also call it. Returns false if libsodium cannot initialise.
bool crypto_init();

class NodePublic {
 public:
  static constexpr std::string_view kPrefix = "nodekey:";

  NodePublic() = default;  // the zero key (never a valid peer)
  static NodePublic from_raw(RawKey raw);
  static NodePublic from_raw(std::span<const std::uint8_t, kKeyLen> raw);
  // "nodekey:<64 hex>".
  static Result<NodePublic, KeyError> parse(std::string_view text);
  // "<64 hex>" without prefix (the Derp-Public-Key HTTP header, the meta cert's CN).
  static Result<NodePublic, KeyError> parse_untyped_hex(std::string_view hex);

  std::string to_string() const;    // "nodekey:<64 lowercase hex>"
  std::string untyped_hex() const;  // "<64 lowercase hex>"
  std::string short_string() const; // derper's log form "[abcde]" (first 5 base64 chars); "" if zero

  bool is_zero() const;
  RawKey bytes() const { return std::as_bytes(std::span<const std::uint8_t, kKeyLen>(k_)); }
  const std::uint8_t* data() const { return k_.data(); }
  std::size_t hash() const noexcept;

  friend bool operator==(const NodePublic&, const NodePublic&) = default;
  friend auto operator<=>(const NodePublic&, const NodePublic&) = default;

 private:
  std::array<std::uint8_t, kKeyLen> k_{};
};

class NodePrivate {
 public:
  static constexpr std::string_view kPrefix = "privkey:";

  NodePrivate() = default;  // the zero key (unusable)
  ~NodePrivate();
  NodePrivate(const NodePrivate&) = default;
  NodePrivate& operator=(const NodePrivate&) = default;

  // A fresh key from libsodium (crypto_box_keypair), clamped as Tailscale's key.NewNode does.
  static NodePrivate generate();
  static NodePrivate from_raw(RawKey raw);
  static NodePrivate from_raw(std::span<const std::uint8_t, kKeyLen> raw);
  // "privkey:<64 hex>".
  static Result<NodePrivate, KeyError> parse(std::string_view text);

  // "privkey:<64 lowercase hex>". Deliberately not named to_string: keep it out of logs.
  std::string to_text() const;
  // crypto_scalarmult_base. Precondition: !is_zero().
  NodePublic public_key() const;

  bool is_zero() const;                          // constant time
  bool equals(const NodePrivate& other) const;   // constant time
  const std::uint8_t* data() const { return k_.data(); }

 private:
  std::array<std::uint8_t, kKeyLen> k_{};
};

// Region mesh pre-shared key (derper -mesh-psk-file / TAILSCALE_DERPER_MESH_KEY).
class MeshKey {
 public:
  MeshKey() = default;  // zero = no mesh key
  ~MeshKey();
  MeshKey(const MeshKey&) = default;
  MeshKey& operator=(const MeshKey&) = default;

  static MeshKey from_raw(RawKey raw);
  // Exactly 64 hex digits (either case) after trimming surrounding ASCII whitespace.
  static Result<MeshKey, KeyError> parse(std::string_view text);

  std::string to_hex() const;  // 64 lowercase hex, the form Go puts in ClientInfo's meshKey
  bool is_zero() const;                      // constant time
  bool equals(const MeshKey& other) const;   // constant time (sodium_memcmp)
  const std::uint8_t* data() const { return k_.data(); }

 private:
  std::array<std::uint8_t, kKeyLen> k_{};
};

// derper's key file: a JSON object whose "PrivateKey" field (name matched case-insensitively, as
// Go's encoding/json does) holds "privkey:<hex>". Other fields are ignored. A missing, null or
// all-zero key is an error (kMissingKey / kZeroKey; derper would crash on it later).
Result<NodePrivate, KeyError> parse_key_file(std::string_view json);
// The exact bytes derper writes for a new key: {\n\t"PrivateKey": "privkey:<hex>"\n}
std::string format_key_file(const NodePrivate& key);

}  // namespace derpd::protocol

template <>
struct std::hash<derpd::protocol::NodePublic> {
  std::size_t operator()(const derpd::protocol::NodePublic& k) const noexcept { return k.hash(); }
};

template <>
struct fmt::formatter<derpd::protocol::NodePublic> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(const derpd::protocol::NodePublic& k, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(k.to_string(), ctx);
  }
};
