// YAML configuration file -> Settings. The document is one mapping whose keys are the long flag
// names; each value's YAML type is checked against the option's ValueKind here, so messages can
// point at the file line. Values are then applied by the option table like flag values.
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <map>

#include "config/options.h"

namespace derpd::config::detail {
namespace {

// Lists hold a handful of host names or addresses.
constexpr std::size_t kMaxListItems = 1024;

int line_of(const YAML::Node& n) {
  YAML::Mark m = n.Mark();
  return m.is_null() ? 0 : m.line + 1;
}

// Plain scalars carry the non-specific tag "?", quoted ones "!".
bool is_quoted(const YAML::Node& n) { return n.Tag() == "!"; }

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return "nothing";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Scalar:
      break;
  }
  return is_quoted(n) ? fmt::format("the quoted string {}", show(n.Scalar())) : show(n.Scalar());
}

std::string_view expected_for(const Option& o) {
  switch (o.kind) {
    case ValueKind::kBool:
      return "true or false";
    case ValueKind::kInt:
      return "an unquoted integer";
    case ValueKind::kString:
      return "a string";
    case ValueKind::kList:
    case ValueKind::kRepeated:
      return "a list of strings, e.g. [a, b] or one \"- item\" per line";
    case ValueKind::kNone:
      break;
  }
  return "no value";
}

[[noreturn]] void wrong_type(const std::string& where, const Option& o, const YAML::Node& value) {
  throw Error(fmt::format("{}: expected {}, got {}", where, expected_for(o), describe(value)));
}

Setting to_setting(const Option& o, const YAML::Node& value, const std::string& where, const std::string& origin) {
  Setting s;
  s.option = &o;
  s.where = where;
  switch (o.kind) {
    case ValueKind::kBool:
    case ValueKind::kInt:
      if (!value.IsScalar() || is_quoted(value)) wrong_type(where, o, value);
      s.values.push_back(value.Scalar());
      break;
    case ValueKind::kString:
      if (!value.IsScalar()) wrong_type(where, o, value);
      s.values.push_back(value.Scalar());
      break;
    case ValueKind::kList:
    case ValueKind::kRepeated:
      if (!value.IsSequence()) wrong_type(where, o, value);
      if (value.size() > kMaxListItems) {
        throw Error(fmt::format("{}: too many entries ({}, at most {})", where, value.size(), kMaxListItems));
      }
      for (const auto& item : value) {
        std::string item_where = fmt::format("{}:{}: key \"{}\"", origin, line_of(item), o.name);
        if (!item.IsScalar()) {
          throw Error(fmt::format("{}: list entries must be strings, got {}", item_where, describe(item)));
        }
        s.values.push_back(item.Scalar());
        s.item_where.push_back(std::move(item_where));
      }
      break;
    case ValueKind::kNone:
      wrong_type(where, o, value);
  }
  return s;
}

}  // namespace

std::vector<Setting> parse_yaml(const std::string& text, const std::string& origin) {
  if (text.size() > kMaxYamlBytes) {
    throw Error(fmt::format("{}: {} bytes is too large for a configuration file (limit {})", origin, text.size(),
                            kMaxYamlBytes));
  }
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("{}:{}: invalid YAML: {}", origin, e.mark.is_null() ? 0 : e.mark.line + 1, e.msg));
  }
  if (docs.empty()) return {};  // empty file or only comments
  if (docs.size() > 1) {
    throw Error(fmt::format("{}:{}: only one YAML document is allowed", origin, line_of(docs[1])));
  }
  const YAML::Node& root = docs[0];
  if (root.IsNull()) return {};
  if (!root.IsMap()) {
    throw Error(fmt::format("{}:{}: expected a mapping of keys to values (\"hostname: derp.example.com\"), got {}",
                            origin, line_of(root), describe(root)));
  }

  std::vector<Setting> out;
  std::map<std::string, int, std::less<>> seen;  // key -> line
  for (const auto& kv : root) {
    const YAML::Node& key = kv.first;
    const YAML::Node& value = kv.second;
    int line = line_of(key);
    if (!key.IsScalar()) {
      throw Error(fmt::format("{}:{}: keys must be option names, got {}", origin, line, describe(key)));
    }
    const std::string& name = key.Scalar();
    std::string where = fmt::format("{}:{}: key {}", origin, line, show(name));
    if (auto [it, fresh] = seen.emplace(name, line); !fresh) {
      throw Error(fmt::format("{}: given twice (first on line {})", where, it->second));
    }
    const Option* o = find_yaml_key(name);
    if (o == nullptr) {
      const Option* flag = find_flag(name);
      if (flag != nullptr && flag->scope != Scope::kSetting) {
        throw Error(fmt::format("{}: unknown key (-{} is a command-line flag only)", where, flag->name));
      }
      if (flag != nullptr) {
        throw Error(fmt::format("{}: unknown key (the file uses the long name \"{}\")", where, flag->name));
      }
      throw Error(fmt::format("{}: unknown key (see --help for the list)", where));
    }
    out.push_back(to_setting(*o, value, where, origin));
  }
  return out;
}

}  // namespace derpd::config::detail
