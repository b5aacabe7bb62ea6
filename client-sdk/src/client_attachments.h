// Client::UploadAttachment and DownloadAttachment*: the attempts of
// attachment_io.cc in a retry loop that resumes after every interruption
// and fails over between endpoints. Internal to the SDK.
#ifndef LIENTHONG_CLIENT_SDK_SRC_CLIENT_ATTACHMENTS_H_
#define LIENTHONG_CLIENT_SDK_SRC_CLIENT_ATTACHMENTS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client-sdk/src/connection.h"
#include "lienthong/attachments.h"

namespace lienthong::client_internal {

absl::StatusOr<v1::Attachment> UploadAttachment(
    const Connection& connection, AttachmentSource& source,
    const std::string& name, const std::string& content_type,
    const ProgressCallback& progress);

absl::Status DownloadAttachment(const Connection& connection,
                                const std::string& document_id,
                                const v1::Attachment& attachment,
                                AttachmentSink& sink,
                                const ProgressCallback& progress);

absl::Status DownloadAttachmentToFile(const Connection& connection,
                                      const std::string& document_id,
                                      const v1::Attachment& attachment,
                                      const std::string& path,
                                      const ProgressCallback& progress);

}  // namespace lienthong::client_internal

#endif  // LIENTHONG_CLIENT_SDK_SRC_CLIENT_ATTACHMENTS_H_
