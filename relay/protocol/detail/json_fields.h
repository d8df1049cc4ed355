// Internal to relay/protocol: decoding the top-level fields of a JSON object the way Go's
// encoding/json fills a struct (ClientInfo, ServerInfo, derper's key file), and quoting strings.
//
// Go semantics reproduced: field names match case-insensitively (Unicode simple folding, which for
// ASCII names means ASCII case plus U+212A KELVIN SIGN ~ 'k' and U+017F LONG S ~ 's'); fields are
// applied in document order, so a later duplicate wins; unknown fields are ignored whatever their
// value; a top-level `null` leaves the struct untouched; any other non-object top level is an
// error. One difference: invalid UTF-8 inside strings is a syntax error here (Go substitutes
// U+FFFD).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace derpd::protocol::detail {

enum class JsonKind : std::uint8_t {
  kNull,
  kBool,
  kInt,          // integer that fits std::int64_t
  kIntOverflow,  // integer outside std::int64_t
  kFloat,        // number with fraction or exponent (Go: not assignable to an int field)
  kString,
  kCompound,     // object or array (its contents are not reported)
};

struct JsonValue {
  JsonKind kind = JsonKind::kNull;
  bool boolean = false;
  std::int64_t integer = 0;
  std::string_view string;  // valid only during the FieldSink::field() call
};

class FieldSink {
 public:
  // One top-level field; return false to reject the document.
  virtual bool field(std::string_view name, const JsonValue& value) = 0;

 protected:
  ~FieldSink() = default;
};

enum class JsonStatus : std::uint8_t {
  kObject,     // an object; every field went to the sink, which accepted all of them
  kNull,       // the literal null (Go: nothing assigned, no error)
  kNotObject,  // valid JSON but not an object
  kSyntax,     // not valid JSON (including trailing garbage and invalid UTF-8)
  kRejected,   // the sink rejected a field
};

JsonStatus decode_object_fields(std::string_view text, FieldSink& sink);

// Go's case-insensitive field-name match (see above).
bool field_name_equal(std::string_view json_name, std::string_view go_name);

// A JSON string literal (with quotes) for `s`; invalid UTF-8 is replaced by U+FFFD as Go does.
std::string json_quote(std::string_view s);

}  // namespace derpd::protocol::detail
