#include "lienthong/attachment_wire.h"

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/random_bytes.h"
#include "tests/testing/status_matchers.h"

namespace lienthong::attachment_wire {
namespace {

using ::testing::HasSubstr;

std::string Bytes(size_t n, uint32_t seed) {
  return testing_util::RandomBytes(n, seed);
}

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

// `bytes` as gRPC might have received them: cut at `cuts`.
grpc::ByteBuffer Received(const std::string& bytes,
                          const std::vector<size_t>& cuts) {
  std::vector<grpc::Slice> slices;
  size_t at = 0;
  for (size_t cut : cuts) {
    slices.emplace_back(bytes.data() + at, cut - at);
    at = cut;
  }
  slices.emplace_back(bytes.data() + at, bytes.size() - at);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

std::string Joined(const DownloadFrame& frame) {
  std::string out;
  for (absl::string_view piece : frame.chunk.data)
    out.append(piece.data(), piece.size());
  return out;
}

v1::DownloadResponse Response(const std::string& data) {
  v1::DownloadResponse r;
  r.set_size(5'000'000);
  r.set_chunk_size(1 << 20);
  r.mutable_chunk()->set_offset(3 << 20);
  r.mutable_chunk()->set_sha256_state(Bytes(32, 7));
  r.mutable_chunk()->set_data(data);
  return r;
}

// What WithChunk writes is read by protobuf as the message it stands for.
TEST(AttachmentWireTest, WithChunkIsWhatProtobufReads) {
  for (size_t size :
       {size_t{0}, size_t{1}, size_t{127}, size_t{128}, size_t{1} << 20}) {
    SCOPED_TRACE(size);
    const v1::DownloadResponse expected = Response(Bytes(size, 1));
    v1::DownloadResponse outer = expected;
    outer.clear_chunk();
    v1::Chunk fields = expected.chunk();
    fields.clear_data();
    auto owner = std::make_shared<const std::string>(expected.chunk().data());
    v1::DownloadResponse parsed;
    ASSERT_TRUE(parsed.ParseFromString(
        Flatten(WithChunk(outer, v1::DownloadResponse::kChunkFieldNumber,
                          fields, owner, *owner))));
    EXPECT_EQ(parsed.SerializeAsString(), expected.SerializeAsString());

    v1::UploadRequest upload;
    *upload.mutable_chunk() = expected.chunk();
    v1::UploadRequest upload_parsed;
    ASSERT_TRUE(upload_parsed.ParseFromString(Flatten(
        WithChunk(v1::UploadRequest(), v1::UploadRequest::kChunkFieldNumber,
                  fields, owner, *owner))));
    EXPECT_EQ(upload_parsed.SerializeAsString(), upload.SerializeAsString());
  }
}

// The chunk's bytes are not copied: the buffer holds their owner until it
// is gone.
TEST(AttachmentWireTest, WithChunkKeepsTheOwnerUntilTheBufferIsGone) {
  auto owner = std::make_shared<const std::string>(Bytes(4096, 2));
  std::weak_ptr<const std::string> watch = owner;
  v1::Chunk fields;
  fields.set_offset(0);
  {
    grpc::ByteBuffer buffer =
        WithChunk(v1::UploadRequest(), v1::UploadRequest::kChunkFieldNumber,
                  fields, std::move(owner), *watch.lock());
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(buffer.Dump(&slices).ok());
    ASSERT_EQ(slices.size(), 2u);
    EXPECT_EQ(reinterpret_cast<const char*>(slices[1].begin()),
              watch.lock()->data());
    buffer.Clear();
    EXPECT_FALSE(watch.expired());  // `slices` still refer to it
  }
  EXPECT_TRUE(watch.expired());
}

// ParseDownload reads what protobuf writes, however gRPC cut it into
// slices, the data in place.
TEST(AttachmentWireTest, ParseDownloadReadsProtobufInAnySlices) {
  const v1::DownloadResponse expected = Response(Bytes(300, 3));
  const std::string bytes = expected.SerializeAsString();
  for (size_t a = 0; a <= bytes.size(); a += 7) {
    for (size_t b = a; b <= bytes.size(); b += 13) {
      grpc::ByteBuffer buffer = Received(bytes, {a, b});
      DownloadFrame frame;
      ASSERT_OK(ParseDownload(&buffer, &frame));
      EXPECT_EQ(Joined(frame), expected.chunk().data());
      EXPECT_EQ(frame.chunk.data_size, expected.chunk().data().size());
      ASSERT_TRUE(frame.chunk.has_chunk);
      v1::DownloadResponse whole = frame.response;
      *whole.mutable_chunk() = frame.chunk.fields;
      whole.mutable_chunk()->set_data(Joined(frame));
      EXPECT_EQ(whole.SerializeAsString(), expected.SerializeAsString());
    }
  }
}

// An UploadRequest as a broker reads it: the start in the message, a chunk
// in the frame.
TEST(AttachmentWireTest, ParseWithChunkReadsUploadRequests) {
  v1::UploadRequest start;
  start.mutable_start()->set_sha256(std::string(64, 'a'));
  start.mutable_start()->set_size(99);
  grpc::ByteBuffer buffer = Serialize(start);
  v1::UploadRequest message;
  ChunkFrame frame;
  ASSERT_OK(ParseWithChunk(&buffer, v1::UploadRequest::kChunkFieldNumber,
                           &message, &frame));
  EXPECT_FALSE(frame.has_chunk);
  EXPECT_EQ(message.start().size(), 99u);

  v1::Chunk fields;
  fields.set_offset(1 << 20);
  fields.set_sha256(std::string(64, 'b'));
  auto owner = std::make_shared<const std::string>(Bytes(5000, 6));
  buffer = WithChunk(v1::UploadRequest(), v1::UploadRequest::kChunkFieldNumber,
                     fields, owner, *owner);
  ASSERT_OK(ParseWithChunk(&buffer, v1::UploadRequest::kChunkFieldNumber,
                           &message, &frame));
  EXPECT_FALSE(message.has_start());
  ASSERT_TRUE(frame.has_chunk);
  EXPECT_EQ(frame.fields.offset(), 1u << 20);
  EXPECT_EQ(frame.fields.sha256(), fields.sha256());
  std::string data;
  for (absl::string_view piece : frame.data)
    data.append(piece.data(), piece.size());
  EXPECT_EQ(data, *owner);

  grpc::Slice garbage(std::string("\x12\xff\xff"));
  buffer = grpc::ByteBuffer(&garbage, 1);
  absl::Status refused = ParseWithChunk(
      &buffer, v1::UploadRequest::kChunkFieldNumber, &message, &frame);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(),
              HasSubstr("malformed lienthong.v1.UploadRequest"));
}

TEST(AttachmentWireTest, ParseDownloadOfAnAnswerWithoutChunk) {
  v1::DownloadResponse r;
  r.set_size(10);
  r.set_chunk_size(4);
  grpc::ByteBuffer buffer = Serialize(r);
  DownloadFrame frame;
  ASSERT_OK(ParseDownload(&buffer, &frame));
  EXPECT_FALSE(frame.chunk.has_chunk);
  EXPECT_EQ(frame.response.size(), 10u);
  EXPECT_EQ(frame.response.chunk_size(), 4u);
  EXPECT_EQ(frame.chunk.data_size, 0u);
  EXPECT_TRUE(frame.chunk.data.empty());
}

// Damaged messages: ParseDownload takes exactly what protobuf takes, and
// reads it the same; it refuses the rest with DATA_LOSS (never a crash).
TEST(AttachmentWireTest, ParseDownloadAgreesWithProtobufOnDamagedInput) {
  const std::string valid = Response(Bytes(200, 4)).SerializeAsString();
  std::mt19937 random(5);
  int accepted = 0, refused = 0;
  for (int i = 0; i < 4000; ++i) {
    std::string bytes = valid;
    switch (i % 4) {
      case 0:  // cut short
        bytes.resize(random() % valid.size());
        break;
      case 1:  // a byte changed
        bytes[random() % bytes.size()] = static_cast<char>(random());
        break;
      case 2:  // a few bytes changed in the head (tags and lengths)
        for (int k = 0; k < 3; ++k)
          bytes[random() % 48] = static_cast<char>(random());
        break;
      default:  // garbage appended
        bytes += Bytes(1 + random() % 8, static_cast<uint32_t>(i));
    }
    SCOPED_TRACE(absl::StrCat("case ", i));
    v1::DownloadResponse reference;
    const bool protobuf_takes = reference.ParseFromString(bytes);
    grpc::ByteBuffer buffer = Received(bytes, {bytes.size() / 2});
    DownloadFrame frame;
    absl::Status parsed = ParseDownload(&buffer, &frame);
    ASSERT_EQ(parsed.ok(), protobuf_takes) << parsed;
    if (!parsed.ok()) {
      EXPECT_EQ(parsed.code(), absl::StatusCode::kDataLoss);
      EXPECT_THAT(parsed.message(),
                  HasSubstr("malformed lienthong.v1.DownloadResponse"));
      ++refused;
      continue;
    }
    ++accepted;
    EXPECT_EQ(Joined(frame), reference.chunk().data());
    EXPECT_EQ(frame.chunk.has_chunk, reference.has_chunk());
    EXPECT_EQ(frame.response.size(), reference.size());
    EXPECT_EQ(frame.response.chunk_size(), reference.chunk_size());
    EXPECT_EQ(frame.chunk.fields.offset(), reference.chunk().offset());
    EXPECT_EQ(frame.chunk.fields.sha256(), reference.chunk().sha256());
    EXPECT_EQ(frame.chunk.fields.sha256_state(),
              reference.chunk().sha256_state());
  }
  // Both kinds happened.
  EXPECT_GT(accepted, 100);
  EXPECT_GT(refused, 100);
}

}  // namespace
}  // namespace lienthong::attachment_wire
