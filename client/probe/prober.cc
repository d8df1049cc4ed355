#include "client/probe/prober.h"

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "client/nat/stun_observe.h"
#include "client/probe/portmap.h"
#include "stun/message.h"

namespace derpd::probe {

std::string_view to_string(ServerForm f) {
  switch (f) {
    case ServerForm::kNoAnswer:
      return "no answer";
    case ServerForm::kRfc8489:
      return "rfc8489";
    case ServerForm::kTailnode:
      return "tailnode";
  }
  return "invalid";
}

namespace {

using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

constexpr std::size_t kMaxRequest = 128;
constexpr std::size_t kReceiveBuffer = 2048;

// Retransmission state of one request (STUN or port mapping).
struct Retx {
  int sends = 0;
  TimePoint first{};
  TimePoint next{};
  TimePoint deadline{};
  bool done = false;
};

// One STUN transaction: one request form of one test.
struct Txn {
  std::size_t test = 0;
  bool tailnode = false;
  stun::TxId txid;
  std::array<std::byte, kMaxRequest> req{};
  std::size_t len = 0;
  Retx retx;
  bool answered = false;  // its own answer arrived (not stopped because the other form won)
  nat::TestRecord rec;    // outcome and reply fields
};

// One logical test: one TestRecord in the observations.
struct Test {
  Family family = Family::V4;
  std::size_t slot = 0;  // index into FamilyObservations::tests
  std::size_t server = 0;
  SocketId sock = 0;
  Endpoint local;
  Endpoint to;
  nat::ChangeFlags change;
  std::vector<Endpoint> accept;  // where an answer may come from
  std::array<std::size_t, 2> txn{};
  std::size_t ntxn = 0;
  std::optional<TimePoint> grace_until;
  bool done = false;
  std::function<void(const nat::TestRecord&)> then;
};

enum class AuxKind : std::uint8_t { kHairpin, kNatPmp, kPcp, kUpnp };

// A request that is not a STUN test: hairpin probe or port-mapping probe.
struct Aux {
  AuxKind kind = AuxKind::kHairpin;
  SocketId sock = 0;
  std::vector<Endpoint> to;
  std::vector<std::byte> req;
  Retx retx;
  // kHairpin: the family, the socket the request must arrive on, and its transaction id.
  Family family = Family::V4;
  SocketId watch = 0;
  stun::TxId txid;
  bool sent_any = false;  // at least one destination accepted the first send
};

class Prober {
 public:
  Prober(Transport& net, const ProbeOptions& opts) : net_(net), opts_(opts) {}

  ProbeReport run(const std::vector<ServerTarget>& servers) {
    start_ = net_.now();
    hard_deadline_ = start_ + opts_.time_limit;
    if (opts_.ipv4) start_family(Family::V4, servers);
    if (opts_.ipv6) start_family(Family::V6, servers);
    if (opts_.gateway && opts_.gateway->is_v4()) start_port_mapping(*opts_.gateway);

    std::array<std::byte, kReceiveBuffer> buf{};
    // Bounded: every transaction finishes by its deadline, and everything by hard_deadline_.
    for (;;) {
      const TimePoint now = net_.now();
      if (now >= hard_deadline_) {
        expire_all(now);
        break;
      }
      service_timers(now);
      if (!pending()) break;
      const TimePoint wake = std::min(next_event(), hard_deadline_);
      auto r = net_.receive(wake, buf);
      if (r) dispatch(*r, Bytes(buf.data(), r->size));
    }
    report_.observations.elapsed = duration_cast<milliseconds>(net_.now() - start_);
    for (SocketId s : sockets_) net_.close(s);
    return std::move(report_);
  }

 private:
  nat::FamilyObservations& fobs(Family f) {
    return f == Family::V4 ? report_.observations.ipv4 : report_.observations.ipv6;
  }

  std::optional<SocketId> open_socket(Family f) {
    auto s = net_.open(f);
    if (!s) return std::nullopt;
    sockets_.push_back(*s);
    return *s;
  }

  void progress() {
    if (opts_.on_progress) opts_.on_progress(Progress{finished_, started_});
  }

  // ---- step 1 ---------------------------------------------------------------------------

  void start_family(Family f, const std::vector<ServerTarget>& servers) {
    nat::FamilyObservations& obs = fobs(f);
    for (const ServerTarget& t : servers) {
      const auto& ep = f == Family::V4 ? t.v4 : t.v6;
      if (!ep || ep->addr.family() != f) continue;
      obs.servers.push_back(nat::ServerInfo{t.name, *ep, std::nullopt});
      report_.servers.push_back(ServerProbe{f, obs.servers.size() - 1, ServerForm::kNoAnswer, false});
    }
    if (obs.servers.empty()) return;
    obs.interface_addresses = net_.interface_addresses(f);
    const auto l0 = open_socket(f);
    if (!l0) {
      // No socket of this family: every server is recorded as not reachable from here.
      for (std::size_t s = 0; s < obs.servers.size(); ++s) {
        nat::TestRecord rec;
        rec.server = s;
        rec.local = Endpoint{IpAddr::any(f), 0};
        rec.sent_to = obs.servers[s].primary;
        rec.outcome = nat::Outcome::kSendFailed;
        obs.tests.push_back(rec);
      }
      return;
    }
    for (std::size_t s = 0; s < obs.servers.size(); ++s) {
      start_test(f, *l0, s, obs.servers[s].primary, {}, /*both_forms=*/true,
                 [this, f, s, l0 = *l0](const nat::TestRecord& rec) { on_primary_answer(f, s, l0, rec); });
    }
  }

  ServerProbe* server_probe(Family f, std::size_t s) {
    for (auto& p : report_.servers)
      if (p.family == f && p.server == s) return &p;
    return nullptr;
  }

  static bool valid_other(const Endpoint& primary, const Endpoint& o) {
    return o.addr.family() == primary.addr.family() && !o.addr.is_unspecified() && o.port != 0 &&
           o.addr != primary.addr && o.port != primary.port;
  }

  void on_primary_answer(Family f, std::size_t s, SocketId l0, const nat::TestRecord& rec) {
    if (rec.outcome != nat::Outcome::kReply && rec.outcome != nat::Outcome::kErrorReply) return;
    if (rec.outcome != nat::Outcome::kReply) return;
    nat::FamilyObservations& obs = fobs(f);
    if (opts_.hairpin && rec.mapped && rec.mapped->addr.family() == f && !rec.mapped->addr.is_unspecified() &&
        rec.mapped->port != 0 && !hairpin_started_[f == Family::V4 ? 0 : 1]) {
      hairpin_started_[f == Family::V4 ? 0 : 1] = true;
      start_hairpin(f, l0, *rec.mapped);
    }
    if (!rec.other_address) return;
    obs.servers[s].other_address = rec.other_address;  // the classifier judges it either way
    const Endpoint p = obs.servers[s].primary;
    const Endpoint o = *rec.other_address;
    if (!valid_other(p, o) || filter_servers_ >= opts_.max_filter_servers) return;
    ++filter_servers_;
    if (ServerProbe* sp = server_probe(f, s)) sp->filtering_tested = true;

    // Step 2: L0 contacts the other three server addresses, then asks for changed replies.
    auto remaining = std::make_shared<int>(3);
    auto after_plain = [this, f, s, l0, p, remaining](const nat::TestRecord&) {
      if (--*remaining > 0) return;
      start_test(f, l0, s, p, nat::ChangeFlags{true, true}, false, {});
      start_test(f, l0, s, p, nat::ChangeFlags{false, true}, false, {});
      start_test(f, l0, s, p, nat::ChangeFlags{true, false}, false, {});
    };
    start_test(f, l0, s, Endpoint{o.addr, p.port}, {}, false, after_plain);
    start_test(f, l0, s, o, {}, false, after_plain);
    start_test(f, l0, s, Endpoint{p.addr, o.port}, {}, false, after_plain);

    // Step 3: fresh sockets for the filtering tests.
    for (const nat::ChangeFlags flags : {nat::ChangeFlags{true, true}, nat::ChangeFlags{false, true}}) {
      const auto fresh = open_socket(f);
      if (!fresh) continue;
      start_test(f, *fresh, s, p, {}, false, [this, f, s, p, flags, sock = *fresh](const nat::TestRecord& r) {
        if (r.outcome == nat::Outcome::kReply) start_test(f, sock, s, p, flags, false, {});
      });
    }
  }

  // ---- tests and transactions ------------------------------------------------------------

  void start_test(Family f, SocketId sock, std::size_t server, const Endpoint& to, nat::ChangeFlags change,
                  bool both_forms, std::function<void(const nat::TestRecord&)> then) {
    nat::FamilyObservations& obs = fobs(f);
    Test t;
    t.family = f;
    t.slot = obs.tests.size();
    t.server = server;
    t.sock = sock;
    t.local = net_.local(sock);
    t.to = to;
    t.change = change;
    t.then = std::move(then);
    if (change.any()) {
      const Endpoint& p = obs.servers[server].primary;
      const Endpoint& o = *obs.servers[server].other_address;
      t.accept = {p, o, Endpoint{o.addr, p.port}, Endpoint{p.addr, o.port}};
    } else {
      t.accept = {to};
    }
    nat::TestRecord placeholder;
    placeholder.server = server;
    placeholder.local = t.local;
    placeholder.sent_to = to;
    placeholder.change = change;
    obs.tests.push_back(placeholder);

    const std::size_t index = tests_.size();
    tests_.push_back(std::move(t));
    ++started_;
    add_txn(index, false);
    if (both_forms && !change.any()) add_txn(index, true);
    const TimePoint now = net_.now();
    // Send the first copies now, so "first sent" order is creation order.
    const Test& added = tests_[index];
    for (std::size_t k = 0; k < added.ntxn; ++k) send_txn(txns_[added.txn[k]], now);
  }

  void add_txn(std::size_t test_index, bool tailnode) {
    Test& t = tests_[test_index];
    Txn x;
    x.test = test_index;
    x.tailnode = tailnode;
    do {
      x.txid = stun::new_txid();
    } while (by_txid_.count(x.txid) != 0 || hairpin_txids_.count(x.txid) != 0);
    if (tailnode) {
      stun::BindingRequestOptions o;
      o.form = stun::RequestForm::kTailnode;
      x.len = stun::build_binding_request(x.txid, o, x.req);
    } else {
      x.len = nat::build_test_request(x.txid, t.change, x.req);
    }
    x.rec.outcome = nat::Outcome::kTimeout;
    const std::size_t idx = txns_.size();
    by_txid_.emplace(x.txid, idx);
    txns_.push_back(x);
    t.txn[t.ntxn++] = idx;
    ++report_.transactions;
  }

  void send_txn(Txn& x, TimePoint now) {
    if (x.retx.done) return;
    const Test& t = tests_[x.test];
    const auto st = x.len == 0 ? Status<NetError>(Err(NetError::kOther))
                               : net_.send(t.sock, t.to, Bytes(x.req.data(), x.len));
    if (st) ++report_.datagrams_sent;
    if (x.retx.sends == 0) {
      x.retx.first = now;
      x.retx.deadline = now + opts_.schedule.deadline();
      if (!st) {
        x.retx.done = true;
        x.rec.outcome = nat::Outcome::kSendFailed;
        resolve(x.test, now);
        return;
      }
    }
    ++x.retx.sends;
    if (x.retx.sends < opts_.schedule.max_sends) x.retx.next = x.retx.first + opts_.schedule.send_at(x.retx.sends);
  }

  // Decides a test from its transactions (see the header: prefer the RFC 8489 answer).
  void resolve(std::size_t test_index, TimePoint now) {
    Test& t = tests_[test_index];
    if (t.done) return;
    Txn& pref = txns_[t.txn[0]];
    Txn* alt = t.ntxn > 1 ? &txns_[t.txn[1]] : nullptr;
    auto answered = [](const Txn* x) { return x && x->retx.done && x->rec.outcome == nat::Outcome::kReply; };
    if (answered(&pref)) return finish(test_index, pref, false);
    if (answered(alt)) {
      if (pref.retx.done) return finish(test_index, *alt, true);
      if (!t.grace_until) {
        const auto wait = std::max<Clock::duration>(opts_.tailnode_grace, 2 * alt->rec.rtt);
        t.grace_until = std::min(now + wait, pref.retx.deadline);
      }
      if (now >= *t.grace_until) finish(test_index, *alt, true);
      return;
    }
    const bool all_done = pref.retx.done && (!alt || alt->retx.done);
    if (!all_done) return;
    if (pref.rec.outcome == nat::Outcome::kErrorReply) return finish(test_index, pref, false);
    if (alt && alt->rec.outcome == nat::Outcome::kErrorReply) return finish(test_index, *alt, true);
    finish(test_index, pref, false);
  }

  void finish(std::size_t test_index, const Txn& chosen, bool tailnode) {
    Test& t = tests_[test_index];
    for (std::size_t k = 0; k < t.ntxn; ++k) txns_[t.txn[k]].retx.done = true;
    nat::TestRecord rec = chosen.rec;
    rec.server = t.server;
    rec.local = t.local;
    rec.sent_to = t.to;
    rec.change = t.change;
    fobs(t.family).tests[t.slot] = rec;
    t.done = true;
    t.grace_until.reset();
    ++finished_;
    progress();
    const bool answered = rec.outcome == nat::Outcome::kReply || rec.outcome == nat::Outcome::kErrorReply;
    if (t.ntxn > 1 && answered) {
      if (ServerProbe* p = server_probe(t.family, t.server)) p->form = tailnode ? ServerForm::kTailnode : ServerForm::kRfc8489;
    }
    auto then = std::move(t.then);
    if (then) then(rec);
  }

  // ---- hairpinning and port mapping ---------------------------------------------------------

  void start_hairpin(Family f, SocketId l0, const Endpoint& mapped) {
    const auto h = open_socket(f);
    if (!h) return;
    Aux a;
    a.kind = AuxKind::kHairpin;
    a.sock = *h;
    a.to = {mapped};
    a.family = f;
    a.watch = l0;
    do {
      a.txid = stun::new_txid();
    } while (by_txid_.count(a.txid) != 0 || hairpin_txids_.count(a.txid) != 0);
    hairpin_txids_.insert(a.txid);
    a.req.resize(kMaxRequest);
    a.req.resize(nat::build_test_request(a.txid, {}, a.req));
    start_aux(std::move(a));
  }

  void start_port_mapping(const IpAddr& gw) {
    const Endpoint pmp_ep{gw, kPortMapPort};
    if (const auto s = open_socket(Family::V4)) {
      Aux a;
      a.kind = AuxKind::kNatPmp;
      a.sock = *s;
      a.to = {pmp_ep};
      const auto req = nat_pmp_request();
      a.req.assign(req.begin(), req.end());
      start_aux(std::move(a));
    }
    const auto me = net_.source_address_for(pmp_ep);
    if (me && me->is_v4()) {
      if (const auto s = open_socket(Family::V4)) {
        Aux a;
        a.kind = AuxKind::kPcp;
        a.sock = *s;
        a.to = {pmp_ep};
        const auto req = pcp_announce_request(*me);
        a.req.assign(req.begin(), req.end());
        start_aux(std::move(a));
      }
    }
    if (const auto s = open_socket(Family::V4)) {
      Aux a;
      a.kind = AuxKind::kUpnp;
      a.sock = *s;
      a.to = {Endpoint{gw, kSsdpPort}, Endpoint{ssdp_multicast_address(), kSsdpPort}};
      const auto text = as_bytes(ssdp_igd_search());
      a.req.assign(text.begin(), text.end());
      start_aux(std::move(a));
    }
  }

  void start_aux(Aux a) {
    aux_.push_back(std::move(a));
    ++started_;
    send_aux(aux_.back(), net_.now());
  }

  void send_aux(Aux& a, TimePoint now) {
    if (a.retx.done) return;
    bool ok = false;
    for (const Endpoint& to : a.to) {
      if (net_.send(a.sock, to, Bytes(a.req.data(), a.req.size()))) {
        ok = true;
        ++report_.datagrams_sent;
      }
    }
    if (a.retx.sends == 0) {
      a.retx.first = now;
      a.retx.deadline = now + opts_.schedule.deadline();
      a.sent_any = ok;
      if (!ok) return finish_aux(a, false);  // could not even send: the result stays unknown/untested
    }
    ++a.retx.sends;
    if (a.retx.sends < opts_.schedule.max_sends) a.retx.next = a.retx.first + opts_.schedule.send_at(a.retx.sends);
  }

  // answered: the awaited packet arrived (with `answer` for port mapping); false on timeout.
  void finish_aux(Aux& a, bool answered, PortMapAnswer answer = PortMapAnswer::kNotAnAnswer) {
    if (a.retx.done) return;
    a.retx.done = true;
    ++finished_;
    nat::PortMappingProbe& pm = report_.observations.port_mapping;
    nat::Availability avail = nat::Availability::kUnknown;
    if (a.sent_any) {
      avail = answered && answer == PortMapAnswer::kAvailable ? nat::Availability::kAvailable
                                                               : nat::Availability::kUnavailable;
    }
    switch (a.kind) {
      case AuxKind::kHairpin:
        if (a.sent_any) fobs(a.family).hairpin = answered ? nat::Hairpin::kYes : nat::Hairpin::kNo;
        break;
      case AuxKind::kNatPmp:
        pm.nat_pmp = avail;
        break;
      case AuxKind::kPcp:
        pm.pcp = avail;
        break;
      case AuxKind::kUpnp:
        pm.upnp_igd = avail;
        break;
    }
    progress();
  }

  // ---- the loop --------------------------------------------------------------------------

  bool pending() const {
    return std::any_of(tests_.begin(), tests_.end(), [](const Test& t) { return !t.done; }) ||
           std::any_of(aux_.begin(), aux_.end(), [](const Aux& a) { return !a.retx.done; });
  }

  TimePoint next_event() const {
    TimePoint next = TimePoint::max();
    auto consider = [&](const Retx& r) {
      if (r.done) return;
      next = std::min(next, r.deadline);
      if (r.sends < opts_.schedule.max_sends) next = std::min(next, r.next);
    };
    for (const Txn& x : txns_) consider(x.retx);
    for (const Aux& a : aux_) consider(a.retx);
    for (const Test& t : tests_)
      if (!t.done && t.grace_until) next = std::min(next, *t.grace_until);
    return next;
  }

  void service_timers(TimePoint now) {
    // Index loops: callbacks may append tests and transactions (deques keep references valid).
    for (std::size_t i = 0; i < txns_.size(); ++i) {
      Txn& x = txns_[i];
      if (x.retx.done) continue;
      if (now >= x.retx.deadline) {
        x.retx.done = true;
        x.rec.outcome = nat::Outcome::kTimeout;
        resolve(x.test, now);
      } else if (x.retx.sends < opts_.schedule.max_sends && now >= x.retx.next) {
        send_txn(x, now);
      }
    }
    for (std::size_t i = 0; i < tests_.size(); ++i) {
      if (!tests_[i].done && tests_[i].grace_until && now >= *tests_[i].grace_until) resolve(i, now);
    }
    for (std::size_t i = 0; i < aux_.size(); ++i) {
      Aux& a = aux_[i];
      if (a.retx.done) continue;
      if (now >= a.retx.deadline) {
        finish_aux(a, false);
      } else if (a.retx.sends < opts_.schedule.max_sends && now >= a.retx.next) {
        send_aux(a, now);
      }
    }
  }

  void expire_all(TimePoint now) {
    for (std::size_t i = 0; i < txns_.size(); ++i) {
      Txn& x = txns_[i];
      if (x.retx.done) continue;
      x.retx.done = true;
      x.rec.outcome = nat::Outcome::kTimeout;
    }
    // Each test now resolves from what it has; no new test is started past the limit.
    for (Test& t : tests_) t.then = nullptr;
    for (std::size_t i = 0; i < tests_.size(); ++i) {
      if (tests_[i].done) continue;
      tests_[i].grace_until = now;
      resolve(i, now);
    }
    for (Aux& a : aux_) finish_aux(a, false);
  }

  void dispatch(const Received& r, Bytes data) {
    const TimePoint now = net_.now();
    if (r.truncated) {
      ++report_.ignored.not_stun;
      return;
    }
    if (auto resp = stun::parse_binding_response(data)) {
      const auto it = by_txid_.find(resp->txid);
      if (it == by_txid_.end()) {
        ++report_.ignored.wrong_txid;
        return;
      }
      Txn& x = txns_[it->second];
      Test& t = tests_[x.test];
      if (t.sock != r.socket || std::find(t.accept.begin(), t.accept.end(), r.from) == t.accept.end()) {
        ++report_.ignored.unexpected_source;
        return;
      }
      if (x.retx.done || t.done) {
        // A repeated answer to a retransmission; the late answer of the form that lost is expected.
        if (x.answered) ++report_.ignored.duplicate;
        return;
      }
      const auto rtt = duration_cast<microseconds>(now - x.retx.first);
      if (!nat::record_response(x.rec, x.txid, data, r.from, rtt)) {
        ++report_.ignored.not_stun;
        return;
      }
      x.retx.done = true;
      x.answered = true;
      resolve(x.test, now);
      return;
    }
    for (Aux& a : aux_) {
      if (a.kind == AuxKind::kHairpin) {
        if (a.retx.done || a.watch != r.socket) continue;
        auto msg = stun::Message::parse(data);
        if (msg && msg->type() == stun::MessageType::kBindingRequest && msg->txid() == a.txid) {
          finish_aux(a, true);
          return;
        }
        continue;
      }
      if (a.sock != r.socket) continue;
      if (a.retx.done) {
        ++report_.ignored.port_mapping_other;
        return;
      }
      PortMapAnswer ans = PortMapAnswer::kNotAnAnswer;
      const IpAddr& gw = a.to.front().addr;
      switch (a.kind) {
        case AuxKind::kNatPmp:
          if (r.from == a.to.front()) ans = classify_nat_pmp_reply(data);
          break;
        case AuxKind::kPcp:
          if (r.from == a.to.front()) ans = classify_pcp_reply(data);
          break;
        case AuxKind::kUpnp:
          if (r.from.addr == gw && ssdp_reply_is_igd(data)) ans = PortMapAnswer::kAvailable;
          break;
        case AuxKind::kHairpin:
          break;
      }
      if (ans == PortMapAnswer::kNotAnAnswer) {
        ++report_.ignored.port_mapping_other;
      } else {
        finish_aux(a, true, ans);
      }
      return;
    }
    ++report_.ignored.not_stun;
  }

  Transport& net_;
  const ProbeOptions& opts_;
  ProbeReport report_;
  TimePoint start_{};
  TimePoint hard_deadline_{};
  std::deque<Test> tests_;
  std::deque<Txn> txns_;
  std::deque<Aux> aux_;
  std::map<stun::TxId, std::size_t> by_txid_;
  std::set<stun::TxId> hairpin_txids_;
  std::vector<SocketId> sockets_;
  std::array<bool, 2> hairpin_started_{};
  std::size_t filter_servers_ = 0;
  std::size_t started_ = 0;
  std::size_t finished_ = 0;
};

}  // namespace

ProbeReport run_probe(Transport& net, const std::vector<ServerTarget>& servers, const ProbeOptions& opts) {
  return Prober(net, opts).run(servers);
}

}  // namespace derpd::probe
