// One store over any KvEngine, with group commit in two pipelined stages:
//  - the committer thread merges every write waiting at the moment into one
//    engine commit (assigning sequences, checking idempotency keys) and
//    hands the group to the syncer;
//  - the syncer thread makes everything committed so far durable with one
//    WAL sync, then runs the callbacks in commit order.
// While the syncer waits on the disk, the committer prepares the next group.
// Nothing is acknowledged before its sync.
#include <algorithm>
#include <atomic>
#include <deque>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "lienthong/audit/chain.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/common/thread_name.h"
#include "storage/src/data_keys.h"
#include "storage/src/keys.h"
#include "storage/src/kv_engine.h"

namespace lienthong::storage {

absl::StatusOr<std::optional<AuditHead>> ParseAuditHead(
    const std::optional<std::string>& raw);

namespace {

// A sender_events value that refers to the event stored under its document
// (a zero byte, then the document id). A serialized event never starts with
// a zero byte, so data written before the index held references still reads.
constexpr absl::string_view kEventRef("\0", 1);

// What a sealed status event or audit entry is bound to (AEAD associated
// data; also how an error names it): an event to its document, an audit
// entry to the log (its place in the chain is bound by the chain's hash).
std::string EventContext(absl::string_view document_id) {
  return absl::StrCat("status event of document ", document_id);
}
constexpr absl::string_view kAuditContext = "audit entry";
// A queue entry's payload (an event going back to a peer, where a copy came
// from and goes) to its document.
std::string QueuePayloadContext(absl::string_view document_id) {
  return absl::StrCat("queue payload of document ", document_id);
}

class StoreImpl : public Store {
 public:
  StoreImpl(std::unique_ptr<KvEngine> engine, std::unique_ptr<DataKeys> keys,
            uint64_t last_sequence, AuditHead audit_head, size_t max_group_size,
            size_t max_group_bytes)
      : engine_(std::move(engine)),
        keys_(std::move(keys)),
        last_sequence_(last_sequence),
        audit_head_(audit_head),
        published_audit_head_(std::move(audit_head)),
        max_group_size_(max_group_size),
        max_group_bytes_(max_group_bytes) {
    committer_ = std::thread([this] {
      NameThisThread("lt-store-commit");
      CommitLoop();
    });
    syncer_ = std::thread([this] {
      NameThisThread("lt-store-sync");
      SyncLoop();
    });
  }

  ~StoreImpl() override {
    {
      absl::MutexLock lock(&mu_);
      closing_ = true;
    }
    committer_.join();  // commits what was queued before closing
    {
      absl::MutexLock lock(&sync_mu_);
      sync_closing_ = true;
    }
    syncer_.join();  // syncs and answers what was committed
  }

  void Write(WriteBatch batch, WriteCallback done) override {
    std::optional<Pending> p = Prepare(std::move(batch), std::move(done));
    if (p) Queue(absl::MakeSpan(&*p, 1));
  }

  void WriteAll(
      std::vector<std::pair<WriteBatch, WriteCallback>> writes) override {
    std::vector<Pending> prepared;
    prepared.reserve(writes.size());
    for (auto& [batch, done] : writes) {
      std::optional<Pending> p = Prepare(std::move(batch), std::move(done));
      if (p) prepared.push_back(*std::move(p));
    }
    Queue(absl::MakeSpan(prepared));
  }

 private:
  struct Pending;

  // Hands prepared writes to the committer, in order, under one lock (or
  // answers them when the store is closing).
  void Queue(absl::Span<Pending> prepared) {
    {
      absl::MutexLock lock(&mu_);
      if (!closing_) {
        for (Pending& p : prepared) queue_.push_back(std::move(p));
        return;
      }
    }
    for (Pending& p : prepared)
      p.done(absl::UnavailableError("storage: store is closing"));
  }

  // Serializes here, on the caller's thread: the committer only adds keys
  // that carry sequences, checks idempotency keys and syncs. Nullopt when
  // `done` was answered already (a value could not be sealed).
  std::optional<Pending> Prepare(WriteBatch batch, WriteCallback done) {
    // `plain` as stored (sealed at rest when encryption is on), bound to
    // `context`; false once `done` has the error.
    auto seal = [&](absl::string_view plain, absl::string_view context,
                    std::string* out) {
      absl::StatusOr<std::string> sealed = keys_->Seal(plain, context);
      if (!sealed.ok()) {
        done(sealed.status());
        return false;
      }
      *out = *std::move(sealed);
      return true;
    };
    Pending p;
    p.sync = batch.sync;
    p.sync_within =
        std::clamp(batch.sync_within, absl::ZeroDuration(), absl::Seconds(1));
    if (batch.document) {
      const v1::Document& doc = *batch.document;
      p.document_id = doc.id();
      if (!seal(doc.SerializeAsString(), doc.id(), &p.document_value))
        return std::nullopt;
      if (!doc.idempotency_key().empty()) {
        p.idempotency_key =
            keys::Idempotency(doc.sender(), doc.idempotency_key());
        p.guard_value = doc.id();
      }
      p.has_document = true;
      p.bytes += p.document_value.size();
    }
    if (batch.guard) {
      // The document's own (sender, key) is then claimed besides the guard.
      p.claim_key = std::move(p.idempotency_key);
      p.idempotency_key = std::move(batch.guard->key);
      p.guard_value = std::move(batch.guard->value);
    }
    p.enqueue = std::move(batch.enqueue);
    for (Enqueue& q : p.enqueue) {
      std::string payload;
      if (!q.payload.empty() &&
          !seal(q.payload, QueuePayloadContext(q.document_id), &payload))
        return std::nullopt;
      p.queue_values.push_back(
          keys::QueueValue(q.document_id, q.sender, payload));
    }
    for (const QueueEntry& e : batch.dequeue) {
      p.dequeue_keys.push_back(
          keys::Queue(e.recipient, e.priority, e.sequence));
    }
    for (Record& r : batch.records) {
      // Records carry what a document's metadata does (a copy held for
      // approval, an incident's paper register): sealed at rest, bound to
      // their key. The data keys' own records are wrapped by the master key.
      const bool sealed = !r.value.empty() && !DataKeys::IsOwnRecord(r.key);
      r.key = absl::StrCat(keys::kRecordPrefix, r.key);
      if (sealed && !seal(r.value, r.key, &r.value)) return std::nullopt;
      p.bytes += r.key.size() + r.value.size();
    }
    p.records = std::move(batch.records);
    p.events = std::move(batch.events);
    // Status events and audit entries carry free text (a rejection's
    // reason, an approval's comment): sealed at rest like documents.
    for (v1::StatusEvent& e : p.events) {
      e.clear_sequence();  // the sequence lives in the key
      if (!seal(e.SerializeAsString(), EventContext(e.document_id()),
                &p.event_values.emplace_back()))
        return std::nullopt;
      p.bytes += p.event_values.back().size() + e.document_id().size();
    }
    for (const v1::AuditEntry& a : batch.audit) {
      // The chain hashes the entry itself; the store keeps it sealed.
      p.audit_values.push_back(a.SerializeAsString());
      if (!seal(p.audit_values.back(), kAuditContext,
                &p.audit_sealed.emplace_back()))
        return std::nullopt;
      p.audit_documents.push_back(a.document_id());
      p.bytes += p.audit_sealed.back().size() + 64 + a.document_id().size();
    }
    if (batch.audit_checkpoint) {
      p.checkpoint_size = batch.audit_checkpoint->tree_size();
      p.checkpoint_value = batch.audit_checkpoint->SerializeAsString();
      p.bytes += p.checkpoint_value.size();
    }
    p.done = std::move(done);
    return p;
  }

 public:
  absl::StatusOr<v1::Document> GetDocument(
      const std::string& document_id) override {
    ASSIGN_OR_RETURN(std::optional<std::string> raw,
                     engine_->Get(Cf::kDocuments, document_id));
    if (!raw)
      return absl::NotFoundError(
          absl::StrCat("document ", document_id, " not found"));
    ASSIGN_OR_RETURN(std::string value,
                     keys_->Open(*std::move(raw), document_id));
    v1::Document doc;
    if (!doc.ParseFromString(value)) {
      return absl::DataLossError(
          absl::StrCat("storage: document ", document_id, " is corrupt"));
    }
    return doc;
  }

  absl::StatusOr<std::optional<std::string>> LookupIdempotencyKey(
      const std::string& sender, const std::string& key) override {
    return engine_->Get(Cf::kIdempotency, keys::Idempotency(sender, key));
  }

  absl::StatusOr<std::vector<v1::StatusEvent>> ListDocumentEvents(
      const std::string& document_id, uint64_t after_sequence) override {
    return ListEvents(Cf::kEvents, document_id, after_sequence, SIZE_MAX);
  }

  absl::StatusOr<std::vector<v1::StatusEvent>> ListSenderEvents(
      const std::string& sender, uint64_t after_sequence,
      size_t limit) override {
    return ListEvents(Cf::kSenderEvents, sender, after_sequence, limit);
  }

  absl::Status ScanRecords(
      absl::string_view prefix,
      const std::function<void(const Record&)>& fn) override {
    const std::string full = absl::StrCat(keys::kRecordPrefix, prefix);
    absl::Status bad;
    RETURN_IF_ERROR(engine_->Scan(
        Cf::kMeta, full, full, [&](absl::string_view k, absl::string_view v) {
          absl::StatusOr<std::string> value = keys_->Open(std::string(v), k);
          if (!value.ok()) {
            bad = value.status();
            return false;
          }
          fn(Record{std::string(k.substr(keys::kRecordPrefix.size())),
                    *std::move(value)});
          return true;
        }));
    return bad;
  }

  absl::StatusOr<std::optional<std::string>> GetRecord(
      absl::string_view key) override {
    const std::string full = absl::StrCat(keys::kRecordPrefix, key);
    ASSIGN_OR_RETURN(std::optional<std::string> raw,
                     engine_->Get(Cf::kMeta, full));
    if (!raw) return raw;
    return keys_->Open(*std::move(raw), full);
  }

  absl::Status RotateKeys(const EncryptionOptions& options) override {
    // One rotation at a time; the store keeps serving meanwhile.
    absl::MutexLock rotating(&rotate_mu_);
    ASSIGN_OR_RETURN(DataKeys::Rotation rotation,
                     keys_->PrepareRotation(options));
    WriteBatch batch;
    batch.records = rotation.records;
    RETURN_IF_ERROR(WriteSync(std::move(batch)).status());
    keys_->Install(std::move(rotation));
    return absl::OkStatus();
  }

  EncryptionInfo Encryption() override { return keys_->Info(); }

  absl::StatusOr<std::optional<std::string>> SealBeside(
      absl::string_view plaintext, absl::string_view context) override {
    if (!keys_->enabled()) return std::nullopt;
    return keys_->Seal(plaintext, context);
  }

  absl::StatusOr<std::string> OpenBeside(std::string sealed,
                                         absl::string_view context) override {
    if (!DataKeys::IsSealed(sealed)) {
      return absl::DataLossError(absl::StrCat(
          "storage: ", context, " should be encrypted at rest and is not"));
    }
    return keys_->Open(std::move(sealed), context);
  }

  absl::Status ScanQueues(
      const std::function<void(const QueueEntry&)>& fn) override {
    absl::Status bad;
    RETURN_IF_ERROR(engine_->Scan(
        Cf::kQueues, "", "", [&](absl::string_view k, absl::string_view v) {
          std::optional<QueueEntry> e = keys::ParseQueue(k, v);
          if (!e) {
            bad = absl::DataLossError("storage: malformed queue key");
            return false;
          }
          if (DataKeys::IsSealed(e->payload)) {
            absl::StatusOr<std::string> payload = keys_->Open(
                std::move(e->payload), QueuePayloadContext(e->document_id));
            if (!payload.ok()) {
              bad = payload.status();
              return false;
            }
            e->payload = *std::move(payload);
          }
          fn(*e);
          return true;
        }));
    return bad;
  }

 private:
  // A write, serialized by the caller.
  struct Pending {
    bool has_document = false;
    std::string document_id;
    std::string document_value;
    std::string idempotency_key;  // the guard's key; empty: none
    std::string guard_value;
    // With a guard of its own, the document's (sender, key), which must not
    // name another document; empty: none.
    std::string claim_key;
    std::vector<Enqueue> enqueue;
    std::vector<std::string> queue_values;
    std::vector<std::string> dequeue_keys;
    std::vector<v1::StatusEvent> events;
    std::vector<std::string> event_values;
    std::vector<Record> records;               // keys with keys::kRecordPrefix
    std::vector<std::string> audit_values;     // serialized AuditEntry
    std::vector<std::string> audit_sealed;     // as stored (sealed at rest)
    std::vector<std::string> audit_documents;  // their document ids
    std::optional<uint64_t> checkpoint_size;
    std::string checkpoint_value;  // serialized AuditCheckpoint
    bool sync = true;
    absl::Duration sync_within = absl::ZeroDuration();
    size_t bytes = 0;
    WriteCallback done;
  };

  absl::StatusOr<std::vector<v1::StatusEvent>> ListEvents(
      Cf cf, const std::string& prefix, uint64_t after, size_t limit) {
    std::vector<v1::StatusEvent> out;
    absl::Status bad;
    if (after == UINT64_MAX) return out;
    RETURN_IF_ERROR(engine_->Scan(
        cf, keys::Sequenced(prefix, after + 1), keys::SequencedPrefix(prefix),
        [&](absl::string_view k, absl::string_view v) {
          if (out.size() >= limit) return false;
          if (k.size() < 8) {
            bad = absl::DataLossError("storage: corrupt status event key");
            return false;
          }
          uint64_t sequence = keys::ReadBigEndian64(k.substr(k.size() - 8));
          // A sender's index holds the document id; the event itself is
          // stored once, under the document (older data holds the event).
          std::optional<std::string> stored;
          std::string document_id = cf == Cf::kEvents ? prefix : "";
          if (cf == Cf::kSenderEvents && absl::StartsWith(v, kEventRef)) {
            v.remove_prefix(kEventRef.size());
            document_id = std::string(v);
            absl::StatusOr<std::optional<std::string>> got = engine_->Get(
                Cf::kEvents, keys::Sequenced(std::string(v), sequence));
            if (!got.ok()) {
              bad = got.status();
              return false;
            }
            if (!*got) {
              bad = absl::DataLossError(absl::StrCat(
                  "storage: status event ", sequence, " of document ", v,
                  " is indexed for its sender but missing"));
              return false;
            }
            stored = std::move(*got);
            v = *stored;
          }
          std::string opened;  // a sealed event, opened
          if (DataKeys::IsSealed(v)) {
            absl::StatusOr<std::string> o =
                keys_->Open(std::string(v), EventContext(document_id));
            if (!o.ok()) {
              bad = o.status();
              return false;
            }
            opened = *std::move(o);
            v = opened;
          }
          v1::StatusEvent e;
          if (!e.ParseFromArray(v.data(), static_cast<int>(v.size()))) {
            bad = absl::DataLossError("storage: corrupt status event");
            return false;
          }
          e.set_sequence(sequence);
          out.push_back(std::move(e));
          return true;
        }));
    RETURN_IF_ERROR(bad);
    return out;
  }

  void CommitLoop() {
    for (;;) {
      std::vector<Pending> group;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](StoreImpl* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
              return !s->queue_.empty() || s->closing_;
            },
            this));
        if (queue_.empty()) return;  // closing and drained
        size_t bytes = 0;
        while (!queue_.empty() && group.size() < max_group_size_ &&
               (group.empty() ||
                bytes + queue_.front().bytes <= max_group_bytes_)) {
          bytes += queue_.front().bytes;
          group.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      CommitGroup(group);
    }
  }

  void CommitGroup(std::vector<Pending>& group) {
    std::vector<KvOp> ops;
    std::deque<std::string> scratch;  // keys made here; deque keeps views valid
    std::vector<absl::StatusOr<WriteResult>> results;
    results.reserve(group.size());
    // Idempotency keys claimed earlier in this group.
    absl::flat_hash_map<absl::string_view, absl::string_view> claimed;
    const uint64_t first_sequence = last_sequence_;
    const AuditHead first_audit_head = audit_head_;
    // What `key` names: claimed earlier in this group, or stored.
    auto holder_of = [&](absl::string_view key)
        -> absl::StatusOr<std::optional<std::string>> {
      if (auto it = claimed.find(key); it != claimed.end())
        return std::string(it->second);
      return engine_->GetLatest(Cf::kIdempotency, key);
    };
    bool sync = false;
    // How long the group's sync may wait for others to share it: the least
    // any of its synced writes allows.
    absl::Duration sync_within = absl::InfiniteDuration();
    size_t bytes = 0;
    for (Pending& p : group) {
      WriteResult r;
      if (!p.idempotency_key.empty()) {
        absl::StatusOr<std::optional<std::string>> earlier =
            holder_of(p.idempotency_key);
        if (!earlier.ok()) {
          results.push_back(earlier.status());
          continue;
        }
        if (*earlier) {
          r.duplicate_of = **earlier;
          results.push_back(std::move(r));
          continue;
        }
      }
      bool claim = false;
      if (!p.claim_key.empty()) {
        absl::StatusOr<std::optional<std::string>> found =
            holder_of(p.claim_key);
        if (!found.ok()) {
          results.push_back(found.status());
          continue;
        }
        const std::optional<std::string>& holder = *found;
        if (holder && *holder != p.document_id) {
          results.push_back(absl::AlreadyExistsError(absl::StrCat(
              "its sender sent this document as ", *holder,
              "; a second copy under id ", p.document_id, " is refused")));
          continue;
        }
        claim = !holder;
      }
      if (!p.idempotency_key.empty()) {
        claimed.emplace(p.idempotency_key, p.guard_value);
        ops.push_back(
            KvOp{Cf::kIdempotency, false, p.idempotency_key, p.guard_value});
      }
      if (claim) {
        claimed.emplace(p.claim_key, p.document_id);
        ops.push_back(
            KvOp{Cf::kIdempotency, false, p.claim_key, p.document_id});
      }
      if (p.has_document) {
        ops.push_back(
            KvOp{Cf::kDocuments, false, p.document_id, p.document_value});
      }
      for (size_t i = 0; i < p.enqueue.size(); ++i) {
        Enqueue& q = p.enqueue[i];
        QueueEntry e{std::move(q.recipient), q.priority,
                     ++last_sequence_,       std::move(q.document_id),
                     std::move(q.sender),    std::move(q.payload)};
        scratch.push_back(keys::Queue(e.recipient, e.priority, e.sequence));
        ops.push_back(
            KvOp{Cf::kQueues, false, scratch.back(), p.queue_values[i]});
        r.enqueued.push_back(std::move(e));
      }
      for (const Record& rec : p.records) {
        ops.push_back(KvOp{Cf::kMeta, rec.value.empty(), rec.key, rec.value});
      }
      for (const std::string& key : p.dequeue_keys) {
        ops.push_back(KvOp{Cf::kQueues, true, key, {}});
      }
      for (size_t i = 0; i < p.events.size(); ++i) {
        v1::StatusEvent& ev = p.events[i];
        ev.set_sequence(++last_sequence_);
        scratch.push_back(keys::Sequenced(ev.document_id(), ev.sequence()));
        ops.push_back(
            KvOp{Cf::kEvents, false, scratch.back(), p.event_values[i]});
        scratch.push_back(keys::Sequenced(ev.sender(), ev.sequence()));
        absl::string_view sender_key = scratch.back();
        // The sender's index refers to the event; the event is stored once.
        scratch.push_back(absl::StrCat(kEventRef, ev.document_id()));
        ops.push_back(
            KvOp{Cf::kSenderEvents, false, sender_key, scratch.back()});
        r.events.push_back(std::move(ev));
      }
      if (!p.audit_values.empty()) r.first_audit_index = audit_head_.size + 1;
      for (size_t i = 0; i < p.audit_values.size(); ++i) {
        std::string& entry = p.audit_values[i];
        const uint64_t index = ++audit_head_.size;
        audit_head_.hash =
            audit::AuditChainHash(audit_head_.hash, index, entry);
        v1::StoredAuditEntry stored;
        stored.set_index(index);
        stored.set_entry(std::move(p.audit_sealed[i]));
        stored.set_hash(audit_head_.hash);
        scratch.push_back(keys::Audit(keys::kAuditEntryTag, index));
        absl::string_view key = scratch.back();
        scratch.push_back(stored.SerializeAsString());
        ops.push_back(KvOp{Cf::kAudit, false, key, scratch.back()});
        if (!p.audit_documents[i].empty()) {
          scratch.push_back(keys::AuditByDocument(p.audit_documents[i], index));
          ops.push_back(KvOp{Cf::kAudit, false, scratch.back(), ""});
        }
      }
      if (p.checkpoint_size) {
        scratch.push_back(
            keys::Audit(keys::kAuditCheckpointTag, *p.checkpoint_size));
        ops.push_back(
            KvOp{Cf::kAudit, false, scratch.back(), p.checkpoint_value});
      }
      sync = sync || p.sync;
      if (p.sync) sync_within = std::min(sync_within, p.sync_within);
      bytes += p.bytes;
      results.push_back(std::move(r));
    }
    if (!ops.empty()) {
      std::string seq;
      keys::AppendBigEndian64(&seq, last_sequence_);
      ops.push_back(KvOp{Cf::kMeta, false, keys::kLastSequence, seq});
      std::string audit_head;
      if (audit_head_.size != first_audit_head.size) {
        keys::AppendBigEndian64(&audit_head, audit_head_.size);
        audit_head.append(audit_head_.hash);
        ops.push_back(KvOp{Cf::kMeta, false, keys::kAuditHead, audit_head});
      }
      // Counted before the engine has it: a sync without durability does
      // not make it visible then (see SyncAndAnswer). The syncer counts it
      // off once synced (a failed commit too: it is still a group needing a
      // sync below).
      if (sync) durable_owed_.fetch_add(1);
      absl::Status s = engine_->Commit(ops, bytes + 64 * ops.size());
      if (!s.ok()) {
        last_sequence_ = first_sequence;
        audit_head_ = first_audit_head;
        for (auto& r : results) {
          if (r.ok()) r = s;
        }
      } else if (audit_head_.size != first_audit_head.size) {
        absl::MutexLock lock(&audit_mu_);
        published_audit_head_ = audit_head_;
      }
    }
    Committed committed;
    committed.needs_sync = sync && !ops.empty();
    // A group with nothing to sync is answered at once (after those before
    // it); one whose writes allow it waits for others to share its sync.
    committed.sync_by =
        committed.needs_sync && sync_within > absl::ZeroDuration()
            ? absl::Now() + sync_within
            : absl::InfinitePast();
    committed.results = std::move(results);
    for (Pending& p : group) committed.callbacks.push_back(std::move(p.done));
    absl::MutexLock lock(&sync_mu_);
    to_sync_.push_back(std::move(committed));
  }

  // A group written to the engine, waiting for its sync.
  struct Committed {
    bool needs_sync = false;
    absl::Time sync_by = absl::InfinitePast();  // synced no later than this
    std::vector<absl::StatusOr<WriteResult>> results;
    std::vector<WriteCallback> callbacks;
  };

  void SyncLoop() {
    for (;;) {
      std::deque<Committed> batch;
      {
        absl::MutexLock lock(&sync_mu_);
        sync_mu_.Await(absl::Condition(
            +[](StoreImpl* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->sync_mu_) {
              return !s->to_sync_.empty() || s->sync_closing_;
            },
            this));
        if (to_sync_.empty()) return;  // closing and drained
        // Writes that allow it wait for a write that must be synced at once
        // (or for the first of their deadlines), and share its sync.
        for (;;) {
          absl::Time due = absl::InfiniteFuture();
          for (const Committed& c : to_sync_) due = std::min(due, c.sync_by);
          if (sync_closing_ || due <= absl::Now()) break;
          sync_mu_.AwaitWithDeadline(
              absl::Condition(
                  +[](StoreImpl* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->sync_mu_) {
                    if (s->sync_closing_) return true;
                    for (const Committed& c : s->to_sync_)
                      if (c.sync_by == absl::InfinitePast()) return true;
                    return false;
                  },
                  this),
              due);
        }
        batch.swap(to_sync_);
      }
      SyncAndAnswer(batch);
    }
  }

  // Makes `batch` durable with one sync (if any of it needs one), then runs
  // its callbacks in commit order.
  void SyncAndAnswer(std::deque<Committed>& batch) {
    bool needs_sync = false;
    uint64_t owed = 0;  // groups of the batch that need a sync
    size_t writes = 0;
    for (const Committed& c : batch) {
      needs_sync = needs_sync || c.needs_sync;
      owed += c.needs_sync;
      writes += c.callbacks.size();
    }
    // Without a sync, a group that needs one may be committed already but
    // not yet here: then the read view stays (these writes show with that
    // group's sync, soon), so that nothing shows before it is durable.
    absl::Status synced =
        engine_->Sync(needs_sync, [this] { return durable_owed_.load() == 0; });
    if (synced.ok()) durable_owed_.fetch_sub(owed);
    writes_.Add(writes);
    if (needs_sync) {
      syncs_.Add();
      writes_per_sync_.Observe(static_cast<double>(writes));
    }
    for (Committed& c : batch) {
      for (size_t i = 0; i < c.callbacks.size(); ++i) {
        if (!synced.ok() && c.results[i].ok()) c.results[i] = synced;
        c.callbacks[i](std::move(c.results[i]));
      }
    }
  }

  AuditHead GetAuditHead() override {
    absl::MutexLock lock(&audit_mu_);
    return published_audit_head_;
  }

  absl::StatusOr<std::optional<AuditHead>> ReadAuditHeadRecord() override {
    ASSIGN_OR_RETURN(std::optional<std::string> raw,
                     engine_->Get(Cf::kMeta, keys::kAuditHead));
    return ParseAuditHead(raw);
  }

  absl::Status ScanAuditEntries(
      uint64_t first_index,
      const std::function<bool(uint64_t, absl::string_view)>& fn) override {
    return ScanAudit(keys::kAuditEntryTag, first_index, fn);
  }

  absl::Status ScanAuditCheckpoints(
      uint64_t first_size,
      const std::function<bool(uint64_t, absl::string_view)>& fn) override {
    return ScanAudit(keys::kAuditCheckpointTag, first_size, fn);
  }

  absl::Status ScanAuditEntriesForDocument(
      absl::string_view document_id,
      const std::function<bool(uint64_t, absl::string_view)>& fn) override {
    std::string prefix(1, keys::kAuditDocumentTag);
    prefix.append(document_id.data(), document_id.size());
    prefix.push_back('\0');
    std::vector<uint64_t> indices;
    absl::Status bad;
    RETURN_IF_ERROR(engine_->Scan(
        Cf::kAudit, prefix, prefix,
        [&](absl::string_view k, absl::string_view) {
          if (k.size() != prefix.size() + 8) {
            bad = absl::DataLossError(
                "storage: malformed key in the audit column family");
            return false;
          }
          indices.push_back(keys::ReadBigEndian64(k.substr(prefix.size())));
          return true;
        }));
    RETURN_IF_ERROR(bad);
    for (uint64_t index : indices) {
      ASSIGN_OR_RETURN(
          std::optional<std::string> value,
          engine_->Get(Cf::kAudit, keys::Audit(keys::kAuditEntryTag, index)));
      if (!value) {
        return absl::DataLossError(absl::StrCat("storage: audit entry ", index,
                                                " of document ", document_id,
                                                " is indexed but missing"));
      }
      // A document's entries leave the broker as evidence: one that does
      // not open fails the read, naming it, instead of going out sealed.
      ASSIGN_OR_RETURN(std::string entry, OpenedAuditEntry(index, *value));
      if (!fn(index, entry)) break;
    }
    return absl::OkStatus();
  }

  // A stored audit entry (StoredAuditEntry) as readers take it: its entry
  // opened when sealed at rest. One that does not parse is handed on as
  // stored; one sealed that does not open is DATA_LOSS naming it.
  absl::StatusOr<std::string> OpenedAuditEntry(uint64_t index,
                                               absl::string_view raw) const {
    // A store without encryption cannot hold sealed values (it would not
    // have opened).
    if (!keys_->enabled()) return std::string(raw);
    v1::StoredAuditEntry stored;
    if (!stored.ParseFromArray(raw.data(), static_cast<int>(raw.size())) ||
        !DataKeys::IsSealed(stored.entry())) {
      return std::string(raw);
    }
    absl::StatusOr<std::string> entry =
        keys_->Open(std::move(*stored.mutable_entry()), kAuditContext);
    if (!entry.ok()) {
      return absl::DataLossError(absl::StrCat(
          "storage: audit entry ", index,
          " is sealed at rest and does not open (altered, or sealed under a "
          "data key this store no longer has): ",
          entry.status().message()));
    }
    stored.set_entry(*std::move(entry));
    return stored.SerializeAsString();
  }
  // As the log's own scan takes it: one that does not open is handed on as
  // stored, so that verification names it (its hash no longer matches) and
  // goes on to the entries after it.
  std::string OpenAuditEntry(uint64_t index, absl::string_view raw) const {
    absl::StatusOr<std::string> opened = OpenedAuditEntry(index, raw);
    return opened.ok() ? *std::move(opened) : std::string(raw);
  }

  absl::Status ScanAudit(
      char tag, uint64_t first,
      const std::function<bool(uint64_t, absl::string_view)>& fn) {
    const std::string prefix(1, tag);
    absl::Status bad;
    RETURN_IF_ERROR(engine_->Scan(
        Cf::kAudit, keys::Audit(tag, first), prefix,
        [&](absl::string_view k, absl::string_view v) {
          if (k.size() != 9) {
            bad = absl::DataLossError(
                "storage: malformed key in the audit column family");
            return false;
          }
          const uint64_t n = keys::ReadBigEndian64(k.substr(1));
          if (tag == keys::kAuditEntryTag) return fn(n, OpenAuditEntry(n, v));
          return fn(n, v);
        }));
    return bad;
  }

  StoreStats Stats() override {
    StoreStats s;
    s.writes = writes_.value();
    s.syncs = syncs_.value();
    s.writes_per_sync = writes_per_sync_.Read();
    std::tie(s.disk_bytes, s.memory_bytes) = engine_->ApproximateSizes();
    return s;
  }

  const std::unique_ptr<KvEngine> engine_;
  const std::unique_ptr<DataKeys> keys_;
  absl::Mutex rotate_mu_;
  Counter writes_;
  Counter syncs_;
  Histogram writes_per_sync_{Histogram::SizeBounds()};
  uint64_t last_sequence_;  // only the committer thread touches it
  AuditHead audit_head_;    // only the committer thread touches it
  absl::Mutex audit_mu_;
  AuditHead published_audit_head_ ABSL_GUARDED_BY(audit_mu_);
  const size_t max_group_size_;
  const size_t max_group_bytes_;

  absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  std::thread committer_;

  absl::Mutex sync_mu_;
  std::deque<Committed> to_sync_ ABSL_GUARDED_BY(sync_mu_);
  bool sync_closing_ ABSL_GUARDED_BY(sync_mu_) = false;
  // Groups that need a sync, committed (or being committed) and not synced.
  std::atomic<uint64_t> durable_owed_{0};
  std::thread syncer_;
};

}  // namespace

absl::StatusOr<std::optional<AuditHead>> ParseAuditHead(
    const std::optional<std::string>& raw) {
  if (!raw) return std::nullopt;
  if (raw->size() != 8 + 32)
    return absl::DataLossError("storage: malformed audit head record");
  AuditHead head;
  head.size = keys::ReadBigEndian64(*raw);
  head.hash = raw->substr(8);
  return head;
}

absl::StatusOr<std::unique_ptr<Store>> NewStoreOverEngine(
    std::unique_ptr<KvEngine> engine, size_t max_group_size,
    size_t max_group_bytes, const EncryptionOptions& encryption) {
  ASSIGN_OR_RETURN(std::unique_ptr<DataKeys> keys,
                   DataKeys::Load(*engine, encryption));
  ASSIGN_OR_RETURN(std::optional<std::string> raw,
                   engine->GetLatest(Cf::kMeta, keys::kLastSequence));
  uint64_t last = 0;
  if (raw) {
    if (raw->size() != 8)
      return absl::DataLossError("storage: malformed last sequence");
    last = keys::ReadBigEndian64(*raw);
  }
  // The chain continues from its head record (committed with every append).
  ASSIGN_OR_RETURN(std::optional<std::string> raw_head,
                   engine->GetLatest(Cf::kMeta, keys::kAuditHead));
  ASSIGN_OR_RETURN(std::optional<AuditHead> head, ParseAuditHead(raw_head));
  return std::unique_ptr<Store>(std::make_unique<StoreImpl>(
      std::move(engine), std::move(keys), last, head.value_or(AuditHead()),
      max_group_size, max_group_bytes));
}

}  // namespace lienthong::storage
