// natprobe's human-readable output: the verdict in RFC 4787 terms with the old cone name, easy /
// hard, one sentence on who can reach this host directly, the port-mapping result, a per-server
// table and notes on everything that was set aside; and the `compare` answer. Pure formatting.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/nat/compare.h"
#include "client/nat/verdict.h"
#include "client/probe/prober.h"
#include "relay/base/endpoint.h"

namespace derpd::natprobe {

enum class PortMapScope : std::uint8_t {
  kProbed,     // probed on `gateway`
  kDisabled,   // --no-portmap
  kNoGateway,  // no IPv4 default route
};

// What the probe run adds to the verdict for the human report.
struct RunDetails {
  const probe::ProbeReport* probe = nullptr;  // forms and ignored datagrams; may be null
  PortMapScope port_mapping = PortMapScope::kDisabled;
  std::optional<IpAddr> gateway;
};

std::string format_verdict(const nat::Verdict& v, const RunDetails& details);

// One line for people on why an observation was set aside.
std::string_view explain(nat::AnomalyKind k);

std::string mapping_text(const nat::FamilyVerdict& f);
std::string filtering_text(const nat::FamilyVerdict& f);

std::string format_compare(const nat::CompareResult& r, const nat::Verdict& a, const nat::Verdict& b,
                           std::string_view name_a, std::string_view name_b);

}  // namespace derpd::natprobe
