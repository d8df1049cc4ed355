// A small simulated network for the NAT classifier tests: RFC 4787 NAT layers (stackable), STUN
// servers with RFC 5780 alternates and scripted misbehaviour, and the probe sequence the prober
// runs. It produces the Observations a real run would; the tests then check classify()'s verdict
// against the NAT that was built, so the expected verdicts are ground truth about the simulated
// NAT, not about the classifier.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "client/nat/observations.h"
#include "relay/base/endpoint.h"

namespace derpd::nat::sim {

enum class Map : std::uint8_t { kNone, kEim, kAdm, kApdm };
// kOpen: no filter at all (even unsolicited packets pass); the others need a mapping.
enum class Filt : std::uint8_t { kOpen, kEif, kAdf, kApdf };

struct NatLayer {
  Map map = Map::kEim;
  Filt filt = Filt::kApdf;
  IpAddr public_ip;            // unused for Map::kNone
  bool preserve_port = true;   // keep the inner port when it is free
};

// One NAT (or firewall) layer with its state.
class Nat {
 public:
  explicit Nat(NatLayer spec) : spec_(spec) {}
  // Translates an outgoing packet's source; records the destination as contacted.
  Endpoint outbound(const Endpoint& src, const Endpoint& dst);
  // Translates an incoming packet's destination back, or nullopt when filtered / unmapped.
  std::optional<Endpoint> inbound(const Endpoint& src, const Endpoint& dst);

 private:
  struct Mapping {
    Endpoint inner;
    Endpoint external;
    std::set<Endpoint> contacted;
  };
  NatLayer spec_;
  std::map<std::pair<Endpoint, Endpoint>, std::size_t> by_key_;  // (inner, destination key)
  std::map<Endpoint, std::size_t> by_external_;
  std::vector<Mapping> mappings_;
  std::uint16_t next_port_ = 50000;
};

// Ways a server can misbehave.
enum class Quirk : std::uint8_t {
  kHonest,
  kIgnoresChange,        // answers CHANGE-REQUEST from the address it was sent to (honest origin)
  kThirdAddress,         // answers CHANGE-REQUEST from primary IP, port 3999 (honest origin)
  kLiesOrigin,           // answers CHANGE-REQUEST from where it arrived, claims the requested origin
  kNoResponseOrigin,     // honours CHANGE-REQUEST but sends no RESPONSE-ORIGIN
  kOtherIsPrimary,       // single-IP server advertising OTHER-ADDRESS = its primary; ignores changes
  kOtherNowhere,         // single-IP server advertising an alternate nobody listens on; ignores changes
  kOtherChanges,         // honest, but OTHER-ADDRESS moves to another port after the first reply
  kWrongFamilyMapped,    // mapped address of the other family
  kRealResponder,        // derpd's own responder (stun/responder.h) answers, through the real
                         // codec both ways: request bytes built by build_test_request(), reply
                         // bytes read by record_response() (client/nat/stun_observe.h)
};

struct Server {
  std::string name;
  Endpoint primary;
  std::optional<Endpoint> alt;  // real RFC 5780 alternate (Ca:Cp), if the server has one
  Quirk quirk = Quirk::kHonest;
};

struct World {
  Family family = Family::V4;
  Endpoint host;                 // the host's address; probes use host.addr with ports 40000+
  std::vector<NatLayer> layers;  // innermost first; empty = no NAT, no firewall
  bool udp_blocked = false;
  std::vector<Server> servers;
  std::vector<IpAddr> interface_addresses;
};

// Runs the probe sequence:
//  1. socket L0: a plain request to every server's primary (OTHER-ADDRESS is taken from the reply);
//  2. for each server that advertised OTHER-ADDRESS O (primary P), on L0: plain requests to
//     O.ip:P.port, O, P.ip:O.port, then CHANGE-REQUEST (IP+port), (port), (IP) to P. Having sent
//     to all four server addresses, L0 receives these replies through any filter, which proves
//     whether the server honours each flag combination;
//  3. for each such server, a fresh socket: a plain request to P, then CHANGE-REQUEST (IP+port)
//     and (port) to P: RFC 5780 filtering tests.
FamilyObservations run_probe(const World& world);

// Server address constants used by the tests.
Server rfc5780_server(Family f, Quirk q = Quirk::kHonest);
Server single_ip_server(Family f, int which, std::uint16_t port = 3478, Quirk q = Quirk::kHonest);

}  // namespace derpd::nat::sim
