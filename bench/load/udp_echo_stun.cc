// udp_echo_stun: the reference STUN server for load comparisons, i.e. the kernel cost per datagram.
//
// One thread, one UDP socket: a blocking recvmmsg batch, each Tailscale "tailnode" Binding request
// validated as derper does and answered inline with derper's response (header + XOR-MAPPED-ADDRESS),
// all answers of the batch sent back with one sendmmsg. Anything else is counted and dropped.
// Listens on loopback only; stops on SIGINT/SIGTERM or after --max-seconds.
#include <netinet/in.h>
#include <sched.h>  // CPU_SETSIZE
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fmt/core.h>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/load/load_common.h"
#include "bench/load/stun_wire.h"
#include "relay/base/endpoint.h"

namespace derpd::bench {
namespace {

constexpr std::size_t kRecvBufSize = 2048;

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_signal(int) { g_stop = 1; }

struct Stats {
  std::uint64_t batches = 0;  // recvmmsg calls that returned datagrams
  std::uint64_t received = 0;
  std::uint64_t answered = 0;
  std::uint64_t ignored = 0;  // not a tailnode Binding request, or truncated
  std::uint64_t send_errors = 0;
};

int serve(const Endpoint& listen, unsigned batch, int rcvbuf, unsigned max_seconds) {
  sockaddr_storage addr{};
  const socklen_t addr_len = listen.to_sockaddr(addr);
  const int fd = socket(listen.addr.is_v4() ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fmt::print(stderr, "udp_echo_stun: socket: {}\n", std::strerror(errno));
    return 1;
  }
  // Large enough that a closed-loop client with a few hundred requests in flight is not dropped
  // by the socket; the kernel caps it at net.core.rmem_max.
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  // Wake up once a second to honour the stop flag and the time bound.
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), addr_len) != 0) {
    fmt::print(stderr, "udp_echo_stun: bind {}: {}\n", listen.to_string(), std::strerror(errno));
    close(fd);
    return 1;
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  const auto local = Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&bound), bound_len);
  fmt::print("udp_echo_stun listening on {}\n", local ? local->to_string() : listen.to_string());
  std::fflush(stdout);

  std::vector<std::byte> rbufs(batch * kRecvBufSize);
  std::vector<std::array<std::byte, kMaxDerperResponseSize>> sbufs(batch);
  std::vector<sockaddr_storage> names(batch);
  std::vector<iovec> riovs(batch), siovs(batch);
  std::vector<mmsghdr> rmsgs(batch), smsgs(batch);
  for (std::size_t i = 0; i < batch; ++i) riovs[i] = {rbufs.data() + i * kRecvBufSize, kRecvBufSize};

  Stats st;
  const std::uint64_t stop_at = now_ns() + max_seconds * kNsPerS;
  while (!g_stop && now_ns() < stop_at) {
    for (std::size_t i = 0; i < batch; ++i) {
      rmsgs[i].msg_hdr = {};
      rmsgs[i].msg_hdr.msg_name = &names[i];
      rmsgs[i].msg_hdr.msg_namelen = sizeof names[i];
      rmsgs[i].msg_hdr.msg_iov = &riovs[i];
      rmsgs[i].msg_hdr.msg_iovlen = 1;
    }
    const int n = recvmmsg(fd, rmsgs.data(), batch, MSG_WAITFORONE, nullptr);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      fmt::print(stderr, "udp_echo_stun: recvmmsg: {}\n", std::strerror(errno));
      break;
    }
    ++st.batches;
    unsigned out = 0;
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
      ++st.received;
      const auto& h = rmsgs[i].msg_hdr;
      const auto remote = Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&names[i]), h.msg_namelen);
      std::array<std::byte, 12> id;
      const std::size_t len = std::min<std::size_t>(rmsgs[i].msg_len, kRecvBufSize);
      if ((h.msg_flags & MSG_TRUNC) != 0 || !remote ||
          !parse_tailnode_request(Bytes(rbufs.data() + i * kRecvBufSize, len), id)) {
        ++st.ignored;
        continue;
      }
      const std::size_t size = build_derper_response(id, *remote, sbufs[out]);
      siovs[out] = {sbufs[out].data(), size};
      smsgs[out].msg_hdr = {};
      smsgs[out].msg_hdr.msg_name = &names[i];
      smsgs[out].msg_hdr.msg_namelen = h.msg_namelen;
      smsgs[out].msg_hdr.msg_iov = &siovs[out];
      smsgs[out].msg_hdr.msg_iovlen = 1;
      ++out;
    }
    unsigned sent = 0;
    while (sent < out) {
      const int m = sendmmsg(fd, smsgs.data() + sent, out - sent, 0);
      if (m < 0) {
        if (errno == EINTR) continue;
        ++st.send_errors;  // e.g. ECONNREFUSED from an earlier datagram: skip this one
        ++sent;
        continue;
      }
      sent += static_cast<unsigned>(m);
      st.answered += static_cast<std::uint64_t>(m);
    }
  }
  close(fd);
  fmt::print("udp_echo_stun: received {} answered {} ignored {} send_errors {} mean batch {:.1f}\n", st.received,
             st.answered, st.ignored, st.send_errors,
             st.batches ? static_cast<double>(st.received) / static_cast<double>(st.batches) : 0.0);
  return 0;
}

}  // namespace
}  // namespace derpd::bench

int main(int argc, char** argv) {
  using namespace derpd;
  std::string listen_text = "127.0.0.1:0";
  unsigned batch = 64;
  int rcvbuf = 4 << 20;
  unsigned max_seconds = 600;
  int cpu = -1;
  CLI::App app{"Reference STUN responder: recvmmsg/sendmmsg, derper-format answers (loopback only)", "udp_echo_stun"};
  app.add_option("-l,--listen", listen_text, "IP:PORT to listen on (loopback; port 0 picks one and prints it)");
  app.add_option("-b,--batch", batch, "datagrams per recvmmsg/sendmmsg")->check(CLI::Range(1, 1024));
  app.add_option("--rcvbuf", rcvbuf, "SO_RCVBUF, bytes")->check(CLI::Range(4096, 1 << 28));
  app.add_option("--max-seconds", max_seconds, "exit after this long")->check(CLI::Range(1, 3600));
  app.add_option("--cpu", cpu, "pin to this CPU")->check(CLI::Range(0, CPU_SETSIZE - 1));
  CLI11_PARSE(app, argc, argv);

  Endpoint listen;
  try {
    listen = bench::loopback_endpoint(listen_text, "listen address", "127.0.0.1:0", true);
  } catch (const std::invalid_argument& e) {
    fmt::print(stderr, "udp_echo_stun: {}\n", e.what());
    return 2;
  }
  try {
    if (cpu >= 0) bench::pin_to_cpu(cpu);
  } catch (const std::runtime_error& e) {
    fmt::print(stderr, "udp_echo_stun: {}\n", e.what());
    return 1;
  }
  struct sigaction sa{};
  sa.sa_handler = bench::on_signal;  // no SA_RESTART: a blocked recvmmsg returns EINTR
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  return bench::serve(listen, batch, rcvbuf, max_seconds);
}
