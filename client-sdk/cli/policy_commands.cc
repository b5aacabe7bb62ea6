#include "client-sdk/cli/policy_commands.h"

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "client-sdk/cli/format.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/policy/policy.h"
#include "lienthong/policy/policy_test_file.h"
#include "lienthong/policy/proto_convert.h"

namespace lienthong::cli {
namespace {

using PolicyPtr = std::shared_ptr<const policy::Policy>;

std::string BaseName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// A policy file named on the command line: unreadable or not compiling is a
// usage error (exit 2).
absl::StatusOr<PolicyPtr> CompileLocal(const std::string& path) {
  absl::StatusOr<PolicyPtr> compiled = policy::Policy::CompileFile(path);
  if (!compiled.ok()) return UsageError(compiled.status());
  return compiled;
}

// The policy text of a file named on the command line.
absl::StatusOr<std::string> ReadPolicyFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadLocalFile(path);
  if (!text.ok()) return UsageError(text.status());
  return text;
}

absl::StatusOr<policy::Flow> ParseFlowFlag(const std::string& text) {
  absl::StatusOr<policy::Flow> flow = policy::ParseFlow(text);
  if (!flow.ok()) {
    return UsageError(absl::InvalidArgumentError(
        absl::StrCat("--flow: ", flow.status().message())));
  }
  if (flow->sender.empty() || flow->recipient.empty()) {
    return UsageError(absl::InvalidArgumentError(
        "--flow: sender and recipient are required, e.g. '{sender: "
        "000.01.23.H49, recipient: 000.00.00.G22, origin: ai}'"));
  }
  return flow;
}

std::string EffectName(v1::PolicyEffect effect) {
  switch (effect) {
    case v1::POLICY_EFFECT_PERMIT:
      return "permit";
    case v1::POLICY_EFFECT_DENY:
      return "deny";
    default:
      return "-";
  }
}

// A rule's effect in the policy language: "permit" or "forbid".
std::string RuleEffectName(v1::PolicyEffect effect) {
  return effect == v1::POLICY_EFFECT_DENY ? "forbid" : EffectName(effect);
}

std::string CauseName(v1::PolicyCause cause) {
  switch (cause) {
    case v1::POLICY_CAUSE_PERMITTED:
      return "permitted";
    case v1::POLICY_CAUSE_FORBIDDEN:
      return "forbidden";
    case v1::POLICY_CAUSE_NO_PERMIT:
      return "no rule permits it (deny by default)";
    case v1::POLICY_CAUSE_BUILT_IN_GUARD:
      return "built-in guard";
    case v1::POLICY_CAUSE_ERROR:
      return "evaluation error (fails closed)";
    default:
      return "-";
  }
}

// The engine's own one-line spellings, so that the CLI says what the policy
// language says.
std::string FlowText(const v1::PolicyFlow& flow) {
  absl::StatusOr<policy::Flow> f = policy::FlowFromProto(flow);
  if (!f.ok()) return absl::StrCat(flow.sender(), " → ", flow.recipient());
  return f->DebugString();
}

std::string ObligationsText(const v1::Obligations& obligations) {
  absl::StatusOr<policy::Obligations> o =
      policy::ObligationsFromProto(obligations);
  return o.ok() ? o->DebugString() : "?";
}

std::string RulesText(
    const google::protobuf::RepeatedPtrField<std::string>& r) {
  return r.empty() ? "-" : absl::StrJoin(r, ", ");
}

// "permit by a, b (retention 3650d)", "deny by x", "deny (no rule)".
std::string OutcomeText(const v1::PolicyOutcome& outcome) {
  std::string text = EffectName(outcome.effect());
  if (outcome.rules().empty()) {
    absl::StrAppend(&text, " (no rule)");
  } else {
    absl::StrAppend(&text, " by ", absl::StrJoin(outcome.rules(), ", "));
  }
  if (outcome.effect() == v1::POLICY_EFFECT_PERMIT) {
    absl::StrAppend(&text, " [", ObligationsText(outcome.obligations()), "]");
  }
  return text;
}

void PrintExplanation(const v1::PolicyFlow& flow,
                      const v1::ExplainPolicyResponse& explained,
                      const OutputFlags& output) {
  if (output.json) {
    std::cout << ToJson(explained, /*with_defaults=*/true) << std::endl;
    return;
  }
  std::cout << "flow         " << FlowText(flow) << "\n"
            << "policy       " << explained.policy_version() << "\n"
            << "decision     " << EffectName(explained.effect()) << ": "
            << CauseName(explained.cause()) << "\n"
            << "rules        " << RulesText(explained.deciding_rules()) << "\n";
  if (explained.effect() == v1::POLICY_EFFECT_PERMIT) {
    std::cout << "obligations  " << ObligationsText(explained.obligations())
              << "\n";
  }
  if (!explained.detail().empty()) {
    std::cout << "detail       " << explained.detail() << "\n";
  }
  std::cout << "reason       " << explained.reason() << "\n";
  if (explained.near_misses().empty()) {
    std::cout << "near misses  -\n";
  } else {
    std::cout << "near misses\n";
    for (const v1::PolicyNearMiss& miss : explained.near_misses()) {
      std::cout << "  " << miss.rule() << " (" << RuleEffectName(miss.effect())
                << ")\n";
      for (const std::string& failed : miss.failed_conditions()) {
        std::cout << "    - " << failed << "\n";
      }
    }
  }
  std::cout << std::flush;
}

}  // namespace

// ---- offline ----------------------------------------------------------------

absl::Status RunPolicyValidate(const PolicyFlags& flags,
                               const OutputFlags& output) {
  absl::StatusOr<PolicyPtr> compiled = policy::Policy::CompileFile(flags.file);
  v1::ValidatePolicyResponse result;
  if (compiled.ok()) {
    result.set_ok(true);
    result.set_version((*compiled)->version());
    result.set_rule_count((*compiled)->rule_count());
    result.set_group_count((*compiled)->group_count());
  } else {
    result.set_ok(false);
    result.set_error(std::string(compiled.status().message()));
  }
  if (output.json) {
    std::cout << ToJson(result, /*with_defaults=*/true) << std::endl;
  } else if (compiled.ok()) {
    std::cout << flags.file << ": OK " << result.version() << " ("
              << result.rule_count() << " rules, " << result.group_count()
              << " groups)" << std::endl;
  }
  if (!compiled.ok()) return UsageError(compiled.status());
  return absl::OkStatus();
}

absl::Status RunPolicyTest(const PolicyFlags& flags,
                           const OutputFlags& output) {
  absl::StatusOr<policy::PolicyTestFile> tests =
      policy::LoadPolicyTestFile(flags.file);
  if (!tests.ok()) return UsageError(tests.status());
  const std::string policy_path =
      flags.policy_file.empty() ? tests->policy_path : flags.policy_file;
  if (policy_path.empty()) {
    return UsageError(absl::InvalidArgumentError(absl::StrCat(
        flags.file, ": names no policy; add `policy: FILE` or give --policy")));
  }
  ASSIGN_OR_RETURN(PolicyPtr policy, CompileLocal(policy_path));
  const std::vector<policy::PolicyTestResult> results =
      policy::RunPolicyTests(*tests, *policy);
  size_t failed = 0;
  for (const policy::PolicyTestResult& r : results) failed += !r.passed;
  const size_t passed = results.size() - failed;

  if (output.json) {
    std::string json = absl::StrCat(
        "{\"file\":", JsonString(flags.file),
        ",\"policy\":", JsonString(policy_path),
        ",\"policy_version\":", JsonString(policy->version()),
        ",\"passed\":", passed, ",\"failed\":", failed, ",\"cases\":[");
    for (size_t i = 0; i < results.size(); ++i) {
      const policy::PolicyTestResult& r = results[i];
      absl::StrAppend(&json, i ? "," : "", "{\"name\":", JsonString(r.name),
                      ",\"line\":", r.line,
                      ",\"passed\":", r.passed ? "true" : "false",
                      ",\"failure\":", JsonString(r.failure), "}");
    }
    std::cout << json << "]}" << std::endl;
  } else {
    for (const policy::PolicyTestResult& r : results) {
      if (r.passed) {
        std::cout << "PASS  " << r.name << "\n";
      } else {
        std::cout << "FAIL  " << r.name << " (" << flags.file << ":" << r.line
                  << "): " << r.failure << "\n";
      }
    }
    std::cout << passed << " passed, " << failed << " failed: " << flags.file
              << " against " << policy_path << " (" << policy->version() << ")"
              << std::endl;
  }
  if (failed > 0) {
    return ChecksFailed(absl::FailedPreconditionError(
        absl::StrCat(failed, " of ", results.size(), " cases failed")));
  }
  return absl::OkStatus();
}

absl::Status RunPolicyExplainOffline(const PolicyFlags& flags,
                                     const OutputFlags& output) {
  ASSIGN_OR_RETURN(policy::Flow flow, ParseFlowFlag(flags.flow));
  ASSIGN_OR_RETURN(PolicyPtr policy, CompileLocal(flags.policy_file));
  v1::PolicyFlow wire_flow;
  policy::ToProto(flow, &wire_flow);
  v1::ExplainPolicyResponse explained;
  policy::ToProto(policy->Explain(flow, flags.near_misses), *policy,
                  &explained);
  PrintExplanation(wire_flow, explained, output);
  return absl::OkStatus();
}

// ---- online -----------------------------------------------------------------

absl::Status RunPolicyExplain(AdminClient& admin, const PolicyFlags& flags,
                              const OutputFlags& output) {
  ASSIGN_OR_RETURN(policy::Flow flow, ParseFlowFlag(flags.flow));
  v1::ExplainPolicyRequest request;
  policy::ToProto(flow, request.mutable_flow());
  request.set_max_near_misses(flags.near_misses);
  ASSIGN_OR_RETURN(v1::ExplainPolicyResponse explained,
                   admin.ExplainPolicy(request));
  PrintExplanation(request.flow(), explained, output);
  return absl::OkStatus();
}

absl::Status RunPolicyGet(AdminClient& admin, const PolicyFlags& flags,
                          const OutputFlags& output) {
  ASSIGN_OR_RETURN(v1::GetPolicyResponse serving, admin.GetPolicy());
  if (flags.source_only) {
    std::cout << serving.source() << std::flush;
    return absl::OkStatus();
  }
  if (output.json) {
    std::cout << ToJson(serving, /*with_defaults=*/true) << std::endl;
    return absl::OkStatus();
  }
  std::cout << "version      " << serving.version() << "\n"
            << "file         "
            << (serving.path().empty() ? "(embedded development policy)"
                                       : serving.path())
            << "\n"
            << "loaded       " << FormatTimestamp(serving.loaded_at()) << "\n"
            << "rules        " << serving.rule_count() << " (in "
            << serving.group_count() << " groups)\n"
            << "last reload  "
            << (serving.last_reload_error().empty()
                    ? "ok"
                    : absl::StrCat("FAILED: ", serving.last_reload_error(),
                                   " (the version above keeps serving)"))
            << "\n"
            << "(the policy text: lienthong policy get --source)" << std::endl;
  return absl::OkStatus();
}

absl::Status RunPolicyApply(AdminClient& admin, const PolicyFlags& flags,
                            const OutputFlags& output) {
  v1::ApplyPolicyRequest request;
  ASSIGN_OR_RETURN(*request.mutable_source(), ReadPolicyFile(flags.file));
  ASSIGN_OR_RETURN(v1::ApplyPolicyResponse applied, admin.ApplyPolicy(request));
  if (output.json) {
    std::cout << ToJson(applied, /*with_defaults=*/true) << std::endl;
    return absl::OkStatus();
  }
  if (applied.changed()) {
    std::cout << "applied " << applied.version() << " (" << applied.rule_count()
              << " rules, " << applied.group_count() << " groups); was "
              << applied.previous_version() << std::endl;
  } else {
    std::cout << "unchanged: " << applied.version() << " is already serving"
              << std::endl;
  }
  return absl::OkStatus();
}

absl::Status RunPolicyDryRun(AdminClient& admin, const PolicyFlags& flags,
                             const OutputFlags& output) {
  v1::DryRunPolicyRequest request;
  ASSIGN_OR_RETURN(*request.mutable_candidate_source(),
                   ReadPolicyFile(flags.file));
  request.set_candidate_file_name(BaseName(flags.file));
  request.set_limit(flags.limit);
  ASSIGN_OR_RETURN(v1::DryRunPolicyResponse report,
                   admin.DryRunPolicy(request));
  if (output.json) {
    std::cout << ToJson(report, /*with_defaults=*/true) << std::endl;
    return absl::OkStatus();
  }
  std::cout << flags.file << " (" << report.candidate_version()
            << "): " << report.examined() << " recent decision(s) re-decided, "
            << report.unchanged() << " unchanged, " << report.changes_size()
            << " would change" << std::endl;
  if (report.changes().empty()) return absl::OkStatus();
  Table table({"DECIDED", "FLOW", "BEFORE", "AFTER"});
  for (const v1::PolicyDecisionChange& change : report.changes()) {
    table.AddRow({FormatTimestamp(change.decided_at()), FlowText(change.flow()),
                  OutcomeText(change.before()), OutcomeText(change.after())});
  }
  table.Print(std::cout);
  std::cout << std::flush;
  return absl::OkStatus();
}

absl::Status RunPolicyDecisions(AdminClient& admin, const PolicyFlags& flags,
                                const OutputFlags& output) {
  v1::ListPolicyDecisionsRequest request;
  request.set_limit(flags.limit);
  ASSIGN_OR_RETURN(v1::ListPolicyDecisionsResponse listed,
                   admin.ListPolicyDecisions(request));
  if (output.json) {
    std::cout << ToJson(listed, /*with_defaults=*/true) << std::endl;
    return absl::OkStatus();
  }
  Table table({"TIME", "FLOW", "EFFECT", "RULES", "OBLIGATIONS", "POLICY"});
  for (const v1::RecordedPolicyDecision& d : listed.decisions()) {
    table.AddRow({FormatTimestamp(d.at()), FlowText(d.flow()),
                  EffectName(d.effect()), RulesText(d.decision().rules()),
                  d.effect() == v1::POLICY_EFFECT_PERMIT
                      ? ObligationsText(d.decision().obligations())
                      : "-",
                  policy::ShortVersion(d.decision().policy_version())});
  }
  table.Print(std::cout);
  std::cout << listed.decisions_size() << " decision(s), oldest first"
            << std::endl;
  return absl::OkStatus();
}

}  // namespace lienthong::cli
