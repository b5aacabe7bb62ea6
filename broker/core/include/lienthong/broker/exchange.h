// The broker core's document exchange: accepts documents from authenticated
// organizations, stores them durably, queues one copy per recipient, hands
// them out with flow control and acknowledgement, and records every status
// event. Knows nothing of gRPC: the service layer turns RPCs into these calls.
//
//   ASSIGN_OR_RETURN(auto exchange, Exchange::Open(options, store.get()));
//   exchange->Send(caller, document, [](absl::StatusOr<v1::SendResponse> r)
//   {...}); auto session = exchange->OpenReceive(caller, 256, sink);
//   session->Ack({"01J..."}, {});
//
// All methods are thread-safe. Callbacks and sinks run on core threads, never
// while a core lock is held, and must not block.
#ifndef LIENTHONG_BROKER_EXCHANGE_H_
#define LIENTHONG_BROKER_EXCHANGE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lienthong/common/clock.h"
#include "lienthong/common/identity.h"
#include "lienthong/policy/policy.h"
#include "lienthong/storage/store.h"
#include "lienthong/v1/exchange.pb.h"

namespace lienthong::broker {

struct ExchangeOptions {
  // SPIFFE id of this broker, recorded in each document's trace. Required.
  std::string broker_id;
  // Decides every flow and records the decisions (not owned; must outlive
  // the exchange). Required.
  policy::ServedPolicy* policy = nullptr;
  // Organizations this broker serves; a recipient outside them is NOT_FOUND.
  std::vector<std::string> local_orgs;
  // Largest serialized document, bytes. Default 16 MiB.
  size_t max_document_bytes = 16 << 20;
  // Most recipients of one document. Default 1000.
  size_t max_recipients = 1000;
  // Longest idempotency key, bytes. Default 128.
  size_t max_idempotency_key_bytes = 128;
  // Receive stream window when the client asks for 0. Default 256.
  uint32_t default_max_in_flight = 256;
  // Lease of a fetched document when the client asks for 0. Default 60 s.
  absl::Duration default_fetch_lease = absl::Seconds(60);
  // Documents kept in memory for fast delivery, bytes. Default 256 MiB.
  size_t delivery_cache_bytes = 256 << 20;
  // Threads for blocking work. Default 4.
  int worker_threads = 4;

  absl::Status Validate() const;
};

// Where a session's deliveries go. Must not block.
using DeliverySink = absl::AnyInvocable<void(v1::ReceiveResponse)>;

// One Receive stream's view of its org's queue.
class ReceiveSession {
 public:
  virtual ~ReceiveSession() = default;
  // Acknowledges (removes from the queue, records DELIVERED) and negatively
  // acknowledges (back to the queue at once) documents this session holds.
  // Unknown ids are ignored: they were acknowledged before.
  virtual void Ack(std::vector<std::string> ids,
                   std::vector<std::string> nack_ids) = 0;
  // Ends the session: the sink is not called after Close returns and every
  // document it held unacknowledged becomes deliverable again. Idempotent.
  virtual void Close() = 0;
};

// Where a watch's events go, in sequence order. Returns false when the
// watcher cannot keep up (its owner then ends the watch). An error status is
// the last call: the core ended the watch (RESOURCE_EXHAUSTED when it fell
// too far behind while replaying).
using EventSink = absl::AnyInvocable<bool(absl::StatusOr<v1::StatusEvent>)>;

class WatchSession {
 public:
  virtual ~WatchSession() = default;
  // No event reaches the sink after Close returns. Idempotent.
  virtual void Close() = 0;
};

struct ExchangeStats {
  uint64_t queued = 0;    // copies waiting or in flight
  uint64_t leased = 0;    // in flight
  uint64_t accepted = 0;  // documents accepted since start
  uint64_t delivered = 0;
};

class Exchange {
 public:
  template <typename T>
  using Callback = absl::AnyInvocable<void(absl::StatusOr<T>)>;

  // Rebuilds the delivery index from `store` (not owned; must outlive the
  // exchange). INVALID_ARGUMENT for bad options; the store's error otherwise.
  static absl::StatusOr<std::unique_ptr<Exchange>> Open(
      const ExchangeOptions& options, storage::Store* store,
      Clock* clock = Clock::Real());
  virtual ~Exchange() = default;

  // Accepts `document` from `caller`; `done` runs once it is durable, or with
  // INVALID_ARGUMENT naming the field, PERMISSION_DENIED (sender is not the
  // caller, or the policy does not permit the flow to some recipient: the
  // message names the recipient, policy version and rules; nothing is
  // stored), NOT_FOUND (unknown recipient), RESOURCE_EXHAUSTED (size limit,
  // the broker's or a permit's max_size),
  // FAILED_PRECONDITION (classification out of scope), ALREADY_EXISTS (the
  // idempotency key was used for different content).
  virtual void Send(const Principal& caller, v1::Document document,
                    Callback<v1::SendResponse> done) = 0;

  // Sends through one SendSequence enter the recipients' queues in the order
  // they were made, even though validation and storage run on several
  // threads: what a pipelined SendStream needs to keep per-sender order.
  // Destroying it does not cancel sends already made.
  class SendSequence {
   public:
    virtual ~SendSequence() = default;
    virtual void Send(const Principal& caller, v1::Document document,
                      Callback<v1::SendResponse> done) = 0;
  };
  virtual std::unique_ptr<SendSequence> NewSendSequence() = 0;

  // Opens a flow-controlled delivery session for the caller's org. The first
  // deliveries may reach `sink` before this returns.
  virtual absl::StatusOr<std::shared_ptr<ReceiveSession>> OpenReceive(
      const Principal& caller, uint32_t max_in_flight, DeliverySink sink) = 0;

  virtual void Fetch(const Principal& caller, const v1::FetchRequest& request,
                     Callback<v1::FetchResponse> done) = 0;
  virtual void Ack(const Principal& caller, const v1::AckRequest& request,
                   Callback<v1::AckResponse> done) = 0;
  virtual void ListInbox(const Principal& caller,
                         const v1::ListInboxRequest& request,
                         Callback<v1::ListInboxResponse> done) = 0;
  virtual void ReportStatus(const Principal& caller,
                            const v1::ReportStatusRequest& request,
                            Callback<v1::ReportStatusResponse> done) = 0;
  virtual void GetDocumentStatus(const Principal& caller,
                                 const v1::GetDocumentStatusRequest& request,
                                 Callback<v1::DocumentStatus> done) = 0;

  // Replays the caller's events after `after_sequence`, then follows live
  // ones. `done` runs with the session or an error (NOT_FOUND for a document
  // the caller did not send).
  virtual void Watch(const Principal& caller,
                     const v1::WatchStatusRequest& request, EventSink sink,
                     Callback<std::shared_ptr<WatchSession>> done) = 0;

  virtual ExchangeStats Stats() = 0;

  // Ends waiting long polls with UNAVAILABLE so the server can stop quickly.
  // Call before shutting the server down.
  virtual void Shutdown() = 0;
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_EXCHANGE_H_
