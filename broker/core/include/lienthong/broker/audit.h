// The broker's tamper-evident audit log: every security-relevant event
// (sends, refusals, deliveries, statuses, denials, admin calls, policy
// changes, failed authentications) becomes an AuditEntry on a hash chain in
// the store, with checkpoints signed by the broker's key every
// `checkpoint_every` entries, every `checkpoint_interval` and on close.
// There is no way to delete or rewrite an entry through it or the store.
//
//   ASSIGN_OR_RETURN(auto log, AuditLog::Open(options, store.get()));
//   storage::WriteBatch batch = ...;       // the operation itself
//   log->AddTo(&batch, entry);             // rides on its synced write
//   log->Append(entry);                    // or on a write of its own
//   ASSIGN_OR_RETURN(audit::AuditVerification v, log->Verify());
//
// Thread-safe. Destroy it after everything that appends (the exchange, the
// services) and before the store: closing writes a last checkpoint.
#ifndef LIENTHONG_BROKER_AUDIT_H_
#define LIENTHONG_BROKER_AUDIT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lienthong/audit/chain.h"
#include "lienthong/common/clock.h"
#include "lienthong/storage/store.h"
#include "lienthong/v1/audit.pb.h"

namespace lienthong::broker {

struct AuditOptions {
  // SPIFFE id of this broker: checkpoints are signed for it. Required.
  std::string broker_id;
  // Signs checkpoints (the broker's TLS key). Required.
  std::shared_ptr<const audit::CheckpointSigner> signer;
  // CA certificates (PEM) a checkpoint's certificate must chain to when
  // verifying. Empty: signatures are checked against the certificate each
  // checkpoint carries only.
  std::string trust_root_pem;
  // A checkpoint after this many new entries. Default 1000; at least 1.
  uint64_t checkpoint_every = 1000;
  // And at least this often while entries arrive. Default 60 s; > 0.
  absl::Duration checkpoint_interval = absl::Seconds(60);

  // INVALID_ARGUMENT naming the field.
  absl::Status Validate() const;
};

// A page of the log for an export (AdminService/ExportAudit).
struct AuditPage {
  std::vector<v1::StoredAuditEntry> entries;  // raw, as stored
  // Only on the first page (after_index 0): every checkpoint, and the head
  // record the page is bounded by.
  std::vector<v1::AuditCheckpoint> checkpoints;
  uint64_t through = 0;   // the last index this export covers
  std::string head_hash;  // first page: the head record's hash
  uint64_t last_key = 0;  // index the last entry is stored under
};

class AuditLog {
 public:
  // `store` is not owned and must outlive the log. INVALID_ARGUMENT for bad
  // options.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(
      const AuditOptions& options, storage::Store* store,
      Clock* clock = Clock::Real());
  // Stops the checkpoint thread and writes a last checkpoint.
  ~AuditLog();

  // Adds `entry` to `batch`: it is appended when (and only if) the batch is
  // applied, by the same synced write. Fills `time` when unset.
  void AddTo(storage::WriteBatch* batch, v1::AuditEntry entry);
  // Appends `entry` with a write of its own (sharing a sync with concurrent
  // writes); `done`, if given, runs once it is durable (or with the store's
  // error), on the store's thread, and must not block.
  void Append(v1::AuditEntry entry,
              absl::AnyInvocable<void(absl::Status)> done = nullptr);

  // Signs and stores a checkpoint of the current head, unless the last one
  // covers it already; returns the checkpoint covering the head (tree size
  // 0 for an empty log). Blocks until durable.
  absl::StatusOr<v1::AuditCheckpoint> Checkpoint();

  // Walks the whole log: recomputes the chain, checks every checkpoint's
  // signature and head, and the store's head record. The result lists what
  // is wrong (ok() when nothing is); an error only when the store cannot be
  // read. Blocks on I/O.
  absl::StatusOr<audit::AuditVerification> Verify();

  // Entries after `after_index`, at most `limit`, up to `through` (0: the
  // head record now; the first page sets it). Blocks on I/O.
  absl::StatusOr<AuditPage> Read(uint64_t after_index, uint64_t through,
                                 size_t limit);

  const std::string& broker_id() const { return options_.broker_id; }
  const std::string& certificate_pem() const {
    return options_.signer->certificate_pem();
  }

 private:
  AuditLog(const AuditOptions& options, storage::Store* store, Clock* clock);
  void CheckpointLoop();
  void Staged(size_t n);

  const AuditOptions options_;
  storage::Store* const store_;
  Clock* const clock_;
  std::atomic<uint64_t> staged_{0};  // entries handed to the store
  absl::Mutex checkpoint_mu_;        // one checkpoint at a time
  uint64_t checkpointed_ ABSL_GUARDED_BY(checkpoint_mu_) = 0;  // tree size
  absl::Mutex mu_;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> staged_at_checkpoint_{0};
  std::thread thread_;
};

// The kind of a status event's entry (DELIVERED, DENIED, ...).
v1::AuditKind AuditKindOf(const v1::StatusEvent& event);

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_AUDIT_H_
