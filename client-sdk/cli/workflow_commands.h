// Regulation workflows on the command line: recalling a sent document (the
// recipient answers with `lienthong status DOC_ID agreed|refused`), and
// recording and listing conversions of documents to paper.
#ifndef LIENTHONG_CLIENT_SDK_CLI_WORKFLOW_COMMANDS_H_
#define LIENTHONG_CLIENT_SDK_CLI_WORKFLOW_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client-sdk/cli/commands.h"
#include "lienthong/admin_client.h"
#include "lienthong/client.h"

namespace lienthong::cli {

struct RecallFlags {
  std::string document_id;      // the document recalled
  std::vector<std::string> to;  // its recipients asked; empty: all of them
  std::string subject;          // default "Thu hồi văn bản <id>"
  std::string reason;           // the recall's body
};

// `lienthong recall DOC_ID [--to ORG]... [--reason TEXT]`: sends a RECALL
// of a document this organization sent.
absl::Status RunRecall(Client& client, const RecallFlags& flags,
                       const OutputFlags& output);

struct PaperConvertFlags {
  std::string document_id;
  std::string reason;
  std::string by;  // the official who printed it
};

// `lienthong paper-convert DOC_ID --reason TEXT [--by NAME]`.
absl::Status RunPaperConvert(Client& client, const PaperConvertFlags& flags,
                             const OutputFlags& output);
// `lienthong paper-conversions [--limit N]`: this organization's.
absl::Status RunPaperConversions(Client& client, uint32_t limit,
                                 const OutputFlags& output);
// `lienthong admin paper-conversions ORG [--limit N]`: operators, auditors.
absl::Status RunAdminPaperConversions(AdminClient& admin,
                                      const std::string& org, uint32_t limit,
                                      const OutputFlags& output);

}  // namespace lienthong::cli

#endif  // LIENTHONG_CLIENT_SDK_CLI_WORKFLOW_COMMANDS_H_
