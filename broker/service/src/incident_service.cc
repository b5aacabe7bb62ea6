#include "lienthong/broker/incident_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "lienthong/broker/executor.h"
#include "lienthong/broker/service.h"
#include "lienthong/common/log.h"

namespace lienthong::broker {
namespace {

void LogCall(absl::string_view caller, absl::string_view peer,
             absl::string_view method, const absl::Status& outcome) {
  log::Fields fields = {{"caller", std::string(caller)},
                        {"peer", std::string(peer)},
                        {"method", std::string(method)},
                        {"outcome", absl::StatusCodeToString(outcome.code())}};
  if (!outcome.ok())
    fields.emplace_back("error", std::string(outcome.message()));
  log::Write(log::Level::kInfo, "audit", "", fields);
}

}  // namespace

IncidentServiceImpl::IncidentServiceImpl(IncidentServiceOptions options)
    : options_(std::move(options)),
      operators_(options_.operators.begin(), options_.operators.end()),
      auditors_(options_.auditors.begin(), options_.auditors.end()),
      pool_(
          std::make_unique<WorkerPool>(std::max(1, options_.worker_threads))) {}

IncidentServiceImpl::~IncidentServiceImpl() { pool_->WaitIdle(); }

template <typename Request, typename Response>
grpc::ServerUnaryReactor* IncidentServiceImpl::Handle(
    grpc::CallbackServerContext* ctx, absl::string_view method, Access access,
    const Request* request, Response* response,
    absl::AnyInvocable<absl::StatusOr<Response>(const Principal&,
                                                const Request&, bool)>
        work) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const std::string peer = ctx->peer();
  const std::string full_method = absl::StrCat("IncidentService/", method);
  std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
  absl::StatusOr<Principal> caller =
      AuthenticateCaller(auth.get(), options_.trust_domain, peer, full_method);
  if (!caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  const bool is_person = caller->kind == Principal::Kind::kPerson;
  const bool is_operator = is_person && operators_.contains(caller->spiffe_id);
  const bool is_auditor = is_person && auditors_.contains(caller->spiffe_id);
  const bool see_all = is_operator || is_auditor;
  absl::Status allowed;
  if (access == Access::kOperate && !is_operator) {
    allowed = absl::PermissionDeniedError(absl::StrCat(
        caller->spiffe_id, " may not call ", method,
        ": it needs the operator role (roles are given to persons in the "
        "broker's configuration)"));
  } else if (access == Access::kRead && !see_all && !caller->is_org()) {
    allowed = absl::PermissionDeniedError(absl::StrCat(
        caller->spiffe_id, " may not call ", method,
        ": it needs the operator or auditor role, or to be an organization"));
  }
  pool_->Submit([this, reactor, request, response, access, see_all, peer,
                 full_method, allowed, caller = *std::move(caller),
                 work = std::move(work)]() mutable {
    absl::Status status = allowed;
    if (status.ok()) {
      absl::StatusOr<Response> r = work(caller, *request, see_all);
      if (r.ok()) {
        *response = *std::move(r);
      } else {
        status = r.status();
      }
    }
    LogCall(caller.spiffe_id, peer, full_method, status);
    // Successful changes were audited by the core with the change itself.
    const bool audit =
        options_.audit != nullptr && (!status.ok() || access == Access::kRead);
    if (!audit) {
      reactor->Finish(ToGrpcStatus(status));
      return;
    }
    v1::AuditEntry e;
    e.set_kind(access == Access::kRead && status.ok()
                   ? v1::AUDIT_KIND_ADMIN_READ
                   : v1::AUDIT_KIND_INCIDENT);
    e.set_actor(caller.spiffe_id);
    e.set_peer(peer);
    e.set_action(full_method);
    if (caller.is_org()) e.set_org(caller.name);
    e.set_outcome(absl::StatusCodeToString(status.code()));
    e.set_detail(std::string(status.message()));
    options_.audit->Append(std::move(e), [reactor, status](absl::Status) {
      reactor->Finish(ToGrpcStatus(status));
    });
  });
  return reactor;
}

grpc::ServerUnaryReactor* IncidentServiceImpl::DeclareIncident(
    grpc::CallbackServerContext* ctx, const v1::DeclareIncidentRequest* request,
    v1::Incident* response) {
  return Handle<v1::DeclareIncidentRequest, v1::Incident>(
      ctx, "DeclareIncident", Access::kOperate, request, response,
      [this](const Principal& caller, const v1::DeclareIncidentRequest& r,
             bool) { return options_.incidents->Declare(caller, r); });
}

grpc::ServerUnaryReactor* IncidentServiceImpl::ResolveIncident(
    grpc::CallbackServerContext* ctx, const v1::ResolveIncidentRequest* request,
    v1::Incident* response) {
  return Handle<v1::ResolveIncidentRequest, v1::Incident>(
      ctx, "ResolveIncident", Access::kOperate, request, response,
      [this](const Principal& caller, const v1::ResolveIncidentRequest& r,
             bool) { return options_.incidents->Resolve(caller, r); });
}

grpc::ServerUnaryReactor* IncidentServiceImpl::ListIncidents(
    grpc::CallbackServerContext* ctx, const v1::ListIncidentsRequest* request,
    v1::ListIncidentsResponse* response) {
  return Handle<v1::ListIncidentsRequest, v1::ListIncidentsResponse>(
      ctx, "ListIncidents", Access::kRead, request, response,
      [this](const Principal& caller, const v1::ListIncidentsRequest& r,
             bool see_all) {
        return options_.incidents->List(caller, r, see_all);
      });
}

grpc::ServerUnaryReactor* IncidentServiceImpl::RecordPaperDocument(
    grpc::CallbackServerContext* ctx,
    const v1::RecordPaperDocumentRequest* request,
    v1::PaperRegisterEntry* response) {
  return Handle<v1::RecordPaperDocumentRequest, v1::PaperRegisterEntry>(
      ctx, "RecordPaperDocument", Access::kRecord, request, response,
      [this](const Principal& caller, const v1::RecordPaperDocumentRequest& r,
             bool) { return options_.incidents->RecordPaper(caller, r); });
}

grpc::ServerUnaryReactor* IncidentServiceImpl::ListPaperRegister(
    grpc::CallbackServerContext* ctx,
    const v1::ListPaperRegisterRequest* request,
    v1::ListPaperRegisterResponse* response) {
  return Handle<v1::ListPaperRegisterRequest, v1::ListPaperRegisterResponse>(
      ctx, "ListPaperRegister", Access::kRead, request, response,
      [this](const Principal& caller, const v1::ListPaperRegisterRequest& r,
             bool see_all) {
        return options_.incidents->ListRegister(caller, r, see_all);
      });
}

grpc::ServerUnaryReactor* IncidentServiceImpl::GetReconciliationReport(
    grpc::CallbackServerContext* ctx,
    const v1::GetReconciliationReportRequest* request,
    v1::ReconciliationReport* response) {
  return Handle<v1::GetReconciliationReportRequest, v1::ReconciliationReport>(
      ctx, "GetReconciliationReport", Access::kRead, request, response,
      [this](const Principal& caller,
             const v1::GetReconciliationReportRequest& r, bool see_all) {
        return options_.incidents->Report(caller, r, see_all);
      });
}

}  // namespace lienthong::broker
