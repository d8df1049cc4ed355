// derpcat: a DERP client on the command line, for checking a relay region and for tests.
//
//   derpcat --url https://derp.example.com/derp check
//   derpcat --url http://127.0.0.1:3340/derp --key me.json recv --count 1
//   derpcat --url ... send --to nodekey:<hex> --count 3 --size 100
//   derpcat --url ... ping --count 5
//   derpcat keygen --out me.json ; derpcat --key me.json pubkey
#include <CLI/CLI.hpp>

#include "tools/derpcat/commands.h"

#ifndef DERPCAT_VERSION
#define DERPCAT_VERSION "dev"
#endif

int main(int argc, char** argv) {
  using namespace derpcat;
  CLI::App app{"derpcat: connect to a DERP relay, send/receive packets, ping it, check it"};
  app.set_version_flag("--version", DERPCAT_VERSION);
  app.require_subcommand(1);

  Global g;
  bool json = false;
  app.add_option("--url", g.url, "DERP server URL, e.g. https://derp.example.com/derp");
  app.add_flag("--insecure", g.insecure, "do not verify the server certificate (tests only)");
  app.add_option("--cert-name", g.cert_name,
                 "expected certificate: sha256-raw:<hex> pin (as in a DERP map's CertName) or a host name");
  app.add_option("--ca-file", g.ca_file, "PEM trust anchors instead of the system roots");
  app.add_option("--key", g.key_file, "our node key, in derper's JSON key file form (default: throwaway key)");
  app.add_option("--mesh-key-file", g.mesh_key_file, "region mesh key file (64 hex digits)");
  app.add_option("--app-name", g.app_name, "AppName told to the server");
  app.add_option("--connect-timeout", g.connect_timeout_s, "seconds for dial + TLS + upgrade + login")
      ->check(CLI::PositiveNumber);
  app.add_flag("--no-fast-start", g.no_fast_start, "always wait for the server's HTTP 101 and key");
  app.add_flag("--json", json, "one JSON object per line");

  std::string keygen_out;
  auto* keygen = app.add_subcommand("keygen", "print a new node key in derper's key file form (or write it)");
  keygen->add_option("--out", keygen_out, "write the key to this file (mode 0600; must not exist)");

  auto* pubkey = app.add_subcommand("pubkey", "print the public key of --key");

  SendArgs send_args;
  auto* send = app.add_subcommand("send", "send packets to a peer through the relay");
  send->add_option("--to", send_args.to, "destination nodekey:<hex>")->required();
  send->add_option("--count", send_args.count, "packets to send")->check(CLI::Range(1, 1000000));
  send->add_option("--size", send_args.size, "packet size in bytes (default filler content)");
  send->add_option("--data", send_args.data, "exact packet content");
  send->add_option("--interval-ms", send_args.interval_ms, "pause between packets")->check(CLI::Range(0, 3600000));

  RecvArgs recv_args;
  auto* recv = app.add_subcommand("recv", "print packets that arrive for our key");
  recv->add_option("--count", recv_args.count, "stop after this many packets (0: until the timeout)")
      ->check(CLI::NonNegativeNumber);
  recv->add_option("--timeout", recv_args.timeout_s, "seconds to listen (0: forever)")->check(CLI::NonNegativeNumber);
  recv->add_option("--from", recv_args.from, "only count packets from this nodekey:<hex>");

  PingArgs ping_args;
  auto* ping = app.add_subcommand("ping", "round-trip DERP pings to the server");
  ping->add_option("--count", ping_args.count, "pings")->check(CLI::Range(1, 1000000));
  ping->add_option("--timeout", ping_args.timeout_s, "seconds to wait for each pong")->check(CLI::PositiveNumber);
  ping->add_option("--interval-ms", ping_args.interval_ms, "pause between pings")->check(CLI::Range(0, 3600000));

  WatchArgs watch_args;
  auto* watch = app.add_subcommand("watch", "mesh: print PeerPresent/PeerGone for the server's clients");
  watch->add_option("--count", watch_args.count, "stop after this many events (0: until the timeout)")
      ->check(CLI::NonNegativeNumber);
  watch->add_option("--timeout", watch_args.timeout_s, "seconds to watch")->check(CLI::PositiveNumber);

  CheckArgs check_args;
  auto* check = app.add_subcommand("check", "two clients through the relay: packets both ways, RTT, PeerGone; pass/fail");
  check->add_option("--count", check_args.count, "round trips each way")->check(CLI::Range(1, 10000));
  check->add_option("--size", check_args.size, "packet size in bytes");
  check->add_option("--timeout", check_args.timeout_s, "seconds for each step")->check(CLI::PositiveNumber);
  check->add_option("--peer-url", check_args.peer_url, "URL for the second client (another node of the region)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  const Output out(json);
  const bool needs_url = !keygen->parsed() && !pubkey->parsed();
  if (needs_url && g.url.empty()) {
    out.error("usage", "--url is required for this command");
    return kExitUsage;
  }
  if (keygen->parsed()) return cmd_keygen(keygen_out, out);
  if (pubkey->parsed()) return cmd_pubkey(g, out);
  if (send->parsed()) return cmd_send(g, send_args, out);
  if (recv->parsed()) return cmd_recv(g, recv_args, out);
  if (ping->parsed()) return cmd_ping(g, ping_args, out);
  if (watch->parsed()) return cmd_watch(g, watch_args, out);
  if (check->parsed()) return cmd_check(g, check_args, out);
  return kExitUsage;
}
