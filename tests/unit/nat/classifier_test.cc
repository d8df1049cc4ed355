#include "client/nat/classifier.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/unit/nat/nat_sim.h"

namespace derpd::nat {
namespace {

using sim::Filt;
using sim::Map;
using sim::NatLayer;
using sim::Quirk;
using sim::World;

IpAddr ip(const char* t) { return *IpAddr::parse(t); }
Endpoint ep(const char* t) { return *Endpoint::parse(t); }

constexpr auto kNone = Behavior::kNone;
constexpr auto kEI = Behavior::kEndpointIndependent;
constexpr auto kAD = Behavior::kAddressDependent;
constexpr auto kAPD = Behavior::kAddressAndPortDependent;
constexpr auto kUnk = Behavior::kUnknown;

NatLayer nat(Map m, Filt f, const char* public_ip = "192.0.2.1", bool preserve = true) {
  return NatLayer{m, f, ip(public_ip), preserve};
}
NatLayer firewall(Filt f) { return NatLayer{Map::kNone, f, IpAddr(), true}; }

enum class Servers { kRfc5780, kTwoSingle, kTwoPortsOneIp, kOneSingle };

std::vector<sim::Server> servers(Family f, Servers s, Quirk q = Quirk::kHonest) {
  switch (s) {
    case Servers::kRfc5780:
      return {sim::rfc5780_server(f, q)};
    case Servers::kTwoSingle:
      return {sim::single_ip_server(f, 1, 3478, q),
              sim::single_ip_server(f, 2, 3478, q == Quirk::kRealResponder ? q : Quirk::kHonest)};
    case Servers::kTwoPortsOneIp:
      return {sim::single_ip_server(f, 1, 3478, q), sim::single_ip_server(f, 1, 3479), sim::single_ip_server(f, 2)};
    case Servers::kOneSingle:
      return {sim::single_ip_server(f, 1, 3478, q)};
  }
  return {};
}

World world(std::vector<NatLayer> layers, Servers s, Quirk q = Quirk::kHonest) {
  World w;
  w.family = Family::V4;
  // Behind a NAT the host has a private address; without one, a public address.
  w.host = Endpoint{ip(layers.empty() || layers[0].map == Map::kNone ? "192.0.2.7" : "10.0.0.2"), 0};
  w.layers = std::move(layers);
  w.servers = servers(Family::V4, s, q);
  return w;
}

World blocked(Servers s) {
  World w = world({nat(Map::kEim, Filt::kApdf)}, s);
  w.udp_blocked = true;
  return w;
}

struct Expect {
  bool udp;
  Behavior mapping;
  Behavior filtering;
  bool endpoint_dependent;
  OldName old_name;
  Difficulty difficulty;
  PortPreservation ports;
  std::vector<AnomalyKind> anomalies;  // exactly these kinds, in any order
};

struct Case {
  std::string name;
  World world;
  Expect expect;
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

using P = PortPreservation;
using O = OldName;
using D = Difficulty;
using A = AnomalyKind;

std::vector<Case> ground_truth() {
  std::vector<Case> c;
  // --- An RFC 5780 server (two IPs, two ports): mapping and filtering both decidable. ---
  c.push_back({"no_nat", world({}, Servers::kRfc5780), {true, kNone, kNone, false, O::kOpenInternet, D::kEasy, P::kYes, {}}});
  c.push_back({"eim_eif", world({nat(Map::kEim, Filt::kEif)}, Servers::kRfc5780),
               {true, kEI, kEI, false, O::kFullCone, D::kEasy, P::kYes, {}}});
  c.push_back({"eim_adf", world({nat(Map::kEim, Filt::kAdf)}, Servers::kRfc5780),
               {true, kEI, kAD, false, O::kRestrictedCone, D::kEasy, P::kYes, {}}});
  c.push_back({"eim_apdf", world({nat(Map::kEim, Filt::kApdf)}, Servers::kRfc5780),
               {true, kEI, kAPD, false, O::kPortRestrictedCone, D::kEasy, P::kYes, {}}});
  c.push_back({"eim_apdf_random_ports", world({nat(Map::kEim, Filt::kApdf, "192.0.2.1", false)}, Servers::kRfc5780),
               {true, kEI, kAPD, false, O::kPortRestrictedCone, D::kEasy, P::kNo, {}}});
  c.push_back({"adm_apdf", world({nat(Map::kAdm, Filt::kApdf)}, Servers::kRfc5780),
               {true, kAD, kAPD, true, O::kSymmetric, D::kHard, P::kNo, {}}});
  // ADM + ADF: a reply from the other IP can never reach a mapping made for one IP, so no server
  // can prove it honours change-IP: filtering is honestly unknown.
  c.push_back({"adm_adf", world({nat(Map::kAdm, Filt::kAdf)}, Servers::kRfc5780),
               {true, kAD, kUnk, true, O::kSymmetric, D::kHard, P::kNo, {}}});
  // APDM + APDF: no CHANGE-REQUEST reply ever gets through, so nothing proves the server honours it.
  c.push_back({"apdm_apdf", world({nat(Map::kApdm, Filt::kApdf)}, Servers::kRfc5780),
               {true, kAPD, kUnk, true, O::kSymmetric, D::kHard, P::kNo, {}}});
  c.push_back({"apdm_eif", world({nat(Map::kApdm, Filt::kEif)}, Servers::kRfc5780),
               {true, kAPD, kEI, true, O::kSymmetric, D::kHard, P::kNo, {}}});
  c.push_back({"udp_blocked", blocked(Servers::kRfc5780),
               {false, kUnk, kUnk, false, O::kUdpBlocked, D::kUnknown, P::kUnknown, {}}});
  c.push_back({"double_nat_eim_outer_apdm_inner",
               world({nat(Map::kApdm, Filt::kApdf, "100.64.0.2"), nat(Map::kEim, Filt::kApdf)}, Servers::kRfc5780),
               {true, kAPD, kUnk, true, O::kSymmetric, D::kHard, P::kNo, {}}});
  c.push_back({"double_nat_eim_eif_outer_eim_apdf_inner",
               world({nat(Map::kEim, Filt::kApdf, "100.64.0.2"), nat(Map::kEim, Filt::kEif)}, Servers::kRfc5780),
               {true, kEI, kAPD, false, O::kPortRestrictedCone, D::kEasy, P::kYes, {}}});
  c.push_back({"firewall_apdf", world({firewall(Filt::kApdf)}, Servers::kRfc5780),
               {true, kNone, kAPD, false, O::kFirewall, D::kEasy, P::kYes, {}}});
  c.push_back({"firewall_adf", world({firewall(Filt::kAdf)}, Servers::kRfc5780),
               {true, kNone, kAD, false, O::kFirewall, D::kEasy, P::kYes, {}}});

  // --- Single-IP servers (Tailscale DERPs): filtering is never decidable. ---
  c.push_back({"single_ip_eim_apdf", world({nat(Map::kEim, Filt::kApdf)}, Servers::kTwoSingle),
               {true, kEI, kUnk, false, O::kUnknown, D::kEasy, P::kYes, {}}});
  c.push_back({"single_ip_apdm", world({nat(Map::kApdm, Filt::kApdf)}, Servers::kTwoSingle),
               {true, kUnk, kUnk, true, O::kSymmetric, D::kHard, P::kNo, {}}});
  c.push_back({"single_ip_adm", world({nat(Map::kAdm, Filt::kApdf)}, Servers::kTwoSingle),
               {true, kUnk, kUnk, true, O::kSymmetric, D::kHard, P::kNo, {}}});
  c.push_back({"single_ip_no_nat", world({}, Servers::kTwoSingle),
               {true, kNone, kUnk, false, O::kUnknown, D::kEasy, P::kYes, {}}});
  c.push_back({"single_ip_udp_blocked", blocked(Servers::kTwoSingle),
               {false, kUnk, kUnk, false, O::kUdpBlocked, D::kUnknown, P::kUnknown, {}}});
  c.push_back({"two_ports_one_ip_adm", world({nat(Map::kAdm, Filt::kApdf)}, Servers::kTwoPortsOneIp),
               {true, kAD, kUnk, true, O::kSymmetric, D::kHard, P::kNo, {}}});
  c.push_back({"two_ports_one_ip_apdm", world({nat(Map::kApdm, Filt::kApdf)}, Servers::kTwoPortsOneIp),
               {true, kAPD, kUnk, true, O::kSymmetric, D::kHard, P::kNo, {}}});
  c.push_back({"two_ports_one_ip_eim", world({nat(Map::kEim, Filt::kApdf)}, Servers::kTwoPortsOneIp),
               {true, kEI, kUnk, false, O::kUnknown, D::kEasy, P::kYes, {}}});
  c.push_back({"one_server_eim", world({nat(Map::kEim, Filt::kApdf)}, Servers::kOneSingle),
               {true, kUnk, kUnk, false, O::kUnknown, D::kUnknown, P::kYes, {}}});
  c.push_back({"one_server_apdm", world({nat(Map::kApdm, Filt::kApdf)}, Servers::kOneSingle),
               {true, kUnk, kUnk, false, O::kUnknown, D::kUnknown, P::kYes, {}}});
  c.push_back({"one_server_no_nat", world({}, Servers::kOneSingle),
               {true, kNone, kUnk, false, O::kUnknown, D::kEasy, P::kYes, {}}});

  // --- Servers that misbehave: the verdict must say unknown, never something wrong. ---
  c.push_back({"server_ignores_change_request", world({nat(Map::kEim, Filt::kApdf)}, Servers::kRfc5780, Quirk::kIgnoresChange),
               {true, kEI, kUnk, false, O::kUnknown, D::kEasy, P::kYes, {A::kChangeRequestIgnored}}});
  c.push_back({"server_answers_from_third_address",
               world({nat(Map::kEim, Filt::kAdf)}, Servers::kRfc5780, Quirk::kThirdAddress),
               {true, kEI, kUnk, false, O::kUnknown, D::kEasy, P::kYes, {A::kChangeRequestWrongSource}}});
  c.push_back({"server_lies_response_origin", world({nat(Map::kEim, Filt::kApdf)}, Servers::kRfc5780, Quirk::kLiesOrigin),
               {true, kEI, kUnk, false, O::kUnknown, D::kEasy, P::kYes, {A::kChangeRequestWrongSource}}});
  c.push_back({"server_without_response_origin",
               world({nat(Map::kEim, Filt::kApdf)}, Servers::kRfc5780, Quirk::kNoResponseOrigin),
               {true, kEI, kUnk, false, O::kUnknown, D::kEasy, P::kYes, {}}});
  // A naive test II against OTHER-ADDRESS = primary sees M2 == M1 and calls an APDM NAT "EIM".
  c.push_back({"other_address_is_primary", world({nat(Map::kApdm, Filt::kApdf)}, Servers::kOneSingle, Quirk::kOtherIsPrimary),
               {true, kUnk, kUnk, false, O::kUnknown, D::kUnknown, P::kYes,
                {A::kOtherAddressInvalid, A::kChangeRequestIgnored}}});
  c.push_back({"other_address_nowhere", world({nat(Map::kApdm, Filt::kApdf)}, Servers::kOneSingle, Quirk::kOtherNowhere),
               {true, kUnk, kUnk, false, O::kUnknown, D::kUnknown, P::kYes, {A::kChangeRequestIgnored}}});
  c.push_back({"other_address_changes", world({nat(Map::kEim, Filt::kApdf)}, Servers::kRfc5780, Quirk::kOtherChanges),
               {true, kEI, kUnk, false, O::kUnknown, D::kEasy, P::kYes, {A::kOtherAddressInconsistent}}});
  c.push_back({"mapped_wrong_family_rfc5780",
               world({nat(Map::kEim, Filt::kApdf)}, Servers::kRfc5780, Quirk::kWrongFamilyMapped),
               {true, kUnk, kAPD, false, O::kUnknown, D::kUnknown, P::kUnknown, {A::kMappedWrongFamily}}});
  c.push_back({"mapped_wrong_family_one_of_two",
               world({nat(Map::kEim, Filt::kApdf)}, Servers::kTwoSingle, Quirk::kWrongFamilyMapped),
               {true, kUnk, kUnk, false, O::kUnknown, D::kUnknown, P::kYes, {A::kMappedWrongFamily}}});

  // --- derpd's own responder as the server, through the real STUN codec both ways. ---
  const Quirk real = Quirk::kRealResponder;
  c.push_back({"derpd_no_nat", world({}, Servers::kRfc5780, real),
               {true, kNone, kNone, false, O::kOpenInternet, D::kEasy, P::kYes, {}}});
  c.push_back({"derpd_eim_eif", world({nat(Map::kEim, Filt::kEif)}, Servers::kRfc5780, real),
               {true, kEI, kEI, false, O::kFullCone, D::kEasy, P::kYes, {}}});
  c.push_back({"derpd_eim_adf", world({nat(Map::kEim, Filt::kAdf)}, Servers::kRfc5780, real),
               {true, kEI, kAD, false, O::kRestrictedCone, D::kEasy, P::kYes, {}}});
  c.push_back({"derpd_eim_apdf", world({nat(Map::kEim, Filt::kApdf)}, Servers::kRfc5780, real),
               {true, kEI, kAPD, false, O::kPortRestrictedCone, D::kEasy, P::kYes, {}}});
  c.push_back({"derpd_adm_apdf", world({nat(Map::kAdm, Filt::kApdf)}, Servers::kRfc5780, real),
               {true, kAD, kAPD, true, O::kSymmetric, D::kHard, P::kNo, {}}});
  c.push_back({"derpd_apdm_apdf", world({nat(Map::kApdm, Filt::kApdf)}, Servers::kRfc5780, real),
               {true, kAPD, kUnk, true, O::kSymmetric, D::kHard, P::kNo, {}}});
  c.push_back({"derpd_firewall_apdf", world({firewall(Filt::kApdf)}, Servers::kRfc5780, real),
               {true, kNone, kAPD, false, O::kFirewall, D::kEasy, P::kYes, {}}});
  c.push_back({"derpd_single_ip_apdm", world({nat(Map::kApdm, Filt::kApdf)}, Servers::kTwoSingle, real),
               {true, kUnk, kUnk, true, O::kSymmetric, D::kHard, P::kNo, {}}});
  return c;
}

class GroundTruth : public ::testing::TestWithParam<Case> {};

TEST_P(GroundTruth, ClassifiesAsTheSimulatedNat) {
  const Case& c = GetParam();
  const FamilyObservations obs = sim::run_probe(c.world);
  const FamilyVerdict v = classify_family(obs);
  EXPECT_TRUE(v.tested);
  EXPECT_EQ(v.udp, c.expect.udp);
  EXPECT_EQ(to_string(v.mapping), to_string(c.expect.mapping));
  EXPECT_EQ(to_string(v.filtering), to_string(c.expect.filtering));
  EXPECT_EQ(v.mapping_endpoint_dependent, c.expect.endpoint_dependent);
  EXPECT_EQ(to_string(old_name_of(v)), to_string(c.expect.old_name));
  EXPECT_EQ(to_string(difficulty_of(v)), to_string(c.expect.difficulty));
  EXPECT_EQ(to_string(v.port_preservation), to_string(c.expect.ports));
  std::vector<std::string> got, want;
  for (const auto& a : v.anomalies) got.emplace_back(to_string(a.kind));
  for (auto k : c.expect.anomalies) want.emplace_back(to_string(k));
  std::sort(got.begin(), got.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(got, want);
  EXPECT_FALSE(summary_of(v).empty());

  // classify() over both families puts this one on top (IPv6 untested).
  Observations all;
  all.ipv4 = obs;
  const Verdict full = classify(all);
  EXPECT_EQ(full.ipv4, v);
  EXPECT_FALSE(full.ipv6.tested);
  EXPECT_EQ(full.primary_family(), Family::V4);
  EXPECT_EQ(full.old_name, c.expect.old_name);
  EXPECT_EQ(full.difficulty, c.expect.difficulty);
  EXPECT_EQ(full.summary, summary_of(v));
}

INSTANTIATE_TEST_SUITE_P(Nat, GroundTruth, ::testing::ValuesIn(ground_truth()),
                         [](const ::testing::TestParamInfo<Case>& p) { return p.param.name; });

TEST(Classifier, PublicAddressesAndServerSummary) {
  const auto obs = sim::run_probe(world({nat(Map::kEim, Filt::kApdf)}, Servers::kRfc5780));
  const auto v = classify_family(obs);
  // L0 and the fresh filtering socket both keep their ports on 192.0.2.1.
  ASSERT_EQ(v.public_addresses.size(), 2u);
  EXPECT_EQ(v.public_addresses[0], ep("192.0.2.1:40000"));
  EXPECT_EQ(v.public_addresses[1], ep("192.0.2.1:41000"));
  ASSERT_EQ(v.servers.size(), 1u);
  const ServerResult& s = v.servers[0];
  EXPECT_EQ(s.name, "rfc5780");
  EXPECT_EQ(s.address, ep("203.0.113.10:3478"));
  EXPECT_EQ(s.other_address, ep("203.0.113.11:3479"));
  EXPECT_TRUE(s.rfc5780);
  EXPECT_EQ(s.change_request, ChangeRequestSupport::kHonoured);
  // L0: 4 plain + 3 CHANGE-REQUEST, all answered; fresh socket: 1 answered + 2 filtered.
  EXPECT_EQ(s.requests, 10u);
  EXPECT_EQ(s.replies, 8u);
  EXPECT_EQ(s.mapped, ep("192.0.2.1:40000"));
  EXPECT_EQ(s.rtt_min, std::chrono::microseconds(20000));
  EXPECT_EQ(s.rtt_max, std::chrono::microseconds(20000));
}

// Hand-built observations for the rules the simulated runs do not isolate.
struct Builder {
  FamilyObservations obs;
  Builder() {
    obs.family = Family::V4;
    obs.servers.push_back(ServerInfo{"s", ep("203.0.113.10:3478"), ep("203.0.113.11:3479")});
  }
  TestRecord& add(const char* local, const char* to, ChangeFlags change, Outcome outcome, const char* mapped = nullptr,
                  const char* from = nullptr) {
    TestRecord t;
    t.server = 0;
    t.local = ep(local);
    t.sent_to = ep(to);
    t.change = change;
    t.outcome = outcome;
    if (mapped) t.mapped = ep(mapped);
    if (from) {
      t.source = ep(from);
      t.response_origin = ep(from);
    }
    if (outcome == Outcome::kReply) {
      // What an RFC 5780 server says: the address opposite to where the request arrived.
      const Endpoint d = obs.servers[0].primary, c = *obs.servers[0].other_address;
      Endpoint o{t.sent_to.addr == d.addr ? c.addr : d.addr, t.sent_to.port == d.port ? c.port : d.port};
      t.other_address = o;
    }
    obs.tests.push_back(t);
    return obs.tests.back();
  }
};

constexpr ChangeFlags kPlain{};
constexpr ChangeFlags kBoth{true, true};
constexpr ChangeFlags kPort{false, true};
const char* const kDa = "203.0.113.10:3478";
const char* const kCaCp = "203.0.113.11:3479";
const char* const kDaCp = "203.0.113.10:3479";
const char* const kCaDp = "203.0.113.11:3478";

TEST(Classifier, TimeoutWithoutProofIsNoEvidence) {
  Builder b;
  b.add("10.0.0.2:41000", kDa, kPlain, Outcome::kReply, "192.0.2.1:41000", kDa);
  b.add("10.0.0.2:41000", kDa, kBoth, Outcome::kTimeout);
  b.add("10.0.0.2:41000", kDa, kPort, Outcome::kTimeout);
  const auto v = classify_family(b.obs);
  EXPECT_EQ(v.filtering, Behavior::kUnknown);
  EXPECT_EQ(v.servers[0].change_request, ChangeRequestSupport::kUnverified);

  // The same timeouts count once another socket proved both flag combinations.
  b.add("10.0.0.2:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa);
  b.add("10.0.0.2:40000", kCaCp, kPlain, Outcome::kReply, "192.0.2.1:40000", kCaCp);
  b.add("10.0.0.2:40000", kDaCp, kPlain, Outcome::kReply, "192.0.2.1:40000", kDaCp);
  b.add("10.0.0.2:40000", kDa, kBoth, Outcome::kReply, "192.0.2.1:40000", kCaCp);
  EXPECT_EQ(classify_family(b.obs).filtering, Behavior::kUnknown) << "only change-IP+port proven: not APDF yet";
  b.add("10.0.0.2:40000", kDa, kPort, Outcome::kReply, "192.0.2.1:40000", kDaCp);
  const auto v2 = classify_family(b.obs);
  EXPECT_EQ(v2.filtering, Behavior::kAddressAndPortDependent);
  EXPECT_EQ(v2.servers[0].change_request, ChangeRequestSupport::kHonoured);
  EXPECT_TRUE(v2.anomalies.empty());
}

TEST(Classifier, AnsweredChangeRequestOnUsedSocketIsNoEvidence) {
  Builder b;
  // This socket already sent to Ca:Cp, so the reply from there proves nothing about filtering.
  b.add("10.0.0.2:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa);
  b.add("10.0.0.2:40000", kCaCp, kPlain, Outcome::kReply, "192.0.2.1:40000", kCaCp);
  b.add("10.0.0.2:40000", kDa, kBoth, Outcome::kReply, "192.0.2.1:40000", kCaCp);
  auto v = classify_family(b.obs);
  EXPECT_EQ(v.filtering, Behavior::kUnknown);
  EXPECT_EQ(v.servers[0].change_request, ChangeRequestSupport::kHonoured);
  // On a fresh socket the same answer shows endpoint-independent filtering.
  b.add("10.0.0.2:41000", kDa, kPlain, Outcome::kReply, "192.0.2.1:41000", kDa);
  b.add("10.0.0.2:41000", kDa, kBoth, Outcome::kReply, "192.0.2.1:41000", kCaCp);
  v = classify_family(b.obs);
  EXPECT_EQ(v.filtering, Behavior::kEndpointIndependent);
  EXPECT_EQ(v.mapping, Behavior::kEndpointIndependent);
}

TEST(Classifier, FreshSocketNeedsAnAnsweredPlainRequestFirst) {
  Builder b;
  b.add("10.0.0.2:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa);
  b.add("10.0.0.2:40000", kCaCp, kPlain, Outcome::kReply, "192.0.2.1:40000", kCaCp);
  b.add("10.0.0.2:40000", kDaCp, kPlain, Outcome::kReply, "192.0.2.1:40000", kDaCp);
  b.add("10.0.0.2:40000", kDa, kBoth, Outcome::kReply, "192.0.2.1:40000", kCaCp);
  b.add("10.0.0.2:40000", kDa, kPort, Outcome::kReply, "192.0.2.1:40000", kDaCp);
  // Test I on the fresh socket was lost: its timeouts say nothing about the filter.
  b.add("10.0.0.2:41000", kDa, kPlain, Outcome::kTimeout);
  b.add("10.0.0.2:41000", kDa, kBoth, Outcome::kTimeout);
  b.add("10.0.0.2:41000", kDa, kPort, Outcome::kTimeout);
  EXPECT_EQ(classify_family(b.obs).filtering, Behavior::kUnknown);
}

TEST(Classifier, AddressDependentFiltering) {
  Builder b;
  b.add("10.0.0.2:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa);
  b.add("10.0.0.2:40000", kCaCp, kPlain, Outcome::kReply, "192.0.2.1:40000", kCaCp);
  b.add("10.0.0.2:40000", kDa, kBoth, Outcome::kReply, "192.0.2.1:40000", kCaCp);
  b.add("10.0.0.2:41000", kDa, kPlain, Outcome::kReply, "192.0.2.1:41000", kDa);
  b.add("10.0.0.2:41000", kDa, kBoth, Outcome::kTimeout);
  b.add("10.0.0.2:41000", kDa, kPort, Outcome::kReply, "192.0.2.1:41000", kDaCp);
  EXPECT_EQ(classify_family(b.obs).filtering, Behavior::kAddressDependent);
}

TEST(Classifier, ContradictoryFilteringIsUnknown) {
  Builder b;
  b.add("10.0.0.2:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa);
  b.add("10.0.0.2:40000", kCaCp, kPlain, Outcome::kReply, "192.0.2.1:40000", kCaCp);
  b.add("10.0.0.2:40000", kDa, kBoth, Outcome::kReply, "192.0.2.1:40000", kCaCp);
  // One fresh socket lets the other IP in, another does not.
  b.add("10.0.0.2:41000", kDa, kPlain, Outcome::kReply, "192.0.2.1:41000", kDa);
  b.add("10.0.0.2:41000", kDa, kBoth, Outcome::kReply, "192.0.2.1:41000", kCaCp);
  b.add("10.0.0.2:41001", kDa, kPlain, Outcome::kReply, "192.0.2.1:41001", kDa);
  b.add("10.0.0.2:41001", kDa, kBoth, Outcome::kTimeout);
  const auto v = classify_family(b.obs);
  EXPECT_EQ(v.filtering, Behavior::kUnknown);
  ASSERT_EQ(v.anomalies.size(), 1u);
  EXPECT_EQ(v.anomalies[0].kind, AnomalyKind::kFilteringContradictory);
}

TEST(Classifier, UnstableMappingIsUnknown) {
  Builder b;
  b.add("10.0.0.2:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa);
  b.add("10.0.0.2:40000", kCaDp, kPlain, Outcome::kReply, "192.0.2.1:40000", kCaDp);
  b.add("10.0.0.2:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40001", kDa);
  const auto v = classify_family(b.obs);
  EXPECT_EQ(v.mapping, Behavior::kUnknown);
  EXPECT_FALSE(v.mapping_endpoint_dependent);
  ASSERT_EQ(v.anomalies.size(), 1u);
  EXPECT_EQ(v.anomalies[0].kind, AnomalyKind::kMappingUnstable);
  EXPECT_EQ(v.anomalies[0].test, 2u);
}

TEST(Classifier, MappingSamplesOnlyCompareWithinOneSocket) {
  Builder b;
  // Different sockets naturally get different public ports: that is not endpoint dependence.
  b.add("10.0.0.2:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa);
  b.add("10.0.0.2:40001", kCaDp, kPlain, Outcome::kReply, "192.0.2.1:40001", kCaDp);
  EXPECT_EQ(classify_family(b.obs).mapping, Behavior::kUnknown);
  b.add("10.0.0.2:40000", kCaDp, kPlain, Outcome::kReply, "192.0.2.1:40000", kCaDp);
  EXPECT_EQ(classify_family(b.obs).mapping, Behavior::kEndpointIndependent);
}

TEST(Classifier, WildcardLocalUsesInterfaceAddresses) {
  Builder b;
  b.add("0.0.0.0:40000", kDa, kPlain, Outcome::kReply, "192.0.2.7:40000", kDa);
  b.add("0.0.0.0:40000", kCaDp, kPlain, Outcome::kReply, "192.0.2.7:40000", kCaDp);
  EXPECT_EQ(classify_family(b.obs).mapping, Behavior::kEndpointIndependent);
  b.obs.interface_addresses = {ip("10.9.9.9"), ip("192.0.2.7")};
  EXPECT_EQ(classify_family(b.obs).mapping, Behavior::kNone);
  // The port has to match too.
  b.obs.tests[1].mapped = ep("192.0.2.7:40001");
  b.obs.tests[1].mapped = ep("192.0.2.7:40001");
  EXPECT_NE(classify_family(b.obs).mapping, Behavior::kNone);
}

TEST(Classifier, FixedOtherAddressInRepliesToTheAlternateIsAccepted) {
  Builder b;
  b.add("10.0.0.2:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa);
  auto& t = b.add("10.0.0.2:40000", kCaCp, kPlain, Outcome::kReply, "192.0.2.1:40000", kCaCp);
  t.other_address = ep(kCaCp);  // some servers always advertise the same alternate
  EXPECT_TRUE(classify_family(b.obs).anomalies.empty());
  b.obs.tests[1].other_address = ep("203.0.113.11:4000");
  const auto v = classify_family(b.obs);
  ASSERT_EQ(v.anomalies.size(), 1u);
  EXPECT_EQ(v.anomalies[0].kind, AnomalyKind::kOtherAddressInconsistent);
  EXPECT_FALSE(v.servers[0].rfc5780);
}

TEST(Classifier, OtherAddressSharingIpOrPortWithPrimaryIsInvalid) {
  for (const char* other : {"203.0.113.10:3479", "203.0.113.11:3478", "203.0.113.10:3478", "[2001:db8::1]:3479"}) {
    Builder b;
    b.obs.servers[0].other_address = ep(other);
    b.add("10.0.0.2:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa).other_address = ep(other);
    const auto v = classify_family(b.obs);
    ASSERT_FALSE(v.anomalies.empty()) << other;
    EXPECT_EQ(v.anomalies[0].kind, AnomalyKind::kOtherAddressInvalid) << other;
    EXPECT_FALSE(v.servers[0].rfc5780) << other;
  }
}

TEST(Classifier, PlainReplyFromWrongAddressDisqualifiesServerForFiltering) {
  Builder b;
  b.add("10.0.0.2:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa);
  b.add("10.0.0.2:40000", kCaCp, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa);  // answered from Da
  b.add("10.0.0.2:40000", kDa, kBoth, Outcome::kReply, "192.0.2.1:40000", kCaCp);
  b.add("10.0.0.2:41000", kDa, kPlain, Outcome::kReply, "192.0.2.1:41000", kDa);
  b.add("10.0.0.2:41000", kDa, kBoth, Outcome::kReply, "192.0.2.1:41000", kCaCp);
  const auto v = classify_family(b.obs);
  EXPECT_EQ(v.filtering, Behavior::kUnknown);
  // The mapped address still tells where the request went: mapping is judged.
  EXPECT_EQ(v.mapping, Behavior::kEndpointIndependent);
  ASSERT_EQ(v.anomalies.size(), 1u);
  EXPECT_EQ(v.anomalies[0].kind, AnomalyKind::kReplyFromUnexpectedAddress);
}

TEST(Classifier, RefusedChangeRequest) {
  // A single-IP server answering 420 is normal: no anomaly.
  FamilyObservations obs;
  obs.servers.push_back(ServerInfo{"derp", ep("198.51.100.30:3478"), std::nullopt});
  TestRecord t;
  t.local = ep("10.0.0.2:40000");
  t.sent_to = ep("198.51.100.30:3478");
  t.change = kBoth;
  t.outcome = Outcome::kErrorReply;
  t.error_code = 420;
  obs.tests.push_back(t);
  auto v = classify_family(obs);
  EXPECT_TRUE(v.udp);
  EXPECT_EQ(v.servers[0].change_request, ChangeRequestSupport::kRefused);
  EXPECT_TRUE(v.anomalies.empty());
  // The same from a server that advertised an alternate is an anomaly.
  obs.servers[0].other_address = ep("198.51.100.31:3479");
  v = classify_family(obs);
  ASSERT_EQ(v.anomalies.size(), 1u);
  EXPECT_EQ(v.anomalies[0].kind, AnomalyKind::kChangeRequestRefused);
}

TEST(Classifier, MalformedObservationsAreSetAside) {
  Builder b;
  b.add("10.0.0.2:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa);
  b.add("10.0.0.2:40000", kCaDp, kPlain, Outcome::kReply, "192.0.2.1:40000", kCaDp).server = 7;
  b.add("[2001:db8::2]:40000", kDa, kPlain, Outcome::kReply, "192.0.2.1:40000", kDa);
  b.obs.servers.push_back(ServerInfo{"v6", ep("[2001:db8::53]:3478"), std::nullopt});
  auto v = classify_family(b.obs);
  EXPECT_EQ(v.mapping, Behavior::kUnknown);  // only one usable sample
  std::vector<AnomalyKind> kinds;
  for (const auto& a : v.anomalies) kinds.push_back(a.kind);
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), AnomalyKind::kBadTest), 2);
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), AnomalyKind::kBadServer), 1);
  EXPECT_EQ(v.servers[0].requests, 1u);
}

TEST(Classifier, NothingObserved) {
  const FamilyVerdict v = classify_family(FamilyObservations{});
  EXPECT_FALSE(v.tested);
  EXPECT_FALSE(v.udp);
  EXPECT_EQ(v.mapping, Behavior::kUnknown);
  EXPECT_EQ(v.filtering, Behavior::kUnknown);
  EXPECT_EQ(old_name_of(v), OldName::kUdpBlocked);
}

TEST(Classifier, BothFamiliesPrimaryIsIpv4UnlessOnlyIpv6HasUdp) {
  Observations obs;
  World v4 = blocked(Servers::kRfc5780);
  World v6;
  v6.family = Family::V6;
  v6.host = Endpoint{ip("2001:db8:1::7"), 0};
  v6.layers = {firewall(Filt::kApdf)};
  v6.servers = {sim::rfc5780_server(Family::V6)};
  obs.ipv4 = sim::run_probe(v4);
  obs.ipv6 = sim::run_probe(v6);
  obs.port_mapping.pcp = Availability::kAvailable;
  obs.elapsed = std::chrono::milliseconds(1234);
  Verdict v = classify(obs);
  EXPECT_FALSE(v.ipv4.udp);
  EXPECT_TRUE(v.ipv6.udp);
  EXPECT_EQ(v.primary_family(), Family::V6);
  EXPECT_EQ(v.ipv6.mapping, Behavior::kNone);
  EXPECT_EQ(v.ipv6.filtering, Behavior::kAddressAndPortDependent);
  EXPECT_EQ(v.old_name, OldName::kFirewall);
  EXPECT_EQ(v.difficulty, Difficulty::kEasy);
  EXPECT_EQ(v.port_mapping.pcp, Availability::kAvailable);
  EXPECT_EQ(v.elapsed, std::chrono::milliseconds(1234));

  // With IPv4 working too, IPv4 is on top.
  obs.ipv4 = sim::run_probe(world({nat(Map::kEim, Filt::kApdf)}, Servers::kRfc5780));
  v = classify(obs);
  EXPECT_EQ(v.primary_family(), Family::V4);
  EXPECT_EQ(v.old_name, OldName::kPortRestrictedCone);
}

TEST(Classifier, HairpinIsReported) {
  auto obs = sim::run_probe(world({nat(Map::kEim, Filt::kApdf)}, Servers::kTwoSingle));
  EXPECT_EQ(classify_family(obs).hairpinning, Hairpin::kUntested);
  obs.hairpin = Hairpin::kNo;
  EXPECT_EQ(classify_family(obs).hairpinning, Hairpin::kNo);
}

TEST(VerdictNames, RoundTripEveryValue) {
  for (auto b : {kNone, kEI, kAD, kAPD, kUnk}) EXPECT_EQ(behavior_from_string(to_string(b)), b);
  for (int k = 0; k < static_cast<int>(AnomalyKind::kCount); ++k) {
    const auto kind = static_cast<AnomalyKind>(k);
    EXPECT_NE(to_string(kind), "invalid");
    EXPECT_EQ(anomaly_kind_from_string(to_string(kind)), kind);
  }
  EXPECT_EQ(to_string(kEI), "endpoint-independent");
  EXPECT_EQ(to_string(kAPD), "address-and-port-dependent");
  EXPECT_EQ(behavior_from_string("Endpoint-Independent"), std::nullopt);
  EXPECT_EQ(behavior_from_string(""), std::nullopt);
}

}  // namespace
}  // namespace derpd::nat
