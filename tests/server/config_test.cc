#include "broker/server/src/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "lienthong/policy/policy.h"
#include "tests/testing/status_matchers.h"

namespace lienthong::server {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(ConfigTest, EmptyFileKeepsEmbeddedDefaults) {
  absl::StatusOr<BrokerConfig> c = ParseConfig("", "broker.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "127.0.0.1:7443");
  EXPECT_EQ(c->SpiffeId(), "spiffe://lienthong.local/broker/central");
  EXPECT_EQ(c->orgs.size(), 4u);
}

TEST(ConfigTest, FullFileIsRead) {
  absl::StatusOr<BrokerConfig> c = ParseConfig(R"(
broker:
  name: h49
  trust_domain: lienthong.gov.vn
listen: 0.0.0.0:8443
data_dir: data/h49
tls:
  certificate: pki/brokers/h49.pem
  private_key: pki/brokers/h49.key
  ca: /etc/lienthong/ca.pem
  refresh_seconds: 30
orgs:
  - code: 000.00.00.H49
    name: UBND tỉnh
  - code: 000.01.23.H49
limits:
  max_document_bytes: 1048576
  max_recipients: 50
  default_max_in_flight: 64
storage:
  block_cache_bytes: 16777216
worker_threads: 2
policy:
  file: policy/h49.yaml
  reload_seconds: 5
  decision_log_size: 500
roles:
  operator: [tran-thi-b]
  auditor: [kiem-toan, le-van-c]
)",
                                               "/etc/lienthong/broker.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->SpiffeId(), "spiffe://lienthong.gov.vn/broker/h49");
  EXPECT_EQ(c->listen, "0.0.0.0:8443");
  EXPECT_EQ(c->data_dir, "/etc/lienthong/data/h49");  // relative to the file
  EXPECT_EQ(c->tls.certificate, "/etc/lienthong/pki/brokers/h49.pem");
  EXPECT_EQ(c->tls.ca, "/etc/lienthong/ca.pem");
  EXPECT_EQ(c->tls.refresh, absl::Seconds(30));
  ASSERT_EQ(c->orgs.size(), 2u);
  EXPECT_EQ(c->orgs[0].name, "UBND tỉnh");
  EXPECT_EQ(c->max_document_bytes, 1048576u);
  EXPECT_EQ(c->max_recipients, 50u);
  EXPECT_EQ(c->default_max_in_flight, 64u);
  EXPECT_EQ(c->block_cache_bytes, 16777216u);
  EXPECT_EQ(c->worker_threads, 2);
  EXPECT_EQ(c->policy.path, "/etc/lienthong/policy/h49.yaml");
  EXPECT_EQ(c->policy.reload_interval, absl::Seconds(5));
  EXPECT_EQ(c->policy.decision_log_size, 500u);
  EXPECT_THAT(c->PersonIds(c->roles.operators),
              ElementsAre("spiffe://lienthong.gov.vn/person/tran-thi-b"));
  EXPECT_THAT(c->roles.auditors, ElementsAre("kiem-toan", "le-van-c"));
}

TEST(ConfigTest, OwnOrgsNeedAPolicyFile) {
  absl::StatusOr<BrokerConfig> c = ParseConfig(
      "listen: 127.0.0.1:1\norgs:\n  - code: 000.00.00.H49\n", "b.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(
      std::string(c.status().message()),
      AllOf(StartsWith("b.yaml:3:3: "), HasSubstr("policy.file is required")));
  // The embedded demo orgs come with the embedded development policy.
  c = ParseConfig("listen: 127.0.0.1:1\n", "b.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->policy.path.empty());
  EXPECT_OK(policy::Policy::Compile(EmbeddedDevelopmentPolicy(), "embedded")
                .status());
}

TEST(ConfigTest, BadRolesAndPolicyFieldsAreNamed) {
  absl::StatusOr<BrokerConfig> c =
      ParseConfig("roles:\n  operator: alice\n", "b.yaml");
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(StartsWith("b.yaml:2:13: "), HasSubstr("list of person")));
  c = ParseConfig("roles:\n  admin: [alice]\n", "b.yaml");
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(StartsWith("b.yaml:2:3: "), HasSubstr("unknown field")));
  c = ParseConfig("policy:\n  reload_seconds: -1\n", "b.yaml");
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("reload_seconds"));
}

TEST(ConfigTest, UnknownFieldIsNamedWithLineAndColumn) {
  absl::StatusOr<BrokerConfig> c =
      ParseConfig("listen: 127.0.0.1:1\nlisten_port: 7\n", "b.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(),
              HasSubstr("b.yaml:2:1: unknown field \"listen_port\""));
}

TEST(ConfigTest, MalformedOrgCodeIsNamed) {
  absl::StatusOr<BrokerConfig> c =
      ParseConfig("orgs:\n  - code: 000.00.00.h49\n", "b.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("b.yaml:2:11"));
  EXPECT_THAT(c.status().message(), HasSubstr("orgs[0].code"));
}

TEST(ConfigTest, DuplicateOrgIsRefused) {
  absl::StatusOr<BrokerConfig> c = ParseConfig(
      "orgs:\n  - code: 000.00.00.H49\n  - code: 000.00.00.H49\n", "b.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("listed twice"));
}

TEST(ConfigTest, OutOfRangeNumberIsRefused) {
  absl::StatusOr<BrokerConfig> c =
      ParseConfig("limits:\n  max_recipients: 0\n", "b.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(),
              HasSubstr("b.yaml:2:19: max_recipients must be between 1"));
  c = ParseConfig("worker_threads: many\n", "b.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(),
              HasSubstr("worker_threads must be an integer"));
}

TEST(ConfigTest, BrokenYamlSaysWhere) {
  absl::StatusOr<BrokerConfig> c = ParseConfig("broker: [unclosed\n", "b.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("b.yaml:"));
}

TEST(ConfigTest, BadBrokerNameIsRefused) {
  absl::StatusOr<BrokerConfig> c =
      ParseConfig("broker:\n  name: bad/name\n", "b.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("broker.name"));
}

TEST(ConfigTest, ListenNeedsAPort) {
  absl::StatusOr<BrokerConfig> c = ParseConfig("listen: localhost\n", "b.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("listen"));
}

}  // namespace
}  // namespace lienthong::server
