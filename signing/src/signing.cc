#include "lienthong/signing/signing.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <ctime>
#include <initializer_list>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "lienthong/audit/chain.h"
#include "lienthong/common/certificate.h"
#include "lienthong/common/openssl.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::signing {
namespace {

using openssl::Bio;
using openssl::MdCtx;
using openssl::MemBio;
using openssl::Pkey;
using openssl::Store;
using openssl::StoreCtx;
using openssl::X509Ptr;
using sealing::Sha256Md;

constexpr size_t kMaxCacheEntries = 8192;
constexpr size_t kMaxAuditPath = 64;

// A streaming canonical encoder: each field as <length> ":" <bytes> "\n",
// hashed as it goes so that large ciphertexts are never copied.
class Canon {
 public:
  explicit Canon(absl::string_view header) : ctx_(EVP_MD_CTX_new()) {
    EVP_DigestInit_ex2(ctx_.get(), Sha256Md(), nullptr);
    Raw(header);
  }
  void Field(absl::string_view v) {
    Raw(absl::StrCat(v.size(), ":"));
    Raw(v);
    Raw("\n");
  }
  void Number(uint64_t n) { Field(absl::StrCat(n)); }
  void Time(const google::protobuf::Timestamp& t) {
    Field(absl::StrFormat("%d.%09d", t.seconds(), t.nanos()));
  }
  std::string Finish() {
    std::string out(SHA256_DIGEST_LENGTH, '\0');
    EVP_DigestFinal_ex(ctx_.get(), reinterpret_cast<unsigned char*>(out.data()),
                       nullptr);
    return out;
  }

 private:
  void Raw(absl::string_view v) {
    EVP_DigestUpdate(ctx_.get(), v.data(), v.size());
  }
  MdCtx ctx_;
};

std::string SealedSha256(const v1::Sealed& s) {
  Canon c("lienthong sealed v1\n");
  c.Field(s.scheme());
  c.Field(s.nonce());
  c.Field(s.ciphertext());
  c.Number(s.keys_size());
  for (const v1::WrappedKey& k : s.keys()) {
    c.Field(k.org());
    c.Field(k.certificate_sha256());
    c.Field(k.ephemeral_public_key());
    c.Field(k.nonce());
    c.Field(k.wrapped_key());
  }
  return sealing::HexOf(c.Finish());
}

// SHA-256 over the concatenation of `parts`, with this thread's context:
// allocating a context per hash costs more than hashing 100 bytes.
std::string HashParts(std::initializer_list<absl::string_view> parts) {
  thread_local MdCtx ctx(EVP_MD_CTX_new());
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  EVP_DigestInit_ex2(ctx.get(), Sha256Md(), nullptr);
  for (absl::string_view p : parts)
    EVP_DigestUpdate(ctx.get(), p.data(), p.size());
  EVP_DigestFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()),
                     nullptr);
  return out;
}

std::string NodeHash(absl::string_view left, absl::string_view right) {
  return HashParts({absl::string_view("\x01", 1), left, right});
}

std::string LeafHash(absl::string_view digest) {
  return HashParts({absl::string_view("\0", 1), digest});
}

// The largest power of two smaller than n (n >= 2).
size_t SplitPoint(size_t n) {
  size_t k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

// The root of digests[lo, hi); appends each leaf's siblings to its path.
std::string BuildTree(const std::vector<std::string>& digests, size_t lo,
                      size_t hi, std::vector<std::vector<std::string>>* paths) {
  if (hi - lo == 1) return LeafHash(digests[lo]);
  size_t k = SplitPoint(hi - lo);
  std::string left = BuildTree(digests, lo, lo + k, paths);
  std::string right = BuildTree(digests, lo + k, hi, paths);
  if (paths) {
    for (size_t i = lo; i < lo + k; ++i) (*paths)[i].push_back(right);
    for (size_t i = lo + k; i < hi; ++i) (*paths)[i].push_back(left);
  }
  return NodeHash(left, right);
}

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp out;
  const int64_t nanos = absl::ToUnixNanos(t);
  out.set_seconds(nanos / 1000000000);
  out.set_nanos(static_cast<int32_t>(nanos % 1000000000));
  if (out.nanos() < 0) {
    out.set_seconds(out.seconds() - 1);
    out.set_nanos(out.nanos() + 1000000000);
  }
  return out;
}

absl::Time Asn1Time(const ASN1_TIME* t) {
  struct tm tm = {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromUnixSeconds(timegm(&tm));
}

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

absl::StatusOr<std::string> EcdsaSign(EVP_PKEY* key, absl::string_view text) {
  MdCtx ctx(EVP_MD_CTX_new());
  size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(text.data());
  if (!ctx ||
      EVP_DigestSignInit(ctx.get(), nullptr, Sha256Md(), nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, in, text.size()) != 1) {
    return absl::InternalError(absl::StrCat("signing: ", openssl::Reason()));
  }
  std::string signature(len, '\0');
  if (EVP_DigestSign(ctx.get(),
                     reinterpret_cast<unsigned char*>(signature.data()), &len,
                     in, text.size()) != 1) {
    return absl::InternalError(absl::StrCat("signing: ", openssl::Reason()));
  }
  signature.resize(len);
  return signature;
}

// The identity a signing certificate names, or INVALID_ARGUMENT.
absl::StatusOr<Principal> CertificatePrincipal(X509* cert,
                                               absl::string_view what) {
  std::vector<std::string> uris = CertificateUris(cert);
  if (uris.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the certificate has ", uris.size(),
                     " URI SANs; a signing certificate has exactly one "
                     "SPIFFE id"));
  }
  absl::StatusOr<Principal> p = ParseSpiffeId(uris[0]);
  if (!p.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", p.status().message()));
  }
  return p;
}

}  // namespace

// ---- What is signed ---------------------------------------------------------

std::string Sha256(absl::string_view bytes) { return HashParts({bytes}); }

v1::DocumentManifest ManifestOf(const v1::Document& doc) {
  v1::DocumentManifest m;
  m.set_idempotency_key(doc.idempotency_key());
  m.set_sender(doc.sender());
  *m.mutable_recipients() = doc.recipients();
  *m.mutable_metadata() = doc.metadata();
  if (doc.has_sealed()) {
    m.set_sealed_sha256(SealedSha256(doc.sealed()));
    // The bare references to its stored ciphertexts, so that brokers too
    // can tell they are the sender's.
    for (const v1::Attachment& a : doc.attachments()) {
      v1::AttachmentDigest* d = m.add_attachments();
      d->set_sha256(a.sha256());
      d->set_size(a.size());
    }
    return m;
  }
  m.set_body_sha256(sealing::HexOf(Sha256(doc.body())));
  m.set_body_content_type(doc.body_content_type());
  for (const v1::Attachment& a : doc.attachments()) {
    v1::AttachmentDigest* d = m.add_attachments();
    d->set_name(a.name());
    d->set_content_type(a.content_type());
    if (a.stored()) {
      // Uploaded apart: covered by the hash it is stored and checked under.
      d->set_sha256(a.sha256());
      d->set_size(a.size());
    } else {
      d->set_sha256(sealing::HexOf(Sha256(a.content())));
      d->set_size(a.content().size());
    }
  }
  return m;
}

std::string ManifestDigest(const v1::DocumentManifest& m) {
  Canon c("lienthong document v1\n");
  c.Field(m.idempotency_key());
  c.Field(m.sender());
  c.Number(m.recipients_size());
  for (const std::string& r : m.recipients()) c.Field(r);
  const v1::DocumentMetadata& md = m.metadata();
  c.Field(md.number());
  c.Field(md.notation());
  c.Field(md.document_type());
  c.Field(md.subject());
  c.Field(md.signer());
  c.Field(md.signer_title());
  c.Field(md.issue_date());
  c.Field(md.place());
  c.Number(md.urgency());
  c.Number(md.classification());
  c.Number(md.business_type());
  c.Field(md.refers_to());
  c.Number(md.origin());
  c.Number(md.decision_category());
  c.Field(m.body_sha256());
  c.Field(m.body_content_type());
  c.Number(m.attachments_size());
  for (const v1::AttachmentDigest& a : m.attachments()) {
    c.Field(a.name());
    c.Field(a.content_type());
    c.Field(a.sha256());
    c.Number(a.size());
  }
  c.Field(m.sealed_sha256());
  // A re-digitized document's mark (incidents.proto), only when set: the
  // digests of every other document stay what they were.
  if (md.has_redigitized()) {
    c.Field("redigitized");
    c.Field(md.redigitized().register_entry_id());
    c.Field(md.redigitized().incident_id());
    c.Field(md.redigitized().paper_date());
  }
  return c.Finish();
}

std::string DocumentDigest(const v1::Document& doc) {
  return ManifestDigest(ManifestOf(doc));
}

std::string ReceiptDigest(const v1::CustodyReceipt& r) {
  Canon c("lienthong receipt v1\n");
  c.Field(r.document_id());
  c.Field(r.document_sha256());
  c.Field(r.content_sha256());
  c.Field(r.sender());
  c.Number(r.recipients_size());
  for (const std::string& x : r.recipients()) c.Field(x);
  c.Field(r.idempotency_key());
  c.Time(r.accepted_at());
  c.Field(r.broker());
  c.Field(r.sender_signature_sha256());
  return c.Finish();
}

std::string ApprovalDigest(
    absl::string_view document_id, absl::string_view manifest_sha256,
    absl::string_view content_sha256, v1::ApprovalDecision decision,
    absl::string_view comment,
    const google::protobuf::RepeatedPtrField<v1::Approver>& as) {
  Canon c("lienthong approval v2\n");
  c.Field(document_id);
  c.Field(absl::AsciiStrToLower(manifest_sha256));
  c.Field(absl::AsciiStrToLower(content_sha256));
  c.Number(decision);
  c.Field(comment);
  std::vector<std::pair<std::string, std::string>> roles;
  for (const v1::Approver& a : as) roles.emplace_back(a.org(), a.role());
  std::sort(roles.begin(), roles.end());
  c.Number(roles.size());
  for (const auto& [org, role] : roles) {
    c.Field(org);
    c.Field(role);
  }
  return c.Finish();
}

// ---- Merkle trees -----------------------------------------------------------

std::string MerkleRoot(const std::vector<std::string>& digests) {
  if (digests.empty()) return Sha256("");
  return BuildTree(digests, 0, digests.size(), nullptr);
}

std::vector<std::string> MerkleAuditPath(
    const std::vector<std::string>& digests, size_t index) {
  if (index >= digests.size()) return {};
  std::vector<std::vector<std::string>> paths(digests.size());
  BuildTree(digests, 0, digests.size(), &paths);
  return std::move(paths[index]);
}

absl::StatusOr<std::string> RootFromAuditPath(
    absl::string_view digest, uint64_t index, uint64_t size,
    const std::vector<std::string>& path) {
  if (size == 0 || index >= size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "leaf_index ", index, " is outside a tree of size ", size));
  }
  // RFC 9162, 2.1.3.2.
  uint64_t fn = index;
  uint64_t sn = size - 1;
  std::string r = LeafHash(digest);
  for (const std::string& p : path) {
    if (p.size() != kDigestBytes) {
      return absl::InvalidArgumentError("audit_path: a hash is not 32 bytes");
    }
    if (sn == 0) {
      return absl::InvalidArgumentError(
          "audit_path: longer than the tree is deep");
    }
    if ((fn & 1) || fn == sn) {
      r = NodeHash(p, r);
      if (!(fn & 1)) {
        while (fn != 0 && !(fn & 1)) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = NodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0) {
    return absl::InvalidArgumentError(
        "audit_path: shorter than the tree is deep");
  }
  return r;
}

std::string SignedText(uint64_t tree_size, absl::string_view root,
                       absl::Time signed_at) {
  google::protobuf::Timestamp t = ToProto(signed_at);
  return absl::StrFormat(
      "lienthong signature v1\nsize %d\nroot %s\ntime %d.%09d\n", tree_size,
      sealing::HexOf(root), t.seconds(), t.nanos());
}

// ---- Signing ----------------------------------------------------------------

struct Signer::Key {
  Pkey pkey;
};

Signer::Signer(Principal principal, std::string certificate_der,
               std::unique_ptr<Key> key)
    : principal_(std::move(principal)),
      certificate_der_(std::move(certificate_der)),
      key_(std::move(key)) {}

Signer::~Signer() = default;

absl::StatusOr<std::unique_ptr<Signer>> Signer::FromPem(
    absl::string_view certificate_pem, absl::string_view key_pem) {
  Bio cert_bio = MemBio(certificate_pem);
  X509Ptr cert(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!cert) {
    return absl::InvalidArgumentError(
        "signing certificate: not a PEM certificate");
  }
  ASSIGN_OR_RETURN(Principal principal,
                   CertificatePrincipal(cert.get(), "signing certificate"));
  Bio key_bio = MemBio(key_pem);
  auto key = std::make_unique<Key>();
  key->pkey.reset(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key->pkey) {
    return absl::InvalidArgumentError("signing key: not a PEM private key");
  }
  if (!IsEcP256(key->pkey.get())) {
    return absl::InvalidArgumentError("signing key: not an EC P-256 key");
  }
  if (X509_check_private_key(cert.get(), key->pkey.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "signing key: not the key of the signing certificate");
  }
  unsigned char* der = nullptr;
  int len = i2d_X509(cert.get(), &der);
  if (len <= 0) {
    return absl::InternalError(
        absl::StrCat("signing certificate: ", openssl::Reason()));
  }
  std::string der_bytes(reinterpret_cast<char*>(der), len);
  OPENSSL_free(der);
  return std::unique_ptr<Signer>(
      new Signer(std::move(principal), std::move(der_bytes), std::move(key)));
}

absl::StatusOr<std::unique_ptr<Signer>> Signer::FromFiles(
    const std::string& certificate_file, const std::string& key_file) {
  ASSIGN_OR_RETURN(std::string cert, ReadPemFile(certificate_file));
  ASSIGN_OR_RETURN(std::string key, ReadPemFile(key_file));
  absl::StatusOr<std::unique_ptr<Signer>> signer = FromPem(cert, key);
  if (!signer.ok()) {
    return absl::Status(signer.status().code(),
                        absl::StrCat(signer.status().message(), " (",
                                     certificate_file, ", ", key_file, ")"));
  }
  return signer;
}

absl::StatusOr<std::vector<v1::Signature>> Signer::SignBatch(
    const std::vector<std::string>& digests, absl::Time now) const {
  if (digests.empty()) {
    return absl::InvalidArgumentError("signing: an empty batch");
  }
  for (const std::string& d : digests) {
    if (d.size() != kDigestBytes) {
      return absl::InvalidArgumentError("signing: a digest is not 32 bytes");
    }
  }
  std::vector<std::vector<std::string>> paths(digests.size());
  const std::string root = BuildTree(digests, 0, digests.size(), &paths);
  const google::protobuf::Timestamp at = ToProto(now);
  const absl::Time signed_at = FromProto(at);
  ASSIGN_OR_RETURN(
      std::string signature,
      EcdsaSign(key_->pkey.get(), SignedText(digests.size(), root, signed_at)));
  std::vector<v1::Signature> out(digests.size());
  for (size_t i = 0; i < digests.size(); ++i) {
    v1::Signature& s = out[i];
    s.set_scheme(std::string(kScheme));
    s.set_certificate(certificate_der_);
    *s.mutable_signed_at() = at;
    s.set_leaf_index(i);
    s.set_tree_size(digests.size());
    for (std::string& p : paths[i]) s.add_audit_path(std::move(p));
    s.set_signature(signature);
  }
  return out;
}

absl::StatusOr<v1::Signature> Signer::Sign(absl::string_view digest,
                                           absl::Time now) const {
  ASSIGN_OR_RETURN(std::vector<v1::Signature> one,
                   SignBatch({std::string(digest)}, now));
  return std::move(one[0]);
}

// ---- Verifying --------------------------------------------------------------

namespace {

struct CertEntry {
  Principal principal;
  std::string sha256_hex;
  std::shared_ptr<EVP_PKEY> key;
  absl::Time not_before;  // latest of the chain's
  absl::Time not_after;   // earliest of the chain's
  absl::Time checked;
};

}  // namespace

// Batch signatures that verified, shared by every verifier of the process
// (an application with clients for several organizations, a broker's
// links): signature bytes -> SHA-256(signed text || certificate digest).
// What a hit vouches for is the ECDSA check alone; each verifier still
// checks the certificate against its own trust root.
struct VerifiedSignatures {
  absl::Mutex mu;
  absl::flat_hash_map<std::string, std::string> map ABSL_GUARDED_BY(mu);
};
VerifiedSignatures& Verified() {
  static VerifiedSignatures* const v = new VerifiedSignatures;
  return *v;
}

struct SignatureVerifier::State {
  VerifierOptions options;
  mutable absl::Mutex mu;
  // Certificate DER -> what verifying it found.
  mutable absl::flat_hash_map<std::string, std::shared_ptr<const CertEntry>>
      certs ABSL_GUARDED_BY(mu);

  absl::StatusOr<std::shared_ptr<const CertEntry>> Certificate(
      absl::string_view der, absl::string_view field, absl::Time now) const;
};

SignatureVerifier::SignatureVerifier(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

absl::Duration SignatureVerifier::max_clock_skew() const {
  return state_->options.max_clock_skew;
}
SignatureVerifier::~SignatureVerifier() = default;

absl::StatusOr<std::unique_ptr<SignatureVerifier>> SignatureVerifier::Create(
    VerifierOptions options) {
  if (options.trust_domain.empty()) {
    return absl::InvalidArgumentError("signature verifier: no trust domain");
  }
  int roots = 0;
  openssl::TrustStore(options.trust_root_pem, &roots);
  if (roots == 0) {
    return absl::InvalidArgumentError(
        "signature verifier: the trust root holds no PEM certificate");
  }
  auto state = std::make_unique<State>();
  state->options = std::move(options);
  return std::unique_ptr<SignatureVerifier>(
      new SignatureVerifier(std::move(state)));
}

absl::StatusOr<std::shared_ptr<const CertEntry>>
SignatureVerifier::State::Certificate(absl::string_view der,
                                      absl::string_view field,
                                      absl::Time now) const {
  // Keyed by the DER itself: hashing it with SHA-256 for every document
  // would cost more than the lookup.
  {
    absl::ReaderMutexLock lock(&mu);
    auto it = certs.find(der);
    if (it != certs.end() && now - it->second->checked < options.cache_ttl)
      return it->second;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  ERR_clear_error();
  if (!cert) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".certificate: not a DER certificate"));
  }
  ASSIGN_OR_RETURN(
      Principal principal,
      CertificatePrincipal(cert.get(), absl::StrCat(field, ".certificate")));
  if (principal.trust_domain != options.trust_domain) {
    return absl::PermissionDeniedError(
        absl::StrCat(field, ".certificate: ", principal.spiffe_id,
                     " is not in the trust domain ", options.trust_domain));
  }
  EVP_PKEY* pkey = X509_get0_pubkey(cert.get());
  if (pkey == nullptr || !IsEcP256(pkey)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".certificate: the key of ", principal.spiffe_id,
                     " is not EC P-256"));
  }
  if ((X509_get_extension_flags(cert.get()) & EXFLAG_KUSAGE) &&
      !(X509_get_key_usage(cert.get()) & KU_DIGITAL_SIGNATURE)) {
    return absl::PermissionDeniedError(
        absl::StrCat(field, ".certificate: the certificate of ",
                     principal.spiffe_id, " does not allow digitalSignature"));
  }

  int roots = 0;
  Store store = openssl::TrustStore(options.trust_root_pem, &roots);
  unsigned long flags = X509_V_FLAG_NO_CHECK_TIME;
  if (!options.crl_directory.empty()) {
    X509_LOOKUP* lookup =
        X509_STORE_add_lookup(store.get(), X509_LOOKUP_hash_dir());
    if (lookup == nullptr ||
        X509_LOOKUP_add_dir(lookup, options.crl_directory.c_str(),
                            X509_FILETYPE_PEM) != 1) {
      return absl::InternalError(
          absl::StrCat("signature verifier: CRL directory ",
                       options.crl_directory, ": ", openssl::Reason()));
    }
    flags |= X509_V_FLAG_CRL_CHECK;
  }
  X509_STORE_set_flags(store.get(), flags);
  StoreCtx ctx(X509_STORE_CTX_new());
  if (!ctx ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1) {
    return absl::InternalError(
        absl::StrCat("signature verifier: ", openssl::Reason()));
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    // Revocation that cannot be checked here and now (no current CRL of
    // the issuer in the directory, say while an operator replaces it) is
    // not the certificate's fault: UNAVAILABLE, to be tried again later.
    if (err == X509_V_ERR_UNABLE_TO_GET_CRL ||
        err == X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER ||
        err == X509_V_ERR_CRL_HAS_EXPIRED ||
        err == X509_V_ERR_CRL_NOT_YET_VALID ||
        err == X509_V_ERR_CRL_SIGNATURE_FAILURE ||
        err == X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE) {
      return absl::UnavailableError(absl::StrCat(
          field, ".certificate: the revocation of the certificate of ",
          principal.spiffe_id,
          " cannot be checked: ", X509_verify_cert_error_string(err),
          " (the CRL directory needs a current CRL of its issuer)"));
    }
    return absl::PermissionDeniedError(absl::StrCat(
        field, ".certificate: the certificate of ", principal.spiffe_id,
        " is not trusted: ", X509_verify_cert_error_string(err)));
  }
  auto entry = std::make_shared<CertEntry>();
  entry->principal = std::move(principal);
  entry->sha256_hex = sealing::HexOf(Sha256(der));
  EVP_PKEY_up_ref(pkey);
  entry->key = std::shared_ptr<EVP_PKEY>(pkey, EVP_PKEY_free);
  entry->not_before = absl::InfinitePast();
  entry->not_after = absl::InfiniteFuture();
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx.get());
  for (int i = 0; i < sk_X509_num(chain); ++i) {
    X509* c = sk_X509_value(chain, i);
    entry->not_before =
        std::max(entry->not_before, Asn1Time(X509_get0_notBefore(c)));
    entry->not_after =
        std::min(entry->not_after, Asn1Time(X509_get0_notAfter(c)));
  }
  entry->checked = now;
  absl::MutexLock lock(&mu);
  if (certs.size() >= kMaxCacheEntries) certs.clear();
  certs[std::string(der)] = entry;
  return std::shared_ptr<const CertEntry>(std::move(entry));
}

absl::StatusOr<Signatory> SignatureVerifier::Verify(
    absl::string_view digest, const v1::Signature& s, absl::string_view field,
    std::optional<absl::Time> also_valid_at, absl::Time now) const {
  const State& st = *state_;
  if (s.scheme() != kScheme) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".scheme: \"", s.scheme(),
        "\" is not a signature scheme this party knows (", kScheme, ")"));
  }
  if (digest.size() != kDigestBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": a digest is not 32 bytes"));
  }
  if (!s.has_signed_at() || s.signed_at().nanos() < 0 ||
      s.signed_at().nanos() > 999999999) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".signed_at: missing or malformed"));
  }
  const absl::Time signed_at = FromProto(s.signed_at());
  if (signed_at > now + st.options.max_clock_skew) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".signed_at: ", Rfc3339(signed_at), " is in the future"));
  }
  if (s.audit_path_size() > static_cast<int>(kMaxAuditPath)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".audit_path: too long"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const CertEntry> cert,
                   st.Certificate(s.certificate(), field, now));
  for (const std::optional<absl::Time>& at :
       {std::optional<absl::Time>(signed_at), also_valid_at}) {
    if (!at.has_value()) continue;
    if (*at < cert->not_before || *at > cert->not_after) {
      return absl::PermissionDeniedError(absl::StrCat(
          field, ".certificate: the certificate of ", cert->principal.spiffe_id,
          " (or its CA) is not valid at ", Rfc3339(*at), "; it is valid from ",
          Rfc3339(cert->not_before), " to ", Rfc3339(cert->not_after)));
    }
  }
  std::vector<std::string> path(s.audit_path().begin(), s.audit_path().end());
  absl::StatusOr<std::string> root =
      RootFromAuditPath(digest, s.leaf_index(), s.tree_size(), path);
  if (!root.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", root.status().message()));
  }
  const std::string text = SignedText(s.tree_size(), *root, signed_at);
  const std::string check = HashParts({text, cert->sha256_hex});
  VerifiedSignatures& verified = Verified();
  bool known = false;
  {
    absl::ReaderMutexLock lock(&verified.mu);
    auto it = verified.map.find(s.signature());
    known = it != verified.map.end() && it->second == check;
  }
  if (!known) {
    MdCtx ctx(EVP_MD_CTX_new());
    if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, Sha256Md(), nullptr,
                                     cert->key.get()) != 1) {
      return absl::InternalError(
          absl::StrCat("signature verifier: ", openssl::Reason()));
    }
    if (EVP_DigestVerify(
            ctx.get(),
            reinterpret_cast<const unsigned char*>(s.signature().data()),
            s.signature().size(),
            reinterpret_cast<const unsigned char*>(text.data()),
            text.size()) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": does not verify with the certificate of ",
          cert->principal.spiffe_id,
          ": what it covers was altered after signing, or it was made with "
          "another key"));
    }
    absl::MutexLock lock(&verified.mu);
    if (verified.map.size() >= kMaxCacheEntries) verified.map.clear();
    verified.map[s.signature()] = check;
  }
  return Signatory{cert->principal, cert->sha256_hex, signed_at};
}

absl::StatusOr<Signatory> VerifyDocumentSignature(
    const SignatureVerifier& verifier, const v1::Document& doc,
    absl::string_view digest, absl::string_view field,
    std::optional<absl::Time> also_valid_at, absl::Time now) {
  if (!doc.has_signature()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".signature: missing"));
  }
  ASSIGN_OR_RETURN(
      Signatory who,
      verifier.Verify(digest, doc.signature(),
                      absl::StrCat(field, ".signature"), also_valid_at, now));
  if (!who.principal.is_org() || who.principal.name != doc.sender()) {
    return absl::PermissionDeniedError(
        absl::StrCat(field, ".signature: signed by ", who.principal.spiffe_id,
                     ", not by the sender ", doc.sender(),
                     "; an organization signs only its own documents"));
  }
  return who;
}

absl::StatusOr<Signatory> VerifyDocumentSignature(
    const SignatureVerifier& verifier, const v1::Document& doc,
    std::optional<absl::Time> also_valid_at, absl::Time now) {
  return VerifyDocumentSignature(verifier, doc, DocumentDigest(doc), "document",
                                 also_valid_at, now);
}

absl::StatusOr<Signatory> VerifyReceipt(const SignatureVerifier& verifier,
                                        const v1::CustodyReceipt& receipt,
                                        absl::Time now) {
  if (!receipt.has_signature()) {
    return absl::InvalidArgumentError("receipt.signature: missing");
  }
  ASSIGN_OR_RETURN(Signatory who,
                   verifier.Verify(ReceiptDigest(receipt), receipt.signature(),
                                   "receipt.signature", std::nullopt, now));
  if (who.principal.kind != Principal::Kind::kBroker ||
      who.principal.spiffe_id != receipt.broker()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "receipt.signature: signed by ", who.principal.spiffe_id,
        ", not by the broker the receipt names (", receipt.broker(), ")"));
  }
  return who;
}

absl::StatusOr<Signatory> VerifyApproval(
    const SignatureVerifier& verifier, absl::string_view document_id,
    absl::string_view manifest_sha256, const v1::Approval& approval,
    absl::string_view field, std::optional<absl::Time> also_valid_at,
    absl::Time now) {
  if (!approval.has_signature()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field,
                     ": missing: the approver signs its decision (document id, "
                     "content hash, decision, comment) with its person "
                     "certificate's key"));
  }
  if (approval.as().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": the approval names no role it was given as (as)"));
  }
  ASSIGN_OR_RETURN(
      Signatory who,
      verifier.Verify(
          ApprovalDigest(document_id, manifest_sha256,
                         approval.content_sha256(), approval.decision(),
                         approval.comment(), approval.as()),
          approval.signature(), field, also_valid_at, now));
  if (who.principal.kind != Principal::Kind::kPerson ||
      who.principal.spiffe_id != approval.approver()) {
    return absl::PermissionDeniedError(absl::StrCat(
        field, ": signed by ", who.principal.spiffe_id,
        ", not by the approver who decided (", approval.approver(), ")"));
  }
  const bool signed_for_role = std::any_of(
      approval.as().begin(), approval.as().end(), [&](const v1::Approver& a) {
        return a.role() == approval.role() && a.org() == approval.org();
      });
  if (!signed_for_role) {
    std::vector<std::string> signed_as;
    for (const v1::Approver& a : approval.as())
      signed_as.push_back(absl::StrCat(a.role(), "@", a.org()));
    return absl::PermissionDeniedError(absl::StrCat(
        field, ": counted as ", approval.role(), "@", approval.org(),
        ", which ", approval.approver(), " did not sign it as (signed as ",
        absl::StrJoin(signed_as, ", "), ")"));
  }
  return who;
}

// ---- Evidence ---------------------------------------------------------------

absl::StatusOr<EvidenceReport> VerifyEvidence(
    const SignatureVerifier& verifier, const v1::EvidenceExport& exported,
    absl::Time now) {
  EvidenceReport report;
  if (exported.evidence().empty() ||
      !report.evidence.ParseFromString(exported.evidence())) {
    return absl::InvalidArgumentError(
        "evidence: empty or not a serialized Evidence");
  }
  const v1::Evidence& e = report.evidence;
  auto ok = [&](std::string line) {
    report.checked.push_back(std::move(line));
  };
  auto bad = [&](std::string line) {
    report.problems.push_back(std::move(line));
  };

  // The broker's statement as a whole.
  absl::StatusOr<Signatory> broker =
      verifier.Verify(Sha256(exported.evidence()), exported.signature(),
                      "evidence.signature", std::nullopt, now);
  if (!broker.ok()) {
    bad(std::string(broker.status().message()));
  } else if (broker->principal.kind != Principal::Kind::kBroker ||
             broker->principal.spiffe_id != e.broker()) {
    bad(absl::StrCat(
        "evidence.signature: signed by ", broker->principal.spiffe_id,
        ", not by the broker the evidence names (", e.broker(), ")"));
  } else {
    ok(absl::StrCat("evidence signed by ", e.broker(), " at ",
                    Rfc3339(broker->signed_at)));
  }

  // The sender's signature over the manifest.
  const std::string digest = ManifestDigest(e.manifest());
  if (!e.has_sender_signature()) {
    bad("sender_signature: the document was accepted unsigned");
  } else {
    absl::StatusOr<Signatory> sender = verifier.Verify(
        digest, e.sender_signature(), "sender_signature", std::nullopt, now);
    if (!sender.ok()) {
      bad(std::string(sender.status().message()));
    } else if (!sender->principal.is_org() ||
               sender->principal.name != e.manifest().sender()) {
      bad(absl::StrCat("sender_signature: signed by ",
                       sender->principal.spiffe_id, ", not by the sender ",
                       e.manifest().sender()));
    } else {
      ok(absl::StrCat("document ", sealing::HexOf(digest), " signed by ",
                      e.manifest().sender(), " at ",
                      Rfc3339(sender->signed_at)));
    }
  }

  // The custody receipt, and that it is about this document.
  const v1::CustodyReceipt& r = e.receipt();
  absl::StatusOr<Signatory> custody = VerifyReceipt(verifier, r, now);
  if (!custody.ok()) {
    bad(std::string(custody.status().message()));
  } else {
    std::vector<std::string> mismatches;
    if (r.document_id() != e.document_id()) mismatches.push_back("document_id");
    if (r.document_sha256() != sealing::HexOf(digest))
      mismatches.push_back("document_sha256");
    if (r.content_sha256() != e.content_sha256())
      mismatches.push_back("content_sha256");
    if (r.sender() != e.manifest().sender()) mismatches.push_back("sender");
    if (!std::equal(r.recipients().begin(), r.recipients().end(),
                    e.manifest().recipients().begin(),
                    e.manifest().recipients().end()))
      mismatches.push_back("recipients");
    if (r.idempotency_key() != e.manifest().idempotency_key())
      mismatches.push_back("idempotency_key");
    // Brokers' clocks differ a little; custody long before the first
    // broker accepted the document is a lie.
    if (FromProto(r.accepted_at()) <
        FromProto(e.accepted_at()) - verifier.max_clock_skew())
      mismatches.push_back("accepted_at (before the first broker's)");
    const std::string sig_sha =
        e.has_sender_signature()
            ? sealing::HexOf(Sha256(e.sender_signature().signature()))
            : "";
    if (r.sender_signature_sha256() != sig_sha)
      mismatches.push_back("sender_signature_sha256");
    if (mismatches.empty()) {
      ok(absl::StrCat("custody receipt by ", r.broker(), ": document ",
                      e.document_id(), " in its custody since ",
                      Rfc3339(FromProto(r.accepted_at()))));
    } else {
      bad(absl::StrCat("receipt: does not match the evidence in ",
                       absl::StrJoin(mismatches, ", ")));
    }
  }

  // The status history (approvals in it are of the manifest above).
  uint64_t last_sequence = 0;
  const std::string manifest_sha256 =
      sealing::HexOf(ManifestDigest(e.manifest()));
  for (int i = 0; i < e.history_size(); ++i) {
    const v1::StatusEvent& ev = e.history(i);
    if (ev.document_id() != e.document_id()) {
      bad(absl::StrCat("history[", i, "]: is about document ",
                       ev.document_id()));
    }
    if (ev.sequence() != 0 && ev.sequence() <= last_sequence) {
      bad(absl::StrCat("history[", i, "]: out of order"));
    }
    if (ev.sequence() != 0) last_sequence = ev.sequence();
    // An approval carries its approver's own signature: what the person
    // decided, not what the broker says it decided.
    if (ev.has_approval()) {
      const std::string field =
          absl::StrCat("history[", i, "].approval.signature");
      if (ev.approval().content_sha256() != e.content_sha256()) {
        bad(absl::StrCat("history[", i, "].approval: is of content ",
                         ev.approval().content_sha256(),
                         ", not the document's ", e.content_sha256()));
      }
      absl::StatusOr<Signatory> who =
          VerifyApproval(verifier, e.document_id(), manifest_sha256,
                         ev.approval(), field, std::nullopt, now);
      if (who.ok()) {
        ok(absl::StrCat(field, ": ",
                        v1::ApprovalDecision_Name(ev.approval().decision()),
                        " signed by ", who->principal.spiffe_id));
      } else {
        bad(std::string(who.status().message()));
      }
    }
  }
  ok(absl::StrCat(e.history_size(), " status events"));

  // The audit entries: each hash follows from the one before it.
  uint64_t last_index = 0;
  int good = 0;
  for (int i = 0; i < e.audit_entries_size(); ++i) {
    const v1::EvidenceAuditEntry& a = e.audit_entries(i);
    const v1::StoredAuditEntry& s = a.entry();
    const std::string where = absl::StrCat("audit entry ", s.index());
    v1::AuditEntry entry;
    if (s.index() == 0 || s.index() <= last_index ||
        (e.audit_size() != 0 && s.index() > e.audit_size())) {
      bad(absl::StrCat(where, ": index out of order or beyond the head"));
    } else if (a.previous_hash().size() != audit::kHashBytes ||
               audit::AuditChainHash(a.previous_hash(), s.index(), s.entry()) !=
                   s.hash()) {
      bad(absl::StrCat(where,
                       ": its hash does not follow from the entry "
                       "and the hash before it (edited)"));
    } else if (!entry.ParseFromString(s.entry()) ||
               entry.document_id() != e.document_id()) {
      bad(absl::StrCat(where, ": not about document ", e.document_id()));
    } else {
      ++good;
    }
    last_index = s.index();
  }
  ok(absl::StrCat(good, " of ", e.audit_entries_size(),
                  " audit entries chain-hashed correctly (head ",
                  e.audit_size(), " ", sealing::HexOf(e.audit_head()), ")"));
  return report;
}

}  // namespace lienthong::signing
