// /bootstrap-dns: the document's bytes against Go's encoder, ?q= handling as derper's handler,
// refresh rounds with a scripted resolver (failures keep old answers, names with no address are
// not served), the resolver thread, lock-free readers under concurrent refreshes, and one real
// getaddrinfo of "localhost".
#include "relay/daemon/bootstrap_dns.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace derpd::daemon {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;

IpAddr ip(std::string_view text) {
  auto a = IpAddr::parse(text);
  EXPECT_TRUE(a.has_value()) << text;
  return a.value_or(IpAddr{});
}

std::vector<IpAddr> ips(std::initializer_list<std::string_view> texts) {
  std::vector<IpAddr> v;
  for (auto t : texts) v.push_back(ip(t));
  return v;
}

// A resolver whose answers the test sets per name; it counts calls.
class ScriptedResolver {
 public:
  void set(const std::string& name, DnsLookup r) {
    std::lock_guard lock(mu_);
    answers_[name] = std::move(r);
  }
  void ok(const std::string& name, std::initializer_list<std::string_view> addrs) {
    DnsLookup r;
    r.status = DnsLookup::Status::kOk;
    r.addrs = ips(addrs);
    set(name, std::move(r));
  }
  void fail(const std::string& name, DnsLookup::Status s) {
    DnsLookup r;
    r.status = s;
    r.error = "scripted";
    set(name, std::move(r));
  }
  void set_delay(const std::string& name, std::chrono::milliseconds d) {
    std::lock_guard lock(mu_);
    delays_[name] = d;
  }
  int calls(const std::string& name) const {
    std::lock_guard lock(mu_);
    auto it = calls_.find(name);
    return it == calls_.end() ? 0 : it->second;
  }
  DnsResolver fn() {
    return [this](const std::string& name) {
      std::chrono::milliseconds delay{0};
      {
        std::lock_guard lock(mu_);
        if (auto it = delays_.find(name); it != delays_.end()) delay = it->second;
      }
      std::this_thread::sleep_for(delay);
      std::lock_guard lock(mu_);
      ++calls_[name];
      auto it = answers_.find(name);
      if (it == answers_.end()) {
        DnsLookup r;
        r.status = DnsLookup::Status::kNoAddress;
        return r;
      }
      return it->second;
    };
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, DnsLookup> answers_;
  std::map<std::string, int> calls_;
  std::map<std::string, std::chrono::milliseconds> delays_;
};

BootstrapDnsOptions options(std::vector<std::string> published, std::vector<std::string> unpublished = {}) {
  BootstrapDnsOptions o;
  o.published = std::move(published);
  o.unpublished = std::move(unpublished);
  o.shuffle = false;
  return o;
}

// --- the document ------------------------------------------------------------------------------

// Expected bytes: what Go's json.MarshalIndent(map[string][]net.IP{...}, "", "\t") writes for
// these entries (derper's refreshBootstrapDNS): keys sorted, tab indentation, ": " after keys,
// net.IP.String() values (IPv4-mapped as dotted quad, IPv4-compatible in hex).
TEST(BootstrapDnsJson, MatchesGosMarshalIndentByteForByte) {
  DnsAnswers m;
  m["login.example.com"] = ips({"192.0.2.10", "2001:db8::1"});
  m["controlplane.example.com"] = ips({"::ffff:198.51.100.7"});
  m["a.example"] = ips({"2001:db8:0:0:1:0:0:1", "::1.2.3.4"});
  EXPECT_EQ(bootstrap_dns_json(m),
            "{\n\t\"a.example\": [\n\t\t\"2001:db8::1:0:0:1\",\n\t\t\"::102:304\"\n\t],\n"
            "\t\"controlplane.example.com\": [\n\t\t\"198.51.100.7\"\n\t],\n"
            "\t\"login.example.com\": [\n\t\t\"192.0.2.10\",\n\t\t\"2001:db8::1\"\n\t]\n}");
}

TEST(BootstrapDnsJson, OneNameAndNoName) {
  DnsAnswers one;
  one["derp.example"] = ips({"203.0.113.5"});
  EXPECT_EQ(bootstrap_dns_json(one), "{\n\t\"derp.example\": [\n\t\t\"203.0.113.5\"\n\t]\n}");
  EXPECT_EQ(bootstrap_dns_json({}), "{}");
}

TEST(BootstrapDnsJson, KeysSortBytewiseAsGoDoes) {
  // Go sorts map keys with strings.Compare: uppercase before lowercase, '-' before '.'.
  DnsAnswers m;
  m["b.example"] = ips({"192.0.2.2"});
  m["B.example"] = ips({"192.0.2.1"});
  m["a-b.example"] = ips({"192.0.2.3"});
  m["a.example"] = ips({"192.0.2.4"});
  const std::string j = bootstrap_dns_json(m);
  const auto pos = [&](const char* k) { return j.find(std::string("\"") + k + "\""); };
  EXPECT_LT(pos("B.example"), pos("a-b.example"));
  EXPECT_LT(pos("a-b.example"), pos("a.example"));
  EXPECT_LT(pos("a.example"), pos("b.example"));
}

TEST(BootstrapDnsJson, IpTextIsGos) {
  EXPECT_EQ(go_ip_string(ip("192.0.2.1")), "192.0.2.1");
  EXPECT_EQ(go_ip_string(ip("::ffff:192.0.2.1")), "192.0.2.1");
  EXPECT_EQ(go_ip_string(ip("::1")), "::1");
  EXPECT_EQ(go_ip_string(ip("::")), "::");
  EXPECT_EQ(go_ip_string(ip("::1.2.3.4")), "::102:304");
  EXPECT_EQ(go_ip_string(ip("::1.2.0.0")), "::102:0");
  EXPECT_EQ(go_ip_string(ip("2001:0db8:0000:0000:0000:0000:0000:0001")), "2001:db8::1");
  EXPECT_EQ(go_ip_string(ip("fe80::1:2")), "fe80::1:2");
}

// --- ?q= ---------------------------------------------------------------------------------------

struct QueryCase {
  const char* raw;
  const char* want;  // Go: url.ParseQuery(raw) then .Get("q")
};

class QueryValue : public ::testing::TestWithParam<QueryCase> {};

TEST_P(QueryValue, AsGosUrlValuesGet) { EXPECT_EQ(query_value(GetParam().raw, "q"), GetParam().want); }

INSTANTIATE_TEST_SUITE_P(BootstrapDns, QueryValue,
                         ::testing::Values(QueryCase{"q=a.example", "a.example"},
                                           QueryCase{"q=a%2Eexample&q=b", "a.example"},  // first value
                                           QueryCase{"x=1&q=", ""},
                                           QueryCase{"q=a+b", "a b"},
                                           QueryCase{"q=%zz", ""},        // bad escape: pair skipped
                                           QueryCase{"q=%zz&q=b", "b"},   // ... so the next one counts
                                           QueryCase{"q=%4", ""},         // truncated escape
                                           QueryCase{"q=a;b", ""},        // semicolons: pair skipped
                                           QueryCase{"Q=x&q=y", "y"},     // keys are case-sensitive
                                           QueryCase{"q", ""},
                                           QueryCase{"%71=a", "a"},       // keys are unescaped too
                                           QueryCase{"&&q=c&", "c"},
                                           QueryCase{"", ""}));

// --- answers -----------------------------------------------------------------------------------

TEST(BootstrapDnsAnswer, UnpublishedNamesAnswerOnlyTheirOwnQuery) {
  DnsAnswers pub, unpub;
  pub["derp.example"] = ips({"192.0.2.1"});
  unpub["hidden.example"] = ips({"192.0.2.9", "2001:db8::9"});
  auto s = make_snapshot(pub, unpub, 7);
  const std::string published = "{\n\t\"derp.example\": [\n\t\t\"192.0.2.1\"\n\t]\n}";
  const std::string hidden = "{\n\t\"hidden.example\": [\n\t\t\"192.0.2.9\",\n\t\t\"2001:db8::9\"\n\t]\n}";

  BootstrapQuery k{};
  EXPECT_EQ(bootstrap_answer(*s, "", &k), published);
  EXPECT_EQ(k, BootstrapQuery::kNone);
  EXPECT_EQ(bootstrap_answer(*s, "q=hidden.example", &k), hidden);
  EXPECT_EQ(k, BootstrapQuery::kUnpublishedHit);
  EXPECT_EQ(bootstrap_answer(*s, "q=derp.example", &k), published);
  EXPECT_EQ(k, BootstrapQuery::kPublishedHit);
  EXPECT_EQ(bootstrap_answer(*s, "q=other.example", &k), published);
  EXPECT_EQ(k, BootstrapQuery::kMiss);
  EXPECT_EQ(bootstrap_answer(*s, "q=HIDDEN.example", &k), published);  // exact match, as derper
  EXPECT_EQ(k, BootstrapQuery::kMiss);
  EXPECT_EQ(bootstrap_answer(*s, "q=", &k), published);
  EXPECT_EQ(k, BootstrapQuery::kNone);
  EXPECT_EQ(s->published_json.find("hidden"), std::string::npos);
}

// --- refresh rounds ----------------------------------------------------------------------------

TEST(BootstrapDns, RejectsBadConfigurationAtStartUp) {
  ScriptedResolver r;
  EXPECT_THROW(BootstrapDns(options({"bad name"}), r.fn()), std::invalid_argument);
  EXPECT_THROW(BootstrapDns(options({"a\"b"}), r.fn()), std::invalid_argument);
  EXPECT_THROW(BootstrapDns(options({""}), r.fn()), std::invalid_argument);
  EXPECT_THROW(BootstrapDns(options({std::string(254, 'a')}), r.fn()), std::invalid_argument);
  try {
    BootstrapDns d(options({}, {"login.example/rollout.example"}), r.fn());
    ADD_FAILURE() << "a rollout entry was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("rollout"));
    EXPECT_THAT(e.what(), HasSubstr("login.example/rollout.example"));
  }
  BootstrapDnsOptions o = options({"a.example", "b.example"}, {"c.example", "a.example"});
  o.max_names = 2;
  EXPECT_THROW(BootstrapDns(o, r.fn()), std::invalid_argument);
  o.max_names = 3;  // a.example counts once
  EXPECT_NO_THROW(BootstrapDns(o, r.fn()));
}

TEST(BootstrapDns, BeforeTheFirstRoundTheDocumentIsEmpty) {
  ScriptedResolver r;
  BootstrapDns d(options({"derp.example"}), r.fn());
  BootstrapDns::Reader reader(d);
  EXPECT_EQ(reader.answer(""), "{}");
  EXPECT_EQ(reader.answer("q=derp.example"), "{}");
  EXPECT_EQ(r.calls("derp.example"), 0);
}

TEST(BootstrapDns, RefreshPublishesResolvedNamesOnly) {
  ScriptedResolver r;
  r.ok("derp.example", {"192.0.2.1", "2001:db8::1"});
  r.ok("hidden.example", {"192.0.2.9"});
  r.fail("gone.example", DnsLookup::Status::kNoAddress);
  BootstrapDns d(options({"derp.example", "gone.example"}, {"hidden.example"}), r.fn());
  d.refresh();
  BootstrapDns::Reader reader(d);
  EXPECT_EQ(reader.answer(""), "{\n\t\"derp.example\": [\n\t\t\"192.0.2.1\",\n\t\t\"2001:db8::1\"\n\t]\n}");
  EXPECT_EQ(reader.answer("q=hidden.example"), "{\n\t\"hidden.example\": [\n\t\t\"192.0.2.9\"\n\t]\n}");
  // A name with no address is not served at all, not even as an empty list.
  EXPECT_EQ(reader.answer("").find("gone.example"), std::string::npos);
  EXPECT_EQ(reader.answer("q=gone.example"), reader.answer(""));

  metrics::BootstrapDnsTotals t;
  d.accumulate(t);
  EXPECT_EQ(t.requests, 5u);
  EXPECT_EQ(t.unpublished_hits, 1u);
  EXPECT_EQ(t.misses, 1u);
  EXPECT_EQ(t.published_hits, 0u);
  EXPECT_EQ(t.resolved, 2u);
  EXPECT_EQ(t.no_address, 1u);
  EXPECT_EQ(t.failed, 0u);
  EXPECT_EQ(t.published_names, 1);
  EXPECT_EQ(t.unpublished_names, 1);
}

TEST(BootstrapDns, AFailedLookupKeepsThePreviousAnswerAndNoAddressRemovesIt) {
  ScriptedResolver r;
  r.ok("derp.example", {"192.0.2.1"});
  r.ok("other.example", {"192.0.2.2"});
  r.ok("hidden.example", {"192.0.2.9"});
  BootstrapDns d(options({"derp.example", "other.example"}, {"hidden.example"}), r.fn());
  d.refresh();
  BootstrapDns::Reader reader(d);
  const std::string before(reader.answer(""));
  const std::string hidden_before(reader.answer("q=hidden.example"));

  // The resolver breaks: every answer stays as it was.
  r.fail("derp.example", DnsLookup::Status::kFailed);
  r.fail("other.example", DnsLookup::Status::kFailed);
  r.fail("hidden.example", DnsLookup::Status::kFailed);
  d.refresh();
  EXPECT_EQ(reader.answer(""), before);
  EXPECT_EQ(reader.answer("q=hidden.example"), hidden_before);

  // One name is now known not to exist: it goes; a new address for another replaces the old one.
  r.fail("other.example", DnsLookup::Status::kNoAddress);
  r.ok("derp.example", {"192.0.2.100"});
  d.refresh();
  EXPECT_EQ(reader.answer(""), "{\n\t\"derp.example\": [\n\t\t\"192.0.2.100\"\n\t]\n}");
  EXPECT_EQ(reader.answer("q=hidden.example"), hidden_before);
  EXPECT_EQ(d.rounds(), 3u);

  // A name that never resolved is not served while its lookups fail.
  ScriptedResolver r2;
  r2.fail("new.example", DnsLookup::Status::kFailed);
  BootstrapDns d2(options({"new.example"}), r2.fn());
  d2.refresh();
  BootstrapDns::Reader reader2(d2);
  EXPECT_EQ(reader2.answer(""), "{}");
  metrics::BootstrapDnsTotals t;
  d2.accumulate(t);
  EXPECT_EQ(t.failed, 1u);
  EXPECT_EQ(t.published_names, 0);
}

TEST(BootstrapDns, NamesThatResolveToNothingAreNotServed) {
  ScriptedResolver r;
  DnsLookup empty;
  empty.status = DnsLookup::Status::kOk;  // a resolver claiming success with no address
  r.set("empty.example", empty);
  r.fail("nx.example", DnsLookup::Status::kNoAddress);
  BootstrapDns d(options({"empty.example", "nx.example"}, {"nx.example"}), r.fn());
  d.refresh();
  BootstrapDns::Reader reader(d);
  EXPECT_EQ(reader.answer(""), "{}");
  EXPECT_EQ(reader.answer("q=nx.example"), "{}");
  EXPECT_EQ(r.calls("nx.example"), 1) << "a name in both lists is looked up once per round";
  metrics::BootstrapDnsTotals t;
  d.accumulate(t);
  EXPECT_EQ(t.no_address, 2u);
  EXPECT_EQ(t.resolved, 0u);
}

TEST(BootstrapDns, AddressesAreDeduplicatedCappedWithBothFamiliesAndShuffled) {
  ScriptedResolver r;
  DnsLookup many;
  many.status = DnsLookup::Status::kOk;
  for (int i = 0; i < 100; ++i) many.addrs.push_back(ip("198.51.100." + std::to_string(i)));
  many.addrs.push_back(ip("198.51.100.0"));  // a duplicate
  for (int i = 1; i <= 3; ++i) many.addrs.push_back(ip("2001:db8::" + std::to_string(i)));
  r.set("big.example", many);
  BootstrapDnsOptions o = options({"big.example"});
  o.max_addrs_per_name = 8;
  o.shuffle = true;
  BootstrapDns d(o, r.fn());
  d.refresh();
  const auto s = d.snapshot();
  ASSERT_EQ(s->published.count("big.example"), 1u);
  const std::vector<IpAddr>& got = s->published.at("big.example");
  EXPECT_THAT(got, UnorderedElementsAreArray(ips({"198.51.100.0", "198.51.100.1", "198.51.100.2", "198.51.100.3",
                                                  "198.51.100.4", "2001:db8::1", "2001:db8::2", "2001:db8::3"})));
  // Shuffled at every refresh: over a bounded number of rounds some order differs.
  bool changed = false;
  for (int i = 0; i < 50 && !changed; ++i) {
    d.refresh();
    changed = d.snapshot()->published.at("big.example") != got;
  }
  EXPECT_TRUE(changed);
}

TEST(BootstrapDns, ReaderViewOutlivesANewSnapshotUntilItsNextAnswer) {
  ScriptedResolver r;
  r.ok("derp.example", {"192.0.2.1"});
  BootstrapDns d(options({"derp.example"}), r.fn());
  d.refresh();
  BootstrapDns::Reader reader(d);
  const std::string_view v = reader.answer("");
  const std::string copy(v);
  r.ok("derp.example", {"192.0.2.2"});
  d.refresh();  // the owner no longer holds the old snapshot; the reader does
  EXPECT_EQ(v, copy);
  EXPECT_NE(reader.answer(""), copy);
  EXPECT_NE(reader.answer("").find("192.0.2.2"), std::string::npos);
}

TEST(BootstrapDns, ReadersOnOtherThreadsAlwaysSeeAWholeDocument) {
  ScriptedResolver r;
  r.ok("derp.example", {"192.0.2.1"});
  BootstrapDns d(options({"derp.example"}), r.fn());
  d.refresh();
  const std::set<std::string> valid = {"{\n\t\"derp.example\": [\n\t\t\"192.0.2.1\"\n\t]\n}",
                                       "{\n\t\"derp.example\": [\n\t\t\"192.0.2.2\"\n\t]\n}"};
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::atomic<std::uint64_t> answers{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&] {
      BootstrapDns::Reader reader(d);
      for (int i = 0; i < 200000 && !stop.load(std::memory_order_relaxed); ++i) {
        if (!valid.contains(std::string(reader.answer("")))) bad.fetch_add(1);
        answers.fetch_add(1, std::memory_order_relaxed);
      }
    });
  for (int i = 0; i < 200; ++i) {
    r.ok("derp.example", {i % 2 ? "192.0.2.1" : "192.0.2.2"});
    d.refresh();
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  metrics::BootstrapDnsTotals tot;
  d.accumulate(tot);
  EXPECT_EQ(tot.requests, answers.load());
}

// --- the thread --------------------------------------------------------------------------------

TEST(BootstrapDns, ThreadResolvesAtStartThenEveryInterval) {
  ScriptedResolver r;
  r.ok("derp.example", {"192.0.2.1"});
  BootstrapDnsOptions o = options({"derp.example"});
  o.refresh_interval = 20ms;
  BootstrapDns d(o, r.fn());
  d.start();
  ASSERT_TRUE(d.wait_for_rounds(1, 5s));
  EXPECT_NE(d.snapshot()->published_json.find("192.0.2.1"), std::string::npos);
  ASSERT_TRUE(d.wait_for_rounds(3, 5s));
  d.stop();
  const std::uint64_t after = d.rounds();
  EXPECT_GE(r.calls("derp.example"), 3);
  std::this_thread::sleep_for(60ms);
  EXPECT_EQ(d.rounds(), after) << "no rounds after stop()";
}

TEST(BootstrapDns, StopDoesNotWaitForTheInterval) {
  ScriptedResolver r;
  r.ok("derp.example", {"192.0.2.1"});
  BootstrapDns d(options({"derp.example"}), r.fn());  // 10 minutes between rounds
  d.start();
  ASSERT_TRUE(d.wait_for_rounds(1, 5s));
  const auto t0 = std::chrono::steady_clock::now();
  d.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  d.stop();  // idempotent
}

TEST(BootstrapDns, NoNamesStartsNoThreadAndServesAnEmptyDocument) {
  ScriptedResolver r;
  BootstrapDns d(options({}), r.fn());
  EXPECT_TRUE(d.empty());
  d.start();
  EXPECT_FALSE(d.wait_for_rounds(1, 50ms));
  BootstrapDns::Reader reader(d);
  EXPECT_EQ(reader.answer("q=anything"), "{}");
}

TEST(BootstrapDns, RoundBudgetLeavesUnreachedNamesWithTheirPreviousAnswer) {
  ScriptedResolver r;
  r.ok("a.example", {"192.0.2.1"});
  r.ok("b.example", {"192.0.2.2"});
  BootstrapDnsOptions o = options({"a.example", "b.example"});
  o.round_budget = 50ms;
  BootstrapDns d(o, r.fn());
  d.refresh();
  EXPECT_EQ(r.calls("b.example"), 1);

  // The first lookup now takes longer than the round's budget: b is not looked up this round and
  // keeps what it had, though its record changed.
  r.ok("a.example", {"192.0.2.11"});
  r.set_delay("a.example", 100ms);
  r.ok("b.example", {"192.0.2.22"});
  d.refresh();
  EXPECT_EQ(r.calls("b.example"), 1);
  EXPECT_EQ(d.snapshot()->published_json,
            "{\n\t\"a.example\": [\n\t\t\"192.0.2.11\"\n\t],\n\t\"b.example\": [\n\t\t\"192.0.2.2\"\n\t]\n}");
  metrics::BootstrapDnsTotals t;
  d.accumulate(t);
  EXPECT_EQ(t.failed, 1u);
}

// --- the system resolver (loopback only) -------------------------------------------------------

TEST(BootstrapDns, SystemResolverFindsLocalhost) {
  const DnsLookup r = system_resolve("localhost");
  if (r.status != DnsLookup::Status::kOk) GTEST_SKIP() << "localhost does not resolve here: " << r.error;
  ASSERT_FALSE(r.addrs.empty());
  for (const IpAddr& a : r.addrs) EXPECT_TRUE(a.is_loopback()) << a.to_string();
  std::set<IpAddr> uniq(r.addrs.begin(), r.addrs.end());
  EXPECT_EQ(uniq.size(), r.addrs.size()) << "duplicates";
}

}  // namespace
}  // namespace derpd::daemon
