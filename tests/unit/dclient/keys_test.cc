#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "client/derp/keys.h"

namespace derpd::derpclient {
namespace {

std::string temp_path(const char* tag) {
  return "/tmp/dclient-keys-" + std::string(tag) + "-" + std::to_string(::getpid());
}

TEST(KeyFile, SaveThenLoadRoundTripsInDerpersFormat) {
  const std::string path = temp_path("rt");
  std::remove(path.c_str());
  const auto key = protocol::NodePrivate::generate();
  std::string why;
  ASSERT_TRUE(save_key_file(path, key, &why).ok()) << why;
  struct stat st{};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "{\n\t\"PrivateKey\": \"" + key.to_text() + "\"\n}");
  auto loaded = load_key_file(path, &why);
  ASSERT_TRUE(loaded.ok()) << why;
  EXPECT_TRUE(loaded->equals(key));
  // Never overwrites.
  auto again = save_key_file(path, protocol::NodePrivate::generate(), &why);
  EXPECT_FALSE(again.ok());
  EXPECT_TRUE(load_key_file(path)->equals(key));
  std::remove(path.c_str());
}

TEST(KeyFile, BadFilesAreOptionErrors) {
  std::string why;
  auto missing = load_key_file("/nonexistent/derper.key", &why);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error(), Error::kBadOptions);
  EXPECT_NE(why.find("/nonexistent/derper.key"), std::string::npos);

  const std::string path = temp_path("bad");
  for (const std::string& content : {std::string("not json"), std::string("{}"), std::string("{\"PrivateKey\":null}"),
                                     std::string("{\"PrivateKey\":\"nodekey:00\"}"),
                                     std::string(70000, ' ')}) {
    std::ofstream(path, std::ios::trunc) << content;
    auto k = load_key_file(path, &why);
    EXPECT_FALSE(k.ok()) << content.substr(0, 40);
  }
  std::ofstream(path, std::ios::trunc) << "  " << std::string(64, 'A') << "\n";
  auto mesh = load_mesh_key_file(path, &why);
  ASSERT_TRUE(mesh.ok()) << why;
  EXPECT_EQ(mesh->to_hex(), std::string(64, 'a'));
  std::ofstream(path, std::ios::trunc) << "xyz";
  EXPECT_FALSE(load_mesh_key_file(path, &why).ok());
  std::remove(path.c_str());
}

}  // namespace
}  // namespace derpd::derpclient
