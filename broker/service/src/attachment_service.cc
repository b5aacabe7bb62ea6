#include "lienthong/broker/attachment_service.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <functional>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "broker/service/src/streams.h"
#include "lienthong/attachment_wire.h"
#include "lienthong/attachments.h"
#include "lienthong/broker/service.h"
#include "lienthong/common/log.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/thread_name.h"

namespace lienthong::broker {
namespace {

void Log(log::Level level, absl::string_view message, log::Fields fields) {
  log::Write(level, "attachments", message, fields);
}

v1::UploadResponse ResponseOf(const storage::AttachmentUpload& upload) {
  const storage::UploadProgress& p = upload.progress();
  v1::UploadResponse r;
  r.set_chunk_size(upload.chunk_size());
  r.set_durable_bytes(p.durable_bytes);
  r.set_complete(p.complete);
  r.set_resumed_bytes(p.resumed_bytes);
  r.set_takes_sha256_state(upload.takes_sha256_state());
  if (p.complete) {
    r.mutable_usable_until()->set_seconds(absl::ToUnixSeconds(p.usable_until));
    r.set_sha256(p.sha256);
  }
  r.set_durable_state(p.durable_state);
  return r;
}

// A stored attachment read as a source for pushing it on: any range,
// assembled from the stored chunks (the peer's chunk size may differ).
class StoredSource final : public AttachmentSource {
 public:
  explicit StoredSource(std::unique_ptr<storage::AttachmentReader> reader)
      : reader_(std::move(reader)) {}
  uint64_t size() const override { return reader_->size(); }
  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) override {
    std::string out;
    out.reserve(length);
    const uint64_t chunk = reader_->chunk_size();
    while (out.size() < length) {
      uint64_t at = offset + out.size();
      uint64_t start = at / chunk * chunk;
      if (cached_offset_ != start || cached_.content.data.empty()) {
        storage::ChunkReadOptions data_only;
        data_only.sha256 = false;
        absl::Status read = reader_->ReadShared(start, data_only, &cached_);
        if (!read.ok()) {
          cached_ = storage::SharedChunk();
          failed_ = read;
          return read;
        }
        cached_offset_ = start;
      }
      const absl::string_view data = cached_.content.data;
      uint64_t from = at - start;
      uint64_t take =
          std::min<uint64_t>(length - out.size(), data.size() - from);
      out.append(data.data() + from, take);
    }
    return out;
  }
  // Why a Read failed (this broker's copy), OK if none did.
  const absl::Status& failed() const { return failed_; }

 private:
  std::unique_ptr<storage::AttachmentReader> reader_;
  absl::Status failed_;
  storage::SharedChunk cached_;  // the stored chunk at cached_offset_
  uint64_t cached_offset_ = 0;
};

// Takes one of `limit` places in `running` (calls that hold a thread):
// false, taking nothing, when all are taken.
bool TakePlace(std::atomic<int>& running, int limit) {
  if (running.fetch_add(1) < limit) return true;
  running.fetch_sub(1);
  return false;
}

// The answer to a call past the limit of `limit` `calls` running.
absl::Status Busy(int limit, absl::string_view calls) {
  return absl::UnavailableError(absl::StrCat(
      "broker busy: ", limit, " ", calls, " are running; try again shortly"));
}

// Messages of an upload read ahead of the one being stored: what a call
// holds in memory besides gRPC's own buffers (the HTTP/2 window).
constexpr size_t kUploadReadAhead = 2;

// An Upload call: gRPC's callback reactor reads the next messages while a
// thread of the call's own runs AttachmentServiceImpl::UploadChunks on
// those before (hashing a chunk, most of an upload's CPU, does not hold up
// the network), then finishes the call with its status, at once even with
// a read outstanding (a caller waiting after a refused chunk gets the
// refusal). Deletes itself when gRPC and that thread are done with it.
class UploadReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, v1::UploadResponse>,
      public AttachmentServiceImpl::UploadCall,
      public RefCounted {
 public:
  explicit UploadReactor(
      std::function<grpc::Status(AttachmentServiceImpl::UploadCall*)> serve) {
    {
      absl::MutexLock lock(&mu_);
      StartReadLocked();
    }
    Ref();  // for the thread
    std::thread([this, serve = std::move(serve)] {
      NameThisThread("lt-upload");
      grpc::Status status = serve(this);
      {
        // Answers queued go out before the status; no read starts after it.
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](std::deque<v1::UploadResponse>* w) { return w->empty(); },
            &writes_));
        finished_ = true;
        ready_.clear();  // what was read ahead and will not be stored
      }
      Finish(std::move(status));
      Unref();
    }).detach();
  }

  bool Read(grpc::ByteBuffer* message) override {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &UploadReactor::ReadyOrEnded));
    if (ready_.empty()) return false;
    message->Swap(&ready_.front());
    ready_.pop_front();
    StartReadLocked();
    return true;
  }

  bool Write(const v1::UploadResponse& response) override {
    const v1::UploadResponse* first = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (write_failed_) return false;
      writes_.push_back(response);
      if (writes_.size() == 1) first = &writes_.front();
    }
    if (first != nullptr) StartWrite(first);
    return true;
  }

  void OnReadDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    reading_ = false;
    if (!ok) {
      ended_ = true;
      return;
    }
    ready_.emplace_back().Swap(&incoming_);
    StartReadLocked();
  }

  void OnWriteDone(bool ok) override {
    const v1::UploadResponse* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      writes_.pop_front();
      if (!ok) {
        write_failed_ = true;
        writes_.clear();
      } else if (!writes_.empty()) {
        next = &writes_.front();
      }
    }
    if (next != nullptr) StartWrite(next);
  }

  void OnDone() override { Unref(); }

 private:
  bool ReadyOrEnded() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !ready_.empty() || ended_;
  }
  // Starts the next read if none runs, more may come, there is room for
  // it and the call is not finished. Under the lock, so that no read starts
  // after Finish (gRPC runs no reaction inside StartRead).
  void StartReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (reading_ || ended_ || finished_ || ready_.size() >= kUploadReadAhead)
      return;
    reading_ = true;
    StartRead(&incoming_);
  }

  absl::Mutex mu_;
  grpc::ByteBuffer incoming_;  // the running read's; touched by gRPC then
  std::deque<grpc::ByteBuffer> ready_ ABSL_GUARDED_BY(mu_);
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish is called
  // The front is being written; the rest wait for it.
  std::deque<v1::UploadResponse> writes_ ABSL_GUARDED_BY(mu_);
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

AttachmentServiceImpl::AttachmentServiceImpl(Exchange* exchange,
                                             storage::AttachmentStore* store,
                                             std::string trust_domain,
                                             std::set<std::string> peers,
                                             AuditLog* audit,
                                             int max_transfer_calls)
    : exchange_(exchange),
      store_(store),
      trust_domain_(std::move(trust_domain)),
      peers_(std::move(peers)),
      audit_(audit),
      max_transfer_calls_(max_transfer_calls) {
  // Chunks cross gRPC as ByteBuffers (lienthong/attachment_wire.h): Upload
  // (method 0 of AttachmentService) reads a chunk's bytes where gRPC
  // received them; Download (method 1) writes those the disk read. Marking
  // a method streamed is the way gRPC's synchronous API serves it with
  // other message types than the generated ones (a split server stream:
  // one request, then the answers).
  MarkMethodCallback(
      0, new grpc::internal::CallbackBidiHandler<grpc::ByteBuffer,
                                                 v1::UploadResponse>(
             [this](grpc::CallbackServerContext* ctx)
                 -> grpc::ServerBidiReactor<grpc::ByteBuffer,
                                            v1::UploadResponse>* {
               // Each call has a thread: a bounded number of them.
               if (!TakePlace(upload_calls_, max_transfer_calls_)) {
                 metrics_.refused.With("UNAVAILABLE").Add();
                 return new RefuseBidi<grpc::ByteBuffer, v1::UploadResponse>(
                     Busy(max_transfer_calls_, "uploads"));
               }
               return new UploadReactor([this, ctx](UploadCall* call) {
                 grpc::Status status = UploadChunks(ctx, call);
                 upload_calls_.fetch_sub(1);
                 return status;
               });
             }));
  MarkMethodStreamed(
      1, new grpc::internal::SplitServerStreamingHandler<v1::DownloadRequest,
                                                         grpc::ByteBuffer>(
             [this](grpc::ServerContext* ctx, DownloadStream* stream) {
               return DownloadChunks(ctx, stream);
             }));
}

absl::StatusOr<Principal> AttachmentServiceImpl::Caller(
    grpc::ServerContextBase* ctx, absl::string_view method) const {
  std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
  return AuthenticateCaller(auth.get(), trust_domain_, ctx->peer(), method);
}

grpc::Status AttachmentServiceImpl::Refuse(const absl::Status& status) {
  metrics_.refused.With(absl::StatusCodeToString(status.code())).Add();
  return ToGrpcStatus(status);
}

grpc::Status AttachmentServiceImpl::UploadChunks(grpc::ServerContextBase* ctx,
                                                 UploadCall* stream) {
  absl::StatusOr<Principal> caller =
      Caller(ctx, "/lienthong.v1.AttachmentService/Upload");
  if (!caller.ok()) return Refuse(caller.status());
  return UploadFrom(*caller, ctx->peer(), "AttachmentService/Upload", *stream);
}

grpc::Status AttachmentServiceImpl::UploadFor(const Principal& caller,
                                              const std::string& peer,
                                              const std::string& action,
                                              UploadCall& call) {
  // Each call holds a thread while it runs: a bounded number of them.
  if (!TakePlace(upload_calls_, max_transfer_calls_))
    return Refuse(Busy(max_transfer_calls_, "uploads"));
  absl::Cleanup running = [this] { upload_calls_.fetch_sub(1); };
  return UploadFrom(caller, peer, action, call);
}

grpc::Status AttachmentServiceImpl::UploadFrom(const Principal& caller,
                                               const std::string& peer,
                                               const std::string& action,
                                               UploadCall& call) {
  std::string uploader;
  if (caller.is_org()) {
    uploader = storage::OrgUploader(caller.name);
  } else if (caller.kind == Principal::Kind::kBroker &&
             peers_.count(caller.name)) {
    uploader = storage::BrokerUploader(caller.name);
  } else {
    return Refuse(absl::PermissionDeniedError(
        absl::StrCat(caller.spiffe_id,
                     " may not upload attachments: only organizations and "
                     "peer brokers do")));
  }
  if (stopping_) return Refuse(absl::UnavailableError("broker stopping"));
  grpc::ByteBuffer received;
  v1::UploadRequest request;  // its chunk, if any, in `chunk`
  attachment_wire::ChunkFrame chunk;
  if (!call.Read(&received)) {
    return Refuse(absl::InvalidArgumentError(
        "upload: the stream ended before its start message"));
  }
  if (absl::Status parsed = attachment_wire::ParseWithChunk(
          &received, v1::UploadRequest::kChunkFieldNumber, &request, &chunk);
      !parsed.ok()) {
    return Refuse(parsed);
  }
  if (!request.has_start() || chunk.has_chunk) {
    return Refuse(absl::InvalidArgumentError(
        "upload: the first message must be `start` (sha256 and size)"));
  }
  const v1::UploadStart& start = request.start();
  const uint64_t size = start.size();
  absl::StatusOr<std::unique_ptr<storage::AttachmentUpload>> begun;
  if (start.named_at_end()) {
    if (!start.sha256().empty()) {
      return Refuse(absl::InvalidArgumentError(
          "start.sha256: leave it empty with start.named_at_end (the last "
          "chunk names the content)"));
    }
    begun = store_->BeginUploadNamedAtEnd(uploader, start.upload_key(), size,
                                          start.restart());
  } else if (!start.upload_key().empty() || start.restart()) {
    return Refuse(absl::InvalidArgumentError(
        "start.upload_key and start.restart go with start.named_at_end; an "
        "upload that names its sha256 is resumed by it"));
  } else {
    begun = store_->BeginUpload(uploader, start.sha256(), size);
  }
  if (!begun.ok()) return Refuse(begun.status());
  storage::AttachmentUpload& upload = **begun;
  log::Fields fields = {
      {"uploader", uploader},
      {"sha256", start.named_at_end() ? "(named at end)" : start.sha256()},
      {"size", absl::StrCat(size)},
      {"call", action}};
  if (!call.Write(ResponseOf(upload))) {
    return Refuse(absl::CancelledError("upload: the caller went away"));
  }
  absl::Status failed;
  while (!upload.progress().complete) {
    if (stopping_) {
      failed = absl::UnavailableError(
          "broker stopping: the upload resumes where it stands");
      break;
    }
    if (!call.Read(&received)) break;  // half-closed, or gone
    failed = attachment_wire::ParseWithChunk(
        &received, v1::UploadRequest::kChunkFieldNumber, &request, &chunk);
    if (!failed.ok()) break;
    if (!chunk.has_chunk || request.has_start()) {
      failed = absl::InvalidArgumentError(
          "upload: after `start`, only chunks may follow");
      break;
    }
    const uint64_t bytes = chunk.data_size;
    absl::StatusOr<bool> moved = upload.Write(chunk.fields, chunk.data);
    if (!moved.ok()) {
      failed = moved.status();
      break;
    }
    metrics_.bytes_in.Add(bytes);
    if (*moved && !call.Write(ResponseOf(upload))) break;
  }
  if (!upload.progress().complete) {
    // Whatever arrived stays: a new upload goes on from here.
    absl::StatusOr<bool> moved = upload.Checkpoint();
    if (!moved.ok() && failed.ok()) failed = moved.status();
    if (failed.ok() && moved.ok() && *moved) call.Write(ResponseOf(upload));
    Log(log::Level::kInfo,
        absl::StrCat("upload interrupted at ", upload.progress().durable_bytes,
                     " of ", size, " bytes",
                     failed.ok() ? "" : absl::StrCat(": ", failed.ToString())),
        fields);
    if (!failed.ok()) return Refuse(failed);
    return grpc::Status::OK;
  }
  metrics_.uploads_completed.Add();
  const std::string& sha256 = upload.progress().sha256;
  fields[1].second = sha256;
  if (audit_ != nullptr) {
    v1::AuditEntry e;
    e.set_kind(v1::AUDIT_KIND_ATTACHMENT_STORED);
    e.set_actor(caller.spiffe_id);
    e.set_peer(peer);
    if (caller.is_org()) e.set_org(caller.name);
    e.set_action(action);
    e.set_outcome("OK");
    e.set_detail(absl::StrCat("sha256 ", sha256, ", ", size, " bytes, ",
                              upload.progress().resumed_bytes,
                              " of them there before"));
    audit_->Append(std::move(e));
  }
  Log(log::Level::kInfo,
      absl::StrCat("attachment stored (", upload.progress().resumed_bytes,
                   " bytes were there before)"),
      fields);
  return grpc::Status::OK;
}

grpc::Status AttachmentServiceImpl::DownloadChunks(grpc::ServerContext* ctx,
                                                   DownloadStream* stream) {
  absl::StatusOr<Principal> caller =
      Caller(ctx, "/lienthong.v1.AttachmentService/Download");
  if (!caller.ok()) return Refuse(caller.status());
  v1::DownloadRequest request;
  if (!stream->Read(&request)) {
    return Refuse(absl::InvalidArgumentError(
        "AttachmentService/Download: the call carried no DownloadRequest"));
  }
  class GrpcSink final : public DownloadSink {
   public:
    GrpcSink(grpc::ServerContext* ctx, DownloadStream* stream)
        : ctx_(ctx), stream_(stream) {}
    bool Write(grpc::ByteBuffer message) override {
      return stream_->Write(message);
    }
    bool Cancelled() override { return ctx_->IsCancelled(); }

   private:
    grpc::ServerContext* const ctx_;
    DownloadStream* const stream_;
  } sink(ctx, stream);
  return DownloadFor(*caller, ctx->peer(), "AttachmentService/Download",
                     request, sink);
}

grpc::Status AttachmentServiceImpl::DownloadFor(
    const Principal& caller, const std::string& peer, const std::string& action,
    const v1::DownloadRequest& request, DownloadSink& sink) {
  // Each call holds a thread while it runs: a bounded number of them.
  if (!TakePlace(download_calls_, max_transfer_calls_))
    return Refuse(Busy(max_transfer_calls_, "downloads"));
  absl::Cleanup running = [this] { download_calls_.fetch_sub(1); };
  uint64_t sent = 0;
  grpc::Status status = Serve(caller, request, sink, &sent);
  if (audit_ != nullptr && !request.document_id().empty() &&
      request.document_id().size() <= 64) {
    // Who read which attachment of which document, and how much: in the
    // document's evidence (refusals too: someone tried; but not without
    // bound, or anyone knowing a document's id could make its evidence too
    // large to export).
    // A refused try (NOT_FOUND before any byte: no right to it) of a
    // document this broker holds counts; other outcomes of a caller with a
    // right (cancelled, broken off, damaged) always go in, and a try of a
    // document not held here has no evidence to go into.
    const bool refused =
        status.error_code() == grpc::StatusCode::NOT_FOUND && sent == 0;
    const bool in_evidence =
        !refused || (exchange_->HoldsDocument(request.document_id()) &&
                     CountRefusal(caller.spiffe_id, request.document_id()));
    v1::AuditEntry e;
    e.set_kind(v1::AUDIT_KIND_ATTACHMENT_READ);
    e.set_actor(caller.spiffe_id);
    e.set_peer(peer);
    if (in_evidence) e.set_document_id(request.document_id());
    if (caller.is_org()) e.set_org(caller.name);
    e.set_action(action);
    e.set_outcome(absl::StatusCodeToString(
        static_cast<absl::StatusCode>(status.error_code())));
    e.set_detail(absl::StrCat(
        in_evidence ? ""
                    : absl::StrCat("document ", request.document_id(), ": "),
        "sha256 ", request.sha256().substr(0, 64), " from offset ",
        request.offset(), ": ", sent, " bytes sent",
        status.ok() ? "" : absl::StrCat("; ", status.error_message()),
        in_evidence ? ""
                    : absl::StrCat(" (not in the document's evidence: no such "
                                   "document here, or more than ",
                                   kRefusalsInEvidencePerDay,
                                   " refused tries of this caller today)")));
    // The call ends once its entry is durable, so the evidence fetched next
    // shows it.
    absl::Notification durable;
    audit_->Append(std::move(e),
                   [&durable](absl::Status) { durable.Notify(); });
    durable.WaitForNotification();
  }
  return status;
}

bool AttachmentServiceImpl::CountRefusal(const std::string& caller,
                                         const std::string& document_id) {
  const int64_t day = absl::ToUnixSeconds(absl::Now()) / 86400;
  absl::MutexLock lock(&refusals_mu_);
  if (day != refusals_day_) {
    refusals_day_ = day;
    refusals_.clear();
  }
  const std::string key = absl::StrCat(caller, "\n", document_id);
  auto it = refusals_.find(key);
  if (it == refusals_.end()) {
    if (refusals_.size() >= kRefusalsTracked) return false;
    it = refusals_.emplace(key, 0).first;
  }
  return ++it->second <= kRefusalsInEvidencePerDay;
}

grpc::Status AttachmentServiceImpl::Serve(const Principal& caller,
                                          const v1::DownloadRequest& request,
                                          DownloadSink& writer,
                                          uint64_t* sent) {
  if (!sealing::IsSha256Hex(request.sha256())) {
    return Refuse(absl::InvalidArgumentError(
        "sha256: must be the attachment's SHA-256 as 64 lower-case hex "
        "digits"));
  }
  absl::StatusOr<v1::Attachment> attachment = exchange_->FindAttachment(
      caller, request.document_id(), request.sha256());
  if (!attachment.ok()) return Refuse(attachment.status());
  absl::StatusOr<std::unique_ptr<storage::AttachmentReader>> reader =
      store_->Open(request.sha256());
  if (absl::IsNotFound(reader.status())) {
    return Refuse(absl::DataLossError(
        absl::StrCat("attachment ", request.sha256(), " of document ",
                     request.document_id(), " is missing at this broker")));
  }
  if (!reader.ok()) return Refuse(reader.status());
  const uint64_t size = (*reader)->size();
  const uint64_t chunk_size = (*reader)->chunk_size();
  if (request.offset() > size) {
    return Refuse(absl::OutOfRangeError(
        absl::StrCat("offset: ", request.offset(),
                     " is beyond the attachment's ", size, " bytes")));
  }
  v1::DownloadResponse response;
  response.set_size(size);
  response.set_chunk_size(chunk_size);
  if (request.offset() == size) {
    writer.Write(attachment_wire::Serialize(response));
    return grpc::Status::OK;
  }
  // A caller that takes states checks each chunk by continuing its hash of
  // the whole: it is not hashed here again (it was checked on its way in),
  // and damage on disk is found there, naming the chunk.
  storage::ChunkReadOptions fields;
  fields.sha256 = !request.sha256_state();
  fields.sha256_state = request.sha256_state();
  fields.verify = !request.sha256_state();
  storage::SharedChunk chunk;
  for (uint64_t at = request.offset() / chunk_size * chunk_size; at < size;
       at += chunk_size) {
    if (stopping_) return Refuse(absl::UnavailableError("broker stopping"));
    if (writer.Cancelled()) return grpc::Status::CANCELLED;
    absl::Status read = (*reader)->ReadShared(at, fields, &chunk);
    if (!read.ok()) {
      Log(log::Level::kError, read.ToString(),
          {{"sha256", request.sha256()},
           {"document_id", request.document_id()}});
      return Refuse(read);
    }
    absl::string_view data = chunk.content.data;
    if (at < request.offset()) {
      // A resumed download starts inside this chunk.
      // Its state (at its end) holds; a hash of its own is made again.
      data.remove_prefix(request.offset() - at);
      chunk.fields.set_offset(request.offset());
      if (!chunk.fields.sha256().empty())
        chunk.fields.set_sha256(Sha256HexOf(data));
    }
    const uint64_t bytes = data.size();
    if (!writer.Write(attachment_wire::WithChunk(
            response, v1::DownloadResponse::kChunkFieldNumber, chunk.fields,
            std::move(chunk.content.owner), data))) {
      return grpc::Status::CANCELLED;
    }
    metrics_.bytes_out.Add(bytes);
    *sent += bytes;
  }
  return grpc::Status::OK;
}

absl::Status PushAttachment(storage::AttachmentStore& store,
                            grpc::ChannelInterface& channel,
                            const std::string& sha256, bool* local_loss) {
  auto lost = [local_loss](const absl::Status& s) {
    if (local_loss != nullptr)
      *local_loss = absl::IsNotFound(s) || absl::IsDataLoss(s);
    return s;
  };
  absl::StatusOr<std::unique_ptr<storage::AttachmentReader>> reader =
      store.Open(sha256);
  if (!reader.ok()) return lost(reader.status());
  StoredSource source(*std::move(reader));
  grpc::ClientContext ctx;
  // A link slower than 1 MiB/s is taken for broken (the next try resumes).
  ctx.set_deadline(absl::ToChronoTime(
      absl::Now() + absl::Minutes(1) +
      absl::Seconds(static_cast<int64_t>(source.size() >> 20))));
  absl::StatusOr<v1::UploadResponse> r =
      UploadOnce(channel, ctx, source, sha256, nullptr);
  if (!source.failed().ok()) return lost(source.failed());
  return r.status();
}

}  // namespace lienthong::broker
