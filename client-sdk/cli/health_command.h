// `lienthong health [--service NAME]`: asks one broker whether it serves
// (grpc.health.v1.Health/Check over mutual TLS). Any certificate the broker's
// CA issued will do: an organization's, a person's or a broker's own, which is
// what a systemd timer or a Kubernetes exec probe has at hand. Prints SERVING
// or NOT_SERVING (or one JSON object with --json). Exit codes as the rest of
// the tool: 0 SERVING; 3 NOT_SERVING (the broker is stopping) or the check was
// refused (an unknown service: NOT_FOUND); 4 no answer in time (UNAVAILABLE,
// DEADLINE_EXCEEDED, which includes a failed TLS handshake); 2 usage.
#ifndef LIENTHONG_CLIENT_SDK_CLI_HEALTH_COMMAND_H_
#define LIENTHONG_CLIENT_SDK_CLI_HEALTH_COMMAND_H_

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client-sdk/cli/commands.h"

namespace lienthong::cli {

struct HealthFlags {
  // "" is the broker as a whole; the broker also knows
  // lienthong.v1.ExchangeService and lienthong.v1.AdminService.
  std::string service;
  // Overrides the name checked against the broker's certificate (default:
  // the host of the endpoint), e.g. when a probe dials 127.0.0.1 and the
  // certificate names only the service's DNS name.
  std::string server_name;
};

// Adds the `health` subcommand to `app`, its options bound to `flags`.
CLI::App* AddHealthCommand(CLI::App& app, HealthFlags& flags);

struct HealthTarget {
  std::string endpoint;  // host:port, exactly one
  std::string certificate_file;
  std::string private_key_file;
  std::string ca_file;
  std::string crl_directory;  // optional: OpenSSL hashed directory of CRLs
  absl::Duration timeout = absl::Seconds(10);  // the one attempt's deadline
};

// One Check, no retries. OK when SERVING; FAILED_PRECONDITION when the
// broker answered another status (printed all the same); the call's own
// status otherwise. Unusable certificate files: a usage error.
absl::Status RunHealth(const HealthTarget& target, const HealthFlags& flags,
                       const OutputFlags& output);

}  // namespace lienthong::cli

#endif  // LIENTHONG_CLIENT_SDK_CLI_HEALTH_COMMAND_H_
