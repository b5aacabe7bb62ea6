// The AdminService's policy methods end to end: a real lienthongd serving a
// policy file, over mutual TLS with the dev PKI's person certificates
// (operator, auditor) through the SDK's AdminClient, organization
// certificates through raw stubs (the SDK refuses them), and the
// `lienthong policy ...` commands, offline and online.
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "lienthong/admin_client.h"
#include "lienthong/client.h"
#include "lienthong/v1/admin.grpc.pb.h"
#include "tests/integration/broker_process.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

#ifndef LIENTHONG_CLI_PATH
#error "LIENTHONG_CLI_PATH must be defined (tests/integration/CMakeLists.txt)"
#endif

namespace lienthong::integration {
namespace {

using ::lienthong::testing_util::StatusIs;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

constexpr char kTrustDomain[] = "lienthong.local";
constexpr char kOperator[] = "spiffe://lienthong.local/person/operator";
constexpr char kAuditor[] = "spiffe://lienthong.local/person/auditor";

// The policy the broker starts with: H49's bodies may write to the centre
// and to each other; nothing automated may carry a personnel decision.
constexpr char kInitialPolicy[] = R"(description: admin policy test
groups:
  h49:
    provinces: [H49]
rules:
  - name: h49-reports-to-centre
    effect: permit
    sender: {groups: [h49]}
    recipient: {orgs: [000.00.00.G22]}
    max_classification: unclassified
    obligations: {retention: 3650d}
  - name: within-h49
    effect: permit
    sender: {groups: [h49]}
    recipient: {groups: [h49]}
  - name: no-ai-personnel
    effect: forbid
    origins: [ai]
    decision_categories: [personnel]
)";

// The initial policy plus a forbid that stops H49 writing to the centre.
std::string PolicyForbiddingH49ToCentre() {
  return absl::StrCat(kInitialPolicy, R"(  - name: freeze-h49-to-centre
    effect: forbid
    sender: {orgs: [000.00.00.H49]}
    recipient: {orgs: [000.00.00.G22]}
)");
}

// Line 4 names an undefined group.
constexpr char kBrokenPolicy[] = R"(rules:
  - name: broken
    effect: permit
    sender: {groups: [provinse]}
)";

v1::Document NewDocument(const std::string& to,
                         const std::string& subject = "Báo cáo tuần") {
  v1::Document doc;
  doc.add_recipients(to);
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_subject(subject);
  m->set_document_type("Công văn");
  doc.set_body("Kính gửi ...");
  return doc;
}

v1::PolicyFlow NewFlow(const std::string& sender,
                       const std::string& recipient) {
  v1::PolicyFlow flow;
  flow.set_sender(sender);
  flow.set_recipient(recipient);
  flow.set_document_type("Công văn");
  return flow;
}

std::string Describe(const ProgramResult& r) {
  return absl::StrCat("exit ", r.exit_code, r.timed_out ? " (timed out)" : "",
                      "\n--- stdout ---\n", r.stdout_text, "--- stderr ---\n",
                      r.stderr_text);
}

template <typename Message>
absl::Status ParseJson(absl::string_view json, Message* message) {
  auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), message);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(status.ToString(), " in: ", json));
  }
  return absl::OkStatus();
}

// The broker's config: the policy file in the test's directory, by default
// not watched (reload_seconds 0: only Apply changes it), and the dev PKI's
// two persons in their roles.
std::string BrokerConfig(const std::string& policy_path,
                         int reload_seconds = 0) {
  return absl::StrCat("policy: {file: ", policy_path,
                      ", reload_seconds: ", reload_seconds,
                      "}\n"
                      "roles: {operator: [operator], auditor: [auditor]}\n");
}

class AdminPolicyTest : public ::testing::Test {
 protected:
  explicit AdminPolicyTest(int reload_seconds = 0)
      : policy_path_(dir_.path() + "/policy.yaml"),
        broker_(OptionsFor(policy_path_, reload_seconds)) {}

  static BrokerOptions OptionsFor(const std::string& policy_path,
                                  int reload_seconds) {
    BrokerOptions options;
    options.config_yaml = BrokerConfig(policy_path, reload_seconds);
    return options;
  }

  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    ASSERT_OK(WriteFile(policy_path_, kInitialPolicy));
    ASSERT_OK(broker_.Start());
    ASSERT_OK_AND_ASSIGN(pki_, DevPkiDir());
  }
  void TearDown() override { EXPECT_OK(broker_.Stop()); }

  ClientOptions PersonOptions(const std::string& person) {
    ClientOptions o = broker_.ClientOptionsFor(kH49);
    o.certificate_file = absl::StrCat(pki_, "/persons/", person, ".pem");
    o.private_key_file = absl::StrCat(pki_, "/persons/", person, ".key");
    return o;
  }

  std::unique_ptr<AdminClient> Admin(const std::string& person) {
    absl::StatusOr<std::unique_ptr<AdminClient>> admin =
        AdminClient::Open(PersonOptions(person));
    EXPECT_OK(admin);
    return admin.ok() ? *std::move(admin) : nullptr;
  }

  std::unique_ptr<Client> Org(const std::string& org) {
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Open(broker_.ClientOptionsFor(org));
    EXPECT_OK(client);
    return client.ok() ? *std::move(client) : nullptr;
  }

  // An AdminService stub presenting `org`'s certificate: the SDK would
  // refuse to open an AdminClient with it.
  std::unique_ptr<v1::AdminService::Stub> OrgAdminStub(const std::string& org) {
    return v1::AdminService::NewStub(
        RawChannel(broker_.endpoint(), absl::StrCat("orgs/", org)));
  }

  std::string ServingVersion() {
    std::unique_ptr<AdminClient> admin = Admin("auditor");
    if (admin == nullptr) return "";
    absl::StatusOr<v1::GetPolicyResponse> serving = admin->GetPolicy();
    EXPECT_OK(serving);
    return serving.ok() ? serving->version() : "";
  }

  testing_util::TempDir dir_;
  std::string policy_path_;
  BrokerProcess broker_;
  std::string pki_;
};

TEST_F(AdminPolicyTest, OperatorAppliesAPolicyAndTheNextSendObeysIt) {
  std::unique_ptr<Client> h49 = Org(kH49);
  std::unique_ptr<AdminClient> admin = Admin("operator");
  ASSERT_NE(h49, nullptr);
  ASSERT_NE(admin, nullptr);
  EXPECT_EQ(admin->person(), "operator");
  ASSERT_OK(h49->Send(NewDocument(kG22)).status());

  ASSERT_OK_AND_ASSIGN(v1::GetPolicyResponse before, admin->GetPolicy());
  EXPECT_EQ(before.source(), kInitialPolicy);
  EXPECT_EQ(before.path(), policy_path_);
  EXPECT_EQ(before.rule_count(), 3u);
  EXPECT_EQ(before.group_count(), 1u);
  EXPECT_TRUE(absl::StartsWith(before.version(), "sha256:"));

  const std::string next = PolicyForbiddingH49ToCentre();
  v1::ApplyPolicyRequest apply;
  apply.set_source(next);
  ASSERT_OK_AND_ASSIGN(v1::ApplyPolicyResponse applied,
                       admin->ApplyPolicy(apply));
  EXPECT_TRUE(applied.changed());
  EXPECT_EQ(applied.previous_version(), before.version());
  EXPECT_NE(applied.version(), before.version());
  EXPECT_EQ(applied.rule_count(), 4u);

  ASSERT_OK_AND_ASSIGN(v1::GetPolicyResponse after, admin->GetPolicy());
  EXPECT_EQ(after.version(), applied.version());
  EXPECT_EQ(after.source(), next);
  ASSERT_OK_AND_ASSIGN(std::string on_disk, ReadFile(policy_path_));
  EXPECT_EQ(on_disk, next) << "Apply must persist the policy file";

  // The very next Send is decided by the new policy, naming its rule.
  EXPECT_THAT(h49->Send(NewDocument(kG22)).status(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("freeze-h49-to-centre")));
  // What the new policy still permits goes through.
  EXPECT_OK(h49->Send(NewDocument(kUnitH49)).status());

  // Applying the serving text again changes nothing.
  ASSERT_OK_AND_ASSIGN(v1::ApplyPolicyResponse again,
                       admin->ApplyPolicy(apply));
  EXPECT_FALSE(again.changed());
  EXPECT_EQ(again.version(), applied.version());

  // The call is audited: caller, method, outcome.
  EXPECT_THAT(broker_.stderr_text(),
              AllOf(HasSubstr(absl::StrCat(R"("component":"audit","caller":")",
                                           kOperator, "\"")),
                    HasSubstr(R"("method":"ApplyPolicy","outcome":"OK")"),
                    HasSubstr(applied.version())));
}

TEST_F(AdminPolicyTest, AuditorReadsButMayNotApply) {
  std::unique_ptr<AdminClient> auditor = Admin("auditor");
  ASSERT_NE(auditor, nullptr);
  const std::string version = ServingVersion();

  v1::ApplyPolicyRequest apply;
  apply.set_source(PolicyForbiddingH49ToCentre());
  EXPECT_THAT(auditor->ApplyPolicy(apply).status(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr(kAuditor), HasSubstr("ApplyPolicy"),
                             HasSubstr("operator role"))));
  EXPECT_EQ(ServingVersion(), version) << "a refused Apply changed the policy";
  ASSERT_OK_AND_ASSIGN(std::string on_disk, ReadFile(policy_path_));
  EXPECT_EQ(on_disk, kInitialPolicy);

  ASSERT_OK_AND_ASSIGN(v1::GetPolicyResponse serving, auditor->GetPolicy());
  EXPECT_EQ(serving.source(), kInitialPolicy);

  v1::ValidatePolicyRequest validate;
  validate.set_source(PolicyForbiddingH49ToCentre());
  ASSERT_OK_AND_ASSIGN(v1::ValidatePolicyResponse valid,
                       auditor->ValidatePolicy(validate));
  EXPECT_TRUE(valid.ok()) << valid.error();
  EXPECT_EQ(valid.rule_count(), 4u);
  EXPECT_EQ(valid.group_count(), 1u);
  validate.set_source(kBrokenPolicy);
  validate.set_file_name("h49.yaml");
  ASSERT_OK_AND_ASSIGN(v1::ValidatePolicyResponse invalid,
                       auditor->ValidatePolicy(validate));
  EXPECT_FALSE(invalid.ok());
  EXPECT_THAT(invalid.error(), HasSubstr("h49.yaml:4:"));
  EXPECT_THAT(invalid.error(), HasSubstr("provinse"));

  v1::ExplainPolicyRequest explain;
  *explain.mutable_flow() = NewFlow(kH49, kG22);
  ASSERT_OK_AND_ASSIGN(v1::ExplainPolicyResponse explained,
                       auditor->ExplainPolicy(explain));
  EXPECT_EQ(explained.effect(), v1::POLICY_EFFECT_PERMIT);

  v1::DryRunPolicyRequest dry_run;
  dry_run.set_candidate_source(PolicyForbiddingH49ToCentre());
  EXPECT_OK(auditor->DryRunPolicy(dry_run).status());
  EXPECT_OK(auditor->ListPolicyDecisions({}).status());
  v1::ListPolicyDecisionsRequest too_many;
  too_many.set_limit(10001);
  EXPECT_THAT(auditor->ListPolicyDecisions(too_many),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("limit: 10001; at most 10000")));

  ASSERT_OK_AND_ASSIGN(v1::GetBrokerInfoResponse info,
                       auditor->GetBrokerInfo());
  EXPECT_EQ(info.broker(), "spiffe://lienthong.local/broker/central");
  EXPECT_EQ(info.caller(), kAuditor);
  EXPECT_THAT(info.caller_roles(), ElementsAre("auditor"));
  EXPECT_EQ(info.policy_version(), version);
  EXPECT_FALSE(info.version().empty());
  EXPECT_GT(info.started_at().seconds(), 0);

  EXPECT_THAT(broker_.stderr_text(),
              HasSubstr(absl::StrCat(R"("component":"audit","caller":")",
                                     kAuditor, R"(","peer":")")));
  EXPECT_THAT(
      broker_.stderr_text(),
      HasSubstr(R"("method":"ApplyPolicy","outcome":"PERMISSION_DENIED")"));
}

TEST_F(AdminPolicyTest, OrganizationsMayCallNoAdminMethod) {
  // The SDK will not even open an admin client with an org certificate.
  ClientOptions org_options = broker_.ClientOptionsFor(kH49);
  EXPECT_THAT(
      AdminClient::Open(org_options).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a person")));

  std::unique_ptr<v1::AdminService::Stub> stub = OrgAdminStub(kH49);
  const std::string version = ServingVersion();
  using Call = std::function<grpc::Status(grpc::ClientContext*)>;
  const std::vector<std::pair<std::string, Call>> calls = {
      {"GetPolicy",
       [&](grpc::ClientContext* c) {
         v1::GetPolicyResponse r;
         return stub->GetPolicy(c, {}, &r);
       }},
      {"ValidatePolicy",
       [&](grpc::ClientContext* c) {
         v1::ValidatePolicyRequest q;
         q.set_source(kInitialPolicy);
         v1::ValidatePolicyResponse r;
         return stub->ValidatePolicy(c, q, &r);
       }},
      {"ExplainPolicy",
       [&](grpc::ClientContext* c) {
         v1::ExplainPolicyRequest q;
         *q.mutable_flow() = NewFlow(kH49, kG22);
         v1::ExplainPolicyResponse r;
         return stub->ExplainPolicy(c, q, &r);
       }},
      {"ApplyPolicy",
       [&](grpc::ClientContext* c) {
         v1::ApplyPolicyRequest q;
         q.set_source(PolicyForbiddingH49ToCentre());
         v1::ApplyPolicyResponse r;
         return stub->ApplyPolicy(c, q, &r);
       }},
      {"DryRunPolicy",
       [&](grpc::ClientContext* c) {
         v1::DryRunPolicyRequest q;
         q.set_candidate_source(kInitialPolicy);
         v1::DryRunPolicyResponse r;
         return stub->DryRunPolicy(c, q, &r);
       }},
      {"ListPolicyDecisions",
       [&](grpc::ClientContext* c) {
         v1::ListPolicyDecisionsResponse r;
         return stub->ListPolicyDecisions(c, {}, &r);
       }},
      {"GetBrokerInfo",
       [&](grpc::ClientContext* c) {
         v1::GetBrokerInfoResponse r;
         return stub->GetBrokerInfo(c, {}, &r);
       }},
  };
  for (const auto& [method, call] : calls) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    grpc::Status status = call(&context);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << method << ": " << status.error_message();
    EXPECT_THAT(
        status.error_message(),
        AllOf(HasSubstr(absl::StrCat("spiffe://", kTrustDomain, "/org/", kH49)),
              HasSubstr(method), HasSubstr("role")))
        << method;
  }
  EXPECT_EQ(ServingVersion(), version);
}

TEST_F(AdminPolicyTest, BrokenPolicyIsRejectedAndTheOldOneKeepsServing) {
  std::unique_ptr<AdminClient> admin = Admin("operator");
  std::unique_ptr<Client> h49 = Org(kH49);
  ASSERT_NE(admin, nullptr);
  ASSERT_NE(h49, nullptr);
  const std::string version = ServingVersion();

  v1::ApplyPolicyRequest apply;
  apply.set_source(kBrokenPolicy);
  absl::Status refused = admin->ApplyPolicy(apply).status();
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kInvalidArgument,
                                AllOf(HasSubstr("policy.yaml:4:"),
                                      HasSubstr("provinse"))));
  // "<file>:<line>:<column>: ..."
  EXPECT_THAT(std::string(refused.message()),
              ::testing::ContainsRegex("policy\\.yaml:4:[0-9]+: "));

  EXPECT_EQ(ServingVersion(), version);
  ASSERT_OK_AND_ASSIGN(std::string on_disk, ReadFile(policy_path_));
  EXPECT_EQ(on_disk, kInitialPolicy);
  EXPECT_OK(h49->Send(NewDocument(kG22)).status())
      << "the old policy must keep serving";
  EXPECT_THAT(
      broker_.stderr_text(),
      HasSubstr(R"("method":"ApplyPolicy","outcome":"INVALID_ARGUMENT")"));

  apply.set_source("");
  EXPECT_THAT(
      admin->ApplyPolicy(apply).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("source")));
  EXPECT_EQ(ServingVersion(), version);
}

// A broker that watches its policy file (reload every second): what an
// operator who edits the file, or a config-management tool, relies on.
class WatchedPolicyFileTest : public AdminPolicyTest {
 protected:
  WatchedPolicyFileTest() : AdminPolicyTest(/*reload_seconds=*/1) {}
};

TEST_F(WatchedPolicyFileTest, EditedFileIsSwappedInAndABrokenEditIsRejected) {
  std::unique_ptr<AdminClient> auditor = Admin("auditor");
  std::unique_ptr<Client> h49 = Org(kH49);
  ASSERT_NE(auditor, nullptr);
  ASSERT_NE(h49, nullptr);
  const std::string initial = ServingVersion();
  ASSERT_OK(h49->Send(NewDocument(kG22)).status());

  // A broken edit: rejected whole, reported with file:line:column, and the
  // serving policy stays.
  ASSERT_OK(WriteFile(policy_path_, kBrokenPolicy));
  ASSERT_TRUE(testing_util::Eventually([&] {
    absl::StatusOr<v1::GetPolicyResponse> p = auditor->GetPolicy();
    return p.ok() && !p->last_reload_error().empty();
  }));
  ASSERT_OK_AND_ASSIGN(v1::GetPolicyResponse broken, auditor->GetPolicy());
  EXPECT_THAT(
      broken.last_reload_error(),
      ::testing::ContainsRegex("policy\\.yaml:4:[0-9]+: unknown group"));
  EXPECT_EQ(broken.version(), initial);
  EXPECT_OK(h49->Send(NewDocument(kG22)).status());
  EXPECT_THAT(broker_.stderr_text(), HasSubstr("policy rejected"));

  // A good edit: swapped in without a restart; the next send obeys it.
  ASSERT_OK(WriteFile(policy_path_, PolicyForbiddingH49ToCentre()));
  ASSERT_TRUE(
      testing_util::Eventually([&] { return ServingVersion() != initial; }));
  ASSERT_OK_AND_ASSIGN(v1::GetPolicyResponse swapped, auditor->GetPolicy());
  EXPECT_THAT(swapped.last_reload_error(), IsEmpty());
  EXPECT_THAT(h49->Send(NewDocument(kG22)).status(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("\"freeze-h49-to-centre\"")));

  // The audit log says which policy served from the start and that the
  // file changed it, from which version to which.
  std::vector<std::string> policy_entries;
  v1::ExportAuditRequest r;
  for (int page = 0; page < 100; ++page) {
    absl::StatusOr<v1::ExportAuditResponse> got = auditor->ExportAudit(r);
    ASSERT_OK(got);
    for (const v1::StoredAuditEntry& stored : got->entries()) {
      v1::AuditEntry e;
      if (e.ParseFromString(stored.entry()) &&
          absl::StartsWith(e.action(), "PolicyFile/"))
        policy_entries.push_back(absl::StrCat(e.action(), ": ", e.detail()));
    }
    if (got->next_after_index() == 0) break;
    r.set_after_index(got->next_after_index());
    r.set_through(got->through());
  }
  ASSERT_THAT(policy_entries, SizeIs(2));
  EXPECT_THAT(policy_entries[0],
              AllOf(HasSubstr("PolicyFile/Load"), HasSubstr(initial)));
  EXPECT_THAT(policy_entries[1],
              AllOf(HasSubstr("PolicyFile/Reload"),
                    HasSubstr(absl::StrCat(initial, " replaced by policy ",
                                           swapped.version()))));
}

TEST_F(AdminPolicyTest, ExplainNamesDecidingRulesAndNearMisses) {
  std::unique_ptr<AdminClient> admin = Admin("operator");
  ASSERT_NE(admin, nullptr);
  const std::string version = ServingVersion();

  // Permitted: the permit decides, with its obligations.
  v1::ExplainPolicyRequest request;
  *request.mutable_flow() = NewFlow(kUnitH49, kG22);
  ASSERT_OK_AND_ASSIGN(v1::ExplainPolicyResponse permitted,
                       admin->ExplainPolicy(request));
  EXPECT_EQ(permitted.policy_version(), version);
  EXPECT_EQ(permitted.effect(), v1::POLICY_EFFECT_PERMIT);
  EXPECT_EQ(permitted.cause(), v1::POLICY_CAUSE_PERMITTED);
  EXPECT_THAT(permitted.deciding_rules(), ElementsAre("h49-reports-to-centre"));
  EXPECT_EQ(permitted.obligations().retention().seconds(), 3650 * 86400);
  EXPECT_THAT(permitted.reason(), HasSubstr("h49-reports-to-centre"));

  // Forbidden: the forbid decides; the permits it beat are not deciding.
  request.mutable_flow()->set_origin(v1::ORIGIN_AI);
  request.mutable_flow()->set_decision_category(
      v1::DECISION_CATEGORY_PERSONNEL);
  ASSERT_OK_AND_ASSIGN(v1::ExplainPolicyResponse forbidden,
                       admin->ExplainPolicy(request));
  EXPECT_EQ(forbidden.effect(), v1::POLICY_EFFECT_DENY);
  EXPECT_EQ(forbidden.cause(), v1::POLICY_CAUSE_FORBIDDEN);
  EXPECT_THAT(forbidden.deciding_rules(), ElementsAre("no-ai-personnel"));
  EXPECT_FALSE(forbidden.has_obligations());

  // Denied by default: near misses say which conditions failed.
  *request.mutable_flow() = NewFlow(kUnitH49, kH50);
  ASSERT_OK_AND_ASSIGN(v1::ExplainPolicyResponse no_permit,
                       admin->ExplainPolicy(request));
  EXPECT_EQ(no_permit.effect(), v1::POLICY_EFFECT_DENY);
  EXPECT_EQ(no_permit.cause(), v1::POLICY_CAUSE_NO_PERMIT);
  EXPECT_THAT(no_permit.deciding_rules(), IsEmpty());
  ASSERT_THAT(no_permit.near_misses(), Not(IsEmpty()));
  bool saw_recipient_miss = false;
  for (const v1::PolicyNearMiss& miss : no_permit.near_misses()) {
    EXPECT_THAT(miss.failed_conditions(), Not(IsEmpty())) << miss.rule();
    if (miss.rule() == "h49-reports-to-centre") {
      EXPECT_EQ(miss.effect(), v1::POLICY_EFFECT_PERMIT);
      EXPECT_THAT(miss.failed_conditions(),
                  Contains(HasSubstr("recipient 000.00.00.H50")));
      saw_recipient_miss = true;
    }
  }
  EXPECT_TRUE(saw_recipient_miss);
  request.set_max_near_misses(1);
  ASSERT_OK_AND_ASSIGN(v1::ExplainPolicyResponse one,
                       admin->ExplainPolicy(request));
  EXPECT_THAT(one.near_misses(), SizeIs(1));

  // Against a candidate instead of the serving policy.
  v1::ExplainPolicyRequest candidate;
  *candidate.mutable_flow() = NewFlow(kH49, kG22);
  candidate.set_candidate_source(PolicyForbiddingH49ToCentre());
  ASSERT_OK_AND_ASSIGN(v1::ExplainPolicyResponse by_candidate,
                       admin->ExplainPolicy(candidate));
  EXPECT_NE(by_candidate.policy_version(), version);
  EXPECT_EQ(by_candidate.effect(), v1::POLICY_EFFECT_DENY);
  EXPECT_THAT(by_candidate.deciding_rules(),
              ElementsAre("freeze-h49-to-centre"));
  EXPECT_EQ(ServingVersion(), version) << "explaining must not apply";

  // Bad input names the field.
  v1::ExplainPolicyRequest bad;
  *bad.mutable_flow() = NewFlow("49.H-sai", kG22);
  EXPECT_THAT(
      admin->ExplainPolicy(bad).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("flow.sender")));
  *bad.mutable_flow() = NewFlow(kH49, kG22);
  bad.mutable_flow()->set_origin(static_cast<v1::Origin>(42));
  EXPECT_THAT(
      admin->ExplainPolicy(bad).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("flow.origin")));
  candidate.set_candidate_source(kBrokenPolicy);
  EXPECT_THAT(admin->ExplainPolicy(candidate).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("candidate.yaml:4:")));
}

TEST_F(AdminPolicyTest, DryRunListsTheDecisionsACandidateWouldChange) {
  std::unique_ptr<AdminClient> admin = Admin("operator");
  std::unique_ptr<Client> h49 = Org(kH49);
  ASSERT_NE(admin, nullptr);
  ASSERT_NE(h49, nullptr);
  const std::string version = ServingVersion();

  // Three decisions: two the candidate changes, one it keeps.
  ASSERT_OK(h49->Send(NewDocument(kG22, "một")).status());
  ASSERT_OK(h49->Send(NewDocument(kG22, "hai")).status());
  ASSERT_OK(h49->Send(NewDocument(kUnitH49, "ba")).status());

  ASSERT_OK_AND_ASSIGN(v1::ListPolicyDecisionsResponse listed,
                       admin->ListPolicyDecisions({}));
  ASSERT_THAT(listed.decisions(), SizeIs(3));
  for (const v1::RecordedPolicyDecision& d : listed.decisions()) {
    EXPECT_EQ(d.effect(), v1::POLICY_EFFECT_PERMIT);
    EXPECT_EQ(d.flow().sender(), kH49);
    EXPECT_EQ(d.decision().policy_version(), version);
    EXPECT_EQ(d.decision().broker(), "spiffe://lienthong.local/broker/central");
    EXPECT_GT(d.at().seconds(), 0);
  }
  EXPECT_EQ(listed.decisions(0).flow().recipient(), kG22) << "oldest first";
  EXPECT_THAT(listed.decisions(0).decision().rules(),
              ElementsAre("h49-reports-to-centre"));
  EXPECT_EQ(listed.decisions(2).flow().recipient(), kUnitH49);
  v1::ListPolicyDecisionsRequest last_one;
  last_one.set_limit(1);
  ASSERT_OK_AND_ASSIGN(v1::ListPolicyDecisionsResponse newest,
                       admin->ListPolicyDecisions(last_one));
  ASSERT_THAT(newest.decisions(), SizeIs(1));
  EXPECT_EQ(newest.decisions(0).flow().recipient(), kUnitH49);

  v1::DryRunPolicyRequest request;
  request.set_candidate_source(PolicyForbiddingH49ToCentre());
  ASSERT_OK_AND_ASSIGN(v1::DryRunPolicyResponse report,
                       admin->DryRunPolicy(request));
  EXPECT_EQ(report.examined(), 3u);
  EXPECT_EQ(report.unchanged(), 1u);
  ASSERT_THAT(report.changes(), SizeIs(2));
  for (const v1::PolicyDecisionChange& change : report.changes()) {
    EXPECT_EQ(change.flow().sender(), kH49);
    EXPECT_EQ(change.flow().recipient(), kG22);
    EXPECT_EQ(change.policy_version(), version);
    EXPECT_EQ(change.before().effect(), v1::POLICY_EFFECT_PERMIT);
    EXPECT_THAT(change.before().rules(), ElementsAre("h49-reports-to-centre"));
    EXPECT_EQ(change.before().obligations().retention().seconds(),
              3650 * 86400);
    EXPECT_EQ(change.after().effect(), v1::POLICY_EFFECT_DENY);
    EXPECT_THAT(change.after().rules(), ElementsAre("freeze-h49-to-centre"));
  }
  EXPECT_NE(report.candidate_version(), version);

  // --limit: only the newest decision, which the candidate keeps.
  request.set_limit(1);
  ASSERT_OK_AND_ASSIGN(v1::DryRunPolicyResponse limited,
                       admin->DryRunPolicy(request));
  EXPECT_EQ(limited.examined(), 1u);
  EXPECT_THAT(limited.changes(), IsEmpty());

  EXPECT_EQ(ServingVersion(), version) << "a dry run must not apply";
  request.set_candidate_source(kBrokenPolicy);
  EXPECT_THAT(admin->DryRunPolicy(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("candidate.yaml:4:")));
}

// ---- the `lienthong policy` commands ----------------------------------------

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitRefused = 3;

ProgramResult RunCli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {LIENTHONG_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  // No LIENTHONG_* from the environment: offline means no broker at all.
  absl::StatusOr<ProgramResult> r =
      RunProgram(argv, absl::Seconds(60),
                 {"LIENTHONG_ENDPOINT=", "LIENTHONG_CERT=", "LIENTHONG_KEY=",
                  "LIENTHONG_CA="});
  EXPECT_OK(r);
  return r.value_or(ProgramResult{});
}

class PolicyCliOfflineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    policy_ = dir_.path() + "/h49.yaml";
    ASSERT_OK(WriteFile(policy_, kInitialPolicy));
    broken_ = dir_.path() + "/broken.yaml";
    ASSERT_OK(WriteFile(broken_, kBrokenPolicy));
  }

  testing_util::TempDir dir_;
  std::string policy_;
  std::string broken_;
};

TEST_F(PolicyCliOfflineTest, ValidatePrintsTheVersionOrTheError) {
  ProgramResult ok = RunCli({"policy", "validate", policy_});
  ASSERT_EQ(ok.exit_code, kExitOk) << Describe(ok);
  EXPECT_THAT(ok.stdout_text,
              AllOf(HasSubstr("OK sha256:"), HasSubstr("3 rules, 1 groups")));

  ProgramResult json = RunCli({"policy", "validate", "--json", policy_});
  ASSERT_EQ(json.exit_code, kExitOk) << Describe(json);
  v1::ValidatePolicyResponse parsed;
  ASSERT_OK(ParseJson(json.stdout_text, &parsed));
  EXPECT_TRUE(parsed.ok());
  EXPECT_EQ(parsed.rule_count(), 3u);

  ProgramResult bad = RunCli({"policy", "validate", broken_});
  EXPECT_EQ(bad.exit_code, kExitUsage) << Describe(bad);
  EXPECT_THAT(bad.stderr_text, AllOf(HasSubstr("INVALID_ARGUMENT"),
                                     HasSubstr(absl::StrCat(broken_, ":4:")),
                                     HasSubstr("provinse")));
  EXPECT_EQ(bad.stdout_text, "");

  ProgramResult bad_json = RunCli({"policy", "validate", "--json", broken_});
  EXPECT_EQ(bad_json.exit_code, kExitUsage) << Describe(bad_json);
  ASSERT_OK(ParseJson(bad_json.stdout_text, &parsed));
  EXPECT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.error(), HasSubstr(":4:"));

  ProgramResult missing =
      RunCli({"policy", "validate", dir_.path() + "/nothing.yaml"});
  EXPECT_EQ(missing.exit_code, kExitUsage) << Describe(missing);
  EXPECT_THAT(missing.stderr_text, HasSubstr("nothing.yaml"));
}

TEST_F(PolicyCliOfflineTest, TestRunsEveryCaseAndFailsOnAnyFailure) {
  const std::string tests = dir_.path() + "/h49.test.yaml";
  ASSERT_OK(WriteFile(tests, R"(policy: h49.yaml
cases:
  - name: a unit reports to the centre
    flow: {sender: 000.01.23.H49, recipient: 000.00.00.G22}
    expect: permit
    rules: [h49-reports-to-centre]
    obligations: {retention: 3650d}
  - name: an AI personnel decision is forbidden
    flow: {sender: 000.00.00.H49, recipient: 000.00.00.G22, origin: ai,
           decision_category: personnel}
    expect: deny
    rules: [no-ai-personnel]
)"));
  ProgramResult pass = RunCli({"policy", "test", tests});
  ASSERT_EQ(pass.exit_code, kExitOk) << Describe(pass);
  EXPECT_THAT(pass.stdout_text,
              AllOf(HasSubstr("PASS  a unit reports to the centre"),
                    HasSubstr("PASS  an AI personnel decision is forbidden"),
                    HasSubstr("2 passed, 0 failed")));

  // The same cases against a policy that also forbids everything the unit
  // sends: the first case fails, the second still passes.
  const std::string frozen = dir_.path() + "/frozen.yaml";
  ASSERT_OK(
      WriteFile(frozen, absl::StrCat(kInitialPolicy, R"(  - name: freeze-units
    effect: forbid
    sender: {orgs: [000.01.23.H49]}
)")));
  ProgramResult fail = RunCli({"policy", "test", tests, "--policy", frozen});
  EXPECT_EQ(fail.exit_code, kExitFailed) << Describe(fail);
  EXPECT_THAT(
      fail.stdout_text,
      AllOf(HasSubstr("FAIL  a unit reports to the centre (" + tests + ":3)"),
            HasSubstr("1 passed, 1 failed")));

  ProgramResult json =
      RunCli({"policy", "test", "--json", tests, "--policy", frozen});
  EXPECT_EQ(json.exit_code, kExitFailed) << Describe(json);
  EXPECT_THAT(json.stdout_text,
              AllOf(HasSubstr("\"passed\":1"), HasSubstr("\"failed\":1"),
                    HasSubstr("\"name\":\"a unit reports to the centre\","
                              "\"line\":3,\"passed\":false")));

  ProgramResult broken = RunCli({"policy", "test", tests, "--policy", broken_});
  EXPECT_EQ(broken.exit_code, kExitUsage) << Describe(broken);
  EXPECT_THAT(broken.stderr_text, HasSubstr("provinse"));
}

TEST_F(PolicyCliOfflineTest, ExplainNamesRulesAndNearMisses) {
  ProgramResult denied =
      RunCli({"policy", "explain", "--policy", policy_, "--flow",
              "{sender: 000.01.23.H49, recipient: 000.00.00.G22, origin: ai, "
              "decision_category: personnel}"});
  ASSERT_EQ(denied.exit_code, kExitOk) << Describe(denied);
  EXPECT_THAT(denied.stdout_text,
              AllOf(HasSubstr("decision     deny: forbidden"),
                    HasSubstr("rules        no-ai-personnel"),
                    HasSubstr("near misses")));

  ProgramResult json =
      RunCli({"policy", "explain", "--json", "--policy", policy_, "--flow",
              "{sender: 000.01.23.H49, recipient: "
              "000.00.00.H50}"});
  ASSERT_EQ(json.exit_code, kExitOk) << Describe(json);
  v1::ExplainPolicyResponse parsed;
  ASSERT_OK(ParseJson(json.stdout_text, &parsed));
  EXPECT_EQ(parsed.effect(), v1::POLICY_EFFECT_DENY);
  EXPECT_EQ(parsed.cause(), v1::POLICY_CAUSE_NO_PERMIT);
  EXPECT_THAT(parsed.near_misses(), Not(IsEmpty()));

  ProgramResult bad_flow = RunCli(
      {"policy", "explain", "--policy", policy_, "--flow", "{sendr: x}"});
  EXPECT_EQ(bad_flow.exit_code, kExitUsage) << Describe(bad_flow);
  EXPECT_THAT(bad_flow.stderr_text, HasSubstr("--flow"));

  // Without --policy it asks a broker, which needs the connection flags.
  ProgramResult online =
      RunCli({"policy", "explain", "--flow",
              "{sender: 000.01.23.H49, recipient: 000.00.00.G22}"});
  EXPECT_EQ(online.exit_code, kExitUsage) << Describe(online);
  EXPECT_THAT(online.stderr_text, HasSubstr("--endpoint"));
}

class PolicyCliOnlineTest : public AdminPolicyTest {
 protected:
  ProgramResult Cli(const std::string& who, const std::string& kind,
                    const std::vector<std::string>& args) {
    std::vector<std::string> full = {
        "--endpoint", broker_.endpoint(),
        "--cert",     absl::StrCat(pki_, "/", kind, "/", who, ".pem"),
        "--key",      absl::StrCat(pki_, "/", kind, "/", who, ".key"),
        "--ca",       absl::StrCat(pki_, "/ca.pem")};
    full.insert(full.end(), args.begin(), args.end());
    return RunCli(full);
  }
};

TEST_F(PolicyCliOnlineTest, GetApplyDryRunDecisionsExplain) {
  const std::string next = dir_.path() + "/next.yaml";
  ASSERT_OK(WriteFile(next, PolicyForbiddingH49ToCentre()));
  std::unique_ptr<Client> h49 = Org(kH49);
  ASSERT_NE(h49, nullptr);
  ASSERT_OK(h49->Send(NewDocument(kG22)).status());

  ProgramResult get = Cli("auditor", "persons", {"policy", "get"});
  ASSERT_EQ(get.exit_code, kExitOk) << Describe(get);
  EXPECT_THAT(get.stdout_text, AllOf(HasSubstr("version      sha256:"),
                                     HasSubstr(policy_path_)));
  ProgramResult source =
      Cli("auditor", "persons", {"policy", "get", "--source"});
  ASSERT_EQ(source.exit_code, kExitOk) << Describe(source);
  EXPECT_EQ(source.stdout_text, kInitialPolicy);

  ProgramResult decisions =
      Cli("auditor", "persons", {"policy", "decisions", "--json"});
  ASSERT_EQ(decisions.exit_code, kExitOk) << Describe(decisions);
  v1::ListPolicyDecisionsResponse listed;
  ASSERT_OK(ParseJson(decisions.stdout_text, &listed));
  ASSERT_THAT(listed.decisions(), SizeIs(1));

  ProgramResult dry_run =
      Cli("auditor", "persons", {"policy", "dry-run", next});
  ASSERT_EQ(dry_run.exit_code, kExitOk) << Describe(dry_run);
  EXPECT_THAT(dry_run.stdout_text,
              AllOf(HasSubstr("1 recent decision(s) re-decided, 0 unchanged, "
                              "1 would change"),
                    HasSubstr("permit by h49-reports-to-centre"),
                    HasSubstr("deny by freeze-h49-to-centre")));

  ProgramResult explain = Cli("auditor", "persons",
                              {"policy", "explain", "--flow",
                               "{sender: 000.00.00.H49, recipient: "
                               "000.00.00.G22}"});
  ASSERT_EQ(explain.exit_code, kExitOk) << Describe(explain);
  EXPECT_THAT(explain.stdout_text,
              HasSubstr("rules        h49-reports-to-centre"));

  // An auditor may not apply: the broker refuses (exit 3).
  ProgramResult refused = Cli("auditor", "persons", {"policy", "apply", next});
  EXPECT_EQ(refused.exit_code, kExitRefused) << Describe(refused);
  EXPECT_THAT(refused.stderr_text,
              AllOf(HasSubstr("PERMISSION_DENIED"), HasSubstr("operator")));
  // An organization certificate is not an admin identity (exit 2, local).
  ProgramResult org = Cli(kH49, "orgs", {"policy", "get"});
  EXPECT_EQ(org.exit_code, kExitUsage) << Describe(org);
  EXPECT_THAT(org.stderr_text, HasSubstr("not a person"));
  // A broken policy: the broker's INVALID_ARGUMENT with file:line:col.
  const std::string broken = dir_.path() + "/broken.yaml";
  ASSERT_OK(WriteFile(broken, kBrokenPolicy));
  ProgramResult broken_apply =
      Cli("operator", "persons", {"policy", "apply", broken});
  EXPECT_EQ(broken_apply.exit_code, kExitRefused) << Describe(broken_apply);
  EXPECT_THAT(broken_apply.stderr_text, AllOf(HasSubstr("INVALID_ARGUMENT"),
                                              HasSubstr("policy.yaml:4:")));

  ProgramResult applied = Cli("operator", "persons", {"policy", "apply", next});
  ASSERT_EQ(applied.exit_code, kExitOk) << Describe(applied);
  EXPECT_THAT(applied.stdout_text, HasSubstr("applied sha256:"));
  ProgramResult again = Cli("operator", "persons", {"policy", "apply", next});
  ASSERT_EQ(again.exit_code, kExitOk) << Describe(again);
  EXPECT_THAT(again.stdout_text, HasSubstr("unchanged"));
  EXPECT_THAT(h49->Send(NewDocument(kG22)).status(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("freeze-h49-to-centre")));
}

}  // namespace
}  // namespace lienthong::integration
