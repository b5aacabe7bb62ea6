#include "lienthong/broker/admin_service.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "lienthong/audit/chain.h"
#include "lienthong/broker/executor.h"
#include "lienthong/broker/service.h"
#include "lienthong/common/ids.h"
#include "lienthong/common/log.h"
#include "lienthong/common/org_code.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/policy/proto_convert.h"

namespace lienthong::broker {
namespace {

constexpr char kOperator[] = "operator";
constexpr char kAuditor[] = "auditor";
constexpr char kDefaultCandidateName[] = "candidate.yaml";
constexpr uint32_t kDefaultNearMisses = 5;
constexpr uint32_t kMaxNearMisses = 100;
constexpr uint32_t kDefaultDecisionLimit = 100;
constexpr uint32_t kMaxDecisionLimit = 10000;

// One line in the log (component "audit") per call, refused ones included.
void LogAudit(absl::string_view caller, absl::string_view peer,
              absl::string_view method, const absl::Status& outcome,
              absl::string_view detail) {
  log::Fields fields = {{"caller", std::string(caller)},
                        {"peer", std::string(peer)},
                        {"method", std::string(method)},
                        {"outcome", absl::StatusCodeToString(outcome.code())}};
  if (!outcome.ok())
    fields.emplace_back("error", std::string(outcome.message()));
  if (!detail.empty()) fields.emplace_back("detail", std::string(detail));
  log::Write(log::Level::kInfo, "audit", "", fields);
}

std::string CandidateName(const std::string& given) {
  return given.empty() ? kDefaultCandidateName : given;
}

// A candidate policy from the request, compiled as the serving policy is.
absl::StatusOr<std::shared_ptr<const policy::Policy>> CompileCandidate(
    const policy::ServedPolicy& served, absl::string_view field,
    const std::string& source, const std::string& file_name) {
  if (source.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": empty"));
  }
  return policy::Policy::Compile(source, CandidateName(file_name),
                                 served.options().compile);
}

absl::Status CheckOrg(absl::string_view code, absl::string_view field) {
  if (code.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": missing"));
  }
  return ValidateOrgCode(code, field);
}

}  // namespace

absl::Status AdminOptions::Validate() const {
  absl::StatusOr<Principal> broker = ParseSpiffeId(broker_id);
  if (!broker.ok() || broker->kind != Principal::Kind::kBroker) {
    return absl::InvalidArgumentError(absl::StrCat(
        "broker_id: \"", broker_id,
        "\" is not a broker SPIFFE id spiffe://<trust-domain>/broker/<name>"));
  }
  for (const auto& [field, ids] :
       {std::pair<const char*, const std::vector<std::string>*>{"operators",
                                                                &operators},
        {"auditors", &auditors}}) {
    for (size_t i = 0; i < ids->size(); ++i) {
      absl::StatusOr<Principal> p = ParseSpiffeId((*ids)[i]);
      if (!p.ok() || p->kind != Principal::Kind::kPerson ||
          p->trust_domain != broker->trust_domain) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, "[", i, "]: \"", (*ids)[i],
                         "\" is not a person of this trust domain (spiffe://",
                         broker->trust_domain, "/person/<id>)"));
      }
    }
  }
  if (policy == nullptr) {
    return absl::InvalidArgumentError("policy: required");
  }
  if (worker_threads < 1) {
    return absl::InvalidArgumentError("worker_threads: must be at least 1");
  }
  return absl::OkStatus();
}

AdminServiceImpl::AdminServiceImpl(AdminOptions options)
    : options_(std::move(options)),
      operators_(options_.operators.begin(), options_.operators.end()),
      auditors_(options_.auditors.begin(), options_.auditors.end()) {
  if (absl::Status s = options_.Validate(); !s.ok()) {
    std::fprintf(stderr, "AdminServiceImpl: %s\n", s.ToString().c_str());
    std::abort();
  }
  trust_domain_ = ParseSpiffeId(options_.broker_id)->trust_domain;
  pool_ = std::make_unique<WorkerPool>(options_.worker_threads);
}

AdminServiceImpl::~AdminServiceImpl() = default;

std::vector<std::string> AdminServiceImpl::RolesOf(
    const Principal& caller) const {
  std::vector<std::string> roles;
  if (caller.kind != Principal::Kind::kPerson) return roles;
  if (operators_.contains(caller.spiffe_id)) roles.push_back(kOperator);
  if (auditors_.contains(caller.spiffe_id)) roles.push_back(kAuditor);
  return roles;
}

absl::Status AdminServiceImpl::Authorize(const Principal& caller,
                                         absl::string_view method,
                                         Access access) const {
  const bool is_operator = operators_.contains(caller.spiffe_id);
  const bool is_auditor = auditors_.contains(caller.spiffe_id);
  if (caller.kind == Principal::Kind::kPerson &&
      (is_operator || (access == Access::kRead && is_auditor))) {
    return absl::OkStatus();
  }
  const absl::string_view needed = access == Access::kOperate
                                       ? "the operator role"
                                       : "the operator or auditor role";
  std::string has;
  if (caller.kind != Principal::Kind::kPerson) {
    has = absl::StrCat(
        "it is ",
        caller.kind == Principal::Kind::kOrg ? "an organization" : "a broker",
        ", and roles are given only to persons");
  } else {
    std::vector<std::string> roles = RolesOf(caller);
    has = roles.empty()
              ? std::string("it has no role in this broker's configuration")
              : absl::StrCat("it has only: ", absl::StrJoin(roles, ", "));
  }
  return absl::PermissionDeniedError(
      absl::StrCat(caller.spiffe_id, " may not call ", method, ": it needs ",
                   needed, "; ", has));
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* AdminServiceImpl::Handle(
    grpc::CallbackServerContext* ctx, absl::string_view method, Access access,
    const Request* request, Response* response,
    absl::Status (AdminServiceImpl::*work)(const Principal&, const Request&,
                                           Response*, std::string*)) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const std::string peer = ctx->peer();
  std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
  absl::StatusOr<Principal> caller =
      auth ? AuthenticatedPrincipal(*auth, trust_domain_)
           : absl::UnauthenticatedError("no transport security");
  if (!caller.ok()) {
    AuditAuthenticationFailure(peer, absl::StrCat("AdminService/", method),
                               caller.status());
    LogAudit("unauthenticated", peer, method, caller.status(), "");
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  // Reads of one document are found in that document's evidence.
  std::string document_id;
  if constexpr (requires(const Request& r) { r.document_id(); }) {
    document_id = request->document_id();
  }
  if (absl::Status allowed = Authorize(*caller, method, access);
      !allowed.ok()) {
    // Audited, but not into the document's evidence: whoever holds a
    // certificate could otherwise fill any document's evidence with refusals.
    Audit(
        caller->spiffe_id, peer, method, access, allowed,
        IsDocumentId(document_id) ? absl::StrCat("document ", document_id) : "",
        "", [reactor, allowed] { reactor->Finish(ToGrpcStatus(allowed)); });
    return reactor;
  }
  pool_->Submit([this, reactor, request, response, work, peer, access,
                 document_id, method = std::string(method),
                 caller = *std::move(caller)] {
    std::string detail;
    absl::Status status = (this->*work)(caller, *request, response, &detail);
    Audit(caller.spiffe_id, peer, method, access, status, detail, document_id,
          [reactor, status] { reactor->Finish(ToGrpcStatus(status)); });
  });
  return reactor;
}

void AdminServiceImpl::Audit(absl::string_view caller, absl::string_view peer,
                             absl::string_view method, Access access,
                             const absl::Status& outcome,
                             absl::string_view detail,
                             absl::string_view document_id,
                             absl::AnyInvocable<void()> done) {
  LogAudit(caller, peer, method, outcome, detail);
  if (options_.audit == nullptr) {
    done();
    return;
  }
  v1::AuditEntry e;
  e.set_kind(method == "ApplyPolicy" && outcome.ok()
                 ? v1::AUDIT_KIND_POLICY_CHANGE
             : access == Access::kOperate ? v1::AUDIT_KIND_ADMIN_CHANGE
                                          : v1::AUDIT_KIND_ADMIN_READ);
  e.set_actor(std::string(caller));
  e.set_peer(std::string(peer));
  e.set_action(absl::StrCat("AdminService/", method));
  if (IsDocumentId(document_id)) e.set_document_id(std::string(document_id));
  e.set_outcome(absl::StatusCodeToString(outcome.code()));
  e.set_detail(outcome.ok() ? std::string(detail)
                            : absl::StrCat(outcome.message(),
                                           detail.empty() ? "" : "; ", detail));
  // The answer goes out once the entry is durable; a call whose entry
  // cannot be stored still answers (the error is logged).
  options_.audit->Append(
      std::move(e), [done = std::move(done)](absl::Status) mutable { done(); });
}

// ---- handlers ---------------------------------------------------------------

grpc::ServerUnaryReactor* AdminServiceImpl::GetPolicy(
    grpc::CallbackServerContext* ctx, const v1::GetPolicyRequest* request,
    v1::GetPolicyResponse* response) {
  return Handle(ctx, "GetPolicy", Access::kRead, request, response,
                &AdminServiceImpl::DoGetPolicy);
}

grpc::ServerUnaryReactor* AdminServiceImpl::ValidatePolicy(
    grpc::CallbackServerContext* ctx, const v1::ValidatePolicyRequest* request,
    v1::ValidatePolicyResponse* response) {
  return Handle(ctx, "ValidatePolicy", Access::kRead, request, response,
                &AdminServiceImpl::DoValidatePolicy);
}

grpc::ServerUnaryReactor* AdminServiceImpl::ExplainPolicy(
    grpc::CallbackServerContext* ctx, const v1::ExplainPolicyRequest* request,
    v1::ExplainPolicyResponse* response) {
  return Handle(ctx, "ExplainPolicy", Access::kRead, request, response,
                &AdminServiceImpl::DoExplainPolicy);
}

grpc::ServerUnaryReactor* AdminServiceImpl::ApplyPolicy(
    grpc::CallbackServerContext* ctx, const v1::ApplyPolicyRequest* request,
    v1::ApplyPolicyResponse* response) {
  return Handle(ctx, "ApplyPolicy", Access::kOperate, request, response,
                &AdminServiceImpl::DoApplyPolicy);
}

grpc::ServerUnaryReactor* AdminServiceImpl::DryRunPolicy(
    grpc::CallbackServerContext* ctx, const v1::DryRunPolicyRequest* request,
    v1::DryRunPolicyResponse* response) {
  return Handle(ctx, "DryRunPolicy", Access::kRead, request, response,
                &AdminServiceImpl::DoDryRunPolicy);
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListPolicyDecisions(
    grpc::CallbackServerContext* ctx,
    const v1::ListPolicyDecisionsRequest* request,
    v1::ListPolicyDecisionsResponse* response) {
  return Handle(ctx, "ListPolicyDecisions", Access::kRead, request, response,
                &AdminServiceImpl::DoListPolicyDecisions);
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetBrokerInfo(
    grpc::CallbackServerContext* ctx, const v1::GetBrokerInfoRequest* request,
    v1::GetBrokerInfoResponse* response) {
  return Handle(ctx, "GetBrokerInfo", Access::kRead, request, response,
                &AdminServiceImpl::DoGetBrokerInfo);
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListPeers(
    grpc::CallbackServerContext* ctx, const v1::ListPeersRequest* request,
    v1::ListPeersResponse* response) {
  return Handle(ctx, "ListPeers", Access::kRead, request, response,
                &AdminServiceImpl::DoListPeers);
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListQueues(
    grpc::CallbackServerContext* ctx, const v1::ListQueuesRequest* request,
    v1::ListQueuesResponse* response) {
  return Handle(ctx, "ListQueues", Access::kRead, request, response,
                &AdminServiceImpl::DoListQueues);
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetDocument(
    grpc::CallbackServerContext* ctx, const v1::GetDocumentRequest* request,
    v1::GetDocumentResponse* response) {
  return Handle(ctx, "GetDocument", Access::kRead, request, response,
                &AdminServiceImpl::DoGetDocument);
}

grpc::ServerUnaryReactor* AdminServiceImpl::SetLogLevel(
    grpc::CallbackServerContext* ctx, const v1::SetLogLevelRequest* request,
    v1::SetLogLevelResponse* response) {
  return Handle(ctx, "SetLogLevel", Access::kOperate, request, response,
                &AdminServiceImpl::DoSetLogLevel);
}

grpc::ServerUnaryReactor* AdminServiceImpl::RotateStorageKeys(
    grpc::CallbackServerContext* ctx,
    const v1::RotateStorageKeysRequest* request,
    v1::RotateStorageKeysResponse* response) {
  return Handle(ctx, "RotateStorageKeys", Access::kOperate, request, response,
                &AdminServiceImpl::DoRotateStorageKeys);
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListDirectory(
    grpc::CallbackServerContext* ctx, const v1::ListDirectoryRequest* request,
    v1::ListDirectoryResponse* response) {
  return Handle(ctx, "ListDirectory", Access::kRead, request, response,
                &AdminServiceImpl::DoListDirectory);
}

static void ToProto(const storage::EncryptionInfo& info,
                    v1::StorageEncryption* out) {
  out->set_enabled(info.enabled);
  out->set_master_key_id(info.master_key_id);
  out->set_data_key_id(info.data_key_id);
  out->set_data_keys(static_cast<uint32_t>(info.data_keys));
}

grpc::ServerUnaryReactor* AdminServiceImpl::VerifyAudit(
    grpc::CallbackServerContext* ctx, const v1::VerifyAuditRequest* request,
    v1::VerifyAuditResponse* response) {
  return Handle(ctx, "VerifyAudit", Access::kRead, request, response,
                &AdminServiceImpl::DoVerifyAudit);
}

grpc::ServerUnaryReactor* AdminServiceImpl::ExportEvidence(
    grpc::CallbackServerContext* ctx, const v1::ExportEvidenceRequest* request,
    v1::EvidenceExport* response) {
  return Handle(ctx, "ExportEvidence", Access::kRead, request, response,
                &AdminServiceImpl::DoExportEvidence);
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListPaperConversions(
    grpc::CallbackServerContext* ctx,
    const v1::ListOrgPaperConversionsRequest* request,
    v1::ListPaperConversionsResponse* response) {
  return Handle(ctx, "ListPaperConversions", Access::kRead, request, response,
                &AdminServiceImpl::DoListPaperConversions);
}

absl::Status AdminServiceImpl::DoListPaperConversions(
    const Principal& caller, const v1::ListOrgPaperConversionsRequest& request,
    v1::ListPaperConversionsResponse* response, std::string* detail) {
  if (!options_.exchange) {
    return absl::FailedPreconditionError(
        "this broker serves no exchange to report on");
  }
  *detail = request.org();
  ASSIGN_OR_RETURN(
      std::vector<v1::PaperConversion> conversions,
      options_.exchange->PaperConversions(request.org(), request.limit()));
  for (v1::PaperConversion& c : conversions)
    *response->add_conversions() = std::move(c);
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoExportEvidence(
    const Principal& caller, const v1::ExportEvidenceRequest& request,
    v1::EvidenceExport* response, std::string* detail) {
  if (!options_.exchange || !options_.signer) {
    return absl::FailedPreconditionError(
        "this broker has no exchange or no key to sign evidence with");
  }
  *detail = request.document_id();
  ASSIGN_OR_RETURN(v1::Evidence evidence,
                   options_.exchange->Evidence(request.document_id()));
  ASSIGN_OR_RETURN(*response,
                   SignEvidence(*options_.signer, std::move(evidence)));
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AdminServiceImpl::ExportAudit(
    grpc::CallbackServerContext* ctx, const v1::ExportAuditRequest* request,
    v1::ExportAuditResponse* response) {
  return Handle(ctx, "ExportAudit", Access::kRead, request, response,
                &AdminServiceImpl::DoExportAudit);
}

// ---- work (on the pool) -----------------------------------------------------

absl::Status AdminServiceImpl::DoVerifyAudit(
    const Principal& caller, const v1::VerifyAuditRequest& request,
    v1::VerifyAuditResponse* response, std::string* detail) {
  if (!options_.audit) {
    return absl::FailedPreconditionError("this broker keeps no audit log");
  }
  ASSIGN_OR_RETURN(audit::AuditVerification v, options_.audit->Verify());
  response->set_ok(v.ok());
  response->set_entries(v.entries);
  response->set_checkpoints(v.checkpoints);
  response->set_verified_size(v.verified_size);
  response->set_first_bad_index(v.first_bad_index);
  for (std::string& p : v.problems) response->add_problems(std::move(p));
  response->set_head_hash(audit::Hex(v.head_hash));
  *detail = v.ok() ? absl::StrCat("intact: ", v.entries, " entries, ",
                                  v.checkpoints, " checkpoints")
                   : absl::StrCat("TAMPERED: ", response->problems(0));
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoExportAudit(
    const Principal& caller, const v1::ExportAuditRequest& request,
    v1::ExportAuditResponse* response, std::string* detail) {
  constexpr uint32_t kDefaultLimit = 1000, kMaxLimit = 10000;
  if (!options_.audit) {
    return absl::FailedPreconditionError("this broker keeps no audit log");
  }
  if (request.limit() > kMaxLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: at most ", kMaxLimit));
  }
  if (request.after_index() > 0 && request.through() == 0) {
    return absl::InvalidArgumentError(
        "through: required after the first page (the first page's answer)");
  }
  const uint32_t limit = request.limit() == 0 ? kDefaultLimit : request.limit();
  ASSIGN_OR_RETURN(
      AuditPage page,
      options_.audit->Read(request.after_index(), request.through(), limit));
  response->set_broker(options_.audit->broker_id());
  response->set_through(page.through);
  if (request.after_index() == 0) {
    response->set_certificate_pem(options_.audit->certificate_pem());
    response->set_head_hash(page.head_hash);
    for (v1::AuditCheckpoint& c : page.checkpoints)
      *response->add_checkpoints() = std::move(c);
  }
  const uint64_t last =
      page.entries.empty() ? request.after_index() : page.last_key;
  for (v1::StoredAuditEntry& e : page.entries)
    *response->add_entries() = std::move(e);
  if (!page.entries.empty() && last < page.through)
    response->set_next_after_index(last);
  *detail = absl::StrCat("entries ", request.after_index() + 1, "..", last,
                         " of ", page.through);
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoGetPolicy(const Principal& caller,
                                           const v1::GetPolicyRequest& request,
                                           v1::GetPolicyResponse* response,
                                           std::string* detail) {
  policy::ServedPolicy& served = *options_.policy;
  std::shared_ptr<const policy::Policy> current = served.Current();
  response->set_version(current->version());
  response->set_source(current->source());
  policy::ToProto(served.loaded_at(), response->mutable_loaded_at());
  response->set_path(served.options().path);
  if (absl::Status reload = served.last_reload_status(); !reload.ok()) {
    response->set_last_reload_error(std::string(reload.message()));
  }
  response->set_rule_count(current->rule_count());
  response->set_group_count(current->group_count());
  *detail = current->version();
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoValidatePolicy(
    const Principal& caller, const v1::ValidatePolicyRequest& request,
    v1::ValidatePolicyResponse* response, std::string* detail) {
  absl::StatusOr<std::shared_ptr<const policy::Policy>> candidate =
      CompileCandidate(*options_.policy, "source", request.source(),
                       request.file_name());
  if (!candidate.ok()) {
    if (candidate.status().code() != absl::StatusCode::kInvalidArgument) {
      return candidate.status();
    }
    response->set_ok(false);
    response->set_error(std::string(candidate.status().message()));
    *detail = absl::StrCat("invalid: ", candidate.status().message());
    return absl::OkStatus();
  }
  response->set_ok(true);
  response->set_version((*candidate)->version());
  response->set_rule_count((*candidate)->rule_count());
  response->set_group_count((*candidate)->group_count());
  *detail = absl::StrCat("valid: ", (*candidate)->version());
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoExplainPolicy(
    const Principal& caller, const v1::ExplainPolicyRequest& request,
    v1::ExplainPolicyResponse* response, std::string* detail) {
  if (!request.has_flow()) {
    return absl::InvalidArgumentError("flow: missing");
  }
  if (absl::Status s = CheckOrg(request.flow().sender(), "flow.sender");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckOrg(request.flow().recipient(), "flow.recipient");
      !s.ok()) {
    return s;
  }
  absl::StatusOr<policy::Flow> flow = policy::FlowFromProto(request.flow());
  if (!flow.ok()) return flow.status();
  uint32_t near_misses = request.max_near_misses();
  if (near_misses == 0) near_misses = kDefaultNearMisses;
  if (near_misses > kMaxNearMisses) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_near_misses: at most ", kMaxNearMisses));
  }
  std::shared_ptr<const policy::Policy> policy;
  if (request.candidate_source().empty()) {
    policy = options_.policy->Current();
  } else {
    absl::StatusOr<std::shared_ptr<const policy::Policy>> candidate =
        CompileCandidate(*options_.policy, "candidate_source",
                         request.candidate_source(),
                         request.candidate_file_name());
    if (!candidate.ok()) return candidate.status();
    policy = *std::move(candidate);
  }
  policy::Explanation explanation = policy->Explain(*flow, near_misses);
  policy::ToProto(explanation, *policy, response);
  *detail = absl::StrCat(flow->DebugString(), ": ",
                         policy::Name(explanation.decision.effect), " by ",
                         policy->version());
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoApplyPolicy(
    const Principal& caller, const v1::ApplyPolicyRequest& request,
    v1::ApplyPolicyResponse* response, std::string* detail) {
  if (request.source().empty()) {
    return absl::InvalidArgumentError(
        "source: empty; a policy names at least its rules");
  }
  policy::ServedPolicy& served = *options_.policy;
  const std::string previous = served.Current()->version();
  absl::StatusOr<std::shared_ptr<const policy::Policy>> applied =
      served.Apply(request.source());
  if (!applied.ok()) return applied.status();
  const policy::Policy& now = **applied;
  response->set_version(now.version());
  response->set_previous_version(previous);
  response->set_changed(now.version() != previous);
  policy::ToProto(served.loaded_at(), response->mutable_loaded_at());
  response->set_rule_count(now.rule_count());
  response->set_group_count(now.group_count());
  *detail =
      response->changed()
          ? absl::StrCat("applied ", now.version(), " (was ", previous, ")")
          : absl::StrCat("unchanged: ", now.version(), " was already serving");
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoDryRunPolicy(
    const Principal& caller, const v1::DryRunPolicyRequest& request,
    v1::DryRunPolicyResponse* response, std::string* detail) {
  policy::ServedPolicy& served = *options_.policy;
  absl::StatusOr<std::shared_ptr<const policy::Policy>> candidate =
      CompileCandidate(served, "candidate_source", request.candidate_source(),
                       request.candidate_file_name());
  if (!candidate.ok()) return candidate.status();
  const size_t limit =
      request.limit() == 0 ? served.decisions().capacity() : request.limit();
  policy::DryRunReport report =
      policy::DryRun(served.decisions().Recent(limit), **candidate);
  policy::ToProto(report, (*candidate)->version(), response);
  *detail = absl::StrCat((*candidate)->version(), ": ", report.examined,
                         " examined, ", report.changes.size(), " changed");
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoListPolicyDecisions(
    const Principal& caller, const v1::ListPolicyDecisionsRequest& request,
    v1::ListPolicyDecisionsResponse* response, std::string* detail) {
  if (request.limit() > kMaxDecisionLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: ", request.limit(), "; at most ",
                     kMaxDecisionLimit, " decisions per call"));
  }
  const size_t limit =
      request.limit() == 0 ? kDefaultDecisionLimit : request.limit();
  for (const policy::RecordedDecision& recorded :
       options_.policy->decisions().Recent(limit)) {
    policy::ToProto(recorded, options_.broker_id, response->add_decisions());
  }
  *detail = absl::StrCat(response->decisions_size(), " decisions");
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoGetBrokerInfo(
    const Principal& caller, const v1::GetBrokerInfoRequest& request,
    v1::GetBrokerInfoResponse* response, std::string* detail) {
  response->set_broker(options_.broker_id);
  response->set_version(options_.version);
  policy::ToProto(options_.started_at, response->mutable_started_at());
  policy::ToProto(absl::Now() - options_.started_at,
                  response->mutable_uptime());
  response->set_policy_version(options_.policy->Current()->version());
  response->set_caller(caller.spiffe_id);
  for (const std::string& role : RolesOf(caller)) {
    response->add_caller_roles(role);
  }
  response->set_log_level(std::string(log::LevelName(log::GetLevel())));
  response->set_config_sha256(options_.config_sha256);
  if (options_.store) {
    storage::StoreStats st = options_.store->Stats();
    response->set_data_disk_bytes(st.disk_bytes);
    response->set_data_memory_bytes(st.memory_bytes);
    ToProto(options_.store->Encryption(),
            response->mutable_storage_encryption());
  }
  if (options_.incidents) {
    for (v1::Incident& i : options_.incidents->OpenIncidents())
      *response->add_open_incidents() = std::move(i);
  }
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoListPeers(const Principal& caller,
                                           const v1::ListPeersRequest& request,
                                           v1::ListPeersResponse* response,
                                           std::string* detail) {
  if (!options_.exchange) {
    return absl::FailedPreconditionError(
        "this broker serves no exchange to report on");
  }
  absl::Time now = absl::Now();
  absl::StatusOr<Principal> self = ParseSpiffeId(options_.broker_id);
  std::vector<PeerQueueStats> queues = options_.exchange->PeerStats();
  std::vector<PeerDirectory> directory =
      options_.exchange->router().Directory(now);
  std::vector<PeerLinkState> links;
  if (options_.links) links = options_.links->States();
  const std::vector<PeerRoute>& routes = options_.exchange->router().peers();
  for (size_t i = 0; i < routes.size(); ++i) {
    const PeerRoute& r = routes[i];
    v1::PeerInfo* p = response->add_peers();
    p->set_name(r.name);
    p->set_broker(
        SpiffeId(self->trust_domain, Principal::Kind::kBroker, r.name));
    v1::PeerRoutes* w = p->mutable_routes();
    for (const std::string& o : r.orgs) w->add_orgs(o);
    for (const std::string& u : r.under) w->add_under(u);
    for (const std::string& v : r.provinces) w->add_provinces(v);
    w->set_is_default(r.is_default);
    for (const PeerLinkState& l : links) {
      if (l.peer != r.name) continue;
      p->set_endpoint(l.endpoint);
      p->set_outbound_up(l.up);
      if (l.since) policy::ToProto(*l.since, p->mutable_outbound_since());
      p->set_outbound_connects(l.connects);
      p->set_outbound_last_error(l.last_error);
    }
    for (const PeerQueueStats& q : queues) {
      if (q.peer != r.name) continue;
      p->set_inbound_up(q.inbound_link);
      p->set_outbox(q.outbox);
      p->set_outbox_in_flight(q.outbox_in_flight);
      if (q.oldest_outbox)
        policy::ToProto(now - *q.oldest_outbox, p->mutable_oldest_outbox_age());
      p->set_returns(q.returns);
    }
    for (const PeerDirectory& d : directory) {
      if (d.peer != r.name) continue;
      if (d.heard_at)
        policy::ToProto(*d.heard_at, p->mutable_directory_heard_at());
      p->set_directory_stale(d.stale);
      p->set_directory_entries(d.entries.size());
    }
  }
  for (const PeerQueueStats& q : queues) {
    if (q.configured) continue;
    v1::PeerInfo* p = response->add_peers();
    p->set_name(q.peer);
    p->set_broker(
        SpiffeId(self->trust_domain, Principal::Kind::kBroker, q.peer));
    p->set_outbox(q.outbox);
    if (q.oldest_outbox)
      policy::ToProto(now - *q.oldest_outbox, p->mutable_oldest_outbox_age());
    p->set_returns(q.returns);
    p->set_outbound_last_error(
        "not a configured peer any more: what waits for it stays stored until "
        "it is configured again");
  }
  *detail = absl::StrCat(response->peers_size(), " peers");
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoListDirectory(
    const Principal& caller, const v1::ListDirectoryRequest& request,
    v1::ListDirectoryResponse* response, std::string* detail) {
  if (!options_.exchange) {
    return absl::FailedPreconditionError(
        "this broker serves no exchange to report on");
  }
  if (!request.org().empty()) {
    if (absl::Status s = ValidateOrgCode(request.org(), "org"); !s.ok())
      return s;
  }
  absl::Time now = absl::Now();
  Exchange& exchange = *options_.exchange;
  absl::StatusOr<Principal> self = ParseSpiffeId(options_.broker_id);
  // This broker's own organizations first, as it announces them.
  v1::Announce own = exchange.AnnounceTo("");
  for (const v1::DirectoryEntry& e : own.entries()) {
    if (e.distance() != 0 || e.broker() != self->name) continue;
    if (!request.org().empty() && e.org() != request.org()) continue;
    v1::DirectoryRow* row = response->add_rows();
    row->set_org(e.org());
    row->set_name(e.name());
    row->set_broker(e.broker());
    row->set_route("local");
    if (!e.encryption_certificate().empty()) {
      row->set_encryption_certificate_sha256(
          sealing::Sha256Hex(e.encryption_certificate()));
    }
  }
  for (const PeerDirectory& d : exchange.router().Directory(now)) {
    for (const DirectoryEntry& e : d.entries) {
      if (!request.org().empty() && e.org != request.org()) continue;
      v1::DirectoryRow* row = response->add_rows();
      row->set_org(e.org);
      row->set_name(e.name);
      row->set_broker(e.broker);
      row->set_distance(e.distance);
      row->set_via_peer(d.peer);
      row->set_stale(d.stale);
      if (!e.encryption_certificate.empty()) {
        row->set_encryption_certificate_sha256(
            sealing::Sha256Hex(e.encryption_certificate));
      }
      absl::StatusOr<std::string> route =
          exchange.router().Route(e.org, {self->name}, now);
      row->set_route(route.ok() ? *route
                                : std::string(route.status().message()));
    }
  }
  *detail = absl::StrCat(response->rows_size(), " rows");
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoListQueues(
    const Principal& caller, const v1::ListQueuesRequest& request,
    v1::ListQueuesResponse* response, std::string* detail) {
  if (!options_.exchange) {
    return absl::FailedPreconditionError(
        "this broker serves no exchange to report on");
  }
  absl::Time now = absl::Now();
  uint64_t waiting = 0;
  for (const OrgQueueStats& q : options_.exchange->OrgStats()) {
    v1::QueueInfo* info = response->add_queues();
    info->set_org(q.org);
    info->set_waiting(q.waiting);
    info->set_in_flight(q.in_flight);
    if (q.oldest) policy::ToProto(now - *q.oldest, info->mutable_oldest_age());
    waiting += q.waiting;
  }
  *detail = absl::StrCat(response->queues_size(), " queues, ", waiting,
                         " copies waiting");
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoGetDocument(
    const Principal& caller, const v1::GetDocumentRequest& request,
    v1::GetDocumentResponse* response, std::string* detail) {
  if (!options_.exchange) {
    return absl::FailedPreconditionError(
        "this broker serves no exchange to report on");
  }
  *detail = request.document_id();
  ASSIGN_OR_RETURN(auto found,
                   options_.exchange->Inspect(request.document_id()));
  auto& [doc, status] = found;
  *response->mutable_status() = std::move(status);
  for (const v1::Hop& h : doc.trace()) *response->add_trace() = h;
  response->set_content_sha256(doc.content_sha256());
  uint64_t bytes = doc.body().size();
  for (const v1::Attachment& a : doc.attachments()) bytes += a.content().size();
  response->set_content_bytes(bytes);
  response->set_attachments(doc.attachments_size());
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoRotateStorageKeys(
    const Principal& caller, const v1::RotateStorageKeysRequest& request,
    v1::RotateStorageKeysResponse* response, std::string* detail) {
  if (!options_.store || !options_.read_storage_keys) {
    return absl::FailedPreconditionError(
        "this broker has no store keys to rotate");
  }
  ASSIGN_OR_RETURN(storage::EncryptionOptions keys,
                   options_.read_storage_keys());
  if (keys.master_key.empty()) {
    return absl::FailedPreconditionError(
        "storage.master_key_file is not set: encryption at rest is off; set "
        "it and restart to turn it on");
  }
  const storage::EncryptionInfo before = options_.store->Encryption();
  RETURN_IF_ERROR(options_.store->RotateKeys(keys));
  ToProto(options_.store->Encryption(), response->mutable_encryption());
  *detail = absl::StrCat("data key ", before.data_key_id, " -> ",
                         response->encryption().data_key_id(), ", master key ",
                         before.master_key_id, " -> ",
                         response->encryption().master_key_id());
  return absl::OkStatus();
}

absl::Status AdminServiceImpl::DoSetLogLevel(
    const Principal& caller, const v1::SetLogLevelRequest& request,
    v1::SetLogLevelResponse* response, std::string* detail) {
  absl::StatusOr<log::Level> level = log::ParseLevel(request.level());
  if (!level.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("level: ", level.status().message()));
  }
  response->set_previous(std::string(log::LevelName(log::GetLevel())));
  log::SetLevel(*level);
  response->set_level(std::string(log::LevelName(*level)));
  *detail = absl::StrCat(response->previous(), " -> ", response->level());
  return absl::OkStatus();
}

}  // namespace lienthong::broker
