// lienthongd's configuration: YAML on disk, embedded defaults otherwise.
#ifndef LIENTHONG_BROKER_SERVER_SRC_CONFIG_H_
#define LIENTHONG_BROKER_SERVER_SRC_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lienthong/broker/exchange.h"
#include "lienthong/policy/policy.h"
#include "lienthong/storage/attachments.h"
#include "lienthong/storage/store.h"

namespace lienthong::server {

struct OrgConfig {
  std::string code;
  std::string name;
};

struct TlsConfig {
  std::string certificate = "pki/brokers/central.pem";
  std::string private_key = "pki/brokers/central.key";
  std::string ca = "pki/ca.pem";
  absl::Duration refresh = absl::Seconds(60);
  // OpenSSL hashed directory of CRLs (<issuer hash>.r0, .r1, ...) checked on
  // every handshake, of callers and of dialled peers. Empty: no revocation
  // checking. When set it must hold a CRL of the trust root.
  std::string crl_directory;
  // A connection older than this is sent GOAWAY and closed after the grace,
  // so a peer whose certificate was revoked since it connected must
  // handshake again. Zero: no maximum age.
  absl::Duration max_connection_age = absl::Seconds(3600);
  absl::Duration max_connection_age_grace = absl::Seconds(30);
};

// Who may use the AdminService: person names in the broker's trust domain
// (spiffe://<trust_domain>/person/<name>). The defaults are the development
// PKI's people and apply only to the embedded demo setup: a configuration
// that lists its own orgs grants no role it does not name.
struct RolesConfig {
  std::vector<std::string> operators = {"operator"};
  std::vector<std::string> auditors = {"auditor"};
};

// Who may approve documents held for approval (see approvals.proto), and
// for how long a held document waits. The default names the development
// PKI's "approver" for every embedded demo org and applies only to the
// embedded demo setup, like RolesConfig.
struct ApproverConfig {
  std::string person;  // a person name, like roles
  std::string role = "approver";
  std::vector<std::string> orgs;
};
struct ApprovalsConfig {
  int64_t expire_seconds = 72 * 3600;
  std::vector<ApproverConfig> approvers;
};

struct PolicyConfig {
  // Policy file. Empty: the embedded development policy, which is written
  // for the embedded demo orgs; a configuration that lists its own orgs must
  // name a policy file.
  std::string path;
  absl::Duration reload_interval = absl::Seconds(2);
  size_t decision_log_size = 10000;
};

// A peer broker: where to dial it and which recipients the route table
// sends to it.
struct PeerConfig {
  broker::PeerRoute route;  // name, serves (orgs/under/provinces), default
  std::string endpoint;     // host:port of its listener
};

struct FederationConfig {
  uint32_t max_hops = 8;
  absl::Duration announce_interval = absl::Seconds(30);
  uint32_t window = 4096;  // transfers in flight per link (and at most 64 MiB)
  absl::Duration reconnect_min = absl::Milliseconds(200);
  absl::Duration reconnect_max = absl::Seconds(30);
};

struct MetricsConfig {
  // host:port of the /metrics HTTP endpoint; "off" or "" disables it.
  std::string listen = "127.0.0.1:9464";
  // Whether the configuration or a flag set `listen`: then failing to bind
  // it stops the broker; the default only logs a warning.
  bool configured = false;
};

struct LogConfig {
  std::string format = "json";  // json (one object per line) or text
  std::string level = "info";   // debug, info, warning, error; changeable
                                // at runtime (AdminService/SetLogLevel)
};

// The tamper-evident audit log (checkpoints signed with tls.private_key).
struct AuditConfig {
  uint64_t checkpoint_every = 1000;  // entries between signed checkpoints
  int checkpoint_seconds = 60;       // and at least this often (seconds)
};

// Signatures: senders' signatures verified, custody receipts and evidence
// signed with tls.private_key.
struct SecurityConfig {
  // Refuse documents their sender did not sign (from organizations and from
  // peer brokers alike). Turn off only while agencies move to a signing SDK.
  bool require_signatures = true;
};

// Stored attachments (AttachmentService).
struct AttachmentsConfig {
  // Where attachment files live. Default: <data_dir>/attachments.
  std::string directory;
  uint64_t max_bytes = uint64_t{2} << 30;
  uint64_t chunk_bytes = 1 << 20;
  uint64_t sync_bytes = 16 << 20;
  int usable_hours = 24;
  int partial_kept_hours = 72;
  uint64_t min_free_bytes = 256 << 20;
  bool direct_io = true;  // see storage::AttachmentOptions::direct_io
  // How often unreferenced attachments and stale uploads are collected.
  int gc_minutes = 60;
  // Uploads, and downloads, running at once (each holds a thread); more:
  // UNAVAILABLE.
  int max_transfer_calls = 256;
  // The bulk path (host:port; port 0 picks one): uploads and downloads over
  // OpenSSL on a listener of their own, about half the CPU per byte of
  // gRPC's TLS. Same certificates, trust root, CRLs, identities and
  // authorization as the gRPC port. Empty: none (gRPC only).
  std::string bulk_listen;
};

struct BrokerConfig {
  std::string name = "central";
  std::string trust_domain = "lienthong.local";
  std::string listen = "127.0.0.1:7443";
  std::string data_dir = "lienthong-data/central";
  TlsConfig tls;
  std::vector<OrgConfig> orgs = {
      {"000.00.00.G22", "Văn phòng Trung ương (demo)"},
      {"000.00.00.H49", "UBND tỉnh (demo H49)"},
      {"000.00.00.H50", "UBND tỉnh (demo H50)"},
      {"000.01.23.H49", "Sở trực thuộc (demo H49)"}};
  size_t max_document_bytes = 16 << 20;
  size_t max_recipients = 1000;
  // Bytes a client may send on one stream ahead of what the broker has
  // read (the HTTP/2 window): bounds the memory a fast uploader can make the
  // broker hold, and the throughput of one stream over a long link
  // (window / round trip: 8 MiB over 30 ms is about 280 MB/s).
  size_t stream_window_bytes = 8 << 20;
  uint32_t default_max_in_flight = 256;
  int worker_threads = 4;
  size_t block_cache_bytes = 64 << 20;
  // Encryption at rest: a file holding the 32-byte master key as 64 hex
  // characters (mode 0600, outside the data directory). Empty: documents
  // are stored unencrypted (a warning at start).
  std::string master_key_file;
  // Earlier master key files, while rotating (see RotateStorageKeys).
  std::vector<std::string> previous_master_key_files;
  PolicyConfig policy;
  RolesConfig roles;
  ApprovalsConfig approvals;
  FederationConfig federation;
  std::vector<PeerConfig> peers;
  MetricsConfig metrics;
  LogConfig log;
  AuditConfig audit;
  SecurityConfig security;
  AttachmentsConfig attachments;
  // SHA-256 (hex) of the file it was read from; "embedded defaults" when
  // none was.
  std::string source_sha256 = "embedded defaults";

  std::string SpiffeId() const;
  // Reads master_key_file and previous_master_key_files: INVALID_ARGUMENT
  // naming the field and file when one is unreadable, not 64 hex
  // characters, or readable by group or others.
  absl::StatusOr<storage::EncryptionOptions> ReadStorageKeys() const;
  broker::ExchangeOptions ToExchangeOptions() const;
  storage::RocksDbOptions ToStorageOptions() const;
  storage::AttachmentOptions ToAttachmentOptions() const;
  policy::ServedPolicyOptions ToPolicyOptions() const;
  // SPIFFE ids of the people holding `names`.
  std::vector<std::string> PersonIds(
      const std::vector<std::string>& names) const;
  // INVALID_ARGUMENT naming the field.
  absl::Status Validate() const;
};

// The development policy used when no policy file is configured
// (deploy/policy/lienthong-policy.yaml, embedded at build time).
absl::string_view EmbeddedDevelopmentPolicy();

// Parses YAML text; errors say "<file>:<line>:<column>: <what>". Unknown keys
// are errors. Fields not given keep their defaults. Relative paths are
// resolved against the directory of the file.
absl::StatusOr<BrokerConfig> ParseConfig(const std::string& yaml,
                                         const std::string& file_name);
absl::StatusOr<BrokerConfig> LoadConfigFile(const std::string& path);

}  // namespace lienthong::server

#endif  // LIENTHONG_BROKER_SERVER_SRC_CONFIG_H_
