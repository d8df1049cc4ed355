#include "relay/daemon/bootstrap_dns.h"

#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <set>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace derpd::daemon {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Go's url.QueryUnescape: '+' is a space, %XX needs two hex digits. False on a bad escape.
bool query_unescape(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%') {
      if (i + 2 >= in.size()) return false;
      const int hi = hex_value(in[i + 1]);
      const int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return true;
}

// Takes up to `cap` addresses, alternating IPv4 and IPv6 so a cap never removes a whole family.
std::vector<IpAddr> interleave_capped(const std::vector<IpAddr>& in, std::size_t cap) {
  std::vector<IpAddr> v4, v6, out;
  for (const IpAddr& a : in) (a.is_v4() ? v4 : v6).push_back(a);
  std::size_t i4 = 0, i6 = 0;
  while (out.size() < cap && (i4 < v4.size() || i6 < v6.size())) {
    if (i4 < v4.size()) out.push_back(v4[i4++]);
    if (out.size() < cap && i6 < v6.size()) out.push_back(v6[i6++]);
  }
  return out;
}

}  // namespace

// --- pure helpers -------------------------------------------------------------------------------

std::string go_ip_string(const IpAddr& a) {
  if (!a.is_v4()) {
    const std::uint8_t* b = a.data();
    const bool first12_zero = std::all_of(b, b + 12, [](std::uint8_t x) { return x == 0; });
    const unsigned w6 = (unsigned{b[12]} << 8) | b[13];
    const unsigned w7 = (unsigned{b[14]} << 8) | b[15];
    // inet_ntop writes these as ::a.b.c.d; Go has no such form.
    if (first12_zero && w6 != 0) return fmt::format("::{:x}:{:x}", w6, w7);
  }
  return a.to_string();
}

std::string bootstrap_dns_json(const DnsAnswers& answers) {
  nlohmann::json doc = nlohmann::json::object();
  for (const auto& [name, addrs] : answers) {
    nlohmann::json list = nlohmann::json::array();
    for (const IpAddr& a : addrs) list.push_back(go_ip_string(a));
    doc[name] = std::move(list);
  }
  return doc.dump(1, '\t', false, nlohmann::json::error_handler_t::replace);
}

std::string query_value(std::string_view raw, std::string_view key) {
  std::string k, v;
  while (!raw.empty()) {
    const std::size_t amp = raw.find('&');
    std::string_view pair = raw.substr(0, amp);
    raw = amp == std::string_view::npos ? std::string_view{} : raw.substr(amp + 1);
    if (pair.empty() || pair.find(';') != std::string_view::npos) continue;
    const std::size_t eq = pair.find('=');
    const std::string_view rk = pair.substr(0, eq);
    const std::string_view rv = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    if (!query_unescape(rk, k) || k != key) continue;
    if (!query_unescape(rv, v)) continue;
    return v;
  }
  return {};
}

bool valid_dns_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == '_';
  });
}

DnsLookup system_resolve(const std::string& name) {
  DnsLookup r;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;      // A and AAAA, like Go's LookupIP("ip", ...)
  hints.ai_socktype = SOCK_STREAM;  // one entry per address, not one per socket type
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(name.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    switch (rc) {
      case EAI_NONAME:
#ifdef EAI_NODATA
      case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
      case EAI_ADDRFAMILY:
#endif
        r.status = DnsLookup::Status::kNoAddress;
        break;
      default:
        r.status = DnsLookup::Status::kFailed;
        break;
    }
    r.error = rc == EAI_SYSTEM ? std::string(std::strerror(errno)) : std::string(gai_strerror(rc));
    return r;
  }
  for (const addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    auto ep = Endpoint::from_sockaddr(ai->ai_addr, ai->ai_addrlen);
    if (!ep) continue;
    if (std::find(r.addrs.begin(), r.addrs.end(), ep->addr) == r.addrs.end()) r.addrs.push_back(ep->addr);
  }
  freeaddrinfo(res);
  if (r.addrs.empty()) {
    r.status = DnsLookup::Status::kNoAddress;
    r.error = "no IPv4 or IPv6 address";
  } else {
    r.status = DnsLookup::Status::kOk;
  }
  return r;
}

// --- the published state ------------------------------------------------------------------------

std::shared_ptr<const BootstrapDnsSnapshot> make_snapshot(DnsAnswers published, DnsAnswers unpublished,
                                                          std::uint64_t generation) {
  auto s = std::make_shared<BootstrapDnsSnapshot>();
  s->generation = generation;
  s->published = std::move(published);
  s->unpublished = std::move(unpublished);
  s->published_json = bootstrap_dns_json(s->published);
  for (const auto& [name, addrs] : s->unpublished) {
    if (addrs.empty()) continue;
    DnsAnswers one;
    one.emplace(name, addrs);
    s->unpublished_json.emplace(name, bootstrap_dns_json(one));
  }
  return s;
}

std::string_view bootstrap_answer(const BootstrapDnsSnapshot& s, std::string_view raw_query, BootstrapQuery* kind) {
  BootstrapQuery k = BootstrapQuery::kNone;
  std::string_view body = s.published_json;
  if (!raw_query.empty()) {
    const std::string q = query_value(raw_query, "q");
    if (!q.empty()) {
      if (auto it = s.unpublished_json.find(q); it != s.unpublished_json.end()) {
        k = BootstrapQuery::kUnpublishedHit;
        body = it->second;
      } else if (auto p = s.published.find(q); p != s.published.end() && !p->second.empty()) {
        k = BootstrapQuery::kPublishedHit;
      } else {
        k = BootstrapQuery::kMiss;
      }
    }
  }
  if (kind != nullptr) *kind = k;
  return body;
}

// --- the resolver thread ------------------------------------------------------------------------

BootstrapDns::BootstrapDns(BootstrapDnsOptions opts, DnsResolver resolver)
    : opts_(std::move(opts)), resolver_(std::move(resolver)) {
  if (!resolver_) throw std::invalid_argument("bootstrap DNS: no resolver");
  if (opts_.max_addrs_per_name == 0) throw std::invalid_argument("bootstrap DNS: max_addrs_per_name is 0");
  std::set<std::string> seen;
  auto take = [&](const std::vector<std::string>& list, const char* what) {
    for (const std::string& n : list) {
      if (n.find('/') != std::string::npos)
        throw std::invalid_argument(fmt::format("{}: \"{}\": rollout percentages (name/TXT-name) are not supported",
                                                what, n));
      if (!valid_dns_name(n))
        throw std::invalid_argument(fmt::format("{}: \"{}\" is not a host name", what, n));
      if (seen.insert(n).second) names_.push_back(n);
    }
  };
  take(opts_.published, "bootstrap-dns-names");
  take(opts_.unpublished, "unpublished-bootstrap-dns-names");
  if (names_.size() > opts_.max_names)
    throw std::invalid_argument(
        fmt::format("bootstrap DNS: {} names configured, at most {} are served", names_.size(), opts_.max_names));
  std::lock_guard lock(refresh_mu_);
  const std::uint64_t g = next_generation_++;
  publish(make_snapshot({}, {}, g));
}

BootstrapDns::~BootstrapDns() { stop(); }

void BootstrapDns::start() {
  if (empty() || thread_.joinable()) return;
  {
    std::lock_guard lock(mu_);
    stop_ = false;
  }
  stopping_.store(false, std::memory_order_relaxed);
  thread_ = std::thread([this] { main(); });
}

void BootstrapDns::request_stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  stopping_.store(true, std::memory_order_relaxed);
  cv_.notify_all();
}

void BootstrapDns::stop() {
  request_stop();
  if (thread_.joinable()) thread_.join();
}

void BootstrapDns::main() {
  pthread_setname_np(pthread_self(), "derpd-bootdns");
  std::unique_lock lock(mu_);
  while (!stop_) {
    lock.unlock();
    refresh();
    lock.lock();
    cv_.wait_for(lock, opts_.refresh_interval, [this] { return stop_; });
  }
}

void BootstrapDns::refresh() {
  std::lock_guard guard(refresh_mu_);
  const std::shared_ptr<const BootstrapDnsSnapshot> prev = snapshot();
  const std::set<std::string, std::less<>> published(opts_.published.begin(), opts_.published.end());
  const std::set<std::string, std::less<>> unpublished(opts_.unpublished.begin(), opts_.unpublished.end());
  DnsAnswers pub, unpub;
  std::mt19937_64 rng(std::random_device{}());
  const auto deadline = std::chrono::steady_clock::now() + opts_.round_budget;

  for (const std::string& name : names_) {
    // The previous answer, if any (a name may be in both lists: the same addresses).
    const std::vector<IpAddr>* old = nullptr;
    if (auto it = prev->published.find(name); it != prev->published.end()) old = &it->second;
    if (auto it = prev->unpublished.find(name); old == nullptr && it != prev->unpublished.end()) old = &it->second;

    std::vector<IpAddr> now;
    const bool reachable = !stopping_.load(std::memory_order_relaxed) && std::chrono::steady_clock::now() < deadline;
    DnsLookup r;
    if (reachable) {
      r = resolver_(name);
    } else {
      r.status = DnsLookup::Status::kFailed;
      r.error = "not looked up this round (stopping, or the round's time budget is spent)";
    }
    switch (r.status) {
      case DnsLookup::Status::kOk: {
        // Deduplicate in order (a resolver may repeat an address), then cap.
        std::vector<IpAddr> uniq;
        for (const IpAddr& a : r.addrs)
          if (std::find(uniq.begin(), uniq.end(), a) == uniq.end()) uniq.push_back(a);
        now = interleave_capped(uniq, opts_.max_addrs_per_name);
        if (opts_.shuffle) std::shuffle(now.begin(), now.end(), rng);
        (now.empty() ? no_address_ : resolved_).fetch_add(1, std::memory_order_relaxed);
        break;
      }
      case DnsLookup::Status::kNoAddress:
        no_address_.fetch_add(1, std::memory_order_relaxed);
        spdlog::info("bootstrap DNS: {} has no address ({}); not served", name, r.error);
        break;
      case DnsLookup::Status::kFailed:
        failed_.fetch_add(1, std::memory_order_relaxed);
        if (old != nullptr) now = *old;
        if (reachable)
          spdlog::warn("bootstrap DNS: lookup of {} failed ({}); {}", name, r.error,
                       old != nullptr ? "keeping the previous answer" : "not served yet");
        break;
    }
    if (now.empty()) continue;
    if (published.contains(name)) pub.emplace(name, now);
    if (unpublished.contains(name)) unpub.emplace(name, std::move(now));
  }

  const std::uint64_t g = next_generation_++;
  publish(make_snapshot(std::move(pub), std::move(unpub), g));
  {
    std::lock_guard lock(mu_);
    rounds_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
}

std::shared_ptr<const BootstrapDnsSnapshot> BootstrapDns::snapshot() const {
  std::lock_guard lock(snap_mu_);
  return current_;
}

void BootstrapDns::publish(std::shared_ptr<const BootstrapDnsSnapshot> s) {
  const std::uint64_t g = s->generation;
  std::shared_ptr<const BootstrapDnsSnapshot> old;
  {
    std::lock_guard lock(snap_mu_);
    old = std::exchange(current_, std::move(s));
  }
  generation_.store(g, std::memory_order_release);
  // `old` is freed here, outside the lock, unless a Reader still holds it.
}

bool BootstrapDns::wait_for_rounds(std::uint64_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return rounds_.load(std::memory_order_acquire) >= n; });
}

void BootstrapDns::count(BootstrapQuery q) const {
  requests_.fetch_add(1, std::memory_order_relaxed);
  switch (q) {
    case BootstrapQuery::kNone: break;
    case BootstrapQuery::kPublishedHit: published_hits_.fetch_add(1, std::memory_order_relaxed); break;
    case BootstrapQuery::kUnpublishedHit: unpublished_hits_.fetch_add(1, std::memory_order_relaxed); break;
    case BootstrapQuery::kMiss: misses_.fetch_add(1, std::memory_order_relaxed); break;
  }
}

void BootstrapDns::accumulate(metrics::BootstrapDnsTotals& t) const {
  t.requests += requests_.load(std::memory_order_relaxed);
  t.published_hits += published_hits_.load(std::memory_order_relaxed);
  t.unpublished_hits += unpublished_hits_.load(std::memory_order_relaxed);
  t.misses += misses_.load(std::memory_order_relaxed);
  t.resolved += resolved_.load(std::memory_order_relaxed);
  t.no_address += no_address_.load(std::memory_order_relaxed);
  t.failed += failed_.load(std::memory_order_relaxed);
  const auto s = snapshot();
  t.published_names += static_cast<std::int64_t>(s->published.size());
  t.unpublished_names += static_cast<std::int64_t>(s->unpublished.size());
}

std::string_view BootstrapDns::Reader::answer(std::string_view raw_query) {
  const std::uint64_t g = dns_->generation_.load(std::memory_order_acquire);
  if (snap_ == nullptr || g != seen_) {
    snap_ = dns_->snapshot();
    seen_ = snap_->generation;
  }
  BootstrapQuery kind = BootstrapQuery::kNone;
  const std::string_view body = bootstrap_answer(*snap_, raw_query, &kind);
  dns_->count(kind);
  return body;
}

}  // namespace derpd::daemon
