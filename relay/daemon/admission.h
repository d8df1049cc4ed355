// AdmissionClient: derper's admission controller (-verify-client-url), off the worker threads.
//
// Protocol (Tailscale's derpserver.verifyClient, tailcfg.DERPAdmitClientRequest/Response):
//   POST <url>  Content-Type: application/json
//               {"NodePublic":"nodekey:<64 hex>","Source":"<client ip>"}
//   200 + a JSON object whose "Allow" member (name matched case-insensitively, last one wins) is
//   true -> admit. Allow false, null or absent -> deny. Any other status, a body that is not such
//   a JSON value within the first max_body bytes, or a non-boolean Allow -> reject. No HTTP answer
//   at all (connect/DNS/TLS failure, no response head before the timeout, a redirect chain that
//   does not end in an answer) -> admit when fail_open, else reject. Mesh peers skip admission:
//   that is the caller's decision (it never submits them).
// Redirects are followed as Go's http.Client (derper's http.DefaultClient) follows them: 301, 302
// and 303 turn the POST into a GET without a body, 307 and 308 repeat the POST with its body;
// http and https only; a 3xx without Location is the answer. Go stops at its tenth redirect
// ("stopped after 10 redirects", an error: the fail-open policy decides), so at most
// kMaxRedirects are followed here too.
// The timeout (5 s, as derper) runs from submit(), so time spent queued here, and every redirect
// hop, count against it.
//
// Threads: the HTTP requests run on one thread owned by this object, on libcurl's multi
// interface (many transfers at once, at most max_in_flight). Workers never block:
//   submit()  pushes onto the worker's bounded request queue (lock-free SPSC) and wakes the
//             admission thread; when the worker already has queue_per_worker decisions
//             outstanding, it answers at once by the fail-open policy (counted as queue_full).
//   results   come back on the worker's bounded result queue (SPSC; it cannot overflow: a worker
//             never has more outstanding requests than it holds) and the worker's eventfd is
//             written (once per batch). The worker keeps a read armed on wake_fd(w) and, when it
//             completes, calls drain(w, out). The read itself resets the eventfd.
// submit(w, ...) and drain(w, ...) must be called only from worker w's thread. Destroy the client
// after the workers have stopped; decisions still outstanding then are never delivered.
//
// Tokens are opaque to this class: callers encode whatever finds the parked connection again
// (slot + generation), and must ignore a result whose connection is gone.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "relay/base/endpoint.h"
#include "relay/metrics/admission_metrics.h"
#include "relay/protocol/key.h"

namespace derpd::daemon {

// Why a decision came out as it did (also a label for metrics and logs).
enum class AdmissionReason : std::uint8_t {
  kAllowed,       // 200 and Allow true
  kDenied,        // 200 and Allow false / null / absent
  kHttpStatus,    // an answer other than 200 (AdmissionResult::http_status says which)
  kBadResponse,   // 200 but the body is not a JSON object with a boolean Allow (or it is cut short)
  kUnreachable,   // no HTTP answer (connect, DNS, TLS, bad redirect): fail-open policy decides
  kTimeout,       // no answer before the deadline (queued or in flight): fail-open policy decides
  kTooManyRedirects,  // more than kMaxRedirects redirects: fail-open policy decides
  kOverloaded,    // the worker's queue was full at submit(): fail-open policy decides
  kCount
};
inline constexpr std::size_t kAdmissionReasons = static_cast<std::size_t>(AdmissionReason::kCount);
// "allowed", "denied", "http_status", "bad_response", "unreachable", "timeout", "too_many_redirects",
// "overloaded" (the metrics' result label).
std::string_view to_string(AdmissionReason r);
// Whether the fail-open policy decides (the controller gave no answer).
constexpr bool decided_by_policy(AdmissionReason r) {
  return r == AdmissionReason::kUnreachable || r == AdmissionReason::kTimeout ||
         r == AdmissionReason::kTooManyRedirects || r == AdmissionReason::kOverloaded;
}

// Redirects followed per decision (Go's http.Client: an error at the tenth).
inline constexpr long kMaxRedirects = 9;

// Upper bounds (seconds) of the decision latency histogram: submit() to the result.
inline constexpr std::array<double, 11> kAdmissionLatencyBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                                    0.5,   1,    2.5,   5,    10};

struct AdmissionResult {
  std::uint64_t token = 0;
  bool allow = false;
  AdmissionReason reason = AdmissionReason::kUnreachable;
  std::uint16_t http_status = 0;  // 0 when the controller gave no answer
};

// What submit() did.
enum class AdmissionSubmit : std::uint8_t {
  kPending,    // queued: the decision arrives through drain()
  kAdmitNow,   // queue full and fail-open: admit without asking (reason kOverloaded)
  kRejectNow,  // queue full and fail-closed: reject without asking (reason kOverloaded)
};

struct AdmissionOptions {
  std::string url;                 // http:// or https:// only
  bool fail_open = true;           // derper's -verify-client-url-fail-open default
  std::size_t workers = 1;
  std::chrono::milliseconds timeout{5000};  // derper: 5 s per decision
  std::size_t max_in_flight = 64;  // concurrent HTTP requests
  std::size_t queue_per_worker = 256;  // outstanding decisions per worker (queued + in flight + undrained)
  std::size_t max_body = 4096;     // response bytes read (derper reads at most 4 KiB)
};

// Counters: relaxed atomics, read by the metrics exporter at any time.
// Every submit() adds to `requests` and ends in exactly one of allowed, denied, errors (non-200,
// bad body, unreachable, timeout, too many redirects) or queue_full, except decisions still
// outstanding; `by_reason` counts the same decisions by their AdmissionReason. fail_open_admits is
// the subset of errors and queue_full that were admitted by policy. The latency histogram covers
// every decision delivered through drain() (not queue_full, answered at once).
struct AdmissionCounters {
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> allowed{0};
  std::atomic<std::uint64_t> denied{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> fail_open_admits{0};
  std::atomic<std::uint64_t> queue_full{0};
  std::array<std::atomic<std::uint64_t>, kAdmissionReasons> by_reason{};
  // Per bucket of kAdmissionLatencyBounds, not cumulative; the last counts those above every bound.
  std::array<std::atomic<std::uint64_t>, kAdmissionLatencyBounds.size() + 1> latency{};
  std::atomic<std::uint64_t> latency_sum_us{0};
};

// The controller's verdict from a 200 response body, decoded leniently as Go's encoding/json
// does: the first JSON value only (trailing bytes ignored), object member names matched
// case-insensitively, the last "Allow" wins, unknown members ignored, top-level null = deny.
enum class AdmitBody : std::uint8_t { kAllow, kDeny, kMalformed };
AdmitBody parse_admit_body(std::string_view body);

// The request body, byte for byte what derper sends.
std::string admission_request_body(const protocol::NodePublic& key, const IpAddr& source);
// An address in Go's netip.Addr text form (RFC 5952 for IPv6, as derper writes "Source").
std::string go_addr_string(const IpAddr& a);

class AdmissionClient {
 public:
  // Throws std::invalid_argument for a URL that is not http(s) or options that are zero, and
  // std::runtime_error when libcurl or an eventfd cannot be set up (start-up only).
  explicit AdmissionClient(AdmissionOptions opts);
  AdmissionClient(std::string url, bool fail_open, std::size_t workers);
  ~AdmissionClient();
  AdmissionClient(const AdmissionClient&) = delete;
  AdmissionClient& operator=(const AdmissionClient&) = delete;

  // Worker `worker`'s thread only. Never blocks (one relaxed check, a queue push, and at most
  // one non-blocking write to wake the admission thread).
  AdmissionSubmit submit(std::size_t worker, std::uint64_t token, const protocol::NodePublic& key,
                         const IpAddr& source);
  // Readable (an eventfd: read 8 bytes to reset it) when worker `worker` has results.
  int wake_fd(std::size_t worker) const;
  // Worker `worker`'s thread only. Appends every result ready for the worker; returns how many.
  std::size_t drain(std::size_t worker, std::vector<AdmissionResult>& out);

  const AdmissionCounters& counters() const { return counters_; }
  // The counters as /metrics shows them (relaxed loads; any thread).
  void report(metrics::AdmissionTotals& t) const;
  const AdmissionOptions& options() const { return opts_; }
  std::size_t workers() const { return opts_.workers; }

 private:
  struct Lane;
  struct Engine;

  void run();

  AdmissionOptions opts_;  // immutable after construction
  AdmissionCounters counters_;
  std::vector<std::unique_ptr<Lane>> lanes_;  // one per worker; the vector is immutable
  std::unique_ptr<Engine> engine_;            // owned by the admission thread once started
  alignas(64) std::atomic<bool> wake_pending_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace derpd::daemon
