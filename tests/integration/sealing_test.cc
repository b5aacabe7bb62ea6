// End-to-end encryption with a real lienthongd: organizations publish their
// encryption certificates, the SDK seals confidential documents for the
// recipients and opens them on receipt, the broker refuses plaintext where
// sealing is required and never holds the plaintext, and a document altered
// on the way is reported REJECTED instead of being handed over.
#include "lienthong/common/sealing.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/admin_client.h"
#include "lienthong/client.h"
#include "lienthong/v1/exchange.grpc.pb.h"
#include "rocksdb/db.h"
#include "tests/integration/broker_process.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::integration {
namespace {

using ::lienthong::testing_util::DirectoryContains;
using ::lienthong::testing_util::Eventually;
using ::lienthong::testing_util::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kWait = absl::Seconds(15);

constexpr char kPolicy[] = R"(description: sealing tests
rules:
  - name: provinces-and-centre
    effect: permit
    sender: {provinces: [H49, H50, G22]}
    recipient: {provinces: [H49, H50, G22]}
    max_classification: secret
  - name: centre-only-sealed
    effect: permit
    description: everything for the central office travels sealed
    sender: {provinces: [H49, H50]}
    recipient: {orgs: [000.00.00.G22]}
    obligations: {end_to_end_encryption: true}
)";

v1::Document NewDocument(const std::vector<std::string>& to,
                         const std::string& subject, const std::string& body,
                         v1::Classification classification) {
  v1::Document doc;
  for (const std::string& r : to) doc.add_recipients(r);
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_subject(subject);
  m->set_number("7");
  m->set_notation("QĐ-UBND");
  m->set_document_type("Quyết định");
  m->set_classification(classification);
  doc.set_body(body);
  doc.set_body_content_type("text/plain; charset=utf-8");
  return doc;
}

// An attachment held in memory.
class StringSource : public AttachmentSource {
 public:
  explicit StringSource(std::string content) : content_(std::move(content)) {}
  uint64_t size() const override { return content_.size(); }
  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) override {
    return content_.substr(offset, length);
  }

 private:
  const std::string content_;
};

// Keeps what it is given.
class StringSink : public AttachmentSink {
 public:
  uint64_t offset() const override { return content_.size(); }
  absl::Status Write(absl::string_view data) override {
    content_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  const std::string& content() const { return content_; }

 private:
  std::string content_;
};

// `size` bytes that differ with `seed`, with `marker` written at a few
// places (one across the first segment boundary of a sealed attachment).
std::string Content(uint64_t size, uint64_t seed, const std::string& marker) {
  std::mt19937_64 random(seed);
  std::string out(size, '\0');
  for (uint64_t i = 0; i < size; i += 8) {
    uint64_t word = random();
    std::memcpy(out.data() + i, &word, std::min<uint64_t>(8, size - i));
  }
  for (uint64_t at :
       {uint64_t{0}, (uint64_t{1} << 20) - 5, size / 2, size - marker.size()}) {
    if (at + marker.size() <= size) out.replace(at, marker.size(), marker);
  }
  return out;
}

class SealingTest : public ::testing::Test {
 protected:
  explicit SealingTest(bool at_rest = false)
      : broker_(Options(dir_, at_rest)) {}

  static BrokerOptions Options(const testing_util::TempDir& dir, bool at_rest) {
    const std::string policy = dir.path() + "/policy.yaml";
    EXPECT_OK(WriteFile(policy, kPolicy));
    std::string storage;
    if (at_rest) {
      const std::string key = dir.path() + "/master.key";
      EXPECT_OK(WriteFile(key, sealing::HexOf(sealing::RandomKey())));
      EXPECT_EQ(::chmod(key.c_str(), 0600), 0);
      storage = absl::StrCat("storage: {master_key_file: ", key, "}\n");
    }
    BrokerOptions o;
    o.config_yaml = absl::StrCat(
        storage,
        // Chunks smaller than the 1 MiB segments of sealed attachments, and
        // not aligned with them.
        "attachments: {chunk_bytes: 300032}\n"
        "broker: {name: central, trust_domain: lienthong.local}\n"
        "orgs:\n"
        "  - {code: ",
        kG22, "}\n  - {code: ", kH49, "}\n  - {code: ", kH50,
        "}\n  - {code: ", kUnitH49, "}\n", "policy: {file: ", policy, "}\n",
        "roles: {operator: [operator], auditor: [auditor]}\n");
    return o;
  }

  void SetUp() override { ASSERT_OK(broker_.Start()); }
  void TearDown() override { EXPECT_OK(broker_.Stop()); }

  std::string PkiPath(const std::string& rel) {
    absl::StatusOr<std::string> dir = DevPkiDir();
    EXPECT_OK(dir);
    return absl::StrCat(dir.value_or(""), "/", rel);
  }
  std::string Pki(const std::string& rel) {
    absl::StatusOr<std::string> text = ReadFile(PkiPath(rel));
    EXPECT_OK(text);
    return text.value_or("");
  }

  // A client of `org`; with its encryption key pair when `with_key`.
  std::unique_ptr<Client> Open(const std::string& org, bool with_key = true) {
    ClientOptions o = broker_.ClientOptionsFor(org);
    if (with_key) {
      o.encryption_certificate_file =
          PkiPath(absl::StrCat("orgs/", org, ".enc.pem"));
      o.encryption_key_file = PkiPath(absl::StrCat("orgs/", org, ".enc.key"));
    }
    absl::StatusOr<std::unique_ptr<Client>> c = Client::Open(o);
    EXPECT_OK(c);
    return c.ok() ? *std::move(c) : nullptr;
  }

  // Publishes `org`'s encryption certificate.
  void Publish(const std::string& org) {
    std::unique_ptr<Client> c = Open(org);
    ASSERT_NE(c, nullptr);
    absl::StatusOr<v1::PublishEncryptionCertificateResponse> r =
        c->PublishEncryptionCertificate();
    ASSERT_OK(r);
    EXPECT_EQ(r->org(), org);
    EXPECT_EQ(r->certificate_sha256().size(), 64u);
  }

  // The next document for `client` through Receive (nullopt after kWait),
  // and the status the session ended with, if it ended.
  struct Received {
    std::vector<IncomingDocument> documents;
    absl::Status ended;
  };
  Received ReceiveOne(Client& client, absl::Duration wait = kWait) {
    absl::Mutex mu;
    Received out;
    absl::StatusOr<std::unique_ptr<ReceiveSession>> session =
        client.Receive([&](const IncomingDocument& d) {
          absl::MutexLock lock(&mu);
          out.documents.push_back(d);
          return absl::OkStatus();
        });
    EXPECT_OK(session);
    if (!session.ok()) return out;
    Eventually(
        [&] {
          absl::MutexLock lock(&mu);
          return !out.documents.empty();
        },
        wait);
    (*session)->Stop();
    out.ended = (*session)->Wait();
    return out;
  }

  // A raw ExchangeService stub as `org`, bypassing the SDK.
  std::unique_ptr<v1::ExchangeService::Stub> RawStub(const std::string& org) {
    return v1::ExchangeService::NewStub(
        RawChannel(broker_.endpoint(), absl::StrCat("orgs/", org)));
  }

  grpc::Status RawSend(const std::string& org, v1::Document doc,
                       v1::SendResponse* response) {
    doc.set_sender(org);
    if (doc.idempotency_key().empty())
      doc.set_idempotency_key(
          absl::StrCat("raw-", absl::ToUnixNanos(absl::Now())));
    // Signed as the SDK would: what is tested is the content, not the
    // signature.
    if (absl::Status s = SignAs(org, &doc); !s.ok()) {
      return grpc::Status(grpc::StatusCode::INTERNAL, std::string(s.message()));
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    v1::SendRequest request;
    *request.mutable_document() = std::move(doc);
    return RawStub(org)->Send(&context, request, response);
  }

  // Uploads `content` as `name`, sealed end to end when `seal`.
  absl::StatusOr<v1::Attachment> Upload(Client& client,
                                        const std::string& content,
                                        const std::string& name, bool seal) {
    StringSource source(content);
    UploadOptions options;
    options.seal = seal;
    return client.UploadAttachment(source, name, "application/octet-stream",
                                   options);
  }

  // The documents `ids` for `client` through Fetch (acknowledging whatever
  // comes), by id; those that did not come within kWait are missing.
  std::map<std::string, IncomingDocument> FetchDocuments(
      Client& client, const std::vector<std::string>& ids) {
    std::map<std::string, IncomingDocument> found;
    const absl::Time until = absl::Now() + kWait;
    while (found.size() < ids.size() && absl::Now() < until) {
      absl::StatusOr<std::vector<IncomingDocument>> got =
          client.Fetch(10, absl::Seconds(1));
      EXPECT_OK(got);
      if (!got.ok()) break;
      std::vector<std::string> acks;
      for (IncomingDocument& d : *got) {
        acks.push_back(d.document.id());
        if (std::find(ids.begin(), ids.end(), d.document.id()) != ids.end())
          found[d.document.id()] = std::move(d);
      }
      EXPECT_OK(client.Ack(acks));
    }
    return found;
  }

  // The file in which the broker keeps the stored attachment `sha256`.
  std::string BlobPath(const std::string& sha256) {
    return absl::StrCat(broker_.data_dir(), "/attachments/blobs/",
                        sha256.substr(0, 2), "/", sha256);
  }

  testing_util::TempDir dir_;  // before broker_: its policy file
  BrokerProcess broker_;
};

TEST_F(SealingTest,
       ConfidentialDocumentIsSealedOnTheWayAndOpensForItsRecipient) {
  ASSERT_NO_FATAL_FAILURE(Publish(kH50));
  std::unique_ptr<Client> sender = Open(kH49, /*with_key=*/false);
  const std::string marker = "NOI-DUNG-MAT-7f3a9c";
  v1::Document doc = NewDocument({kH50}, "Quyết định nhân sự",
                                 absl::StrCat("Toàn văn: ", marker),
                                 v1::CLASSIFICATION_CONFIDENTIAL);
  v1::Attachment* a = doc.add_attachments();
  a->set_name("danh-sach.txt");
  a->set_content_type("text/plain");
  a->set_content(absl::StrCat("phu luc ", marker));
  absl::StatusOr<SendReceipt> receipt = sender->Send(doc);
  ASSERT_OK(receipt);
  EXPECT_TRUE(receipt->sealed);

  std::unique_ptr<Client> recipient = Open(kH50);
  Received got = ReceiveOne(*recipient);
  ASSERT_EQ(got.documents.size(), 1u) << got.ended;
  const IncomingDocument& in = got.documents[0];
  EXPECT_TRUE(in.was_sealed);
  EXPECT_FALSE(in.document.has_sealed());
  EXPECT_EQ(in.document.id(), receipt->document_id);
  EXPECT_EQ(in.document.body(), doc.body());
  EXPECT_EQ(in.document.body_content_type(), doc.body_content_type());
  ASSERT_EQ(in.document.attachments_size(), 1);
  EXPECT_EQ(in.document.attachments(0).name(), "danh-sach.txt");
  EXPECT_EQ(in.document.attachments(0).content(), a->content());
  // Metadata policy needs stays readable.
  EXPECT_EQ(in.document.metadata().subject(), "Quyết định nhân sự");

  // The control: an ordinary document's text is in the broker's files...
  const std::string plain_marker = "NOI-DUNG-THUONG-51be2d";
  ASSERT_OK(sender
                ->Send(NewDocument({kH50}, "Công văn", plain_marker,
                                   v1::CLASSIFICATION_UNCLASSIFIED))
                .status());
  ASSERT_OK(broker_.Stop());
  EXPECT_TRUE(DirectoryContains(broker_.data_dir(), plain_marker));
  // ...the confidential one's is nowhere in them.
  EXPECT_FALSE(DirectoryContains(broker_.data_dir(), marker));
  ASSERT_OK(broker_.Start());
}

// ---- Stored attachments, sealed per segment at upload -----------------------

TEST_F(SealingTest, SealedStoredAttachmentsTravelAsCiphertextAndOpen) {
  ASSERT_NO_FATAL_FAILURE(Publish(kH50));
  std::unique_ptr<Client> sender = Open(kH49, /*with_key=*/false);
  ASSERT_NE(sender, nullptr);
  const std::string marker = "PHU-LUC-MAT-e41d07";
  const std::string big = Content((3 << 20) + 12345, 7, marker);
  ASSERT_OK_AND_ASSIGN(v1::Attachment a,
                       Upload(*sender, big, "bang-luong.xlsx", true));
  ASSERT_OK_AND_ASSIGN(v1::Attachment empty,
                       Upload(*sender, "", "trong.txt", true));
  // Uploaded: ciphertext, 4 segments of 16 more bytes each; the plaintext's
  // hash and size and the key travel in the attachment.
  EXPECT_TRUE(a.stored());
  EXPECT_EQ(a.size(), big.size() + 4 * 16);
  EXPECT_NE(a.sha256(), Sha256HexOf(big));
  EXPECT_EQ(a.sealing().plaintext_sha256(), Sha256HexOf(big));
  EXPECT_EQ(a.sealing().plaintext_size(), big.size());
  EXPECT_EQ(a.sealing().content_key().size(), 32u);
  EXPECT_EQ(empty.size(), 16u);
  EXPECT_EQ(empty.sealing().plaintext_size(), 0u);
  EXPECT_NE(empty.sealing().content_key(), a.sealing().content_key());
  // The control: the same kind of content uploaded as it is lands in the
  // broker's files readable.
  const std::string plain_marker = "PHU-LUC-THUONG-93c2aa";
  ASSERT_OK(
      Upload(*sender, Content(200000, 8, plain_marker), "thuong.bin", false)
          .status());

  v1::Document doc = NewDocument({kH50}, "Bảng lương", "xem phụ lục",
                                 v1::CLASSIFICATION_CONFIDENTIAL);
  *doc.add_attachments() = a;
  *doc.add_attachments() = empty;
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt, sender->Send(doc));
  EXPECT_TRUE(receipt.sealed);

  // What the broker holds: bare references, by ciphertext hash and size.
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status,
                       sender->GetDocumentStatus(receipt.document_id));
  ASSERT_EQ(status.attachments_size(), 2);
  for (const v1::Attachment& r : status.attachments()) {
    EXPECT_TRUE(r.stored());
    EXPECT_EQ(r.name(), "");
    EXPECT_EQ(r.content_type(), "");
    EXPECT_FALSE(r.has_sealing());
  }
  EXPECT_EQ(status.attachments(0).sha256(), a.sha256());
  EXPECT_EQ(status.attachments(0).size(), a.size());

  std::unique_ptr<Client> recipient = Open(kH50);
  std::map<std::string, IncomingDocument> fetched =
      FetchDocuments(*recipient, {receipt.document_id});
  ASSERT_EQ(fetched.count(receipt.document_id), 1u);
  const IncomingDocument* in = &fetched[receipt.document_id];
  EXPECT_TRUE(in->was_sealed);
  ASSERT_EQ(in->document.attachments_size(), 2);
  const v1::Attachment& got = in->document.attachments(0);
  EXPECT_EQ(got.name(), "bang-luong.xlsx");
  EXPECT_EQ(got.content_type(), "application/octet-stream");
  EXPECT_EQ(got.sealing().plaintext_sha256(), Sha256HexOf(big));
  EXPECT_EQ(in->document.attachments(1).name(), "trong.txt");

  StringSink sink;
  ASSERT_OK(recipient->DownloadAttachment(receipt.document_id, got, sink));
  EXPECT_TRUE(sink.content() == big) << sink.content().size();
  StringSink nothing;
  ASSERT_OK(recipient->DownloadAttachment(
      receipt.document_id, in->document.attachments(1), nothing));
  EXPECT_EQ(nothing.content(), "");
  const std::string path = dir_.path() + "/bang-luong.xlsx";
  ASSERT_OK(
      recipient->DownloadAttachmentToFile(receipt.document_id, got, path));
  ASSERT_OK_AND_ASSIGN(std::string file, ReadFile(path));
  EXPECT_TRUE(file == big) << file.size();
  // A file left by an interrupted download goes on after its last whole
  // segment (the cut one is received again)...
  const std::string resumed = dir_.path() + "/resumed.xlsx";
  ASSERT_OK(WriteFile(resumed + ".part", big.substr(0, (1 << 20) + 1000)));
  uint64_t resumed_at = 0;
  ASSERT_OK(recipient->DownloadAttachmentToFile(
      receipt.document_id, got, resumed,
      [&](const TransferProgress& p) { resumed_at = p.resumed; }));
  EXPECT_EQ(resumed_at, (1u << 20) + 16);  // in ciphertext bytes
  ASSERT_OK_AND_ASSIGN(file, ReadFile(resumed));
  EXPECT_TRUE(file == big) << file.size();
  // ...and one whose beginning is not what was sent fails whole.
  std::string wrong = big.substr(0, 2 << 20);
  wrong[10] ^= 1;
  const std::string other = dir_.path() + "/other.xlsx";
  ASSERT_OK(WriteFile(other + ".part", wrong));
  EXPECT_THAT(
      recipient->DownloadAttachmentToFile(receipt.document_id, got, other),
      StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_FALSE(std::filesystem::exists(other));
  EXPECT_FALSE(std::filesystem::exists(other + ".part"));
  // The sender opens its own copy with the attachment it uploaded.
  StringSink own;
  ASSERT_OK(sender->DownloadAttachment(receipt.document_id, a, own));
  EXPECT_TRUE(own.content() == big);
  // Without the key, what the broker serves is only ciphertext.
  v1::Attachment raw = a;
  raw.clear_sealing();
  StringSink ciphertext;
  ASSERT_OK(sender->DownloadAttachment(receipt.document_id, raw, ciphertext));
  EXPECT_EQ(ciphertext.content().size(), a.size());
  EXPECT_EQ(ciphertext.content().find(marker), std::string::npos);

  ASSERT_OK(broker_.Stop());
  EXPECT_TRUE(
      DirectoryContains(broker_.data_dir() + "/attachments", plain_marker));
  EXPECT_FALSE(DirectoryContains(broker_.data_dir(), marker));
  ASSERT_OK(broker_.Start());
}

TEST_F(SealingTest, AStoredAttachmentMustBeSealedExactlyWhenTheDocumentIs) {
  ASSERT_NO_FATAL_FAILURE(Publish(kH50));
  std::unique_ptr<Client> sender = Open(kH49);
  ASSERT_NE(sender, nullptr);
  ASSERT_OK_AND_ASSIGN(v1::Attachment plain,
                       Upload(*sender, "noi dung", "a.txt", false));
  ASSERT_OK_AND_ASSIGN(v1::Attachment sealed,
                       Upload(*sender, "noi dung", "b.txt", true));

  // Uploaded in plaintext: a confidential document refuses it.
  v1::Document confidential =
      NewDocument({kH50}, "mật", "x", v1::CLASSIFICATION_CONFIDENTIAL);
  *confidential.add_attachments() = plain;
  EXPECT_THAT(
      sender->Send(confidential).status(),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("a.txt"), HasSubstr("UploadOptions::seal"))));
  // Uploaded sealed: an ordinary document refuses it (its key would have
  // nowhere to travel).
  v1::Document ordinary =
      NewDocument({kH50}, "thường", "x", v1::CLASSIFICATION_UNCLASSIFIED);
  *ordinary.add_attachments() = sealed;
  EXPECT_THAT(sender->Send(ordinary).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("b.txt"), HasSubstr("not sealed"))));
  // So does the broker, for a client that does not check.
  v1::SendResponse response;
  grpc::Status s = RawSend(kH49, ordinary, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("attachments[0].sealing"));
  // A sealed document carries outside only bare references to stored
  // attachments.
  v1::Document envelope =
      NewDocument({kH50}, "mật", "", v1::CLASSIFICATION_CONFIDENTIAL);
  envelope.clear_body();
  envelope.clear_body_content_type();
  envelope.mutable_sealed()->set_scheme("any");
  v1::Attachment* inline_one = envelope.add_attachments();
  inline_one->set_name("x.txt");
  inline_one->set_content("x");
  s = RawSend(kH49, envelope, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("attachments[0]"));
  envelope.clear_attachments();
  v1::Attachment* named = envelope.add_attachments();
  named->set_stored(true);
  named->set_sha256(sealed.sha256());
  named->set_size(sealed.size());
  named->set_name("b.txt");
  s = RawSend(kH49, envelope, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("attachments[0].name"));

  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse inbox, Open(kH50)->ListInbox(10));
  EXPECT_EQ(inbox.total(), 0u);
}

TEST_F(SealingTest, AlteredSealedAttachmentsFailWithDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Publish(kH50));
  std::unique_ptr<Client> sender = Open(kH49);
  ASSERT_NE(sender, nullptr);
  const std::string content = Content((3 << 20) + 777, 9, "MAT");
  ASSERT_OK_AND_ASSIGN(v1::Attachment a,
                       Upload(*sender, content, "goc.pdf", true));
  v1::Document doc =
      NewDocument({kH50}, "mật", "x", v1::CLASSIFICATION_CONFIDENTIAL);
  *doc.add_attachments() = a;
  ASSERT_OK_AND_ASSIGN(SendReceipt first, sender->Send(doc));
  // The ciphertext, as the broker serves it.
  v1::Attachment raw = a;
  raw.clear_sealing();
  StringSink sink;
  ASSERT_OK(sender->DownloadAttachment(first.document_id, raw, sink));
  const std::string ciphertext = sink.content();
  ASSERT_EQ(ciphertext.size(), a.size());

  // Forged by the sender's side and signed, so only the cryptography can
  // tell: one bit of the second segment flipped, and the last segment
  // dropped (the third then claims to be the last).
  std::string flipped = ciphertext;
  flipped[(1 << 20) + 100] ^= 1;
  const std::string truncated = ciphertext.substr(0, 3 * ((1 << 20) + 16));
  std::vector<std::string> forged_ids;
  for (const std::string* bytes :
       std::vector<const std::string*>{&flipped, &truncated}) {
    ASSERT_OK_AND_ASSIGN(v1::Attachment upload,
                         Upload(*sender, *bytes, "blob.bin", false));
    v1::Attachment forged = a;
    forged.set_sha256(upload.sha256());
    forged.set_size(upload.size());
    if (bytes == &truncated)
      forged.mutable_sealing()->set_plaintext_size(3 << 20);
    v1::Document d =
        NewDocument({kH50}, "mật", "x", v1::CLASSIFICATION_CONFIDENTIAL);
    *d.add_attachments() = forged;
    ASSERT_OK_AND_ASSIGN(SendReceipt r, sender->Send(d));
    forged_ids.push_back(r.document_id);
  }

  std::unique_ptr<Client> recipient = Open(kH50);
  std::vector<std::string> ids = forged_ids;
  ids.push_back(first.document_id);
  std::map<std::string, IncomingDocument> fetched =
      FetchDocuments(*recipient, ids);
  for (const std::string& id : forged_ids) {
    ASSERT_EQ(fetched.count(id), 1u);
    const IncomingDocument* in = &fetched[id];
    ASSERT_EQ(in->document.attachments_size(), 1);
    StringSink out;
    EXPECT_THAT(
        recipient->DownloadAttachment(id, in->document.attachments(0), out),
        StatusIs(
            absl::StatusCode::kDataLoss,
            AllOf(HasSubstr("goc.pdf"), HasSubstr("does not authenticate"))));
    // Nothing unverified was handed over: the segments before the damage
    // only.
    EXPECT_LE(out.content().size(), uint64_t{2} << 20);
    EXPECT_EQ(out.content(), content.substr(0, out.content().size()));
    const std::string path = dir_.path() + "/forged.pdf";
    EXPECT_THAT(recipient->DownloadAttachmentToFile(
                    id, in->document.attachments(0), path),
                StatusIs(absl::StatusCode::kDataLoss));
    EXPECT_FALSE(std::filesystem::exists(path));
    EXPECT_FALSE(std::filesystem::exists(path + ".part"));
  }

  // A byte flipped in the broker's own file of the genuine one.
  ASSERT_EQ(fetched.count(first.document_id), 1u);
  const IncomingDocument* in = &fetched[first.document_id];
  const std::string blob = BlobPath(a.sha256());
  ASSERT_TRUE(std::filesystem::exists(blob)) << blob;
  {
    std::fstream f(blob, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(1500000);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x20;
    f.seekp(1500000);
    f.write(&c, 1);
  }
  StringSink out;
  EXPECT_THAT(recipient->DownloadAttachment(first.document_id,
                                            in->document.attachments(0), out),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("goc.pdf")));
}

// Content that differs from one reading to the next (a file rewritten
// during the upload): the first `size` bytes read are `first`, then
// `second`.
class ChangingSource : public AttachmentSource {
 public:
  ChangingSource(std::string first, std::string second)
      : first_(std::move(first)), second_(std::move(second)) {}
  uint64_t size() const override { return first_.size(); }
  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) override {
    const std::string& now = read_ < first_.size() ? first_ : second_;
    read_ += length;
    return now.substr(offset, length);
  }

 private:
  const std::string first_;
  const std::string second_;
  uint64_t read_ = 0;
};

TEST_F(SealingTest, ContentThatChangesDuringASealedUploadIsNotEncryptedTwice) {
  std::unique_ptr<Client> sender = Open(kH49);
  ASSERT_NE(sender, nullptr);
  const std::string before = Content((2 << 20) + 3, 11, "TRUOC");
  std::string after = before;
  after[(1 << 20) + 7] ^= 1;
  ChangingSource source(before, after);
  UploadOptions options;
  options.seal = true;
  // Refused by the SDK before a segment of other content is encrypted under
  // a nonce already used (not only by the broker's hash check afterwards).
  EXPECT_THAT(
      sender->UploadAttachment(source, "doi.bin", "x/y", options).status(),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr("changed while it was sent")));
}

TEST_F(SealingTest, PlaintextConfidentialAndTopSecretAreRefused) {
  v1::SendResponse response;
  grpc::Status s = RawSend(
      kH49, NewDocument({kH50}, "mật", "plaintext", v1::CLASSIFICATION_SECRET),
      &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("end-to-end encrypted"));
  std::unique_ptr<Client> sender = Open(kH49);
  EXPECT_THAT(sender
                  ->Send(NewDocument({kH50}, "tuyệt mật", "x",
                                     v1::CLASSIFICATION_TOP_SECRET))
                  .status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("outside the system's scope")));
  std::unique_ptr<Client> recipient = Open(kH50);
  absl::StatusOr<v1::ListInboxResponse> inbox = recipient->ListInbox(10);
  ASSERT_OK(inbox);
  EXPECT_EQ(inbox->total(), 0u);
}

TEST_F(SealingTest, ARecipientWithoutACertificateIsNamedAndNothingIsSent) {
  ASSERT_NO_FATAL_FAILURE(Publish(kH50));
  std::unique_ptr<Client> sender = Open(kH49);
  absl::StatusOr<SendReceipt> r = sender->Send(NewDocument(
      {kH50, kUnitH49}, "mật", "x", v1::CLASSIFICATION_CONFIDENTIAL));
  EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                   HasSubstr(kUnitH49)));
  EXPECT_THAT(r.status().message(), Not(HasSubstr(kH50 + std::string(","))));
  absl::StatusOr<v1::ListInboxResponse> inbox = Open(kH50)->ListInbox(10);
  ASSERT_OK(inbox);
  EXPECT_EQ(inbox->total(), 0u);
}

TEST_F(SealingTest, PolicyObligationRequiresSealingAnOrdinaryDocument) {
  ASSERT_NO_FATAL_FAILURE(Publish(kG22));
  v1::Document doc =
      NewDocument({kG22}, "báo cáo", "x", v1::CLASSIFICATION_UNCLASSIFIED);
  std::unique_ptr<Client> plain = Open(kH49, /*with_key=*/false);
  EXPECT_THAT(plain->Send(doc).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("centre-only-sealed"),
                             HasSubstr("end_to_end_encryption"))));
  ClientOptions o = broker_.ClientOptionsFor(kH49);
  o.seal_all = true;
  absl::StatusOr<std::unique_ptr<Client>> sealing = Client::Open(o);
  ASSERT_OK(sealing);
  absl::StatusOr<SendReceipt> r = (*sealing)->Send(doc);
  ASSERT_OK(r);
  EXPECT_TRUE(r->sealed);
  Received got = ReceiveOne(*Open(kG22));
  ASSERT_EQ(got.documents.size(), 1u);
  EXPECT_TRUE(got.documents[0].was_sealed);
  EXPECT_EQ(got.documents[0].document.body(), "x");
}

TEST_F(SealingTest, AnAlteredSealedDocumentIsRejectedNotHandedOver) {
  ASSERT_NO_FATAL_FAILURE(Publish(kH50));
  // Sealed properly for H50, then one ciphertext byte flipped on the way.
  absl::StatusOr<sealing::EncryptionCertificate> cert =
      sealing::VerifyEncryptionCertificate(Pki("orgs/000.00.00.H50.enc.pem"),
                                           Pki("ca.pem"), "lienthong.local",
                                           absl::Now());
  ASSERT_OK(cert);
  std::unique_ptr<sealing::ContentCipher> cipher = sealing::NewDefaultCipher();
  v1::SealedContent content;
  content.set_body("secret body");
  absl::StatusOr<sealing::Envelope> env =
      cipher->Seal(content.SerializeAsString(), "any", {*cert});
  ASSERT_OK(env);
  v1::Document doc =
      NewDocument({kH50}, "mật", "", v1::CLASSIFICATION_CONFIDENTIAL);
  doc.clear_body();
  doc.clear_body_content_type();
  v1::Sealed* sealed = doc.mutable_sealed();
  sealed->set_scheme(env->scheme);
  sealed->set_nonce(env->nonce);
  std::string ciphertext = env->ciphertext;
  ciphertext[0] ^= 1;
  sealed->set_ciphertext(ciphertext);
  v1::WrappedKey* k = sealed->add_keys();
  k->set_org(env->keys[0].org);
  k->set_certificate_sha256(env->keys[0].certificate_sha256);
  k->set_ephemeral_public_key(env->keys[0].ephemeral_public_key);
  k->set_nonce(env->keys[0].nonce);
  k->set_wrapped_key(env->keys[0].wrapped_key);
  v1::SendResponse response;
  grpc::Status s = RawSend(kH49, doc, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();

  std::unique_ptr<Client> recipient = Open(kH50);
  Received got = ReceiveOne(*recipient, absl::Seconds(3));
  EXPECT_TRUE(got.documents.empty());
  std::unique_ptr<Client> sender = Open(kH49);
  bool rejected = Eventually(
      [&] {
        absl::StatusOr<v1::DocumentStatus> st =
            sender->GetDocumentStatus(response.document_id());
        if (!st.ok()) return false;
        for (const v1::StatusEvent& e : st->history()) {
          if (e.business_status() == v1::BUSINESS_STATUS_REJECTED &&
              e.reason().find("could not open") != std::string::npos)
            return true;
        }
        return false;
      },
      kWait);
  EXPECT_TRUE(rejected);
  // Acknowledged: it does not come again.
  absl::StatusOr<v1::ListInboxResponse> inbox = recipient->ListInbox(10);
  ASSERT_OK(inbox);
  EXPECT_EQ(inbox->total(), 0u);
}

TEST_F(SealingTest, WithoutItsKeyTheRecipientStopsAndTheDocumentWaits) {
  ASSERT_NO_FATAL_FAILURE(Publish(kH50));
  ASSERT_OK(Open(kH49)
                ->Send(NewDocument({kH50}, "mật", "đợi khóa",
                                   v1::CLASSIFICATION_CONFIDENTIAL))
                .status());
  std::unique_ptr<Client> keyless = Open(kH50, /*with_key=*/false);
  Received got = ReceiveOne(*keyless, absl::Seconds(5));
  EXPECT_TRUE(got.documents.empty());
  EXPECT_THAT(got.ended, StatusIs(absl::StatusCode::kFailedPrecondition,
                                  HasSubstr("encryption_key_file")));
  // Still there for a correctly configured client.
  Received later = ReceiveOne(*Open(kH50));
  ASSERT_EQ(later.documents.size(), 1u);
  EXPECT_EQ(later.documents[0].document.body(), "đợi khóa");
}

TEST_F(SealingTest, PublishingRefusesAnotherOrgsOrAnUnfitCertificate) {
  auto publish_as = [&](const std::string& org, const std::string& pem) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    v1::PublishEncryptionCertificateRequest request;
    request.set_certificate(pem);
    v1::PublishEncryptionCertificateResponse response;
    return RawStub(org)->PublishEncryptionCertificate(&context, request,
                                                      &response);
  };
  grpc::Status s = publish_as(kH49, Pki("orgs/000.00.00.H50.enc.pem"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << s.error_message();
  s = publish_as(kH49, Pki("orgs/000.00.00.H49.pem"));  // the TLS one
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("keyAgreement"));
  s = publish_as(kH49, "not a certificate");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Nothing was published for H49.
  grpc::ClientContext context;
  v1::GetEncryptionCertificatesRequest request;
  request.add_orgs(kH49);
  v1::GetEncryptionCertificatesResponse response;
  ASSERT_TRUE(RawStub(kH50)
                  ->GetEncryptionCertificates(&context, request, &response)
                  .ok());
  EXPECT_EQ(response.certificates_size(), 0);
}

TEST_F(SealingTest, APublishedCertificateSurvivesARestart) {
  ASSERT_NO_FATAL_FAILURE(Publish(kH50));
  ASSERT_OK(broker_.Stop());
  ASSERT_OK(broker_.Start());
  absl::StatusOr<SendReceipt> r = Open(kH49)->Send(NewDocument(
      {kH50}, "mật", "sau khởi động lại", v1::CLASSIFICATION_SECRET));
  ASSERT_OK(r);
  EXPECT_TRUE(r->sealed);
  Received got = ReceiveOne(*Open(kH50));
  ASSERT_EQ(got.documents.size(), 1u);
  EXPECT_EQ(got.documents[0].document.body(), "sau khởi động lại");
}

// ---- Encryption at rest, and the audit log, with a real broker -------------

class AtRestTest : public SealingTest {
 protected:
  AtRestTest() : SealingTest(/*at_rest=*/true) {}

  std::unique_ptr<AdminClient> Operator() {
    ClientOptions o = broker_.ClientOptionsFor(kH49);
    o.certificate_file = PkiPath("persons/operator.pem");
    o.private_key_file = PkiPath("persons/operator.key");
    absl::StatusOr<std::unique_ptr<AdminClient>> admin = AdminClient::Open(o);
    EXPECT_OK(admin);
    return admin.ok() ? *std::move(admin) : nullptr;
  }
};

TEST_F(AtRestTest, DocumentsAreEncryptedAtRestAcrossAKeyRotation) {
  std::unique_ptr<AdminClient> admin = Operator();
  ASSERT_NE(admin, nullptr);
  absl::StatusOr<v1::GetBrokerInfoResponse> info = admin->GetBrokerInfo();
  ASSERT_OK(info);
  EXPECT_TRUE(info->storage_encryption().enabled());
  const std::string first_key = info->storage_encryption().data_key_id();

  std::unique_ptr<Client> sender = Open(kH49);
  ASSERT_OK(sender
                ->Send(NewDocument({kH50}, "Công văn", "TRUOC-XOAY-KHOA-1a2b",
                                   v1::CLASSIFICATION_UNCLASSIFIED))
                .status());
  absl::StatusOr<v1::RotateStorageKeysResponse> rotated =
      admin->RotateStorageKeys();
  ASSERT_OK(rotated);
  EXPECT_NE(rotated->encryption().data_key_id(), first_key);
  EXPECT_EQ(rotated->encryption().data_keys(), 2u);
  ASSERT_OK(sender
                ->Send(NewDocument({kH50}, "Công văn", "SAU-XOAY-KHOA-3c4d",
                                   v1::CLASSIFICATION_UNCLASSIFIED))
                .status());

  ASSERT_OK(broker_.Stop());
  EXPECT_FALSE(DirectoryContains(broker_.data_dir(), "TRUOC-XOAY-KHOA-1a2b"));
  EXPECT_FALSE(DirectoryContains(broker_.data_dir(), "SAU-XOAY-KHOA-3c4d"));
  ASSERT_OK(broker_.Start());

  // Both still deliver, sealed with their own data keys.
  std::unique_ptr<Client> recipient = Open(kH50);
  absl::StatusOr<std::vector<IncomingDocument>> got =
      recipient->Fetch(10, absl::Seconds(5));
  ASSERT_OK(got);
  std::vector<std::string> bodies;
  for (const IncomingDocument& d : *got) bodies.push_back(d.document.body());
  EXPECT_THAT(bodies, ::testing::UnorderedElementsAre("TRUOC-XOAY-KHOA-1a2b",
                                                      "SAU-XOAY-KHOA-3c4d"));

  // The audit log of all this verifies.
  admin = Operator();
  absl::StatusOr<v1::VerifyAuditResponse> verified = admin->VerifyAudit();
  ASSERT_OK(verified);
  EXPECT_TRUE(verified->ok()) << verified->DebugString();
  EXPECT_GE(verified->entries(), 4u);  // 2 accepted, info, rotation
}

TEST_F(AtRestTest, AnEditedAuditEntryIsFoundAfterARestart) {
  std::unique_ptr<Client> sender = Open(kH49);
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK(sender
                  ->Send(NewDocument({kH50}, absl::StrCat("Công văn ", i), "x",
                                     v1::CLASSIFICATION_UNCLASSIFIED))
                  .status());
  }
  ASSERT_OK(broker_.Stop());  // a clean stop signs a last checkpoint
  {
    // Someone with the files edits the third entry of the audit log.
    rocksdb::DBOptions db_options;
    std::vector<std::string> names;
    ASSERT_TRUE(
        rocksdb::DB::ListColumnFamilies(db_options, broker_.data_dir(), &names)
            .ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (const std::string& n : names)
      cfs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(
        rocksdb::DB::Open(db_options, broker_.data_dir(), cfs, &handles, &raw)
            .ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::ColumnFamilyHandle* audit = nullptr;
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == "audit") audit = handles[i];
    ASSERT_NE(audit, nullptr) << "no audit column family";
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions(), audit));
    it->Seek("e");  // entries: 'e' <index>, after checkpoints and the index
    for (int i = 0; i < 2 && it->Valid(); ++i) it->Next();
    ASSERT_TRUE(it->Valid());
    std::string key = it->key().ToString();
    std::string value = it->value().ToString();
    it.reset();
    ASSERT_EQ(key[0], 'e');
    // A character of the stored entry, not its framing.
    value[value.size() / 2] ^= 0x01;
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), audit, key, value).ok());
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  }
  ASSERT_OK(broker_.Start());
  std::unique_ptr<AdminClient> admin = Operator();
  ASSERT_NE(admin, nullptr);
  absl::StatusOr<v1::VerifyAuditResponse> verified = admin->VerifyAudit();
  ASSERT_OK(verified);
  EXPECT_FALSE(verified->ok());
  ASSERT_FALSE(verified->problems().empty());
  EXPECT_THAT(verified->problems(0), HasSubstr("entry"))
      << verified->DebugString();
}

}  // namespace
}  // namespace lienthong::integration
