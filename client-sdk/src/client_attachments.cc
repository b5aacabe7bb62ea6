#include "client-sdk/src/client_attachments.h"

#include <fcntl.h>
#include <grpc/support/log.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client-sdk/src/attachment_io.h"
#include "client-sdk/src/backoff.h"
#include "lienthong/client.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/sha256_chain.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::client_internal {
namespace {

// ---- Sealed attachments (Attachment.Sealing, kAttachmentSealingScheme) ----

// Plaintext bytes of every segment but the last; fixed by the scheme,
// independent of the broker's chunk size.
constexpr uint64_t kSegmentBytes = uint64_t{1} << 20;
constexpr uint64_t kTagBytes = 16;
constexpr uint64_t kSealedSegmentBytes = kSegmentBytes + kTagBytes;
constexpr size_t kKeyBytes = 32;
constexpr size_t kNonceBytes = 12;
// Far above any broker's attachments.max_bytes; keeps sizes from overflowing.
constexpr uint64_t kMaxSealedPlaintext = uint64_t{1} << 56;
constexpr absl::string_view kSegmentLabel = "lienthong-attachment-v1";

uint64_t SegmentCount(uint64_t plaintext_size) {
  // An empty plaintext is one empty (last) segment.
  return plaintext_size == 0
             ? 1
             : (plaintext_size + kSegmentBytes - 1) / kSegmentBytes;
}

uint64_t SealedSize(uint64_t plaintext_size) {
  return plaintext_size + kTagBytes * SegmentCount(plaintext_size);
}

void AppendBigEndian(uint64_t v, std::string* out) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out->push_back(static_cast<char>((v >> shift) & 0xff));
}

std::string SegmentNonce(uint64_t index) {
  std::string nonce(kNonceBytes - 8, '\0');
  AppendBigEndian(index, &nonce);
  return nonce;
}

// Binds a segment to its place: neither reordered nor taken for the last
// (cut short), nor a last one dropped.
std::string SegmentAad(uint64_t index, bool last) {
  std::string aad(kSegmentLabel);
  AppendBigEndian(index, &aad);
  aad.push_back(last ? '\1' : '\0');
  return aad;
}

// AES-256-GCM of segment `index` under `key`: ciphertext || tag, with the
// segment's position as nonce (the key serves one content only).
absl::StatusOr<std::string> SealSegment(absl::string_view key, uint64_t index,
                                        bool last,
                                        absl::string_view plaintext) {
  absl::StatusOr<std::string> sealed = sealing::AeadSealWithNonce(
      key, SegmentNonce(index), plaintext, SegmentAad(index, last));
  if (!sealed.ok()) {
    return absl::InternalError(absl::StrCat("sealing an attachment segment: ",
                                            sealed.status().message()));
  }
  return sealed;
}

// The reverse; nullopt when the segment does not authenticate (altered,
// moved, another key, taken for the last or not the last). INTERNAL when
// the crypto library fails.
absl::StatusOr<std::optional<std::string>> OpenSegment(
    absl::string_view key, uint64_t index, bool last,
    absl::string_view sealed) {
  if (sealed.size() < kTagBytes) return std::optional<std::string>();
  absl::StatusOr<std::string> plain = sealing::AeadOpenWithNonce(
      key, SegmentNonce(index), sealed, SegmentAad(index, last));
  if (absl::IsDataLoss(plain.status())) return std::optional<std::string>();
  if (!plain.ok()) {
    return absl::InternalError(absl::StrCat("opening an attachment segment: ",
                                            plain.status().message()));
  }
  return std::optional<std::string>(*std::move(plain));
}

// The ciphertext of a plaintext source, made on demand a segment at a time
// (Read maps to whole segments; the last one made is kept, as uploads and
// hashing read in order). Each segment's plaintext is remembered by a
// digest the first time it is encrypted: a later read of other content
// (the file changed) fails instead of encrypting it under the same nonce,
// which would give away both plaintexts and the authentication key.
class SealingSource final : public AttachmentSource {
 public:
  SealingSource(AttachmentSource& plain, std::string key)
      : plain_(plain),
        key_(std::move(key)),
        count_(SegmentCount(plain.size())),
        digests_(count_) {}
  ~SealingSource() override { OPENSSL_cleanse(key_.data(), key_.size()); }

  uint64_t size() const override { return SealedSize(plain_.size()); }

  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) override {
    std::string out;
    out.reserve(length);
    while (length > 0) {
      const uint64_t index = offset / kSealedSegmentBytes;
      const uint64_t within = offset % kSealedSegmentBytes;
      ASSIGN_OR_RETURN(const std::string* segment, Segment(index));
      if (within >= segment->size()) {
        return absl::InternalError(absl::StrCat(
            "attachment ciphertext: read at ", offset, " past its end"));
      }
      const uint64_t n = std::min<uint64_t>(length, segment->size() - within);
      out.append(*segment, within, n);
      offset += n;
      length -= n;
    }
    return out;
  }

  // SHA-256 (hex) of the whole plaintext: hashed as the segments were first
  // encrypted in order (hashing the ciphertext does that), or read now.
  absl::StatusOr<std::string> PlaintextSha256() {
    cached_.reset();
    while (hashed_ < count_) {
      ASSIGN_OR_RETURN(const std::string* ignored, Segment(hashed_));
      (void)ignored;
    }
    if (!plaintext_sha256_) plaintext_sha256_ = sealing::HexOf(whole_.Finish());
    return *plaintext_sha256_;
  }

  const std::string& key() const { return key_; }

 private:
  using Digest = std::array<char, 16>;  // a prefix of the SHA-256

  absl::StatusOr<const std::string*> Segment(uint64_t index) {
    if (cached_ && cached_index_ == index) return &*cached_;
    if (index >= count_) {
      return absl::InternalError(
          absl::StrCat("attachment ciphertext: no segment ", index));
    }
    const uint64_t at = index * kSegmentBytes;
    const uint64_t length = std::min(kSegmentBytes, plain_.size() - at);
    std::string plain;
    if (length > 0) {
      ASSIGN_OR_RETURN(plain, plain_.Read(at, length));
      if (plain.size() != length) {
        return absl::DataLossError(absl::StrCat(
            "the attachment's source gave ", plain.size(), " bytes at ", at,
            " where ", length, " were asked for"));
      }
    }
    const std::string full = sealing::Sha256Raw(plain);
    Digest digest;
    std::copy_n(full.data(), digest.size(), digest.begin());
    if (!digests_[index]) {
      digests_[index] = digest;
    } else if (*digests_[index] != digest) {
      OPENSSL_cleanse(plain.data(), plain.size());
      return absl::DataLossError(absl::StrCat(
          "the attachment's content changed while it was sent (bytes ", at,
          " to ", at + length, " differ from their first reading)"));
    }
    if (index == hashed_) {
      whole_.Update(plain);
      ++hashed_;
    }
    cached_.reset();
    ASSIGN_OR_RETURN(std::string sealed,
                     SealSegment(key_, index, index + 1 == count_, plain));
    OPENSSL_cleanse(plain.data(), plain.size());
    cached_ = std::move(sealed);
    cached_index_ = index;
    return &*cached_;
  }

  AttachmentSource& plain_;
  std::string key_;
  const uint64_t count_;
  std::vector<std::optional<Digest>> digests_;  // by segment
  std::optional<std::string> cached_;           // sealed segment cached_index_
  uint64_t cached_index_ = 0;
  uint64_t hashed_ = 0;  // segments fed to whole_, in order
  sealing::Sha256Stream whole_;
  std::optional<std::string> plaintext_sha256_;
};

// Takes a sealed attachment's ciphertext in order (from the segment
// `first_segment` on) and gives `out` its plaintext a segment at a time,
// once the segment authenticates: nothing unverified reaches `out`, and at
// most one segment is held. offset() is in ciphertext bytes, so that a
// download resumes where it stopped.
class OpeningSink final : public AttachmentSink {
 public:
  OpeningSink(const v1::Attachment& attachment, AttachmentSink& out,
              uint64_t first_segment)
      : attachment_(attachment),
        out_(out),
        count_(SegmentCount(attachment.sealing().plaintext_size())),
        next_(first_segment) {}

  uint64_t offset() const override {
    if (next_ >= count_) return attachment_.size();
    return next_ * kSealedSegmentBytes + buffer_.size();
  }

  absl::Status Write(absl::string_view data) override {
    while (!data.empty()) {
      if (next_ >= count_) {
        return Damaged("the broker sent more than its segments");
      }
      const uint64_t want = SealedLength(next_) - buffer_.size();
      const size_t take =
          static_cast<size_t>(std::min<uint64_t>(want, data.size()));
      buffer_.append(data.data(), take);
      data.remove_prefix(take);
      if (buffer_.size() < SealedLength(next_)) continue;
      ASSIGN_OR_RETURN(std::optional<std::string> plain,
                       OpenSegment(attachment_.sealing().content_key(), next_,
                                   next_ + 1 == count_, buffer_));
      if (!plain) {
        return Damaged(absl::StrCat("segment ", next_, " of ", count_,
                                    " does not authenticate: altered, moved "
                                    "or cut short"));
      }
      hash_.Update(*plain);
      plaintext_bytes_ += plain->size();
      absl::Status written = out_.Write(*plain);
      OPENSSL_cleanse(plain->data(), plain->size());
      RETURN_IF_ERROR(written);
      buffer_.clear();
      ++next_;
    }
    return absl::OkStatus();
  }

  // Plaintext that an earlier call verified and wrote (segment
  // next_ on): hashed, not written again.
  void Prefix(absl::string_view plain) {
    hash_.Update(plain);
    plaintext_bytes_ += plain.size();
    ++next_;
  }

  // After the last byte: every segment arrived and the plaintext is the
  // one the sender signed.
  absl::Status Finish() {
    if (next_ != count_ || !buffer_.empty()) {
      return Damaged(absl::StrCat("only ", next_, " of ", count_,
                                  " segments arrived whole"));
    }
    const v1::Attachment::Sealing& s = attachment_.sealing();
    if (plaintext_bytes_ != s.plaintext_size()) {
      return Damaged(absl::StrCat("it opened to ", plaintext_bytes_,
                                  " bytes; the document says ",
                                  s.plaintext_size()));
    }
    const std::string whole = sealing::HexOf(hash_.Finish());
    if (whole != s.plaintext_sha256()) {
      return Damaged(absl::StrCat("it opened to content with SHA-256 ", whole,
                                  ", not the ", s.plaintext_sha256(),
                                  " its sender signed"));
    }
    return absl::OkStatus();
  }

  uint64_t count() const { return count_; }

 private:
  // Ciphertext bytes of segment `index`.
  uint64_t SealedLength(uint64_t index) const {
    return index + 1 < count_
               ? kSealedSegmentBytes
               : attachment_.size() - index * kSealedSegmentBytes;
  }
  absl::Status Damaged(absl::string_view why) const {
    return absl::DataLossError(absl::StrCat("attachment \"", attachment_.name(),
                                            "\" (sealed): ", why));
  }

  const v1::Attachment& attachment_;
  AttachmentSink& out_;
  const uint64_t count_;
  uint64_t next_;  // the segment being received
  std::string buffer_;
  uint64_t plaintext_bytes_ = 0;
  sealing::Sha256Stream hash_;
};

// ---- Transfers ----

// Transfers are resumable: whatever broke them, the next attempt goes on
// from what the other side holds. DATA_LOSS (the content is not what its
// hash says), refusals and bad requests are answers, not accidents.
bool Retryable(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable ||
         code == absl::StatusCode::kDeadlineExceeded ||
         code == absl::StatusCode::kAborted ||
         code == absl::StatusCode::kCancelled;
}

// No attempt may take longer than this: a broker slower than 1 MiB/s is
// taken for stuck (the next attempt resumes).
absl::Duration AttemptDeadline(const ClientOptions& options, uint64_t bytes) {
  return options.call_timeout +
         absl::Seconds(static_cast<int64_t>(bytes >> 20));
}

// Runs `attempt` until it succeeds or fails with an answer; the retry
// budget counts from the last attempt that moved bytes.
absl::Status RetryTransfer(
    const Connection& connection,
    const std::function<absl::Status(size_t index, grpc::ClientContext&,
                                     bool* progressed)>& attempt) {
  const ClientOptions& o = connection.options();
  absl::Time give_up = absl::Now() + o.retry_budget;
  Backoff backoff(o.initial_backoff, o.max_backoff);
  size_t index = connection.preferred_endpoint();
  for (;;) {
    grpc::ClientContext context;
    bool progressed = false;
    absl::Status s = attempt(index, context, &progressed);
    if (s.ok() || !Retryable(s.code())) return s;
    if (progressed) {
      give_up = absl::Now() + o.retry_budget;
      backoff.Reset();
    }
    if (absl::IsUnavailable(s)) index = connection.FailOver(index);
    absl::Duration delay = backoff.Next();
    if (absl::Now() + delay >= give_up) return s;
    absl::SleepFor(delay);
  }
}

class FileSink final : public AttachmentSink {
 public:
  FileSink(int fd, std::string path, uint64_t offset)
      : fd_(fd), path_(std::move(path)), offset_(offset) {}
  ~FileSink() override {
    if (fd_ >= 0) ::close(fd_);
  }
  uint64_t offset() const override { return offset_; }
  absl::Status Write(absl::string_view data) override {
    while (!data.empty()) {
      ssize_t n =
          ::pwrite(fd_, data.data(), data.size(), static_cast<off_t>(offset_));
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::InternalError(
            absl::StrCat("write ", path_, ": ", std::strerror(errno)));
      }
      data.remove_prefix(static_cast<size_t>(n));
      offset_ += static_cast<uint64_t>(n);
    }
    return absl::OkStatus();
  }
  absl::Status WritePieces(
      absl::Span<const absl::string_view> pieces) override {
    std::vector<iovec> iov;
    iov.reserve(pieces.size());
    for (absl::string_view piece : pieces) {
      if (!piece.empty())
        iov.push_back({const_cast<char*>(piece.data()), piece.size()});
    }
    size_t first = 0;
    while (first < iov.size()) {
      const int count =
          static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
      ssize_t n =
          ::pwritev(fd_, &iov[first], count, static_cast<off_t>(offset_));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        return absl::InternalError(
            absl::StrCat("write ", path_, ": ",
                         n < 0 ? std::strerror(errno) : "nothing was written"));
      }
      offset_ += static_cast<uint64_t>(n);
      for (size_t left = static_cast<size_t>(n); left > 0;) {
        if (left >= iov[first].iov_len) {
          left -= iov[first].iov_len;
          ++first;
        } else {
          iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
          iov[first].iov_len -= left;
          left = 0;
        }
      }
    }
    return absl::OkStatus();
  }
  absl::Status Close() {
    int fd = fd_;
    fd_ = -1;
    if (::fdatasync(fd) != 0 || ::close(fd) != 0) {
      return absl::InternalError(
          absl::StrCat("sync ", path_, ": ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }

 private:
  int fd_;
  const std::string path_;
  uint64_t offset_;
};

absl::Status CheckStored(const v1::Attachment& attachment) {
  if (!attachment.stored()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attachment \"", attachment.name(),
        "\" is inline: its content is in the document, not to be downloaded"));
  }
  return absl::OkStatus();
}

// A sealed attachment about to be downloaded: one this SDK can open. It
// comes from a signed document, so a malformed one never will open.
absl::Status CheckOpenable(const v1::Attachment& attachment) {
  absl::Status s = ValidateSealing(attachment);
  if (absl::IsInvalidArgument(s)) {
    return absl::DataLossError(absl::StrCat("attachment \"", attachment.name(),
                                            "\" (sealed): ", s.message()));
  }
  return s;
}

// Downloads into `sink` what it lacks; `whole` is the hash of what it
// holds, continued over every chunk (which it checks) and then checked
// against the document's.
// The bulk path of the broker at endpoint `index`, if the client uses one.
std::optional<attachment_io::BulkTarget> BulkTargetOf(
    const Connection& connection, size_t index) {
  const ClientOptions& o = connection.options();
  if (o.bulk_port <= 0) return std::nullopt;
  absl::string_view endpoint = connection.endpoint(index);
  absl::ConsumePrefix(&endpoint, "dns:///");
  absl::ConsumePrefix(&endpoint, "ipv4:");
  absl::ConsumePrefix(&endpoint, "ipv6:");
  std::string host(endpoint.substr(0, endpoint.rfind(':')));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  attachment_io::BulkTarget t;
  t.host = host;
  t.port = o.bulk_port;
  t.server_name =
      o.server_name_override.empty() ? host : o.server_name_override;
  t.certificate_file = o.certificate_file;
  t.private_key_file = o.private_key_file;
  t.ca_file = o.ca_file;
  t.crl_directory = o.crl_directory;
  t.connect_timeout = std::min(o.call_timeout, absl::Seconds(5));
  return t;
}

absl::Status Download(const Connection& connection,
                      const std::string& document_id,
                      const v1::Attachment& attachment, AttachmentSink& sink,
                      sealing::Sha256Chain& whole,
                      const ProgressCallback& progress) {
  absl::Status transferred = RetryTransfer(
      connection,
      [&](size_t index, grpc::ClientContext& context, bool* progressed) {
        const uint64_t before = sink.offset();
        absl::Cleanup moved = [&] { *progressed = sink.offset() > before; };
        if (std::optional<attachment_io::BulkTarget> bulk =
                BulkTargetOf(connection, index)) {
          absl::StatusOr<std::unique_ptr<attachment_io::AnswerStream>> opened =
              attachment_io::OpenBulkDownload(
                  *bulk, attachment_io::DownloadRequestFor(
                             document_id, attachment.sha256(), sink, true));
          if (opened.ok()) {
            return attachment_io::DownloadAnswers(**opened, sink, &whole,
                                                  progress, attachment.size())
                .status();
          }
          gpr_log(GPR_ERROR, "lienthong: downloading through gRPC: %s",
                  opened.status().ToString().c_str());
        }
        context.set_deadline(absl::ToChronoTime(
            absl::Now() + AttemptDeadline(connection.options(),
                                          attachment.size() - sink.offset())));
        return attachment_io::DownloadOnce(connection.channel(index), context,
                                           document_id, attachment.sha256(),
                                           sink, &whole, progress,
                                           attachment.size())
            .status();
      });
  if (absl::IsDataLoss(transferred) &&
      !absl::StartsWith(transferred.message(), "attachment \"")) {
    // A damaged chunk, here or in the broker's store: say whose.
    return absl::DataLossError(absl::StrCat("attachment \"", attachment.name(),
                                            "\": ", transferred.message()));
  }
  RETURN_IF_ERROR(transferred);
  if (sink.offset() != attachment.size()) {
    return absl::DataLossError(absl::StrCat(
        "attachment \"", attachment.name(), "\": the broker sent ",
        sink.offset(), " bytes; the document says ", attachment.size()));
  }
  const std::string received = sealing::HexOf(whole.Digest());
  if (received != attachment.sha256()) {
    return absl::DataLossError(absl::StrCat(
        "attachment \"", attachment.name(),
        "\": the content received has "
        "SHA-256 ",
        received, ", not the ", attachment.sha256(), " its sender signed"));
  }
  return absl::OkStatus();
}

// Where an upload found its broker too old to take uploads named at end:
// it refused the empty UploadStart.sha256.
bool NeedsHashFirst(const absl::Status& s) {
  return absl::IsInvalidArgument(s) &&
         absl::StartsWith(s.message(), "start.sha256");
}

}  // namespace

absl::StatusOr<v1::Attachment> UploadAttachment(
    const Connection& connection, AttachmentSource& source,
    const std::string& name, const std::string& content_type,
    const UploadOptions& options, const ProgressCallback& progress) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." ||
      name == "..") {
    return absl::InvalidArgumentError(absl::StrCat(
        "attachment name \"", name, "\": must be a plain file name"));
  }
  uint64_t furthest = 0;
  // Runs `once` (one attempt) until the upload is complete or refused; an
  // attempt after one that set `*restart` sends the whole content again.
  auto upload =
      [&](const std::function<absl::StatusOr<v1::UploadResponse>(
              attachment_io::UploadStream&, const ProgressCallback&)>& once,
          const bool* restart) -> absl::StatusOr<v1::UploadResponse> {
    v1::UploadResponse last;
    RETURN_IF_ERROR(RetryTransfer(connection, [&](size_t index,
                                                  grpc::ClientContext& context,
                                                  bool* progressed) {
      if (restart != nullptr && *restart) furthest = 0;
      const ProgressCallback on_progress = [&](const TransferProgress& p) {
        if (p.bytes > furthest) {
          furthest = p.bytes;
          *progressed = true;
        }
        if (progress) progress(p);
      };
      absl::StatusOr<v1::UploadResponse> r =
          absl::UnavailableError("not attempted");
      bool through_grpc = true;
      if (std::optional<attachment_io::BulkTarget> bulk =
              BulkTargetOf(connection, index)) {
        absl::StatusOr<std::unique_ptr<attachment_io::UploadStream>> opened =
            attachment_io::OpenBulkUpload(*bulk);
        if (opened.ok()) {
          r = once(**opened, on_progress);
          // A connection refused after its handshake (TLS 1.3 shows a
          // refused certificate only then) said nothing: gRPC instead.
          through_grpc =
              absl::IsUnavailable(r.status()) && !(*opened)->Answered();
        }
        if (through_grpc) {
          gpr_log(
              GPR_ERROR, "lienthong: uploading through gRPC: %s",
              (opened.ok() ? r.status() : opened.status()).ToString().c_str());
        }
      }
      if (through_grpc) {
        context.set_deadline(absl::ToChronoTime(
            absl::Now() +
            AttemptDeadline(connection.options(), source.size() - furthest)));
        r = once(*attachment_io::GrpcUploadStream(connection.channel(index),
                                                  context),
                 on_progress);
      }
      if (r.ok()) last = *std::move(r);
      return r.status();
    }));
    return last;
  };
  std::string sha256;
  if (!options.hash_first) {
    // Chunks go out as they are hashed; the last one names the content.
    ASSIGN_OR_RETURN(std::string key, attachment_io::UploadKeyOf(source));
    attachment_io::SentHash sent;
    bool restart = false;
    absl::StatusOr<v1::UploadResponse> named = upload(
        [&](attachment_io::UploadStream& stream,
            const ProgressCallback& on_progress) {
          return attachment_io::UploadNamedAtEndOnce(
              stream, source, key, &restart, sent, on_progress);
        },
        &restart);
    if (named.ok()) {
      sha256 = named->sha256();
    } else if (!NeedsHashFirst(named.status())) {
      return named.status();
    }
  }
  if (sha256.empty()) {
    // One read of the whole hashes it, with the states that check each
    // chunk at the broker: the upload hashes nothing again.
    ASSIGN_OR_RETURN(attachment_io::SourceHash hash,
                     attachment_io::SourceHash::Of(source));
    sha256 = hash.sha256();
    RETURN_IF_ERROR(upload(
                        [&](attachment_io::UploadStream& stream,
                            const ProgressCallback& on_progress) {
                          return attachment_io::UploadOnce(stream, source, hash,
                                                           on_progress);
                        },
                        /*restart=*/nullptr)
                        .status());
  }
  v1::Attachment attachment;
  attachment.set_name(name);
  attachment.set_content_type(content_type);
  attachment.set_sha256(sha256);
  attachment.set_size(source.size());
  attachment.set_stored(true);
  return attachment;
}

absl::StatusOr<v1::Attachment> UploadSealedAttachment(
    AttachmentSource& source,
    const std::function<absl::StatusOr<v1::Attachment>(AttachmentSource&)>&
        upload) {
  if (source.size() > kMaxSealedPlaintext) {
    return absl::InvalidArgumentError(
        absl::StrCat("attachment: ", source.size(),
                     " bytes are more than a sealed attachment can hold"));
  }
  SealingSource sealed(source, sealing::RandomKey());
  ASSIGN_OR_RETURN(v1::Attachment attachment, upload(sealed));
  ASSIGN_OR_RETURN(std::string plaintext_sha256, sealed.PlaintextSha256());
  v1::Attachment::Sealing* s = attachment.mutable_sealing();
  s->set_scheme(std::string(kAttachmentSealingScheme));
  s->set_content_key(sealed.key());
  s->set_plaintext_sha256(std::move(plaintext_sha256));
  s->set_plaintext_size(source.size());
  return attachment;
}

absl::Status ValidateSealing(const v1::Attachment& attachment) {
  const v1::Attachment::Sealing& s = attachment.sealing();
  if (s.scheme() != kAttachmentSealingScheme) {
    return absl::FailedPreconditionError(
        absl::StrCat("attachment \"", attachment.name(), "\" is sealed with \"",
                     s.scheme(), "\", which this SDK cannot open (it opens ",
                     kAttachmentSealingScheme, ")"));
  }
  auto invalid = [&](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attachment \"", attachment.name(), "\": ", field, ": ", why));
  };
  if (!attachment.stored()) {
    return invalid("sealing", "only a stored attachment is sealed on its own");
  }
  if (s.content_key().size() != kKeyBytes) {
    return invalid("sealing.content_key",
                   absl::StrCat("must be ", kKeyBytes, " bytes"));
  }
  if (!sealing::IsSha256Hex(s.plaintext_sha256())) {
    return invalid("sealing.plaintext_sha256",
                   "must be 64 lower-case hex digits");
  }
  if (s.plaintext_size() > kMaxSealedPlaintext ||
      attachment.size() != SealedSize(s.plaintext_size())) {
    return invalid(
        "size",
        absl::StrCat(attachment.size(), " bytes of ciphertext cannot hold the ",
                     s.plaintext_size(), " bytes of plaintext"));
  }
  return absl::OkStatus();
}

absl::Status DownloadAttachment(const Connection& connection,
                                const std::string& document_id,
                                const v1::Attachment& attachment,
                                AttachmentSink& sink,
                                const ProgressCallback& progress) {
  RETURN_IF_ERROR(CheckStored(attachment));
  if (sink.offset() != 0) {
    return absl::InvalidArgumentError(
        "sink: must start empty (DownloadAttachmentToFile resumes a file)");
  }
  sealing::Sha256Chain whole;
  if (!attachment.has_sealing()) {
    return Download(connection, document_id, attachment, sink, whole, progress);
  }
  // The ciphertext is checked as a whole (against the hash the sender
  // signed inside the sealed content), and so is every segment and then
  // the plaintext: a broker can neither alter nor swap the content.
  RETURN_IF_ERROR(CheckOpenable(attachment));
  OpeningSink opening(attachment, sink, /*first_segment=*/0);
  RETURN_IF_ERROR(
      Download(connection, document_id, attachment, opening, whole, progress));
  return opening.Finish();
}

absl::Status DownloadAttachmentToFile(const Connection& connection,
                                      const std::string& document_id,
                                      const v1::Attachment& attachment,
                                      const std::string& path,
                                      const ProgressCallback& progress) {
  RETURN_IF_ERROR(CheckStored(attachment));
  const bool sealed = attachment.has_sealing();
  if (sealed) RETURN_IF_ERROR(CheckOpenable(attachment));
  // What the file will hold: the plaintext of a sealed attachment.
  const uint64_t final_size =
      sealed ? attachment.sealing().plaintext_size() : attachment.size();
  const std::string part = absl::StrCat(path, ".part");
  // Never through a link someone else may have put there.
  int fd =
      ::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(part, ": ", std::strerror(errno)));
  }
  struct stat st;
  uint64_t have = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  // A sealed attachment's .part holds whole verified segments, unless a
  // crash cut one: that one is received again.
  uint64_t keep = have > final_size ? 0 : have;
  if (sealed) keep -= keep % kSegmentBytes;
  if (keep != have) {
    if (::ftruncate(fd, static_cast<off_t>(keep)) != 0) {
      ::close(fd);
      return absl::InternalError(
          absl::StrCat("truncate ", part, ": ", std::strerror(errno)));
    }
    have = keep;
  }
  FileSink file(fd, part, have);
  std::optional<OpeningSink> opening;
  if (sealed) opening.emplace(attachment, file, /*first_segment=*/0);
  AttachmentSink& into = sealed ? static_cast<AttachmentSink&>(*opening)
                                : static_cast<AttachmentSink&>(file);
  sealing::Sha256Chain whole;  // of the content `into` holds
  // What an earlier call received is hashed again, then continued. For a
  // sealed attachment that is plaintext, a segment (kSegmentBytes) a piece:
  // encrypted again, it gives the very ciphertext received then (same key,
  // same nonce, same content), so the whole ciphertext's hash is checked
  // on a resumed download too.
  std::string piece;
  for (uint64_t at = 0; at < have;) {
    piece.resize(std::min<uint64_t>(kSegmentBytes, have - at));
    ssize_t n = ::pread(fd, piece.data(), piece.size(), static_cast<off_t>(at));
    if (n <= 0) {
      return absl::InternalError(
          absl::StrCat("read ", part, ": ", std::strerror(errno)));
    }
    if (static_cast<size_t>(n) != piece.size() && sealed) {
      return absl::InternalError(absl::StrCat("read ", part, ": short read"));
    }
    piece.resize(static_cast<size_t>(n));
    if (sealed) {
      const uint64_t index = at / kSegmentBytes;
      ASSIGN_OR_RETURN(std::string again,
                       SealSegment(attachment.sealing().content_key(), index,
                                   index + 1 == opening->count(), piece));
      whole.Update(again);
      opening->Prefix(piece);
    } else {
      whole.Update(piece);
    }
    at += static_cast<uint64_t>(n);
  }
  absl::Status s =
      Download(connection, document_id, attachment, into, whole, progress);
  if (s.ok() && sealed) s = opening->Finish();
  if (!s.ok()) {
    // Damaged content is not worth resuming; anything else is kept for the
    // next call to continue.
    if (absl::IsDataLoss(s)) ::unlink(part.c_str());
    return s;
  }
  RETURN_IF_ERROR(file.Close());
  if (::rename(part.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename ", part, " to ", path, ": ",
                                            std::strerror(errno)));
  }
  std::string dir = path.find('/') == std::string::npos
                        ? "."
                        : path.substr(0, path.rfind('/') + 1);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace lienthong::client_internal

namespace lienthong {

absl::StatusOr<v1::Attachment> Client::UploadAttachment(
    AttachmentSource& source, const std::string& name,
    const std::string& content_type, const ProgressCallback& progress) {
  return UploadAttachment(source, name, content_type, UploadOptions(),
                          progress);
}

}  // namespace lienthong
