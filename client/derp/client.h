// A DERP client: connects to http(s)://host[:port]/derp the way Tailscale's Go client does
// (derphttp + derp.Client) and speaks the protocol of relay/protocol.
//
// Connect flow: TCP, then TLS when the URL is https (server certificate checked against the system
// roots, a CA file, or a "sha256-raw:" pin; or not at all for tests). If TLS 1.3 delivered the DERP
// meta certificate (CN "derpkey<hex>"), the server key is already known: the request carries
// "Derp-Fast-Start: 1" and the ClientInfo frame goes in the same write, no HTTP response is read.
// Otherwise the client reads "101 Switching Protocols", then the ServerKey frame, then sends
// ClientInfo. By default connect() also waits for ServerInfo, so a server that rejects the client
// fails connect() rather than the first recv().
//
// Usage:
//   auto c = Client::connect({.url = "https://derp.example.com/derp"});
//   c->send(peer, packet);
//   auto m = c->recv(std::chrono::seconds(5));   // RecvPacket, PeerGone, Ping, ...
//
// Blocking with deadlines; not thread-safe (one thread owns a Client). Received messages own their
// bytes. A kTimeout from recv()/ping() leaves the connection usable; any other error breaks it
// (every later call returns kBroken), as the Go client's sticky read error.
//
// Waiting on several things at once (a mesh link waits for its peer and for its relay's queue):
// call recv() with a zero timeout until it returns kTimeout, then poll fd() for POLLIN together
// with the other descriptors. After recv() returned kTimeout nothing is buffered in the client
// (frames, decrypted or undecrypted TLS records) that a later recv() could return without new
// bytes arriving on fd(), so readability of fd() is the only event to wait for.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "client/derp/conn.h"
#include "client/derp/error.h"
#include "client/derp/url.h"
#include "relay/base/bytes.h"
#include "relay/base/endpoint.h"
#include "relay/base/result.h"
#include "relay/protocol/frame.h"
#include "relay/protocol/handshake.h"
#include "relay/protocol/key.h"

namespace derpd::derpclient {

struct Options {
  std::string url;                      // "https://host[:port]/derp" or "http://..."
  protocol::NodePrivate private_key;    // zero: a throwaway key is generated
  protocol::MeshKey mesh_key;           // zero: none (mesh frames need it)
  TlsOptions tls;
  std::string app_name;                 // ClientInfo AppName (stats only)
  bool is_prober = false;               // ClientInfo IsProber
  bool can_ack_pings = true;            // answer server Pings with Pong (also told in ClientInfo)
  bool fast_start = true;               // use the meta cert's key when TLS 1.3 offers it
  bool wait_for_server_info = true;     // connect() returns after ServerInfo arrived
  bool preferred = false;               // send NotePreferred(true) right after connecting
  bool watch_conns = false;             // send WatchConns right after connecting (mesh key needed)
  std::string ideal_node;               // Ideal-Node header, when non-empty
  // Dial this host (DNS name or IP literal, IPv6 without brackets) on the URL's port instead of the
  // URL's host. TLS still sends the URL's host as SNI and checks the certificate for it, and the
  // Host header stays the URL's: derper's "host/dialhost" mesh entries (derphttp SetURLDialer).
  std::string dial_host;
  std::chrono::milliseconds connect_timeout{10'000};  // dial + TLS + upgrade + handshake (Go: 10 s)
  std::chrono::milliseconds write_timeout{5'000};     // each send (Go: 5 s for forwards)
};

// What connect() learned.
struct ConnectInfo {
  DerpUrl url;
  protocol::NodePublic server_key;
  bool fast_start = false;          // the meta cert gave the key: no HTTP response was read
  int meta_cert_version = 0;        // protocol version from the meta cert, 0 if none
  TlsInfo tls;                      // empty version for plaintext
  std::optional<Endpoint> local;
  std::optional<Endpoint> remote;
  std::optional<protocol::ServerInfo> server_info;  // once ServerInfo arrived
  std::chrono::nanoseconds connect_time{0};         // until connect() returned
};

// --- received messages (owned copies) ---------------------------------------------------------
struct RecvPacket {
  protocol::NodePublic src;
  std::vector<std::byte> data;
};
struct PeerGone {
  protocol::NodePublic peer;
  protocol::PeerGoneReason reason = protocol::PeerGoneReason::kDisconnected;
};
struct PeerPresent {  // mesh watchers only
  protocol::NodePublic peer;
  std::optional<Endpoint> endpoint;
  std::uint8_t flags = 0;
};
struct Ping {  // already answered when Options::can_ack_pings
  protocol::PingData data{};
};
struct Pong {
  protocol::PingData data{};
};
struct KeepAlive {};
struct Health {
  std::string problem;  // empty = healthy again
};
struct Restarting {
  std::chrono::milliseconds reconnect_in{0};
  std::chrono::milliseconds try_for{0};
};
using Message = std::variant<RecvPacket, PeerGone, PeerPresent, Ping, Pong, KeepAlive, Health, Restarting>;

class Client {
 public:
  // `why` (optional) receives a human-readable reason on failure.
  static Result<Client, Error> connect(const Options& options, std::string* why = nullptr);

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  const protocol::NodePublic& public_key() const { return public_key_; }
  const protocol::NodePublic& server_key() const { return info_.server_key; }
  const ConnectInfo& info() const { return info_; }
  // The connection's socket, to poll for POLLIN (see the file comment); -1 once closed. Never read
  // or write it directly.
  int fd() const { return conn_.fd(); }
  // The reason for the last error, in words.
  const std::string& error_detail() const { return why_; }
  bool broken() const { return broken_; }

  // Frames to the server. kPacketTooLarge (nothing sent) for packets over 64 KiB.
  Status<Error> send(const protocol::NodePublic& dst, Bytes packet);
  Status<Error> note_preferred(bool preferred);
  Status<Error> send_ping(const protocol::PingData& data);
  Status<Error> send_pong(const protocol::PingData& data);
  // Mesh (the server closes a client without the mesh key that sends these).
  Status<Error> watch_conns();
  Status<Error> close_peer(const protocol::NodePublic& peer);
  Status<Error> forward_packet(const protocol::NodePublic& src, const protocol::NodePublic& dst, Bytes packet);

  // The next message from the server, waiting at most `timeout`.
  Result<Message, Error> recv(std::chrono::milliseconds timeout);
  // Sends a Ping and waits for its Pong; messages arriving meanwhile are kept for recv() (at most
  // kMaxPending; beyond that the oldest are dropped and counted). Returns the round-trip time.
  Result<std::chrono::nanoseconds, Error> ping(const protocol::PingData& data, std::chrono::milliseconds timeout);
  // The same with random ping data.
  Result<std::chrono::nanoseconds, Error> ping(std::chrono::milliseconds timeout);

  // Messages dropped because more than kMaxPending arrived while ping() or connect() waited.
  std::uint64_t pending_dropped() const { return pending_dropped_; }
  static constexpr std::size_t kMaxPending = 4096;

  void close();

 private:
  void keep(Message m);
  Client() = default;

  Status<Error> write_frame(Bytes frame);
  Status<Error> fail(Error e);
  // Reads the next frame's message, handling ServerInfo and auto-pong; std::nullopt for frames
  // that produce no message (ignored types, ServerInfo).
  Result<std::optional<Message>, Error> read_one(Deadline deadline);
  Status<Error> handshake(const Options& options, Deadline deadline);

  Conn conn_;
  protocol::NodePrivate private_key_;
  protocol::NodePublic public_key_;
  bool can_ack_pings_ = true;
  std::chrono::milliseconds write_timeout_{5'000};
  ConnectInfo info_;
  protocol::FrameReader reader_{protocol::client_handshake_limits()};
  std::vector<std::byte> rbuf_;      // bytes read from the stream
  std::size_t rpos_ = 0, rend_ = 0;  // unconsumed range of rbuf_
  std::vector<std::byte> wbuf_;      // frame staging
  std::deque<Message> pending_;      // arrived while ping() waited; at most kMaxPending
  std::uint64_t pending_dropped_ = 0;
  bool broken_ = false;
  std::string why_;
};

}  // namespace derpd::derpclient
