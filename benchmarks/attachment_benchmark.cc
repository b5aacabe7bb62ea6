// Stored attachments at the storage layer, side by side in one run, for
// 256 MiB in 1 MiB chunks on the same disk:
//   SyncedStream     pwrite + fdatasync every 16 MiB (the disk's ceiling for
//                    durable streaming: what an upload could reach if the
//                    broker did nothing else)
//   Hashing/0        what the broker hashes of chunks sent with their
//                    sha256_state (today's SDK): the whole's SHA-256, once
//   Hashing/1        ... of chunks sent with their own sha256 (older SDKs,
//                    peer brokers): each chunk's SHA-256 and the whole's
//   Upload/0, /1     AttachmentStore, chunks by state / by sha256: the
//                    hashing above, pwrite, write-back started per chunk, a
//                    durable checkpoint every 16 MiB, completion
//                    (fdatasync, rename, synced records)
//   UploadSealed     Upload/0 with encryption at rest (AES-256-GCM per chunk)
//   Read/0           reading it back chunk by chunk with states, unchecked
//                    (a downloader that takes states checks them itself)
//   Read/1           ... with states, each chunk checked against its state
//   Read/2           ... with each chunk's own SHA-256 (older downloaders):
//                    checked, then hashed on its own
// Upload and Read run with the files past the page cache (direct:1, the
// default, O_DIRECT) and through it (direct:0, attachments.direct_io off:
// the synced pages of an upload are dropped, a read leaves its pages
// cached, so after the first iteration Read/direct:0 reads the cache).
// Bytes per second are reported by Google Benchmark (bytes_per_second).
//
//   build/benchmarks/attachment_benchmark --benchmark_min_time=1
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "lienthong/common/clock.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/sha256_chain.h"
#include "lienthong/storage/attachments.h"
#include "lienthong/storage/store.h"

namespace {

constexpr uint64_t kChunk = 1 << 20;
constexpr uint64_t kTotal = uint64_t{256} << 20;

std::string TempDir() {
  char tmpl[] = "/tmp/lienthong-attbench-XXXXXX";
  return mkdtemp(tmpl);
}

// 256 distinct chunks would cost 256 MiB of memory: 16 distinct ones, each
// made unique per position by its first 8 bytes.
std::string ChunkAt(uint64_t index) {
  static const std::string base = [] {
    std::string s(kChunk, '\0');
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < s.size(); i += 8) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      memcpy(s.data() + i, &x, 8);
    }
    return s;
  }();
  std::string c = base;
  memcpy(c.data(), &index, sizeof(index));
  return c;
}

// Chunk.sha256_state of every chunk, as the SDK sends them.
const std::vector<std::string>& States() {
  static const std::vector<std::string> states = [] {
    std::vector<std::string> v;
    lienthong::sealing::Sha256Chain whole;
    for (uint64_t i = 0; i < kTotal / kChunk; ++i) {
      whole.Update(ChunkAt(i));
      v.push_back(whole.bytes() == kTotal ? whole.Digest() : whole.State());
    }
    return v;
  }();
  return states;
}

std::string WholeSha256() { return lienthong::sealing::HexOf(States().back()); }

// Every chunk of the content through `upload`, which must then be complete:
// with its sha256_state, or (`own_hash`) its own sha256.
absl::Status WriteAll(lienthong::storage::AttachmentUpload& upload,
                      bool own_hash) {
  for (uint64_t i = 0; i < kTotal / kChunk; ++i) {
    lienthong::v1::Chunk chunk;
    chunk.set_offset(i * kChunk);
    chunk.set_data(ChunkAt(i));
    if (own_hash) {
      chunk.set_sha256(lienthong::sealing::Sha256Hex(chunk.data()));
    } else {
      chunk.set_sha256_state(States()[i]);
    }
    absl::StatusOr<bool> r = upload.Write(chunk);
    if (!r.ok()) return r.status();
  }
  if (!upload.progress().complete)
    return absl::InternalError("the upload is not complete");
  return absl::OkStatus();
}

void BM_SyncedStream(benchmark::State& state) {
  std::string dir = TempDir();
  for (auto _ : state) {
    std::string path = dir + "/stream";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    for (uint64_t i = 0; i < kTotal / kChunk; ++i) {
      std::string c = ChunkAt(i);
      if (::pwrite(fd, c.data(), c.size(), static_cast<off_t>(i * kChunk)) < 0)
        state.SkipWithError("pwrite");
      if ((i + 1) % 16 == 0) ::fdatasync(fd);
    }
    ::fdatasync(fd);
    ::close(fd);
    ::unlink(path.c_str());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kTotal));
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_SyncedStream)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Hashing(benchmark::State& state) {
  const bool own_hash = state.range(0) == 1;
  for (auto _ : state) {
    lienthong::sealing::Sha256Chain whole;
    for (uint64_t i = 0; i < kTotal / kChunk; ++i) {
      std::string c = ChunkAt(i);
      if (own_hash) benchmark::DoNotOptimize(lienthong::sealing::Sha256Raw(c));
      whole.Update(c);
      if (whole.bytes() < kTotal) benchmark::DoNotOptimize(whole.State());
    }
    benchmark::DoNotOptimize(whole.Digest());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kTotal));
}
BENCHMARK(BM_Hashing)
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void Upload(benchmark::State& state, bool sealed, bool own_hash, bool direct) {
  const std::string sha = WholeSha256();
  for (auto _ : state) {
    state.PauseTiming();
    std::string dir = TempDir();
    lienthong::storage::RocksDbOptions db;
    db.path = dir + "/db";
    if (sealed) db.encryption.master_key = std::string(32, 'k');
    auto store = lienthong::storage::OpenRocksDbStore(db);
    lienthong::storage::AttachmentOptions options;
    options.directory = dir + "/attachments";
    options.min_free_bytes = 0;
    options.direct_io = direct;
    auto attachments =
        lienthong::storage::AttachmentStore::Open(options, store->get());
    state.ResumeTiming();
    auto upload = (*attachments)->BeginUpload("org:bench", sha, kTotal);
    if (!upload.ok()) {
      state.SkipWithError(std::string(upload.status().message()).c_str());
      break;
    }
    if (absl::Status s = WriteAll(**upload, own_hash); !s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      break;
    }
    state.PauseTiming();
    upload->reset();
    attachments->reset();
    store->reset();
    std::filesystem::remove_all(dir);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kTotal));
}

void BM_Upload(benchmark::State& state) {
  Upload(state, false, state.range(0) == 1, state.range(1) == 1);
}
void BM_UploadSealed(benchmark::State& state) {
  Upload(state, true, false, state.range(0) == 1);
}
BENCHMARK(BM_Upload)
    ->ArgNames({"own_hash", "direct"})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({0, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_UploadSealed)
    ->ArgName("direct")
    ->Arg(1)
    ->Arg(0)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Read(benchmark::State& state) {
  std::string dir = TempDir();
  lienthong::storage::RocksDbOptions db;
  db.path = dir + "/db";
  auto store = lienthong::storage::OpenRocksDbStore(db);
  lienthong::storage::AttachmentOptions options;
  options.directory = dir + "/attachments";
  options.min_free_bytes = 0;
  options.direct_io = state.range(1) == 1;
  auto attachments =
      lienthong::storage::AttachmentStore::Open(options, store->get());
  const std::string sha = WholeSha256();
  {
    auto upload = (*attachments)->BeginUpload("org:bench", sha, kTotal);
    if (!upload.ok() || !WriteAll(**upload, false).ok()) {
      state.SkipWithError("upload");
      return;
    }
  }
  lienthong::storage::ChunkReadOptions fields;
  fields.sha256 = state.range(0) == 2;
  fields.sha256_state = state.range(0) != 2;
  fields.verify = state.range(0) != 0;
  for (auto _ : state) {
    auto reader = (*attachments)->Open(sha);
    for (uint64_t at = 0; at < kTotal; at += kChunk) {
      auto chunk = (*reader)->Read(at, fields);
      if (!chunk.ok()) state.SkipWithError("read");
      benchmark::DoNotOptimize(chunk);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kTotal));
  attachments->reset();
  store->reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_Read)
    ->ArgNames({"check", "direct"})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({2, 1})
    ->Args({0, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
