// Broker-to-broker links. A broker that has documents for a peer dials it
// (PeerLinks) and keeps one FederationService.Link stream open: transfers go
// out on it, custody acknowledgements and the status events of what it
// handed over come back. The peer serves the stream (FederationServiceImpl).
// Both ends authenticate each other by broker certificate and exchange
// directory announcements.
//
//   FederationServiceImpl federation(exchange.get(), "lienthong.local", 512);
//   builder.RegisterService(&federation);
//   PeerLinks links(exchange.get(), link_options,
//                   {{"central", "10.0.0.1:7443"}});
//   links.Start();
//   ...
//   links.Stop();
//   federation.Shutdown();
#ifndef LIENTHONG_BROKER_FEDERATION_H_
#define LIENTHONG_BROKER_FEDERATION_H_

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "lienthong/broker/exchange.h"
#include "lienthong/broker/incidents.h"
#include "lienthong/v1/federation.grpc.pb.h"

namespace lienthong::broker {

class StreamRegistry;

class FederationServiceImpl final
    : public v1::FederationService::CallbackService {
 public:
  // `exchange` is not owned and must outlive the server. `window`: status
  // events sent back and not yet acknowledged, per link.
  // `incidents` (optional, not owned): incidents are announced to peers
  // and learned from them on the links' announcements.
  FederationServiceImpl(Exchange* exchange, std::string trust_domain,
                        uint32_t window, Incidents* incidents = nullptr);
  ~FederationServiceImpl() override;

  // Ends every open link with UNAVAILABLE (peers reconnect elsewhere or
  // later). Call before grpc::Server::Shutdown.
  void Shutdown();

  grpc::ServerBidiReactor<v1::LinkRequest, v1::LinkResponse>* Link(
      grpc::CallbackServerContext* ctx) override;

 private:
  Exchange* const exchange_;
  Incidents* const incidents_;
  const std::string trust_domain_;
  const uint32_t window_;
  std::unique_ptr<StreamRegistry> registry_;
};

struct PeerLinkOptions {
  std::string trust_domain;
  // This broker's SPIFFE id, for what it reports itself.
  std::string broker_id;
  // This broker's certificate, key and trust root (re-read every
  // `certificate_refresh`, so rotated files apply to new connections).
  std::string certificate_file;
  std::string private_key_file;
  std::string ca_file;
  absl::Duration certificate_refresh = absl::Seconds(60);
  // OpenSSL hashed directory of CRLs the peer brokers' certificates are
  // checked against; empty: no revocation checking. Default empty.
  std::string crl_directory;
  // Transfers in flight (sent, no custody yet) per link.
  uint32_t window = 4096;
  // Where stored attachments are: those of a transfer are pushed to the peer
  // (AttachmentService/Upload) before it. Not owned. Unset: transfers with
  // stored attachments wait (the peer refuses them as incomplete).
  storage::AttachmentStore* attachments = nullptr;
  // Incidents declared here go out with the announcements (at once when one
  // is declared or resolved); those peers announce are learned. Not owned.
  // Optional.
  Incidents* incidents = nullptr;
  // How often the directory is announced on an open link.
  absl::Duration announce_interval = absl::Seconds(30);
  // Reconnect backoff: doubles from min to max, with ±50 % jitter; back to
  // min after a link that stayed up for a while.
  absl::Duration reconnect_min = absl::Milliseconds(200);
  absl::Duration reconnect_max = absl::Seconds(30);
};

struct PeerEndpoint {
  std::string name;      // broker name
  std::string endpoint;  // host:port
};

// What an operator sees of one outgoing link.
struct PeerLinkState {
  std::string peer;
  std::string endpoint;
  bool up = false;
  std::optional<absl::Time> since;  // when it came up or went down
  uint64_t connects = 0;            // successful connections so far
  std::string last_error;
};

// Keeps one outgoing link open to every peer, reconnecting with backoff and
// jitter; what the outbox holds goes out in order when a link returns.
class PeerLinks {
 public:
  PeerLinks(Exchange* exchange, PeerLinkOptions options,
            std::vector<PeerEndpoint> peers);
  ~PeerLinks();  // Stop()

  void Start();
  // Ends every link and joins its thread. Idempotent.
  void Stop();

  std::vector<PeerLinkState> States();

 private:
  struct Peer;
  void Run(Peer* peer);
  absl::Status RunOnce(Peer* peer);

  Exchange* const exchange_;
  const PeerLinkOptions options_;
  std::vector<std::unique_ptr<Peer>> peers_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_FEDERATION_H_
