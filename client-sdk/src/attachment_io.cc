#include "client-sdk/src/attachment_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iterator>
#include <optional>
#include <system_error>
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
#include "lienthong/common/status_macros.h"
#include "lienthong/common/thread_name.h"

namespace lienthong {
namespace {

// How much of a source is read at once to hash it.
constexpr uint64_t kHashPiece = 1 << 20;

// A file, read where it is; every read checks that the file was not
// written since it was opened (its size and modification time), so that an
// upload never sends a mix of two versions of it.
class FileSourceImpl final : public AttachmentSource {
 public:
  FileSourceImpl(int fd, std::string path, const struct stat& st)
      : fd_(fd),
        path_(std::move(path)),
        size_(static_cast<uint64_t>(st.st_size)),
        modified_(st.st_mtim) {}
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
    struct stat st;
    if (::fstat(fd_, &st) != 0) {
      return absl::InternalError(
          absl::StrCat("stat ", path_, ": ", std::strerror(errno)));
    }
    if (static_cast<uint64_t>(st.st_size) != size_ ||
        st.st_mtim.tv_sec != modified_.tv_sec ||
        st.st_mtim.tv_nsec != modified_.tv_nsec) {
      return absl::DataLossError(absl::StrCat(
          path_, " was changed while it was being sent (now ", st.st_size,
          " bytes, it had ", size_, "); send it again once it is written"));
    }
    return out;
  }

 private:
  const int fd_;
  const std::string path_;
  const uint64_t size_;
  const struct timespec modified_;
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
  return std::unique_ptr<AttachmentSource>(new FileSourceImpl(fd, path, st));
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

namespace {

// What sets the attempts of the two kinds of upload apart: how a chunk is
// named, and what is checked where the broker's answers say where it
// stands.
class ChunkNamer {
 public:
  virtual ~ChunkNamer() = default;
  // Before the first chunk: the broker's first answer (not complete, its
  // chunk size and durable bytes checked).
  virtual absl::Status Resume(const v1::UploadResponse& first) = 0;
  // Fills in the hash fields of the chunk at `at` with `data`.
  virtual absl::Status Name(uint64_t at, absl::string_view data,
                            v1::Chunk* fields) = 0;
  // The broker's answer that the upload is complete.
  virtual absl::Status Check(const v1::UploadResponse& last) = 0;
};

// An upload that announced its sha256: chunks carry the states of the hash
// the SDK made before the upload (nothing is hashed again), or their own.
class AnnouncedNamer final : public ChunkNamer {
 public:
  explicit AnnouncedNamer(const SourceHash& hash) : hash_(hash) {}
  absl::Status Resume(const v1::UploadResponse& first) override {
    by_state_ = first.takes_sha256_state() && hash_.Covers(first.chunk_size());
    return absl::OkStatus();
  }
  absl::Status Name(uint64_t at, absl::string_view data,
                    v1::Chunk* fields) override {
    if (!by_state_) {
      fields->set_sha256(sealing::Sha256Hex(data));
      return absl::OkStatus();
    }
    std::optional<std::string> state = hash_.StateAt(at + data.size());
    if (!state) {
      return absl::InternalError(
          absl::StrCat("no hash state for the chunk at ", at));
    }
    fields->set_sha256_state(*std::move(state));
    return absl::OkStatus();
  }
  absl::Status Check(const v1::UploadResponse&) override {
    return absl::OkStatus();  // the broker checked the announced hash
  }

 private:
  const SourceHash& hash_;
  bool by_state_ = false;
};

// An upload named at end: each chunk is hashed as it is sent, and the
// broker's name for the whole must be that hash.
class HashingNamer final : public ChunkNamer {
 public:
  HashingNamer(AttachmentSource& source, SentHash& kept, bool* restart)
      : source_(source), kept_(kept), restart_(restart) {}
  absl::Status Resume(const v1::UploadResponse& first) override {
    // The broker took a restart, if asked: the next attempt resumes what
    // this one makes durable.
    *restart_ = false;
    by_state_ = first.takes_sha256_state() &&
                first.chunk_size() % sealing::Sha256Chain::kBlockBytes == 0;
    const uint64_t durable = first.durable_bytes();
    ASSIGN_OR_RETURN(chain_, kept_.At(source_, durable));
    if (durable > 0 && (durable % sealing::Sha256Chain::kBlockBytes != 0 ||
                        first.durable_state() != chain_.State())) {
      *restart_ = true;
      return absl::AbortedError(absl::StrCat(
          "the broker holds ", durable,
          " bytes under this upload's key that are not this content's "
          "beginning; starting over"));
    }
    return absl::OkStatus();
  }
  absl::Status Name(uint64_t at, absl::string_view data,
                    v1::Chunk* fields) override {
    if (chain_.bytes() != at) {
      return absl::InternalError(absl::StrCat(
          "upload: chunk at ", at, " after ", chain_.bytes(), " bytes hashed"));
    }
    chain_.Update(data);
    kept_.Keep(chain_);
    if (!by_state_) {
      fields->set_sha256(sealing::Sha256Hex(data));
    } else if (chain_.bytes() == source_.size()) {
      fields->set_sha256_state(chain_.Digest());
    } else {
      fields->set_sha256_state(chain_.State());
    }
    return absl::OkStatus();
  }
  absl::Status Check(const v1::UploadResponse& last) override {
    ASSIGN_OR_RETURN(sealing::Sha256Chain whole,
                     kept_.At(source_, source_.size()));
    const std::string sent = sealing::HexOf(whole.Digest());
    if (last.sha256() == sent) return absl::OkStatus();
    if (last.resumed_bytes() == source_.size()) {
      // Nothing was sent: the broker completed another content held under
      // this upload's key. The next attempt starts over.
      *restart_ = true;
      return absl::AbortedError(absl::StrCat(
          "the broker completed content with SHA-256 ", last.sha256(),
          " under this upload's key, not this one's; starting over"));
    }
    return absl::DataLossError(
        absl::StrCat("the broker stored the upload as content with SHA-256 \"",
                     last.sha256(), "\", not the ", sent, " of what was sent"));
  }

 private:
  AttachmentSource& source_;
  SentHash& kept_;
  bool* const restart_;
  bool by_state_ = false;
  sealing::Sha256Chain chain_;
};

// Chunks read and named ahead of the one being written: what an upload
// holds in memory besides gRPC's own buffers.
constexpr size_t kChunksAhead = 2;

// A chunk ready to go out, or why it is not.
struct PreparedChunk {
  absl::Status status;
  v1::Chunk fields;  // offset and hash, no data
  std::shared_ptr<const std::string> bytes;
};

// A gRPC Upload call. Messages go out as ByteBuffers: a chunk's bytes as
// read from the source, not copied into a message and out of it again.
class GrpcUpload final : public UploadStream {
 public:
  GrpcUpload(grpc::ChannelInterface& channel, grpc::ClientContext& context)
      : context_(context),
        stream_(grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer,
                                                          v1::UploadResponse>::
                    Create(&channel,
                           grpc::internal::RpcMethod(
                               attachment_wire::kUploadMethod,
                               grpc::internal::RpcMethod::BIDI_STREAMING),
                           &context)) {}
  bool Write(const grpc::ByteBuffer& message) override {
    return stream_->Write(message);
  }
  bool Read(v1::UploadResponse* response) override {
    return stream_->Read(response);
  }
  void WritesDone() override { stream_->WritesDone(); }
  absl::Status Finish() override { return FromGrpc(stream_->Finish()); }
  void Cancel() override { context_.TryCancel(); }
  bool Answered() const override { return true; }

 private:
  grpc::ClientContext& context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<grpc::ByteBuffer, v1::UploadResponse>>
      stream_;
};

}  // namespace

std::unique_ptr<UploadStream> GrpcUploadStream(grpc::ChannelInterface& channel,
                                               grpc::ClientContext& context) {
  return std::make_unique<GrpcUpload>(channel, context);
}

namespace {

// One attempt of an upload starting with `start`, its chunks named by
// `namer` (on a thread of the attempt's, one chunk after the other).
absl::StatusOr<v1::UploadResponse> UploadAttempt(
    UploadStream& stream, AttachmentSource& source,
    const v1::UploadStart& start, ChunkNamer& namer,
    const ProgressCallback& progress) {
  v1::UploadRequest request;
  *request.mutable_start() = start;
  v1::UploadResponse last;
  bool answered = false;
  if (stream.Write(attachment_wire::Serialize(request)) && stream.Read(&last)) {
    answered = true;
  }
  if (!answered) {
    // The broker ended the stream (it refused the start): its status says
    // why. Cancelling here would replace it with CANCELLED.
    stream.WritesDone();
    absl::Status s = stream.Finish();
    if (s.ok()) return absl::UnavailableError("upload ended without an answer");
    return s;
  }
  // Ends the call early with `status` (ours, not the broker's).
  auto give_up = [&](absl::Status status) {
    stream.Cancel();
    (void)stream.Finish();
    return status;
  };
  TransferProgress p;
  p.total = source.size();
  p.bytes = last.durable_bytes();
  p.resumed = last.resumed_bytes();
  const uint64_t chunk_size = last.chunk_size();
  const bool complete_at_once = last.complete();
  if (!complete_at_once) {
    if (chunk_size == 0 || last.durable_bytes() % chunk_size != 0 ||
        last.durable_bytes() > source.size()) {
      return give_up(absl::InternalError(absl::StrCat(
          "the broker answered the upload with chunk size ", chunk_size,
          " and ", last.durable_bytes(), " durable bytes: not usable")));
    }
    // What the broker holds counts once it is known to be this content's.
    if (absl::Status s = namer.Resume(last); !s.ok()) return give_up(s);
    if (progress) progress(p);
    // A second thread reads and names the next chunks while this one
    // writes (naming one may hash it: the network does not wait for that).
    // The broker's answers are small and few (one per sync): they wait in
    // the stream until the chunks are written.
    Handoff<PreparedChunk> chunks(kChunksAhead);
    auto prepare = [&, from = last.durable_bytes()] {
      NameThisThread("lt-upload-read");
      for (uint64_t at = from; at < source.size(); at += chunk_size) {
        PreparedChunk c;
        c.fields.set_offset(at);
        absl::StatusOr<std::string> data =
            source.Read(at, std::min(chunk_size, source.size() - at));
        if (data.ok()) {
          c.bytes = std::make_shared<const std::string>(*std::move(data));
          c.status = namer.Name(at, *c.bytes, &c.fields);
        } else {
          c.status = data.status();
        }
        const bool failed = !c.status.ok();
        if (!chunks.Put(std::move(c)) || failed) break;
      }
      chunks.Close();
    };
    std::optional<std::thread> preparing;
    try {
      preparing.emplace(prepare);
    } catch (const std::system_error& e) {
      return give_up(absl::UnavailableError(absl::StrCat(
          "upload: no thread to read the source on (", e.what(), ")")));
    }
    absl::Cleanup stop_preparing = [&] {
      chunks.Stop();
      preparing->join();
    };
    while (std::optional<PreparedChunk> c = chunks.Take()) {
      if (!c->status.ok()) return give_up(c->status);
      if (!stream.Write(attachment_wire::WithChunk(
              v1::UploadRequest(), v1::UploadRequest::kChunkFieldNumber,
              c->fields, c->bytes, *c->bytes))) {
        break;  // Finish says why
      }
      p.bytes = c->fields.offset() + c->bytes->size();
      if (progress) progress(p);
    }
    std::move(stop_preparing).Invoke();
    stream.WritesDone();
    v1::UploadResponse r;
    while (stream.Read(&r)) last = r;
  }
  RETURN_IF_ERROR(stream.Finish());
  if (!last.complete()) {
    return absl::UnavailableError(
        absl::StrCat("the upload ended with ", last.durable_bytes(), " of ",
                     source.size(), " bytes durable at the broker"));
  }
  RETURN_IF_ERROR(namer.Check(last));
  // Complete before a chunk was sent: what the broker held counts once it
  // is known to be this content.
  if (complete_at_once && progress) progress(p);
  return last;
}

}  // namespace

absl::StatusOr<v1::UploadResponse> UploadOnce(
    grpc::ChannelInterface& channel, grpc::ClientContext& context,
    AttachmentSource& source, const SourceHash& hash,
    const ProgressCallback& progress) {
  GrpcUpload stream(channel, context);
  return UploadOnce(stream, source, hash, progress);
}

absl::StatusOr<v1::UploadResponse> UploadOnce(
    UploadStream& stream, AttachmentSource& source, const SourceHash& hash,
    const ProgressCallback& progress) {
  v1::UploadStart start;
  start.set_sha256(hash.sha256());
  start.set_size(source.size());
  AnnouncedNamer namer(hash);
  return UploadAttempt(stream, source, start, namer, progress);
}

absl::StatusOr<sealing::Sha256Chain> SentHash::At(AttachmentSource& source,
                                                  uint64_t bytes) {
  auto it = kept_.upper_bound(bytes);
  sealing::Sha256Chain chain;
  if (it != kept_.begin()) chain = std::prev(it)->second;
  while (chain.bytes() < bytes) {
    const uint64_t at = chain.bytes();
    ASSIGN_OR_RETURN(std::string piece,
                     source.Read(at, std::min(kHashPiece, bytes - at)));
    chain.Update(piece);
  }
  return chain;
}

void SentHash::Keep(const sealing::Sha256Chain& chain) {
  kept_.insert_or_assign(chain.bytes(), chain);
}

absl::StatusOr<std::string> UploadKeyOf(AttachmentSource& source) {
  const uint64_t size = source.size();
  const uint64_t edge = std::min(kHashPiece, size);
  ASSIGN_OR_RETURN(std::string head, source.Read(0, edge));
  ASSIGN_OR_RETURN(std::string tail, source.Read(size - edge, edge));
  return absl::StrCat("lienthong-sdk/1 size=", size,
                      " head=", sealing::Sha256Hex(head),
                      " tail=", sealing::Sha256Hex(tail));
}

absl::StatusOr<v1::UploadResponse> UploadNamedAtEndOnce(
    grpc::ChannelInterface& channel, grpc::ClientContext& context,
    AttachmentSource& source, const std::string& upload_key, bool* restart,
    SentHash& hash, const ProgressCallback& progress) {
  GrpcUpload stream(channel, context);
  return UploadNamedAtEndOnce(stream, source, upload_key, restart, hash,
                              progress);
}

absl::StatusOr<v1::UploadResponse> UploadNamedAtEndOnce(
    UploadStream& stream, AttachmentSource& source,
    const std::string& upload_key, bool* restart, SentHash& hash,
    const ProgressCallback& progress) {
  v1::UploadStart start;
  start.set_named_at_end(true);
  start.set_size(source.size());
  start.set_upload_key(upload_key);
  start.set_restart(*restart);
  HashingNamer namer(source, hash, restart);
  return UploadAttempt(stream, source, start, namer, progress);
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

// A gRPC call's answers.
class GrpcAnswers final : public AnswerStream {
 public:
  GrpcAnswers(grpc::ChannelInterface& channel, grpc::ClientContext& context,
              const v1::DownloadRequest& request)
      : context_(context),
        reader_(grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(
            &channel,
            grpc::internal::RpcMethod(
                attachment_wire::kDownloadMethod,
                grpc::internal::RpcMethod::SERVER_STREAMING),
            &context, request)) {}
  bool Read(grpc::ByteBuffer* message) override {
    return reader_->Read(message);
  }
  absl::Status Finish() override { return FromGrpc(reader_->Finish()); }
  void Cancel() override { context_.TryCancel(); }

 private:
  grpc::ClientContext& context_;
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader_;
};

}  // namespace

v1::DownloadRequest DownloadRequestFor(const std::string& document_id,
                                       const std::string& sha256,
                                       const AttachmentSink& sink,
                                       bool with_states) {
  v1::DownloadRequest request;
  request.set_document_id(document_id);
  request.set_sha256(sha256);
  request.set_offset(sink.offset());
  request.set_sha256_state(with_states);
  return request;
}

absl::StatusOr<uint64_t> DownloadOnce(
    grpc::ChannelInterface& channel, grpc::ClientContext& context,
    const std::string& document_id, const std::string& sha256,
    AttachmentSink& sink, sealing::Sha256Chain* whole,
    const ProgressCallback& progress, std::optional<uint64_t> expected_size) {
  // Answers come in as ByteBuffers: a chunk's bytes are hashed and given to
  // the sink where gRPC received them, not copied into a message first.
  GrpcAnswers answers(
      channel, context,
      DownloadRequestFor(document_id, sha256, sink, whole != nullptr));
  return DownloadAnswers(answers, sink, whole, progress, expected_size);
}

absl::StatusOr<uint64_t> DownloadAnswers(
    AnswerStream& reader, AttachmentSink& sink, sealing::Sha256Chain* whole,
    const ProgressCallback& progress, std::optional<uint64_t> expected_size) {
  // A second thread reads and parses the next chunks while this one checks
  // the last and hands it to the sink (which, with the progress callback,
  // runs on the caller's thread only): the network is not left waiting for
  // the hash.
  Handoff<ReceivedFrame> frames(kFramesAhead);
  std::thread reading([&] {
    grpc::ByteBuffer received;
    while (reader.Read(&received)) {
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
    reader.Cancel();  // ends a Read waiting for the broker
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
    (void)reader.Finish();
    return failed;
  }
  reading.join();  // the broker ended the stream: the thread has closed
  RETURN_IF_ERROR(reader.Finish());
  if (!sized) return absl::UnavailableError("download ended without an answer");
  if (sink.offset() != size) {
    return absl::UnavailableError(absl::StrCat(
        "the download ended at ", sink.offset(), " of ", size, " bytes"));
  }
  return size;
}

}  // namespace lienthong::attachment_io
