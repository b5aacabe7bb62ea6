// AttachmentService (proto/lienthong/v1/attachments.proto): uploads and
// downloads of stored attachments, over the storage::AttachmentStore.
// Each call runs on a thread of its own and blocks on disk, a chunk at a
// time: downloads with gRPC's synchronous API (and its flow control),
// uploads behind a callback reactor that reads the next chunks while one
// is hashed and stored.
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

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
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
  // `max_transfer_calls`: uploads, and downloads, running at once (each
  // holds a thread); more are answered UNAVAILABLE ("broker busy").
  AttachmentServiceImpl(Exchange* exchange, storage::AttachmentStore* store,
                        std::string trust_domain, std::set<std::string> peers,
                        AuditLog* audit = nullptr,
                        int max_transfer_calls = 256);

  // Ends running transfers at their next chunk with UNAVAILABLE (clients
  // resume elsewhere or later). Call before grpc::Server::Shutdown.
  void Shutdown() { stopping_ = true; }

  const AttachmentMetrics& metrics() const { return metrics_; }

  // An Upload call as UploadChunks sees it, on a thread of its own. Not
  // thread-safe: one caller.
  class UploadCall {
   public:
    virtual ~UploadCall() = default;
    // The next UploadRequest, as received; waits for it (it is read while
    // the chunk before is stored). False once the caller closed or went.
    virtual bool Read(grpc::ByteBuffer* message) = 0;
    // Sends `response` after those before it, without waiting. False once
    // an earlier answer could not be sent (the caller went).
    virtual bool Write(const v1::UploadResponse& response) = 0;
  };

  // An upload by `caller` over another transport than gRPC (`peer` and
  // `action` as for DownloadFor): bounded, served and audited exactly as
  // AttachmentService/Upload. Runs on the caller's thread.
  grpc::Status UploadFor(const Principal& caller, const std::string& peer,
                         const std::string& action, UploadCall& call);

  // Where a download's answers go: the gRPC call's stream, or a connection
  // of the bulk path (BulkListener).
  class DownloadSink {
   public:
    virtual ~DownloadSink() = default;
    // Sends one DownloadResponse (as attachment_wire makes it); false once
    // the caller went.
    virtual bool Write(grpc::ByteBuffer message) = 0;
    virtual bool Cancelled() = 0;
  };

  // A download by `caller` (authenticated by the transport; `peer` its
  // address and `action` the call's name, for the audit log): authorized,
  // bounded, served and audited exactly as AttachmentService/Download. Runs
  // on the caller's thread.
  grpc::Status DownloadFor(const Principal& caller, const std::string& peer,
                           const std::string& action,
                           const v1::DownloadRequest& request,
                           DownloadSink& sink);

 private:
  using DownloadStream =
      grpc::ServerSplitStreamer<v1::DownloadRequest, grpc::ByteBuffer>;

  // AttachmentService/Upload: UploadRequests as ByteBuffers.
  grpc::Status UploadChunks(grpc::ServerContextBase* ctx, UploadCall* stream);
  // An upload once authenticated and counted.
  grpc::Status UploadFrom(const Principal& caller, const std::string& peer,
                          const std::string& action, UploadCall& call);
  // AttachmentService/Download: DownloadResponses as ByteBuffers.
  grpc::Status DownloadChunks(grpc::ServerContext* ctx, DownloadStream* stream);
  absl::StatusOr<Principal> Caller(grpc::ServerContextBase* ctx,
                                   absl::string_view method) const;
  grpc::Status Refuse(const absl::Status& status);
  // Counts a refused download of `caller` for `document_id`: whether its
  // audit entry still goes into the document's evidence (at most
  // kRefusalsInEvidencePerDay per caller and document a day).
  bool CountRefusal(const std::string& caller, const std::string& document_id);
  // Download once authenticated; counts the bytes it sent into `sent`.
  grpc::Status Serve(const Principal& caller,
                     const v1::DownloadRequest& request, DownloadSink& writer,
                     uint64_t* sent);

  Exchange* const exchange_;
  storage::AttachmentStore* const store_;
  const std::string trust_domain_;
  const std::set<std::string> peers_;
  AuditLog* const audit_;
  std::atomic<bool> stopping_{false};
  AttachmentMetrics metrics_;
  const int max_transfer_calls_;
  std::atomic<int> upload_calls_{0};    // running now
  std::atomic<int> download_calls_{0};  // running now

  static constexpr int kRefusalsInEvidencePerDay = 10;
  static constexpr size_t kRefusalsTracked = 100000;  // (caller, document)
  absl::Mutex refusals_mu_;
  int64_t refusals_day_ ABSL_GUARDED_BY(refusals_mu_) = 0;  // days since 1970
  absl::flat_hash_map<std::string, int> refusals_ ABSL_GUARDED_BY(refusals_mu_);
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
