// Command line -> Settings.
//
// derper uses Go's flag package: one or two dashes, "-name=value" or "-name value", and boolean
// flags that take no separate word ("-stun=false", never "-stun false"). CLI11 does not speak
// that dialect, so a small normaliser first rewrites every flag into the canonical pair
// "--long-name" "value" (resolving the aliases -a and -c and checking boolean values); CLI11 then
// collects the values per option and renders --help from the same option table.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <map>

#include "config/options.h"

namespace derpd::config::detail {
namespace {

struct Normalised {
  std::vector<std::string> args;                  // "--name", "value", ... for CLI11
  std::map<const Option*, std::string> spelled;   // the flag as the user wrote it: "-a", "--hostname"
  bool help = false;
};

[[noreturn]] void unexpected_argument(std::string_view arg, const std::string& prev_bool_flag) {
  if (!prev_bool_flag.empty()) {
    throw Error(fmt::format("unexpected argument {}: a boolean flag takes its value after \"=\" ({}={})", show(arg),
                            prev_bool_flag, arg));
  }
  throw Error(fmt::format("unexpected argument {} (derpd takes only flags; see --help)", show(arg)));
}

Normalised normalise(int argc, const char* const* argv) {
  Normalised n;
  std::string prev_bool_flag;  // a boolean flag given without "=", for a better message
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i] != nullptr ? argv[i] : "";
    if (arg == "--") {  // Go: end of flags. derpd takes no positional arguments.
      if (i + 1 < argc) unexpected_argument(argv[i + 1] != nullptr ? argv[i + 1] : "", "");
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') unexpected_argument(arg, prev_bool_flag);
    prev_bool_flag.clear();

    std::size_t dashes = arg[1] == '-' ? 2 : 1;
    std::string_view body = arg.substr(dashes);
    std::size_t eq = body.find('=');
    std::string_view name = body.substr(0, eq);
    if (name.empty() || name[0] == '-') throw Error(fmt::format("bad flag syntax: {}", show(arg)));
    std::string spelled = fmt::format("{}{}", arg.substr(0, dashes), name);

    const Option* o = find_flag(name);
    if (o == nullptr) throw Error(fmt::format("unknown flag {} (see --help)", spelled));

    std::string value;
    if (o->kind == ValueKind::kNone) {  // --help: like Go, print usage at once
      if (eq != std::string_view::npos) throw Error(fmt::format("flag {} takes no value", spelled));
      n.help = true;
      return n;
    }
    if (o->kind == ValueKind::kBool) {
      if (eq == std::string_view::npos) {
        value = "true";
        prev_bool_flag = spelled;
      } else {
        try {
          value = parse_bool(body.substr(eq + 1)) ? "true" : "false";
        } catch (const BadValue& e) {
          throw Error(fmt::format("flag {}: {}", spelled, e.what()));
        }
      }
    } else if (eq != std::string_view::npos) {
      value = body.substr(eq + 1);
    } else {
      if (i + 1 >= argc || argv[i + 1] == nullptr) throw Error(fmt::format("flag {} needs a value", spelled));
      value = argv[++i];
    }
    n.args.push_back(fmt::format("--{}", o->name));
    n.args.push_back(std::move(value));
    n.spelled[o] = std::move(spelled);
  }
  return n;
}

constexpr std::string_view kGroupSettings = "Settings (each is also a YAML key of the same name)";
constexpr std::string_view kGroupCommands = "Commands";
constexpr std::string_view kGroupUnsupported =
    "derper flags accepted for compatibility but not implemented (logged at start-up)";

constexpr std::string_view kFooter = R"(Flags take one or two dashes and "=VALUE" or " VALUE": -a :443, --a=:443,
-certmode manual. Boolean flags are written -flag or -flag=false, never "-flag false".
List flags are comma-separated (-mesh-with a,b); --stun-addr is repeated, once per address.

Configuration file (--config FILE) in YAML: one mapping whose keys are the long names above.
  hostname: derp.example.com
  certmode: manual
  certdir: /etc/derpd/certs
  stun-addr: ["192.0.2.10:3478", "[2001:db8::10]:3478"]
  mesh-with: [derp1.example.com, derp2.example.com]
  workers: 0
Flags win over the file, wherever they appear on the command line. The commented example
derpd.yaml shipped with derpd lists every key.)";

// One CLI11 option per table row, each collecting its text values in results[row].
void describe_options(CLI::App& app, std::vector<std::vector<std::string>>& results) {
  app.footer(std::string(kFooter));
  app.get_formatter()->column_width(40);
  auto table = options();
  results.assign(table.size(), {});
  for (std::size_t i = 0; i < table.size(); ++i) {
    const Option& o = table[i];
    std::string names = o.alias.empty() ? fmt::format("--{}", o.name) : fmt::format("-{},--{}", o.alias, o.name);
    if (o.kind == ValueKind::kNone) {
      app.set_help_flag(names, std::string(o.help))->group(std::string(kGroupCommands));
      continue;
    }
    std::string_view group = o.scope == Scope::kSetting   ? kGroupSettings
                             : o.scope == Scope::kCommand ? kGroupCommands
                                                          : kGroupUnsupported;
    app.add_option(names, results[i], std::string(o.help))
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
        ->type_name(o.kind == ValueKind::kBool ? "[=BOOL]" : std::string(o.type_name))
        ->group(std::string(group));
  }
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string_view item(text.data() + start, comma - start);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (!item.empty()) out.emplace_back(item);
    start = comma + 1;
  }
  return out;
}

CLI::App make_app() {
  return CLI::App("derpd: a DERP relay and STUN server, compatible with Tailscale's derper.", "derpd");
}

}  // namespace

CommandLine parse_command_line(int argc, const char* const* argv) {
  CommandLine cl;
  Normalised n = normalise(argc, argv);
  if (n.help) {
    cl.help = true;
    return cl;
  }

  CLI::App app = make_app();
  std::vector<std::vector<std::string>> results;
  describe_options(app, results);
  std::vector<std::string> reversed(n.args.rbegin(), n.args.rend());  // CLI11 consumes from the back
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    throw Error(fmt::format("command line: {}", e.what()));
  }

  auto table = options();
  for (std::size_t i = 0; i < table.size(); ++i) {
    const Option& o = table[i];
    const auto& got = results[i];
    if (got.empty()) continue;
    if (o.scope == Scope::kCommand) {
      if (o.name == "config") cl.config_path = got.back();
      if (o.name == "version") cl.version = got.back() == "true";
      continue;
    }
    Setting s;
    s.option = &o;
    s.where = fmt::format("flag {}", n.spelled.at(&o));
    switch (o.kind) {
      case ValueKind::kRepeated:
        s.values = got;  // every occurrence is one item
        break;
      case ValueKind::kList:
        s.values = split_list(got.back());  // Go: the last occurrence wins
        break;
      default:
        s.values = {got.back()};
        break;
    }
    cl.settings.push_back(std::move(s));
  }
  return cl;
}

}  // namespace derpd::config::detail

namespace derpd::config {

std::string usage() {
  CLI::App app = detail::make_app();
  std::vector<std::vector<std::string>> results;
  detail::describe_options(app, results);
  return app.help();
}

}  // namespace derpd::config
