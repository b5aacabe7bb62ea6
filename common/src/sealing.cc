// The default ContentCipher: ECDH-P256 + HKDF-SHA256 + AES-256-GCM over
// OpenSSL 3's EVP API, and the verification of encryption certificates.
//
// Sealing: a random 256-bit content key encrypts the content (AES-256-GCM,
// random 96-bit nonce, the caller's associated data). For each recipient a
// one-time P-256 key pair is made; ECDH with the recipient's certificate key
// gives a shared secret; HKDF-SHA256 (info: scheme, org, certificate digest,
// both public keys) turns it into a key-wrapping key that encrypts the
// content key (AES-256-GCM, its associated data the scheme, org and
// certificate digest). A one-time key per recipient means no wrapping key is
// ever used twice and nothing links the recipients' wrapped keys.
#include "lienthong/common/sealing.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "lienthong/common/certificate.h"
#include "lienthong/common/identity.h"
#include "lienthong/common/openssl.h"

namespace lienthong::sealing {
namespace {

constexpr size_t kKeyBytes = 32;
constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;
// An uncompressed P-256 point.
constexpr size_t kPointBytes = 65;

using openssl::Bio;
using openssl::Deleter;
using openssl::Pkey;
using openssl::Store;
using openssl::StoreCtx;
using openssl::X509Ptr;
using PkeyCtx =
    std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX,
                                  Deleter<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;
using Kdf = std::unique_ptr<EVP_KDF, Deleter<EVP_KDF, EVP_KDF_free>>;
using KdfCtx =
    std::unique_ptr<EVP_KDF_CTX, Deleter<EVP_KDF_CTX, EVP_KDF_CTX_free>>;

// The crypto library's own reason, for INTERNAL errors.
std::string OpenSslError(absl::string_view what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return absl::StrCat("sealing: ", what, ": ", buf);
}

absl::Status Internal(absl::string_view what) {
  return absl::InternalError(OpenSslError(what));
}

const unsigned char* Bytes(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

// One digest context per thread, with SHA-256 fetched once (Sha256Md).
std::string Sha256(absl::string_view data) {
  thread_local const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>
      ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  std::string out(32, '\0');
  unsigned int len = 0;
  if (!ctx || EVP_DigestInit_ex2(ctx.get(), Sha256Md(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(
          ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len) != 1) {
    // Only an allocation failure inside OpenSSL gets here: a hash that
    // cannot be computed must not be replaced by a wrong one.
    abort();
  }
  return out;
}

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()),
                 static_cast<int>(n)) != 1) {
    // No randomness means no safe key: this is not recoverable.
    abort();
  }
  return out;
}

// Certificate from PEM or DER.
X509Ptr ParseCertificate(absl::string_view bytes) {
  if (absl::StartsWith(bytes, "-----BEGIN")) {
    Bio bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
    return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  }
  const unsigned char* p = Bytes(bytes);
  return X509Ptr(d2i_X509(nullptr, &p, static_cast<long>(bytes.size())));
}

std::string Der(X509* cert) {
  unsigned char* out = nullptr;
  int len = i2d_X509(cert, &out);
  if (len <= 0) return "";
  std::string der(reinterpret_cast<char*>(out), len);
  OPENSSL_free(out);
  return der;
}

absl::Time FromAsn1(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTM(tm, absl::UTCTimeZone());
}

// The single URI SAN, or an error naming what is wrong.
absl::StatusOr<std::string> SingleUri(X509* cert) {
  std::vector<std::string> uris = CertificateUris(cert);
  if (uris.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("encryption certificate: has ", uris.size(),
                     " URI SANs; exactly one spiffe://<td>/org/<code> is "
                     "required"));
  }
  return uris[0];
}

absl::StatusOr<std::string> EncodedPublicKey(EVP_PKEY* key) {
  unsigned char* out = nullptr;
  size_t len = EVP_PKEY_get1_encoded_public_key(key, &out);
  if (len == 0) return Internal("encoding a public key");
  std::string s(reinterpret_cast<char*>(out), len);
  OPENSSL_free(out);
  return s;
}

// ECDH between `own` (private) and `peer` (public).
absl::StatusOr<std::string> Agree(EVP_PKEY* own, EVP_PKEY* peer) {
  PkeyCtx ctx(EVP_PKEY_CTX_new(own, nullptr));
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1) {
    return Internal("starting key agreement");
  }
  // Validates the peer's point (on the curve, not at infinity).
  if (EVP_PKEY_derive_set_peer_ex(ctx.get(), peer, 1) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "sealing: the ephemeral public key is not a valid P-256 point");
  }
  size_t len = 0;
  if (EVP_PKEY_derive(ctx.get(), nullptr, &len) != 1) {
    return Internal("key agreement");
  }
  std::string secret(len, '\0');
  if (EVP_PKEY_derive(ctx.get(),
                      reinterpret_cast<unsigned char*>(secret.data()),
                      &len) != 1) {
    return Internal("key agreement");
  }
  secret.resize(len);
  return secret;
}

absl::StatusOr<std::string> Hkdf(absl::string_view secret,
                                 absl::string_view info) {
  Kdf kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  if (!kdf) return Internal("fetching HKDF");
  KdfCtx ctx(EVP_KDF_CTX_new(kdf.get()));
  if (!ctx) return Internal("HKDF context");
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(
          OSSL_KDF_PARAM_KEY, const_cast<char*>(secret.data()), secret.size()),
      OSSL_PARAM_construct_octet_string(
          OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()), info.size()),
      OSSL_PARAM_construct_end()};
  std::string key(kKeyBytes, '\0');
  if (EVP_KDF_derive(ctx.get(), reinterpret_cast<unsigned char*>(key.data()),
                     key.size(), params) != 1) {
    return Internal("HKDF");
  }
  return key;
}

// AES-256-GCM fetched once: OpenSSL 3 looks an implicitly fetched cipher
// up again (under a lock) on every use.
const EVP_CIPHER* Aes256Gcm() {
  static const EVP_CIPHER* const cipher = [] {
    EVP_CIPHER* fetched = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
    return fetched != nullptr ? fetched : EVP_aes_256_gcm();
  }();
  return cipher;
}

// A cipher context per thread and direction, set up for AES-256-GCM once
// and re-keyed for each message (a fresh context costs more than sealing
// a small document). Null if it cannot be made.
EVP_CIPHER_CTX* GcmContext(bool encrypt) {
  thread_local CipherCtx contexts[2];
  CipherCtx& ctx = contexts[encrypt ? 1 : 0];
  if (!ctx) {
    CipherCtx fresh(EVP_CIPHER_CTX_new());
    if (!fresh || EVP_CipherInit_ex(fresh.get(), Aes256Gcm(), nullptr, nullptr,
                                    nullptr, encrypt ? 1 : 0) != 1) {
      ERR_clear_error();
      return nullptr;
    }
    ctx = std::move(fresh);
  }
  return ctx.get();
}

// Random nonces from a per-thread pool refilled 4 KiB at a time: one
// RAND_bytes call per message costs more than sealing a small one.
std::string RandomNonce() {
  constexpr size_t kPool = 4096;
  thread_local unsigned char pool[kPool];
  thread_local size_t used = kPool;
  if (used + kNonceBytes > kPool) {
    if (RAND_bytes(pool, kPool) != 1) abort();  // as RandomBytes
    used = 0;
  }
  std::string out(reinterpret_cast<const char*>(pool + used), kNonceBytes);
  OPENSSL_cleanse(pool + used, kNonceBytes);
  used += kNonceBytes;
  return out;
}

// AES-256-GCM; returns ciphertext with the tag appended.
absl::StatusOr<std::string> GcmSeal(absl::string_view key,
                                    absl::string_view nonce,
                                    absl::string_view plaintext,
                                    absl::string_view aad) {
  EVP_CIPHER_CTX* ctx = GcmContext(true);
  int len = 0;
  if (ctx == nullptr ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN,
                          static_cast<int>(nonce.size()), nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx, nullptr, nullptr, Bytes(key), Bytes(nonce)) !=
          1 ||
      EVP_EncryptUpdate(ctx, nullptr, &len, Bytes(aad),
                        static_cast<int>(aad.size())) != 1) {
    return Internal("AES-GCM setup");
  }
  std::string out(plaintext.size() + kTagBytes, '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  size_t done = 0;
  // EVP takes int lengths: feed large content in pieces.
  constexpr size_t kPiece = 1 << 30;
  while (done < plaintext.size()) {
    size_t n = std::min(kPiece, plaintext.size() - done);
    if (EVP_EncryptUpdate(ctx, o + done, &len, Bytes(plaintext) + done,
                          static_cast<int>(n)) != 1) {
      return Internal("AES-GCM encrypt");
    }
    done += static_cast<size_t>(len);
  }
  if (EVP_EncryptFinal_ex(ctx, o + done, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagBytes,
                          o + plaintext.size()) != 1) {
    return Internal("AES-GCM finish");
  }
  return out;
}

// DATA_LOSS when the tag does not verify.
absl::StatusOr<std::string> GcmOpen(absl::string_view key,
                                    absl::string_view nonce,
                                    absl::string_view sealed,
                                    absl::string_view aad,
                                    absl::string_view what) {
  if (sealed.size() < kTagBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("sealing: ", what, " is shorter than its tag"));
  }
  const size_t n = sealed.size() - kTagBytes;
  EVP_CIPHER_CTX* ctx = GcmContext(false);
  int len = 0;
  if (ctx == nullptr ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN,
                          static_cast<int>(nonce.size()), nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx, nullptr, nullptr, Bytes(key), Bytes(nonce)) !=
          1 ||
      EVP_DecryptUpdate(ctx, nullptr, &len, Bytes(aad),
                        static_cast<int>(aad.size())) != 1) {
    return Internal("AES-GCM setup");
  }
  std::string out(n, '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  size_t done = 0;
  constexpr size_t kPiece = 1 << 30;
  while (done < n) {
    size_t piece = std::min(kPiece, n - done);
    if (EVP_DecryptUpdate(ctx, o + done, &len, Bytes(sealed) + done,
                          static_cast<int>(piece)) != 1) {
      return Internal("AES-GCM decrypt");
    }
    done += static_cast<size_t>(len);
  }
  std::string tag(sealed.substr(n));
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.data()) !=
      1) {
    return Internal("AES-GCM tag");
  }
  if (EVP_DecryptFinal_ex(ctx, o + done, &len) != 1) {
    ERR_clear_error();
    return absl::DataLossError(absl::StrCat(
        "sealing: ", what,
        " failed authentication: it was altered, or sealed for other "
        "metadata (sender, recipients, classification)"));
  }
  return out;
}

// HKDF info for the key-wrapping key: everything the wrap depends on.
std::string WrapInfo(absl::string_view scheme, absl::string_view org,
                     absl::string_view certificate_sha256,
                     absl::string_view ephemeral, absl::string_view recipient) {
  return absl::StrCat(scheme, std::string(1, '\0'), "key-wrap",
                      std::string(1, '\0'), org, std::string(1, '\0'),
                      certificate_sha256, ephemeral, recipient);
}

std::string WrapAad(absl::string_view scheme, absl::string_view org,
                    absl::string_view certificate_sha256) {
  return absl::StrCat(scheme, std::string(1, '\0'), org, std::string(1, '\0'),
                      certificate_sha256);
}

int NoPassphrase(char*, int, int, void*) { return -1; }

class OpenSslKey final : public DecryptionKey {
 public:
  OpenSslKey(std::string org, std::string sha256, Pkey key)
      : org_(std::move(org)),
        sha256_(std::move(sha256)),
        key_(std::move(key)) {}
  const std::string& org() const override { return org_; }
  const std::string& certificate_sha256() const override { return sha256_; }
  EVP_PKEY* key() const { return key_.get(); }

 private:
  const std::string org_;
  const std::string sha256_;
  const Pkey key_;
};

class DefaultCipher final : public ContentCipher {
 public:
  absl::string_view scheme() const override { return kDefaultScheme; }

  absl::StatusOr<Envelope> Seal(
      absl::string_view content, absl::string_view associated_data,
      const std::vector<EncryptionCertificate>& recipients) const override {
    if (recipients.empty()) {
      return absl::InvalidArgumentError("sealing: no recipient");
    }
    Envelope env;
    env.scheme = std::string(kDefaultScheme);
    const std::string content_key = RandomBytes(kKeyBytes);
    env.nonce = RandomBytes(kNonceBytes);
    absl::StatusOr<std::string> ciphertext =
        GcmSeal(content_key, env.nonce, content, associated_data);
    if (!ciphertext.ok()) return ciphertext.status();
    env.ciphertext = *std::move(ciphertext);
    for (const EncryptionCertificate& r : recipients) {
      X509Ptr cert = ParseCertificate(r.der);
      EVP_PKEY* recipient_key = cert ? X509_get0_pubkey(cert.get()) : nullptr;
      if (!IsEcP256(recipient_key)) {
        return absl::InvalidArgumentError(
            absl::StrCat("sealing: the encryption certificate of ", r.org,
                         " has no EC P-256 key"));
      }
      absl::StatusOr<std::string> recipient_point =
          EncodedPublicKey(recipient_key);
      if (!recipient_point.ok()) return recipient_point.status();
      Pkey ephemeral(EVP_EC_gen("P-256"));
      if (!ephemeral) return Internal("making a one-time key");
      absl::StatusOr<std::string> point = EncodedPublicKey(ephemeral.get());
      if (!point.ok()) return point.status();
      absl::StatusOr<std::string> secret =
          Agree(ephemeral.get(), recipient_key);
      if (!secret.ok()) return secret.status();
      const std::string sha256 = Sha256(r.der);
      absl::StatusOr<std::string> kek = Hkdf(
          *secret,
          WrapInfo(kDefaultScheme, r.org, sha256, *point, *recipient_point));
      if (!kek.ok()) return kek.status();
      WrappedKey& w = env.keys.emplace_back();
      w.org = r.org;
      w.certificate_sha256 = sha256;
      w.ephemeral_public_key = *std::move(point);
      w.nonce = RandomBytes(kNonceBytes);
      absl::StatusOr<std::string> wrapped = GcmSeal(
          *kek, w.nonce, content_key, WrapAad(kDefaultScheme, r.org, sha256));
      if (!wrapped.ok()) return wrapped.status();
      w.wrapped_key = *std::move(wrapped);
    }
    return env;
  }

  absl::StatusOr<std::string> Open(
      const Envelope& env, absl::string_view associated_data,
      absl::string_view org,
      const std::vector<const DecryptionKey*>& keys) const override {
    if (env.scheme != kDefaultScheme) {
      return absl::InvalidArgumentError(
          absl::StrCat("sealing: unknown scheme \"", env.scheme,
                       "\"; this cipher opens ", kDefaultScheme));
    }
    if (env.nonce.size() != kNonceBytes) {
      return absl::InvalidArgumentError("sealing: the nonce is malformed");
    }
    const WrappedKey* mine = nullptr;
    for (const WrappedKey& w : env.keys) {
      if (w.org == org) {
        mine = &w;
        break;
      }
    }
    if (mine == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("sealing: the document holds no key for ", org,
                       ": it was not sealed for this organization"));
    }
    const OpenSslKey* key = nullptr;
    for (const DecryptionKey* k : keys) {
      if (k != nullptr && k->certificate_sha256() == mine->certificate_sha256)
        key = static_cast<const OpenSslKey*>(k);
    }
    if (key == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "sealing: the document was sealed for the encryption certificate "
          "sha256:",
          HexOf(mine->certificate_sha256), " of ", org,
          ", and no key configured here belongs to it (configure that "
          "certificate's key, e.g. as a retired key)"));
    }
    if (mine->ephemeral_public_key.size() != kPointBytes ||
        mine->nonce.size() != kNonceBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("sealing: the wrapped key for ", org, " is malformed"));
    }
    Pkey ephemeral(EVP_PKEY_new());
    if (!ephemeral ||
        EVP_PKEY_copy_parameters(ephemeral.get(), key->key()) != 1)
      return Internal("ephemeral key");
    if (EVP_PKEY_set1_encoded_public_key(
            ephemeral.get(), Bytes(mine->ephemeral_public_key),
            mine->ephemeral_public_key.size()) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          "sealing: the ephemeral public key is not a valid P-256 point");
    }
    absl::StatusOr<std::string> own_point = EncodedPublicKey(key->key());
    if (!own_point.ok()) return own_point.status();
    absl::StatusOr<std::string> secret = Agree(key->key(), ephemeral.get());
    if (!secret.ok()) return secret.status();
    absl::StatusOr<std::string> kek =
        Hkdf(*secret, WrapInfo(kDefaultScheme, org, mine->certificate_sha256,
                               mine->ephemeral_public_key, *own_point));
    if (!kek.ok()) return kek.status();
    absl::StatusOr<std::string> content_key =
        GcmOpen(*kek, mine->nonce, mine->wrapped_key,
                WrapAad(kDefaultScheme, org, mine->certificate_sha256),
                absl::StrCat("the wrapped key for ", org));
    if (!content_key.ok()) return content_key.status();
    if (content_key->size() != kKeyBytes) {
      return absl::DataLossError("sealing: the content key has a wrong size");
    }
    return GcmOpen(*content_key, env.nonce, env.ciphertext, associated_data,
                   "the sealed content");
  }

  absl::StatusOr<std::unique_ptr<DecryptionKey>> LoadKey(
      absl::string_view certificate_pem,
      absl::string_view private_key_pem) const override {
    X509Ptr cert = ParseCertificate(certificate_pem);
    if (!cert) {
      return absl::InvalidArgumentError(
          "encryption certificate: not a PEM or DER certificate");
    }
    absl::StatusOr<std::string> uri = SingleUri(cert.get());
    if (!uri.ok()) return uri.status();
    absl::StatusOr<Principal> who = ParseSpiffeId(*uri);
    if (!who.ok() || who->kind != Principal::Kind::kOrg) {
      return absl::InvalidArgumentError(absl::StrCat(
          "encryption certificate: ", *uri, " is not an organization"));
    }
    Bio bio(BIO_new_mem_buf(private_key_pem.data(),
                            static_cast<int>(private_key_pem.size())));
    Pkey key(
        PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
    if (!key) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          "encryption key: no unencrypted PEM private key");
    }
    if (!IsEcP256(key.get())) {
      return absl::InvalidArgumentError("encryption key: not an EC P-256 key");
    }
    if (EVP_PKEY_eq(key.get(), X509_get0_pubkey(cert.get())) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          "encryption key: does not belong to the encryption certificate");
    }
    return std::unique_ptr<DecryptionKey>(std::make_unique<OpenSslKey>(
        who->name, Sha256(Der(cert.get())), std::move(key)));
  }
};

}  // namespace

std::string HexOf(absl::string_view raw) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(raw.size() * 2, '\0');
  char* p = out.data();
  for (unsigned char c : raw) {
    *p++ = kHex[c >> 4];
    *p++ = kHex[c & 15];
  }
  return out;
}

std::string Sha256Raw(absl::string_view bytes) { return Sha256(bytes); }

std::string Sha256Raw(absl::Span<const absl::string_view> pieces) {
  if (pieces.size() == 1) return Sha256(pieces[0]);
  Sha256Stream hash;
  for (absl::string_view piece : pieces) hash.Update(piece);
  return hash.Finish();
}

const EVP_MD* Sha256Md() {
  static const EVP_MD* const md = [] {
    EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return fetched != nullptr ? fetched : EVP_sha256();
  }();
  return md;
}

Sha256Stream::Sha256Stream() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_),
                                           Sha256Md(), nullptr) != 1) {
    abort();  // out of memory: nothing sensible to do
  }
}

Sha256Stream::~Sha256Stream() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}

void Sha256Stream::Update(absl::string_view piece) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), piece.data(), piece.size());
}

std::string Sha256Stream::Finish() {
  std::string out(32, '\0');
  unsigned int len = 0;
  auto* ctx = static_cast<EVP_MD_CTX*>(ctx_);
  EVP_DigestFinal_ex(ctx, reinterpret_cast<unsigned char*>(out.data()), &len);
  EVP_DigestInit_ex(ctx, Sha256Md(), nullptr);
  return out;
}

std::string Sha256Hex(absl::string_view bytes) { return HexOf(Sha256(bytes)); }

absl::StatusOr<EncryptionCertificate> VerifyEncryptionCertificate(
    absl::string_view certificate, absl::string_view trust_root_pem,
    absl::string_view trust_domain, absl::Time now) {
  X509Ptr cert = ParseCertificate(certificate);
  if (!cert) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "encryption certificate: not a PEM or DER certificate");
  }
  absl::StatusOr<std::string> uri = SingleUri(cert.get());
  if (!uri.ok()) return uri.status();
  absl::StatusOr<Principal> who = ParseSpiffeId(*uri);
  if (!who.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("encryption certificate: ", who.status().message()));
  }
  if (who->kind != Principal::Kind::kOrg || who->trust_domain != trust_domain) {
    return absl::InvalidArgumentError(
        absl::StrCat("encryption certificate: ", *uri,
                     " is not an organization of trust "
                     "domain ",
                     trust_domain));
  }
  const uint32_t usage = X509_get_key_usage(cert.get());
  if (!(usage & KU_KEY_AGREEMENT)) {
    return absl::InvalidArgumentError(
        absl::StrCat("encryption certificate of ", who->name,
                     ": its key usage does not allow keyAgreement"));
  }
  if (!IsEcP256(X509_get0_pubkey(cert.get()))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "encryption certificate of ", who->name, ": not an EC P-256 key"));
  }
  int roots = 0;
  Store store = openssl::TrustStore(trust_root_pem, &roots);
  if (roots == 0) {
    return absl::InvalidArgumentError(
        "encryption certificate: the trust root holds no PEM certificate");
  }
  StoreCtx ctx(X509_STORE_CTX_new());
  if (!ctx ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1) {
    return Internal("certificate verification");
  }
  X509_STORE_CTX_set_time(ctx.get(), 0, absl::ToTimeT(now));
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    const std::string why = X509_verify_cert_error_string(err);
    if (err == X509_V_ERR_CERT_HAS_EXPIRED ||
        err == X509_V_ERR_CERT_NOT_YET_VALID) {
      return absl::FailedPreconditionError(
          absl::StrCat("encryption certificate of ", who->name, ": ", why));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("encryption certificate of ", who->name,
                     ": does not verify against the trust root: ", why));
  }
  EncryptionCertificate out;
  out.org = who->name;
  out.der = Der(cert.get());
  out.sha256 = Sha256(out.der);
  out.not_after = FromAsn1(X509_get0_notAfter(cert.get()));
  return out;
}

std::unique_ptr<ContentCipher> NewDefaultCipher() {
  return std::make_unique<DefaultCipher>();
}

absl::StatusOr<std::string> AeadSeal(absl::string_view key,
                                     absl::string_view plaintext,
                                     absl::string_view associated_data) {
  if (key.size() != kKeyBytes) {
    return absl::InvalidArgumentError("sealing: the key must be 32 bytes");
  }
  std::string out = RandomNonce();
  absl::StatusOr<std::string> sealed =
      GcmSeal(key, out, plaintext, associated_data);
  if (!sealed.ok()) return sealed.status();
  out.append(*sealed);
  return out;
}

absl::StatusOr<std::string> AeadOpen(absl::string_view key,
                                     absl::string_view sealed,
                                     absl::string_view associated_data) {
  if (key.size() != kKeyBytes) {
    return absl::InvalidArgumentError("sealing: the key must be 32 bytes");
  }
  if (sealed.size() < kNonceBytes + kTagBytes) {
    return absl::InvalidArgumentError("sealing: sealed data is too short");
  }
  return GcmOpen(key, sealed.substr(0, kNonceBytes), sealed.substr(kNonceBytes),
                 associated_data, "sealed data");
}

absl::StatusOr<std::string> AeadSealWithNonce(
    absl::string_view key, absl::string_view nonce, absl::string_view plaintext,
    absl::string_view associated_data) {
  if (key.size() != kKeyBytes || nonce.size() != kNonceBytes) {
    return absl::InvalidArgumentError(
        "sealing: the key must be 32 bytes and the nonce 12");
  }
  return GcmSeal(key, nonce, plaintext, associated_data);
}

absl::StatusOr<std::string> AeadOpenWithNonce(
    absl::string_view key, absl::string_view nonce, absl::string_view sealed,
    absl::string_view associated_data) {
  if (key.size() != kKeyBytes || nonce.size() != kNonceBytes) {
    return absl::InvalidArgumentError(
        "sealing: the key must be 32 bytes and the nonce 12");
  }
  return GcmOpen(key, nonce, sealed, associated_data, "sealed data");
}

bool IsSha256Hex(absl::string_view text) {
  if (text.size() != 64) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string RandomKey() { return RandomBytes(kKeyBytes); }

}  // namespace lienthong::sealing
