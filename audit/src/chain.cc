#include "lienthong/audit/chain.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lienthong/common/certificate.h"
#include "lienthong/common/openssl.h"
#include "lienthong/common/sealing.h"

namespace lienthong::audit {
namespace {

using openssl::Bio;
using openssl::MdCtx;
using openssl::MemBio;
using openssl::Pkey;
using openssl::Store;
using openssl::StoreCtx;
using openssl::X509Ptr;

X509Ptr ReadCertificate(absl::string_view pem) {
  Bio bio = MemBio(pem);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  return cert;
}

}  // namespace

std::string AuditChainHash(absl::string_view previous, uint64_t index,
                           absl::string_view entry_bytes) {
  std::string message;
  message.reserve(previous.size() + 8 + entry_bytes.size());
  message.append(previous.data(), previous.size());
  for (int i = 7; i >= 0; --i)
    message.push_back(static_cast<char>((index >> (8 * i)) & 0xff));
  message.append(entry_bytes.data(), entry_bytes.size());
  return sealing::Sha256Raw(message);
}

std::string Hex(absl::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 0xf]);
  }
  return out;
}

std::string CheckpointText(const v1::AuditCheckpoint& c) {
  return absl::StrCat("lienthong audit checkpoint v1\nbroker ", c.broker(),
                      "\nsize ", c.tree_size(), "\nhead ", Hex(c.head_hash()),
                      "\ntime ", c.time().seconds(), "\n");
}

// ---- signing ----------------------------------------------------------------

struct CheckpointSigner::Key {
  Pkey pkey;
};

CheckpointSigner::CheckpointSigner(std::string certificate_pem,
                                   std::unique_ptr<Key> key)
    : certificate_pem_(std::move(certificate_pem)), key_(std::move(key)) {}

CheckpointSigner::~CheckpointSigner() = default;

absl::StatusOr<std::unique_ptr<CheckpointSigner>> CheckpointSigner::FromPem(
    std::string certificate_pem, absl::string_view key_pem) {
  X509Ptr cert = ReadCertificate(certificate_pem);
  if (!cert) {
    return absl::InvalidArgumentError(
        "audit signing certificate: not a PEM certificate");
  }
  Bio bio = MemBio(key_pem);
  auto key = std::make_unique<Key>();
  key->pkey.reset(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key->pkey) {
    return absl::InvalidArgumentError(
        "audit signing key: not a PEM private key");
  }
  if (!IsEcP256(key->pkey.get())) {
    return absl::InvalidArgumentError("audit signing key: not an EC P-256 key");
  }
  if (X509_check_private_key(cert.get(), key->pkey.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "audit signing key: not the key of the signing certificate");
  }
  return std::unique_ptr<CheckpointSigner>(
      new CheckpointSigner(std::move(certificate_pem), std::move(key)));
}

absl::Status CheckpointSigner::Sign(v1::AuditCheckpoint* checkpoint) const {
  const std::string text = CheckpointText(*checkpoint);
  MdCtx ctx(EVP_MD_CTX_new());
  size_t len = 0;
  if (!ctx ||
      EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr,
                         key_->pkey.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len,
                     reinterpret_cast<const unsigned char*>(text.data()),
                     text.size()) != 1) {
    return absl::InternalError(
        absl::StrCat("audit: signing a checkpoint: ", openssl::Reason()));
  }
  std::string signature(len, '\0');
  if (EVP_DigestSign(ctx.get(),
                     reinterpret_cast<unsigned char*>(signature.data()), &len,
                     reinterpret_cast<const unsigned char*>(text.data()),
                     text.size()) != 1) {
    return absl::InternalError(
        absl::StrCat("audit: signing a checkpoint: ", openssl::Reason()));
  }
  signature.resize(len);
  checkpoint->set_signature(std::move(signature));
  checkpoint->set_certificate_pem(certificate_pem_);
  return absl::OkStatus();
}

absl::Status VerifyCheckpointSignature(const v1::AuditCheckpoint& c,
                                       absl::string_view trust_root_pem) {
  X509Ptr cert = ReadCertificate(c.certificate_pem());
  if (!cert) {
    return absl::InvalidArgumentError("certificate_pem: not a PEM certificate");
  }
  std::vector<std::string> uris = CertificateUris(cert.get());
  if (uris.size() != 1 || uris[0] != c.broker()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "certificate_pem: the signing certificate is not ", c.broker(),
        "'s (its URI SANs: ", uris.empty() ? "none" : uris[0],
        uris.size() > 1 ? ", ..." : "", ")"));
  }
  const std::string text = CheckpointText(c);
  MdCtx ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr,
                                   X509_get0_pubkey(cert.get())) != 1) {
    return absl::InternalError(
        absl::StrCat("audit: verifying a checkpoint: ", openssl::Reason()));
  }
  if (EVP_DigestVerify(
          ctx.get(),
          reinterpret_cast<const unsigned char*>(c.signature().data()),
          c.signature().size(),
          reinterpret_cast<const unsigned char*>(text.data()),
          text.size()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "signature: does not verify with the signing certificate");
  }
  if (trust_root_pem.empty()) return absl::OkStatus();
  int roots = 0;
  Store store = openssl::TrustStore(trust_root_pem, &roots);
  if (roots == 0) {
    return absl::InvalidArgumentError("trust root: holds no PEM certificate");
  }
  StoreCtx ctx2(X509_STORE_CTX_new());
  if (!ctx2 ||
      X509_STORE_CTX_init(ctx2.get(), store.get(), cert.get(), nullptr) != 1) {
    return absl::InternalError(
        absl::StrCat("audit: certificate verification: ", openssl::Reason()));
  }
  // Valid when it signed, not necessarily now.
  X509_STORE_CTX_set_time(ctx2.get(), 0, c.time().seconds());
  if (X509_verify_cert(ctx2.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx2.get());
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("certificate_pem: does not chain to the trust root: ",
                     X509_verify_cert_error_string(err)));
  }
  return absl::OkStatus();
}

// ---- verification -----------------------------------------------------------

AuditVerifier::AuditVerifier(VerifierOptions options)
    : options_(std::move(options)),
      computed_(kHashBytes, '\0'),
      recorded_(kHashBytes, '\0') {}

void AuditVerifier::Problem(uint64_t index, std::string what) {
  if (index != 0 &&
      (result_.first_bad_index == 0 || index < result_.first_bad_index)) {
    result_.first_bad_index = index;
  }
  if (result_.problems.size() < options_.max_problems) {
    result_.problems.push_back(std::move(what));
  } else if (result_.problems.size() == options_.max_problems) {
    result_.problems.push_back("... and more problems");
  }
}

void AuditVerifier::AddCheckpoint(uint64_t size, absl::string_view raw) {
  ++result_.checkpoints;
  v1::AuditCheckpoint c;
  if (!c.ParseFromArray(raw.data(), static_cast<int>(raw.size()))) {
    Problem(0, absl::StrCat("checkpoint at size ", size,
                            ": unreadable (corrupt or edited)"));
    return;
  }
  if (c.tree_size() != size) {
    Problem(0, absl::StrCat("checkpoint stored at size ", size, " says size ",
                            c.tree_size(), " (moved or edited)"));
    return;
  }
  if (c.broker() != options_.broker) {
    Problem(0, absl::StrCat("checkpoint at size ", size, ": signed for ",
                            c.broker(), ", not ", options_.broker));
    return;
  }
  if (absl::Status s = VerifyCheckpointSignature(c, options_.trust_root_pem);
      !s.ok()) {
    Problem(0, absl::StrCat("checkpoint at size ", size,
                            ": bad signature: ", s.message()));
    return;
  }
  checkpoints_.emplace(size, std::move(c));
}

void AuditVerifier::AddEntry(uint64_t index, absl::string_view raw) {
  ++result_.entries;
  if (index < expected_) {
    Problem(index, absl::StrCat("entry ", index, " comes after entry ",
                                expected_ - 1, " (reordered)"));
  } else if (index > expected_) {
    Problem(expected_,
            index == expected_ + 1
                ? absl::StrCat("entry ", expected_, ": missing (removed)")
                : absl::StrCat("entries ", expected_, " to ", index - 1,
                               ": missing (removed)"));
  }
  v1::StoredAuditEntry stored;
  bool misplaced = false;
  if (!stored.ParseFromArray(raw.data(), static_cast<int>(raw.size()))) {
    Problem(index,
            absl::StrCat("entry ", index, ": unreadable (corrupt or edited)"));
    computed_ = AuditChainHash(computed_, index, raw);
    recorded_.assign(kHashBytes, '\0');
  } else {
    if (stored.index() != index) {
      misplaced = true;
      Problem(index,
              absl::StrCat("entry at position ", index, " is entry ",
                           stored.index(), " (reordered, moved or edited)"));
    } else if (stored.hash() !=
               AuditChainHash(recorded_, index, stored.entry())) {
      Problem(index,
              absl::StrCat("entry ", index,
                           ": its content does not match its recorded hash "
                           "(edited, or an earlier entry was rewritten)"));
    }
    if (!misplaced) {
      v1::AuditEntry entry;
      if (!entry.ParseFromString(stored.entry())) {
        Problem(index, absl::StrCat("entry ", index,
                                    ": its content is not an audit entry"));
      }
    }
    computed_ = AuditChainHash(computed_, index, stored.entry());
    recorded_ = stored.hash();
  }
  if (auto it = checkpoints_.find(index); it != checkpoints_.end()) {
    if (it->second.head_hash() != computed_) {
      Problem(index,
              absl::StrCat("checkpoint at size ", index,
                           ": the signed head does not match the chain "
                           "recomputed from entry 1 (an entry at or before ",
                           index, " was rewritten, removed or reordered)"));
    } else if (result_.problems.empty()) {
      result_.verified_size = index;
    }
  }
  expected_ = std::max(expected_, index + 1);
}

AuditVerification AuditVerifier::Finish(
    std::optional<std::pair<uint64_t, std::string>> head_record) {
  const uint64_t last = expected_ - 1;
  for (auto it = checkpoints_.upper_bound(last); it != checkpoints_.end();
       ++it) {
    Problem(last + 1, absl::StrCat("checkpoint at size ", it->first,
                                   " is signed, but the log ends at entry ",
                                   last, ": entries ", last + 1, " to ",
                                   it->first, " are missing (truncated)"));
  }
  if (head_record) {
    const auto& [size, hash] = *head_record;
    if (size > last) {
      Problem(last + 1, absl::StrCat("the head record counts ", size,
                                     " entries, but the log ends at entry ",
                                     last, " (truncated)"));
    } else if (size < last) {
      Problem(size + 1, absl::StrCat("entries ", size + 1, " to ", last,
                                     " lie beyond the head record (", size,
                                     " entries): written outside the broker"));
    } else if (hash != recorded_) {
      Problem(last, absl::StrCat("the head record's hash does not match "
                                 "entry ",
                                 last, " (edited)"));
    }
  } else if (last > 0) {
    Problem(1, "the head record is missing, but the log holds entries");
  }
  result_.head_hash = computed_;
  return std::move(result_);
}

}  // namespace lienthong::audit
