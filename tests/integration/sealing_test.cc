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

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
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
