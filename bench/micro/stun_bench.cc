// Micro-benchmarks of the STUN hot paths: the daemon runs respond() once per datagram, the
// prober and the load generator build requests and parse responses.
#include <benchmark/benchmark.h>

#include <array>
#include <cstddef>
#include <vector>

#include "stun/builder.h"
#include "stun/client.h"
#include "stun/message.h"
#include "stun/responder.h"
#include "tests/unit/stun/server_addresses.h"

namespace derpd::stun {
namespace {

TxId fixed_txid() {
  std::array<std::byte, TxId::kSize> id{};
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = std::byte(i * 17 + 3);
  return TxId::from_bytes(id);
}

std::vector<std::byte> request(const BindingRequestOptions& o, const TxId& txid = fixed_txid()) {
  std::vector<std::byte> b(512);
  b.resize(build_binding_request(txid, o, b));
  return b;
}

std::vector<std::byte> tailnode() {
  BindingRequestOptions o;
  o.form = RequestForm::kTailnode;
  return request(o);
}

void run_respond(benchmark::State& state, const std::vector<std::byte>& datagram, bool v6, bool alternate,
                 Disposition want) {
  const ServerAddresses srv = test::server_addresses(v6, alternate);
  Request r;
  r.datagram = datagram;
  r.remote = *Endpoint::parse(v6 ? "[2001:db8::77]:40000" : "198.51.100.7:40000");
  r.local = Endpoint{srv.ip[0], srv.port[0]};
  std::array<std::byte, kMaxResponseSize> out{};
  for (auto _ : state) {
    Reply reply;
    Disposition d = respond(r, srv, out, reply);
    benchmark::DoNotOptimize(d);
    benchmark::DoNotOptimize(reply);
    benchmark::ClobberMemory();
  }
  Reply reply;
  if (respond(r, srv, out, reply) != want) state.SkipWithError("unexpected disposition");
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(datagram.size()));
}

void BM_ParseTailnodeRequest(benchmark::State& state) {
  const auto d = tailnode();
  for (auto _ : state) {
    auto m = Message::parse(d);
    benchmark::DoNotOptimize(m);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ParseTailnodeRequest);

void BM_RespondTailnodeV4(benchmark::State& state) {
  run_respond(state, tailnode(), false, false, Disposition::kSuccess);
}
BENCHMARK(BM_RespondTailnodeV4);

void BM_RespondTailnodeV6(benchmark::State& state) {
  run_respond(state, tailnode(), true, false, Disposition::kSuccess);
}
BENCHMARK(BM_RespondTailnodeV6);

void BM_RespondGeneric(benchmark::State& state) {
  run_respond(state, request(BindingRequestOptions{}), false, state.range(0) != 0, Disposition::kSuccess);
}
BENCHMARK(BM_RespondGeneric)->ArgName("alternate")->Arg(0)->Arg(1);

void BM_RespondChangeRequest(benchmark::State& state) {
  BindingRequestOptions o;
  o.change_request = ChangeRequest{true, true};
  // With an alternate: answered from the other socket; without: 420.
  const bool alternate = state.range(0) != 0;
  run_respond(state, request(o), false, alternate, alternate ? Disposition::kSuccess : Disposition::kErrorResponse);
}
BENCHMARK(BM_RespondChangeRequest)->ArgName("alternate")->Arg(0)->Arg(1);

void BM_RespondClassic(benchmark::State& state) {
  BindingRequestOptions o;
  o.form = RequestForm::kClassic;
  run_respond(state, request(o, new_classic_txid()), false, true, Disposition::kSuccessClassic);
}
BENCHMARK(BM_RespondClassic);

void BM_RespondNotStun(benchmark::State& state) {
  run_respond(state, std::vector<std::byte>(1200, std::byte{0x17}), false, false, Disposition::kNotStun);
}
BENCHMARK(BM_RespondNotStun);

void BM_BuildTailnodeRequest(benchmark::State& state) {
  const TxId txid = fixed_txid();
  BindingRequestOptions o;
  o.form = RequestForm::kTailnode;
  std::array<std::byte, 64> out{};
  for (auto _ : state) {
    std::size_t n = build_binding_request(txid, o, out);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BuildTailnodeRequest);

void BM_BuildChangeRequest(benchmark::State& state) {
  const TxId txid = fixed_txid();
  BindingRequestOptions o;
  o.change_request = ChangeRequest{true, false};
  std::array<std::byte, 128> out{};
  for (auto _ : state) {
    std::size_t n = build_binding_request(txid, o, out);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BuildChangeRequest);

void BM_ParseBindingResponse(benchmark::State& state) {
  // A full RFC 5780 answer (XOR-MAPPED, MAPPED, RESPONSE-ORIGIN, OTHER-ADDRESS, SOFTWARE, FINGERPRINT).
  const ServerAddresses srv = test::server_addresses(false, true);
  const auto req = request(BindingRequestOptions{});
  Request r{req, *Endpoint::parse("198.51.100.7:40000"), Endpoint{srv.ip[0], srv.port[0]}, SocketIndex{}};
  std::array<std::byte, kMaxResponseSize> out{};
  Reply reply;
  if (respond(r, srv, out, reply) != Disposition::kSuccess) state.SkipWithError("no response to parse");
  const Bytes resp = Bytes(out).first(reply.size);
  for (auto _ : state) {
    auto p = parse_binding_response(resp);
    benchmark::DoNotOptimize(p);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ParseBindingResponse);

}  // namespace
}  // namespace derpd::stun
