#include "client-sdk/cli/format.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace lienthong::cli {
namespace {

constexpr char kUsagePayload[] = "type.googleapis.com/lienthong.cli.Usage";
constexpr char kChecksPayload[] =
    "type.googleapis.com/lienthong.cli.ChecksFailed";

struct BusinessStatusInfo {
  v1::BusinessStatus status;
  const char* name;
};
constexpr BusinessStatusInfo kBusinessStatuses[] = {
    {v1::BUSINESS_STATUS_ARRIVED, "arrived"},
    {v1::BUSINESS_STATUS_REJECTED, "rejected"},
    {v1::BUSINESS_STATUS_ACCEPTED, "accepted"},
    {v1::BUSINESS_STATUS_ASSIGNED, "assigned"},
    {v1::BUSINESS_STATUS_PROCESSING, "processing"},
    {v1::BUSINESS_STATUS_COMPLETED, "completed"},
    {v1::BUSINESS_STATUS_RECALL_OR_UPDATE_REQUESTED, "recall-requested"},
    {v1::BUSINESS_STATUS_AGREED, "agreed"},
    {v1::BUSINESS_STATUS_REFUSED, "refused"},
};

}  // namespace

absl::Status UsageError(absl::Status status) {
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

absl::Status ChecksFailed(absl::Status status) {
  status.SetPayload(kChecksPayload, absl::Cord("1"));
  return status;
}

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  if (status.GetPayload(kUsagePayload).has_value()) return kExitUsage;
  if (status.GetPayload(kChecksPayload).has_value()) return kExitOther;
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnavailable;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kUnimplemented:
      return kExitRefused;
    default:
      return kExitOther;
  }
}

void PrintError(const absl::Status& status) {
  std::cerr << "lienthong: " << absl::StatusCodeToString(status.code()) << ": "
            << status.message() << std::endl;
}

const std::map<std::string, v1::Urgency>& UrgencyNames() {
  static const auto* names = new std::map<std::string, v1::Urgency>{
      {"normal", v1::URGENCY_NORMAL},
      {"urgent", v1::URGENCY_URGENT},
      {"very-urgent", v1::URGENCY_VERY_URGENT},
      {"express", v1::URGENCY_EXPRESS},
  };
  return *names;
}

const std::map<std::string, v1::Classification>& ClassificationNames() {
  static const auto* names = new std::map<std::string, v1::Classification>{
      {"unclassified", v1::CLASSIFICATION_UNCLASSIFIED},
      {"confidential", v1::CLASSIFICATION_CONFIDENTIAL},
      {"secret", v1::CLASSIFICATION_SECRET},
      {"top-secret", v1::CLASSIFICATION_TOP_SECRET},
  };
  return *names;
}

const std::map<std::string, v1::Origin>& OriginNames() {
  static const auto* names = new std::map<std::string, v1::Origin>{
      {"person", v1::ORIGIN_PERSON},
      {"system", v1::ORIGIN_SYSTEM},
      {"ai", v1::ORIGIN_AI},
  };
  return *names;
}

const std::map<std::string, v1::DecisionCategory>& DecisionNames() {
  static const auto* names = new std::map<std::string, v1::DecisionCategory>{
      {"none", v1::DECISION_CATEGORY_NONE},
      {"personnel", v1::DECISION_CATEGORY_PERSONNEL},
      {"disciplinary", v1::DECISION_CATEGORY_DISCIPLINARY},
      {"financial", v1::DECISION_CATEGORY_FINANCIAL},
      {"administrative", v1::DECISION_CATEGORY_ADMINISTRATIVE},
      {"other", v1::DECISION_CATEGORY_OTHER},
  };
  return *names;
}

const std::map<std::string, v1::BusinessType>& BusinessTypeNames() {
  static const auto* names = new std::map<std::string, v1::BusinessType>{
      {"new", v1::BUSINESS_TYPE_NEW},
      {"recall", v1::BUSINESS_TYPE_RECALL},
      {"update", v1::BUSINESS_TYPE_UPDATE},
      {"replace", v1::BUSINESS_TYPE_REPLACE},
  };
  return *names;
}

std::optional<v1::BusinessStatus> ParseBusinessStatus(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  int number = 0;
  const bool numeric = absl::SimpleAtoi(lower, &number);
  for (const BusinessStatusInfo& info : kBusinessStatuses) {
    if (lower == info.name) return info.status;
    if (numeric && number == static_cast<int>(info.status)) return info.status;
  }
  return std::nullopt;
}

std::string UrgencyName(v1::Urgency urgency) {
  for (const auto& [name, value] : UrgencyNames()) {
    if (value == urgency) return name;
  }
  return "normal";  // UNSPECIFIED is treated as NORMAL
}

std::string DeliveryStateName(v1::DeliveryState state) {
  switch (state) {
    case v1::DELIVERY_STATE_ACCEPTED:
      return "accepted";
    case v1::DELIVERY_STATE_PENDING_APPROVAL:
      return "pending-approval";
    case v1::DELIVERY_STATE_FORWARDED:
      return "forwarded";
    case v1::DELIVERY_STATE_DELIVERED:
      return "delivered";
    case v1::DELIVERY_STATE_DENIED:
      return "denied";
    case v1::DELIVERY_STATE_EXPIRED:
      return "expired";
    case v1::DELIVERY_STATE_RECALLED:
      return "recalled";
    case v1::DELIVERY_STATE_APPROVED:
      return "approved";
    default:
      return "-";
  }
}

std::string BusinessStatusName(v1::BusinessStatus status) {
  for (const BusinessStatusInfo& info : kBusinessStatuses) {
    if (info.status == status) {
      return absl::StrFormat("%s (%02d)", info.name,
                             static_cast<int>(info.status));
    }
  }
  return "-";
}

std::string EventName(const v1::StatusEvent& event) {
  if (event.business_status() != v1::BUSINESS_STATUS_UNSPECIFIED) {
    return BusinessStatusName(event.business_status());
  }
  return DeliveryStateName(event.delivery_state());
}

std::string FormatTimestamp(const google::protobuf::Timestamp& timestamp) {
  if (timestamp.seconds() == 0 && timestamp.nanos() == 0) return "-";
  const absl::Time t = absl::FromUnixSeconds(timestamp.seconds()) +
                       absl::Nanoseconds(timestamp.nanos());
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", t, absl::LocalTimeZone());
}

std::string ToJson(const google::protobuf::Message& message,
                   bool with_defaults) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = with_defaults;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options)
           .ok()) {
    return "{}";
  }
  return json;
}

std::string JsonString(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", static_cast<int>(c));
        } else {
          out += c;  // UTF-8 passes through
        }
    }
  }
  out += "\"";
  return out;
}

Table::Table(std::vector<std::string> header) {
  rows_.push_back(std::move(header));
}

void Table::AddRow(std::vector<std::string> row) {
  rows_.push_back(std::move(row));
}

namespace {

// Display width: code points, not bytes, so Vietnamese text lines up.
size_t DisplayWidth(absl::string_view text) {
  size_t width = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++width;
  }
  return width;
}

}  // namespace

void Table::Print(std::ostream& out) const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], DisplayWidth(row[i]));
    }
  }
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) {
        line.append(widths[i] - DisplayWidth(row[i]) + 2, ' ');
      }
    }
    out << line << "\n";
  }
}

std::string EventLine(const v1::StatusEvent& event) {
  std::string line = absl::StrCat(
      event.sequence(), "  ", FormatTimestamp(event.at()), "  ",
      event.document_id(), "  ", event.recipient(), "  ", EventName(event));
  if (!event.reason().empty())
    absl::StrAppend(&line, "  reason: ", event.reason());
  if (!event.actor().empty()) absl::StrAppend(&line, "  by ", event.actor());
  return line;
}

}  // namespace lienthong::cli
