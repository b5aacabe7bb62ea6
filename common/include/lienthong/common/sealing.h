// End-to-end sealing of a document's content for its recipient
// organizations. The SDK seals before sending and opens after receiving;
// brokers only carry the result. Everything cryptographic sits behind one
// small interface, ContentCipher, so that the national cipher module can
// replace the default OpenSSL implementation without touching its callers.
//
//   // Sender: recipients' certificates come from the broker's directory and
//   // are trusted only once they verify against our own trust root.
//   ASSIGN_OR_RETURN(EncryptionCertificate cert,
//                    VerifyEncryptionCertificate(der, ca_pem,
//                                                "lienthong.local", now));
//   std::unique_ptr<ContentCipher> cipher = NewDefaultCipher();
//   ASSIGN_OR_RETURN(Envelope sealed, cipher->Seal(content, aad, {cert}));
//
//   // Recipient:
//   ASSIGN_OR_RETURN(std::unique_ptr<DecryptionKey> key,
//                    cipher->LoadKey(my_cert_pem, my_key_pem));
//   ASSIGN_OR_RETURN(std::string content,
//                    cipher->Open(sealed, aad, key->org(), {key.get()}));
#ifndef LIENTHONG_COMMON_SEALING_H_
#define LIENTHONG_COMMON_SEALING_H_

#include <openssl/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace lienthong::sealing {

// The default scheme: a one-time ECDH key pair on P-256 per recipient, HKDF
// with SHA-256 to a key-wrapping key, AES-256-GCM for the content key and
// the content.
inline constexpr absl::string_view kDefaultScheme =
    "lienthong-e2e-v1/ECDH-P256/HKDF-SHA256/AES-256-GCM";

// A recipient organization's encryption certificate, verified.
struct EncryptionCertificate {
  std::string org;     // organization code from the SPIFFE URI SAN
  std::string der;     // the certificate
  std::string sha256;  // SHA-256 of `der`, 32 raw bytes
  absl::Time not_after;
};

// Verifies an encryption certificate (PEM or DER): it chains to one of the
// CA certificates in `trust_root_pem` and is valid at `now`; it has exactly
// one URI SAN, spiffe://<trust_domain>/org/<code>; its key usage allows
// keyAgreement; its key is EC P-256. INVALID_ARGUMENT saying which check
// failed (FAILED_PRECONDITION for an expired or not yet valid one).
// Thread-safe.
absl::StatusOr<EncryptionCertificate> VerifyEncryptionCertificate(
    absl::string_view certificate, absl::string_view trust_root_pem,
    absl::string_view trust_domain, absl::Time now);

// Lower-case hex of raw bytes (e.g. EncryptionCertificate::sha256).
std::string HexOf(absl::string_view raw);
// Lower-case hex SHA-256 of `bytes`.
std::string Sha256Hex(absl::string_view bytes);
// SHA-256 of `bytes`, raw (32 bytes).
std::string Sha256Raw(absl::string_view bytes);
// SHA-256 of the concatenation of `pieces` (a chunk as gRPC received it),
// raw.
std::string Sha256Raw(absl::Span<const absl::string_view> pieces);
// SHA-256 as an EVP_MD fetched once: OpenSSL 3 looks an implicitly fetched
// algorithm (EVP_sha256(), SHA256()) up again on every use, which costs more
// than hashing a small input. Use it for every SHA-256 digest and signature.
const EVP_MD* Sha256Md();

// SHA-256 over content given in pieces (an attachment streamed in chunks).
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void Update(absl::string_view piece);
  // The digest of everything given since construction or the last Finish
  // (raw, 32 bytes); the stream starts over.
  std::string Finish();

 private:
  void* ctx_;  // EVP_MD_CTX
};

// The content key, wrapped for one recipient.
struct WrappedKey {
  std::string org;
  std::string certificate_sha256;  // raw
  std::string ephemeral_public_key;
  std::string nonce;
  std::string wrapped_key;  // with its tag
};

struct Envelope {
  std::string scheme;
  std::vector<WrappedKey> keys;  // one per recipient
  std::string nonce;
  std::string ciphertext;  // with its tag
};

// One of this organization's decryption keys: the private key of an
// encryption certificate. Immutable and thread-safe.
class DecryptionKey {
 public:
  virtual ~DecryptionKey() = default;
  virtual const std::string& org() const = 0;
  // SHA-256 of the certificate's DER, raw.
  virtual const std::string& certificate_sha256() const = 0;
};

// Thread-safe; stateless apart from its key material.
class ContentCipher {
 public:
  virtual ~ContentCipher() = default;

  virtual absl::string_view scheme() const = 0;

  // Encrypts `content` under a fresh key and wraps that key for each of
  // `recipients` (verified certificates; at least one).
  // `associated_data` is authenticated, not encrypted: Open needs the same.
  // INVALID_ARGUMENT for a certificate this cipher cannot use; INTERNAL when
  // the crypto library fails.
  virtual absl::StatusOr<Envelope> Seal(
      absl::string_view content, absl::string_view associated_data,
      const std::vector<EncryptionCertificate>& recipients) const = 0;

  // Decrypts `envelope` for `org` with whichever of `keys` belongs to the
  // certificate its key was wrapped for. INVALID_ARGUMENT for another scheme
  // or a malformed envelope; FAILED_PRECONDITION when the envelope holds no
  // key for `org` or none of `keys` fits (sealed for another certificate of
  // the org); DATA_LOSS when authentication fails: the envelope was altered,
  // or belongs to other associated data.
  virtual absl::StatusOr<std::string> Open(
      const Envelope& envelope, absl::string_view associated_data,
      absl::string_view org,
      const std::vector<const DecryptionKey*>& keys) const = 0;

  // Loads a key pair: an encryption certificate and its private key (PEM).
  // INVALID_ARGUMENT when either is unusable or they do not belong together.
  virtual absl::StatusOr<std::unique_ptr<DecryptionKey>> LoadKey(
      absl::string_view certificate_pem,
      absl::string_view private_key_pem) const = 0;
};

// The kDefaultScheme cipher over OpenSSL 3's EVP API.
std::unique_ptr<ContentCipher> NewDefaultCipher();

// Symmetric sealing for data a party keeps for itself (e.g. encryption at
// rest): AES-256-GCM under a 32-byte `key` with a random 96-bit nonce;
// returns nonce || ciphertext || tag. INTERNAL when the crypto library
// fails.
absl::StatusOr<std::string> AeadSeal(absl::string_view key,
                                     absl::string_view plaintext,
                                     absl::string_view associated_data);
// The reverse: DATA_LOSS when authentication fails (altered, another key,
// other associated data), INVALID_ARGUMENT when too short.
absl::StatusOr<std::string> AeadOpen(absl::string_view key,
                                     absl::string_view sealed,
                                     absl::string_view associated_data);
// AES-256-GCM with a nonce the caller chooses (12 bytes; it must never
// repeat under one key: e.g. a segment's position under a key used for one
// content only): ciphertext || 16-byte tag, and the reverse (DATA_LOSS when
// authentication fails).
absl::StatusOr<std::string> AeadSealWithNonce(
    absl::string_view key, absl::string_view nonce, absl::string_view plaintext,
    absl::string_view associated_data);
absl::StatusOr<std::string> AeadOpenWithNonce(
    absl::string_view key, absl::string_view nonce, absl::string_view sealed,
    absl::string_view associated_data);
// 64 lower-case hex digits: a SHA-256 as documents and attachments carry it.
bool IsSha256Hex(absl::string_view text);
// 32 random bytes for AeadSeal.
std::string RandomKey();

}  // namespace lienthong::sealing

#endif  // LIENTHONG_COMMON_SEALING_H_
