// derp_load: DERP relay load generator (loopback targets only).
//
// Many DERP client connections on one epoll thread (edge-triggered, see derp_conn.h), each with
// its own node key, plaintext or TLS (fast start when the server's chain carries the DERP meta
// cert). Connections 2i and 2i+1 form a pair and send packets to each other through the relay;
// payloads carry the sender, a sequence number and a CLOCK_MONOTONIC timestamp (derp_payload.h),
// so one-way latency, loss (sequence gaps, packets never delivered) and misrouting are seen
// directly.
//
// Modes:
//   closed  each direction of each pair keeps --window packets in flight: a delivery returns a
//           credit to its sender, which sends again at once (saturation: the relay's ceiling)
//   open    --rate packets/s in total, in bursts of --burst packets sent back to back, the bursts
//           spread round-robin over the senders, each packet stamped with its burst's scheduled
//           send time (a late client shows up as latency, not as a lower rate)
//   idle    open --connections and hold them (the server's RSS before/after, per connection),
//           then check that each (or a sample of pairs) can still send and receive
//
// Load runs go: connect all -> settle -> warm-up (not measured) -> measured window (--duration;
// the server's CPU time is read from /proc/<pid>/stat at both ends with --server-pid) -> drain
// (no new packets; wait for those in flight, at most --loss-timeout). Every phase is bounded in
// time; SIGINT/SIGTERM end the run early, SIGUSR1 ends an idle hold.
#include <sched.h>  // CPU_SETSIZE
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fmt/core.h>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/load/derp_conn.h"
#include "bench/load/derp_payload.h"
#include "bench/load/latency_histogram.h"
#include "bench/load/load_common.h"
#include "client/derp/http_upgrade.h"
#include "client/derp/url.h"
#include "relay/base/endpoint.h"
#include "relay/protocol/handshake.h"

namespace derpd::bench {
namespace {

constexpr double kMaxDurationS = 120.0;
constexpr double kMaxHoldS = 600.0;
constexpr std::uint32_t kMaxConnections = 1'000'000;
constexpr std::size_t kReadBufferSize = 256 << 10;
constexpr std::uint64_t kScanNs = 50'000'000ull;       // timeout scans
constexpr std::uint64_t kSettleNs = 200'000'000ull;    // after the last handshake, before traffic
constexpr std::size_t kOpenBacklogLimit = 1 << 20;     // open loop: skip a sender with this much queued
constexpr std::uint64_t kOpenBatchLimit = 8192;        // packets scheduled per loop turn at most

volatile std::sig_atomic_t g_interrupted = 0;
volatile std::sig_atomic_t g_release_hold = 0;
extern "C" void on_stop_signal(int) { g_interrupted = 1; }
extern "C" void on_hold_signal(int) { g_release_hold = 1; }

// utime + stime of a whole process (all threads, exited ones included) in seconds; -1 if unknown.
double process_cpu_seconds(int pid) {
  std::ifstream f(fmt::format("/proc/{}/stat", pid));
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream rest(stat.substr(paren + 2));
  std::string field;
  std::uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {  // proc(5) numbering: state is field 3
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// VmRSS of a process in KiB; -1 if unknown.
long process_rss_kib(int pid) {
  std::ifstream f(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

enum class Mode : std::uint8_t { kClosed, kOpen, kIdle };

struct Options {
  std::string target_text;
  Endpoint target;
  bool tls = false;
  bool fast_start = true;
  Mode mode = Mode::kClosed;
  std::string mode_text = "closed";
  std::uint32_t pairs = 100;
  std::uint32_t window = 16;
  double rate = 100'000;
  std::uint32_t burst = 1;
  bool spin = false;
  std::string sizes_text = "1400";
  std::vector<std::uint32_t> sizes;
  double duration_s = 5;
  double warmup_s = 1;
  std::uint32_t connections = 1000;
  std::uint32_t verify_pairs = 0;  // 0: all
  std::uint32_t verify_batch = 500;  // pairs checked at once; 0: all at once
  double hold_s = 2;
  int server_pid = 0;
  std::uint32_t src_ips = 0;
  std::uint32_t concurrency = 256;
  double handshake_timeout_s = 15;
  double connect_timeout_s = 120;
  double loss_timeout_s = 2;
  double verify_timeout_s = 10;
  int cpu = -1;
  bool json = false;
};

struct Flow {                      // one sender's packets to its partner
  std::uint64_t next_seq = 0;      // next sequence number to send
  std::uint64_t expected = 0;      // next sequence number the partner expects
  std::uint64_t last_progress = 0; // last delivery (or first send after an idle spell)
  std::uint32_t credits = 0;       // closed loop: packets it may still put in flight
};

struct LoadCounters {
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  std::uint64_t sent_measured = 0;
  std::uint64_t received_measured = 0;
  std::uint64_t delivered_in_window = 0;
  std::uint64_t sent_in_window = 0;
  std::uint64_t gaps = 0;          // sequence numbers skipped by deliveries (dropped by the relay)
  std::uint64_t late = 0;          // delivered after a later one, or after its flow timed out
  std::uint64_t timeouts = 0;      // packets given up on by the loss timer
  std::uint64_t foreign = 0;       // not this run's tag
  std::uint64_t corrupt = 0;       // tail or length wrong
  std::uint64_t misrouted = 0;     // wrong receiver or wrong source key
  std::uint64_t output_full = 0;   // a send found the connection's queue full
  std::uint64_t open_skipped = 0;  // open loop: not sent, the sender's queue was over the limit
  std::uint64_t max_lag_ns = 0;    // open loop: latest a packet went out after its scheduled time
  std::array<std::uint64_t, static_cast<std::size_t>(ConnError::kCount)> closed{};  // after the handshake
  std::uint64_t keep_alives = 0;
  std::uint64_t peer_gone = 0;
  std::uint64_t pings = 0;
  std::uint64_t health = 0;
  std::uint64_t other_frames = 0;
};

struct ConnectStats {
  std::uint32_t attempted = 0;
  std::uint32_t ready = 0;
  std::uint32_t fast_start = 0;
  std::array<std::uint64_t, static_cast<std::size_t>(ConnError::kCount)> failed{};
  std::uint64_t max_fail_ns = 0;  // longest time from start to a failure
  double seconds = 0;
  LatencyHistogram handshake;  // start -> ServerInfo
  std::uint64_t failed_total() const {
    std::uint64_t n = 0;
    for (auto v : failed) n += v;
    return n;
  }
};

class Loader final : public ConnSink {
 public:
  explicit Loader(const Options& o) : opt_(o) {}
  ~Loader() {
    conns_.reset();  // before the SSL_CTX
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (epfd_ >= 0) ::close(epfd_);
  }
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  void setup();
  nlohmann::json run();

  void on_ready(std::uint32_t conn) override;
  void on_packet(std::uint32_t conn, const protocol::RecvPacket& p) override;
  void on_other(std::uint32_t conn, const protocol::ServerMessage& m) override;
  void on_closed(std::uint32_t conn, ConnError e) override;

 private:
  enum class Phase : std::uint8_t { kConnect, kIdle, kWarmup, kMeasure, kDrain, kVerify };

  void connect_all();
  void poll(std::uint64_t timeout_ns);
  void mark_dirty(std::uint32_t i);
  bool send_one(std::uint32_t s, std::uint64_t stamp_ns, std::uint8_t phase);
  void refill(std::uint32_t s);
  void scan_flows(std::uint64_t t);
  void schedule_open(std::uint64_t t);
  std::uint64_t burst_time(std::uint64_t k) const;
  std::uint32_t size_for(std::uint64_t seq) const { return opt_.sizes[seq % opt_.sizes.size()]; }
  nlohmann::json run_load();
  nlohmann::json run_idle();
  nlohmann::json connect_json() const;
  nlohmann::json counters_json() const;
  void close_all();

  const Options opt_;
  std::uint32_t n_ = 0;
  int epfd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  ConnEnv env_;
  std::unique_ptr<std::byte[]> read_buffer_;
  std::unique_ptr<LoadConn[]> conns_;
  std::vector<protocol::NodePrivate> privs_;
  std::vector<protocol::NodePublic> pubs_;
  std::vector<std::uint32_t> partner_;
  std::vector<Flow> flows_;
  std::vector<std::uint32_t> dirty_;
  std::vector<std::uint32_t> pending_reads_;
  std::vector<std::uint32_t> pending_spare_;  // poll()'s copy of pending_reads_ (keeps its capacity)
  std::vector<std::uint8_t> in_pending_;
  std::vector<std::uint8_t> was_ready_;  // reached kReady at some point
  std::uint32_t tag_ = 0;

  Phase phase_ = Phase::kConnect;
  bool sending_ = false;
  std::uint64_t outstanding_ = 0;  // sent and neither delivered nor given up
  std::uint64_t window_start_ = 0;
  std::uint64_t window_end_ = 0;
  std::uint32_t in_progress_ = 0;
  std::uint32_t open_ = 0;  // ready and not closed

  // Open loop.
  std::uint64_t open_t0_ = 0;
  std::uint64_t scheduled_ = 0;  // bursts scheduled so far
  std::uint64_t measure_from_ = 0;  // scheduled times in [measure_from_, measure_to_) are measured
  std::uint64_t measure_to_ = 0;

  // Idle verification: what arrived.
  std::vector<std::uint8_t> delivered_from_;
  std::vector<std::uint8_t> received_at_;

  ConnectStats cstats_;
  LoadCounters c_;
  LatencyHistogram hist_;
};

void Loader::setup() {
  n_ = opt_.mode == Mode::kIdle ? opt_.connections : 2 * opt_.pairs;
  std::array<std::byte, 3> rnd{};
  if (getrandom(rnd.data(), rnd.size(), 0) != static_cast<ssize_t>(rnd.size())) {
    throw std::runtime_error(fmt::format("getrandom: {}", std::strerror(errno)));
  }
  tag_ = (std::uint32_t{std::to_integer<std::uint8_t>(kRunTagFirst)} << 24) |
         (std::uint32_t{std::to_integer<std::uint8_t>(rnd[0])} << 16) |
         (std::uint32_t{std::to_integer<std::uint8_t>(rnd[1])} << 8) | std::to_integer<std::uint8_t>(rnd[2]);

  // One descriptor per connection.
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur != RLIM_INFINITY && static_cast<std::uint64_t>(n_) + 64 > rl.rlim_cur) {
    throw std::runtime_error(fmt::format("{} connections need {} descriptors; RLIMIT_NOFILE is {} (hard limit)", n_,
                                         n_ + 64, rl.rlim_cur));
  }

  if (!protocol::crypto_init()) throw std::runtime_error("libsodium failed to initialise");
  privs_.reserve(n_);
  pubs_.reserve(n_);
  for (std::uint32_t i = 0; i < n_; ++i) {
    privs_.push_back(protocol::NodePrivate::generate());
    pubs_.push_back(privs_.back().public_key());
  }
  partner_.resize(n_);
  for (std::uint32_t i = 0; i < n_; ++i) partner_[i] = i ^ 1u;
  if (n_ % 2 == 1) partner_[n_ - 1] = 0;  // idle mode only; verification re-pairs anyway
  flows_.resize(n_);
  in_pending_.resize(n_);
  was_ready_.resize(n_);
  conns_ = std::make_unique<LoadConn[]>(n_);
  dirty_.reserve(n_);

  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw std::runtime_error(fmt::format("epoll_create1: {}", std::strerror(errno)));

  if (opt_.tls) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (ctx_ == nullptr) throw std::runtime_error("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    // Loopback benchmark against a self-signed certificate: the server is authenticated by the
    // DERP handshake instead (ServerKey must match the meta cert or Derp-Public-Key).
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
    long mode = SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
    if (opt_.mode == Mode::kIdle) mode |= SSL_MODE_RELEASE_BUFFERS;
    SSL_CTX_set_mode(ctx_, mode);
    SSL_CTX_set_options(ctx_, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_OFF);
    // The order Go's crypto/tls offers on AES-capable CPUs: both servers pick the same suite.
    SSL_CTX_set_ciphersuites(ctx_, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
  }

  derpclient::DerpUrl url;
  url.tls = opt_.tls;
  url.host = opt_.target.addr.to_string();
  url.port = opt_.target.port;
  url.explicit_port = true;
  url.target = "/derp";
  read_buffer_ = std::make_unique<std::byte[]>(kReadBufferSize);
  env_.target_len = opt_.target.to_sockaddr(env_.target);
  env_.tls = ctx_;
  env_.allow_fast_start = opt_.fast_start;
  env_.request_slow = derpclient::upgrade_request(url, false);
  env_.request_fast = derpclient::upgrade_request(url, true);
  protocol::ClientInfo info;
  info.version = protocol::kProtocolVersion;
  env_.client_info_json = protocol::client_info_json(info);
  env_.read_buffer = MutBytes(read_buffer_.get(), kReadBufferSize);
  env_.sink = this;
}

void Loader::mark_dirty(std::uint32_t i) {
  if (conns_[i].dirty) return;
  conns_[i].dirty = true;
  dirty_.push_back(i);
}

void Loader::poll(std::uint64_t timeout_ns) {
  if (!pending_reads_.empty() || !dirty_.empty() || (opt_.spin && sending_)) timeout_ns = 0;
  std::array<epoll_event, 256> events{};
  timespec ts{static_cast<time_t>(timeout_ns / kNsPerS), static_cast<long>(timeout_ns % kNsPerS)};
  const int n = epoll_pwait2(epfd_, events.data(), static_cast<int>(events.size()), &ts, nullptr);
  if (n < 0 && errno != EINTR) throw std::runtime_error(fmt::format("epoll_pwait2: {}", std::strerror(errno)));
  // Connections that had more to read than one turn allows go first, then the new events.
  std::vector<std::uint32_t>& again = pending_spare_;
  again.clear();
  again.swap(pending_reads_);
  for (std::uint32_t i : again) {
    in_pending_[i] = 0;
    conns_[i].on_read_pending(env_);
  }
  for (int k = 0; k < n; ++k) {
    const std::uint32_t i = events[static_cast<std::size_t>(k)].data.u32;
    if (i < n_) conns_[i].on_event(env_, events[static_cast<std::size_t>(k)].events);
  }
  for (std::uint32_t i : again) {
    if (conns_[i].read_pending() && !in_pending_[i]) {
      in_pending_[i] = 1;
      pending_reads_.push_back(i);
    }
  }
  for (int k = 0; k < n; ++k) {
    const std::uint32_t i = events[static_cast<std::size_t>(k)].data.u32;
    if (i < n_ && conns_[i].read_pending() && !in_pending_[i]) {
      in_pending_[i] = 1;
      pending_reads_.push_back(i);
    }
  }
  // Everything the callbacks queued goes out now: one write per connection.
  for (std::size_t k = 0; k < dirty_.size(); ++k) {
    LoadConn& c = conns_[dirty_[k]];
    c.dirty = false;
    c.flush(env_);
  }
  dirty_.clear();
}

void Loader::on_ready(std::uint32_t conn) {
  was_ready_[conn] = 1;
  ++cstats_.ready;
  ++open_;
  --in_progress_;
  if (conns_[conn].fast_start()) ++cstats_.fast_start;
  cstats_.handshake.record(now_ns() - conns_[conn].started_ns());
}

void Loader::on_closed(std::uint32_t conn, ConnError e) {
  if (!was_ready_[conn]) {
    --in_progress_;
    ++cstats_.failed[static_cast<std::size_t>(e)];
    cstats_.max_fail_ns = std::max(cstats_.max_fail_ns, now_ns() - conns_[conn].started_ns());
  } else {
    --open_;
    ++c_.closed[static_cast<std::size_t>(e)];
  }
}

void Loader::on_other(std::uint32_t /*conn*/, const protocol::ServerMessage& m) {
  if (std::holds_alternative<protocol::KeepAlive>(m)) {
    ++c_.keep_alives;
  } else if (std::holds_alternative<protocol::PeerGone>(m)) {
    ++c_.peer_gone;
  } else if (std::holds_alternative<protocol::Ping>(m)) {
    ++c_.pings;
  } else if (std::holds_alternative<protocol::Health>(m)) {
    ++c_.health;
  } else {
    ++c_.other_frames;
  }
}

void Loader::on_packet(std::uint32_t r, const protocol::RecvPacket& p) {
  const std::uint64_t t = now_ns();
  PayloadHeader h;
  switch (read_payload(p.packet, tag_, h)) {
    case PayloadVerdict::kOk:
      break;
    case PayloadVerdict::kForeign:
      ++c_.foreign;
      return;
    default:
      ++c_.corrupt;
      return;
  }
  if (h.sender >= n_ || partner_[h.sender] != r || pubs_[h.sender] != p.src) {
    ++c_.misrouted;
    return;
  }
  Flow& f = flows_[h.sender];
  if (h.seq >= f.next_seq || p.packet.size() != size_for(h.seq)) {
    ++c_.corrupt;
    return;
  }
  ++c_.received;
  std::uint64_t back = 0;
  if (h.seq >= f.expected) {
    c_.gaps += h.seq - f.expected;
    back = h.seq - f.expected + 1;
    f.expected = h.seq + 1;
    outstanding_ -= back;
  } else {
    ++c_.late;
  }
  f.last_progress = t;
  if (h.phase == 1) {
    ++c_.received_measured;
    hist_.record(t > h.sent_ns ? t - h.sent_ns : 0);
  }
  if (phase_ == Phase::kMeasure) ++c_.delivered_in_window;
  if (phase_ == Phase::kVerify) {
    delivered_from_[h.sender] = 1;
    received_at_[r] = 1;
  }
  if (opt_.mode == Mode::kClosed && back > 0) {
    f.credits += static_cast<std::uint32_t>(back);
    refill(h.sender);
  }
}

bool Loader::send_one(std::uint32_t s, std::uint64_t stamp_ns, std::uint8_t phase) {
  Flow& f = flows_[s];
  const std::uint32_t size = size_for(f.next_seq);
  const std::size_t head = protocol::kFrameHeaderLen + protocol::kKeyLen;
  MutBytes out = conns_[s].reserve(head + size);
  if (out.empty()) {
    ++c_.output_full;
    return false;
  }
  const std::size_t h = protocol::write_send_packet_header(out, pubs_[partner_[s]], size);
  write_payload(out.subspan(h, size), PayloadHeader{tag_, s, f.next_seq, stamp_ns, phase});
  conns_[s].commit(h + size);
  if (f.next_seq == f.expected) f.last_progress = stamp_ns;
  ++f.next_seq;
  ++outstanding_;
  ++c_.sent;
  if (phase == 1) ++c_.sent_measured;
  if (phase_ == Phase::kMeasure) ++c_.sent_in_window;
  mark_dirty(s);
  return true;
}

void Loader::refill(std::uint32_t s) {
  if (!sending_) return;
  Flow& f = flows_[s];
  const std::uint64_t t = now_ns();
  const std::uint8_t phase = phase_ == Phase::kMeasure ? 1 : 0;
  while (f.credits > 0 && send_one(s, t, phase)) --f.credits;
}

void Loader::scan_flows(std::uint64_t t) {
  const auto loss_ns = static_cast<std::uint64_t>(opt_.loss_timeout_s * 1e9);
  for (std::uint32_t s = 0; s < n_; ++s) {
    Flow& f = flows_[s];
    if (f.next_seq == f.expected || t - f.last_progress < loss_ns) continue;
    const std::uint64_t d = f.next_seq - f.expected;
    c_.timeouts += d;
    outstanding_ -= d;
    f.expected = f.next_seq;
    f.last_progress = t;
    if (opt_.mode == Mode::kClosed) {
      f.credits += static_cast<std::uint32_t>(d);
      refill(s);
    }
  }
}

std::uint64_t Loader::burst_time(std::uint64_t k) const {
  return open_t0_ + static_cast<std::uint64_t>(static_cast<double>(k) * 1e9 * opt_.burst / opt_.rate);
}

void Loader::schedule_open(std::uint64_t t) {
  if (!sending_) return;
  // Burst k (of --burst packets, back to back, all stamped with its scheduled time) goes to
  // sender k mod n at t0 + k * burst / rate.
  const double ns_per_burst = 1e9 * opt_.burst / opt_.rate;
  const auto due = static_cast<std::uint64_t>(static_cast<double>(t - open_t0_) / ns_per_burst) + 1;
  const std::uint64_t limit = std::min(due, scheduled_ + kOpenBatchLimit);
  while (scheduled_ < limit) {
    const std::uint64_t at = burst_time(scheduled_);
    const auto s = static_cast<std::uint32_t>(scheduled_ % n_);
    const std::uint8_t phase = at >= measure_from_ && at < measure_to_ ? 1 : 0;
    for (std::uint32_t k = 0; k < opt_.burst; ++k) {
      if (conns_[s].queued() > kOpenBacklogLimit) {
        ++c_.open_skipped;
      } else if (send_one(s, at, phase)) {
        c_.max_lag_ns = std::max(c_.max_lag_ns, t > at ? t - at : 0);
      }
    }
    ++scheduled_;
  }
}

void Loader::connect_all() {
  phase_ = Phase::kConnect;
  const std::uint64_t t0 = now_ns();
  const std::uint64_t deadline = t0 + static_cast<std::uint64_t>(opt_.connect_timeout_s * 1e9);
  const auto hs_ns = static_cast<std::uint64_t>(opt_.handshake_timeout_s * 1e9);
  const bool spread = opt_.src_ips > 0 && opt_.target.addr.is_v4();
  std::uint32_t next = 0;
  std::uint32_t scan_from = 0;
  std::uint64_t next_scan = t0 + kScanNs;
  for (;;) {
    std::uint64_t t = now_ns();
    while (next < n_ && in_progress_ < opt_.concurrency && !g_interrupted) {
      sockaddr_in src{};
      if (spread) {
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7f000001u + next % opt_.src_ips);  // 127.0.0.1, .2, ...
      }
      ++in_progress_;
      ++cstats_.attempted;
      conns_[next].start(env_, epfd_, next, privs_[next], spread ? &src : nullptr, t);
      ++next;
    }
    if (in_progress_ == 0 && (next == n_ || g_interrupted)) break;
    const bool give_up = t >= deadline || g_interrupted;
    if (t >= next_scan || give_up) {
      for (std::uint32_t i = scan_from; i < next; ++i) {
        LoadConn& c = conns_[i];
        if (!c.ready() && c.state() != ConnState::kClosed && (give_up || t - c.started_ns() >= hs_ns)) {
          c.close(env_, ConnError::kTimeout);
        }
        // Everything below scan_from has finished (ready or closed): later scans start here.
        if (i == scan_from && (c.ready() || c.state() == ConnState::kClosed)) ++scan_from;
      }
      next_scan = t + kScanNs;
      if (give_up) break;
    }
    poll(next_scan > t ? next_scan - t : 0);
  }
  cstats_.seconds = static_cast<double>(now_ns() - t0) / 1e9;
}

nlohmann::json Loader::connect_json() const {
  nlohmann::json j;
  j["attempted"] = cstats_.attempted;
  j["ready"] = cstats_.ready;
  j["fast_start"] = cstats_.fast_start;
  j["failed"] = cstats_.failed_total();
  nlohmann::json why = nlohmann::json::object();
  for (std::size_t e = 1; e < cstats_.failed.size(); ++e) {
    if (cstats_.failed[e] != 0) why[std::string(to_string(static_cast<ConnError>(e)))] = cstats_.failed[e];
  }
  j["failed_reasons"] = why;
  j["max_fail_ms"] = static_cast<double>(cstats_.max_fail_ns) / 1e6;
  j["seconds"] = cstats_.seconds;
  j["per_s"] = cstats_.seconds > 0 ? cstats_.ready / cstats_.seconds : 0.0;
  j["handshake_ms"] = {{"p50", static_cast<double>(cstats_.handshake.percentile(0.5)) / 1e6},
                       {"p99", static_cast<double>(cstats_.handshake.percentile(0.99)) / 1e6},
                       {"max", static_cast<double>(cstats_.handshake.max()) / 1e6}};
  for (std::uint32_t i = 0; i < n_; ++i) {
    if (conns_[i].ready()) {
      j["tls"] = conns_[i].tls_description();
      break;
    }
  }
  return j;
}

nlohmann::json Loader::counters_json() const {
  nlohmann::json j;
  j["sent"] = c_.sent;
  j["received"] = c_.received;
  j["gaps"] = c_.gaps;
  j["late"] = c_.late;
  j["timeouts"] = c_.timeouts;
  j["foreign"] = c_.foreign;
  j["corrupt"] = c_.corrupt;
  j["misrouted"] = c_.misrouted;
  j["output_full"] = c_.output_full;
  j["keep_alives"] = c_.keep_alives;
  j["peer_gone"] = c_.peer_gone;
  j["pings"] = c_.pings;
  j["health"] = c_.health;
  j["other_frames"] = c_.other_frames;
  nlohmann::json closed = nlohmann::json::object();
  std::uint64_t total = 0;
  for (std::size_t e = 1; e < c_.closed.size(); ++e) {
    total += c_.closed[e];
    if (c_.closed[e] != 0) closed[std::string(to_string(static_cast<ConnError>(e)))] = c_.closed[e];
  }
  j["closed_after_ready"] = total;
  j["closed_reasons"] = closed;
  return j;
}

void Loader::close_all() {
  for (std::uint32_t i = 0; i < n_; ++i) conns_[i].close(env_, ConnError::kNone);
}

nlohmann::json Loader::run_load() {
  nlohmann::json j;
  connect_all();
  j["connect"] = connect_json();
  if (cstats_.ready != n_) {
    j["error"] = fmt::format("only {} of {} connections completed the handshake", cstats_.ready, n_);
    close_all();
    return j;
  }
  phase_ = Phase::kIdle;
  const std::uint64_t settle_end = now_ns() + kSettleNs;
  for (std::uint64_t t = now_ns(); t < settle_end && !g_interrupted; t = now_ns()) poll(settle_end - t);

  const std::uint64_t t0 = now_ns();
  const auto warm_ns = static_cast<std::uint64_t>(opt_.warmup_s * 1e9);
  const auto dur_ns = static_cast<std::uint64_t>(opt_.duration_s * 1e9);
  const auto loss_ns = static_cast<std::uint64_t>(opt_.loss_timeout_s * 1e9);
  std::uint64_t win_start = t0 + warm_ns;
  std::uint64_t win_end = win_start + dur_ns;
  phase_ = Phase::kWarmup;
  sending_ = true;
  if (opt_.mode == Mode::kOpen) {
    open_t0_ = t0;
    measure_from_ = win_start;
    measure_to_ = win_end;
  } else {
    for (std::uint32_t s = 0; s < n_; ++s) {
      flows_[s].credits = opt_.window;
      refill(s);
    }
  }
  double srv0 = -1, srv1 = -1, own0 = 0, own1 = 0;
  std::uint64_t drain_deadline = 0;
  std::uint64_t next_scan = t0 + kScanNs;
  for (;;) {
    const std::uint64_t t = now_ns();
    if (phase_ == Phase::kWarmup && (t >= win_start || g_interrupted)) {
      phase_ = Phase::kMeasure;
      win_start = t;
      if (opt_.server_pid > 0) srv0 = process_cpu_seconds(opt_.server_pid);
      own0 = own_cpu_seconds();
    }
    if (phase_ == Phase::kMeasure && (t >= win_end || g_interrupted)) {
      if (opt_.server_pid > 0) srv1 = process_cpu_seconds(opt_.server_pid);
      own1 = own_cpu_seconds();
      win_end = t;
      phase_ = Phase::kDrain;
      sending_ = false;
      drain_deadline = t + loss_ns;
    }
    if (phase_ == Phase::kDrain && (outstanding_ == 0 || t >= drain_deadline)) break;
    if (opt_.mode == Mode::kOpen) schedule_open(t);
    if (t >= next_scan) {
      scan_flows(t);
      next_scan = t + kScanNs;
    }
    std::uint64_t until = next_scan;
    if (phase_ == Phase::kWarmup) until = std::min(until, win_start);
    if (phase_ == Phase::kMeasure) until = std::min(until, win_end);
    if (phase_ == Phase::kDrain) until = std::min(until, drain_deadline);
    if (opt_.mode == Mode::kOpen && sending_) {
      until = std::min(until, burst_time(scheduled_));
    }
    poll(until > t ? until - t : 0);
  }
  const std::uint64_t unfinished = outstanding_;
  close_all();

  const double window_s = static_cast<double>(win_end - win_start) / 1e9;
  const std::uint64_t lost = c_.sent_measured - std::min(c_.sent_measured, c_.received_measured);
  auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1e3; };
  j["window_s"] = window_s;
  j["sent_measured"] = c_.sent_measured;
  j["received_measured"] = c_.received_measured;
  j["lost"] = lost;
  j["loss_ratio"] = c_.sent_measured ? static_cast<double>(lost) / static_cast<double>(c_.sent_measured) : 0.0;
  j["unfinished_at_end"] = unfinished;
  j["delivered"] = c_.delivered_in_window;
  j["delivered_per_s"] = window_s > 0 ? static_cast<double>(c_.delivered_in_window) / window_s : 0.0;
  j["offered_per_s"] = window_s > 0 ? static_cast<double>(c_.sent_in_window) / window_s : 0.0;
  j["delivered_mbit_per_s"] = 0.0;
  if (window_s > 0) {
    double bytes = 0;
    for (auto s : opt_.sizes) bytes += s;
    bytes /= static_cast<double>(opt_.sizes.size());
    j["delivered_mbit_per_s"] = static_cast<double>(c_.delivered_in_window) * bytes * 8 / window_s / 1e6;
  }
  j["latency_us"] = {{"p50", us(hist_.percentile(0.50))}, {"p99", us(hist_.percentile(0.99))},
                     {"p999", us(hist_.percentile(0.999))}, {"mean", hist_.mean() / 1e3}, {"max", us(hist_.max())},
                     {"count", hist_.count()}};
  if (opt_.mode == Mode::kOpen) {
    j["target_rate"] = opt_.rate;
    j["burst"] = opt_.burst;
    j["open_skipped"] = c_.open_skipped;
    j["max_lag_ms"] = static_cast<double>(c_.max_lag_ns) / 1e6;
  }
  const double own = own1 - own0;
  j["client_cpu_s"] = own;
  j["client_busy"] = window_s > 0 ? own / window_s : 0.0;
  if (srv0 >= 0 && srv1 >= 0) {
    const double cpu = srv1 - srv0;
    j["server_cpu_s"] = cpu;
    j["server_busy"] = window_s > 0 ? cpu / window_s : 0.0;
    j["server_cpu_us_per_packet"] = c_.delivered_in_window ? cpu * 1e6 / static_cast<double>(c_.delivered_in_window) : 0.0;
    j["packets_per_server_cpu_s"] = cpu > 0 ? static_cast<double>(c_.delivered_in_window) / cpu : 0.0;
  }
  j["counters"] = counters_json();
  return j;
}

nlohmann::json Loader::run_idle() {
  nlohmann::json j;
  const long rss0 = opt_.server_pid > 0 ? process_rss_kib(opt_.server_pid) : -1;
  connect_all();
  j["connect"] = connect_json();
  for (std::uint32_t i = 0; i < n_; ++i) conns_[i].trim();

  phase_ = Phase::kIdle;
  std::fprintf(stderr, "derp_load: holding %u connections\n", cstats_.ready);
  std::fflush(stderr);
  const std::uint64_t hold_end = now_ns() + static_cast<std::uint64_t>(opt_.hold_s * 1e9);
  for (std::uint64_t t = now_ns(); t < hold_end && !g_interrupted && !g_release_hold; t = now_ns()) {
    poll(std::min<std::uint64_t>(hold_end - t, 100'000'000ull));
  }
  const long rss1 = opt_.server_pid > 0 ? process_rss_kib(opt_.server_pid) : -1;
  j["open_after_hold"] = open_;

  // Verification: disjoint pairs of ready connections send each other one packet, --verify-batch
  // pairs at a time; an odd one out is checked with the first in a last round.
  std::vector<std::uint32_t> ready;
  for (std::uint32_t i = 0; i < n_; ++i)
    if (conns_[i].ready()) ready.push_back(i);
  std::vector<std::vector<std::pair<std::uint32_t, std::uint32_t>>> rounds(1);
  const std::size_t npairs = ready.size() / 2;
  const std::size_t want = opt_.verify_pairs == 0 ? npairs : std::min<std::size_t>(npairs, opt_.verify_pairs);
  const std::size_t batch = opt_.verify_batch == 0 ? want : opt_.verify_batch;
  for (std::size_t k = 0; k < want; ++k) {
    const std::size_t p = want == npairs ? k : k * npairs / want;
    if (rounds.back().size() >= batch) rounds.emplace_back();
    rounds.back().emplace_back(ready[2 * p], ready[2 * p + 1]);
  }
  if (ready.size() % 2 == 1 && want == npairs && ready.size() > 1) {
    rounds.push_back({{ready.back(), ready.front()}});
  }
  phase_ = Phase::kVerify;
  sending_ = true;
  delivered_from_.assign(n_, 0);
  received_at_.assign(n_, 0);
  std::vector<std::uint8_t> checked(n_, 0);
  const auto verify_ns = static_cast<std::uint64_t>(opt_.verify_timeout_s * 1e9);
  const std::uint64_t v0 = now_ns();
  for (const auto& round : rounds) {
    const std::uint64_t t0 = now_ns();
    for (auto [a, b] : round) {
      partner_[a] = b;
      partner_[b] = a;
      checked[a] = checked[b] = 1;
      send_one(a, t0, 1);
      send_one(b, t0, 1);
    }
    for (std::uint64_t t = now_ns(); outstanding_ > 0 && t < t0 + verify_ns && !g_interrupted; t = now_ns()) {
      poll(std::min<std::uint64_t>(t0 + verify_ns - t, kScanNs));
    }
    for (std::uint32_t s = 0; s < n_; ++s) {  // give up on what did not arrive
      Flow& f = flows_[s];
      c_.timeouts += f.next_seq - f.expected;
      f.expected = f.next_seq;
    }
    outstanding_ = 0;
  }
  const double verify_s = static_cast<double>(now_ns() - v0) / 1e9;
  std::uint32_t n_checked = 0, n_ok = 0;
  std::vector<std::uint32_t> bad;
  for (std::uint32_t i = 0; i < n_; ++i) {
    if (!checked[i]) continue;
    ++n_checked;
    if (delivered_from_[i] && received_at_[i]) {
      ++n_ok;
    } else if (bad.size() < 20) {
      bad.push_back(i);
    }
  }
  const long rss2 = opt_.server_pid > 0 ? process_rss_kib(opt_.server_pid) : -1;
  j["verify"] = {{"connections_checked", n_checked}, {"connections_ok", n_ok}, {"seconds", verify_s},
                 {"rounds", rounds.size()},
                 {"first_failed", bad}, {"latency_ms_max", static_cast<double>(hist_.max()) / 1e6}};
  if (opt_.server_pid > 0) {
    j["server_rss_kib"] = {{"before", rss0}, {"after_connect", rss1}, {"after_verify", rss2}};
    j["server_rss_per_conn_bytes"] =
        cstats_.ready > 0 && rss0 >= 0 && rss1 >= 0 ? static_cast<double>(rss1 - rss0) * 1024.0 / cstats_.ready : 0.0;
  }
  j["client_rss_kib"] = process_rss_kib(static_cast<int>(getpid()));
  j["counters"] = counters_json();
  close_all();
  return j;
}

nlohmann::json Loader::run() {
  nlohmann::json j = opt_.mode == Mode::kIdle ? run_idle() : run_load();
  j["mode"] = opt_.mode_text;
  j["target"] = opt_.target.to_string();
  j["tls"] = opt_.tls;
  j["connections"] = n_;
  if (opt_.mode != Mode::kIdle) {
    j["pairs"] = opt_.pairs;
    j["sizes"] = opt_.sizes;
    j["duration_s"] = opt_.duration_s;
    if (opt_.mode == Mode::kClosed) j["window"] = opt_.window;
  }
  j["src_ips"] = opt_.src_ips;
  return j;
}

void print_human(const nlohmann::json& j) {
  const auto& c = j["connect"];
  fmt::print("derp_load {} {} {}: {} connections, {} ready ({} fast start) in {:.2f} s, {} failed {}\n",
             j["mode"].get<std::string>(), j["target"].get<std::string>(), j["tls"].get<bool>() ? "tls" : "plaintext",
             j["connections"].get<std::uint64_t>(), c["ready"].get<std::uint64_t>(), c["fast_start"].get<std::uint64_t>(),
             c["seconds"].get<double>(), c["failed"].get<std::uint64_t>(), c["failed_reasons"].dump());
  if (j.contains("error")) fmt::print("error: {}\n", j["error"].get<std::string>());
  if (j.contains("delivered_per_s")) {
    const auto& l = j["latency_us"];
    fmt::print("delivered {:.0f} pkt/s ({:.1f} Mbit/s) | loss {:.4f}% ({} of {}) | latency p50 {:.1f}us p99 {:.1f}us "
               "p999 {:.1f}us max {:.1f}us\n",
               j["delivered_per_s"].get<double>(), j["delivered_mbit_per_s"].get<double>(),
               j["loss_ratio"].get<double>() * 100, j["lost"].get<std::uint64_t>(), j["sent_measured"].get<std::uint64_t>(),
               l["p50"].get<double>(), l["p99"].get<double>(), l["p999"].get<double>(), l["max"].get<double>());
    if (j.contains("server_cpu_us_per_packet")) {
      fmt::print("server cpu {:.3f} us/packet ({:.0f} pkt per cpu-second, busy {:.0f}%) | client busy {:.0f}%\n",
                 j["server_cpu_us_per_packet"].get<double>(), j["packets_per_server_cpu_s"].get<double>(),
                 j["server_busy"].get<double>() * 100, j["client_busy"].get<double>() * 100);
    }
  }
  if (j.contains("verify")) {
    const auto& v = j["verify"];
    fmt::print("verify: {} of {} connections sent and received\n", v["connections_ok"].get<std::uint64_t>(),
               v["connections_checked"].get<std::uint64_t>());
    if (j.contains("server_rss_per_conn_bytes")) {
      fmt::print("server rss {} -> {} KiB: {:.0f} bytes per connection\n", j["server_rss_kib"]["before"].get<long>(),
                 j["server_rss_kib"]["after_connect"].get<long>(), j["server_rss_per_conn_bytes"].get<double>());
    }
  }
  fmt::print("counters: {}\n", j["counters"].dump());
}

std::optional<std::vector<std::uint32_t>> parse_sizes(const std::string& text) {
  std::vector<std::uint32_t> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(start, comma - start);
    char* end = nullptr;
    errno = 0;
    const unsigned long v = std::strtoul(item.c_str(), &end, 10);
    if (item.empty() || errno != 0 || end == nullptr || *end != '\0' || v < kPayloadMin ||
        v > protocol::kMaxPacketSize) {
      return std::nullopt;
    }
    out.push_back(static_cast<std::uint32_t>(v));
    start = comma + 1;
  }
  if (out.empty() || out.size() > 64) return std::nullopt;
  return out;
}

std::optional<Options> parse_options(int argc, char** argv, int& exit_code) {
  Options o;
  CLI::App app{"DERP relay load generator (loopback targets only)", "derp_load"};
  app.add_option("target", o.target_text, "server address, IP:PORT (127.0.0.0/8 or [::1])")->required();
  app.add_flag("--tls", o.tls, "TLS (any certificate accepted; the DERP handshake checks the server key)");
  app.add_flag("!--no-fast-start", o.fast_start, "never use the meta cert: always wait for 101 + ServerKey");
  app.add_option("-m,--mode", o.mode_text, "closed (window per pair), open (target rate) or idle")
      ->check(CLI::IsMember({"closed", "open", "idle"}));
  app.add_option("-p,--pairs", o.pairs, "closed/open: connection pairs")->check(CLI::Range(1u, kMaxConnections / 2));
  app.add_option("-w,--window", o.window, "closed: packets in flight per direction of a pair")->check(CLI::Range(1u, 4096u));
  app.add_option("-r,--rate", o.rate, "open: packets/s in total")->check(CLI::Range(1.0, 1e8));
  app.add_option("-b,--burst", o.burst, "open: packets a sender sends back to back (bursts at rate / burst per second)")
      ->check(CLI::Range(1u, 1024u));
  app.add_flag("--spin", o.spin, "closed/open: never sleep in epoll while sending (no wake-ups for either side)");
  app.add_option("-s,--size", o.sizes_text, "packet sizes in bytes, comma list used in turn (33..65536)");
  app.add_option("-d,--duration", o.duration_s, "measured seconds (max 120)")->check(CLI::Range(0.1, kMaxDurationS));
  app.add_option("--warmup", o.warmup_s, "seconds of traffic before the measurement")->check(CLI::Range(0.0, 30.0));
  app.add_option("-n,--connections", o.connections, "idle: connections to open")->check(CLI::Range(1u, kMaxConnections));
  app.add_option("--verify-pairs", o.verify_pairs, "idle: pairs checked after the hold (0: every connection)");
  app.add_option("--verify-batch", o.verify_batch, "idle: pairs checked at once (0: all in one burst)");
  app.add_option("--hold", o.hold_s, "idle: seconds to hold the connections (SIGUSR1 ends it early)")
      ->check(CLI::Range(0.0, kMaxHoldS));
  app.add_option("--server-pid", o.server_pid, "read this process's CPU time and VmRSS from /proc")
      ->check(CLI::Range(1, 1 << 30));
  app.add_option("--src-ips", o.src_ips, "spread connections over this many source addresses 127.0.0.1, .2, ... (0: kernel's choice)")
      ->check(CLI::Range(0u, 4096u));
  app.add_option("--concurrency", o.concurrency, "handshakes in progress at once")->check(CLI::Range(1u, 65536u));
  app.add_option("--handshake-timeout", o.handshake_timeout_s, "seconds a connection may take to be ready")
      ->check(CLI::Range(0.1, 120.0));
  app.add_option("--connect-timeout", o.connect_timeout_s, "seconds for the whole connect phase")->check(CLI::Range(1.0, 600.0));
  app.add_option("--loss-timeout", o.loss_timeout_s, "seconds after which packets in flight are lost")
      ->check(CLI::Range(0.01, 60.0));
  app.add_option("--verify-timeout", o.verify_timeout_s, "idle: seconds to wait for the check packets")
      ->check(CLI::Range(0.1, 60.0));
  app.add_option("--cpu", o.cpu, "pin to this CPU")->check(CLI::Range(0, CPU_SETSIZE - 1));
  app.add_flag("--json", o.json, "print one JSON object instead of the human lines");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e);
    return std::nullopt;
  }
  try {
    o.target = loopback_endpoint(o.target_text, "target", "127.0.0.1:3340 or [::1]:3340");
  } catch (const std::invalid_argument& e) {
    fmt::print(stderr, "derp_load: {}\n", e.what());
    exit_code = 2;
    return std::nullopt;
  }
  auto sizes = parse_sizes(o.sizes_text);
  if (!sizes) {
    fmt::print(stderr, "derp_load: bad --size '{}': comma list of {}..{}\n", o.sizes_text, kPayloadMin,
               protocol::kMaxPacketSize);
    exit_code = 2;
    return std::nullopt;
  }
  o.sizes = *sizes;
  o.mode = o.mode_text == "open" ? Mode::kOpen : o.mode_text == "idle" ? Mode::kIdle : Mode::kClosed;
  return o;
}

}  // namespace
}  // namespace derpd::bench

int main(int argc, char** argv) {
  using namespace derpd::bench;
  int exit_code = 0;
  auto opt = parse_options(argc, argv, exit_code);
  if (!opt) return exit_code;
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGUSR1, on_hold_signal);
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);  // open-loop pacing wants precise wake-ups
  try {
    if (opt->cpu >= 0) pin_to_cpu(opt->cpu);
    Loader loader(*opt);
    loader.setup();
    const nlohmann::json j = loader.run();
    if (opt->json) {
      std::puts(j.dump().c_str());
    } else {
      print_human(j);
    }
    return j.contains("error") ? 1 : 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "derp_load: {}\n", e.what());
    return 1;
  }
}
