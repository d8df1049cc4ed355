#include "relay/protocol/handshake.h"

#include <sodium.h>

#include <cstring>
#include <string>

#include <fmt/format.h>

#include "relay/protocol/detail/json_fields.h"

namespace derpd::protocol {
namespace {

static_assert(crypto_box_NONCEBYTES == kNonceLen);
static_assert(crypto_box_MACBYTES == kBoxOverhead);

using detail::JsonKind;
using detail::JsonValue;

// Assigns a Go `int` field: integers only; null leaves it; anything else is a type error.
bool set_int(const JsonValue& v, std::int64_t& out) {
  if (v.kind == JsonKind::kNull) return true;
  if (v.kind != JsonKind::kInt) return false;
  out = v.integer;
  return true;
}

bool set_bool(const JsonValue& v, bool& out) {
  if (v.kind == JsonKind::kNull) return true;
  if (v.kind != JsonKind::kBool) return false;
  out = v.boolean;
  return true;
}

bool set_string(const JsonValue& v, std::string& out) {
  if (v.kind == JsonKind::kNull) return true;
  if (v.kind != JsonKind::kString) return false;
  out.assign(v.string);
  return true;
}

class ClientInfoSink final : public detail::FieldSink {
 public:
  explicit ClientInfoSink(ClientInfo& info) : info_(info) {}
  bool field(std::string_view name, const JsonValue& v) override {
    using detail::field_name_equal;
    if (field_name_equal(name, "meshKey")) {
      // key.DERPMesh.UnmarshalJSON: the value must be a string of exactly 64 hex digits (no
      // trimming); anything else, null included, is an error.
      if (v.kind != JsonKind::kString || v.string.size() != 2 * kKeyLen) return false;
      auto k = MeshKey::parse(v.string);
      if (!k) return false;
      info_.mesh_key = *k;
      return true;
    }
    if (field_name_equal(name, "version")) return set_int(v, info_.version);
    if (field_name_equal(name, "CanAckPings")) return set_bool(v, info_.can_ack_pings);
    if (field_name_equal(name, "IsProber")) return set_bool(v, info_.is_prober);
    if (field_name_equal(name, "AppName")) return set_string(v, info_.app_name);
    return true;
  }

 private:
  ClientInfo& info_;
};

class ServerInfoSink final : public detail::FieldSink {
 public:
  explicit ServerInfoSink(ServerInfo& info) : info_(info) {}
  bool field(std::string_view name, const JsonValue& v) override {
    using detail::field_name_equal;
    if (field_name_equal(name, "version")) return set_int(v, info_.version);
    if (field_name_equal(name, "TokenBucketBytesPerSecond")) return set_int(v, info_.token_bucket_bytes_per_second);
    if (field_name_equal(name, "TokenBucketBytesBurst")) return set_int(v, info_.token_bucket_bytes_burst);
    return true;
  }

 private:
  ServerInfo& info_;
};

Status<HandshakeError> decode(std::string_view json, detail::FieldSink& sink) {
  switch (detail::decode_object_fields(json, sink)) {
    case detail::JsonStatus::kObject:
    case detail::JsonStatus::kNull: return {};
    case detail::JsonStatus::kRejected: return Err{HandshakeError::kBadField};
    case detail::JsonStatus::kNotObject:
    case detail::JsonStatus::kSyntax: break;
  }
  return Err{HandshakeError::kBadJson};
}

// Opens nonce(24) + box into `plain`.
Status<HandshakeError> open_box(Bytes sealed, const NodePublic& from, const NodePrivate& to, std::string& plain) {
  if (sealed.size() < kNonceLen + kBoxOverhead) return Err{HandshakeError::kOpenFailed};
  const auto* nonce = reinterpret_cast<const unsigned char*>(sealed.data());
  const Bytes box = sealed.subspan(kNonceLen);
  plain.resize(box.size() - kBoxOverhead);
  if (crypto_box_open_easy(reinterpret_cast<unsigned char*>(plain.data()),
                           reinterpret_cast<const unsigned char*>(box.data()), box.size(), nonce, from.data(),
                           to.data()) != 0) {
    return Err{HandshakeError::kOpenFailed};
  }
  return {};
}

// Writes nonce(24) + box(plain) at `out` (which has room for plain.size() + 40 bytes).
Status<HandshakeError> seal_box(std::byte* out, std::string_view plain, const NodePublic& to, const NodePrivate& from) {
  auto* nonce = reinterpret_cast<unsigned char*>(out);
  randombytes_buf(nonce, kNonceLen);
  if (crypto_box_easy(nonce + kNonceLen, reinterpret_cast<const unsigned char*>(plain.data()), plain.size(), nonce,
                      to.data(), from.data()) != 0) {
    return Err{HandshakeError::kZeroKey};  // libsodium refuses low-order (e.g. all-zero) keys
  }
  return {};
}

}  // namespace

std::string_view to_string(HandshakeError e) {
  switch (e) {
    case HandshakeError::kUnexpectedFrame: return "unexpected_frame";
    case HandshakeError::kTooShort: return "too_short";
    case HandshakeError::kTooLong: return "too_long";
    case HandshakeError::kBadMagic: return "bad_magic";
    case HandshakeError::kZeroKey: return "zero_key";
    case HandshakeError::kOpenFailed: return "open_failed";
    case HandshakeError::kBadJson: return "bad_json";
    case HandshakeError::kBadField: return "bad_field";
    case HandshakeError::kBufferTooSmall: return "buffer_too_small";
    case HandshakeError::kCryptoInit: return "crypto_init";
    case HandshakeError::kCount: break;
  }
  return "unknown";
}

// --- server side ------------------------------------------------------------------------------

Result<ClientHello, HandshakeError> open_client_info(const Frame& frame, const NodePrivate& server_private) {
  if (frame.type != FrameType::kClientInfo || frame.skipped) return Err{HandshakeError::kUnexpectedFrame};
  const Bytes p = frame.payload;
  if (p.size() < kMinClientInfoLen) return Err{HandshakeError::kTooShort};
  if (p.size() > kMaxClientInfoLen) return Err{HandshakeError::kTooLong};
  if (!crypto_init()) return Err{HandshakeError::kCryptoInit};
  if (server_private.is_zero()) return Err{HandshakeError::kZeroKey};

  ClientHello hello;
  hello.key = NodePublic::from_raw(p.first<kKeyLen>());
  if (hello.key.is_zero()) return Err{HandshakeError::kZeroKey};
  std::string json;
  if (auto s = open_box(p.subspan(kKeyLen), hello.key, server_private, json); !s) return Err{s.error()};
  ClientInfoSink sink(hello.info);
  if (auto s = decode(json, sink); !s) return Err{s.error()};
  return hello;
}

bool is_mesh_peer(const ClientInfo& info, const MeshKey& server_mesh_key) {
  if (info.mesh_key.is_zero()) return false;
  return server_mesh_key.equals(info.mesh_key);
}

Result<std::size_t, HandshakeError> write_server_info(MutBytes out, const NodePrivate& server_private,
                                                      const NodePublic& client) {
  if (out.size() < kServerInfoFrameLen) return Err{HandshakeError::kBufferTooSmall};
  if (!crypto_init()) return Err{HandshakeError::kCryptoInit};
  if (server_private.is_zero() || client.is_zero()) return Err{HandshakeError::kZeroKey};
  const auto payload_len = static_cast<std::uint32_t>(kServerInfoFrameLen - kFrameHeaderLen);
  (void)write_frame_header(out, FrameType::kServerInfo, payload_len);
  if (auto s = seal_box(out.data() + kFrameHeaderLen, kServerInfoJson, client, server_private); !s) {
    return Err{s.error()};
  }
  return kServerInfoFrameLen;
}

// --- client side ------------------------------------------------------------------------------

Result<NodePublic, HandshakeError> parse_server_key(const Frame& frame) {
  if (frame.type != FrameType::kServerKey || frame.skipped) return Err{HandshakeError::kUnexpectedFrame};
  const Bytes p = frame.payload;
  if (p.size() < kServerKeyLen) return Err{HandshakeError::kTooShort};
  if (p.size() > kMaxServerKeyLen) return Err{HandshakeError::kTooLong};
  if (std::memcmp(p.data(), kMagic.data(), kMagic.size()) != 0) return Err{HandshakeError::kBadMagic};
  const NodePublic key = NodePublic::from_raw(p.subspan(kMagic.size()).first<kKeyLen>());
  if (key.is_zero()) return Err{HandshakeError::kZeroKey};
  return key;
}

std::string client_info_json(const ClientInfo& info) {
  std::string json = "{";
  if (!info.mesh_key.is_zero()) json += fmt::format("\"meshKey\":\"{}\",", info.mesh_key.to_hex());
  if (info.version != 0) json += fmt::format("\"version\":{},", info.version);
  json += info.can_ack_pings ? "\"CanAckPings\":true" : "\"CanAckPings\":false";
  if (info.is_prober) json += ",\"IsProber\":true";
  if (!info.app_name.empty()) json += ",\"AppName\":" + detail::json_quote(info.app_name);
  json += "}";
  return json;
}

Result<std::size_t, HandshakeError> write_client_info(MutBytes out, const NodePrivate& client_private,
                                                      const NodePublic& server, std::string_view json) {
  const std::size_t n = client_info_frame_size(json.size());
  if (n - kFrameHeaderLen > kMaxClientInfoLen) return Err{HandshakeError::kTooLong};
  if (out.size() < n) return Err{HandshakeError::kBufferTooSmall};
  if (!crypto_init()) return Err{HandshakeError::kCryptoInit};
  if (client_private.is_zero() || server.is_zero()) return Err{HandshakeError::kZeroKey};
  (void)write_frame_header(out, FrameType::kClientInfo, static_cast<std::uint32_t>(n - kFrameHeaderLen));
  const NodePublic pub = client_private.public_key();
  std::memcpy(out.data() + kFrameHeaderLen, pub.data(), kKeyLen);
  if (auto s = seal_box(out.data() + kFrameHeaderLen + kKeyLen, json, server, client_private); !s) {
    return Err{s.error()};
  }
  return n;
}

Result<ServerInfo, HandshakeError> open_server_info(Bytes sealed, const NodePrivate& client_private,
                                                    const NodePublic& server) {
  if (sealed.size() < kNonceLen) return Err{HandshakeError::kTooShort};
  if (sealed.size() > kNonceLen + kMaxInfoLen) return Err{HandshakeError::kTooLong};
  if (!crypto_init()) return Err{HandshakeError::kCryptoInit};
  if (client_private.is_zero() || server.is_zero()) return Err{HandshakeError::kZeroKey};
  std::string json;
  if (auto s = open_box(sealed, server, client_private, json); !s) return Err{s.error()};
  ServerInfo info;
  ServerInfoSink sink(info);
  if (auto s = decode(json, sink); !s) return Err{s.error()};
  return info;
}

}  // namespace derpd::protocol
