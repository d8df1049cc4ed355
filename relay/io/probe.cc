#include "relay/io/probe.h"

#include <liburing.h>
#include <sys/utsname.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace derpd::io {

namespace {

bool kernel_at_least(const std::string& release, int major, int minor) {
  int ma = 0, mi = 0;
  if (std::sscanf(release.c_str(), "%d.%d", &ma, &mi) != 2) return true;  // unknown: let the ops tell
  return ma > major || (ma == major && mi >= minor);
}

struct OpNeed {
  int op;
  const char* name;
  const char* since;
};

constexpr OpNeed kOps[] = {
    {IORING_OP_RECVMSG, "recvmsg", "5.3"},     {IORING_OP_SENDMSG, "sendmsg", "5.3"},
    {IORING_OP_READ, "read", "5.6"},           {IORING_OP_ASYNC_CANCEL, "async cancel", "5.5"},
    {IORING_OP_ACCEPT, "accept", "5.5"},       {IORING_OP_RECV, "recv", "5.6"},
    {IORING_OP_SEND, "send", "5.6"},           {IORING_OP_TIMEOUT, "timeout", "5.4"},
    {IORING_OP_CLOSE, "close", "5.6"},
};

}  // namespace

std::string KernelProbe::explain() const {
  std::string s;
  if (!io_uring) s += "io_uring is not available (disabled by sysctl kernel.io_uring_disabled, seccomp, or a kernel before 5.1)\n";
  for (const auto& m : missing) s += "io_uring: " + m + " (this is Linux " + kernel + ")\n";
  return s;
}

KernelProbe probe_kernel() {
  KernelProbe p;
  utsname u{};
  if (uname(&u) == 0) p.kernel = u.release;

  io_uring ring{};
  int rc = io_uring_queue_init(8, &ring, 0);
  if (rc < 0) return p;
  p.io_uring = true;

  if (io_uring_probe* pr = io_uring_get_probe_ring(&ring)) {
    for (const auto& need : kOps)
      if (!io_uring_opcode_supported(pr, need.op))
        p.missing.push_back(std::string(need.name) + " operation needs Linux " + need.since);
    p.msg_ring = io_uring_opcode_supported(pr, IORING_OP_MSG_RING) != 0;
    io_uring_free_probe(pr);
  } else {
    p.missing.push_back("opcode probe (IORING_REGISTER_PROBE) needs Linux 5.6");
  }
  if (!(ring.features & IORING_FEAT_EXT_ARG)) p.missing.push_back("wait timeouts (IORING_FEAT_EXT_ARG) need Linux 5.11");
  if (!(ring.features & IORING_FEAT_FAST_POLL)) p.missing.push_back("fast poll (IORING_FEAT_FAST_POLL) needs Linux 5.7");

  // Ring-mapped provided buffers: try to register a tiny one.
  void* mem = nullptr;
  if (posix_memalign(&mem, 4096, 4096) == 0) {
    std::memset(mem, 0, 4096);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<unsigned long long>(mem);
    reg.ring_entries = 8;
    reg.bgid = 7;
    if (io_uring_register_buf_ring(&ring, &reg, 0) == 0) {
      io_uring_unregister_buf_ring(&ring, 7);
    } else {
      p.missing.push_back("ring-mapped provided buffers (IORING_REGISTER_PBUF_RING) need Linux 5.19");
    }
    free(mem);
  }
  io_uring_queue_exit(&ring);

  // Multishot recvmsg has no probe bit; it arrived with Linux 6.0.
  if (!kernel_at_least(p.kernel, 6, 0)) p.missing.push_back("multishot recvmsg needs Linux 6.0");

  io_uring_params params{};
  params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(8, &ring, &params) == 0) {
    p.defer_taskrun = true;
    io_uring_queue_exit(&ring);
  }
  return p;
}

}  // namespace derpd::io
