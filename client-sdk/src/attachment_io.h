// The transfer steps of lienthong/attachments.h in the form the SDK's own
// calls use: chunks checked by Chunk.sha256_state where the broker takes
// or sends it, so that each side hashes every byte once (the whole
// content's hash, continued over each chunk, checks the chunk too).
// Internal to the SDK.
#ifndef LIENTHONG_CLIENT_SDK_SRC_ATTACHMENT_IO_H_
#define LIENTHONG_CLIENT_SDK_SRC_ATTACHMENT_IO_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lienthong/attachments.h"
#include "lienthong/common/sha256_chain.h"

namespace lienthong::attachment_io {

// A source's SHA-256 and the states of its hash along the way, from one
// read of the whole: what an upload needs to send each chunk with its
// Chunk.sha256_state without hashing it again.
class SourceHash {
 public:
  // At most this many states are kept (32 bytes each): their spacing
  // grows with the source instead.
  static constexpr uint64_t kMaxStates = 1 << 16;

  // Reads all of `source` once, a piece at a time. The source's error.
  static absl::StatusOr<SourceHash> Of(AttachmentSource& source);
  // Only the hash (lower-case hex): chunks are sent with their sha256.
  static SourceHash OfSha256(std::string sha256);

  const std::string& sha256() const { return sha256_; }
  // Chunk.sha256_state of a chunk ending at `end` (at most the size), where
  // known: nullopt when chunks of that size cannot use the states.
  std::optional<std::string> StateAt(uint64_t end) const;
  // Whether every chunk of `chunk_size` has a state.
  bool Covers(uint64_t chunk_size) const {
    return spacing_ != 0 && chunk_size % spacing_ == 0;
  }

 private:
  std::string sha256_;  // hex
  std::string digest_;  // raw; empty when only the hex is known
  uint64_t size_ = 0;
  uint64_t spacing_ = 0;  // states after every spacing_ bytes; 0: none
  std::string states_;    // 32 bytes each, after spacing_, 2 * spacing_...
};

// UploadOnce, sending chunks with their sha256_state when the broker takes
// it and `hash` has it (sha256 otherwise).
absl::StatusOr<v1::UploadResponse> UploadOnce(grpc::ChannelInterface& channel,
                                              grpc::ClientContext& context,
                                              AttachmentSource& source,
                                              const SourceHash& hash,
                                              const ProgressCallback& progress);

// The hash of a source as an upload named at end sends it
// (UploadStart.named_at_end): each chunk is hashed as it is sent, and the
// hash where each chunk ended is kept across the attempts of one upload,
// so that an attempt resuming where the broker's durable bytes end checks
// them against its content without reading it again.
class SentHash {
 public:
  // The hash of the first `bytes` bytes of `source`: as kept, or hashed now
  // from the nearest point kept before (a new process resuming an upload
  // reads the part the broker holds once). The source's error.
  absl::StatusOr<sealing::Sha256Chain> At(AttachmentSource& source,
                                          uint64_t bytes);
  // Keeps `chain` (a chunk was just hashed into it).
  void Keep(const sealing::Sha256Chain& chain);

 private:
  std::map<uint64_t, sealing::Sha256Chain> kept_;  // by bytes hashed
};

// What an upload named at end is resumed by: its size and the hashes of its
// first and last MiB (UploadStart.upload_key). One read of those.
absl::StatusOr<std::string> UploadKeyOf(AttachmentSource& source);

// One attempt of an upload named at end (UploadStart.named_at_end with
// `upload_key`; `*restart` asks the broker to drop what it holds under the
// key). Hashes what it sends into `hash`; where the broker holds durable
// bytes that are not this content's beginning it sets `*restart` and
// returns ABORTED (the next attempt starts over). Returns the broker's
// last answer, complete with the content's sha256 (checked against the
// hash of what was sent: DATA_LOSS otherwise), as UploadOnce otherwise.
absl::StatusOr<v1::UploadResponse> UploadNamedAtEndOnce(
    grpc::ChannelInterface& channel, grpc::ClientContext& context,
    AttachmentSource& source, const std::string& upload_key, bool* restart,
    SentHash& hash, const ProgressCallback& progress);

// The answers of one download call (DownloadResponses, as attachment_wire
// reads them), whatever carries them: a gRPC call, or a connection of the
// bulk path.
class AnswerStream {
 public:
  virtual ~AnswerStream() = default;
  // The next answer; false once the call ended (Finish says how).
  virtual bool Read(grpc::ByteBuffer* message) = 0;
  // How the call ended, once Read returned false (or after Cancel).
  virtual absl::Status Finish() = 0;
  // Ends a Read waiting on another thread. Thread-safe.
  virtual void Cancel() = 0;
};

// An upload call's messages, whatever carries them: a gRPC call, or a
// connection of the bulk path. One thread.
class UploadStream {
 public:
  virtual ~UploadStream() = default;
  // Sends an UploadRequest; false once the call ended (Finish says how).
  virtual bool Write(const grpc::ByteBuffer& message) = 0;
  // The next UploadResponse; false once the call ended.
  virtual bool Read(v1::UploadResponse* response) = 0;
  // No more requests.
  virtual void WritesDone() = 0;
  // How the call ended.
  virtual absl::Status Finish() = 0;
  // Ends the call early.
  virtual void Cancel() = 0;
  // Whether the broker answered anything on it (not the case when a bulk
  // connection was refused after its handshake).
  virtual bool Answered() const = 0;
};

// An Upload call on `channel`, bound to `context`.
std::unique_ptr<UploadStream> GrpcUploadStream(grpc::ChannelInterface& channel,
                                               grpc::ClientContext& context);

// UploadOnce and UploadNamedAtEndOnce over `stream`.
absl::StatusOr<v1::UploadResponse> UploadOnce(UploadStream& stream,
                                              AttachmentSource& source,
                                              const SourceHash& hash,
                                              const ProgressCallback& progress);
absl::StatusOr<v1::UploadResponse> UploadNamedAtEndOnce(
    UploadStream& stream, AttachmentSource& source,
    const std::string& upload_key, bool* restart, SentHash& hash,
    const ProgressCallback& progress);

// What a download asks for: from where `sink` stands, by states when
// `whole` is given.
v1::DownloadRequest DownloadRequestFor(const std::string& document_id,
                                       const std::string& sha256,
                                       const AttachmentSink& sink,
                                       bool with_states);

// DownloadOnce's work on the answers `stream` brings.
absl::StatusOr<uint64_t> DownloadAnswers(AnswerStream& stream,
                                         AttachmentSink& sink,
                                         sealing::Sha256Chain* whole,
                                         const ProgressCallback& progress,
                                         std::optional<uint64_t> expected_size);

// Where a broker's bulk path is (attachments.bulk_listen) and who calls it.
struct BulkTarget {
  std::string host;  // the broker's, as dialled
  int port = 0;
  std::string server_name;       // its certificate must name it (DNS or IP SAN)
  std::string certificate_file;  // the caller's, as for gRPC
  std::string private_key_file;
  std::string ca_file;
  std::string crl_directory;  // empty: no revocation checking
  // The longest connecting may take.
  absl::Duration connect_timeout = absl::Seconds(5);
  // The longest the handshake, or a wait for the next answer, may take.
  absl::Duration io_timeout = absl::Seconds(60);
};

// Connects to the bulk path (mutual TLS 1.3, ALPN lienthong-bulk/1, the
// broker's certificate checked against ca_file, crl_directory and
// server_name) and sends `request`. UNAVAILABLE naming the trouble when it
// cannot connect or the handshake fails; INVALID_ARGUMENT naming a file
// that cannot be used.
absl::StatusOr<std::unique_ptr<AnswerStream>> OpenBulkDownload(
    const BulkTarget& target, const v1::DownloadRequest& request);
// The same for an upload (BulkRequest.upload): the UploadRequests follow
// on the stream.
absl::StatusOr<std::unique_ptr<UploadStream>> OpenBulkUpload(
    const BulkTarget& target);

// DownloadOnce that also continues `whole` (optional), the hash of what
// `sink` holds (it has taken exactly sink.offset() bytes), over each chunk,
// and checks the chunk by its sha256_state when the broker sends it (by its
// sha256 otherwise), before the sink sees it. `whole` is left at what the
// sink holds, also when the download breaks. With `expected_size` (the
// document's), a broker announcing another size is refused (DATA_LOSS)
// before the sink takes a byte: it cannot make the sink take more.
absl::StatusOr<uint64_t> DownloadOnce(
    grpc::ChannelInterface& channel, grpc::ClientContext& context,
    const std::string& document_id, const std::string& sha256,
    AttachmentSink& sink, sealing::Sha256Chain* whole,
    const ProgressCallback& progress,
    std::optional<uint64_t> expected_size = std::nullopt);

}  // namespace lienthong::attachment_io

#endif  // LIENTHONG_CLIENT_SDK_SRC_ATTACHMENT_IO_H_
