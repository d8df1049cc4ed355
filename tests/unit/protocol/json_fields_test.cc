#include "relay/protocol/detail/json_fields.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace derpd::protocol::detail {
namespace {

struct Recorder final : FieldSink {
  bool field(std::string_view name, const JsonValue& v) override {
    names.emplace_back(name);
    kinds.push_back(v.kind);
    return reject_name.empty() || name != reject_name;
  }
  std::vector<std::string> names;
  std::vector<JsonKind> kinds;
  std::string reject_name;
};

TEST(JsonFields, ReportsTopLevelFieldsInDocumentOrder) {
  Recorder r;
  ASSERT_EQ(decode_object_fields(R"({"b":1,"a":{"x":[1,2,{"y":3}]},"c":"s","d":null,"e":true,"f":[],"g":1.5})", r),
            JsonStatus::kObject);
  EXPECT_EQ(r.names, (std::vector<std::string>{"b", "a", "c", "d", "e", "f", "g"}));
  EXPECT_EQ(r.kinds, (std::vector<JsonKind>{JsonKind::kInt, JsonKind::kCompound, JsonKind::kString, JsonKind::kNull,
                                            JsonKind::kBool, JsonKind::kCompound, JsonKind::kFloat}));
}

TEST(JsonFields, IntegerRanges) {
  Recorder r;
  ASSERT_EQ(decode_object_fields(
                R"({"a":-9223372036854775808,"b":9223372036854775807,"c":9223372036854775808,"d":-9223372036854775809,"e":100000000000000000000000})",
                r),
            JsonStatus::kObject);
  EXPECT_EQ(r.kinds, (std::vector<JsonKind>{JsonKind::kInt, JsonKind::kInt, JsonKind::kIntOverflow,
                                            JsonKind::kIntOverflow, JsonKind::kIntOverflow}));
}

TEST(JsonFields, Statuses) {
  Recorder r;
  EXPECT_EQ(decode_object_fields("null", r), JsonStatus::kNull);
  EXPECT_EQ(decode_object_fields(" {} ", r), JsonStatus::kObject);
  EXPECT_EQ(decode_object_fields("[{}]", r), JsonStatus::kNotObject);
  EXPECT_EQ(decode_object_fields("1", r), JsonStatus::kNotObject);
  EXPECT_EQ(decode_object_fields("{", r), JsonStatus::kSyntax);
  EXPECT_EQ(decode_object_fields("{} {}", r), JsonStatus::kSyntax);
  EXPECT_EQ(decode_object_fields("null null", r), JsonStatus::kSyntax);
  EXPECT_EQ(decode_object_fields("{\"a\":\"\xff\"}", r), JsonStatus::kSyntax);  // invalid UTF-8
  // Deep nesting inside an ignored field is walked without recursion trouble.
  const std::string deep = "{\"x\":" + std::string(10000, '[') + std::string(10000, ']') + "}";
  EXPECT_EQ(decode_object_fields(deep, r), JsonStatus::kObject);
  r.reject_name = "bad";
  EXPECT_EQ(decode_object_fields(R"({"ok":1,"bad":2,"never":3})", r), JsonStatus::kRejected);
  EXPECT_EQ(r.names.back(), "bad");
}

TEST(JsonFields, GoFieldNameFolding) {
  EXPECT_TRUE(field_name_equal("version", "version"));
  EXPECT_TRUE(field_name_equal("VERSION", "version"));
  EXPECT_TRUE(field_name_equal("canackpings", "CanAckPings"));
  EXPECT_TRUE(field_name_equal("I\xC5\xBFProber", "IsProber"));      // U+017F long s
  EXPECT_TRUE(field_name_equal("mesh\xE2\x84\xAA" "ey", "meshKey"));      // U+212A Kelvin sign
  EXPECT_FALSE(field_name_equal("versio", "version"));
  EXPECT_FALSE(field_name_equal("versions", "version"));
  EXPECT_FALSE(field_name_equal("v\xC3\xA9rsion", "version"));
  EXPECT_FALSE(field_name_equal("", "version"));
  EXPECT_FALSE(field_name_equal("mesh_key", "meshKey"));
}

TEST(JsonFields, QuoteEscapesAndReplacesInvalidUtf8) {
  EXPECT_EQ(json_quote("a\"b\\c\n"), R"("a\"b\\c\n")");
  EXPECT_EQ(json_quote("\xff"), "\"\xEF\xBF\xBD\"");
  EXPECT_EQ(json_quote(""), "\"\"");
}

}  // namespace
}  // namespace derpd::protocol::detail
