#include "client-sdk/src/attachment_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/support/sync_stream.h"
#include "lienthong/attachment_wire.h"
#include "lienthong/attachments.h"
#include "lienthong/common/handoff.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/sha256_chain.h"

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
    grpc::ChannelInterface& channel, grpc::ClientContext& context,
    AttachmentSource& source, const std::string& sha256,
    const ProgressCallback& progress) {
  return attachment_io::UploadOnce(channel, context, source,
                                   attachment_io::SourceHash::OfSha256(sha256),
                                   progress);
}

absl::StatusOr<uint64_t> DownloadOnce(grpc::ChannelInterface& channel,
                                      grpc::ClientContext& context,
                                      const std::string& document_id,
                                      const std::string& sha256,
                                      AttachmentSink& sink,
                                      const ProgressCallback& progress) {
  return attachment_io::DownloadOnce(channel, context, document_id, sha256,
                                     sink, /*whole=*/nullptr, progress);
}

}  // namespace lienthong

namespace lienthong::attachment_io {

absl::StatusOr<SourceHash> SourceHash::Of(AttachmentSource& source) {
  SourceHash h;
  h.size_ = source.size();
  // States every 64 KiB (a divisor of usual chunk sizes), or further apart
  // for a source so large that they would take more than 2 MiB.
  h.spacing_ = uint64_t{64} << 10;
  while (h.size_ / h.spacing_ > kMaxStates) h.spacing_ *= 2;
  h.states_.reserve(static_cast<size_t>(h.size_ / h.spacing_) *
                    sealing::Sha256Chain::kStateBytes);
  sealing::Sha256Chain chain;
  const uint64_t piece = std::max(kHashPiece, h.spacing_);
  for (uint64_t at = 0; at < h.size_; at += piece) {
    absl::StatusOr<std::string> data =
        source.Read(at, std::min(piece, h.size_ - at));
    if (!data.ok()) return data.status();
    absl::string_view rest = *data;
    while (!rest.empty()) {
      const uint64_t to_next = h.spacing_ - chain.bytes() % h.spacing_;
      const size_t take =
          static_cast<size_t>(std::min<uint64_t>(to_next, rest.size()));
      chain.Update(rest.substr(0, take));
      rest.remove_prefix(take);
      if (chain.bytes() % h.spacing_ == 0 && chain.bytes() < h.size_)
        h.states_ += chain.State();
    }
  }
  h.digest_ = chain.Digest();
  h.sha256_ = sealing::HexOf(h.digest_);
  return h;
}

SourceHash SourceHash::OfSha256(std::string sha256) {
  SourceHash h;
  h.sha256_ = std::move(sha256);
  return h;
}

std::optional<std::string> SourceHash::StateAt(uint64_t end) const {
  if (spacing_ == 0) return std::nullopt;
  if (end == size_) return digest_;
  if (end == 0 || end % spacing_ != 0) return std::nullopt;
  const uint64_t at = (end / spacing_ - 1) * sealing::Sha256Chain::kStateBytes;
  if (at + sealing::Sha256Chain::kStateBytes > states_.size())
    return std::nullopt;
  return states_.substr(static_cast<size_t>(at),
                        sealing::Sha256Chain::kStateBytes);
}

absl::StatusOr<v1::UploadResponse> UploadOnce(
    grpc::ChannelInterface& channel, grpc::ClientContext& context,
    AttachmentSource& source, const SourceHash& hash,
    const ProgressCallback& progress) {
  const std::string& sha256 = hash.sha256();
  // Messages go out as ByteBuffers: a chunk's bytes as read from the
  // source, not copied into a message and out of it again.
  const grpc::internal::RpcMethod method(
      attachment_wire::kUploadMethod,
      grpc::internal::RpcMethod::BIDI_STREAMING);
  std::unique_ptr<
      grpc::ClientReaderWriter<grpc::ByteBuffer, v1::UploadResponse>>
      stream(grpc::internal::ClientReaderWriterFactory<
             grpc::ByteBuffer, v1::UploadResponse>::Create(&channel, method,
                                                           &context));
  v1::UploadRequest request;
  request.mutable_start()->set_sha256(sha256);
  request.mutable_start()->set_size(source.size());
  v1::UploadResponse last;
  bool answered = false;
  if (stream->Write(attachment_wire::Serialize(request)) &&
      stream->Read(&last)) {
    answered = true;
  }
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
    // Chunks carry the state of the hash the SDK made before the upload:
    // nothing is hashed again.
    const bool by_state = last.takes_sha256_state() && hash.Covers(chunk_size);
    // The broker's answers are small and few (one per sync): they wait in
    // the stream until the chunks are written.
    for (uint64_t at = last.durable_bytes(); at < source.size();
         at += chunk_size) {
      const uint64_t length = std::min(chunk_size, source.size() - at);
      absl::StatusOr<std::string> data = source.Read(at, length);
      std::optional<std::string> state;
      if (data.ok() && by_state) {
        state = hash.StateAt(at + length);
        if (!state) {
          data = absl::InternalError(
              absl::StrCat("no hash state for the chunk at ", at));
        }
      }
      if (!data.ok()) {
        context.TryCancel();
        stream->Finish();
        return data.status();
      }
      v1::Chunk fields;
      fields.set_offset(at);
      if (state) {
        fields.set_sha256_state(*std::move(state));
      } else {
        fields.set_sha256(sealing::Sha256Hex(*data));
      }
      auto bytes = std::make_shared<const std::string>(*std::move(data));
      if (!stream->Write(attachment_wire::WithChunk(
              v1::UploadRequest(), v1::UploadRequest::kChunkFieldNumber, fields,
              bytes, *bytes))) {
        break;  // Finish says why
      }
      p.bytes = at + length;
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

namespace {

// Chunks read ahead of the one being checked: what a download holds in
// memory beyond the HTTP/2 window.
constexpr size_t kFramesAhead = 2;

// A download's message as read: the chunk, or what is wrong with it.
struct ReceivedFrame {
  absl::Status parsed;
  attachment_wire::DownloadFrame frame;
};

}  // namespace

absl::StatusOr<uint64_t> DownloadOnce(
    grpc::ChannelInterface& channel, grpc::ClientContext& context,
    const std::string& document_id, const std::string& sha256,
    AttachmentSink& sink, sealing::Sha256Chain* whole,
    const ProgressCallback& progress, std::optional<uint64_t> expected_size) {
  v1::DownloadRequest request;
  request.set_document_id(document_id);
  request.set_sha256(sha256);
  request.set_offset(sink.offset());
  request.set_sha256_state(whole != nullptr);
  // Answers come in as ByteBuffers: a chunk's bytes are hashed and given to
  // the sink where gRPC received them, not copied into a message first.
  const grpc::internal::RpcMethod method(
      attachment_wire::kDownloadMethod,
      grpc::internal::RpcMethod::SERVER_STREAMING);
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(
          &channel, method, &context, request));
  // A second thread reads and parses the next chunks while this one checks
  // the last and hands it to the sink (which, with the progress callback,
  // runs on the caller's thread only): the network is not left waiting for
  // the hash.
  Handoff<ReceivedFrame> frames(kFramesAhead);
  std::thread reading([&] {
    grpc::ByteBuffer received;
    while (reader->Read(&received)) {
      ReceivedFrame next;
      next.parsed = attachment_wire::ParseDownload(&received, &next.frame);
      const bool well_formed = next.parsed.ok();
      if (!frames.Put(std::move(next)) || !well_formed) break;
    }
    frames.Close();
  });
  // However this returns (even by a sink or callback of the application
  // throwing), the reading thread ends before `frames` and `reader` go.
  absl::Cleanup stop_reading = [&] {
    if (!reading.joinable()) return;
    frames.Stop();
    context.TryCancel();  // ends a Read waiting for the broker
    reading.join();
  };
  uint64_t size = 0;
  bool sized = false;
  TransferProgress p;
  p.resumed = sink.offset();
  absl::Status failed;
  while (std::optional<ReceivedFrame> received = frames.Take()) {
    failed = received->parsed;
    if (!failed.ok()) break;
    const attachment_wire::DownloadFrame& frame = received->frame;
    const v1::DownloadResponse& response = frame.response;
    if (!sized) {
      size = response.size();
      sized = true;
      p.total = size;
      if (expected_size && size != *expected_size) {
        failed = absl::DataLossError(
            absl::StrCat("the broker says the attachment has ", size,
                         " bytes; the document says ", *expected_size));
        break;
      }
    }
    if (!frame.chunk.has_chunk) continue;
    const v1::Chunk& chunk = frame.chunk.fields;
    if (chunk.offset() != sink.offset() ||
        (whole != nullptr && whole->bytes() != sink.offset())) {
      failed = absl::DataLossError(
          absl::StrCat("the broker sent a chunk at offset ", chunk.offset(),
                       " where ", sink.offset(), " was due"));
      break;
    }
    const uint64_t end = chunk.offset() + frame.chunk.data_size;
    if (end > size) {
      failed = absl::DataLossError(
          "the broker sent more bytes than the attachment has");
      break;
    }
    // The hash of the whole, continued over the chunk, checks it: kept
    // once the sink has the chunk.
    std::optional<sealing::Sha256Chain> next;
    if (whole != nullptr) {
      next = *whole;
      for (absl::string_view piece : frame.chunk.data) next->Update(piece);
    }
    bool matches;
    if (next && !chunk.sha256_state().empty()) {
      matches = end == size ? next->Digest() == chunk.sha256_state()
                            : end % sealing::Sha256Chain::kBlockBytes == 0 &&
                                  next->State() == chunk.sha256_state();
    } else {
      matches = sealing::HexOf(sealing::Sha256Raw(frame.chunk.data)) ==
                chunk.sha256();
    }
    if (!matches) {
      // A broker does not hash again what it sends with a state: the
      // damage may be in its store.
      failed = absl::DataLossError(absl::StrCat(
          "chunk at offset ", chunk.offset(), " (", frame.chunk.data_size,
          " bytes) does not match its SHA-256: damaged on the way",
          chunk.sha256_state().empty() ? "" : " or in the broker's store"));
      break;
    }
    failed = sink.WritePieces(frame.chunk.data);
    if (!failed.ok()) break;
    if (next) *whole = *std::move(next);
    p.bytes = sink.offset();
    if (progress) progress(p);
  }
  if (!failed.ok()) {
    std::move(stop_reading).Invoke();
    reader->Finish();
    return failed;
  }
  reading.join();  // the broker ended the stream: the thread has closed
  grpc::Status s = reader->Finish();
  if (!s.ok()) return FromGrpc(s);
  if (!sized) return absl::UnavailableError("download ended without an answer");
  if (sink.offset() != size) {
    return absl::UnavailableError(absl::StrCat(
        "the download ended at ", sink.offset(), " of ", size, " bytes"));
  }
  return size;
}

}  // namespace lienthong::attachment_io
