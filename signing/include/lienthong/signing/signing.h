// Signatures over documents (by the sending organization), custody receipts
// and evidence (by brokers): the canonical digests, batch signing over a
// Merkle root, and verification against the federation's CA. No gRPC, no
// storage: the SDK, the broker and the offline `lienthong verify` share it.
//
//   // Sender (the SDK), one signature for a whole batch:
//   ASSIGN_OR_RETURN(auto signer, Signer::FromPem(cert_pem, key_pem));
//   std::vector<std::string> digests = {DocumentDigest(a), DocumentDigest(b)};
//   ASSIGN_OR_RETURN(std::vector<v1::Signature> sigs,
//                    signer->SignBatch(digests, absl::Now()));
//   *a.mutable_signature() = sigs[0];  *b.mutable_signature() = sigs[1];
//
//   // Anyone who trusts the CA:
//   ASSIGN_OR_RETURN(auto verifier, SignatureVerifier::Create(
//       {.trust_root_pem = ca_pem, .trust_domain = "lienthong.local"}));
//   ASSIGN_OR_RETURN(Signatory who,
//                    verifier->Verify(DocumentDigest(a), a.signature(),
//                                     "document.signature", std::nullopt));
//   // who.principal.name == a.sender() is the caller's to check.
#ifndef LIENTHONG_SIGNING_SIGNING_H_
#define LIENTHONG_SIGNING_SIGNING_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lienthong/common/identity.h"
#include "lienthong/common/sealing.h"
#include "lienthong/v1/document.pb.h"
#include "lienthong/v1/evidence.pb.h"

namespace lienthong::signing {

inline constexpr absl::string_view kScheme =
    "lienthong-sig-v1/ECDSA-P256-SHA256/Merkle-SHA256";
inline constexpr size_t kDigestBytes = 32;

// ---- What is signed ---------------------------------------------------------

// The document as a signature covers it: content replaced by hashes computed
// from the content itself (never from the document's own sha256 fields).
v1::DocumentManifest ManifestOf(const v1::Document& doc);
// SHA-256 of the manifest's canonical encoding (document.proto), raw.
std::string ManifestDigest(const v1::DocumentManifest& manifest);
// ManifestDigest(ManifestOf(doc)).
std::string DocumentDigest(const v1::Document& doc);
// SHA-256 of the receipt's canonical encoding, its signature excluded, raw.
std::string ReceiptDigest(const v1::CustodyReceipt& receipt);

// What an approver's signature covers (Approval.signature): SHA-256 of
// "lienthong approval v2\n" and the document id, the hex DocumentDigest of
// the document as its sender signed it (recipients, metadata, idempotency
// key), the content hash, the decision's number, the comment (hex in lower
// case), then the number of roles it is given as and each role's org and
// role, sorted (Approval.as, in any order), each as <decimal byte length>
// ":" <bytes> "\n". Raw.
std::string ApprovalDigest(
    absl::string_view document_id, absl::string_view manifest_sha256,
    absl::string_view content_sha256, v1::ApprovalDecision decision,
    absl::string_view comment,
    const google::protobuf::RepeatedPtrField<v1::Approver>& as);

// SHA-256, raw (sealing::HexOf makes the hex the messages carry).
std::string Sha256(absl::string_view bytes);

// ---- Merkle trees (RFC 9162) ------------------------------------------------

// The root over `digests` (at least one).
std::string MerkleRoot(const std::vector<std::string>& digests);
// The audit path of digests[index], leaf to root.
std::vector<std::string> MerkleAuditPath(
    const std::vector<std::string>& digests, size_t index);
// The root a leaf and its audit path lead to. INVALID_ARGUMENT when index,
// size and path do not fit together.
absl::StatusOr<std::string> RootFromAuditPath(
    absl::string_view digest, uint64_t index, uint64_t size,
    const std::vector<std::string>& path);
// The exact text a batch signature covers (document.proto, Signature).
std::string SignedText(uint64_t tree_size, absl::string_view root,
                       absl::Time signed_at);

// ---- Signing ----------------------------------------------------------------

// Signs with an EC P-256 key and its certificate. Thread-safe.
class Signer {
 public:
  // INVALID_ARGUMENT saying what is wrong: not a PEM certificate or key, not
  // EC P-256, the key is not the certificate's, or the certificate lacks a
  // single Liên Thông SPIFFE URI SAN.
  static absl::StatusOr<std::unique_ptr<Signer>> FromPem(
      absl::string_view certificate_pem, absl::string_view key_pem);
  // The same from files; NOT_FOUND naming a file that cannot be read.
  static absl::StatusOr<std::unique_ptr<Signer>> FromFiles(
      const std::string& certificate_file, const std::string& key_file);
  ~Signer();

  // One signature per digest (32 bytes each, at least one), all sharing one
  // ECDSA signature over their Merkle root. INVALID_ARGUMENT for a digest of
  // another length; INTERNAL when the crypto library fails.
  absl::StatusOr<std::vector<v1::Signature>> SignBatch(
      const std::vector<std::string>& digests, absl::Time now) const;
  absl::StatusOr<v1::Signature> Sign(absl::string_view digest,
                                     absl::Time now) const;

  const Principal& principal() const { return principal_; }

 private:
  struct Key;
  Signer(Principal principal, std::string certificate_der,
         std::unique_ptr<Key> key);
  Principal principal_;
  std::string certificate_der_;
  std::unique_ptr<Key> key_;
};

// ---- Verifying --------------------------------------------------------------

// Who made a signature that verified.
struct Signatory {
  Principal principal;             // from the certificate's SPIFFE URI SAN
  std::string certificate_sha256;  // hex of the DER
  absl::Time signed_at;
};

struct VerifierOptions {
  // CA certificates (PEM) signing certificates must chain to. Required.
  std::string trust_root_pem;
  // Signing certificates must name this trust domain. Required.
  std::string trust_domain;
  // An OpenSSL hashed CRL directory for the roots (optional): a revoked
  // signing certificate is refused. Re-read within `cache_ttl`.
  std::string crl_directory;
  // How far in the future a signature's time may be.
  absl::Duration max_clock_skew = absl::Minutes(5);
  // How long a verified certificate is trusted without checking it again.
  absl::Duration cache_ttl = absl::Seconds(60);
};

// Verifies signatures, caching verified certificates and batch signatures
// so a batch costs one ECDSA verification. Thread-safe.
class SignatureVerifier {
 public:
  // INVALID_ARGUMENT when the trust root holds no certificate or the trust
  // domain is empty.
  static absl::StatusOr<std::unique_ptr<SignatureVerifier>> Create(
      VerifierOptions options);
  ~SignatureVerifier();

  // Checks that `signature` covers `digest`: its scheme, the certificate
  // (chains to the trust root and is valid at the signing time and, when
  // set, at `also_valid_at`; not revoked; EC P-256; allows digitalSignature;
  // one SPIFFE URI SAN in the trust domain), the Merkle audit path and the
  // ECDSA signature; the signing time is not in the future. Errors name
  // `field`: INVALID_ARGUMENT for a malformed or failing signature (the
  // content was altered after signing), PERMISSION_DENIED for a
  // certificate that is not trusted, expired or revoked.
  absl::StatusOr<Signatory> Verify(absl::string_view digest,
                                   const v1::Signature& signature,
                                   absl::string_view field,
                                   std::optional<absl::Time> also_valid_at,
                                   absl::Time now = absl::Now()) const;

  absl::Duration max_clock_skew() const;

 private:
  struct State;
  explicit SignatureVerifier(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// A document's signature checked against its sender: Verify, then the
// signatory must be the organization `doc.sender()`. PERMISSION_DENIED
// naming both when another organization signed.
absl::StatusOr<Signatory> VerifyDocumentSignature(
    const SignatureVerifier& verifier, const v1::Document& doc,
    std::optional<absl::Time> also_valid_at, absl::Time now = absl::Now());
// The same with the document's DocumentDigest already computed, errors
// naming `field` ("document", "transfer.document").
absl::StatusOr<Signatory> VerifyDocumentSignature(
    const SignatureVerifier& verifier, const v1::Document& doc,
    absl::string_view digest, absl::string_view field,
    std::optional<absl::Time> also_valid_at, absl::Time now);

// A receipt's signature: Verify, then the signatory must be the broker the
// receipt names.
absl::StatusOr<Signatory> VerifyReceipt(const SignatureVerifier& verifier,
                                        const v1::CustodyReceipt& receipt,
                                        absl::Time now = absl::Now());

// An approval's signature over ApprovalDigest of document `document_id`
// whose DocumentDigest (hex) the caller computed, `manifest_sha256` (never
// taken from the approval itself): Verify (the certificate valid when
// signed and, when set, at `also_valid_at`), then the signatory must be the
// person `approval.approver()` (PERMISSION_DENIED naming both otherwise),
// and the approval's role and org must be among those signed
// (`approval.as`; PERMISSION_DENIED otherwise). INVALID_ARGUMENT naming
// `field` when there is no signature or no `as`.
absl::StatusOr<Signatory> VerifyApproval(
    const SignatureVerifier& verifier, absl::string_view document_id,
    absl::string_view manifest_sha256, const v1::Approval& approval,
    absl::string_view field, std::optional<absl::Time> also_valid_at,
    absl::Time now = absl::Now());

// ---- Evidence ---------------------------------------------------------------

struct EvidenceReport {
  v1::Evidence evidence;              // as parsed
  std::vector<std::string> checked;   // what verified, one line each
  std::vector<std::string> problems;  // what did not, one line each
  bool ok() const { return problems.empty(); }
};

// Checks an evidence export entirely offline: the broker's signature over
// the evidence, the sender's signature over the manifest, the custody
// receipt and that it matches the manifest, the status history and each
// audit entry's chain hash. INVALID_ARGUMENT only when the export cannot be
// read at all; everything else is a problem in the report.
absl::StatusOr<EvidenceReport> VerifyEvidence(
    const SignatureVerifier& verifier, const v1::EvidenceExport& exported,
    absl::Time now = absl::Now());

}  // namespace lienthong::signing

#endif  // LIENTHONG_SIGNING_SIGNING_H_
