// `lienthong admin ...`: what an operator asks a broker about itself, with a
// person certificate (operator or auditor): who it is (info), its peer
// brokers with link state and backlogs (peers), and the federation directory
// (directory), organizations' queues (queues), one document's route and
// history (document), the log level (log-level). Tables by default, --json
// for scripts.
#ifndef LIENTHONG_CLIENT_SDK_CLI_ADMIN_COMMANDS_H_
#define LIENTHONG_CLIENT_SDK_CLI_ADMIN_COMMANDS_H_

#include <string>

#include "absl/status/status.h"
#include "client-sdk/cli/commands.h"
#include "lienthong/admin_client.h"

namespace lienthong::cli {

absl::Status RunAdminInfo(AdminClient& admin, const OutputFlags& output);
absl::Status RunAdminPeers(AdminClient& admin, const OutputFlags& output);
// `org`: only this organization; empty for all.
absl::Status RunAdminDirectory(AdminClient& admin, const std::string& org,
                               const OutputFlags& output);
absl::Status RunAdminQueues(AdminClient& admin, const OutputFlags& output);
absl::Status RunAdminDocument(AdminClient& admin, const std::string& id,
                              const OutputFlags& output);
// `level` empty: show the level (GetBrokerInfo); else set it.
// Asks the broker to verify its audit log; DATA_LOSS naming the first
// problem when it finds one.
absl::Status RunAdminAuditVerify(AdminClient& admin, const OutputFlags& output);
// Writes the whole audit log (AuditExport as JSON) to `out`.
absl::Status RunAdminAuditExport(AdminClient& admin, const std::string& out,
                                 const OutputFlags& output);
// Offline: checks an export with only the CA file: the chain, every
// checkpoint's signature and that its certificate chains to the CA.
// DATA_LOSS naming the first problem; INVALID_ARGUMENT for an unreadable
// file.
absl::Status RunAuditVerifyExport(const std::string& file,
                                  const std::string& ca_file,
                                  const OutputFlags& output);
absl::Status RunAdminRotateStorageKeys(AdminClient& admin,
                                       const OutputFlags& output);
absl::Status RunAdminLogLevel(AdminClient& admin, const std::string& level,
                              const OutputFlags& output);

}  // namespace lienthong::cli

#endif  // LIENTHONG_CLIENT_SDK_CLI_ADMIN_COMMANDS_H_
