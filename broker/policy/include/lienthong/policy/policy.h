// The controlled-sharing policy engine: decides, for every document flow
// (sender → recipient, with the document's attributes), whether it may
// happen and under which obligations. Deny by default; any matching `forbid`
// beats every `permit`; rule order never matters.
//
//   ASSIGN_OR_RETURN(std::shared_ptr<const Policy> p,
//                    Policy::Compile(yaml_text, "central.yaml"));
//   Flow flow{.sender = "000.00.00.H49", .recipient = "000.00.00.G22"};
//   Decision d = p->Evaluate(flow);
//   if (!d.permitted()) return absl::PermissionDeniedError(d.Reason(*p));
//
// A compiled Policy is immutable and thread-safe. ServedPolicy serves one,
// swaps in new ones atomically (file change or Apply) and keeps recent
// decisions (DecisionLog) for dry runs.
#ifndef LIENTHONG_POLICY_POLICY_H_
#define LIENTHONG_POLICY_POLICY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace lienthong::policy {

// Numbered as in lienthong.v1 (document.proto), so conversion is a cast.
enum class Classification {
  kUnclassified = 1,
  kConfidential = 2,
  kSecret = 3,
  kTopSecret = 4
};
enum class Urgency { kNormal = 1, kUrgent = 2, kVeryUrgent = 3, kExpress = 4 };
enum class BusinessType { kNew = 1, kRecall = 2, kUpdate = 3, kReplace = 4 };
enum class Origin { kPerson = 1, kSystem = 2, kAi = 3 };
enum class DecisionCategory {
  kNone = 0,
  kPersonnel = 1,
  kDisciplinary = 2,
  kFinancial = 3,
  kAdministrative = 4,
  kOther = 5
};

// The policy-language spelling of each value ("very_urgent", "ai", ...), and
// back. Parse* return nullopt for an unknown word.
absl::string_view Name(Classification v);
absl::string_view Name(Urgency v);
absl::string_view Name(BusinessType v);
absl::string_view Name(Origin v);
absl::string_view Name(DecisionCategory v);
std::optional<Classification> ParseClassification(absl::string_view s);
std::optional<Urgency> ParseUrgency(absl::string_view s);
std::optional<BusinessType> ParseBusinessType(absl::string_view s);
std::optional<Origin> ParseOrigin(absl::string_view s);
std::optional<DecisionCategory> ParseDecisionCategory(absl::string_view s);

// One document flow: what a decision is about.
struct Flow {
  std::string sender;         // org code of the sending organization
  std::string recipient;      // org code of one recipient
  std::string document_type;  // metadata.document_type, e.g. "Quyết định"
  Classification classification = Classification::kUnclassified;
  Urgency urgency = Urgency::kNormal;
  BusinessType business_type = BusinessType::kNew;
  Origin origin = Origin::kPerson;
  DecisionCategory decision_category = DecisionCategory::kNone;
  // The recipient is served by another broker.
  bool cross_broker = false;

  // One line, e.g. "000.00.00.H49 → 000.00.00.G22 (Công văn, unclassified,
  // normal, new, person, none, local)".
  std::string DebugString() const;
};

// Who must approve before delivery. `org` empty means the sender's own org.
struct Approver {
  std::string role;
  std::string org;
  friend bool operator==(const Approver&, const Approver&) = default;
  friend auto operator<=>(const Approver&, const Approver&) = default;
};

// What a permit obliges; a decision carries the union over all permits that
// matched (any flag set wins; the longest retention; the smallest size).
struct Obligations {
  bool end_to_end_encryption = false;
  std::vector<Approver> approvals;  // sorted, unique
  std::optional<absl::Duration> retention;
  std::optional<uint64_t> max_size_bytes;
  bool paper_conversion_forbidden = false;

  bool empty() const {
    return !end_to_end_encryption && approvals.empty() && !retention &&
           !max_size_bytes && !paper_conversion_forbidden;
  }
  // "e2e, approval(approver@sender), retention 3650d, max_size 20971520,
  // no_paper" or "none".
  std::string DebugString() const;
  friend bool operator==(const Obligations&, const Obligations&) = default;
};

// Obligations this broker can enforce. Compiling a policy that attaches any
// other obligation fails with an error naming the rule and the obligation.
struct Capabilities {
  bool end_to_end_encryption = true;
  bool approval = true;
  bool retention = true;
  bool max_size = true;
  bool paper_conversion_forbidden = true;
};

enum class Effect { kDeny = 0, kPermit = 1 };
absl::string_view Name(Effect e);  // "deny" / "permit"

// Why a decision came out as it did.
enum class Cause {
  kPermitted,     // at least one permit matched, no forbid
  kForbidden,     // a forbid matched (rules: the forbids)
  kNoPermit,      // deny by default: nothing permits this flow
  kBuiltInGuard,  // a guard no policy can override (detail says which)
  kError,         // evaluation failed; fail closed (detail says why)
};

class Policy;

// "sha256:1f2e3d4c5b6a": a policy version shortened to 12 hex digits, for
// messages and table columns (structured fields carry the full version).
std::string ShortVersion(absl::string_view version);

struct Decision {
  Effect effect = Effect::kDeny;
  Cause cause = Cause::kError;
  // The deciding rules as indexes into the policy: the matching forbids for
  // kForbidden, every matching permit for kPermitted, empty otherwise.
  absl::InlinedVector<uint32_t, 4> rules;
  Obligations obligations;  // only for kPermitted
  std::string detail;       // for kBuiltInGuard and kError

  bool permitted() const { return effect == Effect::kPermit; }
  // The deciding rules' names, in index order.
  std::vector<std::string> RuleNames(const Policy& policy) const;
  // A sentence naming the policy version and rules, fit for a gRPC status:
  // "policy sha256:1f2e… forbids it: rule \"no-ai-personnel\"", ...
  std::string Reason(const Policy& policy, const Flow& flow) const;
};

// A rule that did not decide, and which of its conditions failed.
struct NearMiss {
  std::string rule;
  Effect effect;
  std::vector<std::string> failed;  // e.g. "recipient 000.00.00.H50 is not
                                    // in group provinces-south"
};

struct Explanation {
  Decision decision;
  std::vector<std::string> deciding_rules;
  std::vector<NearMiss> near_misses;  // fewest failed conditions first
  std::string reason;
};

struct CompileOptions {
  Capabilities capabilities;
  // Largest policy text, bytes. Default 16 MiB.
  size_t max_source_bytes = 16 << 20;
};

class Policy : public std::enable_shared_from_this<Policy> {
 public:
  // Parses and compiles YAML policy text. INVALID_ARGUMENT
  // "<file_name>:<line>:<column>: <what>" for unknown fields, unknown org
  // groups, impossible levels, duplicate rule names, malformed org codes,
  // unenforceable obligations, ...: the first problem found.
  static absl::StatusOr<std::shared_ptr<const Policy>> Compile(
      absl::string_view yaml, absl::string_view file_name,
      const CompileOptions& options = {});
  // Reads and compiles a file; NOT_FOUND / PERMISSION_DENIED for an
  // unreadable one.
  static absl::StatusOr<std::shared_ptr<const Policy>> CompileFile(
      const std::string& path, const CompileOptions& options = {});

  ~Policy();

  // "sha256:" and the hex SHA-256 of the source text.
  const std::string& version() const;
  const std::string& source() const;
  const std::string& file_name() const;
  size_t rule_count() const;
  size_t group_count() const;
  const std::string& rule_name(uint32_t index) const;
  Effect rule_effect(uint32_t index) const;

  // Decides one flow. Never fails: any error denies (Cause::kError).
  // Thread-safe; does not allocate on the permit path for flows whose
  // deciding rules have no approval obligations.
  Decision Evaluate(const Flow& flow) const;

  // Evaluate, plus the rule names and up to `max_near_misses` rules that
  // failed the fewest conditions, with the conditions. Slower: for operators.
  Explanation Explain(const Flow& flow, size_t max_near_misses = 5) const;

  struct Impl;  // opaque: defined by the compiler

 private:
  explicit Policy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One recorded decision, as kept for dry runs.
struct RecordedDecision {
  absl::Time at;
  Flow flow;
  Effect effect;
  std::string policy_version;
  std::vector<std::string> rules;
  Obligations obligations;
};

// The last `capacity` decisions, in memory. Thread-safe.
class DecisionLog {
 public:
  explicit DecisionLog(size_t capacity = 10000);
  // `policy` must be owned by a shared_ptr (as Compile returns it); the log
  // keeps it alive while its decisions are kept.
  void Record(absl::Time at, const Flow& flow, const Decision& decision,
              const Policy& policy);
  // Oldest first, at most `limit` of the newest.
  std::vector<RecordedDecision> Recent(size_t limit) const;
  size_t capacity() const { return capacity_; }

 private:
  // What Record keeps: the deciding policy and rule indexes, so recording
  // costs no string copies; names are resolved in Recent.
  struct Entry {
    absl::Time at;
    Flow flow;
    Decision decision;
    std::shared_ptr<const Policy> policy;
  };
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::vector<Entry> ring_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t total_ ABSL_GUARDED_BY(mu_) = 0;
};

// A recorded decision that a candidate policy would decide differently.
struct DecisionChange {
  RecordedDecision before;
  Effect after_effect;
  std::vector<std::string> after_rules;
  Obligations after_obligations;
};

struct DryRunReport {
  size_t examined = 0;
  size_t unchanged = 0;
  std::vector<DecisionChange> changes;  // oldest first
};

// Re-decides `decisions` under `candidate`. A change is a different effect
// or different obligations.
DryRunReport DryRun(const std::vector<RecordedDecision>& decisions,
                    const Policy& candidate);

struct ServedPolicyOptions {
  // Policy file. Empty: serve `embedded_source` and persist nothing.
  std::string path;
  // The policy text when `path` is empty (the development default).
  std::string embedded_source;
  // How often the file is checked for changes; zero: never. Default 2 s.
  absl::Duration reload_interval = absl::Seconds(2);
  // Decisions kept for dry runs. Default 10,000.
  size_t decision_log_capacity = 10000;
  CompileOptions compile;
  // Where reloads and rejected policies are reported (one line each).
  // Default: nowhere.
  std::function<void(absl::string_view)> log;
  // Called after a policy read from the file, an edit made outside Apply,
  // was swapped in for the one with version `before` (on the watcher's
  // thread, with no lock held that Current or Decide take): the broker
  // records it in its audit log. Must not call Apply or ReloadFromFile.
  // Default: nothing.
  std::function<void(const Policy& serving, const std::string& before)>
      on_file_reload;
};

// The policy a broker serves now, where it lives on disk, and its recent
// decisions. Swapping is atomic: an evaluation sees the old policy or the new
// one, never a mix. A bad policy (from the file or from Apply) is rejected as
// a whole and the previous one keeps serving. Thread-safe.
class ServedPolicy {
 public:
  // Compiles the file (or the embedded text) and, with a reload interval,
  // starts watching the file. The compile error if it does not compile.
  static absl::StatusOr<std::unique_ptr<ServedPolicy>> Open(
      const ServedPolicyOptions& options);
  ~ServedPolicy();  // stops watching

  std::shared_ptr<const Policy> Current() const;

  // Compiles `source`; if it compiles, writes it to the policy file
  // atomically (temporary file, fsync, rename) and swaps it in. Returns the
  // new policy, or INVALID_ARGUMENT "<file>:<line>:<column>: ..." and keeps
  // the old one. Applying the serving version again is a no-op.
  absl::StatusOr<std::shared_ptr<const Policy>> Apply(absl::string_view source);

  // Re-reads the file now; swaps if its content changed and compiles. OK
  // when unchanged or swapped; the compile or read error otherwise (the old
  // policy keeps serving). The watcher calls this every reload interval,
  // once the file has been unchanged for 300 ms (an editor writing in place
  // is not caught half way), and logs each distinct rejection once.
  absl::Status ReloadFromFile();

  // The last reload error from the watcher (OK after a good reload).
  absl::Status last_reload_status() const;
  absl::Time loaded_at() const;

  // Evaluates with the current policy and records the decision.
  // `policy_out`, when given, receives the policy that decided.
  Decision Decide(const Flow& flow, absl::Time now,
                  std::shared_ptr<const Policy>* policy_out = nullptr);

  DecisionLog& decisions() { return log_; }
  const ServedPolicyOptions& options() const { return options_; }

 private:
  explicit ServedPolicy(const ServedPolicyOptions& options);
  void WatchLoop();

  const ServedPolicyOptions options_;
  DecisionLog log_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const Policy> current_ ABSL_GUARDED_BY(mu_);
  absl::Status last_reload_ ABSL_GUARDED_BY(mu_);
  absl::Time loaded_at_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_logged_error_ ABSL_GUARDED_BY(mu_);
  absl::Mutex apply_mu_;  // serializes Apply and file reloads
  std::unique_ptr<std::thread> watcher_;
};

}  // namespace lienthong::policy

#endif  // LIENTHONG_POLICY_POLICY_H_
