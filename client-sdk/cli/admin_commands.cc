#include "client-sdk/cli/admin_commands.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client-sdk/cli/evidence_commands.h"
#include "client-sdk/cli/format.h"
#include "google/protobuf/util/json_util.h"
#include "lienthong/audit/chain.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/v1/audit.pb.h"

namespace lienthong::cli {
namespace {

std::string Age(const google::protobuf::Duration& d) {
  absl::Duration age =
      absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
  if (age < absl::Seconds(1)) return "<1s";
  return absl::FormatDuration(absl::Trunc(age, absl::Seconds(1)));
}

std::string RoutesText(const v1::PeerRoutes& r) {
  std::vector<std::string> parts;
  if (r.is_default()) parts.push_back("default");
  if (r.provinces_size())
    parts.push_back(
        absl::StrCat("provinces ", absl::StrJoin(r.provinces(), ",")));
  if (r.under_size())
    parts.push_back(absl::StrCat("under ", absl::StrJoin(r.under(), ",")));
  if (r.orgs_size())
    parts.push_back(absl::StrCat("orgs ", absl::StrJoin(r.orgs(), ",")));
  return parts.empty() ? "directory only" : absl::StrJoin(parts, "; ");
}

}  // namespace

absl::Status RunAdminInfo(AdminClient& admin, const OutputFlags& output) {
  ASSIGN_OR_RETURN(v1::GetBrokerInfoResponse info, admin.GetBrokerInfo());
  if (output.json) {
    std::cout << ToJson(info, /*with_defaults=*/true) << std::endl;
    return absl::OkStatus();
  }
  std::cout << "broker   " << info.broker() << "\n"
            << "version  " << info.version() << "\n"
            << "started  " << FormatTimestamp(info.started_at()) << " (up "
            << Age(info.uptime()) << ")\n"
            << "policy   " << info.policy_version() << "\n"
            << "config   " << info.config_sha256() << "\n"
            << "data     " << info.data_disk_bytes() << " bytes on disk, "
            << info.data_memory_bytes() << " in memtables\n"
            << "at rest  "
            << (info.storage_encryption().enabled()
                    ? absl::StrCat("AES-256-GCM, master key ",
                                   info.storage_encryption().master_key_id(),
                                   ", data key ",
                                   info.storage_encryption().data_key_id(),
                                   " (", info.storage_encryption().data_keys(),
                                   " data keys)")
                    : std::string("not encrypted (storage.master_key_file)"))
            << "\n"
            << "log      " << info.log_level() << "\n"
            << "you      " << info.caller() << " ("
            << absl::StrJoin(info.caller_roles(), ", ") << ")" << std::endl;
  for (const v1::Incident& i : info.open_incidents()) {
    std::cout << "INCIDENT " << i.id() << " ("
              << v1::IncidentSeverity_Name(i.severity()) << ", broker "
              << i.broker() << "): " << i.description() << std::endl;
  }
  return absl::OkStatus();
}

absl::Status RunAdminPeers(AdminClient& admin, const OutputFlags& output) {
  ASSIGN_OR_RETURN(v1::ListPeersResponse peers, admin.ListPeers());
  if (output.json) {
    std::cout << ToJson(peers, /*with_defaults=*/true) << std::endl;
    return absl::OkStatus();
  }
  Table table({"PEER", "ENDPOINT", "OUT", "IN", "OUTBOX", "OLDEST", "RETURNS",
               "DIRECTORY", "ROUTES", "LAST ERROR"});
  for (const v1::PeerInfo& p : peers.peers()) {
    std::string directory =
        p.has_directory_heard_at()
            ? absl::StrCat(p.directory_entries(), " orgs",
                           p.directory_stale() ? " (stale)" : "")
            : "never heard";
    table.AddRow(
        {p.name(), p.endpoint(),
         absl::StrCat(p.outbound_up() ? "up" : "down", " since ",
                      FormatTimestamp(p.outbound_since())),
         p.inbound_up() ? "up" : "down",
         absl::StrCat(p.outbox(), p.outbox_in_flight()
                                      ? absl::StrCat(" (", p.outbox_in_flight(),
                                                     " in flight)")
                                      : ""),
         p.has_oldest_outbox_age() ? Age(p.oldest_outbox_age()) : "-",
         absl::StrCat(p.returns()), directory, RoutesText(p.routes()),
         p.outbound_last_error().empty() ? "-" : p.outbound_last_error()});
  }
  table.Print(std::cout);
  std::cout << peers.peers_size() << " peer(s)" << std::endl;
  return absl::OkStatus();
}

absl::Status RunAdminDirectory(AdminClient& admin, const std::string& org,
                               const OutputFlags& output) {
  v1::ListDirectoryRequest request;
  request.set_org(org);
  ASSIGN_OR_RETURN(v1::ListDirectoryResponse directory,
                   admin.ListDirectory(request));
  if (output.json) {
    std::cout << ToJson(directory, /*with_defaults=*/true) << std::endl;
    return absl::OkStatus();
  }
  Table table({"ORG", "NAME", "BROKER", "VIA", "HOPS", "ROUTE", "E2E CERT"});
  for (const v1::DirectoryRow& r : directory.rows()) {
    table.AddRow({r.org(), r.name().empty() ? "-" : r.name(), r.broker(),
                  r.via_peer().empty()
                      ? "-"
                      : absl::StrCat(r.via_peer(), r.stale() ? " (stale)" : ""),
                  r.via_peer().empty() ? "0" : absl::StrCat(r.distance() + 1),
                  r.route(),
                  r.encryption_certificate_sha256().empty()
                      ? "-"
                      : r.encryption_certificate_sha256().substr(0, 16)});
  }
  table.Print(std::cout);
  std::cout << directory.rows_size() << " row(s)" << std::endl;
  return absl::OkStatus();
}

absl::Status RunAdminQueues(AdminClient& admin, const OutputFlags& output) {
  ASSIGN_OR_RETURN(v1::ListQueuesResponse queues, admin.ListQueues());
  if (output.json) {
    std::cout << ToJson(queues, /*with_defaults=*/true) << std::endl;
    return absl::OkStatus();
  }
  Table table({"ORG", "WAITING", "IN FLIGHT", "OLDEST"});
  uint64_t total = 0;
  for (const v1::QueueInfo& q : queues.queues()) {
    table.AddRow({q.org(), absl::StrCat(q.waiting()),
                  absl::StrCat(q.in_flight()),
                  q.has_oldest_age() ? Age(q.oldest_age()) : "-"});
    total += q.waiting();
  }
  table.Print(std::cout);
  std::cout << queues.queues_size() << " queue(s), " << total
            << " copies waiting (peers' outboxes: lienthong admin peers)"
            << std::endl;
  return absl::OkStatus();
}

absl::Status RunAdminDocument(AdminClient& admin, const std::string& id,
                              const OutputFlags& output) {
  v1::GetDocumentRequest request;
  request.set_document_id(id);
  ASSIGN_OR_RETURN(v1::GetDocumentResponse d, admin.GetDocument(request));
  if (output.json) {
    std::cout << ToJson(d, /*with_defaults=*/true) << std::endl;
    return absl::OkStatus();
  }
  const v1::DocumentStatus& s = d.status();
  std::vector<std::string> hops;
  for (const v1::Hop& h : d.trace()) hops.push_back(h.broker());
  std::cout << "document  " << s.document_id() << "\n"
            << "sender    " << s.sender() << "\n"
            << "subject   " << s.metadata().subject() << "\n"
            << "accepted  " << FormatTimestamp(s.accepted_at()) << "\n"
            << "content   " << d.content_bytes() << " bytes, "
            << d.attachments() << " attachment(s), sha256 "
            << d.content_sha256() << "\n"
            << "trace     " << absl::StrJoin(hops, " -> ") << "\n\n";
  Table rows({"RECIPIENT", "DELIVERY", "STATUS", "UPDATED"});
  for (const v1::RecipientStatus& r : s.recipients()) {
    rows.AddRow(
        {r.recipient(), DeliveryStateName(r.delivery_state()),
         r.business_status() ? BusinessStatusName(r.business_status()) : "-",
         FormatTimestamp(r.updated_at())});
  }
  rows.Print(std::cout);
  std::cout << "\nhistory" << std::endl;
  for (const v1::StatusEvent& e : s.history())
    std::cout << EventLine(e) << "\n";
  std::cout << std::flush;
  return absl::OkStatus();
}

absl::Status RunAdminLogLevel(AdminClient& admin, const std::string& level,
                              const OutputFlags& output) {
  if (level.empty()) {
    ASSIGN_OR_RETURN(v1::GetBrokerInfoResponse info, admin.GetBrokerInfo());
    if (output.json) {
      std::cout << "{\"level\":" << JsonString(info.log_level()) << "}"
                << std::endl;
    } else {
      std::cout << info.log_level() << std::endl;
    }
    return absl::OkStatus();
  }
  v1::SetLogLevelRequest request;
  request.set_level(level);
  ASSIGN_OR_RETURN(v1::SetLogLevelResponse set, admin.SetLogLevel(request));
  if (output.json) {
    std::cout << ToJson(set, /*with_defaults=*/true) << std::endl;
  } else {
    std::cout << "log level " << set.previous() << " -> " << set.level()
              << std::endl;
  }
  return absl::OkStatus();
}

namespace {

// Prints a verification; DATA_LOSS naming the first problem.
absl::Status Report(const v1::VerifyAuditResponse& v, absl::string_view where,
                    const OutputFlags& output) {
  if (output.json) {
    std::cout << ToJson(v, /*with_defaults=*/true) << std::endl;
  } else if (v.ok()) {
    std::cout << where << ": intact: " << v.entries() << " entries, "
              << v.checkpoints() << " signed checkpoints, verified through "
              << v.verified_size() << "; head " << v.head_hash() << std::endl;
  } else {
    std::cout << where << ": TAMPERED (first bad entry " << v.first_bad_index()
              << ")" << std::endl;
    for (const std::string& p : v.problems()) std::cout << "  " << p << "\n";
    std::cout << std::flush;
  }
  if (v.ok()) return absl::OkStatus();
  return absl::DataLossError(
      absl::StrCat("the audit log was tampered with: ", v.problems(0)));
}

}  // namespace

absl::Status RunAdminAuditVerify(AdminClient& admin,
                                 const OutputFlags& output) {
  ASSIGN_OR_RETURN(v1::VerifyAuditResponse v, admin.VerifyAudit());
  return Report(v, "audit log", output);
}

absl::Status RunAdminAuditExport(AdminClient& admin, const std::string& out,
                                 const OutputFlags& output) {
  if (out.empty()) return absl::InvalidArgumentError("--out: required");
  v1::AuditExport exported;
  v1::ExportAuditRequest request;
  for (;;) {
    ASSIGN_OR_RETURN(v1::ExportAuditResponse page, admin.ExportAudit(request));
    if (request.after_index() == 0) {
      exported.set_broker(page.broker());
      exported.set_certificate_pem(page.certificate_pem());
      exported.set_through(page.through());
      exported.set_head_hash(page.head_hash());
      for (v1::AuditCheckpoint& c : *page.mutable_checkpoints())
        *exported.add_checkpoints() = std::move(c);
      request.set_through(page.through());
    }
    for (v1::StoredAuditEntry& e : *page.mutable_entries())
      *exported.add_entries() = std::move(e);
    if (page.next_after_index() == 0) break;
    request.set_after_index(page.next_after_index());
  }
  RETURN_IF_ERROR(WriteJsonFile(exported, out, "--out"));
  if (output.json) {
    std::cout << "{\"file\":" << JsonString(out)
              << ",\"entries\":" << exported.entries_size()
              << ",\"checkpoints\":" << exported.checkpoints_size() << "}"
              << std::endl;
  } else {
    std::cout << "exported " << exported.entries_size() << " entries and "
              << exported.checkpoints_size() << " checkpoints of "
              << exported.broker() << " to " << out << std::endl;
  }
  return absl::OkStatus();
}

absl::Status RunAuditVerifyExport(const std::string& file,
                                  const std::string& ca_file,
                                  const OutputFlags& output) {
  if (ca_file.empty()) return absl::InvalidArgumentError("--ca: required");
  ASSIGN_OR_RETURN(std::string json, ReadFileFor(file, "FILE"));
  ASSIGN_OR_RETURN(std::string ca, ReadFileFor(ca_file, "--ca"));
  v1::AuditExport exported;
  if (auto s = google::protobuf::util::JsonStringToMessage(json, &exported);
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": not an audit export: ", std::string(s.message())));
  }
  audit::AuditVerifier verifier(
      {.broker = exported.broker(), .trust_root_pem = ca});
  for (const v1::AuditCheckpoint& c : exported.checkpoints())
    verifier.AddCheckpoint(c.tree_size(), c.SerializeAsString());
  for (const v1::StoredAuditEntry& e : exported.entries())
    verifier.AddEntry(e.index(), e.SerializeAsString());
  audit::AuditVerification result =
      verifier.Finish(std::make_pair(exported.through(), exported.head_hash()));
  if (exported.checkpoints().empty() && exported.entries_size() > 0) {
    result.problems.push_back(
        "no signed checkpoint: nothing in the export is vouched for by the "
        "broker's key");
  }
  v1::VerifyAuditResponse v;
  v.set_ok(result.ok());
  v.set_entries(result.entries);
  v.set_checkpoints(result.checkpoints);
  v.set_verified_size(result.verified_size);
  v.set_first_bad_index(result.first_bad_index);
  for (std::string& p : result.problems) v.add_problems(std::move(p));
  v.set_head_hash(audit::Hex(result.head_hash));
  if (v.ok() && v.verified_size() < exported.through()) {
    // Entries after the last checkpoint chain correctly but no signature
    // covers them yet: say so rather than vouch for them.
    std::cerr << "note: entries " << v.verified_size() + 1 << " to "
              << exported.through()
              << " are not yet covered by a signed checkpoint" << std::endl;
  }
  return Report(v, file, output);
}

absl::Status RunAdminRotateStorageKeys(AdminClient& admin,
                                       const OutputFlags& output) {
  ASSIGN_OR_RETURN(v1::RotateStorageKeysResponse r, admin.RotateStorageKeys());
  if (output.json) {
    std::cout << ToJson(r, /*with_defaults=*/true) << std::endl;
    return absl::OkStatus();
  }
  std::cout << "new documents are sealed with data key "
            << r.encryption().data_key_id() << "; all "
            << r.encryption().data_keys()
            << " data keys are wrapped by master key "
            << r.encryption().master_key_id() << std::endl;
  return absl::OkStatus();
}

}  // namespace lienthong::cli
