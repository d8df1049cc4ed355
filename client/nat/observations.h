// What one natprobe run observed, as plain data: the input of classify() (client/nat/classifier.h).
//
// The socket-driving prober fills this in; nothing here does I/O or reads a clock. Each address
// family has its own servers and tests, because IPv4 and IPv6 usually cross different NATs (or
// none at all).
//
// Conventions the classifier relies on (the prober must keep them):
//  - FamilyObservations::tests is in the order the requests were first sent, and the tests of
//    one local socket do not overlap in time (a filtering test is sent only after the previous
//    test on that socket has finished). The classifier reasons about which remote addresses a
//    socket had contacted before each test.
//  - TestRecord::local is the socket's concrete address (the source address the packets left
//    from, e.g. getsockname() of a connected socket), not a wildcard. When only a wildcard is
//    known, list the host's addresses in interface_addresses so "no NAT" can still be recognised.
//  - TestRecord::response_origin is RESPONSE-ORIGIN, or SOURCE-ADDRESS from an RFC 3489 server;
//    TestRecord::other_address is OTHER-ADDRESS, or CHANGED-ADDRESS from an RFC 3489 server.
//  - ServerInfo::other_address is the OTHER-ADDRESS the prober took from the server's first reply
//    and used to address the tests sent to the server's alternate IP and port.
//
// RFC 5780 naming: the server's primary address is Da:Dp and its alternate Ca:Cp (OTHER-ADDRESS);
// a CHANGE-REQUEST asks for the reply to come from the address that differs in IP (0x04) and/or
// port (0x02) from the one the request arrived at.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "relay/base/endpoint.h"

namespace derpd::nat {

// CHANGE-REQUEST flags sent with a test; both false means a plain Binding request (a zero-valued
// CHANGE-REQUEST attribute is the same thing).
struct ChangeFlags {
  bool ip = false;    // 0x04: reply from the other IP
  bool port = false;  // 0x02: reply from the other port
  bool any() const { return ip || port; }
  friend bool operator==(const ChangeFlags&, const ChangeFlags&) = default;
};

// One STUN server as given to the prober (one address family).
struct ServerInfo {
  std::string name;                      // label shown to people, e.g. "derp1" or "stun.example.org"
  Endpoint primary;                      // Da:Dp, where the first request went
  std::optional<Endpoint> other_address; // Ca:Cp as advertised in the first reply; none = single-IP server
};

enum class Outcome : std::uint8_t {
  kReply,       // a Binding success response with this test's transaction id arrived
  kErrorReply,  // a Binding error response arrived (e.g. 420 for CHANGE-REQUEST)
  kTimeout,     // nothing came back before the retransmission schedule ran out
  kSendFailed,  // the request could not be sent (no route, no address of this family, ...)
};

// One request/response exchange.
struct TestRecord {
  std::size_t server = 0;  // index into FamilyObservations::servers
  Endpoint local;          // the local socket the request left from (identifies the socket)
  Endpoint sent_to;        // the server address the request went to (Da:Dp, Ca:Dp, Ca:Cp or Da:Cp)
  ChangeFlags change;      // CHANGE-REQUEST flags sent
  Outcome outcome = Outcome::kTimeout;
  // Set for kReply (mapped may still be absent or of the wrong family if the server misbehaves).
  std::optional<Endpoint> mapped;           // XOR-MAPPED-ADDRESS (or a fallback): our address as seen
  std::optional<Endpoint> response_origin;  // where the server says it answered from
  std::optional<Endpoint> other_address;    // OTHER-ADDRESS in this reply
  std::optional<Endpoint> source;           // where the reply packet really came from
  std::uint16_t error_code = 0;             // kErrorReply: 300..699
  std::chrono::microseconds rtt{0};         // kReply / kErrorReply: first send to the answer
};

enum class Hairpin : std::uint8_t {
  kUntested,
  kYes,  // a packet sent to our own public address came back to us
  kNo,
};

enum class Availability : std::uint8_t {
  kUnknown,      // not probed, or the probe was inconclusive
  kAvailable,    // the gateway answered the protocol
  kUnavailable,  // the gateway refused or did not answer
};

struct PortMappingProbe {
  Availability nat_pmp = Availability::kUnknown;   // RFC 6886
  Availability pcp = Availability::kUnknown;       // RFC 6887
  Availability upnp_igd = Availability::kUnknown;  // UPnP Internet Gateway Device
  friend bool operator==(const PortMappingProbe&, const PortMappingProbe&) = default;
};

struct FamilyObservations {
  Family family = Family::V4;
  std::vector<IpAddr> interface_addresses;  // optional: the host's own addresses of this family
  std::vector<ServerInfo> servers;
  std::vector<TestRecord> tests;            // in the order they were first sent
  Hairpin hairpin = Hairpin::kUntested;
};

struct Observations {
  FamilyObservations ipv4{Family::V4, {}, {}, {}, Hairpin::kUntested};
  FamilyObservations ipv6{Family::V6, {}, {}, {}, Hairpin::kUntested};
  PortMappingProbe port_mapping;
  std::chrono::milliseconds elapsed{0};  // wall time of the whole run, for the report
};

}  // namespace derpd::nat
