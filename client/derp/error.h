// Errors of the DERP client library. Every operation returns one of these; a human-readable detail
// (the OpenSSL message, the HTTP status line, ...) is available separately where it helps.
#pragma once

#include <cstdint>
#include <string_view>

namespace derpd::derpclient {

enum class Error : std::uint8_t {
  kBadUrl,           // not http(s)://host[:port]/path
  kBadOptions,       // an option does not parse (cert name, key)
  kResolve,          // host name lookup failed
  kConnect,          // no address accepted the TCP connection
  kTimeout,          // deadline passed (connect: the whole dial + TLS + upgrade + handshake)
  kTls,              // TLS handshake or record failure
  kCertVerify,       // the server certificate did not verify (roots, host name, pinned hash)
  kHttpStatus,       // the server answered the upgrade with a status other than 101
  kBadHttp,          // the upgrade response is not HTTP/1.x, or its head is over 8 KiB
  kBadServerKey,     // the first frame is not a valid ServerKey (type, magic, length)
  kBadServerInfo,    // the ServerInfo box does not open or its JSON is invalid
  kProtocol,         // a frame the client must not accept (longer than 1 MiB, ...)
  kClosed,           // the server closed the connection
  kIo,               // a socket call failed
  kPacketTooLarge,   // a packet over 64 KiB (nothing was sent; the connection stays usable)
  kBroken,           // an earlier error ended this connection
  kCount,
};

std::string_view to_string(Error e);

}  // namespace derpd::derpclient
