// derpcat check: two clients through the relay, packets both ways with echoes (round-trip times),
// the server's ping, PeerGone(not here) for a disco packet to an absent key, and PeerGone
// (disconnected) when a peer that sent us packets leaves. Passes only if every step does.
#include <openssl/rand.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tools/derpcat/commands.h"

namespace derpcat {
namespace {

namespace dc = derpd::derpclient;
namespace proto = derpd::protocol;

struct Step {
  std::string name;
  bool ok = false;
  Fields fields = Fields::object();
};

std::vector<std::byte> random_bytes(std::size_t n) {
  std::vector<std::byte> b(n);
  if (n > 0) RAND_bytes(reinterpret_cast<unsigned char*>(b.data()), static_cast<int>(n));
  return b;
}

// Receives until `verdict` has one for a message (empty: success, else what went wrong) or the
// deadline passes ("timeout"). Messages it has no verdict for (std::nullopt) are skipped.
template <typename Verdict>
std::string recv_until(dc::Client& c, dc::Deadline deadline, Verdict verdict) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - dc::Clock::now());
    if (left.count() <= 0) return "timeout";
    auto m = c.recv(left);
    if (!m) return m.error() == dc::Error::kTimeout ? std::string("timeout")
                                                    : fmt::format("{}: {}", dc::to_string(m.error()), c.error_detail());
    if (std::optional<std::string> v = verdict(*m)) return *std::move(v);
  }
}

// Waits for a packet from `src`; one from `src` with other bytes is a failure ("corrupt").
std::string expect_packet(dc::Client& c, const proto::NodePublic& src, const std::vector<std::byte>& want,
                          dc::Deadline deadline) {
  return recv_until(c, deadline, [&](const dc::Message& m) -> std::optional<std::string> {
    const auto* p = std::get_if<dc::RecvPacket>(&m);
    if (p == nullptr || p->src != src) return std::nullopt;
    return p->data == want ? std::string() : std::string("corrupt packet");
  });
}

// Waits for PeerGone(peer, reason).
std::string expect_peer_gone(dc::Client& c, const proto::NodePublic& peer, proto::PeerGoneReason reason,
                             dc::Deadline deadline) {
  return recv_until(c, deadline, [&](const dc::Message& m) -> std::optional<std::string> {
    const auto* g = std::get_if<dc::PeerGone>(&m);
    if (g == nullptr || g->peer != peer) return std::nullopt;
    if (g->reason == reason) return std::string();
    return fmt::format("peer gone with reason {}", reason_name(g->reason));
  });
}

// `count` round trips initiated by `a`: a -> b, b echoes -> a. Round-trip times in ms.
Step round_trips(const std::string& name, dc::Client& a, dc::Client& b, int count, std::size_t size,
                 std::chrono::milliseconds timeout) {
  Step s{name};
  std::vector<double> rtts;
  std::string problem;
  for (int i = 0; i < count && problem.empty(); ++i) {
    const auto payload = random_bytes(size);
    const auto deadline = dc::Clock::now() + timeout;
    const auto t0 = dc::Clock::now();
    if (auto st = a.send(b.public_key(), payload); !st) {
      problem = fmt::format("send: {}: {}", dc::to_string(st.error()), a.error_detail());
      break;
    }
    if (auto e = expect_packet(b, a.public_key(), payload, deadline); !e.empty()) {
      problem = fmt::format("packet {} not delivered: {}", i, e);
      break;
    }
    if (auto st = b.send(a.public_key(), payload); !st) {
      problem = fmt::format("echo send: {}: {}", dc::to_string(st.error()), b.error_detail());
      break;
    }
    if (auto e = expect_packet(a, b.public_key(), payload, deadline); !e.empty()) {
      problem = fmt::format("echo {} not delivered: {}", i, e);
      break;
    }
    rtts.push_back(to_ms(dc::Clock::now() - t0));
  }
  s.ok = problem.empty();
  s.fields["packets"] = fmt::format("{}/{}", rtts.size(), count);
  s.fields["bytes"] = size;
  if (!rtts.empty()) {
    double sum = 0;
    for (double r : rtts) sum += r;
    s.fields["rtt_min_ms"] = *std::min_element(rtts.begin(), rtts.end());
    s.fields["rtt_avg_ms"] = sum / static_cast<double>(rtts.size());
    s.fields["rtt_max_ms"] = *std::max_element(rtts.begin(), rtts.end());
  }
  if (!problem.empty()) s.fields["error"] = problem;
  return s;
}

Step ping_step(const std::string& name, dc::Client& c, std::chrono::milliseconds timeout) {
  Step s{name};
  auto rtt = c.ping(timeout);
  s.ok = rtt.ok();
  if (rtt) {
    s.fields["rtt_ms"] = to_ms(*rtt);
  } else {
    s.fields["error"] = fmt::format("{}: {}", dc::to_string(rtt.error()), c.error_detail());
  }
  return s;
}

}  // namespace

int cmd_check(const Global& g, const CheckArgs& a, const Output& o) {
  if (a.count < 1 || a.count > 10000 || a.size > proto::kMaxPacketSize || a.timeout_s <= 0) {
    o.error("check", fmt::format("--count must be 1..10000, --size at most {}, --timeout > 0", proto::kMaxPacketSize));
    return kExitUsage;
  }
  dc::Options opt_a;
  if (!make_options(g, opt_a, o)) return kExitUsage;
  dc::Options opt_b = opt_a;
  opt_a.private_key = opt_a.private_key.is_zero() ? proto::NodePrivate::generate() : opt_a.private_key;
  opt_b.private_key = proto::NodePrivate::generate();  // always a distinct identity
  if (!a.peer_url.empty()) opt_b.url = a.peer_url;
  const auto timeout = seconds_to_ms(a.timeout_s);

  std::vector<Step> steps;
  auto report = [&](const Step& s) {
    if (!o.json()) {
      Fields f{{"step", s.name}, {"ok", s.ok}};
      f.update(s.fields);
      o.event("check", f);
    }
  };
  auto finish = [&]() {
    const bool pass = !steps.empty() && std::all_of(steps.begin(), steps.end(), [](const Step& s) { return s.ok; });
    if (o.json()) {
      Fields arr = Fields::array();
      for (const auto& s : steps) {
        Fields f{{"name", s.name}, {"ok", s.ok}};
        f.update(s.fields);
        arr.push_back(f);
      }
      o.event("check_result", Fields{{"url", opt_a.url}, {"peer_url", opt_b.url}, {"pass", pass}, {"steps", arr}});
    } else {
      o.event(pass ? "PASS" : "FAIL", Fields{{"url", opt_a.url}, {"steps", steps.size()}});
    }
    return pass ? kExitOk : kExitFail;
  };
  auto add = [&](Step s) {
    report(s);
    steps.push_back(std::move(s));
    return steps.back().ok;
  };

  auto connect_step = [&](const std::string& name, const dc::Options& opt) -> std::optional<dc::Client> {
    std::string why;
    auto c = dc::Client::connect(opt, &why);
    Step s{name};
    s.ok = c.ok();
    if (c) {
      s.fields = connect_fields(*c);
    } else {
      s.fields["url"] = opt.url;
      s.fields["error"] = fmt::format("{}: {}", dc::to_string(c.error()), why);
    }
    add(std::move(s));
    if (!c) return std::nullopt;
    return std::move(*c);
  };

  auto ca = connect_step("connect_a", opt_a);
  if (!ca) return finish();
  auto cb = connect_step("connect_b", opt_b);
  if (!cb) return finish();

  if (!add(ping_step("ping_a", *ca, timeout))) return finish();
  if (!add(ping_step("ping_b", *cb, timeout))) return finish();
  if (!add(round_trips("a_to_b", *ca, *cb, a.count, a.size, timeout))) return finish();
  if (!add(round_trips("b_to_a", *cb, *ca, a.count, a.size, timeout))) return finish();

  // A disco-looking packet (magic "TS💬", >= 62 bytes) to a key nobody has: the server says
  // PeerGone(not here).
  {
    Step s{"unknown_peer"};
    const proto::NodePublic nobody = proto::NodePrivate::generate().public_key();
    auto disco = random_bytes(62 + 16);
    const unsigned char magic[] = {'T', 'S', 0xf0, 0x9f, 0x92, 0xac};
    for (std::size_t i = 0; i < sizeof magic; ++i) disco[i] = std::byte{magic[i]};
    if (auto st = ca->send(nobody, disco); !st) {
      s.fields["error"] = fmt::format("send: {}: {}", dc::to_string(st.error()), ca->error_detail());
    } else if (auto e = expect_peer_gone(*ca, nobody, proto::PeerGoneReason::kNotHere, dc::Clock::now() + timeout);
               !e.empty()) {
      s.fields["error"] = "no PeerGone(not_here): " + e;
    } else {
      s.ok = true;
    }
    if (!add(std::move(s))) return finish();
  }

  // b received packets from a: when a leaves, b hears PeerGone(a, disconnected).
  {
    Step s{"peer_gone"};
    const proto::NodePublic gone = ca->public_key();
    ca->close();
    if (auto e = expect_peer_gone(*cb, gone, proto::PeerGoneReason::kDisconnected, dc::Clock::now() + timeout);
        !e.empty()) {
      s.fields["error"] = "no PeerGone(disconnected): " + e;
    } else {
      s.ok = true;
    }
    add(std::move(s));
  }
  return finish();
}

}  // namespace derpcat
