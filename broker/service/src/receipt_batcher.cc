#include "broker/service/src/receipt_batcher.h"

#include <utility>

#include "absl/time/clock.h"

namespace lienthong::broker {

ReceiptBatcher::ReceiptBatcher(std::shared_ptr<const signing::Signer> signer,
                               absl::Duration interval, size_t max_batch)
    : signer_(std::move(signer)),
      interval_(interval),
      max_batch_(max_batch),
      thread_([this] { Loop(); }) {}

ReceiptBatcher::~ReceiptBatcher() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void ReceiptBatcher::Sign(v1::CustodyReceipt* receipt,
                          absl::AnyInvocable<void(absl::Status)> done) {
  absl::MutexLock lock(&mu_);
  waiting_.push_back({receipt, std::move(done)});
}

bool ReceiptBatcher::HasWorkLocked() const {
  return stopping_ || waiting_.size() >= max_batch_;
}

void ReceiptBatcher::Loop() {
  for (;;) {
    std::vector<Waiting> batch;
    {
      absl::MutexLock lock(&mu_);
      // Wait for a first receipt, then until the interval since the last
      // batch has passed (or a full batch, or the end).
      mu_.Await(absl::Condition(
          +[](ReceiptBatcher* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) {
            return b->stopping_ || !b->waiting_.empty();
          },
          this));
      if (!waiting_.empty()) {
        mu_.AwaitWithDeadline(
            absl::Condition(this, &ReceiptBatcher::HasWorkLocked),
            last_batch_at_ + interval_);
      }
      batch.swap(waiting_);
      if (batch.empty() && stopping_) return;
    }
    last_batch_at_ = absl::Now();
    std::vector<std::string> digests;
    digests.reserve(batch.size());
    for (const Waiting& w : batch)
      digests.push_back(signing::ReceiptDigest(*w.receipt));
    absl::StatusOr<std::vector<v1::Signature>> signatures =
        signer_->SignBatch(digests, absl::Now());
    for (size_t i = 0; i < batch.size(); ++i) {
      if (signatures.ok()) {
        *batch[i].receipt->mutable_signature() = std::move((*signatures)[i]);
      }
      batch[i].done(signatures.status());
    }
  }
}

}  // namespace lienthong::broker
