#include "broker/policy/src/yaml_reader.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lienthong/common/org_code.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/policy/policy_test_file.h"

namespace lienthong::policy::internal {
namespace {

template <typename E>
struct Words;

#define LIENTHONG_WORDS(E, ...)                                              \
  template <>                                                                \
  struct Words<E> {                                                          \
    static constexpr std::pair<absl::string_view, E> kAll[] = {__VA_ARGS__}; \
  };

LIENTHONG_WORDS(Classification, {"unclassified", Classification::kUnclassified},
                {"confidential", Classification::kConfidential},
                {"secret", Classification::kSecret},
                {"top_secret", Classification::kTopSecret})
LIENTHONG_WORDS(Urgency, {"normal", Urgency::kNormal},
                {"urgent", Urgency::kUrgent},
                {"very_urgent", Urgency::kVeryUrgent},
                {"express", Urgency::kExpress})
LIENTHONG_WORDS(BusinessType, {"new", BusinessType::kNew},
                {"recall", BusinessType::kRecall},
                {"update", BusinessType::kUpdate},
                {"replace", BusinessType::kReplace})
LIENTHONG_WORDS(Origin, {"person", Origin::kPerson},
                {"system", Origin::kSystem}, {"ai", Origin::kAi})
LIENTHONG_WORDS(DecisionCategory, {"none", DecisionCategory::kNone},
                {"personnel", DecisionCategory::kPersonnel},
                {"disciplinary", DecisionCategory::kDisciplinary},
                {"financial", DecisionCategory::kFinancial},
                {"administrative", DecisionCategory::kAdministrative},
                {"other", DecisionCategory::kOther})
LIENTHONG_WORDS(Effect, {"permit", Effect::kPermit}, {"forbid", Effect::kDeny})
#undef LIENTHONG_WORDS

}  // namespace

template <typename E>
absl::string_view WordOf(E v) {
  for (const auto& [name, value] : Words<E>::kAll) {
    if (value == v) return name;
  }
  return "invalid";
}

template <typename E>
std::optional<E> ParseWord(absl::string_view s) {
  for (const auto& [name, value] : Words<E>::kAll) {
    if (name == s) return value;
  }
  return std::nullopt;
}

template <typename E>
std::string KnownWords() {
  std::vector<absl::string_view> names;
  for (const auto& [name, value] : Words<E>::kAll) names.push_back(name);
  return absl::StrJoin(names, ", ");
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path,
                                         absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot read the ", what));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return ss.str();
}

absl::StatusOr<YAML::Node> YamlReader::Load(absl::string_view text) const {
  try {
    YAML::Node root = YAML::Load(std::string(text));
    return root;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        file_, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
}

absl::Status YamlReader::Error(const YAML::Node& node,
                               absl::string_view what) const {
  const YAML::Mark m = node.Mark();
  if (m.is_null()) {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": ", what));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(file_, ":", m.line + 1, ":", m.column + 1, ": ", what));
}

absl::Status YamlReader::CheckKeys(const YAML::Node& map,
                                   absl::string_view where,
                                   const std::set<std::string>& known) const {
  if (!map.IsMap()) {
    return Error(map, absl::StrCat(where, " must be a mapping"));
  }
  std::set<std::string> seen;
  for (const auto& kv : map) {
    if (!kv.first.IsScalar()) {
      return Error(kv.first,
                   absl::StrCat("keys in ", where, " must be plain words"));
    }
    const std::string& key = kv.first.Scalar();
    if (!known.count(key)) {
      return Error(kv.first,
                   absl::StrCat("unknown field \"", key, "\" in ", where,
                                " (known: ", absl::StrJoin(known, ", "), ")"));
    }
    if (!seen.insert(key).second) {
      return Error(kv.first,
                   absl::StrCat("field \"", key, "\" given twice in ", where));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> YamlReader::Scalar(const YAML::Node& node,
                                               absl::string_view what) const {
  if (!node.IsScalar()) {
    return Error(node, absl::StrCat(what, " must be a single value"));
  }
  return node.Scalar();
}

absl::StatusOr<bool> YamlReader::Bool(const YAML::Node& node,
                                      absl::string_view what) const {
  bool v = false;
  if (!node.IsScalar() || !YAML::convert<bool>::decode(node, v)) {
    return Error(node, absl::StrCat(what, " must be true or false"));
  }
  return v;
}

absl::StatusOr<std::vector<std::string>> YamlReader::StringList(
    const YAML::Node& node, absl::string_view what) const {
  if (!node.IsSequence()) {
    return Error(node, absl::StrCat(what, " must be a list, e.g. [a, b]"));
  }
  if (node.size() == 0) {
    return Error(node, absl::StrCat(what,
                                    " is empty and would match nothing; omit "
                                    "it to match anything"));
  }
  std::vector<std::string> out;
  out.reserve(node.size());
  for (const YAML::Node& item : node) {
    ASSIGN_OR_RETURN(std::string s, Scalar(item, absl::StrCat(what, " entry")));
    out.push_back(std::move(s));
  }
  return out;
}

template <typename E>
absl::StatusOr<E> YamlReader::EnumValue(const YAML::Node& node,
                                        absl::string_view what) const {
  ASSIGN_OR_RETURN(std::string word, Scalar(node, what));
  std::optional<E> v = ParseWord<E>(word);
  if (!v) {
    return Error(node, absl::StrCat("unknown ", what, " \"", word,
                                    "\" (known: ", KnownWords<E>(), ")"));
  }
  return *v;
}

template <typename E>
absl::StatusOr<uint32_t> YamlReader::EnumMask(const YAML::Node& node,
                                              absl::string_view what) const {
  if (!node.IsSequence()) {
    return Error(node, absl::StrCat(what, " must be a list, e.g. [",
                                    WordOf(Words<E>::kAll[0].second), "]"));
  }
  if (node.size() == 0) {
    return Error(node, absl::StrCat(what,
                                    " is empty and would match nothing; omit "
                                    "it to match anything"));
  }
  uint32_t mask = 0;
  for (const YAML::Node& item : node) {
    ASSIGN_OR_RETURN(E v, EnumValue<E>(item, what));
    mask |= 1u << static_cast<int>(v);
  }
  return mask;
}

template absl::StatusOr<uint32_t> YamlReader::EnumMask<Urgency>(
    const YAML::Node&, absl::string_view) const;
template absl::StatusOr<uint32_t> YamlReader::EnumMask<BusinessType>(
    const YAML::Node&, absl::string_view) const;
template absl::StatusOr<uint32_t> YamlReader::EnumMask<Origin>(
    const YAML::Node&, absl::string_view) const;
template absl::StatusOr<uint32_t> YamlReader::EnumMask<DecisionCategory>(
    const YAML::Node&, absl::string_view) const;
template absl::StatusOr<Effect> YamlReader::EnumValue<Effect>(
    const YAML::Node&, absl::string_view) const;

absl::StatusOr<Classification> YamlReader::ClassificationValue(
    const YAML::Node& node, absl::string_view what) const {
  return EnumValue<Classification>(node, what);
}

absl::StatusOr<Obligations> YamlReader::ObligationsValue(
    const YAML::Node& node, absl::string_view where) const {
  RETURN_IF_ERROR(CheckKeys(node, where,
                            {"end_to_end_encryption", "approval", "retention",
                             "max_size", "paper_conversion_forbidden"}));
  Obligations o;
  if (YAML::Node n = node["end_to_end_encryption"]) {
    ASSIGN_OR_RETURN(o.end_to_end_encryption, Bool(n, "end_to_end_encryption"));
  }
  if (YAML::Node n = node["paper_conversion_forbidden"]) {
    ASSIGN_OR_RETURN(o.paper_conversion_forbidden,
                     Bool(n, "paper_conversion_forbidden"));
  }
  if (YAML::Node n = node["retention"]) {
    ASSIGN_OR_RETURN(std::string text, Scalar(n, "retention"));
    absl::StatusOr<absl::Duration> d = ParseRetention(text);
    if (!d.ok()) return Error(n, d.status().message());
    o.retention = *d;
  }
  if (YAML::Node n = node["max_size"]) {
    ASSIGN_OR_RETURN(std::string text, Scalar(n, "max_size"));
    absl::StatusOr<uint64_t> size = ParseSize(text);
    if (!size.ok()) return Error(n, size.status().message());
    o.max_size_bytes = *size;
  }
  if (YAML::Node n = node["approval"]) {
    std::vector<YAML::Node> items;
    if (n.IsSequence()) {
      if (n.size() == 0) return Error(n, "approval: empty list");
      for (const YAML::Node& item : n) items.push_back(item);
    } else {
      items.push_back(n);
    }
    for (const YAML::Node& item : items) {
      RETURN_IF_ERROR(CheckKeys(item, "approval", {"role", "org"}));
      Approver a;
      if (!item["role"]) return Error(item, "approval: role is required");
      ASSIGN_OR_RETURN(a.role, Scalar(item["role"], "approval.role"));
      if (a.role.empty()) return Error(item["role"], "approval.role: empty");
      if (YAML::Node org = item["org"]) {
        ASSIGN_OR_RETURN(a.org, Scalar(org, "approval.org"));
        if (absl::Status s = ValidateOrgCode(a.org, "approval.org"); !s.ok())
          return Error(org, s.message());
      }
      o.approvals.push_back(std::move(a));
    }
    std::sort(o.approvals.begin(), o.approvals.end());
    o.approvals.erase(std::unique(o.approvals.begin(), o.approvals.end()),
                      o.approvals.end());
  }
  return o;
}

absl::StatusOr<Flow> YamlReader::FlowValue(const YAML::Node& node) const {
  RETURN_IF_ERROR(CheckKeys(
      node, "flow",
      {"sender", "recipient", "document_type", "classification", "urgency",
       "business_type", "origin", "decision_category", "cross_broker"}));
  Flow f;
  for (const char* key : {"sender", "recipient"}) {
    YAML::Node n = node[key];
    if (!n) return Error(node, absl::StrCat("flow: ", key, " is required"));
    ASSIGN_OR_RETURN(std::string code, Scalar(n, key));
    if (absl::Status s = ValidateOrgCode(code, absl::StrCat("flow.", key));
        !s.ok())
      return Error(n, s.message());
    (std::string(key) == "sender" ? f.sender : f.recipient) = std::move(code);
  }
  if (YAML::Node n = node["document_type"]) {
    ASSIGN_OR_RETURN(f.document_type, Scalar(n, "document_type"));
  }
  if (YAML::Node n = node["classification"]) {
    ASSIGN_OR_RETURN(f.classification,
                     EnumValue<Classification>(n, "classification"));
  }
  if (YAML::Node n = node["urgency"]) {
    ASSIGN_OR_RETURN(f.urgency, EnumValue<Urgency>(n, "urgency"));
  }
  if (YAML::Node n = node["business_type"]) {
    ASSIGN_OR_RETURN(f.business_type,
                     EnumValue<BusinessType>(n, "business_type"));
  }
  if (YAML::Node n = node["origin"]) {
    ASSIGN_OR_RETURN(f.origin, EnumValue<Origin>(n, "origin"));
  }
  if (YAML::Node n = node["decision_category"]) {
    ASSIGN_OR_RETURN(f.decision_category,
                     EnumValue<DecisionCategory>(n, "decision_category"));
  }
  if (YAML::Node n = node["cross_broker"]) {
    ASSIGN_OR_RETURN(f.cross_broker, Bool(n, "cross_broker"));
  }
  return f;
}

}  // namespace lienthong::policy::internal

namespace lienthong::policy {

// ---- public spellings -----------------------------------------------------

absl::string_view Name(Classification v) { return internal::WordOf(v); }
absl::string_view Name(Urgency v) { return internal::WordOf(v); }
absl::string_view Name(BusinessType v) { return internal::WordOf(v); }
absl::string_view Name(Origin v) { return internal::WordOf(v); }
absl::string_view Name(DecisionCategory v) { return internal::WordOf(v); }
absl::string_view Name(Effect v) {
  return v == Effect::kPermit ? "permit" : "deny";
}
std::optional<Classification> ParseClassification(absl::string_view s) {
  return internal::ParseWord<Classification>(s);
}
std::optional<Urgency> ParseUrgency(absl::string_view s) {
  return internal::ParseWord<Urgency>(s);
}
std::optional<BusinessType> ParseBusinessType(absl::string_view s) {
  return internal::ParseWord<BusinessType>(s);
}
std::optional<Origin> ParseOrigin(absl::string_view s) {
  return internal::ParseWord<Origin>(s);
}
std::optional<DecisionCategory> ParseDecisionCategory(absl::string_view s) {
  return internal::ParseWord<DecisionCategory>(s);
}

}  // namespace lienthong::policy
