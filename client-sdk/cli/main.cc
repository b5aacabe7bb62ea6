// lienthong: the command-line tool of Liên Thông, built on the client SDK.
// Sends and receives official documents, reports and follows their status.
// Run `lienthong --help` for usage, environment variables and exit codes.
#include <algorithm>
#include <atomic>
#include <csignal>
#include <exception>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client-sdk/cli/commands.h"
#include "client-sdk/cli/format.h"
#include "lienthong/client.h"

namespace lienthong::cli {
namespace {

std::atomic<bool> g_stop{false};

extern "C" void OnSignal(int) { g_stop.store(true); }

void InstallSignalHandlers() {
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

constexpr char kFooter[] = R"(Environment:
  LIENTHONG_ENDPOINT  broker address(es) host:port, comma-separated (--endpoint)
  LIENTHONG_CERT      this organization's certificate, PEM (--cert)
  LIENTHONG_KEY       its private key, PEM (--key)
  LIENTHONG_CA        the trust root, PEM (--ca)

Global options may come before or after the subcommand, except that in
`send` --key is the idempotency key: there give the private key before
`send`, or in LIENTHONG_KEY.

Exit codes:
  0  success
  1  any other error (a local file could not be written, an internal error)
  2  usage error (bad option or value, unusable local file or certificate)
  3  the broker refused: INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND,
     FAILED_PRECONDITION, RESOURCE_EXHAUSTED, UNAUTHENTICATED, ...
  4  unavailable or timed out: no broker answered in time (UNAVAILABLE,
     DEADLINE_EXCEEDED)
Errors are printed on stderr as `lienthong: <CODE>: <message>`.)";

struct GlobalFlags {
  std::vector<std::string> endpoints;
  std::string cert;
  std::string key;
  std::string ca;
  bool json = false;
  double timeout_seconds = 0;
};

template <typename Enum>
std::vector<std::string> Keys(const std::map<std::string, Enum>& names) {
  std::vector<std::string> keys;
  for (const auto& [name, value] : names) keys.push_back(name);
  return keys;
}

absl::Status CheckGlobals(const GlobalFlags& g) {
  auto missing = [](absl::string_view flag, absl::string_view env) {
    return UsageError(absl::InvalidArgumentError(
        absl::StrCat(flag, " (or ", env, ") is required")));
  };
  if (g.endpoints.empty()) return missing("--endpoint", "LIENTHONG_ENDPOINT");
  if (g.cert.empty()) return missing("--cert", "LIENTHONG_CERT");
  if (g.key.empty()) return missing("--key", "LIENTHONG_KEY");
  if (g.ca.empty()) return missing("--ca", "LIENTHONG_CA");
  if (g.timeout_seconds < 0) {
    return UsageError(
        absl::InvalidArgumentError("--timeout: must not be negative"));
  }
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  CLI::App app(
      "lienthong: send and receive official documents through a Liên Thông "
      "broker, report and follow their status.",
      "lienthong");
  app.footer(kFooter);
  app.require_subcommand(1);
  app.fallthrough();

  GlobalFlags g;
  app.add_option("--endpoint", g.endpoints,
                 "Broker address host:port; repeat for failover")
      ->envname("LIENTHONG_ENDPOINT")
      ->delimiter(',');
  app.add_option("--cert", g.cert, "Organization certificate (PEM)")
      ->envname("LIENTHONG_CERT");
  app.add_option("--key", g.key, "Private key of the certificate (PEM)")
      ->envname("LIENTHONG_KEY");
  app.add_option("--ca", g.ca, "Trust root (PEM)")->envname("LIENTHONG_CA");
  app.add_flag("--json", g.json, "Machine-readable JSON on stdout");
  app.add_option("--timeout", g.timeout_seconds,
                 "Give up after SECONDS (per call and in total); default: "
                 "10 s per call, retries for 60 s");

  // send
  SendFlags send;
  CLI::App* send_cmd = app.add_subcommand("send", "Send a document");
  send_cmd
      ->add_option("--to", send.to, "Recipient organization code (repeatable)")
      ->required();
  send_cmd->add_option("--subject", send.subject, "Subject (trích yếu)")
      ->required();
  send_cmd->add_option("--number", send.number, "Number (số)");
  send_cmd->add_option("--notation", send.notation, "Notation (ký hiệu)");
  send_cmd->add_option("--type", send.type, "Document type (loại văn bản)");
  send_cmd->add_option("--signer", send.signer, "Signer name");
  send_cmd->add_option("--signer-title", send.signer_title, "Signer's title");
  send_cmd->add_option("--issue-date", send.issue_date,
                       "Issue date YYYY-MM-DD");
  send_cmd->add_option("--urgency", send.urgency, "Urgency (độ khẩn)")
      ->check(CLI::IsMember(Keys(UrgencyNames())));
  send_cmd
      ->add_option("--classification", send.classification,
                   "Classification (độ mật)")
      ->check(CLI::IsMember(Keys(ClassificationNames())));
  send_cmd->add_option("--origin", send.origin, "Who produced it")
      ->check(CLI::IsMember(Keys(OriginNames())));
  send_cmd
      ->add_option("--decision", send.decision, "Kind of decision it carries")
      ->check(CLI::IsMember(Keys(DecisionNames())));
  send_cmd
      ->add_option("--business-type", send.business_type, "edXML business type")
      ->check(CLI::IsMember(Keys(BusinessTypeNames())));
  send_cmd->add_option("--refers-to", send.refers_to,
                       "Id of the document a recall/update/replace concerns");
  send_cmd->add_option("--key", send.idempotency_key,
                       "Idempotency key (default: a fresh random key)");
  send_cmd->add_option("--content-type", send.content_type,
                       "Content type of the body");
  send_cmd->add_option("--attach", send.attachments,
                       "Attach FILE inline (repeatable)");
  send_cmd->add_option("BODY_FILE", send.body_file, "Body file, - for stdin")
      ->required();

  // receive
  ReceiveFlags receive;
  CLI::App* receive_cmd = app.add_subcommand(
      "receive", "Take documents addressed to this organization");
  receive_cmd->footer(
      "Prints one line per document (id, sender, urgency, subject), or one\n"
      "JSON object per line with --json, and acknowledges each document once\n"
      "it is written (with --out) and printed. Without --out the bodies are\n"
      "not kept: use --out, or --json to get them in the output.");
  receive_cmd
      ->add_option("--max", receive.max,
                   "At most N documents (with --follow: N in flight)")
      ->capture_default_str();
  receive_cmd
      ->add_option("--wait", receive.wait_seconds,
                   "Wait up to SECONDS when none is ready (max 30)")
      ->capture_default_str();
  receive_cmd->add_option("--out", receive.out_dir,
                          "Write DIR/<id>.body and DIR/<id>.<attachment> "
                          "before acknowledging");
  receive_cmd->add_flag("--follow", receive.follow,
                        "Keep receiving until SIGINT/SIGTERM");

  // inbox
  uint32_t inbox_limit = 100;
  CLI::App* inbox_cmd =
      app.add_subcommand("inbox", "List what waits for this organization");
  inbox_cmd->add_option("--limit", inbox_limit, "At most N entries")
      ->capture_default_str();

  // status
  StatusFlags status;
  CLI::App* status_cmd = app.add_subcommand(
      "status", "Report a business status on a received document");
  status_cmd->add_option("DOC_ID", status.document_id, "Document id")
      ->required();
  status_cmd
      ->add_option("CODE", status.code,
                   "arrived|rejected|accepted|assigned|processing|completed|"
                   "recall-requested|agreed|refused, or 01..06, 13, 15, 16")
      ->required();
  status_cmd->add_option("--reason", status.reason,
                         "Why (required for rejected and refused)");

  // track
  TrackFlags track;
  CLI::App* track_cmd = app.add_subcommand(
      "track", "Show the delivery and business status of a document");
  track_cmd->add_option("DOC_ID", track.document_id, "Document id")->required();
  track_cmd->add_flag("--watch", track.watch,
                      "Then follow live events until Ctrl-C");

  // watch
  WatchFlags watch;
  CLI::App* watch_cmd = app.add_subcommand(
      "watch", "Print status events of what this organization sent");
  watch_cmd->add_option("--after", watch.after,
                        "Replay events after sequence SEQ first");
  watch_cmd->add_option("--document", watch.document_id,
                        "Only events of document ID");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    PrintError(absl::InvalidArgumentError(e.what()));
    std::cerr << "Run with --help for more information." << std::endl;
    return kExitUsage;
  }

  absl::Status checked = CheckGlobals(g);
  absl::StatusOr<v1::Document> document;
  if (checked.ok() && send_cmd->parsed()) {
    document = BuildDocument(send);
    checked = document.status();
  }
  if (!checked.ok()) {
    PrintError(checked);
    return ExitCodeFor(checked);
  }

  ClientOptions options;
  options.endpoints = g.endpoints;
  options.certificate_file = g.cert;
  options.private_key_file = g.key;
  options.ca_file = g.ca;
  if (g.timeout_seconds > 0) {
    options.call_timeout = absl::Seconds(g.timeout_seconds);
    options.retry_budget = absl::Seconds(g.timeout_seconds);
    options.max_backoff = std::min(options.max_backoff, options.retry_budget);
    options.initial_backoff =
        std::min(options.initial_backoff, options.max_backoff);
  }
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Open(options);
  if (!client.ok()) {
    // Bad options or certificate files given on the command line.
    absl::Status status = UsageError(client.status());
    PrintError(status);
    return ExitCodeFor(status);
  }

  InstallSignalHandlers();
  const OutputFlags output{g.json};
  absl::Status result;
  if (send_cmd->parsed()) {
    result = RunSend(**client, *document, output);
  } else if (receive_cmd->parsed()) {
    result = RunReceive(**client, receive, output, g_stop);
  } else if (inbox_cmd->parsed()) {
    result = RunInbox(**client, inbox_limit, output);
  } else if (status_cmd->parsed()) {
    result = RunStatus(**client, status, output);
  } else if (track_cmd->parsed()) {
    result = RunTrack(**client, track, output, g_stop);
  } else if (watch_cmd->parsed()) {
    result = RunWatch(**client, watch, output, g_stop);
  }
  if (!result.ok()) PrintError(result);
  return ExitCodeFor(result);
}

}  // namespace
}  // namespace lienthong::cli

int main(int argc, char** argv) {
  try {
    return lienthong::cli::Main(argc, argv);
  } catch (const std::exception& e) {  // CLI11 or the standard library
    lienthong::cli::PrintError(absl::InternalError(e.what()));
    return lienthong::cli::kExitOther;
  }
}
