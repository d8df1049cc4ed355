#include "client/derp/keys.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace derpd::derpclient {
namespace {

constexpr std::size_t kMaxKeyFile = 64 * 1024;

void set_why(std::string* why, std::string text) {
  if (why != nullptr) *why = std::move(text);
}

Result<std::string, Error> read_small_file(const std::string& path, std::string* why) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    set_why(why, fmt::format("{}: {}", path, std::strerror(errno)));
    return Err{Error::kBadOptions};
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      set_why(why, fmt::format("{}: {}", path, std::strerror(errno)));
      ::close(fd);
      return Err{Error::kBadOptions};
    }
    if (n == 0) break;
    if (text.size() + static_cast<std::size_t>(n) > kMaxKeyFile) {
      set_why(why, fmt::format("{}: larger than {} bytes", path, kMaxKeyFile));
      ::close(fd);
      return Err{Error::kBadOptions};
    }
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

}  // namespace

Result<protocol::NodePrivate, Error> load_key_file(const std::string& path, std::string* why) {
  auto text = read_small_file(path, why);
  if (!text) return Err{text.error()};
  auto key = protocol::parse_key_file(*text);
  if (!key) {
    set_why(why, fmt::format("{}: not a derper key file ({})", path, protocol::to_string(key.error())));
    return Err{Error::kBadOptions};
  }
  return *key;
}

Status<Error> save_key_file(const std::string& path, const protocol::NodePrivate& key, std::string* why) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    set_why(why, fmt::format("{}: {}", path, std::strerror(errno)));
    return Err{Error::kBadOptions};
  }
  const std::string text = protocol::format_key_file(key);
  std::size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      set_why(why, fmt::format("{}: {}", path, std::strerror(errno)));
      ::close(fd);
      return Err{Error::kIo};
    }
    off += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) {
    set_why(why, fmt::format("{}: {}", path, std::strerror(errno)));
    return Err{Error::kIo};
  }
  return {};
}

Result<protocol::MeshKey, Error> load_mesh_key_file(const std::string& path, std::string* why) {
  auto text = read_small_file(path, why);
  if (!text) return Err{text.error()};
  auto key = protocol::MeshKey::parse(*text);
  if (!key) {
    set_why(why, fmt::format("{}: not a mesh key ({})", path, protocol::to_string(key.error())));
    return Err{Error::kBadOptions};
  }
  return *key;
}

}  // namespace derpd::derpclient
