#include "broker/server/src/metrics_server.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/time/clock.h"

namespace lienthong::server {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Sends `request` to 127.0.0.1:port and returns everything the server
// answered before closing (bounded: 10 s).
std::string Exchange(int port, const std::string& request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "connect failed";
  }
  if (!request.empty()) send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string answer;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return answer;
}

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<MetricsServer>> s = MetricsServer::Start(
        "127.0.0.1:0",
        [this] { return "scrapes " + std::to_string(++scrapes_) + "\n"; });
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    ASSERT_GT(server_->port(), 0);
  }
  std::atomic<int> scrapes_{0};
  std::unique_ptr<MetricsServer> server_;
};

TEST_F(MetricsServerTest, GetMetricsServesThePage) {
  std::string a =
      Exchange(server_->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(a, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(a, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(a, HasSubstr("Content-Length: 10\r\n"));
  EXPECT_THAT(a, HasSubstr("\r\n\r\nscrapes 1\n"));
  // Rendered afresh at every scrape.
  EXPECT_THAT(Exchange(server_->port(), "GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
              HasSubstr("scrapes 2\n"));
}

TEST_F(MetricsServerTest, OtherRequestsGetPreciseErrors) {
  EXPECT_THAT(Exchange(server_->port(), "GET / HTTP/1.1\r\n\r\n"),
              StartsWith("HTTP/1.1 404 "));
  EXPECT_THAT(Exchange(server_->port(), "POST /metrics HTTP/1.1\r\n\r\n"),
              StartsWith("HTTP/1.1 405 "));
  EXPECT_THAT(Exchange(server_->port(), "garbage\r\n\r\n"),
              StartsWith("HTTP/1.1 400 "));
  EXPECT_THAT(Exchange(server_->port(), "GET /metrics HTTP/1.1\r\nX: " +
                                            std::string(20000, 'a')),
              StartsWith("HTTP/1.1 431 "));
  EXPECT_EQ(scrapes_.load(), 0);  // none of them rendered the page
}

TEST_F(MetricsServerTest, ASilentClientIsDroppedAndTheNextOneServed) {
  absl::Time start = absl::Now();
  EXPECT_EQ(Exchange(server_->port(), ""), "");  // says nothing: dropped
  EXPECT_LT(absl::Now() - start, absl::Seconds(9));
  EXPECT_THAT(Exchange(server_->port(), "GET /metrics HTTP/1.1\r\n\r\n"),
              StartsWith("HTTP/1.1 200 OK"));
}

// A client that sends a byte now and then, never a whole request, is cut
// off when the request's time is up (not kept as long as it trickles), so
// the next scrape is served.
TEST_F(MetricsServerTest, ATricklingClientIsDroppedAndTheNextOneServed) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  std::thread trickle([fd] {
    // One byte every 0.5 s for up to 15 s, until the server closes.
    for (int i = 0; i < 30; ++i) {
      if (send(fd, "G", 1, MSG_NOSIGNAL) != 1) return;
      absl::SleepFor(absl::Milliseconds(500));
    }
  });
  absl::Time start = absl::Now();
  EXPECT_THAT(Exchange(server_->port(), "GET /metrics HTTP/1.1\r\n\r\n"),
              StartsWith("HTTP/1.1 200 OK"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(9));
  shutdown(fd, SHUT_RDWR);
  trickle.join();
  close(fd);
}

TEST(MetricsServerStartTest, BadOrTakenAddressesAreRefused) {
  EXPECT_EQ(MetricsServer::Start("nonsense", [] { return ""; }).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsServer::Start("127.0.0.1:99999", [] { return ""; })
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::unique_ptr<MetricsServer>> first =
      MetricsServer::Start("127.0.0.1:0", [] { return ""; });
  ASSERT_TRUE(first.ok());
  absl::StatusOr<std::unique_ptr<MetricsServer>> second = MetricsServer::Start(
      "127.0.0.1:" + std::to_string((*first)->port()), [] { return ""; });
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace lienthong::server
