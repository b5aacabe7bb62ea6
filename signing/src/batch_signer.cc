#include "lienthong/signing/batch_signer.h"

#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/time/clock.h"
#include "lienthong/common/thread_name.h"

namespace lienthong::signing {

BatchSigner::BatchSigner(SignFn sign, absl::Duration interval, size_t max_batch)
    : sign_(std::move(sign)),
      interval_(interval),
      max_batch_(max_batch == 0 ? 1 : max_batch) {}

BatchSigner::~BatchSigner() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void BatchSigner::Sign(const void* owner, std::string digest, Done done) {
  absl::MutexLock lock(&mu_);
  waiting_.push_back(Waiting{owner, std::move(digest), std::move(done)});
  if (!started_) {
    started_ = true;
    thread_ = std::thread([this] {
      NameThisThread("lt-signer");
      Loop();
    });
  }
}

void BatchSigner::Loop() {
  for (;;) {
    std::vector<Waiting> batch;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !waiting_.empty();
      };
      mu_.Await(absl::Condition(&has_work));
      if (waiting_.empty()) return;  // stopping, nothing left
      // The first document of a batch waits for others until the interval
      // since the last batch has passed (not at all on an idle client).
      auto full = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || waiting_.size() >= max_batch_;
      };
      mu_.AwaitWithDeadline(absl::Condition(&full), last_batch_at_ + interval_);
      if (waiting_.size() <= max_batch_) {
        batch.swap(waiting_);
      } else {
        batch.assign(std::make_move_iterator(waiting_.begin()),
                     std::make_move_iterator(waiting_.begin() + max_batch_));
        waiting_.erase(waiting_.begin(), waiting_.begin() + max_batch_);
      }
    }
    last_batch_at_ = absl::Now();
    std::vector<std::string> digests;
    digests.reserve(batch.size());
    for (Waiting& w : batch) digests.push_back(std::move(w.digest));
    absl::StatusOr<std::vector<v1::Signature>> signatures = sign_(digests);
    // Each owner's last document of the batch.
    absl::flat_hash_map<const void*, size_t> last;
    for (size_t i = 0; i < batch.size(); ++i) last[batch[i].owner] = i;
    for (size_t i = 0; i < batch.size(); ++i) {
      const bool is_last = last[batch[i].owner] == i;
      if (!signatures.ok()) {
        batch[i].done(signatures.status(), is_last);
      } else {
        batch[i].done(std::move((*signatures)[i]), is_last);
      }
    }
  }
}

}  // namespace lienthong::signing
