// Start-up probe: does this kernel have every io_uring feature derpd relies on?
//
// Each requirement names the kernel version that introduced it, so a refusal reads like
// "io_uring: multishot recvmsg needs Linux 6.0 (this is 5.15.0)".
#pragma once

#include <string>
#include <vector>

namespace derpd::io {

struct KernelProbe {
  std::string kernel;                // uname release
  bool io_uring = false;             // io_uring_setup works (not disabled by sysctl or seccomp)
  std::vector<std::string> missing;  // human-readable: what is missing and which kernel has it
  bool defer_taskrun = false;        // IORING_SETUP_DEFER_TASKRUN (6.1); optional
  bool msg_ring = false;             // IORING_OP_MSG_RING (5.18); optional (eventfd fallback)

  bool ok() const { return io_uring && missing.empty(); }
  // One line per missing requirement, or empty.
  std::string explain() const;
};

// Runs once at start-up (creates and tears down a small ring). Never throws.
KernelProbe probe_kernel();

}  // namespace derpd::io
