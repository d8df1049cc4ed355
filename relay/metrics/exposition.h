// Exposition: everything /metrics shows, rendered in the Prometheus text format (0.0.4).
//
// Two kinds of source feed it:
//  - a prometheus::Registry, for ordinary metrics (gauges set at start-up, rare events) that
//    prometheus-cpp's own counters and gauges handle well;
//  - Collectables added with add(), which compute their samples when scraped. Hot-path counters
//    use these: each worker increments its own relaxed atomics (no shared cache line, no locked
//    instruction) and the collectable sums the workers' values at scrape time (see StunMetrics).
//
// Thread-safe: render() may run on any thread while workers count.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/registry.h>

namespace derpd::metrics {

inline constexpr std::string_view kTextContentType = "text/plain; version=0.0.4; charset=utf-8";

class Exposition {
 public:
  Exposition();
  Exposition(const Exposition&) = delete;
  Exposition& operator=(const Exposition&) = delete;

  prometheus::Registry& registry() { return *registry_; }

  // Adds a collectable; its families follow the registry's, in the order added.
  void add(std::shared_ptr<const prometheus::Collectable> c);

  // Every family, in the text format.
  std::string render() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const prometheus::Collectable>> collectables_;  // guarded by mu_
};

}  // namespace derpd::metrics
