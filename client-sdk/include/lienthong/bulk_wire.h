// The frames of the bulk path (see BulkRequest in attachments.proto) over an
// established OpenSSL connection on a blocking socket whose send and receive
// timeouts bound every call here. Used by the SDK and by brokers.
//
//   bulk_wire::WriteFrame(ssl, bulk_wire::kRequest,
//   request.SerializeAsString()); absl::StatusOr<bulk_wire::Frame> f =
//   bulk_wire::ReadFrame(ssl, limit);
#ifndef LIENTHONG_BULK_WIRE_H_
#define LIENTHONG_BULK_WIRE_H_

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace lienthong::bulk_wire {

// The protocol's ALPN name: both ends insist on it, so neither a gRPC
// client nor an HTTP one is ever taken for a bulk caller.
inline constexpr char kAlpn[] = "lienthong-bulk/1";

// Frame types.
inline constexpr uint8_t kRequest = 'Q';  // a BulkRequest (caller)
inline constexpr uint8_t kMessage = 'M';  // a DownloadResponse (broker)
inline constexpr uint8_t kStatus = 'S';   // a BulkStatus, last (broker)
inline constexpr uint8_t kEnd = 'E';      // no more messages (caller)

// The largest request frame a broker reads, and the largest message frame
// a caller reads (a chunk of attachments.chunk_bytes and its fields).
inline constexpr uint32_t kMaxRequestBytes = 64 << 10;
inline constexpr uint32_t kMaxMessageBytes = 64 << 20;
// The largest UploadRequest a broker reads (chunks are at most 2 MiB).
inline constexpr uint32_t kMaxUploadMessageBytes = 4 << 20;

// What OpenSSL's error queue of this thread says (emptied), for messages.
std::string OpenSslErrors();

// The TLS files of one end: its own certificate chain and key, the trust
// root of the other end, and optionally a hashed directory of CRLs.
struct TlsFiles {
  std::string certificate;
  std::string private_key;
  std::string ca;
  std::string crl_directory;  // empty: no revocation checking
};

// An SSL_CTX for either end of the bulk path: TLS 1.3 only, whole records
// read ahead, `files.certificate` presented, the other end verified against
// `files.ca` as gRPC's OpenSSL verifies (PARTIAL_CHAIN | TRUSTED_FIRST) and
// its CRLs when given (CRL_CHECK | CRL_CHECK_ALL). A server requires the
// client's certificate and sends no session tickets; a client offers the
// ALPN name. INVALID_ARGUMENT naming the file that cannot be used.
absl::StatusOr<std::shared_ptr<SSL_CTX>> MakeContext(bool server,
                                                     const TlsFiles& files);

// Puts `ssl` on socket `fd` (not closed with it): reads straight from the
// socket, writes gathered up to 256 KiB so that a chunk's TLS records
// (16 KiB each) go to the kernel in a few writes, not one each. Every
// WriteFrame flushes. False when OpenSSL cannot make the BIOs.
bool AttachSocket(SSL* ssl, int fd);

struct Frame {
  uint8_t type = 0;
  grpc::Slice payload;
};

// One frame; the payload's slices are written as they are (small ones
// gathered first, so a frame's head does not go out as a record of its own).
// UNAVAILABLE naming the trouble when the connection fails or times out.
absl::Status WriteFrame(SSL* ssl, uint8_t type,
                        const grpc::ByteBuffer& payload);
absl::Status WriteFrame(SSL* ssl, uint8_t type, absl::string_view payload);

// The next frame, its payload read into a slice of its own. UNAVAILABLE
// when the connection fails, times out or ends, or the frame is not whole
// by `deadline` (`what` names the other end in the message);
// INVALID_ARGUMENT naming the length when it is above `max_bytes`.
absl::StatusOr<Frame> ReadFrame(SSL* ssl, uint32_t max_bytes,
                                absl::string_view what,
                                absl::Time deadline = absl::InfiniteFuture());

// Whether a frame (or part of one) can be read now from `ssl` on socket
// `fd` without waiting.
bool Readable(SSL* ssl, int fd);

// The status frame that ends a call, and the status it carries
// (INVALID_ARGUMENT when the frame is not a well-formed BulkStatus).
absl::Status WriteStatus(SSL* ssl, const absl::Status& status);
absl::StatusOr<absl::Status> StatusOf(const Frame& frame);

// What OpenSSL says went wrong with `ssl` after a call returned `ret`
// (its error queue emptied), for messages.
std::string SslTrouble(SSL* ssl, int ret);

}  // namespace lienthong::bulk_wire

#endif  // LIENTHONG_BULK_WIRE_H_
