#include "client-sdk/cli/commands.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client-sdk/cli/attachment_commands.h"
#include "client-sdk/cli/evidence_commands.h"
#include "client-sdk/cli/format.h"
#include "client-sdk/cli/paper_commands.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::cli {
namespace {

std::string Sha256Hex(absl::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &md_len, EVP_sha256(),
                 nullptr) != 1) {
    return "";
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(md), md_len));
}

std::string BaseName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Writes DIR/<id>.body and DIR/<id>.<attachment name>, synced (stored
// attachments downloaded and verified), so that the document may be
// acknowledged afterwards.
absl::Status WriteDocument(Client& client, const std::string& dir,
                           const v1::Document& doc) {
  const std::string base = absl::StrCat(dir, "/", SafeFileName(doc.id()));
  RETURN_IF_ERROR(WriteFileDurably(absl::StrCat(base, ".body"), doc.body()));
  absl::flat_hash_set<std::string> used = {"body"};
  for (int i = 0; i < doc.attachments_size(); ++i) {
    const v1::Attachment& attachment = doc.attachments(i);
    std::string name = SafeFileName(attachment.name());
    if (!used.insert(name).second) name = absl::StrCat(i + 1, "-", name);
    used.insert(name);
    if (attachment.stored()) {
      RETURN_IF_ERROR(DownloadToFile(client, doc.id(), attachment,
                                     absl::StrCat(base, ".", name)));
      continue;
    }
    RETURN_IF_ERROR(
        WriteFileDurably(absl::StrCat(base, ".", name), attachment.content()));
  }
  int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    fsync(dir_fd);  // the new names, too, survive a crash
    close(dir_fd);
  }
  return absl::OkStatus();
}

// Creates the directory (and its parents) when missing.
absl::Status CheckOutDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  struct stat info;
  if (stat(dir.c_str(), &info) != 0) {
    return UsageError(
        absl::ErrnoToStatus(errno, absl::StrCat("--out \"", dir, "\"")));
  }
  if (!S_ISDIR(info.st_mode)) {
    return UsageError(absl::InvalidArgumentError(
        absl::StrCat("--out \"", dir, "\": not a directory")));
  }
  return absl::OkStatus();
}

void PrintReceived(const IncomingDocument& incoming, bool bodies_in_files,
                   const OutputFlags& output) {
  const v1::Document& doc = incoming.document;
  if (output.json) {
    v1::Delivery delivery;
    *delivery.mutable_document() = doc;
    delivery.set_attempt(incoming.attempt);
    if (bodies_in_files) {  // the contents are in the files
      delivery.mutable_document()->clear_body();
      for (v1::Attachment& a :
           *delivery.mutable_document()->mutable_attachments()) {
        a.clear_content();
      }
    }
    std::cout << ToJson(delivery) << std::endl;
    return;
  }
  std::cout << doc.id() << "  " << doc.sender() << "  "
            << UrgencyName(doc.metadata().urgency()) << "  "
            << doc.metadata().subject()
            << (incoming.was_sealed ? "  [sealed end-to-end]" : "")
            << (doc.metadata().has_redigitized()
                    ? absl::StrCat(
                          "  [re-digitized: paper register ",
                          doc.metadata().redigitized().register_entry_id(), "]")
                    : "")
            << std::endl;
  for (const v1::Approval& a : doc.approvals()) {
    std::cout << "  approved by " << a.approver() << " (" << a.role() << " of "
              << a.org() << ") at " << FormatTimestamp(a.at())
              << (a.comment().empty() ? "" : absl::StrCat(": ", a.comment()))
              << std::endl;
  }
}

// Prints one status event as a line of text or JSON.
void PrintEvent(const v1::StatusEvent& event, const OutputFlags& output) {
  std::cout << (output.json ? ToJson(event) : EventLine(event)) << std::endl;
}

}  // namespace

std::string GuessContentType(const std::string& name) {
  static const std::pair<const char*, const char*> kTypes[] = {
      {".pdf", "application/pdf"},
      {".xml", "application/xml"},
      {".json", "application/json"},
      {".txt", "text/plain; charset=utf-8"},
      {".html", "text/html; charset=utf-8"},
      {".doc", "application/msword"},
      {".docx",
       "application/vnd.openxmlformats-officedocument.wordprocessingml."
       "document"},
      {".xls", "application/vnd.ms-excel"},
      {".xlsx",
       "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
      {".odt", "application/vnd.oasis.opendocument.text"},
      {".png", "image/png"},
      {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},
      {".zip", "application/zip"},
  };
  const std::string lower = absl::AsciiStrToLower(name);
  for (const auto& [suffix, type] : kTypes) {
    if (absl::EndsWith(lower, suffix)) return type;
  }
  return "application/octet-stream";
}

// A file-name component from text the broker (or a remote sender) chose:
// no path separators, no control characters, no leading dot.
std::string SafeFileName(absl::string_view name) {
  std::string out;
  for (char c : name) {
    const unsigned char u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f || c == '/' || c == '\\') ? '_' : c;
  }
  if (out.empty()) out.push_back('_');
  if (out[0] == '.') out[0] = '_';
  return out;
}

absl::Status WriteFileDurably(const std::string& path, absl::string_view data) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("creating \"", path, "\""));
  }
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error_number = errno;
      close(fd);
      return absl::ErrnoToStatus(error_number,
                                 absl::StrCat("writing \"", path, "\""));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  if (fsync(fd) != 0) {
    int error_number = errno;
    close(fd);
    return absl::ErrnoToStatus(error_number,
                               absl::StrCat("syncing \"", path, "\""));
  }
  close(fd);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFileFor(const std::string& path,
                                        absl::string_view what) {
  absl::StatusOr<std::string> content = ReadLocalFile(path);
  if (!content.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": cannot read ", path, " (", content.status().message(), ")"));
  }
  return content;
}

absl::StatusOr<std::string> ReadLocalFile(const std::string& path) {
  FILE* file = path == "-" ? stdin : std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("\"", path, "\""));
  }
  std::string content;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), file)) > 0) {
    content.append(buf, n);
  }
  const bool failed = std::ferror(file) != 0;
  const int error_number = errno;
  if (file != stdin) std::fclose(file);
  if (failed) {
    return absl::ErrnoToStatus(error_number,
                               absl::StrCat("reading \"", path, "\""));
  }
  return content;
}

absl::StatusOr<v1::Document> BuildDocument(const SendFlags& flags) {
  v1::Document doc;
  for (const std::string& to : flags.to) doc.add_recipients(to);
  v1::DocumentMetadata& meta = *doc.mutable_metadata();
  meta.set_subject(flags.subject);
  if (!flags.redigitize.empty())
    meta.mutable_redigitized()->set_register_entry_id(flags.redigitize);
  meta.set_number(flags.number);
  meta.set_notation(flags.notation);
  meta.set_document_type(flags.type);
  meta.set_signer(flags.signer);
  meta.set_signer_title(flags.signer_title);
  if (!flags.issue_date.empty()) {
    absl::Time parsed;
    std::string error;
    if (!absl::ParseTime("%Y-%m-%d", flags.issue_date, &parsed, &error)) {
      return UsageError(absl::InvalidArgumentError(absl::StrCat(
          "--issue-date \"", flags.issue_date, "\": expected YYYY-MM-DD")));
    }
    meta.set_issue_date(flags.issue_date);
  }
  // The enum flags were checked against these maps by the parser.
  if (!flags.urgency.empty()) {
    meta.set_urgency(UrgencyNames().at(flags.urgency));
  }
  if (!flags.classification.empty()) {
    meta.set_classification(ClassificationNames().at(flags.classification));
  }
  if (!flags.origin.empty()) meta.set_origin(OriginNames().at(flags.origin));
  if (!flags.decision.empty()) {
    meta.set_decision_category(DecisionNames().at(flags.decision));
  }
  if (!flags.business_type.empty()) {
    meta.set_business_type(BusinessTypeNames().at(flags.business_type));
  }
  meta.set_refers_to(flags.refers_to);
  doc.set_idempotency_key(flags.idempotency_key);

  absl::StatusOr<std::string> body = ReadLocalFile(flags.body_file);
  if (!body.ok()) return UsageError(body.status());
  doc.set_body(*std::move(body));
  doc.set_body_content_type(flags.content_type);
  for (const std::string& path : flags.inline_attachments) {
    absl::StatusOr<std::string> content = ReadLocalFile(path);
    if (!content.ok()) return UsageError(content.status());
    v1::Attachment& attachment = *doc.add_attachments();
    attachment.set_name(BaseName(path));
    attachment.set_content_type(GuessContentType(attachment.name()));
    attachment.set_size(content->size());
    attachment.set_sha256(Sha256Hex(*content));
    attachment.set_content(*std::move(content));
  }
  return doc;
}

absl::Status RunSend(Client& client, v1::Document document,
                     const std::vector<std::string>& stored_attachments,
                     bool hash_first, bool seal_all,
                     const std::string& receipt_file,
                     const OutputFlags& output) {
  // What the SDK will seal (Sealer::MustSeal): its attachments are
  // encrypted end to end as they are uploaded.
  const v1::Classification c = document.metadata().classification();
  const bool sealed = seal_all || c == v1::CLASSIFICATION_CONFIDENTIAL ||
                      c == v1::CLASSIFICATION_SECRET;
  RETURN_IF_ERROR(CompleteRedigitizedMark(client, &document));
  UploadOptions upload;
  upload.seal = sealed;
  upload.hash_first = hash_first;
  RETURN_IF_ERROR(
      UploadAttachments(client, stored_attachments, upload, &document));
  ASSIGN_OR_RETURN(SendReceipt receipt, client.Send(document));
  if (!receipt_file.empty()) {
    RETURN_IF_ERROR(
        WriteJsonFile(receipt.custody_receipt, receipt_file, "--receipt"));
  }
  const int recipients = document.recipients_size();
  if (output.json) {
    std::cout << "{\"document_id\":" << JsonString(receipt.document_id)
              << ",\"recipients\":" << recipients
              << ",\"duplicate\":" << (receipt.duplicate ? "true" : "false")
              << ",\"idempotency_key\":" << JsonString(receipt.idempotency_key)
              << ",\"accepted_at\":"
              << JsonString(absl::FormatTime(absl::RFC3339_full,
                                             receipt.accepted_at,
                                             absl::UTCTimeZone()))
              << ",\"content_sha256\":" << JsonString(receipt.content_sha256)
              << ",\"sealed\":" << (receipt.sealed ? "true" : "false")
              << ",\"document_sha256\":"
              << JsonString(receipt.custody_receipt.document_sha256())
              << ",\"custodian\":"
              << JsonString(receipt.custody_receipt.broker()) << "}"
              << std::endl;
    return absl::OkStatus();
  }
  std::cout << "sent " << receipt.document_id << " to " << recipients
            << " recipient(s)"
            << (receipt.duplicate ? " (duplicate of an earlier send)" : "")
            << (receipt.sealed ? ", sealed end-to-end" : "")
            << "; signed, custody receipt from "
            << receipt.custody_receipt.broker() << std::endl;
  return absl::OkStatus();
}

absl::Status RunKeysPublish(Client& client, const OutputFlags& output) {
  ASSIGN_OR_RETURN(v1::PublishEncryptionCertificateResponse r,
                   client.PublishEncryptionCertificate());
  if (output.json) {
    std::cout << ToJson(r) << std::endl;
    return absl::OkStatus();
  }
  std::cout << "published the encryption certificate of " << r.org()
            << " (sha256 " << r.certificate_sha256() << ", valid until "
            << absl::FormatTime("%Y-%m-%d",
                                absl::FromUnixSeconds(r.not_after().seconds()),
                                absl::UTCTimeZone())
            << ")" << std::endl;
  return absl::OkStatus();
}

absl::Status RunReceive(Client& client, const ReceiveFlags& flags,
                        const OutputFlags& output,
                        const std::atomic<bool>& stop) {
  if (flags.wait_seconds < 0) {
    return UsageError(
        absl::InvalidArgumentError("--wait: must not be negative"));
  }
  const bool to_files = !flags.out_dir.empty();
  if (to_files) RETURN_IF_ERROR(CheckOutDir(flags.out_dir));

  if (!flags.follow) {
    ASSIGN_OR_RETURN(
        std::vector<IncomingDocument> documents,
        client.Fetch(flags.max, absl::Seconds(flags.wait_seconds)));
    std::vector<std::string> taken;
    absl::Status failure;
    for (const IncomingDocument& incoming : documents) {
      if (to_files) {
        failure = WriteDocument(client, flags.out_dir, incoming.document);
        if (!failure.ok()) break;
      }
      PrintReceived(incoming, to_files, output);
      taken.push_back(incoming.document.id());
    }
    // Acknowledge what was written; the rest is delivered again later.
    absl::Status acked = client.Ack(taken);
    if (!failure.ok()) return failure;
    if (documents.empty() && !output.json) {
      std::cerr << "no documents" << std::endl;
    }
    return acked;
  }

  absl::Mutex print_mu;
  auto handler = [&](const IncomingDocument& incoming) -> absl::Status {
    if (to_files) {
      absl::Status written =
          WriteDocument(client, flags.out_dir, incoming.document);
      if (!written.ok()) return written;  // put back (on_deferred says so)
    }
    absl::MutexLock lock(&print_mu);
    PrintReceived(incoming, to_files, output);
    return absl::OkStatus();
  };
  ReceiveOptions options;
  options.max_in_flight = std::max<uint32_t>(flags.max, 1);
  options.handler_threads = 1;  // lines come out in arrival order
  options.on_notice = [&](const v1::Notice& notice) {
    absl::MutexLock lock(&print_mu);
    std::cout << NoticeLine(notice, output) << std::endl;
  };
  options.on_deferred = [](const std::string& id, const absl::Status& why) {
    PrintError(
        absl::Status(why.code(), absl::StrCat(why.message(), " (document ", id,
                                              ": delivered again later)")));
  };
  ASSIGN_OR_RETURN(std::unique_ptr<ReceiveSession> session,
                   client.Receive(handler, options));
  std::atomic<bool> ended = false;
  absl::Status result;
  std::thread waiter([&] {
    result = session->Wait();
    ended = true;
  });
  while (!stop.load() && !ended.load()) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  session->Stop();
  waiter.join();
  return result;
}

absl::Status RunInbox(Client& client, uint32_t limit,
                      const OutputFlags& output) {
  ASSIGN_OR_RETURN(v1::ListInboxResponse inbox, client.ListInbox(limit));
  if (output.json) {
    std::cout << ToJson(inbox) << std::endl;
    return absl::OkStatus();
  }
  Table table(
      {"ID", "FROM", "URGENCY", "ATTEMPTS", "STATE", "ACCEPTED", "SUBJECT"});
  for (const v1::InboxEntry& entry : inbox.entries()) {
    table.AddRow(
        {entry.document_id(), entry.sender(),
         UrgencyName(entry.metadata().urgency()),
         absl::StrCat(entry.attempts()), entry.leased() ? "leased" : "waiting",
         FormatTimestamp(entry.accepted_at()), entry.metadata().subject()});
  }
  table.Print(std::cout);
  std::cout << inbox.entries_size() << " of " << inbox.total()
            << " waiting document(s) shown" << std::endl;
  return absl::OkStatus();
}

absl::Status RunStatus(Client& client, const StatusFlags& flags,
                       const OutputFlags& output) {
  std::optional<v1::BusinessStatus> status = ParseBusinessStatus(flags.code);
  if (!status.has_value()) {
    return UsageError(absl::InvalidArgumentError(absl::StrCat(
        "CODE \"", flags.code,
        "\": expected arrived|rejected|accepted|assigned|processing|"
        "completed|recall-requested|agreed|refused or 01..06, 13, 15, 16")));
  }
  ASSIGN_OR_RETURN(
      v1::StatusEvent event,
      client.ReportStatus(flags.document_id, *status, flags.reason));
  if (output.json) {
    std::cout << ToJson(event) << std::endl;
    return absl::OkStatus();
  }
  std::cout << "reported " << BusinessStatusName(*status) << " on "
            << flags.document_id << " (event " << event.sequence() << ")"
            << std::endl;
  return absl::OkStatus();
}

absl::Status RunTrack(Client& client, const TrackFlags& flags,
                      const OutputFlags& output,
                      const std::atomic<bool>& stop) {
  ASSIGN_OR_RETURN(v1::DocumentStatus status,
                   client.GetDocumentStatus(flags.document_id));
  uint64_t last_sequence = 0;
  for (const v1::StatusEvent& event : status.history()) {
    last_sequence = std::max(last_sequence, event.sequence());
  }
  if (output.json) {
    std::cout << ToJson(status) << std::endl;
  } else {
    std::cout << "document  " << status.document_id() << "\n"
              << "sender    " << status.sender() << "\n"
              << "subject   " << status.metadata().subject() << "\n"
              << "accepted  " << FormatTimestamp(status.accepted_at())
              << "\n\n";
    Table recipients({"RECIPIENT", "DELIVERY", "STATUS", "UPDATED"});
    for (const v1::RecipientStatus& r : status.recipients()) {
      recipients.AddRow({r.recipient(), DeliveryStateName(r.delivery_state()),
                         BusinessStatusName(r.business_status()),
                         FormatTimestamp(r.updated_at())});
    }
    recipients.Print(std::cout);
    std::cout << "\nhistory\n";
    Table history({"SEQ", "TIME", "RECIPIENT", "EVENT", "REASON", "BY"});
    for (const v1::StatusEvent& e : status.history()) {
      history.AddRow({absl::StrCat(e.sequence()), FormatTimestamp(e.at()),
                      e.recipient(), EventName(e),
                      e.reason().empty() ? "-" : e.reason(),
                      e.actor().empty() ? "-" : e.actor()});
    }
    history.Print(std::cout);
    std::cout << std::flush;
  }
  if (!flags.watch) return absl::OkStatus();
  return client.Watch(
      flags.document_id, last_sequence,
      [&](const v1::StatusEvent& event) { PrintEvent(event, output); }, stop);
}

absl::Status RunWatch(Client& client, const WatchFlags& flags,
                      const OutputFlags& output,
                      const std::atomic<bool>& stop) {
  return client.Watch(
      flags.document_id, flags.after,
      [&](const v1::StatusEvent& event) { PrintEvent(event, output); }, stop);
}

}  // namespace lienthong::cli
