#include "bench/load/load_common.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <stdexcept>
#include <string>

namespace derpd::bench {
namespace {

std::string refusal(std::string_view text, bool port_zero_ok = false) {
  try {
    (void)loopback_endpoint(text, "target", "127.0.0.1:3478", port_zero_ok);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(LoopbackEndpoint, AcceptsLoopbackOnly) {
  EXPECT_EQ(loopback_endpoint("127.0.0.1:3478", "target", "").to_string(), "127.0.0.1:3478");
  EXPECT_EQ(loopback_endpoint("127.200.3.4:1", "target", "").to_string(), "127.200.3.4:1");
  EXPECT_EQ(loopback_endpoint("[::1]:3340", "target", "").to_string(), "[::1]:3340");

  for (const char* off : {"10.0.0.1:3478", "0.0.0.0:3478", "128.0.0.1:3478", "[::]:3478", "[::2]:3478",
                          "[::ffff:10.0.0.1]:3478", "[fe80::1]:3478", "8.8.8.8:53"}) {
    const std::string why = refusal(off);
    EXPECT_NE(why.find("refusing target"), std::string::npos) << off << ": " << why;
    EXPECT_NE(why.find("only loopback"), std::string::npos) << off << ": " << why;
  }
}

TEST(LoopbackEndpoint, RejectsWhatIsNotIpAndPort) {
  for (const char* bad : {"", "127.0.0.1", "localhost:3478", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:-1",
                          "[::1]", "127.0.0.1:3478 "}) {
    const std::string why = refusal(bad);
    EXPECT_EQ(why.rfind("bad target '", 0), 0u) << bad << ": " << why;
    EXPECT_NE(why.find("e.g. 127.0.0.1:3478"), std::string::npos) << why;
  }
}

TEST(LoopbackEndpoint, PortZeroOnlyWhenAsked) {
  EXPECT_EQ(refusal("127.0.0.1:0").rfind("bad target", 0), 0u);
  EXPECT_EQ(loopback_endpoint("127.0.0.1:0", "listen address", "", true).port, 0);
  EXPECT_NE(refusal("10.0.0.1:0", true).find("refusing"), std::string::npos) << "port 0 does not lift the rule";
}

TEST(PinToCpu, PinsToAnAllowedCpuAndNamesABadOne) {
  cpu_set_t before;
  ASSERT_EQ(sched_getaffinity(0, sizeof before, &before), 0);
  int allowed = -1;
  for (int c = 0; c < CPU_SETSIZE && allowed < 0; ++c)
    if (CPU_ISSET(c, &before)) allowed = c;
  ASSERT_GE(allowed, 0);

  pin_to_cpu(allowed);
  cpu_set_t now;
  ASSERT_EQ(sched_getaffinity(0, sizeof now, &now), 0);
  EXPECT_EQ(CPU_COUNT(&now), 1);
  EXPECT_TRUE(CPU_ISSET(allowed, &now));

  for (int bad : {-1, CPU_SETSIZE}) {
    try {
      pin_to_cpu(bad);
      ADD_FAILURE() << "CPU " << bad << " accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("CPU " + std::to_string(bad)), std::string::npos) << e.what();
    }
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof before, &before), 0);
}

TEST(Clocks, MonotonicAndCpuTimeAdvance) {
  const std::uint64_t t0 = now_ns();
  const double c0 = own_cpu_seconds();
  volatile std::uint64_t sink = 0;
  for (std::uint64_t i = 0; i < 100'000'000 && own_cpu_seconds() - c0 < 0.01; ++i) sink = sink + 1;  // ~10 ms
  EXPECT_GE(now_ns() - t0, 10'000'000u);
  EXPECT_GE(own_cpu_seconds() - c0, 0.01);
}

}  // namespace
}  // namespace derpd::bench
