#include "relay/daemon/admission.h"

#include <curl/curl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace derpd::daemon {

namespace {

using Clock = std::chrono::steady_clock;

// A bounded single-producer / single-consumer queue of small trivially copyable records. The
// producer publishes with a release store of head_, the consumer frees space with a release
// store of tail_; each side caches the other's index and re-reads it only when it looks full or
// empty.
template <typename T>
class SpscQueue {
 public:
  explicit SpscQueue(std::size_t capacity)
      : cap_(std::bit_ceil(std::max<std::size_t>(capacity, 2))), mask_(cap_ - 1), slots_(new T[cap_]) {}

  // Producer.
  bool push(const T& v) {
    const std::uint64_t h = head_.load(std::memory_order_relaxed);
    if (h - prod_tail_cache_ >= cap_) {
      prod_tail_cache_ = tail_.load(std::memory_order_acquire);
      if (h - prod_tail_cache_ >= cap_) return false;
    }
    slots_[h & mask_] = v;
    head_.store(h + 1, std::memory_order_release);
    return true;
  }

  // Consumer: the oldest record without removing it, or null.
  const T* front() {
    const std::uint64_t t = tail_.load(std::memory_order_relaxed);
    if (t == cons_head_cache_) {
      cons_head_cache_ = head_.load(std::memory_order_acquire);
      if (t == cons_head_cache_) return nullptr;
    }
    return &slots_[t & mask_];
  }
  // Consumer: removes the record front() returned.
  void pop() { tail_.store(tail_.load(std::memory_order_relaxed) + 1, std::memory_order_release); }

 private:
  const std::size_t cap_;
  const std::size_t mask_;
  std::unique_ptr<T[]> slots_;
  alignas(64) std::atomic<std::uint64_t> head_{0};
  std::uint64_t prod_tail_cache_ = 0;
  alignas(64) std::atomic<std::uint64_t> tail_{0};
  std::uint64_t cons_head_cache_ = 0;
};

struct Request {
  std::uint64_t token = 0;
  Clock::time_point submitted{};
  Clock::time_point deadline{};
  protocol::NodePublic key;
  IpAddr source;
};

// SAX consumer giving Go's encoding/json verdict for decoding into struct{ Allow bool }.
class AdmitSax {
 public:
  using json = nlohmann::json;
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  bool null() { return value(Kind::kNull, false); }
  bool boolean(bool v) { return value(Kind::kBool, v); }
  bool number_integer(number_integer_t) { return value(Kind::kOther, false); }
  bool number_unsigned(number_unsigned_t) { return value(Kind::kOther, false); }
  bool number_float(number_float_t, const string_t&) { return value(Kind::kOther, false); }
  bool string(string_t&) { return value(Kind::kOther, false); }
  bool binary(binary_t&) { return value(Kind::kOther, false); }
  bool start_object(std::size_t) {
    value(Kind::kObject, false);
    ++depth_;
    return true;
  }
  bool key(string_t& k) {
    if (depth_ == 1) allow_key_ = iequals_allow(k);
    return true;
  }
  bool end_object() {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) {
    value(Kind::kArray, false);
    ++depth_;
    return true;
  }
  bool end_array() {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) { return false; }

  bool type_error() const { return type_error_; }
  bool allow() const { return allow_; }

 private:
  enum class Kind : std::uint8_t { kNull, kBool, kObject, kArray, kOther };

  static bool iequals_allow(std::string_view k) {
    static constexpr std::string_view kName = "allow";
    if (k.size() != kName.size()) return false;
    for (std::size_t i = 0; i < k.size(); ++i) {
      char c = k[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (c != kName[i]) return false;
    }
    return true;
  }

  bool value(Kind k, bool b) {
    if (depth_ == 0) {
      // Top level: an object is decoded, null leaves the struct alone, anything else is a type error.
      if (k != Kind::kObject && k != Kind::kNull) type_error_ = true;
    } else if (depth_ == 1 && allow_key_) {
      allow_key_ = false;
      if (k == Kind::kBool)
        allow_ = b;
      else if (k != Kind::kNull)  // null leaves a bool as it was
        type_error_ = true;
    }
    return true;
  }

  int depth_ = 0;
  bool allow_key_ = false;
  bool allow_ = false;
  bool type_error_ = false;
};

}  // namespace

std::string_view to_string(AdmissionReason r) {
  switch (r) {
    case AdmissionReason::kAllowed: return "allowed";
    case AdmissionReason::kDenied: return "denied";
    case AdmissionReason::kHttpStatus: return "http_status";
    case AdmissionReason::kBadResponse: return "bad_response";
    case AdmissionReason::kUnreachable: return "unreachable";
    case AdmissionReason::kTimeout: return "timeout";
    case AdmissionReason::kTooManyRedirects: return "too_many_redirects";
    case AdmissionReason::kOverloaded: return "overloaded";
    case AdmissionReason::kCount: break;
  }
  return "unknown";
}

AdmitBody parse_admit_body(std::string_view body) {
  // Go's decoder refuses a byte-order mark; nlohmann's lexer would skip it.
  if (body.size() >= 3 && body.substr(0, 3) == "\xEF\xBB\xBF") return AdmitBody::kMalformed;
  AdmitSax sax;
  // strict = false: only the first JSON value is read, whatever follows it is ignored (as
  // json.Decoder.Decode does).
  const bool ok = nlohmann::json::sax_parse(body.begin(), body.end(), &sax, nlohmann::json::input_format_t::json,
                                            /*strict=*/false);
  if (!ok || sax.type_error()) return AdmitBody::kMalformed;
  return sax.allow() ? AdmitBody::kAllow : AdmitBody::kDeny;
}

std::string go_addr_string(const IpAddr& a) {
  const std::uint8_t* b = a.data();
  if (a.is_v4()) return fmt::format("{}.{}.{}.{}", b[0], b[1], b[2], b[3]);
  std::uint16_t w[8];
  for (int i = 0; i < 8; ++i) w[i] = static_cast<std::uint16_t>(b[2 * i] << 8 | b[2 * i + 1]);
  // The first longest run of at least two zero groups becomes "::" (RFC 5952, as netip does).
  int zs = -1, ze = -1;
  for (int i = 0; i < 8; ++i) {
    int j = i;
    while (j < 8 && w[j] == 0) ++j;
    if (j - i >= 2 && j - i > ze - zs) {
      zs = i;
      ze = j;
    }
  }
  std::string out;
  for (int i = 0; i < 8; ++i) {
    if (i == zs) {
      out += "::";
      i = ze;
      if (i >= 8) break;
    } else if (i > 0) {
      out += ':';
    }
    fmt::format_to(std::back_inserter(out), "{:x}", w[i]);
  }
  return out;
}

std::string admission_request_body(const protocol::NodePublic& key, const IpAddr& source) {
  // Both values are hex digits, dots and colons: nothing to escape.
  return fmt::format(R"({{"NodePublic":"{}","Source":"{}"}})", key.to_string(), go_addr_string(source));
}

// --- lanes and the engine -------------------------------------------------------------------------

struct AdmissionClient::Lane {
  explicit Lane(std::size_t cap) : requests(cap), results(cap) {}
  ~Lane() {
    if (efd >= 0) ::close(efd);
  }
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;

  SpscQueue<Request> requests;         // worker -> admission thread (also the wait queue)
  SpscQueue<AdmissionResult> results;  // admission thread -> worker
  int efd = -1;                        // immutable after construction
  alignas(64) std::size_t outstanding = 0;  // owned by the worker thread
  alignas(64) bool wake_due = false;        // owned by the admission thread
};

struct AdmissionClient::Engine {
  struct Slot {
    CURL* easy = nullptr;
    std::size_t lane = 0;
    Request req;
    std::string body;  // the request JSON; CURLOPT_POSTFIELDS points into it while busy
    std::string resp;  // response body, at most max_body bytes
    std::size_t max_body = 0;
    bool busy = false;
    char err[CURL_ERROR_SIZE] = {};
  };

  CURLM* multi = nullptr;  // immutable after construction; curl_multi_wakeup from any thread
  curl_slist* headers = nullptr;
  std::vector<Slot> slots;
  std::vector<std::size_t> free_slots;
  std::size_t rr = 0;  // next lane to take a request from (round robin)

  static std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user);

  ~Engine() {
    for (Slot& s : slots) {
      if (s.easy == nullptr) continue;
      if (s.busy && multi != nullptr) curl_multi_remove_handle(multi, s.easy);
      curl_easy_cleanup(s.easy);
    }
    if (multi != nullptr) curl_multi_cleanup(multi);
    if (headers != nullptr) curl_slist_free_all(headers);
  }
};

std::size_t AdmissionClient::Engine::on_body(char* data, std::size_t size, std::size_t n, void* user) {
  auto* s = static_cast<Slot*>(user);
  const std::size_t len = size * n;
  const std::size_t room = s->max_body - std::min(s->max_body, s->resp.size());
  if (len <= room) {
    s->resp.append(data, len);
    return len;
  }
  // Keep the first max_body bytes (what derper's LimitReader lets its decoder see) and stop the
  // transfer: returning less than `len` aborts it.
  s->resp.append(data, room);
  return 0;
}

namespace {

void validate_url(const std::string& url) {
  CURLU* u = curl_url();
  if (u == nullptr) throw std::runtime_error("admission: curl_url failed");
  char* scheme = nullptr;
  char* host = nullptr;
  const bool parsed = curl_url_set(u, CURLUPART_URL, url.c_str(), 0) == CURLUE_OK &&
                      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
                      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK;
  const bool good = parsed && scheme != nullptr && host != nullptr && host[0] != '\0' &&
                    (std::strcmp(scheme, "http") == 0 || std::strcmp(scheme, "https") == 0);
  curl_free(scheme);
  curl_free(host);
  curl_url_cleanup(u);
  if (!good) throw std::invalid_argument(fmt::format("admission controller URL \"{}\" is not an http(s) URL", url));
}

}  // namespace

AdmissionClient::AdmissionClient(std::string url, bool fail_open, std::size_t workers)
    : AdmissionClient([&] {
        AdmissionOptions o;
        o.url = std::move(url);
        o.fail_open = fail_open;
        o.workers = workers;
        return o;
      }()) {}

AdmissionClient::AdmissionClient(AdmissionOptions opts) : opts_(std::move(opts)) {
  if (opts_.workers == 0 || opts_.max_in_flight == 0 || opts_.queue_per_worker == 0 || opts_.max_body == 0 ||
      opts_.timeout.count() <= 0)
    throw std::invalid_argument("admission: workers, max_in_flight, queue_per_worker, max_body and timeout must be > 0");
  static const bool curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  if (!curl_ok) throw std::runtime_error("admission: curl_global_init failed");
  validate_url(opts_.url);

  for (std::size_t w = 0; w < opts_.workers; ++w) {
    auto lane = std::make_unique<Lane>(opts_.queue_per_worker);
    lane->efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (lane->efd < 0) throw std::runtime_error(fmt::format("admission: eventfd: {}", std::strerror(errno)));
    lanes_.push_back(std::move(lane));
  }

  engine_ = std::make_unique<Engine>();
  Engine& e = *engine_;
  e.multi = curl_multi_init();
  if (e.multi == nullptr) throw std::runtime_error("admission: curl_multi_init failed");
  const long cap = static_cast<long>(opts_.max_in_flight);
  curl_multi_setopt(e.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, cap);
  curl_multi_setopt(e.multi, CURLMOPT_MAXCONNECTS, cap);
  e.headers = curl_slist_append(nullptr, "Content-Type: application/json");
  if (e.headers != nullptr) e.headers = curl_slist_append(e.headers, "Expect:");  // no 100-continue round trip
  if (e.headers == nullptr) throw std::runtime_error("admission: curl_slist_append failed");

  e.slots.resize(opts_.max_in_flight);
  for (std::size_t i = 0; i < e.slots.size(); ++i) {
    Engine::Slot& s = e.slots[i];
    s.max_body = opts_.max_body;
    s.resp.reserve(opts_.max_body);
    s.easy = curl_easy_init();
    if (s.easy == nullptr) throw std::runtime_error("admission: curl_easy_init failed");
    CURL* h = s.easy;
    bool ok = curl_easy_setopt(h, CURLOPT_URL, opts_.url.c_str()) == CURLE_OK;
    ok = ok && curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
    // Redirects as Go's http.Client: libcurl's defaults already turn POST into GET on 301/302/303
    // (CURLOPT_POSTREDIR unset) and repeat it on 307/308.
    ok = ok && curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L) == CURLE_OK;
    ok = ok && curl_easy_setopt(h, CURLOPT_MAXREDIRS, kMaxRedirects) == CURLE_OK;
    ok = ok && curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK;
    ok = ok && curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    ok = ok && curl_easy_setopt(h, CURLOPT_USERAGENT, "derpd") == CURLE_OK;
    ok = ok && curl_easy_setopt(h, CURLOPT_HTTPHEADER, e.headers) == CURLE_OK;
    ok = ok && curl_easy_setopt(h, CURLOPT_POST, 1L) == CURLE_OK;
    ok = ok && curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, Engine::on_body) == CURLE_OK;
    ok = ok && curl_easy_setopt(h, CURLOPT_WRITEDATA, &s) == CURLE_OK;
    ok = ok && curl_easy_setopt(h, CURLOPT_PRIVATE, &s) == CURLE_OK;
    ok = ok && curl_easy_setopt(h, CURLOPT_ERRORBUFFER, s.err) == CURLE_OK;
    if (!ok) throw std::runtime_error("admission: libcurl refused an option (needs libcurl >= 7.85)");
    e.free_slots.push_back(e.slots.size() - 1 - i);
  }

  thread_ = std::thread([this] { run(); });
}

AdmissionClient::~AdmissionClient() {
  stop_.store(true, std::memory_order_release);
  if (engine_ && engine_->multi != nullptr) curl_multi_wakeup(engine_->multi);
  if (thread_.joinable()) thread_.join();
}

AdmissionSubmit AdmissionClient::submit(std::size_t worker, std::uint64_t token, const protocol::NodePublic& key,
                                        const IpAddr& source) {
  counters_.requests.fetch_add(1, std::memory_order_relaxed);
  Lane* l = worker < lanes_.size() ? lanes_[worker].get() : nullptr;
  Request r;
  r.token = token;
  r.key = key;
  r.source = source;
  r.submitted = Clock::now();
  r.deadline = r.submitted + opts_.timeout;
  if (l == nullptr || l->outstanding >= opts_.queue_per_worker || !l->requests.push(r)) {
    counters_.queue_full.fetch_add(1, std::memory_order_relaxed);
    counters_.by_reason[static_cast<std::size_t>(AdmissionReason::kOverloaded)].fetch_add(1, std::memory_order_relaxed);
    if (!opts_.fail_open) return AdmissionSubmit::kRejectNow;
    counters_.fail_open_admits.fetch_add(1, std::memory_order_relaxed);
    return AdmissionSubmit::kAdmitNow;
  }
  ++l->outstanding;
  // Only the first submitter since the admission thread last looked pays for the wake-up.
  if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) curl_multi_wakeup(engine_->multi);
  return AdmissionSubmit::kPending;
}

void AdmissionClient::report(metrics::AdmissionTotals& t) const {
  // Outcomes before requests: a decision counted there was requested before, so pending >= 0
  // unless a submit() races this read (then it is clamped).
  std::uint64_t decided = 0;
  t.decisions.clear();
  for (std::size_t i = 0; i < kAdmissionReasons; ++i) {
    const std::uint64_t n = counters_.by_reason[i].load(std::memory_order_relaxed);
    decided += n;
    t.decisions.emplace_back(to_string(static_cast<AdmissionReason>(i)), n);
  }
  const std::uint64_t requested = counters_.requests.load(std::memory_order_relaxed);
  t.pending = requested > decided ? static_cast<std::int64_t>(requested - decided) : 0;
  t.fail_open_admits = counters_.fail_open_admits.load(std::memory_order_relaxed);
  t.latency_bounds = kAdmissionLatencyBounds;
  t.latency_counts.clear();
  for (const auto& b : counters_.latency) t.latency_counts.push_back(b.load(std::memory_order_relaxed));
  t.latency_sum = static_cast<double>(counters_.latency_sum_us.load(std::memory_order_relaxed)) / 1e6;
}

int AdmissionClient::wake_fd(std::size_t worker) const {
  return worker < lanes_.size() ? lanes_[worker]->efd : -1;
}

std::size_t AdmissionClient::drain(std::size_t worker, std::vector<AdmissionResult>& out) {
  if (worker >= lanes_.size()) return 0;
  Lane& l = *lanes_[worker];
  std::size_t n = 0;
  while (const AdmissionResult* r = l.results.front()) {
    out.push_back(*r);
    l.results.pop();
    ++n;
  }
  l.outstanding -= std::min(l.outstanding, n);
  return n;
}

// --- the admission thread ---------------------------------------------------------------------------

void AdmissionClient::run() {
  Engine& e = *engine_;
  const std::size_t nlanes = lanes_.size();

  // Only this thread writes these (relaxed load + store, no locked instruction).
  auto bump = [](std::atomic<std::uint64_t>& a, std::uint64_t n = 1) {
    a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  };
  auto deliver = [&](std::size_t lane, const Request& req, AdmissionReason reason, std::uint16_t status) {
    AdmissionResult r;
    r.token = req.token;
    r.reason = reason;
    r.http_status = status;
    if (reason == AdmissionReason::kAllowed) {
      r.allow = true;
      counters_.allowed.fetch_add(1, std::memory_order_relaxed);
    } else if (reason == AdmissionReason::kDenied) {
      counters_.denied.fetch_add(1, std::memory_order_relaxed);
    } else {
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      if (decided_by_policy(reason)) {
        r.allow = opts_.fail_open;
        if (r.allow) counters_.fail_open_admits.fetch_add(1, std::memory_order_relaxed);
      }
    }
    counters_.by_reason[static_cast<std::size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - req.submitted).count();
    const double secs = static_cast<double>(us) / 1e6;
    const std::size_t bucket = static_cast<std::size_t>(
        std::lower_bound(kAdmissionLatencyBounds.begin(), kAdmissionLatencyBounds.end(), secs) -
        kAdmissionLatencyBounds.begin());
    bump(counters_.latency[bucket]);
    bump(counters_.latency_sum_us, static_cast<std::uint64_t>(std::max<std::int64_t>(us, 0)));
    Lane& l = *lanes_[lane];
    // Cannot fail: a worker never has more decisions outstanding than the queue holds.
    if (!l.results.push(r)) spdlog::error("admission: result queue of worker {} full; decision lost", lane);
    l.wake_due = true;
  };

  auto start = [&](std::size_t lane, const Request& req, Clock::time_point now) {
    if (req.deadline <= now) {
      // Waited its whole budget behind other requests: no answer in time.
      deliver(lane, req, AdmissionReason::kTimeout, 0);
      return;
    }
    const std::size_t idx = e.free_slots.back();
    Engine::Slot& s = e.slots[idx];
    s.lane = lane;
    s.req = req;
    s.body = admission_request_body(req.key, req.source);
    s.resp.clear();
    s.err[0] = '\0';
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(req.deadline - now).count();
    const long ms = std::max<long>(1, static_cast<long>(left));
    bool ok = curl_easy_setopt(s.easy, CURLOPT_POSTFIELDSIZE, static_cast<long>(s.body.size())) == CURLE_OK;
    ok = ok && curl_easy_setopt(s.easy, CURLOPT_POSTFIELDS, s.body.data()) == CURLE_OK;
    ok = ok && curl_easy_setopt(s.easy, CURLOPT_TIMEOUT_MS, ms) == CURLE_OK;
    ok = ok && curl_easy_setopt(s.easy, CURLOPT_CONNECTTIMEOUT_MS, ms) == CURLE_OK;
    ok = ok && curl_multi_add_handle(e.multi, s.easy) == CURLM_OK;
    if (!ok) {
      spdlog::warn("admission: could not start a request to the controller");
      deliver(lane, req, AdmissionReason::kUnreachable, 0);
      return;
    }
    s.busy = true;
    e.free_slots.pop_back();
  };

  auto finish = [&](Engine::Slot& s, CURLcode rc) {
    curl_multi_remove_handle(e.multi, s.easy);
    s.busy = false;
    e.free_slots.push_back(static_cast<std::size_t>(&s - e.slots.data()));
    long code = 0;
    curl_easy_getinfo(s.easy, CURLINFO_RESPONSE_CODE, &code);
    if (rc == CURLE_TOO_MANY_REDIRECTS) {
      spdlog::debug("admission: controller redirected {} more than {} times", s.req.key.short_string(), kMaxRedirects);
      deliver(s.lane, s.req, AdmissionReason::kTooManyRedirects, 0);
      return;
    }
    // No response head, or a redirect that led nowhere (a hop failed, an unsupported scheme): the
    // controller gave no answer (derper: http.Client.Do failed). A 3xx that libcurl did not follow
    // (no Location) arrives with CURLE_OK and is an answer.
    if (code == 0 || (rc != CURLE_OK && code >= 300 && code < 400)) {
      spdlog::debug("admission: no answer from the controller for {}: {}", s.req.key.short_string(),
                    s.err[0] != '\0' ? s.err : curl_easy_strerror(rc));
      deliver(s.lane, s.req, rc == CURLE_OPERATION_TIMEDOUT ? AdmissionReason::kTimeout : AdmissionReason::kUnreachable,
              0);
      return;
    }
    const auto status = static_cast<std::uint16_t>(std::clamp<long>(code, 1, 999));
    if (code != 200) {
      deliver(s.lane, s.req, AdmissionReason::kHttpStatus, status);
      return;
    }
    // A 200 whose body was cut short (timeout, reset, our size cap) is judged on what arrived, as
    // Go's decoder does: a complete first value decides, anything less is malformed.
    switch (parse_admit_body(s.resp)) {
      case AdmitBody::kAllow: deliver(s.lane, s.req, AdmissionReason::kAllowed, status); break;
      case AdmitBody::kDeny: deliver(s.lane, s.req, AdmissionReason::kDenied, status); break;
      case AdmitBody::kMalformed: deliver(s.lane, s.req, AdmissionReason::kBadResponse, status); break;
    }
  };

  while (!stop_.load(std::memory_order_acquire)) {
    // Clear before looking at the queues: a submit after this point wakes the poll below.
    wake_pending_.exchange(false, std::memory_order_acq_rel);
    Clock::time_point now = Clock::now();

    // Requests that ran out of time while queued, then new requests into free slots, taking
    // the lanes in turn so one busy worker cannot starve the others.
    for (auto& lane : lanes_) {
      while (const Request* r = lane->requests.front()) {
        if (r->deadline > now) break;
        deliver(static_cast<std::size_t>(&lane - lanes_.data()), *r, AdmissionReason::kTimeout, 0);
        lane->requests.pop();
      }
    }
    for (std::size_t idle = 0; !e.free_slots.empty() && idle < nlanes;) {
      const std::size_t w = e.rr;
      e.rr = (e.rr + 1) % nlanes;
      const Request* r = lanes_[w]->requests.front();
      if (r == nullptr) {
        ++idle;
        continue;
      }
      idle = 0;
      const Request req = *r;
      lanes_[w]->requests.pop();
      start(w, req, now);
    }

    int running = 0;
    curl_multi_perform(e.multi, &running);
    bool finished_any = false;
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(e.multi, &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      void* priv = nullptr;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
      const CURLcode rc = m->data.result;
      finish(*static_cast<Engine::Slot*>(priv), rc);
      finished_any = true;
    }

    for (auto& lane : lanes_) {
      if (!lane->wake_due) continue;
      lane->wake_due = false;
      const std::uint64_t one = 1;
      ssize_t wr = ::write(lane->efd, &one, sizeof one);
      (void)wr;  // EAGAIN only at a counter of 2^64-2: the worker is woken anyway
    }

    // Slots were freed and requests wait: start them before sleeping.
    if (finished_any) continue;

    // Sleep until curl has work, a submit wakes us, or the oldest queued request expires.
    long wait_ms = 1000;
    if (e.free_slots.empty()) {
      now = Clock::now();
      for (auto& lane : lanes_) {
        if (const Request* r = lane->requests.front()) {
          const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(r->deadline - now).count() + 1;
          wait_ms = std::clamp<long>(static_cast<long>(d), 0, wait_ms);
        }
      }
    }
    curl_multi_poll(e.multi, nullptr, 0, static_cast<int>(wait_ms), nullptr);
  }
}

}  // namespace derpd::daemon
