// derpcat's commands. Each returns the process exit code: 0 success, 1 failure (connection,
// timeout, check failed), 2 bad arguments.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include "client/derp/client.h"
#include "tools/derpcat/output.h"

namespace derpcat {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFail = 1;
inline constexpr int kExitUsage = 2;

struct Global {
  std::string url;
  bool insecure = false;
  std::string cert_name;      // "sha256-raw:<hex>" or a certificate name
  std::string ca_file;
  std::string key_file;       // derper key file; empty: throwaway key
  std::string mesh_key_file;  // 64 hex digits
  std::string app_name = "derpcat";
  double connect_timeout_s = 10;
  bool no_fast_start = false;
};

// Client options from the global flags; prints the problem and returns false on bad input.
bool make_options(const Global& g, derpd::derpclient::Options& out, const Output& o);
// Connects and prints the "connected" event (or the error).
std::optional<derpd::derpclient::Client> connect_and_report(const derpd::derpclient::Options& options,
                                                            const Output& o, std::string_view role);
// "connected" fields for a client.
Fields connect_fields(const derpd::derpclient::Client& c);

int cmd_keygen(const std::string& out_path, const Output& o);
int cmd_pubkey(const Global& g, const Output& o);

struct SendArgs {
  std::string to;
  int count = 1;
  std::size_t size = 64;
  std::string data;  // exact payload; default: a numbered filler of `size` bytes
  int interval_ms = 0;
};
int cmd_send(const Global& g, const SendArgs& a, const Output& o);

struct RecvArgs {
  int count = 0;  // 0: until the timeout
  double timeout_s = 30;
  std::string from;  // only packets from this key count
};
int cmd_recv(const Global& g, const RecvArgs& a, const Output& o);

struct PingArgs {
  int count = 3;
  double timeout_s = 5;
  int interval_ms = 200;
};
int cmd_ping(const Global& g, const PingArgs& a, const Output& o);

struct WatchArgs {
  int count = 0;  // 0: until the timeout
  double timeout_s = 10;
};
int cmd_watch(const Global& g, const WatchArgs& a, const Output& o);

struct CheckArgs {
  int count = 5;
  std::size_t size = 256;
  double timeout_s = 5;
  std::string peer_url;  // second client's URL (another node of the region); default: --url
};
int cmd_check(const Global& g, const CheckArgs& a, const Output& o);

// "disconnected", "not_here", ...
std::string_view reason_name(derpd::protocol::PeerGoneReason r);
// Prints Health / Restarting; true for those and for KeepAlive, Ping, Pong (nothing to do).
bool print_side_message(const derpd::derpclient::Message& m, const Output& o);

std::chrono::milliseconds seconds_to_ms(double s);
double to_ms(std::chrono::nanoseconds d);

}  // namespace derpcat
