// TcpListener and TcpConnection logic on the fake ring: what is submitted, how completions are
// handled, what the sink sees.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "relay/io/tcp_connection.h"
#include "relay/io/tcp_listener.h"
#include "tests/unit/io/fake_ring.h"

namespace derpd::io {
namespace {

using testing::FakeRing;
using testing::ManualClock;
using testing::Submitted;
using namespace std::chrono_literals;

int tcp_fd() { return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); }

bool fd_is_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

std::uint32_t buffer_flags(std::uint16_t bid, bool more) {
  return IORING_CQE_F_BUFFER | (std::uint32_t{bid} << IORING_CQE_BUFFER_SHIFT) | (more ? IORING_CQE_F_MORE : 0);
}

struct Sink final : StreamSink {
  std::string data;
  int chunks = 0;
  int peer_closed = 0;
  int drained = 0;
  int closed = 0;
  std::vector<TcpError> errors;
  // Optional reactions, to exercise re-entrancy.
  bool close_on_data = false;
  TcpConnection::Ptr* release_on_error = nullptr;
  TcpConnection::Ptr* release_on_data = nullptr;

  void on_data(TcpConnection& c, Bytes d) override {
    data.append(as_chars(d));
    ++chunks;
    if (close_on_data) c.close();
    if (release_on_data != nullptr) release_on_data->reset();
  }
  void on_peer_closed(TcpConnection&) override { ++peer_closed; }
  void on_error(TcpConnection&, TcpError e, int) override {
    errors.push_back(e);
    if (release_on_error != nullptr) release_on_error->reset();
  }
  void on_drained(TcpConnection&) override { ++drained; }
  void on_closed(TcpConnection&) override { ++closed; }
};

struct AcceptRecorder final : AcceptSink {
  std::vector<int> fds;
  void on_accept(TcpListener&, int fd) override { fds.push_back(fd); }
  ~AcceptRecorder() {
    for (int fd : fds) ::close(fd);
  }
};

struct Fixture : ::testing::Test {
  FakeRing ring;
  ManualClock clock;
  Loop loop{ring, clock};
  BufRing bufs{2, 8, 64};
  TcpContext ctx{loop, bufs};
  Sink sink;

  Submitted last(Submitted::Kind k) {
    auto v = ring.of_kind(k);
    EXPECT_FALSE(v.empty());
    return v.empty() ? Submitted{k, -1, 0} : v.back();
  }
  std::size_t count(Submitted::Kind k) { return ring.of_kind(k).size(); }
  // The kernel fills buffer `bid` with `text` and posts the completion.
  void receive(std::uint64_t ud, std::uint16_t bid, std::string_view text, bool more = true) {
    auto b = bufs.buffer(bid);
    std::memcpy(b.data(), text.data(), text.size());
    ring.complete(ud, static_cast<std::int32_t>(text.size()), buffer_flags(bid, more));
  }
  std::string sent_bytes(const Submitted& s) { return std::string(static_cast<const char*>(s.buf), s.len); }
};

// ---- listener ---------------------------------------------------------------------------------

TEST_F(Fixture, ListenerHandsAcceptedFdsToTheSinkAndReArmsWhenTheKernelEndsTheAccept) {
  AcceptRecorder acc;
  TcpListener l(loop, tcp_fd(), acc);
  l.start();
  ASSERT_EQ(count(Submitted::kAcceptMultishot), 1u);
  auto ud = last(Submitted::kAcceptMultishot).ud;
  int a = tcp_fd(), b = tcp_fd();
  ring.complete(ud, a, IORING_CQE_F_MORE);
  ring.complete(ud, b, 0);  // multishot ended with this one
  loop.run_once(0ns);
  EXPECT_EQ(acc.fds, (std::vector<int>{a, b}));
  EXPECT_EQ(l.active(), 2u);
  EXPECT_EQ(count(Submitted::kAcceptMultishot), 2u) << "re-armed once, only after F_MORE went away";
  EXPECT_EQ(l.counters().rearms.get(), 1u);
}

TEST_F(Fixture, ListenerRefusesOverTheConnectionLimitByClosingAtOnce) {
  AcceptRecorder acc;
  TcpListenerOptions o;
  o.max_connections = 1;
  TcpListener l(loop, tcp_fd(), acc, o);
  l.start();
  auto ud = last(Submitted::kAcceptMultishot).ud;
  int a = tcp_fd(), b = tcp_fd();
  ring.complete(ud, a, IORING_CQE_F_MORE);
  ring.complete(ud, b, IORING_CQE_F_MORE);
  loop.run_once(0ns);
  EXPECT_EQ(acc.fds, (std::vector<int>{a}));
  EXPECT_EQ(l.counters().refused.get(), 1u);
  EXPECT_FALSE(fd_is_open(b)) << "the refused connection is closed, not leaked";
  l.connection_closed();
  int c = tcp_fd();
  ring.complete(ud, c, IORING_CQE_F_MORE);
  loop.run_once(0ns);
  EXPECT_EQ(acc.fds, (std::vector<int>{a, c})) << "room again after connection_closed()";
}

TEST_F(Fixture, ListenerBacksOffOnEmfileInsteadOfSpinning) {
  AcceptRecorder acc;
  TcpListenerOptions o;
  o.backoff_min = 20ms;
  o.backoff_max = 50ms;
  TcpListener l(loop, tcp_fd(), acc, o);
  l.start();
  ring.complete(last(Submitted::kAcceptMultishot).ud, -EMFILE, 0);
  loop.run_once(0ns);
  EXPECT_EQ(l.counters().fd_exhausted.get(), 1u);
  EXPECT_EQ(count(Submitted::kAcceptMultishot), 1u) << "no immediate re-arm";
  for (int i = 0; i < 5; ++i) loop.run_once(0ns);  // turns pass, time does not
  EXPECT_EQ(count(Submitted::kAcceptMultishot), 1u);
  clock.t += 20ms;
  loop.run_once(0ns);
  ASSERT_EQ(count(Submitted::kAcceptMultishot), 2u) << "re-armed after the back-off";
  // Fails again: the back-off doubles (40ms), capped at 50ms after that.
  ring.complete(last(Submitted::kAcceptMultishot).ud, -ENFILE, 0);
  loop.run_once(0ns);
  clock.t += 39ms;
  loop.run_once(0ns);
  EXPECT_EQ(count(Submitted::kAcceptMultishot), 2u);
  clock.t += 1ms;
  loop.run_once(0ns);
  EXPECT_EQ(count(Submitted::kAcceptMultishot), 3u);
  EXPECT_EQ(l.counters().backoffs.get(), 2u);
  EXPECT_EQ(l.counters().fd_exhausted.get(), 2u);
}

// A burst beyond the connection limit: every refusal needs a descriptor for a moment, so the
// accept can run out of them while refusing; having just given some back, it re-arms at once
// rather than leaving the rest of the burst waiting out a back-off.
TEST_F(Fixture, ListenerReArmsAtOnceOnEmfileAfterRefusalsGaveDescriptorsBack) {
  AcceptRecorder acc;
  TcpListenerOptions o;
  o.max_connections = 1;
  TcpListener l(loop, tcp_fd(), acc, o);
  l.start();
  auto ud = last(Submitted::kAcceptMultishot).ud;
  ring.complete(ud, tcp_fd(), IORING_CQE_F_MORE);  // accepted: at the limit now
  ring.complete(ud, tcp_fd(), IORING_CQE_F_MORE);  // refused: its descriptor closed
  ring.complete(ud, -EMFILE, 0);
  loop.run_once(0ns);
  EXPECT_EQ(l.counters().refused.get(), 1u);
  EXPECT_EQ(l.counters().fd_exhausted.get(), 1u);
  EXPECT_EQ(count(Submitted::kAcceptMultishot), 2u) << "re-armed without waiting";
  EXPECT_EQ(l.counters().backoffs.get(), 0u);
  // Exhausted again with nothing given back since: now it backs off.
  ring.complete(last(Submitted::kAcceptMultishot).ud, -EMFILE, 0);
  loop.run_once(0ns);
  EXPECT_EQ(count(Submitted::kAcceptMultishot), 2u);
  EXPECT_EQ(l.counters().backoffs.get(), 1u);
}

TEST_F(Fixture, ListenerReArmsAtOnceOnAnAbortedConnectionButBacksOffWhenErrorsRepeat) {
  AcceptRecorder acc;
  TcpListener l(loop, tcp_fd(), acc);
  l.start();
  for (std::uint32_t i = 1; i < TcpListener::kMaxErrorStreak; ++i) {
    ring.complete(last(Submitted::kAcceptMultishot).ud, -ECONNABORTED, 0);
    loop.run_once(0ns);
    EXPECT_EQ(count(Submitted::kAcceptMultishot), i + 1u);
  }
  ring.complete(last(Submitted::kAcceptMultishot).ud, -ECONNABORTED, 0);
  loop.run_once(0ns);
  EXPECT_EQ(count(Submitted::kAcceptMultishot), TcpListener::kMaxErrorStreak) << "streak: wait";
  EXPECT_EQ(l.counters().accept_errors.get(), TcpListener::kMaxErrorStreak);
  EXPECT_EQ(l.counters().backoffs.get(), 1u);
}

TEST_F(Fixture, ListenerCloseCancelsTheAcceptAndClosesLateConnections) {
  AcceptRecorder acc;
  TcpListener l(loop, tcp_fd(), acc);
  l.start();
  auto ud = last(Submitted::kAcceptMultishot).ud;
  l.close();
  ASSERT_EQ(count(Submitted::kCancel), 1u);
  EXPECT_EQ(last(Submitted::kCancel).target, ud);
  EXPECT_FALSE(l.closed()) << "waits for the kernel to end the accept";
  int late = tcp_fd();
  ring.complete(ud, late, IORING_CQE_F_MORE);
  ring.complete(ud, -ECANCELED, 0);
  loop.run_once(0ns);
  EXPECT_TRUE(acc.fds.empty());
  EXPECT_FALSE(fd_is_open(late));
  EXPECT_TRUE(l.closed());
  EXPECT_EQ(count(Submitted::kAcceptMultishot), 1u) << "never re-armed after close";
}

// ---- connection: receive ------------------------------------------------------------------------

TEST_F(Fixture, ConnectionArmsOneBufferSelectingReceive) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  ASSERT_EQ(count(Submitted::kRecvStream), 1u);
  EXPECT_EQ(last(Submitted::kRecvStream).group, 2);
  EXPECT_EQ(last(Submitted::kRecvStream).fd, c->fd());
}

TEST_F(Fixture, ReceivedChunksReachTheSinkAndBuffersGoBack) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  auto ud = last(Submitted::kRecvStream).ud;
  const auto before = bufs.available();
  receive(ud, 3, "hello ");
  receive(ud, 4, "world");
  loop.run_once(0ns);
  EXPECT_EQ(sink.data, "hello world");
  EXPECT_EQ(sink.chunks, 2);
  EXPECT_EQ(bufs.available(), before) << "both buffers were recycled";
  EXPECT_EQ(count(Submitted::kRecvStream), 1u) << "no re-arm while F_MORE";
  EXPECT_EQ(c->stats().bytes_received, 11u);
}

TEST_F(Fixture, ReArmsWhenTheKernelEndsTheMultishot) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  receive(last(Submitted::kRecvStream).ud, 0, "x", /*more=*/false);
  loop.run_once(0ns);
  EXPECT_EQ(sink.data, "x");
  EXPECT_EQ(count(Submitted::kRecvStream), 2u);
}

TEST_F(Fixture, NoBuffersRepublishesAndReArms) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  // Buffers 0 and 1 were consumed and recycled but not yet published when -ENOBUFS came.
  bufs.note_consumed();
  bufs.note_consumed();
  bufs.recycle(0);
  bufs.recycle(1);
  const auto before = bufs.available();
  ring.complete(last(Submitted::kRecvStream).ud, -ENOBUFS, 0);
  loop.run_once(0ns);
  EXPECT_EQ(ctx.counters().no_buffers.get(), 1u);
  EXPECT_EQ(bufs.available(), before + 2) << "replenished before the re-arm";
  EXPECT_EQ(count(Submitted::kRecvStream), 2u);
  EXPECT_TRUE(sink.errors.empty());
}

TEST_F(Fixture, RepeatedNoBuffersBacksOffInsteadOfSpinning) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  for (int i = 0; i < 3; ++i) {
    ring.complete(last(Submitted::kRecvStream).ud, -ENOBUFS, 0);
    loop.run_once(0ns);
  }
  EXPECT_EQ(count(Submitted::kRecvStream), 4u) << "the first few re-arm at once";
  ring.complete(last(Submitted::kRecvStream).ud, -ENOBUFS, 0);
  loop.run_once(0ns);
  loop.run_once(0ns);
  EXPECT_EQ(count(Submitted::kRecvStream), 4u) << "then a short pause";
  clock.t += 1ms;
  loop.run_once(0ns);
  EXPECT_EQ(count(Submitted::kRecvStream), 5u);
}

TEST_F(Fixture, PeerHalfCloseIsReportedOnceAndWritingStillWorks) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  ring.complete(last(Submitted::kRecvStream).ud, 0, 0);
  loop.run_once(0ns);
  EXPECT_EQ(sink.peer_closed, 1);
  EXPECT_EQ(count(Submitted::kRecvStream), 1u) << "reading stops";
  EXPECT_TRUE(c->is_open());
  EXPECT_TRUE(c->write(as_bytes("bye")).ok());
  loop.run_once(0ns);
  EXPECT_EQ(count(Submitted::kSend), 1u);
}

TEST_F(Fixture, ResetIsReportedOnceAndClosesTheConnection) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  int fd = c->fd();
  ring.complete(last(Submitted::kRecvStream).ud, -ECONNRESET, 0);
  loop.run_once(0ns);
  ASSERT_EQ(sink.errors, (std::vector<TcpError>{TcpError::kPeerReset}));
  EXPECT_FALSE(c->is_open());
  EXPECT_FALSE(fd_is_open(fd));
  EXPECT_EQ(count(Submitted::kRecvStream), 1u);
  EXPECT_FALSE(c->write(as_bytes("x")).ok());
  EXPECT_EQ(ctx.counters().errors[static_cast<std::size_t>(TcpError::kPeerReset)].get(), 1u);
}

TEST_F(Fixture, OneConnectionCannotTakeMoreThanItsBudgetInOneTurn) {
  TcpConnectionOptions o;
  o.recv_budget_per_turn = 100;
  auto c = TcpConnection::open(ctx, tcp_fd(), sink, o);
  auto ud = last(Submitted::kRecvStream).ud;
  std::string chunk(60, 'a');
  receive(ud, 0, chunk);
  receive(ud, 1, chunk);  // 120 > 100: the multishot is cancelled
  receive(ud, 2, chunk);  // already in the completion queue: still delivered
  ring.complete(ud, -ECANCELED, 0);
  loop.run_once(0ns);
  EXPECT_EQ(sink.data.size(), 180u);
  ASSERT_EQ(count(Submitted::kCancel), 1u);
  EXPECT_EQ(last(Submitted::kCancel).target, ud);
  EXPECT_EQ(ctx.counters().recv_throttled.get(), 1u);
  // Re-armed at the end of that turn (after everyone else's completions), not before.
  EXPECT_EQ(count(Submitted::kRecvStream), 2u);
  EXPECT_TRUE(c->is_open());
  // A new turn starts a new budget.
  receive(last(Submitted::kRecvStream).ud, 3, chunk);
  loop.run_once(0ns);
  EXPECT_EQ(count(Submitted::kCancel), 1u);
}

TEST_F(Fixture, PauseCancelsTheReceiveAndResumeReArms) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  auto ud = last(Submitted::kRecvStream).ud;
  c->pause_reading();
  ASSERT_EQ(count(Submitted::kCancel), 1u);
  ring.complete(ud, -ECANCELED, 0);
  loop.run_once(0ns);
  EXPECT_EQ(count(Submitted::kRecvStream), 1u) << "paused: not re-armed";
  c->resume_reading();
  EXPECT_EQ(count(Submitted::kRecvStream), 2u);
}

// ---- connection: send ---------------------------------------------------------------------------

TEST_F(Fixture, WritesOfOneTurnLeaveInOneSend) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(c->write(as_bytes("ab")).ok());
  EXPECT_EQ(count(Submitted::kSend), 0u) << "nothing leaves before the end of the turn";
  loop.run_once(0ns);
  ASSERT_EQ(count(Submitted::kSend), 1u);
  EXPECT_EQ(sent_bytes(last(Submitted::kSend)), "abababababababababab");
  EXPECT_EQ(c->queued_bytes(), 20u);
}

TEST_F(Fixture, OneSendInFlightAndWritesBehindItCoalesce) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  ASSERT_TRUE(c->write(as_bytes("first")).ok());
  loop.run_once(0ns);
  auto s1 = last(Submitted::kSend);
  ASSERT_TRUE(c->write(as_bytes("-two")).ok());
  ASSERT_TRUE(c->write(as_bytes("-three")).ok());
  loop.run_once(0ns);
  EXPECT_EQ(count(Submitted::kSend), 1u) << "one send in flight per connection";
  EXPECT_EQ(c->queued_bytes(), 15u);
  ring.complete(s1.ud, 5);
  loop.run_once(0ns);
  ASSERT_EQ(count(Submitted::kSend), 2u);
  EXPECT_EQ(sent_bytes(last(Submitted::kSend)), "-two-three");
  ring.complete(last(Submitted::kSend).ud, 10);
  loop.run_once(0ns);
  EXPECT_EQ(c->queued_bytes(), 0u);
  EXPECT_EQ(sink.drained, 1);
  EXPECT_EQ(c->stats().bytes_sent, 15u);
  EXPECT_EQ(c->stats().sends, 2u);
}

TEST_F(Fixture, PartialSendContinuesFromWhereItStopped) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  ASSERT_TRUE(c->write(as_bytes("0123456789")).ok());
  loop.run_once(0ns);
  ring.complete(last(Submitted::kSend).ud, 4);
  loop.run_once(0ns);
  ASSERT_EQ(count(Submitted::kSend), 2u);
  EXPECT_EQ(sent_bytes(last(Submitted::kSend)), "456789");
  EXPECT_EQ(ctx.counters().partial_sends.get(), 1u);
  EXPECT_EQ(c->queued_bytes(), 6u);
  EXPECT_EQ(sink.drained, 0);
  ring.complete(last(Submitted::kSend).ud, 6);
  loop.run_once(0ns);
  EXPECT_EQ(sink.drained, 1);
}

TEST_F(Fixture, QueueIsBoundedAndTheOwnerSeesWhatIsQueued) {
  TcpConnectionOptions o;
  o.max_queued_bytes = 10;
  auto c = TcpConnection::open(ctx, tcp_fd(), sink, o);
  EXPECT_TRUE(c->write(as_bytes("12345678")).ok());
  EXPECT_EQ(c->write_room(), 2u);
  auto r = c->write(as_bytes("abc"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), WriteError::kQueueFull);
  EXPECT_EQ(c->queued_bytes(), 8u) << "all or nothing";
  EXPECT_TRUE(c->reserve(3).empty());
  EXPECT_EQ(ctx.counters().write_refused.get(), 2u);
  auto room = c->reserve(2);
  ASSERT_EQ(room.size(), 2u);
  std::memcpy(room.data(), "9!", 2);
  c->commit(2);
  loop.run_once(0ns);
  EXPECT_EQ(sent_bytes(last(Submitted::kSend)), "123456789!");
}

TEST_F(Fixture, SendSubmissionFailureIsRetriedLater) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  ring.full = true;
  ASSERT_TRUE(c->write(as_bytes("data")).ok());
  loop.run_once(0ns);
  EXPECT_EQ(count(Submitted::kSend), 0u);
  EXPECT_EQ(ctx.counters().submit_failed.get(), 1u);
  ring.full = false;
  clock.t += 1ms;
  loop.run_once(0ns);
  ASSERT_EQ(count(Submitted::kSend), 1u);
  EXPECT_EQ(sent_bytes(last(Submitted::kSend)), "data");
}

TEST_F(Fixture, BrokenPipeOnSendIsReportedOnce) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  ASSERT_TRUE(c->write(as_bytes("data")).ok());
  loop.run_once(0ns);
  ring.complete(last(Submitted::kSend).ud, -EPIPE);
  ring.complete(last(Submitted::kRecvStream).ud, -ECONNRESET, 0);
  loop.run_once(0ns);
  EXPECT_EQ(sink.errors, (std::vector<TcpError>{TcpError::kBrokenPipe}));
}

TEST(TcpConnectionSize, AnIdleConnectionIsSmall) {
  // The per-connection budget is 8 KiB including TLS; the socket layer's share is this object.
  EXPECT_LE(sizeof(TcpConnection), 256u);
}

TEST_F(Fixture, SendMemoryIsAllocatedLazilyAndFreedWhenDrained) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  EXPECT_EQ(c->send_buffer_bytes(), 0u) << "an idle connection holds no send memory";
  ASSERT_TRUE(c->write(as_bytes("x")).ok());
  EXPECT_GT(c->send_buffer_bytes(), 0u);
  loop.run_once(0ns);
  ASSERT_TRUE(c->write(as_bytes("y")).ok());  // staged behind the send in flight
  ring.complete(last(Submitted::kSend).ud, 1);
  loop.run_once(0ns);
  EXPECT_GT(c->send_buffer_bytes(), 0u) << "still busy: \"y\" is in flight";
  EXPECT_EQ(sent_bytes(last(Submitted::kSend)), "y");
  ring.complete(last(Submitted::kSend).ud, 1);
  loop.run_once(0ns);
  EXPECT_EQ(c->queued_bytes(), 0u);
  EXPECT_EQ(c->send_buffer_bytes(), 0u) << "drained: both buffers released";
  EXPECT_EQ(sink.drained, 1);
}

TEST_F(Fixture, DrainedSendBuffersGoBackToThePoolAndAreTakenAgain) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  ASSERT_TRUE(c->write(as_bytes("first")).ok());
  loop.run_once(0ns);
  const void* first = last(Submitted::kSend).buf;
  ring.complete(last(Submitted::kSend).ud, 5);
  loop.run_once(0ns);
  EXPECT_EQ(c->send_buffer_bytes(), 0u);
  EXPECT_EQ(ctx.send_buffers().held_bytes(), SendBufferPool::kMinSize) << "the drained buffer is pooled";
  ASSERT_TRUE(c->write(as_bytes("second")).ok());
  loop.run_once(0ns);
  EXPECT_EQ(last(Submitted::kSend).buf, first) << "the next write reuses it: no allocation";
  EXPECT_EQ(sent_bytes(last(Submitted::kSend)), "second");
  EXPECT_EQ(ctx.send_buffers().held_bytes(), 0u);
}

TEST(SendBufferPool, SizesArePowersOfTwoAndThePoolKeepsNoMoreThanItsLimit) {
  EXPECT_EQ(SendBufferPool::round_up(1), 4096u);
  EXPECT_EQ(SendBufferPool::round_up(4097), 8192u);
  EXPECT_EQ(SendBufferPool::round_up(256 * 1024), 256u * 1024);
  EXPECT_EQ(SendBufferPool::round_up(5u << 20), 5u << 20) << "beyond the classes: as asked";
  SendBufferPool pool(12 * 1024);
  pool.give(pool.take(8192), 8192);
  pool.give(pool.take(4096), 4096);
  EXPECT_EQ(pool.held_bytes(), 12u * 1024);
  pool.give(pool.take(4096), 4096);  // taken from the pool, given back: still 12 KiB
  pool.give(std::unique_ptr<std::byte[]>(new std::byte[4096]), 4096);  // over the limit: freed
  EXPECT_EQ(pool.held_bytes(), 12u * 1024);
  pool.give(std::unique_ptr<std::byte[]>(new std::byte[5000]), 5000);  // not a class size: freed
  EXPECT_EQ(pool.held_bytes(), 12u * 1024);
}

// ---- connection: registered files ----------------------------------------------------------------

struct TableFixture : Fixture {
  void SetUp() override {
    ASSERT_EQ(ring.register_file_table(2), 0);
    ctx.use_file_table(2);
  }
};

TEST_F(TableFixture, TheSocketMovesIntoTheTableAndItsDescriptorIsClosed) {
  int fd = tcp_fd();
  auto c = TcpConnection::open(ctx, fd, sink);
  EXPECT_TRUE(c->registered());
  EXPECT_EQ(c->fd(), -1);
  EXPECT_FALSE(fd_is_open(fd)) << "the table holds the socket; the descriptor is free again";
  EXPECT_EQ(ctx.file_slots_free(), 1u);
  EXPECT_EQ(ctx.counters().registered.get(), 1u);
  auto recv = last(Submitted::kRecvStream);
  EXPECT_TRUE(recv.registered);
  EXPECT_EQ(ring.table.at(static_cast<std::size_t>(recv.fd)), fd) << "the slot was given the socket";
  ASSERT_TRUE(c->write(as_bytes("hi")).ok());
  loop.run_once(0ns);
  EXPECT_TRUE(last(Submitted::kSend).registered);
  EXPECT_EQ(last(Submitted::kSend).fd, recv.fd);
}

TEST_F(TableFixture, TheSlotIsReusedOnlyAfterTheKernelEmptiedIt) {
  auto a = TcpConnection::open(ctx, tcp_fd(), sink);
  auto b = TcpConnection::open(ctx, tcp_fd(), sink);
  EXPECT_EQ(ctx.file_slots_free(), 0u);
  auto a_recv = ring.of_kind(Submitted::kRecvStream).front();
  a.reset();  // close: shutdown + unregister submitted, slot still taken
  auto unreg = last(Submitted::kShutdownUnregister);
  EXPECT_EQ(unreg.fd, a_recv.fd);
  EXPECT_EQ(ctx.file_slots_free(), 0u) << "not free before the kernel confirms";
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  EXPECT_FALSE(c->registered()) << "table full: the third connection keeps its descriptor";
  EXPECT_GE(c->fd(), 0);
  EXPECT_EQ(ctx.counters().register_failed.get(), 1u);
  ring.complete(a_recv.ud, -ECANCELED);
  ring.complete(unreg.ud, 0);
  loop.run_once(0ns);
  EXPECT_EQ(ctx.file_slots_free(), 1u);
  EXPECT_EQ(ctx.finishing(), 0u) << "a freed itself once its slot was emptied";
  auto d = TcpConnection::open(ctx, tcp_fd(), sink);
  EXPECT_TRUE(d->registered());
  EXPECT_EQ(last(Submitted::kRecvStream).fd, a_recv.fd) << "the emptied slot is used again";
}

TEST_F(TableFixture, ARefusedRegistrationKeepsTheDescriptor) {
  ring.update_fails = true;
  int fd = tcp_fd();
  auto c = TcpConnection::open(ctx, fd, sink);
  EXPECT_FALSE(c->registered());
  EXPECT_EQ(c->fd(), fd);
  EXPECT_TRUE(fd_is_open(fd));
  EXPECT_EQ(ctx.file_slots_free(), 2u) << "the slot went back";
  EXPECT_FALSE(last(Submitted::kRecvStream).registered);
}

// ---- connection: close, staleness, timers -------------------------------------------------------

TEST_F(Fixture, CloseCancelsByUserDataAndLateBuffersAreRecycledNotLeaked) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  auto recv_ud = last(Submitted::kRecvStream).ud;
  ASSERT_TRUE(c->write(as_bytes("pending")).ok());
  loop.run_once(0ns);
  auto send = last(Submitted::kSend);
  int fd = c->fd();
  c->close();
  EXPECT_FALSE(fd_is_open(fd));
  auto cancels = ring.of_kind(Submitted::kCancel);
  ASSERT_EQ(cancels.size(), 2u);
  EXPECT_EQ(cancels[0].target, recv_ud);
  EXPECT_EQ(cancels[1].target, send.ud);
  const auto before = bufs.available();
  receive(recv_ud, 5, "late data");  // was already in the completion queue
  ring.complete(recv_ud, -ECANCELED, 0);
  ring.complete(send.ud, -ECANCELED);
  loop.run_once(0ns);
  EXPECT_TRUE(sink.data.empty()) << "nothing reaches the sink after close()";
  EXPECT_TRUE(sink.errors.empty()) << "the owner's own close is not reported";
  EXPECT_EQ(bufs.available(), before) << "the late buffer went back to the ring";
  EXPECT_EQ(loop.stats().stale_completions, 0u);
  // Every operation ended: the slot is free; anything for the old generation is stale.
  ring.complete(recv_ud, 1, buffer_flags(6, true));
  loop.run_once(0ns);
  EXPECT_EQ(loop.stats().stale_completions, 1u);
}

TEST_F(Fixture, StaleCompletionsNeverReachTheSlotsNextOwner) {
  auto a = TcpConnection::open(ctx, tcp_fd(), sink);
  auto old_recv = last(Submitted::kRecvStream).ud;
  const auto old_slot = a->slot();
  ring.complete(old_recv, -ECANCELED, 0);  // the receive ends...
  a->close();                               // ...and the owner closes: nothing left in flight
  loop.run_once(0ns);
  a.reset();
  Sink other;
  auto b = TcpConnection::open(ctx, tcp_fd(), other);
  ASSERT_EQ(b->slot(), old_slot) << "the arena reuses the slot";
  ring.complete(old_recv, 5, buffer_flags(1, true));
  loop.run_once(0ns);
  EXPECT_TRUE(other.data.empty());
  EXPECT_EQ(loop.stats().stale_completions, 1u);
  receive(last(Submitted::kRecvStream).ud, 2, "new");
  loop.run_once(0ns);
  EXPECT_EQ(other.data, "new");
}

TEST_F(Fixture, ReleasedConnectionFreesItselfWhenTheKernelIsDone) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  auto recv_ud = last(Submitted::kRecvStream).ud;
  c.reset();  // the owner lets go while the receive is armed
  EXPECT_EQ(ctx.finishing(), 1u);
  ring.complete(recv_ud, -ECANCELED, 0);
  loop.run_once(0ns);
  EXPECT_EQ(ctx.finishing(), 0u);
}

TEST_F(Fixture, SinkMayReleaseTheConnectionInsideItsCallbacks) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  sink.release_on_data = &c;
  auto ud = last(Submitted::kRecvStream).ud;
  receive(ud, 0, "one");
  receive(ud, 1, "two");  // after the release: recycled, not delivered
  ring.complete(ud, -ECANCELED, 0);
  const auto before = bufs.available();
  loop.run_once(0ns);
  EXPECT_EQ(c, nullptr);
  EXPECT_EQ(sink.data, "one");
  EXPECT_EQ(bufs.available(), before) << "both buffers back, the undelivered one too";
  EXPECT_EQ(ctx.finishing(), 0u);

  auto d = TcpConnection::open(ctx, tcp_fd(), sink);
  sink.release_on_error = &d;
  ring.complete(last(Submitted::kRecvStream).ud, -ECONNRESET, 0);
  loop.run_once(0ns);
  EXPECT_EQ(d, nullptr);
  EXPECT_EQ(ctx.finishing(), 0u);
}

TEST_F(Fixture, CloseAfterFlushSendsEverythingThenCloses) {
  auto c = TcpConnection::open(ctx, tcp_fd(), sink);
  int fd = c->fd();
  ASSERT_TRUE(c->write(as_bytes("response")).ok());
  c->close_after_flush();
  EXPECT_FALSE(c->write(as_bytes("more")).ok());
  ring.complete(last(Submitted::kRecvStream).ud, -ECANCELED, 0);
  loop.run_once(0ns);
  ASSERT_EQ(count(Submitted::kSend), 1u);
  EXPECT_EQ(sent_bytes(last(Submitted::kSend)), "response");
  EXPECT_TRUE(fd_is_open(fd));
  EXPECT_EQ(sink.closed, 0);
  ring.complete(last(Submitted::kSend).ud, 8);
  loop.run_once(0ns);
  EXPECT_FALSE(fd_is_open(fd));
  EXPECT_EQ(sink.closed, 1);
  EXPECT_EQ(sink.drained, 0);
  EXPECT_TRUE(sink.errors.empty());

  // Nothing queued: closes at once, and the caller sees it without a callback.
  auto d = TcpConnection::open(ctx, tcp_fd(), sink);
  d->close_after_flush();
  EXPECT_FALSE(d->is_open());
  EXPECT_EQ(sink.closed, 1);
}

TEST_F(Fixture, IdleTimeoutClosesAQuietConnectionButActivityPostponesIt) {
  TcpConnectionOptions o;
  o.idle_timeout = 100ms;
  auto c = TcpConnection::open(ctx, tcp_fd(), sink, o);
  auto ud = last(Submitted::kRecvStream).ud;
  clock.t += 60ms;
  receive(ud, 0, "ping");
  loop.run_once(0ns);
  clock.t += 60ms;  // 120ms since open, 60ms since the data
  loop.run_once(0ns);
  EXPECT_TRUE(sink.errors.empty());
  clock.t += 40ms;
  loop.run_once(0ns);
  EXPECT_EQ(sink.errors, (std::vector<TcpError>{TcpError::kIdleTimeout}));
}

TEST_F(Fixture, DeadlineFailsTheConnectionUnlessCleared) {
  auto a = TcpConnection::open(ctx, tcp_fd(), sink);
  a->set_deadline(clock.t + 50ms);
  Sink other;
  auto b = TcpConnection::open(ctx, tcp_fd(), other);
  b->set_deadline(clock.t + 50ms);
  b->clear_deadline();
  clock.t += 50ms;
  loop.run_once(0ns);
  EXPECT_EQ(sink.errors, (std::vector<TcpError>{TcpError::kDeadline}));
  EXPECT_TRUE(other.errors.empty());
  EXPECT_TRUE(b->is_open());
}

}  // namespace
}  // namespace derpd::io
