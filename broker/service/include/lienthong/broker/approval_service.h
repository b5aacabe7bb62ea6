// lienthong.v1.ApprovalService: what approvers call (the `lienthong
// approvals` commands, grpcurl) to list held documents and approve or reject
// them. Thin: reads the caller from the TLS auth context, calls the exchange
// (which knows the approver roles and records decisions as status events
// in the audit log) and translates its status. Operators and auditors may
// list every held document; only approvers decide.
//
//   ApprovalServiceImpl approvals(exchange.get(), "lienthong.local",
//                                 operators_and_auditors);
//   builder.RegisterService(&approvals);
//
// A refused call (no approver role, a document not waiting for the caller)
// is written to the audit log when `audit` is set. Thread-safe.
#ifndef LIENTHONG_BROKER_APPROVAL_SERVICE_H_
#define LIENTHONG_BROKER_APPROVAL_SERVICE_H_

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "lienthong/broker/audit.h"
#include "lienthong/broker/exchange.h"
#include "lienthong/v1/approvals.grpc.pb.h"

namespace lienthong::broker {

class ApprovalServiceImpl final : public v1::ApprovalService::CallbackService {
 public:
  // `exchange` and `audit` (optional) are not owned and must outlive the
  // service. `readers`: SPIFFE ids of the persons who may list every held
  // document (the operators and auditors).
  ApprovalServiceImpl(Exchange* exchange, std::string trust_domain,
                      std::vector<std::string> readers,
                      AuditLog* audit = nullptr);

  grpc::ServerUnaryReactor* ListApprovals(
      grpc::CallbackServerContext* ctx, const v1::ListApprovalsRequest* request,
      v1::ListApprovalsResponse* response) override;
  grpc::ServerUnaryReactor* DecideApproval(
      grpc::CallbackServerContext* ctx,
      const v1::DecideApprovalRequest* request,
      v1::DecideApprovalResponse* response) override;

 private:
  // Audits a call of `method` that ended with `outcome` (`detail` says
  // more of a success).
  void Audit(const Principal& caller, absl::string_view peer,
             absl::string_view method, const std::string& document_id,
             const absl::Status& outcome, absl::string_view detail = "");

  Exchange* const exchange_;
  const std::string trust_domain_;
  const absl::flat_hash_set<std::string> readers_;
  AuditLog* const audit_;
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_APPROVAL_SERVICE_H_
