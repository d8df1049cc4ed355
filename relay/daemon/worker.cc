#include "relay/daemon/worker.h"

#include <pthread.h>
#include <unistd.h>

#include <exception>

#include "relay/io/buf_ring.h"
#include "relay/io/udp_socket.h"
#include "relay/io/uring.h"

namespace derpd::daemon {

namespace {
constexpr std::uint16_t kStunBufferGroup = 1;
constexpr std::uint32_t kStunBuffers = 2048;
constexpr std::uint32_t kStunBufferSize = 2048;
// TCP receive buffers are shared by every connection of the worker (provided buffers): an idle
// connection holds none.
constexpr std::uint16_t kTcpBufferGroup = 2;
constexpr std::uint32_t kTcpBuffers = 1024;
constexpr std::uint32_t kTcpBufferSize = 16 * 1024;
}  // namespace

Worker::Worker(WorkerPlan plan, StunCounters& counters, const DerpShared* derp)
    : plan_(std::move(plan)), counters_(counters), derp_(derp) {}

Worker::~Worker() {
  stop();
  for (auto& site : plan_.stun_sites)
    for (auto& row : site.fds)
      for (int& fd : row)
        if (fd >= 0) {
          ::close(fd);
          fd = -1;
        }
}

std::string Worker::start() {
  std::promise<std::string> ready;
  auto fut = ready.get_future();
  thread_ = std::thread([this, p = std::move(ready)]() mutable { main(std::move(p)); });
  return fut.get();
}

void Worker::stop() {
  if (io::Loop* l = loop_.load(std::memory_order_acquire)) l->stop();
  if (thread_.joinable()) thread_.join();
}

void Worker::main(std::promise<std::string> ready) {
  std::string name = "derpd-w" + std::to_string(plan_.index);
  pthread_setname_np(pthread_self(), name.c_str());
  try {
    io::UringRing ring(io::RingOptions{});
    io::MonotonicClock clock;
    io::Loop loop(ring, clock);
    io::BufRing stun_buffers(kStunBufferGroup, kStunBuffers, kStunBufferSize);
    if (int rc = ring.register_buf_ring(stun_buffers); rc < 0)
      throw std::runtime_error("register provided buffers: " + std::string(strerror(-rc)));

    StunService stun(counters_);
    std::vector<std::unique_ptr<io::UdpSocket>> sockets;
    for (auto& plan : plan_.stun_sites) {
      StunSite site;
      site.addrs = plan.addrs;
      for (int ip = 0; ip < 2; ++ip)
        for (int port = 0; port < 2; ++port) {
          if (plan.fds[ip][port] < 0) continue;
          sockets.push_back(std::make_unique<io::UdpSocket>(loop, plan.fds[ip][port], plan.bound[ip][port],
                                                            stun_buffers, stun, counters_.udp));
          plan.fds[ip][port] = -1;  // the socket owns it now
          site.sockets[ip][port] = sockets.back().get();
        }
      stun.add_site(site);
    }
    for (auto& s : sockets) s->start();

    std::unique_ptr<io::BufRing> tcp_buffers;
    std::unique_ptr<io::TcpContext> tcp;
    std::unique_ptr<DerpService> derp;
    if (derp_ != nullptr && plan_.derp_fd >= 0) {
      tcp_buffers = std::make_unique<io::BufRing>(kTcpBufferGroup, kTcpBuffers, kTcpBufferSize);
      if (int rc = ring.register_buf_ring(*tcp_buffers); rc < 0)
        throw std::runtime_error("register TCP buffers: " + std::string(strerror(-rc)));
      tcp = std::make_unique<io::TcpContext>(loop, *tcp_buffers);
      if (plan_.file_table_slots > 0) {
        if (int rc = ring.register_file_table(plan_.file_table_slots); rc < 0)
          throw std::runtime_error("register a table of " + std::to_string(plan_.file_table_slots) +
                                   " sockets with io_uring: " + std::string(strerror(-rc)));
        tcp->use_file_table(plan_.file_table_slots);
      }
      derp = std::make_unique<DerpService>(loop, *tcp, *derp_->settings, *derp_->fabric,
                                           static_cast<server::WorkerId>(plan_.index), plan_.derp_fd,
                                           plan_.port80_fd, derp_->inbox_fds, (*derp_->counters)[plan_.index],
                                           derp_->mesh != nullptr ? derp_->mesh->bridge(plan_.index) : nullptr);
      plan_.derp_fd = plan_.port80_fd = -1;  // the listeners own them now
      derp->start();
      (*derp_->shards)[plan_.index].store(&derp->shard(), std::memory_order_release);
      (*derp_->services)[plan_.index].store(derp.get(), std::memory_order_release);
    }

    loop_.store(&loop, std::memory_order_release);
    ready.set_value("");
    loop.run();
    loop_.store(nullptr, std::memory_order_release);
    if (derp) {
      (*derp_->shards)[plan_.index].store(nullptr, std::memory_order_release);
      (*derp_->services)[plan_.index].store(nullptr, std::memory_order_release);
      derp->stop();
      // Let the kernel confirm the cancellations so buffers and slots are released in order.
      for (int i = 0; i < 10; ++i) loop.run_once(std::chrono::milliseconds(10));
    }

    derp.reset();
    tcp.reset();
    for (auto& s : sockets) {
      s->close();
    }
  } catch (const std::exception& e) {
    loop_.store(nullptr, std::memory_order_release);
    try {
      ready.set_value(e.what());
    } catch (const std::future_error&) {
      // already reported ready; the error happened while shutting down
    }
  }
}

}  // namespace derpd::daemon
