#include "broker/server/src/config.h"

#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "lienthong/common/identity.h"
#include "lienthong/common/listen.h"
#include "lienthong/common/log.h"
#include "lienthong/common/org_code.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::server {
namespace {

class Parser {
 public:
  explicit Parser(std::string file) : file_(std::move(file)) {}

  absl::Status Error(const YAML::Node& node, absl::string_view what) const {
    const YAML::Mark& m = node.Mark();
    return absl::InvalidArgumentError(
        absl::StrCat(file_, ":", m.line + 1, ":", m.column + 1, ": ", what));
  }

  absl::Status CheckKeys(const YAML::Node& map, absl::string_view where,
                         const std::set<std::string>& known) const {
    if (!map.IsMap())
      return Error(map, absl::StrCat(where, " must be a mapping"));
    for (const auto& kv : map) {
      std::string key = kv.first.as<std::string>();
      if (!known.count(key)) {
        return Error(kv.first, absl::StrCat("unknown field \"", key, "\" in ",
                                            where, " (known: ",
                                            absl::StrJoin(known, ", "), ")"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status String(const YAML::Node& map, const char* key,
                      std::string* out) const {
    YAML::Node n = map[key];
    if (!n) return absl::OkStatus();
    if (!n.IsScalar()) return Error(n, absl::StrCat(key, " must be a string"));
    *out = n.as<std::string>();
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status Number(const YAML::Node& map, const char* key, T* out, T min,
                      T max) const {
    YAML::Node n = map[key];
    if (!n) return absl::OkStatus();
    long long v;
    if (!n.IsScalar() || !YAML::convert<long long>::decode(n, v)) {
      return Error(n, absl::StrCat(key, " must be an integer"));
    }
    if (v < static_cast<long long>(min) || v > static_cast<long long>(max)) {
      return Error(n,
                   absl::StrCat(key, " must be between ", min, " and ", max));
    }
    *out = static_cast<T>(v);
    return absl::OkStatus();
  }

 private:
  std::string file_;
};

std::string Resolve(const std::string& base_dir, const std::string& path) {
  if (path.empty() || base_dir.empty() ||
      std::filesystem::path(path).is_absolute())
    return path;
  return (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

}  // namespace

std::string BrokerConfig::SpiffeId() const {
  return lienthong::SpiffeId(trust_domain, Principal::Kind::kBroker, name);
}

broker::ExchangeOptions BrokerConfig::ToExchangeOptions() const {
  broker::ExchangeOptions o;
  o.broker_id = SpiffeId();
  for (const OrgConfig& org : orgs) {
    o.local_orgs.push_back(org.code);
    o.local_org_names.push_back(org.name);
  }
  for (const PeerConfig& peer : peers) o.peers.push_back(peer.route);
  o.max_hops = federation.max_hops;
  o.directory_stale_after = 3 * federation.announce_interval;
  o.max_document_bytes = max_document_bytes;
  o.max_recipients = max_recipients;
  o.default_max_in_flight = default_max_in_flight;
  o.worker_threads = worker_threads;
  o.require_signatures = security.require_signatures;
  for (const ApproverConfig& a : approvals.approvers) {
    o.approvers.push_back(broker::ApproverGrant{
        lienthong::SpiffeId(trust_domain, Principal::Kind::kPerson, a.person),
        a.role, a.orgs});
  }
  o.approval_expiry = absl::Seconds(approvals.expire_seconds);
  return o;
}

policy::ServedPolicyOptions BrokerConfig::ToPolicyOptions() const {
  policy::ServedPolicyOptions o;
  o.path = policy.path;
  if (o.path.empty())
    o.embedded_source = std::string(EmbeddedDevelopmentPolicy());
  o.reload_interval = policy.reload_interval;
  o.decision_log_capacity = policy.decision_log_size;
  return o;
}

std::vector<std::string> BrokerConfig::PersonIds(
    const std::vector<std::string>& names) const {
  std::vector<std::string> ids;
  for (const std::string& n : names)
    ids.push_back(
        lienthong::SpiffeId(trust_domain, Principal::Kind::kPerson, n));
  return ids;
}

namespace {

absl::StatusOr<std::string> ReadMasterKey(const std::string& path,
                                          absl::string_view field) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": cannot read ", path));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", path, " is readable by others (mode ",
                     absl::StrFormat("%04o", st.st_mode & 07777),
                     "); the master key must be mode 0600: chmod 600 ", path));
  }
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  absl::string_view hex = absl::StripAsciiWhitespace(text);
  if (hex.size() != 64 ||
      hex.find_first_not_of("0123456789abcdefABCDEF") != hex.npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": ", path,
        " must hold the 32-byte key as 64 hex characters (make one with: "
        "openssl rand -hex 32 > FILE; chmod 600 FILE)"));
  }
  return absl::HexStringToBytes(hex);
}

}  // namespace

absl::StatusOr<storage::EncryptionOptions> BrokerConfig::ReadStorageKeys()
    const {
  storage::EncryptionOptions keys;
  if (!master_key_file.empty()) {
    ASSIGN_OR_RETURN(keys.master_key,
                     ReadMasterKey(master_key_file, "storage.master_key_file"));
  }
  for (size_t i = 0; i < previous_master_key_files.size(); ++i) {
    ASSIGN_OR_RETURN(
        std::string key,
        ReadMasterKey(
            previous_master_key_files[i],
            absl::StrCat("storage.previous_master_key_files[", i, "]")));
    keys.previous_master_keys.push_back(std::move(key));
  }
  if (keys.master_key.empty() && !keys.previous_master_keys.empty()) {
    return absl::InvalidArgumentError(
        "storage.previous_master_key_files: needs storage.master_key_file");
  }
  return keys;
}

storage::RocksDbOptions BrokerConfig::ToStorageOptions() const {
  storage::RocksDbOptions o;
  o.path = data_dir;
  o.block_cache_bytes = block_cache_bytes;
  return o;
}

storage::AttachmentOptions BrokerConfig::ToAttachmentOptions() const {
  storage::AttachmentOptions o;
  o.directory = attachments.directory.empty()
                    ? absl::StrCat(data_dir, "/attachments")
                    : attachments.directory;
  o.max_bytes = attachments.max_bytes;
  o.chunk_size = attachments.chunk_bytes;
  o.sync_bytes = attachments.sync_bytes;
  o.direct_io = attachments.direct_io;
  o.usable_for = absl::Hours(attachments.usable_hours);
  o.partial_kept_for = absl::Hours(attachments.partial_kept_hours);
  o.min_free_bytes = attachments.min_free_bytes;
  return o;
}

absl::Status BrokerConfig::Validate() const {
  absl::StatusOr<Principal> id = ParseSpiffeId(SpiffeId());
  if (!id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "broker.name / broker.trust_domain: ", id.status().message()));
  }
  if (listen.empty() || listen.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen: \"", listen, "\" must be host:port, e.g. 127.0.0.1:7443"));
  }
  if (data_dir.empty()) return absl::InvalidArgumentError("data_dir: empty");
  if (tls.certificate.empty() || tls.private_key.empty() || tls.ca.empty()) {
    return absl::InvalidArgumentError(
        "tls: certificate, private_key and ca are all required; there is no "
        "plaintext listener");
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < orgs.size(); ++i) {
    RETURN_IF_ERROR(
        ValidateOrgCode(orgs[i].code, absl::StrCat("orgs[", i, "].code")));
    if (!seen.insert(orgs[i].code).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "orgs[", i, "].code: ", orgs[i].code, " is listed twice"));
    }
  }
  if (absl::StatusOr<log::Format> f = log::ParseFormat(log.format); !f.ok())
    return absl::InvalidArgumentError(
        absl::StrCat("log.format: ", f.status().message()));
  if (absl::StatusOr<log::Level> l = log::ParseLevel(log.level); !l.ok())
    return absl::InvalidArgumentError(
        absl::StrCat("log.level: ", l.status().message()));
  if (!metrics.listen.empty() && metrics.listen != "off" &&
      metrics.listen.rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics.listen: \"", metrics.listen,
                     "\" must be host:port (e.g. 127.0.0.1:9464) or off"));
  }
  if (!attachments.bulk_listen.empty()) {
    RETURN_IF_ERROR(SplitHostPort(attachments.bulk_listen,
                                  "attachments.bulk_listen",
                                  "0.0.0.0:7444 (port 0 picks one), or empty")
                        .status());
  }
  for (size_t i = 0; i < peers.size(); ++i) {
    const std::string& e = peers[i].endpoint;
    if (e.empty() || e.find(':') == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("peers[", i, "].endpoint: \"", e,
                       "\" must be host:port, e.g. 127.0.0.1:7443"));
    }
  }
  return ToExchangeOptions().Validate();
}

absl::StatusOr<BrokerConfig> ParseConfig(const std::string& yaml,
                                         const std::string& file_name) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        file_name, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
  BrokerConfig c;
  if (!root || root.IsNull()) return c;
  Parser p(file_name);
  std::string base_dir =
      std::filesystem::path(file_name).parent_path().string();
  try {
    RETURN_IF_ERROR(
        p.CheckKeys(root, "the configuration",
                    {"broker", "listen", "data_dir", "tls", "orgs", "limits",
                     "worker_threads", "storage", "attachments", "policy",
                     "roles", "approvals", "federation", "peers", "metrics",
                     "log", "audit", "security"}));
    if (YAML::Node b = root["broker"]) {
      RETURN_IF_ERROR(p.CheckKeys(b, "broker", {"name", "trust_domain"}));
      RETURN_IF_ERROR(p.String(b, "name", &c.name));
      RETURN_IF_ERROR(p.String(b, "trust_domain", &c.trust_domain));
    }
    RETURN_IF_ERROR(p.String(root, "listen", &c.listen));
    RETURN_IF_ERROR(p.String(root, "data_dir", &c.data_dir));
    c.data_dir = Resolve(base_dir, c.data_dir);
    if (YAML::Node t = root["tls"]) {
      RETURN_IF_ERROR(
          p.CheckKeys(t, "tls",
                      {"certificate", "private_key", "ca", "refresh_seconds",
                       "crl_directory", "max_connection_age_seconds",
                       "max_connection_age_grace_seconds"}));
      RETURN_IF_ERROR(p.String(t, "certificate", &c.tls.certificate));
      RETURN_IF_ERROR(p.String(t, "private_key", &c.tls.private_key));
      RETURN_IF_ERROR(p.String(t, "ca", &c.tls.ca));
      RETURN_IF_ERROR(p.String(t, "crl_directory", &c.tls.crl_directory));
      int refresh = 60;
      RETURN_IF_ERROR(p.Number(t, "refresh_seconds", &refresh, 1, 86400));
      c.tls.refresh = absl::Seconds(refresh);
      int max_age = 3600;
      RETURN_IF_ERROR(
          p.Number(t, "max_connection_age_seconds", &max_age, 0, 7 * 86400));
      c.tls.max_connection_age = absl::Seconds(max_age);
      int grace = 30;
      RETURN_IF_ERROR(
          p.Number(t, "max_connection_age_grace_seconds", &grace, 0, 3600));
      c.tls.max_connection_age_grace = absl::Seconds(grace);
    }
    c.tls.certificate = Resolve(base_dir, c.tls.certificate);
    c.tls.private_key = Resolve(base_dir, c.tls.private_key);
    c.tls.ca = Resolve(base_dir, c.tls.ca);
    c.tls.crl_directory = Resolve(base_dir, c.tls.crl_directory);
    if (YAML::Node orgs = root["orgs"]) {
      if (!orgs.IsSequence()) return p.Error(orgs, "orgs must be a list");
      c.orgs.clear();
      for (size_t i = 0; i < orgs.size(); ++i) {
        YAML::Node o = orgs[i];
        RETURN_IF_ERROR(
            p.CheckKeys(o, absl::StrCat("orgs[", i, "]"), {"code", "name"}));
        OrgConfig org;
        RETURN_IF_ERROR(p.String(o, "code", &org.code));
        RETURN_IF_ERROR(p.String(o, "name", &org.name));
        if (absl::Status s =
                ValidateOrgCode(org.code, absl::StrCat("orgs[", i, "].code"));
            !s.ok()) {
          return p.Error(o["code"] ? o["code"] : o, s.message());
        }
        c.orgs.push_back(std::move(org));
      }
    }
    if (YAML::Node l = root["limits"]) {
      RETURN_IF_ERROR(
          p.CheckKeys(l, "limits",
                      {"max_document_bytes", "max_recipients",
                       "default_max_in_flight", "stream_window_bytes"}));
      RETURN_IF_ERROR(p.Number<size_t>(l, "stream_window_bytes",
                                       &c.stream_window_bytes, 65536,
                                       size_t{1} << 30));
      RETURN_IF_ERROR(p.Number<size_t>(l, "max_document_bytes",
                                       &c.max_document_bytes, 1024,
                                       size_t{1} << 30));
      RETURN_IF_ERROR(
          p.Number<size_t>(l, "max_recipients", &c.max_recipients, 1, 100000));
      RETURN_IF_ERROR(p.Number<uint32_t>(l, "default_max_in_flight",
                                         &c.default_max_in_flight, 1, 10000));
    }
    if (YAML::Node s = root["storage"]) {
      RETURN_IF_ERROR(p.CheckKeys(s, "storage",
                                  {"block_cache_bytes", "master_key_file",
                                   "previous_master_key_files"}));
      RETURN_IF_ERROR(p.Number<size_t>(s, "block_cache_bytes",
                                       &c.block_cache_bytes, 1 << 20,
                                       size_t{64} << 30));
      RETURN_IF_ERROR(p.String(s, "master_key_file", &c.master_key_file));
      if (YAML::Node list = s["previous_master_key_files"]) {
        if (!list.IsSequence()) {
          return p.Error(list,
                         "storage.previous_master_key_files must be a list");
        }
        for (const YAML::Node& item : list) {
          if (!item.IsScalar()) {
            return p.Error(item,
                           "storage.previous_master_key_files: each entry "
                           "must be a file path");
          }
          c.previous_master_key_files.push_back(item.as<std::string>());
        }
      }
      c.master_key_file = Resolve(base_dir, c.master_key_file);
      for (std::string& f : c.previous_master_key_files)
        f = Resolve(base_dir, f);
    }
    RETURN_IF_ERROR(
        p.Number(root, "worker_threads", &c.worker_threads, 1, 256));
    if (YAML::Node pol = root["policy"]) {
      RETURN_IF_ERROR(p.CheckKeys(
          pol, "policy", {"file", "reload_seconds", "decision_log_size"}));
      RETURN_IF_ERROR(p.String(pol, "file", &c.policy.path));
      c.policy.path = Resolve(base_dir, c.policy.path);
      int reload = 2;
      RETURN_IF_ERROR(p.Number(pol, "reload_seconds", &reload, 0, 3600));
      c.policy.reload_interval = absl::Seconds(reload);
      RETURN_IF_ERROR(p.Number<size_t>(
          pol, "decision_log_size", &c.policy.decision_log_size, 0, 1000000));
    }
    if (YAML::Node r = root["roles"]) {
      RETURN_IF_ERROR(p.CheckKeys(r, "roles", {"operator", "auditor"}));
      for (auto [key, dest] :
           {std::pair<const char*, std::vector<std::string>*>{
                "operator", &c.roles.operators},
            {"auditor", &c.roles.auditors}}) {
        YAML::Node list = r[key];
        if (!list) {
          dest->clear();
          continue;
        }
        if (!list.IsSequence()) {
          return p.Error(list, absl::StrCat("roles.", key,
                                            " must be a list of person names"));
        }
        dest->clear();
        for (const YAML::Node& item : list) {
          if (!item.IsScalar()) {
            return p.Error(item, absl::StrCat("roles.", key,
                                              ": a person name is a string"));
          }
          std::string name = item.Scalar();
          if (!ParseSpiffeId(lienthong::SpiffeId(c.trust_domain,
                                                 Principal::Kind::kPerson,
                                                 name))
                   .ok()) {
            return p.Error(item, absl::StrCat("roles.", key, ": \"", name,
                                              "\" is not a valid person name"));
          }
          dest->push_back(std::move(name));
        }
      }
    }
    if (YAML::Node a = root["approvals"]) {
      RETURN_IF_ERROR(
          p.CheckKeys(a, "approvals", {"expire_seconds", "approvers"}));
      RETURN_IF_ERROR(p.Number<int64_t>(a, "expire_seconds",
                                        &c.approvals.expire_seconds, 1,
                                        int64_t{366} * 86400));
      if (YAML::Node list = a["approvers"]) {
        if (!list.IsSequence()) {
          return p.Error(list, "approvals.approvers must be a list");
        }
        for (size_t i = 0; i < list.size(); ++i) {
          const YAML::Node item = list[i];
          const std::string where =
              absl::StrCat("approvals.approvers[", i, "]");
          RETURN_IF_ERROR(p.CheckKeys(item, where, {"person", "role", "orgs"}));
          ApproverConfig ac;
          RETURN_IF_ERROR(p.String(item, "person", &ac.person));
          RETURN_IF_ERROR(p.String(item, "role", &ac.role));
          if (!ParseSpiffeId(lienthong::SpiffeId(c.trust_domain,
                                                 Principal::Kind::kPerson,
                                                 ac.person))
                   .ok()) {
            return p.Error(item, absl::StrCat(where, ".person: \"", ac.person,
                                              "\" is not a valid person name"));
          }
          YAML::Node orgs = item["orgs"];
          if (!orgs || !orgs.IsSequence() || orgs.size() == 0) {
            return p.Error(item, absl::StrCat(where,
                                              ".orgs: a list of the org codes "
                                              "the person approves for"));
          }
          for (const YAML::Node& o : orgs) {
            if (!o.IsScalar())
              return p.Error(o,
                             absl::StrCat(where, ".orgs: codes are strings"));
            if (absl::Status s = ValidateOrgCode(o.Scalar(), where + ".orgs");
                !s.ok())
              return p.Error(o, s.message());
            ac.orgs.push_back(o.Scalar());
          }
          c.approvals.approvers.push_back(std::move(ac));
        }
      }
    }
    if (YAML::Node a = root["audit"]) {
      RETURN_IF_ERROR(
          p.CheckKeys(a, "audit", {"checkpoint_every", "checkpoint_seconds"}));
      RETURN_IF_ERROR(p.Number<uint64_t>(
          a, "checkpoint_every", &c.audit.checkpoint_every, 1, 100000000));
      RETURN_IF_ERROR(p.Number(a, "checkpoint_seconds",
                               &c.audit.checkpoint_seconds, 1, 86400));
    }
    if (YAML::Node a = root["attachments"]) {
      RETURN_IF_ERROR(p.CheckKeys(
          a, "attachments",
          {"directory", "max_bytes", "chunk_bytes", "sync_bytes",
           "usable_hours", "partial_kept_hours", "min_free_bytes", "gc_minutes",
           "direct_io", "max_transfer_calls", "bulk_listen"}));
      RETURN_IF_ERROR(p.String(a, "directory", &c.attachments.directory));
      RETURN_IF_ERROR(p.String(a, "bulk_listen", &c.attachments.bulk_listen));
      if (!c.attachments.directory.empty())
        c.attachments.directory = Resolve(base_dir, c.attachments.directory);
      RETURN_IF_ERROR(p.Number<uint64_t>(
          a, "max_bytes", &c.attachments.max_bytes, 1, uint64_t{1} << 42));
      RETURN_IF_ERROR(p.Number<uint64_t>(
          a, "chunk_bytes", &c.attachments.chunk_bytes, 4096, 2 << 20));
      if (c.attachments.chunk_bytes % 64 != 0) {
        // Chunks end on SHA-256 blocks: each is checked by the state of the
        // whole's hash, and an upload named at end resumes from one.
        return p.Error(a["chunk_bytes"],
                       absl::StrCat("attachments.chunk_bytes must be a "
                                    "multiple of 64, not ",
                                    c.attachments.chunk_bytes));
      }
      RETURN_IF_ERROR(p.Number<uint64_t>(
          a, "sync_bytes", &c.attachments.sync_bytes, 4096, uint64_t{1} << 32));
      RETURN_IF_ERROR(p.Number(a, "usable_hours", &c.attachments.usable_hours,
                               1, 24 * 365));
      RETURN_IF_ERROR(p.Number(a, "partial_kept_hours",
                               &c.attachments.partial_kept_hours, 1, 24 * 365));
      RETURN_IF_ERROR(p.Number<uint64_t>(a, "min_free_bytes",
                                         &c.attachments.min_free_bytes, 0,
                                         uint64_t{1} << 42));
      RETURN_IF_ERROR(
          p.Number(a, "gc_minutes", &c.attachments.gc_minutes, 1, 24 * 60));
      RETURN_IF_ERROR(p.Number(a, "max_transfer_calls",
                               &c.attachments.max_transfer_calls, 1, 100000));
      if (YAML::Node d = a["direct_io"]) {
        if (!d.IsScalar() ||
            !YAML::convert<bool>::decode(d, c.attachments.direct_io)) {
          return p.Error(d, "attachments.direct_io must be true or false");
        }
      }
    }
    if (YAML::Node sec = root["security"]) {
      RETURN_IF_ERROR(p.CheckKeys(sec, "security", {"require_signatures"}));
      if (YAML::Node r = sec["require_signatures"]) {
        if (!r.IsScalar() ||
            !YAML::convert<bool>::decode(r, c.security.require_signatures)) {
          return p.Error(r,
                         "security.require_signatures must be true or false");
        }
      }
    }
    if (YAML::Node l = root["log"]) {
      RETURN_IF_ERROR(p.CheckKeys(l, "log", {"format", "level"}));
      RETURN_IF_ERROR(p.String(l, "format", &c.log.format));
      RETURN_IF_ERROR(p.String(l, "level", &c.log.level));
    }
    if (YAML::Node m = root["metrics"]) {
      RETURN_IF_ERROR(p.CheckKeys(m, "metrics", {"listen"}));
      RETURN_IF_ERROR(p.String(m, "listen", &c.metrics.listen));
      c.metrics.configured = true;
    }
    if (YAML::Node f = root["federation"]) {
      RETURN_IF_ERROR(p.CheckKeys(
          f, "federation",
          {"max_hops", "announce_seconds", "window", "reconnect_max_seconds"}));
      RETURN_IF_ERROR(
          p.Number<uint32_t>(f, "max_hops", &c.federation.max_hops, 1, 64));
      int announce = 30;
      RETURN_IF_ERROR(p.Number(f, "announce_seconds", &announce, 1, 3600));
      c.federation.announce_interval = absl::Seconds(announce);
      RETURN_IF_ERROR(
          p.Number<uint32_t>(f, "window", &c.federation.window, 1, 100000));
      int reconnect_max = 30;
      RETURN_IF_ERROR(
          p.Number(f, "reconnect_max_seconds", &reconnect_max, 1, 3600));
      c.federation.reconnect_max = absl::Seconds(reconnect_max);
    }
    if (YAML::Node peers = root["peers"]) {
      if (!peers.IsSequence()) return p.Error(peers, "peers must be a list");
      for (size_t i = 0; i < peers.size(); ++i) {
        YAML::Node n = peers[i];
        std::string where = absl::StrCat("peers[", i, "]");
        RETURN_IF_ERROR(
            p.CheckKeys(n, where, {"name", "endpoint", "default", "serves"}));
        PeerConfig peer;
        RETURN_IF_ERROR(p.String(n, "name", &peer.route.name));
        RETURN_IF_ERROR(p.String(n, "endpoint", &peer.endpoint));
        if (YAML::Node d = n["default"]) {
          if (!d.IsScalar() ||
              !YAML::convert<bool>::decode(d, peer.route.is_default))
            return p.Error(
                d, absl::StrCat(where, ".default must be true or false"));
        }
        if (YAML::Node sv = n["serves"]) {
          RETURN_IF_ERROR(p.CheckKeys(sv, absl::StrCat(where, ".serves"),
                                      {"orgs", "under", "provinces"}));
          for (auto [key, dest] :
               {std::pair<const char*, std::vector<std::string>*>{
                    "orgs", &peer.route.orgs},
                {"under", &peer.route.under},
                {"provinces", &peer.route.provinces}}) {
            YAML::Node list = sv[key];
            if (!list) continue;
            if (!list.IsSequence()) {
              return p.Error(list, absl::StrCat(where, ".serves.", key,
                                                " must be a list"));
            }
            for (const YAML::Node& item : list) {
              if (!item.IsScalar()) {
                return p.Error(item, absl::StrCat(where, ".serves.", key,
                                                  ": items are strings"));
              }
              dest->push_back(item.Scalar());
            }
          }
        }
        if (absl::Status s = peer.route.Validate(where); !s.ok())
          return p.Error(n, s.message());
        c.peers.push_back(std::move(peer));
      }
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        file_name, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
  if (absl::Status s = c.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_name, ": ", s.message()));
  }
  if (!root["orgs"] && !(root["approvals"] && root["approvals"]["approvers"])) {
    // The embedded demo: the development PKI's "approver" approves for
    // every demo org.
    ApproverConfig demo;
    demo.person = "approver";
    for (const OrgConfig& org : c.orgs) demo.orgs.push_back(org.code);
    c.approvals.approvers.push_back(std::move(demo));
  }
  if (root["orgs"] && !root["roles"]) {
    // A deployment of its own grants no admin role by default: the demo
    // names "operator" and "auditor" belong to the development setup.
    c.roles.operators.clear();
    c.roles.auditors.clear();
  }
  if (c.policy.path.empty() && root["orgs"]) {
    return Parser(file_name).Error(
        root["orgs"],
        "policy.file is required when the configuration lists its own orgs "
        "(the embedded development policy is written for the demo orgs only; "
        "deny by default means no policy, no flow)");
  }
  return c;
}

absl::StatusOr<BrokerConfig> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot read the configuration file"));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<BrokerConfig> c = ParseConfig(text.str(), path);
  if (!c.ok()) return c;
  c->source_sha256 = sealing::Sha256Hex(text.str());
  return c;
}

}  // namespace lienthong::server
