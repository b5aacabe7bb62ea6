// The `lienthong` command-line tool as an operator uses it: the real binary
// against a real broker, checking what it prints and how it exits.
#include <google/protobuf/util/json_util.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/v1/exchange.pb.h"
#include "tests/integration/broker_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

#ifndef LIENTHONG_CLI_PATH
#error "LIENTHONG_CLI_PATH must be defined (tests/integration/CMakeLists.txt)"
#endif

namespace lienthong::integration {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;
constexpr int kExitRefused = 3;
constexpr int kExitUnavailable = 4;

std::string Describe(const ProgramResult& r) {
  return absl::StrCat("exit ", r.exit_code, r.timed_out ? " (timed out)" : "",
                      r.signal ? absl::StrCat(" signal ", r.signal) : "",
                      "\n--- stdout ---\n", r.stdout_text, "--- stderr ---\n",
                      r.stderr_text);
}

template <typename Message>
absl::Status ParseJson(absl::string_view json, Message* message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), message,
      options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(status.ToString(), " in: ", json));
  }
  return absl::OkStatus();
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(broker_.Start());
    ASSERT_OK_AND_ASSIGN(pki_, DevPkiDir());
    ASSERT_FALSE(work_.path().empty());
    body_file_ = work_.path() + "/cong-van.txt";
    ASSERT_OK(WriteFile(body_file_, kBody));
  }
  void TearDown() override { EXPECT_OK(broker_.Stop()); }

  // Runs `lienthong` as `org` with the global flags first, then `args`.
  ProgramResult Cli(const std::string& org,
                    const std::vector<std::string>& args,
                    const std::string& endpoint = "") {
    return Run(absl::StrCat("orgs/", org), args, endpoint);
  }

  // Runs `lienthong` with a person's certificate (persons/<person>.pem).
  ProgramResult AdminCli(const std::string& person,
                         const std::vector<std::string>& args) {
    return Run(absl::StrCat("persons/", person), args, "");
  }

  // `identity`: the certificate's path in the dev PKI, without ".pem".
  ProgramResult Run(const std::string& identity,
                    const std::vector<std::string>& args,
                    const std::string& endpoint) {
    std::vector<std::string> argv = {
        LIENTHONG_CLI_PATH,
        "--endpoint",
        endpoint.empty() ? broker_.endpoint() : endpoint,
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

  static constexpr char kBody[] =
      "Kính gửi: Văn phòng Trung ương\nNội dung công văn thử.\n";

  BrokerProcess broker_;
  testing_util::TempDir work_;
  std::string pki_;
  std::string body_file_;
};

TEST_F(CliTest, SendInboxReceiveStatusTrack) {
  // send: prints the id, exits 0.
  ProgramResult sent = Cli(
      kH49, {"send", "--to", kG22, "--subject", "Công văn thử", body_file_});
  ASSERT_EQ(sent.exit_code, kExitOk) << Describe(sent);
  std::vector<std::string> words =
      absl::StrSplit(sent.stdout_text, ' ', absl::SkipEmpty());
  ASSERT_GE(words.size(), 2u) << Describe(sent);
  EXPECT_EQ(words[0], "sent") << Describe(sent);
  const std::string id = words[1];
  ASSERT_FALSE(id.empty());

  // inbox --json as the recipient lists it.
  ProgramResult inbox = Cli(kG22, {"inbox", "--json"});
  ASSERT_EQ(inbox.exit_code, kExitOk) << Describe(inbox);
  v1::ListInboxResponse listed;
  ASSERT_OK(ParseJson(inbox.stdout_text, &listed));
  EXPECT_EQ(listed.total(), 1u);
  ASSERT_THAT(listed.entries(), SizeIs(1));
  EXPECT_EQ(listed.entries(0).document_id(), id);
  EXPECT_EQ(listed.entries(0).sender(), kH49);
  EXPECT_EQ(listed.entries(0).metadata().subject(), "Công văn thử");

  // receive --json --out DIR writes the body and acknowledges it.
  testing_util::TempDir out;
  ProgramResult received =
      Cli(kG22, {"receive", "--json", "--out", out.path()});
  ASSERT_EQ(received.exit_code, kExitOk) << Describe(received);
  std::vector<std::string> lines =
      absl::StrSplit(received.stdout_text, '\n', absl::SkipWhitespace());
  ASSERT_THAT(lines, SizeIs(1)) << Describe(received);
  v1::Delivery delivery;
  ASSERT_OK(ParseJson(lines[0], &delivery));
  EXPECT_EQ(delivery.document().id(), id);
  EXPECT_EQ(delivery.document().sender(), kH49);
  EXPECT_EQ(delivery.document().metadata().subject(), "Công văn thử");
  EXPECT_EQ(delivery.attempt(), 1u);
  ASSERT_OK_AND_ASSIGN(std::string body,
                       ReadFile(absl::StrCat(out.path(), "/", id, ".body")));
  EXPECT_EQ(body, kBody);
  ProgramResult inbox_after = Cli(kG22, {"inbox", "--json"});
  ASSERT_EQ(inbox_after.exit_code, kExitOk) << Describe(inbox_after);
  v1::ListInboxResponse drained;
  ASSERT_OK(ParseJson(inbox_after.stdout_text, &drained));
  EXPECT_EQ(drained.total(), 0u)
      << "receive did not acknowledge: " << inbox_after.stdout_text;

  // status ID arrived, as the recipient.
  ProgramResult reported = Cli(kG22, {"status", id, "arrived"});
  ASSERT_EQ(reported.exit_code, kExitOk) << Describe(reported);

  // track ID --json, as the sender: DELIVERED and ARRIVED.
  ProgramResult tracked = Cli(kH49, {"track", id, "--json"});
  ASSERT_EQ(tracked.exit_code, kExitOk) << Describe(tracked);
  v1::DocumentStatus status;
  ASSERT_OK(ParseJson(tracked.stdout_text, &status));
  EXPECT_EQ(status.document_id(), id);
  ASSERT_THAT(status.recipients(), SizeIs(1)) << tracked.stdout_text;
  EXPECT_EQ(status.recipients(0).recipient(), kG22);
  EXPECT_EQ(status.recipients(0).delivery_state(),
            v1::DELIVERY_STATE_DELIVERED);
  EXPECT_EQ(status.recipients(0).business_status(),
            v1::BUSINESS_STATUS_ARRIVED);
  EXPECT_THAT(tracked.stdout_text, HasSubstr("DELIVERY_STATE_DELIVERED"));
  EXPECT_THAT(tracked.stdout_text, HasSubstr("BUSINESS_STATUS_ARRIVED"));
}

TEST_F(CliTest, MalformedRecipientIsRefusedWithExit3) {
  ProgramResult r =
      Cli(kH49, {"send", "--to", "49.H-sai", "--subject", "x", body_file_});
  EXPECT_EQ(r.exit_code, kExitRefused) << Describe(r);
  EXPECT_THAT(r.stderr_text, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(r.stderr_text, HasSubstr("recipients[0]"));
  EXPECT_EQ(r.stdout_text, "");
  ProgramResult inbox = Cli(kG22, {"inbox", "--json"});
  ASSERT_EQ(inbox.exit_code, kExitOk) << Describe(inbox);
  v1::ListInboxResponse listed;
  ASSERT_OK(ParseJson(inbox.stdout_text, &listed));
  EXPECT_EQ(listed.total(), 0u);
}

TEST_F(CliTest, UnreachableEndpointExits4) {
  ASSERT_OK_AND_ASSIGN(int port, PickFreePort());  // nothing listens there
  const absl::Time start = absl::Now();
  ProgramResult r = Cli(
      kH49,
      {"--timeout", "2", "send", "--to", kG22, "--subject", "x", body_file_},
      absl::StrCat("127.0.0.1:", port));
  EXPECT_EQ(r.exit_code, kExitUnavailable) << Describe(r);
  EXPECT_THAT(r.stderr_text, ::testing::AnyOf(HasSubstr("UNAVAILABLE"),
                                              HasSubstr("DEADLINE_EXCEEDED")));
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

TEST_F(CliTest, HealthSaysServingAndExits4WhenUnreachable) {
  ProgramResult serving = Cli(kH49, {"health"});
  EXPECT_EQ(serving.exit_code, kExitOk) << Describe(serving);
  EXPECT_EQ(serving.stdout_text, "SERVING\n") << Describe(serving);

  ProgramResult service =
      Cli(kG22, {"health", "--service", "lienthong.v1.AdminService", "--json"});
  EXPECT_EQ(service.exit_code, kExitOk) << Describe(service);
  EXPECT_THAT(service.stdout_text, HasSubstr("\"status\":\"SERVING\""))
      << Describe(service);

  // A broker's own certificate will do too (what a probe has at hand).
  ASSERT_OK_AND_ASSIGN(
      ProgramResult as_broker,
      RunProgram(
          {LIENTHONG_CLI_PATH, "health", "--endpoint", broker_.endpoint(),
           "--cert", pki_ + "/brokers/central.pem", "--key",
           pki_ + "/brokers/central.key", "--ca", pki_ + "/ca.pem"},
          absl::Seconds(60)));
  EXPECT_EQ(as_broker.exit_code, kExitOk) << Describe(as_broker);
  EXPECT_EQ(as_broker.stdout_text, "SERVING\n") << Describe(as_broker);

  ProgramResult unknown = Cli(kH49, {"health", "--service", "no.such.Service"});
  EXPECT_EQ(unknown.exit_code, kExitRefused) << Describe(unknown);
  EXPECT_THAT(unknown.stderr_text, HasSubstr("NOT_FOUND"));

  ASSERT_OK_AND_ASSIGN(int port, PickFreePort());  // nothing listens there
  const absl::Time start = absl::Now();
  ProgramResult unreachable =
      Cli(kH49, {"--timeout", "2", "health"}, absl::StrCat("127.0.0.1:", port));
  EXPECT_EQ(unreachable.exit_code, kExitUnavailable) << Describe(unreachable);
  EXPECT_EQ(unreachable.stdout_text, "") << Describe(unreachable);
  EXPECT_THAT(unreachable.stderr_text,
              ::testing::AnyOf(HasSubstr("UNAVAILABLE"),
                               HasSubstr("DEADLINE_EXCEEDED")));
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

// `lienthong admin ...` goes through the generated AdminService stubs (the
// SDK's AdminClient): every operator view answers, roles hold.
TEST_F(CliTest, AdminCommandsAnswerOperatorsAndAuditorsOnly) {
  ProgramResult sent =
      Cli(kH49, {"send", "--to", kG22, "--subject", "Kiểm tra", body_file_});
  ASSERT_EQ(sent.exit_code, kExitOk) << Describe(sent);
  std::vector<std::string> words =
      absl::StrSplit(sent.stdout_text, ' ', absl::SkipEmpty());
  ASSERT_GE(words.size(), 2u) << Describe(sent);
  const std::string id = words[1];

  ProgramResult queues = AdminCli("operator", {"admin", "queues", "--json"});
  ASSERT_EQ(queues.exit_code, 0) << queues.stderr_text;
  EXPECT_THAT(queues.stdout_text,
              AllOf(HasSubstr(absl::StrCat("\"org\":\"", kG22, "\"")),
                    HasSubstr("\"waiting\":\"1\"")));

  ProgramResult doc = AdminCli("auditor", {"admin", "document", id, "--json"});
  ASSERT_EQ(doc.exit_code, 0) << doc.stderr_text;
  EXPECT_THAT(doc.stdout_text,
              AllOf(HasSubstr(id), HasSubstr("DELIVERY_STATE_ACCEPTED"),
                    HasSubstr("broker/central")));
  EXPECT_THAT(doc.stdout_text, Not(HasSubstr("Kính gửi")))
      << "an operator view must not carry the content";
  ProgramResult missing =
      AdminCli("operator", {"admin", "document", "01ARZ3NDEKTSV4RRFFQ69G5FAV"});
  EXPECT_EQ(missing.exit_code, 3) << missing.stderr_text;
  EXPECT_THAT(missing.stderr_text, HasSubstr("NOT_FOUND"));

  ProgramResult set = AdminCli("operator", {"admin", "log-level", "debug"});
  ASSERT_EQ(set.exit_code, 0) << set.stderr_text;
  EXPECT_THAT(set.stdout_text, HasSubstr("-> debug"));
  ProgramResult shown = AdminCli("auditor", {"admin", "log-level"});
  EXPECT_EQ(shown.stdout_text, "debug\n");
  ProgramResult refused = AdminCli("auditor", {"admin", "log-level", "error"});
  EXPECT_EQ(refused.exit_code, 3);
  EXPECT_THAT(refused.stderr_text, HasSubstr("PERMISSION_DENIED"));
  ProgramResult bad = AdminCli("operator", {"admin", "log-level", "loud"});
  EXPECT_EQ(bad.exit_code, 3);
  EXPECT_THAT(bad.stderr_text, HasSubstr("INVALID_ARGUMENT"));
  AdminCli("operator", {"admin", "log-level", "info"});

  for (const char* view : {"info", "peers", "directory"}) {
    ProgramResult r = AdminCli("auditor", {"admin", view});
    EXPECT_EQ(r.exit_code, 0) << view << ": " << r.stderr_text;
  }
  ProgramResult directory =
      AdminCli("operator", {"admin", "directory", "--json"});
  EXPECT_THAT(directory.stdout_text, HasSubstr("\"route\":\"local\""));
  // An organization certificate is not a person's: a usage error here.
  ProgramResult as_org = Cli(kH49, {"admin", "queues"});
  EXPECT_EQ(as_org.exit_code, 2) << as_org.stderr_text;
}

TEST_F(CliTest, RecallAnswerAndPaperConversionFromTheCommandLine) {
  ProgramResult sent =
      Cli(kH49, {"send", "--to", kG22, "--subject", "Báo cáo", body_file_});
  ASSERT_EQ(sent.exit_code, kExitOk) << Describe(sent);
  std::vector<std::string> words =
      absl::StrSplit(sent.stdout_text, ' ', absl::SkipEmpty());
  ASSERT_GE(words.size(), 2u) << Describe(sent);
  const std::string id = words[1];
  testing_util::TempDir out;
  ProgramResult received = Cli(kG22, {"receive", "--out", out.path()});
  ASSERT_EQ(received.exit_code, kExitOk) << Describe(received);

  ProgramResult recalled =
      Cli(kH49, {"recall", id, "--reason", "Số liệu sai", "--json"});
  ASSERT_EQ(recalled.exit_code, kExitOk) << Describe(recalled);
  EXPECT_THAT(recalled.stdout_text, HasSubstr(id));
  ProgramResult agreed = Cli(kG22, {"status", id, "agreed"});
  ASSERT_EQ(agreed.exit_code, kExitOk) << Describe(agreed);
  ProgramResult again = Cli(kG22, {"status", id, "refused", "--reason", "x"});
  EXPECT_EQ(again.exit_code, 3) << Describe(again);
  EXPECT_THAT(again.stderr_text, HasSubstr("FAILED_PRECONDITION"));
  ProgramResult tracked = Cli(kH49, {"track", id, "--json"});
  ASSERT_EQ(tracked.exit_code, kExitOk) << Describe(tracked);
  v1::DocumentStatus status;
  ASSERT_OK(ParseJson(tracked.stdout_text, &status));
  ASSERT_THAT(status.recipients(), SizeIs(1)) << tracked.stdout_text;
  EXPECT_EQ(status.recipients(0).delivery_state(), v1::DELIVERY_STATE_RECALLED);
  EXPECT_EQ(status.recipients(0).business_status(), v1::BUSINESS_STATUS_AGREED);

  ProgramResult no_reason = Cli(kG22, {"paper-convert", id});
  EXPECT_EQ(no_reason.exit_code, kExitUsage) << Describe(no_reason);
  ProgramResult empty_reason = Cli(kG22, {"paper-convert", id, "--reason", ""});
  EXPECT_EQ(empty_reason.exit_code, 3) << Describe(empty_reason);
  EXPECT_THAT(empty_reason.stderr_text,
              AllOf(HasSubstr("INVALID_ARGUMENT"), HasSubstr("reason")));
  ProgramResult converted = Cli(
      kG22, {"paper-convert", id, "--reason", "Trình ký", "--by", "Nguyễn A"});
  ASSERT_EQ(converted.exit_code, kExitOk) << Describe(converted);
  ProgramResult mine = Cli(kG22, {"paper-conversions"});
  ASSERT_EQ(mine.exit_code, kExitOk) << Describe(mine);
  EXPECT_THAT(mine.stdout_text, AllOf(HasSubstr(id), HasSubstr("Trình ký"),
                                      HasSubstr("Nguyễn A")));
  ProgramResult audited =
      AdminCli("auditor", {"admin", "paper-conversions", kG22, "--json"});
  ASSERT_EQ(audited.exit_code, kExitOk) << Describe(audited);
  EXPECT_THAT(audited.stdout_text, HasSubstr("Trình ký"));
}

TEST_F(CliTest, MissingRequiredFlagIsAUsageError) {
  ProgramResult r = Cli(kH49, {"send", "--subject", "x", body_file_});
  EXPECT_EQ(r.exit_code, kExitUsage) << Describe(r);
  EXPECT_THAT(r.stderr_text, HasSubstr("--to"));
}

}  // namespace
}  // namespace lienthong::integration
