// ReceiveSession over the bidirectional Receive RPC, with gRPC's callback
// API. Internal to the SDK.
//
// How it works:
//  - Each call opens with ReceiveStart{max_in_flight}; the broker then sends
//    deliveries and never has more than max_in_flight unacknowledged ones
//    out, which also bounds the work queue here.
//  - A delivery whose id is in the dedup set is acknowledged without calling
//    the handler; one already queued or being handled is skipped (its ack or
//    nack, by document id, follows when the handler is done).
//  - Handler threads (ReceiveOptions::handler_threads) take deliveries in
//    arrival order. OK: the id goes into the dedup set and is acknowledged;
//    an error: it is nacked and will be delivered again.
//  - One driver thread writes the acks: it takes every id ready at that
//    moment, appends the handled ones to the dedup state file with a single
//    sync, then writes one ReceiveAck. While that write is out, more ids
//    gather for the next one. The driver also reconnects (next endpoint,
//    backoff) when the stream breaks, and cancels the call on Stop.
//  - PERMISSION_DENIED, UNAUTHENTICATED, INVALID_ARGUMENT,
//    FAILED_PRECONDITION, NOT_FOUND, UNIMPLEMENTED (see EndsLongLivedStream)
//    end the session: Wait returns that status. Anything else reconnects.
#ifndef LIENTHONG_CLIENT_SDK_SRC_RECEIVE_SESSION_H_
#define LIENTHONG_CLIENT_SDK_SRC_RECEIVE_SESSION_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client-sdk/src/backoff.h"
#include "client-sdk/src/connection.h"
#include "lienthong/client.h"

namespace lienthong::client_internal {

class ReceiveSessionImpl final : public ReceiveSession {
 public:
  // Starts connecting and the handler threads at once. `options` must be
  // valid (checked by Client::Receive).
  ReceiveSessionImpl(std::shared_ptr<Connection> connection,
                     Client::Handler handler, const ReceiveOptions& options);
  // Stop(). Must not run on a handler thread.
  ~ReceiveSessionImpl() override;

  // Cancels the stream, lets a running handler finish, joins the threads and
  // records in the dedup state file what was handled but not yet acked. No
  // handler runs after it returns. Idempotent and thread-safe; called from a
  // handler it only asks the session to stop (it cannot join its own thread),
  // lets Wait return, and returns at once: a later Stop from another thread
  // (or the destructor) joins the threads.
  void Stop() override;

  // Blocks until Stop returned or a status that ends the session arrived;
  // returns OK or that status. Thread-safe.
  absl::Status Wait() override;

 private:
  class Call;

  struct CallState {
    std::unique_ptr<Call> call;
    bool started = false;  // StartCall issued
    bool write_busy =
        false;            // the start message or an ack is (about to be) out
    bool broken = false;  // a write failed: write no more
    bool read_done = false;
    bool hold_released = false;
    bool cancelled = false;
    absl::Time opened_at;
    // The ids in the ack being written: sent again on the next call if the
    // write fails (acks and nacks are by document id, so that is harmless).
    std::vector<std::string> acks_in_write;
    std::vector<std::string> nacks_in_write;
  };

  void OnReadDone(Call* call, bool ok);
  void OnWriteDone(Call* call, bool ok);
  void OnCallDone(Call* call, const grpc::Status& status);

  Call* ReleaseHoldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stop waits (at most kStopFlushTimeout) until this holds: every handled
  // document's acknowledgement is written, or none can be any more.
  bool AcksFlushedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static constexpr absl::Duration kStopFlushTimeout = absl::Seconds(2);
  bool CanWriteAcksLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool DriverHasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HandlerHasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IsOwnThread() const;
  void DriverLoop();
  void HandlerLoop();
  // Puts `id` back, to be delivered again after a pause that doubles with
  // each failure of it (1 s to 60 s).
  void DeferLocked(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the session with `status` (what Wait returns), unless it is ending.
  void EndLocked(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartCall(Call* call, size_t endpoint);

  const std::shared_ptr<Connection> connection_;
  const Client::Handler handler_;
  const ReceiveOptions options_;

  // Lock order: stop_mu_ before mu_.
  absl::Mutex stop_mu_;
  bool joined_ ABSL_GUARDED_BY(stop_mu_) = false;

  mutable absl::Mutex mu_ ABSL_ACQUIRED_AFTER(stop_mu_);
  std::deque<IncomingDocument> work_ ABSL_GUARDED_BY(mu_);
  // Ids queued or being handled.
  absl::flat_hash_set<std::string> handling_ ABSL_GUARDED_BY(mu_);
  // Handled OK: to record in the dedup state file, then ack.
  std::vector<std::string> handled_ ABSL_GUARDED_BY(mu_);
  // To ack only (duplicates, or already recorded).
  std::vector<std::string> acks_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> nacks_ ABSL_GUARDED_BY(mu_);
  // Documents the handler failed on, nacked only when their time comes (a
  // handler failing because, say, the application's database is down would
  // otherwise get each back at once, again and again), and how many times
  // in a row each failed (for the delay: 1 s, doubling, at most 60 s).
  std::multimap<absl::Time, std::string> held_nacks_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> failures_ ABSL_GUARDED_BY(mu_);
  // Since when each document this side could not check has been coming back.
  absl::flat_hash_map<std::string, absl::Time> unchecked_since_
      ABSL_GUARDED_BY(mu_);

  CallState current_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Call>> finished_calls_ ABSL_GUARDED_BY(mu_);
  size_t endpoint_ ABSL_GUARDED_BY(mu_);
  Backoff backoff_ ABSL_GUARDED_BY(mu_);
  bool reconnect_pending_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time reconnect_at_ ABSL_GUARDED_BY(mu_);
  // Since when every call has ended with the broker closing the connection
  // at the TLS handshake; InfiniteFuture when the last one did not.
  absl::Time refused_since_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  absl::Time driver_wake_at_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();

  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;     // by an ending status
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Wait may return
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);

  std::thread driver_;
  std::vector<std::thread> handlers_;
};

}  // namespace lienthong::client_internal

#endif  // LIENTHONG_CLIENT_SDK_SRC_RECEIVE_SESSION_H_
