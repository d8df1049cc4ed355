#include "relay/daemon/derp_setup.h"

#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "relay/daemon/node_key.h"
#include "relay/daemon/port_probe.h"
#include "relay/io/tcp_listener.h"
#include "relay/tls/certs.h"

namespace derpd::daemon {

namespace {

std::string read_small_file(const std::string& path) {
  auto text = tls::read_pem_file(path, "mesh key file");  // same bounded regular-file read
  if (!text) throw std::runtime_error(text.error());
  return *text;
}

int listen_tcp(Endpoint& addr) {
  int err = 0;
  auto fd = io::open_tcp_listener(addr, 4096, err);
  if (!fd) throw std::runtime_error(fmt::format("cannot listen on tcp {}: {}", addr.to_string(), std::strerror(err)));
  if (addr.port == 0)
    if (auto e = io::local_endpoint(*fd)) addr.port = e->port;
  return *fd;
}

// io_uring's bound on one ring's table of registered files (IORING_MAX_FIXED_FILES).
constexpr std::uint64_t kMaxRegisteredFiles = 1u << 20;

// Raise the soft limit to the hard one, and return it.
std::uint64_t raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

}  // namespace

DerpSetup::DerpSetup(const config::Config& cfg, unsigned workers)
    : counters_(workers), shards_(workers), services_(workers) {
  if (!protocol::crypto_init()) throw std::runtime_error("libsodium failed to initialise");
  // Each worker's ring keeps its connections' sockets in a table of registered files (up to
  // RLIMIT_NOFILE slots per ring), so a connection needs a process descriptor only while it is
  // being accepted, or when the table is full. Connections beyond table + descriptor share are
  // accepted and closed at once (counted as refused) rather than left unaccepted in the kernel's
  // queue, where clients would hang.
  if (cfg.max_connections > 0)
    settings_.max_connections = std::max<std::uint32_t>(1, (cfg.max_connections + workers - 1) / workers);
  const std::uint64_t nofile = raise_fd_limit();
  const std::uint64_t reserve = 64 + 16 * std::uint64_t{workers};
  const std::uint64_t fd_share = nofile > reserve + workers ? (nofile - reserve) / workers : 1;
  file_table_slots_ = static_cast<unsigned>(
      std::min<std::uint64_t>({nofile, kMaxRegisteredFiles, std::uint64_t{settings_.max_connections}}));
  settings_.max_connections = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(settings_.max_connections, file_table_slots_ + fd_share));
  spdlog::info("connection limit {} per worker ({} registered sockets + {} descriptors; descriptor limit {})",
               settings_.max_connections, file_table_slots_, fd_share, nofile);

  LoadedKey key = load_or_create_node_key(cfg.key_file);
  settings_.server_private = key.key;
  settings_.server_public = key.key.public_key();
  if (key.created) spdlog::info("created node key {}", cfg.key_file);
  spdlog::info("node key {}", settings_.server_public.to_string());

  if (!cfg.mesh_psk_file.empty()) {
    auto mk = protocol::MeshKey::parse(read_small_file(cfg.mesh_psk_file));
    if (!mk) throw std::runtime_error(fmt::format("mesh key file {}: must hold 64 hex characters", cfg.mesh_psk_file));
    settings_.mesh_key = *mk;
  } else if (const char* env = std::getenv("TAILSCALE_DERPER_MESH_KEY"); env != nullptr && *env != '\0') {
    auto mk = protocol::MeshKey::parse(env);
    if (!mk) throw std::runtime_error("TAILSCALE_DERPER_MESH_KEY: must hold 64 hex characters");
    settings_.mesh_key = *mk;
  }

  BootstrapDnsOptions bo;
  bo.published = cfg.bootstrap_dns_names;
  bo.unpublished = cfg.unpublished_bootstrap_dns_names;
  bootstrap_ = std::make_unique<BootstrapDns>(std::move(bo));
  settings_.bootstrap_dns = bootstrap_.get();

  settings_.site.server_key_hex = std::string(settings_.server_public.to_string().substr(8));
  settings_.site.derp_enabled = true;
  settings_.site.home = cfg.home;

  if (config::serves_tls(cfg)) {
    tls::TlsSettings ts;
    ts.hostname = cfg.hostname;
    std::memcpy(ts.server_public_key.data(), settings_.server_public.data(), ts.server_public_key.size());
    if (cfg.certmode == config::CertMode::kLetsEncrypt) {
      throw std::runtime_error(
          "-certmode letsencrypt needs a built-in ACME client, which derpd does not have yet: get a certificate "
          "with any ACME client and use -certmode manual -certdir DIR (files <hostname>.crt and <hostname>.key)");
    }
    auto [crt, key_path] = config::manual_cert_paths(cfg);
    if (cfg.certmode == config::CertMode::kDev) {
      // A self-signed certificate, kept in certdir when one is given so the pin stays stable.
      Result<tls::SelfSignedCert, std::string> cert =
          cfg.certdir.empty() ? tls::generate_self_signed(cfg.hostname, std::time(nullptr))
                              : tls::load_or_create_self_signed(crt, key_path, cfg.hostname);
      if (!cert) throw std::runtime_error(cert.error());
      auto ctx = tls::TlsContext::from_pem(ts, cert->cert_pem, cert->key_pem);
      if (!ctx) throw std::runtime_error(ctx.error());
      tls_ = std::move(ctx).value();
    } else {
      auto ctx = tls::TlsContext::from_files(ts, crt, key_path);
      if (!ctx) throw std::runtime_error(ctx.error());
      tls_ = std::move(ctx).value();
    }
    settings_.tls = tls_.get();
  }

  // Each ordered worker pair has a ring; a burst to a client on another worker must fit in it, as
  // derper's 32-packet client queue would hold it (derpprobe sends 30 x 64 KiB in flight). 64 MiB
  // of rings in all, 512 KiB .. 4 MiB each; pages are touched only as a ring is used.
  const std::size_t pairs = std::size_t{workers} * (workers > 1 ? workers - 1 : 1);
  const std::size_t ring_bytes = std::clamp<std::size_t>((64u << 20) / pairs, 512u << 10, 4u << 20);
  fabric_ = std::make_unique<server::Fabric>(static_cast<std::uint16_t>(workers), ring_bytes);
  for (unsigned w = 0; w < workers; ++w) {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) throw std::runtime_error("eventfd failed");
    shared_.inbox_fds.push_back(fd);
  }

  bound_ = cfg.derp_addr;
  Endpoint http80{cfg.derp_addr.addr, 0};
  const bool want80 = settings_.tls != nullptr && cfg.http_port > 0;
  // Before the first SO_REUSEPORT bind: is someone else already serving these ports?
  if (std::string busy = probe_port_free(bound_, SOCK_STREAM); !busy.empty()) throw std::runtime_error(busy);
  if (want80) {
    http80.port = static_cast<std::uint16_t>(cfg.http_port);
    if (std::string busy = probe_port_free(http80, SOCK_STREAM); !busy.empty()) throw std::runtime_error(busy);
  }
  for (unsigned w = 0; w < workers; ++w) {
    derp_fds_.push_back(listen_tcp(bound_));
    if (want80) {
      http80.port = static_cast<std::uint16_t>(cfg.http_port);
      port80_fds_.push_back(listen_tcp(http80));
      port80_ = cfg.http_port;
    }
  }

  if (!cfg.verify_client_url.empty()) {
    admission_ = std::make_unique<AdmissionClient>(cfg.verify_client_url, cfg.verify_client_url_fail_open, workers);
    settings_.admission = admission_.get();
    spdlog::info("admission controller {} (fail {})", cfg.verify_client_url,
                 cfg.verify_client_url_fail_open ? "open" : "closed");
  }
  if (!cfg.mesh_with.empty()) {
    MeshOptions mo = mesh_options_from_config(cfg, settings_.server_private, settings_.mesh_key,
                                              settings_.tls != nullptr, bound_.port, workers);
    for (const auto& t : mo.targets) spdlog::info("mesh: will dial {} ({})", t.entry, t.url);
    mesh_ = std::make_unique<MeshLinks>(std::move(mo));
    shared_.mesh = mesh_.get();
  }

  shared_.settings = &settings_;
  shared_.fabric = fabric_.get();
  shared_.counters = &counters_;
  shared_.shards = &shards_;
  shared_.services = &services_;
}

DerpSetup::~DerpSetup() {
  for (int fd : derp_fds_)
    if (fd >= 0) close(fd);
  for (int fd : port80_fds_)
    if (fd >= 0) close(fd);
  for (int fd : shared_.inbox_fds) close(fd);
}

void DerpSetup::hand_over(WorkerPlan& plan) {
  plan.derp_fd = std::exchange(derp_fds_[plan.index], -1);
  plan.file_table_slots = file_table_slots_;
  if (plan.index < port80_fds_.size()) plan.port80_fd = std::exchange(port80_fds_[plan.index], -1);
}

std::string DerpSetup::derp_map_json(const config::Config& cfg, int stun_port) const {
  nlohmann::json node = {{"Name", "900a"},      {"RegionID", 900}, {"HostName", cfg.hostname},
                         {"DERPPort", bound_.port}, {"STUNPort", cfg.stun_enabled ? stun_port : -1}};
  if (auto ip = IpAddr::parse(cfg.hostname)) node[ip->is_v4() ? "IPv4" : "IPv6"] = cfg.hostname;
  if (tls_ != nullptr && cfg.certmode == config::CertMode::kDev) node["CertName"] = tls_->current()->cert_name();
  if (tls_ == nullptr) node["InsecureForTests"] = true;
  nlohmann::json region = {{"RegionID", 900}, {"RegionCode", "derpd"}, {"RegionName", "derpd"},
                           {"Nodes", nlohmann::json::array({node})}};
  return nlohmann::json{{"Regions", {{"900", region}}}}.dump();
}

}  // namespace derpd::daemon
