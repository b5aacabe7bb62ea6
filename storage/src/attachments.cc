// Attachment files and their records.
//
//   <directory>/blobs/<sha[0:2]>/<sha>       a complete attachment
//   <directory>/partial/<name>.<uploader id> an upload in progress
//
// An upload in progress is named by the SHA-256 it announced, or (named at
// end: the hash is known with the last chunk) by a name made from its
// upload key, in the same form; its chunks are sealed at rest under that
// name (StoredAttachment.sealed_as).
//
// Chunk i of a file sits at i * (chunk_size + overhead), where overhead is
// what sealing at rest adds to each chunk (0 when off). Records (store
// records, synced):
//   att/b/<sha>             -> StoredAttachment
//   att/u/<name>/<uploader> -> AttachmentUploadState (durable progress)
//   att/g/<sha>/<uploader>  -> AttachmentGrant
//   att/r/<sha>/<document>  -> "1" (the document references it)
#include "lienthong/storage/attachments.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/time_util.h"
#include "lienthong/common/background_job.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/sha256_chain.h"
#include "lienthong/common/status_macros.h"
#include "storage/src/direct_file.h"

namespace lienthong::storage {
namespace {

constexpr absl::string_view kBlobPrefix = "att/b/";
constexpr absl::string_view kUploadPrefix = "att/u/";
constexpr absl::string_view kGrantPrefix = "att/g/";
constexpr absl::string_view kRefPrefix = "att/r/";
// Sends that checked a right just before it lapsed are still in flight.
constexpr absl::Duration kGrantGrace = absl::Hours(1);
// Uploads one uploader may have running at once.
constexpr size_t kMaxUploadsPerUploader = 16;

google::protobuf::Timestamp TimestampOf(absl::Time t) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
      absl::ToUnixNanos(t));
}

absl::Time TimeOf(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixNanos(
      google::protobuf::util::TimeUtil::TimestampToNanoseconds(ts));
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  int e = errno;
  std::string message =
      absl::StrCat("attachments: ", what, " ", path, ": ", std::strerror(e));
  if (e == ENOSPC || e == EDQUOT) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

absl::Status FsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("open", path);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("fsync", path);
  return absl::OkStatus();
}

// The chunk layout shared by uploads and readers.
struct Layout {
  uint64_t size = 0;
  uint64_t chunk_size = 0;
  bool encrypted = false;
  uint64_t overhead = 0;

  uint64_t chunks() const { return (size + chunk_size - 1) / chunk_size; }
  uint64_t ChunkBytes(uint64_t index) const {
    return std::min(chunk_size, size - index * chunk_size);
  }
  uint64_t FileOffset(uint64_t index) const {
    return index * (chunk_size + overhead);
  }
  // Where the records of the first `bytes` of content end in the file
  // (`bytes` ends a chunk, or is the size).
  uint64_t FileEnd(uint64_t bytes) const {
    if (bytes == 0) return 0;
    const uint64_t last = (bytes - 1) / chunk_size;
    return FileOffset(last) + (bytes - last * chunk_size) + overhead;
  }
};

std::string ChunkContext(absl::string_view sha256, uint64_t index) {
  return absl::StrCat("attachment ", sha256, " chunk ", index);
}

// The hash of a content whose chunks before `index` left `states`
// (Chunk.sha256_state of each); nullopt when a state is malformed.
std::optional<sealing::Sha256Chain> ChainBefore(
    const google::protobuf::RepeatedPtrField<std::string>& states,
    uint64_t index, const Layout& layout) {
  if (index == 0) return sealing::Sha256Chain();
  return sealing::Sha256Chain::Resume(states[static_cast<int>(index - 1)],
                                      index * layout.chunk_size);
}

// Chunk.sha256_state of the chunk that ends where `chain` stands.
std::string StateAfter(const sealing::Sha256Chain& chain,
                       const Layout& layout) {
  return chain.bytes() == layout.size ? chain.Digest() : chain.State();
}

// Copies `data` to `into` a part at a time, continuing `chain` over each
// part where it was copied to (in the cache then): the bytes are read from
// where they arrived once, not once to hash and again to copy.
void CopyHashing(absl::Span<const absl::string_view> data, char* into,
                 sealing::Sha256Chain& chain) {
  constexpr size_t kPart = 16 << 10;  // well inside the L1 cache
  for (absl::string_view piece : data) {
    while (!piece.empty()) {
      const size_t n = std::min(kPart, piece.size());
      std::memcpy(into, piece.data(), n);
      chain.Update(absl::string_view(into, n));
      into += n;
      piece.remove_prefix(n);
    }
  }
}

// The record of chunk `index` (sealed when the layout is), in memory of its
// own (the disk reads into it when `fd` is O_DIRECT).
absl::StatusOr<SharedBytes> ReadRecord(int fd, const std::string& path,
                                       const Layout& layout, uint64_t index) {
  return ReadShared(fd, layout.ChunkBytes(index) + layout.overhead,
                    layout.FileOffset(index), path);
}

// Chunk `index`'s content from its record `raw` (opened when sealed).
absl::StatusOr<SharedBytes> ContentOf(Store* store, const Layout& layout,
                                      absl::string_view sha256, uint64_t index,
                                      SharedBytes raw) {
  if (!layout.encrypted) return raw;
  ASSIGN_OR_RETURN(
      std::string opened,
      store->OpenBeside(std::string(raw.data), ChunkContext(sha256, index)));
  auto owned = std::make_shared<const std::string>(std::move(opened));
  const absl::string_view view(*owned);
  return SharedBytes{std::move(owned), view};
}

class AttachmentStoreImpl;

class ReaderImpl final : public AttachmentReader {
 public:
  ReaderImpl(Store* store, int fd, std::string path, std::string sha256,
             v1::StoredAttachment meta)
      : store_(store),
        fd_(fd),
        path_(std::move(path)),
        sha256_(std::move(sha256)),
        meta_(std::move(meta)) {
    layout_.size = meta_.size();
    layout_.chunk_size = meta_.chunk_size();
    layout_.encrypted = meta_.encrypted();
    layout_.overhead = meta_.record_overhead();
  }
  ~ReaderImpl() override {
    if (ahead_.pending()) ahead_.Take().IgnoreError();  // it reads fd_
    ::close(fd_);
  }

  uint64_t size() const override { return layout_.size; }
  uint64_t chunk_size() const override { return layout_.chunk_size; }

  absl::Status ReadInto(uint64_t offset, const ChunkReadOptions& options,
                        v1::Chunk* chunk) override {
    SharedChunk shared;
    RETURN_IF_ERROR(ReadShared(offset, options, &shared));
    // Into the chunk's own buffer (reused: no allocation per chunk).
    chunk->mutable_data()->assign(shared.content.data.data(),
                                  shared.content.data.size());
    chunk->set_offset(shared.fields.offset());
    chunk->set_sha256(std::move(*shared.fields.mutable_sha256()));
    chunk->set_sha256_state(std::move(*shared.fields.mutable_sha256_state()));
    return absl::OkStatus();
  }

  absl::Status ReadShared(uint64_t offset, const ChunkReadOptions& options,
                          SharedChunk* chunk) override {
    if (offset % layout_.chunk_size != 0 || offset >= layout_.size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "offset: ", offset, " is not the start of a chunk of attachment ",
          sha256_, " (", layout_.size, " bytes in chunks of ",
          layout_.chunk_size, ")"));
    }
    uint64_t index = offset / layout_.chunk_size;
    // Content stored with states is checked by continuing the hash of the
    // whole from the state before the chunk: one pass, no per-chunk hash.
    const bool by_state = meta_.chunk_state_size() > 0;
    const int checks =
        by_state ? meta_.chunk_state_size() : meta_.chunk_sha256_size();
    if (index >= static_cast<uint64_t>(checks)) {
      return absl::DataLossError(absl::StrCat("attachments: the record of ",
                                              sha256_, " lacks chunk ", index));
    }
    ASSIGN_OR_RETURN(SharedBytes content, ReadContent(index));
    const absl::string_view data = content.data;
    std::string digest;
    bool matches = true;
    if (by_state && !options.verify && options.sha256_state &&
        !options.sha256) {
      // Whoever reads it checks it by its state (and a file cut short
      // failed above).
    } else if (by_state) {
      std::optional<sealing::Sha256Chain> chain =
          ChainBefore(meta_.chunk_state(), index, layout_);
      if (chain) chain->Update(data);
      matches = chain && StateAfter(*chain, layout_) ==
                             meta_.chunk_state(static_cast<int>(index));
    } else {
      digest = sealing::Sha256Raw(data);
      matches = digest == meta_.chunk_sha256(static_cast<int>(index));
    }
    if (!matches) {
      return absl::DataLossError(
          absl::StrCat("attachments: chunk ", index, " of ", sha256_,
                       " does not match its recorded SHA-256: the file ", path_,
                       " was altered or damaged"));
    }
    chunk->fields.Clear();
    chunk->fields.set_offset(offset);
    if (options.sha256 || !by_state) {
      if (digest.empty()) digest = sealing::Sha256Raw(data);
      chunk->fields.set_sha256(sealing::HexOf(digest));
    }
    if (options.sha256_state && by_state) {
      chunk->fields.set_sha256_state(
          meta_.chunk_state(static_cast<int>(index)));
    }
    chunk->content = std::move(content);
    return absl::OkStatus();
  }

 private:
  // Chunk `index`'s content, from the read ahead when it is that chunk;
  // then reads the next one ahead (reads past the page cache wait for the
  // disk, and a download reads in order, sending one chunk while the next
  // is read).
  absl::StatusOr<SharedBytes> ReadContent(uint64_t index) {
    absl::StatusOr<SharedBytes> raw;
    if (ahead_.pending()) {
      raw = ahead_.Take();  // waits for it (also when not wanted)
      if (ahead_index_ != index) raw = ReadRecord(fd_, path_, layout_, index);
    } else {
      raw = ReadRecord(fd_, path_, layout_, index);
    }
    RETURN_IF_ERROR(raw.status());
    if (index + 1 < layout_.chunks()) {
      ahead_index_ = index + 1;
      // Without a thread to spare the next chunk is read when asked for.
      ahead_.Start([this, next = index + 1] {
        return ReadRecord(fd_, path_, layout_, next);
      });
    }
    return ContentOf(store_, layout_,
                     meta_.sealed_as().empty() ? sha256_ : meta_.sealed_as(),
                     index, *std::move(raw));
  }

  Store* const store_;
  const int fd_;
  const std::string path_;
  const std::string sha256_;
  const v1::StoredAttachment meta_;
  Layout layout_;
  uint64_t ahead_index_ = 0;
  BackgroundJob<absl::StatusOr<SharedBytes>> ahead_{"lt-disk-read"};
};

class AttachmentStoreImpl final : public AttachmentStore {
 public:
  AttachmentStoreImpl(const AttachmentOptions& options, Store* store,
                      Clock* clock)
      : options_(options), store_(store), clock_(clock) {}

  const AttachmentOptions& options() const override { return options_; }

  absl::StatusOr<std::unique_ptr<AttachmentUpload>> BeginUpload(
      absl::string_view uploader, absl::string_view sha256,
      uint64_t size) override;
  absl::StatusOr<std::unique_ptr<AttachmentUpload>> BeginUploadNamedAtEnd(
      absl::string_view uploader, absl::string_view upload_key, uint64_t size,
      bool restart) override;

  absl::Status CheckUsable(absl::string_view uploader, absl::string_view sha256,
                           uint64_t size) override {
    // The uploader's own right first: one who never uploaded the content
    // hears the same whether anyone else stored it or not.
    ASSIGN_OR_RETURN(std::optional<absl::Time> granted,
                     GrantedAt(sha256, uploader));
    std::optional<v1::StoredAttachment> meta;
    if (granted) {
      ASSIGN_OR_RETURN(meta, Lookup(sha256));
    }
    if (!granted || !meta) {
      return absl::FailedPreconditionError(absl::StrCat(
          "attachment ", sha256, " has not been uploaded by ", uploader,
          " to this broker (upload it with AttachmentService/Upload first)"));
    }
    if (meta->size() != size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "attachment ", sha256, " has ", meta->size(), " bytes, not ", size));
    }
    if (!Usable(*granted)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "attachment ", sha256, " was uploaded by ", uploader, " at ",
          absl::FormatTime(*granted),
          ", longer ago than attachments.usable_for: upload it again (only "
          "what the broker lacks is sent)"));
    }
    return absl::OkStatus();
  }

  // When `uploader` last completed an upload of `sha256` (nullopt: never,
  // or its right was collected).
  absl::StatusOr<std::optional<absl::Time>> GrantedAt(
      absl::string_view sha256, absl::string_view uploader) {
    ASSIGN_OR_RETURN(std::optional<std::string> raw,
                     ReadRecord(GrantKey(sha256, uploader)));
    v1::AttachmentGrant g;
    if (!raw || !g.ParseFromString(*raw)) return std::nullopt;
    return TimeOf(g.at());
  }
  // Whether a right given at `granted` still lets its holder reference.
  bool Usable(absl::Time granted) const {
    return granted + options_.usable_for >= clock_->Now();
  }

  absl::StatusOr<std::unique_ptr<AttachmentReader>> Open(
      absl::string_view sha256) override {
    ASSIGN_OR_RETURN(std::optional<v1::StoredAttachment> meta, Lookup(sha256));
    if (!meta) {
      return absl::NotFoundError(
          absl::StrCat("attachment ", sha256, " is not stored here"));
    }
    std::string path = BlobPath(sha256);
    int fd = OpenMaybeDirect(path, O_RDONLY | O_CLOEXEC, options_.direct_io);
    if (fd < 0) {
      if (errno == ENOENT) {
        return absl::DataLossError(absl::StrCat(
            "attachments: the file of ", sha256, " (", path, ") is missing"));
      }
      return Errno("open", path);
    }
    return std::make_unique<ReaderImpl>(store_, fd, std::move(path),
                                        std::string(sha256), *std::move(meta));
  }

  absl::StatusOr<AttachmentCollection> CollectGarbage() override;
  absl::StatusOr<AttachmentStats> Stats() override;

  // ---- for uploads ----
  Store* store() const { return store_; }
  Clock* clock() const { return clock_; }

  std::string BlobPath(absl::string_view sha256) const {
    return absl::StrCat(options_.directory, "/blobs/", sha256.substr(0, 2), "/",
                        sha256);
  }
  std::string PartialPath(absl::string_view sha256,
                          absl::string_view uploader) const {
    return absl::StrCat(options_.directory, "/partial/", sha256, ".",
                        sealing::Sha256Hex(uploader).substr(0, 16));
  }
  static std::string BlobKey(absl::string_view sha256) {
    return absl::StrCat(kBlobPrefix, sha256);
  }
  // An upload running, in active_ and reserved_.
  static std::string ActiveKey(absl::string_view sha256,
                               absl::string_view uploader) {
    return absl::StrCat(sha256, "/", uploader);
  }
  static std::string UploadKey(absl::string_view sha256,
                               absl::string_view uploader) {
    return absl::StrCat(kUploadPrefix, sha256, "/", uploader);
  }
  static std::string GrantKey(absl::string_view sha256,
                              absl::string_view uploader) {
    return absl::StrCat(kGrantPrefix, sha256, "/", uploader);
  }

  absl::StatusOr<std::optional<std::string>> ReadRecord(
      const std::string& key) {
    std::optional<std::string> value;
    RETURN_IF_ERROR(store_->ScanRecords(key, [&](const Record& r) {
      if (r.key == key) value = r.value;
    }));
    return value;
  }

  absl::StatusOr<std::optional<v1::StoredAttachment>> ReadBlob(
      absl::string_view sha256) {
    ASSIGN_OR_RETURN(std::optional<std::string> raw,
                     ReadRecord(BlobKey(sha256)));
    if (!raw) return std::nullopt;
    v1::StoredAttachment meta;
    if (!meta.ParseFromString(*raw)) {
      return absl::DataLossError(
          absl::StrCat("attachments: the record of ", sha256, " is malformed"));
    }
    return meta;
  }

  // ReadBlob for a hash given by a caller: INVALID_ARGUMENT when malformed.
  absl::StatusOr<std::optional<v1::StoredAttachment>> Lookup(
      absl::string_view sha256) {
    if (!sealing::IsSha256Hex(sha256)) {
      return absl::InvalidArgumentError(
          "sha256: must be 64 lower-case hex digits");
    }
    return ReadBlob(sha256);
  }

  // The overhead sealing adds to a chunk (0: encryption at rest is off).
  absl::StatusOr<std::optional<uint64_t>> SealOverhead() {
    ASSIGN_OR_RETURN(std::optional<std::string> sealed,
                     store_->SealBeside("", "overhead"));
    if (!sealed) return std::nullopt;
    return sealed->size();
  }

  // Makes `path` the complete attachment `sha256` and records it with the
  // uploader's grant, in one synced write (the upload's record, under
  // `name`, goes).
  absl::Status Complete(const std::string& partial, absl::string_view sha256,
                        absl::string_view name, absl::string_view uploader,
                        std::optional<v1::StoredAttachment> meta) {
    absl::MutexLock lock(&mu_);
    WriteBatch batch;
    if (meta) {
      ASSIGN_OR_RETURN(std::optional<v1::StoredAttachment> existing,
                       ReadBlob(sha256));
      if (existing && BlobIntact(sha256, *existing)) {
        // Another uploader completed the same content meanwhile.
        ::unlink(partial.c_str());
      } else {
        std::string path = BlobPath(sha256);
        std::string dir = path.substr(0, path.rfind('/'));
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) {
          return absl::InternalError(
              absl::StrCat("attachments: mkdir ", dir, ": ", ec.message()));
        }
        if (::rename(partial.c_str(), path.c_str()) != 0)
          return Errno("rename to", path);
        RETURN_IF_ERROR(FsyncPath(dir));
        RETURN_IF_ERROR(FsyncPath(partial.substr(0, partial.rfind('/'))));
        *meta->mutable_stored_at() = TimestampOf(clock_->Now());
        batch.records.push_back({BlobKey(sha256), meta->SerializeAsString()});
      }
    }
    v1::AttachmentGrant grant;
    *grant.mutable_at() = TimestampOf(clock_->Now());
    batch.records.push_back(
        {GrantKey(sha256, uploader), grant.SerializeAsString()});
    batch.records.push_back({UploadKey(name, uploader), ""});
    return store_->WriteSync(std::move(batch)).status();
  }

  // BeginUpload and BeginUploadNamedAtEnd: the upload named `sha256` (the
  // hash, or the name of an upload named at end).
  absl::StatusOr<std::unique_ptr<AttachmentUpload>> Begin(
      absl::string_view uploader, absl::string_view sha256, uint64_t size,
      bool named_at_end, bool restart);

  // Whether the file of stored attachment `sha256` (record `meta`) is there
  // with the length its record gives. One lost or cut since (a disk fault,
  // a mistake) is taken again from the next complete upload instead of
  // being kept as stored. (Damage inside a file of the right length is
  // found by the checks of every read.)
  bool BlobIntact(absl::string_view sha256,
                  const v1::StoredAttachment& meta) const {
    Layout l{meta.size(), meta.chunk_size(), meta.encrypted(),
             meta.record_overhead()};
    struct stat st;
    if (::stat(BlobPath(sha256).c_str(), &st) != 0) return false;
    return static_cast<uint64_t>(st.st_size) == l.FileEnd(l.size);
  }

  void EndUpload(const std::string& key) {
    absl::MutexLock lock(&mu_);
    active_.erase(key);
    reserved_.erase(key);
  }

  // What upload `key` may still write: disk kept for it.
  void Reserve(const std::string& key, uint64_t bytes) {
    absl::MutexLock lock(&mu_);
    if (auto it = reserved_.find(key); it != reserved_.end())
      it->second = bytes;
  }

 private:
  const AttachmentOptions options_;
  Store* const store_;
  Clock* const clock_;
  absl::Mutex mu_;
  // sha256 "/" uploader of the uploads running now.
  std::set<std::string> active_ ABSL_GUARDED_BY(mu_);
  // Disk that running uploads of new content may still write, by key: an
  // upload starts only if it fits besides them.
  absl::flat_hash_map<std::string, uint64_t> reserved_ ABSL_GUARDED_BY(mu_);
};

class UploadImpl final : public AttachmentUpload {
 public:
  // `sha256`: the hash announced, or (`named_at_end`) the upload's name.
  UploadImpl(AttachmentStoreImpl* owner, std::string uploader,
             std::string sha256, Layout layout, bool named_at_end)
      : owner_(owner),
        uploader_(std::move(uploader)),
        sha256_(std::move(sha256)),
        layout_(layout),
        chained_(layout.chunk_size % sealing::Sha256Chain::kBlockBytes == 0),
        named_at_end_(named_at_end) {}

  ~UploadImpl() override {
    out_.reset();  // waits for its background write, which uses fd_
    if (fd_ >= 0) ::close(fd_);
    owner_->EndUpload(AttachmentStoreImpl::ActiveKey(sha256_, uploader_));
  }

  // Picks up what is durable from an earlier upload of this uploader (its
  // partial file, each chunk checked against the recorded hashes). With
  // `renew`, the uploader's right to stored content is renewed instead.
  absl::Status Start(bool renew);

  uint64_t chunk_size() const override { return layout_.chunk_size; }
  const UploadProgress& progress() const override { return progress_; }
  bool takes_sha256_state() const override { return chained_; }

  using AttachmentUpload::Write;
  absl::StatusOr<bool> Write(const v1::Chunk& chunk,
                             absl::Span<const absl::string_view> data) override;

  absl::StatusOr<bool> Checkpoint() override {
    if (!ended_.ok()) return ended_;
    if (progress_.complete || written_ == progress_.durable_bytes) return false;
    RETURN_IF_ERROR(out_->Sync());
    v1::AttachmentUploadState state;
    Describe(&state);
    *state.mutable_updated_at() = TimestampOf(owner_->clock()->Now());
    WriteBatch batch;
    batch.records.push_back({AttachmentStoreImpl::UploadKey(sha256_, uploader_),
                             state.SerializeAsString()});
    RETURN_IF_ERROR(owner_->store()->WriteSync(std::move(batch)).status());
    progress_.durable_bytes = written_;
    NoteDurableState();
    ReserveRest();  // what is written is on the disk now
    return true;
  }

 private:
  absl::Status Finish();
  // Forgets everything written: the upload starts over.
  // Writes the layout and the chunks' checks into `record` (the state of an
  // unfinished upload, or the record of a stored attachment).
  template <typename Record>
  void Describe(Record* record) const {
    record->set_size(layout_.size);
    record->set_chunk_size(layout_.chunk_size);
    record->set_encrypted(layout_.encrypted);
    record->set_record_overhead(layout_.overhead);
    for (const std::string& c : checks_) {
      if (chained_) {
        record->add_chunk_state(c);
      } else {
        record->add_chunk_sha256(c);
      }
    }
  }

  // progress_.durable_state, for a caller resuming an upload named at end.
  void NoteDurableState() {
    progress_.durable_state.clear();
    if (named_at_end_ && written_ > 0 && written_ < layout_.size &&
        written_ % sealing::Sha256Chain::kBlockBytes == 0) {
      progress_.durable_state = whole_.State();
    }
  }

  // Keeps reserved the disk the rest of the upload may still take.
  void ReserveRest() {
    owner_->Reserve(AttachmentStoreImpl::ActiveKey(sha256_, uploader_),
                    (layout_.size - written_) +
                        (layout_.chunks() - checks_.size()) * layout_.overhead);
  }

  void Reset() {
    written_ = 0;
    checks_.clear();
    whole_ = sealing::Sha256Chain();
    progress_.durable_bytes = 0;
    progress_.resumed_bytes = 0;
    progress_.durable_state.clear();
    WriteBatch batch;
    batch.records.push_back(
        {AttachmentStoreImpl::UploadKey(sha256_, uploader_), ""});
    owner_->store()->WriteSync(std::move(batch)).IgnoreError();
    if (fd_ >= 0) {
      // A new appender from 0; the old one first waits for a write it may
      // still have going, which must not land after the cut.
      out_.reset();
      out_.emplace(fd_, path_);
      if (::ftruncate(fd_, 0) != 0) {
        // The file is rewritten from the start anyway (and cut at its sync).
      }
    }
    ReserveRest();
  }
  // What is recorded of a chunk that `next` (the hash of the whole) has
  // just taken in: its Chunk.sha256_state, or (not chained_) its own
  // SHA-256, `digest` when already computed.
  std::string CheckOf(const sealing::Sha256Chain& next,
                      absl::Span<const absl::string_view> data,
                      std::string digest) const {
    if (chained_) return StateAfter(next, layout_);
    return digest.empty() ? sealing::Sha256Raw(data) : digest;
  }
  AttachmentStoreImpl* const owner_;
  const std::string uploader_;
  const std::string sha256_;
  Layout layout_;
  // Chunks end on SHA-256 blocks (chunk_size a multiple of 64): they are
  // checked and recorded by Chunk.sha256_state; otherwise by their own
  // SHA-256, as before states.
  const bool chained_;
  // Named by its last chunk: sha256_ is the upload's name, and the content
  // is stored under the hash of what arrived.
  const bool named_at_end_;
  std::string path_;
  int fd_ = -1;
  std::optional<DirectAppender> out_;  // on fd_
  uint64_t written_ = 0;
  // One per chunk written: its state (chained_) or its SHA-256, raw.
  std::vector<std::string> checks_;
  sealing::Sha256Chain whole_;  // of the written_ bytes
  UploadProgress progress_;
  // Not OK once the upload can take nothing more (its completion failed
  // after the file was closed): every later call returns it.
  absl::Status ended_;
};

absl::Status UploadImpl::Start(bool renew) {
  Store* store = owner_->store();
  if (renew) {
    // The same uploader proved it holds this content before: its right is
    // renewed without sending it again.
    RETURN_IF_ERROR(
        owner_->Complete("", sha256_, sha256_, uploader_, std::nullopt));
    progress_.durable_bytes = progress_.resumed_bytes = layout_.size;
    progress_.complete = true;
    progress_.sha256 = sha256_;
    progress_.usable_until =
        owner_->clock()->Now() + owner_->options().usable_for;
    return absl::OkStatus();
  }
  path_ = owner_->PartialPath(sha256_, uploader_);
  std::error_code ec;
  std::filesystem::create_directories(path_.substr(0, path_.rfind('/')), ec);
  fd_ = OpenMaybeDirect(path_, O_RDWR | O_CREAT | O_CLOEXEC,
                        owner_->options().direct_io);
  if (fd_ < 0) return Errno("open", path_);
  ASSIGN_OR_RETURN(
      std::optional<std::string> raw,
      owner_->ReadRecord(AttachmentStoreImpl::UploadKey(sha256_, uploader_)));
  v1::AttachmentUploadState state;
  if (raw && state.ParseFromString(*raw) && state.size() == layout_.size &&
      state.chunk_size() == layout_.chunk_size &&
      state.encrypted() == layout_.encrypted &&
      state.record_overhead() == layout_.overhead) {
    // Resume: re-read what is durable, checking each chunk, to continue the
    // hash of the whole. A state recorded by an older broker has the
    // chunks' own hashes.
    const bool by_state = state.chunk_state_size() > 0;
    // (States are recorded only for chunk sizes that are multiples of 64.)
    const int durable = by_state ? (chained_ ? state.chunk_state_size() : 0)
                                 : state.chunk_sha256_size();
    for (int i = 0; i < durable; ++i) {
      const uint64_t index = static_cast<uint64_t>(i);
      absl::StatusOr<SharedBytes> content =
          ReadRecord(fd_, path_, layout_, index);
      if (content.ok())
        content =
            ContentOf(store, layout_, sha256_, index, *std::move(content));
      if (!content.ok()) break;  // lost or damaged since: go on from before
      const absl::string_view data = content->data;
      sealing::Sha256Chain next = whole_;
      next.Update(data);
      std::string digest;
      if (by_state) {
        if (StateAfter(next, layout_) != state.chunk_state(i)) break;
      } else {
        digest = sealing::Sha256Raw(data);
        if (digest != state.chunk_sha256(i)) break;
      }
      checks_.push_back(
          CheckOf(next, absl::MakeConstSpan(&data, 1), std::move(digest)));
      whole_ = next;
      written_ += data.size();
    }
    progress_.durable_bytes = written_;
    progress_.resumed_bytes = written_;
    NoteDurableState();
  }
  // Whatever the file holds past what is durable and checked (an earlier
  // attempt's tail, another layout's records, a padded block) goes: the
  // file must end exactly where its content does.
  const uint64_t end = layout_.FileEnd(written_);
  if (::ftruncate(fd_, static_cast<off_t>(end)) != 0)
    return Errno("truncate", path_);
  out_.emplace(fd_, path_, end);
  ReserveRest();  // what it resumed from is on the disk already
  if (written_ == layout_.size) {
    // Everything arrived before (an empty attachment at once): check the
    // whole and complete.
    RETURN_IF_ERROR(Finish());
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> UploadImpl::Write(
    const v1::Chunk& chunk, absl::Span<const absl::string_view> data) {
  if (progress_.complete) {
    return absl::FailedPreconditionError(absl::StrCat(
        "attachment ", sha256_, " is complete: no more chunks are taken"));
  }
  if (!ended_.ok()) return ended_;
  const uint64_t index = written_ / layout_.chunk_size;
  if (chunk.offset() != written_) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk.offset: ", chunk.offset(), ", but the upload has ",
                     written_, " bytes: the next chunk starts at ", written_));
  }
  const uint64_t expected = layout_.ChunkBytes(index);
  uint64_t bytes = 0;
  for (absl::string_view piece : data) bytes += piece.size();
  if (bytes != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk.data: chunk ", index, " (offset ", chunk.offset(), ") has ",
        bytes, " bytes; it must have ", expected,
        expected == layout_.chunk_size ? " (the chunk size)"
                                       : " (the rest of the content)"));
  }
  const bool by_state = !chunk.sha256_state().empty();
  if (by_state) {
    if (!chained_ ||
        chunk.sha256_state().size() != sealing::Sha256Chain::kStateBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk.sha256_state: chunk ", index,
          chained_ ? " needs 32 bytes"
                   : ": this upload takes chunk.sha256, not sha256_state"));
    }
  } else if (!sealing::IsSha256Hex(chunk.sha256())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk.sha256: chunk ", index,
        " needs the SHA-256 of its data as 64 lower-case hex digits"));
  }
  std::string digest;  // the chunk's own SHA-256, when needed
  if (!by_state) {
    digest = sealing::Sha256Raw(data);
    if (sealing::HexOf(digest) != chunk.sha256()) {
      return absl::DataLossError(absl::StrCat(
          "chunk ", index, " (offset ", chunk.offset(), ", ", bytes,
          " bytes) does not match its sha256: it was damaged on the way; send "
          "it again"));
    }
  }
  // The hash of the whole goes on over the chunk (one pass checks both);
  // kept only once the chunk is taken. A chunk stored as it came is copied
  // into the file's buffer a part at a time, each part hashed there while
  // it is in the cache, and appended only once it matches.
  // (Written the ordinary way, where the file system refuses O_DIRECT,
  // the chunk goes straight from where it arrived.)
  sealing::Sha256Chain next = whole_;
  const bool staged = !layout_.encrypted && out_->direct();
  if (staged) {
    ASSIGN_OR_RETURN(char* into, out_->Stage(layout_.FileOffset(index), bytes));
    CopyHashing(data, into, next);
  } else {
    for (absl::string_view piece : data) next.Update(piece);
  }
  if (by_state && StateAfter(next, layout_) != chunk.sha256_state()) {
    return absl::DataLossError(absl::StrCat(
        "chunk ", index, " (offset ", chunk.offset(), ", ", bytes,
        " bytes) does not match its sha256_state: it was damaged on the way; "
        "send it again"));
  }
  if (staged) {
    RETURN_IF_ERROR(out_->Commit());
  } else if (!layout_.encrypted) {
    RETURN_IF_ERROR(out_->Append(layout_.FileOffset(index), data));
  } else {
    std::string joined;
    if (data.size() != 1) {
      joined.reserve(bytes);
      for (absl::string_view piece : data)
        joined.append(piece.data(), piece.size());
    }
    ASSIGN_OR_RETURN(
        std::optional<std::string> sealed,
        owner_->store()->SealBeside(data.size() == 1 ? data[0] : joined,
                                    ChunkContext(sha256_, index)));
    if (!sealed || sealed->size() != expected + layout_.overhead) {
      return absl::FailedPreconditionError(
          "attachments: encryption at rest changed during the upload; "
          "start it again");
    }
    RETURN_IF_ERROR(out_->Append(layout_.FileOffset(index), *sealed));
  }
  checks_.push_back(CheckOf(next, data, std::move(digest)));
  whole_ = next;
  written_ += expected;
  if (written_ == layout_.size) {
    RETURN_IF_ERROR(Finish());
    return true;
  }
  if (written_ - progress_.durable_bytes >= owner_->options().sync_bytes)
    return Checkpoint();
  return false;
}

absl::Status UploadImpl::Finish() {
  std::string whole = sealing::HexOf(whole_.Digest());
  if (!named_at_end_ && whole != sha256_) {
    uint64_t bytes = written_;
    Reset();
    return absl::DataLossError(
        absl::StrCat("attachment: the ", bytes, " bytes received have SHA-256 ",
                     whole, ", not the announced ", sha256_,
                     "; nothing was kept: the upload starts over"));
  }
  RETURN_IF_ERROR(out_->Sync());
  out_.reset();
  ::close(fd_);
  fd_ = -1;
  v1::StoredAttachment meta;
  Describe(&meta);
  if (layout_.encrypted && whole != sha256_) meta.set_sealed_as(sha256_);
  if (absl::Status s =
          owner_->Complete(path_, whole, sha256_, uploader_, std::move(meta));
      !s.ok()) {
    // The file is closed: nothing more can be written or synced through
    // this upload. A new one picks up what is durable.
    ended_ = absl::UnavailableError(absl::StrCat(
        "attachment ", whole,
        ": completing it failed; upload it again to go on from what is "
        "stored (",
        s.message(), ")"));
    return s;
  }
  progress_.durable_bytes = layout_.size;
  progress_.complete = true;
  progress_.sha256 = std::move(whole);
  progress_.durable_state.clear();
  progress_.usable_until =
      owner_->clock()->Now() + owner_->options().usable_for;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<AttachmentUpload>>
AttachmentStoreImpl::BeginUpload(absl::string_view uploader,
                                 absl::string_view sha256, uint64_t size) {
  if (!sealing::IsSha256Hex(sha256)) {
    return absl::InvalidArgumentError(
        "start.sha256: must be the SHA-256 of the whole content as 64 "
        "lower-case hex digits");
  }
  return Begin(uploader, sha256, size, /*named_at_end=*/false,
               /*restart=*/false);
}

absl::StatusOr<std::unique_ptr<AttachmentUpload>>
AttachmentStoreImpl::BeginUploadNamedAtEnd(absl::string_view uploader,
                                           absl::string_view upload_key,
                                           uint64_t size, bool restart) {
  if (upload_key.empty() || upload_key.size() > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("start.upload_key: ", upload_key.size(),
                     " bytes; an upload named at end needs a key of 1 to "
                     "256 bytes to be resumed by"));
  }
  // In the form of a hash (the upload's records and file are found as
  // those of uploads that announced one), with the uploader in it: no
  // uploader's name can be another's (one that uploads this very string
  // as content meets only its own named upload, whose prefix check and
  // final hash still hold).
  const std::string name = sealing::Sha256Hex(absl::StrCat(
      "lienthong upload named at end\n", uploader, "\n", upload_key));
  return Begin(uploader, name, size, /*named_at_end=*/true, restart);
}

absl::StatusOr<std::unique_ptr<AttachmentUpload>> AttachmentStoreImpl::Begin(
    absl::string_view uploader, absl::string_view sha256, uint64_t size,
    bool named_at_end, bool restart) {
  if (uploader.empty()) {
    return absl::InvalidArgumentError("attachments: uploader: empty");
  }
  if (size > options_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "start.size: ", size, " bytes exceed the attachment limit of ",
        options_.max_bytes, " bytes (attachments.max_bytes)"));
  }
  const std::string key = ActiveKey(sha256, uploader);
  std::optional<v1::StoredAttachment> existing;
  {
    absl::MutexLock lock(&mu_);
    size_t by_uploader = 0;
    const std::string suffix = absl::StrCat("/", uploader);
    for (const std::string& k : active_)
      by_uploader += absl::EndsWith(k, suffix);
    if (!active_.contains(key) && by_uploader >= kMaxUploadsPerUploader) {
      // For a moment only: the caller comes back once one has ended (the
      // SDK retries ABORTED on the same broker; UNAVAILABLE would send it to
      // another endpoint, which holds none of this uploader's uploads).
      return absl::AbortedError(absl::StrCat(
          uploader, " has ", by_uploader,
          " uploads running, the most one uploader may; try again when one "
          "has ended"));
    }
    if (!active_.insert(key).second) {
      return absl::AbortedError(absl::StrCat(
          named_at_end ? "an upload with this start.upload_key"
                       : absl::StrCat("an upload of attachment ", sha256),
          " by ", uploader,
          " is already running; wait for it or end it first"));
    }
    if (!named_at_end) {
      absl::StatusOr<std::optional<v1::StoredAttachment>> blob =
          ReadBlob(sha256);
      if (!blob.ok()) {
        active_.erase(key);
        return blob.status();
      }
      existing = *std::move(blob);
    }
  }
  Layout layout;
  layout.size = size;
  layout.chunk_size = options_.chunk_size;
  // From here the upload owns `key` in active_: its destructor releases it.
  auto release = [&](absl::Status s) {
    EndUpload(key);
    return s;
  };
  if (restart) {
    // What is durable under this name is some other content's beginning.
    WriteBatch forget;
    forget.records.push_back({UploadKey(sha256, uploader), ""});
    if (absl::Status s = store_->WriteSync(std::move(forget)).status();
        !s.ok()) {
      return release(s);
    }
  }
  // Only an uploader whose right to the stored content is alive renews it
  // without sending it. Anyone else uploads as if nothing were stored (a
  // partial file of its own, checked as a whole at the end, then dropped
  // for the stored copy): nobody learns whether some content is stored, or
  // its size, by starting an upload or by which chunks are taken.
  bool renew = false;
  if (existing) {
    absl::StatusOr<std::optional<absl::Time>> granted =
        GrantedAt(sha256, uploader);
    if (!granted.ok()) return release(granted.status());
    renew = granted->has_value() && Usable(**granted) &&
            BlobIntact(sha256, *existing);
  }
  if (renew) {
    if (existing->size() != size) {
      return release(absl::InvalidArgumentError(absl::StrCat(
          "start.size: ", size, " bytes, but the content with SHA-256 ", sha256,
          " has ", existing->size())));
    }
    layout.chunk_size = existing->chunk_size();
  } else {
    absl::StatusOr<std::optional<uint64_t>> overhead = SealOverhead();
    if (!overhead.ok()) return release(overhead.status());
    layout.encrypted = overhead->has_value();
    layout.overhead = overhead->value_or(0);
    // Checked and kept under the lock, with what the uploads running may
    // still write: many started at once cannot together fill the disk.
    const uint64_t own = size + layout.chunks() * layout.overhead;
    absl::Status fits;
    {
      absl::MutexLock lock(&mu_);
      uint64_t others = 0;
      for (const auto& [k, bytes] : reserved_) others += bytes;
      struct statvfs fs;
      if (::statvfs(options_.directory.c_str(), &fs) == 0) {
        uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) *
                              static_cast<uint64_t>(fs.f_frsize);
        if (free_bytes < own + others + options_.min_free_bytes) {
          fits = absl::ResourceExhaustedError(
              absl::StrCat("start.size: an attachment of ", size,
                           " bytes does not fit: the broker has ", free_bytes,
                           " bytes of disk free, keeps ",
                           options_.min_free_bytes, " in reserve and ", others,
                           " for the ", reserved_.size(), " uploads running"));
        }
      }
      if (fits.ok()) reserved_[key] = own;
    }
    if (!fits.ok()) return release(fits);
  }
  auto upload = std::make_unique<UploadImpl>(
      this, std::string(uploader), std::string(sha256), layout, named_at_end);
  RETURN_IF_ERROR(upload->Start(renew));
  return upload;
}

absl::StatusOr<AttachmentCollection> AttachmentStoreImpl::CollectGarbage() {
  AttachmentCollection result;
  const absl::Time now = clock_->Now();
  WriteBatch batch;
  // Uploads: the interrupted ones kept too long go.
  std::set<std::string> uploading;  // sha256 with an upload kept
  std::set<std::string> partial_files;
  std::vector<std::string> stale_partials;
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(store_->ScanRecords(kUploadPrefix, [&](const Record& r) {
    absl::string_view rest =
        absl::string_view(r.key).substr(kUploadPrefix.size());
    std::string sha(rest.substr(0, 64));
    std::string uploader(rest.size() > 65 ? rest.substr(65) : "");
    v1::AttachmentUploadState state;
    bool parsed = state.ParseFromString(r.value);
    if (active_.count(ActiveKey(sha, uploader)) ||
        (parsed &&
         TimeOf(state.updated_at()) + options_.partial_kept_for >= now)) {
      uploading.insert(sha);
      partial_files.insert(PartialPath(sha, uploader));
      return;
    }
    batch.records.push_back({r.key, ""});
    stale_partials.push_back(PartialPath(sha, uploader));
    ++result.partial_uploads_removed;
  }));
  for (const std::string& key : active_) {
    std::string sha = key.substr(0, 64);
    uploading.insert(sha);
    partial_files.insert(PartialPath(sha, key.substr(65)));
  }
  // Rights to reference: those lapsed (with the grace) go.
  std::set<std::string> granted;
  RETURN_IF_ERROR(store_->ScanRecords(kGrantPrefix, [&](const Record& r) {
    std::string sha(absl::string_view(r.key).substr(kGrantPrefix.size(), 64));
    v1::AttachmentGrant g;
    if (g.ParseFromString(r.value) &&
        TimeOf(g.at()) + options_.usable_for + kGrantGrace >= now) {
      granted.insert(sha);
      return;
    }
    batch.records.push_back({r.key, ""});
    ++result.grants_expired;
  }));
  std::set<std::string> referenced;
  RETURN_IF_ERROR(store_->ScanRecords(kRefPrefix, [&](const Record& r) {
    referenced.insert(
        std::string(absl::string_view(r.key).substr(kRefPrefix.size(), 64)));
  }));
  std::set<std::string> kept_blobs;
  std::vector<std::string> dead_blobs;
  RETURN_IF_ERROR(store_->ScanRecords(kBlobPrefix, [&](const Record& r) {
    std::string sha(absl::string_view(r.key).substr(kBlobPrefix.size()));
    if (referenced.count(sha) || granted.count(sha) || uploading.count(sha)) {
      kept_blobs.insert(BlobPath(sha));
      return;
    }
    batch.records.push_back({r.key, ""});
    dead_blobs.push_back(BlobPath(sha));
    ++result.attachments_removed;
  }));
  // Records first: a file whose record is gone is garbage; a record whose
  // file is gone would be a lie.
  if (!batch.records.empty())
    RETURN_IF_ERROR(store_->WriteSync(std::move(batch)).status());
  for (const std::string& path : stale_partials) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && ::unlink(path.c_str()) == 0)
      result.bytes_freed += static_cast<uint64_t>(st.st_size);
  }
  for (const std::string& path : dead_blobs) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && ::unlink(path.c_str()) == 0)
      result.bytes_freed += static_cast<uint64_t>(st.st_size);
  }
  // Files no record names (a crash between writing a file and its record).
  std::error_code ec;
  for (const char* sub : {"/partial", "/blobs"}) {
    std::string root = absl::StrCat(options_.directory, sub);
    for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
         !ec && it != std::filesystem::recursive_directory_iterator();
         it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      std::string path = it->path().string();
      bool known = absl::string_view(sub) == "/partial"
                       ? partial_files.count(path) > 0
                       : kept_blobs.count(path) > 0;
      if (known) continue;
      uint64_t bytes = it->file_size(ec);
      if (::unlink(path.c_str()) == 0) result.bytes_freed += bytes;
    }
  }
  return result;
}

absl::StatusOr<AttachmentStats> AttachmentStoreImpl::Stats() {
  AttachmentStats stats;
  RETURN_IF_ERROR(store_->ScanRecords(kBlobPrefix, [&](const Record& r) {
    v1::StoredAttachment meta;
    if (!meta.ParseFromString(r.value)) return;
    ++stats.attachments;
    stats.bytes += meta.size();
  }));
  RETURN_IF_ERROR(store_->ScanRecords(kUploadPrefix, [&](const Record& r) {
    v1::AttachmentUploadState state;
    if (!state.ParseFromString(r.value)) return;
    ++stats.partial_uploads;
    uint64_t durable = 0;
    const int chunks =
        std::max(state.chunk_sha256_size(), state.chunk_state_size());
    for (int i = 0; i < chunks; ++i)
      durable += std::min(state.chunk_size(), state.size() - durable);
    stats.partial_bytes += durable;
  }));
  absl::MutexLock lock(&mu_);
  stats.uploads_running = active_.size();
  return stats;
}

}  // namespace

absl::Status AttachmentOptions::Validate() const {
  if (directory.empty())
    return absl::InvalidArgumentError("attachments.directory: empty");
  if (chunk_size < 4096 || chunk_size > (4 << 20)) {
    return absl::InvalidArgumentError(
        "attachments.chunk_size: must be 4 KiB .. 4 MiB");
  }
  if (max_bytes == 0)
    return absl::InvalidArgumentError("attachments.max_bytes: must be > 0");
  if (sync_bytes < chunk_size) {
    return absl::InvalidArgumentError(
        "attachments.sync_bytes: must be at least chunk_size");
  }
  if (usable_for <= absl::ZeroDuration() ||
      partial_kept_for <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "attachments: usable_for and partial_kept_for must be positive");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<AttachmentStore>> AttachmentStore::Open(
    const AttachmentOptions& options, Store* store, Clock* clock) {
  RETURN_IF_ERROR(options.Validate());
  for (const char* sub : {"/blobs", "/partial"}) {
    std::error_code ec;
    std::string dir = absl::StrCat(options.directory, sub);
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("attachments: mkdir ", dir, ": ", ec.message()));
    }
    ::chmod(dir.c_str(), 0700);
  }
  return std::unique_ptr<AttachmentStore>(
      new AttachmentStoreImpl(options, store, clock));
}

std::vector<Record> AttachmentReferences(const v1::Document& document) {
  std::vector<Record> records;
  for (const v1::Attachment& a : document.attachments()) {
    if (!a.stored()) continue;
    records.push_back(
        {absl::StrCat(kRefPrefix, a.sha256(), "/", document.id()), "1"});
  }
  return records;
}

}  // namespace lienthong::storage
