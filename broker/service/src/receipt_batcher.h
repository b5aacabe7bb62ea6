// Signs custody receipts in batches across every stream of the broker: one
// ECDSA signature over the Merkle root of whatever receipts arrived since
// the last batch, at most one batch per interval. An idle broker signs at
// once; a busy one signs a few hundred batches a second, whatever its
// load. Signing each receipt (or each response message) on its own costs
// more CPU than storing the document.
#ifndef LIENTHONG_BROKER_SERVICE_SRC_RECEIPT_BATCHER_H_
#define LIENTHONG_BROKER_SERVICE_SRC_RECEIPT_BATCHER_H_

#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "lienthong/signing/batch_signer.h"
#include "lienthong/signing/signing.h"
#include "lienthong/v1/document.pb.h"

namespace lienthong::broker {

class ReceiptBatcher {
 public:
  // Signs with `signer`; a receipt waits until `interval` has passed since
  // the last batch (or `max_batch` wait).
  ReceiptBatcher(std::shared_ptr<const signing::Signer> signer,
                 absl::Duration interval, size_t max_batch = 4096);
  // Signs what waits, runs its callbacks, then returns.
  ~ReceiptBatcher();

  // Fills `receipt`'s signature in an upcoming batch, then runs `done` with
  // the outcome on the batcher's thread. `receipt` must stay valid until
  // then; `done` must not block. Thread-safe.
  void Sign(v1::CustodyReceipt* receipt,
            absl::AnyInvocable<void(absl::Status)> done);

 private:
  const std::shared_ptr<const signing::Signer> signer_;
  signing::BatchSigner batcher_;  // after signer_, which it uses
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_SERVICE_SRC_RECEIPT_BATCHER_H_
