#include "lienthong/policy/proto_convert.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"

namespace lienthong::policy {
namespace {

absl::Status UnknownValue(absl::string_view field, int v) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": unknown value ", v));
}

// `v` when it lies in [lo, hi], else the error.
template <typename Enum>
absl::StatusOr<Enum> InRange(int v, int lo, int hi, absl::string_view field) {
  if (v < lo || v > hi) return UnknownValue(field, v);
  return static_cast<Enum>(v);
}

std::string Field(absl::string_view message, absl::string_view name) {
  return absl::StrCat(message, ".", name);
}

void OutcomeToProto(Effect effect, const std::vector<std::string>& rules,
                    const Obligations& obligations, v1::PolicyOutcome* out) {
  out->set_effect(ToProto(effect));
  for (const std::string& rule : rules) out->add_rules(rule);
  if (effect == Effect::kPermit) {
    ToProto(obligations, out->mutable_obligations());
  }
}

}  // namespace

// ---- enums: the policy enums are numbered as in lienthong.v1 ----------------

v1::Classification ToProto(Classification v) {
  return static_cast<v1::Classification>(v);
}
v1::Urgency ToProto(Urgency v) { return static_cast<v1::Urgency>(v); }
v1::BusinessType ToProto(BusinessType v) {
  return static_cast<v1::BusinessType>(v);
}
v1::Origin ToProto(Origin v) { return static_cast<v1::Origin>(v); }
v1::DecisionCategory ToProto(DecisionCategory v) {
  return static_cast<v1::DecisionCategory>(v);
}

v1::PolicyEffect ToProto(Effect v) {
  return v == Effect::kPermit ? v1::POLICY_EFFECT_PERMIT
                              : v1::POLICY_EFFECT_DENY;
}

v1::PolicyCause ToProto(Cause v) {
  switch (v) {
    case Cause::kPermitted:
      return v1::POLICY_CAUSE_PERMITTED;
    case Cause::kForbidden:
      return v1::POLICY_CAUSE_FORBIDDEN;
    case Cause::kNoPermit:
      return v1::POLICY_CAUSE_NO_PERMIT;
    case Cause::kBuiltInGuard:
      return v1::POLICY_CAUSE_BUILT_IN_GUARD;
    case Cause::kError:
      return v1::POLICY_CAUSE_ERROR;
  }
  return v1::POLICY_CAUSE_ERROR;
}

absl::StatusOr<Classification> ClassificationFromProto(
    int v, absl::string_view field) {
  if (v == v1::CLASSIFICATION_UNSPECIFIED) return Classification::kUnclassified;
  return InRange<Classification>(v, v1::CLASSIFICATION_UNCLASSIFIED,
                                 v1::CLASSIFICATION_TOP_SECRET, field);
}

absl::StatusOr<Urgency> UrgencyFromProto(int v, absl::string_view field) {
  if (v == v1::URGENCY_UNSPECIFIED) return Urgency::kNormal;
  return InRange<Urgency>(v, v1::URGENCY_NORMAL, v1::URGENCY_EXPRESS, field);
}

absl::StatusOr<BusinessType> BusinessTypeFromProto(int v,
                                                   absl::string_view field) {
  if (v == v1::BUSINESS_TYPE_UNSPECIFIED) return BusinessType::kNew;
  return InRange<BusinessType>(v, v1::BUSINESS_TYPE_NEW,
                               v1::BUSINESS_TYPE_REPLACE, field);
}

absl::StatusOr<Origin> OriginFromProto(int v, absl::string_view field) {
  if (v == v1::ORIGIN_UNSPECIFIED) return Origin::kPerson;
  return InRange<Origin>(v, v1::ORIGIN_PERSON, v1::ORIGIN_AI, field);
}

absl::StatusOr<DecisionCategory> DecisionCategoryFromProto(
    int v, absl::string_view field) {
  return InRange<DecisionCategory>(v, v1::DECISION_CATEGORY_NONE,
                                   v1::DECISION_CATEGORY_OTHER, field);
}

absl::StatusOr<Effect> EffectFromProto(int v, absl::string_view field) {
  if (v == v1::POLICY_EFFECT_PERMIT) return Effect::kPermit;
  if (v == v1::POLICY_EFFECT_DENY) return Effect::kDeny;
  if (v == v1::POLICY_EFFECT_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": missing"));
  }
  return UnknownValue(field, v);
}

// ---- flows ------------------------------------------------------------------

void ToProto(const Flow& flow, v1::PolicyFlow* out) {
  out->set_sender(flow.sender);
  out->set_recipient(flow.recipient);
  out->set_document_type(flow.document_type);
  out->set_classification(ToProto(flow.classification));
  out->set_urgency(ToProto(flow.urgency));
  out->set_business_type(ToProto(flow.business_type));
  out->set_origin(ToProto(flow.origin));
  out->set_decision_category(ToProto(flow.decision_category));
  out->set_cross_broker(flow.cross_broker);
}

absl::StatusOr<Flow> FlowFromProto(const v1::PolicyFlow& flow,
                                   absl::string_view field) {
  Flow out;
  out.sender = flow.sender();
  out.recipient = flow.recipient();
  out.document_type = flow.document_type();
  absl::StatusOr<Classification> classification = ClassificationFromProto(
      flow.classification(), Field(field, "classification"));
  if (!classification.ok()) return classification.status();
  out.classification = *classification;
  absl::StatusOr<Urgency> urgency =
      UrgencyFromProto(flow.urgency(), Field(field, "urgency"));
  if (!urgency.ok()) return urgency.status();
  out.urgency = *urgency;
  absl::StatusOr<BusinessType> business_type = BusinessTypeFromProto(
      flow.business_type(), Field(field, "business_type"));
  if (!business_type.ok()) return business_type.status();
  out.business_type = *business_type;
  absl::StatusOr<Origin> origin =
      OriginFromProto(flow.origin(), Field(field, "origin"));
  if (!origin.ok()) return origin.status();
  out.origin = *origin;
  absl::StatusOr<DecisionCategory> category = DecisionCategoryFromProto(
      flow.decision_category(), Field(field, "decision_category"));
  if (!category.ok()) return category.status();
  out.decision_category = *category;
  out.cross_broker = flow.cross_broker();
  return out;
}

// ---- obligations ------------------------------------------------------------

void ToProto(const Obligations& obligations, v1::Obligations* out) {
  out->Clear();
  out->set_end_to_end_encryption(obligations.end_to_end_encryption);
  for (const Approver& approver : obligations.approvals) {
    v1::Approver* a = out->add_approvals();
    a->set_role(approver.role);
    a->set_org(approver.org);
  }
  if (obligations.retention.has_value()) {
    ToProto(*obligations.retention, out->mutable_retention());
  }
  out->set_max_size_bytes(obligations.max_size_bytes.value_or(0));
  out->set_paper_conversion_forbidden(obligations.paper_conversion_forbidden);
}

absl::StatusOr<Obligations> ObligationsFromProto(
    const v1::Obligations& obligations, absl::string_view field) {
  Obligations out;
  out.end_to_end_encryption = obligations.end_to_end_encryption();
  for (const v1::Approver& a : obligations.approvals()) {
    out.approvals.push_back(Approver{a.role(), a.org()});
  }
  std::sort(out.approvals.begin(), out.approvals.end());
  out.approvals.erase(std::unique(out.approvals.begin(), out.approvals.end()),
                      out.approvals.end());
  if (obligations.has_retention()) {
    const google::protobuf::Duration& r = obligations.retention();
    if (r.seconds() < 0 || r.nanos() < 0 || r.nanos() >= 1'000'000'000) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".retention: must be a non-negative duration"));
    }
    out.retention = DurationFromProto(r);
  }
  if (obligations.max_size_bytes() != 0) {
    out.max_size_bytes = obligations.max_size_bytes();
  }
  out.paper_conversion_forbidden = obligations.paper_conversion_forbidden();
  return out;
}

// ---- decisions --------------------------------------------------------------

void ToProto(const Decision& decision, const Policy& policy,
             absl::string_view broker, v1::PolicyDecision* out) {
  out->Clear();
  out->set_policy_version(policy.version());
  for (uint32_t index : decision.rules) {
    out->add_rules(policy.rule_name(index));
  }
  if (decision.permitted()) {
    ToProto(decision.obligations, out->mutable_obligations());
  }
  out->set_broker(std::string(broker));
}

absl::StatusOr<Decision> DecisionFromProto(const v1::PolicyDecision& decision,
                                           const Policy& policy) {
  if (decision.policy_version() != policy.version()) {
    return absl::FailedPreconditionError(
        absl::StrCat("decision.policy_version: ", decision.policy_version(),
                     " is not the policy at hand (", policy.version(), ")"));
  }
  Decision out;
  bool all_permits = decision.rules_size() > 0;
  for (int i = 0; i < decision.rules_size(); ++i) {
    const std::string& name = decision.rules(i);
    uint32_t index = 0;
    while (index < policy.rule_count() && policy.rule_name(index) != name) {
      ++index;
    }
    if (index == policy.rule_count()) {
      return absl::InvalidArgumentError(
          absl::StrCat("decision.rules[", i, "]: policy ", policy.version(),
                       " has no rule \"", name, "\""));
    }
    out.rules.push_back(index);
    if (policy.rule_effect(index) != Effect::kPermit) all_permits = false;
  }
  std::sort(out.rules.begin(), out.rules.end());
  if (all_permits) {
    out.effect = Effect::kPermit;
    out.cause = Cause::kPermitted;
    absl::StatusOr<Obligations> obligations =
        ObligationsFromProto(decision.obligations(), "decision.obligations");
    if (!obligations.ok()) return obligations.status();
    out.obligations = *std::move(obligations);
  } else {
    out.effect = Effect::kDeny;
    out.cause = out.rules.empty() ? Cause::kNoPermit : Cause::kForbidden;
  }
  return out;
}

void ToProto(const RecordedDecision& recorded, absl::string_view broker,
             v1::RecordedPolicyDecision* out) {
  out->Clear();
  ToProto(recorded.at, out->mutable_at());
  ToProto(recorded.flow, out->mutable_flow());
  out->set_effect(ToProto(recorded.effect));
  v1::PolicyDecision* d = out->mutable_decision();
  d->set_policy_version(recorded.policy_version);
  for (const std::string& rule : recorded.rules) d->add_rules(rule);
  if (recorded.effect == Effect::kPermit) {
    ToProto(recorded.obligations, d->mutable_obligations());
  }
  d->set_broker(std::string(broker));
}

absl::StatusOr<RecordedDecision> RecordedDecisionFromProto(
    const v1::RecordedPolicyDecision& recorded) {
  RecordedDecision out;
  out.at = TimeFromProto(recorded.at());
  absl::StatusOr<Flow> flow = FlowFromProto(recorded.flow(), "flow");
  if (!flow.ok()) return flow.status();
  out.flow = *std::move(flow);
  absl::StatusOr<Effect> effect = EffectFromProto(recorded.effect(), "effect");
  if (!effect.ok()) return effect.status();
  out.effect = *effect;
  out.policy_version = recorded.decision().policy_version();
  out.rules.assign(recorded.decision().rules().begin(),
                   recorded.decision().rules().end());
  absl::StatusOr<Obligations> obligations = ObligationsFromProto(
      recorded.decision().obligations(), "decision.obligations");
  if (!obligations.ok()) return obligations.status();
  out.obligations = *std::move(obligations);
  return out;
}

void ToProto(const Explanation& explanation, const Policy& policy,
             v1::ExplainPolicyResponse* out) {
  out->Clear();
  const Decision& decision = explanation.decision;
  out->set_policy_version(policy.version());
  out->set_effect(ToProto(decision.effect));
  out->set_cause(ToProto(decision.cause));
  for (const std::string& rule : explanation.deciding_rules) {
    out->add_deciding_rules(rule);
  }
  if (decision.permitted()) {
    ToProto(decision.obligations, out->mutable_obligations());
  }
  for (const NearMiss& miss : explanation.near_misses) {
    v1::PolicyNearMiss* m = out->add_near_misses();
    m->set_rule(miss.rule);
    m->set_effect(ToProto(miss.effect));
    for (const std::string& failed : miss.failed) {
      m->add_failed_conditions(failed);
    }
  }
  out->set_reason(explanation.reason);
  out->set_detail(decision.detail);
}

void ToProto(const DryRunReport& report, absl::string_view candidate_version,
             v1::DryRunPolicyResponse* out) {
  out->Clear();
  out->set_candidate_version(std::string(candidate_version));
  out->set_examined(report.examined);
  out->set_unchanged(report.unchanged);
  for (const DecisionChange& change : report.changes) {
    v1::PolicyDecisionChange* c = out->add_changes();
    ToProto(change.before.flow, c->mutable_flow());
    ToProto(change.before.at, c->mutable_decided_at());
    c->set_policy_version(change.before.policy_version);
    OutcomeToProto(change.before.effect, change.before.rules,
                   change.before.obligations, c->mutable_before());
    OutcomeToProto(change.after_effect, change.after_rules,
                   change.after_obligations, c->mutable_after());
  }
}

// ---- time -------------------------------------------------------------------

void ToProto(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t seconds = absl::ToUnixSeconds(t);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(
      absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(seconds))));
}

void ToProto(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
}

absl::Time TimeFromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

absl::Duration DurationFromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

}  // namespace lienthong::policy
