// The exchange as agency systems rely on it, run over the in-memory store and
// over RocksDB in a temporary directory.
#include "lienthong/broker/exchange.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "lienthong/common/clock.h"
#include "lienthong/common/identity.h"
#include "lienthong/common/ids.h"
#include "lienthong/storage/store.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::broker {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::google::protobuf::util::TimeUtil;
using ::lienthong::testing_util::AsyncResult;
using ::lienthong::testing_util::Collector;
using ::lienthong::testing_util::Eventually;
using ::lienthong::testing_util::IsOkAndHolds;
using ::lienthong::testing_util::kAsyncTimeout;
using ::lienthong::testing_util::StatusIs;
using ::lienthong::testing_util::TempDir;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::Property;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

constexpr char kBrokerId[] = "spiffe://lienthong.local/broker/central";
constexpr char kG22[] = "000.00.00.G22";
constexpr char kH49[] = "000.00.00.H49";
constexpr char kH50[] = "000.00.00.H50";
constexpr char kSub[] = "000.01.23.H49";  // a unit under H49, served here too
// A well-formed code this broker does not serve.
constexpr char kT99[] = "000.00.00.T99";

// The policy the exchange tests run under: the four served orgs exchange
// freely, AI personnel decisions are forbidden, and documents of type "Thư"
// to H50 are limited to 1 KiB.
constexpr char kTestPolicy[] = R"(
groups:
  served: {orgs: [000.00.00.G22, 000.00.00.H49, 000.00.00.H50, 000.01.23.H49]}
rules:
  - name: served-orgs-exchange
    effect: permit
    sender: {groups: [served]}
    recipient: {groups: [served]}
    obligations: {retention: 10y}
  - name: letters-to-h50-are-small
    effect: permit
    recipient: {orgs: [000.00.00.H50]}
    document_types: [Thư]
    obligations: {max_size: 1KiB}
  - name: no-ai-personnel-decisions
    effect: forbid
    origins: [ai]
    decision_categories: [personnel]
  - name: proposals-need-the-director
    effect: permit
    sender: {groups: [served]}
    recipient: {groups: [served]}
    document_types: [Tờ trình]
    obligations: {approval: {role: giam-doc}}
)";

Principal MustParse(const std::string& uri) {
  absl::StatusOr<Principal> p = ParseSpiffeId(uri);
  EXPECT_OK(p) << uri;
  return p.value_or(Principal{});
}

Principal Org(const std::string& code) {
  return MustParse(absl::StrCat("spiffe://lienthong.local/org/", code));
}

// A valid document from `sender` to `recipients`.
v1::Document NewDocument(
    const std::string& sender, std::vector<std::string> recipients,
    const std::string& subject = "Quyết định về việc giao chỉ tiêu") {
  v1::Document doc;
  doc.set_sender(sender);
  for (auto& r : recipients) doc.add_recipients(std::move(r));
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_subject(subject);
  m->set_number("123");
  m->set_notation("QĐ-UBND");
  m->set_issue_date("2027-01-15");
  m->set_urgency(v1::URGENCY_NORMAL);
  doc.set_body("Nội dung văn bản");
  doc.set_body_content_type("text/plain; charset=utf-8");
  return doc;
}

// Replaces the content by a sealed envelope of the right shape (the broker
// cannot check its cryptography) for every recipient.
void Seal(v1::Document& d) {
  d.clear_body();
  d.clear_body_content_type();
  d.mutable_metadata()->set_classification(v1::CLASSIFICATION_SECRET);
  v1::Sealed* s = d.mutable_sealed();
  s->set_scheme("lienthong-e2e-v1/ECDH-P256/HKDF-SHA256/AES-256-GCM");
  s->set_nonce(std::string(12, 'n'));
  s->set_ciphertext(std::string(40, 'c'));
  for (const std::string& r : d.recipients()) {
    v1::WrappedKey* k = s->add_keys();
    k->set_org(r);
    k->set_certificate_sha256(std::string(32, 'h'));
    k->set_ephemeral_public_key(std::string(65, 'e'));
    k->set_nonce(std::string(12, 'n'));
    k->set_wrapped_key(std::string(48, 'w'));
  }
}

v1::Document WithUrgency(v1::Document doc, v1::Urgency urgency) {
  doc.mutable_metadata()->set_urgency(urgency);
  return doc;
}

std::vector<std::string> Ids(const std::vector<v1::Delivery>& deliveries) {
  std::vector<std::string> ids;
  for (const v1::Delivery& d : deliveries) ids.push_back(d.document().id());
  return ids;
}

std::vector<uint64_t> Sequences(const std::vector<v1::StatusEvent>& events) {
  std::vector<uint64_t> out;
  for (const v1::StatusEvent& e : events) out.push_back(e.sequence());
  return out;
}

int64_t Nanos(const google::protobuf::Timestamp& t) {
  return TimeUtil::TimestampToNanoseconds(t);
}

// One Receive stream: a session and what reached its sink.
class Receiver {
 public:
  absl::Status Open(Exchange& exchange, const Principal& caller,
                    uint32_t max_in_flight) {
    Collector<v1::Delivery> got = got_;
    absl::StatusOr<std::shared_ptr<ReceiveSession>> session =
        exchange.OpenReceive(
            caller, max_in_flight, [got](v1::ReceiveResponse response) {
              for (v1::Delivery& d : *response.mutable_deliveries()) {
                got.Add(std::move(d));
              }
            });
    if (!session.ok()) return session.status();
    session_ = *std::move(session);
    return absl::OkStatus();
  }

  bool WaitForCount(size_t n, absl::Duration timeout = kAsyncTimeout) const {
    return got_.WaitForCount(n, timeout);
  }
  size_t CountAfterQuiet() const { return got_.CountAfter(); }
  std::vector<v1::Delivery> deliveries() const { return got_.items(); }
  v1::Delivery delivery(size_t i) const { return got_.items().at(i); }

  void Ack(std::vector<std::string> ids) { session_->Ack(std::move(ids), {}); }
  void Nack(std::vector<std::string> ids) { session_->Ack({}, std::move(ids)); }
  void Close() { session_->Close(); }
  // Drops the session without closing it, as a crash would; needed once its
  // exchange is gone.
  void Abandon() { session_.reset(); }

 private:
  Collector<v1::Delivery> got_;
  std::shared_ptr<ReceiveSession> session_;
};

// One WatchStatus stream: the session and the events that reached its sink.
struct Watcher {
  std::shared_ptr<WatchSession> session;
  Collector<v1::StatusEvent> events;
  Collector<absl::Status> errors;
};

enum class Backend { kMemory, kRocksDb };

void PrintTo(Backend backend, std::ostream* os) {
  *os << (backend == Backend::kMemory ? "memory store" : "RocksDB store");
}

class ExchangeTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    options_.broker_id = kBrokerId;
    options_.local_orgs = {kG22, kH49, kH50, kSub};
    // Small, so that a 32 KiB body is too big.
    options_.max_document_bytes = 16 << 10;
    h49_ = Org(kH49);
    h50_ = Org(kH50);
    g22_ = Org(kG22);
    sub_ = Org(kSub);
    policy::ServedPolicyOptions policy_options;
    policy_options.embedded_source = kTestPolicy;
    ASSERT_OK_AND_ASSIGN(policy_, policy::ServedPolicy::Open(policy_options));
    options_.policy = policy_.get();
    // Stands in for certificate verification: "ENC:<org>" is org's
    // certificate, anything else does not verify.
    options_.verify_encryption_certificate = [](absl::string_view c)
        -> absl::StatusOr<sealing::EncryptionCertificate> {
      if (!absl::StartsWith(c, "ENC:")) {
        return absl::InvalidArgumentError("encryption certificate: not one");
      }
      sealing::EncryptionCertificate cert;
      cert.org = std::string(c.substr(4));
      cert.der = std::string(c);
      cert.sha256 = std::string(32, 'x');
      cert.not_after = absl::FromUnixSeconds(2000000000);
      return cert;
    };
    ASSERT_NO_FATAL_FAILURE(OpenStore());
    ASSERT_NO_FATAL_FAILURE(OpenExchange());
  }

  bool durable() const { return GetParam() == Backend::kRocksDb; }

  void OpenStore() {
    if (!durable()) {
      store_ = storage::NewMemoryStore();
      return;
    }
    ASSERT_FALSE(dir_.path().empty());
    storage::RocksDbOptions options;
    options.path = dir_.path() + "/db";
    ASSERT_OK_AND_ASSIGN(store_, storage::OpenRocksDbStore(options));
  }

  void OpenExchange() {
    ASSERT_OK_AND_ASSIGN(exchange_,
                         Exchange::Open(options_, store_.get(), &clock_));
  }

  // Stops the broker and starts it again on the same data: RocksDB is closed
  // and reopened; the memory store, which cannot be, is kept and only the
  // exchange (with its delivery index) is rebuilt.
  void Restart() {
    exchange_.reset();
    if (durable()) {
      store_.reset();
      ASSERT_NO_FATAL_FAILURE(OpenStore());
    }
    ASSERT_NO_FATAL_FAILURE(OpenExchange());
  }

  // ---- Blocking forms of the asynchronous calls -----------------------------

  absl::StatusOr<v1::SendResponse> Send(const Principal& caller,
                                        v1::Document doc) {
    AsyncResult<v1::SendResponse> result;
    exchange_->Send(caller, std::move(doc), result.Callback());
    return result.Wait();
  }

  // Sends and returns the new id, or "" after failing the test.
  std::string MustSend(const Principal& caller, v1::Document doc) {
    absl::StatusOr<v1::SendResponse> sent = Send(caller, std::move(doc));
    EXPECT_OK(sent);
    return sent.ok() ? sent->document_id() : "";
  }

  absl::StatusOr<v1::FetchResponse> Fetch(const Principal& caller,
                                          uint32_t wait_ms,
                                          uint32_t lease_seconds = 0) {
    v1::FetchRequest request;
    request.set_wait_ms(wait_ms);
    request.set_lease_seconds(lease_seconds);
    AsyncResult<v1::FetchResponse> result;
    exchange_->Fetch(caller, request, result.Callback());
    return result.Wait();
  }

  absl::StatusOr<v1::AckResponse> Ack(const Principal& caller,
                                      std::vector<std::string> ids) {
    v1::AckRequest request;
    for (auto& id : ids) request.add_document_ids(std::move(id));
    AsyncResult<v1::AckResponse> result;
    exchange_->Ack(caller, request, result.Callback());
    return result.Wait();
  }

  absl::StatusOr<v1::ListInboxResponse> ListInbox(const Principal& caller) {
    AsyncResult<v1::ListInboxResponse> result;
    exchange_->ListInbox(caller, v1::ListInboxRequest(), result.Callback());
    return result.Wait();
  }

  // The inbox size, or -1 after failing the test.
  int64_t InboxTotal(const Principal& caller) {
    absl::StatusOr<v1::ListInboxResponse> inbox = ListInbox(caller);
    EXPECT_OK(inbox);
    return inbox.ok() ? static_cast<int64_t>(inbox->total()) : -1;
  }

  absl::StatusOr<v1::ReportStatusResponse> ReportStatus(
      const Principal& caller, const std::string& id, v1::BusinessStatus status,
      const std::string& reason = "") {
    v1::ReportStatusRequest request;
    request.set_document_id(id);
    request.set_status(status);
    request.set_reason(reason);
    AsyncResult<v1::ReportStatusResponse> result;
    exchange_->ReportStatus(caller, request, result.Callback());
    return result.Wait();
  }

  absl::StatusOr<v1::DocumentStatus> GetStatus(const Principal& caller,
                                               const std::string& id) {
    v1::GetDocumentStatusRequest request;
    request.set_document_id(id);
    AsyncResult<v1::DocumentStatus> result;
    exchange_->GetDocumentStatus(caller, request, result.Callback());
    return result.Wait();
  }

  // The delivery state of `recipient`'s copy as the sender sees it.
  v1::DeliveryState DeliveryStateOf(const std::string& id,
                                    const std::string& recipient) {
    absl::StatusOr<v1::DocumentStatus> status = GetStatus(h49_, id);
    if (!status.ok()) return v1::DELIVERY_STATE_UNSPECIFIED;
    for (const v1::RecipientStatus& r : status->recipients()) {
      if (r.recipient() == recipient) return r.delivery_state();
    }
    return v1::DELIVERY_STATE_UNSPECIFIED;
  }

  // Session acks complete without a callback: wait until the DELIVERED
  // event is durable.
  bool EventuallyDelivered(const std::string& id,
                           const std::string& recipient) {
    return Eventually([&] {
      return DeliveryStateOf(id, recipient) == v1::DELIVERY_STATE_DELIVERED;
    });
  }

  absl::Status Watch(const Principal& caller, const std::string& document_id,
                     uint64_t after_sequence, Watcher& watcher) {
    v1::WatchStatusRequest request;
    request.set_document_id(document_id);
    request.set_after_sequence(after_sequence);
    AsyncResult<std::shared_ptr<WatchSession>> result;
    Collector<v1::StatusEvent> events = watcher.events;
    Collector<absl::Status> errors = watcher.errors;
    exchange_->Watch(
        caller, request,
        [events, errors](absl::StatusOr<v1::StatusEvent> e) {
          if (e.ok()) {
            events.Add(*std::move(e));
          } else {
            errors.Add(e.status());
          }
          return true;
        },
        result.Callback());
    absl::StatusOr<std::shared_ptr<WatchSession>> session = result.Wait();
    if (!session.ok()) return session.status();
    watcher.session = *std::move(session);
    return absl::OkStatus();
  }

  FakeClock clock_;
  TempDir dir_;
  ExchangeOptions options_;
  Principal h49_, h50_, g22_, sub_;
  std::unique_ptr<policy::ServedPolicy> policy_;
  // Declared last, so destroyed first: the exchange before the store, the
  // store before its directory.
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<Exchange> exchange_;
};

// ---- Send and Receive -------------------------------------------------------

TEST_P(ExchangeTest, SentDocumentIsDeliveredOnceWithBrokerAssignedFields) {
  v1::Document doc = NewDocument(kH49, {kG22});
  doc.set_idempotency_key("qd-123-2027");
  v1::Attachment* a = doc.add_attachments();
  a->set_name("phu-luc.pdf");
  a->set_content_type("application/pdf");
  a->set_content("%PDF-1.7 phụ lục");
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent, Send(h49_, doc));

  EXPECT_TRUE(IsDocumentId(sent.document_id())) << sent.document_id();
  EXPECT_FALSE(sent.duplicate());
  EXPECT_EQ(Nanos(sent.accepted_at()), absl::ToUnixNanos(clock_.Now()));
  EXPECT_THAT(sent.content_sha256(), MatchesRegex("[0-9a-f]{64}"));

  Receiver g22;
  ASSERT_OK(g22.Open(*exchange_, g22_, 10));
  ASSERT_TRUE(g22.WaitForCount(1));
  v1::Delivery got = g22.delivery(0);
  EXPECT_EQ(got.attempt(), 1u);
  const v1::Document& d = got.document();
  EXPECT_EQ(d.id(), sent.document_id());
  EXPECT_EQ(Nanos(d.accepted_at()), Nanos(sent.accepted_at()));
  EXPECT_EQ(d.content_sha256(), sent.content_sha256());
  ASSERT_THAT(d.trace(), SizeIs(1));
  EXPECT_EQ(d.trace(0).broker(), kBrokerId);
  EXPECT_EQ(Nanos(d.trace(0).at()), Nanos(sent.accepted_at()));
  EXPECT_EQ(d.sender(), kH49);
  EXPECT_THAT(d.recipients(), ElementsAre(kG22));
  EXPECT_EQ(d.idempotency_key(), "qd-123-2027");
  EXPECT_EQ(d.metadata().subject(), doc.metadata().subject());
  EXPECT_EQ(d.metadata().notation(), "QĐ-UBND");
  EXPECT_EQ(d.body(), doc.body());
  ASSERT_THAT(d.attachments(), SizeIs(1));
  EXPECT_EQ(d.attachments(0).content(), a->content());
  EXPECT_EQ(d.attachments(0).size(), a->content().size());
  EXPECT_THAT(d.attachments(0).sha256(), MatchesRegex("[0-9a-f]{64}"));

  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse inbox, ListInbox(g22_));
  ASSERT_EQ(inbox.total(), 1u);
  EXPECT_EQ(inbox.entries(0).document_id(), sent.document_id());
  EXPECT_TRUE(inbox.entries(0).leased());

  clock_.Advance(absl::Minutes(5));
  g22.Ack({sent.document_id()});
  ASSERT_TRUE(EventuallyDelivered(sent.document_id(), kG22));

  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status,
                       GetStatus(h49_, sent.document_id()));
  EXPECT_EQ(status.sender(), kH49);
  ASSERT_THAT(status.recipients(), SizeIs(1));
  EXPECT_EQ(status.recipients(0).recipient(), kG22);
  EXPECT_EQ(status.recipients(0).delivery_state(),
            v1::DELIVERY_STATE_DELIVERED);
  EXPECT_EQ(Nanos(status.recipients(0).updated_at()),
            absl::ToUnixNanos(clock_.Now()));
  ASSERT_THAT(status.history(), SizeIs(2));
  EXPECT_EQ(status.history(0).delivery_state(), v1::DELIVERY_STATE_ACCEPTED);
  EXPECT_EQ(status.history(0).actor(), h49_.spiffe_id);
  EXPECT_EQ(status.history(1).delivery_state(), v1::DELIVERY_STATE_DELIVERED);
  EXPECT_EQ(status.history(1).recipient(), kG22);
  EXPECT_EQ(status.history(1).actor(), g22_.spiffe_id);
  EXPECT_LT(status.history(0).sequence(), status.history(1).sequence());

  // Exactly once: nothing more on this stream, nor for a new one.
  EXPECT_EQ(g22.CountAfterQuiet(), 1u);
  g22.Close();
  Receiver again;
  ASSERT_OK(again.Open(*exchange_, g22_, 10));
  EXPECT_EQ(again.CountAfterQuiet(), 0u);
  EXPECT_EQ(InboxTotal(g22_), 0);
  again.Close();
}

TEST_P(ExchangeTest, EachRecipientGetsItsOwnCopyAndStatus) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22, kH50, kSub}));
  ASSERT_FALSE(id.empty());

  Receiver g22, h50, sub;
  ASSERT_OK(g22.Open(*exchange_, g22_, 10));
  ASSERT_OK(h50.Open(*exchange_, h50_, 10));
  ASSERT_OK(sub.Open(*exchange_, sub_, 10));
  for (Receiver* r : {&g22, &h50, &sub}) {
    ASSERT_TRUE(r->WaitForCount(1));
    EXPECT_EQ(r->delivery(0).document().id(), id);
  }
  g22.Ack({id});
  sub.Ack({id});
  ASSERT_TRUE(EventuallyDelivered(id, kG22));
  ASSERT_TRUE(EventuallyDelivered(id, kSub));

  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, GetStatus(h49_, id));
  ASSERT_THAT(status.recipients(), SizeIs(3));
  EXPECT_EQ(status.recipients(0).recipient(), kG22);
  EXPECT_EQ(status.recipients(0).delivery_state(),
            v1::DELIVERY_STATE_DELIVERED);
  EXPECT_EQ(status.recipients(1).recipient(), kH50);
  EXPECT_EQ(status.recipients(1).delivery_state(), v1::DELIVERY_STATE_ACCEPTED);
  EXPECT_EQ(status.recipients(2).recipient(), kSub);
  EXPECT_EQ(status.recipients(2).delivery_state(),
            v1::DELIVERY_STATE_DELIVERED);
  EXPECT_THAT(status.history(), SizeIs(5));  // three ACCEPTED, two DELIVERED

  // A recipient sees its own copy's status only.
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus mine, GetStatus(h50_, id));
  ASSERT_THAT(mine.recipients(), SizeIs(1));
  EXPECT_EQ(mine.recipients(0).recipient(), kH50);
  for (const v1::StatusEvent& e : mine.history()) {
    EXPECT_EQ(e.recipient(), kH50);
  }
  // Others see nothing of it.
  EXPECT_THAT(GetStatus(Org(kT99), id), StatusIs(absl::StatusCode::kNotFound));

  // The status is read from storage as soon as the acknowledgement is
  // written; the in-memory queue follows once the write is synced.
  EXPECT_TRUE(Eventually([&] { return InboxTotal(g22_) == 0; }));
  EXPECT_TRUE(Eventually([&] { return InboxTotal(sub_) == 0; }));
  EXPECT_EQ(InboxTotal(h50_), 1);
  for (Receiver* r : {&g22, &h50, &sub}) r->Close();
}

TEST_P(ExchangeTest, ResendWithTheSameKeyReturnsTheSameDocument) {
  v1::Document doc = NewDocument(kH49, {kG22});
  doc.set_idempotency_key("cv-2027-001");
  ASSERT_OK_AND_ASSIGN(v1::SendResponse first, Send(h49_, doc));
  clock_.Advance(absl::Minutes(1));
  ASSERT_OK_AND_ASSIGN(v1::SendResponse again, Send(h49_, doc));

  EXPECT_EQ(again.document_id(), first.document_id());
  EXPECT_TRUE(again.duplicate());
  EXPECT_FALSE(first.duplicate());
  EXPECT_EQ(Nanos(again.accepted_at()), Nanos(first.accepted_at()));
  EXPECT_EQ(again.content_sha256(), first.content_sha256());

  // The same key with another body is a client bug, not a resend.
  v1::Document changed = doc;
  changed.set_body("Nội dung khác");
  EXPECT_THAT(Send(h49_, changed), StatusIs(absl::StatusCode::kAlreadyExists,
                                            HasSubstr("cv-2027-001")));

  Receiver g22;
  ASSERT_OK(g22.Open(*exchange_, g22_, 10));
  ASSERT_TRUE(g22.WaitForCount(1));
  EXPECT_EQ(g22.CountAfterQuiet(), 1u);
  EXPECT_EQ(g22.delivery(0).document().id(), first.document_id());
  EXPECT_EQ(InboxTotal(g22_), 1);
  EXPECT_EQ(exchange_->Stats().accepted, 1u);
  g22.Close();
}

TEST_P(ExchangeTest, ConcurrentResendsOfOneDocumentStoreItOnce) {
  constexpr int kSenders = 8;
  v1::Document doc = NewDocument(kH49, {kG22});
  doc.set_idempotency_key("retry-storm");
  std::vector<AsyncResult<v1::SendResponse>> results(kSenders);
  for (auto& r : results) exchange_->Send(h49_, doc, r.Callback());

  std::string id;
  int originals = 0;
  for (auto& r : results) {
    ASSERT_OK_AND_ASSIGN(v1::SendResponse sent, r.Wait());
    if (id.empty()) id = sent.document_id();
    EXPECT_EQ(sent.document_id(), id);
    if (!sent.duplicate()) ++originals;
  }
  EXPECT_EQ(originals, 1);
  Receiver g22;
  ASSERT_OK(g22.Open(*exchange_, g22_, 10));
  ASSERT_TRUE(g22.WaitForCount(1));
  EXPECT_EQ(g22.CountAfterQuiet(), 1u);
  EXPECT_EQ(InboxTotal(g22_), 1);
  g22.Close();
}

// ---- Bad input --------------------------------------------------------------

struct BadSend {
  std::string what;
  Principal caller;
  std::function<void(v1::Document&)> spoil;
  absl::StatusCode code;
  std::string message;  // a part of the message, naming the field
};

TEST_P(ExchangeTest, BadInputGetsThePreciseCodeAndChangesNothing) {
  using absl::StatusCode;
  const std::string wrong_hash(64, '0');
  const std::vector<BadSend> cases = {
      {"spoofed sender", h49_, [](v1::Document& d) { d.set_sender(kH50); },
       StatusCode::kPermissionDenied, "document.sender"},
      {"malformed sender", h49_,
       [](v1::Document& d) { d.set_sender("000.00.00.h49"); },
       StatusCode::kInvalidArgument, "document.sender"},
      {"empty sender", h49_, [](v1::Document& d) { d.clear_sender(); },
       StatusCode::kInvalidArgument, "document.sender"},
      {"malformed recipient", h49_,
       [](v1::Document& d) { d.set_recipients(1, "000.0.00.H50"); },
       StatusCode::kInvalidArgument, "document.recipients[1]"},
      {"unknown recipient", h49_,
       [](v1::Document& d) { d.set_recipients(1, kT99); },
       StatusCode::kNotFound, "document.recipients[1]"},
      {"no recipients", h49_, [](v1::Document& d) { d.clear_recipients(); },
       StatusCode::kInvalidArgument, "document.recipients"},
      {"duplicate recipient", h49_,
       [](v1::Document& d) { d.add_recipients(kG22); },
       StatusCode::kInvalidArgument, "document.recipients[2]"},
      {"empty body and no attachments", h49_,
       [](v1::Document& d) { d.clear_body(); }, StatusCode::kInvalidArgument,
       "document.body"},
      {"missing subject", h49_,
       [](v1::Document& d) { d.mutable_metadata()->clear_subject(); },
       StatusCode::kInvalidArgument, "document.metadata.subject"},
      {"missing metadata", h49_, [](v1::Document& d) { d.clear_metadata(); },
       StatusCode::kInvalidArgument, "document.metadata"},
      {"oversize", h49_,
       [](v1::Document& d) { d.set_body(std::string(32 << 10, 'x')); },
       StatusCode::kResourceExhausted, "exceed the limit of 16384 bytes"},
      {"id set by the client", h49_,
       [](v1::Document& d) {
         d.set_id(NewDocumentId(absl::ToUnixMillis(absl::Now())));
       },
       StatusCode::kInvalidArgument, "document.id"},
      {"trace set by the client", h49_,
       [](v1::Document& d) { d.add_trace()->set_broker(kBrokerId); },
       StatusCode::kInvalidArgument, "document.trace"},
      {"idempotency key too long", h49_,
       [](v1::Document& d) { d.set_idempotency_key(std::string(129, 'k')); },
       StatusCode::kInvalidArgument, "document.idempotency_key"},
      {"top secret", h49_,
       [](v1::Document& d) {
         d.mutable_metadata()->set_classification(
             v1::CLASSIFICATION_TOP_SECRET);
       },
       StatusCode::kFailedPrecondition, "document.metadata.classification"},
      {"confidential in plaintext", h49_,
       [](v1::Document& d) {
         d.mutable_metadata()->set_classification(
             v1::CLASSIFICATION_CONFIDENTIAL);
       },
       StatusCode::kFailedPrecondition, "document.sealed"},
      {"sealed with a plaintext body too", h49_,
       [](v1::Document& d) {
         Seal(d);
         d.set_body("leak");
       },
       StatusCode::kInvalidArgument, "document.body"},
      {"sealed with a plaintext attachment too", h49_,
       [](v1::Document& d) {
         Seal(d);
         v1::Attachment* a = d.add_attachments();
         a->set_name("a.txt");
         a->set_content("leak");
       },
       StatusCode::kInvalidArgument, "document.attachments"},
      {"sealed without a key for a recipient", h49_,
       [](v1::Document& d) {
         Seal(d);
         d.add_recipients(kSub);
       },
       StatusCode::kInvalidArgument, "document.sealed.keys"},
      {"sealed with a key for a non-recipient", h49_,
       [](v1::Document& d) {
         Seal(d);
         d.mutable_sealed()->mutable_keys(0)->set_org(kT99);
       },
       StatusCode::kInvalidArgument, "document.sealed.keys[0].org"},
      {"sealed without ciphertext", h49_,
       [](v1::Document& d) {
         Seal(d);
         d.mutable_sealed()->clear_ciphertext();
       },
       StatusCode::kInvalidArgument, "document.sealed.ciphertext"},
      {"sealed with an empty wrapped key", h49_,
       [](v1::Document& d) {
         Seal(d);
         d.mutable_sealed()->mutable_keys(0)->clear_wrapped_key();
       },
       StatusCode::kInvalidArgument, "document.sealed.keys[0].wrapped_key"},
      {"RECALL without refers_to", h49_,
       [](v1::Document& d) {
         d.mutable_metadata()->set_business_type(v1::BUSINESS_TYPE_RECALL);
       },
       StatusCode::kInvalidArgument, "document.metadata.refers_to"},
      {"NEW with refers_to", h49_,
       [](v1::Document& d) {
         d.mutable_metadata()->set_refers_to(
             NewDocumentId(absl::ToUnixMillis(absl::Now())));
       },
       StatusCode::kInvalidArgument, "document.metadata.refers_to"},
      {"attachment hash does not match", h49_,
       [&](v1::Document& d) {
         v1::Attachment* a = d.add_attachments();
         a->set_name("phu-luc.pdf");
         a->set_content("%PDF-1.7");
         a->set_sha256(wrong_hash);
       },
       StatusCode::kDataLoss, "document.attachments[0].sha256"},
      {"caller is a person",
       MustParse("spiffe://lienthong.local/person/nguyen-van-a"),
       [](v1::Document&) {}, StatusCode::kPermissionDenied,
       "not an organization"},
      {"caller is a broker", MustParse(kBrokerId), [](v1::Document&) {},
       StatusCode::kPermissionDenied, "not an organization"},
      {"sender not served by this broker", Org(kT99),
       [](v1::Document& d) { d.set_sender(kT99); },
       StatusCode::kPermissionDenied, "not served by this broker"},
  };
  for (const BadSend& c : cases) {
    SCOPED_TRACE(c.what);
    v1::Document doc = NewDocument(kH49, {kG22, kH50});
    c.spoil(doc);
    EXPECT_THAT(Send(c.caller, doc), StatusIs(c.code, HasSubstr(c.message)));
    EXPECT_EQ(InboxTotal(g22_), 0);
    EXPECT_EQ(InboxTotal(h50_), 0);
  }
  EXPECT_EQ(exchange_->Stats().accepted, 0u);
  EXPECT_EQ(exchange_->Stats().queued, 0u);
  for (const char* org : {kH49, kH50, kT99}) {
    EXPECT_THAT(store_->ListSenderEvents(org, 0, 100), IsOkAndHolds(IsEmpty()))
        << org;
  }
  // The unspoilt document goes through: each case failed for its own reason.
  MustSend(h49_, NewDocument(kH49, {kG22, kH50}));
  EXPECT_EQ(InboxTotal(g22_), 1);
}

// ---- Order ------------------------------------------------------------------

// ---- Policy -----------------------------------------------------------------

TEST_P(ExchangeTest, ASealedSecretDocumentIsCarriedAsItCame) {
  v1::Document doc = NewDocument(kH49, {kG22, kH50});
  Seal(doc);
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent, Send(h49_, doc));
  Receiver g22;
  ASSERT_OK(g22.Open(*exchange_, g22_, 10));
  ASSERT_TRUE(g22.WaitForCount(1));
  const v1::Delivery got = g22.delivery(0);
  const v1::Document& d = got.document();
  EXPECT_TRUE(MessageDifferencer::Equals(d.sealed(), doc.sealed()));
  EXPECT_TRUE(d.body().empty());
  EXPECT_EQ(d.content_sha256(), sent.content_sha256());
  // The content hash covers the ciphertext: other ciphertext, other hash.
  v1::Document other = NewDocument(kH49, {kG22});
  Seal(other);
  other.mutable_sealed()->set_ciphertext(std::string(40, 'd'));
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent2, Send(h49_, other));
  EXPECT_NE(sent2.content_sha256(), sent.content_sha256());
}

TEST_P(ExchangeTest, ASealedDocumentResealedForAResendIsTheSameSend) {
  // A restarted application sends the same document with the same key; its
  // SDK seals it again, which gives other ciphertext.
  v1::Document doc = NewDocument(kH49, {kG22});
  doc.set_idempotency_key("qd-mat-1");
  Seal(doc);
  ASSERT_OK_AND_ASSIGN(v1::SendResponse first, Send(h49_, doc));
  doc.mutable_sealed()->set_ciphertext(std::string(40, 'z'));
  ASSERT_OK_AND_ASSIGN(v1::SendResponse again, Send(h49_, doc));
  EXPECT_TRUE(again.duplicate());
  EXPECT_EQ(again.document_id(), first.document_id());
  EXPECT_EQ(InboxTotal(g22_), 1);
  // Other metadata under the same key is still a different document.
  doc.mutable_metadata()->set_subject("another subject");
  EXPECT_THAT(Send(h49_, doc), StatusIs(absl::StatusCode::kAlreadyExists,
                                        HasSubstr("document.idempotency_key")));
  // So is a plaintext document under a sealed one's key.
  v1::Document plain = NewDocument(kH49, {kG22});
  plain.set_idempotency_key("qd-mat-1");
  EXPECT_THAT(Send(h49_, plain), StatusIs(absl::StatusCode::kAlreadyExists));
}

TEST_P(ExchangeTest, PublishedEncryptionCertificatesAreServedKeptAndAnnounced) {
  auto publish = [&](const Principal& caller, const std::string& cert) {
    v1::PublishEncryptionCertificateRequest request;
    request.set_certificate(cert);
    AsyncResult<v1::PublishEncryptionCertificateResponse> result;
    exchange_->PublishEncryptionCertificate(caller, request, result.Callback());
    return result.Wait();
  };
  auto get = [&](std::vector<std::string> orgs) {
    v1::GetEncryptionCertificatesRequest request;
    for (auto& o : orgs) request.add_orgs(std::move(o));
    AsyncResult<v1::GetEncryptionCertificatesResponse> result;
    exchange_->GetEncryptionCertificates(h49_, request, result.Callback());
    return result.Wait();
  };
  EXPECT_THAT(publish(h49_, "ENC:000.00.00.H50"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr(kH50)));
  EXPECT_THAT(publish(h49_, "garbage"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(publish(MustParse("spiffe://lienthong.local/person/operator"),
                      "ENC:000.00.00.H49"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  ASSERT_OK_AND_ASSIGN(v1::PublishEncryptionCertificateResponse r,
                       publish(h50_, "ENC:000.00.00.H50"));
  EXPECT_EQ(r.org(), kH50);
  EXPECT_THAT(get({"bad-code"}), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(v1::GetEncryptionCertificatesResponse got,
                       get({kH50, kH49}));
  ASSERT_EQ(got.certificates_size(), 1);  // H49 has published nothing
  EXPECT_EQ(got.certificates(0).org(), kH50);
  EXPECT_EQ(got.certificates(0).certificate(), "ENC:000.00.00.H50");

  // Kept across a restart, and announced with the org to peers.
  ASSERT_NO_FATAL_FAILURE(Restart());
  ASSERT_OK_AND_ASSIGN(got, get({kH50}));
  ASSERT_EQ(got.certificates_size(), 1);
  v1::Announce announce = exchange_->AnnounceTo("");
  bool announced = false;
  for (const v1::DirectoryEntry& e : announce.entries()) {
    if (e.org() == kH50)
      announced = e.encryption_certificate() == "ENC:000.00.00.H50";
    if (e.org() == kH49) {
      EXPECT_TRUE(e.encryption_certificate().empty());
    }
  }
  EXPECT_TRUE(announced) << announce.DebugString();
  // A republished one replaces it.
  ASSERT_OK(publish(h50_, "ENC:000.00.00.H50").status());
}

TEST_P(ExchangeTest, AcceptedEventsRecordThePolicyVersionAndPermittingRules) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22}));
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, GetStatus(h49_, id));
  ASSERT_THAT(status.history(), SizeIs(1));
  const v1::PolicyDecision& policy = status.history(0).policy();
  EXPECT_EQ(policy.policy_version(), policy_->Current()->version());
  EXPECT_THAT(policy.rules(), ElementsAre("served-orgs-exchange"));
  EXPECT_EQ(policy.obligations().retention().seconds(), 10 * 365 * 86400);
  EXPECT_EQ(policy.broker(), kBrokerId);
  // The decision log keeps it for dry runs.
  std::vector<policy::RecordedDecision> recent =
      policy_->decisions().Recent(10);
  ASSERT_THAT(recent, SizeIs(1));
  EXPECT_EQ(recent[0].flow.recipient, kG22);
  EXPECT_EQ(recent[0].effect, policy::Effect::kPermit);
}

TEST_P(ExchangeTest, ForbiddenFlowIsRefusedNamingTheRuleAndNothingIsStored) {
  v1::Document doc = NewDocument(kH49, {kG22, kH50});
  doc.mutable_metadata()->set_origin(v1::ORIGIN_AI);
  doc.mutable_metadata()->set_decision_category(
      v1::DECISION_CATEGORY_PERSONNEL);
  EXPECT_THAT(
      Send(h49_, doc),
      StatusIs(absl::StatusCode::kPermissionDenied,
               AllOf(HasSubstr("document.recipients[0]"), HasSubstr("forbids"),
                     HasSubstr("\"no-ai-personnel-decisions\""),
                     HasSubstr(policy_->Current()->version().substr(0, 19)))));
  EXPECT_EQ(InboxTotal(g22_), 0);
  EXPECT_EQ(InboxTotal(h50_), 0);
  EXPECT_EQ(exchange_->Stats().accepted, 0u);
  EXPECT_THAT(store_->ListSenderEvents(kH49, 0, 100), IsOkAndHolds(IsEmpty()));
}

TEST_P(ExchangeTest, OneUnpermittedRecipientRefusesTheWholeDocument) {
  // Served here, but not in the policy's group: deny by default.
  v1::Document doc = NewDocument(kH49, {kG22, kH50});
  ASSERT_OK(policy_
                ->Apply(R"(
rules:
  - name: only-to-the-centre
    effect: permit
    recipient: {orgs: [000.00.00.G22]}
)")
                .status());
  EXPECT_THAT(Send(h49_, doc),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr("document.recipients[1]"),
                             HasSubstr("deny by default"))));
  EXPECT_EQ(InboxTotal(g22_), 0);
  EXPECT_EQ(exchange_->Stats().accepted, 0u);
}

TEST_P(ExchangeTest, PermitsMaxSizeIsEnforced) {
  v1::Document letter = NewDocument(kH49, {kH50});
  letter.mutable_metadata()->set_document_type("Thư");
  letter.set_body(std::string(2048, 'x'));
  EXPECT_THAT(Send(h49_, letter),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("2048 bytes"),
                             HasSubstr("letters-to-h50-are-small"),
                             HasSubstr("at most 1024"))));
  EXPECT_EQ(InboxTotal(h50_), 0);
  letter.set_body(std::string(1000, 'x'));
  MustSend(h49_, letter);
  EXPECT_EQ(InboxTotal(h50_), 1);
}

TEST_P(ExchangeTest, AppliedPolicyDecidesTheNextSend) {
  std::string before = policy_->Current()->version();
  MustSend(h49_, NewDocument(kH49, {kG22}));
  ASSERT_OK(policy_
                ->Apply(R"(
rules:
  - name: centre-only-sends
    effect: permit
    sender: {orgs: [000.00.00.G22]}
)")
                .status());
  EXPECT_NE(policy_->Current()->version(), before);
  EXPECT_THAT(Send(h49_, NewDocument(kH49, {kG22})),
              StatusIs(absl::StatusCode::kPermissionDenied));
  MustSend(g22_, NewDocument(kG22, {kH49}));
  // A broken policy is refused and the serving one stays.
  std::string serving = policy_->Current()->version();
  EXPECT_THAT(policy_->Apply("rules: [{name: x, effect: maybe}]"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown effect \"maybe\"")));
  EXPECT_EQ(policy_->Current()->version(), serving);
  MustSend(g22_, NewDocument(kG22, {kH49}));
}

TEST_P(ExchangeTest, PolicyAppliedAfterAcceptanceWithholdsWaitingCopies) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22, kH50, kSub}));
  // The operator freezes flows to the centre and to H50 while the copies
  // wait.
  ASSERT_OK(policy_
                ->Apply(R"(
rules:
  - name: only-inside-h49
    effect: permit
    sender: {provinces: [H49]}
    recipient: {provinces: [H49]}
  - name: freeze-to-h50
    effect: forbid
    recipient: {orgs: [000.00.00.H50]}
)")
                .status());
  // Not even the metadata of a withheld copy is listed.
  EXPECT_EQ(InboxTotal(g22_), 0);
  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse g22_inbox, ListInbox(g22_));
  EXPECT_THAT(g22_inbox.entries(), IsEmpty());
  Receiver g22, sub;
  ASSERT_OK(g22.Open(*exchange_, g22_, 10));
  ASSERT_OK(sub.Open(*exchange_, sub_, 10));
  ASSERT_TRUE(sub.WaitForCount(1));
  EXPECT_EQ(sub.delivery(0).document().id(), id);
  // The pull path is governed too.
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse fetched, Fetch(h50_, 0));
  EXPECT_THAT(fetched.deliveries(), IsEmpty());
  EXPECT_TRUE(Eventually(
      [&] { return InboxTotal(g22_) == 0 && InboxTotal(h50_) == 0; }));
  EXPECT_FALSE(g22.WaitForCount(1, absl::Milliseconds(200)));

  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, GetStatus(h49_, id));
  ASSERT_THAT(status.recipients(), SizeIs(3));
  EXPECT_EQ(status.recipients(0).delivery_state(), v1::DELIVERY_STATE_DENIED);
  EXPECT_EQ(status.recipients(1).delivery_state(), v1::DELIVERY_STATE_DENIED);
  EXPECT_EQ(status.recipients(2).delivery_state(), v1::DELIVERY_STATE_ACCEPTED);
  std::vector<std::string> reasons;
  for (const v1::StatusEvent& e : status.history()) {
    if (e.delivery_state() != v1::DELIVERY_STATE_DENIED) continue;
    reasons.push_back(e.reason());
    EXPECT_EQ(e.policy().policy_version(), policy_->Current()->version());
    EXPECT_EQ(e.actor(), kBrokerId);
  }
  EXPECT_THAT(reasons, UnorderedElementsAre(
                           AllOf(HasSubstr("withheld at delivery"),
                                 HasSubstr("deny by default"), HasSubstr(kG22)),
                           AllOf(HasSubstr("withheld at delivery"),
                                 HasSubstr("\"freeze-to-h50\""))));
  // Withheld copies are gone for good: a restart does not bring them back.
  g22.Close();
  sub.Close();
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_EQ(InboxTotal(g22_), 0);
  EXPECT_EQ(InboxTotal(h50_), 0);
  EXPECT_EQ(InboxTotal(sub_), 1);
}

TEST_P(ExchangeTest, SizeLimitAppliedAfterAcceptanceWithholdsLargeCopies) {
  v1::Document big = NewDocument(kH49, {kG22});
  big.set_body(std::string(4096, 'x'));
  std::string big_id = MustSend(h49_, big);
  std::string small_id = MustSend(h49_, NewDocument(kH49, {kG22}));
  ASSERT_OK(policy_
                ->Apply(R"(
rules:
  - name: small-only
    effect: permit
    obligations: {max_size: 1KiB}
)")
                .status());
  Receiver g22;
  ASSERT_OK(g22.Open(*exchange_, g22_, 10));
  ASSERT_TRUE(g22.WaitForCount(1));
  EXPECT_EQ(g22.delivery(0).document().id(), small_id);
  EXPECT_FALSE(g22.WaitForCount(2, absl::Milliseconds(200)));
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, GetStatus(h49_, big_id));
  ASSERT_THAT(status.recipients(), SizeIs(1));
  EXPECT_EQ(status.recipients(0).delivery_state(), v1::DELIVERY_STATE_DENIED);
  EXPECT_THAT(status.history(),
              Contains(Property(
                  &v1::StatusEvent::reason,
                  AllOf(HasSubstr("4096 bytes"), HasSubstr("small-only")))));
  g22.Close();
}

TEST_P(ExchangeTest, OnlyACopyHandedOutCanBeAcknowledged) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22}));
  // Knowing the id (from the inbox listing, or from the sender) is not
  // receiving the document: no DELIVERED is recorded, the copy stays.
  ASSERT_OK_AND_ASSIGN(v1::AckResponse early, Ack(g22_, {id}));
  EXPECT_EQ(early.acknowledged(), 0u);
  EXPECT_EQ(InboxTotal(g22_), 1);
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, GetStatus(h49_, id));
  EXPECT_EQ(status.recipients(0).delivery_state(), v1::DELIVERY_STATE_ACCEPTED);
  // Once fetched it can be.
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse fetched, Fetch(g22_, 0));
  ASSERT_THAT(fetched.deliveries(), SizeIs(1));
  ASSERT_OK_AND_ASSIGN(v1::AckResponse acked, Ack(g22_, {id}));
  EXPECT_EQ(acked.acknowledged(), 1u);
  EXPECT_TRUE(EventuallyDelivered(id, kG22));
}

TEST_P(ExchangeTest, DocumentsOfOneUrgencyArriveInSendOrder) {
  std::vector<std::string> sent;
  for (int i = 0; i < 50; ++i) {
    sent.push_back(MustSend(
        h49_, NewDocument(kH49, {kG22}, absl::StrCat("Văn bản số ", i))));
  }
  Receiver g22;
  ASSERT_OK(g22.Open(*exchange_, g22_, 100));
  ASSERT_TRUE(g22.WaitForCount(50));
  EXPECT_THAT(Ids(g22.deliveries()), ElementsAreArray(sent));
  g22.Close();
}

TEST_P(ExchangeTest, PipelinedSendsThroughOneSequenceKeepTheirOrder) {
  // What a SendStream does: many sends in flight at once, none waiting for
  // the previous answer; validation runs on several threads, yet the queue
  // order is the order of the calls.
  constexpr int kCount = 300;
  std::unique_ptr<Exchange::SendSequence> sequence =
      exchange_->NewSendSequence();
  std::vector<std::string> subjects;
  absl::Mutex mu;
  int answered = 0;
  int failed = 0;
  for (int i = 0; i < kCount; ++i) {
    subjects.push_back(absl::StrCat("Văn bản số ", i));
    sequence->Send(h49_, NewDocument(kH49, {kG22}, subjects.back()),
                   [&](absl::StatusOr<v1::SendResponse> r) {
                     absl::MutexLock lock(&mu);
                     ++answered;
                     if (!r.ok()) ++failed;
                   });
  }
  ASSERT_TRUE(Eventually([&] {
    absl::MutexLock lock(&mu);
    return answered == kCount;
  }));
  EXPECT_EQ(failed, 0);
  Receiver g22;
  ASSERT_OK(g22.Open(*exchange_, g22_, kCount));
  ASSERT_TRUE(g22.WaitForCount(kCount));
  std::vector<std::string> received;
  for (const v1::Delivery& d : g22.deliveries()) {
    received.push_back(d.document().metadata().subject());
  }
  EXPECT_THAT(received, ElementsAreArray(subjects));
  g22.Close();
}

TEST_P(ExchangeTest, OrderIsKeptAcrossFlowControlledBatches) {
  Receiver g22;
  ASSERT_OK(g22.Open(*exchange_, g22_, 3));
  std::vector<std::string> sent;
  for (int i = 0; i < 12; ++i) {
    sent.push_back(MustSend(
        h49_, NewDocument(kH49, {kG22}, absl::StrCat("Văn bản số ", i))));
  }
  for (size_t i = 0; i < sent.size(); ++i) {
    ASSERT_TRUE(g22.WaitForCount(i + 1)) << i;
    g22.Ack({g22.delivery(i).document().id()});
  }
  EXPECT_THAT(Ids(g22.deliveries()), ElementsAreArray(sent));
  g22.Close();
}

TEST_P(ExchangeTest, HigherUrgencyOvertakesWaitingDocuments) {
  std::vector<std::string> normal;
  for (int i = 0; i < 3; ++i) {
    normal.push_back(
        MustSend(h49_, NewDocument(kH49, {kG22}, absl::StrCat("Thường ", i))));
  }
  std::string urgent = MustSend(
      h49_, WithUrgency(NewDocument(kH49, {kG22}, "Khẩn"), v1::URGENCY_URGENT));
  std::string express = MustSend(
      h49_,
      WithUrgency(NewDocument(kH49, {kG22}, "Hỏa tốc"), v1::URGENCY_EXPRESS));

  Receiver g22;  // connects only now
  ASSERT_OK(g22.Open(*exchange_, g22_, 10));
  ASSERT_TRUE(g22.WaitForCount(5));
  EXPECT_THAT(Ids(g22.deliveries()),
              ElementsAre(express, urgent, normal[0], normal[1], normal[2]));
  g22.Close();
}

// ---- Flow control and acknowledgement ---------------------------------------

TEST_P(ExchangeTest, SessionHoldsAtMostMaxInFlightUntilItAcks) {
  std::vector<std::string> sent;
  for (int i = 0; i < 5; ++i) {
    sent.push_back(MustSend(h49_, NewDocument(kH49, {kG22})));
  }

  Receiver g22;
  ASSERT_OK(g22.Open(*exchange_, g22_, 3));
  ASSERT_TRUE(g22.WaitForCount(3));
  EXPECT_EQ(g22.CountAfterQuiet(), 3u);
  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse inbox, ListInbox(g22_));
  EXPECT_EQ(inbox.total(), 5u);
  EXPECT_EQ(std::count_if(inbox.entries().begin(), inbox.entries().end(),
                          [](const v1::InboxEntry& e) { return e.leased(); }),
            3);
  EXPECT_EQ(exchange_->Stats().leased, 3u);

  g22.Ack({sent[0]});  // one slot frees: one more comes
  ASSERT_TRUE(g22.WaitForCount(4));
  EXPECT_EQ(g22.CountAfterQuiet(), 4u);
  EXPECT_EQ(g22.delivery(3).document().id(), sent[3]);

  g22.Nack({sent[1]});  // back to the queue, ahead of sent[4]
  ASSERT_TRUE(g22.WaitForCount(5));
  EXPECT_EQ(g22.delivery(4).document().id(), sent[1]);
  EXPECT_EQ(g22.delivery(4).attempt(), 2u);
  EXPECT_EQ(g22.CountAfterQuiet(), 5u);

  g22.Ack({sent[1], sent[2], sent[3]});
  ASSERT_TRUE(g22.WaitForCount(6));
  EXPECT_EQ(g22.delivery(5).document().id(), sent[4]);
  EXPECT_EQ(g22.delivery(5).attempt(), 1u);
  g22.Close();
}

TEST_P(ExchangeTest, ClosedSessionsUnackedDocumentsGoToTheNextSession) {
  std::vector<std::string> sent;
  for (int i = 0; i < 3; ++i) {
    sent.push_back(MustSend(h49_, NewDocument(kH49, {kG22})));
  }

  Receiver first;
  ASSERT_OK(first.Open(*exchange_, g22_, 10));
  ASSERT_TRUE(first.WaitForCount(3));
  first.Ack({sent[0]});
  ASSERT_TRUE(EventuallyDelivered(sent[0], kG22));
  first.Close();

  Receiver second;
  ASSERT_OK(second.Open(*exchange_, g22_, 10));
  ASSERT_TRUE(second.WaitForCount(2));
  EXPECT_EQ(second.CountAfterQuiet(), 2u);
  EXPECT_THAT(Ids(second.deliveries()), ElementsAre(sent[1], sent[2]));
  EXPECT_EQ(second.delivery(0).attempt(), 2u);
  EXPECT_EQ(first.CountAfterQuiet(), 3u);  // nothing after Close
  second.Close();
}

TEST_P(ExchangeTest, AfterRestartUnacknowledgedDocumentsAreDeliveredAgain) {
  v1::Document keyed = NewDocument(kH49, {kG22});
  keyed.set_idempotency_key("restart-key");
  std::vector<std::string> sent = {MustSend(h49_, keyed)};
  for (int i = 1; i < 4; ++i) {
    sent.push_back(MustSend(h49_, NewDocument(kH49, {kG22})));
  }

  Receiver before;
  ASSERT_OK(before.Open(*exchange_, g22_, 10));
  ASSERT_TRUE(before.WaitForCount(4));
  before.Ack({sent[0], sent[2]});
  ASSERT_TRUE(EventuallyDelivered(sent[0], kG22));
  ASSERT_TRUE(EventuallyDelivered(sent[2], kG22));

  before.Abandon();  // the broker stops with the stream still open
  ASSERT_NO_FATAL_FAILURE(Restart());

  Receiver after;
  ASSERT_OK(after.Open(*exchange_, g22_, 10));
  ASSERT_TRUE(after.WaitForCount(2));
  EXPECT_EQ(after.CountAfterQuiet(), 2u);
  EXPECT_THAT(Ids(after.deliveries()), ElementsAre(sent[1], sent[3]));
  EXPECT_EQ(after.delivery(0).document().body(), "Nội dung văn bản");
  EXPECT_EQ(after.delivery(0).document().trace(0).broker(), kBrokerId);
  EXPECT_EQ(InboxTotal(g22_), 2);

  // Keys and statuses survive too, and new documents queue behind the old.
  ASSERT_OK_AND_ASSIGN(v1::SendResponse resent, Send(h49_, keyed));
  EXPECT_TRUE(resent.duplicate());
  EXPECT_EQ(resent.document_id(), sent[0]);
  EXPECT_EQ(DeliveryStateOf(sent[0], kG22), v1::DELIVERY_STATE_DELIVERED);
  EXPECT_EQ(DeliveryStateOf(sent[1], kG22), v1::DELIVERY_STATE_ACCEPTED);
  after.Ack({sent[1]});
  std::string fresh = MustSend(h49_, NewDocument(kH49, {kG22}));
  ASSERT_TRUE(after.WaitForCount(3));
  EXPECT_EQ(after.delivery(2).document().id(), fresh);
  after.Close();
}

// ---- Fetch and Ack ----------------------------------------------------------

TEST_P(ExchangeTest, FetchWaitReturnsWhenADocumentArrives) {
  AsyncResult<v1::FetchResponse> fetched;
  v1::FetchRequest request;
  request.set_wait_ms(8000);
  exchange_->Fetch(g22_, request, fetched.Callback());

  std::string id;
  std::thread sender([&] {
    absl::SleepFor(absl::Milliseconds(100));
    id = MustSend(h49_, NewDocument(kH49, {kG22}));
  });
  absl::StatusOr<v1::FetchResponse> response = fetched.Wait();
  sender.join();
  ASSERT_OK(response);
  ASSERT_THAT(response->deliveries(), SizeIs(1));
  EXPECT_EQ(response->deliveries(0).document().id(), id);
  EXPECT_EQ(response->deliveries(0).attempt(), 1u);
  EXPECT_EQ(fetched.calls(), 1);
}

TEST_P(ExchangeTest, FetchReturnsEmptyWhenNothingComes) {
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse waited, Fetch(g22_, /*wait_ms=*/150));
  EXPECT_THAT(waited.deliveries(), IsEmpty());
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse at_once, Fetch(g22_, /*wait_ms=*/0));
  EXPECT_THAT(at_once.deliveries(), IsEmpty());
}

TEST_P(ExchangeTest, FetchedAndUnackedDocumentReturnsWhenItsLeaseExpires) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22}));
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse first,
                       Fetch(g22_, 0, /*lease_seconds=*/1));
  ASSERT_THAT(first.deliveries(), SizeIs(1));
  EXPECT_EQ(first.deliveries(0).document().id(), id);
  EXPECT_EQ(first.deliveries(0).attempt(), 1u);

  // Leased: not handed out again while the (fake) lease runs, even though the
  // reaper runs every real second meanwhile.
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse during, Fetch(g22_, /*wait_ms=*/1500));
  EXPECT_THAT(during.deliveries(), IsEmpty());

  clock_.Advance(absl::Seconds(2));
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse again,
                       Fetch(g22_, /*wait_ms=*/5000, 60));
  ASSERT_THAT(again.deliveries(), SizeIs(1));
  EXPECT_EQ(again.deliveries(0).document().id(), id);
  EXPECT_EQ(again.deliveries(0).attempt(), 2u);

  ASSERT_OK_AND_ASSIGN(v1::AckResponse acked, Ack(g22_, {id}));
  EXPECT_EQ(acked.acknowledged(), 1u);
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_DELIVERED);
  clock_.Advance(absl::Minutes(5));
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse after_ack,
                       Fetch(g22_, /*wait_ms=*/1500));
  EXPECT_THAT(after_ack.deliveries(), IsEmpty());
  EXPECT_EQ(InboxTotal(g22_), 0);
}

TEST_P(ExchangeTest, AckOfAnUnknownOrAlreadyAckedIdIsNotAnError) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22}));
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse fetched, Fetch(g22_, 0));
  ASSERT_THAT(fetched.deliveries(), SizeIs(1));
  ASSERT_OK_AND_ASSIGN(v1::AckResponse first, Ack(g22_, {id}));
  EXPECT_EQ(first.acknowledged(), 1u);

  ASSERT_OK_AND_ASSIGN(v1::AckResponse twice, Ack(g22_, {id}));
  EXPECT_EQ(twice.acknowledged(), 0u);
  ASSERT_OK_AND_ASSIGN(
      v1::AckResponse unknown,
      Ack(g22_, {NewDocumentId(absl::ToUnixMillis(clock_.Now()))}));
  EXPECT_EQ(unknown.acknowledged(), 0u);
  // Another org cannot acknowledge G22's copy.
  std::string other = MustSend(h49_, NewDocument(kH49, {kG22}));
  ASSERT_OK_AND_ASSIGN(v1::AckResponse foreign, Ack(h50_, {other}));
  EXPECT_EQ(foreign.acknowledged(), 0u);
  EXPECT_EQ(InboxTotal(g22_), 1);

  EXPECT_THAT(Ack(g22_, {"not-an-id"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("document_ids[0]")));
}

// ---- Business statuses ------------------------------------------------------

TEST_P(ExchangeTest, RecipientStatusReportsReachTheSender) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22, kH50}));
  clock_.Advance(absl::Minutes(1));
  ASSERT_OK_AND_ASSIGN(v1::ReportStatusResponse arrived,
                       ReportStatus(g22_, id, v1::BUSINESS_STATUS_ARRIVED));
  EXPECT_EQ(arrived.event().document_id(), id);
  EXPECT_EQ(arrived.event().recipient(), kG22);
  EXPECT_EQ(arrived.event().business_status(), v1::BUSINESS_STATUS_ARRIVED);
  EXPECT_EQ(arrived.event().actor(), g22_.spiffe_id);
  EXPECT_EQ(arrived.event().sender(), kH49);
  clock_.Advance(absl::Hours(3));
  ASSERT_OK_AND_ASSIGN(v1::ReportStatusResponse completed,
                       ReportStatus(g22_, id, v1::BUSINESS_STATUS_COMPLETED));
  EXPECT_GT(completed.event().sequence(), arrived.event().sequence());

  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, GetStatus(h49_, id));
  ASSERT_THAT(status.recipients(), SizeIs(2));
  EXPECT_EQ(status.recipients(0).business_status(),
            v1::BUSINESS_STATUS_COMPLETED);
  EXPECT_EQ(status.recipients(0).delivery_state(), v1::DELIVERY_STATE_ACCEPTED);
  EXPECT_EQ(Nanos(status.recipients(0).updated_at()),
            absl::ToUnixNanos(clock_.Now()));
  EXPECT_EQ(status.recipients(1).business_status(),
            v1::BUSINESS_STATUS_UNSPECIFIED);
  std::vector<v1::BusinessStatus> g22_statuses;
  for (const v1::StatusEvent& e : status.history()) {
    if (e.recipient() == kG22 &&
        e.business_status() != v1::BUSINESS_STATUS_UNSPECIFIED) {
      g22_statuses.push_back(e.business_status());
    }
  }
  EXPECT_THAT(g22_statuses, ElementsAre(v1::BUSINESS_STATUS_ARRIVED,
                                        v1::BUSINESS_STATUS_COMPLETED));
  const int history_size = status.history_size();

  // Refused reports change nothing.
  EXPECT_THAT(
      ReportStatus(g22_, id, v1::BUSINESS_STATUS_REJECTED),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reason")));
  EXPECT_THAT(
      ReportStatus(g22_, id, v1::BUSINESS_STATUS_REFUSED),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reason")));
  EXPECT_THAT(ReportStatus(sub_, id, v1::BUSINESS_STATUS_ARRIVED),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(
      ReportStatus(h49_, id, v1::BUSINESS_STATUS_ARRIVED),  // the sender
      StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(
      ReportStatus(g22_, id, static_cast<v1::BusinessStatus>(7)),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("status: 7")));
  EXPECT_THAT(
      ReportStatus(g22_, id, v1::BUSINESS_STATUS_UNSPECIFIED),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("status")));
  EXPECT_THAT(
      ReportStatus(g22_, "not-an-id", v1::BUSINESS_STATUS_ARRIVED),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("document_id")));
  ASSERT_OK_AND_ASSIGN(status, GetStatus(h49_, id));
  EXPECT_EQ(status.history_size(), history_size);

  ASSERT_OK_AND_ASSIGN(
      v1::ReportStatusResponse rejected,
      ReportStatus(h50_, id, v1::BUSINESS_STATUS_REJECTED, "Sai thẩm quyền"));
  EXPECT_EQ(rejected.event().reason(), "Sai thẩm quyền");
}

// ---- Watch ------------------------------------------------------------------

// ---- Recall, update, replace; paper conversion -----------------------------

// A RECALL (or UPDATE / REPLACE) of `original` from `sender` to `recipients`.
v1::Document ChangeRequest(const std::string& sender,
                           std::vector<std::string> recipients,
                           const std::string& original, v1::BusinessType type,
                           v1::Urgency urgency = v1::URGENCY_NORMAL) {
  v1::Document doc = NewDocument(sender, std::move(recipients),
                                 "Thu hồi Quyết định số 123/QĐ-UBND");
  doc.mutable_metadata()->set_business_type(type);
  doc.mutable_metadata()->set_refers_to(original);
  doc.mutable_metadata()->set_urgency(urgency);
  return doc;
}

// "<recipient> <step>" for each event of `status`' history, where a step
// is the delivery state or business status name without its prefix.
std::vector<std::string> Steps(const v1::DocumentStatus& status,
                               const std::string& recipient) {
  std::vector<std::string> out;
  for (const v1::StatusEvent& e : status.history()) {
    if (e.recipient() != recipient) continue;
    if (e.has_paper_conversion()) {
      out.push_back("PAPER");
    } else if (e.business_status() != v1::BUSINESS_STATUS_UNSPECIFIED) {
      out.push_back(v1::BusinessStatus_Name(e.business_status())
                        .substr(strlen("BUSINESS_STATUS_")));
    } else {
      out.push_back(v1::DeliveryState_Name(e.delivery_state())
                        .substr(strlen("DELIVERY_STATE_")));
    }
  }
  return out;
}

TEST_P(ExchangeTest, RecallOfDeliveredCopiesIsAgreedOrRefusedByEachRecipient) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22, kH50}));
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse g22_got, Fetch(g22_, 0));
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse h50_got, Fetch(h50_, 0));
  ASSERT_OK(Ack(g22_, {id}));
  ASSERT_OK(Ack(h50_, {id}));
  ASSERT_TRUE(EventuallyDelivered(id, kG22));
  ASSERT_TRUE(EventuallyDelivered(id, kH50));
  Watcher watch;
  ASSERT_OK(Watch(h49_, id, 0, watch));

  std::string recall = MustSend(
      h49_, ChangeRequest(kH49, {kG22, kH50}, id, v1::BUSINESS_TYPE_RECALL));
  // Both recipients get the recall itself.
  ASSERT_OK_AND_ASSIGN(g22_got, Fetch(g22_, 0));
  ASSERT_THAT(g22_got.deliveries(), SizeIs(1));
  EXPECT_EQ(g22_got.deliveries(0).document().metadata().refers_to(), id);
  ASSERT_OK(Ack(g22_, {recall}));

  ASSERT_OK_AND_ASSIGN(
      v1::ReportStatusResponse agreed,
      ReportStatus(g22_, id, v1::BUSINESS_STATUS_AGREED, "Đồng ý thu hồi"));
  EXPECT_EQ(agreed.event().related_document_id(), recall);
  EXPECT_EQ(agreed.event().related_business_type(), v1::BUSINESS_TYPE_RECALL);
  ASSERT_OK(ReportStatus(h50_, id, v1::BUSINESS_STATUS_REFUSED,
                         "Văn bản đã được thi hành"));
  // Once per request.
  EXPECT_THAT(ReportStatus(g22_, id, v1::BUSINESS_STATUS_REFUSED, "Đổi ý"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("already answered")));

  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, GetStatus(h49_, id));
  EXPECT_THAT(Steps(status, kG22),
              ElementsAre("ACCEPTED", "DELIVERED", "RECALL_OR_UPDATE_REQUESTED",
                          "AGREED", "RECALLED"));
  EXPECT_THAT(Steps(status, kH50),
              ElementsAre("ACCEPTED", "DELIVERED", "RECALL_OR_UPDATE_REQUESTED",
                          "REFUSED"));
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_RECALLED);
  EXPECT_EQ(DeliveryStateOf(id, kH50), v1::DELIVERY_STATE_DELIVERED);
  for (const v1::StatusEvent& e : status.history()) {
    if (e.business_status() == v1::BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED ||
        e.delivery_state() == v1::DELIVERY_STATE_RECALLED) {
      EXPECT_EQ(e.related_document_id(), recall);
    }
  }
  // The sender's watch saw every step, live.
  EXPECT_TRUE(watch.events.WaitForCount(status.history_size()));
  EXPECT_THAT(Sequences(watch.events.items()),
              ElementsAreArray(Sequences(
                  {status.history().begin(), status.history().end()})));
  watch.session->Close();
}

TEST_P(ExchangeTest, RecallWithdrawsACopyNotYetDeliveredEvenAfterRestart) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22}));
  // An express recall: it would overtake the original in the queue.
  std::string recall =
      MustSend(h49_, ChangeRequest(kH49, {kG22}, id, v1::BUSINESS_TYPE_RECALL,
                                   v1::URGENCY_EXPRESS));
  EXPECT_TRUE(Eventually([&] {
    return DeliveryStateOf(id, kG22) == v1::DELIVERY_STATE_RECALLED;
  }));
  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse inbox, ListInbox(g22_));
  ASSERT_THAT(inbox.entries(), SizeIs(1));
  EXPECT_EQ(inbox.entries(0).document_id(), recall);
  ASSERT_NO_FATAL_FAILURE(Restart());
  Receiver g22;
  ASSERT_OK(g22.Open(*exchange_, g22_, 10));
  ASSERT_TRUE(g22.WaitForCount(1));
  EXPECT_EQ(g22.CountAfterQuiet(), 1u);
  EXPECT_EQ(g22.delivery(0).document().id(), recall);
  // Nothing is left to answer.
  EXPECT_THAT(
      ReportStatus(g22_, id, v1::BUSINESS_STATUS_AGREED),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("withdrawn")));
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, GetStatus(h49_, id));
  EXPECT_THAT(
      Steps(status, kG22),
      ElementsAre("ACCEPTED", "RECALL_OR_UPDATE_REQUESTED", "RECALLED"));
  EXPECT_THAT(status.history(status.history_size() - 1).reason(),
              HasSubstr("withdrawn before delivery"));
  g22.Close();
}

TEST_P(ExchangeTest, AgreedRecallTakesAHandedOutUnacknowledgedCopyOffTheQueue) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22}));
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse got, Fetch(g22_, 0, 1));
  ASSERT_THAT(got.deliveries(), SizeIs(1));
  // In flight when the recall comes: the recipient may have seen it, so it
  // is asked.
  std::string recall =
      MustSend(h49_, ChangeRequest(kH49, {kG22}, id, v1::BUSINESS_TYPE_RECALL));
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_ACCEPTED);
  ASSERT_OK(ReportStatus(g22_, id, v1::BUSINESS_STATUS_AGREED));
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_RECALLED);
  ASSERT_OK_AND_ASSIGN(v1::AckResponse acked, Ack(g22_, {id}));
  EXPECT_EQ(acked.acknowledged(), 0u);
  clock_.Advance(absl::Seconds(5));  // the lease is over
  ASSERT_NO_FATAL_FAILURE(Restart());
  Receiver g22;
  ASSERT_OK(g22.Open(*exchange_, g22_, 10));
  ASSERT_TRUE(g22.WaitForCount(1));
  EXPECT_EQ(g22.CountAfterQuiet(), 1u);
  EXPECT_EQ(g22.delivery(0).document().id(), recall);
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_RECALLED);
  g22.Close();
}

TEST_P(ExchangeTest, UpdateAgreedSupersedesTheOldDocumentInItsHistory) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22}));
  ASSERT_OK_AND_ASSIGN(v1::FetchResponse got, Fetch(g22_, 0));
  ASSERT_OK(Ack(g22_, {id}));
  ASSERT_TRUE(EventuallyDelivered(id, kG22));
  std::string update = MustSend(
      h49_, ChangeRequest(kH49, {kG22}, id, v1::BUSINESS_TYPE_REPLACE));
  ASSERT_OK_AND_ASSIGN(got, Fetch(g22_, 0));
  ASSERT_THAT(got.deliveries(), SizeIs(1));
  EXPECT_EQ(got.deliveries(0).document().id(), update);
  ASSERT_OK(ReportStatus(g22_, id, v1::BUSINESS_STATUS_AGREED));
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, GetStatus(h49_, id));
  EXPECT_THAT(Steps(status, kG22),
              ElementsAre("ACCEPTED", "DELIVERED", "RECALL_OR_UPDATE_REQUESTED",
                          "AGREED"));
  EXPECT_THAT(
      status.history(status.history_size() - 1).reason(),
      HasSubstr(absl::StrCat("superseded by the replacement ", update)));
  // An UPDATE or REPLACE leaves the old copy where it was.
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_DELIVERED);
}

TEST_P(ExchangeTest, RecallsAreCheckedAgainstTheDocumentTheyReferTo) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22}));
  std::string from_h50 = MustSend(h50_, NewDocument(kH50, {kG22}));
  EXPECT_THAT(Send(h49_, ChangeRequest(kH49, {kG22}, NewDocumentId(1),
                                       v1::BUSINESS_TYPE_RECALL)),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("document.metadata.refers_to")));
  EXPECT_THAT(Send(h49_, ChangeRequest(kH49, {kG22}, from_h50,
                                       v1::BUSINESS_TYPE_RECALL)),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("document.metadata.refers_to")));
  EXPECT_THAT(
      Send(h49_, ChangeRequest(kH49, {kH50}, id, v1::BUSINESS_TYPE_UPDATE)),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("document.recipients[0]: 000.00.00.H50 is not a "
                         "recipient")));
  // Statuses 13, 15, 16 belong to the exchange.
  EXPECT_THAT(
      ReportStatus(g22_, id, v1::BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("status: 13")));
  EXPECT_THAT(ReportStatus(g22_, id, v1::BUSINESS_STATUS_AGREED),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("none is pending")));
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, GetStatus(h49_, id));
  EXPECT_THAT(Steps(status, kG22), ElementsAre("ACCEPTED"));
}

absl::StatusOr<v1::RecordPaperConversionResponse> ConvertToPaper(
    Exchange& exchange, const Principal& caller, const std::string& id,
    const std::string& reason, const std::string& by = "") {
  v1::RecordPaperConversionRequest request;
  request.set_document_id(id);
  request.set_reason(reason);
  request.set_converted_by(by);
  AsyncResult<v1::RecordPaperConversionResponse> result;
  exchange.RecordPaperConversion(caller, request, result.Callback());
  return result.Wait();
}

TEST_P(ExchangeTest, PaperConversionsAreRecordedWithReasonWhoAndWhen) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22}));
  EXPECT_THAT(ConvertToPaper(*exchange_, g22_, id, "  "),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("reason: required")));
  // Not a party: as if it did not exist.
  EXPECT_THAT(ConvertToPaper(*exchange_, h50_, id, "In để lưu"),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus before, GetStatus(h49_, id));
  EXPECT_EQ(before.history_size(), 1);

  clock_.Advance(absl::Minutes(3));
  ASSERT_OK_AND_ASSIGN(
      v1::RecordPaperConversionResponse converted,
      ConvertToPaper(*exchange_, g22_, id, "Trình lãnh đạo ký bản giấy",
                     "Nguyễn Văn A"));
  EXPECT_EQ(converted.conversion().org(), kG22);
  EXPECT_EQ(converted.conversion().actor(), g22_.spiffe_id);
  EXPECT_EQ(converted.conversion().converted_by(), "Nguyễn Văn A");
  EXPECT_EQ(Nanos(converted.conversion().at()),
            absl::ToUnixNanos(clock_.Now()));
  ASSERT_OK(ConvertToPaper(*exchange_, h49_, id, "Lưu trữ bản giấy"));

  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, GetStatus(h49_, id));
  EXPECT_THAT(Steps(status, kG22), ElementsAre("ACCEPTED", "PAPER"));
  EXPECT_THAT(Steps(status, kH49), ElementsAre("PAPER"));
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_ACCEPTED);

  AsyncResult<v1::ListPaperConversionsResponse> listed;
  exchange_->ListPaperConversions(g22_, v1::ListPaperConversionsRequest(),
                                  listed.Callback());
  ASSERT_OK_AND_ASSIGN(v1::ListPaperConversionsResponse g22_list,
                       listed.Wait());
  ASSERT_THAT(g22_list.conversions(), SizeIs(1));
  EXPECT_EQ(g22_list.conversions(0).reason(), "Trình lãnh đạo ký bản giấy");
  EXPECT_EQ(g22_list.conversions(0).document_id(), id);
  ASSERT_OK_AND_ASSIGN(std::vector<v1::PaperConversion> h49_list,
                       exchange_->PaperConversions(kH49, 0));
  ASSERT_THAT(h49_list, SizeIs(1));
  EXPECT_EQ(h49_list[0].reason(), "Lưu trữ bản giấy");
  EXPECT_THAT(exchange_->PaperConversions("H49", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("org")));
}

TEST_P(ExchangeTest, PaperConversionForbiddenByPolicyIsRefusedNamingTheRule) {
  ASSERT_OK(policy_
                ->Apply(R"(
rules:
  - name: served-orgs-exchange
    effect: permit
    sender: {orgs: [000.00.00.H49]}
    recipient: {orgs: [000.00.00.G22, 000.00.00.H50]}
  - name: no-paper-to-the-centre
    effect: permit
    recipient: {orgs: [000.00.00.G22]}
    obligations: {paper_conversion_forbidden: true}
)")
                .status());
  std::string to_g22 = MustSend(h49_, NewDocument(kH49, {kG22}));
  std::string to_h50 = MustSend(h49_, NewDocument(kH49, {kH50}));
  EXPECT_THAT(ConvertToPaper(*exchange_, g22_, to_g22, "In"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr("no-paper-to-the-centre"),
                             HasSubstr("paper_conversion_forbidden"))));
  EXPECT_THAT(ConvertToPaper(*exchange_, h49_, to_g22, "In"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("no-paper-to-the-centre")));
  ASSERT_OK(ConvertToPaper(*exchange_, h50_, to_h50, "In"));
  ASSERT_OK_AND_ASSIGN(std::vector<v1::PaperConversion> g22_list,
                       exchange_->PaperConversions(kG22, 0));
  EXPECT_THAT(g22_list, IsEmpty());
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, GetStatus(h49_, to_g22));
  EXPECT_THAT(Steps(status, kG22), ElementsAre("ACCEPTED"));
}

TEST_P(ExchangeTest, WatchReplaysThenFollowsLiveEventsEachOnceInOrder) {
  std::string a = MustSend(h49_, NewDocument(kH49, {kG22, kH50}));  // 2 events
  std::string b = MustSend(h49_, NewDocument(kH49, {kG22}));        // 1 event
  ASSERT_OK_AND_ASSIGN(std::vector<v1::StatusEvent> stored,
                       store_->ListSenderEvents(kH49, 0, 100));
  ASSERT_THAT(stored, SizeIs(3));

  Watcher watcher;
  ASSERT_OK(Watch(h49_, "", /*after_sequence=*/stored[0].sequence(), watcher));
  ASSERT_TRUE(watcher.events.WaitForCount(2));
  EXPECT_THAT(Sequences(watcher.events.items()),
              ElementsAre(stored[1].sequence(), stored[2].sequence()));

  ASSERT_OK(ReportStatus(g22_, a, v1::BUSINESS_STATUS_ARRIVED));
  std::string c = MustSend(h49_, NewDocument(kH49, {kH50}));
  MustSend(h50_, NewDocument(kH50, {kG22}));  // not H49's: not in its watch
  ASSERT_TRUE(watcher.events.WaitForCount(4));
  EXPECT_EQ(watcher.events.CountAfter(), 4u);

  std::vector<v1::StatusEvent> got = watcher.events.items();
  EXPECT_EQ(got[0].document_id(), a);
  EXPECT_EQ(got[1].document_id(), b);
  EXPECT_EQ(got[2].document_id(), a);
  EXPECT_EQ(got[2].business_status(), v1::BUSINESS_STATUS_ARRIVED);
  EXPECT_EQ(got[3].document_id(), c);
  EXPECT_EQ(got[3].delivery_state(), v1::DELIVERY_STATE_ACCEPTED);
  ASSERT_OK_AND_ASSIGN(
      stored, store_->ListSenderEvents(kH49, stored[0].sequence(), 100));
  EXPECT_THAT(Sequences(got), ElementsAreArray(Sequences(stored)));
  EXPECT_EQ(watcher.errors.size(), 0u);
  watcher.session->Close();
}

TEST_P(ExchangeTest, WatchOfOneDocumentSeesOnlyItsEvents) {
  std::string a = MustSend(h49_, NewDocument(kH49, {kG22}));
  std::string b = MustSend(h49_, NewDocument(kH49, {kG22}));
  Watcher watcher;
  ASSERT_OK(Watch(h49_, a, 0, watcher));
  ASSERT_TRUE(watcher.events.WaitForCount(1));
  ASSERT_OK(ReportStatus(g22_, b, v1::BUSINESS_STATUS_ARRIVED));
  ASSERT_OK(ReportStatus(g22_, a, v1::BUSINESS_STATUS_ACCEPTED));
  ASSERT_TRUE(watcher.events.WaitForCount(2));
  EXPECT_EQ(watcher.events.CountAfter(), 2u);
  std::vector<v1::StatusEvent> got = watcher.events.items();
  EXPECT_EQ(got[0].delivery_state(), v1::DELIVERY_STATE_ACCEPTED);
  EXPECT_EQ(got[1].business_status(), v1::BUSINESS_STATUS_ACCEPTED);
  for (const v1::StatusEvent& e : got) EXPECT_EQ(e.document_id(), a);
  watcher.session->Close();
}

TEST_P(ExchangeTest, WatchOfADocumentTheCallerDidNotSendIsNotFound) {
  std::string id = MustSend(h49_, NewDocument(kH49, {kG22}));
  Watcher recipient;  // a recipient, but not the sender
  EXPECT_THAT(Watch(g22_, id, 0, recipient),
              StatusIs(absl::StatusCode::kNotFound));
  Watcher unknown;
  EXPECT_THAT(
      Watch(h49_, NewDocumentId(absl::ToUnixMillis(clock_.Now())), 0, unknown),
      StatusIs(absl::StatusCode::kNotFound));
  Watcher malformed;
  EXPECT_THAT(
      Watch(h49_, "not-an-id", 0, malformed),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("document_id")));
  EXPECT_EQ(recipient.events.CountAfter(), 0u);
}

// Events committed while a watch replays must be neither lost nor repeated:
// watches start at different points of a stream of concurrent sends, and each
// must see exactly what the store holds, in order.
TEST_P(ExchangeTest, WatchesStartedDuringSendsSeeEveryEventOnceInOrder) {
  constexpr int kSenders = 4;
  constexpr int kPerSender = 50;
  constexpr int kWatchers = 20;
  std::vector<std::thread> senders;
  for (int t = 0; t < kSenders; ++t) {
    senders.emplace_back([&] {
      for (int i = 0; i < kPerSender; ++i) {
        MustSend(h49_, NewDocument(kH49, {kG22}));
      }
    });
  }
  std::vector<Watcher> watchers(kWatchers);
  for (int w = 0; w < kWatchers; ++w) {
    const uint64_t started_after =
        (w + 1) * kSenders * kPerSender / (kWatchers + 1);
    ASSERT_TRUE(Eventually(
        [&] { return exchange_->Stats().accepted >= started_after; }));
    ASSERT_OK(Watch(h49_, "", 0, watchers[w]));
  }
  for (auto& t : senders) t.join();

  ASSERT_OK_AND_ASSIGN(std::vector<v1::StatusEvent> stored,
                       store_->ListSenderEvents(kH49, 0, 1000));
  ASSERT_THAT(stored, SizeIs(kSenders * kPerSender));
  for (int w = 0; w < kWatchers; ++w) {
    SCOPED_TRACE(absl::StrCat("watcher ", w));
    ASSERT_TRUE(watchers[w].events.WaitForCount(stored.size()));
    EXPECT_EQ(watchers[w].events.CountAfter(absl::Milliseconds(50)),
              stored.size());
    EXPECT_THAT(Sequences(watchers[w].events.items()),
                ElementsAreArray(Sequences(stored)));
    watchers[w].session->Close();
  }
}

// ---- Human approval of automated decisions ----------------------------------

constexpr char kApprover[] = "spiffe://lienthong.local/person/approver";
constexpr char kDirector[] = "spiffe://lienthong.local/person/giam-doc";
constexpr char kClerk[] = "spiffe://lienthong.local/person/van-thu";

// A personnel decision proposed by a system (the test policy forbids only
// AI-made ones outright).
v1::Document SystemPersonnelDecision(const std::string& sender,
                                     std::vector<std::string> recipients) {
  v1::Document doc =
      NewDocument(sender, std::move(recipients), "Quyết định điều động cán bộ");
  doc.mutable_metadata()->set_document_type("Quyết định");
  doc.mutable_metadata()->set_origin(v1::ORIGIN_SYSTEM);
  doc.mutable_metadata()->set_decision_category(
      v1::DECISION_CATEGORY_PERSONNEL);
  return doc;
}

class ApprovalTest : public ExchangeTest {
 protected:
  void SetUp() override {
    ExchangeTest::SetUp();
    if (HasFatalFailure()) return;
    options_.approvers = {{kApprover, kApproverRole, {kH49, kG22}},
                          {kDirector, "giam-doc", {kH49}},
                          {kClerk, "van-thu", {kH50}}};
    options_.approval_expiry = absl::Hours(1);
    ASSERT_NO_FATAL_FAILURE(OpenExchange());
  }

  absl::StatusOr<v1::ListApprovalsResponse> List(const std::string& person,
                                                 bool all = false) {
    AsyncResult<v1::ListApprovalsResponse> result;
    exchange_->ListApprovals(MustParse(person), all, v1::ListApprovalsRequest(),
                             result.Callback());
    return result.Wait();
  }

  absl::StatusOr<v1::DecideApprovalResponse> Decide(
      const std::string& person, const std::string& id,
      v1::ApprovalDecision decision, const std::string& content_sha256,
      const std::string& comment = "") {
    v1::DecideApprovalRequest request;
    request.set_document_id(id);
    request.set_decision(decision);
    request.set_content_sha256(content_sha256);
    request.set_comment(comment);
    AsyncResult<v1::DecideApprovalResponse> result;
    exchange_->DecideApproval(MustParse(person), request, result.Callback());
    return result.Wait();
  }

  // The delivery states of `recipient`'s copy, in the order recorded.
  std::vector<v1::DeliveryState> History(const std::string& id,
                                         const std::string& recipient) {
    std::vector<v1::DeliveryState> out;
    absl::StatusOr<v1::DocumentStatus> status = GetStatus(h49_, id);
    EXPECT_OK(status);
    if (!status.ok()) return out;
    for (const v1::StatusEvent& e : status->history()) {
      if (e.recipient() == recipient &&
          e.delivery_state() != v1::DELIVERY_STATE_UNSPECIFIED)
        out.push_back(e.delivery_state());
    }
    return out;
  }
};

TEST_P(ApprovalTest, AutomatedPersonnelDecisionIsDeliveredOnlyAfterApproval) {
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent,
                       Send(h49_, SystemPersonnelDecision(kH49, {kG22, kH50})));
  const std::string id = sent.document_id();
  Receiver g22;
  ASSERT_OK(g22.Open(*exchange_, g22_, 10));
  EXPECT_EQ(g22.CountAfterQuiet(), 0u) << "delivered before approval";
  EXPECT_EQ(InboxTotal(h50_), 0);
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_PENDING_APPROVAL);
  EXPECT_EQ(DeliveryStateOf(id, kH50), v1::DELIVERY_STATE_PENDING_APPROVAL);

  // The approver sees the metadata and the content hash, not the content.
  ASSERT_OK_AND_ASSIGN(v1::ListApprovalsResponse listed, List(kApprover));
  ASSERT_THAT(listed.approvals(), SizeIs(1));
  const v1::PendingApproval& p = listed.approvals(0);
  EXPECT_EQ(p.document_id(), id);
  EXPECT_EQ(p.sender(), kH49);
  EXPECT_THAT(p.recipients(), ElementsAre(kG22, kH50));
  EXPECT_EQ(p.metadata().subject(), "Quyết định điều động cán bộ");
  EXPECT_EQ(p.content_sha256(), sent.content_sha256());
  ASSERT_THAT(p.required(), SizeIs(1));
  EXPECT_EQ(p.required(0).role(), kApproverRole);
  EXPECT_EQ(p.required(0).org(), kH49);
  EXPECT_THAT(p.reason(), HasSubstr("personnel decision"));
  EXPECT_EQ(
      Nanos(p.expires_at()),
      Nanos(sent.accepted_at()) + absl::ToInt64Nanoseconds(absl::Hours(1)));
  // Someone without the role for H49 sees nothing and decides nothing.
  ASSERT_OK_AND_ASSIGN(v1::ListApprovalsResponse clerk, List(kClerk));
  EXPECT_THAT(clerk.approvals(), IsEmpty());
  EXPECT_THAT(
      Decide(kClerk, id, v1::APPROVAL_DECISION_APPROVE, sent.content_sha256()),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr(kClerk)));
  EXPECT_THAT(List("spiffe://lienthong.local/person/operator"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  ASSERT_OK_AND_ASSIGN(v1::ListApprovalsResponse all,
                       List("spiffe://lienthong.local/person/operator", true));
  EXPECT_THAT(all.approvals(), SizeIs(1));
  // A decision on other content than the document's changes nothing.
  EXPECT_THAT(Decide(kApprover, id, v1::APPROVAL_DECISION_APPROVE,
                     std::string(64, 'a')),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr(sent.content_sha256())));
  EXPECT_THAT(
      Decide(kApprover, id, v1::APPROVAL_DECISION_UNSPECIFIED,
             sent.content_sha256()),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("decision")));
  EXPECT_EQ(g22.CountAfterQuiet(), 0u);

  ASSERT_OK_AND_ASSIGN(
      v1::DecideApprovalResponse decided,
      Decide(kApprover, id, v1::APPROVAL_DECISION_APPROVE,
             absl::AsciiStrToUpper(sent.content_sha256()), "Đồng ý"));
  EXPECT_TRUE(decided.released());
  EXPECT_THAT(decided.still_required(), IsEmpty());

  ASSERT_TRUE(g22.WaitForCount(1));
  const v1::Delivery delivered = g22.delivery(0);
  const v1::Document& got = delivered.document();
  EXPECT_EQ(got.id(), id);
  ASSERT_THAT(got.approvals(), SizeIs(1));
  const v1::Approval& a = got.approvals(0);
  EXPECT_EQ(a.approver(), kApprover);
  EXPECT_EQ(a.role(), kApproverRole);
  EXPECT_EQ(a.org(), kH49);
  EXPECT_EQ(a.content_sha256(), sent.content_sha256());
  EXPECT_EQ(a.comment(), "Đồng ý");
  EXPECT_EQ(a.decision(), v1::APPROVAL_DECISION_APPROVE);
  EXPECT_EQ(a.broker(), kBrokerId);
  g22.Ack({id});
  ASSERT_TRUE(EventuallyDelivered(id, kG22));
  EXPECT_THAT(
      History(id, kG22),
      ElementsAre(v1::DELIVERY_STATE_ACCEPTED,
                  v1::DELIVERY_STATE_PENDING_APPROVAL,
                  v1::DELIVERY_STATE_APPROVED, v1::DELIVERY_STATE_DELIVERED));
  EXPECT_EQ(InboxTotal(h50_), 1);
  // Decided once: nothing waits any more.
  EXPECT_THAT(Decide(kApprover, id, v1::APPROVAL_DECISION_APPROVE,
                     sent.content_sha256()),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(listed, List(kApprover));
  EXPECT_THAT(listed.approvals(), IsEmpty());
}

TEST_P(ApprovalTest, RejectionDeniesEveryCopyWithTheReason) {
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent,
                       Send(h49_, SystemPersonnelDecision(kH49, {kG22})));
  const std::string id = sent.document_id();
  Watcher watcher;
  ASSERT_OK(Watch(h49_, id, 0, watcher));
  EXPECT_THAT(
      Decide(kApprover, id, v1::APPROVAL_DECISION_REJECT,
             sent.content_sha256()),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("comment")));
  ASSERT_OK(Decide(kApprover, id, v1::APPROVAL_DECISION_REJECT,
                   sent.content_sha256(), "Sai đối tượng"));
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_DENIED);
  EXPECT_EQ(InboxTotal(g22_), 0);
  // The sender's track stream saw every step, the rejection with its
  // approver and comment.
  ASSERT_TRUE(watcher.events.WaitForCount(3));
  const v1::StatusEvent denied = watcher.events.items().back();
  EXPECT_EQ(denied.delivery_state(), v1::DELIVERY_STATE_DENIED);
  EXPECT_EQ(denied.actor(), kApprover);
  EXPECT_THAT(denied.reason(), HasSubstr("Sai đối tượng"));
  EXPECT_EQ(denied.approval().decision(), v1::APPROVAL_DECISION_REJECT);
  watcher.session->Close();
  EXPECT_THAT(Decide(kApprover, id, v1::APPROVAL_DECISION_APPROVE,
                     sent.content_sha256()),
              StatusIs(absl::StatusCode::kNotFound));
  // Rejected stays rejected after a restart.
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_EQ(InboxTotal(g22_), 0);
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_DENIED);
}

TEST_P(ApprovalTest, UnapprovedDocumentExpiresAndTheSenderIsTold) {
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent,
                       Send(h49_, SystemPersonnelDecision(kH49, {kG22})));
  const std::string id = sent.document_id();
  clock_.Advance(absl::Minutes(59));
  absl::SleepFor(
      absl::Milliseconds(1500));  // the expiry check runs each second
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_PENDING_APPROVAL);
  clock_.Advance(absl::Minutes(2));
  ASSERT_TRUE(Eventually(
      [&] { return DeliveryStateOf(id, kG22) == v1::DELIVERY_STATE_EXPIRED; }));
  absl::StatusOr<v1::DocumentStatus> status = GetStatus(h49_, id);
  ASSERT_OK(status);
  EXPECT_THAT(status->history().rbegin()->reason(),
              AllOf(HasSubstr("not approved"), HasSubstr("approver@")));
  // A late approval finds nothing to decide. The expiry shows as soon as it
  // is durable, a moment before the broker lets go of the held copy: a
  // decision in that moment is told to retry (ABORTED), never taken.
  absl::Status late;
  ASSERT_TRUE(Eventually([&] {
    late = Decide(kApprover, id, v1::APPROVAL_DECISION_APPROVE,
                  sent.content_sha256())
               .status();
    EXPECT_TRUE(absl::IsNotFound(late) || absl::IsAborted(late)) << late;
    return !absl::IsAborted(late);
  }));
  EXPECT_THAT(late, StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(InboxTotal(g22_), 0);
}

TEST_P(ApprovalTest, SendingTheSameContentAgainAsAPersonDoesNotEscapeApproval) {
  v1::Document doc = SystemPersonnelDecision(kH49, {kG22});
  ASSERT_OK_AND_ASSIGN(v1::SendResponse first, Send(h49_, doc));
  // Resent under its key with the origin removed: refused as other content.
  doc.set_idempotency_key("qd-45");
  ASSERT_OK(Send(h49_, doc));
  v1::Document keyed = doc;
  keyed.mutable_metadata()->set_origin(v1::ORIGIN_PERSON);
  EXPECT_THAT(Send(h49_, keyed), StatusIs(absl::StatusCode::kAlreadyExists));
  // A new key, the origin flag removed, the same content: held as well.
  v1::Document laundered = keyed;
  laundered.set_idempotency_key("qd-45-lai");
  laundered.mutable_metadata()->set_decision_category(
      v1::DECISION_CATEGORY_NONE);
  ASSERT_OK_AND_ASSIGN(v1::SendResponse again, Send(h49_, laundered));
  EXPECT_EQ(again.content_sha256(), first.content_sha256());
  EXPECT_EQ(DeliveryStateOf(again.document_id(), kG22),
            v1::DELIVERY_STATE_PENDING_APPROVAL);
  ASSERT_NO_FATAL_FAILURE(Restart());
  v1::Document after_restart = laundered;
  after_restart.set_idempotency_key("qd-45-sau");
  ASSERT_OK_AND_ASSIGN(v1::SendResponse third, Send(h49_, after_restart));
  EXPECT_EQ(DeliveryStateOf(third.document_id(), kG22),
            v1::DELIVERY_STATE_PENDING_APPROVAL);
  ASSERT_OK_AND_ASSIGN(v1::ListApprovalsResponse listed, List(kApprover));
  EXPECT_THAT(listed.approvals(), SizeIs(4));
  EXPECT_EQ(InboxTotal(g22_), 0);
  // Other content from a person goes out at once.
  v1::Document other = NewDocument(kH49, {kG22}, "Công văn khác");
  other.set_body("Nội dung khác");
  ASSERT_OK(Send(h49_, other));
  EXPECT_EQ(InboxTotal(g22_), 1);
}

TEST_P(ApprovalTest, PolicyObligationNeedsItsOwnRoleAndSurvivesRestart) {
  v1::Document doc = NewDocument(kH49, {kG22}, "Tờ trình về biên chế");
  doc.mutable_metadata()->set_document_type("Tờ trình");
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent, Send(h49_, doc));
  const std::string id = sent.document_id();
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_PENDING_APPROVAL);
  // The approver role does not stand in for the director's.
  ASSERT_OK_AND_ASSIGN(v1::ListApprovalsResponse mine, List(kApprover));
  EXPECT_THAT(mine.approvals(), IsEmpty());
  EXPECT_THAT(Decide(kApprover, id, v1::APPROVAL_DECISION_APPROVE,
                     sent.content_sha256()),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_EQ(InboxTotal(g22_), 0);
  ASSERT_OK_AND_ASSIGN(v1::ListApprovalsResponse theirs, List(kDirector));
  ASSERT_THAT(theirs.approvals(), SizeIs(1));
  EXPECT_THAT(theirs.approvals(0).reason(),
              HasSubstr("proposals-need-the-director"));
  ASSERT_OK_AND_ASSIGN(v1::DecideApprovalResponse decided,
                       Decide(kDirector, id, v1::APPROVAL_DECISION_APPROVE,
                              sent.content_sha256()));
  EXPECT_TRUE(decided.released());
  EXPECT_EQ(decided.approval().role(), "giam-doc");
  EXPECT_EQ(InboxTotal(g22_), 1);
}

TEST_P(ApprovalTest, AHeldRecallTakesEffectOnlyOnceApproved) {
  const std::string id = MustSend(h49_, NewDocument(kH49, {kG22}));
  v1::Document recall =
      ChangeRequest(kH49, {kG22}, id, v1::BUSINESS_TYPE_RECALL);
  recall.mutable_metadata()->set_origin(v1::ORIGIN_SYSTEM);
  recall.mutable_metadata()->set_decision_category(
      v1::DECISION_CATEGORY_PERSONNEL);
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent, Send(h49_, recall));
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(DeliveryStateOf(id, kG22), v1::DELIVERY_STATE_ACCEPTED)
      << "a held recall must not touch the original";
  EXPECT_EQ(InboxTotal(g22_), 1);
  ASSERT_OK_AND_ASSIGN(
      v1::DecideApprovalResponse decided,
      Decide(kApprover, sent.document_id(), v1::APPROVAL_DECISION_APPROVE,
             sent.content_sha256()));
  EXPECT_TRUE(decided.released());
  // Released: the copy that waited is withdrawn, the recall delivered.
  EXPECT_TRUE(Eventually([&] {
    return DeliveryStateOf(id, kG22) == v1::DELIVERY_STATE_RECALLED;
  }));
  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse inbox, ListInbox(g22_));
  ASSERT_THAT(inbox.entries(), SizeIs(1));
  EXPECT_EQ(inbox.entries(0).document_id(), sent.document_id());
}

TEST_P(ApprovalTest, SenderMayNotSetApprovals) {
  v1::Document doc = SystemPersonnelDecision(kH49, {kG22});
  v1::Approval* forged = doc.add_approvals();
  forged->set_approver(kApprover);
  forged->set_decision(v1::APPROVAL_DECISION_APPROVE);
  EXPECT_THAT(Send(h49_, doc), StatusIs(absl::StatusCode::kInvalidArgument,
                                        HasSubstr("approvals")));
  ASSERT_OK_AND_ASSIGN(v1::ListApprovalsResponse listed, List(kApprover));
  EXPECT_THAT(listed.approvals(), IsEmpty());
}

INSTANTIATE_TEST_SUITE_P(Stores, ApprovalTest,
                         ::testing::Values(Backend::kMemory, Backend::kRocksDb),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kMemory ? "Memory"
                                                                 : "RocksDb";
                         });

INSTANTIATE_TEST_SUITE_P(Stores, ExchangeTest,
                         ::testing::Values(Backend::kMemory, Backend::kRocksDb),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kMemory ? "Memory"
                                                                 : "RocksDb";
                         });

}  // namespace
}  // namespace lienthong::broker
