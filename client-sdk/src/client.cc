// Client::Open and the Client implementation: unary calls through
// Connection::Call, Watch as a blocking loop over the sync streaming API, and
// the factories of SendStreamImpl and ReceiveSessionImpl.
#include "lienthong/client.h"

#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client-sdk/src/backoff.h"
#include "client-sdk/src/client_attachments.h"
#include "client-sdk/src/connection.h"
#include "client-sdk/src/credentials.h"
#include "client-sdk/src/receive_session.h"
#include "client-sdk/src/send_stream.h"
#include "client-sdk/src/status.h"

namespace lienthong {

absl::Status ClientOptions::Validate() const {
  if (endpoints.empty()) {
    return absl::InvalidArgumentError(
        "endpoints: at least one broker address host:port is required");
  }
  for (size_t i = 0; i < endpoints.size(); ++i) {
    const std::string& e = endpoints[i];
    size_t colon = e.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == e.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("endpoints[", i, "]: \"", e, "\" is not host:port"));
    }
  }
  if (certificate_file.empty()) {
    return absl::InvalidArgumentError("certificate_file: required");
  }
  if (private_key_file.empty()) {
    return absl::InvalidArgumentError("private_key_file: required");
  }
  if (ca_file.empty()) return absl::InvalidArgumentError("ca_file: required");
  if (call_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("call_timeout: must be positive");
  }
  if (retry_budget < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("retry_budget: must not be negative");
  }
  if (initial_backoff <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("initial_backoff: must be positive");
  }
  if (max_backoff < initial_backoff) {
    return absl::InvalidArgumentError(
        "max_backoff: must not be less than initial_backoff");
  }
  if (signature_batch_interval < absl::ZeroDuration() ||
      signature_batch_interval > absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "signature_batch_interval: must be 0..1 s");
  }
  if (dedup_capacity == 0) {
    return absl::InvalidArgumentError("dedup_capacity: must be at least 1");
  }
  if (encryption_certificate_file.empty() != encryption_key_file.empty()) {
    return absl::InvalidArgumentError(
        "encryption_certificate_file, encryption_key_file: set both or "
        "neither");
  }
  for (size_t i = 0; i < retired_encryption_keys.size(); ++i) {
    if (retired_encryption_keys[i].certificate_file.empty() ||
        retired_encryption_keys[i].private_key_file.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("retired_encryption_keys[", i,
                       "]: certificate_file and private_key_file are both "
                       "required"));
    }
  }
  if (encryption_certificate_cache < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "encryption_certificate_cache: must not be negative");
  }
  return absl::OkStatus();
}

namespace client_internal {
namespace {

// The broker's long-poll limit for Fetch.
constexpr absl::Duration kMaxFetchWait = absl::Seconds(30);
// How often Watch looks at its `stop` flag.
constexpr absl::Duration kStopPollInterval = absl::Milliseconds(100);
// The broker's ReceiveStart limit.
constexpr uint32_t kMaxReceiveInFlight = 10'000;

// Cancels the registered call of a Watch once `stop` becomes true, polling
// it every kStopPollInterval from its own thread.
class StopWatcher {
 public:
  explicit StopWatcher(const std::atomic<bool>& stop)
      : stop_(stop), thread_([this] { Run(); }) {}
  ~StopWatcher() {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    thread_.join();
  }

  // `context` is cancelled when stop is seen, until Unregister.
  void Register(grpc::ClientContext* context) {
    absl::MutexLock lock(&mu_);
    context_ = context;
    if (stop_.load()) context_->TryCancel();
  }
  void Unregister() {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
  }

 private:
  void Run() {
    absl::MutexLock lock(&mu_);
    while (!done_) {
      mu_.AwaitWithTimeout(absl::Condition(&done_), kStopPollInterval);
      // TryCancel under the lock keeps the context alive meanwhile; the
      // sync API runs no application code inside it.
      if (!done_ && stop_.load() && context_ != nullptr) {
        context_->TryCancel();
        context_ = nullptr;
      }
    }
  }

  const std::atomic<bool>& stop_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread thread_;  // last: starts after the members above exist
};

// Sleeps `delay`, waking early when `stop` becomes true.
void SleepUnlessStopped(absl::Duration delay, const std::atomic<bool>& stop) {
  const absl::Time until = absl::Now() + delay;
  while (!stop.load()) {
    const absl::Duration left = until - absl::Now();
    if (left <= absl::ZeroDuration()) return;
    absl::SleepFor(std::min(left, kStopPollInterval));
  }
}

class ClientImpl final : public Client {
 public:
  explicit ClientImpl(std::shared_ptr<Connection> connection)
      : connection_(std::move(connection)) {}

  const std::string& org() const override { return connection_->org(); }

  using Client::UploadAttachment;
  absl::StatusOr<v1::Attachment> UploadAttachment(
      AttachmentSource& source, const std::string& name,
      const std::string& content_type, const UploadOptions& options,
      const ProgressCallback& progress) override {
    if (!options.seal) {
      return client_internal::UploadAttachment(*connection_, source, name,
                                               content_type, options, progress);
    }
    return client_internal::UploadSealedAttachment(
        source, [&](AttachmentSource& ciphertext) {
          return client_internal::UploadAttachment(
              *connection_, ciphertext, name, content_type, options, progress);
        });
  }

  absl::Status DownloadAttachment(const std::string& document_id,
                                  const v1::Attachment& attachment,
                                  AttachmentSink& sink,
                                  const ProgressCallback& progress) override {
    return client_internal::DownloadAttachment(*connection_, document_id,
                                               attachment, sink, progress);
  }

  absl::Status DownloadAttachmentToFile(
      const std::string& document_id, const v1::Attachment& attachment,
      const std::string& path, const ProgressCallback& progress) override {
    return client_internal::DownloadAttachmentToFile(
        *connection_, document_id, attachment, path, progress);
  }

  absl::StatusOr<SendReceipt> Send(const v1::Document& document) override {
    v1::SendRequest request;
    *request.mutable_document() = document;
    PrepareForSend(connection_->org(), request.mutable_document());
    if (absl::Status s = connection_->SealIfNeeded(request.mutable_document());
        !s.ok())
      return s;
    const std::string digest = signing::DocumentDigest(request.document());
    if (absl::Status s =
            connection_->SignBatch({request.mutable_document()}, {digest});
        !s.ok())
      return s;
    v1::SendResponse response;
    // The idempotency key makes a repeat after a lost answer harmless.
    absl::Status status = connection_->Call(
        RetryOn::kUnavailableOrDeadline, absl::ZeroDuration(),
        [&](Connection::Stub& stub, grpc::ClientContext& context) {
          return stub.Send(&context, request, &response);
        });
    if (!status.ok())
      return WithIdempotencyKey(status, request.document().idempotency_key());
    return connection_->Receipt(response, request.document().idempotency_key(),
                                request.document().has_sealed(), digest,
                                request.document().signature().signature());
  }

  absl::StatusOr<v1::EvidenceExport> GetEvidence(
      const std::string& document_id) override {
    v1::GetEvidenceRequest request;
    request.set_document_id(document_id);
    v1::EvidenceExport response;
    absl::Status status = connection_->Call(
        RetryOn::kUnavailableOrDeadline, absl::ZeroDuration(),
        [&](Connection::Stub& stub, grpc::ClientContext& context) {
          return stub.GetEvidence(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response;
  }

  absl::StatusOr<v1::PublishEncryptionCertificateResponse>
  PublishEncryptionCertificate() override {
    const std::string& pem = connection_->sealer().certificate_pem();
    if (pem.empty()) {
      return absl::FailedPreconditionError(
          "encryption_certificate_file: not set; there is nothing to publish");
    }
    v1::PublishEncryptionCertificateRequest request;
    request.set_certificate(pem);
    v1::PublishEncryptionCertificateResponse response;
    // Publishing the same certificate twice is harmless.
    absl::Status status = connection_->Call(
        RetryOn::kUnavailableOrDeadline, absl::ZeroDuration(),
        [&](Connection::Stub& stub, grpc::ClientContext& context) {
          return stub.PublishEncryptionCertificate(&context, request,
                                                   &response);
        });
    if (!status.ok()) return status;
    return response;
  }

  absl::StatusOr<std::unique_ptr<SendStream>> OpenSendStream(
      size_t max_outstanding) override {
    if (max_outstanding == 0) {
      return absl::InvalidArgumentError("max_outstanding: must be at least 1");
    }
    return std::unique_ptr<SendStream>(
        std::make_unique<SendStreamImpl>(connection_, max_outstanding));
  }

  absl::StatusOr<std::unique_ptr<ReceiveSession>> Receive(
      Handler handler, const ReceiveOptions& options) override {
    if (!handler) return absl::InvalidArgumentError("handler: required");
    if (options.max_in_flight == 0 ||
        options.max_in_flight > kMaxReceiveInFlight) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_in_flight: must be 1..", kMaxReceiveInFlight,
                       ", got ", options.max_in_flight));
    }
    if (options.handler_threads < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("handler_threads: must be at least 1, got ",
                       options.handler_threads));
    }
    return std::unique_ptr<ReceiveSession>(std::make_unique<ReceiveSessionImpl>(
        connection_, std::move(handler), options));
  }

  absl::StatusOr<std::vector<IncomingDocument>> Fetch(
      uint32_t max_documents, absl::Duration wait) override {
    wait = std::clamp(wait, absl::ZeroDuration(), kMaxFetchWait);
    v1::FetchRequest request;
    request.set_max_documents(max_documents);
    request.set_wait_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(wait)));
    v1::FetchResponse response;
    // A repeat after a lost answer leases other documents; those of the lost
    // answer come again when their lease ends.
    absl::Status status = connection_->Call(
        RetryOn::kUnavailableOrDeadline, wait,
        [&](Connection::Stub& stub, grpc::ClientContext& context) {
          response.Clear();
          return stub.Fetch(&context, request, &response);
        });
    if (!status.ok()) return status;

    std::vector<IncomingDocument> documents;
    std::vector<std::string> seen =
        connection_->TakeUnseen(response.mutable_deliveries(), &documents);
    // Rejected sealed documents are acknowledged with the seen ones; on
    // FAILED_PRECONDITION every fetched document waits for its lease to end.
    if (absl::Status s = connection_->VerifyAndOpen(&documents, &seen); !s.ok())
      return s;
    if (!seen.empty()) {
      // Handled before: acknowledge now. Should this fail, they come again
      // and are skipped again.
      if (absl::Status s = AckAtBroker(seen); !s.ok()) {
        gpr_log(GPR_INFO, "lienthong: acking redelivered documents: %s",
                s.ToString().c_str());
      }
    }
    return documents;
  }

  absl::Status Ack(const std::vector<std::string>& document_ids) override {
    if (document_ids.empty()) return absl::OkStatus();
    // Remembered (and on disk) before the broker forgets them.
    if (absl::Status s = connection_->dedup().Add(document_ids); !s.ok()) {
      gpr_log(GPR_ERROR, "lienthong: %s", s.ToString().c_str());
    }
    return AckAtBroker(document_ids);
  }

  absl::StatusOr<v1::ListIncidentsResponse> ListIncidents(
      bool open_only) override {
    v1::ListIncidentsRequest request;
    request.set_open_only(open_only);
    v1::ListIncidentsResponse response;
    absl::Status status = connection_->CallIncidents(
        RetryOn::kUnavailableOrDeadline,
        [&](Connection::IncidentStub& stub, grpc::ClientContext& context) {
          return stub.ListIncidents(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response;
  }

  absl::StatusOr<v1::PaperRegisterEntry> RecordPaperDocument(
      const v1::RecordPaperDocumentRequest& request) override {
    v1::PaperRegisterEntry response;
    absl::Status status = connection_->CallIncidents(
        RetryOn::kUnavailable,
        [&](Connection::IncidentStub& stub, grpc::ClientContext& context) {
          return stub.RecordPaperDocument(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response;
  }

  absl::StatusOr<v1::ListPaperRegisterResponse> ListPaperRegister(
      const v1::ListPaperRegisterRequest& request) override {
    v1::ListPaperRegisterResponse response;
    absl::Status status = connection_->CallIncidents(
        RetryOn::kUnavailableOrDeadline,
        [&](Connection::IncidentStub& stub, grpc::ClientContext& context) {
          return stub.ListPaperRegister(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response;
  }

  absl::StatusOr<v1::ReconciliationReport> GetReconciliationReport(
      const std::string& incident_id) override {
    v1::GetReconciliationReportRequest request;
    request.set_incident_id(incident_id);
    v1::ReconciliationReport response;
    absl::Status status = connection_->CallIncidents(
        RetryOn::kUnavailableOrDeadline,
        [&](Connection::IncidentStub& stub, grpc::ClientContext& context) {
          return stub.GetReconciliationReport(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response;
  }

  absl::StatusOr<v1::ListInboxResponse> ListInbox(uint32_t limit) override {
    v1::ListInboxRequest request;
    request.set_limit(limit);
    v1::ListInboxResponse response;
    absl::Status status = connection_->Call(
        RetryOn::kUnavailableOrDeadline, absl::ZeroDuration(),
        [&](Connection::Stub& stub, grpc::ClientContext& context) {
          return stub.ListInbox(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response;
  }

  absl::StatusOr<v1::StatusEvent> ReportStatus(
      const std::string& document_id, v1::BusinessStatus business_status,
      const std::string& reason) override {
    v1::ReportStatusRequest request;
    request.set_document_id(document_id);
    request.set_status(business_status);
    request.set_reason(reason);
    v1::ReportStatusResponse response;
    // Not idempotent at the broker: repeated only when it surely was not
    // processed.
    absl::Status status = connection_->Call(
        RetryOn::kUnavailable, absl::ZeroDuration(),
        [&](Connection::Stub& stub, grpc::ClientContext& context) {
          return stub.ReportStatus(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response.event();
  }

  absl::StatusOr<v1::RecordPaperConversionResponse> RecordPaperConversion(
      const std::string& document_id, const std::string& reason,
      const std::string& converted_by) override {
    v1::RecordPaperConversionRequest request;
    request.set_document_id(document_id);
    request.set_reason(reason);
    request.set_converted_by(converted_by);
    v1::RecordPaperConversionResponse response;
    // Not idempotent at the broker: repeated only when it surely was not
    // processed.
    absl::Status status = connection_->Call(
        RetryOn::kUnavailable, absl::ZeroDuration(),
        [&](Connection::Stub& stub, grpc::ClientContext& context) {
          return stub.RecordPaperConversion(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response;
  }

  absl::StatusOr<std::vector<v1::PaperConversion>> ListPaperConversions(
      uint32_t limit) override {
    v1::ListPaperConversionsRequest request;
    request.set_limit(limit);
    v1::ListPaperConversionsResponse response;
    absl::Status status = connection_->Call(
        RetryOn::kUnavailableOrDeadline, absl::ZeroDuration(),
        [&](Connection::Stub& stub, grpc::ClientContext& context) {
          return stub.ListPaperConversions(&context, request, &response);
        });
    if (!status.ok()) return status;
    return std::vector<v1::PaperConversion>(response.conversions().begin(),
                                            response.conversions().end());
  }

  absl::StatusOr<v1::DocumentStatus> GetDocumentStatus(
      const std::string& document_id) override {
    v1::GetDocumentStatusRequest request;
    request.set_document_id(document_id);
    v1::DocumentStatus response;
    absl::Status status = connection_->Call(
        RetryOn::kUnavailableOrDeadline, absl::ZeroDuration(),
        [&](Connection::Stub& stub, grpc::ClientContext& context) {
          return stub.GetDocumentStatus(&context, request, &response);
        });
    if (!status.ok()) return status;
    return response;
  }

  absl::Status Watch(
      const std::string& document_id, uint64_t after_sequence,
      const std::function<void(const v1::StatusEvent&)>& on_event,
      const std::atomic<bool>& stop) override {
    const ClientOptions& options = connection_->options();
    Backoff backoff(options.initial_backoff, options.max_backoff);
    StopWatcher watcher(stop);
    uint64_t last_sequence = after_sequence;
    size_t endpoint = connection_->preferred_endpoint();
    absl::Time refused_since = absl::InfiniteFuture();
    while (!stop.load()) {
      grpc::ClientContext context;
      watcher.Register(&context);
      v1::WatchStatusRequest request;
      request.set_document_id(document_id);
      request.set_after_sequence(last_sequence);
      std::unique_ptr<grpc::ClientReader<v1::StatusEvent>> reader =
          connection_->stub(endpoint).WatchStatus(&context, request);
      v1::StatusEvent event;
      absl::Status callback_error;
      while (!stop.load() && reader->Read(&event)) {
        if (event.sequence() <= last_sequence) continue;  // seen already
        last_sequence = event.sequence();
        backoff.Reset();
        try {
          on_event(event);
        } catch (const std::exception& e) {
          callback_error = absl::InternalError(
              absl::StrCat("the watch callback threw: ", e.what()));
        } catch (...) {
          callback_error = absl::InternalError("the watch callback threw");
        }
        if (!callback_error.ok()) break;
      }
      watcher.Unregister();
      if (stop.load() || !callback_error.ok()) context.TryCancel();
      const grpc::Status status =
          ExplainConnectFailure(connection_->options(), reader->Finish());
      if (!callback_error.ok()) return callback_error;
      if (stop.load()) break;
      if (EndsLongLivedStream(status.error_code())) {
        return FromGrpcStatus(status);
      }
      // Refused at the handshake for a whole retry budget: the broker does
      // not accept this certificate; say so instead of retrying unseen.
      if (!IsClosedAtHandshake(status)) {
        refused_since = absl::InfiniteFuture();
      } else if (refused_since == absl::InfiniteFuture()) {
        refused_since = absl::Now();
      } else if (absl::Now() - refused_since >=
                 connection_->options().retry_budget) {
        return FromGrpcStatus(status);
      }
      // UNAVAILABLE, a broker that ended the stream, ...: resume after the
      // last event seen, on the next endpoint.
      endpoint = connection_->FailOver(endpoint);
      SleepUnlessStopped(backoff.Next(), stop);
    }
    return absl::OkStatus();
  }

 private:
  absl::Status AckAtBroker(const std::vector<std::string>& document_ids) {
    v1::AckRequest request;
    for (const std::string& id : document_ids) request.add_document_ids(id);
    v1::AckResponse response;
    return connection_->Call(
        RetryOn::kUnavailableOrDeadline, absl::ZeroDuration(),
        [&](Connection::Stub& stub, grpc::ClientContext& context) {
          return stub.Ack(&context, request, &response);
        });
  }

  const std::shared_ptr<Connection> connection_;
};

}  // namespace
}  // namespace client_internal

absl::StatusOr<std::unique_ptr<Client>> Client::Open(
    const ClientOptions& options) {
  absl::StatusOr<std::shared_ptr<client_internal::Connection>> connection =
      client_internal::Connection::Open(options);
  if (!connection.ok()) return connection.status();
  return std::unique_ptr<Client>(
      std::make_unique<client_internal::ClientImpl>(*std::move(connection)));
}

v1::Document NewChangeRequest(const std::string& original_id,
                              const std::vector<std::string>& recipients,
                              v1::BusinessType type, const std::string& subject,
                              const std::string& reason) {
  v1::Document doc;
  for (const std::string& r : recipients) doc.add_recipients(r);
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_subject(subject);
  m->set_business_type(type);
  m->set_refers_to(original_id);
  m->set_urgency(v1::URGENCY_EXPRESS);
  // A document needs a body: the reason, else the subject.
  doc.set_body(reason.empty() ? subject : reason);
  doc.set_body_content_type("text/plain; charset=utf-8");
  return doc;
}

v1::Redigitized RedigitizedMark(const v1::PaperRegisterEntry& entry) {
  v1::Redigitized mark;
  mark.set_register_entry_id(entry.id());
  mark.set_incident_id(entry.incident_id());
  mark.set_paper_date(entry.date());
  return mark;
}

}  // namespace lienthong
