// Stored attachments from the command line: `send --attach FILE` streams
// each file to the broker before the document goes; `receive --out DIR` and
// `download` fetch them. Each transfer shows a progress bar (rate, time
// left) on a terminal, and one summary line otherwise.
#ifndef LIENTHONG_CLIENT_SDK_CLI_ATTACHMENT_COMMANDS_H_
#define LIENTHONG_CLIENT_SDK_CLI_ATTACHMENT_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client-sdk/cli/commands.h"
#include "lienthong/client.h"

namespace lienthong::cli {

struct DownloadFlags {
  std::string document_id;
  std::string out_dir;
  std::vector<std::string> names;  // empty: every stored attachment
};

// Uploads each file of `paths` with `options` (streamed, resumable;
// encrypted end to end with options.seal, for a document that will be
// sealed) and adds it to `document` as a stored attachment.
absl::Status UploadAttachments(Client& client,
                               const std::vector<std::string>& paths,
                               const UploadOptions& options,
                               v1::Document* document);

// Downloads `attachment` of document `document_id` to `path` (verified;
// `path`.part until then).
absl::Status DownloadToFile(Client& client, const std::string& document_id,
                            const v1::Attachment& attachment,
                            const std::string& path);

absl::Status RunDownload(Client& client, const DownloadFlags& flags,
                         const OutputFlags& output);

}  // namespace lienthong::cli

#endif  // LIENTHONG_CLIENT_SDK_CLI_ATTACHMENT_COMMANDS_H_
