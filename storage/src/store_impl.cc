// One store over any KvEngine: a committer thread merges every write waiting
// at the moment into one engine commit with one WAL sync (group commit, as
// LevelDB's writer queue), assigns sequences, and runs the callbacks.
#include "absl/strings/string_view.h"
#include <deque>
#include <thread>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "lienthong/common/status_macros.h"
#include "storage/src/keys.h"
#include "storage/src/kv_engine.h"

namespace lienthong::storage {
namespace {

class StoreImpl : public Store {
 public:
  StoreImpl(std::unique_ptr<KvEngine> engine, uint64_t last_sequence, size_t max_group_size,
            size_t max_group_bytes)
      : engine_(std::move(engine)),
        last_sequence_(last_sequence),
        max_group_size_(max_group_size),
        max_group_bytes_(max_group_bytes) {
    committer_ = std::thread([this] { CommitLoop(); });
  }

  ~StoreImpl() override {
    {
      absl::MutexLock lock(&mu_);
      closing_ = true;
    }
    committer_.join();  // commits what was queued before closing
  }

  void Write(WriteBatch batch, WriteCallback done) override {
    size_t bytes = batch.document ? batch.document->ByteSizeLong() : 0;
    {
      absl::MutexLock lock(&mu_);
      if (!closing_) {
        queue_.push_back(Pending{std::move(batch), std::move(done), bytes});
        return;
      }
    }
    done(absl::UnavailableError("storage: store is closing"));
  }

  absl::StatusOr<v1::Document> GetDocument(const std::string& document_id) override {
    ASSIGN_OR_RETURN(std::optional<std::string> raw, engine_->Get(Cf::kDocuments, document_id));
    if (!raw) return absl::NotFoundError(absl::StrCat("document ", document_id, " not found"));
    v1::Document doc;
    if (!doc.ParseFromString(*raw)) {
      return absl::DataLossError(absl::StrCat("storage: document ", document_id, " is corrupt"));
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

  absl::StatusOr<std::vector<v1::StatusEvent>> ListSenderEvents(const std::string& sender,
                                                                 uint64_t after_sequence,
                                                                 size_t limit) override {
    return ListEvents(Cf::kSenderEvents, sender, after_sequence, limit);
  }

  absl::Status ScanQueues(const std::function<void(const QueueEntry&)>& fn) override {
    absl::Status bad;
    RETURN_IF_ERROR(engine_->Scan(Cf::kQueues, "", "", [&](absl::string_view k, absl::string_view v) {
      std::optional<QueueEntry> e = keys::ParseQueue(k, v);
      if (!e) {
        bad = absl::DataLossError("storage: malformed queue key");
        return false;
      }
      fn(*e);
      return true;
    }));
    return bad;
  }

  uint64_t ApproximateSizeBytes() override { return engine_->ApproximateSizeBytes(); }

 private:
  struct Pending {
    WriteBatch batch;
    WriteCallback done;
    size_t bytes = 0;
  };

  absl::StatusOr<std::vector<v1::StatusEvent>> ListEvents(Cf cf, const std::string& prefix,
                                                          uint64_t after, size_t limit) {
    std::vector<v1::StatusEvent> out;
    absl::Status bad;
    if (after == UINT64_MAX) return out;
    RETURN_IF_ERROR(engine_->Scan(cf, keys::Sequenced(prefix, after + 1),
                                  keys::SequencedPrefix(prefix),
                                  [&](absl::string_view, absl::string_view v) {
                                    if (out.size() >= limit) return false;
                                    v1::StatusEvent e;
                                    if (!e.ParseFromArray(v.data(), static_cast<int>(v.size()))) {
                                      bad = absl::DataLossError("storage: corrupt status event");
                                      return false;
                                    }
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
               (group.empty() || bytes + queue_.front().bytes <= max_group_bytes_)) {
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
    std::vector<absl::StatusOr<WriteResult>> results;
    results.reserve(group.size());
    // Idempotency keys claimed earlier in this group.
    std::unordered_map<std::string, std::string> claimed;
    const uint64_t first_sequence = last_sequence_;
    bool sync = false;
    for (Pending& p : group) {
      WriteBatch& b = p.batch;
      WriteResult r;
      if (b.document) {
        const v1::Document& doc = *b.document;
        if (!doc.idempotency_key().empty()) {
          std::string ikey = keys::Idempotency(doc.sender(), doc.idempotency_key());
          if (auto it = claimed.find(ikey); it != claimed.end()) {
            r.duplicate_of = it->second;
          } else {
            absl::StatusOr<std::optional<std::string>> existing = engine_->Get(Cf::kIdempotency, ikey);
            if (!existing.ok()) {
              results.push_back(existing.status());
              continue;
            }
            if (*existing) r.duplicate_of = **existing;
          }
          if (r.duplicate_of) {
            results.push_back(std::move(r));
            continue;
          }
          claimed.emplace(ikey, doc.id());
          ops.push_back(KvOp{Cf::kIdempotency, false, std::move(ikey), doc.id()});
        }
        ops.push_back(KvOp{Cf::kDocuments, false, doc.id(), doc.SerializeAsString()});
      }
      for (Enqueue& q : b.enqueue) {
        QueueEntry e{std::move(q.recipient), q.priority, ++last_sequence_, std::move(q.document_id),
                     std::move(q.sender)};
        ops.push_back(KvOp{Cf::kQueues, false, keys::Queue(e.recipient, e.priority, e.sequence),
                           keys::QueueValue(e.document_id, e.sender)});
        r.enqueued.push_back(std::move(e));
      }
      for (const QueueEntry& e : b.dequeue) {
        ops.push_back(KvOp{Cf::kQueues, true, keys::Queue(e.recipient, e.priority, e.sequence), {}});
      }
      for (v1::StatusEvent& ev : b.events) {
        ev.set_sequence(++last_sequence_);
        std::string bytes = ev.SerializeAsString();
        ops.push_back(KvOp{Cf::kEvents, false, keys::Sequenced(ev.document_id(), ev.sequence()), bytes});
        ops.push_back(
            KvOp{Cf::kSenderEvents, false, keys::Sequenced(ev.sender(), ev.sequence()), std::move(bytes)});
        r.events.push_back(std::move(ev));
      }
      sync = sync || b.sync;
      results.push_back(std::move(r));
    }
    if (!ops.empty()) {
      std::string seq;
      keys::AppendBigEndian64(&seq, last_sequence_);
      ops.push_back(KvOp{Cf::kMeta, false, std::string(keys::kLastSequence), std::move(seq)});
      absl::Status s = engine_->Commit(ops, sync);
      if (!s.ok()) {
        last_sequence_ = first_sequence;
        for (auto& r : results) {
          if (r.ok()) r = s;
        }
      }
    }
    for (size_t i = 0; i < group.size(); ++i) group[i].done(std::move(results[i]));
  }

  const std::unique_ptr<KvEngine> engine_;
  uint64_t last_sequence_;  // only the committer thread touches it
  const size_t max_group_size_;
  const size_t max_group_bytes_;

  absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  std::thread committer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> NewStoreOverEngine(std::unique_ptr<KvEngine> engine,
                                                          size_t max_group_size,
                                                          size_t max_group_bytes) {
  ASSIGN_OR_RETURN(std::optional<std::string> raw,
                   engine->Get(Cf::kMeta, keys::kLastSequence));
  uint64_t last = 0;
  if (raw) {
    if (raw->size() != 8) return absl::DataLossError("storage: malformed last sequence");
    last = keys::ReadBigEndian64(*raw);
  }
  return std::unique_ptr<Store>(
      std::make_unique<StoreImpl>(std::move(engine), last, max_group_size, max_group_bytes));
}

}  // namespace lienthong::storage
