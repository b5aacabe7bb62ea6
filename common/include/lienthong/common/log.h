// The broker's log: one line per event on stderr, as JSON (the default, for
// log shippers) or as text (for people), with a level that can be changed
// while the broker runs (AdminService/SetLogLevel).
//
//   log::Write(log::Level::kInfo, "federation", "link to h50 up",
//              {{"peer", "h50"}, {"endpoint", "10.0.0.2:7443"}});
//   // {"ts":"2026-11-23T10:00:00.000Z","level":"info","component":
//   //  "federation","msg":"link to h50 up","peer":"h50","endpoint":...}
//   // text: 2026-11-23T10:00:00.000Z lienthongd federation: link to h50 up
//   //       peer=h50 endpoint=10.0.0.2:7443
//   if (log::Enabled(log::Level::kDebug)) log::Write(...);  // skip the work
//
// Thread-safe; each line is written with one call, so lines never interleave.
#ifndef LIENTHONG_COMMON_LOG_H_
#define LIENTHONG_COMMON_LOG_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lienthong::log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class Format { kJson, kText };

using Fields = std::vector<std::pair<std::string, std::string>>;

void SetFormat(Format format);
void SetLevel(Level level);
Level GetLevel();
bool Enabled(Level level);

// "debug", "info", "warning", "error"; INVALID_ARGUMENT otherwise.
absl::StatusOr<Level> ParseLevel(absl::string_view name);
absl::string_view LevelName(Level level);
absl::StatusOr<Format> ParseFormat(absl::string_view name);

// Writes one line if `level` is enabled. `component` may be empty (the
// broker itself).
void Write(Level level, absl::string_view component, absl::string_view message,
           const Fields& fields = {});

}  // namespace lienthong::log

#endif  // LIENTHONG_COMMON_LOG_H_
