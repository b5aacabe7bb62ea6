// Incidents, the paper-fallback register and re-digitization with real
// lienthongd processes over mutual TLS on loopback: operators declare and
// resolve through IncidentService (as grpcurl would), agencies hear of it
// on their Receive streams, keep their paper register through the SDK and
// the `lienthong` CLI, and re-digitize through the normal send path.
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/admin_client.h"
#include "lienthong/client.h"
#include "lienthong/v1/audit.pb.h"
#include "lienthong/v1/incidents.grpc.pb.h"
#include "tests/integration/broker_process.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::integration {
namespace {

using ::lienthong::testing_util::Collector;
using ::lienthong::testing_util::Eventually;
using ::lienthong::testing_util::StatusIs;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr absl::Duration kWait = absl::Seconds(20);
constexpr char kRoles[] = "roles: {operator: [operator], auditor: [auditor]}\n";

// An IncidentService stub presenting a dev PKI identity ("persons/operator",
// "orgs/<code>"): what grpcurl does with -cert/-key.
std::unique_ptr<v1::IncidentService::Stub> IncidentStub(
    const std::string& endpoint, const std::string& identity) {
  return v1::IncidentService::NewStub(RawChannel(endpoint, identity));
}

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

absl::StatusOr<v1::Incident> Declare(v1::IncidentService::Stub& stub,
                                     const v1::DeclareIncidentRequest& r) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::Incident out;
  grpc::Status s = stub.DeclareIncident(&ctx, r, &out);
  if (!s.ok()) return FromGrpc(s);
  return out;
}

absl::StatusOr<v1::Incident> Resolve(v1::IncidentService::Stub& stub,
                                     const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::ResolveIncidentRequest r;
  r.set_incident_id(id);
  r.set_resolution("Đường truyền đã được khôi phục");
  v1::Incident out;
  grpc::Status s = stub.ResolveIncident(&ctx, r, &out);
  if (!s.ok()) return FromGrpc(s);
  return out;
}

absl::StatusOr<v1::ListIncidentsResponse> ListIncidents(
    v1::IncidentService::Stub& stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::ListIncidentsResponse out;
  grpc::Status s = stub.ListIncidents(&ctx, {}, &out);
  if (!s.ok()) return FromGrpc(s);
  return out;
}

v1::DeclareIncidentRequest OrgsIncident(const std::vector<std::string>& orgs) {
  v1::DeclareIncidentRequest r;
  r.mutable_scope()->set_kind(v1::INCIDENT_SCOPE_KIND_ORGS);
  for (const std::string& o : orgs) r.mutable_scope()->add_orgs(o);
  r.set_severity(v1::INCIDENT_SEVERITY_CRITICAL);
  r.set_description("Mất kết nối trục liên thông");
  return r;
}

v1::RecordPaperDocumentRequest PaperDocument(const std::string& party,
                                             const std::string& number) {
  v1::RecordPaperDocumentRequest r;
  r.set_number(number);
  r.set_notation("CV-UBND");
  r.set_date("2027-03-02");
  r.add_parties(party);
  r.set_subject(absl::StrCat("Công văn giấy số ", number));
  return r;
}

v1::Document NewDocument(const std::string& to, const std::string& subject) {
  v1::Document doc;
  doc.add_recipients(to);
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_subject(subject);
  m->set_document_type("Công văn");
  doc.set_body("Kính gửi ...");
  doc.set_body_content_type("text/plain; charset=utf-8");
  return doc;
}

// The electronic form of a register entry: its number, notation and
// original date, and the mark naming the entry.
v1::Document RedigitizedDocument(const v1::PaperRegisterEntry& entry,
                                 const std::string& to) {
  v1::Document doc = NewDocument(to, entry.subject());
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_number(entry.number());
  m->set_notation(entry.notation());
  m->set_issue_date(entry.date());
  *m->mutable_redigitized() = RedigitizedMark(entry);
  return doc;
}

// An agency's client with its Receive stream open: notices with the time
// they arrived, and the documents handed over.
class Agency {
 public:
  Agency(const ClientOptions& options) {
    absl::StatusOr<std::unique_ptr<Client>> c = Client::Open(options);
    EXPECT_OK(c);
    if (!c.ok()) return;
    client_ = *std::move(c);
    ReceiveOptions ro;
    ro.on_notice = [notices = notices_, times = times_](const v1::Notice& n) {
      times.Add(absl::Now());
      notices.Add(n);
    };
    absl::StatusOr<std::unique_ptr<ReceiveSession>> s = client_->Receive(
        [docs = documents_](const IncomingDocument& d) {
          docs.Add(d.document);
          return absl::OkStatus();
        },
        ro);
    EXPECT_OK(s);
    if (s.ok()) session_ = *std::move(s);
  }
  ~Agency() {
    if (session_) session_->Stop();
  }

  Client& client() { return *client_; }
  Collector<v1::Notice> notices_;
  Collector<absl::Time> times_;
  Collector<v1::Document> documents_;

  // Sends a document to `to` (another Agency) and waits until it has it:
  // then both streams are surely open at the broker.
  bool Warm(Agency& to, const std::string& to_org) {
    size_t before = to.documents_.size();
    absl::StatusOr<SendReceipt> r =
        client_->Send(NewDocument(to_org, "Kiểm tra kết nối"));
    EXPECT_OK(r);
    return r.ok() && to.documents_.WaitForCount(before + 1, kWait);
  }

 private:
  std::unique_ptr<Client> client_;
  std::unique_ptr<ReceiveSession> session_;
};

class IncidentsTest : public ::testing::Test {
 protected:
  IncidentsTest() : broker_(Options()) {}
  static BrokerOptions Options() {
    BrokerOptions o;
    o.config_yaml = kRoles;
    return o;
  }
  void SetUp() override {
    ASSERT_OK(broker_.Start());
    ASSERT_OK_AND_ASSIGN(pki_, DevPkiDir());
    operator_ = IncidentStub(broker_.endpoint(), "persons/operator");
  }
  void TearDown() override { EXPECT_OK(broker_.Stop()); }

  std::unique_ptr<AdminClient> Admin(const std::string& person) {
    ClientOptions o = broker_.ClientOptionsFor(kH49);
    o.certificate_file = absl::StrCat(pki_, "/persons/", person, ".pem");
    o.private_key_file = absl::StrCat(pki_, "/persons/", person, ".key");
    absl::StatusOr<std::unique_ptr<AdminClient>> admin = AdminClient::Open(o);
    EXPECT_OK(admin);
    return admin.ok() ? *std::move(admin) : nullptr;
  }

  // Every audit entry's action, from the operator's export.
  std::vector<std::string> AuditActions() {
    std::vector<std::string> actions;
    std::unique_ptr<AdminClient> admin = Admin("auditor");
    if (!admin) return actions;
    v1::ExportAuditRequest r;
    for (int page = 0; page < 100; ++page) {
      absl::StatusOr<v1::ExportAuditResponse> got = admin->ExportAudit(r);
      EXPECT_OK(got);
      if (!got.ok()) break;
      for (const v1::StoredAuditEntry& s : got->entries()) {
        v1::AuditEntry e;
        if (e.ParseFromString(s.entry()))
          actions.push_back(absl::StrCat(e.action(), " ", e.outcome()));
      }
      if (got->next_after_index() == 0) break;
      r.set_after_index(got->next_after_index());
      r.set_through(got->through());
    }
    return actions;
  }

  ProgramResult Cli(const std::string& org,
                    const std::vector<std::string>& args) {
    return Run(absl::StrCat("orgs/", org), args);
  }
  // `identity`: a dev PKI path without ".pem", e.g. "persons/operator".
  ProgramResult Run(const std::string& identity,
                    const std::vector<std::string>& args) {
    std::vector<std::string> argv = {LIENTHONG_CLI_PATH,
                                     "--endpoint",
                                     broker_.endpoint(),
                                     "--cert",
                                     absl::StrCat(pki_, "/", identity, ".pem"),
                                     "--key",
                                     absl::StrCat(pki_, "/", identity, ".key"),
                                     "--ca",
                                     absl::StrCat(pki_, "/ca.pem")};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<ProgramResult> r = RunProgram(argv, absl::Seconds(60));
    EXPECT_OK(r);
    return r.value_or(ProgramResult{});
  }

  BrokerProcess broker_;
  std::string pki_;
  std::unique_ptr<v1::IncidentService::Stub> operator_;
};

TEST_F(IncidentsTest, NoticeReachesConnectedAffectedAgenciesWithinASecond) {
  Agency h49(broker_.ClientOptionsFor(kH49));
  Agency g22(broker_.ClientOptionsFor(kG22));
  Agency h50(broker_.ClientOptionsFor(kH50));
  ASSERT_TRUE(h50.Warm(h49, kH49));
  ASSERT_TRUE(h49.Warm(g22, kG22));
  ASSERT_TRUE(g22.Warm(h50, kH50));

  // Only operators declare.
  auto as_org = IncidentStub(broker_.endpoint(), absl::StrCat("orgs/", kH49));
  EXPECT_THAT(Declare(*as_org, OrgsIncident({kH49})),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("operator role")));
  auto as_auditor = IncidentStub(broker_.endpoint(), "persons/auditor");
  EXPECT_THAT(Declare(*as_auditor, OrgsIncident({kH49})),
              StatusIs(absl::StatusCode::kPermissionDenied));

  const absl::Time declared = absl::Now();
  ASSERT_OK_AND_ASSIGN(v1::Incident incident,
                       Declare(*operator_, OrgsIncident({kH49, kG22})));
  ASSERT_TRUE(h49.notices_.WaitForCount(1, kWait));
  ASSERT_TRUE(g22.notices_.WaitForCount(1, kWait));
  for (Agency* a : {&h49, &g22}) {
    EXPECT_LT(a->times_.items()[0] - declared, absl::Seconds(1));
    v1::Notice n = a->notices_.items()[0];
    EXPECT_EQ(n.kind(), v1::NOTICE_KIND_INCIDENT_DECLARED);
    EXPECT_EQ(n.incident().id(), incident.id());
    EXPECT_EQ(n.incident().description(), "Mất kết nối trục liên thông");
  }
  EXPECT_EQ(h50.notices_.CountAfter(absl::Seconds(1)), 0u);

  // Admin and health show it.
  std::unique_ptr<AdminClient> admin = Admin("auditor");
  ASSERT_NE(admin, nullptr);
  ASSERT_OK_AND_ASSIGN(v1::GetBrokerInfoResponse info, admin->GetBrokerInfo());
  ASSERT_THAT(info.open_incidents(), SizeIs(1));
  EXPECT_EQ(info.open_incidents(0).id(), incident.id());
  ASSERT_OK_AND_ASSIGN(v1::ListIncidentsResponse listed,
                       ListIncidents(*as_auditor));
  ASSERT_THAT(listed.incidents(), SizeIs(1));
  // An agency sees the incidents that affect it.
  EXPECT_THAT(h49.client().ListIncidents(true),
              testing_util::IsOkAndHolds(::testing::Property(
                  &v1::ListIncidentsResponse::incidents_size, 1)));
  EXPECT_THAT(h50.client().ListIncidents(true),
              testing_util::IsOkAndHolds(::testing::Property(
                  &v1::ListIncidentsResponse::incidents_size, 0)));

  // A stream that connects while it is open hears of it on connecting.
  {
    Agency late(broker_.ClientOptionsFor(kH49));
    ASSERT_TRUE(late.notices_.WaitForCount(1, kWait));
    EXPECT_EQ(late.notices_.items()[0].incident().id(), incident.id());
  }

  ASSERT_OK_AND_ASSIGN(v1::Incident resolved,
                       Resolve(*operator_, incident.id()));
  EXPECT_TRUE(resolved.resolved());
  ASSERT_TRUE(h49.notices_.WaitForCount(2, kWait));
  ASSERT_TRUE(g22.notices_.WaitForCount(2, kWait));
  EXPECT_EQ(h49.notices_.items()[1].kind(), v1::NOTICE_KIND_INCIDENT_RESOLVED);
  EXPECT_EQ(h50.notices_.size(), 0u);
  ASSERT_OK_AND_ASSIGN(info, admin->GetBrokerInfo());
  EXPECT_THAT(info.open_incidents(), SizeIs(0));

  std::vector<std::string> audit = AuditActions();
  EXPECT_THAT(audit, Contains("IncidentService/DeclareIncident OK"));
  EXPECT_THAT(audit,
              Contains("IncidentService/DeclareIncident PERMISSION_DENIED"));
  EXPECT_THAT(audit, Contains("Notice/NOTICE_KIND_INCIDENT_DECLARED OK"));
  EXPECT_THAT(audit, Contains("IncidentService/ResolveIncident OK"));
  EXPECT_THAT(audit, Contains("Notice/NOTICE_KIND_INCIDENT_RESOLVED OK"));
}

TEST_F(IncidentsTest, PaperRegisterIsReconciledByRedigitization) {
  Agency h49(broker_.ClientOptionsFor(kH49));
  Agency h50(broker_.ClientOptionsFor(kH50));
  // No incident: nothing may be recorded, with a clear reason.
  EXPECT_THAT(h49.client().RecordPaperDocument(PaperDocument(kH50, "1")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("no open incident covers organization "
                                 "000.00.00.H49")));

  ASSERT_OK_AND_ASSIGN(v1::Incident incident,
                       Declare(*operator_, OrgsIncident({kH49})));
  // H50 is not covered.
  EXPECT_THAT(h50.client().RecordPaperDocument(PaperDocument(kH49, "1")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK_AND_ASSIGN(
      v1::PaperRegisterEntry first,
      h49.client().RecordPaperDocument(PaperDocument(kH50, "1")));
  EXPECT_EQ(first.incident_id(), incident.id());
  // Bad input: a precise error, nothing recorded.
  v1::RecordPaperDocumentRequest bad = PaperDocument(kH50, "2");
  bad.clear_subject();
  EXPECT_THAT(
      h49.client().RecordPaperDocument(bad),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("subject")));
  bad = PaperDocument("000.00.H50", "2");
  EXPECT_THAT(
      h49.client().RecordPaperDocument(bad),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("parties[0]")));
  bad = PaperDocument(kH50, "2");
  bad.set_incident_id("INC-01ARZ3NDEKTSV4RRFFQ69G5FAV");
  EXPECT_THAT(h49.client().RecordPaperDocument(bad),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("incident_id")));
  ASSERT_OK_AND_ASSIGN(v1::ListPaperRegisterResponse listed,
                       h49.client().ListPaperRegister({}));
  EXPECT_THAT(listed.entries(), SizeIs(1));

  // The second through the CLI, as an agency's clerk would.
  ProgramResult recorded =
      Cli(kH49, {"paper", "record", "--number", "2", "--notation", "QĐ-UBND",
                 "--date", "2027-03-03", "--parties", kH50, "--subject",
                 "Quyết định giấy số 2"});
  ASSERT_EQ(recorded.exit_code, 0) << recorded.stderr_text;
  std::string second_id = recorded.stdout_text.substr(0, 29);
  ASSERT_TRUE(absl::StartsWith(second_id, "PR-")) << recorded.stdout_text;

  // `lienthong health` shows the open incident to an affected agency.
  ProgramResult health = Cli(kH49, {"health"});
  EXPECT_EQ(health.exit_code, 0) << health.stderr_text;
  EXPECT_THAT(health.stdout_text,
              ::testing::AllOf(::testing::StartsWith("SERVING\n"),
                               HasSubstr("open incident " + incident.id())));

  ASSERT_OK_AND_ASSIGN(v1::ReconciliationReport report,
                       h49.client().GetReconciliationReport(""));
  EXPECT_EQ(report.total_outstanding(), 2u);
  EXPECT_FALSE(report.reconciled());
  ASSERT_OK(Resolve(*operator_, incident.id()).status());

  // Re-digitization: the normal send path, seen on the sender's watch.
  std::atomic<bool> stop_watch{false};
  Collector<v1::StatusEvent> events;
  std::thread watcher([&] {
    (void)h49.client().Watch(
        "", 0, [&](const v1::StatusEvent& e) { events.Add(e); }, stop_watch);
  });
  ASSERT_OK_AND_ASSIGN(SendReceipt sent,
                       h49.client().Send(RedigitizedDocument(first, kH50)));
  EXPECT_TRUE(Eventually(
      [&] {
        for (const v1::StatusEvent& e : events.items())
          if (e.document_id() == sent.document_id) return true;
        return false;
      },
      kWait));
  stop_watch = true;
  watcher.join();
  // The recipient sees the mark and the original date.
  ASSERT_TRUE(Eventually(
      [&] {
        for (const v1::Document& d : h50.documents_.items())
          if (d.id() == sent.document_id) return true;
        return false;
      },
      kWait));
  for (const v1::Document& d : h50.documents_.items()) {
    if (d.id() != sent.document_id) continue;
    EXPECT_EQ(d.metadata().redigitized().register_entry_id(), first.id());
    EXPECT_EQ(d.metadata().redigitized().incident_id(), incident.id());
    EXPECT_EQ(d.metadata().issue_date(), "2027-03-02");
  }

  // Settling twice, or another org's entry: refused, nothing changes.
  EXPECT_THAT(h49.client().Send(RedigitizedDocument(first, kH50)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr(sent.document_id)));
  v1::PaperRegisterEntry second;
  second.set_id(second_id);
  second.set_subject("Quyết định giấy số 2");
  EXPECT_THAT(h50.client().Send(RedigitizedDocument(second, kH49)),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("recorded by organization 000.00.00.H49")));
  ASSERT_OK_AND_ASSIGN(report, h49.client().GetReconciliationReport(""));
  EXPECT_EQ(report.total_outstanding(), 1u);
  ASSERT_THAT(report.rows(), SizeIs(1));
  ASSERT_THAT(report.rows(0).outstanding_entries(), SizeIs(1));
  EXPECT_EQ(report.rows(0).outstanding_entries(0).id(), second_id);

  // The second through the CLI: its mark, incident and date come from the
  // register.
  std::string body = absl::StrCat(::testing::TempDir(), "/redigitized.txt");
  ASSERT_OK(WriteFile(body, "Nội dung quyết định giấy số 2\n"));
  ProgramResult redigitized =
      Cli(kH49, {"send", "--to", kH50, "--subject", "Quyết định giấy số 2",
                 "--redigitize", second_id, body});
  ASSERT_EQ(redigitized.exit_code, 0) << redigitized.stderr_text;
  ProgramResult final_report = Cli(kH49, {"paper", "report"});
  ASSERT_EQ(final_report.exit_code, 0) << final_report.stderr_text;
  EXPECT_THAT(final_report.stdout_text, HasSubstr("reconciled"));
  ASSERT_OK_AND_ASSIGN(report, h49.client().GetReconciliationReport(""));
  EXPECT_TRUE(report.reconciled());
  EXPECT_EQ(report.total_outstanding(), 0u);
  ASSERT_OK_AND_ASSIGN(listed, h49.client().ListPaperRegister({}));
  for (const v1::PaperRegisterEntry& e : listed.entries()) {
    EXPECT_FALSE(e.settled_by_document().empty()) << e.id();
    if (e.id() == second_id) {
      // The CLI took the original date from the register.
      absl::StatusOr<v1::DocumentStatus> st =
          h49.client().GetDocumentStatus(e.settled_by_document());
      ASSERT_OK(st);
      EXPECT_EQ(st->metadata().issue_date(), "2027-03-03");
      EXPECT_EQ(st->metadata().redigitized().paper_date(), "2027-03-03");
    }
  }

  // Survives a restart.
  ASSERT_OK(broker_.Stop());
  ASSERT_OK(broker_.Start());
  ASSERT_OK_AND_ASSIGN(report, h49.client().GetReconciliationReport(""));
  EXPECT_TRUE(report.reconciled());
  ASSERT_THAT(report.rows(), SizeIs(1));
  EXPECT_EQ(report.rows(0).redigitized(), 2u);

  std::vector<std::string> audit = AuditActions();
  EXPECT_THAT(audit, Contains("IncidentService/RecordPaperDocument OK"));
  EXPECT_THAT(audit, Contains("IncidentService/RecordPaperDocument "
                              "FAILED_PRECONDITION"));
  EXPECT_THAT(audit, Contains("Redigitized OK"));
}

// The operator's commands of the README's incidents section, through
// lienthong-reflect (a grpcurl work-alike that resolves everything by
// reflection): field and enum names as an operator types them.
TEST_F(IncidentsTest, ReadmeOperatorCommandsWorkThroughReflection) {
  Agency h49(broker_.ClientOptionsFor(kH49));
  auto grpcurl = [&](const std::string& json, const std::string& method) {
    std::vector<std::string> argv = {
        LIENTHONG_REFLECT_PATH,
        "-cacert",
        absl::StrCat(pki_, "/ca.pem"),
        "-cert",
        absl::StrCat(pki_, "/persons/operator.pem"),
        "-key",
        absl::StrCat(pki_, "/persons/operator.key"),
        "-d",
        json,
        broker_.endpoint(),
        absl::StrCat("lienthong.v1.IncidentService/", method)};
    absl::StatusOr<ProgramResult> r = RunProgram(argv, absl::Seconds(20));
    EXPECT_OK(r);
    return r.value_or(ProgramResult{});
  };
  ProgramResult declared = grpcurl(
      R"({"scope":{"kind":"INCIDENT_SCOPE_KIND_ORGS","orgs":["000.00.00.H49","000.01.23.H49"]},
        "severity":"INCIDENT_SEVERITY_CRITICAL","description":"Mất kết nối mạng truyền số liệu"})",
      "DeclareIncident");
  ASSERT_EQ(declared.exit_code, 0) << declared.stderr_text;
  size_t at = declared.stdout_text.find("INC-");
  ASSERT_NE(at, std::string::npos) << declared.stdout_text;
  const std::string id = declared.stdout_text.substr(at, 30);
  ASSERT_TRUE(h49.notices_.WaitForCount(1, kWait));
  EXPECT_EQ(h49.notices_.items()[0].incident().id(), id);

  ProgramResult listed = grpcurl(R"({"open_only":true})", "ListIncidents");
  ASSERT_EQ(listed.exit_code, 0) << listed.stderr_text;
  EXPECT_THAT(listed.stdout_text, HasSubstr(id));
  ProgramResult report = grpcurl("{}", "GetReconciliationReport");
  ASSERT_EQ(report.exit_code, 0) << report.stderr_text;
  // An agency's `lienthong receive --follow` prints the open incident when
  // it connects (stopped by the time limit).
  std::vector<std::string> argv = {
      LIENTHONG_CLI_PATH,
      "--endpoint",
      broker_.endpoint(),
      "--cert",
      absl::StrCat(pki_, "/orgs/", kUnitH49, ".pem"),
      "--key",
      absl::StrCat(pki_, "/orgs/", kUnitH49, ".key"),
      "--ca",
      absl::StrCat(pki_, "/ca.pem"),
      "receive",
      "--follow"};
  absl::StatusOr<ProgramResult> followed = RunProgram(argv, absl::Seconds(3));
  ASSERT_OK(followed);
  EXPECT_THAT(followed->stdout_text,
              HasSubstr(absl::StrCat("NOTICE  incident  ", id)))
      << followed->stderr_text;
  ProgramResult resolved =
      grpcurl(absl::StrCat(R"({"incident_id":")", id,
                           R"(","resolution":"Đã khôi phục"})"),
              "ResolveIncident");
  ASSERT_EQ(resolved.exit_code, 0) << resolved.stderr_text;
  ASSERT_TRUE(h49.notices_.WaitForCount(2, kWait));
  // A bad scope is INVALID_ARGUMENT naming the field (grpcurl: 64 + 3).
  ProgramResult bad = grpcurl(
      R"({"scope":{"kind":"INCIDENT_SCOPE_KIND_ORGS","orgs":["H49"]},
        "severity":"INCIDENT_SEVERITY_MINOR","description":"x"})",
      "DeclareIncident");
  EXPECT_EQ(bad.exit_code, 64 + 3) << bad.stderr_text;
  EXPECT_THAT(bad.stderr_text, HasSubstr("scope.orgs[0]"));
}

TEST_F(IncidentsTest, OperatorsUseTheAdminCli) {
  Agency h50(broker_.ClientOptionsFor(kH50));
  ProgramResult declared =
      Run("persons/operator",
          {"admin", "incident", "declare", "--scope", "orgs", "--org", kH50,
           "--severity", "major", "--description", "Sự cố đường truyền"});
  ASSERT_EQ(declared.exit_code, 0) << declared.stderr_text;
  ASSERT_TRUE(absl::StartsWith(declared.stdout_text, "INC-"))
      << declared.stdout_text;
  const std::string id = declared.stdout_text.substr(0, 30);
  ASSERT_TRUE(h50.notices_.WaitForCount(1, kWait));
  // Auditors list, but do not declare.
  ProgramResult listed =
      Run("persons/auditor", {"admin", "incident", "list", "--open"});
  ASSERT_EQ(listed.exit_code, 0) << listed.stderr_text;
  EXPECT_THAT(listed.stdout_text, HasSubstr(id));
  ProgramResult refused = Run(
      "persons/auditor", {"admin", "incident", "declare", "--scope", "broker",
                          "--severity", "minor", "--description", "x"});
  EXPECT_EQ(refused.exit_code, 3) << refused.stderr_text;
  EXPECT_THAT(refused.stderr_text, HasSubstr("PERMISSION_DENIED"));
  ASSERT_OK(
      h50.client().RecordPaperDocument(PaperDocument(kH49, "9")).status());
  ProgramResult report = Run("persons/auditor", {"admin", "paper-report"});
  ASSERT_EQ(report.exit_code, 0) << report.stderr_text;
  EXPECT_THAT(report.stdout_text, HasSubstr("1 entries not yet re-digitized"));
  ProgramResult info = Run("persons/auditor", {"admin", "info"});
  ASSERT_EQ(info.exit_code, 0) << info.stderr_text;
  EXPECT_THAT(info.stdout_text, HasSubstr(absl::StrCat("INCIDENT ", id)));
  ProgramResult resolved =
      Run("persons/operator",
          {"admin", "incident", "resolve", id, "--resolution", "Đã khắc phục"});
  ASSERT_EQ(resolved.exit_code, 0) << resolved.stderr_text;
  ASSERT_TRUE(h50.notices_.WaitForCount(2, kWait));
}

// ---- Federation: two brokers that are each other's peer
// ----------------------

constexpr char kPermitBoth[] = R"(description: incidents federation test
rules:
  - name: h49-h50
    effect: permit
    sender: {provinces: [H49, H50]}
    recipient: {provinces: [H49, H50]}
    max_classification: unclassified
)";

std::string FederatedConfig(const std::string& name, const std::string& peer,
                            int peer_port, const std::string& org,
                            const std::string& peer_province,
                            const std::string& policy_file) {
  return absl::StrCat(
      "broker: {name: ", name, ", trust_domain: lienthong.local}\n",
      "orgs:\n  - {code: ", org, ", name: \"", org, "\"}\n", kRoles,
      "policy: {file: ", policy_file, "}\n",
      "federation: {announce_seconds: 1, reconnect_max_seconds: 1}\n",
      "peers:\n  - name: ", peer, "\n    endpoint: 127.0.0.1:", peer_port,
      "\n    serves: {provinces: [", peer_province, "]}\n");
}

TEST(IncidentsFederationTest, PeersAreToldAndNotifyTheirAffectedAgencies) {
  ASSERT_OK_AND_ASSIGN(int p49, PickFreePort());
  int p50 = 0;
  for (int i = 0; i < 20 && (p50 == 0 || p50 == p49); ++i) {
    ASSERT_OK_AND_ASSIGN(p50, PickFreePort());
  }
  ASSERT_NE(p49, p50);
  testing_util::TempDir dir;
  const std::string policy = dir.path() + "/policy.yaml";
  ASSERT_OK(WriteFile(policy, kPermitBoth));
  BrokerOptions o49, o50;
  o49.port = p49;
  o49.config_yaml = FederatedConfig("h49", "h50", p50, kH49, "H50", policy);
  o50.port = p50;
  o50.config_yaml = FederatedConfig("h50", "h49", p49, kH50, "H49", policy);
  BrokerProcess h49(o49), h50(o50);
  ASSERT_OK(h49.Start());
  ASSERT_OK(h50.Start());

  Agency at49(h49.ClientOptionsFor(kH49));
  Agency at50(h50.ClientOptionsFor(kH50));
  // Documents flow both ways: links and receive streams are up.
  ASSERT_TRUE(at49.Warm(at50, kH50)) << h49.stderr_text() << h50.stderr_text();
  ASSERT_TRUE(at50.Warm(at49, kH49));

  // The link between the two is down: both sides' agencies are affected.
  auto op49 = IncidentStub(h49.endpoint(), "persons/operator");
  v1::DeclareIncidentRequest r;
  r.mutable_scope()->set_kind(v1::INCIDENT_SCOPE_KIND_PEER_LINK);
  r.mutable_scope()->set_peer("h50");
  r.set_severity(v1::INCIDENT_SEVERITY_MAJOR);
  r.set_description("Đường truyền H49 - H50 gián đoạn");
  const absl::Time declared = absl::Now();
  ASSERT_OK_AND_ASSIGN(v1::Incident incident, Declare(*op49, r));
  ASSERT_TRUE(at49.notices_.WaitForCount(1, kWait));
  EXPECT_LT(at49.times_.items()[0] - declared, absl::Seconds(1));
  // The peer learns it with its next announcement (at once: within the
  // link's one-second check) and notifies its own agencies.
  ASSERT_TRUE(at50.notices_.WaitForCount(1, kWait)) << h50.stderr_text();
  EXPECT_LT(at50.times_.items()[0] - declared, absl::Seconds(5));
  EXPECT_EQ(at50.notices_.items()[0].incident().id(), incident.id());
  EXPECT_EQ(at50.notices_.items()[0].incident().broker(), "h49");

  // The peer shows it, and its agencies may record paper under it.
  auto op50 = IncidentStub(h50.endpoint(), "persons/auditor");
  ASSERT_OK_AND_ASSIGN(v1::ListIncidentsResponse at_peer, ListIncidents(*op50));
  ASSERT_THAT(at_peer.incidents(), SizeIs(1));
  EXPECT_EQ(at_peer.incidents(0).id(), incident.id());
  ASSERT_OK_AND_ASSIGN(
      v1::PaperRegisterEntry entry,
      at50.client().RecordPaperDocument(PaperDocument(kH49, "7")));
  EXPECT_EQ(entry.incident_id(), incident.id());
  // Only the declaring broker resolves it.
  auto op50_operator = IncidentStub(h50.endpoint(), "persons/operator");
  EXPECT_THAT(Resolve(*op50_operator, incident.id()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("declared at broker h49")));

  ASSERT_OK(Resolve(*op49, incident.id()).status());
  ASSERT_TRUE(at49.notices_.WaitForCount(2, kWait));
  ASSERT_TRUE(at50.notices_.WaitForCount(2, kWait));
  EXPECT_EQ(at50.notices_.items()[1].kind(), v1::NOTICE_KIND_INCIDENT_RESOLVED);

  // Re-digitized across the federation: settled at the sender's broker.
  ASSERT_OK(at50.client().Send(RedigitizedDocument(entry, kH49)).status());
  ASSERT_OK_AND_ASSIGN(v1::ReconciliationReport report,
                       at50.client().GetReconciliationReport(""));
  EXPECT_TRUE(report.reconciled());
  ASSERT_TRUE(Eventually(
      [&] {
        for (const v1::Document& d : at49.documents_.items())
          if (d.metadata().redigitized().register_entry_id() == entry.id())
            return true;
        return false;
      },
      kWait));

  EXPECT_OK(h49.Stop());
  EXPECT_OK(h50.Stop());
}

}  // namespace
}  // namespace lienthong::integration
