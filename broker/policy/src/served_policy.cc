// ServedPolicy, DecisionLog and DryRun.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "broker/policy/src/yaml_reader.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/policy/policy.h"

namespace lienthong::policy {
namespace {

constexpr absl::Duration kSettleTime = absl::Milliseconds(300);

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  return internal::ReadTextFile(path, "policy file");
}

// Replaces `path` with `content` so that a crash leaves the old file or the
// new one, never a mix: temporary file, fsync, rename, fsync the directory.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view content) {
  std::filesystem::path p(path);
  std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  // A file of its own under a name nobody can foresee: never one someone
  // else writes (another broker on the same volume) or planted as a link
  // to make the broker overwrite another file.
  std::string tmp = absl::StrCat(path, ".tmp.XXXXXX");
  int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  if (::fchmod(fd, 0640) != 0) {
    absl::Status s = ErrnoError("cannot set the mode of", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  }
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status s = ErrnoError("cannot write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    absl::Status s = ErrnoError("cannot sync", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = ErrnoError("cannot replace", path);
    ::unlink(tmp.c_str());
    return s;
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace

// ---- DecisionLog ------------------------------------------------------------

DecisionLog::DecisionLog(size_t capacity) : capacity_(capacity) {}

void DecisionLog::Record(absl::Time at, const Flow& flow,
                         const Decision& decision, const Policy& policy) {
  if (capacity_ == 0) return;
  Entry e{at, flow, decision, policy.shared_from_this()};
  e.decision.detail.clear();
  Entry evicted;  // destroyed after the lock: it may hold the last
                  // reference to an old policy
  absl::MutexLock lock(&mu_);
  if (ring_.size() < capacity_) {
    ring_.push_back(std::move(e));
  } else {
    evicted = std::exchange(ring_[next_], std::move(e));
  }
  next_ = (next_ + 1) % capacity_;
  ++total_;
}

std::vector<RecordedDecision> DecisionLog::Recent(size_t limit) const {
  std::vector<Entry> entries;
  {
    absl::MutexLock lock(&mu_);
    size_t n = std::min(limit, ring_.size());
    entries.reserve(n);
    // The oldest kept entry is at next_ once the ring is full, at 0 before.
    size_t start = ring_.size() < capacity_ ? 0 : next_;
    for (size_t k = ring_.size() - n; k < ring_.size(); ++k) {
      entries.push_back(ring_[(start + k) % ring_.size()]);
    }
  }
  std::vector<RecordedDecision> out;
  out.reserve(entries.size());
  for (const Entry& e : entries) {
    RecordedDecision r;
    r.at = e.at;
    r.flow = e.flow;
    r.effect = e.decision.effect;
    r.policy_version = e.policy->version();
    r.rules = e.decision.RuleNames(*e.policy);
    r.obligations = e.decision.obligations;
    out.push_back(std::move(r));
  }
  return out;
}

DryRunReport DryRun(const std::vector<RecordedDecision>& decisions,
                    const Policy& candidate) {
  DryRunReport report;
  for (const RecordedDecision& before : decisions) {
    ++report.examined;
    Decision after = candidate.Evaluate(before.flow);
    if (after.effect == before.effect &&
        after.obligations == before.obligations) {
      ++report.unchanged;
      continue;
    }
    DecisionChange c;
    c.before = before;
    c.after_effect = after.effect;
    c.after_rules = after.RuleNames(candidate);
    c.after_obligations = after.obligations;
    report.changes.push_back(std::move(c));
  }
  return report;
}

// ---- ServedPolicy -----------------------------------------------------------

ServedPolicy::ServedPolicy(const ServedPolicyOptions& options)
    : options_(options), log_(options.decision_log_capacity) {}

absl::StatusOr<std::unique_ptr<ServedPolicy>> ServedPolicy::Open(
    const ServedPolicyOptions& options) {
  std::unique_ptr<ServedPolicy> served(new ServedPolicy(options));
  std::shared_ptr<const Policy> initial;
  if (options.path.empty()) {
    ASSIGN_OR_RETURN(
        initial, Policy::Compile(options.embedded_source, "<embedded policy>",
                                 options.compile));
  } else {
    ASSIGN_OR_RETURN(initial,
                     Policy::CompileFile(options.path, options.compile));
  }
  {
    absl::MutexLock lock(&served->mu_);
    served->current_ = std::move(initial);
    served->loaded_at_ = absl::Now();
  }
  if (!options.path.empty() && options.reload_interval > absl::ZeroDuration()) {
    served->watcher_ =
        std::make_unique<std::thread>([s = served.get()] { s->WatchLoop(); });
  }
  return served;
}

ServedPolicy::~ServedPolicy() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (watcher_) watcher_->join();
}

std::shared_ptr<const Policy> ServedPolicy::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

absl::Status ServedPolicy::last_reload_status() const {
  absl::MutexLock lock(&mu_);
  return last_reload_;
}

absl::Time ServedPolicy::loaded_at() const {
  absl::MutexLock lock(&mu_);
  return loaded_at_;
}

void ServedPolicy::WatchLoop() {
  // The file as last read (device, inode, size, modification time): an
  // unchanged file is neither read nor compiled again.
  std::optional<std::tuple<dev_t, ino_t, off_t, absl::Time>> last_read;
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.reload_interval);
    if (stopping_) break;
    mu_.Unlock();
    // An editor writing the file in place could be caught half way, and a
    // truncated policy may well be valid YAML: wait until the file has not
    // changed for a moment before reading it.
    struct stat st;
    bool found = ::stat(options_.path.c_str(), &st) == 0;
    auto seen = found ? std::make_optional(
                            std::make_tuple(st.st_dev, st.st_ino, st.st_size,
                                            absl::TimeFromTimespec(st.st_mtim)))
                      : std::nullopt;
    bool settled = !found || absl::Now() - std::get<3>(*seen) >= kSettleTime;
    if (settled && (!found || seen != last_read)) {
      absl::Status s = ReloadFromFile();
      // A policy that does not compile is not compiled again until it
      // changes; a read error is retried.
      if (s.ok() || absl::IsInvalidArgument(s)) last_read = seen;
      bool report = false;
      {
        absl::MutexLock lock(&mu_);
        // Report a rejection once, not at every tick.
        report = !s.ok() && s.message() != last_logged_error_;
        last_logged_error_ = s.ok() ? "" : std::string(s.message());
      }
      // Outside the lock: the log callback may call back into this object.
      if (report && options_.log) options_.log(s.message());
    }
    mu_.Lock();
  }
}

absl::Status ServedPolicy::ReloadFromFile() {
  if (options_.path.empty()) return absl::OkStatus();
  absl::MutexLock apply(&apply_mu_);
  absl::StatusOr<std::string> text = ReadFile(options_.path);
  std::shared_ptr<const Policy> current = Current();
  absl::Status result;
  if (text.ok()) {
    if (current && *text == current->source()) {
      absl::MutexLock lock(&mu_);
      last_reload_ = absl::OkStatus();  // e.g. a bad edit was reverted
      return absl::OkStatus();
    }
    absl::StatusOr<std::shared_ptr<const Policy>> next =
        Policy::Compile(*text, options_.path, options_.compile);
    if (next.ok()) {
      std::shared_ptr<const Policy> swapped = *next;
      {
        absl::MutexLock lock(&mu_);
        current_ = *std::move(next);
        loaded_at_ = absl::Now();
        last_reload_ = absl::OkStatus();
      }
      if (options_.log) {
        options_.log(absl::StrCat("policy ", swapped->version(), " from ",
                                  options_.path, " now serving (",
                                  swapped->rule_count(), " rules)"));
      }
      if (options_.on_file_reload) {
        options_.on_file_reload(*swapped,
                                current ? current->version() : std::string());
      }
      return absl::OkStatus();
    }
    result = absl::InvalidArgumentError(
        absl::StrCat(next.status().message(), " — policy rejected; ",
                     current ? current->version() : "the previous policy",
                     " keeps serving"));
  } else {
    result = absl::Status(text.status().code(),
                          absl::StrCat(text.status().message(),
                                       " — the serving policy is unchanged"));
  }
  absl::MutexLock lock(&mu_);
  last_reload_ = result;
  return result;
}

absl::StatusOr<std::shared_ptr<const Policy>> ServedPolicy::Apply(
    absl::string_view source) {
  absl::MutexLock apply(&apply_mu_);
  std::string name = options_.path.empty() ? "<applied policy>" : options_.path;
  ASSIGN_OR_RETURN(std::shared_ptr<const Policy> next,
                   Policy::Compile(source, name, options_.compile));
  std::shared_ptr<const Policy> current = Current();
  if (current && current->version() == next->version()) {
    // Serving already; still repair the file if a rejected edit is on disk,
    // or the next restart would fail on it.
    if (!options_.path.empty()) {
      absl::StatusOr<std::string> on_disk = ReadFile(options_.path);
      if (!on_disk.ok() || *on_disk != source) {
        RETURN_IF_ERROR(WriteFileAtomically(options_.path, source));
      }
      absl::MutexLock lock(&mu_);
      last_reload_ = absl::OkStatus();
    }
    return current;
  }
  if (!options_.path.empty()) {
    RETURN_IF_ERROR(WriteFileAtomically(options_.path, source));
  }
  {
    absl::MutexLock lock(&mu_);
    current_ = next;
    loaded_at_ = absl::Now();
    last_reload_ = absl::OkStatus();
  }
  if (options_.log) {
    options_.log(absl::StrCat("policy ", next->version(), " applied (",
                              next->rule_count(), " rules)"));
  }
  return next;
}

Decision ServedPolicy::Decide(const Flow& flow, absl::Time now,
                              std::shared_ptr<const Policy>* policy_out) {
  std::shared_ptr<const Policy> policy = Current();
  Decision d;
  if (policy == nullptr) {
    d.cause = Cause::kError;
    d.detail = "no policy is loaded";
    return d;
  }
  d = policy->Evaluate(flow);
  log_.Record(now, flow, d, *policy);
  if (policy_out) *policy_out = std::move(policy);
  return d;
}

}  // namespace lienthong::policy
