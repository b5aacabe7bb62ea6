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
#include "client-sdk/cli/admin_commands.h"
#include "client-sdk/cli/approval_commands.h"
#include "client-sdk/cli/attachment_commands.h"
#include "client-sdk/cli/commands.h"
#include "client-sdk/cli/evidence_commands.h"
#include "client-sdk/cli/format.h"
#include "client-sdk/cli/health_command.h"
#include "client-sdk/cli/paper_commands.h"
#include "client-sdk/cli/policy_commands.h"
#include "client-sdk/cli/workflow_commands.h"
#include "lienthong/admin_client.h"
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
  LIENTHONG_CERT      this organization's certificate, PEM (--cert); for the
                      online `policy` commands a person's (operator, auditor)
  LIENTHONG_KEY       its private key, PEM (--key)
  LIENTHONG_CA        the trust root, PEM (--ca)
  LIENTHONG_CRL_DIR   hashed directory of CRLs, optional (--crl-dir)
  LIENTHONG_BULK_PORT the brokers' bulk attachment port, optional (--bulk-port)

Global options may come before or after the subcommand, except that in
`send` --key is the idempotency key: there give the private key before
`send`, or in LIENTHONG_KEY.

Exit codes:
  0  success
  1  any other error (a local file could not be written, an internal error);
     `policy test`: a test case failed
  2  usage error (bad option or value, unusable local file or certificate);
     `policy validate|test|explain --policy`: the policy does not compile
  3  the broker refused: INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND,
     FAILED_PRECONDITION, RESOURCE_EXHAUSTED, UNAUTHENTICATED, ...;
     `health`: the broker answered NOT_SERVING
  4  unavailable or timed out: no broker answered in time (UNAVAILABLE,
     DEADLINE_EXCEEDED)
Errors are printed on stderr as `lienthong: <CODE>: <message>`.)";

struct GlobalFlags {
  std::vector<std::string> endpoints;
  std::string cert;
  std::string key;
  std::string ca;
  std::string enc_cert;
  std::string enc_key;
  std::string crl_dir;
  int bulk_port = 0;
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
  app.add_option("--cert", g.cert,
                 "Certificate (PEM): the organization's; a person's for the "
                 "online policy commands")
      ->envname("LIENTHONG_CERT");
  app.add_option("--key", g.key, "Private key of the certificate (PEM)")
      ->envname("LIENTHONG_KEY");
  app.add_option("--ca", g.ca, "Trust root (PEM)")->envname("LIENTHONG_CA");
  app.add_option("--enc-cert", g.enc_cert,
                 "The organization's end-to-end encryption certificate (PEM): "
                 "to open sealed documents, and for `keys publish`")
      ->envname("LIENTHONG_ENC_CERT");
  app.add_option("--enc-key", g.enc_key,
                 "Private key of the encryption certificate (PEM)")
      ->envname("LIENTHONG_ENC_KEY");
  app.add_option("--crl-dir", g.crl_dir,
                 "OpenSSL hashed directory of CRLs (<hash>.r0, ...): the "
                 "broker's certificate and this one are checked against it")
      ->envname("LIENTHONG_CRL_DIR");
  app.add_option("--bulk-port", g.bulk_port,
                 "Upload and download attachments over the brokers' bulk path "
                 "at this port (their attachments.bulk_listen); 0: through "
                 "gRPC")
      ->envname("LIENTHONG_BULK_PORT")
      ->check(CLI::Range(0, 65535));
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
  send_cmd
      ->add_option("--attach", send.attachments,
                   "Attach FILE (repeatable): streamed to the broker in "
                   "verified chunks before the document, resumable, any size "
                   "up to the broker's attachments.max_bytes")
      ->check(CLI::ExistingFile);
  send_cmd
      ->add_option("--attach-inline", send.inline_attachments,
                   "Attach FILE inside the document itself (repeatable; "
                   "small files, and documents sealed end-to-end)")
      ->check(CLI::ExistingFile);
  send_cmd->add_option("BODY_FILE", send.body_file, "Body file, - for stdin")
      ->required();
  std::string receipt_file;
  send_cmd->add_option("--receipt", receipt_file,
                       "Write the broker's signed custody receipt here (JSON); "
                       "check it with `lienthong verify`");
  send_cmd->add_option(
      "--redigitize", send.redigitize,
      "This document re-digitizes paper-register entry ENTRY_ID (PR-...) of "
      "this organization: the broker settles the entry as it stores it");
  send_cmd->add_flag(
      "--hash-first", send.hash_first,
      "Hash each --attach file whole before sending it: a file this "
      "organization uploaded to the broker within its attachments.usable_hours "
      "is then not sent again (worth the extra read on a slow link)");
  bool seal = false;
  send_cmd->add_flag("--seal", seal,
                     "Seal end-to-end for the recipients whatever the "
                     "classification (confidential and secret always are)");

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
                   "arrived|rejected|accepted|assigned|processing|completed, "
                   "or agreed|refused answering a recall, update or replace "
                   "of DOC_ID (01..06, 15, 16); 13 is recorded by the broker "
                   "when the sender sends the request")
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

  // policy
  CLI::App* policy_cmd = app.add_subcommand(
      "policy",
      "Validate, test and explain policies (offline); get, apply and dry-run "
      "the broker's policy, list its decisions (as an operator or auditor)");
  policy_cmd->require_subcommand(1);
  policy_cmd->footer(
      "validate, test and explain --policy run offline: no broker, no\n"
      "certificate. The others call the broker's AdminService with a person\n"
      "certificate (--cert/--key): auditors may read, only operators apply.\n"
      "A flow is a YAML mapping as in test files, e.g.\n"
      "  --flow '{sender: 000.01.23.H49, recipient: 000.00.00.G22, "
      "origin: ai,\n"
      "          decision_category: personnel}'\n"
      "See broker/policy/README.md for the policy language.");
  PolicyFlags policy_validate, policy_test, policy_explain, policy_get,
      policy_apply, policy_dry_run, policy_decisions;
  policy_decisions.limit = 100;
  CLI::App* policy_validate_cmd = policy_cmd->add_subcommand(
      "validate", "Compile a policy file and print its version (offline)");
  policy_validate_cmd->add_option("FILE", policy_validate.file, "Policy file")
      ->required();
  CLI::App* policy_test_cmd = policy_cmd->add_subcommand(
      "test", "Run a policy test file; exit 0 only if every case passes");
  policy_test_cmd->add_option("TESTFILE", policy_test.file, "Test file")
      ->required();
  policy_test_cmd->add_option("--policy", policy_test.policy_file,
                              "Test this policy file instead of the one the "
                              "test file names");
  CLI::App* policy_explain_cmd = policy_cmd->add_subcommand(
      "explain",
      "Decide one flow and say why: deciding rules, obligations, near misses");
  policy_explain_cmd->add_option("--flow", policy_explain.flow, "The flow")
      ->required();
  policy_explain_cmd->add_option(
      "--policy", policy_explain.policy_file,
      "Decide offline with this policy file (default: ask the broker about "
      "its serving policy)");
  policy_explain_cmd
      ->add_option("--near-misses", policy_explain.near_misses,
                   "Show at most N rules that nearly matched (1..100)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  CLI::App* policy_get_cmd =
      policy_cmd->add_subcommand("get", "Show the broker's serving policy");
  policy_get_cmd->add_flag("--source", policy_get.source_only,
                           "Print only the policy text");
  CLI::App* policy_apply_cmd = policy_cmd->add_subcommand(
      "apply", "Replace the broker's policy (operators only)");
  policy_apply_cmd->add_option("FILE", policy_apply.file, "Policy file")
      ->required();
  CLI::App* policy_dry_run_cmd = policy_cmd->add_subcommand(
      "dry-run",
      "Re-decide the broker's recent decisions with a candidate policy and "
      "list those that would change");
  policy_dry_run_cmd->add_option("FILE", policy_dry_run.file, "Candidate")
      ->required();
  policy_dry_run_cmd
      ->add_option("--limit", policy_dry_run.limit,
                   "Re-decide at most the N most recent decisions (0: all "
                   "the broker keeps)")
      ->capture_default_str();
  CLI::App* policy_decisions_cmd = policy_cmd->add_subcommand(
      "decisions", "List the broker's most recent policy decisions");
  policy_decisions_cmd
      ->add_option("--limit", policy_decisions.limit, "At most N")
      ->capture_default_str();

  // approvals
  CLI::App* approvals_cmd = app.add_subcommand(
      "approvals",
      "Documents held for human approval (as an approver, with a person "
      "certificate): list, approve, reject");
  approvals_cmd->require_subcommand(1);
  std::string approvals_org;
  CLI::App* approvals_list_cmd = approvals_cmd->add_subcommand(
      "list",
      "Held documents waiting for your approval: metadata, content hash, "
      "what they need and until when (operators and auditors: every one)");
  approvals_list_cmd->add_option("--org", approvals_org,
                                 "Only documents of this sender");
  DecideFlags approve_flags;
  CLI::App* approvals_approve_cmd = approvals_cmd->add_subcommand(
      "approve",
      "Approve a held document's content: it is released to its recipients "
      "with your approval attached");
  DecideFlags reject_flags;
  reject_flags.approve = false;
  CLI::App* approvals_reject_cmd = approvals_cmd->add_subcommand(
      "reject",
      "Reject a held document: every copy is denied, the sender is told why");
  for (auto [cmd, flags] : {std::pair{approvals_approve_cmd, &approve_flags},
                            std::pair{approvals_reject_cmd, &reject_flags}}) {
    cmd->add_option("DOC_ID", flags->document_id, "Document id")->required();
    cmd->add_option("--content-sha256", flags->content_sha256,
                    "The content hash you reviewed (from `approvals list`)")
        ->required();
    cmd->add_option("--comment", flags->comment,
                    flags == &reject_flags ? "Why (required)" : "Why");
  }
  approvals_reject_cmd->get_option("--comment")->required();

  // admin
  CLI::App* admin_cmd = app.add_subcommand(
      "admin",
      "Ask the broker about itself (as an operator or auditor): info, peers, "
      "directory");
  admin_cmd->require_subcommand(1);
  CLI::App* admin_info_cmd = admin_cmd->add_subcommand(
      "info", "Broker identity, release, uptime, policy version, your roles");
  CLI::App* admin_peers_cmd = admin_cmd->add_subcommand(
      "peers",
      "Peer brokers: link state, outbox backlog and oldest age, events "
      "waiting to go back, directory freshness, routes");
  std::string admin_directory_org;
  CLI::App* admin_directory_cmd = admin_cmd->add_subcommand(
      "directory",
      "Organizations this broker and its peers serve, and where a document "
      "for each goes now");
  admin_directory_cmd->add_option("ORG", admin_directory_org,
                                  "Only this organization code");
  CLI::App* admin_queues_cmd = admin_cmd->add_subcommand(
      "queues", "Copies waiting per organization, in flight, oldest age");
  std::string admin_document_id;
  CLI::App* admin_document_cmd = admin_cmd->add_subcommand(
      "document",
      "One document by id: trace, recipients' states, full history (never "
      "its content)");
  admin_document_cmd->add_option("DOC_ID", admin_document_id, "Document id")
      ->required();
  std::string admin_log_level;
  CLI::App* admin_log_level_cmd = admin_cmd->add_subcommand(
      "log-level",
      "Show the broker's log level, or set it at once (operators): debug, "
      "info, warning, error");
  admin_log_level_cmd->add_option("LEVEL", admin_log_level, "New level");
  CLI::App* admin_incident_cmd = admin_cmd->add_subcommand(
      "incident",
      "Incidents: declare and resolve (operators), list (and auditors)");
  admin_incident_cmd->require_subcommand(1);
  IncidentDeclareFlags incident_declare;
  CLI::App* admin_incident_declare_cmd = admin_incident_cmd->add_subcommand(
      "declare", "Declare an incident: affected agencies are notified at once");
  admin_incident_declare_cmd
      ->add_option("--scope", incident_declare.scope,
                   "broker (every org served here), peer (the link to "
                   "--peer), orgs (the --org list)")
      ->required()
      ->check(CLI::IsMember({"broker", "peer", "orgs"}));
  admin_incident_declare_cmd->add_option("--peer", incident_declare.peer,
                                         "Peer broker name (--scope peer)");
  admin_incident_declare_cmd
      ->add_option("--org", incident_declare.orgs,
                   "Organization code (--scope orgs; repeatable or "
                   "comma-separated)")
      ->delimiter(',');
  admin_incident_declare_cmd
      ->add_option("--severity", incident_declare.severity,
                   "minor, major or critical")
      ->required()
      ->check(CLI::IsMember({"minor", "major", "critical"}));
  admin_incident_declare_cmd
      ->add_option("--description", incident_declare.description,
                   "What happened")
      ->required();
  std::string incident_id, incident_resolution;
  CLI::App* admin_incident_resolve_cmd = admin_incident_cmd->add_subcommand(
      "resolve", "Resolve an incident declared here: the same agencies hear");
  admin_incident_resolve_cmd->add_option("ID", incident_id, "INC-...")
      ->required();
  admin_incident_resolve_cmd->add_option("--resolution", incident_resolution,
                                         "What was done");
  bool incident_list_open = false;
  CLI::App* admin_incident_list_cmd = admin_incident_cmd->add_subcommand(
      "list", "Every incident, declared here or announced by a peer");
  admin_incident_list_cmd->add_flag("--open", incident_list_open,
                                    "Only the open ones");
  std::string admin_paper_org, admin_paper_incident;
  CLI::App* admin_paper_report_cmd = admin_cmd->add_subcommand(
      "paper-report",
      "Paper-register entries not yet re-digitized, per org and incident");
  admin_paper_report_cmd->add_option("--org", admin_paper_org,
                                     "Only this organization");
  admin_paper_report_cmd->add_option("--incident", admin_paper_incident,
                                     "Only this incident");
  CLI::App* admin_rotate_cmd = admin_cmd->add_subcommand(
      "rotate-storage-keys",
      "Encryption at rest (operators): a new data key for new documents, "
      "every data key re-wrapped under the master key in "
      "storage.master_key_file, without a restart");
  CLI::App* admin_audit_cmd = admin_cmd->add_subcommand(
      "audit", "The broker's tamper-evident audit log");
  admin_audit_cmd->require_subcommand(1);
  CLI::App* admin_audit_verify_cmd = admin_audit_cmd->add_subcommand(
      "verify",
      "Have the broker walk its audit log: a failing exit status and the "
      "entries named when one was edited, removed or reordered, or the log "
      "was cut");
  std::string admin_audit_out;
  CLI::App* admin_audit_export_cmd = admin_audit_cmd->add_subcommand(
      "export",
      "Write the whole audit log with its signed checkpoints and the broker's "
      "certificate to --out (JSON), for an external auditor");
  admin_audit_export_cmd->add_option("--out", admin_audit_out, "File to write")
      ->required();

  // audit (offline)
  CLI::App* audit_cmd =
      app.add_subcommand("audit", "Audit log exports, checked offline");
  audit_cmd->require_subcommand(1);
  std::string audit_export_file;
  CLI::App* audit_verify_export_cmd = audit_cmd->add_subcommand(
      "verify-export",
      "Check an export with only the CA (--ca): the hash chain, every "
      "checkpoint's signature, and that the signing certificate chains to "
      "the CA. No broker is needed.");
  audit_verify_export_cmd
      ->add_option("FILE", audit_export_file, "Export to check")
      ->required();

  // evidence and verify
  // download
  DownloadFlags download;
  CLI::App* download_cmd = app.add_subcommand(
      "download",
      "Download the stored attachments of a document this organization sent "
      "or received, verified against the hashes its sender signed");
  download_cmd->add_option("DOCUMENT_ID", download.document_id, "Document id")
      ->required();
  download_cmd
      ->add_option("--out", download.out_dir,
                   "Write DIR/<id>.<attachment name> (via .part files, "
                   "resumed by running again)")
      ->required();
  download_cmd->add_option("--name", download.names,
                           "Only this attachment (repeatable)");

  std::string evidence_id, evidence_out;
  CLI::App* evidence_cmd = app.add_subcommand(
      "evidence",
      "Write the evidence of a document this organization sent or received "
      "(its signed manifest, custody receipt, status history and audit "
      "entries, signed by the broker) to --out, for `lienthong verify`");
  evidence_cmd->add_option("DOCUMENT_ID", evidence_id, "Document id")
      ->required();
  evidence_cmd->add_option("--out", evidence_out, "File to write")->required();
  std::string admin_evidence_id, admin_evidence_out;
  CLI::App* admin_evidence_cmd = admin_cmd->add_subcommand(
      "evidence",
      "Write the evidence of any document this broker handled to --out "
      "(operators and auditors; the call is audited)");
  admin_evidence_cmd
      ->add_option("DOCUMENT_ID", admin_evidence_id, "Document id")
      ->required();
  admin_evidence_cmd->add_option("--out", admin_evidence_out, "File to write")
      ->required();
  // recall, paper conversion
  RecallFlags recall;
  CLI::App* recall_cmd = app.add_subcommand(
      "recall",
      "Ask the recipients of a document this organization sent to withdraw "
      "it (a RECALL; each answers with `lienthong status DOC_ID "
      "agreed|refused`; a copy not yet delivered is withdrawn at once)");
  recall_cmd->add_option("DOC_ID", recall.document_id, "Document recalled")
      ->required();
  recall_cmd->add_option("--to", recall.to,
                         "Recipient asked (repeatable; default: every "
                         "recipient of the document)");
  recall_cmd->add_option("--reason", recall.reason, "Why (the recall's body)");
  recall_cmd->add_option("--subject", recall.subject,
                         "Subject of the recall document");
  PaperConvertFlags paper;
  CLI::App* paper_convert_cmd = app.add_subcommand(
      "paper-convert",
      "Record that a document this organization sent or received was "
      "converted to paper (reason required; audited; its sender sees it)");
  paper_convert_cmd->add_option("DOC_ID", paper.document_id, "Document id")
      ->required();
  paper_convert_cmd
      ->add_option("--reason", paper.reason, "Why it had to be on paper")
      ->required();
  paper_convert_cmd->add_option("--by", paper.by,
                                "The official who converted it");
  uint32_t paper_limit = 100;
  CLI::App* paper_conversions_cmd = app.add_subcommand(
      "paper-conversions", "List this organization's paper conversions");
  paper_conversions_cmd
      ->add_option("--limit", paper_limit, "At most N, newest first")
      ->capture_default_str();
  std::string admin_conversions_org;
  uint32_t admin_conversions_limit = 100;
  CLI::App* admin_conversions_cmd = admin_cmd->add_subcommand(
      "paper-conversions",
      "List an organization's paper conversions recorded at this broker "
      "(operators and auditors)");
  admin_conversions_cmd
      ->add_option("ORG", admin_conversions_org, "Organization code")
      ->required();
  admin_conversions_cmd
      ->add_option("--limit", admin_conversions_limit,
                   "At most N, newest first")
      ->capture_default_str();

  std::string verify_file;
  CLI::App* verify_cmd = app.add_subcommand(
      "verify",
      "Check an evidence export or a custody receipt offline with only the "
      "CA (--ca): every signature (the sender's, the broker's), that the "
      "receipt is for the signed document, and the audit entries' chain "
      "hashes. No broker is needed.");
  verify_cmd->add_option("FILE", verify_file, "Evidence or receipt file")
      ->required();

  // keys
  CLI::App* keys_cmd =
      app.add_subcommand("keys", "End-to-end encryption certificates");
  keys_cmd->require_subcommand(1);
  CLI::App* keys_publish_cmd = keys_cmd->add_subcommand(
      "publish",
      "Publish --enc-cert as this organization's encryption certificate: "
      "senders seal for it from then on");

  // incidents, paper
  bool incidents_open = false;
  CLI::App* incidents_cmd = app.add_subcommand(
      "incidents", "Incidents that affect this organization");
  incidents_cmd->add_flag("--open", incidents_open, "Only the open ones");
  CLI::App* paper_cmd = app.add_subcommand(
      "paper",
      "The paper-fallback register: documents handled on paper "
      "during an incident, until they are re-digitized");
  paper_cmd->require_subcommand(1);
  PaperRecordFlags paper_record;
  CLI::App* paper_record_cmd = paper_cmd->add_subcommand(
      "record",
      "Record a document handled on paper (an incident must be open)");
  paper_record_cmd->add_option("--number", paper_record.number, "Number (số)");
  paper_record_cmd->add_option("--notation", paper_record.notation,
                               "Notation (ký hiệu)");
  paper_record_cmd
      ->add_option("--date", paper_record.date,
                   "Date on the paper document, YYYY-MM-DD")
      ->required();
  paper_record_cmd
      ->add_option(
          "--parties", paper_record.parties,
          "Other organization(s), codes (repeatable, or comma-separated)")
      ->delimiter(',')
      ->required();
  paper_record_cmd
      ->add_option("--subject", paper_record.subject, "Subject (trích yếu)")
      ->required();
  paper_record_cmd->add_option(
      "--incident", paper_record.incident_id,
      "Incident id (default: the one open incident covering this org)");
  PaperListFlags paper_list;
  CLI::App* paper_list_cmd =
      paper_cmd->add_subcommand("list", "This organization's register");
  paper_list_cmd->add_option("--incident", paper_list.incident_id,
                             "Only entries of this incident");
  paper_list_cmd->add_flag("--outstanding", paper_list.outstanding,
                           "Only entries not yet re-digitized");
  std::string paper_report_incident;
  CLI::App* paper_report_cmd = paper_cmd->add_subcommand(
      "report", "Reconciliation: entries not yet re-digitized, per incident");
  paper_report_cmd->add_option("--incident", paper_report_incident,
                               "Only this incident");

  // health
  HealthFlags health;
  CLI::App* health_cmd = AddHealthCommand(app, health);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    PrintError(absl::InvalidArgumentError(e.what()));
    std::cerr << "Run with --help for more information." << std::endl;
    return kExitUsage;
  }

  const OutputFlags output{g.json};
  // The offline policy commands need no broker and no certificate.
  if (policy_validate_cmd->parsed() || policy_test_cmd->parsed() ||
      (policy_explain_cmd->parsed() && !policy_explain.policy_file.empty())) {
    absl::Status result;
    if (policy_validate_cmd->parsed()) {
      result = RunPolicyValidate(policy_validate, output);
    } else if (policy_test_cmd->parsed()) {
      result = RunPolicyTest(policy_test, output);
    } else {
      result = RunPolicyExplainOffline(policy_explain, output);
    }
    if (!result.ok()) PrintError(result);
    return ExitCodeFor(result);
  }

  if (audit_verify_export_cmd->parsed()) {
    absl::Status result = RunAuditVerifyExport(audit_export_file, g.ca, output);
    if (!result.ok()) PrintError(result);
    return ExitCodeFor(result);
  }
  if (verify_cmd->parsed()) {
    absl::Status result = RunVerify(verify_file, g.ca, output);
    if (!result.ok()) PrintError(result);
    return ExitCodeFor(result);
  }

  absl::Status checked = CheckGlobals(g);
  absl::StatusOr<v1::Document> document;
  if (checked.ok() && send_cmd->parsed()) {
    document = BuildDocument(send);
    checked = document.status();
  }
  if (checked.ok() && health_cmd->parsed() && g.endpoints.size() != 1) {
    checked = UsageError(absl::InvalidArgumentError(
        "health: give exactly one --endpoint (it checks one broker)"));
  }
  if (!checked.ok()) {
    PrintError(checked);
    return ExitCodeFor(checked);
  }
  if (health_cmd->parsed()) {
    HealthTarget target;
    target.endpoint = g.endpoints[0];
    target.certificate_file = g.cert;
    target.private_key_file = g.key;
    target.ca_file = g.ca;
    target.crl_directory = g.crl_dir;
    if (g.timeout_seconds > 0)
      target.timeout = absl::Seconds(g.timeout_seconds);
    absl::Status result = RunHealth(target, health, output);
    if (!result.ok()) PrintError(result);
    return ExitCodeFor(result);
  }

  ClientOptions options;
  options.endpoints = g.endpoints;
  options.certificate_file = g.cert;
  options.private_key_file = g.key;
  options.ca_file = g.ca;
  options.encryption_certificate_file = g.enc_cert;
  options.encryption_key_file = g.enc_key;
  options.seal_all = seal;
  options.crl_directory = g.crl_dir;
  options.bulk_port = g.bulk_port;
  if (g.timeout_seconds > 0) {
    options.call_timeout = absl::Seconds(g.timeout_seconds);
    options.retry_budget = absl::Seconds(g.timeout_seconds);
    options.max_backoff = std::min(options.max_backoff, options.retry_budget);
    options.initial_backoff =
        std::min(options.initial_backoff, options.max_backoff);
  }
  if (policy_cmd->parsed() || admin_cmd->parsed() || approvals_cmd->parsed()) {
    absl::StatusOr<std::unique_ptr<AdminClient>> admin =
        AdminClient::Open(options);
    if (!admin.ok()) {
      absl::Status status = UsageError(admin.status());
      PrintError(status);
      return ExitCodeFor(status);
    }
    absl::Status result;
    if (approvals_list_cmd->parsed()) {
      result = RunApprovalsList(**admin, approvals_org, output);
    } else if (approvals_approve_cmd->parsed()) {
      result = RunApprovalsDecide(**admin, approve_flags, output);
    } else if (approvals_reject_cmd->parsed()) {
      result = RunApprovalsDecide(**admin, reject_flags, output);
    } else if (policy_explain_cmd->parsed()) {
      result = RunPolicyExplain(**admin, policy_explain, output);
    } else if (policy_get_cmd->parsed()) {
      result = RunPolicyGet(**admin, policy_get, output);
    } else if (policy_apply_cmd->parsed()) {
      result = RunPolicyApply(**admin, policy_apply, output);
    } else if (policy_dry_run_cmd->parsed()) {
      result = RunPolicyDryRun(**admin, policy_dry_run, output);
    } else if (policy_decisions_cmd->parsed()) {
      result = RunPolicyDecisions(**admin, policy_decisions, output);
    } else if (admin_info_cmd->parsed()) {
      result = RunAdminInfo(**admin, output);
    } else if (admin_peers_cmd->parsed()) {
      result = RunAdminPeers(**admin, output);
    } else if (admin_directory_cmd->parsed()) {
      result = RunAdminDirectory(**admin, admin_directory_org, output);
    } else if (admin_queues_cmd->parsed()) {
      result = RunAdminQueues(**admin, output);
    } else if (admin_document_cmd->parsed()) {
      result = RunAdminDocument(**admin, admin_document_id, output);
    } else if (admin_audit_verify_cmd->parsed()) {
      result = RunAdminAuditVerify(**admin, output);
    } else if (admin_audit_export_cmd->parsed()) {
      result = RunAdminAuditExport(**admin, admin_audit_out, output);
    } else if (admin_rotate_cmd->parsed()) {
      result = RunAdminRotateStorageKeys(**admin, output);
    } else if (admin_evidence_cmd->parsed()) {
      result = RunAdminEvidence(**admin, admin_evidence_id, admin_evidence_out,
                                output);
    } else if (admin_conversions_cmd->parsed()) {
      result = RunAdminPaperConversions(**admin, admin_conversions_org,
                                        admin_conversions_limit, output);
    } else if (admin_log_level_cmd->parsed()) {
      result = RunAdminLogLevel(**admin, admin_log_level, output);
    } else if (admin_incident_declare_cmd->parsed()) {
      result = RunAdminIncidentDeclare(**admin, incident_declare, output);
    } else if (admin_incident_resolve_cmd->parsed()) {
      result = RunAdminIncidentResolve(**admin, incident_id,
                                       incident_resolution, output);
    } else if (admin_incident_list_cmd->parsed()) {
      result = RunAdminIncidents(**admin, incident_list_open, output);
    } else if (admin_paper_report_cmd->parsed()) {
      result = RunAdminPaperReport(**admin, admin_paper_org,
                                   admin_paper_incident, output);
    }
    if (!result.ok()) PrintError(result);
    return ExitCodeFor(result);
  }

  absl::StatusOr<std::unique_ptr<Client>> client = Client::Open(options);
  if (!client.ok()) {
    // Bad options or certificate files given on the command line.
    absl::Status status = UsageError(client.status());
    PrintError(status);
    return ExitCodeFor(status);
  }

  InstallSignalHandlers();
  absl::Status result;
  if (send_cmd->parsed()) {
    result = RunSend(**client, *document, send.attachments, send.hash_first,
                     seal, receipt_file, output);
  } else if (download_cmd->parsed()) {
    std::error_code ec;
    std::filesystem::create_directories(download.out_dir, ec);
    result = RunDownload(**client, download, output);
  } else if (evidence_cmd->parsed()) {
    result = RunEvidence(**client, evidence_id, evidence_out, output);
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
  } else if (recall_cmd->parsed()) {
    result = RunRecall(**client, recall, output);
  } else if (paper_convert_cmd->parsed()) {
    result = RunPaperConvert(**client, paper, output);
  } else if (paper_conversions_cmd->parsed()) {
    result = RunPaperConversions(**client, paper_limit, output);
  } else if (keys_publish_cmd->parsed()) {
    result = RunKeysPublish(**client, output);
  } else if (incidents_cmd->parsed()) {
    result = RunIncidents(**client, incidents_open, output);
  } else if (paper_record_cmd->parsed()) {
    result = RunPaperRecord(**client, paper_record, output);
  } else if (paper_list_cmd->parsed()) {
    result = RunPaperList(**client, paper_list, output);
  } else if (paper_report_cmd->parsed()) {
    result = RunPaperReport(**client, paper_report_incident, output);
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
