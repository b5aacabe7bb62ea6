#include "lienthong/common/identity.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "lienthong/common/org_code.h"

namespace lienthong {
namespace {

constexpr absl::string_view kScheme = "spiffe://";

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

}  // namespace

absl::StatusOr<Principal> ParseSpiffeId(absl::string_view uri) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", uri, "\" is not a Liên Thông identity: ", why));
  };
  if (!absl::StartsWith(uri, kScheme)) return bad("scheme must be spiffe://");
  std::vector<absl::string_view> parts =
      absl::StrSplit(uri.substr(kScheme.size()), '/');
  if (parts.size() != 3) {
    return bad("expected spiffe://<trust-domain>/<org|broker|person>/<name>");
  }
  Principal p;
  p.trust_domain = std::string(parts[0]);
  if (p.trust_domain.empty()) return bad("empty trust domain");
  for (char c : p.trust_domain) {
    if (!IsNameChar(c)) return bad("bad character in trust domain");
  }
  if (parts[1] == "org") {
    p.kind = Principal::Kind::kOrg;
  } else if (parts[1] == "broker") {
    p.kind = Principal::Kind::kBroker;
  } else if (parts[1] == "person") {
    p.kind = Principal::Kind::kPerson;
  } else {
    return bad("kind must be org, broker or person");
  }
  if (parts[2].empty()) return bad("empty name");
  for (char c : parts[2]) {
    if (!IsNameChar(c)) return bad("bad character in name");
  }
  p.name = std::string(parts[2]);
  if (p.kind == Principal::Kind::kOrg) {
    if (absl::Status s = ValidateOrgCode(p.name, "org identity"); !s.ok()) {
      return bad(s.message());
    }
  }
  p.spiffe_id = std::string(uri);
  return p;
}

absl::string_view KindName(Principal::Kind kind) {
  switch (kind) {
    case Principal::Kind::kOrg:
      return "org";
    case Principal::Kind::kBroker:
      return "broker";
    case Principal::Kind::kPerson:
      return "person";
  }
  return "unknown";
}

std::string SpiffeId(absl::string_view trust_domain, Principal::Kind kind,
                     absl::string_view name) {
  return absl::StrCat(kScheme, trust_domain, "/", KindName(kind), "/", name);
}

}  // namespace lienthong
