// The messages that carry attachment chunks (UploadRequest,
// DownloadResponse) put on and taken off gRPC's wire without copying the
// chunk's bytes: a chunk of 1 MiB would otherwise be copied into the
// message, out of it into gRPC's buffer, and back into a message at the
// other end, each a pass over every byte of every attachment.
//
// The bytes are exactly what protobuf writes for the same message (fields
// in another order, which protobuf reads the same), so either end may be
// ordinary generated code. Used by the SDK and by brokers.
//
//   auto owner = std::make_shared<const std::string>(std::move(bytes));
//   v1::Chunk fields;  // offset, sha256 or sha256_state; no data
//   grpc::ByteBuffer message = attachment_wire::WithChunk(
//       v1::UploadRequest(), v1::UploadRequest::kChunkFieldNumber, fields,
//       owner, *owner);
//   stream->Write(message);
#ifndef LIENTHONG_ATTACHMENT_WIRE_H_
#define LIENTHONG_ATTACHMENT_WIRE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "lienthong/v1/attachments.pb.h"

namespace lienthong::attachment_wire {

// gRPC method names of AttachmentService, for calls made with ByteBuffers.
inline constexpr char kUploadMethod[] =
    "/lienthong.v1.AttachmentService/Upload";
inline constexpr char kDownloadMethod[] =
    "/lienthong.v1.AttachmentService/Download";

// `message` serialized (a small message: copied).
grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& message);

// `message` (its chunk field unset) with field `chunk_field` set to `fields`
// (a Chunk without data) plus `data` as that chunk's data. `data` goes to
// gRPC as a slice of its own, not copied: `owner` keeps it alive until gRPC
// has sent it.
grpc::ByteBuffer WithChunk(const google::protobuf::MessageLite& message,
                           int chunk_field, const v1::Chunk& fields,
                           std::shared_ptr<const void> owner,
                           absl::string_view data);

// A message carrying a chunk, as it arrived: the chunk's fields but its
// data in `fields`, the data itself as `data`, pointing into the received
// buffer (in pieces, as gRPC received it), valid while this lives.
struct ChunkFrame {
  bool has_chunk = false;
  v1::Chunk fields;
  std::vector<absl::string_view> data;
  uint64_t data_size = 0;
  std::vector<grpc::Slice> slices;  // hold what `data` points into
};

// Parses `buffer` (consumed) as a message of `message`'s type whose field
// `chunk_field` is a Chunk: that chunk into `frame`, every other field into
// `message`. INVALID_ARGUMENT naming what is wrong when it is not
// well-formed (exactly when protobuf would not read it).
absl::Status ParseWithChunk(grpc::ByteBuffer* buffer, int chunk_field,
                            google::protobuf::MessageLite* message,
                            ChunkFrame* frame);

// A DownloadResponse as it arrived (its chunk's fields in
// frame.fields, not in response).
struct DownloadFrame {
  v1::DownloadResponse response;
  ChunkFrame chunk;
};

// ParseWithChunk for the SDK's downloads: DATA_LOSS ("the broker sent a
// malformed DownloadResponse: ...") when malformed.
absl::Status ParseDownload(grpc::ByteBuffer* buffer, DownloadFrame* frame);

}  // namespace lienthong::attachment_wire

#endif  // LIENTHONG_ATTACHMENT_WIRE_H_
