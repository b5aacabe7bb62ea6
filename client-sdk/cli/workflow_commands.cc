#include "client-sdk/cli/workflow_commands.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client-sdk/cli/format.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::cli {
namespace {

void PrintConversions(const std::vector<v1::PaperConversion>& conversions,
                      const OutputFlags& output) {
  if (output.json) {
    for (const v1::PaperConversion& c : conversions)
      std::cout << ToJson(c) << std::endl;
    return;
  }
  Table table({"WHEN", "DOCUMENT", "ORG", "BY", "REASON"});
  for (const v1::PaperConversion& c : conversions) {
    table.AddRow({FormatTimestamp(c.at()), c.document_id(), c.org(),
                  c.converted_by().empty() ? c.actor() : c.converted_by(),
                  c.reason()});
  }
  table.Print(std::cout);
}

}  // namespace

absl::Status RunRecall(Client& client, const RecallFlags& flags,
                       const OutputFlags& output) {
  std::vector<std::string> to = flags.to;
  if (to.empty()) {
    // Every recipient of the original, as its sender sees them.
    ASSIGN_OR_RETURN(v1::DocumentStatus status,
                     client.GetDocumentStatus(flags.document_id));
    for (const v1::RecipientStatus& r : status.recipients())
      to.push_back(r.recipient());
  }
  v1::Document recall =
      NewChangeRequest(flags.document_id, to, v1::BUSINESS_TYPE_RECALL,
                       flags.subject.empty()
                           ? absl::StrCat("Thu hồi văn bản ", flags.document_id)
                           : flags.subject,
                       flags.reason);
  ASSIGN_OR_RETURN(SendReceipt receipt, client.Send(recall));
  if (output.json) {
    std::cout << "{\"recall_id\":" << JsonString(receipt.document_id)
              << ",\"refers_to\":" << JsonString(flags.document_id) << "}"
              << std::endl;
    return absl::OkStatus();
  }
  std::cout << "recall " << receipt.document_id << " of " << flags.document_id
            << " sent to " << absl::StrJoin(to, ", ")
            << "; each recipient answers agreed or refused (see `lienthong "
               "track "
            << flags.document_id << "`)" << std::endl;
  return absl::OkStatus();
}

absl::Status RunPaperConvert(Client& client, const PaperConvertFlags& flags,
                             const OutputFlags& output) {
  ASSIGN_OR_RETURN(
      v1::RecordPaperConversionResponse recorded,
      client.RecordPaperConversion(flags.document_id, flags.reason, flags.by));
  if (output.json) {
    std::cout << ToJson(recorded) << std::endl;
    return absl::OkStatus();
  }
  std::cout << "paper conversion of " << flags.document_id << " recorded at "
            << FormatTimestamp(recorded.conversion().at()) << " (event "
            << recorded.event().sequence() << ")" << std::endl;
  return absl::OkStatus();
}

absl::Status RunPaperConversions(Client& client, uint32_t limit,
                                 const OutputFlags& output) {
  ASSIGN_OR_RETURN(std::vector<v1::PaperConversion> conversions,
                   client.ListPaperConversions(limit));
  PrintConversions(conversions, output);
  return absl::OkStatus();
}

absl::Status RunAdminPaperConversions(AdminClient& admin,
                                      const std::string& org, uint32_t limit,
                                      const OutputFlags& output) {
  ASSIGN_OR_RETURN(v1::ListPaperConversionsResponse listed,
                   admin.ListPaperConversions(org, limit));
  PrintConversions({listed.conversions().begin(), listed.conversions().end()},
                   output);
  return absl::OkStatus();
}

}  // namespace lienthong::cli
