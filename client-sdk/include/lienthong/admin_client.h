// The operator's side of Liên Thông: lienthong.v1.AdminService (policy get,
// validate, explain, apply, dry run, recent decisions, broker info; peers
// and directory) with a
// person certificate. The `lienthong policy ...` commands are built on it.
//
//   lienthong::ClientOptions options;
//   options.endpoints = {"broker.h49.example:7443"};
//   options.certificate_file = "operator.pem";  // spiffe://<td>/person/<id>
//   options.private_key_file = "operator.key";
//   options.ca_file = "ca.pem";
//   ASSIGN_OR_RETURN(std::unique_ptr<lienthong::AdminClient> admin,
//                    lienthong::AdminClient::Open(options));
//   lienthong::v1::ApplyPolicyRequest apply;
//   apply.set_source(policy_text);
//   ASSIGN_OR_RETURN(lienthong::v1::ApplyPolicyResponse applied,
//                    admin->ApplyPolicy(apply));
//
// Thread-safe. Each method returns the broker's answer, or its gRPC status
// translated to absl::Status with the same code and message:
// PERMISSION_DENIED when the person lacks the role (operators may call every
// method, auditors every one but ApplyPolicy), INVALID_ARGUMENT naming the
// field or "<file>:<line>:<column>: ..." for a policy that does not compile,
// UNAVAILABLE / DEADLINE_EXCEEDED when no endpoint answered within the retry
// budget. Every call is retried on UNAVAILABLE, failing over between
// endpoints; the read methods also on DEADLINE_EXCEEDED. ApplyPolicy is
// safe to repeat (applying the serving text again changes nothing) but is
// not retried after a deadline, so that its answer says what it did.
#ifndef LIENTHONG_ADMIN_CLIENT_H_
#define LIENTHONG_ADMIN_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "lienthong/client.h"
#include "lienthong/v1/admin.pb.h"
#include "lienthong/v1/approvals.pb.h"

namespace lienthong {

class AdminClient {
 public:
  // As Client::Open, except that the certificate must name a person
  // (exactly one URI SAN spiffe://<td>/person/<id>); the dedup options are
  // not used.
  static absl::StatusOr<std::unique_ptr<AdminClient>> Open(
      const ClientOptions& options);
  virtual ~AdminClient() = default;

  // The person id in this client's certificate.
  virtual const std::string& person() const = 0;

  virtual absl::StatusOr<v1::GetPolicyResponse> GetPolicy() = 0;
  virtual absl::StatusOr<v1::ValidatePolicyResponse> ValidatePolicy(
      const v1::ValidatePolicyRequest& request) = 0;
  virtual absl::StatusOr<v1::ExplainPolicyResponse> ExplainPolicy(
      const v1::ExplainPolicyRequest& request) = 0;
  virtual absl::StatusOr<v1::ApplyPolicyResponse> ApplyPolicy(
      const v1::ApplyPolicyRequest& request) = 0;
  virtual absl::StatusOr<v1::DryRunPolicyResponse> DryRunPolicy(
      const v1::DryRunPolicyRequest& request) = 0;
  virtual absl::StatusOr<v1::ListPolicyDecisionsResponse> ListPolicyDecisions(
      const v1::ListPolicyDecisionsRequest& request) = 0;
  virtual absl::StatusOr<v1::GetBrokerInfoResponse> GetBrokerInfo() = 0;
  // Federation: peers with link state and backlogs, and the directory.
  virtual absl::StatusOr<v1::ListPeersResponse> ListPeers() = 0;
  virtual absl::StatusOr<v1::ListDirectoryResponse> ListDirectory(
      const v1::ListDirectoryRequest& request) = 0;
  // Queues per organization; one document's route and history (not its
  // content); the log level (operators only).
  virtual absl::StatusOr<v1::ListQueuesResponse> ListQueues() = 0;
  virtual absl::StatusOr<v1::GetDocumentResponse> GetDocument(
      const v1::GetDocumentRequest& request) = 0;
  virtual absl::StatusOr<v1::SetLogLevelResponse> SetLogLevel(
      const v1::SetLogLevelRequest& request) = 0;
  // The tamper-evident audit log: verify it where it is stored, or export
  // one page of it (entries, checkpoints, the broker's certificate) for an
  // external auditor. Both calls are themselves audited.
  virtual absl::StatusOr<v1::VerifyAuditResponse> VerifyAudit() = 0;
  virtual absl::StatusOr<v1::ExportAuditResponse> ExportAudit(
      const v1::ExportAuditRequest& request) = 0;
  // Encryption at rest: a new data key, every key re-wrapped under the
  // master key the broker's files hold now. Operators only.
  virtual absl::StatusOr<v1::RotateStorageKeysResponse> RotateStorageKeys() = 0;
  // The evidence of one document, signed by the broker (see `lienthong
  // verify`). Operators and auditors; the call is audited.
  virtual absl::StatusOr<v1::EvidenceExport> ExportEvidence(
      const std::string& document_id) = 0;
  // The paper conversions of `org` recorded at this broker, newest first
  // (limit 0: 100). Operators and auditors.
  virtual absl::StatusOr<v1::ListPaperConversionsResponse> ListPaperConversions(
      const std::string& org, uint32_t limit) = 0;

  // lienthong.v1.ApprovalService: documents held for approval that this
  // person may approve (every held one for operators and auditors), and an
  // approver's decision on one. PERMISSION_DENIED without an approver role;
  // NOT_FOUND for a document not waiting for this person;
  // FAILED_PRECONDITION when `content_sha256` is not the document's. A
  // decision is not retried after a deadline (a repeat of a recorded one is
  // FAILED_PRECONDITION "already ..."). DecideApproval signs the request with
  // this person's key, first filling in its manifest_sha256 and the roles it
  // is given as (`as`) from ListApprovals when they are empty.
  virtual absl::StatusOr<v1::ListApprovalsResponse> ListApprovals(
      const v1::ListApprovalsRequest& request) = 0;
  virtual absl::StatusOr<v1::DecideApprovalResponse> DecideApproval(
      const v1::DecideApprovalRequest& request) = 0;

  // Incidents (lienthong.v1.IncidentService): declare and resolve
  // (operators only; not retried after DEADLINE_EXCEEDED), list every
  // incident and the reconciliation report of every organization
  // (operators and auditors).
  virtual absl::StatusOr<v1::Incident> DeclareIncident(
      const v1::DeclareIncidentRequest& request) = 0;
  virtual absl::StatusOr<v1::Incident> ResolveIncident(
      const v1::ResolveIncidentRequest& request) = 0;
  virtual absl::StatusOr<v1::ListIncidentsResponse> ListIncidents(
      const v1::ListIncidentsRequest& request) = 0;
  virtual absl::StatusOr<v1::ReconciliationReport> GetReconciliationReport(
      const v1::GetReconciliationReportRequest& request) = 0;
};

}  // namespace lienthong

#endif  // LIENTHONG_ADMIN_CLIENT_H_
