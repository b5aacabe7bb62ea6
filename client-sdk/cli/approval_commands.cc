#include "client-sdk/cli/approval_commands.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client-sdk/cli/format.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::cli {
namespace {

std::string Required(
    const google::protobuf::RepeatedPtrField<v1::Approver>& required) {
  std::vector<std::string> parts;
  for (const v1::Approver& a : required)
    parts.push_back(absl::StrCat(a.role(), "@", a.org()));
  return absl::StrJoin(parts, ", ");
}

}  // namespace

absl::Status RunApprovalsList(AdminClient& admin, const std::string& org,
                              const OutputFlags& output) {
  v1::ListApprovalsRequest request;
  request.set_org(org);
  request.set_limit(1000);
  ASSIGN_OR_RETURN(v1::ListApprovalsResponse list,
                   admin.ListApprovals(request));
  if (output.json) {
    std::cout << ToJson(list, /*with_defaults=*/true) << std::endl;
    return absl::OkStatus();
  }
  if (list.approvals().empty()) {
    std::cout << "nothing waits for your approval" << std::endl;
    return absl::OkStatus();
  }
  for (const v1::PendingApproval& p : list.approvals()) {
    const v1::DocumentMetadata& m = p.metadata();
    std::cout << p.document_id() << "  from " << p.sender() << " to "
              << absl::StrJoin(p.recipients(), ", ") << "\n"
              << "  " << m.document_type()
              << (m.number().empty() ? "" : absl::StrCat(" số ", m.number()))
              << (m.notation().empty() ? "" : absl::StrCat("/", m.notation()))
              << ": " << m.subject() << "\n"
              << "  origin " << v1::Origin_Name(m.origin()) << ", decision "
              << v1::DecisionCategory_Name(m.decision_category()) << ", signer "
              << (m.signer().empty() ? "-" : m.signer()) << "\n"
              << "  content sha256 " << p.content_sha256() << "\n"
              << "  needs " << Required(p.required()) << " by "
              << FormatTimestamp(p.expires_at()) << "\n"
              << "  why: " << p.reason() << "\n";
    if (!p.yours().empty()) {
      // What a decision of this person gives, and signs.
      std::cout << "  you decide as " << Required(p.yours()) << "\n";
    }
    for (const v1::Approval& a : p.approvals()) {
      std::cout << "  approved by " << a.approver() << " as " << a.role() << "@"
                << a.org() << " at " << FormatTimestamp(a.at()) << "\n";
    }
    for (const v1::Attachment& a : p.attachments()) {
      std::cout << "  attachment " << a.name() << " (" << a.size()
                << " bytes, sha256 " << a.sha256() << ")\n";
    }
  }
  std::cout << std::flush;
  return absl::OkStatus();
}

absl::Status RunApprovalsDecide(AdminClient& admin, const DecideFlags& flags,
                                const OutputFlags& output) {
  v1::DecideApprovalRequest request;
  request.set_document_id(flags.document_id);
  request.set_decision(flags.approve ? v1::APPROVAL_DECISION_APPROVE
                                     : v1::APPROVAL_DECISION_REJECT);
  request.set_content_sha256(flags.content_sha256);
  request.set_comment(flags.comment);
  ASSIGN_OR_RETURN(v1::DecideApprovalResponse decided,
                   admin.DecideApproval(request));
  if (output.json) {
    std::cout << ToJson(decided, /*with_defaults=*/true) << std::endl;
    return absl::OkStatus();
  }
  if (!flags.approve) {
    std::cout << flags.document_id
              << ": rejected; every copy is denied and the sender is told"
              << std::endl;
  } else if (decided.released()) {
    std::cout << flags.document_id
              << ": approved; released for delivery with your approval"
              << std::endl;
  } else {
    std::cout << flags.document_id << ": approved; still needs "
              << Required(decided.still_required()) << std::endl;
  }
  return absl::OkStatus();
}

}  // namespace lienthong::cli
