// Reads the identity out of a PEM certificate file, so a broker or client can
// refuse a wrong certificate at startup with a clear message instead of a
// failed handshake later.
#ifndef LIENTHONG_COMMON_CERTIFICATE_H_
#define LIENTHONG_COMMON_CERTIFICATE_H_

#include <string>

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

}  // namespace lienthong

#endif  // LIENTHONG_COMMON_CERTIFICATE_H_
