// Names, tables, JSON and exit codes of the `lienthong` command-line tool.
// All functions are thread-safe.
#ifndef LIENTHONG_CLIENT_SDK_CLI_FORMAT_H_
#define LIENTHONG_CLIENT_SDK_CLI_FORMAT_H_

#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"
#include "lienthong/v1/exchange.pb.h"

namespace lienthong::cli {

// Exit codes, as documented in `lienthong --help`.
inline constexpr int kExitOk = 0;
inline constexpr int kExitOther = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitRefused = 3;
inline constexpr int kExitUnavailable = 4;

// Marks `status` as a usage error (a bad flag value or an unusable local
// file named on the command line): exit code 2 whatever its code.
absl::Status UsageError(absl::Status status);
// Marks `status` as checks that ran and failed (`policy test` cases): exit
// code 1 whatever its code.
absl::Status ChecksFailed(absl::Status status);
int ExitCodeFor(const absl::Status& status);
// "lienthong: <CODE>: <message>" on stderr.
void PrintError(const absl::Status& status);

// Command-line spellings of the enums ("very-urgent", "top-secret", ...).
const std::map<std::string, v1::Urgency>& UrgencyNames();
const std::map<std::string, v1::Classification>& ClassificationNames();
const std::map<std::string, v1::Origin>& OriginNames();
const std::map<std::string, v1::DecisionCategory>& DecisionNames();
const std::map<std::string, v1::BusinessType>& BusinessTypeNames();
// A business status by name ("accepted") or national code ("03", "3").
std::optional<v1::BusinessStatus> ParseBusinessStatus(absl::string_view text);

std::string UrgencyName(v1::Urgency urgency);
std::string DeliveryStateName(v1::DeliveryState state);
// "accepted (03)".
std::string BusinessStatusName(v1::BusinessStatus status);
// What a status event reports: its delivery state or business status.
std::string EventName(const v1::StatusEvent& event);

// Local time "2006-01-02 15:04:05", or "-" when unset.
std::string FormatTimestamp(const google::protobuf::Timestamp& timestamp);

// One line of JSON (proto field names, enums by name). With
// `with_defaults`, fields at their default value (false, 0, "", [])
// are printed too, so that scripts can rely on every field being there.
std::string ToJson(const google::protobuf::Message& message,
                   bool with_defaults = false);
// `text` as a quoted JSON string.
std::string JsonString(absl::string_view text);

// Columns aligned on the widest cell; the last column is not padded.
class Table {
 public:
  explicit Table(std::vector<std::string> header);
  void AddRow(std::vector<std::string> row);
  void Print(std::ostream& out) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// One human-readable line for a status event.
std::string EventLine(const v1::StatusEvent& event);

}  // namespace lienthong::cli

#endif  // LIENTHONG_CLIENT_SDK_CLI_FORMAT_H_
