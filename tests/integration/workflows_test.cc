// Regulation workflows end to end on one real lienthongd over mutual TLS:
// recall (agreed, refused, withdrawn before delivery, also across a
// restart), update/replace, and conversion to paper with its report. The
// same across brokers is in federation_test.cc.
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/admin_client.h"
#include "lienthong/client.h"
#include "lienthong/v1/admin.grpc.pb.h"
#include "lienthong/v1/approvals.grpc.pb.h"
#include "lienthong/v1/audit.pb.h"
#include "lienthong/v1/evidence.pb.h"
#include "tests/integration/broker_process.h"
#include "tests/integration/watch_recorder.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"

namespace lienthong::integration {
namespace {

using ::lienthong::testing_util::Collector;
using ::lienthong::testing_util::Eventually;
using ::lienthong::testing_util::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr absl::Duration kWait = absl::Seconds(15);

v1::Document NewDocument(const std::vector<std::string>& to,
                         const std::string& subject) {
  v1::Document doc;
  for (const std::string& r : to) doc.add_recipients(r);
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_subject(subject);
  m->set_document_type("Công văn");
  m->set_urgency(v1::URGENCY_NORMAL);
  doc.set_body("Kính gửi ...");
  doc.set_body_content_type("text/plain; charset=utf-8");
  return doc;
}

// "STATE" or "STATUS" name of an event (PAPER_CONVERSION for one).
std::string StepName(const v1::StatusEvent& e) {
  return e.has_paper_conversion() ? "PAPER_CONVERSION"
         : e.business_status() != v1::BUSINESS_STATUS_UNSPECIFIED
             ? v1::BusinessStatus_Name(e.business_status())
             : v1::DeliveryState_Name(e.delivery_state());
}

// The step names of `events`, in order.
std::vector<std::string> Steps(const std::vector<v1::StatusEvent>& events) {
  std::vector<std::string> out;
  for (const v1::StatusEvent& e : events) out.push_back(StepName(e));
  return out;
}

std::vector<std::string> HistoryOf(const v1::DocumentStatus& status,
                                   const std::string& recipient) {
  std::vector<std::string> out;
  for (const v1::StatusEvent& e : status.history()) {
    if (e.recipient() == recipient) out.push_back(StepName(e));
  }
  return out;
}

// Fetches (without waiting long) and returns the ids handed out.
std::vector<std::string> FetchIds(Client& client, bool ack) {
  absl::StatusOr<std::vector<IncomingDocument>> got =
      client.Fetch(100, absl::Milliseconds(500));
  EXPECT_OK(got);
  std::vector<std::string> ids;
  if (!got.ok()) return ids;
  for (const IncomingDocument& d : *got) ids.push_back(d.document.id());
  if (ack && !ids.empty()) EXPECT_OK(client.Ack(ids));
  return ids;
}

// The audit entries of a document in its evidence, as "KIND ACTION org".
std::vector<std::string> AuditedSteps(Client& client, const std::string& id) {
  std::vector<std::string> out;
  absl::StatusOr<v1::EvidenceExport> exported = client.GetEvidence(id);
  EXPECT_OK(exported);
  v1::Evidence evidence;
  if (!exported.ok() || !evidence.ParseFromString(exported->evidence())) {
    ADD_FAILURE() << "no evidence for " << id;
    return out;
  }
  for (const v1::EvidenceAuditEntry& e : evidence.audit_entries()) {
    v1::AuditEntry entry;
    if (!entry.ParseFromString(e.entry().entry())) continue;
    out.push_back(absl::StrCat(v1::AuditKind_Name(entry.kind()), " ",
                               entry.action(), " ", entry.org()));
  }
  return out;
}

BrokerOptions WithRoles() {
  BrokerOptions o;
  o.config_yaml = "roles: {operator: [operator], auditor: [auditor]}\n";
  return o;
}

class WorkflowsTest : public ::testing::Test {
 protected:
  WorkflowsTest() : broker_(WithRoles()) {}
  void SetUp() override { ASSERT_OK(broker_.Start()); }
  void TearDown() override { EXPECT_OK(broker_.Stop()); }

  std::unique_ptr<Client> Open(const std::string& org) {
    absl::StatusOr<std::unique_ptr<Client>> c =
        Client::Open(broker_.ClientOptionsFor(org));
    EXPECT_OK(c);
    return c.ok() ? *std::move(c) : nullptr;
  }
  std::unique_ptr<AdminClient> Admin(const std::string& person) {
    absl::StatusOr<std::string> pki = DevPkiDir();
    EXPECT_OK(pki);
    ClientOptions o = broker_.ClientOptionsFor(kH49);
    o.certificate_file =
        absl::StrCat(pki.value_or(""), "/persons/", person, ".pem");
    o.private_key_file =
        absl::StrCat(pki.value_or(""), "/persons/", person, ".key");
    absl::StatusOr<std::unique_ptr<AdminClient>> admin = AdminClient::Open(o);
    EXPECT_OK(admin);
    return admin.ok() ? *std::move(admin) : nullptr;
  }

  BrokerProcess broker_;
};

TEST_F(WorkflowsTest, RecallAgreedByOneRecipientRefusedByAnother) {
  std::unique_ptr<Client> h49 = Open(kH49);
  std::unique_ptr<Client> g22 = Open(kG22);
  std::unique_ptr<Client> unit = Open(kUnitH49);
  ASSERT_TRUE(h49 && g22 && unit);
  WatchRecorder watch(h49.get(), "");
  ASSERT_OK_AND_ASSIGN(
      SendReceipt sent,
      h49->Send(NewDocument({kG22, kUnitH49}, "Báo cáo tháng 11")));
  const std::string id = sent.document_id;
  EXPECT_THAT(FetchIds(*g22, /*ack=*/true), ElementsAre(id));
  EXPECT_THAT(FetchIds(*unit, /*ack=*/true), ElementsAre(id));
  ASSERT_TRUE(
      watch.WaitFor(IsDelivery(id, kG22, v1::DELIVERY_STATE_DELIVERED)));
  ASSERT_TRUE(
      watch.WaitFor(IsDelivery(id, kUnitH49, v1::DELIVERY_STATE_DELIVERED)));

  ASSERT_OK_AND_ASSIGN(
      SendReceipt recall,
      h49->Send(NewChangeRequest(id, {kG22, kUnitH49}, v1::BUSINESS_TYPE_RECALL,
                                 "Thu hồi báo cáo tháng 11", "Số liệu sai")));
  ASSERT_TRUE(watch.WaitFor(
      IsBusiness(id, kG22, v1::BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED)));
  std::vector<std::string> got = FetchIds(*g22, /*ack=*/true);
  EXPECT_THAT(got, ElementsAre(recall.document_id));
  EXPECT_THAT(FetchIds(*unit, /*ack=*/true), ElementsAre(recall.document_id));

  ASSERT_OK_AND_ASSIGN(v1::StatusEvent agreed,
                       g22->AnswerChangeRequest(id, /*agree=*/true));
  EXPECT_EQ(agreed.related_document_id(), recall.document_id);
  EXPECT_THAT(
      unit->AnswerChangeRequest(id, /*agree=*/false),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reason")));
  ASSERT_OK(unit->AnswerChangeRequest(id, /*agree=*/false, "Đã thi hành"));
  EXPECT_THAT(unit->AnswerChangeRequest(id, /*agree=*/true),
              StatusIs(absl::StatusCode::kFailedPrecondition));

  ASSERT_TRUE(watch.WaitFor(IsDelivery(id, kG22, v1::DELIVERY_STATE_RECALLED)));
  ASSERT_TRUE(
      watch.WaitFor(IsBusiness(id, kUnitH49, v1::BUSINESS_STATUS_REFUSED)));
  EXPECT_THAT(Steps(watch.Of(id, kG22)),
              ElementsAre("DELIVERY_STATE_ACCEPTED", "DELIVERY_STATE_DELIVERED",
                          "BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED",
                          "BUSINESS_STATUS_AGREED", "DELIVERY_STATE_RECALLED"));
  EXPECT_THAT(Steps(watch.Of(id, kUnitH49)),
              ElementsAre("DELIVERY_STATE_ACCEPTED", "DELIVERY_STATE_DELIVERED",
                          "BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED",
                          "BUSINESS_STATUS_REFUSED"));
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, h49->GetDocumentStatus(id));
  EXPECT_THAT(HistoryOf(status, kG22),
              ElementsAre("DELIVERY_STATE_ACCEPTED", "DELIVERY_STATE_DELIVERED",
                          "BUSINESS_STATUS_RECALL_OR_"
                          "UPDATE_REQUESTED",
                          "BUSINESS_STATUS_AGREED", "DELIVERY_STATE_RECALLED"));
  // Every step is in the audit log.
  std::vector<std::string> audited = AuditedSteps(*h49, id);
  EXPECT_THAT(
      audited,
      testing::IsSupersetOf(
          {absl::StrCat("AUDIT_KIND_RECALL "
                        "BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED ",
                        kG22),
           absl::StrCat("AUDIT_KIND_RECALL BUSINESS_STATUS_AGREED ", kG22),
           absl::StrCat("AUDIT_KIND_RECALL DELIVERY_STATE_RECALLED ", kG22),
           absl::StrCat("AUDIT_KIND_RECALL BUSINESS_STATUS_REFUSED ",
                        kUnitH49)}))
      << testing::PrintToString(audited);
  // The recipient sees its own copy's story too.
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus own, unit->GetDocumentStatus(id));
  ASSERT_THAT(own.recipients(), SizeIs(1));
  EXPECT_EQ(own.recipients(0).delivery_state(), v1::DELIVERY_STATE_DELIVERED);
  EXPECT_EQ(own.recipients(0).business_status(), v1::BUSINESS_STATUS_REFUSED);
}

TEST_F(WorkflowsTest, RecalledCopyNotYetProcessedIsNeverDeliveredAfterRestart) {
  std::unique_ptr<Client> h49 = Open(kH49);
  std::unique_ptr<Client> g22 = Open(kG22);
  ASSERT_TRUE(h49 && g22);
  // Waiting, never handed out: an express recall withdraws it at once.
  ASSERT_OK_AND_ASSIGN(SendReceipt waiting,
                       h49->Send(NewDocument({kG22}, "Giấy mời họp")));
  // Handed out, not acknowledged: withdrawn when the recipient agrees.
  ASSERT_OK_AND_ASSIGN(SendReceipt in_flight,
                       h49->Send(NewDocument({kG22}, "Thông báo")));
  {
    // Takes both; acknowledges neither (a raw fetch with a long lease would
    // be the same; the SDK's Fetch leases them for 60 s).
    absl::StatusOr<std::vector<IncomingDocument>> got =
        g22->Fetch(1, absl::Milliseconds(500));
    ASSERT_OK(got);
    ASSERT_THAT(*got, SizeIs(1));
    EXPECT_EQ((*got)[0].document.id(), waiting.document_id);
  }
  // Now `waiting` is the one in flight: swap the names' roles accordingly.
  const std::string leased = waiting.document_id;
  const std::string queued = in_flight.document_id;
  ASSERT_OK_AND_ASSIGN(
      SendReceipt recall_queued,
      h49->Send(NewChangeRequest(queued, {kG22}, v1::BUSINESS_TYPE_RECALL,
                                 "Thu hồi thông báo")));
  ASSERT_OK_AND_ASSIGN(
      SendReceipt recall_leased,
      h49->Send(NewChangeRequest(leased, {kG22}, v1::BUSINESS_TYPE_RECALL,
                                 "Thu hồi giấy mời")));
  ASSERT_TRUE(Eventually(
      [&] {
        absl::StatusOr<v1::DocumentStatus> s = h49->GetDocumentStatus(queued);
        return s.ok() &&
               s->recipients(0).delivery_state() == v1::DELIVERY_STATE_RECALLED;
      },
      kWait));
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus queued_status,
                       h49->GetDocumentStatus(queued));
  EXPECT_THAT(queued_status.history(queued_status.history_size() - 1).reason(),
              HasSubstr("withdrawn before delivery"));
  EXPECT_THAT(g22->AnswerChangeRequest(queued, true),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("nothing to agree or refuse")));
  // The one in flight waits for the answer.
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus leased_status,
                       h49->GetDocumentStatus(leased));
  EXPECT_EQ(leased_status.recipients(0).delivery_state(),
            v1::DELIVERY_STATE_ACCEPTED);
  ASSERT_OK(g22->AnswerChangeRequest(leased, true));
  ASSERT_OK_AND_ASSIGN(leased_status, h49->GetDocumentStatus(leased));
  EXPECT_EQ(leased_status.recipients(0).delivery_state(),
            v1::DELIVERY_STATE_RECALLED);
  // Its late acknowledgement changes nothing.
  EXPECT_OK(g22->Ack({leased}));

  ASSERT_OK(broker_.Stop());
  ASSERT_OK(broker_.Start());
  std::unique_ptr<Client> g22_again = Open(kG22);
  ASSERT_TRUE(g22_again);
  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse inbox, g22_again->ListInbox(100));
  std::vector<std::string> listed;
  for (const v1::InboxEntry& e : inbox.entries())
    listed.push_back(e.document_id());
  EXPECT_THAT(listed, testing::UnorderedElementsAre(recall_queued.document_id,
                                                    recall_leased.document_id));
  std::vector<std::string> delivered;
  for (int i = 0; i < 5 && delivered.size() < 2; ++i) {
    for (const std::string& id : FetchIds(*g22_again, /*ack=*/true))
      delivered.push_back(id);
  }
  EXPECT_THAT(delivered,
              testing::UnorderedElementsAre(recall_queued.document_id,
                                            recall_leased.document_id));
  EXPECT_THAT(FetchIds(*g22_again, /*ack=*/true), IsEmpty());
  ASSERT_OK_AND_ASSIGN(leased_status, h49->GetDocumentStatus(leased));
  EXPECT_EQ(leased_status.recipients(0).delivery_state(),
            v1::DELIVERY_STATE_RECALLED);
}

TEST_F(WorkflowsTest, UpdateRefersToTheOldDocumentWhoseHistoryShowsIt) {
  std::unique_ptr<Client> h49 = Open(kH49);
  std::unique_ptr<Client> g22 = Open(kG22);
  ASSERT_TRUE(h49 && g22);
  ASSERT_OK_AND_ASSIGN(SendReceipt old_doc,
                       h49->Send(NewDocument({kG22}, "Kế hoạch năm 2027")));
  EXPECT_THAT(FetchIds(*g22, true), ElementsAre(old_doc.document_id));
  v1::Document update =
      NewChangeRequest(old_doc.document_id, {kG22}, v1::BUSINESS_TYPE_UPDATE,
                       "Kế hoạch năm 2027 (sửa đổi)");
  update.set_body("Nội dung sửa đổi");
  update.set_body_content_type("text/plain; charset=utf-8");
  ASSERT_OK_AND_ASSIGN(SendReceipt sent, h49->Send(update));
  absl::StatusOr<std::vector<IncomingDocument>> got =
      g22->Fetch(10, absl::Seconds(2));
  ASSERT_OK(got);
  ASSERT_THAT(*got, SizeIs(1));
  EXPECT_EQ((*got)[0].document.metadata().refers_to(), old_doc.document_id);
  EXPECT_EQ((*got)[0].document.metadata().business_type(),
            v1::BUSINESS_TYPE_UPDATE);
  ASSERT_OK(g22->Ack({sent.document_id}));
  ASSERT_OK(g22->AnswerChangeRequest(old_doc.document_id, true));
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status,
                       h49->GetDocumentStatus(old_doc.document_id));
  EXPECT_THAT(HistoryOf(status, kG22),
              ElementsAre("DELIVERY_STATE_ACCEPTED", "DELIVERY_STATE_DELIVERED",
                          "BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED",
                          "BUSINESS_STATUS_AGREED"));
  const v1::StatusEvent& last = status.history(status.history_size() - 1);
  EXPECT_EQ(last.related_document_id(), sent.document_id);
  EXPECT_THAT(last.reason(), HasSubstr("superseded by the update"));
  EXPECT_EQ(status.recipients(0).delivery_state(),
            v1::DELIVERY_STATE_DELIVERED);
  // A recall must name a document its sender sent to those recipients.
  EXPECT_THAT(
      g22->Send(NewChangeRequest(old_doc.document_id, {kH49},
                                 v1::BUSINESS_TYPE_RECALL, "Thu hồi")),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("metadata.refers_to")));
}

// An organization that calls operator or approver methods about someone
// else's document is refused and audited, but not into that document's
// evidence: otherwise anyone with a certificate could fill a document's
// evidence with refusals (until it no longer fits an answer).
TEST_F(WorkflowsTest, RefusedCallsOfStrangersStayOutOfADocumentsEvidence) {
  std::unique_ptr<Client> h49 = Open(kH49);
  ASSERT_TRUE(h49);
  ASSERT_OK_AND_ASSIGN(SendReceipt sent,
                       h49->Send(NewDocument({kG22}, "Quyết định nhân sự")));
  const std::string id = sent.document_id;
  const std::vector<std::string> before = AuditedSteps(*h49, id);
  ASSERT_FALSE(before.empty());

  std::shared_ptr<grpc::Channel> channel =
      RawChannel(broker_.endpoint(), absl::StrCat("orgs/", kH50));
  auto admin = v1::AdminService::NewStub(channel);
  auto approvals = v1::ApprovalService::NewStub(channel);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext c1;
    v1::GetDocumentRequest get;
    get.set_document_id(id);
    v1::GetDocumentResponse got;
    EXPECT_EQ(admin->GetDocument(&c1, get, &got).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    grpc::ClientContext c2;
    v1::DecideApprovalRequest decide;
    decide.set_document_id(id);
    decide.set_decision(v1::APPROVAL_DECISION_APPROVE);
    v1::DecideApprovalResponse decided;
    EXPECT_NE(approvals->DecideApproval(&c2, decide, &decided).error_code(),
              grpc::StatusCode::OK);
  }
  EXPECT_EQ(AuditedSteps(*h49, id), before);
}

TEST_F(WorkflowsTest, PaperConversionNeedsAReasonAPartyAndThePolicysLeave) {
  std::unique_ptr<Client> h49 = Open(kH49);
  std::unique_ptr<Client> g22 = Open(kG22);
  std::unique_ptr<Client> h50 = Open(kH50);
  ASSERT_TRUE(h49 && g22 && h50);
  WatchRecorder watch(h49.get(), "");
  ASSERT_OK_AND_ASSIGN(SendReceipt sent,
                       h49->Send(NewDocument({kG22}, "Báo cáo quý IV")));
  const std::string id = sent.document_id;

  EXPECT_THAT(g22->RecordPaperConversion(id, ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("reason: required")));
  EXPECT_THAT(h50->RecordPaperConversion(id, "In lưu"),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(auto nothing, g22->ListPaperConversions());
  EXPECT_THAT(nothing, IsEmpty());

  ASSERT_OK_AND_ASSIGN(
      v1::RecordPaperConversionResponse recorded,
      g22->RecordPaperConversion(id, "Trình ký bản giấy", "Trần Thị B"));
  EXPECT_EQ(recorded.conversion().org(), kG22);
  ASSERT_TRUE(watch.WaitFor([&](const v1::StatusEvent& e) {
    return e.document_id() == id && e.has_paper_conversion();
  }));
  EXPECT_THAT(AuditedSteps(*h49, id),
              testing::Contains(absl::StrCat(
                  "AUDIT_KIND_PAPER_CONVERSION PAPER_CONVERSION ", kG22)));
  ASSERT_OK_AND_ASSIGN(std::vector<v1::PaperConversion> mine,
                       g22->ListPaperConversions());
  ASSERT_THAT(mine, SizeIs(1));
  EXPECT_EQ(mine[0].reason(), "Trình ký bản giấy");
  EXPECT_EQ(mine[0].converted_by(), "Trần Thị B");
  EXPECT_EQ(mine[0].document_id(), id);

  // Operators and auditors see any organization's.
  std::unique_ptr<AdminClient> auditor = Admin("auditor");
  ASSERT_TRUE(auditor);
  ASSERT_OK_AND_ASSIGN(v1::ListPaperConversionsResponse listed,
                       auditor->ListPaperConversions(kG22, 0));
  ASSERT_THAT(listed.conversions(), SizeIs(1));
  EXPECT_EQ(listed.conversions(0).reason(), "Trình ký bản giấy");

  // The development policy keeps the centre's personnel decisions
  // electronic.
  v1::Document decision = NewDocument({kH49}, "Quyết định bổ nhiệm");
  decision.mutable_metadata()->set_decision_category(
      v1::DECISION_CATEGORY_PERSONNEL);
  ASSERT_OK_AND_ASSIGN(SendReceipt personnel, g22->Send(decision));
  EXPECT_THAT(
      h49->RecordPaperConversion(personnel.document_id, "In"),
      StatusIs(absl::StatusCode::kPermissionDenied,
               AllOf(HasSubstr("centre-personnel-decisions-stay-electronic"),
                     HasSubstr("paper_conversion_forbidden"))));
  ASSERT_OK_AND_ASSIGN(std::vector<v1::PaperConversion> h49_list,
                       h49->ListPaperConversions());
  EXPECT_THAT(h49_list, IsEmpty());
}

}  // namespace
}  // namespace lienthong::integration
