// lienthong.v1.IncidentService: operators declare and resolve incidents
// (grpcurl), agencies record the documents they handle on paper meanwhile
// (SDK, `lienthong paper ...`). Thin: reads the caller from the TLS auth
// context, checks the role the configuration gives it, calls
// broker::Incidents on a small worker pool (its writes are synced), and
// translates the status.
//
//   IncidentServiceOptions o;
//   o.trust_domain = "lienthong.local";
//   o.operators = {"spiffe://lienthong.local/person/operator"};
//   o.incidents = incidents.get();
//   IncidentServiceImpl service(o);
//   builder.RegisterService(&service);
//
// Changes are audited by the core with the change itself; refused calls and
// reads are audited here (AUDIT_KIND_ADMIN_READ / the refusal's outcome).
#ifndef LIENTHONG_BROKER_INCIDENT_SERVICE_H_
#define LIENTHONG_BROKER_INCIDENT_SERVICE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "grpcpp/grpcpp.h"
#include "lienthong/broker/audit.h"
#include "lienthong/broker/incidents.h"
#include "lienthong/v1/incidents.grpc.pb.h"

namespace lienthong::broker {

class WorkerPool;

struct IncidentServiceOptions {
  // Callers must belong to it. Required.
  std::string trust_domain;
  // SPIFFE ids of the persons with the operator role (declare, resolve,
  // read everything) and the auditor role (read everything).
  std::vector<std::string> operators;
  std::vector<std::string> auditors;
  // Not owned; must outlive the service. Required.
  Incidents* incidents = nullptr;
  // Reads and refusals are appended here. Not owned. Optional.
  AuditLog* audit = nullptr;
  // Threads for the blocking work. Default 2.
  int worker_threads = 2;
};

class IncidentServiceImpl final : public v1::IncidentService::CallbackService {
 public:
  explicit IncidentServiceImpl(IncidentServiceOptions options);
  // Runs the work already queued, then returns. Destroy after the server
  // has shut down.
  ~IncidentServiceImpl() override;

  grpc::ServerUnaryReactor* DeclareIncident(
      grpc::CallbackServerContext* ctx,
      const v1::DeclareIncidentRequest* request,
      v1::Incident* response) override;
  grpc::ServerUnaryReactor* ResolveIncident(
      grpc::CallbackServerContext* ctx,
      const v1::ResolveIncidentRequest* request,
      v1::Incident* response) override;
  grpc::ServerUnaryReactor* ListIncidents(
      grpc::CallbackServerContext* ctx, const v1::ListIncidentsRequest* request,
      v1::ListIncidentsResponse* response) override;
  grpc::ServerUnaryReactor* RecordPaperDocument(
      grpc::CallbackServerContext* ctx,
      const v1::RecordPaperDocumentRequest* request,
      v1::PaperRegisterEntry* response) override;
  grpc::ServerUnaryReactor* ListPaperRegister(
      grpc::CallbackServerContext* ctx,
      const v1::ListPaperRegisterRequest* request,
      v1::ListPaperRegisterResponse* response) override;
  grpc::ServerUnaryReactor* GetReconciliationReport(
      grpc::CallbackServerContext* ctx,
      const v1::GetReconciliationReportRequest* request,
      v1::ReconciliationReport* response) override;

 private:
  // Who may call: operators only (a change); operators, auditors and
  // organizations (a read); an organization's own change (the core checks
  // the caller).
  enum class Access { kOperate, kRead, kRecord };
  // Authenticates and authorizes, then runs `work` on the pool with
  // `see_all` (the caller is an operator or auditor); audits reads and
  // refusals; finishes with the translated status.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Handle(grpc::CallbackServerContext* ctx,
                                   absl::string_view method, Access access,
                                   const Request* request, Response* response,
                                   absl::AnyInvocable<absl::StatusOr<Response>(
                                       const Principal&, const Request&, bool)>
                                       work);

  const IncidentServiceOptions options_;
  absl::flat_hash_set<std::string> operators_;
  absl::flat_hash_set<std::string> auditors_;
  std::unique_ptr<WorkerPool> pool_;  // last: drained before the rest goes
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_INCIDENT_SERVICE_H_
