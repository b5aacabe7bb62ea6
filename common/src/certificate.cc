#include "lienthong/common/certificate.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace lienthong {
namespace {

absl::StatusOr<std::string> ReadFileImpl(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": is a directory, not a PEM file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read file"));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

absl::Time FromAsn1(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTM(tm, absl::UTCTimeZone());
}

}  // namespace

absl::StatusOr<CertificateInfo> ReadCertificateFile(const std::string& path) {
  absl::StatusOr<std::string> pem = ReadPemFile(path);
  if (!pem.ok()) return pem.status();
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem->data(), pem->size()), BIO_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
  if (!cert) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no PEM certificate in the file"));
  }
  std::vector<std::string> uris = CertificateUris(cert.get());
  if (uris.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": the certificate has ", uris.size(),
        " URI SANs; exactly one "
        "spiffe://<trust-domain>/<org|broker|person>/<name> is required"));
  }
  absl::StatusOr<Principal> p = ParseSpiffeId(uris[0]);
  if (!p.ok())
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", p.status().message()));
  CertificateInfo info;
  info.principal = *std::move(p);
  info.not_before = FromAsn1(X509_get0_notBefore(cert.get()));
  info.not_after = FromAsn1(X509_get0_notAfter(cert.get()));
  return info;
}

// Refuses to prompt for a passphrase: a daemon must never wait on a terminal.
int NoPassphrase(char*, int, int, void*) { return -1; }

absl::Status CheckPrivateKeyFile(const std::string& path) {
  absl::StatusOr<std::string> pem = ReadPemFile(path);
  if (!pem.ok()) return pem.status();
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem->data(), pem->size()), BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr),
      EVP_PKEY_free);
  if (!key) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no unencrypted PEM private key in the file"));
  }
  return absl::OkStatus();
}

namespace {

using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using CrlPtr = std::unique_ptr<X509_CRL, decltype(&X509_CRL_free)>;

std::string NameOf(const X509_NAME* name) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_ONELINE);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

// Every certificate of a PEM file.
absl::StatusOr<std::vector<X509Ptr>> ReadCertificates(const std::string& path) {
  absl::StatusOr<std::string> pem = ReadPemFile(path);
  if (!pem.ok()) return pem.status();
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem->data(), pem->size()), BIO_free);
  std::vector<X509Ptr> certs;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
    certs.emplace_back(cert, X509_free);
  ERR_clear_error();  // the end of the file reads as an error
  if (certs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no PEM certificate in the file"));
  }
  return certs;
}

// The newest CRL of `root` in `directory`: <hash>.r0, .r1, ... as OpenSSL's
// hashed-directory lookup reads them (it stops at the first missing N).
struct RootCrls {
  int files = 0;
  std::string newest_file;
  CrlPtr newest{nullptr, X509_CRL_free};
};

absl::StatusOr<RootCrls> LoadRootCrls(const std::string& directory,
                                      X509* root) {
  int ok = 0;
  unsigned long hash =
      X509_NAME_hash_ex(X509_get_subject_name(root), nullptr, nullptr, &ok);
  if (!ok) return absl::InternalError("cannot hash a certificate subject");
  EVP_PKEY* key = X509_get0_pubkey(root);
  RootCrls out;
  for (int n = 0;; ++n) {
    std::string name = absl::StrFormat("%08lx.r%d", hash, n);
    std::string path = (std::filesystem::path(directory) / name).string();
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) break;
    absl::StatusOr<std::string> pem = ReadPemFile(path);
    if (!pem.ok()) return pem.status();
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(pem->data(), pem->size()), BIO_free);
    CrlPtr crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr),
               X509_CRL_free);
    ERR_clear_error();
    if (!crl) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a PEM CRL"));
    }
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl.get()),
                      X509_get_subject_name(root)) != 0 ||
        key == nullptr || X509_CRL_verify(crl.get(), key) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": not a CRL signed by the trust root \"",
                       NameOf(X509_get_subject_name(root)), "\""));
    }
    ++out.files;
    if (out.newest == nullptr ||
        FromAsn1(X509_CRL_get0_lastUpdate(crl.get())) >
            FromAsn1(X509_CRL_get0_lastUpdate(out.newest.get()))) {
      out.newest = std::move(crl);
      out.newest_file = path;
    }
  }
  if (out.files == 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: no CRL of the trust root \"%s\" (expected %08lx.r0); with a CRL "
        "directory every handshake needs one (the dev PKI makes one with "
        "deploy/pki/revoke.sh)",
        directory, NameOf(X509_get_subject_name(root)), hash));
  }
  return out;
}

absl::Status CheckDirectory(const std::string& directory) {
  std::error_code ec;
  if (!std::filesystem::is_directory(directory, ec)) {
    return absl::NotFoundError(
        absl::StrCat(directory, ": not a readable directory"));
  }
  std::filesystem::directory_iterator it(directory, ec);
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat(directory, ": cannot read the directory: ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CrlDirectoryInfo> CheckCrlDirectory(const std::string& directory,
                                                   const std::string& ca_file) {
  if (absl::Status s = CheckDirectory(directory); !s.ok()) return s;
  absl::StatusOr<std::vector<X509Ptr>> roots = ReadCertificates(ca_file);
  if (!roots.ok()) return roots.status();
  CrlDirectoryInfo info;
  info.next_update = absl::InfiniteFuture();
  for (const X509Ptr& root : *roots) {
    absl::StatusOr<RootCrls> crls = LoadRootCrls(directory, root.get());
    if (!crls.ok()) return crls.status();
    const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crls->newest.get());
    absl::Time next_update =
        next == nullptr ? absl::InfiniteFuture() : FromAsn1(next);
    if (next_update < absl::Now()) {
      return absl::FailedPreconditionError(absl::StrCat(
          crls->newest_file, ": the newest CRL of \"",
          NameOf(X509_get_subject_name(root.get())), "\" expired at ",
          absl::FormatTime(absl::RFC3339_sec, next_update, absl::UTCTimeZone()),
          "; every handshake would fail until a fresh one is added"));
    }
    info.crl_files += crls->files;
    if (next_update < info.next_update) info.next_update = next_update;
    info.newest_file = crls->newest_file;
    const STACK_OF(X509_REVOKED)* revoked =
        X509_CRL_get_REVOKED(crls->newest.get());
    info.revoked = revoked == nullptr ? 0 : sk_X509_REVOKED_num(revoked);
  }
  return info;
}

absl::StatusOr<std::string> FindRevocation(
    const std::string& directory, const std::string& ca_file,
    const std::string& certificate_file) {
  if (absl::Status s = CheckDirectory(directory); !s.ok()) return s;
  absl::StatusOr<std::vector<X509Ptr>> certs =
      ReadCertificates(certificate_file);
  if (!certs.ok()) return certs.status();
  X509* cert = (*certs)[0].get();
  absl::StatusOr<std::vector<X509Ptr>> roots = ReadCertificates(ca_file);
  if (!roots.ok()) return roots.status();
  for (const X509Ptr& root : *roots) {
    if (X509_NAME_cmp(X509_get_subject_name(root.get()),
                      X509_get_issuer_name(cert)) != 0)
      continue;
    absl::StatusOr<RootCrls> crls = LoadRootCrls(directory, root.get());
    if (!crls.ok()) return crls.status();
    X509_REVOKED* entry = nullptr;
    if (X509_CRL_get0_by_cert(crls->newest.get(), &entry, cert) != 1 ||
        entry == nullptr)
      return std::string();
    std::unique_ptr<BIGNUM, decltype(&BN_free)> serial(
        ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr), BN_free);
    std::unique_ptr<char, void (*)(char*)> hex(
        serial ? BN_bn2hex(serial.get()) : nullptr,
        [](char* p) { OPENSSL_free(p); });
    std::string reason;
    int critical = 0;
    auto* code = static_cast<ASN1_ENUMERATED*>(
        X509_REVOKED_get_ext_d2i(entry, NID_crl_reason, &critical, nullptr));
    if (code != nullptr) {
      long r = ASN1_ENUMERATED_get(code);
      static constexpr const char* kReasons[] = {
          "unspecified",     "keyCompromise",
          "CACompromise",    "affiliationChanged",
          "superseded",      "cessationOfOperation",
          "certificateHold", "",
          "removeFromCRL",   "privilegeWithdrawn",
          "AACompromise"};
      if (r >= 0 && r < 11) reason = absl::StrCat(", reason ", kReasons[r]);
      ASN1_ENUMERATED_free(code);
    }
    return absl::StrCat(
        "certificate serial ", hex ? hex.get() : "?", " was revoked at ",
        absl::FormatTime(absl::RFC3339_sec,
                         FromAsn1(X509_REVOKED_get0_revocationDate(entry)),
                         absl::UTCTimeZone()),
        reason, " (", crls->newest_file, ")");
  }
  return std::string();
}

absl::StatusOr<std::string> ReadPemFile(const std::string& path) {
  return ReadFileImpl(path);
}

std::vector<std::string> CertificateUris(X509* cert) {
  std::vector<std::string> uris;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
      if (n->type != GEN_URI) continue;
      const ASN1_IA5STRING* s = n->d.uniformResourceIdentifier;
      uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                        ASN1_STRING_length(s));
    }
    GENERAL_NAMES_free(names);
  }
  return uris;
}

bool IsEcP256(const EVP_PKEY* key) {
  if (key == nullptr || !EVP_PKEY_is_a(key, "EC")) return false;
  char group[64] = {0};
  size_t len = 0;
  if (EVP_PKEY_get_group_name(key, group, sizeof(group), &len) != 1)
    return false;
  return absl::string_view(group, len) == "prime256v1";
}

}  // namespace lienthong
