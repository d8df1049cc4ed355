// Port-mapping protocols, as far as natprobe needs them: is NAT-PMP (RFC 6886), PCP (RFC 6887)
// or UPnP IGD (SSDP discovery) offered by the default gateway? Request builders, reply
// classifiers, and the default gateway read from /proc/net/route. Pure: no I/O; every reply is
// hostile input and is bounds-checked before any field is read.
//
// Protocol flow (driven by client/probe/prober.cc, only towards the default gateway, only when
// the user runs natprobe without --no-portmap):
//  - NAT-PMP: 2-byte "external address" request {0, 0} to gateway:5351; the answer is version 0,
//    opcode 128, a 16-bit result code (0 = success), epoch, external IPv4 (12 bytes in all).
//  - PCP: 24-byte ANNOUNCE request (version 2, opcode 0, lifetime 0, our IPv4 as ::ffff:a.b.c.d)
//    to gateway:5351; the answer has version 2, the R bit with opcode 0, and a result code in
//    byte 3. A NAT-PMP-only gateway answers version 0 with UNSUPP_VERSION.
//  - UPnP IGD: SSDP M-SEARCH for urn:schemas-upnp-org:device:InternetGatewayDevice:1, sent to
//    gateway:1900 and to 239.255.255.250:1900; an HTTP/1.1 200 answer from the gateway's IP whose
//    ST or USN names an InternetGatewayDevice or a WANIPConnection / WANPPPConnection service.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"

namespace derpd::probe {

inline constexpr std::uint16_t kPortMapPort = 5351;  // NAT-PMP and PCP server port
inline constexpr std::uint16_t kSsdpPort = 1900;
IpAddr ssdp_multicast_address();  // 239.255.255.250

// What one reply says about the protocol it was sent for.
enum class PortMapAnswer : std::uint8_t {
  kNotAnAnswer,  // not a reply of this protocol (ignore it, keep waiting)
  kAvailable,    // the gateway speaks it and said yes
  kRefused,      // the gateway speaks the port-mapping port but refused (error code, other version)
};
std::string_view to_string(PortMapAnswer a);

std::array<std::byte, 2> nat_pmp_request();
PortMapAnswer classify_nat_pmp_reply(Bytes reply);

inline constexpr std::size_t kPcpAnnounceSize = 24;
// ANNOUNCE request with `client` (our address towards the gateway) as the PCP client address.
std::array<std::byte, kPcpAnnounceSize> pcp_announce_request(const IpAddr& client);
PortMapAnswer classify_pcp_reply(Bytes reply);

// The SSDP M-SEARCH datagram for an Internet Gateway Device.
std::string_view ssdp_igd_search();
// True for an HTTP/1.x 200 SSDP answer whose ST or USN header names an IGD (relay/http/response_head.h
// parses it: a malformed, oversized or unfinished head is no answer).
bool ssdp_reply_is_igd(Bytes reply);

// The IPv4 default gateway in the text of /proc/net/route: an up route with the gateway flag,
// destination 0.0.0.0/0, lowest metric. nullopt when there is none or the text is malformed.
// Reads at most the first 4096 lines.
std::optional<IpAddr> default_gateway_from_route_table(std::string_view text);

}  // namespace derpd::probe
