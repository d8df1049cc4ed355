// The mesh-link and admission families: names and types, one series per link with every label at
// zero before anything happened, histogram buckets cumulative with +Inf, values taken from the
// source at each scrape, nothing when the feature is not configured, promtool (lint included)
// together with the STUN and DERP families.
#include <gtest/gtest.h>

#include <array>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "relay/metrics/admission_metrics.h"
#include "relay/metrics/derp_metrics.h"
#include "relay/metrics/exposition.h"
#include "relay/metrics/mesh_metrics.h"
#include "relay/metrics/stun_metrics.h"
#include "tests/unit/metrics/exposition_text.h"
#include "tests/unit/metrics/promtool.h"

namespace derpd::metrics {
namespace {

using testing::contains_line;
using testing::types_of;

std::string render(std::shared_ptr<const prometheus::Collectable> c) {
  Exposition ex;
  ex.add(std::move(c));
  return ex.render();
}

// --- mesh ------------------------------------------------------------------------------------------

std::shared_ptr<MeshMetrics> mesh_of(std::vector<MeshLinkTotals>* links) {
  auto m = std::make_shared<MeshMetrics>();
  m->set_source([links](std::vector<MeshLinkTotals>& out) { out.insert(out.end(), links->begin(), links->end()); });
  return m;
}

TEST(MeshMetrics, EveryLinkHasEverySeriesAtZeroFromTheStart) {
  std::vector<MeshLinkTotals> links(2);
  links[0].peer = "derp2.example.com";
  links[1].peer = "derp3.example.com:8443/10.0.0.3";
  const std::string text = render(mesh_of(&links));
  const std::map<std::string, std::string> want = {
      {"derpd_mesh_link_up", "gauge"},
      {"derpd_mesh_link_self", "gauge"},
      {"derpd_mesh_link_connects_total", "counter"},
      {"derpd_mesh_link_connect_failures_total", "counter"},
      {"derpd_mesh_link_disconnects_total", "counter"},
      {"derpd_mesh_link_clients", "gauge"},
      {"derpd_mesh_link_forwarded_packets_total", "counter"},
      {"derpd_mesh_link_forwarded_bytes_total", "counter"},
      {"derpd_mesh_link_presence_events_total", "counter"},
  };
  EXPECT_EQ(types_of(text), want) << text;
  for (const auto& l : links) {
    for (const auto& [name, type] : want) {
      if (name == "derpd_mesh_link_presence_events_total") continue;
      EXPECT_TRUE(contains_line(text, name + "{peer=\"" + l.peer + "\"} 0")) << name << " " << l.peer << "\n" << text;
    }
    for (const char* ev : {"present", "gone"})
      EXPECT_TRUE(contains_line(text, "derpd_mesh_link_presence_events_total{peer=\"" + l.peer + "\",event=\"" + ev +
                                          "\"} 0"))
          << text;
  }
}

TEST(MeshMetrics, ValuesComeFromTheSourceAtEachScrape) {
  std::vector<MeshLinkTotals> links(1);
  links[0].peer = "127.0.0.1:3341";
  auto m = mesh_of(&links);
  EXPECT_TRUE(contains_line(render(m), "derpd_mesh_link_up{peer=\"127.0.0.1:3341\"} 0"));
  links[0].up = true;
  links[0].connects = 3;
  links[0].connect_failures = 7;
  links[0].disconnects = 2;
  links[0].clients = 41;
  links[0].present_events = 50;
  links[0].gone_events = 9;
  links[0].forwarded_packets = 1000;
  links[0].forwarded_bytes = std::uint64_t{1} << 40;
  const std::string text = render(m);
  for (const char* line : {"derpd_mesh_link_up{peer=\"127.0.0.1:3341\"} 1",
                           "derpd_mesh_link_self{peer=\"127.0.0.1:3341\"} 0",
                           "derpd_mesh_link_connects_total{peer=\"127.0.0.1:3341\"} 3",
                           "derpd_mesh_link_connect_failures_total{peer=\"127.0.0.1:3341\"} 7",
                           "derpd_mesh_link_disconnects_total{peer=\"127.0.0.1:3341\"} 2",
                           "derpd_mesh_link_clients{peer=\"127.0.0.1:3341\"} 41",
                           "derpd_mesh_link_presence_events_total{peer=\"127.0.0.1:3341\",event=\"present\"} 50",
                           "derpd_mesh_link_presence_events_total{peer=\"127.0.0.1:3341\",event=\"gone\"} 9",
                           "derpd_mesh_link_forwarded_packets_total{peer=\"127.0.0.1:3341\"} 1000",
                           "derpd_mesh_link_forwarded_bytes_total{peer=\"127.0.0.1:3341\"} 1099511627776"})
    EXPECT_TRUE(contains_line(text, line)) << line << "\n" << text;
  links[0].up = false;
  links[0].self = true;
  EXPECT_TRUE(contains_line(render(m), "derpd_mesh_link_self{peer=\"127.0.0.1:3341\"} 1"));
}

TEST(MeshMetrics, NoLinksNoFamilies) {
  EXPECT_EQ(render(std::make_shared<MeshMetrics>()), "");
  std::vector<MeshLinkTotals> none;
  EXPECT_EQ(render(mesh_of(&none)), "");
}

// --- admission -------------------------------------------------------------------------------------

constexpr std::array<double, 3> kBounds = {0.01, 0.1, 1};
const std::vector<std::string_view> kResults = {"allowed", "denied", "timeout"};

std::shared_ptr<AdmissionMetrics> admission_of(AdmissionTotals* t) {
  auto m = std::make_shared<AdmissionMetrics>();
  m->set_source([t](AdmissionTotals& out) { out = *t; });
  return m;
}

AdmissionTotals zero_admission() {
  AdmissionTotals t;
  for (auto r : kResults) t.decisions.emplace_back(r, 0);
  t.latency_bounds = kBounds;
  t.latency_counts.assign(kBounds.size() + 1, 0);
  return t;
}

TEST(AdmissionMetrics, EveryResultAndBucketAtZeroFromTheStart) {
  AdmissionTotals t = zero_admission();
  const std::string text = render(admission_of(&t));
  EXPECT_EQ(types_of(text), (std::map<std::string, std::string>{{"derpd_admission_decisions_total", "counter"},
                                                                {"derpd_admission_fail_open_admits_total", "counter"},
                                                                {"derpd_admission_pending", "gauge"},
                                                                {"derpd_admission_duration_seconds", "histogram"}}))
      << text;
  for (auto r : kResults)
    EXPECT_TRUE(contains_line(text, "derpd_admission_decisions_total{result=\"" + std::string(r) + "\"} 0")) << text;
  for (const char* le : {"0.01", "0.1", "1", "+Inf"})
    EXPECT_TRUE(contains_line(text, "derpd_admission_duration_seconds_bucket{le=\"" + std::string(le) + "\"} 0"))
        << le << "\n" << text;
  EXPECT_TRUE(contains_line(text, "derpd_admission_duration_seconds_count 0")) << text;
  EXPECT_TRUE(contains_line(text, "derpd_admission_pending 0")) << text;
}

TEST(AdmissionMetrics, HistogramBucketsAreCumulative) {
  AdmissionTotals t = zero_admission();
  t.decisions[0].second = 6;
  t.decisions[2].second = 2;
  t.fail_open_admits = 2;
  t.pending = 4;
  t.latency_counts = {1, 3, 2, 2};  // <=10ms, <=100ms, <=1s, above
  t.latency_sum = 12.5;
  const std::string text = render(admission_of(&t));
  for (const char* line : {"derpd_admission_decisions_total{result=\"allowed\"} 6",
                           "derpd_admission_decisions_total{result=\"timeout\"} 2",
                           "derpd_admission_fail_open_admits_total 2", "derpd_admission_pending 4",
                           "derpd_admission_duration_seconds_bucket{le=\"0.01\"} 1",
                           "derpd_admission_duration_seconds_bucket{le=\"0.1\"} 4",
                           "derpd_admission_duration_seconds_bucket{le=\"1\"} 6",
                           "derpd_admission_duration_seconds_bucket{le=\"+Inf\"} 8",
                           "derpd_admission_duration_seconds_count 8", "derpd_admission_duration_seconds_sum 12.5"})
    EXPECT_TRUE(contains_line(text, line)) << line << "\n" << text;
}

TEST(AdmissionMetrics, NotConfiguredNoFamilies) { EXPECT_EQ(render(std::make_shared<AdmissionMetrics>()), ""); }

// --- all of /metrics -------------------------------------------------------------------------------

TEST(MeshAdmissionMetrics, PassPromtoolWithEveryOtherFamily) {
  if (!testing::have_promtool()) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  std::vector<MeshLinkTotals> links(2);
  links[0].peer = "derp2.example.com";
  links[0].up = true;
  links[0].connects = 1;
  links[0].clients = 12;
  links[1].peer = "derp3.example.com/10.0.0.3";
  links[1].connect_failures = 4;
  AdmissionTotals t = zero_admission();
  t.decisions[1].second = 5;
  t.latency_counts = {0, 5, 0, 0};
  t.latency_sum = 0.2;
  Exposition ex;
  ex.add(std::make_shared<StunMetrics>());
  ex.add(std::make_shared<DerpMetrics>());
  ex.add(admission_of(&t));
  ex.add(mesh_of(&links));
  const std::string text = ex.render();
  auto r = testing::promtool_check(text);
  EXPECT_EQ(r.exit_code, 0) << r.output << "\n" << text;
  EXPECT_EQ(r.output, "") << "lint findings\n" << text;
}

}  // namespace
}  // namespace derpd::metrics
