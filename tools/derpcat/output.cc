#include "tools/derpcat/output.h"

#include <cstdio>

#include <fmt/format.h>

namespace derpcat {

std::string plain_value(const Fields& v) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (!s.empty() && s.find_first_of(" \t\"=") == std::string::npos) return s;
    return Fields(s).dump();
  }
  if (v.is_number_float()) return fmt::format("{:.3f}", v.get<double>());
  return v.dump();
}

void Output::event(std::string_view name, const Fields& fields) const {
  std::string line;
  if (json_) {
    Fields obj = Fields::object();
    obj["event"] = name;
    for (const auto& [k, v] : fields.items()) obj[k] = v;
    line = obj.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line = std::string(name);
    for (const auto& [k, v] : fields.items()) line += fmt::format(" {}={}", k, plain_value(v));
  }
  std::fputs(line.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void Output::error(std::string_view what, std::string_view detail) const {
  if (json_) {
    event("error", Fields{{"what", what}, {"detail", detail}});
    return;
  }
  std::fprintf(stderr, "derpcat: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(detail.size()), detail.data());
  std::fflush(stderr);
}

std::string preview(const std::string& data, std::size_t max) {
  const bool cut = data.size() > max;
  const std::string_view head = std::string_view(data).substr(0, max);
  bool printable = true;
  for (char c : head)
    if (c < 0x20 || c >= 0x7f) printable = false;
  std::string out;
  if (printable) {
    out = std::string(head);
  } else {
    for (char c : head) out += fmt::format("{:02x}", static_cast<unsigned char>(c));
  }
  if (cut) out += "...";
  return out;
}

}  // namespace derpcat
