// Exponential backoff with full jitter: the n-th delay is uniform in
// [0, min(max, initial * 2^n)]. Internal to the SDK.
//
//   Backoff backoff(options.initial_backoff, options.max_backoff);
//   while (...) { absl::SleepFor(backoff.Next()); }
//
// Not thread-safe: each user owns its Backoff (or guards it).
#ifndef LIENTHONG_CLIENT_SDK_SRC_BACKOFF_H_
#define LIENTHONG_CLIENT_SDK_SRC_BACKOFF_H_

#include "absl/random/random.h"
#include "absl/time/time.h"

namespace lienthong::client_internal {

// The delay before retry number `attempt` (0 for the first retry).
absl::Duration FullJitter(absl::BitGen& gen, absl::Duration initial,
                          absl::Duration max, int attempt);

class Backoff {
 public:
  Backoff(absl::Duration initial, absl::Duration max)
      : initial_(initial), max_(max) {}

  // The next delay; each call doubles the ceiling up to `max`.
  absl::Duration Next();
  // Back to the first delay, after a success.
  void Reset() { attempt_ = 0; }

 private:
  const absl::Duration initial_;
  const absl::Duration max_;
  int attempt_ = 0;
  absl::BitGen gen_;
};

}  // namespace lienthong::client_internal

#endif  // LIENTHONG_CLIENT_SDK_SRC_BACKOFF_H_
