// Broker-assigned document ids: 26-character ULIDs (48-bit millisecond time,
// 80 random bits, Crockford base32), unique across brokers and sortable by
// time of acceptance.
#ifndef LIENTHONG_COMMON_IDS_H_
#define LIENTHONG_COMMON_IDS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"

namespace lienthong {

// Thread-safe.
std::string NewDocumentId(int64_t unix_millis);

// True for a string NewDocumentId could have produced.
bool IsDocumentId(absl::string_view id);

// A random 128-bit token (32 hex digits) for idempotency keys generated on
// the caller's behalf. Unique, not secret.
std::string RandomToken();

}  // namespace lienthong

#endif  // LIENTHONG_COMMON_IDS_H_
