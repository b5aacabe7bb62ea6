// Conversions between the policy engine's types (lienthong/policy/policy.h)
// and their wire form in lienthong.v1 (document.proto, admin.proto): flows,
// obligations, decisions, explanations and dry-run changes. The one place
// where policy values cross into protobuf, for the exchange (obligations on
// status events) and the AdminService. No gRPC.
//
//   v1::PolicyDecision wire;
//   ToProto(decision, *policy, broker_spiffe_id, &wire);
//   ASSIGN_OR_RETURN(policy::Flow flow, FlowFromProto(request.flow()));
//
// Proto enums UNSPECIFIED map to the defaults the exchange applies to
// documents (unclassified, normal, new, person; decision category none).
// Enum values outside the known range (a newer client, or a number given to
// grpcurl) are INVALID_ARGUMENT naming the field, never a silent default.
// All functions are pure and thread-safe.
#ifndef LIENTHONG_POLICY_PROTO_CONVERT_H_
#define LIENTHONG_POLICY_PROTO_CONVERT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lienthong/policy/policy.h"
#include "lienthong/v1/admin.pb.h"
#include "lienthong/v1/document.pb.h"

namespace lienthong::policy {

// ---- enums -----------------------------------------------------------------

v1::Classification ToProto(Classification v);
v1::Urgency ToProto(Urgency v);
v1::BusinessType ToProto(BusinessType v);
v1::Origin ToProto(Origin v);
v1::DecisionCategory ToProto(DecisionCategory v);
v1::PolicyEffect ToProto(Effect v);
v1::PolicyCause ToProto(Cause v);

// UNSPECIFIED gives the default; INVALID_ARGUMENT "<field>: unknown value N"
// for a number the enum does not define.
absl::StatusOr<Classification> ClassificationFromProto(int v,
                                                       absl::string_view field);
absl::StatusOr<Urgency> UrgencyFromProto(int v, absl::string_view field);
absl::StatusOr<BusinessType> BusinessTypeFromProto(int v,
                                                   absl::string_view field);
absl::StatusOr<Origin> OriginFromProto(int v, absl::string_view field);
absl::StatusOr<DecisionCategory> DecisionCategoryFromProto(
    int v, absl::string_view field);
// POLICY_EFFECT_UNSPECIFIED is INVALID_ARGUMENT: an effect has no default.
absl::StatusOr<Effect> EffectFromProto(int v, absl::string_view field);

// ---- flows -----------------------------------------------------------------

void ToProto(const Flow& flow, v1::PolicyFlow* out);
// INVALID_ARGUMENT "<field>.<name>: unknown value N" for an unknown enum
// value. Org codes are taken as they are (the caller checks them where they
// come from outside). `field` names the message in errors, e.g. "flow".
absl::StatusOr<Flow> FlowFromProto(const v1::PolicyFlow& flow,
                                   absl::string_view field = "flow");

// ---- obligations -----------------------------------------------------------

// Overwrites `out`. An unset retention clears `out->retention`; an unset
// max size is 0.
void ToProto(const Obligations& obligations, v1::Obligations* out);
// The inverse: approvals come back sorted and unique, max_size_bytes 0 is
// "no limit". INVALID_ARGUMENT naming the field for a negative or
// malformed retention.
absl::StatusOr<Obligations> ObligationsFromProto(
    const v1::Obligations& obligations,
    absl::string_view field = "obligations");

// ---- decisions -------------------------------------------------------------

// What a status event carries: the version of `policy` (which made
// `decision`), the deciding rules by name, the obligations and `broker`
// (the SPIFFE id of the deciding broker).
void ToProto(const Decision& decision, const Policy& policy,
             absl::string_view broker, v1::PolicyDecision* out);
// The inverse, against the policy that made it: rule names become indexes;
// the effect is permit when every named rule is a permit (and there is at
// least one), deny otherwise; the cause is PERMITTED, FORBIDDEN or NO_PERMIT
// accordingly (a built-in guard or an error does not survive the trip).
// FAILED_PRECONDITION when `decision` names another policy version;
// INVALID_ARGUMENT when it names a rule `policy` does not have.
absl::StatusOr<Decision> DecisionFromProto(const v1::PolicyDecision& decision,
                                           const Policy& policy);

// A recorded decision (DecisionLog), both ways. `broker` fills
// decision.broker.
void ToProto(const RecordedDecision& recorded, absl::string_view broker,
             v1::RecordedPolicyDecision* out);
absl::StatusOr<RecordedDecision> RecordedDecisionFromProto(
    const v1::RecordedPolicyDecision& recorded);

// ExplainPolicy's answer for `explanation`, which `policy` produced.
void ToProto(const Explanation& explanation, const Policy& policy,
             v1::ExplainPolicyResponse* out);

// DryRunPolicy's answer for `report`, made with the policy whose version is
// `candidate_version`.
void ToProto(const DryRunReport& report, absl::string_view candidate_version,
             v1::DryRunPolicyResponse* out);

// ---- time ------------------------------------------------------------------

void ToProto(absl::Time t, google::protobuf::Timestamp* out);
void ToProto(absl::Duration d, google::protobuf::Duration* out);
absl::Time TimeFromProto(const google::protobuf::Timestamp& t);
absl::Duration DurationFromProto(const google::protobuf::Duration& d);

}  // namespace lienthong::policy

#endif  // LIENTHONG_POLICY_PROTO_CONVERT_H_
