// Signs digests in shared batches: one ECDSA signature over the Merkle root
// of whatever waits, at most one batch per interval (an idle signer signs at
// once; a batch never waits once `max_batch` digests do). The SDK signs the
// documents of all SendStreams of one Client with one (so the signatures to
// make and to check, by the broker, every broker on the way and every
// recipient, follow the client's documents per interval, not its number of
// streams); the broker signs the custody receipts of all its streams with
// one.
#ifndef LIENTHONG_SIGNING_BATCH_SIGNER_H_
#define LIENTHONG_SIGNING_BATCH_SIGNER_H_

#include <cstddef>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lienthong/v1/document.pb.h"

namespace lienthong::signing {

class BatchSigner {
 public:
  // Signs the digests of one batch, one signature each, in order.
  using SignFn = std::function<absl::StatusOr<std::vector<v1::Signature>>(
      const std::vector<std::string>& digests)>;
  // The signature (or why there is none), and whether this is the last
  // digest of its owner in the batch: an owner (a stream) can write all of
  // its documents of one batch at once.
  using Done =
      absl::AnyInvocable<void(absl::StatusOr<v1::Signature>, bool last)>;

  BatchSigner(SignFn sign, absl::Duration interval, size_t max_batch);
  // Signs what waits and runs its callbacks, then returns.
  ~BatchSigner();

  // Signs `digest` (a signing::DocumentDigest) for `owner` in an upcoming
  // batch, then runs `done` on the batcher's thread, without any lock of
  // the batcher held; callbacks of one batch run in the order of their Sign
  // calls, and before those of the next batch. `done` must not block for
  // long. Thread-safe; the thread starts with the first call.
  void Sign(const void* owner, std::string digest, Done done);

 private:
  struct Waiting {
    const void* owner;
    std::string digest;
    Done done;
  };
  void Loop();

  const SignFn sign_;
  const absl::Duration interval_;
  const size_t max_batch_;
  absl::Mutex mu_;
  std::vector<Waiting> waiting_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_batch_at_ = absl::InfinitePast();  // the loop's own
  std::thread thread_;
};

}  // namespace lienthong::signing

#endif  // LIENTHONG_SIGNING_BATCH_SIGNER_H_
