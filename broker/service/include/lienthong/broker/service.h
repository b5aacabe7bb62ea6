// The gRPC face of the broker: a thin layer that reads the caller's identity
// from the TLS auth context, calls the core, and translates its status.
//
//   ExchangeServiceImpl exchange_service(exchange.get(), "lienthong.local");
//   HealthServiceImpl health;
//   builder.RegisterService(&exchange_service);
//   builder.RegisterService(&health);
#ifndef LIENTHONG_BROKER_SERVICE_H_
#define LIENTHONG_BROKER_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "lienthong/broker/audit.h"
#include "lienthong/broker/exchange.h"
#include "lienthong/common/identity.h"
#include "lienthong/signing/signing.h"
#include "lienthong/v1/exchange.grpc.pb.h"

namespace lienthong::broker {

class StreamRegistry;

// The one translation of core statuses to gRPC: same code, same message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The caller named by the single SPIFFE URI SAN of its client certificate.
// UNAUTHENTICATED when there is no certificate, no or several URI SANs, a
// URI that is not a Liên Thông identity, or another trust domain.
absl::StatusOr<Principal> AuthenticatedPrincipal(
    const grpc::AuthContext& auth, absl::string_view trust_domain);
// The same, of the URI SANs of a client certificate OpenSSL verified
// (common/certificate.h CertificateUris), for connections outside gRPC.
absl::StatusOr<Principal> PrincipalOfCertificateUris(
    const std::vector<std::string>& uris, absl::string_view trust_domain);

// Where failed authentications are recorded (AUDIT_KIND_AUTH_FAILED, with
// the peer address, the method and why), for every service of the process.
// Null (the default): nowhere. `log` must outlive the server's calls.
// Thread-safe.
void SetAuthenticationAudit(AuditLog* log);
// AuthenticatedPrincipal (`auth` may be null: UNAUTHENTICATED), recording a
// failure in the log SetAuthenticationAudit named.
absl::StatusOr<Principal> AuthenticateCaller(const grpc::AuthContext* auth,
                                             absl::string_view trust_domain,
                                             absl::string_view peer,
                                             absl::string_view method);
// Records a failed authentication seen elsewhere.
void AuditAuthenticationFailure(absl::string_view peer,
                                absl::string_view method,
                                const absl::Status& why);

// Signs `receipts` as one batch (one ECDSA signature over their Merkle
// root) with the broker's key. INTERNAL when the crypto library fails.
absl::Status SignReceipts(const signing::Signer& signer,
                          const std::vector<v1::CustodyReceipt*>& receipts);
// Signs the evidence's receipt, then the evidence as a whole.
absl::StatusOr<v1::EvidenceExport> SignEvidence(const signing::Signer& signer,
                                                v1::Evidence evidence);

class ReceiptBatcher;

class ExchangeServiceImpl final : public v1::ExchangeService::CallbackService {
 public:
  // `exchange` is not owned and must outlive the server. `signer` (the
  // broker's key) signs custody receipts and evidence; without it receipts
  // go unsigned and GetEvidence is FAILED_PRECONDITION. Receipts of every
  // send share one signature per batch, at most one batch per
  // `receipt_batch_interval` (a receipt waits at most that long). Destroy
  // after the server shut down.
  ExchangeServiceImpl(
      Exchange* exchange, std::string trust_domain,
      std::shared_ptr<const signing::Signer> signer = nullptr,
      absl::Duration receipt_batch_interval = absl::Milliseconds(5));
  ~ExchangeServiceImpl() override;

  // Ends every open stream (Receive, WatchStatus, SendStream) with
  // UNAVAILABLE once its answers are written, and every new one at once.
  // Call before grpc::Server::Shutdown so it need not wait out its grace.
  void Shutdown();

  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* ctx,
                                 const v1::SendRequest* request,
                                 v1::SendResponse* response) override;
  grpc::ServerBidiReactor<v1::SendStreamRequest, v1::SendStreamResponse>*
  SendStream(grpc::CallbackServerContext* ctx) override;
  grpc::ServerBidiReactor<v1::ReceiveRequest, v1::ReceiveResponse>* Receive(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* Fetch(grpc::CallbackServerContext* ctx,
                                  const v1::FetchRequest* request,
                                  v1::FetchResponse* response) override;
  grpc::ServerUnaryReactor* Ack(grpc::CallbackServerContext* ctx,
                                const v1::AckRequest* request,
                                v1::AckResponse* response) override;
  grpc::ServerUnaryReactor* ListInbox(grpc::CallbackServerContext* ctx,
                                      const v1::ListInboxRequest* request,
                                      v1::ListInboxResponse* response) override;
  grpc::ServerUnaryReactor* ReportStatus(
      grpc::CallbackServerContext* ctx, const v1::ReportStatusRequest* request,
      v1::ReportStatusResponse* response) override;
  grpc::ServerUnaryReactor* GetDocumentStatus(
      grpc::CallbackServerContext* ctx,
      const v1::GetDocumentStatusRequest* request,
      v1::DocumentStatus* response) override;
  grpc::ServerWriteReactor<v1::StatusEvent>* WatchStatus(
      grpc::CallbackServerContext* ctx,
      const v1::WatchStatusRequest* request) override;
  grpc::ServerUnaryReactor* PublishEncryptionCertificate(
      grpc::CallbackServerContext* ctx,
      const v1::PublishEncryptionCertificateRequest* request,
      v1::PublishEncryptionCertificateResponse* response) override;
  grpc::ServerUnaryReactor* GetEncryptionCertificates(
      grpc::CallbackServerContext* ctx,
      const v1::GetEncryptionCertificatesRequest* request,
      v1::GetEncryptionCertificatesResponse* response) override;
  grpc::ServerUnaryReactor* GetEvidence(grpc::CallbackServerContext* ctx,
                                        const v1::GetEvidenceRequest* request,
                                        v1::EvidenceExport* response) override;
  grpc::ServerUnaryReactor* RecordPaperConversion(
      grpc::CallbackServerContext* ctx,
      const v1::RecordPaperConversionRequest* request,
      v1::RecordPaperConversionResponse* response) override;
  grpc::ServerUnaryReactor* ListPaperConversions(
      grpc::CallbackServerContext* ctx,
      const v1::ListPaperConversionsRequest* request,
      v1::ListPaperConversionsResponse* response) override;

 private:
  absl::StatusOr<Principal> Caller(grpc::CallbackServerContext* ctx) const;
  // Authenticates, calls `method` of the core, finishes with its answer.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Unary(
      grpc::CallbackServerContext* ctx, const Request* request,
      Response* response,
      void (Exchange::*method)(const Principal&, const Request&,
                               Exchange::Callback<Response>));

  Exchange* const exchange_;
  const std::string trust_domain_;
  const std::shared_ptr<const signing::Signer> signer_;
  std::unique_ptr<ReceiptBatcher> receipts_;
  std::unique_ptr<StreamRegistry> registry_;
};

// grpc.health.v1.Health from its generated descriptor, so grpcurl can call
// it. "", "lienthong.v1.ExchangeService" and "lienthong.v1.AdminService" are
// SERVING until SetNotServing.
class HealthServiceImpl final
    : public grpc::health::v1::Health::CallbackService {
 public:
  grpc::ServerUnaryReactor* Check(
      grpc::CallbackServerContext* ctx,
      const grpc::health::v1::HealthCheckRequest* request,
      grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* ctx,
      const grpc::health::v1::HealthCheckRequest* request) override;
  void SetNotServing() { serving_ = false; }

 private:
  std::atomic<bool> serving_{true};
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_SERVICE_H_
