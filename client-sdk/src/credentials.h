// Checks of the PEM files named in ClientOptions, done once at Client::Open
// so that a bad path or a wrong certificate is reported at once and by name
// rather than as a TLS handshake failure later. Internal to the SDK.
#ifndef LIENTHONG_CLIENT_SDK_SRC_CREDENTIALS_H_
#define LIENTHONG_CLIENT_SDK_SRC_CREDENTIALS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/statusor.h"
#include "lienthong/client.h"
#include "lienthong/common/identity.h"

namespace lienthong::client_internal {

// Returns the identity named by the single SPIFFE URI SAN of
// options.certificate_file, which must be of kind `required` (an
// organization spiffe://<td>/org/<code> for Client, a person
// spiffe://<td>/person/<id> for AdminClient), after checking
// that options.private_key_file holds its (unencrypted) key and
// options.ca_file at least one certificate.
//
// NOT_FOUND naming the option and the path when a file is missing or
// unreadable; INVALID_ARGUMENT naming them when a file is not PEM of the
// expected kind, the certificate has no or several URI SANs (see
// ReadCertificateFile), its identity is not of kind `required`, it has
// expired, or the key is encrypted or does not match it. Thread-safe.
absl::StatusOr<Principal> LoadIdentity(const ClientOptions& options,
                                       Principal::Kind required);

// Whether `status` is a connection the broker closed during the TLS
// handshake, before answering anything: what a gRPC client sees when the
// broker refuses its certificate (the broker sends no TLS alert), but also
// what any endpoint that drops new TLS connections looks like.
bool IsClosedAtHandshake(const grpc::Status& status);

// Explains a call that failed with IsClosedAtHandshake. When this client's
// certificate has expired since Open, or options.crl_directory is set and
// lists it as revoked, returns UNAUTHENTICATED naming certificate_file and
// why (retrying cannot help until the certificate is replaced); otherwise
// `status` with a note that the broker may be refusing the certificate.
// Any other status is returned unchanged. Reads the certificate and CRL
// files; thread-safe.
grpc::Status ExplainConnectFailure(const ClientOptions& options,
                                   const grpc::Status& status);

}  // namespace lienthong::client_internal

#endif  // LIENTHONG_CLIENT_SDK_SRC_CREDENTIALS_H_
