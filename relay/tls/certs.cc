#include "relay/tls/certs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "relay/base/endpoint.h"
#include "relay/tls/detail/openssl.h"
#include "relay/tls/detail/x509.h"

namespace derpd::tls {

namespace detail {

std::string describe_error(unsigned long code) {
  const char* reason = ERR_reason_error_string(code);
  const char* lib = ERR_lib_error_string(code);
  if (reason == nullptr) return fmt::format("OpenSSL error {:#x}", code);
  if (lib == nullptr) return reason;
  return fmt::format("{} ({})", reason, lib);
}

std::string take_error(std::string_view fallback) {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return std::string(fallback);
  return describe_error(code);
}

std::string hex(const unsigned char* p, std::size_t len) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(len * 2, '\0');
  for (std::size_t i = 0; i < len; ++i) {
    out[2 * i] = kDigits[p[i] >> 4];
    out[2 * i + 1] = kDigits[p[i] & 0xf];
  }
  return out;
}

namespace {

BioPtr mem_bio(std::string_view text) {
  if (text.size() > static_cast<std::size_t>(INT32_MAX)) return nullptr;
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// Never prompt for a passphrase: an encrypted key is a configuration error here.
int refuse_password(char* /*buf*/, int /*size*/, int /*rwflag*/, void* asked) {
  *static_cast<bool*>(asked) = true;
  return -1;
}

bool end_of_pem(unsigned long code) {
  return ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE;
}

// Go's asn1 marshals a printable string as PrintableString, anything else as UTF8String.
bool asn1_printable(std::string_view s) {
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              std::strchr(" '()+,-./:=?", c) != nullptr;
    if (!ok || c == '\0') return false;
  }
  return true;
}

bool set_common_name(X509* x, std::string_view cn) {
  X509_NAME* name = X509_get_subject_name(x);
  int type = asn1_printable(cn) ? V_ASN1_PRINTABLESTRING : MBSTRING_UTF8;
  if (X509_NAME_add_entry_by_NID(name, NID_commonName, type, reinterpret_cast<const unsigned char*>(cn.data()),
                                 static_cast<int>(cn.size()), -1, 0) != 1)
    return false;
  return X509_set_issuer_name(x, name) == 1;
}

bool add_conf_ext(X509* x, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  X509ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  return ext && X509_add_ext(x, ext.get(), -1) == 1;
}

// subjectAltName with one entry: iPAddress for an IP literal, dNSName otherwise.
bool add_san(X509* x, std::string_view hostname) {
  GENERAL_NAMES* names = GENERAL_NAMES_new();
  GENERAL_NAME* gn = GENERAL_NAME_new();
  bool ok = names != nullptr && gn != nullptr;
  if (ok) {
    if (auto ip = IpAddr::parse(hostname); ip && is_ip_literal(hostname)) {
      ASN1_OCTET_STRING* os = ASN1_OCTET_STRING_new();
      ok = os != nullptr && ASN1_OCTET_STRING_set(os, ip->data(), static_cast<int>(ip->size())) == 1;
      if (ok) {
        GENERAL_NAME_set0_value(gn, GEN_IPADD, os);
      } else {
        ASN1_OCTET_STRING_free(os);
      }
    } else {
      ASN1_IA5STRING* s = ASN1_IA5STRING_new();
      ok = s != nullptr && ASN1_STRING_set(s, hostname.data(), static_cast<int>(hostname.size())) == 1;
      if (ok) {
        GENERAL_NAME_set0_value(gn, GEN_DNS, s);
      } else {
        ASN1_IA5STRING_free(s);
      }
    }
  }
  if (ok) {
    ok = sk_GENERAL_NAME_push(names, gn) > 0;
    if (ok) gn = nullptr;
  }
  if (ok) ok = X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1;
  GENERAL_NAME_free(gn);
  GENERAL_NAMES_free(names);
  return ok;
}

// A plausible DNS name for our own certificate: labels of [A-Za-z0-9-], 1..63 long, not
// starting or ending with '-', 253 characters at most.
bool is_dns_name(std::string_view h) {
  if (h.empty() || h.size() > 253) return false;
  std::size_t label = 0;
  char prev = '.';
  for (char c : h) {
    if (c == '.') {
      if (label == 0 || prev == '-') return false;
      label = 0;
    } else {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
      if (!ok || (label == 0 && c == '-') || ++label > 63) return false;
    }
    prev = c;
  }
  return label > 0 && prev != '-';
}

std::string pem_of_cert(X509* x) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_X509(b.get(), x) != 1) return {};
  BUF_MEM* mem = nullptr;
  BIO_get_mem_ptr(b.get(), &mem);
  return std::string(mem->data, mem->length);
}

std::string pem_of_ec_key(EVP_PKEY* k) {
  BioPtr b(BIO_new(BIO_s_mem()));
  // "EC PRIVATE KEY" (SEC1), as derper writes it.
  if (!b || PEM_write_bio_PrivateKey_traditional(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr) != 1) return {};
  BUF_MEM* mem = nullptr;
  BIO_get_mem_ptr(b.get(), &mem);
  return std::string(mem->data, mem->length);
}

// Writes `data` to `path` with `mode` through a temporary file in the same directory.
Status<std::string> write_file_atomic(const std::string& path, std::string_view data, mode_t mode) {
  std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return Err(fmt::format("cannot create {}: {}", tmp, std::strerror(errno)));
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return Err(fmt::format("cannot write {}: {}", tmp, std::strerror(e)));
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fchmod(fd, mode) != 0 || ::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return Err(fmt::format("cannot write {}: {}", tmp, std::strerror(e)));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return Err(fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(e)));
  }
  return {};
}

// Creates the missing directories of `dir` with mode 0700 (less the umask), as Go's
// os.MkdirAll(dir, 0700) in derper; existing directories keep their mode.
Status<std::string> make_dirs(const std::filesystem::path& dir) {
  std::filesystem::path prefix;
  for (const auto& part : dir) {
    prefix /= part;
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST)
      return Err(fmt::format("cannot create directory {}: {}", prefix.string(), std::strerror(errno)));
  }
  return {};
}

bool file_exists(const std::string& path, int& err) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return true;
  err = errno == ENOENT ? 0 : errno;
  return false;
}

}  // namespace

Result<CertChain, std::string> parse_cert_chain(std::string_view pem) {
  ERR_clear_error();
  BioPtr bio = mem_bio(pem);
  if (!bio) return Err(take_error("out of memory"));
  CertChain out{nullptr, X509StackPtr(sk_X509_new_null())};
  if (!out.chain) return Err(take_error("out of memory"));
  for (;;) {
    X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (x == nullptr) {
      unsigned long code = ERR_peek_last_error();
      if (code == 0 || end_of_pem(code)) break;
      return Err(fmt::format("malformed certificate: {}", take_error()));
    }
    if (!out.leaf) {
      out.leaf.reset(x);
    } else if (sk_X509_push(out.chain.get(), x) <= 0) {
      X509_free(x);
      return Err(take_error("out of memory"));
    }
  }
  ERR_clear_error();
  if (!out.leaf) return Err(std::string("no certificate found (expected a PEM CERTIFICATE block)"));
  return out;
}

Result<EvpPkeyPtr, std::string> parse_private_key(std::string_view pem) {
  // OpenSSL decodes whatever block comes first; like Go's X509KeyPair, skip to the first block
  // whose label ends in "PRIVATE KEY" (PRIVATE KEY, EC PRIVATE KEY, RSA PRIVATE KEY, ...).
  constexpr std::string_view kBegin = "-----BEGIN ";
  constexpr std::string_view kSuffix = "PRIVATE KEY-----";
  std::size_t at = std::string_view::npos;
  for (std::size_t pos = pem.find(kBegin); pos != std::string_view::npos; pos = pem.find(kBegin, pos + 1)) {
    std::size_t eol = pem.find('\n', pos);
    std::string_view line = pem.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() >= kBegin.size() + kSuffix.size() && line.substr(line.size() - kSuffix.size()) == kSuffix) {
      at = pos;
      break;
    }
  }
  if (at == std::string_view::npos) return Err(std::string("no private key found (expected a PEM PRIVATE KEY block)"));
  pem = pem.substr(at);
  ERR_clear_error();
  BioPtr bio = mem_bio(pem);
  if (!bio) return Err(take_error("out of memory"));
  bool asked = false;
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, refuse_password, &asked));
  if (!key) {
    if (asked) {
      ERR_clear_error();
      return Err(std::string("the private key is encrypted; an unencrypted key is required"));
    }
    unsigned long code = ERR_peek_last_error();
    if (code == 0 || end_of_pem(code)) {
      ERR_clear_error();
      return Err(std::string("no private key found (expected a PEM PRIVATE KEY block)"));
    }
    return Err(fmt::format("malformed private key: {}", take_error()));
  }
  ERR_clear_error();
  return key;
}

bool cert_matches_host(X509* cert, std::string_view hostname) {
  std::string h(hostname);
  int rc;
  if (is_ip_literal(hostname)) {
    rc = X509_check_ip_asc(cert, h.c_str(), 0);
  } else {
    rc = X509_check_host(cert, h.data(), h.size(),
                         X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, nullptr);
  }
  ERR_clear_error();
  return rc == 1;
}

bool key_matches_cert(X509* cert, EVP_PKEY* key) {
  bool ok = X509_check_private_key(cert, key) == 1;
  ERR_clear_error();
  return ok;
}

X509Ptr make_meta_cert_x509(ServerPublicKey server_key, std::time_t now, std::string& error) {
  ERR_clear_error();
  EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  X509Ptr x(X509_new());
  std::string cn(kMetaCertCommonNamePrefix);
  cn += hex(reinterpret_cast<const unsigned char*>(server_key.data()), server_key.size());
  constexpr long kThirtyDays = 30L * 24 * 60 * 60;
  bool ok = key && x && X509_set_version(x.get(), X509_VERSION_3) == 1 &&
            ASN1_INTEGER_set(X509_get_serialNumber(x.get()), kMetaCertSerial) == 1 &&
            set_common_name(x.get(), cn) &&
            X509_time_adj_ex(X509_getm_notBefore(x.get()), 0, -kThirtyDays, &now) != nullptr &&
            X509_time_adj_ex(X509_getm_notAfter(x.get()), 0, kThirtyDays, &now) != nullptr &&
            X509_set_pubkey(x.get(), key.get()) == 1 &&
            add_conf_ext(x.get(), NID_basic_constraints, "critical,CA:FALSE") &&
            X509_sign(x.get(), key.get(), nullptr) > 0;  // Ed25519 takes no digest
  if (!ok) {
    error = fmt::format("cannot build the DERP meta certificate: {}", take_error());
    return nullptr;
  }
  return x;
}

std::vector<std::byte> der_of(X509* cert) {
  unsigned char* buf = nullptr;
  int n = i2d_X509(cert, &buf);
  if (n <= 0) {
    ERR_clear_error();
    return {};
  }
  std::vector<std::byte> out(reinterpret_cast<std::byte*>(buf), reinterpret_cast<std::byte*>(buf) + n);
  OPENSSL_free(buf);
  return out;
}

std::time_t not_after_of(X509* cert) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return 0;
  return ::timegm(&tm);
}

}  // namespace detail

bool is_ip_literal(std::string_view hostname) {
  if (hostname.find_first_of("[]%") != std::string_view::npos) return false;
  return IpAddr::parse(hostname).has_value();
}

Result<std::vector<std::byte>, std::string> make_meta_cert(ServerPublicKey server_key, std::time_t now) {
  std::string error;
  detail::X509Ptr x = detail::make_meta_cert_x509(server_key, now, error);
  if (!x) return Err(std::move(error));
  auto der = detail::der_of(x.get());
  if (der.empty()) return Err(std::string("cannot encode the DERP meta certificate"));
  return der;
}

std::string cert_name_for_der(Bytes der) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(der.data()), der.size(), digest);
  return std::string(kCertNamePrefix) + detail::hex(digest, sizeof digest);
}

Result<std::string, std::string> cert_name_for_pem(std::string_view cert_pem) {
  auto chain = detail::parse_cert_chain(cert_pem);
  if (!chain) return Err(chain.error());
  auto der = detail::der_of(chain->leaf.get());
  if (der.empty()) return Err(std::string("cannot encode the certificate"));
  return cert_name_for_der(der);
}

Result<SelfSignedCert, std::string> generate_self_signed(std::string_view hostname, std::time_t now) {
  using namespace detail;
  bool ip = is_ip_literal(hostname);
  if (!ip && !is_dns_name(hostname))
    return Err(fmt::format("hostname \"{}\" is neither an IP address nor a DNS name", hostname));
  ERR_clear_error();
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  X509Ptr x(X509_new());
  BignumPtr serial(BN_new());
  // One year, as Go's AddDate(1, 0, 0): same day and time next year (Feb 29 -> Mar 1).
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  tm.tm_year += 1;
  std::time_t until = ::timegm(&tm);
  bool ok = key && x && serial && BN_rand(serial.get(), 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
            BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(x.get())) != nullptr &&
            X509_set_version(x.get(), X509_VERSION_3) == 1 && set_common_name(x.get(), hostname) &&
            ASN1_TIME_set(X509_getm_notBefore(x.get()), now) != nullptr &&
            ASN1_TIME_set(X509_getm_notAfter(x.get()), until) != nullptr &&
            X509_set_pubkey(x.get(), key.get()) == 1 &&
            // Go's extension order: keyUsage, extKeyUsage, basicConstraints, subjectAltName.
            add_conf_ext(x.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment") &&
            add_conf_ext(x.get(), NID_ext_key_usage, "serverAuth") &&
            add_conf_ext(x.get(), NID_basic_constraints, "critical,CA:FALSE") && add_san(x.get(), hostname) &&
            X509_sign(x.get(), key.get(), EVP_sha256()) > 0;
  if (!ok) return Err(fmt::format("cannot generate a self-signed certificate: {}", take_error()));
  SelfSignedCert out;
  out.cert_pem = pem_of_cert(x.get());
  out.key_pem = pem_of_ec_key(key.get());
  auto der = der_of(x.get());
  if (out.cert_pem.empty() || out.key_pem.empty() || der.empty())
    return Err(fmt::format("cannot encode the self-signed certificate: {}", take_error()));
  out.cert_name = cert_name_for_der(der);
  out.not_after = until;
  out.created = true;
  return out;
}

Result<SelfSignedCert, std::string> load_or_create_self_signed(const std::string& cert_path,
                                                               const std::string& key_path,
                                                               std::string_view hostname) {
  int cert_err = 0;
  int key_err = 0;
  bool have_cert = detail::file_exists(cert_path, cert_err);
  bool have_key = detail::file_exists(key_path, key_err);
  if (cert_err != 0) return Err(fmt::format("certificate file {}: {}", cert_path, std::strerror(cert_err)));
  if (key_err != 0) return Err(fmt::format("key file {}: {}", key_path, std::strerror(key_err)));

  if (have_cert && have_key) {
    auto cert_pem = read_pem_file(cert_path, "certificate file");
    if (!cert_pem) return Err(cert_pem.error());
    auto key_pem = read_pem_file(key_path, "key file");
    if (!key_pem) return Err(key_pem.error());
    auto chain = detail::parse_cert_chain(*cert_pem);
    if (!chain) return Err(fmt::format("certificate file {}: {}", cert_path, chain.error()));
    auto key = detail::parse_private_key(*key_pem);
    if (!key) return Err(fmt::format("key file {}: {}", key_path, key.error()));
    if (!detail::key_matches_cert(chain->leaf.get(), key->get()))
      return Err(fmt::format("key file {} does not match certificate file {}", key_path, cert_path));
    if (!detail::cert_matches_host(chain->leaf.get(), hostname))
      return Err(fmt::format("certificate file {} is not valid for hostname \"{}\"", cert_path, hostname));
    SelfSignedCert out;
    out.cert_name = cert_name_for_der(detail::der_of(chain->leaf.get()));
    out.not_after = detail::not_after_of(chain->leaf.get());
    out.cert_pem = std::move(*cert_pem);
    out.key_pem = std::move(*key_pem);
    return out;
  }
  if (have_cert != have_key) {
    return Err(fmt::format("{} exists but {} does not; refusing to replace it (remove both to generate a new pair)",
                           have_cert ? cert_path : key_path, have_cert ? key_path : cert_path));
  }

  auto made = generate_self_signed(hostname, std::time(nullptr));
  if (!made) return made;
  for (const std::string* p : {&cert_path, &key_path}) {
    if (auto st = detail::make_dirs(std::filesystem::path(*p).parent_path()); !st) return Err(st.error());
  }
  if (auto st = detail::write_file_atomic(key_path, made->key_pem, 0600); !st) return Err(st.error());
  if (auto st = detail::write_file_atomic(cert_path, made->cert_pem, 0644); !st) return Err(st.error());
  return made;
}

Result<std::string, std::string> read_pem_file(const std::string& path, std::string_view what) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Err(fmt::format("{} {}: {}", what, path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return Err(fmt::format("{} {}: {}", what, path, std::strerror(e)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Err(fmt::format("{} {}: not a regular file", what, path));
  }
  if (static_cast<std::uint64_t>(st.st_size) > kMaxPemFileBytes) {
    ::close(fd);
    return Err(fmt::format("{} {}: larger than {} bytes", what, path, kMaxPemFileBytes));
  }
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return Err(fmt::format("{} {}: {}", what, path, std::strerror(e)));
    }
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > kMaxPemFileBytes) {
      ::close(fd);
      return Err(fmt::format("{} {}: larger than {} bytes", what, path, kMaxPemFileBytes));
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (out.empty()) return Err(fmt::format("{} {}: empty", what, path));
  return out;
}

}  // namespace derpd::tls
