// The caller's end of the bulk path (OpenBulkDownload, OpenBulkUpload in
// attachment_io.h).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "client-sdk/src/attachment_io.h"
#include "lienthong/bulk_wire.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/v1/attachments.pb.h"

namespace lienthong::attachment_io {
namespace {

timeval TimevalOf(absl::Duration d) {
  const int64_t us = std::max<int64_t>(absl::ToInt64Microseconds(d), 1000);
  return timeval{static_cast<time_t>(us / 1000000),
                 static_cast<suseconds_t>(us % 1000000)};
}

// A connected TCP socket to host:port, within `timeout`; -1 and `why`
// otherwise.
int Connect(const BulkTarget& t, std::string* why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = absl::StrCat(t.port);
  if (const int e = getaddrinfo(t.host.c_str(), port.c_str(), &hints, &found);
      e != 0) {
    *why = gai_strerror(e);
    return -1;
  }
  absl::Cleanup free_found = [found] { freeaddrinfo(found); };
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd =
        socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
               a->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      *why = std::strerror(errno);
      close(fd);
      continue;
    }
    pollfd p{fd, POLLOUT, 0};
    const int ready = poll(
        &p, 1, static_cast<int>(absl::ToInt64Milliseconds(t.connect_timeout)));
    int error = 0;
    socklen_t size = sizeof error;
    if (ready <= 0) {
      *why = "timed out";
    } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) != 0 ||
               error != 0) {
      *why = std::strerror(error != 0 ? error : errno);
    } else {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      const timeval tv = TimevalOf(t.io_timeout);
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    close(fd);
  }
  return -1;
}

absl::StatusOr<std::shared_ptr<SSL_CTX>> ClientContext(const BulkTarget& t) {
  return bulk_wire::MakeContext(
      /*server=*/false,
      {t.certificate_file, t.private_key_file, t.ca_file, t.crl_directory});
}

// One connection of the bulk path, its request sent.
class BulkConnection {
 public:
  BulkConnection(int fd, SSL* ssl, std::shared_ptr<SSL_CTX> ctx)
      : fd_(fd), ssl_(ssl), ctx_(std::move(ctx)) {}
  ~BulkConnection() {
    SSL_free(ssl_);
    close(fd_);
    ERR_clear_error();
  }
  SSL* ssl() const { return ssl_; }
  int fd() const { return fd_; }
  void Cancel() { shutdown(fd_, SHUT_RDWR); }

 private:
  const int fd_;
  SSL* const ssl_;
  const std::shared_ptr<SSL_CTX> ctx_;
};

// Connects, checks the broker, and sends `request`.
absl::StatusOr<std::unique_ptr<BulkConnection>> OpenBulk(
    const BulkTarget& target, const v1::BulkRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<SSL_CTX> ctx, ClientContext(target));
  const std::string where = absl::StrCat(target.host, ":", target.port);
  std::string why;
  const int fd = Connect(target, &why);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("bulk path ", where, ": cannot connect: ", why));
  }
  SSL* ssl = SSL_new(ctx.get());
  if (ssl == nullptr) {
    close(fd);
    return absl::InternalError("bulk path: SSL_new failed");
  }
  auto connection = std::make_unique<BulkConnection>(fd, ssl, ctx);
  if (!bulk_wire::AttachSocket(ssl, fd))
    return absl::InternalError("bulk path: cannot make OpenSSL's BIOs");
  // The broker's certificate must name the host dialled (or the override),
  // as gRPC checks it.
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  in6_addr ip{};
  const bool is_ip = inet_pton(AF_INET, target.server_name.c_str(), &ip) == 1 ||
                     inet_pton(AF_INET6, target.server_name.c_str(), &ip) == 1;
  if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, target.server_name.c_str())
             : X509_VERIFY_PARAM_set1_host(param, target.server_name.c_str(),
                                           0)) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bulk path: cannot check the broker's name ", target.server_name));
  }
  if (!is_ip) SSL_set_tlsext_host_name(ssl, target.server_name.c_str());
  if (const int r = SSL_connect(ssl); r != 1) {
    const long verified = SSL_get_verify_result(ssl);
    return absl::UnavailableError(
        absl::StrCat("bulk path ", where, ": handshake failed: ",
                     verified != X509_V_OK
                         ? absl::StrCat("the broker's certificate: ",
                                        X509_verify_cert_error_string(verified))
                         : bulk_wire::SslTrouble(ssl, r)));
  }
  const unsigned char* chosen = nullptr;
  unsigned int chosen_size = 0;
  SSL_get0_alpn_selected(ssl, &chosen, &chosen_size);
  if (absl::string_view(reinterpret_cast<const char*>(chosen), chosen_size) !=
      bulk_wire::kAlpn) {
    return absl::UnavailableError(
        absl::StrCat("bulk path ", where, ": the server there does not speak ",
                     bulk_wire::kAlpn));
  }
  RETURN_IF_ERROR(bulk_wire::WriteFrame(ssl, bulk_wire::kRequest,
                                        request.SerializeAsString()));
  return connection;
}

// How a broker's frame ends a call, or that it is a message: `*ended` set
// when it ends it (with how).
std::optional<absl::Status> EndOf(const absl::StatusOr<bulk_wire::Frame>& f) {
  if (!f.ok()) {
    // Broken off, silent, or a frame no broker sends: the next attempt
    // resumes.
    return absl::UnavailableError(f.status().message());
  }
  if (f->type == bulk_wire::kStatus) {
    absl::StatusOr<absl::Status> said = bulk_wire::StatusOf(*f);
    return said.ok() ? *said : absl::UnavailableError(said.status().message());
  }
  if (f->type != bulk_wire::kMessage) {
    return absl::UnavailableError(
        absl::StrCat("bulk connection: the broker sent a frame of type ",
                     static_cast<int>(f->type)));
  }
  return std::nullopt;
}

class BulkAnswers final : public AnswerStream {
 public:
  explicit BulkAnswers(std::unique_ptr<BulkConnection> c) : c_(std::move(c)) {}

  // The first frame, read while opening: in TLS 1.3 a broker's refusal
  // of the caller's certificate shows only there.
  absl::Status ReadFirst() {
    first_ =
        bulk_wire::ReadFrame(c_->ssl(), bulk_wire::kMaxMessageBytes, "broker");
    return first_->status();
  }

  bool Read(grpc::ByteBuffer* message) override {
    if (ended_) return false;
    absl::StatusOr<bulk_wire::Frame> frame =
        first_.has_value()
            ? *std::exchange(first_, std::nullopt)
            : bulk_wire::ReadFrame(c_->ssl(), bulk_wire::kMaxMessageBytes,
                                   "broker");
    if (std::optional<absl::Status> end = EndOf(frame)) {
      ended_ = true;
      status_ = *std::move(end);
      return false;
    }
    *message = grpc::ByteBuffer(&frame->payload, 1);
    return true;
  }
  absl::Status Finish() override {
    return ended_ ? status_
                  : absl::UnavailableError(
                        "bulk connection: the download was broken off");
  }
  void Cancel() override { c_->Cancel(); }

 private:
  std::unique_ptr<BulkConnection> c_;
  bool ended_ = false;
  absl::Status status_;
  std::optional<absl::StatusOr<bulk_wire::Frame>> first_;
};

// An upload's messages. The broker's answers (one per sync) are taken off
// the connection whenever they are there, so that a refusal stops the
// chunks at once, and kept for Read.
class BulkUpload final : public UploadStream {
 public:
  explicit BulkUpload(std::unique_ptr<BulkConnection> c) : c_(std::move(c)) {}

  bool Write(const grpc::ByteBuffer& message) override {
    while (!ended_ && bulk_wire::Readable(c_->ssl(), c_->fd())) Take();
    if (ended_) return false;
    if (!bulk_wire::WriteFrame(c_->ssl(), bulk_wire::kMessage, message).ok()) {
      // The broker may have said why before it closed.
      while (!ended_) Take();
      return false;
    }
    return true;
  }
  bool Read(v1::UploadResponse* response) override {
    while (answers_.empty() && !ended_) Take();
    if (answers_.empty()) return false;
    *response = std::move(answers_.front());
    answers_.pop_front();
    return true;
  }
  void WritesDone() override {
    if (!ended_) (void)bulk_wire::WriteFrame(c_->ssl(), bulk_wire::kEnd, "");
  }
  absl::Status Finish() override {
    while (!ended_) Take();
    return status_;
  }
  void Cancel() override { c_->Cancel(); }
  bool Answered() const override { return answered_; }

 private:
  // One frame off the connection.
  void Take() {
    absl::StatusOr<bulk_wire::Frame> frame =
        bulk_wire::ReadFrame(c_->ssl(), bulk_wire::kMaxMessageBytes, "broker");
    if (std::optional<absl::Status> end = EndOf(frame)) {
      answered_ = answered_ || frame.ok();
      ended_ = true;
      status_ = *std::move(end);
      return;
    }
    answered_ = true;
    v1::UploadResponse r;
    if (!r.ParseFromArray(frame->payload.begin(),
                          static_cast<int>(frame->payload.size()))) {
      ended_ = true;
      status_ = absl::UnavailableError(
          "bulk connection: the broker sent a malformed UploadResponse");
      return;
    }
    answers_.push_back(std::move(r));
  }

  std::unique_ptr<BulkConnection> c_;
  std::deque<v1::UploadResponse> answers_;
  bool ended_ = false;
  bool answered_ = false;
  absl::Status status_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<AnswerStream>> OpenBulkDownload(
    const BulkTarget& target, const v1::DownloadRequest& request) {
  // Whatever happens here, OpenSSL's error queue of this (the
  // application's) thread is left empty.
  absl::Cleanup clear_errors = [] { ERR_clear_error(); };
  v1::BulkRequest wrapped;
  *wrapped.mutable_download() = request;
  ASSIGN_OR_RETURN(std::unique_ptr<BulkConnection> c,
                   OpenBulk(target, wrapped));
  auto answers = std::make_unique<BulkAnswers>(std::move(c));
  if (absl::Status first = answers->ReadFirst(); !first.ok()) {
    return absl::UnavailableError(
        absl::StrCat("bulk path ", target.host, ":", target.port,
                     ": no answer: ", first.message()));
  }
  return answers;
}

absl::StatusOr<std::unique_ptr<UploadStream>> OpenBulkUpload(
    const BulkTarget& target) {
  absl::Cleanup clear_errors = [] { ERR_clear_error(); };
  v1::BulkRequest wrapped;
  wrapped.mutable_upload();
  ASSIGN_OR_RETURN(std::unique_ptr<BulkConnection> c,
                   OpenBulk(target, wrapped));
  return std::make_unique<BulkUpload>(std::move(c));
}

}  // namespace lienthong::attachment_io
