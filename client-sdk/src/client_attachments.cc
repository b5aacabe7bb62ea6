#include "client-sdk/src/client_attachments.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client-sdk/src/backoff.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::client_internal {
namespace {

// Transfers are resumable: whatever broke them, the next attempt goes on
// from what the other side holds. DATA_LOSS (the content is not what its
// hash says), refusals and bad requests are answers, not accidents.
bool Retryable(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable ||
         code == absl::StatusCode::kDeadlineExceeded ||
         code == absl::StatusCode::kAborted ||
         code == absl::StatusCode::kCancelled;
}

// No attempt may take longer than this: a broker slower than 1 MiB/s is
// taken for stuck (the next attempt resumes).
absl::Duration AttemptDeadline(const ClientOptions& options, uint64_t bytes) {
  return options.call_timeout +
         absl::Seconds(static_cast<int64_t>(bytes >> 20));
}

// Runs `attempt` until it succeeds or fails with an answer; the retry
// budget counts from the last attempt that moved bytes.
absl::Status RetryTransfer(
    const Connection& connection,
    const std::function<absl::Status(size_t index, grpc::ClientContext&,
                                     bool* progressed)>& attempt) {
  const ClientOptions& o = connection.options();
  absl::Time give_up = absl::Now() + o.retry_budget;
  Backoff backoff(o.initial_backoff, o.max_backoff);
  size_t index = connection.preferred_endpoint();
  for (;;) {
    grpc::ClientContext context;
    bool progressed = false;
    absl::Status s = attempt(index, context, &progressed);
    if (s.ok() || !Retryable(s.code())) return s;
    if (progressed) {
      give_up = absl::Now() + o.retry_budget;
      backoff.Reset();
    }
    if (absl::IsUnavailable(s)) index = connection.FailOver(index);
    absl::Duration delay = backoff.Next();
    if (absl::Now() + delay >= give_up) return s;
    absl::SleepFor(delay);
  }
}

// Feeds what passes through to the hash of the whole.
class HashingSink final : public AttachmentSink {
 public:
  explicit HashingSink(AttachmentSink& inner) : inner_(inner) {}
  uint64_t offset() const override { return inner_.offset(); }
  absl::Status Write(absl::string_view data) override {
    hash_.Update(data);
    return inner_.Write(data);
  }
  void Prefix(absl::string_view data) { hash_.Update(data); }
  std::string Finish() { return sealing::HexOf(hash_.Finish()); }

 private:
  AttachmentSink& inner_;
  sealing::Sha256Stream hash_;
};

class FileSink final : public AttachmentSink {
 public:
  FileSink(int fd, std::string path, uint64_t offset)
      : fd_(fd), path_(std::move(path)), offset_(offset) {}
  ~FileSink() override {
    if (fd_ >= 0) ::close(fd_);
  }
  uint64_t offset() const override { return offset_; }
  absl::Status Write(absl::string_view data) override {
    while (!data.empty()) {
      ssize_t n =
          ::pwrite(fd_, data.data(), data.size(), static_cast<off_t>(offset_));
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::InternalError(
            absl::StrCat("write ", path_, ": ", std::strerror(errno)));
      }
      data.remove_prefix(static_cast<size_t>(n));
      offset_ += static_cast<uint64_t>(n);
    }
    return absl::OkStatus();
  }
  absl::Status Close() {
    int fd = fd_;
    fd_ = -1;
    if (::fdatasync(fd) != 0 || ::close(fd) != 0) {
      return absl::InternalError(
          absl::StrCat("sync ", path_, ": ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }
  int fd() const { return fd_; }

 private:
  int fd_;
  const std::string path_;
  uint64_t offset_;
};

absl::Status CheckStored(const v1::Attachment& attachment) {
  if (!attachment.stored()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attachment \"", attachment.name(),
        "\" is inline: its content is in the document, not to be downloaded"));
  }
  return absl::OkStatus();
}

absl::Status Download(const Connection& connection,
                      const std::string& document_id,
                      const v1::Attachment& attachment, HashingSink& sink,
                      const ProgressCallback& progress) {
  RETURN_IF_ERROR(RetryTransfer(
      connection,
      [&](size_t index, grpc::ClientContext& context, bool* progressed) {
        context.set_deadline(absl::ToChronoTime(
            absl::Now() + AttemptDeadline(connection.options(),
                                          attachment.size() - sink.offset())));
        const uint64_t before = sink.offset();
        absl::StatusOr<uint64_t> size =
            DownloadOnce(connection.attachment_stub(index), context,
                         document_id, attachment.sha256(), sink, progress);
        *progressed = sink.offset() > before;
        return size.status();
      }));
  if (sink.offset() != attachment.size()) {
    return absl::DataLossError(absl::StrCat(
        "attachment \"", attachment.name(), "\": the broker sent ",
        sink.offset(), " bytes; the document says ", attachment.size()));
  }
  std::string whole = sink.Finish();
  if (whole != attachment.sha256()) {
    return absl::DataLossError(absl::StrCat(
        "attachment \"", attachment.name(),
        "\": the content received has "
        "SHA-256 ",
        whole, ", not the ", attachment.sha256(), " its sender signed"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::Attachment> UploadAttachment(
    const Connection& connection, AttachmentSource& source,
    const std::string& name, const std::string& content_type,
    const ProgressCallback& progress) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." ||
      name == "..") {
    return absl::InvalidArgumentError(absl::StrCat(
        "attachment name \"", name, "\": must be a plain file name"));
  }
  ASSIGN_OR_RETURN(std::string sha256, Sha256OfSource(source));
  uint64_t furthest = 0;
  RETURN_IF_ERROR(RetryTransfer(
      connection,
      [&](size_t index, grpc::ClientContext& context, bool* progressed) {
        context.set_deadline(absl::ToChronoTime(
            absl::Now() +
            AttemptDeadline(connection.options(), source.size() - furthest)));
        absl::StatusOr<v1::UploadResponse> r =
            UploadOnce(connection.attachment_stub(index), context, source,
                       sha256, [&](const TransferProgress& p) {
                         if (p.bytes > furthest) {
                           furthest = p.bytes;
                           *progressed = true;
                         }
                         if (progress) progress(p);
                       });
        return r.status();
      }));
  v1::Attachment attachment;
  attachment.set_name(name);
  attachment.set_content_type(content_type);
  attachment.set_sha256(sha256);
  attachment.set_size(source.size());
  attachment.set_stored(true);
  return attachment;
}

absl::Status DownloadAttachment(const Connection& connection,
                                const std::string& document_id,
                                const v1::Attachment& attachment,
                                AttachmentSink& sink,
                                const ProgressCallback& progress) {
  RETURN_IF_ERROR(CheckStored(attachment));
  if (sink.offset() != 0) {
    return absl::InvalidArgumentError(
        "sink: must start empty (DownloadAttachmentToFile resumes a file)");
  }
  HashingSink hashing(sink);
  return Download(connection, document_id, attachment, hashing, progress);
}

absl::Status DownloadAttachmentToFile(const Connection& connection,
                                      const std::string& document_id,
                                      const v1::Attachment& attachment,
                                      const std::string& path,
                                      const ProgressCallback& progress) {
  RETURN_IF_ERROR(CheckStored(attachment));
  const std::string part = absl::StrCat(path, ".part");
  int fd = ::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(part, ": ", std::strerror(errno)));
  }
  struct stat st;
  uint64_t have = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  if (have > attachment.size()) {
    if (::ftruncate(fd, 0) != 0) {
      ::close(fd);
      return absl::InternalError(
          absl::StrCat("truncate ", part, ": ", std::strerror(errno)));
    }
    have = 0;
  }
  FileSink file(fd, part, have);
  HashingSink hashing(file);
  // What an earlier call received is hashed again, then continued.
  std::string piece;
  for (uint64_t at = 0; at < have;) {
    piece.resize(std::min<uint64_t>(1 << 20, have - at));
    ssize_t n = ::pread(fd, piece.data(), piece.size(), static_cast<off_t>(at));
    if (n <= 0) {
      return absl::InternalError(
          absl::StrCat("read ", part, ": ", std::strerror(errno)));
    }
    piece.resize(static_cast<size_t>(n));
    hashing.Prefix(piece);
    at += static_cast<uint64_t>(n);
  }
  absl::Status s =
      Download(connection, document_id, attachment, hashing, progress);
  if (!s.ok()) {
    // Damaged content is not worth resuming; anything else is kept for the
    // next call to continue.
    if (absl::IsDataLoss(s)) ::unlink(part.c_str());
    return s;
  }
  RETURN_IF_ERROR(file.Close());
  if (::rename(part.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename ", part, " to ", path, ": ",
                                            std::strerror(errno)));
  }
  std::string dir = path.find('/') == std::string::npos
                        ? "."
                        : path.substr(0, path.rfind('/') + 1);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace lienthong::client_internal
