#include "lienthong/broker/approval_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "lienthong/broker/service.h"
#include "lienthong/common/ids.h"

namespace lienthong::broker {

ApprovalServiceImpl::ApprovalServiceImpl(Exchange* exchange,
                                         std::string trust_domain,
                                         std::vector<std::string> readers,
                                         AuditLog* audit)
    : exchange_(exchange),
      trust_domain_(std::move(trust_domain)),
      readers_(readers.begin(), readers.end()),
      audit_(audit) {}

void ApprovalServiceImpl::Audit(const Principal& caller, absl::string_view peer,
                                absl::string_view method,
                                const std::string& document_id,
                                const absl::Status& outcome,
                                absl::string_view detail) {
  if (audit_ == nullptr) return;
  v1::AuditEntry e;
  e.set_kind(v1::AUDIT_KIND_APPROVAL);
  e.set_actor(caller.spiffe_id);
  e.set_peer(std::string(peer));
  e.set_action(absl::StrCat("ApprovalService/", method));
  // A refusal of one who may decide belongs to the document's evidence; one
  // of a caller who may not (or of a document it cannot see) does not, or
  // anyone could fill a document's evidence with refusals.
  // (Malformed decisions are checked before who decides, so they stay out
  // too.)
  const bool evidence =
      IsDocumentId(document_id) && !absl::IsPermissionDenied(outcome) &&
      !absl::IsNotFound(outcome) && !absl::IsUnauthenticated(outcome) &&
      !absl::IsInvalidArgument(outcome);
  if (evidence) e.set_document_id(document_id);
  e.set_outcome(absl::StatusCodeToString(outcome.code()));
  const absl::string_view text = outcome.ok() ? detail : outcome.message();
  e.set_detail(evidence || !IsDocumentId(document_id)
                   ? std::string(text)
                   : absl::StrCat("document ", document_id, ": ", text));
  audit_->Append(std::move(e));
}

grpc::ServerUnaryReactor* ApprovalServiceImpl::ListApprovals(
    grpc::CallbackServerContext* ctx, const v1::ListApprovalsRequest* request,
    v1::ListApprovalsResponse* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::StatusOr<Principal> caller =
      AuthenticateCaller(ctx->auth_context().get(), trust_domain_, ctx->peer(),
                         "ApprovalService/ListApprovals");
  if (!caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  const bool all = caller->kind == Principal::Kind::kPerson &&
                   readers_.contains(caller->spiffe_id);
  exchange_->ListApprovals(
      *caller, all, *request,
      [this, reactor, response, caller = *caller,
       peer = ctx->peer()](absl::StatusOr<v1::ListApprovalsResponse> r) {
        if (!r.ok()) {
          Audit(caller, peer, "ListApprovals", "", r.status());
          reactor->Finish(ToGrpcStatus(r.status()));
          return;
        }
        *response = *std::move(r);
        // Who looked at which held documents (personnel decisions among
        // them) is audited too.
        std::string ids;
        for (int i = 0; i < response->approvals_size() && i < 100; ++i) {
          absl::StrAppend(&ids, i ? ", " : "",
                          response->approvals(i).document_id());
        }
        Audit(caller, peer, "ListApprovals", "", absl::OkStatus(),
              absl::StrCat(response->approvals_size(), " held document(s)",
                           ids.empty() ? "" : ": ", ids,
                           response->approvals_size() > 100 ? ", …" : ""));
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

grpc::ServerUnaryReactor* ApprovalServiceImpl::DecideApproval(
    grpc::CallbackServerContext* ctx, const v1::DecideApprovalRequest* request,
    v1::DecideApprovalResponse* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::StatusOr<Principal> caller =
      AuthenticateCaller(ctx->auth_context().get(), trust_domain_, ctx->peer(),
                         "ApprovalService/DecideApproval");
  if (!caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  // A decision is recorded as status events (and audited with them); a
  // refused one is audited here.
  exchange_->DecideApproval(*caller, *request,
                            [this, reactor, response, caller = *caller,
                             peer = ctx->peer(), id = request->document_id()](
                                absl::StatusOr<v1::DecideApprovalResponse> r) {
                              if (!r.ok()) {
                                Audit(caller, peer, "DecideApproval", id,
                                      r.status());
                                reactor->Finish(ToGrpcStatus(r.status()));
                                return;
                              }
                              *response = *std::move(r);
                              reactor->Finish(grpc::Status::OK);
                            });
  return reactor;
}

}  // namespace lienthong::broker
