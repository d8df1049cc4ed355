#include "client/derp/http_upgrade.h"

namespace derpd::derpclient {

std::string upgrade_request(const DerpUrl& url, bool fast_start, std::string_view ideal_node) {
  std::string r;
  r.reserve(256);
  r += "GET " + url.target + " HTTP/1.1\r\n";
  r += "Host: " + url.host_header() + "\r\n";
  r += "User-Agent: derpd-client/1\r\n";
  r += "Connection: Upgrade\r\n";
  if (fast_start) r += "Derp-Fast-Start: 1\r\n";
  if (!ideal_node.empty()) r += "Ideal-Node: " + std::string(ideal_node) + "\r\n";
  r += "Upgrade: DERP\r\n\r\n";
  return r;
}

}  // namespace derpd::derpclient
