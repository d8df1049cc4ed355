#include "relay/daemon/mesh_links.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <limits>
#include <random>
#include <unordered_map>
#include <stdexcept>
#include <variant>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "client/derp/client.h"
#include "client/derp/url.h"
#include "relay/http/head.h"
#include "relay/protocol/frame.h"
#include "relay/protocol/messages.h"

namespace derpd::daemon {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Serialized event: type(1) how(1) pad(2) gen(4) key(32).
constexpr std::size_t kEventSize = 8 + protocol::kKeyLen;
// Bytes pulled from the shard per frame-ring record.
constexpr std::size_t kPullChunk = 64 * 1024;
// Link thread: frame-ring records written per turn, messages read per turn.
constexpr std::size_t kRecordsPerTurn = 64;
constexpr int kMessagesPerTurn = 256;
// Waiting for room in a full event ring.
constexpr milliseconds kRoomPoll{5};
// A connection that lived this long resets the backoff.
constexpr std::chrono::seconds kStableSession{10};

void signal_fd(int fd) {
  if (fd < 0) return;
  const std::uint64_t one = 1;
  ssize_t r = ::write(fd, &one, sizeof one);
  (void)r;  // EAGAIN: the counter is saturated, a wake-up is pending anyway
}

void drain_fd(int fd) {
  std::uint64_t v = 0;
  ssize_t r = ::read(fd, &v, sizeof v);
  (void)r;  // EAGAIN: nothing pending
}

int make_eventfd() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw std::runtime_error(fmt::format("mesh: eventfd: {}", std::strerror(errno)));
  return fd;
}

std::string bracket_if_v6(std::string_view host) {
  if (host.find(':') != std::string_view::npos && !host.starts_with('[')) return fmt::format("[{}]", host);
  return std::string(host);
}

server::ConnEnd end_for(derpclient::Error e) {
  return e == derpclient::Error::kClosed ? server::ConnEnd::kPeerClosed : server::ConnEnd::kReadError;
}

}  // namespace

// --- configuration -------------------------------------------------------------------------------

Result<std::optional<MeshTarget>, std::string> parse_mesh_target(std::string_view entry, bool tls,
                                                                std::string_view own_hostname,
                                                                std::uint16_t own_port) {
  using R = Result<std::optional<MeshTarget>, std::string>;
  MeshTarget t;
  t.entry = std::string(entry);
  if (entry.empty()) return R(Err{std::string("empty mesh-with entry")});
  if (entry.find("://") != std::string_view::npos) {
    auto u = derpclient::parse_url(entry);
    if (!u) return R(Err{fmt::format("mesh-with entry \"{}\": not an http(s) URL", entry)});
    t.url = u->to_string();
    return R(std::optional<MeshTarget>(std::move(t)));
  }
  std::string_view host = entry, dial_host;
  if (const std::size_t slash = entry.find('/'); slash != std::string_view::npos) {
    host = entry.substr(0, slash);
    dial_host = entry.substr(slash + 1);
    if (dial_host.find('/') != std::string_view::npos)
      return R(Err{fmt::format("mesh-with entry \"{}\": too many components in host tuple", entry)});
    if (dial_host.empty()) return R(Err{fmt::format("mesh-with entry \"{}\": empty dial host", entry)});
  }
  const char* scheme = tls ? "https://" : "http://";
  auto u = derpclient::parse_url(fmt::format("{}{}/derp", scheme, host));
  if (!u) return R(Err{fmt::format("mesh-with entry \"{}\": \"{}\" is not a host[:port]", entry, host)});
  if (http::iequals(u->host, own_hostname) && (!u->explicit_port || u->port == own_port)) return R(std::optional<MeshTarget>());
  t.url = u->to_string();
  if (dial_host.empty()) return R(std::optional<MeshTarget>(std::move(t)));
  // derper keeps the URL (TLS name, Host header) and only connects somewhere else. The dial host is
  // checked with the URL parser (a host name or an IP literal, nothing else).
  auto d = derpclient::parse_url(fmt::format("{}{}/derp", scheme, bracket_if_v6(dial_host)));
  if (!d) return R(Err{fmt::format("mesh-with entry \"{}\": dial host \"{}\" is not a host name or IP", entry, dial_host)});
  if (!http::iequals(d->host, u->host)) t.dial_host = d->host;
  return R(std::optional<MeshTarget>(std::move(t)));
}

MeshOptions mesh_options_from_config(const config::Config& cfg, const protocol::NodePrivate& server_private,
                                     const protocol::MeshKey& mesh_key, bool tls, std::uint16_t derp_port,
                                     unsigned workers) {
  MeshOptions o;
  o.server_private = server_private;
  o.mesh_key = mesh_key;
  o.workers = workers == 0 ? 1 : workers;
  if (cfg.mesh_with.empty()) return o;
  if (mesh_key.is_zero()) throw std::runtime_error("--mesh-with requires --mesh-psk-file");
  for (const std::string& entry : cfg.mesh_with) {
    auto t = parse_mesh_target(entry, tls, cfg.hostname, derp_port);
    if (!t) throw std::runtime_error(t.error());
    if (!t->has_value()) continue;  // this node
    const bool dup = std::any_of(o.targets.begin(), o.targets.end(), [&](const MeshTarget& x) {
      return x.url == (*t)->url && x.dial_host == (*t)->dial_host;
    });
    if (!dup) o.targets.push_back(std::move(**t));
  }
  return o;
}

// --- LinkChannel -----------------------------------------------------------------------------------

LinkChannel::LinkChannel(int worker_wake_fd, std::size_t event_ring_bytes, std::size_t frame_ring_bytes)
    : worker_fd_(worker_wake_fd), link_fd_(make_eventfd()), events_(event_ring_bytes), frames_(frame_ring_bytes) {}

LinkChannel::~LinkChannel() {
  if (link_fd_ >= 0) ::close(link_fd_);
}

bool LinkChannel::try_post(const LinkEvent& e) {
  std::array<std::byte, kEventSize> b{};
  b[0] = static_cast<std::byte>(e.type);
  b[1] = static_cast<std::byte>(e.how);
  std::memcpy(b.data() + 4, &e.gen, 4);
  std::memcpy(b.data() + 8, e.key.data(), protocol::kKeyLen);
  return events_.try_write(b);
}

void LinkChannel::wake_worker() { signal_fd(worker_fd_); }

bool LinkChannel::frames_pending() { return !frames_.front().empty(); }

void LinkChannel::wait(milliseconds timeout, bool return_on_frames, int peer_fd) {
  link_sleeping_.store(true, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!return_on_frames || !frames_pending()) {
    std::array<pollfd, 2> p{pollfd{link_fd_, POLLIN, 0}, pollfd{peer_fd, POLLIN, 0}};
    const auto ms = std::clamp<std::int64_t>(timeout.count(), 0, std::numeric_limits<int>::max());
    (void)::poll(p.data(), peer_fd >= 0 ? 2 : 1, static_cast<int>(ms));
  }
  link_sleeping_.store(false, std::memory_order_relaxed);
  drain_fd(link_fd_);
}

void LinkChannel::wake_worker_for_room() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (worker_wants_room_.load(std::memory_order_relaxed) && worker_wants_room_.exchange(false)) wake_worker();
}

bool LinkChannel::pop_event(LinkEvent& e) {
  for (;;) {
    Bytes b = events_.front();
    if (b.empty()) return false;
    const bool ok = b.size() == kEventSize;  // always: only try_post() writes this ring
    if (ok) {
      e.type = static_cast<LinkEventType>(b[0]);
      e.how = static_cast<server::ConnEnd>(b[1]);
      std::memcpy(&e.gen, b.data() + 4, 4);
      e.key = protocol::NodePublic::from_raw(b.subspan(8).first<protocol::kKeyLen>());
    }
    events_.pop();
    if (ok) return true;
  }
}

std::size_t LinkChannel::pull_frames(server::RelayShard& shard, server::ClientId id, std::uint32_t gen) {
  std::size_t total = 0;
  const std::size_t chunk = std::min(kPullChunk, frames_.max_record() - kFrameHeader);
  while (shard.has_output(id)) {
    const std::size_t want = std::min(shard.pending_bytes(id), chunk);
    if (want == 0) break;
    MutBytes span = frames_.try_reserve(kFrameHeader + want);
    if (span.data() == nullptr) {
      // Full: ask the link thread to wake us once it has made room, then look once more (it may
      // have drained the ring before it could see the request).
      worker_wants_room_.store(true, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      span = frames_.try_reserve(kFrameHeader + want);
      if (span.data() == nullptr) break;
      worker_wants_room_.store(false, std::memory_order_relaxed);
    }
    const std::size_t n = shard.pull(id, span.subspan(kFrameHeader, want));
    if (n == 0) break;  // the reservation is simply forgotten
    const auto len = static_cast<std::uint32_t>(n);
    std::memcpy(span.data(), &gen, 4);
    std::memcpy(span.data() + 4, &len, 4);
    frames_.commit();
    total += n;
  }
  if (total != 0) wake_link_if_sleeping();
  return total;
}

void LinkChannel::wake_link_if_sleeping() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (link_sleeping_.load(std::memory_order_relaxed)) signal_fd(link_fd_);
}

void LinkChannel::request_reset() {
  reset_.store(true, std::memory_order_release);
  wake_link();
}

void LinkChannel::wake_link() { signal_fd(link_fd_); }

// --- MeshBridge ------------------------------------------------------------------------------------

MeshBridge::MeshBridge() : wake_fd_(make_eventfd()) {}

MeshBridge::~MeshBridge() {
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void MeshBridge::add(LinkChannel* channel) {
  Slot s;
  s.channel = channel;
  slots_.push_back(s);
}

void MeshBridge::close_slot(server::RelayShard& shard, Slot& s, server::ConnEnd how) {
  if (!s.open) return;
  s.open = false;
  shard.client_closed(s.id, how);
}

void MeshBridge::on_wake(server::RelayShard& shard, server::Nanos now) {
  drain_fd(wake_fd_);
  bool again = false;
  for (Slot& s : slots_) {
    std::size_t k = 0;
    LinkEvent e;
    while (k < kEventBudget && s.channel->pop_event(e)) {
      ++k;
      switch (e.type) {
        case LinkEventType::kOpened:
          close_slot(shard, s, server::ConnEnd::kPeerClosed);  // never expected: closed comes first
          s.id = shard.mesh_link_opened(e.key, now);
          s.gen = e.gen;
          s.open = true;
          break;
        case LinkEventType::kPresent:
          if (s.open && s.gen == e.gen) shard.mesh_link_peer_present(s.id, e.key);
          break;
        case LinkEventType::kGone:
          if (s.open && s.gen == e.gen) shard.mesh_link_peer_gone(s.id, e.key);
          break;
        case LinkEventType::kClosed:
          if (s.open && s.gen == e.gen) close_slot(shard, s, e.how);
          break;
      }
    }
    if (k == kEventBudget) again = true;
    if (k != 0) s.channel->wake_link_if_sleeping();  // it may wait for room in the event ring
    if (s.open) s.channel->pull_frames(shard, s.id, s.gen);
  }
  if (again) signal_fd(wake_fd_);  // come back on the next loop turn for the rest
}

bool MeshBridge::owns(server::ClientId id) const {
  return std::any_of(slots_.begin(), slots_.end(), [&](const Slot& s) { return s.open && s.id == id; });
}

void MeshBridge::pump(server::RelayShard& shard, server::ClientId id) {
  for (Slot& s : slots_)
    if (s.open && s.id == id) s.channel->pull_frames(shard, s.id, s.gen);
}

void MeshBridge::close_requested(server::RelayShard& shard, server::ClientId id) {
  for (Slot& s : slots_) {
    if (!s.open || !(s.id == id)) continue;
    close_slot(shard, s, server::ConnEnd::kRequested);
    s.channel->request_reset();
  }
}

std::size_t MeshBridge::open_links() const {
  return static_cast<std::size_t>(std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.open; }));
}

// --- MeshLinks -------------------------------------------------------------------------------------

struct MeshLinks::Link {
  Link(std::size_t i, MeshTarget t, unsigned w, int worker_fd, const MeshOptions& o)
      : index(i), target(std::move(t)), worker(w), channel(worker_fd, o.event_ring_bytes, o.frame_ring_bytes) {}

  std::size_t index;
  MeshTarget target;
  unsigned worker;
  LinkChannel channel;
  LinkCounters counters;
  std::thread thread;
};

MeshLinks::MeshLinks(MeshOptions options) : options_(std::move(options)) {
  if (options_.workers == 0) options_.workers = 1;
  if (!options_.targets.empty()) own_key_ = options_.server_private.public_key();
  bridges_.resize(options_.workers);
  for (std::size_t i = 0; i < options_.targets.size(); ++i) {
    const auto w = static_cast<unsigned>(i % options_.workers);
    if (!bridges_[w]) bridges_[w] = std::make_unique<MeshBridge>();
    links_.push_back(std::make_unique<Link>(i, options_.targets[i], w, bridges_[w]->wake_fd(), options_));
    bridges_[w]->add(&links_.back()->channel);
  }
}

MeshLinks::~MeshLinks() { stop(); }

MeshBridge* MeshLinks::bridge(unsigned worker) const {
  return worker < bridges_.size() ? bridges_[worker].get() : nullptr;
}

const MeshTarget& MeshLinks::target(std::size_t i) const { return links_.at(i)->target; }
const LinkCounters& MeshLinks::counters(std::size_t i) const { return links_.at(i)->counters; }

void MeshLinks::report(std::vector<metrics::MeshLinkTotals>& out) const {
  for (const auto& l : links_) {
    const LinkCounters& c = l->counters;
    metrics::MeshLinkTotals& t = out.emplace_back();
    t.peer = l->target.entry;
    t.up = c.connected.load(std::memory_order_relaxed);
    t.self = c.self.load(std::memory_order_relaxed);
    t.connects = c.connects.get();
    t.connect_failures = c.connect_failures.get();
    t.disconnects = c.disconnects.get();
    t.clients = std::max<std::int64_t>(c.peers.load(std::memory_order_relaxed), 0);
    t.present_events = c.present.get();
    t.gone_events = c.gone.get();
    t.forwarded_packets = c.frames_out.get();
    t.forwarded_bytes = c.bytes_out.get();
  }
}

void MeshLinks::start() {
  if (started_) return;
  started_ = true;
  for (auto& l : links_) {
    Link* link = l.get();
    link->thread = std::thread([this, link] { run(*link); });
  }
}

void MeshLinks::stop() {
  stop_.store(true, std::memory_order_release);
  for (auto& l : links_) l->channel.wake_link();
  for (auto& l : links_)
    if (l->thread.joinable()) l->thread.join();
}

void MeshLinks::run(Link& link) {
  const std::string name = fmt::format("derpd-mesh{}", link.index);
  pthread_setname_np(pthread_self(), name.c_str());
  const std::string tag = fmt::format("mesh({})", link.target.entry);
  LinkChannel& ch = link.channel;
  LinkCounters& ctr = link.counters;
  std::mt19937_64 rng(std::random_device{}());
  auto stopping = [this] { return stop_.load(std::memory_order_acquire); };

  // Blocks while the event ring is full (the worker wakes us when it has drained some; frames
  // waiting meanwhile stay in their ring).
  auto post = [&](const LinkEvent& e) {
    while (!ch.try_post(e)) {
      if (stopping()) return false;
      ch.wake_worker();
      ch.wait(kRoomPoll, /*return_on_frames=*/false);
    }
    return true;
  };
  // Sleeps for `d` unless stop() is called.
  auto sleep_for = [&](Clock::duration d) {
    const auto until = Clock::now() + d;
    while (!stopping()) {
      const auto left = std::chrono::duration_cast<milliseconds>(until - Clock::now());
      if (left.count() <= 0) return;
      ch.wait(left);  // stop() wakes it
      (void)ch.consume_frames(0, [](Bytes) { return true; }, ~std::size_t{0}, &ctr.bytes_discarded);
    }
  };

  derpclient::Options opts;
  opts.url = link.target.url;
  opts.private_key = options_.server_private;
  opts.mesh_key = options_.mesh_key;
  opts.dial_host = link.target.dial_host;
  opts.app_name = "derpd-mesh";
  opts.can_ack_pings = true;
  opts.watch_conns = false;  // after the self-connect check
  opts.connect_timeout = options_.connect_timeout;
  opts.write_timeout = options_.write_timeout;

  if (link.target.dial_host.empty())
    spdlog::debug("{}: dialing {}", tag, link.target.url);
  else
    spdlog::debug("{}: dialing {} for {}", tag, link.target.dial_host, link.target.url);
  milliseconds backoff = options_.min_backoff;
  std::uint32_t gen = 0;
  std::string last_failure;
  bool first = true;
  while (!stopping()) {
    if (!first) {
      const auto lo = backoff.count() / 2, hi = std::max<std::int64_t>(backoff.count(), 1);
      sleep_for(milliseconds(std::uniform_int_distribution<std::int64_t>(lo, hi)(rng)));
      backoff = std::min(backoff * 2, options_.max_backoff);
      if (stopping()) break;
    }
    first = false;

    std::string why;
    auto connected = derpclient::Client::connect(opts, &why);
    if (!connected) {
      ctr.connect_failures.inc();
      const std::string msg = fmt::format("{}: {}", derpclient::to_string(connected.error()), why);
      if (msg != last_failure) spdlog::warn("{}: connect: {}", tag, msg);
      else spdlog::debug("{}: connect: {}", tag, msg);
      last_failure = msg;
      continue;
    }
    derpclient::Client& c = *connected;
    if (c.server_key() == own_key_) {
      spdlog::info("{}: detected self-connect; ignoring host", tag);
      ctr.self.store(true, std::memory_order_release);
      return;
    }
    if (auto s = c.watch_conns(); !s) {
      ctr.connect_failures.inc();
      spdlog::warn("{}: WatchConns: {}", tag, c.error_detail());
      continue;
    }
    ++gen;
    if (!post(LinkEvent{LinkEventType::kOpened, server::ConnEnd::kPeerClosed, gen, c.server_key()})) break;
    ch.wake_worker();
    ctr.connects.inc();
    ctr.connected.store(true, std::memory_order_release);
    last_failure.clear();
    spdlog::info("{}: connected to {} ({}); watching its clients", tag, c.server_key().to_string(),
                 c.info().tls.version.empty() ? "plaintext" : c.info().tls.version);
    const auto started = Clock::now();

    // --- the session ---
    // What the peer reports connected there now, and whether each is a client (not a mesh node's
    // link, ours included) for the clients gauge.
    std::unordered_map<protocol::NodePublic, bool> present;
    std::int64_t clients = 0;
    auto set_clients = [&](std::int64_t n) {
      ctr.peers.fetch_add(n - clients, std::memory_order_relaxed);
      clients = n;
    };
    protocol::FrameReader reader(protocol::server_limits());
    server::ConnEnd how = server::ConnEnd::kShutdown;
    auto last_rx = Clock::now();
    bool write_failed = false, bad_stream = false;
    auto sink = [&](Bytes b) {
      protocol::Frame f;
      for (;;) {
        const auto st = reader.next(b, f);
        if (st == protocol::FrameReader::Status::kNeedMore) return true;
        const protocol::ForwardPacket* fp = nullptr;
        std::optional<Result<protocol::ClientMessage, protocol::FrameError>> m;
        if (st == protocol::FrameReader::Status::kFrame) m.emplace(protocol::parse_client_message(f));
        if (m && m->ok()) fp = std::get_if<protocol::ForwardPacket>(&m->value());
        if (fp == nullptr) {
          ctr.bad_frames.inc();
          bad_stream = true;
          return false;
        }
        if (auto s = c.forward_packet(fp->src, fp->dst, fp->packet); !s) {
          write_failed = true;
          return false;
        }
        ctr.frames_out.inc();
        ctr.bytes_out.inc(fp->packet.size());
      }
    };
    for (;;) {
      if (stopping()) {
        how = server::ConnEnd::kShutdown;
        break;
      }
      if (ch.take_reset_request()) {
        how = server::ConnEnd::kRequested;
        spdlog::info("{}: closed by the relay; redialing", tag);
        break;
      }
      ch.consume_frames(gen, sink, kRecordsPerTurn, &ctr.bytes_discarded);
      if (write_failed) {
        how = server::ConnEnd::kWriteError;
        spdlog::warn("{}: forwarding: {}", tag, c.error_detail());
        break;
      }
      if (bad_stream) {
        how = server::ConnEnd::kProtocolError;
        spdlog::error("{}: the relay's frame stream for this link did not parse; redialing", tag);
        break;
      }

      int got = 0;
      bool posted = false, broken = false;
      while (got < kMessagesPerTurn) {
        auto m = c.recv(milliseconds(0));
        if (!m) {
          if (m.error() == derpclient::Error::kTimeout) break;
          how = end_for(m.error());
          spdlog::warn("{}: recv: {}", tag, c.error_detail());
          broken = true;
          break;
        }
        ++got;
        last_rx = Clock::now();
        if (auto* pp = std::get_if<derpclient::PeerPresent>(&*m)) {
          ctr.present.inc();
          const bool client = (pp->flags & protocol::kPeerPresentIsMeshPeer) == 0 && pp->peer != own_key_;
          auto [it, added] = present.try_emplace(pp->peer, false);
          const bool was = it->second;
          it->second = client;
          if (client != was) set_clients(clients + (client ? 1 : -1));
          if (!post(LinkEvent{LinkEventType::kPresent, server::ConnEnd::kPeerClosed, gen, pp->peer})) break;
          posted = true;
        } else if (auto* pg = std::get_if<derpclient::PeerGone>(&*m)) {
          ctr.gone.inc();
          if (auto it = present.find(pg->peer); it != present.end()) {
            if (it->second) set_clients(clients - 1);
            present.erase(it);
          }
          if (!post(LinkEvent{LinkEventType::kGone, server::ConnEnd::kPeerClosed, gen, pg->peer})) break;
          posted = true;
        } else if (auto* h = std::get_if<derpclient::Health>(&*m)) {
          if (!h->problem.empty()) spdlog::warn("{}: peer reports a health problem: {}", tag, h->problem);
        } else if (auto* r = std::get_if<derpclient::Restarting>(&*m)) {
          spdlog::info("{}: peer is restarting (reconnect in {} ms)", tag, r->reconnect_in.count());
        }
        // RecvPacket (nobody sends to a server key), KeepAlive, Ping (answered), Pong: nothing.
      }
      if (posted) ch.wake_worker();
      if (broken) break;
      const auto idle_left = last_rx + options_.read_idle_timeout - Clock::now();
      if (idle_left <= Clock::duration::zero()) {
        how = server::ConnEnd::kReadError;
        spdlog::warn("{}: nothing from the peer for {} s; redialing", tag,
                     std::chrono::duration_cast<std::chrono::seconds>(options_.read_idle_timeout).count());
        break;
      }
      if (got == kMessagesPerTurn || ch.frames_pending()) continue;
      // recv() said kTimeout: everything the client had buffered is consumed, so the socket's
      // readability, the worker's wake-up (frames queued, events drained, reset) and stop() are
      // the only things that can give this thread work.
      ch.wait(std::chrono::ceil<milliseconds>(idle_left), true, c.fd());
      ctr.wakeups.inc();
    }

    ctr.connected.store(false, std::memory_order_release);
    set_clients(0);
    ctr.disconnects.inc();
    c.close();
    // The worker unregisters the link (every key it reached goes with it). When stopping, one try:
    // the worker may be gone already.
    const LinkEvent closed{LinkEventType::kClosed, how, gen, {}};
    if (stopping() ? !ch.try_post(closed) : !post(closed)) break;
    ch.wake_worker();
    if (Clock::now() - started >= kStableSession) backoff = options_.min_backoff;
  }
}

}  // namespace derpd::daemon
