#include <gtest/gtest.h>

#include "tools/derpcat/output.h"

namespace derpcat {
namespace {

TEST(DerpcatOutput, PlainValues) {
  EXPECT_EQ(plain_value(Fields("nodekey:ab")), "nodekey:ab");
  EXPECT_EQ(plain_value(Fields("two words")), "\"two words\"");
  EXPECT_EQ(plain_value(Fields("")), "\"\"");
  EXPECT_EQ(plain_value(Fields("a=b")), "\"a=b\"");
  EXPECT_EQ(plain_value(Fields(1.23456)), "1.235");
  EXPECT_EQ(plain_value(Fields(42)), "42");
  EXPECT_EQ(plain_value(Fields(true)), "true");
}

TEST(DerpcatOutput, Preview) {
  EXPECT_EQ(preview("hello"), "hello");
  EXPECT_EQ(preview(std::string("\x01\xff", 2)), "01ff");
  EXPECT_EQ(preview(std::string(100, 'x'), 4), "xxxx...");
  EXPECT_EQ(preview(std::string("ab\ncd"), 10), "61620a6364");
}

}  // namespace
}  // namespace derpcat
