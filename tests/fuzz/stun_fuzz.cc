// Fuzz target for the STUN codec and responder. Built as a libFuzzer binary (stun_fuzzer, clang,
// -DDERPD_FUZZ=ON) and, with any compiler, as a replay driver over the checked-in corpus
// (stun_fuzz_replay). Beyond "does not crash", it checks properties that must hold for every input:
//  - a parsed message's attributes walk to the end, and a reported FINGERPRINT really matches;
//  - rebuilding a parsed message attribute by attribute gives a message that parses to the same
//    type, txid and attributes (the builder and the parser agree);
//  - respond() answers only with a valid response no larger than kMaxResponseSize, carrying the
//    request's txid, and never answers what it classifies as not STUN, malformed or ignored;
//  - a success answer tells the client its own address.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "stun/attributes.h"
#include "stun/builder.h"
#include "stun/client.h"
#include "stun/message.h"
#include "stun/responder.h"

namespace {

using namespace derpd;
using namespace derpd::stun;

#define FUZZ_CHECK(cond)                                                                  \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

void check_parse(Bytes data) {
  auto parsed = Message::parse(data);
  if (!parsed) return;
  const Message& m = *parsed;
  FUZZ_CHECK(m.bytes().size() == data.size());
  std::size_t walked = kHeaderSize;
  AttributeIterator it(m.attribute_bytes());
  for (; it != std::default_sentinel; ++it) walked += kAttrHeaderSize + padded_length(it->value.size());
  FUZZ_CHECK(!it.truncated());
  FUZZ_CHECK(walked == data.size());
  if (m.has_fingerprint()) {
    FUZZ_CHECK(!m.is_classic());
    FUZZ_CHECK(data.size() >= kHeaderSize + kFingerprintAttrSize);
    FUZZ_CHECK(load_be32(data.data() + data.size() - 4) == fingerprint(data.first(data.size() - 8)));
  }

  // Round trip through the builder.
  static std::vector<std::byte> out(kMaxMessageSize);
  MessageBuilder b(out, m.type(), m.txid());
  for (const Attribute& a : m.attributes()) {
    if (a.type == AttrType::kFingerprint && m.has_fingerprint()) {
      b.add_fingerprint();
    } else {
      b.add(a.type, a.value);
    }
  }
  FUZZ_CHECK(b.ok());
  FUZZ_CHECK(b.size() == data.size());
  auto again = Message::parse(Bytes(out).first(b.size()));
  FUZZ_CHECK(again);
  FUZZ_CHECK(again->type_bits() == m.type_bits());
  FUZZ_CHECK(again->txid() == m.txid());
  FUZZ_CHECK(again->has_fingerprint() == m.has_fingerprint());
  AttributeIterator x(m.attribute_bytes()), y(again->attribute_bytes());
  for (; x != std::default_sentinel && y != std::default_sentinel; ++x, ++y) {
    FUZZ_CHECK(x->type == y->type);
    FUZZ_CHECK(x->value.size() == y->value.size());
    FUZZ_CHECK(x->type == AttrType::kFingerprint ||
               std::memcmp(x->value.data(), y->value.data(), x->value.size()) == 0);
  }
  FUZZ_CHECK(x == std::default_sentinel && y == std::default_sentinel);
}

struct Setup {
  ServerAddresses server;
  Endpoint remote;
  SocketIndex received_on;
};

std::vector<Setup> setups() {
  std::vector<Setup> v;
  for (bool v6 : {false, true}) {
    for (bool alt : {false, true}) {
      Setup s;
      s.server.ip[0] = *IpAddr::parse(v6 ? "2001:db8::1" : "203.0.113.1");
      s.server.ip[1] = *IpAddr::parse(v6 ? "2001:db8::2" : "203.0.113.2");
      s.server.port[0] = 3478;
      s.server.port[1] = 3479;
      s.server.has_alternate = alt;
      s.remote = *Endpoint::parse(v6 ? "[2001:db8::77]:40000" : "198.51.100.7:40000");
      s.received_on = alt ? SocketIndex{1, 0} : SocketIndex{0, 0};
      v.push_back(s);
    }
  }
  return v;
}

void check_respond(Bytes data) {
  static const std::vector<Setup> kSetups = setups();
  const auto parsed = Message::parse(data);
  for (const Setup& s : kSetups) {
    Request r;
    r.datagram = data;
    r.remote = s.remote;
    r.local = Endpoint{s.server.ip[s.received_on.ip], s.server.port[s.received_on.port]};
    r.received_on = s.received_on;
    std::byte out[kMaxResponseSize];
    Reply reply;
    const Disposition d = respond(r, s.server, out, reply);
    const bool answered =
        d == Disposition::kSuccess || d == Disposition::kSuccessClassic || d == Disposition::kErrorResponse;
    FUZZ_CHECK(answered == (reply.size > 0));
    FUZZ_CHECK(reply.size <= kMaxResponseSize);
    if (!answered) continue;
    FUZZ_CHECK(parsed);
    FUZZ_CHECK(parsed->type() == MessageType::kBindingRequest);
    const Bytes resp(out, reply.size);
    auto m = Message::parse(resp);
    FUZZ_CHECK(m);
    FUZZ_CHECK(m->txid() == parsed->txid());
    auto p = parse_binding_response(resp);
    FUZZ_CHECK(p);
    FUZZ_CHECK(reply.destination.addr == s.remote.addr);
    if (d == Disposition::kErrorResponse) {
      FUZZ_CHECK(p->is_error);
      FUZZ_CHECK(p->error_code == 400 || p->error_code == 420);
      FUZZ_CHECK(reply.destination == s.remote);
      FUZZ_CHECK(reply.send_from == s.received_on);
    } else {
      FUZZ_CHECK(!p->is_error);
      FUZZ_CHECK(p->mapped && *p->mapped == s.remote);
      FUZZ_CHECK(s.server.has_alternate || reply.send_from == s.received_on);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Bytes in(reinterpret_cast<const std::byte*>(data), size);
  check_parse(in);
  check_respond(in);
  (void)parse_binding_response(in);
  return 0;
}
