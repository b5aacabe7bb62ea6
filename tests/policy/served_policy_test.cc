// ServedPolicy: a bad policy (from the file or from Apply) is rejected as a
// whole and the previous one keeps serving; a good one is swapped in; Apply
// persists; the decision log and dry runs report exactly what would change.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/policy/policy.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::policy {
namespace {

using ::lienthong::testing_util::kAsyncTimeout;
using ::lienthong::testing_util::StatusIs;
using ::lienthong::testing_util::TempDir;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::StartsWith;

constexpr char kV1[] = R"(groups:
  h49:
    under: [000.00.00.H49]
rules:
  - name: h49-to-centre
    effect: permit
    sender: {groups: [h49]}
    recipient: {orgs: [000.00.00.G22]}
    obligations: {retention: 365d}
  - name: centre-to-h49
    effect: permit
    sender: {orgs: [000.00.00.G22]}
    recipient: {groups: [h49]}
)";

// v1 with: AI-written documents to the centre forbidden, H50 may send to the
// centre, and a longer retention for h49-to-centre.
constexpr char kV2[] = R"(groups:
  h49:
    under: [000.00.00.H49]
rules:
  - name: h49-to-centre
    effect: permit
    sender: {groups: [h49]}
    recipient: {orgs: [000.00.00.G22]}
    obligations: {retention: 3650d}
  - name: centre-to-h49
    effect: permit
    sender: {orgs: [000.00.00.G22]}
    recipient: {groups: [h49]}
  - name: h50-to-centre
    effect: permit
    sender: {provinces: [H50]}
    recipient: {orgs: [000.00.00.G22]}
  - name: no-ai-to-centre
    effect: forbid
    recipient: {orgs: [000.00.00.G22]}
    origins: [ai]
)";

// Line 7 refers to a group that does not exist.
constexpr char kBad[] = R"(groups:
  h49:
    under: [000.00.00.H49]
rules:
  - name: h49-to-centre
    effect: permit
    sender: {groups: [h94]}
)";

Flow MakeFlow(const char* sender, const char* recipient,
              Origin origin = Origin::kPerson) {
  Flow f;
  f.sender = sender;
  f.recipient = recipient;
  f.document_type = "Công văn";
  f.origin = origin;
  return f;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Replaces the file as an editor or a deployment would: all at once.
void WriteFile(const std::string& path, const std::string& text) {
  std::string tmp = path + ".writing";
  { std::ofstream(tmp) << text; }
  ASSERT_EQ(std::rename(tmp.c_str(), path.c_str()), 0);
}

class ServedPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.path() + "/central.yaml";
    WriteFile(path_, kV1);
  }

  ServedPolicyOptions Options(
      absl::Duration reload_interval = absl::ZeroDuration()) {
    ServedPolicyOptions o;
    o.path = path_;
    o.reload_interval = reload_interval;
    return o;
  }

  TempDir dir_;
  std::string path_;
};

TEST_F(ServedPolicyTest, OpensTheFile) {
  ASSERT_OK_AND_ASSIGN(auto served, ServedPolicy::Open(Options()));
  ASSERT_OK_AND_ASSIGN(auto v1, Policy::Compile(kV1, "x"));
  EXPECT_EQ(served->Current()->version(), v1->version());
  EXPECT_OK(served->last_reload_status());
  EXPECT_TRUE(
      served->Decide(MakeFlow("000.00.00.H49", "000.00.00.G22"), absl::Now())
          .permitted());
}

TEST_F(ServedPolicyTest, OpenFailsOnABadOrMissingFile) {
  WriteFile(path_, kBad);
  EXPECT_THAT(ServedPolicy::Open(Options()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(StartsWith(path_ + ":7:"), HasSubstr("h94"))));
  ServedPolicyOptions missing = Options();
  missing.path = dir_.path() + "/absent.yaml";
  EXPECT_THAT(ServedPolicy::Open(missing),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ServedPolicyTest, ABadFileIsRejectedAndTheOldPolicyKeepsServing) {
  ASSERT_OK_AND_ASSIGN(auto served, ServedPolicy::Open(Options()));
  std::shared_ptr<const Policy> before = served->Current();

  WriteFile(path_, kBad);
  EXPECT_THAT(served->ReloadFromFile(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(StartsWith(path_ + ":7:"), HasSubstr("h94"))));
  EXPECT_EQ(served->Current(), before);
  EXPECT_TRUE(
      served->Decide(MakeFlow("000.00.00.H49", "000.00.00.G22"), absl::Now())
          .permitted());

  WriteFile(path_, kV2);
  EXPECT_OK(served->ReloadFromFile());
  ASSERT_OK_AND_ASSIGN(auto v2, Policy::Compile(kV2, "x"));
  EXPECT_EQ(served->Current()->version(), v2->version());
  EXPECT_NE(served->Current()->version(), before->version());
  EXPECT_FALSE(
      served
          ->Decide(MakeFlow("000.00.00.H49", "000.00.00.G22", Origin::kAi),
                   absl::Now())
          .permitted());
}

TEST_F(ServedPolicyTest, AnUnchangedFileIsNotRecompiled) {
  ASSERT_OK_AND_ASSIGN(auto served, ServedPolicy::Open(Options()));
  std::shared_ptr<const Policy> before = served->Current();
  absl::Time loaded = served->loaded_at();
  EXPECT_OK(served->ReloadFromFile());
  EXPECT_EQ(served->Current(), before);
  EXPECT_EQ(served->loaded_at(), loaded);
}

// Polls `done` until it holds or the async timeout passes.
template <typename F>
bool Eventually(F done) {
  absl::Time deadline = absl::Now() + kAsyncTimeout;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

TEST_F(ServedPolicyTest, TheWatcherRejectsABadFileAndSwapsInAGoodOne) {
  ASSERT_OK_AND_ASSIGN(auto served,
                       ServedPolicy::Open(Options(absl::Milliseconds(10))));
  std::shared_ptr<const Policy> before = served->Current();

  WriteFile(path_, kBad);
  ASSERT_TRUE(Eventually([&] { return !served->last_reload_status().ok(); }));
  EXPECT_THAT(served->last_reload_status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(StartsWith(path_ + ":7:"), HasSubstr("h94"))));
  EXPECT_EQ(served->Current(), before);

  WriteFile(path_, kV2);
  ASSERT_TRUE(Eventually([&] { return served->Current() != before; }));
  ASSERT_OK_AND_ASSIGN(auto v2, Policy::Compile(kV2, "x"));
  EXPECT_EQ(served->Current()->version(), v2->version());
  ASSERT_TRUE(Eventually([&] { return served->last_reload_status().ok(); }));
  EXPECT_GE(served->loaded_at(), absl::Now() - kAsyncTimeout);
}

TEST_F(ServedPolicyTest, ApplyWritesTheFileAndSwaps) {
  ASSERT_OK_AND_ASSIGN(auto served, ServedPolicy::Open(Options()));
  std::shared_ptr<const Policy> before = served->Current();

  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Policy> applied,
                       served->Apply(kV2));
  EXPECT_EQ(served->Current(), applied);
  EXPECT_NE(applied->version(), before->version());
  EXPECT_EQ(ReadFile(path_), kV2);
  // No temporary left beside the policy file.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);

  // The file now matches what serves: a reload changes nothing.
  EXPECT_OK(served->ReloadFromFile());
  EXPECT_EQ(served->Current(), applied);

  // Applying the serving version again is a no-op.
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Policy> again, served->Apply(kV2));
  EXPECT_EQ(again->version(), applied->version());
  EXPECT_EQ(served->Current(), applied);
}

TEST_F(ServedPolicyTest, ApplyDoesNotWriteThroughALinkAtATemporaryName) {
  // A link planted where Apply once wrote its temporary file (the name was
  // the policy file's plus the pid) must not make the broker overwrite the
  // file it points to: temporaries are made with names nobody can foresee.
  const std::string victim = dir_.path() + "/victim";
  WriteFile(victim, "keep me");
  const std::string planted = absl::StrCat(path_, ".tmp.", ::getpid());
  ASSERT_EQ(::symlink(victim.c_str(), planted.c_str()), 0)
      << std::strerror(errno);

  ASSERT_OK_AND_ASSIGN(auto served, ServedPolicy::Open(Options()));
  ASSERT_OK(served->Apply(kV2));
  EXPECT_EQ(ReadFile(victim), "keep me");
  EXPECT_EQ(ReadFile(path_), kV2);
  struct stat st;
  EXPECT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode)) << "the policy file became a link";
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path()))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_THAT(names, ElementsAre("central.yaml",
                                 absl::StrCat("central.yaml.tmp.", ::getpid()),
                                 "victim"))
      << "a temporary was left";
}

TEST_F(ServedPolicyTest, AFileEditSwappedInIsReportedWithTheVersionBefore) {
  std::vector<std::pair<std::string, std::string>> reported;  // now, before
  ServedPolicyOptions options = Options();
  options.on_file_reload = [&](const Policy& serving,
                               const std::string& before) {
    reported.emplace_back(serving.version(), before);
  };
  ASSERT_OK_AND_ASSIGN(auto served, ServedPolicy::Open(options));
  const std::string v1 = served->Current()->version();
  EXPECT_THAT(reported, IsEmpty()) << "opening is not an edit";

  WriteFile(path_, kV2);
  ASSERT_OK(served->ReloadFromFile());
  const std::string v2 = served->Current()->version();
  ASSERT_NE(v1, v2);
  EXPECT_THAT(reported, ElementsAre(std::make_pair(v2, v1)));

  // Unchanged, broken, or applied through Apply (audited by its caller):
  // nothing more is reported.
  ASSERT_OK(served->ReloadFromFile());
  WriteFile(path_, kBad);
  EXPECT_FALSE(served->ReloadFromFile().ok());
  ASSERT_OK(served->Apply(kV1));
  EXPECT_THAT(reported, SizeIs(1));
}

TEST_F(ServedPolicyTest, ApplyRejectsABadPolicyAndKeepsTheFile) {
  ASSERT_OK_AND_ASSIGN(auto served, ServedPolicy::Open(Options()));
  std::shared_ptr<const Policy> before = served->Current();
  auto applied = served->Apply(kBad);
  EXPECT_THAT(applied, StatusIs(absl::StatusCode::kInvalidArgument,
                                AllOf(HasSubstr(":7:"), HasSubstr("h94"))));
  EXPECT_EQ(served->Current(), before);
  EXPECT_EQ(ReadFile(path_), kV1);
}

TEST(ServedPolicyEmbeddedTest, ServesTheEmbeddedTextAndPersistsNothing) {
  ServedPolicyOptions o;
  o.embedded_source = kV1;
  o.reload_interval = absl::ZeroDuration();
  ASSERT_OK_AND_ASSIGN(auto served, ServedPolicy::Open(o));
  EXPECT_TRUE(
      served->Decide(MakeFlow("000.00.00.H49", "000.00.00.G22"), absl::Now())
          .permitted());
  ASSERT_OK_AND_ASSIGN(auto applied, served->Apply(kV2));
  EXPECT_EQ(served->Current(), applied);
  EXPECT_FALSE(
      served
          ->Decide(MakeFlow("000.00.00.H49", "000.00.00.G22", Origin::kAi),
                   absl::Now())
          .permitted());
}

TEST_F(ServedPolicyTest, DecideRecordsDecisionsWithTheDecidingPolicy) {
  ASSERT_OK_AND_ASSIGN(auto served, ServedPolicy::Open(Options()));
  const absl::Time t0 = absl::FromUnixSeconds(1'700'000'000);
  std::shared_ptr<const Policy> decided_by;
  Decision d = served->Decide(MakeFlow("000.00.00.H49", "000.00.00.G22"), t0,
                              &decided_by);
  EXPECT_TRUE(d.permitted());
  EXPECT_EQ(decided_by, served->Current());
  served->Decide(MakeFlow("000.00.00.H50", "000.00.00.G22"),
                 t0 + absl::Seconds(1));

  std::vector<RecordedDecision> log = served->decisions().Recent(10);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].at, t0);
  EXPECT_EQ(log[0].flow.sender, "000.00.00.H49");
  EXPECT_EQ(log[0].effect, Effect::kPermit);
  EXPECT_EQ(log[0].policy_version, decided_by->version());
  EXPECT_THAT(log[0].rules, ElementsAre("h49-to-centre"));
  EXPECT_EQ(log[0].obligations.retention, absl::Hours(24 * 365));
  EXPECT_EQ(log[1].flow.sender, "000.00.00.H50");
  EXPECT_EQ(log[1].effect, Effect::kDeny);
  EXPECT_THAT(log[1].rules, IsEmpty());
}

TEST(DecisionLogTest, KeepsTheNewestOldestFirst) {
  ASSERT_OK_AND_ASSIGN(auto policy, Policy::Compile(kV1, "central.yaml"));
  DecisionLog log(3);
  const char* senders[] = {"000.00.00.H49", "000.00.01.H49", "000.00.02.H49",
                           "000.00.03.H49", "000.00.04.H49"};
  for (int i = 0; i < 5; ++i) {
    Flow f = MakeFlow(senders[i], "000.00.00.G22");
    log.Record(absl::FromUnixSeconds(i), f, policy->Evaluate(f), *policy);
  }
  std::vector<RecordedDecision> all = log.Recent(10);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].flow.sender, "000.00.02.H49");
  EXPECT_EQ(all[1].flow.sender, "000.00.03.H49");
  EXPECT_EQ(all[2].flow.sender, "000.00.04.H49");
  std::vector<RecordedDecision> two = log.Recent(2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].flow.sender, "000.00.03.H49");
  EXPECT_EQ(two[1].flow.sender, "000.00.04.H49");
  EXPECT_THAT(log.Recent(0), IsEmpty());
}

TEST_F(ServedPolicyTest, DryRunReportsExactlyTheDecisionsThatChange) {
  ASSERT_OK_AND_ASSIGN(auto served, ServedPolicy::Open(Options()));
  const absl::Time t0 = absl::FromUnixSeconds(1'700'000'000);
  const Flow flows[] = {
      MakeFlow("000.00.00.H49",
               "000.00.00.G22"),  // permit; retention 365d → 3650d
      MakeFlow("000.00.00.G22", "000.01.23.H49"),  // permit, unchanged
      MakeFlow("000.01.23.H49", "000.00.00.G22",
               Origin::kAi),                       // permit → forbidden
      MakeFlow("000.00.00.H50", "000.00.00.H49"),  // deny, unchanged
      MakeFlow("000.00.00.H50", "000.00.00.G22"),  // deny → permit
      MakeFlow("000.00.00.H50", "000.00.00.G22", Origin::kAi),  // deny → deny
  };
  for (int i = 0; i < 6; ++i) served->Decide(flows[i], t0 + absl::Seconds(i));

  ASSERT_OK_AND_ASSIGN(auto v2, Policy::Compile(kV2, "central.yaml"));
  DryRunReport report = DryRun(served->decisions().Recent(100), *v2);
  EXPECT_EQ(report.examined, 6u);
  EXPECT_EQ(report.unchanged, 3u);
  ASSERT_EQ(report.changes.size(), 3u);

  const DecisionChange& longer = report.changes[0];
  EXPECT_EQ(longer.before.at, t0);
  EXPECT_EQ(longer.before.effect, Effect::kPermit);
  EXPECT_EQ(longer.after_effect, Effect::kPermit);
  EXPECT_EQ(longer.before.obligations.retention, absl::Hours(24 * 365));
  EXPECT_EQ(longer.after_obligations.retention, absl::Hours(24 * 3650));
  EXPECT_THAT(longer.after_rules, ElementsAre("h49-to-centre"));

  const DecisionChange& forbidden = report.changes[1];
  EXPECT_EQ(forbidden.before.flow.sender, "000.01.23.H49");
  EXPECT_EQ(forbidden.before.effect, Effect::kPermit);
  EXPECT_EQ(forbidden.after_effect, Effect::kDeny);
  EXPECT_THAT(forbidden.after_rules, ElementsAre("no-ai-to-centre"));
  EXPECT_TRUE(forbidden.after_obligations.empty());

  const DecisionChange& permitted = report.changes[2];
  EXPECT_EQ(permitted.before.flow.sender, "000.00.00.H50");
  EXPECT_EQ(permitted.before.flow.origin, Origin::kPerson);
  EXPECT_EQ(permitted.before.effect, Effect::kDeny);
  EXPECT_EQ(permitted.after_effect, Effect::kPermit);
  EXPECT_THAT(permitted.after_rules, ElementsAre("h50-to-centre"));

  // Against the serving policy itself nothing changes.
  DryRunReport same =
      DryRun(served->decisions().Recent(100), *served->Current());
  EXPECT_EQ(same.examined, 6u);
  EXPECT_EQ(same.unchanged, 6u);
  EXPECT_THAT(same.changes, IsEmpty());
}

}  // namespace
}  // namespace lienthong::policy
