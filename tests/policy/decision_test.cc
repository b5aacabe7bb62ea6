// Decisions: deny by default, forbid over permit whatever the rule order, the
// union of obligations across permits, and the built-in top-secret guard.
//
// The matrix test states each rule twice: as policy YAML, and as a plain C++
// predicate over a Flow. Every combination of sender × recipient × document
// type × classification × origin × cross-broker is decided by the engine and
// by the predicates, for the rules in several orders, and the two must agree
// on effect, cause, deciding rules and obligations.
#include <algorithm>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/common/org_code.h"
#include "lienthong/policy/policy.h"
#include "tests/testing/status_matchers.h"

namespace lienthong::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using ::testing::UnorderedElementsAreArray;

std::shared_ptr<const Policy> MustCompile(const std::string& yaml,
                                          const CompileOptions& options = {}) {
  auto p = Policy::Compile(yaml, "matrix.yaml", options);
  EXPECT_OK(p) << yaml;
  return p.ok() ? *p : nullptr;
}

std::string Describe(Cause c) {
  switch (c) {
    case Cause::kPermitted:
      return "permitted";
    case Cause::kForbidden:
      return "forbidden";
    case Cause::kNoPermit:
      return "no permit";
    case Cause::kBuiltInGuard:
      return "built-in guard";
    case Cause::kError:
      return "error";
  }
  return "?";
}

// --- The matrix policy.

constexpr char kGroups[] = R"(description: Decision matrix fixture.
groups:
  centre:
    orgs: [000.00.00.G22]
  h49:
    under: [000.00.00.H49]
  south:
    provinces: [H50, H51]
rules:
)";

bool InH49(const std::string& code) { return IsUnder(code, "000.00.00.H49"); }
bool InSouth(const std::string& code) {
  return TopLevelGroup(code) == "H50" || TopLevelGroup(code) == "H51";
}
bool IsCentre(const std::string& code) { return code == "000.00.00.G22"; }

struct MatrixRule {
  std::string name;
  Effect effect;
  std::string yaml;  // the rule's lines after "- name: ...", "effect: ..."
  std::function<bool(const Flow&)> matches;
  Obligations obligations;
};

Obligations Retention(absl::Duration d) {
  Obligations o;
  o.retention = d;
  return o;
}
Obligations MaxSize(uint64_t bytes) {
  Obligations o;
  o.max_size_bytes = bytes;
  return o;
}

const std::vector<MatrixRule>& MatrixRules() {
  static const auto* rules = new std::vector<MatrixRule>{
      {"h49-to-centre", Effect::kPermit,
       "    sender: {groups: [h49]}\n"
       "    recipient: {groups: [centre]}\n"
       "    max_classification: confidential\n"
       "    obligations: {retention: 3650d, max_size: 20MiB}\n",
       [](const Flow& f) {
         return InH49(f.sender) && IsCentre(f.recipient) &&
                f.classification <= Classification::kConfidential;
       },
       [] {
         Obligations o = Retention(absl::Hours(24 * 3650));
         o.max_size_bytes = 20 << 20;
         return o;
       }()},
      {"centre-decides", Effect::kPermit,
       "    sender: {orgs: [000.00.00.G22]}\n"
       "    recipient: {groups: [h49, south]}\n"
       "    document_types: [Quyết định, Công văn]\n"
       "    max_classification: secret\n"
       "    obligations: {retention: 10y, paper_conversion_forbidden: true}\n",
       [](const Flow& f) {
         return IsCentre(f.sender) &&
                (InH49(f.recipient) || InSouth(f.recipient)) &&
                (f.document_type == "Quyết định" ||
                 f.document_type == "Công văn") &&
                f.classification <= Classification::kSecret;
       },
       [] {
         Obligations o = Retention(absl::Hours(24 * 3650));
         o.paper_conversion_forbidden = true;
         return o;
       }()},
      {"within-h49", Effect::kPermit,
       "    sender: {under: [000.00.00.H49]}\n"
       "    recipient: {under: [000.00.00.H49]}\n"
       "    max_classification: unclassified\n"
       "    cross_broker: false\n"
       "    obligations: {max_size: 1MiB}\n",
       [](const Flow& f) {
         return InH49(f.sender) && InH49(f.recipient) &&
                f.classification == Classification::kUnclassified &&
                !f.cross_broker;
       },
       MaxSize(1 << 20)},
      {"h50-reports-to-centre", Effect::kPermit,
       "    sender: {provinces: [H50]}\n"
       "    recipient: {orgs: [000.00.00.G22]}\n"
       "    document_types: [Báo cáo]\n"
       "    cross_broker: true\n"
       "    obligations: {retention: 72h}\n",
       [](const Flow& f) {
         return TopLevelGroup(f.sender) == "H50" && IsCentre(f.recipient) &&
                f.document_type == "Báo cáo" && f.cross_broker &&
                f.classification <= Classification::kSecret;
       },
       Retention(absl::Hours(72))},
      {"people-write-to-h49-units", Effect::kPermit,
       "    recipient: {under: [000.00.23.H49]}\n"
       "    origins: [person]\n",
       [](const Flow& f) {
         return IsUnder(f.recipient, "000.00.23.H49") &&
                f.origin == Origin::kPerson;
       },
       Obligations{}},
      {"no-ai-to-centre", Effect::kDeny,
       "    recipient: {groups: [centre]}\n"
       "    origins: [ai]\n",
       [](const Flow& f) {
         return IsCentre(f.recipient) && f.origin == Origin::kAi;
       },
       Obligations{}},
      {"no-automation-from-h49-unit", Effect::kDeny,
       "    sender: {under: [000.00.23.H49]}\n"
       "    origins: [system, ai]\n",
       [](const Flow& f) {
         return IsUnder(f.sender, "000.00.23.H49") &&
                f.origin != Origin::kPerson;
       },
       Obligations{}},
      {"no-cross-broker-to-h49-units", Effect::kDeny,
       "    recipient: {under: [000.00.23.H49]}\n"
       "    cross_broker: true\n",
       [](const Flow& f) {
         return IsUnder(f.recipient, "000.00.23.H49") && f.cross_broker;
       },
       Obligations{}},
      {"no-unclassified-decisions-to-south", Effect::kDeny,
       "    recipient: {provinces: [H51]}\n"
       "    document_types: [Quyết định]\n"
       "    max_classification: unclassified\n",
       [](const Flow& f) {
         return TopLevelGroup(f.recipient) == "H51" &&
                f.document_type == "Quyết định" &&
                f.classification == Classification::kUnclassified;
       },
       Obligations{}},
  };
  return *rules;
}

std::string MatrixYaml(const std::vector<int>& order) {
  std::string y = kGroups;
  for (int i : order) {
    const MatrixRule& r = MatrixRules()[i];
    absl::StrAppend(&y, "  - name: ", r.name, "\n    effect: ",
                    r.effect == Effect::kPermit ? "permit" : "forbid", "\n",
                    r.yaml);
  }
  return y;
}

Obligations Union(const std::vector<const MatrixRule*>& permits) {
  Obligations u;
  for (const MatrixRule* r : permits) {
    const Obligations& o = r->obligations;
    u.end_to_end_encryption |= o.end_to_end_encryption;
    u.paper_conversion_forbidden |= o.paper_conversion_forbidden;
    if (o.retention && (!u.retention || *o.retention > *u.retention)) {
      u.retention = o.retention;
    }
    if (o.max_size_bytes &&
        (!u.max_size_bytes || *o.max_size_bytes < *u.max_size_bytes)) {
      u.max_size_bytes = o.max_size_bytes;
    }
  }
  return u;
}

struct Expected {
  Effect effect;
  Cause cause;
  std::vector<std::string> rules;
  Obligations obligations;
};

Expected Model(const Flow& f) {
  if (f.classification == Classification::kTopSecret) {
    return {Effect::kDeny, Cause::kBuiltInGuard, {}, {}};
  }
  std::vector<std::string> forbids;
  std::vector<const MatrixRule*> permits;
  std::vector<std::string> permit_names;
  for (const MatrixRule& r : MatrixRules()) {
    if (!r.matches(f)) continue;
    if (r.effect == Effect::kDeny) {
      forbids.push_back(r.name);
    } else {
      permits.push_back(&r);
      permit_names.push_back(r.name);
    }
  }
  if (!forbids.empty()) return {Effect::kDeny, Cause::kForbidden, forbids, {}};
  if (!permits.empty()) {
    return {Effect::kPermit, Cause::kPermitted, permit_names, Union(permits)};
  }
  return {Effect::kDeny, Cause::kNoPermit, {}, {}};
}

std::vector<Flow> MatrixFlows() {
  const std::vector<std::string> orgs = {"000.00.00.H49",  // the H49 committee
                                         "000.00.23.H49",  // a unit under it
                                         "000.01.23.H49",  // a unit under that
                                         "000.00.00.H50", "000.00.07.H51",
                                         "000.00.00.G22", "000.00.00.G09"};
  const std::vector<std::string> types = {"Công văn", "Quyết định", "Báo cáo"};
  std::vector<Flow> flows;
  for (const std::string& sender : orgs) {
    for (const std::string& recipient : orgs) {
      for (const std::string& type : types) {
        for (int c = 1; c <= 4; ++c) {
          for (int o = 1; o <= 3; ++o) {
            for (bool cross : {false, true}) {
              Flow f;
              f.sender = sender;
              f.recipient = recipient;
              f.document_type = type;
              f.classification = static_cast<Classification>(c);
              f.origin = static_cast<Origin>(o);
              f.cross_broker = cross;
              flows.push_back(f);
            }
          }
        }
      }
    }
  }
  return flows;
}

void CheckMatrix(const std::vector<int>& order) {
  std::shared_ptr<const Policy> policy = MustCompile(MatrixYaml(order));
  ASSERT_NE(policy, nullptr);
  int permitted = 0, forbidden = 0, no_permit = 0, guarded = 0, several = 0;
  for (const Flow& f : MatrixFlows()) {
    Expected want = Model(f);
    Decision got = policy->Evaluate(f);
    SCOPED_TRACE(absl::StrCat(f.DebugString(), " rule order ",
                              absl::StrJoin(order, ",")));
    ASSERT_EQ(got.effect, want.effect);
    ASSERT_EQ(Describe(got.cause), Describe(want.cause));
    ASSERT_THAT(got.RuleNames(*policy), UnorderedElementsAreArray(want.rules));
    ASSERT_EQ(got.obligations, want.obligations)
        << "got " << got.obligations.DebugString() << ", want "
        << want.obligations.DebugString();
    permitted += want.cause == Cause::kPermitted;
    forbidden += want.cause == Cause::kForbidden;
    no_permit += want.cause == Cause::kNoPermit;
    guarded += want.cause == Cause::kBuiltInGuard;
    several += want.rules.size() > 1;
  }
  // The matrix exercises every outcome, and several-rule decisions.
  EXPECT_GT(permitted, 50);
  EXPECT_GT(forbidden, 50);
  EXPECT_GT(no_permit, 50);
  EXPECT_GT(guarded, 50);
  EXPECT_GT(several, 20);
}

TEST(DecisionMatrixTest, AgreesWithTheRulesInFileOrder) {
  std::vector<int> order(MatrixRules().size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  CheckMatrix(order);
}

TEST(DecisionMatrixTest, AgreesWithTheRulesInAnyOrder) {
  std::vector<int> order(MatrixRules().size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::reverse(order.begin(), order.end());  // forbids first
  CheckMatrix(order);
  std::mt19937 rng(49);
  for (int i = 0; i < 6; ++i) {
    std::shuffle(order.begin(), order.end(), rng);
    CheckMatrix(order);
  }
}

// The same policy, decisions a reader can check by eye.
struct Row {
  const char* what;
  Flow flow;
  Effect effect;
  Cause cause;
  std::vector<std::string> rules;
};

Flow MakeFlow(const char* sender, const char* recipient, const char* type,
              Classification c = Classification::kUnclassified,
              Origin origin = Origin::kPerson, bool cross_broker = false) {
  Flow f;
  f.sender = sender;
  f.recipient = recipient;
  f.document_type = type;
  f.classification = c;
  f.origin = origin;
  f.cross_broker = cross_broker;
  return f;
}

TEST(DecisionMatrixTest, HandWrittenRows) {
  using C = Classification;
  const Row rows[] = {
      {"a district reports to the centre",
       MakeFlow("000.01.23.H49", "000.00.00.G22", "Báo cáo"),
       Effect::kPermit,
       Cause::kPermitted,
       {"h49-to-centre"}},
      {"above the cap of the only permit",
       MakeFlow("000.00.00.H49", "000.00.00.G22", "Báo cáo", C::kSecret),
       Effect::kDeny,
       Cause::kNoPermit,
       {}},
      {"AI-written to the centre: forbidden although h49-to-centre permits",
       MakeFlow("000.00.00.H49", "000.00.00.G22", "Báo cáo", C::kUnclassified,
                Origin::kAi),
       Effect::kDeny,
       Cause::kForbidden,
       {"no-ai-to-centre"}},
      {"two permits",
       MakeFlow("000.00.00.H49", "000.00.23.H49", "Công văn"),
       Effect::kPermit,
       Cause::kPermitted,
       {"within-h49", "people-write-to-h49-units"}},
      {"two forbids and a permit: the forbids decide",
       MakeFlow("000.00.23.H49", "000.00.00.G22", "Công văn", C::kUnclassified,
                Origin::kAi),
       Effect::kDeny,
       Cause::kForbidden,
       {"no-ai-to-centre", "no-automation-from-h49-unit"}},
      {"the centre decides for a southern province, classified",
       MakeFlow("000.00.00.G22", "000.00.07.H51", "Quyết định",
                C::kConfidential),
       Effect::kPermit,
       Cause::kPermitted,
       {"centre-decides"}},
      {"... but not unclassified",
       MakeFlow("000.00.00.G22", "000.00.07.H51", "Quyết định"),
       Effect::kDeny,
       Cause::kForbidden,
       {"no-unclassified-decisions-to-south"}},
      {"H50 reports across brokers",
       MakeFlow("000.00.00.H50", "000.00.00.G22", "Báo cáo", C::kSecret,
                Origin::kSystem, true),
       Effect::kPermit,
       Cause::kPermitted,
       {"h50-reports-to-centre"}},
      {"H50 reports locally: cross_broker: true does not match",
       MakeFlow("000.00.00.H50", "000.00.00.G22", "Báo cáo"),
       Effect::kDeny,
       Cause::kNoPermit,
       {}},
      {"within H49 across brokers: cross_broker: false does not match",
       MakeFlow("000.01.23.H49", "000.00.00.H49", "Công văn", C::kUnclassified,
                Origin::kPerson, true),
       Effect::kDeny,
       Cause::kNoPermit,
       {}},
      {"a body the policy never mentions",
       MakeFlow("000.00.00.G09", "000.00.00.H50", "Công văn"),
       Effect::kDeny,
       Cause::kNoPermit,
       {}},
      {"top secret, although within-h49 and another permit would match",
       MakeFlow("000.00.00.H49", "000.00.23.H49", "Công văn", C::kTopSecret),
       Effect::kDeny,
       Cause::kBuiltInGuard,
       {}},
  };
  std::vector<int> order(MatrixRules().size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shared_ptr<const Policy> policy = MustCompile(MatrixYaml(order));
  ASSERT_NE(policy, nullptr);
  for (const Row& row : rows) {
    SCOPED_TRACE(row.what);
    Decision d = policy->Evaluate(row.flow);
    EXPECT_EQ(d.effect, row.effect);
    EXPECT_EQ(Describe(d.cause), Describe(row.cause));
    EXPECT_THAT(d.RuleNames(*policy), UnorderedElementsAreArray(row.rules));
    // The model agrees with the rows, so the matrix checks what they say.
    Expected m = Model(row.flow);
    EXPECT_EQ(m.effect, row.effect);
    EXPECT_THAT(m.rules, UnorderedElementsAreArray(row.rules));
  }
}

// --- Forbid over permit, every order.

constexpr char kOverlap[] = R"(groups:
  h49:
    under: [000.00.00.H49]
rules:
)";

struct OverlapRule {
  const char* name;
  const char* text;
};

// Every permutation of `rules`: the flow is denied and the decision names
// exactly `forbids`.
void CheckEveryOrder(std::vector<OverlapRule> rules, const Flow& flow,
                     const std::vector<std::string>& forbids) {
  std::sort(rules.begin(), rules.end(),
            [](const OverlapRule& a, const OverlapRule& b) {
              return std::string(a.name) < b.name;
            });
  int orders = 0;
  do {
    std::string y = kOverlap;
    std::vector<std::string> names;
    for (const OverlapRule& r : rules) {
      absl::StrAppend(&y, "  - name: ", r.name, "\n", r.text);
      names.push_back(r.name);
    }
    SCOPED_TRACE(absl::StrJoin(names, ", "));
    std::shared_ptr<const Policy> policy = MustCompile(y);
    ASSERT_NE(policy, nullptr);
    Decision d = policy->Evaluate(flow);
    EXPECT_FALSE(d.permitted());
    EXPECT_EQ(Describe(d.cause), "forbidden");
    EXPECT_THAT(d.RuleNames(*policy), UnorderedElementsAreArray(forbids));
    for (uint32_t i : d.rules) EXPECT_EQ(policy->rule_effect(i), Effect::kDeny);
    EXPECT_TRUE(d.obligations.empty()) << d.obligations.DebugString();
    std::string reason = d.Reason(*policy, flow);
    // The version, abbreviated: "sha256:" and 12 hex digits.
    EXPECT_THAT(reason, HasSubstr(policy->version().substr(0, 19)));
    for (const std::string& f : forbids) EXPECT_THAT(reason, HasSubstr(f));
    ++orders;
  } while (
      std::next_permutation(rules.begin(), rules.end(),
                            [](const OverlapRule& a, const OverlapRule& b) {
                              return std::string(a.name) < b.name;
                            }));
  int expected = 1;
  for (size_t i = 2; i <= rules.size(); ++i) expected *= i;
  EXPECT_EQ(orders, expected);
}

const OverlapRule kPermitAll{"a-permit-everything", "    effect: permit\n"};
const OverlapRule kPermitH49{"b-permit-h49",
                             "    effect: permit\n    sender: {groups: [h49]}\n"
                             "    obligations: {retention: 30d}\n"};
const OverlapRule kPermitExact{
    "c-permit-exact",
    "    effect: permit\n    sender: {orgs: [000.01.23.H49]}\n"
    "    recipient: {orgs: [000.00.00.G22]}\n    document_types: [Tờ trình]\n"
    "    max_classification: secret\n    origins: [ai]\n"
    "    decision_categories: [personnel]\n    cross_broker: true\n"
    "    obligations: {max_size: 1KiB}\n"};
const OverlapRule kForbidAi{"d-forbid-ai-personnel",
                            "    effect: forbid\n    origins: [ai]\n    "
                            "decision_categories: [personnel]\n"};
const OverlapRule kForbidCross{"e-forbid-cross-broker-from-h49",
                               "    effect: forbid\n    sender: {provinces: "
                               "[H49]}\n    cross_broker: true\n"};
const OverlapRule kForbidOther{
    // does not match the flow
    "f-forbid-other-types",
    "    effect: forbid\n    document_types: [Công văn]\n"};

Flow OverlapFlow() {
  Flow f = MakeFlow("000.01.23.H49", "000.00.00.G22", "Tờ trình",
                    Classification::kSecret, Origin::kAi, true);
  f.decision_category = DecisionCategory::kPersonnel;
  return f;
}

TEST(ForbidOverPermitTest, OneForbidAndOnePermit) {
  CheckEveryOrder({kPermitExact, kForbidAi}, OverlapFlow(), {kForbidAi.name});
}

TEST(ForbidOverPermitTest, OneForbidAndSeveralPermits) {
  CheckEveryOrder({kPermitAll, kPermitH49, kPermitExact, kForbidAi},
                  OverlapFlow(), {kForbidAi.name});
}

TEST(ForbidOverPermitTest, SeveralForbidsAndSeveralPermits) {
  CheckEveryOrder(
      {kPermitAll, kPermitH49, kForbidAi, kForbidCross, kForbidOther},
      OverlapFlow(), {kForbidAi.name, kForbidCross.name});
}

TEST(ForbidOverPermitTest, WithoutTheForbidsTheSamePermitsPermit) {
  std::string y = kOverlap;
  for (const OverlapRule& r :
       {kPermitAll, kPermitH49, kPermitExact, kForbidOther}) {
    absl::StrAppend(&y, "  - name: ", r.name, "\n", r.text);
  }
  std::shared_ptr<const Policy> policy = MustCompile(y);
  ASSERT_NE(policy, nullptr);
  Decision d = policy->Evaluate(OverlapFlow());
  EXPECT_TRUE(d.permitted());
  EXPECT_EQ(Describe(d.cause), "permitted");
  EXPECT_THAT(d.RuleNames(*policy),
              UnorderedElementsAre(kPermitAll.name, kPermitH49.name,
                                   kPermitExact.name));
  Obligations want;
  want.retention = absl::Hours(24 * 30);
  want.max_size_bytes = 1024;
  EXPECT_EQ(d.obligations, want) << d.obligations.DebugString();
}

// --- Deny by default.

TEST(DenyByDefaultTest, AnEmptyRuleListDeniesEverything) {
  for (const char* yaml : {"rules: []\n", "description: nothing yet\n",
                           "groups:\n  g:\n    orgs: [000.00.00.H49]\n"}) {
    SCOPED_TRACE(yaml);
    auto policy = Policy::Compile(yaml, "empty.yaml");
    if (!policy.ok()) {
      // An empty list may be refused as an error; then nothing is served.
      EXPECT_THAT(policy,
                  testing_util::StatusIs(absl::StatusCode::kInvalidArgument));
      continue;
    }
    Decision d = (*policy)->Evaluate(
        MakeFlow("000.00.00.H49", "000.00.00.G22", "Công văn"));
    EXPECT_FALSE(d.permitted());
    EXPECT_EQ(Describe(d.cause), "no permit");
    EXPECT_THAT(d.rules, IsEmpty());
    EXPECT_TRUE(d.obligations.empty());
  }
}

TEST(DenyByDefaultTest, OnlyForbidsStillDeniesByDefault) {
  auto policy = MustCompile(
      "rules:\n  - name: no-ai\n    effect: forbid\n    origins: [ai]\n");
  ASSERT_NE(policy, nullptr);
  Decision d =
      policy->Evaluate(MakeFlow("000.00.00.H49", "000.00.00.G22", "Công văn"));
  EXPECT_FALSE(d.permitted());
  EXPECT_EQ(Describe(d.cause), "no permit");
  EXPECT_THAT(d.rules, IsEmpty());
}

// Conditions outside the matrix: urgency, business type, decision category.
TEST(DecisionTest, UrgencyBusinessTypeAndDecisionCategoryNarrowAPermit) {
  auto policy = MustCompile(R"(rules:
  - name: urgent-updates
    effect: permit
    urgencies: [urgent, express]
    business_types: [update, replace]
    decision_categories: [none, financial]
)");
  ASSERT_NE(policy, nullptr);
  Flow f = MakeFlow("000.00.00.H49", "000.00.00.G22", "Công văn");
  f.urgency = Urgency::kExpress;
  f.business_type = BusinessType::kReplace;
  f.decision_category = DecisionCategory::kFinancial;
  EXPECT_TRUE(policy->Evaluate(f).permitted());
  Flow g = f;
  g.urgency = Urgency::kVeryUrgent;
  EXPECT_FALSE(policy->Evaluate(g).permitted());
  g = f;
  g.business_type = BusinessType::kNew;
  EXPECT_FALSE(policy->Evaluate(g).permitted());
  g = f;
  g.decision_category = DecisionCategory::kPersonnel;
  EXPECT_FALSE(policy->Evaluate(g).permitted());
  g = f;
  g.decision_category = DecisionCategory::kNone;
  EXPECT_TRUE(policy->Evaluate(g).permitted());
}

// --- Obligations.

constexpr char kObligations[] = R"(rules:
  - name: short-and-small
    effect: permit
    recipient: {orgs: [000.00.00.G22]}
    obligations:
      retention: 365d
      max_size: 20MiB
      end_to_end_encryption: true
      approval:
        - {role: lanh-dao, org: 000.00.00.G22}
        - {role: van-thu}
  - name: long-and-tiny
    effect: permit
    sender: {under: [000.00.00.H49]}
    obligations:
      retention: 10y
      max_size: 512KiB
      paper_conversion_forbidden: true
      approval: {role: van-thu}
  - name: three-days
    effect: permit
    document_types: [Báo cáo]
    obligations: {retention: 72h}
  - name: no-obligations
    effect: permit
    sender: {orgs: [000.00.00.G09]}
)";

CompileOptions EverythingEnforceable() {
  CompileOptions o;
  o.capabilities.end_to_end_encryption = true;
  o.capabilities.approval = true;
  return o;
}

TEST(ObligationsTest, UnionAcrossEveryMatchingPermit) {
  auto policy = MustCompile(kObligations, EverythingEnforceable());
  ASSERT_NE(policy, nullptr);
  Decision d =
      policy->Evaluate(MakeFlow("000.01.23.H49", "000.00.00.G22", "Báo cáo"));
  ASSERT_TRUE(d.permitted());
  EXPECT_THAT(
      d.RuleNames(*policy),
      UnorderedElementsAre("short-and-small", "long-and-tiny", "three-days"));
  Obligations want;
  want.end_to_end_encryption = true;        // any permit
  want.paper_conversion_forbidden = true;   // any permit
  want.retention = absl::Hours(24 * 3650);  // the longest
  want.max_size_bytes = 512 * 1024;         // the smallest
  want.approvals = {{"lanh-dao", "000.00.00.G22"},
                    {"van-thu", ""}};  // sorted, unique
  EXPECT_EQ(d.obligations, want) << d.obligations.DebugString();
}

TEST(ObligationsTest, OnePermitsObligationsAlone) {
  auto policy = MustCompile(kObligations, EverythingEnforceable());
  ASSERT_NE(policy, nullptr);
  Decision d =
      policy->Evaluate(MakeFlow("000.00.00.H50", "000.00.00.H51", "Báo cáo"));
  ASSERT_TRUE(d.permitted());
  EXPECT_THAT(d.RuleNames(*policy), ElementsAre("three-days"));
  Obligations want;
  want.retention = absl::Hours(72);
  EXPECT_EQ(d.obligations, want) << d.obligations.DebugString();

  d = policy->Evaluate(MakeFlow("000.00.00.G09", "000.00.00.H51", "Công văn"));
  ASSERT_TRUE(d.permitted());
  EXPECT_TRUE(d.obligations.empty()) << d.obligations.DebugString();
}

TEST(ObligationsTest, RetentionAndSizeUnits) {
  struct Case {
    const char* retention;
    absl::Duration want;
  };
  for (const Case& c :
       {Case{"3650d", absl::Hours(24 * 3650)}, Case{"72h", absl::Hours(72)},
        Case{"10y", absl::Hours(24 * 3650)},
        Case{"1y", absl::Hours(24 * 365)}}) {
    auto policy =
        MustCompile(absl::StrCat("rules:\n  - name: r\n    effect: permit\n    "
                                 "obligations: {retention: ",
                                 c.retention, ", max_size: 1GiB}\n"));
    ASSERT_NE(policy, nullptr);
    Decision d =
        policy->Evaluate(MakeFlow("000.00.00.H49", "000.00.00.G22", "x"));
    EXPECT_EQ(d.obligations.retention, c.want) << c.retention;
    EXPECT_EQ(d.obligations.max_size_bytes, uint64_t{1} << 30);
  }
}

// --- The built-in guard.

TEST(BuiltInGuardTest, TopSecretIsRefusedEvenWhenARulePermitsEverything) {
  auto policy = MustCompile(
      "rules:\n  - name: everything\n    effect: permit\n"
      "    obligations: {retention: 10y}\n");
  ASSERT_NE(policy, nullptr);
  Flow f = MakeFlow("000.00.00.H49", "000.00.00.G22", "Công văn");
  ASSERT_TRUE(policy->Evaluate(f).permitted());
  f.classification = Classification::kTopSecret;
  Decision d = policy->Evaluate(f);
  EXPECT_FALSE(d.permitted());
  EXPECT_EQ(Describe(d.cause), "built-in guard");
  EXPECT_THAT(d.rules, IsEmpty());
  EXPECT_TRUE(d.obligations.empty());
  EXPECT_THAT(absl::AsciiStrToLower(d.detail), HasSubstr("top"));
  EXPECT_THAT(absl::AsciiStrToLower(d.Reason(*policy, f)), HasSubstr("top"));
}

TEST(BuiltInGuardTest, TopSecretIsAnImpossibleLevel) {
  const std::string yaml =
      "rules:\n"
      "  - name: everything\n"
      "    effect: permit\n"
      "    max_classification: top_secret\n";
  EXPECT_THAT(Policy::Compile(yaml, "guard.yaml"),
              testing_util::StatusIs(
                  absl::StatusCode::kInvalidArgument,
                  ::testing::AllOf(::testing::StartsWith("guard.yaml:4:25: "),
                                   HasSubstr("top_secret"))));
}

// --- Explain.

TEST(ExplainTest, NamesTheDecidingRulesAndTheNearestMisses) {
  std::vector<int> order(MatrixRules().size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shared_ptr<const Policy> policy = MustCompile(MatrixYaml(order));
  ASSERT_NE(policy, nullptr);

  Flow forbidden = MakeFlow("000.00.00.H49", "000.00.00.G22", "Báo cáo",
                            Classification::kUnclassified, Origin::kAi);
  Explanation e = policy->Explain(forbidden);
  EXPECT_FALSE(e.decision.permitted());
  EXPECT_THAT(e.deciding_rules, ElementsAre("no-ai-to-centre"));
  EXPECT_THAT(e.reason, HasSubstr("no-ai-to-centre"));
  EXPECT_THAT(e.reason, HasSubstr(policy->version().substr(0, 19)));

  // Above h49-to-centre's cap: that rule misses by one condition only.
  Flow secret = MakeFlow("000.00.00.H49", "000.00.00.G22", "Báo cáo",
                         Classification::kSecret);
  e = policy->Explain(secret, 3);
  EXPECT_EQ(Describe(e.decision.cause), "no permit");
  EXPECT_THAT(e.deciding_rules, IsEmpty());
  ASSERT_FALSE(e.near_misses.empty());
  EXPECT_LE(e.near_misses.size(), 3u);
  // Two rules miss by one condition: h49-to-centre (the classification) and
  // the forbid no-ai-to-centre (the origin).
  const NearMiss* cap = nullptr;
  for (const NearMiss& m : e.near_misses) {
    if (m.rule == "h49-to-centre") cap = &m;
  }
  ASSERT_NE(cap, nullptr);
  EXPECT_EQ(cap->effect, Effect::kPermit);
  ASSERT_EQ(cap->failed.size(), 1u);
  EXPECT_THAT(cap->failed[0], HasSubstr("secret"));
  EXPECT_EQ(e.near_misses[0].failed.size(), 1u);
  for (size_t i = 1; i < e.near_misses.size(); ++i) {
    EXPECT_LE(e.near_misses[i - 1].failed.size(),
              e.near_misses[i].failed.size());
  }
  // Explain decides as Evaluate does.
  for (const Flow& f : {forbidden, secret}) {
    Decision d = policy->Evaluate(f);
    Explanation x = policy->Explain(f);
    EXPECT_EQ(d.effect, x.decision.effect);
    EXPECT_EQ(d.rules, x.decision.rules);
  }
}

}  // namespace
}  // namespace lienthong::policy
