// Signatures, custody receipts and evidence with a real lienthongd: the SDK
// signs what it sends, the broker refuses unsigned, altered and forged
// documents with a precise status before storing anything, returns a signed
// custody receipt, and the evidence of a document verifies offline with only
// the CA (in the library and through `lienthong verify`), while a tampered
// copy does not. A recipient refuses a document its sender did not sign.
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "lienthong/admin_client.h"
#include "lienthong/client.h"
#include "lienthong/common/sealing.h"
#include "lienthong/signing/signing.h"
#include "lienthong/v1/exchange.grpc.pb.h"
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
using ::lienthong::testing_util::StatusIs;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(15);

v1::Document NewDocument(const std::string& to, const std::string& subject) {
  v1::Document doc;
  doc.add_recipients(to);
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_subject(subject);
  m->set_number("15");
  m->set_notation("CV-UBND");
  m->set_document_type("Công văn");
  doc.set_body(absl::StrCat("Nội dung: ", subject));
  doc.set_body_content_type("text/plain; charset=utf-8");
  return doc;
}

BrokerOptions Config(bool require_signatures) {
  BrokerOptions o;
  // The demo organizations and the embedded development policy (H49 and
  // H50 report to G22).
  o.config_yaml = absl::StrCat(
      "broker: {name: central, trust_domain: lienthong.local}\n"
      "roles: {operator: [operator], auditor: [auditor]}\n",
      require_signatures ? "" : "security: {require_signatures: false}\n");
  return o;
}

class SignaturesTest : public ::testing::Test {
 protected:
  explicit SignaturesTest(bool require_signatures = true)
      : broker_(Config(require_signatures)) {}

  void SetUp() override {
    ASSERT_OK(broker_.Start());
    absl::StatusOr<std::string> dir = DevPkiDir();
    ASSERT_OK(dir);
    pki_ = *dir;
    absl::StatusOr<std::string> ca = ReadFile(pki_ + "/ca.pem");
    ASSERT_OK(ca);
    signing::VerifierOptions v;
    v.trust_root_pem = *ca;
    v.trust_domain = "lienthong.local";
    absl::StatusOr<std::unique_ptr<signing::SignatureVerifier>> verifier =
        signing::SignatureVerifier::Create(std::move(v));
    ASSERT_OK(verifier);
    verifier_ = *std::move(verifier);
  }
  void TearDown() override { EXPECT_OK(broker_.Stop()); }

  std::unique_ptr<Client> Open(const std::string& org) {
    absl::StatusOr<std::unique_ptr<Client>> c =
        Client::Open(broker_.ClientOptionsFor(org));
    EXPECT_OK(c);
    return c.ok() ? *std::move(c) : nullptr;
  }

  // Sends `doc` as `org` on a raw stub: no SDK, so no signature unless the
  // test made one.
  grpc::Status RawSend(const std::string& org, v1::Document doc,
                       std::string* document_id = nullptr) {
    auto stub = v1::ExchangeService::NewStub(
        RawChannel(broker_.endpoint(), absl::StrCat("orgs/", org)));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    v1::SendRequest request;
    *request.mutable_document() = std::move(doc);
    v1::SendResponse response;
    grpc::Status status = stub->Send(&context, request, &response);
    if (document_id) *document_id = response.document_id();
    return status;
  }

  // Receives what arrives for `client` within `wait`.
  std::vector<IncomingDocument> ReceiveFor(Client& client, absl::Duration wait,
                                           size_t expect = 1) {
    absl::Mutex mu;
    std::vector<IncomingDocument> got;
    absl::StatusOr<std::unique_ptr<ReceiveSession>> session =
        client.Receive([&](const IncomingDocument& d) {
          absl::MutexLock lock(&mu);
          got.push_back(d);
          return absl::OkStatus();
        });
    EXPECT_OK(session);
    if (!session.ok()) return got;
    Eventually(
        [&] {
          absl::MutexLock lock(&mu);
          return got.size() >= expect;
        },
        wait);
    (*session)->Stop();
    EXPECT_OK((*session)->Wait());
    absl::MutexLock lock(&mu);
    return got;
  }

  uint64_t InboxTotal(const std::string& org) {
    std::unique_ptr<Client> c = Open(org);
    absl::StatusOr<v1::ListInboxResponse> inbox = c->ListInbox(10);
    EXPECT_OK(inbox);
    return inbox.ok() ? inbox->total() : 0;
  }

  ProgramResult Cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {LIENTHONG_CLI_PATH, "--ca",
                                     pki_ + "/ca.pem"};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<ProgramResult> r = RunProgram(argv, absl::Seconds(30));
    EXPECT_OK(r);
    return r.value_or(ProgramResult{});
  }

  BrokerProcess broker_;
  std::string pki_;
  std::unique_ptr<signing::SignatureVerifier> verifier_;
  testing_util::TempDir dir_;
};

TEST_F(SignaturesTest, ASignedSendGetsAReceiptAndTheRecipientSeesTheSigner) {
  std::unique_ptr<Client> sender = Open(kH49);
  v1::Document doc = NewDocument(kG22, "Báo cáo quý");
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt, sender->Send(doc));
  const v1::CustodyReceipt& r = receipt.custody_receipt;
  ASSERT_OK_AND_ASSIGN(signing::Signatory custodian,
                       signing::VerifyReceipt(*verifier_, r));
  EXPECT_EQ(custodian.principal.spiffe_id,
            "spiffe://lienthong.local/broker/central");
  EXPECT_EQ(r.document_id(), receipt.document_id);
  EXPECT_EQ(r.sender(), kH49);
  EXPECT_EQ(r.content_sha256(), receipt.content_sha256);

  std::unique_ptr<Client> recipient = Open(kG22);
  std::vector<IncomingDocument> got = ReceiveFor(*recipient, kWait);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].signed_by, "spiffe://lienthong.local/org/000.00.00.H49");
  // The receipt names exactly what the recipient got.
  EXPECT_EQ(r.document_sha256(),
            sealing::HexOf(signing::DocumentDigest(got[0].document)));

  // A resend with the same key is the same document, with the same receipt.
  v1::Document again = doc;
  again.set_idempotency_key(receipt.idempotency_key);
  ASSERT_OK_AND_ASSIGN(SendReceipt second, sender->Send(again));
  EXPECT_TRUE(second.duplicate);
  EXPECT_EQ(second.custody_receipt.document_sha256(), r.document_sha256());
}

TEST_F(SignaturesTest, UnsignedAlteredAndForgedDocumentsAreRefused) {
  // Unsigned.
  v1::Document doc = NewDocument(kG22, "Không ký");
  doc.set_sender(kH49);
  doc.set_idempotency_key("raw-unsigned");
  grpc::Status s = RawSend(kH49, doc);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("document.signature: missing"));

  // Signed, then altered on the way.
  doc.set_idempotency_key("raw-altered");
  ASSERT_OK(SignAs(kH49, &doc));
  doc.mutable_metadata()->set_subject("Nội dung đã bị sửa");
  s = RawSend(kH49, doc);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("does not verify"));

  // Signed by another organization than the sender.
  v1::Document forged = NewDocument(kG22, "Mạo danh");
  forged.set_sender(kH49);
  forged.set_idempotency_key("raw-forged");
  ASSERT_OK(SignAs(kH50, &forged));
  s = RawSend(kH49, forged);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("not by the sender 000.00.00.H49"));

  // Signed with an expired certificate, and with one of another CA.
  v1::Document expired = NewDocument(kG22, "Hết hạn");
  expired.set_sender(kH49);
  expired.set_idempotency_key("raw-expired");
  ASSERT_OK(SignWith("bad/expired-org.pem", "bad/expired-org.key", &expired));
  s = RawSend(kH49, expired);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("is not valid at"));
  v1::Document foreign = NewDocument(kG22, "CA lạ");
  foreign.set_sender(kH49);
  foreign.set_idempotency_key("raw-foreign");
  ASSERT_OK(SignWith("bad/foreign-org.pem", "bad/foreign-org.key", &foreign));
  s = RawSend(kH49, foreign);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("is not trusted"));

  // Nothing of it was stored; the control goes through.
  EXPECT_EQ(InboxTotal(kG22), 0u);
  v1::Document good = NewDocument(kG22, "Hợp lệ");
  good.set_sender(kH49);
  good.set_idempotency_key("raw-good");
  ASSERT_OK(SignAs(kH49, &good));
  s = RawSend(kH49, good);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(InboxTotal(kG22), 1u);
}

TEST_F(SignaturesTest, EvidenceVerifiesOfflineAndATamperedCopyDoesNot) {
  std::unique_ptr<Client> sender = Open(kH49);
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt,
                       sender->Send(NewDocument(kG22, "Quyết định số 15")));
  std::unique_ptr<Client> recipient = Open(kG22);
  ASSERT_EQ(ReceiveFor(*recipient, kWait).size(), 1u);
  ASSERT_OK(
      recipient->ReportStatus(receipt.document_id, v1::BUSINESS_STATUS_ACCEPTED)
          .status());
  // The acknowledgement travels on its own: wait until the history holds
  // DELIVERED as well as the reported status.
  ASSERT_TRUE(Eventually(
      [&] {
        absl::StatusOr<v1::DocumentStatus> st =
            sender->GetDocumentStatus(receipt.document_id);
        if (!st.ok()) return false;
        bool delivered = false, accepted = false;
        for (const v1::StatusEvent& e : st->history()) {
          delivered |= e.delivery_state() == v1::DELIVERY_STATE_DELIVERED;
          accepted |= e.business_status() == v1::BUSINESS_STATUS_ACCEPTED;
        }
        return delivered && accepted;
      },
      kWait));

  // The sender's and the recipient's evidence; a third party gets none.
  ASSERT_OK_AND_ASSIGN(v1::EvidenceExport exported,
                       sender->GetEvidence(receipt.document_id));
  ASSERT_OK(recipient->GetEvidence(receipt.document_id).status());
  EXPECT_THAT(Open(kH50)->GetEvidence(receipt.document_id),
              StatusIs(absl::StatusCode::kNotFound));

  ASSERT_OK_AND_ASSIGN(signing::EvidenceReport report,
                       signing::VerifyEvidence(*verifier_, exported));
  EXPECT_TRUE(report.ok()) << report.problems[0];
  const v1::Evidence& e = report.evidence;
  EXPECT_EQ(e.document_id(), receipt.document_id);
  EXPECT_EQ(e.receipt().document_sha256(),
            receipt.custody_receipt.document_sha256());
  // Accepted, delivered, accepted (03): the whole history, and the audit
  // entries of each.
  EXPECT_GE(e.history_size(), 3);
  EXPECT_GE(e.audit_entries_size(), 3);

  // An auditor exports the same through the admin API (that agencies cannot
  // call it is checked for every admin method by the grpcurl examples test).
  ClientOptions person = broker_.ClientOptionsFor(kH49);
  person.certificate_file = pki_ + "/persons/auditor.pem";
  person.private_key_file = pki_ + "/persons/auditor.key";
  absl::StatusOr<std::unique_ptr<AdminClient>> auditor =
      AdminClient::Open(person);
  ASSERT_OK(auditor);

  ASSERT_OK_AND_ASSIGN(v1::EvidenceExport by_auditor,
                       (*auditor)->ExportEvidence(receipt.document_id));
  ASSERT_OK_AND_ASSIGN(signing::EvidenceReport auditor_report,
                       signing::VerifyEvidence(*verifier_, by_auditor));
  EXPECT_TRUE(auditor_report.ok());

  // One byte of the evidence changed (the subject), and the status history
  // rewritten: each is caught.
  v1::EvidenceExport tampered = exported;
  std::string bytes = tampered.evidence();
  size_t at = bytes.find("Quyết định số 15");
  ASSERT_NE(at, std::string::npos);
  bytes[at] ^= 1;
  tampered.set_evidence(bytes);
  ASSERT_OK_AND_ASSIGN(signing::EvidenceReport bad,
                       signing::VerifyEvidence(*verifier_, tampered));
  EXPECT_FALSE(bad.ok());

  // Offline, with the command-line tool and only the CA.
  const std::string good_file = dir_.path() + "/evidence.json";
  const std::string bad_file = dir_.path() + "/tampered.json";
  std::string json;
  ASSERT_TRUE(
      google::protobuf::util::MessageToJsonString(exported, &json).ok());
  ASSERT_OK(WriteFile(good_file, json));
  json.clear();
  ASSERT_TRUE(
      google::protobuf::util::MessageToJsonString(tampered, &json).ok());
  ASSERT_OK(WriteFile(bad_file, json));
  ProgramResult ok = Cli({"verify", good_file});
  EXPECT_EQ(ok.exit_code, 0) << ok.stdout_text << ok.stderr_text;
  EXPECT_THAT(ok.stdout_text, HasSubstr("VERIFIED"));
  ProgramResult fail = Cli({"verify", bad_file});
  EXPECT_EQ(fail.exit_code, 1) << fail.stdout_text << fail.stderr_text;
  EXPECT_THAT(fail.stdout_text, HasSubstr("DOES NOT VERIFY"));
}

TEST_F(SignaturesTest, AStreamSignsBatchesAndEveryDocumentVerifies) {
  std::unique_ptr<Client> sender = Open(kH49);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SendStream> stream,
                       sender->OpenSendStream(256));
  constexpr int kDocuments = 200;
  absl::Mutex mu;
  std::vector<absl::StatusOr<SendReceipt>> results;
  for (int i = 0; i < kDocuments; ++i) {
    stream->Submit(NewDocument(kG22, absl::StrCat("Công văn ", i)),
                   [&](absl::StatusOr<SendReceipt> r) {
                     absl::MutexLock lock(&mu);
                     results.push_back(std::move(r));
                   });
  }
  ASSERT_OK(stream->Close());
  ASSERT_EQ(results.size(), static_cast<size_t>(kDocuments));
  for (const auto& r : results) {
    ASSERT_OK(r.status());
    EXPECT_OK(signing::VerifyReceipt(*verifier_, r->custody_receipt).status());
  }
  std::unique_ptr<Client> recipient = Open(kG22);
  std::vector<IncomingDocument> got =
      ReceiveFor(*recipient, absl::Seconds(30), kDocuments);
  ASSERT_EQ(got.size(), static_cast<size_t>(kDocuments));
  std::set<std::string> signatures;
  for (const IncomingDocument& d : got) {
    EXPECT_EQ(d.signed_by, "spiffe://lienthong.local/org/000.00.00.H49");
    signatures.insert(d.document.signature().signature());
  }
  // Batches: fewer signatures than documents (the first write may hold one
  // document; later ones hold what queued up meanwhile).
  EXPECT_LT(signatures.size(), static_cast<size_t>(kDocuments));
}

// An application that signs a document itself (SignAs: its own key, as an
// HSM would) may submit it on a stream too: the receipt is checked against
// that signature, and the send succeeds.
TEST_F(SignaturesTest, AStreamSendsADocumentTheApplicationSignedItself) {
  std::unique_ptr<Client> sender = Open(kH49);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SendStream> stream,
                       sender->OpenSendStream(16));
  v1::Document doc = NewDocument(kG22, "Ký sẵn");
  doc.set_sender(kH49);
  doc.set_idempotency_key("stream-presigned");
  ASSERT_OK(SignAs(kH49, &doc));
  const std::string signature = doc.signature().signature();
  absl::Mutex mu;
  std::optional<absl::StatusOr<SendReceipt>> result;
  stream->Submit(doc, [&](absl::StatusOr<SendReceipt> r) {
    absl::MutexLock lock(&mu);
    result = std::move(r);
  });
  ASSERT_OK(stream->Close());
  ASSERT_TRUE(result.has_value());
  ASSERT_OK(result->status());
  EXPECT_EQ((*result)->custody_receipt.sender_signature_sha256(),
            sealing::HexOf(signing::Sha256(signature)));
  EXPECT_EQ(InboxTotal(kG22), 1u);
}

TEST_F(SignaturesTest, TheStreamsOfOneClientShareSignatures) {
  // A long interval, so that what both streams submit after the first
  // (signed at once, the client being idle) waits for one shared batch.
  ClientOptions options = broker_.ClientOptionsFor(kH49);
  options.signature_batch_interval = absl::Seconds(1);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, Client::Open(options));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SendStream> a,
                       sender->OpenSendStream(64));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SendStream> b,
                       sender->OpenSendStream(64));
  absl::Mutex mu;
  std::vector<absl::StatusOr<SendReceipt>> results;
  auto record = [&](absl::StatusOr<SendReceipt> r) {
    absl::MutexLock lock(&mu);
    results.push_back(std::move(r));
  };
  a->Submit(NewDocument(kG22, "Công văn đầu"), record);
  Eventually(
      [&] {
        absl::MutexLock lock(&mu);
        return results.size() == 1;
      },
      absl::Seconds(10));
  for (int i = 0; i < 3; ++i) {
    a->Submit(NewDocument(kG22, absl::StrCat("Công văn A", i)), record);
    b->Submit(NewDocument(kG22, absl::StrCat("Công văn B", i)), record);
  }
  ASSERT_OK(a->Close());
  ASSERT_OK(b->Close());
  ASSERT_EQ(results.size(), 7u);
  for (const auto& r : results) ASSERT_OK(r.status());

  std::unique_ptr<Client> recipient = Open(kG22);
  std::vector<IncomingDocument> got =
      ReceiveFor(*recipient, absl::Seconds(30), 7);
  ASSERT_EQ(got.size(), 7u);
  std::map<std::string, std::set<std::string>> subjects_by_signature;
  for (const IncomingDocument& d : got) {
    EXPECT_EQ(d.signed_by, "spiffe://lienthong.local/org/000.00.00.H49");
    subjects_by_signature[d.document.signature().signature()].insert(
        d.document.metadata().subject());
  }
  // Two signatures: the first document alone, then the six of both
  // streams under one, each with its own place in the batch's tree.
  ASSERT_EQ(subjects_by_signature.size(), 2u);
  std::set<std::string> shared;
  for (const auto& [signature, subjects] : subjects_by_signature)
    if (subjects.size() == 6) shared = subjects;
  EXPECT_EQ(shared, (std::set<std::string>{"Công văn A0", "Công văn A1",
                                           "Công văn A2", "Công văn B0",
                                           "Công văn B1", "Công văn B2"}));
}

class UnsignedAllowedTest : public SignaturesTest {
 protected:
  UnsignedAllowedTest() : SignaturesTest(/*require_signatures=*/false) {}
};

TEST_F(UnsignedAllowedTest, TheRecipientRefusesADocumentItsSenderDidNotSign) {
  v1::Document doc = NewDocument(kG22, "Không ký, qua broker cho phép");
  doc.set_sender(kH49);
  doc.set_idempotency_key("raw-unsigned");
  std::string id;
  grpc::Status s = RawSend(kH49, doc, &id);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // A present signature is still checked.
  v1::Document altered = NewDocument(kG22, "Ký rồi sửa");
  altered.set_sender(kH49);
  altered.set_idempotency_key("raw-altered");
  ASSERT_OK(SignAs(kH49, &altered));
  altered.set_body("sửa sau khi ký");
  EXPECT_EQ(RawSend(kH49, altered).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  std::unique_ptr<Client> recipient = Open(kG22);
  EXPECT_TRUE(ReceiveFor(*recipient, absl::Seconds(3)).empty());
  // Reported REJECTED to the sender with the reason, and acknowledged.
  std::unique_ptr<Client> sender = Open(kH49);
  bool rejected = Eventually(
      [&] {
        absl::StatusOr<v1::DocumentStatus> st = sender->GetDocumentStatus(id);
        if (!st.ok()) return false;
        for (const v1::StatusEvent& e : st->history()) {
          if (e.business_status() == v1::BUSINESS_STATUS_REJECTED &&
              e.reason().find("carries no signature") != std::string::npos)
            return true;
        }
        return false;
      },
      kWait);
  EXPECT_TRUE(rejected);
  EXPECT_EQ(InboxTotal(kG22), 0u);
}

}  // namespace
}  // namespace lienthong::integration
