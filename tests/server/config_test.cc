#include "broker/server/src/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace lienthong::server {
namespace {

using ::testing::HasSubstr;

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
