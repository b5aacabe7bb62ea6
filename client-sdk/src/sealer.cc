#include "client-sdk/src/sealer.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "lienthong/common/certificate.h"

namespace lienthong::client_internal {
namespace {

// The file named by `option`; NOT_FOUND naming both when unreadable.
absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     absl::string_view option) {
  absl::StatusOr<std::string> text = ReadPemFile(path);
  if (!text.ok()) {
    return absl::NotFoundError(absl::StrCat(option, ": cannot read ", path));
  }
  return text;
}

sealing::Envelope ToEnvelope(const v1::Sealed& sealed) {
  sealing::Envelope env;
  env.scheme = sealed.scheme();
  env.nonce = sealed.nonce();
  env.ciphertext = sealed.ciphertext();
  for (const v1::WrappedKey& k : sealed.keys()) {
    env.keys.push_back(sealing::WrappedKey{k.org(), k.certificate_sha256(),
                                           k.ephemeral_public_key(), k.nonce(),
                                           k.wrapped_key()});
  }
  return env;
}

void ToProto(sealing::Envelope env, v1::Sealed* out) {
  out->set_scheme(std::move(env.scheme));
  out->set_nonce(std::move(env.nonce));
  out->set_ciphertext(std::move(env.ciphertext));
  for (sealing::WrappedKey& k : env.keys) {
    v1::WrappedKey* w = out->add_keys();
    w->set_org(std::move(k.org));
    w->set_certificate_sha256(std::move(k.certificate_sha256));
    w->set_ephemeral_public_key(std::move(k.ephemeral_public_key));
    w->set_nonce(std::move(k.nonce));
    w->set_wrapped_key(std::move(k.wrapped_key));
  }
}

// What the outer document shows of `content`'s attachments: for each
// stored one, only what brokers need to check, forward and serve its
// ciphertext (name, type and key stay sealed).
google::protobuf::RepeatedPtrField<v1::Attachment> StoredReferences(
    const v1::SealedContent& content) {
  google::protobuf::RepeatedPtrField<v1::Attachment> out;
  for (const v1::Attachment& a : content.attachments()) {
    if (!a.stored()) continue;
    v1::Attachment* r = out.Add();
    r->set_stored(true);
    r->set_sha256(a.sha256());
    r->set_size(a.size());
  }
  return out;
}

// The same references in any order (a sealed document as it arrived and
// what its content says it must carry).
bool SameReferences(
    const google::protobuf::RepeatedPtrField<v1::Attachment>& expected,
    const google::protobuf::RepeatedPtrField<v1::Attachment>& got) {
  if (expected.size() != got.size()) return false;
  std::vector<std::pair<std::string, uint64_t>> want;
  std::vector<std::pair<std::string, uint64_t>> have;
  for (const v1::Attachment& a : expected)
    want.emplace_back(a.sha256(), a.size());
  for (const v1::Attachment& a : got) {
    if (!a.stored() || !a.name().empty() || !a.content_type().empty() ||
        !a.content().empty() || a.has_sealing())
      return false;
    have.emplace_back(a.sha256(), a.size());
  }
  std::sort(want.begin(), want.end());
  std::sort(have.begin(), have.end());
  return want == have;
}

}  // namespace

std::string SealedAssociatedData(const v1::Document& document) {
  std::vector<std::string> recipients(document.recipients().begin(),
                                      document.recipients().end());
  std::sort(recipients.begin(), recipients.end());
  const std::string zero(1, '\0');
  return absl::StrCat("lienthong.v1.SealedContent", zero, document.sender(),
                      zero, absl::StrJoin(recipients, ","), zero,
                      static_cast<int>(document.metadata().classification()));
}

Sealer::Sealer(const ClientOptions& options, Principal identity)
    : options_(options),
      identity_(std::move(identity)),
      cipher_(sealing::NewDefaultCipher()) {}

absl::StatusOr<std::unique_ptr<Sealer>> Sealer::Create(
    const ClientOptions& options, const Principal& identity) {
  std::unique_ptr<Sealer> sealer(new Sealer(options, identity));
  std::vector<ClientOptions::KeyPairFiles> pairs;
  if (!options.encryption_certificate_file.empty()) {
    pairs.push_back(
        {options.encryption_certificate_file, options.encryption_key_file});
  }
  for (const ClientOptions::KeyPairFiles& p : options.retired_encryption_keys)
    pairs.push_back(p);
  for (size_t i = 0; i < pairs.size(); ++i) {
    const std::string option =
        i == 0 && !options.encryption_certificate_file.empty()
            ? "encryption_certificate_file"
            : "retired_encryption_keys";
    absl::StatusOr<std::string> cert =
        ReadFile(pairs[i].certificate_file, option);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key =
        ReadFile(pairs[i].private_key_file, option);
    if (!key.ok()) return key.status();
    absl::StatusOr<std::unique_ptr<sealing::DecryptionKey>> loaded =
        sealer->cipher_->LoadKey(*cert, *key);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          option, ": ", pairs[i].certificate_file, " / ",
          pairs[i].private_key_file, ": ", loaded.status().message()));
    }
    if ((*loaded)->org() != identity.name) {
      return absl::InvalidArgumentError(absl::StrCat(
          option, ": ", pairs[i].certificate_file,
          " is the encryption "
          "certificate of ",
          (*loaded)->org(), ", not of this client's ", identity.name));
    }
    if (i == 0 && !options.encryption_certificate_file.empty())
      sealer->certificate_pem_ = *std::move(cert);
    sealer->keys_.push_back(*std::move(loaded));
  }
  return sealer;
}

bool Sealer::MustSeal(const v1::Document& document) const {
  if (document.has_sealed()) return false;  // sealed by the application
  const v1::Classification c = document.metadata().classification();
  return options_.seal_all || c == v1::CLASSIFICATION_CONFIDENTIAL ||
         c == v1::CLASSIFICATION_SECRET;
}

absl::Status Sealer::Seal(v1::Document* document, const Fetch& fetch) {
  for (const v1::Attachment& a : document->attachments()) {
    if (a.stored() && !a.has_sealing()) {
      // Its plaintext went to the broker: sealing the document now would
      // promise a confidentiality the attachment never had.
      return absl::FailedPreconditionError(absl::StrCat(
          "attachments: \"", a.name(),
          "\" was uploaded in plaintext, and this document must be sealed "
          "end to end: upload it with UploadOptions::seal"));
    }
  }
  const absl::Time now = absl::Now();
  std::vector<sealing::EncryptionCertificate> certificates;
  std::vector<std::string> missing;
  {
    absl::MutexLock lock(&mu_);
    for (const std::string& org : document->recipients()) {
      auto it = cache_.find(org);
      if (it != cache_.end() &&
          now - it->second.fetched_at < options_.encryption_certificate_cache &&
          it->second.certificate.not_after > now) {
        certificates.push_back(it->second.certificate);
      } else {
        missing.push_back(org);
      }
    }
  }
  if (!missing.empty()) {
    absl::StatusOr<v1::GetEncryptionCertificatesResponse> fetched =
        fetch(missing);
    if (!fetched.ok()) return fetched.status();
    // The trust root is read at each fetch, so a rotated CA file applies.
    absl::StatusOr<std::string> ca = ReadFile(options_.ca_file, "ca_file");
    if (!ca.ok()) return ca.status();
    absl::flat_hash_map<std::string, sealing::EncryptionCertificate> verified;
    for (const v1::EncryptionCertificate& c : fetched->certificates()) {
      absl::StatusOr<sealing::EncryptionCertificate> v =
          sealing::VerifyEncryptionCertificate(c.certificate(), *ca,
                                               identity_.trust_domain, now);
      if (!v.ok()) {
        return absl::Status(
            v.status().code(),
            absl::StatusCode::kInvalidArgument == v.status().code()
                ? absl::StrCat("the encryption certificate the broker serves "
                               "for ",
                               c.org(),
                               " is not trusted: ", v.status().message())
                : absl::StrCat("the encryption certificate of ", c.org(), ": ",
                               v.status().message()));
      }
      if (v->org != c.org()) {
        return absl::InvalidArgumentError(
            absl::StrCat("the broker served ", v->org,
                         "'s encryption certificate for ", c.org()));
      }
      verified[v->org] = *std::move(v);
    }
    std::vector<std::string> without;
    for (const std::string& org : missing) {
      auto it = verified.find(org);
      if (it == verified.end()) {
        without.push_back(org);
        continue;
      }
      certificates.push_back(it->second);
    }
    if (!without.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "document.sealed: cannot seal for ", absl::StrJoin(without, ", "),
          ": no encryption certificate published (its document system must "
          "publish one: `lienthong keys publish`)"));
    }
    absl::MutexLock lock(&mu_);
    for (auto& [org, cert] : verified) cache_[org] = Cached{cert, now};
  }
  v1::SealedContent content;
  content.set_body(document->body());
  content.set_body_content_type(document->body_content_type());
  *content.mutable_attachments() = document->attachments();
  google::protobuf::RepeatedPtrField<v1::Attachment> references =
      StoredReferences(content);
  absl::StatusOr<sealing::Envelope> env =
      cipher_->Seal(content.SerializeAsString(),
                    SealedAssociatedData(*document), certificates);
  if (!env.ok()) return env.status();
  document->clear_body();
  document->clear_body_content_type();
  *document->mutable_attachments() = std::move(references);
  ToProto(*std::move(env), document->mutable_sealed());
  return absl::OkStatus();
}

absl::Status Sealer::Open(v1::Document* document) const {
  if (!document->has_sealed()) return absl::OkStatus();
  if (document->sealed().scheme() != cipher_->scheme()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "document ", document->id(), " is sealed with \"",
        document->sealed().scheme(),
        "\", which this SDK cannot open (it opens ", cipher_->scheme(), ")"));
  }
  if (keys_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "document ", document->id(),
        " is end-to-end encrypted and this client has no encryption key: set "
        "encryption_certificate_file and encryption_key_file"));
  }
  std::vector<const sealing::DecryptionKey*> keys;
  for (const auto& k : keys_) keys.push_back(k.get());
  absl::StatusOr<std::string> plain =
      cipher_->Open(ToEnvelope(document->sealed()),
                    SealedAssociatedData(*document), identity_.name, keys);
  if (!plain.ok()) {
    return absl::Status(plain.status().code(),
                        absl::StrCat("document ", document->id(), ": ",
                                     plain.status().message()));
  }
  v1::SealedContent content;
  if (!content.ParseFromString(*plain)) {
    return absl::DataLossError(
        absl::StrCat("document ", document->id(),
                     ": the sealed content opened but is not a SealedContent"));
  }
  // The references outside (which no signature covers) must name exactly
  // the stored attachments inside (which the sender's signature covers):
  // otherwise a broker changed them, and the attachments could not be
  // downloaded as the sender meant.
  google::protobuf::RepeatedPtrField<v1::Attachment> expected =
      StoredReferences(content);
  if (!SameReferences(expected, document->attachments())) {
    return absl::DataLossError(absl::StrCat(
        "document ", document->id(),
        ": its attachment references do not match the stored attachments of "
        "its sealed content (",
        document->attachments_size(), " references, ", expected.size(),
        " stored attachments): altered on the way"));
  }
  document->clear_sealed();
  document->set_body(std::move(*content.mutable_body()));
  document->set_body_content_type(
      std::move(*content.mutable_body_content_type()));
  *document->mutable_attachments() = std::move(*content.mutable_attachments());
  return absl::OkStatus();
}

}  // namespace lienthong::client_internal
