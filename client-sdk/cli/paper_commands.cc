#include "client-sdk/cli/paper_commands.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client-sdk/cli/format.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::cli {
namespace {

std::string ScopeText(const v1::IncidentScope& scope) {
  switch (scope.kind()) {
    case v1::INCIDENT_SCOPE_KIND_BROKER:
      return "whole broker";
    case v1::INCIDENT_SCOPE_KIND_PEER_LINK:
      return absl::StrCat("link to ", scope.peer());
    case v1::INCIDENT_SCOPE_KIND_ORGS:
      return absl::StrJoin(scope.orgs(), ",");
    default:
      return "?";
  }
}

std::string SeverityText(v1::IncidentSeverity severity) {
  switch (severity) {
    case v1::INCIDENT_SEVERITY_MINOR:
      return "minor";
    case v1::INCIDENT_SEVERITY_MAJOR:
      return "major";
    case v1::INCIDENT_SEVERITY_CRITICAL:
      return "critical";
    default:
      return "?";
  }
}

}  // namespace

std::string NoticeLine(const v1::Notice& notice, const OutputFlags& output) {
  if (output.json) return absl::StrCat("{\"notice\":", ToJson(notice), "}");
  const v1::Incident& i = notice.incident();
  return absl::StrCat(
      "NOTICE  ",
      notice.kind() == v1::NOTICE_KIND_INCIDENT_RESOLVED ? "resolved"
                                                         : "incident",
      "  ", i.id(), "  ", SeverityText(i.severity()), "  ",
      ScopeText(i.scope()), " (broker ", i.broker(), ")  ",
      notice.kind() == v1::NOTICE_KIND_INCIDENT_RESOLVED ? i.resolution()
                                                         : i.description());
}

static void PrintIncidents(const v1::ListIncidentsResponse& r,
                           const OutputFlags& output) {
  if (output.json) {
    std::cout << ToJson(r) << std::endl;
    return;
  }
  Table table({"ID", "STATE", "SEVERITY", "SCOPE", "BROKER", "DECLARED",
               "DESCRIPTION"});
  for (const v1::Incident& i : r.incidents()) {
    table.AddRow({i.id(), i.resolved() ? "resolved" : "open",
                  SeverityText(i.severity()), ScopeText(i.scope()), i.broker(),
                  FormatTimestamp(i.declared_at()), i.description()});
  }
  table.Print(std::cout);
}

absl::Status RunIncidents(Client& client, bool open_only,
                          const OutputFlags& output) {
  ASSIGN_OR_RETURN(v1::ListIncidentsResponse r,
                   client.ListIncidents(open_only));
  PrintIncidents(r, output);
  return absl::OkStatus();
}

absl::Status RunPaperRecord(Client& client, const PaperRecordFlags& flags,
                            const OutputFlags& output) {
  v1::RecordPaperDocumentRequest request;
  request.set_incident_id(flags.incident_id);
  request.set_number(flags.number);
  request.set_notation(flags.notation);
  request.set_date(flags.date);
  for (const std::string& p : flags.parties) request.add_parties(p);
  request.set_subject(flags.subject);
  ASSIGN_OR_RETURN(v1::PaperRegisterEntry entry,
                   client.RecordPaperDocument(request));
  if (output.json) {
    std::cout << ToJson(entry) << std::endl;
  } else {
    std::cout << entry.id() << "  recorded under incident "
              << entry.incident_id() << std::endl;
  }
  return absl::OkStatus();
}

absl::Status RunPaperList(Client& client, const PaperListFlags& flags,
                          const OutputFlags& output) {
  v1::ListPaperRegisterRequest request;
  request.set_incident_id(flags.incident_id);
  request.set_outstanding_only(flags.outstanding);
  ASSIGN_OR_RETURN(v1::ListPaperRegisterResponse r,
                   client.ListPaperRegister(request));
  if (output.json) {
    std::cout << ToJson(r) << std::endl;
    return absl::OkStatus();
  }
  Table table({"ENTRY", "INCIDENT", "NUMBER", "DATE", "PARTIES",
               "RE-DIGITIZED AS", "SUBJECT"});
  for (const v1::PaperRegisterEntry& e : r.entries()) {
    table.AddRow(
        {e.id(), e.incident_id(),
         absl::StrCat(e.number(), e.notation().empty() ? "" : "/",
                      e.notation()),
         e.date(), absl::StrJoin(e.parties(), ","),
         e.settled_by_document().empty() ? "-" : e.settled_by_document(),
         e.subject()});
  }
  table.Print(std::cout);
  return absl::OkStatus();
}

static void PrintReport(const v1::ReconciliationReport& r,
                        const OutputFlags& output) {
  if (output.json) {
    std::cout << ToJson(r, /*with_defaults=*/true) << std::endl;
    return;
  }
  Table table({"ORG", "INCIDENT", "RECORDED", "RE-DIGITIZED", "OUTSTANDING"});
  for (const v1::ReconciliationRow& row : r.rows()) {
    table.AddRow({row.org(), row.incident_id(), absl::StrCat(row.recorded()),
                  absl::StrCat(row.redigitized()),
                  absl::StrCat(row.outstanding())});
  }
  table.Print(std::cout);
  for (const v1::ReconciliationRow& row : r.rows()) {
    for (const v1::PaperRegisterEntry& e : row.outstanding_entries()) {
      std::cout << "outstanding  " << e.id() << "  " << e.date() << "  "
                << e.number() << (e.notation().empty() ? "" : "/")
                << e.notation() << "  " << e.subject() << std::endl;
    }
  }
  std::cout << (r.reconciled() ? "reconciled: every entry is re-digitized"
                               : absl::StrCat(r.total_outstanding(),
                                              " entries not yet re-digitized"))
            << std::endl;
}

absl::Status RunPaperReport(Client& client, const std::string& incident_id,
                            const OutputFlags& output) {
  ASSIGN_OR_RETURN(v1::ReconciliationReport r,
                   client.GetReconciliationReport(incident_id));
  PrintReport(r, output);
  return absl::OkStatus();
}

absl::Status RunAdminIncidentDeclare(AdminClient& admin,
                                     const IncidentDeclareFlags& flags,
                                     const OutputFlags& output) {
  v1::DeclareIncidentRequest request;
  if (flags.scope == "broker") {
    request.mutable_scope()->set_kind(v1::INCIDENT_SCOPE_KIND_BROKER);
  } else if (flags.scope == "peer") {
    request.mutable_scope()->set_kind(v1::INCIDENT_SCOPE_KIND_PEER_LINK);
  } else if (flags.scope == "orgs") {
    request.mutable_scope()->set_kind(v1::INCIDENT_SCOPE_KIND_ORGS);
  }
  request.mutable_scope()->set_peer(flags.peer);
  for (const std::string& o : flags.orgs) request.mutable_scope()->add_orgs(o);
  if (flags.severity == "minor") {
    request.set_severity(v1::INCIDENT_SEVERITY_MINOR);
  } else if (flags.severity == "major") {
    request.set_severity(v1::INCIDENT_SEVERITY_MAJOR);
  } else if (flags.severity == "critical") {
    request.set_severity(v1::INCIDENT_SEVERITY_CRITICAL);
  }
  request.set_description(flags.description);
  ASSIGN_OR_RETURN(v1::Incident incident, admin.DeclareIncident(request));
  if (output.json) {
    std::cout << ToJson(incident) << std::endl;
  } else {
    std::cout << incident.id() << "  declared; affects here: "
              << absl::StrJoin(incident.affected_orgs(), ",") << std::endl;
  }
  return absl::OkStatus();
}

absl::Status RunAdminIncidentResolve(AdminClient& admin, const std::string& id,
                                     const std::string& resolution,
                                     const OutputFlags& output) {
  v1::ResolveIncidentRequest request;
  request.set_incident_id(id);
  request.set_resolution(resolution);
  ASSIGN_OR_RETURN(v1::Incident incident, admin.ResolveIncident(request));
  if (output.json) {
    std::cout << ToJson(incident) << std::endl;
  } else {
    std::cout << incident.id() << "  resolved" << std::endl;
  }
  return absl::OkStatus();
}

absl::Status RunAdminIncidents(AdminClient& admin, bool open_only,
                               const OutputFlags& output) {
  v1::ListIncidentsRequest request;
  request.set_open_only(open_only);
  ASSIGN_OR_RETURN(v1::ListIncidentsResponse r, admin.ListIncidents(request));
  PrintIncidents(r, output);
  return absl::OkStatus();
}

absl::Status RunAdminPaperReport(AdminClient& admin, const std::string& org,
                                 const std::string& incident_id,
                                 const OutputFlags& output) {
  v1::GetReconciliationReportRequest request;
  request.set_org(org);
  request.set_incident_id(incident_id);
  ASSIGN_OR_RETURN(v1::ReconciliationReport r,
                   admin.GetReconciliationReport(request));
  PrintReport(r, output);
  return absl::OkStatus();
}

absl::Status CompleteRedigitizedMark(Client& client, v1::Document* document) {
  v1::DocumentMetadata& meta = *document->mutable_metadata();
  if (!meta.has_redigitized()) return absl::OkStatus();
  ASSIGN_OR_RETURN(v1::ListPaperRegisterResponse r,
                   client.ListPaperRegister({}));
  for (const v1::PaperRegisterEntry& e : r.entries()) {
    if (e.id() != meta.redigitized().register_entry_id()) continue;
    *meta.mutable_redigitized() = RedigitizedMark(e);
    if (meta.issue_date().empty()) meta.set_issue_date(e.date());
    break;
  }
  return absl::OkStatus();
}

}  // namespace lienthong::cli
