#include <gtest/gtest.h>

#include "client/derp/conn.h"
#include "tests/unit/dclient/fake_server.h"

namespace derpd::derpclient {
namespace {

using testing::make_cert_with;
using testing::make_meta_cert;
using testing::make_server_cert;

TEST(MetaCert, ReadsKeyAndVersion) {
  const auto key = protocol::NodePrivate::generate().public_key();
  auto meta = make_meta_cert(key, 2);
  auto m = parse_meta_cert(meta.cert);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->server_key, key);
  EXPECT_EQ(m->protocol_version, 2);

  auto v255 = make_meta_cert(key, 255);
  ASSERT_TRUE(parse_meta_cert(v255.cert).has_value());
  EXPECT_EQ(parse_meta_cert(v255.cert)->protocol_version, 255);
}

TEST(MetaCert, RejectsWhatGoRejects) {
  const auto key = protocol::NodePrivate::generate().public_key();
  // Serial over 8 bits, or zero (Go skips fast start for version 0).
  EXPECT_FALSE(parse_meta_cert(make_meta_cert(key, 256).cert).has_value());
  EXPECT_FALSE(parse_meta_cert(make_meta_cert(key, 0).cert).has_value());
  // Not the derpkey prefix, bad hex, wrong length, zero key.
  EXPECT_FALSE(parse_meta_cert(make_server_cert().cert).has_value());
  EXPECT_FALSE(parse_meta_cert(make_cert_with("derpkey" + std::string(64, 'g'), 2).cert).has_value());
  EXPECT_FALSE(parse_meta_cert(make_cert_with("derpkey" + key.untyped_hex().substr(2), 2).cert).has_value());
  EXPECT_FALSE(parse_meta_cert(make_cert_with("derpkey" + std::string(64, '0'), 2).cert).has_value());
  EXPECT_FALSE(parse_meta_cert(make_cert_with("Derpkey" + key.untyped_hex(), 2).cert).has_value());
  EXPECT_FALSE(parse_meta_cert(nullptr).has_value());
}

TEST(MetaCert, Sha256OfDerIsStableAndDistinct) {
  auto a = make_server_cert();
  auto b = make_server_cert();
  const std::string ha = cert_sha256_hex(a.cert);
  EXPECT_EQ(ha.size(), 64u);
  EXPECT_EQ(ha, cert_sha256_hex(a.cert));
  EXPECT_NE(ha, cert_sha256_hex(b.cert));
  EXPECT_EQ(ha.find_first_not_of("0123456789abcdef"), std::string::npos);
}

}  // namespace
}  // namespace derpd::derpclient
