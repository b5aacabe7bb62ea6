#include "broker/service/src/receipt_batcher.h"

#include <utility>

#include "absl/time/clock.h"

namespace lienthong::broker {

ReceiptBatcher::ReceiptBatcher(std::shared_ptr<const signing::Signer> signer,
                               absl::Duration interval, size_t max_batch)
    : signer_(std::move(signer)),
      batcher_(
          [this](const std::vector<std::string>& digests) {
            return signer_->SignBatch(digests, absl::Now());
          },
          interval, max_batch) {}

ReceiptBatcher::~ReceiptBatcher() = default;

void ReceiptBatcher::Sign(v1::CustodyReceipt* receipt,
                          absl::AnyInvocable<void(absl::Status)> done) {
  batcher_.Sign(this, signing::ReceiptDigest(*receipt),
                [receipt, done = std::move(done)](
                    absl::StatusOr<v1::Signature> signature, bool) mutable {
                  if (!signature.ok()) return done(signature.status());
                  *receipt->mutable_signature() = *std::move(signature);
                  done(absl::OkStatus());
                });
}

}  // namespace lienthong::broker
