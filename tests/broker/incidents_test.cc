// Incidents, the paper-fallback register and re-digitization as operators
// and agencies rely on them, over the in-memory store with a real exchange.
#include "lienthong/broker/incidents.h"

#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/broker/audit.h"
#include "lienthong/broker/exchange.h"
#include "lienthong/common/clock.h"
#include "lienthong/common/identity.h"
#include "lienthong/common/ids.h"
#include "lienthong/signing/signing.h"
#include "lienthong/storage/store.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"

namespace lienthong::broker {
namespace {

using ::lienthong::testing_util::AsyncResult;
using ::lienthong::testing_util::Collector;
using ::lienthong::testing_util::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr char kBrokerId[] = "spiffe://lienthong.local/broker/central";
constexpr char kH49[] = "000.00.00.H49";
constexpr char kH50[] = "000.00.00.H50";
constexpr char kG22[] = "000.00.00.G22";

constexpr char kPolicy[] = R"(
groups:
  served: {orgs: [000.00.00.G22, 000.00.00.H49, 000.00.00.H50]}
rules:
  - name: served-orgs-exchange
    effect: permit
    sender: {groups: [served]}
    recipient: {groups: [served]}
)";

Principal Org(const std::string& code) {
  return *ParseSpiffeId(absl::StrCat("spiffe://lienthong.local/org/", code));
}
Principal Operator() {
  return *ParseSpiffeId("spiffe://lienthong.local/person/operator");
}

v1::DeclareIncidentRequest OrgsIncident(std::vector<std::string> orgs) {
  v1::DeclareIncidentRequest r;
  r.mutable_scope()->set_kind(v1::INCIDENT_SCOPE_KIND_ORGS);
  for (std::string& o : orgs) r.mutable_scope()->add_orgs(std::move(o));
  r.set_severity(v1::INCIDENT_SEVERITY_MAJOR);
  r.set_description("Mất kết nối mạng truyền số liệu chuyên dùng");
  return r;
}

v1::RecordPaperDocumentRequest PaperDocument(const std::string& party) {
  v1::RecordPaperDocumentRequest r;
  r.set_number("45");
  r.set_notation("CV-UBND");
  r.set_date("2027-03-02");
  r.add_parties(party);
  r.set_subject("Về việc báo cáo tình hình mưa lũ");
  return r;
}

// A document that re-digitizes `entry`, with its original issue date.
v1::Document Redigitized(const v1::PaperRegisterEntry& entry,
                         const std::string& sender,
                         const std::string& recipient) {
  v1::Document doc;
  doc.set_sender(sender);
  doc.add_recipients(recipient);
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_subject(entry.subject());
  m->set_number(entry.number());
  m->set_notation(entry.notation());
  m->set_issue_date(entry.date());
  m->mutable_redigitized()->set_register_entry_id(entry.id());
  m->mutable_redigitized()->set_incident_id(entry.incident_id());
  m->mutable_redigitized()->set_paper_date(entry.date());
  doc.set_body("Nội dung văn bản giấy, số hóa lại");
  doc.set_body_content_type("text/plain; charset=utf-8");
  return doc;
}

// One Receive stream's notices.
struct NoticeReceiver {
  std::shared_ptr<ReceiveSession> session;
  Collector<v1::Notice> notices;
};

class IncidentsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = storage::NewMemoryStore();
    policy::ServedPolicyOptions policy_options;
    policy_options.embedded_source = kPolicy;
    ASSERT_OK_AND_ASSIGN(policy_, policy::ServedPolicy::Open(policy_options));
    ASSERT_NO_FATAL_FAILURE(OpenAll());
  }

  void TearDown() override {
    for (NoticeReceiver& r : receivers_) r.session->Close();
    receivers_.clear();
    exchange_.reset();
    incidents_.reset();
  }

  void OpenAll() {
    IncidentOptions io;
    io.broker_id = kBrokerId;
    io.local_orgs = {kG22, kH49, kH50};
    io.peers = {"h51"};
    ASSERT_OK_AND_ASSIGN(incidents_,
                         Incidents::Open(io, store_.get(), &clock_));
    ExchangeOptions eo;
    eo.broker_id = kBrokerId;
    eo.local_orgs = io.local_orgs;
    eo.policy = policy_.get();
    eo.admission = incidents_.get();
    eo.notices_on_connect = [i = incidents_.get()](const std::string& org) {
      return i->OpenNotices(org);
    };
    ASSERT_OK_AND_ASSIGN(exchange_, Exchange::Open(eo, store_.get(), &clock_));
    incidents_->SetNoticeSink(
        [e = exchange_.get()](const std::string& org, const v1::Notice& n) {
          return e->Notify(org, n);
        });
  }

  // Stops both and opens them again on the same store.
  void Restart() {
    TearDown();
    ASSERT_NO_FATAL_FAILURE(OpenAll());
  }

  NoticeReceiver& Listen(const std::string& org) {
    NoticeReceiver& r = receivers_.emplace_back();
    Collector<v1::Notice> notices = r.notices;
    absl::StatusOr<std::shared_ptr<ReceiveSession>> s = exchange_->OpenReceive(
        Org(org), 16, [notices](v1::ReceiveResponse response) {
          for (v1::Notice& n : *response.mutable_notices())
            notices.Add(std::move(n));
        });
    EXPECT_OK(s);
    r.session = *std::move(s);
    return r;
  }

  absl::StatusOr<v1::SendResponse> Send(const Principal& caller,
                                        v1::Document doc) {
    AsyncResult<v1::SendResponse> result;
    exchange_->Send(caller, std::move(doc), result.Callback());
    return result.Wait();
  }

  v1::ReconciliationReport Report(const std::string& org) {
    absl::StatusOr<v1::ReconciliationReport> r =
        incidents_->Report(Org(org), {}, false);
    EXPECT_OK(r);
    return r.value_or(v1::ReconciliationReport{});
  }

  size_t RegisterSize() {
    absl::StatusOr<v1::ListPaperRegisterResponse> r =
        incidents_->ListRegister(Operator(), {}, true);
    EXPECT_OK(r);
    return r.ok() ? r->entries_size() : 0;
  }

  FakeClock clock_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<policy::ServedPolicy> policy_;
  std::unique_ptr<Incidents> incidents_;
  std::unique_ptr<Exchange> exchange_;
  std::deque<NoticeReceiver> receivers_;  // stable references
};

TEST_F(IncidentsTest, BadDeclarationsAreRefusedPreciselyAndChangeNothing) {
  v1::DeclareIncidentRequest r = OrgsIncident({kH49});
  r.mutable_scope()->set_kind(v1::INCIDENT_SCOPE_KIND_UNSPECIFIED);
  EXPECT_THAT(
      incidents_->Declare(Operator(), r),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scope.kind")));
  EXPECT_THAT(
      incidents_->Declare(Operator(), OrgsIncident({kH49, "49.H"})),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scope.orgs[1]")));
  r = OrgsIncident({kH49});
  r.clear_description();
  EXPECT_THAT(
      incidents_->Declare(Operator(), r),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("description")));
  r = OrgsIncident({kH49});
  r.clear_severity();
  EXPECT_THAT(
      incidents_->Declare(Operator(), r),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("severity")));
  r = OrgsIncident({});
  r.mutable_scope()->set_kind(v1::INCIDENT_SCOPE_KIND_PEER_LINK);
  r.mutable_scope()->set_peer("nowhere");
  EXPECT_THAT(
      incidents_->Declare(Operator(), r),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scope.peer")));
  EXPECT_THAT(
      incidents_->Resolve(Operator(), {}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("incident_id")));
  v1::ResolveIncidentRequest unknown;
  unknown.set_incident_id("INC-01ARZ3NDEKTSV4RRFFQ69G5FAV");
  EXPECT_THAT(incidents_->Resolve(Operator(), unknown),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(v1::ListIncidentsResponse all,
                       incidents_->List(Operator(), {}, true));
  EXPECT_THAT(all.incidents(), IsEmpty());
}

TEST_F(IncidentsTest, NoticeReachesAffectedAgenciesOnlyAndNewStreams) {
  NoticeReceiver& h49 = Listen(kH49);
  NoticeReceiver& h50 = Listen(kH50);
  ASSERT_OK_AND_ASSIGN(v1::Incident incident,
                       incidents_->Declare(Operator(), OrgsIncident({kH49})));
  EXPECT_THAT(incident.affected_orgs(), ElementsAre(kH49));
  ASSERT_TRUE(h49.notices.WaitForCount(1));
  v1::Notice n = h49.notices.items()[0];
  EXPECT_EQ(n.kind(), v1::NOTICE_KIND_INCIDENT_DECLARED);
  EXPECT_EQ(n.incident().id(), incident.id());
  EXPECT_EQ(h50.notices.CountAfter(), 0u);

  // A stream opened while it is open hears of it at once.
  NoticeReceiver& late = Listen(kH49);
  ASSERT_TRUE(late.notices.WaitForCount(1));
  EXPECT_EQ(late.notices.items()[0].incident().id(), incident.id());

  v1::ResolveIncidentRequest resolve;
  resolve.set_incident_id(incident.id());
  resolve.set_resolution("Đã khôi phục đường truyền");
  ASSERT_OK_AND_ASSIGN(v1::Incident resolved,
                       incidents_->Resolve(Operator(), resolve));
  EXPECT_TRUE(resolved.resolved());
  ASSERT_TRUE(h49.notices.WaitForCount(2));
  EXPECT_EQ(h49.notices.items()[1].kind(), v1::NOTICE_KIND_INCIDENT_RESOLVED);
  EXPECT_EQ(h50.notices.CountAfter(), 0u);
  EXPECT_THAT(incidents_->Resolve(Operator(), resolve),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("resolved already")));
}

TEST_F(IncidentsTest, BrokerScopeCoversEveryServedOrganization) {
  v1::DeclareIncidentRequest r;
  r.mutable_scope()->set_kind(v1::INCIDENT_SCOPE_KIND_BROKER);
  r.set_severity(v1::INCIDENT_SEVERITY_CRITICAL);
  r.set_description("Máy chủ trục liên thông ngừng hoạt động");
  ASSERT_OK_AND_ASSIGN(v1::Incident incident,
                       incidents_->Declare(Operator(), r));
  EXPECT_THAT(incident.affected_orgs(), SizeIs(3));
  EXPECT_OK(incidents_->RecordPaper(Org(kG22), PaperDocument(kH49)));
}

TEST_F(IncidentsTest, PaperIsRecordedOnlyDuringAnIncidentCoveringTheOrg) {
  EXPECT_THAT(incidents_->RecordPaper(Org(kH49), PaperDocument(kH50)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("no open incident covers")));
  ASSERT_OK_AND_ASSIGN(v1::Incident incident,
                       incidents_->Declare(Operator(), OrgsIncident({kH49})));
  EXPECT_THAT(incidents_->RecordPaper(Org(kH50), PaperDocument(kH49)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK_AND_ASSIGN(v1::PaperRegisterEntry entry,
                       incidents_->RecordPaper(Org(kH49), PaperDocument(kH50)));
  EXPECT_EQ(entry.incident_id(), incident.id());
  EXPECT_EQ(entry.org(), kH49);
  v1::ResolveIncidentRequest resolve;
  resolve.set_incident_id(incident.id());
  ASSERT_OK(incidents_->Resolve(Operator(), resolve).status());
  EXPECT_THAT(incidents_->RecordPaper(Org(kH49), PaperDocument(kH50)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(RegisterSize(), 1u);
}

TEST_F(IncidentsTest, BadRegisterInputIsRefusedAndChangesNothing) {
  ASSERT_OK(incidents_->Declare(Operator(), OrgsIncident({kH49})).status());
  v1::RecordPaperDocumentRequest r = PaperDocument(kH50);
  r.clear_subject();
  EXPECT_THAT(
      incidents_->RecordPaper(Org(kH49), r),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("subject")));
  r = PaperDocument("H50");
  EXPECT_THAT(
      incidents_->RecordPaper(Org(kH49), r),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("parties[0]")));
  r = PaperDocument(kH50);
  r.set_date("2/3/2027");
  EXPECT_THAT(incidents_->RecordPaper(Org(kH49), r),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("date")));
  r = PaperDocument(kH50);
  r.set_incident_id("INC-01ARZ3NDEKTSV4RRFFQ69G5FAV");
  EXPECT_THAT(incidents_->RecordPaper(Org(kH49), r),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("incident_id")));
  EXPECT_THAT(incidents_->RecordPaper(Operator(), PaperDocument(kH50)),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ(RegisterSize(), 0u);
  // Agencies see only their own register.
  v1::ListPaperRegisterRequest other;
  other.set_org(kH50);
  EXPECT_THAT(incidents_->ListRegister(Org(kH49), other, false),
              StatusIs(absl::StatusCode::kPermissionDenied));
  other.set_org("bad");
  EXPECT_THAT(incidents_->ListRegister(Operator(), other, true),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("org")));
}

TEST_F(IncidentsTest, RedigitizationSettlesEntriesAtomicallyAndOnce) {
  ASSERT_OK(incidents_->Declare(Operator(), OrgsIncident({kH49})).status());
  ASSERT_OK_AND_ASSIGN(v1::PaperRegisterEntry first,
                       incidents_->RecordPaper(Org(kH49), PaperDocument(kH50)));
  ASSERT_OK_AND_ASSIGN(v1::PaperRegisterEntry second,
                       incidents_->RecordPaper(Org(kH49), PaperDocument(kG22)));
  v1::ReconciliationReport report = Report(kH49);
  EXPECT_EQ(report.total_outstanding(), 2u);
  EXPECT_FALSE(report.reconciled());

  // Refusals store nothing and settle nothing.
  v1::Document stranger = Redigitized(first, kH50, kH49);
  EXPECT_THAT(Send(Org(kH50), stranger),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("recorded by organization 000.00.00.H49")));
  v1::Document wrong_date = Redigitized(first, kH49, kH50);
  wrong_date.mutable_metadata()->mutable_redigitized()->set_paper_date(
      "2027-03-03");
  EXPECT_THAT(
      Send(Org(kH49), wrong_date),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("paper_date")));
  v1::Document unknown = Redigitized(first, kH49, kH50);
  unknown.mutable_metadata()->mutable_redigitized()->set_register_entry_id(
      "PR-01ARZ3NDEKTSV4RRFFQ69G5FAV");
  EXPECT_THAT(
      Send(Org(kH49), unknown),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("register_entry_id")));
  EXPECT_EQ(exchange_->Stats().accepted, 0u);
  EXPECT_EQ(Report(kH49).total_outstanding(), 2u);

  v1::Document doc = Redigitized(first, kH49, kH50);
  doc.set_idempotency_key("redigitize-1");
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent, Send(Org(kH49), doc));
  EXPECT_FALSE(sent.duplicate());
  // The same document again is the same document, not a second settlement.
  ASSERT_OK_AND_ASSIGN(v1::SendResponse again, Send(Org(kH49), doc));
  EXPECT_TRUE(again.duplicate());
  EXPECT_EQ(again.document_id(), sent.document_id());
  // Another document for the same entry is refused.
  v1::Document twice = Redigitized(first, kH49, kH50);
  twice.set_idempotency_key("redigitize-2");
  EXPECT_THAT(Send(Org(kH49), twice),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr(sent.document_id())));
  report = Report(kH49);
  EXPECT_EQ(report.total_outstanding(), 1u);
  ASSERT_THAT(report.rows(), SizeIs(1));
  EXPECT_EQ(report.rows(0).outstanding_entries(0).id(), second.id());

  ASSERT_OK(Send(Org(kH49), Redigitized(second, kH49, kG22)).status());
  EXPECT_TRUE(Report(kH49).reconciled());
  EXPECT_EQ(exchange_->Stats().accepted, 2u);

  // Settled for good: the state survives a restart.
  ASSERT_NO_FATAL_FAILURE(Restart());
  report = Report(kH49);
  EXPECT_TRUE(report.reconciled());
  ASSERT_THAT(report.rows(), SizeIs(1));
  EXPECT_EQ(report.rows(0).redigitized(), 2u);
  ASSERT_OK_AND_ASSIGN(v1::ListPaperRegisterResponse entries,
                       incidents_->ListRegister(Org(kH49), {}, false));
  ASSERT_THAT(entries.entries(), SizeIs(2));
  for (const v1::PaperRegisterEntry& e : entries.entries()) {
    if (e.id() == first.id()) {
      EXPECT_EQ(e.settled_by_document(), sent.document_id());
    }
  }
  EXPECT_THAT(Send(Org(kH49), twice),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(IncidentsTest, PeersIncidentsAreRecordedShownAndNotified) {
  NoticeReceiver& h49 = Listen(kH49);
  NoticeReceiver& h50 = Listen(kH50);
  v1::Incident remote;
  remote.set_id("INC-01ARZ3NDEKTSV4RRFFQ69G5FAV");
  remote.set_broker("h51");
  remote.mutable_scope()->set_kind(v1::INCIDENT_SCOPE_KIND_ORGS);
  remote.mutable_scope()->add_orgs(kH49);
  remote.mutable_scope()->add_orgs("000.00.00.H51");
  remote.set_severity(v1::INCIDENT_SEVERITY_MAJOR);
  remote.set_description("Sự cố tại trục tỉnh H51");
  v1::IncidentAnnouncement announcement;
  *announcement.add_incidents() = remote;
  // Only the declaring broker speaks for its incidents.
  incidents_->LearnFromPeer("h52", announcement);
  incidents_->LearnFromPeer("h51", announcement);
  incidents_->LearnFromPeer("h51", announcement);  // nothing new
  ASSERT_TRUE(h49.notices.WaitForCount(1));
  EXPECT_EQ(h49.notices.CountAfter(), 1u);
  EXPECT_EQ(h50.notices.size(), 0u);
  ASSERT_OK_AND_ASSIGN(v1::ListIncidentsResponse shown,
                       incidents_->List(Operator(), {}, true));
  ASSERT_THAT(shown.incidents(), SizeIs(1));
  EXPECT_EQ(shown.incidents(0).broker(), "h51");
  EXPECT_THAT(shown.incidents(0).affected_orgs(), ElementsAre(kH49));
  EXPECT_THAT(incidents_->Announcement().incidents(), IsEmpty());
  v1::ResolveIncidentRequest resolve;
  resolve.set_incident_id(remote.id());
  EXPECT_THAT(incidents_->Resolve(Operator(), resolve),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("declared at broker h51")));
  EXPECT_OK(incidents_->RecordPaper(Org(kH49), PaperDocument(kH50)));

  announcement.mutable_incidents(0)->set_resolved(true);
  announcement.mutable_incidents(0)->set_resolution("Đã khắc phục");
  incidents_->LearnFromPeer("h51", announcement);
  ASSERT_TRUE(h49.notices.WaitForCount(2));
  EXPECT_EQ(h49.notices.items()[1].kind(), v1::NOTICE_KIND_INCIDENT_RESOLVED);
}

TEST_F(IncidentsTest, APeersIncidentsBeyondItsLimitAreNotRecorded) {
  // A peer announcing ever new incidents (declared and resolved at once,
  // so none stays open) does not fill this broker: past the limit new ones
  // are not recorded, and known ones still change.
  IncidentOptions io;
  io.broker_id = kBrokerId;
  io.local_orgs = {kG22, kH49, kH50};
  io.peers = {"h51"};
  io.max_incidents_per_peer = 3;
  incidents_.reset();
  ASSERT_OK_AND_ASSIGN(incidents_, Incidents::Open(io, store_.get(), &clock_));
  std::vector<std::string> ids;
  for (int n = 0; n < 5; ++n)
    ids.push_back(absl::StrCat("INC-", NewDocumentId(1700000000000 + n)));
  auto announce = [&](int n, bool resolved) {
    v1::Incident i;
    i.set_id(ids[n]);
    i.set_broker("h51");
    i.mutable_scope()->set_kind(v1::INCIDENT_SCOPE_KIND_ORGS);
    i.mutable_scope()->add_orgs(kH49);
    i.set_severity(v1::INCIDENT_SEVERITY_MINOR);
    i.set_description(absl::StrCat("sự cố ", n));
    i.set_resolved(resolved);
    v1::IncidentAnnouncement a;
    *a.add_incidents() = i;
    incidents_->LearnFromPeer("h51", a);
    return i.id();
  };
  auto shown = [&] {
    absl::StatusOr<v1::ListIncidentsResponse> r =
        incidents_->List(Operator(), {}, true);
    EXPECT_OK(r);
    std::set<std::string> ids;
    if (r.ok())
      for (const v1::Incident& i : r->incidents())
        ids.insert(absl::StrCat(i.id(), i.resolved() ? " resolved" : ""));
    return ids;
  };
  const std::string first = announce(0, false);
  const std::string second = announce(1, true);
  const std::string third = announce(2, true);
  const std::string fourth = announce(3, false);
  EXPECT_THAT(shown(),
              ElementsAre(first, second + " resolved", third + " resolved"));
  // A known one is still heard.
  announce(0, true);
  EXPECT_THAT(shown(), ElementsAre(first + " resolved", second + " resolved",
                                   third + " resolved"));
  // After a restart the count holds: the store has three of h51's.
  incidents_.reset();
  ASSERT_OK_AND_ASSIGN(incidents_, Incidents::Open(io, store_.get(), &clock_));
  announce(4, false);
  EXPECT_THAT(shown(), SizeIs(3));
  (void)fourth;
}

// A peer that announces one of our incidents (or a third broker's) back,
// as its own and resolved, changes nothing: only the declaring broker's
// word counts, also for an incident already known.
TEST_F(IncidentsTest, PeerCannotTakeOverOrResolveAnotherBrokersIncident) {
  NoticeReceiver& h49 = Listen(kH49);
  ASSERT_OK_AND_ASSIGN(v1::Incident ours,
                       incidents_->Declare(Operator(), OrgsIncident({kH49})));
  ASSERT_TRUE(h49.notices.WaitForCount(1));
  v1::Incident taken = ours;
  taken.set_broker("h51");
  taken.set_resolved(true);
  taken.set_resolution("không có sự cố");
  v1::IncidentAnnouncement announcement;
  *announcement.add_incidents() = taken;
  incidents_->LearnFromPeer("h51", announcement);
  EXPECT_EQ(h49.notices.CountAfter(), 1u);
  ASSERT_OK_AND_ASSIGN(v1::ListIncidentsResponse shown,
                       incidents_->List(Operator(), {}, true));
  ASSERT_THAT(shown.incidents(), SizeIs(1));
  EXPECT_EQ(shown.incidents(0).broker(), ours.broker());
  EXPECT_FALSE(shown.incidents(0).resolved());
  ASSERT_THAT(incidents_->Announcement().incidents(), SizeIs(1));
  EXPECT_FALSE(incidents_->Announcement().incidents(0).resolved());
}

TEST_F(IncidentsTest, OwnIncidentsAreAnnouncedOpenAndRecentlyResolved) {
  uint64_t before = incidents_->generation();
  ASSERT_OK_AND_ASSIGN(v1::Incident incident,
                       incidents_->Declare(Operator(), OrgsIncident({kH49})));
  EXPECT_GT(incidents_->generation(), before);
  ASSERT_THAT(incidents_->Announcement().incidents(), SizeIs(1));
  v1::ResolveIncidentRequest resolve;
  resolve.set_incident_id(incident.id());
  ASSERT_OK(incidents_->Resolve(Operator(), resolve).status());
  ASSERT_THAT(incidents_->Announcement().incidents(), SizeIs(1));
  EXPECT_TRUE(incidents_->Announcement().incidents(0).resolved());
  clock_.Advance(absl::Hours(25));
  EXPECT_THAT(incidents_->Announcement().incidents(), IsEmpty());
}

TEST(RedigitizedMarkTest, TheSendersSignatureCoversTheMark) {
  v1::PaperRegisterEntry entry;
  entry.set_id("PR-01ARZ3NDEKTSV4RRFFQ69G5FAV");
  entry.set_incident_id("INC-01ARZ3NDEKTSV4RRFFQ69G5FAV");
  entry.set_date("2027-03-02");
  entry.set_subject("Công văn giấy");
  v1::Document marked = Redigitized(entry, kH49, kH50);
  v1::Document plain = marked;
  plain.mutable_metadata()->clear_redigitized();
  v1::Document altered = marked;
  altered.mutable_metadata()->mutable_redigitized()->set_register_entry_id(
      "PR-01ARZ3NDEKTSV4RRFFQ69G5FAW");
  EXPECT_NE(signing::DocumentDigest(marked), signing::DocumentDigest(plain));
  EXPECT_NE(signing::DocumentDigest(marked), signing::DocumentDigest(altered));
}

}  // namespace
}  // namespace lienthong::broker
