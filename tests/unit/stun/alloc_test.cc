// The STUN hot paths (respond(), request building, response parsing) must not touch the heap.
// This binary replaces the global operator new/new[] with counting versions and runs many calls
// of every kind between two reads of the counter.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "stun/builder.h"
#include "stun/client.h"
#include "stun/message.h"
#include "stun/responder.h"
#include "tests/unit/stun/server_addresses.h"
#include "tests/unit/stun/vectors.h"

namespace {
std::atomic<long> g_allocations{0};

void* counted_alloc(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* counted_alloc_aligned(std::size_t n, std::align_val_t al) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const std::size_t a = static_cast<std::size_t>(al);
  if (void* p = std::aligned_alloc(a, (n + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t n) { return counted_alloc(n); }
void* operator new[](std::size_t n) { return counted_alloc(n); }
void* operator new(std::size_t n, std::align_val_t a) { return counted_alloc_aligned(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted_alloc_aligned(n, a); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace derpd::stun {
namespace {

constexpr int kIterations = 20000;

struct Input {
  const char* name;
  std::vector<std::byte> bytes;
  Disposition want;
  bool alternate;
};

std::vector<std::byte> make(const TxId& txid, const BindingRequestOptions& o) {
  std::vector<std::byte> b(2048);
  b.resize(build_binding_request(txid, o, b));
  return b;
}

std::vector<Input> inputs() {
  const TxId txid = new_txid();
  std::vector<Input> v;
  BindingRequestOptions o;
  o.form = RequestForm::kTailnode;
  v.push_back({"tailnode", make(txid, o), Disposition::kSuccess, false});
  o = {};
  v.push_back({"generic", make(txid, o), Disposition::kSuccess, false});
  v.push_back({"generic_alt", make(txid, o), Disposition::kSuccess, true});
  o.change_request = ChangeRequest{true, true};
  v.push_back({"change_request", make(txid, o), Disposition::kSuccess, true});
  v.push_back({"change_request_420", make(txid, o), Disposition::kErrorResponse, false});
  o = {};
  o.padding = 1200;
  v.push_back({"padding", make(txid, o), Disposition::kSuccess, true});
  o = {};
  o.response_port = 9999;
  v.push_back({"response_port", make(txid, o), Disposition::kSuccess, false});
  o = {};
  o.form = RequestForm::kClassic;
  o.change_request = ChangeRequest{false, true};
  v.push_back({"classic", make(new_classic_txid(), o), Disposition::kSuccessClassic, true});
  v.push_back({"rfc5769_420", test::hex(test::kRfc5769Request), Disposition::kErrorResponse, false});
  auto bad = v[0].bytes;
  bad.back() ^= std::byte{1};
  v.push_back({"bad_fingerprint", bad, Disposition::kMalformed, false});
  v.push_back({"garbage", std::vector<std::byte>(1500, std::byte{0xEE}), Disposition::kNotStun, false});
  return v;
}

TEST(StunAllocations, RespondIsAllocationFree) {
  const auto in = inputs();  // allocations while preparing are fine
  ServerAddresses server = test::server_addresses(false, false);
  const Endpoint remote = *Endpoint::parse("198.51.100.7:40000");
  const Endpoint local = *Endpoint::parse("203.0.113.1:3478");
  std::array<std::byte, kMaxResponseSize> out{};

  for (const Input& i : in) {
    server.has_alternate = i.alternate;
    Request r{i.bytes, remote, local, SocketIndex{}};
    std::size_t answered = 0;
    const long before = g_allocations.load();
    for (int n = 0; n < kIterations; ++n) {
      Reply reply;
      const Disposition d = respond(r, server, out, reply);
      if (d != i.want) ADD_FAILURE() << i.name << ": " << to_string(d);
      answered += reply.size;
    }
    const long after = g_allocations.load();
    EXPECT_EQ(after - before, 0) << i.name;
    if (i.want == Disposition::kSuccess || i.want == Disposition::kSuccessClassic ||
        i.want == Disposition::kErrorResponse) {
      EXPECT_GT(answered, 0u) << i.name;
    }
  }
}

TEST(StunAllocations, ClientHelpersAreAllocationFree) {
  const TxId txid = new_txid();
  std::array<std::byte, 256> req{};
  std::array<std::byte, kMaxResponseSize> resp{};
  const ServerAddresses server = test::server_addresses(true, true);
  const Endpoint remote = *Endpoint::parse("[2001:db8::7]:40000");
  BindingRequestOptions o;
  o.change_request = ChangeRequest{true, false};

  const long before = g_allocations.load();
  std::size_t ok = 0;
  for (int n = 0; n < kIterations; ++n) {
    const std::size_t len = build_binding_request(txid, o, req);
    Request r{Bytes(req).first(len), remote, Endpoint{server.ip[0], 3478}, SocketIndex{}};
    Reply reply;
    (void)respond(r, server, resp, reply);
    auto p = parse_binding_response(Bytes(resp).first(reply.size));
    if (p && p->mapped && *p->mapped == remote && p->txid == txid) ++ok;
  }
  EXPECT_EQ(g_allocations.load() - before, 0);
  EXPECT_EQ(ok, static_cast<std::size_t>(kIterations));
}

// The counter itself works (otherwise the tests above prove nothing).
TEST(StunAllocations, CounterSeesAllocations) {
  const long before = g_allocations.load();
  auto* p = new std::vector<int>(100);
  delete p;
  EXPECT_GE(g_allocations.load() - before, 2);
}

}  // namespace
}  // namespace derpd::stun
