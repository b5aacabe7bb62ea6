// `lienthong incidents` and `lienthong paper ...`: what an agency sees of
// incidents and how it keeps its paper-fallback register, and the
// re-digitization mark `lienthong send --redigitize ENTRY_ID` adds.
#ifndef LIENTHONG_CLIENT_SDK_CLI_PAPER_COMMANDS_H_
#define LIENTHONG_CLIENT_SDK_CLI_PAPER_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client-sdk/cli/commands.h"
#include "lienthong/admin_client.h"
#include "lienthong/client.h"

namespace lienthong::cli {

struct PaperRecordFlags {
  std::string incident_id;
  std::string number;
  std::string notation;
  std::string date;
  std::vector<std::string> parties;
  std::string subject;
};

struct PaperListFlags {
  std::string incident_id;
  bool outstanding = false;
};

// The incidents that affect this organization.
absl::Status RunIncidents(Client& client, bool open_only,
                          const OutputFlags& output);
absl::Status RunPaperRecord(Client& client, const PaperRecordFlags& flags,
                            const OutputFlags& output);
absl::Status RunPaperList(Client& client, const PaperListFlags& flags,
                          const OutputFlags& output);
absl::Status RunPaperReport(Client& client, const std::string& incident_id,
                            const OutputFlags& output);

// Operators: `lienthong admin incident declare|resolve|list` and
// `lienthong admin paper-report`, with a person certificate.
struct IncidentDeclareFlags {
  std::string scope;  // broker, peer, orgs
  std::string peer;
  std::vector<std::string> orgs;
  std::string severity;  // minor, major, critical
  std::string description;
};
absl::Status RunAdminIncidentDeclare(AdminClient& admin,
                                     const IncidentDeclareFlags& flags,
                                     const OutputFlags& output);
absl::Status RunAdminIncidentResolve(AdminClient& admin, const std::string& id,
                                     const std::string& resolution,
                                     const OutputFlags& output);
absl::Status RunAdminIncidents(AdminClient& admin, bool open_only,
                               const OutputFlags& output);
absl::Status RunAdminPaperReport(AdminClient& admin, const std::string& org,
                                 const std::string& incident_id,
                                 const OutputFlags& output);

// Completes document.metadata.redigitized (set to the entry id by
// BuildDocument) from this org's register: the entry's incident and paper
// date, and the paper date as issue_date when none was given. An entry not
// in this org's register is left for the broker to refuse precisely.
absl::Status CompleteRedigitizedMark(Client& client, v1::Document* document);

// One line for a notice (or its JSON).
std::string NoticeLine(const v1::Notice& notice, const OutputFlags& output);

}  // namespace lienthong::cli

#endif  // LIENTHONG_CLIENT_SDK_CLI_PAPER_COMMANDS_H_
