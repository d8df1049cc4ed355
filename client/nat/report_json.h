// The natprobe JSON report (schema 1, documented in client/nat/SCHEMA.md): Verdict -> JSON and
// back, and a CompareResult -> JSON.
//
// Reading treats the text as hostile (it is a file someone hands to `natprobe compare`): the size
// is capped before parsing, nothing is read without checking its type and range, and any problem
// is answered with a ReportParseError naming the JSON path, never an exception or a crash.
// Unknown keys are ignored (later minor additions stay readable); an unknown "schema" is refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "client/nat/compare.h"
#include "client/nat/verdict.h"
#include "relay/base/result.h"

namespace derpd::nat {

inline constexpr int kReportSchema = 1;
inline constexpr std::size_t kMaxReportBytes = 1 << 20;  // refuse larger input before parsing
inline constexpr std::size_t kMaxListEntries = 256;      // servers, addresses, anomalies per list
inline constexpr std::size_t kMaxTextBytes = 1024;       // any one string value

nlohmann::json to_json(const Verdict& v);
// Pretty-printed (indent >= 0) or compact (indent < 0). Invalid UTF-8 in names is replaced, so
// this never throws.
std::string to_json_text(const Verdict& v, int indent = 2);

nlohmann::json to_json(const CompareResult& r);
std::string to_json_text(const CompareResult& r, int indent = 2);

enum class ReportError : std::uint8_t {
  kTooLarge,           // input over kMaxReportBytes, or a list/string over its limit
  kNotJson,            // not parseable as JSON
  kNotObject,          // top level is not an object
  kMissingKey,         // a required key is absent
  kWrongType,          // a value has the wrong JSON type
  kBadValue,           // right type, but not an allowed value (unknown name, bad address, range)
  kUnsupportedSchema,  // "schema" is an integer other than kReportSchema
  kInconsistent,       // fields contradict each other (see SCHEMA.md, "Consistency")
  kCount,
};
std::string_view to_string(ReportError e);

struct ReportParseError {
  ReportError code = ReportError::kNotJson;
  std::string where;  // JSON pointer of the offending value ("" = the whole document)
  // e.g. "wrong type at /ipv4/udp"
  std::string message() const;
};

Result<Verdict, ReportParseError> verdict_from_json(std::string_view text);
// For an already parsed document (a distinct name: a std::string converts to nlohmann::json).
Result<Verdict, ReportParseError> verdict_from_json_value(const nlohmann::json& doc);

}  // namespace derpd::nat
