// Stored attachments with a real lienthongd: content uploaded in verified
// chunks beside the document (AttachmentService), referenced by hash in a
// signed document, downloaded identical by the recipient. Round trips of
// awkward sizes, a multi-gigabyte sparse file, a damaged chunk, an upload
// interrupted on the client and resumed, a broker killed with kill -9 in the
// middle of an upload, who may download and reference what, the limits that
// count stored attachments, and the `lienthong` CLI's --attach / download.
#include "lienthong/attachments.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client-sdk/src/attachment_io.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "lienthong/attachment_wire.h"
#include "lienthong/bulk_wire.h"
#include "lienthong/client.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/v1/attachments.grpc.pb.h"
#include "lienthong/v1/audit.pb.h"
#include "lienthong/v1/evidence.pb.h"
#include "tests/integration/broker_process.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

#ifndef LIENTHONG_CLI_PATH
#error "LIENTHONG_CLI_PATH must be defined (tests/integration/CMakeLists.txt)"
#endif

namespace lienthong::integration {
namespace {

using ::lienthong::testing_util::Eventually;
using ::lienthong::testing_util::IsOkAndHolds;
using ::lienthong::testing_util::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

// The brokers of most tests keep small chunks, so that a few hundred KiB
// span several chunks and several syncs.
constexpr uint64_t kChunk = 64 << 10;
constexpr uint64_t kSync = 128 << 10;
constexpr uint64_t kMaxBytes = 32 << 20;
constexpr absl::Duration kWait = absl::Seconds(15);

using UploadStream =
    grpc::ClientReaderWriter<v1::UploadRequest, v1::UploadResponse>;

BrokerOptions SmallChunks() {
  BrokerOptions o;
  o.config_yaml =
      absl::StrCat("attachments: {chunk_bytes: ", kChunk,
                   ", sync_bytes: ", kSync, ", max_bytes: ", kMaxBytes, "}\n");
  return o;
}

// `size` bytes that differ with `seed`, the same on every call.
std::string Content(uint64_t size, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::string out(size, '\0');
  for (uint64_t i = 0; i < size; i += 8) {
    uint64_t word = random();
    std::memcpy(out.data() + i, &word, std::min<uint64_t>(8, size - i));
  }
  return out;
}

// An attachment held in memory; counts what was read.
class StringSource : public AttachmentSource {
 public:
  explicit StringSource(std::string content) : content_(std::move(content)) {}
  uint64_t size() const override { return content_.size(); }
  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) override {
    bytes_read_ += length;
    return content_.substr(offset, length);
  }
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  const std::string content_;
  uint64_t bytes_read_ = 0;
};

// Keeps nothing but the SHA-256 of what it was given.
class DigestSink : public AttachmentSink {
 public:
  uint64_t offset() const override { return offset_; }
  absl::Status Write(absl::string_view data) override {
    hash_.Update(data);
    offset_ += data.size();
    return absl::OkStatus();
  }
  std::string HexDigest() { return sealing::HexOf(hash_.Finish()); }

 private:
  sealing::Sha256Stream hash_;
  uint64_t offset_ = 0;
};

// SHA-256 of a file, read a MiB at a time.
absl::StatusOr<std::string> Sha256OfFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(path);
  sealing::Sha256Stream hash;
  std::string buffer(1 << 20, '\0');
  for (;;) {
    ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0) {
      ::close(fd);
      return absl::InternalError(absl::StrCat("read ", path));
    }
    if (n == 0) break;
    hash.Update(absl::string_view(buffer.data(), static_cast<size_t>(n)));
  }
  ::close(fd);
  return sealing::HexOf(hash.Finish());
}

v1::Document NewDocument(const std::string& to, const std::string& subject) {
  v1::Document doc;
  doc.add_recipients(to);
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_subject(subject);
  m->set_number("42");
  m->set_notation("BC-UBND");
  m->set_document_type("Báo cáo");
  doc.set_body(absl::StrCat("Kèm theo: ", subject));
  doc.set_body_content_type("text/plain; charset=utf-8");
  return doc;
}

// References in `doc` an attachment stored before (uploaded on its own).
void AddStoredAttachment(v1::Document* doc, const std::string& name,
                         const std::string& sha256, uint64_t size) {
  v1::Attachment* a = doc->add_attachments();
  a->set_name(name);
  a->set_content_type("application/octet-stream");
  a->set_sha256(sha256);
  a->set_size(size);
  a->set_stored(true);
}

v1::UploadRequest StartOf(const std::string& sha256, uint64_t size) {
  v1::UploadRequest request;
  request.mutable_start()->set_sha256(sha256);
  request.mutable_start()->set_size(size);
  return request;
}

// The chunk of `content` at `offset`, with its hash.
v1::UploadRequest ChunkOf(const std::string& content, uint64_t offset,
                          uint64_t chunk_size) {
  v1::UploadRequest request;
  v1::Chunk* chunk = request.mutable_chunk();
  chunk->set_offset(offset);
  chunk->set_data(content.substr(offset, chunk_size));
  chunk->set_sha256(Sha256HexOf(chunk->data()));
  return request;
}

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

// The attachment reads in the evidence of document `id`, as `sender` gets
// it (AUDIT_KIND_ATTACHMENT_READ entries, in order).
absl::StatusOr<std::vector<v1::AuditEntry>> AttachmentReads(
    Client& sender, const std::string& id) {
  ASSIGN_OR_RETURN(v1::EvidenceExport exported, sender.GetEvidence(id));
  v1::Evidence evidence;
  if (!evidence.ParseFromString(exported.evidence()))
    return absl::DataLossError("unreadable evidence");
  std::vector<v1::AuditEntry> reads;
  for (const v1::EvidenceAuditEntry& stored : evidence.audit_entries()) {
    v1::AuditEntry e;
    if (!e.ParseFromString(stored.entry().entry()))
      return absl::DataLossError("unreadable audit entry");
    if (e.kind() == v1::AUDIT_KIND_ATTACHMENT_READ) reads.push_back(e);
  }
  return reads;
}

class AttachmentsTest : public ::testing::Test {
 protected:
  explicit AttachmentsTest(BrokerOptions options = SmallChunks())
      : broker_(std::move(options)) {}

  void SetUp() override {
    ASSERT_OK(broker_.Start());
    ASSERT_OK_AND_ASSIGN(pki_, DevPkiDir());
    ASSERT_FALSE(work_.path().empty());
  }
  void TearDown() override { EXPECT_OK(broker_.Stop()); }

  std::unique_ptr<Client> Open(const std::string& org) {
    absl::StatusOr<std::unique_ptr<Client>> c =
        Client::Open(broker_.ClientOptionsFor(org));
    EXPECT_OK(c);
    return c.ok() ? *std::move(c) : nullptr;
  }

  std::unique_ptr<v1::AttachmentService::Stub> RawStub(const std::string& org) {
    return v1::AttachmentService::NewStub(
        RawChannel(broker_.endpoint(), absl::StrCat("orgs/", org)));
  }

  // `sender` uploads `content` (as `name`) and sends `recipient` a document
  // with it: the attachment and the send's receipt, in `a` and `receipt`.
  void SendWithAttachment(Client& sender, const std::string& recipient,
                          const std::string& content, const std::string& name,
                          v1::Attachment* a, SendReceipt* receipt) {
    StringSource source(content);
    ASSERT_OK_AND_ASSIGN(
        *a, sender.UploadAttachment(source, name, "application/octet-stream"));
    v1::Document doc = NewDocument(recipient, absl::StrCat("Kèm ", name));
    *doc.add_attachments() = *a;
    ASSERT_OK_AND_ASSIGN(*receipt, sender.Send(doc));
  }

  // An Upload of `content` by `org` through the generated stub (as another
  // client would make it), started: its start sent and first answer read.
  struct RawUpload {
    std::unique_ptr<v1::AttachmentService::Stub> stub;
    grpc::ClientContext context;
    std::unique_ptr<UploadStream> stream;
    v1::UploadResponse first;
  };
  std::unique_ptr<RawUpload> StartRawUpload(const std::string& org,
                                            const std::string& content) {
    auto call = std::make_unique<RawUpload>();
    call->stub = RawStub(org);
    SetDeadline(call->context, kWait);
    call->stream = call->stub->Upload(&call->context);
    EXPECT_TRUE(
        call->stream->Write(StartOf(Sha256HexOf(content), content.size())));
    EXPECT_TRUE(call->stream->Read(&call->first));
    return call;
  }

  std::string WriteTemp(const std::string& name, const std::string& content) {
    std::string path = absl::StrCat(work_.path(), "/", name);
    EXPECT_OK(WriteFile(path, content));
    return path;
  }

  // Takes document `id` from `client`'s inbox within kWait and acknowledges
  // it; an empty document when it did not come.
  // `recipient` receives document `id`, whose one attachment downloads to
  // a file (`file_name` in the work directory) holding exactly `content`.
  void ExpectItsAttachmentDownloads(Client& recipient, const std::string& id,
                                    const std::string& content,
                                    const std::string& file_name) {
    IncomingDocument got = FetchDocument(recipient, id);
    ASSERT_THAT(got.document.attachments(), SizeIs(1));
    const std::string out = work_.path() + "/" + file_name;
    ASSERT_OK(recipient.DownloadAttachmentToFile(
        id, got.document.attachments(0), out));
    ASSERT_OK_AND_ASSIGN(std::string downloaded, ReadFile(out));
    EXPECT_TRUE(downloaded == content) << "the bytes differ";
  }

  IncomingDocument FetchDocument(Client& client, const std::string& id) {
    for (absl::Time deadline = absl::Now() + kWait; absl::Now() < deadline;) {
      absl::StatusOr<std::vector<IncomingDocument>> got =
          client.Fetch(10, absl::Seconds(2));
      EXPECT_OK(got);
      if (!got.ok()) break;
      for (const IncomingDocument& d : *got) {
        EXPECT_OK(client.Ack({d.document.id()}));
        if (d.document.id() == id) return d;
      }
    }
    ADD_FAILURE() << "document " << id << " did not arrive within "
                  << absl::FormatDuration(kWait);
    return {};
  }

  uint64_t InboxTotal(const std::string& org) {
    std::unique_ptr<Client> c = Open(org);
    if (c == nullptr) return ~uint64_t{0};
    absl::StatusOr<v1::ListInboxResponse> inbox = c->ListInbox(10);
    EXPECT_OK(inbox);
    return inbox.ok() ? inbox->total() : ~uint64_t{0};
  }

  BrokerProcess broker_;
  testing_util::TempDir work_;
  std::string pki_;
};

// ---- 1. Round trips -------------------------------------------------------

TEST_F(AttachmentsTest, AwkwardSizesRoundTripThroughASignedDocument) {
  struct Case {
    std::string name;
    uint64_t size;
  };
  const std::vector<Case> cases = {
      {"rong.bin", 0},
      {"mot-byte.bin", 1},
      {"ba-khoi.pdf", 3 * kChunk},
      {"le.docx", 5 * kChunk + 12345},
  };
  std::unique_ptr<Client> sender = Open(kH49);
  std::unique_ptr<Client> recipient = Open(kG22);
  ASSERT_NE(sender, nullptr);
  ASSERT_NE(recipient, nullptr);

  v1::Document doc = NewDocument(kG22, "Hồ sơ kèm tệp");
  std::vector<std::string> contents;
  for (size_t i = 0; i < cases.size(); ++i) {
    contents.push_back(Content(cases[i].size, 100 + i));
    std::string path = WriteTemp(cases[i].name, contents[i]);
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentSource> source,
                         FileSource(path));
    TransferProgress last;
    ASSERT_OK_AND_ASSIGN(v1::Attachment a,
                         sender->UploadAttachment(
                             *source, cases[i].name, "application/octet-stream",
                             [&](const TransferProgress& p) { last = p; }));
    EXPECT_TRUE(a.stored());
    EXPECT_TRUE(a.content().empty());
    EXPECT_EQ(a.name(), cases[i].name);
    EXPECT_EQ(a.size(), cases[i].size);
    EXPECT_EQ(a.sha256(), Sha256HexOf(contents[i]));
    EXPECT_EQ(last.total, cases[i].size);
    EXPECT_EQ(last.bytes, cases[i].size) << cases[i].name;
    *doc.add_attachments() = a;
  }
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt, sender->Send(doc));

  // The sender's status lists them, without content.
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status,
                       sender->GetDocumentStatus(receipt.document_id));
  ASSERT_THAT(status.attachments(), SizeIs(cases.size()));
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(status.attachments(i).sha256(), Sha256HexOf(contents[i]));
    EXPECT_TRUE(status.attachments(i).stored());
  }

  IncomingDocument got = FetchDocument(*recipient, receipt.document_id);
  ASSERT_EQ(got.document.id(), receipt.document_id);
  EXPECT_EQ(got.signed_by, "spiffe://lienthong.local/org/000.00.00.H49");
  ASSERT_THAT(got.document.attachments(), SizeIs(cases.size()));
  for (size_t i = 0; i < cases.size(); ++i) {
    const v1::Attachment& a = got.document.attachments(i);
    SCOPED_TRACE(cases[i].name);
    EXPECT_EQ(a.name(), cases[i].name);
    EXPECT_TRUE(a.stored());
    EXPECT_TRUE(a.content().empty());
    EXPECT_EQ(a.size(), cases[i].size);
    EXPECT_EQ(a.sha256(), Sha256HexOf(contents[i]));
    std::string out = absl::StrCat(work_.path(), "/nhan-", cases[i].name);
    ASSERT_OK(recipient->DownloadAttachmentToFile(got.document.id(), a, out));
    ASSERT_OK_AND_ASSIGN(std::string downloaded, ReadFile(out));
    EXPECT_EQ(downloaded.size(), contents[i].size());
    EXPECT_TRUE(downloaded == contents[i]) << "the bytes differ";
    EXPECT_FALSE(std::filesystem::exists(out + ".part"));
  }
  // A .part someone made a link to another file is not written through.
  const std::string victim = work_.path() + "/khac.txt";
  { std::ofstream(victim) << "giữ nguyên"; }
  const std::string out = work_.path() + "/qua-lien-ket";
  std::filesystem::create_symlink(victim, out + ".part");
  EXPECT_THAT(recipient->DownloadAttachmentToFile(
                  got.document.id(), got.document.attachments(0), out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(".part")));
  ASSERT_OK_AND_ASSIGN(std::string kept, ReadFile(victim));
  EXPECT_EQ(kept, "giữ nguyên");
  EXPECT_FALSE(std::filesystem::exists(out));
}

// ---- 2. A multi-gigabyte sparse attachment --------------------------------

BrokerOptions LargeAttachments() {
  BrokerOptions o;
  o.config_yaml =
      absl::StrCat("attachments: {max_bytes: ", uint64_t{3} << 30, "}\n");
  return o;
}

class LargeAttachmentTest : public AttachmentsTest {
 protected:
  LargeAttachmentTest() : AttachmentsTest(LargeAttachments()) {}
};

TEST_F(LargeAttachmentTest, ASparseTwoAndAHalfGibFileRoundTrips) {
  constexpr uint64_t kSize = (uint64_t{5} << 30) / 2;  // 2.5 GiB
  struct statvfs fs;
  ASSERT_EQ(::statvfs(work_.path().c_str(), &fs), 0);
  const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  if (free_bytes < (uint64_t{8} << 30)) {
    GTEST_SKIP() << "needs 8 GiB free in " << work_.path() << " (the broker "
                 << "stores 2.5 GiB); only " << (free_bytes >> 20)
                 << " MiB are";
  }
  // Holes, and a few bytes that are not zero: at both ends, across a chunk
  // boundary, and at 2^31 (offsets that overflow 32-bit signed integers).
  const std::string path = work_.path() + "/ban-do.tif";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(kSize)), 0);
  const std::vector<std::pair<uint64_t, std::string>> marks = {
      {0, "LT"},
      {(1 << 20) - 1, "biên"},
      {(uint64_t{1} << 30) + 12345, "giữa"},
      {uint64_t{1} << 31, "2^31"},
      {kSize - 3, "end"},
  };
  for (const auto& [at, text] : marks) {
    ASSERT_EQ(::pwrite(fd, text.data(), text.size(), static_cast<off_t>(at)),
              static_cast<ssize_t>(text.size()));
  }
  ::close(fd);
  const absl::Time start = absl::Now();
  ASSERT_OK_AND_ASSIGN(const std::string expected, Sha256OfFile(path));

  std::unique_ptr<Client> sender = Open(kG22);
  std::unique_ptr<Client> recipient = Open(kH49);
  ASSERT_NE(sender, nullptr);
  ASSERT_NE(recipient, nullptr);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentSource> source,
                       FileSource(path));
  ASSERT_OK_AND_ASSIGN(
      v1::Attachment a,
      sender->UploadAttachment(*source, "ban-do.tif", "image/tiff"));
  const absl::Duration uploaded = absl::Now() - start;
  EXPECT_EQ(a.size(), kSize);
  EXPECT_EQ(a.sha256(), expected);
  v1::Document doc = NewDocument(kH49, "Bản đồ quy hoạch");
  *doc.add_attachments() = a;
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt, sender->Send(doc));

  IncomingDocument got = FetchDocument(*recipient, receipt.document_id);
  ASSERT_THAT(got.document.attachments(), SizeIs(1));
  EXPECT_FALSE(got.signed_by.empty());
  DigestSink sink;
  ASSERT_OK(recipient->DownloadAttachment(receipt.document_id,
                                          got.document.attachments(0), sink));
  EXPECT_EQ(sink.offset(), kSize);
  EXPECT_EQ(sink.HexDigest(), expected);
  const absl::Duration took = absl::Now() - start;
  std::printf("2.5 GiB: hashed and uploaded in %s, round trip in %s\n",
              absl::FormatDuration(uploaded).c_str(),
              absl::FormatDuration(took).c_str());
}

// ---- 3. A damaged chunk ---------------------------------------------------

TEST_F(AttachmentsTest, ADamagedChunkIsRefusedAndCannotBeReferenced) {
  const std::string content = Content(2 * kChunk + 100, 3);
  const std::string sha256 = Sha256HexOf(content);
  std::unique_ptr<RawUpload> call = StartRawUpload(kH49, content);
  UploadStream* stream = call->stream.get();
  EXPECT_EQ(call->first.chunk_size(), kChunk);
  EXPECT_EQ(call->first.durable_bytes(), 0u);
  // Chunk 0's data with the hash of other data.
  v1::UploadRequest damaged = ChunkOf(content, 0, kChunk);
  damaged.mutable_chunk()->set_sha256(Sha256HexOf("something else"));
  stream->Write(damaged);
  v1::UploadResponse extra;
  EXPECT_FALSE(stream->Read(&extra))
      << "an answer after a damaged chunk: " << extra.ShortDebugString();
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("chunk 0"));

  // A document referencing it is refused; nothing is stored.
  std::unique_ptr<Client> sender = Open(kH49);
  ASSERT_NE(sender, nullptr);
  v1::Document doc = NewDocument(kG22, "Tệp hỏng");
  AddStoredAttachment(&doc, "hong.bin", sha256, content.size());
  EXPECT_THAT(sender->Send(doc),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("attachments[0]"), HasSubstr(sha256))));
  EXPECT_EQ(InboxTotal(kG22), 0u);

  // The content itself, sent intact, is taken from the start.
  StringSource source(content);
  uint64_t resumed = ~uint64_t{0};
  ASSERT_OK_AND_ASSIGN(
      v1::Attachment good,
      sender->UploadAttachment(source, "hong.bin", "application/octet-stream",
                               [&](const TransferProgress& p) {
                                 resumed = std::min(resumed, p.resumed);
                               }));
  EXPECT_EQ(resumed, 0u);
  EXPECT_EQ(good.sha256(), sha256);
}

TEST_F(AttachmentsTest, AnUploaderWaitingAfterItsLastChunkGetsTheEnd) {
  // A client of the generated code that sends every chunk and then waits
  // for the answers before closing its side: the broker reads no further
  // than the last chunk, answers and ends the call.
  const std::string content = Content(3 * kChunk + 5, 11);
  std::unique_ptr<RawUpload> call = StartRawUpload(kH49, content);
  UploadStream* stream = call->stream.get();
  v1::UploadResponse last = call->first;
  for (uint64_t at = 0; at < content.size(); at += kChunk) {
    ASSERT_TRUE(stream->Write(
        ChunkOf(content, at, std::min<uint64_t>(kChunk, content.size() - at))));
  }
  const absl::Time start = absl::Now();
  for (v1::UploadResponse r; stream->Read(&r);) last = r;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10))
      << "the broker held the call open after the last chunk";
  EXPECT_TRUE(last.complete()) << last.ShortDebugString();
  EXPECT_EQ(last.durable_bytes(), content.size());
  grpc::Status s = stream->Finish();
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
}

// The broker does not hash a chunk again for a downloader that checks it by
// its state (the SDK does): damage on the broker's disk is found there,
// naming the chunk, and nothing of it is kept.
TEST_F(AttachmentsTest, AMalformedUploadMessageIsRefusedNamingIt) {
  // The broker reads uploads off the wire itself (the chunk's bytes where
  // gRPC received them): what protobuf would not read, it refuses.
  const std::string content = Content(2 * kChunk + 100, 8);
  const std::string sha256 = Sha256HexOf(content);
  std::shared_ptr<grpc::Channel> channel =
      RawChannel(broker_.endpoint(), absl::StrCat("orgs/", kH49));
  const grpc::internal::RpcMethod method(
      attachment_wire::kUploadMethod,
      grpc::internal::RpcMethod::BIDI_STREAMING);
  auto raw_upload = [&](grpc::ClientContext* context) {
    return std::unique_ptr<
        grpc::ClientReaderWriter<grpc::ByteBuffer, v1::UploadResponse>>(
        grpc::internal::ClientReaderWriterFactory<
            grpc::ByteBuffer, v1::UploadResponse>::Create(channel.get(), method,
                                                          context));
  };
  {
    grpc::ClientContext context;
    SetDeadline(context, kWait);
    auto stream = raw_upload(&context);
    ASSERT_TRUE(stream->Write(
        attachment_wire::Serialize(StartOf(sha256, content.size()))));
    v1::UploadResponse first;
    ASSERT_TRUE(stream->Read(&first));
    // A chunk field whose length runs past the message's end.
    grpc::Slice cut(std::string("\x12\x05\x08\x00", 4));
    stream->Write(grpc::ByteBuffer(&cut, 1));
    v1::UploadResponse extra;
    EXPECT_FALSE(stream->Read(&extra)) << extra.ShortDebugString();
    grpc::Status s = stream->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
    EXPECT_THAT(s.error_message(),
                HasSubstr("malformed lienthong.v1.UploadRequest"));
  }
  {
    // A first message with a chunk besides its start.
    grpc::ClientContext context;
    SetDeadline(context, kWait);
    auto stream = raw_upload(&context);
    v1::UploadRequest both = ChunkOf(content, 0, kChunk);
    const v1::UploadRequest start = StartOf(sha256, content.size());
    std::string bytes = start.SerializeAsString() + both.SerializeAsString();
    grpc::Slice slice(bytes);
    stream->Write(grpc::ByteBuffer(&slice, 1));
    v1::UploadResponse answer;
    EXPECT_FALSE(stream->Read(&answer)) << answer.ShortDebugString();
    grpc::Status s = stream->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("the first message must be"));
  }
  // Nothing of it is usable; sent intact, it is taken.
  std::unique_ptr<Client> sender = Open(kH49);
  ASSERT_NE(sender, nullptr);
  StringSource source(content);
  ASSERT_OK_AND_ASSIGN(
      v1::Attachment good,
      sender->UploadAttachment(source, "ok.bin", "application/octet-stream"));
  EXPECT_EQ(good.sha256(), sha256);
}

TEST_F(AttachmentsTest, AnUploadNamedAtEndIsCheckedAndNamedByItsLastChunk) {
  const std::string content = Content(2 * kChunk + 100, 9);
  const std::string sha256 = Sha256HexOf(content);
  auto stub = RawStub(kG22);
  // Starts that mix the two ways are refused naming the field.
  auto start = [&](const std::string& sha, bool named_at_end,
                   const std::string& key) {
    v1::UploadRequest request = StartOf(sha, content.size());
    request.mutable_start()->set_named_at_end(named_at_end);
    request.mutable_start()->set_upload_key(key);
    return request;
  };
  const std::pair<v1::UploadRequest, const char*> refused[] = {
      {start(sha256, true, "k"), "start.sha256"},
      {start(sha256, false, "k"), "start.upload_key"},
      {start("", true, ""), "start.upload_key"},
  };
  for (const auto& [request, field] : refused) {
    SCOPED_TRACE(request.ShortDebugString());
    grpc::ClientContext context;
    SetDeadline(context, kWait);
    std::unique_ptr<UploadStream> stream = stub->Upload(&context);
    ASSERT_TRUE(stream->Write(request));
    v1::UploadResponse r;
    EXPECT_FALSE(stream->Read(&r)) << r.ShortDebugString();
    grpc::Status s = stream->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(field));
  }
  // A client that sends each chunk with its own sha256: the broker names
  // the content by what came.
  grpc::ClientContext context;
  SetDeadline(context, kWait);
  std::unique_ptr<UploadStream> stream = stub->Upload(&context);
  ASSERT_TRUE(stream->Write(start("", true, "raw-1")));
  v1::UploadResponse last;
  ASSERT_TRUE(stream->Read(&last));
  EXPECT_EQ(last.durable_bytes(), 0u);
  EXPECT_FALSE(last.complete());
  for (uint64_t at = 0; at < content.size(); at += kChunk)
    ASSERT_TRUE(stream->Write(ChunkOf(content, at, kChunk)));
  stream->WritesDone();
  for (v1::UploadResponse r; stream->Read(&r);) last = r;
  ASSERT_TRUE(stream->Finish().ok());
  EXPECT_TRUE(last.complete());
  EXPECT_EQ(last.sha256(), sha256);
  // The uploader may reference it by that name.
  v1::Document doc = NewDocument(kH49, "Tải lên thô");
  AddStoredAttachment(&doc, "tho.bin", sha256, content.size());
  std::unique_ptr<Client> sender = Open(kG22);
  ASSERT_NE(sender, nullptr);
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt, sender->Send(doc));
  std::unique_ptr<Client> recipient = Open(kH49);
  ASSERT_NE(recipient, nullptr);
  ExpectItsAttachmentDownloads(*recipient, receipt.document_id, content,
                               "tho.bin");
}

TEST_F(AttachmentsTest,
       ContentDamagedInTheBrokersStoreIsRefusedByTheRecipient) {
  const std::string content = Content(3 * kChunk + 10, 6);
  std::unique_ptr<Client> sender = Open(kH49);
  std::unique_ptr<Client> recipient = Open(kG22);
  ASSERT_NE(sender, nullptr);
  ASSERT_NE(recipient, nullptr);
  v1::Attachment a;
  SendReceipt receipt;
  ASSERT_NO_FATAL_FAILURE(
      SendWithAttachment(*sender, kG22, content, "hong.bin", &a, &receipt));
  const std::string blob =
      absl::StrCat(broker_.data_dir(), "/attachments/blobs/",
                   a.sha256().substr(0, 2), "/", a.sha256());
  {
    // One bit of chunk 1 flipped.
    std::FILE* f = std::fopen(blob.c_str(), "r+b");
    ASSERT_NE(f, nullptr) << blob;
    ASSERT_EQ(std::fseek(f, static_cast<long>(kChunk + 5), SEEK_SET), 0);
    const int c = std::fgetc(f);
    ASSERT_NE(c, EOF);
    ASSERT_EQ(std::fseek(f, static_cast<long>(kChunk + 5), SEEK_SET), 0);
    std::fputc(c ^ 0x01, f);
    std::fclose(f);
  }
  IncomingDocument got = FetchDocument(*recipient, receipt.document_id);
  ASSERT_THAT(got.document.attachments(), SizeIs(1));
  const std::string out = work_.path() + "/hong.bin";
  EXPECT_THAT(recipient->DownloadAttachmentToFile(
                  receipt.document_id, got.document.attachments(0), out),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr(absl::StrCat("offset ", kChunk))));
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out + ".part"));
}

// ---- 4. Interrupted on the client, resumed --------------------------------

// Fails once with INTERNAL (not retried by the SDK) when the upload, after
// the SDK has read the end of the content (to hash the whole, or for the
// upload's key), asks for the chunk at `fail_at` or beyond, and only once
// the broker has written everything sent before it (so that the failure is
// the source's, not a race with the network).
class FailingSource : public StringSource {
 public:
  FailingSource(std::string content, uint64_t fail_at, std::string partial_dir)
      : StringSource(std::move(content)),
        fail_at_(fail_at),
        partial_dir_(std::move(partial_dir)) {}

  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) override {
    if (hashed_ && !failed_ && offset >= fail_at_ && offset < size()) {
      failed_ = true;
      sent_before_failure_ = offset;
      broker_had_it_ =
          Eventually([&] { return PartialBytes() >= offset; }, kWait);
      return absl::InternalError("simulated: the disk holding the scan failed");
    }
    if (offset + length == size()) hashed_ = true;  // the SDK's first pass
    return StringSource::Read(offset, length);
  }

  bool failed() const { return failed_; }
  bool broker_had_it() const { return broker_had_it_; }
  uint64_t sent_before_failure() const { return sent_before_failure_; }

 private:
  // Bytes of the broker's file of this upload in progress (the only one).
  uint64_t PartialBytes() const {
    std::error_code ec;
    for (const auto& e :
         std::filesystem::directory_iterator(partial_dir_, ec)) {
      return e.file_size(ec);
    }
    return 0;
  }

  const uint64_t fail_at_;
  const std::string partial_dir_;
  bool hashed_ = false;
  bool failed_ = false;
  bool broker_had_it_ = false;
  uint64_t sent_before_failure_ = 0;
};

constexpr uint64_t kResumedSize = 64 * kChunk;  // 4 MiB

class InterruptedUploadTest : public AttachmentsTest {
 protected:
  struct Resumed {
    uint64_t bytes_read = 0;  // by the second upload
    uint64_t resumed = 0;     // bytes it found durable
  };
  // An upload of kResumedSize bytes with `options` that fails at 60 %,
  // then a new one of the same content (as from a new process), sent and
  // downloaded by its recipient.
  Resumed InterruptAtSixtyPercentAndResume(const UploadOptions& options,
                                           uint32_t seed);
  std::string PartialDir() const {
    return broker_.data_dir() + "/attachments/partial";
  }
};

InterruptedUploadTest::Resumed
InterruptedUploadTest::InterruptAtSixtyPercentAndResume(
    const UploadOptions& options, uint32_t seed) {
  constexpr uint64_t kSize = kResumedSize;
  const std::string content = Content(kSize, seed);
  std::unique_ptr<Client> sender = Open(kG22);
  EXPECT_NE(sender, nullptr);
  if (sender == nullptr) return {};

  FailingSource failing(content, kSize * 6 / 10, PartialDir());
  absl::StatusOr<v1::Attachment> first =
      sender->UploadAttachment(failing, "quet.pdf", "application/pdf", options);
  EXPECT_TRUE(failing.failed());
  if (!failing.failed()) return {};
  EXPECT_TRUE(failing.broker_had_it())
      << "the broker did not write the first " << failing.sent_before_failure()
      << " bytes within " << absl::FormatDuration(kWait);
  EXPECT_THAT(first, StatusIs(absl::StatusCode::kInternal,
                              HasSubstr("the disk holding the scan failed")));
  const uint64_t sent = failing.sent_before_failure();
  EXPECT_GE(sent, kSize * 6 / 10);

  StringSource again(content);
  uint64_t resumed = 0;
  uint64_t bytes_at_first_answer = ~uint64_t{0};
  absl::StatusOr<v1::Attachment> a = sender->UploadAttachment(
      again, "quet.pdf", "application/pdf", options,
      [&](const TransferProgress& p) {
        resumed = std::max(resumed, p.resumed);
        bytes_at_first_answer = std::min(bytes_at_first_answer, p.bytes);
      });
  EXPECT_OK(a);
  if (!a.ok()) return {};
  EXPECT_EQ(a->sha256(), Sha256HexOf(content));
  // Everything durable was kept: at least what the syncs made durable, at
  // most what was sent.
  EXPECT_GE(resumed, kSize / 2);
  EXPECT_GE(resumed, sent / kSync * kSync);
  EXPECT_LE(resumed, sent);
  EXPECT_EQ(bytes_at_first_answer, resumed);

  v1::Document doc = NewDocument(kH49, "Bản quét");
  *doc.add_attachments() = *a;
  absl::StatusOr<SendReceipt> receipt = sender->Send(doc);
  EXPECT_OK(receipt);
  std::unique_ptr<Client> recipient = Open(kH49);
  EXPECT_NE(recipient, nullptr);
  if (receipt.ok() && recipient != nullptr) {
    ExpectItsAttachmentDownloads(*recipient, receipt->document_id, content,
                                 "quet.pdf");
  }
  return {again.bytes_read(), resumed};
}

TEST_F(InterruptedUploadTest, AnUploadInterruptedAtSixtyPercentResumes) {
  // Named at end (the SDK's default): a new process finds what is durable
  // by the upload's key.
  Resumed r = InterruptAtSixtyPercentAndResume(UploadOptions(), 4);
  // What the broker lacked was sent, not the rest again: the second upload
  // read the first and last MiB (its key), what the broker held once (to
  // check it is this content's beginning), then what the broker lacked.
  EXPECT_EQ(r.bytes_read, (2 << 20) + kResumedSize);
  EXPECT_GE(r.resumed, kResumedSize / 2);
}

TEST_F(InterruptedUploadTest, AnUploadHashedFirstResumesByItsHash) {
  UploadOptions hash_first;
  hash_first.hash_first = true;
  Resumed r = InterruptAtSixtyPercentAndResume(hash_first, 5);
  // The whole read once to hash it, then only what the broker lacked.
  EXPECT_EQ(r.bytes_read, kResumedSize + (kResumedSize - r.resumed));
  EXPECT_GE(r.resumed, kResumedSize / 2);
}

TEST_F(InterruptedUploadTest, AnotherContentUnderTheSameUploadKeyStartsOver) {
  // Two contents of one size with the same first and last MiB (the SDK's
  // upload key): the second finds the first's durable beginning under its
  // key, sees it is not its own, and starts over.
  constexpr uint64_t kSize = 64 * kChunk;
  const std::string first = Content(kSize, 6);
  std::string second = first;
  second[kSize / 2] ^= 0x01;
  std::unique_ptr<Client> sender = Open(kG22);
  ASSERT_NE(sender, nullptr);
  FailingSource failing(first, kSize * 6 / 10, PartialDir());
  EXPECT_THAT(sender->UploadAttachment(failing, "a.pdf", "application/pdf"),
              StatusIs(absl::StatusCode::kInternal));
  ASSERT_TRUE(failing.failed());
  ASSERT_TRUE(failing.broker_had_it());

  StringSource source(second);
  uint64_t resumed = 0;
  ASSERT_OK_AND_ASSIGN(
      v1::Attachment a,
      sender->UploadAttachment(source, "b.pdf", "application/pdf",
                               [&](const TransferProgress& p) {
                                 resumed = std::max(resumed, p.resumed);
                               }));
  EXPECT_EQ(a.sha256(), Sha256HexOf(second));
  EXPECT_EQ(a.size(), kSize);
  // Nothing of the first content counted as this one's.
  EXPECT_EQ(resumed, 0u);
  v1::Document doc = NewDocument(kH49, "Bản thứ hai");
  *doc.add_attachments() = a;
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt, sender->Send(doc));
  std::unique_ptr<Client> recipient = Open(kH49);
  ASSERT_NE(recipient, nullptr);
  ExpectItsAttachmentDownloads(*recipient, receipt.document_id, second,
                               "b.pdf");
}

// ---- 5. kill -9 in the middle of an upload --------------------------------

TEST_F(AttachmentsTest, KillNineMidUploadLosesNothingAcknowledged) {
  constexpr uint64_t kSize = 128 * kChunk;  // 8 MiB
  // At most this much is sent ahead of the broker's acknowledgements, so
  // that the kill lands in the middle of the upload.
  constexpr uint64_t kWindow = 4 * kChunk;
  const std::string content = Content(kSize, 5);
  const std::string sha256 = Sha256HexOf(content);

  uint64_t acked_before_kill = 0;
  uint64_t sent_before_kill = 0;
  bool reached = false;
  grpc::Status killed_stream;
  {
    auto stub = RawStub(kG22);
    grpc::ClientContext context;
    SetDeadline(context, absl::Seconds(60));
    std::unique_ptr<UploadStream> stream = stub->Upload(&context);
    ASSERT_TRUE(stream->Write(StartOf(sha256, kSize)));
    v1::UploadResponse first;
    ASSERT_TRUE(stream->Read(&first));
    ASSERT_EQ(first.chunk_size(), kChunk);
    ASSERT_EQ(first.durable_bytes(), 0u);

    std::atomic<uint64_t> acked{0};
    std::atomic<bool> complete{false};
    std::thread reader([&] {
      v1::UploadResponse r;
      while (stream->Read(&r)) {
        if (r.durable_bytes() > acked.load()) acked.store(r.durable_bytes());
        if (r.complete()) complete.store(true);
      }
    });
    uint64_t at = 0;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline && at < kSize) {
      if (acked.load() >= kSize * 4 / 10) {
        reached = true;
        break;
      }
      if (at - std::min(at, acked.load()) >= kWindow) {
        absl::SleepFor(absl::Milliseconds(1));
        continue;
      }
      if (!stream->Write(ChunkOf(content, at, kChunk))) break;
      at += kChunk;
    }
    sent_before_kill = at;
    broker_.Kill9();
    reader.join();  // the connection is gone: Read ends
    killed_stream = stream->Finish();
    acked_before_kill = acked.load();
    EXPECT_FALSE(complete.load());
  }
  std::printf("kill -9 with %llu bytes acknowledged durable, %llu sent\n",
              static_cast<unsigned long long>(acked_before_kill),
              static_cast<unsigned long long>(sent_before_kill));
  ASSERT_TRUE(reached) << "no acknowledgement of 40% within 30 s; "
                       << acked_before_kill << " bytes acknowledged, "
                       << sent_before_kill << " sent";
  EXPECT_FALSE(killed_stream.ok());
  EXPECT_LT(acked_before_kill, kSize);
  ASSERT_OK(broker_.Start());

  // The same upload again: nothing acknowledged was lost.
  {
    auto stub = RawStub(kG22);
    grpc::ClientContext context;
    SetDeadline(context, absl::Seconds(60));
    std::unique_ptr<UploadStream> stream = stub->Upload(&context);
    ASSERT_TRUE(stream->Write(StartOf(sha256, kSize)));
    v1::UploadResponse first;
    ASSERT_TRUE(stream->Read(&first)) << stream->Finish().error_message();
    std::printf("after the restart: %llu bytes durable\n",
                static_cast<unsigned long long>(first.durable_bytes()));
    EXPECT_GE(first.durable_bytes(), acked_before_kill);
    EXPECT_LE(first.durable_bytes(), sent_before_kill);
    EXPECT_EQ(first.resumed_bytes(), first.durable_bytes());
    EXPECT_FALSE(first.complete());
    ASSERT_EQ(first.chunk_size(), kChunk);
    ASSERT_EQ(first.durable_bytes() % kChunk, 0u);
    for (uint64_t at = first.durable_bytes(); at < kSize; at += kChunk) {
      ASSERT_TRUE(stream->Write(ChunkOf(content, at, kChunk)))
          << stream->Finish().error_message();
    }
    stream->WritesDone();
    v1::UploadResponse last = first;
    for (v1::UploadResponse r; stream->Read(&r);) last = r;
    grpc::Status s = stream->Finish();
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_TRUE(last.complete());
    EXPECT_EQ(last.durable_bytes(), kSize);
  }

  // A document of the uploader referencing it is accepted, and downloads
  // identical.
  std::unique_ptr<Client> sender = Open(kG22);
  std::unique_ptr<Client> recipient = Open(kH49);
  ASSERT_NE(sender, nullptr);
  ASSERT_NE(recipient, nullptr);
  v1::Document doc = NewDocument(kH49, "Sau sự cố");
  AddStoredAttachment(&doc, "sau-su-co.bin", sha256, kSize);
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt, sender->Send(doc));
  ExpectItsAttachmentDownloads(*recipient, receipt.document_id, content,
                               "sau-su-co.bin");
}

// A download broken off by a broker killed with kill -9 goes on, once the
// broker is back, from the last chunk the sink took: nothing is received
// twice, and the whole arrives intact.
TEST_F(AttachmentsTest, ADownloadBrokenOffByAKillNineGoesOnWhereItStood) {
  // Far more than the HTTP/2 window and the socket buffers hold, so that
  // most of it is still at the broker when it dies.
  constexpr uint64_t kSize = 28 << 20;
  constexpr uint64_t kBreakAt = 3 << 20;
  const std::string content = Content(kSize, 12);
  std::unique_ptr<Client> sender = Open(kG22);
  std::unique_ptr<Client> recipient = Open(kH49);
  ASSERT_NE(sender, nullptr);
  ASSERT_NE(recipient, nullptr);
  v1::Attachment a;
  SendReceipt receipt;
  ASSERT_NO_FATAL_FAILURE(SendWithAttachment(*sender, kH49, content,
                                             "dut-quang.bin", &a, &receipt));
  IncomingDocument got = FetchDocument(*recipient, receipt.document_id);
  ASSERT_THAT(got.document.attachments(), SizeIs(1));

  // Keeps what it is given; past kBreakAt, kills the broker and starts it
  // again (the SDK's next try finds it back).
  class BreakingSink : public AttachmentSink {
   public:
    explicit BreakingSink(std::function<void()> at_break)
        : at_break_(std::move(at_break)) {}
    uint64_t offset() const override { return content_.size(); }
    absl::Status Write(absl::string_view data) override {
      content_.append(data.data(), data.size());
      if (!broke_ && content_.size() >= kBreakAt) {
        broke_ = true;
        broke_at_ = content_.size();
        at_break_();
      }
      return absl::OkStatus();
    }
    const std::string& content() const { return content_; }
    uint64_t broke_at() const { return broke_at_; }

   private:
    std::function<void()> at_break_;
    std::string content_;
    bool broke_ = false;
    uint64_t broke_at_ = 0;
  };
  BreakingSink sink([this] {
    broker_.Kill9();
    EXPECT_OK(broker_.Start());
  });
  std::vector<uint64_t> attempts_from;  // where each try started
  ASSERT_OK(recipient->DownloadAttachment(
      receipt.document_id, got.document.attachments(0), sink,
      [&](const TransferProgress& p) {
        if (attempts_from.empty() || p.resumed != attempts_from.back())
          attempts_from.push_back(p.resumed);
      }));
  ASSERT_GT(sink.broke_at(), 0u) << "the sink never reached the break";
  std::printf("kill -9 with %llu bytes taken by the sink; tries from %s\n",
              static_cast<unsigned long long>(sink.broke_at()),
              absl::StrJoin(attempts_from, ", ").c_str());
  EXPECT_TRUE(sink.content() == content) << "the bytes differ";
  // A second try, from where the sink stood when the connection broke: at
  // or after the break, at a chunk's start, short of the end.
  ASSERT_THAT(attempts_from, SizeIs(2));
  EXPECT_EQ(attempts_from[0], 0u);
  EXPECT_GE(attempts_from[1], sink.broke_at());
  EXPECT_LT(attempts_from[1], kSize);
  EXPECT_EQ(attempts_from[1] % kChunk, 0u);
}

// ---- 6. Who may download and reference what; limits ------------------------

TEST_F(AttachmentsTest, OnlyTheSenderAndRecipientsDownload) {
  std::unique_ptr<Client> sender = Open(kG22);
  std::unique_ptr<Client> recipient = Open(kH49);
  std::unique_ptr<Client> outsider = Open(kH50);
  ASSERT_NE(sender, nullptr);
  ASSERT_NE(recipient, nullptr);
  ASSERT_NE(outsider, nullptr);
  const std::string content = Content(3 * kChunk + 7, 6);
  v1::Attachment a;
  SendReceipt receipt;
  ASSERT_NO_FATAL_FAILURE(
      SendWithAttachment(*sender, kH49, content, "mat.bin", &a, &receipt));

  DigestSink outsider_sink;
  EXPECT_THAT(
      outsider->DownloadAttachment(receipt.document_id, a, outsider_sink),
      StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(outsider_sink.offset(), 0u);
  const std::string outsider_path = work_.path() + "/h50.bin";
  EXPECT_THAT(
      outsider->DownloadAttachmentToFile(receipt.document_id, a, outsider_path),
      StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(std::filesystem::exists(outsider_path));

  // The recipient and the sender may.
  for (Client* c : {recipient.get(), sender.get()}) {
    DigestSink sink;
    EXPECT_OK(c->DownloadAttachment(receipt.document_id, a, sink)) << c->org();
    EXPECT_EQ(sink.HexDigest(), Sha256HexOf(content)) << c->org();
  }

  // Every read and every refused try is in the document's evidence: who,
  // which content, how much, and the outcome.
  ASSERT_OK_AND_ASSIGN(std::vector<v1::AuditEntry> entries,
                       AttachmentReads(*sender, receipt.document_id));
  std::vector<std::string> reads;
  for (const v1::AuditEntry& e : entries) {
    EXPECT_THAT(e.detail(), HasSubstr(a.sha256())) << e.DebugString();
    reads.push_back(absl::StrCat(e.org(), " ", e.outcome()));
    if (e.outcome() == "OK") {
      EXPECT_THAT(e.detail(),
                  HasSubstr(absl::StrCat(content.size(), " bytes sent")))
          << e.DebugString();
    }
  }
  EXPECT_THAT(reads, ::testing::ElementsAre(absl::StrCat(kH50, " NOT_FOUND"),
                                            absl::StrCat(kH50, " NOT_FOUND"),
                                            absl::StrCat(kH49, " OK"),
                                            absl::StrCat(kG22, " OK")));
}

TEST_F(AttachmentsTest, AnOutsidersRefusedTriesDoNotGrowTheEvidenceUnbounded) {
  // Anyone who learns a document's id can try to download its attachment;
  // each try is audited, but only the first ten of a caller a day go into
  // the document's evidence, which must stay small enough to export.
  std::unique_ptr<Client> sender = Open(kG22);
  std::unique_ptr<Client> outsider = Open(kH50);
  ASSERT_NE(sender, nullptr);
  ASSERT_NE(outsider, nullptr);
  v1::Attachment a;
  SendReceipt receipt;
  ASSERT_NO_FATAL_FAILURE(SendWithAttachment(
      *sender, kH49, Content(kChunk + 3, 12), "bi-mat.bin", &a, &receipt));
  for (int i = 0; i < 14; ++i) {
    DigestSink sink;
    ASSERT_THAT(outsider->DownloadAttachment(receipt.document_id, a, sink),
                StatusIs(absl::StatusCode::kNotFound));
  }
  ASSERT_OK_AND_ASSIGN(std::vector<v1::AuditEntry> reads,
                       AttachmentReads(*sender, receipt.document_id));
  int refused = 0;
  for (const v1::AuditEntry& e : reads) {
    if (e.org() == kH50 && e.outcome() == "NOT_FOUND") ++refused;
  }
  EXPECT_EQ(refused, 10);
}

BrokerOptions TwoTransferCalls() {
  BrokerOptions o = SmallChunks();
  o.config_yaml = absl::StrCat(
      "attachments: {chunk_bytes: ", kChunk, ", sync_bytes: ", kSync,
      ", max_bytes: ", kMaxBytes, ", max_transfer_calls: 2}\n");
  return o;
}

TEST_F(AttachmentsTest, AFileWrittenWhileItIsSentIsRefused) {
  // Each byte is read once, as it is sent: a file someone writes meanwhile
  // would go out as a mix of two versions, under a hash of that mix.
  const std::string content = Content(64 * kChunk, 12);
  const std::string path = WriteTemp("dang-sua.pdf", content);
  // Last written long ago, so that a write now moves its modification time.
  const struct timespec long_ago[2] = {{1600000000, 0}, {1600000000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), long_ago, 0), 0);
  std::unique_ptr<Client> sender = Open(kG22);
  ASSERT_NE(sender, nullptr);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AttachmentSource> source,
                       FileSource(path));
  bool written = false;
  absl::StatusOr<v1::Attachment> a = sender->UploadAttachment(
      *source, "dang-sua.pdf", "application/pdf",
      [&](const TransferProgress& p) {
        if (written || p.bytes == 0) return;
        written = true;
        int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        ASSERT_GE(fd, 0);
        EXPECT_EQ(::pwrite(fd, "X", 1, static_cast<off_t>(content.size() - 9)),
                  1);
        ::close(fd);
      });
  ASSERT_TRUE(written);
  EXPECT_THAT(a, StatusIs(absl::StatusCode::kDataLoss,
                          AllOf(HasSubstr(path),
                                HasSubstr("changed while it was being sent"))));
}

TEST_F(AttachmentsTest, AnUploaderPastSixteenUploadsWaitsForOneToEnd) {
  // One organization runs at most 16 uploads at once; the SDK's 17th is
  // told to come back (ABORTED) and goes through once one has ended.
  std::vector<std::unique_ptr<RawUpload>> running;
  for (uint32_t i = 0; i < 16; ++i)
    running.push_back(StartRawUpload(kH50, Content(2 * kChunk, 100 + i)));
  std::unique_ptr<Client> h50 = Open(kH50);
  ASSERT_NE(h50, nullptr);
  const std::string content = Content(2 * kChunk, 99);
  absl::Notification done;
  absl::StatusOr<v1::Attachment> uploaded;
  std::thread uploading([&] {
    StringSource source(content);
    uploaded = h50->UploadAttachment(source, "17.bin", "application/pdf");
    done.Notify();
  });
  // It cannot go through while the 16 run.
  EXPECT_FALSE(done.WaitForNotificationWithTimeout(absl::Milliseconds(500)));
  running.front()->stream->WritesDone();
  EXPECT_TRUE(running.front()->stream->Finish().ok());
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(kWait));
  uploading.join();
  ASSERT_OK(uploaded);
  EXPECT_EQ(uploaded->sha256(), Sha256HexOf(content));
  for (size_t i = 1; i < running.size(); ++i) {
    running[i]->context.TryCancel();
    running[i]->stream->Finish();
  }
}

class BusyBrokerTest : public AttachmentsTest {
 protected:
  BusyBrokerTest() : AttachmentsTest(TwoTransferCalls()) {}
};

TEST_F(BusyBrokerTest, UploadCallsPastTheLimitAreToldToComeBack) {
  // Each upload call has a thread at the broker: past
  // attachments.max_transfer_calls they are refused UNAVAILABLE (the SDK
  // retries), and taken again once a running one ends.
  const std::string a = Content(2 * kChunk, 21), b = Content(2 * kChunk, 22);
  std::unique_ptr<RawUpload> first = StartRawUpload(kH49, a);
  std::unique_ptr<RawUpload> second = StartRawUpload(kG22, b);
  {
    auto stub = RawStub(kH50);
    grpc::ClientContext context;
    SetDeadline(context, kWait);
    std::unique_ptr<UploadStream> third = stub->Upload(&context);
    third->Write(StartOf(Sha256HexOf(a), a.size()));
    v1::UploadResponse answer;
    EXPECT_FALSE(third->Read(&answer)) << answer.ShortDebugString();
    grpc::Status s = third->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
        << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("broker busy"));
  }
  // One ends; the SDK's upload is taken.
  first->stream->WritesDone();
  EXPECT_TRUE(first->stream->Finish().ok());
  std::unique_ptr<Client> h50 = Open(kH50);
  ASSERT_NE(h50, nullptr);
  StringSource source(a);
  EXPECT_OK(h50->UploadAttachment(source, "a.bin", "application/pdf"));
  second->context.TryCancel();
  second->stream->Finish();
}

TEST_F(BusyBrokerTest, DownloadCallsPastTheLimitAreToldToComeBack) {
  std::unique_ptr<Client> sender = Open(kG22);
  std::unique_ptr<Client> recipient = Open(kH49);
  ASSERT_NE(sender, nullptr);
  ASSERT_NE(recipient, nullptr);
  const std::string content = Content(kMaxBytes - kChunk, 23);
  v1::Attachment a;
  SendReceipt receipt;
  ASSERT_NO_FATAL_FAILURE(
      SendWithAttachment(*sender, kH49, content, "lon.bin", &a, &receipt));
  // Two downloads that take their first answer and read no further: with a
  // small fixed window they hold the broker's two calls.
  grpc::ChannelArguments small_window;
  small_window.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  small_window.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
  auto stub = v1::AttachmentService::NewStub(RawChannel(
      broker_.endpoint(), absl::StrCat("orgs/", kH49), small_window));
  v1::DownloadRequest request;
  request.set_document_id(receipt.document_id);
  request.set_sha256(a.sha256());
  grpc::ClientContext held[2];
  std::unique_ptr<grpc::ClientReader<v1::DownloadResponse>> readers[2];
  for (int i = 0; i < 2; ++i) {
    SetDeadline(held[i], kWait);
    readers[i] = stub->Download(&held[i], request);
    v1::DownloadResponse first;
    ASSERT_TRUE(readers[i]->Read(&first));
  }
  DigestSink sink;
  ClientOptions impatient = broker_.ClientOptionsFor(kH49);
  impatient.retry_budget = absl::Milliseconds(300);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> busy, Client::Open(impatient));
  EXPECT_THAT(
      busy->DownloadAttachment(receipt.document_id, a, sink),
      StatusIs(absl::StatusCode::kUnavailable, HasSubstr("broker busy")));
  // One ends: the download goes through.
  held[0].TryCancel();
  readers[0]->Finish();
  DigestSink whole;
  EXPECT_OK(recipient->DownloadAttachment(receipt.document_id, a, whole));
  EXPECT_EQ(whole.HexDigest(), Sha256HexOf(content));
  held[1].TryCancel();
  readers[1]->Finish();
}

TEST_F(AttachmentsTest, ASenderMayReferenceOnlyWhatItUploaded) {
  // H50 uploads; G22 references it without having uploaded it.
  std::unique_ptr<Client> uploader = Open(kH50);
  std::unique_ptr<Client> sender = Open(kG22);
  ASSERT_NE(uploader, nullptr);
  ASSERT_NE(sender, nullptr);
  const std::string content = Content(2 * kChunk, 7);
  StringSource source(content);
  ASSERT_OK_AND_ASSIGN(v1::Attachment a,
                       uploader->UploadAttachment(source, "cua-h50.bin",
                                                  "application/octet-stream"));
  v1::Document doc = NewDocument(kH49, "Mượn tệp");
  *doc.add_attachments() = a;
  EXPECT_THAT(
      sender->Send(doc),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("attachments[0]"), HasSubstr("cua-h50.bin"),
                     HasSubstr(a.sha256()), HasSubstr(kG22))));
  EXPECT_EQ(InboxTotal(kH49), 0u);

  // Once G22 has uploaded it itself (the content is compared with the
  // stored one), the same document goes through.
  StringSource own(content);
  ASSERT_OK(
      sender->UploadAttachment(own, "cua-h50.bin", "application/octet-stream")
          .status());
  EXPECT_OK(sender->Send(doc).status());
  EXPECT_EQ(InboxTotal(kH49), 1u);
}

TEST_F(AttachmentsTest, AnAttachmentAboveMaxBytesIsRefusedAtTheStart) {
  // Raw: the start message alone is refused, before any chunk.
  {
    auto stub = RawStub(kG22);
    grpc::ClientContext context;
    SetDeadline(context, kWait);
    std::unique_ptr<UploadStream> stream = stub->Upload(&context);
    ASSERT_TRUE(stream->Write(StartOf(Sha256HexOf("x"), kMaxBytes + 1)));
    v1::UploadResponse r;
    EXPECT_FALSE(stream->Read(&r)) << r.ShortDebugString();
    grpc::Status s = stream->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("attachments.max_bytes"));
  }
  // Through the SDK: of the content only the first and last MiB are read
  // (the upload's key), before the refusal. (A
  // short retry budget: the refusal is an answer, not to be retried; should
  // the SDK retry it, the test fails sooner.)
  ClientOptions options = broker_.ClientOptionsFor(kG22);
  options.retry_budget = absl::Seconds(3);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Client::Open(options));
  StringSource big(Content(kMaxBytes + 1, 8));
  EXPECT_THAT(
      sender->UploadAttachment(big, "qua-lon.bin", "application/octet-stream"),
      StatusIs(absl::StatusCode::kResourceExhausted,
               HasSubstr("attachments.max_bytes")));
  EXPECT_EQ(big.bytes_read(), uint64_t{2} << 20);
  // At the limit it is taken.
  StringSource at_limit(Content(kMaxBytes, 9));
  EXPECT_OK(
      sender
          ->UploadAttachment(at_limit, "vua-du.bin", "application/octet-stream")
          .status());
}

TEST_F(AttachmentsTest, PolicySizeLimitsCountStoredAttachments) {
  // H49 → G22 carries at most 20 MiB (dev policy provinces-report-to-centre).
  std::unique_ptr<Client> sender = Open(kH49);
  ASSERT_NE(sender, nullptr);
  StringSource source(Content(25 << 20, 10));
  ASSERT_OK_AND_ASSIGN(v1::Attachment a,
                       sender->UploadAttachment(source, "25MiB.bin",
                                                "application/octet-stream"));
  v1::Document doc = NewDocument(kG22, "Quá cỡ");
  *doc.add_attachments() = a;
  EXPECT_THAT(sender->Send(doc),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("provinces-report-to-centre")));
  EXPECT_EQ(InboxTotal(kG22), 0u);
}

// ---- 7. The CLI ------------------------------------------------------------

std::string Describe(const ProgramResult& r) {
  return absl::StrCat("exit ", r.exit_code, r.timed_out ? " (timed out)" : "",
                      r.signal ? absl::StrCat(" signal ", r.signal) : "",
                      "\n--- stdout ---\n", r.stdout_text, "--- stderr ---\n",
                      r.stderr_text);
}

TEST_F(AttachmentsTest, CliSendAttachAndDownload) {
  auto cli = [&](const std::string& org, std::vector<std::string> args) {
    std::vector<std::string> argv = {LIENTHONG_CLI_PATH,
                                     "--endpoint",
                                     broker_.endpoint(),
                                     "--cert",
                                     absl::StrCat(pki_, "/orgs/", org, ".pem"),
                                     "--key",
                                     absl::StrCat(pki_, "/orgs/", org, ".key"),
                                     "--ca",
                                     absl::StrCat(pki_, "/ca.pem")};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<ProgramResult> r = RunProgram(argv, absl::Seconds(60));
    EXPECT_OK(r);
    return r.value_or(ProgramResult{});
  };
  const std::string content = Content((5 << 20) + 321, 11);
  const std::string file = WriteTemp("bao-cao-quy.pdf", content);
  const std::string body = WriteTemp("cong-van.txt", "Kính gửi Văn phòng.\n");

  ProgramResult sent = cli(kH49, {"send", "--to", kG22, "--subject",
                                  "Báo cáo quý", "--attach", file, body});
  ASSERT_EQ(sent.exit_code, 0) << Describe(sent);
  std::vector<std::string> words =
      absl::StrSplit(sent.stdout_text, ' ', absl::SkipEmpty());
  ASSERT_GE(words.size(), 2u) << Describe(sent);
  ASSERT_EQ(words[0], "sent") << Describe(sent);
  const std::string id = words[1];

  const std::string out_dir = work_.path() + "/tai-ve";
  ProgramResult downloaded = cli(kG22, {"download", id, "--out", out_dir});
  ASSERT_EQ(downloaded.exit_code, 0) << Describe(downloaded);
  const std::string path = absl::StrCat(out_dir, "/", id, ".bao-cao-quy.pdf");
  EXPECT_THAT(downloaded.stdout_text,
              AllOf(HasSubstr(path), HasSubstr(Sha256HexOf(content)),
                    HasSubstr("verified")));
  ASSERT_OK_AND_ASSIGN(std::string got, ReadFile(path));
  EXPECT_EQ(got.size(), content.size());
  EXPECT_TRUE(got == content) << "the bytes differ";

  // Sent again: hashed first, the file this organization uploaded is not
  // sent again; named at end (the default) it is.
  ProgramResult renewed =
      cli(kH49, {"send", "--to", kG22, "--subject", "Báo cáo quý (bản 2)",
                 "--hash-first", "--attach", file, body});
  ASSERT_EQ(renewed.exit_code, 0) << Describe(renewed);
  EXPECT_THAT(renewed.stderr_text, HasSubstr("MiB already there"));
  ProgramResult resent =
      cli(kH49, {"send", "--to", kG22, "--subject", "Báo cáo quý (bản 3)",
                 "--attach", file, body});
  ASSERT_EQ(resent.exit_code, 0) << Describe(resent);
  EXPECT_THAT(resent.stderr_text, Not(HasSubstr("already there")));
  EXPECT_THAT(resent.stderr_text, HasSubstr("uploaded bao-cao-quy.pdf"));
}

// ---- The bulk path (attachments.bulk_listen) ----

BrokerOptions WithBulkPath() {
  BrokerOptions o = SmallChunks();
  o.config_yaml = absl::StrCat(
      "attachments: {chunk_bytes: ", kChunk, ", sync_bytes: ", kSync,
      ", max_bytes: ", kMaxBytes, ", bulk_listen: \"127.0.0.1:0\"}\n");
  return o;
}

// A connection to the bulk path made without the SDK, as any program
// could: `identity` as for RawChannel (empty: no client certificate),
// offering ALPN lienthong-bulk/1 unless `alpn` is false.
class RawBulk {
 public:
  ~RawBulk() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (fd_ >= 0) close(fd_);
  }
  // OK once the handshake is done.
  absl::Status Connect(int port, const std::string& identity, bool alpn) {
    ASSIGN_OR_RETURN(std::string pki, DevPkiDir());
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx_, (pki + "/ca.pem").c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (!identity.empty() &&
        (SSL_CTX_use_certificate_chain_file(
             ctx_, absl::StrCat(pki, "/", identity, ".pem").c_str()) != 1 ||
         SSL_CTX_use_PrivateKey_file(
             ctx_, absl::StrCat(pki, "/", identity, ".key").c_str(),
             SSL_FILETYPE_PEM) != 1)) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot load ", identity, " from ", pki));
    }
    if (alpn) {
      const std::string wire =
          std::string(1, static_cast<char>(sizeof bulk_wire::kAlpn - 1)) +
          bulk_wire::kAlpn;
      SSL_CTX_set_alpn_protos(
          ctx_, reinterpret_cast<const unsigned char*>(wire.data()),
          static_cast<unsigned int>(wire.size()));
    }
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    timeval tv{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      return absl::UnavailableError("connect");
    ssl_ = SSL_new(ctx_);
    // Sends without SIGPIPE when the broker has closed.
    if (!bulk_wire::AttachSocket(ssl_, fd_))
      return absl::InternalError("AttachSocket");
    if (SSL_connect(ssl_) != 1)
      return absl::UnauthenticatedError("handshake refused");
    // TLS 1.3: a refused client certificate shows on the first read.
    return absl::OkStatus();
  }
  SSL* ssl() { return ssl_; }
  // The broker's last word on this connection.
  absl::Status Ending() {
    absl::StatusOr<bulk_wire::Frame> f =
        bulk_wire::ReadFrame(ssl_, bulk_wire::kMaxMessageBytes, "broker");
    if (!f.ok()) return f.status();
    ASSIGN_OR_RETURN(absl::Status said, bulk_wire::StatusOf(*f));
    return said;
  }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
};

// Takes the content from `offset` on, into a string.
class TailSink : public AttachmentSink {
 public:
  explicit TailSink(uint64_t offset) : offset_(offset) {}
  uint64_t offset() const override { return offset_; }
  absl::Status Write(absl::string_view data) override {
    got_.append(data.data(), data.size());
    offset_ += data.size();
    return absl::OkStatus();
  }
  const std::string& got() const { return got_; }

 private:
  uint64_t offset_;
  std::string got_;
};

class BulkPathTest : public AttachmentsTest {
 protected:
  BulkPathTest() : AttachmentsTest(WithBulkPath()) {}

  // A client of `org` that downloads over the bulk path at `port`.
  std::unique_ptr<Client> OpenBulk(const std::string& org, int port) {
    ClientOptions o = broker_.ClientOptionsFor(org);
    o.bulk_port = port;
    absl::StatusOr<std::unique_ptr<Client>> c = Client::Open(o);
    EXPECT_OK(c);
    return c.ok() ? *std::move(c) : nullptr;
  }
  // `sender` sends `recipient`'s organization a document with `content`
  // attached as `name`, and `recipient` downloads it, checked.
  void SendAndFetch(Client& sender, Client& recipient,
                    const std::string& content, const std::string& name,
                    v1::Attachment* a, SendReceipt* receipt) {
    ASSERT_NO_FATAL_FAILURE(
        SendWithAttachment(sender, recipient.org(), content, name, a, receipt));
    DigestSink sink;
    ASSERT_OK(recipient.DownloadAttachment(receipt->document_id, *a, sink));
    EXPECT_EQ(sink.HexDigest(), Sha256HexOf(content));
  }
  attachment_io::BulkTarget Target(const std::string& org) const {
    attachment_io::BulkTarget t;
    t.host = "127.0.0.1";
    t.port = broker_.bulk_port();
    t.server_name = "127.0.0.1";
    t.certificate_file = absl::StrCat(pki_, "/orgs/", org, ".pem");
    t.private_key_file = absl::StrCat(pki_, "/orgs/", org, ".key");
    t.ca_file = pki_ + "/ca.pem";
    return t;
  }
};

// Downloads over the bulk path arrive verified, are refused to whoever may
// not have them (the same NOT_FOUND), and go into the document's evidence
// named as bulk downloads.
TEST_F(BulkPathTest, DownloadsGoOverTheBulkPathVerifiedAndAudited) {
  ASSERT_GT(broker_.bulk_port(), 0);
  std::unique_ptr<Client> sender = Open(kG22);
  std::unique_ptr<Client> recipient = OpenBulk(kH49, broker_.bulk_port());
  std::unique_ptr<Client> outsider = OpenBulk(kH50, broker_.bulk_port());
  ASSERT_TRUE(sender && recipient && outsider);
  const std::string content = Content(3 * kChunk + 7, 21);
  v1::Attachment a;
  SendReceipt receipt;
  ASSERT_NO_FATAL_FAILURE(
      SendAndFetch(*sender, *recipient, content, "bulk.bin", &a, &receipt));
  const std::string path = work_.path() + "/bulk.bin";
  ASSERT_OK(recipient->DownloadAttachmentToFile(receipt.document_id, a, path));
  EXPECT_THAT(Sha256OfFile(path), IsOkAndHolds(Sha256HexOf(content)));
  DigestSink refused;
  EXPECT_THAT(outsider->DownloadAttachment(receipt.document_id, a, refused),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(refused.offset(), 0u);

  ASSERT_OK_AND_ASSIGN(std::vector<v1::AuditEntry> entries,
                       AttachmentReads(*sender, receipt.document_id));
  std::vector<std::string> reads;
  for (const v1::AuditEntry& e : entries)
    reads.push_back(absl::StrCat(e.org(), " ", e.outcome(), " ", e.action()));
  const std::string bulk = "bulk/AttachmentService/Download";
  EXPECT_THAT(reads,
              ::testing::ElementsAre(absl::StrCat(kH49, " OK ", bulk),
                                     absl::StrCat(kH49, " OK ", bulk),
                                     absl::StrCat(kH50, " NOT_FOUND ", bulk)));
}

// A download resumed inside a chunk gets exactly the rest, each chunk
// checked by its own hash (a caller that keeps no hash of the whole).
TEST_F(BulkPathTest, ABulkDownloadResumesInsideAChunk) {
  std::unique_ptr<Client> sender = Open(kG22);
  ASSERT_NE(sender, nullptr);
  const std::string content = Content(2 * kChunk + 100, 22);
  v1::Attachment a;
  SendReceipt receipt;
  ASSERT_NO_FATAL_FAILURE(
      SendWithAttachment(*sender, kH49, content, "tiep.bin", &a, &receipt));
  const uint64_t from = kChunk + 5;
  TailSink sink(from);
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<attachment_io::AnswerStream> answers,
      attachment_io::OpenBulkDownload(
          Target(kH49), attachment_io::DownloadRequestFor(
                            receipt.document_id, a.sha256(), sink, false)));
  EXPECT_THAT(attachment_io::DownloadAnswers(*answers, sink, nullptr, nullptr,
                                             content.size()),
              IsOkAndHolds(content.size()));
  EXPECT_TRUE(sink.got() == content.substr(from)) << "the rest differs";
}

// What is not a well-formed call of a known caller gets an error naming
// what is wrong, or no connection at all; the broker serves on.
TEST_F(BulkPathTest, TheBulkPathRefusesWhatIsNotACall) {
  const int port = broker_.bulk_port();
  const std::string h49 = absl::StrCat("orgs/", kH49);
  {
    RawBulk c;
    ASSERT_OK(c.Connect(port, h49, true));
    ASSERT_OK(bulk_wire::WriteFrame(c.ssl(), 'X', "khong phai yeu cau"));
    EXPECT_THAT(c.Ending(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("must be a request ('Q')")));
  }
  {
    RawBulk c;
    ASSERT_OK(c.Connect(port, h49, true));
    const unsigned char head[5] = {'Q', 0, 0x10, 0, 0};  // 1 MiB claimed
    ASSERT_EQ(SSL_write(c.ssl(), head, sizeof head), 5);
    ASSERT_EQ(BIO_flush(SSL_get_wbio(c.ssl())), 1);
    EXPECT_THAT(c.Ending(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("1048576 bytes from the caller is above "
                                   "the limit of 65536")));
  }
  {
    RawBulk c;
    ASSERT_OK(c.Connect(port, h49, true));
    ASSERT_OK(bulk_wire::WriteFrame(c.ssl(), bulk_wire::kRequest, "\xff\xff"));
    EXPECT_THAT(c.Ending(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("not a well-formed")));
  }
  {
    RawBulk c;
    ASSERT_OK(c.Connect(port, h49, true));
    ASSERT_OK(bulk_wire::WriteFrame(c.ssl(), bulk_wire::kRequest, ""));
    EXPECT_THAT(c.Ending(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("names no call")));
  }
  {
    // No client certificate: no call, and nothing but the end.
    RawBulk c;
    if (c.Connect(port, "", true).ok()) {
      (void)bulk_wire::WriteFrame(c.ssl(), bulk_wire::kRequest, "");
      EXPECT_THAT(c.Ending(), StatusIs(absl::StatusCode::kUnavailable));
    }
  }
  {
    // A client that does not ask for the protocol (no ALPN) is not
    // served, even with a request.
    RawBulk c;
    if (c.Connect(port, h49, false).ok()) {
      (void)bulk_wire::WriteFrame(c.ssl(), bulk_wire::kRequest, "");
      EXPECT_THAT(c.Ending(), StatusIs(absl::StatusCode::kUnavailable));
    }
  }
  {
    // A certificate from another trust root is refused in the handshake:
    // its request gets no answer (a broker that took it would say "names
    // no call").
    RawBulk c;
    absl::Status connected = c.Connect(port, "bad/foreign-org", true);
    ASSERT_FALSE(absl::IsFailedPrecondition(connected)) << connected;
    if (connected.ok()) {
      (void)bulk_wire::WriteFrame(c.ssl(), bulk_wire::kRequest, "");
      EXPECT_THAT(c.Ending(), StatusIs(absl::StatusCode::kUnavailable));
    }
  }
  // Served as before.
  std::unique_ptr<Client> sender = Open(kG22);
  std::unique_ptr<Client> recipient = OpenBulk(kH49, port);
  ASSERT_TRUE(sender && recipient);
  const std::string content = Content(kChunk + 1, 23);
  v1::Attachment a;
  SendReceipt receipt;
  ASSERT_NO_FATAL_FAILURE(
      SendAndFetch(*sender, *recipient, content, "sau.bin", &a, &receipt));
}

// Uploads go over the bulk path too: stored as through gRPC, a damaged
// chunk refused with DATA_LOSS naming it (the uploader reads the broker's
// word, not a reset, though it was still sending), and what a client
// uploaded there is downloadable.
TEST_F(BulkPathTest, UploadsGoOverTheBulkPathChecked) {
  const std::string content = Content(3 * kChunk + 7, 25);
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<attachment_io::UploadStream> stream,
                         attachment_io::OpenBulkUpload(Target(kH49)));
    ASSERT_TRUE(stream->Write(attachment_wire::Serialize(
        StartOf(Sha256HexOf(content), content.size()))));
    v1::UploadResponse first;
    ASSERT_TRUE(stream->Read(&first));
    EXPECT_EQ(first.chunk_size(), kChunk);
    v1::UploadRequest damaged = ChunkOf(content, 0, kChunk);
    damaged.mutable_chunk()->set_sha256(Sha256HexOf("something else"));
    ASSERT_TRUE(stream->Write(attachment_wire::Serialize(damaged)));
    // The broker's refusal is there before the next chunk goes: it stops
    // the chunks (the SDK's writer does not wait for answers).
    absl::SleepFor(absl::Milliseconds(300));
    EXPECT_FALSE(stream->Write(
        attachment_wire::Serialize(ChunkOf(content, kChunk, kChunk))));
    stream->WritesDone();
    v1::UploadResponse extra;
    while (stream->Read(&extra)) {
    }
    EXPECT_THAT(stream->Finish(),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("chunk 0")));
    EXPECT_TRUE(stream->Answered());
  }
  std::unique_ptr<Client> sender = OpenBulk(kG22, broker_.bulk_port());
  std::unique_ptr<Client> recipient = OpenBulk(kH49, broker_.bulk_port());
  ASSERT_TRUE(sender && recipient);
  v1::Attachment a;
  SendReceipt receipt;
  ASSERT_NO_FATAL_FAILURE(
      SendAndFetch(*sender, *recipient, content, "tai-len.bin", &a, &receipt));
  EXPECT_EQ(a.sha256(), Sha256HexOf(content));
  // Stored from the bulk path, as the broker's log line says.
  bool stored_from_bulk = false;
  for (absl::string_view line : absl::StrSplit(broker_.stderr_text(), '\n')) {
    stored_from_bulk |=
        absl::StrContains(line, "attachment stored") &&
        absl::StrContains(line, a.sha256()) &&
        absl::StrContains(line, "bulk/AttachmentService/Upload");
  }
  EXPECT_TRUE(stored_from_bulk) << broker_.stderr_text();
}

// A client pointed at a bulk port where nothing listens downloads through
// gRPC instead.
TEST_F(BulkPathTest, AnUnreachableBulkPathFallsBackToGrpc) {
  ASSERT_OK_AND_ASSIGN(int nothing, PickFreePort());
  std::unique_ptr<Client> sender = Open(kG22);
  std::unique_ptr<Client> recipient = OpenBulk(kH49, nothing);
  ASSERT_TRUE(sender && recipient);
  const std::string content = Content(2 * kChunk, 24);
  v1::Attachment a;
  SendReceipt receipt;
  ASSERT_NO_FATAL_FAILURE(
      SendAndFetch(*sender, *recipient, content, "du-phong.bin", &a, &receipt));
  // Through gRPC, as its audit entry says.
  ASSERT_OK_AND_ASSIGN(std::vector<v1::AuditEntry> entries,
                       AttachmentReads(*sender, receipt.document_id));
  std::vector<std::string> reads;
  for (const v1::AuditEntry& e : entries) reads.push_back(e.action());
  EXPECT_THAT(reads, ::testing::ElementsAre("AttachmentService/Download"));
}

}  // namespace
}  // namespace lienthong::integration
