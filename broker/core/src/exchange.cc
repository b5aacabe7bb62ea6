#include "lienthong/broker/exchange.h"

#include <atomic>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "broker/core/src/validation.h"
#include "google/protobuf/util/time_util.h"
#include "lienthong/audit/chain.h"
#include "lienthong/broker/executor.h"
#include "lienthong/common/ids.h"
#include "lienthong/common/org_code.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/policy/proto_convert.h"

namespace lienthong::broker {
namespace {

using google::protobuf::Timestamp;
using Key = std::pair<int, uint64_t>;  // (priority, sequence): queue order

constexpr uint64_t kFetchOwner = 1;  // owner id of fetch leases
constexpr size_t kMaxDeliveriesPerMessage = 256;
// What one link may have sent and not yet had custody of, besides its
// window (a count): large documents stop a link before its window does.
constexpr size_t kMaxLinkBytesInFlight = 64 << 20;
constexpr size_t kMaxBytesPerMessage = 4 << 20;
// How long the sync of a write nobody waits on at once (a recipient's
// acknowledgement, an event coming back from a peer) may wait for another
// write (a document's) to share it. Its effects are visible only once it is
// durable all the same; a lone one is synced when this runs out.
constexpr absl::Duration kSharedSyncWait = absl::Milliseconds(5);
// What one peer's directory may hold: entries, and bytes of a name.
constexpr int kMaxDirectoryEntries = 100000;
constexpr size_t kMaxDirectoryText = 512;
constexpr size_t kMaxWatchBuffer = 100'000;
// Store records of published encryption certificates: this prefix + org.
constexpr absl::string_view kCertificateRecord = "encryption-certificate/";
// Largest encryption certificate accepted or relayed, bytes.
constexpr size_t kMaxCertificateBytes = 16 << 10;
// Store records of recall/update/replace requests for a copy: this prefix
// + "<document id>/<recipient>" (see ExchangeImpl::AddChangeRequest).
constexpr absl::string_view kRecallRecord = "recall/";
// route/<document id>: where a document that came from a peer and went on
// to another came from, its sender and recipients ("<previous broker>\n
// <sender>\n<r1>,<r2>...").
// A status event coming back for it is checked and sent on with this
// instead of reading (and decrypting) the whole document.
constexpr absl::string_view kRouteRecord = "route/";
// Which peer a forwarded copy went to ("next/<document id>/<recipient>" →
// peer name): status events for that copy are taken from that peer only.
constexpr absl::string_view kNextHopRecord = "next/";
// Store records of paper conversions: this prefix + "<org>/<20-digit unix
// nanos>/<document id>", a serialized v1::PaperConversion.
constexpr absl::string_view kPaperRecord = "paper-conversion/";

// A recall, update or replace request for one recipient's copy, and its
// answer (kPending until the recipient reports 15 or 16).
constexpr int kPending = 0;
constexpr int kAgreed = 1;
constexpr int kRefused = 2;
struct RecallState {
  std::string request_id;  // the RECALL/UPDATE/REPLACE document
  std::string sender;      // its sender (and the sender of the copy)
  v1::BusinessType type = v1::BUSINESS_TYPE_UNSPECIFIED;
  int answer = kPending;
  bool answering = false;  // an answer is being stored (not stored)
};
// Store records of documents held for approval: this prefix + document id
// (a v1::PendingApproval); of content an automated origin sent: this prefix
// + sender + '\0' + content_sha256 (the document id).
constexpr absl::string_view kHeldRecord = "approval/held/";
constexpr absl::string_view kAutomatedRecord = "approval/automated/";

Timestamp ToProto(absl::Time t) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
      absl::ToUnixNanos(t));
}

absl::Status RequireOrg(const Principal& caller) {
  if (!caller.is_org()) {
    return absl::PermissionDeniedError(absl::StrCat(
        caller.spiffe_id,
        " is not an organization; ExchangeService serves organization "
        "certificates only"));
  }
  return absl::OkStatus();
}

absl::Status CheckDocumentId(absl::string_view field, absl::string_view id) {
  if (!IsDocumentId(id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": \"", id,
        "\" is not a document id (26 characters, Crockford base32)"));
  }
  return absl::OkStatus();
}

// Federation queues live beside the organizations' queues in the store,
// under names no organization code can take: ">peer" holds the transfers
// waiting for a peer (the outbox), "<peer" the status events going back to
// it. An outbox entry's payload is "<previous broker>\n<r1>,<r2>..." (the
// broker the document came from, empty at its first broker, and the
// recipients the transfer carries); a return entry's payload is the
// serialized event. A local copy's payload is the broker its document came
// from (empty at the first broker): where its status events go back to.
bool IsLinkQueue(absl::string_view name) {
  return !name.empty() && (name[0] == '>' || name[0] == '<');
}
std::string OutboxName(absl::string_view peer) {
  return absl::StrCat(">", peer);
}
std::string ReturnName(absl::string_view peer) {
  return absl::StrCat("<", peer);
}
std::string OutboxPayload(absl::string_view previous,
                          const std::vector<std::string>& recipients) {
  return absl::StrCat(previous, "\n", absl::StrJoin(recipients, ","));
}
struct OutboxPayloadParts {
  std::string previous;
  std::vector<std::string> recipients;
};
OutboxPayloadParts ParseOutboxPayload(absl::string_view payload) {
  OutboxPayloadParts parts;
  size_t nl = payload.find('\n');
  if (nl == payload.npos) return parts;
  parts.previous = std::string(payload.substr(0, nl));
  for (absl::string_view r :
       absl::StrSplit(payload.substr(nl + 1), ',', absl::SkipEmpty()))
    parts.recipients.emplace_back(r);
  return parts;
}

struct Entry {
  enum class State { kReady, kLeased, kAcking };
  storage::QueueEntry qe;
  uint32_t attempts = 0;
  State state = State::kReady;
  uint64_t owner = 0;
  std::shared_ptr<const v1::Document> doc;  // cached for fast delivery
  size_t cached_bytes = 0;
  absl::Time since;                       // entered the queue (or start)
  std::optional<absl::Time> accepted_at;  // at the first broker, if known
};

class SessionImpl;

struct FetchWaiter {
  uint32_t max = 0;
  absl::Duration lease;
  Exchange::Callback<v1::FetchResponse> done;
  bool finished = false;
};

struct OrgQueue {
  std::map<Key, Entry> entries;
  absl::flat_hash_map<std::string, Key> by_doc;
  std::set<Key> ready;
  std::map<Key, absl::Time> fetch_leases;
  std::vector<std::weak_ptr<SessionImpl>> sessions;
  std::deque<std::shared_ptr<FetchWaiter>> waiters;
};

// A delivery handed out: what Pump/Fetch need to build the message.
struct Handout {
  storage::QueueEntry qe;
  uint32_t attempts;
  std::shared_ptr<const v1::Document> doc;
};

// A copy RecheckDelivery refused, and the lease it was refused under.
struct Withheld {
  v1::StatusEvent event;
  uint64_t owner;
  uint32_t attempts;
};

// One entry of a federation queue.
struct LinkEntry {
  storage::QueueEntry qe;
  bool acking = false;  // being removed
  uint64_t owner = 0;   // session holding it; 0: ready
  absl::Time since;     // entered the queue (or the broker started)
  std::shared_ptr<const v1::Document> doc;  // outbox: cached document
  size_t cached_bytes = 0;
  size_t flight_bytes = 0;  // counted in its holder's in_flight_bytes_
};

// A sink called under its own lock until closed: once Close returns, it is
// never called again (so its owner may go away).
template <typename T>
class ClosableSink {
 public:
  explicit ClosableSink(absl::AnyInvocable<void(T)> sink)
      : sink_(std::move(sink)) {}
  // Calls the sink unless closed. Returns false if closed.
  bool Emit(T value) {
    absl::MutexLock lock(&mu_);
    if (closed_) return false;
    sink_(std::move(value));
    return true;
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    sink_ = nullptr;
  }

 private:
  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::AnyInvocable<void(T)> sink_ ABSL_GUARDED_BY(mu_);
};

class LinkSessionImpl;

struct LinkQueue {
  std::map<Key, LinkEntry> entries;
  absl::flat_hash_map<uint64_t, Key> by_sequence;
  std::set<Key> ready;
  std::weak_ptr<LinkSessionImpl> session;
};

class ExchangeImpl;

class LinkSessionImpl : public PeerLinkSession,
                        public std::enable_shared_from_this<LinkSessionImpl> {
 public:
  LinkSessionImpl(ExchangeImpl* ex, std::string queue, std::string peer,
                  uint64_t id, uint32_t window, LinkSink sink)
      : ex_(ex),
        queue_(std::move(queue)),
        peer_(std::move(peer)),
        id_(id),
        window_(window),
        sink_(std::move(sink)) {}
  void Custody(std::vector<v1::Custody> custody) override;
  void EventsStored(std::vector<uint64_t> ids) override;
  void Close() override;

  ExchangeImpl* const ex_;
  const std::string queue_;
  const std::string peer_;
  const uint64_t id_;
  const uint32_t window_;
  ClosableSink<LinkItems> sink_;

  // Guarded by ExchangeImpl::mu_.
  uint32_t in_flight_ = 0;
  size_t in_flight_bytes_ = 0;
  bool closed_ = false;
  bool pump_scheduled_ = false;
  std::set<Key> held_;
};

class SessionImpl : public ReceiveSession,
                    public std::enable_shared_from_this<SessionImpl> {
 public:
  SessionImpl(ExchangeImpl* ex, std::string org, uint64_t id, uint32_t window,
              DeliverySink sink)
      : ex_(ex),
        org_(std::move(org)),
        id_(id),
        window_(window),
        sink_(std::move(sink)) {}
  void Ack(std::vector<std::string> ids,
           std::vector<std::string> nack_ids) override;
  void Close() override;

  ExchangeImpl* const ex_;
  const std::string org_;
  const uint64_t id_;
  const uint32_t window_;
  ClosableSink<v1::ReceiveResponse> sink_;

  // Guarded by ExchangeImpl::mu_.
  uint32_t in_flight_ = 0;
  bool closed_ = false;
  bool pump_scheduled_ = false;
  std::set<Key> held_;
};

class WatcherImpl : public WatchSession {
 public:
  WatcherImpl(ExchangeImpl* ex, uint64_t id, std::string sender,
              std::string document_id, uint64_t after, EventSink sink)
      : ex_(ex),
        id_(id),
        sender_(std::move(sender)),
        document_id_(std::move(document_id)),
        last_sequence_(after),
        sink_(std::move(sink)) {}

  void Close() override;

  // A live event; buffered while the replay runs.
  void Live(const v1::StatusEvent& e) {
    absl::MutexLock lock(&mu_);
    if (closed_ || !Matches(e)) return;
    if (replaying_) {
      if (buffer_.size() >= kMaxWatchBuffer) {
        overflow_ = true;
        return;
      }
      buffer_.push_back(e);
      return;
    }
    EmitLocked(e);
  }

  // A replayed event, in sequence order.
  void Replayed(const v1::StatusEvent& e) {
    absl::MutexLock lock(&mu_);
    if (closed_ || !Matches(e)) return;
    EmitLocked(e);
  }

  void EndReplay() {
    absl::MutexLock lock(&mu_);
    replaying_ = false;
    if (closed_) return;
    if (overflow_) {
      closed_ = true;
      sink_(absl::ResourceExhaustedError(absl::StrCat(
          "watch fell more than ", kMaxWatchBuffer,
          " events behind; watch again with after_sequence=", last_sequence_)));
      sink_ = nullptr;
      return;
    }
    for (const v1::StatusEvent& e : buffer_) EmitLocked(e);
    buffer_.clear();
  }

  ExchangeImpl* const ex_;
  const uint64_t id_;
  const std::string sender_;
  const std::string document_id_;

 private:
  bool Matches(const v1::StatusEvent& e) const {
    return document_id_.empty() || e.document_id() == document_id_;
  }
  void EmitLocked(const v1::StatusEvent& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (closed_ || e.sequence() <= last_sequence_) return;
    last_sequence_ = e.sequence();
    if (!sink_(e)) {
      closed_ = true;
    }
  }

  absl::Mutex mu_;
  bool replaying_ ABSL_GUARDED_BY(mu_) = true;
  bool overflow_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t last_sequence_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::StatusEvent> buffer_ ABSL_GUARDED_BY(mu_);
  EventSink sink_ ABSL_GUARDED_BY(mu_);
};

class ExchangeImpl : public Exchange {
 public:
  ExchangeImpl(const ExchangeOptions& options, storage::Store* store,
               Clock* clock)
      : options_(options),
        trust_domain_(ParseSpiffeId(options.broker_id)->trust_domain),
        broker_name_(ParseSpiffeId(options.broker_id)->name),
        store_(store),
        policy_(options.policy),
        clock_(clock),
        local_orgs_(options.local_orgs.begin(), options.local_orgs.end()),
        router_(options.peers, options.directory_stale_after),
        timer_(std::make_unique<Timer>()),
        workers_(std::make_unique<WorkerPool>(options.worker_threads)) {}

  ~ExchangeImpl() override {
    Shutdown();
    timer_.reset();
    // Worker tasks start store writes whose callbacks start worker tasks:
    // wait until both are quiet.
    for (;;) {
      workers_->WaitIdle();
      absl::MutexLock lock(&writes_mu_);
      writes_mu_.Await(absl::Condition(
          +[](int* n) { return *n == 0; }, &pending_writes_));
      if (workers_->Idle()) break;
    }
    workers_.reset();
  }

  // Every store write goes through here, so the destructor can wait for them.
  // Entries it adds to federation queues join them once durable (`doc`:
  // the document outbox entries carry, cached for sending).
  void StoreWrite(storage::WriteBatch batch, storage::Store::WriteCallback done,
                  std::shared_ptr<const v1::Document> doc = nullptr) {
    if (options_.audit) AuditEvents(&batch);
    {
      absl::MutexLock lock(&writes_mu_);
      ++pending_writes_;
    }
    storage::Store::WriteCallback callback =
        [this, doc = std::move(doc), done = std::move(done)](
            absl::StatusOr<storage::WriteResult> r) mutable {
          if (r.ok() && !r->duplicate_of) AddLinkEntries(*r, doc);
          done(std::move(r));
          absl::MutexLock lock(&writes_mu_);
          --pending_writes_;
        };
    if (WriteGroup* group = WriteGroup::OpenOn(this)) {
      group->Add(std::move(batch), std::move(callback));
    } else {
      store_->Write(std::move(batch), std::move(callback));
    }
  }

  // While one is open, the store writes this thread makes for the exchange
  // go to the store together (when it closes, and every kMostGrouped): the
  // transfers of one link message or the documents of one stream message
  // share a commit and a sync, where otherwise the first would take its own
  // while the rest are still being checked.
  class WriteGroup {
   public:
    explicit WriteGroup(ExchangeImpl* ex) : ex_(ex) {
      if (current_ == nullptr) current_ = this;
    }
    ~WriteGroup() {
      if (current_ != this) return;  // nested: the outer one writes
      current_ = nullptr;  // a write a callback makes now goes on its own
      Flush();
    }
    WriteGroup(const WriteGroup&) = delete;
    WriteGroup& operator=(const WriteGroup&) = delete;

    static WriteGroup* OpenOn(ExchangeImpl* ex) {
      return current_ != nullptr && current_->ex_ == ex ? current_ : nullptr;
    }
    void Add(storage::WriteBatch batch, storage::Store::WriteCallback done) {
      writes_.emplace_back(std::move(batch), std::move(done));
      if (writes_.size() >= kMostGrouped) Flush();
    }

   private:
    // Bounds how long the first write waits for the rest to be prepared.
    static constexpr size_t kMostGrouped = 32;
    void Flush() {
      // Taken out first: a callback WriteAll runs at once (a write refused
      // before it is queued) may add to writes_.
      auto writes = std::exchange(writes_, {});
      if (!writes.empty()) ex_->store_->WriteAll(std::move(writes));
    }
    static inline thread_local WriteGroup* current_ = nullptr;
    ExchangeImpl* const ex_;
    std::vector<std::pair<storage::WriteBatch, storage::Store::WriteCallback>>
        writes_;
  };

  // One audit entry per status event, on the batch that stores the event.
  void AuditEvents(storage::WriteBatch* batch) {
    for (const v1::StatusEvent& e : batch->events) {
      v1::AuditEntry a;
      *a.mutable_time() = e.at();
      a.set_kind(AuditKindOf(e));
      a.set_actor(e.actor());
      a.set_document_id(e.document_id());
      a.set_org(e.recipient());
      a.set_action(e.has_paper_conversion() ? "PAPER_CONVERSION"
                   : e.business_status() != v1::BUSINESS_STATUS_UNSPECIFIED
                       ? v1::BusinessStatus_Name(e.business_status())
                       : v1::DeliveryState_Name(e.delivery_state()));
      a.set_outcome("OK");
      std::string detail = e.reason();
      if (!e.related_document_id().empty()) {
        absl::StrAppend(&detail, detail.empty() ? "" : "; ",
                        v1::BusinessType_Name(e.related_business_type()), " ",
                        e.related_document_id());
      }
      if (e.has_paper_conversion() &&
          !e.paper_conversion().converted_by().empty()) {
        absl::StrAppend(&detail, "; converted by ",
                        e.paper_conversion().converted_by());
      }
      if (e.has_approval()) {
        absl::StrAppend(
            &detail, detail.empty() ? "" : "; ", "approval ",
            v1::ApprovalDecision_Name(e.approval().decision()), " by ",
            e.approval().approver(), " as ", e.approval().role(), "@",
            e.approval().org(), " on content ", e.approval().content_sha256(),
            e.approval().comment().empty() ? "" : ": ", e.approval().comment());
      }
      if (e.has_policy()) {
        absl::StrAppend(&detail, detail.empty() ? "" : "; ", "policy ",
                        e.policy().policy_version(), " rules ",
                        absl::StrJoin(e.policy().rules(), ","));
      }
      a.set_detail(std::move(detail));
      options_.audit->AddTo(batch, std::move(a));
    }
  }

  // One audit entry per copy taken from a peer, on the write that takes it
  // (none when the transfer was taken before): this broker's own log shows
  // what entered its custody, from whom, under which of its rules, and
  // where it goes next, even if the copy is never delivered. (The peer's
  // FORWARDED entry is in the peer's log.)
  void AuditCustodyTaken(
      const std::string& peer, const v1::Document& doc,
      const v1::Custody& custody,
      const std::map<std::string, std::vector<std::string>>& by_peer,
      absl::Time now, storage::WriteBatch* batch) {
    const std::string from =
        SpiffeId(trust_domain_, Principal::Kind::kBroker, peer);
    for (const v1::CopyDecision& copy : custody.copies()) {
      std::string next;
      for (const auto& [next_peer, rs] : by_peer) {
        if (std::find(rs.begin(), rs.end(), copy.recipient()) != rs.end())
          next = next_peer;
      }
      v1::AuditEntry a;
      *a.mutable_time() = ToProto(now);
      a.set_kind(v1::AUDIT_KIND_CUSTODY_TAKEN);
      a.set_actor(from);
      a.set_document_id(doc.id());
      a.set_org(copy.recipient());
      a.set_action("CUSTODY_TAKEN");
      a.set_outcome("OK");
      a.set_detail(absl::StrCat(
          "from broker ", from, "; ",
          next.empty() ? "for delivery here"
                       : absl::StrCat("to go on to broker ",
                                      SpiffeId(trust_domain_,
                                               Principal::Kind::kBroker, next)),
          copy.policy().policy_version().empty()
              ? ""
              : absl::StrCat("; policy ", copy.policy().policy_version(),
                             " rules ",
                             absl::StrJoin(copy.policy().rules(), ","))));
      options_.audit->AddTo(batch, std::move(a));
    }
  }

  // Records a refused send (nothing of it is stored) before answering.
  Callback<v1::SendResponse> AuditRefusal(const Principal& caller,
                                          const v1::Document& doc,
                                          Callback<v1::SendResponse> done) {
    if (!options_.audit) return done;
    return
        [this, actor = caller.spiffe_id,
         org = doc.recipients_size() == 1 ? doc.recipients(0) : doc.sender(),
         done = std::move(done)](absl::StatusOr<v1::SendResponse> r) mutable {
          if (!r.ok()) {
            v1::AuditEntry a;
            a.set_kind(v1::AUDIT_KIND_SEND_REFUSED);
            a.set_actor(actor);
            a.set_org(org);
            a.set_action("Send");
            a.set_outcome(absl::StatusCodeToString(r.status().code()));
            a.set_detail(std::string(r.status().message()));
            options_.audit->Append(std::move(a));
          }
          done(std::move(r));
        };
  }

  absl::Status Load() {
    RETURN_IF_ERROR(
        store_->ScanRecords(kCertificateRecord, [&](const storage::Record& r) {
          std::string org = r.key.substr(kCertificateRecord.size());
          absl::MutexLock lock(&certificates_mu_);
          if (local_orgs_.contains(org)) certificates_[org] = r.value;
        }));
    RETURN_IF_ERROR(
        store_->ScanRecords(kRecallRecord, [&](const storage::Record& r) {
          absl::string_view rest =
              absl::string_view(r.key).substr(kRecallRecord.size());
          size_t slash = rest.find('/');
          std::optional<RecallState> st = DecodeRecall(r.value);
          if (slash == rest.npos || !st) return;
          absl::MutexLock lock(&recall_mu_);
          recalls_[{std::string(rest.substr(0, slash)),
                    std::string(rest.substr(slash + 1))}] = *std::move(st);
        }));
    absl::Status bad;
    RETURN_IF_ERROR(
        store_->ScanRecords(kHeldRecord, [&](const storage::Record& r) {
          Held held;
          if (!held.record.ParseFromString(r.value)) {
            bad = absl::DataLossError(absl::StrCat("storage: approval record ",
                                                   r.key, " is corrupt"));
            return;
          }
          held.expires = FromProto(held.record.expires_at());
          absl::MutexLock lock(&approvals_mu_);
          held_[held.record.document_id()] = std::move(held);
        }));
    RETURN_IF_ERROR(bad);
    RETURN_IF_ERROR(
        store_->ScanRecords(kAutomatedRecord, [&](const storage::Record& r) {
          absl::MutexLock lock(&approvals_mu_);
          automated_content_.insert(r.key.substr(kAutomatedRecord.size()));
          any_automated_content_.store(true, std::memory_order_release);
        }));
    ScheduleApprovalExpiry();
    // Outbox entries stored before next-hop records existed get theirs, so
    // the events of their copies are taken from the peer they go to.
    std::vector<storage::Record> next_hops;
    {
      absl::MutexLock lock(&mu_);
      absl::Time now = clock_->Now();
      RETURN_IF_ERROR(store_->ScanQueues([&](const storage::QueueEntry& qe) {
        if (IsLinkQueue(qe.recipient)) {
          AddLinkEntryLocked(qe, nullptr, now);
        } else {
          AddEntryLocked(qe, nullptr);
        }
        if (qe.recipient.size() > 1 && qe.recipient[0] == '>') {
          for (const std::string& r : ParseOutboxPayload(qe.payload).recipients)
            next_hops.push_back(
                {NextHopKey(qe.document_id, r), qe.recipient.substr(1)});
        }
      }));
    }
    storage::WriteBatch missing;
    for (storage::Record& r : next_hops) {
      ASSIGN_OR_RETURN(std::optional<std::string> stored,
                       store_->GetRecord(r.key));
      if (!stored) missing.records.push_back(std::move(r));
    }
    if (!missing.records.empty())
      RETURN_IF_ERROR(store_->WriteSync(std::move(missing)).status());
    absl::MutexLock lock(&mu_);
    ScheduleReaper();
    return absl::OkStatus();
  }

  // ---- Send ----------------------------------------------------------------

  void Send(const Principal& caller, v1::Document document,
            Callback<v1::SendResponse> done) override {
    workers_->Submit([this, caller, document = std::move(document),
                      done = Measured(std::move(done))]() mutable {
      SendOnWorker(caller, std::move(document), std::move(done));
    });
  }

  // Counts how a send ended: its latency when accepted, its code when not.
  Callback<v1::SendResponse> Measured(Callback<v1::SendResponse> done) {
    return [this, start = absl::Now(), done = std::move(done)](
               absl::StatusOr<v1::SendResponse> r) mutable {
      if (r.ok()) {
        metrics_.send_seconds.Observe(
            absl::ToDoubleSeconds(absl::Now() - start));
      } else {
        metrics_.refused.With(absl::StatusCodeToString(r.status().code()))
            .Add();
      }
      done(std::move(r));
    };
  }

  class SequenceImpl : public SendSequence {
   public:
    explicit SequenceImpl(ExchangeImpl* ex)
        : ex_(ex), strand_(ex->workers_.get()) {}
    void Send(const Principal& caller, v1::Document document,
              Callback<v1::SendResponse> done) override {
      std::vector<std::pair<v1::Document, Callback<v1::SendResponse>>> one;
      one.emplace_back(std::move(document), std::move(done));
      SendAll(caller, std::move(one));
    }
    void SendAll(
        const Principal& caller,
        std::vector<std::pair<v1::Document, Callback<v1::SendResponse>>>
            documents) override {
      for (auto& [d, done] : documents) done = ex_->Measured(std::move(done));
      strand_.Submit(
          [ex = ex_, caller, documents = std::move(documents)]() mutable {
            WriteGroup group(ex);
            for (auto& [d, done] : documents)
              ex->SendOnWorker(caller, std::move(d), std::move(done));
          });
    }

   private:
    ExchangeImpl* const ex_;
    Strand strand_;
  };

  std::unique_ptr<SendSequence> NewSendSequence() override {
    return std::make_unique<SequenceImpl>(this);
  }

  // Validates and hands the document to the store's FIFO queue before it
  // returns (or to the WriteGroup open on this thread, which hands its
  // writes on in the same order), so the order of calls is the order of
  // queue positions.
  void SendOnWorker(const Principal& caller, v1::Document doc,
                    Callback<v1::SendResponse> done) {
    done = AuditRefusal(caller, doc, std::move(done));
    if (absl::Status s = ValidateNewDocument(doc, caller, options_); !s.ok()) {
      done(s);
      return;
    }
    if (!local_orgs_.contains(doc.sender())) {
      done(absl::PermissionDeniedError(
          absl::StrCat("document.sender: organization ", doc.sender(),
                       " is not served by this broker")));
      return;
    }
    absl::Time now = clock_->Now();
    // What the sender signed (and what the receipt names), computed before
    // the broker adds its own fields.
    std::string digest = signing::DocumentDigest(doc);
    if (absl::Status s = CheckSignature(doc, digest, "document", now, now);
        !s.ok()) {
      done(s);
      return;
    }
    if (absl::Status s = CheckStoredAttachments(
            doc, storage::OrgUploader(doc.sender()), "document");
        !s.ok()) {
      done(s);
      return;
    }
    if (absl::Status s = CheckRefersTo(doc); !s.ok()) {
      done(s);
      return;
    }
    // Where each copy goes: here (nullopt) or to a peer broker.
    std::vector<std::optional<std::string>> next(doc.recipients_size());
    for (int i = 0; i < doc.recipients_size(); ++i) {
      const std::string& r = doc.recipients(i);
      if (local_orgs_.contains(r)) continue;
      absl::StatusOr<std::string> peer = router_.Route(r, {broker_name_}, now);
      if (!peer.ok() || !router_.MayBeServed(r)) {
        done(absl::NotFoundError(absl::StrCat(
            "document.recipients[", i, "]: organization ", r,
            " is not served by this broker nor by any broker in its "
            "directory",
            peer.ok() ? ""
                      : absl::StrCat(" (", peer.status().message(), ")"))));
        return;
      }
      next[i] = *std::move(peer);
    }
    // Every recipient's flow must be permitted; one refusal refuses the whole
    // document, before anything is stored.
    std::vector<v1::PolicyDecision> decisions;
    decisions.reserve(doc.recipients_size());
    if (absl::Status s = DecideFlows(doc, next, now, &decisions); !s.ok()) {
      done(s);
      return;
    }
    doc.set_id(NewDocumentId(absl::ToUnixMillis(now)));
    if (doc.idempotency_key().empty())
      doc.set_idempotency_key(absl::StrCat("broker:", doc.id()));
    *doc.mutable_accepted_at() = ToProto(now);
    for (v1::Attachment& a : *doc.mutable_attachments()) {
      if (a.stored()) continue;  // checked against the attachment store
      a.set_size(a.content().size());
      // Validation checked a given hash; lower-case it, or compute it.
      a.set_sha256(a.sha256().empty() ? sealing::Sha256Hex(a.content())
                                      : absl::AsciiStrToLower(a.sha256()));
    }
    doc.set_content_sha256(ContentSha256(doc));
    v1::Hop* hop = doc.add_trace();
    hop->set_broker(options_.broker_id);
    *hop->mutable_at() = ToProto(now);
    std::optional<v1::PendingApproval> held = HoldFor(doc, decisions);

    auto shared = std::make_shared<const v1::Document>(std::move(doc));
    const v1::Document& d = *shared;
    storage::WriteBatch batch;
    batch.document = shared;
    batch.records = storage::AttachmentReferences(d);
    int priority = storage::PriorityOf(d.metadata().urgency());
    // Remote copies: one transfer per peer, carrying its recipients.
    std::map<std::string, std::vector<std::string>> by_peer;
    for (int i = 0; i < d.recipients_size() && !held; ++i) {
      if (next[i]) by_peer[*next[i]].push_back(d.recipients(i));
    }
    for (const auto& [peer, recipients] : by_peer) {
      batch.enqueue.push_back(storage::Enqueue{OutboxName(peer), priority,
                                               d.id(), d.sender(),
                                               OutboxPayload("", recipients)});
    }
    AddNextHops(d.id(), by_peer, &batch);
    for (int i = 0; i < d.recipients_size(); ++i) {
      const std::string& r = d.recipients(i);
      if (!next[i] && !held) {
        batch.enqueue.push_back(
            storage::Enqueue{r, priority, d.id(), d.sender(), ""});
      }
      v1::StatusEvent e;
      *e.mutable_policy() = std::move(decisions[i]);
      e.set_document_id(d.id());
      e.set_recipient(r);
      *e.mutable_at() = d.accepted_at();
      e.set_delivery_state(v1::DELIVERY_STATE_ACCEPTED);
      e.set_actor(caller.spiffe_id);
      e.set_sender(d.sender());
      batch.events.push_back(std::move(e));
    }
    if (held) {
      // Nothing is queued: the copies wait for the approvals.
      for (v1::StatusEvent& e : HeldEvents(
               *held, v1::DELIVERY_STATE_PENDING_APPROVAL, options_.broker_id,
               absl::StrCat("held until approved: ", held->reason(),
                            "; expires ",
                            absl::FormatTime(absl::RFC3339_sec,
                                             FromProto(held->expires_at()),
                                             absl::UTCTimeZone())),
               nullptr, now)) {
        batch.events.push_back(std::move(e));
      }
      batch.records.push_back(HeldRecord(d.id(), held->SerializeAsString()));
      if (IsAutomated(d)) {
        batch.records.push_back(storage::Record{
            absl::StrCat(kAutomatedRecord,
                         AutomatedContentKey(d.sender(), d.content_sha256())),
            d.id()});
      }
    }
    // A change request held for approval takes effect once released
    // (DecideOnWorker).
    std::vector<std::string> local;
    for (int i = 0; i < d.recipients_size() && !held; ++i)
      if (!next[i]) local.push_back(d.recipients(i));
    if (!held)
      AddChangeRequest(d, {d.recipients().begin(), d.recipients().end()},
                       &batch);
    if (absl::Status s = Admit(caller, shared, &batch, &done); !s.ok()) {
      done(s);
      return;
    }
    StoreWrite(
        std::move(batch),
        [this, shared, held = std::move(held), local = std::move(local),
         digest = std::move(digest), done = std::move(done)](
            absl::StatusOr<storage::WriteResult> r) mutable {
          if (!r.ok()) {
            done(r.status());
            return;
          }
          if (held && !r->duplicate_of) {
            absl::MutexLock lock(&approvals_mu_);
            if (IsAutomated(*shared)) {
              automated_content_.insert(AutomatedContentKey(
                  shared->sender(), shared->content_sha256()));
              any_automated_content_.store(true, std::memory_order_release);
            }
            Held& h = held_[shared->id()];
            h.expires = FromProto(held->expires_at());
            h.record = *std::move(held);
          }
          if (r->duplicate_of) {
            std::string earlier = *r->duplicate_of;
            workers_->Submit(
                [this, shared, earlier, done = std::move(done)]() mutable {
                  ResolveDuplicate(*shared, earlier, std::move(done));
                });
            return;
          }
          {
            absl::MutexLock lock(&mu_);
            for (const storage::QueueEntry& qe : r->enqueued) {
              if (IsLinkQueue(qe.recipient)) continue;  // StoreWrite did
              AddEntryLocked(qe, shared);
              WakeLocked(qe.recipient);
            }
            ++accepted_;
          }
          metrics_.accepted.Add();
          Publish(r->events);
          ChangeRequestStored(*shared, local);
          v1::SendResponse response;
          response.set_document_id(shared->id());
          *response.mutable_accepted_at() = shared->accepted_at();
          response.set_content_sha256(shared->content_sha256());
          *response.mutable_receipt() = ReceiptFor(*shared, digest);
          done(std::move(response));
        },
        shared);
  }

  // options_.admission's check (incidents: a re-digitized document settles
  // its register entry in `batch`); `done` then tells it how the write ended.
  absl::Status Admit(const Principal& caller,
                     std::shared_ptr<const v1::Document> d,
                     storage::WriteBatch* batch,
                     Callback<v1::SendResponse>* done) {
    SendAdmission* admission = options_.admission;
    if (admission == nullptr) return absl::OkStatus();
    RETURN_IF_ERROR(admission->Admit(caller, *d, batch));
    *done = [admission, d = std::move(d), done = std::move(*done)](
                absl::StatusOr<v1::SendResponse> r) mutable {
      admission->Finished(*d, r.ok() && !r->duplicate());
      done(std::move(r));
    };
    return absl::OkStatus();
  }

  // Each stored attachment must be complete here and uploaded by
  // `uploader` (the sender, or the peer broker that pushed it).
  absl::Status CheckStoredAttachments(const v1::Document& doc,
                                      const std::string& uploader,
                                      absl::string_view field) const {
    for (int i = 0; i < doc.attachments_size(); ++i) {
      const v1::Attachment& a = doc.attachments(i);
      if (!a.stored()) continue;
      std::string name = absl::StrCat(field, ".attachments[", i, "]");
      if (options_.attachments == nullptr) {
        return absl::FailedPreconditionError(
            absl::StrCat(name,
                         ": this broker keeps no attachment store; send the "
                         "content inline"));
      }
      if (absl::Status s =
              options_.attachments->CheckUsable(uploader, a.sha256(), a.size());
          !s.ok()) {
        return absl::Status(s.code(), absl::StrCat(name, " (\"", a.name(),
                                                   "\"): ", s.message()));
      }
    }
    return absl::OkStatus();
  }

  // A document's signature: verified when present (also that the
  // certificate is valid at `valid_at`), required when the options say so.
  // `field` prefixes messages ("document", "transfer.document").
  absl::Status CheckSignature(const v1::Document& doc,
                              const std::string& digest,
                              absl::string_view field, absl::Time valid_at,
                              absl::Time now) const {
    if (!doc.has_signature()) {
      if (!options_.require_signatures) return absl::OkStatus();
      return absl::FailedPreconditionError(absl::StrCat(
          field, ".signature: missing; broker ", options_.broker_id,
          " accepts only documents signed by their sender's organization "
          "key (the SDK signs them)"));
    }
    if (!options_.signatures) {
      return absl::FailedPreconditionError(
          absl::StrCat(field, ".signature: broker ", options_.broker_id,
                       " has no trust root to verify signatures with"));
    }
    if (doc.idempotency_key().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          field,
          ".idempotency_key: required for a signed document (the signature "
          "covers it)"));
    }
    return signing::VerifyDocumentSignature(*options_.signatures, doc, digest,
                                            field, valid_at, now)
        .status();
  }

  // This broker's custody receipt for a stored document, to be signed by
  // the service layer. `digest`: signing::DocumentDigest of it.
  v1::CustodyReceipt ReceiptFor(const v1::Document& doc,
                                absl::string_view digest) const {
    v1::CustodyReceipt r;
    r.set_document_id(doc.id());
    r.set_document_sha256(sealing::HexOf(digest));
    r.set_content_sha256(doc.content_sha256());
    r.set_sender(doc.sender());
    *r.mutable_recipients() = doc.recipients();
    r.set_idempotency_key(doc.idempotency_key());
    // The time this broker took custody: the last hop that is ours.
    *r.mutable_accepted_at() = doc.accepted_at();
    for (const v1::Hop& h : doc.trace()) {
      if (h.broker() == options_.broker_id) *r.mutable_accepted_at() = h.at();
    }
    r.set_broker(options_.broker_id);
    if (doc.has_signature()) {
      r.set_sender_signature_sha256(
          sealing::HexOf(signing::Sha256(doc.signature().signature())));
    }
    return r;
  }

  // Decides the flow to each recipient. PERMISSION_DENIED naming the
  // recipient, the policy version and the deciding rules;
  // RESOURCE_EXHAUSTED when the document exceeds a permit's max_size;
  // FAILED_PRECONDITION for an obligation the exchange cannot honour.
  // `next[i]` set: the copy leaves for another broker (cross_broker).
  absl::Status DecideFlows(const v1::Document& doc,
                           const std::vector<std::optional<std::string>>& next,
                           absl::Time now,
                           std::vector<v1::PolicyDecision>* out) {
    ASSIGN_OR_RETURN(policy::Flow flow, FlowOf(doc));
    for (int i = 0; i < doc.recipients_size(); ++i) {
      flow.recipient = doc.recipients(i);
      flow.cross_broker = next[i].has_value();
      std::shared_ptr<const policy::Policy> policy;
      policy::Decision decision = policy_->Decide(flow, now, &policy);
      const std::string field = absl::StrCat("document.recipients[", i, "]");
      if (!decision.permitted()) {
        return absl::PermissionDeniedError(
            absl::StrCat(field, ": ",
                         policy ? decision.Reason(*policy, flow)
                                : "denied: no policy is loaded (fail closed)"));
      }
      RETURN_IF_ERROR(CheckObligations(decision, *policy, flow, doc, field));
      v1::PolicyDecision& wire = out->emplace_back();
      policy::ToProto(decision, *policy, options_.broker_id, &wire);
    }
    return absl::OkStatus();
  }

  // Whether the exchange honours what a permit obliges for `doc`:
  // FAILED_PRECONDITION for an obligation it cannot honour (the compiler
  // refuses those; reaching here is a capability mismatch: fail closed),
  // RESOURCE_EXHAUSTED for a document above a permit's max_size.
  static absl::Status CheckObligations(const policy::Decision& decision,
                                       const policy::Policy& policy,
                                       const policy::Flow& flow,
                                       const v1::Document& doc,
                                       absl::string_view field) {
    const policy::Obligations& o = decision.obligations;
    if (o.end_to_end_encryption && !doc.has_sealed()) {
      return absl::FailedPreconditionError(absl::StrCat(
          field, ": ", decision.Reason(policy, flow),
          " obliges end_to_end_encryption: the document must be sealed for "
          "its recipients (the SDK seals it with seal_all or a classification "
          "of confidential or secret)"));
    }
    // Approvals: the sender's broker holds the document until they are
    // given (SendOnWorker); brokers on the way check it carries them
    // (AcceptTransfer).
    if (o.max_size_bytes) {
      size_t size = DocumentContentBytes(doc);
      if (size > *o.max_size_bytes) {
        return absl::ResourceExhaustedError(absl::StrCat(
            field, ": the document's body and attachments are ", size,
            " bytes; policy ", policy::ShortVersion(policy.version()), " rule",
            decision.rules.size() > 1 ? "s " : " ",
            absl::StrJoin(decision.RuleNames(policy), ", "), " allow at most ",
            *o.max_size_bytes, " bytes to ", flow.recipient));
      }
    }
    return absl::OkStatus();
  }

  static size_t DocumentContentBytes(const v1::Document& doc) {
    size_t size = doc.body().size() + doc.sealed().ciphertext().size();
    for (const v1::Attachment& a : doc.attachments())
      size += a.stored() ? a.size() : a.content().size();
    return size;
  }

  static absl::StatusOr<policy::Flow> FlowOf(const v1::Document& doc) {
    const v1::DocumentMetadata& m = doc.metadata();
    policy::Flow flow;
    flow.sender = doc.sender();
    flow.document_type = m.document_type();
    ASSIGN_OR_RETURN(
        flow.classification,
        policy::ClassificationFromProto(m.classification(),
                                        "document.metadata.classification"));
    ASSIGN_OR_RETURN(
        flow.urgency,
        policy::UrgencyFromProto(m.urgency(), "document.metadata.urgency"));
    ASSIGN_OR_RETURN(flow.business_type,
                     policy::BusinessTypeFromProto(
                         m.business_type(), "document.metadata.business_type"));
    ASSIGN_OR_RETURN(flow.origin, policy::OriginFromProto(
                                      m.origin(), "document.metadata.origin"));
    ASSIGN_OR_RETURN(
        flow.decision_category,
        policy::DecisionCategoryFromProto(
            m.decision_category(), "document.metadata.decision_category"));
    return flow;
  }

  void ResolveDuplicate(const v1::Document& attempt,
                        const std::string& earlier_id,
                        Callback<v1::SendResponse> done) {
    absl::StatusOr<v1::Document> earlier = store_->GetDocument(earlier_id);
    if (!earlier.ok()) {
      done(earlier.status());
      return;
    }
    // Sealing is randomized, so a sender that seals again for a resend (a
    // restarted application) makes other ciphertext of the same content:
    // sealed documents match by scheme, metadata and recipients.
    const bool both_sealed = earlier->has_sealed() && attempt.has_sealed();
    bool same =
        (both_sealed ? earlier->sealed().scheme() == attempt.sealed().scheme()
                     : earlier->content_sha256() == attempt.content_sha256()) &&
        earlier->metadata().SerializeAsString() ==
            attempt.metadata().SerializeAsString() &&
        std::equal(earlier->recipients().begin(), earlier->recipients().end(),
                   attempt.recipients().begin(), attempt.recipients().end());
    if (!same) {
      done(absl::AlreadyExistsError(absl::StrCat(
          "document.idempotency_key: \"", attempt.idempotency_key(),
          "\" was used for document ", earlier_id,
          " with different content, metadata or recipients; use a new key")));
      return;
    }
    v1::SendResponse response;
    response.set_document_id(earlier_id);
    response.set_duplicate(true);
    *response.mutable_accepted_at() = earlier->accepted_at();
    response.set_content_sha256(earlier->content_sha256());
    *response.mutable_receipt() =
        ReceiptFor(*earlier, signing::DocumentDigest(*earlier));
    done(std::move(response));
  }

  // ---- Delivery index
  // --------------------------------------------------------

  void AddEntryLocked(const storage::QueueEntry& qe,
                      std::shared_ptr<const v1::Document> doc)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    OrgQueue& q = queues_[qe.recipient];
    Key key{qe.priority, qe.sequence};
    Entry& e = q.entries[key];
    e.qe = qe;
    e.since = clock_->Now();
    if (doc && doc->has_accepted_at()) {
      e.accepted_at = absl::FromUnixSeconds(doc->accepted_at().seconds()) +
                      absl::Nanoseconds(doc->accepted_at().nanos());
    }
    if (doc) {
      size_t bytes = doc->ByteSizeLong();
      if (cached_bytes_ + bytes <= options_.delivery_cache_bytes) {
        e.doc = std::move(doc);
        e.cached_bytes = bytes;
        cached_bytes_ += bytes;
      }
    }
    q.by_doc[qe.document_id] = key;
    q.ready.insert(key);
    ++queued_;
  }

  void EraseEntryLocked(OrgQueue& q, const Key& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = q.entries.find(key);
    if (it == q.entries.end()) return;
    cached_bytes_ -= it->second.cached_bytes;
    q.by_doc.erase(it->second.qe.document_id);
    q.ready.erase(key);
    q.fetch_leases.erase(key);
    q.entries.erase(it);
    --queued_;
  }

  // Takes up to `max` ready entries of `q` for `owner`.
  std::vector<Handout> TakeLocked(OrgQueue& q, size_t max, uint64_t owner,
                                  size_t max_bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<Handout> out;
    size_t bytes = 0;
    while (out.size() < max && !q.ready.empty() && bytes < max_bytes) {
      Key key = *q.ready.begin();
      q.ready.erase(q.ready.begin());
      Entry& e = q.entries.at(key);
      e.state = Entry::State::kLeased;
      e.owner = owner;
      ++e.attempts;
      bytes += e.doc ? e.cached_bytes : 64 << 10;
      out.push_back(Handout{e.qe, e.attempts, e.doc});
    }
    leased_ += out.size();
    return out;
  }

  void ReleaseLocked(OrgQueue& q, const Key& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = q.entries.find(key);
    if (it == q.entries.end() || it->second.state != Entry::State::kLeased)
      return;
    it->second.state = Entry::State::kReady;
    it->second.owner = 0;
    q.ready.insert(key);
    q.fetch_leases.erase(key);
    --leased_;
  }

  // Something may be deliverable in `org`: serve fetch waiters, then pump
  // the receive sessions that have room.
  void WakeLocked(const std::string& org) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto qit = queues_.find(org);
    if (qit == queues_.end()) return;
    OrgQueue& q = qit->second;
    while (!q.waiters.empty() && !q.ready.empty()) {
      std::shared_ptr<FetchWaiter> w = q.waiters.front();
      q.waiters.pop_front();
      if (w->finished) continue;
      w->finished = true;
      CompleteFetchLocked(q, w->max, w->lease, std::move(w->done));
    }
    if (q.ready.empty()) return;
    for (auto it = q.sessions.begin(); it != q.sessions.end();) {
      std::shared_ptr<SessionImpl> s = it->lock();
      if (!s) {
        it = q.sessions.erase(it);
        continue;
      }
      ++it;
      if (!s->closed_ && !s->pump_scheduled_ && s->in_flight_ < s->window_) {
        s->pump_scheduled_ = true;
        workers_->Submit([this, s] { Pump(s); });
      }
    }
  }

  void CompleteFetchLocked(OrgQueue& q, uint32_t max, absl::Duration lease,
                           Callback<v1::FetchResponse> done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<Handout> got = TakeLocked(q, max, kFetchOwner, SIZE_MAX);
    absl::Time expiry = clock_->Now() + lease;
    for (const Handout& h : got)
      q.fetch_leases[{h.qe.priority, h.qe.sequence}] = expiry;
    workers_->Submit([this, got = std::move(got),
                      done = std::move(done)]() mutable {
      v1::FetchResponse response;
      std::vector<Withheld> denied;
      for (Handout& h : got) {
        absl::StatusOr<std::shared_ptr<const v1::Document>> doc =
            Materialize(h);
        if (!doc.ok())
          continue;  // logged by Materialize; stays leased, retried on expiry
        if (std::optional<v1::StatusEvent> e = RecheckDelivery(**doc, h.qe)) {
          denied.push_back(Withheld{*std::move(e), kFetchOwner, h.attempts});
          continue;
        }
        v1::Delivery* d = response.add_deliveries();
        *d->mutable_document() = **doc;
        d->set_attempt(h.attempts);
      }
      if (!denied.empty()) WithdrawDenied(std::move(denied));
      done(std::move(response));
    });
  }

  absl::StatusOr<std::shared_ptr<const v1::Document>> Materialize(
      const Handout& h) {
    if (h.doc) return h.doc;
    ASSIGN_OR_RETURN(v1::Document doc, store_->GetDocument(h.qe.document_id));
    return std::make_shared<const v1::Document>(std::move(doc));
  }

  void Pump(std::shared_ptr<SessionImpl> s) {
    for (;;) {
      std::vector<Handout> got;
      {
        absl::MutexLock lock(&mu_);
        s->pump_scheduled_ = false;
        if (s->closed_ || stopping_) return;
        OrgQueue& q = queues_[s->org_];
        size_t room = s->window_ - s->in_flight_;
        got = TakeLocked(q, std::min(room, kMaxDeliveriesPerMessage), s->id_,
                         kMaxBytesPerMessage);
        for (const Handout& h : got)
          s->held_.insert({h.qe.priority, h.qe.sequence});
        s->in_flight_ += got.size();
        if (got.empty()) return;
        s->pump_scheduled_ = true;  // this loop continues; no second pump
      }
      v1::ReceiveResponse response;
      std::vector<Withheld> denied;
      for (const Handout& h : got) {
        absl::StatusOr<std::shared_ptr<const v1::Document>> doc =
            Materialize(h);
        // A document that cannot be read stays leased to this session (so it
        // does not spin) until the session ends; it is retried then.
        if (!doc.ok()) continue;
        if (std::optional<v1::StatusEvent> e = RecheckDelivery(**doc, h.qe)) {
          denied.push_back(Withheld{*std::move(e), s->id_, h.attempts});
          continue;
        }
        v1::Delivery* d = response.add_deliveries();
        *d->mutable_document() = **doc;
        d->set_attempt(h.attempts);
      }
      if (!denied.empty()) WithdrawDenied(std::move(denied));
      if (response.deliveries_size() > 0 && !s->sink_.Emit(std::move(response)))
        return;
    }
  }

  absl::StatusOr<std::shared_ptr<ReceiveSession>> OpenReceive(
      const Principal& caller, uint32_t max_in_flight,
      DeliverySink sink) override {
    RETURN_IF_ERROR(RequireOrg(caller));
    if (max_in_flight > 10000) {
      return absl::InvalidArgumentError("start.max_in_flight: at most 10000");
    }
    if (max_in_flight == 0) max_in_flight = options_.default_max_in_flight;
    auto s = std::make_shared<SessionImpl>(this, caller.name,
                                           next_owner_.fetch_add(1),
                                           max_in_flight, std::move(sink));
    SendOpenNotices(*s);
    absl::MutexLock lock(&mu_);
    sessions_[s->id_] = s;
    queues_[caller.name].sessions.push_back(s);
    WakeLocked(caller.name);
    return s;
  }

  // ---- Notices (incidents) ---------------------------------------------

  // A new session first learns of the open incidents that affect its org.
  void SendOpenNotices(SessionImpl& s) {
    if (!options_.notices_on_connect) return;
    std::vector<v1::Notice> notices = options_.notices_on_connect(s.org_);
    if (notices.empty()) return;
    v1::ReceiveResponse response;
    for (v1::Notice& n : notices) *response.add_notices() = std::move(n);
    s.sink_.Emit(std::move(response));
  }

  size_t Notify(const std::string& org, const v1::Notice& notice) override {
    std::vector<std::shared_ptr<SessionImpl>> open;
    {
      absl::MutexLock lock(&mu_);
      auto it = queues_.find(org);
      if (it == queues_.end()) return 0;
      for (const std::weak_ptr<SessionImpl>& w : it->second.sessions) {
        std::shared_ptr<SessionImpl> s = w.lock();
        if (s && !s->closed_) open.push_back(std::move(s));
      }
    }
    size_t reached = 0;
    for (const std::shared_ptr<SessionImpl>& s : open) {
      v1::ReceiveResponse response;
      *response.add_notices() = notice;
      if (s->sink_.Emit(std::move(response))) ++reached;
    }
    return reached;
  }

  void SessionAck(SessionImpl* s, std::vector<std::string> ids,
                  std::vector<std::string> nacks) {
    std::vector<storage::QueueEntry> to_commit;
    {
      absl::MutexLock lock(&mu_);
      if (s->closed_) return;
      OrgQueue& q = queues_[s->org_];
      for (const std::string& id : ids) {
        auto k = q.by_doc.find(id);
        if (k == q.by_doc.end()) continue;
        Entry& e = q.entries.at(k->second);
        if (e.state != Entry::State::kLeased || e.owner != s->id_) continue;
        e.state = Entry::State::kAcking;
        s->held_.erase(k->second);
        --s->in_flight_;
        --leased_;
        to_commit.push_back(e.qe);
      }
      for (const std::string& id : nacks) {
        auto k = q.by_doc.find(id);
        if (k == q.by_doc.end()) continue;
        Entry& e = q.entries.at(k->second);
        if (e.state != Entry::State::kLeased || e.owner != s->id_) continue;
        s->held_.erase(k->second);
        --s->in_flight_;
        ReleaseLocked(q, k->second);
      }
      WakeLocked(s->org_);
    }
    if (!to_commit.empty()) CommitAcks(s->org_, std::move(to_commit), nullptr);
  }

  // Re-decides a delivery about to go out under the serving policy (the
  // broker → recipient flow), so that a policy applied after a document was
  // accepted also governs the copies still waiting. nullopt while permitted;
  // otherwise the DENIED event naming the policy and rules.
  // `record`: log the denial in the decision log (false for listings).
  std::optional<v1::StatusEvent> RecheckDelivery(const v1::Document& doc,
                                                 const storage::QueueEntry& qe,
                                                 bool record = true) {
    if (std::optional<v1::StatusEvent> e = RecallAtHandout(qe)) return e;
    std::shared_ptr<const policy::Policy> policy = policy_->Current();
    absl::StatusOr<policy::Flow> flow = FlowOf(doc);
    policy::Decision decision;
    std::string broken_obligation;
    if (flow.ok() && policy) {
      flow->recipient = qe.recipient;
      flow->cross_broker = !qe.payload.empty();  // came from another broker
      decision = policy->Evaluate(*flow);
      if (decision.permitted()) {
        absl::Status s =
            CheckObligations(decision, *policy, *flow, doc, "delivery");
        if (s.ok()) return std::nullopt;
        broken_obligation = std::string(s.message());
      }
    } else {
      decision.cause = policy::Cause::kError;
      decision.detail = flow.ok() ? "no policy is loaded"
                                  : std::string(flow.status().message());
    }
    absl::Time now = clock_->Now();
    v1::StatusEvent e;
    e.set_document_id(qe.document_id);
    e.set_recipient(qe.recipient);
    *e.mutable_at() = ToProto(now);
    e.set_delivery_state(v1::DELIVERY_STATE_DENIED);
    e.set_actor(options_.broker_id);
    e.set_sender(qe.sender);
    if (!broken_obligation.empty()) {
      e.set_reason(absl::StrCat("withheld at ", broken_obligation));
      policy::ToProto(decision, *policy, options_.broker_id,
                      e.mutable_policy());
    } else if (flow.ok() && policy) {
      e.set_reason(absl::StrCat("withheld at delivery: ",
                                decision.Reason(*policy, *flow)));
      policy::ToProto(decision, *policy, options_.broker_id,
                      e.mutable_policy());
      if (record) policy_->decisions().Record(now, *flow, decision, *policy);
    } else {
      e.set_reason(absl::StrCat("withheld at delivery (fail closed): ",
                                decision.detail));
    }
    return e;
  }

  // Takes copies that RecheckDelivery refused out of the lease they were
  // refused under (an entry re-leased since, after a lease expiry or a
  // closed session, is left to its new holder's own re-check) and removes
  // them durably with their DENIED events.
  void WithdrawDenied(std::vector<Withheld> withheld) {
    std::map<std::string, std::pair<std::vector<storage::QueueEntry>,
                                    std::vector<v1::StatusEvent>>>
        by_org;
    {
      absl::MutexLock lock(&mu_);
      for (Withheld& w : withheld) {
        v1::StatusEvent& ev = w.event;
        OrgQueue& q = queues_[ev.recipient()];
        auto k = q.by_doc.find(ev.document_id());
        if (k == q.by_doc.end()) continue;
        Entry& e = q.entries.at(k->second);
        if (e.state != Entry::State::kLeased || e.owner != w.owner ||
            e.attempts != w.attempts)
          continue;  // acknowledged, released or re-leased meanwhile
        --leased_;
        if (auto sit = sessions_.find(e.owner); sit != sessions_.end()) {
          if (auto s = sit->second.lock()) {
            s->held_.erase(k->second);
            --s->in_flight_;
          }
        }
        q.fetch_leases.erase(k->second);
        e.state = Entry::State::kAcking;
        auto& [entries, evs] = by_org[ev.recipient()];
        entries.push_back(e.qe);
        evs.push_back(std::move(ev));
      }
      for (const auto& [org, unused] : by_org) WakeLocked(org);
    }
    for (auto& [org, work] : by_org) {
      CommitRemoval(org, std::move(work.first), std::move(work.second),
                    /*delivered=*/false, nullptr);
    }
  }

  // Removes acknowledged copies durably and records DELIVERED.
  void CommitAcks(const std::string& org,
                  std::vector<storage::QueueEntry> entries,
                  absl::AnyInvocable<void(absl::Status)> done) {
    std::vector<v1::StatusEvent> events;
    Timestamp now = ToProto(clock_->Now());
    std::string actor = SpiffeId(trust_domain_, Principal::Kind::kOrg, org);
    for (const storage::QueueEntry& qe : entries) {
      v1::StatusEvent e;
      e.set_document_id(qe.document_id);
      e.set_recipient(qe.recipient);
      *e.mutable_at() = now;
      e.set_delivery_state(v1::DELIVERY_STATE_DELIVERED);
      e.set_actor(actor);
      e.set_sender(qe.sender);
      events.push_back(std::move(e));
    }
    CommitRemoval(org, std::move(entries), std::move(events),
                  /*delivered=*/true, std::move(done));
  }

  // Removes copies of `org`'s queue (in the kAcking state) durably with
  // their terminal events; on failure they become deliverable again.
  void CommitRemoval(const std::string& org,
                     std::vector<storage::QueueEntry> entries,
                     std::vector<v1::StatusEvent> events, bool delivered,
                     absl::AnyInvocable<void(absl::Status)> done) {
    storage::WriteBatch batch;
    // A copy that came from another broker sends its event back there
    // (`events` is parallel to `entries`).
    for (size_t i = 0; i < entries.size() && i < events.size(); ++i) {
      if (!entries[i].payload.empty())
        AppendReturn(&batch, entries[i].payload, events[i]);
    }
    // Copies withdrawn by a recall are not counted as denied.
    absl::flat_hash_set<std::string> recalled;
    for (const v1::StatusEvent& e : events) {
      if (e.delivery_state() == v1::DELIVERY_STATE_RECALLED)
        recalled.insert(e.document_id());
    }
    batch.events = std::move(events);
    batch.dequeue = entries;
    // A recipient's session does not wait for its acknowledgements to be
    // stored (a caller of the unary Ack does).
    if (delivered && !done) batch.sync_within = kSharedSyncWait;
    StoreWrite(
        std::move(batch),
        [this, org, delivered, entries = std::move(entries),
         recalled = std::move(recalled), done = std::move(done)](
            absl::StatusOr<storage::WriteResult> r) mutable {
          {
            absl::MutexLock lock(&mu_);
            OrgQueue& q = queues_[org];
            for (const storage::QueueEntry& qe : entries) {
              Key key{qe.priority, qe.sequence};
              if (r.ok()) {
                if (auto it = q.entries.find(key); it != q.entries.end()) {
                  if (delivered) {
                    metrics_.delivered.Add();
                    if (it->second.accepted_at) {
                      metrics_.delivery_seconds.Observe(absl::ToDoubleSeconds(
                          clock_->Now() - *it->second.accepted_at));
                    }
                  } else if (!recalled.contains(qe.document_id)) {
                    metrics_.denied.With("delivery").Add();
                  }
                }
                EraseEntryLocked(q, key);
                if (delivered) ++delivered_;
              } else if (auto it = q.entries.find(key); it != q.entries.end()) {
                if (!delivered) continue;  // retried below, after a pause
                it->second.state = Entry::State::kReady;
                it->second.owner = 0;
                q.ready.insert(key);
              }
            }
            if (!r.ok() && delivered) WakeLocked(org);
            // stopping_ (under mu_) is set before the timer goes away.
            if (!r.ok() && !delivered && !stopping_) {
              // The store is failing: re-deciding at once would spin. The
              // copies stay out of circulation for a second, then are
              // re-decided (and withheld again) on their next hand-out.
              timer_->RunAfter(absl::Seconds(1), [this, org, entries] {
                absl::MutexLock lock(&mu_);
                OrgQueue& q = queues_[org];
                for (const storage::QueueEntry& qe : entries) {
                  Key key{qe.priority, qe.sequence};
                  auto it = q.entries.find(key);
                  if (it == q.entries.end() ||
                      it->second.state != Entry::State::kAcking)
                    continue;
                  it->second.state = Entry::State::kReady;
                  it->second.owner = 0;
                  q.ready.insert(key);
                }
                WakeLocked(org);
              });
            }
          }
          if (r.ok()) Publish(r->events);
          if (done) done(r.status());
        });
  }

  void SessionClose(SessionImpl* s) {
    absl::MutexLock lock(&mu_);
    if (s->closed_) return;
    s->closed_ = true;
    sessions_.erase(s->id_);
    OrgQueue& q = queues_[s->org_];
    for (const Key& key : s->held_) ReleaseLocked(q, key);
    s->held_.clear();
    s->in_flight_ = 0;
    WakeLocked(s->org_);
  }

  // ---- Fetch / Ack / Inbox
  // ----------------------------------------------------

  void Fetch(const Principal& caller, const v1::FetchRequest& request,
             Callback<v1::FetchResponse> done) override {
    if (absl::Status s = RequireOrg(caller); !s.ok()) return done(s);
    if (request.max_documents() > 1000) {
      return done(absl::InvalidArgumentError("max_documents: at most 1000"));
    }
    if (request.wait_ms() > 30000)
      return done(absl::InvalidArgumentError("wait_ms: at most 30000"));
    if (request.lease_seconds() > 3600) {
      return done(absl::InvalidArgumentError("lease_seconds: at most 3600"));
    }
    uint32_t max = request.max_documents() ? request.max_documents() : 10;
    absl::Duration lease = request.lease_seconds()
                               ? absl::Seconds(request.lease_seconds())
                               : options_.default_fetch_lease;
    absl::MutexLock lock(&mu_);
    OrgQueue& q = queues_[caller.name];
    if (!q.ready.empty() || request.wait_ms() == 0) {
      CompleteFetchLocked(q, max, lease, std::move(done));
      return;
    }
    auto w = std::make_shared<FetchWaiter>();
    w->max = max;
    w->lease = lease;
    w->done = std::move(done);
    q.waiters.push_back(w);
    timer_->RunAfter(absl::Milliseconds(request.wait_ms()), [this, w] {
      Callback<v1::FetchResponse> done;
      {
        absl::MutexLock lock(&mu_);
        if (w->finished) return;
        w->finished = true;
        done = std::move(w->done);
      }
      done(v1::FetchResponse());
    });
  }

  void Ack(const Principal& caller, const v1::AckRequest& request,
           Callback<v1::AckResponse> done) override {
    if (absl::Status s = RequireOrg(caller); !s.ok()) return done(s);
    if (request.document_ids_size() > 10000) {
      return done(
          absl::InvalidArgumentError("document_ids: at most 10000 per call"));
    }
    for (int i = 0; i < request.document_ids_size(); ++i) {
      if (absl::Status s = CheckDocumentId(
              absl::StrCat("document_ids[", i, "]"), request.document_ids(i));
          !s.ok()) {
        return done(s);
      }
    }
    std::vector<storage::QueueEntry> to_commit;
    {
      absl::MutexLock lock(&mu_);
      OrgQueue& q = queues_[caller.name];
      for (const std::string& id : request.document_ids()) {
        auto k = q.by_doc.find(id);
        if (k == q.by_doc.end()) continue;
        Entry& e = q.entries.at(k->second);
        if (e.state == Entry::State::kAcking) continue;
        // Only what was handed out can be acknowledged: a copy never handed
        // out has not passed the delivery-time policy check (and may be
        // withheld), so acknowledging it by id would record a delivery that
        // did not happen.
        if (e.state == Entry::State::kReady && e.attempts == 0) continue;
        if (e.state == Entry::State::kLeased) {
          --leased_;
          if (auto sit = sessions_.find(e.owner); sit != sessions_.end()) {
            if (auto s = sit->second.lock()) {
              s->held_.erase(k->second);
              --s->in_flight_;
            }
          }
        }
        q.ready.erase(k->second);
        q.fetch_leases.erase(k->second);
        e.state = Entry::State::kAcking;
        to_commit.push_back(e.qe);
      }
      WakeLocked(caller.name);
    }
    uint32_t count = to_commit.size();
    if (count == 0) return done(v1::AckResponse());
    CommitAcks(caller.name, std::move(to_commit),
               [count, done = std::move(done)](absl::Status s) mutable {
                 if (!s.ok()) return done(s);
                 v1::AckResponse response;
                 response.set_acknowledged(count);
                 done(std::move(response));
               });
  }

  void ListInbox(const Principal& caller, const v1::ListInboxRequest& request,
                 Callback<v1::ListInboxResponse> done) override {
    if (absl::Status s = RequireOrg(caller); !s.ok()) return done(s);
    if (request.limit() > 1000)
      return done(absl::InvalidArgumentError("limit: at most 1000"));
    size_t limit = request.limit() ? request.limit() : 100;
    std::vector<std::pair<Handout, bool>> rows;
    uint64_t total = 0;
    {
      absl::MutexLock lock(&mu_);
      OrgQueue& q = queues_[caller.name];
      total = q.entries.size();
      for (auto& [key, e] : q.entries) {
        if (rows.size() >= limit) break;
        rows.push_back({Handout{e.qe, e.attempts, e.doc},
                        e.state != Entry::State::kReady});
      }
    }
    workers_->Submit([this, rows = std::move(rows), total,
                      done = std::move(done)]() mutable {
      v1::ListInboxResponse response;
      response.set_total(total);
      for (auto& [h, leased] : rows) {
        absl::StatusOr<std::shared_ptr<const v1::Document>> doc =
            Materialize(h);
        if (!doc.ok()) continue;
        // A copy the serving policy now withholds is not shown, not even
        // its metadata; its next hand-out withdraws it.
        if (RecheckDelivery(**doc, h.qe, /*record=*/false)) {
          response.set_total(response.total() - 1);
          continue;
        }
        v1::InboxEntry* e = response.add_entries();
        e->set_document_id(h.qe.document_id);
        e->set_sender((*doc)->sender());
        *e->mutable_metadata() = (*doc)->metadata();
        *e->mutable_accepted_at() = (*doc)->accepted_at();
        e->set_attempts(h.attempts);
        e->set_leased(leased);
      }
      done(std::move(response));
    });
  }

  void ScheduleReaper() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    timer_->RunAfter(absl::Seconds(1), [this] {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      absl::Time now = clock_->Now();
      for (auto& [org, q] : queues_) {
        bool released = false;
        for (auto it = q.fetch_leases.begin(); it != q.fetch_leases.end();) {
          Key key = it->first;
          bool expired = it->second <= now;
          ++it;
          if (expired) {
            ReleaseLocked(q, key);
            released = true;
          }
        }
        if (released) WakeLocked(org);
      }
      ScheduleReaper();
    });
  }

  // ---- Statuses
  // ----------------------------------------------------------------

  void ReportStatus(const Principal& caller,
                    const v1::ReportStatusRequest& request,
                    Callback<v1::ReportStatusResponse> done) override {
    workers_->Submit([this, caller, request, done = std::move(done)]() mutable {
      std::string previous;
      absl::StatusOr<v1::StatusEvent> event =
          BuildStatusEvent(caller, request, &previous);
      if (!event.ok()) return done(event.status());
      if (event->business_status() == v1::BUSINESS_STATUS_AGREED ||
          event->business_status() == v1::BUSINESS_STATUS_REFUSED) {
        return AnswerChangeRequest(caller, *std::move(event), previous,
                                   std::move(done));
      }
      storage::WriteBatch batch;
      if (!previous.empty()) AppendReturn(&batch, previous, *event);
      batch.events.push_back(*std::move(event));
      StoreWrite(std::move(batch),
                 [this, done = std::move(done)](
                     absl::StatusOr<storage::WriteResult> r) mutable {
                   if (!r.ok()) return done(r.status());
                   Publish(r->events);
                   v1::ReportStatusResponse response;
                   *response.mutable_event() = r->events.front();
                   done(std::move(response));
                 });
    });
  }

  // `previous`: the broker the document came from, where the event goes
  // back to ("" at the document's first broker).
  absl::StatusOr<v1::StatusEvent> BuildStatusEvent(
      const Principal& caller, const v1::ReportStatusRequest& request,
      std::string* previous) {
    RETURN_IF_ERROR(RequireOrg(caller));
    RETURN_IF_ERROR(CheckDocumentId("document_id", request.document_id()));
    if (request.status() == v1::BUSINESS_STATUS_UNSPECIFIED ||
        !v1::BusinessStatus_IsValid(request.status())) {
      return absl::InvalidArgumentError(
          absl::StrCat("status: ", static_cast<int>(request.status()),
                       " is not a national status code (01-06, 13, 15, 16)"));
    }
    bool needs_reason = request.status() == v1::BUSINESS_STATUS_REJECTED ||
                        request.status() == v1::BUSINESS_STATUS_REFUSED;
    if (needs_reason && request.reason().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "reason: required for ", v1::BusinessStatus_Name(request.status())));
    }
    if (request.reason().size() > 4096) {
      return absl::InvalidArgumentError("reason: longer than 4096 bytes");
    }
    ASSIGN_OR_RETURN(v1::Document doc,
                     LoadVisible(caller, request.document_id(),
                                 /*allow_sender=*/false));
    if (request.status() == v1::BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED) {
      return absl::InvalidArgumentError(
          "status: 13 (RECALL_OR_UPDATE_REQUESTED) is recorded when the "
          "sender sends a RECALL, UPDATE or REPLACE document referring to "
          "this one (metadata.refers_to); a recipient answers it with 15 "
          "AGREED or 16 REFUSED");
    }
    v1::StatusEvent e;
    e.set_document_id(doc.id());
    e.set_recipient(caller.name);
    *e.mutable_at() = ToProto(clock_->Now());
    e.set_business_status(request.status());
    e.set_reason(request.reason());
    e.set_actor(caller.spiffe_id);
    e.set_sender(doc.sender());
    ASSIGN_OR_RETURN(*previous, PreviousBrokerOf(doc, caller.name));
    return e;
  }

  // The document if the caller is a recipient (or the sender when allowed);
  // NOT_FOUND otherwise, so ids of others' documents reveal nothing.
  absl::StatusOr<v1::Document> LoadVisible(const Principal& caller,
                                           const std::string& id,
                                           bool allow_sender) {
    absl::StatusOr<v1::Document> doc = store_->GetDocument(id);
    auto not_found = [&] {
      return absl::NotFoundError(absl::StrCat(
          "document ", id, " not found among documents ",
          allow_sender ? "sent by or addressed to " : "addressed to ",
          caller.name));
    };
    if (absl::IsNotFound(doc.status())) return not_found();
    if (!doc.ok()) return doc.status();
    bool recipient =
        std::find(doc->recipients().begin(), doc->recipients().end(),
                  caller.name) != doc->recipients().end();
    bool sender = doc->sender() == caller.name;
    if (!recipient && !(allow_sender && sender)) return not_found();
    return doc;
  }

  void GetDocumentStatus(const Principal& caller,
                         const v1::GetDocumentStatusRequest& request,
                         Callback<v1::DocumentStatus> done) override {
    workers_->Submit([this, caller, request, done = std::move(done)]() mutable {
      done(BuildDocumentStatus(caller, request.document_id()));
    });
  }

  // Progress of a copy: a later state never gives way to an earlier one.
  static int StateRank(v1::DeliveryState state) {
    switch (state) {
      case v1::DELIVERY_STATE_UNSPECIFIED:
        return 0;
      case v1::DELIVERY_STATE_ACCEPTED:
      case v1::DELIVERY_STATE_PENDING_APPROVAL:
      case v1::DELIVERY_STATE_APPROVED:
        return 1;
      case v1::DELIVERY_STATE_FORWARDED:
        return 2;
      case v1::DELIVERY_STATE_DELIVERED:
        return 3;
      default:  // DENIED, EXPIRED, RECALLED: final
        return 4;
    }
  }

  absl::StatusOr<v1::DocumentStatus> BuildDocumentStatus(
      const Principal& caller, const std::string& id) {
    RETURN_IF_ERROR(RequireOrg(caller));
    RETURN_IF_ERROR(CheckDocumentId("document_id", id));
    ASSIGN_OR_RETURN(v1::Document doc,
                     LoadVisible(caller, id, /*allow_sender=*/true));
    return StatusFor(doc, caller.name);
  }

  absl::StatusOr<std::pair<v1::Document, v1::DocumentStatus>> Inspect(
      const std::string& id) override {
    RETURN_IF_ERROR(CheckDocumentId("document_id", id));
    absl::StatusOr<v1::Document> doc = store_->GetDocument(id);
    if (absl::IsNotFound(doc.status())) {
      return absl::NotFoundError(absl::StrCat("document ", id,
                                              " never passed through broker ",
                                              options_.broker_id));
    }
    if (!doc.ok()) return doc.status();
    ASSIGN_OR_RETURN(v1::DocumentStatus status, StatusFor(*doc, ""));
    return std::make_pair(*std::move(doc), std::move(status));
  }

  absl::StatusOr<v1::Attachment> FindAttachment(
      const Principal& caller, const std::string& document_id,
      const std::string& sha256) override {
    RETURN_IF_ERROR(RequireOrg(caller));
    RETURN_IF_ERROR(CheckDocumentId("document_id", document_id));
    ASSIGN_OR_RETURN(v1::Document doc,
                     LoadVisible(caller, document_id, /*allow_sender=*/true));
    auto not_found = [&] {
      return absl::NotFoundError(absl::StrCat(
          "document ", document_id, " has no stored attachment with SHA-256 ",
          sha256, " that ", caller.name, " may read"));
    };
    const v1::Attachment* found = nullptr;
    for (const v1::Attachment& a : doc.attachments()) {
      if (a.stored() && a.sha256() == sha256) found = &a;
    }
    if (found == nullptr) return not_found();
    if (doc.sender() != caller.name) {
      // A recipient reads what it may receive: not a copy the policy denied,
      // one held for approval, expired or recalled (the same NOT_FOUND as
      // for a document that does not exist).
      ASSIGN_OR_RETURN(v1::DocumentStatus status, StatusFor(doc, caller.name));
      for (const v1::RecipientStatus& row : status.recipients()) {
        if (row.recipient() != caller.name) continue;
        switch (row.delivery_state()) {
          case v1::DELIVERY_STATE_DENIED:
          case v1::DELIVERY_STATE_PENDING_APPROVAL:
          case v1::DELIVERY_STATE_EXPIRED:
          case v1::DELIVERY_STATE_RECALLED:
            return not_found();
          default:
            break;
        }
      }
    }
    return *found;
  }

  bool HoldsDocument(const std::string& id) override {
    return IsDocumentId(id) && store_->GetDocument(id).ok();
  }

  absl::StatusOr<v1::Evidence> Evidence(const std::string& id) override {
    ASSIGN_OR_RETURN(auto found, Inspect(id));
    auto& [doc, status] = found;
    v1::Evidence e;
    e.set_broker(options_.broker_id);
    *e.mutable_exported_at() = ToProto(clock_->Now());
    e.set_document_id(doc.id());
    *e.mutable_manifest() = signing::ManifestOf(doc);
    if (doc.has_signature()) *e.mutable_sender_signature() = doc.signature();
    e.set_content_sha256(doc.content_sha256());
    *e.mutable_accepted_at() = doc.accepted_at();
    *e.mutable_trace() = doc.trace();
    *e.mutable_receipt() =
        ReceiptFor(doc, signing::ManifestDigest(e.manifest()));
    *e.mutable_history() = std::move(*status.mutable_history());
    // The audit head first: entries found after it are beyond it and left
    // for the next export.
    const storage::AuditHead head = store_->GetAuditHead();
    e.set_audit_size(head.size);
    e.set_audit_head(head.hash);
    std::vector<std::pair<uint64_t, std::string>> entries;
    RETURN_IF_ERROR(store_->ScanAuditEntriesForDocument(
        id, [&](uint64_t index, absl::string_view raw) {
          if (index > head.size) return false;
          entries.emplace_back(index, std::string(raw));
          return true;
        }));
    for (auto& [index, raw] : entries) {
      v1::EvidenceAuditEntry* out = e.add_audit_entries();
      if (!out->mutable_entry()->ParseFromString(raw)) {
        return absl::DataLossError(
            absl::StrCat("audit entry ", index, " is malformed in storage"));
      }
      std::string previous(audit::kHashBytes, '\0');
      if (index > 1) {
        absl::Status bad;
        RETURN_IF_ERROR(store_->ScanAuditEntries(
            index - 1, [&](uint64_t i, absl::string_view prev_raw) {
              v1::StoredAuditEntry prev;
              if (i != index - 1 ||
                  !prev.ParseFromString(std::string(prev_raw))) {
                bad = absl::DataLossError(absl::StrCat(
                    "audit entry ", index - 1, " is missing or malformed"));
              } else {
                previous = prev.hash();
              }
              return false;
            }));
        RETURN_IF_ERROR(bad);
      }
      out->set_previous_hash(std::move(previous));
    }
    return e;
  }

  void GetEvidence(const Principal& caller,
                   const v1::GetEvidenceRequest& request,
                   Callback<v1::Evidence> done) override {
    workers_->Submit([this, caller, request, done = std::move(done)]() mutable {
      absl::Status s = RequireOrg(caller);
      if (s.ok()) s = CheckDocumentId("document_id", request.document_id());
      if (s.ok()) {
        s = LoadVisible(caller, request.document_id(), /*allow_sender=*/true)
                .status();
      }
      if (!s.ok()) {
        done(s);
        return;
      }
      done(Evidence(request.document_id()));
    });
  }

  // The status of `doc` as `viewer` may see it: every recipient for its
  // sender (or for an operator: `viewer` empty), only the viewer's own row
  // for a recipient.
  absl::StatusOr<v1::DocumentStatus> StatusFor(const v1::Document& doc,
                                               const std::string& viewer) {
    const std::string& id = doc.id();
    ASSIGN_OR_RETURN(std::vector<v1::StatusEvent> events,
                     store_->ListDocumentEvents(id, 0));
    bool is_sender = viewer.empty() || doc.sender() == viewer;
    v1::DocumentStatus status;
    status.set_document_id(id);
    status.set_sender(doc.sender());
    *status.mutable_metadata() = doc.metadata();
    *status.mutable_accepted_at() = doc.accepted_at();
    for (const v1::Attachment& a : doc.attachments()) {
      // Described, never copied with its content (inline ones may be large).
      v1::Attachment* listed = status.add_attachments();
      listed->set_name(a.name());
      listed->set_content_type(a.content_type());
      listed->set_sha256(a.sha256());
      listed->set_size(a.size());
      listed->set_stored(a.stored());
    }
    std::map<std::string, v1::RecipientStatus> rows;
    for (const std::string& r : doc.recipients()) {
      if (is_sender || r == viewer) rows[r].set_recipient(r);
    }
    for (const v1::StatusEvent& e : events) {
      auto it = rows.find(e.recipient());
      if (it == rows.end()) {
        // The sender's own paper conversion is no recipient's step.
        if (is_sender && e.has_paper_conversion() &&
            e.recipient() == doc.sender())
          *status.add_history() = e;
        continue;
      }
      // Events from other brokers can arrive out of order (a custody
      // acknowledgement after the far end's DELIVERED): the state only moves
      // forward; the history keeps every event as it came.
      if (e.delivery_state() != v1::DELIVERY_STATE_UNSPECIFIED &&
          StateRank(e.delivery_state()) >=
              StateRank(it->second.delivery_state())) {
        it->second.set_delivery_state(e.delivery_state());
      }
      if (e.business_status() != v1::BUSINESS_STATUS_UNSPECIFIED) {
        it->second.set_business_status(e.business_status());
      }
      *it->second.mutable_updated_at() = e.at();
      *status.add_history() = e;
    }
    for (const std::string& r : doc.recipients()) {
      if (auto it = rows.find(r); it != rows.end())
        *status.add_recipients() = it->second;
    }
    return status;
  }

  // ---- Watch
  // -------------------------------------------------------------------

  void Watch(const Principal& caller, const v1::WatchStatusRequest& request,
             EventSink sink,
             Callback<std::shared_ptr<WatchSession>> done) override {
    workers_->Submit([this, caller, request, sink = std::move(sink),
                      done = std::move(done)]() mutable {
      if (absl::Status s = RequireOrg(caller); !s.ok()) return done(s);
      if (!request.document_id().empty()) {
        if (absl::Status s =
                CheckDocumentId("document_id", request.document_id());
            !s.ok()) {
          return done(s);
        }
        absl::StatusOr<v1::Document> doc =
            store_->GetDocument(request.document_id());
        if (!doc.ok() || doc->sender() != caller.name) {
          if (doc.ok() || absl::IsNotFound(doc.status())) {
            return done(absl::NotFoundError(absl::StrCat(
                "document ", request.document_id(),
                " not found among documents sent by ", caller.name)));
          }
          return done(doc.status());
        }
      }
      auto w = std::make_shared<WatcherImpl>(
          this, next_owner_.fetch_add(1), caller.name, request.document_id(),
          request.after_sequence(), std::move(sink));
      {
        absl::MutexLock lock(&watch_mu_);
        watchers_[caller.name][w->id_] = w;
      }
      done(std::shared_ptr<WatchSession>(w));
      // Replay what is stored, then hand over to live events.
      uint64_t after = request.after_sequence();
      for (;;) {
        absl::StatusOr<std::vector<v1::StatusEvent>> page =
            request.document_id().empty()
                ? store_->ListSenderEvents(caller.name, after, 1000)
                : store_->ListDocumentEvents(request.document_id(), after);
        if (!page.ok() || page->empty()) break;
        for (const v1::StatusEvent& e : *page) w->Replayed(e);
        after = page->back().sequence();
        if (!request.document_id().empty() || page->size() < 1000) break;
      }
      w->EndReplay();
    });
  }

  void Unwatch(WatcherImpl* w) {
    absl::MutexLock lock(&watch_mu_);
    auto it = watchers_.find(w->sender_);
    if (it == watchers_.end()) return;
    it->second.erase(w->id_);
    if (it->second.empty()) watchers_.erase(it);
  }

  void Publish(const std::vector<v1::StatusEvent>& events) {
    std::vector<std::pair<std::shared_ptr<WatcherImpl>, const v1::StatusEvent*>>
        targets;
    {
      absl::MutexLock lock(&watch_mu_);
      if (watchers_.empty()) return;
      for (const v1::StatusEvent& e : events) {
        auto it = watchers_.find(e.sender());
        if (it == watchers_.end()) continue;
        for (auto& [id, w] : it->second) targets.push_back({w, &e});
      }
    }
    for (auto& [w, e] : targets) w->Live(*e);
  }

  // ---- Federation
  // ---------------------------------------------------------------

  // The broker `doc` came to this one from ("" when this broker accepted it
  // from its sender): the hop before this broker's last hop on the trace.
  std::string PreviousBroker(const v1::Document& doc) const {
    for (int i = doc.trace_size() - 1; i > 0; --i) {
      if (doc.trace(i).broker() != options_.broker_id) continue;
      absl::StatusOr<Principal> p = ParseSpiffeId(doc.trace(i - 1).broker());
      return p.ok() ? p->name : std::string();
    }
    return "";
  }

  static std::string NextHopKey(absl::string_view document_id,
                                absl::string_view recipient) {
    return absl::StrCat(kNextHopRecord, document_id, "/", recipient);
  }

  // The route record of one copy: the peer it came from and the sender.
  // Per copy, because one document may reach this broker by two paths (its
  // first broker split the recipients between two peers, whose routes meet
  // here): each copy's events go back the way that copy came.
  static std::string RouteKey(absl::string_view document_id,
                              absl::string_view recipient) {
    return absl::StrCat(kRouteRecord, document_id, "/", recipient);
  }

  // The broker the copy of `doc` for `recipient` came to this one from (""
  // when this broker accepted it from its sender): its route record, or
  // for copies taken before there were per-copy records, the trace of the
  // document as stored.
  absl::StatusOr<std::string> PreviousBrokerOf(const v1::Document& doc,
                                               const std::string& recipient) {
    ASSIGN_OR_RETURN(std::optional<std::string> record,
                     store_->GetRecord(RouteKey(doc.id(), recipient)));
    if (record) return record->substr(0, record->find('\n'));
    return PreviousBroker(doc);
  }

  // Records, with the outbox entries of `by_peer`, which peer each copy goes
  // to.
  static void AddNextHops(
      const std::string& document_id,
      const std::map<std::string, std::vector<std::string>>& by_peer,
      storage::WriteBatch* batch) {
    for (const auto& [peer, recipients] : by_peer) {
      for (const std::string& r : recipients)
        batch->records.push_back(
            storage::Record{NextHopKey(document_id, r), peer});
    }
  }

  // OK if this broker handed `peer` the copy of `document_id` for
  // `recipient`, so the peer may report on it; INVALID_ARGUMENT if not.
  // Copies forwarded before next-hop records existed are recognized by the
  // FORWARDED event their custody recorded.
  absl::Status CheckHandedTo(const std::string& peer,
                             const std::string& document_id,
                             const std::string& recipient) {
    ASSIGN_OR_RETURN(std::optional<std::string> next,
                     store_->GetRecord(NextHopKey(document_id, recipient)));
    bool handed = next && *next == peer;
    if (!next) {
      ASSIGN_OR_RETURN(std::vector<v1::StatusEvent> events,
                       store_->ListDocumentEvents(document_id, 0));
      const std::string custody_of =
          absl::StrCat("in the custody of broker ",
                       SpiffeId(trust_domain_, Principal::Kind::kBroker, peer));
      for (const v1::StatusEvent& e : events) {
        handed = handed ||
                 (e.recipient() == recipient &&
                  e.delivery_state() == v1::DELIVERY_STATE_FORWARDED &&
                  e.actor() == options_.broker_id && e.reason() == custody_of);
      }
    }
    if (handed) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "returned event: broker ", peer, " was not handed document ",
        document_id, " for ", recipient, " by broker ", options_.broker_id));
  }

  // Queues `event` to go back to the broker `previous`.
  static void AppendReturn(storage::WriteBatch* batch,
                           const std::string& previous,
                           const v1::StatusEvent& event) {
    v1::StatusEvent copy = event;
    copy.clear_sequence();  // ours; the peer numbers its own
    batch->enqueue.push_back(
        storage::Enqueue{ReturnName(previous), 0, event.document_id(),
                         event.sender(), copy.SerializeAsString()});
  }

  void AddLinkEntries(const storage::WriteResult& r,
                      const std::shared_ptr<const v1::Document>& doc) {
    bool any = false;
    for (const storage::QueueEntry& qe : r.enqueued)
      any = any || IsLinkQueue(qe.recipient);
    if (!any) return;
    absl::Time now = clock_->Now();
    absl::MutexLock lock(&mu_);
    for (const storage::QueueEntry& qe : r.enqueued) {
      if (!IsLinkQueue(qe.recipient)) continue;
      AddLinkEntryLocked(qe, qe.recipient[0] == '>' ? doc : nullptr, now);
      WakeLinkLocked(qe.recipient);
    }
  }

  void AddLinkEntryLocked(const storage::QueueEntry& qe,
                          std::shared_ptr<const v1::Document> doc,
                          absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LinkQueue& q = link_queues_[qe.recipient];
    Key key{qe.priority, qe.sequence};
    LinkEntry& e = q.entries[key];
    e.qe = qe;
    e.since = now;
    if (doc) {
      size_t bytes = doc->ByteSizeLong();
      if (cached_bytes_ + bytes <= options_.delivery_cache_bytes) {
        e.doc = std::move(doc);
        e.cached_bytes = bytes;
        cached_bytes_ += bytes;
      }
    }
    q.by_sequence[qe.sequence] = key;
    q.ready.insert(key);
  }

  void WakeLinkLocked(const std::string& queue)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto qit = link_queues_.find(queue);
    if (qit == link_queues_.end() || qit->second.ready.empty()) return;
    std::shared_ptr<LinkSessionImpl> s = qit->second.session.lock();
    if (!s || s->closed_ || s->pump_scheduled_ || s->in_flight_ >= s->window_ ||
        s->in_flight_bytes_ >= kMaxLinkBytesInFlight)
      return;
    s->pump_scheduled_ = true;
    workers_->Submit([this, s] { PumpLink(s); });
  }

  void PumpLink(std::shared_ptr<LinkSessionImpl> s) {
    const bool outbox = s->queue_[0] == '>';
    for (;;) {
      std::vector<Handout> got;
      {
        absl::MutexLock lock(&mu_);
        s->pump_scheduled_ = false;
        if (s->closed_ || stopping_) return;
        LinkQueue& q = link_queues_[s->queue_];
        size_t room = s->window_ - s->in_flight_;
        size_t bytes = 0;
        while (got.size() < std::min(room, kMaxDeliveriesPerMessage) &&
               !q.ready.empty() && bytes < kMaxBytesPerMessage &&
               s->in_flight_bytes_ + bytes < kMaxLinkBytesInFlight) {
          Key key = *q.ready.begin();
          q.ready.erase(q.ready.begin());
          LinkEntry& e = q.entries.at(key);
          e.owner = s->id_;
          s->held_.insert(key);
          e.flight_bytes = outbox ? (e.doc ? e.cached_bytes : 64 << 10)
                                  : e.qe.payload.size();
          bytes += e.flight_bytes;
          got.push_back(Handout{e.qe, 0, e.doc});
        }
        s->in_flight_ += got.size();
        s->in_flight_bytes_ += bytes;
        if (got.empty()) return;
        s->pump_scheduled_ = true;  // this loop continues; no second pump
      }
      LinkItems items;
      // Documents read back from the store (not cached) were counted at an
      // estimate: their real size replaces it.
      std::vector<std::pair<Key, size_t>> sizes;
      for (const Handout& h : got) {
        if (outbox) {
          // A document that cannot be read stays with this session (so it
          // does not spin) until the link ends; it is retried then.
          absl::StatusOr<std::shared_ptr<const v1::Document>> doc =
              Materialize(h);
          if (!doc.ok()) continue;
          if (!h.doc)
            sizes.emplace_back(Key{h.qe.priority, h.qe.sequence},
                               (*doc)->ByteSizeLong());
          v1::Transfer& t = items.transfers.emplace_back();
          t.set_id(h.qe.sequence);
          *t.mutable_document() = **doc;
          for (std::string& r : ParseOutboxPayload(h.qe.payload).recipients)
            t.add_recipients(std::move(r));
        } else {
          v1::ReturnedEvent& r = items.events.emplace_back();
          r.set_id(h.qe.sequence);
          if (!r.mutable_event()->ParseFromString(h.qe.payload)) {
            items.events.pop_back();  // corrupt: stays held, see above
          }
        }
      }
      if (!sizes.empty()) {
        absl::MutexLock lock(&mu_);
        LinkQueue& q = link_queues_[s->queue_];
        for (const auto& [key, bytes] : sizes) {
          auto it = q.entries.find(key);
          if (it == q.entries.end() || !s->held_.count(key)) continue;
          s->in_flight_bytes_ =
              s->in_flight_bytes_ - it->second.flight_bytes + bytes;
          it->second.flight_bytes = bytes;
        }
      }
      if ((!items.transfers.empty() || !items.events.empty()) &&
          !s->sink_.Emit(std::move(items)))
        return;
    }
  }

  absl::StatusOr<std::shared_ptr<PeerLinkSession>> OpenLinkSession(
      const std::string& peer, const std::string& queue, uint32_t window,
      LinkSink sink) {
    if (!router_.IsPeer(peer)) {
      return absl::InvalidArgumentError(
          absl::StrCat(peer, " is not a peer of this broker"));
    }
    if (window == 0 || window > 100000)
      return absl::InvalidArgumentError("link window: 1..100000");
    auto s = std::make_shared<LinkSessionImpl>(
        this, queue, peer, next_owner_.fetch_add(1), window, std::move(sink));
    std::shared_ptr<LinkSessionImpl> previous;
    {
      absl::MutexLock lock(&mu_);
      LinkQueue& q = link_queues_[queue];
      previous = q.session.lock();
      q.session = s;
    }
    if (previous) previous->Close();  // its items go out on the new link
    absl::MutexLock lock(&mu_);
    link_sessions_[s->id_] = s;
    WakeLinkLocked(queue);
    return std::shared_ptr<PeerLinkSession>(s);
  }

  absl::StatusOr<std::shared_ptr<PeerLinkSession>> OpenOutbound(
      const std::string& peer, uint32_t window, LinkSink sink) override {
    return OpenLinkSession(peer, OutboxName(peer), window, std::move(sink));
  }

  absl::StatusOr<std::shared_ptr<PeerLinkSession>> OpenReturn(
      const std::string& peer, uint32_t window, LinkSink sink) override {
    return OpenLinkSession(peer, ReturnName(peer), window, std::move(sink));
  }

  void LinkClose(LinkSessionImpl* s) {
    s->sink_.Close();
    absl::MutexLock lock(&mu_);
    if (s->closed_) return;
    s->closed_ = true;
    link_sessions_.erase(s->id_);
    LinkQueue& q = link_queues_[s->queue_];
    for (const Key& key : s->held_) {
      auto it = q.entries.find(key);
      if (it == q.entries.end() || it->second.acking ||
          it->second.owner != s->id_)
        continue;
      it->second.owner = 0;
      q.ready.insert(key);
    }
    s->held_.clear();
    s->in_flight_ = 0;
    s->in_flight_bytes_ = 0;
    WakeLinkLocked(s->queue_);
  }

  // Frees the window slot the session holding `e` (if any) spent on it.
  void ReleaseFromHolderLocked(const LinkEntry& e, const Key& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (e.owner == 0) return;
    auto it = link_sessions_.find(e.owner);
    if (it == link_sessions_.end()) return;
    if (auto holder = it->second.lock()) {
      if (holder->held_.erase(key)) {
        --holder->in_flight_;
        holder->in_flight_bytes_ -= e.flight_bytes;
      }
    }
  }

  // Takes the entries of `queue` named by `sequences` out of circulation
  // for removal. Only entries session `owner` has sent and not had answered
  // are taken: a peer answers for what it was handed on its link, never for
  // what waits unsent (which would vanish without reaching it) nor for what
  // another link carries. Others are skipped.
  std::vector<storage::QueueEntry> ClaimLinkEntriesLocked(
      const std::string& queue, uint64_t owner,
      const std::vector<uint64_t>& sequences)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<storage::QueueEntry> out;
    LinkQueue& q = link_queues_[queue];
    for (uint64_t seq : sequences) {
      auto k = q.by_sequence.find(seq);
      if (k == q.by_sequence.end()) continue;
      LinkEntry& e = q.entries.at(k->second);
      if (e.acking || e.owner != owner) continue;
      ReleaseFromHolderLocked(e, k->second);
      q.ready.erase(k->second);
      e.acking = true;
      out.push_back(e.qe);
    }
    WakeLinkLocked(queue);
    return out;
  }

  // Removes claimed entries with `batch` (which has their dequeues); on
  // failure they go out again.
  void CommitLinkRemoval(const std::string& queue,
                         std::vector<storage::QueueEntry> entries,
                         storage::WriteBatch batch) {
    StoreWrite(std::move(batch),
               [this, queue, entries = std::move(entries)](
                   absl::StatusOr<storage::WriteResult> r) mutable {
                 {
                   absl::MutexLock lock(&mu_);
                   LinkQueue& q = link_queues_[queue];
                   for (const storage::QueueEntry& qe : entries) {
                     Key key{qe.priority, qe.sequence};
                     auto it = q.entries.find(key);
                     if (it == q.entries.end()) continue;
                     if (r.ok()) {
                       cached_bytes_ -= it->second.cached_bytes;
                       q.by_sequence.erase(qe.sequence);
                       q.entries.erase(it);
                     } else {
                       it->second.acking = false;
                       it->second.owner = 0;
                       q.ready.insert(key);
                     }
                   }
                   if (!r.ok()) WakeLinkLocked(queue);
                 }
                 if (r.ok()) Publish(r->events);
               });
  }

  void LinkCustody(LinkSessionImpl* s, std::vector<v1::Custody> custody) {
    absl::flat_hash_map<uint64_t, v1::Custody> by_id;
    std::vector<uint64_t> ids;
    for (v1::Custody& c : custody) {
      ids.push_back(c.id());
      by_id[c.id()] = std::move(c);
    }
    std::vector<uint64_t> retry;
    std::vector<uint64_t> settled;
    for (uint64_t id : ids) {
      (IsTransient(by_id[id]) ? retry : settled).push_back(id);
    }
    std::vector<storage::QueueEntry> entries;
    {
      absl::MutexLock lock(&mu_);
      if (!retry.empty()) RetryLinkEntriesLocked(s->queue_, s->id_, retry);
      entries = ClaimLinkEntriesLocked(s->queue_, s->id_, settled);
    }
    if (entries.empty()) return;
    Timestamp now = ToProto(clock_->Now());
    storage::WriteBatch batch;
    batch.dequeue = entries;
    // Unsynced: the peer holds the documents durably now. Should this write
    // be lost with the machine, the transfers go again and the peer answers
    // as the first time, so FORWARDED is recorded all the same.
    batch.sync = false;
    std::string peer_id =
        SpiffeId(trust_domain_, Principal::Kind::kBroker, s->peer_);
    for (const storage::QueueEntry& qe : entries) {
      const v1::Custody& c = by_id[qe.sequence];
      absl::flat_hash_map<std::string, const v1::PolicyDecision*> decided;
      for (const v1::CopyDecision& d : c.copies())
        decided[d.recipient()] = &d.policy();
      OutboxPayloadParts parts = ParseOutboxPayload(qe.payload);
      for (const std::string& r : parts.recipients) {
        v1::StatusEvent e;
        e.set_document_id(qe.document_id);
        e.set_recipient(r);
        *e.mutable_at() = now;
        e.set_actor(options_.broker_id);
        e.set_sender(qe.sender);
        if (c.has_error()) {
          e.set_delivery_state(v1::DELIVERY_STATE_DENIED);
          e.set_reason(c.local() ? c.error().message()
                                 : absl::StrCat("refused by broker ", peer_id,
                                                ": ", c.error().message()));
        } else if (auto it = decided.find(r); it != decided.end()) {
          e.set_delivery_state(v1::DELIVERY_STATE_FORWARDED);
          e.set_reason(absl::StrCat("in the custody of broker ", peer_id));
          *e.mutable_policy() = *it->second;
          // The peer speaks for its own decision only.
          e.mutable_policy()->set_broker(peer_id);
        } else {
          continue;  // the peer refused this copy: its DENIED comes back
        }
        if (!parts.previous.empty()) AppendReturn(&batch, parts.previous, e);
        batch.events.push_back(std::move(e));
      }
    }
    for (const storage::QueueEntry& qe : entries) {
      if (by_id[qe.sequence].has_error()) {
        metrics_.denied.With("peer").Add(
            ParseOutboxPayload(qe.payload).recipients.size());
      } else {
        metrics_.transfers_out.Add();
      }
    }
    CommitLinkRemoval(s->queue_, std::move(entries), std::move(batch));
  }

  // A custody error the peer may get over (its store failed, it is
  // stopping): the transfer stays in the outbox and goes again later.
  static bool IsTransient(const v1::Custody& c) {
    if (!c.has_error()) return false;
    switch (static_cast<absl::StatusCode>(c.error().code())) {
      case absl::StatusCode::kUnavailable:
      case absl::StatusCode::kAborted:
      case absl::StatusCode::kDeadlineExceeded:
      case absl::StatusCode::kResourceExhausted:
      case absl::StatusCode::kInternal:
      case absl::StatusCode::kUnknown:
        return true;
      default:
        return false;
    }
  }

  // Takes the in-flight entries named by `sequences` from their session and
  // makes them ready again after a pause (not at once: the peer just said
  // it cannot take them).
  void RetryLinkEntriesLocked(const std::string& queue, uint64_t owner,
                              const std::vector<uint64_t>& sequences)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LinkQueue& q = link_queues_[queue];
    std::vector<Key> keys;
    for (uint64_t seq : sequences) {
      auto k = q.by_sequence.find(seq);
      if (k == q.by_sequence.end()) continue;
      LinkEntry& e = q.entries.at(k->second);
      if (e.acking || e.owner != owner) continue;
      ReleaseFromHolderLocked(e, k->second);
      e.owner = 0;
      keys.push_back(k->second);
    }
    if (keys.empty() || stopping_) return;
    timer_->RunAfter(absl::Seconds(1), [this, queue, keys] {
      absl::MutexLock lock(&mu_);
      LinkQueue& q = link_queues_[queue];
      for (const Key& key : keys) {
        auto it = q.entries.find(key);
        if (it == q.entries.end() || it->second.acking || it->second.owner)
          continue;
        q.ready.insert(key);
      }
      WakeLinkLocked(queue);
    });
  }

  void LinkEventsStored(LinkSessionImpl* s, std::vector<uint64_t> ids) {
    std::vector<storage::QueueEntry> entries;
    {
      absl::MutexLock lock(&mu_);
      entries = ClaimLinkEntriesLocked(s->queue_, s->id_, ids);
    }
    if (entries.empty()) return;
    storage::WriteBatch batch;
    batch.dequeue = entries;
    // Unsynced: if lost in a crash, the event goes back again and the peer
    // recognizes it by its id.
    batch.sync = false;
    CommitLinkRemoval(s->queue_, std::move(entries), std::move(batch));
  }

  class InboundLinkImpl : public InboundLink {
   public:
    InboundLinkImpl(ExchangeImpl* ex, std::string peer)
        : ex_(ex), peer_(std::move(peer)), strand_(ex->workers_.get()) {}
    void Accept(v1::Transfer transfer,
                absl::AnyInvocable<void(v1::Custody)> done) override {
      std::vector<
          std::pair<v1::Transfer, absl::AnyInvocable<void(v1::Custody)>>>
          one;
      one.emplace_back(std::move(transfer), std::move(done));
      AcceptAll(std::move(one));
    }
    void AcceptAll(
        std::vector<
            std::pair<v1::Transfer, absl::AnyInvocable<void(v1::Custody)>>>
            transfers) override {
      strand_.Submit(
          [ex = ex_, peer = peer_, transfers = std::move(transfers)]() mutable {
            WriteGroup group(ex);
            for (auto& [t, done] : transfers)
              ex->AcceptTransfer(peer, std::move(t), std::move(done));
          });
    }
    void Returned(v1::ReturnedEvent event,
                  absl::AnyInvocable<void(absl::Status)> done) override {
      strand_.Submit([ex = ex_, peer = peer_, e = std::move(event),
                      done = std::move(done)]() mutable {
        ex->AcceptReturnedEvent(peer, std::move(e), std::move(done));
      });
    }

   private:
    ExchangeImpl* const ex_;
    const std::string peer_;
    Strand strand_;
  };

  absl::StatusOr<std::unique_ptr<InboundLink>> OpenInbound(
      const std::string& peer) override {
    if (!router_.IsPeer(peer)) {
      return absl::PermissionDeniedError(absl::StrCat(
          "broker ", peer, " is not a peer of broker ", broker_name_));
    }
    return std::unique_ptr<InboundLink>(
        std::make_unique<InboundLinkImpl>(this, peer));
  }

  // Checks a transfer before taking custody: FAILED_PRECONDITION /
  // INVALID_ARGUMENT / DATA_LOSS naming the defect.
  absl::Status CheckTransfer(const std::string& peer,
                             const v1::Transfer& t) const {
    const v1::Document& doc = t.document();
    RETURN_IF_ERROR(CheckDocumentId("transfer.document.id", doc.id()));
    RETURN_IF_ERROR(ValidateOrgCode(doc.sender(), "transfer.document.sender"));
    // A document from an organization this broker serves starts here; one
    // arriving from a peer claims a sender that is not the peer's to claim.
    if (local_orgs_.contains(doc.sender())) {
      return absl::PermissionDeniedError(absl::StrCat(
          "transfer.document.sender: ", doc.sender(), " is served by ",
          options_.broker_id, ", not by ",
          SpiffeId(trust_domain_, Principal::Kind::kBroker, peer)));
    }
    if (doc.ByteSizeLong() > options_.max_document_bytes + (64 << 10)) {
      return absl::InvalidArgumentError(
          absl::StrCat("transfer.document: ", doc.ByteSizeLong(),
                       " bytes, above this broker's limit of ",
                       options_.max_document_bytes));
    }
    std::string peer_id =
        SpiffeId(trust_domain_, Principal::Kind::kBroker, peer);
    if (doc.trace_size() == 0 ||
        doc.trace(doc.trace_size() - 1).broker() != peer_id) {
      return absl::InvalidArgumentError(absl::StrCat(
          "transfer.document.trace: must end with the sending broker ",
          peer_id));
    }
    if (t.recipients_size() == 0)
      return absl::InvalidArgumentError("transfer.recipients: empty");
    absl::flat_hash_set<std::string> seen;
    for (int i = 0; i < t.recipients_size(); ++i) {
      const std::string& r = t.recipients(i);
      std::string field = absl::StrCat("transfer.recipients[", i, "]");
      RETURN_IF_ERROR(ValidateOrgCode(r, field));
      if (!seen.insert(r).second)
        return absl::InvalidArgumentError(absl::StrCat(field, ": duplicate"));
      if (std::find(doc.recipients().begin(), doc.recipients().end(), r) ==
          doc.recipients().end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ": ", r, " is not a recipient of the document"));
      }
    }
    // The content must be what the first broker hashed: a copy altered on
    // the way is refused, not passed on.
    for (const v1::Attachment& a : doc.attachments()) {
      if (a.stored()) {
        if (!a.content().empty() || !sealing::IsSha256Hex(a.sha256())) {
          return absl::InvalidArgumentError(absl::StrCat(
              "transfer.document.attachments: \"", a.name(),
              "\" is stored: it needs a SHA-256 and no inline content"));
        }
        continue;
      }
      if (sealing::Sha256Hex(a.content()) != a.sha256() ||
          a.size() != a.content().size()) {
        return absl::DataLossError(absl::StrCat(
            "transfer.document.attachments: \"", a.name(),
            "\" does not match its SHA-256; the document was altered"));
      }
    }
    if (ContentSha256(doc) != doc.content_sha256()) {
      return absl::DataLossError(
          "transfer.document.content_sha256: does not match the body and "
          "attachments; the document was altered");
    }
    // The sender's own signature, so that no broker on the way can make up
    // or alter a document in an organization's name. Its certificate must
    // have been valid when the first broker accepted the document (it may
    // have waited in outboxes since).
    absl::Time accepted =
        doc.has_accepted_at()
            ? absl::FromUnixSeconds(doc.accepted_at().seconds()) +
                  absl::Nanoseconds(doc.accepted_at().nanos())
            : clock_->Now();
    RETURN_IF_ERROR(CheckSignature(doc, signing::DocumentDigest(doc),
                                   "transfer.document", accepted,
                                   clock_->Now()));
    // The peer pushes a document's stored attachments before the document;
    // one missing is not a defect of the transfer: it is taken later.
    if (absl::Status s = CheckStoredAttachments(
            doc, storage::BrokerUploader(peer), "transfer.document");
        !s.ok()) {
      return absl::UnavailableError(absl::StrCat(
          s.message(), " (not pushed yet: the transfer is taken once it is)"));
    }
    return absl::OkStatus();
  }

  // A peer may hand over a document this broker holds again (a resend), but
  // not another document under a held id, which would replace it.
  // UNAVAILABLE when the store cannot tell. (Nor the sender's document again
  // under a new id, a second copy for its recipients: the store refuses that
  // with the write, by the sender's idempotency key.)
  absl::Status CheckNotAnotherDocument(const v1::Document& doc) {
    absl::StatusOr<v1::Document> held = store_->GetDocument(doc.id());
    if (held.ok()) {
      if (held->sender() != doc.sender() ||
          signing::DocumentDigest(*held) != signing::DocumentDigest(doc)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "transfer.document.id: ", doc.id(), " names another document at ",
            options_.broker_id, "; this one is refused"));
      }
    } else if (!absl::IsNotFound(held.status())) {
      return absl::UnavailableError(absl::StrCat(
          "reading document ", doc.id(), ": ", held.status().message()));
    }
    return absl::OkStatus();
  }

  void EndAccepting(const std::string& document_id) {
    absl::MutexLock lock(&mu_);
    accepting_.erase(document_id);
  }

  void AcceptTransfer(const std::string& peer, v1::Transfer t,
                      absl::AnyInvocable<void(v1::Custody)> done) {
    v1::Custody custody;
    custody.set_id(t.id());
    absl::Status s = CheckTransfer(peer, t);
    bool accepting = false;  // this transfer holds the id in accepting_
    if (s.ok()) {
      absl::MutexLock lock(&mu_);
      accepting = accepting_.insert(t.document().id()).second;
    }
    if (s.ok() && !accepting) {
      s = absl::UnavailableError(
          absl::StrCat("transfer.document.id: ", t.document().id(),
                       " is being taken from another transfer; send it "
                       "again later"));
    }
    if (s.ok()) s = CheckNotAnotherDocument(t.document());
    // The approvals it carries, checked once: one whose certificate's
    // revocation cannot be checked now makes the transfer come again; one
    // that does not verify refuses every copy (below).
    const absl::Status carried =
        s.ok() ? CheckCarriedApprovals(t.document()) : absl::OkStatus();
    if (absl::IsUnavailable(carried)) s = carried;
    if (!s.ok()) {
      if (accepting) EndAccepting(t.document().id());
      custody.mutable_error()->set_code(static_cast<int>(s.code()));
      custody.mutable_error()->set_message(
          absl::StrCat("broker ", options_.broker_id, ": ", s.message()));
      return done(std::move(custody));
    }
    absl::Time now = clock_->Now();
    v1::Document doc = std::move(*t.mutable_document());
    std::vector<std::string> recipients(t.recipients().begin(),
                                        t.recipients().end());
    absl::flat_hash_set<std::string> on_trace;
    for (const v1::Hop& h : doc.trace()) {
      if (absl::StatusOr<Principal> p = ParseSpiffeId(h.broker()); p.ok())
        on_trace.insert(p->name);
    }
    std::string refusal;  // set: every copy is refused
    if (on_trace.contains(broker_name_)) {
      refusal = absl::StrCat("routing loop: document already passed through ",
                             options_.broker_id);
    } else if (static_cast<uint32_t>(doc.trace_size()) >= options_.max_hops) {
      refusal =
          absl::StrCat("hop limit: the document has passed ", doc.trace_size(),
                       " brokers, the most ", options_.broker_id, " allows is ",
                       options_.max_hops);
    } else if (!carried.ok()) {
      refusal = absl::StrCat(
          "denied at ", options_.broker_id,
          ": the document carries an approval that is not its approver's: ",
          carried.message());
    }
    on_trace.insert(broker_name_);
    v1::Hop* hop = doc.add_trace();
    hop->set_broker(options_.broker_id);
    *hop->mutable_at() = ToProto(now);

    absl::StatusOr<policy::Flow> flow = FlowOf(doc);
    storage::WriteBatch batch;
    std::vector<storage::Enqueue> local;
    std::map<std::string, std::vector<std::string>> by_peer;
    int priority = storage::PriorityOf(doc.metadata().urgency());
    for (const std::string& r : recipients) {
      std::string denied = refusal;
      bool is_local = local_orgs_.contains(r);
      std::optional<std::string> next;
      if (denied.empty() && !is_local) {
        absl::StatusOr<std::string> route = router_.Route(r, on_trace, now);
        if (route.ok()) {
          next = *route;
        } else {
          denied = absl::StrCat("broker ", options_.broker_id, ": ",
                                route.status().message());
        }
      }
      v1::PolicyDecision wire;
      if (denied.empty()) {
        std::shared_ptr<const policy::Policy> policy;
        policy::Decision decision;
        if (flow.ok()) {
          policy::Flow f = *flow;
          f.recipient = r;
          f.cross_broker = true;
          decision = policy_->Decide(f, now, &policy);
          if (!decision.permitted()) {
            denied = policy ? absl::StrCat("denied at ", options_.broker_id,
                                           ": ", decision.Reason(*policy, f))
                            : absl::StrCat("denied at ", options_.broker_id,
                                           ": no policy is loaded (fail "
                                           "closed)");
          } else if (absl::Status s = CheckObligations(decision, *policy, f,
                                                       doc, "transfer");
                     !s.ok()) {
            denied = absl::StrCat("denied at ", options_.broker_id, ": ",
                                  s.message());
          }
          if (policy)
            policy::ToProto(decision, *policy, options_.broker_id, &wire);
          if (denied.empty()) {
            std::string missing =
                MissingApprovals(doc, RequiredApprovals(doc, {&wire}, nullptr));
            if (!missing.empty()) {
              denied =
                  absl::StrCat("denied at ", options_.broker_id, ": ", missing);
            }
          }
        } else {
          denied = absl::StrCat("denied at ", options_.broker_id, ": ",
                                flow.status().message());
        }
      }
      if (!denied.empty()) {
        v1::StatusEvent e;
        e.set_document_id(doc.id());
        e.set_recipient(r);
        *e.mutable_at() = ToProto(now);
        e.set_delivery_state(v1::DELIVERY_STATE_DENIED);
        e.set_reason(std::move(denied));
        e.set_actor(options_.broker_id);
        e.set_sender(doc.sender());
        if (wire.policy_version().size()) *e.mutable_policy() = wire;
        AppendReturn(&batch, peer, e);
        batch.events.push_back(std::move(e));
        continue;
      }
      v1::CopyDecision* copy = custody.add_copies();
      copy->set_recipient(r);
      *copy->mutable_policy() = std::move(wire);
      if (next) {
        by_peer[*next].push_back(r);
      } else {
        batch.enqueue.push_back(
            storage::Enqueue{r, priority, doc.id(), doc.sender(), peer});
      }
    }
    for (const auto& [next_peer, rs] : by_peer) {
      batch.enqueue.push_back(storage::Enqueue{OutboxName(next_peer), priority,
                                               doc.id(), doc.sender(),
                                               OutboxPayload(peer, rs)});
    }
    AddNextHops(doc.id(), by_peer, &batch);
    if (options_.audit)
      AuditCustodyTaken(peer, doc, custody, by_peer, now, &batch);
    std::vector<std::string> served;  // local copies: change requests apply
    for (const storage::Enqueue& q : batch.enqueue)
      if (!IsLinkQueue(q.recipient)) served.push_back(q.recipient);
    AddChangeRequest(doc, served, &batch);
    // The guard keeps the decisions, so a transfer sent again after a lost
    // custody gets the same answer.
    batch.guard = storage::Guard{
        absl::StrCat("\x01xfer", std::string(1, '\0'), doc.id(),
                     std::string(1, '\0'), absl::StrJoin(recipients, ",")),
        custody.SerializeAsString()};
    // Where each copy taken came from (those served here, those sent on):
    // its events go back that way.
    const std::string route = absl::StrCat(peer, "\n", doc.sender());
    for (const std::string& r : served)
      batch.records.push_back(storage::Record{RouteKey(doc.id(), r), route});
    for (const auto& [next_peer, rs] : by_peer) {
      for (const std::string& r : rs)
        batch.records.push_back(storage::Record{RouteKey(doc.id(), r), route});
    }
    auto shared = std::make_shared<const v1::Document>(std::move(doc));
    batch.document = shared;
    for (storage::Record& r : storage::AttachmentReferences(*shared))
      batch.records.push_back(std::move(r));
    StoreWrite(
        std::move(batch),
        [this, shared, served = std::move(served), custody = std::move(custody),
         done =
             std::move(done)](absl::StatusOr<storage::WriteResult> r) mutable {
          EndAccepting(shared->id());  // stored (or not): the next may look
          if (absl::IsAlreadyExists(r.status())) {
            // The sender's document again, under another id.
            custody.clear_copies();
            custody.mutable_error()->set_code(
                static_cast<int>(absl::StatusCode::kInvalidArgument));
            custody.mutable_error()->set_message(
                absl::StrCat("broker ", options_.broker_id,
                             ": transfer.document.id: ", r.status().message()));
            return done(std::move(custody));
          }
          if (!r.ok()) {
            // Not in our custody: UNAVAILABLE tells the peer to keep it and
            // send it again later.
            custody.clear_copies();
            custody.mutable_error()->set_code(
                static_cast<int>(absl::StatusCode::kUnavailable));
            custody.mutable_error()->set_message(absl::StrCat(
                "broker ", options_.broker_id,
                " could not store the transfer: ", r.status().ToString()));
            return done(std::move(custody));
          }
          if (r->duplicate_of) {
            // Taken before: answer as then.
            uint64_t id = custody.id();
            v1::Custody earlier;
            if (earlier.ParseFromString(*r->duplicate_of)) custody = earlier;
            custody.set_id(id);
            return done(std::move(custody));
          }
          {
            absl::MutexLock lock(&mu_);
            for (const storage::QueueEntry& qe : r->enqueued) {
              if (IsLinkQueue(qe.recipient)) continue;
              AddEntryLocked(qe, shared);
              WakeLocked(qe.recipient);
            }
            ++accepted_;  // in this broker's custody
          }
          metrics_.transfers_in.Add();
          size_t denied = 0;
          for (const v1::StatusEvent& e : r->events)
            denied += e.delivery_state() == v1::DELIVERY_STATE_DENIED;
          if (denied) metrics_.denied.With("arrival").Add(denied);
          Publish(r->events);
          ChangeRequestStored(*shared, served);
          done(std::move(custody));
        },
        shared);
  }

  // Where a document came from, and its sender and recipients.
  struct Route {
    std::string previous;  // empty: it did not come from a peer
    std::string sender;
    std::vector<std::string> recipients;
  };
  // The route of the copy of `document_id` for `recipient`: from its route
  // record, or from the document's record of an older broker (one per
  // document), or (for documents stored before there were route records)
  // from the document itself. NOT_FOUND when this broker never had the
  // document.
  absl::StatusOr<Route> RouteOf(const std::string& document_id,
                                const std::string& recipient) {
    ASSIGN_OR_RETURN(std::optional<std::string> copy,
                     store_->GetRecord(RouteKey(document_id, recipient)));
    if (copy) {
      std::vector<std::string> parts = absl::StrSplit(*copy, '\n');
      if (parts.size() == 2)
        return Route{std::move(parts[0]), std::move(parts[1]), {recipient}};
    }
    ASSIGN_OR_RETURN(
        std::optional<std::string> record,
        store_->GetRecord(absl::StrCat(kRouteRecord, document_id)));
    if (record) {
      std::vector<std::string> parts = absl::StrSplit(*record, '\n');
      if (parts.size() == 3) {
        Route route{std::move(parts[0]), std::move(parts[1]), {}};
        if (!parts[2].empty()) route.recipients = absl::StrSplit(parts[2], ',');
        return route;
      }
    }
    ASSIGN_OR_RETURN(v1::Document doc, store_->GetDocument(document_id));
    return Route{PreviousBroker(doc),
                 doc.sender(),
                 {doc.recipients().begin(), doc.recipients().end()}};
  }

  void AcceptReturnedEvent(const std::string& peer, v1::ReturnedEvent r,
                           absl::AnyInvocable<void(absl::Status)> done) {
    v1::StatusEvent e = std::move(*r.mutable_event());
    if (absl::Status s = CheckDocumentId("event.document_id", e.document_id());
        !s.ok()) {
      return done(s);
    }
    if (!ValidateOrgCode(e.recipient()).ok() ||
        !ValidateOrgCode(e.sender()).ok()) {
      return done(absl::InvalidArgumentError(absl::StrCat(
          "returned event: recipient \"", e.recipient(), "\" or sender \"",
          e.sender(), "\" is not an organization code")));
    }
    // Only the peer the copy was handed to reports on it.
    if (absl::Status s = CheckHandedTo(peer, e.document_id(), e.recipient());
        !s.ok()) {
      return done(s);
    }
    // At the sender's own broker the event has arrived: no need to read the
    // document to know where it goes next. Elsewhere the stored trace says.
    std::string previous;
    if (!local_orgs_.contains(e.sender())) {
      absl::StatusOr<Route> route = RouteOf(e.document_id(), e.recipient());
      if (absl::IsNotFound(route.status())) {
        return done(absl::InvalidArgumentError(
            absl::StrCat("returned event: document ", e.document_id(),
                         " never passed through broker ", options_.broker_id)));
      }
      if (!route.ok()) return done(route.status());
      if (std::find(route->recipients.begin(), route->recipients.end(),
                    e.recipient()) == route->recipients.end() ||
          e.sender() != route->sender) {
        return done(absl::InvalidArgumentError(absl::StrCat(
            "returned event: recipient ", e.recipient(), " or sender ",
            e.sender(), " does not match document ", e.document_id())));
      }
      previous = std::move(route->previous);
      if (previous.empty()) {
        return done(absl::InvalidArgumentError(
            absl::StrCat("returned event: document ", e.document_id(),
                         " did not come to broker ", options_.broker_id,
                         " from another broker")));
      }
    }
    storage::WriteBatch batch;
    std::string key = absl::StrCat("\x01ret", std::string(1, '\0'), peer,
                                   std::string(1, '\0'));
    for (int i = 7; i >= 0; --i)
      key.push_back(static_cast<char>((r.id() >> (8 * i)) & 0xff));
    batch.guard = storage::Guard{std::move(key), e.document_id()};
    if (!previous.empty()) AppendReturn(&batch, previous, e);
    batch.events.push_back(std::move(e));
    batch.sync_within = kSharedSyncWait;
    StoreWrite(std::move(batch),
               [this, done = std::move(done)](
                   absl::StatusOr<storage::WriteResult> r) mutable {
                 if (!r.ok()) return done(r.status());
                 if (!r->duplicate_of) {
                   metrics_.events_in.Add();
                   Publish(r->events);
                 }
                 done(absl::OkStatus());
               });
  }

  // Why a peer's directory entry cannot be true; empty if it can. A peer
  // speaks for its own organizations (distance 0, broker = the peer) and
  // passes on others' with the path they came by, the serving broker first.
  std::string DirectoryDefect(const std::string& peer,
                              const v1::DirectoryEntry& e) const {
    if (absl::Status s = ValidateOrgCode(e.org()); !s.ok())
      return std::string(s.message());
    if (e.broker().empty() || e.broker().size() > kMaxDirectoryText ||
        e.name().size() > kMaxDirectoryText)
      return "broker or name empty or too long";
    if (e.distance() >= options_.max_hops)
      return absl::StrCat("distance ", e.distance(), " reaches the hop limit");
    if (e.distance() != static_cast<uint32_t>(e.path_size()))
      return absl::StrCat("distance ", e.distance(), " with a path of ",
                          e.path_size(), " brokers");
    if (e.distance() == 0 ? e.broker() != peer : e.path(0) != e.broker())
      return absl::StrCat(
          "broker ", e.broker(), " is not ",
          e.distance() == 0 ? "the announcing peer" : "the first on its path");
    return "";
  }

  absl::Status LearnDirectory(const std::string& peer,
                              const v1::Announce& announce) override {
    std::vector<DirectoryEntry> entries;
    size_t dropped = 0;
    std::string first_defect;
    if (announce.entries_size() > kMaxDirectoryEntries) {
      dropped = announce.entries_size() - kMaxDirectoryEntries;
      first_defect = absl::StrCat("more than ", kMaxDirectoryEntries,
                                  " entries; the rest are ignored");
    }
    for (int i = 0; i < std::min(announce.entries_size(), kMaxDirectoryEntries);
         ++i) {
      const v1::DirectoryEntry& e = announce.entries(i);
      if (std::string why = DirectoryDefect(peer, e); !why.empty()) {
        if (dropped++ == 0)
          first_defect =
              absl::StrCat("entries[", i, "] (", e.org(), "): ", why);
        continue;
      }
      if (local_orgs_.contains(e.org()) || e.broker() == broker_name_) continue;
      if (std::find(e.path().begin(), e.path().end(), broker_name_) !=
          e.path().end())
        continue;  // it passed through here: a loop
      entries.push_back(DirectoryEntry{
          e.org(), e.name(), e.broker(), e.distance(),
          std::vector<std::string>(e.path().begin(), e.path().end()),
          e.encryption_certificate().size() <= kMaxCertificateBytes
              ? e.encryption_certificate()
              : ""});
    }
    if (router_.Learn(peer, std::move(entries), clock_->Now()))
      directory_generation_.fetch_add(1);
    Router::Patterns patterns;
    for (const std::string& p : announce.route_provinces()) {
      if (ValidProvince(p)) patterns.provinces.push_back(p);
    }
    for (const std::string& u : announce.route_under()) {
      if (ValidateOrgCode(u).ok()) patterns.under.push_back(u);
    }
    router_.LearnPatterns(peer, std::move(patterns));
    if (dropped == 0) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("directory from broker ", peer, ": ", dropped,
                     " entries left out; first: ", first_defect));
  }

  v1::Announce AnnounceTo(const std::string& peer) override {
    std::vector<DirectoryEntry> own;
    {
      absl::MutexLock lock(&certificates_mu_);
      for (size_t i = 0; i < options_.local_orgs.size(); ++i) {
        DirectoryEntry& e = own.emplace_back();
        e.org = options_.local_orgs[i];
        if (i < options_.local_org_names.size())
          e.name = options_.local_org_names[i];
        e.broker = broker_name_;
        if (auto it = certificates_.find(e.org); it != certificates_.end())
          e.encryption_certificate = it->second;
      }
    }
    v1::Announce announce;
    announce.set_broker(broker_name_);
    Router::Patterns patterns = router_.PatternsFor(peer);
    for (std::string& p : patterns.provinces)
      announce.add_route_provinces(std::move(p));
    for (std::string& u : patterns.under)
      announce.add_route_under(std::move(u));
    for (DirectoryEntry& e :
         router_.AnnounceTo(peer, own, options_.max_hops, clock_->Now())) {
      v1::DirectoryEntry* w = announce.add_entries();
      w->set_org(std::move(e.org));
      w->set_name(std::move(e.name));
      w->set_broker(std::move(e.broker));
      w->set_distance(e.distance);
      for (std::string& b : e.path) w->add_path(std::move(b));
      w->set_encryption_certificate(std::move(e.encryption_certificate));
    }
    return announce;
  }

  const Router& router() const override { return router_; }
  uint64_t directory_generation() const override {
    return directory_generation_.load();
  }

  // ---- End-to-end encryption directory ---------------------------------

  void PublishEncryptionCertificate(
      const Principal& caller,
      const v1::PublishEncryptionCertificateRequest& request,
      Callback<v1::PublishEncryptionCertificateResponse> done) override {
    if (absl::Status s = RequireOrg(caller); !s.ok()) return done(s);
    if (!local_orgs_.contains(caller.name)) {
      return done(absl::PermissionDeniedError(
          absl::StrCat("organization ", caller.name,
                       " is not served by this broker; publish at its own "
                       "broker")));
    }
    if (!options_.verify_encryption_certificate) {
      return done(absl::FailedPreconditionError(
          "this broker has no trust root to verify encryption certificates "
          "with"));
    }
    if (request.certificate().empty() ||
        request.certificate().size() > kMaxCertificateBytes) {
      return done(absl::InvalidArgumentError(absl::StrCat(
          "certificate: must be 1..", kMaxCertificateBytes, " bytes")));
    }
    workers_->Submit([this, caller, request, done = std::move(done)]() mutable {
      absl::StatusOr<sealing::EncryptionCertificate> cert =
          options_.verify_encryption_certificate(request.certificate());
      if (!cert.ok()) return done(cert.status());
      if (cert->org != caller.name) {
        return done(absl::PermissionDeniedError(absl::StrCat(
            "certificate: it is ", cert->org, "'s encryption certificate; ",
            caller.name, " may only publish its own")));
      }
      v1::PublishEncryptionCertificateResponse response;
      response.set_org(cert->org);
      response.set_certificate_sha256(sealing::HexOf(cert->sha256));
      *response.mutable_not_after() = ToProto(cert->not_after);
      storage::WriteBatch batch;
      batch.records.push_back(
          {absl::StrCat(kCertificateRecord, cert->org), cert->der});
      StoreWrite(std::move(batch),
                 [this, org = cert->org, der = cert->der,
                  response = std::move(response), done = std::move(done)](
                     absl::StatusOr<storage::WriteResult> r) mutable {
                   if (!r.ok()) return done(r.status());
                   {
                     absl::MutexLock lock(&certificates_mu_);
                     certificates_[org] = std::move(der);
                   }
                   directory_generation_.fetch_add(1);
                   done(std::move(response));
                 });
    });
  }

  void GetEncryptionCertificates(
      const Principal& caller,
      const v1::GetEncryptionCertificatesRequest& request,
      Callback<v1::GetEncryptionCertificatesResponse> done) override {
    if (request.orgs_size() > 1000) {
      return done(absl::InvalidArgumentError("orgs: at most 1000"));
    }
    for (int i = 0; i < request.orgs_size(); ++i) {
      if (absl::Status s =
              ValidateOrgCode(request.orgs(i), absl::StrCat("orgs[", i, "]"));
          !s.ok())
        return done(s);
    }
    v1::GetEncryptionCertificatesResponse response;
    const absl::Time now = clock_->Now();
    for (const std::string& org : request.orgs()) {
      v1::EncryptionCertificate c;
      c.set_org(org);
      if (local_orgs_.contains(org)) {
        absl::MutexLock lock(&certificates_mu_);
        auto it = certificates_.find(org);
        if (it == certificates_.end()) continue;
        c.set_certificate(it->second);
        c.set_broker(broker_name_);
      } else {
        std::optional<DirectoryEntry> e = router_.Find(org, now);
        if (!e || e->encryption_certificate.empty()) continue;
        c.set_certificate(std::move(e->encryption_certificate));
        c.set_broker(std::move(e->broker));
      }
      *response.add_certificates() = std::move(c);
    }
    done(std::move(response));
  }

  std::vector<PeerQueueStats> PeerStats() override {
    std::vector<PeerQueueStats> out;
    absl::MutexLock lock(&mu_);
    for (const PeerRoute& p : router_.peers()) {
      PeerQueueStats& st = out.emplace_back();
      st.peer = p.name;
      if (auto it = link_queues_.find(OutboxName(p.name));
          it != link_queues_.end()) {
        const LinkQueue& q = it->second;
        st.outbox = q.entries.size();
        st.outbox_in_flight = q.entries.size() - q.ready.size();
        st.oldest_outbox = OldestSince(q.entries);
        auto s = q.session.lock();
        st.outbound_link = s && !s->closed_;
      }
      if (auto it = link_queues_.find(ReturnName(p.name));
          it != link_queues_.end()) {
        st.returns = it->second.entries.size();
        auto s = it->second.session.lock();
        st.inbound_link = s && !s->closed_;
      }
    }
    // Queues left behind by peers the configuration no longer names.
    std::map<std::string, PeerQueueStats> orphans;
    for (const auto& [name, q] : link_queues_) {
      std::string peer = name.substr(1);
      if (q.entries.empty() || router_.IsPeer(peer)) continue;
      PeerQueueStats& st = orphans[peer];
      st.peer = peer;
      st.configured = false;
      if (name[0] == '>') {
        st.outbox = q.entries.size();
        st.oldest_outbox = OldestSince(q.entries);
      } else {
        st.returns = q.entries.size();
      }
    }
    for (auto& [peer, st] : orphans) out.push_back(std::move(st));
    return out;
  }

  // ---- Approvals
  // ---------------------------------------------------------------

  static bool IsAutomated(const v1::Document& doc) {
    return doc.metadata().origin() == v1::ORIGIN_SYSTEM ||
           doc.metadata().origin() == v1::ORIGIN_AI;
  }

  // The approval record when `doc` (id and content hash set) must be held,
  // nullopt when its copies may go out at once.
  std::optional<v1::PendingApproval> HoldFor(
      const v1::Document& doc,
      const std::vector<v1::PolicyDecision>& decisions) {
    std::vector<const v1::PolicyDecision*> ds;
    for (const v1::PolicyDecision& d : decisions) ds.push_back(&d);
    std::string why;
    std::vector<v1::Approver> required = RequiredApprovals(doc, ds, &why);
    if (required.empty()) {
      // Content a system or an AI sent for approval does not escape it by
      // being sent again as a person's. Most brokers hold none: no lock on
      // the send path then.
      if (!any_automated_content_.load(std::memory_order_acquire))
        return std::nullopt;
      absl::MutexLock lock(&approvals_mu_);
      if (!automated_content_.contains(
              AutomatedContentKey(doc.sender(), doc.content_sha256())))
        return std::nullopt;
      AddRequired(&required, kApproverRole, doc.sender());
      why =
          "the same content was sent before by an automated origin and held "
          "for approval; sending it again does not remove that origin";
    }
    return PendingFor(doc, std::move(required), why);
  }

  // Adds (role, org) to `out` unless it is there already.
  static void AddRequired(std::vector<v1::Approver>* out,
                          const std::string& role, const std::string& org) {
    for (const v1::Approver& a : *out) {
      if (a.role() == role && a.org() == org) return;
    }
    v1::Approver& a = out->emplace_back();
    a.set_role(role);
    a.set_org(org);
  }

  // The approvals `doc` needs before a copy may go out: the built-in rule
  // (a system or an AI proposing a personnel decision) and what the permits
  // behind `decisions` oblige, an empty org meaning the sender's. `why`
  // (optional) says which.
  static std::vector<v1::Approver> RequiredApprovals(
      const v1::Document& doc,
      const std::vector<const v1::PolicyDecision*>& decisions,
      std::string* why) {
    std::vector<v1::Approver> out;
    std::vector<std::string> reasons;
    const v1::DocumentMetadata& m = doc.metadata();
    if ((m.origin() == v1::ORIGIN_SYSTEM || m.origin() == v1::ORIGIN_AI) &&
        m.decision_category() == v1::DECISION_CATEGORY_PERSONNEL) {
      AddRequired(&out, kApproverRole, doc.sender());
      reasons.push_back(absl::StrCat(
          "a personnel decision from ",
          m.origin() == v1::ORIGIN_AI ? "an AI" : "an automated system",
          " needs a person's approval (built-in rule)"));
    }
    for (const v1::PolicyDecision* d : decisions) {
      if (d->obligations().approvals().empty()) continue;
      for (const v1::Approver& a : d->obligations().approvals())
        AddRequired(&out, a.role(), a.org().empty() ? doc.sender() : a.org());
      std::string rules =
          absl::StrCat("policy ", d->policy_version(), " rules ",
                       absl::StrJoin(d->rules(), ","), " oblige approval");
      if (std::find(reasons.begin(), reasons.end(), rules) == reasons.end())
        reasons.push_back(std::move(rules));
    }
    if (why) *why = absl::StrJoin(reasons, "; ");
    return out;
  }

  static std::string Describe(const v1::Approver& a) {
    return absl::StrCat(a.role(), "@", a.org());
  }

  // Whether `given` holds an approval of `doc`'s content for `need`.
  static bool Satisfies(
      const google::protobuf::RepeatedPtrField<v1::Approval>& given,
      const v1::Approver& need, const std::string& content_sha256) {
    for (const v1::Approval& a : given) {
      if (a.decision() == v1::APPROVAL_DECISION_APPROVE &&
          a.role() == need.role() && a.org() == need.org() &&
          a.content_sha256() == content_sha256)
        return true;
    }
    return false;
  }

  // Where signatures are required, each approval `doc` carries must verify
  // as its approver's signature over this document (the role it counts for
  // is the sender's broker's word). UNAVAILABLE when a certificate's
  // revocation cannot be checked now.
  absl::Status CheckCarriedApprovals(const v1::Document& doc) const {
    if (!options_.signatures || !options_.require_signatures ||
        doc.approvals().empty())
      return absl::OkStatus();
    const std::string manifest = sealing::HexOf(signing::DocumentDigest(doc));
    for (int i = 0; i < doc.approvals_size(); ++i) {
      RETURN_IF_ERROR(
          signing::VerifyApproval(*options_.signatures, doc.id(), manifest,
                                  doc.approvals(i),
                                  absl::StrCat("approvals[", i, "].signature"),
                                  std::nullopt, clock_->Now())
              .status());
    }
    return absl::OkStatus();
  }

  // What of `required` the document does not carry, for a copy that
  // arrives from a peer: approvals happen at the sender's broker only (and
  // what it carries verified: CheckCarriedApprovals).
  static std::string MissingApprovals(
      const v1::Document& doc, const std::vector<v1::Approver>& required) {
    std::vector<std::string> missing;
    for (const v1::Approver& need : required) {
      if (!Satisfies(doc.approvals(), need, doc.content_sha256()))
        missing.push_back(Describe(need));
    }
    if (missing.empty()) return "";
    return absl::StrCat(
        "the document needs the approval of ", absl::StrJoin(missing, ", "),
        " for its content, which it does not carry (approvals are given at "
        "the sender's broker)");
  }

  static std::string AutomatedContentKey(absl::string_view sender,
                                         absl::string_view content_sha256) {
    return absl::StrCat(sender, std::string(1, '\0'), content_sha256);
  }

  // The requirements of `held` still open.
  static std::vector<v1::Approver> Outstanding(
      const v1::PendingApproval& held) {
    std::vector<v1::Approver> out;
    for (const v1::Approver& need : held.required()) {
      if (!Satisfies(held.approvals(), need, held.content_sha256()))
        out.push_back(need);
    }
    return out;
  }

  // The open requirements of `held` that `person` may satisfy.
  std::vector<v1::Approver> SatisfiableBy(
      const std::string& person, const v1::PendingApproval& held) const {
    std::vector<v1::Approver> out;
    for (const v1::Approver& need : Outstanding(held)) {
      for (const ApproverGrant& g : options_.approvers) {
        if (g.person != person || g.role != need.role()) continue;
        if (std::find(g.orgs.begin(), g.orgs.end(), need.org()) !=
            g.orgs.end()) {
          out.push_back(need);
          break;
        }
      }
    }
    return out;
  }

  bool IsApprover(const std::string& person) const {
    for (const ApproverGrant& g : options_.approvers) {
      if (g.person == person) return true;
    }
    return false;
  }

  // The record approvers list for a document being held.
  v1::PendingApproval PendingFor(const v1::Document& d,
                                 std::vector<v1::Approver> required,
                                 const std::string& why) const {
    v1::PendingApproval p;
    p.set_document_id(d.id());
    p.set_sender(d.sender());
    *p.mutable_recipients() = d.recipients();
    *p.mutable_metadata() = d.metadata();
    p.set_content_sha256(d.content_sha256());
    p.set_manifest_sha256(sealing::HexOf(signing::DocumentDigest(d)));
    for (const v1::Attachment& a : d.attachments()) {
      v1::Attachment* listed = p.add_attachments();
      listed->set_name(a.name());
      listed->set_content_type(a.content_type());
      listed->set_sha256(a.sha256());
      listed->set_size(a.size());
      listed->set_stored(a.stored());
    }
    *p.mutable_accepted_at() = d.accepted_at();
    *p.mutable_expires_at() =
        ToProto(FromProto(d.accepted_at()) + options_.approval_expiry);
    for (v1::Approver& a : required) *p.add_required() = std::move(a);
    p.set_reason(why);
    return p;
  }

  static absl::Time FromProto(const Timestamp& t) {
    return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
  }

  // One event per recipient of a held document.
  std::vector<v1::StatusEvent> HeldEvents(const v1::PendingApproval& held,
                                          v1::DeliveryState state,
                                          const std::string& actor,
                                          const std::string& reason,
                                          const v1::Approval* approval,
                                          absl::Time now) const {
    std::vector<v1::StatusEvent> out;
    for (const std::string& r : held.recipients()) {
      v1::StatusEvent& e = out.emplace_back();
      e.set_document_id(held.document_id());
      e.set_recipient(r);
      *e.mutable_at() = ToProto(now);
      e.set_delivery_state(state);
      e.set_reason(reason);
      e.set_actor(actor);
      e.set_sender(held.sender());
      if (approval) *e.mutable_approval() = *approval;
    }
    return out;
  }

  static storage::Record HeldRecord(const std::string& id, std::string value) {
    return storage::Record{absl::StrCat(kHeldRecord, id), std::move(value)};
  }

  // Applies a decided batch once: a second final decision (or an expiry
  // racing a decision) finds the guard and changes nothing.
  static storage::Guard DecidedGuard(const std::string& id,
                                     absl::string_view outcome) {
    return storage::Guard{absl::StrCat("\x01"
                                       "appr",
                                       std::string(1, '\0'), id),
                          std::string(outcome)};
  }

  void ListApprovals(const Principal& caller, bool all,
                     const v1::ListApprovalsRequest& request,
                     Callback<v1::ListApprovalsResponse> done) override {
    if (caller.kind != Principal::Kind::kPerson)
      return done(absl::PermissionDeniedError(absl::StrCat(
          caller.spiffe_id,
          " is not a person: approvals are listed by approvers, operators "
          "and auditors with their person certificates")));
    if (!all && !IsApprover(caller.spiffe_id))
      return done(absl::PermissionDeniedError(absl::StrCat(
          caller.spiffe_id,
          " holds no approver role in this broker's configuration "
          "(approvals.approvers), nor the operator or auditor role")));
    if (!request.org().empty()) {
      if (absl::Status s = ValidateOrgCode(request.org(), "org"); !s.ok())
        return done(s);
    }
    if (request.limit() > 1000)
      return done(absl::InvalidArgumentError("limit: at most 1000"));
    const size_t limit = request.limit() == 0 ? 100 : request.limit();
    v1::ListApprovalsResponse out;
    absl::MutexLock lock(&approvals_mu_);
    for (const auto& [id, held] : held_) {
      if (static_cast<size_t>(out.approvals_size()) >= limit) break;
      if (!request.org().empty() && held.record.sender() != request.org())
        continue;
      std::vector<v1::Approver> yours =
          SatisfiableBy(caller.spiffe_id, held.record);
      if (!all && yours.empty()) continue;
      v1::PendingApproval& listed = *out.add_approvals();
      listed = held.record;
      for (v1::Approver& a : yours) *listed.add_yours() = std::move(a);
    }
    done(std::move(out));
  }

  void DecideApproval(const Principal& caller,
                      const v1::DecideApprovalRequest& request,
                      Callback<v1::DecideApprovalResponse> done) override {
    workers_->Submit([this, caller, request, done = std::move(done)]() mutable {
      DecideOnWorker(caller, request, std::move(done));
    });
  }

  // Whether `a` and `b` name the same roles, in any order.
  static bool SameRoles(
      const google::protobuf::RepeatedPtrField<v1::Approver>& a,
      const std::vector<v1::Approver>& b) {
    std::vector<std::pair<std::string, std::string>> x, y;
    for (const v1::Approver& r : a) x.emplace_back(r.org(), r.role());
    for (const v1::Approver& r : b) y.emplace_back(r.org(), r.role());
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    return x == y;
  }

  // The approver's signature over its decision on document
  // `request.document_id()` of manifest `manifest` (hex; empty for a copy
  // held before approvals were signed) and content `content`, given as the
  // roles `mine`, by `caller` and with its certificate valid `now`.
  absl::Status CheckDecisionSignature(const Principal& caller,
                                      const v1::DecideApprovalRequest& request,
                                      const std::string& content,
                                      const std::string& manifest,
                                      const std::vector<v1::Approver>& mine,
                                      absl::Time now) const {
    if (!request.has_signature()) {
      return absl::InvalidArgumentError(
          "signature: missing: the approver signs its decision (document id, "
          "manifest and content hashes, decision, comment, the roles it "
          "gives it as) with its person certificate's key; "
          "AdminClient::DecideApproval and `lienthong approvals` do");
    }
    if (!SameRoles(request.as(), mine)) {
      std::vector<std::string> now_as, signed_as;
      for (const v1::Approver& a : mine) now_as.push_back(Describe(a));
      for (const v1::Approver& a : request.as())
        signed_as.push_back(Describe(a));
      return absl::FailedPreconditionError(absl::StrCat(
          "as: the decision would be given as ", absl::StrJoin(now_as, ", "),
          ", not as ",
          signed_as.empty() ? "(none)" : absl::StrJoin(signed_as, ", "),
          " (PendingApproval.yours); list it again"));
    }
    if (absl::AsciiStrToLower(request.manifest_sha256()) != manifest) {
      return absl::FailedPreconditionError(absl::StrCat(
          "manifest_sha256: document ", request.document_id(), " has manifest ",
          manifest.empty() ? "(none: held before approvals were signed)"
                           : manifest,
          ", not ", request.manifest_sha256(), "; review the document again"));
    }
    v1::Approval signed_by_caller;
    signed_by_caller.set_approver(caller.spiffe_id);
    signed_by_caller.set_role(mine.front().role());
    signed_by_caller.set_org(mine.front().org());
    *signed_by_caller.mutable_as() = request.as();
    signed_by_caller.set_content_sha256(content);
    signed_by_caller.set_decision(request.decision());
    signed_by_caller.set_comment(request.comment());
    *signed_by_caller.mutable_signature() = request.signature();
    // The certificate must be valid now, not only when it says it signed.
    return signing::VerifyApproval(*options_.signatures, request.document_id(),
                                   manifest, signed_by_caller, "signature", now,
                                   now)
        .status();
  }

  void DecideOnWorker(const Principal& caller,
                      const v1::DecideApprovalRequest& request,
                      Callback<v1::DecideApprovalResponse> done) {
    if (caller.kind != Principal::Kind::kPerson ||
        !IsApprover(caller.spiffe_id)) {
      return done(absl::PermissionDeniedError(absl::StrCat(
          caller.spiffe_id,
          " may not decide approvals: it holds no approver role in this "
          "broker's configuration (approvals.approvers)")));
    }
    const std::string& id = request.document_id();
    if (absl::Status s = CheckDocumentId("document_id", id); !s.ok())
      return done(s);
    const bool approve = request.decision() == v1::APPROVAL_DECISION_APPROVE;
    if (!approve && request.decision() != v1::APPROVAL_DECISION_REJECT) {
      return done(absl::InvalidArgumentError(
          "decision: APPROVAL_DECISION_APPROVE or APPROVAL_DECISION_REJECT"));
    }
    const std::string content = absl::AsciiStrToLower(request.content_sha256());
    if (!sealing::IsSha256Hex(content)) {
      return done(absl::InvalidArgumentError(
          "content_sha256: the document's content hash (64 hex digits) as "
          "listed by ListApprovals is required"));
    }
    if (request.comment().size() > 2000)
      return done(absl::InvalidArgumentError("comment: at most 2000 bytes"));
    if (!approve && request.comment().empty()) {
      return done(
          absl::InvalidArgumentError("comment: a rejection must say why"));
    }
    const absl::Time now = clock_->Now();
    // The person's own signature over what it decided, for this document
    // (its manifest as the sender signed it): a broker cannot make one up.
    // Checked whenever it comes; required where signatures are.
    const bool check_signature =
        options_.signatures &&
        (request.has_signature() || options_.require_signatures);
    v1::PendingApproval held;
    std::vector<v1::Approver> mine;
    {
      absl::MutexLock lock(&approvals_mu_);
      auto it = held_.find(id);
      if (it != held_.end())
        mine = SatisfiableBy(caller.spiffe_id, it->second.record);
      if (mine.empty()) {
        return done(absl::NotFoundError(
            absl::StrCat("document ", id, " is not waiting for an approval by ",
                         caller.spiffe_id)));
      }
      if (it->second.busy) {
        return done(absl::AbortedError(
            absl::StrCat("another decision on document ", id,
                         " is being recorded; list it again and retry")));
      }
      if (it->second.record.content_sha256() != content) {
        return done(absl::FailedPreconditionError(
            absl::StrCat("content_sha256: document ", id, " has content ",
                         it->second.record.content_sha256(), ", not ", content,
                         "; review the document again")));
      }
      it->second.busy = true;
      held = it->second.record;
    }
    if (check_signature) {
      // Outside the lock: verifying may read the revocation lists.
      if (absl::Status s = CheckDecisionSignature(
              caller, request, content, held.manifest_sha256(), mine, now);
          !s.ok()) {
        {
          absl::MutexLock lock(&approvals_mu_);
          if (auto it = held_.find(id); it != held_.end())
            it->second.busy = false;
        }
        return done(s);
      }
    }
    std::vector<v1::Approval> given;
    for (const v1::Approver& need : mine) {
      v1::Approval& a = given.emplace_back();
      a.set_approver(caller.spiffe_id);
      a.set_role(need.role());
      a.set_org(need.org());
      *a.mutable_at() = ToProto(now);
      a.set_content_sha256(content);
      a.set_comment(request.comment());
      a.set_decision(request.decision());
      a.set_broker(options_.broker_id);
      for (const v1::Approver& r : mine) *a.add_as() = r;
      if (check_signature) *a.mutable_signature() = request.signature();
    }
    std::vector<std::string> as;
    for (const v1::Approver& need : mine) as.push_back(Describe(need));
    const std::string by =
        absl::StrCat(caller.spiffe_id, " as ", absl::StrJoin(as, ", "));
    for (const v1::Approval& a : given) *held.add_approvals() = a;
    const std::vector<v1::Approver> still = Outstanding(held);

    v1::DecideApprovalResponse response;
    *response.mutable_approval() = given.front();
    std::vector<std::string> local;  // released copies queued here
    storage::WriteBatch batch;
    std::shared_ptr<const v1::Document> doc;
    std::string outcome;
    if (!approve) {
      outcome = "rejected";
      batch.guard = DecidedGuard(id, outcome);
      batch.records.push_back(HeldRecord(id, ""));
      batch.events =
          HeldEvents(held, v1::DELIVERY_STATE_DENIED, caller.spiffe_id,
                     absl::StrCat("approval rejected by ", by,
                                  request.comment().empty() ? "" : ": ",
                                  request.comment(), "; no copy was delivered"),
                     &given.front(), now);
    } else if (!still.empty()) {
      std::vector<std::string> open;
      for (const v1::Approver& a : still) open.push_back(Describe(a));
      for (const v1::Approver& a : still) *response.add_still_required() = a;
      batch.records.push_back(HeldRecord(id, held.SerializeAsString()));
      batch.events = HeldEvents(
          held, v1::DELIVERY_STATE_PENDING_APPROVAL, caller.spiffe_id,
          absl::StrCat("approved by ", by, "; still waiting for ",
                       absl::StrJoin(open, ", ")),
          &given.front(), now);
    } else {
      outcome = "released";
      absl::StatusOr<v1::Document> stored = store_->GetDocument(id);
      if (!stored.ok()) {
        Unbusy(id);
        return done(stored.status());
      }
      *stored->mutable_approvals() = held.approvals();
      doc = std::make_shared<const v1::Document>(*std::move(stored));
      response.set_released(true);
      batch.guard = DecidedGuard(id, outcome);
      batch.document = doc;
      batch.records.push_back(HeldRecord(id, ""));
      const std::string reason =
          absl::StrCat("approved by ", by, "; released for delivery");
      std::vector<v1::StatusEvent> events =
          HeldEvents(held, v1::DELIVERY_STATE_APPROVED, caller.spiffe_id,
                     reason, &given.front(), now);
      // Routed now: the route table may have changed while it waited.
      const int priority = storage::PriorityOf(doc->metadata().urgency());
      std::map<std::string, std::vector<std::string>> by_peer;
      std::vector<std::string> released;
      for (v1::StatusEvent& e : events) {
        const std::string& r = e.recipient();
        if (local_orgs_.contains(r)) {
          batch.enqueue.push_back(
              storage::Enqueue{r, priority, id, doc->sender(), ""});
          local.push_back(r);
          released.push_back(r);
        } else if (absl::StatusOr<std::string> peer =
                       router_.Route(r, {broker_name_}, now);
                   peer.ok()) {
          by_peer[*peer].push_back(r);
          released.push_back(r);
        } else {
          e.set_delivery_state(v1::DELIVERY_STATE_DENIED);
          e.set_reason(absl::StrCat(reason, ", but broker ", options_.broker_id,
                                    ": ", peer.status().message()));
        }
      }
      for (const auto& [peer, recipients] : by_peer) {
        batch.enqueue.push_back(
            storage::Enqueue{OutboxName(peer), priority, id, doc->sender(),
                             OutboxPayload("", recipients)});
      }
      AddNextHops(id, by_peer, &batch);
      batch.events = std::move(events);
      // A recall, update or replace takes effect once released.
      AddChangeRequest(*doc, released, &batch);
    }
    StoreWrite(
        std::move(batch),
        [this, id, doc, held, outcome, local = std::move(local),
         response = std::move(response), done = std::move(done)](
            absl::StatusOr<storage::WriteResult> r) mutable {
          if (r.ok() && r->duplicate_of) {
            r = absl::FailedPreconditionError(absl::StrCat(
                "document ", id, " was ", *r->duplicate_of, " already"));
            outcome = "decided";
          }
          {
            absl::MutexLock lock(&approvals_mu_);
            auto it = held_.find(id);
            if (it != held_.end()) {
              it->second.busy = false;
              if (r.ok() && outcome.empty()) it->second.record = held;
              if (!outcome.empty()) held_.erase(it);
            }
          }
          if (!r.ok()) return done(r.status());
          {
            absl::MutexLock lock(&mu_);
            for (const storage::QueueEntry& qe : r->enqueued) {
              if (IsLinkQueue(qe.recipient)) continue;  // StoreWrite did
              AddEntryLocked(qe, doc);
              WakeLocked(qe.recipient);
            }
          }
          Publish(r->events);
          if (doc) ChangeRequestStored(*doc, local);
          done(std::move(response));
        },
        doc);
  }

  void Unbusy(const std::string& id) {
    absl::MutexLock lock(&approvals_mu_);
    if (auto it = held_.find(id); it != held_.end()) it->second.busy = false;
  }

  // Every second: held documents past their time expire.
  void ScheduleApprovalExpiry() {
    timer_->RunAfter(absl::Seconds(1), [this] {
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
      }
      const absl::Time now = clock_->Now();
      std::vector<v1::PendingApproval> expired;
      {
        absl::MutexLock lock(&approvals_mu_);
        for (auto& [id, held] : held_) {
          if (held.busy || held.expires > now) continue;
          held.busy = true;
          expired.push_back(held.record);
        }
      }
      for (v1::PendingApproval& held : expired) {
        workers_->Submit(
            [this, held = std::move(held), now] { Expire(held, now); });
      }
      ScheduleApprovalExpiry();
    });
  }

  void Expire(const v1::PendingApproval& held, absl::Time now) {
    const std::string& id = held.document_id();
    storage::WriteBatch batch;
    batch.guard = DecidedGuard(id, "expired");
    batch.records.push_back(HeldRecord(id, ""));
    std::vector<std::string> open;
    for (const v1::Approver& a : Outstanding(held)) open.push_back(Describe(a));
    batch.events = HeldEvents(
        held, v1::DELIVERY_STATE_EXPIRED, options_.broker_id,
        absl::StrCat("not approved by ", absl::StrJoin(open, ", "), " within ",
                     absl::FormatDuration(options_.approval_expiry),
                     "; no copy was delivered"),
        nullptr, now);
    StoreWrite(std::move(batch),
               [this, id](absl::StatusOr<storage::WriteResult> r) {
                 {
                   absl::MutexLock lock(&approvals_mu_);
                   auto it = held_.find(id);
                   if (it == held_.end()) return;
                   it->second.busy = false;
                   // A failed write is tried again on the next tick.
                   if (r.ok()) held_.erase(it);
                 }
                 if (r.ok() && !r->duplicate_of) Publish(r->events);
               });
  }

  void Shutdown() override {
    std::vector<Callback<v1::FetchResponse>> waiting;
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      for (auto& [org, q] : queues_) {
        for (auto& w : q.waiters) {
          if (w->finished) continue;
          w->finished = true;
          waiting.push_back(std::move(w->done));
        }
        q.waiters.clear();
      }
    }
    for (auto& done : waiting)
      done(absl::UnavailableError("broker is shutting down"));
  }

  ExchangeStats Stats() override {
    ExchangeStats stats;
    {
      absl::MutexLock lock(&mu_);
      stats = ExchangeStats{queued_, leased_, accepted_, delivered_};
    }
    absl::MutexLock lock(&approvals_mu_);
    stats.held_for_approval = held_.size();
    return stats;
  }

  // When the oldest of `entries` entered its queue. Within one priority,
  // queue order is arrival order, so only the first entry of each priority
  // needs looking at (not every entry, with the exchange's lock held).
  template <typename T>
  static std::optional<absl::Time> OldestSince(
      const std::map<Key, T>& entries) {
    std::optional<absl::Time> oldest;
    for (int p = 0; p < storage::kPriorityLevels; ++p) {
      auto it = entries.lower_bound(Key{p, 0});
      if (it == entries.end() || it->first.first != p) continue;
      if (!oldest || it->second.since < *oldest) oldest = it->second.since;
    }
    return oldest;
  }

  std::vector<OrgQueueStats> OrgStats() override {
    std::vector<OrgQueueStats> out;
    absl::MutexLock lock(&mu_);
    for (const auto& [org, q] : queues_) {
      if (q.entries.empty()) continue;
      OrgQueueStats& st = out.emplace_back();
      st.org = org;
      st.waiting = q.entries.size();
      st.in_flight = q.entries.size() - q.ready.size();
      st.oldest = OldestSince(q.entries);
    }
    std::sort(out.begin(), out.end(),
              [](const OrgQueueStats& a, const OrgQueueStats& b) {
                return a.org < b.org;
              });
    return out;
  }

  // ---- Recall, update, replace
  // ----------------------------------------------------
  //
  // A RECALL, UPDATE or REPLACE document (a "change request") sent with
  // metadata.refers_to = X records status 13 on X's copies; the recipient
  // answers on X with 15 or 16. Each broker serving a recipient keeps the
  // request pending for that copy in a record (kRecallRecord + X + "/" + r),
  // mirrored in recalls_; a pending RECALL keeps X's copy from ever being
  // handed out again (it is withdrawn, RECALLED, instead), whether X waited
  // here when the recall came or arrives after it (an urgent recall
  // overtaking a normal X).

  static bool IsChangeRequest(const v1::Document& doc) {
    switch (doc.metadata().business_type()) {
      case v1::BUSINESS_TYPE_RECALL:
      case v1::BUSINESS_TYPE_UPDATE:
      case v1::BUSINESS_TYPE_REPLACE:
        return true;
      default:
        return false;
    }
  }

  static std::string RecallKey(absl::string_view document_id,
                               absl::string_view recipient) {
    return absl::StrCat(kRecallRecord, document_id, "/", recipient);
  }

  static std::string EncodeRecall(const RecallState& st) {
    return absl::StrCat(st.request_id, "\n", st.sender, "\n",
                        static_cast<int>(st.type), "\n",
                        static_cast<int>(st.answer));
  }

  static std::optional<RecallState> DecodeRecall(absl::string_view value) {
    std::vector<std::string> parts = absl::StrSplit(value, '\n');
    int type = 0, answer = 0;
    if (parts.size() != 4 || !absl::SimpleAtoi(parts[2], &type) ||
        !absl::SimpleAtoi(parts[3], &answer) ||
        !v1::BusinessType_IsValid(type)) {
      return std::nullopt;
    }
    RecallState st;
    st.request_id = parts[0];
    st.sender = parts[1];
    st.type = static_cast<v1::BusinessType>(type);
    st.answer = answer;
    return st;
  }

  // At the sender's broker: X (metadata.refers_to) must be a document this
  // sender sent to every recipient of `doc`, whose copy is not final.
  absl::Status CheckRefersTo(const v1::Document& doc) {
    if (!IsChangeRequest(doc)) return absl::OkStatus();
    const std::string& x = doc.metadata().refers_to();
    absl::StatusOr<v1::Document> original = store_->GetDocument(x);
    if (absl::IsNotFound(original.status()) ||
        (original.ok() && original->sender() != doc.sender())) {
      return absl::NotFoundError(
          absl::StrCat("document.metadata.refers_to: document ", x,
                       " not found among documents sent by ", doc.sender()));
    }
    if (!original.ok()) return original.status();
    ASSIGN_OR_RETURN(std::vector<v1::StatusEvent> events,
                     store_->ListDocumentEvents(x, 0));
    absl::flat_hash_map<std::string, v1::DeliveryState> state;
    for (const v1::StatusEvent& e : events) {
      if (e.delivery_state() == v1::DELIVERY_STATE_UNSPECIFIED) continue;
      v1::DeliveryState& s = state[e.recipient()];
      if (StateRank(e.delivery_state()) >= StateRank(s)) s = e.delivery_state();
    }
    for (int i = 0; i < doc.recipients_size(); ++i) {
      const std::string& r = doc.recipients(i);
      if (std::find(original->recipients().begin(),
                    original->recipients().end(),
                    r) == original->recipients().end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "document.recipients[", i, "]: ", r, " is not a recipient of ",
            "document ", x, " (metadata.refers_to)"));
      }
      auto it = state.find(r);
      if (it != state.end() && StateRank(it->second) == 4) {
        return absl::FailedPreconditionError(absl::StrCat(
            "document.recipients[", i, "]: the copy of document ", x, " for ",
            r, " is already ", v1::DeliveryState_Name(it->second),
            "; there is nothing to recall, update or replace"));
      }
    }
    return absl::OkStatus();
  }

  // Adds to `batch` what change request `doc` does: status 13 on the copy
  // of X for each of `recipients`, and a pending request for each of them
  // this broker serves.
  void AddChangeRequest(const v1::Document& doc,
                        const std::vector<std::string>& recipients,
                        storage::WriteBatch* batch) {
    if (!IsChangeRequest(doc)) return;
    const std::string& x = doc.metadata().refers_to();
    const v1::BusinessType type = doc.metadata().business_type();
    for (const std::string& r : recipients) {
      v1::StatusEvent e;
      e.set_document_id(x);
      e.set_recipient(r);
      *e.mutable_at() = ToProto(clock_->Now());
      e.set_business_status(v1::BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED);
      e.set_reason(absl::StrCat(BusinessTypeWord(type),
                                " requested by the sender with document ",
                                doc.id()));
      e.set_actor(SpiffeId(trust_domain_, Principal::Kind::kOrg, doc.sender()));
      e.set_sender(doc.sender());
      e.set_related_document_id(doc.id());
      e.set_related_business_type(type);
      batch->events.push_back(std::move(e));
      if (local_orgs_.contains(r)) {
        RecallState st;
        st.request_id = doc.id();
        st.sender = doc.sender();
        st.type = type;
        batch->records.push_back(
            storage::Record{RecallKey(x, r), EncodeRecall(st)});
      }
    }
  }

  static absl::string_view BusinessTypeWord(v1::BusinessType type) {
    switch (type) {
      case v1::BUSINESS_TYPE_RECALL:
        return "recall";
      case v1::BUSINESS_TYPE_UPDATE:
        return "update";
      case v1::BUSINESS_TYPE_REPLACE:
        return "replacement";
      default:
        return "new document";
    }
  }

  v1::StatusEvent RecalledEvent(const std::string& document_id,
                                const std::string& recipient,
                                const std::string& sender,
                                const RecallState& st, std::string actor,
                                std::string reason) {
    v1::StatusEvent e;
    e.set_document_id(document_id);
    e.set_recipient(recipient);
    *e.mutable_at() = ToProto(clock_->Now());
    e.set_delivery_state(v1::DELIVERY_STATE_RECALLED);
    e.set_reason(std::move(reason));
    e.set_actor(std::move(actor));
    e.set_sender(sender);
    e.set_related_document_id(st.request_id);
    e.set_related_business_type(st.type);
    return e;
  }

  // Once `doc` is durable here with copies for `local` recipients: a change
  // request's pending requests take effect, and a RECALL withdraws the
  // copies of X that wait here and were never handed out; a document a
  // RECALL overtook is withdrawn.
  void ChangeRequestStored(const v1::Document& doc,
                           const std::vector<std::string>& local) {
    if (!IsChangeRequest(doc)) {
      // A document whose recall overtook it on the way is withdrawn as it
      // arrives.
      std::vector<std::pair<RecallState, std::string>> recalled;
      {
        absl::MutexLock lock(&recall_mu_);
        for (const std::string& r : local) {
          auto it = recalls_.find({doc.id(), r});
          if (it != recalls_.end() &&
              it->second.type == v1::BUSINESS_TYPE_RECALL &&
              it->second.answer != kRefused &&
              it->second.sender == doc.sender()) {
            recalled.push_back({it->second, r});
          }
        }
      }
      for (auto& [st, r] : recalled) {
        workers_->Submit([this, x = doc.id(), st = st, r = r] {
          WithdrawWaiting(x, st, {r});
        });
      }
      return;
    }
    const std::string& x = doc.metadata().refers_to();
    RecallState st;
    st.request_id = doc.id();
    st.sender = doc.sender();
    st.type = doc.metadata().business_type();
    {
      absl::MutexLock lock(&recall_mu_);
      for (const std::string& r : local) recalls_[{x, r}] = st;
    }
    if (st.type != v1::BUSINESS_TYPE_RECALL || local.empty()) return;
    // Runs on the store's thread: the withdrawal writes from a worker.
    workers_->Submit([this, x, st, local] { WithdrawWaiting(x, st, local); });
  }

  // Withdraws the copies of `x` for `local` recipients that wait here and
  // were never handed out (or were given back), RECALLED by request `st`.
  void WithdrawWaiting(const std::string& x, const RecallState& st,
                       const std::vector<std::string>& local) {
    std::vector<std::pair<storage::QueueEntry, v1::StatusEvent>> withdrawn;
    {
      absl::MutexLock lock(&mu_);
      for (const std::string& r : local) {
        auto qit = queues_.find(r);
        if (qit == queues_.end()) continue;
        OrgQueue& q = qit->second;
        auto k = q.by_doc.find(x);
        if (k == q.by_doc.end()) continue;
        Entry& e = q.entries.at(k->second);
        if (e.qe.sender != st.sender) continue;
        if (e.state != Entry::State::kReady) continue;  // in flight: answered
        q.ready.erase(k->second);
        e.state = Entry::State::kAcking;
        withdrawn.push_back(
            {e.qe, RecalledEvent(x, r, e.qe.sender, st, options_.broker_id,
                                 WithdrawnReason(st))});
      }
    }
    for (auto& [qe, event] : withdrawn) {
      std::string org = qe.recipient;
      CommitRemoval(org, {qe}, {std::move(event)}, /*delivered=*/false,
                    nullptr);
    }
  }

  static std::string WithdrawnReason(const RecallState& st) {
    return absl::StrCat(
        "withdrawn before delivery: recalled by its sender with document ",
        st.request_id);
  }

  // At hand-out: a copy with a RECALL pending (or agreed) is withdrawn, not
  // delivered.
  std::optional<v1::StatusEvent> RecallAtHandout(
      const storage::QueueEntry& qe) {
    RecallState st;
    {
      absl::MutexLock lock(&recall_mu_);
      auto it = recalls_.find({qe.document_id, qe.recipient});
      if (it == recalls_.end() || it->second.type != v1::BUSINESS_TYPE_RECALL ||
          it->second.answer == kRefused || it->second.sender != qe.sender) {
        return std::nullopt;
      }
      st = it->second;
    }
    return RecalledEvent(qe.document_id, qe.recipient, qe.sender, st,
                         options_.broker_id, WithdrawnReason(st));
  }

  // The recipient's answer (15 AGREED or 16 REFUSED, `event` built by
  // BuildStatusEvent) to the change request pending for its copy of X.
  void AnswerChangeRequest(const Principal& caller, v1::StatusEvent event,
                           const std::string& previous,
                           Callback<v1::ReportStatusResponse> done) {
    const std::string x = event.document_id();
    const std::string status_name =
        v1::BusinessStatus_Name(event.business_status());
    RecallState st;
    {
      absl::MutexLock lock(&recall_mu_);
      auto it = recalls_.find({x, caller.name});
      if (it == recalls_.end()) {
        return done(absl::FailedPreconditionError(
            absl::StrCat("status: ", status_name,
                         " answers a recall, update or replace "
                         "request (13), and none is pending for document ",
                         x, " at ", caller.name)));
      }
      if (it->second.answer != kPending || it->second.answering) {
        return done(absl::FailedPreconditionError(
            absl::StrCat("status: the ", BusinessTypeWord(it->second.type),
                         " request ", it->second.request_id, " for document ",
                         x, " was already answered by ", caller.name)));
      }
      it->second.answering = true;
      st = it->second;
    }
    auto clear_answering = [this, x, org = caller.name] {
      absl::MutexLock lock(&recall_mu_);
      if (auto it = recalls_.find({x, org}); it != recalls_.end())
        it->second.answering = false;
    };
    const bool agreed = event.business_status() == v1::BUSINESS_STATUS_AGREED;
    const bool recall = st.type == v1::BUSINESS_TYPE_RECALL;
    if (recall) {
      // Withdrawn before delivery already: nothing is left to answer.
      absl::StatusOr<std::vector<v1::StatusEvent>> events =
          store_->ListDocumentEvents(x, 0);
      if (!events.ok()) {
        clear_answering();
        return done(events.status());
      }
      for (const v1::StatusEvent& e : *events) {
        if (e.recipient() == caller.name &&
            e.delivery_state() == v1::DELIVERY_STATE_RECALLED) {
          clear_answering();
          return done(absl::FailedPreconditionError(absl::StrCat(
              "status: document ", x, " was withdrawn from ", caller.name,
              "'s queue before it was delivered (RECALLED: ", e.reason(),
              "); there is nothing to agree or refuse")));
        }
      }
    }
    event.set_related_document_id(st.request_id);
    event.set_related_business_type(st.type);
    if (agreed && !recall) {
      event.set_reason(absl::StrCat(
          event.reason(), event.reason().empty() ? "" : "; ", "superseded by ",
          st.type == v1::BUSINESS_TYPE_UPDATE ? "the update "
                                              : "the "
                                                "replacement ",
          st.request_id));
    }
    storage::WriteBatch batch;
    RecallState answered = st;
    answered.answer = agreed ? kAgreed : kRefused;
    batch.records.push_back(
        storage::Record{RecallKey(x, caller.name), EncodeRecall(answered)});
    batch.events.push_back(event);
    // An agreed recall: the copy is RECALLED, and out of the queue if it
    // still waits there (also handed out and not acknowledged).
    std::optional<storage::QueueEntry> taken;
    std::optional<Entry::State> taken_from;
    if (agreed && recall) {
      batch.events.push_back(RecalledEvent(
          x, caller.name, event.sender(), st, caller.spiffe_id,
          absl::StrCat(caller.name, " agreed to the recall ", st.request_id)));
      absl::MutexLock lock(&mu_);
      OrgQueue& q = queues_[caller.name];
      if (auto k = q.by_doc.find(x); k != q.by_doc.end()) {
        Entry& e = q.entries.at(k->second);
        if (e.state != Entry::State::kAcking) {
          TakeOutOfCirculationLocked(q, k->second, e);
          taken = e.qe;
          batch.dequeue.push_back(e.qe);
        }
      }
    }
    if (!previous.empty()) {
      for (const v1::StatusEvent& e : batch.events)
        AppendReturn(&batch, previous, e);
    }
    StoreWrite(
        std::move(batch),
        [this, x, org = caller.name, answered, taken, done = std::move(done)](
            absl::StatusOr<storage::WriteResult> r) mutable {
          {
            absl::MutexLock lock(&recall_mu_);
            if (auto it = recalls_.find({x, org}); it != recalls_.end()) {
              it->second.answering = false;
              if (r.ok() && it->second.request_id == answered.request_id)
                it->second.answer = answered.answer;
            }
          }
          if (taken) {
            absl::MutexLock lock(&mu_);
            OrgQueue& q = queues_[org];
            Key key{taken->priority, taken->sequence};
            if (r.ok()) {
              EraseEntryLocked(q, key);
            } else if (auto it = q.entries.find(key); it != q.entries.end()) {
              it->second.state = Entry::State::kReady;
              it->second.owner = 0;
              q.ready.insert(key);
              WakeLocked(org);
            }
          }
          if (!r.ok()) return done(r.status());
          Publish(r->events);
          v1::ReportStatusResponse response;
          *response.mutable_event() = r->events.front();
          done(std::move(response));
        });
  }

  // Takes a ready or leased copy out of circulation (kAcking) before it is
  // removed: its lease, if any, ends and its holder's window opens.
  void TakeOutOfCirculationLocked(OrgQueue& q, const Key& key, Entry& e)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (e.state == Entry::State::kLeased) {
      --leased_;
      if (auto sit = sessions_.find(e.owner); sit != sessions_.end()) {
        if (auto s = sit->second.lock()) {
          s->held_.erase(key);
          --s->in_flight_;
        }
      }
      q.fetch_leases.erase(key);
      WakeLocked(e.qe.recipient);
    } else {
      q.ready.erase(key);
    }
    e.state = Entry::State::kAcking;
    e.owner = 0;
  }

  // ---- Paper conversion
  // ------------------------------------------------------------

  void RecordPaperConversion(
      const Principal& caller, const v1::RecordPaperConversionRequest& request,
      Callback<v1::RecordPaperConversionResponse> done) override {
    workers_->Submit([this, caller, request, done = std::move(done)]() mutable {
      std::string previous;
      absl::StatusOr<v1::StatusEvent> event =
          BuildPaperConversion(caller, request, &previous);
      if (!event.ok()) return done(event.status());
      const v1::PaperConversion& c = event->paper_conversion();
      storage::WriteBatch batch;
      batch.records.push_back(storage::Record{
          absl::StrCat(
              kPaperRecord, c.org(), "/",
              absl::StrFormat(
                  "%020d",
                  google::protobuf::util::TimeUtil::TimestampToNanoseconds(
                      c.at())),
              "/", c.document_id()),
          c.SerializeAsString()});
      if (!previous.empty()) AppendReturn(&batch, previous, *event);
      batch.events.push_back(*std::move(event));
      StoreWrite(std::move(batch),
                 [this, done = std::move(done)](
                     absl::StatusOr<storage::WriteResult> r) mutable {
                   if (!r.ok()) return done(r.status());
                   Publish(r->events);
                   v1::RecordPaperConversionResponse response;
                   *response.mutable_conversion() =
                       r->events.front().paper_conversion();
                   *response.mutable_event() = r->events.front();
                   done(std::move(response));
                 });
    });
  }

  // The paper conversion event, after every check; `previous`: the broker
  // the document came from, where the event goes back to.
  absl::StatusOr<v1::StatusEvent> BuildPaperConversion(
      const Principal& caller, const v1::RecordPaperConversionRequest& request,
      std::string* previous) {
    RETURN_IF_ERROR(RequireOrg(caller));
    RETURN_IF_ERROR(CheckDocumentId("document_id", request.document_id()));
    if (absl::StripAsciiWhitespace(request.reason()).empty()) {
      return absl::InvalidArgumentError(
          "reason: required: say why the document has to be on paper");
    }
    if (request.reason().size() > 4096) {
      return absl::InvalidArgumentError("reason: longer than 4096 bytes");
    }
    if (request.converted_by().size() > 256) {
      return absl::InvalidArgumentError("converted_by: longer than 256 bytes");
    }
    const std::string& id = request.document_id();
    ASSIGN_OR_RETURN(v1::Document doc,
                     LoadVisible(caller, id, /*allow_sender=*/true));
    const bool is_sender = doc.sender() == caller.name;
    ASSIGN_OR_RETURN(std::vector<v1::StatusEvent> events,
                     store_->ListDocumentEvents(id, 0));
    if (!is_sender) {
      // A recipient whose copy the policy denied never had the document.
      for (const v1::StatusEvent& e : events) {
        if (e.recipient() == caller.name &&
            e.delivery_state() == v1::DELIVERY_STATE_DENIED) {
          return absl::NotFoundError(
              absl::StrCat("document ", id,
                           " not found among documents sent by or addressed "
                           "to ",
                           caller.name));
        }
      }
    }
    auto forbidden = [&](const v1::PolicyDecision& p, absl::string_view to) {
      return absl::PermissionDeniedError(absl::StrCat(
          "document ", id, ": converting it to paper is forbidden by policy ",
          p.policy_version(), " rule", p.rules_size() == 1 ? " \"" : "s \"",
          absl::StrJoin(p.rules(), "\", \""),
          "\" (obligation paper_conversion_forbidden, flow ", doc.sender(),
          " -> ", to, ")"));
    };
    // As decided when the document was accepted (at its first broker)...
    for (const v1::StatusEvent& e : events) {
      if ((is_sender || e.recipient() == caller.name) && e.has_policy() &&
          e.delivery_state() != v1::DELIVERY_STATE_DENIED &&
          e.policy().obligations().paper_conversion_forbidden()) {
        return forbidden(e.policy(), e.recipient());
      }
    }
    // ... and as the serving policy decides the flow now.
    std::shared_ptr<const policy::Policy> policy = policy_->Current();
    absl::StatusOr<policy::Flow> flow = FlowOf(doc);
    if (policy && flow.ok()) {
      for (const std::string& r : doc.recipients()) {
        if (!is_sender && r != caller.name) continue;
        policy::Flow f = *flow;
        f.recipient = r;
        f.cross_broker =
            !local_orgs_.contains(doc.sender()) || !local_orgs_.contains(r);
        policy::Decision decision = policy->Evaluate(f);
        if (decision.permitted() &&
            decision.obligations.paper_conversion_forbidden) {
          v1::PolicyDecision wire;
          policy::ToProto(decision, *policy, options_.broker_id, &wire);
          return forbidden(wire, r);
        }
      }
    }
    absl::Time now = clock_->Now();
    v1::StatusEvent e;
    e.set_document_id(id);
    e.set_recipient(caller.name);
    *e.mutable_at() = ToProto(now);
    e.set_reason(request.reason());
    e.set_actor(caller.spiffe_id);
    e.set_sender(doc.sender());
    v1::PaperConversion* c = e.mutable_paper_conversion();
    c->set_document_id(id);
    c->set_org(caller.name);
    c->set_actor(caller.spiffe_id);
    c->set_converted_by(request.converted_by());
    c->set_reason(request.reason());
    *c->mutable_at() = e.at();
    c->set_broker(options_.broker_id);
    if (is_sender) {
      previous->clear();
    } else {
      ASSIGN_OR_RETURN(*previous, PreviousBrokerOf(doc, caller.name));
    }
    return e;
  }

  void ListPaperConversions(
      const Principal& caller, const v1::ListPaperConversionsRequest& request,
      Callback<v1::ListPaperConversionsResponse> done) override {
    workers_->Submit([this, caller, request, done = std::move(done)]() mutable {
      if (absl::Status s = RequireOrg(caller); !s.ok()) return done(s);
      absl::StatusOr<std::vector<v1::PaperConversion>> got =
          PaperConversions(caller.name, request.limit());
      if (!got.ok()) return done(got.status());
      v1::ListPaperConversionsResponse response;
      for (v1::PaperConversion& c : *got)
        *response.add_conversions() = std::move(c);
      done(std::move(response));
    });
  }

  absl::StatusOr<std::vector<v1::PaperConversion>> PaperConversions(
      const std::string& org, uint32_t limit) override {
    RETURN_IF_ERROR(ValidateOrgCode(org, "org"));
    if (limit > 1000) return absl::InvalidArgumentError("limit: at most 1000");
    if (limit == 0) limit = 100;
    std::vector<v1::PaperConversion> all;
    absl::Status bad;
    RETURN_IF_ERROR(store_->ScanRecords(
        absl::StrCat(kPaperRecord, org, "/"), [&](const storage::Record& r) {
          v1::PaperConversion c;
          if (!c.ParseFromString(r.value)) {
            bad = absl::DataLossError(absl::StrCat(
                "paper conversion record ", r.key, " is malformed in storage"));
            return;
          }
          all.push_back(std::move(c));
        }));
    RETURN_IF_ERROR(bad);
    std::reverse(all.begin(), all.end());  // newest first
    if (all.size() > limit) all.resize(limit);
    return all;
  }

  const ExchangeMetrics& metrics() const override { return metrics_; }

 private:
  const ExchangeOptions options_;
  const std::string trust_domain_;  // of options_.broker_id
  const std::string broker_name_;   // of options_.broker_id
  storage::Store* const store_;
  policy::ServedPolicy* const policy_;
  Clock* const clock_;
  const absl::flat_hash_set<std::string> local_orgs_;
  Router router_;
  std::atomic<uint64_t> next_owner_{kFetchOwner + 1};

  ExchangeMetrics metrics_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::unordered_map<std::string, OrgQueue> queues_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, std::weak_ptr<SessionImpl>> sessions_
      ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, LinkQueue> link_queues_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, std::weak_ptr<LinkSessionImpl>> link_sessions_
      ABSL_GUARDED_BY(mu_);
  size_t cached_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t leased_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;
  // Ids of documents a transfer is being checked and stored for: another
  // transfer of the same id waits (UNAVAILABLE) until that one is stored,
  // so two links cannot both pass the check for a new id and the second
  // replace the first.
  absl::flat_hash_set<std::string> accepting_ ABSL_GUARDED_BY(mu_);
  uint64_t delivered_ ABSL_GUARDED_BY(mu_) = 0;

  std::atomic<uint64_t> directory_generation_{0};
  // Encryption certificates (DER) published by this broker's own orgs.
  absl::Mutex certificates_mu_;
  absl::flat_hash_map<std::string, std::string> certificates_
      ABSL_GUARDED_BY(certificates_mu_);

  absl::Mutex watch_mu_;
  std::unordered_map<std::string,
                     std::map<uint64_t, std::shared_ptr<WatcherImpl>>>
      watchers_ ABSL_GUARDED_BY(watch_mu_);

  // Change requests for copies this broker serves, by (document, recipient):
  // the kRecallRecord records, loaded at start.
  absl::Mutex recall_mu_;
  absl::flat_hash_map<std::pair<std::string, std::string>, RecallState> recalls_
      ABSL_GUARDED_BY(recall_mu_);
  // Documents held for approval, by id (ids sort by acceptance time).
  struct Held {
    v1::PendingApproval record;
    absl::Time expires;
    bool busy = false;  // a decision or an expiry is being stored
  };
  absl::Mutex approvals_mu_;
  std::map<std::string, Held> held_ ABSL_GUARDED_BY(approvals_mu_);
  // AutomatedContentKey of content sent by a system or an AI and held: the
  // same content sent again is held too, whatever origin it claims.
  absl::flat_hash_set<std::string> automated_content_
      ABSL_GUARDED_BY(approvals_mu_);
  // automated_content_ is not empty (read without the lock on every send).
  std::atomic<bool> any_automated_content_{false};

  absl::Mutex writes_mu_;
  int pending_writes_ ABSL_GUARDED_BY(writes_mu_) = 0;
  // Reset first in the destructor, so no task outlives the state above.
  std::unique_ptr<Timer> timer_;
  std::unique_ptr<WorkerPool> workers_;
};

void SessionImpl::Ack(std::vector<std::string> ids,
                      std::vector<std::string> nack_ids) {
  ex_->SessionAck(this, std::move(ids), std::move(nack_ids));
}

void SessionImpl::Close() {
  sink_.Close();
  ex_->SessionClose(this);
}

void LinkSessionImpl::Custody(std::vector<v1::Custody> custody) {
  ex_->LinkCustody(this, std::move(custody));
}

void LinkSessionImpl::EventsStored(std::vector<uint64_t> ids) {
  ex_->LinkEventsStored(this, std::move(ids));
}

void LinkSessionImpl::Close() { ex_->LinkClose(this); }

void WatcherImpl::Close() {
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    sink_ = nullptr;
  }
  ex_->Unwatch(this);
}

}  // namespace

absl::Status ExchangeOptions::Validate() const {
  absl::StatusOr<Principal> broker = ParseSpiffeId(broker_id);
  if (!broker.ok() || broker->kind != Principal::Kind::kBroker) {
    return absl::InvalidArgumentError(absl::StrCat(
        "exchange.broker_id: \"", broker_id, "\" is not a broker SPIFFE id"));
  }
  for (size_t i = 0; i < local_orgs.size(); ++i) {
    RETURN_IF_ERROR(
        ValidateOrgCode(local_orgs[i], absl::StrCat("orgs[", i, "].code")));
  }
  absl::flat_hash_set<std::string> peer_names;
  int defaults = 0;
  for (size_t i = 0; i < peers.size(); ++i) {
    std::string where = absl::StrCat("peers[", i, "]");
    RETURN_IF_ERROR(peers[i].Validate(where));
    if (!peer_names.insert(peers[i].name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".name: ", peers[i].name, " is listed twice"));
    }
    if (peers[i].name == broker->name) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".name: ", peers[i].name, " is this broker itself"));
    }
    if (peers[i].is_default && ++defaults > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".default: only one peer can be the default"));
    }
  }
  if (max_hops < 1 || max_hops > 64)
    return absl::InvalidArgumentError("federation.max_hops: 1..64");
  if (max_document_bytes < 1024) {
    return absl::InvalidArgumentError(
        "limits.max_document_bytes: at least 1024");
  }
  if (max_recipients == 0)
    return absl::InvalidArgumentError("limits.max_recipients: at least 1");
  if (default_max_in_flight == 0 || default_max_in_flight > 10000) {
    return absl::InvalidArgumentError("limits.default_max_in_flight: 1..10000");
  }
  if (worker_threads < 1 || worker_threads > 256) {
    return absl::InvalidArgumentError("worker_threads: 1..256");
  }
  for (size_t i = 0; i < approvers.size(); ++i) {
    const ApproverGrant& g = approvers[i];
    std::string where = absl::StrCat("approvals.approvers[", i, "]");
    absl::StatusOr<Principal> person = ParseSpiffeId(g.person);
    if (!person.ok() || person->kind != Principal::Kind::kPerson) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".person: \"", g.person, "\" is not a person SPIFFE id"));
    }
    if (g.role.empty() || g.role.size() > 128)
      return absl::InvalidArgumentError(absl::StrCat(where, ".role: 1..128"));
    if (g.orgs.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".orgs: at least one organization"));
    }
    for (size_t j = 0; j < g.orgs.size(); ++j) {
      RETURN_IF_ERROR(
          ValidateOrgCode(g.orgs[j], absl::StrCat(where, ".orgs[", j, "]")));
    }
  }
  if (approval_expiry < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "approvals.expire_hours: must be positive");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Exchange>> Exchange::Open(
    const ExchangeOptions& options, storage::Store* store, Clock* clock) {
  RETURN_IF_ERROR(options.Validate());
  if (options.policy == nullptr) {
    return absl::InvalidArgumentError(
        "exchange.policy: required; without a policy no flow is permitted");
  }
  auto ex = std::make_unique<ExchangeImpl>(options, store, clock);
  RETURN_IF_ERROR(ex->Load());
  return std::unique_ptr<Exchange>(std::move(ex));
}

}  // namespace lienthong::broker
