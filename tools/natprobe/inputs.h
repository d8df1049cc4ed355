// natprobe's input files and URLs: bounded reads (a file or body over its limit is refused, not
// truncated), and a DERP map fetched with libcurl over http(s) only when the user gives a URL.
#pragma once

#include <cstddef>
#include <string>

namespace derpd::natprobe {

// Reads `path` (at most `max` bytes). On failure returns false with a message naming the path.
bool read_file_capped(const std::string& path, std::size_t max, std::string& out, std::string& error);

bool is_url(const std::string& s);  // http:// or https://

// GETs `url` (http/https only, at most 3 redirects, 10 s, at most `max` bytes, HTTP 200 only).
bool fetch_url(const std::string& url, std::size_t max, std::string& out, std::string& error);

}  // namespace derpd::natprobe
