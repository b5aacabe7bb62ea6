#include "broker/core/src/validation.h"

#include <openssl/evp.h>

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lienthong/common/ids.h"
#include "lienthong/common/org_code.h"
#include "lienthong/common/sealing.h"

namespace lienthong::broker {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("document.", field, ": ", why));
}

bool IsPrintable(absl::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

absl::Status CheckText(absl::string_view field, absl::string_view value,
                       size_t max) {
  if (value.size() > max) {
    return Invalid(field, absl::StrCat("longer than ", max, " bytes"));
  }
  if (!IsPrintable(value)) return Invalid(field, "contains control characters");
  return absl::OkStatus();
}

absl::Status CheckIssueDate(absl::string_view date) {
  if (date.empty()) return absl::OkStatus();
  absl::Time t;
  std::string err;
  if (date.size() != 10 || !absl::ParseTime("%Y-%m-%d", date, &t, &err)) {
    return Invalid("metadata.issue_date",
                   absl::StrCat("\"", date, "\" is not a date YYYY-MM-DD"));
  }
  return absl::OkStatus();
}

absl::string_view ClassificationName(v1::Classification c) {
  switch (c) {
    case v1::CLASSIFICATION_CONFIDENTIAL:
      return "confidential (mật)";
    case v1::CLASSIFICATION_SECRET:
      return "secret (tối mật)";
    default:
      return "unclassified";
  }
}

// Bytes of one wrapped-key field: generous for any cipher module, small
// enough that keys cannot smuggle content.
constexpr size_t kMaxKeyFieldBytes = 1024;

// A sealed document: ciphertext only, one wrapped key per recipient, and
// for each stored attachment (encrypted by the sender before upload) a bare
// reference by which the broker checks, forwards and serves its ciphertext.
// The broker cannot check the cryptography (it holds no key); the recipient
// does.
absl::Status ValidateSealed(const v1::Document& doc,
                            const ExchangeOptions& options) {
  if (!doc.body().empty()) {
    return Invalid("body",
                   "must be empty in a sealed document: the content travels "
                   "only inside document.sealed");
  }
  if (!doc.body_content_type().empty()) {
    return Invalid("body_content_type",
                   "must be empty in a sealed document (it is sealed too)");
  }
  for (int i = 0; i < doc.attachments_size(); ++i) {
    const v1::Attachment& a = doc.attachments(i);
    const std::string field = absl::StrCat("attachments[", i, "]");
    if (!a.stored()) {
      return Invalid(field,
                     "a sealed document carries inline attachments only "
                     "inside document.sealed; outside it only references to "
                     "stored attachments (stored, sha256, size)");
    }
    if (!a.name().empty()) {
      return Invalid(absl::StrCat(field, ".name"),
                     "must be empty in a sealed document: the name is sealed "
                     "with the content");
    }
    if (!a.content_type().empty()) {
      return Invalid(absl::StrCat(field, ".content_type"),
                     "must be empty in a sealed document: the content type "
                     "is sealed with the content");
    }
    if (!a.content().empty()) {
      return Invalid(absl::StrCat(field, ".content"),
                     "must be empty for a stored attachment (its content "
                     "was uploaded separately)");
    }
    if (a.has_sealing()) {
      return Invalid(absl::StrCat(field, ".sealing"),
                     "holds the attachment's key: it travels only inside "
                     "document.sealed");
    }
    if (!sealing::IsSha256Hex(a.sha256())) {
      return Invalid(absl::StrCat(field, ".sha256"),
                     "a stored attachment needs the SHA-256 of its content "
                     "as 64 lower-case hex digits");
    }
  }
  const v1::Sealed& sealed = doc.sealed();
  if (sealed.scheme().empty()) return Invalid("sealed.scheme", "empty");
  if (absl::Status s = CheckText("sealed.scheme", sealed.scheme(), 128);
      !s.ok())
    return s;
  if (sealed.nonce().empty() || sealed.nonce().size() > kMaxKeyFieldBytes) {
    return Invalid("sealed.nonce",
                   absl::StrCat("must be 1..", kMaxKeyFieldBytes, " bytes"));
  }
  if (sealed.ciphertext().empty()) {
    return Invalid("sealed.ciphertext", "empty; a document needs content");
  }
  std::set<absl::string_view> recipients(doc.recipients().begin(),
                                         doc.recipients().end());
  std::set<absl::string_view> keyed;
  for (int i = 0; i < sealed.keys_size(); ++i) {
    const v1::WrappedKey& k = sealed.keys(i);
    const std::string field = absl::StrCat("sealed.keys[", i, "]");
    if (!recipients.contains(k.org())) {
      return Invalid(
          absl::StrCat(field, ".org"),
          absl::StrCat("\"", k.org(), "\" is not a recipient of the document"));
    }
    if (!keyed.insert(k.org()).second) {
      return Invalid(absl::StrCat(field, ".org"),
                     absl::StrCat(k.org(), " has two keys"));
    }
    for (const auto& [name, value] :
         {std::pair<absl::string_view, const std::string*>{
              "certificate_sha256", &k.certificate_sha256()},
          {"ephemeral_public_key", &k.ephemeral_public_key()},
          {"nonce", &k.nonce()},
          {"wrapped_key", &k.wrapped_key()}}) {
      if (value->empty() || value->size() > kMaxKeyFieldBytes) {
        return Invalid(
            absl::StrCat(field, ".", name),
            absl::StrCat("must be 1..", kMaxKeyFieldBytes, " bytes"));
      }
    }
  }
  for (const std::string& r : doc.recipients()) {
    if (!keyed.contains(r)) {
      return Invalid("sealed.keys",
                     absl::StrCat("no key for recipient ", r,
                                  ": it could not open the document"));
    }
  }
  size_t bytes = doc.ByteSizeLong();
  if (bytes > options.max_document_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("document: ", bytes, " bytes exceed the limit of ",
                     options.max_document_bytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ContentSha256(const v1::Document& doc) {
  std::string canonical = "lienthong-content-v1\n";
  if (doc.has_sealed()) {
    // Only the ciphertext is ever seen by brokers.
    absl::StrAppend(&canonical, "sealed ",
                    sealing::Sha256Hex(doc.sealed().scheme()), " ",
                    sealing::Sha256Hex(doc.sealed().ciphertext()), "\n");
    return sealing::Sha256Hex(canonical);
  }
  absl::StrAppend(&canonical, "body ", sealing::Sha256Hex(doc.body()), "\n");
  for (const v1::Attachment& a : doc.attachments()) {
    absl::StrAppend(&canonical, "attachment ", a.sha256(), " ",
                    a.stored() ? a.size() : a.content().size(), "\n");
  }
  return sealing::Sha256Hex(canonical);
}

absl::Status ValidateNewDocument(const v1::Document& doc,
                                 const Principal& caller,
                                 const ExchangeOptions& options) {
  if (!caller.is_org()) {
    return absl::PermissionDeniedError(
        absl::StrCat(caller.spiffe_id,
                     " is not an organization; only organization certificates "
                     "send documents"));
  }
  if (!doc.id().empty())
    return Invalid("id", "assigned by the broker; must be empty");
  if (doc.trace_size() > 0)
    return Invalid("trace", "set by brokers; must be empty");
  if (doc.approvals_size() > 0)
    return Invalid("approvals", "set by brokers; must be empty");
  if (doc.has_accepted_at())
    return Invalid("accepted_at", "set by the broker; must be empty");
  if (!doc.content_sha256().empty()) {
    return Invalid("content_sha256", "computed by the broker; must be empty");
  }

  if (doc.sender().empty()) return Invalid("sender", "empty");
  if (absl::Status s = ValidateOrgCode(doc.sender(), "document.sender");
      !s.ok())
    return s;
  if (doc.sender() != caller.name) {
    return absl::PermissionDeniedError(absl::StrCat(
        "document.sender: ", doc.sender(), " is not the authenticated caller ",
        caller.name, "; an organization may only send as itself"));
  }

  if (doc.idempotency_key().size() > options.max_idempotency_key_bytes) {
    return Invalid("idempotency_key",
                   absl::StrCat("longer than ",
                                options.max_idempotency_key_bytes, " bytes"));
  }
  if (!IsPrintable(doc.idempotency_key())) {
    return Invalid("idempotency_key", "contains control characters");
  }

  if (doc.recipients_size() == 0)
    return Invalid("recipients", "at least one recipient is needed");
  if (static_cast<size_t>(doc.recipients_size()) > options.max_recipients) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "document.recipients: ", doc.recipients_size(),
        " recipients exceed the limit of ", options.max_recipients));
  }
  std::set<absl::string_view> seen;
  for (int i = 0; i < doc.recipients_size(); ++i) {
    std::string field = absl::StrCat("document.recipients[", i, "]");
    if (absl::Status s = ValidateOrgCode(doc.recipients(i), field); !s.ok())
      return s;
    if (!seen.insert(doc.recipients(i)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": ", doc.recipients(i), " is listed twice"));
    }
  }

  if (!doc.has_metadata()) return Invalid("metadata", "missing");
  const v1::DocumentMetadata& m = doc.metadata();
  if (m.subject().empty())
    return Invalid("metadata.subject", "empty; every document needs a subject");
  if (absl::Status s = CheckText("metadata.subject", m.subject(), 4096);
      !s.ok())
    return s;
  if (absl::Status s = CheckText("metadata.number", m.number(), 64); !s.ok())
    return s;
  if (absl::Status s = CheckText("metadata.notation", m.notation(), 128);
      !s.ok())
    return s;
  if (absl::Status s =
          CheckText("metadata.document_type", m.document_type(), 128);
      !s.ok())
    return s;
  if (absl::Status s = CheckText("metadata.signer", m.signer(), 256); !s.ok())
    return s;
  if (absl::Status s =
          CheckText("metadata.signer_title", m.signer_title(), 256);
      !s.ok())
    return s;
  if (absl::Status s = CheckText("metadata.place", m.place(), 256); !s.ok())
    return s;
  if (absl::Status s = CheckIssueDate(m.issue_date()); !s.ok()) return s;
  if (!v1::Urgency_IsValid(m.urgency()))
    return Invalid("metadata.urgency", "unknown value");
  if (!v1::Classification_IsValid(m.classification())) {
    return Invalid("metadata.classification", "unknown value");
  }
  if (!v1::BusinessType_IsValid(m.business_type())) {
    return Invalid("metadata.business_type", "unknown value");
  }
  if (!v1::Origin_IsValid(m.origin()))
    return Invalid("metadata.origin", "unknown value");
  if (!v1::DecisionCategory_IsValid(m.decision_category())) {
    return Invalid("metadata.decision_category", "unknown value");
  }
  bool is_new = m.business_type() == v1::BUSINESS_TYPE_UNSPECIFIED ||
                m.business_type() == v1::BUSINESS_TYPE_NEW;
  if (is_new && !m.refers_to().empty()) {
    return Invalid("metadata.refers_to",
                   "only RECALL, UPDATE and REPLACE refer to a document");
  }
  if (!is_new && !IsDocumentId(m.refers_to())) {
    return Invalid(
        "metadata.refers_to",
        absl::StrCat("\"", m.refers_to(), "\" is not a document id; ",
                     v1::BusinessType_Name(m.business_type()),
                     " must name the document"));
  }
  if (m.classification() == v1::CLASSIFICATION_TOP_SECRET) {
    return absl::FailedPreconditionError(
        "document.metadata.classification: top-secret (tuyệt mật) documents "
        "are outside the "
        "system's scope and are never carried");
  }
  if (doc.has_sealed()) return ValidateSealed(doc, options);
  if (m.classification() == v1::CLASSIFICATION_CONFIDENTIAL ||
      m.classification() == v1::CLASSIFICATION_SECRET) {
    return absl::FailedPreconditionError(absl::StrCat(
        "document.sealed: a ", ClassificationName(m.classification()),
        " document must be end-to-end encrypted for its recipients; this one "
        "carries plaintext and is refused (the SDK seals it when the "
        "recipients have published encryption certificates)"));
  }

  if (doc.body().empty() && doc.attachments_size() == 0) {
    return Invalid("body", "empty; a document needs a body or an attachment");
  }
  if (absl::Status s =
          CheckText("body_content_type", doc.body_content_type(), 128);
      !s.ok()) {
    return s;
  }
  for (int i = 0; i < doc.attachments_size(); ++i) {
    const v1::Attachment& a = doc.attachments(i);
    std::string field = absl::StrCat("attachments[", i, "]");
    if (a.name().empty()) return Invalid(absl::StrCat(field, ".name"), "empty");
    if (a.name().find('/') != std::string::npos || a.name() == "." ||
        a.name() == "..") {
      return Invalid(absl::StrCat(field, ".name"), "must be a plain file name");
    }
    if (absl::Status s = CheckText(absl::StrCat(field, ".name"), a.name(), 255);
        !s.ok())
      return s;
    if (a.has_sealing()) {
      return Invalid(absl::StrCat(field, ".sealing"),
                     "holds the key of an attachment encrypted end to end: "
                     "it may travel only inside a sealed document's content, "
                     "and this document is not sealed (its recipients could "
                     "not read the attachment otherwise)");
    }
    if (a.stored()) {
      // Uploaded beforehand (AttachmentService); the exchange checks it is
      // complete and the sender's.
      if (!a.content().empty()) {
        return Invalid(absl::StrCat(field, ".content"),
                       "must be empty for a stored attachment (its content "
                       "was uploaded separately)");
      }
      if (!sealing::IsSha256Hex(a.sha256())) {
        return Invalid(absl::StrCat(field, ".sha256"),
                       "a stored attachment needs the SHA-256 of its content "
                       "as 64 lower-case hex digits");
      }
      continue;
    }
    if (a.size() != 0 && a.size() != a.content().size()) {
      return Invalid(absl::StrCat(field, ".size"),
                     absl::StrCat("says ", a.size(), " bytes but content has ",
                                  a.content().size()));
    }
    if (!a.sha256().empty() &&
        absl::AsciiStrToLower(a.sha256()) != sealing::Sha256Hex(a.content())) {
      return absl::DataLossError(
          absl::StrCat("document.", field,
                       ".sha256: content does not match its hash; "
                       "the attachment was altered or truncated"));
    }
  }
  size_t bytes = doc.ByteSizeLong();
  if (bytes > options.max_document_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("document: ", bytes, " bytes exceed the limit of ",
                     options.max_document_bytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace lienthong::broker
