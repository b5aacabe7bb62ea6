// Group commit, side by side in one run: documents made durable per second by
// the RocksDB store when 1, 16, 128 or 1024 writes are waiting at once. Every
// write is acknowledged only after a synced WAL write; with group commit the
// waiting writes share one sync.
//
//   build/benchmarks/store_benchmark --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <string>

#include "absl/synchronization/blocking_counter.h"
#include "lienthong/common/ids.h"
#include "lienthong/storage/store.h"

namespace {

using lienthong::storage::Store;

lienthong::v1::Document MakeDocument(int i) {
  lienthong::v1::Document doc;
  doc.set_id(lienthong::NewDocumentId(1'800'000'000'000 + i));
  doc.set_idempotency_key(lienthong::RandomToken());
  doc.set_sender("000.00.00.H49");
  doc.add_recipients("000.00.00.G22");
  doc.mutable_metadata()->set_subject("benchmark");
  doc.set_body(std::string(1024, 'x'));
  return doc;
}

void BM_DurableAccept(benchmark::State& state) {
  const int concurrency = static_cast<int>(state.range(0));
  char tmpl[] = "/tmp/lienthong-bench-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  lienthong::storage::RocksDbOptions options;
  options.path = dir + "/db";
  auto store = lienthong::storage::OpenRocksDbStore(options);
  if (!store.ok()) {
    state.SkipWithError(std::string(store.status().message()).c_str());
    return;
  }
  int n = 0;
  std::atomic<int> errors{0};
  for (auto _ : state) {
    absl::BlockingCounter done(concurrency);
    for (int i = 0; i < concurrency; ++i) {
      lienthong::storage::WriteBatch batch;
      batch.document = MakeDocument(n++);
      batch.enqueue.push_back(
          {"000.00.00.G22", 3, batch.document->id(), "000.00.00.H49", ""});
      (*store)->Write(std::move(batch),
                      [&](absl::StatusOr<lienthong::storage::WriteResult> r) {
                        if (!r.ok()) errors++;
                        done.DecrementCount();
                      });
    }
    done.Wait();
  }
  state.SetItemsProcessed(state.iterations() * concurrency);
  state.counters["docs/s"] = benchmark::Counter(
      state.iterations() * concurrency, benchmark::Counter::kIsRate);
  if (errors) state.SkipWithError("write errors");
  store->reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_DurableAccept)
    ->Arg(1)
    ->Arg(16)
    ->Arg(128)
    ->Arg(1024)
    ->UseRealTime()
    ->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
