// Reads the identity out of a PEM certificate file, so a broker or client can
// refuse a wrong certificate at startup with a clear message instead of a
// failed handshake later.
#ifndef LIENTHONG_COMMON_CERTIFICATE_H_
#define LIENTHONG_COMMON_CERTIFICATE_H_

#include <openssl/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lienthong/common/identity.h"

namespace lienthong {

struct CertificateInfo {
  Principal principal;  // from the single SPIFFE URI SAN
  absl::Time not_before;
  absl::Time not_after;
};

// NOT_FOUND if the file cannot be read; INVALID_ARGUMENT naming the file when
// it holds no PEM certificate, has no or several URI SANs, or the URI is not a
// Liên Thông identity. Thread-safe.
absl::StatusOr<CertificateInfo> ReadCertificateFile(const std::string& path);

// NOT_FOUND / INVALID_ARGUMENT naming the file unless it holds a PEM private
// key.
absl::Status CheckPrivateKeyFile(const std::string& path);

// The whole of a PEM (or any small) file: NOT_FOUND naming it when it cannot
// be read, INVALID_ARGUMENT for a directory. Thread-safe.
absl::StatusOr<std::string> ReadPemFile(const std::string& path);

// The URI subject alternative names of `cert`, in order.
std::vector<std::string> CertificateUris(X509* cert);

// Whether `key` is an EC key on P-256 (prime256v1).
bool IsEcP256(const EVP_PKEY* key);

// What a CRL directory holds for the trust roots of a CA file.
struct CrlDirectoryInfo {
  int crl_files = 0;        // <hash>.rN files of those roots
  std::string newest_file;  // the CRL a handshake uses (latest lastUpdate)
  int revoked = 0;          // certificates listed in the newest CRL
  absl::Time next_update;   // earliest nextUpdate of the roots' newest CRLs
};

// Checks `directory` as an OpenSSL hashed CRL directory for the roots in
// `ca_file` (PEM, one or more certificates): it must be a readable
// directory holding, for every root, <subject hash>.r0 (then .r1, ...)
// signed by that root, and each root's newest CRL must not be past its
// nextUpdate — with revocation checking on, a missing or stale CRL fails
// every handshake. NOT_FOUND when the directory or the CA file cannot be
// read, FAILED_PRECONDITION when a root has no CRL or its newest one
// expired, INVALID_ARGUMENT for a file that is not a CRL of its root; the
// message names the directory or file. Thread-safe.
absl::StatusOr<CrlDirectoryInfo> CheckCrlDirectory(const std::string& directory,
                                                   const std::string& ca_file);

// Whether `certificate_file`'s certificate is listed in the newest CRL of
// its issuer (a root in `ca_file`) in `directory`. Returns a message naming
// the serial, the revocation time and reason when it is revoked, an empty
// string when it is not (or its issuer is not in `ca_file`); errors as
// CheckCrlDirectory. Thread-safe.
absl::StatusOr<std::string> FindRevocation(const std::string& directory,
                                           const std::string& ca_file,
                                           const std::string& certificate_file);

}  // namespace lienthong

#endif  // LIENTHONG_COMMON_CERTIFICATE_H_
