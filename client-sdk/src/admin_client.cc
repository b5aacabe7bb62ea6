// AdminClient::Open and its implementation: one unary call per method
// through Connection::CallAdmin.
#include "lienthong/admin_client.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <utility>

#include "client-sdk/src/connection.h"
#include "client-sdk/src/status.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/signing/signing.h"

namespace lienthong {
namespace client_internal {
namespace {

class AdminClientImpl final : public AdminClient {
 public:
  explicit AdminClientImpl(std::shared_ptr<Connection> connection)
      : connection_(std::move(connection)) {}

  const std::string& person() const override { return connection_->org(); }

  absl::StatusOr<v1::GetPolicyResponse> GetPolicy() override {
    return Read(v1::GetPolicyRequest(), &Connection::AdminStub::GetPolicy);
  }
  absl::StatusOr<v1::ValidatePolicyResponse> ValidatePolicy(
      const v1::ValidatePolicyRequest& request) override {
    return Read(request, &Connection::AdminStub::ValidatePolicy);
  }
  absl::StatusOr<v1::ExplainPolicyResponse> ExplainPolicy(
      const v1::ExplainPolicyRequest& request) override {
    return Read(request, &Connection::AdminStub::ExplainPolicy);
  }
  absl::StatusOr<v1::ApplyPolicyResponse> ApplyPolicy(
      const v1::ApplyPolicyRequest& request) override {
    return Unary(RetryOn::kUnavailable, request,
                 &Connection::AdminStub::ApplyPolicy);
  }
  absl::StatusOr<v1::DryRunPolicyResponse> DryRunPolicy(
      const v1::DryRunPolicyRequest& request) override {
    return Read(request, &Connection::AdminStub::DryRunPolicy);
  }
  absl::StatusOr<v1::ListPolicyDecisionsResponse> ListPolicyDecisions(
      const v1::ListPolicyDecisionsRequest& request) override {
    return Read(request, &Connection::AdminStub::ListPolicyDecisions);
  }
  absl::StatusOr<v1::GetBrokerInfoResponse> GetBrokerInfo() override {
    return Read(v1::GetBrokerInfoRequest(),
                &Connection::AdminStub::GetBrokerInfo);
  }
  absl::StatusOr<v1::ListPeersResponse> ListPeers() override {
    return Read(v1::ListPeersRequest(), &Connection::AdminStub::ListPeers);
  }
  absl::StatusOr<v1::ListDirectoryResponse> ListDirectory(
      const v1::ListDirectoryRequest& request) override {
    return Read(request, &Connection::AdminStub::ListDirectory);
  }
  absl::StatusOr<v1::ListQueuesResponse> ListQueues() override {
    return Read(v1::ListQueuesRequest(), &Connection::AdminStub::ListQueues);
  }
  absl::StatusOr<v1::GetDocumentResponse> GetDocument(
      const v1::GetDocumentRequest& request) override {
    return Read(request, &Connection::AdminStub::GetDocument);
  }
  // Setting the same level twice does the same: safe to repeat.
  absl::StatusOr<v1::SetLogLevelResponse> SetLogLevel(
      const v1::SetLogLevelRequest& request) override {
    return Read(request, &Connection::AdminStub::SetLogLevel);
  }
  absl::StatusOr<v1::VerifyAuditResponse> VerifyAudit() override {
    return Read(v1::VerifyAuditRequest(), &Connection::AdminStub::VerifyAudit);
  }
  absl::StatusOr<v1::ExportAuditResponse> ExportAudit(
      const v1::ExportAuditRequest& request) override {
    return Read(request, &Connection::AdminStub::ExportAudit);
  }
  absl::StatusOr<v1::EvidenceExport> ExportEvidence(
      const std::string& document_id) override {
    v1::ExportEvidenceRequest request;
    request.set_document_id(document_id);
    return Read(request, &Connection::AdminStub::ExportEvidence);
  }
  absl::StatusOr<v1::ListPaperConversionsResponse> ListPaperConversions(
      const std::string& org, uint32_t limit) override {
    v1::ListOrgPaperConversionsRequest request;
    request.set_org(org);
    request.set_limit(limit);
    return Read(request, &Connection::AdminStub::ListPaperConversions);
  }
  absl::StatusOr<v1::RotateStorageKeysResponse> RotateStorageKeys() override {
    // A repeat only rotates once more: harmless.
    return Read(v1::RotateStorageKeysRequest(),
                &Connection::AdminStub::RotateStorageKeys);
  }

  absl::StatusOr<v1::ListApprovalsResponse> ListApprovals(
      const v1::ListApprovalsRequest& request) override {
    v1::ListApprovalsResponse response;
    absl::Status status = connection_->CallApproval(
        RetryOn::kUnavailableOrDeadline,
        [&](v1::ApprovalService::Stub& stub, grpc::ClientContext& context) {
          response.Clear();
          return stub.ListApprovals(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response;
  }
  absl::StatusOr<v1::DecideApprovalResponse> DecideApproval(
      const v1::DecideApprovalRequest& unsigned_request) override {
    // The person signs what it decides with its own certificate's key (one
    // that comes signed, by a key held elsewhere, goes as it is).
    v1::DecideApprovalRequest request = unsigned_request;
    if (!request.has_signature()) {
      if (request.manifest_sha256().empty() || request.as().empty()) {
        // The document as its sender signed it, and the roles the decision
        // is given as, as listed for approval: what the signature binds the
        // decision to.
        v1::ListApprovalsRequest list;
        list.set_limit(1000);
        ASSIGN_OR_RETURN(v1::ListApprovalsResponse waiting,
                         ListApprovals(list));
        for (const v1::PendingApproval& p : waiting.approvals()) {
          if (p.document_id() != request.document_id()) continue;
          if (request.manifest_sha256().empty())
            request.set_manifest_sha256(p.manifest_sha256());
          if (request.as().empty()) *request.mutable_as() = p.yours();
        }
        if (request.manifest_sha256().empty() || request.as().empty()) {
          return absl::NotFoundError(
              absl::StrCat("document ", request.document_id(),
                           " is not waiting for an approval by this person"));
        }
      }
      const ClientOptions& o = connection_->options();
      ASSIGN_OR_RETURN(
          std::unique_ptr<signing::Signer> signer,
          signing::Signer::FromFiles(o.certificate_file, o.private_key_file));
      ASSIGN_OR_RETURN(
          *request.mutable_signature(),
          signer->Sign(signing::ApprovalDigest(
                           request.document_id(), request.manifest_sha256(),
                           request.content_sha256(), request.decision(),
                           request.comment(), request.as()),
                       absl::Now()));
    }
    v1::DecideApprovalResponse response;
    absl::Status status = connection_->CallApproval(
        RetryOn::kUnavailable,
        [&](v1::ApprovalService::Stub& stub, grpc::ClientContext& context) {
          response.Clear();
          return stub.DecideApproval(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response;
  }

 private:
  template <typename Request, typename Response>
  using Method = grpc::Status (Connection::AdminStub::*)(grpc::ClientContext*,
                                                         const Request&,
                                                         Response*);

  template <typename Request, typename Response>
  absl::StatusOr<Response> Unary(RetryOn retry_on, const Request& request,
                                 Method<Request, Response> method) {
    Response response;
    absl::Status status = connection_->CallAdmin(
        retry_on,
        [&](Connection::AdminStub& stub, grpc::ClientContext& context) {
          response.Clear();
          return (stub.*method)(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response;
  }

  absl::StatusOr<v1::Incident> DeclareIncident(
      const v1::DeclareIncidentRequest& request) override {
    return Incidents(RetryOn::kUnavailable, request,
                     &Connection::IncidentStub::DeclareIncident);
  }
  absl::StatusOr<v1::Incident> ResolveIncident(
      const v1::ResolveIncidentRequest& request) override {
    return Incidents(RetryOn::kUnavailable, request,
                     &Connection::IncidentStub::ResolveIncident);
  }
  absl::StatusOr<v1::ListIncidentsResponse> ListIncidents(
      const v1::ListIncidentsRequest& request) override {
    return Incidents(RetryOn::kUnavailableOrDeadline, request,
                     &Connection::IncidentStub::ListIncidents);
  }
  absl::StatusOr<v1::ReconciliationReport> GetReconciliationReport(
      const v1::GetReconciliationReportRequest& request) override {
    return Incidents(RetryOn::kUnavailableOrDeadline, request,
                     &Connection::IncidentStub::GetReconciliationReport);
  }

  template <typename Request, typename Response>
  absl::StatusOr<Response> Incidents(
      RetryOn retry_on, const Request& request,
      grpc::Status (Connection::IncidentStub::*method)(grpc::ClientContext*,
                                                       const Request&,
                                                       Response*)) {
    Response response;
    absl::Status status = connection_->CallIncidents(
        retry_on,
        [&](Connection::IncidentStub& stub, grpc::ClientContext& context) {
          response.Clear();
          return (stub.*method)(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response;
  }

  // Reads change nothing at the broker: repeating them is harmless.
  template <typename Request, typename Response>
  absl::StatusOr<Response> Read(const Request& request,
                                Method<Request, Response> method) {
    return Unary(RetryOn::kUnavailableOrDeadline, request, method);
  }

  const std::shared_ptr<Connection> connection_;
};

}  // namespace
}  // namespace client_internal

absl::StatusOr<std::unique_ptr<AdminClient>> AdminClient::Open(
    const ClientOptions& options) {
  ClientOptions admin = options;
  admin.dedup_state_file.clear();  // an admin client receives no documents
  admin.dedup_capacity = 1;
  absl::StatusOr<std::shared_ptr<client_internal::Connection>> connection =
      client_internal::Connection::Open(admin, Principal::Kind::kPerson);
  if (!connection.ok()) return connection.status();
  return std::unique_ptr<AdminClient>(
      std::make_unique<client_internal::AdminClientImpl>(
          *std::move(connection)));
}

}  // namespace lienthong
