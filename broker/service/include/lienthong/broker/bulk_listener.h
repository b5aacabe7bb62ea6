// The bulk path (attachments.bulk_listen; protocol in attachments.proto,
// BulkRequest): attachment uploads and downloads over OpenSSL on a socket of
// their own,
// about half the CPU per byte of gRPC's TLS. Mutual TLS 1.3 with the
// broker's certificate, trust root and revocation lists (re-read when their
// files change), ALPN "lienthong-bulk/1", the caller named by its
// certificate's SPIFFE id as on the gRPC port, then
// AttachmentServiceImpl::DownloadFor / UploadFor: the same authorization,
// limits, audit and metrics as AttachmentService/Download and /Upload. One call
// per connection, on a thread of its own; every read and write is bounded by
// io_timeout.
//
//   BulkListenerOptions o;
//   o.address = "0.0.0.0:7444";  o.certificate = ...;  o.trust_domain = ...;
//   auto bulk = BulkListener::Start(o, &attachments);  // (*bulk)->address()
//   ...
//   attachments.Shutdown();  (*bulk)->Stop();
#ifndef LIENTHONG_BROKER_BULK_LISTENER_H_
#define LIENTHONG_BROKER_BULK_LISTENER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lienthong/broker/attachment_service.h"

namespace lienthong::broker {

struct BulkListenerOptions {
  std::string address;      // host:port ([v6]:port); port 0 picks a free one
  std::string certificate;  // PEM chain, as tls.certificate
  std::string private_key;
  std::string ca;             // trust root of callers
  std::string crl_directory;  // as tls.crl_directory; empty: none
  std::string trust_domain;
  // Connections at once (each holds a thread), and of them not yet
  // authenticated; more are closed at once. Calls past
  // attachments.max_transfer_calls are refused by DownloadFor / UploadFor
  // ("broker busy") as on the gRPC port.
  int max_connections = 512;
  int max_handshaking = 64;
  // The longest the handshake and request together, or one read or write,
  // may take.
  absl::Duration io_timeout = absl::Seconds(60);
  // The longest a call may take (tls.max_connection_age plus its grace):
  // then it is broken off and resumes on a new connection, whose handshake
  // checks the certificate again. Zero: no limit.
  absl::Duration max_age = absl::ZeroDuration();
};

class BulkListener {
 public:
  // Listening once it returns. INVALID_ARGUMENT naming the address or a
  // TLS file that cannot be used; UNAVAILABLE when the address cannot be
  // bound. `attachments` must outlive the listener.
  static absl::StatusOr<std::unique_ptr<BulkListener>> Start(
      BulkListenerOptions options, AttachmentServiceImpl* attachments);
  virtual ~BulkListener() = default;

  // The address bound (with the port picked for port 0).
  virtual std::string address() const = 0;
  // Stops accepting, breaks off running connections and waits for their
  // threads. Idempotent; the destructor calls it.
  virtual void Stop() = 0;
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_BULK_LISTENER_H_
