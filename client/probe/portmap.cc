#include "client/probe/portmap.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string>

#include "relay/http/response_head.h"

namespace derpd::probe {

IpAddr ssdp_multicast_address() { return IpAddr::v4({239, 255, 255, 250}); }

std::string_view to_string(PortMapAnswer a) {
  switch (a) {
    case PortMapAnswer::kNotAnAnswer:
      return "not an answer";
    case PortMapAnswer::kAvailable:
      return "available";
    case PortMapAnswer::kRefused:
      return "refused";
  }
  return "invalid";
}

namespace {

std::uint8_t byte_at(Bytes b, std::size_t i) { return std::to_integer<std::uint8_t>(b[i]); }

constexpr std::uint8_t kPmpVersion = 0;
constexpr std::uint8_t kPmpOpExternalAddress = 0;
constexpr std::uint8_t kPmpReplyBit = 0x80;
constexpr std::size_t kPmpHeader = 8;           // version, opcode, result, epoch
constexpr std::size_t kPmpExternalReply = 12;  // + external IPv4
constexpr std::uint8_t kPcpVersion = 2;
constexpr std::uint8_t kPcpOpAnnounce = 0;
constexpr std::size_t kPcpMaxMessage = 1100;  // RFC 6887 §7

}  // namespace

std::array<std::byte, 2> nat_pmp_request() {
  return {std::byte{kPmpVersion}, std::byte{kPmpOpExternalAddress}};
}

PortMapAnswer classify_nat_pmp_reply(Bytes reply) {
  if (reply.size() < kPmpHeader) return PortMapAnswer::kNotAnAnswer;
  const std::uint8_t version = byte_at(reply, 0);
  const std::uint8_t op = byte_at(reply, 1);
  if (version == kPcpVersion) {
    // A PCP-only server answering a NAT-PMP request (RFC 6887 §9): it speaks PCP, not NAT-PMP.
    return (op & kPmpReplyBit) != 0 ? PortMapAnswer::kRefused : PortMapAnswer::kNotAnAnswer;
  }
  if (version != kPmpVersion || op != (kPmpReplyBit | kPmpOpExternalAddress)) return PortMapAnswer::kNotAnAnswer;
  const std::uint16_t result = load_be16(reply.data() + 2);
  if (result != 0) return PortMapAnswer::kRefused;
  return reply.size() >= kPmpExternalReply ? PortMapAnswer::kAvailable : PortMapAnswer::kNotAnAnswer;
}

std::array<std::byte, kPcpAnnounceSize> pcp_announce_request(const IpAddr& client) {
  std::array<std::byte, kPcpAnnounceSize> out{};
  out[0] = std::byte{kPcpVersion};
  out[1] = std::byte{kPcpOpAnnounce};  // R bit clear: a request; lifetime (4..7) zero
  const auto a16 = client.as16();
  for (std::size_t i = 0; i < 16; ++i) out[8 + i] = std::byte{a16[i]};
  return out;
}

PortMapAnswer classify_pcp_reply(Bytes reply) {
  if (reply.size() < kPmpHeader || reply.size() > kPcpMaxMessage) return PortMapAnswer::kNotAnAnswer;
  const std::uint8_t version = byte_at(reply, 0);
  const std::uint8_t op = byte_at(reply, 1);
  if (version == kPmpVersion) {
    // NAT-PMP-only gateway: "unsupported version" (result 1) to our PCP request.
    return op == kPmpReplyBit ? PortMapAnswer::kRefused : PortMapAnswer::kNotAnAnswer;
  }
  if (version != kPcpVersion || reply.size() < kPcpAnnounceSize || reply.size() % 4 != 0) {
    return PortMapAnswer::kNotAnAnswer;
  }
  if (op != (kPmpReplyBit | kPcpOpAnnounce)) return PortMapAnswer::kNotAnAnswer;
  return byte_at(reply, 3) == 0 ? PortMapAnswer::kAvailable : PortMapAnswer::kRefused;
}

std::string_view ssdp_igd_search() {
  return "M-SEARCH * HTTP/1.1\r\n"
         "HOST: 239.255.255.250:1900\r\n"
         "MAN: \"ssdp:discover\"\r\n"
         "MX: 1\r\n"
         "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
         "\r\n";
}

namespace {

bool names_igd(std::string_view v) {
  static constexpr std::string_view kNeedles[] = {"InternetGatewayDevice", "WANIPConnection", "WANPPPConnection"};
  return std::any_of(std::begin(kNeedles), std::end(kNeedles),
                     [&](std::string_view n) { return v.find(n) != std::string_view::npos; });
}

}  // namespace

bool ssdp_reply_is_igd(Bytes reply) {
  const auto head = http::parse_response_head(reply);
  if (!head || head->status != 200) return false;
  const auto headers = head->headers();
  return std::any_of(headers.begin(), headers.end(), [](const http::Header& h) {
    return (http::iequals(h.name, "ST") || http::iequals(h.name, "USN")) && names_igd(h.value);
  });
}

namespace {

std::optional<std::uint32_t> parse_hex32(std::string_view s) {
  if (s.empty() || s.size() > 8) return std::nullopt;
  std::uint32_t v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<std::uint32_t> parse_dec32(std::string_view s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  std::uint32_t v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// Splits on tabs and spaces; at most `max` fields are collected.
std::size_t split_fields(std::string_view line, std::string_view* out, std::size_t max) {
  std::size_t n = 0;
  std::size_t i = 0;
  while (i < line.size() && n < max) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out[n++] = line.substr(start, i - start);
  }
  return n;
}

}  // namespace

std::optional<IpAddr> default_gateway_from_route_table(std::string_view text) {
  constexpr std::uint32_t kRtfUp = 0x1;
  constexpr std::uint32_t kRtfGateway = 0x2;
  std::optional<IpAddr> best;
  std::uint32_t best_metric = 0;
  std::size_t line_no = 0;
  while (!text.empty() && line_no < 4096) {
    const std::size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (line_no++ == 0) continue;  // header: Iface Destination Gateway Flags RefCnt Use Metric Mask ...
    std::string_view f[8];
    if (split_fields(line, f, 8) < 8) continue;
    const auto dest = parse_hex32(f[1]);
    const auto gw = parse_hex32(f[2]);
    const auto flags = parse_hex32(f[3]);
    const auto metric = parse_dec32(f[6]);
    const auto mask = parse_hex32(f[7]);
    if (!dest || !gw || !flags || !metric || !mask) continue;
    if (*dest != 0 || *mask != 0 || (*flags & (kRtfUp | kRtfGateway)) != (kRtfUp | kRtfGateway) || *gw == 0) continue;
    // The kernel prints the address's in-memory (network order) 32 bits as a native integer.
    std::array<std::uint8_t, 4> b{};
    const std::uint32_t raw = *gw;
    std::memcpy(b.data(), &raw, 4);
    if (!best || *metric < best_metric) {
      best = IpAddr::v4(b);
      best_metric = *metric;
    }
  }
  return best;
}

}  // namespace derpd::probe
