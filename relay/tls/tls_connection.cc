#include "relay/tls/tls_connection.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "relay/tls/detail/openssl.h"

namespace derpd::tls {

std::string_view to_string(TlsError e) {
  switch (e) {
    case TlsError::kPeerClosed:
      return "peer closed";
    case TlsError::kHttpRequest:
      return "plain HTTP request on the TLS port";
    case TlsError::kSniRejected:
      return "server name (SNI) rejected";
    case TlsError::kHandshake:
      return "handshake failed";
    case TlsError::kProtocol:
      return "TLS protocol error";
    case TlsError::kClosed:
      return "closed";
    case TlsError::kInternal:
      return "internal TLS error";
  }
  return "unknown";
}

namespace {

// SSL_get_error() reads this thread's error queue, so it must hold nothing stale before an SSL
// call. It nearly always is empty (failures are cleared where they are classified), and looking
// is cheaper than clearing all of its slots.
inline void clear_stale_errors() {
  if (ERR_peek_error() != 0) ERR_clear_error();
}

}  // namespace

// --- the BIO: OpenSSL reads in_ and writes out_, never blocks on writing ----------------------

struct BioAccess {
  static TlsConnection* conn(BIO* b) { return static_cast<TlsConnection*>(BIO_get_data(b)); }

  // OpenSSL hands over one whole record (or handshake flight) per call.
  static int write(BIO* b, const char* data, std::size_t len, std::size_t* written) {
    BIO_clear_retry_flags(b);
    TlsConnection* c = conn(b);
    const Bytes record(reinterpret_cast<const std::byte*>(data), len);
    CiphertextSink* sink = c->loan_ != nullptr ? c->loan_->sink : nullptr;
    if (sink != nullptr && c->out_.empty()) {
      // Straight into the sink; only when nothing is queued here, so the byte order holds.
      MutBytes span = sink->reserve(len);
      if (span.size() == len) {
        std::memcpy(span.data(), data, len);
        sink->commit(len);
        *written = len;
        return 1;
      }
    }
    if (!c->out_.append(record)) return 0;  // no retry flag: a hard error
    *written = len;
    return 1;
  }

  // Fed bytes first, then the bytes lent by read_plaintext(data, out), where they lie.
  static int read(BIO* b, char* data, std::size_t len, std::size_t* got) {
    BIO_clear_retry_flags(b);
    TlsConnection* c = conn(b);
    std::size_t n = c->in_.read(MutBytes(reinterpret_cast<std::byte*>(data), len));
    if (n == 0 && c->loan_ != nullptr && !c->loan_->input.empty()) {
      n = std::min(len, c->loan_->input.size());
      std::memcpy(data, c->loan_->input.data(), n);
      c->loan_->input = c->loan_->input.subspan(n);
    }
    if (n == 0) {
      BIO_set_retry_read(b);  // nothing yet: the caller feeds more later
      return 0;
    }
    *got = n;
    return 1;
  }

  static long ctrl(BIO* b, int cmd, long /*num*/, void* /*ptr*/) {
    switch (cmd) {
      case BIO_CTRL_FLUSH:
        return 1;
      case BIO_CTRL_PENDING:
        return static_cast<long>(conn(b)->unread_input());
      default:
        return 0;  // WPENDING (writes never wait here), EOF (never), kTLS, ...: not supported
    }
  }

  static int create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
  }

  static BIO_METHOD* method() {
    static BIO_METHOD* const m = [] {
      BIO_METHOD* meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "derpd tls byte pump");
      if (meth != nullptr) {
        BIO_meth_set_write_ex(meth, write);
        BIO_meth_set_read_ex(meth, read);
        BIO_meth_set_ctrl(meth, ctrl);
        BIO_meth_set_create(meth, create);
      }
      return meth;
    }();
    return m;
  }
};

// --- TlsConnection ----------------------------------------------------------------------------

TlsConnection::TlsConnection(std::shared_ptr<const ServerContext> ctx, const TlsConnectionOptions& opts)
    : ctx_(std::move(ctx)), opts_(opts) {}

TlsConnection::~TlsConnection() { SSL_free(ssl_); }  // frees the BIO too

Result<std::unique_ptr<TlsConnection>, TlsError> TlsConnection::accept(std::shared_ptr<const ServerContext> ctx,
                                                                       const TlsConnectionOptions& opts) {
  if (!ctx) return Err(TlsError::kInternal);
  std::unique_ptr<TlsConnection> c(new (std::nothrow) TlsConnection(std::move(ctx), opts));
  if (!c) return Err(TlsError::kInternal);
  ERR_clear_error();
  BIO_METHOD* method = BioAccess::method();
  c->ssl_ = method != nullptr ? SSL_new(c->ctx_->native()) : nullptr;
  BIO* bio = c->ssl_ != nullptr ? BIO_new(method) : nullptr;
  if (bio == nullptr) {
    ERR_clear_error();
    return Err(TlsError::kInternal);
  }
  BIO_set_data(bio, c.get());
  SSL_set_bio(c->ssl_, bio, bio);  // one reference, used both ways, owned by the SSL
  SSL_set_accept_state(c->ssl_);
  return c;
}

Result<std::unique_ptr<TlsConnection>, TlsError> TlsConnection::accept(const TlsContext& ctx,
                                                                       const TlsConnectionOptions& opts) {
  return accept(ctx.current(), opts);
}

void TlsConnection::feed_ciphertext(Bytes data) {
  if (state_ == TlsState::kFailed || peer_closed()) return;  // nothing after close_notify counts
  if (!in_.append(data)) fail(TlsError::kInternal, 0);
}

void TlsConnection::note_progress() {
  if (state_ == TlsState::kHandshaking && SSL_is_init_finished(ssl_)) state_ = TlsState::kOpen;
}

void TlsConnection::fail(TlsError e, unsigned long code) {
  if (state_ == TlsState::kFailed) return;
  state_ = TlsState::kFailed;
  error_ = e;
  static_assert(ERR_SYSTEM_FLAG <= 0x80000000u && ERR_LIB_MASK << ERR_LIB_OFFSET <= 0xFFFFFFFFu,
                "packed OpenSSL error codes fit in 32 bits");
  ssl_error_ = static_cast<std::uint32_t>(code);
  in_.consume(in_.size());  // nothing more will be read
}

TlsConnection::Outcome TlsConnection::classify(int ret) {
  int e = SSL_get_error(ssl_, ret);
  if (e == SSL_ERROR_WANT_READ) {
    ERR_clear_error();
    return Outcome::kWouldBlock;
  }
  if (e == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    if (state_ == TlsState::kHandshaking) {
      fail(TlsError::kHandshake, 0);  // close_notify before the handshake finished
      return Outcome::kFailed;
    }
    return Outcome::kPeerClosed;
  }
  unsigned long code = ERR_peek_error();
  ERR_clear_error();
  TlsError err;
  if (e != SSL_ERROR_SSL) {
    err = TlsError::kInternal;  // SYSCALL / WANT_WRITE cannot come from this BIO but for a bug
  } else if (SSL_get_ex_data(ssl_, detail::sni_rejected_index()) != nullptr) {
    err = TlsError::kSniRejected;
  } else if (ERR_GET_LIB(code) == ERR_LIB_SSL &&
             (ERR_GET_REASON(code) == SSL_R_HTTP_REQUEST || ERR_GET_REASON(code) == SSL_R_HTTPS_PROXY_REQUEST)) {
    err = TlsError::kHttpRequest;
  } else if (ERR_GET_REASON(code) == ERR_R_MALLOC_FAILURE) {
    err = TlsError::kInternal;
  } else {
    err = state_ == TlsState::kHandshaking ? TlsError::kHandshake : TlsError::kProtocol;
  }
  fail(err, code);
  return Outcome::kFailed;
}

Status<TlsError> TlsConnection::handshake() {
  if (state_ == TlsState::kFailed) return Err(error_);
  if (state_ == TlsState::kOpen) return {};
  ERR_clear_error();
  int rc = SSL_do_handshake(ssl_);
  note_progress();
  if (rc == 1) return {};
  if (classify(rc) == Outcome::kFailed) return Err(error_);
  return {};
}

bool TlsConnection::nothing_to_read() const {
  // Nothing fed is waiting, OpenSSL holds no record (read-ahead keeps whole and partial records
  // in its own buffer), and the peer's close_notify has not been reached (that is reported).
  return unread_input() == 0 && SSL_has_pending(ssl_) == 0 && !peer_closed();
}

std::size_t TlsConnection::unread_input() const {
  return in_.size() + (loan_ != nullptr ? loan_->input.size() : 0);
}

Result<std::size_t, TlsError> TlsConnection::read_plaintext(Bytes data, MutBytes out) {
  if (data.empty() || !in_.empty() || state_ == TlsState::kFailed || peer_closed()) {
    feed_ciphertext(data);  // older bytes wait in in_ (or nothing counts any more): the usual way
    return read_plaintext(out);
  }
  Loan loan;
  loan.input = data;
  loan_ = &loan;
  auto r = read_plaintext(out);
  loan_ = nullptr;
  // Keep what OpenSSL did not take (part of a record, or records past `out`), unless nothing
  // more will be read.
  if (!loan.input.empty() && state_ != TlsState::kFailed && !peer_closed() && !in_.append(loan.input)) {
    fail(TlsError::kInternal, 0);
    if (!r || *r == 0) return Err(error_);
  }
  return r;
}

Result<std::size_t, TlsError> TlsConnection::read_plaintext(MutBytes out) {
  if (state_ == TlsState::kFailed) return Err(error_);
  // The caller reads until 0: answer the last call without asking OpenSSL to fail a read.
  if (state_ == TlsState::kOpen && nothing_to_read()) return std::size_t{0};
  std::size_t total = 0;
  while (total < out.size()) {
    clear_stale_errors();
    std::size_t n = 0;
    int rc = SSL_read_ex(ssl_, out.data() + total, out.size() - total, &n);
    note_progress();
    if (rc == 1) {
      total += n;
      if (state_ == TlsState::kOpen && nothing_to_read()) break;
      continue;
    }
    Outcome o = classify(rc);
    if (total > 0 || o == Outcome::kWouldBlock) break;  // an error shows on the next call
    return Err(o == Outcome::kPeerClosed ? TlsError::kPeerClosed : error_);
  }
  return total;
}

Result<std::size_t, TlsError> TlsConnection::write_plaintext(Bytes data, CiphertextSink& sink) {
  Loan loan;
  loan.sink = &sink;
  loan_ = &loan;
  auto r = write_plaintext(data);
  loan_ = nullptr;
  return r;
}

Result<std::size_t, TlsError> TlsConnection::write_plaintext(Bytes data) {
  if (state_ == TlsState::kFailed) return Err(error_);
  if (shutdown_sent()) return Err(TlsError::kClosed);
  if (state_ != TlsState::kOpen) return std::size_t{0};
  std::size_t done = 0;
  while (done < data.size() && out_.size() < opts_.max_pending_ciphertext) {
    std::size_t chunk = std::min(data.size() - done, kMaxRecordPlaintext);
    clear_stale_errors();
    std::size_t n = 0;
    int rc = SSL_write_ex(ssl_, data.data() + done, chunk, &n);
    if (rc == 1) {
      done += n;
      continue;
    }
    Outcome o = classify(rc);
    if (done > 0 || o != Outcome::kFailed) break;
    return Err(error_);
  }
  return done;
}

void TlsConnection::consume_ciphertext(std::size_t n) { out_.consume(n); }

std::size_t TlsConnection::take_ciphertext(MutBytes out) { return out_.read(out); }

Status<TlsError> TlsConnection::shutdown() {
  if (state_ == TlsState::kFailed) return Err(error_);
  if (state_ != TlsState::kOpen) {
    fail(TlsError::kClosed, 0);
    return Err(TlsError::kClosed);
  }
  if (shutdown_sent()) return {};
  ERR_clear_error();
  int rc = SSL_shutdown(ssl_);  // 0: close_notify queued; 1: the peer's had come already
  if (rc < 0 && classify(rc) == Outcome::kFailed) return Err(error_);
  ERR_clear_error();
  return {};
}

bool TlsConnection::peer_closed() const { return (SSL_get_shutdown(ssl_) & SSL_RECEIVED_SHUTDOWN) != 0; }

bool TlsConnection::shutdown_sent() const { return (SSL_get_shutdown(ssl_) & SSL_SENT_SHUTDOWN) != 0; }

std::string TlsConnection::error_reason() const {
  if (state_ != TlsState::kFailed) return {};
  if (error_ == TlsError::kSniRejected) {
    const char* name = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
    return name != nullptr ? std::string("client asked for server name \"") + name + "\", not served here"
                           : std::string("client sent no server name (SNI); one is required here");
  }
  if (ssl_error_ != 0) return detail::describe_error(ssl_error_);
  return std::string(to_string(error_));
}

std::string_view TlsConnection::protocol_version() const {
  return state_ == TlsState::kHandshaking ? std::string_view("unknown") : SSL_get_version(ssl_);
}

std::string_view TlsConnection::cipher() const {
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl_);
  return c != nullptr ? SSL_CIPHER_get_name(c) : "";
}

std::string_view TlsConnection::server_name() const {
  const char* n = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
  return n != nullptr ? n : "";
}

std::string_view TlsConnection::alpn() const {
  const unsigned char* p = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl_, &p, &len);
  return p != nullptr ? std::string_view(reinterpret_cast<const char*>(p), len) : std::string_view();
}

}  // namespace derpd::tls
