#include "lienthong/attachment_wire.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"

namespace lienthong::attachment_wire {
namespace {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;

constexpr uint32_t Tag(int field, WireFormatLite::WireType type) {
  return WireFormatLite::MakeTag(field, type);
}

// The received slices read in order, without copying them.
class SliceStream final : public google::protobuf::io::ZeroCopyInputStream {
 public:
  explicit SliceStream(const std::vector<grpc::Slice>& slices)
      : slices_(slices) {}

  bool Next(const void** data, int* size) override {
    if (backed_up_ > 0) {
      *data = current_end_ - backed_up_;
      *size = backed_up_;
      count_ += backed_up_;
      backed_up_ = 0;
      return true;
    }
    while (next_ < slices_.size()) {
      const grpc::Slice& slice = slices_[next_++];
      if (slice.size() == 0) continue;
      *data = slice.begin();
      *size = static_cast<int>(slice.size());
      current_end_ = slice.end();
      count_ += *size;
      return true;
    }
    return false;
  }
  void BackUp(int count) override {
    backed_up_ = count;
    count_ -= count;
  }
  bool Skip(int count) override {
    while (count > 0) {
      const void* data;
      int size;
      if (!Next(&data, &size)) return false;
      if (size > count) {
        BackUp(size - count);
        return true;
      }
      count -= size;
    }
    return true;
  }
  int64_t ByteCount() const override { return count_; }

 private:
  const std::vector<grpc::Slice>& slices_;
  size_t next_ = 0;
  const uint8_t* current_end_ = nullptr;
  int backed_up_ = 0;
  int64_t count_ = 0;
};

absl::Status Malformed(const google::protobuf::MessageLite& message,
                       absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed ", message.GetTypeName(), ": ", what));
}

// The fields of a Chunk up to the end of its limit; its data as views.
// false when malformed (`what` says where).
bool ParseChunk(CodedInputStream& in, ChunkFrame* frame, const char** what) {
  v1::Chunk& chunk = frame->fields;
  for (;;) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) break;
    uint64_t number;
    uint32_t length;
    switch (tag) {
      case Tag(v1::Chunk::kOffsetFieldNumber, WireFormatLite::WIRETYPE_VARINT):
        *what = "chunk offset";
        if (!in.ReadVarint64(&number)) return false;
        chunk.set_offset(number);
        break;
      case Tag(v1::Chunk::kDataFieldNumber,
               WireFormatLite::WIRETYPE_LENGTH_DELIMITED):
        *what = "chunk data cut short";
        if (!in.ReadVarint32(&length)) return false;
        // The last occurrence counts, as protobuf reads it.
        frame->data.clear();
        frame->data_size = length;
        while (length > 0) {
          const void* at;
          int size;
          if (!in.GetDirectBufferPointer(&at, &size) || size <= 0) return false;
          const uint32_t take = std::min<uint32_t>(length, size);
          frame->data.emplace_back(static_cast<const char*>(at), take);
          if (!in.Skip(static_cast<int>(take))) return false;
          length -= take;
        }
        break;
      case Tag(v1::Chunk::kSha256FieldNumber,
               WireFormatLite::WIRETYPE_LENGTH_DELIMITED):
        // A string field: UTF-8, as protobuf checks it.
        *what = "chunk sha256";
        if (!WireFormatLite::ReadString(&in, chunk.mutable_sha256()) ||
            !WireFormatLite::VerifyUtf8String(
                chunk.sha256().data(), static_cast<int>(chunk.sha256().size()),
                WireFormatLite::PARSE, "lienthong.v1.Chunk.sha256")) {
          return false;
        }
        break;
      case Tag(v1::Chunk::kSha256StateFieldNumber,
               WireFormatLite::WIRETYPE_LENGTH_DELIMITED):
        *what = "chunk sha256_state";
        if (!WireFormatLite::ReadBytes(&in, chunk.mutable_sha256_state()))
          return false;
        break;
      default:
        *what = "chunk field";
        if (!WireFormatLite::SkipField(&in, tag)) return false;
    }
  }
  *what = "chunk";
  return in.ConsumedEntireMessage();
}

}  // namespace

grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& message) {
  grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

grpc::ByteBuffer WithChunk(const google::protobuf::MessageLite& message,
                           int chunk_field, const v1::Chunk& fields,
                           std::shared_ptr<const void> owner,
                           absl::string_view data) {
  std::string head = message.SerializeAsString();
  const std::string chunk_head = fields.SerializeAsString();
  {
    google::protobuf::io::StringOutputStream sink(&head);
    CodedOutputStream out(&sink);
    const uint64_t data_field =
        data.empty()
            ? 0
            : 1 + CodedOutputStream::VarintSize64(data.size()) + data.size();
    out.WriteTag(Tag(chunk_field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
    out.WriteVarint64(chunk_head.size() + data_field);
    out.WriteString(chunk_head);
    if (!data.empty()) {
      out.WriteTag(Tag(v1::Chunk::kDataFieldNumber,
                       WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
      out.WriteVarint64(data.size());
    }
  }
  grpc::Slice slices[2] = {grpc::Slice(head), grpc::Slice()};
  if (data.empty()) return grpc::ByteBuffer(slices, 1);
  slices[1] = grpc::Slice(
      const_cast<char*>(data.data()), data.size(),
      [](void* keep) {
        delete static_cast<std::shared_ptr<const void>*>(keep);
      },
      new std::shared_ptr<const void>(std::move(owner)));
  return grpc::ByteBuffer(slices, 2);
}

absl::Status ParseWithChunk(grpc::ByteBuffer* buffer, int chunk_field,
                            google::protobuf::MessageLite* message,
                            ChunkFrame* frame) {
  message->Clear();
  frame->has_chunk = false;
  frame->fields.Clear();
  frame->data.clear();
  frame->data_size = 0;
  frame->slices.clear();
  grpc::Status dumped = buffer->Dump(&frame->slices);
  buffer->Clear();
  if (!dumped.ok()) return Malformed(*message, dumped.error_message());
  // Every field but the chunk is copied out (they are small) and read by
  // protobuf.
  std::string rest;
  {
    SliceStream stream(frame->slices);
    CodedInputStream in(&stream);
    google::protobuf::io::StringOutputStream rest_sink(&rest);
    CodedOutputStream rest_out(&rest_sink);
    const uint32_t chunk_tag =
        Tag(chunk_field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
    for (;;) {
      const uint32_t tag = in.ReadTag();
      if (tag == 0) break;
      if (tag != chunk_tag) {
        if (!WireFormatLite::SkipField(&in, tag, &rest_out))
          return Malformed(*message, absl::StrCat("field with tag ", tag));
        continue;
      }
      uint32_t length;
      if (!in.ReadVarint32(&length) || length > INT32_MAX)
        return Malformed(*message, "chunk length");
      const CodedInputStream::Limit limit =
          in.PushLimit(static_cast<int>(length));
      const char* what = "chunk";
      if (!ParseChunk(in, frame, &what)) return Malformed(*message, what);
      if (in.BytesUntilLimit() != 0)
        return Malformed(*message, "chunk cut short");
      in.PopLimit(limit);
      frame->has_chunk = true;
    }
    if (!in.ConsumedEntireMessage()) return Malformed(*message, "not protobuf");
  }
  if (!message->ParseFromString(rest))
    return Malformed(*message, "its fields besides the chunk");
  return absl::OkStatus();
}

absl::Status ParseDownload(grpc::ByteBuffer* buffer, DownloadFrame* frame) {
  absl::Status parsed =
      ParseWithChunk(buffer, v1::DownloadResponse::kChunkFieldNumber,
                     &frame->response, &frame->chunk);
  if (parsed.ok()) return parsed;
  return absl::DataLossError(
      absl::StrCat("the broker sent a ", parsed.message()));
}

}  // namespace lienthong::attachment_wire
