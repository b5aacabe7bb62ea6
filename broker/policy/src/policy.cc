// Compiling and evaluating policies.
//
// Evaluation is a bitset intersection: every condition a rule can state is
// indexed per value, so deciding a flow costs one pass over
// ceil(rules / 64) words per dimension plus a few hash lookups for the
// organizations, whatever the number of rules that state nothing about them.
#include "lienthong/policy/policy.h"

#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <bit>
#include <map>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "broker/policy/src/yaml_reader.h"
#include "lienthong/common/org_code.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::policy {
namespace {

using internal::YamlReader;

constexpr uint32_t kAllValues = ~0u;

std::string Sha256Hex(absl::string_view data) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<char*>(md), sizeof md));
}

bool ValidName(absl::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' ||
          c == '_' || c == '.'))
      return false;
  }
  return true;
}

bool ValidProvince(absl::string_view p) {
  return ValidateOrgCode(absl::StrCat("000.00.00.", p)).ok();
}

// A set of organizations as written: exact codes, subtrees, provinces.
struct OrgSet {
  std::vector<std::string> orgs;
  std::vector<std::string> under;
  std::vector<std::string> provinces;

  bool Contains(absl::string_view org) const {
    for (const std::string& o : orgs)
      if (o == org) return true;
    for (const std::string& u : under)
      if (IsUnder(org, u)) return true;
    absl::string_view p = TopLevelGroup(org);
    for (const std::string& q : provinces)
      if (q == p) return true;
    return false;
  }
};

// A rule's sender or recipient condition.
struct OrgMatcher {
  bool any = true;
  OrgSet direct;                    // as written in the rule
  std::vector<std::string> groups;  // group names, as written
  std::vector<const OrgSet*> group_sets;

  bool Matches(absl::string_view org) const {
    if (any) return true;
    if (direct.Contains(org)) return true;
    for (const OrgSet* g : group_sets)
      if (g->Contains(org)) return true;
    return false;
  }

  std::string Describe() const {
    std::vector<std::string> parts;
    if (!direct.orgs.empty())
      parts.push_back(
          absl::StrCat("orgs [", absl::StrJoin(direct.orgs, ", "), "]"));
    if (!direct.under.empty())
      parts.push_back(
          absl::StrCat("under [", absl::StrJoin(direct.under, ", "), "]"));
    if (!direct.provinces.empty())
      parts.push_back(absl::StrCat("provinces [",
                                   absl::StrJoin(direct.provinces, ", "), "]"));
    if (!groups.empty())
      parts.push_back(
          absl::StrCat("groups [", absl::StrJoin(groups, ", "), "]"));
    return absl::StrJoin(parts, " or ");
  }
};

struct Rule {
  std::string name;
  Effect effect = Effect::kPermit;
  std::string description;
  OrgMatcher sender;
  OrgMatcher recipient;
  std::vector<std::string> document_types;  // empty: any
  Classification max_classification = Classification::kSecret;
  bool has_max_classification = false;
  uint32_t urgencies = kAllValues;
  uint32_t business_types = kAllValues;
  uint32_t origins = kAllValues;
  uint32_t decision_categories = kAllValues;
  std::optional<bool> cross_broker;
  Obligations obligations;
};

std::string MaskWords(uint32_t mask, int lo, int hi,
                      absl::string_view (*name)(int)) {
  std::vector<absl::string_view> words;
  for (int v = lo; v <= hi; ++v)
    if (mask & (1u << v)) words.push_back(name(v));
  return absl::StrJoin(words, ", ");
}
absl::string_view UrgencyName(int v) { return Name(static_cast<Urgency>(v)); }
absl::string_view BusinessTypeName(int v) {
  return Name(static_cast<BusinessType>(v));
}
absl::string_view OriginName(int v) { return Name(static_cast<Origin>(v)); }
absl::string_view DecisionCategoryName(int v) {
  return Name(static_cast<DecisionCategory>(v));
}

// Every condition `rule` states that `flow` fails, as sentences.
std::vector<std::string> FailedConditions(const Rule& rule, const Flow& flow) {
  std::vector<std::string> failed;
  if (!rule.sender.Matches(flow.sender)) {
    failed.push_back(absl::StrCat("sender ", flow.sender, " is not in ",
                                  rule.sender.Describe()));
  }
  if (!rule.recipient.Matches(flow.recipient)) {
    failed.push_back(absl::StrCat("recipient ", flow.recipient, " is not in ",
                                  rule.recipient.Describe()));
  }
  if (!rule.document_types.empty() &&
      std::find(rule.document_types.begin(), rule.document_types.end(),
                flow.document_type) == rule.document_types.end()) {
    failed.push_back(absl::StrCat(
        "document type \"", flow.document_type, "\" is not one of [",
        absl::StrJoin(rule.document_types, ", "), "]"));
  }
  if (rule.has_max_classification &&
      flow.classification > rule.max_classification) {
    failed.push_back(absl::StrCat("classification ", Name(flow.classification),
                                  " is above ", Name(rule.max_classification)));
  }
  auto check = [&](uint32_t mask, int value, absl::string_view what,
                   absl::string_view word, int lo, int hi,
                   absl::string_view (*name)(int)) {
    if (!(mask & (1u << value))) {
      failed.push_back(absl::StrCat(what, " ", word, " is not one of [",
                                    MaskWords(mask, lo, hi, name), "]"));
    }
  };
  check(rule.urgencies, static_cast<int>(flow.urgency), "urgency",
        Name(flow.urgency), 1, 4, UrgencyName);
  check(rule.business_types, static_cast<int>(flow.business_type),
        "business type", Name(flow.business_type), 1, 4, BusinessTypeName);
  check(rule.origins, static_cast<int>(flow.origin), "origin",
        Name(flow.origin), 1, 3, OriginName);
  check(rule.decision_categories, static_cast<int>(flow.decision_category),
        "decision category", Name(flow.decision_category), 0, 5,
        DecisionCategoryName);
  if (rule.cross_broker && *rule.cross_broker != flow.cross_broker) {
    failed.push_back(flow.cross_broker
                         ? "the flow crosses to another broker; the rule is "
                           "for local flows only"
                         : "the flow is local; the rule is for flows to "
                           "another broker only");
  }
  return failed;
}

void Merge(const Obligations& from, Obligations* into) {
  into->end_to_end_encryption |= from.end_to_end_encryption;
  into->paper_conversion_forbidden |= from.paper_conversion_forbidden;
  if (from.retention &&
      (!into->retention || *from.retention > *into->retention))
    into->retention = from.retention;
  if (from.max_size_bytes &&
      (!into->max_size_bytes || *from.max_size_bytes < *into->max_size_bytes))
    into->max_size_bytes = from.max_size_bytes;
  if (!from.approvals.empty()) {
    into->approvals.insert(into->approvals.end(), from.approvals.begin(),
                           from.approvals.end());
    std::sort(into->approvals.begin(), into->approvals.end());
    into->approvals.erase(
        std::unique(into->approvals.begin(), into->approvals.end()),
        into->approvals.end());
  }
}

using Bits = std::vector<uint64_t>;

void SetBit(Bits& b, uint32_t i) { b[i >> 6] |= uint64_t{1} << (i & 63); }

// A set of rules as its non-zero words: OR-ing it into a scratch bitset costs
// one operation per word that holds any of its rules, however many rules.
struct WordMask {
  uint32_t word;
  uint64_t mask;
};
using SparseBits = std::vector<WordMask>;

SparseBits ToSparse(std::vector<uint32_t> rules) {
  std::sort(rules.begin(), rules.end());
  SparseBits out;
  for (uint32_t r : rules) {
    uint32_t w = r >> 6;
    if (out.empty() || out.back().word != w) out.push_back({w, 0});
    out.back().mask |= uint64_t{1} << (r & 63);
  }
  return out;
}

void OrInto(const SparseBits& set, Bits& out) {
  for (const WordMask& wm : set) out[wm.word] |= wm.mask;
}

bool IsTopLevel(absl::string_view code) {
  return code.substr(0, 10) == "000.00.00.";
}

// Rules that mention an organization, by how they mention it. Every code
// ending in X lies under 000.00.00.X, so the rules for `any`, for province X
// and for everything under 000.00.00.X are merged ahead of time into one
// dense bitset per X: deciding a flow copies it and adds the few rules that
// name the organization or a body between it and the top.
struct OrgIndex {
  Bits any;  // rules with no condition on this side
  absl::flat_hash_map<std::string, Bits> by_top_level;
  absl::flat_hash_map<std::string, SparseBits> exact;
  absl::flat_hash_map<std::string, SparseBits> under;  // below top level

  // While building: rule ids per key.
  std::vector<uint32_t> any_ids;
  absl::flat_hash_map<std::string, std::vector<uint32_t>> exact_ids, under_ids,
      province_ids;

  void Add(const OrgSet& set, uint32_t rule) {
    for (const std::string& o : set.orgs) exact_ids[o].push_back(rule);
    for (const std::string& u : set.under) under_ids[u].push_back(rule);
    for (const std::string& p : set.provinces) province_ids[p].push_back(rule);
  }

  void Finish(size_t words) {
    any.assign(words, 0);
    for (uint32_t r : any_ids) SetBit(any, r);
    auto top = [&](const std::string& x) -> Bits& {
      auto [it, inserted] = by_top_level.try_emplace(x);
      if (inserted) it->second = any;
      return it->second;
    };
    for (auto& [p, ids] : province_ids) {
      Bits& b = top(p);
      for (uint32_t r : ids) SetBit(b, r);
    }
    for (auto& [u, ids] : under_ids) {
      if (IsTopLevel(u)) {
        Bits& b = top(std::string(TopLevelGroup(u)));
        for (uint32_t r : ids) SetBit(b, r);
      } else {
        under[u] = ToSparse(std::move(ids));
      }
    }
    for (auto& [o, ids] : exact_ids) exact[o] = ToSparse(std::move(ids));
    any_ids.clear();
    exact_ids.clear();
    under_ids.clear();
    province_ids.clear();
  }

  // The rules whose condition on this side `org` meets. `org` is valid.
  void Fill(absl::string_view org, Bits& out) const {
    auto base = by_top_level.find(TopLevelGroup(org));
    const Bits& from = base == by_top_level.end() ? any : base->second;
    std::copy(from.begin(), from.end(), out.begin());
    if (auto it = exact.find(org); it != exact.end()) OrInto(it->second, out);
    if (!under.empty()) {
      // Codes are 13 characters: the copies stay in the small-string buffer.
      std::string current(org);
      while (!current.empty() && !IsTopLevel(current)) {
        if (auto it = under.find(current); it != under.end())
          OrInto(it->second, out);
        current = ParentOrgCode(current);
      }
    }
  }
};

}  // namespace

struct Policy::Impl {
  std::string source;
  std::string file_name;
  std::string version;
  std::string description;
  std::map<std::string, OrgSet> groups;  // stable addresses for OrgMatcher
  std::vector<Rule> rules;

  size_t words = 0;
  Bits forbids;
  OrgIndex sender;
  OrgIndex recipient;
  Bits any_document_type;
  absl::flat_hash_map<std::string, SparseBits> document_types;
  std::array<Bits, 5> by_classification;  // index: enum value
  std::array<Bits, 5> by_urgency;
  std::array<Bits, 5> by_business_type;
  std::array<Bits, 4> by_origin;
  std::array<Bits, 6> by_decision_category;
  std::array<Bits, 2> by_cross_broker;

  void BuildIndex();
};

void Policy::Impl::BuildIndex() {
  words = (rules.size() + 63) / 64;
  if (words == 0) words = 1;
  Bits zero(words, 0);
  forbids = zero;
  for (auto* arr : {&by_classification, &by_urgency, &by_business_type})
    for (Bits& b : *arr) b = zero;
  for (Bits& b : by_origin) b = zero;
  for (Bits& b : by_decision_category) b = zero;
  for (Bits& b : by_cross_broker) b = zero;
  std::vector<uint32_t> any_type_ids;
  absl::flat_hash_map<std::string, std::vector<uint32_t>> type_ids;

  for (uint32_t i = 0; i < rules.size(); ++i) {
    const Rule& r = rules[i];
    if (r.effect == Effect::kDeny) SetBit(forbids, i);
    auto index_side = [&](const OrgMatcher& m, OrgIndex& idx) {
      if (m.any) {
        idx.any_ids.push_back(i);
        return;
      }
      idx.Add(m.direct, i);
      for (const OrgSet* g : m.group_sets) idx.Add(*g, i);
    };
    index_side(r.sender, sender);
    index_side(r.recipient, recipient);
    if (r.document_types.empty()) {
      any_type_ids.push_back(i);
    } else {
      for (const std::string& t : r.document_types) type_ids[t].push_back(i);
    }
    for (int v = 1; v <= 4; ++v) {
      if (!r.has_max_classification ||
          v <= static_cast<int>(r.max_classification))
        SetBit(by_classification[v], i);
      if (r.urgencies & (1u << v)) SetBit(by_urgency[v], i);
      if (r.business_types & (1u << v)) SetBit(by_business_type[v], i);
    }
    for (int v = 1; v <= 3; ++v)
      if (r.origins & (1u << v)) SetBit(by_origin[v], i);
    for (int v = 0; v <= 5; ++v)
      if (r.decision_categories & (1u << v)) SetBit(by_decision_category[v], i);
    for (int v = 0; v <= 1; ++v)
      if (!r.cross_broker || *r.cross_broker == (v == 1))
        SetBit(by_cross_broker[v], i);
  }
  sender.Finish(words);
  recipient.Finish(words);
  any_document_type = zero;
  for (uint32_t r : any_type_ids) SetBit(any_document_type, r);
  for (auto& [t, ids] : type_ids) document_types[t] = ToSparse(std::move(ids));
}

namespace {

class Compiler {
 public:
  Compiler(absl::string_view file, const CompileOptions& options)
      : reader_(file), options_(options) {}

  absl::Status Compile(absl::string_view source, Policy::Impl* out) {
    if (source.size() > options_.max_source_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(reader_.file(), ": policy is ", source.size(),
                       " bytes; the limit is ", options_.max_source_bytes));
    }
    ASSIGN_OR_RETURN(YAML::Node root, reader_.Load(source));
    if (!root.IsDefined() || root.IsNull()) {
      return absl::InvalidArgumentError(absl::StrCat(
          reader_.file(),
          ": empty policy; a policy needs at least one rule (an empty one "
          "would deny everything)"));
    }
    RETURN_IF_ERROR(reader_.CheckKeys(root, "the policy",
                                      {"description", "groups", "rules"}));
    if (YAML::Node d = root["description"]) {
      ASSIGN_OR_RETURN(out->description, reader_.Scalar(d, "description"));
    }
    if (YAML::Node g = root["groups"]) RETURN_IF_ERROR(Groups(g, out));
    YAML::Node rules = root["rules"];
    if (!rules) {
      return reader_.Error(
          root, "rules: required; with no rule every flow is denied");
    }
    if (!rules.IsSequence())
      return reader_.Error(rules, "rules must be a list");
    if (rules.size() == 0) {
      return reader_.Error(rules,
                           "rules: empty; with no rule every flow is denied");
    }
    std::map<std::string, int> names;  // name → line
    for (const YAML::Node& node : rules) {
      Rule rule;
      RETURN_IF_ERROR(RuleValue(node, *out, &rule));
      auto [it, inserted] = names.emplace(rule.name, node.Mark().line + 1);
      if (!inserted) {
        return reader_.Error(
            node["name"],
            absl::StrCat("duplicate rule name \"", rule.name,
                         "\" (first defined on line ", it->second, ")"));
      }
      out->rules.push_back(std::move(rule));
    }
    // Group sets may have moved while `groups` was filled; resolve now.
    for (Rule& r : out->rules) {
      for (OrgMatcher* m : {&r.sender, &r.recipient}) {
        for (const std::string& g : m->groups)
          m->group_sets.push_back(&out->groups.at(g));
      }
    }
    out->BuildIndex();
    return absl::OkStatus();
  }

 private:
  absl::Status OrgSetValue(const YAML::Node& node, absl::string_view where,
                           bool allow_groups, OrgSet* set,
                           std::vector<std::string>* groups,
                           const Policy::Impl& policy) {
    std::set<std::string> keys = {"orgs", "under", "provinces"};
    if (allow_groups) keys.insert("groups");
    RETURN_IF_ERROR(reader_.CheckKeys(node, where, keys));
    if (node.size() == 0) {
      return reader_.Error(
          node,
          absl::StrCat(where, ": give orgs, under, provinces or groups (omit ",
                       where, " to match any organization)"));
    }
    for (const char* key : {"orgs", "under"}) {
      YAML::Node n = node[key];
      if (!n) continue;
      ASSIGN_OR_RETURN(std::vector<std::string> codes,
                       reader_.StringList(n, absl::StrCat(where, ".", key)));
      size_t i = 0;
      for (const YAML::Node& item : n) {
        const std::string& code = codes[i++];
        if (absl::Status s =
                ValidateOrgCode(code, absl::StrCat(where, ".", key));
            !s.ok())
          return reader_.Error(item, s.message());
      }
      auto& dest = std::string(key) == "orgs" ? set->orgs : set->under;
      dest.insert(dest.end(), codes.begin(), codes.end());
    }
    if (YAML::Node n = node["provinces"]) {
      ASSIGN_OR_RETURN(
          std::vector<std::string> provinces,
          reader_.StringList(n, absl::StrCat(where, ".provinces")));
      size_t i = 0;
      for (const YAML::Node& item : n) {
        const std::string& p = provinces[i++];
        if (!ValidProvince(p)) {
          return reader_.Error(
              item, absl::StrCat(where, ".provinces: \"", p,
                                 "\" is not the last group of an org code "
                                 "(an upper-case letter and two digits, e.g. "
                                 "H49)"));
        }
      }
      set->provinces.insert(set->provinces.end(), provinces.begin(),
                            provinces.end());
    }
    if (allow_groups) {
      if (YAML::Node n = node["groups"]) {
        ASSIGN_OR_RETURN(std::vector<std::string> names,
                         reader_.StringList(n, absl::StrCat(where, ".groups")));
        size_t i = 0;
        for (const YAML::Node& item : n) {
          const std::string& g = names[i++];
          if (!policy.groups.contains(g)) {
            std::vector<std::string> defined;
            for (const auto& [name, s] : policy.groups) defined.push_back(name);
            return reader_.Error(
                item,
                absl::StrCat(
                    "unknown group \"", g, "\" (defined: ",
                    defined.empty() ? "none" : absl::StrJoin(defined, ", "),
                    ")"));
          }
        }
        groups->insert(groups->end(), names.begin(), names.end());
      }
    } else if (node["groups"]) {
      return reader_.Error(node["groups"],
                           "a group cannot contain groups; list its orgs, "
                           "under and provinces");
    }
    return absl::OkStatus();
  }

  absl::Status Groups(const YAML::Node& node, Policy::Impl* out) {
    if (!node.IsMap()) {
      return reader_.Error(node, "groups must be a mapping of name to members");
    }
    for (const auto& kv : node) {
      ASSIGN_OR_RETURN(std::string name,
                       reader_.Scalar(kv.first, "group name"));
      if (!ValidName(name)) {
        return reader_.Error(
            kv.first, absl::StrCat("group name \"", name,
                                   "\" may use only letters, digits, '.', '_' "
                                   "and '-'"));
      }
      if (out->groups.contains(name)) {
        return reader_.Error(kv.first,
                             absl::StrCat("duplicate group \"", name, "\""));
      }
      OrgSet set;
      // CheckKeys rejects "groups" inside a group with the generic unknown
      // field message; say what is wrong instead.
      if (kv.second.IsMap() && kv.second["groups"]) {
        return reader_.Error(
            kv.second["groups"],
            absl::StrCat("group \"", name,
                         "\": a group cannot contain groups; "
                         "list its orgs, under and provinces"));
      }
      RETURN_IF_ERROR(OrgSetValue(kv.second, absl::StrCat("group ", name),
                                  false, &set, nullptr, *out));
      out->groups.emplace(std::move(name), std::move(set));
    }
    return absl::OkStatus();
  }

  absl::Status CheckEnforceable(const YAML::Node& node, const Rule& rule) {
    const Capabilities& c = options_.capabilities;
    const Obligations& o = rule.obligations;
    auto refuse = [&](absl::string_view what, absl::string_view why) {
      YAML::Node at = node;  // the obligation's key where there is one
      if (node.IsMap()) {
        for (const auto& kv : node) {
          if (kv.first.IsScalar() && kv.first.Scalar() == what) {
            at.reset(kv.first);  // rebind; operator= would overwrite the map
          }
        }
      }
      return reader_.Error(
          at, absl::StrCat("rule \"", rule.name, "\": obligation ", what,
                           " cannot be enforced by this broker (", why,
                           "); remove it, or the broker would carry "
                           "documents without it"));
    };
    if (o.end_to_end_encryption && !c.end_to_end_encryption)
      return refuse("end_to_end_encryption",
                    "end-to-end encryption is disabled here");
    if (!o.approvals.empty() && !c.approval)
      return refuse("approval", "human approval is disabled here");
    if (o.retention && !c.retention)
      return refuse("retention", "retention is not supported");
    if (o.max_size_bytes && !c.max_size)
      return refuse("max_size", "size limits are not supported");
    if (o.paper_conversion_forbidden && !c.paper_conversion_forbidden)
      return refuse("paper_conversion_forbidden",
                    "paper conversion control is not supported");
    return absl::OkStatus();
  }

  absl::Status RuleValue(const YAML::Node& node, const Policy::Impl& policy,
                         Rule* rule) {
    RETURN_IF_ERROR(reader_.CheckKeys(
        node, "a rule",
        {"name", "effect", "description", "sender", "recipient",
         "document_types", "max_classification", "urgencies", "business_types",
         "origins", "decision_categories", "cross_broker", "obligations"}));
    if (!node["name"]) return reader_.Error(node, "rule: name is required");
    ASSIGN_OR_RETURN(rule->name, reader_.Scalar(node["name"], "name"));
    if (!ValidName(rule->name)) {
      return reader_.Error(node["name"],
                           absl::StrCat("rule name \"", rule->name,
                                        "\" may use only letters, digits, '.', "
                                        "'_' and '-' (at most 128)"));
    }
    const std::string where = absl::StrCat("rule \"", rule->name, "\"");
    if (!node["effect"]) {
      return reader_.Error(node, absl::StrCat(where,
                                              ": effect is required (permit "
                                              "or forbid)"));
    }
    ASSIGN_OR_RETURN(rule->effect,
                     reader_.EnumValue<Effect>(node["effect"], "effect"));
    if (YAML::Node n = node["description"]) {
      ASSIGN_OR_RETURN(rule->description, reader_.Scalar(n, "description"));
    }
    for (auto [key, matcher] :
         {std::pair<const char*, OrgMatcher*>{"sender", &rule->sender},
          {"recipient", &rule->recipient}}) {
      YAML::Node n = node[key];
      if (!n) continue;
      matcher->any = false;
      RETURN_IF_ERROR(OrgSetValue(n, key, true, &matcher->direct,
                                  &matcher->groups, policy));
    }
    if (YAML::Node n = node["document_types"]) {
      ASSIGN_OR_RETURN(rule->document_types,
                       reader_.StringList(n, "document_types"));
    }
    if (YAML::Node n = node["max_classification"]) {
      ASSIGN_OR_RETURN(Classification c,
                       reader_.ClassificationValue(n, "max_classification"));
      if (c == Classification::kTopSecret) {
        return reader_.Error(
            n, absl::StrCat(where,
                            ": max_classification top_secret is an impossible "
                            "level: top-secret (tuyệt mật) documents are "
                            "outside this system and always refused"));
      }
      rule->max_classification = c;
      rule->has_max_classification = true;
    }
    if (YAML::Node n = node["urgencies"]) {
      ASSIGN_OR_RETURN(rule->urgencies,
                       reader_.EnumMask<Urgency>(n, "urgency"));
    }
    if (YAML::Node n = node["business_types"]) {
      ASSIGN_OR_RETURN(rule->business_types,
                       reader_.EnumMask<BusinessType>(n, "business type"));
    }
    if (YAML::Node n = node["origins"]) {
      ASSIGN_OR_RETURN(rule->origins, reader_.EnumMask<Origin>(n, "origin"));
    }
    if (YAML::Node n = node["decision_categories"]) {
      ASSIGN_OR_RETURN(
          rule->decision_categories,
          reader_.EnumMask<DecisionCategory>(n, "decision category"));
    }
    if (YAML::Node n = node["cross_broker"]) {
      ASSIGN_OR_RETURN(bool v, reader_.Bool(n, "cross_broker"));
      rule->cross_broker = v;
    }
    if (YAML::Node n = node["obligations"]) {
      if (rule->effect == Effect::kDeny) {
        return reader_.Error(n, absl::StrCat(where,
                                             ": a forbid rule carries no "
                                             "obligations"));
      }
      ASSIGN_OR_RETURN(
          rule->obligations,
          reader_.ObligationsValue(n, absl::StrCat(where, " obligations")));
      RETURN_IF_ERROR(CheckEnforceable(n, *rule));
    }
    return absl::OkStatus();
  }

  YamlReader reader_;
  const CompileOptions& options_;
};

absl::Status CheckFlow(const Flow& f) {
  RETURN_IF_ERROR(ValidateOrgCode(f.sender, "flow.sender"));
  RETURN_IF_ERROR(ValidateOrgCode(f.recipient, "flow.recipient"));
  auto in = [](auto v, int lo, int hi) {
    int i = static_cast<int>(v);
    return i >= lo && i <= hi;
  };
  if (!in(f.classification, 1, 4))
    return absl::InvalidArgumentError("flow.classification: out of range");
  if (!in(f.urgency, 1, 4))
    return absl::InvalidArgumentError("flow.urgency: out of range");
  if (!in(f.business_type, 1, 4))
    return absl::InvalidArgumentError("flow.business_type: out of range");
  if (!in(f.origin, 1, 3))
    return absl::InvalidArgumentError("flow.origin: out of range");
  if (!in(f.decision_category, 0, 5))
    return absl::InvalidArgumentError("flow.decision_category: out of range");
  return absl::OkStatus();
}

}  // namespace

Policy::Policy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Policy::~Policy() = default;

absl::StatusOr<std::shared_ptr<const Policy>> Policy::Compile(
    absl::string_view yaml, absl::string_view file_name,
    const CompileOptions& options) {
  auto impl = std::make_unique<Impl>();
  Compiler compiler(file_name, options);
  try {
    RETURN_IF_ERROR(compiler.Compile(yaml, impl.get()));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        file_name, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_name, ": cannot compile: ", e.what()));
  }
  impl->source = std::string(yaml);
  impl->file_name = std::string(file_name);
  impl->version = absl::StrCat("sha256:", Sha256Hex(yaml));
  return std::shared_ptr<const Policy>(new Policy(std::move(impl)));
}

absl::StatusOr<std::shared_ptr<const Policy>> Policy::CompileFile(
    const std::string& path, const CompileOptions& options) {
  ASSIGN_OR_RETURN(std::string source,
                   internal::ReadTextFile(path, "policy file"));
  return Compile(source, path, options);
}

const std::string& Policy::version() const { return impl_->version; }
const std::string& Policy::source() const { return impl_->source; }
const std::string& Policy::file_name() const { return impl_->file_name; }
size_t Policy::rule_count() const { return impl_->rules.size(); }
size_t Policy::group_count() const { return impl_->groups.size(); }
const std::string& Policy::rule_name(uint32_t index) const {
  return impl_->rules.at(index).name;
}
Effect Policy::rule_effect(uint32_t index) const {
  return impl_->rules.at(index).effect;
}

Decision Policy::Evaluate(const Flow& flow) const {
  Decision d;
  try {
    if (absl::Status s = CheckFlow(flow); !s.ok()) {
      d.cause = Cause::kError;
      d.detail = std::string(s.message());
      return d;
    }
    if (flow.classification == Classification::kTopSecret) {
      d.cause = Cause::kBuiltInGuard;
      d.detail =
          "top-secret (tuyệt mật) documents are outside this system's scope "
          "and are always refused";
      return d;
    }
    const Impl& p = *impl_;
    thread_local Bits senders, recipients, types;
    // Each on its own: a resize that throws must not leave one short.
    for (Bits* b : {&senders, &recipients, &types}) {
      if (b->size() < p.words) b->resize(p.words);
    }
    p.sender.Fill(flow.sender, senders);
    p.recipient.Fill(flow.recipient, recipients);
    std::copy(p.any_document_type.begin(), p.any_document_type.end(),
              types.begin());
    if (!p.document_types.empty()) {
      if (auto it = p.document_types.find(flow.document_type);
          it != p.document_types.end())
        OrInto(it->second, types);
    }
    const uint64_t* cls =
        p.by_classification[static_cast<int>(flow.classification)].data();
    const uint64_t* urg = p.by_urgency[static_cast<int>(flow.urgency)].data();
    const uint64_t* bt =
        p.by_business_type[static_cast<int>(flow.business_type)].data();
    const uint64_t* org = p.by_origin[static_cast<int>(flow.origin)].data();
    const uint64_t* dc =
        p.by_decision_category[static_cast<int>(flow.decision_category)].data();
    const uint64_t* xb = p.by_cross_broker[flow.cross_broker ? 1 : 0].data();
    const uint64_t* fb = p.forbids.data();
    const uint64_t* sn = senders.data();
    const uint64_t* rc = recipients.data();
    const uint64_t* ty = types.data();

    // Intersect in place first (a simple loop the compiler vectorizes), then
    // read out the few set bits.
    uint64_t* hits = types.data();
    for (size_t w = 0; w < p.words; ++w) {
      hits[w] = sn[w] & rc[w] & ty[w] & cls[w] & urg[w] & bt[w] & org[w] &
                dc[w] & xb[w];
    }
    absl::InlinedVector<uint32_t, 4> permits;
    for (size_t w = 0; w < p.words; ++w) {
      uint64_t m = hits[w];
      while (m != 0) {
        int bit = std::countr_zero(m);
        m &= m - 1;
        uint32_t rule = static_cast<uint32_t>(w * 64 + bit);
        if (fb[w] & (uint64_t{1} << bit)) {
          d.rules.push_back(rule);
        } else {
          permits.push_back(rule);
        }
      }
    }
    if (!d.rules.empty()) {
      d.cause = Cause::kForbidden;
      return d;
    }
    if (permits.empty()) {
      d.cause = Cause::kNoPermit;
      return d;
    }
    d.rules = std::move(permits);
    for (uint32_t r : d.rules) Merge(p.rules[r].obligations, &d.obligations);
    d.effect = Effect::kPermit;
    d.cause = Cause::kPermitted;
    return d;
  } catch (const std::exception& e) {
    Decision failed;
    failed.cause = Cause::kError;
    failed.detail = absl::StrCat("evaluation failed: ", e.what());
    return failed;
  }
}

Explanation Policy::Explain(const Flow& flow, size_t max_near_misses) const {
  Explanation e;
  e.decision = Evaluate(flow);
  e.deciding_rules = e.decision.RuleNames(*this);
  e.reason = e.decision.Reason(*this, flow);
  if (!CheckFlow(flow).ok()) return e;
  std::vector<std::pair<size_t, uint32_t>> misses;  // (failed count, rule)
  std::vector<std::vector<std::string>> failed(impl_->rules.size());
  for (uint32_t i = 0; i < impl_->rules.size(); ++i) {
    failed[i] = FailedConditions(impl_->rules[i], flow);
    if (!failed[i].empty()) misses.emplace_back(failed[i].size(), i);
  }
  std::sort(misses.begin(), misses.end());
  for (size_t k = 0; k < misses.size() && k < max_near_misses; ++k) {
    uint32_t i = misses[k].second;
    e.near_misses.push_back(NearMiss{
        impl_->rules[i].name, impl_->rules[i].effect, std::move(failed[i])});
  }
  return e;
}

std::string ShortVersion(absl::string_view version) {
  return std::string(version.substr(0, sizeof("sha256:") - 1 + 12));
}

std::vector<std::string> Decision::RuleNames(const Policy& policy) const {
  std::vector<std::string> names;
  names.reserve(rules.size());
  for (uint32_t r : rules) names.push_back(policy.rule_name(r));
  return names;
}

std::string Decision::Reason(const Policy& policy, const Flow& flow) const {
  auto quoted = [&] {
    std::vector<std::string> q;
    for (uint32_t r : rules)
      q.push_back(absl::StrCat("\"", policy.rule_name(r), "\""));
    return absl::StrJoin(q, ", ");
  };
  std::string version = ShortVersion(policy.version());
  switch (cause) {
    case Cause::kPermitted:
      return absl::StrCat("policy ", version, " permits ", flow.DebugString(),
                          ": rule", rules.size() > 1 ? "s " : " ", quoted());
    case Cause::kForbidden:
      return absl::StrCat("policy ", version, " forbids ", flow.DebugString(),
                          ": rule", rules.size() > 1 ? "s " : " ", quoted());
    case Cause::kNoPermit:
      return absl::StrCat("no rule of policy ", version, " permits ",
                          flow.DebugString(), " (deny by default)");
    case Cause::kBuiltInGuard:
      return absl::StrCat("refused: ", detail);
    case Cause::kError:
      return absl::StrCat(
          "denied because the policy could not be evaluated "
          "(fail closed): ",
          detail);
  }
  return "denied";
}

std::string Flow::DebugString() const {
  return absl::StrCat(sender, " → ", recipient, " (",
                      document_type.empty() ? "any type" : document_type, ", ",
                      Name(classification), ", ", Name(urgency), ", ",
                      Name(business_type), ", origin ", Name(origin),
                      ", decision ", Name(decision_category), ", ",
                      cross_broker ? "cross-broker" : "local", ")");
}

std::string Obligations::DebugString() const {
  std::vector<std::string> parts;
  if (end_to_end_encryption) parts.push_back("end_to_end_encryption");
  for (const Approver& a : approvals) {
    parts.push_back(absl::StrCat("approval(", a.role, "@",
                                 a.org.empty() ? "sender" : a.org, ")"));
  }
  if (retention) {
    parts.push_back(absl::StrCat(
        "retention ",
        absl::ToInt64Hours(*retention) % 24 == 0
            ? absl::StrCat(absl::ToInt64Hours(*retention) / 24, "d")
            : absl::StrCat(absl::ToInt64Hours(*retention), "h")));
  }
  if (max_size_bytes)
    parts.push_back(absl::StrCat("max_size ", *max_size_bytes));
  if (paper_conversion_forbidden) parts.push_back("paper_conversion_forbidden");
  return parts.empty() ? "none" : absl::StrJoin(parts, ", ");
}

}  // namespace lienthong::policy
