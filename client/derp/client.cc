#include "client/derp/client.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "client/derp/http_upgrade.h"
#include "relay/protocol/messages.h"

namespace derpd::derpclient {
namespace {

namespace proto = derpd::protocol;

constexpr std::size_t kReadBuffer = 64 * 1024;

// A printable excerpt of a response body for error messages.
std::string excerpt(Bytes b, std::size_t max = 200) {
  std::string out;
  for (std::size_t i = 0; i < b.size() && out.size() < max; ++i) {
    const auto c = static_cast<char>(b[i]);
    out += (c >= 0x20 && c < 0x7f) ? c : ' ';
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace

Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

void Client::close() {
  conn_.close();
  broken_ = true;
  pending_.clear();
}

void Client::keep(Message m) {
  if (pending_.size() == kMaxPending) {
    pending_.pop_front();
    ++pending_dropped_;
  }
  pending_.push_back(std::move(m));
}

Status<Error> Client::fail(Error e) {
  broken_ = true;
  conn_.close();
  return Err{e};
}

Result<Client, Error> Client::connect(const Options& options, std::string* why) {
  const auto start = Clock::now();
  const Deadline deadline = start + options.connect_timeout;
  auto give_up = [&](Error e, std::string text) -> Result<Client, Error> {
    if (why != nullptr) *why = std::move(text);
    return Err{e};
  };

  if (!proto::crypto_init()) return give_up(Error::kIo, "libsodium failed to initialise");
  auto url = parse_url(options.url);
  if (!url) return give_up(Error::kBadUrl, fmt::format("not an http(s)://host[:port]/path URL: \"{}\"", options.url));

  Client c;
  c.private_key_ = options.private_key.is_zero() ? proto::NodePrivate::generate() : options.private_key;
  c.public_key_ = c.private_key_.public_key();
  c.can_ack_pings_ = options.can_ack_pings;
  c.write_timeout_ = options.write_timeout;
  c.rbuf_.resize(kReadBuffer);
  c.info_.url = *url;

  const std::string& dial_host = options.dial_host.empty() ? url->host : options.dial_host;
  auto conn = Conn::dial(dial_host, url->port, deadline, &c.why_);
  if (!conn) return give_up(conn.error(), c.why_);
  c.conn_ = std::move(*conn);
  c.info_.local = c.conn_.local_endpoint();
  c.info_.remote = c.conn_.remote_endpoint();
  if (url->tls) {
    if (auto s = c.conn_.start_tls(options.tls, url->host, deadline, &c.why_); !s)
      return give_up(s.error(), "TLS: " + c.why_);
    c.info_.tls = c.conn_.tls_info();
  }
  if (auto s = c.handshake(options, deadline); !s) return give_up(s.error(), c.why_);
  if (options.preferred) {
    if (auto s = c.note_preferred(true); !s) return give_up(s.error(), c.why_);
  }
  if (options.watch_conns) {
    if (auto s = c.watch_conns(); !s) return give_up(s.error(), c.why_);
  }
  c.info_.connect_time = Clock::now() - start;
  return c;
}

Status<Error> Client::handshake(const Options& options, Deadline deadline) {
  const auto& meta = info_.tls.meta;
  const bool fast = options.fast_start && meta && meta->protocol_version != 0;
  const std::string request = upgrade_request(info_.url, fast, options.ideal_node);

  proto::ClientInfo ci;
  ci.mesh_key = options.mesh_key;
  ci.version = proto::kProtocolVersion;
  ci.can_ack_pings = options.can_ack_pings;
  ci.is_prober = options.is_prober;
  ci.app_name = options.app_name;
  const std::string json = proto::client_info_json(ci);
  std::vector<std::byte> ci_frame(proto::client_info_frame_size(json.size()));

  auto write_client_info = [&](std::string_view prefix) -> Status<Error> {
    auto n = proto::write_client_info(ci_frame, private_key_, info_.server_key, json);
    if (!n) {
      why_ = fmt::format("ClientInfo: {}", proto::to_string(n.error()));
      return fail(Error::kBadOptions);
    }
    std::vector<std::byte> out(prefix.size() + *n);
    if (!prefix.empty()) std::memcpy(out.data(), prefix.data(), prefix.size());
    std::memcpy(out.data() + prefix.size(), ci_frame.data(), *n);
    if (auto s = conn_.write_all(out, deadline, &why_); !s) return fail(s.error());
    return {};
  };

  if (fast) {
    // The key is known from the meta cert: request and ClientInfo in one write, no HTTP response.
    // The server still greets with ServerKey, which the steady-state reader skips.
    info_.server_key = meta->server_key;
    info_.fast_start = true;
    info_.meta_cert_version = meta->protocol_version;
    if (auto s = write_client_info(request); !s) return s;
    reader_.set_limits(proto::client_limits());
  } else {
    if (meta) info_.meta_cert_version = meta->protocol_version;
    if (auto s = conn_.write_all(as_bytes(request), deadline, &why_); !s) return fail(s.error());
    // Response head.
    for (;;) {
      auto head = parse_response_head(Bytes(rbuf_.data(), rend_));
      if (head) {
        if (head->status != 101) {
          why_ = fmt::format("HTTP {} {}", head->status, head->reason);
          const std::string body = excerpt(Bytes(rbuf_.data() + head->head_size, rend_ - head->head_size));
          if (!body.empty()) why_ += ": " + body;
          return fail(Error::kHttpStatus);
        }
        rpos_ = head->head_size;
        break;
      }
      switch (head.error()) {
        case http::ParseError::kIncomplete: break;
        case http::ParseError::kTooLarge:
        case http::ParseError::kTooManyHeaders:
          why_ = "upgrade response head too large";
          return fail(Error::kBadHttp);
        case http::ParseError::kMalformed:
          why_ = "upgrade response is not HTTP: \"" + excerpt(Bytes(rbuf_.data(), rend_), 60) + "\"";
          return fail(Error::kBadHttp);
      }
      if (rend_ == rbuf_.size()) {  // cannot happen: kMaxResponseHead < kReadBuffer
        why_ = "upgrade response head too large";
        return fail(Error::kBadHttp);
      }
      auto n = conn_.read_some(MutBytes(rbuf_.data() + rend_, rbuf_.size() - rend_), deadline, &why_);
      if (!n) {
        if (n.error() == Error::kClosed) why_ = "server closed the connection before answering the upgrade";
        return fail(n.error());
      }
      rend_ += *n;
    }
    // ServerKey.
    for (;;) {
      if (rpos_ < rend_) {
        Bytes in(rbuf_.data() + rpos_, rend_ - rpos_);
        proto::Frame f;
        const auto st = reader_.next(in, f);
        rpos_ = rend_ - in.size();
        if (st == proto::FrameReader::Status::kError) {
          why_ = fmt::format("invalid server greeting: {}", proto::to_string(reader_.error()));
          return fail(Error::kBadServerKey);
        }
        if (st == proto::FrameReader::Status::kFrame) {
          auto key = proto::parse_server_key(f);
          if (!key) {
            why_ = fmt::format("invalid server greeting: {}", proto::to_string(key.error()));
            return fail(Error::kBadServerKey);
          }
          info_.server_key = *key;
          break;
        }
      }
      rpos_ = rend_ = 0;
      auto n = conn_.read_some(rbuf_, deadline, &why_);
      if (!n) {
        if (n.error() == Error::kClosed) why_ = "server closed the connection before sending its key";
        return fail(n.error());
      }
      rend_ = *n;
    }
    if (auto s = write_client_info({}); !s) return s;
    reader_.set_limits(proto::client_limits());
  }

  if (!options.wait_for_server_info) return {};
  while (!info_.server_info) {
    auto m = read_one(deadline);
    if (!m) {
      if (m.error() == Error::kClosed) why_ = "server closed the connection after ClientInfo (rejected?)";
      return fail(m.error());
    }
    if (m->has_value()) keep(std::move(**m));
  }
  return {};
}

Result<std::optional<Message>, Error> Client::read_one(Deadline deadline) {
  if (broken_) return Err{Error::kBroken};
  for (;;) {
    if (rpos_ < rend_) {
      Bytes in(rbuf_.data() + rpos_, rend_ - rpos_);
      proto::Frame f;
      const auto st = reader_.next(in, f);
      rpos_ = rend_ - in.size();
      if (st == proto::FrameReader::Status::kError) {
        why_ = fmt::format("bad frame from server: {}", proto::to_string(reader_.error()));
        return Err{fail(Error::kProtocol).error()};
      }
      if (st == proto::FrameReader::Status::kFrame) {
        auto parsed = proto::parse_server_message(f);
        if (!parsed) {
          why_ = fmt::format("bad {} frame from server: {}", proto::to_string(f.type), proto::to_string(parsed.error()));
          return Err{fail(Error::kProtocol).error()};
        }
        std::optional<Message> out;
        Status<Error> st2;
        std::visit(
            [&](auto& m) {
              using T = std::decay_t<decltype(m)>;
              if constexpr (std::is_same_v<T, proto::RecvPacket>) {
                out = RecvPacket{m.src, std::vector<std::byte>(m.packet.begin(), m.packet.end())};
              } else if constexpr (std::is_same_v<T, proto::KeepAlive>) {
                out = KeepAlive{};
              } else if constexpr (std::is_same_v<T, proto::PeerGone>) {
                out = PeerGone{m.peer, m.reason};
              } else if constexpr (std::is_same_v<T, proto::PeerPresent>) {
                out = PeerPresent{m.peer, m.endpoint, m.flags};
              } else if constexpr (std::is_same_v<T, proto::Ping>) {
                if (can_ack_pings_) st2 = send_pong(m.data);
                out = Ping{m.data};
              } else if constexpr (std::is_same_v<T, proto::Pong>) {
                out = Pong{m.data};
              } else if constexpr (std::is_same_v<T, proto::Health>) {
                out = Health{std::string(m.problem)};
              } else if constexpr (std::is_same_v<T, proto::Restarting>) {
                out = Restarting{std::chrono::milliseconds(m.reconnect_in_ms), std::chrono::milliseconds(m.try_for_ms)};
              } else if constexpr (std::is_same_v<T, proto::ServerInfoFrame>) {
                auto si = proto::open_server_info(m.sealed, private_key_, info_.server_key);
                if (!si) {
                  why_ = fmt::format("invalid ServerInfo: {}", proto::to_string(si.error()));
                  st2 = fail(Error::kBadServerInfo);
                } else {
                  info_.server_info = *si;
                }
              }
              // proto::Ignored: nothing.
            },
            *parsed);
        if (!st2) return Err{st2.error()};
        return out;
      }
    }
    rpos_ = rend_ = 0;
    auto n = conn_.read_some(rbuf_, deadline, &why_);
    if (!n) {
      if (n.error() == Error::kTimeout) return Err{Error::kTimeout};  // nothing lost; still usable
      return Err{fail(n.error()).error()};
    }
    rend_ = *n;
  }
}

Result<Message, Error> Client::recv(std::chrono::milliseconds timeout) {
  if (!pending_.empty()) {
    Message m = std::move(pending_.front());
    pending_.pop_front();
    return m;
  }
  const Deadline deadline = Clock::now() + timeout;
  for (;;) {
    auto m = read_one(deadline);
    if (!m) {
      if (m.error() == Error::kTimeout) why_ = "no message before the timeout";
      return Err{m.error()};
    }
    if (m->has_value()) return std::move(**m);
  }
}

Result<std::chrono::nanoseconds, Error> Client::ping(const proto::PingData& data, std::chrono::milliseconds timeout) {
  const auto start = Clock::now();
  const Deadline deadline = start + timeout;
  if (auto s = send_ping(data); !s) return Err{s.error()};
  for (;;) {
    auto m = read_one(deadline);
    if (!m) {
      if (m.error() == Error::kTimeout) why_ = "no pong before the timeout";
      return Err{m.error()};
    }
    if (!m->has_value()) continue;
    if (auto* pong = std::get_if<Pong>(&**m); pong != nullptr && pong->data == data) return Clock::now() - start;
    keep(std::move(**m));
  }
}

Result<std::chrono::nanoseconds, Error> Client::ping(std::chrono::milliseconds timeout) {
  proto::PingData data{};
  if (RAND_bytes(reinterpret_cast<unsigned char*>(data.data()), static_cast<int>(data.size())) != 1) {
    why_ = "no random bytes for the ping";
    return Err{Error::kIo};
  }
  return ping(data, timeout);
}

Status<Error> Client::write_frame(Bytes frame) {
  if (broken_) return Err{Error::kBroken};
  if (auto s = conn_.write_all(frame, Clock::now() + write_timeout_, &why_); !s) return fail(s.error());
  return {};
}

Status<Error> Client::send(const proto::NodePublic& dst, Bytes packet) {
  if (packet.size() > proto::kMaxPacketSize) {
    why_ = fmt::format("packet of {} bytes is over the {} byte limit", packet.size(), proto::kMaxPacketSize);
    return Err{Error::kPacketTooLarge};
  }
  wbuf_.resize(proto::frame_size(proto::kKeyLen + packet.size()));
  const std::size_t n = proto::write_send_packet(wbuf_, dst, packet);
  return write_frame(Bytes(wbuf_.data(), n));
}

Status<Error> Client::forward_packet(const proto::NodePublic& src, const proto::NodePublic& dst, Bytes packet) {
  if (packet.size() > proto::kMaxPacketSize) {
    why_ = fmt::format("packet of {} bytes is over the {} byte limit", packet.size(), proto::kMaxPacketSize);
    return Err{Error::kPacketTooLarge};
  }
  wbuf_.resize(proto::frame_size(2 * proto::kKeyLen + packet.size()));
  const std::size_t n = proto::write_forward_packet(wbuf_, src, dst, packet);
  return write_frame(Bytes(wbuf_.data(), n));
}

Status<Error> Client::note_preferred(bool preferred) {
  std::array<std::byte, proto::frame_size(1)> buf{};
  const std::size_t n = proto::write_note_preferred(buf, preferred);
  return write_frame(Bytes(buf.data(), n));
}

Status<Error> Client::send_ping(const proto::PingData& data) {
  std::array<std::byte, proto::frame_size(proto::kPingLen)> buf{};
  const std::size_t n = proto::write_ping(buf, data);
  return write_frame(Bytes(buf.data(), n));
}

Status<Error> Client::send_pong(const proto::PingData& data) {
  std::array<std::byte, proto::frame_size(proto::kPingLen)> buf{};
  const std::size_t n = proto::write_pong(buf, data);
  return write_frame(Bytes(buf.data(), n));
}

Status<Error> Client::watch_conns() {
  std::array<std::byte, proto::frame_size(0)> buf{};
  const std::size_t n = proto::write_watch_conns(buf);
  return write_frame(Bytes(buf.data(), n));
}

Status<Error> Client::close_peer(const proto::NodePublic& peer) {
  std::array<std::byte, proto::frame_size(proto::kKeyLen)> buf{};
  const std::size_t n = proto::write_close_peer(buf, peer);
  return write_frame(Bytes(buf.data(), n));
}

}  // namespace derpd::derpclient
