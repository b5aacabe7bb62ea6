// The transfer steps of lienthong/attachments.h in the form the SDK's own
// calls use: chunks checked by Chunk.sha256_state where the broker takes
// or sends it, so that each side hashes every byte once (the whole
// content's hash, continued over each chunk, checks the chunk too).
// Internal to the SDK.
#ifndef LIENTHONG_CLIENT_SDK_SRC_ATTACHMENT_IO_H_
#define LIENTHONG_CLIENT_SDK_SRC_ATTACHMENT_IO_H_

#include <cstdint>
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
