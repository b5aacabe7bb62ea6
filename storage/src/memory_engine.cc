#include <map>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "storage/src/kv_engine.h"

namespace lienthong::storage {
namespace {

class MemoryEngine : public KvEngine {
 public:
  absl::StatusOr<std::optional<std::string>> Get(
      Cf cf, absl::string_view key) override {
    absl::ReaderMutexLock lock(&mu_);
    const auto& m = maps_[static_cast<int>(cf)];
    auto it = m.find(std::string(key));
    if (it == m.end()) return std::nullopt;
    return it->second;
  }

  absl::StatusOr<std::optional<std::string>> GetLatest(
      Cf cf, absl::string_view key) override {
    return Get(cf, key);
  }

  absl::Status Commit(const std::vector<KvOp>& ops,
                      size_t bytes_hint) override {
    absl::MutexLock lock(&mu_);
    for (const KvOp& op : ops) {
      auto& m = maps_[static_cast<int>(op.cf)];
      if (op.erase) {
        m.erase(std::string(op.key));
      } else {
        m[std::string(op.key)] = std::string(op.value);
      }
    }
    return absl::OkStatus();
  }

  absl::Status Scan(Cf cf, absl::string_view start, absl::string_view prefix,
                    const std::function<bool(absl::string_view,
                                             absl::string_view)>& fn) override {
    // Copy out under the lock so `fn` may call back into the engine.
    std::vector<std::pair<std::string, std::string>> rows;
    {
      absl::ReaderMutexLock lock(&mu_);
      const auto& m = maps_[static_cast<int>(cf)];
      for (auto it = m.lower_bound(std::string(start)); it != m.end(); ++it) {
        if (absl::string_view(it->first).substr(0, prefix.size()) != prefix)
          break;
        rows.emplace_back(it->first, it->second);
      }
    }
    for (const auto& [k, v] : rows) {
      if (!fn(k, v)) break;
    }
    return absl::OkStatus();
  }

  absl::Status Sync(bool, const std::function<bool()>&) override {
    return absl::OkStatus();
  }

  std::pair<uint64_t, uint64_t> ApproximateSizes() override {
    absl::MutexLock lock(&mu_);
    uint64_t bytes = 0;
    for (const auto& m : maps_)
      for (const auto& [k, v] : m) bytes += k.size() + v.size();
    return {0, bytes};
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::string> maps_[kCfCount] ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<KvEngine> NewMemoryEngine() {
  return std::make_unique<MemoryEngine>();
}

std::unique_ptr<Store> NewMemoryStore() {
  auto store = NewStoreOverEngine(NewMemoryEngine(), 4096, 32 << 20, {});
  return std::move(store).value();  // cannot fail on an empty memory engine
}

absl::StatusOr<std::unique_ptr<Store>> NewMemoryStore(
    const EncryptionOptions& encryption) {
  return NewStoreOverEngine(NewMemoryEngine(), 4096, 32 << 20, encryption);
}

}  // namespace lienthong::storage
