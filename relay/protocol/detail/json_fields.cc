#include "relay/protocol/detail/json_fields.h"

#include <limits>
#include <new>

#include <nlohmann/json.hpp>

namespace derpd::protocol::detail {
namespace {

using Json = nlohmann::json;

class Handler final : public nlohmann::json_sax<Json> {
 public:
  explicit Handler(FieldSink& sink) : sink_(sink) {}

  bool null() override { return scalar(JsonValue{}); }
  bool boolean(bool v) override {
    JsonValue j;
    j.kind = JsonKind::kBool;
    j.boolean = v;
    return scalar(j);
  }
  bool number_integer(number_integer_t v) override {
    JsonValue j;
    j.kind = JsonKind::kInt;
    j.integer = v;
    return scalar(j);
  }
  bool number_unsigned(number_unsigned_t v) override {
    JsonValue j;
    if (v > static_cast<number_unsigned_t>(std::numeric_limits<std::int64_t>::max())) {
      j.kind = JsonKind::kIntOverflow;
    } else {
      j.kind = JsonKind::kInt;
      j.integer = static_cast<std::int64_t>(v);
    }
    return scalar(j);
  }
  bool number_float(number_float_t, const string_t& text) override {
    JsonValue j;
    // The lexer reports integers too large for 64 bits as floats; Go calls those overflow. Either
    // way an int field rejects them.
    j.kind = text.find_first_of(".eE") == string_t::npos ? JsonKind::kIntOverflow : JsonKind::kFloat;
    return scalar(j);
  }
  bool string(string_t& v) override {
    JsonValue j;
    j.kind = JsonKind::kString;
    j.string = v;
    return scalar(j);
  }
  bool binary(binary_t&) override { return scalar(compound()); }

  bool start_object(std::size_t) override { return open(true); }
  bool start_array(std::size_t) override { return open(false); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& k) override {
    if (depth_ == 1) key_ = k;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    syntax_ = true;
    return false;
  }

  JsonStatus status() const {
    if (syntax_) return JsonStatus::kSyntax;
    if (rejected_) return JsonStatus::kRejected;
    switch (top_) {
      case Top::kObject: return JsonStatus::kObject;
      case Top::kNull: return JsonStatus::kNull;
      case Top::kNone:
      case Top::kOther: break;
    }
    return JsonStatus::kNotObject;
  }

 private:
  enum class Top : std::uint8_t { kNone, kObject, kNull, kOther };

  static JsonValue compound() {
    JsonValue j;
    j.kind = JsonKind::kCompound;
    return j;
  }

  bool scalar(const JsonValue& v) {
    if (depth_ == 0) {
      top_ = v.kind == JsonKind::kNull ? Top::kNull : Top::kOther;
      return top_ == Top::kNull;
    }
    if (depth_ == 1) return deliver(v);
    return true;  // inside a nested value: not reported
  }
  bool open(bool object) {
    if (depth_ == 0) {
      top_ = object ? Top::kObject : Top::kOther;
      if (!object) return false;  // a top-level array is a type error; stop reading
    } else if (depth_ == 1) {
      if (!deliver(compound())) return false;
    }
    ++depth_;
    return true;
  }
  bool close() {
    --depth_;
    return true;
  }
  bool deliver(const JsonValue& v) {
    if (!sink_.field(key_, v)) {
      rejected_ = true;
      return false;
    }
    return true;
  }

  FieldSink& sink_;
  std::string key_;
  int depth_ = 0;
  Top top_ = Top::kNone;
  bool syntax_ = false;
  bool rejected_ = false;
};

// Folds one name character starting at s[i] to upper-case ASCII, advancing i; returns 0 for a
// character that cannot fold to ASCII.
char fold_next(std::string_view s, std::size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    ++i;
    return (c >= 'a' && c <= 'z') ? static_cast<char>(c - ('a' - 'A')) : static_cast<char>(c);
  }
  if (s.substr(i, 3) == "\xE2\x84\xAA") {  // U+212A KELVIN SIGN
    i += 3;
    return 'K';
  }
  if (s.substr(i, 2) == "\xC5\xBF") {  // U+017F LATIN SMALL LETTER LONG S
    i += 2;
    return 'S';
  }
  ++i;
  return 0;
}

}  // namespace

bool field_name_equal(std::string_view json_name, std::string_view go_name) {
  std::size_t i = 0;
  for (const char g : go_name) {
    if (i >= json_name.size()) return false;
    const char f = fold_next(json_name, i);
    const char gu = (g >= 'a' && g <= 'z') ? static_cast<char>(g - ('a' - 'A')) : g;
    if (f == 0 || f != gu) return false;
  }
  return i == json_name.size();
}

JsonStatus decode_object_fields(std::string_view text, FieldSink& sink) {
  Handler h(sink);
  try {
    (void)Json::sax_parse(text.data(), text.data() + text.size(), &h, nlohmann::json::input_format_t::json,
                          /*strict=*/true);
  } catch (const std::bad_alloc&) {
    return JsonStatus::kSyntax;
  } catch (const nlohmann::json::exception&) {
    return JsonStatus::kSyntax;
  }
  return h.status();
}

std::string json_quote(std::string_view s) {
  try {
    return Json(std::string(s)).dump(-1, ' ', false, Json::error_handler_t::replace);
  } catch (const nlohmann::json::exception&) {
    return "\"\"";  // not reached: the replace handler does not throw
  }
}

}  // namespace derpd::protocol::detail
