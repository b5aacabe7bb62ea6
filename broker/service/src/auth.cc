#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "lienthong/broker/service.h"

namespace lienthong::broker {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::StatusOr<Principal> AuthenticatedPrincipal(
    const grpc::AuthContext& auth, absl::string_view trust_domain) {
  if (!auth.IsPeerAuthenticated()) {
    return absl::UnauthenticatedError("no verified client certificate");
  }
  std::vector<grpc::string_ref> uris =
      auth.FindPropertyValues(GRPC_PEER_URI_PROPERTY_NAME);
  if (uris.empty()) {
    return absl::UnauthenticatedError(
        "client certificate has no URI SAN; a Liên Thông identity "
        "spiffe://<trust-domain>/<org|broker|person>/<name> is required");
  }
  if (uris.size() > 1) {
    return absl::UnauthenticatedError(
        absl::StrCat("client certificate has ", uris.size(),
                     " URI SANs; exactly one is allowed"));
  }
  absl::StatusOr<Principal> p =
      ParseSpiffeId(absl::string_view(uris[0].data(), uris[0].size()));
  if (!p.ok()) return absl::UnauthenticatedError(p.status().message());
  if (p->trust_domain != trust_domain) {
    return absl::UnauthenticatedError(
        absl::StrCat("client certificate belongs to trust domain \"",
                     p->trust_domain, "\", not \"", trust_domain, "\""));
  }
  return p;
}

}  // namespace lienthong::broker
