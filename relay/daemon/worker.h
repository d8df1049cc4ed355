// Worker: one thread, one io_uring, its own SO_REUSEPORT sockets and everything they carry.
//
// The plan (socket fds, addresses) is made on the main thread so bind errors are reported before
// anything runs; the ring, buffers and services are built on the worker thread itself (a
// SINGLE_ISSUER ring belongs to the thread that creates it).
#pragma once

#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "relay/base/endpoint.h"
#include "relay/daemon/derp_service.h"
#include "relay/daemon/stun_service.h"
#include "relay/io/loop.h"
#include "stun/responder.h"

namespace derpd::daemon {

struct StunSitePlan {
  stun::ServerAddresses addrs;
  int fds[2][2] = {{-1, -1}, {-1, -1}};  // owned until handed to the worker
  Endpoint bound[2][2];
};

struct WorkerPlan {
  unsigned index = 0;
  std::vector<StunSitePlan> stun_sites;
  // DERP (absent when the relay is off): listening sockets owned until handed to the worker.
  int derp_fd = -1;
  int port80_fd = -1;
  // Slots of the ring's registered-file table for DERP connections (0: descriptors only).
  unsigned file_table_slots = 0;
};

// What every worker's DERP service shares (owned by the daemon, outlives the workers).
struct DerpShared {
  const DerpSettings* settings = nullptr;
  server::Fabric* fabric = nullptr;
  std::vector<int> inbox_fds;                // one eventfd per worker
  std::vector<DerpConnCounters>* counters = nullptr;  // one per worker
  // Filled by each worker once serving (index = worker), for /metrics; read-only for others.
  std::vector<std::atomic<const server::RelayShard*>>* shards = nullptr;
  std::vector<std::atomic<const DerpService*>>* services = nullptr;
  MeshLinks* mesh = nullptr;  // outbound region mesh links, or null
};

class Worker {
 public:
  Worker(WorkerPlan plan, StunCounters& counters, const DerpShared* derp);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Starts the thread; returns "" when it is serving, else why it could not start.
  std::string start();
  // Asks the loop to stop (any thread) and joins.
  void stop();

  unsigned index() const { return plan_.index; }

 private:
  void main(std::promise<std::string> ready);

  WorkerPlan plan_;
  StunCounters& counters_;
  const DerpShared* derp_;
  std::thread thread_;
  std::atomic<io::Loop*> loop_{nullptr};
};

}  // namespace derpd::daemon
