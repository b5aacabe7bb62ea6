#include <deque>
#include <map>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "broker/service/src/streams.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "lienthong/broker/attachment_service.h"
#include "lienthong/broker/federation.h"
#include "lienthong/broker/service.h"
#include "lienthong/common/log.h"
#include "lienthong/common/thread_name.h"

namespace lienthong::broker {
namespace {

constexpr size_t kMaxTransfersPerMessage = 256;
// Event acknowledgements one message may carry (a return session never has
// more events outstanding than its window, at most this).
constexpr size_t kMaxEventAcksPerMessage = 1 << 16;
constexpr size_t kMaxBytesPerMessage = 4 << 20;
constexpr int kMaxMessageBytes = 64 << 20;
constexpr int kKeepaliveTimeMs = 20'000;
constexpr int kKeepaliveTimeoutMs = 10'000;
// A link that stayed up this long resets the reconnect backoff.
constexpr absl::Duration kStableLink = absl::Seconds(10);
// Transfers outstanding and no custody for this long: the link is broken
// (whatever was sent goes out again on a new one).
constexpr absl::Duration kCustodyTimeout = absl::Seconds(60);
// How often a dialer looks for directory changes to announce at once.
constexpr absl::Duration kDirectoryCheck = absl::Seconds(1);

void Log(absl::string_view message, log::Fields fields = {},
         log::Level level = log::Level::kInfo) {
  log::Write(level, "federation", message, fields);
}

// Incidents ride on the directory announcements (Announce.incidents).
v1::Announce WithIncidents(v1::Announce announce, Incidents* incidents) {
  if (incidents) *announce.mutable_incidents() = incidents->Announcement();
  return announce;
}
void LearnIncidents(Incidents* incidents, const std::string& peer,
                    const v1::Announce& announce) {
  if (incidents && announce.has_incidents())
    incidents->LearnFromPeer(peer, announce.incidents());
}
// Changes whenever what this broker announces may have changed.
uint64_t AnnounceGeneration(const Exchange& exchange, Incidents* incidents) {
  return exchange.directory_generation() +
         (incidents ? incidents->generation() : 0);
}

// ---- The served side of a link
// ------------------------------------------------

class LinkReactor final
    : public grpc::ServerBidiReactor<v1::LinkRequest, v1::LinkResponse>,
      public RefCounted,
      public StreamRegistry::Stream {
 public:
  LinkReactor(Exchange* exchange, std::string peer,
              std::unique_ptr<InboundLink> inbound, uint32_t window,
              StreamRegistry* registry, Incidents* incidents)
      : exchange_(exchange),
        incidents_(incidents),
        peer_(std::move(peer)),
        inbound_(std::move(inbound)),
        window_(window),
        registry_(registry) {
    if (!registry_->Add(this)) {
      End(ShuttingDown());
      return;
    }
    StartSendInitialMetadata();  // the dialer checks who we are at once
    Ref();  // for the return sink, released in OnDone after Close
    absl::StatusOr<std::shared_ptr<PeerLinkSession>> returns =
        exchange_->OpenReturn(peer_, window_, [this](LinkItems items) {
          absl::MutexLock lock(&mu_);
          if (finished_ || broken_ || end_requested_) return;
          for (v1::ReturnedEvent& e : items.events)
            pending_.add_events()->Swap(&e);
          StartWriteLocked();
        });
    if (!returns.ok()) {
      Unref();
      End(ToGrpcStatus(returns.status()));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      returns_ = *returns;
      reading_ = true;
    }
    StartRead(&request_);
  }

  void StopForShutdown() override { End(ShuttingDown()); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the dialer closed its side or went away
      End(grpc::Status::OK);
      return;
    }
    // Every message's work is taken on at once: a dialer that does not keep
    // to the limits (ours does) is cut off rather than trusted.
    if (static_cast<size_t>(request_.transfers_size()) >
            kMaxTransfersPerMessage ||
        static_cast<size_t>(request_.event_acks_size()) >
            kMaxEventAcksPerMessage) {
      End(grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("LinkRequest: ", request_.transfers_size(),
                       " transfers and ", request_.event_acks_size(),
                       " event acknowledgements; at most ",
                       kMaxTransfersPerMessage, " and ",
                       kMaxEventAcksPerMessage, " per message")));
      return;
    }
    // request_ stays ours (reading_ stays true, so no custody callback
    // starts the next read into it) until it has been taken apart below.
    // The directory is learned and answered outside the stream's lock.
    std::optional<v1::Announce> answer;
    if (request_.has_announce()) {
      if (absl::Status s =
              exchange_->LearnDirectory(peer_, request_.announce());
          !s.ok())
        Log(s.message(), {{"peer", peer_}}, log::Level::kWarning);
      LearnIncidents(incidents_, peer_, request_.announce());
      answer = WithIncidents(exchange_->AnnounceTo(peer_), incidents_);
    }
    std::shared_ptr<PeerLinkSession> returns;
    {
      absl::MutexLock lock(&mu_);
      returns = returns_;
      if (answer) {
        *pending_.mutable_announce() = *std::move(answer);
        StartWriteLocked();
      }
    }
    if (request_.event_acks_size() > 0 && returns) {
      returns->EventsStored(
          {request_.event_acks().begin(), request_.event_acks().end()});
    }
    std::vector<std::pair<v1::Transfer, absl::AnyInvocable<void(v1::Custody)>>>
        transfers;
    transfers.reserve(request_.transfers_size());
    if (request_.transfers_size() > 0) {
      absl::MutexLock lock(&mu_);
      outstanding_ += request_.transfers_size();
    }
    for (v1::Transfer& t : *request_.mutable_transfers()) {
      Ref();
      std::string document_id = t.document().id();
      if (log::Enabled(log::Level::kDebug))
        log::Write(log::Level::kDebug, "federation", "transfer received",
                   {{"peer", peer_}, {"document_id", document_id}});
      transfers.emplace_back(std::move(t), [this,
                                            document_id](v1::Custody custody) {
        if (log::Enabled(log::Level::kDebug) || custody.has_error()) {
          log::Fields fields = {{"peer", peer_}, {"document_id", document_id}};
          if (custody.has_error())
            fields.emplace_back("error", custody.error().message());
          log::Write(
              custody.has_error() ? log::Level::kWarning : log::Level::kDebug,
              "federation",
              custody.has_error() ? "transfer not taken"
                                  : "transfer taken into custody",
              fields);
        }
        bool read = false;
        {
          absl::MutexLock lock(&mu_);
          --outstanding_;
          if (!finished_ && !broken_ && !end_requested_) {
            *pending_.add_custody() = std::move(custody);
            StartWriteLocked();
            read = ResumeReadLocked();
          }
        }
        if (read) StartRead(&request_);
        Unref();
      });
    }
    // Taken as one: their writes share a commit and a sync.
    if (!transfers.empty()) inbound_->AcceptAll(std::move(transfers));
    request_.Clear();
    bool read;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      read = ResumeReadLocked();
    }
    if (read) StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    bool read = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        broken_ = true;
      } else {
        response_.Clear();
        StartWriteLocked();
        read = ResumeReadLocked();  // answers went out: room to read again
      }
      MaybeFinishLocked();
    }
    if (read) StartRead(&request_);
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
    }
    End(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    std::shared_ptr<PeerLinkSession> returns;
    {
      absl::MutexLock lock(&mu_);
      returns = std::move(returns_);
    }
    if (returns) {
      returns->Close();  // no event reaches the sink after this
      Unref();           // the sink's reference
    }
    registry_->Remove(this);
    Unref();
  }

 private:
  // Reads the next message unless too many transfers await custody (the
  // dialer's window bounds them; this bounds a dialer that ignores it).
  // Answers not yet written count too: a dialer that stops reading them
  // while it goes on sending would otherwise grow them without bound.
  bool ResumeReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (reading_ || read_closed_ || end_requested_ || finished_) return false;
    const size_t unwritten = static_cast<size_t>(pending_.custody_size()) +
                             static_cast<size_t>(response_.custody_size());
    if (outstanding_ + unwritten > 2 * window_ + kMaxTransfersPerMessage)
      return false;
    reading_ = true;
    return true;
  }

  void End(grpc::Status status) {
    std::shared_ptr<PeerLinkSession> returns;
    {
      absl::MutexLock lock(&mu_);
      if (end_requested_) return;
      end_requested_ = true;
      read_closed_ = true;
      end_status_ = std::move(status);
      returns = returns_;
      pending_.Clear();  // unacknowledged events go back on the next link
      MaybeFinishLocked();
    }
    if (returns) returns->Close();
  }

  void StartWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_ || end_requested_) return;
    if (pending_.custody_size() == 0 && pending_.events_size() == 0 &&
        !pending_.has_announce())
      return;
    writing_ = true;
    response_.Swap(&pending_);
    pending_.Clear();
    StartWrite(&response_);
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return;
    if (broken_ || end_requested_) {
      finished_ = true;
      Finish(broken_ && !end_requested_ ? grpc::Status::CANCELLED
                                        : end_status_);
    }
  }

  Exchange* const exchange_;
  Incidents* const incidents_;
  const std::string peer_;
  const std::unique_ptr<InboundLink> inbound_;
  const uint32_t window_;
  StreamRegistry* const registry_;
  v1::LinkRequest request_;  // owned by the one read in flight

  absl::Mutex mu_;
  std::shared_ptr<PeerLinkSession> returns_ ABSL_GUARDED_BY(mu_);
  v1::LinkResponse response_ ABSL_GUARDED_BY(mu_);
  v1::LinkResponse pending_ ABSL_GUARDED_BY(mu_);
  uint64_t outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool read_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool end_requested_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

FederationServiceImpl::FederationServiceImpl(Exchange* exchange,
                                             std::string trust_domain,
                                             uint32_t window,
                                             Incidents* incidents)
    : exchange_(exchange),
      incidents_(incidents),
      trust_domain_(std::move(trust_domain)),
      window_(window),
      registry_(std::make_unique<StreamRegistry>()) {}

FederationServiceImpl::~FederationServiceImpl() = default;

void FederationServiceImpl::Shutdown() { registry_->StopAll(); }

grpc::ServerBidiReactor<v1::LinkRequest, v1::LinkResponse>*
FederationServiceImpl::Link(grpc::CallbackServerContext* ctx) {
  using Refuse = RefuseBidi<v1::LinkRequest, v1::LinkResponse>;
  std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
  absl::StatusOr<Principal> caller = AuthenticateCaller(
      auth.get(), trust_domain_, ctx->peer(), "FederationService/Link");
  if (!caller.ok()) return new Refuse(caller.status());
  if (caller->kind != Principal::Kind::kBroker) {
    return new Refuse(absl::PermissionDeniedError(
        absl::StrCat(caller->spiffe_id,
                     " is not a broker; FederationService serves peer "
                     "brokers only")));
  }
  absl::StatusOr<std::unique_ptr<InboundLink>> inbound =
      exchange_->OpenInbound(caller->name);
  if (!inbound.ok()) return new Refuse(inbound.status());
  return new LinkReactor(exchange_, caller->name, *std::move(inbound), window_,
                         registry_.get(), incidents_);
}

// ---- The dialing side
// ---------------------------------------------------------

struct PeerLinks::Peer {
  PeerEndpoint endpoint;
  std::shared_ptr<grpc::Channel> channel;
  std::thread thread;

  absl::Mutex mu;
  grpc::ClientContext* context ABSL_GUARDED_BY(mu) = nullptr;  // while linked
  PeerLinkState state ABSL_GUARDED_BY(mu);
};

namespace {

// What the link's reader and the core hand to its writer.
struct LinkIo {
  absl::Mutex mu;
  std::deque<v1::Transfer> transfers ABSL_GUARDED_BY(mu);
  std::vector<uint64_t> event_acks ABSL_GUARDED_BY(mu);
  bool ended ABSL_GUARDED_BY(mu) = false;
  // Transfers written and custody answers read on this link, and when the
  // last answer came: a peer that stops answering is given up on.
  uint64_t written ABSL_GUARDED_BY(mu) = 0;
  uint64_t answered ABSL_GUARDED_BY(mu) = 0;
  absl::Time progress ABSL_GUARDED_BY(mu) = absl::Now();
  // Returned events handed to the exchange and not yet stored: the reader
  // stops reading while too many are (a peer must keep to its window).
  size_t returning ABSL_GUARDED_BY(mu) = 0;
  bool closing ABSL_GUARDED_BY(mu) = false;  // the link is being torn down
};

// Whether `t`'s document has stored attachment `sha256`.
bool Needs(const v1::Transfer& t, const std::string& sha256) {
  for (const v1::Attachment& a : t.document().attachments()) {
    if (a.stored() && a.sha256() == sha256) return true;
  }
  return false;
}

// The stored attachments of `t` not pushed on this link since `fresh_after`
// (the peer's right to use what it was pushed lapses), each once.
std::vector<std::string> Unpushed(
    const v1::Transfer& t, const std::map<std::string, absl::Time>& pushed,
    absl::Time fresh_after) {
  std::vector<std::string> out;
  for (const v1::Attachment& a : t.document().attachments()) {
    auto it = pushed.find(a.sha256());
    if (a.stored() && (it == pushed.end() || it->second < fresh_after) &&
        std::find(out.begin(), out.end(), a.sha256()) == out.end())
      out.push_back(a.sha256());
  }
  return out;
}

}  // namespace

PeerLinks::PeerLinks(Exchange* exchange, PeerLinkOptions options,
                     std::vector<PeerEndpoint> peers)
    : exchange_(exchange), options_(std::move(options)) {
  auto certificates =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          options_.private_key_file, options_.certificate_file,
          options_.ca_file, absl::ToInt64Seconds(options_.certificate_refresh));
  for (PeerEndpoint& e : peers) {
    auto p = std::make_unique<Peer>();
    grpc::experimental::TlsChannelCredentialsOptions tls;
    tls.set_certificate_provider(certificates);
    tls.watch_root_certs();
    tls.watch_identity_key_cert_pairs();
    tls.set_verify_server_certs(true);
    tls.set_certificate_verifier(
        std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
    tls.set_check_call_host(true);
    if (!options_.crl_directory.empty())
      tls.set_crl_directory(options_.crl_directory);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessageBytes);
    args.SetMaxSendMessageSize(kMaxMessageBytes);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(
        GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
        static_cast<int>(absl::ToInt64Milliseconds(options_.reconnect_max)));
    // Each link has a channel of its own, never shared with other traffic.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    p->channel = grpc::CreateCustomChannel(
        e.endpoint, grpc::experimental::TlsCredentials(tls), args);
    {
      absl::MutexLock lock(&p->mu);
      p->state.peer = e.name;
      p->state.endpoint = e.endpoint;
    }
    p->endpoint = std::move(e);
    peers_.push_back(std::move(p));
  }
}

PeerLinks::~PeerLinks() { Stop(); }

void PeerLinks::Start() {
  for (auto& p : peers_) {
    Peer* peer = p.get();
    peer->thread = std::thread([this, peer] {
      NameThisThread(absl::StrCat("lt-link-", peer->endpoint.name));
      Run(peer);
    });
  }
}

void PeerLinks::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  for (auto& p : peers_) {
    absl::MutexLock lock(&p->mu);
    if (p->context) p->context->TryCancel();
  }
  for (auto& p : peers_) {
    if (p->thread.joinable()) p->thread.join();
  }
}

std::vector<PeerLinkState> PeerLinks::States() {
  std::vector<PeerLinkState> out;
  for (auto& p : peers_) {
    absl::MutexLock lock(&p->mu);
    out.push_back(p->state);
  }
  return out;
}

void PeerLinks::Run(Peer* peer) {
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> jitter(0.5, 1.5);
  absl::Duration backoff = options_.reconnect_min;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    absl::Time started = absl::Now();
    absl::Status s = RunOnce(peer);
    {
      absl::MutexLock lock(&peer->mu);
      peer->state.up = false;
      peer->state.since = absl::Now();
      peer->state.last_error = s.ToString();
    }
    if (absl::Now() - started > kStableLink) backoff = options_.reconnect_min;
    absl::Duration wait = backoff * jitter(rng);
    backoff = std::min(backoff * 2, options_.reconnect_max);
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    Log(absl::StrCat("link to ", peer->endpoint.name, " (",
                     peer->endpoint.endpoint, ") down: ", s.ToString(),
                     "; retrying in ", absl::FormatDuration(wait)),
        {{"peer", peer->endpoint.name}, {"endpoint", peer->endpoint.endpoint}},
        log::Level::kWarning);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), wait);
  }
}

absl::Status PeerLinks::RunOnce(Peer* peer) {
  const std::string& name = peer->endpoint.name;
  auto stub = v1::FederationService::NewStub(peer->channel);
  grpc::ClientContext ctx;
  {
    absl::MutexLock stop_lock(&mu_);
    if (stopping_) return absl::CancelledError("stopping");
    absl::MutexLock lock(&peer->mu);
    peer->context = &ctx;
  }
  auto forget_context = [&] {
    absl::MutexLock lock(&peer->mu);
    peer->context = nullptr;
  };
  std::unique_ptr<grpc::ClientReaderWriter<v1::LinkRequest, v1::LinkResponse>>
      stream = stub->Link(&ctx);
  stream->WaitForInitialMetadata();
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (!auth || !auth->IsPeerAuthenticated()) {  // never connected
    ctx.TryCancel();
    grpc::Status status = stream->Finish();
    forget_context();
    if (status.ok()) return absl::UnavailableError("link ended at once");
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  // The peer must be the broker we meant, not just any certificate our CA
  // signed for this address.
  absl::StatusOr<Principal> who =
      auth ? AuthenticatedPrincipal(*auth, options_.trust_domain)
           : absl::UnauthenticatedError("no verified server certificate");
  if (!who.ok() || who->kind != Principal::Kind::kBroker || who->name != name) {
    ctx.TryCancel();
    stream->Finish();
    forget_context();
    return absl::PermissionDeniedError(absl::StrCat(
        peer->endpoint.endpoint, " is not broker ", name, ": ",
        who.ok() ? who->spiffe_id : std::string(who.status().message())));
  }

  auto io = std::make_shared<LinkIo>();
  absl::StatusOr<std::shared_ptr<PeerLinkSession>> session =
      exchange_->OpenOutbound(name, options_.window, [io](LinkItems items) {
        absl::MutexLock lock(&io->mu);
        for (v1::Transfer& t : items.transfers)
          io->transfers.push_back(std::move(t));
      });
  absl::StatusOr<std::unique_ptr<InboundLink>> inbound =
      exchange_->OpenInbound(name);
  if (!session.ok() || !inbound.ok()) {
    ctx.TryCancel();
    stream->Finish();
    forget_context();
    return session.ok() ? inbound.status() : session.status();
  }
  {
    absl::MutexLock lock(&peer->mu);
    peer->state.up = true;
    peer->state.since = absl::Now();
    ++peer->state.connects;
    peer->state.last_error.clear();
  }
  Log(absl::StrCat("link to ", name, " (", peer->endpoint.endpoint, ") up"),
      {{"peer", name}, {"endpoint", peer->endpoint.endpoint}});

  std::shared_ptr<InboundLink> returned = *std::move(inbound);
  std::thread reader([&, io, returned] {
    NameThisThread(absl::StrCat("lt-linkrd-", name));
    v1::LinkResponse response;
    while (stream->Read(&response)) {
      for (v1::Custody& c : *response.mutable_custody()) c.clear_local();
      if (response.custody_size() > 0) {
        {
          absl::MutexLock lock(&io->mu);
          io->answered += response.custody_size();
          io->progress = absl::Now();
        }
        (*session)->Custody(
            {std::make_move_iterator(response.mutable_custody()->begin()),
             std::make_move_iterator(response.mutable_custody()->end())});
      }
      for (v1::ReturnedEvent& e : *response.mutable_events()) {
        {
          absl::MutexLock lock(&io->mu);
          const size_t most = 2 * static_cast<size_t>(options_.window) +
                              kMaxTransfersPerMessage;
          auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io->mu) {
            return io->returning < most || io->closing;
          };
          io->mu.Await(absl::Condition(&room));
          ++io->returning;
        }
        uint64_t id = e.id();
        returned->Returned(std::move(e), [io, id, name](absl::Status s) {
          absl::MutexLock lock(&io->mu);
          --io->returning;
          // A refused event is acknowledged too: it can never be stored,
          // and resending it forever would block the ones behind it.
          if (!s.ok() && !absl::IsInvalidArgument(s)) return;
          if (!s.ok())
            Log(absl::StrCat("returned event ", id, " dropped: ", s.ToString()),
                {{"peer", name}}, log::Level::kWarning);
          io->event_acks.push_back(id);
        });
      }
      if (response.has_announce()) {
        if (absl::Status s =
                exchange_->LearnDirectory(name, response.announce());
            !s.ok())
          Log(s.message(), {{"peer", name}}, log::Level::kWarning);
        LearnIncidents(options_.incidents, name, response.announce());
      }
      response.Clear();
    }
    absl::MutexLock lock(&io->mu);
    io->ended = true;
  });

  // Attachments the peer has confirmed complete on this link, and when: its
  // right to use one lasts the peer's usable_for (assumed ours), so one
  // pushed half of that ago is pushed again.
  std::map<std::string, absl::Time> pushed;
  absl::Time next_announce = absl::Now();
  // What the directory looked like at the last announce; a change is
  // announced within kDirectoryCheck instead of the interval.
  uint64_t announced_generation =
      AnnounceGeneration(*exchange_, options_.incidents);
  absl::Status ended_by;
  for (;;) {
    v1::LinkRequest request;
    std::vector<std::string> to_push;
    {
      absl::MutexLock lock(&io->mu);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io->mu) {
        return io->ended || !io->transfers.empty() || !io->event_acks.empty() ||
               absl::Now() >= next_announce;
      };
      absl::Time wake = std::min(next_announce, absl::Now() + kDirectoryCheck);
      if (io->written > io->answered)
        wake = std::min(wake, io->progress + kCustodyTimeout);
      io->mu.AwaitWithDeadline(absl::Condition(&ready), wake);
      if (io->ended) break;
      if (io->written > io->answered &&
          absl::Now() - io->progress >= kCustodyTimeout) {
        ended_by = absl::DeadlineExceededError(absl::StrCat(
            "no custody answer for ", absl::FormatDuration(kCustodyTimeout),
            " with ", io->written - io->answered,
            " transfers outstanding; reconnecting"));
        break;
      }
      if (io->written == io->answered) io->progress = absl::Now();
      // A transfer's stored attachments go before it (the peer takes it
      // only once it holds them): the batch stops at the first transfer
      // with one not pushed on this link yet; they are pushed after it.
      size_t bytes = 0;
      while (!io->transfers.empty() &&
             static_cast<size_t>(request.transfers_size()) <
                 kMaxTransfersPerMessage) {
        if (options_.attachments != nullptr) {
          to_push = Unpushed(
              io->transfers.front(), pushed,
              absl::Now() - options_.attachments->options().usable_for / 2);
          if (!to_push.empty()) break;
        }
        // A transfer that would take the message past the limit goes in
        // the next one (alone if it must): the peer's limit on what it
        // receives is one document and some room, not several.
        const size_t next = io->transfers.front().ByteSizeLong();
        if (request.transfers_size() > 0 && bytes + next > kMaxBytesPerMessage)
          break;
        bytes += next;
        *request.add_transfers() = std::move(io->transfers.front());
        io->transfers.pop_front();
      }
      io->written += request.transfers_size();
      // At most what the peer takes in one message; the rest goes next.
      const size_t acks =
          std::min(io->event_acks.size(), kMaxEventAcksPerMessage);
      for (size_t i = 0; i < acks; ++i)
        request.add_event_acks(io->event_acks[i]);
      io->event_acks.erase(io->event_acks.begin(),
                           io->event_acks.begin() + acks);
    }
    const uint64_t generation =
        AnnounceGeneration(*exchange_, options_.incidents);
    if (absl::Now() >= next_announce || generation != announced_generation) {
      announced_generation = generation;
      *request.mutable_announce() =
          WithIncidents(exchange_->AnnounceTo(name), options_.incidents);
      next_announce = absl::Now() + options_.announce_interval;
    }
    if ((request.transfers_size() > 0 || request.event_acks_size() > 0 ||
         request.has_announce()) &&
        !stream->Write(request))
      break;
    if (!to_push.empty()) {
      for (const std::string& sha256 : to_push) {
        bool local_loss = false;
        absl::Status s = PushAttachment(*options_.attachments, *peer->channel,
                                        sha256, &local_loss);
        if (local_loss) {
          // This broker lost its copy: no retry can send it. The copies of
          // the documents that need it are DENIED with the reason (their
          // senders see it), and the link goes on with the others.
          std::vector<v1::Custody> refused;
          {
            absl::MutexLock lock(&io->mu);
            for (auto it = io->transfers.begin(); it != io->transfers.end();) {
              if (!Needs(*it, sha256)) {
                ++it;
                continue;
              }
              v1::Custody c;
              c.set_id(it->id());
              c.mutable_error()->set_code(
                  static_cast<int>(absl::StatusCode::kDataLoss));
              c.set_local(true);
              c.mutable_error()->set_message(absl::StrCat(
                  "lost at broker ", options_.broker_id, ": attachment ",
                  sha256, " of this document (", s.message(),
                  "); it cannot be handed to ", name));
              refused.push_back(std::move(c));
              it = io->transfers.erase(it);
            }
          }
          Log(absl::StrCat("attachment ", sha256, " is lost here (",
                           s.ToString(), "): ", refused.size(),
                           " transfer(s) to ", name, " refused"),
              {{"peer", name}}, log::Level::kError);
          (*session)->Custody(std::move(refused));
          continue;
        }
        if (!s.ok()) {
          // The link starts over (with backoff); the push resumes where the
          // peer stands.
          ended_by = absl::UnavailableError(absl::StrCat(
              "pushing attachment ", sha256, " to ", name, ": ", s.ToString()));
          break;
        }
        pushed[sha256] = absl::Now();
      }
      if (!ended_by.ok()) break;
    }
  }
  // Whatever was sent without custody goes out again on the next link.
  (*session)->Close();
  bool reader_ended;
  {
    absl::MutexLock lock(&io->mu);
    reader_ended = io->ended;
  }
  // A stream the peer ended has its own status; one we end is cancelled.
  if (!reader_ended) ctx.TryCancel();
  {
    absl::MutexLock lock(&io->mu);
    io->closing = true;  // a reader waiting for room stops waiting
  }
  reader.join();
  grpc::Status status = stream->Finish();
  forget_context();
  if (!ended_by.ok()) return ended_by;
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace lienthong::broker
