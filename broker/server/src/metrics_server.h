// A small HTTP/1.1 endpoint for Prometheus: GET /metrics answers with the
// page `render` builds; anything else gets 404 / 405 / 400. One connection
// at a time, each bounded (8 KiB of request, 5 s), Connection: close. Meant
// for loopback or a scrape network, not the internet.
//
//   ASSIGN_OR_RETURN(auto server,
//                    MetricsServer::Start("127.0.0.1:9464", [&] { ... }));
//   server->port();  // the bound port (useful with port 0)
#ifndef LIENTHONG_BROKER_SERVER_SRC_METRICS_SERVER_H_
#define LIENTHONG_BROKER_SERVER_SRC_METRICS_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace lienthong::server {

class MetricsServer {
 public:
  // Binds `address` (host:port, IPv4 or [IPv6]; port 0 picks one) and
  // serves until destroyed. INVALID_ARGUMENT for a malformed address,
  // UNAVAILABLE when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& address, std::function<std::string()> render);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsServer(int listen_fd, int stop_fd, int port,
                std::function<std::string()> render);
  void Loop();
  void Serve(int fd);

  const int listen_fd_;
  const int stop_fd_;  // eventfd: written to stop
  const int port_;
  const std::function<std::string()> render_;
  std::thread thread_;
};

}  // namespace lienthong::server

#endif  // LIENTHONG_BROKER_SERVER_SRC_METRICS_SERVER_H_
