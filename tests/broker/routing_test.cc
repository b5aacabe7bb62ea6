// The federation route table and directory (Router) on their own: which peer
// a document for an organization goes to next, what is announced to peers,
// and when a send is refused at once as unknown.
#include "lienthong/broker/routing.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

// PeerRoute{.name = ..., .orgs = ...} leaves the other fields at their
// defaults, as intended.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace lienthong::broker {
namespace {

using ::lienthong::testing_util::IsOkAndHolds;
using ::lienthong::testing_util::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Optional;

// The code hierarchy: 000.00.00.H49 > 000.00.23.H49 > 000.01.23.H49 >
// 001.01.23.H49.
constexpr char kH49[] = "000.00.00.H49";
constexpr char kH49Dept[] = "000.00.23.H49";
constexpr char kH49Unit[] = "000.01.23.H49";
constexpr char kH49Team[] = "001.01.23.H49";
constexpr char kH49Other[] = "000.00.24.H49";
constexpr char kG22[] = "000.00.00.G22";
constexpr char kT99[] = "000.00.00.T99";

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);
constexpr absl::Duration kStale = absl::Seconds(90);

DirectoryEntry Entry(const std::string& org, const std::string& broker,
                     uint32_t distance, const std::string& name = "") {
  return DirectoryEntry{org, name, broker, distance};
}

// Comparable view of announced entries.
std::vector<std::string> Describe(const std::vector<DirectoryEntry>& entries) {
  std::vector<std::string> out;
  for (const DirectoryEntry& e : entries) {
    out.push_back(e.org + "@" + e.broker + "/" + std::to_string(e.distance));
  }
  return out;
}

// ---- Route table ------------------------------------------------------------

TEST(RouterTest, ExactOrgBeatsDeepestUnderBeatsProvince) {
  // Declared least specific first and most specific first, so that the
  // order of the configuration cannot be what decides.
  for (bool reversed : {false, true}) {
    std::vector<PeerRoute> peers = {
        {.name = "province", .provinces = {"H49"}},
        {.name = "top", .under = {kH49}},
        {.name = "dept", .under = {kH49Dept}},
        {.name = "exact", .orgs = {kH49Unit}},
    };
    if (reversed) std::reverse(peers.begin(), peers.end());
    Router router(peers, kStale);
    SCOPED_TRACE(reversed ? "reversed" : "in order");
    EXPECT_THAT(router.Route(kH49Unit, {}, kT0), IsOkAndHolds("exact"));
    // Below the exact org, the deepest `under` node wins.
    EXPECT_THAT(router.Route(kH49Team, {}, kT0), IsOkAndHolds("dept"));
    EXPECT_THAT(router.Route(kH49Dept, {}, kT0), IsOkAndHolds("dept"));
    EXPECT_THAT(router.Route(kH49Other, {}, kT0), IsOkAndHolds("top"));
    EXPECT_THAT(router.Route(kH49, {}, kT0), IsOkAndHolds("top"));
  }
}

TEST(RouterTest, UnderBeatsProvinceAndProvinceMatchesTheLastGroup) {
  Router router({{.name = "province", .provinces = {"H49"}},
                 {.name = "dept", .under = {kH49Dept}}},
                kStale);
  EXPECT_THAT(router.Route(kH49Unit, {}, kT0), IsOkAndHolds("dept"));
  EXPECT_THAT(router.Route(kH49Other, {}, kT0), IsOkAndHolds("province"));
  EXPECT_THAT(router.Route(kH49, {}, kT0), IsOkAndHolds("province"));
  EXPECT_THAT(router.Route(kG22, {}, kT0),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(kG22)));
}

TEST(RouterTest, DefaultPeerTakesOnlyWhatNothingElseRoutes) {
  // The default listed first: it must still come last.
  Router router({{.name = "central", .is_default = true},
                 {.name = "h49", .provinces = {"H49"}}},
                kStale);
  EXPECT_THAT(router.Route(kH49Unit, {}, kT0), IsOkAndHolds("h49"));
  EXPECT_THAT(router.Route(kG22, {}, kT0), IsOkAndHolds("central"));
  // A directory entry also beats the default.
  router.Learn("h49", {Entry(kG22, "g22-broker", 1)}, kT0);
  EXPECT_THAT(router.Route(kG22, {}, kT0), IsOkAndHolds("h49"));
}

TEST(RouterTest, PeersOnTheTraceAreSkipped) {
  Router router({{.name = "exact", .orgs = {kH49Unit}},
                 {.name = "dept", .under = {kH49Dept}},
                 {.name = "central", .is_default = true}},
                kStale);
  EXPECT_THAT(router.Route(kH49Unit, {"exact"}, kT0), IsOkAndHolds("dept"));
  EXPECT_THAT(router.Route(kH49Unit, {"exact", "dept"}, kT0),
              IsOkAndHolds("central"));
  EXPECT_THAT(router.Route(kH49Unit, {"exact", "dept", "central"}, kT0),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("no route to 000.01.23.H49"),
                             HasSubstr("already on the document's trace"),
                             HasSubstr("central, dept, exact"))));
}

TEST(RouterTest, NotFoundSaysWhy) {
  Router alone({}, kStale);
  EXPECT_THAT(alone.Route(kG22, {}, kT0),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("no route to 000.00.00.G22"),
                             HasSubstr("this broker has no peers"))));
  Router some({{.name = "h49", .provinces = {"H49"}}}, kStale);
  EXPECT_THAT(
      some.Route(kG22, {}, kT0),
      StatusIs(absl::StatusCode::kNotFound,
               AllOf(HasSubstr("no route to 000.00.00.G22"),
                     HasSubstr("no route table entry, directory entry or "
                               "default peer reaches it"),
                     Not(HasSubstr("trace")))));
}

TEST(RouterTest, IsPeer) {
  Router router({{.name = "a"}, {.name = "b", .is_default = true}}, kStale);
  EXPECT_TRUE(router.IsPeer("a"));
  EXPECT_TRUE(router.IsPeer("b"));
  EXPECT_FALSE(router.IsPeer("c"));
  EXPECT_FALSE(router.IsPeer(""));
}

// ---- Directory --------------------------------------------------------------

TEST(RouterTest, DirectoryRoutesWhenNoConfigRouteMatches) {
  Router router(
      {{.name = "x"}, {.name = "y"}, {.name = "h49", .provinces = {"H49"}}},
      kStale);
  EXPECT_THAT(router.Route(kG22, {}, kT0),
              StatusIs(absl::StatusCode::kNotFound));
  router.Learn("y", {Entry(kG22, "g22-broker", 1)}, kT0);
  EXPECT_THAT(router.Route(kG22, {}, kT0), IsOkAndHolds("y"));
  // A configured route beats what the directory says.
  router.Learn("x", {Entry(kH49Unit, "x", 0)}, kT0);
  EXPECT_THAT(router.Route(kH49Unit, {}, kT0), IsOkAndHolds("h49"));
}

TEST(RouterTest, DirectoryPrefersFewerHops) {
  Router router({{.name = "x"}, {.name = "y"}}, kStale);
  router.Learn("x", {Entry(kG22, "g", 2)}, kT0);
  router.Learn("y", {Entry(kG22, "g", 1)}, kT0);
  EXPECT_THAT(router.Route(kG22, {}, kT0), IsOkAndHolds("y"));
  router.Learn("x", {Entry(kG22, "x", 0)}, kT0);
  EXPECT_THAT(router.Route(kG22, {}, kT0), IsOkAndHolds("x"));
}

TEST(RouterTest, DirectoryPrefersFreshOverStaleEvenWithMoreHops) {
  Router router({{.name = "x"}, {.name = "y"}}, kStale);
  router.Learn("y", {Entry(kG22, "y", 0)}, kT0);
  router.Learn("x", {Entry(kG22, "g", 3)}, kT0 + absl::Seconds(60));
  // Both fresh: fewer hops.
  EXPECT_THAT(router.Route(kG22, {}, kT0 + absl::Seconds(61)),
              IsOkAndHolds("y"));
  // y not heard for more than the stale period: x, though farther.
  EXPECT_THAT(router.Route(kG22, {}, kT0 + absl::Seconds(100)),
              IsOkAndHolds("x"));
  // Both stale: fewer hops again; a stale entry still routes.
  EXPECT_THAT(router.Route(kG22, {}, kT0 + absl::Hours(1)), IsOkAndHolds("y"));
}

TEST(RouterTest, DirectorySkipsPeersAndServingBrokersOnTheTrace) {
  Router router({{.name = "x"}, {.name = "y"}}, kStale);
  router.Learn("x", {Entry(kG22, "g", 1)}, kT0);
  router.Learn("y", {Entry(kG22, "h", 2)}, kT0);
  EXPECT_THAT(router.Route(kG22, {}, kT0), IsOkAndHolds("x"));
  EXPECT_THAT(router.Route(kG22, {"x"}, kT0), IsOkAndHolds("y"));
  // The broker serving G22 through x is on the trace: through x would loop.
  EXPECT_THAT(router.Route(kG22, {"g"}, kT0), IsOkAndHolds("y"));
  EXPECT_THAT(router.Route(kG22, {"g", "h"}, kT0),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(RouterTest, LearnReplacesWhatAPeerAnnouncedAndKeepsTheNearestDuplicate) {
  Router router({{.name = "x"}}, kStale);
  router.Learn("x", {Entry(kG22, "far", 3), Entry(kG22, "near", 1)}, kT0);
  std::vector<PeerDirectory> dir = router.Directory(kT0);
  ASSERT_EQ(dir.size(), 1u);
  EXPECT_THAT(Describe(dir[0].entries), ElementsAre("000.00.00.G22@near/1"));
  router.Learn("x", {Entry(kT99, "x", 0)}, kT0 + absl::Seconds(5));
  dir = router.Directory(kT0 + absl::Seconds(5));
  EXPECT_THAT(Describe(dir[0].entries), ElementsAre("000.00.00.T99@x/0"));
  EXPECT_THAT(router.Route(kG22, {}, kT0),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(RouterTest, DirectoryListsEveryPeerWithHeardAtAndStaleness) {
  Router router({{.name = "x"}, {.name = "y"}}, kStale);
  router.Learn("x", {Entry(kT99, "x", 0), Entry(kG22, "x", 0)}, kT0);
  std::vector<PeerDirectory> dir = router.Directory(kT0 + absl::Seconds(91));
  ASSERT_EQ(dir.size(), 2u);
  EXPECT_EQ(dir[0].peer, "x");
  EXPECT_THAT(dir[0].heard_at, Optional(kT0));
  EXPECT_TRUE(dir[0].stale);
  EXPECT_THAT(Describe(dir[0].entries),
              ElementsAre("000.00.00.G22@x/0", "000.00.00.T99@x/0"));
  EXPECT_EQ(dir[1].peer, "y");
  EXPECT_FALSE(dir[1].heard_at.has_value());
  EXPECT_FALSE(dir[1].stale);
  EXPECT_THAT(dir[1].entries, IsEmpty());
  EXPECT_FALSE(router.Directory(kT0 + absl::Seconds(90))[0].stale);
}

// ---- Announcements ----------------------------------------------------------

TEST(RouterTest, AnnounceToAppliesSplitHorizonAndAddsAHop) {
  Router router({{.name = "x"}, {.name = "y"}}, kStale);
  router.Learn("x", {Entry(kG22, "x", 0)}, kT0);
  router.Learn("y", {Entry(kT99, "z", 1)}, kT0);
  std::vector<DirectoryEntry> own = {Entry(kH49, "me", 0, "UBND tỉnh")};
  // To x: our own, and what y told us one hop farther; not what x told us.
  EXPECT_THAT(Describe(router.AnnounceTo("x", own, 8, kT0)),
              ElementsAre("000.00.00.H49@me/0", "000.00.00.T99@z/2"));
  EXPECT_THAT(Describe(router.AnnounceTo("y", own, 8, kT0)),
              ElementsAre("000.00.00.G22@x/1", "000.00.00.H49@me/0"));
  // Names of own orgs are announced.
  EXPECT_EQ(router.AnnounceTo("x", own, 8, kT0)[0].name, "UBND tỉnh");
}

TEST(RouterTest, AnnounceToDropsEntriesServedByThePeerItself) {
  Router router({{.name = "x"}, {.name = "y"}}, kStale);
  // y tells us about an org x serves: x must not hear it back from us.
  router.Learn("y", {Entry(kG22, "x", 1)}, kT0);
  EXPECT_THAT(router.AnnounceTo("x", {}, 8, kT0), IsEmpty());
}

TEST(RouterTest, AnnounceToKeepsDistancesBelowTheMaximum) {
  Router router({{.name = "x"}, {.name = "y"}}, kStale);
  router.Learn("x", {Entry(kG22, "g", 1), Entry(kT99, "t", 2)}, kT0);
  // distance + 1 must stay below 3: G22 (2) goes, T99 (3) does not.
  EXPECT_THAT(Describe(router.AnnounceTo("y", {}, 3, kT0)),
              ElementsAre("000.00.00.G22@g/2"));
  EXPECT_THAT(Describe(router.AnnounceTo("y", {}, 4, kT0)),
              ElementsAre("000.00.00.G22@g/2", "000.00.00.T99@t/3"));
  EXPECT_THAT(router.AnnounceTo("y", {}, 2, kT0), IsEmpty());
}

TEST(RouterTest, AnnounceToPrefersOwnAndNearestEntries) {
  Router router({{.name = "x"}, {.name = "y"}, {.name = "z"}}, kStale);
  router.Learn("x", {Entry(kG22, "g", 3), Entry(kH49, "h", 0)}, kT0);
  router.Learn("y", {Entry(kG22, "g", 1)}, kT0);
  std::vector<DirectoryEntry> own = {Entry(kH49, "me", 0)};
  EXPECT_THAT(Describe(router.AnnounceTo("z", own, 8, kT0)),
              ElementsAre("000.00.00.G22@g/2", "000.00.00.H49@me/0"));
}

// An outage does not make organizations unknown: what a stale peer
// announced is passed on (it still routes there, after fresh entries).
TEST(RouterTest, AnnounceToKeepsStalePeersEntries) {
  Router router({{.name = "x"}, {.name = "y"}}, kStale);
  router.Learn("x", {Entry(kG22, "x", 0)}, kT0);
  EXPECT_THAT(router.AnnounceTo("y", {}, 8, kT0 + absl::Seconds(90)),
              ElementsAre(Field(&DirectoryEntry::org, kG22)));
  EXPECT_THAT(router.AnnounceTo("y", {}, 8, kT0 + absl::Hours(1)),
              ElementsAre(Field(&DirectoryEntry::org, kG22)));
}

// A broker's route table patterns travel in announcements, so that an
// organization behind a broker that is down is still known to be reachable.
TEST(RouterTest, AnnouncedRoutePatternsKeepOrgsReachable) {
  Router centre({{.name = "h49"},
                 {.name = "h51", .provinces = {"H51"}},
                 {.name = "h52", .under = {"000.00.00.H52"}}},
                kStale);
  Router::Patterns to_h49 = centre.PatternsFor("h49");
  EXPECT_THAT(to_h49.provinces, ElementsAre("H51"));
  EXPECT_THAT(to_h49.under, ElementsAre("000.00.00.H52"));
  EXPECT_THAT(centre.PatternsFor("h51").provinces, IsEmpty());

  Router h49({{.name = "central", .is_default = true}}, kStale);
  h49.Learn("central", {Entry(kG22, "central", 0)}, kT0);
  EXPECT_TRUE(h49.KnownUnreachable("000.01.23.H51", kT0));
  h49.LearnPatterns("central", to_h49);
  EXPECT_FALSE(h49.KnownUnreachable("000.01.23.H51", kT0));
  EXPECT_FALSE(h49.KnownUnreachable("000.00.23.H52", kT0));
  EXPECT_TRUE(h49.KnownUnreachable("000.01.23.H53", kT0));
}

// ---- KnownUnreachable -------------------------------------------------------

TEST(RouterTest, KnownUnreachableWhenNothingRoutes) {
  Router alone({}, kStale);
  EXPECT_TRUE(alone.KnownUnreachable(kG22, kT0));
  Router some({{.name = "h49", .provinces = {"H49"}}}, kStale);
  EXPECT_TRUE(some.KnownUnreachable(kG22, kT0));
  EXPECT_FALSE(some.KnownUnreachable(kH49Unit, kT0));
}

TEST(RouterTest, KnownUnreachableGivesTheBenefitOfDoubtUntilEveryPeerSpoke) {
  Router router({{.name = "central", .is_default = true}, {.name = "x"}},
                kStale);
  // Routable through the default, no peer heard from: the far end decides.
  EXPECT_FALSE(router.KnownUnreachable(kG22, kT0));
  router.Learn("central", {Entry(kT99, "t", 1)}, kT0);
  // x has never announced: still the benefit of the doubt.
  EXPECT_FALSE(router.KnownUnreachable(kG22, kT0));
  router.Learn("x", {}, kT0);
  // Every peer spoke and none reaches G22.
  EXPECT_TRUE(router.KnownUnreachable(kG22, kT0));
  EXPECT_FALSE(router.KnownUnreachable(kT99, kT0));
  // One of them reaching it is enough, even stale.
  router.Learn("x", {Entry(kG22, "x", 0)}, kT0);
  EXPECT_FALSE(router.KnownUnreachable(kG22, kT0 + absl::Hours(1)));
}

TEST(RouterTest, KnownUnreachableIsFalseForAnExplicitRoute) {
  Router router({{.name = "g22", .orgs = {kG22}}, {.name = "x"}}, kStale);
  router.Learn("g22", {}, kT0);
  router.Learn("x", {}, kT0);
  // No directory entry, but the route table names it.
  EXPECT_FALSE(router.KnownUnreachable(kG22, kT0));
  EXPECT_TRUE(router.KnownUnreachable(kT99, kT0));
}

// ---- Validation -------------------------------------------------------------

TEST(PeerRouteTest, ValidRouteIsOk) {
  PeerRoute p{.name = "h49-broker_1.x",
              .orgs = {kG22},
              .under = {kH49Dept},
              .provinces = {"H49"},
              .is_default = true};
  EXPECT_OK(p.Validate("peers[0]"));
}

TEST(PeerRouteTest, ErrorsNameTheField) {
  EXPECT_THAT(PeerRoute{}.Validate("peers[2]"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("peers[2].name: required")));
  EXPECT_THAT(
      PeerRoute{.name = "bad/name"}.Validate("peers[0]"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("peers[0].name:"), HasSubstr("bad/name"))));
  EXPECT_THAT(
      (PeerRoute{.name = "a", .orgs = {kG22, "G22"}}.Validate("peers[1]")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("peers[1].serves.orgs[1]")));
  EXPECT_THAT(
      (PeerRoute{.name = "a", .under = {"000.00.00.h49"}}.Validate("peers[0]")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("peers[0].serves.under[0]")));
  for (const char* bad : {"h49", "H4", "H490", "49H", ""}) {
    EXPECT_THAT((PeerRoute{.name = "a", .provinces = {"H50", bad}}.Validate(
                    "peers[3]")),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("peers[3].serves.provinces[1]")))
        << bad;
  }
}

}  // namespace
}  // namespace lienthong::broker

namespace lienthong::broker {
namespace {

TEST(RouterLearnTest, ReportsAChangeAndFindsTheBestEntryWithItsCertificate) {
  Router router({}, absl::Seconds(90));
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  DirectoryEntry far{"000.00.00.H51", "", "h51", 1, {"h51"}, ""};
  EXPECT_TRUE(router.Learn("central", {far}, t0));
  // The same announcement again is no change; a published certificate is.
  EXPECT_FALSE(router.Learn("central", {far}, t0 + absl::Seconds(30)));
  far.encryption_certificate = "der";
  EXPECT_TRUE(router.Learn("central", {far}, t0 + absl::Seconds(60)));
  std::optional<DirectoryEntry> found =
      router.Find("000.00.00.H51", t0 + absl::Seconds(60));
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->encryption_certificate, "der");
  EXPECT_EQ(found->broker, "h51");
  EXPECT_FALSE(router.Find("000.00.00.H52", t0).has_value());
  // A fresh, nearer entry wins over a stale one.
  DirectoryEntry near{"000.00.00.H51", "", "h51", 0, {}, "der2"};
  router.Learn("h51", {near}, t0 + absl::Seconds(200));
  found = router.Find("000.00.00.H51", t0 + absl::Seconds(200));
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->encryption_certificate, "der2");
}

}  // namespace
}  // namespace lienthong::broker
