// Port-mapping requests and hostile replies, and the default gateway from /proc/net/route text.
#include <gtest/gtest.h>

#include <bit>
#include <string>
#include <vector>

#include "client/probe/portmap.h"

namespace derpd::probe {
namespace {

std::vector<std::byte> bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

TEST(NatPmp, RequestIsTheExternalAddressQuery) {
  const auto r = nat_pmp_request();
  EXPECT_EQ(r[0], std::byte{0});
  EXPECT_EQ(r[1], std::byte{0});
}

TEST(NatPmp, Replies) {
  // RFC 6886 §3.2: version 0, opcode 128, result 0, epoch, external 198.51.100.9.
  EXPECT_EQ(classify_nat_pmp_reply(bytes({0, 128, 0, 0, 0, 0, 0, 7, 198, 51, 100, 9})), PortMapAnswer::kAvailable);
  EXPECT_EQ(classify_nat_pmp_reply(bytes({0, 128, 0, 2, 0, 0, 0, 7})), PortMapAnswer::kRefused);  // not authorised
  EXPECT_EQ(classify_nat_pmp_reply(bytes({0, 128, 0, 3, 0, 0, 0, 7, 0, 0, 0, 0})), PortMapAnswer::kRefused);
  EXPECT_EQ(classify_nat_pmp_reply(bytes({2, 0x80, 0, 1, 0, 0, 0, 0})), PortMapAnswer::kRefused);  // PCP server
  EXPECT_EQ(classify_nat_pmp_reply(bytes({0, 128, 0, 0, 0, 0, 0, 7})), PortMapAnswer::kNotAnAnswer);  // cut short
  EXPECT_EQ(classify_nat_pmp_reply(bytes({0, 129, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4})), PortMapAnswer::kNotAnAnswer);
  EXPECT_EQ(classify_nat_pmp_reply(bytes({0, 0})), PortMapAnswer::kNotAnAnswer);  // our own request echoed
  EXPECT_EQ(classify_nat_pmp_reply({}), PortMapAnswer::kNotAnAnswer);
  EXPECT_EQ(classify_nat_pmp_reply(bytes({1, 128, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4})), PortMapAnswer::kNotAnAnswer);
}

TEST(Pcp, AnnounceCarriesTheClientAddressMapped) {
  const auto r = pcp_announce_request(*IpAddr::parse("10.0.0.2"));
  EXPECT_EQ(r[0], std::byte{2});
  EXPECT_EQ(r[1], std::byte{0});
  for (int i = 2; i < 18; ++i) EXPECT_EQ(r[i], std::byte{0}) << i;
  EXPECT_EQ(r[18], std::byte{0xff});
  EXPECT_EQ(r[19], std::byte{0xff});
  EXPECT_EQ(r[20], std::byte{10});
  EXPECT_EQ(r[23], std::byte{2});
}

TEST(Pcp, Replies) {
  std::vector<std::byte> ok(24, std::byte{0});
  ok[0] = std::byte{2};
  ok[1] = std::byte{0x80};
  EXPECT_EQ(classify_pcp_reply(ok), PortMapAnswer::kAvailable);
  auto refused = ok;
  refused[3] = std::byte{2};  // NOT_AUTHORIZED
  EXPECT_EQ(classify_pcp_reply(refused), PortMapAnswer::kRefused);
  auto request = ok;
  request[1] = std::byte{0};  // R bit clear: a request, not a reply
  EXPECT_EQ(classify_pcp_reply(request), PortMapAnswer::kNotAnAnswer);
  auto odd = ok;
  odd.push_back(std::byte{0});  // not a multiple of 4
  EXPECT_EQ(classify_pcp_reply(odd), PortMapAnswer::kNotAnAnswer);
  EXPECT_EQ(classify_pcp_reply(std::vector<std::byte>(ok.begin(), ok.begin() + 20)), PortMapAnswer::kNotAnAnswer);
  EXPECT_EQ(classify_pcp_reply(std::vector<std::byte>(1104, std::byte{2})), PortMapAnswer::kNotAnAnswer);
  // NAT-PMP-only gateway: version 0, "unsupported version".
  EXPECT_EQ(classify_pcp_reply(bytes({0, 0x80, 0, 1, 0, 0, 0, 7})), PortMapAnswer::kRefused);
}

std::vector<std::byte> text(std::string_view s) {
  const auto b = as_bytes(s);
  return {b.begin(), b.end()};
}

TEST(Ssdp, SearchNamesTheIgd) {
  const auto s = ssdp_igd_search();
  EXPECT_EQ(s.rfind("M-SEARCH * HTTP/1.1\r\n", 0), 0u);
  EXPECT_NE(s.find("ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"), std::string_view::npos);
  EXPECT_NE(s.find("MAN: \"ssdp:discover\""), std::string_view::npos);
  EXPECT_EQ(s.substr(s.size() - 4), "\r\n\r\n");
}

TEST(Ssdp, Replies) {
  EXPECT_TRUE(ssdp_reply_is_igd(text("HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
                                     "LOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n")));
  EXPECT_TRUE(ssdp_reply_is_igd(text("HTTP/1.1 200 OK\r\nusn: uuid:x::urn:schemas-upnp-org:service:WANIPConnection:1\r\n"
                                     "st: upnp:rootdevice\r\n\r\n")));
  EXPECT_FALSE(ssdp_reply_is_igd(text("HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:MediaServer:1\r\n\r\n")));
  EXPECT_FALSE(ssdp_reply_is_igd(
      text("HTTP/1.1 404 Not Found\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n")));
  EXPECT_FALSE(ssdp_reply_is_igd(text("M-SEARCH * HTTP/1.1\r\nST: InternetGatewayDevice\r\n\r\n")));
  // The device name in another header does not count.
  EXPECT_FALSE(ssdp_reply_is_igd(text("HTTP/1.1 200 OK\r\nSERVER: InternetGatewayDevice\r\n\r\n")));
  EXPECT_FALSE(ssdp_reply_is_igd(text("HTTP/1.1 200 OK\r\nST: urn:x:InternetGatewayDevice:1\r\n")));  // unfinished
  EXPECT_FALSE(ssdp_reply_is_igd(text("\x01\x02garbage")));
  EXPECT_FALSE(ssdp_reply_is_igd({}));
  // Every ST/USN line counts, not only the first.
  EXPECT_TRUE(ssdp_reply_is_igd(text("HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\n"
                                     "USN: uuid:x::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n")));
  // A head the HTTP parser refuses is no answer, whatever it names.
  EXPECT_FALSE(ssdp_reply_is_igd(text("HTTP/1.1 200 OK\r\nST : urn:x:InternetGatewayDevice:1\r\n\r\n")));
  EXPECT_FALSE(ssdp_reply_is_igd(text("HTTP/1.1 200 OK\r\nX: y\r\n urn:x:InternetGatewayDevice:1\r\n\r\n")));
  EXPECT_FALSE(ssdp_reply_is_igd(text("HTTP/1.1 200 OK\r\nST: urn:x:InternetGatewayDevice:1\r\nX: " +
                                      std::string(9000, 'a') + "\r\n\r\n")));
}

constexpr std::string_view kRoutes =
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
    "eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
    "wlan0\t00000000\t0100000A\t0003\t0\t0\t50\t00000000\t0\t0\t0\n";

TEST(Gateway, LowestMetricDefaultRoute) {
  // Little-endian rendering of 10.0.0.1 and 192.168.2.1: the lower metric (50) wins.
  const auto gw = default_gateway_from_route_table(kRoutes);
  ASSERT_TRUE(gw);
  const bool little = std::endian::native == std::endian::little;
  EXPECT_EQ(*gw, *IpAddr::parse(little ? "10.0.0.1" : "1.0.0.10"));
}

TEST(Gateway, NoDefaultRouteOrJunk) {
  EXPECT_FALSE(default_gateway_from_route_table(""));
  EXPECT_FALSE(default_gateway_from_route_table(
      "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
      "eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\n"));
  // Default route without the gateway flag, or down.
  EXPECT_FALSE(default_gateway_from_route_table("h\neth0\t00000000\t0102A8C0\t0001\t0\t0\t0\t00000000\n"));
  EXPECT_FALSE(default_gateway_from_route_table("h\neth0\t00000000\t0102A8C0\t0002\t0\t0\t0\t00000000\n"));
  EXPECT_FALSE(default_gateway_from_route_table("h\neth0\t00000000\tZZZZZZZZ\t0003\t0\t0\t0\t00000000\n"));
  EXPECT_FALSE(default_gateway_from_route_table("h\neth0\t00000000\t0102A8C0\t0003\n"));
  EXPECT_FALSE(default_gateway_from_route_table("h\neth0\t00000000\t1234567890\t0003\t0\t0\t0\t00000000\n"));
  std::string junk = "h\n";
  for (int i = 0; i < 5000; ++i) junk += "x\ty\n";
  EXPECT_FALSE(default_gateway_from_route_table(junk));
}

}  // namespace
}  // namespace derpd::probe
