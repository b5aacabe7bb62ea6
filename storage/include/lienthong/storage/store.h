// The broker's durable state: documents, idempotency keys, per-recipient
// delivery queues and status events. The core talks to this interface only;
// RocksDB lives behind it (OpenRocksDbStore) and an in-memory fake
// (NewMemoryStore) serves fast core tests.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenRocksDbStore(options));
//   WriteBatch batch;
//   batch.document = doc;  // shared_ptr; guarded by its idempotency key
//   batch.enqueue.push_back({recipient, priority, doc->id(), doc->sender()});
//   batch.events.push_back(accepted_event);
//   store->Write(std::move(batch), [](absl::StatusOr<WriteResult> r) { ... });
//
// Writes are durable when their callback runs with OK: the WAL has been
// synced. Concurrent writes share one sync (group commit).
#ifndef LIENTHONG_STORAGE_STORE_H_
#define LIENTHONG_STORAGE_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lienthong/common/metrics.h"
#include "lienthong/v1/audit.pb.h"
#include "lienthong/v1/document.pb.h"

namespace lienthong::storage {

// Queue rank of an urgency: lower is delivered first.
int PriorityOf(v1::Urgency urgency);
inline constexpr int kPriorityLevels = 4;

// One recipient's copy waiting in that recipient's queue. Queues are ordered
// by (priority, sequence), so a higher urgency overtakes and order is kept
// within one urgency.
// `recipient` is an organization code, or a queue of the broker's own
// (federation outboxes and return queues; see broker/core) that no
// organization code can name. `payload` is the queue owner's own data.
struct QueueEntry {
  std::string recipient;
  int priority = 0;
  uint64_t sequence = 0;
  std::string document_id;
  std::string sender;
  std::string payload;
};

struct Enqueue {
  std::string recipient;
  int priority = 0;
  std::string document_id;
  std::string sender;
  std::string payload;
};

// A key that lets a batch apply at most once: if `key` was stored before,
// nothing of the batch is applied and the result reports the stored value.
struct Guard {
  std::string key;
  std::string value;
};

// A small named value the broker keeps besides documents and queues (e.g.
// an organization's published encryption certificate). Keys are the
// broker's own; an empty value erases the record.
struct Record {
  std::string key;
  std::string value;
};

// Everything one operation changes, applied atomically.
struct WriteBatch {
  // A new document. If (sender, idempotency_key) was stored before, nothing
  // of this batch is applied and the result reports the earlier id. Shared,
  // not copied: the broker keeps the same document in its delivery cache.
  std::shared_ptr<const v1::Document> document;
  // Replaces the document's (sender, idempotency key) guard, or guards a
  // batch without a document. Guard keys share the idempotency keyspace:
  // start them with a byte no sender can (e.g. "\x01fwd\0...").
  // With a document, its (sender, idempotency key) is still recorded as
  // naming the document (LookupIdempotencyKey finds it); if it names another
  // document already, the batch fails with ALREADY_EXISTS and nothing of it
  // is applied.
  std::optional<Guard> guard;
  std::vector<Enqueue> enqueue;
  std::vector<QueueEntry> dequeue;  // recipient, priority, sequence used
  // Sequences are assigned at commit; events are kept per document and per
  // the document's sender (field `sender` must be set).
  std::vector<v1::StatusEvent> events;
  std::vector<Record> records;
  // Audit entries, appended to the audit chain in this order (see
  // audit::AuditChainHash) by the same atomic, synced write as the rest of the
  // batch; not appended when the batch is a duplicate. Nothing can erase or
  // replace an entry once appended.
  std::vector<v1::AuditEntry> audit;
  // A signed checkpoint of the audit chain, stored under its tree size (a
  // second one for the same size replaces nothing: the first stays).
  std::optional<v1::AuditCheckpoint> audit_checkpoint;
  // Want a synced write. Default true.
  bool sync = true;
  // With `sync`: how long the sync may wait for other writes to share it
  // (zero: synced at once; at most 1 s is taken). The callback still runs only
  // once the write is durable. For writes nobody waits on at once (a
  // recipient's acknowledgement, an event coming back from a peer), so that
  // they ride on the syncs of the documents arriving instead of each taking its
  // own.
  absl::Duration sync_within = absl::ZeroDuration();
};

struct WriteResult {
  // Set when the batch's guard (by default `document`'s idempotency key) had
  // been used: the value stored with it (the earlier document id).
  std::optional<std::string> duplicate_of;
  std::vector<QueueEntry> enqueued;     // with sequences
  std::vector<v1::StatusEvent> events;  // with sequences
  // Index of the batch's first audit entry (0: the batch had none).
  uint64_t first_audit_index = 0;
};

// The audit chain's head: how many entries it holds and the hash of the
// last one (32 zero bytes for an empty chain).
struct AuditHead {
  uint64_t size = 0;
  std::string hash = std::string(32, '\0');
};

// Encryption at rest of stored documents (content, attachments, metadata):
// each is sealed with AES-256-GCM under a data key; data keys are kept in
// the store wrapped by the master key, which never is.
struct EncryptionOptions {
  // 32 bytes. Empty: documents are written unencrypted; a store that holds
  // encrypted data then refuses to open.
  std::string master_key;
  // Earlier master keys: data keys still wrapped by one of them are
  // re-wrapped under `master_key` when the store opens or rotates.
  std::vector<std::string> previous_master_keys;
};

struct EncryptionInfo {
  bool enabled = false;
  std::string master_key_id;  // hex; identifies the master key, reveals nothing
  std::string data_key_id;    // hex; the key new documents are sealed with
  size_t data_keys = 0;       // data keys in the store
};

// What the store did, for operators.
struct StoreStats {
  uint64_t writes = 0;  // write batches applied
  uint64_t syncs = 0;   // WAL syncs (each makes a group of writes durable)
  Histogram::Snapshot writes_per_sync;  // group commit batch sizes
  uint64_t disk_bytes = 0;              // table files
  uint64_t memory_bytes = 0;            // memtables
};

class Store {
 public:
  using WriteCallback = absl::AnyInvocable<void(absl::StatusOr<WriteResult>)>;

  virtual ~Store() = default;

  // Applies `batch` atomically; `done` runs once, on the store's syncer
  // thread, after the write is durable (or failed: UNAVAILABLE when the store
  // is closing, INTERNAL / DATA_LOSS for I/O errors). `done` must not block.
  // Thread-safe.
  virtual void Write(WriteBatch batch, WriteCallback done) = 0;

  // Write for each, in this order, handed to the committer together: the
  // batches of one message (a link's transfers) share a commit and a sync
  // instead of the first taking one of its own while the rest are prepared.
  // Each is applied (or fails) on its own, as with Write.
  virtual void WriteAll(
      std::vector<std::pair<WriteBatch, WriteCallback>> writes) {
    for (auto& [batch, done] : writes) Write(std::move(batch), std::move(done));
  }

  // Blocking convenience over Write.
  absl::StatusOr<WriteResult> WriteSync(WriteBatch batch);

  // NOT_FOUND if no such document. Thread-safe; may block on I/O.
  virtual absl::StatusOr<v1::Document> GetDocument(
      const std::string& document_id) = 0;

  // The document id stored under (sender, key), if any.
  virtual absl::StatusOr<std::optional<std::string>> LookupIdempotencyKey(
      const std::string& sender, const std::string& key) = 0;

  // Events of one document with sequence > after, in sequence order.
  virtual absl::StatusOr<std::vector<v1::StatusEvent>> ListDocumentEvents(
      const std::string& document_id, uint64_t after_sequence) = 0;

  // Events of documents sent by `sender` with sequence > after, in sequence
  // order, at most `limit`.
  virtual absl::StatusOr<std::vector<v1::StatusEvent>> ListSenderEvents(
      const std::string& sender, uint64_t after_sequence, size_t limit) = 0;

  // Calls `fn` for every queued entry, recipient by recipient in queue order.
  // Used at startup to rebuild the in-memory delivery index.
  virtual absl::Status ScanQueues(
      const std::function<void(const QueueEntry&)>& fn) = 0;

  // Calls `fn` for every record whose key starts with `prefix`, in key
  // order. Thread-safe; may block on I/O.
  virtual absl::Status ScanRecords(
      absl::string_view prefix,
      const std::function<void(const Record&)>& fn) = 0;

  // The record stored under exactly `key`, if any. Thread-safe; may block
  // on I/O.
  virtual absl::StatusOr<std::optional<std::string>> GetRecord(
      absl::string_view key) = 0;

  // Starts a new data key for documents written from now on and re-wraps
  // every data key under `options.master_key` (one wrapped by another
  // master key needs it in previous_master_keys). Stored documents keep
  // their data keys; nothing is re-encrypted. Durable when it returns OK.
  // INVALID_ARGUMENT without a 32-byte master key; FAILED_PRECONDITION when
  // a data key cannot be unwrapped. Thread-safe; the store keeps serving.
  virtual absl::Status RotateKeys(const EncryptionOptions& options) = 0;
  virtual EncryptionInfo Encryption() = 0;
  // Encryption at rest of what the broker keeps beside the store (attachment
  // chunks), under the current data key and bound to `context` (sealed data
  // moved to another context does not open). nullopt when encryption at
  // rest is off. Thread-safe.
  virtual absl::StatusOr<std::optional<std::string>> SealBeside(
      absl::string_view plaintext, absl::string_view context) = 0;
  // Opens what SealBeside made: DATA_LOSS when it is not sealed or fails
  // authentication, FAILED_PRECONDITION when its data key is not loaded.
  virtual absl::StatusOr<std::string> OpenBeside(std::string sealed,
                                                 absl::string_view context) = 0;
  // ---- The audit chain (read only: there is no API that changes it) ----

  // The head after every write committed so far (possibly not yet synced;
  // a write made after this call is ordered after those entries).
  // Thread-safe.
  virtual AuditHead GetAuditHead() = 0;
  // The head record the store keeps beside the chain (nullopt: no entry was
  // ever appended). DATA_LOSS if malformed. Thread-safe.
  virtual absl::StatusOr<std::optional<AuditHead>> ReadAuditHeadRecord() = 0;
  // Visits the stored entries with key index >= `first_index` in key order,
  // raw (`value` is a serialized StoredAuditEntry, unchecked), while `fn`
  // returns true. Thread-safe; may block on I/O.
  virtual absl::Status ScanAuditEntries(
      uint64_t first_index,
      const std::function<bool(uint64_t index, absl::string_view value)>&
          fn) = 0;
  // Visits, in index order, the stored entries whose AuditEntry names
  // `document_id` (entries appended before this index existed are not
  // found). DATA_LOSS when the index names a missing entry, or one sealed
  // at rest that does not open (ScanAuditEntries hands that one on as
  // stored, for verification to name).
  virtual absl::Status ScanAuditEntriesForDocument(
      absl::string_view document_id,
      const std::function<bool(uint64_t index, absl::string_view value)>&
          fn) = 0;
  // Likewise for checkpoints (serialized AuditCheckpoint) by tree size.
  virtual absl::Status ScanAuditCheckpoints(
      uint64_t first_size,
      const std::function<bool(uint64_t size, absl::string_view value)>&
          fn) = 0;

  virtual StoreStats Stats() = 0;
};

struct RocksDbOptions {
  // Directory of the database; created if missing. Required.
  std::string path;
  // Block cache, bytes. Default 64 MiB.
  size_t block_cache_bytes = 64 << 20;
  // Most write batches merged into one synced commit. Default 4096.
  size_t max_group_size = 4096;
  // Most bytes merged into one commit. Default 32 MiB.
  size_t max_group_bytes = 32 << 20;
  // Default: no encryption at rest.
  EncryptionOptions encryption;

  absl::Status Validate() const;
};

// Opens (creating if needed) the RocksDB store. INVALID_ARGUMENT for bad
// options; UNAVAILABLE if another process holds the database lock; DATA_LOSS
// for corruption; INTERNAL for other I/O errors.
absl::StatusOr<std::unique_ptr<Store>> OpenRocksDbStore(
    const RocksDbOptions& options);

// A volatile store for tests: the same logic over sorted maps, without
// durability.
std::unique_ptr<Store> NewMemoryStore();
// The same, encrypting documents at rest as OpenRocksDbStore does.
absl::StatusOr<std::unique_ptr<Store>> NewMemoryStore(
    const EncryptionOptions& encryption);

}  // namespace lienthong::storage

#endif  // LIENTHONG_STORAGE_STORE_H_
