// Meta cert, self-signed certificates, the CertName pin and PEM file reading.
#include "relay/tls/certs.h"

#include <gtest/gtest.h>
#include <openssl/asn1.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <filesystem>

#include "relay/tls/detail/x509.h"
#include "tests/unit/tls/test_util.h"

namespace derpd::tls {
namespace {

using testing::TempDir;

detail::X509Ptr parse_der(const std::vector<std::byte>& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  return detail::X509Ptr(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

detail::X509Ptr parse_pem(const std::string& pem) {
  auto chain = detail::parse_cert_chain(pem);
  EXPECT_TRUE(chain.ok());
  return chain ? std::move(chain->leaf) : nullptr;
}

std::time_t asn1_time(const ASN1_TIME* t) {
  std::tm tm{};
  EXPECT_EQ(ASN1_TIME_to_tm(t, &tm), 1);
  return ::timegm(&tm);
}

int cn_string_type(X509* x) {
  X509_NAME* n = X509_get_subject_name(x);
  int idx = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
  return ASN1_STRING_type(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, idx)));
}

TEST(MetaCert, FieldsAsDerperBuildsThem) {
  const std::time_t now = 1'700'000'000;
  auto key = testing::server_key(7);
  auto der = make_meta_cert(key, now);
  ASSERT_TRUE(der.ok()) << der.error();
  auto x = parse_der(*der);
  ASSERT_NE(x, nullptr);

  EXPECT_EQ(testing::common_name(x.get()), "derpkey" + testing::key_hex(key));
  EXPECT_EQ(cn_string_type(x.get()), V_ASN1_PRINTABLESTRING);  // as Go's asn1 encodes it
  EXPECT_EQ(ASN1_INTEGER_get(X509_get0_serialNumber(x.get())), 2);
  EXPECT_EQ(X509_get_version(x.get()), X509_VERSION_3);
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(x.get()), X509_get_issuer_name(x.get())), 0);
  EXPECT_EQ(asn1_time(X509_get0_notBefore(x.get())), now - 30 * 24 * 3600);
  EXPECT_EQ(asn1_time(X509_get0_notAfter(x.get())), now + 30 * 24 * 3600);

  EVP_PKEY* pub = X509_get0_pubkey(x.get());
  ASSERT_NE(pub, nullptr);
  EXPECT_EQ(EVP_PKEY_get_id(pub), EVP_PKEY_ED25519);
  EXPECT_EQ(X509_get_signature_nid(x.get()), NID_ED25519);
  EXPECT_EQ(X509_verify(x.get(), pub), 1);  // self-signed by its own key

  // Exactly one extension: basicConstraints, critical, CA:FALSE.
  ASSERT_EQ(X509_get_ext_count(x.get()), 1);
  X509_EXTENSION* ext = X509_get_ext(x.get(), 0);
  EXPECT_EQ(OBJ_obj2nid(X509_EXTENSION_get_object(ext)), NID_basic_constraints);
  EXPECT_EQ(X509_EXTENSION_get_critical(ext), 1);
  auto* bc = static_cast<BASIC_CONSTRAINTS*>(X509V3_EXT_d2i(ext));
  ASSERT_NE(bc, nullptr);
  EXPECT_EQ(bc->ca, 0);
  EXPECT_EQ(bc->pathlen, nullptr);
  BASIC_CONSTRAINTS_free(bc);
}

TEST(MetaCert, FreshKeyEachTime) {
  auto a = make_meta_cert(testing::server_key(1), 1'700'000'000);
  auto b = make_meta_cert(testing::server_key(1), 1'700'000'000);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
}

TEST(IpLiteral, AsGoParseIP) {
  EXPECT_TRUE(is_ip_literal("127.0.0.1"));
  EXPECT_TRUE(is_ip_literal("::1"));
  EXPECT_TRUE(is_ip_literal("2001:db8::7"));
  EXPECT_FALSE(is_ip_literal("[::1]"));
  EXPECT_FALSE(is_ip_literal("fe80::1%eth0"));
  EXPECT_FALSE(is_ip_literal("derp.example.com"));
  EXPECT_FALSE(is_ip_literal("1.2.3"));
  EXPECT_FALSE(is_ip_literal(""));
}

struct SanCase {
  const char* hostname;
  int san_type;
  std::size_t ip_len;
};

class SelfSigned : public ::testing::TestWithParam<SanCase> {};

TEST_P(SelfSigned, DerperTemplate) {
  const SanCase& c = GetParam();
  const std::time_t now = 1'700'000'000;
  auto made = generate_self_signed(c.hostname, now);
  ASSERT_TRUE(made.ok()) << made.error();
  EXPECT_TRUE(made->created);
  EXPECT_EQ(made->key_pem.rfind("-----BEGIN EC PRIVATE KEY-----", 0), 0u) << made->key_pem;
  auto x = parse_pem(made->cert_pem);
  ASSERT_NE(x, nullptr);

  EXPECT_EQ(testing::common_name(x.get()), c.hostname);
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(x.get()), X509_get_issuer_name(x.get())), 0);
  EXPECT_EQ(asn1_time(X509_get0_notBefore(x.get())), now);
  EXPECT_EQ(asn1_time(X509_get0_notAfter(x.get())), now + 366 * 24 * 3600);  // 2023-11-14 + 1 year spans Feb 29
  EXPECT_EQ(made->not_after, now + 366 * 24 * 3600);

  EVP_PKEY* pub = X509_get0_pubkey(x.get());
  ASSERT_EQ(EVP_PKEY_get_id(pub), EVP_PKEY_EC);
  char group[64] = {};
  std::size_t glen = 0;
  ASSERT_EQ(EVP_PKEY_get_utf8_string_param(pub, "group", group, sizeof group, &glen), 1);
  EXPECT_STREQ(group, "prime256v1");
  EXPECT_EQ(X509_get_signature_nid(x.get()), NID_ecdsa_with_SHA256);
  EXPECT_EQ(X509_verify(x.get(), pub), 1);

  const ASN1_INTEGER* serial = X509_get0_serialNumber(x.get());
  detail::BignumPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  EXPECT_FALSE(BN_is_negative(bn.get()));
  EXPECT_LE(BN_num_bits(bn.get()), 128);
  EXPECT_GT(BN_num_bits(bn.get()), 64);  // random 128-bit: fails with probability 2^-64

  // Extensions in Go's order with Go's criticality.
  ASSERT_EQ(X509_get_ext_count(x.get()), 4);
  const int order[] = {NID_key_usage, NID_ext_key_usage, NID_basic_constraints, NID_subject_alt_name};
  const int critical[] = {1, 0, 1, 0};
  for (int i = 0; i < 4; ++i) {
    X509_EXTENSION* ext = X509_get_ext(x.get(), i);
    EXPECT_EQ(OBJ_obj2nid(X509_EXTENSION_get_object(ext)), order[i]) << i;
    EXPECT_EQ(X509_EXTENSION_get_critical(ext), critical[i]) << i;
  }
  EXPECT_EQ(X509_get_key_usage(x.get()), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT));
  EXPECT_EQ(X509_get_extended_key_usage(x.get()), static_cast<uint32_t>(XKU_SSL_SERVER));
  EXPECT_EQ(X509_check_ca(x.get()), 0);

  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x.get(), NID_subject_alt_name, nullptr, nullptr));
  ASSERT_NE(sans, nullptr);
  ASSERT_EQ(sk_GENERAL_NAME_num(sans), 1);
  const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, 0);
  EXPECT_EQ(gn->type, c.san_type);
  if (c.san_type == GEN_IPADD) {
    EXPECT_EQ(static_cast<std::size_t>(ASN1_STRING_length(gn->d.iPAddress)), c.ip_len);
  }
  GENERAL_NAMES_free(sans);
  EXPECT_TRUE(detail::cert_matches_host(x.get(), c.hostname));
  EXPECT_FALSE(detail::cert_matches_host(x.get(), "192.0.2.99"));

  // The pin is SHA-256 of the DER, computed here independently by X509_digest.
  EXPECT_EQ(made->cert_name, "sha256-raw:" + testing::digest_hex(x.get()));
  auto from_pem = cert_name_for_pem(made->cert_pem);
  ASSERT_TRUE(from_pem.ok());
  EXPECT_EQ(*from_pem, made->cert_name);

  auto key = detail::parse_private_key(made->key_pem);
  ASSERT_TRUE(key.ok());
  EXPECT_TRUE(detail::key_matches_cert(x.get(), key->get()));
}

INSTANTIATE_TEST_SUITE_P(Hostnames, SelfSigned,
                         ::testing::Values(SanCase{"127.0.0.1", GEN_IPADD, 4}, SanCase{"203.0.113.9", GEN_IPADD, 4},
                                           SanCase{"::1", GEN_IPADD, 16}, SanCase{"2001:db8::1", GEN_IPADD, 16},
                                           SanCase{"derp.example.com", GEN_DNS, 0},
                                           SanCase{"localhost", GEN_DNS, 0}));

TEST(SelfSignedValidity, LeapDayMovesToMarchFirstAsGoAddDate) {
  // 2024-02-29 12:00:00 UTC + one year -> 2025-03-01 12:00:00 UTC.
  auto made = generate_self_signed("127.0.0.1", 1'709'208'000);
  ASSERT_TRUE(made.ok());
  EXPECT_EQ(made->not_after, 1'740'830'400);
}

TEST(SelfSignedValidity, RefusesHostnamesThatAreNeither) {
  for (const char* bad : {"", "bad host", "a..b", "-a.example", "a-.example", "x.", ".x", "[::1]", "a_b.example",
                          "ex*ample.com"}) {
    auto made = generate_self_signed(bad, 1'700'000'000);
    ASSERT_FALSE(made.ok()) << bad;
    EXPECT_NE(made.error().find("neither an IP address nor a DNS name"), std::string::npos) << made.error();
  }
  EXPECT_FALSE(generate_self_signed(std::string(254, 'a'), 1'700'000'000).ok());
  EXPECT_FALSE(generate_self_signed(std::string(64, 'a') + ".example", 1'700'000'000).ok());
}

TEST(CertName, IsSha256OfDerInLowercaseHex) {
  // SHA-256("abc"), the FIPS 180-2 example.
  EXPECT_EQ(cert_name_for_der(derpd::as_bytes("abc")),
            "sha256-raw:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_FALSE(cert_name_for_pem("not a certificate").ok());
}

mode_t mode_of(const std::string& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

TEST(LoadOrCreate, CreatesOnceThenLoadsTheSameCertificate) {
  TempDir dir;
  std::string sub = dir.file("nested/certs");
  std::string crt = sub + "/127.0.0.1.crt";
  std::string key = sub + "/127.0.0.1.key";

  auto first = load_or_create_self_signed(crt, key, "127.0.0.1");
  ASSERT_TRUE(first.ok()) << first.error();
  EXPECT_TRUE(first->created);
  EXPECT_EQ(mode_of(key), 0600u);
  EXPECT_EQ(mode_of(crt), 0644u);
  EXPECT_EQ(mode_of(sub), 0700u);
  EXPECT_EQ(mode_of(dir.file("nested")), 0700u);
  EXPECT_EQ(mode_of(dir.path()), 0700u);  // mkdtemp's; an existing directory keeps its mode
  EXPECT_EQ(testing::read_file(crt), first->cert_pem);
  EXPECT_EQ(testing::read_file(key), first->key_pem);
  for (const auto& e : std::filesystem::directory_iterator(sub))  // no temporary files left
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();

  auto second = load_or_create_self_signed(crt, key, "127.0.0.1");
  ASSERT_TRUE(second.ok()) << second.error();
  EXPECT_FALSE(second->created);
  EXPECT_EQ(second->cert_name, first->cert_name);
  EXPECT_EQ(second->cert_pem, first->cert_pem);
  EXPECT_EQ(second->not_after, first->not_after);
}

TEST(LoadOrCreate, LeavesAnExistingDirectoryAlone) {
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  auto made = load_or_create_self_signed(dir.file("h.crt"), dir.file("h.key"), "derp.example.com");
  ASSERT_TRUE(made.ok()) << made.error();
  EXPECT_EQ(mode_of(dir.path()), 0755u);
}

TEST(LoadOrCreate, RefusesToReplaceAHalfPair) {
  TempDir dir;
  std::string crt = dir.file("h.crt");
  std::string key = dir.file("h.key");
  testing::write_file(key, "precious\n");
  auto r = load_or_create_self_signed(crt, key, "127.0.0.1");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find(crt), std::string::npos) << r.error();
  EXPECT_NE(r.error().find("refusing"), std::string::npos) << r.error();
  EXPECT_FALSE(std::filesystem::exists(crt));
  EXPECT_EQ(testing::read_file(key), "precious\n");
}

TEST(LoadOrCreate, ChecksAnExistingPair) {
  TempDir dir;
  std::string crt = dir.file("h.crt");
  std::string key = dir.file("h.key");
  auto a = generate_self_signed("127.0.0.1", std::time(nullptr));
  auto b = generate_self_signed("127.0.0.1", std::time(nullptr));
  ASSERT_TRUE(a.ok() && b.ok());

  testing::write_file(crt, a->cert_pem);
  testing::write_file(key, b->key_pem);
  auto mismatch = load_or_create_self_signed(crt, key, "127.0.0.1");
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.error().find("does not match"), std::string::npos) << mismatch.error();

  testing::write_file(key, a->key_pem);
  auto wrong_host = load_or_create_self_signed(crt, key, "192.0.2.1");
  ASSERT_FALSE(wrong_host.ok());
  EXPECT_NE(wrong_host.error().find("not valid for hostname \"192.0.2.1\""), std::string::npos) << wrong_host.error();

  testing::write_file(crt, "garbage\n");
  auto garbage = load_or_create_self_signed(crt, key, "127.0.0.1");
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.error().find(crt), std::string::npos) << garbage.error();
  EXPECT_EQ(testing::read_file(crt), "garbage\n");  // never overwritten
}

TEST(ReadPemFile, ErrorsNameTheFile) {
  TempDir dir;
  auto missing = read_pem_file(dir.file("nope.crt"), "certificate file");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error(), "certificate file " + dir.file("nope.crt") + ": No such file or directory");

  auto directory = read_pem_file(dir.path(), "key file");
  ASSERT_FALSE(directory.ok());
  EXPECT_NE(directory.error().find("not a regular file"), std::string::npos);

  testing::write_file(dir.file("empty"), "");
  EXPECT_FALSE(read_pem_file(dir.file("empty"), "key file").ok());

  testing::write_file(dir.file("big"), std::string(kMaxPemFileBytes + 1, 'A'));
  auto big = read_pem_file(dir.file("big"), "certificate file");
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().find("larger than"), std::string::npos);

  testing::write_file(dir.file("ok"), "hello");
  auto ok = read_pem_file(dir.file("ok"), "certificate file");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, "hello");
}

TEST(ParsePem, SkipsOtherBlocksAndRejectsMalformedOnes) {
  auto pki = testing::make_pki("derp.example.com");
  // A key block before the certificates is skipped, as Go's X509KeyPair does.
  auto chain = detail::parse_cert_chain(pki.leaf.key_pem + pki.chain_pem());
  ASSERT_TRUE(chain.ok()) << chain.error();
  EXPECT_EQ(sk_X509_num(chain->chain.get()), 1);

  std::string broken = pki.leaf.cert_pem;
  broken[broken.size() / 2] = '!';
  auto bad = detail::parse_cert_chain(broken);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("malformed certificate"), std::string::npos) << bad.error();

  // A key file holding the certificate first and then the key works, as with Go.
  auto combined = detail::parse_private_key(pki.leaf.cert_pem + pki.leaf.key_pem);
  ASSERT_TRUE(combined.ok()) << combined.error();
  EXPECT_TRUE(detail::key_matches_cert(pki.leaf.cert.get(), combined->get()));

  auto none = detail::parse_private_key(pki.leaf.cert_pem);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().find("no private key"), std::string::npos) << none.error();
}

}  // namespace
}  // namespace derpd::tls
