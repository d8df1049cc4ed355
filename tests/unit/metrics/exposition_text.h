// Reading a text exposition in tests: whole lines and the declared type of each family.
#pragma once

#include <map>
#include <sstream>
#include <string>

namespace derpd::metrics::testing {

// `line` is one whole line of `text`.
inline bool contains_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

// The "# TYPE name type" lines of a rendering, by family name.
inline std::map<std::string, std::string> types_of(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) != 0) continue;
    std::istringstream l(line.substr(7));
    std::string name, type;
    l >> name >> type;
    out[name] = type;
  }
  return out;
}

}  // namespace derpd::metrics::testing
