// Start-up of the DERP side: node key, TLS context, listening sockets for every worker, the
// cross-worker fabric and inbox eventfds. Runs on the main thread before any worker starts;
// throws std::runtime_error with a message naming what failed.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "relay/daemon/admission.h"
#include "relay/daemon/bootstrap_dns.h"
#include "relay/daemon/mesh_links.h"
#include "relay/daemon/derp_service.h"
#include "relay/daemon/worker.h"
#include "relay/server/cross_worker.h"
#include "relay/tls/tls_context.h"

namespace derpd::daemon {

class DerpSetup {
 public:
  DerpSetup(const config::Config& cfg, unsigned workers);
  ~DerpSetup();
  DerpSetup(const DerpSetup&) = delete;
  DerpSetup& operator=(const DerpSetup&) = delete;

  // Moves worker w's listening sockets into its plan.
  void hand_over(WorkerPlan& plan);
  const DerpShared& shared() const { return shared_; }
  const DerpSettings& settings() const { return settings_; }
  tls::TlsContext* tls() const { return tls_.get(); }
  const Endpoint& bound() const { return bound_; }
  int http_port() const { return port80_; }
  // The DERP map fragment for this node, for the start-up log.
  std::string derp_map_json(const config::Config& cfg, int stun_port) const;
  std::vector<std::atomic<const server::RelayShard*>>& shards() { return shards_; }
  std::vector<DerpConnCounters>& conn_counters() { return counters_; }
  std::vector<std::atomic<const DerpService*>>& services() { return services_; }
  BootstrapDns& bootstrap_dns() { return *bootstrap_; }
  MeshLinks* mesh() { return mesh_.get(); }
  AdmissionClient* admission() { return admission_.get(); }

 private:
  DerpSettings settings_;
  std::unique_ptr<tls::TlsContext> tls_;
  std::unique_ptr<server::Fabric> fabric_;
  std::vector<DerpConnCounters> counters_;
  std::vector<std::atomic<const server::RelayShard*>> shards_;
  std::vector<std::atomic<const DerpService*>> services_;
  std::unique_ptr<BootstrapDns> bootstrap_;
  std::unique_ptr<AdmissionClient> admission_;
  std::unique_ptr<MeshLinks> mesh_;
  std::vector<int> derp_fds_, port80_fds_;
  DerpShared shared_;
  Endpoint bound_;
  int port80_ = -1;
  unsigned file_table_slots_ = 0;
};

}  // namespace derpd::daemon
