// Incidents, the paper-fallback register and re-digitization: the broker's
// record of outages and of the work done on paper meanwhile. Knows nothing
// of gRPC; the service layer (IncidentServiceImpl) authorizes and calls it.
//
//   ASSIGN_OR_RETURN(auto incidents, Incidents::Open(options, store.get()));
//   exchange_options.admission = incidents.get();   // settles entries
//   exchange_options.notices_on_connect = [&](const std::string& org) {
//     return incidents->OpenNotices(org);
//   };
//   ... open the exchange ...
//   incidents->SetNoticeSink([&](const std::string& org, const v1::Notice& n) {
//     exchange->Notify(org, n);
//   });
//   ASSIGN_OR_RETURN(v1::Incident i, incidents->Declare(operator, request));
//
// State is kept in the store's records (an incident under "incident/<id>",
// an entry under "paper-register/<id>"), so it survives a restart; every
// change is written with its audit entry in one synced batch. A
// re-digitized document settles its entry in the batch that stores it (see
// SendAdmission).
//
// Thread-safe. Methods that write block until the write is durable: call
// them off gRPC callback threads.
#ifndef LIENTHONG_BROKER_INCIDENTS_H_
#define LIENTHONG_BROKER_INCIDENTS_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lienthong/broker/audit.h"
#include "lienthong/broker/exchange.h"
#include "lienthong/common/clock.h"
#include "lienthong/common/identity.h"
#include "lienthong/storage/store.h"
#include "lienthong/v1/incidents.pb.h"

namespace lienthong::broker {

struct IncidentOptions {
  // SPIFFE id of this broker. Required.
  std::string broker_id;
  // The organizations this broker serves. Default: none.
  std::vector<std::string> local_orgs;
  // Names of the configured peer brokers (a PEER_LINK scope must name one).
  std::vector<std::string> peers;
  // Every change and refusal is appended here. Not owned. Optional.
  AuditLog* audit = nullptr;
  // Resolved incidents announced to peers for this long after resolution,
  // so peers that missed the moment still learn it. Default 24 h.
  absl::Duration announce_resolved_for = absl::Hours(24);
  // Incidents of one peer broker kept over this broker's life (open and
  // resolved: none is removed yet): past it, the peer's new incidents are
  // not recorded (a warning an hour names the peer), so a broken or
  // hostile peer cannot fill this broker's memory and store, whatever the
  // dates it claims. Default 10,000.
  int max_incidents_per_peer = 10000;

  // INVALID_ARGUMENT naming the field.
  absl::Status Validate() const;
};

class Incidents : public SendAdmission {
 public:
  // Loads incidents and the register from `store` (not owned; must outlive
  // this). INVALID_ARGUMENT for bad options; DATA_LOSS for a record that
  // does not parse.
  static absl::StatusOr<std::unique_ptr<Incidents>> Open(
      const IncidentOptions& options, storage::Store* store,
      Clock* clock = Clock::Real());
  // Waits for the writes of what peers announced.
  ~Incidents() override;

  // Where notices go: called once per affected organization, never while a
  // lock of this class is held. Must not block. Set it before serving;
  // without it nobody is notified.
  using NoticeSink =
      std::function<size_t(const std::string& org, const v1::Notice& notice)>;
  void SetNoticeSink(NoticeSink sink);

  // ---- Operators (the caller's role is checked by the caller) ----

  // Records and announces a new incident; notifies every affected
  // organization. INVALID_ARGUMENT naming the field (scope kind missing, a
  // malformed org code, an unknown peer, no description, unknown severity).
  absl::StatusOr<v1::Incident> Declare(const Principal& caller,
                                       const v1::DeclareIncidentRequest& req);
  // INVALID_ARGUMENT for an empty id, NOT_FOUND for an unknown one,
  // FAILED_PRECONDITION when it is resolved already or was declared at
  // another broker.
  absl::StatusOr<v1::Incident> Resolve(const Principal& caller,
                                       const v1::ResolveIncidentRequest& req);
  // `see_all`: operators and auditors; otherwise the caller must be an
  // organization and sees the incidents affecting it (PERMISSION_DENIED).
  absl::StatusOr<v1::ListIncidentsResponse> List(
      const Principal& caller, const v1::ListIncidentsRequest& req,
      bool see_all);

  // ---- Organizations ----

  // Records a paper-handled document of the caller's organization.
  // PERMISSION_DENIED for a caller that is not an organization served
  // here; INVALID_ARGUMENT naming the field (empty subject, a date that
  // is not YYYY-MM-DD, a party that is not an organization code, overlong
  // text, several open incidents and none named);
  // NOT_FOUND for an unknown incident; FAILED_PRECONDITION when no open
  // incident covers the organization (or the named one does not).
  absl::StatusOr<v1::PaperRegisterEntry> RecordPaper(
      const Principal& caller, const v1::RecordPaperDocumentRequest& req);
  // Entries visible to the caller (see_all as for List), newest last.
  // INVALID_ARGUMENT for a malformed org code filter; PERMISSION_DENIED for
  // an organization asking for another's.
  absl::StatusOr<v1::ListPaperRegisterResponse> ListRegister(
      const Principal& caller, const v1::ListPaperRegisterRequest& req,
      bool see_all);
  absl::StatusOr<v1::ReconciliationReport> Report(
      const Principal& caller, const v1::GetReconciliationReportRequest& req,
      bool see_all);

  // ---- The exchange, admin and federation ----

  // Declared notices of the open incidents that affect `org`.
  std::vector<v1::Notice> OpenNotices(const std::string& org);
  // The open incidents, newest first.
  std::vector<v1::Incident> OpenIncidents();
  // What to tell peers: incidents declared here, open or resolved within
  // announce_resolved_for.
  v1::IncidentAnnouncement Announcement();
  // What `peer` announced: incidents new to this broker are recorded and
  // their affected organizations here notified; resolutions likewise.
  // Incidents not declared at `peer` are ignored. Blocks on the store.
  void LearnFromPeer(const std::string& peer,
                     const v1::IncidentAnnouncement& announcement);
  // Grows whenever Announcement() changes.
  uint64_t generation() const;

  // ---- SendAdmission ----
  absl::Status Admit(const Principal& caller, const v1::Document& document,
                     storage::WriteBatch* batch) override;
  void Finished(const v1::Document& document, bool stored) override;

 private:
  Incidents(const IncidentOptions& options, storage::Store* store,
            Clock* clock);
  absl::Status Load();
  // The organizations served here that `incident` affects.
  std::vector<std::string> AffectedHere(const v1::Incident& incident) const;
  bool Covers(const v1::Incident& incident, const std::string& org) const;
  v1::Incident WithAffected(v1::Incident incident) const;
  absl::Status WriteIncident(const v1::Incident& incident,
                             std::optional<v1::AuditEntry> audit);
  void NotifyAll(const v1::Incident& incident, v1::NoticeKind kind,
                 const std::string& actor);
  absl::Status CheckVisibleOrg(const Principal& caller, const std::string& org,
                               bool see_all, std::string* filter) const;

  const IncidentOptions options_;
  const std::string broker_name_;
  storage::Store* const store_;
  Clock* const clock_;
  const std::set<std::string> local_orgs_;
  const std::set<std::string> peers_;

  mutable absl::Mutex mu_;
  std::map<std::string, v1::Incident> incidents_ ABSL_GUARDED_BY(mu_);
  // How many of incidents_ each other broker declared.
  std::map<std::string, int> kept_per_broker_ ABSL_GUARDED_BY(mu_);
  // When a peer's incidents past the limit were last logged.
  std::map<std::string, absl::Time> last_limit_warning_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::PaperRegisterEntry> entries_ ABSL_GUARDED_BY(mu_);
  // Entries a document being stored is about to settle, as they will be.
  std::map<std::string, v1::PaperRegisterEntry> settling_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  // Writes of announced incidents not yet completed (the destructor waits).
  int pending_writes_ ABSL_GUARDED_BY(mu_) = 0;
  NoticeSink sink_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_INCIDENTS_H_
