// Policy test files, and the sizes and durations of the policy language.
#include <algorithm>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "broker/policy/src/yaml_reader.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/policy/policy_test_file.h"

namespace lienthong::policy {

absl::StatusOr<uint64_t> ParseSize(absl::string_view text) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  struct Unit {
    absl::string_view suffix;
    uint64_t factor;
  };
  static constexpr Unit kUnits[] = {{"GiB", uint64_t{1} << 30},
                                    {"MiB", uint64_t{1} << 20},
                                    {"KiB", uint64_t{1} << 10},
                                    {"B", 1}};
  uint64_t factor = 1;
  for (const Unit& u : kUnits) {
    if (absl::EndsWith(t, u.suffix)) {
      factor = u.factor;
      t.remove_suffix(u.suffix.size());
      break;
    }
  }
  uint64_t n = 0;
  if (t.empty() || !absl::SimpleAtoi(t, &n) || n == 0 ||
      n > (uint64_t{1} << 50) / factor) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text,
        "\" is not a size: a positive whole number of bytes, optionally with "
        "KiB, MiB or GiB (e.g. 20MiB)"));
  }
  return n * factor;
}

absl::StatusOr<absl::Duration> ParseRetention(absl::string_view text) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  int64_t hours_per_unit = 0;
  if (absl::EndsWith(t, "y")) {
    hours_per_unit = 365 * 24;
  } else if (absl::EndsWith(t, "d")) {
    hours_per_unit = 24;
  } else if (absl::EndsWith(t, "h")) {
    hours_per_unit = 1;
  }
  int64_t n = 0;
  if (hours_per_unit != 0) t.remove_suffix(1);
  if (hours_per_unit == 0 || t.empty() || !absl::SimpleAtoi(t, &n) || n <= 0 ||
      n > 1000 * 365 * 24 / hours_per_unit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text,
        "\" is not a retention period: a positive whole number with h, d or y "
        "(e.g. 3650d, 10y), at most 1000 years"));
  }
  return absl::Hours(n * hours_per_unit);
}

absl::StatusOr<PolicyTestFile> ParsePolicyTestFile(
    absl::string_view yaml, absl::string_view file_name) {
  internal::YamlReader reader(file_name);
  PolicyTestFile out;
  out.file_name = std::string(file_name);
  try {
    ASSIGN_OR_RETURN(YAML::Node root, reader.Load(yaml));
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat(
          file_name,
          ": a policy test file is a mapping with policy and cases"));
    }
    RETURN_IF_ERROR(
        reader.CheckKeys(root, "the test file", {"policy", "cases"}));
    if (YAML::Node p = root["policy"]) {
      ASSIGN_OR_RETURN(std::string path, reader.Scalar(p, "policy"));
      std::filesystem::path fp(path);
      std::filesystem::path base =
          std::filesystem::path(std::string(file_name)).parent_path();
      out.policy_path = fp.is_absolute() || base.empty()
                            ? path
                            : (base / fp).lexically_normal().string();
    }
    YAML::Node cases = root["cases"];
    if (!cases || !cases.IsSequence() || cases.size() == 0) {
      return reader.Error(cases ? cases : root,
                          "cases: a non-empty list of test cases is required");
    }
    for (const YAML::Node& c : cases) {
      RETURN_IF_ERROR(
          reader.CheckKeys(c, "a test case",
                           {"name", "flow", "expect", "rules", "obligations"}));
      PolicyTestCase tc;
      tc.line = c.Mark().line + 1;
      if (!c["name"]) return reader.Error(c, "test case: name is required");
      ASSIGN_OR_RETURN(tc.name, reader.Scalar(c["name"], "name"));
      if (!c["flow"]) {
        return reader.Error(
            c, absl::StrCat("test case \"", tc.name, "\": flow is required"));
      }
      ASSIGN_OR_RETURN(tc.flow, reader.FlowValue(c["flow"]));
      if (!c["expect"]) {
        return reader.Error(c, absl::StrCat("test case \"", tc.name,
                                            "\": expect is required (permit "
                                            "or deny)"));
      }
      ASSIGN_OR_RETURN(std::string expect,
                       reader.Scalar(c["expect"], "expect"));
      if (expect == "permit") {
        tc.expect = Effect::kPermit;
      } else if (expect == "deny") {
        tc.expect = Effect::kDeny;
      } else {
        return reader.Error(
            c["expect"],
            absl::StrCat("expect: \"", expect, "\" must be permit or deny"));
      }
      if (YAML::Node r = c["rules"]) {
        if (!r.IsSequence()) return reader.Error(r, "rules must be a list");
        std::vector<std::string> rules;
        for (const YAML::Node& item : r) {
          ASSIGN_OR_RETURN(std::string name, reader.Scalar(item, "rule name"));
          rules.push_back(std::move(name));
        }
        tc.rules = std::move(rules);
      }
      if (YAML::Node o = c["obligations"]) {
        ASSIGN_OR_RETURN(tc.obligations,
                         reader.ObligationsValue(o, "obligations"));
      }
      out.cases.push_back(std::move(tc));
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        file_name, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
  return out;
}

absl::StatusOr<PolicyTestFile> LoadPolicyTestFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text,
                   internal::ReadTextFile(path, "policy test file"));
  return ParsePolicyTestFile(text, path);
}

std::vector<PolicyTestResult> RunPolicyTests(const PolicyTestFile& tests,
                                             const Policy& policy) {
  std::vector<PolicyTestResult> results;
  for (const PolicyTestCase& tc : tests.cases) {
    PolicyTestResult r;
    r.name = tc.name;
    r.line = tc.line;
    Decision d = policy.Evaluate(tc.flow);
    std::vector<std::string> problems;
    if (d.effect != tc.expect) {
      problems.push_back(absl::StrCat("expected ", Name(tc.expect), ", got ",
                                      Name(d.effect), ": ",
                                      d.Reason(policy, tc.flow)));
    }
    if (tc.rules) {
      std::vector<std::string> want = *tc.rules;
      std::vector<std::string> got = d.RuleNames(policy);
      std::sort(want.begin(), want.end());
      std::sort(got.begin(), got.end());
      if (want != got) {
        problems.push_back(absl::StrCat("expected deciding rules [",
                                        absl::StrJoin(want, ", "), "], got [",
                                        absl::StrJoin(got, ", "), "]"));
      }
    }
    if (tc.obligations && !(*tc.obligations == d.obligations)) {
      problems.push_back(absl::StrCat("expected obligations ",
                                      tc.obligations->DebugString(), ", got ",
                                      d.obligations.DebugString()));
    }
    r.passed = problems.empty();
    r.failure = absl::StrJoin(problems, "; ");
    results.push_back(std::move(r));
  }
  return results;
}

absl::StatusOr<Flow> ParseFlow(absl::string_view yaml) {
  internal::YamlReader reader("flow");
  try {
    ASSIGN_OR_RETURN(YAML::Node node, reader.Load(yaml));
    return reader.FlowValue(node);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("flow: ", e.msg));
  }
}

}  // namespace lienthong::policy
