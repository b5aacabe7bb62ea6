#include "lienthong/common/log.h"

#include <atomic>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace lienthong::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<int> g_format{static_cast<int>(Format::kJson)};

void AppendJsonString(std::string* out, absl::string_view s) {
  out->push_back('"');
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (u < 0x20 || u == 0x7f) {
          absl::StrAppend(out, absl::StrFormat("\\u%04x", u));
        } else {
          out->push_back(c);  // UTF-8 passes through
        }
    }
  }
  out->push_back('"');
}

// A text value: bare when it has no space, quote or control character.
void AppendTextValue(std::string* out, absl::string_view s) {
  bool bare = !s.empty();
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == ' ' || c == '"' || c == '\\' || u < 0x20 || u == 0x7f) {
      bare = false;
      break;
    }
  }
  if (bare) {
    out->append(s.data(), s.size());
    return;
  }
  out->push_back('"');
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (c == '\n') {
      out->append("\\n");
    } else if (u < 0x20 || u == 0x7f) {
      absl::StrAppend(out, absl::StrFormat("\\x%02x", u));
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

std::string FormatLine(Format format, Level level, absl::string_view component,
                       absl::string_view message, const Fields& fields) {
  std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(),
                                    absl::UTCTimeZone());
  std::string line;
  if (format == Format::kJson) {
    absl::StrAppend(&line, "{\"ts\":\"", ts, "\",\"level\":\"",
                    LevelName(level), "\"");
    if (!component.empty()) {
      line.append(",\"component\":");
      AppendJsonString(&line, component);
    }
    if (!message.empty()) {
      line.append(",\"msg\":");
      AppendJsonString(&line, message);
    }
    for (const auto& [key, value] : fields) {
      line.push_back(',');
      AppendJsonString(&line, key);
      line.push_back(':');
      AppendJsonString(&line, value);
    }
    line.append("}\n");
    return line;
  }
  absl::StrAppend(&line, ts, " lienthongd");
  if (level != Level::kInfo) absl::StrAppend(&line, " ", LevelName(level));
  if (!component.empty()) absl::StrAppend(&line, " ", component, ":");
  if (!message.empty()) absl::StrAppend(&line, " ", message);
  for (const auto& [key, value] : fields) {
    absl::StrAppend(&line, " ", key, "=");
    AppendTextValue(&line, value);
  }
  line.push_back('\n');
  return line;
}

}  // namespace

void SetFormat(Format format) { g_format = static_cast<int>(format); }
void SetLevel(Level level) { g_level = static_cast<int>(level); }
Level GetLevel() { return static_cast<Level>(g_level.load()); }
bool Enabled(Level level) { return static_cast<int>(level) >= g_level.load(); }

absl::StatusOr<Level> ParseLevel(absl::string_view name) {
  std::string n = absl::AsciiStrToLower(name);
  if (n == "debug") return Level::kDebug;
  if (n == "info") return Level::kInfo;
  if (n == "warning" || n == "warn") return Level::kWarning;
  if (n == "error") return Level::kError;
  return absl::InvalidArgumentError(absl::StrCat(
      "log level \"", name, "\": use debug, info, warning or error"));
}

absl::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarning:
      return "warning";
    case Level::kError:
      return "error";
  }
  return "info";
}

absl::StatusOr<Format> ParseFormat(absl::string_view name) {
  if (name == "json") return Format::kJson;
  if (name == "text") return Format::kText;
  return absl::InvalidArgumentError(
      absl::StrCat("log format \"", name, "\": use json or text"));
}

void Write(Level level, absl::string_view component, absl::string_view message,
           const Fields& fields) {
  if (!Enabled(level)) return;
  std::string line = FormatLine(static_cast<Format>(g_format.load()), level,
                                component, message, fields);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace lienthong::log
