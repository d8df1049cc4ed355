#include "relay/protocol/key.h"

#include <sodium.h>

#include <cstring>

#include "relay/protocol/detail/json_fields.h"

namespace derpd::protocol {
namespace {

static_assert(crypto_box_PUBLICKEYBYTES == kKeyLen && crypto_box_SECRETKEYBYTES == kKeyLen);
static_assert(crypto_scalarmult_BYTES == kKeyLen && crypto_scalarmult_SCALARBYTES == kKeyLen);

constexpr std::size_t kHexLen = 2 * kKeyLen;

Status<KeyError> decode_hex(std::string_view hex, std::array<std::uint8_t, kKeyLen>& out) {
  if (hex.size() != kHexLen) return Err{KeyError::kBadLength};
  std::size_t n = 0;
  if (sodium_hex2bin(out.data(), out.size(), hex.data(), hex.size(), nullptr, &n, nullptr) != 0 || n != kKeyLen) {
    sodium_memzero(out.data(), out.size());
    return Err{KeyError::kBadHex};
  }
  return {};
}

Status<KeyError> decode_prefixed(std::string_view text, std::string_view prefix,
                                 std::array<std::uint8_t, kKeyLen>& out) {
  if (text.substr(0, prefix.size()) != prefix) return Err{KeyError::kBadPrefix};
  return decode_hex(text.substr(prefix.size()), out);
}

std::string encode_hex(std::string_view prefix, const std::array<std::uint8_t, kKeyLen>& k) {
  char hex[kHexLen + 1];
  sodium_bin2hex(hex, sizeof hex, k.data(), k.size());
  std::string s;
  s.reserve(prefix.size() + kHexLen);
  s.append(prefix);
  s.append(hex, kHexLen);
  sodium_memzero(hex, sizeof hex);
  return s;
}

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// The key that keys NodePublic::hash(): random per process, so peers cannot pick colliding keys.
const unsigned char* hash_key() {
  static const auto key = [] {
    std::array<unsigned char, crypto_shorthash_KEYBYTES> k{};
    (void)crypto_init();
    crypto_shorthash_keygen(k.data());
    return k;
  }();
  return key.data();
}

}  // namespace

std::string_view to_string(KeyError e) {
  switch (e) {
    case KeyError::kBadPrefix: return "bad_prefix";
    case KeyError::kBadLength: return "bad_length";
    case KeyError::kBadHex: return "bad_hex";
    case KeyError::kZeroKey: return "zero_key";
    case KeyError::kBadJson: return "bad_json";
    case KeyError::kMissingKey: return "missing_key";
  }
  return "unknown";
}

bool crypto_init() { return sodium_init() >= 0; }

// --- NodePublic ---------------------------------------------------------------------------

NodePublic NodePublic::from_raw(RawKey raw) {
  NodePublic k;
  std::memcpy(k.k_.data(), raw.data(), kKeyLen);
  return k;
}

NodePublic NodePublic::from_raw(std::span<const std::uint8_t, kKeyLen> raw) { return from_raw(std::as_bytes(raw)); }

Result<NodePublic, KeyError> NodePublic::parse(std::string_view text) {
  NodePublic k;
  if (auto s = decode_prefixed(text, kPrefix, k.k_); !s) return Err{s.error()};
  return k;
}

Result<NodePublic, KeyError> NodePublic::parse_untyped_hex(std::string_view hex) {
  NodePublic k;
  if (auto s = decode_hex(hex, k.k_); !s) return Err{s.error()};
  return k;
}

std::string NodePublic::to_string() const { return encode_hex(kPrefix, k_); }
std::string NodePublic::untyped_hex() const { return encode_hex({}, k_); }

std::string NodePublic::short_string() const {
  if (is_zero()) return {};
  // base64 of the first 4 bytes is 8 characters ("xxxxxx=="); derper shows the first 5.
  char b64[sodium_base64_ENCODED_LEN(4, sodium_base64_VARIANT_ORIGINAL)];
  sodium_bin2base64(b64, sizeof b64, k_.data(), 4, sodium_base64_VARIANT_ORIGINAL);
  std::string s = "[";
  s.append(b64, 5);
  s.push_back(']');
  return s;
}

bool NodePublic::is_zero() const { return sodium_is_zero(k_.data(), k_.size()) == 1; }

std::size_t NodePublic::hash() const noexcept {
  std::uint64_t h = 0;
  static_assert(crypto_shorthash_BYTES == sizeof h);
  unsigned char out[crypto_shorthash_BYTES];
  crypto_shorthash(out, k_.data(), k_.size(), hash_key());
  std::memcpy(&h, out, sizeof h);
  return static_cast<std::size_t>(h);
}

// --- NodePrivate --------------------------------------------------------------------------

NodePrivate::~NodePrivate() { sodium_memzero(k_.data(), k_.size()); }

NodePrivate NodePrivate::generate() {
  (void)crypto_init();
  NodePrivate k;
  std::array<std::uint8_t, kKeyLen> pub{};
  crypto_box_keypair(pub.data(), k.k_.data());
  // Clamp like key.NewNode so the stored bytes match what Go would write; the scalar (and so the
  // public key) is unchanged because X25519 clamps anyway.
  k.k_[0] &= 248;
  k.k_[31] = static_cast<std::uint8_t>((k.k_[31] & 127) | 64);
  return k;
}

NodePrivate NodePrivate::from_raw(RawKey raw) {
  NodePrivate k;
  std::memcpy(k.k_.data(), raw.data(), kKeyLen);
  return k;
}

NodePrivate NodePrivate::from_raw(std::span<const std::uint8_t, kKeyLen> raw) { return from_raw(std::as_bytes(raw)); }

Result<NodePrivate, KeyError> NodePrivate::parse(std::string_view text) {
  NodePrivate k;
  if (auto s = decode_prefixed(text, kPrefix, k.k_); !s) return Err{s.error()};
  return k;
}

std::string NodePrivate::to_text() const { return encode_hex(kPrefix, k_); }

NodePublic NodePrivate::public_key() const {
  std::array<std::uint8_t, kKeyLen> pub{};
  crypto_scalarmult_base(pub.data(), k_.data());
  return NodePublic::from_raw(std::span<const std::uint8_t, kKeyLen>(pub));
}

bool NodePrivate::is_zero() const { return sodium_is_zero(k_.data(), k_.size()) == 1; }
bool NodePrivate::equals(const NodePrivate& other) const {
  return sodium_memcmp(k_.data(), other.k_.data(), kKeyLen) == 0;
}

// --- MeshKey ------------------------------------------------------------------------------

MeshKey::~MeshKey() { sodium_memzero(k_.data(), k_.size()); }

MeshKey MeshKey::from_raw(RawKey raw) {
  MeshKey k;
  std::memcpy(k.k_.data(), raw.data(), kKeyLen);
  return k;
}

Result<MeshKey, KeyError> MeshKey::parse(std::string_view text) {
  while (!text.empty() && is_ascii_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_ascii_space(text.back())) text.remove_suffix(1);
  MeshKey k;
  if (auto s = decode_hex(text, k.k_); !s) return Err{s.error()};
  return k;
}

std::string MeshKey::to_hex() const { return encode_hex({}, k_); }
bool MeshKey::is_zero() const { return sodium_is_zero(k_.data(), k_.size()) == 1; }
bool MeshKey::equals(const MeshKey& other) const { return sodium_memcmp(k_.data(), other.k_.data(), kKeyLen) == 0; }

// --- derper key file ----------------------------------------------------------------------

namespace {

class KeyFileSink final : public detail::FieldSink {
 public:
  bool field(std::string_view name, const detail::JsonValue& v) override {
    if (!detail::field_name_equal(name, "PrivateKey")) return true;
    switch (v.kind) {
      case detail::JsonKind::kNull:
        return true;  // Go leaves the field as it was
      case detail::JsonKind::kString: {
        auto k = NodePrivate::parse(v.string);
        if (!k) {
          error = k.error();
          return false;
        }
        key = *k;
        present = true;
        return true;
      }
      default:
        error = KeyError::kBadJson;
        return false;
    }
  }
  NodePrivate key;
  bool present = false;
  KeyError error = KeyError::kBadJson;
};

}  // namespace

Result<NodePrivate, KeyError> parse_key_file(std::string_view json) {
  KeyFileSink sink;
  switch (detail::decode_object_fields(json, sink)) {
    case detail::JsonStatus::kObject: break;
    case detail::JsonStatus::kNull: return Err{KeyError::kMissingKey};
    case detail::JsonStatus::kRejected: return Err{sink.error};
    case detail::JsonStatus::kNotObject:
    case detail::JsonStatus::kSyntax: return Err{KeyError::kBadJson};
  }
  if (!sink.present) return Err{KeyError::kMissingKey};
  if (sink.key.is_zero()) return Err{KeyError::kZeroKey};
  return sink.key;
}

std::string format_key_file(const NodePrivate& key) {
  std::string text = "{\n\t\"PrivateKey\": \"";
  std::string k = key.to_text();
  text += k;
  sodium_memzero(k.data(), k.size());
  text += "\"\n}";
  return text;
}

}  // namespace derpd::protocol
