// Server specs, server files and DERP maps: what is accepted, what is refused and how. Address
// literals only: these tests never look a name up.
#include <gtest/gtest.h>

#include <string>

#include "client/probe/servers.h"

namespace derpd::probe {
namespace {

IpAddr ip(const char* t) { return *IpAddr::parse(t); }

struct SpecCase {
  const char* text;
  const char* host;  // nullptr: refused
  std::uint16_t port;
  SpecError error;
};

class ServerSpecs : public ::testing::TestWithParam<SpecCase> {};

TEST_P(ServerSpecs, Parse) {
  const SpecCase& c = GetParam();
  auto r = parse_server_spec(c.text);
  if (c.host == nullptr) {
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.error(), c.error) << c.text;
    return;
  }
  ASSERT_TRUE(r.ok()) << c.text << ": " << to_string(r.error());
  EXPECT_EQ(r->host, c.host);
  EXPECT_EQ(r->port, c.port);
  EXPECT_EQ(r->v4.rule, AddrRule::kResolve);
  EXPECT_EQ(r->v6.rule, AddrRule::kResolve);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ServerSpecs,
    ::testing::Values(SpecCase{"stun.example.org", "stun.example.org", 3478, {}},
                      SpecCase{"stun.example.org:3479", "stun.example.org", 3479, {}},
                      SpecCase{"  derp1.example.com:443 ", "derp1.example.com", 443, {}},
                      SpecCase{"192.0.2.1", "192.0.2.1", 3478, {}},
                      SpecCase{"192.0.2.1:1", "192.0.2.1", 1, {}},
                      SpecCase{"[2001:db8::1]:3478", "2001:db8::1", 3478, {}},
                      SpecCase{"[2001:db8::1]", "2001:db8::1", 3478, {}},
                      SpecCase{"2001:db8::1", "2001:db8::1", 3478, {}},
                      SpecCase{"::1", "::1", 3478, {}},
                      SpecCase{"", nullptr, 0, SpecError::kEmpty},
                      SpecCase{"   ", nullptr, 0, SpecError::kEmpty},
                      SpecCase{"host:", nullptr, 0, SpecError::kBadPort},
                      SpecCase{"host:0", nullptr, 0, SpecError::kBadPort},
                      SpecCase{"host:65536", nullptr, 0, SpecError::kBadPort},
                      SpecCase{"host:12ab", nullptr, 0, SpecError::kBadPort},
                      SpecCase{"host:-1", nullptr, 0, SpecError::kBadPort},
                      SpecCase{"host:99999999999999999999", nullptr, 0, SpecError::kBadPort},
                      SpecCase{"[2001:db8::1", nullptr, 0, SpecError::kBadBrackets},
                      SpecCase{"[2001:db8::1]x:3478", nullptr, 0, SpecError::kBadBrackets},
                      SpecCase{"[192.0.2.1]:3478", nullptr, 0, SpecError::kBadHost},
                      SpecCase{"[not-an-ip]:3478", nullptr, 0, SpecError::kBadHost},
                      SpecCase{"a:b:c", nullptr, 0, SpecError::kBadHost},
                      SpecCase{":3478", nullptr, 0, SpecError::kBadHost},
                      SpecCase{"bad host:3478", nullptr, 0, SpecError::kBadHost},
                      SpecCase{"-leading.example", nullptr, 0, SpecError::kBadHost},
                      SpecCase{"host\x01name", nullptr, 0, SpecError::kBadHost}));

TEST(ServerSpecs, OverlongHostIsRefused) {
  EXPECT_EQ(parse_server_spec(std::string(254, 'a')).error(), SpecError::kBadHost);
  EXPECT_TRUE(parse_server_spec(std::string(253, 'a')).ok());
}

TEST(ServerList, CommentsBlanksAndEntries) {
  const auto list = parse_server_list(
      "# lab servers\n"
      "\n"
      "stun1.example.org\n"
      "  192.0.2.1:3479   # with a port\r\n"
      "[2001:db8::1]:3478\n"
      "#only a comment: stun2.example.org\n");
  EXPECT_TRUE(list.errors.empty());
  ASSERT_EQ(list.servers.size(), 3u);
  EXPECT_EQ(list.servers[0].host, "stun1.example.org");
  EXPECT_EQ(list.servers[1].host, "192.0.2.1");
  EXPECT_EQ(list.servers[1].port, 3479);
  EXPECT_EQ(list.servers[2].host, "2001:db8::1");
}

TEST(ServerList, BadLinesAreErrorsWithTheirLineNumbers) {
  const auto list = parse_server_list("ok.example\nhost:0\n\nbad entry here\n[::1\n");
  ASSERT_EQ(list.errors.size(), 3u);
  EXPECT_EQ(list.errors[0].line, 2u);
  EXPECT_EQ(list.errors[1].line, 4u);
  EXPECT_EQ(list.errors[2].line, 5u);
  EXPECT_NE(list.errors[0].message.find("port"), std::string::npos);
  EXPECT_EQ(list.servers.size(), 1u);
}

TEST(ServerList, OversizedFileIsRefusedWhole) {
  const std::string big(kMaxServerFileBytes + 1, '#');
  const auto list = parse_server_list(big);
  ASSERT_EQ(list.errors.size(), 1u);
  EXPECT_EQ(list.errors[0].line, 0u);
  EXPECT_TRUE(list.servers.empty());
}

TEST(ServerList, BinaryJunkGivesErrorsNotCrashes) {
  std::string junk;
  for (int i = 0; i < 4096; ++i) junk.push_back(static_cast<char>((i * 131) & 0xff));
  const auto list = parse_server_list(junk);
  EXPECT_FALSE(list.errors.empty());
}

// A map in Tailscale's format: region keys are IDs as text, listed out of order.
constexpr const char* kDerpMap = R"({
  "Regions": {
    "2": {"RegionID": 2, "RegionCode": "b", "Nodes": [
      {"Name": "2a", "RegionID": 2, "HostName": "derp2.example.com", "IPv4": "192.0.2.20", "IPv6": "2001:db8::20"},
      {"Name": "2b", "RegionID": 2, "HostName": "derp2b.example.com", "IPv4": "192.0.2.21", "IPv6": "none", "STUNPort": 3479}
    ]},
    "1": {"RegionID": 1, "RegionCode": "a", "Nodes": [
      {"Name": "1a", "RegionID": 1, "HostName": "derp1.example.com", "STUNPort": -1},
      {"Name": "1b", "RegionID": 1, "HostName": "derp1b.example.com", "STUNOnly": true, "STUNPort": 0}
    ]},
    "900": {"RegionID": 900, "NoMeasureNoHome": true, "Nodes": [
      {"Name": "900a", "HostName": "hidden.example.com", "IPv4": "192.0.2.90"}
    ]},
    "3": {"RegionID": 3, "Nodes": [
      {"Name": "3t", "HostName": "test.example.com", "STUNTestIP": "127.0.0.1", "STUNPort": 34780}
    ]}
  }
})";

TEST(DerpMap, NodesInRegionOrderWithTheirStunPorts) {
  auto r = parse_derp_map(kDerpMap);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const auto& s = r->servers;
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(r->stun_disabled, 1u);
  EXPECT_TRUE(r->warnings.empty());

  EXPECT_EQ(s[0].name, "1b");
  EXPECT_EQ(s[0].host, "derp1b.example.com");
  EXPECT_EQ(s[0].port, 3478);  // STUNPort 0 = default
  EXPECT_EQ(s[0].v4.rule, AddrRule::kResolve);
  EXPECT_EQ(s[0].v6.rule, AddrRule::kResolve);

  EXPECT_EQ(s[1].name, "2a");
  EXPECT_EQ(s[1].v4, (FamilyRule{AddrRule::kFixed, ip("192.0.2.20")}));
  EXPECT_EQ(s[1].v6, (FamilyRule{AddrRule::kFixed, ip("2001:db8::20")}));

  EXPECT_EQ(s[2].name, "2b");
  EXPECT_EQ(s[2].port, 3479);
  EXPECT_EQ(s[2].v6.rule, AddrRule::kDisabled);  // "none"

  EXPECT_EQ(s[3].name, "3t");
  EXPECT_EQ(s[3].v4, (FamilyRule{AddrRule::kFixed, ip("127.0.0.1")}));  // STUNTestIP wins
  EXPECT_EQ(s[3].v6.rule, AddrRule::kDisabled);
  EXPECT_EQ(s[3].port, 34780);
}

TEST(DerpMap, NotJsonIsRefused) {
  EXPECT_EQ(parse_derp_map("").error().code, DerpMapError::kNotJson);
  EXPECT_EQ(parse_derp_map("<html>nope</html>").error().code, DerpMapError::kNotJson);
  EXPECT_EQ(parse_derp_map("{\"Regions\": {").error().code, DerpMapError::kNotJson);
  EXPECT_EQ(parse_derp_map(std::string(1000, '[')).error().code, DerpMapError::kNotJson);
}

TEST(DerpMap, WrongShapesAreRefused) {
  EXPECT_EQ(parse_derp_map("[]").error().code, DerpMapError::kNoRegions);
  EXPECT_EQ(parse_derp_map("{}").error().code, DerpMapError::kNoRegions);
  EXPECT_EQ(parse_derp_map(R"({"Regions": []})").error().code, DerpMapError::kNoRegions);
  EXPECT_EQ(parse_derp_map(R"({"Regions": {}})").error().code, DerpMapError::kNoStunNodes);
}

TEST(DerpMap, NoStunCapableNodeIsRefusedWithTheReason) {
  auto r = parse_derp_map(R"({"Regions": {"1": {"RegionID": 1, "Nodes": [
      {"Name": "1a", "HostName": "derp1.example.com", "STUNPort": -1}]}}})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, DerpMapError::kNoStunNodes);
  EXPECT_NE(r.error().message().find("STUNPort -1"), std::string::npos) << r.error().message();
}

TEST(DerpMap, MalformedNodesAreSkippedWithWarnings) {
  auto r = parse_derp_map(R"({"Regions": {
      "1": {"RegionID": 1, "Nodes": [
        "not an object",
        {"Name": "p", "HostName": "a.example", "STUNPort": "3478"},
        {"Name": "q", "HostName": "a.example", "STUNPort": 70000},
        {"Name": "r", "HostName": 42},
        {"Name": "s", "HostName": "a.example", "IPv4": 1},
        {"Name": "t", "HostName": "x y", "IPv4": "none"},
        {"Name": "u", "IPv4": "none", "IPv6": "none"},
        {"Name": "v", "HostName": "ok.example"}
      ]},
      "2": "not a region",
      "3": {"RegionID": 3, "Nodes": {"not": "an array"}}
    }})");
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->servers.size(), 1u);
  EXPECT_EQ(r->servers[0].name, "v");
  EXPECT_EQ(r->warnings.size(), 9u);
}

TEST(DerpMap, OversizedMapIsRefusedBeforeParsing) {
  const std::string big(kMaxDerpMapBytes + 1, ' ');
  EXPECT_EQ(parse_derp_map(big).error().code, DerpMapError::kTooLarge);
}

TEST(Resolve, LiteralsAndFixedAddressesNeedNoLookup) {
  std::vector<ServerSpec> specs;
  specs.push_back(*parse_server_spec("192.0.2.1:3478"));
  specs.push_back(*parse_server_spec("[2001:db8::1]:3479"));
  specs.push_back(*parse_server_spec("192.0.2.1:3478"));  // duplicate
  ServerSpec fixed;
  fixed.name = "2a";
  fixed.host = "derp2.example.com";  // never looked up: both families fixed or disabled
  fixed.v4 = FamilyRule{AddrRule::kFixed, ip("192.0.2.20")};
  fixed.v6 = FamilyRule{AddrRule::kDisabled, IpAddr{}};
  specs.push_back(fixed);

  const auto r = resolve_servers(specs, true, true);
  ASSERT_EQ(r.targets.size(), 3u);
  EXPECT_EQ(r.targets[0].v4, Endpoint::parse("192.0.2.1:3478"));
  EXPECT_FALSE(r.targets[0].v6);
  EXPECT_EQ(r.targets[1].v6, Endpoint::parse("[2001:db8::1]:3479"));
  EXPECT_EQ(r.targets[2].name, "2a");
  EXPECT_EQ(r.targets[2].v4, Endpoint::parse("192.0.2.20:3478"));
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("same address"), std::string::npos);
}

TEST(Resolve, FamilyFilterAndCap) {
  std::vector<ServerSpec> specs;
  for (int i = 0; i < 70; ++i) specs.push_back(*parse_server_spec("192.0.2." + std::to_string(i + 1)));
  specs.push_back(*parse_server_spec("[2001:db8::1]"));
  const auto only6 = resolve_servers(specs, false, true);
  ASSERT_EQ(only6.targets.size(), 1u);
  EXPECT_TRUE(only6.targets[0].v6);
  const auto all = resolve_servers(specs, true, true);
  EXPECT_EQ(all.targets.size(), kMaxServers);
  EXPECT_NE(all.warnings.back().find("only the first"), std::string::npos);
}

}  // namespace
}  // namespace derpd::probe
