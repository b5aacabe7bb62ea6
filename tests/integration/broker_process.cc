#include "tests/integration/broker_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "lienthong/signing/signing.h"

#ifndef LIENTHONG_SOURCE_DIR
#error "LIENTHONG_SOURCE_DIR must be defined (tests/integration/CMakeLists.txt)"
#endif
#ifndef LIENTHONGD_PATH
#error "LIENTHONGD_PATH must be defined (tests/integration/CMakeLists.txt)"
#endif

extern char** environ;

namespace lienthong::integration {
namespace {

constexpr char kReadyPrefix[] = "lienthongd listening on ";
constexpr char kBulkPrefix[] = "lienthongd bulk path on ";
constexpr absl::Duration kStopGrace = absl::Seconds(10);
constexpr absl::Duration kReapTimeout = absl::Seconds(10);
constexpr size_t kStderrTail = 6000;

absl::Status ErrnoError(absl::string_view what) {
  return absl::ErrnoToStatus(errno, what);
}

// Waits until `pid` exits or `timeout` passes; its wait status, or nullopt
// when it is still running. Polls: bounded in time.
std::optional<int> WaitForExit(pid_t pid, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return 0;  // not our child any more
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status))
    return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return absl::StrCat("killed by signal ", WTERMSIG(status));
  return absl::StrCat("ended with wait status ", status);
}

// What a child gets: argv, environment (the parent's plus `extra_env`) and
// its three standard descriptors.
struct SpawnSpec {
  std::vector<std::string> argv;
  std::vector<std::string> extra_env;
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
};

// fork + execve. The child does only async-signal-safe calls: it dies with
// the thread that forked it, unblocks all signals, restores SIGPIPE, sets up
// its descriptors and execs. Every descriptor of ours is O_CLOEXEC.
absl::StatusOr<pid_t> Spawn(const SpawnSpec& spec) {
  std::vector<char*> argv;
  for (const std::string& a : spec.argv)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    envp.push_back(*e);
  for (const std::string& e : spec.extra_env)
    envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) return ErrnoError("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    if (dup2(spec.stdin_fd, 0) < 0 || dup2(spec.stdout_fd, 1) < 0 ||
        dup2(spec.stderr_fd, 2) < 0) {
      _exit(127);
    }
    execve(argv[0], argv.data(), envp.data());
    static const char kMsg[] = "exec failed\n";
    (void)!write(2, kMsg, sizeof kMsg - 1);
    _exit(127);
  }
  return pid;
}

int OpenOrDie(const char* path, int flags, mode_t mode = 0600) {
  return open(path, flags | O_CLOEXEC, mode);
}

std::string Tail(const std::string& text, size_t n) {
  if (text.size() <= n) return text;
  return absl::StrCat("[...]", text.substr(text.size() - n));
}

struct Pki {
  testing_util::TempDir dir;
  absl::Status status;
  std::string path;
};

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": cannot write"));
  return absl::OkStatus();
}

absl::Status SignWith(const std::string& certificate, const std::string& key,
                      v1::Document* doc) {
  absl::StatusOr<std::string> dir = DevPkiDir();
  if (!dir.ok()) return dir.status();
  absl::StatusOr<std::unique_ptr<signing::Signer>> signer =
      signing::Signer::FromFiles(absl::StrCat(*dir, "/", certificate),
                                 absl::StrCat(*dir, "/", key));
  if (!signer.ok()) return signer.status();
  absl::StatusOr<v1::Signature> signature =
      (*signer)->Sign(signing::DocumentDigest(*doc), absl::Now());
  if (!signature.ok()) return signature.status();
  *doc->mutable_signature() = *std::move(signature);
  return absl::OkStatus();
}

absl::Status SignAs(const std::string& key_of, v1::Document* doc) {
  return SignWith(absl::StrCat("orgs/", key_of, ".pem"),
                  absl::StrCat("orgs/", key_of, ".key"), doc);
}

std::shared_ptr<grpc::Channel> RawChannel(const std::string& endpoint,
                                          const std::string& identity,
                                          const grpc::ChannelArguments& args) {
  const std::string dir = DevPkiDir().value_or("");
  auto read = [&](const std::string& rel) {
    return ReadFile(absl::StrCat(dir, "/", rel)).value_or("");
  };
  std::shared_ptr<grpc::experimental::StaticDataCertificateProvider> provider;
  grpc::experimental::TlsChannelCredentialsOptions options;
  if (identity.empty()) {
    provider =
        std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
            read("ca.pem"));
  } else {
    provider =
        std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
            read("ca.pem"),
            std::vector<grpc::experimental::IdentityKeyCertPair>{
                {read(identity + ".key"), read(identity + ".pem")}});
    options.watch_identity_key_cert_pairs();
  }
  options.set_certificate_provider(provider);
  options.watch_root_certs();
  options.set_verify_server_certs(true);
  options.set_certificate_verifier(
      std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  return grpc::CreateCustomChannel(
      endpoint, grpc::experimental::TlsCredentials(options), args);
}

absl::StatusOr<std::string> DevPkiDir() {
  static Pki* const pki = [] {
    // Intentionally a function-local static destroyed at exit, so that the
    // directory is removed when the test binary ends.
    static Pki p;
    if (p.dir.path().empty()) {
      p.status =
          absl::InternalError("cannot make a temp directory for the PKI");
      return &p;
    }
    p.path = p.dir.path() + "/pki";
    std::string script =
        std::string(LIENTHONG_SOURCE_DIR) + "/deploy/pki/make-dev-pki.sh";
    std::vector<std::string> argv = {"/bin/bash", script, "--out", p.path,
                                     "--test-extras"};
    for (const char* broker : kDevPkiBrokers)
      argv.insert(argv.end(), {"--broker", broker});
    for (const char* org : kDevPkiOrgs) argv.insert(argv.end(), {"--org", org});
    for (const char* person : {"operator", "auditor", "approver"})
      argv.insert(argv.end(), {"--person", person});
    absl::StatusOr<ProgramResult> run = RunProgram(argv, absl::Seconds(90));
    if (!run.ok()) {
      p.status = run.status();
    } else if (run->exit_code != 0) {
      p.status = absl::InternalError(
          absl::StrCat(script, " failed (exit ", run->exit_code,
                       run->timed_out ? ", timed out" : "",
                       "): ", run->stderr_text, run->stdout_text));
    }
    return &p;
  }();
  if (!pki->status.ok()) return pki->status;
  return pki->path;
}

absl::StatusOr<int> PickFreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    absl::Status s = ErrnoError("bind 127.0.0.1:0");
    close(fd);
    return s;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

absl::StatusOr<ProgramResult> RunProgram(const std::vector<std::string>& argv,
                                         absl::Duration timeout,
                                         const std::vector<std::string>& env) {
  if (argv.empty()) return absl::InvalidArgumentError("argv: empty");
  testing_util::TempDir dir;
  if (dir.path().empty()) return absl::InternalError("no temp directory");
  const std::string out_path = dir.path() + "/stdout";
  const std::string err_path = dir.path() + "/stderr";
  int in = OpenOrDie("/dev/null", O_RDONLY);
  int out = OpenOrDie(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC);
  int err = OpenOrDie(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC);
  absl::StatusOr<pid_t> pid =
      absl::InternalError("cannot open the standard files");
  if (in >= 0 && out >= 0 && err >= 0) {
    pid = Spawn({argv, env, in, out, err});
  }
  if (in >= 0) close(in);
  if (out >= 0) close(out);
  if (err >= 0) close(err);
  if (!pid.ok()) return pid.status();

  ProgramResult result;
  std::optional<int> status = WaitForExit(*pid, timeout);
  if (!status.has_value()) {
    result.timed_out = true;
    kill(*pid, SIGKILL);
    status = WaitForExit(*pid, kReapTimeout);
  }
  int st = status.value_or(0);
  if (WIFEXITED(st)) result.exit_code = WEXITSTATUS(st);
  if (WIFSIGNALED(st)) result.signal = WTERMSIG(st);
  result.stdout_text = ReadFile(out_path).value_or("");
  result.stderr_text = ReadFile(err_path).value_or("");
  return result;
}

// ---- BrokerProcess
// -----------------------------------------------------------

BrokerProcess::BrokerProcess(BrokerOptions options)
    : options_(std::move(options)) {}

BrokerProcess::~BrokerProcess() {
  if (absl::Status s = Stop(); !s.ok()) {
    std::fprintf(stderr, "BrokerProcess: %s\n", s.ToString().c_str());
  }
}

std::string BrokerProcess::endpoint() const {
  return absl::StrCat("127.0.0.1:", port_);
}

std::string BrokerProcess::stderr_text() const {
  if (stderr_path_.empty()) return "";
  return ReadFile(stderr_path_).value_or("");
}

ClientOptions BrokerProcess::ClientOptionsFor(const std::string& org) const {
  ClientOptions o;
  o.endpoints = {endpoint()};
  o.certificate_file = absl::StrCat(pki_dir_, "/orgs/", org, ".pem");
  o.private_key_file = absl::StrCat(pki_dir_, "/orgs/", org, ".key");
  o.ca_file = absl::StrCat(pki_dir_, "/ca.pem");
  o.call_timeout = absl::Seconds(10);
  o.retry_budget = absl::Seconds(30);
  o.initial_backoff = absl::Milliseconds(50);
  o.max_backoff = absl::Seconds(1);
  return o;
}

absl::Status BrokerProcess::Start() {
  if (pid_ > 0)
    return absl::FailedPreconditionError("the broker is already running");
  if (starts_ == 0) {
    absl::StatusOr<std::string> pki = DevPkiDir();
    if (!pki.ok()) return pki.status();
    pki_dir_ = *pki;
    own_dir_ = std::make_unique<testing_util::TempDir>();
    if (own_dir_->path().empty())
      return absl::InternalError("no temp directory");
    data_dir_ = options_.data_dir.empty() ? own_dir_->path() + "/data"
                                          : options_.data_dir;
    stderr_path_ = own_dir_->path() + "/lienthongd.stderr";
    if (!options_.config_yaml.empty()) {
      config_path_ = own_dir_->path() + "/lienthongd.yaml";
      if (absl::Status s = WriteFile(config_path_, options_.config_yaml);
          !s.ok())
        return s;
    }
    port_ = options_.port;
  }
  ++starts_;

  std::vector<std::string> argv = {LIENTHONGD_PATH};
  if (!config_path_.empty())
    argv.insert(argv.end(), {"--config", config_path_});
  argv.insert(argv.end(),
              {"--pki", pki_dir_, "--listen", absl::StrCat("127.0.0.1:", port_),
               "--data-dir", data_dir_});

  int out_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoError("pipe2");
  int in = OpenOrDie("/dev/null", O_RDONLY);
  // Appended over restarts, so stderr_text() tells the whole story.
  int err = OpenOrDie(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND);
  absl::StatusOr<pid_t> pid =
      absl::InternalError("cannot open /dev/null or the stderr file");
  if (in >= 0 && err >= 0)
    pid = Spawn({argv, options_.env, in, out_pipe[1], err});
  close(out_pipe[1]);
  if (in >= 0) close(in);
  if (err >= 0) close(err);
  if (!pid.ok()) {
    close(out_pipe[0]);
    return pid.status();
  }
  pid_ = *pid;

  // Wait for the ready line, bounded.
  std::string out;
  std::string failure;
  const absl::Time deadline = absl::Now() + options_.start_timeout;
  while (true) {
    size_t nl = out.find('\n');
    if (nl != std::string::npos && absl::StartsWith(out, kBulkPrefix)) {
      // The bulk path's address comes first.
      const std::string line = out.substr(0, nl);
      out.erase(0, nl + 1);
      if (!absl::SimpleAtoi(line.substr(line.rfind(':') + 1), &bulk_port_)) {
        failure = absl::StrCat("unreadable bulk line: \"", line, "\"");
        break;
      }
      continue;
    }
    if (nl != std::string::npos) {
      std::string line = out.substr(0, nl);
      int port = 0;
      size_t colon = line.rfind(':');
      if (!absl::StartsWith(line, kReadyPrefix) || colon == std::string::npos ||
          !absl::SimpleAtoi(line.substr(colon + 1), &port) || port <= 0) {
        failure =
            absl::StrCat("unexpected first line on stdout: \"", line, "\"");
      } else if (port_ != 0 && port != port_) {
        failure = absl::StrCat("listening on port ", port,
                               ", not the requested ", port_);
      } else {
        port_ = port;
      }
      break;
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      failure = absl::StrCat("no \"", kReadyPrefix, "...\" line within ",
                             absl::FormatDuration(options_.start_timeout));
      break;
    }
    pollfd p{out_pipe[0], POLLIN, 0};
    int timeout_ms = static_cast<int>(
        std::min<int64_t>(absl::ToInt64Milliseconds(left), 100));
    int r = poll(&p, 1, std::max(timeout_ms, 1));
    if (r < 0 && errno != EINTR) {
      failure = absl::StrCat("poll: ", std::strerror(errno));
      break;
    }
    if (r > 0) {
      char buf[512];
      ssize_t n = read(out_pipe[0], buf, sizeof buf);
      if (n > 0) {
        out.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) {  // stdout closed: it is exiting
        std::optional<int> st = WaitForExit(pid_, absl::Seconds(5));
        failure = st ? DescribeWaitStatus(*st) : "closed stdout";
        if (st) pid_ = -1;
        break;
      }
    }
  }
  close(out_pipe[0]);
  if (failure.empty()) return absl::OkStatus();

  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    WaitForExit(pid_, kReapTimeout);
    pid_ = -1;
  }
  return absl::UnavailableError(absl::StrCat(
      "lienthongd (", absl::StrJoin(argv, " "), ") did not become ready: ",
      failure, "\n--- its stderr ---\n", Tail(stderr_text(), kStderrTail)));
}

bool BrokerProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    pid_ = -1;
    return false;
  }
  return true;
}

absl::Status BrokerProcess::Stop() {
  if (pid_ <= 0) return absl::OkStatus();
  const pid_t pid = pid_;
  pid_ = -1;
  if (kill(pid, SIGTERM) != 0 && errno != ESRCH)
    return ErrnoError("kill SIGTERM");
  std::optional<int> status = WaitForExit(pid, kStopGrace);
  if (!status.has_value()) {
    kill(pid, SIGKILL);
    WaitForExit(pid, kReapTimeout);
    return absl::DeadlineExceededError(absl::StrCat(
        "lienthongd did not stop within ", absl::FormatDuration(kStopGrace),
        " of SIGTERM and was killed\n--- its stderr ---\n",
        Tail(stderr_text(), kStderrTail)));
  }
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return absl::InternalError(
        absl::StrCat("lienthongd ", DescribeWaitStatus(*status),
                     " after SIGTERM\n--- its stderr ---\n",
                     Tail(stderr_text(), kStderrTail)));
  }
  return absl::OkStatus();
}

void BrokerProcess::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  WaitForExit(pid_, kReapTimeout);
  pid_ = -1;
}

}  // namespace lienthong::integration
