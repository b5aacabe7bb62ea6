#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lienthong/attachments.h"
#include "lienthong/common/sealing.h"

namespace lienthong {
namespace {

// How much of a source is read at once to hash it.
constexpr uint64_t kHashPiece = 1 << 20;

class FileSourceImpl final : public AttachmentSource {
 public:
  FileSourceImpl(int fd, std::string path, uint64_t size)
      : fd_(fd), path_(std::move(path)), size_(size) {}
  ~FileSourceImpl() override { ::close(fd_); }

  uint64_t size() const override { return size_; }

  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) override {
    std::string out(length, '\0');
    uint64_t got = 0;
    while (got < length) {
      ssize_t n = ::pread(fd_, out.data() + got, length - got,
                          static_cast<off_t>(offset + got));
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::InternalError(
            absl::StrCat("read ", path_, ": ", std::strerror(errno)));
      }
      if (n == 0) {
        return absl::DataLossError(
            absl::StrCat(path_, " shrank to ", offset + got,
                         " bytes while being sent (it had ", size_, ")"));
      }
      got += static_cast<uint64_t>(n);
    }
    return out;
  }

 private:
  const int fd_;
  const std::string path_;
  const uint64_t size_;
};

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

}  // namespace

std::string Sha256HexOf(absl::string_view data) {
  return sealing::Sha256Hex(data);
}

absl::StatusOr<std::unique_ptr<AttachmentSource>> FileSource(
    const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    std::string message = absl::StrCat(path, ": ", std::strerror(e));
    if (e == ENOENT) return absl::NotFoundError(message);
    return absl::InvalidArgumentError(message);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  }
  return std::unique_ptr<AttachmentSource>(
      new FileSourceImpl(fd, path, static_cast<uint64_t>(st.st_size)));
}

absl::StatusOr<std::string> Sha256OfSource(AttachmentSource& source) {
  sealing::Sha256Stream hash;
  for (uint64_t at = 0; at < source.size(); at += kHashPiece) {
    absl::StatusOr<std::string> piece =
        source.Read(at, std::min(kHashPiece, source.size() - at));
    if (!piece.ok()) return piece.status();
    hash.Update(*piece);
  }
  return sealing::HexOf(hash.Finish());
}

absl::StatusOr<v1::UploadResponse> UploadOnce(
    v1::AttachmentService::StubInterface& stub, grpc::ClientContext& context,
    AttachmentSource& source, const std::string& sha256,
    const ProgressCallback& progress) {
  auto stream = stub.Upload(&context);
  v1::UploadRequest request;
  request.mutable_start()->set_sha256(sha256);
  request.mutable_start()->set_size(source.size());
  v1::UploadResponse last;
  bool answered = false;
  if (stream->Write(request) && stream->Read(&last)) answered = true;
  if (!answered) {
    // The broker ended the stream (it refused the start): its status says
    // why. Cancelling here would replace it with CANCELLED.
    stream->WritesDone();
    grpc::Status s = stream->Finish();
    if (s.ok()) return absl::UnavailableError("upload ended without an answer");
    return FromGrpc(s);
  }
  TransferProgress p;
  p.total = source.size();
  p.bytes = last.durable_bytes();
  p.resumed = last.resumed_bytes();
  if (progress) progress(p);
  const uint64_t chunk_size = last.chunk_size();
  if (!last.complete()) {
    if (chunk_size == 0 || last.durable_bytes() % chunk_size != 0 ||
        last.durable_bytes() > source.size()) {
      context.TryCancel();
      stream->Finish();
      return absl::InternalError(absl::StrCat(
          "the broker answered the upload with chunk size ", chunk_size,
          " and ", last.durable_bytes(), " durable bytes: not usable"));
    }
    // The broker's answers are small and few (one per sync): they wait in
    // the stream until the chunks are written.
    for (uint64_t at = last.durable_bytes(); at < source.size();
         at += chunk_size) {
      absl::StatusOr<std::string> data =
          source.Read(at, std::min(chunk_size, source.size() - at));
      if (!data.ok()) {
        context.TryCancel();
        stream->Finish();
        return data.status();
      }
      request.Clear();
      v1::Chunk* chunk = request.mutable_chunk();
      chunk->set_offset(at);
      chunk->set_sha256(sealing::Sha256Hex(*data));
      chunk->set_data(*std::move(data));
      if (!stream->Write(request)) break;  // Finish says why
      p.bytes = at + request.chunk().data().size();
      if (progress) progress(p);
    }
    stream->WritesDone();
    v1::UploadResponse r;
    while (stream->Read(&r)) last = r;
  }
  grpc::Status s = stream->Finish();
  if (!s.ok()) return FromGrpc(s);
  if (!last.complete()) {
    return absl::UnavailableError(
        absl::StrCat("the upload ended with ", last.durable_bytes(), " of ",
                     source.size(), " bytes durable at the broker"));
  }
  return last;
}

absl::StatusOr<uint64_t> DownloadOnce(
    v1::AttachmentService::StubInterface& stub, grpc::ClientContext& context,
    const std::string& document_id, const std::string& sha256,
    AttachmentSink& sink, const ProgressCallback& progress) {
  v1::DownloadRequest request;
  request.set_document_id(document_id);
  request.set_sha256(sha256);
  request.set_offset(sink.offset());
  auto reader = stub.Download(&context, request);
  v1::DownloadResponse response;
  uint64_t size = 0;
  bool sized = false;
  TransferProgress p;
  p.resumed = sink.offset();
  absl::Status failed;
  while (reader->Read(&response)) {
    if (!sized) {
      size = response.size();
      sized = true;
      p.total = size;
    }
    if (!response.has_chunk()) continue;
    const v1::Chunk& chunk = response.chunk();
    if (chunk.offset() != sink.offset()) {
      failed = absl::DataLossError(
          absl::StrCat("the broker sent a chunk at offset ", chunk.offset(),
                       " where ", sink.offset(), " was due"));
      break;
    }
    if (sealing::Sha256Hex(chunk.data()) != chunk.sha256()) {
      failed = absl::DataLossError(absl::StrCat(
          "chunk at offset ", chunk.offset(), " (", chunk.data().size(),
          " bytes) does not match its SHA-256: damaged on the way"));
      break;
    }
    if (chunk.offset() + chunk.data().size() > size) {
      failed = absl::DataLossError(
          "the broker sent more bytes than the attachment has");
      break;
    }
    failed = sink.Write(chunk.data());
    if (!failed.ok()) break;
    p.bytes = sink.offset();
    if (progress) progress(p);
  }
  if (!failed.ok()) {
    context.TryCancel();
    reader->Finish();
    return failed;
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return FromGrpc(s);
  if (!sized) return absl::UnavailableError("download ended without an answer");
  if (sink.offset() != size) {
    return absl::UnavailableError(absl::StrCat(
        "the download ended at ", sink.offset(), " of ", size, " bytes"));
  }
  return size;
}

}  // namespace lienthong
