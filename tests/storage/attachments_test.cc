// The attachment store as uploaders and readers rely on it: chunks checked
// one by one and the content as a whole, uploads resumed after an
// interruption and a broker restart, content stored once however many
// uploaders send it (each proving it holds all of it), altered files
// reported, nothing in the clear on disk with encryption at rest, and
// garbage collection that never takes what a document or a live right still
// needs. Run against the in-memory store and RocksDB, each with and without
// encryption at rest.
#include "lienthong/storage/attachments.h"

#include <sys/statvfs.h>

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/common/clock.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/sha256_chain.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/storage/store.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::storage {
namespace {

using ::lienthong::testing_util::DirectoryContains;
using ::lienthong::testing_util::IsOkAndHolds;
using ::lienthong::testing_util::StatusIs;
using ::lienthong::testing_util::TempDir;
using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr uint64_t kChunk = 4096;
constexpr uint64_t kSync = 2 * kChunk;
constexpr uint64_t kMaxBytes = 64 * kChunk;

// `size` bytes that differ with `seed`.
std::string Content(uint64_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(size, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

v1::Chunk ChunkOf(const std::string& content, uint64_t offset,
                  uint64_t chunk_size = kChunk) {
  v1::Chunk chunk;
  chunk.set_offset(offset);
  chunk.set_data(content.substr(offset, chunk_size));
  chunk.set_sha256(sealing::Sha256Hex(chunk.data()));
  return chunk;
}

// The chunks of `content` as an SDK that takes states sends them: each
// with the state of the whole's hash at its end, no hash of its own.
std::vector<v1::Chunk> StateChunks(const std::string& content,
                                   uint64_t chunk_size = kChunk) {
  std::vector<v1::Chunk> chunks;
  sealing::Sha256Chain whole;
  for (uint64_t at = 0; at < content.size(); at += chunk_size) {
    v1::Chunk chunk;
    chunk.set_offset(at);
    chunk.set_data(content.substr(at, chunk_size));
    whole.Update(chunk.data());
    chunk.set_sha256_state(whole.bytes() == content.size() ? whole.Digest()
                                                           : whole.State());
    chunks.push_back(std::move(chunk));
  }
  return chunks;
}

// Writes the chunks of `content` that start in [from, to).
absl::Status WriteChunks(AttachmentUpload& upload, const std::string& content,
                         uint64_t from, uint64_t to) {
  for (uint64_t at = from; at < to; at += upload.chunk_size()) {
    RETURN_IF_ERROR(
        upload.Write(ChunkOf(content, at, upload.chunk_size())).status());
  }
  return absl::OkStatus();
}

// Every regular file under `dir`.
std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path().string());
  }
  return files;
}

// Flips the bits of the byte at `offset` of the file at `path`.
void DamageByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.is_open()) << path;
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  ASSERT_TRUE(f.get(c)) << path << " has no byte " << offset;
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(~c));
  ASSERT_TRUE(f.good());
}

struct Engine {
  const char* name;
  bool rocksdb;
  bool encrypted;
  bool direct_io = true;  // files past the page cache (the default)
};

void PrintTo(const Engine& engine, std::ostream* os) { *os << engine.name; }

class AttachmentStoreTest : public ::testing::TestWithParam<Engine> {
 protected:
  void SetUp() override {
    options_.directory = dir_.path() + "/attachments";
    options_.chunk_size = kChunk;
    options_.sync_bytes = kSync;
    options_.max_bytes = kMaxBytes;
    options_.min_free_bytes = 0;
    options_.direct_io = GetParam().direct_io;
    ASSERT_OK(OpenStore());
    ASSERT_OK(OpenAttachments());
  }

  absl::Status OpenStore() {
    EncryptionOptions encryption;
    if (GetParam().encrypted) encryption.master_key = master_key_;
    if (GetParam().rocksdb) {
      RocksDbOptions options;
      options.path = dir_.path() + "/db";
      options.encryption = encryption;
      ASSIGN_OR_RETURN(store_, OpenRocksDbStore(options));
    } else if (GetParam().encrypted) {
      ASSIGN_OR_RETURN(store_, NewMemoryStore(encryption));
    } else {
      store_ = NewMemoryStore();
    }
    return absl::OkStatus();
  }

  absl::Status OpenAttachments() {
    ASSIGN_OR_RETURN(attachments_,
                     AttachmentStore::Open(options_, store_.get(), &clock_));
    return absl::OkStatus();
  }

  // A broker restart: the attachment store is opened again, and with
  // RocksDB the store too (the in-memory store has nothing to reopen).
  absl::Status Restart() {
    attachments_.reset();
    if (GetParam().rocksdb) {
      store_.reset();
      RETURN_IF_ERROR(OpenStore());
    }
    return OpenAttachments();
  }

  // A whole upload by `uploader`, sent from where BeginUpload says.
  absl::StatusOr<UploadProgress> Upload(const std::string& uploader,
                                        const std::string& content) {
    ASSIGN_OR_RETURN(
        std::unique_ptr<AttachmentUpload> upload,
        attachments_->BeginUpload(uploader, sealing::Sha256Hex(content),
                                  content.size()));
    RETURN_IF_ERROR(WriteChunks(
        *upload, content, upload->progress().durable_bytes, content.size()));
    EXPECT_TRUE(upload->progress().complete);
    return upload->progress();
  }

  // The stored content, read chunk by chunk, each chunk checked to carry its
  // offset and the SHA-256 of its data.
  absl::StatusOr<std::string> ReadAll(const std::string& sha256) {
    ASSIGN_OR_RETURN(std::unique_ptr<AttachmentReader> reader,
                     attachments_->Open(sha256));
    std::string content;
    for (uint64_t at = 0; at < reader->size(); at += reader->chunk_size()) {
      ASSIGN_OR_RETURN(v1::Chunk chunk, reader->Read(at));
      EXPECT_EQ(chunk.offset(), at);
      EXPECT_EQ(chunk.sha256(), sealing::Sha256Hex(chunk.data()));
      EXPECT_LE(chunk.data().size(), reader->chunk_size());
      content += chunk.data();
    }
    return content;
  }

  // Bytes one chunk takes on disk (more than kChunk when sealed at rest).
  uint64_t ChunkStride() {
    absl::StatusOr<std::optional<std::string>> sealed =
        store_->SealBeside("", "overhead");
    EXPECT_OK(sealed);
    EXPECT_EQ(sealed.ok() && sealed->has_value(), GetParam().encrypted);
    return kChunk + (sealed.ok() && *sealed ? (*sealed)->size() : 0);
  }

  std::string PartialDir() const { return options_.directory + "/partial"; }
  std::string BlobsDir() const { return options_.directory + "/blobs"; }

  TempDir dir_;
  FakeClock clock_;
  const std::string master_key_ = sealing::RandomKey();
  const std::string a_ = OrgUploader("000.00.00.H49");
  const std::string b_ = OrgUploader("000.00.00.G22");
  AttachmentOptions options_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<AttachmentStore> attachments_;
};

TEST_P(AttachmentStoreTest, UploadsOfEverySizeReadBackUsableByTheirUploader) {
  const uint64_t sizes[] = {0, 1, 3 * kChunk, 3 * kChunk + kChunk / 2};
  uint32_t seed = 1;
  for (uint64_t size : sizes) {
    SCOPED_TRACE(absl::StrCat("size ", size));
    const std::string content = Content(size, seed++);
    const std::string sha = sealing::Sha256Hex(content);
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                         attachments_->BeginUpload(a_, sha, size));
    EXPECT_EQ(upload->chunk_size(), kChunk);
    EXPECT_EQ(upload->progress().resumed_bytes, 0u);
    if (size == 0) {
      // Nothing to send: complete at once.
      EXPECT_TRUE(upload->progress().complete);
    } else {
      EXPECT_FALSE(upload->progress().complete);
      EXPECT_EQ(upload->progress().durable_bytes, 0u);
      for (uint64_t at = 0; at < size; at += kChunk) {
        bool last = at + kChunk >= size;
        absl::StatusOr<bool> durable = upload->Write(ChunkOf(content, at));
        ASSERT_OK(durable) << "chunk at " << at;
        EXPECT_EQ(upload->progress().complete, last);
        if (last) {
          EXPECT_TRUE(*durable);
        }
      }
    }
    EXPECT_TRUE(upload->progress().complete);
    EXPECT_EQ(upload->progress().durable_bytes, size);
    EXPECT_EQ(upload->progress().usable_until,
              clock_.Now() + options_.usable_for);
    // Nothing more is taken.
    EXPECT_THAT(upload->Write(ChunkOf(content, size)),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    upload.reset();

    ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentReader> reader,
                         attachments_->Open(sha));
    EXPECT_EQ(reader->size(), size);
    EXPECT_EQ(reader->chunk_size(), kChunk);
    EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
    if (size > 0) {
      // Not the start of a chunk; past the end.
      EXPECT_THAT(reader->Read(1),
                  StatusIs(absl::StatusCode::kInvalidArgument));
      EXPECT_THAT(reader->Read(((size + kChunk - 1) / kChunk) * kChunk),
                  StatusIs(absl::StatusCode::kInvalidArgument));
    }

    EXPECT_OK(attachments_->CheckUsable(a_, sha, size));
    EXPECT_THAT(attachments_->CheckUsable(b_, sha, size),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(b_)));
  }
  ASSERT_OK_AND_ASSIGN(AttachmentStats stats, attachments_->Stats());
  EXPECT_EQ(stats.attachments, 4u);
  EXPECT_EQ(stats.bytes, 1 + 3 * kChunk + 3 * kChunk + kChunk / 2);
  EXPECT_EQ(stats.partial_uploads, 0u);
  EXPECT_EQ(stats.uploads_running, 0u);
}

TEST_P(AttachmentStoreTest, UnknownContentIsNeitherReadableNorUsable) {
  const std::string sha = sealing::Sha256Hex("never uploaded");
  EXPECT_THAT(attachments_->Open(sha), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(attachments_->CheckUsable(a_, sha, 14),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(attachments_->Open("XYZ"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(AttachmentStoreTest, AChunkNotMatchingItsHashIsRefusedAndNothingMoves) {
  const std::string content = Content(3 * kChunk, 7);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  ASSERT_OK(upload->Write(ChunkOf(content, 0)));

  v1::Chunk damaged = ChunkOf(content, kChunk);
  damaged.mutable_data()->at(100) ^= 0x01;
  EXPECT_THAT(upload->Write(damaged),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("chunk 1")));
  EXPECT_EQ(upload->progress().durable_bytes, 0u);
  EXPECT_FALSE(upload->progress().complete);

  // The same chunk, sent again intact, is taken where the damaged one was.
  ASSERT_OK(upload->Write(ChunkOf(content, kChunk)));
  ASSERT_OK(upload->Write(ChunkOf(content, 2 * kChunk)));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
}

TEST_P(AttachmentStoreTest, MalformedChunksAreRefusedNamingTheField) {
  const std::string content = Content(2 * kChunk + 10, 8);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));

  // Not where the upload stands.
  EXPECT_THAT(
      upload->Write(ChunkOf(content, kChunk)),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("chunk.offset")));
  // Shorter than chunk_size, and not the last chunk.
  EXPECT_THAT(
      upload->Write(ChunkOf(content, 0, kChunk - 1)),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("chunk.data")));
  // Not a SHA-256 in hex.
  v1::Chunk bad_hash = ChunkOf(content, 0);
  bad_hash.set_sha256("not a hash");
  EXPECT_THAT(
      upload->Write(bad_hash),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("chunk.sha256")));

  ASSERT_OK(WriteChunks(*upload, content, 0, 2 * kChunk));
  // The last chunk must be exactly the rest of the content.
  v1::Chunk too_long = ChunkOf(content, 2 * kChunk);
  too_long.mutable_data()->append("x");
  too_long.set_sha256(sealing::Sha256Hex(too_long.data()));
  EXPECT_THAT(
      upload->Write(too_long),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("chunk.data")));
  EXPECT_FALSE(upload->progress().complete);

  ASSERT_OK(upload->Write(ChunkOf(content, 2 * kChunk)));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
}

TEST_P(AttachmentStoreTest, MalformedOrOversizedUploadsAreRefused) {
  const std::string sha = sealing::Sha256Hex("x");
  std::string upper = sha;
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  for (const std::string& bad : {std::string(""), sha.substr(1), upper,
                                 sha + "0", std::string(64, 'g')}) {
    EXPECT_THAT(
        attachments_->BeginUpload(a_, bad, 1),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sha256")))
        << bad;
  }
  EXPECT_THAT(
      attachments_->BeginUpload(a_, sha, kMaxBytes + 1),
      StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("max_bytes")));
  EXPECT_OK(attachments_->BeginUpload(a_, sha, kMaxBytes));
}

TEST_P(AttachmentStoreTest, OneUploadAtATimePerUploaderAndContent) {
  const std::string content = Content(2 * kChunk, 9);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> first,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_THAT(attachments_->BeginUpload(a_, sha, content.size()),
              StatusIs(absl::StatusCode::kAborted));
  // Another uploader of the same content is not held up.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> other,
                       attachments_->BeginUpload(b_, sha, content.size()));
  ASSERT_OK_AND_ASSIGN(AttachmentStats stats, attachments_->Stats());
  EXPECT_EQ(stats.uploads_running, 2u);

  first.reset();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> again,
                       attachments_->BeginUpload(a_, sha, content.size()));
  ASSERT_OK(WriteChunks(*again, content, 0, content.size()));
  EXPECT_TRUE(again->progress().complete);
}

TEST_P(AttachmentStoreTest, ContentNotMatchingTheAnnouncedHashStartsOver) {
  const std::string announced = Content(3 * kChunk + 100, 10);
  const std::string sha = sealing::Sha256Hex(announced);
  std::string sent = announced;
  sent[sent.size() - 1] ^= 0x01;  // each chunk valid on its own
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, sent.size()));
  ASSERT_OK(WriteChunks(*upload, sent, 0, 3 * kChunk));
  EXPECT_EQ(upload->progress().durable_bytes, 2 * kChunk);  // checkpointed
  EXPECT_THAT(upload->Write(ChunkOf(sent, 3 * kChunk)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(sha)));
  EXPECT_FALSE(upload->progress().complete);
  EXPECT_EQ(upload->progress().durable_bytes, 0u);
  EXPECT_THAT(attachments_->Open(sha), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(attachments_->CheckUsable(a_, sha, sent.size()),
              StatusIs(absl::StatusCode::kFailedPrecondition));

  // The same stream starts over from offset 0.
  EXPECT_THAT(upload->Write(ChunkOf(announced, 3 * kChunk)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK(WriteChunks(*upload, announced, 0, kChunk));
  upload.reset();

  // So does a new upload: nothing of the wrong content was kept.
  ASSERT_OK_AND_ASSIGN(upload,
                       attachments_->BeginUpload(a_, sha, announced.size()));
  EXPECT_EQ(upload->progress().durable_bytes, 0u);
  EXPECT_EQ(upload->progress().resumed_bytes, 0u);
  ASSERT_OK(WriteChunks(*upload, announced, 0, announced.size()));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(announced));
  EXPECT_OK(attachments_->CheckUsable(a_, sha, announced.size()));
}

TEST_P(AttachmentStoreTest, AnInterruptedUploadResumesAfterARestart) {
  const std::string content = Content(8 * kChunk, 11);
  const std::string sha = sealing::Sha256Hex(content);
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                         attachments_->BeginUpload(a_, sha, content.size()));
    // Durable every kSync bytes (two chunks), not at every chunk.
    EXPECT_THAT(upload->Write(ChunkOf(content, 0)), IsOkAndHolds(false));
    EXPECT_EQ(upload->progress().durable_bytes, 0u);
    EXPECT_THAT(upload->Write(ChunkOf(content, kChunk)), IsOkAndHolds(true));
    EXPECT_EQ(upload->progress().durable_bytes, 2 * kChunk);
    ASSERT_OK(WriteChunks(*upload, content, 2 * kChunk, 5 * kChunk));
    EXPECT_EQ(upload->progress().durable_bytes, 4 * kChunk);
    // The stream ends early: what arrived is made durable.
    EXPECT_THAT(upload->Checkpoint(), IsOkAndHolds(true));
    EXPECT_EQ(upload->progress().durable_bytes, 5 * kChunk);
    EXPECT_THAT(upload->Checkpoint(), IsOkAndHolds(false));
  }
  ASSERT_OK(Restart());

  ASSERT_OK_AND_ASSIGN(AttachmentStats stats, attachments_->Stats());
  EXPECT_EQ(stats.partial_uploads, 1u);
  EXPECT_EQ(stats.partial_bytes, 5 * kChunk);

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_EQ(upload->progress().durable_bytes, 5 * kChunk);
  EXPECT_EQ(upload->progress().resumed_bytes, 5 * kChunk);
  EXPECT_FALSE(upload->progress().complete);
  // What is durable is not taken again.
  EXPECT_THAT(upload->Write(ChunkOf(content, 0)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(absl::StrCat(5 * kChunk))));
  ASSERT_OK(WriteChunks(*upload, content, 5 * kChunk, content.size()));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
  EXPECT_OK(attachments_->CheckUsable(a_, sha, content.size()));
  // Nothing of the upload is left behind.
  EXPECT_THAT(FilesUnder(PartialDir()), SizeIs(0));
  ASSERT_OK_AND_ASSIGN(stats, attachments_->Stats());
  EXPECT_EQ(stats.partial_uploads, 0u);
}

TEST_P(AttachmentStoreTest, AnUploadOverALongerLeftoverFileEndsWithItsContent) {
  // A partial file without a record of its progress (an attempt whose
  // record was never written, or another layout's): the upload starts over
  // and the stored file must hold this content and nothing after it.
  const std::string content = Content(3 * kChunk + 123, 41);
  const std::string sha = sealing::Sha256Hex(content);
  const std::string partial =
      absl::StrCat(options_.directory, "/partial/", sha, ".",
                   sealing::Sha256Hex(a_).substr(0, 16));
  std::filesystem::create_directories(options_.directory + "/partial");
  {
    std::ofstream junk(partial, std::ios::binary);
    junk << std::string(6 * kChunk + 7, 'j');
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_EQ(upload->progress().resumed_bytes, 0u);
  ASSERT_OK(WriteChunks(*upload, content, 0, content.size()));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
  const uint64_t stored = std::filesystem::file_size(
      absl::StrCat(options_.directory, "/blobs/", sha.substr(0, 2), "/", sha));
  if (GetParam().encrypted) {
    // Four sealed chunks, each a few dozen bytes longer than its content.
    EXPECT_GT(stored, content.size());
    EXPECT_LE(stored, content.size() + 4 * 64);
  } else {
    EXPECT_EQ(stored, content.size());
  }
}

TEST_P(AttachmentStoreTest, ChunksReadInAnyOrderAreTheRightOnes) {
  // A reader reads the next chunk ahead; a caller that jumps, goes back,
  // reads a chunk twice or stops early still gets exactly what it asked.
  const std::string content = Content(6 * kChunk + 99, 43);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK(Upload(a_, content).status());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentReader> reader,
                       attachments_->Open(sha));
  for (uint64_t index : {0, 1, 4, 3, 3, 6, 5, 0, 2}) {
    ASSERT_OK_AND_ASSIGN(v1::Chunk chunk, reader->Read(index * kChunk));
    EXPECT_EQ(chunk.offset(), index * kChunk);
    EXPECT_EQ(chunk.data(), content.substr(index * kChunk, kChunk))
        << "chunk " << index;
  }
  // Closed with a read ahead still out.
  ASSERT_OK_AND_ASSIGN(reader, attachments_->Open(sha));
  ASSERT_OK(reader->Read(0).status());
  reader.reset();
}

TEST_P(AttachmentStoreTest, SharedChunksStayValidWhileTheReaderGoesOn) {
  // A download hands each chunk's memory to gRPC, which may still hold it
  // when the reader has read (and read ahead) the next ones, or is gone.
  const std::string content = Content(5 * kChunk + 77, 44);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK(Upload(a_, content).status());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentReader> reader,
                       attachments_->Open(sha));
  ChunkReadOptions options;
  options.sha256_state = true;
  std::vector<SharedChunk> chunks;
  for (uint64_t at = 0; at < content.size(); at += kChunk) {
    SharedChunk chunk;
    ASSERT_OK(reader->ReadShared(at, options, &chunk));
    EXPECT_EQ(chunk.fields.offset(), at);
    EXPECT_TRUE(chunk.fields.data().empty());
    EXPECT_EQ(chunk.fields.sha256(),
              sealing::Sha256Hex(content.substr(at, kChunk)));
    chunks.push_back(std::move(chunk));
  }
  reader.reset();
  ASSERT_THAT(chunks, SizeIs(6));
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i].content.data, content.substr(i * kChunk, kChunk))
        << "chunk " << i;
  }
}

TEST_P(AttachmentStoreTest, AResumedUploadGoesBackBeforeADamagedChunk) {
  const std::string content = Content(6 * kChunk + 5, 12);
  const std::string sha = sealing::Sha256Hex(content);
  const uint64_t stride = ChunkStride();
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                         attachments_->BeginUpload(a_, sha, content.size()));
    ASSERT_OK(WriteChunks(*upload, content, 0, 4 * kChunk));
    EXPECT_EQ(upload->progress().durable_bytes, 4 * kChunk);
  }
  std::vector<std::string> partials = FilesUnder(PartialDir());
  ASSERT_THAT(partials, SizeIs(1));
  EXPECT_EQ(std::filesystem::file_size(partials[0]), 4 * stride);
  DamageByte(partials[0], 2 * stride + 123);  // in chunk 2
  ASSERT_OK(Restart());

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_EQ(upload->progress().durable_bytes, 2 * kChunk);
  EXPECT_EQ(upload->progress().resumed_bytes, 2 * kChunk);
  ASSERT_OK(WriteChunks(*upload, content, 2 * kChunk, content.size()));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
}

TEST_P(AttachmentStoreTest, ASecondUploaderSendsEverythingAndItIsStoredOnce) {
  const std::string content = Content(3 * kChunk + 7, 13);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK(Upload(a_, content));

  // B learns nothing from the content being stored: it starts at 0 and
  // must send all of it before it may reference it.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(b_, sha, content.size()));
  EXPECT_FALSE(upload->progress().complete);
  EXPECT_EQ(upload->progress().durable_bytes, 0u);
  EXPECT_EQ(upload->progress().resumed_bytes, 0u);
  EXPECT_THAT(attachments_->CheckUsable(b_, sha, content.size()),
              StatusIs(absl::StatusCode::kFailedPrecondition));

  // Nor from which chunks are taken: other content, each chunk matching
  // its own hash, is taken as it would be if nothing were stored, and the
  // whole is refused at its end for not having the announced hash.
  const std::string other = Content(content.size(), 99);
  EXPECT_THAT(
      WriteChunks(*upload, other, 0, content.size()),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not the announced")));
  EXPECT_THAT(attachments_->CheckUsable(b_, sha, content.size()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  upload.reset();
  ASSERT_OK_AND_ASSIGN(upload,
                       attachments_->BeginUpload(b_, sha, content.size()));
  EXPECT_EQ(upload->progress().durable_bytes, 0u);
  ASSERT_OK(WriteChunks(*upload, content, 0, content.size()));
  EXPECT_TRUE(upload->progress().complete);
  EXPECT_EQ(upload->progress().durable_bytes, content.size());
  upload.reset();

  EXPECT_OK(attachments_->CheckUsable(b_, sha, content.size()));
  EXPECT_OK(attachments_->CheckUsable(a_, sha, content.size()));
  EXPECT_THAT(FilesUnder(BlobsDir()), SizeIs(1));
  EXPECT_THAT(FilesUnder(PartialDir()), SizeIs(0));
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
  ASSERT_OK_AND_ASSIGN(AttachmentStats stats, attachments_->Stats());
  EXPECT_EQ(stats.attachments, 1u);
}

TEST_P(AttachmentStoreTest, ALiveRightIsRenewedWithoutSendingAgain) {
  const std::string content = Content(2 * kChunk, 14);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK(Upload(a_, content));

  clock_.Advance(options_.usable_for - absl::Hours(1));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_TRUE(upload->progress().complete);
  EXPECT_EQ(upload->progress().durable_bytes, content.size());
  EXPECT_EQ(upload->progress().usable_until,
            clock_.Now() + options_.usable_for);
  upload.reset();

  // Usable past the first right's end.
  clock_.Advance(absl::Hours(2));
  EXPECT_OK(attachments_->CheckUsable(a_, sha, content.size()));

  // Once the right has lapsed, the content has to be sent again.
  clock_.Advance(options_.usable_for);
  EXPECT_THAT(attachments_->CheckUsable(a_, sha, content.size()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK_AND_ASSIGN(upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_FALSE(upload->progress().complete);
  EXPECT_EQ(upload->progress().durable_bytes, 0u);
  ASSERT_OK(WriteChunks(*upload, content, 0, content.size()));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  EXPECT_OK(attachments_->CheckUsable(a_, sha, content.size()));
}

TEST_P(AttachmentStoreTest, ConcurrentUploadsOfTheSameContentStoreItOnce) {
  const std::string content = Content(3 * kChunk, 15);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> by_a,
                       attachments_->BeginUpload(a_, sha, content.size()));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> by_b,
                       attachments_->BeginUpload(b_, sha, content.size()));
  ASSERT_OK(WriteChunks(*by_a, content, 0, 2 * kChunk));
  ASSERT_OK(WriteChunks(*by_b, content, 0, content.size()));
  ASSERT_OK(WriteChunks(*by_a, content, 2 * kChunk, content.size()));
  EXPECT_TRUE(by_a->progress().complete);
  EXPECT_TRUE(by_b->progress().complete);
  by_a.reset();
  by_b.reset();

  EXPECT_OK(attachments_->CheckUsable(a_, sha, content.size()));
  EXPECT_OK(attachments_->CheckUsable(b_, sha, content.size()));
  EXPECT_THAT(FilesUnder(BlobsDir()), SizeIs(1));
  EXPECT_THAT(FilesUnder(PartialDir()), SizeIs(0));
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
}

TEST_P(AttachmentStoreTest, AnAlteredFileReadsAsDataLoss) {
  const std::string content = Content(3 * kChunk, 16);
  const std::string sha = sealing::Sha256Hex(content);
  const uint64_t stride = ChunkStride();
  ASSERT_OK(Upload(a_, content));
  std::vector<std::string> blobs = FilesUnder(BlobsDir());
  ASSERT_THAT(blobs, SizeIs(1));
  EXPECT_EQ(std::filesystem::path(blobs[0]).filename().string(), sha);
  EXPECT_EQ(std::filesystem::file_size(blobs[0]), 3 * stride);
  DamageByte(blobs[0], stride + 17);  // in chunk 1

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentReader> reader,
                       attachments_->Open(sha));
  ASSERT_OK_AND_ASSIGN(v1::Chunk first, reader->Read(0));
  EXPECT_EQ(first.data(), content.substr(0, kChunk));
  EXPECT_THAT(reader->Read(kChunk), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_OK(reader->Read(2 * kChunk));
  reader.reset();

  // Cut short: the last chunk is missing.
  std::filesystem::resize_file(blobs[0], 2 * stride + 10);
  ASSERT_OK_AND_ASSIGN(reader, attachments_->Open(sha));
  EXPECT_THAT(reader->Read(2 * kChunk), StatusIs(absl::StatusCode::kDataLoss));
  reader.reset();

  // Gone.
  std::filesystem::remove(blobs[0]);
  EXPECT_THAT(attachments_->Open(sha), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_P(AttachmentStoreTest, ChunksCheckedByTheirStatesStoreAndReadBack) {
  const std::string content = Content(5 * kChunk + 100, 30);
  const std::string sha = sealing::Sha256Hex(content);
  const std::vector<v1::Chunk> chunks = StateChunks(content);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_TRUE(upload->takes_sha256_state());
  ASSERT_OK(upload->Write(chunks[0]));
  ASSERT_OK(upload->Write(chunks[1]));
  // Damaged on the way: refused, naming it, and nothing moves.
  v1::Chunk damaged = chunks[2];
  damaged.mutable_data()->at(7) ^= 0x01;
  EXPECT_THAT(upload->Write(damaged),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("chunk 2")));
  // A chunk that is right on its own but from elsewhere in the content.
  v1::Chunk moved = chunks[3];
  moved.set_offset(2 * kChunk);
  EXPECT_THAT(upload->Write(moved),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("chunk 2")));
  v1::Chunk short_state = chunks[2];
  short_state.mutable_sha256_state()->pop_back();
  EXPECT_THAT(upload->Write(short_state),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("chunk.sha256_state")));
  for (size_t i = 2; i < chunks.size(); ++i)
    ASSERT_OK(upload->Write(chunks[i]));
  ASSERT_TRUE(upload->progress().complete);
  upload.reset();

  // Read back with states (nothing hashed again when not verified), and
  // with hashes of their own for a downloader that does not take states.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentReader> reader,
                       attachments_->Open(sha));
  ChunkReadOptions states;
  states.sha256 = false;
  states.sha256_state = true;
  ChunkReadOptions unverified = states;
  unverified.verify = false;
  for (const v1::Chunk& sent : chunks) {
    for (const ChunkReadOptions& options : {states, unverified}) {
      ASSERT_OK_AND_ASSIGN(v1::Chunk got, reader->Read(sent.offset(), options));
      EXPECT_EQ(got.data(), sent.data());
      EXPECT_EQ(got.sha256_state(), sent.sha256_state());
      EXPECT_EQ(got.sha256(), "");
    }
  }
  ASSERT_OK_AND_ASSIGN(std::string read, ReadAll(sha));
  EXPECT_EQ(read, content);
  // The last state is the hash of the whole.
  EXPECT_EQ(sealing::HexOf(chunks.back().sha256_state()), sha);

  // An altered file: a check by state finds it, like one by hash.
  reader.reset();
  std::vector<std::string> blobs = FilesUnder(BlobsDir());
  ASSERT_THAT(blobs, SizeIs(1));
  DamageByte(blobs[0], 3 * ChunkStride() + 100);  // in chunk 3
  ASSERT_OK_AND_ASSIGN(reader, attachments_->Open(sha));
  EXPECT_OK(reader->Read(2 * kChunk, states));
  EXPECT_THAT(reader->Read(3 * kChunk, states),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("chunk 3")));
}

TEST_P(AttachmentStoreTest, TheLastStateMustBeTheAnnouncedHash) {
  const std::string content = Content(3 * kChunk, 31);
  std::string other = content;
  other.back() ^= 0x01;
  // Chunks consistent with each other, but of content with another hash.
  const std::vector<v1::Chunk> chunks = StateChunks(other);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(
                           a_, sealing::Sha256Hex(content), content.size()));
  ASSERT_OK(upload->Write(chunks[0]));
  ASSERT_OK(upload->Write(chunks[1]));
  EXPECT_THAT(upload->Write(chunks[2]),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr(sealing::Sha256Hex(content))));
  EXPECT_FALSE(upload->progress().complete);
  EXPECT_EQ(upload->progress().durable_bytes, 0u);
}

TEST_P(AttachmentStoreTest, AnUploadByStatesResumesAfterARestart) {
  const std::string content = Content(6 * kChunk + 9, 32);
  const std::string sha = sealing::Sha256Hex(content);
  const std::vector<v1::Chunk> chunks = StateChunks(content);
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                         attachments_->BeginUpload(a_, sha, content.size()));
    for (size_t i = 0; i < 3; ++i) ASSERT_OK(upload->Write(chunks[i]));
    ASSERT_OK(upload->Checkpoint());
  }
  ASSERT_OK(Restart());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_EQ(upload->progress().resumed_bytes, 3 * kChunk);
  for (size_t i = 3; i < chunks.size(); ++i)
    ASSERT_OK(upload->Write(chunks[i]));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  // A second uploader's chunks are compared by state with the stored ones.
  ASSERT_OK_AND_ASSIGN(upload,
                       attachments_->BeginUpload(b_, sha, content.size()));
  v1::Chunk wrong = chunks[1];
  wrong.set_offset(0);
  wrong.set_sha256_state(chunks[0].sha256_state());
  EXPECT_THAT(upload->Write(wrong), StatusIs(absl::StatusCode::kDataLoss));
  for (const v1::Chunk& c : chunks) ASSERT_OK(upload->Write(c));
  EXPECT_TRUE(upload->progress().complete);
  ASSERT_OK_AND_ASSIGN(std::string read, ReadAll(sha));
  EXPECT_EQ(read, content);
}

TEST_P(AttachmentStoreTest, ChunksOfPartBlocksAreCheckedByTheirOwnHashes) {
  // 5000 bytes: chunks do not end on SHA-256 blocks, so no states.
  options_.chunk_size = 5000;
  options_.sync_bytes = 10000;
  ASSERT_OK(Restart());
  const std::string content = Content(4 * 5000 + 7, 34);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_FALSE(upload->takes_sha256_state());
  v1::Chunk by_state = ChunkOf(content, 0, 5000);
  by_state.clear_sha256();
  by_state.set_sha256_state(std::string(32, 'x'));
  EXPECT_THAT(upload->Write(by_state),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("chunk.sha256_state")));
  ASSERT_OK(WriteChunks(*upload, content, 0, 2 * 5000));
  upload.reset();
  // Resumed after a restart, checked by the recorded hashes.
  ASSERT_OK(Restart());
  ASSERT_OK_AND_ASSIGN(upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_EQ(upload->progress().resumed_bytes, 2 * 5000u);
  ASSERT_OK(WriteChunks(*upload, content, 2 * 5000, content.size()));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  // Asked for states, a reader gives what it has: hashes of the chunks.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentReader> reader,
                       attachments_->Open(sha));
  ChunkReadOptions states;
  states.sha256 = false;
  states.sha256_state = true;
  states.verify = false;
  ASSERT_OK_AND_ASSIGN(v1::Chunk chunk, reader->Read(5000, states));
  EXPECT_EQ(chunk.sha256_state(), "");
  EXPECT_EQ(chunk.sha256(), sealing::Sha256Hex(content.substr(5000, 5000)));
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
}

TEST_P(AttachmentStoreTest, ContentStoredWithChunkHashesOnlyStillReads) {
  // As a broker before states were kept recorded it.
  if (GetParam().encrypted) GTEST_SKIP() << "written in the clear here";
  const std::string content = Content(2 * kChunk + 50, 33);
  const std::string sha = sealing::Sha256Hex(content);
  const std::string dir = absl::StrCat(BlobsDir(), "/", sha.substr(0, 2));
  std::filesystem::create_directories(dir);
  {
    std::ofstream f(absl::StrCat(dir, "/", sha), std::ios::binary);
    f << content;
  }
  v1::StoredAttachment meta;
  meta.set_size(content.size());
  meta.set_chunk_size(kChunk);
  for (uint64_t at = 0; at < content.size(); at += kChunk)
    meta.add_chunk_sha256(sealing::Sha256Raw(content.substr(at, kChunk)));
  WriteBatch batch;
  batch.records.push_back(
      {absl::StrCat("att/b/", sha), meta.SerializeAsString()});
  ASSERT_OK(store_->WriteSync(std::move(batch)).status());

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentReader> reader,
                       attachments_->Open(sha));
  // Asked for states, it gives what it has: hashes of the chunks.
  ChunkReadOptions states;
  states.sha256 = false;
  states.sha256_state = true;
  states.verify = false;
  ASSERT_OK_AND_ASSIGN(v1::Chunk chunk, reader->Read(kChunk, states));
  EXPECT_EQ(chunk.sha256_state(), "");
  EXPECT_EQ(chunk.sha256(), sealing::Sha256Hex(content.substr(kChunk, kChunk)));
  // A second uploader sending states is compared by the chunks' hashes.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(b_, sha, content.size()));
  for (const v1::Chunk& c : StateChunks(content)) ASSERT_OK(upload->Write(c));
  EXPECT_TRUE(upload->progress().complete);
}

TEST_P(AttachmentStoreTest, AnUploadNamedAtEndIsStoredUnderTheHashOfWhatCame) {
  // Chunks by their states (an SDK that hashes as it sends), and by their
  // own hashes.
  const std::string content = Content(5 * kChunk + 100, 40);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<AttachmentUpload> upload,
      attachments_->BeginUploadNamedAtEnd(a_, "key-1", content.size(), false));
  EXPECT_EQ(upload->progress().durable_bytes, 0u);
  EXPECT_EQ(upload->progress().durable_state, "");
  for (const v1::Chunk& c : StateChunks(content)) ASSERT_OK(upload->Write(c));
  ASSERT_TRUE(upload->progress().complete);
  EXPECT_EQ(upload->progress().sha256, sha);
  upload.reset();
  EXPECT_OK(attachments_->CheckUsable(a_, sha, content.size()));
  EXPECT_THAT(attachments_->CheckUsable(b_, sha, content.size()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(FilesUnder(PartialDir()), SizeIs(0));
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));

  const std::string other = Content(2 * kChunk + 1, 41);
  ASSERT_OK_AND_ASSIGN(upload, attachments_->BeginUploadNamedAtEnd(
                                   b_, "key-1", other.size(), false));
  ASSERT_OK(WriteChunks(*upload, other, 0, other.size()));
  ASSERT_TRUE(upload->progress().complete);
  EXPECT_EQ(upload->progress().sha256, sealing::Sha256Hex(other));
  upload.reset();
  // Both read back after a restart (sealed at rest under the names they
  // were written with).
  ASSERT_OK(Restart());
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
  EXPECT_THAT(ReadAll(sealing::Sha256Hex(other)), IsOkAndHolds(other));
  // Garbage collection sees them as any other stored content.
  ASSERT_OK_AND_ASSIGN(AttachmentStats stats, attachments_->Stats());
  EXPECT_EQ(stats.attachments, 2u);
  EXPECT_EQ(stats.partial_uploads, 0u);
}

TEST_P(AttachmentStoreTest, AnUploadNamedAtEndResumesByItsKeyAfterARestart) {
  const std::string content = Content(6 * kChunk + 9, 42);
  const std::vector<v1::Chunk> chunks = StateChunks(content);
  {
    ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<AttachmentUpload> upload,
        attachments_->BeginUploadNamedAtEnd(a_, "k", content.size(), false));
    for (size_t i = 0; i < 3; ++i) ASSERT_OK(upload->Write(chunks[i]));
    ASSERT_OK(upload->Checkpoint());
    // Where the uploader checks its content against what is durable.
    EXPECT_EQ(upload->progress().durable_state, chunks[2].sha256_state());
  }
  ASSERT_OK(Restart());
  // Another uploader's key of the same text finds nothing of a_'s.
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<AttachmentUpload> others,
      attachments_->BeginUploadNamedAtEnd(b_, "k", content.size(), false));
  EXPECT_EQ(others->progress().durable_bytes, 0u);
  others.reset();
  // Nor does another key of a_.
  ASSERT_OK_AND_ASSIGN(others, attachments_->BeginUploadNamedAtEnd(
                                   a_, "k2", content.size(), false));
  EXPECT_EQ(others->progress().durable_bytes, 0u);
  others.reset();

  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<AttachmentUpload> upload,
      attachments_->BeginUploadNamedAtEnd(a_, "k", content.size(), false));
  EXPECT_EQ(upload->progress().resumed_bytes, 3 * kChunk);
  EXPECT_EQ(upload->progress().durable_state, chunks[2].sha256_state());
  // One at a time per key.
  EXPECT_THAT(
      attachments_->BeginUploadNamedAtEnd(a_, "k", content.size(), false),
      StatusIs(absl::StatusCode::kAborted, HasSubstr("upload_key")));
  for (size_t i = 3; i < chunks.size(); ++i)
    ASSERT_OK(upload->Write(chunks[i]));
  ASSERT_TRUE(upload->progress().complete);
  EXPECT_EQ(upload->progress().sha256, sealing::Sha256Hex(content));
  upload.reset();
  EXPECT_THAT(ReadAll(sealing::Sha256Hex(content)), IsOkAndHolds(content));
}

TEST_P(AttachmentStoreTest, ARestartedUploadNamedAtEndDropsWhatWasDurable) {
  const std::string first = Content(4 * kChunk, 43);
  std::string second = first;
  second[10] ^= 0x01;  // another content of the same size
  {
    ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<AttachmentUpload> upload,
        attachments_->BeginUploadNamedAtEnd(a_, "k", first.size(), false));
    ASSERT_OK(WriteChunks(*upload, first, 0, 2 * kChunk));
    ASSERT_OK(upload->Checkpoint());
  }
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<AttachmentUpload> upload,
      attachments_->BeginUploadNamedAtEnd(a_, "k", second.size(), true));
  EXPECT_EQ(upload->progress().durable_bytes, 0u);
  EXPECT_EQ(upload->progress().resumed_bytes, 0u);
  ASSERT_OK(WriteChunks(*upload, second, 0, second.size()));
  ASSERT_TRUE(upload->progress().complete);
  EXPECT_EQ(upload->progress().sha256, sealing::Sha256Hex(second));
  upload.reset();
  EXPECT_THAT(ReadAll(sealing::Sha256Hex(second)), IsOkAndHolds(second));
  EXPECT_THAT(attachments_->Open(sealing::Sha256Hex(first)),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_P(AttachmentStoreTest, AnUploadNamedAtEndNeedsAKeyAndFitsTheLimit) {
  EXPECT_THAT(attachments_->BeginUploadNamedAtEnd(a_, "", kChunk, false),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("start.upload_key")));
  EXPECT_THAT(attachments_->BeginUploadNamedAtEnd(a_, std::string(257, 'k'),
                                                  kChunk, false),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("start.upload_key")));
  EXPECT_THAT(
      attachments_->BeginUploadNamedAtEnd(a_, "k", kMaxBytes + 1, false),
      StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("start.size")));
  ASSERT_OK_AND_ASSIGN(AttachmentStats stats, attachments_->Stats());
  EXPECT_EQ(stats.uploads_running, 0u);
  EXPECT_EQ(stats.partial_uploads, 0u);
  // The empty content completes at once.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> empty,
                       attachments_->BeginUploadNamedAtEnd(a_, "e", 0, false));
  EXPECT_TRUE(empty->progress().complete);
  EXPECT_EQ(empty->progress().sha256, sealing::Sha256Hex(""));
}

TEST_P(AttachmentStoreTest, ContentUploadedNamedAtEndAgainIsStoredOnce) {
  const std::string content = Content(3 * kChunk + 5, 44);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK(Upload(b_, content));
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<AttachmentUpload> upload,
      attachments_->BeginUploadNamedAtEnd(a_, "k", content.size(), false));
  ASSERT_OK(WriteChunks(*upload, content, 0, content.size()));
  ASSERT_TRUE(upload->progress().complete);
  EXPECT_EQ(upload->progress().sha256, sha);
  upload.reset();
  EXPECT_OK(attachments_->CheckUsable(a_, sha, content.size()));
  EXPECT_THAT(FilesUnder(BlobsDir()), SizeIs(1));
  EXPECT_THAT(FilesUnder(PartialDir()), SizeIs(0));
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
}

TEST_P(AttachmentStoreTest, NoContentIsOnDiskInTheClearWithEncryptionAtRest) {
  constexpr char kMarker[] = "QUYET-DINH-BO-NHIEM-7c3a";
  std::string content;
  while (content.size() < 2 * kChunk + kChunk / 2)
    content += absl::StrCat(kMarker, " ");
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  ASSERT_OK(WriteChunks(*upload, content, 0, 2 * kChunk));
  // Partly uploaded: in the partial file.
  EXPECT_EQ(DirectoryContains(PartialDir(), kMarker), !GetParam().encrypted);
  ASSERT_OK(WriteChunks(*upload, content, 2 * kChunk, content.size()));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  // Complete: in the blob file (without encryption, where the search does
  // find it, which shows the search works).
  EXPECT_EQ(DirectoryContains(BlobsDir(), kMarker), !GetParam().encrypted);
  if (GetParam().encrypted) {
    EXPECT_FALSE(DirectoryContains(dir_.path(), kMarker));
  }
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
}

TEST_P(AttachmentStoreTest, GarbageCollectionKeepsWhatIsReferencedOrUsable) {
  const std::string referenced = Content(2 * kChunk + 1, 17);
  const std::string unreferenced = Content(3 * kChunk + 2, 18);
  const std::string referenced_sha = sealing::Sha256Hex(referenced);
  const std::string unreferenced_sha = sealing::Sha256Hex(unreferenced);
  ASSERT_OK(Upload(a_, referenced));
  ASSERT_OK(Upload(a_, unreferenced));

  v1::Document doc;
  doc.set_id("doc-1");
  v1::Attachment* stored = doc.add_attachments();
  stored->set_sha256(referenced_sha);
  stored->set_size(referenced.size());
  stored->set_stored(true);
  v1::Attachment* inline_attachment = doc.add_attachments();
  inline_attachment->set_content("inline");
  inline_attachment->set_sha256(unreferenced_sha);  // not stored: no tie
  WriteBatch batch;
  batch.records = AttachmentReferences(doc);
  EXPECT_THAT(batch.records, SizeIs(1));
  ASSERT_OK(store_->WriteSync(std::move(batch)));

  // While the uploader's right lasts, both stay.
  ASSERT_OK_AND_ASSIGN(AttachmentCollection collected,
                       attachments_->CollectGarbage());
  EXPECT_EQ(collected.attachments_removed, 0u);
  EXPECT_EQ(collected.grants_expired, 0u);
  EXPECT_EQ(collected.bytes_freed, 0u);
  EXPECT_THAT(FilesUnder(BlobsDir()), SizeIs(2));

  // The right has lapsed, but sends that checked it may be in flight.
  clock_.Advance(options_.usable_for + absl::Minutes(59));
  EXPECT_THAT(
      attachments_->CheckUsable(a_, unreferenced_sha, unreferenced.size()),
      StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK_AND_ASSIGN(collected, attachments_->CollectGarbage());
  EXPECT_EQ(collected.attachments_removed, 0u);
  EXPECT_OK(attachments_->Open(unreferenced_sha));

  // An hour's grace later, the unreferenced one goes.
  clock_.Advance(absl::Minutes(2));
  ASSERT_OK_AND_ASSIGN(collected, attachments_->CollectGarbage());
  EXPECT_EQ(collected.attachments_removed, 1u);
  EXPECT_EQ(collected.grants_expired, 2u);
  // On disk: the content, and what sealing at rest adds to each chunk.
  EXPECT_GE(collected.bytes_freed, unreferenced.size());
  EXPECT_LE(collected.bytes_freed, unreferenced.size() + 4 * 64);
  EXPECT_THAT(attachments_->Open(unreferenced_sha),
              StatusIs(absl::StatusCode::kNotFound));
  std::vector<std::string> blobs = FilesUnder(BlobsDir());
  ASSERT_THAT(blobs, SizeIs(1));
  EXPECT_EQ(std::filesystem::path(blobs[0]).filename().string(),
            referenced_sha);

  // The referenced one stays however long it is kept.
  clock_.Advance(absl::Hours(24 * 365));
  ASSERT_OK_AND_ASSIGN(collected, attachments_->CollectGarbage());
  EXPECT_EQ(collected.attachments_removed, 0u);
  EXPECT_EQ(collected.bytes_freed, 0u);
  ASSERT_OK(Restart());
  ASSERT_OK_AND_ASSIGN(collected, attachments_->CollectGarbage());
  EXPECT_EQ(collected.attachments_removed, 0u);
  EXPECT_THAT(ReadAll(referenced_sha), IsOkAndHolds(referenced));
  ASSERT_OK_AND_ASSIGN(AttachmentStats stats, attachments_->Stats());
  EXPECT_EQ(stats.attachments, 1u);
  EXPECT_EQ(stats.bytes, referenced.size());
}

TEST_P(AttachmentStoreTest, GarbageCollectionRemovesUploadsLeftTooLong) {
  const std::string content = Content(5 * kChunk, 19);
  const std::string sha = sealing::Sha256Hex(content);
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                         attachments_->BeginUpload(a_, sha, content.size()));
    ASSERT_OK(WriteChunks(*upload, content, 0, 3 * kChunk));
    EXPECT_EQ(upload->progress().durable_bytes, 2 * kChunk);
  }
  ASSERT_THAT(FilesUnder(PartialDir()), SizeIs(1));
  const std::string partial = FilesUnder(PartialDir())[0];

  clock_.Advance(options_.partial_kept_for - absl::Minutes(1));
  ASSERT_OK_AND_ASSIGN(AttachmentCollection collected,
                       attachments_->CollectGarbage());
  EXPECT_EQ(collected.partial_uploads_removed, 0u);
  EXPECT_TRUE(std::filesystem::exists(partial));
  ASSERT_OK_AND_ASSIGN(AttachmentStats stats, attachments_->Stats());
  EXPECT_EQ(stats.partial_uploads, 1u);
  EXPECT_EQ(stats.partial_bytes, 2 * kChunk);

  clock_.Advance(absl::Minutes(2));
  ASSERT_OK(Restart());
  ASSERT_OK_AND_ASSIGN(collected, attachments_->CollectGarbage());
  EXPECT_EQ(collected.partial_uploads_removed, 1u);
  EXPECT_FALSE(std::filesystem::exists(partial));
  // The partial file's bytes were freed too.
  EXPECT_GE(collected.bytes_freed, 2 * kChunk);
  ASSERT_OK_AND_ASSIGN(stats, attachments_->Stats());
  EXPECT_EQ(stats.partial_uploads, 0u);

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_EQ(upload->progress().durable_bytes, 0u);
  EXPECT_EQ(upload->progress().resumed_bytes, 0u);
  ASSERT_OK(WriteChunks(*upload, content, 0, content.size()));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
}

TEST_P(AttachmentStoreTest, GarbageCollectionLeavesARunningUploadAlone) {
  const std::string content = Content(3 * kChunk, 20);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  ASSERT_OK(upload->Write(ChunkOf(content, 0)));  // nothing durable yet
  clock_.Advance(options_.partial_kept_for + absl::Hours(1));
  ASSERT_OK_AND_ASSIGN(AttachmentCollection collected,
                       attachments_->CollectGarbage());
  EXPECT_EQ(collected.partial_uploads_removed, 0u);
  EXPECT_EQ(collected.bytes_freed, 0u);
  EXPECT_THAT(FilesUnder(PartialDir()), SizeIs(1));
  ASSERT_OK(WriteChunks(*upload, content, kChunk, content.size()));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
}

TEST_P(AttachmentStoreTest, AFailedBeginLeavesNoUploadRunning) {
  // An empty content whose hash is not that of nothing.
  const std::string wrong = sealing::Sha256Hex("not empty");
  for (int i = 0; i < 2; ++i) {
    EXPECT_THAT(attachments_->BeginUpload(a_, wrong, 0),
                StatusIs(absl::StatusCode::kDataLoss));
  }
  // A size that is not the stored content's, from its uploader (to anyone
  // else the start does not say whether the content is stored).
  const std::string content = Content(kChunk + 1, 21);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK(Upload(a_, content));
  for (int i = 0; i < 2; ++i) {
    EXPECT_THAT(
        attachments_->BeginUpload(a_, sha, content.size() + 1),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("start.size")));
  }
  ASSERT_OK_AND_ASSIGN(AttachmentStats stats, attachments_->Stats());
  EXPECT_EQ(stats.uploads_running, 0u);
  EXPECT_OK(Upload(b_, content));
}

// Completing fails after the last chunk (here: the blob's directory cannot
// be made). The upload then refuses every further call, including the
// checkpoint the service makes after a failure, instead of writing or
// syncing through the file it closed; a new upload completes from what is
// stored.
TEST_P(AttachmentStoreTest, AFailedCompletionEndsTheUploadAndANewOneFinishes) {
  const std::string content = Content(2 * kChunk + 5, 33);
  const std::string sha = sealing::Sha256Hex(content);
  const std::string shard =
      absl::StrCat(options_.directory, "/blobs/", sha.substr(0, 2));
  std::filesystem::create_directories(options_.directory + "/blobs");
  { std::ofstream(shard) << "in the way"; }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_THAT(WriteChunks(*upload, content, 0, content.size()),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("mkdir")));
  EXPECT_FALSE(upload->progress().complete);
  EXPECT_THAT(upload->Checkpoint(),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("completing it failed")));
  v1::Chunk more;
  more.set_offset(content.size());
  more.set_data("x");
  more.set_sha256(sealing::Sha256Hex("x"));
  EXPECT_THAT(upload->Write(more), StatusIs(absl::StatusCode::kUnavailable));
  upload.reset();

  std::filesystem::remove(shard);
  ASSERT_OK(Upload(a_, content));
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
}

// Uploads running keep the disk they may still write: one that would not
// fit besides them is refused, and fits once they end. (The margin, half an
// upload each way, absorbs what else writes to this disk meanwhile.)
TEST_P(AttachmentStoreTest, UploadsRunningReserveTheDiskTheyStillNeed) {
  constexpr uint64_t kSize = uint64_t{256} << 20;
  struct statvfs fs;
  ASSERT_EQ(::statvfs(dir_.path().c_str(), &fs), 0);
  const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  if (free_bytes < 4 * kSize) GTEST_SKIP() << "too little disk to test";
  options_.min_free_bytes = free_bytes - kSize - kSize / 2 - (kSize >> 4);
  options_.max_bytes = kSize;
  options_.chunk_size = uint64_t{1} << 20;
  options_.sync_bytes = options_.chunk_size;
  ASSERT_OK(OpenAttachments());
  const std::string one = sealing::Sha256Hex("one");
  const std::string two = sealing::Sha256Hex("two");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> first,
                       attachments_->BeginUpload(a_, one, kSize));
  EXPECT_THAT(attachments_->BeginUpload(b_, two, kSize),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("for the 1 uploads running")));
  first.reset();
  EXPECT_OK(attachments_->BeginUpload(b_, two, kSize).status());
}

// One uploader may run only so many uploads at once; others are not held up.
TEST_P(AttachmentStoreTest, OneUploaderRunsAtMostSixteenUploads) {
  std::vector<std::unique_ptr<AttachmentUpload>> running;
  for (int i = 0; i < 16; ++i) {
    ASSERT_OK_AND_ASSIGN(
        running.emplace_back(),
        attachments_->BeginUpload(a_, sealing::Sha256Hex(absl::StrCat(i)), 1));
  }
  const std::string more = sealing::Sha256Hex("more");
  EXPECT_THAT(
      attachments_->BeginUpload(a_, more, 1),
      StatusIs(absl::StatusCode::kAborted, HasSubstr("16 uploads running")));
  EXPECT_OK(attachments_->BeginUpload(b_, more, 1).status());
  running.pop_back();
  EXPECT_OK(attachments_->BeginUpload(a_, more, 1).status());
}

// A stored file lost or cut since (a disk fault, a mistake) is not kept as
// stored: its uploader's right is not renewed without sending, and the next
// complete upload of the content puts it back.
TEST_P(AttachmentStoreTest, ALostStoredFileIsTakenAgainFromTheNextUpload) {
  const std::string content = Content(3 * kChunk + 11, 41);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK(Upload(a_, content));
  std::vector<std::string> blobs = FilesUnder(BlobsDir());
  ASSERT_THAT(blobs, SizeIs(1));
  std::filesystem::resize_file(blobs[0], kChunk);  // cut

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> again,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_FALSE(again->progress().complete);  // not renewed on a cut file
  again.reset();
  ASSERT_OK(Upload(b_, content));
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));

  std::filesystem::remove(blobs[0]);  // lost
  ASSERT_OK(Upload(a_, content));
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
}

TEST_P(AttachmentStoreTest, AnUploadThatWouldFillTheDiskIsRefused) {
  options_.min_free_bytes = uint64_t{1} << 60;  // more than any disk
  ASSERT_OK(OpenAttachments());
  const std::string sha = sealing::Sha256Hex("x");
  for (int i = 0; i < 2; ++i) {
    EXPECT_THAT(attachments_->BeginUpload(a_, sha, 1),
                StatusIs(absl::StatusCode::kResourceExhausted));
  }
  ASSERT_OK_AND_ASSIGN(AttachmentStats stats, attachments_->Stats());
  EXPECT_EQ(stats.uploads_running, 0u);
}

TEST_P(AttachmentStoreTest, AttachmentsKeepTheirChunkSizeWhenTheOptionChanges) {
  const std::string content = Content(3 * kChunk + 3, 22);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK(Upload(a_, content));
  options_.chunk_size = 2 * kChunk;
  options_.sync_bytes = 2 * kChunk;
  ASSERT_OK(Restart());

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentReader> reader,
                       attachments_->Open(sha));
  EXPECT_EQ(reader->chunk_size(), kChunk);
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
  // A second uploader sends it as any new content (the stored chunk size
  // would tell it the content is stored); the stored copy stays as it is.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(b_, sha, content.size()));
  EXPECT_EQ(upload->chunk_size(), 2 * kChunk);
  ASSERT_OK(WriteChunks(*upload, content, 0, content.size()));
  EXPECT_TRUE(upload->progress().complete);
}

TEST_P(AttachmentStoreTest, ASecondUploaderResumesAfterARestart) {
  const std::string content = Content(5 * kChunk, 23);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK(Upload(a_, content));
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                         attachments_->BeginUpload(b_, sha, content.size()));
    ASSERT_OK(WriteChunks(*upload, content, 0, 3 * kChunk));
    EXPECT_THAT(upload->Checkpoint(), IsOkAndHolds(true));
    EXPECT_EQ(upload->progress().durable_bytes, 3 * kChunk);
  }
  ASSERT_OK(Restart());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(b_, sha, content.size()));
  EXPECT_EQ(upload->progress().durable_bytes, 3 * kChunk);
  EXPECT_EQ(upload->progress().resumed_bytes, 3 * kChunk);
  EXPECT_THAT(attachments_->CheckUsable(b_, sha, content.size()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK(WriteChunks(*upload, content, 3 * kChunk, content.size()));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  EXPECT_OK(attachments_->CheckUsable(b_, sha, content.size()));
  EXPECT_THAT(FilesUnder(BlobsDir()), SizeIs(1));
}

TEST_P(AttachmentStoreTest, AnUploadResumesFromTheContentAnotherCompleted) {
  const std::string content = Content(4 * kChunk + 9, 24);
  const std::string sha = sealing::Sha256Hex(content);
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                         attachments_->BeginUpload(a_, sha, content.size()));
    ASSERT_OK(WriteChunks(*upload, content, 0, 2 * kChunk));
    EXPECT_EQ(upload->progress().durable_bytes, 2 * kChunk);
  }
  ASSERT_OK(Upload(b_, content));
  ASSERT_OK(Restart());

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(a_, sha, content.size()));
  EXPECT_EQ(upload->progress().durable_bytes, 2 * kChunk);
  EXPECT_FALSE(upload->progress().complete);
  ASSERT_OK(WriteChunks(*upload, content, 2 * kChunk, content.size()));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  EXPECT_OK(attachments_->CheckUsable(a_, sha, content.size()));

  // A's partial file is left over; the next collection removes it and
  // keeps the attachment.
  ASSERT_OK_AND_ASSIGN(AttachmentCollection collected,
                       attachments_->CollectGarbage());
  EXPECT_EQ(collected.attachments_removed, 0u);
  EXPECT_THAT(FilesUnder(PartialDir()), SizeIs(0));
  EXPECT_THAT(FilesUnder(BlobsDir()), SizeIs(1));
  EXPECT_THAT(ReadAll(sha), IsOkAndHolds(content));
}

TEST_P(AttachmentStoreTest, ContentSealedUnderAnEarlierDataKeyStillReads) {
  if (!GetParam().encrypted) GTEST_SKIP() << "no encryption at rest";
  const std::string stored = Content(2 * kChunk + 1, 25);
  const std::string resumed = Content(4 * kChunk, 26);
  ASSERT_OK(Upload(a_, stored));
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                         attachments_->BeginUpload(
                             a_, sealing::Sha256Hex(resumed), resumed.size()));
    ASSERT_OK(WriteChunks(*upload, resumed, 0, 2 * kChunk));
  }
  EncryptionOptions encryption;
  encryption.master_key = master_key_;
  ASSERT_OK(store_->RotateKeys(encryption));
  ASSERT_OK(Restart());

  EXPECT_THAT(ReadAll(sealing::Sha256Hex(stored)), IsOkAndHolds(stored));
  // Half sealed under the old data key, half under the new one.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentUpload> upload,
                       attachments_->BeginUpload(
                           a_, sealing::Sha256Hex(resumed), resumed.size()));
  EXPECT_EQ(upload->progress().durable_bytes, 2 * kChunk);
  ASSERT_OK(WriteChunks(*upload, resumed, 2 * kChunk, resumed.size()));
  EXPECT_TRUE(upload->progress().complete);
  upload.reset();
  EXPECT_THAT(ReadAll(sealing::Sha256Hex(resumed)), IsOkAndHolds(resumed));
}

TEST_P(AttachmentStoreTest, TheRightLastsUntilTheUsableUntilItWasGiven) {
  // Uploads end at any instant, not on a whole second.
  clock_.Advance(absl::Milliseconds(600));
  const std::string content = Content(kChunk, 27);
  const std::string sha = sealing::Sha256Hex(content);
  ASSERT_OK_AND_ASSIGN(UploadProgress progress, Upload(a_, content));
  ASSERT_TRUE(progress.complete);
  clock_.Advance(progress.usable_until - clock_.Now() - absl::Milliseconds(1));
  EXPECT_OK(attachments_->CheckUsable(a_, sha, content.size()));
}

TEST(AttachmentOptionsTest, ValidateNamesTheBadField) {
  AttachmentOptions options;
  EXPECT_THAT(options.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("directory")));
  options.directory = "/tmp/x";
  EXPECT_OK(options.Validate());
  options.chunk_size = 100;
  EXPECT_THAT(options.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("chunk_size")));
  options.chunk_size = kChunk;
  options.sync_bytes = kChunk - 1;
  EXPECT_THAT(options.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("sync_bytes")));
}

INSTANTIATE_TEST_SUITE_P(
    Engines, AttachmentStoreTest,
    ::testing::Values(Engine{"Memory", false, false},
                      Engine{"MemoryEncrypted", false, true},
                      Engine{"RocksDb", true, false},
                      Engine{"RocksDbEncrypted", true, true},
                      Engine{"RocksDbCached", true, false, false},
                      Engine{"RocksDbEncryptedCached", true, true, false}),
    [](const ::testing::TestParamInfo<Engine>& info) {
      return std::string(info.param.name);
    });

}  // namespace
}  // namespace lienthong::storage
