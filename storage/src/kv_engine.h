// The ordered key-value engine under the store: RocksDB in production, sorted
// maps in tests. Both see the same keys (keys.h), so one store implementation
// (store_impl.cc) with group commit serves both.
#ifndef LIENTHONG_STORAGE_SRC_KV_ENGINE_H_
#define LIENTHONG_STORAGE_SRC_KV_ENGINE_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lienthong/storage/store.h"

namespace lienthong::storage {

enum class Cf {
  kMeta = 0,
  kDocuments,
  kIdempotency,
  kQueues,
  kEvents,
  kSenderEvents,
  kAudit  // the audit chain: written only by the committer, never erased
};
inline constexpr int kCfCount = 7;

// Views into strings the caller keeps alive until Commit returns.
struct KvOp {
  Cf cf;
  bool erase = false;
  absl::string_view key;
  absl::string_view value;
};

class KvEngine {
 public:
  virtual ~KvEngine() = default;
  // Reads see only what a Sync has made visible: nothing that could still be
  // lost in a crash. nullopt when absent. Thread-safe.
  virtual absl::StatusOr<std::optional<std::string>> Get(
      Cf cf, absl::string_view key) = 0;
  // Sees every commit, synced or not: for the committer's own checks.
  virtual absl::StatusOr<std::optional<std::string>> GetLatest(
      Cf cf, absl::string_view key) = 0;
  // Applies `ops` atomically, not yet durable nor visible to Get and Scan
  // (see Sync). Called from one thread at a time.
  virtual absl::Status Commit(const std::vector<KvOp>& ops,
                              size_t bytes_hint) = 0;
  // Makes every commit that returned before this call visible to Get and
  // Scan, durable first (one WAL sync) when `durable`. Without `durable`
  // (writes that asked for no sync) the read view moves only if `may_show`,
  // asked once what would become visible is fixed, says that nothing in it
  // still wants a sync; otherwise those writes show with the next sync.
  // May run concurrently with Commit.
  virtual absl::Status Sync(bool durable,
                            const std::function<bool()>& may_show) = 0;
  absl::Status Sync(bool durable) {
    return Sync(durable, [] { return true; });
  }
  // Visits keys >= start that begin with `prefix`, in order, while `fn`
  // returns true. Thread-safe.
  virtual absl::Status Scan(
      Cf cf, absl::string_view start, absl::string_view prefix,
      const std::function<bool(absl::string_view key, absl::string_view value)>&
          fn) = 0;
  // Bytes on disk (table files) and in memory (memtables). Thread-safe.
  virtual std::pair<uint64_t, uint64_t> ApproximateSizes() = 0;
};

absl::StatusOr<std::unique_ptr<KvEngine>> OpenRocksDbEngine(
    const RocksDbOptions& options);
std::unique_ptr<KvEngine> NewMemoryEngine();

// The store over an engine; takes ownership.
absl::StatusOr<std::unique_ptr<Store>> NewStoreOverEngine(
    std::unique_ptr<KvEngine> engine, size_t max_group_size,
    size_t max_group_bytes, const EncryptionOptions& encryption);

}  // namespace lienthong::storage

#endif  // LIENTHONG_STORAGE_SRC_KV_ENGINE_H_
