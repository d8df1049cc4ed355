// derpd configuration: the immutable settings the daemon starts with.
//
// Sources, lowest precedence first: built-in defaults, the YAML file (--config FILE), command-line
// flags. Every YAML key is also a flag of the same name (`stun-port: 3478` <-> `--stun-port 3478`),
// and Tailscale derper's flags are accepted with their names and meanings (`-a`, `-http-port`,
// `-stun`, `-stun-port`, `-hostname`, `-certmode`, `-certdir`, `-c`, `-dev`, ...), with one or two
// dashes and `=` or a space. Loading happens once at start-up and reports problems by throwing
// config::Error whose message names the key (and the file line for YAML).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
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
  std::string key_file = "/var/lib/derpd/derper.key";  // -c (derper's JSON key file form)

  // --- region mesh and admission (later issues) -----------------------------------------
  std::vector<std::string> mesh_with;  // -mesh-with (comma-separated in flags, list in YAML)
  std::string mesh_psk_file;           // -mesh-psk-file
  std::string verify_client_url;       // -verify-client-url
  bool verify_client_url_fail_open = true;  // -verify-client-url-fail-open
  std::vector<std::string> bootstrap_dns_names;              // -bootstrap-dns-names
  std::vector<std::string> unpublished_bootstrap_dns_names;  // -unpublished-bootstrap-dns-names
  std::string home;  // -home: "", "blank", or a URL to redirect / to

  // --- runtime ---------------------------------------------------------------------------
  unsigned workers = 0;  // --workers; 0 = one per online CPU
  bool dev = false;      // -dev: plaintext DERP on 127.0.0.1:3340, STUN 127.0.0.1:3478, throwaway key
  LogLevel log_level = LogLevel::kInfo;  // --log-level debug|info|warn|error

  // Flags that were given but whose feature derpd does not have yet: each is logged at start-up
  // as "not yet supported" (never silently ignored). Filled by load().
  std::vector<std::string> unsupported;
};

struct LoadResult {
  Config config;
  bool exit_now = false;  // --help or --version was handled (text already printed)
  int exit_code = 0;
};

// Parses argv (including --config FILE), applies YAML then flags over the defaults, validates.
// Throws config::Error with a message naming the key/flag (and "FILE:LINE" for YAML).
LoadResult load(int argc, const char* const* argv);

// Parses a YAML document into cfg (used by load(); exposed for tests). `origin` names the source
// in error messages, e.g. the file path.
void apply_yaml(Config& cfg, const std::string& yaml_text, const std::string& origin);

// The embedded default configuration `tools/run` and `--dev` use, as YAML text.
std::string_view dev_yaml();

}  // namespace derpd::config
