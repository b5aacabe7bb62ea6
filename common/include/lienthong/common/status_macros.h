// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status, which the installed
// Abseil (20220623) does not provide.
//
//   absl::StatusOr<Document> Load(...);
//   absl::Status Use() {
//     ASSIGN_OR_RETURN(Document doc, Load(...));
//     RETURN_IF_ERROR(Check(doc));
//     return absl::OkStatus();
//   }
#ifndef LIENTHONG_COMMON_STATUS_MACROS_H_
#define LIENTHONG_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LIENTHONG_CONCAT_INNER_(a, b) a##b
#define LIENTHONG_CONCAT_(a, b) LIENTHONG_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                              \
  do {                                                     \
    ::absl::Status lienthong_status_ = (expr);             \
    if (!lienthong_status_.ok()) return lienthong_status_; \
  } while (0)

#define LIENTHONG_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                     \
  if (!tmp.ok()) return std::move(tmp).status();         \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr)                                        \
  LIENTHONG_ASSIGN_OR_RETURN_IMPL_(LIENTHONG_CONCAT_(statusor_, __LINE__), \
                                   lhs, expr)

#endif  // LIENTHONG_COMMON_STATUS_MACROS_H_
