// Signatures and evidence on the command line: a send's custody receipt
// saved to a file, a document's evidence exported (by a party to it, or by
// an operator or auditor), and both checked offline by `lienthong verify`
// with nothing but the CA.
#ifndef LIENTHONG_CLIENT_SDK_CLI_EVIDENCE_COMMANDS_H_
#define LIENTHONG_CLIENT_SDK_CLI_EVIDENCE_COMMANDS_H_

#include <string>

#include "absl/status/status.h"
#include "client-sdk/cli/commands.h"
#include "google/protobuf/message.h"
#include "lienthong/admin_client.h"
#include "lienthong/client.h"

namespace lienthong::cli {

// `message` as indented JSON (proto field names) in `path`, synced.
absl::Status WriteJsonFile(const google::protobuf::Message& message,
                           const std::string& path, absl::string_view flag);

// `lienthong evidence ID --out FILE`: as the sender or a recipient.
absl::Status RunEvidence(Client& client, const std::string& document_id,
                         const std::string& out, const OutputFlags& output);
// `lienthong admin evidence ID --out FILE`: operators and auditors.
absl::Status RunAdminEvidence(AdminClient& admin,
                              const std::string& document_id,
                              const std::string& out,
                              const OutputFlags& output);
// `lienthong verify FILE --ca CA`: an evidence export or a custody receipt.
// DATA_LOSS naming the first problem when it does not verify.
absl::Status RunVerify(const std::string& file, const std::string& ca_file,
                       const OutputFlags& output);

}  // namespace lienthong::cli

#endif  // LIENTHONG_CLIENT_SDK_CLI_EVIDENCE_COMMANDS_H_
