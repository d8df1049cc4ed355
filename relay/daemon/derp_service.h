// DerpService: one worker's DERP/HTTP(S) listener, its connections and its relay shard.
//
// A connection's bytes flow: TCP (io::TcpConnection) -> TLS (tls::TlsConnection, unless plaintext)
// -> HTTP request heads (http::route) -> after the /derp upgrade, DERP frames (FrameReader) ->
// the handshake (ServerKey, ClientInfo, ServerInfo) -> server::RelayShard. What the shard decides
// to send is pulled per connection, encrypted, and written with one send in flight.
//
// Cross-worker: every worker's shard shares one server::Fabric. When a shard posts messages to
// other workers they are woken through their inbox eventfd; each worker drains its inbox on that
// wake-up and on a periodic tick.
//
// Everything here is owned by the worker thread, except the counters (relaxed atomics).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <optional>

#include "relay/base/counter.h"
#include "relay/daemon/admission.h"
#include "relay/daemon/bootstrap_dns.h"
#include "relay/daemon/mesh_links.h"
#include "relay/http/site.h"
#include "relay/io/loop.h"
#include "relay/io/tcp_connection.h"
#include "relay/io/tcp_context.h"
#include "relay/io/tcp_listener.h"
#include "relay/protocol/frame.h"
#include "relay/protocol/key.h"
#include "relay/server/relay_shard.h"
#include "relay/tls/tls_connection.h"
#include "relay/tls/tls_context.h"

namespace derpd::daemon {

// Read-only settings shared by every worker (immutable after start-up).
struct DerpSettings {
  protocol::NodePrivate server_private;
  protocol::NodePublic server_public;
  protocol::MeshKey mesh_key;        // zero = no mesh
  http::SiteConfig site;
  tls::TlsContext* tls = nullptr;    // null: plaintext DERP
  const BootstrapDns* bootstrap_dns = nullptr;  // /bootstrap-dns answers
  AdmissionClient* admission = nullptr;          // -verify-client-url; null: admit everyone
  std::uint32_t max_connections = 100'000;  // per worker
  io::Nanos handshake_timeout = std::chrono::seconds(10);
  io::Nanos http_idle_timeout = std::chrono::seconds(30);
};

// Per-connection lifecycle counters not kept by the shard.
struct DerpConnCounters {
  RelaxedCounter http_requests;
  RelaxedCounter upgrades;
  RelaxedCounter websocket_upgrades;
  RelaxedCounter tls_errors;
  RelaxedCounter handshake_errors;   // bad ClientInfo, wrong first frame
  RelaxedCounter protocol_errors;    // a frame the parser refused after registration
  RelaxedCounter timeouts;           // handshake or write deadline passed
};

class DerpService final : public io::AcceptSink, public io::Handler {
 public:
  // `listen_fds`: this worker's listening sockets (DERP port first; with `port80_fd` the plain
  // HTTP redirect port). `inbox_fds[w]`: every worker's inbox eventfd (this one's is read here).
  // `mesh`: this worker's end of the outbound region mesh links, or null.
  DerpService(io::Loop& loop, io::TcpContext& tcp, const DerpSettings& settings, server::Fabric& fabric,
              server::WorkerId worker, int listen_fd, int port80_fd, std::vector<int> inbox_fds,
              DerpConnCounters& counters, MeshBridge* mesh = nullptr);
  ~DerpService();
  DerpService(const DerpService&) = delete;
  DerpService& operator=(const DerpService&) = delete;

  void start();
  // Closes the listeners and every connection (shutdown).
  void stop();

  const server::RelayShard& shard() const { return shard_; }
  // For /metrics (relaxed counters, readable from any thread while the service lives).
  const io::TcpListener* listener() const { return listener_.get(); }
  const io::TcpListener* port80_listener() const { return port80_.get(); }
  const io::TcpCounters& tcp_counters() const { return tcp_.counters(); }

 private:
  struct Conn;
  friend struct Conn;

  void on_accept(io::TcpListener& l, int fd) override;
  void on_completion(const io::UserData& ud, const io::Completion& c) override;
  void on_timer(std::uint16_t cookie) override;

  // After anything that may have produced shard output.
  void flush_outputs();
  void pump(Conn& c);
  void arm_inbox();
  void arm_mesh();
  void arm_admission();
  void on_admission_results();
  void remove(Conn& c);
  Conn* conn_for(server::ClientId id);

  io::Loop& loop_;
  io::TcpContext& tcp_;
  const DerpSettings& settings_;
  http::SiteConfig site80_;  // the plain-HTTP port's routes (redirects to https)
  std::optional<BootstrapDns::Reader> bootstrap_;
  server::RelayShard shard_;
  server::WorkerId worker_;
  std::unique_ptr<io::TcpListener> listener_;
  std::unique_ptr<io::TcpListener> port80_;
  std::vector<int> inbox_fds_;
  std::uint64_t inbox_buf_ = 0;
  std::uint64_t mesh_buf_ = 0;
  std::uint64_t admission_buf_ = 0;
  MeshBridge* mesh_ = nullptr;
  std::vector<AdmissionResult> admission_results_;
  std::uint32_t next_serial_ = 1;
  std::uint32_t slot_;
  DerpConnCounters& counters_;
  server::ShardOutputs outputs_;
  std::vector<std::unique_ptr<Conn>> conns_;     // index = Conn::index
  std::vector<std::uint32_t> free_conns_;
  std::vector<Conn*> by_client_slot_;           // shard ClientId.slot -> connection
  std::vector<std::uint32_t> registering_;      // connections waiting to send ServerInfo
  std::vector<server::ClientId> resume_;        // flush_outputs(): held frames let go this round
  std::unique_ptr<std::byte[]> scratch_;        // plaintext staging, kScratch bytes
  bool stopping_ = false;
};

}  // namespace derpd::daemon
