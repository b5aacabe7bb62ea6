#include <atomic>
#include <deque>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "broker/service/src/receipt_batcher.h"
#include "broker/service/src/streams.h"
#include "lienthong/broker/service.h"
#include "lienthong/common/log.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::broker {
namespace {

// The id a client gave its call (metadata x-request-id), or one made up.
std::string RequestId(grpc::CallbackServerContext* ctx) {
  auto it = ctx->client_metadata().find("x-request-id");
  if (it != ctx->client_metadata().end() && it->second.size() <= 128)
    return std::string(it->second.data(), it->second.size());
  static std::atomic<uint64_t> next{1};
  return absl::StrCat("srv-", next.fetch_add(1));
}

// How a send ended, in the log: refusals at info (someone tried a flow that
// is not allowed, or sent something malformed), acceptances at debug.
void LogSend(const Principal& caller, const std::string& request_id,
             const absl::StatusOr<v1::SendResponse>& r) {
  log::Level level = r.ok() ? log::Level::kDebug : log::Level::kInfo;
  if (!log::Enabled(level)) return;
  log::Fields fields = {{"org", caller.name}, {"request_id", request_id}};
  if (r.ok()) {
    fields.emplace_back("document_id", r->document_id());
    if (r->duplicate()) fields.emplace_back("duplicate", "true");
    log::Write(level, "exchange", "send accepted", fields);
  } else {
    fields.emplace_back("code", absl::StatusCodeToString(r.status().code()));
    fields.emplace_back("error", std::string(r.status().message()));
    log::Write(level, "exchange", "send refused", fields);
  }
}

// Finishes a unary reactor with the core's answer.
template <typename T>
Exchange::Callback<T> FinishWith(grpc::ServerUnaryReactor* reactor,
                                 T* response) {
  return [reactor, response](absl::StatusOr<T> r) {
    if (r.ok()) *response = *std::move(r);
    reactor->Finish(ToGrpcStatus(r.status()));
  };
}

grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* ctx,
                                 const absl::Status& status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// ---- SendStream ------------------------------------------------------------

class SendStreamReactor final
    : public grpc::ServerBidiReactor<v1::SendStreamRequest,
                                     v1::SendStreamResponse>,
      public RefCounted,
      public StreamRegistry::Stream {
 public:
  static constexpr int kMaxOutstanding = 8192;

  SendStreamReactor(Exchange* exchange, Principal caller,
                    std::string request_id, StreamRegistry* registry,
                    ReceiptBatcher* receipts)
      : sequence_(exchange->NewSendSequence()),
        caller_(std::move(caller)),
        request_id_(std::move(request_id)),
        registry_(registry),
        receipts_(receipts) {
    if (!registry_->Add(this)) {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      MaybeFinishLocked();
      return;
    }
    StartRead(&request_);
  }

  void StopForShutdown() override {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    MaybeFinishLocked();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    bool pause;
    {
      absl::MutexLock lock(&mu_);
      outstanding_ += request_.items_size();
      pause = outstanding_ >= kMaxOutstanding;
      read_paused_ = pause;
    }
    std::vector<std::pair<v1::Document, Exchange::Callback<v1::SendResponse>>>
        documents;
    documents.reserve(request_.items_size());
    for (v1::SendStreamItem& item : *request_.mutable_items()) {
      uint64_t correlation = item.correlation_id();
      Ref();
      documents.emplace_back(
          std::move(*item.mutable_document()),
          [this, correlation](absl::StatusOr<v1::SendResponse> r) {
            LogSend(caller_, absl::StrCat(request_id_, "/", correlation), r);
            SignThenAnswer(correlation, std::move(r));
          });
    }
    // Taken as one: their writes share a commit and a sync.
    if (!documents.empty()) sequence_->SendAll(caller_, std::move(documents));
    request_.Clear();
    if (!pause) StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    bool resume = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) broken_ = true;
      if (!broken_) StartWriteLocked();
      if (read_paused_ && outstanding_ < kMaxOutstanding / 2 && !broken_) {
        read_paused_ = false;
        resume = true;
      }
      MaybeFinishLocked();
    }
    if (resume) StartRead(&request_);
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    broken_ = true;
    MaybeFinishLocked();
  }

  void OnDone() override {
    registry_->Remove(this);
    Unref();
  }

 private:
  // Answers once the receipt is signed (in a batch shared with the other
  // streams), then drops the reference the send held.
  void SignThenAnswer(uint64_t correlation,
                      absl::StatusOr<v1::SendResponse> r) {
    if (receipts_ == nullptr || !r.ok() || !r->has_receipt()) {
      Answer(correlation, std::move(r));
      Unref();
      return;
    }
    auto response = std::make_unique<v1::SendResponse>(*std::move(r));
    v1::CustodyReceipt* receipt = response->mutable_receipt();
    receipts_->Sign(
        receipt, [this, correlation, response = std::move(response)](
                     absl::Status signed_ok) mutable {
          if (!signed_ok.ok()) {
            log::Write(
                log::Level::kError, request_id_,
                absl::StrCat("receipt left unsigned: ", signed_ok.message()));
          }
          Answer(correlation, std::move(*response));
          Unref();
        });
  }

  void Answer(uint64_t correlation, absl::StatusOr<v1::SendResponse> r) {
    absl::MutexLock lock(&mu_);
    --outstanding_;
    v1::SendStreamResult* result = pending_.add_results();
    result->set_correlation_id(correlation);
    if (r.ok()) {
      *result->mutable_accepted() = *std::move(r);
    } else {
      result->mutable_error()->set_code(static_cast<int>(r.status().code()));
      result->mutable_error()->set_message(std::string(r.status().message()));
    }
    if (!broken_) StartWriteLocked();
    MaybeFinishLocked();
  }

  void StartWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_ || pending_.results_size() == 0) return;
    writing_ = true;
    response_.Swap(&pending_);
    pending_.Clear();
    StartWrite(&response_);
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return;
    if (broken_) {
      finished_ = true;
      Finish(grpc::Status::CANCELLED);
      return;
    }
    if ((reads_done_ || stopping_) && outstanding_ == 0 &&
        pending_.results_size() == 0) {
      finished_ = true;
      Finish(reads_done_ ? grpc::Status::OK : ShuttingDown());
    }
  }

  const std::unique_ptr<Exchange::SendSequence>
      sequence_;  // keeps the stream's order
  const Principal caller_;
  const std::string request_id_;  // of the stream; items add their id
  StreamRegistry* const registry_;
  ReceiptBatcher* const receipts_;  // may be null
  v1::SendStreamRequest request_;   // owned by the read in flight

  absl::Mutex mu_;
  v1::SendStreamResponse response_ ABSL_GUARDED_BY(mu_);  // the write in flight
  v1::SendStreamResponse pending_ ABSL_GUARDED_BY(mu_);
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// ---- Receive ---------------------------------------------------------------

class ReceiveReactor final
    : public grpc::ServerBidiReactor<v1::ReceiveRequest, v1::ReceiveResponse>,
      public RefCounted,
      public StreamRegistry::Stream {
 public:
  ReceiveReactor(Exchange* exchange, Principal caller, StreamRegistry* registry)
      : exchange_(exchange), caller_(std::move(caller)), registry_(registry) {
    if (!registry_->Add(this)) {
      End(ShuttingDown());
      return;
    }
    StartRead(&request_);
  }

  void StopForShutdown() override { End(ShuttingDown()); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed its side or went away
      End(grpc::Status::OK);
      return;
    }
    std::shared_ptr<ReceiveSession> session;
    {
      absl::MutexLock lock(&mu_);
      session = session_;
    }
    if (request_.has_start()) {
      if (session) {
        End(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                         "start: sent twice on one stream"));
        return;
      }
      absl::StatusOr<std::shared_ptr<ReceiveSession>> opened =
          exchange_->OpenReceive(caller_, request_.start().max_in_flight(),
                                 [this](v1::ReceiveResponse response) {
                                   Deliver(std::move(response));
                                 });
      if (!opened.ok()) {
        End(ToGrpcStatus(opened.status()));
        return;
      }
      bool ended;
      {
        absl::MutexLock lock(&mu_);
        session_ = *opened;
        ended = finished_;
      }
      if (ended) (*opened)->Close();
    } else if (request_.has_ack()) {
      if (!session) {
        End(grpc::Status(
            grpc::StatusCode::FAILED_PRECONDITION,
            "ack: the first message of a Receive stream must be start"));
        return;
      }
      v1::ReceiveAck* ack = request_.mutable_ack();
      session->Ack(
          {std::make_move_iterator(ack->mutable_document_ids()->begin()),
           std::make_move_iterator(ack->mutable_document_ids()->end())},
          {std::make_move_iterator(ack->mutable_nack_document_ids()->begin()),
           std::make_move_iterator(ack->mutable_nack_document_ids()->end())});
    } else {
      End(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                       "kind: a ReceiveRequest must carry start or ack"));
      return;
    }
    request_.Clear();
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      broken_ = true;
    } else {
      StartWriteLocked();
    }
    MaybeFinishLocked();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
    }
    End(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    std::shared_ptr<ReceiveSession> session;
    {
      absl::MutexLock lock(&mu_);
      session = std::move(session_);
    }
    if (session) session->Close();  // no Deliver after this returns
    registry_->Remove(this);
    Unref();
  }

 private:
  void Deliver(v1::ReceiveResponse response) {
    absl::MutexLock lock(&mu_);
    if (finished_ || broken_) return;
    for (v1::Delivery& d : *response.mutable_deliveries()) {
      pending_.add_deliveries()->Swap(&d);
    }
    for (v1::Notice& n : *response.mutable_notices()) {
      pending_.add_notices()->Swap(&n);
    }
    StartWriteLocked();
  }

  // Ends the stream with `status` once the write in flight completes. The
  // session is closed (its documents become deliverable again).
  void End(grpc::Status status) {
    std::shared_ptr<ReceiveSession> session;
    {
      absl::MutexLock lock(&mu_);
      if (end_requested_) return;
      end_requested_ = true;
      end_status_ = std::move(status);
      session = session_;
      pending_.Clear();  // unacknowledged: they will be delivered again
      MaybeFinishLocked();
    }
    if (session) session->Close();
  }

  void StartWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_ || end_requested_ ||
        (pending_.deliveries_size() == 0 && pending_.notices_size() == 0))
      return;
    writing_ = true;
    response_.Swap(&pending_);
    pending_.Clear();
    StartWrite(&response_);
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return;
    if (broken_ || end_requested_) {
      finished_ = true;
      Finish(broken_ && !end_requested_ ? grpc::Status::CANCELLED
                                        : end_status_);
    }
  }

  Exchange* const exchange_;
  const Principal caller_;
  StreamRegistry* const registry_;
  v1::ReceiveRequest request_;

  absl::Mutex mu_;
  std::shared_ptr<ReceiveSession> session_ ABSL_GUARDED_BY(mu_);
  v1::ReceiveResponse response_ ABSL_GUARDED_BY(mu_);
  v1::ReceiveResponse pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool end_requested_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// ---- WatchStatus
// -------------------------------------------------------------

class WatchReactor final : public grpc::ServerWriteReactor<v1::StatusEvent>,
                           public RefCounted,
                           public StreamRegistry::Stream {
 public:
  static constexpr size_t kMaxQueued = 10'000;

  WatchReactor(Exchange* exchange, const Principal& caller,
               const v1::WatchStatusRequest& request, StreamRegistry* registry)
      : registry_(registry) {
    if (!registry_->Add(this)) {
      StopForShutdown();
      return;
    }
    Ref();  // for the sink, released in OnDone after the session is closed
    Ref();  // for `done`
    exchange->Watch(
        caller, request,
        [this](absl::StatusOr<v1::StatusEvent> e) {
          return OnEvent(std::move(e));
        },
        [this](absl::StatusOr<std::shared_ptr<WatchSession>> s) {
          OnWatching(std::move(s));
          Unref();
        });
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      End(grpc::Status::CANCELLED);
    } else {
      StartWriteLocked();
    }
    MaybeFinishLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    End(grpc::Status::CANCELLED);
    MaybeFinishLocked();
  }

  void OnDone() override {
    std::shared_ptr<WatchSession> session;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      session = std::move(session_);
    }
    if (session) {
      session->Close();
      Unref();  // the sink's reference: no event arrives after Close
    }
    registry_->Remove(this);
    Unref();
  }

  void StopForShutdown() override {
    absl::MutexLock lock(&mu_);
    End(ShuttingDown());
    MaybeFinishLocked();
  }

 private:
  void OnWatching(absl::StatusOr<std::shared_ptr<WatchSession>> s) {
    bool close_now = false;
    {
      absl::MutexLock lock(&mu_);
      if (!s.ok()) {
        End(ToGrpcStatus(s.status()));
        MaybeFinishLocked();
        Unref();  // no session: the sink will never be called
        return;
      }
      if (done_) {
        close_now = true;
      } else {
        session_ = *s;
      }
    }
    if (close_now) {
      (*s)->Close();
      Unref();
    }
  }

  bool OnEvent(absl::StatusOr<v1::StatusEvent> e) {
    absl::MutexLock lock(&mu_);
    if (end_requested_) return false;
    if (!e.ok()) {
      End(ToGrpcStatus(e.status()));
      MaybeFinishLocked();
      return false;
    }
    if (queue_.size() >= kMaxQueued) {
      End(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("watcher fell ", kMaxQueued,
                       " events behind; watch again with after_sequence=",
                       last_written_)));
      MaybeFinishLocked();
      return false;
    }
    queue_.push_back(*std::move(e));
    StartWriteLocked();
    return true;
  }

  void End(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (end_requested_) return;
    end_requested_ = true;
    end_status_ = std::move(status);
  }

  void StartWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || end_requested_ || queue_.empty()) return;
    writing_ = true;
    current_ = std::move(queue_.front());
    queue_.pop_front();
    last_written_ = current_.sequence();
    StartWrite(&current_);
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_ || !end_requested_) return;
    finished_ = true;
    Finish(end_status_);
  }

  StreamRegistry* const registry_;
  absl::Mutex mu_;
  std::shared_ptr<WatchSession> session_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::StatusEvent> queue_ ABSL_GUARDED_BY(mu_);
  v1::StatusEvent current_ ABSL_GUARDED_BY(mu_);
  uint64_t last_written_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool end_requested_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

class RefuseWrite final : public grpc::ServerWriteReactor<v1::StatusEvent> {
 public:
  explicit RefuseWrite(const absl::Status& status) {
    Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

}  // namespace

absl::Status SignReceipts(const signing::Signer& signer,
                          const std::vector<v1::CustodyReceipt*>& receipts) {
  if (receipts.empty()) return absl::OkStatus();
  std::vector<std::string> digests;
  digests.reserve(receipts.size());
  for (const v1::CustodyReceipt* r : receipts)
    digests.push_back(signing::ReceiptDigest(*r));
  ASSIGN_OR_RETURN(std::vector<v1::Signature> signatures,
                   signer.SignBatch(digests, absl::Now()));
  for (size_t i = 0; i < receipts.size(); ++i)
    *receipts[i]->mutable_signature() = std::move(signatures[i]);
  return absl::OkStatus();
}

absl::StatusOr<v1::EvidenceExport> SignEvidence(const signing::Signer& signer,
                                                v1::Evidence evidence) {
  RETURN_IF_ERROR(SignReceipts(signer, {evidence.mutable_receipt()}));
  v1::EvidenceExport out;
  out.set_evidence(evidence.SerializeAsString());
  ASSIGN_OR_RETURN(*out.mutable_signature(),
                   signer.Sign(signing::Sha256(out.evidence()), absl::Now()));
  return out;
}

ExchangeServiceImpl::ExchangeServiceImpl(
    Exchange* exchange, std::string trust_domain,
    std::shared_ptr<const signing::Signer> signer,
    absl::Duration receipt_batch_interval)
    : exchange_(exchange),
      trust_domain_(std::move(trust_domain)),
      signer_(std::move(signer)),
      receipts_(signer_ ? std::make_unique<ReceiptBatcher>(
                              signer_, receipt_batch_interval)
                        : nullptr),
      registry_(std::make_unique<StreamRegistry>()) {}

ExchangeServiceImpl::~ExchangeServiceImpl() = default;

void ExchangeServiceImpl::Shutdown() { registry_->StopAll(); }

absl::StatusOr<Principal> ExchangeServiceImpl::Caller(
    grpc::CallbackServerContext* ctx) const {
  std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
  return AuthenticateCaller(auth.get(), trust_domain_, ctx->peer(),
                            "ExchangeService");
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* ExchangeServiceImpl::Unary(
    grpc::CallbackServerContext* ctx, const Request* request,
    Response* response,
    void (Exchange::*method)(const Principal&, const Request&,
                             Exchange::Callback<Response>)) {
  absl::StatusOr<Principal> caller = Caller(ctx);
  if (!caller.ok()) return Refuse(ctx, caller.status());
  auto* reactor = ctx->DefaultReactor();
  (exchange_->*method)(*caller, *request, FinishWith(reactor, response));
  return reactor;
}

grpc::ServerUnaryReactor* ExchangeServiceImpl::Send(
    grpc::CallbackServerContext* ctx, const v1::SendRequest* request,
    v1::SendResponse* response) {
  absl::StatusOr<Principal> caller = Caller(ctx);
  if (!caller.ok()) return Refuse(ctx, caller.status());
  if (!request->has_document()) {
    return Refuse(ctx, absl::InvalidArgumentError("document: missing"));
  }
  auto* reactor = ctx->DefaultReactor();
  exchange_->Send(
      *caller, request->document(),
      [reactor, response, caller = *caller, request_id = RequestId(ctx),
       receipts = receipts_.get()](absl::StatusOr<v1::SendResponse> r) {
        LogSend(caller, request_id, r);
        if (!r.ok()) {
          reactor->Finish(ToGrpcStatus(r.status()));
          return;
        }
        *response = *std::move(r);
        if (receipts == nullptr || !response->has_receipt()) {
          reactor->Finish(grpc::Status::OK);
          return;
        }
        receipts->Sign(response->mutable_receipt(),
                       [reactor, request_id](absl::Status signed_ok) {
                         if (!signed_ok.ok()) {
                           log::Write(log::Level::kError, request_id,
                                      absl::StrCat("receipt left unsigned: ",
                                                   signed_ok.message()));
                         }
                         reactor->Finish(grpc::Status::OK);
                       });
      });
  return reactor;
}

grpc::ServerBidiReactor<v1::SendStreamRequest, v1::SendStreamResponse>*
ExchangeServiceImpl::SendStream(grpc::CallbackServerContext* ctx) {
  absl::StatusOr<Principal> caller = Caller(ctx);
  if (!caller.ok()) {
    return new RefuseBidi<v1::SendStreamRequest, v1::SendStreamResponse>(
        caller.status());
  }
  return new SendStreamReactor(exchange_, *std::move(caller), RequestId(ctx),
                               registry_.get(), receipts_.get());
}

grpc::ServerBidiReactor<v1::ReceiveRequest, v1::ReceiveResponse>*
ExchangeServiceImpl::Receive(grpc::CallbackServerContext* ctx) {
  absl::StatusOr<Principal> caller = Caller(ctx);
  if (!caller.ok())
    return new RefuseBidi<v1::ReceiveRequest, v1::ReceiveResponse>(
        caller.status());
  return new ReceiveReactor(exchange_, *std::move(caller), registry_.get());
}

grpc::ServerUnaryReactor* ExchangeServiceImpl::Fetch(
    grpc::CallbackServerContext* ctx, const v1::FetchRequest* request,
    v1::FetchResponse* response) {
  return Unary(ctx, request, response, &Exchange::Fetch);
}

grpc::ServerUnaryReactor* ExchangeServiceImpl::Ack(
    grpc::CallbackServerContext* ctx, const v1::AckRequest* request,
    v1::AckResponse* response) {
  return Unary(ctx, request, response, &Exchange::Ack);
}

grpc::ServerUnaryReactor* ExchangeServiceImpl::PublishEncryptionCertificate(
    grpc::CallbackServerContext* ctx,
    const v1::PublishEncryptionCertificateRequest* request,
    v1::PublishEncryptionCertificateResponse* response) {
  return Unary(ctx, request, response, &Exchange::PublishEncryptionCertificate);
}

grpc::ServerUnaryReactor* ExchangeServiceImpl::GetEncryptionCertificates(
    grpc::CallbackServerContext* ctx,
    const v1::GetEncryptionCertificatesRequest* request,
    v1::GetEncryptionCertificatesResponse* response) {
  return Unary(ctx, request, response, &Exchange::GetEncryptionCertificates);
}

grpc::ServerUnaryReactor* ExchangeServiceImpl::GetEvidence(
    grpc::CallbackServerContext* ctx, const v1::GetEvidenceRequest* request,
    v1::EvidenceExport* response) {
  absl::StatusOr<Principal> caller = Caller(ctx);
  if (!caller.ok()) return Refuse(ctx, caller.status());
  if (!signer_) {
    return Refuse(ctx, absl::FailedPreconditionError(
                           "this broker has no key to sign evidence with"));
  }
  auto* reactor = ctx->DefaultReactor();
  exchange_->GetEvidence(
      *caller, *request,
      [reactor, response, signer = signer_](absl::StatusOr<v1::Evidence> e) {
        if (!e.ok()) {
          reactor->Finish(ToGrpcStatus(e.status()));
          return;
        }
        absl::StatusOr<v1::EvidenceExport> signed_evidence =
            SignEvidence(*signer, *std::move(e));
        if (signed_evidence.ok()) *response = *std::move(signed_evidence);
        reactor->Finish(ToGrpcStatus(signed_evidence.status()));
      });
  return reactor;
}

grpc::ServerUnaryReactor* ExchangeServiceImpl::ListInbox(
    grpc::CallbackServerContext* ctx, const v1::ListInboxRequest* request,
    v1::ListInboxResponse* response) {
  return Unary(ctx, request, response, &Exchange::ListInbox);
}

grpc::ServerUnaryReactor* ExchangeServiceImpl::ReportStatus(
    grpc::CallbackServerContext* ctx, const v1::ReportStatusRequest* request,
    v1::ReportStatusResponse* response) {
  return Unary(ctx, request, response, &Exchange::ReportStatus);
}

grpc::ServerUnaryReactor* ExchangeServiceImpl::GetDocumentStatus(
    grpc::CallbackServerContext* ctx,
    const v1::GetDocumentStatusRequest* request, v1::DocumentStatus* response) {
  return Unary(ctx, request, response, &Exchange::GetDocumentStatus);
}

grpc::ServerUnaryReactor* ExchangeServiceImpl::RecordPaperConversion(
    grpc::CallbackServerContext* ctx,
    const v1::RecordPaperConversionRequest* request,
    v1::RecordPaperConversionResponse* response) {
  return Unary(ctx, request, response, &Exchange::RecordPaperConversion);
}

grpc::ServerUnaryReactor* ExchangeServiceImpl::ListPaperConversions(
    grpc::CallbackServerContext* ctx,
    const v1::ListPaperConversionsRequest* request,
    v1::ListPaperConversionsResponse* response) {
  return Unary(ctx, request, response, &Exchange::ListPaperConversions);
}

grpc::ServerWriteReactor<v1::StatusEvent>* ExchangeServiceImpl::WatchStatus(
    grpc::CallbackServerContext* ctx, const v1::WatchStatusRequest* request) {
  absl::StatusOr<Principal> caller = Caller(ctx);
  if (!caller.ok()) return new RefuseWrite(caller.status());
  return new WatchReactor(exchange_, *caller, *request, registry_.get());
}

}  // namespace lienthong::broker
