// Policy test files: parsing, running (a passing and a failing case, the
// failure saying what differed), flows for the CLI, sizes and durations.
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/policy/policy.h"
#include "lienthong/policy/policy_test_file.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::policy {
namespace {

using ::lienthong::testing_util::IsOkAndHolds;
using ::lienthong::testing_util::StatusIs;
using ::lienthong::testing_util::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAre;

constexpr char kPolicy[] = R"(groups:
  provinces:
    provinces: [H49, H50]
rules:
  - name: provinces-report-to-centre
    effect: permit
    sender: {groups: [provinces]}
    recipient: {orgs: [000.00.00.G22]}
    max_classification: unclassified
    obligations:
      retention: 3650d
      max_size: 20MiB
  - name: no-ai-personnel-decisions
    effect: forbid
    origins: [ai]
    decision_categories: [personnel]
)";

// Cases 1 (line 3) and 2 (line 11) pass; 3 (line 16), 4 (line 20) and
// 5 (line 25) fail, each for one reason.
constexpr char kTests[] = R"(policy: central.yaml
cases:
  - name: district sends to the centre
    flow: {sender: 000.01.23.H49, recipient: 000.00.00.G22,
           document_type: Công văn, classification: unclassified,
           urgency: normal, business_type: new, origin: ai,
           decision_category: none, cross_broker: false}
    expect: permit
    rules: [provinces-report-to-centre]
    obligations: {retention: 3650d, max_size: 20MiB}
  - name: AI personnel decisions are refused
    flow: {sender: 000.00.00.H49, recipient: 000.00.00.G22, origin: ai,
           decision_category: personnel}
    expect: deny
    rules: [no-ai-personnel-decisions]
  - name: secret reports go through
    flow: {sender: 000.00.00.H50, recipient: 000.00.00.G22,
           classification: secret}
    expect: permit
  - name: wrong rule expected
    flow: {sender: 000.00.00.H50, recipient: 000.00.00.G22, origin: ai,
           decision_category: personnel}
    expect: deny
    rules: [provinces-report-to-centre]
  - name: wrong obligations expected
    flow: {sender: 000.00.00.H50, recipient: 000.00.00.G22}
    expect: permit
    obligations: {retention: 10d, max_size: 20MiB}
)";

class PolicyTestFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(dir_.path() + "/central.yaml") << kPolicy;
    std::ofstream(dir_.path() + "/central.test.yaml") << kTests;
  }
  TempDir dir_;
};

TEST_F(PolicyTestFileTest, ParsesCasesWithTheirLines) {
  ASSERT_OK_AND_ASSIGN(PolicyTestFile tests,
                       LoadPolicyTestFile(dir_.path() + "/central.test.yaml"));
  EXPECT_EQ(tests.policy_path, dir_.path() + "/central.yaml");
  ASSERT_EQ(tests.cases.size(), 5u);
  const PolicyTestCase& first = tests.cases[0];
  EXPECT_EQ(first.name, "district sends to the centre");
  EXPECT_EQ(first.line, 3);
  EXPECT_EQ(first.flow.sender, "000.01.23.H49");
  EXPECT_EQ(first.flow.recipient, "000.00.00.G22");
  EXPECT_EQ(first.flow.document_type, "Công văn");
  EXPECT_EQ(first.flow.origin, Origin::kAi);
  EXPECT_EQ(first.expect, Effect::kPermit);
  ASSERT_TRUE(first.rules.has_value());
  EXPECT_THAT(*first.rules, UnorderedElementsAre("provinces-report-to-centre"));
  ASSERT_TRUE(first.obligations.has_value());
  EXPECT_EQ(first.obligations->retention, absl::Hours(24 * 3650));
  EXPECT_EQ(first.obligations->max_size_bytes, uint64_t{20} << 20);
  EXPECT_EQ(tests.cases[1].line, 11);
  EXPECT_EQ(tests.cases[1].flow.decision_category,
            DecisionCategory::kPersonnel);
  EXPECT_EQ(tests.cases[2].line, 16);
  EXPECT_FALSE(tests.cases[2].rules.has_value());
  EXPECT_FALSE(tests.cases[2].obligations.has_value());
  EXPECT_EQ(tests.cases[3].line, 20);
  EXPECT_EQ(tests.cases[4].line, 25);
}

TEST_F(PolicyTestFileTest, RunsCasesAndSaysWhatDiffered) {
  ASSERT_OK_AND_ASSIGN(PolicyTestFile tests,
                       LoadPolicyTestFile(dir_.path() + "/central.test.yaml"));
  ASSERT_OK_AND_ASSIGN(auto policy, Policy::CompileFile(tests.policy_path));
  std::vector<PolicyTestResult> results = RunPolicyTests(tests, *policy);
  ASSERT_EQ(results.size(), 5u);

  EXPECT_TRUE(results[0].passed) << results[0].failure;
  EXPECT_EQ(results[0].name, "district sends to the centre");
  EXPECT_EQ(results[0].line, 3);
  EXPECT_THAT(results[0].failure, IsEmpty());
  EXPECT_TRUE(results[1].passed) << results[1].failure;

  // Expected a permit, got deny by default: both effects named.
  EXPECT_FALSE(results[2].passed);
  EXPECT_EQ(results[2].line, 16);
  EXPECT_THAT(results[2].failure,
              AllOf(HasSubstr("permit"), HasSubstr("deny")));

  // The effect matched but the deciding rules did not: both lists named.
  EXPECT_FALSE(results[3].passed);
  EXPECT_THAT(results[3].failure,
              AllOf(HasSubstr("provinces-report-to-centre"),
                    HasSubstr("no-ai-personnel-decisions")));

  // The obligations differ in retention only: both retentions named.
  EXPECT_FALSE(results[4].passed);
  EXPECT_THAT(results[4].failure, AllOf(HasSubstr("10d"), HasSubstr("3650d")));
}

TEST(ParsePolicyTestFileTest, ErrorsNameTheLine) {
  // Line 4: an unknown flow field.
  const char* yaml =
      "policy: central.yaml\n"
      "cases:\n"
      "  - name: c\n"
      "    flow: {sender: 000.00.00.H49, recipent: 000.00.00.G22}\n"
      "    expect: permit\n";
  EXPECT_THAT(
      ParsePolicyTestFile(yaml, "t.yaml"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(StartsWith("t.yaml:4:35: "), HasSubstr("recipent"))));
  // Line 3: not an effect.
  yaml =
      "cases:\n"
      "  - name: c\n"
      "    expect: maybe\n"
      "    flow: {sender: 000.00.00.H49, recipient: 000.00.00.G22}\n";
  EXPECT_THAT(ParsePolicyTestFile(yaml, "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(StartsWith("t.yaml:3:13: "), HasSubstr("maybe"))));
}

TEST(ParseFlowTest, FieldsNotGivenKeepTheirDefaults) {
  ASSERT_OK_AND_ASSIGN(
      Flow f,
      ParseFlow(
          "{sender: 000.00.00.H49, recipient: 000.00.00.G22, origin: ai}"));
  EXPECT_EQ(f.sender, "000.00.00.H49");
  EXPECT_EQ(f.recipient, "000.00.00.G22");
  EXPECT_EQ(f.origin, Origin::kAi);
  EXPECT_EQ(f.classification, Classification::kUnclassified);
  EXPECT_EQ(f.urgency, Urgency::kNormal);
  EXPECT_EQ(f.business_type, BusinessType::kNew);
  EXPECT_EQ(f.decision_category, DecisionCategory::kNone);
  EXPECT_FALSE(f.cross_broker);

  ASSERT_OK_AND_ASSIGN(
      f, ParseFlow("{sender: 000.00.00.H49, recipient: 000.00.00.G22, "
                   "classification: secret, urgency: very_urgent, "
                   "business_type: recall, "
                   "decision_category: disciplinary, cross_broker: true, "
                   "document_type: Quyết định}"));
  EXPECT_EQ(f.classification, Classification::kSecret);
  EXPECT_EQ(f.urgency, Urgency::kVeryUrgent);
  EXPECT_EQ(f.business_type, BusinessType::kRecall);
  EXPECT_EQ(f.decision_category, DecisionCategory::kDisciplinary);
  EXPECT_TRUE(f.cross_broker);
  EXPECT_EQ(f.document_type, "Quyết định");
}

TEST(ParseFlowTest, RejectsBadFlows) {
  for (const char* yaml :
       {"{sender: 000.00.00.H49, colour: red}",
        "{sender: 000.00.00.H49, origin: robot}", "{sender: H49}",
        "[000.00.00.H49]", "{sender: [", ""}) {
    EXPECT_THAT(ParseFlow(yaml), StatusIs(absl::StatusCode::kInvalidArgument))
        << yaml;
  }
}

TEST(SizesAndDurationsTest, Parse) {
  EXPECT_THAT(ParseSize("20MiB"), IsOkAndHolds(uint64_t{20} << 20));
  EXPECT_THAT(ParseSize("512KiB"), IsOkAndHolds(uint64_t{512} << 10));
  EXPECT_THAT(ParseSize("1GiB"), IsOkAndHolds(uint64_t{1} << 30));
  EXPECT_THAT(ParseSize("1048576"), IsOkAndHolds(uint64_t{1048576}));
  EXPECT_THAT(ParseRetention("3650d"), IsOkAndHolds(absl::Hours(24 * 3650)));
  EXPECT_THAT(ParseRetention("72h"), IsOkAndHolds(absl::Hours(72)));
  EXPECT_THAT(ParseRetention("10y"), IsOkAndHolds(absl::Hours(24 * 3650)));
  for (const char* bad : {"20MB", "-1", "", "MiB", "1.5MiB", "20 GB"}) {
    EXPECT_THAT(ParseSize(bad),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(absl::StrCat("\"", bad, "\""))));
  }
  for (const char* bad : {"10", "10w", "-3d", "", "d", "1.5y"}) {
    EXPECT_THAT(ParseRetention(bad),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(absl::StrCat("\"", bad, "\""))));
  }
}

}  // namespace
}  // namespace lienthong::policy
