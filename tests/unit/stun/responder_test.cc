#include "stun/responder.h"

#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "stun/builder.h"
#include "stun/client.h"
#include "stun/message.h"
#include "tests/unit/stun/server_addresses.h"
#include "tests/unit/stun/vectors.h"

namespace derpd::stun {
namespace {

using test::hex;
using test::server_addresses;
using test::txid_1_to_12;

// The remotes are the addresses whose derper answers were captured byte for byte below.
const Endpoint kRemote4 = *Endpoint::parse("192.0.2.1:32853");
const Endpoint kRemote6 = *Endpoint::parse("[2001:db8:1234:5678:11:2233:4455:6677]:32853");

Endpoint socket_addr(const ServerAddresses& s, SocketIndex i) { return Endpoint{s.ip[i.ip], s.port[i.port]}; }

TxId classic_tx() {
  std::array<std::byte, 16> id{};
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = std::byte(0xC0 + i);
  return TxId::from_classic_bytes(id);
}

using Fill = std::function<void(MessageBuilder&)>;

// A request with the test txid: `fill` adds attributes, then FINGERPRINT unless told not to.
std::vector<std::byte> req(const Fill& fill = {}, bool fp = true, MessageType type = MessageType::kBindingRequest,
                           std::size_t cap = 2048) {
  std::vector<std::byte> buf(cap);
  MessageBuilder b(buf, type, txid_1_to_12());
  if (fill) fill(b);
  if (fp) b.add_fingerprint();
  EXPECT_TRUE(b.ok());
  buf.resize(b.size());
  return buf;
}

std::vector<std::byte> classic_req(const Fill& fill = {}, MessageType type = MessageType::kBindingRequest) {
  std::vector<std::byte> buf(2048);
  MessageBuilder b(buf, type, classic_tx());
  if (fill) fill(b);
  EXPECT_TRUE(b.ok());
  buf.resize(b.size());
  return buf;
}

std::vector<std::byte> tailnode_req() {
  std::vector<std::byte> buf(kTailnodeRequestSize);
  BindingRequestOptions o;
  o.form = RequestForm::kTailnode;
  buf.resize(build_binding_request(txid_1_to_12(), o, buf));
  return buf;
}

Fill change(bool ip, bool port) {
  return [=](MessageBuilder& b) { b.add_change_request(ChangeRequest{ip, port}); };
}

std::vector<std::byte> garbage(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> d(n);
  for (auto& b : d) b = static_cast<std::byte>(rng());
  return d;
}

enum class Kind { kTailnode, kGeneric, kClassic, kError, kNone };

struct Case {
  std::string name{};
  std::vector<std::byte> request{};
  Disposition want;
  Kind kind = Kind::kNone;
  bool v6 = false;
  bool alternate = false;
  SocketIndex received_on{};
  SocketIndex want_from{};
  std::uint16_t want_port = 0;  // destination port; 0 = the remote's
  std::uint16_t want_error = 0;
  std::vector<std::uint16_t> want_unknown{};
  std::vector<std::byte> want_exact{};  // full expected response, when given
  std::function<void(const Case&, Bytes response)> extra{};
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class Respond : public ::testing::TestWithParam<Case> {};

TEST_P(Respond, Behaves) {
  const Case& c = GetParam();
  const ServerAddresses server = server_addresses(c.v6, c.alternate);
  Request r;
  r.datagram = c.request;
  r.remote = c.v6 ? kRemote6 : kRemote4;
  r.received_on = c.received_on;
  r.local = socket_addr(server, c.received_on);

  std::array<std::byte, kMaxResponseSize> out{};
  Reply reply;
  reply.size = 12345;  // must be reset
  const Disposition d = respond(r, server, out, reply);
  ASSERT_EQ(to_string(d), to_string(c.want));
  if (c.kind == Kind::kNone) {
    EXPECT_EQ(reply.size, 0u);
    return;
  }
  ASSERT_GT(reply.size, 0u);
  ASSERT_LE(reply.size, kMaxResponseSize);
  const Bytes resp = Bytes(out).first(reply.size);
  EXPECT_EQ(reply.send_from, c.want_from);
  Endpoint dest = r.remote;
  if (c.want_port != 0) dest.port = c.want_port;
  EXPECT_EQ(reply.destination, dest);
  if (!c.want_exact.empty()) {
        EXPECT_EQ(std::vector<std::byte>(resp.begin(), resp.end()), c.want_exact);
      }

  auto m = Message::parse(resp);
  ASSERT_TRUE(m) << to_string(m.error());
  auto rq = Message::parse(c.request);
  ASSERT_TRUE(rq);
  EXPECT_EQ(m->txid(), rq->txid());
  EXPECT_EQ(m->is_classic(), rq->is_classic());
  auto p = parse_binding_response(resp);
  ASSERT_TRUE(p) << to_string(p.error());

  const Endpoint from = socket_addr(server, c.want_from);
  const Endpoint other = socket_addr(server, SocketIndex{static_cast<std::uint8_t>(c.received_on.ip ^ 1),
                                                         static_cast<std::uint8_t>(c.received_on.port ^ 1)});
  switch (c.kind) {
    case Kind::kTailnode: {
      EXPECT_EQ(m->type(), MessageType::kBindingSuccess);
      std::vector<AttrType> types;
      for (const Attribute& a : m->attributes()) types.push_back(a.type);
      EXPECT_EQ(types, std::vector<AttrType>{AttrType::kXorMappedAddress});
      EXPECT_EQ(*p->mapped, r.remote);
      break;
    }
    case Kind::kGeneric: {
      EXPECT_EQ(m->type(), MessageType::kBindingSuccess);
      EXPECT_TRUE(m->has_fingerprint());
      EXPECT_EQ(p->mapped_from, MappedFrom::kXorMapped);
      EXPECT_EQ(*p->mapped, r.remote);
      EXPECT_EQ(*decode_address(m->find(AttrType::kMappedAddress)->value), r.remote);
      ASSERT_TRUE(p->response_origin);
      EXPECT_EQ(*p->response_origin, from);
      EXPECT_EQ(p->other_address.has_value(), c.alternate);
      if (c.alternate) {
        EXPECT_EQ(*p->other_address, other);
      }
      EXPECT_EQ(p->software, "derpd");
      EXPECT_FALSE(m->find(AttrType::kSourceAddress));
      break;
    }
    case Kind::kClassic: {
      EXPECT_EQ(m->type(), MessageType::kBindingSuccess);
      EXPECT_EQ(p->mapped_from, MappedFrom::kMapped);
      EXPECT_EQ(*p->mapped, r.remote);
      ASSERT_TRUE(p->source_address);
      EXPECT_EQ(*p->source_address, from);
      EXPECT_EQ(p->changed_address.has_value(), c.alternate);
      if (c.alternate) {
        EXPECT_EQ(*p->changed_address, other);
      }
      EXPECT_FALSE(m->find(AttrType::kSoftware));
      EXPECT_FALSE(m->find(AttrType::kFingerprint));
      EXPECT_FALSE(m->find(AttrType::kXorMappedAddress));
      break;
    }
    case Kind::kError: {
      EXPECT_EQ(m->type(), MessageType::kBindingError);
      EXPECT_TRUE(p->is_error);
      EXPECT_EQ(p->error_code, c.want_error);
      EXPECT_EQ(p->error_reason, reason_phrase(c.want_error));
      std::vector<std::uint16_t> unknown(p->unknown.begin(), p->unknown.begin() + p->unknown_count);
      if (rq->is_classic() && c.want_unknown.size() % 2 == 1) {
        auto want = c.want_unknown;
        want.push_back(want.back());  // RFC 3489 repeats one to fill the word
        EXPECT_EQ(unknown, want);
      } else {
        EXPECT_EQ(unknown, c.want_unknown);
      }
      EXPECT_EQ(m->has_fingerprint(), !rq->is_classic());
      EXPECT_EQ(p->software, rq->is_classic() ? "" : "derpd");
      break;
    }
    case Kind::kNone: break;
  }
  if (c.extra) c.extra(c, resp);
}

constexpr SocketIndex S00{0, 0}, S01{0, 1}, S10{1, 0}, S11{1, 1};

std::vector<Case> cases() {
  std::vector<Case> v;
  auto add = [&](Case c) { v.push_back(std::move(c)); };

  // --- Tailscale netcheck: answered exactly as derper does.
  add({.name = "tailnode_v4",
       .request = tailnode_req(),
       .want = Disposition::kSuccess,
       .kind = Kind::kTailnode,
       .want_exact = hex("0101 000c 2112a442 01020304 05060708 090a0b0c 0020 0008 0001 a147 e112a643")});
  add({.name = "tailnode_v6",
       .request = tailnode_req(),
       .want = Disposition::kSuccess,
       .kind = Kind::kTailnode,
       .v6 = true,
       .want_exact = hex("0101 0018 2112a442 01020304 05060708 090a0b0c 0020 0014 0002 a147"
                         "0113a9fa 1336557c 0517253b 4d5f6d7b")});
  add({.name = "tailnode_alternate_socket",
       .request = tailnode_req(),
       .want = Disposition::kSuccess,
       .kind = Kind::kTailnode,
       .alternate = true,
       .received_on = S11,
       .want_from = S11,
       .want_exact = hex("0101 000c 2112a442 01020304 05060708 090a0b0c 0020 0008 0001 a147 e112a643")});
  add({.name = "tailnode_ignores_other_attributes",
       .request = req([](MessageBuilder& b) {
         b.add_change_request(ChangeRequest{true, true});
         b.add(static_cast<AttrType>(0x0024), hex("6e0001ff"));
         b.add_software("tailnode");
       }),
       .want = Disposition::kSuccess,
       .kind = Kind::kTailnode});
  add({.name = "tailnode_without_fingerprint_is_generic",
       .request = req([](MessageBuilder& b) { b.add_software("tailnode"); }, false),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric});

  // --- Generic RFC 8489.
  add({.name = "generic_v4", .request = req(), .want = Disposition::kSuccess, .kind = Kind::kGeneric});
  add({.name = "generic_v6", .request = req(), .want = Disposition::kSuccess, .kind = Kind::kGeneric, .v6 = true});
  add({.name = "generic_bare_header",
       .request = req({}, false),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric});
  add({.name = "generic_with_software",
       .request = req([](MessageBuilder& b) { b.add_software("some client 1.0"); }),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric,
       .extra = [](const Case&, Bytes resp) {
         // Attribute order: XOR-MAPPED, MAPPED, RESPONSE-ORIGIN, SOFTWARE, FINGERPRINT.
         auto m = Message::parse(resp);
         std::vector<AttrType> types;
         for (const Attribute& a : m->attributes()) types.push_back(a.type);
         EXPECT_EQ(types, (std::vector<AttrType>{AttrType::kXorMappedAddress, AttrType::kMappedAddress,
                                                 AttrType::kResponseOrigin, AttrType::kSoftware,
                                                 AttrType::kFingerprint}));
       }});
  add({.name = "generic_alternate_primary",
       .request = req(),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric,
       .alternate = true});
  add({.name = "generic_alternate_received_on_alt_ip",
       .request = req(),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric,
       .alternate = true,
       .received_on = S10,
       .want_from = S10});
  add({.name = "generic_alternate_v6_received_on_alt_port",
       .request = req(),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric,
       .v6 = true,
       .alternate = true,
       .received_on = S01,
       .want_from = S01});
  add({.name = "generic_credentials_ignored",
       .request = req([](MessageBuilder& b) {
         b.add_text(AttrType::kUsername, "evtj:h6vY");
         b.add(AttrType::kMessageIntegrity, std::vector<std::byte>(20));
       }),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric});
  add({.name = "generic_unknown_optional_ignored",
       .request = req([](MessageBuilder& b) { b.add(static_cast<AttrType>(0x8029), hex("932ff9b1 51263b36")); }),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric});

  // --- CHANGE-REQUEST with an alternate: all combinations from both primary and alternate sockets.
  for (SocketIndex on : {S00, S11, S01}) {
    for (int flags = 0; flags < 4; ++flags) {
      const bool ip = flags & 1, port = flags & 2;
      const std::string n = "change_alt_on" + std::to_string(on.ip) + std::to_string(on.port) + (ip ? "_ip" : "") +
                            (port ? "_port" : "") + (flags == 0 ? "_none" : "");
      add({.name = n,
           .request = req(change(ip, port)),
           .want = Disposition::kSuccess,
           .kind = Kind::kGeneric,
           .alternate = true,
           .received_on = on,
           .want_from = SocketIndex{static_cast<std::uint8_t>(on.ip ^ ip), static_cast<std::uint8_t>(on.port ^ port)}});
    }
  }
  add({.name = "change_alt_v6_both",
       .request = req(change(true, true)),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric,
       .v6 = true,
       .alternate = true,
       .want_from = S11});
  // Without an alternate: a set flag is refused with 420; zero flags are fine.
  add({.name = "change_noalt_ip",
       .request = req(change(true, false)),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 420,
       .want_unknown = {0x0003}});
  add({.name = "change_noalt_port",
       .request = req(change(false, true)),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 420,
       .want_unknown = {0x0003}});
  add({.name = "change_noalt_both",
       .request = req(change(true, true)),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 420,
       .want_unknown = {0x0003}});
  add({.name = "change_noalt_none",
       .request = req(change(false, false)),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric});
  add({.name = "change_bad_length",
       .request = req([](MessageBuilder& b) { b.add(AttrType::kChangeRequest, hex("0006")); }),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 400});

  // --- RESPONSE-PORT.
  add({.name = "response_port",
       .request = req([](MessageBuilder& b) { b.add_response_port(5555); }),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric,
       .want_port = 5555});
  add({.name = "response_port_with_change",
       .request = req([](MessageBuilder& b) {
         b.add_change_request(ChangeRequest{true, false});
         b.add_response_port(6000);
       }),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric,
       .alternate = true,
       .want_from = S10,
       .want_port = 6000});
  add({.name = "response_port_zero",
       .request = req([](MessageBuilder& b) { b.add(AttrType::kResponsePort, hex("0000 0000")); }),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 400});
  add({.name = "response_port_bad_length",
       .request = req([](MessageBuilder& b) { b.add(AttrType::kResponsePort, hex("15b3")); }),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 400});

  // --- PADDING.
  auto padding_check = [](std::size_t max_pad) {
    return [max_pad](const Case& c, Bytes resp) {
      auto m = Message::parse(resp);
      auto pad = m->find(AttrType::kPadding);
      ASSERT_TRUE(pad);
      EXPECT_LE(pad->value.size(), max_pad);
      EXPECT_EQ(pad->value.size() % 4, 0u);
      // Padding never makes the response larger than the request: no amplification.
      if (!pad->value.empty()) {
        EXPECT_LE(resp.size(), c.request.size());
      }
      EXPECT_LE(resp.size(), kMaxResponseSize);
    };
  };
  add({.name = "padding_small",
       .request = req([](MessageBuilder& b) { b.add_padding(64); }),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric,
       .extra = padding_check(64)});
  add({.name = "padding_mtu",
       .request = req([](MessageBuilder& b) { b.add_padding(1400); }),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric,
       .v6 = true,
       .alternate = true,
       .extra = [](const Case& c, Bytes resp) {
         auto m = Message::parse(resp);
         auto pad = m->find(AttrType::kPadding);
         ASSERT_TRUE(pad);
         EXPECT_GT(pad->value.size(), 300u);  // fills up to the cap
         EXPECT_GT(resp.size(), kMaxResponseSize - 4);
         EXPECT_LE(resp.size(), kMaxResponseSize);
         EXPECT_LT(resp.size(), c.request.size());
       }});
  add({.name = "padding_64k",
       .request = req([](MessageBuilder& b) { b.add_padding(0xFFF0); }, true, MessageType::kBindingRequest, 70000),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric,
       .extra = padding_check(kMaxResponseSize)});
  add({.name = "padding_empty",
       .request = req([](MessageBuilder& b) { b.add_padding(0); }),
       .want = Disposition::kSuccess,
       .kind = Kind::kGeneric,
       .extra = padding_check(0)});
  add({.name = "padding_with_response_port",
       .request = req([](MessageBuilder& b) {
         b.add_padding(64);
         b.add_response_port(5555);
       }),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 400});

  // --- Unknown comprehension-required attributes.
  add({.name = "unknown_required",
       .request = req([](MessageBuilder& b) { b.add(static_cast<AttrType>(0x0024), hex("6e0001ff")); }),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 420,
       .want_unknown = {0x0024}});
  add({.name = "unknown_required_several_plus_change",
       .request = req([](MessageBuilder& b) {
         b.add(static_cast<AttrType>(0x0024), hex("6e0001ff"));
         b.add_change_request(ChangeRequest{true, false});
         b.add(static_cast<AttrType>(0x7fff), {});
         b.add(static_cast<AttrType>(0x8fff), {});
       }),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 420,
       .want_unknown = {0x0024, 0x7fff, 0x0003}});
  add({.name = "unknown_response_address",
       .request = req([](MessageBuilder& b) {
         b.add_address(AttrType::kResponseAddress, *Endpoint::parse("10.0.0.1:9"));
       }),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 420,
       .want_unknown = {0x0002}});
  add({.name = "unknown_many_capped_at_16",
       .request = req([](MessageBuilder& b) {
         for (std::uint16_t t = 0x0100; t < 0x0100 + 40; ++t) b.add(static_cast<AttrType>(t), {});
       }),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 420,
       .want_unknown = [] {
         std::vector<std::uint16_t> types;
         for (std::uint16_t t = 0x0100; t < 0x0100 + 16; ++t) types.push_back(t);
         return types;
       }()});
  add({.name = "rfc5769_sample_request",
       .request = hex(test::kRfc5769Request),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 420,
       .want_unknown = {0x0024}});

  // --- Classic RFC 3489.
  add({.name = "classic_noalt", .request = classic_req(), .want = Disposition::kSuccessClassic, .kind = Kind::kClassic});
  add({.name = "classic_alt",
       .request = classic_req(),
       .want = Disposition::kSuccessClassic,
       .kind = Kind::kClassic,
       .alternate = true});
  add({.name = "classic_v6_alt_on_alt_ip",
       .request = classic_req(),
       .want = Disposition::kSuccessClassic,
       .kind = Kind::kClassic,
       .v6 = true,
       .alternate = true,
       .received_on = S10,
       .want_from = S10});
  add({.name = "classic_change_both_alt",
       .request = classic_req(change(true, true)),
       .want = Disposition::kSuccessClassic,
       .kind = Kind::kClassic,
       .alternate = true,
       .want_from = S11});
  add({.name = "classic_change_port_alt",
       .request = classic_req(change(false, true)),
       .want = Disposition::kSuccessClassic,
       .kind = Kind::kClassic,
       .alternate = true,
       .want_from = S01});
  add({.name = "classic_change_noalt",
       .request = classic_req(change(true, false)),
       .want = Disposition::kErrorResponse,
       .kind = Kind::kError,
       .want_error = 420,
       .want_unknown = {0x0003}});
  add({.name = "classic_change_zero_noalt",
       .request = classic_req(change(false, false)),
       .want = Disposition::kSuccessClassic,
       .kind = Kind::kClassic});

  // --- Valid STUN, nothing to answer.
  add({.name = "ignored_success_response",
       .request = req([](MessageBuilder& b) { b.add_xor_address(AttrType::kXorMappedAddress, kRemote4); }, true,
                      MessageType::kBindingSuccess),
       .want = Disposition::kIgnored});
  add({.name = "ignored_error_response", .request = req({}, true, MessageType::kBindingError), .want = Disposition::kIgnored});
  add({.name = "ignored_indication", .request = req({}, true, MessageType::kBindingIndication), .want = Disposition::kIgnored});
  add({.name = "ignored_allocate_request",
       .request = req({}, true, static_cast<MessageType>(make_type(0x003, MessageClass::kRequest))),
       .want = Disposition::kIgnored});
  add({.name = "ignored_classic_response",
       .request = classic_req({}, MessageType::kBindingSuccess),
       .want = Disposition::kIgnored});

  // --- Malformed and not STUN: never answered.
  add({.name = "empty_datagram", .request = {}, .want = Disposition::kNotStun});
  {
    auto t = tailnode_req();
    t.resize(19);
    add({.name = "truncated_header", .request = t, .want = Disposition::kNotStun});
  }
  {
    auto t = tailnode_req();
    t.resize(30);
    add({.name = "truncated_body", .request = t, .want = Disposition::kMalformed});
  }
  {
    auto d = req({}, false);
    d.resize(22);
    store_be16(d.data() + 2, 2);
    add({.name = "length_not_multiple_of_4", .request = d, .want = Disposition::kMalformed});
  }
  {
    auto d = req({}, false);
    store_be16(d.data() + 2, 8);
    add({.name = "length_beyond_datagram", .request = d, .want = Disposition::kMalformed});
  }
  {
    auto d = tailnode_req();
    store_be16(d.data() + 22, 12);  // SOFTWARE claims 12 bytes: runs into and past FINGERPRINT
    add({.name = "attribute_beyond_end", .request = d, .want = Disposition::kMalformed});
  }
  {
    auto d = tailnode_req();
    d.back() ^= std::byte{1};
    add({.name = "bad_fingerprint_tailnode", .request = d, .want = Disposition::kMalformed});
  }
  {
    auto d = req([](MessageBuilder& b) { b.add_software("x"); });
    d[d.size() - 5] ^= std::byte{0x80};
    add({.name = "bad_fingerprint_generic", .request = d, .want = Disposition::kMalformed});
  }
  {
    auto d = req([](MessageBuilder& b) { b.add_fingerprint(); }, false);
    // Append an attribute after the FINGERPRINT, and make the CRC right for the final header.
    const std::size_t off = d.size();
    d.resize(off + 8);
    store_be16(d.data() + off, 0x8022);
    store_be16(d.data() + off + 2, 4);
    store_be16(d.data() + 2, static_cast<std::uint16_t>(d.size() - 20));
    store_be32(d.data() + off - 4, fingerprint(Bytes(d).first(off - 8)));
    add({.name = "fingerprint_not_last", .request = d, .want = Disposition::kMalformed});
  }
  {
    auto d = req({}, false);
    d[0] = std::byte{0x40};
    add({.name = "top_bits_set", .request = d, .want = Disposition::kNotStun});
  }
  {
    auto d = classic_req();
    store_be16(d.data() + 2, 4);
    add({.name = "classic_bad_length_not_stun", .request = d, .want = Disposition::kNotStun});
  }
  add({.name = "garbage_64k", .request = garbage(65536, 1), .want = Disposition::kNotStun});
  {
    auto g = garbage(65536, 2);
    g[0] = std::byte{0};
    g[1] = std::byte{1};
    add({.name = "garbage_64k_binding_type", .request = g, .want = Disposition::kNotStun});
  }
  {
    // A STUN header (cookie, maximal length) followed by random attribute bytes.
    auto g = garbage(20 + 0xFFFC, 3);
    auto h = req({}, false);
    std::copy(h.begin(), h.end(), g.begin());
    store_be16(g.data() + 2, 0xFFFC);
    add({.name = "garbage_64k_after_stun_header", .request = g, .want = Disposition::kMalformed});
  }
  add({.name = "zeros_64k", .request = std::vector<std::byte>(65536), .want = Disposition::kNotStun});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Stun, Respond, ::testing::ValuesIn(cases()),
                         [](const auto& i) { return i.param.name; });

TEST(RespondExtra, WildcardReceivingSocketUsesLocalAddress) {
  ServerAddresses server;  // 0.0.0.0:0, no alternate
  Request r;
  auto d = req();
  r.datagram = d;
  r.remote = kRemote4;
  r.local = *Endpoint::parse("198.51.100.10:3478");
  std::array<std::byte, kMaxResponseSize> out{};
  Reply reply;
  ASSERT_EQ(respond(r, server, out, reply), Disposition::kSuccess);
  auto p = parse_binding_response(Bytes(out).first(reply.size));
  ASSERT_TRUE(p);
  EXPECT_EQ(*p->response_origin, r.local);
}

TEST(RespondExtra, OutputBufferTooSmall) {
  const ServerAddresses server = server_addresses(false, false);
  Request r;
  auto d = tailnode_req();
  r.datagram = d;
  r.remote = kRemote4;
  r.local = socket_addr(server, S00);
  std::array<std::byte, kMaxResponseSize - 1> out{};
  Reply reply;
  EXPECT_EQ(respond(r, server, out, reply), Disposition::kIgnored);
  EXPECT_EQ(reply.size, 0u);
}

TEST(RespondExtra, ResponseNeverExceedsMax) {
  // The largest answers: IPv6 with alternate plus maximal padding, and a 420 with 16 types.
  const ServerAddresses server = server_addresses(true, true);
  Request r;
  r.remote = kRemote6;
  r.local = socket_addr(server, S00);
  std::vector<std::byte> out(70000);
  for (auto fill : std::vector<Fill>{[](MessageBuilder& b) { b.add_padding(0xFFF0); },
                                     [](MessageBuilder& b) {
                                       for (std::uint16_t t = 0x0100; t < 0x0100 + 200; ++t)
                                         b.add(static_cast<AttrType>(t), hex("00000000"));
                                     }}) {
    auto d = req(fill, true, MessageType::kBindingRequest, 70000);
    r.datagram = d;
    Reply reply;
    const Disposition disp = respond(r, server, out, reply);
    EXPECT_TRUE(disp == Disposition::kSuccess || disp == Disposition::kErrorResponse);
    EXPECT_GT(reply.size, 0u);
    EXPECT_LE(reply.size, kMaxResponseSize);
  }
}

TEST(RespondExtra, DispositionNames) {
  EXPECT_EQ(to_string(Disposition::kSuccess), "success");
  EXPECT_EQ(to_string(Disposition::kSuccessClassic), "success_classic");
  EXPECT_EQ(to_string(Disposition::kErrorResponse), "error_response");
  EXPECT_EQ(to_string(Disposition::kNotStun), "not_stun");
  EXPECT_EQ(to_string(Disposition::kMalformed), "malformed");
  EXPECT_EQ(to_string(Disposition::kIgnored), "ignored");
}

TEST(ServerAddressesOf, PrimaryAloneOrWithTheAlternate) {
  const auto one = ServerAddresses::of(*Endpoint::parse("203.0.113.1:3478"));
  EXPECT_FALSE(one.has_alternate);
  EXPECT_EQ(socket_addr(one, SocketIndex{0, 0}), *Endpoint::parse("203.0.113.1:3478"));

  const auto both = ServerAddresses::of(*Endpoint::parse("[2001:db8::1]:3478"), Endpoint::parse("[2001:db8::2]:3479"));
  ASSERT_TRUE(both.has_alternate);
  EXPECT_EQ(socket_addr(both, SocketIndex{0, 0}), *Endpoint::parse("[2001:db8::1]:3478"));
  EXPECT_EQ(socket_addr(both, SocketIndex{1, 1}), *Endpoint::parse("[2001:db8::2]:3479"));
  EXPECT_EQ(socket_addr(both, SocketIndex{0, 1}), *Endpoint::parse("[2001:db8::1]:3479"));
  EXPECT_EQ(socket_addr(both, SocketIndex{1, 0}), *Endpoint::parse("[2001:db8::2]:3478"));
  // The same as the hand-built addresses the tests above give respond().
  const auto hand = server_addresses(false, true);
  const auto built = ServerAddresses::of(Endpoint{hand.ip[0], hand.port[0]}, Endpoint{hand.ip[1], hand.port[1]});
  for (std::uint8_t ip : {0, 1})
    for (std::uint8_t port : {0, 1}) EXPECT_EQ(socket_addr(built, {ip, port}), socket_addr(hand, {ip, port}));
}

}  // namespace
}  // namespace derpd::stun
