// natprobe: how does the NAT in front of this host behave, and would a direct UDP path work
// between two hosts? Thin CLI over client/probe (sockets, test sequence), client/nat (classifier,
// JSON report, comparison) and tools/natprobe/report_text.h (human output).
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "client/nat/classifier.h"
#include "client/nat/compare.h"
#include "client/nat/report_json.h"
#include "client/probe/portmap.h"
#include "client/probe/prober.h"
#include "client/probe/servers.h"
#include "client/probe/udp_transport.h"
#include "tools/natprobe/inputs.h"
#include "tools/natprobe/report_text.h"

#ifndef NATPROBE_VERSION
#define NATPROBE_VERSION "dev"
#endif

namespace {

using namespace derpd;

constexpr int kExitVerdict = 0;
constexpr int kExitNoUdp = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInput = 3;

constexpr const char* kFooter = R"(Servers: --server, --servers-file and --derp-map may be combined; at most 64 are probed.
Port mapping (NAT-PMP, PCP, UPnP IGD) is asked of the IPv4 default gateway only, unless --no-portmap.

Exit codes:
  0  a verdict was produced (compare: a comparison was printed)
  1  no STUN server answered (UDP blocked, or every server unreachable or unresolvable)
  2  usage or configuration error (bad option or --server, no server given)
  3  input file error (servers file, DERP map, or a report given to compare: unreadable or invalid)

Examples:
  natprobe --server stun1.example.org --server stun2.example.org:3479
  natprobe --derp-map derpmap.json --json > here.json
  natprobe compare here.json there.json)";

void warn(const std::string& msg) { fmt::print(stderr, "natprobe: {}\n", msg); }

struct Options {
  std::vector<std::string> servers;
  std::string servers_file;
  std::string derp_map;
  bool json = false;
  bool hairpin = false;
  bool no_portmap = false;
  bool only4 = false;
  bool only6 = false;
  bool quiet = false;
  int rto_ms = 100;
  int tries = 4;
  int time_limit_ms = 3000;
  std::vector<std::string> reports;  // compare
};

// Collects server specs from every source; returns an exit code on failure.
int collect_servers(const Options& o, std::vector<probe::ServerSpec>& specs) {
  for (const auto& s : o.servers) {
    auto spec = probe::parse_server_spec(s);
    if (!spec) {
      warn(fmt::format("--server \"{}\": {}", s, probe::to_string(spec.error())));
      return kExitUsage;
    }
    specs.push_back(std::move(*spec));
  }
  if (!o.servers_file.empty()) {
    std::string text, error;
    if (!natprobe::read_file_capped(o.servers_file, probe::kMaxServerFileBytes, text, error)) {
      warn(error);
      return kExitInput;
    }
    auto list = probe::parse_server_list(text);
    if (!list.errors.empty()) {
      for (const auto& e : list.errors) warn(fmt::format("{}:{}: {}", o.servers_file, e.line, e.message));
      return kExitInput;
    }
    if (list.servers.empty()) {
      warn(fmt::format("{}: no server in the file", o.servers_file));
      return kExitInput;
    }
    for (auto& s : list.servers) specs.push_back(std::move(s));
  }
  if (!o.derp_map.empty()) {
    std::string text, error;
    const bool ok = natprobe::is_url(o.derp_map) ? natprobe::fetch_url(o.derp_map, probe::kMaxDerpMapBytes, text, error)
                                       : natprobe::read_file_capped(o.derp_map, probe::kMaxDerpMapBytes, text, error);
    if (!ok) {
      warn(error);
      return kExitInput;
    }
    auto map = probe::parse_derp_map(text);
    if (!map) {
      warn(fmt::format("{}: {}", o.derp_map, map.error().message()));
      return kExitInput;
    }
    for (const auto& w : map->warnings) warn(fmt::format("{}: skipped {}", o.derp_map, w));
    for (auto& s : map->servers) specs.push_back(std::move(s));
  }
  return kExitVerdict;
}

int run_probe_command(const Options& o) {
  std::vector<probe::ServerSpec> specs;
  if (const int rc = collect_servers(o, specs); rc != kExitVerdict) return rc;
  if (specs.empty()) {
    warn("no STUN server given: use --server HOST[:PORT], --servers-file FILE or --derp-map FILE|URL");
    return kExitUsage;
  }
  const bool want4 = !o.only6;
  const bool want6 = !o.only4;
  auto resolved = probe::resolve_servers(specs, want4, want6);
  for (const auto& w : resolved.warnings) warn(w);
  if (resolved.targets.empty()) {
    warn("no server address to probe: nothing was sent");
    return kExitNoUdp;
  }

  natprobe::RunDetails details;
  probe::ProbeOptions popts;
  popts.schedule.rto = std::chrono::milliseconds(o.rto_ms);
  popts.schedule.max_sends = o.tries;
  popts.time_limit = std::chrono::milliseconds(o.time_limit_ms);
  popts.ipv4 = want4;
  popts.ipv6 = want6;
  popts.hairpin = o.hairpin;
  if (o.no_portmap || !want4) {
    details.port_mapping = natprobe::PortMapScope::kDisabled;
  } else {
    std::string routes, error;
    std::optional<IpAddr> gw;
    if (natprobe::read_file_capped("/proc/net/route", 1 << 20, routes, error)) {
      gw = probe::default_gateway_from_route_table(routes);
    }
    details.port_mapping = gw ? natprobe::PortMapScope::kProbed : natprobe::PortMapScope::kNoGateway;
    details.gateway = gw;
    popts.gateway = gw;
  }

  const bool show_progress = !o.quiet && ::isatty(STDERR_FILENO) == 1;
  if (show_progress) {
    popts.on_progress = [n = resolved.targets.size()](const probe::Progress& p) {
      fmt::print(stderr, "\rnatprobe: probing {} server{}: {}/{} tests done ", n, n == 1 ? "" : "s", p.finished,
                 p.started);
      std::fflush(stderr);
    };
  }

  probe::UdpTransport net;
  const probe::ProbeReport report = probe::run_probe(net, resolved.targets, popts);
  if (show_progress) {
    fmt::print(stderr, "\r\033[K");
    std::fflush(stderr);
  }
  const nat::Verdict verdict = nat::classify(report.observations);
  details.probe = &report;
  if (o.json) {
    fmt::print("{}\n", nat::to_json_text(verdict));
  } else {
    fmt::print("{}", natprobe::format_verdict(verdict, details));
  }
  std::fflush(stdout);
  return verdict.primary().udp ? kExitVerdict : kExitNoUdp;
}

int run_compare_command(const Options& o) {
  std::vector<nat::Verdict> verdicts;
  for (const auto& path : o.reports) {
    std::string text, error;
    if (!natprobe::read_file_capped(path, nat::kMaxReportBytes, text, error)) {
      warn(error);
      return kExitInput;
    }
    auto v = nat::verdict_from_json(text);
    if (!v) {
      warn(fmt::format("{}: not a natprobe report: {}", path, v.error().message()));
      return kExitInput;
    }
    verdicts.push_back(std::move(*v));
  }
  const nat::CompareResult r = nat::compare(verdicts[0], verdicts[1]);
  if (o.json) {
    fmt::print("{}\n", nat::to_json_text(r));
  } else {
    fmt::print("{}", natprobe::format_compare(r, verdicts[0], verdicts[1], o.reports[0], o.reports[1]));
  }
  std::fflush(stdout);
  return kExitVerdict;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"natprobe: classify the NAT in front of this host (RFC 4787 / RFC 5780) with STUN, or\n"
               "compare two hosts' reports to tell whether a direct UDP path should work.",
               "natprobe"};
  app.set_version_flag("--version", "natprobe " NATPROBE_VERSION);
  app.footer(kFooter);
  app.add_option("-s,--server", o.servers, "STUN server (repeatable; default port 3478)")->type_name("HOST[:PORT]");
  app.add_option("--servers-file", o.servers_file, "file with one HOST[:PORT] per line; # starts a comment")
      ->type_name("FILE");
  app.add_option("--derp-map", o.derp_map, "Tailscale-format DERP map: STUN ports of its nodes (URL fetched over http(s))")
      ->type_name("FILE|URL");
  app.add_flag("--json", o.json, "print the JSON report (schema 1, client/nat/SCHEMA.md) instead of text");
  app.add_flag("--hairpin", o.hairpin, "also test hairpinning (a packet to our own public address)");
  app.add_flag("--no-portmap", o.no_portmap, "do not ask the default gateway about NAT-PMP, PCP or UPnP");
  auto* f4 = app.add_flag("-4,--ipv4-only", o.only4, "probe over IPv4 only");
  auto* f6 = app.add_flag("-6,--ipv6-only", o.only6, "probe over IPv6 only");
  f4->excludes(f6);
  app.add_flag("-q,--quiet", o.quiet, "no progress line on stderr (it is shown only on a terminal anyway)");
  app.add_option("--rto", o.rto_ms, "initial retransmission timeout in ms, doubled per resend")
      ->capture_default_str()
      ->check(CLI::Range(10, 5000));
  app.add_option("--tries", o.tries, "sends per request before it counts as unanswered")
      ->capture_default_str()
      ->check(CLI::Range(1, 10));
  app.add_option("--time-limit", o.time_limit_ms, "hard bound on the probe in ms")
      ->capture_default_str()
      ->check(CLI::Range(100, 60000));

  auto* cmp = app.add_subcommand("compare", "compare two --json reports: would a direct UDP path work between them?");
  cmp->add_option("reports", o.reports, "the two reports (A.json B.json)")->expected(2)->required()->type_name("FILE");
  cmp->fallthrough();
  app.require_subcommand(0, 1);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }
  if (cmp->parsed()) return run_compare_command(o);
  return run_probe_command(o);
}
