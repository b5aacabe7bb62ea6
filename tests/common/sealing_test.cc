// The default ContentCipher and the verification of encryption certificates,
// with certificates from the real development PKI script.
#include "lienthong/common/sealing.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::sealing {
namespace {

using ::lienthong::testing_util::TempDir;

constexpr char kTrustDomain[] = "lienthong.local";
constexpr char kH49[] = "000.00.00.H49";
constexpr char kH50[] = "000.00.00.H50";
constexpr char kG22[] = "000.00.00.G22";

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// One PKI for the whole test binary.
class SealingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const std::string cmd = absl::StrCat(
        "/bin/bash '", LIENTHONG_SOURCE_DIR,
        "/deploy/pki/make-dev-pki.sh' --test-extras --out '", dir_->path(),
        "' --org ", kH49, " --org ", kH50, " --org ", kG22, " >/dev/null");
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  static std::string Path(const std::string& rel) {
    return absl::StrCat(dir_->path(), "/", rel);
  }
  static std::string Ca() { return Read(Path("ca.pem")); }

  EncryptionCertificate Certificate(const std::string& org) {
    absl::StatusOr<EncryptionCertificate> c = VerifyEncryptionCertificate(
        Read(Path(absl::StrCat("orgs/", org, ".enc.pem"))), Ca(), kTrustDomain,
        absl::Now());
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : EncryptionCertificate{};
  }

  std::unique_ptr<DecryptionKey> Key(const std::string& org) {
    absl::StatusOr<std::unique_ptr<DecryptionKey>> k =
        cipher_->LoadKey(Read(Path(absl::StrCat("orgs/", org, ".enc.pem"))),
                         Read(Path(absl::StrCat("orgs/", org, ".enc.key"))));
    EXPECT_TRUE(k.ok()) << k.status();
    return k.ok() ? *std::move(k) : nullptr;
  }

  static TempDir* dir_;
  std::unique_ptr<ContentCipher> cipher_ = NewDefaultCipher();
};

TempDir* SealingTest::dir_ = nullptr;

TEST_F(SealingTest, EachRecipientOpensWhatWasSealedForSeveral) {
  const std::string content = "Quyết định bổ nhiệm cán bộ: nội dung mật";
  absl::StatusOr<Envelope> env =
      cipher_->Seal(content, "aad", {Certificate(kH49), Certificate(kH50)});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->scheme, kDefaultScheme);
  ASSERT_EQ(env->keys.size(), 2u);
  EXPECT_EQ(env->ciphertext.find("bổ nhiệm"), std::string::npos);
  // One-time keys: nothing links the two recipients' wraps.
  EXPECT_NE(env->keys[0].ephemeral_public_key,
            env->keys[1].ephemeral_public_key);
  for (const char* org : {kH49, kH50}) {
    std::unique_ptr<DecryptionKey> key = Key(org);
    absl::StatusOr<std::string> back =
        cipher_->Open(*env, "aad", org, {key.get()});
    ASSERT_TRUE(back.ok()) << org << ": " << back.status();
    EXPECT_EQ(*back, content);
  }
}

TEST_F(SealingTest, SealingTwiceGivesDifferentCiphertexts) {
  absl::StatusOr<Envelope> a = cipher_->Seal("same", "", {Certificate(kH49)});
  absl::StatusOr<Envelope> b = cipher_->Seal("same", "", {Certificate(kH49)});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->ciphertext, b->ciphertext);
  EXPECT_NE(a->nonce, b->nonce);
}

TEST_F(SealingTest, EmptyAndLargeContentRoundTrip) {
  std::unique_ptr<DecryptionKey> key = Key(kH49);
  for (size_t size : {size_t{0}, size_t{1}, size_t{3} << 20}) {
    std::string content(size, 'x');
    for (size_t i = 0; i < size; ++i) content[i] = static_cast<char>(i * 31);
    absl::StatusOr<Envelope> env =
        cipher_->Seal(content, "", {Certificate(kH49)});
    ASSERT_TRUE(env.ok()) << env.status();
    EXPECT_EQ(env->ciphertext.size(), size + 16);
    absl::StatusOr<std::string> back =
        cipher_->Open(*env, "", kH49, {key.get()});
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, content);
  }
}

TEST_F(SealingTest, AlteredCiphertextIsDataLoss) {
  absl::StatusOr<Envelope> env =
      cipher_->Seal("content", "aad", {Certificate(kH49)});
  ASSERT_TRUE(env.ok());
  std::unique_ptr<DecryptionKey> key = Key(kH49);
  for (size_t i : {size_t{0}, env->ciphertext.size() - 1}) {
    Envelope altered = *env;
    altered.ciphertext[i] ^= 1;
    absl::StatusOr<std::string> r =
        cipher_->Open(altered, "aad", kH49, {key.get()});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
    EXPECT_NE(r.status().message().find("altered"), std::string::npos);
  }
  Envelope wrapped = *env;
  wrapped.keys[0].wrapped_key[3] ^= 1;
  EXPECT_EQ(cipher_->Open(wrapped, "aad", kH49, {key.get()}).status().code(),
            absl::StatusCode::kDataLoss);
  Envelope truncated = *env;
  truncated.ciphertext.resize(truncated.ciphertext.size() - 1);
  EXPECT_EQ(cipher_->Open(truncated, "aad", kH49, {key.get()}).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(SealingTest, OtherAssociatedDataIsDataLoss) {
  absl::StatusOr<Envelope> env =
      cipher_->Seal("content", "sender=A", {Certificate(kH49)});
  ASSERT_TRUE(env.ok());
  std::unique_ptr<DecryptionKey> key = Key(kH49);
  EXPECT_EQ(cipher_->Open(*env, "sender=B", kH49, {key.get()}).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(SealingTest, ANonRecipientCannotOpen) {
  absl::StatusOr<Envelope> env =
      cipher_->Seal("content", "", {Certificate(kH49)});
  ASSERT_TRUE(env.ok());
  std::unique_ptr<DecryptionKey> other = Key(kH50);
  // H50 has no wrapped key at all.
  EXPECT_EQ(cipher_->Open(*env, "", kH50, {other.get()}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // H50's key presented for H49's wrap: no key fits.
  absl::StatusOr<std::string> r = cipher_->Open(*env, "", kH49, {other.get()});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("sha256:"), std::string::npos);
  // A wrap relabelled for H50 (a broker moving keys around) does not open
  // with H50's key either: the certificate digest does not match it.
  Envelope relabelled = *env;
  relabelled.keys[0].org = kH50;
  EXPECT_FALSE(cipher_->Open(relabelled, "", kH50, {other.get()}).ok());
}

TEST_F(SealingTest, MalformedEnvelopesAreInvalidArgument) {
  absl::StatusOr<Envelope> env =
      cipher_->Seal("content", "", {Certificate(kH49)});
  ASSERT_TRUE(env.ok());
  std::unique_ptr<DecryptionKey> key = Key(kH49);
  Envelope scheme = *env;
  scheme.scheme = "national-cipher-v9";
  EXPECT_EQ(cipher_->Open(scheme, "", kH49, {key.get()}).status().code(),
            absl::StatusCode::kInvalidArgument);
  Envelope point = *env;
  point.keys[0].ephemeral_public_key[5] ^= 0x55;  // off the curve
  absl::StatusOr<std::string> r = cipher_->Open(point, "", kH49, {key.get()});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().code(), absl::StatusCode::kOk);
  Envelope nonce = *env;
  nonce.nonce.resize(4);
  EXPECT_EQ(cipher_->Open(nonce, "", kH49, {key.get()}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SealingTest, RetiredKeysStillOpen) {
  // The recipient configured with several keys opens with the one the
  // sender used.
  absl::StatusOr<Envelope> env =
      cipher_->Seal("content", "", {Certificate(kH49)});
  ASSERT_TRUE(env.ok());
  std::unique_ptr<DecryptionKey> other = Key(kH50);
  std::unique_ptr<DecryptionKey> mine = Key(kH49);
  absl::StatusOr<std::string> r =
      cipher_->Open(*env, "", kH49, {other.get(), mine.get()});
  EXPECT_TRUE(r.ok()) << r.status();
}

TEST_F(SealingTest, VerificationRefusesWhatIsNotATrustedEncryptionCertificate) {
  const std::string enc = Read(Path("orgs/000.00.00.H49.enc.pem"));
  // Another CA.
  absl::StatusOr<EncryptionCertificate> r = VerifyEncryptionCertificate(
      enc, Read(Path("bad/foreign-ca.pem")), kTrustDomain, absl::Now());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("trust root"), std::string::npos)
      << r.status();
  // Another trust domain.
  r = VerifyEncryptionCertificate(enc, Ca(), "other.example", absl::Now());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  // Expired (as seen from 2100).
  r = VerifyEncryptionCertificate(
      enc, Ca(), kTrustDomain,
      absl::FromCivil(absl::CivilSecond(2100, 1, 1), absl::UTCTimeZone()));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("expired"), std::string::npos)
      << r.status();
  // The TLS certificate: no keyAgreement.
  r = VerifyEncryptionCertificate(Read(Path("orgs/000.00.00.H49.pem")), Ca(),
                                  kTrustDomain, absl::Now());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("keyAgreement"), std::string::npos)
      << r.status();
  // Not a certificate; no trust root.
  EXPECT_EQ(VerifyEncryptionCertificate("junk", Ca(), kTrustDomain, absl::Now())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(VerifyEncryptionCertificate(enc, "", kTrustDomain, absl::Now())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // The real one, as PEM and as DER.
  r = VerifyEncryptionCertificate(enc, Ca(), kTrustDomain, absl::Now());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->org, kH49);
  EXPECT_EQ(r->sha256.size(), 32u);
  absl::StatusOr<EncryptionCertificate> der =
      VerifyEncryptionCertificate(r->der, Ca(), kTrustDomain, absl::Now());
  ASSERT_TRUE(der.ok()) << der.status();
  EXPECT_EQ(der->sha256, r->sha256);
}

TEST_F(SealingTest, LoadKeyRefusesAKeyOfAnotherCertificate) {
  absl::StatusOr<std::unique_ptr<DecryptionKey>> k =
      cipher_->LoadKey(Read(Path("orgs/000.00.00.H49.enc.pem")),
                       Read(Path("orgs/000.00.00.H50.enc.key")));
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(k.status().message().find("does not belong"), std::string::npos);
  k = cipher_->LoadKey(Read(Path("orgs/000.00.00.H49.enc.pem")), "no key");
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lienthong::sealing
