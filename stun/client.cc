#include "stun/client.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdlib>

#include "stun/builder.h"

namespace derpd::stun {

namespace {
constexpr std::string_view kTailnodeSoftware = "tailnode";

void fill_random(std::span<std::byte> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::abort();  // the kernel's CSPRNG is unavailable: nothing sensible to fall back to
    }
    done += static_cast<std::size_t>(n);
  }
}
}  // namespace

TxId new_txid() {
  std::array<std::byte, TxId::kSize> b;
  fill_random(b);
  return TxId::from_bytes(b);
}

TxId new_classic_txid() {
  for (;;) {
    std::array<std::byte, TxId::kClassicSize> b;
    fill_random(b);
    TxId t = TxId::from_classic_bytes(b);
    if (!t.has_cookie()) return t;
  }
}

std::size_t build_binding_request(const TxId& txid, const BindingRequestOptions& opts, MutBytes out) {
  const bool classic = opts.form == RequestForm::kClassic;
  if (classic == txid.has_cookie()) return 0;
  MessageBuilder b(out, MessageType::kBindingRequest, txid);
  switch (opts.form) {
    case RequestForm::kTailnode:
      b.add_software(kTailnodeSoftware);
      b.add_fingerprint();
      break;
    case RequestForm::kRfc8489:
      if (opts.change_request) b.add_change_request(*opts.change_request);
      if (opts.response_port != 0) b.add_response_port(opts.response_port);
      if (opts.padding != 0) b.add_padding(opts.padding);
      if (!opts.software.empty()) b.add_software(opts.software);
      if (opts.fingerprint) b.add_fingerprint();
      break;
    case RequestForm::kClassic:
      if (opts.change_request) b.add_change_request(*opts.change_request);
      break;
  }
  return b.size();
}

std::string_view to_string(ResponseError e) {
  switch (e) {
    case ResponseError::kNotStun: return "not_stun";
    case ResponseError::kMalformed: return "malformed";
    case ResponseError::kBadFingerprint: return "bad_fingerprint";
    case ResponseError::kNotBindingResponse: return "not_binding_response";
    case ResponseError::kBadAttribute: return "bad_attribute";
    case ResponseError::kNoMappedAddress: return "no_mapped_address";
    case ResponseError::kNoErrorCode: return "no_error_code";
    case ResponseError::kCount: break;
  }
  return "unknown";
}

Result<BindingResponse, ResponseError> parse_binding_response(Bytes datagram) {
  auto parsed = Message::parse(datagram);
  if (!parsed) {
    switch (parsed.error()) {
      case ParseError::kTooShort:
      case ParseError::kNotStun: return Err{ResponseError::kNotStun};
      case ParseError::kFingerprintNotLast:
      case ParseError::kBadFingerprint: return Err{ResponseError::kBadFingerprint};
      default: return Err{ResponseError::kMalformed};
    }
  }
  const Message& m = *parsed;
  if (m.method() != kMethodBinding) return Err{ResponseError::kNotBindingResponse};
  const MessageClass cls = m.message_class();
  if (cls != MessageClass::kSuccessResponse && cls != MessageClass::kErrorResponse) {
    return Err{ResponseError::kNotBindingResponse};
  }

  BindingResponse r;
  r.txid = m.txid();
  r.classic = m.is_classic();
  r.is_error = cls == MessageClass::kErrorResponse;
  r.fingerprint = m.has_fingerprint();

  std::optional<Endpoint> xor_mapped, xor_alt, mapped;
  bool have_error = false;
  for (const Attribute& a : m.attributes()) {
    // Reads an address attribute; a malformed one fails the whole response.
    auto read = [&](std::optional<Endpoint>& slot, bool xored) -> bool {
      auto ep = xored ? decode_xor_address(a.value, m.txid()) : decode_address(a.value);
      if (!ep) return false;
      if (!slot) slot = *ep;  // first occurrence wins
      return true;
    };
    bool ok = true;
    switch (a.type) {
      case AttrType::kXorMappedAddress: ok = read(xor_mapped, true); break;
      case AttrType::kXorMappedAddressAlt: ok = read(xor_alt, true); break;
      case AttrType::kMappedAddress: ok = read(mapped, false); break;
      case AttrType::kResponseOrigin: ok = read(r.response_origin, false); break;
      case AttrType::kOtherAddress: ok = read(r.other_address, false); break;
      case AttrType::kSourceAddress: ok = read(r.source_address, false); break;
      case AttrType::kChangedAddress: ok = read(r.changed_address, false); break;
      case AttrType::kSoftware:
        if (r.software.empty()) r.software = decode_text(a.value);
        break;
      case AttrType::kErrorCode:
        if (!have_error) {
          auto ec = decode_error_code(a.value);
          if (ec) {
            r.error_code = ec->code;
            r.error_reason = ec->reason;
            have_error = true;
          } else if (r.is_error) {
            return Err{ResponseError::kNoErrorCode};
          }
        }
        break;
      case AttrType::kUnknownAttributes: {
        auto ua = decode_unknown_attributes(a.value);
        if (!ua) {
          ok = false;
          break;
        }
        for (std::size_t i = 0; i < ua->size() && r.unknown_count < BindingResponse::kMaxUnknown; ++i) {
          r.unknown[r.unknown_count++] = (*ua)[i];
        }
        break;
      }
      default: break;
    }
    if (!ok) return Err{ResponseError::kBadAttribute};
  }

  if (xor_mapped) {
    r.mapped = xor_mapped;
    r.mapped_from = MappedFrom::kXorMapped;
  } else if (xor_alt) {
    r.mapped = xor_alt;
    r.mapped_from = MappedFrom::kXorMappedAlt;
  } else if (mapped) {
    r.mapped = mapped;
    r.mapped_from = MappedFrom::kMapped;
  }
  if (r.is_error && !have_error) return Err{ResponseError::kNoErrorCode};
  if (!r.is_error && !r.mapped) return Err{ResponseError::kNoMappedAddress};
  if (!r.is_error) {
    r.error_code = 0;
    r.error_reason = {};
  }
  return r;
}

}  // namespace derpd::stun
