// What a Client (or an AdminClient) and the streams and sessions it opens
// share: the options, the identity, one gRPC channel per broker endpoint with
// mutual TLS, the endpoint currently preferred, the dedup set, and the retry
// loop of unary calls. Internal to the SDK.
//
// Held by shared_ptr so that a SendStream or ReceiveSession may outlive the
// Client that opened it. Thread-safe.
#ifndef LIENTHONG_CLIENT_SDK_SRC_CONNECTION_H_
#define LIENTHONG_CLIENT_SDK_SRC_CONNECTION_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client-sdk/src/dedup_set.h"
#include "client-sdk/src/sealer.h"
#include "client-sdk/src/status.h"
#include "lienthong/client.h"
#include "lienthong/common/identity.h"
#include "lienthong/signing/batch_signer.h"
#include "lienthong/signing/signing.h"
#include "lienthong/v1/admin.grpc.pb.h"
#include "lienthong/v1/approvals.grpc.pb.h"
#include "lienthong/v1/attachments.grpc.pb.h"
#include "lienthong/v1/exchange.grpc.pb.h"
#include "lienthong/v1/incidents.grpc.pb.h"

namespace lienthong::client_internal {

// Channel settings (see DESIGN: the SDK keeps connections alive and notices
// dead brokers quickly).
inline constexpr int kMaxReceiveMessageBytes = 64 << 20;
// A fixed receive window per stream (no BDP probing): a download cannot run
// more than this ahead of the application's sink.
inline constexpr int kStreamWindowBytes = 8 << 20;
inline constexpr int kKeepaliveTimeMs = 30'000;
inline constexpr int kMaxReconnectBackoffMs = 5'000;
// Rotated certificate and key files are re-read this often.
inline constexpr unsigned int kCertificateRefreshSeconds = 60;

class Connection {
 public:
  using Stub = v1::ExchangeService::Stub;
  using AdminStub = v1::AdminService::Stub;
  // One attempt of a unary call on `stub` with `context` (deadline set).
  using Attempt =
      std::function<grpc::Status(Stub& stub, grpc::ClientContext& context)>;
  using AdminAttempt = std::function<grpc::Status(
      AdminStub& stub, grpc::ClientContext& context)>;
  using IncidentStub = v1::IncidentService::Stub;
  using IncidentAttempt = std::function<grpc::Status(
      IncidentStub& stub, grpc::ClientContext& context)>;

  // Validates `options`, checks the certificate files and reads the
  // identity, which must be of kind `kind` (see LoadIdentity), loads the
  // dedup state file and creates the channels (which connect lazily).
  // Errors as Client::Open.
  static absl::StatusOr<std::shared_ptr<Connection>> Open(
      const ClientOptions& options,
      Principal::Kind kind = Principal::Kind::kOrg);

  const ClientOptions& options() const { return options_; }
  // The identity of the certificate; org() is its name (an org code for a
  // Client).
  const Principal& identity() const { return identity_; }
  const std::string& org() const { return identity_.name; }
  DedupSet& dedup() const { return *dedup_; }
  Sealer& sealer() const { return *sealer_; }

  // Seals `document` when it must be (Sealer::MustSeal), fetching the
  // recipients' certificates through this connection. Errors as
  // Sealer::Seal; FAILED_PRECONDITION for a stored attachment uploaded
  // without sealing in a document that must be sealed, or uploaded sealed
  // in one that is not. Blocks; thread-safe.
  absl::Status SealIfNeeded(v1::Document* document) const;

  // Verifies the sender's signature of each of `documents` and each
  // approval it carries (its approver's signature over it, for its content)
  // and opens the sealed ones (marking them was_sealed). One whose
  // signature or an approval's is missing (unless accept_unsigned) or does
  // not verify, or that cannot be opened
  // for good (altered, malformed) is reported REJECTED to its sender with
  // the reason, remembered as seen and removed; its id is appended to
  // `rejected` for the caller to acknowledge. A FAILED_PRECONDITION (no key
  // for it) is returned at once: configuration, the documents stay queued
  // at the broker.
  absl::Status VerifyAndOpen(std::vector<IncomingDocument>* documents,
                             std::vector<std::string>* rejected) const;

  // Signs `documents` (org clients) as one batch; `digests` are their
  // signing::DocumentDigest. INTERNAL when the crypto library fails.
  absl::Status SignBatch(const std::vector<v1::Document*>& documents,
                         const std::vector<std::string>& digests) const;
  // Signs one document's `digest` for `owner` in a batch shared by every
  // SendStream of this client (see signing::BatchSigner) and runs `done` with
  // its signature on the batcher's thread; FAILED_PRECONDITION (as the last
  // of the batch) for persons' clients.
  void SignShared(const void* owner, std::string digest,
                  signing::BatchSigner::Done done) const;
  // What the broker answered for a document with `digest` and signature
  // bytes `signature`, once its custody receipt verifies: UNAUTHENTICATED
  // otherwise.
  absl::StatusOr<SendReceipt> Receipt(const v1::SendResponse& response,
                                      const std::string& idempotency_key,
                                      bool sealed, absl::string_view digest,
                                      absl::string_view signature) const;

  // Moves the documents of `deliveries` the application has not seen yet
  // into `fresh` and returns the ids of those it has (to acknowledge only).
  std::vector<std::string> TakeUnseen(
      google::protobuf::RepeatedPtrField<v1::Delivery>* deliveries,
      std::vector<IncomingDocument>* fresh) const;

  size_t endpoint_count() const { return endpoints_.size(); }
  const std::string& endpoint(size_t index) const {
    return endpoints_[index].address;
  }
  Stub& stub(size_t index) const { return *endpoints_[index].stub; }
  // Attachment transfers call AttachmentService on the channel with
  // ByteBuffers (lienthong/attachment_wire.h).
  grpc::Channel& channel(size_t index) const {
    return *endpoints_[index].channel;
  }

  // The endpoint new calls start on.
  size_t preferred_endpoint() const {
    return preferred_.load(std::memory_order_relaxed);
  }
  // `failed` did not answer: returns the endpoint to try next and makes it
  // the preferred one (unless another caller has already moved on).
  size_t FailOver(size_t failed) const;

  // Runs `attempt` until it succeeds, fails with a code `retry_on` does not
  // retry, or options().retry_budget is spent, failing over to the next
  // endpoint and sleeping with backoff between attempts. Each attempt has
  // the deadline options().call_timeout + `extra_deadline`. Returns the
  // translated status of the last attempt. Blocks; thread-safe.
  absl::Status Call(RetryOn retry_on, absl::Duration extra_deadline,
                    const Attempt& attempt) const;
  // The same for a call of lienthong.v1.AdminService.
  absl::Status CallAdmin(RetryOn retry_on, const AdminAttempt& attempt) const;
  // The same for a call of lienthong.v1.ApprovalService.
  absl::Status CallApproval(
      RetryOn retry_on,
      const std::function<grpc::Status(v1::ApprovalService::Stub& stub,
                                       grpc::ClientContext& context)>& attempt)
      const;
  // The same for a call of lienthong.v1.IncidentService.
  absl::Status CallIncidents(RetryOn retry_on,
                             const IncidentAttempt& attempt) const;

 private:
  struct Endpoint {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<Stub> stub;
    std::unique_ptr<AdminStub> admin_stub;
    std::unique_ptr<IncidentStub> incident_stub;
    std::unique_ptr<v1::ApprovalService::Stub> approval_stub;
  };

  Connection(ClientOptions options, Principal identity,
             std::unique_ptr<DedupSet> dedup, std::unique_ptr<Sealer> sealer,
             std::unique_ptr<signing::Signer> signer,
             std::unique_ptr<signing::SignatureVerifier> verifier);

  // Call and CallAdmin: `attempt` gets the endpoint index.
  absl::Status Retry(
      RetryOn retry_on, absl::Duration extra_deadline,
      const std::function<grpc::Status(size_t, grpc::ClientContext&)>& attempt)
      const;

  const ClientOptions options_;
  const Principal identity_;
  const std::unique_ptr<DedupSet> dedup_;
  const std::unique_ptr<Sealer> sealer_;
  const std::unique_ptr<signing::Signer> signer_;  // null for persons
  const std::unique_ptr<signing::SignatureVerifier> verifier_;
  // Shared by the client's SendStreams; null for persons. After signer_,
  // which it uses, so that it stops first.
  const std::unique_ptr<signing::BatchSigner> batcher_;
  std::vector<Endpoint> endpoints_;  // fixed after Open
  mutable std::atomic<size_t> preferred_{0};
};

// Fills what Send leaves to the SDK: the sender (this org) and a fresh
// idempotency key, when empty.
void PrepareForSend(const std::string& org, v1::Document* document);

// `status` of a failed send of a document with idempotency key `key`, with
// the key as its kIdempotencyKeyPayload (and, when the document may be
// stored, said in its message). OK stays OK.
absl::Status WithIdempotencyKey(absl::Status status, const std::string& key);

// The receipt for `response` to a document sent with `idempotency_key`.

}  // namespace lienthong::client_internal

#endif  // LIENTHONG_CLIENT_SDK_SRC_CONNECTION_H_
