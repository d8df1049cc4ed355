#include "relay/http/response.h"

#include <charconv>
#include <cstring>

namespace derpd::http {

namespace {

bool valid_name(std::string_view n) {
  if (n.empty()) return false;
  for (char c : n)
    if (c == ':' || c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\0' || static_cast<unsigned char>(c) < 0x20 ||
        c == 0x7f)
      return false;
  return true;
}

bool valid_value(std::string_view v) {
  for (char c : v)
    if (c == '\r' || c == '\n' || c == '\0') return false;
  return true;
}

// Appends pieces into a fixed buffer; remembers overflow instead of writing past the end.
class Writer {
 public:
  explicit Writer(MutBytes out) : out_(out) {}
  void put(std::string_view s) {
    if (size_ + s.size() > out_.size()) {
      overflow_ = true;
    } else if (!s.empty()) {
      std::memcpy(out_.data() + size_, s.data(), s.size());
    }
    size_ += s.size();
  }
  void put_number(std::uint64_t v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    put({buf, static_cast<std::size_t>(r.ptr - buf)});
  }
  std::size_t size() const { return size_; }
  bool overflow() const { return overflow_; }

 private:
  MutBytes out_;
  std::size_t size_ = 0;
  bool overflow_ = false;
};

// Writes (or, with an empty `out`, only measures) the response. Returns false when refused.
bool build(Writer& w, int status, std::span<const Header> headers, std::string_view body, Body mode) {
  if (status < 100 || status > 999) return false;
  for (const Header& h : headers)
    if (!valid_name(h.name) || !valid_value(h.value)) return false;
  w.put("HTTP/1.1 ");
  w.put_number(static_cast<std::uint64_t>(status));
  w.put(" ");
  w.put(reason_phrase(status));
  w.put("\r\n");
  for (const Header& h : headers) {
    w.put(h.name);
    w.put(": ");
    w.put(h.value);
    w.put("\r\n");
  }
  if (mode != Body::kNone) {
    w.put("Content-Length: ");
    w.put_number(body.size());
    w.put("\r\n");
  }
  w.put("\r\n");
  if (mode == Body::kWith) w.put(body);
  return true;
}

}  // namespace

std::string_view reason_phrase(int status) {
  switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

std::size_t response_size(int status, std::span<const Header> headers, std::string_view body, Body mode) {
  Writer w{MutBytes{}};
  if (!build(w, status, headers, body, mode)) return 0;
  return w.size();
}

std::size_t write_response(MutBytes out, int status, std::span<const Header> headers, std::string_view body,
                           Body mode) {
  Writer w{out};
  if (!build(w, status, headers, body, mode) || w.overflow()) return 0;
  return w.size();
}

bool append_response(std::string& out, int status, std::span<const Header> headers, std::string_view body,
                     Body mode) {
  const std::size_t n = response_size(status, headers, body, mode);
  if (n == 0) return false;
  const std::size_t at = out.size();
  out.resize(at + n);
  MutBytes dst{reinterpret_cast<std::byte*>(out.data()) + at, n};
  if (write_response(dst, status, headers, body, mode) == n) return true;
  out.resize(at);
  return false;
}

}  // namespace derpd::http
