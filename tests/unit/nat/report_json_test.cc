#include "client/nat/report_json.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "client/nat/classifier.h"
#include "tests/unit/nat/nat_sim.h"

namespace derpd::nat {
namespace {

using nlohmann::json;

IpAddr ip(const char* t) { return *IpAddr::parse(t); }

sim::World world(std::vector<sim::NatLayer> layers, std::vector<sim::Server> servers, const char* host = "10.0.0.2") {
  sim::World w;
  w.host = Endpoint{ip(host), 0};
  if (w.host.addr.family() == Family::V6) w.family = Family::V6;
  w.layers = std::move(layers);
  w.servers = std::move(servers);
  return w;
}

// Verdicts from simulated runs covering every enum value the classifier produces.
std::vector<Verdict> sample_verdicts() {
  const sim::NatLayer eim_apdf{sim::Map::kEim, sim::Filt::kApdf, ip("192.0.2.1"), true};
  const sim::NatLayer apdm{sim::Map::kApdm, sim::Filt::kApdf, ip("192.0.2.1"), true};
  const sim::NatLayer adm{sim::Map::kAdm, sim::Filt::kApdf, ip("192.0.2.1"), true};
  const sim::NatLayer eif{sim::Map::kEim, sim::Filt::kEif, ip("192.0.2.1"), true};
  const sim::NatLayer adf{sim::Map::kEim, sim::Filt::kAdf, ip("192.0.2.1"), true};
  const sim::NatLayer fw6{sim::Map::kNone, sim::Filt::kApdf, IpAddr(), true};
  const auto rfc = sim::rfc5780_server(Family::V4);
  const auto s1 = sim::single_ip_server(Family::V4, 1);
  const auto s2 = sim::single_ip_server(Family::V4, 2);

  std::vector<Observations> runs;
  auto add = [&](sim::World w4, std::optional<sim::World> w6 = std::nullopt) {
    Observations o;
    o.ipv4 = sim::run_probe(w4);
    if (w6) o.ipv6 = sim::run_probe(*w6);
    runs.push_back(std::move(o));
  };
  add(world({eim_apdf}, {rfc, s1}), world({fw6}, {sim::rfc5780_server(Family::V6)}, "2001:db8:1::7"));
  add(world({apdm}, {rfc}));
  add(world({adm}, {rfc, s1, s2}));
  add(world({eif}, {rfc}));
  add(world({adf}, {rfc}));
  add(world({}, {rfc}, "192.0.2.7"));
  add(world({apdm}, {s1, s2}));
  add(world({eim_apdf}, {s1}));
  add(world({eim_apdf}, {sim::rfc5780_server(Family::V4, sim::Quirk::kLiesOrigin), s1}));
  add(world({eim_apdf}, {sim::rfc5780_server(Family::V4, sim::Quirk::kOtherChanges)}));
  add(world({apdm}, {sim::single_ip_server(Family::V4, 1, 3478, sim::Quirk::kOtherIsPrimary)}));
  add(world({eim_apdf}, {sim::rfc5780_server(Family::V4, sim::Quirk::kWrongFamilyMapped)}));
  {
    sim::World w = world({eim_apdf}, {rfc});
    w.udp_blocked = true;
    add(w, world({fw6}, {sim::rfc5780_server(Family::V6)}, "2001:db8:1::7"));
  }
  std::vector<Verdict> out;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    runs[i].elapsed = std::chrono::milliseconds(1500 + i);
    runs[i].port_mapping = PortMappingProbe{Availability::kAvailable, Availability::kUnavailable, Availability::kUnknown};
    runs[i].ipv4.hairpin = i % 3 == 0 ? Hairpin::kYes : (i % 3 == 1 ? Hairpin::kNo : Hairpin::kUntested);
    out.push_back(classify(runs[i]));
  }
  return out;
}

TEST(ReportJson, RoundTripsEveryVerdict) {
  for (const Verdict& v : sample_verdicts()) {
    for (int indent : {-1, 2}) {
      const std::string text = to_json_text(v, indent);
      auto back = verdict_from_json(text);
      ASSERT_TRUE(back.ok()) << back.error().message() << "\n" << text;
      EXPECT_EQ(*back, v) << text;
      EXPECT_EQ(to_json_text(*back, indent), text);
    }
  }
}

TEST(ReportJson, Layout) {
  const Verdict v = sample_verdicts()[0];
  const json j = json::parse(to_json_text(v));
  EXPECT_EQ(j["schema"], 1);
  EXPECT_EQ(j["family"], "ipv4");
  EXPECT_EQ(j["udp"], true);
  EXPECT_EQ(j["mapping"], "endpoint-independent");
  EXPECT_EQ(j["filtering"], "address-and-port-dependent");
  EXPECT_EQ(j["mapping_endpoint_dependent"], false);
  EXPECT_EQ(j["public_addresses"], json::array({"192.0.2.1:40000", "192.0.2.1:41000"}));
  EXPECT_EQ(j["port_preservation"], "yes");
  EXPECT_EQ(j["hairpinning"], "yes");
  EXPECT_EQ(j["old_name"], "port-restricted cone");
  EXPECT_EQ(j["difficulty"], "easy");
  EXPECT_EQ(j["summary"], v.summary);
  EXPECT_EQ(j["port_mapping"], json({{"nat_pmp", "available"}, {"pcp", "unavailable"}, {"upnp_igd", "unknown"}}));
  EXPECT_EQ(j["duration_ms"], 1500);
  EXPECT_EQ(j["ipv6"]["mapping"], "none");
  EXPECT_EQ(j["ipv6"]["filtering"], "address-and-port-dependent");
  const json& s = j["ipv4"]["servers"][0];
  EXPECT_EQ(s["name"], "rfc5780");
  EXPECT_EQ(s["address"], "203.0.113.10:3478");
  EXPECT_EQ(s["other_address"], "203.0.113.11:3479");
  EXPECT_EQ(s["rfc5780"], true);
  EXPECT_EQ(s["change_request"], "honoured");
  EXPECT_EQ(s["rtt_min_us"], 20000);
  const json& single = j["ipv4"]["servers"][1];
  EXPECT_TRUE(single["other_address"].is_null());
  EXPECT_EQ(single["change_request"], "untested");
  EXPECT_EQ(j["ipv6"]["servers"][0]["address"], "[2001:db8:10::10]:3478");
}

TEST(ReportJson, AnomaliesAndUdpBlockedLayout) {
  const auto verdicts = sample_verdicts();
  const json liar = json::parse(to_json_text(verdicts[8]));
  ASSERT_FALSE(liar["ipv4"]["anomalies"].empty());
  EXPECT_EQ(liar["ipv4"]["anomalies"][0]["kind"], "change-request-wrong-source");
  EXPECT_EQ(liar["ipv4"]["anomalies"][0]["server"], "rfc5780");
  EXPECT_TRUE(liar["ipv4"]["anomalies"][0]["test"].is_number_unsigned());

  const json blocked_v4 = json::parse(to_json_text(verdicts.back()));
  EXPECT_EQ(blocked_v4["family"], "ipv6");  // IPv4 had no UDP
  EXPECT_EQ(blocked_v4["ipv4"]["udp"], false);
  EXPECT_EQ(blocked_v4["mapping"], "none");
  EXPECT_EQ(blocked_v4["old_name"], "firewall");
}

TEST(ReportJson, NamesThatAreNotUtf8AreReplacedNotThrown) {
  Verdict v = sample_verdicts()[0];
  v.ipv4.servers[0].name = std::string("bad\xff\xfe name");
  std::string text;
  ASSERT_NO_THROW(text = to_json_text(v));
  auto back = verdict_from_json(text);
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_NE(back->ipv4.servers[0].name, v.ipv4.servers[0].name);
}

TEST(ReportJson, CompareResultJson) {
  const auto verdicts = sample_verdicts();
  const CompareResult r = compare(verdicts[0], verdicts[1]);  // EIM+APDF vs APDM
  const json j = json::parse(to_json_text(r));
  EXPECT_EQ(j["schema"], 1);
  EXPECT_EQ(j["direct"], "no");
  EXPECT_EQ(j["rule"], "eim-apdf-vs-edm");
  EXPECT_EQ(j["family"], "ipv4");
  EXPECT_EQ(j["reason"], r.reason);
  EXPECT_EQ(j["birthday"]["hard_ports"], 256);
  EXPECT_EQ(j["birthday"]["probes"], 1024);
  EXPECT_NEAR(j["birthday"]["probability"].get<double>(), 0.98, 0.005);
  EXPECT_EQ(j["same_public_ip"], true);  // both simulated NATs use 192.0.2.1
  const json k = json::parse(to_json_text(compare(verdicts[0], verdicts[3])));
  EXPECT_TRUE(k["birthday"].is_null());
}

// --- Hostile input ---

std::string valid_text() { return to_json_text(sample_verdicts()[0]); }

struct Hostile {
  std::string name;
  std::string text;
  ReportError code;
  std::string where;
};
std::ostream& operator<<(std::ostream& os, const Hostile& h) { return os << h.name; }

// Edits `path` (a JSON pointer) of the valid document.
std::string with(const char* path, json value) {
  json j = json::parse(valid_text());
  j[json::json_pointer(path)] = std::move(value);
  return j.dump();
}
std::string without(const char* path) {
  json j = json::parse(valid_text());
  const json::json_pointer p(path);
  j[p.parent_pointer()].erase(p.back());
  return j.dump();
}

std::vector<Hostile> hostile() {
  using E = ReportError;
  std::vector<Hostile> h;
  h.push_back({"empty", "", E::kNotJson, ""});
  h.push_back({"truncated", valid_text().substr(0, 100), E::kNotJson, ""});
  h.push_back({"trailing_garbage", valid_text() + "x", E::kNotJson, ""});
  h.push_back({"bad_utf8", "{\"schema\":1,\"x\":\"\xff\"}", E::kNotJson, ""});
  h.push_back({"array", "[1,2]", E::kNotObject, ""});
  h.push_back({"null", "null", E::kNotObject, ""});
  h.push_back({"string", "\"schema\"", E::kNotObject, ""});
  h.push_back({"deep_array", std::string(100000, '[') + std::string(100000, ']'), E::kNotObject, ""});
  h.push_back({"deep_in_field", "{\"schema\":1,\"ipv4\":" + std::string(100000, '[') + std::string(100000, ']') + "}",
               E::kWrongType, "/ipv4"});
  h.push_back({"empty_object", "{}", E::kMissingKey, "/schema"});
  h.push_back({"too_large", std::string(kMaxReportBytes + 1, ' '), E::kTooLarge, ""});
  h.push_back({"schema_string", with("/schema", "1"), E::kWrongType, "/schema"});
  h.push_back({"schema_float", with("/schema", 1.0), E::kWrongType, "/schema"});
  h.push_back({"schema_huge", "{\"schema\":184467440737095516160}", E::kWrongType, "/schema"});
  h.push_back({"schema_2", with("/schema", 2), E::kUnsupportedSchema, "/schema"});
  h.push_back({"schema_0", with("/schema", 0), E::kUnsupportedSchema, "/schema"});
  h.push_back({"schema_negative", with("/schema", -1), E::kUnsupportedSchema, "/schema"});
  h.push_back({"schema_2_else_garbage", "{\"schema\":2,\"ipv4\":7}", E::kUnsupportedSchema, "/schema"});
  h.push_back({"no_ipv4", without("/ipv4"), E::kMissingKey, "/ipv4"});
  h.push_back({"ipv4_not_object", with("/ipv4", json::array()), E::kWrongType, "/ipv4"});
  h.push_back({"udp_string", with("/ipv4/udp", "true"), E::kWrongType, "/ipv4/udp"});
  h.push_back({"mapping_number", with("/ipv4/mapping", 3), E::kWrongType, "/ipv4/mapping"});
  h.push_back({"mapping_unknown_name", with("/ipv4/mapping", "symmetric"), E::kBadValue, "/ipv4/mapping"});
  h.push_back({"filtering_wrong_case", with("/ipv4/filtering", "Address-Dependent"), E::kBadValue, "/ipv4/filtering"});
  h.push_back({"top_mapping_bad", with("/mapping", "full cone"), E::kBadValue, "/mapping"});
  h.push_back({"top_mapping_disagrees", with("/mapping", "address-dependent"), E::kInconsistent, ""});
  h.push_back({"top_udp_disagrees", with("/udp", false), E::kInconsistent, ""});
  h.push_back({"family_wrong", with("/family", "ipv6"), E::kInconsistent, "/family"});
  h.push_back({"family_bad", with("/family", "ipx"), E::kBadValue, "/family"});
  h.push_back({"public_address_bad_ip", with("/ipv4/public_addresses/0", "999.1.1.1:5"), E::kBadValue,
               "/ipv4/public_addresses/0"});
  h.push_back({"public_address_no_port", with("/ipv4/public_addresses/0", "192.0.2.1"), E::kBadValue,
               "/ipv4/public_addresses/0"});
  h.push_back({"public_address_port_too_big", with("/ipv4/public_addresses/0", "192.0.2.1:65536"), E::kBadValue,
               "/ipv4/public_addresses/0"});
  h.push_back({"public_address_number", with("/ipv4/public_addresses/0", 5), E::kWrongType,
               "/ipv4/public_addresses/0"});
  h.push_back({"public_address_wrong_family", with("/ipv4/public_addresses", json::array({"[2001:db8::1]:5"})),
               E::kInconsistent, "/ipv4/public_addresses/0"});
  h.push_back({"public_addresses_too_many", with("/ipv4/public_addresses", json(std::vector<std::string>(257, "192.0.2.1:1"))),
               E::kTooLarge, "/ipv4/public_addresses"});
  h.push_back({"servers_object", with("/ipv4/servers", json::object()), E::kWrongType, "/ipv4/servers"});
  h.push_back({"server_not_object", with("/ipv4/servers/0", 1), E::kWrongType, "/ipv4/servers/0"});
  h.push_back({"server_no_name", without("/ipv4/servers/0/name"), E::kMissingKey, "/ipv4/servers/0/name"});
  h.push_back({"server_name_huge", with("/ipv4/servers/0/name", std::string(kMaxTextBytes + 1, 'a')), E::kTooLarge,
               "/ipv4/servers/0/name"});
  h.push_back({"server_requests_negative", with("/ipv4/servers/0/requests", -1), E::kBadValue,
               "/ipv4/servers/0/requests"});
  h.push_back({"server_requests_2p32", with("/ipv4/servers/0/requests", 4294967296ull), E::kBadValue,
               "/ipv4/servers/0/requests"});
  h.push_back({"server_requests_float", with("/ipv4/servers/0/requests", 10.5), E::kWrongType,
               "/ipv4/servers/0/requests"});
  h.push_back({"server_replies_exceed", with("/ipv4/servers/0/replies", 11), E::kInconsistent,
               "/ipv4/servers/0/replies"});
  h.push_back({"server_rtt_without_replies", with("/ipv4/servers/1/rtt_max_us", nullptr), E::kInconsistent,
               "/ipv4/servers/1/rtt_min_us"});
  h.push_back({"server_rtt_negative", with("/ipv4/servers/0/rtt_min_us", -5), E::kBadValue,
               "/ipv4/servers/0/rtt_min_us"});
  h.push_back({"server_address_v6_in_v4", with("/ipv4/servers/0/address", "[2001:db8::1]:3478"), E::kInconsistent,
               "/ipv4/servers/0/address"});
  h.push_back({"server_change_request_bad", with("/ipv4/servers/0/change_request", "yes"), E::kBadValue,
               "/ipv4/servers/0/change_request"});
  h.push_back({"anomaly_kind_bad", with("/ipv4/anomalies", json::array({{{"kind", "x"}, {"server", ""}, {"test", nullptr}}})),
               E::kBadValue, "/ipv4/anomalies/0/kind"});
  h.push_back({"anomaly_test_negative",
               with("/ipv4/anomalies", json::array({{{"kind", "bad-test"}, {"server", ""}, {"test", -1}}})), E::kBadValue,
               "/ipv4/anomalies/0/test"});
  h.push_back({"edm_flag_with_eim", with("/ipv4/mapping_endpoint_dependent", true), E::kInconsistent,
               "/ipv4/mapping_endpoint_dependent"});
  h.push_back({"filtering_none_with_nat", with("/ipv4/filtering", "none"), E::kInconsistent, "/ipv4/filtering"});
  h.push_back({"udp_false_with_mapping", with("/ipv4/udp", false), E::kInconsistent, "/ipv4/udp"});
  h.push_back({"untested_with_udp", with("/ipv6/tested", false), E::kInconsistent, "/ipv6/udp"});
  h.push_back({"old_name_bad", with("/old_name", "cone"), E::kBadValue, "/old_name"});
  h.push_back({"difficulty_bad", with("/difficulty", true), E::kWrongType, "/difficulty"});
  h.push_back({"summary_number", with("/summary", 1), E::kWrongType, "/summary"});
  h.push_back({"port_mapping_array", with("/port_mapping", json::array()), E::kWrongType, "/port_mapping"});
  h.push_back({"port_mapping_bad", with("/port_mapping/pcp", "maybe"), E::kBadValue, "/port_mapping/pcp"});
  h.push_back({"duration_negative", with("/duration_ms", -1), E::kBadValue, "/duration_ms"});
  h.push_back({"duration_float", with("/duration_ms", 1.5), E::kWrongType, "/duration_ms"});
  return h;
}

class HostileJson : public ::testing::TestWithParam<Hostile> {};

TEST_P(HostileJson, ClearErrorNoCrash) {
  const Hostile& h = GetParam();
  auto r = verdict_from_json(h.text);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(to_string(r.error().code), to_string(h.code));
  EXPECT_EQ(r.error().where, h.where);
  EXPECT_FALSE(r.error().message().empty());
}

INSTANTIATE_TEST_SUITE_P(Nat, HostileJson, ::testing::ValuesIn(hostile()),
                         [](const ::testing::TestParamInfo<Hostile>& p) { return p.param.name; });

TEST(ReportJson, ErrorMessageNamesThePath) {
  auto r = verdict_from_json(with("/ipv4/udp", 1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "wrong type at /ipv4/udp");
  EXPECT_EQ((ReportParseError{ReportError::kNotJson, ""}.message()), "not JSON");
}

TEST(ReportJson, UnknownKeysAreIgnored) {
  auto r = verdict_from_json(with("/future_field", json::array({1, 2})));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(*r, sample_verdicts()[0]);
}

// Every key of a valid report, removed or given a value of each JSON type: never a throw or a
// crash; removal always fails with kMissingKey at that key.
void collect_pointers(const json& j, const std::string& at, std::vector<std::string>& out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string p = at + "/" + it.key();
      out.push_back(p);
      collect_pointers(it.value(), p, out);
    }
  } else if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i) {
      const std::string p = at + "/" + std::to_string(i);
      out.push_back(p);
      collect_pointers(j[i], p, out);
    }
  }
}

TEST(ReportJson, EveryFieldMutated) {
  for (const Verdict& v : {sample_verdicts()[0], sample_verdicts()[8], sample_verdicts().back()}) {
    const json doc = json::parse(to_json_text(v));
    std::vector<std::string> pointers;
    collect_pointers(doc, "", pointers);
    ASSERT_GT(pointers.size(), 50u);
    const std::vector<json> replacements = {nullptr, true, false, 0, -1, 1.5, 18446744073709551615ull, "",
                                            "x", "192.0.2.1:1", json::array(), json::object(),
                                            std::string(kMaxTextBytes + 1, 'z')};
    for (const std::string& p : pointers) {
      const json::json_pointer ptr(p);
      json removed = doc;
      const bool in_object = removed[ptr.parent_pointer()].is_object();
      if (in_object) {
        removed[ptr.parent_pointer()].erase(ptr.back());
        auto r = verdict_from_json(removed.dump());
        ASSERT_FALSE(r.ok()) << p;
        EXPECT_EQ(r.error().code, ReportError::kMissingKey) << p;
        EXPECT_EQ(r.error().where, p);
      }
      for (const json& value : replacements) {
        json changed = doc;
        changed[ptr] = value;
        Result<Verdict, ReportParseError> r = Err(ReportParseError{});
        ASSERT_NO_THROW(r = verdict_from_json(changed.dump())) << p << " = " << value.dump();
        if (r.ok()) {
          // Whatever is accepted must serialise and read back to itself.
          auto again = verdict_from_json(to_json_text(*r));
          ASSERT_TRUE(again.ok()) << p << " = " << value.dump() << ": " << again.error().message();
          EXPECT_EQ(*again, *r);
        }
      }
    }
  }
}

TEST(ReportJson, SchemaDocumentExampleIsAValidReport) {
  std::ifstream in(std::string(DERPD_SOURCE_DIR) + "/client/nat/SCHEMA.md");
  ASSERT_TRUE(in) << "client/nat/SCHEMA.md not found";
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  const auto begin = doc.find("```json\n");
  ASSERT_NE(begin, std::string::npos);
  const auto end = doc.find("```", begin + 8);
  ASSERT_NE(end, std::string::npos);
  auto r = verdict_from_json(std::string_view(doc).substr(begin + 8, end - begin - 8));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->ipv4.mapping, Behavior::kEndpointIndependent);
  EXPECT_EQ(r->ipv4.filtering, Behavior::kAddressAndPortDependent);
  EXPECT_EQ(r->old_name, OldName::kPortRestrictedCone);
  EXPECT_EQ(r->summary, summary_of(r->ipv4));
  EXPECT_EQ(r->port_mapping.pcp, Availability::kUnavailable);
  EXPECT_FALSE(r->ipv6.tested);
}

}  // namespace
}  // namespace derpd::nat
