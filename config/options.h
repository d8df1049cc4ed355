// The one list of derpd's options, shared by the YAML loader (yaml.cc), the flag parser
// (flags.cc) and the usage text. Private to config/ (and its tests); users include config.h.
//
// Flow: each source (the YAML file, the command line) turns what it read into Settings: an
// option plus its text value(s) plus where they came from. build() applies the settings to a
// base Config in order (file first, flags last, so flags win); finalize_at() then checks the
// rules that involve more than one field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace derpd::config::detail {

enum class ValueKind : std::uint8_t {
  kBool,      // flag: -name, -name=true|false (never a separate word); YAML: true|false
  kInt,       // decimal integer; YAML: a plain (unquoted) number
  kString,    // one word: address, path, name
  kList,      // flag: comma-separated, last occurrence wins; YAML: a list of strings
  kRepeated,  // flag: repeated once per item, all occurrences kept; YAML: a list of strings
  kNone,      // takes no value (--help)
};

enum class Scope : std::uint8_t {
  kSetting,      // a YAML key and a flag of the same name
  kCommand,      // a flag load() handles itself: --config, --version, --help
  kUnsupported,  // a derper flag derpd accepts and records in Config::unsupported
};

using Values = std::span<const std::string>;
// Applies text value(s) to a Config. Scalars get exactly one value. Throws BadValue.
using ApplyFn = void (*)(Config&, Values);

struct Option {
  std::string_view name;       // long name = YAML key = flag name
  std::string_view alias;      // derper's one-letter name ("a", "c") or ""
  ValueKind kind;
  Scope scope;
  std::string_view type_name;  // shown in usage: "IP:PORT", "N", "BOOL", ...
  std::string_view help;
  ApplyFn apply = nullptr;     // kSetting only
  bool secret = false;         // kUnsupported: value is recorded as "(redacted)"
};

// Every option, in usage order.
std::span<const Option> options();
// Flag lookup by long name or alias; nullptr when unknown.
const Option* find_flag(std::string_view name);
// YAML key lookup (kSetting options only, long names only); nullptr when unknown.
const Option* find_yaml_key(std::string_view key);

// Thrown by ApplyFn and the value helpers; the caller prefixes the location. `item` is the index
// of the offending list element, or kWholeValue.
class BadValue : public std::runtime_error {
 public:
  static constexpr std::size_t kWholeValue = static_cast<std::size_t>(-1);
  explicit BadValue(const std::string& msg, std::size_t item = kWholeValue)
      : std::runtime_error(msg), item_(item) {}
  std::size_t item() const { return item_; }

 private:
  std::size_t item_;
};

// One option's value(s) from one source.
struct Setting {
  const Option* option = nullptr;
  std::vector<std::string> values;
  std::string where;                    // `derpd.yaml:7: key "stun-port"` or `flag -stun-port`
  std::vector<std::string> item_where;  // per list element (YAML), else empty
};

// Values shown quoted and escaped in messages, cut to a readable length.
std::string show(std::string_view value);
// Go's strconv.ParseBool set: 1 t T TRUE true True 0 f F FALSE false False.
bool parse_bool(std::string_view text);  // throws BadValue

// Applies settings in order onto a copy of base. When they turn dev on (and base is not dev),
// they are applied again onto the dev defaults, so explicit values win over dev defaults.
Config build(const Config& base, std::span<const Setting> settings);
// Config::dev defaults over base.
Config with_dev_defaults(Config base);
// Cross-field checks; `where(key)` names the source of a key in messages.
void finalize_at(Config& cfg, const std::function<std::string(std::string_view key)>& where);
// Location of the last setting of `key` in settings, else `key "<key>"`.
std::string where_in(std::span<const Setting> settings, std::string_view key);

// A configuration file is a few hundred bytes; anything near this is not one.
inline constexpr std::size_t kMaxYamlBytes = std::size_t{1} << 20;

// YAML text -> settings (yaml.cc). Throws Error naming origin:line and the key.
std::vector<Setting> parse_yaml(const std::string& text, const std::string& origin);

// Command line -> settings (flags.cc).
struct CommandLine {
  std::vector<Setting> settings;  // kSetting and kUnsupported options
  std::string config_path;        // --config, "" when absent
  bool help = false;
  bool version = false;
};
CommandLine parse_command_line(int argc, const char* const* argv);  // throws Error

}  // namespace derpd::config::detail
