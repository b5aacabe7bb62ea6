// AttachmentService (proto/lienthong/v1/attachments.proto): uploads and
// downloads of stored attachments, over the storage::AttachmentStore.
// Served with gRPC's synchronous API: each call runs on a thread of its own
// and blocks on disk and on the stream's flow control, a chunk at a time.
//
//   AttachmentServiceImpl attachments(exchange.get(), store.get(),
//                                     "lienthong.local", {"central"});
//   builder.RegisterService(&attachments);
//
// PeerAttachments pushes the stored attachments of a transfer to a peer
// broker before the transfer (federation).
#ifndef LIENTHONG_BROKER_ATTACHMENT_SERVICE_H_
#define LIENTHONG_BROKER_ATTACHMENT_SERVICE_H_

#include <atomic>
#include <memory>
#include <set>
#include <string>

#include "grpcpp/grpcpp.h"
#include "lienthong/broker/audit.h"
#include "lienthong/broker/exchange.h"
#include "lienthong/common/metrics.h"
#include "lienthong/storage/attachments.h"
#include "lienthong/v1/attachments.grpc.pb.h"

namespace lienthong::broker {

// Bytes and outcomes, for /metrics.
struct AttachmentMetrics {
  Counter bytes_in;   // chunk bytes verified and stored (or compared)
  Counter bytes_out;  // chunk bytes sent to downloaders
  Counter uploads_completed;
  CounterVec refused;  // uploads and downloads refused, by status code
};

class AttachmentServiceImpl final : public v1::AttachmentService::Service {
 public:
  // Not owned; all must outlive the server. `peers`: broker names that may
  // push attachments (the configured peers). `audit` (optional) records
  // every download of a document's attachment (refusals included, in that
  // document's evidence) and every completed upload.
  AttachmentServiceImpl(Exchange* exchange, storage::AttachmentStore* store,
                        std::string trust_domain, std::set<std::string> peers,
                        AuditLog* audit = nullptr);

  // Ends running transfers at their next chunk with UNAVAILABLE (clients
  // resume elsewhere or later). Call before grpc::Server::Shutdown.
  void Shutdown() { stopping_ = true; }

  const AttachmentMetrics& metrics() const { return metrics_; }

 private:
  using UploadStream =
      grpc::ServerReaderWriter<v1::UploadResponse, grpc::ByteBuffer>;
  using DownloadStream =
      grpc::ServerSplitStreamer<v1::DownloadRequest, grpc::ByteBuffer>;

  // AttachmentService/Upload: UploadRequests as ByteBuffers.
  grpc::Status UploadChunks(grpc::ServerContext* ctx, UploadStream* stream);
  // AttachmentService/Download: DownloadResponses as ByteBuffers.
  grpc::Status DownloadChunks(grpc::ServerContext* ctx, DownloadStream* stream);
  absl::StatusOr<Principal> Caller(grpc::ServerContext* ctx,
                                   absl::string_view method) const;
  grpc::Status Refuse(const absl::Status& status);
  // Download once authenticated; counts the bytes it sent into `sent`.
  grpc::Status Serve(grpc::ServerContext* ctx, const Principal& caller,
                     const v1::DownloadRequest& request, DownloadStream* writer,
                     uint64_t* sent);

  Exchange* const exchange_;
  storage::AttachmentStore* const store_;
  const std::string trust_domain_;
  const std::set<std::string> peers_;
  AuditLog* const audit_;
  std::atomic<bool> stopping_{false};
  AttachmentMetrics metrics_;
};

// Uploads attachment `sha256` from `store` to the broker behind `channel`, as
// this broker (resuming what the peer has; nothing when it has it all).
// OK once the peer holds it complete; the peer's error otherwise
// (DEADLINE_EXCEEDED below 1 MiB/s). `local_loss` (optional) is set when
// this broker's own copy is missing or damaged (NOT_FOUND / DATA_LOSS from
// `store`): pushing again cannot help.
absl::Status PushAttachment(storage::AttachmentStore& store,
                            grpc::ChannelInterface& channel,
                            const std::string& sha256,
                            bool* local_loss = nullptr);

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_ATTACHMENT_SERVICE_H_
