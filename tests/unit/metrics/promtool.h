// Runs `promtool check metrics` on a text exposition.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace derpd::metrics::testing {

inline bool have_promtool() { return std::system("command -v promtool >/dev/null 2>&1") == 0; }

struct PromtoolResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

inline PromtoolResult promtool_check(const std::string& exposition) {
  PromtoolResult r;
  char path[] = "/tmp/derpd-metrics-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return r;
  std::size_t off = 0;
  while (off < exposition.size()) {
    ssize_t w = write(fd, exposition.data() + off, exposition.size() - off);
    if (w <= 0) break;
    off += static_cast<std::size_t>(w);
  }
  close(fd);
  std::string cmd = std::string("promtool check metrics < ") + path + " 2>&1";
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[512];
    std::size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
    int status = pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  unlink(path);
  return r;
}

}  // namespace derpd::metrics::testing
