// Federation end to end: several real lienthongd processes (a centre and the
// provinces H49, H50, H51, as in deploy/federation.sh) linked broker to
// broker over mutual TLS on loopback, driven through the SDK and raw gRPC
// stubs.
//
//   central (G22) links to h49, h50 and h51; h49 and h50 also link
//   directly to each other.
//
// What users rely on: a document for an organization of another broker is
// accepted at the sender's broker, each broker's custody comes back as
// FORWARDED, the recipient's acknowledgement as DELIVERED and its business
// statuses hop by hop to the sender's watch; a far broker's policy denial
// comes back as DENIED naming that broker and its rules; every copy is
// delivered once, in per-sender order, across stopped and crashed brokers;
// a document's stored attachments reach each recipient's broker with it, to
// be downloaded there byte for byte; only configured peer brokers may open a
// link.
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/admin_client.h"
#include "lienthong/attachments.h"
#include "lienthong/client.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/signing/signing.h"
#include "lienthong/v1/approvals.grpc.pb.h"
#include "lienthong/v1/exchange.grpc.pb.h"
#include "lienthong/v1/federation.grpc.pb.h"
#include "tests/integration/broker_process.h"
#include "tests/integration/watch_recorder.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::integration {
namespace {

using ::lienthong::testing_util::Collector;
using ::lienthong::testing_util::Eventually;
using ::lienthong::testing_util::StatusIs;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr absl::Duration kWait = absl::Seconds(20);
constexpr char kTrustDomain[] = "lienthong.local";

std::string BrokerId(const std::string& name) {
  return absl::StrCat("spiffe://", kTrustDomain, "/broker/", name);
}
std::string Custody(const std::string& broker) {
  return absl::StrCat("in the custody of broker ", BrokerId(broker));
}

// Every organization of the federation may send ordinary documents to every
// other one.
constexpr char kPermitAll[] =
    R"(description: federation tests, everything ordinary permitted
rules:
  - name: federation-permit
    effect: permit
    sender: {provinces: [H49, H50, H51, G22]}
    recipient: {provinces: [H49, H50, H51, G22, H52]}
    max_classification: unclassified
)";

// ---- The federation ---------------------------------------------------------

struct PeerSpec {
  std::string name;
  bool is_default = false;
  std::string province;  // serves: {provinces: [...]}
};
struct BrokerSpec {
  std::vector<std::pair<std::string, std::string>> orgs;  // code, name
  std::vector<PeerSpec> peers;
};

// The topology of deploy/federation.sh.
const std::map<std::string, BrokerSpec>& Topology() {
  static const auto* const topology = new std::map<std::string, BrokerSpec>{
      {"central",
       {{{kG22, "Van phong Trung uong"}, {kUnitG22, "Ban To chuc Trung uong"}},
        {{"h49", false, "H49"}, {"h50", false, "H50"}, {"h51", false, "H51"}}}},
      {"h49",
       {{{kH49, "UBND tinh H49"}, {kUnitH49, "So Noi vu H49"}},
        {{"central", true, "G22"}, {"h50", false, "H50"}}}},
      {"h50",
       {{{kH50, "UBND tinh H50"}, {kUnitH50, "So Noi vu H50"}},
        {{"central", true, "G22"}, {"h49", false, "H49"}}}},
      {"h51",
       {{{kH51, "UBND tinh H51"}, {kUnitH51, "So Noi vu H51"}},
        {{"central", true, "G22"}}}},
  };
  return *topology;
}

// Four brokers on ports picked up front (peers name each other's), each with
// its own configuration, policy file, data directory and log. A broker
// process is made on first use; settings apply to brokers not made yet.
class Federation {
 public:
  Federation() {
    absl::flat_hash_set<int> used;
    for (const auto& [name, spec] : Topology()) {
      int port = 0;
      for (int attempt = 0; attempt < 20 && port == 0; ++attempt) {
        absl::StatusOr<int> p = PickFreePort();
        if (!p.ok()) {
          status_ = p.status();
          return;
        }
        if (used.insert(*p).second) port = *p;
      }
      ports_[name] = port;
      policies_[name] = kPermitAll;
      max_hops_[name] = 8;
    }
    if (dir_.path().empty()) status_ = absl::InternalError("no temp dir");
  }
  ~Federation() { (void)StopAll(); }

  const absl::Status& status() const { return status_; }

  void SetPolicy(const std::string& broker, std::string yaml) {
    policies_[broker] = std::move(yaml);
  }
  void SetMaxHops(const std::string& broker, uint32_t max_hops) {
    max_hops_[broker] = max_hops;
  }
  void SetApprovalExpiry(const std::string& broker, int seconds) {
    approval_expiry_[broker] = seconds;
  }
  // `broker` takes what is not signed (security.require_signatures off):
  // unsigned documents, and decisions no approver signed.
  void SetUnsignedTaken(const std::string& broker) {
    unsigned_taken_.insert(broker);
  }
  // `broker` dials its peer `peer` at the port of `actual` (a misconfigured
  // or impostor endpoint).
  void SetPeerEndpoint(const std::string& broker, const std::string& peer,
                       const std::string& actual) {
    endpoint_overrides_[{broker, peer}] = actual;
  }

  std::string Config(const std::string& name) const {
    const BrokerSpec& spec = Topology().at(name);
    std::string yaml =
        absl::StrCat("broker: {name: ", name, ", trust_domain: ", kTrustDomain,
                     "}\n", "orgs:\n");
    for (const auto& [code, org_name] : spec.orgs)
      absl::StrAppend(&yaml, "  - {code: ", code, ", name: \"", org_name,
                      "\"}\n");
    std::vector<std::string> codes;
    for (const auto& [code, org_name] : spec.orgs) codes.push_back(code);
    absl::StrAppend(
        &yaml, "approvals: {expire_seconds: ",
        approval_expiry_.contains(name) ? approval_expiry_.at(name) : 3600,
        ", approvers: [{person: approver, orgs: [", absl::StrJoin(codes, ", "),
        "]}]}\n");
    if (unsigned_taken_.contains(name))
      absl::StrAppend(&yaml, "security: {require_signatures: false}\n");
    absl::StrAppend(&yaml, "policy: {file: ", PolicyPath(name), "}\n",
                    "roles: {operator: [operator], auditor: [auditor]}\n",
                    "federation: {max_hops: ", max_hops_.at(name),
                    ", announce_seconds: 1, window: 512, "
                    "reconnect_max_seconds: 1}\n",
                    "peers:\n");
    for (const PeerSpec& p : spec.peers) {
      std::string target = p.name;
      if (auto it = endpoint_overrides_.find({name, p.name});
          it != endpoint_overrides_.end())
        target = it->second;
      absl::StrAppend(&yaml, "  - name: ", p.name, "\n",
                      "    endpoint: 127.0.0.1:", ports_.at(target), "\n",
                      p.is_default ? "    default: true\n" : "",
                      "    serves: {provinces: [", p.province, "]}\n");
    }
    return yaml;
  }

  BrokerProcess& broker(const std::string& name) {
    auto it = brokers_.find(name);
    if (it == brokers_.end()) {
      BrokerOptions options;
      options.port = ports_.at(name);
      options.config_yaml = Config(name);
      it = brokers_.emplace(name, std::make_unique<BrokerProcess>(options))
               .first;
    }
    return *it->second;
  }

  // Starts (or restarts) the named brokers, in order, from this thread (the
  // test's main thread: the children die with the thread that started them).
  absl::Status Start(const std::vector<std::string>& names) {
    if (!status_.ok()) return status_;
    for (const std::string& name : names) {
      if (!brokers_.contains(name)) {
        if (absl::Status s = WriteFile(PolicyPath(name), policies_.at(name));
            !s.ok())
          return s;
      }
      if (absl::Status s = broker(name).Start(); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  ClientOptions OptionsFor(const std::string& broker_name,
                           const std::string& org) {
    ClientOptions o = broker(broker_name).ClientOptionsFor(org);
    // A broker just restarted is back within a second or two.
    o.retry_budget = absl::Seconds(60);
    return o;
  }
  absl::StatusOr<std::unique_ptr<Client>> Open(const std::string& broker_name,
                                               const std::string& org) {
    return Client::Open(OptionsFor(broker_name, org));
  }
  absl::StatusOr<std::unique_ptr<AdminClient>> Admin(
      const std::string& broker_name, const std::string& person = "operator") {
    ClientOptions o = broker(broker_name).ClientOptionsFor(kH49);
    absl::StatusOr<std::string> pki = DevPkiDir();
    if (!pki.ok()) return pki.status();
    o.certificate_file = absl::StrCat(*pki, "/persons/", person, ".pem");
    o.private_key_file = absl::StrCat(*pki, "/persons/", person, ".key");
    return AdminClient::Open(o);
  }

  // The tail of every started broker's log, for failure messages.
  std::string Logs(size_t tail = 3000) const {
    std::string out;
    for (const auto& [name, b] : brokers_) {
      std::string text = b->stderr_text();
      if (text.size() > tail) text = "[...]" + text.substr(text.size() - tail);
      absl::StrAppend(&out, "\n--- ", name, " (", b->endpoint(), ") ---\n",
                      text);
    }
    return out;
  }

  // Stops every running broker gracefully; the first error.
  absl::Status StopAll() {
    absl::Status first;
    for (auto& [name, b] : brokers_) {
      absl::Status s = b->Stop();
      if (!s.ok() && first.ok())
        first = absl::Status(s.code(), absl::StrCat(name, ": ", s.message()));
    }
    return first;
  }

 private:
  std::string PolicyPath(const std::string& name) const {
    return absl::StrCat(dir_.path(), "/policy-", name, ".yaml");
  }

  testing_util::TempDir dir_;
  absl::Status status_;
  std::map<std::string, int> ports_;
  std::map<std::string, std::string> policies_;
  std::map<std::string, uint32_t> max_hops_;
  std::map<std::string, int> approval_expiry_;
  std::set<std::string> unsigned_taken_;
  std::map<std::pair<std::string, std::string>, std::string>
      endpoint_overrides_;
  std::map<std::string, std::unique_ptr<BrokerProcess>> brokers_;
};

// ---- Helpers ----------------------------------------------------------------

v1::Document NewDocument(const std::vector<std::string>& to,
                         const std::string& subject,
                         const std::string& key = "",
                         const std::string& body = "Kính gửi ...") {
  v1::Document doc;
  for (const std::string& r : to) doc.add_recipients(r);
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_subject(subject);
  m->set_document_type("Công văn");
  m->set_urgency(v1::URGENCY_NORMAL);
  doc.set_body(body);
  doc.set_body_content_type("text/plain; charset=utf-8");
  if (!key.empty()) doc.set_idempotency_key(key);
  return doc;
}

// "DELIVERY_STATE_FORWARDED in the custody of broker ...",
// "BUSINESS_STATUS_ARRIVED".
std::string Describe(const v1::StatusEvent& e) {
  if (e.business_status() != v1::BUSINESS_STATUS_UNSPECIFIED)
    return v1::BusinessStatus_Name(e.business_status());
  std::string s = v1::DeliveryState_Name(e.delivery_state());
  if (e.delivery_state() == v1::DELIVERY_STATE_FORWARDED)
    absl::StrAppend(&s, " ", e.reason());
  return s;
}
std::vector<std::string> Life(const std::vector<v1::StatusEvent>& events) {
  std::vector<std::string> out;
  for (const v1::StatusEvent& e : events) out.push_back(Describe(e));
  return out;
}
std::string Dump(const std::vector<v1::StatusEvent>& events) {
  std::string out;
  for (const v1::StatusEvent& e : events)
    absl::StrAppend(&out, "\n  #", e.sequence(), " ", Describe(e),
                    " actor=", e.actor(), " reason=\"", e.reason(),
                    "\" policy_broker=", e.policy().broker());
  return out;
}

const v1::RecipientStatus* FindRecipient(const v1::DocumentStatus& status,
                                         const std::string& recipient) {
  for (const v1::RecipientStatus& r : status.recipients()) {
    if (r.recipient() == recipient) return &r;
  }
  return nullptr;
}

// Waits until `client`'s GetDocumentStatus shows `recipient` in `state`.
bool WaitForRowState(Client* client, const std::string& id,
                     const std::string& recipient, v1::DeliveryState state,
                     absl::Duration timeout = kWait) {
  return Eventually(
      [&] {
        absl::StatusOr<v1::DocumentStatus> s = client->GetDocumentStatus(id);
        if (!s.ok()) return false;
        const v1::RecipientStatus* r = FindRecipient(*s, recipient);
        return r != nullptr && r->delivery_state() == state;
      },
      timeout);
}

std::string PkiFile(const std::string& rel) {
  absl::StatusOr<std::string> dir = DevPkiDir();
  if (!dir.ok()) return "";
  return ReadFile(*dir + "/" + rel).value_or("");
}

// A channel that bypasses the SDK, presenting `identity` ("orgs/<code>",
// "brokers/<name>", "persons/<id>" of the dev PKI).
std::shared_ptr<grpc::Channel> RawChannel(const std::string& endpoint,
                                          const std::string& identity) {
  auto provider =
      std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
          PkiFile("ca.pem"),
          std::vector<grpc::experimental::IdentityKeyCertPair>{
              {PkiFile(identity + ".key"), PkiFile(identity + ".pem")}});
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  options.set_certificate_verifier(
      std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(
      endpoint, grpc::experimental::TlsCredentials(options), args);
}

std::chrono::system_clock::time_point In(absl::Duration d) {
  return std::chrono::system_clock::now() +
         std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

// An organization's raw view of its broker queue: Fetch and Ack without the
// SDK's de-duplication, so every delivery the broker makes is counted.
class RawInbox {
 public:
  RawInbox(const std::string& endpoint, const std::string& org)
      : stub_(v1::ExchangeService::NewStub(
            RawChannel(endpoint, absl::StrCat("orgs/", org)))) {}

  // Fetches what is ready (waiting up to `wait`) and acknowledges it.
  absl::StatusOr<std::vector<v1::Delivery>> FetchAndAck(uint32_t max,
                                                        absl::Duration wait) {
    v1::FetchRequest request;
    request.set_max_documents(max);
    request.set_wait_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(wait)));
    request.set_lease_seconds(120);
    v1::FetchResponse response;
    {
      grpc::ClientContext ctx;
      ctx.set_deadline(In(wait + absl::Seconds(10)));
      grpc::Status s = stub_->Fetch(&ctx, request, &response);
      if (!s.ok())
        return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                            s.error_message());
    }
    std::vector<v1::Delivery> out(response.deliveries().begin(),
                                  response.deliveries().end());
    if (out.empty()) return out;
    v1::AckRequest ack;
    for (const v1::Delivery& d : out) ack.add_document_ids(d.document().id());
    v1::AckResponse ack_response;
    grpc::ClientContext ctx;
    ctx.set_deadline(In(absl::Seconds(10)));
    grpc::Status s = stub_->Ack(&ctx, ack, &ack_response);
    if (!s.ok())
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                          absl::StrCat("ack: ", s.error_message()));
    return out;
  }

 private:
  std::unique_ptr<v1::ExchangeService::Stub> stub_;
};

// Counts what a receiving application saw, by document id.
class ReceivedLog {
 public:
  void Add(const std::string& id, uint32_t attempt = 1) {
    absl::MutexLock lock(&mu_);
    ++calls_;
    if (++count_[id] == 1) order_.push_back(id);
    max_attempt_ = std::max(max_attempt_, attempt);
  }
  size_t distinct() const {
    absl::MutexLock lock(&mu_);
    return count_.size();
  }
  int calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  uint32_t max_attempt() const {
    absl::MutexLock lock(&mu_);
    return max_attempt_;
  }
  // Ids seen more than once, with their counts.
  std::vector<std::string> Duplicates() const {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> out;
    for (const auto& [id, n] : count_)
      if (n > 1) out.push_back(absl::StrCat(id, " x", n));
    return out;
  }
  size_t Missing(const std::vector<std::string>& ids) const {
    absl::MutexLock lock(&mu_);
    size_t missing = 0;
    for (const std::string& id : ids) missing += !count_.contains(id);
    return missing;
  }
  std::vector<std::string> order() const {
    absl::MutexLock lock(&mu_);
    return order_;
  }

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> count_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> order_ ABSL_GUARDED_BY(mu_);
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t max_attempt_ ABSL_GUARDED_BY(mu_) = 0;
};

// Every status event of what one org sends, tallied per copy (document and
// recipient) from a Watch on its own thread: for checking thousands of
// documents without keeping every event.
class EventTally {
 public:
  explicit EventTally(Client* client) {
    thread_ = std::thread([this, client] {
      absl::Status s = client->Watch(
          "", 0, [this](const v1::StatusEvent& e) { Add(e); }, stop_);
      absl::MutexLock lock(&mu_);
      status_ = s;
    });
  }
  ~EventTally() {
    stop_ = true;
    thread_.join();
  }
  size_t delivered() const {
    absl::MutexLock lock(&mu_);
    return delivered_;
  }
  // Descriptions of each copy's events, in arrival order.
  absl::flat_hash_map<std::string, std::vector<std::string>> lives() const {
    absl::MutexLock lock(&mu_);
    return lives_;
  }
  absl::Status status() const {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  void Add(const v1::StatusEvent& e) {
    absl::MutexLock lock(&mu_);
    lives_[absl::StrCat(e.document_id(), " ", e.recipient())].push_back(
        Describe(e));
    delivered_ += e.delivery_state() == v1::DELIVERY_STATE_DELIVERED;
  }

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::vector<std::string>> lives_
      ABSL_GUARDED_BY(mu_);
  size_t delivered_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Waits until `admin`'s broker has `org` in its federation directory.
bool WaitForDirectory(AdminClient* admin, const std::string& org,
                      absl::Duration timeout = kWait) {
  v1::ListDirectoryRequest request;
  request.set_org(org);
  return Eventually(
      [&] {
        absl::StatusOr<v1::ListDirectoryResponse> d =
            admin->ListDirectory(request);
        return d.ok() && d->rows_size() > 0;
      },
      timeout);
}

// Defined with the approval tests below.
v1::Document AiPersonnelDecision(const std::vector<std::string>& to,
                                 const std::string& subject);
absl::StatusOr<v1::DecideApprovalResponse> ApproveUnsigned(
    Federation& fed, const std::string& broker, const std::string& id);

class FederationTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_OK(fed_.status()); }
  // Every test also checks that its brokers stop cleanly on SIGTERM (the
  // test body has released its clients by now).
  void TearDown() override {
    absl::Status s = fed_.StopAll();
    EXPECT_OK(s) << fed_.Logs();
  }

  // One receive session per (broker, organization), each collecting what
  // it is handed.
  struct Receivers {
    std::vector<std::unique_ptr<Client>> clients;
    std::vector<std::unique_ptr<ReceiveSession>> sessions;
    std::vector<Collector<IncomingDocument>> got;
  };
  absl::StatusOr<Receivers> ReceiveAt(
      const std::vector<std::pair<std::string, std::string>>& recipients) {
    Receivers r;
    r.got.resize(recipients.size());
    for (size_t i = 0; i < recipients.size(); ++i) {
      ASSIGN_OR_RETURN(std::unique_ptr<Client> c,
                       fed_.Open(recipients[i].first, recipients[i].second));
      Collector<IncomingDocument> sink = r.got[i];
      ASSIGN_OR_RETURN(std::unique_ptr<ReceiveSession> session,
                       c->Receive([sink](const IncomingDocument& d) {
                         sink.Add(d);
                         return absl::OkStatus();
                       }));
      r.clients.push_back(std::move(c));
      r.sessions.push_back(std::move(session));
    }
    return r;
  }

  // h49 takes decisions no approver signed (SetUnsignedTaken), `brokers`
  // start, `recipient` receives at `where`, and an AI personnel decision
  // from H49 to it is approved at h49 without a signature.
  struct ApprovedUnsigned {
    std::unique_ptr<Client> sender;
    Receivers at;
    std::unique_ptr<WatchRecorder> watch;  // the sender's, from before
    std::string id;
    v1::DecideApprovalResponse decided;
  };
  absl::StatusOr<ApprovedUnsigned> SendApprovedUnsigned(
      const std::vector<std::string>& brokers, const std::string& where,
      const std::string& recipient, const std::string& subject) {
    fed_.SetUnsignedTaken("h49");
    RETURN_IF_ERROR(fed_.Start(brokers));
    ApprovedUnsigned u;
    ASSIGN_OR_RETURN(u.sender, fed_.Open("h49", kH49));
    ASSIGN_OR_RETURN(u.at, ReceiveAt({{where, recipient}}));
    u.watch = std::make_unique<WatchRecorder>(u.sender.get(), "");
    ASSIGN_OR_RETURN(SendReceipt sent,
                     u.sender->Send(AiPersonnelDecision({recipient}, subject)));
    u.id = sent.document_id;
    ASSIGN_OR_RETURN(u.decided, ApproveUnsigned(fed_, "h49", u.id));
    return u;
  }

  // All four brokers, until h49 knows where H51 is (all four, so that h49
  // has heard from both its peers: see
  // ASendToAProvinceDownLongerThanTheStalePeriodIsQueued); then h51 stops,
  // so documents for H51 wait at the centre.
  absl::Status StartAllWithH51Down() {
    RETURN_IF_ERROR(fed_.Start({"central", "h49", "h50", "h51"}));
    ASSIGN_OR_RETURN(std::unique_ptr<AdminClient> admin, fed_.Admin("h49"));
    if (!WaitForDirectory(admin.get(), kH51)) {
      return absl::DeadlineExceededError(
          absl::StrCat("h49 never learned where H51 is\n", fed_.Logs()));
    }
    return fed_.broker("h51").Stop();
  }

  Federation fed_;
};

// ---- Through the centre, statuses back hop by hop ---------------------------

TEST_F(FederationTest, ThroughTheCentreAndStatusesBackHopByHop) {
  ASSERT_OK(fed_.Start({"central", "h49", "h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient,
                       fed_.Open("h51", kH51));
  WatchRecorder watch(sender.get(), "");
  Collector<IncomingDocument> received;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       recipient->Receive([&](const IncomingDocument& d) {
                         received.Add(d);
                         return absl::OkStatus();
                       }));

  ASSERT_OK_AND_ASSIGN(
      SendReceipt receipt,
      sender->Send(NewDocument({kH51}, "Phối hợp liên tỉnh", "",
                               "nội dung qua trung ương")));
  const std::string id = receipt.document_id;
  ASSERT_TRUE(received.WaitForCount(1, kWait)) << fed_.Logs();
  const IncomingDocument got = received.items()[0];
  EXPECT_EQ(got.document.id(), id);
  EXPECT_EQ(got.document.sender(), kH49);
  EXPECT_EQ(got.document.body(), "nội dung qua trung ương");
  EXPECT_EQ(got.document.content_sha256(), receipt.content_sha256);
  EXPECT_EQ(got.attempt, 1u);
  std::vector<std::string> trace;
  for (const v1::Hop& h : got.document.trace()) trace.push_back(h.broker());
  EXPECT_THAT(trace, ElementsAre(BrokerId("h49"), BrokerId("central"),
                                 BrokerId("h51")));

  // The recipient's broker recorded the acknowledgement; then it reports
  // 01, 03, 06, in that order.
  ASSERT_TRUE(
      WaitForRowState(recipient.get(), id, kH51, v1::DELIVERY_STATE_DELIVERED))
      << fed_.Logs();
  // The recipient's broker has the copy it took in its own audit log, ahead
  // of the delivery: from whom, for delivery there, under which of its rules.
  ASSERT_OK_AND_ASSIGN(v1::EvidenceExport far, recipient->GetEvidence(id));
  v1::Evidence far_evidence;
  ASSERT_TRUE(far_evidence.ParseFromString(far.evidence()));
  std::vector<std::string> far_audit;
  for (const v1::EvidenceAuditEntry& stored : far_evidence.audit_entries()) {
    v1::AuditEntry e;
    ASSERT_TRUE(e.ParseFromString(stored.entry().entry()));
    far_audit.push_back(v1::AuditKind_Name(e.kind()));
    if (e.kind() != v1::AUDIT_KIND_CUSTODY_TAKEN) continue;
    EXPECT_EQ(e.actor(), BrokerId("central"));
    EXPECT_EQ(e.document_id(), id);
    EXPECT_EQ(e.org(), kH51);
    EXPECT_THAT(e.detail(), HasSubstr("for delivery here"));
    EXPECT_THAT(e.detail(), HasSubstr("federation-permit"));
  }
  EXPECT_THAT(far_audit,
              ElementsAre("AUDIT_KIND_CUSTODY_TAKEN", "AUDIT_KIND_DELIVERED"))
      << far_evidence.DebugString();
  ASSERT_OK(recipient->ReportStatus(id, v1::BUSINESS_STATUS_ARRIVED));
  ASSERT_OK(recipient->ReportStatus(id, v1::BUSINESS_STATUS_ACCEPTED));
  ASSERT_OK(recipient->ReportStatus(id, v1::BUSINESS_STATUS_COMPLETED));

  ASSERT_TRUE(
      watch.WaitFor(IsBusiness(id, kH51, v1::BUSINESS_STATUS_COMPLETED)))
      << Dump(watch.Of(id, kH51)) << fed_.Logs();
  // Nothing more comes (no event twice).
  absl::SleepFor(absl::Milliseconds(1500));
  std::vector<v1::StatusEvent> events = watch.Of(id, kH51);
  EXPECT_THAT(
      Life(events),
      ElementsAre("DELIVERY_STATE_ACCEPTED",
                  "DELIVERY_STATE_FORWARDED " + Custody("central"),
                  "DELIVERY_STATE_FORWARDED " + Custody("h51"),
                  "DELIVERY_STATE_DELIVERED", "BUSINESS_STATUS_ARRIVED",
                  "BUSINESS_STATUS_ACCEPTED", "BUSINESS_STATUS_COMPLETED"))
      << Dump(events);
  uint64_t last = 0;
  for (const v1::StatusEvent& e : events) {
    EXPECT_GT(e.sequence(), last) << Dump(events);
    last = e.sequence();
    EXPECT_EQ(e.sender(), kH49);
  }
  if (events.size() == 7) {
    // Each custody is recorded by the broker that handed the document over,
    // with the next broker's policy decision.
    EXPECT_EQ(events[1].actor(), BrokerId("h49"));
    EXPECT_EQ(events[1].policy().broker(), BrokerId("central"));
    EXPECT_THAT(events[1].policy().rules(), Contains("federation-permit"));
    EXPECT_EQ(events[2].actor(), BrokerId("central"));
    EXPECT_EQ(events[2].policy().broker(), BrokerId("h51"));
    EXPECT_THAT(events[2].policy().rules(), Contains("federation-permit"));
    EXPECT_EQ(events[0].policy().broker(), BrokerId("h49"));
  }

  // The sender's GetDocumentStatus tells the same story.
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status,
                       sender->GetDocumentStatus(id));
  ASSERT_EQ(status.recipients_size(), 1) << status.DebugString();
  EXPECT_EQ(status.recipients(0).recipient(), kH51);
  EXPECT_EQ(status.recipients(0).delivery_state(),
            v1::DELIVERY_STATE_DELIVERED);
  EXPECT_EQ(status.recipients(0).business_status(),
            v1::BUSINESS_STATUS_COMPLETED);
  std::vector<v1::StatusEvent> history(status.history().begin(),
                                       status.history().end());
  EXPECT_THAT(Life(history), ElementsAreArray(Life(events))) << Dump(history);

  // And back: the recipient answers through the centre.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> unit,
                       fed_.Open("h49", kUnitH49));
  Collector<std::string> unit_got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> unit_session,
                       unit->Receive([&](const IncomingDocument& d) {
                         unit_got.Add(d.document.id());
                         return absl::OkStatus();
                       }));
  WatchRecorder reply_watch(recipient.get(), "");
  ASSERT_OK_AND_ASSIGN(SendReceipt reply,
                       recipient->Send(NewDocument({kUnitH49}, "Trả lời")));
  ASSERT_TRUE(unit_got.WaitForCount(1, kWait)) << fed_.Logs();
  EXPECT_THAT(unit_got.items(), ElementsAre(reply.document_id));
  ASSERT_TRUE(reply_watch.WaitFor(
      IsDelivery(reply.document_id, kUnitH49, v1::DELIVERY_STATE_DELIVERED)))
      << Dump(reply_watch.Of(reply.document_id, kUnitH49));
  EXPECT_THAT(Life(reply_watch.Of(reply.document_id, kUnitH49)),
              ElementsAre("DELIVERY_STATE_ACCEPTED",
                          "DELIVERY_STATE_FORWARDED " + Custody("central"),
                          "DELIVERY_STATE_FORWARDED " + Custody("h49"),
                          "DELIVERY_STATE_DELIVERED"));

  session->Stop();
  unit_session->Stop();
  EXPECT_OK(watch.status());
}

// ---- End-to-end encryption across brokers
// ------------------------------------

TEST_F(FederationTest, ASealedDocumentCrossesTheCentreWithTheFarCertificate) {
  constexpr char kSealedPermit[] =
      R"(description: federation tests, up to secret
rules:
  - name: federation-permit
    effect: permit
    sender: {provinces: [H49, H50, H51, G22]}
    recipient: {provinces: [H49, H50, H51, G22]}
    max_classification: secret
)";
  for (const char* b : {"central", "h49", "h51"})
    fed_.SetPolicy(b, kSealedPermit);
  ASSERT_OK(fed_.Start({"central", "h49", "h51"}));
  ASSERT_OK_AND_ASSIGN(std::string pki, DevPkiDir());
  // H51 publishes its encryption certificate at its own broker, h51.
  ClientOptions recipient_options = fed_.OptionsFor("h51", kH51);
  recipient_options.encryption_certificate_file =
      absl::StrCat(pki, "/orgs/", kH51, ".enc.pem");
  recipient_options.encryption_key_file =
      absl::StrCat(pki, "/orgs/", kH51, ".enc.key");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient,
                       Client::Open(recipient_options));
  ASSERT_OK(recipient->PublishEncryptionCertificate().status());

  // It reaches h49 through the centre's announcements; until then a sealed
  // send is refused for want of a certificate, never sent in plaintext.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  const std::string marker = "MAT-QUA-TRUNG-UONG-4c1d";
  v1::Document doc = NewDocument({kH51}, "Báo cáo mật", "sealed-1",
                                 absl::StrCat("nội dung ", marker));
  doc.mutable_metadata()->set_classification(v1::CLASSIFICATION_CONFIDENTIAL);
  absl::StatusOr<SendReceipt> receipt;
  ASSERT_TRUE(Eventually(
      [&] {
        receipt = sender->Send(doc);
        if (!receipt.ok()) {
          EXPECT_TRUE(absl::IsFailedPrecondition(receipt.status()))
              << receipt.status();
        }
        return receipt.ok();
      },
      kWait))
      << receipt.status() << fed_.Logs();
  EXPECT_TRUE(receipt->sealed);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> admin, fed_.Admin("h49"));
  v1::ListDirectoryRequest request;
  request.set_org(kH51);
  ASSERT_OK_AND_ASSIGN(v1::ListDirectoryResponse directory,
                       admin->ListDirectory(request));
  ASSERT_GT(directory.rows_size(), 0);
  EXPECT_EQ(directory.rows(0).encryption_certificate_sha256().size(), 64u);

  Collector<IncomingDocument> received;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       recipient->Receive([&](const IncomingDocument& d) {
                         received.Add(d);
                         return absl::OkStatus();
                       }));
  ASSERT_TRUE(received.WaitForCount(1, kWait)) << fed_.Logs();
  const IncomingDocument got = received.items()[0];
  EXPECT_EQ(got.document.id(), receipt->document_id);
  EXPECT_TRUE(got.was_sealed);
  EXPECT_EQ(got.document.body(), doc.body());
  EXPECT_EQ(got.document.trace_size(), 3);
  session->Stop();
  // No broker on the way ever held the plaintext.
  ASSERT_OK(fed_.StopAll());
  for (const char* b : {"central", "h49", "h51"}) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(
             fed_.broker(b).data_dir())) {
      if (!entry.is_regular_file()) continue;
      absl::StatusOr<std::string> bytes = ReadFile(entry.path().string());
      ASSERT_OK(bytes);
      EXPECT_EQ(bytes->find(marker), std::string::npos)
          << b << ": " << entry.path();
    }
  }
}

// ---- A direct link, the centre down -----------------------------------------

TEST_F(FederationTest, DirectLinkDeliversWithTheCentreDown) {
  // central is never started: h49 and h50 only have each other.
  ASSERT_OK(fed_.Start({"h49", "h50"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> committee,
                       fed_.Open("h50", kH50));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> unit,
                       fed_.Open("h50", kUnitH50));
  WatchRecorder watch(sender.get(), "");
  Collector<IncomingDocument> committee_got;
  Collector<IncomingDocument> unit_got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> s1,
                       committee->Receive([&](const IncomingDocument& d) {
                         committee_got.Add(d);
                         return absl::OkStatus();
                       }));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> s2,
                       unit->Receive([&](const IncomingDocument& d) {
                         unit_got.Add(d);
                         return absl::OkStatus();
                       }));

  // One document for two organizations of h50: one transfer, two copies.
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt,
                       sender->Send(NewDocument({kH50, kUnitH50}, "Giấy mời")));
  const std::string id = receipt.document_id;
  ASSERT_TRUE(committee_got.WaitForCount(1, kWait)) << fed_.Logs();
  ASSERT_TRUE(unit_got.WaitForCount(1, kWait)) << fed_.Logs();
  std::vector<std::string> trace;
  const IncomingDocument got = committee_got.items()[0];
  for (const v1::Hop& h : got.document.trace()) trace.push_back(h.broker());
  EXPECT_THAT(trace, ElementsAre(BrokerId("h49"), BrokerId("h50")));

  ASSERT_TRUE(
      WaitForRowState(committee.get(), id, kH50, v1::DELIVERY_STATE_DELIVERED));
  ASSERT_OK(committee->ReportStatus(id, v1::BUSINESS_STATUS_ARRIVED));
  ASSERT_OK(committee->ReportStatus(id, v1::BUSINESS_STATUS_REJECTED,
                                    "Không đúng thẩm quyền"));
  ASSERT_TRUE(watch.WaitFor(IsBusiness(id, kH50, v1::BUSINESS_STATUS_REJECTED)))
      << Dump(watch.Of(id, kH50)) << fed_.Logs();
  ASSERT_TRUE(
      watch.WaitFor(IsDelivery(id, kUnitH50, v1::DELIVERY_STATE_DELIVERED)))
      << Dump(watch.Of(id, kUnitH50)) << fed_.Logs();
  absl::SleepFor(absl::Milliseconds(1000));

  EXPECT_THAT(Life(watch.Of(id, kH50)),
              ElementsAre("DELIVERY_STATE_ACCEPTED",
                          "DELIVERY_STATE_FORWARDED " + Custody("h50"),
                          "DELIVERY_STATE_DELIVERED", "BUSINESS_STATUS_ARRIVED",
                          "BUSINESS_STATUS_REJECTED"))
      << Dump(watch.Of(id, kH50));
  EXPECT_THAT(Life(watch.Of(id, kUnitH50)),
              ElementsAre("DELIVERY_STATE_ACCEPTED",
                          "DELIVERY_STATE_FORWARDED " + Custody("h50"),
                          "DELIVERY_STATE_DELIVERED"))
      << Dump(watch.Of(id, kUnitH50));
  for (const v1::StatusEvent& e : watch.Of(id, kH50)) {
    if (e.business_status() == v1::BUSINESS_STATUS_REJECTED) {
      EXPECT_EQ(e.reason(), "Không đúng thẩm quyền");
    }
  }
  EXPECT_EQ(committee_got.CountAfter(absl::Milliseconds(100)), 1u);
  EXPECT_EQ(unit_got.size(), 1u);

  // A resend with the same idempotency key is the same document: nothing
  // new crosses the link.
  v1::Document keyed = NewDocument({kH50}, "Quyết định", "qd-7-2026");
  ASSERT_OK_AND_ASSIGN(SendReceipt keyed_first, sender->Send(keyed));
  ASSERT_OK_AND_ASSIGN(SendReceipt keyed_again, sender->Send(keyed));
  EXPECT_TRUE(keyed_again.duplicate);
  EXPECT_EQ(keyed_again.document_id, keyed_first.document_id);
  ASSERT_TRUE(committee_got.WaitForCount(2, kWait)) << fed_.Logs();
  EXPECT_EQ(committee_got.CountAfter(absl::Milliseconds(1000)), 2u);
  EXPECT_EQ(committee_got.items()[1].document.id(), keyed_first.document_id);

  // The other way round on the same pair of links.
  WatchRecorder back_watch(committee.get(), "");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> h49_unit,
                       fed_.Open("h49", kUnitH49));
  Collector<std::string> h49_got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> s3,
                       h49_unit->Receive([&](const IncomingDocument& d) {
                         h49_got.Add(d.document.id());
                         return absl::OkStatus();
                       }));
  ASSERT_OK_AND_ASSIGN(SendReceipt back,
                       committee->Send(NewDocument({kUnitH49}, "Phúc đáp")));
  ASSERT_TRUE(h49_got.WaitForCount(1, kWait)) << fed_.Logs();
  ASSERT_TRUE(back_watch.WaitFor(
      IsDelivery(back.document_id, kUnitH49, v1::DELIVERY_STATE_DELIVERED)))
      << Dump(back_watch.Of(back.document_id, kUnitH49));
  EXPECT_THAT(Life(back_watch.Of(back.document_id, kUnitH49)),
              ElementsAre("DELIVERY_STATE_ACCEPTED",
                          "DELIVERY_STATE_FORWARDED " + Custody("h49"),
                          "DELIVERY_STATE_DELIVERED"));

  // The operator's view at h49: the direct link up, the centre's down.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> admin, fed_.Admin("h49"));
  ASSERT_OK_AND_ASSIGN(v1::ListPeersResponse peers, admin->ListPeers());
  for (const v1::PeerInfo& p : peers.peers()) {
    if (p.name() == "h50") {
      EXPECT_TRUE(p.outbound_up()) << p.DebugString();
      EXPECT_EQ(p.outbox(), 0u) << p.DebugString();
    } else {
      EXPECT_EQ(p.name(), "central");
      EXPECT_FALSE(p.outbound_up()) << p.DebugString();
    }
  }
  s1->Stop();
  s2->Stop();
  s3->Stop();
}

// ---- One document over every route at once ----------------------------------

TEST_F(FederationTest, OneDocumentFansOutOverEveryRoute) {
  ASSERT_OK(fed_.Start({"central", "h49", "h50", "h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  // A local copy, one for the centre, one over the direct link to h50 and
  // one through the centre to h51.
  const std::vector<std::pair<std::string, std::string>> recipients = {
      {"h49", kUnitH49}, {"central", kG22}, {"h50", kH50}, {"h51", kUnitH51}};
  ASSERT_OK_AND_ASSIGN(Receivers receivers, ReceiveAt(recipients));
  std::vector<Collector<IncomingDocument>>& got = receivers.got;
  // The directory converges within an announce interval of the last start
  // (before that, h49 may refuse H51 as unknown: see
  // ASendToAProvinceWhoseBrokerIsDownIsQueuedNotRefused).
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> h49_admin,
                       fed_.Admin("h49"));
  ASSERT_TRUE(WaitForDirectory(h49_admin.get(), kUnitH51)) << fed_.Logs();
  WatchRecorder watch(sender.get(), "");
  std::vector<std::string> to;
  for (const auto& [broker, org] : recipients) to.push_back(org);
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt,
                       sender->Send(NewDocument(to, "Thông báo chung")));
  const std::string id = receipt.document_id;

  const std::map<std::string, std::vector<std::string>> traces = {
      {kUnitH49, {BrokerId("h49")}},
      {kG22, {BrokerId("h49"), BrokerId("central")}},
      {kH50, {BrokerId("h49"), BrokerId("h50")}},
      {kUnitH51, {BrokerId("h49"), BrokerId("central"), BrokerId("h51")}}};
  const std::map<std::string, std::vector<std::string>> lives = {
      {kUnitH49, {"DELIVERY_STATE_ACCEPTED", "DELIVERY_STATE_DELIVERED"}},
      {kG22,
       {"DELIVERY_STATE_ACCEPTED",
        "DELIVERY_STATE_FORWARDED " + Custody("central"),
        "DELIVERY_STATE_DELIVERED"}},
      {kH50,
       {"DELIVERY_STATE_ACCEPTED", "DELIVERY_STATE_FORWARDED " + Custody("h50"),
        "DELIVERY_STATE_DELIVERED"}},
      {kUnitH51,
       {"DELIVERY_STATE_ACCEPTED",
        "DELIVERY_STATE_FORWARDED " + Custody("central"),
        "DELIVERY_STATE_FORWARDED " + Custody("h51"),
        "DELIVERY_STATE_DELIVERED"}}};
  for (size_t i = 0; i < recipients.size(); ++i) {
    const std::string& org = recipients[i].second;
    ASSERT_TRUE(got[i].WaitForCount(1, kWait)) << org << fed_.Logs();
    ASSERT_TRUE(
        watch.WaitFor(IsDelivery(id, org, v1::DELIVERY_STATE_DELIVERED)))
        << org << Dump(watch.Of(id, org));
  }
  absl::SleepFor(absl::Milliseconds(1500));
  for (size_t i = 0; i < recipients.size(); ++i) {
    const std::string& org = recipients[i].second;
    ASSERT_EQ(got[i].size(), 1u) << org;
    const IncomingDocument d = got[i].items()[0];
    EXPECT_EQ(d.document.id(), id);
    std::vector<std::string> trace;
    for (const v1::Hop& h : d.document.trace()) trace.push_back(h.broker());
    EXPECT_THAT(trace, ElementsAreArray(traces.at(org))) << org;
    EXPECT_THAT(Life(watch.Of(id, org)), ElementsAreArray(lives.at(org)))
        << org << Dump(watch.Of(id, org));
  }

  // h51 knows the provinces only through the centre's directory.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> admin, fed_.Admin("h51"));
  v1::ListDirectoryRequest request;
  request.set_org(kUnitH50);
  ASSERT_OK_AND_ASSIGN(v1::ListDirectoryResponse directory,
                       admin->ListDirectory(request));
  ASSERT_EQ(directory.rows_size(), 1) << directory.DebugString();
  EXPECT_EQ(directory.rows(0).broker(), "h50") << directory.DebugString();
  EXPECT_EQ(directory.rows(0).via_peer(), "central");
  EXPECT_EQ(directory.rows(0).route(), "central");
  EXPECT_EQ(directory.rows(0).distance(), 1u);
  for (auto& session : receivers.sessions) session->Stop();
}

// ---- Stored attachments: pushed ahead of their documents, hop by hop --------

// `size` bytes of pseudo-random content, the same for the same seed.
std::string RandomContent(size_t size, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::string out(size, '\0');
  for (size_t i = 0; i < size; i += 8) {
    const uint64_t word = random();
    std::memcpy(out.data() + i, &word, std::min<size_t>(8, size - i));
  }
  return out;
}

// A download held in memory.
class StringSink final : public AttachmentSink {
 public:
  uint64_t offset() const override { return data_.size(); }
  absl::Status Write(absl::string_view data) override {
    data_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  const std::string& data() const { return data_; }

 private:
  std::string data_;
};

// Writes `content` to `dir`/`name` and uploads that file to `client`'s
// broker as a stored attachment, as an application would.
absl::StatusOr<v1::Attachment> UploadFile(Client* client,
                                          const std::string& dir,
                                          const std::string& name,
                                          const std::string& content,
                                          const std::string& content_type) {
  const std::string path = absl::StrCat(dir, "/", name);
  if (absl::Status s = WriteFile(path, content); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<AttachmentSource>> source = FileSource(path);
  if (!source.ok()) return source.status();
  return client->UploadAttachment(**source, name, content_type);
}

// What a recipient checks of a received stored attachment: listed as sent,
// without content.
void ExpectListedAsSent(const v1::Attachment& got, const v1::Attachment& sent,
                        const std::string& who) {
  EXPECT_EQ(got.name(), sent.name()) << who;
  EXPECT_EQ(got.content_type(), sent.content_type()) << who;
  EXPECT_EQ(got.sha256(), sent.sha256()) << who;
  EXPECT_EQ(got.size(), sent.size()) << who;
  EXPECT_TRUE(got.stored()) << who;
  EXPECT_TRUE(got.content().empty())
      << who << ": " << got.content().size() << " bytes inline";
}

// Downloads `attachment` of document `id` from `client`'s own broker, into
// a file and into memory, and checks both against `original` (sizes are
// printed, never the content).
void ExpectDownloadsAs(Client* client, const std::string& id,
                       const v1::Attachment& attachment,
                       const std::string& original, const std::string& dir,
                       const std::string& who) {
  const std::string path = absl::StrCat(dir, "/", who, "-", attachment.name());
  absl::Status to_file = client->DownloadAttachmentToFile(id, attachment, path);
  EXPECT_OK(to_file) << who << " " << attachment.name();
  if (to_file.ok()) {
    absl::StatusOr<std::string> bytes = ReadFile(path);
    ASSERT_OK(bytes) << who;
    EXPECT_EQ(bytes->size(), original.size()) << who << " " << path;
    EXPECT_TRUE(*bytes == original) << who << " " << path << ": other bytes";
    EXPECT_FALSE(std::filesystem::exists(path + ".part")) << who;
  }
  StringSink memory;
  EXPECT_OK(client->DownloadAttachment(id, attachment, memory))
      << who << " " << attachment.name();
  EXPECT_EQ(memory.data().size(), original.size()) << who;
  EXPECT_TRUE(memory.data() == original) << who << ": other bytes in memory";
}

TEST_F(FederationTest, StoredAttachmentsTravelEveryRouteAndDownloadAtHome) {
  ASSERT_OK(fed_.Start({"central", "h49", "h50", "h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  // One copy for the centre, one over the direct link to h50, one through
  // the centre to h51: each recipient downloads from its own broker.
  const std::vector<std::pair<std::string, std::string>> recipients = {
      {"central", kG22}, {"h50", kH50}, {"h51", kH51}};
  ASSERT_OK_AND_ASSIGN(Receivers receivers, ReceiveAt(recipients));
  std::vector<Collector<IncomingDocument>>& got = receivers.got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> h49_admin,
                       fed_.Admin("h49"));
  ASSERT_TRUE(WaitForDirectory(h49_admin.get(), kH51)) << fed_.Logs();

  // A few MiB that end inside a chunk (1 MiB chunks), and nothing at all.
  testing_util::TempDir files;
  ASSERT_FALSE(files.path().empty());
  const std::string scan = RandomContent((3 << 20) + 12345, 49);
  ASSERT_OK_AND_ASSIGN(v1::Attachment big,
                       UploadFile(sender.get(), files.path(), "ho-so-quet.pdf",
                                  scan, "application/pdf"));
  ASSERT_OK_AND_ASSIGN(
      v1::Attachment empty,
      UploadFile(sender.get(), files.path(), "ghi-chu.txt", "", "text/plain"));
  EXPECT_TRUE(big.stored());
  EXPECT_EQ(big.size(), scan.size());
  EXPECT_EQ(big.sha256(), Sha256HexOf(scan));
  EXPECT_TRUE(empty.stored());
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_EQ(empty.sha256(), Sha256HexOf(""));

  WatchRecorder watch(sender.get(), "");
  std::vector<std::string> to;
  for (const auto& [broker, org] : recipients) to.push_back(org);
  v1::Document doc = NewDocument(to, "Hồ sơ kèm tệp lớn");
  *doc.add_attachments() = big;
  *doc.add_attachments() = empty;
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt, sender->Send(doc));
  const std::string id = receipt.document_id;

  const std::map<std::string, size_t> hops = {{kG22, 2}, {kH50, 2}, {kH51, 3}};
  for (size_t i = 0; i < recipients.size(); ++i) {
    const std::string& org = recipients[i].second;
    ASSERT_TRUE(got[i].WaitForCount(1, kWait)) << org << fed_.Logs();
    const v1::Document received = got[i].items()[0].document;
    EXPECT_EQ(received.id(), id) << org;
    EXPECT_EQ(static_cast<size_t>(received.trace_size()), hops.at(org))
        << org << " " << received.DebugString();
    EXPECT_EQ(received.content_sha256(), receipt.content_sha256) << org;
    ASSERT_EQ(received.attachments_size(), 2) << org;
    ExpectListedAsSent(received.attachments(0), big, org);
    ExpectListedAsSent(received.attachments(1), empty, org);
    ExpectDownloadsAs(receivers.clients[i].get(), id, received.attachments(0),
                      scan, files.path(), org);
    ExpectDownloadsAs(receivers.clients[i].get(), id, received.attachments(1),
                      "", files.path(), org);
  }
  for (const auto& [broker, org] : recipients) {
    ASSERT_TRUE(
        watch.WaitFor(IsDelivery(id, org, v1::DELIVERY_STATE_DELIVERED)))
        << org << Dump(watch.Of(id, org)) << fed_.Logs();
  }
  EXPECT_THAT(Life(watch.Of(id, kH51)),
              ElementsAre("DELIVERY_STATE_ACCEPTED",
                          "DELIVERY_STATE_FORWARDED " + Custody("central"),
                          "DELIVERY_STATE_FORWARDED " + Custody("h51"),
                          "DELIVERY_STATE_DELIVERED"))
      << Dump(watch.Of(id, kH51));
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status,
                       sender->GetDocumentStatus(id));
  for (const auto& [broker, org] : recipients) {
    const v1::RecipientStatus* r = FindRecipient(status, org);
    ASSERT_NE(r, nullptr) << status.DebugString();
    EXPECT_EQ(r->delivery_state(), v1::DELIVERY_STATE_DELIVERED) << org;
  }

  // The sender downloads from its own broker too; an organization the
  // document was not for does not, though its broker holds the content.
  StringSink own;
  EXPECT_OK(sender->DownloadAttachment(id, big, own));
  EXPECT_TRUE(own.data() == scan) << own.data().size() << " bytes";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> bystander,
                       fed_.Open("h51", kUnitH51));
  StringSink nothing;
  absl::Status refused = bystander->DownloadAttachment(id, big, nothing);
  EXPECT_EQ(refused.code(), absl::StatusCode::kNotFound) << refused;
  EXPECT_TRUE(nothing.data().empty());
  for (auto& session : receivers.sessions) session->Stop();
}

TEST_F(FederationTest, AStoredAttachmentWaitsAtTheCentreWhileItsBrokerIsDown) {
  ASSERT_OK(StartAllWithH51Down());

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  WatchRecorder watch(sender.get(), "");
  testing_util::TempDir files;
  ASSERT_FALSE(files.path().empty());
  const std::string plan = RandomContent((5 << 20) + 777, 51);
  ASSERT_OK_AND_ASSIGN(v1::Attachment attachment,
                       UploadFile(sender.get(), files.path(), "ke-hoach.zip",
                                  plan, "application/zip"));
  v1::Document doc = NewDocument({kH51}, "Kế hoạch kèm tệp, H51 đang ngừng");
  *doc.add_attachments() = attachment;
  absl::StatusOr<SendReceipt> receipt = sender->Send(doc);
  ASSERT_OK(receipt) << fed_.Logs();
  const std::string id = receipt->document_id;

  // The centre takes the document (and so the attachment) into its custody
  // and holds both, across a restart of its own, until h51 is back.
  ASSERT_TRUE(watch.WaitFor(IsDelivery(id, kH51, v1::DELIVERY_STATE_FORWARDED)))
      << Dump(watch.Of(id, kH51)) << fed_.Logs();
  ASSERT_OK(fed_.broker("central").Stop());
  ASSERT_OK(fed_.Start({"central"}));
  absl::SleepFor(absl::Seconds(1));
  EXPECT_THAT(Life(watch.Of(id, kH51)),
              ElementsAre("DELIVERY_STATE_ACCEPTED",
                          "DELIVERY_STATE_FORWARDED " + Custody("central")))
      << Dump(watch.Of(id, kH51));

  ASSERT_OK(fed_.Start({"h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient,
                       fed_.Open("h51", kH51));
  Collector<IncomingDocument> got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       recipient->Receive([&](const IncomingDocument& d) {
                         got.Add(d);
                         return absl::OkStatus();
                       }));
  ASSERT_TRUE(got.WaitForCount(1, absl::Seconds(40))) << fed_.Logs();
  const v1::Document received = got.items()[0].document;
  EXPECT_EQ(received.id(), id);
  EXPECT_EQ(received.trace_size(), 3) << received.DebugString();
  ASSERT_EQ(received.attachments_size(), 1);
  ExpectListedAsSent(received.attachments(0), attachment, kH51);
  ExpectDownloadsAs(recipient.get(), id, received.attachments(0), plan,
                    files.path(), kH51);
  ASSERT_TRUE(watch.WaitFor(IsDelivery(id, kH51, v1::DELIVERY_STATE_DELIVERED)))
      << Dump(watch.Of(id, kH51)) << fed_.Logs();
  EXPECT_THAT(Life(watch.Of(id, kH51)),
              ElementsAre("DELIVERY_STATE_ACCEPTED",
                          "DELIVERY_STATE_FORWARDED " + Custody("central"),
                          "DELIVERY_STATE_FORWARDED " + Custody("h51"),
                          "DELIVERY_STATE_DELIVERED"))
      << Dump(watch.Of(id, kH51));
  EXPECT_TRUE(WaitForRowState(sender.get(), id, kH51,
                              v1::DELIVERY_STATE_DELIVERED, absl::Seconds(5)));
  EXPECT_EQ(got.CountAfter(absl::Milliseconds(500)), 1u);
  session->Stop();
}

// A forwarding broker that lost an attachment (its file deleted behind its
// back) cannot push it: the copy is DENIED with the reason, instead of the
// link to the peer stalling on it for ever, and the link carries on.
TEST_F(FederationTest, AnAttachmentLostAtTheCentreDeniesItsCopyNotTheLink) {
  ASSERT_OK(StartAllWithH51Down());

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  WatchRecorder watch(sender.get(), "");
  testing_util::TempDir files;
  ASSERT_FALSE(files.path().empty());
  const std::string content = RandomContent((2 << 20) + 99, 52);
  ASSERT_OK_AND_ASSIGN(v1::Attachment attachment,
                       UploadFile(sender.get(), files.path(), "mat.bin",
                                  content, "application/octet-stream"));
  v1::Document doc = NewDocument({kH51}, "Tệp bị mất ở trung tâm");
  *doc.add_attachments() = attachment;
  ASSERT_OK_AND_ASSIGN(SendReceipt lost, sender->Send(doc));
  ASSERT_TRUE(watch.WaitFor(
      IsDelivery(lost.document_id, kH51, v1::DELIVERY_STATE_FORWARDED)))
      << Dump(watch.Of(lost.document_id, kH51)) << fed_.Logs();
  // The centre holds it; its file goes while h51 is away.
  const std::string blob =
      absl::StrCat(fed_.broker("central").data_dir(), "/attachments/blobs/",
                   attachment.sha256().substr(0, 2), "/", attachment.sha256());
  ASSERT_TRUE(std::filesystem::exists(blob)) << blob;
  ASSERT_TRUE(std::filesystem::remove(blob));
  // A plain document behind it still gets through once h51 is back.
  ASSERT_OK_AND_ASSIGN(SendReceipt plain,
                       sender->Send(NewDocument({kH51}, "Văn bản sau đó")));

  ASSERT_OK(fed_.Start({"h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient,
                       fed_.Open("h51", kH51));
  Collector<std::string> got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       recipient->Receive([&](const IncomingDocument& d) {
                         got.Add(d.document.id());
                         return absl::OkStatus();
                       }));
  ASSERT_TRUE(watch.WaitFor(
      IsDelivery(lost.document_id, kH51, v1::DELIVERY_STATE_DENIED)))
      << Dump(watch.Of(lost.document_id, kH51)) << fed_.Logs();
  for (const v1::StatusEvent& e : watch.Of(lost.document_id, kH51)) {
    if (e.delivery_state() != v1::DELIVERY_STATE_DENIED) continue;
    EXPECT_THAT(e.reason(), HasSubstr(attachment.sha256())) << Dump({e});
    EXPECT_THAT(e.reason(), HasSubstr("lost")) << Dump({e});
  }
  ASSERT_TRUE(watch.WaitFor(
      IsDelivery(plain.document_id, kH51, v1::DELIVERY_STATE_DELIVERED)))
      << Dump(watch.Of(plain.document_id, kH51)) << fed_.Logs();
  EXPECT_EQ(got.CountAfter(absl::Milliseconds(500)), 1u);
  EXPECT_THAT(got.items(), ElementsAre(plain.document_id));
  session->Stop();
}

// ---- Statuses and documents wait while the centre is down -------------------

TEST_F(FederationTest, StatusesAndDocumentsWaitWhileTheCentreIsDown) {
  ASSERT_OK(fed_.Start({"central", "h49", "h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient,
                       fed_.Open("h51", kH51));
  Collector<std::string> h51_got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> h51_session,
                       recipient->Receive([&](const IncomingDocument& d) {
                         h51_got.Add(d.document.id());
                         return absl::OkStatus();
                       }));
  Collector<std::string> h49_got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> h49_session,
                       sender->Receive([&](const IncomingDocument& d) {
                         h49_got.Add(d.document.id());
                         return absl::OkStatus();
                       }));
  WatchRecorder watch(sender.get(), "");
  WatchRecorder reply_watch(recipient.get(), "");
  ASSERT_OK_AND_ASSIGN(
      SendReceipt first,
      sender->Send(NewDocument({kH51}, "Trước khi mất kết nối")));
  ASSERT_TRUE(watch.WaitFor(
      IsDelivery(first.document_id, kH51, v1::DELIVERY_STATE_DELIVERED)))
      << Dump(watch.Of(first.document_id, kH51)) << fed_.Logs();

  ASSERT_OK(fed_.broker("central").Stop());
  // Both provinces go on working: the recipient reports, both send.
  ASSERT_OK(
      recipient->ReportStatus(first.document_id, v1::BUSINESS_STATUS_ARRIVED));
  ASSERT_OK(recipient->ReportStatus(first.document_id,
                                    v1::BUSINESS_STATUS_PROCESSING));
  ASSERT_OK_AND_ASSIGN(
      SendReceipt second,
      sender->Send(NewDocument({kH51}, "Trong khi mất kết nối")));
  ASSERT_OK_AND_ASSIGN(SendReceipt reply,
                       recipient->Send(NewDocument({kH49}, "Trả lời")));
  EXPECT_EQ(h51_got.CountAfter(absl::Seconds(1)), 1u);
  EXPECT_EQ(h49_got.size(), 0u);
  EXPECT_THAT(Life(watch.Of(first.document_id, kH51)),
              ::testing::Not(Contains("BUSINESS_STATUS_ARRIVED")));

  ASSERT_OK(fed_.Start({"central"}));
  ASSERT_TRUE(watch.WaitFor(
      IsBusiness(first.document_id, kH51, v1::BUSINESS_STATUS_PROCESSING)))
      << Dump(watch.Of(first.document_id, kH51)) << fed_.Logs();
  EXPECT_THAT(Life(watch.Of(first.document_id, kH51)),
              ElementsAre("DELIVERY_STATE_ACCEPTED",
                          "DELIVERY_STATE_FORWARDED " + Custody("central"),
                          "DELIVERY_STATE_FORWARDED " + Custody("h51"),
                          "DELIVERY_STATE_DELIVERED", "BUSINESS_STATUS_ARRIVED",
                          "BUSINESS_STATUS_PROCESSING"))
      << Dump(watch.Of(first.document_id, kH51));
  ASSERT_TRUE(h51_got.WaitForCount(2, kWait)) << fed_.Logs();
  ASSERT_TRUE(h49_got.WaitForCount(1, kWait)) << fed_.Logs();
  EXPECT_THAT(h51_got.items(),
              ElementsAre(first.document_id, second.document_id));
  EXPECT_THAT(h49_got.items(), ElementsAre(reply.document_id));
  ASSERT_TRUE(watch.WaitFor(
      IsDelivery(second.document_id, kH51, v1::DELIVERY_STATE_DELIVERED)))
      << Dump(watch.Of(second.document_id, kH51));
  ASSERT_TRUE(reply_watch.WaitFor(
      IsDelivery(reply.document_id, kH49, v1::DELIVERY_STATE_DELIVERED)))
      << Dump(reply_watch.Of(reply.document_id, kH49));
  h51_session->Stop();
  h49_session->Stop();
}

// ---- Human approval of automated decisions ----------------------------------

v1::Document AiPersonnelDecision(const std::vector<std::string>& to,
                                 const std::string& subject) {
  v1::Document doc = NewDocument(to, subject);
  doc.mutable_metadata()->set_document_type("Quyết định");
  doc.mutable_metadata()->set_origin(v1::ORIGIN_AI);
  doc.mutable_metadata()->set_decision_category(
      v1::DECISION_CATEGORY_PERSONNEL);
  return doc;
}

// `broker`'s approver decides through gRPC directly, without the SDK's
// signature.
grpc::Status DecideUnsigned(Federation& fed, const std::string& broker,
                            const v1::DecideApprovalRequest& decide,
                            v1::DecideApprovalResponse* decided) {
  auto raw = v1::ApprovalService::NewStub(
      RawChannel(fed.broker(broker).endpoint(), "persons/approver"));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  return raw->DecideApproval(&context, decide, decided);
}

// `broker`'s approver approves document `id`, the one document waiting
// there, without signing (see DecideUnsigned).
absl::StatusOr<v1::DecideApprovalResponse> ApproveUnsigned(
    Federation& fed, const std::string& broker, const std::string& id) {
  ASSIGN_OR_RETURN(std::unique_ptr<AdminClient> approver,
                   fed.Admin(broker, "approver"));
  ASSIGN_OR_RETURN(v1::ListApprovalsResponse waiting,
                   approver->ListApprovals(v1::ListApprovalsRequest()));
  if (waiting.approvals_size() != 1 ||
      waiting.approvals(0).document_id() != id) {
    return absl::FailedPreconditionError(
        absl::StrCat("expected only ", id, " waiting at ", broker, ", found ",
                     waiting.ShortDebugString()));
  }
  v1::DecideApprovalRequest decide;
  decide.set_document_id(id);
  decide.set_decision(v1::APPROVAL_DECISION_APPROVE);
  decide.set_content_sha256(waiting.approvals(0).content_sha256());
  v1::DecideApprovalResponse decided;
  grpc::Status taken = DecideUnsigned(fed, broker, decide, &decided);
  if (!taken.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(taken.error_code()),
                        taken.error_message());
  }
  return decided;
}

TEST_F(FederationTest, AnAiPersonnelDecisionCrossesOnlyAfterApprovalWithIt) {
  ASSERT_OK(fed_.Start({"central", "h49"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  ASSERT_OK_AND_ASSIGN(Receivers at, ReceiveAt({{"central", kG22}}));
  WatchRecorder watch(sender.get(), "");
  ASSERT_OK_AND_ASSIGN(
      SendReceipt sent,
      sender->Send(AiPersonnelDecision({kG22}, "Bổ nhiệm do AI đề xuất")));
  const std::string id = sent.document_id;
  ASSERT_TRUE(
      watch.WaitFor(IsDelivery(id, kG22, v1::DELIVERY_STATE_PENDING_APPROVAL)))
      << Dump(watch.Of(id, kG22)) << fed_.Logs();
  EXPECT_EQ(at.got[0].CountAfter(absl::Seconds(2)), 0u)
      << "delivered before approval";
  // Only the approver of h49 sees it; the centre's approver does not.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> approver,
                       fed_.Admin("h49", "approver"));
  ASSERT_OK_AND_ASSIGN(v1::ListApprovalsResponse waiting,
                       approver->ListApprovals(v1::ListApprovalsRequest()));
  ASSERT_THAT(waiting.approvals(), ::testing::SizeIs(1));
  const v1::PendingApproval& p = waiting.approvals(0);
  EXPECT_EQ(p.document_id(), id);
  EXPECT_EQ(p.metadata().origin(), v1::ORIGIN_AI);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> elsewhere,
                       fed_.Admin("central", "approver"));
  ASSERT_OK_AND_ASSIGN(v1::ListApprovalsResponse none,
                       elsewhere->ListApprovals(v1::ListApprovalsRequest()));
  EXPECT_THAT(none.approvals(), IsEmpty());
  v1::DecideApprovalRequest decide;
  decide.set_document_id(id);
  decide.set_decision(v1::APPROVAL_DECISION_APPROVE);
  decide.set_content_sha256(p.content_sha256());
  decide.set_comment("Đã rà soát hồ sơ");

  // A decision must carry the approver's own signature over what it
  // decided: without one it is refused, and one made with another person's
  // key does not count (the SDK signs with the caller's).
  {
    v1::DecideApprovalResponse unsigned_answer;
    grpc::Status refused =
        DecideUnsigned(fed_, "h49", decide, &unsigned_answer);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(refused.error_message(), HasSubstr("signature: missing"));
  }
  ASSERT_OK_AND_ASSIGN(std::string pki, DevPkiDir());
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<signing::Signer> someone_else,
      signing::Signer::FromFiles(pki + "/persons/auditor.pem",
                                 pki + "/persons/auditor.key"));
  v1::DecideApprovalRequest forged = decide;
  forged.set_manifest_sha256(p.manifest_sha256());
  *forged.mutable_as() = p.yours();
  ASSERT_OK_AND_ASSIGN(
      *forged.mutable_signature(),
      someone_else->Sign(signing::ApprovalDigest(
                             id, p.manifest_sha256(), decide.content_sha256(),
                             decide.decision(), decide.comment(), forged.as()),
                         absl::Now()));
  EXPECT_THAT(approver->DecideApproval(forged),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("signed by spiffe://lienthong.local/person/"
                                 "auditor")));
  // The roles a decision is given as are listed for the approver and
  // signed by it: a decision signed as a role it would not be given as is
  // refused before it counts.
  ASSERT_THAT(p.yours(), ::testing::SizeIs(1));
  EXPECT_EQ(p.yours(0).org(), kH49);
  v1::DecideApprovalRequest other_role = decide;
  other_role.mutable_as()->Add()->set_role("chairman");
  other_role.mutable_as(0)->set_org(kH49);
  EXPECT_THAT(approver->DecideApproval(other_role),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("not as chairman@000.00.00.H49")));

  ASSERT_OK_AND_ASSIGN(v1::DecideApprovalResponse decided,
                       approver->DecideApproval(decide));
  EXPECT_TRUE(decided.released());
  ASSERT_TRUE(at.got[0].WaitForCount(1, kWait)) << fed_.Logs();
  const v1::Document got = at.got[0].items()[0].document;
  EXPECT_EQ(got.id(), id);
  ASSERT_THAT(got.approvals(), ::testing::SizeIs(1));
  EXPECT_EQ(got.approvals(0).approver(),
            "spiffe://lienthong.local/person/approver");
  EXPECT_EQ(got.approvals(0).content_sha256(), p.content_sha256());
  EXPECT_EQ(got.approvals(0).comment(), "Đã rà soát hồ sơ");
  // The recipient can check the approver's signature with the CA alone, for
  // this document as its sender signed it.
  const std::string manifest = sealing::HexOf(signing::DocumentDigest(got));
  EXPECT_EQ(manifest, p.manifest_sha256());
  ASSERT_OK_AND_ASSIGN(std::string ca, ReadFile(pki + "/ca.pem"));
  signing::VerifierOptions trust;
  trust.trust_root_pem = ca;
  trust.trust_domain = "lienthong.local";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<signing::SignatureVerifier> verifier,
                       signing::SignatureVerifier::Create(std::move(trust)));
  ASSERT_OK_AND_ASSIGN(
      signing::Signatory approved_by,
      signing::VerifyApproval(*verifier, id, manifest, got.approvals(0),
                              "approvals[0]", std::nullopt));
  EXPECT_EQ(approved_by.principal.spiffe_id,
            "spiffe://lienthong.local/person/approver");
  v1::Approval altered = got.approvals(0);
  altered.set_comment("Đồng ý");
  EXPECT_THAT(signing::VerifyApproval(*verifier, id, manifest, altered,
                                      "approvals[0]", std::nullopt)
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(got.approvals(0).as(), ::testing::SizeIs(1));
  EXPECT_EQ(got.approvals(0).as(0).role(), p.yours(0).role());
  altered = got.approvals(0);
  altered.set_role("chairman");
  EXPECT_THAT(signing::VerifyApproval(*verifier, id, manifest, altered,
                                      "approvals[0]", std::nullopt)
                  .status(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("did not sign it as")));
  ASSERT_TRUE(watch.WaitFor(IsDelivery(id, kG22, v1::DELIVERY_STATE_DELIVERED)))
      << Dump(watch.Of(id, kG22)) << fed_.Logs();
  EXPECT_THAT(
      Life(watch.Of(id, kG22)),
      ElementsAre("DELIVERY_STATE_ACCEPTED", "DELIVERY_STATE_PENDING_APPROVAL",
                  "DELIVERY_STATE_APPROVED",
                  "DELIVERY_STATE_FORWARDED " + Custody("central"),
                  "DELIVERY_STATE_DELIVERED"))
      << Dump(watch.Of(id, kG22));
  // The approval is in the document's evidence: audited at the sender's
  // broker with who, which content and the comment.
  ASSERT_OK_AND_ASSIGN(v1::EvidenceExport exported, sender->GetEvidence(id));
  v1::Evidence evidence;
  ASSERT_TRUE(evidence.ParseFromString(exported.evidence()));
  bool audited = false;
  for (const v1::EvidenceAuditEntry& stored : evidence.audit_entries()) {
    v1::AuditEntry e;
    ASSERT_TRUE(e.ParseFromString(stored.entry().entry()));
    if (e.kind() == v1::AUDIT_KIND_APPROVAL &&
        absl::StrContains(e.detail(), p.content_sha256()) &&
        absl::StrContains(e.detail(), "Đã rà soát hồ sơ") &&
        e.actor() == "spiffe://lienthong.local/person/approver")
      audited = true;
  }
  EXPECT_TRUE(audited) << evidence.DebugString();
  // An auditor checks the approver's signature in it with the CA alone.
  ASSERT_OK_AND_ASSIGN(signing::EvidenceReport report,
                       signing::VerifyEvidence(*verifier, exported));
  EXPECT_TRUE(report.ok()) << absl::StrJoin(report.problems, "\n");
  EXPECT_THAT(report.checked, ::testing::Contains(HasSubstr(
                                  "APPROVAL_DECISION_APPROVE signed by "
                                  "spiffe://lienthong.local/person/approver")))
      << absl::StrJoin(report.checked, "\n");
  for (auto& session : at.sessions) session->Stop();
}

// A broker that took a decision no approver signed (its signatures are
// off, or it is not honest) cannot pass it off as approved: the next broker,
// which requires signatures, denies the copy, naming the approval.
TEST_F(FederationTest, AnApprovalItsApproverDidNotSignIsDeniedOnTheWay) {
  ASSERT_OK_AND_ASSIGN(ApprovedUnsigned u,
                       SendApprovedUnsigned({"central", "h49"}, "central", kG22,
                                            "Bổ nhiệm chưa ký duyệt"));
  const std::string& id = u.id;
  WatchRecorder& watch = *u.watch;
  Receivers& at = u.at;
  EXPECT_FALSE(u.decided.approval().has_signature());
  ASSERT_TRUE(watch.WaitFor(IsDelivery(id, kG22, v1::DELIVERY_STATE_DENIED)))
      << Dump(watch.Of(id, kG22)) << fed_.Logs();
  EXPECT_THAT(watch.Of(id, kG22).back().reason(),
              HasSubstr("approval that is not its approver's: "
                        "approvals[0].signature: missing"));
  EXPECT_EQ(at.got[0].CountAfter(absl::Seconds(1)), 0u)
      << "delivered with an unsigned approval";
  for (auto& session : at.sessions) session->Stop();
}

// The same broker delivers such a copy to its own recipient, and the
// recipient's SDK, which takes no broker's word for an approval, refuses the
// document: its application never sees it and the sender learns why.
TEST_F(FederationTest, ARecipientsSdkRefusesAnApprovalItsApproverDidNotSign) {
  ASSERT_OK_AND_ASSIGN(ApprovedUnsigned u,
                       SendApprovedUnsigned({"h49"}, "h49", kUnitH49,
                                            "Điều động chưa ký duyệt"));
  const std::string& id = u.id;
  WatchRecorder& watch = *u.watch;
  Receivers& at = u.at;
  ASSERT_TRUE(u.decided.released());
  ASSERT_TRUE(
      watch.WaitFor(IsBusiness(id, kUnitH49, v1::BUSINESS_STATUS_REJECTED)))
      << Dump(watch.Of(id, kUnitH49)) << fed_.Logs();
  std::string reason;
  for (const v1::StatusEvent& e : watch.Of(id, kUnitH49)) {
    if (e.business_status() == v1::BUSINESS_STATUS_REJECTED)
      reason = e.reason();
  }
  EXPECT_THAT(reason,
              HasSubstr("the recipient's SDK refused an approval it carries "
                        "(INVALID_ARGUMENT): approvals[0].signature: missing"));
  EXPECT_EQ(at.got[0].CountAfter(absl::Milliseconds(500)), 0u)
      << "handed over with an unsigned approval";
  for (auto& session : at.sessions) session->Stop();
}

// A copy held for approval is not delivered, and neither are its
// attachments: its recipient cannot download them before the approval
// (the same NOT_FOUND as for a document that does not exist), and can after.
TEST_F(FederationTest, AHeldCopysAttachmentsAreNotDownloadableBeforeApproval) {
  ASSERT_OK(fed_.Start({"h49"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient,
                       fed_.Open("h49", kUnitH49));
  testing_util::TempDir files;
  ASSERT_OK_AND_ASSIGN(
      v1::Attachment scan,
      UploadFile(sender.get(), files.path(), "ho-so-can-bo.pdf",
                 std::string(3 << 20, 'h'), "application/pdf"));
  v1::Document doc = AiPersonnelDecision({kUnitH49}, "Điều động do AI đề xuất");
  *doc.add_attachments() = scan;
  ASSERT_OK_AND_ASSIGN(SendReceipt sent, sender->Send(doc));
  const std::string out = files.path() + "/nhan.pdf";
  EXPECT_THAT(recipient->DownloadAttachmentToFile(sent.document_id, scan, out),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(std::filesystem::exists(out));

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> approver,
                       fed_.Admin("h49", "approver"));
  ASSERT_OK_AND_ASSIGN(v1::ListApprovalsResponse waiting,
                       approver->ListApprovals(v1::ListApprovalsRequest()));
  ASSERT_THAT(waiting.approvals(), ::testing::SizeIs(1));
  v1::DecideApprovalRequest decide;
  decide.set_document_id(sent.document_id);
  decide.set_decision(v1::APPROVAL_DECISION_APPROVE);
  decide.set_content_sha256(waiting.approvals(0).content_sha256());
  ASSERT_OK(approver->DecideApproval(decide).status());
  EXPECT_OK(recipient->DownloadAttachmentToFile(sent.document_id, scan, out));
  EXPECT_TRUE(std::filesystem::exists(out));
}

TEST_F(FederationTest, ARejectedOrExpiredAiDecisionIsNeverDelivered) {
  fed_.SetApprovalExpiry("h49", 3);
  ASSERT_OK(fed_.Start({"central", "h49"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  ASSERT_OK_AND_ASSIGN(Receivers at, ReceiveAt({{"central", kG22}}));
  WatchRecorder watch(sender.get(), "");
  ASSERT_OK_AND_ASSIGN(
      SendReceipt rejected,
      sender->Send(AiPersonnelDecision({kG22}, "Điều động (sẽ bị từ chối)")));
  ASSERT_OK_AND_ASSIGN(
      SendReceipt expired,
      sender->Send(AiPersonnelDecision({kG22}, "Điều động (để quá hạn)")));

  // The approver rejects with the CLI, naming the content reviewed.
  absl::StatusOr<std::string> pki = DevPkiDir();
  ASSERT_OK(pki);
  auto cli = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {LIENTHONG_CLI_PATH,
                                     "--endpoint",
                                     fed_.broker("h49").endpoint(),
                                     "--ca",
                                     *pki + "/ca.pem",
                                     "--cert",
                                     *pki + "/persons/approver.pem",
                                     "--key",
                                     *pki + "/persons/approver.key"};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<ProgramResult> r = RunProgram(argv, kWait);
    EXPECT_OK(r);
    return r.value_or(ProgramResult{});
  };
  ProgramResult listed = cli({"approvals", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.stderr_text;
  EXPECT_THAT(listed.stdout_text,
              ::testing::AllOf(HasSubstr(rejected.document_id),
                               HasSubstr(expired.document_id),
                               HasSubstr(rejected.content_sha256)));
  ProgramResult no_reason = cli({"approvals", "reject", rejected.document_id,
                                 "--content-sha256", rejected.content_sha256});
  EXPECT_NE(no_reason.exit_code, 0) << no_reason.stdout_text;
  ProgramResult refused =
      cli({"approvals", "reject", rejected.document_id, "--content-sha256",
           rejected.content_sha256, "--comment", "Không đúng thẩm quyền"});
  ASSERT_EQ(refused.exit_code, 0) << refused.stderr_text;
  EXPECT_THAT(refused.stdout_text, HasSubstr("rejected"));

  ASSERT_TRUE(watch.WaitFor(
      IsDelivery(rejected.document_id, kG22, v1::DELIVERY_STATE_DENIED)))
      << Dump(watch.Of(rejected.document_id, kG22));
  EXPECT_THAT(watch.Of(rejected.document_id, kG22).back().reason(),
              HasSubstr("Không đúng thẩm quyền"));
  ASSERT_TRUE(watch.WaitFor(
      IsDelivery(expired.document_id, kG22, v1::DELIVERY_STATE_EXPIRED)))
      << Dump(watch.Of(expired.document_id, kG22)) << fed_.Logs();
  EXPECT_EQ(at.got[0].CountAfter(absl::Seconds(1)), 0u);
  ProgramResult late = cli({"approvals", "approve", expired.document_id,
                            "--content-sha256", expired.content_sha256});
  EXPECT_NE(late.exit_code, 0);
  EXPECT_THAT(late.stderr_text, HasSubstr("not waiting"));
  for (auto& session : at.sessions) session->Stop();
}

// ---- A province's broker is down: documents for it wait ---------------------

// Both fail at 11308d8: h49 refuses the send with NOT_FOUND ("not served by
// this broker nor by any broker in its directory") because it trusts the
// centre's announcement as complete (Router::KnownUnreachable), while the
// centre, which has a configured route to h51, announces only what it has
// heard recently.
TEST_F(FederationTest, ASendToAProvinceWhoseBrokerIsDownIsQueuedNotRefused) {
  // All four: h49 has heard from both its peers (while one of them has never
  // announced, h49 gives every org the benefit of the doubt).
  ASSERT_OK(fed_.Start({"central", "h49", "h50", "h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> admin, fed_.Admin("h49"));
  ASSERT_TRUE(WaitForDirectory(admin.get(), kUnitH51)) << fed_.Logs();
  // h51 goes down, then the centre restarts (and h51 is still down): the
  // centre still has its configured route to h51 and would hold documents
  // for it.
  ASSERT_OK(fed_.broker("h51").Stop());
  ASSERT_OK(fed_.broker("central").Stop());
  const absl::Time restarted = absl::Now();
  ASSERT_OK(fed_.Start({"central"}));
  // h49 has heard the restarted centre's directory.
  v1::PeerInfo central;
  ASSERT_TRUE(Eventually(
      [&] {
        absl::StatusOr<v1::ListPeersResponse> peers = admin->ListPeers();
        if (!peers.ok()) return false;
        for (const v1::PeerInfo& p : peers->peers())
          if (p.name() == "central") central = p;
        return central.outbound_up() && central.has_directory_heard_at() &&
               central.directory_heard_at().seconds() >=
                   absl::ToUnixSeconds(restarted);
      },
      kWait))
      << central.DebugString() << fed_.Logs();

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  absl::StatusOr<SendReceipt> receipt =
      sender->Send(NewDocument({kUnitH51}, "Gửi khi H51 đang ngừng"));
  ASSERT_OK(receipt) << "h51 is routable (the centre serves H51 by its route "
                        "table) but h49 refused the document";
  ASSERT_OK(fed_.Start({"h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient,
                       fed_.Open("h51", kUnitH51));
  Collector<std::string> got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       recipient->Receive([&](const IncomingDocument& d) {
                         got.Add(d.document.id());
                         return absl::OkStatus();
                       }));
  ASSERT_TRUE(got.WaitForCount(1, kWait)) << fed_.Logs();
  EXPECT_THAT(got.items(), ElementsAre(receipt->document_id));
  session->Stop();
}

TEST_F(FederationTest, ASendToAProvinceDownLongerThanTheStalePeriodIsQueued) {
  ASSERT_OK(fed_.Start({"central", "h49", "h50", "h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> admin, fed_.Admin("h49"));
  ASSERT_TRUE(WaitForDirectory(admin.get(), kUnitH51)) << fed_.Logs();
  // h51 stays down for longer than the directory's stale period (3 announce
  // intervals = 3 s here, 90 s with the default announce_seconds: 30).
  ASSERT_OK(fed_.broker("h51").Stop());
  absl::SleepFor(absl::Seconds(5));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  absl::StatusOr<SendReceipt> receipt =
      sender->Send(NewDocument({kUnitH51}, "Gửi khi H51 ngừng lâu"));
  ASSERT_OK(receipt) << "h51 is routable (the centre serves H51 by its route "
                        "table) but h49 refused the document";
  ASSERT_OK(fed_.Start({"h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient,
                       fed_.Open("h51", kUnitH51));
  Collector<std::string> got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       recipient->Receive([&](const IncomingDocument& d) {
                         got.Add(d.document.id());
                         return absl::OkStatus();
                       }));
  ASSERT_TRUE(got.WaitForCount(1, kWait)) << fed_.Logs();
  EXPECT_THAT(got.items(), ElementsAre(receipt->document_id));
  session->Stop();
}

// ---- Backlog while the link is down -----------------------------------------

TEST_F(FederationTest, BacklogWaitsInTheOutboxAndArrivesOnceInOrder) {
  constexpr int kPerSender = 1000;
  const std::vector<std::string> senders = {kH49, kUnitH49};
  ASSERT_OK(fed_.Start({"h49", "h50"}));
  ASSERT_OK(fed_.broker("h50").Stop());

  // Two senders at h49, each on its own pipelined stream, while h50 is down:
  // every send is accepted (the documents wait in h49's outbox for h50).
  std::vector<std::vector<std::string>> sent(
      senders.size(), std::vector<std::string>(kPerSender));
  std::atomic<int> failed{0};
  absl::Mutex mu;
  std::vector<std::string> errors;
  const absl::Time send_start = absl::Now();
  {
    std::vector<std::unique_ptr<Client>> clients;
    for (const std::string& org : senders) {
      ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> c, fed_.Open("h49", org));
      clients.push_back(std::move(c));
    }
    std::vector<std::thread> threads;
    for (size_t s = 0; s < senders.size(); ++s) {
      threads.emplace_back([&, s] {
        auto fail = [&](const std::string& what) {
          failed.fetch_add(1);
          absl::MutexLock lock(&mu);
          if (errors.size() < 5) errors.push_back(what);
        };
        absl::StatusOr<std::unique_ptr<SendStream>> stream =
            clients[s]->OpenSendStream(256);
        if (!stream.ok()) return fail(stream.status().ToString());
        for (int i = 0; i < kPerSender; ++i) {
          (*stream)->Submit(
              NewDocument({kH50}, absl::StrCat("Báo cáo ", i),
                          absl::StrCat("backlog-", senders[s], "-", i)),
              [&, s, i](absl::StatusOr<SendReceipt> r) {
                if (r.ok()) {
                  sent[s][i] = r->document_id;
                } else {
                  fail(absl::StrCat(i, ": ", r.status().ToString()));
                }
              });
        }
        if (absl::Status c = (*stream)->Close(); !c.ok()) fail(c.ToString());
      });
    }
    for (std::thread& t : threads) t.join();
  }
  const absl::Duration send_took = absl::Now() - send_start;
  ASSERT_EQ(failed.load(), 0) << absl::StrJoin(errors, "\n");

  // The operator sees them waiting for h50.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> admin, fed_.Admin("h49"));
  uint64_t waiting = 0;
  EXPECT_TRUE(Eventually(
      [&] {
        absl::StatusOr<v1::ListPeersResponse> peers = admin->ListPeers();
        if (!peers.ok()) return false;
        for (const v1::PeerInfo& p : peers->peers())
          if (p.name() == "h50") waiting = p.outbox();
        return waiting == senders.size() * kPerSender;
      },
      absl::Seconds(5)))
      << "outbox for h50: " << waiting;

  // h50 comes back; its committee drains its queue with raw Fetch + Ack.
  const absl::Time restart = absl::Now();
  ASSERT_OK(fed_.broker("h50").Start());
  RawInbox inbox(fed_.broker("h50").endpoint(), kH50);
  ReceivedLog log;
  std::map<std::string, std::vector<std::string>> order;  // by sender
  std::string fetch_error;
  const size_t total = senders.size() * kPerSender;
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  absl::Time quiet_until = absl::InfiniteFuture();
  while (absl::Now() < std::min(deadline, quiet_until)) {
    absl::StatusOr<std::vector<v1::Delivery>> got =
        inbox.FetchAndAck(1000, absl::Milliseconds(500));
    if (!got.ok()) {
      fetch_error = got.status().ToString();
      absl::SleepFor(absl::Milliseconds(100));
      continue;
    }
    for (const v1::Delivery& d : *got) {
      log.Add(d.document().id(), d.attempt());
      order[d.document().sender()].push_back(d.document().id());
    }
    // A late duplicate would come within a moment: keep fetching for 1 s.
    if (log.distinct() >= total && quiet_until == absl::InfiniteFuture())
      quiet_until = absl::Now() + absl::Seconds(1);
  }
  const absl::Duration drain_took = absl::Now() - restart;
  std::printf(
      "[federation backlog] %zu documents sent in %s while h50 was down; "
      "after its restart all fetched in %s (deliveries=%d distinct=%zu)\n",
      total, absl::FormatDuration(send_took).c_str(),
      absl::FormatDuration(drain_took).c_str(), log.calls(), log.distinct());

  EXPECT_EQ(log.distinct(), total)
      << "last fetch error: " << fetch_error << fed_.Logs();
  EXPECT_THAT(log.Duplicates(), IsEmpty());
  EXPECT_EQ(log.calls(), static_cast<int>(total));
  EXPECT_EQ(log.max_attempt(), 1u);
  for (size_t s = 0; s < senders.size(); ++s) {
    EXPECT_EQ(log.Missing(sent[s]), 0u) << senders[s];
    // Per-sender order: deliveries in the order of the sends.
    const std::vector<std::string>& got = order[senders[s]];
    size_t first_difference = 0;
    while (first_difference < std::min(got.size(), sent[s].size()) &&
           got[first_difference] == sent[s][first_difference])
      ++first_difference;
    EXPECT_TRUE(got == sent[s])
        << senders[s] << ": " << got.size() << " delivered, first out of "
        << "order at position " << first_difference;
  }
  EXPECT_EQ(order.size(), senders.size());

  // The outbox is empty and the senders see DELIVERED for their last ones.
  EXPECT_TRUE(Eventually(
      [&] {
        absl::StatusOr<v1::ListPeersResponse> peers = admin->ListPeers();
        if (!peers.ok()) return false;
        for (const v1::PeerInfo& p : peers->peers())
          if (p.name() == "h50") waiting = p.outbox();
        return waiting == 0;
      },
      kWait))
      << "outbox for h50: " << waiting;
  for (size_t s = 0; s < senders.size(); ++s) {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> c,
                         fed_.Open("h49", senders[s]));
    EXPECT_TRUE(WaitForRowState(c.get(), sent[s].back(), kH50,
                                v1::DELIVERY_STATE_DELIVERED))
        << senders[s];
  }
}

// ---- The sending broker crashes while its backlog goes out ------------------

TEST_F(FederationTest, SendingBrokerCrashMidTransferResendsWithoutDuplicates) {
  constexpr int kDocuments = 3000;
  ASSERT_OK(fed_.Start({"h49", "h50"}));
  ASSERT_OK(fed_.broker("h50").Stop());
  std::vector<std::string> sent(kDocuments);
  std::atomic<int> failed{0};
  absl::Mutex first_error_mu;
  absl::Status first_error;
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender,
                         fed_.Open("h49", kH49));
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SendStream> stream,
                         sender->OpenSendStream(512));
    for (int i = 0; i < kDocuments; ++i) {
      stream->Submit(NewDocument({kUnitH50}, absl::StrCat("Tờ trình ", i),
                                 absl::StrCat("resend-", i)),
                     [&, i](absl::StatusOr<SendReceipt> r) {
                       if (r.ok()) {
                         sent[i] = r->document_id;
                       } else {
                         failed.fetch_add(1);
                         absl::MutexLock lock(&first_error_mu);
                         if (first_error.ok()) first_error = r.status();
                       }
                     });
    }
    ASSERT_OK(stream->Close());
  }
  ASSERT_EQ(failed.load(), 0) << first_error;

  // h50 returns and h49 starts sending its backlog; kill -9 h49 once some of
  // it has arrived, restart it: it sends again what had no custody yet.
  ASSERT_OK(fed_.Start({"h50"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> observer,
                       fed_.Open("h50", kUnitH50));
  uint64_t at_kill = 0;
  bool arriving = Eventually(
      [&] {
        absl::StatusOr<v1::ListInboxResponse> inbox = observer->ListInbox(1);
        if (inbox.ok()) at_kill = inbox->total();
        return at_kill >= 200;
      },
      absl::Seconds(30));
  fed_.broker("h49").Kill9();
  absl::SleepFor(absl::Milliseconds(300));
  ASSERT_OK(fed_.Start({"h49"}));
  ASSERT_TRUE(arriving) << fed_.Logs();

  RawInbox inbox(fed_.broker("h50").endpoint(), kUnitH50);
  ReceivedLog log;
  std::vector<std::string> order;
  std::string fetch_error;
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  absl::Time quiet_until = absl::InfiniteFuture();
  while (absl::Now() < std::min(deadline, quiet_until)) {
    absl::StatusOr<std::vector<v1::Delivery>> got =
        inbox.FetchAndAck(1000, absl::Milliseconds(500));
    if (!got.ok()) {
      fetch_error = got.status().ToString();
      absl::SleepFor(absl::Milliseconds(100));
      continue;
    }
    for (const v1::Delivery& d : *got) {
      log.Add(d.document().id(), d.attempt());
      order.push_back(d.document().id());
    }
    if (log.distinct() >= static_cast<size_t>(kDocuments) &&
        quiet_until == absl::InfiniteFuture())
      quiet_until = absl::Now() + absl::Seconds(1);
  }
  std::printf(
      "[federation resend] %d documents; %llu at h50 when h49 was killed; "
      "fetched %d deliveries, %zu distinct\n",
      kDocuments, static_cast<unsigned long long>(at_kill), log.calls(),
      log.distinct());
  EXPECT_LT(at_kill, static_cast<uint64_t>(kDocuments))
      << "everything had arrived before the kill: it tested nothing";
  EXPECT_EQ(log.distinct(), static_cast<size_t>(kDocuments))
      << fetch_error << fed_.Logs();
  EXPECT_THAT(log.Duplicates(), IsEmpty());
  EXPECT_EQ(log.max_attempt(), 1u);
  size_t first_difference = 0;
  while (first_difference < std::min(order.size(), sent.size()) &&
         order[first_difference] == sent[first_difference])
    ++first_difference;
  EXPECT_TRUE(order == sent) << "first out of order at " << first_difference;

  // The sender's history of a document around the kill: each step once.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  for (size_t i : {size_t{0}, static_cast<size_t>(at_kill),
                   static_cast<size_t>(kDocuments - 1)}) {
    const std::string& id = sent[std::min(i, sent.size() - 1)];
    EXPECT_TRUE(WaitForRowState(sender.get(), id, kUnitH50,
                                v1::DELIVERY_STATE_DELIVERED))
        << id;
    ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status,
                         sender->GetDocumentStatus(id));
    std::vector<v1::StatusEvent> history(status.history().begin(),
                                         status.history().end());
    // Each step once. For the copy in flight at the kill, the resent
    // transfer's custody answer may come back after the far end's
    // DELIVERED (returned events go out as soon as the link is up), so the
    // order of arrival is not asserted; the state (checked above) is.
    EXPECT_THAT(Life(history), UnorderedElementsAre(
                                   "DELIVERY_STATE_ACCEPTED",
                                   "DELIVERY_STATE_FORWARDED " + Custody("h50"),
                                   "DELIVERY_STATE_DELIVERED"))
        << i << Dump(history);
  }
}

// ---- kill -9 of the middle broker during traffic ----------------------------

TEST_F(FederationTest, KillNineOfTheCentreLosesAndDuplicatesNothing) {
  constexpr int kDocuments = 1500;
  ASSERT_OK(fed_.Start({"central", "h49", "h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> receiver,
                       fed_.Open("h51", kH51));

  // kH51 receives through the SDK (which would hide a broker duplicate);
  // kUnitH51 by raw Fetch, counting every delivery the broker makes.
  ReceivedLog app;
  ReceiveOptions receive_options;
  receive_options.max_in_flight = 128;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       receiver->Receive(
                           [&](const IncomingDocument& d) {
                             app.Add(d.document.id(), d.attempt);
                             return absl::OkStatus();
                           },
                           receive_options));
  ReceivedLog raw;
  std::atomic<bool> stop_raw{false};
  std::string raw_error;
  std::thread raw_thread([&] {
    RawInbox inbox(fed_.broker("h51").endpoint(), kUnitH51);
    while (!stop_raw.load()) {
      absl::StatusOr<std::vector<v1::Delivery>> got =
          inbox.FetchAndAck(500, absl::Milliseconds(300));
      if (!got.ok()) {
        raw_error = got.status().ToString();
        absl::SleepFor(absl::Milliseconds(100));
        continue;
      }
      for (const v1::Delivery& d : *got)
        raw.Add(d.document().id(), d.attempt());
    }
  });

  // Every status event of H49's documents, from before the first send.
  EventTally tally(sender.get());
  absl::Mutex mu;
  std::vector<std::string> acked;  // in send order
  std::vector<std::string> errors;
  std::atomic<int> sent_count{0};
  std::atomic<bool> sending_done{false};
  std::thread sending([&] {
    for (int i = 0; i < kDocuments; ++i) {
      absl::StatusOr<SendReceipt> r = sender->Send(
          NewDocument({kH51, kUnitH51}, absl::StrCat("Công văn ", i),
                      absl::StrCat("k9-", i)));
      absl::MutexLock lock(&mu);
      if (r.ok()) {
        acked.push_back(r->document_id);
      } else if (errors.size() < 5) {
        errors.push_back(absl::StrCat(i, ": ", r.status().ToString()));
      }
      sent_count.fetch_add(1);
    }
    sending_done = true;
  });

  // Mid-traffic: once a fifth has come through the centre, kill it.
  bool reached = Eventually([&] { return app.distinct() >= kDocuments / 5; },
                            absl::Seconds(60));
  const int sent_at_kill = sent_count.load();
  const size_t received_at_kill = app.distinct();
  fed_.broker("central").Kill9();
  absl::SleepFor(absl::Milliseconds(500));
  absl::Status restarted = fed_.Start({"central"});
  const absl::Time restarted_at = absl::Now();

  bool sends_returned =
      Eventually([&] { return sending_done.load(); }, absl::Seconds(120));
  sending.join();
  std::vector<std::string> ids;
  {
    absl::MutexLock lock(&mu);
    ids = acked;
  }
  bool all_arrived =
      Eventually([&] { return app.Missing(ids) == 0 && raw.Missing(ids) == 0; },
                 absl::Seconds(90));
  const absl::Duration arrival_took = absl::Now() - restarted_at;
  // A late redelivery would show as a duplicate: give it a moment.
  absl::SleepFor(absl::Seconds(2));
  stop_raw = true;
  raw_thread.join();
  session->Stop();
  EXPECT_OK(session->Wait());

  std::printf(
      "[federation kill -9] documents=%d acked=%zu sent_at_kill=%d "
      "received_at_kill=%zu | app: distinct=%zu calls=%d | raw fetch: "
      "distinct=%zu deliveries=%d max_attempt=%u | all arrived %s after the "
      "restart\n",
      kDocuments, ids.size(), sent_at_kill, received_at_kill, app.distinct(),
      app.calls(), raw.distinct(), raw.calls(), raw.max_attempt(),
      absl::FormatDuration(arrival_took).c_str());

  ASSERT_TRUE(reached) << "only " << app.distinct()
                       << " through the centre in 60 s" << fed_.Logs();
  ASSERT_OK(restarted);
  EXPECT_TRUE(sends_returned);
  EXPECT_THAT(errors, IsEmpty());
  EXPECT_EQ(ids.size(), static_cast<size_t>(kDocuments));
  EXPECT_LT(received_at_kill, static_cast<size_t>(kDocuments))
      << "the kill came after everything arrived: it tested nothing";
  EXPECT_TRUE(all_arrived) << "app missing " << app.Missing(ids)
                           << ", raw missing " << raw.Missing(ids)
                           << " (last raw error: " << raw_error << ")"
                           << fed_.Logs();
  // Once each, at the application and at the broker.
  EXPECT_THAT(app.Duplicates(), IsEmpty());
  EXPECT_EQ(app.distinct(), ids.size());
  EXPECT_THAT(raw.Duplicates(), IsEmpty());
  EXPECT_EQ(raw.calls(), static_cast<int>(ids.size()));
  EXPECT_EQ(raw.max_attempt(), 1u);

  // The sender's history has each hop once, for a document sent early
  // (through the centre before the kill) and the last one.
  for (const std::string& id : {ids.front(), ids[ids.size() / 5], ids.back()}) {
    absl::StatusOr<v1::DocumentStatus> status;
    EXPECT_TRUE(Eventually(
        [&] {
          status = sender->GetDocumentStatus(id);
          if (!status.ok()) return false;
          for (const v1::RecipientStatus& r : status->recipients())
            if (r.delivery_state() != v1::DELIVERY_STATE_DELIVERED)
              return false;
          return status->recipients_size() == 2;
        },
        kWait))
        << (status.ok() ? status->DebugString() : status.status().ToString());
    if (!status.ok()) continue;
    for (const std::string& r : {std::string(kH51), std::string(kUnitH51)}) {
      std::vector<v1::StatusEvent> events;
      for (const v1::StatusEvent& e : status->history())
        if (e.recipient() == r) events.push_back(e);
      EXPECT_THAT(Life(events),
                  ::testing::UnorderedElementsAre(
                      "DELIVERY_STATE_ACCEPTED",
                      "DELIVERY_STATE_FORWARDED " + Custody("central"),
                      "DELIVERY_STATE_FORWARDED " + Custody("h51"),
                      "DELIVERY_STATE_DELIVERED"))
          << id << " " << r << Dump(events);
    }
  }

  // Broker level, every copy: each hop's custody and DELIVERED exactly once.
  // Events from different brokers may come back out of order after the
  // crash (the centre lost custody answers it had from h51 and gets them
  // again after h51's DELIVERED): the history keeps them as they came, the
  // copy's state only moves forward.
  std::vector<std::string> expected_life = {
      "DELIVERY_STATE_ACCEPTED",
      "DELIVERY_STATE_FORWARDED " + Custody("central"),
      "DELIVERY_STATE_FORWARDED " + Custody("h51"), "DELIVERY_STATE_DELIVERED"};
  std::sort(expected_life.begin(), expected_life.end());
  bool all_delivered = Eventually(
      [&] { return tally.delivered() >= 2 * ids.size(); }, absl::Seconds(60));
  absl::SleepFor(absl::Seconds(1));
  absl::flat_hash_map<std::string, std::vector<std::string>> lives =
      tally.lives();
  int wrong = 0;
  int reordered = 0;
  std::string examples;
  std::vector<std::pair<std::string, std::string>> reordered_copies;
  for (const std::string& id : ids) {
    for (const char* r : {kH51, kUnitH51}) {
      std::vector<std::string> life = lives[absl::StrCat(id, " ", r)];
      const bool in_order = !life.empty() &&
                            life.back() == "DELIVERY_STATE_DELIVERED" &&
                            life.front() == "DELIVERY_STATE_ACCEPTED";
      std::vector<std::string> sorted = life;
      std::sort(sorted.begin(), sorted.end());
      if (sorted != expected_life) {
        if (++wrong <= 3)
          absl::StrAppend(&examples, "\n  ", id, " ", r, ": ",
                          absl::StrJoin(life, " | "));
      } else if (!in_order) {
        ++reordered;
        if (reordered_copies.size() < 5) reordered_copies.emplace_back(id, r);
      }
    }
  }
  std::printf(
      "[federation kill -9] sender's watch: %zu DELIVERED events for %zu "
      "copies; %d copies with missing or repeated events; %d with DELIVERED "
      "before a FORWARDED\n",
      tally.delivered(), 2 * ids.size(), wrong, reordered);
  EXPECT_TRUE(all_delivered) << tally.delivered() << " of " << 2 * ids.size();
  EXPECT_EQ(tally.delivered(), 2 * ids.size());
  EXPECT_EQ(wrong, 0) << examples;
  // Whatever the order of arrival, the sender's row says DELIVERED.
  for (const auto& [id, r] : reordered_copies) {
    EXPECT_TRUE(WaitForRowState(sender.get(), id, r,
                                v1::DELIVERY_STATE_DELIVERED, absl::Seconds(2)))
        << id << " " << r << ": " << absl::StrJoin(lives[id + " " + r], " | ");
  }
  EXPECT_OK(tally.status());
}

// ---- Refusals: the far broker's policy, no route, the hop limit -------------

TEST_F(FederationTest, FarBrokerPolicyDenialComesBackNamingItsRule) {
  fed_.SetPolicy("h51", R"(description: h51 refuses H49 writing to its committee
rules:
  - name: federation-permit
    effect: permit
    sender: {provinces: [H49, H50, H51, G22]}
    recipient: {provinces: [H49, H50, H51, G22, H52]}
    max_classification: unclassified
  - name: h51-committee-not-from-h49
    effect: forbid
    sender: {provinces: [H49]}
    recipient: {orgs: [000.00.00.H51]}
    cross_broker: true
)");
  ASSERT_OK(fed_.Start({"central", "h49", "h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> committee,
                       fed_.Open("h51", kH51));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> unit,
                       fed_.Open("h51", kUnitH51));
  WatchRecorder watch(sender.get(), "");
  Collector<std::string> unit_got;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReceiveSession> session,
                       unit->Receive([&](const IncomingDocument& d) {
                         unit_got.Add(d.document.id());
                         return absl::OkStatus();
                       }));

  // h49 and the centre permit both copies; h51 refuses one of them.
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt,
                       sender->Send(NewDocument({kH51, kUnitH51}, "Đề nghị")));
  const std::string id = receipt.document_id;
  ASSERT_TRUE(watch.WaitFor(IsDelivery(id, kH51, v1::DELIVERY_STATE_DENIED)))
      << Dump(watch.Of(id, kH51)) << fed_.Logs();
  ASSERT_TRUE(unit_got.WaitForCount(1, kWait)) << fed_.Logs();
  EXPECT_THAT(unit_got.items(), ElementsAre(id));
  ASSERT_TRUE(
      watch.WaitFor(IsDelivery(id, kUnitH51, v1::DELIVERY_STATE_DELIVERED)))
      << Dump(watch.Of(id, kUnitH51));

  for (const v1::StatusEvent& e : watch.Of(id, kH51)) {
    if (e.delivery_state() != v1::DELIVERY_STATE_DENIED) continue;
    EXPECT_THAT(e.reason(), HasSubstr("denied at " + BrokerId("h51")))
        << Dump({e});
    EXPECT_THAT(e.reason(), HasSubstr("h51-committee-not-from-h49"));
    EXPECT_EQ(e.policy().broker(), BrokerId("h51")) << e.DebugString();
    EXPECT_THAT(e.policy().rules(), Contains("h51-committee-not-from-h49"))
        << e.DebugString();
    EXPECT_THAT(e.policy().policy_version(), HasSubstr("sha256:"));
    EXPECT_EQ(e.actor(), BrokerId("h51"));
  }
  // The refused copy never reaches the committee; the sender's row says
  // DENIED (a late FORWARDED must not hide it), the other DELIVERED.
  absl::SleepFor(absl::Milliseconds(1500));
  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse inbox, committee->ListInbox(10));
  EXPECT_EQ(inbox.total(), 0u);
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status,
                       sender->GetDocumentStatus(id));
  const v1::RecipientStatus* denied = FindRecipient(status, kH51);
  const v1::RecipientStatus* delivered = FindRecipient(status, kUnitH51);
  ASSERT_NE(denied, nullptr) << status.DebugString();
  ASSERT_NE(delivered, nullptr) << status.DebugString();
  EXPECT_EQ(denied->delivery_state(), v1::DELIVERY_STATE_DENIED)
      << Dump(watch.Of(id, kH51));
  EXPECT_EQ(delivered->delivery_state(), v1::DELIVERY_STATE_DELIVERED);
  std::vector<std::string> life = Life(watch.Of(id, kH51));
  ASSERT_FALSE(life.empty());
  EXPECT_EQ(life.front(), "DELIVERY_STATE_ACCEPTED");
  EXPECT_EQ(life.back(), "DELIVERY_STATE_DENIED") << Dump(watch.Of(id, kH51));
  EXPECT_THAT(life, Contains("DELIVERY_STATE_FORWARDED " + Custody("central")));
  // h51 refused that copy: it never was in h51's custody (Custody.copies
  // lists only the copies the receiving broker's policy permitted).
  EXPECT_THAT(life, ::testing::Not(
                        Contains("DELIVERY_STATE_FORWARDED " + Custody("h51"))))
      << Dump(watch.Of(id, kH51));

  // No route: h51's only peer, the centre, has announced its directory and
  // nobody serves H52, so the send fails at once.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> h51_sender,
                       fed_.Open("h51", kUnitH51));
  absl::StatusOr<SendReceipt> nowhere =
      h51_sender->Send(NewDocument({"000.00.00.H52"}, "Không ai nhận"));
  EXPECT_EQ(nowhere.status().code(), absl::StatusCode::kNotFound)
      << nowhere.status();
  EXPECT_THAT(std::string(nowhere.status().message()),
              HasSubstr("000.00.00.H52"));

  // h49 has not heard from h50 (never started), so it gives H52 the benefit
  // of the doubt and the centre, which has no route, refuses it.
  absl::StatusOr<SendReceipt> doubt =
      sender->Send(NewDocument({"000.00.00.H52"}, "Không ai nhận"));
  if (doubt.ok()) {
    EXPECT_TRUE(watch.WaitFor(IsDelivery(doubt->document_id, "000.00.00.H52",
                                         v1::DELIVERY_STATE_DENIED)))
        << Dump(watch.Of(doubt->document_id, "000.00.00.H52"));
    for (const v1::StatusEvent& e :
         watch.Of(doubt->document_id, "000.00.00.H52")) {
      if (e.delivery_state() == v1::DELIVERY_STATE_DENIED) {
        EXPECT_THAT(e.reason(), HasSubstr(BrokerId("central")));
        EXPECT_THAT(e.reason(), HasSubstr("no route"));
      }
    }
  } else {
    EXPECT_EQ(doubt.status().code(), absl::StatusCode::kNotFound)
        << doubt.status();
  }
  session->Stop();
}

TEST_F(FederationTest, HopLimitAtTheReceivingBrokerComesBackAsDenied) {
  // h50 takes documents that have passed fewer than one broker: none.
  fed_.SetMaxHops("h50", 1);
  ASSERT_OK(fed_.Start({"h49", "h50"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  WatchRecorder watch(sender.get(), "");
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt,
                       sender->Send(NewDocument({kH50}, "Quá số chặng")));
  const std::string id = receipt.document_id;
  ASSERT_TRUE(watch.WaitFor(IsDelivery(id, kH50, v1::DELIVERY_STATE_DENIED)))
      << Dump(watch.Of(id, kH50)) << fed_.Logs();
  for (const v1::StatusEvent& e : watch.Of(id, kH50)) {
    if (e.delivery_state() != v1::DELIVERY_STATE_DENIED) continue;
    EXPECT_THAT(e.reason(), HasSubstr("hop limit"));
    EXPECT_THAT(e.reason(), HasSubstr(BrokerId("h50")));
  }
  absl::SleepFor(absl::Milliseconds(1000));
  // h50 refused the copy: it never was in h50's custody.
  EXPECT_THAT(Life(watch.Of(id, kH50)),
              ElementsAre("DELIVERY_STATE_ACCEPTED", "DELIVERY_STATE_DENIED"))
      << Dump(watch.Of(id, kH50));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient,
                       fed_.Open("h50", kH50));
  ASSERT_OK_AND_ASSIGN(v1::ListInboxResponse inbox, recipient->ListInbox(10));
  EXPECT_EQ(inbox.total(), 0u);
  // The sender's row ends DENIED.
  EXPECT_TRUE(WaitForRowState(sender.get(), id, kH50, v1::DELIVERY_STATE_DENIED,
                              absl::Seconds(5)))
      << Dump(watch.Of(id, kH50));
}

// ---- Only configured peer brokers may link ----------------------------------

// ---- Recall across brokers
// ----------------------------------------------------

// Fetches at `client` until `n` documents came (or the time is up),
// acknowledging them; their ids in arrival order.
std::vector<std::string> FetchAll(Client& client, size_t n,
                                  absl::Duration timeout = kWait) {
  std::vector<std::string> ids;
  const absl::Time deadline = absl::Now() + timeout;
  while (ids.size() < n && absl::Now() < deadline) {
    absl::StatusOr<std::vector<IncomingDocument>> got =
        client.Fetch(100, absl::Seconds(1));
    if (!got.ok()) continue;
    std::vector<std::string> batch;
    for (const IncomingDocument& d : *got) batch.push_back(d.document.id());
    if (!batch.empty() && client.Ack(batch).ok())
      ids.insert(ids.end(), batch.begin(), batch.end());
  }
  return ids;
}

// The last `n` steps of a copy's life.
std::vector<std::string> LastSteps(const std::vector<v1::StatusEvent>& events,
                                   size_t n) {
  std::vector<std::string> life = Life(events);
  if (life.size() > n) life.erase(life.begin(), life.end() - n);
  return life;
}

TEST_F(FederationTest, RecallThroughTheCentreIsAnsweredAndWithdraws) {
  ASSERT_OK(fed_.Start({"central", "h49", "h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient,
                       fed_.Open("h51", kH51));
  WatchRecorder watch(sender.get(), "");
  ASSERT_OK_AND_ASSIGN(SendReceipt agreed_doc,
                       sender->Send(NewDocument({kH51}, "Công văn A")));
  ASSERT_OK_AND_ASSIGN(SendReceipt refused_doc,
                       sender->Send(NewDocument({kH51}, "Công văn B")));
  const std::string a = agreed_doc.document_id, b = refused_doc.document_id;
  EXPECT_THAT(FetchAll(*recipient, 2), ElementsAre(a, b)) << fed_.Logs();
  ASSERT_TRUE(
      WaitForRowState(sender.get(), a, kH51, v1::DELIVERY_STATE_DELIVERED));
  ASSERT_TRUE(
      WaitForRowState(sender.get(), b, kH51, v1::DELIVERY_STATE_DELIVERED));

  ASSERT_OK_AND_ASSIGN(SendReceipt recall_a,
                       sender->Send(NewChangeRequest(
                           a, {kH51}, v1::BUSINESS_TYPE_RECALL, "Thu hồi A")));
  ASSERT_OK_AND_ASSIGN(SendReceipt recall_b,
                       sender->Send(NewChangeRequest(
                           b, {kH51}, v1::BUSINESS_TYPE_RECALL, "Thu hồi B")));
  EXPECT_TRUE(watch.WaitFor(
      IsBusiness(a, kH51, v1::BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED)));
  EXPECT_THAT(FetchAll(*recipient, 2),
              UnorderedElementsAre(recall_a.document_id, recall_b.document_id))
      << fed_.Logs();
  // The recipient's broker knows of the requests: it takes the answers.
  ASSERT_OK(recipient->AnswerChangeRequest(a, /*agree=*/true));
  ASSERT_OK(recipient->AnswerChangeRequest(b, /*agree=*/false,
                                           "Văn bản đã được thi hành"));

  ASSERT_TRUE(watch.WaitFor(IsDelivery(a, kH51, v1::DELIVERY_STATE_RECALLED)))
      << Dump(watch.Of(a, kH51)) << fed_.Logs();
  ASSERT_TRUE(watch.WaitFor(IsBusiness(b, kH51, v1::BUSINESS_STATUS_REFUSED)))
      << Dump(watch.Of(b, kH51)) << fed_.Logs();
  EXPECT_THAT(LastSteps(watch.Of(a, kH51), 3),
              ElementsAre("BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED",
                          "BUSINESS_STATUS_AGREED", "DELIVERY_STATE_RECALLED"))
      << Dump(watch.Of(a, kH51));
  EXPECT_THAT(LastSteps(watch.Of(b, kH51), 2),
              ElementsAre("BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED",
                          "BUSINESS_STATUS_REFUSED"))
      << Dump(watch.Of(b, kH51));
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status, sender->GetDocumentStatus(a));
  EXPECT_EQ(status.recipients(0).delivery_state(), v1::DELIVERY_STATE_RECALLED);
  EXPECT_EQ(status.recipients(0).business_status(), v1::BUSINESS_STATUS_AGREED);
  EXPECT_THAT(LastSteps({status.history().begin(), status.history().end()}, 3),
              ElementsAre("BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED",
                          "BUSINESS_STATUS_AGREED", "DELIVERY_STATE_RECALLED"));
  ASSERT_OK_AND_ASSIGN(status, sender->GetDocumentStatus(b));
  EXPECT_EQ(status.recipients(0).delivery_state(),
            v1::DELIVERY_STATE_DELIVERED);

  // The far recipient prints B: recorded at its broker, seen by the sender.
  ASSERT_OK(recipient->RecordPaperConversion(b, "Trình ký bản giấy"));
  ASSERT_TRUE(watch.WaitFor([&](const v1::StatusEvent& e) {
    return e.document_id() == b && e.recipient() == kH51 &&
           e.has_paper_conversion() &&
           e.paper_conversion().reason() == "Trình ký bản giấy";
  })) << Dump(watch.Of(b, kH51))
      << fed_.Logs();
  ASSERT_OK_AND_ASSIGN(std::vector<v1::PaperConversion> printed,
                       recipient->ListPaperConversions());
  ASSERT_EQ(printed.size(), 1u);
  EXPECT_EQ(printed[0].document_id(), b);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> stranger,
                       fed_.Open("h51", kUnitH51));
  EXPECT_THAT(stranger->RecordPaperConversion(b, "In"),
              StatusIs(absl::StatusCode::kNotFound));

  // A copy waiting at the far broker, never handed out: an express recall
  // withdraws it there at once, and it is never delivered, not after a
  // restart either.
  ASSERT_OK_AND_ASSIGN(SendReceipt waiting,
                       sender->Send(NewDocument({kH51}, "Công văn C")));
  const std::string c = waiting.document_id;
  ASSERT_TRUE(watch.WaitFor([&](const v1::StatusEvent& e) {
    return e.document_id() == c &&
           e.delivery_state() == v1::DELIVERY_STATE_FORWARDED &&
           e.reason() == Custody("h51");
  })) << fed_.Logs();
  ASSERT_OK_AND_ASSIGN(SendReceipt recall_c,
                       sender->Send(NewChangeRequest(
                           c, {kH51}, v1::BUSINESS_TYPE_RECALL, "Thu hồi C")));
  ASSERT_TRUE(watch.WaitFor(IsDelivery(c, kH51, v1::DELIVERY_STATE_RECALLED)))
      << Dump(watch.Of(c, kH51)) << fed_.Logs();
  recipient.reset();
  ASSERT_OK(fed_.broker("h51").Stop());
  ASSERT_OK(fed_.broker("h51").Start());
  ASSERT_OK_AND_ASSIGN(recipient, fed_.Open("h51", kH51));
  EXPECT_THAT(FetchAll(*recipient, 1), ElementsAre(recall_c.document_id));
  EXPECT_THAT(FetchAll(*recipient, 1, absl::Seconds(2)), IsEmpty());
  EXPECT_THAT(recipient->AnswerChangeRequest(c, /*agree=*/true),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

// An express recall overtakes its normal original in the centre's outbox
// while the far broker is down: the original, arriving after its recall, is
// withdrawn instead of delivered.
TEST_F(FederationTest, AnExpressRecallThatOvertookItsDocumentStillWithdrawsIt) {
  ASSERT_OK(fed_.Start({"central", "h49", "h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  WatchRecorder watch(sender.get(), "");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> admin, fed_.Admin("h49"));
  ASSERT_TRUE(WaitForDirectory(admin.get(), kH51)) << fed_.Logs();
  ASSERT_OK(fed_.broker("h51").Stop());
  ASSERT_OK_AND_ASSIGN(SendReceipt sent,
                       sender->Send(NewDocument({kH51}, "Công văn D")));
  const std::string d = sent.document_id;
  ASSERT_OK_AND_ASSIGN(SendReceipt recall,
                       sender->Send(NewChangeRequest(
                           d, {kH51}, v1::BUSINESS_TYPE_RECALL, "Thu hồi D")));
  ASSERT_TRUE(watch.WaitFor([&](const v1::StatusEvent& e) {
    return e.document_id() == recall.document_id &&
           e.delivery_state() == v1::DELIVERY_STATE_FORWARDED &&
           e.reason() == Custody("central");
  })) << fed_.Logs();
  ASSERT_OK(fed_.broker("h51").Start());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> recipient,
                       fed_.Open("h51", kH51));
  EXPECT_THAT(FetchAll(*recipient, 1), ElementsAre(recall.document_id))
      << fed_.Logs();
  ASSERT_TRUE(watch.WaitFor(IsDelivery(d, kH51, v1::DELIVERY_STATE_RECALLED)))
      << Dump(watch.Of(d, kH51)) << fed_.Logs();
  EXPECT_THAT(FetchAll(*recipient, 1, absl::Seconds(2)), IsEmpty());
}

// Opens FederationService.Link on `endpoint` as `identity`, announces
// `announce` and returns the first response (or the stream's status).
struct LinkAttempt {
  grpc::Status status;
  bool got_response = false;
  v1::LinkResponse response;
};
LinkAttempt TryLink(const std::string& endpoint, const std::string& identity,
                    const v1::Announce& announce) {
  LinkAttempt out;
  auto stub = v1::FederationService::NewStub(RawChannel(endpoint, identity));
  grpc::ClientContext ctx;
  ctx.set_deadline(In(absl::Seconds(10)));
  auto stream = stub->Link(&ctx);
  v1::LinkRequest request;
  *request.mutable_announce() = announce;
  stream->Write(request);
  out.got_response = stream->Read(&out.response);
  stream->WritesDone();
  if (out.got_response) {
    v1::LinkResponse more;
    // Drain until the server ends its side (it does once we are done).
    ctx.TryCancel();
    while (stream->Read(&more)) {
    }
  }
  out.status = stream->Finish();
  return out;
}

TEST_F(FederationTest, OnlyConfiguredPeerBrokersMayLink) {
  ASSERT_OK(fed_.Start({"h51"}));
  const std::string endpoint = fed_.broker("h51").endpoint();
  v1::Announce announce;
  announce.set_broker("central");
  v1::DirectoryEntry* entry = announce.add_entries();
  entry->set_org(kG22);
  entry->set_broker("central");

  // An organization's certificate.
  LinkAttempt org = TryLink(endpoint, absl::StrCat("orgs/", kH51), announce);
  EXPECT_EQ(org.status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << org.status.error_message();
  EXPECT_THAT(org.status.error_message(), HasSubstr("not a broker"));
  EXPECT_FALSE(org.got_response);
  // A person's.
  LinkAttempt person = TryLink(endpoint, "persons/operator", announce);
  EXPECT_EQ(person.status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << person.status.error_message();
  // A broker of the same trust domain that h51 does not list as a peer.
  LinkAttempt stranger = TryLink(endpoint, "brokers/h50", announce);
  EXPECT_EQ(stranger.status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << stranger.status.error_message();
  EXPECT_THAT(stranger.status.error_message(), HasSubstr("h50"));
  EXPECT_THAT(stranger.status.error_message(), HasSubstr("not a peer"));
  EXPECT_FALSE(stranger.got_response);
  // Its configured peer is let in and hears h51's directory.
  LinkAttempt peer = TryLink(endpoint, "brokers/central", announce);
  ASSERT_TRUE(peer.got_response)
      << peer.status.error_code() << " " << peer.status.error_message();
  EXPECT_EQ(peer.response.announce().broker(), "h51");
  std::vector<std::string> orgs;
  for (const v1::DirectoryEntry& e : peer.response.announce().entries()) {
    orgs.push_back(e.org());
    EXPECT_EQ(e.broker(), "h51");
    EXPECT_EQ(e.distance(), 0u);
  }
  EXPECT_THAT(orgs, ::testing::UnorderedElementsAre(kH51, kUnitH51));
}

// A peer that puts more transfers in one message than the protocol allows
// (ours never do) is cut off with INVALID_ARGUMENT naming the limit, before
// any of them is taken on.
TEST_F(FederationTest, AMessageWithTooManyTransfersEndsTheLink) {
  ASSERT_OK(fed_.Start({"h51"}));
  auto stub = v1::FederationService::NewStub(
      RawChannel(fed_.broker("h51").endpoint(), "brokers/central"));
  grpc::ClientContext ctx;
  ctx.set_deadline(In(absl::Seconds(10)));
  auto stream = stub->Link(&ctx);
  v1::LinkRequest request;
  for (int i = 0; i < 257; ++i) request.add_transfers()->set_id(i + 1);
  stream->Write(request);
  v1::LinkResponse response;
  while (stream->Read(&response)) {
    EXPECT_EQ(response.custody_size(), 0);
  }
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_message();
  EXPECT_THAT(status.error_message(),
              HasSubstr("257 transfers and 0 event acknowledgements; at most "
                        "256"));
}

TEST_F(FederationTest, ADialerRefusesAPeerEndpointServedByAnotherBroker) {
  // h49 believes h50 listens where h51 does: the link must not come up
  // (h51's certificate does not name h50), and nothing goes to h51.
  fed_.SetPeerEndpoint("h49", "h50", "h51");
  ASSERT_OK(fed_.Start({"h49", "h51"}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> sender, fed_.Open("h49", kH49));
  ASSERT_OK_AND_ASSIGN(SendReceipt receipt,
                       sender->Send(NewDocument({kH50}, "Nhầm địa chỉ")));
  EXPECT_TRUE(Eventually(
      [&] {
        return absl::StrContains(fed_.broker("h49").stderr_text(),
                                 "is not broker h50");
      },
      kWait))
      << fed_.Logs();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<AdminClient> admin, fed_.Admin("h49"));
  ASSERT_OK_AND_ASSIGN(v1::ListPeersResponse peers, admin->ListPeers());
  for (const v1::PeerInfo& p : peers.peers()) {
    if (p.name() != "h50") continue;
    EXPECT_FALSE(p.outbound_up()) << p.DebugString();
    EXPECT_EQ(p.outbox(), 1u) << p.DebugString();
    EXPECT_THAT(p.outbound_last_error(), HasSubstr("is not broker h50"));
  }
  ASSERT_OK_AND_ASSIGN(v1::DocumentStatus status,
                       sender->GetDocumentStatus(receipt.document_id));
  ASSERT_EQ(status.recipients_size(), 1);
  EXPECT_EQ(status.recipients(0).delivery_state(), v1::DELIVERY_STATE_ACCEPTED);
}

}  // namespace
}  // namespace lienthong::integration
