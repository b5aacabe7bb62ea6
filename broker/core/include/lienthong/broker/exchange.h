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

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lienthong/broker/audit.h"
#include "lienthong/broker/routing.h"
#include "lienthong/common/clock.h"
#include "lienthong/common/identity.h"
#include "lienthong/common/metrics.h"
#include "lienthong/common/sealing.h"
#include "lienthong/policy/policy.h"
#include "lienthong/signing/signing.h"
#include "lienthong/storage/attachments.h"
#include "lienthong/storage/store.h"
#include "lienthong/v1/approvals.pb.h"
#include "lienthong/v1/exchange.pb.h"
#include "lienthong/v1/federation.pb.h"

namespace lienthong::broker {

// The role the built-in approval rule asks for.
inline constexpr char kApproverRole[] = "approver";

// A person's approver role: `role` (e.g. "approver") for `orgs`.
struct ApproverGrant {
  std::string person;  // SPIFFE id
  std::string role = kApproverRole;
  std::vector<std::string> orgs;
};

// A check on a document an organization sends, beyond the exchange's own,
// that may add to the write that stores it (incidents: a re-digitized
// document settles its paper-register entry in the same atomic write).
class SendAdmission {
 public:
  virtual ~SendAdmission() = default;
  // Called after validation and policy, with the document's id assigned,
  // just before the write. An error refuses the send (nothing is stored);
  // on OK, Finished runs exactly once when the write has ended. Must not
  // block for long.
  virtual absl::Status Admit(const Principal& caller,
                             const v1::Document& document,
                             storage::WriteBatch* batch) = 0;
  // `stored`: the batch was applied (false when it failed or was a
  // duplicate of an earlier document).
  virtual void Finished(const v1::Document& document, bool stored) = 0;
};

struct ExchangeOptions {
  // SPIFFE id of this broker, recorded in each document's trace. Required.
  std::string broker_id;
  // Decides every flow and records the decisions (not owned; must outlive
  // the exchange). Required.
  policy::ServedPolicy* policy = nullptr;
  // Organizations this broker serves, and their names (parallel; may be
  // shorter) for the federation directory.
  std::vector<std::string> local_orgs;
  std::vector<std::string> local_org_names;
  // Peer brokers with the route table. A recipient neither local nor
  // routable is NOT_FOUND. Empty: a broker on its own.
  std::vector<PeerRoute> peers;
  // Most brokers on a document's trace; a transfer that would exceed it is
  // DENIED. Default 8.
  uint32_t max_hops = 8;
  // A peer not heard from for this long is stale in the directory.
  absl::Duration directory_stale_after = absl::Seconds(90);
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
  // Checks an encryption certificate an organization publishes (PEM or
  // DER): normally sealing::VerifyEncryptionCertificate with the broker's
  // trust root, trust domain and the current time. Unset: publishing is
  // refused with FAILED_PRECONDITION.
  std::function<absl::StatusOr<sealing::EncryptionCertificate>(
      absl::string_view certificate)>
      verify_encryption_certificate;

  // Verifies senders' signatures (signing::VerifyDocumentSignature) on
  // every document sent here or handed over by a peer broker. Unset: a
  // signed document is refused with FAILED_PRECONDITION.
  std::shared_ptr<const signing::SignatureVerifier> signatures;
  // Refuse unsigned documents (FAILED_PRECONDITION), from organizations and
  // from peer brokers alike. lienthongd's security.require_signatures
  // (default true) sets it; requires `signatures`.
  bool require_signatures = false;

  // Where stored attachments (Attachment.stored) are kept: a document
  // referencing one is accepted only when its sender (or, from a peer, the
  // peer broker) uploaded it completely. Not owned. Unset: such documents
  // are refused with FAILED_PRECONDITION.
  storage::AttachmentStore* attachments = nullptr;

  // Persons who may approve held documents (see approvals.proto), with the
  // role they hold and the organizations they hold it for. A document whose
  // origin is a system or an AI and which carries a personnel decision
  // always needs the role kApproverRole of its sender; a permit's
  // `approval` obligation names others.
  std::vector<ApproverGrant> approvers;
  // A held document not approved within this long expires. Default 72 h.
  absl::Duration approval_expiry = absl::Hours(72);

  // Records every status event (accepted, forwarded, delivered, reported,
  // denied) and every refused send in the audit log, each event on the
  // write that stores it. Not owned; must outlive the exchange. Optional.
  AuditLog* audit = nullptr;

  // Incidents: an extra check on sends (not owned; optional), and the
  // notices a Receive stream gets when it opens (optional).
  SendAdmission* admission = nullptr;
  std::function<std::vector<v1::Notice>(const std::string& org)>
      notices_on_connect;

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

// One federation link's view of a queue for a peer: the outbox (documents
// waiting for the peer) on the link this broker dialed, or the status events
// waiting to go back to the peer on the link the peer dialed. Items go out
// in queue order, at most `window` unacknowledged; closing the session (the
// link broke) makes them go out again on the next link.
struct LinkItems {
  std::vector<v1::Transfer> transfers;
  std::vector<v1::ReturnedEvent> events;
};
using LinkSink = absl::AnyInvocable<void(LinkItems)>;

class PeerLinkSession {
 public:
  virtual ~PeerLinkSession() = default;
  // The peer holds these transfers durably (or refused them for good):
  // they leave the outbox and FORWARDED (or DENIED) is recorded.
  virtual void Custody(std::vector<v1::Custody> custody) = 0;
  // The peer stored these returned events.
  virtual void EventsStored(std::vector<uint64_t> ids) = 0;
  // No item reaches the sink after Close returns. Idempotent.
  virtual void Close() = 0;
};

// What the peer on the other end of a link hands to this broker, processed
// in the order given (so per-sender order survives the hop).
class InboundLink {
 public:
  virtual ~InboundLink() = default;
  // Takes custody of a transfer: `done` runs once it is durable here, with
  // the Custody to send back (carrying an error for a transfer refused for
  // good). A transfer seen before is acknowledged again, not stored twice.
  virtual void Accept(v1::Transfer transfer,
                      absl::AnyInvocable<void(v1::Custody)> done) = 0;
  // Accept for each, in this order (the transfers of one link message):
  // their writes share commits and syncs.
  virtual void AcceptAll(
      std::vector<
          std::pair<v1::Transfer, absl::AnyInvocable<void(v1::Custody)>>>
          transfers) {
    for (auto& [t, done] : transfers) Accept(std::move(t), std::move(done));
  }
  // Stores a status event the peer returns (and passes it on towards the
  // document's sender); `done` runs with OK once durable (then acknowledge
  // it), or the error. A returned event seen before is not stored twice.
  virtual void Returned(v1::ReturnedEvent event,
                        absl::AnyInvocable<void(absl::Status)> done) = 0;
};

// A peer's queues, for operators.
struct PeerQueueStats {
  std::string peer;
  uint64_t outbox = 0;                      // transfers waiting or in flight
  uint64_t outbox_in_flight = 0;            // handed to a link, no custody yet
  std::optional<absl::Time> oldest_outbox;  // since it entered the outbox
  uint64_t returns = 0;                     // status events waiting to go back
  bool outbound_link = false;               // a link we dialed is open
  bool inbound_link = false;                // a link the peer dialed is open
  // False for a broker no longer in the configuration whose queues still
  // hold something: it waits there until the peer is configured again.
  bool configured = true;
};

// An organization's queue, for operators.
struct OrgQueueStats {
  std::string org;
  uint64_t waiting = 0;    // copies not yet acknowledged (in flight included)
  uint64_t in_flight = 0;  // handed out, not yet acknowledged
  std::optional<absl::Time> oldest;  // entered the queue (or broker start)
};

// What the exchange counts, for /metrics. Every member is thread-safe.
struct ExchangeMetrics {
  Counter accepted;    // documents accepted from this broker's senders
  CounterVec refused;  // sends refused, nothing stored: by status code name
  Counter delivered;   // copies acknowledged by their recipients here
  // Copies denied after acceptance, by where: "delivery" (the policy at
  // hand-out), "arrival" (this broker refused a copy a peer handed over),
  // "peer" (a peer refused a transfer for good).
  CounterVec denied;
  Counter transfers_out;  // transfers a peer took into custody
  Counter transfers_in;   // transfers taken from peers
  Counter events_in;      // status events peers returned
  // Send received → durable answer (accepted sends only).
  Histogram send_seconds{Histogram::LatencyBounds()};
  // Accepted at the document's first broker → acknowledged here.
  Histogram delivery_seconds{Histogram::LatencyBounds()};
};

struct ExchangeStats {
  uint64_t queued = 0;    // copies waiting or in flight
  uint64_t leased = 0;    // in flight
  uint64_t accepted = 0;  // documents accepted since start
  uint64_t delivered = 0;
  uint64_t held_for_approval = 0;  // documents waiting for an approval
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
  // FAILED_PRECONDITION (classification out of scope; unsigned when
  // signatures are required), ALREADY_EXISTS (the idempotency key was used
  // for different content). A signature that does not verify is
  // INVALID_ARGUMENT, one by another organization or with an untrusted,
  // expired or revoked certificate PERMISSION_DENIED. The response carries
  // the custody receipt, unsigned: the service layer signs it.
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
    // Send for each, in this order (the documents of one stream message):
    // their writes share commits and syncs.
    virtual void SendAll(
        const Principal& caller,
        std::vector<std::pair<v1::Document, Callback<v1::SendResponse>>>
            documents) {
      for (auto& [d, done] : documents)
        Send(caller, std::move(d), std::move(done));
    }
  };
  virtual std::unique_ptr<SendSequence> NewSendSequence() = 0;

  // Opens a flow-controlled delivery session for the caller's org. The first
  // deliveries may reach `sink` before this returns.
  virtual absl::StatusOr<std::shared_ptr<ReceiveSession>> OpenReceive(
      const Principal& caller, uint32_t max_in_flight, DeliverySink sink) = 0;

  // Hands `notice` to every open Receive session of `org` (nothing to
  // acknowledge, not stored); returns how many there were.
  virtual size_t Notify(const std::string& org, const v1::Notice& notice) = 0;

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

  // ---- End-to-end encryption directory ----

  // Makes `request.certificate` the caller's encryption certificate: the
  // one senders seal for. The caller must be an organization this broker
  // serves (PERMISSION_DENIED), the certificate must verify
  // (options.verify_encryption_certificate: INVALID_ARGUMENT or
  // FAILED_PRECONDITION saying why) and name the caller (PERMISSION_DENIED).
  // Durable when `done` runs with OK; announced to peers from then on.
  virtual void PublishEncryptionCertificate(
      const Principal& caller,
      const v1::PublishEncryptionCertificateRequest& request,
      Callback<v1::PublishEncryptionCertificateResponse> done) = 0;
  // The certificates of `request.orgs` that this broker serves or its
  // directory knows (INVALID_ARGUMENT for a malformed code or more than 1000
  // orgs). Callers verify them against their own trust root.
  virtual void GetEncryptionCertificates(
      const Principal& caller,
      const v1::GetEncryptionCertificatesRequest& request,
      Callback<v1::GetEncryptionCertificatesResponse> done) = 0;

  // ---- Approvals (see approvals.proto) ----

  // Held documents the caller may approve (`all`: every held document, for
  // operators and auditors), oldest first. INVALID_ARGUMENT for a malformed
  // org or a limit above 1000.
  virtual void ListApprovals(const Principal& caller, bool all,
                             const v1::ListApprovalsRequest& request,
                             Callback<v1::ListApprovalsResponse> done) = 0;
  // Records the caller's decision. PERMISSION_DENIED for a caller holding no
  // approver role; NOT_FOUND for a document not waiting for the caller's
  // role; FAILED_PRECONDITION for a content hash that is not the document's;
  // INVALID_ARGUMENT naming the field (decision, content_sha256, comment);
  // ABORTED while another decision on the same document is being stored.
  // Durable when `done` runs with OK: the copies are then on their way
  // (released), denied (rejected), or still held for other approvals.
  virtual void DecideApproval(const Principal& caller,
                              const v1::DecideApprovalRequest& request,
                              Callback<v1::DecideApprovalResponse> done) = 0;

  virtual ExchangeStats Stats() = 0;
  virtual std::vector<OrgQueueStats> OrgStats() = 0;
  // For operators: a document and its status with every recipient's row and
  // the full history, whoever sent it. The caller must not hand out its
  // content. INVALID_ARGUMENT for a malformed id, NOT_FOUND when this broker
  // never had it.
  virtual absl::StatusOr<std::pair<v1::Document, v1::DocumentStatus>> Inspect(
      const std::string& document_id) = 0;
  // The evidence of a document (its receipt and the evidence unsigned: the
  // service layer signs them). Errors as Inspect. May block on storage.
  virtual absl::StatusOr<v1::Evidence> Evidence(
      const std::string& document_id) = 0;
  // The same for an organization that sent or received the document
  // (NOT_FOUND otherwise, as for a document that does not exist).
  virtual void GetEvidence(const Principal& caller,
                           const v1::GetEvidenceRequest& request,
                           Callback<v1::Evidence> done) = 0;
  // The stored attachment `sha256` of a document the caller sent or
  // received (its copy not denied), for AttachmentService/Download.
  // NOT_FOUND alike when the document does not exist, the caller has no
  // part in it, or it references no such stored attachment. May block on
  // storage.
  virtual absl::StatusOr<v1::Attachment> FindAttachment(
      const Principal& caller, const std::string& document_id,
      const std::string& sha256) = 0;
  // Whether document `id` is stored here, whoever may see it: for the
  // broker's own bookkeeping, never to be told to a caller. May block on
  // storage.
  virtual bool HoldsDocument(const std::string& id) = 0;
  virtual const ExchangeMetrics& metrics() const = 0;

  // ---- Paper conversion ----

  // Records that the caller converted a document it sent or received (its
  // copy not denied) to paper. INVALID_ARGUMENT naming `reason` (required)
  // or `converted_by`; NOT_FOUND when the caller has no part in the
  // document (as for one that does not exist); PERMISSION_DENIED naming the
  // policy version and rules when a permit of the document's flow (as
  // decided on acceptance, or by the serving policy now) carries the
  // obligation paper_conversion_forbidden. Otherwise the conversion record,
  // its audit entry and a status event (seen by the document's sender, and
  // returned to the sender's broker) are stored in one durable write.
  virtual void RecordPaperConversion(
      const Principal& caller, const v1::RecordPaperConversionRequest& request,
      Callback<v1::RecordPaperConversionResponse> done) = 0;
  // The caller's own conversions recorded at this broker, newest first.
  virtual void ListPaperConversions(
      const Principal& caller, const v1::ListPaperConversionsRequest& request,
      Callback<v1::ListPaperConversionsResponse> done) = 0;
  // The same for any organization `org`, for operators and auditors.
  // INVALID_ARGUMENT for a malformed org or a limit above 1000. May block on
  // storage.
  virtual absl::StatusOr<std::vector<v1::PaperConversion>> PaperConversions(
      const std::string& org, uint32_t limit) = 0;

  // ---- Federation (the link layer calls these) ----

  // Opens the session for `peer`'s outbox (INVALID_ARGUMENT for a broker
  // that is not a peer). A new session replaces the previous one.
  virtual absl::StatusOr<std::shared_ptr<PeerLinkSession>> OpenOutbound(
      const std::string& peer, uint32_t window, LinkSink sink) = 0;
  // Opens the session for the status events going back to `peer`.
  virtual absl::StatusOr<std::shared_ptr<PeerLinkSession>> OpenReturn(
      const std::string& peer, uint32_t window, LinkSink sink) = 0;
  // Inbound processing for one link from `peer`.
  virtual absl::StatusOr<std::unique_ptr<InboundLink>> OpenInbound(
      const std::string& peer) = 0;
  // Directory: what `peer` announced, and what to announce to it. Entries
  // that are malformed or inconsistent (a peer speaking for a broker it is
  // not, a distance that does not match the path, one at the hop limit) are
  // left out; INVALID_ARGUMENT then names how many and the first defect, for
  // the log. The rest is learned either way.
  virtual absl::Status LearnDirectory(const std::string& peer,
                                      const v1::Announce& announce) = 0;
  virtual v1::Announce AnnounceTo(const std::string& peer) = 0;
  // Grows whenever what this broker announces may have changed (an
  // organization published an encryption certificate, a peer announced
  // something new): links announce again at once instead of waiting for
  // their interval.
  virtual uint64_t directory_generation() const = 0;
  virtual const Router& router() const = 0;
  virtual std::vector<PeerQueueStats> PeerStats() = 0;

  // Ends waiting long polls with UNAVAILABLE so the server can stop quickly.
  // Call before shutting the server down.
  virtual void Shutdown() = 0;
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_EXCHANGE_H_
