// Client::UploadAttachment and DownloadAttachment*: the attempts of
// attachment_io.cc in a retry loop that resumes after every interruption
// and fails over between endpoints; and the end-to-end encryption of stored
// attachments (Attachment.Sealing in document.proto): encrypted on the fly
// at upload, decrypted a segment at a time at download. Internal to the SDK.
#ifndef LIENTHONG_CLIENT_SDK_SRC_CLIENT_ATTACHMENTS_H_
#define LIENTHONG_CLIENT_SDK_SRC_CLIENT_ATTACHMENTS_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client-sdk/src/connection.h"
#include "lienthong/attachments.h"

namespace lienthong::client_internal {

// The Attachment.Sealing scheme this SDK writes and reads.
inline constexpr absl::string_view kAttachmentSealingScheme =
    "lienthong-attachment-v1/AES-256-GCM/1MiB";

// Uploads `source` as it is (options.seal is for the caller to apply).
absl::StatusOr<v1::Attachment> UploadAttachment(
    const Connection& connection, AttachmentSource& source,
    const std::string& name, const std::string& content_type,
    const UploadOptions& options, const ProgressCallback& progress);

// Encrypts `source` under a fresh key as it is read and has `upload` upload
// the ciphertext (it gets a source of the ciphertext, and returns the
// attachment with the ciphertext's sha256 and size); returns that attachment
// with its `sealing` filled in. INVALID_ARGUMENT when the source is too
// large to seal; DATA_LOSS when its content changed between two reads;
// `upload`'s error.
absl::StatusOr<v1::Attachment> UploadSealedAttachment(
    AttachmentSource& source,
    const std::function<absl::StatusOr<v1::Attachment>(AttachmentSource&)>&
        upload);

// Whether `attachment.sealing` is usable: FAILED_PRECONDITION for a scheme
// this SDK does not know, INVALID_ARGUMENT naming the field when it is
// malformed (a key not of 32 bytes, a bad hash, a ciphertext size that does
// not fit the plaintext size, not stored).
absl::Status ValidateSealing(const v1::Attachment& attachment);

// Downloads a stored attachment (decrypting a sealed one) into `sink`. See
// Client::DownloadAttachment.
absl::Status DownloadAttachment(const Connection& connection,
                                const std::string& document_id,
                                const v1::Attachment& attachment,
                                AttachmentSink& sink,
                                const ProgressCallback& progress);

// The same into a file. See Client::DownloadAttachmentToFile.
absl::Status DownloadAttachmentToFile(const Connection& connection,
                                      const std::string& document_id,
                                      const v1::Attachment& attachment,
                                      const std::string& path,
                                      const ProgressCallback& progress);

}  // namespace lienthong::client_internal

#endif  // LIENTHONG_CLIENT_SDK_SRC_CLIENT_ATTACHMENTS_H_
