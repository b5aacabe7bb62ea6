#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/version.h>
#include <rocksdb/write_batch.h>

#include <array>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "storage/src/kv_engine.h"

namespace lienthong::storage {
namespace {

const std::array<const char*, kCfCount> kCfNames = {
    "default", "documents",     "idempotency", "queues",
    "events",  "sender_events", "audit"};

// The one translation of RocksDB errors.
absl::Status FromRocksDb(const rocksdb::Status& s, absl::string_view context) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat("storage: ", context, ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain() ||
      s.IsShutdownInProgress()) {
    return absl::UnavailableError(msg);
  }
  if (s.IsIOError() && absl::StrContains(s.ToString(), "lock")) {
    return absl::UnavailableError(absl::StrCat(
        msg, " (is another lienthongd using this data directory?)"));
  }
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

class RocksDbEngine : public KvEngine {
 public:
  RocksDbEngine(std::unique_ptr<rocksdb::DB> db,
                std::vector<rocksdb::ColumnFamilyHandle*> cfs)
      : db_(std::move(db)), cfs_(std::move(cfs)) {}

  ~RocksDbEngine() override {
    {
      absl::MutexLock lock(&view_mu_);
      view_.reset();  // readers are gone: the store is being destroyed
    }
    rocksdb::FlushOptions fo;
    (void)db_->Flush(fo, cfs_);
    for (auto* h : cfs_) (void)db_->DestroyColumnFamilyHandle(h);
    (void)db_->Close();
  }

  absl::StatusOr<std::optional<std::string>> Get(
      Cf cf, absl::string_view key) override {
    std::shared_ptr<const View> view = CurrentView();
    rocksdb::ReadOptions ro;
    ro.snapshot = view ? view->snapshot : nullptr;
    return GetWith(ro, cf, key);
  }

  absl::StatusOr<std::optional<std::string>> GetLatest(
      Cf cf, absl::string_view key) override {
    return GetWith(rocksdb::ReadOptions(), cf, key);
  }

  absl::Status Commit(const std::vector<KvOp>& ops,
                      size_t bytes_hint) override {
    // One batch buffer reused across commits: a fresh multi-megabyte buffer
    // per group costs more in page faults than the copies themselves.
    rocksdb::WriteBatch& batch = batch_;
    batch.Clear();
    for (const KvOp& op : ops) {
      rocksdb::Slice key(op.key.data(), op.key.size());
      rocksdb::Status s =
          op.erase
              ? batch.Delete(handle(op.cf), key)
              : batch.Put(handle(op.cf), key,
                          rocksdb::Slice(op.value.data(), op.value.size()));
      if (!s.ok()) return FromRocksDb(s, "batch");
    }
    // Not synced here: Sync covers every commit so far with one WAL sync.
    return FromRocksDb(db_->Write(rocksdb::WriteOptions(), &batch), "write");
  }

  absl::Status Scan(Cf cf, absl::string_view start, absl::string_view prefix,
                    const std::function<bool(absl::string_view,
                                             absl::string_view)>& fn) override {
    std::shared_ptr<const View> view = CurrentView();
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;
    ro.snapshot = view ? view->snapshot : nullptr;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, handle(cf)));
    for (it->Seek(rocksdb::Slice(start.data(), start.size())); it->Valid();
         it->Next()) {
      absl::string_view k(it->key().data(), it->key().size());
      if (k.substr(0, prefix.size()) != prefix) break;
      if (!fn(k, absl::string_view(it->value().data(), it->value().size())))
        break;
    }
    return FromRocksDb(it->status(), "scan");
  }

  std::pair<uint64_t, uint64_t> ApproximateSizes() override {
    uint64_t disk = 0, memory = 0;
    for (auto* h : cfs_) {
      uint64_t v = 0;
      if (db_->GetIntProperty(h, "rocksdb.total-sst-files-size", &v)) disk += v;
      if (db_->GetIntProperty(h, "rocksdb.cur-size-all-mem-tables", &v))
        memory += v;
    }
    return {disk, memory};
  }

  absl::Status Sync(bool durable,
                    const std::function<bool()>& may_show) override {
    // The snapshot is taken before the sync, so it holds only what the sync
    // covers; it becomes the read view once the sync succeeded.
    auto view = std::make_shared<const View>(db_.get(), db_->GetSnapshot());
    if (!durable && !may_show()) return absl::OkStatus();
    if (durable) {
      absl::Status s = FromRocksDb(db_->SyncWAL(), "sync WAL");
      if (!s.ok()) return s;
    }
    absl::MutexLock lock(&view_mu_);
    view_ = std::move(view);
    return absl::OkStatus();
  }

 private:
  // A snapshot of what is durable; released when the last reader drops it.
  struct View {
    View(rocksdb::DB* db, const rocksdb::Snapshot* s) : db(db), snapshot(s) {}
    ~View() { db->ReleaseSnapshot(snapshot); }
    rocksdb::DB* db;
    const rocksdb::Snapshot* snapshot;
  };

  std::shared_ptr<const View> CurrentView() {
    absl::MutexLock lock(&view_mu_);
    return view_;  // null before the first sync: all on disk is durable
  }

  absl::StatusOr<std::optional<std::string>> GetWith(
      const rocksdb::ReadOptions& ro, Cf cf, absl::string_view key) {
    std::string value;
    rocksdb::Status s = db_->Get(
        ro, handle(cf), rocksdb::Slice(key.data(), key.size()), &value);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) return FromRocksDb(s, "get");
    return value;
  }

  rocksdb::ColumnFamilyHandle* handle(Cf cf) {
    return cfs_[static_cast<int>(cf)];
  }

  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
  rocksdb::WriteBatch batch_;  // only Commit's caller thread touches it
  absl::Mutex view_mu_;
  std::shared_ptr<const View> view_ ABSL_GUARDED_BY(view_mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvEngine>> OpenRocksDbEngine(
    const RocksDbOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.bytes_per_sync = 1 << 20;
  // Column families that see few writes would otherwise keep old logs (and
  // a long replay at restart) alive indefinitely: flush them once the logs
  // pass this size.
  db_options.max_total_wal_size = 256 << 20;
  db_options.paranoid_checks = true;
  // Every sync takes a snapshot (the durable read view), so each file a
  // flush writes keeps its sequence numbers; once the snapshot goes, RocksDB
  // 7.8 rewrites every such file of the last level once more only to zero
  // them ("BottommostFiles" compactions: 40 % of the documents written to
  // SST files twice, and the events and audit families too). In 7.8, with
  // level compaction, allow_ingest_behind does exactly two things: sequence
  // numbers are never zeroed, and those rewrites stop (RocksDB PR 10767);
  // tombstones are dropped as before, and this store never ingests files.
  // Later releases give the option more meaning (a reserved last level,
  // tombstones kept for ingestion: RocksDB PRs 11489 and 13807), so it is
  // set for the 7.x line only.
#if ROCKSDB_MAJOR == 7
  db_options.allow_ingest_behind = true;
#endif
  // One committer thread writes; insert hints need non-concurrent inserts.
  db_options.allow_concurrent_memtable_write = false;

  std::shared_ptr<rocksdb::Cache> cache =
      rocksdb::NewLRUCache(options.block_cache_bytes);
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (int i = 0; i < kCfCount; ++i) {
    rocksdb::ColumnFamilyOptions cf_options;
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = cache;
    if (i == static_cast<int>(Cf::kDocuments) ||
        i == static_cast<int>(Cf::kIdempotency)) {
      table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    }
    cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    cf_options.compression = rocksdb::kNoCompression;
    // Small memtables for the small-key families keep skiplist inserts in
    // cache; documents get room to batch their flushes.
    cf_options.write_buffer_size =
        i == static_cast<int>(Cf::kDocuments) ? 64 << 20 : 8 << 20;
    // Queue keys (recipient, priority, sequence) and sender event keys
    // (sender, sequence) arrive in sequence order within their prefix:
    // insert hints make those memtable inserts nearly free.
    if (i == static_cast<int>(Cf::kQueues)) {
      cf_options.memtable_insert_with_hint_prefix_extractor.reset(
          rocksdb::NewFixedPrefixTransform(
              15));  // 13-char org code, 0x00, priority
    }
    if (i == static_cast<int>(Cf::kAudit)) {
      // Entries ('e' + big-endian index) are appended in index order.
      cf_options.memtable_insert_with_hint_prefix_extractor.reset(
          rocksdb::NewFixedPrefixTransform(1));
    }
    if (i == static_cast<int>(Cf::kSenderEvents)) {
      cf_options.memtable_insert_with_hint_prefix_extractor.reset(
          rocksdb::NewFixedPrefixTransform(14));  // 13-char org code, 0x00
    }
    // Documents (and their events and route records) are keyed by document
    // id, which starts with the time it was made: new keys land at the end,
    // next to the last insert, which the hint remembers.
    if (i == static_cast<int>(Cf::kDocuments) ||
        i == static_cast<int>(Cf::kEvents) ||
        i == static_cast<int>(Cf::kMeta)) {
      cf_options.memtable_insert_with_hint_prefix_extractor.reset(
          rocksdb::NewFixedPrefixTransform(0));
    }
    descriptors.emplace_back(kCfNames[i], cf_options);
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s =
      rocksdb::DB::Open(rocksdb::DBOptions(db_options), options.path,
                        descriptors, &handles, &raw);
  if (!s.ok()) return FromRocksDb(s, absl::StrCat("open ", options.path));
  return std::make_unique<RocksDbEngine>(std::unique_ptr<rocksdb::DB>(raw),
                                         std::move(handles));
}

absl::StatusOr<std::unique_ptr<Store>> OpenRocksDbStore(
    const RocksDbOptions& options) {
  auto engine = OpenRocksDbEngine(options);
  if (!engine.ok()) return engine.status();
  return NewStoreOverEngine(std::move(engine).value(), options.max_group_size,
                            options.max_group_bytes, options.encryption);
}

}  // namespace lienthong::storage
