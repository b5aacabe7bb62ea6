#include "client-sdk/cli/attachment_commands.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client-sdk/cli/format.h"
#include "lienthong/attachments.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::cli {
namespace {

std::string Mebibytes(uint64_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

// One transfer's progress on stderr: a bar redrawn at most ten times a
// second on a terminal, one line at the end otherwise.
class ProgressBar {
 public:
  ProgressBar(std::string verb, std::string label)
      : verb_(std::move(verb)),
        label_(std::move(label)),
        tty_(isatty(STDERR_FILENO) != 0),
        start_(absl::Now()) {}

  void Update(const TransferProgress& p) {
    last_ = p;
    absl::Time now = absl::Now();
    if (!tty_ || now - drawn_ < absl::Milliseconds(100)) return;
    drawn_ = now;
    Draw(now, false);
  }

  void Done() { Draw(absl::Now(), true); }

 private:
  void Draw(absl::Time now, bool done) {
    const uint64_t moved =
        last_.bytes > last_.resumed ? last_.bytes - last_.resumed : 0;
    const double seconds = std::max(1e-3, absl::ToDoubleSeconds(now - start_));
    const double rate = static_cast<double>(moved) / seconds;
    std::string line;
    if (done) {
      line = absl::StrCat(
          verb_, " ", label_, ": ", Mebibytes(last_.total), " in ",
          absl::StrFormat("%.1f s", seconds), " (",
          Mebibytes(static_cast<uint64_t>(rate)), "/s)",
          last_.resumed > 0
              ? absl::StrCat(", ", Mebibytes(last_.resumed), " already there")
              : "");
      std::cerr << (tty_ ? "\r\033[K" : "") << line << std::endl;
      return;
    }
    const double fraction = last_.total == 0
                                ? 1.0
                                : static_cast<double>(last_.bytes) /
                                      static_cast<double>(last_.total);
    constexpr int kWidth = 28;
    int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<size_t>(filled), '=');
    if (filled < kWidth) bar += '>';
    bar.resize(kWidth, ' ');
    std::string left = "--";
    if (rate > 0 && last_.total > last_.bytes) {
      left = absl::FormatDuration(absl::Seconds(static_cast<int64_t>(
          static_cast<double>(last_.total - last_.bytes) / rate + 0.5)));
    }
    line = absl::StrFormat("%s [%s] %3d%%  %s / %s  %s/s  %s left", label_, bar,
                           static_cast<int>(fraction * 100),
                           Mebibytes(last_.bytes), Mebibytes(last_.total),
                           Mebibytes(static_cast<uint64_t>(rate)), left);
    std::cerr << "\r\033[K" << line << std::flush;
  }

  const std::string verb_;
  const std::string label_;
  const bool tty_;
  const absl::Time start_;
  absl::Time drawn_ = absl::InfinitePast();
  TransferProgress last_;
};

std::string BaseNameOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

absl::Status UploadAttachments(Client& client,
                               const std::vector<std::string>& paths,
                               const UploadOptions& options,
                               v1::Document* document) {
  for (const std::string& path : paths) {
    absl::StatusOr<std::unique_ptr<AttachmentSource>> source = FileSource(path);
    if (!source.ok()) {
      return UsageError(
          absl::Status(source.status().code(),
                       absl::StrCat("--attach: ", source.status().message())));
    }
    const std::string name = BaseNameOf(path);
    ProgressBar bar("uploaded", name);
    ASSIGN_OR_RETURN(v1::Attachment attachment,
                     client.UploadAttachment(
                         **source, name, GuessContentType(name), options,
                         [&bar](const TransferProgress& p) { bar.Update(p); }));
    bar.Done();
    *document->add_attachments() = std::move(attachment);
  }
  return absl::OkStatus();
}

absl::Status DownloadToFile(Client& client, const std::string& document_id,
                            const v1::Attachment& attachment,
                            const std::string& path) {
  ProgressBar bar("downloaded", attachment.name());
  RETURN_IF_ERROR(client.DownloadAttachmentToFile(
      document_id, attachment, path,
      [&bar](const TransferProgress& p) { bar.Update(p); }));
  bar.Done();
  return absl::OkStatus();
}

absl::Status RunDownload(Client& client, const DownloadFlags& flags,
                         const OutputFlags& output) {
  ASSIGN_OR_RETURN(v1::DocumentStatus status,
                   client.GetDocumentStatus(flags.document_id));
  std::set<std::string> wanted(flags.names.begin(), flags.names.end());
  std::set<std::string> used;
  int fetched = 0;
  for (const v1::Attachment& a : status.attachments()) {
    if (!wanted.empty() && !wanted.count(a.name())) continue;
    if (!a.stored()) {
      if (!wanted.empty()) {
        return UsageError(absl::InvalidArgumentError(
            absl::StrCat("--name ", a.name(),
                         ": an inline attachment; `lienthong receive "
                         "--out DIR` writes it with the document")));
      }
      continue;
    }
    std::string name = SafeFileName(a.name());
    if (!used.insert(name).second) name = absl::StrCat(fetched + 1, "-", name);
    const std::string path = absl::StrCat(
        flags.out_dir, "/", SafeFileName(flags.document_id), ".", name);
    RETURN_IF_ERROR(DownloadToFile(client, flags.document_id, a, path));
    ++fetched;
    wanted.erase(a.name());
    if (output.json) {
      std::cout << "{\"name\":" << JsonString(a.name())
                << ",\"path\":" << JsonString(path) << ",\"size\":" << a.size()
                << ",\"sha256\":" << JsonString(a.sha256()) << "}" << std::endl;
    } else {
      std::cout << path << "  " << a.size() << " bytes  sha256 " << a.sha256()
                << "  verified" << std::endl;
    }
  }
  if (!flags.names.empty() && !wanted.empty()) {
    return absl::NotFoundError(absl::StrCat("document ", flags.document_id,
                                            " has no attachment \"",
                                            *wanted.begin(), "\""));
  }
  if (fetched == 0 && !output.json) {
    std::cerr << "document " << flags.document_id
              << " has no stored attachments" << std::endl;
  }
  return absl::OkStatus();
}

}  // namespace lienthong::cli
