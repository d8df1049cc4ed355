#include "client/nat/compare.h"

#include <fmt/format.h>

#include <array>
#include <cmath>
#include <vector>

namespace derpd::nat {

namespace {

enum class Kind : std::uint8_t { kEasy, kHard };
enum class Filter : std::uint8_t { kOpen, kAdf, kApdf };

struct Side {
  Kind kind;
  Filter filter;
  bool ip_stable;
};

struct Decision {
  Direct direct;
  CompareRule rule;
  bool a_easy = true;  // for the one-easy-one-hard rules: which side is the easy one
};

Decision decide(const Side& a, const Side& b) {
  if (a.kind == Kind::kEasy && b.kind == Kind::kEasy) return {Direct::kYes, CompareRule::kBothEasy};
  if (a.kind == Kind::kHard && b.kind == Kind::kHard) return {Direct::kNo, CompareRule::kBothHard};
  const bool a_easy = a.kind == Kind::kEasy;
  const Side& easy = a_easy ? a : b;
  const Side& hard = a_easy ? b : a;
  switch (easy.filter) {
    case Filter::kOpen:
      return {Direct::kYes, CompareRule::kOpenFiltering, a_easy};
    case Filter::kAdf:
      if (hard.ip_stable) return {Direct::kYes, CompareRule::kAdfVsEdmSameIp, a_easy};
      return {Direct::kNo, CompareRule::kAdfVsEdmIpVaries, a_easy};
    case Filter::kApdf:
      return {Direct::kNo, CompareRule::kApdfVsEdm, a_easy};
  }
  return {Direct::kUnknown, CompareRule::kDependsOnUnknown};
}

// Every concrete side a family verdict could stand for.
std::vector<Side> candidates(const FamilyVerdict& f) {
  std::vector<Kind> kinds;
  if (f.mapping == Behavior::kNone || f.mapping == Behavior::kEndpointIndependent) {
    kinds = {Kind::kEasy};
  } else if (f.mapping_endpoint_dependent || f.mapping == Behavior::kAddressDependent ||
             f.mapping == Behavior::kAddressAndPortDependent) {
    kinds = {Kind::kHard};
  } else {
    kinds = {Kind::kEasy, Kind::kHard};
  }
  std::vector<Filter> filters;
  switch (f.filtering) {
    case Behavior::kNone:
    case Behavior::kEndpointIndependent:
      filters = {Filter::kOpen};
      break;
    case Behavior::kAddressDependent:
      filters = {Filter::kAdf};
      break;
    case Behavior::kAddressAndPortDependent:
      filters = {Filter::kApdf};
      break;
    case Behavior::kUnknown:
      filters = {Filter::kOpen, Filter::kAdf, Filter::kApdf};
      break;
  }
  std::vector<bool> stable;
  if (auto s = public_ip_stable(f)) {
    stable = {*s};
  } else {
    stable = {true, false};
  }
  std::vector<Side> out;
  for (Kind k : kinds)
    for (Filter fl : filters)
      for (bool st : stable) out.push_back(Side{k, fl, st});
  return out;
}

struct FamilyAnswer {
  Direct direct;
  CompareRule rule;
  bool a_easy;
};

FamilyAnswer judge(const FamilyVerdict& a, const FamilyVerdict& b) {
  const auto ca = candidates(a);
  const auto cb = candidates(b);
  std::optional<Decision> first;
  bool same_direct = true, same_rule = true;
  for (const Side& x : ca) {
    for (const Side& y : cb) {
      const Decision d = decide(x, y);
      if (!first) {
        first = d;
        continue;
      }
      if (d.direct != first->direct) same_direct = false;
      if (d.rule != first->rule || d.a_easy != first->a_easy) same_rule = false;
    }
  }
  if (!same_direct) return {Direct::kUnknown, CompareRule::kDependsOnUnknown, true};
  if (!same_rule) return {first->direct, CompareRule::kResolvedOverUnknowns, true};
  return {first->direct, first->rule, first->a_easy};
}

int rank(Direct d) {
  switch (d) {
    case Direct::kYes:
      return 2;
    case Direct::kUnknown:
      return 1;
    case Direct::kNo:
      return 0;
  }
  return 0;
}

std::string_view family_label(Family f) { return f == Family::V4 ? "IPv4" : "IPv6"; }

std::string reason_for(const FamilyAnswer& ans, Family fam) {
  const char* easy = ans.a_easy ? "A" : "B";
  const char* hard = ans.a_easy ? "B" : "A";
  const auto fl = family_label(fam);
  switch (ans.rule) {
    case CompareRule::kBothEasy:
      return fmt::format(
          "Both ends have endpoint-independent mapping (or no NAT): simultaneous UDP sends open a direct "
          "path over {}.",
          fl);
    case CompareRule::kOpenFiltering:
      return fmt::format(
          "{} has an easy NAT (or none) that lets UDP in from any address once it has sent, so {}'s "
          "packets get through: a direct path opens over {}.",
          easy, hard, fl);
    case CompareRule::kAdfVsEdmSameIp:
      return fmt::format(
          "{} filters by address only and {}'s endpoint-dependent NAT keeps one public IP, so {}'s "
          "packets from a new port still get through: a direct path opens over {}.",
          easy, hard, hard, fl);
    case CompareRule::kAdfVsEdmIpVaries:
      return fmt::format(
          "{} filters by address and {}'s NAT changes public IP per destination: no direct path over {}; "
          "use a relay.",
          easy, hard, fl);
    case CompareRule::kApdfVsEdm:
      return fmt::format(
          "{} filters by address and port and {}'s NAT picks a new public port per destination: no direct "
          "path over {} without port mapping, many-port probing, or a relay.",
          easy, hard, fl);
    case CompareRule::kBothHard:
      return fmt::format(
          "Both ends have endpoint-dependent (symmetric) mapping: no direct path over {}; use a relay.", fl);
    case CompareRule::kResolvedOverUnknowns:
      return fmt::format(
          "Some behaviour is unknown, but every possibility gives the same answer over {}: {}.", fl,
          ans.direct == Direct::kYes ? "a direct path opens" : "no direct path");
    case CompareRule::kDependsOnUnknown:
      return fmt::format(
          "Over {} the answer depends on NAT behaviour the probes could not determine (mapping, "
          "filtering, or whether a symmetric NAT keeps one public IP).",
          fl);
    case CompareRule::kUdpBlocked:
    case CompareRule::kNoCommonFamily:
    case CompareRule::kCount:
      break;
  }
  return std::string();
}

bool any_udp(const Verdict& v) { return v.ipv4.udp || v.ipv6.udp; }

std::optional<IpAddr> shared_public_ip(const Verdict& a, const Verdict& b) {
  for (const FamilyVerdict* fa : {&a.ipv4, &a.ipv6}) {
    const FamilyVerdict& fb = fa == &a.ipv4 ? b.ipv4 : b.ipv6;
    for (const auto& x : fa->public_addresses)
      for (const auto& y : fb.public_addresses)
        if (x.addr == y.addr) return x.addr;
  }
  return std::nullopt;
}

}  // namespace

double birthday_probability(int hard_ports, int probes) {
  if (hard_ports <= 0 || probes <= 0) return 0;
  if (hard_ports >= 65535) return 1;
  return 1.0 - std::pow(1.0 - static_cast<double>(hard_ports) / 65535.0, probes);
}

CompareResult compare(const Verdict& a, const Verdict& b) {
  CompareResult r;
  const auto shared = shared_public_ip(a, b);
  r.same_public_ip = shared.has_value();

  if (!any_udp(a) || !any_udp(b)) {
    r.direct = Direct::kNo;
    r.rule = CompareRule::kUdpBlocked;
    const std::string who = !any_udp(a) && !any_udp(b) ? "Neither end" : (!any_udp(a) ? "A" : "B");
    r.reason = fmt::format("{} got {} STUN reply (UDP blocked): no direct path; traffic has to be relayed "
                           "over TCP/TLS.",
                           who, who == "Neither end" ? "any" : "no");
  } else {
    std::optional<FamilyAnswer> best;
    Family best_family = Family::V4;
    for (Family f : {Family::V4, Family::V6}) {
      if (!a.family(f).udp || !b.family(f).udp) continue;
      const FamilyAnswer ans = judge(a.family(f), b.family(f));
      if (!best || rank(ans.direct) > rank(best->direct)) {
        best = ans;
        best_family = f;
      }
    }
    if (!best) {
      r.direct = Direct::kNo;
      r.rule = CompareRule::kNoCommonFamily;
      r.reason = "Both ends have UDP, but not in the same address family (one IPv4 only, the other IPv6 "
                 "only): no direct path.";
    } else {
      r.direct = best->direct;
      r.rule = best->rule;
      r.family = best_family;
      r.reason = reason_for(*best, best_family);
      if (r.rule == CompareRule::kApdfVsEdm) {
        BirthdayEstimate est;
        est.probability = birthday_probability(est.hard_ports, est.probes);
        r.birthday = est;
        r.reason += fmt::format(
            " Many-port probing ({} ports opened on the hard side, {} probes from the easy side) would "
            "succeed with probability {:.0f}%.",
            est.hard_ports, est.probes, est.probability * 100);
      }
    }
  }
  if (shared) {
    r.reason += fmt::format(
        " Both ends showed public IP {}: they are probably behind the same NAT, where LAN addresses or "
        "hairpinning may give a path.",
        shared->to_string());
  }
  return r;
}

std::string_view to_string(Direct d) {
  switch (d) {
    case Direct::kYes:
      return "yes";
    case Direct::kNo:
      return "no";
    case Direct::kUnknown:
      return "unknown";
  }
  return "invalid";
}

std::string_view to_string(CompareRule r) {
  switch (r) {
    case CompareRule::kBothEasy:
      return "both-easy";
    case CompareRule::kOpenFiltering:
      return "open-filtering";
    case CompareRule::kAdfVsEdmSameIp:
      return "eim-adf-vs-edm-same-ip";
    case CompareRule::kAdfVsEdmIpVaries:
      return "eim-adf-vs-edm-ip-varies";
    case CompareRule::kApdfVsEdm:
      return "eim-apdf-vs-edm";
    case CompareRule::kBothHard:
      return "both-hard";
    case CompareRule::kUdpBlocked:
      return "udp-blocked";
    case CompareRule::kNoCommonFamily:
      return "no-common-family";
    case CompareRule::kResolvedOverUnknowns:
      return "resolved-over-unknowns";
    case CompareRule::kDependsOnUnknown:
      return "depends-on-unknown";
    case CompareRule::kCount:
      break;
  }
  return "invalid";
}

}  // namespace derpd::nat
