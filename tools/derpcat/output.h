// derpcat's output: one line per event, either "event key=value ..." or, with --json, one JSON
// object per line ({"event": "...", ...}). Lines are flushed at once so pipes see them live.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace derpcat {

using Fields = nlohmann::ordered_json;

class Output {
 public:
  explicit Output(bool json) : json_(json) {}
  bool json() const { return json_; }
  // Writes one event line to stdout.
  void event(std::string_view name, const Fields& fields = Fields::object()) const;
  // An error line on stderr (plain) or an {"event":"error"} line on stdout (--json).
  void error(std::string_view what, std::string_view detail) const;

 private:
  bool json_;
};

// "key=value" rendering of one value: strings bare when they have no spaces or quotes, quoted
// otherwise; numbers with at most 3 decimals.
std::string plain_value(const Fields& v);

// Printable text of a packet for display: the bytes as text if all printable ASCII, else hex
// (both cut at `max` bytes with "..." appended).
std::string preview(const std::string& data, std::size_t max = 64);

}  // namespace derpcat
