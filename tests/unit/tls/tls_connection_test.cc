// TlsConnection: the byte pump against an in-memory OpenSSL client.
#include "relay/tls/tls_connection.h"

#include <gtest/gtest.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "tests/unit/tls/test_util.h"

namespace derpd::tls {
namespace {

using testing::Client;
using testing::ClientOptions;
using testing::Pump;

class TlsConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dev = generate_self_signed("127.0.0.1", std::time(nullptr));
    ASSERT_TRUE(dev.ok()) << dev.error();
    auto ctx = TlsContext::from_pem(testing::settings_for("127.0.0.1"), dev->cert_pem, dev->key_pem);
    ASSERT_TRUE(ctx.ok()) << ctx.error();
    ctx_ = std::move(*ctx);
  }

  std::unique_ptr<TlsConnection> accept(const TlsConnectionOptions& opts = {}) {
    auto c = TlsConnection::accept(*ctx_, opts);
    EXPECT_TRUE(c.ok());
    return c ? std::move(*c) : nullptr;
  }

  // A server connection that finished its handshake with `client` (check handshake_done()).
  std::unique_ptr<TlsConnection> handshaken(Client& client, const TlsConnectionOptions& opts = {}) {
    auto conn = accept(opts);
    if (!conn) return conn;
    Pump pump(*conn, client);
    pump.run();
    return conn;
  }

  static std::string random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& ch : s) ch = static_cast<char>(rng());
    return s;
  }

  // Server writes all of `data`, pumping whenever write_plaintext stops accepting.
  static void server_write_all(Pump& pump, const std::string& data, std::size_t limit, std::size_t* max_pending) {
    std::size_t off = 0;
    for (int guard = 0; off < data.size() && guard < 100000; ++guard) {
      auto r = pump.server.write_plaintext(derpd::as_bytes(std::string_view(data).substr(off)));
      ASSERT_TRUE(r.ok()) << to_string(r.error());
      off += *r;
      *max_pending = std::max(*max_pending, pump.server.pending_ciphertext_bytes());
      EXPECT_LE(pump.server.pending_ciphertext_bytes(), limit + TlsConnection::kMaxRecordPlaintext + 256);
      pump.run();
    }
    ASSERT_EQ(off, data.size());
  }

  std::unique_ptr<TlsContext> ctx_;
};

TEST_F(TlsConnectionTest, HandshakeAndDataBothWays) {
  auto conn = accept();
  Client client;
  Pump pump(*conn, client);
  EXPECT_EQ(conn->state(), TlsState::kHandshaking);
  EXPECT_EQ(conn->protocol_version(), "unknown");
  // Nothing can be written before the handshake.
  auto early = conn->write_plaintext(derpd::as_bytes("too early"));
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(*early, 0u);

  pump.run();
  ASSERT_TRUE(conn->handshake_done()) << conn->error_reason();
  ASSERT_TRUE(client.handshake_done()) << client.failure;
  EXPECT_EQ(conn->state(), TlsState::kOpen);
  EXPECT_EQ(conn->protocol_version(), "TLSv1.3");
  EXPECT_FALSE(conn->cipher().empty());
  EXPECT_EQ(conn->pending_ciphertext_bytes(), 0u);
  EXPECT_EQ(conn->buffered_ciphertext(), 0u);
  EXPECT_EQ(conn->buffer_bytes(), 0u);  // idle: both queues freed

  ASSERT_TRUE(client.write("GET /derp HTTP/1.1\r\n\r\n"));
  pump.run();
  EXPECT_EQ(pump.server_received, "GET /derp HTTP/1.1\r\n\r\n");
  auto w = conn->write_plaintext(derpd::as_bytes("HTTP/1.1 101 Switching Protocols\r\n\r\n"));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, 36u);
  pump.run();
  EXPECT_EQ(client.received, "HTTP/1.1 101 Switching Protocols\r\n\r\n");
  EXPECT_EQ(conn->buffer_bytes(), 0u);
}

TEST_F(TlsConnectionTest, ClientDataInTheFinishedFlightIsRead) {
  // A fast-start client writes its request right after its Finished, in the same flight.
  auto conn = accept();
  Client client;
  client.step();  // ClientHello
  conn->feed_ciphertext(derpd::as_bytes(client.take_output()));
  ASSERT_TRUE(conn->handshake().ok());
  EXPECT_FALSE(conn->handshake_done());
  client.feed(conn->pending_ciphertext());
  conn->consume_ciphertext(conn->pending_ciphertext_bytes());
  client.step();  // Finished
  ASSERT_TRUE(client.handshake_done());
  ASSERT_TRUE(client.write("fast start"));
  conn->feed_ciphertext(derpd::as_bytes(client.take_output()));
  std::vector<std::byte> buf(100);
  auto r = conn->read_plaintext(buf);
  ASSERT_TRUE(r.ok()) << conn->error_reason();
  EXPECT_TRUE(conn->handshake_done());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), *r), "fast start");
  EXPECT_GT(conn->pending_ciphertext_bytes(), 0u);  // session tickets
}

TEST_F(TlsConnectionTest, LargeWritesBothWaysWithAPendingLimit) {
  TlsConnectionOptions opts;
  opts.max_pending_ciphertext = 20000;
  auto conn = accept(opts);
  Client client;
  Pump pump(*conn, client);
  pump.run();
  ASSERT_TRUE(conn->handshake_done());

  const std::string down = random_bytes(1 << 20, 1);
  std::size_t max_pending = 0;
  server_write_all(pump, down, opts.max_pending_ciphertext, &max_pending);
  pump.run();
  EXPECT_EQ(client.received.size(), down.size());
  EXPECT_TRUE(client.received == down);
  EXPECT_GE(max_pending, opts.max_pending_ciphertext);  // the limit was reached and held

  // One write_plaintext call stops at the limit rather than queueing 1 MiB.
  auto r = conn->write_plaintext(derpd::as_bytes(down));
  ASSERT_TRUE(r.ok());
  EXPECT_GE(*r, opts.max_pending_ciphertext - TlsConnection::kMaxRecordPlaintext);
  EXPECT_LT(*r, down.size());
  std::vector<std::byte> sink(*r + 1000);
  std::size_t taken = 0;
  while (conn->pending_ciphertext_bytes() > 0) {
    taken += conn->take_ciphertext(std::span(sink).subspan(0, 1000));
  }
  EXPECT_GT(taken, *r);  // record overhead
  EXPECT_EQ(conn->buffer_bytes(), 0u);

  const std::string up = random_bytes(1 << 20, 2);
  ASSERT_TRUE(client.write(up));
  pump.run();
  EXPECT_EQ(pump.server_received.size(), up.size());
  EXPECT_TRUE(pump.server_received == up);
  EXPECT_EQ(conn->buffer_bytes(), 0u);
}

TEST_F(TlsConnectionTest, OneByteAtATime) {
  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    auto conn = accept();
    ClientOptions o;
    o.max_version = version;
    Client client(o);
    Pump pump(*conn, client);
    pump.run(/*chunk=*/1, /*max_rounds=*/1000000);
    ASSERT_TRUE(conn->handshake_done()) << conn->error_reason();
    EXPECT_EQ(SSL_version(client.ssl()), version);
    const std::string up = random_bytes(40000, 3);  // spans several records
    ASSERT_TRUE(client.write(up));
    pump.run(1, 1000000);
    EXPECT_TRUE(pump.server_received == up);
    // A tiny read buffer also works: records are handed out piecewise.
    ASSERT_TRUE(client.write("abcdef"));
    conn->feed_ciphertext(derpd::as_bytes(client.take_output()));
    std::string got;
    std::byte one[1];
    for (int i = 0; i < 10; ++i) {
      auto r = conn->read_plaintext(one);
      ASSERT_TRUE(r.ok());
      if (*r == 0) break;
      got += static_cast<char>(one[0]);
    }
    EXPECT_EQ(got, "abcdef");
  }
}

struct GarbageCase {
  const char* name;
  std::string bytes;
  TlsError want;
};

class Garbage : public ::testing::TestWithParam<GarbageCase> {};

TEST_P(Garbage, InsteadOfAClientHelloFailsCleanly) {
  const GarbageCase& c = GetParam();
  auto dev = generate_self_signed("127.0.0.1", std::time(nullptr));
  ASSERT_TRUE(dev.ok());
  auto ctx = TlsContext::from_pem(testing::settings_for("127.0.0.1"), dev->cert_pem, dev->key_pem);
  ASSERT_TRUE(ctx.ok());
  auto conn = TlsConnection::accept(**ctx).value();
  conn->feed_ciphertext(derpd::as_bytes(c.bytes));
  std::vector<std::byte> buf(4096);
  auto r = conn->read_plaintext(buf);
  ASSERT_FALSE(r.ok()) << c.name;
  EXPECT_EQ(r.error(), c.want) << c.name << ": " << conn->error_reason();
  EXPECT_EQ(conn->state(), TlsState::kFailed);
  EXPECT_FALSE(conn->error_reason().empty());
  EXPECT_NE(conn->openssl_error(), 0u);
  // Sticky: every later call reports the same error and nothing more is buffered.
  conn->feed_ciphertext(derpd::as_bytes("more"));
  EXPECT_EQ(conn->buffered_ciphertext(), 0u);
  EXPECT_EQ(conn->read_plaintext(buf).error(), c.want);
  EXPECT_EQ(conn->write_plaintext(derpd::as_bytes("x")).error(), c.want);
  EXPECT_EQ(conn->handshake().error(), c.want);
  EXPECT_EQ(conn->shutdown().error(), c.want);
  // Whatever OpenSSL queued (an alert at most) is small.
  EXPECT_LE(conn->pending_ciphertext_bytes(), 7u);
}

std::string record(std::uint8_t type, std::uint16_t version, const std::string& body) {
  std::string r;
  r += static_cast<char>(type);
  r += static_cast<char>(version >> 8);
  r += static_cast<char>(version & 0xff);
  r += static_cast<char>(body.size() >> 8);
  r += static_cast<char>(body.size() & 0xff);
  return r + body;
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, Garbage,
    ::testing::Values(
        GarbageCase{"zeros", std::string(64, '\0'), TlsError::kHandshake},
        GarbageCase{"text", "SSH-2.0-OpenSSH_9.2\r\n", TlsError::kHandshake},
        GarbageCase{"http", "GET /derp HTTP/1.1\r\nHost: x\r\n\r\n", TlsError::kHttpRequest},
        GarbageCase{"http post", "POST / HTTP/1.1\r\n\r\n", TlsError::kHttpRequest},
        GarbageCase{"proxy", "CONNECT derp:443 HTTP/1.1\r\n\r\n", TlsError::kHttpRequest},
        GarbageCase{"oversized record", record(22, 0x0301, std::string(18 * 1024, 'A')), TlsError::kHandshake},
        GarbageCase{"client hello, junk body",
                    record(22, 0x0301, std::string("\x01\x00\x00\x10", 4) + std::string(16, '\x01')),
                    TlsError::kHandshake},
        GarbageCase{"client hello claiming 16 MiB",
                    record(22, 0x0301, std::string("\x01\xff\xff\xff", 4) + std::string(100, '\x01')),
                    TlsError::kHandshake},
        GarbageCase{"alert first", record(21, 0x0303, std::string("\x02\x28", 2)), TlsError::kHandshake},
        GarbageCase{"application data first", record(23, 0x0303, std::string(100, 'x')), TlsError::kHandshake},
        GarbageCase{"sslv2 hello", std::string("\x80\x2e\x01\x00\x02", 5) + std::string(100, '\x00'),
                    TlsError::kHandshake}),
    [](const ::testing::TestParamInfo<GarbageCase>& p) {
      std::string n = p.param.name;
      for (auto& ch : n)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return n;
    });

TEST_F(TlsConnectionTest, RandomGarbageNeverCrashes) {
  std::mt19937 rng(42);
  for (int i = 0; i < 300; ++i) {
    auto conn = accept();
    std::string junk = random_bytes(1 + rng() % 3000, static_cast<unsigned>(i));
    if (i % 3 == 0) junk[0] = 22;  // looks like a handshake record
    if (i % 3 == 1) {
      junk[0] = 22;
      junk[1] = 3;
      junk[2] = 1;
    }
    std::vector<std::byte> buf(512);
    for (std::size_t off = 0; off < junk.size(); off += 97) {
      conn->feed_ciphertext(derpd::as_bytes(std::string_view(junk).substr(off, 97)));
      auto r = conn->read_plaintext(buf);
      if (!r) break;
      EXPECT_EQ(*r, 0u);  // no plaintext can come out of garbage
    }
    EXPECT_FALSE(conn->handshake_done());
  }
}

TEST_F(TlsConnectionTest, CorruptedRecordAfterTheHandshakeIsAProtocolError) {
  Client client;
  auto conn = handshaken(client);
  ASSERT_TRUE(conn->handshake_done());
  ASSERT_TRUE(client.write("hello"));
  std::string wire = client.take_output();
  wire[wire.size() - 3] ^= 0x40;  // flip a bit in the tag
  conn->feed_ciphertext(derpd::as_bytes(wire));
  std::vector<std::byte> buf(100);
  auto r = conn->read_plaintext(buf);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), TlsError::kProtocol);
  EXPECT_NE(conn->error_reason().find("bad record mac"), std::string::npos) << conn->error_reason();
  EXPECT_GT(conn->pending_ciphertext_bytes(), 0u);  // the bad_record_mac alert
}

TEST_F(TlsConnectionTest, CloseNotifyBothWays) {
  Client client;
  auto conn = handshaken(client);
  ASSERT_TRUE(conn->handshake_done());

  // Client: data then close_notify. The server returns the data, then kPeerClosed.
  ASSERT_TRUE(client.write("last words"));
  SSL_shutdown(client.ssl());
  conn->feed_ciphertext(derpd::as_bytes(client.take_output()));
  std::vector<std::byte> buf(100);
  auto r = conn->read_plaintext(buf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), *r), "last words");
  auto end = conn->read_plaintext(buf);
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.error(), TlsError::kPeerClosed);
  EXPECT_TRUE(conn->peer_closed());
  EXPECT_EQ(conn->state(), TlsState::kOpen);  // not a failure: this side may still write

  // Server answers and closes; the client reads the answer and sees close_notify.
  auto w = conn->write_plaintext(derpd::as_bytes("bye"));
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(conn->shutdown().ok());
  EXPECT_TRUE(conn->shutdown_sent());
  ASSERT_TRUE(conn->shutdown().ok());  // idempotent
  client.feed(conn->pending_ciphertext());
  conn->consume_ciphertext(conn->pending_ciphertext_bytes());
  client.step();
  EXPECT_EQ(client.received, "bye");
  EXPECT_TRUE(client.got_close_notify);
  auto after = conn->write_plaintext(derpd::as_bytes("more"));
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error(), TlsError::kClosed);
}

TEST_F(TlsConnectionTest, ShutdownBeforeTheHandshakeIsClosed) {
  auto conn = accept();
  auto st = conn->shutdown();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error(), TlsError::kClosed);
  EXPECT_EQ(conn->state(), TlsState::kFailed);
}

TEST_F(TlsConnectionTest, KeyUpdateFromTheClient) {
  Client client;
  auto conn = handshaken(client);
  ASSERT_TRUE(conn->handshake_done());
  Pump pump(*conn, client);
  ASSERT_EQ(SSL_key_update(client.ssl(), SSL_KEY_UPDATE_REQUESTED), 1);
  ASSERT_TRUE(client.write("after key update"));
  pump.run();
  EXPECT_EQ(pump.server_received, "after key update");
  ASSERT_TRUE(conn->write_plaintext(derpd::as_bytes("reply")).ok());
  pump.run();
  EXPECT_EQ(client.received, "reply");
  EXPECT_FALSE(client.failed) << client.failure;
}

TEST_F(TlsConnectionTest, MetaCertVisibleToTls13Client) {
  // What derphttp's parseMetaCert does on the client: find CN "derpkey<hex>" with a small serial.
  auto conn = accept();
  Client client;
  Pump pump(*conn, client);
  pump.run();
  ASSERT_TRUE(client.handshake_done());
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(client.ssl());
  ASSERT_NE(chain, nullptr);
  std::string found;
  long serial = 0;
  for (int i = 0; i < sk_X509_num(chain); ++i) {
    std::string cn = testing::common_name(sk_X509_value(chain, i));
    if (cn.rfind("derpkey", 0) == 0) {
      found = cn.substr(7);
      serial = ASN1_INTEGER_get(X509_get0_serialNumber(sk_X509_value(chain, i)));
      EXPECT_EQ(EVP_PKEY_get_id(X509_get0_pubkey(sk_X509_value(chain, i))), EVP_PKEY_ED25519);
    }
  }
  EXPECT_EQ(found, testing::key_hex(testing::server_key()));
  EXPECT_EQ(serial, 2);
}

// A send queue shaped like io::TcpConnection's (write_room, reserve, commit), bounded by `limit`.
struct FakeSendQueue {
  explicit FakeSendQueue(std::size_t l) : limit(l) {}
  std::size_t limit;
  std::string queued;  // committed bytes, in order
  std::vector<std::byte> reserved;
  int refused = 0;     // reserve() calls beyond the room (io::TcpConnection counts these)
  int commits = 0;

  std::size_t write_room() const { return queued.size() >= limit ? 0 : limit - queued.size(); }
  MutBytes reserve(std::size_t n) {
    if (n > write_room()) {
      ++refused;
      return {};
    }
    reserved.assign(n, std::byte{0});
    return reserved;
  }
  void commit(std::size_t n) {
    queued.append(reinterpret_cast<const char*>(reserved.data()), n);
    ++commits;
  }
  std::string take() { return std::exchange(queued, {}); }
};

TEST_F(TlsConnectionTest, WritesGoStraightIntoTheSinkWithRoom) {
  Client client;
  auto conn = handshaken(client);
  ASSERT_TRUE(conn->handshake_done());

  FakeSendQueue q(1 << 20);
  SendQueueSink<FakeSendQueue> sink(q);
  const std::string data = random_bytes(40000, 3);  // three records
  auto w = conn->write_plaintext(derpd::as_bytes(data), sink);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, data.size());
  EXPECT_EQ(conn->pending_ciphertext_bytes(), 0u);
  EXPECT_EQ(conn->buffer_bytes(), 0u);  // nothing went through the internal queue
  EXPECT_EQ(q.commits, 3);              // one record per commit
  EXPECT_GT(q.queued.size(), data.size());
  client.feed(q.take());
  client.step();
  EXPECT_TRUE(client.received == data);
  EXPECT_FALSE(client.failed) << client.failure;
}

TEST_F(TlsConnectionTest, AFullSinkQueuesTheRestInOrder) {
  Client client;
  auto conn = handshaken(client);
  ASSERT_TRUE(conn->handshake_done());

  // Room for one full record, not two: the second and third records wait here.
  FakeSendQueue q(20000);
  SendQueueSink<FakeSendQueue> sink(q);
  const std::string first = random_bytes(40000, 4);
  auto w = conn->write_plaintext(derpd::as_bytes(first), sink);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, first.size());
  EXPECT_EQ(q.commits, 1);
  EXPECT_EQ(q.refused, 0);  // room is asked for first: a full queue is not a refused write
  EXPECT_GT(conn->pending_ciphertext_bytes(), first.size() - TlsConnection::kMaxRecordPlaintext);

  // The socket sent what the sink held; the sink has room again, but records must not overtake
  // the ones still pending here.
  std::string wire = q.take();
  const std::string second = random_bytes(1000, 5);
  w = conn->write_plaintext(derpd::as_bytes(second), sink);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, second.size());
  EXPECT_EQ(q.commits, 1);  // went behind the pending records
  wire.append(reinterpret_cast<const char*>(conn->pending_ciphertext().data()), conn->pending_ciphertext_bytes());
  conn->consume_ciphertext(conn->pending_ciphertext_bytes());
  EXPECT_EQ(conn->buffer_bytes(), 0u);

  // Drained: direct again.
  const std::string third = "third";
  w = conn->write_plaintext(derpd::as_bytes(third), sink);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(q.commits, 2);
  EXPECT_EQ(conn->pending_ciphertext_bytes(), 0u);
  wire += q.take();

  client.feed(wire);
  client.step();
  EXPECT_TRUE(client.received == first + second + third);
  EXPECT_FALSE(client.failed) << client.failure;
}

TEST_F(TlsConnectionTest, ManyRecordsInOneFeedAreReadInOneCall) {
  Client client;
  auto conn = handshaken(client);
  ASSERT_TRUE(conn->handshake_done());
  std::string expect;
  for (int i = 0; i < 50; ++i) {  // one record each
    std::string part = "packet " + std::to_string(i) + ";";
    ASSERT_TRUE(client.write(part));
    expect += part;
  }
  std::string wire = client.take_output();
  // All but the last 10 bytes: the last record stays incomplete.
  conn->feed_ciphertext(derpd::as_bytes(std::string_view(wire).substr(0, wire.size() - 10)));
  std::vector<std::byte> buf(64 * 1024);
  auto r = conn->read_plaintext(buf);
  ASSERT_TRUE(r.ok());
  const std::string last = "packet 49;";
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), *r), expect.substr(0, expect.size() - last.size()));
  auto again = conn->read_plaintext(buf);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0u);
  conn->feed_ciphertext(derpd::as_bytes(std::string_view(wire).substr(wire.size() - 10)));
  r = conn->read_plaintext(buf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), *r), last);
  EXPECT_EQ(conn->buffer_bytes(), 0u);
}

TEST_F(TlsConnectionTest, LentInputAcrossTheHandshakeAndInOddPieces) {
  // The whole exchange with read_plaintext(data, out), in pieces that cut records anywhere.
  for (std::size_t chunk : {std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{0}}) {
    for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
      auto conn = accept();
      ClientOptions o;
      o.max_version = version;
      Client client(o);
      Pump pump(*conn, client);
      pump.lend_input = true;
      pump.run(chunk, 1000000);
      ASSERT_TRUE(conn->handshake_done()) << chunk << ": " << conn->error_reason();
      const std::string up = random_bytes(100000, 6);
      ASSERT_TRUE(client.write(up));
      pump.run(chunk, 1000000);
      EXPECT_TRUE(pump.server_received == up) << chunk << " " << version;
      EXPECT_EQ(conn->buffer_bytes(), 0u);
      EXPECT_FALSE(pump.server_failed);
    }
  }
}

TEST_F(TlsConnectionTest, LentInputPastTheReadBufferIsKept) {
  Client client;
  auto conn = handshaken(client);
  ASSERT_TRUE(conn->handshake_done());
  const std::string up = random_bytes(200000, 7);  // 13 records
  ASSERT_TRUE(client.write(up));
  std::string wire = client.take_output();
  std::vector<std::byte> buf(64 * 1024);
  auto r = conn->read_plaintext(derpd::as_bytes(wire), buf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, buf.size());
  std::string got(reinterpret_cast<const char*>(buf.data()), *r);
  // The lent bytes are gone now; what OpenSSL had not read was copied.
  wire.assign(wire.size(), 'x');
  EXPECT_GT(conn->buffered_ciphertext(), 0u);
  for (int i = 0; i < 100; ++i) {
    r = conn->read_plaintext(buf);
    ASSERT_TRUE(r.ok()) << conn->error_reason();
    if (*r == 0) break;
    got.append(reinterpret_cast<const char*>(buf.data()), *r);
  }
  EXPECT_TRUE(got == up);
  EXPECT_EQ(conn->buffered_ciphertext(), 0u);
  EXPECT_EQ(conn->buffer_bytes(), 0u);

  // Lent bytes behind fed ones keep their order (they are queued behind them).
  ASSERT_TRUE(client.write("first "));
  ASSERT_TRUE(client.write("second"));
  std::string two = client.take_output();
  const std::size_t cut = two.size() / 2 + 3;
  conn->feed_ciphertext(derpd::as_bytes(std::string_view(two).substr(0, cut)));
  r = conn->read_plaintext(derpd::as_bytes(std::string_view(two).substr(cut)), buf);
  ASSERT_TRUE(r.ok());
  got.assign(reinterpret_cast<const char*>(buf.data()), *r);
  while ((r = conn->read_plaintext(buf)).ok() && *r > 0) got.append(reinterpret_cast<const char*>(buf.data()), *r);
  EXPECT_EQ(got, "first second");
}

TEST_F(TlsConnectionTest, LentCloseNotifyAndGarbageAfterData) {
  Client client;
  auto conn = handshaken(client);
  ASSERT_TRUE(conn->handshake_done());
  Pump pump(*conn, client);
  ASSERT_TRUE(client.write("last words"));
  SSL_shutdown(client.ssl());
  std::string wire = client.take_output() + "trailing junk after close_notify";
  std::vector<std::byte> buf(100);
  auto r = conn->read_plaintext(derpd::as_bytes(wire), buf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), *r), "last words");
  auto end = conn->read_plaintext(buf);
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.error(), TlsError::kPeerClosed);
  EXPECT_EQ(conn->buffer_bytes(), 0u);  // nothing after close_notify is kept

  // A corrupted record lent after good data: the data, then kProtocol.
  auto conn2 = accept();
  Client client2;
  Pump pump2(*conn2, client2);
  pump2.run();
  ASSERT_TRUE(client2.write("good"));
  ASSERT_TRUE(client2.write("bad!"));
  std::string wire2 = client2.take_output();
  wire2[wire2.size() - 2] ^= 0x01;
  r = conn2->read_plaintext(derpd::as_bytes(wire2), buf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), *r), "good");
  r = conn2->read_plaintext(buf);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), TlsError::kProtocol);
}

TEST_F(TlsConnectionTest, ConnectionKeepsItsContextAlive) {
  auto conn = accept();
  ctx_.reset();  // the TlsContext goes away; the connection's ServerContext stays
  Client client;
  Pump pump(*conn, client);
  pump.run();
  EXPECT_TRUE(conn->handshake_done());
  EXPECT_EQ(conn->context().hostname(), "127.0.0.1");
}

}  // namespace
}  // namespace derpd::tls
