// The policy engine at national scale, side by side in one run: a generated
// policy of 10,000 rules over 1,000 organization groups (exact codes,
// `under`, `provinces`), compiled once, deciding a varied set of flows.
//
//   BM_Compile            compiling the 10k-rule YAML (informative)
//   BM_EvaluateLatency/N  one steady-clock reading around every decision:
//                         p50_ns, p90_ns, p99_ns, p999_ns per decision
//                         (each includes one clock reading, clock_ns) and
//                         items/s. N: 0 mixed, 1 permitted, 2 denied by
//                         default, 3 forbidden.
//   BM_EvaluateThroughput/N  the same flows without clocks: items/s only.
//
// Targets: p50 <= 1 us, p99 <= 5 us per decision.
//
//   build/benchmarks/policy_benchmark --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "lienthong/policy/policy.h"

namespace {

using lienthong::policy::BusinessType;
using lienthong::policy::Cause;
using lienthong::policy::Classification;
using lienthong::policy::DecisionCategory;
using lienthong::policy::Flow;
using lienthong::policy::Origin;
using lienthong::policy::Policy;
using lienthong::policy::Urgency;

constexpr int kGroups = 1000;
constexpr int kRules = 10000;
constexpr uint64_t kSeed = 20240601;

// --- The organizations: 30 central bodies (G01..G30) and 63 provinces
// (H01..H63), each with its committee, 20 level-2 units, 8 level-3 units
// under each of those and a few level-4 units.
constexpr int kCentral = 30;
constexpr int kProvinces = 63;
constexpr int kTopLevel = kCentral + kProvinces;
constexpr int kLevel2 = 20;
constexpr int kLevel3 = 8;
constexpr int kLevel4 = 3;

std::string TopLevelName(int top) {
  return top < kCentral ? absl::StrFormat("G%02d", top + 1)
                        : absl::StrFormat("H%02d", top - kCentral + 1);
}

struct Org {
  int top = 0;
  int l2 = 0;  // 0: the body itself
  int l3 = 0;  // nonzero only under a nonzero l2
  int l4 = 0;  // nonzero only under a nonzero l3
  std::string Code() const {
    return absl::StrFormat("%03d.%02d.%02d.%s", l4, l3, l2, TopLevelName(top));
  }
};

using Rng = std::mt19937_64;

int Uniform(Rng& rng, int lo, int hi) {  // [lo, hi]
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}
bool Chance(Rng& rng, double p) { return std::bernoulli_distribution(p)(rng); }
template <typename T>
const T& Pick(Rng& rng, const std::vector<T>& v) {
  return v[Uniform(rng, 0, static_cast<int>(v.size()) - 1)];
}

// Fills the levels below `org`'s deepest set level at random: a body under
// it, or itself.
Org Descend(Rng& rng, Org org, int max_extra_levels = 3) {
  int extra = Uniform(rng, 0, max_extra_levels);
  if (org.l2 == 0 && extra-- > 0) org.l2 = Uniform(rng, 1, kLevel2);
  if (org.l2 != 0 && org.l3 == 0 && extra-- > 0) {
    org.l3 = Uniform(rng, 1, kLevel3);
  }
  if (org.l3 != 0 && org.l4 == 0 && extra-- > 0) {
    org.l4 = Uniform(rng, 1, kLevel4);
  }
  return org;
}

Org RandomOrg(Rng& rng) {
  return Descend(rng, Org{Uniform(rng, 0, kTopLevel - 1)});
}

// An ancestor for `under`: a committee or one of its level-2 units.
Org RandomAncestor(Rng& rng) {
  Org org{Uniform(rng, 0, kTopLevel - 1)};
  if (Chance(rng, 0.6)) org.l2 = Uniform(rng, 1, kLevel2);
  return org;
}

const std::vector<std::string>& DocumentTypes() {
  static const auto* types = new std::vector<std::string>{
      "Công văn",     "Quyết định", "Tờ trình",   "Báo cáo",
      "Thông báo",    "Kế hoạch",   "Nghị quyết", "Chỉ thị",
      "Thông tư",     "Giấy mời",   "Biên bản",   "Hướng dẫn",
      "Chương trình", "Đề án",      "Công điện",  "Giấy giới thiệu"};
  return *types;
}

// A sender or recipient condition; an empty one (no kind) is absent.
struct OrgSelector {
  std::vector<Org> orgs;
  std::vector<Org> under;
  std::vector<int> provinces;  // top-level indexes
  std::vector<int> groups;     // group indexes
  bool absent() const {
    return orgs.empty() && under.empty() && provinces.empty() && groups.empty();
  }
};

struct Group {
  std::string name;
  OrgSelector members;  // never uses `groups`
};

struct Rule {
  std::string name;
  bool forbid = false;
  OrgSelector sender, recipient;
  std::vector<int> document_types;
  std::optional<Classification> max_classification;
  std::vector<Urgency> urgencies;
  std::vector<BusinessType> business_types;
  std::vector<Origin> origins;
  std::vector<DecisionCategory> decision_categories;
  std::optional<bool> cross_broker;
  std::string retention, max_size;
  bool paper_conversion_forbidden = false;
};

OrgSelector RandomMembers(Rng& rng) {
  OrgSelector s;
  double kind = std::uniform_real_distribution<double>(0, 1)(rng);
  int home = Uniform(rng, 0, kTopLevel - 1);
  auto near_home = [&] {
    Org o{Chance(rng, 0.8) ? home : Uniform(rng, 0, kTopLevel - 1)};
    return Descend(rng, o);
  };
  if (kind < 0.4) {
    for (int i = Uniform(rng, 3, 25); i > 0; --i) s.orgs.push_back(near_home());
  } else if (kind < 0.7) {
    for (int i = Uniform(rng, 1, 4); i > 0; --i) {
      s.under.push_back(RandomAncestor(rng));
    }
  } else if (kind < 0.9) {
    for (int i = Uniform(rng, 1, 6); i > 0; --i) {
      s.provinces.push_back(Uniform(rng, 0, kTopLevel - 1));
    }
  } else {
    for (int i = Uniform(rng, 1, 5); i > 0; --i) s.orgs.push_back(near_home());
    s.under.push_back(RandomAncestor(rng));
    s.provinces.push_back(Uniform(rng, 0, kTopLevel - 1));
  }
  return s;
}

OrgSelector RandomSelector(Rng& rng, double absent) {
  OrgSelector s;
  double kind = std::uniform_real_distribution<double>(0, 1)(rng);
  if (kind < absent) return s;
  kind = (kind - absent) / (1 - absent);
  if (kind < 0.4) {
    for (int i = Uniform(rng, 1, 3); i > 0; --i) {
      s.groups.push_back(Uniform(rng, 0, kGroups - 1));
    }
  } else if (kind < 0.65) {
    for (int i = Uniform(rng, 1, 2); i > 0; --i) {
      s.under.push_back(RandomAncestor(rng));
    }
  } else if (kind < 0.85) {
    for (int i = Uniform(rng, 1, 4); i > 0; --i)
      s.orgs.push_back(RandomOrg(rng));
  } else {
    for (int i = Uniform(rng, 1, 3); i > 0; --i) {
      s.provinces.push_back(Uniform(rng, 0, kTopLevel - 1));
    }
  }
  return s;
}

template <typename E>
std::vector<E> RandomSubset(Rng& rng, int lo, int hi, int count) {
  std::vector<int> all;
  for (int v = lo; v <= hi; ++v) all.push_back(v);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(std::min<size_t>(count, all.size()));
  std::sort(all.begin(), all.end());
  std::vector<E> out;
  for (int v : all) out.push_back(static_cast<E>(v));
  return out;
}

Rule RandomRule(Rng& rng, int index) {
  Rule r;
  r.forbid = Chance(rng, 0.08);
  r.name = absl::StrFormat("%s-%05d", r.forbid ? "forbid" : "permit", index);
  // Every rule names a sender or a recipient, except a few national forbids
  // that name an origin and decision categories instead.
  const bool national = r.forbid && Chance(rng, 0.02);
  if (!national) {
    r.sender = RandomSelector(rng, r.forbid ? 0.3 : 0.02);
    r.recipient = RandomSelector(rng, r.forbid ? 0.3 : 0.02);
    while (r.sender.absent() && r.recipient.absent()) {
      r.sender = RandomSelector(rng, 0.5);
    }
  }
  if (Chance(rng, 0.6)) {
    r.document_types =
        RandomSubset<int>(rng, 0, static_cast<int>(DocumentTypes().size()) - 1,
                          Uniform(rng, 1, 3));
  }
  if (Chance(rng, r.forbid ? 0.05 : 0.5)) {
    double p = std::uniform_real_distribution<double>(0, 1)(rng);
    r.max_classification = p < 0.5    ? Classification::kUnclassified
                           : p < 0.85 ? Classification::kConfidential
                                      : Classification::kSecret;
  }
  if (Chance(rng, 0.1))
    r.urgencies = RandomSubset<Urgency>(rng, 1, 4, Uniform(rng, 1, 3));
  if (Chance(rng, 0.1)) {
    r.business_types =
        RandomSubset<BusinessType>(rng, 1, 4, Uniform(rng, 1, 3));
  }
  if (national) {
    r.origins = {Origin::kAi};
    r.decision_categories = RandomSubset<DecisionCategory>(rng, 1, 5, 1);
  } else if (r.forbid) {
    if (Chance(rng, 0.4)) {
      r.origins = Chance(rng, 0.5)
                      ? std::vector<Origin>{Origin::kAi}
                      : std::vector<Origin>{Origin::kSystem, Origin::kAi};
    }
    if (Chance(rng, 0.4)) {
      r.decision_categories =
          RandomSubset<DecisionCategory>(rng, 1, 5, Uniform(rng, 1, 2));
    }
  } else {
    if (Chance(rng, 0.15)) {
      r.origins = Chance(rng, 0.5)
                      ? std::vector<Origin>{Origin::kPerson}
                      : std::vector<Origin>{Origin::kPerson, Origin::kSystem};
    }
    if (Chance(rng, 0.1)) {
      r.decision_categories =
          RandomSubset<DecisionCategory>(rng, 0, 5, Uniform(rng, 1, 3));
    }
    if (Chance(rng, 0.5)) {
      static const std::vector<std::string> kRetention = {"3650d", "10y", "5y",
                                                          "720h", "365d"};
      r.retention = Pick(rng, kRetention);
    }
    if (Chance(rng, 0.4)) {
      static const std::vector<std::string> kSize = {"20MiB", "512KiB", "1GiB",
                                                     "1048576", "100MiB"};
      r.max_size = Pick(rng, kSize);
    }
    r.paper_conversion_forbidden = Chance(rng, 0.1);
  }
  if (Chance(rng, 0.2)) r.cross_broker = Chance(rng, 0.5);
  return r;
}

// --- YAML.

std::string Codes(const std::vector<Org>& orgs) {
  return absl::StrJoin(orgs, ", ", [](std::string* out, const Org& o) {
    out->append(o.Code());
  });
}

std::string SelectorYaml(const OrgSelector& s,
                         const std::vector<Group>& groups) {
  std::vector<std::string> parts;
  if (!s.orgs.empty())
    parts.push_back(absl::StrCat("orgs: [", Codes(s.orgs), "]"));
  if (!s.under.empty())
    parts.push_back(absl::StrCat("under: [", Codes(s.under), "]"));
  if (!s.provinces.empty()) {
    parts.push_back(absl::StrCat("provinces: [",
                                 absl::StrJoin(s.provinces, ", ",
                                               [](std::string* out, int p) {
                                                 out->append(TopLevelName(p));
                                               }),
                                 "]"));
  }
  if (!s.groups.empty()) {
    parts.push_back(absl::StrCat("groups: [",
                                 absl::StrJoin(s.groups, ", ",
                                               [&](std::string* out, int g) {
                                                 out->append(groups[g].name);
                                               }),
                                 "]"));
  }
  return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
}

template <typename E>
std::string Words(const std::vector<E>& values) {
  return absl::StrCat(
      "[",
      absl::StrJoin(values, ", ",
                    [](std::string* out, E v) {
                      out->append(std::string(lienthong::policy::Name(v)));
                    }),
      "]");
}

std::string PolicyYaml(const std::vector<Group>& groups,
                       const std::vector<Rule>& rules) {
  std::string y =
      "description: Generated national policy (1000 groups and 10000 rules) "
      "for policy_benchmark.\n\ngroups:\n";
  for (const Group& g : groups) {
    absl::StrAppend(&y, "  ", g.name, ":\n");
    const OrgSelector& m = g.members;
    if (!m.orgs.empty())
      absl::StrAppend(&y, "    orgs: [", Codes(m.orgs), "]\n");
    if (!m.under.empty())
      absl::StrAppend(&y, "    under: [", Codes(m.under), "]\n");
    if (!m.provinces.empty()) {
      absl::StrAppend(&y, "    provinces: [",
                      absl::StrJoin(m.provinces, ", ",
                                    [](std::string* out, int p) {
                                      out->append(TopLevelName(p));
                                    }),
                      "]\n");
    }
  }
  y += "\nrules:\n";
  for (const Rule& r : rules) {
    absl::StrAppend(&y, "  - name: ", r.name,
                    "\n    effect: ", r.forbid ? "forbid" : "permit", "\n");
    if (!r.sender.absent()) {
      absl::StrAppend(&y, "    sender: ", SelectorYaml(r.sender, groups), "\n");
    }
    if (!r.recipient.absent()) {
      absl::StrAppend(&y, "    recipient: ", SelectorYaml(r.recipient, groups),
                      "\n");
    }
    if (!r.document_types.empty()) {
      absl::StrAppend(&y, "    document_types: [",
                      absl::StrJoin(r.document_types, ", ",
                                    [](std::string* out, int t) {
                                      out->append(DocumentTypes()[t]);
                                    }),
                      "]\n");
    }
    if (r.max_classification) {
      absl::StrAppend(&y, "    max_classification: ",
                      lienthong::policy::Name(*r.max_classification), "\n");
    }
    if (!r.urgencies.empty())
      absl::StrAppend(&y, "    urgencies: ", Words(r.urgencies), "\n");
    if (!r.business_types.empty()) {
      absl::StrAppend(&y, "    business_types: ", Words(r.business_types),
                      "\n");
    }
    if (!r.origins.empty())
      absl::StrAppend(&y, "    origins: ", Words(r.origins), "\n");
    if (!r.decision_categories.empty()) {
      absl::StrAppend(
          &y, "    decision_categories: ", Words(r.decision_categories), "\n");
    }
    if (r.cross_broker) {
      absl::StrAppend(
          &y, "    cross_broker: ", *r.cross_broker ? "true" : "false", "\n");
    }
    if (!r.retention.empty() || !r.max_size.empty() ||
        r.paper_conversion_forbidden) {
      y += "    obligations:\n";
      if (!r.retention.empty())
        absl::StrAppend(&y, "      retention: ", r.retention, "\n");
      if (!r.max_size.empty())
        absl::StrAppend(&y, "      max_size: ", r.max_size, "\n");
      if (r.paper_conversion_forbidden)
        y += "      paper_conversion_forbidden: true\n";
    }
  }
  return y;
}

// --- Flows.

Org MemberOf(Rng& rng, const OrgSelector& s, const std::vector<Group>& groups) {
  std::vector<int> kinds;
  if (!s.orgs.empty()) kinds.push_back(0);
  if (!s.under.empty()) kinds.push_back(1);
  if (!s.provinces.empty()) kinds.push_back(2);
  if (!s.groups.empty()) kinds.push_back(3);
  if (kinds.empty()) return RandomOrg(rng);
  switch (Pick(rng, kinds)) {
    case 0:
      return Pick(rng, s.orgs);
    case 1:
      return Descend(rng, Pick(rng, s.under));
    case 2:
      return Descend(rng, Org{Pick(rng, s.provinces)});
    default:
      return MemberOf(rng, groups[Pick(rng, s.groups)].members, groups);
  }
}

template <typename E>
E PickOr(Rng& rng, const std::vector<E>& allowed, int lo, int hi) {
  return allowed.empty() ? static_cast<E>(Uniform(rng, lo, hi))
                         : Pick(rng, allowed);
}

// A flow meeting every condition of `r` (it may still be decided otherwise
// by other rules).
Flow FlowFor(Rng& rng, const Rule& r, const std::vector<Group>& groups) {
  Flow f;
  f.sender = MemberOf(rng, r.sender, groups).Code();
  f.recipient = MemberOf(rng, r.recipient, groups).Code();
  f.document_type =
      DocumentTypes()[r.document_types.empty()
                          ? Uniform(rng, 0, DocumentTypes().size() - 1)
                          : Pick(rng, r.document_types)];
  int cap = r.max_classification ? static_cast<int>(*r.max_classification) : 3;
  f.classification = static_cast<Classification>(Uniform(rng, 1, cap));
  f.urgency = PickOr<Urgency>(rng, r.urgencies, 1, 4);
  f.business_type = PickOr<BusinessType>(rng, r.business_types, 1, 4);
  f.origin = PickOr<Origin>(rng, r.origins, 1, 3);
  f.decision_category =
      PickOr<DecisionCategory>(rng, r.decision_categories, 0, 5);
  f.cross_broker = r.cross_broker ? *r.cross_broker : Chance(rng, 0.3);
  return f;
}

Flow RandomFlow(Rng& rng) {
  Flow f;
  f.sender = RandomOrg(rng).Code();
  f.recipient = RandomOrg(rng).Code();
  f.document_type = Pick(rng, DocumentTypes());
  f.classification =
      static_cast<Classification>(Chance(rng, 0.8) ? 1 : Uniform(rng, 2, 3));
  f.urgency = static_cast<Urgency>(Chance(rng, 0.7) ? 1 : Uniform(rng, 2, 4));
  f.business_type =
      static_cast<BusinessType>(Chance(rng, 0.8) ? 1 : Uniform(rng, 2, 4));
  f.origin = static_cast<Origin>(Uniform(rng, 1, 3));
  f.decision_category = static_cast<DecisionCategory>(Uniform(rng, 0, 5));
  f.cross_broker = Chance(rng, 0.3);
  return f;
}

constexpr int kFlowsPerKind = 4096;

struct Setup {
  std::string yaml;
  std::shared_ptr<const Policy> policy;  // null if it did not compile
  std::string error;
  // 0 mixed (40% permitted, 40% denied by default, 20% forbidden),
  // 1 permitted, 2 denied by default, 3 forbidden.
  std::vector<Flow> flows[4];
};

const Setup& GetSetup() {
  static const Setup* setup = [] {
    auto* s = new Setup;
    Rng rng(kSeed);
    std::vector<Group> groups;
    for (int i = 0; i < kGroups; ++i) {
      groups.push_back({absl::StrFormat("group-%04d", i), RandomMembers(rng)});
    }
    std::vector<Rule> rules;
    for (int i = 0; i < kRules; ++i) rules.push_back(RandomRule(rng, i));
    s->yaml = PolicyYaml(groups, rules);
    auto compiled = Policy::Compile(s->yaml, "national-benchmark.yaml");
    if (!compiled.ok()) {
      s->error = compiled.status().ToString();
      return s;
    }
    s->policy = *std::move(compiled);

    std::vector<Flow>& permitted = s->flows[1];
    std::vector<Flow>& by_default = s->flows[2];
    std::vector<Flow>& forbidden = s->flows[3];
    auto file = [&](Flow f) {
      switch (s->policy->Evaluate(f).cause) {
        case Cause::kPermitted:
          if (permitted.size() < kFlowsPerKind)
            permitted.push_back(std::move(f));
          break;
        case Cause::kNoPermit:
          if (by_default.size() < kFlowsPerKind)
            by_default.push_back(std::move(f));
          break;
        case Cause::kForbidden:
          if (forbidden.size() < kFlowsPerKind)
            forbidden.push_back(std::move(f));
          break;
        default:
          break;
      }
    };
    for (int attempt = 0; attempt < 50 * kFlowsPerKind; ++attempt) {
      if (permitted.size() == kFlowsPerKind &&
          by_default.size() == kFlowsPerKind &&
          forbidden.size() == kFlowsPerKind) {
        break;
      }
      switch (attempt % 4) {
        case 0:  // aimed at a random rule (permit or forbid)
          file(FlowFor(rng, Pick(rng, rules), groups));
          break;
        case 1: {  // aimed at a forbid
          const Rule* r = &Pick(rng, rules);
          while (!r->forbid) r = &Pick(rng, rules);
          file(FlowFor(rng, *r, groups));
          break;
        }
        case 2: {  // a near miss: aimed at a rule, one attribute changed
          Flow f = FlowFor(rng, Pick(rng, rules), groups);
          Flow other = RandomFlow(rng);
          switch (Uniform(rng, 0, 3)) {
            case 0:
              f.sender = other.sender;
              break;
            case 1:
              f.recipient = other.recipient;
              break;
            case 2:
              f.document_type = other.document_type;
              break;
            default:
              f.classification = Classification::kSecret;
          }
          file(std::move(f));
          break;
        }
        default:
          file(RandomFlow(rng));
      }
    }
    std::vector<Flow>& mixed = s->flows[0];
    for (size_t i = 0; i < kFlowsPerKind; ++i) {
      int k = i % 5;  // 2 permitted, 2 by default, 1 forbidden
      const std::vector<Flow>& from = k < 2   ? permitted
                                      : k < 4 ? by_default
                                              : forbidden;
      if (!from.empty()) mixed.push_back(from[i % from.size()]);
    }
    std::shuffle(mixed.begin(), mixed.end(), rng);
    return s;
  }();
  return *setup;
}

const char* const kFlowSetNames[] = {"mixed", "permitted", "denied_by_default",
                                     "forbidden"};

// Returns the flows for the benchmark's argument, or null after skipping.
const std::vector<Flow>* FlowsOrSkip(benchmark::State& state) {
  const Setup& s = GetSetup();
  if (!s.policy) {
    state.SkipWithError(("policy did not compile: " + s.error).c_str());
    return nullptr;
  }
  const std::vector<Flow>& flows = s.flows[state.range(0)];
  if (flows.empty()) {
    state.SkipWithError("no flows of this kind were found");
    return nullptr;
  }
  state.SetLabel(absl::StrCat(kFlowSetNames[state.range(0)], ", ", flows.size(),
                              " flows"));
  return &flows;
}

void BM_Compile(benchmark::State& state) {
  const Setup& s = GetSetup();
  for (auto _ : state) {
    auto p = Policy::Compile(s.yaml, "national-benchmark.yaml");
    if (!p.ok()) {
      state.SkipWithError(p.status().ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(p);
  }
  state.counters["rules"] = kRules;
  state.counters["groups"] = kGroups;
  state.counters["yaml_bytes"] = static_cast<double>(s.yaml.size());
}
BENCHMARK(BM_Compile)->Unit(benchmark::kMillisecond)->Iterations(3);

using Clock = std::chrono::steady_clock;

double Percentile(std::vector<int64_t>& v, double q) {
  size_t k = std::min(v.size() - 1, static_cast<size_t>(q * v.size()));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return static_cast<double>(v[k]);
}

// The cost of one reading pair with nothing between: part of every sample.
double ClockOverheadNs() {
  std::vector<int64_t> v;
  for (int i = 0; i < 100000; ++i) {
    auto t0 = Clock::now();
    auto t1 = Clock::now();
    v.push_back(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
  }
  return Percentile(v, 0.5);
}

void BM_EvaluateLatency(benchmark::State& state) {
  const std::vector<Flow>* flows = FlowsOrSkip(state);
  if (flows == nullptr) return;
  const Policy& policy = *GetSetup().policy;
  constexpr size_t kBatch = 64;
  constexpr size_t kMaxSamples = size_t{1} << 23;
  std::vector<int64_t> samples;
  samples.reserve(kMaxSamples);
  size_t next = 0;
  int64_t permitted = 0;
  for (auto _ : state) {
    for (size_t i = 0; i < kBatch; ++i) {
      const Flow& flow = (*flows)[next];
      if (++next == flows->size()) next = 0;
      auto t0 = Clock::now();
      lienthong::policy::Decision d = policy.Evaluate(flow);
      auto t1 = Clock::now();
      benchmark::DoNotOptimize(d);
      permitted += d.permitted();
      if (samples.size() < kMaxSamples) {
        samples.push_back(
            std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0)
                .count());
      }
    }
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  if (samples.empty()) return;
  state.counters["p50_ns"] = Percentile(samples, 0.50);
  state.counters["p90_ns"] = Percentile(samples, 0.90);
  state.counters["p99_ns"] = Percentile(samples, 0.99);
  state.counters["p999_ns"] = Percentile(samples, 0.999);
  state.counters["clock_ns"] = ClockOverheadNs();
  state.counters["permitted"] = benchmark::Counter(
      static_cast<double>(permitted) / (state.iterations() * kBatch));
}
BENCHMARK(BM_EvaluateLatency)->DenseRange(0, 3)->MinTime(2.0);

void BM_EvaluateThroughput(benchmark::State& state) {
  const std::vector<Flow>* flows = FlowsOrSkip(state);
  if (flows == nullptr) return;
  const Policy& policy = *GetSetup().policy;
  size_t next = 0;
  for (auto _ : state) {
    lienthong::policy::Decision d = policy.Evaluate((*flows)[next]);
    benchmark::DoNotOptimize(d);
    if (++next == flows->size()) next = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EvaluateThroughput)->DenseRange(0, 3)->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
