// lienthong.v1.AdminService: what operators and auditors call (the
// `lienthong policy ...` commands, grpcurl). Thin like the exchange service:
// reads the caller from the TLS auth context, checks the caller's role,
// converts the request, calls the policy engine on a small worker pool (never
// on a gRPC callback thread: compiling a candidate and applying a policy,
// which fsyncs a file, block), converts the answer and writes one audit line.
//
//   AdminOptions admin;
//   admin.broker_id = config.SpiffeId();
//   admin.version = "0.1.0";
//   admin.started_at = absl::Now();
//   admin.operators = {"spiffe://lienthong.local/person/operator"};
//   admin.auditors = {"spiffe://lienthong.local/person/auditor"};
//   admin.policy = served_policy.get();
//   RETURN_IF_ERROR(admin.Validate());
//   AdminServiceImpl admin_service(admin);
//   builder.RegisterService(&admin_service);
//
// Roles come from the broker's configuration, never from the client:
// operators may call every method; operators and auditors may call the read
// methods (everything but ApplyPolicy and SetLogLevel). Anyone else,
// organizations and brokers included, gets PERMISSION_DENIED naming the caller
// and the role needed. Every call, refused ones included, is written as one log
// line (component "audit": caller, peer, method, outcome, error, detail) and,
// when `audit` is set, appended to the tamper-evident audit log (reads of
// the audit log included) before the answer goes out.
#ifndef LIENTHONG_BROKER_ADMIN_SERVICE_H_
#define LIENTHONG_BROKER_ADMIN_SERVICE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "lienthong/broker/exchange.h"
#include "lienthong/broker/federation.h"
#include "lienthong/common/identity.h"
#include "lienthong/policy/policy.h"
#include "lienthong/signing/signing.h"
#include "lienthong/storage/store.h"
#include "lienthong/v1/admin.grpc.pb.h"

namespace lienthong::broker {

class WorkerPool;

struct AdminOptions {
  // SPIFFE id of this broker, e.g. "spiffe://lienthong.local/broker/central".
  // Callers must belong to its trust domain. Required.
  std::string broker_id;
  // The lienthongd release GetBrokerInfo reports, e.g. "0.1.0".
  std::string version;
  // When the broker started (GetBrokerInfo's uptime counts from it).
  absl::Time started_at = absl::Now();
  // SPIFFE ids of the persons with the operator role (every method) and the
  // auditor role (read methods). Default: none.
  std::vector<std::string> operators;
  std::vector<std::string> auditors;
  // The policy the broker serves. Not owned; must outlive the service.
  // Required.
  policy::ServedPolicy* policy = nullptr;
  // The exchange (peers, queues, directory) and the outgoing links. Not
  // owned; must outlive the service. Optional: without them ListPeers and
  // ListDirectory answer FAILED_PRECONDITION.
  Exchange* exchange = nullptr;
  PeerLinks* links = nullptr;
  // Incidents: GetBrokerInfo shows the open ones. Not owned. Optional.
  Incidents* incidents = nullptr;
  // The store (for GetBrokerInfo's data size). Optional.
  storage::Store* store = nullptr;
  // Reads the storage master key files afresh, for RotateStorageKeys.
  // Unset: RotateStorageKeys answers FAILED_PRECONDITION.
  std::function<absl::StatusOr<storage::EncryptionOptions>()> read_storage_keys;
  // The tamper-evident audit log: every call is appended to it, and
  // VerifyAudit / ExportAudit read it. Not owned; must outlive the service.
  // Optional: without it those two answer FAILED_PRECONDITION.
  AuditLog* audit = nullptr;
  // The broker's key, signing evidence (ExportEvidence). Optional: without
  // it ExportEvidence answers FAILED_PRECONDITION.
  std::shared_ptr<const signing::Signer> signer;
  // SHA-256 (hex) of the configuration file, or "embedded defaults".
  std::string config_sha256;
  // Threads for the blocking work of admin calls. Default 2.
  int worker_threads = 2;

  // INVALID_ARGUMENT naming the field: broker_id not a broker SPIFFE id,
  // a role member not a person of the same trust domain, no policy, fewer
  // than one worker thread.
  absl::Status Validate() const;
};

class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  // `options` must Validate() (checked: a bad one is a crash).
  explicit AdminServiceImpl(AdminOptions options);
  // Runs the admin work already queued, then returns. Destroy after the
  // server has shut down.
  ~AdminServiceImpl() override;

  grpc::ServerUnaryReactor* GetPolicy(grpc::CallbackServerContext* ctx,
                                      const v1::GetPolicyRequest* request,
                                      v1::GetPolicyResponse* response) override;
  grpc::ServerUnaryReactor* ValidatePolicy(
      grpc::CallbackServerContext* ctx,
      const v1::ValidatePolicyRequest* request,
      v1::ValidatePolicyResponse* response) override;
  grpc::ServerUnaryReactor* ExplainPolicy(
      grpc::CallbackServerContext* ctx, const v1::ExplainPolicyRequest* request,
      v1::ExplainPolicyResponse* response) override;
  grpc::ServerUnaryReactor* ApplyPolicy(
      grpc::CallbackServerContext* ctx, const v1::ApplyPolicyRequest* request,
      v1::ApplyPolicyResponse* response) override;
  grpc::ServerUnaryReactor* DryRunPolicy(
      grpc::CallbackServerContext* ctx, const v1::DryRunPolicyRequest* request,
      v1::DryRunPolicyResponse* response) override;
  grpc::ServerUnaryReactor* ListPolicyDecisions(
      grpc::CallbackServerContext* ctx,
      const v1::ListPolicyDecisionsRequest* request,
      v1::ListPolicyDecisionsResponse* response) override;
  grpc::ServerUnaryReactor* GetBrokerInfo(
      grpc::CallbackServerContext* ctx, const v1::GetBrokerInfoRequest* request,
      v1::GetBrokerInfoResponse* response) override;
  grpc::ServerUnaryReactor* ListPeers(grpc::CallbackServerContext* ctx,
                                      const v1::ListPeersRequest* request,
                                      v1::ListPeersResponse* response) override;
  grpc::ServerUnaryReactor* ListDirectory(
      grpc::CallbackServerContext* ctx, const v1::ListDirectoryRequest* request,
      v1::ListDirectoryResponse* response) override;
  grpc::ServerUnaryReactor* ListQueues(
      grpc::CallbackServerContext* ctx, const v1::ListQueuesRequest* request,
      v1::ListQueuesResponse* response) override;
  grpc::ServerUnaryReactor* GetDocument(
      grpc::CallbackServerContext* ctx, const v1::GetDocumentRequest* request,
      v1::GetDocumentResponse* response) override;
  grpc::ServerUnaryReactor* SetLogLevel(
      grpc::CallbackServerContext* ctx, const v1::SetLogLevelRequest* request,
      v1::SetLogLevelResponse* response) override;
  grpc::ServerUnaryReactor* RotateStorageKeys(
      grpc::CallbackServerContext* ctx,
      const v1::RotateStorageKeysRequest* request,
      v1::RotateStorageKeysResponse* response) override;
  grpc::ServerUnaryReactor* VerifyAudit(
      grpc::CallbackServerContext* ctx, const v1::VerifyAuditRequest* request,
      v1::VerifyAuditResponse* response) override;
  grpc::ServerUnaryReactor* ExportAudit(
      grpc::CallbackServerContext* ctx, const v1::ExportAuditRequest* request,
      v1::ExportAuditResponse* response) override;
  grpc::ServerUnaryReactor* ExportEvidence(
      grpc::CallbackServerContext* ctx,
      const v1::ExportEvidenceRequest* request,
      v1::EvidenceExport* response) override;
  grpc::ServerUnaryReactor* ListPaperConversions(
      grpc::CallbackServerContext* ctx,
      const v1::ListOrgPaperConversionsRequest* request,
      v1::ListPaperConversionsResponse* response) override;

 private:
  // Who may call a method.
  enum class Access { kRead, kOperate };

  // The roles the configuration gives `caller`: "operator", "auditor".
  std::vector<std::string> RolesOf(const Principal& caller) const;
  // PERMISSION_DENIED naming the caller, the method and the role needed.
  absl::Status Authorize(const Principal& caller, absl::string_view method,
                         Access access) const;

  // Authenticates and authorizes, then runs `work` on the pool and finishes
  // with its status; audits the outcome either way. `work` may fill
  // `detail` with what the audit line should say beyond the outcome.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Handle(
      grpc::CallbackServerContext* ctx, absl::string_view method, Access access,
      const Request* request, Response* response,
      absl::Status (AdminServiceImpl::*work)(const Principal&, const Request&,
                                             Response*, std::string*));

  absl::Status DoGetPolicy(const Principal& caller,
                           const v1::GetPolicyRequest& request,
                           v1::GetPolicyResponse* response,
                           std::string* detail);
  absl::Status DoValidatePolicy(const Principal& caller,
                                const v1::ValidatePolicyRequest& request,
                                v1::ValidatePolicyResponse* response,
                                std::string* detail);
  absl::Status DoExplainPolicy(const Principal& caller,
                               const v1::ExplainPolicyRequest& request,
                               v1::ExplainPolicyResponse* response,
                               std::string* detail);
  absl::Status DoApplyPolicy(const Principal& caller,
                             const v1::ApplyPolicyRequest& request,
                             v1::ApplyPolicyResponse* response,
                             std::string* detail);
  absl::Status DoDryRunPolicy(const Principal& caller,
                              const v1::DryRunPolicyRequest& request,
                              v1::DryRunPolicyResponse* response,
                              std::string* detail);
  absl::Status DoListPolicyDecisions(
      const Principal& caller, const v1::ListPolicyDecisionsRequest& request,
      v1::ListPolicyDecisionsResponse* response, std::string* detail);
  absl::Status DoGetBrokerInfo(const Principal& caller,
                               const v1::GetBrokerInfoRequest& request,
                               v1::GetBrokerInfoResponse* response,
                               std::string* detail);
  absl::Status DoListPeers(const Principal& caller,
                           const v1::ListPeersRequest& request,
                           v1::ListPeersResponse* response,
                           std::string* detail);
  absl::Status DoListDirectory(const Principal& caller,
                               const v1::ListDirectoryRequest& request,
                               v1::ListDirectoryResponse* response,
                               std::string* detail);
  absl::Status DoListQueues(const Principal& caller,
                            const v1::ListQueuesRequest& request,
                            v1::ListQueuesResponse* response,
                            std::string* detail);
  absl::Status DoGetDocument(const Principal& caller,
                             const v1::GetDocumentRequest& request,
                             v1::GetDocumentResponse* response,
                             std::string* detail);
  absl::Status DoRotateStorageKeys(const Principal& caller,
                                   const v1::RotateStorageKeysRequest& request,
                                   v1::RotateStorageKeysResponse* response,
                                   std::string* detail);
  absl::Status DoVerifyAudit(const Principal& caller,
                             const v1::VerifyAuditRequest& request,
                             v1::VerifyAuditResponse* response,
                             std::string* detail);
  absl::Status DoExportAudit(const Principal& caller,
                             const v1::ExportAuditRequest& request,
                             v1::ExportAuditResponse* response,
                             std::string* detail);
  absl::Status DoExportEvidence(const Principal& caller,
                                const v1::ExportEvidenceRequest& request,
                                v1::EvidenceExport* response,
                                std::string* detail);
  absl::Status DoListPaperConversions(
      const Principal& caller,
      const v1::ListOrgPaperConversionsRequest& request,
      v1::ListPaperConversionsResponse* response, std::string* detail);
  // One log line, and one audit entry when options_.audit is set; `done`
  // runs once the entry is durable (at once without an audit log).
  void Audit(absl::string_view caller, absl::string_view peer,
             absl::string_view method, Access access,
             const absl::Status& outcome, absl::string_view detail,
             absl::string_view document_id, absl::AnyInvocable<void()> done);
  absl::Status DoSetLogLevel(const Principal& caller,
                             const v1::SetLogLevelRequest& request,
                             v1::SetLogLevelResponse* response,
                             std::string* detail);

  const AdminOptions options_;
  std::string trust_domain_;  // of options_.broker_id
  absl::flat_hash_set<std::string> operators_;
  absl::flat_hash_set<std::string> auditors_;
  std::unique_ptr<WorkerPool> pool_;  // last: drained before the rest goes
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_ADMIN_SERVICE_H_
