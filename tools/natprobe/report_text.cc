#include "tools/natprobe/report_text.h"

#include <fmt/format.h>

#include <algorithm>

namespace derpd::natprobe {

namespace {

std::string family_title(Family f) { return f == Family::V4 ? "IPv4" : "IPv6"; }

std::string endpoint_or_dash(const std::optional<Endpoint>& e) { return e ? e->to_string() : "-"; }

// Printable, bounded text for names that came from the command line, a file or a JSON report.
std::string shown(std::string_view s, std::size_t max = 40) {
  std::string out;
  for (char c : s.substr(0, max)) out.push_back(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f ? c : '?');
  if (s.size() > max) out += "...";
  return out;
}

std::string rtt_text(const nat::ServerResult& s) {
  if (!s.rtt_min || !s.rtt_max) return "-";
  const double lo = static_cast<double>(s.rtt_min->count()) / 1000.0;
  const double hi = static_cast<double>(s.rtt_max->count()) / 1000.0;
  if (s.rtt_min == s.rtt_max) return fmt::format("{:.1f}", lo);
  return fmt::format("{:.1f}-{:.1f}", lo, hi);
}

std::string_view availability_text(nat::Availability a) {
  switch (a) {
    case nat::Availability::kAvailable:
      return "available";
    case nat::Availability::kUnavailable:
      return "not offered";
    case nat::Availability::kUnknown:
      return "unknown";
  }
  return "unknown";
}

std::string kind_of(const nat::ServerResult& s, Family f, std::size_t index, const probe::ProbeReport* probe) {
  if (s.rfc5780) return "RFC 5780";
  if (probe) {
    for (const auto& p : probe->servers) {
      if (p.family != f || p.server != index) continue;
      if (p.form == probe::ServerForm::kTailnode) return "tailnode";
      if (p.form == probe::ServerForm::kNoAnswer) return "silent";
    }
  }
  return s.replies > 0 ? "plain" : "silent";
}

void server_table(std::string& out, const nat::FamilyVerdict& f, Family fam, const probe::ProbeReport* probe) {
  if (f.servers.empty()) return;
  out += fmt::format("\nServers ({})\n", family_title(fam));
  out += fmt::format("  {:<24} {:<22} {:<22} {:<9} {:<14} {:>9} {:>13}  {}\n", "NAME", "ADDRESS", "OTHER ADDRESS",
                     "KIND", "CHANGE-REQUEST", "SENT/RCVD", "RTT ms", "MAPPED");
  for (std::size_t i = 0; i < f.servers.size(); ++i) {
    const nat::ServerResult& s = f.servers[i];
    out += fmt::format("  {:<24} {:<22} {:<22} {:<9} {:<14} {:>9} {:>13}  {}\n", shown(s.name, 24),
                       s.address.to_string(), endpoint_or_dash(s.other_address), kind_of(s, fam, i, probe),
                       nat::to_string(s.change_request), fmt::format("{}/{}", s.requests, s.replies), rtt_text(s),
                       endpoint_or_dash(s.mapped));
  }
}

void family_block(std::string& out, const nat::FamilyVerdict& f, Family fam, bool primary) {
  out += fmt::format("{}{}\n", family_title(fam), primary ? "" : " (secondary)");
  if (!f.tested) {
    out += "  not tested (no server address of this family)\n";
    return;
  }
  if (!f.udp) {
    out += "  no STUN reply: UDP is blocked on this path, or there is no route\n";
    return;
  }
  out += fmt::format("  Mapping       {}\n", mapping_text(f));
  out += fmt::format("  Filtering     {}\n", filtering_text(f));
  out += fmt::format("  Old name      {}\n", nat::to_string(nat::old_name_of(f)));
  const auto d = nat::difficulty_of(f);
  std::string_view why;
  if (d == nat::Difficulty::kEasy) {
    why = f.mapping == nat::Behavior::kNone ? " (no NAT)" : " (one public address for every destination)";
  }
  if (d == nat::Difficulty::kHard) why = " (the public address changes with the destination)";
  out += fmt::format("  Difficulty    {}{}\n", nat::to_string(d), why);
  std::string pub;
  for (const auto& e : f.public_addresses) {
    if (!pub.empty()) pub += ", ";
    pub += e.to_string();
  }
  std::string_view ports;
  if (f.port_preservation == nat::PortPreservation::kYes) ports = " (local port kept)";
  if (f.port_preservation == nat::PortPreservation::kNo) ports = " (local port not kept)";
  out += fmt::format("  Public        {}{}\n", pub.empty() ? "-" : pub, ports);
  std::string_view hp = "untested (--hairpin tests it)";
  if (f.hairpinning == nat::Hairpin::kYes) hp = "yes (a packet to our own public address came back)";
  if (f.hairpinning == nat::Hairpin::kNo) hp = "no (a packet to our own public address was lost)";
  out += fmt::format("  Hairpinning   {}\n", hp);
}

}  // namespace

std::string mapping_text(const nat::FamilyVerdict& f) {
  switch (f.mapping) {
    case nat::Behavior::kNone:
      return "none: no NAT, the public address is this host's own";
    case nat::Behavior::kEndpointIndependent:
      return "endpoint-independent (EIM): one public address for every destination";
    case nat::Behavior::kAddressDependent:
      return "address-dependent (ADM): a new public address per destination IP";
    case nat::Behavior::kAddressAndPortDependent:
      return "address-and-port-dependent (APDM): a new public address per destination IP and port";
    case nat::Behavior::kUnknown:
      break;
  }
  if (f.mapping_endpoint_dependent) {
    return "endpoint-dependent: the public address changes with the destination IP (telling "
           "address-dependent from address-and-port-dependent needs two ports on one server IP)";
  }
  return "unknown: needs answers from at least two servers at different IPs";
}

std::string filtering_text(const nat::FamilyVerdict& f) {
  switch (f.filtering) {
    case nat::Behavior::kNone:
      return "none: nothing filtered, an address never contacted got through";
    case nat::Behavior::kEndpointIndependent:
      return "endpoint-independent (EIF): anyone may send to the public address";
    case nat::Behavior::kAddressDependent:
      return "address-dependent (ADF): only IPs this host has sent to";
    case nat::Behavior::kAddressAndPortDependent:
      return "address-and-port-dependent (APDF): only IP:ports this host has sent to";
    case nat::Behavior::kUnknown:
      break;
  }
  return "unknown: needs an RFC 5780 server (two IPs, two ports) that honours CHANGE-REQUEST";
}

std::string_view explain(nat::AnomalyKind k) {
  switch (k) {
    case nat::AnomalyKind::kBadServer:
      return "server address of the wrong family: not used";
    case nat::AnomalyKind::kBadTest:
      return "a test could not be matched to a server: not used";
    case nat::AnomalyKind::kMappedWrongFamily:
      return "a reply carried no usable mapped address";
    case nat::AnomalyKind::kReplyFromUnexpectedAddress:
      return "a plain request was answered from, or claimed, another address";
    case nat::AnomalyKind::kOtherAddressInvalid:
      return "its OTHER-ADDRESS does not differ from the primary in both IP and port: no RFC 5780 tests";
    case nat::AnomalyKind::kOtherAddressInconsistent:
      return "its OTHER-ADDRESS changed between replies: not used for filtering";
    case nat::AnomalyKind::kChangeRequestIgnored:
      return "it answered CHANGE-REQUEST from the unchanged address: not used for filtering";
    case nat::AnomalyKind::kChangeRequestWrongSource:
      return "it answered CHANGE-REQUEST from an unexpected address: not used for filtering";
    case nat::AnomalyKind::kChangeRequestRefused:
      return "it advertised OTHER-ADDRESS but refused CHANGE-REQUEST: not used for filtering";
    case nat::AnomalyKind::kMappingUnstable:
      return "one socket got two different public addresses from one destination: mapping unknown";
    case nat::AnomalyKind::kFilteringContradictory:
      return "the filtering tests contradict each other: filtering unknown";
    case nat::AnomalyKind::kCount:
      break;
  }
  return "unexplained observation";
}

std::string format_verdict(const nat::Verdict& v, const RunDetails& details) {
  std::string out;
  const Family primary = v.primary_family();
  const Family other = primary == Family::V4 ? Family::V6 : Family::V4;
  family_block(out, v.family(primary), primary, true);
  out += fmt::format("\n  {}\n\n", v.summary);
  family_block(out, v.family(other), other, false);

  out += "\nPort mapping ";
  switch (details.port_mapping) {
    case PortMapScope::kDisabled:
      out += "not probed (--no-portmap)\n";
      break;
    case PortMapScope::kNoGateway:
      out += "not probed: no IPv4 default gateway\n";
      break;
    case PortMapScope::kProbed:
      out += fmt::format("on the default gateway {}: NAT-PMP {}, PCP {}, UPnP IGD {}\n",
                         details.gateway ? details.gateway->to_string() : std::string("?"),
                         availability_text(v.port_mapping.nat_pmp), availability_text(v.port_mapping.pcp),
                         availability_text(v.port_mapping.upnp_igd));
      break;
  }

  server_table(out, v.ipv4, Family::V4, details.probe);
  server_table(out, v.ipv6, Family::V6, details.probe);

  std::vector<std::string> notes;
  for (Family f : {Family::V4, Family::V6}) {
    for (const auto& a : v.family(f).anomalies) {
      const std::string who = a.server.empty() ? family_title(f) : fmt::format("{} {}", family_title(f), shown(a.server));
      notes.push_back(fmt::format("{}: {}", who, explain(a.kind)));
    }
  }
  if (details.probe) {
    const auto& ig = details.probe->ignored;
    auto count = [&](std::uint32_t n, std::string_view what) {
      if (n > 0) notes.push_back(fmt::format("ignored {} datagram{} {}", n, n == 1 ? "" : "s", what));
    };
    count(ig.wrong_txid, "answering no request of this run (unknown transaction ID)");
    count(ig.unexpected_source, "from an address the answer could not come from");
    count(ig.not_stun, "that were not STUN Binding responses (garbage or truncated)");
    count(ig.duplicate, "repeating an answer already received");
    count(ig.port_mapping_other, "on the port-mapping sockets that answered nothing asked");
  }
  if (!notes.empty()) {
    out += "\nNotes\n";
    for (const auto& n : notes) out += fmt::format("  - {}\n", n);
  }
  out += fmt::format("\nProbe time: {} ms\n", v.elapsed.count());
  return out;
}

namespace {

std::string side_text(const nat::Verdict& v) {
  const nat::FamilyVerdict& f = v.primary();
  if (!f.udp) return "no UDP (no STUN reply in any family)";
  const char* mapping = "unknown mapping";
  switch (f.mapping) {
    case nat::Behavior::kNone:
      mapping = "no NAT";
      break;
    case nat::Behavior::kEndpointIndependent:
      mapping = "endpoint-independent mapping";
      break;
    case nat::Behavior::kAddressDependent:
      mapping = "address-dependent mapping";
      break;
    case nat::Behavior::kAddressAndPortDependent:
      mapping = "address-and-port-dependent mapping";
      break;
    case nat::Behavior::kUnknown:
      if (f.mapping_endpoint_dependent) mapping = "endpoint-dependent mapping";
      break;
  }
  return fmt::format("{}: {}, filtering {} ({}, {})", family_title(v.primary_family()), mapping,
                     nat::to_string(f.filtering), nat::to_string(nat::old_name_of(f)),
                     nat::to_string(nat::difficulty_of(f)));
}

}  // namespace

std::string format_compare(const nat::CompareResult& r, const nat::Verdict& a, const nat::Verdict& b,
                           std::string_view name_a, std::string_view name_b) {
  std::string out;
  std::string_view answer = "unknown";
  if (r.direct == nat::Direct::kYes) answer = "yes, it should work";
  if (r.direct == nat::Direct::kNo) answer = "no, expect a relay";
  out += fmt::format("Direct UDP path: {}{}\n", answer, r.family ? fmt::format(" ({})", family_title(*r.family)) : "");
  out += fmt::format("  Why: {}\n", r.reason);
  out += fmt::format("  Rule: {}\n", nat::to_string(r.rule));
  out += fmt::format("  A ({}): {}\n", shown(name_a, 80), side_text(a));
  out += fmt::format("  B ({}): {}\n", shown(name_b, 80), side_text(b));
  return out;
}

}  // namespace derpd::natprobe
