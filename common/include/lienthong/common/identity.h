// Who a peer is, from the single SPIFFE URI SAN of its certificate:
//   spiffe://<trust-domain>/org/<org-code>     an agency system
//   spiffe://<trust-domain>/broker/<name>      a broker
//   spiffe://<trust-domain>/person/<id>        an operator, auditor, approver
//
//   ASSIGN_OR_RETURN(Principal p,
//   ParseSpiffeId("spiffe://lt.gov.vn/org/000.00.00.H49")); p.kind ==
//   Principal::Kind::kOrg; p.name == "000.00.00.H49"
#ifndef LIENTHONG_COMMON_IDENTITY_H_
#define LIENTHONG_COMMON_IDENTITY_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lienthong {

struct Principal {
  enum class Kind { kOrg, kBroker, kPerson };
  Kind kind = Kind::kOrg;
  std::string trust_domain;
  std::string name;  // org code, broker name or person id
  std::string spiffe_id;

  bool is_org() const { return kind == Kind::kOrg; }
};

// INVALID_ARGUMENT naming the defect when `uri` is not one of the three forms
// above (an org name must be a valid organization code).
absl::StatusOr<Principal> ParseSpiffeId(absl::string_view uri);

std::string SpiffeId(absl::string_view trust_domain, Principal::Kind kind,
                     absl::string_view name);

absl::string_view KindName(Principal::Kind kind);

}  // namespace lienthong

#endif  // LIENTHONG_COMMON_IDENTITY_H_
