// Helpers for the config tests: run load() on an argument list, render a Config field by its
// option name, write temporary YAML files.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"

namespace derpd::config::test {

// load() with argv = {"derpd", args...}; the --help/--version text goes to *out.
inline LoadResult load_args(const std::vector<std::string>& args, std::string* out = nullptr) {
  std::vector<const char*> argv{"derpd"};
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream os;
  LoadResult r = load(static_cast<int>(argv.size()), argv.data(), os);
  if (out != nullptr) *out = os.str();
  return r;
}

// The config::Error message load() throws, or "" (and a test failure) when it does not throw.
inline std::string load_error(const std::vector<std::string>& args) {
  try {
    load_args(args);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "load() accepted the arguments";
  return "";
}

inline std::string yaml_error(const std::string& text, const std::string& origin = "derpd.yaml") {
  Config c;
  try {
    apply_yaml(c, text, origin);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "apply_yaml() accepted:\n" << text;
  return "";
}

inline std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

inline std::string join(const std::vector<Endpoint>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x.to_string();
  return s;
}

inline const char* name(CertMode m) {
  switch (m) {
    case CertMode::kLetsEncrypt:
      return "letsencrypt";
    case CertMode::kManual:
      return "manual";
    case CertMode::kDev:
      return "dev";
    case CertMode::kPlaintext:
      return "plaintext";
  }
  return "?";
}

inline const char* name(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

// A Config field as text, by option name (the test's own view of the struct).
inline std::string field(const Config& c, const std::string& key) {
  auto b = [](bool v) { return std::string(v ? "true" : "false"); };
  if (key == "addr") return c.derp_addr.to_string();
  if (key == "derp") return b(c.derp_enabled);
  if (key == "http-port") return std::to_string(c.http_port);
  if (key == "stun") return b(c.stun_enabled);
  if (key == "stun-port") return std::to_string(c.stun_port);
  if (key == "stun-addr") return join(c.stun_addrs);
  if (key == "stun-alt-addr") return c.stun_alt_addr ? c.stun_alt_addr->to_string() : "none";
  if (key == "metrics-addr") return c.metrics_addr.to_string();
  if (key == "hostname") return c.hostname;
  if (key == "certmode") return name(c.certmode);
  if (key == "certdir") return c.certdir;
  if (key == "key-file") return c.key_file;
  if (key == "mesh-with") return join(c.mesh_with);
  if (key == "mesh-psk-file") return c.mesh_psk_file;
  if (key == "verify-client-url") return c.verify_client_url;
  if (key == "verify-client-url-fail-open") return b(c.verify_client_url_fail_open);
  if (key == "bootstrap-dns-names") return join(c.bootstrap_dns_names);
  if (key == "unpublished-bootstrap-dns-names") return join(c.unpublished_bootstrap_dns_names);
  if (key == "home") return c.home;
  if (key == "workers") return std::to_string(c.workers);
  if (key == "max-connections") return std::to_string(c.max_connections);
  if (key == "dev") return b(c.dev);
  if (key == "log-level") return name(c.log_level);
  if (key == "unsupported") return join(c.unsupported);
  ADD_FAILURE() << "test has no field() rendering for key " << key;
  return "";
}

// A file under the test temp dir holding `text`; removed by the destructor.
class TempFile {
 public:
  explicit TempFile(const std::string& text, const std::string& stem = "derpd") {
    static int counter = 0;
    path_ = ::testing::TempDir() + stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".yaml";
    std::ofstream(path_, std::ios::binary) << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace derpd::config::test
