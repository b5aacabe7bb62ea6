#include "client-sdk/src/receive_session.h"

#include <grpc/support/log.h>

#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client-sdk/src/credentials.h"
#include "lienthong/common/thread_name.h"

namespace lienthong::client_internal {
namespace {

// A call that lived this long had a working connection: the next reconnect
// starts again from the first backoff.
constexpr absl::Duration kHealthyCallAge = absl::Seconds(30);

}  // namespace

// The reactor of one Receive RPC. Owned by ReceiveSessionImpl: the current
// call in current_.call, then, after OnDone, in finished_calls_ until the
// driver deletes it.
class ReceiveSessionImpl::Call final
    : public grpc::ClientBidiReactor<v1::ReceiveRequest, v1::ReceiveResponse> {
 public:
  explicit Call(ReceiveSessionImpl* session) : session_(session) {}

  grpc::ClientContext* context() { return &context_; }
  v1::ReceiveRequest* write_buffer() { return &write_buffer_; }
  v1::ReceiveResponse* read_buffer() { return &read_buffer_; }

  void OnReadDone(bool ok) override { session_->OnReadDone(this, ok); }
  void OnWriteDone(bool ok) override { session_->OnWriteDone(this, ok); }
  void OnDone(const grpc::Status& status) override {
    session_->OnCallDone(this, status);
  }

 private:
  ReceiveSessionImpl* const session_;
  grpc::ClientContext context_;
  v1::ReceiveRequest write_buffer_;  // owned by whoever set write_busy
  v1::ReceiveResponse read_buffer_;
};

ReceiveSessionImpl::ReceiveSessionImpl(std::shared_ptr<Connection> connection,
                                       Client::Handler handler,
                                       const ReceiveOptions& options)
    : connection_(std::move(connection)),
      handler_(std::move(handler)),
      options_(options),
      endpoint_(connection_->preferred_endpoint()),
      backoff_(connection_->options().initial_backoff,
               connection_->options().max_backoff) {
  for (int i = 0; i < options_.handler_threads; ++i) {
    handlers_.emplace_back([this] {
      NameThisThread("lt-sdk-handler");
      HandlerLoop();
    });
  }
  driver_ = std::thread([this] {
    NameThisThread("lt-sdk-receive");
    DriverLoop();
  });
  // Connect only now, so that no thread runs user code before every thread
  // object is in place (IsOwnThread reads them).
  absl::MutexLock lock(&mu_);
  reconnect_pending_ = true;
  reconnect_at_ = absl::Now();
}

ReceiveSessionImpl::~ReceiveSessionImpl() { Stop(); }

bool ReceiveSessionImpl::IsOwnThread() const {
  const std::thread::id self = std::this_thread::get_id();
  if (self == driver_.get_id()) return true;
  for (const std::thread& t : handlers_) {
    if (self == t.get_id()) return true;
  }
  return false;
}

void ReceiveSessionImpl::Stop() {
  if (IsOwnThread()) {
    // From a handler: request the stop and let Wait return; the threads are
    // joined by the next Stop from outside (at the latest the destructor).
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    finished_ = true;
    return;
  }
  absl::MutexLock stop_lock(&stop_mu_);
  if (joined_) return;
  {
    absl::MutexLock lock(&mu_);
    // A graceful stop: what the application has handled is acknowledged
    // before the call ends (bounded), so the broker records DELIVERED now
    // instead of delivering it again to the next session.
    mu_.AwaitWithTimeout(
        absl::Condition(this, &ReceiveSessionImpl::AcksFlushedLocked),
        kStopFlushTimeout);
    stopping_ = true;
  }
  driver_.join();  // returns once the call is cancelled and done
  for (std::thread& t : handlers_) t.join();
  joined_ = true;

  // Handled but not acknowledged: the broker will deliver these again, and
  // the dedup set (on disk too) must recognize them then.
  std::vector<std::string> handled;
  {
    absl::MutexLock lock(&mu_);
    handled.swap(handled_);
  }
  if (absl::Status s = connection_->dedup().Persist(handled); !s.ok()) {
    gpr_log(GPR_ERROR, "lienthong: %s", s.ToString().c_str());
  }
  absl::MutexLock lock(&mu_);
  finished_ = true;
}

absl::Status ReceiveSessionImpl::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&finished_));
  return final_status_;
}

bool ReceiveSessionImpl::AcksFlushedLocked() const {
  const CallState& c = current_;
  const bool usable = c.call != nullptr && c.started && !c.broken &&
                      !c.read_done && !c.cancelled;
  if (!usable || ended_) return true;  // nothing can go out any more
  return handled_.empty() && acks_.empty() && nacks_.empty() && !c.write_busy;
}

bool ReceiveSessionImpl::CanWriteAcksLocked() const {
  const CallState& c = current_;
  return c.call != nullptr && c.started && !c.write_busy && !c.broken &&
         !c.read_done && !c.cancelled &&
         (!handled_.empty() || !acks_.empty() || !nacks_.empty());
}

ReceiveSessionImpl::Call* ReceiveSessionImpl::ReleaseHoldLocked() {
  CallState& c = current_;
  if (c.call == nullptr || !c.started || !c.read_done || c.write_busy ||
      c.hold_released) {
    return nullptr;
  }
  c.hold_released = true;
  return c.call.get();
}

void ReceiveSessionImpl::OnReadDone(Call* call, bool ok) {
  if (!ok) {
    Call* release = nullptr;
    {
      absl::MutexLock lock(&mu_);
      current_.read_done = true;
      release = ReleaseHoldLocked();
    }
    if (release != nullptr) release->RemoveHold();
    return;
  }
  // Notices first (nothing to acknowledge); the application's callback
  // runs here and must not block.
  if (options_.on_notice) {
    for (const v1::Notice& notice : call->read_buffer()->notices())
      options_.on_notice(notice);
  }
  // Dedup lookups take only the dedup set's own short lock.
  std::vector<IncomingDocument> fresh;
  std::vector<std::string> seen = connection_->TakeUnseen(
      call->read_buffer()->mutable_deliveries(), &fresh);
  {
    absl::MutexLock lock(&mu_);
    for (IncomingDocument& incoming : fresh) {
      const std::string& id = incoming.document.id();
      if (!handling_.insert(id).second) continue;
      // Handled since the lookup above (the handler records a document as
      // seen before it leaves handling_): acknowledge, do not hand it over
      // a second time.
      if (connection_->dedup().Contains(id)) {
        handling_.erase(id);
        acks_.push_back(id);
        continue;
      }
      work_.push_back(std::move(incoming));
    }
    // Documents coming in show the call works; notices alone (sent as a
    // call opens) do not, or a broker that sends them and drops the call
    // would be called again at once, forever.
    if (!fresh.empty() || !seen.empty()) backoff_.Reset();
    for (std::string& id : seen) acks_.push_back(std::move(id));
  }
  call->StartRead(call->read_buffer());
}

void ReceiveSessionImpl::OnWriteDone(Call* call, bool ok) {
  Call* release = nullptr;
  {
    absl::MutexLock lock(&mu_);
    CallState& c = current_;
    c.write_busy = false;
    if (!ok) {
      c.broken = true;
      // Already recorded in the dedup set: ack only, on the next call.
      for (std::string& id : c.acks_in_write) acks_.push_back(std::move(id));
      for (std::string& id : c.nacks_in_write) nacks_.push_back(std::move(id));
    }
    c.acks_in_write.clear();
    c.nacks_in_write.clear();
    call->write_buffer()->Clear();
    release = ReleaseHoldLocked();
  }
  if (release != nullptr) release->RemoveHold();
}

void ReceiveSessionImpl::OnCallDone(Call* call,
                                    const grpc::Status& call_status) {
  // Outside the lock: on a refused handshake this reads the certificate
  // (and CRL) files, a few small local reads.
  const grpc::Status status =
      ExplainConnectFailure(connection_->options(), call_status);
  absl::MutexLock lock(&mu_);
  const absl::Time opened_at = current_.opened_at;
  finished_calls_.push_back(std::move(current_.call));
  current_ = CallState();
  if (stopping_ || ended_) return;
  if (EndsLongLivedStream(status.error_code())) {
    EndLocked(FromGrpcStatus(status));
    return;
  }
  const absl::Time now = absl::Now();
  // A broker that closes every new connection at the handshake for a whole
  // retry budget refuses this certificate: end rather than retry unseen.
  if (!IsClosedAtHandshake(status)) {
    refused_since_ = absl::InfiniteFuture();
  } else if (refused_since_ == absl::InfiniteFuture()) {
    refused_since_ = now;
  } else if (now - refused_since_ >= connection_->options().retry_budget) {
    EndLocked(FromGrpcStatus(status));
    return;
  }
  if (now - opened_at >= kHealthyCallAge) backoff_.Reset();
  endpoint_ = connection_->FailOver(endpoint_);
  reconnect_pending_ = true;
  reconnect_at_ = now + backoff_.Next();
}

bool ReceiveSessionImpl::DriverHasWorkLocked() const {
  if (!finished_calls_.empty()) return true;
  // A reconnect due earlier than the driver means to wake up.
  if (reconnect_pending_ && reconnect_at_ < driver_wake_at_) return true;
  // So is a held nack.
  if (!held_nacks_.empty() && held_nacks_.begin()->first < driver_wake_at_)
    return true;
  if (stopping_ || ended_) {
    // Cancel the call, or leave once it is done.
    return current_.call == nullptr ||
           (current_.started && !current_.cancelled);
  }
  // Handled documents are recorded at once, call or no call.
  return CanWriteAcksLocked() || !handled_.empty();
}

bool ReceiveSessionImpl::HandlerHasWorkLocked() const {
  return stopping_ || ended_ || !work_.empty();
}

void ReceiveSessionImpl::StartCall(Call* call, size_t endpoint) {
  connection_->stub(endpoint).async()->Receive(call->context(), call);
  call->AddHold();  // released once reading ended and no write is out
  call->StartWrite(call->write_buffer());  // ReceiveStart
  call->StartRead(call->read_buffer());
  call->StartCall();
  Call* release = nullptr;
  {
    absl::MutexLock lock(&mu_);
    current_.started = true;
    release = ReleaseHoldLocked();
  }
  if (release != nullptr) release->RemoveHold();
}

void ReceiveSessionImpl::DriverLoop() {
  while (true) {
    std::vector<std::unique_ptr<Call>> dead;
    std::vector<std::string> to_record;
    std::vector<std::string> record_only;
    Call* to_cancel = nullptr;
    Call* write_call = nullptr;
    Call* new_call = nullptr;
    size_t new_call_endpoint = 0;
    bool leave = false;
    {
      absl::MutexLock lock(&mu_);
      driver_wake_at_ =
          reconnect_pending_ ? reconnect_at_ : absl::InfiniteFuture();
      if (!held_nacks_.empty())
        driver_wake_at_ = std::min(driver_wake_at_, held_nacks_.begin()->first);
      mu_.AwaitWithDeadline(
          absl::Condition(this, &ReceiveSessionImpl::DriverHasWorkLocked),
          driver_wake_at_);
      dead.swap(finished_calls_);
      CallState& c = current_;
      if (stopping_ || ended_) {
        reconnect_pending_ = false;
        if (c.call != nullptr && c.started && !c.cancelled) {
          c.cancelled = true;
          to_cancel = c.call.get();
        }
        leave = c.call == nullptr;
      } else {
        const absl::Time due = absl::Now();
        while (!held_nacks_.empty() && held_nacks_.begin()->first <= due) {
          nacks_.push_back(std::move(held_nacks_.begin()->second));
          held_nacks_.erase(held_nacks_.begin());
        }
        if (CanWriteAcksLocked()) {
          // Everything ready now goes into one ReceiveAck.
          to_record.swap(handled_);
          v1::ReceiveAck* ack = c.call->write_buffer()->mutable_ack();
          for (const std::string& id : to_record) ack->add_document_ids(id);
          for (const std::string& id : acks_) ack->add_document_ids(id);
          for (const std::string& id : nacks_) ack->add_nack_document_ids(id);
          c.acks_in_write = to_record;
          c.acks_in_write.insert(c.acks_in_write.end(),
                                 std::make_move_iterator(acks_.begin()),
                                 std::make_move_iterator(acks_.end()));
          c.nacks_in_write = std::move(nacks_);
          acks_.clear();
          nacks_.clear();
          c.write_busy = true;
          write_call = c.call.get();
        } else if (!handled_.empty()) {
          // No call to acknowledge them on now (the broker is away, or a
          // write is in flight): recorded in the state file all the same, so
          // a crash meanwhile cannot hand them to the application again;
          // they are acknowledged with the next write.
          record_only.swap(handled_);
        }
        const absl::Time now = absl::Now();
        if (reconnect_pending_ && now >= reconnect_at_) {
          reconnect_pending_ = false;
          current_ = CallState();
          current_.call = std::make_unique<Call>(this);
          current_.opened_at = now;
          current_.write_busy = true;  // the ReceiveStart message
          current_.call->write_buffer()->mutable_start()->set_max_in_flight(
              options_.max_in_flight);
          new_call = current_.call.get();
          new_call_endpoint = endpoint_;
        }
      }
    }
    dead.clear();
    if (to_cancel != nullptr) to_cancel->context()->TryCancel();
    if (!record_only.empty()) {
      if (absl::Status s = connection_->dedup().Persist(record_only); !s.ok()) {
        gpr_log(GPR_ERROR, "lienthong: %s", s.ToString().c_str());
      }
      absl::MutexLock lock(&mu_);
      for (std::string& id : record_only) acks_.push_back(std::move(id));
    }
    if (write_call != nullptr) {
      // Durable before the broker hears of it: a crash after the ack then
      // cannot hand the document to the application twice.
      if (absl::Status s = connection_->dedup().Persist(to_record); !s.ok()) {
        gpr_log(GPR_ERROR, "lienthong: %s", s.ToString().c_str());
      }
      write_call->StartWrite(write_call->write_buffer());
    }
    if (new_call != nullptr) StartCall(new_call, new_call_endpoint);
    if (leave) return;
  }
}

void ReceiveSessionImpl::HandlerLoop() {
  while (true) {
    IncomingDocument incoming;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(
          absl::Condition(this, &ReceiveSessionImpl::HandlerHasWorkLocked));
      if (stopping_ || ended_) return;
      incoming = std::move(work_.front());
      work_.pop_front();
    }
    // Every document's signature is verified (one ECDSA check per signed
    // batch: the verifier caches) and a sealed one is opened.
    const std::string sealed_id = incoming.document.id();
    {
      std::vector<IncomingDocument> one;
      one.push_back(std::move(incoming));
      std::vector<std::string> rejected;
      absl::Status opened = connection_->VerifyAndOpen(&one, &rejected);
      if (absl::IsUnavailable(opened)) {
        // This side cannot check it for now (no current CRL of its signer's
        // issuer, say while an operator replaces it): not the document's
        // fault. Tried again after a pause while the session goes on, for
        // at most max_unchecked.
        {
          absl::MutexLock lock(&mu_);
          handling_.erase(sealed_id);
          if (unchecked_since_.size() > 10000) unchecked_since_.clear();
          const absl::Time now = absl::Now();
          const absl::Time since =
              unchecked_since_.emplace(sealed_id, now).first->second;
          if (now - since >= options_.max_unchecked) {
            EndLocked(absl::UnavailableError(
                absl::StrCat(opened.message(), "; document ", sealed_id,
                             " could not be checked for ",
                             absl::FormatDuration(options_.max_unchecked))));
            return;
          }
          DeferLocked(sealed_id);
        }
        if (options_.on_deferred) options_.on_deferred(sealed_id, opened);
        continue;
      }
      if (!opened.ok() || one.empty()) {
        absl::MutexLock lock(&mu_);
        handling_.erase(sealed_id);
        if (!opened.ok()) {
          // A problem of this side that waiting does not cure (no key for
          // it): not the document's. It stays queued at the broker; the
          // application hears of it from Wait.
          EndLocked(opened);
          return;
        }
        // Rejected (already remembered as seen): acknowledge. Not
        // reported: deliver again later, to report it again.
        if (rejected.empty()) {
          nacks_.push_back(sealed_id);
        } else {
          for (std::string& id : rejected) acks_.push_back(std::move(id));
        }
        continue;
      }
      incoming = std::move(one.front());
    }
    absl::Status status;
    try {
      status = handler_(incoming);
    } catch (const std::exception& e) {
      status = absl::InternalError(
          absl::StrCat("the receive handler threw: ", e.what()));
    } catch (...) {
      status = absl::InternalError("the receive handler threw");
    }
    const std::string& id = incoming.document.id();
    if (status.ok()) connection_->dedup().Insert(id);
    {
      absl::MutexLock lock(&mu_);
      handling_.erase(id);
      if (status.ok()) {
        failures_.erase(id);
        unchecked_since_.erase(id);
        handled_.push_back(id);
      } else {
        DeferLocked(id);
      }
    }
    if (!status.ok() && options_.on_deferred) options_.on_deferred(id, status);
  }
}

void ReceiveSessionImpl::EndLocked(absl::Status status) {
  if (stopping_ || ended_) return;
  ended_ = true;
  finished_ = true;
  final_status_ = std::move(status);
  work_.clear();  // undelivered: the broker sends them again later
}

void ReceiveSessionImpl::DeferLocked(const std::string& id) {
  if (failures_.size() > 10000) failures_.clear();  // bounded
  const int failed = ++failures_[id];
  const absl::Duration delay =
      std::min(absl::Seconds(1) * (int64_t{1} << std::min(failed - 1, 6)),
               absl::Seconds(60));
  held_nacks_.emplace(absl::Now() + delay, id);
}

}  // namespace lienthong::client_internal
