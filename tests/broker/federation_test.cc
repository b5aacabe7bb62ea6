// Federation in the broker core, without gRPC: two or three exchanges, each
// over its own memory store and policy, wired to each other directly the way
// the link layer wires them over FederationService.Link. A Wire stands for
// one link `from` dialed to `to`: from's outbox goes to to's inbound
// processing, the custody comes back to from's outbound session; to's return
// queue for `from` goes to from's inbound processing and, once stored, is
// acknowledged back to to's return session. Each leg can be held, dropped or
// tampered with to play the failures the link layer must survive.
#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/broker/exchange.h"
#include "lienthong/broker/routing.h"
#include "lienthong/common/clock.h"
#include "lienthong/common/identity.h"
#include "lienthong/common/ids.h"
#include "lienthong/signing/signing.h"
#include "lienthong/storage/store.h"
#include "tests/testing/async.h"
#include "tests/testing/status_matchers.h"

// PeerRoute{.name = ..., .orgs = ...} leaves the other fields at their
// defaults, as intended.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace lienthong::broker {
namespace {

using ::lienthong::testing_util::AsyncResult;
using ::lienthong::testing_util::Collector;
using ::lienthong::testing_util::Eventually;
using ::lienthong::testing_util::StatusIs;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr char kH49[] = "000.00.00.H49";  // served by a
constexpr char kH50[] = "000.00.00.H50";  // served by a
constexpr char kG22[] = "000.00.00.G22";  // served by b
constexpr char kG23[] = "000.00.00.G23";  // served by b
constexpr char kT99[] = "000.00.00.T99";  // served by c
constexpr char kX01[] = "000.00.00.X01";  // served by no broker

constexpr char kBrokerA[] = "spiffe://lienthong.local/broker/a";
constexpr char kBrokerB[] = "spiffe://lienthong.local/broker/b";
constexpr char kBrokerC[] = "spiffe://lienthong.local/broker/c";

// Every flow permitted.
constexpr char kOpenPolicy[] = R"(
rules:
  - name: everyone-exchanges
    effect: permit
)";

// What b serves under when it refuses some flows: no proposals (Tờ trình)
// at all, and nothing from other brokers for G23.
constexpr char kNoProposalsPolicy[] = R"(
rules:
  - name: everyone-exchanges
    effect: permit
  - name: b-refuses-proposals
    effect: forbid
    document_types: [Tờ trình]
  - name: g23-takes-nothing-from-afar
    effect: forbid
    recipient: {orgs: [000.00.00.G23]}
    cross_broker: true
)";

Principal Org(const std::string& code) {
  absl::StatusOr<Principal> p =
      ParseSpiffeId(absl::StrCat("spiffe://lienthong.local/org/", code));
  EXPECT_OK(p) << code;
  return p.value_or(Principal{});
}

Principal MustParse(const std::string& uri) {
  absl::StatusOr<Principal> p = ParseSpiffeId(uri);
  EXPECT_OK(p) << uri;
  return p.value_or(Principal{});
}

v1::Document NewDocument(const std::string& sender,
                         std::vector<std::string> recipients,
                         const std::string& subject = "Công văn liên tỉnh") {
  v1::Document doc;
  doc.set_sender(sender);
  for (auto& r : recipients) doc.add_recipients(std::move(r));
  v1::DocumentMetadata* m = doc.mutable_metadata();
  m->set_subject(subject);
  m->set_number("45");
  m->set_notation("CV-UBND");
  m->set_issue_date("2027-03-01");
  m->set_document_type("Công văn");
  m->set_urgency(v1::URGENCY_NORMAL);
  doc.set_body("Nội dung công văn gửi liên tỉnh");
  doc.set_body_content_type("text/plain; charset=utf-8");
  return doc;
}

std::vector<std::string> TraceOf(const v1::Document& doc) {
  std::vector<std::string> out;
  for (const v1::Hop& h : doc.trace()) out.push_back(h.broker());
  return out;
}

std::vector<std::string> Ids(const std::vector<v1::Delivery>& deliveries) {
  std::vector<std::string> ids;
  for (const v1::Delivery& d : deliveries) ids.push_back(d.document().id());
  return ids;
}

// Events of `history` for `recipient` in `state`.
std::vector<v1::StatusEvent> Matching(
    const std::vector<v1::StatusEvent>& history, const std::string& recipient,
    v1::DeliveryState state) {
  std::vector<v1::StatusEvent> out;
  for (const v1::StatusEvent& e : history) {
    if (e.recipient() == recipient && e.delivery_state() == state)
      out.push_back(e);
  }
  return out;
}

std::vector<v1::DeliveryState> States(
    const std::vector<v1::StatusEvent>& events) {
  std::vector<v1::DeliveryState> out;
  for (const v1::StatusEvent& e : events) out.push_back(e.delivery_state());
  return out;
}

// A store whose writes can be made to fail (as RocksDB's do while it
// closes, or on an I/O error); otherwise the memory store.
class FaultyStore : public storage::Store {
 public:
  FaultyStore() : base_(storage::NewMemoryStore()) {}
  void FailWrites(absl::Status status) {
    absl::MutexLock lock(&mu_);
    fail_ = std::move(status);
  }
  // While held, writes wait (neither applied nor answered) until released.
  void HoldWrites(bool hold) {
    std::vector<std::pair<storage::WriteBatch, WriteCallback>> release;
    {
      absl::MutexLock lock(&mu_);
      hold_ = hold;
      if (!hold) release.swap(held_);
    }
    for (auto& [batch, done] : release)
      base_->Write(std::move(batch), std::move(done));
  }
  // Whether `n` writes are held within 10 s.
  bool WaitForHeld(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return held_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
  }
  void Write(storage::WriteBatch batch, WriteCallback done) override {
    absl::Status fail;
    {
      absl::MutexLock lock(&mu_);
      if (hold_) {
        held_.emplace_back(std::move(batch), std::move(done));
        return;
      }
      fail = fail_;
    }
    if (fail.ok()) return base_->Write(std::move(batch), std::move(done));
    // Fail on the store's own thread, as a real failure would.
    base_->Write(
        storage::WriteBatch(),
        [fail, done = std::move(done)](
            absl::StatusOr<storage::WriteResult>) mutable { done(fail); });
  }
  absl::StatusOr<v1::Document> GetDocument(const std::string& id) override {
    return base_->GetDocument(id);
  }
  absl::StatusOr<std::optional<std::string>> LookupIdempotencyKey(
      const std::string& sender, const std::string& key) override {
    return base_->LookupIdempotencyKey(sender, key);
  }
  absl::StatusOr<std::vector<v1::StatusEvent>> ListDocumentEvents(
      const std::string& id, uint64_t after) override {
    return base_->ListDocumentEvents(id, after);
  }
  absl::StatusOr<std::vector<v1::StatusEvent>> ListSenderEvents(
      const std::string& sender, uint64_t after, size_t limit) override {
    return base_->ListSenderEvents(sender, after, limit);
  }
  absl::Status ScanQueues(
      const std::function<void(const storage::QueueEntry&)>& fn) override {
    return base_->ScanQueues(fn);
  }
  absl::Status ScanRecords(
      absl::string_view prefix,
      const std::function<void(const storage::Record&)>& fn) override {
    return base_->ScanRecords(prefix, fn);
  }
  absl::StatusOr<std::optional<std::string>> GetRecord(
      absl::string_view key) override {
    {
      absl::MutexLock lock(&mu_);
      if (!hidden_prefix_.empty() && absl::StartsWith(key, hidden_prefix_))
        return std::nullopt;
    }
    return base_->GetRecord(key);
  }
  // GetRecord finds no record whose key starts with `prefix` (as in a store
  // written before such records existed).
  void HideRecords(std::string prefix) {
    absl::MutexLock lock(&mu_);
    hidden_prefix_ = std::move(prefix);
  }
  absl::Status RotateKeys(const storage::EncryptionOptions& options) override {
    return base_->RotateKeys(options);
  }
  storage::EncryptionInfo Encryption() override { return base_->Encryption(); }
  absl::StatusOr<std::optional<std::string>> SealBeside(
      absl::string_view plaintext, absl::string_view context) override {
    return base_->SealBeside(plaintext, context);
  }
  absl::StatusOr<std::string> OpenBeside(std::string sealed,
                                         absl::string_view context) override {
    return base_->OpenBeside(std::move(sealed), context);
  }
  storage::AuditHead GetAuditHead() override { return base_->GetAuditHead(); }
  absl::StatusOr<std::optional<storage::AuditHead>> ReadAuditHeadRecord()
      override {
    return base_->ReadAuditHeadRecord();
  }
  absl::Status ScanAuditEntries(
      uint64_t first,
      const std::function<bool(uint64_t, absl::string_view)>& fn) override {
    return base_->ScanAuditEntries(first, fn);
  }
  absl::Status ScanAuditCheckpoints(
      uint64_t first,
      const std::function<bool(uint64_t, absl::string_view)>& fn) override {
    return base_->ScanAuditCheckpoints(first, fn);
  }
  absl::Status ScanAuditEntriesForDocument(
      absl::string_view document_id,
      const std::function<bool(uint64_t, absl::string_view)>& fn) override {
    return base_->ScanAuditEntriesForDocument(document_id, fn);
  }
  storage::StoreStats Stats() override { return base_->Stats(); }

 private:
  std::unique_ptr<storage::Store> base_;
  absl::Mutex mu_;
  absl::Status fail_ ABSL_GUARDED_BY(mu_);
  std::string hidden_prefix_ ABSL_GUARDED_BY(mu_);
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::pair<storage::WriteBatch, WriteCallback>> held_
      ABSL_GUARDED_BY(mu_);
};

// One broker: its own store, policy and exchange.
struct Broker {
  std::string name;
  ExchangeOptions options;
  std::unique_ptr<policy::ServedPolicy> policy;
  // Declared before the exchange, so destroyed after it.
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<Exchange> exchange;

  const std::string& id() const { return options.broker_id; }
  Exchange& ex() { return *exchange; }
};

// One federation link dialed by `from` to `to` (see the file comment).
// Thread-safe. After Stop (or destruction) nothing reaches either exchange.
class Wire {
 public:
  Wire(Broker& from, Broker& to) : s_(std::make_shared<State>()) {
    s_->from_broker = &from;
    s_->to_broker = &to;
    s_->from = from.exchange.get();
    s_->to = to.exchange.get();
    s_->from_name = from.name;
    s_->to_name = to.name;
  }
  ~Wire() { Stop(); }
  Wire(const Wire&) = delete;
  Wire& operator=(const Wire&) = delete;

  // Opens both directions: the return session first, so that events are
  // flowing by the time transfers are.
  absl::Status Open(uint32_t window = 64) {
    if (absl::Status s = OpenReturn(window); !s.ok()) return s;
    return OpenOutbound(window);
  }

  // from's outbox for `to` starts flowing on a new link.
  absl::Status OpenOutbound(uint32_t window = 64) {
    absl::StatusOr<std::unique_ptr<InboundLink>> inbound =
        s_->to->OpenInbound(s_->from_name);
    if (!inbound.ok()) return inbound.status();
    uint64_t gen;
    {
      absl::MutexLock lock(&s_->mu);
      if (s_->stopped) return absl::FailedPreconditionError("wire stopped");
      gen = ++s_->out_gen;
      s_->into_to = std::shared_ptr<InboundLink>(*std::move(inbound));
      s_->outbound.reset();  // the exchange closes the one it replaces
      s_->early_custody.clear();
    }
    std::shared_ptr<State> state = s_;
    absl::StatusOr<std::shared_ptr<PeerLinkSession>> session =
        s_->from->OpenOutbound(s_->to_name, window,
                               [state, gen](LinkItems items) {
                                 for (v1::Transfer& t : items.transfers)
                                   state->OnTransfer(gen, std::move(t));
                               });
    if (!session.ok()) return session.status();
    std::vector<v1::Custody> early;
    {
      absl::MutexLock lock(&s_->mu);
      if (s_->stopped || gen != s_->out_gen) return absl::OkStatus();
      s_->outbound = *session;
      early.swap(s_->early_custody);
      s_->active++;
    }
    // Custody that came back before OpenOutbound returned.
    for (v1::Custody& c : early) {
      uint64_t id = c.id();
      (*session)->Custody({std::move(c)});
      s_->custody_passed.Add(id);
    }
    s_->Leave();
    return absl::OkStatus();
  }

  // to's return queue for `from` starts flowing on a new link.
  absl::Status OpenReturn(uint32_t window = 64) {
    absl::StatusOr<std::unique_ptr<InboundLink>> inbound =
        s_->from->OpenInbound(s_->to_name);
    if (!inbound.ok()) return inbound.status();
    uint64_t gen;
    {
      absl::MutexLock lock(&s_->mu);
      if (s_->stopped) return absl::FailedPreconditionError("wire stopped");
      gen = ++s_->ret_gen;
      s_->into_from = std::shared_ptr<InboundLink>(*std::move(inbound));
      s_->ret.reset();
      s_->early_acks.clear();
    }
    std::shared_ptr<State> state = s_;
    absl::StatusOr<std::shared_ptr<PeerLinkSession>> session =
        s_->to->OpenReturn(s_->from_name, window,
                           [state, gen](LinkItems items) {
                             for (v1::ReturnedEvent& e : items.events)
                               state->OnEvent(gen, std::move(e));
                           });
    if (!session.ok()) return session.status();
    std::vector<uint64_t> early;
    {
      absl::MutexLock lock(&s_->mu);
      if (s_->stopped || gen != s_->ret_gen) return absl::OkStatus();
      s_->ret = *session;
      early.swap(s_->early_acks);
      s_->active++;
    }
    // Events stored before OpenReturn returned.
    for (uint64_t id : early) {
      (*session)->EventsStored({id});
      s_->acks.Add(id);
    }
    s_->Leave();
    return absl::OkStatus();
  }

  // The link breaks: what was in flight on it (and custody or acks still
  // on their way) is lost; the next Open* sends it again.
  void CloseOutbound() {
    std::shared_ptr<PeerLinkSession> session;
    {
      absl::MutexLock lock(&s_->mu);
      session = std::move(s_->outbound);
      ++s_->out_gen;
      s_->into_to.reset();
      s_->early_custody.clear();
    }
    if (session) session->Close();
  }
  void CloseReturn() {
    std::shared_ptr<PeerLinkSession> session;
    {
      absl::MutexLock lock(&s_->mu);
      session = std::move(s_->ret);
      ++s_->ret_gen;
      s_->into_from.reset();
      s_->early_acks.clear();
    }
    if (session) session->Close();
  }

  void Stop() {
    std::shared_ptr<PeerLinkSession> out, ret;
    {
      absl::MutexLock lock(&s_->mu);
      s_->stopped = true;
      s_->mu.Await(absl::Condition(
          +[](int* active) { return *active == 0; }, &s_->active));
      out = std::move(s_->outbound);
      ret = std::move(s_->ret);
      s_->into_to.reset();
      s_->into_from.reset();
      s_->held.clear();
      s_->held_custody.clear();
    }
    if (out) out->Close();
    if (ret) ret->Close();
  }

  bool Touches(const Broker* b) const {
    return s_->from_broker == b || s_->to_broker == b;
  }

  // ---- Knobs

  // Custody `to` produces is recorded but never reaches `from` (lost ack).
  void DropCustody(bool drop) {
    absl::MutexLock lock(&s_->mu);
    s_->drop_custody = drop;
  }
  // Custody is kept until ReleaseCustody (a slow response stream).
  void HoldCustody(bool hold) {
    absl::MutexLock lock(&s_->mu);
    s_->hold_custody = hold;
  }
  void ReleaseCustody() {
    std::vector<std::pair<uint64_t, v1::Custody>> held;
    {
      absl::MutexLock lock(&s_->mu);
      s_->hold_custody = false;
      held.swap(s_->held_custody);
    }
    for (auto& [gen, c] : held) s_->PassCustody(gen, std::move(c));
  }
  // Returned events are stored at `from` but the acknowledgement never
  // reaches `to` (lost event_acks).
  void DropEventAcks(bool drop) {
    absl::MutexLock lock(&s_->mu);
    s_->drop_event_acks = drop;
  }
  // Transfers are recorded but not handed to `to`; see TakeHeld/Deliver.
  void HoldTransfers(bool hold) {
    absl::MutexLock lock(&s_->mu);
    s_->hold_transfers = hold;
  }
  std::vector<v1::Transfer> TakeHeld() {
    absl::MutexLock lock(&s_->mu);
    std::vector<v1::Transfer> out(s_->held.begin(), s_->held.end());
    s_->held.clear();
    return out;
  }
  // Changes each transfer on its way to `to`.
  void SetTamper(std::function<void(v1::Transfer&)> tamper) {
    absl::MutexLock lock(&s_->mu);
    s_->tamper = std::move(tamper);
  }
  // Hands `t` to `to` as if `from` had sent it on the current link; its
  // custody goes back like any other.
  void Deliver(v1::Transfer t) {
    uint64_t gen;
    {
      absl::MutexLock lock(&s_->mu);
      gen = s_->out_gen;
    }
    s_->Hand(gen, std::move(t));
  }

  // ---- What crossed the wire, in order (shared with the callbacks)

  // Every transfer `from` emitted, as emitted.
  Collector<v1::Transfer> transfers() const { return s_->transfers; }
  // Every custody `to` produced.
  Collector<v1::Custody> custody() const { return s_->custody; }
  // Custody handed to from's session.
  Collector<uint64_t> custody_passed() const { return s_->custody_passed; }
  // Every event `to` returned, and from's verdict on each.
  Collector<v1::ReturnedEvent> events() const { return s_->events; }
  Collector<absl::Status> returned() const { return s_->returned; }
  // Event acknowledgements handed to to's return session.
  Collector<uint64_t> acks() const { return s_->acks; }

 private:
  struct State : std::enable_shared_from_this<State> {
    Broker* from_broker = nullptr;
    Broker* to_broker = nullptr;
    Exchange* from = nullptr;
    Exchange* to = nullptr;
    std::string from_name, to_name;

    absl::Mutex mu;
    bool stopped ABSL_GUARDED_BY(mu) = false;
    int active ABSL_GUARDED_BY(mu) = 0;  // calls into an exchange under way
    uint64_t out_gen ABSL_GUARDED_BY(mu) = 0;
    uint64_t ret_gen ABSL_GUARDED_BY(mu) = 0;
    std::shared_ptr<PeerLinkSession> outbound ABSL_GUARDED_BY(mu);  // at from
    std::shared_ptr<PeerLinkSession> ret ABSL_GUARDED_BY(mu);       // at to
    std::shared_ptr<InboundLink> into_to ABSL_GUARDED_BY(mu);
    std::shared_ptr<InboundLink> into_from ABSL_GUARDED_BY(mu);
    bool drop_custody ABSL_GUARDED_BY(mu) = false;
    bool hold_custody ABSL_GUARDED_BY(mu) = false;
    bool drop_event_acks ABSL_GUARDED_BY(mu) = false;
    bool hold_transfers ABSL_GUARDED_BY(mu) = false;
    std::function<void(v1::Transfer&)> tamper ABSL_GUARDED_BY(mu);
    std::deque<v1::Transfer> held ABSL_GUARDED_BY(mu);
    std::vector<std::pair<uint64_t, v1::Custody>> held_custody
        ABSL_GUARDED_BY(mu);
    // What came back before Open* had the session to hand it to (the first
    // items may reach a sink before OpenOutbound/OpenReturn returns).
    std::vector<v1::Custody> early_custody ABSL_GUARDED_BY(mu);
    std::vector<uint64_t> early_acks ABSL_GUARDED_BY(mu);

    Collector<v1::Transfer> transfers;
    Collector<v1::Custody> custody;
    Collector<uint64_t> custody_passed;
    Collector<v1::ReturnedEvent> events;
    Collector<absl::Status> returned;
    Collector<uint64_t> acks;

    void Leave() {
      absl::MutexLock lock(&mu);
      --active;
    }

    void OnTransfer(uint64_t gen, v1::Transfer t) {
      bool hold;
      {
        absl::MutexLock lock(&mu);
        hold = hold_transfers;
        if (hold) held.push_back(t);
      }
      transfers.Add(t);  // after `held`, so a waiter finds it there
      if (!hold) Hand(gen, std::move(t));
    }

    void Hand(uint64_t gen, v1::Transfer t) {
      std::shared_ptr<InboundLink> link;
      {
        absl::MutexLock lock(&mu);
        if (stopped || gen != out_gen || !into_to) return;
        if (tamper) tamper(t);
        link = into_to;
        ++active;
      }
      std::shared_ptr<State> self = Self();
      link->Accept(std::move(t), [self, gen](v1::Custody c) {
        self->OnCustody(gen, std::move(c));
      });
      Leave();
    }

    void OnCustody(uint64_t gen, v1::Custody c) {
      custody.Add(c);
      {
        absl::MutexLock lock(&mu);
        if (hold_custody) {
          held_custody.push_back({gen, std::move(c)});
          return;
        }
      }
      PassCustody(gen, std::move(c));
    }

    void PassCustody(uint64_t gen, v1::Custody c) {
      std::shared_ptr<PeerLinkSession> session;
      {
        absl::MutexLock lock(&mu);
        if (stopped || drop_custody || gen != out_gen) return;
        if (!outbound) {
          early_custody.push_back(std::move(c));
          return;
        }
        session = outbound;
        ++active;
      }
      uint64_t id = c.id();
      session->Custody({std::move(c)});
      Leave();
      custody_passed.Add(id);
    }

    void OnEvent(uint64_t gen, v1::ReturnedEvent e) {
      events.Add(e);
      std::shared_ptr<InboundLink> link;
      {
        absl::MutexLock lock(&mu);
        if (stopped || gen != ret_gen || !into_from) return;
        link = into_from;
        ++active;
      }
      uint64_t id = e.id();
      std::shared_ptr<State> self = Self();
      link->Returned(std::move(e), [self, gen, id](absl::Status s) {
        self->OnStored(gen, id, std::move(s));
      });
      Leave();
    }

    void OnStored(uint64_t gen, uint64_t id, absl::Status s) {
      returned.Add(s);
      if (!s.ok()) return;
      std::shared_ptr<PeerLinkSession> session;
      {
        absl::MutexLock lock(&mu);
        if (stopped || drop_event_acks || gen != ret_gen) return;
        if (!ret) {
          early_acks.push_back(id);
          return;
        }
        session = ret;
        ++active;
      }
      session->EventsStored({id});
      Leave();
      acks.Add(id);
    }

    // Callbacks keep the state alive.
    std::shared_ptr<State> Self() { return shared_from_this(); }
  };

  std::shared_ptr<State> s_;
};

struct Watcher {
  std::shared_ptr<WatchSession> session;
  Collector<v1::StatusEvent> events;
};

class Receiver {
 public:
  absl::Status Open(Exchange& exchange, const Principal& caller,
                    uint32_t max_in_flight = 100) {
    Collector<v1::Delivery> got = got_;
    absl::StatusOr<std::shared_ptr<ReceiveSession>> session =
        exchange.OpenReceive(
            caller, max_in_flight, [got](v1::ReceiveResponse response) {
              for (v1::Delivery& d : *response.mutable_deliveries())
                got.Add(std::move(d));
            });
    if (!session.ok()) return session.status();
    session_ = *std::move(session);
    return absl::OkStatus();
  }
  ~Receiver() {
    if (session_) session_->Close();
  }
  bool WaitForCount(size_t n) const { return got_.WaitForCount(n); }
  size_t CountAfterQuiet() const { return got_.CountAfter(); }
  std::vector<v1::Delivery> deliveries() const { return got_.items(); }
  void Ack(std::vector<std::string> ids) { session_->Ack(std::move(ids), {}); }
  void Close() {
    if (session_) session_->Close();
    session_.reset();
  }

 private:
  Collector<v1::Delivery> got_;
  std::shared_ptr<ReceiveSession> session_;
};

class FederationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h49_ = Org(kH49);
    h50_ = Org(kH50);
    g22_ = Org(kG22);
    g23_ = Org(kG23);
    t99_ = Org(kT99);
  }

  void TearDown() override {
    // Links first (nothing crosses between exchanges afterwards), then the
    // exchanges, then their stores.
    for (auto& w : wires_) w->Stop();
    for (auto& b : brokers_) b->exchange.reset();
  }

  // Starts broker `name`. Fails the test (and returns nullptr) on error.
  Broker* AddBroker(const std::string& name, std::vector<std::string> orgs,
                    std::vector<PeerRoute> peers,
                    const char* policy_text = kOpenPolicy,
                    std::function<void(ExchangeOptions&)> tweak = nullptr,
                    std::unique_ptr<storage::Store> store = nullptr) {
    auto b = std::make_unique<Broker>();
    b->name = name;
    policy::ServedPolicyOptions po;
    po.embedded_source = policy_text;
    po.reload_interval = absl::ZeroDuration();
    absl::StatusOr<std::unique_ptr<policy::ServedPolicy>> policy =
        policy::ServedPolicy::Open(po);
    EXPECT_OK(policy);
    if (!policy.ok()) return nullptr;
    b->policy = *std::move(policy);
    b->options.broker_id =
        absl::StrCat("spiffe://lienthong.local/broker/", name);
    b->options.policy = b->policy.get();
    b->options.local_orgs = std::move(orgs);
    for (const std::string& o : b->options.local_orgs)
      b->options.local_org_names.push_back(absl::StrCat("Cơ quan ", o));
    b->options.peers = std::move(peers);
    b->options.worker_threads = 2;
    if (tweak) tweak(b->options);
    b->store = store ? std::move(store) : storage::NewMemoryStore();
    absl::StatusOr<std::unique_ptr<Exchange>> ex =
        Exchange::Open(b->options, b->store.get(), &clock_);
    EXPECT_OK(ex);
    if (!ex.ok()) return nullptr;
    b->exchange = *std::move(ex);
    brokers_.push_back(std::move(b));
    return brokers_.back().get();
  }

  // a serves H49 and H50 and routes G22 and G23 to b; b serves them.
  void TwoBrokers(const char* b_policy = kOpenPolicy,
                  std::function<void(ExchangeOptions&)> b_tweak = nullptr,
                  std::unique_ptr<storage::Store> b_store = nullptr) {
    a_ = AddBroker("a", {kH49, kH50}, {{.name = "b", .orgs = {kG22, kG23}}});
    b_ = AddBroker("b", {kG22, kG23}, {{.name = "a"}}, b_policy,
                   std::move(b_tweak), std::move(b_store));
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
  }

  // a → c → b: a sends everything to c, c routes G22 to b and H49 to a.
  void ThreeBrokers(std::function<void(ExchangeOptions&)> b_tweak = nullptr,
                    std::unique_ptr<storage::Store> c_store = nullptr) {
    a_ = AddBroker("a", {kH49, kH50}, {{.name = "c", .is_default = true}});
    c_ = AddBroker("c", {kT99},
                   {{.name = "a", .provinces = {"H49", "H50"}},
                    {.name = "b", .orgs = {kG22}}},
                   kOpenPolicy, nullptr, std::move(c_store));
    b_ = AddBroker("b", {kG22}, {{.name = "c", .is_default = true}},
                   kOpenPolicy, std::move(b_tweak));
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
    ASSERT_NE(c_, nullptr);
  }

  // A link from `from` to `to`, open in both directions unless `open` is
  // false (then open it with Open/OpenOutbound/OpenReturn).
  Wire& Connect(Broker& from, Broker& to, bool open = true,
                uint32_t window = 64) {
    wires_.push_back(std::make_unique<Wire>(from, to));
    Wire& w = *wires_.back();
    if (open) {
      EXPECT_OK(w.Open(window));
    }
    return w;
  }

  // Stops the broker and starts it again over the same store (the memory
  // store outlives the exchange). Links touching it are stopped for good.
  void Restart(Broker& b) {
    for (auto& w : wires_) {
      if (w->Touches(&b)) w->Stop();
    }
    b.exchange.reset();
    ASSERT_OK_AND_ASSIGN(b.exchange,
                         Exchange::Open(b.options, b.store.get(), &clock_));
  }

  // ---- Blocking forms of the asynchronous calls

  absl::StatusOr<v1::SendResponse> Send(Broker& b, const Principal& caller,
                                        v1::Document doc) {
    AsyncResult<v1::SendResponse> result;
    b.ex().Send(caller, std::move(doc), result.Callback());
    return result.Wait();
  }
  std::string MustSend(Broker& b, const Principal& caller, v1::Document doc) {
    absl::StatusOr<v1::SendResponse> sent = Send(b, caller, std::move(doc));
    EXPECT_OK(sent);
    return sent.ok() ? sent->document_id() : "";
  }

  absl::StatusOr<v1::FetchResponse> Fetch(Broker& b, const Principal& caller,
                                          uint32_t wait_ms) {
    v1::FetchRequest request;
    request.set_wait_ms(wait_ms);
    AsyncResult<v1::FetchResponse> result;
    b.ex().Fetch(caller, request, result.Callback());
    return result.Wait();
  }
  absl::StatusOr<v1::AckResponse> Ack(Broker& b, const Principal& caller,
                                      std::vector<std::string> ids) {
    v1::AckRequest request;
    for (auto& id : ids) request.add_document_ids(std::move(id));
    AsyncResult<v1::AckResponse> result;
    b.ex().Ack(caller, request, result.Callback());
    return result.Wait();
  }
  int64_t InboxTotal(Broker& b, const Principal& caller) {
    AsyncResult<v1::ListInboxResponse> result;
    b.ex().ListInbox(caller, v1::ListInboxRequest(), result.Callback());
    absl::StatusOr<v1::ListInboxResponse> inbox = result.Wait();
    EXPECT_OK(inbox);
    return inbox.ok() ? static_cast<int64_t>(inbox->total()) : -1;
  }
  absl::StatusOr<v1::ReportStatusResponse> ReportStatus(
      Broker& b, const Principal& caller, const std::string& id,
      v1::BusinessStatus status, const std::string& reason = "") {
    v1::ReportStatusRequest request;
    request.set_document_id(id);
    request.set_status(status);
    request.set_reason(reason);
    AsyncResult<v1::ReportStatusResponse> result;
    b.ex().ReportStatus(caller, request, result.Callback());
    return result.Wait();
  }
  absl::StatusOr<v1::DocumentStatus> GetStatus(Broker& b,
                                               const Principal& caller,
                                               const std::string& id) {
    v1::GetDocumentStatusRequest request;
    request.set_document_id(id);
    AsyncResult<v1::DocumentStatus> result;
    b.ex().GetDocumentStatus(caller, request, result.Callback());
    return result.Wait();
  }
  // The document's history as `caller` sees it at `b` (empty on error).
  std::vector<v1::StatusEvent> History(Broker& b, const Principal& caller,
                                       const std::string& id) {
    absl::StatusOr<v1::DocumentStatus> status = GetStatus(b, caller, id);
    if (!status.ok()) return {};
    return {status->history().begin(), status->history().end()};
  }
  std::optional<v1::RecipientStatus> RecipientRow(Broker& b,
                                                  const Principal& caller,
                                                  const std::string& id,
                                                  const std::string& r) {
    absl::StatusOr<v1::DocumentStatus> status = GetStatus(b, caller, id);
    if (!status.ok()) return std::nullopt;
    for (const v1::RecipientStatus& row : status->recipients()) {
      if (row.recipient() == r) return row;
    }
    return std::nullopt;
  }
  v1::DeliveryState StateOf(Broker& b, const Principal& caller,
                            const std::string& id, const std::string& r) {
    std::optional<v1::RecipientStatus> row = RecipientRow(b, caller, id, r);
    return row ? row->delivery_state() : v1::DELIVERY_STATE_UNSPECIFIED;
  }
  bool EventuallyState(Broker& b, const Principal& caller,
                       const std::string& id, const std::string& r,
                       v1::DeliveryState state) {
    return Eventually([&] { return StateOf(b, caller, id, r) == state; });
  }
  // Waits until the history holds an event for `r` in `state`; returns the
  // first such event (or nullopt after the timeout).
  std::optional<v1::StatusEvent> EventuallyEvent(Broker& b,
                                                 const Principal& caller,
                                                 const std::string& id,
                                                 const std::string& r,
                                                 v1::DeliveryState state) {
    std::optional<v1::StatusEvent> found;
    Eventually([&] {
      std::vector<v1::StatusEvent> m =
          Matching(History(b, caller, id), r, state);
      if (m.empty()) return false;
      found = m.front();
      return true;
    });
    return found;
  }

  PeerQueueStats PeerStatsOf(Broker& b, const std::string& peer) {
    for (PeerQueueStats& s : b.ex().PeerStats()) {
      if (s.peer == peer) return s;
    }
    ADD_FAILURE() << b.name << " has no peer " << peer;
    return {};
  }
  bool EventuallyOutboxEmpty(Broker& b, const std::string& peer) {
    return Eventually([&] { return PeerStatsOf(b, peer).outbox == 0; });
  }
  bool EventuallyReturnsEmpty(Broker& b, const std::string& peer) {
    return Eventually([&] { return PeerStatsOf(b, peer).returns == 0; });
  }

  absl::Status Watch(Broker& b, const Principal& caller, Watcher& watcher) {
    AsyncResult<std::shared_ptr<WatchSession>> result;
    Collector<v1::StatusEvent> events = watcher.events;
    b.ex().Watch(
        caller, v1::WatchStatusRequest(),
        [events](absl::StatusOr<v1::StatusEvent> e) {
          if (e.ok()) events.Add(*std::move(e));
          return true;
        },
        result.Callback());
    absl::StatusOr<std::shared_ptr<WatchSession>> session = result.Wait();
    if (!session.ok()) return session.status();
    watcher.session = *std::move(session);
    return absl::OkStatus();
  }

  static absl::StatusOr<v1::Custody> AcceptSync(InboundLink& link,
                                                v1::Transfer t) {
    AsyncResult<v1::Custody> result;
    auto callback = result.Callback();
    link.Accept(std::move(t),
                [callback = std::move(callback)](v1::Custody c) mutable {
                  callback(std::move(c));
                });
    return result.Wait();
  }

  // The status `link` answers a returned event with.
  static absl::Status ReturnedSync(InboundLink& link, v1::ReturnedEvent e) {
    AsyncResult<bool> result;
    auto callback = result.Callback();
    link.Returned(std::move(e),
                  [callback = std::move(callback)](absl::Status s) mutable {
                    if (s.ok()) {
                      callback(true);
                    } else {
                      callback(std::move(s));
                    }
                  });
    return result.Wait().status();
  }

  FakeClock clock_;
  Principal h49_, h50_, g22_, g23_, t99_;
  Broker* a_ = nullptr;
  Broker* b_ = nullptr;
  Broker* c_ = nullptr;
  // Brokers before wires: wires are stopped (TearDown) and destroyed first.
  std::vector<std::unique_ptr<Broker>> brokers_;
  std::vector<std::unique_ptr<Wire>> wires_;
};

// ---- The common path --------------------------------------------------------

TEST_F(FederationTest, SendToPeerOrgIsForwardedDeliveredAndStatusesComeBack) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_);
  Watcher watcher;
  ASSERT_OK(Watch(*a_, h49_, watcher));

  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent,
                       Send(*a_, h49_, NewDocument(kH49, {kG22})));
  const std::string id = sent.document_id();

  // The transfer carries the document as a stored it, and its recipients.
  ASSERT_TRUE(ab.transfers().WaitForCount(1));
  v1::Transfer t = ab.transfers().items()[0];
  EXPECT_EQ(t.document().id(), id);
  EXPECT_THAT(t.recipients(), ElementsAre(kG22));
  EXPECT_THAT(TraceOf(t.document()), ElementsAre(kBrokerA));
  EXPECT_EQ(t.document().content_sha256(), sent.content_sha256());

  // Custody: FORWARDED at a, with b's decision.
  ASSERT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_FORWARDED));
  std::vector<v1::StatusEvent> history = History(*a_, h49_, id);
  ASSERT_THAT(history, SizeIs(2));
  EXPECT_EQ(history[0].delivery_state(), v1::DELIVERY_STATE_ACCEPTED);
  EXPECT_EQ(history[0].actor(), h49_.spiffe_id);
  EXPECT_EQ(history[0].policy().broker(), kBrokerA);
  const v1::StatusEvent& forwarded = history[1];
  EXPECT_EQ(forwarded.delivery_state(), v1::DELIVERY_STATE_FORWARDED);
  EXPECT_EQ(forwarded.actor(), kBrokerA);
  EXPECT_THAT(forwarded.reason(),
              HasSubstr(absl::StrCat("in the custody of broker ", kBrokerB)));
  EXPECT_EQ(forwarded.policy().broker(), kBrokerB);
  EXPECT_THAT(forwarded.policy().rules(), Contains("everyone-exchanges"));
  EXPECT_THAT(forwarded.policy().policy_version(), HasSubstr("sha256:"));
  EXPECT_TRUE(EventuallyOutboxEmpty(*a_, "b"));
  EXPECT_TRUE(PeerStatsOf(*a_, "b").outbound_link);
  EXPECT_TRUE(PeerStatsOf(*b_, "a").inbound_link);

  // b delivers it to G22 with both hops on the trace.
  Receiver g22;
  ASSERT_OK(g22.Open(b_->ex(), g22_));
  ASSERT_TRUE(g22.WaitForCount(1));
  const v1::Document got = g22.deliveries()[0].document();
  EXPECT_EQ(got.id(), id);
  EXPECT_EQ(got.sender(), kH49);
  EXPECT_THAT(got.recipients(), ElementsAre(kG22));
  EXPECT_EQ(got.body(), "Nội dung công văn gửi liên tỉnh");
  EXPECT_EQ(got.content_sha256(), sent.content_sha256());
  EXPECT_THAT(TraceOf(got), ElementsAre(kBrokerA, kBrokerB));

  // DELIVERED comes back to a.
  g22.Ack({id});
  ASSERT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DELIVERED));
  history = History(*a_, h49_, id);
  ASSERT_THAT(history, SizeIs(3));
  EXPECT_EQ(history[2].actor(), g22_.spiffe_id);
  EXPECT_EQ(history[2].sender(), kH49);
  EXPECT_LT(history[1].sequence(), history[2].sequence());
  ASSERT_TRUE(watcher.events.WaitForCount(3));
  EXPECT_THAT(
      States(watcher.events.items()),
      ElementsAre(v1::DELIVERY_STATE_ACCEPTED, v1::DELIVERY_STATE_FORWARDED,
                  v1::DELIVERY_STATE_DELIVERED));

  // So does a business status reported at b.
  ASSERT_OK(ReportStatus(*b_, g22_, id, v1::BUSINESS_STATUS_ACCEPTED));
  ASSERT_TRUE(Eventually([&] {
    std::optional<v1::RecipientStatus> row = RecipientRow(*a_, h49_, id, kG22);
    return row && row->business_status() == v1::BUSINESS_STATUS_ACCEPTED;
  }));
  EXPECT_EQ(StateOf(*a_, h49_, id, kG22), v1::DELIVERY_STATE_DELIVERED);
  history = History(*a_, h49_, id);
  ASSERT_THAT(history, SizeIs(4));
  EXPECT_EQ(history[3].business_status(), v1::BUSINESS_STATUS_ACCEPTED);
  EXPECT_EQ(history[3].actor(), g22_.spiffe_id);
  ASSERT_TRUE(watcher.events.WaitForCount(4));
  EXPECT_EQ(watcher.events.items()[3].business_status(),
            v1::BUSINESS_STATUS_ACCEPTED);

  EXPECT_TRUE(EventuallyReturnsEmpty(*b_, "a"));
  // b's view for its own org.
  EXPECT_EQ(StateOf(*b_, g22_, id, kG22), v1::DELIVERY_STATE_DELIVERED);
  EXPECT_EQ(b_->ex().Stats().delivered, 1u);
}

TEST_F(FederationTest, FetchAndAckAtTheFarEndReturnsDelivered) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_);
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  ASSERT_TRUE(ab.custody_passed().WaitForCount(1));
  EXPECT_EQ(InboxTotal(*b_, g22_), 1);

  ASSERT_OK_AND_ASSIGN(v1::FetchResponse fetched, Fetch(*b_, g22_, 1000));
  ASSERT_THAT(fetched.deliveries(), SizeIs(1));
  EXPECT_EQ(fetched.deliveries(0).document().id(), id);
  ASSERT_OK_AND_ASSIGN(v1::AckResponse acked, Ack(*b_, g22_, {id}));
  EXPECT_EQ(acked.acknowledged(), 1u);

  EXPECT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DELIVERED));
  EXPECT_EQ(InboxTotal(*b_, g22_), 0);
}

TEST_F(FederationTest, MiddleBrokerForwardsAndEventsTravelBackTwoHops) {
  ASSERT_NO_FATAL_FAILURE(ThreeBrokers());
  Wire& ac = Connect(*a_, *c_);
  Wire& cb = Connect(*c_, *b_);
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));

  ASSERT_TRUE(cb.transfers().WaitForCount(1));
  v1::Transfer t = cb.transfers().items()[0];
  EXPECT_EQ(t.document().id(), id);
  EXPECT_THAT(t.recipients(), ElementsAre(kG22));
  EXPECT_THAT(TraceOf(t.document()), ElementsAre(kBrokerA, kBrokerC));

  Receiver g22;
  ASSERT_OK(g22.Open(b_->ex(), g22_));
  ASSERT_TRUE(g22.WaitForCount(1));
  EXPECT_THAT(TraceOf(g22.deliveries()[0].document()),
              ElementsAre(kBrokerA, kBrokerC, kBrokerB));

  // Both custodies reach a: c's directly, b's returned by c.
  ASSERT_TRUE(Eventually([&] {
    return Matching(History(*a_, h49_, id), kG22, v1::DELIVERY_STATE_FORWARDED)
               .size() == 2;
  }));
  std::vector<v1::StatusEvent> fwd =
      Matching(History(*a_, h49_, id), kG22, v1::DELIVERY_STATE_FORWARDED);
  std::vector<std::string> by;
  for (const v1::StatusEvent& e : fwd) by.push_back(e.actor());
  EXPECT_THAT(by, ::testing::UnorderedElementsAre(kBrokerA, kBrokerC));
  for (const v1::StatusEvent& e : fwd) {
    if (e.actor() == kBrokerA) {
      EXPECT_THAT(e.reason(), HasSubstr(kBrokerC));
      EXPECT_EQ(e.policy().broker(), kBrokerC);
    } else {
      EXPECT_THAT(e.reason(), HasSubstr(kBrokerB));
      EXPECT_EQ(e.policy().broker(), kBrokerB);
    }
  }

  g22.Ack({id});
  ASSERT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DELIVERED));
  ASSERT_OK(ReportStatus(*b_, g22_, id, v1::BUSINESS_STATUS_COMPLETED));
  EXPECT_TRUE(Eventually([&] {
    std::optional<v1::RecipientStatus> row = RecipientRow(*a_, h49_, id, kG22);
    return row && row->business_status() == v1::BUSINESS_STATUS_COMPLETED;
  }));
  std::vector<v1::StatusEvent> history = History(*a_, h49_, id);
  EXPECT_THAT(Matching(history, kG22, v1::DELIVERY_STATE_DELIVERED), SizeIs(1));

  EXPECT_TRUE(EventuallyOutboxEmpty(*a_, "c"));
  EXPECT_TRUE(EventuallyOutboxEmpty(*c_, "b"));
  EXPECT_TRUE(EventuallyReturnsEmpty(*c_, "a"));
  EXPECT_TRUE(EventuallyReturnsEmpty(*b_, "c"));
  // Every returned event was acknowledged hop by hop: to a, b's FORWARDED
  // (recorded at c), DELIVERED and COMPLETED; to c, DELIVERED and COMPLETED.
  EXPECT_TRUE(ac.acks().WaitForCount(3));
  EXPECT_TRUE(cb.acks().WaitForCount(2));
}

// One document reaching a broker by two paths: a splits its recipients
// between b (G22) and c (everything else), and both routes meet at d. Each
// copy's statuses go back the way that copy came, also after the second
// copy arrived.
TEST_F(FederationTest, CopiesMeetingByTwoPathsReturnEventsTheirOwnWay) {
  a_ = AddBroker(
      "a", {kH49},
      {{.name = "b", .orgs = {kG22}}, {.name = "c", .is_default = true}});
  b_ = AddBroker("b", {},
                 {{.name = "d", .orgs = {kG22, kG23}},
                  {.name = "a", .provinces = {"H49"}}});
  c_ = AddBroker("c", {kT99},
                 {{.name = "d", .orgs = {kG22, kG23}},
                  {.name = "a", .provinces = {"H49"}}});
  Broker* d = AddBroker("d", {kG22, kG23}, {{.name = "b"}, {.name = "c"}});
  ASSERT_NE(a_, nullptr);
  ASSERT_NE(b_, nullptr);
  ASSERT_NE(c_, nullptr);
  ASSERT_NE(d, nullptr);
  Connect(*a_, *b_);
  Connect(*b_, *d);
  // The copy through c comes second.
  Wire& ac = Connect(*a_, *c_, /*open=*/false);
  Wire& cd = Connect(*c_, *d, /*open=*/false);
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22, kG23}));
  Receiver g22, g23;
  ASSERT_OK(g22.Open(d->ex(), g22_));
  ASSERT_TRUE(g22.WaitForCount(1));
  ASSERT_OK(ac.Open(64));
  ASSERT_OK(cd.Open(64));
  ASSERT_OK(g23.Open(d->ex(), g23_));
  ASSERT_TRUE(g23.WaitForCount(1));
  g22.Ack({id});
  g23.Ack({id});
  ASSERT_OK(ReportStatus(*d, g22_, id, v1::BUSINESS_STATUS_COMPLETED));
  ASSERT_OK(ReportStatus(*d, g23_, id, v1::BUSINESS_STATUS_ACCEPTED));
  for (const auto& [r, status] :
       {std::pair{kG22, v1::BUSINESS_STATUS_COMPLETED},
        std::pair{kG23, v1::BUSINESS_STATUS_ACCEPTED}}) {
    SCOPED_TRACE(r);
    EXPECT_TRUE(
        EventuallyState(*a_, h49_, id, r, v1::DELIVERY_STATE_DELIVERED));
    EXPECT_TRUE(Eventually([&, r = r, status = status] {
      std::optional<v1::RecipientStatus> row = RecipientRow(*a_, h49_, id, r);
      return row && row->business_status() == status;
    }));
  }
  EXPECT_TRUE(EventuallyReturnsEmpty(*d, "b"));
  EXPECT_TRUE(EventuallyReturnsEmpty(*d, "c"));
  EXPECT_TRUE(EventuallyReturnsEmpty(*b_, "a"));
  EXPECT_TRUE(EventuallyReturnsEmpty(*c_, "a"));
}

// ---- Lost acknowledgements --------------------------------------------------

// A relay broker sends returning events on with the route it recorded when
// it took the document; one that has no such record (a document it took
// before route records existed) reads the document instead.
TEST_F(FederationTest, MiddleBrokerReturnsEventsByItsRouteRecordOrTheDocument) {
  for (bool hidden : {false, true}) {
    SCOPED_TRACE(hidden ? "without route records" : "with route records");
    auto store = std::make_unique<FaultyStore>();
    if (hidden) store->HideRecords("route/");
    ASSERT_NO_FATAL_FAILURE(ThreeBrokers(nullptr, std::move(store)));
    Connect(*a_, *c_);
    Connect(*c_, *b_);
    std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
    const std::string key = absl::StrCat("route/", id, "/", kG22);
    ASSERT_OK_AND_ASSIGN(std::optional<std::string> route,
                         c_->store->GetRecord(key));
    if (hidden) {
      EXPECT_EQ(route, std::nullopt);
    } else {
      ASSERT_TRUE(Eventually([&] {
        absl::StatusOr<std::optional<std::string>> r =
            c_->store->GetRecord(key);
        return r.ok() && r->has_value();
      }));
      ASSERT_OK_AND_ASSIGN(route, c_->store->GetRecord(key));
      EXPECT_EQ(route, absl::StrCat("a\n", kH49));
    }
    Receiver g22;
    ASSERT_OK(g22.Open(b_->ex(), g22_));
    ASSERT_TRUE(g22.WaitForCount(1));
    g22.Ack({id});
    EXPECT_TRUE(
        EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DELIVERED));
    EXPECT_TRUE(EventuallyReturnsEmpty(*c_, "a"));
    wires_.clear();
    brokers_.clear();
  }
}

TEST_F(FederationTest, TransferResentAfterLostCustodyIsStoredOnce) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  ab.DropCustody(true);
  ASSERT_OK(ab.Open());
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));

  // b took custody, but a never heard of it.
  ASSERT_TRUE(ab.custody().WaitForCount(1));
  EXPECT_FALSE(ab.custody().items()[0].has_error());
  EXPECT_EQ(b_->ex().Stats().accepted, 1u);
  PeerQueueStats st = PeerStatsOf(*a_, "b");
  EXPECT_EQ(st.outbox, 1u);
  EXPECT_EQ(st.outbox_in_flight, 1u);
  EXPECT_EQ(StateOf(*a_, h49_, id, kG22), v1::DELIVERY_STATE_ACCEPTED);

  // The link breaks and comes back: a sends the transfer again.
  ab.CloseOutbound();
  ab.DropCustody(false);
  ASSERT_OK(ab.OpenOutbound());
  ASSERT_TRUE(ab.transfers().WaitForCount(2));
  EXPECT_EQ(ab.transfers().items()[1].id(), ab.transfers().items()[0].id());
  EXPECT_EQ(ab.transfers().items()[1].document().id(), id);
  ASSERT_TRUE(ab.custody_passed().WaitForCount(1));
  EXPECT_FALSE(ab.custody().items()[1].has_error());
  ASSERT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_FORWARDED));
  EXPECT_TRUE(EventuallyOutboxEmpty(*a_, "b"));

  // Stored once at b: one copy, delivered once.
  EXPECT_EQ(b_->ex().Stats().accepted, 1u);
  EXPECT_EQ(b_->ex().Stats().queued, 1u);
  EXPECT_EQ(InboxTotal(*b_, g22_), 1);
  Receiver g22;
  ASSERT_OK(g22.Open(b_->ex(), g22_));
  ASSERT_TRUE(g22.WaitForCount(1));
  EXPECT_EQ(g22.CountAfterQuiet(), 1u);
  g22.Ack({id});
  ASSERT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DELIVERED));
  std::vector<v1::StatusEvent> history = History(*a_, h49_, id);
  EXPECT_THAT(Matching(history, kG22, v1::DELIVERY_STATE_FORWARDED), SizeIs(1));
  EXPECT_THAT(Matching(history, kG22, v1::DELIVERY_STATE_DELIVERED), SizeIs(1));
  EXPECT_EQ(InboxTotal(*b_, g22_), 0);
}

// The FORWARDED event should carry the far end's policy decision however
// many times the transfer had to be sent (what the first custody said is
// lost with it).
TEST_F(FederationTest, ForwardedAfterLostCustodyStillCarriesFarEndDecision) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  ab.DropCustody(true);
  ASSERT_OK(ab.Open());
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  ASSERT_TRUE(ab.custody().WaitForCount(1));
  EXPECT_THAT(ab.custody().items()[0].copies(), SizeIs(1));
  ab.CloseOutbound();
  ab.DropCustody(false);
  ASSERT_OK(ab.OpenOutbound());
  std::optional<v1::StatusEvent> fwd =
      EventuallyEvent(*a_, h49_, id, kG22, v1::DELIVERY_STATE_FORWARDED);
  ASSERT_TRUE(fwd.has_value());
  EXPECT_THAT(ab.custody().items()[1].copies(), SizeIs(1))
      << "the second custody of the same transfer names no permitted copy";
  EXPECT_EQ(fwd->policy().broker(), kBrokerB) << fwd->DebugString();
}

TEST_F(FederationTest, ReturnedEventResentAfterLostAckIsStoredOnce) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  ab.DropEventAcks(true);
  ASSERT_OK(ab.Open());
  Watcher watcher;
  ASSERT_OK(Watch(*a_, h49_, watcher));
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  Receiver g22;
  ASSERT_OK(g22.Open(b_->ex(), g22_));
  ASSERT_TRUE(g22.WaitForCount(1));
  g22.Ack({id});

  ASSERT_TRUE(ab.returned().WaitForCount(1));
  EXPECT_OK(ab.returned().items()[0]);
  ASSERT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DELIVERED));
  EXPECT_EQ(PeerStatsOf(*b_, "a").returns, 1u);  // never acknowledged

  // The link breaks and comes back: b returns the event again.
  ab.CloseReturn();
  ab.DropEventAcks(false);
  ASSERT_OK(ab.OpenReturn());
  ASSERT_TRUE(ab.events().WaitForCount(2));
  EXPECT_EQ(ab.events().items()[1].id(), ab.events().items()[0].id());
  ASSERT_TRUE(ab.returned().WaitForCount(2));
  EXPECT_OK(ab.returned().items()[1]);
  ASSERT_TRUE(ab.acks().WaitForCount(1));
  EXPECT_TRUE(EventuallyReturnsEmpty(*b_, "a"));

  // Stored (and published) once at a.
  absl::SleepFor(absl::Milliseconds(200));
  std::vector<v1::StatusEvent> history = History(*a_, h49_, id);
  EXPECT_THAT(Matching(history, kG22, v1::DELIVERY_STATE_DELIVERED), SizeIs(1));
  EXPECT_THAT(history, SizeIs(3));
  std::vector<v1::StatusEvent> seen = watcher.events.items();
  EXPECT_THAT(Matching(seen, kG22, v1::DELIVERY_STATE_DELIVERED), SizeIs(1));
}

TEST_F(FederationTest, LocalAndRemoteRecipientsOfOneDocument) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_);
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kH50, kG22, kG23}));

  // One transfer carries both of b's copies; H50's stays here.
  ASSERT_TRUE(ab.transfers().WaitForCount(1));
  EXPECT_THAT(ab.transfers().items()[0].recipients(), ElementsAre(kG22, kG23));
  EXPECT_EQ(ab.transfers().CountAfter(absl::Milliseconds(50)), 1u);
  ASSERT_TRUE(ab.custody().WaitForCount(1));
  EXPECT_THAT(ab.custody().items()[0].copies(), SizeIs(2));

  Receiver h50, g22, g23;
  ASSERT_OK(h50.Open(a_->ex(), h50_));
  ASSERT_OK(g22.Open(b_->ex(), g22_));
  ASSERT_OK(g23.Open(b_->ex(), g23_));
  ASSERT_TRUE(h50.WaitForCount(1));
  ASSERT_TRUE(g22.WaitForCount(1));
  ASSERT_TRUE(g23.WaitForCount(1));
  EXPECT_THAT(TraceOf(h50.deliveries()[0].document()), ElementsAre(kBrokerA));
  EXPECT_EQ(InboxTotal(*a_, g22_), 0) << "a keeps no copy for b's orgs";
  EXPECT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_FORWARDED));
  EXPECT_TRUE(
      EventuallyState(*a_, h49_, id, kG23, v1::DELIVERY_STATE_FORWARDED));
  EXPECT_EQ(StateOf(*a_, h49_, id, kH50), v1::DELIVERY_STATE_ACCEPTED);

  h50.Ack({id});
  g22.Ack({id});
  g23.Ack({id});
  for (const char* r : {kH50, kG22, kG23}) {
    EXPECT_TRUE(EventuallyState(*a_, h49_, id, r, v1::DELIVERY_STATE_DELIVERED))
        << r;
  }
}

// A copy the far end delivered before its custody reached the sender (the
// custody was lost and the transfer sent again on the next link, while the
// DELIVERED event came back first) must stay DELIVERED at the sender.
TEST_F(FederationTest, LateCustodyDoesNotTurnDeliveredBackIntoForwarded) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  ab.DropCustody(true);
  ASSERT_OK(ab.Open());
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  ASSERT_TRUE(ab.custody().WaitForCount(1));
  Receiver g22;
  ASSERT_OK(g22.Open(b_->ex(), g22_));
  ASSERT_TRUE(g22.WaitForCount(1));
  g22.Ack({id});
  ASSERT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DELIVERED));

  // The next link: a sends the transfer again, b acknowledges custody.
  ab.CloseOutbound();
  ab.DropCustody(false);
  ASSERT_OK(ab.OpenOutbound());
  ASSERT_TRUE(ab.custody_passed().WaitForCount(1));
  ASSERT_TRUE(EventuallyOutboxEmpty(*a_, "b"));
  absl::SleepFor(absl::Milliseconds(100));
  std::vector<v1::StatusEvent> history = History(*a_, h49_, id);
  EXPECT_EQ(StateOf(*a_, h49_, id, kG22), v1::DELIVERY_STATE_DELIVERED)
      << "states in order: " << ::testing::PrintToString(States(history));
  EXPECT_EQ(g22.CountAfterQuiet(), 1u);
}

TEST_F(FederationTest, PartialFarEndDenialForwardsOnlyThePermittedCopy) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers(kNoProposalsPolicy));
  Wire& ab = Connect(*a_, *b_);
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22, kG23}));
  ASSERT_TRUE(ab.custody().WaitForCount(1));
  v1::Custody c = ab.custody().items()[0];
  ASSERT_THAT(c.copies(), SizeIs(1));
  EXPECT_EQ(c.copies(0).recipient(), kG22);

  std::optional<v1::StatusEvent> denied =
      EventuallyEvent(*a_, h49_, id, kG23, v1::DELIVERY_STATE_DENIED);
  ASSERT_TRUE(denied.has_value());
  EXPECT_THAT(denied->reason(),
              AllOf(HasSubstr("denied at spiffe://lienthong.local/broker/b"),
                    HasSubstr("g23-takes-nothing-from-afar")));
  EXPECT_EQ(denied->policy().broker(), kBrokerB);
  ASSERT_TRUE(EventuallyOutboxEmpty(*a_, "b"));
  ASSERT_TRUE(EventuallyReturnsEmpty(*b_, "a"));

  std::vector<v1::StatusEvent> history = History(*a_, h49_, id);
  std::vector<v1::StatusEvent> g22_fwd =
      Matching(history, kG22, v1::DELIVERY_STATE_FORWARDED);
  ASSERT_THAT(g22_fwd, SizeIs(1));
  EXPECT_EQ(g22_fwd[0].policy().broker(), kBrokerB);
  EXPECT_EQ(StateOf(*a_, h49_, id, kG23), v1::DELIVERY_STATE_DENIED);
  EXPECT_EQ(InboxTotal(*b_, g22_), 1);
  EXPECT_EQ(InboxTotal(*b_, g23_), 0);
  EXPECT_THAT(Matching(history, kG23, v1::DELIVERY_STATE_FORWARDED), IsEmpty())
      << "a records FORWARDED for the copy b denied";
}

// A transfer the far end could not store for a passing reason (its store is
// closing, an I/O error) is not in its custody: the sender must keep it and
// send it again, not record it as refused for good.
TEST_F(FederationTest, TransientStoreFailureAtTheFarEndIsRetriedNotDenied) {
  auto store = std::make_unique<FaultyStore>();
  FaultyStore* b_store = store.get();
  ASSERT_NO_FATAL_FAILURE(TwoBrokers(kOpenPolicy, nullptr, std::move(store)));
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  b_store->FailWrites(absl::UnavailableError("store is closing"));
  ASSERT_OK(ab.Open());
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  ASSERT_TRUE(ab.custody().WaitForCount(1));
  v1::Custody c = ab.custody().items()[0];
  EXPECT_TRUE(c.has_error());
  EXPECT_EQ(c.error().code(), static_cast<int>(absl::StatusCode::kUnavailable));
  ASSERT_TRUE(ab.custody_passed().WaitForCount(1));
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_THAT(Matching(History(*a_, h49_, id), kG22, v1::DELIVERY_STATE_DENIED),
              IsEmpty())
      << "a recorded a transient failure at b as a refusal for good";
  EXPECT_EQ(PeerStatsOf(*a_, "b").outbox, 1u)
      << "a dropped a transfer b never took";

  // b's store recovers; the next link carries the document.
  b_store->FailWrites(absl::OkStatus());
  ab.CloseOutbound();
  ASSERT_OK(ab.OpenOutbound());
  EXPECT_TRUE(
      Eventually([&] { return InboxTotal(*b_, g22_) == 1; }, absl::Seconds(2)))
      << "the document never reached b";
  EXPECT_EQ(StateOf(*a_, h49_, id, kG22), v1::DELIVERY_STATE_FORWARDED);
}

TEST_F(FederationTest, ResendAfterFarEndRestartIsStoredOnce) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  ab.DropCustody(true);
  ASSERT_OK(ab.Open());
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  ASSERT_TRUE(ab.custody().WaitForCount(1));

  ASSERT_NO_FATAL_FAILURE(Restart(*b_));
  Wire& again = Connect(*a_, *b_);
  ASSERT_TRUE(again.custody_passed().WaitForCount(1));
  ASSERT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_FORWARDED));
  EXPECT_EQ(b_->ex().Stats().queued, 1u);
  EXPECT_EQ(InboxTotal(*b_, g22_), 1);
  Receiver g22;
  ASSERT_OK(g22.Open(b_->ex(), g22_));
  ASSERT_TRUE(g22.WaitForCount(1));
  EXPECT_EQ(g22.CountAfterQuiet(), 1u);
}

// ---- Refusals at the far end ------------------------------------------------

TEST_F(FederationTest, FarEndPolicyDenialComesBackAsDeniedNamingTheFarBroker) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers(kNoProposalsPolicy));
  Connect(*a_, *b_);
  v1::Document doc = NewDocument(kH49, {kG22});
  doc.mutable_metadata()->set_document_type("Tờ trình");
  // a's own policy permits it.
  std::string id = MustSend(*a_, h49_, doc);
  ASSERT_FALSE(id.empty());

  std::optional<v1::StatusEvent> denied =
      EventuallyEvent(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DENIED);
  ASSERT_TRUE(denied.has_value());
  EXPECT_THAT(denied->reason(),
              HasSubstr("denied at spiffe://lienthong.local/broker/b"));
  EXPECT_THAT(denied->reason(), HasSubstr("b-refuses-proposals"));
  EXPECT_EQ(denied->policy().broker(), kBrokerB);
  EXPECT_THAT(denied->policy().rules(), Contains("b-refuses-proposals"));
  EXPECT_EQ(denied->actor(), kBrokerB);
  EXPECT_EQ(denied->sender(), kH49);

  // Nothing waits at b.
  EXPECT_TRUE(EventuallyOutboxEmpty(*a_, "b"));
  EXPECT_EQ(InboxTotal(*b_, g22_), 0);
  EXPECT_EQ(b_->ex().Stats().queued, 0u);
}

// A copy waiting in an outbox written by a broker from before next-hop
// records (simulated by erasing its record) gets its record back when the
// broker starts, so the far end's DENIED for it is taken, not refused.
TEST_F(FederationTest, OutboxEntriesFromBeforeNextHopRecordsGetThemAtStart) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers(kNoProposalsPolicy));
  v1::Document doc = NewDocument(kH49, {kG22});
  doc.mutable_metadata()->set_document_type("Tờ trình");
  std::string id = MustSend(*a_, h49_, doc);  // no link yet: it waits
  storage::WriteBatch erase;
  erase.records.push_back({absl::StrCat("next/", id, "/", kG22), ""});
  ASSERT_OK(a_->store->WriteSync(std::move(erase)).status());
  ASSERT_OK_AND_ASSIGN(
      std::optional<std::string> gone,
      a_->store->GetRecord(absl::StrCat("next/", id, "/", kG22)));
  ASSERT_FALSE(gone.has_value());
  Restart(*a_);
  Connect(*a_, *b_);
  std::optional<v1::StatusEvent> denied =
      EventuallyEvent(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DENIED);
  ASSERT_TRUE(denied.has_value());
  EXPECT_THAT(denied->reason(), HasSubstr("b-refuses-proposals"));
}

// A copy the far end denied must not be reported as FORWARDED, and its final
// state at the sender must be DENIED whichever of the custody and the
// returned DENIED event arrives first.
TEST_F(FederationTest, FarEndDenialIsNotReportedAsForwarded) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers(kNoProposalsPolicy));
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  ab.HoldCustody(true);  // the DENIED event overtakes the custody
  ASSERT_OK(ab.Open());
  v1::Document doc = NewDocument(kH49, {kG22});
  doc.mutable_metadata()->set_document_type("Tờ trình");
  std::string id = MustSend(*a_, h49_, doc);

  ASSERT_TRUE(EventuallyEvent(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DENIED)
                  .has_value());
  ASSERT_TRUE(ab.custody().WaitForCount(1));
  v1::Custody c = ab.custody().items()[0];
  EXPECT_FALSE(c.has_error());
  EXPECT_THAT(c.copies(), IsEmpty()) << "b permitted no copy";
  ab.ReleaseCustody();
  ASSERT_TRUE(EventuallyOutboxEmpty(*a_, "b"));
  absl::SleepFor(absl::Milliseconds(100));

  std::vector<v1::StatusEvent> history = History(*a_, h49_, id);
  EXPECT_THAT(Matching(history, kG22, v1::DELIVERY_STATE_FORWARDED), IsEmpty())
      << "a records FORWARDED for a copy b denied";
  EXPECT_EQ(StateOf(*a_, h49_, id, kG22), v1::DELIVERY_STATE_DENIED)
      << "states in order: " << ::testing::PrintToString(States(history));
}

TEST_F(FederationTest, TransferThatAlreadyPassedTheReceiverIsDeniedAsLoop) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  ab.HoldTransfers(true);
  ASSERT_OK(ab.Open());
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  ASSERT_TRUE(ab.transfers().WaitForCount(1));
  std::vector<v1::Transfer> held = ab.TakeHeld();
  ASSERT_THAT(held, SizeIs(1));

  // The trace claims b handled it before a: b → a → b would loop.
  v1::Transfer t = held[0];
  v1::Hop a_hop = t.document().trace(0);
  t.mutable_document()->clear_trace();
  v1::Hop* b_hop = t.mutable_document()->add_trace();
  b_hop->set_broker(kBrokerB);
  *b_hop->mutable_at() = a_hop.at();
  *t.mutable_document()->add_trace() = a_hop;
  ab.Deliver(t);

  ASSERT_TRUE(ab.custody().WaitForCount(1));
  EXPECT_FALSE(ab.custody().items()[0].has_error());
  EXPECT_THAT(ab.custody().items()[0].copies(), IsEmpty());
  std::optional<v1::StatusEvent> denied =
      EventuallyEvent(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DENIED);
  ASSERT_TRUE(denied.has_value());
  EXPECT_THAT(denied->reason(),
              AllOf(HasSubstr("routing loop"), HasSubstr(kBrokerB)));
  EXPECT_EQ(denied->actor(), kBrokerB);
  EXPECT_EQ(InboxTotal(*b_, g22_), 0);
}

TEST_F(FederationTest, TransferAtTheHopLimitIsDenied) {
  ASSERT_NO_FATAL_FAILURE(
      TwoBrokers(kOpenPolicy, [](ExchangeOptions& o) { o.max_hops = 1; }));
  Connect(*a_, *b_);
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  std::optional<v1::StatusEvent> denied =
      EventuallyEvent(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DENIED);
  ASSERT_TRUE(denied.has_value());
  EXPECT_THAT(denied->reason(),
              AllOf(HasSubstr("hop limit"), HasSubstr(kBrokerB),
                    HasSubstr("allows is 1")));
  EXPECT_EQ(InboxTotal(*b_, g22_), 0);
}

TEST_F(FederationTest, HopLimitCountsEveryBrokerOnTheTrace) {
  // b allows two brokers on the trace: a → b would pass, a → c → b does not.
  ASSERT_NO_FATAL_FAILURE(
      ThreeBrokers([](ExchangeOptions& o) { o.max_hops = 2; }));
  Connect(*a_, *c_);
  Connect(*c_, *b_);
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  std::optional<v1::StatusEvent> denied =
      EventuallyEvent(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DENIED);
  ASSERT_TRUE(denied.has_value());
  EXPECT_THAT(denied->reason(),
              AllOf(HasSubstr("hop limit"), HasSubstr("passed 2 brokers"),
                    HasSubstr(kBrokerB)));
  EXPECT_EQ(InboxTotal(*b_, g22_), 0);
}

TEST_F(FederationTest, TamperedTransferIsRefusedAndNothingIsStored) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  ab.SetTamper([](v1::Transfer& t) {
    v1::Document* d = t.mutable_document();
    if (d->attachments_size() > 0) {
      d->mutable_attachments(0)->set_content("%PDF-1.7 đã sửa");
    } else {
      d->set_body("Nội dung đã bị sửa trên đường truyền");
    }
  });
  ASSERT_OK(ab.Open());

  std::string body_id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  ASSERT_TRUE(ab.custody().WaitForCount(1));
  v1::Custody c = ab.custody().items()[0];
  ASSERT_TRUE(c.has_error());
  EXPECT_EQ(c.error().code(), static_cast<int>(absl::StatusCode::kDataLoss));
  EXPECT_THAT(c.error().message(),
              AllOf(HasSubstr(kBrokerB), HasSubstr("content_sha256")));
  EXPECT_THAT(c.copies(), IsEmpty());

  v1::Document with_attachment = NewDocument(kH49, {kG22});
  v1::Attachment* att = with_attachment.add_attachments();
  att->set_name("phu-luc.pdf");
  att->set_content_type("application/pdf");
  att->set_content("%PDF-1.7 phụ lục");
  std::string att_id = MustSend(*a_, h49_, with_attachment);
  ASSERT_TRUE(ab.custody().WaitForCount(2));
  c = ab.custody().items()[1];
  ASSERT_TRUE(c.has_error());
  EXPECT_EQ(c.error().code(), static_cast<int>(absl::StatusCode::kDataLoss));
  EXPECT_THAT(c.error().message(), HasSubstr("phu-luc.pdf"));

  for (const std::string& id : {body_id, att_id}) {
    SCOPED_TRACE(id);
    std::optional<v1::StatusEvent> denied =
        EventuallyEvent(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DENIED);
    ASSERT_TRUE(denied.has_value());
    EXPECT_THAT(denied->reason(),
                HasSubstr(absl::StrCat("refused by broker ", kBrokerB)));
    EXPECT_EQ(denied->actor(), kBrokerA);
    EXPECT_THAT(GetStatus(*b_, g22_, id),
                StatusIs(absl::StatusCode::kNotFound));
  }
  EXPECT_TRUE(EventuallyOutboxEmpty(*a_, "b"));
  EXPECT_EQ(b_->ex().Stats().accepted, 0u);
  EXPECT_EQ(b_->ex().Stats().queued, 0u);
  EXPECT_EQ(InboxTotal(*b_, g22_), 0);
}

TEST_F(FederationTest, TransferNotFromTheLastBrokerOnItsTraceIsRefused) {
  a_ = AddBroker("a", {kH49}, {{.name = "b", .orgs = {kG22}}});
  b_ = AddBroker("b", {kG22}, {{.name = "a"}, {.name = "c"}});
  ASSERT_NE(a_, nullptr);
  ASSERT_NE(b_, nullptr);
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  ab.HoldTransfers(true);
  ASSERT_OK(ab.Open());
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  ASSERT_TRUE(ab.transfers().WaitForCount(1));
  v1::Transfer t = ab.TakeHeld().at(0);

  // c (a peer of b) hands over a transfer whose trace ends with a.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<InboundLink> from_c,
                       b_->ex().OpenInbound("c"));
  ASSERT_OK_AND_ASSIGN(v1::Custody c, AcceptSync(*from_c, t));
  ASSERT_TRUE(c.has_error());
  EXPECT_EQ(c.error().code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.error().message(),
              HasSubstr("must end with the sending broker "
                        "spiffe://lienthong.local/broker/c"));
  EXPECT_EQ(c.id(), t.id());

  // Other malformed transfers from a.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<InboundLink> from_a,
                       b_->ex().OpenInbound("a"));
  v1::Transfer no_trace = t;
  no_trace.mutable_document()->clear_trace();
  ASSERT_OK_AND_ASSIGN(c, AcceptSync(*from_a, no_trace));
  EXPECT_THAT(c.error().message(), HasSubstr("transfer.document.trace"));
  v1::Transfer stranger = t;
  stranger.add_recipients(kT99);
  ASSERT_OK_AND_ASSIGN(c, AcceptSync(*from_a, stranger));
  EXPECT_THAT(c.error().message(),
              HasSubstr("transfer.recipients[1]: 000.00.00.T99 is not a "
                        "recipient of the document"));
  v1::Transfer twice = t;
  twice.add_recipients(kG22);
  ASSERT_OK_AND_ASSIGN(c, AcceptSync(*from_a, twice));
  EXPECT_THAT(c.error().message(),
              HasSubstr("transfer.recipients[1]: duplicate"));
  v1::Transfer none = t;
  none.clear_recipients();
  ASSERT_OK_AND_ASSIGN(c, AcceptSync(*from_a, none));
  EXPECT_THAT(c.error().message(), HasSubstr("transfer.recipients: empty"));
  EXPECT_EQ(b_->ex().Stats().accepted, 0u);
  EXPECT_EQ(InboxTotal(*b_, g22_), 0);

  // The genuine transfer still goes through afterwards.
  ab.Deliver(t);
  ASSERT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_FORWARDED));
  EXPECT_EQ(InboxTotal(*b_, g22_), 1);
}

// A peer hands over genuine, signed documents, but under ids of its own
// choosing: one under the id of a document b holds (which would replace it
// for its recipients and its evidence), one again under a new id (a second
// copy). Both are refused naming the defect; nothing b holds changes.
TEST_F(FederationTest, PeerCannotReplaceAHeldDocumentNorCopyOneUnderANewId) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_);
  std::string first = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  std::string second = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  ASSERT_TRUE(
      EventuallyState(*a_, h49_, second, kG22, v1::DELIVERY_STATE_FORWARDED));
  ASSERT_TRUE(ab.transfers().WaitForCount(2));
  v1::Transfer t1 = ab.transfers().items()[0];
  v1::Transfer t2 = ab.transfers().items()[1];
  ASSERT_EQ(t1.document().id(), first);
  ASSERT_EQ(t2.document().id(), second);
  ASSERT_OK_AND_ASSIGN(v1::Document held, b_->store->GetDocument(first));
  const uint64_t accepted = b_->ex().Stats().accepted;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<InboundLink> from_a,
                       b_->ex().OpenInbound("a"));

  // The second document under the first one's id.
  v1::Transfer replace = t2;
  replace.set_id(900);
  replace.mutable_document()->set_id(first);
  ASSERT_OK_AND_ASSIGN(v1::Custody c, AcceptSync(*from_a, replace));
  ASSERT_TRUE(c.has_error());
  EXPECT_EQ(c.error().code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.error().message(),
              HasSubstr(absl::StrCat("transfer.document.id: ", first,
                                     " names another document")));
  EXPECT_EQ(c.copies_size(), 0);
  ASSERT_OK_AND_ASSIGN(v1::Document after, b_->store->GetDocument(first));
  EXPECT_EQ(after.SerializeAsString(), held.SerializeAsString());

  // The first document again under a new id.
  v1::Transfer copy = t1;
  copy.set_id(901);
  const std::string fresh = NewDocumentId(absl::ToUnixMillis(clock_.Now()));
  copy.mutable_document()->set_id(fresh);
  ASSERT_OK_AND_ASSIGN(c, AcceptSync(*from_a, copy));
  ASSERT_TRUE(c.has_error());
  EXPECT_EQ(c.error().code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.error().message(),
              HasSubstr(absl::StrCat("sent this document as ", first,
                                     "; a second copy under id ", fresh,
                                     " is refused")));
  EXPECT_TRUE(absl::IsNotFound(b_->store->GetDocument(fresh).status()));
  EXPECT_EQ(b_->ex().Stats().accepted, accepted);
  EXPECT_EQ(InboxTotal(*b_, g22_), 2);

  // The genuine transfer sent again is still a resend, answered as before.
  v1::Transfer again = t1;
  again.set_id(902);
  ASSERT_OK_AND_ASSIGN(c, AcceptSync(*from_a, again));
  EXPECT_FALSE(c.has_error()) << c.error().message();
  EXPECT_EQ(c.copies_size(), 1);
  EXPECT_EQ(b_->ex().Stats().accepted, accepted);
  EXPECT_EQ(InboxTotal(*b_, g22_), 2);
}

// Two transfers of one new id at once (on two sessions of a peer, or from
// two peers): the second waits until the first is stored, then is checked
// against it, so it cannot replace it while neither is stored yet.
TEST_F(FederationTest, TwoTransfersOfOneNewIdAtOnceCannotReplaceEachOther) {
  auto faulty = std::make_unique<FaultyStore>();
  FaultyStore* b_store = faulty.get();
  ASSERT_NO_FATAL_FAILURE(TwoBrokers(kOpenPolicy, nullptr, std::move(faulty)));
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  ab.HoldTransfers(true);
  ASSERT_OK(ab.Open());
  std::string first = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  // To other recipients: the store's guard of a transfer (its id and
  // recipients) does not cover it.
  std::string second = MustSend(*a_, h49_, NewDocument(kH49, {kG22, kG23}));
  ASSERT_TRUE(ab.transfers().WaitForCount(2));
  std::vector<v1::Transfer> held = ab.TakeHeld();
  ASSERT_EQ(held.size(), 2u);
  ASSERT_EQ(held[0].document().id(), first);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<InboundLink> one,
                       b_->ex().OpenInbound("a"));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<InboundLink> two,
                       b_->ex().OpenInbound("a"));

  // The genuine transfer is being stored (its write waits)...
  b_store->HoldWrites(true);
  AsyncResult<v1::Custody> genuine;
  one->Accept(held[0], [cb = genuine.Callback()](v1::Custody c) mutable {
    cb(std::move(c));
  });
  ASSERT_TRUE(b_store->WaitForHeld(1));
  // ...when the second document comes under the same id: told to come
  // again, without a write of its own.
  v1::Transfer replace = held[1];
  replace.set_id(900);
  replace.mutable_document()->set_id(first);
  AsyncResult<v1::Custody> rival;
  two->Accept(replace, [cb = rival.Callback()](v1::Custody c) mutable {
    cb(std::move(c));
  });
  absl::StatusOr<v1::Custody> refused = rival.Wait();
  b_store->HoldWrites(false);
  ASSERT_OK_AND_ASSIGN(v1::Custody took, genuine.Wait());
  EXPECT_FALSE(took.has_error()) << took.error().message();
  ASSERT_OK(refused);
  ASSERT_TRUE(refused->has_error());
  EXPECT_EQ(refused->error().code(),
            static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(refused->copies_size(), 0);
  ASSERT_OK_AND_ASSIGN(v1::Document stored, b_->store->GetDocument(first));
  EXPECT_EQ(signing::DocumentDigest(stored),
            signing::DocumentDigest(held[0].document()))
      << "the document stored under " << first << " was replaced";

  // Sent again now, it is checked against what is stored.
  replace.set_id(901);
  ASSERT_OK_AND_ASSIGN(v1::Custody again, AcceptSync(*two, replace));
  ASSERT_TRUE(again.has_error());
  EXPECT_EQ(again.error().code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(again.error().message(), HasSubstr("names another document"));
  EXPECT_EQ(InboxTotal(*b_, g22_), 1);
}

// Custody counts only for what the link carried: a peer answering for
// outbox entries it was never handed (waiting behind the window) would make
// them vanish as FORWARDED without reaching it.
TEST_F(FederationTest, CustodyForEntriesTheLinkWasNotHandedIsIgnored) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Collector<v1::Transfer> sent;
  ASSERT_OK_AND_ASSIGN(
      std::shared_ptr<PeerLinkSession> session,
      a_->ex().OpenOutbound("b", /*window=*/1, [sent](LinkItems items) mutable {
        for (v1::Transfer& t : items.transfers) sent.Add(std::move(t));
      }));
  std::string first = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  std::string second = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  ASSERT_TRUE(sent.WaitForCount(1));
  EXPECT_EQ(sent.CountAfter(), 1u);  // the window holds the second back
  const uint64_t handed = sent.items()[0].id();

  // Answers for every sequence near the handed one, except that one.
  std::vector<v1::Custody> forged;
  for (uint64_t id = handed > 32 ? handed - 32 : 1; id < handed + 64; ++id) {
    if (id == handed) continue;
    v1::Custody c;
    c.set_id(id);
    c.add_copies()->set_recipient(kG22);
    forged.push_back(c);
  }
  session->Custody(forged);
  EXPECT_EQ(sent.CountAfter(), 1u);  // and what they would do is done
  EXPECT_EQ(PeerStatsOf(*a_, "b").outbox, 2u);
  EXPECT_EQ(StateOf(*a_, h49_, second, kG22), v1::DELIVERY_STATE_ACCEPTED);

  // The genuine answer for the handed one settles it; the second goes out.
  v1::Custody genuine;
  genuine.set_id(handed);
  genuine.add_copies()->set_recipient(kG22);
  session->Custody({genuine});
  ASSERT_TRUE(
      EventuallyState(*a_, h49_, first, kG22, v1::DELIVERY_STATE_FORWARDED));
  ASSERT_TRUE(sent.WaitForCount(2));
  EXPECT_EQ(sent.items()[1].document().id(), second);
  EXPECT_EQ(StateOf(*a_, h49_, second, kG22), v1::DELIVERY_STATE_ACCEPTED);
  session->Close();
}

// A status event comes back only from the peer the copy was handed to, for
// that copy: another peer, or the right peer about a copy it never had
// (here one a delivers itself), is refused and nothing is recorded.
TEST_F(FederationTest, OnlyThePeerACopyWentToReportsOnIt) {
  a_ =
      AddBroker("a", {kH49, kH50},
                {{.name = "b", .orgs = {kG22}}, {.name = "c", .orgs = {kT99}}});
  b_ = AddBroker("b", {kG22}, {{.name = "a"}});
  ASSERT_NE(a_, nullptr);
  ASSERT_NE(b_, nullptr);
  Connect(*a_, *b_);
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22, kH50}));
  ASSERT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_FORWARDED));
  auto delivered = [&](const char* recipient, uint64_t n) {
    v1::ReturnedEvent r;
    r.set_id(n);
    v1::StatusEvent* e = r.mutable_event();
    e->set_document_id(id);
    e->set_recipient(recipient);
    e->set_sender(kH49);
    e->set_delivery_state(v1::DELIVERY_STATE_DELIVERED);
    e->set_actor("spiffe://lienthong.local/org/000.00.00.G22");
    return r;
  };
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<InboundLink> from_c,
                       a_->ex().OpenInbound("c"));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<InboundLink> from_b,
                       a_->ex().OpenInbound("b"));
  const std::vector<std::tuple<InboundLink*, const char*, const char*>> forged =
      {{from_c.get(), "c", kG22}, {from_b.get(), "b", kH50}};
  uint64_t n = 0;
  for (const auto& [link, peer, recipient] : forged) {
    EXPECT_THAT(ReturnedSync(*link, delivered(recipient, ++n)),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(absl::StrCat("broker ", peer,
                                                " was not handed document ", id,
                                                " for ", recipient))));
  }
  EXPECT_EQ(StateOf(*a_, h49_, id, kG22), v1::DELIVERY_STATE_FORWARDED);
  EXPECT_NE(StateOf(*a_, h49_, id, kH50), v1::DELIVERY_STATE_DELIVERED);

  // The genuine report is taken.
  EXPECT_OK(ReturnedSync(*from_b, delivered(kG22, 3)));
  EXPECT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DELIVERED));
}

TEST_F(FederationTest, OnlyPeersCanOpenLinks) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  EXPECT_THAT(b_->ex().OpenInbound("zzz"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr("zzz"), HasSubstr("not a peer"))));
  EXPECT_THAT(b_->ex().OpenInbound("b"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(b_->ex().OpenOutbound("zzz", 8, [](LinkItems) {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("zzz")));
  EXPECT_THAT(b_->ex().OpenReturn("zzz", 8, [](LinkItems) {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("zzz")));
  EXPECT_THAT(b_->ex().OpenOutbound("a", 0, [](LinkItems) {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// ---- Routing at send time ---------------------------------------------------

TEST_F(FederationTest, SendToAnOrgNoRouteReachesIsNotFoundNamingIt) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Connect(*a_, *b_);
  EXPECT_THAT(
      Send(*a_, h49_, NewDocument(kH49, {kX01})),
      StatusIs(absl::StatusCode::kNotFound,
               AllOf(HasSubstr("document.recipients[0]"), HasSubstr(kX01))));
  EXPECT_THAT(
      Send(*a_, h49_, NewDocument(kH49, {kG22, kX01})),
      StatusIs(absl::StatusCode::kNotFound,
               AllOf(HasSubstr("document.recipients[1]"), HasSubstr(kX01))));
  EXPECT_EQ(a_->ex().Stats().accepted, 0u);
  EXPECT_EQ(PeerStatsOf(*a_, "b").outbox, 0u);
}

TEST_F(FederationTest, WithOnlyADefaultPeerSendsAreForwarded) {
  a_ = AddBroker("a", {kH49}, {{.name = "b", .is_default = true}});
  b_ = AddBroker("b", {kG22}, {{.name = "a"}});
  ASSERT_NE(a_, nullptr);
  ASSERT_NE(b_, nullptr);
  Connect(*a_, *b_);
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  Receiver g22;
  ASSERT_OK(g22.Open(b_->ex(), g22_));
  ASSERT_TRUE(g22.WaitForCount(1));
  EXPECT_EQ(g22.deliveries()[0].document().id(), id);

  // Nothing is known of X01 yet: the default peer decides, and refuses.
  std::string x01 = MustSend(*a_, h49_, NewDocument(kH49, {kX01}));
  std::optional<v1::StatusEvent> denied =
      EventuallyEvent(*a_, h49_, x01, kX01, v1::DELIVERY_STATE_DENIED);
  ASSERT_TRUE(denied.has_value());
  EXPECT_THAT(denied->reason(),
              AllOf(HasSubstr(kBrokerB),
                    HasSubstr("no route to " + std::string(kX01))));

  // Once b has announced what it reaches, X01 is refused at once.
  ASSERT_OK(a_->ex().LearnDirectory("b", b_->ex().AnnounceTo("a")));
  EXPECT_THAT(Send(*a_, h49_, NewDocument(kH49, {kX01})),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(kX01)));
  EXPECT_OK(Send(*a_, h49_, NewDocument(kH49, {kG22})));
}

TEST_F(FederationTest, DirectoryAnnouncementsRouteSendsThroughTheMiddle) {
  // No configured routes at all: only what the brokers announce.
  a_ = AddBroker("a", {kH49}, {{.name = "c"}});
  c_ = AddBroker("c", {kT99}, {{.name = "a"}, {.name = "b"}});
  b_ = AddBroker("b", {kG22}, {{.name = "c"}});
  ASSERT_NE(a_, nullptr);
  ASSERT_NE(b_, nullptr);
  ASSERT_NE(c_, nullptr);
  EXPECT_THAT(Send(*a_, h49_, NewDocument(kH49, {kG22})),
              StatusIs(absl::StatusCode::kNotFound));

  v1::Announce from_b = b_->ex().AnnounceTo("c");
  EXPECT_EQ(from_b.broker(), "b");
  ASSERT_THAT(from_b.entries(), SizeIs(1));
  EXPECT_EQ(from_b.entries(0).org(), kG22);
  EXPECT_EQ(from_b.entries(0).name(), "Cơ quan 000.00.00.G22");
  EXPECT_EQ(from_b.entries(0).broker(), "b");
  EXPECT_EQ(from_b.entries(0).distance(), 0u);
  ASSERT_OK(c_->ex().LearnDirectory("b", from_b));
  ASSERT_OK(c_->ex().LearnDirectory("a", a_->ex().AnnounceTo("c")));

  v1::Announce from_c = c_->ex().AnnounceTo("a");
  std::vector<std::string> announced;
  for (const v1::DirectoryEntry& e : from_c.entries())
    announced.push_back(
        absl::StrCat(e.org(), "@", e.broker(), "/", e.distance()));
  // Split horizon: a's own H49 is not announced back to it.
  EXPECT_THAT(announced, ElementsAre("000.00.00.G22@b/1", "000.00.00.T99@c/0"));
  ASSERT_OK(a_->ex().LearnDirectory("c", from_c));

  Connect(*a_, *c_);
  Connect(*c_, *b_);
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  Receiver g22;
  ASSERT_OK(g22.Open(b_->ex(), g22_));
  ASSERT_TRUE(g22.WaitForCount(1));
  EXPECT_THAT(TraceOf(g22.deliveries()[0].document()),
              ElementsAre(kBrokerA, kBrokerC, kBrokerB));
  g22.Ack({id});
  EXPECT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DELIVERED));
}

TEST_F(FederationTest, LearnDirectoryIgnoresOwnAndMalformedOrgs) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  v1::Announce announce;
  announce.set_broker("b");
  for (const char* org : {kG22, kH49, "not-a-code"}) {
    v1::DirectoryEntry* e = announce.add_entries();
    e->set_org(org);
    e->set_broker("b");
  }
  EXPECT_THAT(a_->ex().LearnDirectory("b", announce),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("directory from broker b: 1 entries left "
                                 "out; first: entries[2] (not-a-code)")));
  std::vector<PeerDirectory> dir = a_->ex().router().Directory(clock_.Now());
  ASSERT_THAT(dir, SizeIs(1));
  ASSERT_THAT(dir[0].entries, SizeIs(1));
  EXPECT_EQ(dir[0].entries[0].org, kG22);
}

// A peer speaks for its own organizations and passes on others' as they
// came: it cannot claim to be another broker, make a far route look near,
// or announce a distance that wraps around when passed on.
TEST_F(FederationTest, LearnDirectoryLeavesOutEntriesAPeerCannotVouchFor) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  v1::Announce announce;
  announce.set_broker("b");
  auto add = [&](const char* org, const char* broker, uint32_t distance,
                 std::vector<std::string> path) {
    v1::DirectoryEntry* e = announce.add_entries();
    e->set_org(org);
    e->set_broker(broker);
    e->set_distance(distance);
    for (std::string& p : path) e->add_path(std::move(p));
  };
  add(kG22, "b", 0, {});                       // its own: kept
  add("000.00.00.T98", "c", 0, {});            // "near", but served by c
  add("000.00.00.T97", "c", 0, {"c"});         // distance does not fit the path
  add("000.00.00.T96", "c", 4294967295u, {});  // wraps to 0 when passed on
  add("000.00.00.T95", "d", 1, {"c"});         // the path starts elsewhere
  add(kT99, "c", 1, {"c"});                    // c's, one hop away: kept
  EXPECT_THAT(a_->ex().LearnDirectory("b", announce),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("4 entries left out"),
                             HasSubstr("entries[1] (000.00.00.T98): broker c "
                                       "is not the announcing peer"))));
  std::vector<PeerDirectory> dir = a_->ex().router().Directory(clock_.Now());
  ASSERT_THAT(dir, SizeIs(1));
  std::vector<std::string> orgs;
  for (const DirectoryEntry& e : dir[0].entries) orgs.push_back(e.org);
  EXPECT_THAT(orgs, ::testing::UnorderedElementsAre(kG22, kT99));
  // What a passes on to others keeps its true distance.
  v1::Announce onward = a_->ex().AnnounceTo("d");
  bool passed_on = false;
  for (const v1::DirectoryEntry& e : onward.entries()) {
    if (e.org() != kT99) continue;
    passed_on = true;
    EXPECT_EQ(e.distance(), 2u);
  }
  EXPECT_TRUE(passed_on);
}

// ---- Order
// --------------------------------------------------------------------

TEST_F(FederationTest, DocumentsFromOneSenderArriveInSendOrder) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  // Five sent while the link is down.
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(
        MustSend(*a_, h49_, NewDocument(kH49, {kG22}, absl::StrCat("Số ", i))));
  }
  ASSERT_OK(ab.Open(/*window=*/2));
  // Twenty pipelined while it is up.
  std::unique_ptr<Exchange::SendSequence> seq = a_->ex().NewSendSequence();
  std::vector<AsyncResult<v1::SendResponse>> results(20);
  for (int i = 0; i < 20; ++i) {
    seq->Send(h49_, NewDocument(kH49, {kG22}, absl::StrCat("Số ", 5 + i)),
              results[i].Callback());
  }
  for (auto& r : results) {
    ASSERT_OK_AND_ASSIGN(v1::SendResponse sent, r.Wait());
    ids.push_back(sent.document_id());
  }
  Receiver g22;
  ASSERT_OK(g22.Open(b_->ex(), g22_, 100));
  ASSERT_TRUE(g22.WaitForCount(ids.size()));
  EXPECT_THAT(Ids(g22.deliveries()), ElementsAreArray(ids));
}

TEST_F(FederationTest, ALinkHasAtMost64MiBWithoutCustodyWhateverItsWindow) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  // Eight documents of 12 MiB wait in a's outbox for b.
  for (int i = 0; i < 8; ++i) {
    v1::Document doc = NewDocument(kH49, {kG22}, absl::StrCat("Phụ lục ", i));
    doc.set_body(std::string(12 << 20, 'x'));
    MustSend(*a_, h49_, std::move(doc));
  }
  // A link with a window of 4,096 whose peer has not answered yet.
  absl::Mutex mu;
  std::vector<uint64_t> sent;
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<PeerLinkSession> session,
                       a_->ex().OpenOutbound("b", 4096, [&](LinkItems items) {
                         absl::MutexLock lock(&mu);
                         for (const v1::Transfer& t : items.transfers)
                           sent.push_back(t.id());
                       }));
  auto count = [&] {
    absl::MutexLock lock(&mu);
    return sent.size();
  };
  // 0, 12, ..., 60 MiB are below 64 MiB: six go out, the seventh waits.
  ASSERT_TRUE(Eventually([&] { return count() >= 6; }, absl::Seconds(10)));
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(count(), 6u);
  // Custody of the first makes room for the seventh, and only for it.
  v1::Custody custody;
  {
    absl::MutexLock lock(&mu);
    custody.set_id(sent.front());
  }
  v1::CopyDecision* copy = custody.add_copies();
  copy->set_recipient(kG22);
  session->Custody({custody});
  ASSERT_TRUE(Eventually([&] { return count() >= 7; }, absl::Seconds(10)));
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(count(), 7u);
  session->Close();
}

TEST_F(FederationTest, UrgentOvertakesNormalInTheOutbox) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  std::string n1 = MustSend(*a_, h49_, NewDocument(kH49, {kG22}, "Thường 1"));
  std::string n2 = MustSend(*a_, h49_, NewDocument(kH49, {kG22}, "Thường 2"));
  v1::Document urgent = NewDocument(kH49, {kG22}, "Hỏa tốc");
  urgent.mutable_metadata()->set_urgency(v1::URGENCY_EXPRESS);
  std::string u = MustSend(*a_, h49_, urgent);
  ASSERT_OK(ab.Open(/*window=*/1));
  ASSERT_TRUE(ab.transfers().WaitForCount(3));
  std::vector<std::string> order;
  for (const v1::Transfer& t : ab.transfers().items())
    order.push_back(t.document().id());
  EXPECT_THAT(order, ElementsAre(u, n1, n2));
  Receiver g22;
  ASSERT_OK(g22.Open(b_->ex(), g22_, 100));
  ASSERT_TRUE(g22.WaitForCount(3));
  EXPECT_THAT(Ids(g22.deliveries()), ElementsAre(u, n1, n2));
}

// ---- Restart
// ------------------------------------------------------------------

TEST_F(FederationTest, OutboxSurvivesRestartAndIsSentOnTheNextLink) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  v1::Document doc = NewDocument(kH49, {kG22});
  v1::Attachment* att = doc.add_attachments();
  att->set_name("phu-luc.pdf");
  att->set_content_type("application/pdf");
  att->set_content("%PDF-1.7 phụ lục");
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent, Send(*a_, h49_, doc));
  EXPECT_EQ(PeerStatsOf(*a_, "b").outbox, 1u);

  ASSERT_NO_FATAL_FAILURE(Restart(*a_));
  PeerQueueStats st = PeerStatsOf(*a_, "b");
  EXPECT_EQ(st.outbox, 1u);
  EXPECT_EQ(st.outbox_in_flight, 0u);
  EXPECT_FALSE(st.outbound_link);

  Wire& ab = Connect(*a_, *b_);
  ASSERT_TRUE(ab.transfers().WaitForCount(1));
  v1::Transfer t = ab.transfers().items()[0];
  EXPECT_EQ(t.document().id(), sent.document_id());
  EXPECT_EQ(t.document().content_sha256(), sent.content_sha256());
  ASSERT_THAT(t.document().attachments(), SizeIs(1));
  EXPECT_EQ(t.document().attachments(0).content(), "%PDF-1.7 phụ lục");
  EXPECT_THAT(t.recipients(), ElementsAre(kG22));
  ASSERT_TRUE(EventuallyState(*a_, h49_, sent.document_id(), kG22,
                              v1::DELIVERY_STATE_FORWARDED));
  Receiver g22;
  ASSERT_OK(g22.Open(b_->ex(), g22_));
  ASSERT_TRUE(g22.WaitForCount(1));
  g22.Ack({sent.document_id()});
  EXPECT_TRUE(EventuallyState(*a_, h49_, sent.document_id(), kG22,
                              v1::DELIVERY_STATE_DELIVERED));
}

// A peer dropped from the configuration leaves its outbox stored and shown
// (configured = false), and it goes out once the peer is configured again.
TEST_F(FederationTest, OutboxOfAPeerNoLongerConfiguredIsKeptAndShown) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent,
                       Send(*a_, h49_, NewDocument(kH49, {kG22})));
  std::vector<PeerRoute> peers = a_->options.peers;
  a_->options.peers.clear();
  ASSERT_NO_FATAL_FAILURE(Restart(*a_));
  std::vector<PeerQueueStats> stats = a_->ex().PeerStats();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].peer, "b");
  EXPECT_FALSE(stats[0].configured);
  EXPECT_EQ(stats[0].outbox, 1u);

  a_->options.peers = peers;
  ASSERT_NO_FATAL_FAILURE(Restart(*a_));
  EXPECT_TRUE(PeerStatsOf(*a_, "b").configured);
  Connect(*a_, *b_);
  ASSERT_TRUE(EventuallyState(*a_, h49_, sent.document_id(), kG22,
                              v1::DELIVERY_STATE_FORWARDED));
}

TEST_F(FederationTest, ReturnQueueSurvivesRestartOfTheFarEnd) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  ASSERT_OK(ab.OpenOutbound());  // no return link yet
  std::string id = MustSend(*a_, h49_, NewDocument(kH49, {kG22}));
  {
    Receiver g22;
    ASSERT_OK(g22.Open(b_->ex(), g22_));
    ASSERT_TRUE(g22.WaitForCount(1));
    g22.Ack({id});
    ASSERT_TRUE(Eventually([&] { return PeerStatsOf(*b_, "a").returns == 1; }));
  }
  ASSERT_TRUE(EventuallyOutboxEmpty(*a_, "b"));

  ASSERT_NO_FATAL_FAILURE(Restart(*b_));
  EXPECT_EQ(PeerStatsOf(*b_, "a").returns, 1u);
  Connect(*a_, *b_);
  EXPECT_TRUE(
      EventuallyState(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DELIVERED));
  EXPECT_TRUE(EventuallyReturnsEmpty(*b_, "a"));
}

// ---- Options
// ------------------------------------------------------------------

TEST(FederationOptionsTest, PeerErrorsNameTheField) {
  ExchangeOptions o;
  o.broker_id = kBrokerA;
  o.peers = {{.name = "b"}, {.name = "b"}};
  EXPECT_THAT(o.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("peers[1].name: b is listed twice")));
  o.peers = {{.name = "b"}, {.name = "a"}};
  EXPECT_THAT(o.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("peers[1].name: a is this broker itself")));
  o.peers = {{.name = "b", .is_default = true},
             {.name = "c", .is_default = true}};
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("peers[1].default")));
  o.peers = {{.name = "b", .provinces = {"h49"}}};
  EXPECT_THAT(o.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("peers[0].serves.provinces[0]")));
  o.peers = {};
  o.max_hops = 0;
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("federation.max_hops")));
}

// ---- Approvals across brokers -----------------------------------------------

constexpr char kApproverA[] = "spiffe://lienthong.local/person/approver";

v1::Document AiPersonnelDecision(const std::string& sender,
                                 std::vector<std::string> recipients) {
  v1::Document doc = NewDocument(sender, std::move(recipients),
                                 "Quyết định bổ nhiệm (đề xuất của AI)");
  doc.mutable_metadata()->set_origin(v1::ORIGIN_AI);
  doc.mutable_metadata()->set_decision_category(
      v1::DECISION_CATEGORY_PERSONNEL);
  return doc;
}

TEST_F(FederationTest, HeldDocumentCrossesOnlyAfterApprovalAndCarriesIt) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  a_->options.approvers = {{kApproverA, kApproverRole, {kH49}}};
  ASSERT_NO_FATAL_FAILURE(Restart(*a_));
  Wire& ab = Connect(*a_, *b_, /*open=*/false);
  ab.HoldTransfers(true);
  ASSERT_OK(ab.Open());
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent,
                       Send(*a_, h49_, AiPersonnelDecision(kH49, {kG22})));
  const std::string id = sent.document_id();
  EXPECT_EQ(ab.transfers().CountAfter(), 0u) << "left before approval";

  v1::DecideApprovalRequest request;
  request.set_document_id(id);
  request.set_decision(v1::APPROVAL_DECISION_APPROVE);
  request.set_content_sha256(sent.content_sha256());
  AsyncResult<v1::DecideApprovalResponse> decided;
  a_->ex().DecideApproval(MustParse(kApproverA), request, decided.Callback());
  ASSERT_OK(decided.Wait());
  ASSERT_TRUE(ab.transfers().WaitForCount(1));
  std::vector<v1::Transfer> held = ab.TakeHeld();
  ASSERT_THAT(held, SizeIs(1));
  ASSERT_THAT(held[0].document().approvals(), SizeIs(1));
  EXPECT_EQ(held[0].document().approvals(0).approver(), kApproverA);

  // A broker on the way that dropped the approval: the far end refuses the
  // copy and says what is missing.
  v1::Transfer stripped = held[0];
  stripped.mutable_document()->clear_approvals();
  ab.Deliver(stripped);
  std::optional<v1::StatusEvent> denied =
      EventuallyEvent(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DENIED);
  ASSERT_TRUE(denied.has_value());
  EXPECT_THAT(denied->reason(),
              AllOf(HasSubstr(kBrokerB), HasSubstr("approver@000.00.00.H49"),
                    HasSubstr("does not carry")));
  EXPECT_EQ(InboxTotal(*b_, g22_), 0);
}

TEST_F(FederationTest, ApprovedDocumentIsDeliveredAtTheFarEndWithItsApproval) {
  ASSERT_NO_FATAL_FAILURE(TwoBrokers());
  a_->options.approvers = {{kApproverA, kApproverRole, {kH49}}};
  ASSERT_NO_FATAL_FAILURE(Restart(*a_));
  Connect(*a_, *b_);
  ASSERT_OK_AND_ASSIGN(v1::SendResponse sent,
                       Send(*a_, h49_, AiPersonnelDecision(kH49, {kG22})));
  const std::string id = sent.document_id();
  Receiver g22;
  ASSERT_OK(g22.Open(b_->ex(), g22_));
  EXPECT_EQ(g22.CountAfterQuiet(), 0u);
  v1::DecideApprovalRequest request;
  request.set_document_id(id);
  request.set_decision(v1::APPROVAL_DECISION_APPROVE);
  request.set_content_sha256(sent.content_sha256());
  request.set_comment("Đã xem xét");
  AsyncResult<v1::DecideApprovalResponse> decided;
  a_->ex().DecideApproval(MustParse(kApproverA), request, decided.Callback());
  ASSERT_OK(decided.Wait());
  ASSERT_TRUE(g22.WaitForCount(1));
  const v1::Document got = g22.deliveries()[0].document();
  ASSERT_THAT(got.approvals(), SizeIs(1));
  EXPECT_EQ(got.approvals(0).comment(), "Đã xem xét");
  EXPECT_EQ(got.approvals(0).content_sha256(), sent.content_sha256());
  g22.Ack({id});
  ASSERT_TRUE(EventuallyEvent(*a_, h49_, id, kG22, v1::DELIVERY_STATE_DELIVERED)
                  .has_value());
}

}  // namespace
}  // namespace lienthong::broker
