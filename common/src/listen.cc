#include "lienthong/common/listen.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace lienthong {

absl::StatusOr<HostPort> SplitHostPort(absl::string_view address,
                                       absl::string_view what,
                                       absl::string_view example) {
  const size_t colon = address.rfind(':');
  HostPort out;
  if (colon == absl::string_view::npos ||
      !absl::SimpleAtoi(address.substr(colon + 1), &out.port) || out.port < 0 ||
      out.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": \"", address, "\" must be host:port, e.g. ", example));
  }
  absl::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  out.host = std::string(host);
  return out;
}

absl::StatusOr<Listening> ListenOn(absl::string_view address,
                                   absl::string_view what,
                                   absl::string_view example, int backlog,
                                   bool nonblocking) {
  absl::StatusOr<HostPort> where = SplitHostPort(address, what, example);
  if (!where.ok()) return where.status();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc =
          getaddrinfo(where->host.empty() ? nullptr : where->host.c_str(),
                      std::to_string(where->port).c_str(), &hints, &found);
      rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": cannot resolve \"", where->host, "\": ", gai_strerror(rc)));
  }
  absl::Cleanup free_found = [found] { freeaddrinfo(found); };
  const int fd =
      socket(found->ai_family,
             SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  const int one = 1;
  if (fd < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, found->ai_addr, found->ai_addrlen) != 0 ||
      listen(fd, backlog) != 0) {
    const std::string why = std::strerror(errno);
    if (fd >= 0) close(fd);
    return absl::UnavailableError(
        absl::StrCat(what, ": cannot listen on ", address, ": ", why));
  }
  sockaddr_storage bound{};
  socklen_t size = sizeof bound;
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &size);
  Listening l;
  l.fd = fd;
  l.port = bound.ss_family == AF_INET6
               ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
               : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return l;
}

}  // namespace lienthong
