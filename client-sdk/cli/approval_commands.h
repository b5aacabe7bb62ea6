// `lienthong approvals ...`: what an approver types, with a person
// certificate holding an approver role: the documents held for their
// approval (list), and their decision on one (approve / reject). Operators
// and auditors may list every held document. Tables by default, --json for
// scripts.
#ifndef LIENTHONG_CLIENT_SDK_CLI_APPROVAL_COMMANDS_H_
#define LIENTHONG_CLIENT_SDK_CLI_APPROVAL_COMMANDS_H_

#include <string>

#include "absl/status/status.h"
#include "client-sdk/cli/commands.h"
#include "lienthong/admin_client.h"

namespace lienthong::cli {

// `org`: only documents of this sender; empty for all.
absl::Status RunApprovalsList(AdminClient& admin, const std::string& org,
                              const OutputFlags& output);

struct DecideFlags {
  std::string document_id;
  bool approve = true;
  // The content hash the approver reviewed (from the list).
  std::string content_sha256;
  std::string comment;
};
absl::Status RunApprovalsDecide(AdminClient& admin, const DecideFlags& flags,
                                const OutputFlags& output);

}  // namespace lienthong::cli

#endif  // LIENTHONG_CLIENT_SDK_CLI_APPROVAL_COMMANDS_H_
