// Would a direct UDP path open between two hosts, given their NAT verdicts? Pure function of
// two Verdicts (for `natprobe compare A.json B.json`), following the table in
// shared/protocol/STUN-NAT.md for simultaneous UDP sends with peer-reflexive candidates:
//
//   easy (no NAT or EIM), any filtering  vs  easy, any filtering        -> yes
//   easy with no filtering / EIF         vs  anything with UDP          -> yes
//   EIM + ADF                            vs  EDM keeping one public IP  -> yes
//   EIM + ADF                            vs  EDM whose public IP varies -> no
//   EIM + APDF                           vs  EDM                        -> no (port mapping,
//                                            relay, or many-port "birthday" probing)
//   EDM                                  vs  EDM                        -> no (relay)
//   UDP blocked                          vs  anything                   -> no (relay over TCP/TLS)
//
// A firewall without NAT (mapping none, filtering ADF/APDF) behaves as EIM with that filtering.
// Stacked NATs are already composed in the verdicts (any endpoint-dependent layer shows up as
// endpoint-dependent mapping). Each address family is judged on its own and the best result
// wins (yes over unknown over no). Unknown parts of a verdict (mapping, filtering, whether an
// EDM keeps one public IP) are resolved by trying every value they could take: if all give the
// same answer it stands, otherwise the answer is unknown.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "client/nat/verdict.h"
#include "relay/base/endpoint.h"

namespace derpd::nat {

enum class Direct : std::uint8_t { kYes, kNo, kUnknown };

// The table row (or reason) that decided.
enum class CompareRule : std::uint8_t {
  kBothEasy,            // both EIM or no NAT
  kOpenFiltering,       // one side easy with no filtering / EIF
  kAdfVsEdmSameIp,      // EIM+ADF vs EDM that keeps one public IP
  kAdfVsEdmIpVaries,    // EIM+ADF vs EDM that changes public IP
  kApdfVsEdm,           // EIM+APDF vs EDM
  kBothHard,            // EDM vs EDM
  kUdpBlocked,          // a side got no STUN reply in any family
  kNoCommonFamily,      // both have UDP, but not in the same address family
  kResolvedOverUnknowns,// parts unknown, but every possibility gives the same answer
  kDependsOnUnknown,    // the answer depends on a behaviour the verdicts leave unknown
  kCount,
};

// Many-port probing: the hard side opens `hard_ports` ports, the easy side probes `probes`
// random ports; success probability p = 1 - (1 - hard_ports/65535)^probes.
struct BirthdayEstimate {
  int hard_ports = 256;
  int probes = 1024;
  double probability = 0;
  friend bool operator==(const BirthdayEstimate&, const BirthdayEstimate&) = default;
};
double birthday_probability(int hard_ports, int probes);

struct CompareResult {
  Direct direct = Direct::kUnknown;
  CompareRule rule = CompareRule::kDependsOnUnknown;
  std::optional<Family> family;               // the family the answer is about, if any
  std::string reason;                         // one sentence for people
  std::optional<BirthdayEstimate> birthday;   // set for EIM+APDF vs EDM
  bool same_public_ip = false;                // both ends showed one same public IP: likely one NAT
};

CompareResult compare(const Verdict& a, const Verdict& b);

std::string_view to_string(Direct d);      // "yes" / "no" / "unknown"
std::string_view to_string(CompareRule r); // e.g. "eim-apdf-vs-edm"

}  // namespace derpd::nat
