// natprobe's human output says what the verdict says, in the terms the header promises.
#include <gtest/gtest.h>

#include "client/nat/classifier.h"
#include "client/nat/compare.h"
#include "tools/natprobe/report_text.h"

namespace derpd::natprobe {
namespace {

Endpoint ep(const char* t) { return *Endpoint::parse(t); }

nat::Verdict port_restricted() {
  nat::Verdict v;
  v.ipv4.tested = true;
  v.ipv4.udp = true;
  v.ipv4.mapping = nat::Behavior::kEndpointIndependent;
  v.ipv4.filtering = nat::Behavior::kAddressAndPortDependent;
  v.ipv4.public_addresses = {ep("192.0.2.1:40000")};
  v.ipv4.port_preservation = nat::PortPreservation::kYes;
  nat::ServerResult s;
  s.name = "lab-stun";
  s.address = ep("203.0.113.10:3478");
  s.other_address = ep("203.0.113.11:3479");
  s.rfc5780 = true;
  s.change_request = nat::ChangeRequestSupport::kHonoured;
  s.requests = 11;
  s.replies = 9;
  s.mapped = ep("192.0.2.1:40000");
  s.rtt_min = std::chrono::microseconds(20000);
  s.rtt_max = std::chrono::microseconds(23500);
  v.ipv4.servers = {s};
  v.ipv4.anomalies = {nat::Anomaly{nat::AnomalyKind::kChangeRequestIgnored, "other\nserver", std::nullopt}};
  v.old_name = nat::old_name_of(v.ipv4);
  v.difficulty = nat::difficulty_of(v.ipv4);
  v.summary = nat::summary_of(v.ipv4);
  v.elapsed = std::chrono::milliseconds(930);
  return v;
}

bool has(const std::string& text, std::string_view what) { return text.find(what) != std::string::npos; }

TEST(ReportText, VerdictInRfc4787AndOldTerms) {
  probe::ProbeReport rep;
  rep.ignored.wrong_txid = 2;
  rep.ignored.unexpected_source = 1;
  RunDetails d;
  d.probe = &rep;
  d.port_mapping = PortMapScope::kProbed;
  d.gateway = IpAddr::parse("192.168.1.1");
  const std::string t = format_verdict(port_restricted(), d);
  EXPECT_TRUE(has(t, "endpoint-independent (EIM)")) << t;
  EXPECT_TRUE(has(t, "address-and-port-dependent (APDF)")) << t;
  EXPECT_TRUE(has(t, "port-restricted cone")) << t;
  EXPECT_TRUE(has(t, "Difficulty    easy")) << t;
  EXPECT_TRUE(has(t, port_restricted().summary)) << t;
  EXPECT_TRUE(has(t, "192.0.2.1:40000 (local port kept)")) << t;
  EXPECT_TRUE(has(t, "on the default gateway 192.168.1.1: NAT-PMP unknown")) << t;
  EXPECT_TRUE(has(t, "lab-stun")) << t;
  EXPECT_TRUE(has(t, "203.0.113.11:3479")) << t;
  EXPECT_TRUE(has(t, "RFC 5780")) << t;
  EXPECT_TRUE(has(t, "11/9")) << t;
  EXPECT_TRUE(has(t, "20.0-23.5")) << t;
  EXPECT_TRUE(has(t, "answered CHANGE-REQUEST from the unchanged address")) << t;
  EXPECT_TRUE(has(t, "other?server")) << "control characters from names are not printed raw";
  EXPECT_TRUE(has(t, "ignored 2 datagrams answering no request of this run")) << t;
  EXPECT_TRUE(has(t, "ignored 1 datagram from an address")) << t;
  EXPECT_TRUE(has(t, "Probe time: 930 ms")) << t;
  EXPECT_TRUE(has(t, "IPv6 (secondary)\n  not tested")) << t;
}

TEST(ReportText, UdpBlockedAndUnknowns) {
  nat::Observations obs;
  obs.ipv4.servers = {nat::ServerInfo{"silent", ep("192.0.2.9:3478"), std::nullopt}};
  nat::TestRecord t;
  t.local = ep("10.0.0.2:40000");
  t.sent_to = ep("192.0.2.9:3478");
  t.outcome = nat::Outcome::kTimeout;
  obs.ipv4.tests = {t};
  const nat::Verdict v = nat::classify(obs);
  const std::string text = format_verdict(v, RunDetails{});
  EXPECT_TRUE(has(text, "no STUN reply")) << text;
  EXPECT_TRUE(has(text, "silent")) << text;
  EXPECT_TRUE(has(text, "not probed (--no-portmap)")) << text;

  nat::FamilyVerdict f;
  f.udp = true;
  f.mapping_endpoint_dependent = true;
  EXPECT_TRUE(has(mapping_text(f), "endpoint-dependent"));
  f.mapping_endpoint_dependent = false;
  EXPECT_TRUE(has(mapping_text(f), "two servers at different IPs"));
  EXPECT_TRUE(has(filtering_text(f), "RFC 5780"));
}

TEST(ReportText, CompareSaysYesOrNoAndWhy) {
  const nat::Verdict a = port_restricted();
  nat::Verdict b = port_restricted();
  b.ipv4.mapping = nat::Behavior::kAddressAndPortDependent;
  b.ipv4.mapping_endpoint_dependent = true;
  b.ipv4.public_addresses = {ep("198.51.100.1:5000"), ep("198.51.100.1:5001")};
  const nat::CompareResult r = nat::compare(a, b);
  ASSERT_EQ(r.direct, nat::Direct::kNo);
  const std::string t = format_compare(r, a, b, "home.json", "office.json");
  EXPECT_TRUE(has(t, "Direct UDP path: no")) << t;
  EXPECT_TRUE(has(t, r.reason)) << t;
  EXPECT_TRUE(has(t, "eim-apdf-vs-edm")) << t;
  EXPECT_TRUE(has(t, "A (home.json): IPv4: endpoint-independent mapping")) << t;
  EXPECT_TRUE(has(t, "B (office.json): IPv4: address-and-port-dependent mapping")) << t;
  const std::string yes = format_compare(nat::compare(a, a), a, a, "x", "y");
  EXPECT_TRUE(has(yes, "Direct UDP path: yes")) << yes;
}

}  // namespace
}  // namespace derpd::natprobe
