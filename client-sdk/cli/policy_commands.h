// `lienthong policy ...`: the policy engine for operators. Offline, with the
// engine linked in (no broker, no certificate): validate, test, explain.
// Online, through lienthong.v1.AdminService with a person certificate: get,
// explain against the serving policy, apply, dry-run, decisions. Each
// returns the status to report (see ExitCodeFor): a policy that does not
// compile is a usage error (exit 2) offline, and the broker's
// INVALID_ARGUMENT (exit 3) online; failing test cases exit 1.
#ifndef LIENTHONG_CLIENT_SDK_CLI_POLICY_COMMANDS_H_
#define LIENTHONG_CLIENT_SDK_CLI_POLICY_COMMANDS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "client-sdk/cli/commands.h"
#include "lienthong/admin_client.h"

namespace lienthong::cli {

struct PolicyFlags {
  // validate, apply, dry-run: the policy file; test: the test file.
  std::string file;
  // test: overrides the test file's `policy:`; explain: decide offline with
  // this file instead of asking the broker.
  std::string policy_file;
  // explain: the flow as a YAML mapping in the test-file syntax.
  std::string flow;
  // explain: most near misses shown.
  uint32_t near_misses = 5;
  // dry-run: most recent decisions re-decided (0: all the broker keeps);
  // decisions: most shown.
  uint32_t limit = 0;
  // get: print only the policy text.
  bool source_only = false;
};

// Offline.
absl::Status RunPolicyValidate(const PolicyFlags& flags,
                               const OutputFlags& output);
absl::Status RunPolicyTest(const PolicyFlags& flags, const OutputFlags& output);
absl::Status RunPolicyExplainOffline(const PolicyFlags& flags,
                                     const OutputFlags& output);

// Online.
absl::Status RunPolicyExplain(AdminClient& admin, const PolicyFlags& flags,
                              const OutputFlags& output);
absl::Status RunPolicyGet(AdminClient& admin, const PolicyFlags& flags,
                          const OutputFlags& output);
absl::Status RunPolicyApply(AdminClient& admin, const PolicyFlags& flags,
                            const OutputFlags& output);
absl::Status RunPolicyDryRun(AdminClient& admin, const PolicyFlags& flags,
                             const OutputFlags& output);
absl::Status RunPolicyDecisions(AdminClient& admin, const PolicyFlags& flags,
                                const OutputFlags& output);

}  // namespace lienthong::cli

#endif  // LIENTHONG_CLIENT_SDK_CLI_POLICY_COMMANDS_H_
