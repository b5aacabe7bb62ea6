// The crash test the product promises (DESIGN.md, "Promises"): kill -9 the
// broker in the middle of the traffic, restart it on the same port and data
// directory, and check that no acknowledged document is lost, that the
// application sees no document twice, and that the SDK retried and
// reconnected on its own.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/client.h"
#include "tests/integration/broker_process.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"

namespace lienthong::integration {
namespace {

using ::lienthong::testing_util::Eventually;

v1::Document NewDocument(const std::string& to, const std::string& subject,
                         const std::string& key) {
  v1::Document doc;
  doc.add_recipients(to);
  doc.mutable_metadata()->set_subject(subject);
  doc.set_body(absl::StrCat("Nội dung của ", subject));
  doc.set_idempotency_key(key);
  return doc;
}

// Records what the application's Receive handler saw.
class ReceivedLog {
 public:
  absl::Status Handle(const IncomingDocument& d) {
    absl::MutexLock lock(&mu_);
    ++calls_;
    if (!seen_.insert(d.document.id()).second) ++duplicates_;
    return absl::OkStatus();
  }
  bool Has(const std::string& id) const {
    absl::MutexLock lock(&mu_);
    return seen_.contains(id);
  }
  size_t distinct() const {
    absl::MutexLock lock(&mu_);
    return seen_.size();
  }
  int duplicates() const {
    absl::MutexLock lock(&mu_);
    return duplicates_;
  }
  int calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  // How many of `ids` were not seen.
  size_t Missing(const absl::flat_hash_set<std::string>& ids) const {
    absl::MutexLock lock(&mu_);
    size_t missing = 0;
    for (const std::string& id : ids) missing += !seen_.contains(id);
    return missing;
  }

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_set<std::string> seen_ ABSL_GUARDED_BY(mu_);
  int duplicates_ ABSL_GUARDED_BY(mu_) = 0;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
};

enum class SendMode { kUnaryFrom4Threads, kSendStream };

// Sends kDocuments H49 -> G22 while a G22 receiver takes them; after about a
// third of the acknowledgements kill -9 the broker, wait 0.5 s, restart it on
// the same port and data directory. The SDK retries and reconnects alone.
void KillNineDuringTraffic(SendMode mode) {
  constexpr int kDocuments = 3000;
  constexpr int kSenderThreads = 4;
  const char* const mode_name =
      mode == SendMode::kSendStream ? "SendStream" : "unary x4";
  ASSERT_OK_AND_ASSIGN(int port, PickFreePort());
  BrokerOptions options;
  options.port = port;
  BrokerProcess broker(options);
  ASSERT_OK(broker.Start());
  ASSERT_EQ(broker.port(), port);

  ClientOptions sender_options = broker.ClientOptionsFor(kH49);
  sender_options.retry_budget = absl::Seconds(60);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender,
                       Client::Open(sender_options));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> receiver,
                       Client::Open(broker.ClientOptionsFor(kG22)));

  ReceivedLog log;
  ReceiveOptions receive_options;
  receive_options.max_in_flight = 128;
  receive_options.handler_threads = 2;
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ReceiveSession> session,
      receiver->Receive(
          [&](const IncomingDocument& d) { return log.Handle(d); },
          receive_options));

  // What the senders were told; each document has its own idempotency key.
  absl::Mutex mu;
  absl::flat_hash_set<std::string> acknowledged;  // ids
  int duplicate_receipts = 0;                     // acked as duplicate=true
  int failed = 0;
  std::vector<std::string> errors;
  std::atomic<int> acked_count{0};
  std::atomic<int> threads_done{0};
  auto record = [&](int i, const absl::StatusOr<SendReceipt>& r) {
    absl::MutexLock lock(&mu);
    if (r.ok()) {
      acknowledged.insert(r->document_id);
      duplicate_receipts += r->duplicate;
      acked_count.fetch_add(1);
    } else {
      ++failed;
      if (errors.size() < 5)
        errors.push_back(absl::StrCat(i, ": ", r.status().ToString()));
    }
  };
  auto document = [](int i) {
    return NewDocument(kG22, absl::StrCat("Công văn ", i),
                       absl::StrCat("crash-", i));
  };
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  const int thread_count = mode == SendMode::kSendStream ? 1 : kSenderThreads;
  absl::Status stream_status;
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([&, t] {
      if (mode == SendMode::kSendStream) {
        absl::StatusOr<std::unique_ptr<SendStream>> stream =
            sender->OpenSendStream(256);
        if (!stream.ok()) {
          stream_status = stream.status();
        } else {
          for (int i = 0; i < kDocuments; ++i) {
            (*stream)->Submit(
                document(i),
                [&record, i](absl::StatusOr<SendReceipt> r) { record(i, r); });
          }
          stream_status = (*stream)->Close();
        }
      } else {
        for (int i = t; i < kDocuments; i += kSenderThreads)
          record(i, sender->Send(document(i)));
      }
      threads_done.fetch_add(1);
    });
  }

  // After about a third: kill -9, wait 0.5 s, restart.
  bool reached = false;
  for (absl::Time deadline = absl::Now() + absl::Seconds(60);
       absl::Now() < deadline;) {
    if (acked_count.load() >= kDocuments / 3) {
      reached = true;
      break;
    }
    absl::SleepFor(absl::Microseconds(500));
  }
  const int acked_at_kill = acked_count.load();
  broker.Kill9();
  const absl::Time killed_at = absl::Now();
  absl::SleepFor(absl::Milliseconds(500));
  absl::Status restarted = broker.Start();
  const absl::Duration restart_took = absl::Now() - killed_at;

  // Bounded waits; the threads are joined in any case (every Send and the
  // stream's Close are bounded by the retry budget).
  bool sends_returned = Eventually(
      [&] { return threads_done.load() == thread_count; }, absl::Seconds(120));
  for (std::thread& t : threads) t.join();
  const absl::Duration send_took = absl::Now() - start;
  ASSERT_TRUE(reached) << "only " << acked_count.load()
                       << " acknowledged in 60 s before the kill";
  ASSERT_OK(restarted);
  EXPECT_EQ(broker.port(), port);
  EXPECT_TRUE(sends_returned);
  EXPECT_OK(stream_status);

  absl::flat_hash_set<std::string> acked;
  {
    absl::MutexLock lock(&mu);
    acked = acknowledged;
  }
  // Every acknowledged document reaches the application.
  bool all_received =
      Eventually([&] { return log.Missing(acked) == 0; }, absl::Seconds(60));
  const absl::Duration receive_took = absl::Now() - start;
  // A late redelivery would show as a duplicate: give it a moment.
  absl::SleepFor(absl::Seconds(1));
  session->Stop();
  EXPECT_OK(session->Wait());

  const size_t lost = log.Missing(acked);
  std::printf(
      "[crash test %s] documents=%d acknowledged=%zu (distinct ids) "
      "failed_sends=%d "
      "acked_before_kill=%d acked_as_duplicate=%d | received_distinct=%zu "
      "handler_calls=%d "
      "app_duplicates=%d lost=%zu | restart=%s all_acked_after=%s "
      "all_received_after=%s\n",
      mode_name, kDocuments, acked.size(), failed, acked_at_kill,
      duplicate_receipts, log.distinct(), log.calls(), log.duplicates(), lost,
      absl::FormatDuration(restart_took).c_str(),
      absl::FormatDuration(send_took).c_str(),
      absl::FormatDuration(receive_took).c_str());
  for (const std::string& e : errors)
    std::printf("[crash test] send error %s\n", e.c_str());

  EXPECT_LT(acked_at_kill, kDocuments)
      << "the kill came after all sends: it tested nothing";
  EXPECT_EQ(failed, 0) << "Send failed within the retry budget";
  EXPECT_EQ(acked.size(), static_cast<size_t>(kDocuments));
  EXPECT_TRUE(all_received);
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(log.duplicates(), 0);
  // Nothing left behind, nothing extra (every distinct id was acknowledged).
  EXPECT_EQ(log.distinct(), acked.size());
  absl::StatusOr<v1::ListInboxResponse> inbox = receiver->ListInbox(10);
  ASSERT_OK(inbox);
  EXPECT_EQ(inbox->total(), 0u);
  // Connected clients would hold up the graceful stop for its whole grace.
  session.reset();
  receiver.reset();
  sender.reset();
  EXPECT_OK(broker.Stop());
}

TEST(CrashTest, KillNineWhileSendingFrom4ThreadsLosesAndDuplicatesNothing) {
  KillNineDuringTraffic(SendMode::kUnaryFrom4Threads);
}

TEST(CrashTest, KillNineWhileStreamingLosesAndDuplicatesNothing) {
  KillNineDuringTraffic(SendMode::kSendStream);
}

TEST(CrashTest, DeliveriesUnacknowledgedAtTheCrashAreDeliveredAgain) {
  constexpr int kDocuments = 50;
  BrokerProcess broker;
  ASSERT_OK(broker.Start());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender,
                       Client::Open(broker.ClientOptionsFor(kH49)));
  std::vector<std::string> sent;
  for (int i = 0; i < kDocuments; ++i) {
    ASSERT_OK_AND_ASSIGN(SendReceipt r, sender->Send(NewDocument(
                                            kG22, absl::StrCat("Tờ trình ", i),
                                            absl::StrCat("redeliver-", i))));
    sent.push_back(r.document_id);
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> observer,
                       Client::Open(broker.ClientOptionsFor(kG22)));

  // A receiver that takes everything and acknowledges nothing: its handler
  // is stuck on the first document until the broker is gone.
  int leased_at_kill = 0;
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> stuck,
                         Client::Open(broker.ClientOptionsFor(kG22)));
    absl::Notification in_handler;
    absl::Notification release;
    ReceiveOptions options;
    options.max_in_flight = 64;
    ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ReceiveSession> session,
        stuck->Receive(
            [&](const IncomingDocument&) {
              if (!in_handler.HasBeenNotified()) in_handler.Notify();
              release.WaitForNotificationWithTimeout(absl::Seconds(30));
              return absl::UnavailableError("the application is not ready");
            },
            options));
    ASSERT_TRUE(in_handler.WaitForNotificationWithTimeout(absl::Seconds(15)));
    // Mid-stream: the broker has handed all of them out, none acknowledged.
    absl::StatusOr<v1::ListInboxResponse> inbox;
    auto leased = [&] {
      int n = 0;
      for (const v1::InboxEntry& e : inbox->entries()) n += e.leased();
      return n;
    };
    EXPECT_TRUE(Eventually(
        [&] {
          inbox = observer->ListInbox(100);
          return inbox.ok() && leased() == kDocuments;
        },
        absl::Seconds(15)))
        << (inbox.ok() ? inbox->DebugString() : inbox.status().ToString());

    leased_at_kill = inbox.ok() ? leased() : -1;
    broker.Kill9();
    release.Notify();
    session->Stop();
  }
  absl::SleepFor(absl::Milliseconds(500));
  ASSERT_OK(broker.Start());

  // All still waiting, none leased: the leases died with the process.
  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse after, observer->ListInbox(100));
  EXPECT_EQ(after.total(), static_cast<uint64_t>(kDocuments));
  std::vector<std::string> waiting;
  for (const v1::InboxEntry& e : after.entries()) {
    waiting.push_back(e.document_id());
    EXPECT_FALSE(e.leased()) << e.document_id();
  }
  EXPECT_THAT(waiting, ::testing::UnorderedElementsAreArray(sent));

  // A new receiver gets every one of them, once.
  ReceivedLog log;
  std::vector<uint32_t> attempts;
  absl::Mutex mu;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> receiver,
                       Client::Open(broker.ClientOptionsFor(kG22)));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       receiver->Receive([&](const IncomingDocument& d) {
                         absl::MutexLock lock(&mu);
                         attempts.push_back(d.attempt);
                         return log.Handle(d);
                       }));
  absl::flat_hash_set<std::string> expected(sent.begin(), sent.end());
  EXPECT_TRUE(
      Eventually([&] { return log.Missing(expected) == 0; }, absl::Seconds(30)))
      << log.Missing(expected) << " not delivered again";
  absl::SleepFor(absl::Milliseconds(500));
  session->Stop();
  EXPECT_EQ(log.duplicates(), 0);
  EXPECT_EQ(log.distinct(), static_cast<size_t>(kDocuments));
  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse drained, observer->ListInbox(100));
  EXPECT_EQ(drained.total(), 0u);
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status,
                       sender->GetDocumentStatus(sent.back()));
  ASSERT_EQ(status.recipients_size(), 1);
  EXPECT_EQ(status.recipients(0).delivery_state(),
            v1::DELIVERY_STATE_DELIVERED);
  uint32_t max_attempt = 0;
  {
    absl::MutexLock lock(&mu);
    for (uint32_t a : attempts) max_attempt = std::max(max_attempt, a);
  }
  std::printf(
      "[crash test] redelivery: sent=%d leased_at_kill=%d "
      "waiting_after_restart=%llu "
      "redelivered=%zu app_duplicates=%d max_attempt_after_restart=%u\n",
      kDocuments, leased_at_kill,
      static_cast<unsigned long long>(after.total()), log.distinct(),
      log.duplicates(), max_attempt);
  session.reset();
  receiver.reset();
  observer.reset();
  sender.reset();
  EXPECT_OK(broker.Stop());
}

}  // namespace
}  // namespace lienthong::integration
