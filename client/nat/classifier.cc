#include "client/nat/classifier.h"

#include <algorithm>
#include <array>
#include <limits>

namespace derpd::nat {

namespace {

constexpr std::size_t kNoServer = std::numeric_limits<std::size_t>::max();

std::size_t flag_index(ChangeFlags f) { return (f.ip ? 2u : 0u) | (f.port ? 1u : 0u); }

// What the classifier learned about one server while walking the tests.
struct ServerState {
  bool usable_family = true;     // primary address of the observed family
  bool other_valid = false;      // ServerInfo::other_address is a plausible alternate
  bool other_consistent = true;  // every reply agreed with it
  bool plain_unexpected = false; // a plain request was answered from (or claimed) another address
  bool cr_sent = false;
  bool cr_honoured = false;
  bool cr_refused = false;
  bool cr_ignored = false;
  bool cr_wrong = false;
  std::array<bool, 4> proven{};  // by flag_index: a reply proved these flags are honoured

  bool filter_usable() const {
    return usable_family && other_valid && other_consistent && !plain_unexpected && cr_honoured &&
           !cr_refused && !cr_ignored && !cr_wrong;
  }
  ChangeRequestSupport support() const {
    if (cr_wrong) return ChangeRequestSupport::kWrongSource;
    if (cr_ignored) return ChangeRequestSupport::kIgnored;
    if (cr_refused) return ChangeRequestSupport::kRefused;
    if (cr_honoured) return ChangeRequestSupport::kHonoured;
    if (cr_sent) return ChangeRequestSupport::kUnverified;
    return ChangeRequestSupport::kUntested;
  }
};

struct Sample {
  Endpoint local;
  Endpoint dest;
  Endpoint mapped;
  std::size_t test;
};

class Classifier {
 public:
  explicit Classifier(const FamilyObservations& obs) : obs_(obs), state_(obs.servers.size()) {}

  FamilyVerdict run() {
    out_.tested = !obs_.tests.empty();
    out_.hairpinning = obs_.hairpin;
    check_servers();
    validated_.assign(obs_.tests.size(), false);
    for (std::size_t i = 0; i < obs_.tests.size(); ++i) walk_test(i);
    finish_servers();
    decide_mapping();
    decide_filtering();
    decide_ports();
    return std::move(out_);
  }

 private:
  bool of_family(const Endpoint& ep) const { return ep.addr.family() == obs_.family; }

  void note(AnomalyKind kind, std::size_t server, std::optional<std::size_t> test) {
    std::string name = server == kNoServer ? std::string() : obs_.servers[server].name;
    for (const auto& a : out_.anomalies)
      if (a.kind == kind && a.server == name) return;
    out_.anomalies.push_back(Anomaly{kind, std::move(name), test});
  }

  void check_servers() {
    for (std::size_t s = 0; s < obs_.servers.size(); ++s) {
      const ServerInfo& info = obs_.servers[s];
      ServerResult r;
      r.name = info.name;
      r.address = info.primary;
      r.other_address = info.other_address;
      out_.servers.push_back(std::move(r));
      ServerState& st = state_[s];
      if (!of_family(info.primary) || info.primary.addr.is_unspecified() || info.primary.port == 0) {
        st.usable_family = false;
        note(AnomalyKind::kBadServer, s, std::nullopt);
        continue;
      }
      if (info.other_address) {
        const Endpoint& o = *info.other_address;
        st.other_valid = of_family(o) && !o.addr.is_unspecified() && o.port != 0 &&
                         o.addr != info.primary.addr && o.port != info.primary.port;
        if (!st.other_valid) note(AnomalyKind::kOtherAddressInvalid, s, std::nullopt);
      }
    }
  }

  // The server address differing from `at` in IP and/or port as `flags` ask, within the
  // server's {Da, Ca} x {Dp, Cp}; nullopt when `at` is not one of its four addresses or the
  // server has no valid alternate.
  std::optional<Endpoint> flip(std::size_t s, const Endpoint& at, ChangeFlags flags) const {
    if (!state_[s].other_valid) return std::nullopt;
    const Endpoint& d = obs_.servers[s].primary;
    const Endpoint& c = *obs_.servers[s].other_address;
    Endpoint r = at;
    if (at.addr != d.addr && at.addr != c.addr) return std::nullopt;
    if (at.port != d.port && at.port != c.port) return std::nullopt;
    if (flags.ip) r.addr = at.addr == d.addr ? c.addr : d.addr;
    if (flags.port) r.port = at.port == d.port ? c.port : d.port;
    return r;
  }

  void walk_test(std::size_t i) {
    const TestRecord& t = obs_.tests[i];
    if (t.server >= obs_.servers.size()) {
      note(AnomalyKind::kBadTest, kNoServer, i);
      return;
    }
    const std::size_t s = t.server;
    ServerState& st = state_[s];
    ServerResult& res = out_.servers[s];
    if (!st.usable_family) return;
    if (!of_family(t.sent_to) || !of_family(t.local)) {
      note(AnomalyKind::kBadTest, s, i);
      return;
    }
    if (t.outcome != Outcome::kSendFailed) ++res.requests;
    if (t.change.any() && t.outcome != Outcome::kSendFailed) st.cr_sent = true;
    if (t.outcome != Outcome::kReply && t.outcome != Outcome::kErrorReply) return;

    out_.udp = true;
    ++res.replies;
    if (!res.rtt_min || t.rtt < *res.rtt_min) res.rtt_min = t.rtt;
    if (!res.rtt_max || t.rtt > *res.rtt_max) res.rtt_max = t.rtt;

    if (t.outcome == Outcome::kErrorReply) {
      if (t.change.any()) {
        st.cr_refused = true;
        if (obs_.servers[s].other_address) note(AnomalyKind::kChangeRequestRefused, s, i);
      }
      return;
    }

    if (t.mapped && of_family(*t.mapped) && !t.mapped->addr.is_unspecified()) {
      samples_.push_back(Sample{t.local, t.sent_to, *t.mapped, i});
      if (!res.mapped) res.mapped = t.mapped;
    } else {
      note(AnomalyKind::kMappedWrongFamily, s, i);
    }

    check_other_address(s, t, i);

    if (!t.change.any()) {
      const bool from_dest = t.source && *t.source == t.sent_to;
      const bool origin_ok = !t.response_origin || *t.response_origin == t.sent_to;
      if (!from_dest || !origin_ok) {
        st.plain_unexpected = true;
        note(AnomalyKind::kReplyFromUnexpectedAddress, s, i);
      }
      return;
    }

    const auto expected = flip(s, t.sent_to, t.change);
    if (expected && t.source && *t.source == *expected) {
      if (t.response_origin && *t.response_origin == *expected) {
        st.cr_honoured = true;
        st.proven[flag_index(t.change)] = true;
        validated_[i] = true;
      } else if (t.response_origin) {
        st.cr_wrong = true;
        note(AnomalyKind::kChangeRequestWrongSource, s, i);
      }
      // No RESPONSE-ORIGIN: right source, but nothing proves the server meant it; not evidence.
      return;
    }
    if (t.source && *t.source == t.sent_to && (!t.response_origin || *t.response_origin == t.sent_to)) {
      st.cr_ignored = true;
      note(AnomalyKind::kChangeRequestIgnored, s, i);
      return;
    }
    st.cr_wrong = true;
    note(AnomalyKind::kChangeRequestWrongSource, s, i);
  }

  // OTHER-ADDRESS in a reply must be the one the prober used, or (RFC 5780 §7.4 reading) the
  // address differing in both IP and port from where the request arrived. A server that
  // advertised one must repeat it in every reply to its primary address.
  void check_other_address(std::size_t s, const TestRecord& t, std::size_t i) {
    ServerState& st = state_[s];
    const auto& advertised = obs_.servers[s].other_address;
    bool ok = true;
    if (t.other_address) {
      if (!advertised) {
        ok = false;
      } else if (*t.other_address != *advertised) {
        const auto opposite = flip(s, t.sent_to, ChangeFlags{true, true});
        ok = opposite && *t.other_address == *opposite;
      }
    } else if (advertised && t.sent_to == obs_.servers[s].primary) {
      ok = false;
    }
    if (!ok) {
      st.other_consistent = false;
      note(AnomalyKind::kOtherAddressInconsistent, s, i);
    }
  }

  void finish_servers() {
    for (std::size_t s = 0; s < obs_.servers.size(); ++s) {
      out_.servers[s].rfc5780 = state_[s].usable_family && state_[s].other_valid && state_[s].other_consistent;
      out_.servers[s].change_request = state_[s].support();
    }
  }

  bool is_local(const Sample& smp) const {
    if (smp.mapped.port != smp.local.port) return false;
    if (smp.mapped.addr == smp.local.addr) return true;
    return std::find(obs_.interface_addresses.begin(), obs_.interface_addresses.end(), smp.mapped.addr) !=
           obs_.interface_addresses.end();
  }

  void decide_mapping() {
    if (samples_.empty()) return;  // unknown
    if (std::all_of(samples_.begin(), samples_.end(), [&](const Sample& smp) { return is_local(smp); })) {
      out_.mapping = Behavior::kNone;
      return;
    }
    bool unstable = false, ip_diff = false, ip_same = false, port_diff = false, port_same = false;
    std::size_t unstable_test = 0;
    for (std::size_t a = 0; a < samples_.size(); ++a) {
      for (std::size_t b = a + 1; b < samples_.size(); ++b) {
        const Sample& x = samples_[a];
        const Sample& y = samples_[b];
        if (x.local != y.local) continue;
        const bool same = x.mapped == y.mapped;
        if (x.dest == y.dest) {
          if (!same && !unstable) {
            unstable = true;
            unstable_test = y.test;
          }
        } else if (x.dest.addr != y.dest.addr) {
          (same ? ip_same : ip_diff) = true;
        } else {
          (same ? port_same : port_diff) = true;
        }
      }
    }
    if (unstable) {
      note(AnomalyKind::kMappingUnstable, obs_.tests[unstable_test].server, unstable_test);
      return;  // unknown
    }
    if (ip_diff || port_diff) {
      out_.mapping_endpoint_dependent = true;
      if (port_diff) {
        out_.mapping = Behavior::kAddressAndPortDependent;
      } else if (port_same) {
        out_.mapping = Behavior::kAddressDependent;
      }
      return;
    }
    if (ip_same) out_.mapping = Behavior::kEndpointIndependent;
  }

  void decide_filtering() {
    bool eif = false, port_open = false, ip_blocked = false, port_blocked = false;
    std::optional<std::size_t> first_evidence;
    for (std::size_t i = 0; i < obs_.tests.size(); ++i) {
      const TestRecord& t = obs_.tests[i];
      if (!t.change.any() || t.server >= obs_.servers.size()) continue;
      const ServerState& st = state_[t.server];
      if (!st.filter_usable()) continue;
      const bool answered = t.outcome == Outcome::kReply && validated_[i];
      const bool unanswered = t.outcome == Outcome::kTimeout && st.proven[flag_index(t.change)];
      if (!answered && !unanswered) continue;
      if (!fresh_socket(i)) continue;
      const auto r = flip(t.server, t.sent_to, t.change);
      if (!r) continue;
      const bool new_ip = r->addr != t.sent_to.addr;
      if (answered) {
        (new_ip ? eif : port_open) = true;
      } else {
        (new_ip ? ip_blocked : port_blocked) = true;
      }
      if (!first_evidence) first_evidence = i;
    }
    const bool contradictory = (eif && ip_blocked) || (port_open && port_blocked) || (eif && port_blocked);
    if (contradictory) {
      note(AnomalyKind::kFilteringContradictory, kNoServer, first_evidence);
      return;  // unknown
    }
    if (eif) {
      out_.filtering = out_.mapping == Behavior::kNone ? Behavior::kNone : Behavior::kEndpointIndependent;
    } else if (port_blocked) {
      out_.filtering = Behavior::kAddressAndPortDependent;
    } else if (ip_blocked && port_open) {
      out_.filtering = Behavior::kAddressDependent;
    }
  }

  // RFC 5780 §4.4 conditions for test i: every earlier request on its socket went to the same
  // server address X it went to, and a plain request to X on that socket was answered.
  bool fresh_socket(std::size_t i) const {
    const TestRecord& t = obs_.tests[i];
    bool answered_plain = false;
    for (std::size_t j = 0; j < i; ++j) {
      const TestRecord& e = obs_.tests[j];
      if (e.local != t.local || e.outcome == Outcome::kSendFailed) continue;
      if (e.sent_to != t.sent_to) return false;
      if (!e.change.any() && e.outcome == Outcome::kReply) answered_plain = true;
    }
    return answered_plain;
  }

  void decide_ports() {
    bool all_kept = true;
    for (const Sample& smp : samples_) {
      if (std::find(out_.public_addresses.begin(), out_.public_addresses.end(), smp.mapped) ==
          out_.public_addresses.end()) {
        out_.public_addresses.push_back(smp.mapped);
      }
      if (smp.mapped.port != smp.local.port) all_kept = false;
    }
    if (!samples_.empty()) out_.port_preservation = all_kept ? PortPreservation::kYes : PortPreservation::kNo;
  }

  const FamilyObservations& obs_;
  std::vector<ServerState> state_;
  std::vector<Sample> samples_;
  std::vector<bool> validated_;  // by test: a CHANGE-REQUEST reply proven to come from where asked
  FamilyVerdict out_;
};

}  // namespace

FamilyVerdict classify_family(const FamilyObservations& obs) { return Classifier(obs).run(); }

Verdict classify(const Observations& obs) {
  Verdict v;
  v.ipv4 = classify_family(obs.ipv4);
  v.ipv6 = classify_family(obs.ipv6);
  v.port_mapping = obs.port_mapping;
  v.elapsed = obs.elapsed;
  const FamilyVerdict& p = v.primary();
  v.old_name = old_name_of(p);
  v.difficulty = difficulty_of(p);
  v.summary = summary_of(p);
  return v;
}

}  // namespace derpd::nat
