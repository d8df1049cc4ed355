// Command-line parsing: every flag form derper users write, derpd's own flags, errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "config/options.h"
#include "tests/unit/config/test_util.h"

namespace derpd::config::test {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// ---------------------------------------------------------------------------------------------
// One flag, every spelling: the field named `key` must render as `want`.
struct FormCase {
  std::vector<std::string> args;
  std::string key;
  std::string want;
};

void PrintTo(const FormCase& c, std::ostream* os) { *os << join(c.args) << " -> " << c.key << "=" << c.want; }

class FlagForms : public ::testing::TestWithParam<FormCase> {};

TEST_P(FlagForms, SetsField) {
  const FormCase& c = GetParam();
  LoadResult r = load_args(c.args);
  EXPECT_FALSE(r.exit_now);
  EXPECT_EQ(field(r.config, c.key), c.want);
}

INSTANTIATE_TEST_SUITE_P(
    AllForms, FlagForms,
    ::testing::Values(
        // -a: one or two dashes, "=" or a space, derper's three address forms
        FormCase{{"-a", ":8443"}, "addr", "0.0.0.0:8443"}, FormCase{{"--a=:8443"}, "addr", "0.0.0.0:8443"},
        FormCase{{"-a=127.0.0.1:8443"}, "addr", "127.0.0.1:8443"},
        FormCase{{"--a", "[::1]:8443"}, "addr", "[::1]:8443"}, FormCase{{"-addr", "10.1.2.3:80"}, "addr", "10.1.2.3:80"},
        FormCase{{"--addr=[2001:db8::5]:443"}, "addr", "[2001:db8::5]:443"},
        // ints, including a negative value as the next word
        FormCase{{"-http-port=-1"}, "http-port", "-1"}, FormCase{{"-http-port", "-1"}, "http-port", "-1"},
        FormCase{{"--http-port", "8080"}, "http-port", "8080"}, FormCase{{"--http-port=81"}, "http-port", "81"},
        FormCase{{"-stun-port", "3479"}, "stun-port", "3479"}, FormCase{{"--stun-port=1"}, "stun-port", "1"},
        FormCase{{"-stun-port=65535"}, "stun-port", "65535"},
        // Go booleans: bare flag, =true|false and strconv.ParseBool's spellings
        FormCase{{"-stun=false"}, "stun", "false"}, FormCase{{"--stun=0"}, "stun", "false"},
        FormCase{{"-stun=F"}, "stun", "false"}, FormCase{{"-stun=false", "-stun"}, "stun", "true"},
        FormCase{{"--stun=FALSE", "--stun=True"}, "stun", "true"}, FormCase{{"-derp=false"}, "derp", "false"},
        FormCase{{"--derp=f"}, "derp", "false"}, FormCase{{"-dev"}, "dev", "true"},
        FormCase{{"--dev=t"}, "dev", "true"}, FormCase{{"-dev=false"}, "dev", "false"},
        FormCase{{"-verify-client-url-fail-open=false"}, "verify-client-url-fail-open", "false"},
        FormCase{{"--verify-client-url-fail-open=1"}, "verify-client-url-fail-open", "true"},
        // -c and its long name
        FormCase{{"-c", "/var/lib/derper/derper.key"}, "key-file", "/var/lib/derper/derper.key"},
        FormCase{{"--c=/k"}, "key-file", "/k"}, FormCase{{"-key-file", "/k2"}, "key-file", "/k2"},
        FormCase{{"--key-file="}, "key-file", ""},
        // strings; a space-separated value may start with dashes (Go takes the next word)
        FormCase{{"-hostname", "derp.example.com"}, "hostname", "derp.example.com"},
        FormCase{{"--hostname=100.64.0.1"}, "hostname", "100.64.0.1"},
        FormCase{{"-certdir", "--odd-dir"}, "certdir", "--odd-dir"},
        FormCase{{"-certdir=/etc/derper"}, "certdir", "/etc/derper"},
        FormCase{{"-certmode", "manual", "-certdir", "/d"}, "certmode", "manual"},
        FormCase{{"--certmode=dev"}, "certmode", "dev"}, FormCase{{"-certmode=plaintext"}, "certmode", "plaintext"},
        FormCase{{"-mesh-psk-file", "/etc/derper/mesh.key"}, "mesh-psk-file", "/etc/derper/mesh.key"},
        FormCase{{"-verify-client-url", "http://127.0.0.1:9/admit"}, "verify-client-url", "http://127.0.0.1:9/admit"},
        FormCase{{"-home", "blank"}, "home", "blank"},
        FormCase{{"--home=https://example.com/?a=b"}, "home", "https://example.com/?a=b"},
        // comma lists (last occurrence wins, blanks trimmed, empty entries dropped)
        FormCase{{"-mesh-with", "a.example.com,b.example.com"}, "mesh-with", "a.example.com,b.example.com"},
        FormCase{{"-mesh-with= a , b ,"}, "mesh-with", "a,b"}, FormCase{{"-mesh-with", ""}, "mesh-with", ""},
        FormCase{{"-mesh-with=x", "-mesh-with=y/dial.y"}, "mesh-with", "y/dial.y"},
        FormCase{{"-bootstrap-dns-names", "a.com,b.com"}, "bootstrap-dns-names", "a.com,b.com"},
        FormCase{{"--unpublished-bootstrap-dns-names=x.com/txt.x.com"}, "unpublished-bootstrap-dns-names",
                 "x.com/txt.x.com"},
        // derpd's own
        FormCase{{"--stun-addr", "127.0.0.1:3478", "--stun-addr=[::1]:3478"}, "stun-addr", "127.0.0.1:3478,[::1]:3478"},
        FormCase{{"-stun-addr=127.0.0.1:0"}, "stun-addr", "127.0.0.1:0"},
        FormCase{{"--stun-addr", "127.0.0.1:3478", "--stun-alt-addr", "127.0.0.2:3479"}, "stun-alt-addr",
                 "127.0.0.2:3479"},
        FormCase{{"--stun-alt-addr="}, "stun-alt-addr", "none"},
        FormCase{{"--metrics-addr", "127.0.0.1:0"}, "metrics-addr", "127.0.0.1:0"},
        FormCase{{"-metrics-addr=[::1]:9200"}, "metrics-addr", "[::1]:9200"},
        FormCase{{"--workers", "4"}, "workers", "4"}, FormCase{{"-workers=0"}, "workers", "0"},
        FormCase{{"--workers=1024"}, "workers", "1024"}, FormCase{{"--log-level", "debug"}, "log-level", "debug"},
        FormCase{{"--max-connections", "50000"}, "max-connections", "50000"},
        FormCase{{"-log-level=error"}, "log-level", "error"},
        // Go: the last value of a repeated scalar flag wins
        FormCase{{"-hostname", "a.example.com", "-hostname", "b.example.com"}, "hostname", "b.example.com"},
        // "--" ends the flags (and nothing may follow)
        FormCase{{"-workers=3", "--"}, "workers", "3"}));

// ---------------------------------------------------------------------------------------------
// Real derper command lines from systemd units: accepted as is.
TEST(DerperCommandLines, ManualCertUnit) {
  LoadResult r = load_args({"-hostname", "derp.example.com", "-certmode", "manual", "-certdir", "/etc/derper", "-a",
                            ":443", "-stun-port", "3478", "-c", "/var/lib/derper/derper.key", "-verify-clients"});
  const Config& c = r.config;
  EXPECT_EQ(c.hostname, "derp.example.com");
  EXPECT_EQ(c.certmode, CertMode::kManual);
  EXPECT_EQ(c.certdir, "/etc/derper");
  EXPECT_EQ(c.derp_addr, (Endpoint{IpAddr::any(Family::V4), 443}));
  EXPECT_EQ(c.stun_port, 3478);
  EXPECT_EQ(c.key_file, "/var/lib/derper/derper.key");
  EXPECT_EQ(c.unsupported, std::vector<std::string>{"-verify-clients=true"});
  EXPECT_TRUE(serves_tls(c));
  EXPECT_EQ(manual_cert_paths(c),
            (std::pair<std::string, std::string>{"/etc/derper/derp.example.com.crt", "/etc/derper/derp.example.com.key"}));
}

TEST(DerperCommandLines, LetsEncryptUnitWithDoubleDashesAndEquals) {
  LoadResult r = load_args({"--hostname=derp.example.com", "--certmode=letsencrypt", "--certdir=/var/lib/derper/certs",
                            "--a=:443", "--http-port=80", "--stun-port=3478", "--verify-clients=true",
                            "--acme-email=ops@example.com", "--stun"});
  const Config& c = r.config;
  EXPECT_EQ(c.certmode, CertMode::kLetsEncrypt);
  EXPECT_EQ(c.http_port, 80);
  EXPECT_TRUE(c.stun_enabled);
  EXPECT_THAT(c.unsupported, ::testing::UnorderedElementsAre("-certmode=letsencrypt", "-verify-clients=true",
                                                             "-acme-email=ops@example.com"));
}

TEST(DerperCommandLines, IpHostnameOnCustomPorts) {
  LoadResult r = load_args({"-a", ":8443", "-http-port", "-1", "-stun-port", "3479", "-hostname", "203.0.113.5",
                            "-certmode", "manual", "-certdir", "/etc/derper/certs"});
  const Config& c = r.config;
  EXPECT_EQ(c.derp_addr.port, 8443);
  EXPECT_EQ(c.http_port, -1);
  EXPECT_EQ(c.hostname, "203.0.113.5");
  EXPECT_TRUE(serves_tls(c));  // manual means TLS on any port, as derper
  EXPECT_EQ(join(effective_stun_addrs(c)), "0.0.0.0:3479,[::]:3479");
  EXPECT_TRUE(c.unsupported.empty());
}

TEST(DerperCommandLines, EveryUnimplementedFlagIsRecordedNotFatal) {
  std::string out;
  LoadResult r = load_args(
      {"-hostname", "derp1.example.com", "-certmode", "manual", "-certdir", "/c", "-mesh-with",
       "derp1.example.com,derp2.example.com", "-mesh-psk-file", "/etc/derper/mesh.key", "-bootstrap-dns-names",
       "controlplane.example.com", "-tcp-keepalive-time", "10m", "-tcp-user-timeout=15s", "--tcp-write-timeout",
       "2s", "-accept-connection-limit", "100.5", "-accept-connection-burst", "200", "-rate-config",
       "/etc/derper/rate.json", "-socket", "/run/tailscale/tailscaled.sock", "-ace=false", "-secrets-url",
       "https://setec.example.com", "-secrets-path-prefix", "prod/derp", "-secrets-cache-dir", "/var/cache/derper",
       "-acme-eab-kid", "kid1", "-acme-eab-key", "c2VjcmV0LWhtYWM=", "-acme-ip-certs", "-verify-clients=false"},
      &out);
  EXPECT_FALSE(r.exit_now);
  EXPECT_EQ(join(r.config.mesh_with), "derp1.example.com,derp2.example.com");
  EXPECT_THAT(r.config.unsupported,
              ::testing::UnorderedElementsAre(
                  "-tcp-keepalive-time=10m", "-tcp-user-timeout=15s", "-tcp-write-timeout=2s",
                  "-accept-connection-limit=100.5", "-accept-connection-burst=200", "-rate-config=/etc/derper/rate.json",
                  "-socket=/run/tailscale/tailscaled.sock", "-ace=false", "-secrets-url=https://setec.example.com",
                  "-secrets-path-prefix=prod/derp", "-secrets-cache-dir=/var/cache/derper", "-acme-eab-kid=kid1",
                  "-acme-eab-key=(redacted)", "-acme-ip-certs=true", "-verify-clients=false"));
  // The secret never reaches the recorded list (which is logged).
  EXPECT_THAT(join(r.config.unsupported), ::testing::Not(HasSubstr("c2VjcmV0")));
}

TEST(DerperCommandLines, RepeatedUnsupportedFlagRecordsTheLastValueOnce) {
  LoadResult r = load_args({"-socket", "/a", "--socket=/b", "-certmode=plaintext"});
  EXPECT_EQ(r.config.unsupported, std::vector<std::string>{"-socket=/b"});
}

TEST(DerperCommandLines, CertModeGcpIsRecordedAsUnsupported) {
  LoadResult r = load_args({"-certmode=gcp", "-acme-eab-kid=k"});
  EXPECT_EQ(r.config.certmode, CertMode::kLetsEncrypt);
  EXPECT_THAT(r.config.unsupported, ::testing::UnorderedElementsAre("-certmode=gcp", "-acme-eab-kid=k"));
}

// derper serves TLS for letsencrypt only when -a's port is 443; only then is ACME missing.
TEST(DerperCommandLines, DefaultLetsEncryptIsNotedOnlyWhenTlsWouldBeServed) {
  LoadResult on443 = load_args({});
  EXPECT_TRUE(serves_tls(on443.config));
  EXPECT_EQ(on443.config.unsupported, std::vector<std::string>{"-certmode=letsencrypt"});

  LoadResult on8080 = load_args({"-a", ":8080"});
  EXPECT_FALSE(serves_tls(on8080.config));
  EXPECT_TRUE(on8080.config.unsupported.empty());

  LoadResult no_derp = load_args({"-derp=false"});
  EXPECT_TRUE(no_derp.config.unsupported.empty());

  LoadResult explicit_le = load_args({"-a", ":8080", "-certmode", "letsencrypt"});
  EXPECT_EQ(explicit_le.config.unsupported, std::vector<std::string>{"-certmode=letsencrypt"});

  LoadResult replaced = load_args({"-certmode", "letsencrypt", "-certmode", "plaintext"});
  EXPECT_TRUE(replaced.config.unsupported.empty());
}

// ---------------------------------------------------------------------------------------------
// --help and --version
TEST(HelpAndVersion, HelpListsEveryFlagAndTheFileFormat) {
  for (const char* h : {"--help", "-help", "-h", "--h"}) {
    std::string out;
    LoadResult r = load_args({"-workers=2", h, "-this-is-not-parsed"}, &out);
    EXPECT_TRUE(r.exit_now) << h;
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_THAT(out, HasSubstr("Usage: derpd"));
    for (const auto& o : detail::options()) {
      EXPECT_THAT(out, HasSubstr("--" + std::string(o.name))) << "usage does not list " << o.name;
    }
    EXPECT_THAT(out, HasSubstr("-a,--addr"));
    EXPECT_THAT(out, HasSubstr("-c,--key-file"));
    EXPECT_THAT(out, HasSubstr("YAML"));
    EXPECT_THAT(out, HasSubstr("hostname: derp.example.com"));
    EXPECT_EQ(out, usage());
  }
}

TEST(HelpAndVersion, ErrorsBeforeHelpStillWin) {
  EXPECT_THAT(load_error({"-bogus", "--help"}), HasSubstr("unknown flag -bogus"));
}

TEST(HelpAndVersion, VersionPrintsProjectVersion) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"--version"}, {"-version"}, {"-version=true"}, {"-hostname", "x.example.com", "--version"}}) {
    std::string out;
    LoadResult r = load_args(args, &out);
    EXPECT_TRUE(r.exit_now);
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(out, std::string("derpd ") + DERPD_VERSION + "\n");
  }
  EXPECT_EQ(version(), DERPD_VERSION);
  EXPECT_THAT(std::string(version()), ::testing::MatchesRegex("[0-9]+\\.[0-9]+\\.[0-9]+"));
}

TEST(HelpAndVersion, VersionFalseRunsNormally) {
  std::string out;
  LoadResult r = load_args({"-version=false", "-a", ":8080"}, &out);
  EXPECT_FALSE(r.exit_now);
  EXPECT_EQ(out, "");
}

// ---------------------------------------------------------------------------------------------
// Errors name the flag as written.
struct ErrorCase {
  std::vector<std::string> args;
  std::string prefix;    // the message starts with this
  std::string fragment;  // and contains this
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << join(c.args); }

class FlagErrors : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(FlagErrors, NamesTheFlag) {
  const ErrorCase& c = GetParam();
  std::string msg = load_error(c.args);
  EXPECT_THAT(msg, StartsWith(c.prefix));
  EXPECT_THAT(msg, HasSubstr(c.fragment));
}

INSTANTIATE_TEST_SUITE_P(
    AllErrors, FlagErrors,
    ::testing::Values(
        ErrorCase{{"-bogus"}, "unknown flag -bogus", "--help"}, ErrorCase{{"--bogus=1"}, "unknown flag --bogus", ""},
        ErrorCase{{"-A", ":443"}, "unknown flag -A", ""},
        ErrorCase{{"-stun-port", "abc"}, "flag -stun-port: ", R"(expected an integer 1-65535, got "abc")"},
        ErrorCase{{"-stun-port=0"}, "flag -stun-port: ", R"(got "0")"},
        ErrorCase{{"--stun-port=65536"}, "flag --stun-port: ", R"(got "65536")"},
        ErrorCase{{"-stun-port=3478x"}, "flag -stun-port: ", R"(got "3478x")"},
        ErrorCase{{"-http-port=0"}, "flag -http-port: ", "expected -1 (off) or a port 1-65535"},
        ErrorCase{{"-http-port", "-2"}, "flag -http-port: ", R"(got "-2")"},
        ErrorCase{{"-a", "443"}, "flag -a: ", R"(expected ":PORT", "IP:PORT" or "[IPv6]:PORT", got "443")"},
        ErrorCase{{"--a=1.2.3.4:99999"}, "flag --a: ", "99999"},
        ErrorCase{{"--addr=::1:443"}, "flag --addr: ", "::1:443"},
        ErrorCase{{"-a", "derp.example.com:443"}, "flag -a: ", "derp.example.com:443"},
        ErrorCase{{"-stun=maybe"}, "flag -stun: ", R"(expected true or false, got "maybe")"},
        ErrorCase{{"-dev=yes"}, "flag -dev: ", R"(got "yes")"},
        ErrorCase{{"-dev="}, "flag -dev: ", R"(got "")"},
        ErrorCase{{"-version=maybe"}, "flag -version: ", "expected true or false"},
        ErrorCase{{"-verify-clients=2"}, "flag -verify-clients: ", "expected true or false"},
        ErrorCase{{"-stun", "false"}, R"(unexpected argument "false")", "-stun=false"},
        ErrorCase{{"-hostname"}, "flag -hostname needs a value", ""},
        ErrorCase{{"--config"}, "flag --config needs a value", ""},
        ErrorCase{{"-hostname", "a/b"}, "flag -hostname: ", "expected a DNS name or IP address"},
        ErrorCase{{"-hostname="}, "flag -hostname: ", R"(got "")"},
        ErrorCase{{"-certmode", "acme"}, "flag -certmode: ",
                  R"(expected manual, dev, plaintext or letsencrypt, got "acme")"},
        ErrorCase{{"--stun-addr", "127.0.0.1:1", "--stun-addr", "127.0.0.2:2"}, "flag --stun-addr: ",
                  "at most one address per family"},
        ErrorCase{{"--stun-addr", ":3478"}, "flag --stun-addr: ", R"(expected "IP:PORT")"},
        ErrorCase{{"--workers", "1025"}, "flag --workers: ", R"(expected an integer 0-1024, got "1025")"},
        ErrorCase{{"--max-connections=-5"}, "flag --max-connections: ", R"(got "-5")"},
        ErrorCase{{"--workers=-1"}, "flag --workers: ", R"(got "-1")"},
        ErrorCase{{"--log-level", "verbose"}, "flag --log-level: ", R"(got "verbose")"},
        ErrorCase{{"--metrics-addr", "localhost:9100"}, "flag --metrics-addr: ", R"(got "localhost:9100")"},
        ErrorCase{{"-home", "ftp://x"}, "flag -home: ", R"(expected "", "blank" or an http:// or https:// URL)"},
        ErrorCase{{"-verify-client-url", "admit.example.com"}, "flag -verify-client-url: ", "http:// or https://"},
        ErrorCase{{"-mesh-with", "a.example.com,b c"}, "flag -mesh-with: ", R"(got "b c")"},
        ErrorCase{{"stray"}, R"(unexpected argument "stray")", ""},
        ErrorCase{{"-dev", "--", "x"}, R"(unexpected argument "x")", ""},
        ErrorCase{{"-"}, R"(unexpected argument "-")", ""},
        ErrorCase{{"---a=1"}, "bad flag syntax", "---a=1"}, ErrorCase{{"-=x"}, "bad flag syntax", ""},
        ErrorCase{{"--help=1"}, "flag --help takes no value", ""},
        // cross-field rules name the flag too
        ErrorCase{{"--stun-alt-addr", "127.0.0.1:3479"}, "flag --stun-alt-addr: ",
                  "needs a specific primary IP, but the primary STUN address is 0.0.0.0:3478"},
        ErrorCase{{"--stun-addr", "127.0.0.1:3478", "--stun-alt-addr", "127.0.0.1:3479"}, "flag --stun-alt-addr: ",
                  "the alternate IP must differ from the primary IP"},
        ErrorCase{{"--stun-addr", "127.0.0.1:3478", "-stun-alt-addr=127.0.0.2:3478"}, "flag -stun-alt-addr: ",
                  "the alternate port must differ from the primary port"},
        ErrorCase{{"--stun-addr", "127.0.0.1:3478", "--stun-alt-addr", "[::2]:3479"}, "flag --stun-alt-addr: ",
                  "[::2]:3479 is IPv6 but no stun-addr is IPv6"},
        ErrorCase{{"-a", "127.0.0.1:443", "--stun-alt-addr", "[::2]:3479"}, "flag --stun-alt-addr: ",
                  "derived from addr is IPv4 (127.0.0.1:3478)"},
        ErrorCase{{"--stun-addr", "[::1]:3478", "--stun-alt-addr", "[::]:3479"}, "flag --stun-alt-addr: ",
                  "must be a specific address"},
        ErrorCase{{"-certmode", "manual"}, "flag -certmode: ", "certmode manual needs certdir"},
        ErrorCase{{"--metrics-addr", "127.0.0.1:443"}, "flag --metrics-addr: ", "clashes with the DERP listener"},
        ErrorCase{{"-certmode", "manual", "-certdir", "/d", "-http-port", "443"}, "flag -http-port: ",
                  "also the DERP port"},
        ErrorCase{{"-certmode", "dev", "--metrics-addr", "0.0.0.0:80"}, "flag --metrics-addr: ",
                  "clashes with the HTTP listener on port 80"}));

// A valid alternate: the derived primary (IP of -a) is specific, other IP, other port.
TEST(StunAltAddr, AcceptedAgainstDerivedPrimary) {
  LoadResult r = load_args({"-a", "192.0.2.1:443", "-stun-port", "3478", "--stun-alt-addr", "192.0.2.2:3479"});
  EXPECT_EQ(r.config.stun_alt_addr, (Endpoint{*IpAddr::parse("192.0.2.2"), 3479}));
  EXPECT_EQ(join(effective_stun_addrs(r.config)), "192.0.2.1:3478");
}

// Tests bind port 0: two kernel-chosen ports always differ.
TEST(StunAltAddr, KernelChosenPortsAreAllowed) {
  LoadResult r = load_args({"--stun-addr", "127.0.0.1:0", "--stun-alt-addr", "127.0.0.2:0"});
  EXPECT_EQ(r.config.stun_alt_addr->to_string(), "127.0.0.2:0");
  EXPECT_THAT(load_error({"--stun-addr", "127.0.0.1:5", "--stun-alt-addr", "127.0.0.2:5"}),
              HasSubstr("the alternate port must differ"));
}

TEST(StunAltAddr, MatchesTheStunAddrOfItsFamily) {
  LoadResult r = load_args(
      {"--stun-addr", "192.0.2.1:3478", "--stun-addr", "[2001:db8::1]:3478", "--stun-alt-addr", "[2001:db8::2]:3479"});
  EXPECT_EQ(r.config.stun_alt_addr->to_string(), "[2001:db8::2]:3479");
}

// The option table itself: names are unique and every setting can be rendered by the tests.
TEST(OptionTable, NamesAndAliasesAreUnique) {
  std::set<std::string_view> seen;
  for (const auto& o : detail::options()) {
    EXPECT_TRUE(seen.insert(o.name).second) << o.name;
    if (!o.alias.empty()) {
      EXPECT_TRUE(seen.insert(o.alias).second) << o.alias;
    }
    EXPECT_FALSE(o.help.empty()) << o.name;
    EXPECT_EQ(o.scope == detail::Scope::kSetting, o.apply != nullptr) << o.name;
    EXPECT_EQ(detail::find_flag(o.name), &o);
    EXPECT_EQ(detail::find_yaml_key(o.name), o.scope == detail::Scope::kSetting ? &o : nullptr);
  }
  EXPECT_EQ(detail::find_flag("a")->name, "addr");
  EXPECT_EQ(detail::find_flag("c")->name, "key-file");
  EXPECT_EQ(detail::find_yaml_key("a"), nullptr);
}

}  // namespace
}  // namespace derpd::config::test
