#include "lienthong/common/identity.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace lienthong {
namespace {

using ::lienthong::testing_util::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(ParseSpiffeIdTest, Org) {
  ASSERT_OK_AND_ASSIGN(
      Principal p, ParseSpiffeId("spiffe://lienthong.local/org/000.01.23.H49"));
  EXPECT_EQ(p.kind, Principal::Kind::kOrg);
  EXPECT_TRUE(p.is_org());
  EXPECT_EQ(p.trust_domain, "lienthong.local");
  EXPECT_EQ(p.name, "000.01.23.H49");
  EXPECT_EQ(p.spiffe_id, "spiffe://lienthong.local/org/000.01.23.H49");
}

TEST(ParseSpiffeIdTest, Broker) {
  ASSERT_OK_AND_ASSIGN(Principal p,
                       ParseSpiffeId("spiffe://lt.gov.vn/broker/central"));
  EXPECT_EQ(p.kind, Principal::Kind::kBroker);
  EXPECT_FALSE(p.is_org());
  EXPECT_EQ(p.trust_domain, "lt.gov.vn");
  EXPECT_EQ(p.name, "central");
  EXPECT_EQ(p.spiffe_id, "spiffe://lt.gov.vn/broker/central");
}

TEST(ParseSpiffeIdTest, Person) {
  ASSERT_OK_AND_ASSIGN(
      Principal p,
      ParseSpiffeId("spiffe://lienthong.local/person/nguyen-van_a.01"));
  EXPECT_EQ(p.kind, Principal::Kind::kPerson);
  EXPECT_FALSE(p.is_org());
  EXPECT_EQ(p.name, "nguyen-van_a.01");
}

TEST(SpiffeIdTest, BuildsWhatParseReads) {
  for (auto [kind, name] : {std::pair{Principal::Kind::kOrg, "000.00.00.H49"},
                            std::pair{Principal::Kind::kBroker, "central"},
                            std::pair{Principal::Kind::kPerson, "auditor-1"}}) {
    std::string id = SpiffeId("lt.gov.vn", kind, name);
    ASSERT_OK_AND_ASSIGN(Principal p, ParseSpiffeId(id));
    EXPECT_EQ(p.kind, kind);
    EXPECT_EQ(p.name, name);
    EXPECT_EQ(p.spiffe_id, id);
  }
  EXPECT_EQ(SpiffeId("lt.gov.vn", Principal::Kind::kOrg, "000.00.00.H49"),
            "spiffe://lt.gov.vn/org/000.00.00.H49");
  EXPECT_EQ(KindName(Principal::Kind::kOrg), "org");
  EXPECT_EQ(KindName(Principal::Kind::kBroker), "broker");
  EXPECT_EQ(KindName(Principal::Kind::kPerson), "person");
}

struct MalformedId {
  std::string uri;
  std::string defect;  // what the message must say
};

TEST(ParseSpiffeIdTest, RejectsMalformedIdsNamingTheDefect) {
  const MalformedId cases[] = {
      {"", "scheme must be spiffe://"},
      {"https://lienthong.local/org/000.00.00.H49", "scheme must be spiffe://"},
      {"spiffe:/lienthong.local/org/000.00.00.H49", "scheme must be spiffe://"},
      {"spiffe://lienthong.local",
       "expected spiffe://<trust-domain>/<org|broker|person>/<name>"},
      {"spiffe://lienthong.local/org", "expected spiffe://<trust-domain>"},
      {"spiffe://lienthong.local/org/000.00.00.H49/",
       "expected spiffe://<trust-domain>"},
      {"spiffe://lienthong.local/org/000.00.00.H49/x",
       "expected spiffe://<trust-domain>"},
      {"spiffe:///org/000.00.00.H49", "empty trust domain"},
      {"spiffe://lien thong/org/000.00.00.H49",
       "bad character in trust domain"},
      {"spiffe://lienthong.local:8443/org/000.00.00.H49",
       "bad character in trust domain"},
      {"spiffe://lienthong.local/service/000.00.00.H49",
       "kind must be org, broker or person"},
      {"spiffe://lienthong.local/ORG/000.00.00.H49",
       "kind must be org, broker or person"},
      {"spiffe://lienthong.local//000.00.00.H49",
       "kind must be org, broker or person"},
      {"spiffe://lienthong.local/broker/", "empty name"},
      {"spiffe://lienthong.local/person/a%20b", "bad character in name"},
      {"spiffe://lienthong.local/person/a?b=c", "bad character in name"},
      {"spiffe://lienthong.local/org/H49", "wrong length"},
      {"spiffe://lienthong.local/org/000.00.00.h49",
       "upper-case letter and two digits"},
      {"spiffe://lienthong.local/org/000.01.00.H49",
       "level-3 group is set under an empty"},
  };
  for (const MalformedId& c : cases) {
    SCOPED_TRACE(c.uri);
    EXPECT_THAT(ParseSpiffeId(c.uri),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("\"" + c.uri +
                                         "\" is not a Liên Thông identity"),
                               HasSubstr(c.defect))));
  }
}

}  // namespace
}  // namespace lienthong
