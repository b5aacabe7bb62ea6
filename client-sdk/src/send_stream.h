// SendStream over the bidirectional SendStream RPC, with gRPC's callback API.
// Internal to the SDK.
//
// How it works:
//  - Submit gives the document a correlation id and hands its digest to the
//    client's signing::BatchSigner, shared by all its streams: at most one
//    ECDSA signature per ClientOptions::signature_batch_interval (5 ms)
//    over the Merkle root of every document waiting, from any stream (an
//    idle client signs at once). Signed documents are queued and written
//    as soon as no write is in flight; everything queued goes out in one
//    SendStreamRequest (up to 256 items or about 4 MiB).
//    This coalescing is what lets one client carry tens of thousands of
//    documents a second: one ECDSA signature costs as much as hashing dozens
//    of documents, for the sender and for every party that verifies it.
//  - Documents are moved, not copied, into the request being written and
//    moved back when the write completes, so each one stays available for a
//    resubmission until the broker answered it.
//  - Answers are matched by correlation id; callbacks run on the stream's
//    own worker thread, never while a lock is held and never on a gRPC
//    thread.
//  - When the stream breaks (UNAVAILABLE, or the broker ends it early) the
//    worker reopens it on the next endpoint after a backoff and resubmits
//    every unanswered document with the same idempotency key, which the
//    broker de-duplicates. A document not answered within retry_budget of
//    its Submit fails with the last error. An item answered UNAVAILABLE or
//    DEADLINE_EXCEEDED is resubmitted in the same way. A stream on which
//    nothing is answered for call_timeout while documents wait is treated as
//    broken.
//  - Any other error ending the stream fails every unanswered document with
//    that status, and later Submits at once.
//
// Documents of one stream may be accepted out of Submit order when some are
// resubmitted; use Send, or wait for the callback, when order matters.
#ifndef LIENTHONG_CLIENT_SDK_SRC_SEND_STREAM_H_
#define LIENTHONG_CLIENT_SDK_SRC_SEND_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client-sdk/src/backoff.h"
#include "client-sdk/src/connection.h"
#include "lienthong/client.h"

namespace lienthong::client_internal {

inline constexpr int kMaxItemsPerSendMessage = 256;
inline constexpr size_t kMaxBytesPerSendMessage = 4 << 20;

class SendStreamImpl final : public SendStream {
 public:
  // Starts connecting at once. `max_outstanding` > 0.
  SendStreamImpl(std::shared_ptr<Connection> connection,
                 size_t max_outstanding);
  // Without a prior Close: cancels the stream and fails every unanswered
  // document with CANCELLED. Runs the remaining callbacks, then returns.
  // Must not run on the stream's callback thread.
  ~SendStreamImpl() override;

  // Thread-safe. Blocks while max_outstanding documents await answers
  // (except when called from a callback, which never blocks). After
  // Close, or after the stream failed, `done` gets FAILED_PRECONDITION or
  // that failure (on the callback thread).
  void Submit(v1::Document document, Callback done) override;

  // Waits until every submitted document is answered and its callback ran,
  // then half-closes and finishes the RPC. OK, or the error that failed the
  // stream. FAILED_PRECONDITION when called from a callback. Idempotent.
  absl::Status Close() override;

 private:
  class Call;

  struct Item {
    v1::Document document;  // lent to the write buffer while in_write
    std::string digest;     // signing::DocumentDigest of the document
    std::string signature;  // its signature's bytes, once signed
    bool sealed = false;
    std::string idempotency_key;
    Callback done;
    absl::Time submitted_at;
    absl::Time written_at = absl::InfinitePast();  // on the current call
    int retries = 0;  // answered UNAVAILABLE / DEADLINE_EXCEEDED so far
    bool in_write = false;
    bool awaiting_retry = false;  // in retry_at_
    bool signing = false;         // with the batcher; not in unsent_ yet
  };
  // What the broker accepted, with what was sent: its custody receipt is
  // verified on the worker thread, not on gRPC's under the lock.
  struct Accepted {
    v1::SendResponse response;
    std::string idempotency_key;
    std::string digest;
    std::string signature;
    bool sealed = false;
  };
  struct Completion {
    Completion(Callback d, absl::StatusOr<SendReceipt> r)
        : done(std::move(d)), result(std::move(r)) {}
    Completion(Callback d, Accepted a)
        : done(std::move(d)),
          result(absl::UnknownError("the receipt is not checked yet")),
          accepted(std::move(a)) {}
    Callback done;
    absl::StatusOr<SendReceipt> result;
    std::optional<Accepted> accepted;  // set: `result` is made from it
  };
  // The RPC in progress; there is at most one, and the next starts only
  // after OnDone of the previous.
  struct CallState {
    std::unique_ptr<Call> call;
    bool started = false;      // StartCall issued
    bool write_busy = false;   // a write or writes-done is (about to be) out
    bool writes_done = false;  // half-closed
    bool broken = false;       // a write failed: write no more
    bool read_done = false;    // the read side ended
    bool hold_released = false;
    bool cancelled = false;  // TryCancel issued by us
    bool stalled = false;    // cancelled because the broker went silent
    absl::Time last_answer_at;
    absl::Time writes_done_at = absl::InfiniteFuture();
  };
  enum class WriteAction { kNone, kWrite, kWritesDone };

  // The batcher signed (or could not sign) pending document `id`: it is
  // queued for writing, and written with the others of its batch once it is
  // the `last` of this stream's.
  void OnSigned(uint64_t id, absl::StatusOr<v1::Signature> signature,
                bool last);
  // Reactions, forwarded by Call.
  void OnReadDone(Call* call, bool ok);
  void OnWriteDone(Call* call, bool ok);
  void OnWritesDoneDone(Call* call, bool ok);
  void OnCallDone(Call* call, const grpc::Status& status);

  // Decides the next write on the current call and fills its buffer; the
  // caller issues it with RunWriteAction after unlocking.
  WriteAction NextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void RunWriteAction(Call* call, WriteAction action);
  // The call whose hold may now be released (caller calls RemoveHold after
  // unlocking), or null.
  Call* ReleaseHoldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleResultLocked(v1::SendStreamResult& result, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CompleteLocked(uint64_t correlation_id,
                      absl::StatusOr<SendReceipt> result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailAllLocked(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireLocked(absl::Time now, const absl::Status& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool StalledLocked(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time NextTimerLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool WorkerHasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool EndedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ClosedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool CanSubmitLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WorkerLoop();
  void StartCall(Call* call, size_t endpoint);

  const std::shared_ptr<Connection> connection_;
  const size_t max_outstanding_;

  mutable absl::Mutex mu_;
  uint64_t next_correlation_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Submitted and not yet answered, in Submit order.
  absl::btree_map<uint64_t, Item> pending_ ABSL_GUARDED_BY(mu_);
  // Pending ids to write on the current call, in order.
  std::deque<uint64_t> unsent_ ABSL_GUARDED_BY(mu_);
  // Pending ids answered UNAVAILABLE, to resubmit at the given time.
  std::multimap<absl::Time, uint64_t> retry_at_ ABSL_GUARDED_BY(mu_);
  absl::BitGen jitter_ ABSL_GUARDED_BY(mu_);

  CallState current_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Call>> finished_calls_ ABSL_GUARDED_BY(mu_);
  size_t endpoint_ ABSL_GUARDED_BY(mu_);
  Backoff backoff_ ABSL_GUARDED_BY(mu_);
  bool reconnect_pending_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time reconnect_at_ ABSL_GUARDED_BY(mu_);
  // When the worker wakes up at the latest; an earlier timer wakes it.
  absl::Time worker_wake_at_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  // Documents handed to the batcher whose OnSigned has not finished: the
  // destructor waits for them.
  size_t awaiting_signature_ ABSL_GUARDED_BY(mu_) = 0;

  bool closing_ ABSL_GUARDED_BY(mu_) = false;   // Close called
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // closed after all answers
  bool failed_ ABSL_GUARDED_BY(mu_) = false;    // ended by failure_
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;

  std::deque<Completion> completions_ ABSL_GUARDED_BY(mu_);
  // When the worker next looks for documents left unanswered on a call.
  absl::Time next_sweep_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Callbacks of the batch running that have not returned yet (Close waits
  // for them).
  size_t callbacks_left_ ABSL_GUARDED_BY(mu_) = 0;
  bool worker_stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

}  // namespace lienthong::client_internal

#endif  // LIENTHONG_CLIENT_SDK_SRC_SEND_STREAM_H_
