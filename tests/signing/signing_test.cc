// Document and receipt signatures, batch signing over Merkle roots and their
// verification, with certificates from the real development PKI script.
#include "lienthong/signing/signing.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::signing {
namespace {

using ::lienthong::testing_util::StatusIs;
using ::lienthong::testing_util::TempDir;
using ::testing::HasSubstr;

constexpr char kTrustDomain[] = "lienthong.local";
constexpr char kH49[] = "000.00.00.H49";
constexpr char kG22[] = "000.00.00.G22";
constexpr char kH50[] = "000.00.00.H50";

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Digest(int i) { return Sha256(absl::StrCat("leaf ", i)); }

TEST(MerkleTest, EveryLeafOfEverySizeProvesItsPlace) {
  for (int n = 1; n <= 33; ++n) {
    std::vector<std::string> digests;
    for (int i = 0; i < n; ++i) digests.push_back(Digest(i));
    const std::string root = MerkleRoot(digests);
    for (int i = 0; i < n; ++i) {
      std::vector<std::string> path = MerkleAuditPath(digests, i);
      ASSERT_OK_AND_ASSIGN(std::string got,
                           RootFromAuditPath(digests[i], i, n, path));
      EXPECT_EQ(got, root) << "n=" << n << " i=" << i;
      // Another leaf, another place, or another size leads elsewhere.
      absl::StatusOr<std::string> other =
          RootFromAuditPath(Digest(1000), i, n, path);
      ASSERT_OK(other.status());
      EXPECT_NE(*other, root);
      if (n > 1) {
        absl::StatusOr<std::string> moved =
            RootFromAuditPath(digests[i], (i + 1) % n, n, path);
        EXPECT_TRUE(!moved.ok() || *moved != root) << "n=" << n << " i=" << i;
      }
    }
  }
  EXPECT_THAT(RootFromAuditPath(Digest(0), 3, 3, {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      RootFromAuditPath(Digest(0), 0, 4, {Digest(1)}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shorter")));
}

class SigningTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const std::string cmd =
        absl::StrCat("/bin/bash '", LIENTHONG_SOURCE_DIR,
                     "/deploy/pki/make-dev-pki.sh' --test-extras --out '",
                     dir_->path(), "' --org ", kH49, " --org ", kG22, " --org ",
                     kH50, " --broker central >/dev/null");
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string Path(const std::string& rel) {
    return absl::StrCat(dir_->path(), "/", rel);
  }

  std::unique_ptr<Signer> SignerFor(const std::string& cert,
                                    const std::string& key) {
    absl::StatusOr<std::unique_ptr<Signer>> s =
        Signer::FromFiles(Path(cert), Path(key));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  std::unique_ptr<Signer> Org(const std::string& org) {
    return SignerFor(absl::StrCat("orgs/", org, ".pem"),
                     absl::StrCat("orgs/", org, ".key"));
  }

  std::unique_ptr<SignatureVerifier> Verifier() {
    VerifierOptions options;
    options.trust_root_pem = Read(Path("ca.pem"));
    options.trust_domain = kTrustDomain;
    absl::StatusOr<std::unique_ptr<SignatureVerifier>> v =
        SignatureVerifier::Create(std::move(options));
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *std::move(v) : nullptr;
  }

  static v1::Document Document(const std::string& subject) {
    v1::Document d;
    d.set_idempotency_key(absl::StrCat("k-", subject));
    d.set_sender(kH49);
    d.add_recipients(kG22);
    d.mutable_metadata()->set_subject(subject);
    d.mutable_metadata()->set_number("12");
    d.set_body("nội dung");
    d.set_body_content_type("text/plain");
    v1::Attachment* a = d.add_attachments();
    a->set_name("phu-luc.pdf");
    a->set_content("%PDF-1.7 phụ lục");
    return d;
  }

  static TempDir* dir_;
};

TempDir* SigningTest::dir_ = nullptr;

TEST_F(SigningTest, ABatchOfDocumentsSharesOneSignatureAndEachVerifies) {
  std::unique_ptr<Signer> signer = Org(kH49);
  std::unique_ptr<SignatureVerifier> verifier = Verifier();
  ASSERT_TRUE(signer && verifier);
  std::vector<v1::Document> docs;
  std::vector<std::string> digests;
  for (int i = 0; i < 7; ++i) {
    docs.push_back(Document(absl::StrCat("Công văn ", i)));
    digests.push_back(DocumentDigest(docs.back()));
  }
  ASSERT_OK_AND_ASSIGN(std::vector<v1::Signature> sigs,
                       signer->SignBatch(digests, absl::Now()));
  ASSERT_EQ(sigs.size(), docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    EXPECT_EQ(sigs[i].signature(), sigs[0].signature());
    EXPECT_EQ(sigs[i].tree_size(), 7u);
    *docs[i].mutable_signature() = sigs[i];
    ASSERT_OK_AND_ASSIGN(Signatory who, VerifyDocumentSignature(
                                            *verifier, docs[i], std::nullopt));
    EXPECT_EQ(who.principal.name, kH49);
  }
  // Another document's place in the batch proves nothing for this one.
  v1::Document swapped = docs[2];
  *swapped.mutable_signature() = sigs[3];
  EXPECT_THAT(VerifyDocumentSignature(*verifier, swapped, std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not verify")));
}

TEST_F(SigningTest, WhatTheBrokerAddsDoesNotChangeTheDigest) {
  v1::Document d = Document("Báo cáo");
  const std::string before = DocumentDigest(d);
  d.set_id("01JABCDEF");
  d.add_trace()->set_broker("spiffe://lienthong.local/broker/central");
  d.mutable_accepted_at()->set_seconds(1700000000);
  d.set_content_sha256("ab");
  d.mutable_attachments(0)->set_sha256(
      sealing::HexOf(Sha256(d.attachments(0).content())));
  d.mutable_attachments(0)->set_size(d.attachments(0).content().size());
  EXPECT_EQ(DocumentDigest(d), before);
}

TEST_F(SigningTest, EveryPartOfTheDocumentIsCovered) {
  const v1::Document base = Document("Quyết định");
  const std::string digest = DocumentDigest(base);
  std::vector<std::pair<std::string, std::function<void(v1::Document*)>>>
      changes = {
          {"subject",
           [](v1::Document* d) {
             d->mutable_metadata()->set_subject("Quyết định khác");
           }},
          {"classification",
           [](v1::Document* d) {
             d->mutable_metadata()->set_classification(
                 v1::CLASSIFICATION_CONFIDENTIAL);
           }},
          {"body", [](v1::Document* d) { d->set_body("nội dung khác"); }},
          {"attachment",
           [](v1::Document* d) {
             d->mutable_attachments(0)->set_content("%PDF-1.7 khác");
           }},
          {"attachment name",
           [](v1::Document* d) {
             d->mutable_attachments(0)->set_name("khac.pdf");
           }},
          {"recipients", [](v1::Document* d) { d->add_recipients(kH49); }},
          {"sender", [](v1::Document* d) { d->set_sender(kG22); }},
          {"idempotency key",
           [](v1::Document* d) { d->set_idempotency_key("other"); }},
          {"sealed ciphertext",
           [](v1::Document* d) { d->mutable_sealed()->set_ciphertext("x"); }},
      };
  for (const auto& [what, change] : changes) {
    v1::Document d = base;
    change(&d);
    EXPECT_NE(DocumentDigest(d), digest) << what;
  }
  v1::Document sealed = base;
  sealed.mutable_sealed()->set_ciphertext("c1");
  const std::string sealed_digest = DocumentDigest(sealed);
  sealed.mutable_sealed()->add_keys()->set_org(kG22);
  EXPECT_NE(DocumentDigest(sealed), sealed_digest) << "wrapped keys";
}

TEST_F(SigningTest, ADocumentSignedByAnotherOrganizationIsRefused) {
  std::unique_ptr<Signer> g22 = Org(kG22);
  std::unique_ptr<SignatureVerifier> verifier = Verifier();
  ASSERT_TRUE(g22 && verifier);
  v1::Document d = Document("Giả mạo");  // sender H49
  ASSERT_OK_AND_ASSIGN(*d.mutable_signature(),
                       g22->Sign(DocumentDigest(d), absl::Now()));
  EXPECT_THAT(VerifyDocumentSignature(*verifier, d, std::nullopt),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("not by the sender 000.00.00.H49")));
}

TEST_F(SigningTest, UntrustedExpiredAndFutureSignaturesAreRefused) {
  std::unique_ptr<SignatureVerifier> verifier = Verifier();
  ASSERT_TRUE(verifier);
  v1::Document d = Document("Thử");
  const std::string digest = DocumentDigest(d);

  std::unique_ptr<Signer> foreign =
      SignerFor("bad/foreign-org.pem", "bad/foreign-org.key");
  ASSERT_TRUE(foreign);
  ASSERT_OK_AND_ASSIGN(*d.mutable_signature(),
                       foreign->Sign(digest, absl::Now()));
  EXPECT_THAT(
      VerifyDocumentSignature(*verifier, d, std::nullopt),
      StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("not trusted")));

  std::unique_ptr<Signer> expired =
      SignerFor("bad/expired-org.pem", "bad/expired-org.key");
  ASSERT_TRUE(expired);
  ASSERT_OK_AND_ASSIGN(*d.mutable_signature(),
                       expired->Sign(digest, absl::Now()));
  EXPECT_THAT(
      VerifyDocumentSignature(*verifier, d, std::nullopt),
      StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("not valid at")));
  // Backdated into its validity, it is still refused: the CA (made by
  // this test) was not valid then, and a broker also checks it now.
  const absl::Time then =
      absl::FromCivil(absl::CivilDay(2020, 1, 15), absl::UTCTimeZone());
  ASSERT_OK_AND_ASSIGN(*d.mutable_signature(), expired->Sign(digest, then));
  EXPECT_THAT(
      VerifyDocumentSignature(*verifier, d, absl::Now()),
      StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("not valid at")));

  std::unique_ptr<Signer> h49 = Org(kH49);
  ASSERT_OK_AND_ASSIGN(*d.mutable_signature(),
                       h49->Sign(digest, absl::Now() + absl::Hours(1)));
  EXPECT_THAT(
      VerifyDocumentSignature(*verifier, d, std::nullopt),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("in the future")));

  ASSERT_OK_AND_ASSIGN(*d.mutable_signature(), h49->Sign(digest, absl::Now()));
  d.mutable_signature()->set_scheme("rsa-md5");
  EXPECT_THAT(
      VerifyDocumentSignature(*verifier, d, std::nullopt),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scheme")));
  d.clear_signature();
  EXPECT_THAT(
      VerifyDocumentSignature(*verifier, d, std::nullopt),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing")));
}

TEST_F(SigningTest, ASignatureWithARevokedCertificateIsRefused) {
  // H50's organization key is compromised and its certificate revoked.
  const std::string cmd = absl::StrCat(
      "/bin/bash '", LIENTHONG_SOURCE_DIR, "/deploy/pki/revoke.sh' --out '",
      dir_->path(), "' --reason keyCompromise '",
      Path(absl::StrCat("orgs/", kH50, ".pem")), "' >/dev/null 2>&1");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  VerifierOptions options;
  options.trust_root_pem = Read(Path("ca.pem"));
  options.trust_domain = kTrustDomain;
  options.crl_directory = Path("crl");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SignatureVerifier> with_crl,
                       SignatureVerifier::Create(std::move(options)));

  std::unique_ptr<Signer> h50 = Org(kH50);
  ASSERT_TRUE(h50);
  v1::Document d = Document("Ký bằng khóa đã thu hồi");
  d.set_sender(kH50);
  ASSERT_OK_AND_ASSIGN(*d.mutable_signature(),
                       h50->Sign(DocumentDigest(d), absl::Now()));
  EXPECT_THAT(VerifyDocumentSignature(*with_crl, d, absl::Now()),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("certificate revoked")));
  // The control: the same CRL lets H49 through, and without the CRL the
  // revoked signature would have passed.
  std::unique_ptr<Signer> h49 = Org(kH49);
  v1::Document ok = Document("Ký hợp lệ");
  ASSERT_OK_AND_ASSIGN(*ok.mutable_signature(),
                       h49->Sign(DocumentDigest(ok), absl::Now()));
  EXPECT_OK(VerifyDocumentSignature(*with_crl, ok, absl::Now()).status());
  std::unique_ptr<SignatureVerifier> without_crl = Verifier();
  EXPECT_OK(VerifyDocumentSignature(*without_crl, d, absl::Now()).status());
}

// Revocation that cannot be checked (the CRL directory has no CRL of the
// issuer, as while an operator replaces the file) is UNAVAILABLE, to be
// tried again: not a refusal of the signature, which is not at fault.
TEST_F(SigningTest, RevocationThatCannotBeCheckedIsUnavailableNotRefused) {
  const std::string empty = Path("no-crl-yet");
  std::filesystem::create_directories(empty);
  VerifierOptions options;
  options.trust_root_pem = Read(Path("ca.pem"));
  options.trust_domain = kTrustDomain;
  options.crl_directory = empty;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SignatureVerifier> verifier,
                       SignatureVerifier::Create(std::move(options)));
  std::unique_ptr<Signer> h49 = Org(kH49);
  ASSERT_TRUE(h49);
  v1::Document d = Document("Chưa kiểm tra được thu hồi");
  ASSERT_OK_AND_ASSIGN(*d.mutable_signature(),
                       h49->Sign(DocumentDigest(d), absl::Now()));
  EXPECT_THAT(VerifyDocumentSignature(*verifier, d, absl::Now()),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("revocation of the certificate of "
                                 "spiffe://lienthong.local/org/000.00.00.H49 "
                                 "cannot be checked")));
}

TEST_F(SigningTest, AnApprovalVerifiesOnlyAsItsApproversUnaltered) {
  std::unique_ptr<Signer> approver =
      SignerFor("persons/approver.pem", "persons/approver.key");
  std::unique_ptr<SignatureVerifier> verifier = Verifier();
  ASSERT_TRUE(approver && verifier);
  const std::string id = "01JAPPROVAL";
  const std::string manifest = sealing::HexOf(Digest(4));
  v1::Approval a;
  a.set_approver(approver->principal().spiffe_id);
  a.set_content_sha256(sealing::HexOf(Digest(2)));
  a.set_decision(v1::APPROVAL_DECISION_APPROVE);
  a.set_comment("Đã rà soát");
  // One decision given as two roles; this approval counts for the second.
  v1::Approver* as = a.add_as();
  as->set_role("approver");
  as->set_org(kH49);
  as = a.add_as();
  as->set_role("director");
  as->set_org(kH49);
  a.set_role("director");
  a.set_org(kH49);
  ASSERT_OK_AND_ASSIGN(
      *a.mutable_signature(),
      approver->Sign(ApprovalDigest(id, manifest, a.content_sha256(),
                                    a.decision(), a.comment(), a.as()),
                     absl::Now()));
  ASSERT_OK_AND_ASSIGN(Signatory who, VerifyApproval(*verifier, id, manifest, a,
                                                     "a", std::nullopt));
  EXPECT_EQ(who.principal.spiffe_id,
            "spiffe://lienthong.local/person/approver");
  // The hash in capitals is the same hash, and the roles in another order
  // are the same roles.
  EXPECT_EQ(
      ApprovalDigest(id, manifest, absl::AsciiStrToUpper(a.content_sha256()),
                     a.decision(), a.comment(), a.as()),
      ApprovalDigest(id, manifest, a.content_sha256(), a.decision(),
                     a.comment(), a.as()));
  v1::Approval reordered = a;
  reordered.mutable_as()->SwapElements(0, 1);
  EXPECT_OK(
      VerifyApproval(*verifier, id, manifest, reordered, "a", std::nullopt));

  // Each thing decided is covered: another document, content, decision or
  // comment does not verify.
  EXPECT_THAT(
      VerifyApproval(*verifier, "01JOTHER", manifest, a, "a", std::nullopt),
      StatusIs(absl::StatusCode::kInvalidArgument));
  // The same content sent elsewhere (another manifest) does not verify.
  EXPECT_THAT(VerifyApproval(*verifier, id, sealing::HexOf(Digest(5)), a, "a",
                             std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument));
  v1::Approval other = a;
  other.set_content_sha256(sealing::HexOf(Digest(3)));
  EXPECT_THAT(VerifyApproval(*verifier, id, manifest, other, "a", std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument));
  other = a;
  other.set_decision(v1::APPROVAL_DECISION_REJECT);
  EXPECT_THAT(VerifyApproval(*verifier, id, manifest, other, "a", std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument));
  other = a;
  other.set_comment("Đồng ý");
  EXPECT_THAT(VerifyApproval(*verifier, id, manifest, other, "a", std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // The roles are signed: one more, one fewer, or counting the signature
  // for a role it was not given as does not verify.
  other = a;
  other.mutable_as(1)->set_role("chairman");
  EXPECT_THAT(VerifyApproval(*verifier, id, manifest, other, "a", std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument));
  other = a;
  other.mutable_as()->RemoveLast();
  other.set_role("approver");
  EXPECT_THAT(VerifyApproval(*verifier, id, manifest, other, "a", std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument));
  other = a;
  other.set_role("chairman");
  EXPECT_THAT(VerifyApproval(*verifier, id, manifest, other, "a", std::nullopt),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("counted as chairman@000.00.00.H49, which "
                                 "spiffe://lienthong.local/person/approver "
                                 "did not sign it as (signed as "
                                 "approver@000.00.00.H49, "
                                 "director@000.00.00.H49)")));
  other = a;
  other.set_org(kG22);
  EXPECT_THAT(VerifyApproval(*verifier, id, manifest, other, "a", std::nullopt),
              StatusIs(absl::StatusCode::kPermissionDenied));
  other = a;
  other.clear_as();
  EXPECT_THAT(
      VerifyApproval(*verifier, id, manifest, other, "a", std::nullopt),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("names no role")));
  // Recorded as another person's, or signed by an organization, or not
  // signed at all: refused, saying so.
  other = a;
  other.set_approver("spiffe://lienthong.local/person/auditor");
  EXPECT_THAT(VerifyApproval(*verifier, id, manifest, other, "a", std::nullopt),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("not by the approver who decided")));
  std::unique_ptr<Signer> h49 = Org(kH49);
  other = a;
  ASSERT_OK_AND_ASSIGN(
      *other.mutable_signature(),
      h49->Sign(ApprovalDigest(id, manifest, a.content_sha256(), a.decision(),
                               a.comment(), a.as()),
                absl::Now()));
  EXPECT_THAT(VerifyApproval(*verifier, id, manifest, other, "a", std::nullopt),
              StatusIs(absl::StatusCode::kPermissionDenied));
  other.clear_signature();
  EXPECT_THAT(
      VerifyApproval(*verifier, id, manifest, other, "a", std::nullopt),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a: missing")));
}

TEST_F(SigningTest, AReceiptVerifiesOnlyAsItsBrokersUnaltered) {
  std::unique_ptr<Signer> broker =
      SignerFor("brokers/central.pem", "brokers/central.key");
  std::unique_ptr<SignatureVerifier> verifier = Verifier();
  ASSERT_TRUE(broker && verifier);
  v1::CustodyReceipt r;
  r.set_document_id("01JABC");
  r.set_document_sha256(sealing::HexOf(Digest(1)));
  r.set_sender(kH49);
  r.add_recipients(kG22);
  r.mutable_accepted_at()->set_seconds(1700000000);
  r.set_broker(broker->principal().spiffe_id);
  ASSERT_OK_AND_ASSIGN(*r.mutable_signature(),
                       broker->Sign(ReceiptDigest(r), absl::Now()));
  ASSERT_OK_AND_ASSIGN(Signatory who, VerifyReceipt(*verifier, r));
  EXPECT_EQ(who.principal.spiffe_id, "spiffe://lienthong.local/broker/central");

  v1::CustodyReceipt altered = r;
  altered.mutable_accepted_at()->set_seconds(1700000001);
  EXPECT_THAT(VerifyReceipt(*verifier, altered),
              StatusIs(absl::StatusCode::kInvalidArgument));
  v1::CustodyReceipt renamed = r;
  renamed.set_broker("spiffe://lienthong.local/broker/other");
  EXPECT_THAT(VerifyReceipt(*verifier, renamed),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // An organization cannot issue custody receipts.
  std::unique_ptr<Signer> h49 = Org(kH49);
  v1::CustodyReceipt forged = r;
  forged.set_broker(h49->principal().spiffe_id);
  ASSERT_OK_AND_ASSIGN(*forged.mutable_signature(),
                       h49->Sign(ReceiptDigest(forged), absl::Now()));
  EXPECT_THAT(VerifyReceipt(*verifier, forged),
              StatusIs(absl::StatusCode::kPermissionDenied));
}

}  // namespace
}  // namespace lienthong::signing
