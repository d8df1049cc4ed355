#include "client/nat/compare.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "client/nat/classifier.h"
#include "tests/unit/nat/nat_sim.h"

namespace derpd::nat {
namespace {

Endpoint ep(const char* t) { return *Endpoint::parse(t); }

constexpr auto kNone = Behavior::kNone;
constexpr auto kEI = Behavior::kEndpointIndependent;
constexpr auto kAD = Behavior::kAddressDependent;
constexpr auto kAPD = Behavior::kAddressAndPortDependent;
constexpr auto kUnk = Behavior::kUnknown;

FamilyVerdict fv(Behavior mapping, Behavior filtering, std::vector<const char*> publics = {}) {
  FamilyVerdict f;
  f.tested = true;
  f.udp = true;
  f.mapping = mapping;
  f.filtering = filtering;
  f.mapping_endpoint_dependent = mapping == kAD || mapping == kAPD;
  for (const char* p : publics) f.public_addresses.push_back(ep(p));
  return f;
}

// Endpoint-dependent, ADM vs APDM undecided (two single-IP servers saw different ports).
FamilyVerdict edm_unknown(std::vector<const char*> publics) {
  FamilyVerdict f = fv(kUnk, kUnk, std::move(publics));
  f.mapping_endpoint_dependent = true;
  return f;
}

FamilyVerdict blocked() {
  FamilyVerdict f;
  f.tested = true;
  return f;
}

Verdict v4(FamilyVerdict f) {
  Verdict v;
  v.ipv4 = std::move(f);
  return v;
}

// A symmetric NAT keeping one public IP, and one spreading over several.
const std::vector<const char*> kOneIp = {"198.51.100.5:1000", "198.51.100.5:1001"};
const std::vector<const char*> kTwoIps = {"198.51.100.5:1000", "198.51.100.6:1001"};

struct Row {
  std::string name;
  Verdict a;
  Verdict b;
  Direct direct;
  CompareRule rule;
};
std::ostream& operator<<(std::ostream& os, const Row& r) { return os << r.name; }

using R = CompareRule;

std::vector<Row> table() {
  std::vector<Row> t;
  // EIM (any filtering) vs EIM (any filtering): yes.
  t.push_back({"eim_apdf_vs_eim_apdf", v4(fv(kEI, kAPD)), v4(fv(kEI, kAPD)), Direct::kYes, R::kBothEasy});
  t.push_back({"eim_adf_vs_eim_eif", v4(fv(kEI, kAD)), v4(fv(kEI, kEI)), Direct::kYes, R::kBothEasy});
  t.push_back({"firewall_vs_eim_apdf", v4(fv(kNone, kAPD)), v4(fv(kEI, kAPD)), Direct::kYes, R::kBothEasy});
  // No NAT / EIM+EIF vs anything with UDP: yes.
  t.push_back({"open_internet_vs_apdm", v4(fv(kNone, kNone)), v4(fv(kAPD, kAPD, kTwoIps)), Direct::kYes,
               R::kOpenFiltering});
  t.push_back({"full_cone_vs_adm", v4(fv(kEI, kEI)), v4(fv(kAD, kAPD, kTwoIps)), Direct::kYes, R::kOpenFiltering});
  t.push_back({"full_cone_vs_unknown_mapping", v4(fv(kEI, kEI)), v4(fv(kUnk, kUnk)), Direct::kYes,
               R::kResolvedOverUnknowns});
  // EIM+ADF vs EDM: yes when the EDM side keeps one public IP, no when it varies.
  t.push_back({"eim_adf_vs_apdm_one_ip", v4(fv(kEI, kAD)), v4(fv(kAPD, kAPD, kOneIp)), Direct::kYes,
               R::kAdfVsEdmSameIp});
  t.push_back({"eim_adf_vs_edm_unknown_one_ip", v4(fv(kEI, kAD)), v4(edm_unknown(kOneIp)), Direct::kYes,
               R::kAdfVsEdmSameIp});
  t.push_back({"eim_adf_vs_adm_two_ips", v4(fv(kEI, kAD)), v4(fv(kAD, kAPD, kTwoIps)), Direct::kNo,
               R::kAdfVsEdmIpVaries});
  // EIM+APDF vs EDM: no (birthday note).
  t.push_back({"eim_apdf_vs_apdm", v4(fv(kEI, kAPD)), v4(fv(kAPD, kAPD, kOneIp)), Direct::kNo, R::kApdfVsEdm});
  t.push_back({"firewall_apdf_vs_adm", v4(fv(kNone, kAPD)), v4(fv(kAD, kUnk, kOneIp)), Direct::kNo, R::kApdfVsEdm});
  t.push_back({"eim_apdf_vs_edm_unknown", v4(fv(kEI, kAPD)), v4(edm_unknown(kTwoIps)), Direct::kNo, R::kApdfVsEdm});
  // EDM vs EDM: no.
  t.push_back({"apdm_vs_adm", v4(fv(kAPD, kAPD, kOneIp)), v4(fv(kAD, kEI, kOneIp)), Direct::kNo, R::kBothHard});
  t.push_back({"edm_unknown_vs_apdm", v4(edm_unknown(kTwoIps)), v4(fv(kAPD, kUnk, kOneIp)), Direct::kNo,
               R::kBothHard});
  // UDP blocked vs anything: no.
  t.push_back({"udp_blocked_vs_open", v4(blocked()), v4(fv(kNone, kNone)), Direct::kNo, R::kUdpBlocked});
  t.push_back({"udp_blocked_both", v4(blocked()), v4(blocked()), Direct::kNo, R::kUdpBlocked});
  // Unknowns: settled only when every possibility agrees.
  t.push_back({"eim_unknown_filtering_vs_eim", v4(fv(kEI, kUnk)), v4(fv(kEI, kAPD)), Direct::kYes, R::kBothEasy});
  t.push_back({"eim_unknown_filtering_vs_apdm", v4(fv(kEI, kUnk)), v4(fv(kAPD, kAPD, kOneIp)), Direct::kUnknown,
               R::kDependsOnUnknown});
  t.push_back({"eim_adf_vs_edm_ip_unknown", v4(fv(kEI, kAD)), v4(edm_unknown({})), Direct::kUnknown,
               R::kDependsOnUnknown});
  t.push_back({"unknown_mapping_apdf_vs_apdm", v4(fv(kUnk, kAPD)), v4(fv(kAPD, kAPD, kOneIp)), Direct::kNo,
               R::kResolvedOverUnknowns});
  t.push_back({"unknown_mapping_vs_eim_apdf", v4(fv(kUnk, kUnk)), v4(fv(kEI, kAPD)), Direct::kUnknown,
               R::kDependsOnUnknown});
  t.push_back({"unknown_vs_unknown", v4(fv(kUnk, kUnk)), v4(fv(kUnk, kUnk)), Direct::kUnknown,
               R::kDependsOnUnknown});
  return t;
}

class CompareTable : public ::testing::TestWithParam<Row> {};

TEST_P(CompareTable, MatchesTheTableBothWays) {
  const Row& r = GetParam();
  const CompareResult ab = compare(r.a, r.b);
  EXPECT_EQ(to_string(ab.direct), to_string(r.direct));
  EXPECT_EQ(to_string(ab.rule), to_string(r.rule));
  EXPECT_FALSE(ab.reason.empty());
  const CompareResult ba = compare(r.b, r.a);
  EXPECT_EQ(ba.direct, ab.direct);
  EXPECT_EQ(ba.rule, ab.rule);
  EXPECT_EQ(ab.birthday.has_value(), r.rule == R::kApdfVsEdm);
  if (r.rule == R::kUdpBlocked) {
    EXPECT_FALSE(ab.family.has_value());
  } else {
    EXPECT_EQ(ab.family, Family::V4);
  }
}

INSTANTIATE_TEST_SUITE_P(Nat, CompareTable, ::testing::ValuesIn(table()),
                         [](const ::testing::TestParamInfo<Row>& p) { return p.param.name; });

TEST(Compare, ReasonNamesTheEasyAndHardSide) {
  const auto r = compare(v4(fv(kAPD, kAPD, kOneIp)), v4(fv(kEI, kAPD)));
  EXPECT_NE(r.reason.find("B filters by address and port"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("A's NAT picks a new public port"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("98%"), std::string::npos) << r.reason;
}

TEST(Compare, BirthdayProbability) {
  EXPECT_NEAR(birthday_probability(256, 1024), 0.98, 0.005);
  EXPECT_NEAR(birthday_probability(256, 1), 256.0 / 65535.0, 1e-12);
  EXPECT_DOUBLE_EQ(birthday_probability(256, 0), 0.0);
  EXPECT_DOUBLE_EQ(birthday_probability(0, 1024), 0.0);
  EXPECT_DOUBLE_EQ(birthday_probability(65535, 1), 1.0);
  EXPECT_LT(birthday_probability(256, 512), birthday_probability(256, 1024));
  const auto r = compare(v4(fv(kEI, kAPD)), v4(fv(kAPD, kAPD, kOneIp)));
  ASSERT_TRUE(r.birthday);
  EXPECT_EQ(r.birthday->hard_ports, 256);
  EXPECT_EQ(r.birthday->probes, 1024);
  EXPECT_DOUBLE_EQ(r.birthday->probability, birthday_probability(256, 1024));
}

TEST(Compare, FamiliesAreJudgedApartAndTheBestWins) {
  Verdict a = v4(fv(kAPD, kAPD, kOneIp));
  Verdict b = v4(fv(kAD, kAPD, kTwoIps));
  EXPECT_EQ(compare(a, b).direct, Direct::kNo);
  a.ipv6 = fv(kNone, kAPD, {"[2001:db8::1]:40000"});
  b.ipv6 = fv(kNone, kAPD, {"[2001:db8::2]:40000"});
  const auto r = compare(a, b);
  EXPECT_EQ(r.direct, Direct::kYes);
  EXPECT_EQ(r.family, Family::V6);
  EXPECT_EQ(r.rule, CompareRule::kBothEasy);
  EXPECT_NE(r.reason.find("IPv6"), std::string::npos);
}

TEST(Compare, NoCommonFamily) {
  Verdict a = v4(fv(kEI, kEI));
  Verdict b;
  b.ipv4 = blocked();
  b.ipv6 = fv(kNone, kNone);
  const auto r = compare(a, b);
  EXPECT_EQ(r.direct, Direct::kNo);
  EXPECT_EQ(r.rule, CompareRule::kNoCommonFamily);
  EXPECT_FALSE(r.family);
}

TEST(Compare, SamePublicIpIsNoted) {
  const auto r = compare(v4(fv(kEI, kAPD, {"192.0.2.1:40000"})), v4(fv(kEI, kAPD, {"192.0.2.1:41000"})));
  EXPECT_TRUE(r.same_public_ip);
  EXPECT_NE(r.reason.find("192.0.2.1"), std::string::npos);
  EXPECT_FALSE(compare(v4(fv(kEI, kAPD, {"192.0.2.1:40000"})), v4(fv(kEI, kAPD, {"192.0.2.2:40000"}))).same_public_ip);
}

// Classified simulated NATs, compared: the lab's pairs.
FamilyVerdict classified(std::vector<sim::NatLayer> layers, const char* host = "10.0.0.2") {
  sim::World w;
  w.host = Endpoint{*IpAddr::parse(host), 0};
  w.layers = std::move(layers);
  w.servers = {sim::rfc5780_server(Family::V4), sim::single_ip_server(Family::V4, 1)};
  return classify_family(sim::run_probe(w));
}

TEST(Compare, SimulatedLabPairs) {
  const IpAddr w1 = *IpAddr::parse("192.0.2.1");
  const IpAddr w2 = *IpAddr::parse("192.0.2.2");
  const Verdict port_restricted = v4(classified({{sim::Map::kEim, sim::Filt::kApdf, w1, true}}));
  const Verdict restricted = v4(classified({{sim::Map::kEim, sim::Filt::kAdf, w1, true}}));
  const Verdict symmetric = v4(classified({{sim::Map::kApdm, sim::Filt::kApdf, w2, true}}));
  const Verdict double_nat = v4(classified(
      {{sim::Map::kApdm, sim::Filt::kApdf, *IpAddr::parse("100.64.0.2"), true}, {sim::Map::kEim, sim::Filt::kApdf, w2, true}}));
  const Verdict open = v4(classified({}, "192.0.2.7"));

  EXPECT_EQ(compare(port_restricted, restricted).direct, Direct::kYes);
  EXPECT_EQ(compare(port_restricted, symmetric).rule, CompareRule::kApdfVsEdm);
  EXPECT_EQ(compare(port_restricted, double_nat).rule, CompareRule::kApdfVsEdm);
  // The symmetric NAT uses one public IP, so address-dependent filtering lets it in.
  EXPECT_EQ(compare(restricted, symmetric).rule, CompareRule::kAdfVsEdmSameIp);
  EXPECT_EQ(compare(symmetric, double_nat).rule, CompareRule::kBothHard);
  EXPECT_EQ(compare(open, double_nat).rule, CompareRule::kOpenFiltering);
}

TEST(CompareNames, Distinct) {
  std::vector<std::string_view> seen;
  for (int i = 0; i < static_cast<int>(CompareRule::kCount); ++i) {
    const auto n = to_string(static_cast<CompareRule>(i));
    EXPECT_NE(n, "invalid");
    EXPECT_EQ(std::count(seen.begin(), seen.end(), n), 0);
    seen.push_back(n);
  }
}

}  // namespace
}  // namespace derpd::nat
