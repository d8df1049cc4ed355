// The NAT verdict: what classify() (client/nat/classifier.h) concludes from a probe run, what
// report_json.h writes and reads back, and what compare() (client/nat/compare.h) pairs up.
//
// Vocabulary (RFC 4787 / RFC 5780):
//  - mapping: how the NAT picks our public address:port. none = no NAT (the public address is the
//    local one); endpoint-independent (EIM) = one public address for every destination;
//    address-dependent (ADM) = a new one per destination IP; address-and-port-dependent (APDM) =
//    a new one per destination IP:port. ADM and APDM are "endpoint-dependent" (EDM).
//  - filtering: which inbound packets reach a mapping. none = nothing filtered (no NAT and no
//    firewall seen); endpoint-independent (EIF) = anyone; address-dependent (ADF) = only IPs we
//    sent to; address-and-port-dependent (APDF) = only IP:ports we sent to.
//  - unknown = the observations cannot tell, and the verdict says so rather than guess.
//
// Endpoint-dependent but ADM/APDM undecidable: with servers on different IPs only, differing
// public addresses prove the mapping is endpoint-dependent, but telling ADM from APDM needs two
// ports on one server IP. The verdict then says mapping "unknown" with
// mapping_endpoint_dependent = true. That flag is true exactly when the mapping was seen to vary
// with the destination: always for ADM and APDM, sometimes for unknown, never for none or EIM.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/nat/observations.h"
#include "relay/base/endpoint.h"

namespace derpd::nat {

// One type for mapping and filtering: the JSON contract gives both the same five strings.
enum class Behavior : std::uint8_t {
  kNone,                     // "none"
  kEndpointIndependent,      // "endpoint-independent"
  kAddressDependent,         // "address-dependent"
  kAddressAndPortDependent,  // "address-and-port-dependent"
  kUnknown,                  // "unknown"
};

enum class PortPreservation : std::uint8_t {
  kUnknown,  // no public address seen
  kYes,      // every public address seen kept the local port
  kNo,       // at least one did not
};

// What the server did with CHANGE-REQUEST, worst case over all its replies.
enum class ChangeRequestSupport : std::uint8_t {
  kUntested,     // no CHANGE-REQUEST sent to it
  kUnverified,   // sent, but no reply could prove or disprove anything (timeouts, no RESPONSE-ORIGIN)
  kHonoured,     // answered from the requested address (RESPONSE-ORIGIN and packet source agree)
  kRefused,      // error response (420 is normal for single-IP servers)
  kIgnored,      // answered from the address the request went to
  kWrongSource,  // answered from, or claimed to answer from, some other address
};

// Why part of the observations was not used. At most one per (kind, server).
enum class AnomalyKind : std::uint8_t {
  kBadServer,                  // server address of the wrong family
  kBadTest,                    // test refers to no server, or its addresses are of the wrong family
  kMappedWrongFamily,          // reply carried no mapped address, or one of the other family
  kReplyFromUnexpectedAddress, // plain request answered from (or claiming) another address
  kOtherAddressInvalid,        // OTHER-ADDRESS equal to the primary in IP or port, or wrong family
  kOtherAddressInconsistent,   // OTHER-ADDRESS differs between replies
  kChangeRequestIgnored,       // CHANGE-REQUEST answered from the unchanged address
  kChangeRequestWrongSource,   // CHANGE-REQUEST answered from an unexpected address
  kChangeRequestRefused,       // error reply to CHANGE-REQUEST from a server advertising OTHER-ADDRESS
  kMappingUnstable,            // one socket, one destination, two different public addresses
  kFilteringContradictory,     // filtering evidence that no RFC 4787 behaviour explains
  kCount,
};

struct Anomaly {
  AnomalyKind kind = AnomalyKind::kBadTest;
  std::string server;              // server name; empty when not about one server
  std::optional<std::size_t> test; // index of the first test showing it
  friend bool operator==(const Anomaly&, const Anomaly&) = default;
};

// Per-server summary for the report.
struct ServerResult {
  std::string name;
  Endpoint address;                       // primary address
  std::optional<Endpoint> other_address;  // as advertised
  bool rfc5780 = false;                   // advertised a valid, consistent OTHER-ADDRESS
  ChangeRequestSupport change_request = ChangeRequestSupport::kUntested;
  std::uint32_t requests = 0;             // tests sent to it (kSendFailed excluded)
  std::uint32_t replies = 0;              // success or error responses
  std::optional<Endpoint> mapped;         // first public address it reported
  std::optional<std::chrono::microseconds> rtt_min;
  std::optional<std::chrono::microseconds> rtt_max;
  friend bool operator==(const ServerResult&, const ServerResult&) = default;
};

struct FamilyVerdict {
  bool tested = false;  // any test of this family was attempted
  bool udp = false;     // any STUN response (success or error) came back
  Behavior mapping = Behavior::kUnknown;
  Behavior filtering = Behavior::kUnknown;
  bool mapping_endpoint_dependent = false;  // see the header comment
  std::vector<Endpoint> public_addresses;   // distinct mapped addresses, in the order first seen
  PortPreservation port_preservation = PortPreservation::kUnknown;
  Hairpin hairpinning = Hairpin::kUntested;
  std::vector<ServerResult> servers;
  std::vector<Anomaly> anomalies;
  friend bool operator==(const FamilyVerdict&, const FamilyVerdict&) = default;
};

// The names people know from RFC 3489 / stunner. "firewall" is RFC 3489's "symmetric UDP
// firewall": no NAT, but inbound UDP filtered.
enum class OldName : std::uint8_t {
  kOpenInternet,         // no NAT, no filtering
  kFirewall,             // no NAT, ADF or APDF
  kFullCone,             // EIM + EIF
  kRestrictedCone,       // EIM + ADF
  kPortRestrictedCone,   // EIM + APDF
  kSymmetric,            // endpoint-dependent mapping
  kUdpBlocked,           // no reply at all
  kUnknown,
};

enum class Difficulty : std::uint8_t {
  kEasy,     // endpoint-independent mapping or no NAT, whatever the filtering
  kHard,     // endpoint-dependent mapping
  kUnknown,  // mapping unknown, or no UDP
};

struct Verdict {
  FamilyVerdict ipv4;
  FamilyVerdict ipv6;
  PortMappingProbe port_mapping;
  std::chrono::milliseconds elapsed{0};
  // Derived from primary() by classify() (kept as given when parsed from JSON).
  OldName old_name = OldName::kUnknown;
  Difficulty difficulty = Difficulty::kUnknown;
  std::string summary;  // one plain sentence: which peers can reach this host directly

  // The family the top-level fields describe: IPv4 if it has UDP, else IPv6 if it has UDP, else
  // IPv4.
  Family primary_family() const;
  const FamilyVerdict& primary() const { return primary_family() == Family::V4 ? ipv4 : ipv6; }
  const FamilyVerdict& family(Family f) const { return f == Family::V4 ? ipv4 : ipv6; }
  friend bool operator==(const Verdict&, const Verdict&) = default;
};

// Easy = none or EIM; hard = proven endpoint-dependent; else unknown.
Difficulty difficulty_of(const FamilyVerdict& f);
OldName old_name_of(const FamilyVerdict& f);
std::string summary_of(const FamilyVerdict& f);
// True when every public address seen has the same IP (nullopt with fewer than two addresses).
std::optional<bool> public_ip_stable(const FamilyVerdict& f);

// Stable names, as used in the JSON report (client/nat/SCHEMA.md).
std::string_view to_string(Behavior b);
std::string_view to_string(PortPreservation p);
std::string_view to_string(ChangeRequestSupport c);
std::string_view to_string(AnomalyKind k);
std::string_view to_string(OldName n);
std::string_view to_string(Difficulty d);
std::string_view to_string(Hairpin h);
std::string_view to_string(Availability a);
std::string_view to_string(Family f);  // "ipv4" / "ipv6"

// Inverses of to_string(); nullopt for any other text.
std::optional<Behavior> behavior_from_string(std::string_view s);
std::optional<PortPreservation> port_preservation_from_string(std::string_view s);
std::optional<ChangeRequestSupport> change_request_support_from_string(std::string_view s);
std::optional<AnomalyKind> anomaly_kind_from_string(std::string_view s);
std::optional<OldName> old_name_from_string(std::string_view s);
std::optional<Difficulty> difficulty_from_string(std::string_view s);
std::optional<Hairpin> hairpin_from_string(std::string_view s);
std::optional<Availability> availability_from_string(std::string_view s);
std::optional<Family> family_from_string(std::string_view s);

}  // namespace derpd::nat
