// derpd configuration: the immutable settings the daemon starts with.
//
// Sources, lowest precedence first: built-in defaults, the YAML file (--config FILE), command-line
// flags. Every YAML key is also a flag of the same name (`stun-port: 3478` <-> `--stun-port 3478`),
// and Tailscale derper's flags are accepted with their names and meanings (`-a`, `-http-port`,
// `-stun`, `-stun-port`, `-hostname`, `-certmode`, `-certdir`, `-c`, `-dev`, ...), with one or two
// dashes and `=` or a space. Loading happens once at start-up and reports problems by throwing
// config::Error whose message names the key (and the file line for YAML).
//
// Flags always win over the file, whatever their position on the command line. `-dev` (or
// `dev: true`) changes the defaults (see Config::dev), and anything given explicitly still wins.
// The list of options lives in one place, config/options.cc.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "relay/base/endpoint.h"

namespace derpd::config {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class CertMode : std::uint8_t {
  kLetsEncrypt,  // derper's default; accepted, reported as not supported (no ACME client)
  kManual,       // <certdir>/<hostname>.crt and .key
  kDev,          // self-signed certificate generated at start-up (IP hostnames); CertName printed
  kPlaintext,    // no TLS at all (development, or a TLS-terminating proxy in front)
};

enum class LogLevel : std::uint8_t { kDebug, kInfo, kWarn, kError };

struct Config {
  // --- where things listen ---------------------------------------------------------------
  // DERP/HTTP(S) listen address (derper -a). ":443" means all IPv4 interfaces.
  Endpoint derp_addr{IpAddr::any(Family::V4), 443};
  bool derp_enabled = true;   // -derp
  int http_port = 80;         // -http-port; port-80 listener (generate_204 + redirect); -1 = off
  bool stun_enabled = true;   // -stun
  int stun_port = 3478;       // -stun-port; used when stun_addrs is empty: derp_addr's IP + this port
  // --stun-addr IP:PORT (repeatable, at most one per address family). Empty = derived as above.
  std::vector<Endpoint> stun_addrs;
  // --stun-alt-addr IP:PORT: the RFC 5780 alternate (other IP and other port). With it derpd
  // listens on both IPs x both ports of that family. Its family must match one stun_addrs entry.
  std::optional<Endpoint> stun_alt_addr;
  Endpoint metrics_addr{IpAddr::loopback(Family::V4), 9100};  // --metrics-addr; port 0 = off

  // --- identity and TLS ------------------------------------------------------------------
  std::string hostname = "derp.tailscale.com";  // -hostname (derper's default)
  CertMode certmode = CertMode::kLetsEncrypt;   // -certmode letsencrypt|manual|dev|plaintext
  std::string certdir;                          // -certdir
  std::string key_file = "/var/lib/derpd/derper.key";  // -c / -key-file (derper's JSON key file); "" = throwaway key

  // --- region mesh and admission (later issues) -----------------------------------------
  std::vector<std::string> mesh_with;  // -mesh-with (comma-separated in flags, list in YAML)
  std::string mesh_psk_file;           // -mesh-psk-file
  std::string verify_client_url;       // -verify-client-url
  bool verify_client_url_fail_open = true;  // -verify-client-url-fail-open
  std::vector<std::string> bootstrap_dns_names;              // -bootstrap-dns-names
  std::vector<std::string> unpublished_bootstrap_dns_names;  // -unpublished-bootstrap-dns-names
  std::string home;  // -home: "", "blank", or a URL to redirect / to

  // --- runtime ---------------------------------------------------------------------------
  unsigned workers = 0;  // --workers; 0 = one per online CPU; at most kMaxWorkers
  // --max-connections: DERP connections the node holds at most, split evenly over the workers;
  // 0 = what the descriptor limit and the io_uring file tables allow (at most 100,000 per worker).
  std::uint32_t max_connections = 0;
  // -dev: the defaults become plaintext DERP on 127.0.0.1:3340 (certmode plaintext), STUN on
  // 127.0.0.1:3478 (derived), http-port -1, metrics on 127.0.0.1:9100 and an empty key_file
  // (throwaway key). Explicit -a, --stun-addr, -certmode, ... still win.
  bool dev = false;
  LogLevel log_level = LogLevel::kInfo;  // --log-level debug|info|warn|error

  // Flags that were given but whose feature derpd does not have yet: each is logged at start-up
  // as "not yet supported" (never silently ignored). Filled by load(), as "-name=value" (secret
  // values as "-name=(redacted)"). Also holds "-certmode=letsencrypt" (or gcp) when DERP would be
  // served over TLS with a certificate mode that needs an ACME client.
  std::vector<std::string> unsupported;
};

inline constexpr unsigned kMaxWorkers = 1024;
inline constexpr std::uint32_t kMaxConnectionsLimit = 100'000'000;

struct LoadResult {
  Config config;
  bool exit_now = false;  // --help or --version was handled (text already printed)
  int exit_code = 0;
};

// Parses argv (including --config FILE), applies YAML then flags over the defaults, validates.
// Throws config::Error with a message naming the key/flag (and "FILE:LINE" for YAML).
// --help and --version print to `out` (std::cout for the first overload) and set exit_now.
LoadResult load(int argc, const char* const* argv);
LoadResult load(int argc, const char* const* argv, std::ostream& out);

// Parses a YAML document into cfg, then checks the cross-field rules (finalize). `origin` names
// the source in error messages, e.g. the file path. A document that sets `dev: true` switches
// cfg to the dev defaults first, as load() does.
void apply_yaml(Config& cfg, const std::string& yaml_text, const std::string& origin);

// Cross-field rules (STUN address families, alternate address, certmode manual needs certdir,
// port clashes) and the ACME notice in cfg.unsupported. load() and apply_yaml() call it; call it
// yourself after building a Config by hand. Throws config::Error.
void finalize(Config& cfg);

// The embedded development configuration `tools/run` uses, as YAML text (dev: true and friends).
std::string_view dev_yaml();

// Usage text printed by --help: every flag, derper compatibility notes and the YAML format.
std::string usage();

// "0.1.0": the CMake project version.
std::string_view version();

// --- derived values the daemon uses ---------------------------------------------------------

// The UDP addresses STUN binds: empty when STUN is off; cfg.stun_addrs when given; otherwise
// derp_addr's IP with stun_port (as derper: "binds to the same IP as -a"; a wildcard IPv4 -a such
// as ":443" means both 0.0.0.0 and [::], as derper's dual-stack ":3478"). The RFC 5780 alternate
// (cfg.stun_alt_addr) is not included.
std::vector<Endpoint> effective_stun_addrs(const Config& cfg);

// Whether the DERP listener speaks TLS, with derper's rule: certmode manual or dev always,
// plaintext never, letsencrypt only when the -a port is 443.
bool serves_tls(const Config& cfg);

// certmode manual: derper's file names <certdir>/<hostname>.crt and .key, where characters
// outside [A-Za-z0-9.-] are dropped from the hostname. Returns {cert path, key path}.
std::pair<std::string, std::string> manual_cert_paths(const Config& cfg);

}  // namespace derpd::config
