// A TCP listener on an address as the configuration spells it, for the
// broker's listeners outside gRPC (metrics, the bulk path).
//
//   ASSIGN_OR_RETURN(Listening l, ListenOn("0.0.0.0:0", "metrics.listen",
//                                          "127.0.0.1:9464", 16));
//   // l.fd accepts; l.port is the port bound
#ifndef LIENTHONG_COMMON_LISTEN_H_
#define LIENTHONG_COMMON_LISTEN_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lienthong {

struct HostPort {
  std::string host;  // without the brackets of "[::1]"; empty: every address
  int port = 0;
};

// "host:port" or "[v6]:port", port 0..65535. INVALID_ARGUMENT
// `<what>: "<address>" must be host:port, e.g. <example>` otherwise.
absl::StatusOr<HostPort> SplitHostPort(absl::string_view address,
                                       absl::string_view what,
                                       absl::string_view example);

struct Listening {
  int fd = -1;   // close-on-exec; the caller closes it
  int port = 0;  // bound (the one picked for port 0)
};

// A listening TCP socket on `address` (SplitHostPort; SO_REUSEADDR),
// non-blocking when asked. INVALID_ARGUMENT naming `what` when the address
// is malformed or does not resolve, UNAVAILABLE when it cannot be bound.
absl::StatusOr<Listening> ListenOn(absl::string_view address,
                                   absl::string_view what,
                                   absl::string_view example, int backlog,
                                   bool nonblocking = false);

}  // namespace lienthong

#endif  // LIENTHONG_COMMON_LISTEN_H_
