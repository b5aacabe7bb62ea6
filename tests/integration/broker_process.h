// Integration-test harness: a real `lienthongd` as a child process on
// loopback, with a dev PKI made once per test binary, and helpers to run
// other programs (the `lienthong` CLI) with bounded time.
//
//   BrokerProcess broker;                      // own temp data dir, port 0
//   ASSERT_OK(broker.Start());                 // waits for the ready line
//   ASSERT_OK_AND_ASSIGN(auto client,
//                        lienthong::Client::Open(broker.ClientOptionsFor(kH49)));
//   ...
//   broker.Kill9();                            // crash it
//   ASSERT_OK(broker.Start());                 // same port, same data dir
//
// Every wait is bounded; the destructor always stops the process. The child
// dies with the thread that started it (PR_SET_PDEATHSIG), so start brokers
// from the test's main thread.
#ifndef LIENTHONG_TESTS_INTEGRATION_BROKER_PROCESS_H_
#define LIENTHONG_TESTS_INTEGRATION_BROKER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "lienthong/client.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::integration {

// The organizations the broker's embedded default configuration serves.
inline constexpr char kG22[] = "000.00.00.G22";
inline constexpr char kH49[] = "000.00.00.H49";
inline constexpr char kH50[] = "000.00.00.H50";
inline constexpr char kUnitH49[] = "000.01.23.H49";

// Organizations of the federation tests (served by h51, h50 and central).
inline constexpr char kH51[] = "000.00.00.H51";
inline constexpr char kUnitH50[] = "000.01.23.H50";
inline constexpr char kUnitH51[] = "000.01.23.H51";
inline constexpr char kUnitG22[] = "000.00.01.G22";

// What the dev PKI issues: a broker certificate for each of kDevPkiBrokers
// (brokers/<name>.{pem,key}) and an organization certificate for each of
// kDevPkiOrgs (orgs/<code>.{pem,key}).
inline constexpr const char* kDevPkiBrokers[] = {"central", "h49", "h50",
                                                 "h51"};
inline constexpr const char* kDevPkiOrgs[] = {kG22, kUnitG22, kH49, kUnitH49,
                                              kH50, kUnitH50, kH51, kUnitH51};

// The dev PKI (deploy/pki/make-dev-pki.sh --test-extras, with the brokers and
// organizations above and the persons operator and auditor), made on first
// use in a temp directory that lives until the test binary exits. Holds
// ca.pem, brokers/<name>.{pem,key}, orgs/<code>.{pem,key}, persons/, bad/.
absl::StatusOr<std::string> DevPkiDir();

// Reads a whole file; NOT_FOUND naming it when it cannot be read.
absl::StatusOr<std::string> ReadFile(const std::string& path);
absl::Status WriteFile(const std::string& path, const std::string& content);

// Signs `doc` as the SDK would, with the dev PKI's key of the organization
// `key_of` (orgs/<code>.{pem,key}), or of `certificate` / `key` relative to
// the dev PKI directory when given: for raw sends that bypass the SDK.
absl::Status SignAs(const std::string& key_of, v1::Document* doc);
absl::Status SignWith(const std::string& certificate, const std::string& key,
                      v1::Document* doc);

// A mutual-TLS channel to `endpoint` that bypasses the SDK, trusting the
// dev PKI's ca.pem and presenting `identity` (a path in the dev PKI without
// extension, e.g. "orgs/000.00.00.H49" or "bad/expired-org": its .pem and
// .key), or no client certificate when `identity` is empty. `args`: the
// channel's arguments (e.g. a small fixed HTTP/2 window).
std::shared_ptr<grpc::Channel> RawChannel(
    const std::string& endpoint, const std::string& identity,
    const grpc::ChannelArguments& args = grpc::ChannelArguments());

// A port on 127.0.0.1 that nothing listened on a moment ago.
absl::StatusOr<int> PickFreePort();

struct BrokerOptions {
  // 0: the broker picks a port (read from its ready line).
  int port = 0;
  // Empty: a fresh temp directory owned by the BrokerProcess.
  std::string data_dir;
  // Non-empty: written to a file and passed as --config (the harness still
  // passes --pki, --listen and --data-dir, which override it).
  std::string config_yaml;
  // Extra environment for the broker ("NAME=value"), e.g. GRPC_TRACE=...
  std::vector<std::string> env;
  // How long Start waits for the ready line.
  absl::Duration start_timeout = absl::Seconds(20);
};

class BrokerProcess {
 public:
  explicit BrokerProcess(BrokerOptions options = {});
  ~BrokerProcess();  // Stop()
  BrokerProcess(const BrokerProcess&) = delete;
  BrokerProcess& operator=(const BrokerProcess&) = delete;

  // Starts the process and waits for "lienthongd listening on HOST:PORT".
  // After the first start the same port and data dir are reused, so Start
  // after Stop or Kill9 is a restart. On failure the process is gone and the
  // status carries its stderr.
  absl::Status Start();
  // SIGTERM, wait up to 10 s, then SIGKILL. OK when it exited with status 0
  // after SIGTERM; otherwise says how it ended. No-op when not running.
  absl::Status Stop();
  // SIGKILL, reaped at once: a crash.
  void Kill9();
  // Still alive (reaps it if it exited on its own).
  bool running();

  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  // The bulk path's port (attachments.bulk_listen), from the line the
  // broker prints before its ready line; 0 without one.
  int bulk_port() const { return bulk_port_; }
  // "127.0.0.1:PORT"
  std::string endpoint() const;
  const std::string& data_dir() const { return data_dir_; }
  // Everything the broker logged on stderr so far, over all its starts.
  std::string stderr_text() const;
  // Client options for `org` (orgs/<org>.pem/.key, ca.pem) against this
  // broker, with timeouts suited to tests.
  ClientOptions ClientOptionsFor(const std::string& org) const;

 private:
  BrokerOptions options_;
  std::unique_ptr<testing_util::TempDir> own_dir_;  // logs, config, data
  std::string pki_dir_;
  std::string data_dir_;
  std::string config_path_;
  std::string stderr_path_;
  pid_t pid_ = -1;
  int port_ = 0;
  int bulk_port_ = 0;
  int starts_ = 0;
};

// The outcome of a program run by RunProgram.
struct ProgramResult {
  int exit_code = -1;  // -1 when killed by a signal (see signal)
  int signal = 0;
  bool timed_out = false;
  std::string stdout_text;
  std::string stderr_text;
};

// Runs argv[0] (a path) with the given arguments and extra environment
// ("NAME=value"), stdin from /dev/null, and waits up to `timeout` (then
// SIGKILL and timed_out). Errors only when it cannot be started.
absl::StatusOr<ProgramResult> RunProgram(
    const std::vector<std::string>& argv, absl::Duration timeout,
    const std::vector<std::string>& env = {});

}  // namespace lienthong::integration

#endif  // LIENTHONG_TESTS_INTEGRATION_BROKER_PROCESS_H_
