#include "relay/daemon/node_key.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace derpd::daemon {
namespace {

using ::testing::HasSubstr;

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/derpd-key-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf " + path).c_str()); }
};

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string error_of(const std::string& path) {
  try {
    load_or_create_node_key(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(NodeKey, CreatedOnFirstStartWithMode0600AndReusedAfter) {
  TempDir d;
  std::string p = d.path + "/derper.key";
  LoadedKey first = load_or_create_node_key(p);
  EXPECT_TRUE(first.created);
  struct stat st {};
  ASSERT_EQ(stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_THAT(slurp(p), HasSubstr("\"PrivateKey\": \"privkey:"));
  LoadedKey second = load_or_create_node_key(p);
  EXPECT_FALSE(second.created);
  EXPECT_EQ(second.key.public_key(), first.key.public_key());
}

TEST(NodeKey, ReadsDerpersOwnFormat) {
  TempDir d;
  std::string p = d.path + "/k";
  std::ofstream(p) << "{\n\t\"PrivateKey\": \"privkey:" << std::string(62, '0') << "01\"\n}";
  LoadedKey k = load_or_create_node_key(p);
  EXPECT_FALSE(k.created);
  EXPECT_EQ(k.key.to_text(), "privkey:" + std::string(62, '0') + "01");
}

TEST(NodeKey, MalformedFileIsAnErrorNeverARegeneration) {
  TempDir d;
  std::string p = d.path + "/k";
  std::ofstream(p) << "{\"PrivateKey\": \"privkey:zz\"}";
  std::string before = slurp(p);
  std::string err = error_of(p);
  EXPECT_THAT(err, HasSubstr(p));
  EXPECT_THAT(err, HasSubstr("never replaces"));
  EXPECT_EQ(slurp(p), before) << "the file was left alone";
  std::ofstream(p, std::ios::trunc) << "garbage";
  EXPECT_THAT(error_of(p), HasSubstr("not a derper key file"));
}

TEST(NodeKey, DirectoryInsteadOfFileIsAnError) {
  TempDir d;
  EXPECT_THAT(error_of(d.path), HasSubstr(d.path));
}

TEST(NodeKey, MissingDirectoryIsAnError) {
  EXPECT_THAT(error_of("/nonexistent-derpd-dir/derper.key"), HasSubstr("cannot create"));
}

TEST(NodeKey, EmptyPathMeansAThrowawayKey) {
  LoadedKey a = load_or_create_node_key("");
  LoadedKey b = load_or_create_node_key("");
  EXPECT_NE(a.key.public_key(), b.key.public_key());
}

}  // namespace
}  // namespace derpd::daemon
