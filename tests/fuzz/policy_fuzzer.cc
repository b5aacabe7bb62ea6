// libFuzzer target for the policy loader: the bytes as a policy (with the
// default capabilities and with every obligation enforceable), as a policy
// test file, as a flow, and as a size and a retention. A policy that
// compiles decides a few flows (built from org codes found in the input and
// a few fixed ones), and every decision is checked against the semantics:
//
//   - permitted iff caused by permits; the deciding rules are all permits
//     (kPermitted) or all forbids (kForbidden) and never empty then;
//   - obligations only on a permit; top secret is always refused;
//   - a well-formed flow never fails to evaluate (kError);
//   - Explain decides as Evaluate; a dry run against the same policy
//     changes nothing.
//
// Built and run by tests/fuzz/build-and-run.sh (clang++ -fsanitize=fuzzer,
// address,undefined); seeds in tests/fuzz/corpus/policy/.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lienthong/common/org_code.h"
#include "lienthong/policy/policy.h"
#include "lienthong/policy/policy_test_file.h"

namespace lienthong::policy {
namespace {

[[noreturn]] void Fail(const char* what, const Flow* flow = nullptr,
                       const Decision* d = nullptr) {
  std::fprintf(stderr, "policy_fuzzer: invariant broken: %s\n", what);
  if (flow != nullptr)
    std::fprintf(stderr, "  flow: %s\n", flow->DebugString().c_str());
  if (d != nullptr) {
    std::fprintf(stderr,
                 "  decision: effect %d cause %d, %zu rules, detail \"%s\"\n",
                 static_cast<int>(d->effect), static_cast<int>(d->cause),
                 d->rules.size(), d->detail.c_str());
  }
  std::abort();
}

#define FUZZ_CHECK(cond, ...)                \
  do {                                       \
    if (!(cond)) Fail(#cond, ##__VA_ARGS__); \
  } while (0)

// Up to `max` well-formed org codes that occur in the input, so that flows
// can reach the rules that mention them.
std::vector<std::string> CodesIn(absl::string_view text, size_t max) {
  std::vector<std::string> codes;
  for (size_t i = 0; i + 13 <= text.size() && codes.size() < max; ++i) {
    if (text[i + 3] != '.' || text[i + 6] != '.' || text[i + 9] != '.')
      continue;
    absl::string_view c = text.substr(i, 13);
    if (ValidateOrgCode(c).ok()) codes.emplace_back(c);
  }
  return codes;
}

std::vector<Flow> FlowsFor(absl::string_view text) {
  std::vector<std::string> orgs = CodesIn(text, 4);
  for (const char* fixed :
       {"000.00.00.H49", "000.01.23.H49", "000.00.00.G22"}) {
    orgs.emplace_back(fixed);
  }
  // The input's own bytes pick the other attributes, so each input explores
  // its own corner.
  uint32_t h = 2166136261u;
  for (char c : text.substr(0, 256))
    h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
  std::vector<Flow> flows;
  const char* types[] = {"Công văn", "Quyết định", "Báo cáo", ""};
  for (size_t i = 0; i < 8; ++i) {
    Flow f;
    f.sender = orgs[i % orgs.size()];
    f.recipient = orgs[(i / 2 + h) % orgs.size()];
    f.document_type = types[(h >> 3) % 4];
    f.classification = static_cast<Classification>(1 + (h >> 5) % 4);
    f.urgency = static_cast<Urgency>(1 + (h >> 7) % 4);
    f.business_type = static_cast<BusinessType>(1 + (h >> 9) % 4);
    f.origin = static_cast<Origin>(1 + (h >> 11) % 3);
    f.decision_category = static_cast<DecisionCategory>((h >> 13) % 6);
    f.cross_broker = (h >> 16) & 1;
    flows.push_back(f);
    h = h * 1103515245u + 12345u;
  }
  return flows;
}

void CheckDecision(const Policy& p, const Flow& f, const Decision& d) {
  FUZZ_CHECK(d.cause != Cause::kError, &f, &d);
  FUZZ_CHECK(d.permitted() == (d.cause == Cause::kPermitted), &f, &d);
  if (f.classification == Classification::kTopSecret) {
    FUZZ_CHECK(d.cause == Cause::kBuiltInGuard, &f, &d);
  }
  if (d.cause == Cause::kPermitted || d.cause == Cause::kForbidden) {
    FUZZ_CHECK(!d.rules.empty(), &f, &d);
  } else {
    FUZZ_CHECK(d.rules.empty(), &f, &d);
  }
  const Effect want =
      d.cause == Cause::kPermitted ? Effect::kPermit : Effect::kDeny;
  for (uint32_t r : d.rules) {
    FUZZ_CHECK(r < p.rule_count(), &f, &d);
    FUZZ_CHECK(p.rule_effect(r) == want, &f, &d);
  }
  if (!d.permitted()) FUZZ_CHECK(d.obligations.empty(), &f, &d);
  for (size_t i = 1; i < d.obligations.approvals.size(); ++i) {
    FUZZ_CHECK(d.obligations.approvals[i - 1] < d.obligations.approvals[i], &f,
               &d);
  }
  (void)d.Reason(p, f);
  (void)d.obligations.DebugString();

  Explanation x = p.Explain(f, 3);
  FUZZ_CHECK(x.decision.effect == d.effect, &f, &d);
  FUZZ_CHECK(x.decision.cause == d.cause, &f, &d);
  FUZZ_CHECK(x.decision.rules == d.rules, &f, &d);
  FUZZ_CHECK(x.decision.obligations == d.obligations, &f, &d);
  FUZZ_CHECK(x.deciding_rules == d.RuleNames(p), &f, &d);
  FUZZ_CHECK(x.near_misses.size() <= 3, &f, &d);
  for (size_t i = 1; i < x.near_misses.size(); ++i) {
    FUZZ_CHECK(
        x.near_misses[i - 1].failed.size() <= x.near_misses[i].failed.size(),
        &f, &d);
  }
}

void Exercise(const Policy& p, absl::string_view text) {
  FUZZ_CHECK(p.version().size() == 7 + 64 &&
             p.version().rfind("sha256:", 0) == 0);
  FUZZ_CHECK(p.source() == text);
  for (uint32_t i = 0; i < p.rule_count(); ++i) (void)p.rule_name(i);
  std::vector<RecordedDecision> recorded;
  DecisionLog log(4);
  for (const Flow& f : FlowsFor(text)) {
    Decision d = p.Evaluate(f);
    CheckDecision(p, f, d);
    log.Record(absl::UnixEpoch(), f, d, p);
  }
  std::vector<RecordedDecision> recent = log.Recent(10);
  FUZZ_CHECK(recent.size() == 4);
  DryRunReport same = DryRun(recent, p);
  FUZZ_CHECK(same.examined == 4 && same.unchanged == 4 && same.changes.empty());
}

std::shared_ptr<const Policy> FixedPolicy() {
  static const auto* p = new std::shared_ptr<const Policy>(*Policy::Compile(
      "rules:\n  - name: all\n    effect: permit\n  - name: no-ai\n"
      "    effect: forbid\n    origins: [ai]\n",
      "fixed.yaml"));
  return *p;
}

}  // namespace
}  // namespace lienthong::policy

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lienthong::policy;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);

  std::shared_ptr<const Policy> compiled;
  CompileOptions everything;
  everything.capabilities.end_to_end_encryption = true;
  everything.capabilities.approval = true;
  for (const CompileOptions& options : {CompileOptions{}, everything}) {
    auto p = Policy::Compile(text, "fuzz.yaml", options);
    if (!p.ok()) {
      FUZZ_CHECK(p.status().code() == absl::StatusCode::kInvalidArgument);
      FUZZ_CHECK(p.status().message().rfind("fuzz.yaml", 0) == 0);
      continue;
    }
    Exercise(**p, text);
    compiled = *p;
  }

  auto tests = ParsePolicyTestFile(text, "fuzz.test.yaml");
  if (tests.ok()) {
    const Policy& p = compiled ? *compiled : *FixedPolicy();
    std::vector<PolicyTestResult> results = RunPolicyTests(*tests, p);
    FUZZ_CHECK(results.size() == tests->cases.size());
    for (const PolicyTestResult& r : results)
      FUZZ_CHECK(r.passed == r.failure.empty());
  } else {
    FUZZ_CHECK(tests.status().code() == absl::StatusCode::kInvalidArgument);
  }

  auto flow = ParseFlow(text);
  if (flow.ok()) {
    const Policy& p = compiled ? *compiled : *FixedPolicy();
    Decision d = p.Evaluate(*flow);
    if (lienthong::ValidateOrgCode(flow->sender).ok() &&
        lienthong::ValidateOrgCode(flow->recipient).ok()) {
      CheckDecision(p, *flow, d);
    }
  }

  if (size < 64) {
    (void)ParseSize(text);
    (void)ParseRetention(text);
  }
  return 0;
}
