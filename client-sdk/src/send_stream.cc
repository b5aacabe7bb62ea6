#include "client-sdk/src/send_stream.h"

#include <grpc/support/log.h>

#include <utility>

#include "absl/time/clock.h"
#include "lienthong/common/thread_name.h"

namespace lienthong::client_internal {

// The reactor of one SendStream RPC. Owned by SendStreamImpl: the current
// call in current_.call, then, after OnDone, in finished_calls_ until the
// worker deletes it.
class SendStreamImpl::Call final
    : public grpc::ClientBidiReactor<v1::SendStreamRequest,
                                     v1::SendStreamResponse> {
 public:
  explicit Call(SendStreamImpl* stream) : stream_(stream) {}

  grpc::ClientContext* context() { return &context_; }
  v1::SendStreamRequest* write_buffer() { return &write_buffer_; }
  v1::SendStreamResponse* read_buffer() { return &read_buffer_; }

  void OnReadDone(bool ok) override { stream_->OnReadDone(this, ok); }
  void OnWriteDone(bool ok) override { stream_->OnWriteDone(this, ok); }
  void OnWritesDoneDone(bool ok) override {
    stream_->OnWritesDoneDone(this, ok);
  }
  void OnDone(const grpc::Status& status) override {
    stream_->OnCallDone(this, status);
  }

 private:
  SendStreamImpl* const stream_;
  grpc::ClientContext context_;
  v1::SendStreamRequest write_buffer_;  // owned by whoever set write_busy
  v1::SendStreamResponse read_buffer_;
};

SendStreamImpl::SendStreamImpl(std::shared_ptr<Connection> connection,
                               size_t max_outstanding)
    : connection_(std::move(connection)),
      max_outstanding_(max_outstanding == 0 ? 1 : max_outstanding),
      endpoint_(connection_->preferred_endpoint()),
      backoff_(connection_->options().initial_backoff,
               connection_->options().max_backoff) {
  {
    absl::MutexLock lock(&mu_);
    reconnect_pending_ = true;  // connect now
    reconnect_at_ = absl::Now();
  }
  worker_ = std::thread([this] {
    NameThisThread("lt-sdk-send");
    WorkerLoop();
  });
}

SendStreamImpl::~SendStreamImpl() {
  {
    absl::MutexLock lock(&mu_);
    if (!EndedLocked()) cancel_requested_ = true;
    mu_.Await(absl::Condition(this, &SendStreamImpl::EndedLocked));
    // The client's batcher still holds callbacks into this stream: it runs
    // them within one signature interval.
    mu_.Await(absl::Condition(
        +[](size_t* n) { return *n == 0; }, &awaiting_signature_));
    worker_stop_ = true;
  }
  worker_.join();  // runs the remaining callbacks first
}

bool SendStreamImpl::EndedLocked() const { return finished_ || failed_; }

bool SendStreamImpl::ClosedLocked() const {
  return EndedLocked() && completions_.empty() && callbacks_left_ == 0;
}

bool SendStreamImpl::CanSubmitLocked() const {
  // Answered documents whose callbacks have not run count too: with slow
  // callbacks and a fast broker they would pile up without bound.
  return pending_.size() + completions_.size() + callbacks_left_ <
             max_outstanding_ ||
         closing_ || failed_ || cancel_requested_;
}

void SendStreamImpl::Submit(v1::Document document, Callback done) {
  PrepareForSend(connection_->org(), &document);
  // Sealing may fetch certificates: before the lock, on the caller's thread.
  if (absl::Status sealed = connection_->SealIfNeeded(&document);
      !sealed.ok()) {
    absl::MutexLock lock(&mu_);
    completions_.push_back({std::move(done), std::move(sealed)});
    return;
  }
  // What the signature covers, hashed on the caller's thread; the client's
  // batcher signs it with the documents of its other streams.
  std::string digest = signing::DocumentDigest(document);
  const bool sign = !document.has_signature();
  uint64_t id = 0;
  WriteAction action = WriteAction::kNone;
  Call* call = nullptr;
  {
    absl::MutexLock lock(&mu_);
    // A callback that submits must not wait: the callback thread is the one
    // that reconnects, so waiting there could wait forever.
    if (std::this_thread::get_id() != worker_.get_id()) {
      mu_.Await(absl::Condition(this, &SendStreamImpl::CanSubmitLocked));
    }
    if (closing_ || failed_ || cancel_requested_) {
      completions_.push_back(
          {std::move(done),
           failed_ ? failure_
                   : absl::FailedPreconditionError("SendStream is closed")});
      return;
    }
    id = next_correlation_id_++;
    Item& item = pending_[id];
    item.digest = digest;
    item.sealed = document.has_sealed();
    item.idempotency_key = document.idempotency_key();
    item.document = std::move(document);
    item.done = std::move(done);
    item.submitted_at = absl::Now();
    if (sign) {
      item.signing = true;
      ++awaiting_signature_;
    } else {
      // Signed by the application: the receipt names this signature.
      item.signature = item.document.signature().signature();
      unsent_.push_back(id);
      action = NextWriteLocked();
      call = current_.call.get();
    }
  }
  if (sign) {
    connection_->SignShared(
        this, std::move(digest),
        [this, id](absl::StatusOr<v1::Signature> s, bool last) {
          OnSigned(id, std::move(s), last);
        });
    return;
  }
  RunWriteAction(call, action);
}

void SendStreamImpl::OnSigned(uint64_t id,
                              absl::StatusOr<v1::Signature> signature,
                              bool last) {
  WriteAction action = WriteAction::kNone;
  Call* call = nullptr;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(id);  // gone: failed or expired meanwhile
    if (it != pending_.end() && it->second.signing) {
      Item& item = it->second;
      item.signing = false;
      if (signature.ok()) {
        item.signature = signature->signature();
        *item.document.mutable_signature() = *std::move(signature);
      } else {
        // Sent unsigned: the broker's refusal names what is missing.
        gpr_log(GPR_ERROR, "lienthong: signing a document: %s",
                signature.status().ToString().c_str());
      }
      unsent_.push_back(id);
    }
    // This stream's documents of one batch go out together, in one write
    // when no other is in flight.
    if (last) {
      action = NextWriteLocked();
      call = current_.call.get();
    }
  }
  RunWriteAction(call, action);
  absl::MutexLock lock(&mu_);
  --awaiting_signature_;
}

absl::Status SendStreamImpl::Close() {
  if (std::this_thread::get_id() == worker_.get_id()) {
    return absl::FailedPreconditionError(
        "SendStream::Close must not be called from a SendStream callback");
  }
  WriteAction action = WriteAction::kNone;
  Call* call = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (!closing_) {
      closing_ = true;
      if (!EndedLocked() && current_.call == nullptr && pending_.empty()) {
        // Between two calls with nothing left to send: done.
        finished_ = true;
        reconnect_pending_ = false;
      } else {
        action = NextWriteLocked();
        call = current_.call.get();
      }
    }
  }
  RunWriteAction(call, action);
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &SendStreamImpl::ClosedLocked));
  return failed_ ? failure_ : absl::OkStatus();
}

SendStreamImpl::WriteAction SendStreamImpl::NextWriteLocked() {
  CallState& c = current_;
  if (c.call == nullptr || !c.started || c.write_busy || c.writes_done ||
      c.broken || c.read_done || c.cancelled) {
    return WriteAction::kNone;
  }
  v1::SendStreamRequest* request = c.call->write_buffer();
  request->Clear();
  size_t bytes = 0;
  while (!unsent_.empty() && request->items_size() < kMaxItemsPerSendMessage &&
         bytes < kMaxBytesPerSendMessage) {
    const uint64_t id = unsent_.front();
    unsent_.pop_front();
    auto it = pending_.find(id);
    if (it == pending_.end()) continue;  // answered meanwhile
    Item& pending = it->second;
    v1::SendStreamItem* item = request->add_items();
    item->set_correlation_id(id);
    // Lend the document to the request; OnWriteDone gives it back.
    item->mutable_document()->Swap(&pending.document);
    pending.in_write = true;
    bytes += item->document().ByteSizeLong();
  }
  if (request->items_size() > 0) {
    c.write_busy = true;
    return WriteAction::kWrite;
  }
  if (closing_ && pending_.empty()) {
    c.write_busy = true;
    c.writes_done = true;
    c.writes_done_at = absl::Now();
    return WriteAction::kWritesDone;
  }
  return WriteAction::kNone;
}

void SendStreamImpl::RunWriteAction(Call* call, WriteAction action) {
  switch (action) {
    case WriteAction::kNone:
      return;
    case WriteAction::kWrite:
      call->StartWrite(call->write_buffer());
      return;
    case WriteAction::kWritesDone:
      call->StartWritesDone();
      return;
  }
}

SendStreamImpl::Call* SendStreamImpl::ReleaseHoldLocked() {
  CallState& c = current_;
  if (c.call == nullptr || !c.started || !c.read_done || c.write_busy ||
      c.hold_released) {
    return nullptr;
  }
  c.hold_released = true;
  return c.call.get();
}

void SendStreamImpl::CompleteLocked(uint64_t correlation_id,
                                    absl::StatusOr<SendReceipt> result) {
  auto it = pending_.find(correlation_id);
  if (it == pending_.end()) return;
  if (!result.ok())
    result = WithIdempotencyKey(result.status(), it->second.idempotency_key);
  completions_.push_back({std::move(it->second.done), std::move(result)});
  pending_.erase(it);
}

void SendStreamImpl::HandleResultLocked(v1::SendStreamResult& result,
                                        absl::Time now) {
  const uint64_t id = result.correlation_id();
  auto it = pending_.find(id);
  if (it == pending_.end()) return;  // already answered, or not ours
  Item& item = it->second;
  if (result.has_accepted()) {
    // The document may still be lent to a write: use what was kept.
    completions_.emplace_back(
        std::move(item.done),
        Accepted{std::move(*result.mutable_accepted()),
                 std::move(item.idempotency_key), std::move(item.digest),
                 std::move(item.signature), item.sealed});
    pending_.erase(it);
    return;
  }
  absl::Status status =
      result.has_error()
          ? FromWireError(result.error())
          : absl::UnknownError(
                "the broker answered with neither a receipt nor an error");
  if (IsRetryable(static_cast<grpc::StatusCode>(status.code()),
                  RetryOn::kUnavailableOrDeadline)) {
    const ClientOptions& options = connection_->options();
    absl::Duration delay = FullJitter(jitter_, options.initial_backoff,
                                      options.max_backoff, item.retries);
    if (now + delay < item.submitted_at + options.retry_budget) {
      ++item.retries;
      item.awaiting_retry = true;
      item.written_at = absl::InfinitePast();
      retry_at_.emplace(now + delay, id);
      return;
    }
  }
  CompleteLocked(id, std::move(status));
}

void SendStreamImpl::FailAllLocked(const absl::Status& status) {
  for (auto& [id, item] : pending_) {
    completions_.push_back({std::move(item.done),
                            WithIdempotencyKey(status, item.idempotency_key)});
  }
  pending_.clear();
  unsent_.clear();
  retry_at_.clear();
}

void SendStreamImpl::ExpireLocked(absl::Time now, const absl::Status& why) {
  const absl::Duration budget = connection_->options().retry_budget;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now >= it->second.submitted_at + budget) {
      completions_.push_back(
          {std::move(it->second.done),
           WithIdempotencyKey(why, it->second.idempotency_key)});
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

bool SendStreamImpl::StalledLocked(absl::Time now) const {
  const CallState& c = current_;
  const absl::Duration timeout = connection_->options().call_timeout;
  if (c.call == nullptr || !c.started || c.read_done ||
      now - c.last_answer_at < timeout) {
    return false;
  }
  for (const auto& [id, item] : pending_) {
    if (item.written_at != absl::InfinitePast() &&
        now - item.written_at >= timeout) {
      return true;
    }
  }
  return false;
}

void SendStreamImpl::OnReadDone(Call* call, bool ok) {
  WriteAction action = WriteAction::kNone;
  Call* release = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (ok) {
      const absl::Time now = absl::Now();
      for (v1::SendStreamResult& result :
           *call->read_buffer()->mutable_results()) {
        HandleResultLocked(result, now);
      }
      current_.last_answer_at = now;
      backoff_.Reset();
      action = NextWriteLocked();  // maybe the half-close Close waits for
    } else {
      current_.read_done = true;
      release = ReleaseHoldLocked();
    }
  }
  RunWriteAction(call, action);
  if (ok) call->StartRead(call->read_buffer());
  if (release != nullptr) release->RemoveHold();
}

void SendStreamImpl::OnWriteDone(Call* call, bool ok) {
  WriteAction action = WriteAction::kNone;
  Call* release = nullptr;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    // Take the documents back, for a resubmission should the stream break.
    for (v1::SendStreamItem& written : *call->write_buffer()->mutable_items()) {
      auto it = pending_.find(written.correlation_id());
      if (it == pending_.end() || !it->second.in_write) continue;
      Item& item = it->second;
      item.document.Swap(written.mutable_document());
      item.in_write = false;
      if (ok && !item.awaiting_retry) item.written_at = now;
    }
    call->write_buffer()->Clear();
    current_.write_busy = false;
    if (!ok) current_.broken = true;
    action = NextWriteLocked();
    release = ReleaseHoldLocked();
  }
  RunWriteAction(call, action);
  if (release != nullptr) release->RemoveHold();
}

void SendStreamImpl::OnWritesDoneDone(Call* call, bool ok) {
  Call* release = nullptr;
  {
    absl::MutexLock lock(&mu_);
    current_.write_busy = false;
    if (!ok) current_.broken = true;
    release = ReleaseHoldLocked();
  }
  if (release != nullptr) release->RemoveHold();
}

void SendStreamImpl::OnCallDone(Call* call, const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  const bool stalled = current_.stalled;
  const bool cancelled_by_us = current_.cancelled;
  finished_calls_.push_back(std::move(current_.call));
  current_ = CallState();
  // What was queued for this call is resubmitted on the next one.
  unsent_.clear();
  retry_at_.clear();
  for (auto& [id, item] : pending_) {
    item.awaiting_retry = false;
    item.written_at = absl::InfinitePast();
  }

  if (cancel_requested_) {
    failure_ = absl::CancelledError(
        "SendStream destroyed before Close; the document may or may not "
        "have been accepted");
    failed_ = true;
    FailAllLocked(failure_);
    return;
  }
  if (closing_ && pending_.empty()) {
    finished_ = true;
    return;
  }
  absl::Status why;
  bool retry = true;
  if (stalled) {
    why = absl::DeadlineExceededError(
        "no answer from the broker on the send stream within call_timeout");
  } else if (status.ok()) {
    why = absl::UnavailableError(
        "the broker ended the send stream before answering every document");
  } else {
    why = FromGrpcStatus(status);
    const grpc::StatusCode code = status.error_code();
    retry = IsRetryable(code, RetryOn::kUnavailableOrDeadline) ||
            (code == grpc::StatusCode::CANCELLED && !cancelled_by_us);
  }
  if (!retry) {
    failure_ = why;
    failed_ = true;
    FailAllLocked(why);
    return;
  }
  const absl::Time now = absl::Now();
  ExpireLocked(now, why);
  if (closing_ && pending_.empty()) {
    finished_ = true;
    return;
  }
  endpoint_ = connection_->FailOver(endpoint_);
  reconnect_pending_ = true;
  reconnect_at_ = now + backoff_.Next();
}

absl::Time SendStreamImpl::NextTimerLocked() const {
  absl::Time next = absl::InfiniteFuture();
  if (reconnect_pending_) next = std::min(next, reconnect_at_);
  if (!retry_at_.empty()) next = std::min(next, retry_at_.begin()->first);
  if (current_.call != nullptr && !current_.cancelled) {
    if (current_.writes_done) {
      next = std::min(
          next, current_.writes_done_at + connection_->options().call_timeout);
    } else if (!pending_.empty()) {
      // Look for a silent broker once a second.
      next = std::min(next, absl::Now() + absl::Seconds(1));
    }
  }
  return next;
}

bool SendStreamImpl::WorkerHasWorkLocked() const {
  return worker_stop_ || !completions_.empty() || !finished_calls_.empty() ||
         NextTimerLocked() < worker_wake_at_ ||
         (cancel_requested_ &&
          (reconnect_pending_ || (current_.call != nullptr &&
                                  current_.started && !current_.cancelled)));
}

void SendStreamImpl::StartCall(Call* call, size_t endpoint) {
  connection_->stub(endpoint).async()->SendStream(call->context(), call);
  call->AddHold();  // released once reading ended and no write is out
  call->StartRead(call->read_buffer());
  call->StartCall();
  WriteAction action = WriteAction::kNone;
  Call* release = nullptr;
  {
    absl::MutexLock lock(&mu_);
    current_.started = true;
    action = NextWriteLocked();
    release = ReleaseHoldLocked();
  }
  RunWriteAction(call, action);
  if (release != nullptr) release->RemoveHold();
}

void SendStreamImpl::WorkerLoop() {
  while (true) {
    std::deque<Completion> batch;
    std::vector<std::unique_ptr<Call>> dead;
    Call* to_cancel = nullptr;
    Call* write_call = nullptr;
    WriteAction action = WriteAction::kNone;
    Call* new_call = nullptr;
    size_t new_call_endpoint = 0;
    {
      absl::MutexLock lock(&mu_);
      worker_wake_at_ = NextTimerLocked();
      mu_.AwaitWithDeadline(
          absl::Condition(this, &SendStreamImpl::WorkerHasWorkLocked),
          worker_wake_at_);
      dead.swap(finished_calls_);
      if (worker_stop_ && completions_.empty()) break;
      const absl::Time now = absl::Now();
      batch.swap(completions_);
      callbacks_left_ = batch.size();

      CallState& c = current_;
      if (c.call != nullptr && c.started && !c.cancelled) {
        const absl::Duration timeout = connection_->options().call_timeout;
        if (cancel_requested_ || StalledLocked(now) ||
            (c.writes_done && now >= c.writes_done_at + timeout)) {
          c.stalled = !cancel_requested_ && !c.writes_done;
          c.cancelled = true;
          to_cancel = c.call.get();
        }
      }
      // A document the broker has not answered for call_timeout while the
      // call goes on (answering others) is written again, with its key (so
      // stored once), until its retry budget runs out; then it fails. Looked
      // for once a second.
      if (c.call != nullptr && c.started && !c.cancelled &&
          now >= next_sweep_) {
        next_sweep_ = now + absl::Seconds(1);
        const ClientOptions& o = connection_->options();
        std::vector<uint64_t> expired;
        for (auto& [id, item] : pending_) {
          if (item.signing || item.in_write || item.awaiting_retry ||
              item.written_at == absl::InfinitePast() ||
              now < item.written_at + o.call_timeout)
            continue;
          if (now >= item.submitted_at + o.retry_budget) {
            expired.push_back(id);
            continue;
          }
          item.written_at = absl::InfinitePast();
          ++item.retries;
          unsent_.push_back(id);
        }
        for (uint64_t id : expired) {
          CompleteLocked(id, absl::DeadlineExceededError(absl::StrCat(
                                 "the broker did not answer within the retry "
                                 "budget (",
                                 absl::FormatDuration(o.retry_budget), ")")));
        }
      }

      // Resubmissions that are due.
      while (!retry_at_.empty() && retry_at_.begin()->first <= now) {
        auto it = pending_.find(retry_at_.begin()->second);
        retry_at_.erase(retry_at_.begin());
        if (it == pending_.end()) continue;
        it->second.awaiting_retry = false;
        unsent_.push_back(it->first);
      }
      action = NextWriteLocked();
      if (action != WriteAction::kNone) write_call = c.call.get();

      if (reconnect_pending_ && (now >= reconnect_at_ || cancel_requested_)) {
        reconnect_pending_ = false;
        if (cancel_requested_) {
          failure_ = absl::CancelledError("SendStream destroyed before Close");
          failed_ = true;
          FailAllLocked(failure_);
        } else if (closing_ && pending_.empty()) {
          finished_ = true;
        } else {
          current_ = CallState();
          current_.call = std::make_unique<Call>(this);
          current_.last_answer_at = now;
          unsent_.clear();
          retry_at_.clear();
          for (auto& [id, item] : pending_) {
            item.awaiting_retry = false;
            item.written_at = absl::InfinitePast();
            // One still being signed joins when its signature comes.
            if (!item.signing) unsent_.push_back(id);
          }
          new_call = current_.call.get();
          new_call_endpoint = endpoint_;
        }
      }
    }
    dead.clear();
    if (to_cancel != nullptr) to_cancel->context()->TryCancel();
    RunWriteAction(write_call, action);
    if (new_call != nullptr) StartCall(new_call, new_call_endpoint);
    for (Completion& completion : batch) {
      if (completion.done) {
        if (completion.accepted) {
          const Accepted& a = *completion.accepted;
          completion.result = connection_->Receipt(
              a.response, a.idempotency_key, a.sealed, a.digest, a.signature);
        }
        try {
          completion.done(std::move(completion.result));
        } catch (...) {
          // An application callback threw; the SDK thread carries on.
        }
      }
      absl::MutexLock lock(&mu_);
      --callbacks_left_;  // room for a Submit waiting
    }
  }
}

}  // namespace lienthong::client_internal
