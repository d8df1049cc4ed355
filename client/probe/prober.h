// The NAT prober: drives STUN transactions over a Transport (client/probe/transport.h) and
// fills nat::Observations (client/nat/observations.h) for the classifier. One thread, one loop;
// every loop turn is bounded by the retransmission schedule and an overall time limit.
//
// Test sequence per address family (the order the classifier's proofs rely on, as in the NAT
// simulation's run_probe in tests/unit/nat/nat_sim.h):
//  1. Socket L0 sends a plain Binding request to every server's primary address at once. Each is
//     sent in two forms: RFC 8489 (SOFTWARE "derpd", FINGERPRINT) and Tailscale's "tailnode"
//     form, because Tailscale's derper answers only the latter and RFC 5780 servers advertise
//     OTHER-ADDRESS only in answers to the former. One TestRecord is kept per test: the RFC 8489
//     answer if it comes, else the tailnode answer once the RFC 8489 one has had a grace period
//     (max(tailnode_grace, 2 x the tailnode RTT)) to arrive.
//  2. For each server whose answer carried a valid OTHER-ADDRESS O (primary P), on L0: plain
//     requests to O.ip:P.port, O and P.ip:O.port (in parallel); once all three have finished,
//     CHANGE-REQUEST (IP+port), (port) and (IP) to P. L0 has by then sent to all four server
//     addresses, so these replies pass any filter and prove whether the server honours each flag
//     combination.
//  3. Also for each such server (at most max_filter_servers), started as soon as step 1's answer
//     arrives and in parallel with step 2: two fresh sockets, each sending a plain request to P
//     and, once that is answered, one CHANGE-REQUEST to P: (IP+port) on the first, (port) on the
//     second. These are RFC 5780's filtering tests; the sockets have contacted only P.
//  4. Opt-in hairpinning: once L0 knows its public address M, a fresh socket sends a Binding
//     request to M; if it arrives on L0 the NAT hairpins.
// Plain requests on L0 overlap in time (they go to different destinations, which no mapping or
// filter can confuse); the tests of a filtering socket never overlap, and every test is recorded
// in the order it was first sent.
//
// Port mapping (opt-in by giving `gateway`): NAT-PMP, PCP and SSDP requests to that address only
// (client/probe/portmap.h), in parallel with the STUN tests.
//
// Reply matching: a datagram is a test's answer only when it parses as a Binding response, its
// transaction id is one this run sent, it arrived on the socket that sent it, and it came from an
// address the request could legitimately be answered from: exactly the destination for plain
// requests, one of the server's four addresses for CHANGE-REQUESTs (the classifier then judges
// whether the server honoured the request). Everything else is counted in IgnoredDatagrams and
// otherwise ignored.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "client/nat/observations.h"
#include "client/probe/servers.h"
#include "client/probe/transport.h"
#include "stun/client.h"

namespace derpd::probe {

// natprobe's schedule: RTO 100 ms doubling, 4 sends (0, 100, 300, 700 ms), give up at 900 ms.
inline constexpr stun::RetransmitSchedule kProbeSchedule{std::chrono::milliseconds(100), 4, 2};

struct Progress {
  std::size_t finished = 0;  // tests and port-mapping probes finished
  std::size_t started = 0;
};

struct ProbeOptions {
  stun::RetransmitSchedule schedule = kProbeSchedule;
  std::chrono::milliseconds time_limit{3000};  // hard bound on the whole run
  bool ipv4 = true;
  bool ipv6 = true;
  bool hairpin = false;
  std::optional<IpAddr> gateway;  // IPv4 default gateway for port-mapping probes; none = skip
  std::size_t max_filter_servers = 4;
  std::chrono::milliseconds tailnode_grace{50};
  std::function<void(const Progress&)> on_progress;  // called after each finished test
};

// Datagrams that were not an answer to anything this run is waiting for.
struct IgnoredDatagrams {
  std::uint32_t not_stun = 0;           // unparseable, truncated, or not a Binding response
  std::uint32_t wrong_txid = 0;         // a Binding response to a request this run never sent
  std::uint32_t unexpected_source = 0;  // right transaction id, but from an address (or onto a
                                        // socket) the answer cannot legitimately come from
  std::uint32_t duplicate = 0;          // a further answer to a finished test (retransmissions)
  std::uint32_t port_mapping_other = 0; // on a port-mapping socket, not an answer we asked for
  std::uint32_t total() const { return not_stun + wrong_txid + unexpected_source + duplicate + port_mapping_other; }
  friend bool operator==(const IgnoredDatagrams&, const IgnoredDatagrams&) = default;
};

// How a server answered the first request (step 1).
enum class ServerForm : std::uint8_t {
  kNoAnswer,
  kRfc8489,   // answered the RFC 8489 request
  kTailnode,  // answered only Tailscale's tailnode request (a derper)
};
std::string_view to_string(ServerForm f);

struct ServerProbe {
  Family family = Family::V4;
  std::size_t server = 0;  // index into that family's Observations servers
  ServerForm form = ServerForm::kNoAnswer;
  bool filtering_tested = false;  // steps 2 and 3 ran against it
};

struct ProbeReport {
  nat::Observations observations;
  IgnoredDatagrams ignored;
  std::vector<ServerProbe> servers;
  std::size_t transactions = 0;  // STUN transactions started (both forms counted)
  std::size_t datagrams_sent = 0;
};

// Runs the whole sequence against `servers` and returns what was observed. Closes every socket
// it opened before returning.
ProbeReport run_probe(Transport& net, const std::vector<ServerTarget>& servers, const ProbeOptions& opts);

}  // namespace derpd::probe
