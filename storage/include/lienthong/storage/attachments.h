// Large attachments, stored content-addressed beside the store: each
// complete attachment is one file named by the SHA-256 of its content
// (<directory>/blobs/ab/abcd...), written chunk by chunk as it is uploaded,
// never held in memory whole. What is known about them (chunk hashes, who
// uploaded what, which documents reference which attachment, how far an
// interrupted upload got) lives in the store's records, so it is as durable
// as the documents.
//
//   ASSIGN_OR_RETURN(auto attachments, AttachmentStore::Open(options, store));
//   ASSIGN_OR_RETURN(auto upload,
//                    attachments->BeginUpload("org:000.00.00.H49", sha, size));
//   // send upload->progress() to the client, then for each chunk:
//   ASSIGN_OR_RETURN(bool durable, upload->Write(chunk));
//   // ... once upload->progress().complete, documents of H49 may reference
//   // it; the batch storing such a document carries References(document).
//
// An upload is made durable every `sync_bytes` (one fdatasync and one synced
// record: never one sync per chunk) and when it ends; what was durable is
// never sent again. A chunk that does not match its hash is refused with
// DATA_LOSS; a complete content that does not match the announced SHA-256
// too (and the upload starts over). Chunks are sealed at rest with the
// store's data keys when encryption at rest is on.
//
// An attachment's identity is its content's hash, but proving possession is
// per uploader: a caller may reference an attachment only after uploading
// all of it itself (a second uploader's chunks are checked against the
// stored ones and nothing is written twice), so nobody learns whether some
// content is stored by trying to reference or upload it.
#ifndef LIENTHONG_STORAGE_ATTACHMENTS_H_
#define LIENTHONG_STORAGE_ATTACHMENTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "lienthong/common/clock.h"
#include "lienthong/storage/store.h"
#include "lienthong/v1/attachments.pb.h"
#include "lienthong/v1/document.pb.h"

namespace lienthong::storage {

struct AttachmentOptions {
  // Where the attachment files live; created if missing. Required.
  std::string directory;
  // Largest attachment, bytes. Default 2 GiB.
  uint64_t max_bytes = uint64_t{2} << 30;
  // Bytes of every chunk but the last, 4 KiB .. 4 MiB. Default 1 MiB. Only
  // with a multiple of 64 (whole SHA-256 blocks) do chunks carry
  // Chunk.sha256_state (one SHA-256 pass per byte instead of two).
  uint64_t chunk_size = 1 << 20;
  // An upload is made durable at least every this many bytes. Default 16 MiB.
  uint64_t sync_bytes = 16 << 20;
  // How long after completing an upload the uploader may reference the
  // attachment in documents. Default 24 h.
  absl::Duration usable_for = absl::Hours(24);
  // How long an interrupted upload waits for its resume before it is
  // removed. Default 72 h.
  absl::Duration partial_kept_for = absl::Hours(72);
  // An upload that would leave less free disk than this is refused
  // (RESOURCE_EXHAUSTED). Default 256 MiB.
  uint64_t min_free_bytes = 256 << 20;
  // Files are written and read past the page cache (O_DIRECT) where the
  // file system allows it: attachments are streamed once and read rarely,
  // so caching them only pushes the store's hot pages out (and on a VM
  // that returns free memory to its host, every new cached page costs a
  // host fault). false: ordinary reads and writes; every recipient's
  // download may then come from the cache instead of the disk.
  bool direct_io = true;

  absl::Status Validate() const;
};

struct UploadProgress {
  uint64_t durable_bytes = 0;
  bool complete = false;
  absl::Time usable_until = absl::InfinitePast();  // when complete
  uint64_t resumed_bytes = 0;  // durable before this upload began
  // The content's SHA-256 (hex), when complete.
  std::string sha256;
  // An upload named at end: the hash state after durable_bytes (as
  // Chunk.sha256_state), while 0 < durable_bytes < size.
  std::string durable_state;
};

// One upload stream. Not thread-safe; one caller at a time.
class AttachmentUpload {
 public:
  virtual ~AttachmentUpload() = default;
  virtual uint64_t chunk_size() const = 0;
  // Where the upload stands: after BeginUpload, where the client goes on.
  virtual const UploadProgress& progress() const = 0;
  // Whether Write takes chunks with sha256_state instead of sha256
  // (UploadResponse.takes_sha256_state).
  virtual bool takes_sha256_state() const = 0;
  // Verifies and stores the next chunk: it must start where the previous
  // one ended (INVALID_ARGUMENT naming the expected offset otherwise) and be
  // chunk_size long, or the rest of the content (INVALID_ARGUMENT); its
  // data must match its sha256 or sha256_state (DATA_LOSS naming the
  // chunk; a chunk with sha256_state costs one SHA-256 pass in all, one with
  // sha256 two). With the last
  // byte the whole content is verified and the attachment made usable
  // (progress().complete; DATA_LOSS when the whole does not match, and the
  // upload starts over). Returns true when progress().durable_bytes moved.
  absl::StatusOr<bool> Write(const v1::Chunk& chunk) {
    const absl::string_view data = chunk.data();
    return Write(chunk, absl::MakeConstSpan(&data, 1));
  }
  // As Write(chunk), the chunk's data given as `data` (its pieces in
  // order, where they were received) instead of chunk.data().
  virtual absl::StatusOr<bool> Write(
      const v1::Chunk& fields, absl::Span<const absl::string_view> data) = 0;
  // Makes everything written so far durable (the stream ended early).
  // Returns true when progress().durable_bytes moved.
  virtual absl::StatusOr<bool> Checkpoint() = 0;
};

// What AttachmentReader::Read puts in a chunk beside its data.
struct ChunkReadOptions {
  // Chunk.sha256: one more SHA-256 pass over the chunk when the attachment
  // is stored with states. Given anyway for an attachment stored without
  // them (by a broker before they were kept). Default true.
  bool sha256 = true;
  // Chunk.sha256_state, where the attachment has states. Default false.
  bool sha256_state = false;
  // Check the chunk against the recorded hash (one SHA-256 pass). Turned
  // off only with sha256_state and without sha256, for a reader that checks
  // every chunk by its state itself (a downloader that takes states: it
  // then finds a damaged file, naming the chunk). Default true.
  bool verify = true;
};

// Bytes in memory that `owner` keeps alive (whatever holds them).
struct SharedBytes {
  std::shared_ptr<const void> owner;
  absl::string_view data;
};

// A chunk whose bytes stay in the memory they were read into: `fields` has
// its offset and hashes (no data), `content` its bytes.
struct SharedChunk {
  v1::Chunk fields;
  SharedBytes content;
};

// Reads one complete attachment. Thread-compatible.
class AttachmentReader {
 public:
  virtual ~AttachmentReader() = default;
  virtual uint64_t size() const = 0;
  virtual uint64_t chunk_size() const = 0;
  // The chunk starting at `offset` (a multiple of chunk_size, below size),
  // checked against its stored hash or state (one SHA-256 pass; see
  // ChunkReadOptions::verify): DATA_LOSS when the file was altered.
  absl::StatusOr<v1::Chunk> Read(uint64_t offset,
                                 const ChunkReadOptions& options) {
    v1::Chunk chunk;
    absl::Status s = ReadInto(offset, options, &chunk);
    if (!s.ok()) return s;
    return chunk;
  }
  absl::StatusOr<v1::Chunk> Read(uint64_t offset) {
    return Read(offset, ChunkReadOptions());
  }
  // Read into `chunk`, reusing its buffers (a reader of many chunks does
  // not allocate and clear memory for each); on error `chunk` holds
  // nothing usable.
  virtual absl::Status ReadInto(uint64_t offset,
                                const ChunkReadOptions& options,
                                v1::Chunk* chunk) = 0;
  // As ReadInto, the bytes left in memory of their own (read past the page
  // cache, the disk put them there): for a caller that hands them on
  // without copying them (a download's gRPC messages).
  virtual absl::Status ReadShared(uint64_t offset,
                                  const ChunkReadOptions& options,
                                  SharedChunk* chunk) = 0;
};

struct AttachmentCollection {
  uint64_t partial_uploads_removed = 0;
  uint64_t attachments_removed = 0;
  uint64_t grants_expired = 0;
  uint64_t bytes_freed = 0;  // on disk
};

struct AttachmentStats {
  uint64_t attachments = 0;  // complete
  uint64_t bytes = 0;        // their content
  uint64_t partial_uploads = 0;
  uint64_t partial_bytes = 0;  // durable so far
  uint64_t uploads_running = 0;
};

class AttachmentStore {
 public:
  // `store` (not owned) must outlive the attachment store. INVALID_ARGUMENT
  // for bad options; INTERNAL when the directory cannot be made.
  static absl::StatusOr<std::unique_ptr<AttachmentStore>> Open(
      const AttachmentOptions& options, Store* store,
      Clock* clock = Clock::Real());
  virtual ~AttachmentStore() = default;

  virtual const AttachmentOptions& options() const = 0;

  // Starts (or resumes) `uploader`'s upload of the content with `sha256`
  // (64 hex digits) and `size`. `uploader` names the caller ("org:<code>",
  // "broker:<name>"). INVALID_ARGUMENT for a malformed hash,
  // RESOURCE_EXHAUSTED above max_bytes or when the disk would fill, ABORTED
  // while another upload of the same content by the same uploader runs or
  // while the uploader has 16 uploads running.
  // Thread-safe.
  virtual absl::StatusOr<std::unique_ptr<AttachmentUpload>> BeginUpload(
      absl::string_view uploader, absl::string_view sha256, uint64_t size) = 0;

  // Starts (or resumes) `uploader`'s upload of `size` bytes of content
  // whose hash the upload finds itself (UploadStart.named_at_end): its
  // chunks are kept under a name made from `upload_key` (the uploader's, 1
  // to 256 bytes: the same key resumes what is durable) and stored under
  // the content's SHA-256 when the last one arrives (progress().sha256).
  // `restart` drops what is durable under the key first. Errors as
  // BeginUpload (INVALID_ARGUMENT for a malformed key). Thread-safe.
  virtual absl::StatusOr<std::unique_ptr<AttachmentUpload>>
  BeginUploadNamedAtEnd(absl::string_view uploader,
                        absl::string_view upload_key, uint64_t size,
                        bool restart) = 0;

  // OK when the attachment is complete with this size and `uploader`
  // completed an upload of it within usable_for; FAILED_PRECONDITION
  // saying which is missing otherwise (INVALID_ARGUMENT for a size that is
  // not the stored content's). Thread-safe.
  virtual absl::Status CheckUsable(absl::string_view uploader,
                                   absl::string_view sha256, uint64_t size) = 0;

  // NOT_FOUND when no complete attachment has this hash. Thread-safe.
  virtual absl::StatusOr<std::unique_ptr<AttachmentReader>> Open(
      absl::string_view sha256) = 0;

  // Removes interrupted uploads older than partial_kept_for, lets uploaders'
  // rights expire, and removes every complete attachment that no stored
  // document references and no uploader may still reference (an hour's
  // grace after usable_for, for sends in flight). Never one a document
  // references. Thread-safe.
  virtual absl::StatusOr<AttachmentCollection> CollectGarbage() = 0;

  virtual absl::StatusOr<AttachmentStats> Stats() = 0;
};

// How uploaders are named: an organization, and a peer broker pushing the
// attachments of a document it hands over.
inline std::string OrgUploader(absl::string_view code) {
  return absl::StrCat("org:", code);
}
inline std::string BrokerUploader(absl::string_view name) {
  return absl::StrCat("broker:", name);
}

// The records to store with `document` (in the same write batch) that tie
// it to its stored attachments, so they are kept as long as it is.
std::vector<Record> AttachmentReferences(const v1::Document& document);

}  // namespace lienthong::storage

#endif  // LIENTHONG_STORAGE_ATTACHMENTS_H_
