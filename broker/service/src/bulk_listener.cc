#include "lienthong/broker/bulk_listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <list>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "lienthong/broker/service.h"
#include "lienthong/bulk_wire.h"
#include "lienthong/common/certificate.h"
#include "lienthong/common/listen.h"
#include "lienthong/common/log.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/common/thread_name.h"
#include "lienthong/v1/attachments.pb.h"

namespace lienthong::broker {
namespace {

constexpr char kComponent[] = "bulk";
// What the audit log names as the method of a bulk call.
constexpr char kMethod[] = "bulk/AttachmentService/Download";
// What an authentication failure names (the call is not read yet).
constexpr char kAnyMethod[] = "bulk/AttachmentService";
constexpr char kUploadMethod[] = "bulk/AttachmentService/Upload";
// How long a refused uploader's chunks still in flight are read and
// dropped after the broker's last word, so that the word is not lost to a
// connection reset.
constexpr absl::Duration kLinger = absl::Seconds(2);
// How often, at most, the TLS files are looked at for a change.
constexpr absl::Duration kRecheckFiles = absl::Seconds(1);

using SslCtx = std::shared_ptr<SSL_CTX>;

int SelectAlpn(SSL*, const unsigned char** out, unsigned char* out_size,
               const unsigned char* offered, unsigned int offered_size, void*) {
  static const std::string* ours = new std::string(
      std::string(1, static_cast<char>(sizeof bulk_wire::kAlpn - 1)) +
      bulk_wire::kAlpn);
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(
          &chosen, out_size,
          reinterpret_cast<const unsigned char*>(ours->data()),
          static_cast<unsigned int>(ours->size()), offered,
          offered_size) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

// What changes when an operator replaces a TLS file or adds a CRL.
std::string Stamp(const BulkListenerOptions& o) {
  std::string out;
  for (const std::string* path :
       {&o.certificate, &o.private_key, &o.ca, &o.crl_directory}) {
    if (path->empty()) continue;
    struct stat st {};
    if (stat(path->c_str(), &st) != 0) {
      absl::StrAppend(&out, "-|");
      continue;
    }
    absl::StrAppend(&out, st.st_ino, ".", st.st_size, ".", st.st_mtim.tv_sec,
                    ".", st.st_mtim.tv_nsec, "|");
  }
  return out;
}

absl::StatusOr<SslCtx> MakeContext(const BulkListenerOptions& o) {
  ASSIGN_OR_RETURN(SslCtx ctx,
                   bulk_wire::MakeContext(
                       /*server=*/true,
                       {o.certificate, o.private_key, o.ca, o.crl_directory}));
  SSL_CTX_set_alpn_select_cb(ctx.get(), SelectAlpn, nullptr);
  return ctx;
}

// "ipv4:127.0.0.1:5000" / "ipv6:[::1]:5000", as gRPC names its peers.
std::string PeerName(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (a.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
    return absl::StrCat("ipv4:", host, ":", ntohs(v4->sin_port));
  }
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
  inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
  return absl::StrCat("ipv6:[", host, "]:", ntohs(v6->sin6_port));
}

// Holds a connection's deadline (watched by the watchdog) to one frame's
// io_timeout while a frame is read or written, then gives the call's back.
class FrameClock {
 public:
  FrameClock(std::atomic<int64_t>& deadline, int64_t call_deadline,
             absl::Duration per_frame)
      : deadline_(deadline), call_(call_deadline), per_frame_(per_frame) {}
  void Start() {
    deadline_ = std::min(call_, absl::ToUnixNanos(absl::Now() + per_frame_));
  }
  void Stop() { deadline_ = call_; }

 private:
  std::atomic<int64_t>& deadline_;
  const int64_t call_;
  const absl::Duration per_frame_;
};

// A download's answers, as message frames on the connection.
class FrameSink final : public AttachmentServiceImpl::DownloadSink {
 public:
  FrameSink(SSL* ssl, const std::atomic<bool>& stopping, FrameClock& clock)
      : ssl_(ssl), stopping_(stopping), clock_(clock) {}
  bool Write(grpc::ByteBuffer message) override {
    if (ok_) {
      clock_.Start();
      ok_ = bulk_wire::WriteFrame(ssl_, bulk_wire::kMessage, message).ok();
      clock_.Stop();
    }
    return ok_;
  }
  bool Cancelled() override { return !ok_ || stopping_.load(); }
  bool ok() const { return ok_; }

 private:
  SSL* const ssl_;
  const std::atomic<bool>& stopping_;
  FrameClock& clock_;
  bool ok_ = true;
};

// An upload's requests and answers, as frames on the connection.
class FrameUpload final : public AttachmentServiceImpl::UploadCall {
 public:
  FrameUpload(SSL* ssl, absl::Duration timeout,
              const std::atomic<bool>& stopping, FrameClock& clock)
      : ssl_(ssl), timeout_(timeout), stopping_(stopping), clock_(clock) {}
  bool Read(grpc::ByteBuffer* message) override {
    if (ended_ || !connected_ || !malformed_.ok() || stopping_) return false;
    clock_.Start();
    absl::StatusOr<bulk_wire::Frame> f =
        bulk_wire::ReadFrame(ssl_, bulk_wire::kMaxUploadMessageBytes, "caller",
                             absl::Now() + timeout_);
    clock_.Stop();
    if (!f.ok()) {
      if (absl::IsUnavailable(f.status())) {
        connected_ = false;
      } else {
        malformed_ = f.status();
      }
      return false;
    }
    if (f->type == bulk_wire::kEnd) {
      ended_ = true;
      return false;
    }
    if (f->type != bulk_wire::kMessage) {
      malformed_ = absl::InvalidArgumentError(absl::StrCat(
          "bulk upload: a frame of type ", static_cast<int>(f->type),
          " where a message ('M') or the end ('E') was due"));
      return false;
    }
    *message = grpc::ByteBuffer(&f->payload, 1);
    return true;
  }
  bool Write(const v1::UploadResponse& response) override {
    if (connected_) {
      clock_.Start();
      connected_ = bulk_wire::WriteFrame(ssl_, bulk_wire::kMessage,
                                         response.SerializeAsString())
                       .ok();
      clock_.Stop();
    }
    return connected_;
  }
  bool connected() const { return connected_; }
  bool ended() const { return ended_; }
  const absl::Status& malformed() const { return malformed_; }

 private:
  SSL* const ssl_;
  const absl::Duration timeout_;
  const std::atomic<bool>& stopping_;
  FrameClock& clock_;
  bool connected_ = true;
  bool ended_ = false;
  absl::Status malformed_;
};

class Listener final : public BulkListener {
 public:
  Listener(BulkListenerOptions options, AttachmentServiceImpl* attachments)
      : options_(std::move(options)), attachments_(attachments) {}
  ~Listener() override {
    Stop();
    if (listen_fd_ >= 0) close(listen_fd_);
    for (int fd : wake_)
      if (fd >= 0) close(fd);
  }

  absl::Status Open() {
    ASSIGN_OR_RETURN(ctx_, MakeContext(options_));
    stamp_ = Stamp(options_);
    checked_ = absl::Now();
    const std::string& address = options_.address;
    ASSIGN_OR_RETURN(Listening listening,
                     ListenOn(address, "attachments.bulk_listen",
                              "0.0.0.0:7444 ([::1]:0 picks a port)", 128,
                              /*nonblocking=*/true));
    listen_fd_ = listening.fd;
    address_ = absl::StrCat(address.substr(0, address.rfind(':')), ":",
                            listening.port);
    if (pipe2(wake_, O_CLOEXEC) != 0)
      return absl::InternalError("bulk path: cannot make a pipe");
    acceptor_ = std::thread([this] { Accept(); });
    watchdog_ = std::thread([this] { Watch(); });
    return absl::OkStatus();
  }

  std::string address() const override { return address_; }

  void Stop() override {
    if (stopping_.exchange(true)) return;
    if (wake_[1] >= 0) (void)!write(wake_[1], "x", 1);
    if (acceptor_.joinable()) acceptor_.join();
    stop_watching_.Notify();
    if (watchdog_.joinable()) watchdog_.join();
    // Nobody waits in the backlog for a listener that is gone.
    if (listen_fd_ >= 0) close(listen_fd_);
    listen_fd_ = -1;
    std::list<std::unique_ptr<Connection>> all;
    {
      absl::MutexLock lock(&mu_);
      // Breaks off reads and writes at once; the descriptors stay open
      // until their threads are joined.
      for (auto& c : connections_)
        if (!c->done) shutdown(c->fd, SHUT_RDWR);
      all.swap(connections_);
    }
    for (auto& c : all) {
      c->thread.join();
      close(c->fd);
    }
  }

 private:
  struct Connection {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
    // Broken off by the watchdog after this (unix ns): the handshake and
    // request within io_timeout, the call within max_age.
    std::atomic<int64_t> deadline{0};
    std::atomic<bool> called{false};  // authenticated, its request read
  };

  // Every half second: ends connections past their deadline (a handshake
  // or request too slow, a call older than max_age) and joins those that
  // ended.
  void Watch() {
    NameThisThread("lt-bulk-watch");
    while (!stop_watching_.WaitForNotificationWithTimeout(
        absl::Milliseconds(500))) {
      const int64_t now = absl::ToUnixNanos(absl::Now());
      absl::MutexLock lock(&mu_);
      Reap();
      for (auto& c : connections_) {
        if (!c->done && now > c->deadline.load()) shutdown(c->fd, SHUT_RDWR);
      }
    }
  }

  // Logs at most one handshake failure a second: anyone can make them.
  void LogHandshakeFailure(const std::string& peer, const std::string& why) {
    const int64_t now = absl::ToUnixSeconds(absl::Now());
    int64_t last = last_handshake_log_.load();
    if (now == last || !last_handshake_log_.compare_exchange_strong(last, now))
      return;
    log::Write(log::Level::kWarning, kComponent,
               absl::StrCat("handshake with ", peer, " failed: ", why,
                            " (at most one such line a second)"));
  }

  // The TLS context for a new connection: made again when a file changed
  // (a renewed certificate, a new CRL); the one before when that fails.
  SslCtx Context() {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (now - checked_ < kRecheckFiles) return ctx_;
    checked_ = now;
    std::string stamp = Stamp(options_);
    if (stamp == stamp_) return ctx_;
    absl::StatusOr<SslCtx> fresh = MakeContext(options_);
    if (!fresh.ok()) {
      log::Write(log::Level::kError, kComponent,
                 absl::StrCat("TLS files changed but cannot be used; keeping "
                              "the ones before: ",
                              fresh.status().message()));
      return ctx_;
    }
    log::Write(log::Level::kInfo, kComponent,
               "TLS files changed: new connections use them");
    stamp_ = std::move(stamp);
    ctx_ = *std::move(fresh);
    return ctx_;
  }

  // Joins and forgets connections that ended.
  void Reap() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (!(*it)->done) {
        ++it;
        continue;
      }
      (*it)->thread.join();
      close((*it)->fd);
      it = connections_.erase(it);
    }
  }

  void Accept() {
    NameThisThread("lt-bulk-accept");
    while (!stopping_) {
      pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        log::Write(log::Level::kError, kComponent,
                   absl::StrCat("poll: ", std::strerror(errno)));
        return;
      }
      if (p[1].revents != 0) return;
      if ((p[0].revents & POLLIN) == 0) continue;
      sockaddr_storage peer{};
      socklen_t size = sizeof peer;
      const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer),
                             &size, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
          log::Write(log::Level::kError, kComponent,
                     absl::StrCat("accept: ", std::strerror(errno)));
          absl::SleepFor(absl::Milliseconds(100));
        }
        continue;
      }
      SslCtx ctx = Context();
      absl::MutexLock lock(&mu_);
      Reap();
      int waiting = 0;  // not yet authenticated
      for (const auto& c : connections_)
        if (!c->called) ++waiting;
      if (static_cast<int>(connections_.size()) >= options_.max_connections ||
          waiting >= options_.max_handshaking) {
        close(fd);
        LogHandshakeFailure(
            PeerName(peer),
            absl::StrCat("not taken: ", connections_.size(), " connections, ",
                         waiting, " of them not yet authenticated"));
        continue;
      }
      auto c = std::make_unique<Connection>();
      c->fd = fd;
      c->deadline = absl::ToUnixNanos(absl::Now() + options_.io_timeout);
      Connection* raw = c.get();
      try {
        raw->thread = std::thread([this, raw, ctx, who = PeerName(peer)] {
          NameThisThread("lt-bulk");
          Serve(*raw, ctx.get(), who);
          // The other end sees the end now; the descriptor itself is
          // closed once this thread is joined.
          shutdown(raw->fd, SHUT_RDWR);
          raw->done = true;
        });
      } catch (const std::system_error& e) {
        close(fd);
        log::Write(log::Level::kError, kComponent,
                   absl::StrCat("no thread for a connection: ", e.what()));
        continue;
      }
      connections_.push_back(std::move(c));
    }
  }

  void Serve(Connection& connection, SSL_CTX* ctx, const std::string& peer) {
    const int fd = connection.fd;
    const int64_t us = absl::ToInt64Microseconds(options_.io_timeout);
    timeval tv{static_cast<time_t>(us / 1000000),
               static_cast<suseconds_t>(us % 1000000)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ERR_clear_error();
    SSL* ssl = SSL_new(ctx);
    if (ssl == nullptr) return;
    absl::Cleanup free_ssl = [ssl] { SSL_free(ssl); };
    if (!bulk_wire::AttachSocket(ssl, fd)) return;
    if (const int r = SSL_accept(ssl); r != 1) {
      const long verified = SSL_get_verify_result(ssl);
      const std::string why =
          verified != X509_V_OK
              ? absl::StrCat("client certificate: ",
                             X509_verify_cert_error_string(verified))
              : bulk_wire::SslTrouble(ssl, r);
      // Logged, not audited (as on the gRPC port): anyone can fail one.
      LogHandshakeFailure(peer, why);
      return;
    }
    // A client that did not ask for the protocol (no ALPN: the select
    // callback never ran) is not spoken to.
    const unsigned char* chosen = nullptr;
    unsigned int chosen_size = 0;
    SSL_get0_alpn_selected(ssl, &chosen, &chosen_size);
    if (absl::string_view(reinterpret_cast<const char*>(chosen), chosen_size) !=
        bulk_wire::kAlpn) {
      LogHandshakeFailure(peer, absl::StrCat("it did not ask for ",
                                             bulk_wire::kAlpn, " (ALPN)"));
      return;
    }
    absl::Status refused;
    absl::StatusOr<Principal> caller =
        absl::UnauthenticatedError("no verified client certificate");
    if (X509* cert = SSL_get0_peer_certificate(ssl); cert != nullptr) {
      caller = PrincipalOfCertificateUris(CertificateUris(cert),
                                          options_.trust_domain);
    }
    v1::BulkRequest request;
    if (!caller.ok()) {
      AuditAuthenticationFailure(peer, kAnyMethod, caller.status());
      refused = caller.status();
    } else {
      absl::StatusOr<bulk_wire::Frame> frame =
          bulk_wire::ReadFrame(ssl, bulk_wire::kMaxRequestBytes, "caller",
                               absl::Now() + options_.io_timeout);
      if (!frame.ok()) {
        if (absl::IsUnavailable(frame.status())) return;  // gone, or silent
        refused = frame.status();
      } else if (frame->type != bulk_wire::kRequest) {
        refused = absl::InvalidArgumentError(absl::StrCat(
            "bulk request: the first frame must be a request ('Q'), not a "
            "frame of type ",
            static_cast<int>(frame->type)));
      } else if (!request.ParseFromArray(
                     frame->payload.begin(),
                     static_cast<int>(frame->payload.size()))) {
        refused = absl::InvalidArgumentError(
            "bulk request: not a well-formed BulkRequest");
      } else if (!request.has_download() && !request.has_upload()) {
        refused = absl::InvalidArgumentError(
            "bulk request: names no call (download or upload)");
      }
    }
    if (!refused.ok()) {
      (void)bulk_wire::WriteStatus(ssl, refused);
      SSL_shutdown(ssl);
      return;
    }
    // A call: it may take as long as a connection of the gRPC port may
    // live (tls.max_connection_age), so that a certificate revoked since
    // is checked again by the next connection.
    const int64_t call_deadline =
        options_.max_age > absl::ZeroDuration()
            ? absl::ToUnixNanos(absl::Now() + options_.max_age)
            : std::numeric_limits<int64_t>::max();
    connection.deadline = call_deadline;
    connection.called = true;
    // Each frame read or written within io_timeout too, whatever OpenSSL
    // does inside one call (a record trickling in a byte at a time).
    FrameClock clock(connection.deadline, call_deadline, options_.io_timeout);
    if (request.has_upload()) {
      ServeUpload(fd, ssl, *caller, peer, clock);
      return;
    }
    FrameSink sink(ssl, stopping_, clock);
    const grpc::Status status = attachments_->DownloadFor(
        *caller, peer, kMethod, request.download(), sink);
    if (!sink.ok()) return;
    (void)bulk_wire::WriteStatus(
        ssl, absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          status.error_message()));
    SSL_shutdown(ssl);
  }

  void ServeUpload(int fd, SSL* ssl, const Principal& caller,
                   const std::string& peer, FrameClock& clock) {
    FrameUpload call(ssl, options_.io_timeout, stopping_, clock);
    grpc::Status status =
        attachments_->UploadFor(caller, peer, kUploadMethod, call);
    if (!call.connected()) return;
    absl::Status ended(static_cast<absl::StatusCode>(status.error_code()),
                       status.error_message());
    if (status.ok() && !call.malformed().ok()) ended = call.malformed();
    if (status.ok() && stopping_ && !call.ended()) {
      ended = absl::UnavailableError(
          "broker stopping: the upload resumes where it stands");
    }
    (void)bulk_wire::WriteStatus(ssl, ended);
    SSL_shutdown(ssl);
    if (call.ended()) return;
    // The uploader may still be sending: read and drop what comes, for a
    // while, so that it reads the status instead of a reset.
    shutdown(fd, SHUT_WR);
    const absl::Time until = absl::Now() + kLinger;
    char drop[16 << 10];
    while (absl::Now() < until) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      if (read(fd, drop, sizeof drop) <= 0) break;
    }
  }

  const BulkListenerOptions options_;
  AttachmentServiceImpl* const attachments_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::string address_;
  std::thread acceptor_;
  std::thread watchdog_;
  absl::Notification stop_watching_;
  std::atomic<int64_t> last_handshake_log_{0};
  std::atomic<bool> stopping_{false};

  absl::Mutex mu_;
  SslCtx ctx_ ABSL_GUARDED_BY(mu_);
  std::string stamp_ ABSL_GUARDED_BY(mu_);
  absl::Time checked_ ABSL_GUARDED_BY(mu_);
  std::list<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<BulkListener>> BulkListener::Start(
    BulkListenerOptions options, AttachmentServiceImpl* attachments) {
  if (options.max_connections < 1) {
    return absl::InvalidArgumentError(
        "bulk path: max_connections must be at least 1");
  }
  auto listener = std::make_unique<Listener>(std::move(options), attachments);
  RETURN_IF_ERROR(listener->Open());
  return listener;
}

}  // namespace lienthong::broker
