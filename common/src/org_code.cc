#include "lienthong/common/org_code.h"

#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace lienthong {
namespace {

constexpr size_t kCodeLength = 13;  // "000.00.00.H49"

bool AllDigits(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool AllZero(absl::string_view s) { return s.find_first_not_of('0') == s.npos; }

}  // namespace

absl::Status ValidateOrgCode(absl::string_view code, absl::string_view field) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": \"", code, "\" is not an organization code (", why,
        "); expected V1V2V3.Z1Z2.Y1Y2.X such as 000.00.00.H49"));
  };
  if (code.empty()) return bad("empty");
  if (code.size() != kCodeLength) return bad("wrong length");
  if (code[3] != '.' || code[6] != '.' || code[9] != '.') {
    return bad("groups must be separated by dots");
  }
  absl::string_view level4 = code.substr(0, 3);
  absl::string_view level3 = code.substr(4, 2);
  absl::string_view level2 = code.substr(7, 2);
  absl::string_view level1 = code.substr(10, 3);
  if (!AllDigits(level4) || !AllDigits(level3) || !AllDigits(level2)) {
    return bad("the first three groups must be digits");
  }
  if (!absl::ascii_isupper(static_cast<unsigned char>(level1[0])) ||
      !AllDigits(level1.substr(1))) {
    return bad("the last group must be an upper-case letter and two digits");
  }
  if (!AllZero(level3) && AllZero(level2)) {
    return bad("level-3 group is set under an empty level-2 group");
  }
  if (!AllZero(level4) && AllZero(level3)) {
    return bad("level-4 group is set under an empty level-3 group");
  }
  return absl::OkStatus();
}

absl::string_view TopLevelGroup(absl::string_view code) {
  return code.substr(10, 3);
}

std::string ParentOrgCode(absl::string_view code) {
  std::string parent(code);
  if (!AllZero(code.substr(0, 3))) {
    parent.replace(0, 3, "000");
  } else if (!AllZero(code.substr(4, 2))) {
    parent.replace(4, 2, "00");
  } else if (!AllZero(code.substr(7, 2))) {
    parent.replace(7, 2, "00");
  } else {
    return "";
  }
  return parent;
}

bool IsUnder(absl::string_view code, absl::string_view ancestor) {
  std::string current(code);
  while (!current.empty()) {
    if (current == ancestor) return true;
    current = ParentOrgCode(current);
  }
  return false;
}

}  // namespace lienthong
