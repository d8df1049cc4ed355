#include "client/nat/verdict.h"

#include <array>
#include <utility>

namespace derpd::nat {

namespace {

template <typename E, std::size_t N>
using NameTable = std::array<std::pair<E, std::string_view>, N>;

template <typename E, std::size_t N>
std::string_view name_in(const NameTable<E, N>& table, E v) {
  for (const auto& [e, s] : table)
    if (e == v) return s;
  return "invalid";
}

template <typename E, std::size_t N>
std::optional<E> value_in(const NameTable<E, N>& table, std::string_view s) {
  for (const auto& [e, name] : table)
    if (name == s) return e;
  return std::nullopt;
}

constexpr NameTable<Behavior, 5> kBehaviorNames{{
    {Behavior::kNone, "none"},
    {Behavior::kEndpointIndependent, "endpoint-independent"},
    {Behavior::kAddressDependent, "address-dependent"},
    {Behavior::kAddressAndPortDependent, "address-and-port-dependent"},
    {Behavior::kUnknown, "unknown"},
}};

constexpr NameTable<PortPreservation, 3> kPortPreservationNames{{
    {PortPreservation::kUnknown, "unknown"},
    {PortPreservation::kYes, "yes"},
    {PortPreservation::kNo, "no"},
}};

constexpr NameTable<ChangeRequestSupport, 6> kChangeRequestNames{{
    {ChangeRequestSupport::kUntested, "untested"},
    {ChangeRequestSupport::kUnverified, "unverified"},
    {ChangeRequestSupport::kHonoured, "honoured"},
    {ChangeRequestSupport::kRefused, "refused"},
    {ChangeRequestSupport::kIgnored, "ignored"},
    {ChangeRequestSupport::kWrongSource, "wrong-source"},
}};

constexpr NameTable<AnomalyKind, static_cast<std::size_t>(AnomalyKind::kCount)> kAnomalyNames{{
    {AnomalyKind::kBadServer, "bad-server"},
    {AnomalyKind::kBadTest, "bad-test"},
    {AnomalyKind::kMappedWrongFamily, "mapped-wrong-family"},
    {AnomalyKind::kReplyFromUnexpectedAddress, "reply-from-unexpected-address"},
    {AnomalyKind::kOtherAddressInvalid, "other-address-invalid"},
    {AnomalyKind::kOtherAddressInconsistent, "other-address-inconsistent"},
    {AnomalyKind::kChangeRequestIgnored, "change-request-ignored"},
    {AnomalyKind::kChangeRequestWrongSource, "change-request-wrong-source"},
    {AnomalyKind::kChangeRequestRefused, "change-request-refused"},
    {AnomalyKind::kMappingUnstable, "mapping-unstable"},
    {AnomalyKind::kFilteringContradictory, "filtering-contradictory"},
}};

constexpr NameTable<OldName, 8> kOldNames{{
    {OldName::kOpenInternet, "open internet"},
    {OldName::kFirewall, "firewall"},
    {OldName::kFullCone, "full cone"},
    {OldName::kRestrictedCone, "restricted cone"},
    {OldName::kPortRestrictedCone, "port-restricted cone"},
    {OldName::kSymmetric, "symmetric"},
    {OldName::kUdpBlocked, "UDP blocked"},
    {OldName::kUnknown, "unknown"},
}};

constexpr NameTable<Difficulty, 3> kDifficultyNames{{
    {Difficulty::kEasy, "easy"},
    {Difficulty::kHard, "hard"},
    {Difficulty::kUnknown, "unknown"},
}};

constexpr NameTable<Hairpin, 3> kHairpinNames{{
    {Hairpin::kUntested, "untested"},
    {Hairpin::kYes, "yes"},
    {Hairpin::kNo, "no"},
}};

constexpr NameTable<Availability, 3> kAvailabilityNames{{
    {Availability::kUnknown, "unknown"},
    {Availability::kAvailable, "available"},
    {Availability::kUnavailable, "unavailable"},
}};

constexpr NameTable<Family, 2> kFamilyNames{{
    {Family::V4, "ipv4"},
    {Family::V6, "ipv6"},
}};

bool is_easy_mapping(Behavior m) { return m == Behavior::kNone || m == Behavior::kEndpointIndependent; }

}  // namespace

std::string_view to_string(Behavior b) { return name_in(kBehaviorNames, b); }
std::string_view to_string(PortPreservation p) { return name_in(kPortPreservationNames, p); }
std::string_view to_string(ChangeRequestSupport c) { return name_in(kChangeRequestNames, c); }
std::string_view to_string(AnomalyKind k) { return name_in(kAnomalyNames, k); }
std::string_view to_string(OldName n) { return name_in(kOldNames, n); }
std::string_view to_string(Difficulty d) { return name_in(kDifficultyNames, d); }
std::string_view to_string(Hairpin h) { return name_in(kHairpinNames, h); }
std::string_view to_string(Availability a) { return name_in(kAvailabilityNames, a); }
std::string_view to_string(Family f) { return name_in(kFamilyNames, f); }

std::optional<Behavior> behavior_from_string(std::string_view s) { return value_in(kBehaviorNames, s); }
std::optional<PortPreservation> port_preservation_from_string(std::string_view s) {
  return value_in(kPortPreservationNames, s);
}
std::optional<ChangeRequestSupport> change_request_support_from_string(std::string_view s) {
  return value_in(kChangeRequestNames, s);
}
std::optional<AnomalyKind> anomaly_kind_from_string(std::string_view s) { return value_in(kAnomalyNames, s); }
std::optional<OldName> old_name_from_string(std::string_view s) { return value_in(kOldNames, s); }
std::optional<Difficulty> difficulty_from_string(std::string_view s) { return value_in(kDifficultyNames, s); }
std::optional<Hairpin> hairpin_from_string(std::string_view s) { return value_in(kHairpinNames, s); }
std::optional<Availability> availability_from_string(std::string_view s) {
  return value_in(kAvailabilityNames, s);
}
std::optional<Family> family_from_string(std::string_view s) { return value_in(kFamilyNames, s); }

Family Verdict::primary_family() const {
  if (ipv4.udp) return Family::V4;
  if (ipv6.udp) return Family::V6;
  return Family::V4;
}

Difficulty difficulty_of(const FamilyVerdict& f) {
  if (!f.udp) return Difficulty::kUnknown;
  if (is_easy_mapping(f.mapping)) return Difficulty::kEasy;
  if (f.mapping_endpoint_dependent) return Difficulty::kHard;
  return Difficulty::kUnknown;
}

OldName old_name_of(const FamilyVerdict& f) {
  if (!f.udp) return OldName::kUdpBlocked;
  if (f.mapping_endpoint_dependent) return OldName::kSymmetric;
  if (f.mapping == Behavior::kNone) {
    switch (f.filtering) {
      case Behavior::kNone:
      case Behavior::kEndpointIndependent:
        return OldName::kOpenInternet;
      case Behavior::kAddressDependent:
      case Behavior::kAddressAndPortDependent:
        return OldName::kFirewall;
      case Behavior::kUnknown:
        return OldName::kUnknown;
    }
  }
  if (f.mapping == Behavior::kEndpointIndependent) {
    switch (f.filtering) {
      case Behavior::kNone:
      case Behavior::kEndpointIndependent:
        return OldName::kFullCone;
      case Behavior::kAddressDependent:
        return OldName::kRestrictedCone;
      case Behavior::kAddressAndPortDependent:
        return OldName::kPortRestrictedCone;
      case Behavior::kUnknown:
        return OldName::kUnknown;
    }
  }
  return OldName::kUnknown;
}

std::optional<bool> public_ip_stable(const FamilyVerdict& f) {
  if (f.public_addresses.size() < 2) return std::nullopt;
  for (const auto& ep : f.public_addresses)
    if (ep.addr != f.public_addresses.front().addr) return false;
  return true;
}

std::string summary_of(const FamilyVerdict& f) {
  if (!f.tested) return "Not tested.";
  if (!f.udp) {
    return "No STUN reply came back, so UDP looks blocked: no peer can reach this host directly and "
           "traffic has to go through a relay over TCP/TLS.";
  }
  if (is_easy_mapping(f.mapping)) {
    switch (f.filtering) {
      case Behavior::kNone:
      case Behavior::kEndpointIndependent:
        return "Any peer that can send UDP can reach this host directly.";
      case Behavior::kAddressDependent:
        return "Peers with no NAT or an easy (endpoint-independent) NAT can reach this host directly, and "
               "so can peers behind hard NATs that keep one public IP.";
      case Behavior::kAddressAndPortDependent:
        return "Peers with no NAT or an easy (endpoint-independent) NAT can reach this host directly; "
               "peers behind hard (symmetric) NATs need port mapping, many-port probing or a relay.";
      case Behavior::kUnknown:
        return "Peers with no NAT or an easy (endpoint-independent) NAT can reach this host directly; "
               "for peers behind hard (symmetric) NATs it depends on filtering, which these servers "
               "could not test.";
    }
  }
  if (f.mapping_endpoint_dependent) {
    if (public_ip_stable(f).value_or(false)) {
      return "Only peers with no NAT or endpoint-independent filtering (full cone) can reach this host "
             "directly, plus restricted-cone peers since this NAT keeps one public IP; others need a "
             "relay.";
    }
    return "Only peers with no NAT or endpoint-independent filtering (full cone) can reach this host "
           "directly; others need a relay.";
  }
  return "Which peers can reach this host directly is unknown: telling the NAT's mapping needs replies "
         "from at least two servers at different IPs.";
}

}  // namespace derpd::nat
