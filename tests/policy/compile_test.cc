// Compiling policies: every error names the file, line and column of the
// offending text and says what is wrong; a policy that compiles reports its
// version, rules and groups.
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/policy/policy.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::policy {
namespace {

using ::lienthong::testing_util::StatusIs;
using ::lienthong::testing_util::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// "<file>:<line>:<column>: " for the start of the `occurrence`-th (1-based)
// `marker` in `yaml`. Markers are ASCII and so is the text before them on
// their line, so bytes and columns agree.
std::string At(absl::string_view file, absl::string_view yaml,
               absl::string_view marker, int occurrence = 1) {
  size_t pos = absl::string_view::npos;
  size_t from = 0;
  for (int i = 0; i < occurrence; ++i) {
    pos = yaml.find(marker, from);
    if (pos == absl::string_view::npos) {
      ADD_FAILURE() << "marker \"" << marker << "\" #" << occurrence
                    << " is not in the text";
      return "?";
    }
    from = pos + 1;
  }
  int line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < pos; ++i) {
    if (yaml[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return absl::StrCat(file, ":", line, ":", pos - line_start + 1, ": ");
}

struct ErrorCase {
  const char* what;
  std::string yaml;
  std::string marker;             // where the error must point
  int occurrence;                 // which occurrence of the marker
  std::vector<std::string> says;  // words the message must contain
};

constexpr char kGroups[] = R"(groups:
  centre:
    orgs: [000.00.00.G22]
  h49:
    under: [000.00.00.H49]
)";

std::string WithRule(absl::string_view rule_lines) {
  return absl::StrCat(kGroups, "rules:\n  - name: r1\n    effect: permit\n",
                      rule_lines);
}

std::vector<ErrorCase> ErrorCases() {
  return {
      {"unknown top-level field",
       absl::StrCat(kGroups, "polices: []\n"),
       "polices",
       1,
       {"unknown", "polices"}},
      {"unknown rule field",
       WithRule(
           "    sender: {groups: [h49]}\n    recipents: {groups: [centre]}\n"),
       "recipents",
       1,
       {"unknown", "recipents"}},
      {"unknown field in an org condition",
       WithRule("    sender: {organizations: [000.00.00.H49]}\n"),
       "organizations",
       1,
       {"unknown", "organizations"}},
      {"unknown obligation",
       WithRule("    obligations: {retension: 10y}\n"),
       "retension",
       1,
       {"unknown", "retension"}},
      {"unknown field in a group",
       "groups:\n  centre:\n    members: [000.00.00.G22]\nrules: []\n",
       "members",
       1,
       {"unknown", "members"}},
      {"unknown group",
       WithRule("    sender: {groups: [h49, provinse]}\n"),
       "provinse",
       1,
       {"unknown group \"provinse\"", "centre", "h49"}},
      {"impossible level",
       WithRule("    max_classification: top_secret\n"),
       "top_secret",
       1,
       {"top_secret"}},
      {"unknown level",
       WithRule("    max_classification: secrett\n"),
       "secrett",
       1,
       {"secrett"}},
      {"duplicate rule name",
       absl::StrCat(kGroups,
                    "rules:\n"
                    "  - name: same\n    effect: permit\n"
                    "  - name: other\n    effect: permit\n"
                    "  - name: same\n    effect: forbid\n"),
       "same",
       2,
       {"duplicate", "same"}},
      {"duplicate group name",
       "groups:\n  g:\n    orgs: [000.00.00.G22]\n  g:\n    orgs: "
       "[000.00.00.H49]\n",
       "g:",
       2,
       {"duplicate", "g"}},
      {"malformed exact code",
       WithRule("    recipient: {orgs: [000.00.00.G22, 000.00.00.h49]}\n"),
       "000.00.00.h49",
       1,
       {"000.00.00.h49"}},
      {"malformed code in a group",
       "groups:\n  g:\n    orgs: [000.00.00.G22, 00.00.00.G23]\nrules: []\n",
       "00.00.00.G23",
       1,
       {"00.00.00.G23"}},
      {"code with a level under an empty level",
       WithRule("    sender: {under: [000.01.00.H49]}\n"),
       "000.01.00.H49",
       1,
       {"000.01.00.H49"}},
      {"malformed province",
       WithRule("    sender: {provinces: [H49, h5]}\n"),
       "h5",
       1,
       {"h5"}},
      {"empty list", WithRule("    document_types: []\n"), "[]", 1, {"empty"}},
      {"empty org list",
       WithRule("    sender: {orgs: []}\n"),
       "[]",
       1,
       {"empty"}},
      {"a group mentioning a group",
       "groups:\n  a:\n    orgs: [000.00.00.G22]\n  b:\n    groups: [a]\n",
       "[a]",
       1,
       {"group"}},
      {"unknown effect",
       absl::StrCat(kGroups, "rules:\n  - name: r1\n    effect: allow\n"),
       "allow",
       1,
       {"allow"}},
      {"unknown origin",
       WithRule("    origins: [person, robot]\n"),
       "robot",
       1,
       {"robot"}},
      {"unknown urgency",
       WithRule("    urgencies: [soon]\n"),
       "soon",
       1,
       {"soon"}},
      {"unknown business type",
       WithRule("    business_types: [create]\n"),
       "create",
       1,
       {"create"}},
      {"unknown decision category",
       WithRule("    decision_categories: [budget]\n"),
       "budget",
       1,
       {"budget"}},
      {"cross_broker not a boolean",
       WithRule("    cross_broker: maybe\n"),
       "maybe",
       1,
       {"cross_broker"}},
      {"malformed retention",
       WithRule("    obligations: {retention: 10 years}\n"),
       "10 years",
       1,
       {"10 years"}},
      {"malformed size",
       WithRule("    obligations: {max_size: 20MB}\n"),
       "20MB",
       1,
       {"20MB"}},
      {"malformed rule name",
       absl::StrCat(kGroups,
                    "rules:\n  - name: bad name!\n    effect: permit\n"),
       "bad name!",
       1,
       {"bad name!"}},
      {"a list where a mapping belongs",
       WithRule("    sender: [000.00.00.H49]\n"),
       "[000.00.00.H49]",
       2,
       {"sender"}},
      {"obligations on a forbid",
       absl::StrCat(kGroups,
                    "rules:\n  - name: f\n    effect: forbid\n"
                    "    obligations: {retention: 10y}\n"),
       "{retention",
       1,
       {"forbid"}},
  };
}

TEST(CompileErrorTest, NamesFileLineColumnAndTheProblem) {
  for (const ErrorCase& c : ErrorCases()) {
    SCOPED_TRACE(absl::StrCat(c.what, "\n", c.yaml));
    auto policy = Policy::Compile(c.yaml, "central.yaml");
    ASSERT_THAT(policy, StatusIs(absl::StatusCode::kInvalidArgument));
    const std::string message(policy.status().message());
    EXPECT_THAT(message,
                StartsWith(At("central.yaml", c.yaml, c.marker, c.occurrence)));
    for (const std::string& word : c.says)
      EXPECT_THAT(message, HasSubstr(word));
  }
}

// An obligation the broker cannot enforce is named, and so is its place:
// the obligation itself, not the start of the obligations mapping.
TEST(CompileErrorTest, UnenforceableObligationsPointAtTheObligation) {
  struct Case {
    std::string yaml;
    std::string marker;
    Capabilities capabilities;
  };
  Capabilities no_retention;
  no_retention.retention = false;
  Capabilities no_e2e;
  no_e2e.end_to_end_encryption = false;
  Capabilities no_approval;
  no_approval.approval = false;
  const Case cases[] = {
      {WithRule("    obligations:\n      retention: 10y\n"
                "      end_to_end_encryption: true\n"),
       "end_to_end_encryption", no_e2e},
      {WithRule("    obligations:\n      max_size: 20MiB\n"
                "      approval: {role: lanh-dao}\n"),
       "approval", no_approval},
      {WithRule("    obligations: {max_size: 20MiB, retention: 10y}\n"),
       "retention", no_retention},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.yaml);
    CompileOptions options;
    options.capabilities = c.capabilities;
    EXPECT_THAT(Policy::Compile(c.yaml, "central.yaml", options),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(StartsWith(At("central.yaml", c.yaml, c.marker)),
                               HasSubstr("rule \"r1\""), HasSubstr(c.marker))));
  }
}

TEST(CompileErrorTest, EveryErrorCaseIsOneEditAwayFromAGoodPolicy) {
  // The base texts compile, so each case above fails for its own reason.
  EXPECT_OK(Policy::Compile(WithRule(""), "central.yaml"));
  EXPECT_OK(Policy::Compile(
      WithRule(
          "    sender: {groups: [h49]}\n    recipient: {groups: [centre]}\n"),
      "central.yaml"));
  EXPECT_OK(Policy::Compile(WithRule("    max_classification: secret\n"),
                            "central.yaml"));
  EXPECT_OK(Policy::Compile(
      WithRule("    obligations: {retention: 10y, max_size: 20MiB}\n"),
      "central.yaml"));
}

TEST(CompileErrorTest, MissingEffectIsAnError) {
  EXPECT_THAT(
      Policy::Compile(absl::StrCat(kGroups, "rules:\n  - name: r1\n"),
                      "central.yaml"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(StartsWith("central.yaml:"), HasSubstr("effect"))));
}

TEST(CompileErrorTest, MalformedYamlIsAnError) {
  for (const char* yaml :
       {"rules: [\n", "rules:\n  - name: r\n   effect: permit\n",
        "\"unterminated\n", "- just\n- a list\n", "42\n"}) {
    SCOPED_TRACE(yaml);
    EXPECT_THAT(
        Policy::Compile(yaml, "bad.yaml"),
        StatusIs(absl::StatusCode::kInvalidArgument, StartsWith("bad.yaml:")));
  }
}

TEST(CompileErrorTest, TheFirstProblemIsReported) {
  const std::string yaml =
      WithRule("    sender: {groups: [nowhere]}\n    origins: [robot]\n");
  EXPECT_THAT(Policy::Compile(yaml, "central.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith(At("central.yaml", yaml, "nowhere"))));
}

TEST(CompileTest, EncryptionAndApprovalCompileWhenTheBrokerCanEnforceThem) {
  const std::string yaml = WithRule(
      "    obligations:\n      end_to_end_encryption: true\n"
      "      approval: [{role: lanh-dao}, {role: van-thu, org: "
      "000.00.00.G22}]\n");
  CompileOptions options;
  options.capabilities.end_to_end_encryption = true;
  options.capabilities.approval = true;
  EXPECT_OK(Policy::Compile(yaml, "central.yaml", options));
  options.capabilities.approval = false;
  EXPECT_THAT(
      Policy::Compile(yaml, "central.yaml", options),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("approval")));
}

TEST(CompileTest, DisabledCapabilitiesAreRefused) {
  const std::string yaml = WithRule(
      "    obligations: {retention: 10y, max_size: 1MiB, "
      "paper_conversion_forbidden: true}\n");
  EXPECT_OK(Policy::Compile(yaml, "central.yaml"));
  for (const char* obligation :
       {"retention", "max_size", "paper_conversion_forbidden"}) {
    CompileOptions options;
    options.capabilities.retention = std::string(obligation) != "retention";
    options.capabilities.max_size = std::string(obligation) != "max_size";
    options.capabilities.paper_conversion_forbidden =
        std::string(obligation) != "paper_conversion_forbidden";
    EXPECT_THAT(
        Policy::Compile(yaml, "central.yaml", options),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 AllOf(HasSubstr("rule \"r1\""), HasSubstr(obligation))));
  }
}

std::string Sha256Hex(absl::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(),
         digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

TEST(CompileTest, VersionIsTheSha256OfTheBytes) {
  const std::string yaml = WithRule("    sender: {groups: [h49]}\n");
  ASSERT_OK_AND_ASSIGN(auto policy, Policy::Compile(yaml, "central.yaml"));
  EXPECT_EQ(policy->version(), "sha256:" + Sha256Hex(yaml));
  EXPECT_EQ(policy->source(), yaml);
  EXPECT_EQ(policy->file_name(), "central.yaml");
  // A comment changes the bytes, so the version.
  ASSERT_OK_AND_ASSIGN(auto commented,
                       Policy::Compile(yaml + "# reviewed\n", "central.yaml"));
  EXPECT_NE(commented->version(), policy->version());
}

TEST(CompileTest, CountsAndNamesRulesAndGroups) {
  const std::string yaml =
      absl::StrCat(kGroups,
                   "rules:\n  - name: p\n    effect: permit\n  - name: f\n    "
                   "effect: forbid\n");
  ASSERT_OK_AND_ASSIGN(auto policy, Policy::Compile(yaml, "central.yaml"));
  EXPECT_EQ(policy->group_count(), 2u);
  ASSERT_EQ(policy->rule_count(), 2u);
  std::vector<std::pair<std::string, Effect>> rules;
  for (uint32_t i = 0; i < policy->rule_count(); ++i) {
    rules.emplace_back(policy->rule_name(i), policy->rule_effect(i));
  }
  EXPECT_THAT(rules, ::testing::UnorderedElementsAre(
                         std::pair<std::string, Effect>{"p", Effect::kPermit},
                         std::pair<std::string, Effect>{"f", Effect::kDeny}));
}

TEST(CompileTest, TooLargeASourceIsRefused) {
  CompileOptions options;
  options.max_source_bytes = 64;
  const std::string yaml = WithRule("");
  ASSERT_GT(yaml.size(), 64u);
  EXPECT_FALSE(Policy::Compile(yaml, "central.yaml", options).ok());
  options.max_source_bytes = yaml.size();
  EXPECT_OK(Policy::Compile(yaml, "central.yaml", options));
}

TEST(CompileFileTest, ReadsAndNamesTheFile) {
  TempDir dir;
  const std::string path = dir.path() + "/central.yaml";
  const std::string yaml = WithRule("    sender: {groups: [nowhere]}\n");
  std::ofstream(path) << yaml;
  EXPECT_THAT(Policy::CompileFile(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith(At(path, yaml, "nowhere"))));
  std::ofstream(path) << WithRule("");
  ASSERT_OK_AND_ASSIGN(auto policy, Policy::CompileFile(path));
  EXPECT_EQ(policy->version(), "sha256:" + Sha256Hex(WithRule("")));
}

TEST(CompileFileTest, MissingAndUnreadableFiles) {
  TempDir dir;
  EXPECT_THAT(Policy::CompileFile(dir.path() + "/absent.yaml"),
              StatusIs(absl::StatusCode::kNotFound));
  if (geteuid() == 0) GTEST_SKIP() << "root reads any file";
  const std::string path = dir.path() + "/secret.yaml";
  std::ofstream(path) << WithRule("");
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  EXPECT_THAT(Policy::CompileFile(path),
              StatusIs(absl::StatusCode::kPermissionDenied));
}

}  // namespace
}  // namespace lienthong::policy
