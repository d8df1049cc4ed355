// BootstrapDns: derper's /bootstrap-dns, the DNS answers a Tailscale client asks its DERP servers
// for when its own resolver cannot reach the control plane.
//
// A background thread (not a worker) resolves the configured names with getaddrinfo (IPv4 and
// IPv6) at start-up and then every refresh interval (10 minutes, as derper), and publishes an
// immutable BootstrapDnsSnapshot (a shared_ptr swapped under a mutex, with an atomic generation
// number beside it). Workers answer from it without locks: a Reader per worker checks the
// generation with one atomic load per request and copies the shared_ptr (taking the mutex) only
// when a new snapshot was published, every few minutes at most.
//
// Answers, as derper's handleBootstrapDNS:
//   /bootstrap-dns             the published document: {"name":["ip",...],...} exactly as Go's
//                              json.MarshalIndent(map[string][]net.IP, "", "\t") writes it (names
//                              sorted bytewise, a tab per level, addresses as net.IP.String())
//   /bootstrap-dns?q=NAME      NAME an unpublished name with addresses: {"NAME":[...]} alone;
//                              anything else (published, unknown, empty): the published document
// The addresses of each name are shuffled at every refresh (derper: so clients do not all pick
// the IPv6 address first).
//
// Where derpd differs from derper, deliberately:
//   - a lookup that fails (timeout, SERVFAIL, no reachable resolver) keeps the name's previous
//     answer; derper drops the name until a later refresh succeeds. A lookup that says the name
//     does not exist or has no address removes it, as derper does.
//   - with nothing to publish the document is "{}" (derper writes an empty body, or "null"); Go
//     clients decode "{}" as an empty map, and an empty body as an error.
//   - names are checked at start-up (host-name characters, at most max_names); derper's rollout
//     form "name/txt-record" in the unpublished list is refused there (not supported).
//   - at most max_addrs_per_name addresses per name, the two families interleaved before the cap.
//   - a refresh round stops starting lookups after round_budget (derper: one minute for the
//     round); names it did not reach keep their previous answer.
//
// Thread-safety: the constructor, start(), stop() and refresh() belong to the owner (refresh()
// calls are serialized internally); snapshot(), accumulate() and each Reader (one per thread)
// may be used from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "relay/base/endpoint.h"
#include "relay/metrics/derp_metrics.h"

namespace derpd::daemon {

// name -> addresses; std::less<> so a string_view finds a name without a copy.
using DnsAnswers = std::map<std::string, std::vector<IpAddr>, std::less<>>;

// What one lookup of a name found.
struct DnsLookup {
  enum class Status : std::uint8_t {
    kOk,         // addresses (at least one)
    kNoAddress,  // the name does not exist, or has no IPv4/IPv6 address
    kFailed,     // the lookup itself failed (timeout, server failure, ...): try again later
  };
  Status status = Status::kFailed;
  std::vector<IpAddr> addrs;
  std::string error;  // for the log, when not kOk
};
using DnsResolver = std::function<DnsLookup(const std::string& name)>;

// getaddrinfo(name, AF_UNSPEC): both families, duplicates removed, in the resolver's order.
DnsLookup system_resolve(const std::string& name);

// --- pure helpers -------------------------------------------------------------------------------

// Go's net.IP.String(): inet_ntop's text, except an IPv4-compatible IPv6 address (::a.b.c.d, not
// :: or ::1), which Go writes in hex ("::102:304").
std::string go_ip_string(const IpAddr& a);

// json.MarshalIndent(map[string][]net.IP, "", "\t") for these answers; "{}" when empty. Names
// must be valid host names (valid_dns_name), which need no JSON escaping.
std::string bootstrap_dns_json(const DnsAnswers& answers);

// Go's url.Values.Get(key) on url.ParseQuery(raw_query): the first value of `key`, with '+' and
// %XX decoded; pairs holding ';' or a bad escape are skipped, as Go does. "" when absent.
std::string query_value(std::string_view raw_query, std::string_view key);

// 1..253 characters from [A-Za-z0-9.-_].
bool valid_dns_name(std::string_view name);

// --- the published state ------------------------------------------------------------------------

// Immutable once published.
struct BootstrapDnsSnapshot {
  std::uint64_t generation = 0;
  DnsAnswers published;    // names with addresses only
  DnsAnswers unpublished;
  std::string published_json;                                   // bootstrap_dns_json(published)
  std::map<std::string, std::string, std::less<>> unpublished_json;  // name -> {"name":[...]}
};

std::shared_ptr<const BootstrapDnsSnapshot> make_snapshot(DnsAnswers published, DnsAnswers unpublished,
                                                          std::uint64_t generation);

enum class BootstrapQuery : std::uint8_t {
  kNone,            // no ?q= (or an empty one)
  kPublishedHit,    // q names a published name: the published document
  kUnpublishedHit,  // q names an unpublished name with addresses: its own document
  kMiss,            // q names nothing with addresses: the published document
};

// The body answering a request with this raw query string ("" for none); a view into `s`.
std::string_view bootstrap_answer(const BootstrapDnsSnapshot& s, std::string_view raw_query,
                                  BootstrapQuery* kind = nullptr);

// --- the resolver thread ------------------------------------------------------------------------

struct BootstrapDnsOptions {
  std::vector<std::string> published;    // config: bootstrap-dns-names
  std::vector<std::string> unpublished;  // config: unpublished-bootstrap-dns-names
  std::chrono::milliseconds refresh_interval = std::chrono::minutes(10);
  std::chrono::milliseconds round_budget = std::chrono::minutes(1);
  std::size_t max_names = 64;            // distinct names over both lists
  std::size_t max_addrs_per_name = 32;
  bool shuffle = true;                   // shuffle each name's addresses when it is refreshed
};

class BootstrapDns {
 public:
  // Throws std::invalid_argument naming the bad entry (start-up only). Publishes an empty
  // snapshot at once: requests before the first round completes get "{}".
  explicit BootstrapDns(BootstrapDnsOptions opts, DnsResolver resolver = system_resolve);
  ~BootstrapDns();
  BootstrapDns(const BootstrapDns&) = delete;
  BootstrapDns& operator=(const BootstrapDns&) = delete;

  // No names configured: there is nothing to resolve (start() then starts no thread).
  bool empty() const { return names_.empty(); }

  // Starts the thread: a round at once, then one every refresh_interval.
  void start();
  // Asks the thread to stop (any thread); it stops between lookups, so at most one getaddrinfo
  // call (bounded by the system resolver's own timeouts) is waited for.
  void request_stop();
  // request_stop() and join. Idempotent.
  void stop();

  // One round now, on the calling thread; publishes a new snapshot.
  void refresh();

  std::shared_ptr<const BootstrapDnsSnapshot> snapshot() const;
  // Rounds completed so far.
  std::uint64_t rounds() const { return rounds_.load(std::memory_order_acquire); }
  // Blocks until rounds() >= n or `timeout` passes; true if reached.
  bool wait_for_rounds(std::uint64_t n, std::chrono::milliseconds timeout) const;

  // Adds this endpoint's counters into the metrics totals (relaxed loads; any thread).
  void accumulate(metrics::BootstrapDnsTotals& t) const;

  // One per worker thread. answer() is lock-free while no new snapshot was published.
  class Reader {
   public:
    explicit Reader(const BootstrapDns& dns) : dns_(&dns) {}
    // The /bootstrap-dns body for this raw query string; counts the request. Valid until the next
    // answer() on this Reader (which holds the snapshot it points into).
    std::string_view answer(std::string_view raw_query);

   private:
    const BootstrapDns* dns_;
    std::shared_ptr<const BootstrapDnsSnapshot> snap_;
    std::uint64_t seen_ = 0;
  };

 private:
  void main();
  void publish(std::shared_ptr<const BootstrapDnsSnapshot> s);
  void count(BootstrapQuery q) const;

  const BootstrapDnsOptions opts_;
  const DnsResolver resolver_;
  std::vector<std::string> names_;  // distinct names over both lists, immutable after construction

  // The published snapshot. A Reader takes snap_mu_ only after generation_ changed (once per
  // publication); the per-request path is one atomic load. (std::atomic<std::shared_ptr> is not
  // used: libstdc++ 12's implementation reads the pointer outside its lock bit.)
  mutable std::mutex snap_mu_;
  std::shared_ptr<const BootstrapDnsSnapshot> current_;  // guarded by snap_mu_
  std::atomic<std::uint64_t> generation_{0};  // current_->generation, stored after current_

  std::mutex refresh_mu_;  // serializes refresh()
  std::uint64_t next_generation_ = 1;  // guarded by refresh_mu_

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool stop_ = false;                  // guarded by mu_
  std::atomic<bool> stopping_{false};  // mirrors stop_ for the lookup loop
  std::atomic<std::uint64_t> rounds_{0};
  std::thread thread_;

  // Counters: requests come from any worker (rare: fetch_add), lookups from the resolver thread.
  mutable std::atomic<std::uint64_t> requests_{0}, published_hits_{0}, unpublished_hits_{0}, misses_{0};
  std::atomic<std::uint64_t> resolved_{0}, no_address_{0}, failed_{0};
};

}  // namespace derpd::daemon
