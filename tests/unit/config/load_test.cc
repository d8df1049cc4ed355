// load(): file + flags precedence, dev mode, derived STUN addresses and other derived values.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/config/test_util.h"

namespace derpd::config::test {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr const char* kFile = R"(hostname: file.example.com
stun: false
stun-addr: ["127.0.0.1:3478", "[::1]:3478"]
mesh-with: [m1.example.com, m2.example.com]
workers: 2
log-level: warn
)";

TEST(Precedence, FlagsWinOverTheFileWhereverTheyAre) {
  TempFile f(kFile);
  for (auto args : std::vector<std::vector<std::string>>{
           {"--config", f.path(), "-hostname", "flag.example.com", "-stun", "--workers=5"},
           {"-hostname", "flag.example.com", "-stun", "--workers=5", "--config", f.path()},
           {"-hostname=flag.example.com", "-config=" + f.path(), "-stun=true", "-workers", "5"}}) {
    Config c = load_args(args).config;
    EXPECT_EQ(c.hostname, "flag.example.com");
    EXPECT_TRUE(c.stun_enabled);
    EXPECT_EQ(c.workers, 5u);
    // keys without a flag keep the file's value
    EXPECT_EQ(join(c.mesh_with), "m1.example.com,m2.example.com");
    EXPECT_EQ(c.log_level, LogLevel::kWarn);
    EXPECT_EQ(join(c.stun_addrs), "127.0.0.1:3478,[::1]:3478");
  }
}

TEST(Precedence, FileWinsOverDefaults) {
  TempFile f(kFile);
  Config c = load_args({"--config", f.path()}).config;
  EXPECT_EQ(c.hostname, "file.example.com");
  EXPECT_FALSE(c.stun_enabled);
  EXPECT_EQ(c.workers, 2u);
}

TEST(Precedence, RepeatedFlagListReplacesTheFileList) {
  TempFile f(kFile);
  Config c = load_args({"--config", f.path(), "--stun-addr", "127.0.0.9:4000"}).config;
  EXPECT_EQ(join(c.stun_addrs), "127.0.0.9:4000");
  Config m = load_args({"--config", f.path(), "-mesh-with", "x.example.com"}).config;
  EXPECT_EQ(join(m.mesh_with), "x.example.com");
}

TEST(Precedence, LastConfigFlagWins) {
  TempFile a("hostname: a.example.com\n");
  TempFile b("hostname: b.example.com\n");
  EXPECT_EQ(load_args({"--config", a.path(), "--config", b.path()}).config.hostname, "b.example.com");
}

TEST(Precedence, CrossFieldErrorNamesWhereTheValueCameFrom) {
  TempFile f("stun-addr: [\"127.0.0.1:3478\"]\nstun-alt-addr: \"127.0.0.2:3479\"\n");
  // file alone: valid
  EXPECT_EQ(load_args({"--config", f.path()}).config.stun_alt_addr->to_string(), "127.0.0.2:3479");
  // a flag makes the file's alternate invalid: the message points at the file line
  EXPECT_THAT(load_error({"--config", f.path(), "--stun-addr", "127.0.0.2:3478"}),
              StartsWith(f.path() + R"(:2: key "stun-alt-addr": the alternate IP must differ)"));
  // the flag's alternate overrides the file's: the message names the flag
  EXPECT_THAT(load_error({"--config", f.path(), "--stun-alt-addr=127.0.0.3:3478"}),
              StartsWith("flag --stun-alt-addr: the alternate port must differ"));
}

TEST(ConfigFile, ErrorsNameThePath) {
  EXPECT_THAT(load_error({"--config", "/nonexistent/derpd.yaml"}),
              StartsWith("--config /nonexistent/derpd.yaml: cannot open: No such file or directory"));
  EXPECT_THAT(load_error({"--config", ::testing::TempDir()}), HasSubstr("cannot read"));
  // bounded read: a device that never ends is refused, not read forever
  EXPECT_THAT(load_error({"--config", "/dev/zero"}), HasSubstr("too large"));
  TempFile bad("workers: 2\nbogus: 1\n");
  EXPECT_THAT(load_error({"--config", bad.path()}), StartsWith(bad.path() + R"(:2: key "bogus": unknown key)"));
}

TEST(ConfigFile, EmptyFileIsValid) {
  TempFile empty("");
  LoadResult r = load_args({"--config", empty.path(), "-a", ":8080"});
  EXPECT_EQ(r.config.derp_addr.port, 8080);
  EXPECT_EQ(r.config.hostname, "derp.tailscale.com");
}

// ---------------------------------------------------------------------------------------------
// Dev mode defaults, and explicit values winning over them.
TEST(DevMode, Defaults) {
  for (auto args : std::vector<std::vector<std::string>>{{"-dev"}, {"--dev"}, {"--dev=true"}}) {
    Config c = load_args(args).config;
    EXPECT_TRUE(c.dev);
    EXPECT_EQ(c.derp_addr.to_string(), "127.0.0.1:3340");
    EXPECT_EQ(join(effective_stun_addrs(c)), "127.0.0.1:3478");
    EXPECT_EQ(c.certmode, CertMode::kPlaintext);
    EXPECT_FALSE(serves_tls(c));
    EXPECT_EQ(c.http_port, -1);
    EXPECT_EQ(c.metrics_addr.to_string(), "127.0.0.1:9100");
    EXPECT_EQ(c.key_file, "");
    EXPECT_TRUE(c.unsupported.empty());
  }
}

struct DevOverride {
  std::vector<std::string> args;
  std::string key;
  std::string want;
};

void PrintTo(const DevOverride& c, std::ostream* os) { *os << join(c.args); }

class DevOverrides : public ::testing::TestWithParam<DevOverride> {};

TEST_P(DevOverrides, ExplicitValueWins) {
  const DevOverride& c = GetParam();
  Config cfg = load_args(c.args).config;
  EXPECT_TRUE(cfg.dev);
  EXPECT_EQ(field(cfg, c.key), c.want);
  // the other dev defaults stay
  if (c.key != "certmode") {
    EXPECT_EQ(cfg.certmode, CertMode::kPlaintext);
  }
  if (c.key != "key-file") {
    EXPECT_EQ(cfg.key_file, "");
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, DevOverrides,
    ::testing::Values(DevOverride{{"-dev", "-a", "127.0.0.1:4000"}, "addr", "127.0.0.1:4000"},
                      DevOverride{{"-a", "127.0.0.1:4000", "-dev"}, "addr", "127.0.0.1:4000"},
                      DevOverride{{"--a=:4000", "--dev"}, "addr", "0.0.0.0:4000"},
                      DevOverride{{"-dev", "--stun-addr", "127.0.0.1:5000"}, "stun-addr", "127.0.0.1:5000"},
                      DevOverride{{"-dev", "-stun-port", "5001"}, "stun-port", "5001"},
                      DevOverride{{"-dev", "-certmode", "dev"}, "certmode", "dev"},
                      DevOverride{{"-dev", "-c", "/tmp/k"}, "key-file", "/tmp/k"},
                      DevOverride{{"-dev", "-http-port", "8080"}, "http-port", "8080"},
                      DevOverride{{"-dev", "--metrics-addr", "127.0.0.1:0"}, "metrics-addr", "127.0.0.1:0"},
                      DevOverride{{"-dev", "-hostname", "localhost"}, "hostname", "localhost"}));

TEST(DevMode, StunFollowsAnExplicitAddr) {
  Config c = load_args({"-dev", "-a", "[::1]:4000"}).config;
  EXPECT_EQ(join(effective_stun_addrs(c)), "[::1]:3478");
  Config p = load_args({"-dev", "-stun-port", "5001"}).config;
  EXPECT_EQ(join(effective_stun_addrs(p)), "127.0.0.1:5001");
}

TEST(DevMode, FromTheFileWithFileAndFlagOverrides) {
  TempFile f("dev: true\naddr: \"127.0.0.1:5555\"\n");
  Config c = load_args({"--config", f.path()}).config;
  EXPECT_TRUE(c.dev);
  EXPECT_EQ(c.derp_addr.to_string(), "127.0.0.1:5555");  // file key beats the dev default
  EXPECT_EQ(c.http_port, -1);

  Config g = load_args({"--config", f.path(), "-a", "127.0.0.1:6666"}).config;
  EXPECT_EQ(g.derp_addr.to_string(), "127.0.0.1:6666");  // flag beats the file
}

TEST(DevMode, FlagCanTurnOffTheFilesDev) {
  TempFile f("dev: true\n");
  Config c = load_args({"--config", f.path(), "-dev=false", "-a", ":8080"}).config;
  EXPECT_FALSE(c.dev);
  EXPECT_EQ(c.derp_addr.to_string(), "0.0.0.0:8080");
  EXPECT_EQ(c.key_file, "/var/lib/derpd/derper.key");
  EXPECT_EQ(c.http_port, 80);
}

TEST(DevMode, EmbeddedDevYamlThroughLoad) {
  TempFile f{std::string(dev_yaml())};
  Config c = load_args({"--config", f.path(), "-a", "127.0.0.1:4000"}).config;
  EXPECT_TRUE(c.dev);
  EXPECT_EQ(c.derp_addr.to_string(), "127.0.0.1:4000");
  EXPECT_EQ(c.workers, 2u);
}

// ---------------------------------------------------------------------------------------------
// Derived values.
TEST(EffectiveStunAddrs, DerivedFromAddrLikeDerper) {
  EXPECT_EQ(join(effective_stun_addrs(load_args({}).config)), "0.0.0.0:3478,[::]:3478");
  EXPECT_EQ(join(effective_stun_addrs(load_args({"-a", "192.0.2.1:443", "-stun-port", "3479"}).config)),
            "192.0.2.1:3479");
  EXPECT_EQ(join(effective_stun_addrs(load_args({"-a", "[2001:db8::1]:443"}).config)), "[2001:db8::1]:3478");
  EXPECT_EQ(join(effective_stun_addrs(load_args({"-stun=false"}).config)), "");
  EXPECT_EQ(join(effective_stun_addrs(load_args({"-stun=false", "--stun-addr", "127.0.0.1:1"}).config)), "");
  // explicit addresses replace the derived one (stun-port then does not apply)
  EXPECT_EQ(join(effective_stun_addrs(
                load_args({"-stun-port", "9", "--stun-addr", "127.0.0.1:1", "--stun-addr", "[::1]:2"}).config)),
            "127.0.0.1:1,[::1]:2");
}

TEST(ServesTls, FollowsDerperRule) {
  Config c;
  c.certmode = CertMode::kLetsEncrypt;
  c.derp_addr.port = 443;
  EXPECT_TRUE(serves_tls(c));
  c.derp_addr.port = 8443;
  EXPECT_FALSE(serves_tls(c));
  c.certmode = CertMode::kManual;
  EXPECT_TRUE(serves_tls(c));
  c.certmode = CertMode::kDev;
  EXPECT_TRUE(serves_tls(c));
  c.certmode = CertMode::kPlaintext;
  c.derp_addr.port = 443;
  EXPECT_FALSE(serves_tls(c));
}

TEST(ManualCertPaths, DerperFileNames) {
  Config c;
  c.certdir = "/etc/derpd/certs/";
  c.hostname = "derp.example.com";
  EXPECT_EQ(manual_cert_paths(c), (std::pair<std::string, std::string>{"/etc/derpd/certs/derp.example.com.crt",
                                                                        "/etc/derpd/certs/derp.example.com.key"}));
  c.hostname = "2001:db8::1";  // derper drops characters outside [A-Za-z0-9.-]
  c.certdir = "/c";
  EXPECT_EQ(manual_cert_paths(c).first, "/c/2001db81.crt");
}

TEST(Finalize, ChecksAHandBuiltConfig) {
  Config c;
  c.stun_addrs = {*Endpoint::parse("127.0.0.1:1"), *Endpoint::parse("127.0.0.2:2")};
  EXPECT_THROW(finalize(c), Error);
  try {
    finalize(c);
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), StartsWith(R"(key "stun-addr": at most one address per family)"));
  }
  Config ok;
  ok.certmode = CertMode::kPlaintext;
  finalize(ok);
  finalize(ok);  // idempotent
  EXPECT_TRUE(ok.unsupported.empty());
  Config le;
  finalize(le);
  finalize(le);
  EXPECT_EQ(le.unsupported, std::vector<std::string>{"-certmode=letsencrypt"});
}

}  // namespace
}  // namespace derpd::config::test
