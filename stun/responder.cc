#include "stun/responder.h"

#include <algorithm>
#include <array>

#include "stun/attributes.h"
#include "stun/builder.h"
#include "stun/message.h"

namespace derpd::stun {

ServerAddresses ServerAddresses::of(const Endpoint& primary, const std::optional<Endpoint>& alternate) {
  ServerAddresses s;
  s.ip[0] = primary.addr;
  s.port[0] = primary.port;
  if (alternate) {
    s.ip[1] = alternate->addr;
    s.port[1] = alternate->port;
    s.has_alternate = true;
  }
  return s;
}

std::string_view to_string(Disposition d) {
  switch (d) {
    case Disposition::kSuccess: return "success";
    case Disposition::kSuccessClassic: return "success_classic";
    case Disposition::kErrorResponse: return "error_response";
    case Disposition::kNotStun: return "not_stun";
    case Disposition::kMalformed: return "malformed";
    case Disposition::kIgnored: return "ignored";
    case Disposition::kCount: break;
  }
  return "unknown";
}

namespace {

constexpr std::string_view kSoftware = "derpd";
constexpr std::string_view kTailnodeSoftware = "tailnode";
// UNKNOWN-ATTRIBUTES lists at most this many types (the first ones seen).
constexpr std::size_t kMaxUnknown = 16;

// What the attributes of a Binding request ask for.
struct RequestFacts {
  bool tailnode = false;  // a SOFTWARE attribute equal to "tailnode"
  ChangeRequest change;
  bool bad_request = false;  // a known attribute with a malformed value, or PADDING + RESPONSE-PORT
  bool has_response_port = false;
  std::uint16_t response_port = 0;
  bool has_padding = false;
  std::size_t padding_len = 0;
  std::array<std::uint16_t, kMaxUnknown> unknown{};
  std::size_t unknown_count = 0;

  void add_unknown(std::uint16_t t) {
    if (unknown_count < kMaxUnknown) unknown[unknown_count++] = t;
  }
};

RequestFacts scan(const Message& m) {
  RequestFacts f;
  for (const Attribute& a : m.attributes()) {
    switch (a.type) {
      case AttrType::kChangeRequest: {
        auto c = decode_change_request(a.value);
        if (c) {
          f.change = *c;
        } else {
          f.bad_request = true;
        }
        break;
      }
      case AttrType::kResponsePort: {
        auto p = decode_response_port(a.value);
        if (p) {
          f.has_response_port = true;
          f.response_port = *p;
        } else {
          f.bad_request = true;
        }
        break;
      }
      case AttrType::kPadding:
        f.has_padding = true;
        f.padding_len = std::max(f.padding_len, a.value.size());
        break;
      case AttrType::kSoftware:
        if (decode_text(a.value) == kTailnodeSoftware) f.tailnode = true;
        break;
      // Understood and deliberately unused: this server does not authenticate Binding
      // requests, so credentials are accepted and not checked (RFC 8489 §9 leaves that to
      // the usage). FINGERPRINT was verified by Message::parse.
      case AttrType::kUsername:
      case AttrType::kMessageIntegrity:
      case AttrType::kMessageIntegritySha256:
      case AttrType::kUserhash:
      case AttrType::kRealm:
      case AttrType::kNonce:
      case AttrType::kFingerprint:
        break;
      default:
        if (is_comprehension_required(a.type)) f.add_unknown(static_cast<std::uint16_t>(a.type));
        break;
    }
  }
  if (f.has_padding && f.has_response_port) f.bad_request = true;  // RFC 5780 §6.1: 400
  return f;
}

// The server's socket addresses, with wildcard parts of the receiving socket filled in from
// where the datagram really arrived.
struct Sockets {
  const Request& req;
  const ServerAddresses& server;

  Endpoint at(SocketIndex s) const {
    Endpoint ep{server.ip[s.ip & 1], server.port[s.port & 1]};
    if (ep.addr.is_unspecified() && s.ip == req.received_on.ip) ep.addr = req.local.addr;
    if (ep.port == 0 && s.port == req.received_on.port) ep.port = req.local.port;
    return ep;
  }
  // The socket that differs from the receiving one in both address and port.
  Endpoint other() const {
    return at(SocketIndex{static_cast<std::uint8_t>(req.received_on.ip ^ 1),
                          static_cast<std::uint8_t>(req.received_on.port ^ 1)});
  }
};

Disposition finish(const MessageBuilder& b, Disposition d, Reply& reply) {
  if (!b.ok()) {
    reply = Reply{};
    return Disposition::kIgnored;  // output buffer smaller than kMaxResponseSize
  }
  reply.size = b.size();
  return d;
}

Disposition error_response(const Request& req, const Message& m, std::uint16_t code,
                           std::span<const std::uint16_t> unknown, std::span<std::byte> out, Reply& reply) {
  reply.send_from = req.received_on;
  reply.destination = req.remote;
  MessageBuilder b(out, MessageType::kBindingError, m.txid());
  b.add_error_code(code, reason_phrase(code));
  if (!unknown.empty()) b.add_unknown_attributes(unknown, m.is_classic());
  if (!m.is_classic()) {
    b.add_software(kSoftware);
    b.add_fingerprint();
  }
  return finish(b, Disposition::kErrorResponse, reply);
}

// Tailscale's derper answer: header + XOR-MAPPED-ADDRESS, nothing else.
Disposition tailnode_response(const Request& req, const Message& m, std::span<std::byte> out, Reply& reply) {
  reply.send_from = req.received_on;
  reply.destination = req.remote;
  MessageBuilder b(out, MessageType::kBindingSuccess, m.txid());
  b.add_xor_address(AttrType::kXorMappedAddress, req.remote);
  return finish(b, Disposition::kSuccess, reply);
}

// PADDING in a response: never more than the request's own PADDING, never making the response
// larger than the request datagram (no amplification) nor than kMaxResponseSize.
void add_response_padding(MessageBuilder& b, const Request& req, const RequestFacts& f, std::size_t tail) {
  const std::size_t cap = std::min({kMaxResponseSize, req.datagram.size(), b.size() + b.remaining()});
  const std::size_t used = b.size() + kAttrHeaderSize + tail;
  std::size_t len = cap > used ? (cap - used) & ~std::size_t{3} : 0;
  len = std::min(len, padded_length(f.padding_len));
  b.add_padding(len);
}

}  // namespace

Disposition respond(const Request& req, const ServerAddresses& server, std::span<std::byte> out, Reply& reply) {
  reply = Reply{};
  const Bytes d = req.datagram;
  auto parsed = Message::parse(d);
  if (!parsed) {
    // With the magic cookie the sender meant STUN, so a failure is "malformed"; without it
    // (a classic message or anything else) a failure just means "not STUN".
    if (parsed.error() == ParseError::kTooShort || parsed.error() == ParseError::kNotStun) return Disposition::kNotStun;
    return looks_like_stun(d) ? Disposition::kMalformed : Disposition::kNotStun;
  }
  const Message& m = *parsed;
  if (m.type() != MessageType::kBindingRequest) return Disposition::kIgnored;
  if (out.size() < kMaxResponseSize) return Disposition::kIgnored;

  RequestFacts facts = scan(m);
  // derper answers any request carrying SOFTWARE "tailnode" and a valid FINGERPRINT, whatever
  // else it holds; so do we, byte for byte.
  if (!m.is_classic() && facts.tailnode && m.has_fingerprint()) return tailnode_response(req, m, out, reply);

  // A change the server cannot make: answer as a server without RFC 5780 would (CHANGE-REQUEST
  // unknown). Zero flags are accepted anyway, as some clients always send the attribute.
  if (facts.change.any() && !server.has_alternate) facts.add_unknown(static_cast<std::uint16_t>(AttrType::kChangeRequest));
  if (facts.unknown_count > 0) {
    return error_response(req, m, 420, std::span<const std::uint16_t>(facts.unknown.data(), facts.unknown_count), out,
                          reply);
  }
  if (facts.bad_request) return error_response(req, m, 400, {}, out, reply);

  const Sockets sockets{req, server};
  SocketIndex from = req.received_on;
  if (server.has_alternate) {
    from.ip = static_cast<std::uint8_t>(from.ip ^ (facts.change.change_ip ? 1 : 0));
    from.port = static_cast<std::uint8_t>(from.port ^ (facts.change.change_port ? 1 : 0));
  }
  reply.send_from = from;
  reply.destination = req.remote;
  if (facts.has_response_port) reply.destination.port = facts.response_port;
  const Endpoint origin = sockets.at(from);

  if (m.is_classic()) {
    MessageBuilder b(out, MessageType::kBindingSuccess, m.txid());
    b.add_address(AttrType::kMappedAddress, req.remote);
    b.add_address(AttrType::kSourceAddress, origin);
    if (server.has_alternate) b.add_address(AttrType::kChangedAddress, sockets.other());
    if (facts.has_padding) add_response_padding(b, req, facts, 0);
    return finish(b, Disposition::kSuccessClassic, reply);
  }

  MessageBuilder b(out, MessageType::kBindingSuccess, m.txid());
  b.add_xor_address(AttrType::kXorMappedAddress, req.remote);
  b.add_address(AttrType::kMappedAddress, req.remote);
  b.add_address(AttrType::kResponseOrigin, origin);
  if (server.has_alternate) b.add_address(AttrType::kOtherAddress, sockets.other());
  b.add_software(kSoftware);
  if (facts.has_padding) add_response_padding(b, req, facts, kFingerprintAttrSize);
  b.add_fingerprint();
  return finish(b, Disposition::kSuccess, reply);
}

}  // namespace derpd::stun
