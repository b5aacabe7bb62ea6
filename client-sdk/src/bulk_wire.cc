#include "lienthong/bulk_wire.h"

#include <openssl/err.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lienthong/v1/attachments.pb.h"

namespace lienthong::bulk_wire {
namespace {

// Pieces smaller than this are gathered into one record with their
// neighbours.
constexpr size_t kGather = 16 << 10;
// What is written to the kernel at once.
constexpr int kWriteBuffer = 256 << 10;

absl::Status WriteAll(SSL* ssl, const uint8_t* data, size_t size) {
  while (size > 0) {
    const int n = static_cast<int>(std::min<size_t>(size, 1 << 30));
    ERR_clear_error();
    const int wrote = SSL_write(ssl, data, n);
    if (wrote <= 0) {
      return absl::UnavailableError(absl::StrCat(
          "bulk connection: sending failed: ", SslTrouble(ssl, wrote)));
    }
    data += wrote;
    size -= static_cast<size_t>(wrote);
  }
  return absl::OkStatus();
}

absl::Status ReadAll(SSL* ssl, uint8_t* data, size_t size,
                     absl::string_view what, absl::Time deadline) {
  size_t got = 0;
  while (got < size) {
    if (absl::Now() > deadline) {
      return absl::UnavailableError(absl::StrCat("bulk connection: the ", what,
                                                 " sent a frame too slowly"));
    }
    const int n = static_cast<int>(std::min<size_t>(size - got, 1 << 30));
    ERR_clear_error();
    const int read = SSL_read(ssl, data + got, n);
    if (read <= 0) {
      return absl::UnavailableError(absl::StrCat(
          "bulk connection: ", what,
          got == 0 && SSL_get_error(ssl, read) == SSL_ERROR_ZERO_RETURN
              ? " closed the connection"
              : absl::StrCat(" sent no more: ", SslTrouble(ssl, read))));
    }
    got += static_cast<size_t>(read);
  }
  return absl::OkStatus();
}

void PutHead(uint8_t type, size_t size, uint8_t* head) {
  head[0] = type;
  head[1] = static_cast<uint8_t>(size >> 24);
  head[2] = static_cast<uint8_t>(size >> 16);
  head[3] = static_cast<uint8_t>(size >> 8);
  head[4] = static_cast<uint8_t>(size);
}

}  // namespace

std::string OpenSslErrors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(e, text, sizeof text);
    absl::StrAppend(&out, out.empty() ? "" : "; ", text);
  }
  return out.empty() ? "no detail" : out;
}

absl::StatusOr<std::shared_ptr<SSL_CTX>> MakeContext(bool server,
                                                     const TlsFiles& files) {
  ERR_clear_error();
  std::shared_ptr<SSL_CTX> ctx(
      SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()),
      SSL_CTX_free);
  if (!ctx) return absl::InternalError("bulk path: SSL_CTX_new failed");
  SSL_CTX* c = ctx.get();
  SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
  // Whole TLS records and what follows them in one read, not a header and
  // then a body: a record is 16 KiB, a chunk 1 MiB.
  SSL_CTX_set_read_ahead(c, 1);
  SSL_CTX_set_default_read_buffer_len(c, 64 << 10);
  if (SSL_CTX_use_certificate_chain_file(c, files.certificate.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("bulk path: cannot use the certificate ",
                     files.certificate, ": ", OpenSslErrors()));
  }
  if (SSL_CTX_use_PrivateKey_file(c, files.private_key.c_str(),
                                  SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(c) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bulk path: cannot use the private key ", files.private_key, " with ",
        files.certificate, ": ", OpenSslErrors()));
  }
  if (SSL_CTX_load_verify_locations(c, files.ca.c_str(), nullptr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("bulk path: cannot use the trust root ", files.ca, ": ",
                     OpenSslErrors()));
  }
  SSL_CTX_set_verify(c,
                     server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                            : SSL_VERIFY_PEER,
                     nullptr);
  X509_STORE* store = SSL_CTX_get_cert_store(c);
  // As gRPC's OpenSSL verifies: a trust root that is an intermediate CA
  // anchors chains too.
  X509_STORE_set_flags(store,
                       X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_TRUSTED_FIRST);
  if (!files.crl_directory.empty()) {
    X509_LOOKUP* lookup = X509_STORE_add_lookup(store, X509_LOOKUP_hash_dir());
    if (lookup == nullptr ||
        X509_LOOKUP_add_dir(lookup, files.crl_directory.c_str(),
                            X509_FILETYPE_PEM) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("bulk path: cannot use the CRL directory ",
                       files.crl_directory, ": ", OpenSslErrors()));
    }
    X509_STORE_set_flags(store,
                         X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
  }
  if (server) {
    // Every connection is a full handshake, checked against today's CRLs.
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(c, 0);
  } else {
    const std::string alpn =
        std::string(1, static_cast<char>(sizeof kAlpn - 1)) + kAlpn;
    SSL_CTX_set_alpn_protos(c,
                            reinterpret_cast<const unsigned char*>(alpn.data()),
                            static_cast<unsigned int>(alpn.size()));
  }
  return ctx;
}

std::string SslTrouble(SSL* ssl, int ret) {
  const int code = SSL_get_error(ssl, ret);
  std::string out;
  switch (code) {
    case SSL_ERROR_ZERO_RETURN:
      out = "the other end closed the connection";
      break;
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      out = "timed out";
      break;
    case SSL_ERROR_SYSCALL:
      out = errno == 0
                ? "the connection ended"
                : absl::StrCat("connection error: ", std::strerror(errno));
      break;
    default:
      out = absl::StrCat("TLS error ", code);
  }
  while (const unsigned long e = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(e, text, sizeof text);
    absl::StrAppend(&out, "; ", text);
  }
  return out;
}

namespace {

// A socket BIO that sends with MSG_NOSIGNAL: a peer gone does not raise
// SIGPIPE in an application that embeds the SDK (OpenSSL's own socket BIO
// calls write()). Blocking; a timeout or error is a failure, not a retry.
int SocketWrite(BIO* b, const char* data, int size) {
  const int fd = static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(b)));
  ssize_t n;
  do {
    n = send(fd, data, static_cast<size_t>(size), MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return static_cast<int>(n);
}

int SocketRead(BIO* b, char* data, int size) {
  const int fd = static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(b)));
  ssize_t n;
  do {
    n = recv(fd, data, static_cast<size_t>(size), 0);
  } while (n < 0 && errno == EINTR);
  return static_cast<int>(n);
}

long SocketCtrl(BIO*, int cmd, long, void*) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

const BIO_METHOD* SocketMethod() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                                 "lienthong bulk socket");
    BIO_meth_set_write(m, SocketWrite);
    BIO_meth_set_read(m, SocketRead);
    BIO_meth_set_ctrl(m, SocketCtrl);
    return m;
  }();
  return method;
}

}  // namespace

bool AttachSocket(SSL* ssl, int fd) {
  BIO* socket = BIO_new(SocketMethod());
  if (socket != nullptr) {
    BIO_set_data(socket, reinterpret_cast<void*>(static_cast<intptr_t>(fd)));
    BIO_set_init(socket, 1);
  }
  BIO* gather = BIO_new(BIO_f_buffer());
  if (socket == nullptr || gather == nullptr ||
      BIO_set_write_buffer_size(gather, kWriteBuffer) != 1 ||
      BIO_up_ref(socket) != 1) {
    BIO_free(socket);
    BIO_free(gather);
    return false;
  }
  // `ssl` owns one reference of each end: the socket is read directly and
  // written behind the buffer.
  BIO_push(gather, socket);
  SSL_set_bio(ssl, socket, gather);
  return true;
}

absl::Status WriteFrame(SSL* ssl, uint8_t type,
                        const grpc::ByteBuffer& payload) {
  std::vector<grpc::Slice> slices;
  if (payload.Valid() && !payload.Dump(&slices).ok()) {
    return absl::InternalError("bulk connection: unreadable message buffer");
  }
  std::vector<uint8_t> gathered(5);
  PutHead(type, payload.Length(), gathered.data());
  for (const grpc::Slice& s : slices) {
    if (s.size() < kGather) {
      gathered.insert(gathered.end(), s.begin(), s.end());
      continue;
    }
    if (!gathered.empty()) {
      if (absl::Status w = WriteAll(ssl, gathered.data(), gathered.size());
          !w.ok())
        return w;
      gathered.clear();
    }
    if (absl::Status w = WriteAll(ssl, s.begin(), s.size()); !w.ok()) return w;
  }
  if (!gathered.empty()) {
    if (absl::Status w = WriteAll(ssl, gathered.data(), gathered.size());
        !w.ok())
      return w;
  }
  if (BIO_flush(SSL_get_wbio(ssl)) != 1) {
    return absl::UnavailableError(
        absl::StrCat("bulk connection: sending failed: ", SslTrouble(ssl, -1)));
  }
  return absl::OkStatus();
}

absl::Status WriteFrame(SSL* ssl, uint8_t type, absl::string_view payload) {
  grpc::Slice slice(payload.data(), payload.size());
  return WriteFrame(ssl, type, grpc::ByteBuffer(&slice, 1));
}

bool Readable(SSL* ssl, int fd) {
  if (SSL_has_pending(ssl) == 1) return true;
  // The socket itself: SSL_get_rfd does not see through our BIO.
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

absl::StatusOr<Frame> ReadFrame(SSL* ssl, uint32_t max_bytes,
                                absl::string_view what, absl::Time deadline) {
  uint8_t head[5];
  if (absl::Status r = ReadAll(ssl, head, sizeof head, what, deadline); !r.ok())
    return r;
  const uint32_t size = (uint32_t{head[1]} << 24) | (uint32_t{head[2]} << 16) |
                        (uint32_t{head[3]} << 8) | uint32_t{head[4]};
  if (size > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("bulk connection: a frame of ", size, " bytes from the ",
                     what, " is above the limit of ", max_bytes));
  }
  Frame f;
  f.type = head[0];
  grpc_slice raw = grpc_slice_malloc(size);
  if (absl::Status r =
          ReadAll(ssl, GRPC_SLICE_START_PTR(raw), size, what, deadline);
      !r.ok()) {
    grpc_slice_unref(raw);
    return r;
  }
  f.payload = grpc::Slice(raw, grpc::Slice::STEAL_REF);
  return f;
}

absl::Status WriteStatus(SSL* ssl, const absl::Status& status) {
  v1::BulkStatus s;
  s.set_code(static_cast<int32_t>(status.code()));
  s.set_message(std::string(status.message()));
  return WriteFrame(ssl, kStatus, s.SerializeAsString());
}

absl::StatusOr<absl::Status> StatusOf(const Frame& frame) {
  v1::BulkStatus s;
  if (frame.type != kStatus ||
      !s.ParseFromArray(frame.payload.begin(),
                        static_cast<int>(frame.payload.size())) ||
      s.code() < 0 || s.code() > 16) {
    return absl::InvalidArgumentError(
        "bulk connection: the last frame is not a well-formed status");
  }
  return absl::Status(static_cast<absl::StatusCode>(s.code()), s.message());
}

}  // namespace lienthong::bulk_wire
