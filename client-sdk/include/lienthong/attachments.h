// Stored attachments: content that travels beside a document in verified
// chunks instead of inside it (see proto/lienthong/v1/attachments.proto).
// Client::UploadAttachment and Client::DownloadAttachment are what an
// application calls; this header has the sources and sinks they take and
// the one-attempt protocol steps that the SDK and peer brokers share.
//
//   ASSIGN_OR_RETURN(auto source, lienthong::FileSource("scan.pdf"));
//   ASSIGN_OR_RETURN(lienthong::v1::Attachment a,
//                    client->UploadAttachment(*source, "scan.pdf",
//                                             "application/pdf"));
//   *doc.add_attachments() = a;  // then client->Send(doc)
//
// Neither side holds a whole attachment in memory: a chunk at a time.
#ifndef LIENTHONG_ATTACHMENTS_H_
#define LIENTHONG_ATTACHMENTS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "lienthong/v1/attachments.grpc.pb.h"
#include "lienthong/v1/document.pb.h"

namespace lienthong {

// Where an upload's content comes from. Read may be called for any range,
// more than once (a resumed upload reads from where the broker stands),
// and from a thread of the SDK's own (never two calls at once): an upload
// reads and hashes the next chunks there while it sends.
class AttachmentSource {
 public:
  virtual ~AttachmentSource() = default;
  virtual uint64_t size() const = 0;
  // Exactly `length` bytes at `offset` (offset + length <= size()).
  virtual absl::StatusOr<std::string> Read(uint64_t offset,
                                           uint64_t length) = 0;
};

// A file's content. NOT_FOUND / INVALID_ARGUMENT naming the file when it
// cannot be opened or is not a regular file. Read fails with DATA_LOSS when
// the file was written since it was opened (its size or modification time
// changed): an upload never sends a mix of two versions of it.
absl::StatusOr<std::unique_ptr<AttachmentSource>> FileSource(
    const std::string& path);

// Where a download's content goes, in order from the offset the sink
// reports (a resumed download continues there).
class AttachmentSink {
 public:
  virtual ~AttachmentSink() = default;
  // Bytes the sink already holds: the download starts there.
  virtual uint64_t offset() const = 0;
  // The next bytes of the content (at offset()).
  virtual absl::Status Write(absl::string_view data) = 0;
  // The next bytes in pieces, in order (a chunk as gRPC received it, not
  // copied into one piece); by default a Write each. A sink that takes
  // them at once overrides it (a file: one pwritev).
  virtual absl::Status WritePieces(absl::Span<const absl::string_view> pieces) {
    for (absl::string_view piece : pieces) {
      absl::Status written = Write(piece);
      if (!written.ok()) return written;
    }
    return absl::OkStatus();
  }
};

// SHA-256 (lower-case hex) of the whole of `source`, read in pieces.
absl::StatusOr<std::string> Sha256OfSource(AttachmentSource& source);

// Bytes moved so far and in all (for progress bars).
struct TransferProgress {
  uint64_t bytes = 0;  // at the broker (upload) / here (download)
  uint64_t total = 0;
  uint64_t resumed = 0;  // not sent again: already there
};
using ProgressCallback = std::function<void(const TransferProgress&)>;

// One attempt of AttachmentService/Upload on `channel` with `context`:
// announces `sha256` and `size`, sends what the broker lacks, and returns its
// last answer (complete, or the durable bytes when the stream broke: the
// status then says why, and a new attempt continues from there). DATA_LOSS
// when the broker found a chunk damaged or the whole not matching `sha256`.
absl::StatusOr<v1::UploadResponse> UploadOnce(grpc::ChannelInterface& channel,
                                              grpc::ClientContext& context,
                                              AttachmentSource& source,
                                              const std::string& sha256,
                                              const ProgressCallback& progress);

// One attempt of AttachmentService/Download on `channel` with `context`
// into `sink`, from sink.offset(); each chunk is checked against its SHA-256
// (DATA_LOSS naming it) before the sink sees it. Returns the attachment's
// size. A broken stream leaves the sink holding what arrived: a new attempt
// continues. The caller checks the whole content's hash
// (Client::DownloadAttachment does).
absl::StatusOr<uint64_t> DownloadOnce(grpc::ChannelInterface& channel,
                                      grpc::ClientContext& context,
                                      const std::string& document_id,
                                      const std::string& sha256,
                                      AttachmentSink& sink,
                                      const ProgressCallback& progress);

// Lower-case hex SHA-256 of `data`.
std::string Sha256HexOf(absl::string_view data);

}  // namespace lienthong

#endif  // LIENTHONG_ATTACHMENTS_H_
