#include "lienthong/broker/audit.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "lienthong/common/log.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/common/thread_name.h"

namespace lienthong::broker {
namespace {

void SetTime(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t nanos = absl::ToUnixNanos(t);
  out->set_seconds(nanos / 1000000000);
  out->set_nanos(static_cast<int32_t>(nanos % 1000000000));
}

}  // namespace

absl::Status AuditOptions::Validate() const {
  if (broker_id.empty())
    return absl::InvalidArgumentError("audit.broker_id: required");
  if (!signer) return absl::InvalidArgumentError("audit.signer: required");
  if (checkpoint_every < 1) {
    return absl::InvalidArgumentError(
        "audit.checkpoint_every: must be at least 1");
  }
  if (checkpoint_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "audit.checkpoint_seconds: must be positive");
  }
  return absl::OkStatus();
}

v1::AuditKind AuditKindOf(const v1::StatusEvent& e) {
  if (e.has_paper_conversion()) return v1::AUDIT_KIND_PAPER_CONVERSION;
  if (!e.related_document_id().empty()) return v1::AUDIT_KIND_RECALL;
  if (e.business_status() != v1::BUSINESS_STATUS_UNSPECIFIED)
    return v1::AUDIT_KIND_STATUS_REPORTED;
  // Held for, given or refused an approval: every step of the approval.
  if (e.has_approval() ||
      e.delivery_state() == v1::DELIVERY_STATE_PENDING_APPROVAL ||
      e.delivery_state() == v1::DELIVERY_STATE_APPROVED)
    return v1::AUDIT_KIND_APPROVAL;
  switch (e.delivery_state()) {
    case v1::DELIVERY_STATE_ACCEPTED:
      return v1::AUDIT_KIND_SEND_ACCEPTED;
    case v1::DELIVERY_STATE_FORWARDED:
      return v1::AUDIT_KIND_FORWARDED;
    case v1::DELIVERY_STATE_DELIVERED:
      return v1::AUDIT_KIND_DELIVERED;
    case v1::DELIVERY_STATE_DENIED:
      return v1::AUDIT_KIND_DENIED;
    case v1::DELIVERY_STATE_RECALLED:
      return v1::AUDIT_KIND_RECALL;
    default:
      return v1::AUDIT_KIND_EVENT;
  }
}

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(
    const AuditOptions& options, storage::Store* store, Clock* clock) {
  RETURN_IF_ERROR(options.Validate());
  if (store == nullptr)
    return absl::InvalidArgumentError("audit: store required");
  return std::unique_ptr<AuditLog>(new AuditLog(options, store, clock));
}

AuditLog::AuditLog(const AuditOptions& options, storage::Store* store,
                   Clock* clock)
    : options_(options), store_(store), clock_(clock) {
  // The last checkpoint stored: a restart does not sign the same head twice.
  uint64_t last = 0;
  (void)store_->ScanAuditCheckpoints(0, [&](uint64_t size, absl::string_view) {
    last = size;
    return true;
  });
  {
    absl::MutexLock lock(&checkpoint_mu_);
    checkpointed_ = last;
  }
  thread_ = std::thread([this] {
    NameThisThread("lt-audit-ckpt");
    CheckpointLoop();
  });
}

AuditLog::~AuditLog() {
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
  }
  thread_.join();
  if (absl::StatusOr<v1::AuditCheckpoint> c = Checkpoint(); !c.ok()) {
    log::Write(log::Level::kError, "audit", "closing checkpoint failed",
               {{"error", std::string(c.status().message())}});
  }
}

void AuditLog::Staged(size_t n) {
  const uint64_t now = staged_.fetch_add(n, std::memory_order_relaxed) + n;
  // Wake the checkpoint thread only when crossing the threshold.
  const uint64_t base = staged_at_checkpoint_.load(std::memory_order_relaxed);
  if (now - base >= options_.checkpoint_every &&
      now - n - base < options_.checkpoint_every) {
    absl::MutexLock lock(&mu_);
    wake_ = true;
  }
}

void AuditLog::AddTo(storage::WriteBatch* batch, v1::AuditEntry entry) {
  if (!entry.has_time()) SetTime(clock_->Now(), entry.mutable_time());
  batch->audit.push_back(std::move(entry));
  Staged(1);
}

void AuditLog::Append(v1::AuditEntry entry,
                      absl::AnyInvocable<void(absl::Status)> done) {
  storage::WriteBatch batch;
  AddTo(&batch, std::move(entry));
  store_->Write(
      std::move(batch),
      [done = std::move(done)](absl::StatusOr<storage::WriteResult> r) mutable {
        if (!r.ok()) {
          log::Write(log::Level::kError, "audit",
                     "an audit entry could not be stored",
                     {{"error", std::string(r.status().message())}});
        }
        if (done) done(r.status());
      });
}

void AuditLog::CheckpointLoop() {
  absl::Time last = clock_->Now();
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(
                               +[](AuditLog* l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(
                                    l->mu_) { return l->wake_ || l->closing_; },
                               this),
                           absl::Milliseconds(200));
      if (closing_) return;
      wake_ = false;
    }
    const uint64_t staged = staged_.load(std::memory_order_relaxed);
    const bool due =
        staged - staged_at_checkpoint_.load(std::memory_order_relaxed) >=
            options_.checkpoint_every ||
        clock_->Now() - last >= options_.checkpoint_interval;
    if (!due) continue;
    staged_at_checkpoint_.store(staged, std::memory_order_relaxed);
    last = clock_->Now();
    if (absl::StatusOr<v1::AuditCheckpoint> c = Checkpoint(); !c.ok()) {
      log::Write(log::Level::kError, "audit", "checkpoint failed",
                 {{"error", std::string(c.status().message())}});
    }
  }
}

absl::StatusOr<v1::AuditCheckpoint> AuditLog::Checkpoint() {
  absl::MutexLock lock(&checkpoint_mu_);
  const storage::AuditHead head = store_->GetAuditHead();
  v1::AuditCheckpoint c;
  c.set_broker(options_.broker_id);
  c.set_tree_size(head.size);
  c.set_head_hash(head.hash);
  c.mutable_time()->set_seconds(absl::ToUnixSeconds(clock_->Now()));
  if (head.size == 0 || head.size <= checkpointed_) {
    RETURN_IF_ERROR(options_.signer->Sign(&c));
    return c;  // nothing new to sign: not stored
  }
  RETURN_IF_ERROR(options_.signer->Sign(&c));
  storage::WriteBatch batch;
  batch.audit_checkpoint = c;
  RETURN_IF_ERROR(store_->WriteSync(std::move(batch)).status());
  checkpointed_ = head.size;
  return c;
}

absl::StatusOr<audit::AuditVerification> AuditLog::Verify() {
  audit::AuditVerifier verifier({.broker = options_.broker_id,
                                 .trust_root_pem = options_.trust_root_pem});
  // Checkpoints, then the head record, then the entries it covers: each
  // read sees at least what the one before it implies.
  RETURN_IF_ERROR(store_->ScanAuditCheckpoints(
      0, [&](uint64_t size, absl::string_view raw) {
        verifier.AddCheckpoint(size, raw);
        return true;
      }));
  ASSIGN_OR_RETURN(std::optional<storage::AuditHead> head,
                   store_->ReadAuditHeadRecord());
  const uint64_t through = head ? head->size : UINT64_MAX;
  RETURN_IF_ERROR(
      store_->ScanAuditEntries(1, [&](uint64_t index, absl::string_view raw) {
        if (index > through) return false;  // appended since
        verifier.AddEntry(index, raw);
        return true;
      }));
  std::optional<std::pair<uint64_t, std::string>> record;
  if (head) record.emplace(head->size, head->hash);
  return verifier.Finish(record);
}

absl::StatusOr<AuditPage> AuditLog::Read(uint64_t after_index, uint64_t through,
                                         size_t limit) {
  AuditPage page;
  if (after_index == 0 || through == 0) {
    absl::Status bad;
    RETURN_IF_ERROR(store_->ScanAuditCheckpoints(
        0, [&](uint64_t size, absl::string_view raw) {
          v1::AuditCheckpoint& c = page.checkpoints.emplace_back();
          if (!c.ParseFromArray(raw.data(), static_cast<int>(raw.size()))) {
            // Exported as found: the auditor's verification names it.
            c.Clear();
            c.set_tree_size(size);
          }
          return true;
        }));
    ASSIGN_OR_RETURN(std::optional<storage::AuditHead> head,
                     store_->ReadAuditHeadRecord());
    through = head ? head->size : 0;
    if (head) page.head_hash = head->hash;
  }
  page.through = through;
  if (after_index >= through) return page;
  RETURN_IF_ERROR(store_->ScanAuditEntries(
      after_index + 1, [&](uint64_t index, absl::string_view raw) {
        if (index > through || page.entries.size() >= limit) return false;
        page.last_key = index;
        v1::StoredAuditEntry& e = page.entries.emplace_back();
        if (!e.ParseFromArray(raw.data(), static_cast<int>(raw.size()))) {
          e.Clear();
          e.set_index(index);
        }
        return true;
      }));
  return page;
}

}  // namespace lienthong::broker
