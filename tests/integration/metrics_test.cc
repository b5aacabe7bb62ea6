// /metrics of a real broker: scraped over HTTP while documents flow, the
// counters and gauges an operator alerts on move with the traffic.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/client.h"
#include "tests/integration/broker_process.h"
#include "tests/testing/status_matchers.h"

namespace lienthong::integration {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// GET /metrics from 127.0.0.1:port (bounded: 10 s); the whole answer.
std::string Scrape(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string answer;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    std::string request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    char buf[8192];
    for (ssize_t n; (n = recv(fd, buf, sizeof(buf), 0)) > 0;)
      answer.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return answer;
}

// Sample name with labels (as written) → value.
std::map<std::string, double> Samples(const std::string& page) {
  std::map<std::string, double> out;
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    if (sp == absl::string_view::npos) continue;
    double v;
    if (absl::SimpleAtod(line.substr(sp + 1), &v))
      out[std::string(line.substr(0, sp))] = v;
  }
  return out;
}

double Get(const std::map<std::string, double>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? 0 : it->second;
}

v1::Document NewDocument(const std::string& to, int i) {
  v1::Document doc;
  doc.add_recipients(to);
  doc.mutable_metadata()->set_subject(absl::StrCat("Báo cáo số ", i));
  doc.set_body("nội dung");
  return doc;
}

TEST(MetricsIntegrationTest, CountersMoveWithTraffic) {
  ASSERT_OK_AND_ASSIGN(int metrics_port, PickFreePort());
  BrokerOptions options;
  options.config_yaml =
      absl::StrCat("metrics: {listen: 127.0.0.1:", metrics_port, "}\n");
  BrokerProcess broker(options);
  ASSERT_OK(broker.Start());

  std::string first = Scrape(metrics_port);
  ASSERT_THAT(first, StartsWith("HTTP/1.1 200 OK"));
  ASSERT_THAT(first,
              HasSubstr("# TYPE lienthong_documents_accepted_total counter"));
  std::map<std::string, double> before = Samples(first);
  EXPECT_GT(
      Get(before, "lienthong_certificate_expiry_timestamp_seconds{file=\"" +
                      *DevPkiDir() + "/brokers/central.pem\"}"),
      0);

  ASSERT_OK_AND_ASSIGN(auto sender,
                       Client::Open(broker.ClientOptionsFor(kH49)));
  ASSERT_OK_AND_ASSIGN(auto receiver,
                       Client::Open(broker.ClientOptionsFor(kG22)));
  constexpr int kSent = 5;
  for (int i = 0; i < kSent; ++i) {
    ASSERT_OK(sender->Send(NewDocument(kG22, i)).status());
  }
  // A refused send: an AI-made disciplinary decision (the dev policy
  // forbids it).
  v1::Document refused = NewDocument(kH49, 99);
  refused.mutable_metadata()->set_origin(v1::ORIGIN_AI);
  refused.mutable_metadata()->set_decision_category(
      v1::DECISION_CATEGORY_DISCIPLINARY);
  ASSERT_OK_AND_ASSIGN(auto g22_sender,
                       Client::Open(broker.ClientOptionsFor(kG22)));
  EXPECT_EQ(g22_sender->Send(refused).status().code(),
            absl::StatusCode::kPermissionDenied);

  std::map<std::string, double> queued = Samples(Scrape(metrics_port));
  EXPECT_EQ(Get(queued, "lienthong_documents_accepted_total") -
                Get(before, "lienthong_documents_accepted_total"),
            kSent);
  EXPECT_EQ(
      Get(queued, "lienthong_sends_refused_total{code=\"PERMISSION_DENIED\"}"),
      1);
  EXPECT_EQ(Get(queued, "lienthong_queue_waiting{org=\"000.00.00.G22\"}"),
            kSent);
  EXPECT_GE(
      Get(queued, "lienthong_queue_oldest_age_seconds{org=\"000.00.00.G22\"}"),
      0);
  EXPECT_EQ(Get(queued, "lienthong_send_seconds_count") -
                Get(before, "lienthong_send_seconds_count"),
            kSent);
  EXPECT_GE(Get(queued, "lienthong_store_syncs_total"),
            Get(before, "lienthong_store_syncs_total") + 1);

  // Take three and acknowledge them.
  ASSERT_OK_AND_ASSIGN(std::vector<IncomingDocument> got,
                       receiver->Fetch(3, absl::Seconds(5)));
  ASSERT_EQ(got.size(), 3u);
  std::vector<std::string> ids;
  for (const IncomingDocument& d : got) ids.push_back(d.document.id());
  ASSERT_OK(receiver->Ack(ids));

  std::map<std::string, double> after = Samples(Scrape(metrics_port));
  EXPECT_EQ(Get(after, "lienthong_copies_delivered_total") -
                Get(before, "lienthong_copies_delivered_total"),
            3);
  EXPECT_EQ(Get(after, "lienthong_delivery_seconds_count") -
                Get(before, "lienthong_delivery_seconds_count"),
            3);
  EXPECT_EQ(Get(after, "lienthong_queue_waiting{org=\"000.00.00.G22\"}"),
            kSent - 3);
  EXPECT_EQ(broker.Stop(), absl::OkStatus());
}

}  // namespace
}  // namespace lienthong::integration
