// Policy test files: flows with the decisions and obligations a province
// expects, so its policy can be kept under review in its own CI
// (`lienthong policy test FILE`). Format: see broker/policy/README.md.
//
//   ASSIGN_OR_RETURN(PolicyTestFile tests,
//   LoadPolicyTestFile("h49.test.yaml")); ASSIGN_OR_RETURN(auto policy,
//   Policy::CompileFile(tests.policy_path)); for (const PolicyTestResult& r :
//   RunPolicyTests(tests, *policy)) ...
#ifndef LIENTHONG_POLICY_POLICY_TEST_FILE_H_
#define LIENTHONG_POLICY_POLICY_TEST_FILE_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lienthong/policy/policy.h"

namespace lienthong::policy {

struct PolicyTestCase {
  std::string name;
  int line = 0;  // 1-based line of the case in the test file
  Flow flow;
  Effect expect = Effect::kDeny;
  std::optional<std::vector<std::string>> rules;  // exact, any order
  std::optional<Obligations> obligations;         // exact
};

struct PolicyTestFile {
  std::string file_name;
  // The `policy:` path resolved against the test file's directory; empty if
  // the file names none.
  std::string policy_path;
  std::vector<PolicyTestCase> cases;
};

// INVALID_ARGUMENT "<file>:<line>:<column>: ..." for a malformed file.
absl::StatusOr<PolicyTestFile> ParsePolicyTestFile(absl::string_view yaml,
                                                   absl::string_view file_name);
absl::StatusOr<PolicyTestFile> LoadPolicyTestFile(const std::string& path);

struct PolicyTestResult {
  std::string name;
  int line = 0;
  bool passed = false;
  std::string failure;  // what differed, when !passed
};

std::vector<PolicyTestResult> RunPolicyTests(const PolicyTestFile& tests,
                                             const Policy& policy);

// Parses one flow given as a YAML mapping in the test-file syntax, e.g.
// "{sender: 000.00.00.H49, recipient: 000.00.00.G22, origin: ai}" (fields not
// given keep Flow's defaults). For the CLI's explain.
absl::StatusOr<Flow> ParseFlow(absl::string_view yaml);

// "20MiB" / "512KiB" / "1GiB" / "1048576" and "3650d" / "72h" / "10y": the
// policy language's sizes and durations. INVALID_ARGUMENT naming the text.
absl::StatusOr<uint64_t> ParseSize(absl::string_view text);
absl::StatusOr<absl::Duration> ParseRetention(absl::string_view text);

}  // namespace lienthong::policy

#endif  // LIENTHONG_POLICY_POLICY_TEST_FILE_H_
