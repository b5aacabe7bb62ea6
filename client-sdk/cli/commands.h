// The subcommands of the `lienthong` tool, each a thin layer over the SDK:
// turn flags into a request, call the Client, print the result. Each returns
// the status to report (see ExitCodeFor).
#ifndef LIENTHONG_CLIENT_SDK_CLI_COMMANDS_H_
#define LIENTHONG_CLIENT_SDK_CLI_COMMANDS_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "lienthong/client.h"

namespace lienthong::cli {

struct OutputFlags {
  bool json = false;  // machine-readable JSON on stdout
};

struct SendFlags {
  std::vector<std::string> to;
  std::string subject;
  std::string number;
  std::string notation;
  std::string type;
  std::string signer;
  std::string signer_title;
  std::string issue_date;
  std::string urgency;
  std::string classification;
  std::string origin;
  std::string decision;
  std::string business_type;
  std::string refers_to;
  std::string idempotency_key;
  std::string content_type;
  std::vector<std::string> attachments;  // streamed, stored
  bool hash_first = false;  // UploadOptions::hash_first for `attachments`
  std::vector<std::string> inline_attachments;  // inside the document
  std::string body_file;                        // "-" for stdin
  // A paper-register entry this document re-digitizes.
  std::string redigitize;
};

struct ReceiveFlags {
  uint32_t max = 10;
  double wait_seconds = 0;
  std::string out_dir;
  bool follow = false;
};

struct StatusFlags {
  std::string document_id;
  std::string code;
  std::string reason;
};

struct TrackFlags {
  std::string document_id;
  bool watch = false;
};

struct WatchFlags {
  uint64_t after = 0;
  std::string document_id;
};

// The whole content of a local file, "-" for stdin; the errno-derived
// status naming the path when it cannot be read.
absl::StatusOr<std::string> ReadLocalFile(const std::string& path);
// The same for the file a flag or argument names: INVALID_ARGUMENT
// "<what>: cannot read <path> (<why>)".
absl::StatusOr<std::string> ReadFileFor(const std::string& path,
                                        absl::string_view what);
// Writes `data` to `path` (mode 0640, truncating) and fsyncs it; the
// errno-derived status naming the path otherwise.
absl::Status WriteFileDurably(const std::string& path, absl::string_view data);

// Builds the document from the flags and files; a usage error when a flag
// value or a local file is unusable. Separate from RunSend so that bad input
// is reported before connecting.
absl::StatusOr<v1::Document> BuildDocument(const SendFlags& flags);

// The content type a file name suggests (application/octet-stream when it
// suggests none).
std::string GuessContentType(const std::string& name);
// A file-name component from text the broker (or a remote sender) chose:
// no path separators, no control characters, no leading dot.
std::string SafeFileName(absl::string_view name);

// With `receipt_file`, the custody receipt is written there (JSON).
// Uploads `stored_attachments` (files, streamed), then sends.
absl::Status RunSend(Client& client, v1::Document document,
                     const std::vector<std::string>& stored_attachments,
                     bool hash_first, bool seal_all,
                     const std::string& receipt_file,
                     const OutputFlags& output);
// Stops (with --follow, --watch) when `stop` becomes true.
absl::Status RunReceive(Client& client, const ReceiveFlags& flags,
                        const OutputFlags& output,
                        const std::atomic<bool>& stop);
absl::Status RunInbox(Client& client, uint32_t limit,
                      const OutputFlags& output);
absl::Status RunStatus(Client& client, const StatusFlags& flags,
                       const OutputFlags& output);
absl::Status RunTrack(Client& client, const TrackFlags& flags,
                      const OutputFlags& output, const std::atomic<bool>& stop);
absl::Status RunWatch(Client& client, const WatchFlags& flags,
                      const OutputFlags& output, const std::atomic<bool>& stop);
absl::Status RunKeysPublish(Client& client, const OutputFlags& output);

}  // namespace lienthong::cli

#endif  // LIENTHONG_CLIENT_SDK_CLI_COMMANDS_H_
