#include "broker/server/src/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
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

TEST(ConfigTest, RevocationAndConnectionAgeAreRead) {
  absl::StatusOr<BrokerConfig> c = ParseConfig("", "broker.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls.crl_directory, "");  // off by default
  EXPECT_EQ(c->tls.max_connection_age, absl::Hours(1));
  EXPECT_EQ(c->tls.max_connection_age_grace, absl::Seconds(30));

  c = ParseConfig(R"(
tls:
  crl_directory: pki/crl
  max_connection_age_seconds: 600
  max_connection_age_grace_seconds: 5
)",
                  "/etc/lienthong/broker.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls.crl_directory, "/etc/lienthong/pki/crl");
  EXPECT_EQ(c->tls.max_connection_age, absl::Seconds(600));
  EXPECT_EQ(c->tls.max_connection_age_grace, absl::Seconds(5));

  c = ParseConfig("tls:\n  max_connection_age_seconds: 0\n", "b.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls.max_connection_age, absl::ZeroDuration());  // no maximum

  c = ParseConfig("tls:\n  max_connection_age_seconds: -1\n", "b.yaml");
  EXPECT_THAT(c.status().message(),
              HasSubstr("b.yaml:2:31: max_connection_age_seconds must be "
                        "between 0 and 604800"));
  c = ParseConfig("tls:\n  max_connection_age_grace_seconds: soon\n", "b.yaml");
  EXPECT_THAT(c.status().message(),
              HasSubstr("max_connection_age_grace_seconds must be an integer"));
  c = ParseConfig("tls:\n  crl_directory: [a, b]\n", "b.yaml");
  EXPECT_THAT(c.status().message(),
              HasSubstr("crl_directory must be a string"));
}

TEST(ConfigTest, AttachmentsDirectIoIsReadAndChecked) {
  absl::StatusOr<BrokerConfig> c = ParseConfig("", "broker.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->attachments.direct_io);  // past the page cache by default
  EXPECT_TRUE(c->ToAttachmentOptions().direct_io);

  c = ParseConfig("attachments:\n  direct_io: false\n", "b.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->attachments.direct_io);
  EXPECT_FALSE(c->ToAttachmentOptions().direct_io);

  c = ParseConfig("attachments:\n  direct_io: sometimes\n", "b.yaml");
  EXPECT_THAT(c.status().message(),
              HasSubstr("b.yaml:2:14: attachments.direct_io must be true or "
                        "false"));
}

TEST(ConfigTest, TheBulkPathIsOffByDefaultAndChecked) {
  absl::StatusOr<BrokerConfig> c = ParseConfig("", "broker.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->attachments.bulk_listen, "");
  c = ParseConfig("attachments: {bulk_listen: \"[::1]:7444\"}\n", "b.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->attachments.bulk_listen, "[::1]:7444");
  for (const char* bad : {"7444", "0.0.0.0:port", "0.0.0.0:65536"}) {
    c = ParseConfig(absl::StrCat("attachments: {bulk_listen: \"", bad, "\"}\n"),
                    "b.yaml");
    EXPECT_THAT(c.status().message(),
                HasSubstr(absl::StrCat("attachments.bulk_listen: \"", bad,
                                       "\" must be host:port")))
        << bad;
  }
}

TEST(ConfigTest, AttachmentChunksEndOnHashBlocks) {
  absl::StatusOr<BrokerConfig> c =
      ParseConfig("attachments:\n  chunk_bytes: 1048576\n", "b.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->ToAttachmentOptions().chunk_size, 1048576u);
  c = ParseConfig("attachments:\n  chunk_bytes: 1000032\n", "b.yaml");
  EXPECT_THAT(c.status().message(),
              HasSubstr("b.yaml:2:16: attachments.chunk_bytes must be a "
                        "multiple of 64, not 1000032"));
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

TEST(ConfigTest, PeersAndFederationAreRead) {
  absl::StatusOr<BrokerConfig> c = ParseConfig(R"(
broker: {name: h49}
federation: {max_hops: 5, announce_seconds: 10, window: 64, reconnect_max_seconds: 3}
peers:
  - name: central
    endpoint: 10.0.0.1:7443
    default: true
  - name: h50
    endpoint: 10.0.0.2:7443
    serves:
      orgs: [000.00.00.H50]
      under: [000.00.01.H50]
      provinces: [H50]
)",
                                               "b.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->federation.max_hops, 5u);
  EXPECT_EQ(c->federation.announce_interval, absl::Seconds(10));
  EXPECT_EQ(c->federation.window, 64u);
  EXPECT_EQ(c->federation.reconnect_max, absl::Seconds(3));
  ASSERT_EQ(c->peers.size(), 2u);
  EXPECT_EQ(c->peers[0].route.name, "central");
  EXPECT_TRUE(c->peers[0].route.is_default);
  EXPECT_EQ(c->peers[1].endpoint, "10.0.0.2:7443");
  EXPECT_THAT(c->peers[1].route.orgs, ElementsAre("000.00.00.H50"));
  EXPECT_THAT(c->peers[1].route.under, ElementsAre("000.00.01.H50"));
  EXPECT_THAT(c->peers[1].route.provinces, ElementsAre("H50"));
  broker::ExchangeOptions o = c->ToExchangeOptions();
  EXPECT_EQ(o.peers.size(), 2u);
  EXPECT_EQ(o.max_hops, 5u);
  EXPECT_EQ(o.directory_stale_after, absl::Seconds(30));
}

TEST(ConfigTest, BadPeersAreNamed) {
  struct Case {
    const char* yaml;
    const char* says;
  } cases[] = {
      {"peers:\n  - name: h50\n    endpoint: nohost\n", "peers[0].endpoint"},
      {"peers:\n  - name: h50\n    endpoint: a:1\n    serves: {provinces: "
       "[h50]}\n",
       "peers[0].serves.provinces[0]"},
      {"peers:\n  - name: h50\n    endpoint: a:1\n    serves: {orgs: [123]}\n",
       "peers[0].serves.orgs[0]"},
      {"peers:\n  - name: h50\n    endpoint: a:1\n    serves: {zones: [x]}\n",
       "unknown field \"zones\""},
      {"peers:\n  - {name: a, endpoint: a:1}\n  - {name: a, endpoint: b:1}\n",
       "listed twice"},
      {"peers:\n  - {name: central, endpoint: a:1}\n", "this broker itself"},
      {"peers:\n  - {name: a, endpoint: a:1, default: true}\n"
       "  - {name: b, endpoint: b:1, default: true}\n",
       "only one peer can be the default"},
      {"peers:\n  - {name: a, endpoint: a:1, default: maybe}\n",
       "default must be true or false"},
      {"peers:\n  - {name: \"a b\", endpoint: a:1}\n", "not a broker name"},
      {"federation: {max_hops: 0}\n", "max_hops must be between 1"},
      {"peers: {name: a}\n", "peers must be a list"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<BrokerConfig> parsed = ParseConfig(c.yaml, "b.yaml");
    ASSERT_FALSE(parsed.ok()) << c.yaml;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.says))
        << c.yaml;
  }
}

TEST(ConfigTest, LogAndMetricsAreReadAndChecked) {
  absl::StatusOr<BrokerConfig> c = ParseConfig(
      "log: {format: text, level: debug}\nmetrics: {listen: 127.0.0.1:9999}\n",
      "b.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->log.format, "text");
  EXPECT_EQ(c->log.level, "debug");
  EXPECT_EQ(c->metrics.listen, "127.0.0.1:9999");
  EXPECT_TRUE(c->metrics.configured);
  absl::StatusOr<BrokerConfig> d = ParseConfig("", "b.yaml");
  EXPECT_EQ(d->log.format, "json");
  EXPECT_EQ(d->metrics.listen, "127.0.0.1:9464");
  EXPECT_FALSE(d->metrics.configured);
  for (const char* bad :
       {"log: {format: xml}\n", "log: {level: loud}\n",
        "metrics: {listen: nohost}\n", "log: {colour: red}\n"}) {
    absl::StatusOr<BrokerConfig> e = ParseConfig(bad, "b.yaml");
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ConfigTest, ListenNeedsAPort) {
  absl::StatusOr<BrokerConfig> c = ParseConfig("listen: localhost\n", "b.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("listen"));
}

}  // namespace
}  // namespace lienthong::server
