#include <atomic>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "lienthong/broker/service.h"

namespace lienthong::broker {
namespace {
std::atomic<AuditLog*> authentication_audit{nullptr};
}  // namespace

void SetAuthenticationAudit(AuditLog* log) {
  authentication_audit.store(log, std::memory_order_release);
}

void AuditAuthenticationFailure(absl::string_view peer,
                                absl::string_view method,
                                const absl::Status& why) {
  AuditLog* log = authentication_audit.load(std::memory_order_acquire);
  if (log == nullptr) return;
  v1::AuditEntry e;
  e.set_kind(v1::AUDIT_KIND_AUTH_FAILED);
  e.set_actor("unauthenticated");
  e.set_peer(std::string(peer));
  e.set_action(std::string(method));
  e.set_outcome(absl::StatusCodeToString(why.code()));
  e.set_detail(std::string(why.message()));
  log->Append(std::move(e));
}

absl::StatusOr<Principal> AuthenticateCaller(const grpc::AuthContext* auth,
                                             absl::string_view trust_domain,
                                             absl::string_view peer,
                                             absl::string_view method) {
  absl::StatusOr<Principal> p =
      auth ? AuthenticatedPrincipal(*auth, trust_domain)
           : absl::UnauthenticatedError("no transport security");
  if (!p.ok()) AuditAuthenticationFailure(peer, method, p.status());
  return p;
}

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
  std::vector<std::string> uris;
  for (const grpc::string_ref& uri :
       auth.FindPropertyValues(GRPC_PEER_URI_PROPERTY_NAME)) {
    uris.emplace_back(uri.data(), uri.size());
  }
  return PrincipalOfCertificateUris(uris, trust_domain);
}

absl::StatusOr<Principal> PrincipalOfCertificateUris(
    const std::vector<std::string>& uris, absl::string_view trust_domain) {
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
  absl::StatusOr<Principal> p = ParseSpiffeId(uris[0]);
  if (!p.ok()) return absl::UnauthenticatedError(p.status().message());
  if (p->trust_domain != trust_domain) {
    return absl::UnauthenticatedError(
        absl::StrCat("client certificate belongs to trust domain \"",
                     p->trust_domain, "\", not \"", trust_domain, "\""));
  }
  return p;
}

}  // namespace lienthong::broker
