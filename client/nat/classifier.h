// NAT behaviour classification (RFC 5780 / RFC 4787) as a pure function of the observations of
// one probe run: bytes and addresses in, verdict out. No sockets, threads or clocks.
//
// Mapping. Every reply with a mapped address of the right family is a sample (local socket,
// destination, public address). Pairs of samples from one local socket are compared:
//  - all samples equal to the local address (or to a host address, see observations.h): none;
//  - two destinations on different IPs with different public addresses: endpoint-dependent.
//    Then two destinations on one IP and different ports decide it: different public addresses
//    = APDM, same = ADM; with no such pair, mapping is "unknown" with mapping_endpoint_dependent
//    (the JSON contract has no "endpoint-dependent" value, and guessing ADM or APDM would be
//    wrong half the time);
//  - one IP, two ports, different public addresses: APDM;
//  - two destinations on different IPs, same public address, nothing varying: EIM (RFC 5780
//    test II, or two single-IP servers);
//  - anything less (one server, one destination): unknown.
//  One socket asking one destination twice and seeing two public addresses makes it unknown.
// The pairs use the addresses requests really went to, so a server whose OTHER-ADDRESS lies (e.g.
// equals its primary) cannot fake test II.
//
// Filtering is decided only with servers proven to honour CHANGE-REQUEST: a server counts when it
// advertised a valid OTHER-ADDRESS (differing from the primary in IP and port, same family,
// consistent across replies), never answered a plain request from the wrong address, and every
// reply to a CHANGE-REQUEST came from exactly the requested address (RESPONSE-ORIGIN and the
// packet's source both), with at least one such reply. Evidence comes from sockets that had sent
// only to one server address X before the test (RFC 5780's fresh socket), once a plain request
// to X on that socket was answered; the reply is expected from R = X with IP and/or port changed:
//  - answered from a new IP: the filter let an unknown IP through (EIF);
//  - answered from X's IP and a new port: not APDF;
//  - unanswered, new IP: not EIF; unanswered, new port: APDF.
//  Timeouts count only when the same server proved, on any socket, that it honours that same
//  combination of flags (behind APDF the proof must come from a socket that had already sent to
//  R). Contradicting evidence makes filtering unknown. No NAT and an open filter gives "none".
//
// Everything set aside is listed in FamilyVerdict::anomalies.
#pragma once

#include "client/nat/observations.h"
#include "client/nat/verdict.h"

namespace derpd::nat {

FamilyVerdict classify_family(const FamilyObservations& obs);

// Both families, port mapping, timings, and the derived old name, difficulty and summary of the
// primary family.
Verdict classify(const Observations& obs);

}  // namespace derpd::nat
