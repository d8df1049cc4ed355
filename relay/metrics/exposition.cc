#include "relay/metrics/exposition.h"

#include <prometheus/text_serializer.h>

#include <sstream>

namespace derpd::metrics {

Exposition::Exposition() : registry_(std::make_shared<prometheus::Registry>()) {}

void Exposition::add(std::shared_ptr<const prometheus::Collectable> c) {
  std::lock_guard lock(mu_);
  collectables_.push_back(std::move(c));
}

std::string Exposition::render() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  {
    std::lock_guard lock(mu_);
    for (const auto& c : collectables_) {
      auto more = c->Collect();
      families.insert(families.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
    }
  }
  std::ostringstream out;
  prometheus::TextSerializer{}.Serialize(out, families);
  return std::move(out).str();
}

}  // namespace derpd::metrics
