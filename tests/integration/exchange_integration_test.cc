// The exchange end to end: a real lienthongd process, over mutual TLS on
// loopback, driven through the SDK (and raw gRPC stubs where the SDK would
// refuse to go: missing or bad client certificates, health, reflection).
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "lienthong/client.h"
#include "lienthong/v1/exchange.grpc.pb.h"
#include "reflection.grpc.pb.h"
#include "tests/integration/broker_process.h"
#include "tests/integration/watch_recorder.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"

namespace lienthong::integration {
namespace {

using ::lienthong::testing_util::Collector;
using ::lienthong::testing_util::Eventually;
using ::lienthong::testing_util::StatusIs;
using ::testing::AnyOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

constexpr absl::Duration kWait = absl::Seconds(15);

v1::Document NewDocument(
    const std::vector<std::string>& to, const std::string& subject,
    const std::string& body = "Kính gửi các cơ quan, đơn vị ...") {
  v1::Document doc;
  for (const std::string& r : to) doc.add_recipients(r);
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_subject(subject);
  m->set_number("12");
  m->set_notation("UBND-VP");
  m->set_document_type("Công văn");
  m->set_issue_date("2026-11-23");
  doc.set_body(body);
  doc.set_body_content_type("text/plain; charset=utf-8");
  return doc;
}

// The recipient state in a DocumentStatus, or nullptr.
const v1::RecipientStatus* FindRecipient(const v1::DocumentStatus& status,
                                         const std::string& recipient) {
  for (const v1::RecipientStatus& r : status.recipients()) {
    if (r.recipient() == recipient) return &r;
  }
  return nullptr;
}

class ExchangeIntegrationTest : public ::testing::Test {
 protected:
  explicit ExchangeIntegrationTest(BrokerOptions options = {})
      : broker_(std::move(options)) {}

  void SetUp() override { ASSERT_OK(broker_.Start()); }
  // Every test also checks that the broker stops cleanly on SIGTERM.
  void TearDown() override { EXPECT_OK(broker_.Stop()); }

  absl::StatusOr<std::unique_ptr<Client>> Open(const std::string& org) {
    return Client::Open(broker_.ClientOptionsFor(org));
  }

  // What waits for `org`, as the broker says; -1 when it cannot be asked.
  int64_t InboxTotal(const std::string& org) {
    absl::StatusOr<std::unique_ptr<Client>> client = Open(org);
    if (!client.ok()) return -1;
    absl::StatusOr<v1::ListInboxResponse> inbox = (*client)->ListInbox(100);
    if (!inbox.ok()) {
      ADD_FAILURE() << "ListInbox as " << org << ": " << inbox.status();
      return -1;
    }
    return static_cast<int64_t>(inbox->total());
  }

  std::string Pki(const std::string& rel) {
    absl::StatusOr<std::string> dir = DevPkiDir();
    EXPECT_OK(dir);
    absl::StatusOr<std::string> text = ReadFile(dir.value_or("") + "/" + rel);
    EXPECT_OK(text);
    return text.value_or("");
  }

  // A channel that bypasses the SDK: trusts `root_pem`, presents
  // `cert_pem`/`key_pem` when given.
  std::shared_ptr<grpc::Channel> OrgChannel(const std::string& org) {
    return RawChannel(broker_.endpoint(), absl::StrCat("orgs/", org));
  }

  // Sends a valid document H49 -> G22 on `channel`, deadline 5 s.
  grpc::Status RawSend(const std::shared_ptr<grpc::Channel>& channel) {
    auto stub = v1::ExchangeService::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
    v1::SendRequest request;
    *request.mutable_document() = NewDocument({kG22}, "raw send");
    request.mutable_document()->set_sender(kH49);
    request.mutable_document()->set_idempotency_key("raw-1");
    if (absl::Status s = SignAs(kH49, request.mutable_document()); !s.ok())
      return grpc::Status(grpc::StatusCode::INTERNAL, std::string(s.message()));
    v1::SendResponse response;
    return stub->Send(&context, request, &response);
  }

  BrokerProcess broker_;
};

TEST_F(ExchangeIntegrationTest,
       DeliveredAndBusinessStatusesReachTheSenderInOrder) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Open(kH49));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient, Open(kG22));
  EXPECT_EQ(sender->org(), kH49);
  EXPECT_EQ(recipient->org(), kG22);
  // Watching everything H49 sends, from before the send.
  WatchRecorder watch(sender.get(), "");

  ASSERT_OK_AND_ASSIGN(
      SendReceipt receipt,
      sender->Send(NewDocument({kG22}, "Báo cáo tình hình", "nội dung")));
  ASSERT_FALSE(receipt.document_id.empty());
  EXPECT_FALSE(receipt.duplicate);
  EXPECT_FALSE(receipt.idempotency_key.empty());
  const std::string id = receipt.document_id;

  Collector<IncomingDocument> received;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       recipient->Receive([&](const IncomingDocument& d) {
                         received.Add(d);
                         return absl::OkStatus();
                       }));
  ASSERT_TRUE(received.WaitForCount(1, kWait));
  const IncomingDocument got = received.items()[0];
  EXPECT_EQ(got.document.id(), id);
  EXPECT_EQ(got.document.sender(), kH49);
  EXPECT_EQ(got.document.body(), "nội dung");
  EXPECT_EQ(got.document.metadata().subject(), "Báo cáo tình hình");
  EXPECT_EQ(got.document.content_sha256(), receipt.content_sha256);
  EXPECT_EQ(got.attempt, 1u);

  // Acknowledged: DELIVERED, by GetDocumentStatus and by the watch.
  absl::StatusOr<v1::DocumentStatus> status;
  EXPECT_TRUE(Eventually(
      [&] {
        status = sender->GetDocumentStatus(id);
        if (!status.ok()) return false;
        const v1::RecipientStatus* r = FindRecipient(*status, kG22);
        return r != nullptr &&
               r->delivery_state() == v1::DELIVERY_STATE_DELIVERED;
      },
      kWait))
      << (status.ok() ? status->DebugString() : status.status().ToString());
  EXPECT_TRUE(
      watch.WaitFor(IsDelivery(id, kG22, v1::DELIVERY_STATE_DELIVERED)));
  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse inbox, recipient->ListInbox(10));
  EXPECT_EQ(inbox.total(), 0u);

  // The recipient reports 01 then 06.
  ASSERT_OK_AND_ASSIGN(
      v1::StatusEvent arrived,
      recipient->ReportStatus(id, v1::BUSINESS_STATUS_ARRIVED));
  EXPECT_EQ(arrived.business_status(), v1::BUSINESS_STATUS_ARRIVED);
  ASSERT_OK_AND_ASSIGN(
      v1::StatusEvent completed,
      recipient->ReportStatus(id, v1::BUSINESS_STATUS_COMPLETED));
  EXPECT_GT(completed.sequence(), arrived.sequence());
  ASSERT_TRUE(
      watch.WaitFor(IsBusiness(id, kG22, v1::BUSINESS_STATUS_COMPLETED)));

  // The watch saw the whole life, in order, with increasing sequences.
  std::vector<std::string> life;
  uint64_t last = 0;
  for (const v1::StatusEvent& e : watch.events.items()) {
    if (e.document_id() != id) continue;
    EXPECT_GT(e.sequence(), last) << e.DebugString();
    last = e.sequence();
    EXPECT_EQ(e.recipient(), kG22);
    EXPECT_EQ(e.sender(), kH49);
    life.push_back(e.business_status() != v1::BUSINESS_STATUS_UNSPECIFIED
                       ? v1::BusinessStatus_Name(e.business_status())
                       : v1::DeliveryState_Name(e.delivery_state()));
  }
  EXPECT_THAT(
      life,
      ElementsAre("DELIVERY_STATE_ACCEPTED", "DELIVERY_STATE_DELIVERED",
                  "BUSINESS_STATUS_ARRIVED", "BUSINESS_STATUS_COMPLETED"));

  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus final_status,
                       sender->GetDocumentStatus(id));
  ASSERT_THAT(final_status.recipients(), SizeIs(1));
  EXPECT_EQ(final_status.recipients(0).delivery_state(),
            v1::DELIVERY_STATE_DELIVERED);
  EXPECT_EQ(final_status.recipients(0).business_status(),
            v1::BUSINESS_STATUS_COMPLETED);
  EXPECT_EQ(final_status.sender(), kH49);
  // The recipient may ask too.
  EXPECT_OK(recipient->GetDocumentStatus(id));
  session->Stop();
  EXPECT_OK(session->Wait());
  EXPECT_OK(watch.status());
}

TEST_F(ExchangeIntegrationTest,
       EachRecipientGetsItsOwnCopyOnceAndItsOwnStatus) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Open(kH49));
  const std::vector<std::string> recipients = {kG22, kH50, kUnitH49};
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt,
                       sender->Send(NewDocument(recipients, "Giấy mời họp")));
  const std::string id = receipt.document_id;

  std::vector<std::unique_ptr<Client>> clients;
  std::vector<Collector<std::string>> got(recipients.size());
  std::vector<std::unique_ptr<ReceiveSession>> sessions;
  for (size_t i = 0; i < recipients.size(); ++i) {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> c, Open(recipients[i]));
    Collector<std::string> ids = got[i];
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> s,
                         c->Receive([ids](const IncomingDocument& d) {
                           ids.Add(d.document.id());
                           return absl::OkStatus();
                         }));
    clients.push_back(std::move(c));
    sessions.push_back(std::move(s));
  }
  for (size_t i = 0; i < recipients.size(); ++i) {
    EXPECT_TRUE(got[i].WaitForCount(1, kWait)) << recipients[i];
  }
  for (size_t i = 0; i < recipients.size(); ++i) {
    EXPECT_EQ(got[i].CountAfter(absl::Milliseconds(300)), 1u) << recipients[i];
    EXPECT_THAT(got[i].items(), ElementsAre(id)) << recipients[i];
  }
  // A fourth organization got nothing.
  EXPECT_EQ(InboxTotal(kH49), 0);

  // All three acknowledged: three DELIVERED recipients.
  absl::StatusOr<v1::DocumentStatus> status;
  EXPECT_TRUE(Eventually(
      [&] {
        status = sender->GetDocumentStatus(id);
        if (!status.ok() || status->recipients_size() != 3) return false;
        for (const v1::RecipientStatus& r : status->recipients()) {
          if (r.delivery_state() != v1::DELIVERY_STATE_DELIVERED) return false;
        }
        return true;
      },
      kWait))
      << (status.ok() ? status->DebugString() : status.status().ToString());

  // Each reports its own status; each shows on its own row only.
  ASSERT_OK(clients[0]->ReportStatus(id, v1::BUSINESS_STATUS_ARRIVED));
  ASSERT_OK(clients[1]->ReportStatus(id, v1::BUSINESS_STATUS_REJECTED,
                                     "Không đúng thẩm quyền"));
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus after, sender->GetDocumentStatus(id));
  std::vector<std::pair<std::string, v1::BusinessStatus>> rows;
  for (const v1::RecipientStatus& r : after.recipients()) {
    rows.emplace_back(r.recipient(), r.business_status());
  }
  EXPECT_THAT(rows, UnorderedElementsAre(
                        std::pair<std::string, v1::BusinessStatus>(
                            kG22, v1::BUSINESS_STATUS_ARRIVED),
                        std::pair<std::string, v1::BusinessStatus>(
                            kH50, v1::BUSINESS_STATUS_REJECTED),
                        std::pair<std::string, v1::BusinessStatus>(
                            kUnitH49, v1::BUSINESS_STATUS_UNSPECIFIED)));
  bool saw_reason = false;
  for (const v1::StatusEvent& e : after.history()) {
    if (e.business_status() == v1::BUSINESS_STATUS_REJECTED) {
      EXPECT_EQ(e.recipient(), kH50);
      EXPECT_EQ(e.reason(), "Không đúng thẩm quyền");
      saw_reason = true;
    }
  }
  EXPECT_TRUE(saw_reason) << after.DebugString();
  for (auto& s : sessions) s->Stop();
}

TEST_F(ExchangeIntegrationTest,
       ResendWithTheSameKeyGivesTheSameIdAndOneDelivery) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Open(kH49));
  v1::Document doc = NewDocument({kG22}, "Quyết định số 12");
  doc.set_idempotency_key("qd-12-2026");
  ASSERT_OK_AND_ASSIGN(SendReceipt first, sender->Send(doc));
  ASSERT_OK_AND_ASSIGN(SendReceipt again, sender->Send(doc));
  EXPECT_FALSE(first.duplicate);
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.document_id, first.document_id);
  EXPECT_EQ(again.idempotency_key, "qd-12-2026");
  EXPECT_EQ(again.content_sha256, first.content_sha256);
  EXPECT_EQ(again.accepted_at, first.accepted_at);

  // The broker holds one copy (not merely an SDK hiding the second).
  EXPECT_EQ(InboxTotal(kG22), 1);

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient, Open(kG22));
  Collector<std::string> got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       recipient->Receive([&](const IncomingDocument& d) {
                         got.Add(d.document.id());
                         return absl::OkStatus();
                       }));
  ASSERT_TRUE(got.WaitForCount(1, kWait));
  EXPECT_EQ(got.CountAfter(absl::Milliseconds(500)), 1u);
  EXPECT_THAT(got.items(), ElementsAre(first.document_id));
  session->Stop();

  // Another key is another document; the same key with other content is
  // refused.
  doc.set_idempotency_key("qd-13-2026");
  ASSERT_OK_AND_ASSIGN(SendReceipt other, sender->Send(doc));
  EXPECT_NE(other.document_id, first.document_id);
  doc.set_idempotency_key("qd-12-2026");
  doc.set_body("khác");
  EXPECT_THAT(sender->Send(doc), StatusIs(absl::StatusCode::kAlreadyExists,
                                          HasSubstr("idempotency_key")));
}

// With callbacks slower than the broker, Submit waits once max_outstanding
// documents are submitted and not yet called back, so answered documents do
// not pile up in the SDK without bound.
TEST_F(ExchangeIntegrationTest, SlowCallbacksHoldBackSubmit) {
  constexpr size_t kMaxOutstanding = 4;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Open(kH49));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SendStream> stream,
                       sender->OpenSendStream(kMaxOutstanding));
  absl::Mutex mu;
  size_t submitted = 0, called_back = 0, most_ahead = 0;
  for (int i = 0; i < 24; ++i) {
    {
      absl::MutexLock lock(&mu);
      ++submitted;
      most_ahead = std::max(most_ahead, submitted - called_back);
    }
    stream->Submit(NewDocument({kG22}, absl::StrCat("Chậm ", i)),
                   [&](absl::StatusOr<SendReceipt> r) {
                     EXPECT_OK(r.status());
                     absl::SleepFor(absl::Milliseconds(40));
                     absl::MutexLock lock(&mu);
                     ++called_back;
                   });
  }
  ASSERT_OK(stream->Close());
  absl::MutexLock lock(&mu);
  EXPECT_EQ(called_back, 24u);
  // The one being submitted, on top of those it waited for.
  EXPECT_LE(most_ahead, kMaxOutstanding + 1);
}

// A handler that fails (the application's database is down, say) gets the
// document again after a delay that grows, not at once in a tight loop; once
// it succeeds, the document is acknowledged and not handed over again.
TEST_F(ExchangeIntegrationTest, AFailingHandlerGetsTheDocumentBackAfterADelay) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Open(kH49));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient, Open(kG22));
  ASSERT_OK(
      sender->Send(NewDocument({kG22}, "Cơ sở dữ liệu tạm ngừng")).status());
  Collector<absl::Time> attempts;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       recipient->Receive([&](const IncomingDocument& d) {
                         attempts.Add(absl::Now());
                         if (attempts.size() < 3)
                           return absl::UnavailableError("database down");
                         return absl::OkStatus();
                       }));
  ASSERT_TRUE(attempts.WaitForCount(3, absl::Seconds(20)));
  EXPECT_EQ(attempts.CountAfter(absl::Milliseconds(1500)), 3u);
  std::vector<absl::Time> at = attempts.items();
  EXPECT_GE(at[1] - at[0], absl::Milliseconds(900));
  EXPECT_GE(at[2] - at[1], absl::Milliseconds(1900));
  session->Stop();
  EXPECT_EQ(InboxTotal(kG22), 0);
}

TEST_F(ExchangeIntegrationTest,
       StreamOf2000IsAcknowledgedAndDeliveredOnceInSendOrder) {
  constexpr int kCount = 2000;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Open(kH49));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient, Open(kG22));

  absl::Mutex mu;
  std::vector<std::string> ids(kCount);
  std::vector<absl::Status> errors(kCount);
  int answered = 0;
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SendStream> stream,
                         sender->OpenSendStream(1024));
    for (int i = 0; i < kCount; ++i) {
      v1::Document doc = NewDocument({kG22}, absl::StrCat("Văn bản số ", i),
                                     absl::StrCat("body ", i));
      stream->Submit(std::move(doc), [&, i](absl::StatusOr<SendReceipt> r) {
        absl::MutexLock lock(&mu);
        ++answered;
        if (r.ok()) {
          ids[i] = r->document_id;
        } else {
          errors[i] = r.status();
        }
      });
    }
    ASSERT_OK(stream->Close());
  }
  {
    absl::MutexLock lock(&mu);
    ASSERT_EQ(answered, kCount);
    int failed = 0;
    for (int i = 0; i < kCount; ++i) {
      if (!errors[i].ok() && failed++ < 5)
        ADD_FAILURE() << "item " << i << ": " << errors[i];
    }
    EXPECT_EQ(failed, 0);
  }
  absl::flat_hash_set<std::string> distinct(ids.begin(), ids.end());
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kCount));
  EXPECT_FALSE(distinct.contains(""));

  Collector<IncomingDocument> got;
  ReceiveOptions options;
  options.max_in_flight = 256;
  options.handler_threads = 1;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       recipient->Receive(
                           [&](const IncomingDocument& d) {
                             got.Add(d);
                             return absl::OkStatus();
                           },
                           options));
  ASSERT_TRUE(got.WaitForCount(kCount, absl::Seconds(60)))
      << "got " << got.size();
  EXPECT_EQ(got.CountAfter(absl::Milliseconds(500)),
            static_cast<size_t>(kCount));
  session->Stop();

  std::vector<std::string> order;
  for (const IncomingDocument& d : got.items())
    order.push_back(d.document.id());
  // Once each, and in the order sent (one sender, one urgency).
  EXPECT_EQ(absl::flat_hash_set<std::string>(order.begin(), order.end()).size(),
            static_cast<size_t>(kCount));
  int first_mismatch = -1;
  for (int i = 0; i < kCount && i < static_cast<int>(order.size()); ++i) {
    if (order[i] != ids[i]) {
      first_mismatch = i;
      break;
    }
  }
  EXPECT_EQ(first_mismatch, -1)
      << "delivery order differs from send order at position "
      << first_mismatch;
  // Body i belongs to id i.
  for (const IncomingDocument& d : got.items()) {
    auto it = std::find(ids.begin(), ids.end(), d.document.id());
    ASSERT_NE(it, ids.end());
    EXPECT_EQ(d.document.body(), absl::StrCat("body ", it - ids.begin()));
  }
}

// ---- Bad input: a precise status, and nothing changed
// ------------------------

TEST_F(ExchangeIntegrationTest, UnknownRecipientIsNotFound) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Open(kH49));
  EXPECT_THAT(
      sender->Send(NewDocument({kG22, "000.00.00.H99"}, "x")),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("recipients[1]")));
  EXPECT_EQ(InboxTotal(kG22), 0);
}

TEST_F(ExchangeIntegrationTest,
       MalformedRecipientIsInvalidArgumentNamingTheField) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Open(kH49));
  EXPECT_THAT(
      sender->Send(NewDocument({"H49-khong-hop-le", kG22}, "x")),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("recipients[0]")));
  EXPECT_EQ(InboxTotal(kG22), 0);
}

TEST_F(ExchangeIntegrationTest, EmptyDocumentIsInvalidArgumentNamingTheBody) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Open(kH49));
  EXPECT_THAT(sender->Send(NewDocument({kG22}, "x", "")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("body")));
  EXPECT_EQ(InboxTotal(kG22), 0);
}

TEST_F(ExchangeIntegrationTest, SpoofedSenderIsPermissionDenied) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Open(kH49));
  v1::Document doc = NewDocument({kG22}, "x");
  doc.set_sender(kH50);
  EXPECT_THAT(sender->Send(doc), StatusIs(absl::StatusCode::kPermissionDenied,
                                          HasSubstr("sender")));
  EXPECT_EQ(InboxTotal(kG22), 0);
}

TEST_F(ExchangeIntegrationTest, NoClientCertificateIsRefusedAtTheHandshake) {
  grpc::Status s = RawSend(RawChannel(broker_.endpoint(), ""));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_EQ(InboxTotal(kG22), 0);
}

TEST_F(ExchangeIntegrationTest, CertificateFromAForeignCaIsRefused) {
  grpc::Status s = RawSend(RawChannel(broker_.endpoint(), "bad/foreign-org"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_EQ(InboxTotal(kG22), 0);
}

TEST_F(ExchangeIntegrationTest, ExpiredCertificateIsRefused) {
  grpc::Status s = RawSend(RawChannel(broker_.endpoint(), "bad/expired-org"));
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.error_code(), AnyOf(grpc::StatusCode::UNAVAILABLE,
                                    grpc::StatusCode::UNAUTHENTICATED))
      << s.error_message();
  EXPECT_EQ(InboxTotal(kG22), 0);
}

TEST_F(ExchangeIntegrationTest, CertificateWithoutSanIsUnauthenticated) {
  grpc::Status s = RawSend(RawChannel(broker_.endpoint(), "bad/nosan-org"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("URI SAN"));
  EXPECT_EQ(InboxTotal(kG22), 0);
}

TEST_F(ExchangeIntegrationTest, CertificateWithTwoUriSansIsUnauthenticated) {
  grpc::Status s = RawSend(RawChannel(broker_.endpoint(), "bad/twosan-org"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("exactly one"));
  EXPECT_EQ(InboxTotal(kG22), 0);
}

TEST_F(ExchangeIntegrationTest, RawChannelWithAGoodCertificateWorks) {
  // The control for the cases above: the same raw path succeeds with a
  // proper certificate, so their failures are about the certificates.
  grpc::Status s = RawSend(OrgChannel(kH49));
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  EXPECT_EQ(InboxTotal(kG22), 1);
}

TEST_F(ExchangeIntegrationTest,
       StoppingTheBrokerEndsOpenStreamsWithUnavailable) {
  // Agencies keep Receive and WatchStatus streams open all day; a stopping
  // broker must end them at once with a status clients retry on, not leave
  // them to be cancelled when the shutdown grace runs out.
  std::shared_ptr<grpc::Channel> channel = OrgChannel(kH49);
  std::unique_ptr<v1::ExchangeService::Stub> stub =
      v1::ExchangeService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  std::unique_ptr<grpc::ClientReader<v1::StatusEvent>> watch =
      stub->WatchStatus(&context, v1::WatchStatusRequest());
  // The stream is established once the broker has seen it: wait for a
  // document's ACCEPTED event to arrive on it.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Open(kH49));
  ASSERT_OK(sender->Send(NewDocument({kG22}, "trước khi dừng")));
  v1::StatusEvent event;
  ASSERT_TRUE(watch->Read(&event));
  EXPECT_EQ(event.delivery_state(), v1::DELIVERY_STATE_ACCEPTED);
  sender.reset();

  grpc::Status status;
  std::thread reader([&] {
    v1::StatusEvent more;
    while (watch->Read(&more)) {
    }
    status = watch->Finish();
    // An idle synchronous channel never reads the broker's GOAWAY; close it
    // as an application would, so the broker's stop need not wait for it.
    watch.reset();
    stub.reset();
    channel.reset();
  });
  ASSERT_OK(broker_.Stop());
  reader.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("shutting down"));
  EXPECT_THAT(broker_.stderr_text(), HasSubstr("stopped"));
}

// A send that fails without knowing whether the broker stored the document
// tells the application the key it went with (made by the SDK here), so the
// application's resend is stored once, not a second copy.
TEST_F(ExchangeIntegrationTest, AFailedSendNamesItsIdempotencyKeyForTheResend) {
  ClientOptions options = broker_.ClientOptionsFor(kH49);
  options.retry_budget = absl::Seconds(2);
  options.call_timeout = absl::Seconds(2);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Client::Open(options));
  ASSERT_OK(broker_.Stop());
  v1::Document doc = NewDocument({kG22}, "Gửi lại");
  absl::StatusOr<SendReceipt> failed = sender->Send(doc);
  ASSERT_FALSE(failed.ok());
  std::optional<std::string> key = IdempotencyKeyOf(failed.status());
  ASSERT_TRUE(key.has_value()) << failed.status();
  EXPECT_FALSE(key->empty());
  EXPECT_THAT(failed.status().message(),
              HasSubstr(absl::StrCat("idempotency_key \"", *key, "\"")));

  ASSERT_OK(broker_.Start());  // on a new port: a new client
  ASSERT_OK_AND_ASSIGN(sender, Open(kH49));
  doc.set_idempotency_key(*key);
  ASSERT_OK_AND_ASSIGN(SendReceipt first, sender->Send(doc));
  ASSERT_OK_AND_ASSIGN(SendReceipt again, sender->Send(doc));
  EXPECT_EQ(again.document_id, first.document_id);
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(InboxTotal(kG22), 1);
}

class OversizeTest : public ExchangeIntegrationTest {
 protected:
  OversizeTest() : ExchangeIntegrationTest(Options()) {}
  static BrokerOptions Options() {
    BrokerOptions options;
    options.config_yaml = "limits:\n  max_document_bytes: 65536\n";
    return options;
  }
};

TEST_F(OversizeTest, DocumentOverTheLimitIsResourceExhausted) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Open(kH49));
  EXPECT_THAT(
      sender->Send(NewDocument({kG22}, "lớn", std::string(100 << 10, 'x'))),
      StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("65536")));
  EXPECT_EQ(InboxTotal(kG22), 0);
  // Under the limit passes: the limit, not something else, refused it.
  EXPECT_OK(
      sender->Send(NewDocument({kG22}, "nhỏ", std::string(60 << 10, 'x'))));
  EXPECT_EQ(InboxTotal(kG22), 1);
}

// ---- Health and reflection
// ---------------------------------------------------

TEST_F(ExchangeIntegrationTest, HealthCheckIsServing) {
  auto stub = grpc::health::v1::Health::NewStub(OrgChannel(kH49));
  for (const std::string service : {"", "lienthong.v1.ExchangeService"}) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status s = stub->Check(&context, request, &response);
    ASSERT_TRUE(s.ok()) << "\"" << service << "\": " << s.error_message();
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING)
        << service;
  }
}

TEST_F(ExchangeIntegrationTest,
       ReflectionListsTheServicesAndServesTheirDescriptors) {
  namespace refl = ::grpc::reflection::v1alpha;
  auto stub = refl::ServerReflection::NewStub(OrgChannel(kH49));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(5));
  auto stream = stub->ServerReflectionInfo(&context);

  refl::ServerReflectionRequest list;
  list.set_list_services("*");
  ASSERT_TRUE(stream->Write(list));
  refl::ServerReflectionResponse listed;
  ASSERT_TRUE(stream->Read(&listed));
  ASSERT_TRUE(listed.has_list_services_response()) << listed.DebugString();
  std::vector<std::string> names;
  for (const refl::ServiceResponse& s :
       listed.list_services_response().service()) {
    names.push_back(s.name());
  }
  EXPECT_THAT(names, Contains("lienthong.v1.ExchangeService"));
  EXPECT_THAT(names, Contains("grpc.health.v1.Health"));

  refl::ServerReflectionRequest symbol;
  symbol.set_file_containing_symbol("lienthong.v1.ExchangeService");
  ASSERT_TRUE(stream->Write(symbol));
  refl::ServerReflectionResponse files;
  ASSERT_TRUE(stream->Read(&files));
  ASSERT_TRUE(files.has_file_descriptor_response()) << files.DebugString();
  ASSERT_THAT(files.file_descriptor_response().file_descriptor_proto(),
              Not(IsEmpty()));
  std::set<std::string> file_names;
  bool has_service = false;
  for (const std::string& bytes :
       files.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    file_names.insert(file.name());
    for (const auto& service : file.service()) {
      if (file.package() == "lienthong.v1" &&
          service.name() == "ExchangeService") {
        has_service = true;
        std::vector<std::string> methods;
        for (const auto& m : service.method()) methods.push_back(m.name());
        EXPECT_THAT(methods, Contains("Send"));
        EXPECT_THAT(methods, Contains("Receive"));
        EXPECT_THAT(methods, Contains("WatchStatus"));
      }
    }
  }
  EXPECT_TRUE(has_service);
  EXPECT_TRUE(file_names.count("lienthong/v1/exchange.proto"))
      << files.DebugString();

  refl::ServerReflectionRequest unknown;
  unknown.set_file_containing_symbol("lienthong.v1.NoSuchService");
  ASSERT_TRUE(stream->Write(unknown));
  refl::ServerReflectionResponse missing;
  ASSERT_TRUE(stream->Read(&missing));
  EXPECT_TRUE(missing.has_error_response()) << missing.DebugString();
  EXPECT_EQ(missing.error_response().error_code(),
            static_cast<int>(grpc::StatusCode::NOT_FOUND));

  ASSERT_TRUE(stream->WritesDone());
  grpc::Status s = stream->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// ---- The harness itself
// --------------------------------------------------------

TEST(BrokerProcessTest, AFailedStartSaysWhyWithTheBrokersStderr) {
  BrokerOptions options;
  options.config_yaml = "limits:\n  max_documents: 5\n";
  BrokerProcess broker(options);
  absl::Status s = broker.Start();
  EXPECT_THAT(
      s, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("max_documents")));
  EXPECT_FALSE(broker.running());
}

TEST(BrokerProcessTest, RestartKeepsThePortAndTheData) {
  BrokerProcess broker;
  ASSERT_OK(broker.Start());
  const int port = broker.port();
  ASSERT_GT(port, 0);
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender,
                         Client::Open(broker.ClientOptionsFor(kH49)));
    ASSERT_OK(sender->Send(NewDocument({kG22}, "trước khi khởi động lại")));
  }
  ASSERT_OK(broker.Stop());
  EXPECT_FALSE(broker.running());
  ASSERT_OK(broker.Start());
  EXPECT_EQ(broker.port(), port);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient,
                       Client::Open(broker.ClientOptionsFor(kG22)));
  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse inbox, recipient->ListInbox(10));
  EXPECT_EQ(inbox.total(), 1u);
  EXPECT_THAT(broker.stderr_text(),
              HasSubstr("1 deliveries waiting from before"));
  recipient.reset();  // a connected client holds up a graceful stop for ~5 s
  EXPECT_OK(broker.Stop());
}

}  // namespace
}  // namespace lienthong::integration
