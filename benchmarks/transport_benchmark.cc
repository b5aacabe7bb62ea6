// What carrying attachment bytes costs on each transport the broker could
// use, side by side in one run: 1 GiB in 1 MiB chunks over loopback from a
// client to a server in this process, each received chunk landing in the
// server's own 1 MiB buffer (as the broker copies an upload into its disk
// buffer), both ends on this machine's two cores.
//   grpc-tls   what attachments use today: a gRPC bidi stream of raw
//              ByteBuffers (no protobuf copies; the sender's chunk is a
//              static slice), mutual TLS 1.3 through gRPC's TLS
//              (OpenSSL behind a BIO pair and gRPC's frame protector)
//   raw-tls    OpenSSL on the socket itself: mutual TLS 1.3, SSL_write of
//              each chunk, SSL_read straight into the buffer (what a bulk
//              path beside gRPC would do without kernel TLS, which this
//              machine's kernel does not offer)
//   raw-tcp    the same bytes with no TLS at all: the kernel's floor
// Both TLS cases use the development PKI's broker and organization
// certificates and negotiate TLS_AES_256_GCM_SHA384 (checked here for
// raw-tls; `openssl s_client` shows the broker's gRPC listener picks the
// same). Printed per case: MiB/s, the CPU time of the whole process (both
// ends) per GiB, and the ratio of that CPU time to grpc-tls's, over ROUNDS
// alternating rounds (default 3):
//   build/benchmarks/transport_benchmark [ROUNDS] [MIB]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/client_callback.h"
#include "grpcpp/impl/codegen/sync_stream.h"

#ifndef LIENTHONG_SOURCE_DIR
#error "LIENTHONG_SOURCE_DIR must be defined (benchmarks/CMakeLists.txt)"
#endif

namespace {

constexpr size_t kChunk = size_t{1} << 20;
constexpr char kMethod[] = "/lienthong.bench.Transport/Push";

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "transport_benchmark: %s\n", what.c_str());
  ERR_print_errors_fp(stderr);
  std::exit(1);
}

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die("cannot read " + path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Pki {
  std::string dir, ca, broker_cert, broker_key, org_cert, org_key;
};

Pki MakePki() {
  char dir_template[] = "/tmp/lienthong-transport-bench.XXXXXX";
  Pki p;
  p.dir = mkdtemp(dir_template);
  const std::string cmd = absl::StrCat(
      "/bin/bash '", LIENTHONG_SOURCE_DIR, "/deploy/pki/make-dev-pki.sh' ",
      "--out '", p.dir, "' --org 000.00.00.H49 >/dev/null");
  if (std::system(cmd.c_str()) != 0) Die("make-dev-pki.sh failed");
  p.ca = p.dir + "/ca.pem";
  p.broker_cert = p.dir + "/brokers/central.pem";
  p.broker_key = p.dir + "/brokers/central.key";
  p.org_cert = p.dir + "/orgs/000.00.00.H49.pem";
  p.org_key = p.dir + "/orgs/000.00.00.H49.key";
  return p;
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

struct Figure {
  double seconds = 0;
  double cpu = 0;
};

// The sender's chunk: the same bytes every time, never copied to send.
const std::vector<char>& Payload() {
  static const std::vector<char>* payload = [] {
    auto* p = new std::vector<char>(kChunk);
    for (size_t i = 0; i < kChunk; ++i) (*p)[i] = static_cast<char>(i * 131);
    return p;
  }();
  return *payload;
}

// ---- grpc-tls ---------------------------------------------------------

class Sink final : public grpc::ServerGenericBidiReactor {
 public:
  Sink() : buffer_(kChunk) {
    grpc::Slice done("1", 1);
    reply_ = grpc::ByteBuffer(&done, 1);
    StartRead(&incoming_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      StartWriteAndFinish(&reply_, grpc::WriteOptions(), grpc::Status::OK);
      return;
    }
    std::vector<grpc::Slice> slices;
    if (!incoming_.Dump(&slices).ok()) Die("Dump failed");
    size_t at = 0;
    for (const grpc::Slice& s : slices) {
      std::memcpy(buffer_.data() + at % kChunk, s.begin(), s.size());
      at += s.size();
    }
    received_ += at;
    incoming_.Clear();
    StartRead(&incoming_);
  }
  void OnDone() override { delete this; }

 private:
  std::vector<char> buffer_;
  grpc::ByteBuffer incoming_;
  grpc::ByteBuffer reply_;
  uint64_t received_ = 0;
};

class SinkService final : public grpc::CallbackGenericService {
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override {
    if (context->method() != kMethod) Die("unexpected method");
    return new Sink;
  }
};

Figure GrpcTls(const Pki& pki, uint64_t total) {
  grpc::SslServerCredentialsOptions server_options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  server_options.pem_root_certs = Read(pki.ca);
  server_options.pem_key_cert_pairs.push_back(
      {Read(pki.broker_key), Read(pki.broker_cert)});
  SinkService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0",
                           grpc::SslServerCredentials(server_options), &port);
  builder.RegisterCallbackGenericService(&service);
  builder.SetMaxReceiveMessageSize(4 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) Die("gRPC server did not start");

  grpc::SslCredentialsOptions client_options;
  client_options.pem_root_certs = Read(pki.ca);
  client_options.pem_private_key = Read(pki.org_key);
  client_options.pem_cert_chain = Read(pki.org_cert);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::SslCredentials(client_options));
  if (!channel->WaitForConnected(std::chrono::system_clock::now() +
                                 std::chrono::seconds(10))) {
    Die("gRPC channel did not connect");
  }
  const std::vector<char>& payload = Payload();
  grpc::Slice chunk(payload.data(), payload.size(), grpc::Slice::STATIC_SLICE);

  const auto start = std::chrono::steady_clock::now();
  const double cpu = CpuSeconds();
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>>
      stream(grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer,
                                                       grpc::ByteBuffer>::
                 Create(channel.get(),
                        grpc::internal::RpcMethod(
                            kMethod, grpc::internal::RpcMethod::BIDI_STREAMING),
                        &context));
  for (uint64_t sent = 0; sent < total; sent += kChunk) {
    grpc::ByteBuffer message(&chunk, 1);
    if (!stream->Write(message)) Die("gRPC write failed");
  }
  stream->WritesDone();
  grpc::ByteBuffer reply;
  stream->Read(&reply);
  const grpc::Status status = stream->Finish();
  if (!status.ok()) Die("gRPC stream: " + status.error_message());
  Figure f;
  f.cpu = CpuSeconds() - cpu;
  f.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  server->Shutdown();
  return f;
}

// ---- raw-tls and raw-tcp ----------------------------------------------

using SslCtx = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;

SslCtx Context(const Pki& pki, bool server) {
  SslCtx ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()),
             SSL_CTX_free);
  if (!ctx) Die("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  // Whole TLS records and what follows them in one read, not a header and
  // then a body: a record is 16 KiB, a chunk 1 MiB.
  SSL_CTX_set_read_ahead(ctx.get(), 1);
  SSL_CTX_set_default_read_buffer_len(ctx.get(), 64 << 10);
  const std::string& cert = server ? pki.broker_cert : pki.org_cert;
  const std::string& key = server ? pki.broker_key : pki.org_key;
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) !=
          1 ||
      SSL_CTX_load_verify_locations(ctx.get(), pki.ca.c_str(), nullptr) != 1) {
    Die("loading the PKI into OpenSSL");
  }
  SSL_CTX_set_verify(
      ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return ctx;
}

int Listen(int* port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      listen(fd, 1) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    Die("listen on loopback");
  }
  *port = ntohs(a.sin_port);
  return fd;
}

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    Die("connect to loopback");
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Moves `total` bytes from a client to a server thread, with TLS when
// `tls`; the server answers one byte once it has them all.
Figure Raw(const Pki& pki, uint64_t total, bool tls) {
  SslCtx server_ctx = tls ? Context(pki, true) : SslCtx(nullptr, SSL_CTX_free);
  SslCtx client_ctx = tls ? Context(pki, false) : SslCtx(nullptr, SSL_CTX_free);
  int port = 0;
  const int listener = Listen(&port);
  absl::Notification handshaken;
  std::thread server([&] {
    const int fd = accept(listener, nullptr, nullptr);
    if (fd < 0) Die("accept");
    SSL* ssl = nullptr;
    if (tls) {
      ssl = SSL_new(server_ctx.get());
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) != 1) Die("SSL_accept");
    }
    std::vector<char> buffer(kChunk);
    uint64_t received = 0;
    while (received < total) {
      const size_t want =
          std::min<uint64_t>(kChunk - received % kChunk, total - received);
      char* at = buffer.data() + received % kChunk;
      const long n =
          tls ? SSL_read(ssl, at, static_cast<int>(want)) : read(fd, at, want);
      if (n <= 0) Die("server read");
      received += n;
    }
    const char done = 1;
    if ((tls ? SSL_write(ssl, &done, 1) : write(fd, &done, 1)) != 1)
      Die("server answer");
    if (tls) {
      SSL_shutdown(ssl);
      SSL_free(ssl);
    }
    close(fd);
  });
  const int fd = Connect(port);
  SSL* ssl = nullptr;
  if (tls) {
    ssl = SSL_new(client_ctx.get());
    SSL_set_fd(ssl, fd);
    SSL_set1_host(ssl, "127.0.0.1");
    if (SSL_connect(ssl) != 1) Die("SSL_connect");
    const std::string cipher = SSL_get_cipher_name(ssl);
    if (cipher != "TLS_AES_256_GCM_SHA384") Die("negotiated " + cipher);
  }
  const std::vector<char>& payload = Payload();
  const auto start = std::chrono::steady_clock::now();
  const double cpu = CpuSeconds();
  for (uint64_t sent = 0; sent < total;) {
    const size_t want = std::min<uint64_t>(kChunk, total - sent);
    const long n = tls ? SSL_write(ssl, payload.data(), static_cast<int>(want))
                       : write(fd, payload.data(), want);
    if (n <= 0) Die("client write");
    sent += n;
  }
  char done = 0;
  if ((tls ? SSL_read(ssl, &done, 1) : read(fd, &done, 1)) != 1 || done != 1)
    Die("no answer from the server");
  Figure f;
  f.cpu = CpuSeconds() - cpu;
  f.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  server.join();
  if (tls) SSL_free(ssl);
  close(fd);
  close(listener);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  const uint64_t mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1024;
  if (rounds < 1 || mib < 1) {
    std::fprintf(stderr, "usage: %s [ROUNDS >= 1] [MIB >= 1]\n", argv[0]);
    return 2;
  }
  const uint64_t total = mib << 20;
  const Pki pki = MakePki();
  const std::vector<std::string> cases = {"grpc-tls", "raw-tls", "raw-tcp"};
  std::map<std::string, Figure> sum;
  std::printf("%llu MiB in 1 MiB chunks over loopback, %d round(s)\n",
              static_cast<unsigned long long>(mib), rounds);
  for (int r = 1; r <= rounds; ++r) {
    for (const std::string& name : cases) {
      const Figure f = name == "grpc-tls" ? GrpcTls(pki, total)
                                          : Raw(pki, total, name == "raw-tls");
      sum[name].seconds += f.seconds;
      sum[name].cpu += f.cpu;
      std::printf("round %d  %-9s %8.1f MiB/s  CPU %.2f s per GiB\n", r,
                  name.c_str(), mib / f.seconds, f.cpu * 1024.0 / mib);
    }
  }
  const double base = sum["grpc-tls"].cpu;
  for (const std::string& name : cases) {
    const Figure& f = sum[name];
    std::printf(
        "mean %-9s %8.1f MiB/s  CPU %.2f s per GiB  (%.2f x grpc-tls)\n",
        name.c_str(), mib * rounds / f.seconds, f.cpu * 1024.0 / mib / rounds,
        f.cpu / base);
  }
  std::system(absl::StrCat("rm -rf '", pki.dir, "'").c_str());
  return 0;
}
