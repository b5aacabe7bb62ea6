// End-to-end encryption in the SDK. Before a send, a document that must be
// sealed (classification confidential or secret, or ClientOptions::seal_all)
// has its content (body, body content type, attachments) sealed for every
// recipient with the recipients' encryption certificates, which come from
// the broker's directory and are used only once they verify against this
// client's own trust root. After a receive, a sealed document is opened
// with this organization's key before the application sees it. Internal to
// the SDK.
#ifndef LIENTHONG_CLIENT_SDK_SRC_SEALER_H_
#define LIENTHONG_CLIENT_SDK_SRC_SEALER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lienthong/client.h"
#include "lienthong/common/identity.h"
#include "lienthong/common/sealing.h"
#include "lienthong/v1/exchange.pb.h"

namespace lienthong::client_internal {

// What the associated data of a sealed document is: its sender, its
// recipients (sorted) and its classification, so that a broker cannot move
// sealed content into another document's envelope unnoticed.
std::string SealedAssociatedData(const v1::Document& document);

// Thread-safe.
class Sealer {
 public:
  // Asks the broker for the encryption certificates of `orgs`.
  using Fetch =
      std::function<absl::StatusOr<v1::GetEncryptionCertificatesResponse>(
          const std::vector<std::string>& orgs)>;

  // Loads this organization's encryption keys named in `options` (none is
  // fine: such a client cannot open sealed documents). NOT_FOUND /
  // INVALID_ARGUMENT naming the file; INVALID_ARGUMENT when a key's
  // certificate names another organization than `identity`.
  static absl::StatusOr<std::unique_ptr<Sealer>> Create(
      const ClientOptions& options, const Principal& identity);

  // Whether Seal must run before `document` is sent.
  bool MustSeal(const v1::Document& document) const;

  // Replaces the content of `document` by its sealed form: body, body
  // content type and every attachment go into the SealedContent (stored
  // ones with their Attachment.sealing, the key of their ciphertext), and
  // the outer attachments become one reference per stored attachment with
  // only stored, sha256 and size (of its ciphertext). Certificates not
  // cached (or cached longer than options.encryption_certificate_cache) are
  // fetched with `fetch` and verified. FAILED_PRECONDITION for a stored
  // attachment uploaded without sealing, and naming every recipient that
  // has published no certificate; INVALID_ARGUMENT / FAILED_PRECONDITION
  // for a certificate that does not verify; `fetch`'s error. On error
  // `document` is unchanged.
  absl::Status Seal(v1::Document* document, const Fetch& fetch);

  // Opens a sealed `document` in place (nothing to do when it is not
  // sealed): its attachments become those of the SealedContent, stored ones
  // with their keys (Client::DownloadAttachment decrypts them).
  // FAILED_PRECONDITION when this client cannot open it (no key for the
  // certificate it was sealed for, another scheme): configuration, the
  // document should wait; DATA_LOSS / INVALID_ARGUMENT when it was altered
  // or is malformed (also when its outer attachment references are not
  // exactly those of its sealed stored attachments): it never will open.
  absl::Status Open(v1::Document* document) const;

  // This organization's current encryption certificate (PEM), for
  // publishing; empty when none is configured.
  const std::string& certificate_pem() const { return certificate_pem_; }

 private:
  struct Cached {
    sealing::EncryptionCertificate certificate;
    absl::Time fetched_at;
  };

  Sealer(const ClientOptions& options, Principal identity);

  const ClientOptions options_;
  const Principal identity_;
  const std::unique_ptr<sealing::ContentCipher> cipher_;
  std::string certificate_pem_;
  std::vector<std::unique_ptr<sealing::DecryptionKey>> keys_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Cached> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lienthong::client_internal

#endif  // LIENTHONG_CLIENT_SDK_SRC_SEALER_H_
