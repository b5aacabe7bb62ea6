#include "broker/server/src/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lienthong/common/listen.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/common/thread_name.h"

namespace lienthong::server {
namespace {

constexpr size_t kMaxRequestBytes = 8192;
constexpr int kIoTimeoutSeconds = 5;

void WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the scraper went away or timed out
    data.remove_prefix(static_cast<size_t>(n));
  }
}

void Respond(int fd, absl::string_view status, absl::string_view type,
             absl::string_view body) {
  WriteAll(fd, absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                            "\r\nContent-Length: ", body.size(),
                            "\r\nConnection: close\r\n\r\n", body));
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& address, std::function<std::string()> render) {
  ASSIGN_OR_RETURN(Listening listening,
                   ListenOn(address, "metrics.listen", "127.0.0.1:9464", 16));
  const int fd = listening.fd;
  const int bound_port = listening.port;
  int stop = eventfd(0, EFD_CLOEXEC);
  if (stop < 0) {
    close(fd);
    return absl::InternalError("metrics: eventfd failed");
  }
  return std::unique_ptr<MetricsServer>(
      new MetricsServer(fd, stop, bound_port, std::move(render)));
}

MetricsServer::MetricsServer(int listen_fd, int stop_fd, int port,
                             std::function<std::string()> render)
    : listen_fd_(listen_fd),
      stop_fd_(stop_fd),
      port_(port),
      render_(std::move(render)) {
  thread_ = std::thread([this] {
    NameThisThread("lt-metrics");
    Loop();
  });
}

MetricsServer::~MetricsServer() {
  uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
  thread_.join();
  close(listen_fd_);
  close(stop_fd_);
}

void MetricsServer::Loop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    timeval timeout{kIoTimeoutSeconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    Serve(fd);
    close(fd);
  }
}

void MetricsServer::Serve(int fd) {
  std::string request;
  char buf[2048];
  // The whole request within the timeout, not each read: one connection is
  // served at a time, so a client trickling bytes would block every scrape.
  const absl::Time deadline = absl::Now() + absl::Seconds(kIoTimeoutSeconds);
  while (request.find("\r\n\r\n") == std::string::npos) {
    if (request.size() > kMaxRequestBytes) {
      Respond(fd, "431 Request Header Fields Too Large", "text/plain",
              "request too large\n");
      return;
    }
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) return;
    pollfd readable{fd, POLLIN, 0};
    const int ready = poll(&readable, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return;  // timed out, or failed
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // closed or timed out before a whole request
    request.append(buf, static_cast<size_t>(n));
  }
  absl::string_view line(request);
  line = line.substr(0, line.find("\r\n"));
  // "GET /metrics HTTP/1.1"
  size_t sp1 = line.find(' ');
  size_t sp2 = line.rfind(' ');
  if (sp1 == absl::string_view::npos || sp2 == sp1 ||
      !absl::StartsWith(line.substr(sp2 + 1), "HTTP/1.")) {
    Respond(fd, "400 Bad Request", "text/plain", "malformed request line\n");
    return;
  }
  absl::string_view method = line.substr(0, sp1);
  absl::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  target = target.substr(0, target.find('?'));
  if (target != "/metrics") {
    Respond(fd, "404 Not Found", "text/plain", "only /metrics is served\n");
    return;
  }
  if (method != "GET" && method != "HEAD") {
    Respond(fd, "405 Method Not Allowed", "text/plain", "use GET\n");
    return;
  }
  std::string body = render_();
  if (method == "HEAD") body.clear();
  Respond(fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body);
}

}  // namespace lienthong::server
