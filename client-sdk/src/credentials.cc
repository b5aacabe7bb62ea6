#include "client-sdk/src/credentials.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lienthong/common/certificate.h"
#include "lienthong/common/identity.h"

namespace lienthong::client_internal {
namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;

// "certificate_file \"org.pem\""
std::string Named(absl::string_view option, const std::string& path) {
  return absl::StrCat(option, " \"", path, "\"");
}

absl::StatusOr<std::string> ReadFile(absl::string_view option,
                                     const std::string& path) {
  auto unreadable = [&](absl::string_view why) {
    return absl::NotFoundError(
        absl::StrCat(Named(option, path), ": cannot read: ", why));
  };
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return unreadable(std::strerror(errno));
  std::string content;
  struct stat info;
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    close(fd);
    return unreadable("not a regular file");
  }
  char buf[16384];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error_number = errno;
      close(fd);
      return unreadable(std::strerror(error_number));
    }
    if (n == 0) break;
    content.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return content;
}

BioPtr MemoryBio(const std::string& data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

// Refuses to prompt on the terminal for the pass phrase of an encrypted key.
int NoPassphrase(char*, int, int, void*) { return 0; }

// "an organization", "a person", "a broker"
std::string WithArticle(Principal::Kind kind) {
  switch (kind) {
    case Principal::Kind::kOrg:
      return "an organization";
    case Principal::Kind::kPerson:
      return "a person";
    case Principal::Kind::kBroker:
      return "a broker";
  }
  return "?";
}

absl::StatusOr<Principal> CheckFiles(const ClientOptions& options,
                                     Principal::Kind required) {
  // The identity: the single SPIFFE URI SAN, which must be of that kind.
  absl::StatusOr<CertificateInfo> info =
      ReadCertificateFile(options.certificate_file);
  if (!info.ok()) {
    return absl::Status(
        info.status().code(),
        absl::StrCat("certificate_file: ", info.status().message()));
  }
  const std::string cert_name =
      Named("certificate_file", options.certificate_file);
  const Principal& principal = info->principal;
  if (principal.kind != required) {
    return absl::InvalidArgumentError(absl::StrCat(
        cert_name, ": identity \"", principal.spiffe_id, "\" is ",
        WithArticle(principal.kind), ", not ", WithArticle(required)));
  }
  if (info->not_after < absl::Now()) {
    return absl::InvalidArgumentError(
        absl::StrCat(cert_name, ": expired on ",
                     absl::FormatTime(absl::RFC3339_sec, info->not_after,
                                      absl::UTCTimeZone())));
  }
  absl::StatusOr<std::string> cert_pem =
      ReadFile("certificate_file", options.certificate_file);
  if (!cert_pem.ok()) return cert_pem.status();
  BioPtr cert_bio = MemoryBio(*cert_pem);
  X509Ptr cert(
      PEM_read_bio_X509(cert_bio.get(), nullptr, NoPassphrase, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(cert_name, ": not a PEM certificate"));
  }

  // The private key, which must belong to the certificate.
  absl::StatusOr<std::string> key_pem =
      ReadFile("private_key_file", options.private_key_file);
  if (!key_pem.ok()) return key_pem.status();
  const std::string key_name =
      Named("private_key_file", options.private_key_file);
  BioPtr key_bio = MemoryBio(*key_pem);
  KeyPtr key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_name, ": not an unencrypted PEM private key"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_name, ": is not the key of ", cert_name));
  }

  // The trust root(s).
  absl::StatusOr<std::string> ca_pem = ReadFile("ca_file", options.ca_file);
  if (!ca_pem.ok()) return ca_pem.status();
  BioPtr ca_bio = MemoryBio(*ca_pem);
  X509Ptr root(PEM_read_bio_X509(ca_bio.get(), nullptr, NoPassphrase, nullptr));
  if (root == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        Named("ca_file", options.ca_file), ": holds no PEM certificate"));
  }

  // Revocation: the CRLs must be usable (or every handshake fails), and a
  // certificate they list would only be refused by the broker later with a
  // bare closed connection.
  if (!options.crl_directory.empty()) {
    const std::string crl_name = Named("crl_directory", options.crl_directory);
    absl::StatusOr<CrlDirectoryInfo> crls =
        CheckCrlDirectory(options.crl_directory, options.ca_file);
    if (!crls.ok()) {
      return absl::Status(
          crls.status().code(),
          absl::StrCat(crl_name, ": ", crls.status().message()));
    }
    absl::StatusOr<std::string> revoked = FindRevocation(
        options.crl_directory, options.ca_file, options.certificate_file);
    if (!revoked.ok()) {
      return absl::Status(
          revoked.status().code(),
          absl::StrCat(crl_name, ": ", revoked.status().message()));
    }
    if (!revoked->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(cert_name, ": ", *revoked));
    }
  }
  return principal;
}

}  // namespace

bool IsClosedAtHandshake(const grpc::Status& status) {
  // gRPC 1.51: "failed to connect to all addresses; last error: UNAVAILABLE:
  // ipv4:127.0.0.1:7443: Socket closed" (TLS 1.3 completes on the client
  // before the broker has verified its certificate).
  // A broker certificate this client refuses reads "Tls handshake failed:
  // ... certificate verify failed" instead, and is not this.
  return status.error_code() == grpc::StatusCode::UNAVAILABLE &&
         absl::StrContains(status.error_message(), "failed to connect") &&
         absl::StrContains(status.error_message(), "Socket closed");
}

grpc::Status ExplainConnectFailure(const ClientOptions& options,
                                   const grpc::Status& status) {
  if (!IsClosedAtHandshake(status)) return status;
  const std::string cert_name =
      Named("certificate_file", options.certificate_file);
  absl::StatusOr<CertificateInfo> info =
      ReadCertificateFile(options.certificate_file);
  if (info.ok() && info->not_after < absl::Now()) {
    return grpc::Status(
        grpc::StatusCode::UNAUTHENTICATED,
        absl::StrCat(cert_name, ": expired on ",
                     absl::FormatTime(absl::RFC3339_sec, info->not_after,
                                      absl::UTCTimeZone()),
                     "; the broker refuses it at the TLS handshake (",
                     status.error_message(), ")"));
  }
  if (!options.crl_directory.empty()) {
    absl::StatusOr<std::string> revoked = FindRevocation(
        options.crl_directory, options.ca_file, options.certificate_file);
    ERR_clear_error();
    if (revoked.ok() && !revoked->empty()) {
      return grpc::Status(
          grpc::StatusCode::UNAUTHENTICATED,
          absl::StrCat(cert_name, ": ", *revoked,
                       "; the broker refuses it at the TLS handshake (",
                       status.error_message(), ")"));
    }
  }
  return grpc::Status(
      status.error_code(),
      absl::StrCat(status.error_message(),
                   " (the broker closed the connection during the TLS "
                   "handshake: if this persists it refuses this client's "
                   "certificate, e.g. revoked or from another CA; its log "
                   "says why)"));
}

absl::StatusOr<Principal> LoadIdentity(const ClientOptions& options,
                                       Principal::Kind required) {
  absl::StatusOr<Principal> identity = CheckFiles(options, required);
  // Leave nothing in this thread's OpenSSL error queue for gRPC's TLS code
  // to trip over later.
  ERR_clear_error();
  return identity;
}

}  // namespace lienthong::client_internal
