// stun_load: closed-loop STUN Binding load generator (loopback targets only).
//
// N connected UDP sockets (distinct source ports), each keeping W requests in flight. One thread:
// epoll says which sockets are readable, recvmmsg drains a batch from each, every answered slot
// is immediately refilled with a new request, and the refills of a socket go out in one sendmmsg.
//
// Transaction ID layout (12 bytes, big endian):
//   [0..3]  run nonce (random per run: answers to an earlier run never match)
//   [4..7]  slot index (socket * W + k): the slot holds the send timestamp and owning socket
//   [8..11] sequence number (global, increasing): a late answer to a timed-out request no
//           longer matches its slot
// Every matched answer is validated with the stun/ client parser (Binding success,
// XOR-MAPPED-ADDRESS == the socket's own address, FINGERPRINT if present, optionally derper's
// exact form); latency goes into a fixed-size histogram. Nothing on the per-packet path allocates.
#include <sched.h>  // CPU_SETSIZE
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/load/latency_histogram.h"
#include "bench/load/load_common.h"
#include "bench/load/stun_wire.h"
#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"

namespace derpd::bench {
namespace {

constexpr double kMaxDurationS = 120.0;
constexpr std::size_t kRecvBatch = 64;
constexpr std::size_t kRecvBufSize = 2048;
constexpr std::uint64_t kNsPerMs = 1'000'000;
constexpr std::uint64_t kTimeoutScanNs = 5 * kNsPerMs;

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_signal(int) { g_interrupted = 1; }

struct Options {
  std::string target_text;
  Endpoint target;
  double duration_s = 5.0;
  std::uint64_t count = 0;  // 0: no bound other than the duration
  unsigned sockets = 64;
  unsigned window = 4;
  RequestFormat format = RequestFormat::kTailscale;
  bool derper_format = false;
  int cpu = -1;
  double timeout_ms = 250.0;
  int rcvbuf = 1 << 20;
  bool json = false;
};

struct Slot {
  std::uint64_t sent_ns = 0;
  std::uint32_t seq = 0;
  std::uint32_t socket = 0;
  bool outstanding = false;
  std::array<std::byte, kMaxRequestSize> request{};
};

struct Sock {
  int fd = -1;
  Endpoint self;
  std::vector<std::uint32_t> pending;  // slots built but not sent yet; capacity = window, never grows
  bool retry = false;                  // last sendmmsg hit EAGAIN/ENOBUFS
};

struct Counters {
  std::uint64_t sent = 0;
  std::uint64_t issued = 0;
  std::uint64_t responses = 0;  // valid, matched
  std::uint64_t lost = 0;       // timed out, or still unanswered when the run ended
  std::uint64_t unmatched = 0;  // STUN datagrams whose transaction ID is not in flight (late, duplicate)
  std::uint64_t send_errors = 0;
  std::uint64_t recv_errors = 0;
  std::uint64_t refused = 0;  // ECONNREFUSED (ICMP port unreachable): nothing listens on the target
  std::array<std::uint64_t, static_cast<std::size_t>(Verdict::kCount)> invalid{};
  std::uint64_t invalid_total() const {
    std::uint64_t n = 0;
    for (auto v : invalid) n += v;
    return n;
  }
};

class Loader {
 public:
  explicit Loader(const Options& o) : opt_(o) {}
  ~Loader() {
    for (auto& s : socks_)
      if (s.fd >= 0) close(s.fd);
    if (epfd_ >= 0) close(epfd_);
  }
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Start-up: sockets, buffers, nonce. Throws std::runtime_error with the reason.
  void setup();
  void run();
  void report() const;

 private:
  void issue(std::uint32_t slot_index);
  void flush(Sock& s);
  void on_readable(std::uint32_t sock_index);
  void on_datagram(std::uint32_t sock_index, Bytes data, bool truncated, std::uint64_t t);
  void scan_timeouts(std::uint64_t t);
  bool may_issue() const { return running_ && (opt_.count == 0 || counters_.issued < opt_.count); }

  const Options opt_;
  std::vector<Sock> socks_;
  std::vector<Slot> slots_;
  int epfd_ = -1;
  std::array<std::byte, 4> nonce_{};
  std::uint32_t next_seq_ = 1;
  std::size_t request_size_ = 0;
  std::uint64_t outstanding_ = 0;
  bool running_ = true;

  // Batch buffers, shared by all sockets (one thread).
  std::vector<mmsghdr> rmsgs_;
  std::vector<iovec> riovs_;
  std::vector<std::byte> rbufs_;
  std::vector<mmsghdr> smsgs_;
  std::vector<iovec> siovs_;

  LatencyHistogram hist_;
  Counters counters_;
  std::uint64_t start_ns_ = 0;
  std::uint64_t stop_ns_ = 0;
  std::uint64_t last_response_ns_ = 0;
  double cpu_s_ = 0;
};

void Loader::setup() {
  if (getrandom(nonce_.data(), nonce_.size(), 0) != static_cast<ssize_t>(nonce_.size())) {
    throw std::runtime_error(fmt::format("getrandom: {}", std::strerror(errno)));
  }
  {
    std::array<std::byte, kMaxRequestSize> probe{};
    request_size_ = build_request(opt_.format, TxId(), probe);
    if (request_size_ == 0) throw std::runtime_error("cannot build a request of this format");
  }
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw std::runtime_error(fmt::format("epoll_create1: {}", std::strerror(errno)));

  sockaddr_storage dst{};
  const socklen_t dst_len = opt_.target.to_sockaddr(dst);
  const int family = opt_.target.addr.is_v4() ? AF_INET : AF_INET6;
  socks_.resize(opt_.sockets);
  for (std::uint32_t i = 0; i < opt_.sockets; ++i) {
    Sock& s = socks_[i];
    s.fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s.fd < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
    // Best effort: the kernel caps it at net.core.rmem_max.
    setsockopt(s.fd, SOL_SOCKET, SO_RCVBUF, &opt_.rcvbuf, sizeof opt_.rcvbuf);
    if (connect(s.fd, reinterpret_cast<const sockaddr*>(&dst), dst_len) != 0) {
      throw std::runtime_error(fmt::format("connect {}: {}", opt_.target.to_string(), std::strerror(errno)));
    }
    sockaddr_storage self{};
    socklen_t self_len = sizeof self;
    if (getsockname(s.fd, reinterpret_cast<sockaddr*>(&self), &self_len) != 0) {
      throw std::runtime_error(fmt::format("getsockname: {}", std::strerror(errno)));
    }
    auto ep = Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&self), self_len);
    if (!ep) throw std::runtime_error("getsockname returned an unknown address family");
    s.self = *ep;
    s.pending.reserve(opt_.window);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = i;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, s.fd, &ev) != 0) {
      throw std::runtime_error(fmt::format("epoll_ctl: {}", std::strerror(errno)));
    }
  }

  slots_.resize(static_cast<std::size_t>(opt_.sockets) * opt_.window);
  for (std::size_t i = 0; i < slots_.size(); ++i) slots_[i].socket = static_cast<std::uint32_t>(i / opt_.window);

  rmsgs_.resize(kRecvBatch);
  riovs_.resize(kRecvBatch);
  rbufs_.resize(kRecvBatch * kRecvBufSize);
  for (std::size_t i = 0; i < kRecvBatch; ++i) {
    riovs_[i] = {rbufs_.data() + i * kRecvBufSize, kRecvBufSize};
    rmsgs_[i].msg_hdr = {};
    rmsgs_[i].msg_hdr.msg_iov = &riovs_[i];
    rmsgs_[i].msg_hdr.msg_iovlen = 1;
  }
  smsgs_.resize(opt_.window);
  siovs_.resize(opt_.window);
}

void Loader::issue(std::uint32_t slot_index) {
  Slot& slot = slots_[slot_index];
  slot.seq = next_seq_++;
  std::array<std::byte, TxId::kSize> id;
  std::memcpy(id.data(), nonce_.data(), 4);
  store_be32(id.data() + 4, slot_index);
  store_be32(id.data() + 8, slot.seq);
  (void)build_request(opt_.format, TxId::from_bytes(id), slot.request);
  socks_[slot.socket].pending.push_back(slot_index);
  ++counters_.issued;
}

void Loader::flush(Sock& s) {
  while (!s.pending.empty()) {
    const std::size_t m = s.pending.size();
    for (std::size_t i = 0; i < m; ++i) {
      siovs_[i] = {slots_[s.pending[i]].request.data(), request_size_};
      smsgs_[i].msg_hdr = {};
      smsgs_[i].msg_hdr.msg_iov = &siovs_[i];
      smsgs_[i].msg_hdr.msg_iovlen = 1;
    }
    const std::uint64_t t = now_ns();
    const int n = sendmmsg(s.fd, smsgs_.data(), static_cast<unsigned>(m), MSG_DONTWAIT);
    std::size_t done = 0;
    if (n > 0) {
      done = static_cast<std::size_t>(n);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
      s.retry = true;
      return;
    } else if (errno == EINTR) {
      continue;
    } else {
      // The first datagram is given up: it counts as sent and will time out as lost.
      if (errno == ECONNREFUSED) {
        ++counters_.refused;
      } else {
        ++counters_.send_errors;
      }
      done = 1;
    }
    for (std::size_t i = 0; i < done; ++i) {
      Slot& slot = slots_[s.pending[i]];
      slot.sent_ns = t;
      slot.outstanding = true;
    }
    counters_.sent += done;
    outstanding_ += done;
    s.pending.erase(s.pending.begin(), s.pending.begin() + static_cast<std::ptrdiff_t>(done));
  }
  s.retry = false;
}

void Loader::on_datagram(std::uint32_t sock_index, Bytes data, bool truncated, std::uint64_t t) {
  TxId tx;
  if (!peek_txid(data, tx)) {
    ++counters_.invalid[static_cast<std::size_t>(Verdict::kNotStun)];
    return;
  }
  const std::byte* id = tx.id().data();
  const std::uint32_t slot_index = load_be32(id + 4);
  const std::uint32_t seq = load_be32(id + 8);
  if (std::memcmp(id, nonce_.data(), 4) != 0 || slot_index >= slots_.size()) {
    ++counters_.unmatched;
    return;
  }
  Slot& slot = slots_[slot_index];
  if (!slot.outstanding || slot.seq != seq || slot.socket != sock_index) {
    ++counters_.unmatched;
    return;
  }
  const Verdict v = truncated ? Verdict::kTruncated : check_response(data, socks_[sock_index].self, {opt_.derper_format});
  if (v == Verdict::kOk) {
    hist_.record(t - slot.sent_ns);
    ++counters_.responses;
    last_response_ns_ = t;
  } else {
    ++counters_.invalid[static_cast<std::size_t>(v)];
  }
  slot.outstanding = false;
  --outstanding_;
  if (may_issue()) issue(slot_index);
}

void Loader::on_readable(std::uint32_t sock_index) {
  Sock& s = socks_[sock_index];
  const int n = recvmmsg(s.fd, rmsgs_.data(), kRecvBatch, MSG_DONTWAIT, nullptr);
  if (n < 0) {
    if (errno == ECONNREFUSED) {
      ++counters_.refused;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      ++counters_.recv_errors;
    }
    return;
  }
  const std::uint64_t t = now_ns();
  for (int i = 0; i < n; ++i) {
    const auto& h = rmsgs_[static_cast<std::size_t>(i)];
    const bool truncated = (h.msg_hdr.msg_flags & MSG_TRUNC) != 0;
    const std::size_t len = std::min<std::size_t>(h.msg_len, kRecvBufSize);
    on_datagram(sock_index, Bytes(rbufs_.data() + static_cast<std::size_t>(i) * kRecvBufSize, len), truncated, t);
  }
  flush(s);
}

void Loader::scan_timeouts(std::uint64_t t) {
  const auto timeout_ns = static_cast<std::uint64_t>(opt_.timeout_ms * 1e6);
  for (std::uint32_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[i];
    if (!slot.outstanding || t - slot.sent_ns < timeout_ns) continue;
    slot.outstanding = false;
    --outstanding_;
    ++counters_.lost;
    if (may_issue()) issue(i);
  }
}

void Loader::run() {
  const double cpu0 = own_cpu_seconds();
  start_ns_ = now_ns();
  const std::uint64_t deadline = start_ns_ + static_cast<std::uint64_t>(opt_.duration_s * 1e9);
  const auto timeout_ns = static_cast<std::uint64_t>(opt_.timeout_ms * 1e6);
  std::uint64_t drain_deadline = 0;
  std::uint64_t next_scan = start_ns_ + kTimeoutScanNs;

  for (std::uint32_t i = 0; i < slots_.size() && may_issue(); ++i) issue(i);
  for (auto& s : socks_) flush(s);

  std::array<epoll_event, 64> events{};
  for (;;) {
    std::uint64_t t = now_ns();
    if (running_ && (t >= deadline || g_interrupted || (opt_.count != 0 && counters_.issued >= opt_.count))) {
      running_ = false;
      stop_ns_ = t;
      drain_deadline = t + timeout_ns;
    }
    bool any_pending = false;
    for (auto& s : socks_) any_pending = any_pending || !s.pending.empty();
    if (!running_ && ((outstanding_ == 0 && !any_pending) || t >= drain_deadline)) break;
    if (t >= next_scan) {
      scan_timeouts(t);
      next_scan = t + kTimeoutScanNs;
    }
    bool retrying = false;
    for (auto& s : socks_) {
      if (s.retry || !s.pending.empty()) flush(s);
      retrying = retrying || s.retry;
    }
    const std::uint64_t until = std::min(running_ ? deadline : drain_deadline, next_scan);
    int wait_ms = retrying ? 0 : static_cast<int>((until > t ? until - t : 0) / kNsPerMs) + 1;
    const int n = epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), wait_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(fmt::format("epoll_wait: {}", std::strerror(errno)));
    }
    for (int i = 0; i < n; ++i) on_readable(events[static_cast<std::size_t>(i)].data.u32);
  }
  if (stop_ns_ == 0) stop_ns_ = now_ns();
  counters_.lost += outstanding_;
  outstanding_ = 0;
  cpu_s_ = own_cpu_seconds() - cpu0;
}

void Loader::report() const {
  const std::uint64_t end_ns = std::max(stop_ns_, last_response_ns_);
  const double elapsed = static_cast<double>(end_ns - start_ns_) / 1e9;
  const double rate = elapsed > 0 ? static_cast<double>(counters_.responses) / elapsed : 0.0;
  const double loss = counters_.sent ? static_cast<double>(counters_.lost) / static_cast<double>(counters_.sent) : 0.0;
  auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1e3; };
  const double p50 = us(hist_.percentile(0.50));
  const double p99 = us(hist_.percentile(0.99));
  const double p999 = us(hist_.percentile(0.999));
  const double client_us_per_resp = counters_.responses ? cpu_s_ * 1e6 / static_cast<double>(counters_.responses) : 0.0;

  if (opt_.json) {
    nlohmann::json j;
    j["target"] = opt_.target.to_string();
    j["format"] = std::string(to_string(opt_.format));
    j["derper_format_check"] = opt_.derper_format;
    j["sockets"] = opt_.sockets;
    j["window"] = opt_.window;
    j["duration_s"] = opt_.duration_s;
    j["elapsed_s"] = elapsed;
    j["sent"] = counters_.sent;
    j["responses"] = counters_.responses;
    j["responses_per_s"] = rate;
    j["lost"] = counters_.lost;
    j["loss_ratio"] = loss;
    j["unmatched"] = counters_.unmatched;
    j["invalid"] = counters_.invalid_total();
    nlohmann::json reasons = nlohmann::json::object();
    for (std::size_t i = 1; i < counters_.invalid.size(); ++i) {
      reasons[std::string(to_string(static_cast<Verdict>(i)))] = counters_.invalid[i];
    }
    j["invalid_reasons"] = reasons;
    j["send_errors"] = counters_.send_errors;
    j["recv_errors"] = counters_.recv_errors;
    j["refused"] = counters_.refused;
    j["latency_us"] = {{"p50", p50}, {"p99", p99}, {"p999", p999}, {"mean", hist_.mean() / 1e3}, {"max", us(hist_.max())}};
    j["client_cpu_s"] = cpu_s_;
    j["client_cpu_us_per_response"] = client_us_per_resp;
    std::puts(j.dump().c_str());
  } else {
    fmt::print(
        "stun_load {} {} {}x{}: {:.0f} resp/s | sent {} resp {} invalid {} lost {} ({:.3f}%) unmatched {} | "
        "latency p50 {:.1f}us p99 {:.1f}us p999 {:.1f}us | {:.2f} s, client cpu {:.2f} us/resp\n",
        opt_.target.to_string(), to_string(opt_.format), opt_.sockets, opt_.window, rate, counters_.sent,
        counters_.responses, counters_.invalid_total(), counters_.lost, loss * 100, counters_.unmatched, p50, p99, p999,
        elapsed, client_us_per_resp);
    if (counters_.invalid_total() != 0) {
      std::string why;
      for (std::size_t i = 1; i < counters_.invalid.size(); ++i) {
        if (counters_.invalid[i] != 0) why += fmt::format(" {}={}", to_string(static_cast<Verdict>(i)), counters_.invalid[i]);
      }
      fmt::print("invalid responses:{}\n", why);
    }
    if (counters_.refused + counters_.send_errors + counters_.recv_errors != 0) {
      fmt::print("errors: refused {} send {} recv {}\n", counters_.refused, counters_.send_errors, counters_.recv_errors);
    }
  }
}

std::optional<Options> parse_options(int argc, char** argv, int& exit_code) {
  Options o;
  std::string format = "tailscale";
  CLI::App app{"Closed-loop STUN Binding load generator (loopback targets only)", "stun_load"};
  app.add_option("target", o.target_text, "server address, IP:PORT (127.0.0.0/8 or [::1])")->required();
  app.add_option("-d,--duration", o.duration_s, "seconds to run (max 120)")->check(CLI::Range(0.001, kMaxDurationS));
  app.add_option("-n,--count", o.count, "stop after this many requests (0: only the duration bounds the run)");
  app.add_option("-s,--sockets", o.sockets, "UDP sockets, each its own source port")->check(CLI::Range(1, 1024));
  app.add_option("-w,--window", o.window, "requests in flight per socket")->check(CLI::Range(1, 1024));
  app.add_option("-f,--format", format, "request form: tailscale (SOFTWARE tailnode + FINGERPRINT), rfc8489 (FINGERPRINT), bare")
      ->check(CLI::IsMember({"tailscale", "rfc8489", "bare"}));
  app.add_flag("--derper-format", o.derper_format, "require derper's exact response: header + one XOR-MAPPED-ADDRESS");
  app.add_option("--cpu", o.cpu, "pin to this CPU")->check(CLI::Range(0, CPU_SETSIZE - 1));
  app.add_option("--timeout-ms", o.timeout_ms, "a request unanswered this long is lost and its slot reused")
      ->check(CLI::Range(1.0, 10000.0));
  app.add_option("--rcvbuf", o.rcvbuf, "SO_RCVBUF per socket, bytes")->check(CLI::Range(4096, 1 << 28));
  app.add_flag("--json", o.json, "print one JSON object instead of the human line");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e);
    return std::nullopt;
  }
  try {
    o.target = loopback_endpoint(o.target_text, "target", "127.0.0.1:3478 or [::1]:3478");
  } catch (const std::invalid_argument& e) {
    fmt::print(stderr, "stun_load: {}\n", e.what());
    exit_code = 2;
    return std::nullopt;
  }
  o.format = format == "rfc8489" ? RequestFormat::kRfc8489 : format == "bare" ? RequestFormat::kBare : RequestFormat::kTailscale;
  if (static_cast<std::uint64_t>(o.sockets) * o.window > (1u << 20)) {
    fmt::print(stderr, "stun_load: sockets x window must be at most {}\n", 1u << 20);
    exit_code = 2;
    return std::nullopt;
  }
  return o;
}

}  // namespace
}  // namespace derpd::bench

int main(int argc, char** argv) {
  using namespace derpd::bench;
  int exit_code = 0;
  auto opt = parse_options(argc, argv, exit_code);
  if (!opt) return exit_code;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  try {
    if (opt->cpu >= 0) pin_to_cpu(opt->cpu);
    Loader loader(*opt);
    loader.setup();
    loader.run();
    loader.report();
  } catch (const std::exception& e) {
    fmt::print(stderr, "stun_load: {}\n", e.what());
    return 1;
  }
  return 0;
}
