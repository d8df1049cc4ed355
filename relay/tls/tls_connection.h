// TlsConnection: the server side of one TLS connection as a byte pump, with no socket.
//
// The io layer moves bytes; this object turns ciphertext into plaintext and back:
//
//   network -> feed_ciphertext(bytes)          copies what the peer sent
//   read_plaintext(buf) until it returns 0     decrypted application bytes (drives the handshake)
//   write_plaintext(bytes) -> accepted count   encrypts into the outgoing queue
//   pending_ciphertext() + consume_ciphertext(n), or take_ciphertext(buf)  -> network
//
// The fast path copies less: read_plaintext(bytes, buf) decrypts received bytes where they lie
// (only a partial record is kept), and write_plaintext(bytes, sink) puts records straight into
// the socket's send queue (see CiphertextSink), so ciphertext is copied once each way, between
// OpenSSL's record buffer and the io layer's buffer.
//
// After EVERY call (feed/read/write/handshake/shutdown), send what pending_ciphertext() holds:
// handshake messages, session tickets, alerts and replies to the peer's key updates appear there
// even from a read. The handshake needs no separate call: read_plaintext() advances it
// (handshake() is there for callers who want to advance it without reading).
//
// Flow of a server connection:
//   auto c = TlsConnection::accept(tls_context);       // per accepted TCP connection
//   on receive:  c->feed_ciphertext(data);
//                while ((n = c->read_plaintext(buf)) > 0) consume(buf[0..n]);
//                (or: n = c->read_plaintext(data, buf), then the same loop)
//                (an error ends the connection: send pending ciphertext, e.g. the alert, close)
//                send(c->pending_ciphertext()); c->consume_ciphertext(sent);
//   to send:     accepted = c->write_plaintext(data) (0 during the handshake or while the
//                outgoing queue is over its limit), then send the ciphertext as above.
//                (or: SendQueueSink sink(tcp); c->write_plaintext(data, sink), then send what is
//                still pending, if anything)
//   to close:    c->shutdown() (queues close_notify), send, then close the socket.
//
// Memory: SSL_MODE_RELEASE_BUFFERS frees OpenSSL's record buffers whenever a connection is
// idle (OpenSSL reads ahead: its read buffer holds whole and partial records until they are
// read), and the two byte queues here are freed (not just emptied) when they drain, so an idle
// established connection costs OpenSSL's per-connection state plus this object (112 bytes).
// Measured with Debian 12's OpenSSL 3.0 (tests/unit/tls/memory_test.cc, 1000 connections):
// about 14.6 KB of heap per idle TLS 1.3 connection, 13.5 KB for TLS 1.2; the SSL object alone
// is 7.6 KB, the two AES-GCM contexts 1.9 KB, the session 0.9 KB. OpenSSL's own BIO_s_mem
// costs 2.3 KB more per connection (its buffers keep their peak size), a 4 KiB BIO pair 8.5 KB.
//
// Limits: write_plaintext() stops accepting once max_pending_ciphertext bytes wait to be sent
// (checked between records of at most 16 KiB, so the queue never exceeds the limit by more than
// one record). feed_ciphertext() takes everything it is given: read plaintext as it arrives, or
// stop receiving (buffered_ciphertext() says how much waits) while the application is not reading.
//
// Errors are sticky: after a failure every call returns the same error. error_reason() gives
// OpenSSL's text for logs. Peer input is hostile: garbage, a truncated or oversized record, an
// HTTP request, or a bad SNI ends in an error, never a crash.
//
// Everything here is owned by one thread (the connection's worker).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "relay/base/byte_queue.h"
#include "relay/base/bytes.h"
#include "relay/base/result.h"
#include "relay/tls/tls_context.h"

struct ssl_st;  // OpenSSL's SSL

namespace derpd::tls {

enum class TlsError : std::uint8_t {
  kPeerClosed,   // the peer sent close_notify: its stream ended cleanly (not a failure)
  kHttpRequest,  // plain HTTP sent to the TLS port (derper answers "400 Bad Request")
  kSniRejected,  // the ClientHello named a host this server does not serve (see TlsContext)
  kHandshake,    // handshake failed: not TLS, no common version or cipher, bad message, peer alert
  kProtocol,     // after the handshake: a bad record (MAC, length), unexpected message, peer alert
  kClosed,       // shut down by this side (no more writes), or shut down before the handshake ended
  kInternal,     // OpenSSL failed internally (allocation, ...)
};
std::string_view to_string(TlsError e);

enum class TlsState : std::uint8_t {
  kHandshaking,  // the handshake is not finished
  kOpen,         // established: plaintext flows (see peer_closed() / shutdown_sent())
  kFailed,       // a fatal error happened; error() says which
};

// Where write_plaintext(data, sink) puts ciphertext directly, skipping this object's queue: the
// connection's send queue, so a record is copied once, from OpenSSL's buffer to where the socket
// sends from. reserve(n) returns exactly n writable bytes, or an empty span when the sink cannot
// take n bytes now (then the record waits in pending_ciphertext(), and so does everything after
// it, keeping the byte order); commit(n) queues the first n bytes of the last reserve().
class CiphertextSink {
 public:
  virtual MutBytes reserve(std::size_t n) = 0;
  virtual void commit(std::size_t n) = 0;

 protected:
  ~CiphertextSink() = default;
};

// A CiphertextSink over a send queue with write_room(), reserve(n) and commit(n), such as
// io::TcpConnection (relay/tls does not depend on relay/io). Asks for room before reserving, so a
// full queue is not counted as a refused write. Lives on the caller's stack for one call.
template <typename Queue>
class SendQueueSink final : public CiphertextSink {
 public:
  explicit SendQueueSink(Queue& q) : q_(q) {}
  MutBytes reserve(std::size_t n) override { return q_.write_room() >= n ? q_.reserve(n) : MutBytes{}; }
  void commit(std::size_t n) override { q_.commit(n); }

 private:
  Queue& q_;
};

struct TlsConnectionOptions {
  // write_plaintext() accepts nothing more while this much ciphertext waits to be sent.
  std::size_t max_pending_ciphertext = 64 * 1024;
};

class TlsConnection {
 public:
  // Largest plaintext per TLS record.
  static constexpr std::size_t kMaxRecordPlaintext = 16384;

  // A server connection on `ctx` (which it keeps alive). Fails only if OpenSSL cannot allocate.
  static Result<std::unique_ptr<TlsConnection>, TlsError> accept(std::shared_ptr<const ServerContext> ctx,
                                                                 const TlsConnectionOptions& opts = {});
  // The same on the context's current configuration.
  static Result<std::unique_ptr<TlsConnection>, TlsError> accept(const TlsContext& ctx,
                                                                 const TlsConnectionOptions& opts = {});

  TlsConnection(const TlsConnection&) = delete;
  TlsConnection& operator=(const TlsConnection&) = delete;
  ~TlsConnection();

  // --- from the network ---------------------------------------------------------------------
  // Copies `data` (bytes received from the peer) for the next read/handshake. Ignored after a
  // failure or the peer's close_notify. `data` may alias a receive buffer: nothing refers to it
  // after the call.
  void feed_ciphertext(Bytes data);
  // Fed bytes OpenSSL has not taken yet. OpenSSL reads ahead, so more may wait inside it; once
  // reads have caught up, the two hold at most part of one record between them.
  std::size_t buffered_ciphertext() const { return in_.size(); }

  // --- handshake -----------------------------------------------------------------------------
  // Advances the handshake with what was fed. ok() with handshake_done() false: needs more input.
  Status<TlsError> handshake();
  bool handshake_done() const { return state_ == TlsState::kOpen; }

  // --- plaintext -----------------------------------------------------------------------------
  // Decrypts into `out` as much as the fed ciphertext allows; 0 means "would block" (more input
  // needed) or `out` is empty. kPeerClosed once the peer's close_notify is reached, after all
  // plaintext before it was returned.
  Result<std::size_t, TlsError> read_plaintext(MutBytes out);
  // feed_ciphertext(data) then read_plaintext(out), without copying `data` first: OpenSSL reads
  // it where it lies (a receive buffer), and only what is left when the call returns (part of a
  // record, or records that did not fit in `out`) is kept, copied, as feed_ciphertext() would.
  // Then call read_plaintext(out) until it returns 0, as after feed_ciphertext().
  Result<std::size_t, TlsError> read_plaintext(Bytes data, MutBytes out);
  // Encrypts a prefix of `data`; returns how much was accepted (0 during the handshake or while
  // max_pending_ciphertext is reached). kClosed after shutdown().
  Result<std::size_t, TlsError> write_plaintext(Bytes data);
  // The same, with the records made by this call going straight into `sink` while nothing is
  // pending here and the sink has room (see CiphertextSink); the rest is queued as above, so
  // pending_ciphertext() must still be sent afterwards. max_pending_ciphertext counts only what
  // is queued here. The sink is not kept after the call.
  Result<std::size_t, TlsError> write_plaintext(Bytes data, CiphertextSink& sink);

  // --- to the network ------------------------------------------------------------------------
  // Ciphertext waiting to be sent. The view is valid until the next non-const call.
  Bytes pending_ciphertext() const { return out_.view(); }
  std::size_t pending_ciphertext_bytes() const { return out_.size(); }
  // Drops the first `n` pending bytes (n <= pending_ciphertext_bytes()) once they were sent.
  void consume_ciphertext(std::size_t n);
  // Copies up to out.size() pending bytes into `out` and consumes them; returns the count.
  std::size_t take_ciphertext(MutBytes out);

  // --- closing -------------------------------------------------------------------------------
  // Queues close_notify (once); later writes fail with kClosed, reads go on until the peer's
  // close_notify. Before the handshake finished there is nothing to close: kClosed.
  Status<TlsError> shutdown();
  bool peer_closed() const;
  bool shutdown_sent() const;

  // --- state and diagnostics -----------------------------------------------------------------
  TlsState state() const { return state_; }
  // The failure (meaningful when state() == kFailed).
  TlsError error() const { return error_; }
  // OpenSSL's reason for the failure, for logs ("wrong version number (SSL routines)").
  // Allocates; not for the data path.
  std::string error_reason() const;
  // The packed OpenSSL error code behind the failure (0 if none).
  unsigned long openssl_error() const { return ssl_error_; }

  // "TLSv1.3", "TLSv1.2" ("unknown" before the handshake).
  std::string_view protocol_version() const;
  // Negotiated cipher suite name, "" before the handshake.
  std::string_view cipher() const;
  // The SNI the client sent, "" if none.
  std::string_view server_name() const;
  // The ALPN protocol selected ("http/1.1"), "" if none.
  std::string_view alpn() const;
  const ServerContext& context() const { return *ctx_; }
  // Heap bytes held by this object's two byte queues right now (0 when both are drained).
  std::size_t buffer_bytes() const { return in_.capacity() + out_.capacity(); }

 private:
  enum class Outcome : std::uint8_t { kWouldBlock, kPeerClosed, kFailed };

  // What one call lends this object, on the caller's stack for the length of that call.
  struct Loan {
    CiphertextSink* sink = nullptr;  // write_plaintext(data, sink)
    Bytes input;                     // read_plaintext(data, out): lent bytes OpenSSL has not read
  };

  TlsConnection(std::shared_ptr<const ServerContext> ctx, const TlsConnectionOptions& opts);
  Outcome classify(int ret);
  void fail(TlsError e, unsigned long code);
  void note_progress();
  // A read now could only block: no input, nothing buffered in OpenSSL, no close_notify.
  bool nothing_to_read() const;
  // Fed or lent bytes OpenSSL has not read yet.
  std::size_t unread_input() const;

  // The custom BIO (see tls_connection.cc) reads in_ and appends to out_.
  friend struct BioAccess;

  std::shared_ptr<const ServerContext> ctx_;  // immutable; keeps the SSL_CTX and SNI rule alive
  ssl_st* ssl_ = nullptr;
  ByteQueue in_;   // ciphertext fed, not yet read by OpenSSL
  ByteQueue out_;  // ciphertext produced, not yet taken by the io layer
  Loan* loan_ = nullptr;  // set during read_plaintext(data, out) and write_plaintext(data, sink)
  const TlsConnectionOptions opts_;
  std::uint32_t ssl_error_ = 0;  // packed OpenSSL 3 error codes fit in 32 bits
  TlsState state_ = TlsState::kHandshaking;
  TlsError error_ = TlsError::kInternal;
};

}  // namespace derpd::tls
