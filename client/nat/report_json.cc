#include "client/nat/report_json.h"

#include <fmt/format.h>

#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

namespace derpd::nat {

using nlohmann::json;

namespace {

json endpoint_or_null(const std::optional<Endpoint>& ep) { return ep ? json(ep->to_string()) : json(nullptr); }

json micros_or_null(const std::optional<std::chrono::microseconds>& d) {
  return d ? json(static_cast<std::int64_t>(d->count())) : json(nullptr);
}

// The behaviour fields of a family verdict, written both per family and (for the primary family)
// at the top level; Reader::core() reads them back.
void core_to_json(json& j, const FamilyVerdict& f) {
  j["udp"] = f.udp;
  j["mapping"] = to_string(f.mapping);
  j["filtering"] = to_string(f.filtering);
  j["mapping_endpoint_dependent"] = f.mapping_endpoint_dependent;
  json addrs = json::array();
  for (const auto& ep : f.public_addresses) addrs.push_back(ep.to_string());
  j["public_addresses"] = std::move(addrs);
  j["port_preservation"] = to_string(f.port_preservation);
  j["hairpinning"] = to_string(f.hairpinning);
}

json family_to_json(const FamilyVerdict& f) {
  json j = json::object();
  j["tested"] = f.tested;
  core_to_json(j, f);
  json servers = json::array();
  for (const auto& s : f.servers) {
    json o = json::object();
    o["name"] = s.name;
    o["address"] = s.address.to_string();
    o["other_address"] = endpoint_or_null(s.other_address);
    o["rfc5780"] = s.rfc5780;
    o["change_request"] = to_string(s.change_request);
    o["requests"] = s.requests;
    o["replies"] = s.replies;
    o["mapped"] = endpoint_or_null(s.mapped);
    o["rtt_min_us"] = micros_or_null(s.rtt_min);
    o["rtt_max_us"] = micros_or_null(s.rtt_max);
    servers.push_back(std::move(o));
  }
  j["servers"] = std::move(servers);
  json anomalies = json::array();
  for (const auto& a : f.anomalies) {
    json o = json::object();
    o["kind"] = to_string(a.kind);
    o["server"] = a.server;
    o["test"] = a.test ? json(static_cast<std::uint64_t>(*a.test)) : json(nullptr);
    anomalies.push_back(std::move(o));
  }
  j["anomalies"] = std::move(anomalies);
  return j;
}

// Walks a parsed document. Every getter checks presence, type and range, records the first
// error with its path, and returns false; callers stop at the first false.
class Reader {
 public:
  std::optional<ReportParseError> error;

  bool fail(ReportError code, const std::string& where) {
    if (!error) error = ReportParseError{code, where};
    return false;
  }

  const json* field(const json& obj, const std::string& at, const char* key) {
    auto it = obj.find(key);
    if (it == obj.end()) {
      fail(ReportError::kMissingKey, at + "/" + key);
      return nullptr;
    }
    return &*it;
  }

  bool object(const json& j, const std::string& at) {
    return j.is_object() ? true : fail(ReportError::kWrongType, at);
  }

  bool boolean(const json& obj, const std::string& at, const char* key, bool& out) {
    const json* v = field(obj, at, key);
    if (!v) return false;
    if (!v->is_boolean()) return fail(ReportError::kWrongType, at + "/" + key);
    out = v->get<bool>();
    return true;
  }

  bool text_value(const json& v, const std::string& where, std::string& out) {
    if (!v.is_string()) return fail(ReportError::kWrongType, where);
    const auto* s = v.get_ptr<const json::string_t*>();
    if (s->size() > kMaxTextBytes) return fail(ReportError::kTooLarge, where);
    out = *s;
    return true;
  }

  bool text(const json& obj, const std::string& at, const char* key, std::string& out) {
    const json* v = field(obj, at, key);
    return v && text_value(*v, at + "/" + key, out);
  }

  template <typename E, typename F>
  bool name(const json& obj, const std::string& at, const char* key, F from_string, E& out) {
    std::string s;
    if (!text(obj, at, key, s)) return false;
    auto e = from_string(s);
    if (!e) return fail(ReportError::kBadValue, at + "/" + key);
    out = *e;
    return true;
  }

  // Non-negative integer <= max (JSON floats are refused).
  bool unsigned_value(const json& v, const std::string& where, std::uint64_t max, std::uint64_t& out) {
    if (!v.is_number_integer()) return fail(ReportError::kWrongType, where);
    if (v.is_number_unsigned()) {
      out = v.get<std::uint64_t>();
    } else {
      const auto s = v.get<std::int64_t>();
      if (s < 0) return fail(ReportError::kBadValue, where);
      out = static_cast<std::uint64_t>(s);
    }
    if (out > max) return fail(ReportError::kBadValue, where);
    return true;
  }

  bool endpoint_value(const json& v, const std::string& where, Endpoint& out) {
    std::string s;
    if (!text_value(v, where, s)) return false;
    auto ep = Endpoint::parse(s);
    if (!ep) return fail(ReportError::kBadValue, where);
    out = *ep;
    return true;
  }

  bool optional_endpoint(const json& obj, const std::string& at, const char* key, std::optional<Endpoint>& out) {
    const json* v = field(obj, at, key);
    if (!v) return false;
    if (v->is_null()) {
      out.reset();
      return true;
    }
    Endpoint ep;
    if (!endpoint_value(*v, at + "/" + key, ep)) return false;
    out = ep;
    return true;
  }

  bool optional_micros(const json& obj, const std::string& at, const char* key,
                       std::optional<std::chrono::microseconds>& out) {
    const json* v = field(obj, at, key);
    if (!v) return false;
    if (v->is_null()) {
      out.reset();
      return true;
    }
    std::uint64_t n = 0;
    if (!unsigned_value(*v, at + "/" + key, static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()), n))
      return false;
    out = std::chrono::microseconds(static_cast<std::int64_t>(n));
    return true;
  }

  const json* list(const json& obj, const std::string& at, const char* key) {
    const json* v = field(obj, at, key);
    if (!v) return nullptr;
    if (!v->is_array()) {
      fail(ReportError::kWrongType, at + "/" + key);
      return nullptr;
    }
    if (v->size() > kMaxListEntries) {
      fail(ReportError::kTooLarge, at + "/" + key);
      return nullptr;
    }
    return v;
  }

  bool server(const json& j, const std::string& at, ServerResult& s) {
    if (!object(j, at)) return false;
    std::uint64_t n = 0;
    if (!text(j, at, "name", s.name)) return false;
    const json* addr = field(j, at, "address");
    if (!addr || !endpoint_value(*addr, at + "/address", s.address)) return false;
    if (!optional_endpoint(j, at, "other_address", s.other_address)) return false;
    if (!boolean(j, at, "rfc5780", s.rfc5780)) return false;
    if (!name(j, at, "change_request", change_request_support_from_string, s.change_request)) return false;
    const json* v = field(j, at, "requests");
    if (!v || !unsigned_value(*v, at + "/requests", std::numeric_limits<std::uint32_t>::max(), n)) return false;
    s.requests = static_cast<std::uint32_t>(n);
    v = field(j, at, "replies");
    if (!v || !unsigned_value(*v, at + "/replies", std::numeric_limits<std::uint32_t>::max(), n)) return false;
    s.replies = static_cast<std::uint32_t>(n);
    if (!optional_endpoint(j, at, "mapped", s.mapped)) return false;
    if (!optional_micros(j, at, "rtt_min_us", s.rtt_min)) return false;
    if (!optional_micros(j, at, "rtt_max_us", s.rtt_max)) return false;
    // Consistency: replies answer requests; round-trip times exist exactly when replies do.
    if (s.replies > s.requests) return fail(ReportError::kInconsistent, at + "/replies");
    if (s.rtt_min.has_value() != (s.replies > 0) || s.rtt_max.has_value() != (s.replies > 0))
      return fail(ReportError::kInconsistent, at + "/rtt_min_us");
    if (s.rtt_min && *s.rtt_min > *s.rtt_max) return fail(ReportError::kInconsistent, at + "/rtt_min_us");
    if (s.mapped && s.replies == 0) return fail(ReportError::kInconsistent, at + "/mapped");
    return true;
  }

  bool anomaly(const json& j, const std::string& at, Anomaly& a) {
    if (!object(j, at)) return false;
    if (!name(j, at, "kind", anomaly_kind_from_string, a.kind)) return false;
    if (!text(j, at, "server", a.server)) return false;
    const json* v = field(j, at, "test");
    if (!v) return false;
    if (v->is_null()) {
      a.test.reset();
      return true;
    }
    std::uint64_t n = 0;
    if (!unsigned_value(*v, at + "/test", std::numeric_limits<std::uint32_t>::max(), n)) return false;
    a.test = static_cast<std::size_t>(n);
    return true;
  }

  // The verdict fields shared by a family object and the top level.
  bool core(const json& j, const std::string& at, FamilyVerdict& f) {
    if (!boolean(j, at, "udp", f.udp)) return false;
    if (!name(j, at, "mapping", behavior_from_string, f.mapping)) return false;
    if (!name(j, at, "filtering", behavior_from_string, f.filtering)) return false;
    if (!boolean(j, at, "mapping_endpoint_dependent", f.mapping_endpoint_dependent)) return false;
    const json* addrs = list(j, at, "public_addresses");
    if (!addrs) return false;
    f.public_addresses.clear();
    for (std::size_t i = 0; i < addrs->size(); ++i) {
      Endpoint ep;
      if (!endpoint_value((*addrs)[i], fmt::format("{}/public_addresses/{}", at, i), ep)) return false;
      f.public_addresses.push_back(ep);
    }
    if (!name(j, at, "port_preservation", port_preservation_from_string, f.port_preservation)) return false;
    if (!name(j, at, "hairpinning", hairpin_from_string, f.hairpinning)) return false;
    return true;
  }

  bool family(const json& doc, const char* key, Family fam, FamilyVerdict& f) {
    const std::string at = std::string("/") + key;
    const json* j = field(doc, "", key);
    if (!j || !object(*j, at)) return false;
    if (!boolean(*j, at, "tested", f.tested)) return false;
    if (!core(*j, at, f)) return false;
    const json* servers = list(*j, at, "servers");
    if (!servers) return false;
    for (std::size_t i = 0; i < servers->size(); ++i) {
      ServerResult s;
      const std::string sat = fmt::format("{}/servers/{}", at, i);
      if (!server((*servers)[i], sat, s)) return false;
      if (s.address.addr.family() != fam) return fail(ReportError::kInconsistent, sat + "/address");
      f.servers.push_back(std::move(s));
    }
    const json* anomalies = list(*j, at, "anomalies");
    if (!anomalies) return false;
    for (std::size_t i = 0; i < anomalies->size(); ++i) {
      Anomaly a;
      if (!anomaly((*anomalies)[i], fmt::format("{}/anomalies/{}", at, i), a)) return false;
      f.anomalies.push_back(std::move(a));
    }
    return consistent(f, at, fam);
  }

  // The invariants classify() guarantees; anything else is a forged or corrupted report.
  bool consistent(const FamilyVerdict& f, const std::string& at, Family fam) {
    if (!f.tested && f.udp) return fail(ReportError::kInconsistent, at + "/udp");
    if (!f.udp && (f.mapping != Behavior::kUnknown || f.filtering != Behavior::kUnknown ||
                   f.mapping_endpoint_dependent || !f.public_addresses.empty())) {
      return fail(ReportError::kInconsistent, at + "/udp");
    }
    if (f.filtering == Behavior::kNone && f.mapping != Behavior::kNone)
      return fail(ReportError::kInconsistent, at + "/filtering");
    const bool edm_mapping =
        f.mapping == Behavior::kAddressDependent || f.mapping == Behavior::kAddressAndPortDependent;
    if (edm_mapping && !f.mapping_endpoint_dependent)
      return fail(ReportError::kInconsistent, at + "/mapping_endpoint_dependent");
    if (f.mapping_endpoint_dependent && !edm_mapping && f.mapping != Behavior::kUnknown)
      return fail(ReportError::kInconsistent, at + "/mapping_endpoint_dependent");
    for (std::size_t i = 0; i < f.public_addresses.size(); ++i)
      if (f.public_addresses[i].addr.family() != fam)
        return fail(ReportError::kInconsistent, fmt::format("{}/public_addresses/{}", at, i));
    return true;
  }
};

json port_mapping_to_json(const PortMappingProbe& p) {
  json j = json::object();
  j["nat_pmp"] = to_string(p.nat_pmp);
  j["pcp"] = to_string(p.pcp);
  j["upnp_igd"] = to_string(p.upnp_igd);
  return j;
}

std::string dump(const json& j, int indent) {
  return j.dump(indent < 0 ? -1 : indent, ' ', false, json::error_handler_t::replace);
}

}  // namespace

json to_json(const Verdict& v) {
  json j = json::object();
  j["schema"] = kReportSchema;
  j["family"] = to_string(v.primary_family());
  core_to_json(j, v.primary());
  j["old_name"] = to_string(v.old_name);
  j["difficulty"] = to_string(v.difficulty);
  j["summary"] = v.summary;
  j["port_mapping"] = port_mapping_to_json(v.port_mapping);
  j["duration_ms"] = static_cast<std::int64_t>(v.elapsed.count());
  j["ipv4"] = family_to_json(v.ipv4);
  j["ipv6"] = family_to_json(v.ipv6);
  return j;
}

std::string to_json_text(const Verdict& v, int indent) { return dump(to_json(v), indent); }

json to_json(const CompareResult& r) {
  json j = json::object();
  j["schema"] = kReportSchema;
  j["direct"] = to_string(r.direct);
  j["rule"] = to_string(r.rule);
  j["family"] = r.family ? json(to_string(*r.family)) : json(nullptr);
  j["reason"] = r.reason;
  if (r.birthday) {
    j["birthday"] = json{{"hard_ports", r.birthday->hard_ports},
                         {"probes", r.birthday->probes},
                         {"probability", r.birthday->probability}};
  } else {
    j["birthday"] = nullptr;
  }
  j["same_public_ip"] = r.same_public_ip;
  return j;
}

std::string to_json_text(const CompareResult& r, int indent) { return dump(to_json(r), indent); }

std::string_view to_string(ReportError e) {
  switch (e) {
    case ReportError::kTooLarge:
      return "too large";
    case ReportError::kNotJson:
      return "not JSON";
    case ReportError::kNotObject:
      return "not a JSON object";
    case ReportError::kMissingKey:
      return "missing key";
    case ReportError::kWrongType:
      return "wrong type";
    case ReportError::kBadValue:
      return "bad value";
    case ReportError::kUnsupportedSchema:
      return "unsupported schema version";
    case ReportError::kInconsistent:
      return "inconsistent values";
    case ReportError::kCount:
      break;
  }
  return "invalid";
}

std::string ReportParseError::message() const {
  if (where.empty()) return std::string(to_string(code));
  return fmt::format("{} at {}", to_string(code), where);
}

Result<Verdict, ReportParseError> verdict_from_json(std::string_view text) {
  if (text.size() > kMaxReportBytes) return Err(ReportParseError{ReportError::kTooLarge, ""});
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Err(ReportParseError{ReportError::kNotJson, ""});
  return verdict_from_json_value(doc);
}

Result<Verdict, ReportParseError> verdict_from_json_value(const json& doc) {
  if (!doc.is_object()) return Err(ReportParseError{ReportError::kNotObject, ""});
  Reader r;
  // The schema comes first: a future version may change everything else.
  const json* schema = r.field(doc, "", "schema");
  if (!schema) return Err(*r.error);
  if (!schema->is_number_integer()) return Err(ReportParseError{ReportError::kWrongType, "/schema"});
  if (!(schema->is_number_unsigned() && schema->get<std::uint64_t>() == static_cast<std::uint64_t>(kReportSchema)))
    return Err(ReportParseError{ReportError::kUnsupportedSchema, "/schema"});

  Verdict v;
  if (!r.family(doc, "ipv4", Family::V4, v.ipv4) || !r.family(doc, "ipv6", Family::V6, v.ipv6)) return Err(*r.error);

  // Top level: a copy of the primary family's verdict, which must agree with it.
  FamilyVerdict top;
  Family fam = Family::V4;
  if (!r.name(doc, "", "family", family_from_string, fam) || !r.core(doc, "", top)) return Err(*r.error);
  if (fam != v.primary_family()) return Err(ReportParseError{ReportError::kInconsistent, "/family"});
  const FamilyVerdict& p = v.primary();
  if (top.udp != p.udp || top.mapping != p.mapping || top.filtering != p.filtering ||
      top.mapping_endpoint_dependent != p.mapping_endpoint_dependent || top.public_addresses != p.public_addresses ||
      top.port_preservation != p.port_preservation || top.hairpinning != p.hairpinning) {
    return Err(ReportParseError{ReportError::kInconsistent, ""});
  }

  if (!r.name(doc, "", "old_name", old_name_from_string, v.old_name) ||
      !r.name(doc, "", "difficulty", difficulty_from_string, v.difficulty) || !r.text(doc, "", "summary", v.summary)) {
    return Err(*r.error);
  }
  const json* pm = r.field(doc, "", "port_mapping");
  if (!pm || !r.object(*pm, "/port_mapping") ||
      !r.name(*pm, "/port_mapping", "nat_pmp", availability_from_string, v.port_mapping.nat_pmp) ||
      !r.name(*pm, "/port_mapping", "pcp", availability_from_string, v.port_mapping.pcp) ||
      !r.name(*pm, "/port_mapping", "upnp_igd", availability_from_string, v.port_mapping.upnp_igd)) {
    return Err(*r.error);
  }
  const json* dur = r.field(doc, "", "duration_ms");
  std::uint64_t ms = 0;
  if (!dur ||
      !r.unsigned_value(*dur, "/duration_ms", static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()), ms)) {
    return Err(*r.error);
  }
  v.elapsed = std::chrono::milliseconds(static_cast<std::int64_t>(ms));
  return v;
}

}  // namespace derpd::nat
