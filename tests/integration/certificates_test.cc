// Certificates against a real lienthongd over mutual TLS on loopback:
// revocation from a CRL directory (and what a running broker reads of it),
// the maximum connection age that ends a revoked peer's open streams, expiry,
// and the TLS versions and cipher suites the broker accepts (probed with the
// `openssl s_client` command).
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/client.h"
#include "lienthong/common/status_macros.h"
#include "tests/integration/broker_process.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::integration {
namespace {

using ::lienthong::testing_util::Collector;
using ::lienthong::testing_util::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

v1::Document NewDocument(const std::string& to, const std::string& subject) {
  v1::Document doc;
  doc.add_recipients(to);
  doc.mutable_metadata()->set_subject(subject);
  doc.mutable_metadata()->set_document_type("Công văn");
  doc.set_body("Kính gửi ...");
  doc.set_body_content_type("text/plain; charset=utf-8");
  return doc;
}

class CertificatesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(pki_, DevPkiDir());
    // A CA database and CRL directory of this test's own, for the dev CA.
    ca_dir_ = dir_.path() + "/ca";
    std::filesystem::create_directories(ca_dir_);
    for (const char* f : {"ca.pem", "ca.key"})
      std::filesystem::copy_file(pki_ + "/" + f, ca_dir_ + "/" + f);
    ASSERT_OK(Revoke({}));  // the empty CRL: <hash>.r0
  }

  std::string crl_dir() const { return ca_dir_ + "/crl"; }
  std::string OrgCert(const std::string& org) const {
    return absl::StrCat(pki_, "/orgs/", org, ".pem");
  }

  // deploy/pki/revoke.sh --out <ca dir> CERT...
  absl::Status Revoke(const std::vector<std::string>& certs) {
    std::vector<std::string> argv = {
        "/bin/bash",
        std::string(LIENTHONG_SOURCE_DIR) + "/deploy/pki/revoke.sh", "--out",
        ca_dir_};
    argv.insert(argv.end(), certs.begin(), certs.end());
    absl::StatusOr<ProgramResult> run = RunProgram(argv, absl::Seconds(30));
    if (!run.ok()) return run.status();
    if (run->exit_code != 0) {
      return absl::InternalError(absl::StrCat("revoke.sh exit ", run->exit_code,
                                              ": ", run->stderr_text));
    }
    return absl::OkStatus();
  }

  // Broker options with revocation on and the given maximum connection age
  // (0: none) and grace.
  BrokerOptions WithCrl(int max_age_seconds = 3600, int grace_seconds = 30) {
    BrokerOptions o;
    o.config_yaml = absl::StrCat(
        "tls:\n  crl_directory: ", crl_dir(),
        "\n  max_connection_age_seconds: ", max_age_seconds,
        "\n  max_connection_age_grace_seconds: ", grace_seconds, "\n");
    return o;
  }

  // Client options for `org` that give up quickly.
  ClientOptions Quick(const BrokerProcess& broker, const std::string& org) {
    ClientOptions o = broker.ClientOptionsFor(org);
    o.call_timeout = absl::Seconds(5);
    o.retry_budget = absl::Seconds(3);
    o.max_backoff = absl::Milliseconds(500);
    return o;
  }

  // A receive session of 000.00.00.H49 that checks revocation against
  // crl_dir(); its handler collects each document's subject.
  struct Receiving {
    std::unique_ptr<Client> client;
    std::unique_ptr<ReceiveSession> session;  // goes before its client
    Collector<std::string> got;
  };
  absl::StatusOr<Receiving> ReceiveAtH49WithCrl(const BrokerProcess& broker,
                                                ReceiveOptions options) {
    ClientOptions h49 = Quick(broker, kH49);
    h49.crl_directory = crl_dir();
    Receiving r;
    ASSIGN_OR_RETURN(r.client, Client::Open(h49));
    ASSIGN_OR_RETURN(r.session, r.client->Receive(
                                    [got = r.got](const IncomingDocument& d) {
                                      got.Add(d.document.metadata().subject());
                                      return absl::OkStatus();
                                    },
                                    options));
    return r;
  }

  absl::Status SendFrom(const ClientOptions& options, const std::string& to) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Open(options);
    if (!client.ok()) return client.status();
    return (*client)->Send(NewDocument(to, "kiểm tra")).status();
  }

  testing_util::TempDir dir_;
  std::string pki_;
  std::string ca_dir_;
};

TEST_F(CertificatesTest, BrokerRefusesToStartWithoutAUsableCrlDirectory) {
  BrokerOptions missing;
  missing.config_yaml = "tls:\n  crl_directory: /nonexistent/crl\n";
  BrokerProcess a(missing);
  absl::Status s = a.Start();
  EXPECT_THAT(s.message(), AllOf(HasSubstr("tls.crl_directory"),
                                 HasSubstr("not a readable directory")));

  std::filesystem::create_directories(dir_.path() + "/empty");
  BrokerOptions empty;
  empty.config_yaml =
      absl::StrCat("tls:\n  crl_directory: ", dir_.path(), "/empty\n");
  BrokerProcess b(empty);
  s = b.Start();
  EXPECT_THAT(s.message(), AllOf(HasSubstr("tls.crl_directory"),
                                 HasSubstr("no CRL of the trust root")));
}

TEST_F(CertificatesTest, ACrlAddedWhileRunningRefusesTheNextConnection) {
  BrokerProcess broker(WithCrl());
  ASSERT_OK(broker.Start());
  // Before: H49 connects (the broker reads <hash>.r0, which lists nothing).
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> open_before,
                       Client::Open(Quick(broker, kH49)));
  ASSERT_OK(open_before->Send(NewDocument(kG22, "trước")).status());

  ASSERT_OK(Revoke({OrgCert(kH49)}));  // adds <hash>.r1

  // A new connection of H49 is refused at the handshake; the broker's log
  // says why (OpenSSL's X509_V_ERR_CERT_REVOKED is 23).
  absl::Status refused = SendFrom(Quick(broker, kH49), kG22);
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kUnavailable,
                                HasSubstr("closed the connection during the "
                                          "TLS handshake")));
  EXPECT_THAT(broker.stderr_text(), HasSubstr("Certificate verify failed "
                                              "with code 23"));
  // With the CRLs at hand the SDK names the problem before connecting.
  ClientOptions with_crl = Quick(broker, kH49);
  with_crl.crl_directory = crl_dir();
  EXPECT_THAT(Client::Open(with_crl).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("000.00.00.H49.pem"),
                             HasSubstr("was revoked at"))));
  // Other organizations are not affected.
  EXPECT_OK(SendFrom(Quick(broker, kG22), kH49));
  // The connection H49 opened before stays up until its maximum age (one
  // hour here): that is what the next test's short maximum age ends.
  EXPECT_OK(open_before->Send(NewDocument(kG22, "vẫn mở")).status());
}

TEST_F(CertificatesTest, RevocationEndsAnOpenReceiveStreamWithinTheMaximumAge) {
  BrokerProcess broker(WithCrl(/*max_age_seconds=*/2, /*grace_seconds=*/1));
  ASSERT_OK(broker.Start());
  ClientOptions h49 = Quick(broker, kH49);
  h49.crl_directory = crl_dir();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> receiver, Client::Open(h49));
  Collector<std::string> got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       receiver->Receive([&got](const IncomingDocument& d) {
                         got.Add(d.document.metadata().subject());
                         return absl::OkStatus();
                       }));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender,
                       Client::Open(Quick(broker, kG22)));
  // The stream outlives several maximum ages while the certificate is good:
  // the SDK resumes on a new connection each time.
  absl::SleepFor(absl::Seconds(5));
  ASSERT_OK(sender->Send(NewDocument(kH49, "một")).status());
  ASSERT_TRUE(got.WaitForCount(1));

  ASSERT_OK(Revoke({OrgCert(kH49)}));
  const absl::Time revoked_at = absl::Now();
  absl::Notification ended;
  absl::Status ended_with;
  std::thread waiter([&] {
    ended_with = session->Wait();
    ended.Notify();
  });
  // Within the maximum age (+10 % jitter) and grace, the stream ends; the
  // reconnect is refused and the SDK ends the session naming the cause.
  bool in_time = ended.WaitForNotificationWithTimeout(absl::Seconds(15));
  if (!in_time) session->Stop();
  waiter.join();
  ASSERT_TRUE(in_time) << "the receive session outlived the revocation";
  EXPECT_LT(absl::Now() - revoked_at, absl::Seconds(2 * 1.1 + 1 + 5));
  EXPECT_THAT(ended_with, StatusIs(absl::StatusCode::kUnauthenticated,
                                   AllOf(HasSubstr("000.00.00.H49.pem"),
                                         HasSubstr("was revoked at"))));
  // Nothing reaches the revoked organization any more.
  ASSERT_OK(sender->Send(NewDocument(kH49, "hai")).status());
  EXPECT_EQ(got.CountAfter(absl::Milliseconds(500)), 1u);
}

TEST_F(CertificatesTest,
       AReceiverWithoutACurrentCrlTakesTheDocumentOnceOneIsBack) {
  BrokerProcess broker;
  ASSERT_OK(broker.Start());
  Collector<absl::Status> deferred;
  ReceiveOptions options;
  options.on_deferred = [deferred](const std::string&, const absl::Status& s) {
    deferred.Add(s);
  };
  ASSERT_OK_AND_ASSIGN(Receiving h49, ReceiveAtH49WithCrl(broker, options));
  const Collector<std::string>& got = h49.got;
  // The operator is replacing the CRL: for a while the directory has none.
  const std::string aside = dir_.path() + "/crl-aside";
  std::filesystem::rename(crl_dir(), aside);
  std::filesystem::create_directories(crl_dir());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender,
                       Client::Open(Quick(broker, kG22)));
  ASSERT_OK(sender->Send(NewDocument(kH49, "một")).status());
  ASSERT_TRUE(deferred.WaitForCount(1))
      << "the document was neither handled nor put back";
  EXPECT_THAT(deferred.items()[0],
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("revocation of the certificate")));
  EXPECT_EQ(got.size(), 0u) << "handled without checking revocation";
  // The new CRL is in place: the session, still open, takes the document.
  std::filesystem::remove_all(crl_dir());
  std::filesystem::rename(aside, crl_dir());
  ASSERT_TRUE(got.WaitForCount(1)) << "the session did not take it again";
  EXPECT_EQ(got.items()[0], "một");
  EXPECT_EQ(got.CountAfter(absl::Milliseconds(500)), 1u);
  h49.session->Stop();
  EXPECT_OK(h49.session->Wait());
}

TEST_F(CertificatesTest, AReceiverWhoseCrlDoesNotComeBackEndsNamingIt) {
  BrokerProcess broker;
  ASSERT_OK(broker.Start());
  ReceiveOptions options;
  options.max_unchecked = absl::Seconds(2);
  ASSERT_OK_AND_ASSIGN(Receiving h49, ReceiveAtH49WithCrl(broker, options));
  ReceiveSession* session = h49.session.get();
  std::filesystem::remove_all(crl_dir());
  std::filesystem::create_directories(crl_dir());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender,
                       Client::Open(Quick(broker, kG22)));
  ASSERT_OK_AND_ASSIGN(SendReceipt sent,
                       sender->Send(NewDocument(kH49, "một")));
  absl::Notification ended;
  absl::Status ended_with;
  std::thread waiter([&] {
    ended_with = session->Wait();
    ended.Notify();
  });
  // Tried at once, after 1 s and after 2 more: then 2 s have passed.
  const bool in_time = ended.WaitForNotificationWithTimeout(absl::Seconds(20));
  if (!in_time) session->Stop();
  waiter.join();
  ASSERT_TRUE(in_time) << "the session went on without a CRL";
  EXPECT_THAT(ended_with,
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("revocation of the certificate"),
                             HasSubstr(sent.document_id),
                             HasSubstr("could not be checked for 2s"))));
  EXPECT_EQ(h49.got.size(), 0u);
}

TEST_F(CertificatesTest, WithoutAMaximumAgeAnOpenStreamOutlivesRevocation) {
  // The control for the test above: with no maximum age, the stream a
  // revoked organization opened before keeps receiving.
  BrokerProcess broker(WithCrl(/*max_age_seconds=*/0));
  ASSERT_OK(broker.Start());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> receiver,
                       Client::Open(Quick(broker, kH49)));
  Collector<std::string> got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       receiver->Receive([&got](const IncomingDocument& d) {
                         got.Add(d.document.metadata().subject());
                         return absl::OkStatus();
                       }));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender,
                       Client::Open(Quick(broker, kG22)));
  ASSERT_OK(sender->Send(NewDocument(kH49, "một")).status());
  ASSERT_TRUE(got.WaitForCount(1));
  ASSERT_OK(Revoke({OrgCert(kH49)}));
  absl::SleepFor(absl::Seconds(4));
  ASSERT_OK(sender->Send(NewDocument(kH49, "hai")).status());
  EXPECT_TRUE(got.WaitForCount(2));
  session->Stop();
}

TEST_F(CertificatesTest, ARunningBrokerDoesNotRereadACrlFileItHasRead) {
  // OpenSSL's hashed-directory lookup remembers the highest <hash>.rN it
  // has read and only looks for the next N: a CRL written over .r0 is not
  // seen until the broker restarts. revoke.sh therefore always adds a file.
  BrokerProcess broker(WithCrl());
  ASSERT_OK(broker.Start());
  ASSERT_OK(SendFrom(Quick(broker, kH49), kG22));  // reads .r0
  ASSERT_OK(Revoke({OrgCert(kH49)}));
  std::filesystem::path crl(crl_dir());
  std::string r0, r1;
  for (const auto& entry : std::filesystem::directory_iterator(crl)) {
    std::string name = entry.path().filename().string();
    if (absl::EndsWith(name, ".r0")) r0 = entry.path().string();
    if (absl::EndsWith(name, ".r1")) r1 = entry.path().string();
  }
  ASSERT_FALSE(r0.empty());
  ASSERT_FALSE(r1.empty());
  std::filesystem::rename(r1, r0);  // the new CRL, under the old name

  EXPECT_OK(SendFrom(Quick(broker, kH49), kG22));
  ASSERT_OK(broker.Stop());
  ASSERT_OK(broker.Start());
  EXPECT_THAT(SendFrom(Quick(broker, kH49), kG22),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(CertificatesTest, ExpiredCertificateIsRefusedWithAPreciseStatus) {
  BrokerProcess broker;
  ASSERT_OK(broker.Start());
  ClientOptions expired = Quick(broker, kH49);
  expired.certificate_file = pki_ + "/bad/expired-org.pem";
  expired.private_key_file = pki_ + "/bad/expired-org.key";
  // The SDK refuses it before dialling, naming the file and the date.
  EXPECT_THAT(Client::Open(expired).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("expired-org.pem"),
                             HasSubstr("expired on 2020-02-01"))));
  // Dialled anyway (by a raw client), the broker refuses the handshake.
  absl::StatusOr<ProgramResult> run = RunProgram(
      {"/usr/bin/openssl", "s_client", "-connect", broker.endpoint(), "-cert",
       expired.certificate_file, "-key", expired.private_key_file, "-CAfile",
       pki_ + "/ca.pem", "-alpn", "h2"},
      absl::Seconds(10));
  ASSERT_OK(run.status());
  EXPECT_THAT(broker.stderr_text(),
              HasSubstr("Handshake failed with fatal error SSL_ERROR_SSL: "
                        "error:0A000086:SSL routines::certificate verify "
                        "failed"));
}

// One `openssl s_client` handshake against `broker` with an organization
// certificate and `extra` arguments; its stdout and stderr.
std::string Handshake(const BrokerProcess& broker, const std::string& pki,
                      const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {"/usr/bin/openssl",
                                   "s_client",
                                   "-connect",
                                   broker.endpoint(),
                                   "-cert",
                                   absl::StrCat(pki, "/orgs/", kH49, ".pem"),
                                   "-key",
                                   absl::StrCat(pki, "/orgs/", kH49, ".key"),
                                   "-CAfile",
                                   pki + "/ca.pem",
                                   "-alpn",
                                   "h2"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  absl::StatusOr<ProgramResult> run = RunProgram(argv, absl::Seconds(10));
  if (!run.ok()) return std::string(run.status().message());
  return run->stdout_text + run->stderr_text;
}

TEST_F(CertificatesTest, OnlyTls12And13WithAeadSuitesAreAccepted) {
  BrokerProcess broker;
  ASSERT_OK(broker.Start());
  // Preferred: TLS 1.3.
  EXPECT_THAT(Handshake(broker, pki_, {}), HasSubstr("New, TLSv1.3, Cipher"));
  // TLS 1.2 only with ECDHE and an AEAD cipher.
  EXPECT_THAT(Handshake(broker, pki_, {"-tls1_2"}),
              HasSubstr("New, TLSv1.2, Cipher is ECDHE-ECDSA-AES256-GCM"));
  // The client is told to offer what OpenSSL itself would refuse
  // (SECLEVEL=0), so the refusal below is the broker's.
  const std::string kRefused = "Cipher is (NONE)";
  for (const std::vector<std::string>& weak :
       std::vector<std::vector<std::string>>{
           {"-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"},
           {"-tls1", "-cipher", "DEFAULT@SECLEVEL=0"},
           {"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"},
           {"-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384"},
           {"-tls1_2", "-cipher", "AES128-SHA:@SECLEVEL=0"},
           {"-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_8_SHA256"}}) {
    std::string out = Handshake(broker, pki_, weak);
    EXPECT_THAT(out, AllOf(HasSubstr(kRefused), Not(HasSubstr("New, TLS"))))
        << absl::StrJoin(weak, " ");
  }
}

}  // namespace
}  // namespace lienthong::integration
