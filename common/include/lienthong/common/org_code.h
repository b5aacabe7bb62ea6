// Organization codes in the national format V1V2V3.Z1Z2.Y1Y2.X
// (e.g. "000.00.00.H49" a provincial people's committee, "000.00.23.H49" a
// unit under it, "000.01.23.H49" a unit under that).
//
//   if (absl::Status s = ValidateOrgCode(code); !s.ok()) return s;
//   TopLevelGroup("000.01.23.H49") == "H49"
//   IsUnder("000.01.23.H49", "000.00.00.H49") == true
//
// All functions are pure and thread-safe.
#ifndef LIENTHONG_COMMON_ORG_CODE_H_
#define LIENTHONG_COMMON_ORG_CODE_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace lienthong {

// OK for a well-formed code; INVALID_ARGUMENT saying what is wrong otherwise.
// `field` names the offending field in the message (e.g. "recipients[1]").
absl::Status ValidateOrgCode(absl::string_view code,
                             absl::string_view field = "org code");

// The top-level body group ("H49", "G22"). `code` must be valid.
absl::string_view TopLevelGroup(absl::string_view code);

// The code of the body directly above `code`, or "" for a top-level body
// ("000.00.00.H49"). `code` must be valid.
std::string ParentOrgCode(absl::string_view code);

// True when `code` equals `ancestor` or lies under it. Both must be valid.
bool IsUnder(absl::string_view code, absl::string_view ancestor);

}  // namespace lienthong

#endif  // LIENTHONG_COMMON_ORG_CODE_H_
