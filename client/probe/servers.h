// Where natprobe's STUN servers come from: "host[:port]" arguments, a servers file, or a
// Tailscale-format DERP map; and turning those into addresses (getaddrinfo). Parsing is pure and
// treats its input as hostile (sizes capped before parsing, every JSON value type-checked);
// problems come back as messages naming the line or the node, never as exceptions.
//
// Server spec grammar: host, host:port, IPv4, IPv4:port, [IPv6], [IPv6]:port, or a bare IPv6
// literal (more than one colon, no port). The default port is 3478.
//
// DERP map (tailcfg.DERPMap JSON): {"Regions": {"<id>": {"RegionID", "RegionCode", "Nodes": [
// {"Name", "HostName", "IPv4", "IPv6", "STUNPort", "STUNOnly", "STUNTestIP", ...}]}}}. Per node:
// STUNPort 0 or absent = 3478, -1 = no STUN on this node; IPv4/IPv6 empty or absent = look up
// HostName, an address literal = use it, any other text (conventionally "none") = not in that
// family; STUNTestIP, when set, replaces both. Regions are taken in ascending RegionID order;
// regions marked NoMeasureNoHome are skipped, as Tailscale's netcheck does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "relay/base/endpoint.h"
#include "relay/base/result.h"

namespace derpd::probe {

inline constexpr std::uint16_t kDefaultStunPort = 3478;
inline constexpr std::size_t kMaxServers = 64;             // per run; more are dropped with a warning
inline constexpr std::size_t kMaxServerFileBytes = 1 << 20;
inline constexpr std::size_t kMaxDerpMapBytes = 4 << 20;
inline constexpr std::size_t kMaxHostLength = 253;

// How one address family of a server is obtained.
enum class AddrRule : std::uint8_t {
  kResolve,   // look the host name up (or parse it when it is a literal)
  kFixed,     // use `addr` (DERP map IPv4/IPv6/STUNTestIP)
  kDisabled,  // not in this family (DERP map "none")
};

struct FamilyRule {
  AddrRule rule = AddrRule::kResolve;
  IpAddr addr;  // kFixed only
  friend bool operator==(const FamilyRule&, const FamilyRule&) = default;
};

struct ServerSpec {
  std::string name;  // label for reports: the argument as given, or the DERP node's name
  std::string host;  // name or address literal (no brackets)
  std::uint16_t port = kDefaultStunPort;
  FamilyRule v4;
  FamilyRule v6;
  friend bool operator==(const ServerSpec&, const ServerSpec&) = default;
};

enum class SpecError : std::uint8_t {
  kEmpty,        // nothing but blanks
  kBadPort,      // port missing after ':', not a number, 0 or > 65535
  kBadBrackets,  // '[' without ']', or text between ']' and ':'
  kBadHost,      // empty, too long, or with characters no host name or address has
  kCount,
};
std::string_view to_string(SpecError e);

Result<ServerSpec, SpecError> parse_server_spec(std::string_view text);

struct ListIssue {
  std::size_t line = 0;  // 1-based; 0 when not about one line
  std::string message;
};

struct ServerList {
  std::vector<ServerSpec> servers;
  std::vector<ListIssue> errors;  // a bad line is an error: the caller refuses the file
};

// One spec per line; '#' starts a comment; blank lines are skipped. Input over
// kMaxServerFileBytes is refused as a whole.
ServerList parse_server_list(std::string_view text);

enum class DerpMapError : std::uint8_t {
  kTooLarge,       // over kMaxDerpMapBytes
  kNotJson,        // not parseable as JSON
  kNoRegions,      // not an object with a "Regions" object
  kNoStunNodes,    // parsed, but no node offers STUN
  kCount,
};
std::string_view to_string(DerpMapError e);

struct DerpMap {
  std::vector<ServerSpec> servers;    // STUN-capable nodes, in region order then node order
  std::vector<std::string> warnings;  // nodes skipped because a field was malformed
  std::size_t stun_disabled = 0;      // nodes with STUNPort -1
};

struct DerpMapFailure {
  DerpMapError code = DerpMapError::kNotJson;
  std::string detail;  // e.g. the JSON parser's position
  std::string message() const;
};

Result<DerpMap, DerpMapFailure> parse_derp_map(std::string_view text);

// A server with its addresses, ready to probe.
struct ServerTarget {
  std::string name;
  std::optional<Endpoint> v4;
  std::optional<Endpoint> v6;
};

struct Resolved {
  std::vector<ServerTarget> targets;  // servers with at least one address, duplicates removed
  std::vector<std::string> warnings;  // unresolvable names, duplicates, the kMaxServers cap
};

// Resolves every spec (getaddrinfo for names; literals and fixed addresses without DNS), first
// address of each family. Lookups run concurrently, a few at a time.
Resolved resolve_servers(const std::vector<ServerSpec>& specs, bool want_v4, bool want_v6);

}  // namespace derpd::probe
