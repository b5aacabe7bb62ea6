#include "lienthong/storage/store.h"

#include <openssl/sha.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace lienthong::storage {

std::string AuditChainHash(absl::string_view previous, uint64_t index,
                           absl::string_view entry_bytes) {
  std::string message;
  message.reserve(previous.size() + 8 + entry_bytes.size());
  message.append(previous.data(), previous.size());
  for (int i = 7; i >= 0; --i)
    message.push_back(static_cast<char>((index >> (8 * i)) & 0xff));
  message.append(entry_bytes.data(), entry_bytes.size());
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(message.data()),
         message.size(), reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

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
