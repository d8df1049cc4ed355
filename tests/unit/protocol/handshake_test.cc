// The login handshake: both sides against each other with real libsodium, frames hand-assembled
// the way Tailscale's Go client/server build them, and every way a ClientInfo can be bad.
#include "relay/protocol/handshake.h"

#include <sodium.h>

#include <cstring>
#include <string>
#include <variant>

#include <gtest/gtest.h>

#include "relay/protocol/messages.h"
#include "tests/unit/protocol/test_util.h"

namespace derpd::protocol {
namespace {

using testing::Buf;
using testing::bytes;
using testing::cat;
using testing::filled;
using testing::header;
using testing::key_of;
using testing::view;

constexpr std::string_view kMeshHex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// nonce(24) + crypto_box_easy(plain), as key.NodePrivate.SealTo does; built here directly on
// libsodium so the tests do not depend on the code under test to produce the wire bytes.
Buf go_seal(std::string_view plain, const NodePublic& to, const NodePrivate& from) {
  Buf out(kNonceLen + crypto_box_MACBYTES + plain.size());
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  randombytes_buf(p, kNonceLen);
  EXPECT_EQ(crypto_box_easy(p + kNonceLen, reinterpret_cast<const unsigned char*>(plain.data()), plain.size(), p,
                            to.data(), from.data()),
            0);
  return out;
}

std::string go_open(Bytes sealed, const NodePublic& from, const NodePrivate& to) {
  if (sealed.size() < kNonceLen + crypto_box_MACBYTES) return "<short>";
  std::string plain(sealed.size() - kNonceLen - crypto_box_MACBYTES, '\0');
  const auto* p = reinterpret_cast<const unsigned char*>(sealed.data());
  if (crypto_box_open_easy(reinterpret_cast<unsigned char*>(plain.data()), p + kNonceLen, sealed.size() - kNonceLen, p,
                           from.data(), to.data()) != 0) {
    return "<open failed>";
  }
  return plain;
}

// sendClientKey: WriteFrame(FrameClientInfo, client public key + SealTo(server, json)).
Buf go_client_info_frame(const NodePrivate& client, const NodePublic& server, std::string_view json) {
  const Buf sealed = go_seal(json, server, client);
  const NodePublic pub = client.public_key();
  const Buf payload = cat({pub.bytes(), view(sealed)});
  return cat({view(header(0x02, static_cast<std::uint32_t>(payload.size()))), view(payload)});
}

Frame frame_over(const Buf& wire) {
  // A frame view over a complete wire frame (header already checked by the caller's reader).
  return Frame{static_cast<FrameType>(wire[0]), static_cast<std::uint32_t>(wire.size() - kFrameHeaderLen),
               Bytes(wire.data() + kFrameHeaderLen, wire.size() - kFrameHeaderLen), false};
}

class Handshake : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(crypto_init()); }
  NodePrivate server_ = NodePrivate::generate();
  NodePrivate client_ = NodePrivate::generate();
  NodePublic server_pub_ = server_.public_key();
  NodePublic client_pub_ = client_.public_key();

  Result<ClientHello, HandshakeError> server_opens(std::string_view json) {
    const Buf wire = go_client_info_frame(client_, server_pub_, json);
    return open_client_info(frame_over(wire), server_);
  }
};

TEST_F(Handshake, FullRoundTripThroughReaders) {
  Buf server_to_client(4096);
  Buf client_to_server(4096);

  // 1. Server greets.
  const std::size_t key_len = write_server_key(server_to_client, server_pub_);
  ASSERT_EQ(key_len, 45u);

  // 2. Client reads it with the handshake limits.
  FrameReader client_reader(client_handshake_limits());
  Bytes in(server_to_client.data(), key_len);
  Frame f;
  ASSERT_EQ(client_reader.next(in, f), FrameReader::Status::kFrame);
  auto server_key = parse_server_key(f);
  ASSERT_TRUE(server_key.ok());
  EXPECT_EQ(*server_key, server_pub_);
  client_reader.set_limits(client_limits());

  // 3. Client sends ClientInfo.
  ClientInfo info;
  info.version = kProtocolVersion;
  info.can_ack_pings = true;
  info.is_prober = true;
  info.app_name = "derpprobe";
  info.mesh_key = *MeshKey::parse(kMeshHex);
  const std::string json = client_info_json(info);
  auto ci_len = write_client_info(client_to_server, client_, *server_key, json);
  ASSERT_TRUE(ci_len.ok());
  EXPECT_EQ(*ci_len, client_info_frame_size(json.size()));

  // 4. Server reads and opens it.
  FrameReader server_reader(server_handshake_limits());
  in = Bytes(client_to_server.data(), *ci_len);
  ASSERT_EQ(server_reader.next(in, f), FrameReader::Status::kFrame);
  auto hello = open_client_info(f, server_);
  ASSERT_TRUE(hello.ok()) << to_string(hello.error());
  EXPECT_EQ(hello->key, client_pub_);
  EXPECT_EQ(hello->info.version, 2);
  EXPECT_TRUE(hello->info.can_ack_pings);
  EXPECT_TRUE(hello->info.is_prober);
  EXPECT_EQ(hello->info.app_name, "derpprobe");
  EXPECT_TRUE(is_mesh_peer(hello->info, *MeshKey::parse(kMeshHex)));
  server_reader.set_limits(server_limits());

  // 5. Server answers ServerInfo; the client gets it as a ServerInfoFrame and opens it.
  auto si_len = write_server_info(server_to_client, server_, hello->key);
  ASSERT_TRUE(si_len.ok());
  ASSERT_EQ(*si_len, kServerInfoFrameLen);
  in = Bytes(server_to_client.data(), *si_len);
  ASSERT_EQ(client_reader.next(in, f), FrameReader::Status::kFrame);
  auto msg = parse_server_message(f);
  ASSERT_TRUE(msg.ok());
  const auto* sif = std::get_if<ServerInfoFrame>(&*msg);
  ASSERT_NE(sif, nullptr);
  auto si = open_server_info(sif->sealed, client_, server_pub_);
  ASSERT_TRUE(si.ok()) << to_string(si.error());
  EXPECT_EQ(si->version, 2);
  EXPECT_EQ(si->token_bucket_bytes_per_second, 0);
  EXPECT_EQ(si->token_bucket_bytes_burst, 0);
}

TEST_F(Handshake, ServerInfoIsExactlyWhatDerperSends) {
  Buf out(kServerInfoFrameLen);
  auto n = write_server_info(out, server_, client_pub_);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(out[0], std::byte{0x03});
  EXPECT_EQ(load_be32(out.data() + 1), kServerInfoFrameLen - 5);
  // No TokenBucket fields: exactly json.Marshal(ServerInfo{Version: 2}).
  EXPECT_EQ(go_open(Bytes(out.data() + 5, out.size() - 5), server_pub_, client_), R"({"version":2})");
  // Fresh nonce each time.
  Buf again(kServerInfoFrameLen);
  ASSERT_TRUE(write_server_info(again, server_, client_pub_).ok());
  EXPECT_NE(std::memcmp(out.data() + 5, again.data() + 5, kNonceLen), 0);
  Buf small(kServerInfoFrameLen - 1);
  EXPECT_EQ(write_server_info(small, server_, client_pub_).error(), HandshakeError::kBufferTooSmall);
}

TEST_F(Handshake, ClientInfoFrameLayoutIsGoCompatible) {
  const std::string json = R"({"version":2,"CanAckPings":true})";
  Buf out(client_info_frame_size(json.size()));
  ASSERT_TRUE(write_client_info(out, client_, server_pub_, json).ok());
  EXPECT_EQ(out[0], std::byte{0x02});
  EXPECT_EQ(load_be32(out.data() + 1), out.size() - 5);
  EXPECT_EQ(std::memcmp(out.data() + 5, client_pub_.data(), kKeyLen), 0);
  EXPECT_EQ(go_open(Bytes(out.data() + 5 + kKeyLen, out.size() - 5 - kKeyLen), client_pub_, server_), json);
}

TEST_F(Handshake, OpensClientInfoBuiltLikeTheGoClient) {
  // Exactly what a default Go client (derphttp, CanAckPings) marshals.
  auto hello = server_opens(R"({"version":2,"CanAckPings":true})");
  ASSERT_TRUE(hello.ok());
  EXPECT_EQ(hello->key, client_pub_);
  EXPECT_EQ(hello->info.version, 2);
  EXPECT_TRUE(hello->info.can_ack_pings);
  EXPECT_FALSE(hello->info.is_prober);
  EXPECT_TRUE(hello->info.mesh_key.is_zero());
  EXPECT_FALSE(is_mesh_peer(hello->info, *MeshKey::parse(kMeshHex)));
}

TEST_F(Handshake, ClientInfoThatFailsToDecrypt) {
  // Sealed to another server.
  const NodePrivate other = NodePrivate::generate();
  const Buf wire = go_client_info_frame(client_, other.public_key(), "{}");
  EXPECT_EQ(open_client_info(frame_over(wire), server_).error(), HandshakeError::kOpenFailed);
  // Claiming someone else's public key.
  Buf forged = go_client_info_frame(client_, server_pub_, "{}");
  std::memcpy(forged.data() + 5, key_of(0x11).data(), kKeyLen);
  EXPECT_EQ(open_client_info(frame_over(forged), server_).error(), HandshakeError::kOpenFailed);
  // One flipped bit in the box, the tag or the nonce.
  for (std::size_t at : {std::size_t{5 + 32}, std::size_t{5 + 32 + 24 + 3}, std::size_t{0}}) {
    Buf tampered = go_client_info_frame(client_, server_pub_, R"({"version":2})");
    const std::size_t pos = at == 0 ? tampered.size() - 1 : at;
    tampered[pos] ^= std::byte{0x01};
    EXPECT_EQ(open_client_info(frame_over(tampered), server_).error(), HandshakeError::kOpenFailed);
  }
}

TEST_F(Handshake, TruncatedClientInfo) {
  const Buf wire = go_client_info_frame(client_, server_pub_, R"({"version":2})");
  const Bytes payload(wire.data() + 5, wire.size() - 5);
  // Shorter than key + nonce: the Go server's "short client info".
  for (std::size_t n : {0u, 31u, 32u, 55u}) {
    const Frame f{FrameType::kClientInfo, static_cast<std::uint32_t>(n), payload.first(n), false};
    EXPECT_EQ(open_client_info(f, server_).error(), HandshakeError::kTooShort) << n;
  }
  // Key + nonce present but the box cut short (or shorter than its tag).
  for (std::size_t n : {std::size_t{56}, std::size_t{71}, std::size_t{72}, payload.size() - 1}) {
    const Frame f{FrameType::kClientInfo, static_cast<std::uint32_t>(n), payload.first(n), false};
    EXPECT_EQ(open_client_info(f, server_).error(), HandshakeError::kOpenFailed) << n;
  }
}

TEST_F(Handshake, OversizeClientInfo) {
  // 256 KiB is the Go server's "long client info" limit: the reader refuses the header, and
  // open_client_info refuses such a frame if handed one.
  const Buf h = header(0x02, kMaxClientInfoLen + 1);
  FrameReader r(server_handshake_limits());
  Frame f;
  Bytes in(h.data(), h.size());
  EXPECT_EQ(r.next(in, f), FrameReader::Status::kError);
  const Buf big(kMaxClientInfoLen + 1, std::byte{1});
  const Frame fb{FrameType::kClientInfo, static_cast<std::uint32_t>(big.size()), Bytes(big.data(), big.size()), false};
  EXPECT_EQ(open_client_info(fb, server_).error(), HandshakeError::kTooLong);
  // The largest accepted size still opens.
  const std::string json = "{\"AppName\":\"" + std::string(kMaxClientInfoLen - 72 - 14, 'x') + "\"}";
  const Buf wire = go_client_info_frame(client_, server_pub_, json);
  ASSERT_EQ(wire.size() - 5, kMaxClientInfoLen);
  auto hello = open_client_info(frame_over(wire), server_);
  ASSERT_TRUE(hello.ok());
  EXPECT_EQ(hello->info.app_name.size(), kMaxClientInfoLen - 72 - 14);
  // And the client-side writer refuses to build one the server would refuse.
  Buf out(kMaxClientInfoLen + 100);
  EXPECT_EQ(write_client_info(out, client_, server_pub_, json + " ").error(), HandshakeError::kTooLong);
}

TEST_F(Handshake, WrongFirstFrameOrZeroKey) {
  const Buf p = filled(100, 1);
  const Frame not_ci{FrameType::kSendPacket, 100, Bytes(p.data(), p.size()), false};
  EXPECT_EQ(open_client_info(not_ci, server_).error(), HandshakeError::kUnexpectedFrame);
  Buf zero_key = go_client_info_frame(client_, server_pub_, "{}");
  std::memset(zero_key.data() + 5, 0, kKeyLen);
  EXPECT_EQ(open_client_info(frame_over(zero_key), server_).error(), HandshakeError::kZeroKey);
}

TEST_F(Handshake, BadJson) {
  for (std::string_view json : {"", "not json", "{", R"({"version":2} x)", "[1,2]", "5", R"("str")", "true"}) {
    EXPECT_EQ(server_opens(json).error(), HandshakeError::kBadJson) << json;
  }
  // Known fields of the wrong type, as encoding/json's UnmarshalTypeError / DERPMesh errors.
  for (std::string_view json :
       {R"({"version":"2"})", R"({"version":2.5})", R"({"version":1e2})", R"({"version":true})",
        R"({"version":99999999999999999999})", R"({"CanAckPings":1})", R"({"IsProber":"true"})",
        R"({"AppName":5})", R"({"AppName":["x"]})", R"({"version":{}})", R"({"meshKey":"abcdefg"})",
        R"({"meshKey":null})", R"({"meshKey":5})",
        R"({"meshKey":"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"})",
        R"({"meshKey":" 123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"})"}) {
    EXPECT_EQ(server_opens(json).error(), HandshakeError::kBadField) << json;
  }
}

TEST_F(Handshake, LenientJsonLikeGo) {
  // null top level: nothing set, no error.
  auto hello = server_opens("null");
  ASSERT_TRUE(hello.ok());
  EXPECT_EQ(hello->info.version, 0);
  // Case-insensitive names, unknown fields (any type) ignored, nulls leave fields unset.
  hello = server_opens(
      R"({"VERSION":7,"canackpings":true,"isPROBER":true,"appname":"tailscaled","MESHKEY":)"
      R"("0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",)"
      R"("Unknown":{"version":9,"list":[1,{"a":null}]},"other":[],"n":1.5,"AppName":null})");
  ASSERT_TRUE(hello.ok()) << to_string(hello.error());
  EXPECT_EQ(hello->info.version, 7);
  EXPECT_TRUE(hello->info.can_ack_pings);
  EXPECT_TRUE(hello->info.is_prober);
  EXPECT_EQ(hello->info.app_name, "tailscaled");
  EXPECT_TRUE(is_mesh_peer(hello->info, *MeshKey::parse(kMeshHex)));
  // Later duplicates win, across spellings.
  hello = server_opens(R"({"version":1,"Version":3})");
  ASSERT_TRUE(hello.ok());
  EXPECT_EQ(hello->info.version, 3);
  // Go folds U+212A KELVIN SIGN to k: "CanAc\u212APings" names CanAckPings.
  hello = server_opens("{\"CanAc\xE2\x84\xAAPings\":true}");
  ASSERT_TRUE(hello.ok());
  EXPECT_TRUE(hello->info.can_ack_pings);
  // Negative and large-but-valid versions are integers to Go.
  hello = server_opens(R"({"version":-1})");
  ASSERT_TRUE(hello.ok());
  EXPECT_EQ(hello->info.version, -1);
  hello = server_opens(R"({"version":9223372036854775807})");
  ASSERT_TRUE(hello.ok());
  EXPECT_EQ(hello->info.version, 9223372036854775807LL);
}

TEST_F(Handshake, GoClientInfoUnmarshalVectors) {
  // derp_test.go TestClientInfoUnmarshal.
  constexpr std::string_view kKey = "6d529e9d4ef632d22d4a4214cb49da8f1ba1b72697061fb24e312984c35ec8d8";
  auto h = server_opens("{}");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->info.version, 0);
  EXPECT_TRUE(h->info.mesh_key.is_zero());
  for (std::string_view json : {R"({"Version":5,"MeshKey":"6d529e9d4ef632d22d4a4214cb49da8f1ba1b72697061fb24e312984c35ec8d8"})",
                                R"({"version":5,"meshKey":"6d529e9d4ef632d22d4a4214cb49da8f1ba1b72697061fb24e312984c35ec8d8"})"}) {
    h = server_opens(json);
    ASSERT_TRUE(h.ok()) << json;
    EXPECT_EQ(h->info.version, 5);
    EXPECT_TRUE(h->info.mesh_key.equals(*MeshKey::parse(kKey)));
  }
}

TEST(IsMeshPeer, GoVectors) {
  // derpserver_test.go TestIsMeshPeer: nil/zero -> false, mismatch -> false, match -> true.
  const MeshKey ours = *MeshKey::parse(kMeshHex);
  ClientInfo info;
  EXPECT_FALSE(is_mesh_peer(info, ours));
  info.mesh_key = *MeshKey::parse("6d529e9d4ef632d22d4a4214cb49da8f1ba1b72697061fb24e312984c35ec8d8");
  EXPECT_FALSE(is_mesh_peer(info, ours));
  info.mesh_key = *MeshKey::parse(kMeshHex);
  EXPECT_TRUE(is_mesh_peer(info, ours));
  // A server without a mesh key accepts nobody, even a client presenting zeros.
  ClientInfo zeros;
  EXPECT_FALSE(is_mesh_peer(zeros, MeshKey{}));
  EXPECT_FALSE(is_mesh_peer(info, MeshKey{}));
}

TEST(ClientInfoJson, MarshalsLikeGo) {
  ClientInfo info;
  EXPECT_EQ(client_info_json(info), R"({"CanAckPings":false})");
  info.version = 2;
  info.can_ack_pings = true;
  EXPECT_EQ(client_info_json(info), R"({"version":2,"CanAckPings":true})");
  info.mesh_key = *MeshKey::parse(kMeshHex);
  info.is_prober = true;
  info.app_name = "say \"hi\"\n";
  EXPECT_EQ(client_info_json(info),
            std::string(R"({"meshKey":")") + std::string(kMeshHex) +
                R"(","version":2,"CanAckPings":true,"IsProber":true,"AppName":"say \"hi\"\n"})");
}

TEST_F(Handshake, ParseServerKey) {
  Buf out(64);
  const std::size_t n = write_server_key(out, server_pub_);
  auto k = parse_server_key(frame_over(Buf(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n))));
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(*k, server_pub_);

  const Buf good = cat({view(Buf(kMagic.begin(), kMagic.end())), server_pub_.bytes()});
  // Future-use bytes after the key are accepted (Go reads up to 1 KiB).
  const Buf longer = cat({view(good), view(filled(100, 0xee))});
  EXPECT_TRUE(parse_server_key(frame_over(cat({view(header(0x01, 140)), view(longer)}))).ok());
  EXPECT_EQ(parse_server_key(frame_over(cat({view(header(0x01, 39)), view(Buf(good.begin(), good.end() - 1))}))).error(),
            HandshakeError::kTooShort);
  Buf bad_magic = good;
  bad_magic[7] = std::byte{0x92};
  EXPECT_EQ(parse_server_key(frame_over(cat({view(header(0x01, 40)), view(bad_magic)}))).error(),
            HandshakeError::kBadMagic);
  const Buf zero = cat({view(Buf(kMagic.begin(), kMagic.end())), view(filled(32, 0))});
  EXPECT_EQ(parse_server_key(frame_over(cat({view(header(0x01, 40)), view(zero)}))).error(), HandshakeError::kZeroKey);
  EXPECT_EQ(parse_server_key(frame_over(cat({view(header(0x03, 40)), view(good)}))).error(),
            HandshakeError::kUnexpectedFrame);
}

TEST_F(Handshake, OpenServerInfoFailures) {
  // Built the Go way: SealTo(client, `{"version":2}`) from the server.
  const Buf sealed = go_seal(R"({"version":2,"TokenBucketBytesPerSecond":100,"tokenbucketbytesburst":5})", client_pub_, server_);
  auto si = open_server_info(view(sealed), client_, server_pub_);
  ASSERT_TRUE(si.ok());
  EXPECT_EQ(si->version, 2);
  EXPECT_EQ(si->token_bucket_bytes_per_second, 100);
  EXPECT_EQ(si->token_bucket_bytes_burst, 5);

  EXPECT_EQ(open_server_info(Bytes(sealed.data(), 23), client_, server_pub_).error(), HandshakeError::kTooShort);
  EXPECT_EQ(open_server_info(Bytes(sealed.data(), 30), client_, server_pub_).error(), HandshakeError::kOpenFailed);
  EXPECT_EQ(open_server_info(view(sealed), client_, key_of(0x33)).error(), HandshakeError::kOpenFailed);
  const Buf not_json = go_seal("version 2", client_pub_, server_);
  EXPECT_EQ(open_server_info(view(not_json), client_, server_pub_).error(), HandshakeError::kBadJson);
  const Buf bad_field = go_seal(R"({"version":"2"})", client_pub_, server_);
  EXPECT_EQ(open_server_info(view(bad_field), client_, server_pub_).error(), HandshakeError::kBadField);
}

}  // namespace
}  // namespace derpd::protocol
