#include "relay/daemon/derp_service.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include <spdlog/spdlog.h>

#include "relay/http/request.h"
#include "relay/http/response.h"
#include "relay/http/websocket.h"
#include "relay/protocol/handshake.h"
#include "relay/protocol/messages.h"

namespace derpd::daemon {

namespace {

constexpr std::uint8_t kOpInbox = 1;
constexpr std::uint8_t kOpMesh = 2;
constexpr std::uint8_t kOpAdmission = 3;
// DERP bytes a client may send while its admission is being decided (held, then processed).
constexpr std::size_t kMaxHeldWhileAdmitting = 256 * 1024;
// Longest wait for a registration to show in this worker's replica before ServerInfo goes anyway.
constexpr io::Nanos kRegistrationWait = std::chrono::milliseconds(500);
// DERP bytes buffered behind a frame held for a duplicate key's switch (RelayShard). Reading
// stops at the hold, so only what the kernel had already received arrives; past this the frame
// is let go without waiting for the switch.
constexpr std::size_t kMaxHeldWhileSwitching = 1024 * 1024;
constexpr std::uint16_t kTimerTick = 1;
constexpr std::uint16_t kTimerReap = 2;
constexpr io::Nanos kTickInterval = std::chrono::milliseconds(250);
constexpr std::size_t kScratch = 64 * 1024;
// Plaintext pulled from the shard per TLS record batch, and the ciphertext backlog above which we
// wait for the socket to drain before encrypting more.
constexpr std::size_t kTlsChunk = 16 * 1024;
constexpr std::size_t kTlsBacklog = 32 * 1024;
// Request-head bytes buffered before routing (a head longer than the parser's limit is refused).
constexpr std::size_t kMaxHttpBuffered = http::kMaxHeadSize + 1024;

}  // namespace

// One accepted TCP connection, from the first HTTP byte to the end of its DERP session.
struct DerpService::Conn final : io::StreamSink, http::PayloadSink {
  // kAdmission: waiting for the admission controller. kRegistering: registered, waiting until the
  // directory shows it (RelayShard::registration_visible) before ServerInfo. kSwitching: serving,
  // but one frame waits until the switch of a duplicated key to this connection shows on every
  // worker (RelayShard::frame_may_proceed); later bytes wait behind it, reading is paused.
  enum class State : std::uint8_t { kHttp, kHandshake, kAdmission, kRegistering, kDerp, kSwitching, kDead };

  // The frame a kSwitching connection holds (its payload copied out of the receive buffer).
  struct HeldFrame {
    protocol::FrameType type{};
    std::uint32_t length = 0;
    bool skipped = false;
    std::vector<std::byte> payload;
  };

  DerpService* svc = nullptr;
  io::TcpListener* listener = nullptr;
  std::uint32_t index = 0;
  io::TcpConnection::Ptr tcp;
  std::unique_ptr<tls::TlsConnection> tls;
  std::unique_ptr<http::WebSocketServer> ws;  // DERP inside WebSocket binary messages
  State state = State::kHttp;
  bool port80 = false;
  bool not_ideal = false;
  bool registered = false;
  bool write_deadline = false;
  bool closing = false;  // close_after_flush() in progress
  Endpoint remote;
  std::string http_in;  // request-head bytes not yet routed (bounded by kMaxHttpBuffered)
  protocol::FrameReader reader{protocol::server_handshake_limits()};
  server::ClientId id;
  std::uint32_t serial = 0;       // tells this connection's admission answer from a stale one
  server::ClientParams pending;   // the client waiting for its admission decision
  std::string held;               // DERP bytes received while waiting for it (or for a switch)
  std::unique_ptr<HeldFrame> held_frame;  // kSwitching only
  io::Nanos registered_at{0};
  // Sends ServerInfo once the registration is visible (or after a bound), then serves.
  bool try_finish_registration(bool force);
  // kSwitching: hands the held frame to the shard, then the bytes behind it, and reads on.
  void finish_switch();
  bool serving() const { return state == State::kDerp || state == State::kSwitching; }

  void on_data(io::TcpConnection& c, Bytes data) override;
  void on_peer_closed(io::TcpConnection& c) override;
  void on_error(io::TcpConnection& c, io::TcpError e, int err) override;
  void on_drained(io::TcpConnection& c) override;
  void on_closed(io::TcpConnection& c) override;

  void on_payload(Bytes data) override { on_derp(data); }  // WebSocket message bytes
  void on_plain(Bytes data);
  void on_http(Bytes data);
  void on_derp(Bytes data);
  // False when the shard refused the frame because the client is closing (reading paused).
  bool on_frame(const protocol::Frame& f);
  void handshake(const protocol::Frame& f);
  // Sends ServerInfo and registers with the shard (after admission, if any).
  void admit();
  // Writes stream bytes (HTTP or DERP) for the peer: through WebSocket framing and TLS when the
  // connection has them. False when they could not all be taken (the caller ends the connection).
  bool send(Bytes b);
  // Writes socket-level bytes (already WebSocket-framed) through TLS or straight to TCP.
  bool send_wire(Bytes b);
  void flush_ws();
  void flush_tls();
  // Whether another chunk of kTlsChunk stream bytes can be taken without overflowing a layer.
  bool room_for_chunk() const;
  // Ends the connection: `how` is what the shard hears when it was registered.
  void end(server::ConnEnd how);
  void end_after_flush();
};

DerpService::DerpService(io::Loop& loop, io::TcpContext& tcp, const DerpSettings& settings, server::Fabric& fabric,
                         server::WorkerId worker, int listen_fd, int port80_fd, std::vector<int> inbox_fds,
                         DerpConnCounters& counters, MeshBridge* mesh)
    : loop_(loop),
      tcp_(tcp),
      settings_(settings),
      shard_(
          [&] {
            server::ShardConfig sc;
            sc.worker = worker;
            sc.server_key = settings.server_public;
            return sc;
          }(),
          fabric),
      worker_(worker),
      inbox_fds_(std::move(inbox_fds)),
      slot_(loop.attach(this)),
      counters_(counters),
      scratch_(new std::byte[kScratch]) {
  mesh_ = mesh;
  site80_ = settings.site;
  site80_.port80 = true;
  if (settings.bootstrap_dns != nullptr) bootstrap_.emplace(*settings.bootstrap_dns);
  io::TcpListenerOptions lo;
  lo.max_connections = settings.max_connections;
  if (listen_fd >= 0) listener_ = std::make_unique<io::TcpListener>(loop, listen_fd, *this, lo);
  if (port80_fd >= 0) port80_ = std::make_unique<io::TcpListener>(loop, port80_fd, *this, lo);
}

DerpService::~DerpService() {
  stop();
  loop_.detach(slot_);
}

void DerpService::start() {
  if (listener_) listener_->start();
  if (port80_) port80_->start();
  arm_inbox();
  if (mesh_ != nullptr) arm_mesh();
  if (settings_.admission != nullptr) arm_admission();
  loop_.add_timer(slot_, loop_.now() + kTickInterval, kTimerTick);
}

void DerpService::stop() {
  if (stopping_) return;
  stopping_ = true;
  if (listener_) listener_->close();
  if (port80_) port80_->close();
  for (auto& c : conns_)
    if (c && c->state != Conn::State::kDead) c->end(server::ConnEnd::kShutdown);
}

void DerpService::arm_inbox() {
  loop_.ring().prep_read(inbox_fds_[worker_], &inbox_buf_, sizeof inbox_buf_, loop_.user_data(slot_, kOpInbox));
}

void DerpService::arm_mesh() {
  loop_.ring().prep_read(mesh_->wake_fd(), &mesh_buf_, sizeof mesh_buf_, loop_.user_data(slot_, kOpMesh));
}

void DerpService::arm_admission() {
  loop_.ring().prep_read(settings_.admission->wake_fd(worker_), &admission_buf_, sizeof admission_buf_,
                         loop_.user_data(slot_, kOpAdmission));
}

void DerpService::on_completion(const io::UserData& ud, const io::Completion&) {
  if (stopping_) return;
  switch (ud.op) {
    case kOpInbox:
      shard_.poll_inbox();
      flush_outputs();
      arm_inbox();
      break;
    case kOpMesh:
      mesh_->on_wake(shard_, loop_.now());
      flush_outputs();
      arm_mesh();
      break;
    case kOpAdmission:
      on_admission_results();
      flush_outputs();
      arm_admission();
      break;
    default:
      break;
  }
}

void DerpService::on_admission_results() {
  admission_results_.clear();
  settings_.admission->drain(worker_, admission_results_);
  for (const AdmissionResult& r : admission_results_) {
    const auto index = static_cast<std::uint32_t>(r.token >> 32);
    const auto serial = static_cast<std::uint32_t>(r.token);
    if (index >= conns_.size() || !conns_[index]) continue;
    Conn& c = *conns_[index];
    if (c.serial != serial || c.state != Conn::State::kAdmission) continue;  // gone meanwhile
    if (r.allow) {
      c.admit();
    } else {
      spdlog::debug("derp: admission controller refused {} from {}", c.pending.key.to_string(),
                    c.remote.to_string());
      c.end(server::ConnEnd::kProtocolError);
    }
  }
}

void DerpService::on_timer(std::uint16_t cookie) {
  if (cookie == kTimerReap) {
    // Connections that ended inside their own callbacks are freed here, outside any of them.
    for (std::uint32_t i = 0; i < conns_.size(); ++i) {
      if (conns_[i] && conns_[i]->state == Conn::State::kDead) {
        conns_[i].reset();
        free_conns_.push_back(i);
      }
    }
    return;
  }
  if (stopping_) return;
  const io::Nanos now = loop_.now();
  shard_.poll_inbox();
  if (mesh_ != nullptr) mesh_->on_wake(shard_, now);
  shard_.tick(now);
  flush_outputs();
  loop_.add_timer(slot_, now + kTickInterval, kTimerTick);
}

void DerpService::on_accept(io::TcpListener& l, int fd) {
  if (stopping_) {
    ::close(fd);
    l.connection_closed();
    return;
  }
  std::uint32_t index;
  if (!free_conns_.empty()) {
    index = free_conns_.back();
    free_conns_.pop_back();
  } else {
    index = static_cast<std::uint32_t>(conns_.size());
    conns_.emplace_back();
  }
  auto c = std::make_unique<Conn>();
  c->svc = this;
  c->listener = &l;
  c->index = index;
  c->serial = next_serial_++;
  c->port80 = &l == port80_.get();
  c->remote = io::peer_endpoint(fd).value_or(Endpoint{});
  io::TcpConnectionOptions opts;
  c->tcp = io::TcpConnection::open(tcp_, fd, *c, opts);
  if (settings_.tls != nullptr && !c->port80) {
    auto t = tls::TlsConnection::accept(*settings_.tls);
    if (!t) {
      counters_.tls_errors.inc();
      c->tcp.reset();
      l.connection_closed();
      free_conns_.push_back(index);
      return;
    }
    c->tls = std::move(t).value();
  }
  c->tcp->set_deadline(loop_.now() + settings_.handshake_timeout);
  conns_[index] = std::move(c);
}

DerpService::Conn* DerpService::conn_for(server::ClientId id) {
  if (id.slot >= by_client_slot_.size()) return nullptr;
  Conn* c = by_client_slot_[id.slot];
  return c != nullptr && c->registered && c->id == id ? c : nullptr;
}

void DerpService::flush_outputs() {
  if (!registering_.empty()) {
    const io::Nanos now = loop_.now();
    std::size_t keep = 0;
    for (std::uint32_t index : registering_) {
      Conn* c = index < conns_.size() ? conns_[index].get() : nullptr;
      if (c == nullptr || c->state != Conn::State::kRegistering) continue;
      if (!c->try_finish_registration(now - c->registered_at > kRegistrationWait)) registering_[keep++] = index;
    }
    registering_.resize(keep);
  }
  // Resumed connections handle their held frames, which produces more output: another round.
  // Each resume answers one hold, and a hold is acknowledged by other workers, so this ends.
  for (;;) {
    shard_.take_outputs(outputs_);
    for (const auto& cl : outputs_.closes) {
      if (mesh_ != nullptr && mesh_->owns(cl.id)) {
        mesh_->close_requested(shard_, cl.id);
      } else if (Conn* c = conn_for(cl.id)) {
        c->end(server::ConnEnd::kRequested);
      }
    }
    for (server::ClientId id : outputs_.writable) {
      if (mesh_ != nullptr && mesh_->owns(id)) {
        mesh_->pump(shard_, id);
      } else if (Conn* c = conn_for(id)) {
        pump(*c);
      }
    }
    for (server::WorkerId w : outputs_.wake) {
      if (w == worker_ || w >= inbox_fds_.size()) continue;
      std::uint64_t one = 1;
      ssize_t r = ::write(inbox_fds_[w], &one, sizeof one);
      (void)r;  // EAGAIN: a wake-up is already pending
    }
    if (outputs_.resume.empty()) break;
    resume_.swap(outputs_.resume);
    for (server::ClientId id : resume_)
      if (Conn* c = conn_for(id)) c->finish_switch();
    resume_.clear();
  }
}

void DerpService::pump(Conn& c) {
  if (!c.serving() || !c.tcp || !c.tcp->is_open()) return;
  while (shard_.has_output(c.id)) {
    if (!c.tls && !c.ws) {
      // Plain TCP: frames are pulled straight into the connection's send queue.
      std::size_t want = std::min({c.tcp->write_room(), shard_.pending_bytes(c.id), kScratch});
      if (want == 0) break;
      MutBytes span = c.tcp->reserve(want);
      if (span.empty()) break;
      std::size_t n = shard_.pull(c.id, span);
      c.tcp->commit(n);
      if (n == 0) break;
      continue;
    }
    c.flush_ws();
    c.flush_tls();
    if (!c.room_for_chunk()) break;  // on_drained() pumps again
    std::size_t n = shard_.pull(c.id, MutBytes(scratch_.get(), kTlsChunk));
    if (n == 0) break;
    bool sent;
    if (c.tls && !c.ws) {
      // TLS records go straight into the socket's send queue: the ciphertext is copied once.
      tls::SendQueueSink<io::TcpConnection> sink(*c.tcp);
      auto w = c.tls->write_plaintext(Bytes(scratch_.get(), n), sink);
      c.flush_tls();
      sent = w.ok() && *w == n;
    } else {
      sent = c.send(Bytes(scratch_.get(), n));
    }
    if (!sent) {
      counters_.tls_errors.inc();
      c.end(server::ConnEnd::kWriteError);
      return;
    }
  }
  if (c.tcp && c.tcp->queued_bytes() > 0 && !c.write_deadline) {
    // derper's write timeout: a client whose socket does not take our bytes in time is dropped.
    c.write_deadline = true;
    c.tcp->set_deadline(loop_.turn_now() + shard_.write_timeout(c.id));
  }
}

void DerpService::remove(Conn& c) {
  c.state = Conn::State::kDead;
  loop_.add_timer(slot_, loop_.now(), kTimerReap);
}

// --- Conn ----------------------------------------------------------------------------------------

void DerpService::Conn::on_data(io::TcpConnection&, Bytes data) {
  if (state == State::kDead || closing) return;
  if (!tls) {
    on_plain(data);
    return;
  }
  if (!tls->handshake_done()) {
    tls->feed_ciphertext(data);
    data = {};
    auto hs = tls->handshake();
    flush_tls();
    if (!hs.ok()) {
      if (hs.error() == tls::TlsError::kHttpRequest && tcp) {
        // Plain HTTP on the TLS port: answer as Go's server does, then hang up.
        static constexpr std::string_view kBad =
            "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
        (void)tcp->write(as_bytes(kBad));
      }
      svc->counters_.tls_errors.inc();
      end_after_flush();
      return;
    }
    if (!tls->handshake_done()) return;
  }
  std::byte* buf = svc->scratch_.get();
  for (;;) {
    // The first read decrypts the received bytes where they lie; only a partial record is copied.
    auto r = tls->read_plaintext(std::exchange(data, Bytes{}), MutBytes(buf, kScratch));
    if (!r) {
      flush_tls();
      if (r.error() != tls::TlsError::kPeerClosed) svc->counters_.tls_errors.inc();
      end_after_flush();
      return;
    }
    if (*r == 0) break;
    // The scratch buffer is reused by pump(); frames that span reads are copied by the reader.
    on_plain(Bytes(buf, *r));
    if (state == State::kDead || closing) return;
  }
  flush_tls();
  svc->flush_outputs();
}

void DerpService::Conn::on_plain(Bytes data) {
  if (state == State::kHttp) {
    on_http(data);
  } else if (ws) {
    auto st = ws->feed(data, *this);
    flush_ws();
    if (!st.ok() && state != State::kDead) {
      if (st.error() != http::WsError::kPeerClosed) svc->counters_.protocol_errors.inc();
      end_after_flush();
      return;
    }
  } else if (state != State::kDead) {
    on_derp(data);  // frames, or bytes held behind an admission, registration or switch
  }
  if (!tls) svc->flush_outputs();
}

void DerpService::Conn::on_http(Bytes data) {
  if (http_in.size() + data.size() > kMaxHttpBuffered) {
    // Only possible with pipelined junk or a head past the limit: the parser says which.
    data = data.first(std::min(data.size(), kMaxHttpBuffered - http_in.size()));
  }
  http_in.append(reinterpret_cast<const char*>(data.data()), data.size());
  while (state == State::kHttp && !http_in.empty()) {
    auto head = http::parse_request_head(as_bytes(http_in));
    if (!head) {
      if (head.error() == http::ParseError::kIncomplete) return;
      const bool large = head.error() != http::ParseError::kMalformed;
      std::string resp;
      http::Header h[] = {{"Content-Type", "text/plain; charset=utf-8"}, {"Connection", "close"}};
      http::append_response(resp, large ? 431 : 400, h, large ? "request header too large\n" : "bad request\n");
      send(as_bytes(resp));
      end_after_flush();
      return;
    }
    svc->counters_.http_requests.inc();
    std::string_view bdns = "{}";
    if (!port80 && head->path == "/bootstrap-dns" && svc->bootstrap_) bdns = svc->bootstrap_->answer(head->query);
    http::Route r = http::route(*head, port80 ? svc->site80_ : svc->settings_.site, bdns);
    if (r.kind == http::RouteKind::kRespond) {
      send(as_bytes(r.response));
      if (r.close_after || head->has_body()) {
        end_after_flush();
        return;
      }
      http_in.erase(0, head->head_size);
      if (tcp) tcp->set_deadline(svc->loop_.now() + svc->settings_.http_idle_timeout);
      continue;
    }
    if (r.kind == http::RouteKind::kUpgradeWebSocket) {
      svc->counters_.websocket_upgrades.inc();
      send_wire(as_bytes(r.response));  // the 101 itself is not inside the WebSocket
      ws = std::make_unique<http::WebSocketServer>(http::WebSocketOptions{});
    }
    // /derp upgrade: the 101 (unless fast start), then ServerKey; bytes after the head are DERP.
    svc->counters_.upgrades.inc();
    not_ideal = head->header("Ideal-Node").has_value();
    std::string rest = http_in.substr(head->head_size);
    http_in.clear();
    http_in.shrink_to_fit();
    if (!r.response.empty() && !ws) send(as_bytes(r.response));
    std::byte key_frame[protocol::kFrameHeaderLen + 8 + protocol::kKeyLen];
    std::size_t n = protocol::write_server_key(key_frame, svc->settings_.server_public);
    send(Bytes(key_frame, n));
    state = State::kHandshake;
    svc->shard_.note_accept();
    if (!rest.empty()) on_plain(as_bytes(rest));
    return;
  }
}

void DerpService::Conn::on_derp(Bytes data) {
  if (state == State::kSwitching && held.size() + data.size() > kMaxHeldWhileSwitching) {
    // More than the kernel should have had when reading paused: stop waiting for the switch.
    svc->shard_.release_held(id);
    finish_switch();
    if (state == State::kDead || closing) return;
  }
  if (state == State::kAdmission || state == State::kRegistering || state == State::kSwitching) {
    if (state != State::kSwitching && held.size() + data.size() > kMaxHeldWhileAdmitting) {
      end(server::ConnEnd::kProtocolError);
      return;
    }
    held.append(reinterpret_cast<const char*>(data.data()), data.size());
    return;
  }
  protocol::Frame f;
  while (state == State::kHandshake || state == State::kDerp) {
    auto st = reader.next(data, f);
    if (st == protocol::FrameReader::Status::kNeedMore) break;
    if (st == protocol::FrameReader::Status::kError) {
      if (state == State::kHandshake)
        svc->counters_.handshake_errors.inc();
      else
        svc->counters_.protocol_errors.inc();
      end(server::ConnEnd::kProtocolError);
      return;
    }
    on_frame(f);
    if (state == State::kAdmission || state == State::kRegistering || state == State::kSwitching) {
      // Frames after ClientInfo wait for the decision (derper blocks the connection meanwhile);
      // frames after a held one wait for the switch.
      held.assign(reinterpret_cast<const char*>(data.data()), data.size());
      if (tcp) tcp->pause_reading();
      return;
    }
  }
  if (state == State::kDerp && reader.idle()) reader.release_memory();
}

bool DerpService::Conn::on_frame(const protocol::Frame& f) {
  if (state == State::kHandshake) {
    handshake(f);
    return true;
  }
  auto msg = protocol::parse_client_message(f);
  if (!msg) {
    svc->counters_.protocol_errors.inc();
    end(server::ConnEnd::kProtocolError);
    return false;
  }
  if (!svc->shard_.frame_may_proceed(id, svc->loop_.turn_now())) {
    // A duplicated key switches to this connection: the frame waits until every worker routes
    // the key here (out.resume, then finish_switch). Only the payload needs copying.
    held_frame = std::make_unique<HeldFrame>();
    held_frame->type = f.type;
    held_frame->length = f.length;
    held_frame->skipped = f.skipped;
    held_frame->payload.assign(f.payload.begin(), f.payload.end());
    state = State::kSwitching;
    return true;
  }
  if (!svc->shard_.frame_received(id, *msg, svc->loop_.turn_now())) {
    if (tcp) tcp->pause_reading();
    return false;
  }
  return true;
}

void DerpService::Conn::finish_switch() {
  if (state != State::kSwitching) return;
  state = State::kDerp;
  std::unique_ptr<HeldFrame> hf = std::move(held_frame);
  if (hf) {
    const protocol::Frame f{hf->type, hf->length, Bytes(hf->payload), hf->skipped};
    if (!on_frame(f)) return;  // closing (or closed)
  }
  if (state != State::kDerp) return;
  if (tcp) tcp->resume_reading();
  if (!held.empty()) {
    std::string bytes = std::move(held);
    held.clear();
    on_derp(as_bytes(bytes));
  }
}

void DerpService::Conn::handshake(const protocol::Frame& f) {
  auto hello = protocol::open_client_info(f, svc->settings_.server_private);
  if (!hello) {
    svc->counters_.handshake_errors.inc();
    spdlog::debug("derp: handshake from {} failed: {}", remote.to_string(), protocol::to_string(hello.error()));
    end(server::ConnEnd::kProtocolError);
    return;
  }
  pending = server::ClientParams{};
  pending.key = hello->key;
  pending.remote = remote;
  pending.mesh_peer = protocol::is_mesh_peer(hello->info, svc->settings_.mesh_key);
  pending.prober = hello->info.is_prober;
  pending.can_ack_pings = hello->info.can_ack_pings;
  pending.not_ideal = not_ideal;

  // derper asks the admission controller about everyone but mesh peers.
  if (AdmissionClient* adm = svc->settings_.admission; adm != nullptr && !pending.mesh_peer) {
    const std::uint64_t token = (std::uint64_t{index} << 32) | serial;
    switch (adm->submit(svc->worker_, token, pending.key, remote.addr)) {
      case AdmissionSubmit::kPending:
        state = State::kAdmission;
        return;
      case AdmissionSubmit::kRejectNow:
        end(server::ConnEnd::kProtocolError);
        return;
      case AdmissionSubmit::kAdmitNow:
        break;
    }
  }
  admit();
}

void DerpService::Conn::admit() {
  // derper registers, then sends ServerInfo: a client may be sent to as soon as it has it. Here
  // the directory is replicated per worker, so ServerInfo waits until the key's home shard has
  // taken the registration and this worker's replica shows it, or, when the key has other
  // connections, until every worker acknowledged it (microseconds; bounded below).
  id = svc->shard_.client_registered(pending, svc->loop_.now());
  registered = true;
  registered_at = svc->loop_.now();
  if (svc->by_client_slot_.size() <= id.slot) svc->by_client_slot_.resize(id.slot + 1, nullptr);
  svc->by_client_slot_[id.slot] = this;
  state = State::kRegistering;
  if (!try_finish_registration(false)) svc->registering_.push_back(index);
}

bool DerpService::Conn::try_finish_registration(bool force) {
  if (state != State::kRegistering) return true;
  if (!force && !svc->shard_.registration_visible(id)) return false;
  std::byte info[512];
  auto n = protocol::write_server_info(info, svc->settings_.server_private, pending.key);
  if (!n) {
    end(server::ConnEnd::kProtocolError);
    return true;
  }
  send(Bytes(info, *n));
  state = State::kDerp;
  reader.set_limits(protocol::server_limits());
  if (tcp) {
    tcp->clear_deadline();
    tcp->resume_reading();
  }
  if (!held.empty()) {
    std::string bytes = std::move(held);
    held.clear();
    on_derp(as_bytes(bytes));
  }
  return true;
}

bool DerpService::Conn::send(Bytes b) {
  if (!ws) return send_wire(b);
  auto w = ws->write(b);
  flush_ws();
  return w.ok() && *w == b.size();
}

bool DerpService::Conn::send_wire(Bytes b) {
  if (!tcp || !tcp->is_open()) return false;
  if (!tls) return tcp->write(b).ok();
  auto w = tls->write_plaintext(b);
  flush_tls();
  return w.ok() && *w == b.size();
}

void DerpService::Conn::flush_ws() {
  if (!ws) return;
  while (ws->pending_output_bytes() > 0) {
    Bytes out = ws->pending_output();
    if (!send_wire(out)) break;
    ws->consume_output(out.size());
  }
}

bool DerpService::Conn::room_for_chunk() const {
  if (!tcp || !tcp->is_open() || tcp->write_room() < 2 * kTlsChunk) return false;
  if (tls && tls->pending_ciphertext_bytes() >= kTlsBacklog) return false;
  if (ws && ws->pending_output_bytes() > 0) return false;
  return true;
}

void DerpService::Conn::flush_tls() {
  if (!tls || !tcp || !tcp->is_open()) return;
  while (tls->pending_ciphertext_bytes() > 0) {
    std::size_t k = std::min(tls->pending_ciphertext_bytes(), tcp->write_room());
    if (k == 0) break;
    MutBytes span = tcp->reserve(k);
    if (span.empty()) break;
    std::memcpy(span.data(), tls->pending_ciphertext().data(), k);
    tcp->commit(k);
    tls->consume_ciphertext(k);
  }
}

void DerpService::Conn::on_drained(io::TcpConnection&) {
  if (state == State::kDead || closing) return;
  if (write_deadline) {
    write_deadline = false;
    if (tcp) tcp->clear_deadline();
  }
  flush_ws();
  flush_tls();
  if (serving()) svc->pump(*this);
}

void DerpService::Conn::on_peer_closed(io::TcpConnection&) { end(server::ConnEnd::kPeerClosed); }

void DerpService::Conn::on_error(io::TcpConnection&, io::TcpError e, int) {
  const bool timeout = e == io::TcpError::kDeadline || e == io::TcpError::kIdleTimeout;
  if (timeout) svc->counters_.timeouts.inc();
  // A deadline in the DERP state is the write timeout: the frames of the last pull never left.
  const bool write_side = e == io::TcpError::kBrokenPipe || e == io::TcpError::kSendFailed || timeout;
  end(write_side ? server::ConnEnd::kWriteError : server::ConnEnd::kReadError);
}

void DerpService::Conn::on_closed(io::TcpConnection&) { end(server::ConnEnd::kPeerClosed); }

void DerpService::Conn::end_after_flush() {
  if (state == State::kDead || closing) return;
  if (!tcp || !tcp->is_open()) {
    end(server::ConnEnd::kPeerClosed);
    return;
  }
  flush_tls();
  if (registered) {
    registered = false;
    svc->by_client_slot_[id.slot] = nullptr;
    svc->shard_.client_closed(id, server::ConnEnd::kPeerClosed);
  }
  closing = true;  // nothing more is read; on_closed() finishes once the queue has drained
  tcp->close_after_flush();
  if (tcp->is_closed()) end(server::ConnEnd::kPeerClosed);
}

void DerpService::Conn::end(server::ConnEnd how) {
  if (state == State::kDead) return;
  if (registered) {
    registered = false;
    svc->by_client_slot_[id.slot] = nullptr;
    svc->shard_.client_closed(id, how);
  }
  tcp.reset();  // closes (or finishes closing) the socket; frees itself when the kernel is done
  tls.reset();
  ws.reset();
  listener->connection_closed();
  svc->remove(*this);
}

}  // namespace derpd::daemon
