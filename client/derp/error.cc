#include "client/derp/error.h"

namespace derpd::derpclient {

std::string_view to_string(Error e) {
  switch (e) {
    case Error::kBadUrl: return "bad_url";
    case Error::kBadOptions: return "bad_options";
    case Error::kResolve: return "resolve";
    case Error::kConnect: return "connect";
    case Error::kTimeout: return "timeout";
    case Error::kTls: return "tls";
    case Error::kCertVerify: return "cert_verify";
    case Error::kHttpStatus: return "http_status";
    case Error::kBadHttp: return "bad_http";
    case Error::kBadServerKey: return "bad_server_key";
    case Error::kBadServerInfo: return "bad_server_info";
    case Error::kProtocol: return "protocol";
    case Error::kClosed: return "closed";
    case Error::kIo: return "io";
    case Error::kPacketTooLarge: return "packet_too_large";
    case Error::kBroken: return "broken";
    case Error::kCount: break;
  }
  return "unknown";
}

}  // namespace derpd::derpclient
