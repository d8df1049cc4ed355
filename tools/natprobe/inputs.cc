#include "tools/natprobe/inputs.h"

#include <curl/curl.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

namespace derpd::natprobe {

bool read_file_capped(const std::string& path, std::size_t max, std::string& out, std::string& error) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    error = fmt::format("cannot open {}: {}", path, std::strerror(errno));
    return false;
  }
  out.clear();
  char buf[65536];
  bool ok = true;
  for (;;) {
    const std::size_t n = std::fread(buf, 1, sizeof buf, f);
    if (n > 0) {
      if (out.size() + n > max) {
        error = fmt::format("{} is larger than {} bytes", path, max);
        ok = false;
        break;
      }
      out.append(buf, n);
    }
    if (n < sizeof buf) {
      if (std::ferror(f)) {
        error = fmt::format("cannot read {}: {}", path, std::strerror(errno));
        ok = false;
      }
      break;
    }
  }
  std::fclose(f);
  return ok;
}

bool is_url(const std::string& s) { return s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0; }

namespace {

struct Sink {
  std::string* out;
  std::size_t max;
  bool too_large = false;
};

std::size_t on_data(char* data, std::size_t size, std::size_t n, void* user) {
  auto* sink = static_cast<Sink*>(user);
  const std::size_t bytes = size * n;
  if (sink->out->size() + bytes > sink->max) {
    sink->too_large = true;
    return 0;  // aborts the transfer
  }
  sink->out->append(data, bytes);
  return bytes;
}

}  // namespace

bool fetch_url(const std::string& url, std::size_t max, std::string& out, std::string& error) {
  if (!is_url(url)) {
    error = fmt::format("{}: not an http:// or https:// URL", url);
    return false;
  }
  static const bool inited = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  if (!inited) {
    error = "libcurl could not be initialised";
    return false;
  }
  CURL* h = curl_easy_init();
  if (h == nullptr) {
    error = "libcurl could not be initialised";
    return false;
  }
  out.clear();
  Sink sink{&out, max};
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 3L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "natprobe");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  const CURLcode rc = curl_easy_perform(h);
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(h);
  if (sink.too_large) {
    error = fmt::format("{}: body larger than {} bytes", url, max);
    return false;
  }
  if (rc != CURLE_OK) {
    error = fmt::format("cannot fetch {}: {}", url, errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
    return false;
  }
  if (status != 200) {
    error = fmt::format("cannot fetch {}: HTTP status {}", url, status);
    return false;
  }
  return true;
}

}  // namespace derpd::natprobe
