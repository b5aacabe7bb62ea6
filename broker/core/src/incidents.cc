#include "lienthong/broker/incidents.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "google/protobuf/util/time_util.h"
#include "lienthong/common/ids.h"
#include "lienthong/common/log.h"
#include "lienthong/common/org_code.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::broker {
namespace {

constexpr absl::string_view kIncidentRecord = "incident/";
constexpr absl::string_view kEntryRecord = "paper-register/";
constexpr absl::string_view kIncidentPrefix = "INC-";
constexpr absl::string_view kEntryPrefix = "PR-";
constexpr size_t kMaxText = 4096;
constexpr int kMaxScopeOrgs = 1000;
constexpr int kMaxParties = 100;
// Most incidents taken from one announcement.
constexpr int kMaxAnnounced = 1000;

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp ToProto(absl::Time t) {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}
absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixNanos(TimeUtil::TimestampToNanoseconds(t));
}

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

absl::Status CheckText(absl::string_view field, const std::string& text,
                       size_t max, bool required) {
  if (required && text.empty()) return Invalid(field, "required");
  if (text.size() > max)
    return Invalid(field, absl::StrCat("longer than ", max, " bytes"));
  for (unsigned char c : text) {
    if (c < 0x20 && c != '\n' && c != '\t')
      return Invalid(field, "contains a control character");
  }
  return absl::OkStatus();
}

absl::Status CheckDate(absl::string_view field, const std::string& date) {
  if (date.empty()) return Invalid(field, "required, YYYY-MM-DD");
  absl::Time t;
  std::string err;
  if (date.size() != 10 || !absl::ParseTime("%Y-%m-%d", date, &t, &err))
    return Invalid(field, absl::StrCat("\"", date, "\" is not YYYY-MM-DD"));
  return absl::OkStatus();
}

bool IsIncidentId(absl::string_view id) {
  return absl::StartsWith(id, kIncidentPrefix) &&
         IsDocumentId(id.substr(kIncidentPrefix.size()));
}
bool IsEntryId(absl::string_view id) {
  return absl::StartsWith(id, kEntryPrefix) &&
         IsDocumentId(id.substr(kEntryPrefix.size()));
}

std::string ScopeText(const v1::IncidentScope& scope) {
  switch (scope.kind()) {
    case v1::INCIDENT_SCOPE_KIND_BROKER:
      return "broker";
    case v1::INCIDENT_SCOPE_KIND_PEER_LINK:
      return absl::StrCat("peer link ", scope.peer());
    case v1::INCIDENT_SCOPE_KIND_ORGS:
      return absl::StrCat("orgs ", absl::StrJoin(scope.orgs(), ","));
    default:
      return "unspecified";
  }
}

}  // namespace

absl::Status IncidentOptions::Validate() const {
  absl::StatusOr<Principal> p = ParseSpiffeId(broker_id);
  if (!p.ok() || p->kind != Principal::Kind::kBroker)
    return Invalid("broker_id", "not a broker SPIFFE id");
  if (announce_resolved_for < absl::ZeroDuration())
    return Invalid("announce_resolved_for", "negative");
  if (max_incidents_per_peer < 1)
    return Invalid("max_incidents_per_peer", "must be at least 1");
  return absl::OkStatus();
}

Incidents::Incidents(const IncidentOptions& options, storage::Store* store,
                     Clock* clock)
    : options_(options),
      broker_name_(ParseSpiffeId(options.broker_id)->name),
      store_(store),
      clock_(clock),
      local_orgs_(options.local_orgs.begin(), options.local_orgs.end()),
      peers_(options.peers.begin(), options.peers.end()) {}

Incidents::~Incidents() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* n) { return *n == 0; }, &pending_writes_));
}

absl::StatusOr<std::unique_ptr<Incidents>> Incidents::Open(
    const IncidentOptions& options, storage::Store* store, Clock* clock) {
  RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<Incidents> incidents(new Incidents(options, store, clock));
  RETURN_IF_ERROR(incidents->Load());
  return incidents;
}

absl::Status Incidents::Load() {
  absl::Status bad;
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(
      store_->ScanRecords(kIncidentRecord, [&](const storage::Record& r) {
        v1::Incident i;
        if (!i.ParseFromString(r.value)) {
          bad = absl::DataLossError(absl::StrCat("record ", r.key));
          return;
        }
        if (i.broker() != broker_name_) ++kept_per_broker_[i.broker()];
        incidents_[i.id()] = std::move(i);
      }));
  RETURN_IF_ERROR(
      store_->ScanRecords(kEntryRecord, [&](const storage::Record& r) {
        v1::PaperRegisterEntry e;
        if (!e.ParseFromString(r.value)) {
          bad = absl::DataLossError(absl::StrCat("record ", r.key));
          return;
        }
        entries_[e.id()] = std::move(e);
      }));
  return bad;
}

void Incidents::SetNoticeSink(NoticeSink sink) {
  absl::MutexLock lock(&mu_);
  sink_ = std::move(sink);
}

uint64_t Incidents::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

// ---- Who an incident affects -------------------------------------------

bool Incidents::Covers(const v1::Incident& incident,
                       const std::string& org) const {
  if (!local_orgs_.contains(org)) return false;
  const bool here = incident.broker() == broker_name_;
  switch (incident.scope().kind()) {
    case v1::INCIDENT_SCOPE_KIND_BROKER:
      // A peer's own outage is shown here, but it is the peer's
      // organizations that work on paper.
      return here;
    case v1::INCIDENT_SCOPE_KIND_PEER_LINK:
      // The link between the declaring broker and this one: both sides.
      return here || incident.scope().peer() == broker_name_;
    case v1::INCIDENT_SCOPE_KIND_ORGS:
      return std::find(incident.scope().orgs().begin(),
                       incident.scope().orgs().end(),
                       org) != incident.scope().orgs().end();
    default:
      return false;
  }
}

std::vector<std::string> Incidents::AffectedHere(
    const v1::Incident& incident) const {
  std::vector<std::string> out;
  for (const std::string& org : local_orgs_) {
    if (Covers(incident, org)) out.push_back(org);
  }
  return out;
}

v1::Incident Incidents::WithAffected(v1::Incident incident) const {
  incident.clear_affected_orgs();
  for (std::string& org : AffectedHere(incident))
    incident.add_affected_orgs(std::move(org));
  return incident;
}

void Incidents::NotifyAll(const v1::Incident& incident, v1::NoticeKind kind,
                          const std::string& actor) {
  NoticeSink sink;
  {
    absl::MutexLock lock(&mu_);
    sink = sink_;
  }
  v1::Notice notice;
  notice.set_kind(kind);
  *notice.mutable_incident() = WithAffected(incident);
  *notice.mutable_at() = ToProto(clock_->Now());
  std::vector<std::string> reached;
  size_t streams = 0;
  for (const std::string& org : notice.incident().affected_orgs()) {
    size_t n = sink ? sink(org, notice) : 0;
    streams += n;
    if (n > 0) reached.push_back(org);
  }
  if (options_.audit == nullptr) return;
  v1::AuditEntry a;
  a.set_kind(v1::AUDIT_KIND_INCIDENT);
  a.set_actor(actor);
  a.set_action(absl::StrCat("Notice/", v1::NoticeKind_Name(kind)));
  a.set_outcome("OK");
  a.set_detail(absl::StrCat(
      "incident ", incident.id(), ": ", notice.incident().affected_orgs_size(),
      " affected organizations here; notified at once on ", streams,
      " open receive streams of: ", absl::StrJoin(reached, ","),
      "; the others get it when they connect while it is open"));
  options_.audit->Append(std::move(a));
}

// ---- Operators -------------------------------------------------------------

absl::Status Incidents::WriteIncident(const v1::Incident& incident,
                                      std::optional<v1::AuditEntry> audit) {
  storage::WriteBatch batch;
  v1::Incident stored = incident;
  stored.clear_affected_orgs();
  batch.records.push_back({absl::StrCat(kIncidentRecord, incident.id()),
                           stored.SerializeAsString()});
  if (audit && options_.audit) options_.audit->AddTo(&batch, *audit);
  return store_->WriteSync(std::move(batch)).status();
}

absl::StatusOr<v1::Incident> Incidents::Declare(
    const Principal& caller, const v1::DeclareIncidentRequest& req) {
  const v1::IncidentScope& scope = req.scope();
  switch (scope.kind()) {
    case v1::INCIDENT_SCOPE_KIND_BROKER:
      if (!scope.peer().empty() || scope.orgs_size() > 0)
        return Invalid("scope", "a BROKER scope names no peer and no orgs");
      break;
    case v1::INCIDENT_SCOPE_KIND_PEER_LINK:
      if (scope.orgs_size() > 0)
        return Invalid("scope.orgs", "only for an ORGS scope");
      if (scope.peer().empty()) return Invalid("scope.peer", "required");
      if (!peers_.contains(scope.peer()))
        return Invalid("scope.peer", absl::StrCat("\"", scope.peer(),
                                                  "\" is not a configured "
                                                  "peer broker"));
      break;
    case v1::INCIDENT_SCOPE_KIND_ORGS: {
      if (!scope.peer().empty())
        return Invalid("scope.peer", "only for a PEER_LINK scope");
      if (scope.orgs_size() == 0 || scope.orgs_size() > kMaxScopeOrgs)
        return Invalid("scope.orgs", absl::StrCat("1 to ", kMaxScopeOrgs,
                                                  " organization codes"));
      std::set<std::string> seen;
      for (int i = 0; i < scope.orgs_size(); ++i) {
        std::string field = absl::StrCat("scope.orgs[", i, "]");
        RETURN_IF_ERROR(ValidateOrgCode(scope.orgs(i), field));
        if (!seen.insert(scope.orgs(i)).second)
          return Invalid(field,
                         absl::StrCat(scope.orgs(i), " is listed twice"));
      }
      break;
    }
    default:
      return Invalid(
          "scope.kind",
          "required: INCIDENT_SCOPE_KIND_BROKER, "
          "INCIDENT_SCOPE_KIND_PEER_LINK or INCIDENT_SCOPE_KIND_ORGS");
  }
  if (req.severity() == v1::INCIDENT_SEVERITY_UNSPECIFIED ||
      !v1::IncidentSeverity_IsValid(req.severity()))
    return Invalid("severity", "required: MINOR, MAJOR or CRITICAL");
  RETURN_IF_ERROR(CheckText("description", req.description(), kMaxText, true));

  absl::Time now = clock_->Now();
  v1::Incident incident;
  incident.set_id(
      absl::StrCat(kIncidentPrefix, NewDocumentId(absl::ToUnixMillis(now))));
  incident.set_broker(broker_name_);
  *incident.mutable_scope() = scope;
  incident.set_severity(req.severity());
  incident.set_description(req.description());
  incident.set_declared_by(caller.spiffe_id);
  *incident.mutable_declared_at() = ToProto(now);

  v1::AuditEntry a;
  a.set_kind(v1::AUDIT_KIND_INCIDENT);
  a.set_actor(caller.spiffe_id);
  a.set_action("IncidentService/DeclareIncident");
  a.set_outcome("OK");
  a.set_detail(absl::StrCat("incident ", incident.id(), " (",
                            v1::IncidentSeverity_Name(req.severity()), ", ",
                            ScopeText(scope), "): ", req.description()));
  RETURN_IF_ERROR(WriteIncident(incident, a));
  {
    absl::MutexLock lock(&mu_);
    incidents_[incident.id()] = incident;
    ++generation_;
  }
  NotifyAll(incident, v1::NOTICE_KIND_INCIDENT_DECLARED, caller.spiffe_id);
  return WithAffected(std::move(incident));
}

absl::StatusOr<v1::Incident> Incidents::Resolve(
    const Principal& caller, const v1::ResolveIncidentRequest& req) {
  if (req.incident_id().empty()) return Invalid("incident_id", "required");
  RETURN_IF_ERROR(CheckText("resolution", req.resolution(), kMaxText, false));
  v1::Incident incident;
  {
    absl::MutexLock lock(&mu_);
    auto it = incidents_.find(req.incident_id());
    if (it == incidents_.end())
      return absl::NotFoundError(
          absl::StrCat("incident_id: no incident ", req.incident_id()));
    incident = it->second;
  }
  if (incident.broker() != broker_name_)
    return absl::FailedPreconditionError(
        absl::StrCat("incident_id: ", incident.id(), " was declared at broker ",
                     incident.broker(), "; its operators resolve it"));
  if (incident.resolved())
    return absl::FailedPreconditionError(
        absl::StrCat("incident_id: ", incident.id(), " is resolved already"));
  incident.set_resolved(true);
  incident.set_resolved_by(caller.spiffe_id);
  *incident.mutable_resolved_at() = ToProto(clock_->Now());
  incident.set_resolution(req.resolution());
  v1::AuditEntry a;
  a.set_kind(v1::AUDIT_KIND_INCIDENT);
  a.set_actor(caller.spiffe_id);
  a.set_action("IncidentService/ResolveIncident");
  a.set_outcome("OK");
  a.set_detail(absl::StrCat("incident ", incident.id(),
                            " resolved: ", req.resolution()));
  RETURN_IF_ERROR(WriteIncident(incident, a));
  {
    absl::MutexLock lock(&mu_);
    incidents_[incident.id()] = incident;
    ++generation_;
  }
  NotifyAll(incident, v1::NOTICE_KIND_INCIDENT_RESOLVED, caller.spiffe_id);
  return WithAffected(std::move(incident));
}

absl::StatusOr<v1::ListIncidentsResponse> Incidents::List(
    const Principal& caller, const v1::ListIncidentsRequest& req,
    bool see_all) {
  if (!see_all && (!caller.is_org() || !local_orgs_.contains(caller.name)))
    return absl::PermissionDeniedError(absl::StrCat(
        caller.spiffe_id,
        " may not list incidents: operators, auditors and the organizations "
        "this broker serves may"));
  v1::ListIncidentsResponse response;
  absl::MutexLock lock(&mu_);
  for (auto it = incidents_.rbegin(); it != incidents_.rend(); ++it) {
    const v1::Incident& i = it->second;
    if (req.open_only() && i.resolved()) continue;
    if (!see_all && !Covers(i, caller.name)) continue;
    *response.add_incidents() = WithAffected(i);
  }
  // Newest first across brokers: ids are ULIDs (time first).
  std::sort(response.mutable_incidents()->begin(),
            response.mutable_incidents()->end(),
            [](const v1::Incident& a, const v1::Incident& b) {
              return FromProto(a.declared_at()) > FromProto(b.declared_at());
            });
  return response;
}

// ---- Organizations ---------------------------------------------------------

absl::StatusOr<v1::PaperRegisterEntry> Incidents::RecordPaper(
    const Principal& caller, const v1::RecordPaperDocumentRequest& req) {
  if (!caller.is_org() || !local_orgs_.contains(caller.name))
    return absl::PermissionDeniedError(absl::StrCat(
        caller.spiffe_id,
        " may not record paper documents: only an organization this broker "
        "serves records its own"));
  RETURN_IF_ERROR(CheckText("subject", req.subject(), kMaxText, true));
  RETURN_IF_ERROR(CheckText("number", req.number(), 64, false));
  RETURN_IF_ERROR(CheckText("notation", req.notation(), 128, false));
  RETURN_IF_ERROR(CheckDate("date", req.date()));
  if (req.parties_size() == 0 || req.parties_size() > kMaxParties)
    return Invalid("parties",
                   absl::StrCat("1 to ", kMaxParties, " organization codes"));
  for (int i = 0; i < req.parties_size(); ++i) {
    RETURN_IF_ERROR(
        ValidateOrgCode(req.parties(i), absl::StrCat("parties[", i, "]")));
  }
  if (!req.incident_id().empty() && !IsIncidentId(req.incident_id()))
    return Invalid("incident_id",
                   absl::StrCat("\"", req.incident_id(),
                                "\" is not an incident id (INC-...)"));

  std::string incident_id;
  {
    absl::MutexLock lock(&mu_);
    if (!req.incident_id().empty()) {
      auto it = incidents_.find(req.incident_id());
      if (it == incidents_.end())
        return absl::NotFoundError(
            absl::StrCat("incident_id: no incident ", req.incident_id()));
      if (it->second.resolved())
        return absl::FailedPreconditionError(absl::StrCat(
            "incident_id: ", req.incident_id(),
            " is resolved; paper handling is recorded only while an incident "
            "is open"));
      if (!Covers(it->second, caller.name))
        return absl::FailedPreconditionError(
            absl::StrCat("incident_id: ", req.incident_id(),
                         " does not cover organization ", caller.name));
      incident_id = req.incident_id();
    } else {
      std::vector<std::string> open;
      for (const auto& [id, i] : incidents_) {
        if (!i.resolved() && Covers(i, caller.name)) open.push_back(id);
      }
      if (open.empty())
        return absl::FailedPreconditionError(absl::StrCat(
            "no open incident covers organization ", caller.name,
            ": documents are handled on paper, and recorded in the paper "
            "register, only during a declared incident"));
      if (open.size() > 1)
        return Invalid(
            "incident_id",
            absl::StrCat("several open incidents cover ", caller.name, " (",
                         absl::StrJoin(open, ", "), "); name one"));
      incident_id = open.front();
    }
  }

  absl::Time now = clock_->Now();
  v1::PaperRegisterEntry entry;
  entry.set_id(
      absl::StrCat(kEntryPrefix, NewDocumentId(absl::ToUnixMillis(now))));
  entry.set_org(caller.name);
  entry.set_incident_id(incident_id);
  entry.set_number(req.number());
  entry.set_notation(req.notation());
  entry.set_date(req.date());
  *entry.mutable_parties() = req.parties();
  entry.set_subject(req.subject());
  entry.set_recorded_by(caller.spiffe_id);
  *entry.mutable_recorded_at() = ToProto(now);

  storage::WriteBatch batch;
  batch.records.push_back(
      {absl::StrCat(kEntryRecord, entry.id()), entry.SerializeAsString()});
  if (options_.audit) {
    v1::AuditEntry a;
    a.set_kind(v1::AUDIT_KIND_PAPER_REGISTER);
    a.set_actor(caller.spiffe_id);
    a.set_org(caller.name);
    a.set_action("IncidentService/RecordPaperDocument");
    a.set_outcome("OK");
    a.set_detail(absl::StrCat(
        "entry ", entry.id(), " (incident ", incident_id, "): ", entry.number(),
        "/", entry.notation(), " of ", entry.date(), " with ",
        absl::StrJoin(entry.parties(), ","), ": ", entry.subject()));
    options_.audit->AddTo(&batch, std::move(a));
  }
  RETURN_IF_ERROR(store_->WriteSync(std::move(batch)).status());
  absl::MutexLock lock(&mu_);
  entries_[entry.id()] = entry;
  return entry;
}

absl::Status Incidents::CheckVisibleOrg(const Principal& caller,
                                        const std::string& org, bool see_all,
                                        std::string* filter) const {
  if (!org.empty()) RETURN_IF_ERROR(ValidateOrgCode(org, "org"));
  if (see_all) {
    *filter = org;
    return absl::OkStatus();
  }
  if (!caller.is_org() || !local_orgs_.contains(caller.name))
    return absl::PermissionDeniedError(absl::StrCat(
        caller.spiffe_id,
        " may not read the paper register: operators, auditors and the "
        "organizations this broker serves (their own entries) may"));
  if (!org.empty() && org != caller.name)
    return absl::PermissionDeniedError(
        absl::StrCat("org: ", caller.name,
                     " may read only its own paper register, not ", org, "'s"));
  *filter = caller.name;
  return absl::OkStatus();
}

absl::StatusOr<v1::ListPaperRegisterResponse> Incidents::ListRegister(
    const Principal& caller, const v1::ListPaperRegisterRequest& req,
    bool see_all) {
  std::string org;
  RETURN_IF_ERROR(CheckVisibleOrg(caller, req.org(), see_all, &org));
  v1::ListPaperRegisterResponse response;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, e] : entries_) {
    if (!org.empty() && e.org() != org) continue;
    if (!req.incident_id().empty() && e.incident_id() != req.incident_id())
      continue;
    if (req.outstanding_only() && !e.settled_by_document().empty()) continue;
    *response.add_entries() = e;
  }
  return response;
}

absl::StatusOr<v1::ReconciliationReport> Incidents::Report(
    const Principal& caller, const v1::GetReconciliationReportRequest& req,
    bool see_all) {
  std::string org;
  RETURN_IF_ERROR(CheckVisibleOrg(caller, req.org(), see_all, &org));
  std::map<std::pair<std::string, std::string>, v1::ReconciliationRow> rows;
  v1::ReconciliationReport report;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, e] : entries_) {
      if (!org.empty() && e.org() != org) continue;
      if (!req.incident_id().empty() && e.incident_id() != req.incident_id())
        continue;
      v1::ReconciliationRow& row = rows[{e.org(), e.incident_id()}];
      row.set_org(e.org());
      row.set_incident_id(e.incident_id());
      row.set_recorded(row.recorded() + 1);
      if (e.settled_by_document().empty()) {
        row.set_outstanding(row.outstanding() + 1);
        *row.add_outstanding_entries() = e;
      } else {
        row.set_redigitized(row.redigitized() + 1);
      }
    }
  }
  for (auto& [key, row] : rows) {
    report.set_total_outstanding(report.total_outstanding() +
                                 row.outstanding());
    *report.add_rows() = std::move(row);
  }
  report.set_reconciled(report.total_outstanding() == 0);
  return report;
}

// ---- The exchange, admin, federation ---------------------------------------

std::vector<v1::Notice> Incidents::OpenNotices(const std::string& org) {
  std::vector<v1::Notice> out;
  absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  for (const auto& [id, i] : incidents_) {
    if (i.resolved() || !Covers(i, org)) continue;
    v1::Notice& n = out.emplace_back();
    n.set_kind(v1::NOTICE_KIND_INCIDENT_DECLARED);
    *n.mutable_incident() = WithAffected(i);
    *n.mutable_at() = ToProto(now);
  }
  return out;
}

std::vector<v1::Incident> Incidents::OpenIncidents() {
  v1::ListIncidentsRequest req;
  req.set_open_only(true);
  absl::StatusOr<v1::ListIncidentsResponse> r = List(Principal{}, req, true);
  return {r->incidents().begin(), r->incidents().end()};
}

v1::IncidentAnnouncement Incidents::Announcement() {
  v1::IncidentAnnouncement out;
  absl::Time horizon = clock_->Now() - options_.announce_resolved_for;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, i] : incidents_) {
    if (i.broker() != broker_name_) continue;
    if (i.resolved() && FromProto(i.resolved_at()) < horizon) continue;
    *out.add_incidents() = i;
  }
  return out;
}

void Incidents::LearnFromPeer(const std::string& peer,
                              const v1::IncidentAnnouncement& announcement) {
  int taken = 0;
  int over_limit = 0;  // new incidents not kept: the peer has too many
  for (const v1::Incident& announced : announcement.incidents()) {
    if (++taken > kMaxAnnounced) break;
    // Only the declaring broker speaks for an incident; nothing loops.
    if (announced.broker() != peer || !IsIncidentId(announced.id())) continue;
    if (announced.description().size() > kMaxText ||
        announced.resolution().size() > kMaxText ||
        announced.scope().orgs_size() > kMaxScopeOrgs)
      continue;
    std::optional<v1::NoticeKind> notice;
    {
      absl::MutexLock lock(&mu_);
      auto it = incidents_.find(announced.id());
      if (it == incidents_.end()) {
        int& kept = kept_per_broker_[peer];
        if (kept >= options_.max_incidents_per_peer) {
          ++over_limit;
          continue;
        }
        ++kept;
        if (!announced.resolved()) notice = v1::NOTICE_KIND_INCIDENT_DECLARED;
      } else if (it->second.broker() != peer) {
        continue;  // another broker's incident (ours, or a third one's)
      } else if (!it->second.resolved() && announced.resolved()) {
        notice = v1::NOTICE_KIND_INCIDENT_RESOLVED;
      } else {
        continue;  // nothing new
      }
      // Recorded at once (the announcement is the peer's own record): a
      // second announcement arriving meanwhile finds it known.
      v1::Incident stored = announced;
      stored.clear_affected_orgs();
      incidents_[stored.id()] = stored;
      ++pending_writes_;
    }
    storage::WriteBatch batch;
    v1::Incident stored = announced;
    stored.clear_affected_orgs();
    batch.records.push_back({absl::StrCat(kIncidentRecord, stored.id()),
                             stored.SerializeAsString()});
    const std::string actor =
        SpiffeId(ParseSpiffeId(options_.broker_id)->trust_domain,
                 Principal::Kind::kBroker, peer);
    if (options_.audit) {
      v1::AuditEntry a;
      a.set_kind(v1::AUDIT_KIND_INCIDENT);
      a.set_actor(actor);
      a.set_action(stored.resolved() ? "Federation/IncidentResolved"
                                     : "Federation/IncidentDeclared");
      a.set_outcome("OK");
      a.set_detail(absl::StrCat(
          "incident ", stored.id(), " of broker ", peer, " (",
          v1::IncidentSeverity_Name(stored.severity()), ", ",
          ScopeText(stored.scope()), "): ",
          stored.resolved() ? stored.resolution() : stored.description()));
      options_.audit->AddTo(&batch, std::move(a));
    }
    // Not synced from here: this may run on a gRPC callback thread. The
    // peer announces it again until it is old, so a lost write heals.
    store_->Write(
        std::move(batch),
        [this, stored, notice, actor](absl::StatusOr<storage::WriteResult> r) {
          if (r.ok() && notice) NotifyAll(stored, *notice, actor);
          absl::MutexLock lock(&mu_);
          --pending_writes_;
        });
  }
  bool warn = false;
  if (over_limit > 0) {
    // Once an hour per peer: it announces what was left out again and again.
    absl::MutexLock lock(&mu_);
    absl::Time& last = last_limit_warning_[peer];
    warn = clock_->Now() - last >= absl::Hours(1);
    if (warn) last = clock_->Now();
  }
  if (warn) {
    log::Write(log::Level::kWarning, "incidents",
               absl::StrCat("broker ", peer, " announced ", over_limit,
                            " new incident(s) beyond the ",
                            options_.max_incidents_per_peer,
                            " kept from one peer: not recorded"),
               {{"peer", peer}});
  }
}

// ---- Re-digitization (SendAdmission) ---------------------------------------

absl::Status Incidents::Admit(const Principal& caller,
                              const v1::Document& document,
                              storage::WriteBatch* batch) {
  if (!document.metadata().has_redigitized()) return absl::OkStatus();
  const v1::Redigitized& mark = document.metadata().redigitized();
  constexpr absl::string_view kField =
      "document.metadata.redigitized.register_entry_id";
  if (mark.register_entry_id().empty()) return Invalid(kField, "required");
  if (!IsEntryId(mark.register_entry_id()))
    return Invalid(kField,
                   absl::StrCat("\"", mark.register_entry_id(),
                                "\" is not a register entry id (PR-...)"));
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(mark.register_entry_id());
  if (it == entries_.end())
    return absl::NotFoundError(
        absl::StrCat(kField, ": no paper-register entry ",
                     mark.register_entry_id(), " at this broker"));
  const v1::PaperRegisterEntry& entry = it->second;
  if (entry.org() != document.sender())
    return absl::PermissionDeniedError(absl::StrCat(
        kField, ": entry ", entry.id(), " was recorded by organization ",
        entry.org(), ", not by the sender ", document.sender()));
  if (!mark.incident_id().empty() && mark.incident_id() != entry.incident_id())
    return Invalid(
        "document.metadata.redigitized.incident_id",
        absl::StrCat("entry ", entry.id(), " belongs to incident ",
                     entry.incident_id(), ", not ", mark.incident_id()));
  if (!mark.paper_date().empty() && mark.paper_date() != entry.date())
    return Invalid("document.metadata.redigitized.paper_date",
                   absl::StrCat("entry ", entry.id(), " is dated ",
                                entry.date(), ", not ", mark.paper_date()));
  if (!entry.settled_by_document().empty()) {
    // The same document sent again (same key): the store answers it as a
    // duplicate, nothing is settled twice.
    if (entry.settled_idempotency_key() == document.idempotency_key())
      return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        kField, ": entry ", entry.id(),
        " was re-digitized already by document ", entry.settled_by_document()));
  }
  if (settling_.contains(entry.id()))
    return absl::UnavailableError(
        absl::StrCat(kField, ": entry ", entry.id(),
                     " is being settled by another document now; try again"));
  v1::PaperRegisterEntry settled = entry;
  settled.set_settled_by_document(document.id());
  *settled.mutable_settled_at() = document.accepted_at();
  settled.set_settled_idempotency_key(document.idempotency_key());
  batch->records.push_back(
      {absl::StrCat(kEntryRecord, settled.id()), settled.SerializeAsString()});
  if (options_.audit) {
    v1::AuditEntry a;
    a.set_kind(v1::AUDIT_KIND_PAPER_REGISTER);
    a.set_actor(caller.spiffe_id);
    a.set_org(settled.org());
    a.set_document_id(document.id());
    a.set_action("Redigitized");
    a.set_outcome("OK");
    a.set_detail(absl::StrCat("entry ", settled.id(), " (incident ",
                              settled.incident_id(), ", paper date ",
                              settled.date(), ") settled by document ",
                              document.id()));
    options_.audit->AddTo(batch, std::move(a));
  }
  settling_[settled.id()] = std::move(settled);
  return absl::OkStatus();
}

void Incidents::Finished(const v1::Document& document, bool stored) {
  if (!document.metadata().has_redigitized()) return;
  const std::string& id = document.metadata().redigitized().register_entry_id();
  absl::MutexLock lock(&mu_);
  auto it = settling_.find(id);
  if (it == settling_.end() ||
      it->second.settled_by_document() != document.id())
    return;
  if (stored) entries_[id] = std::move(it->second);
  settling_.erase(it);
}

}  // namespace lienthong::broker
