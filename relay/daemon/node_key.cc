#include "relay/daemon/node_key.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

namespace derpd::daemon {

namespace {

constexpr std::size_t kMaxKeyFile = 64 * 1024;

std::runtime_error fail(const std::string& path, std::string_view what) {
  return std::runtime_error(fmt::format("key file {}: {}", path, what));
}

}  // namespace

LoadedKey load_or_create_node_key(const std::string& path) {
  if (path.empty()) return {protocol::NodePrivate::generate(), false};

  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno != ENOENT) throw fail(path, std::strerror(errno));
  if (fd >= 0) {
    std::string text;
    char buf[4096];
    for (;;) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int e = errno;
        close(fd);
        throw fail(path, std::strerror(e));
      }
      if (n == 0) break;
      text.append(buf, static_cast<std::size_t>(n));
      if (text.size() > kMaxKeyFile) {
        close(fd);
        throw fail(path, "larger than 64 KiB: not a key file");
      }
    }
    close(fd);
    auto key = protocol::parse_key_file(text);
    if (!key) {
      throw fail(path, fmt::format("not a derper key file ({}); expected {{\"PrivateKey\": \"privkey:<64 hex>\"}}. "
                                   "Fix or remove it; derpd never replaces a key on its own",
                                   protocol::to_string(key.error())));
    }
    return {std::move(key).value(), false};
  }

  // First start: write a new key atomically (temporary file, fsync, rename), readable by us only.
  LoadedKey out{protocol::NodePrivate::generate(), true};
  std::string tmp = path + ".tmp";
  int wfd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (wfd < 0) throw fail(path, fmt::format("cannot create: {}", std::strerror(errno)));
  std::string text = protocol::format_key_file(out.key);
  bool ok = write(wfd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && fsync(wfd) == 0;
  int e = errno;
  close(wfd);
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) e = errno;
    unlink(tmp.c_str());
    throw fail(path, fmt::format("cannot write: {}", std::strerror(e)));
  }
  return out;
}

}  // namespace derpd::daemon
