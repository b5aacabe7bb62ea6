#include "client-sdk/src/backoff.h"

#include <algorithm>

namespace lienthong::client_internal {

absl::Duration FullJitter(absl::BitGen& gen, absl::Duration initial,
                          absl::Duration max, int attempt) {
  absl::Duration ceiling = initial;
  for (int i = 0; i < attempt && ceiling < max; ++i) ceiling *= 2;
  ceiling = std::min(ceiling, max);
  const int64_t ceiling_us = absl::ToInt64Microseconds(ceiling);
  if (ceiling_us <= 0) return absl::ZeroDuration();
  return absl::Microseconds(
      absl::Uniform<int64_t>(absl::IntervalClosed, gen, 0, ceiling_us));
}

absl::Duration Backoff::Next() {
  absl::Duration delay = FullJitter(gen_, initial_, max_, attempt_);
  if (attempt_ < 62) ++attempt_;
  return delay;
}

}  // namespace lienthong::client_internal
