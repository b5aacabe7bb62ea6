// The store's contract, run against both engines: the in-memory store and
// RocksDB in a fresh temporary directory.
#include "lienthong/storage/store.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::storage {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::lienthong::testing_util::IsOkAndHolds;
using ::lienthong::testing_util::StatusIs;
using ::lienthong::testing_util::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Optional;
using ::testing::Pair;
using ::testing::SizeIs;

constexpr char kH49[] = "000.00.00.H49";
constexpr char kH50[] = "000.00.00.H50";
constexpr char kG22[] = "000.00.00.G22";
constexpr char kSub[] = "000.01.23.H49";

v1::Document MakeDocument(const std::string& id, const std::string& sender,
                          const std::string& key) {
  v1::Document doc;
  doc.set_id(id);
  doc.set_sender(sender);
  doc.set_idempotency_key(key);
  doc.add_recipients(kG22);
  doc.mutable_metadata()->set_subject(absl::StrCat("subject of ", id));
  doc.set_body(absl::StrCat("body of ", id));
  return doc;
}

v1::StatusEvent MakeEvent(
    const std::string& document_id, const std::string& sender,
    const std::string& recipient,
    v1::DeliveryState state = v1::DELIVERY_STATE_ACCEPTED) {
  v1::StatusEvent e;
  e.set_document_id(document_id);
  e.set_sender(sender);
  e.set_recipient(recipient);
  e.set_delivery_state(state);
  return e;
}

// A batch as the exchange writes it for a new document: the document, one
// queue entry and one ACCEPTED event for its recipient.
WriteBatch NewDocumentBatch(const std::string& id, const std::string& sender,
                            const std::string& key,
                            const std::string& recipient = kG22,
                            int priority = 3) {
  WriteBatch batch;
  batch.document =
      std::make_shared<v1::Document>(MakeDocument(id, sender, key));
  batch.enqueue.push_back(Enqueue{recipient, priority, id, sender, ""});
  batch.events.push_back(MakeEvent(id, sender, recipient));
  return batch;
}

std::vector<uint64_t> Sequences(const std::vector<v1::StatusEvent>& events) {
  std::vector<uint64_t> out;
  for (const auto& e : events) out.push_back(e.sequence());
  return out;
}

bool StrictlyIncreasing(const std::vector<uint64_t>& v) {
  return std::adjacent_find(v.begin(), v.end(), [](uint64_t a, uint64_t b) {
           return a >= b;
         }) == v.end();
}

enum class Backend { kMemory, kRocksDb };

void PrintTo(Backend backend, std::ostream* os) {
  *os << (backend == Backend::kMemory ? "memory engine" : "RocksDB engine");
}

class StoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(Open()); }

  bool durable() const { return GetParam() == Backend::kRocksDb; }

  void Open() {
    if (!durable()) {
      store_ = NewMemoryStore();
      return;
    }
    ASSERT_FALSE(dir_.path().empty());
    RocksDbOptions options;
    options.path = dir_.path() + "/db";
    ASSERT_OK_AND_ASSIGN(store_, OpenRocksDbStore(options));
  }

  // Closes the store by destroying it and opens the same directory again.
  void Reopen() {
    ASSERT_TRUE(durable()) << "only RocksDB can be reopened";
    store_.reset();
    Open();
  }

  std::vector<QueueEntry> ScanAll() {
    std::vector<QueueEntry> out;
    EXPECT_OK(
        store_->ScanQueues([&](const QueueEntry& e) { out.push_back(e); }));
    return out;
  }

  TempDir dir_;  // outlives store_
  std::unique_ptr<Store> store_;
};

TEST_P(StoreTest, WrittenDocumentReadsBack) {
  WriteBatch batch = NewDocumentBatch("doc-1", kH49, "key-1");
  v1::Document written = *batch.document;
  ASSERT_OK_AND_ASSIGN(WriteResult result, store_->WriteSync(std::move(batch)));

  EXPECT_EQ(result.duplicate_of, std::nullopt);
  ASSERT_THAT(result.enqueued, SizeIs(1));
  EXPECT_EQ(result.enqueued[0].recipient, kG22);
  EXPECT_EQ(result.enqueued[0].document_id, "doc-1");
  EXPECT_EQ(result.enqueued[0].sender, kH49);
  EXPECT_GT(result.enqueued[0].sequence, 0u);
  ASSERT_THAT(result.events, SizeIs(1));
  EXPECT_GT(result.events[0].sequence(), result.enqueued[0].sequence);

  ASSERT_OK_AND_ASSIGN(v1::Document read, store_->GetDocument("doc-1"));
  EXPECT_TRUE(MessageDifferencer::Equals(read, written)) << read.DebugString();
  EXPECT_THAT(store_->LookupIdempotencyKey(kH49, "key-1"),
              IsOkAndHolds(Optional(std::string("doc-1"))));
  EXPECT_THAT(store_->LookupIdempotencyKey(kH49, "key-2"),
              IsOkAndHolds(std::nullopt));
  EXPECT_THAT(store_->LookupIdempotencyKey(kH50, "key-1"),
              IsOkAndHolds(std::nullopt));
  EXPECT_THAT(store_->GetDocument("doc-2"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("doc-2")));
}

TEST_P(StoreTest, SecondBatchWithTheSameKeyAppliesNothing) {
  ASSERT_OK_AND_ASSIGN(WriteResult first,
                       store_->WriteSync(NewDocumentBatch("doc-1", kH49, "k")));
  ASSERT_THAT(first.enqueued, SizeIs(1));

  // Same sender and key, but a different id, another recipient, an event and
  // even a dequeue of the first copy: none of it may be applied.
  WriteBatch second = NewDocumentBatch("doc-2", kH49, "k", kH50);
  second.dequeue.push_back(first.enqueued[0]);
  ASSERT_OK_AND_ASSIGN(WriteResult dup, store_->WriteSync(std::move(second)));

  EXPECT_THAT(dup.duplicate_of, Optional(std::string("doc-1")));
  EXPECT_THAT(dup.enqueued, IsEmpty());
  EXPECT_THAT(dup.events, IsEmpty());
  EXPECT_THAT(store_->GetDocument("doc-2"),
              StatusIs(absl::StatusCode::kNotFound));
  std::vector<QueueEntry> queued = ScanAll();
  ASSERT_THAT(queued, SizeIs(1));
  EXPECT_EQ(queued[0].document_id, "doc-1");
  EXPECT_THAT(store_->ListDocumentEvents("doc-2", 0), IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(store_->ListSenderEvents(kH49, 0, 100), IsOkAndHolds(SizeIs(1)));
  EXPECT_THAT(store_->LookupIdempotencyKey(kH49, "k"),
              IsOkAndHolds(Optional(std::string("doc-1"))));

  // The key is per sender: another sender may use it.
  ASSERT_OK_AND_ASSIGN(WriteResult other,
                       store_->WriteSync(NewDocumentBatch("doc-3", kH50, "k")));
  EXPECT_EQ(other.duplicate_of, std::nullopt);
  EXPECT_OK(store_->GetDocument("doc-3"));
}

TEST_P(StoreTest, ConcurrentWritersOfOneKeyExactlyOneWins) {
  constexpr int kThreads = 16;
  constexpr int kRounds = 8;
  std::vector<std::string> winners;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    const std::string key = absl::StrCat("key-", round);
    std::vector<absl::StatusOr<WriteResult>> results(kThreads);
    absl::Notification go;
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        go.WaitForNotification();
        results[i] = store_->WriteSync(
            NewDocumentBatch(absl::StrCat("doc-", round, "-", i), kH49, key));
      });
    }
    go.Notify();
    for (auto& t : threads) t.join();

    std::vector<int> won;
    for (int i = 0; i < kThreads; ++i) {
      ASSERT_OK(results[i]);
      if (!results[i]->duplicate_of) won.push_back(i);
    }
    ASSERT_THAT(won, SizeIs(1));
    const std::string winner = absl::StrCat("doc-", round, "-", won[0]);
    winners.push_back(winner);
    for (int i = 0; i < kThreads; ++i) {
      if (i == won[0]) continue;
      EXPECT_THAT(results[i]->duplicate_of, Optional(winner)) << "writer " << i;
      EXPECT_THAT(results[i]->enqueued, IsEmpty());
      EXPECT_THAT(store_->GetDocument(absl::StrCat("doc-", round, "-", i)),
                  StatusIs(absl::StatusCode::kNotFound));
    }
    EXPECT_THAT(store_->LookupIdempotencyKey(kH49, key),
                IsOkAndHolds(Optional(winner)));
  }
  std::vector<std::string> queued;
  for (const QueueEntry& e : ScanAll()) queued.push_back(e.document_id);
  EXPECT_THAT(queued, ::testing::UnorderedElementsAreArray(winners));
  EXPECT_THAT(store_->ListSenderEvents(kH49, 0, 1000),
              IsOkAndHolds(SizeIs(kRounds)));
}

// Writes issued back to back without waiting land in one commit group: the
// duplicate must be caught within the group too.
TEST_P(StoreTest, SameKeyTwiceInOneBurstExactlyOneWins) {
  constexpr int kWrites = 64;
  absl::Mutex mu;
  std::vector<absl::StatusOr<WriteResult>> results(kWrites);
  absl::BlockingCounter pending(kWrites);
  for (int i = 0; i < kWrites; ++i) {
    // Eight keys, eight writes each.
    store_->Write(NewDocumentBatch(absl::StrCat("doc-", i), kH49,
                                   absl::StrCat("key-", i % 8)),
                  [&, i](absl::StatusOr<WriteResult> r) {
                    {
                      absl::MutexLock lock(&mu);
                      results[i] = std::move(r);
                    }
                    pending.DecrementCount();
                  });
  }
  pending.Wait();
  absl::MutexLock lock(&mu);
  for (int k = 0; k < 8; ++k) {
    SCOPED_TRACE(absl::StrCat("key-", k));
    std::optional<std::string> winner;
    for (int i = k; i < kWrites; i += 8) {
      ASSERT_OK(results[i]);
      if (!results[i]->duplicate_of) {
        ASSERT_FALSE(winner) << "two winners: " << *winner << " and doc-" << i;
        winner = absl::StrCat("doc-", i);
      }
    }
    ASSERT_TRUE(winner);
    for (int i = k; i < kWrites; i += 8) {
      if (absl::StrCat("doc-", i) != *winner) {
        EXPECT_THAT(results[i]->duplicate_of, Optional(*winner));
      }
    }
  }
  EXPECT_THAT(ScanAll(), SizeIs(8));
}

TEST_P(StoreTest, SequencesStrictlyIncreaseAcrossBatches) {
  std::vector<uint64_t> seen;
  for (int i = 0; i < 20; ++i) {
    WriteBatch batch =
        NewDocumentBatch(absl::StrCat("doc-", i), kH49, absl::StrCat("k", i));
    batch.enqueue.push_back(
        Enqueue{kH50, 0, absl::StrCat("doc-", i), kH49, ""});
    batch.events.push_back(MakeEvent(absl::StrCat("doc-", i), kH49, kH50));
    ASSERT_OK_AND_ASSIGN(WriteResult r, store_->WriteSync(std::move(batch)));
    ASSERT_THAT(r.enqueued, SizeIs(2));
    ASSERT_THAT(r.events, SizeIs(2));
    for (const QueueEntry& e : r.enqueued) seen.push_back(e.sequence);
    for (const v1::StatusEvent& e : r.events) seen.push_back(e.sequence());
  }
  // A batch with only events (a status report) takes sequences too.
  WriteBatch status;
  status.events.push_back(
      MakeEvent("doc-0", kH49, kG22, v1::DELIVERY_STATE_DELIVERED));
  ASSERT_OK_AND_ASSIGN(WriteResult r, store_->WriteSync(std::move(status)));
  seen.push_back(r.events.at(0).sequence());
  EXPECT_TRUE(StrictlyIncreasing(seen)) << ::testing::PrintToString(seen);
}

// What only a store on disk can show: it survives being closed.
using DurableStoreTest = StoreTest;

TEST_P(StoreTest, RecordsAreWrittenScannedByPrefixAndErased) {
  WriteBatch batch;
  batch.records = {{"enc/000.00.00.H49", "cert-a"},
                   {"enc/000.00.00.H50", "cert-b"},
                   {"other/x", "y"}};
  ASSERT_OK(store_->WriteSync(std::move(batch)).status());
  std::vector<std::pair<std::string, std::string>> seen;
  auto collect = [&](const Record& r) { seen.emplace_back(r.key, r.value); };
  ASSERT_OK(store_->ScanRecords("enc/", collect));
  EXPECT_THAT(seen, ElementsAre(Pair("enc/000.00.00.H49", "cert-a"),
                                Pair("enc/000.00.00.H50", "cert-b")));
  // A record is replaced, and erased by an empty value.
  WriteBatch change;
  change.records = {{"enc/000.00.00.H49", "cert-a2"},
                    {"enc/000.00.00.H50", ""}};
  ASSERT_OK(store_->WriteSync(std::move(change)).status());
  if (durable()) {
    ASSERT_NO_FATAL_FAILURE(Reopen());
  }
  seen.clear();
  ASSERT_OK(store_->ScanRecords("enc/", collect));
  EXPECT_THAT(seen, ElementsAre(Pair("enc/000.00.00.H49", "cert-a2")));
  // One record by its exact key: not a prefix of it, not an erased one.
  ASSERT_OK_AND_ASSIGN(std::optional<std::string> one,
                       store_->GetRecord("enc/000.00.00.H49"));
  EXPECT_EQ(one, "cert-a2");
  ASSERT_OK_AND_ASSIGN(one, store_->GetRecord("enc/000.00.00.H4"));
  EXPECT_EQ(one, std::nullopt);
  ASSERT_OK_AND_ASSIGN(one, store_->GetRecord("enc/000.00.00.H50"));
  EXPECT_EQ(one, std::nullopt);
  // Records never show up as queues or sequences.
  EXPECT_THAT(ScanAll(), SizeIs(0));
}

TEST_P(StoreTest, AuditEntriesAreFoundByTheirDocument) {
  auto entry = [](const std::string& doc, const std::string& action) {
    v1::AuditEntry e;
    e.set_document_id(doc);
    e.set_action(action);
    return e;
  };
  WriteBatch first;
  first.audit = {entry("doc-1", "send"), entry("doc-10", "send"),
                 entry("", "admin")};
  ASSERT_OK(store_->WriteSync(std::move(first)).status());
  WriteBatch second;
  second.audit = {entry("doc-1", "deliver")};
  ASSERT_OK(store_->WriteSync(std::move(second)).status());
  if (durable()) {
    ASSERT_NO_FATAL_FAILURE(Reopen());
  }
  std::vector<std::pair<uint64_t, std::string>> seen;
  ASSERT_OK(store_->ScanAuditEntriesForDocument(
      "doc-1", [&](uint64_t index, absl::string_view raw) {
        v1::StoredAuditEntry stored;
        v1::AuditEntry e;
        EXPECT_TRUE(stored.ParseFromString(std::string(raw)));
        EXPECT_TRUE(e.ParseFromString(stored.entry()));
        EXPECT_EQ(stored.index(), index);
        seen.emplace_back(index, e.action());
        return true;
      }));
  // Not doc-10 (a longer id with the same prefix), not the admin entry.
  EXPECT_THAT(seen, ElementsAre(Pair(1u, "send"), Pair(4u, "deliver")));
  // The chain itself is unchanged: four entries.
  int entries = 0;
  ASSERT_OK(store_->ScanAuditEntries(1, [&](uint64_t, absl::string_view) {
    ++entries;
    return true;
  }));
  EXPECT_EQ(entries, 4);
}

TEST_P(DurableStoreTest, SequencesContinueAboveTheOldMaximumAfterReopen) {
  uint64_t old_max = 0;
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK_AND_ASSIGN(WriteResult r, store_->WriteSync(NewDocumentBatch(
                                            absl::StrCat("doc-", i), kH49,
                                            absl::StrCat("k", i))));
    old_max = std::max(old_max, r.events.at(0).sequence());
  }
  ASSERT_NO_FATAL_FAILURE(Reopen());

  ASSERT_OK_AND_ASSIGN(WriteResult r, store_->WriteSync(NewDocumentBatch(
                                          "doc-new", kH49, "k-new")));
  EXPECT_GT(r.enqueued.at(0).sequence, old_max);
  EXPECT_GT(r.events.at(0).sequence(), r.enqueued.at(0).sequence);
  // What was written before is still there, keys included.
  EXPECT_OK(store_->GetDocument("doc-4"));
  ASSERT_OK_AND_ASSIGN(WriteResult dup, store_->WriteSync(NewDocumentBatch(
                                            "doc-x", kH49, "k0")));
  EXPECT_THAT(dup.duplicate_of, Optional(std::string("doc-0")));
  std::vector<uint64_t> all =
      Sequences(store_->ListSenderEvents(kH49, 0, 100)
                    .value_or(std::vector<v1::StatusEvent>{}));
  EXPECT_THAT(all, SizeIs(6));
  EXPECT_TRUE(StrictlyIncreasing(all)) << ::testing::PrintToString(all);
}

TEST_P(StoreTest, ScanQueuesOrdersByRecipientThenPriorityThenSequence) {
  // Written in an order that is none of the expected ones.
  const std::vector<std::tuple<std::string, int, std::string>> writes = {
      {kH50, 3, "h50-normal-1"}, {kG22, 3, "g22-normal-1"},
      {kSub, 2, "sub-urgent"},   {kG22, 0, "g22-express"},
      {kH50, 3, "h50-normal-2"}, {kG22, 3, "g22-normal-2"},
      {kH50, 1, "h50-very"},     {kG22, 2, "g22-urgent"},
      {kH49, 3, "h49-normal"},
  };
  for (const auto& [recipient, priority, id] : writes) {
    WriteBatch batch;
    batch.enqueue.push_back(Enqueue{recipient, priority, id, kH49, ""});
    ASSERT_OK(store_->WriteSync(std::move(batch)));
  }
  std::vector<QueueEntry> scanned = ScanAll();
  std::vector<std::string> order;
  for (const QueueEntry& e : scanned) order.push_back(e.document_id);
  EXPECT_THAT(order, ElementsAre("g22-express", "g22-urgent", "g22-normal-1",
                                 "g22-normal-2", "h49-normal", "h50-very",
                                 "h50-normal-1", "h50-normal-2", "sub-urgent"));
  for (const QueueEntry& e : scanned) {
    EXPECT_EQ(e.sender, kH49);
    EXPECT_EQ(e.document_id.substr(0, 3), e.recipient == kG22   ? "g22"
                                          : e.recipient == kH49 ? "h49"
                                          : e.recipient == kH50 ? "h50"
                                                                : "sub");
  }

  // Dequeue by (recipient, priority, sequence): gone; the rest stays.
  WriteBatch dequeue;
  for (const QueueEntry& e : scanned) {
    if (e.recipient == kG22 || e.document_id == "h50-very")
      dequeue.dequeue.push_back(e);
  }
  ASSERT_OK(store_->WriteSync(std::move(dequeue)));
  order.clear();
  for (const QueueEntry& e : ScanAll()) order.push_back(e.document_id);
  EXPECT_THAT(order, ElementsAre("h49-normal", "h50-normal-1", "h50-normal-2",
                                 "sub-urgent"));
}

TEST_P(StoreTest, ListEventsAfterSequenceWithLimit) {
  // doc-a and doc-b from H49, doc-c from H50, interleaved.
  std::vector<v1::StatusEvent> written;
  auto write = [&](const std::string& doc, const std::string& sender,
                   v1::DeliveryState state) {
    WriteBatch batch;
    batch.events.push_back(MakeEvent(doc, sender, kG22, state));
    absl::StatusOr<WriteResult> r = store_->WriteSync(std::move(batch));
    ASSERT_OK(r);
    written.push_back(r->events.at(0));
  };
  write("doc-a", kH49, v1::DELIVERY_STATE_ACCEPTED);   // 0
  write("doc-c", kH50, v1::DELIVERY_STATE_ACCEPTED);   // 1
  write("doc-b", kH49, v1::DELIVERY_STATE_ACCEPTED);   // 2
  write("doc-a", kH49, v1::DELIVERY_STATE_DELIVERED);  // 3
  write("doc-c", kH50, v1::DELIVERY_STATE_DELIVERED);  // 4
  write("doc-b", kH49, v1::DELIVERY_STATE_DELIVERED);  // 5
  write("doc-a", kH49, v1::DELIVERY_STATE_EXPIRED);    // 6
  auto seq = [&](int i) { return written[i].sequence(); };

  ASSERT_OK_AND_ASSIGN(auto doc_a, store_->ListDocumentEvents("doc-a", 0));
  EXPECT_THAT(Sequences(doc_a), ElementsAre(seq(0), seq(3), seq(6)));
  EXPECT_TRUE(MessageDifferencer::Equals(doc_a[1], written[3]));
  ASSERT_OK_AND_ASSIGN(doc_a, store_->ListDocumentEvents("doc-a", seq(0)));
  EXPECT_THAT(Sequences(doc_a), ElementsAre(seq(3), seq(6)));
  ASSERT_OK_AND_ASSIGN(doc_a, store_->ListDocumentEvents("doc-a", seq(3) - 1));
  EXPECT_THAT(Sequences(doc_a), ElementsAre(seq(3), seq(6)));
  ASSERT_OK_AND_ASSIGN(doc_a, store_->ListDocumentEvents("doc-a", seq(6)));
  EXPECT_THAT(doc_a, IsEmpty());
  EXPECT_THAT(store_->ListDocumentEvents("doc-a", UINT64_MAX),
              IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(store_->ListDocumentEvents("doc-z", 0), IsOkAndHolds(IsEmpty()));

  ASSERT_OK_AND_ASSIGN(auto h49, store_->ListSenderEvents(kH49, 0, 100));
  EXPECT_THAT(Sequences(h49),
              ElementsAre(seq(0), seq(2), seq(3), seq(5), seq(6)));
  ASSERT_OK_AND_ASSIGN(auto h50, store_->ListSenderEvents(kH50, 0, 100));
  EXPECT_THAT(Sequences(h50), ElementsAre(seq(1), seq(4)));

  // Paging with after_sequence and limit walks the same list.
  ASSERT_OK_AND_ASSIGN(auto page, store_->ListSenderEvents(kH49, 0, 2));
  EXPECT_THAT(Sequences(page), ElementsAre(seq(0), seq(2)));
  ASSERT_OK_AND_ASSIGN(page, store_->ListSenderEvents(kH49, seq(2), 2));
  EXPECT_THAT(Sequences(page), ElementsAre(seq(3), seq(5)));
  ASSERT_OK_AND_ASSIGN(page, store_->ListSenderEvents(kH49, seq(5), 2));
  EXPECT_THAT(Sequences(page), ElementsAre(seq(6)));
  ASSERT_OK_AND_ASSIGN(page, store_->ListSenderEvents(kH49, seq(6), 2));
  EXPECT_THAT(page, IsEmpty());
  ASSERT_OK_AND_ASSIGN(page, store_->ListSenderEvents(kH49, 0, 0));
  EXPECT_THAT(page, IsEmpty());
  EXPECT_THAT(store_->ListSenderEvents(kG22, 0, 100), IsOkAndHolds(IsEmpty()));
}

TEST_P(StoreTest, ConcurrentWritesAreAllPresentAfterReopen) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 100;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string id = absl::StrCat("doc-", t, "-", i);
        EXPECT_OK(store_->WriteSync(NewDocumentBatch(id, kH49, "key-" + id)));
      }
    });
  }
  for (auto& t : threads) t.join();
  if (durable()) {
    ASSERT_NO_FATAL_FAILURE(Reopen());
  }

  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      std::string id = absl::StrCat("doc-", t, "-", i);
      ASSERT_OK_AND_ASSIGN(v1::Document doc, store_->GetDocument(id));
      EXPECT_EQ(doc.body(), "body of " + id);
      EXPECT_THAT(store_->LookupIdempotencyKey(kH49, "key-" + id),
                  IsOkAndHolds(Optional(id)));
    }
  }
  EXPECT_THAT(ScanAll(), SizeIs(kThreads * kPerThread));
  ASSERT_OK_AND_ASSIGN(auto events, store_->ListSenderEvents(kH49, 0, 100'000));
  EXPECT_THAT(events, SizeIs(kThreads * kPerThread));
  EXPECT_TRUE(StrictlyIncreasing(Sequences(events)));
}

TEST_P(StoreTest, GroupCommitCompletesEveryConcurrentWrite) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 500;
  std::vector<std::thread> threads;
  std::vector<int> ok(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string id = absl::StrCat("doc-", t, "-", i);
        absl::StatusOr<WriteResult> r =
            store_->WriteSync(NewDocumentBatch(id, kH49, id));
        EXPECT_OK(r);
        if (r.ok() && !r->duplicate_of) ++ok[t];
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(ok[t], kPerThread) << "thread " << t;
  }
  std::vector<QueueEntry> queued = ScanAll();
  EXPECT_THAT(queued, SizeIs(kThreads * kPerThread));
  std::vector<uint64_t> sequences;
  for (const QueueEntry& e : queued) sequences.push_back(e.sequence);
  std::sort(sequences.begin(), sequences.end());
  EXPECT_EQ(std::unique(sequences.begin(), sequences.end()), sequences.end())
      << "two queue entries share a sequence";
}

// What Stats() reports as syncs so far.
uint64_t Syncs(Store& store) { return store.Stats().syncs; }

// A recipient's acknowledgement as the exchange writes it (its DELIVERED
// event), whose sync may wait `sync_within`.
WriteBatch DeliveredBatch(absl::Duration sync_within) {
  WriteBatch ack;
  ack.events.push_back(
      MakeEvent("doc-1", kH49, kG22, v1::DELIVERY_STATE_DELIVERED));
  ack.sync_within = sync_within;
  return ack;
}

TEST_P(StoreTest, AWriteThatMayWaitSharesTheSyncOfTheNextWrite) {
  const uint64_t before = Syncs(*store_);
  WriteBatch ack =
      DeliveredBatch(absl::Hours(1));  // only another write's sync ends it
  absl::Notification acked;
  absl::StatusOr<WriteResult> ack_result;
  store_->Write(std::move(ack), [&](absl::StatusOr<WriteResult> r) {
    ack_result = std::move(r);
    acked.Notify();
  });
  EXPECT_FALSE(acked.WaitForNotificationWithTimeout(absl::Milliseconds(100)))
      << "answered before any sync made it durable";
  EXPECT_OK(store_->WriteSync(NewDocumentBatch("doc-2", kH49, "k2")));
  ASSERT_TRUE(acked.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_OK(ack_result);
  EXPECT_EQ(Syncs(*store_), before + 1) << "the two writes took two syncs";
  EXPECT_THAT(store_->ListDocumentEvents("doc-1", 0), IsOkAndHolds(SizeIs(1)));
}

TEST_P(StoreTest, AWriteThatMayWaitIsSyncedWhenItsTimeRunsOut) {
  const uint64_t before = Syncs(*store_);
  WriteBatch ack = DeliveredBatch(absl::Milliseconds(20));
  absl::Notification acked;
  store_->Write(std::move(ack), [&](absl::StatusOr<WriteResult> r) {
    EXPECT_OK(r);
    acked.Notify();
  });
  ASSERT_TRUE(acked.WaitForNotificationWithTimeout(absl::Seconds(10)))
      << "a lone write that may wait was never synced";
  EXPECT_EQ(Syncs(*store_), before + 1);
}

TEST_P(StoreTest, ClosingSyncsAWriteThatMayWaitWithoutWaitingForIt) {
  WriteBatch ack = DeliveredBatch(absl::Hours(1));
  absl::Notification acked;
  store_->Write(std::move(ack), [&](absl::StatusOr<WriteResult> r) {
    EXPECT_OK(r);
    acked.Notify();
  });
  const absl::Time start = absl::Now();
  store_.reset();
  EXPECT_TRUE(acked.HasBeenNotified());
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  if (durable()) {
    ASSERT_NO_FATAL_FAILURE(Open());
    EXPECT_THAT(store_->ListDocumentEvents("doc-1", 0),
                IsOkAndHolds(SizeIs(1)));
  }
}

TEST_P(StoreTest, WriteAllAppliesEachOnItsOwnAndSyncsThemOnce) {
  ASSERT_OK(store_->WriteSync(NewDocumentBatch("doc-0", kH49, "taken")));
  const uint64_t before = Syncs(*store_);
  constexpr int kWrites = 10;
  std::vector<std::pair<WriteBatch, Store::WriteCallback>> writes;
  std::vector<absl::StatusOr<WriteResult>> results(kWrites);
  absl::BlockingCounter answered(kWrites);
  for (int i = 0; i < kWrites; ++i) {
    // The fourth reuses a taken key: a duplicate, the others unaffected.
    const std::string id = absl::StrCat("doc-", i + 1);
    writes.emplace_back(NewDocumentBatch(id, kH49, i == 3 ? "taken" : id),
                        [&, i](absl::StatusOr<WriteResult> r) {
                          results[i] = std::move(r);
                          answered.DecrementCount();
                        });
  }
  store_->WriteAll(std::move(writes));
  answered.Wait();
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_OK(results[i]) << "write " << i;
    EXPECT_EQ(results[i]->duplicate_of.has_value(), i == 3) << "write " << i;
  }
  EXPECT_EQ(*results[3]->duplicate_of, "doc-0");
  EXPECT_EQ(Syncs(*store_), before + 1);
  EXPECT_THAT(ScanAll(), SizeIs(kWrites));  // doc-0 and nine new ones
  std::vector<uint64_t> sequences;
  for (int i = 0; i < kWrites; ++i) {
    if (i != 3) sequences.push_back(results[i]->enqueued.at(0).sequence);
  }
  EXPECT_TRUE(StrictlyIncreasing(sequences)) << "not applied in their order";
}

INSTANTIATE_TEST_SUITE_P(Engines, StoreTest,
                         ::testing::Values(Backend::kMemory, Backend::kRocksDb),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kMemory ? "Memory"
                                                                 : "RocksDb";
                         });

INSTANTIATE_TEST_SUITE_P(Engines, DurableStoreTest,
                         ::testing::Values(Backend::kRocksDb),
                         [](const ::testing::TestParamInfo<Backend>&) {
                           return "RocksDb";
                         });

TEST(RocksDbStoreTest, SecondOpenOfTheSameDirectoryIsUnavailable) {
  TempDir dir;
  RocksDbOptions options;
  options.path = dir.path() + "/db";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> first, OpenRocksDbStore(options));
  EXPECT_THAT(OpenRocksDbStore(options),
              StatusIs(absl::StatusCode::kUnavailable));
  ASSERT_OK(first->WriteSync(NewDocumentBatch("doc-1", kH49, "k")));
}

TEST(RocksDbStoreTest, OptionsAreValidated) {
  RocksDbOptions options;
  EXPECT_THAT(
      OpenRocksDbStore(options),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("storage.path")));
  options.path = "/tmp/never-created";
  options.max_group_size = 0;
  EXPECT_THAT(options.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("max_group_size")));
  options.max_group_size = 1;
  options.max_group_bytes = 1000;
  EXPECT_THAT(options.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("max_group_bytes")));
  options.max_group_bytes = 1 << 20;
  EXPECT_OK(options.Validate());
}

TEST(PriorityOfTest, HigherUrgencyIsDeliveredFirst) {
  EXPECT_EQ(PriorityOf(v1::URGENCY_EXPRESS), 0);
  EXPECT_LT(PriorityOf(v1::URGENCY_VERY_URGENT),
            PriorityOf(v1::URGENCY_URGENT));
  EXPECT_LT(PriorityOf(v1::URGENCY_URGENT), PriorityOf(v1::URGENCY_NORMAL));
  EXPECT_EQ(PriorityOf(v1::URGENCY_UNSPECIFIED),
            PriorityOf(v1::URGENCY_NORMAL));
  EXPECT_LT(PriorityOf(v1::URGENCY_NORMAL), kPriorityLevels);
}

}  // namespace
}  // namespace lienthong::storage
