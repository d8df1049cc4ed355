// The YAML file: every key, type checks, errors with file:line and key, the shipped examples.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "config/options.h"
#include "tests/unit/config/test_util.h"

namespace derpd::config::test {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

Config from_yaml(const std::string& text) {
  Config c;
  apply_yaml(c, text, "derpd.yaml");
  return c;
}

TEST(Yaml, EmptyDocumentsAreAnEmptyConfig) {
  for (const char* text : {"", "\n\n", "# only a comment\n", "---\n", "~\n"}) {
    Config c = from_yaml(text);
    Config d;
    finalize(d);
    for (const auto& o : detail::options()) {
      if (o.scope == detail::Scope::kSetting) {
        EXPECT_EQ(field(c, std::string(o.name)), field(d, std::string(o.name)));
      }
    }
    EXPECT_EQ(c.unsupported, d.unsupported);
  }
}

TEST(Yaml, EveryKeyIsApplied) {
  Config c = from_yaml(R"(
addr: "[::1]:8443"
derp: false
http-port: -1
stun: false
stun-port: 3479
stun-addr:
  - "127.0.0.1:3478"
  - "[::1]:3478"
stun-alt-addr: "127.0.0.2:3480"
metrics-addr: "127.0.0.1:9200"
hostname: derp.example.com
certmode: manual
certdir: /etc/derpd/certs
key-file: /var/lib/derpd/k.key
mesh-with: [derp1.example.com, derp2.example.com/10.0.0.2]
mesh-psk-file: /etc/derpd/mesh.key
verify-client-url: "https://admit.example.com/derp"
verify-client-url-fail-open: false
bootstrap-dns-names: [login.example.com]
unpublished-bootstrap-dns-names: ["a.example.com/rollout.example.com"]
home: blank
workers: 8
dev: false
log-level: warn
)");
  EXPECT_EQ(c.derp_addr.to_string(), "[::1]:8443");
  EXPECT_FALSE(c.derp_enabled);
  EXPECT_EQ(c.http_port, -1);
  EXPECT_FALSE(c.stun_enabled);
  EXPECT_EQ(c.stun_port, 3479);
  EXPECT_EQ(join(c.stun_addrs), "127.0.0.1:3478,[::1]:3478");
  EXPECT_EQ(c.stun_alt_addr->to_string(), "127.0.0.2:3480");
  EXPECT_EQ(c.metrics_addr.to_string(), "127.0.0.1:9200");
  EXPECT_EQ(c.hostname, "derp.example.com");
  EXPECT_EQ(c.certmode, CertMode::kManual);
  EXPECT_EQ(c.certdir, "/etc/derpd/certs");
  EXPECT_EQ(c.key_file, "/var/lib/derpd/k.key");
  EXPECT_EQ(join(c.mesh_with), "derp1.example.com,derp2.example.com/10.0.0.2");
  EXPECT_EQ(c.mesh_psk_file, "/etc/derpd/mesh.key");
  EXPECT_EQ(c.verify_client_url, "https://admit.example.com/derp");
  EXPECT_FALSE(c.verify_client_url_fail_open);
  EXPECT_EQ(join(c.bootstrap_dns_names), "login.example.com");
  EXPECT_EQ(join(c.unpublished_bootstrap_dns_names), "a.example.com/rollout.example.com");
  EXPECT_EQ(c.home, "blank");
  EXPECT_EQ(c.workers, 8u);
  EXPECT_FALSE(c.dev);
  EXPECT_EQ(c.log_level, LogLevel::kWarn);
  EXPECT_TRUE(c.unsupported.empty());
  EXPECT_TRUE(effective_stun_addrs(c).empty());  // stun: false
}

// The same value written as a YAML key and as a flag gives the same field, different from the
// default. Every setting in the option table must have a row here.
struct Equivalence {
  std::string key;
  std::string yaml_value;
  std::string flag_value;
};

const std::vector<Equivalence>& equivalences() {
  static const std::vector<Equivalence> v{
      {"addr", "\"127.0.0.1:8443\"", "127.0.0.1:8443"},
      {"derp", "false", "false"},
      {"http-port", "8080", "8080"},
      {"stun", "false", "false"},
      {"stun-port", "3000", "3000"},
      {"stun-addr", "[\"127.0.0.1:3000\"]", "127.0.0.1:3000"},
      {"stun-alt-addr", "\"192.0.2.9:3479\"", "192.0.2.9:3479"},
      {"metrics-addr", "\"127.0.0.1:0\"", "127.0.0.1:0"},
      {"hostname", "derp.example.net", "derp.example.net"},
      {"certmode", "plaintext", "plaintext"},
      {"certdir", "/srv/certs", "/srv/certs"},
      {"key-file", "/srv/k", "/srv/k"},
      {"mesh-with", "[a.example.net, b.example.net]", "a.example.net,b.example.net"},
      {"mesh-psk-file", "/srv/psk", "/srv/psk"},
      {"verify-client-url", "http://127.0.0.1:1/x", "http://127.0.0.1:1/x"},
      {"verify-client-url-fail-open", "false", "false"},
      {"bootstrap-dns-names", "[x.example.net]", "x.example.net"},
      {"unpublished-bootstrap-dns-names", "[y.example.net]", "y.example.net"},
      {"home", "https://example.net/", "https://example.net/"},
      {"workers", "3", "3"},
      {"max-connections", "250000", "250000"},
      {"dev", "true", "true"},
      {"log-level", "error", "error"},
  };
  return v;
}

TEST(Yaml, EveryKeyMatchesItsFlag) {
  Config defaults = load_args({}).config;
  for (const auto& e : equivalences()) {
    std::string prefix = e.key == "stun-alt-addr" ? "addr: \"192.0.2.1:443\"\n" : "";
    std::vector<std::string> flag_prefix;
    if (e.key == "stun-alt-addr") flag_prefix = {"-a", "192.0.2.1:443"};
    TempFile file(prefix + e.key + ": " + e.yaml_value + "\n");
    Config via_yaml = load_args({"--config", file.path()}).config;
    flag_prefix.push_back("--" + e.key + "=" + e.flag_value);
    Config via_flag = load_args(flag_prefix).config;
    EXPECT_EQ(field(via_yaml, e.key), field(via_flag, e.key)) << e.key;
    EXPECT_NE(field(via_yaml, e.key), field(defaults, e.key)) << e.key << " row does not change the default";
  }
  for (const auto& o : detail::options()) {
    if (o.scope != detail::Scope::kSetting) continue;
    bool covered = std::any_of(equivalences().begin(), equivalences().end(),
                               [&](const Equivalence& e) { return e.key == o.name; });
    EXPECT_TRUE(covered) << "no equivalence row for " << o.name;
  }
}

// ---------------------------------------------------------------------------------------------
// Errors: "<file>:<line>: key "<key>": <what>".
struct YamlErrorCase {
  std::string text;
  std::string prefix;    // the message starts with this
  std::string fragment;  // and contains this
};

void PrintTo(const YamlErrorCase& c, std::ostream* os) { *os << ::testing::PrintToString(c.text); }

class YamlErrors : public ::testing::TestWithParam<YamlErrorCase> {};

TEST_P(YamlErrors, NameFileLineAndKey) {
  const YamlErrorCase& c = GetParam();
  std::string msg = yaml_error(c.text);
  EXPECT_THAT(msg, StartsWith(c.prefix));
  EXPECT_THAT(msg, HasSubstr(c.fragment));
}

INSTANTIATE_TEST_SUITE_P(
    AllErrors, YamlErrors,
    ::testing::Values(
        // the example from the specification: line 7, after comments and other keys
        YamlErrorCase{"# derpd\n\nhostname: derp.example.com\n# STUN\nstun: true\n\nstun-port: abc\n",
                      R"(derpd.yaml:7: key "stun-port": )", R"(expected an integer 1-65535, got "abc")"},
        YamlErrorCase{"stun-port: 70000\n", R"(derpd.yaml:1: key "stun-port": )", R"(got "70000")"},
        YamlErrorCase{"stun-port: 3.5\n", R"(derpd.yaml:1: key "stun-port": )", R"(got "3.5")"},
        YamlErrorCase{"http-port: 0\n", R"(derpd.yaml:1: key "http-port": )", "-1 (off) or a port 1-65535"},
        YamlErrorCase{"hostname: a.example.com\nworkers: abc\n", R"(derpd.yaml:2: key "workers": )",
                      R"(expected an integer 0-1024, got "abc")"},
        YamlErrorCase{"workers: \"4\"\n", R"(derpd.yaml:1: key "workers": )",
                      R"(expected an unquoted integer, got the quoted string "4")"},
        YamlErrorCase{"workers: 2000\n", R"(derpd.yaml:1: key "workers": )", R"(got "2000")"},
        YamlErrorCase{"workers: [1]\n", R"(derpd.yaml:1: key "workers": )", "got a list"},
        YamlErrorCase{"\nhostname: [a, b]\n", R"(derpd.yaml:2: key "hostname": )", "expected a string, got a list"},
        YamlErrorCase{"hostname:\n", R"(derpd.yaml:1: key "hostname": )", "expected a string, got nothing"},
        YamlErrorCase{"hostname: {a: b}\n", R"(derpd.yaml:1: key "hostname": )", "got a mapping"},
        YamlErrorCase{"hostname: \"a b\"\n", R"(derpd.yaml:1: key "hostname": )", "expected a DNS name"},
        YamlErrorCase{"addr: nonsense\n", R"(derpd.yaml:1: key "addr": )", R"(got "nonsense")"},
        YamlErrorCase{"addr: \":70000\"\n", R"(derpd.yaml:1: key "addr": )", R"(got ":70000")"},
        YamlErrorCase{"metrics-addr: \"127.0.0.1:99999\"\n", R"(derpd.yaml:1: key "metrics-addr": )", "99999"},
        YamlErrorCase{"stun-addr: \"127.0.0.1:3478\"\n", R"(derpd.yaml:1: key "stun-addr": )",
                      "expected a list of strings"},
        YamlErrorCase{"stun-addr:\n  - \"127.0.0.1:3478\"\n  - bad\n", R"(derpd.yaml:3: key "stun-addr": )",
                      R"(got "bad")"},
        YamlErrorCase{"stun-addr: [\"127.0.0.1:1\",\n  \"127.0.0.2:2\"]\n", R"(derpd.yaml:2: key "stun-addr": )",
                      "at most one address per family, got 127.0.0.1:1 and 127.0.0.2:2 (both IPv4)"},
        YamlErrorCase{"stun-addr:\n  - [a]\n", R"(derpd.yaml:2: key "stun-addr": )",
                      "list entries must be strings, got a list"},
        YamlErrorCase{"mesh-with: [a.example.com, \"b c\"]\n", R"(derpd.yaml:1: key "mesh-with": )", R"(got "b c")"},
        YamlErrorCase{"mesh-with: a.example.com,b.example.com\n", R"(derpd.yaml:1: key "mesh-with": )",
                      "expected a list of strings"},
        YamlErrorCase{"stun: maybe\n", R"(derpd.yaml:1: key "stun": )", R"(expected true or false, got "maybe")"},
        YamlErrorCase{"stun: \"false\"\n", R"(derpd.yaml:1: key "stun": )", "got the quoted string"},
        YamlErrorCase{"dev: yes\n", R"(derpd.yaml:1: key "dev": )", R"(got "yes")"},
        YamlErrorCase{"certmode: acme\n", R"(derpd.yaml:1: key "certmode": )", R"(got "acme")"},
        YamlErrorCase{"log-level: loud\n", R"(derpd.yaml:1: key "log-level": )", R"(got "loud")"},
        YamlErrorCase{"home: ftp://x\n", R"(derpd.yaml:1: key "home": )", "http:// or https://"},
        YamlErrorCase{"key-file: {a: b}\n", R"(derpd.yaml:1: key "key-file": )", "got a mapping"},
        YamlErrorCase{"stun-alt-addr: 1.2.3.4\n", R"(derpd.yaml:1: key "stun-alt-addr": )", R"(got "1.2.3.4")"},
        // unknown keys, and derper-only / command-only flags used as keys
        YamlErrorCase{"hostname: a.example.com\nbogus: 1\n", R"(derpd.yaml:2: key "bogus": )", "unknown key"},
        YamlErrorCase{"a: \":443\"\n", R"(derpd.yaml:1: key "a": )", R"(the file uses the long name "addr")"},
        YamlErrorCase{"verify-clients: true\n", R"(derpd.yaml:1: key "verify-clients": )",
                      "-verify-clients is a command-line flag only"},
        YamlErrorCase{"config: /etc/x.yaml\n", R"(derpd.yaml:1: key "config": )", "command-line flag only"},
        YamlErrorCase{"hostname: a.example.com\nhostname: b.example.com\n", R"(derpd.yaml:2: key "hostname": )",
                      "given twice (first on line 1)"},
        YamlErrorCase{"? [a, b]\n: c\n", "derpd.yaml:1: ", "keys must be option names"},
        // not a mapping, malformed, several documents
        YamlErrorCase{"[1, 2]\n", "derpd.yaml:1: ", "expected a mapping of keys to values"},
        YamlErrorCase{"\n\njust a string\n", "derpd.yaml:3: ", "expected a mapping of keys to values"},
        YamlErrorCase{"hostname: a\nstun-addr: [\"127.0.0.1:1\"\nworkers: 2\n", "derpd.yaml:", "invalid YAML"},
        YamlErrorCase{"hostname: a\n  bad: indent\n", "derpd.yaml:2: ", "invalid YAML"},
        YamlErrorCase{"hostname: a.example.com\n---\nworkers: 2\n", "derpd.yaml:", "only one YAML document"},
        // cross-field rules point at the key's line
        YamlErrorCase{"stun-addr: [\"127.0.0.1:3478\"]\n\nstun-alt-addr: \"127.0.0.1:3479\"\n",
                      R"(derpd.yaml:3: key "stun-alt-addr": )", "the alternate IP must differ"},
        YamlErrorCase{"hostname: a.example.com\ncertmode: manual\n", R"(derpd.yaml:2: key "certmode": )",
                      "certmode manual needs certdir"}));

TEST(Yaml, MalformedYamlNamesTheLine) {
  std::string msg = yaml_error("hostname: a\nworkers: 2\nmesh-with: [a, b\n\n");
  EXPECT_THAT(msg, ::testing::MatchesRegex("derpd\\.yaml:[3-5]: invalid YAML: .*"));
}

TEST(Yaml, OriginIsTheGivenPath) {
  EXPECT_THAT(yaml_error("workers: x\n", "/etc/derpd/derpd.yaml"),
              StartsWith(R"(/etc/derpd/derpd.yaml:1: key "workers": )"));
}

TEST(Yaml, OversizedInputIsRefusedBeforeParsing) {
  std::string big(detail::kMaxYamlBytes + 1, '#');
  EXPECT_THAT(yaml_error(big), HasSubstr("too large"));
}

TEST(Yaml, DeepNestingIsAnErrorNotACrash) {
  std::string deep = "hostname: " + std::string(100000, '[') + "\n";
  EXPECT_THAT(yaml_error(deep), StartsWith("derpd.yaml:"));
}

TEST(Yaml, FailedApplyLeavesConfigUntouched) {
  Config c;
  c.hostname = "keep.example.com";
  EXPECT_THROW(apply_yaml(c, "hostname: other.example.com\nworkers: x\n", "f"), Error);
  EXPECT_EQ(c.hostname, "keep.example.com");
}

TEST(Yaml, EmptyListsAndEmptyStringsClear) {
  Config c = from_yaml("mesh-with: []\nkey-file: \"\"\nhome: \"\"\nstun-alt-addr: \"\"\n");
  EXPECT_TRUE(c.mesh_with.empty());
  EXPECT_EQ(c.key_file, "");
  EXPECT_FALSE(c.stun_alt_addr.has_value());
}

// ---------------------------------------------------------------------------------------------
// The shipped examples are loaded for real, so they cannot rot.
TEST(Examples, ProductionExampleLoads) {
  std::string path = std::string(DERPD_CONFIG_EXAMPLES_DIR) + "/derpd.yaml";
  std::string text = read_file(path);
  ASSERT_FALSE(text.empty()) << path;
  Config c;
  apply_yaml(c, text, path);
  EXPECT_EQ(c.hostname, "derp.example.com");
  EXPECT_EQ(c.certmode, CertMode::kManual);
  EXPECT_EQ(c.certdir, "/etc/derpd/certs");
  EXPECT_EQ(c.key_file, "/var/lib/derpd/derper.key");
  EXPECT_EQ(c.derp_addr.to_string(), "0.0.0.0:443");
  EXPECT_EQ(c.http_port, 80);
  EXPECT_TRUE(c.stun_enabled);
  EXPECT_EQ(join(effective_stun_addrs(c)), "0.0.0.0:3478,[::]:3478");
  EXPECT_EQ(c.metrics_addr.to_string(), "127.0.0.1:9100");
  EXPECT_TRUE(c.metrics_addr.addr.is_loopback());
  EXPECT_FALSE(c.dev);
  EXPECT_TRUE(serves_tls(c));
  EXPECT_TRUE(c.unsupported.empty());
  EXPECT_EQ(manual_cert_paths(c).first, "/etc/derpd/certs/derp.example.com.crt");

  // Through load() as the systemd unit runs it, too.
  LoadResult r = load_args({"--config", path});
  EXPECT_EQ(r.config.hostname, "derp.example.com");

  // It documents every key (set, or shown commented out).
  for (const auto& o : detail::options()) {
    if (o.scope != detail::Scope::kSetting) continue;
    std::string key = std::string(o.name) + ":";
    EXPECT_TRUE(text.find("\n" + key) != std::string::npos || text.find("# " + key) != std::string::npos)
        << "examples/derpd.yaml does not mention " << o.name;
  }
}

TEST(Examples, DevYamlLoadsAsDevMode) {
  Config c;
  apply_yaml(c, std::string(dev_yaml()), "dev.yaml");
  EXPECT_TRUE(c.dev);
  EXPECT_EQ(c.derp_addr.to_string(), "127.0.0.1:3340");
  EXPECT_EQ(c.certmode, CertMode::kPlaintext);
  EXPECT_EQ(c.http_port, -1);
  EXPECT_EQ(c.key_file, "");
  EXPECT_EQ(c.workers, 2u);
  EXPECT_EQ(c.log_level, LogLevel::kDebug);
  EXPECT_EQ(join(effective_stun_addrs(c)), "127.0.0.1:3478");
  EXPECT_FALSE(serves_tls(c));
  EXPECT_TRUE(c.unsupported.empty());
  EXPECT_THAT(std::string(dev_yaml()), HasSubstr("#"));  // commented
}

}  // namespace
}  // namespace derpd::config::test
