// LoadConn: one non-blocking DERP client connection for the load generator, driven by an
// edge-triggered epoll loop that owns many of them (one thread, no locks).
//
// Life of a connection:
//   kConnecting     socket(), optional bind to a loopback source address, connect()
//   kTlsHandshake   (TLS only) SSL_connect over the socket; TLS 1.3 and a DERP meta cert in the
//                   chain give the server key: fast start
//   kWaitHttp       sent "GET /derp" (Upgrade: DERP), waiting for "101 Switching Protocols"
//   kWaitServerKey  ServerKey frame. Fast start: the request went out with "Derp-Fast-Start: 1"
//                   and ClientInfo in the same write, and the key must match the meta cert's;
//                   otherwise ClientInfo is sent now
//   kWaitServerInfo ServerInfo frame, opened with our key: registered
//   kReady          RecvPacket and the other server frames go to the ConnSink
//   kClosed         error() says why
//
// Output: frames are appended to a per-connection buffer (reserve/commit) and written by flush(),
// one write per buffer (TLS: SSL_write with partial writes); what the socket does not take stays
// queued until the next EPOLLOUT edge. Input: read until EAGAIN (at most kReadsPerTurn reads per
// call; read_pending() asks the loop to call again), frames parsed with protocol::FrameReader.
//
// Views: frames handed to the sink alias the loop's shared read buffer; valid during the call.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <openssl/types.h>

#include "relay/base/bytes.h"
#include "relay/protocol/frame.h"
#include "relay/protocol/key.h"
#include "relay/protocol/messages.h"

namespace derpd::bench {

enum class ConnState : std::uint8_t {
  kIdle,
  kConnecting,
  kTlsHandshake,
  kWaitHttp,
  kWaitServerKey,
  kWaitServerInfo,
  kReady,
  kClosed,
};

enum class ConnError : std::uint8_t {
  kNone,
  kSocket,        // socket/bind/connect failed at once (EADDRNOTAVAIL: out of source ports, EMFILE)
  kRefused,       // connect: ECONNREFUSED
  kReset,         // the server reset the connection (ECONNRESET, EPIPE)
  kClosedByPeer,  // orderly end of stream from the server
  kTls,           // TLS handshake or record error
  kHttp,          // not "101", malformed head, wrong Derp-Public-Key
  kHandshake,     // bad ServerKey/ServerInfo, or a meta cert key that does not match
  kProtocol,      // a frame the reader or parser refused
  kIo,            // another socket error
  kOutputFull,    // more queued than kMaxQueued
  kTimeout,       // the handshake did not finish in time (set by the owner)
  kCount,
};
std::string_view to_string(ConnError e);

// Connections tell their owner what happened. Each call names the connection by its index.
class ConnSink {
 public:
  virtual void on_ready(std::uint32_t conn) = 0;
  virtual void on_packet(std::uint32_t conn, const protocol::RecvPacket& p) = 0;
  // Any other frame after the handshake (KeepAlive, PeerGone, Ping, Health, ...).
  virtual void on_other(std::uint32_t conn, const protocol::ServerMessage& m) = 0;
  virtual void on_closed(std::uint32_t conn, ConnError e) = 0;

 protected:
  ~ConnSink() = default;
};

// Shared by every connection of a run; immutable once the run starts.
struct ConnEnv {
  sockaddr_storage target{};
  socklen_t target_len = 0;
  SSL_CTX* tls = nullptr;            // null: plaintext
  bool allow_fast_start = true;      // use the meta cert's key when TLS 1.3 carries one
  std::string request_slow;          // upgrade request without fast start
  std::string request_fast;          // with "Derp-Fast-Start: 1"
  std::string client_info_json;
  MutBytes read_buffer;              // the loop's scratch for reads
  ConnSink* sink = nullptr;
};

class LoadConn {
 public:
  static constexpr int kReadsPerTurn = 8;
  static constexpr std::size_t kMaxQueued = 8 << 20;

  LoadConn() = default;
  ~LoadConn();
  LoadConn(const LoadConn&) = delete;
  LoadConn& operator=(const LoadConn&) = delete;

  // Opens the socket, registers it with `epfd` (edge-triggered, data.u32 = index) and connects.
  // `src`: bind to this loopback address first (port chosen at connect time). False: closed.
  bool start(const ConnEnv& env, int epfd, std::uint32_t index, const protocol::NodePrivate& key,
             const sockaddr_in* src, std::uint64_t now_ns);
  // An epoll event for this connection.
  void on_event(const ConnEnv& env, std::uint32_t events);
  // Reads again (the last on_event stopped at kReadsPerTurn before EAGAIN).
  void on_read_pending(const ConnEnv& env) { read_all(env); }
  bool read_pending() const { return read_pending_; }

  // Space for `n` bytes at the end of the output queue (empty span: over kMaxQueued, or closed).
  MutBytes reserve(std::size_t n);
  void commit(std::size_t n) { out_len_ += n; }
  // Writes what is queued; returns false if the connection closed.
  bool flush(const ConnEnv& env);
  std::size_t queued() const { return out_len_ - out_head_; }

  // Closes the socket (idempotent); the sink hears on_closed(e) unless e is kNone.
  void close(const ConnEnv& env, ConnError e);
  // Frees buffers an idle connection does not need.
  void trim();

  ConnState state() const { return state_; }
  ConnError error() const { return error_; }
  bool ready() const { return state_ == ConnState::kReady; }
  bool fast_start() const { return fast_; }
  std::uint64_t started_ns() const { return started_ns_; }
  const protocol::NodePublic& server_key() const { return server_key_; }
  // Negotiated TLS version and cipher ("" for plaintext).
  std::string tls_description() const;

  // Dirty flag for the owner's flush list.
  bool dirty = false;

 private:
  void after_connect(const ConnEnv& env);
  void drive_tls(const ConnEnv& env);
  void after_tls(const ConnEnv& env);
  void read_all(const ConnEnv& env);
  void consume(const ConnEnv& env, Bytes data);
  void feed_frames(const ConnEnv& env, Bytes data);
  void on_frame(const ConnEnv& env, const protocol::Frame& f);
  bool send_client_info(const ConnEnv& env);
  bool append(Bytes b);
  // Result of one raw read: > 0 bytes, 0 EOF, -1 would block, -2 error (closed).
  long raw_read(const ConnEnv& env, MutBytes buf);

  int fd_ = -1;
  SSL* ssl_ = nullptr;
  ConnState state_ = ConnState::kIdle;
  ConnError error_ = ConnError::kNone;
  std::uint32_t index_ = 0;
  bool fast_ = false;
  bool read_pending_ = false;
  bool want_write_ = false;  // the last write stopped at EAGAIN
  std::uint64_t started_ns_ = 0;
  const protocol::NodePrivate* key_ = nullptr;  // not owned; lives as long as the run
  protocol::NodePublic server_key_;
  protocol::FrameReader reader_{protocol::client_handshake_limits()};
  std::string http_;  // response head while kWaitHttp
  std::unique_ptr<std::byte[]> out_;
  std::size_t out_cap_ = 0;
  std::size_t out_head_ = 0;
  std::size_t out_len_ = 0;
};

}  // namespace derpd::bench
