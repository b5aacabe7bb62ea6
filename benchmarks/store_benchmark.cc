// Group commit, side by side in one run: documents made durable per second by
// the RocksDB store when 1, 16, 128 or 1024 writes are waiting at once. Every
// write is acknowledged only after a synced WAL write; with group commit the
// waiting writes share one sync. And what encryption at rest costs the
// whole life of a document (BM_DocumentLifecycle/encrypted:0 and :1).
//
//   build/benchmarks/store_benchmark --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/time/clock.h"
#include "lienthong/common/ids.h"
#include "lienthong/common/sealing.h"
#include "lienthong/storage/store.h"

namespace {

using lienthong::storage::Store;
namespace v1 = lienthong::v1;

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

// A RocksDB store in a temp dir for one benchmark; reports docs/s (`docs`
// per iteration) and removes the store when it goes.
class BenchStore {
 public:
  BenchStore(benchmark::State& state, int docs, bool encrypted = false)
      : state_(state), docs_(docs) {
    char tmpl[] = "/tmp/lienthong-bench-XXXXXX";
    dir_ = mkdtemp(tmpl);
    lienthong::storage::RocksDbOptions options;
    options.path = dir_ + "/db";
    if (encrypted)
      options.encryption.master_key = lienthong::sealing::RandomKey();
    auto opened = lienthong::storage::OpenRocksDbStore(options);
    if (opened.ok()) {
      store_ = *std::move(opened);
    } else {
      state.SkipWithError(std::string(opened.status().message()).c_str());
    }
  }
  ~BenchStore() {
    state_.SetItemsProcessed(state_.iterations() * docs_);
    state_.counters["docs/s"] = benchmark::Counter(state_.iterations() * docs_,
                                                   benchmark::Counter::kIsRate);
    if (errors > 0) state_.SkipWithError("write errors");
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  bool ok() const { return store_ != nullptr; }
  Store& operator*() { return *store_; }
  Store* operator->() { return store_.get(); }

  std::atomic<int> errors{0};

 private:
  benchmark::State& state_;
  const int docs_;
  std::string dir_;
  std::unique_ptr<Store> store_;
};

void BM_DurableAccept(benchmark::State& state) {
  const int concurrency = static_cast<int>(state.range(0));
  BenchStore store(state, concurrency);
  if (!store.ok()) return;
  int n = 0;
  for (auto _ : state) {
    absl::BlockingCounter done(concurrency);
    for (int i = 0; i < concurrency; ++i) {
      lienthong::storage::WriteBatch batch;
      batch.document = std::make_shared<v1::Document>(MakeDocument(n++));
      batch.enqueue.push_back(
          {"000.00.00.G22", 3, batch.document->id(), "000.00.00.H49", ""});
      store->Write(std::move(batch),
                   [&](absl::StatusOr<lienthong::storage::WriteResult> r) {
                     if (!r.ok()) store.errors++;
                     done.DecrementCount();
                   });
    }
    done.Wait();
  }
}

v1::StatusEvent EventFor(const v1::Document& doc, v1::DeliveryState state) {
  v1::StatusEvent e;
  e.set_document_id(doc.id());
  e.set_sender(doc.sender());
  e.set_recipient(doc.recipients(0));
  e.set_delivery_state(state);
  e.set_actor("spiffe://lienthong.gov.vn/broker/bench");
  e.mutable_at()->set_seconds(1'800'000'000);
  return e;
}

v1::AuditEntry AuditFor(const v1::Document& doc, v1::AuditKind kind,
                        const std::string& action) {
  v1::AuditEntry a;
  a.mutable_time()->set_seconds(1'800'000'000);
  a.set_kind(kind);
  a.set_actor("spiffe://lienthong.gov.vn/org/000.00.00.H49");
  a.set_document_id(doc.id());
  a.set_org(doc.recipients(0));
  a.set_action(action);
  a.set_outcome("OK");
  return a;
}

// What the broker writes for one document from acceptance to the
// recipient's acknowledgement, 1024 documents at a time: the document, its
// idempotency key, the recipient's queue entry, the ACCEPTED event and an
// audit entry in one synced batch; then the dequeue, the DELIVERED event and
// an audit entry in another. docs/s counts whole lifecycles. With
// `encrypted`, the store seals documents, events and audit entries at rest.
void BM_DocumentLifecycle(benchmark::State& state) {
  constexpr int kConcurrency = 1024;
  BenchStore store(state, kConcurrency, state.range(0) == 1);
  if (!store.ok()) return;
  int64_t n = 0;
  for (auto _ : state) {
    std::vector<lienthong::storage::QueueEntry> queued(kConcurrency);
    std::vector<std::shared_ptr<const v1::Document>> docs;
    docs.reserve(kConcurrency);
    for (int i = 0; i < kConcurrency; ++i) {
      v1::Document doc = MakeDocument(static_cast<int>(n++));
      // Ids as a broker makes them: the time in milliseconds, then random.
      doc.set_id(lienthong::NewDocumentId(absl::ToUnixMillis(absl::Now())));
      docs.push_back(std::make_shared<const v1::Document>(std::move(doc)));
    }
    {
      absl::BlockingCounter done(kConcurrency);
      for (int i = 0; i < kConcurrency; ++i) {
        lienthong::storage::WriteBatch batch;
        batch.document = docs[i];
        batch.enqueue.push_back(
            {"000.00.00.G22", 3, docs[i]->id(), "000.00.00.H49", ""});
        batch.events.push_back(EventFor(*docs[i], v1::DELIVERY_STATE_ACCEPTED));
        batch.audit.push_back(
            AuditFor(*docs[i], v1::AUDIT_KIND_SEND_ACCEPTED, "ACCEPTED"));
        store->Write(std::move(batch),
                     [&, i](absl::StatusOr<lienthong::storage::WriteResult> r) {
                       if (!r.ok() || r->enqueued.size() != 1) {
                         store.errors++;
                       } else {
                         queued[i] = r->enqueued[0];
                       }
                       done.DecrementCount();
                     });
      }
      done.Wait();
    }
    {
      absl::BlockingCounter done(kConcurrency);
      for (int i = 0; i < kConcurrency; ++i) {
        lienthong::storage::WriteBatch batch;
        batch.dequeue.push_back(queued[i]);
        batch.events.push_back(
            EventFor(*docs[i], v1::DELIVERY_STATE_DELIVERED));
        batch.audit.push_back(
            AuditFor(*docs[i], v1::AUDIT_KIND_DELIVERED, "DELIVERED"));
        store->Write(std::move(batch),
                     [&](absl::StatusOr<lienthong::storage::WriteResult> r) {
                       if (!r.ok()) store.errors++;
                       done.DecrementCount();
                     });
      }
      done.Wait();
    }
  }
}
BENCHMARK(BM_DocumentLifecycle)
    ->ArgName("encrypted")
    ->Arg(0)
    ->Arg(1)
    ->UseRealTime()
    ->MinTime(3.0);

BENCHMARK(BM_DurableAccept)
    ->Arg(1)
    ->Arg(16)
    ->Arg(128)
    ->Arg(1024)
    ->UseRealTime()
    ->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
