// lienthongd: one Liên Thông broker. Mutual TLS on its only port; documents
// in RocksDB; see README.md for the configuration reference.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "broker/server/src/config.h"
#include "broker/server/src/metrics_page.h"
#include "broker/server/src/metrics_server.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "lienthong/broker/admin_service.h"
#include "lienthong/broker/approval_service.h"
#include "lienthong/broker/attachment_service.h"
#include "lienthong/broker/bulk_listener.h"
#include "lienthong/broker/exchange.h"
#include "lienthong/broker/federation.h"
#include "lienthong/broker/incident_service.h"
#include "lienthong/broker/incidents.h"
#include "lienthong/broker/service.h"
#include "lienthong/common/certificate.h"
#include "lienthong/common/log.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/policy/policy.h"
#include "lienthong/storage/attachments.h"
#include "lienthong/storage/store.h"

namespace lienthong::server {
namespace {

void Log(absl::string_view message) {
  log::Write(log::Level::kInfo, "", message);
}

void LogError(absl::string_view message) {
  log::Write(log::Level::kError, "", message);
}

// Checks the TLS files before serving: a broker that starts with a wrong
// certificate would only fail later, at every handshake.
absl::Status CheckTlsFiles(const BrokerConfig& config) {
  ASSIGN_OR_RETURN(CertificateInfo cert,
                   ReadCertificateFile(config.tls.certificate));
  if (cert.principal.spiffe_id != config.SpiffeId()) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.tls.certificate, ": certificate identity ",
        cert.principal.spiffe_id, " is not this broker's ", config.SpiffeId(),
        " (check broker.name and broker.trust_domain)"));
  }
  if (cert.not_after < absl::Now()) {
    return absl::FailedPreconditionError(
        absl::StrCat(config.tls.certificate, ": certificate expired at ",
                     absl::FormatTime(cert.not_after, absl::UTCTimeZone())));
  }
  RETURN_IF_ERROR(CheckPrivateKeyFile(config.tls.private_key));
  if (!std::filesystem::exists(config.tls.ca)) {
    return absl::NotFoundError(
        absl::StrCat(config.tls.ca, ": cannot read the trust root"));
  }
  if (!config.tls.crl_directory.empty()) {
    absl::StatusOr<CrlDirectoryInfo> crls =
        CheckCrlDirectory(config.tls.crl_directory, config.tls.ca);
    if (!crls.ok()) {
      return absl::Status(
          crls.status().code(),
          absl::StrCat("tls.crl_directory: ", crls.status().message()));
    }
    Log(absl::StrCat("tls: revocation checked against ",
                     config.tls.crl_directory, " (", crls->crl_files,
                     " CRL files; newest ", crls->newest_file, " lists ",
                     crls->revoked, " revoked certificates; next update ",
                     absl::FormatTime(absl::RFC3339_sec, crls->next_update,
                                      absl::UTCTimeZone()),
                     ")"));
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(
    const BrokerConfig& config) {
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          config.tls.private_key, config.tls.certificate, config.tls.ca,
          absl::ToInt64Seconds(config.tls.refresh));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_cert_request_type(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  // gRPC's OpenSSL checks every caller's chain against the CRLs here; see
  // deploy/DEPLOYMENT.md for when a new CRL file is read.
  if (!config.tls.crl_directory.empty())
    options.set_crl_directory(config.tls.crl_directory);
  return grpc::experimental::TlsServerCredentials(options);
}

int Serve(const BrokerConfig& config) {
  if (absl::Status s = CheckTlsFiles(config); !s.ok()) {
    LogError(absl::StrCat("", s.ToString()));
    return 1;
  }
  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  storage::RocksDbOptions storage_options = config.ToStorageOptions();
  {
    absl::StatusOr<storage::EncryptionOptions> keys = config.ReadStorageKeys();
    if (!keys.ok()) {
      LogError(std::string(keys.status().message()));
      return 1;
    }
    if (keys->master_key.empty()) {
      log::Write(log::Level::kWarning, "",
                 "storage.master_key_file is not set: documents are stored "
                 "unencrypted at rest");
    }
    storage_options.encryption = *std::move(keys);
  }
  absl::StatusOr<std::unique_ptr<storage::Store>> store =
      storage::OpenRocksDbStore(storage_options);
  if (!store.ok()) {
    LogError(absl::StrCat("", store.status().ToString()));
    return 1;
  }
  // The audit log, its checkpoints signed with the broker's TLS key.
  std::unique_ptr<broker::AuditLog> audit_log;
  {
    std::ifstream cert_in(config.tls.certificate),
        key_in(config.tls.private_key), ca_in(config.tls.ca);
    std::stringstream cert_pem, key_pem, ca_pem;
    cert_pem << cert_in.rdbuf();
    key_pem << key_in.rdbuf();
    ca_pem << ca_in.rdbuf();
    absl::StatusOr<std::unique_ptr<audit::CheckpointSigner>> signer =
        audit::CheckpointSigner::FromPem(cert_pem.str(), key_pem.str());
    if (!signer.ok()) {
      LogError(absl::StrCat(config.tls.private_key, ": ",
                            signer.status().message()));
      return 1;
    }
    broker::AuditOptions audit_options;
    audit_options.broker_id = config.SpiffeId();
    audit_options.signer = std::move(signer).value();
    audit_options.trust_root_pem = ca_pem.str();
    audit_options.checkpoint_every = config.audit.checkpoint_every;
    audit_options.checkpoint_interval =
        absl::Seconds(config.audit.checkpoint_seconds);
    absl::StatusOr<std::unique_ptr<broker::AuditLog>> opened =
        broker::AuditLog::Open(audit_options, store->get());
    if (!opened.ok()) {
      LogError(absl::StrCat("audit: ", opened.status().message()));
      return 1;
    }
    audit_log = std::move(opened).value();
    broker::SetAuthenticationAudit(audit_log.get());
  }
  policy::ServedPolicyOptions policy_options = config.ToPolicyOptions();
  policy_options.log = [](absl::string_view line) {
    log::Write(log::Level::kWarning, "policy", line);
  };
  // A policy file edited on disk changes what the broker permits as much as
  // ApplyPolicy does: the swap goes into the audit log too, and so does the
  // policy served at start. (The policy is destroyed before the audit log.)
  auto audit_policy = [audit = audit_log.get(), &config](
                          const policy::Policy& serving,
                          absl::string_view action, absl::string_view detail) {
    v1::AuditEntry e;
    e.set_kind(v1::AUDIT_KIND_POLICY_CHANGE);
    e.set_actor(config.SpiffeId());
    e.set_action(std::string(action));
    e.set_outcome("OK");
    e.set_detail(absl::StrCat(detail, "policy ", serving.version(), " (",
                              serving.rule_count(), " rules) from ",
                              config.policy.path.empty()
                                  ? "the embedded default"
                                  : config.policy.path));
    audit->Append(std::move(e));
  };
  policy_options.on_file_reload = [audit_policy](const policy::Policy& serving,
                                                 const std::string& before) {
    audit_policy(
        serving, "PolicyFile/Reload",
        absl::StrCat("the file was edited: ", before, " replaced by "));
  };
  absl::StatusOr<std::unique_ptr<policy::ServedPolicy>> served_policy =
      policy::ServedPolicy::Open(policy_options);
  if (!served_policy.ok()) {
    LogError(absl::StrCat("policy: ", served_policy.status().message()));
    return 1;
  }
  audit_policy(*(*served_policy)->Current(), "PolicyFile/Load",
               "serving at start: ");
  absl::StatusOr<std::unique_ptr<storage::AttachmentStore>> attachments =
      storage::AttachmentStore::Open(config.ToAttachmentOptions(),
                                     store->get());
  if (!attachments.ok()) {
    LogError(absl::StrCat("attachments: ", attachments.status().message()));
    return 1;
  }
  broker::ExchangeOptions exchange_options = config.ToExchangeOptions();
  exchange_options.policy = served_policy->get();
  exchange_options.attachments = attachments->get();
  exchange_options.audit = audit_log.get();
  // The trust root is read at each publish, so a rotated CA file applies
  // without a restart (publishing is rare).
  exchange_options.verify_encryption_certificate =
      [ca = config.tls.ca,
       trust_domain = config.trust_domain](absl::string_view certificate)
      -> absl::StatusOr<sealing::EncryptionCertificate> {
    absl::StatusOr<std::string> pem = ReadPemFile(ca);
    if (!pem.ok()) {
      return absl::UnavailableError(
          absl::StrCat(ca, ": cannot read the trust root"));
    }
    return sealing::VerifyEncryptionCertificate(certificate, *pem, trust_domain,
                                                absl::Now());
  };
  // Senders' signatures are checked against the trust root (and the CRL
  // directory); receipts and evidence are signed with the broker's key.
  std::shared_ptr<const signing::Signer> broker_signer;
  {
    absl::StatusOr<std::unique_ptr<signing::Signer>> signer =
        signing::Signer::FromFiles(config.tls.certificate,
                                   config.tls.private_key);
    if (!signer.ok()) {
      LogError(absl::StrCat("tls: ", signer.status().message()));
      return 1;
    }
    broker_signer = std::move(signer).value();
    signing::VerifierOptions verifier_options;
    absl::StatusOr<std::string> ca = ReadPemFile(config.tls.ca);
    if (!ca.ok()) {
      LogError(absl::StrCat("tls.ca: ", ca.status().message()));
      return 1;
    }
    verifier_options.trust_root_pem = *std::move(ca);
    verifier_options.trust_domain = config.trust_domain;
    verifier_options.crl_directory = config.tls.crl_directory;
    absl::StatusOr<std::unique_ptr<signing::SignatureVerifier>> verifier =
        signing::SignatureVerifier::Create(std::move(verifier_options));
    if (!verifier.ok()) {
      LogError(absl::StrCat("tls.ca: ", verifier.status().message()));
      return 1;
    }
    exchange_options.signatures = std::move(verifier).value();
  }
  if (!config.security.require_signatures) {
    log::Write(log::Level::kWarning, "",
               "security.require_signatures is false: unsigned documents are "
               "accepted");
  }
  // Incidents and the paper register: re-digitized sends settle their
  // entries, new receive streams hear of open incidents.
  broker::IncidentOptions incident_options;
  incident_options.broker_id = config.SpiffeId();
  incident_options.local_orgs = exchange_options.local_orgs;
  for (const PeerConfig& peer : config.peers)
    incident_options.peers.push_back(peer.route.name);
  incident_options.audit = audit_log.get();
  absl::StatusOr<std::unique_ptr<broker::Incidents>> incidents =
      broker::Incidents::Open(incident_options, store->get());
  if (!incidents.ok()) {
    LogError(absl::StrCat("incidents: ", incidents.status().ToString()));
    return 1;
  }
  exchange_options.admission = incidents->get();
  exchange_options.notices_on_connect =
      [i = incidents->get()](const std::string& org) {
        return i->OpenNotices(org);
      };
  absl::StatusOr<std::unique_ptr<broker::Exchange>> exchange =
      broker::Exchange::Open(exchange_options, store->get());
  if (!exchange.ok()) {
    LogError(absl::StrCat("", exchange.status().ToString()));
    return 1;
  }
  (*incidents)
      ->SetNoticeSink(
          [e = exchange->get()](const std::string& org, const v1::Notice& n) {
            return e->Notify(org, n);
          });
  broker::ExchangeServiceImpl exchange_service(
      exchange->get(), config.trust_domain, broker_signer);
  broker::HealthServiceImpl health;
  broker::FederationServiceImpl federation_service(
      exchange->get(), config.trust_domain, config.federation.window,
      incidents->get());
  broker::PeerLinkOptions link_options;
  link_options.trust_domain = config.trust_domain;
  link_options.broker_id = config.SpiffeId();
  link_options.certificate_file = config.tls.certificate;
  link_options.private_key_file = config.tls.private_key;
  link_options.ca_file = config.tls.ca;
  link_options.certificate_refresh = config.tls.refresh;
  link_options.crl_directory = config.tls.crl_directory;
  link_options.window = config.federation.window;
  link_options.announce_interval = config.federation.announce_interval;
  link_options.reconnect_min = config.federation.reconnect_min;
  link_options.reconnect_max = config.federation.reconnect_max;
  link_options.attachments = attachments->get();
  link_options.incidents = incidents->get();
  std::set<std::string> peer_names;
  for (const PeerConfig& peer : config.peers)
    peer_names.insert(peer.route.name);
  broker::AttachmentServiceImpl attachment_service(
      exchange->get(), attachments->get(), config.trust_domain, peer_names,
      audit_log.get(), config.attachments.max_transfer_calls);
  std::vector<broker::PeerEndpoint> peer_endpoints;
  for (const PeerConfig& peer : config.peers)
    peer_endpoints.push_back({peer.route.name, peer.endpoint});
  broker::PeerLinks links(exchange->get(), std::move(link_options),
                          std::move(peer_endpoints));
  broker::AdminOptions admin_options;
  admin_options.broker_id = config.SpiffeId();
  admin_options.version = LIENTHONG_VERSION;
  admin_options.operators = config.PersonIds(config.roles.operators);
  admin_options.auditors = config.PersonIds(config.roles.auditors);
  admin_options.policy = served_policy->get();
  admin_options.exchange = exchange->get();
  admin_options.store = store->get();
  admin_options.read_storage_keys = [&config] {
    return config.ReadStorageKeys();
  };
  admin_options.audit = audit_log.get();
  admin_options.signer = broker_signer;
  admin_options.config_sha256 = config.source_sha256;
  admin_options.links = &links;
  admin_options.incidents = incidents->get();
  if (absl::Status s = admin_options.Validate(); !s.ok()) {
    LogError(absl::StrCat("roles: ", s.message()));
    return 1;
  }
  std::vector<std::string> approval_readers =
      config.PersonIds(config.roles.operators);
  for (std::string& id : config.PersonIds(config.roles.auditors))
    approval_readers.push_back(std::move(id));
  broker::ApprovalServiceImpl approval_service(
      exchange->get(), config.trust_domain, std::move(approval_readers),
      audit_log.get());
  broker::IncidentServiceOptions incident_service_options;
  incident_service_options.trust_domain = config.trust_domain;
  incident_service_options.operators = admin_options.operators;
  incident_service_options.auditors = admin_options.auditors;
  incident_service_options.incidents = incidents->get();
  incident_service_options.audit = audit_log.get();
  broker::AdminServiceImpl admin_service(std::move(admin_options));
  broker::IncidentServiceImpl incident_service(
      std::move(incident_service_options));

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config.listen, ServerCredentials(config), &port);
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(config.max_document_bytes + (1 << 20)));
  builder.SetMaxSendMessageSize(
      static_cast<int>(config.max_document_bytes * 2 + (8 << 20)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // The broker pings a connection quiet for 30 s and drops it when no answer
  // comes within 10 s: the calls of a client whose machine or network went
  // away end in under a minute, instead of holding what they hold (an
  // upload's place, a receive session's documents) until the connection's
  // maximum age.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  // gRPC 1.51 sends at most two pings without data in between unless told
  // otherwise: keep pinging a quiet connection for as long as it lasts.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // A fixed receive window per stream instead of gRPC's BDP probing, which
  // on a fast link lets a client push hundreds of MiB of attachment chunks
  // into the broker's memory ahead of the disk (see
  // limits.stream_window_bytes).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
                             static_cast<int>(config.stream_window_bytes));
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  if (config.tls.max_connection_age > absl::ZeroDuration()) {
    // A connection this old gets GOAWAY (gRPC adds up to +-10 % jitter) and
    // is closed after the grace, ending the calls still open on it: a peer
    // whose certificate has been revoked since must handshake again.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(absl::ToInt64Milliseconds(
                                   config.tls.max_connection_age)));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(absl::ToInt64Milliseconds(
                                   config.tls.max_connection_age_grace)));
  }
  builder.RegisterService(&exchange_service);
  builder.RegisterService(&health);
  builder.RegisterService(&admin_service);
  builder.RegisterService(&federation_service);
  builder.RegisterService(&attachment_service);
  builder.RegisterService(&approval_service);
  builder.RegisterService(&incident_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    LogError(absl::StrCat("cannot listen on ", config.listen));
    return 1;
  }
  std::string host = config.listen.substr(0, config.listen.rfind(':'));
  broker::ExchangeStats stats = (*exchange)->Stats();
  std::shared_ptr<const policy::Policy> serving = (*served_policy)->Current();
  Log(absl::StrCat(
      "broker ", config.SpiffeId(), " serving ", config.orgs.size(),
      " orgs; data in ", config.data_dir, "; ", stats.queued,
      " deliveries waiting from before; policy ", serving->version(), " (",
      serving->rule_count(), " rules) from ",
      config.policy.path.empty() ? "the embedded development policy"
                                 : config.policy.path));
  if (!config.peers.empty()) {
    std::string names;
    for (const PeerConfig& peer : config.peers)
      absl::StrAppend(&names, names.empty() ? "" : ", ", peer.route.name, " (",
                      peer.endpoint, peer.route.is_default ? ", default" : "",
                      ")");
    Log(absl::StrCat("federation: peers ", names));
  }
  for (const broker::PeerQueueStats& q : (*exchange)->PeerStats()) {
    if (q.configured) continue;
    log::Write(log::Level::kWarning, "federation",
               absl::StrCat(q.outbox, " transfers and ", q.returns,
                            " status events wait for broker ", q.peer,
                            ", which is no longer a configured peer; they "
                            "stay stored until it is configured again"),
               {{"peer", q.peer}});
  }
  links.Start();
  // Unreferenced attachments and stale uploads go now and then.
  absl::Notification stop_collecting;
  std::thread collector([&] {
    const absl::Duration every = absl::Minutes(config.attachments.gc_minutes);
    do {
      absl::StatusOr<storage::AttachmentCollection> c =
          (*attachments)->CollectGarbage();
      if (!c.ok()) {
        log::Write(log::Level::kError, "attachments",
                   absl::StrCat("collection failed: ", c.status().ToString()));
      } else if (c->attachments_removed + c->partial_uploads_removed > 0) {
        log::Write(log::Level::kInfo, "attachments",
                   absl::StrCat("collected ", c->attachments_removed,
                                " unreferenced attachments and ",
                                c->partial_uploads_removed,
                                " abandoned uploads: ", c->bytes_freed,
                                " bytes freed"));
      }
    } while (!stop_collecting.WaitForNotificationWithTimeout(every));
  });
  std::unique_ptr<MetricsServer> metrics;
  if (!config.metrics.listen.empty() && config.metrics.listen != "off") {
    MetricsSources sources;
    sources.exchange = exchange->get();
    sources.store = store->get();
    sources.links = &links;
    sources.attachments = attachments->get();
    sources.attachment_metrics = &attachment_service.metrics();
    sources.incidents = incidents->get();
    sources.policy = served_policy->get();
    sources.certificate_file = config.tls.certificate;
    sources.started_at = absl::Now();
    absl::StatusOr<std::unique_ptr<MetricsServer>> started =
        MetricsServer::Start(config.metrics.listen,
                             [sources] { return RenderMetrics(sources); });
    if (started.ok()) {
      metrics = *std::move(started);
      std::string mhost =
          config.metrics.listen.substr(0, config.metrics.listen.rfind(':'));
      Log(absl::StrCat("metrics on http://", mhost, ":", metrics->port(),
                       "/metrics"));
    } else if (config.metrics.configured) {
      LogError(absl::StrCat("", started.status().message()));
      links.Stop();
      stop_collecting.Notify();
      collector.join();
      server->Shutdown();
      return 1;
    } else {
      log::Write(log::Level::kWarning, "",
                 absl::StrCat("no /metrics: ", started.status().message(),
                              " (set metrics.listen, or off)"));
    }
  }
  std::unique_ptr<broker::BulkListener> bulk;
  if (!config.attachments.bulk_listen.empty()) {
    broker::BulkListenerOptions b;
    b.address = config.attachments.bulk_listen;
    b.certificate = config.tls.certificate;
    b.private_key = config.tls.private_key;
    b.ca = config.tls.ca;
    b.crl_directory = config.tls.crl_directory;
    b.trust_domain = config.trust_domain;
    b.max_connections =
        std::min(2 * config.attachments.max_transfer_calls, 1024);
    if (config.tls.max_connection_age > absl::ZeroDuration()) {
      b.max_age =
          config.tls.max_connection_age + config.tls.max_connection_age_grace;
    }
    absl::StatusOr<std::unique_ptr<broker::BulkListener>> started =
        broker::BulkListener::Start(std::move(b), &attachment_service);
    if (!started.ok()) {
      LogError(std::string(started.status().message()));
      metrics.reset();
      links.Stop();
      stop_collecting.Notify();
      collector.join();
      server->Shutdown();
      return 1;
    }
    bulk = *std::move(started);
    // Before the line below: whoever waits for it may read this one.
    std::cout << "lienthongd bulk path on " << bulk->address() << std::endl;
  }
  // The line tests and scripts wait for.
  std::cout << "lienthongd listening on " << host << ":" << port << std::endl;

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int signal = 0;
  sigwait(&signals, &signal);
  Log(absl::StrCat("signal ", signal, ": shutting down"));
  health.SetNotServing();
  metrics.reset();
  links.Stop();
  (*exchange)->Shutdown();
  exchange_service.Shutdown();
  federation_service.Shutdown();
  attachment_service.Shutdown();
  if (bulk) bulk->Stop();
  stop_collecting.Notify();
  collector.join();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  (*incidents)->SetNoticeSink(nullptr);  // the exchange goes now
  exchange->reset();
  incidents->reset();  // waits for its writes; before the audit log
  broker::SetAuthenticationAudit(nullptr);
  served_policy->reset();  // its watcher may still write to the audit log
  audit_log.reset();       // its closing checkpoint, before the store closes
  attachments->reset();
  store->reset();
  Log("stopped");
  return 0;
}

}  // namespace
}  // namespace lienthong::server

int main(int argc, char** argv) {
  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // Debian's Abseil is built with deadlock detection on: a graph update on
  // every lock, measurable at tens of thousands of documents per second.
  // The test builds keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  CLI::App app{"lienthongd: a Liên Thông document broker (mutual TLS only)"};
  std::string config_file, check_file, listen, data_dir, pki, policy_file;
  app.add_option("--config", config_file,
                 "YAML configuration; embedded defaults without it");
  app.add_option("--check-config", check_file,
                 "validate a configuration file and exit");
  app.add_option("--listen", listen,
                 "override listen (host:port; port 0 picks one)");
  app.add_option("--data-dir", data_dir, "override data_dir");
  std::string bulk_listen;
  app.add_option("--bulk-listen", bulk_listen,
                 "override attachments.bulk_listen (host:port, port 0 picks "
                 "one; off)");
  app.add_option("--policy", policy_file, "override policy.file");
  std::string log_format, log_level;
  app.add_option("--log-format", log_format,
                 "override log.format (json, text)");
  app.add_option("--log-level", log_level,
                 "override log.level (debug, info, warning, error)");
  std::string metrics_listen;
  app.add_option("--metrics-listen", metrics_listen,
                 "override metrics.listen (host:port, port 0 picks one; off)");
  app.add_option("--pki", pki,
                 "take tls.* from a development PKI directory made by "
                 "deploy/pki/make-dev-pki.sh "
                 "(ca.pem, brokers/<name>.pem/.key)");
  CLI11_PARSE(app, argc, argv);

  using lienthong::server::BrokerConfig;
  if (!check_file.empty()) {
    absl::StatusOr<BrokerConfig> c =
        lienthong::server::LoadConfigFile(check_file);
    if (!c.ok()) {
      std::cerr << "lienthongd: " << c.status().message() << std::endl;
      return 2;
    }
    lienthong::policy::ServedPolicyOptions po = c->ToPolicyOptions();
    po.reload_interval = absl::ZeroDuration();  // load once, do not watch
    absl::StatusOr<std::unique_ptr<lienthong::policy::ServedPolicy>> served =
        lienthong::policy::ServedPolicy::Open(po);
    if (!served.ok()) {
      std::cerr << "lienthongd: policy: " << served.status().message()
                << std::endl;
      return 2;
    }
    std::shared_ptr<const lienthong::policy::Policy> p = (*served)->Current();
    std::cout << check_file << ": OK (" << c->SpiffeId() << ", "
              << c->orgs.size() << " orgs, " << c->peers.size()
              << " peers, policy " << p->version() << " " << p->rule_count()
              << " rules)" << std::endl;
    return 0;
  }
  BrokerConfig config;
  if (!config_file.empty()) {
    absl::StatusOr<BrokerConfig> c =
        lienthong::server::LoadConfigFile(config_file);
    if (!c.ok()) {
      std::cerr << "lienthongd: " << c.status().message() << std::endl;
      return 2;
    }
    config = *std::move(c);
  }
  if (!listen.empty()) config.listen = listen;
  if (!bulk_listen.empty())
    config.attachments.bulk_listen = bulk_listen == "off" ? "" : bulk_listen;
  if (!data_dir.empty()) config.data_dir = data_dir;
  if (!policy_file.empty()) config.policy.path = policy_file;
  if (!log_format.empty()) config.log.format = log_format;
  if (!log_level.empty()) config.log.level = log_level;
  if (!metrics_listen.empty()) {
    config.metrics.listen = metrics_listen;
    config.metrics.configured = true;
  }
  if (!pki.empty()) {
    config.tls.ca = pki + "/ca.pem";
    config.tls.certificate = pki + "/brokers/" + config.name + ".pem";
    config.tls.private_key = pki + "/brokers/" + config.name + ".key";
  }
  if (absl::Status s = config.Validate(); !s.ok()) {
    std::cerr << "lienthongd: " << s.message() << std::endl;
    return 2;
  }
  lienthong::log::SetFormat(*lienthong::log::ParseFormat(config.log.format));
  lienthong::log::SetLevel(*lienthong::log::ParseLevel(config.log.level));
  return lienthong::server::Serve(config);
}
