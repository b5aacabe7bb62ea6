#include "lienthong/storage/store.h"

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace lienthong::storage {

int PriorityOf(v1::Urgency urgency) {
  switch (urgency) {
    case v1::URGENCY_EXPRESS:
      return 0;
    case v1::URGENCY_VERY_URGENT:
      return 1;
    case v1::URGENCY_URGENT:
      return 2;
    default:
      return 3;
  }
}

absl::StatusOr<WriteResult> Store::WriteSync(WriteBatch batch) {
  absl::Notification done;
  absl::StatusOr<WriteResult> result;
  Write(std::move(batch), [&](absl::StatusOr<WriteResult> r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

absl::Status RocksDbOptions::Validate() const {
  if (path.empty()) return absl::InvalidArgumentError("storage.path: empty");
  if (max_group_size == 0) {
    return absl::InvalidArgumentError("storage.max_group_size: must be > 0");
  }
  if (max_group_bytes < (1 << 20)) {
    return absl::InvalidArgumentError(
        "storage.max_group_bytes: must be at least 1 MiB");
  }
  return absl::OkStatus();
}

}  // namespace lienthong::storage
