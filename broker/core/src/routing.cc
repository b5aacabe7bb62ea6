#include "lienthong/broker/routing.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lienthong/common/org_code.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::broker {
namespace {

// How specifically a route names an org: higher wins.
constexpr int kExact = 1 << 20;
constexpr int kProvince = 1;
// `under` ranks by depth: a node deeper in the hierarchy is more specific.
int UnderRank(absl::string_view node) {
  int depth = 1;
  for (std::string parent = ParentOrgCode(node); !parent.empty();
       parent = ParentOrgCode(parent)) {
    ++depth;
  }
  return 2 + depth;
}

}  // namespace

bool ValidProvince(absl::string_view p) {
  return p.size() == 3 && absl::ascii_isupper(p[0]) &&
         absl::ascii_isdigit(p[1]) && absl::ascii_isdigit(p[2]);
}

absl::Status PeerRoute::Validate(absl::string_view where) const {
  if (name.empty())
    return absl::InvalidArgumentError(absl::StrCat(where, ".name: required"));
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.') {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".name: \"", name,
          "\" is not a broker name (letters, digits, '-', '_', '.')"));
    }
  }
  for (size_t i = 0; i < orgs.size(); ++i) {
    RETURN_IF_ERROR(
        ValidateOrgCode(orgs[i], absl::StrCat(where, ".serves.orgs[", i, "]")));
  }
  for (size_t i = 0; i < under.size(); ++i) {
    RETURN_IF_ERROR(ValidateOrgCode(
        under[i], absl::StrCat(where, ".serves.under[", i, "]")));
  }
  for (size_t i = 0; i < provinces.size(); ++i) {
    if (!ValidProvince(provinces[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".serves.provinces[", i, "]: \"", provinces[i],
          "\" is not a province group (a capital letter and two digits, "
          "e.g. H49)"));
    }
  }
  return absl::OkStatus();
}

Router::Router(std::vector<PeerRoute> peers, absl::Duration stale_after)
    : peers_(std::move(peers)), stale_after_(stale_after) {}

bool Router::IsPeer(absl::string_view name) const {
  return std::any_of(peers_.begin(), peers_.end(),
                     [&](const PeerRoute& p) { return p.name == name; });
}

std::optional<std::string> Router::ConfigRoute(
    const std::string& org,
    const absl::flat_hash_set<std::string>& excluded) const {
  int best = 0;
  const PeerRoute* chosen = nullptr;
  for (const PeerRoute& p : peers_) {
    if (excluded.contains(p.name)) continue;
    int rank = 0;
    if (std::find(p.orgs.begin(), p.orgs.end(), org) != p.orgs.end())
      rank = kExact;
    for (const std::string& u : p.under)
      if (IsUnder(org, u)) rank = std::max(rank, UnderRank(u));
    for (const std::string& prov : p.provinces)
      if (TopLevelGroup(org) == prov) rank = std::max(rank, kProvince);
    if (rank > best) {
      best = rank;
      chosen = &p;
    }
  }
  if (!chosen) return std::nullopt;
  return chosen->name;
}

std::optional<std::string> Router::DirectoryRoute(
    const std::string& org, const absl::flat_hash_set<std::string>& excluded,
    absl::Time now) const {
  absl::MutexLock lock(&mu_);
  // Fresh before stale, then fewer hops, then the peer's name (stable).
  std::optional<std::tuple<bool, uint32_t, std::string>> best;
  for (const auto& [peer, learned] : learned_) {
    if (excluded.contains(peer)) continue;
    auto it = learned.entries.find(org);
    if (it == learned.entries.end()) continue;
    if (excluded.contains(it->second.broker)) continue;
    bool stale = now - learned.heard_at > stale_after_;
    auto key = std::make_tuple(stale, it->second.distance, peer);
    if (!best || key < *best) best = key;
  }
  if (!best) return std::nullopt;
  return std::get<2>(*best);
}

absl::StatusOr<std::string> Router::Route(
    const std::string& org, const absl::flat_hash_set<std::string>& excluded,
    absl::Time now) const {
  if (std::optional<std::string> p = ConfigRoute(org, excluded)) return *p;
  if (std::optional<std::string> p = DirectoryRoute(org, excluded, now))
    return *p;
  for (const PeerRoute& p : peers_) {
    if (p.is_default && !excluded.contains(p.name)) return p.name;
  }
  std::vector<std::string> skipped(excluded.begin(), excluded.end());
  std::sort(skipped.begin(), skipped.end());
  return absl::NotFoundError(absl::StrCat(
      "no route to ", org,
      peers_.empty() ? ": this broker has no peers"
                     : ": no route table entry, directory entry or default "
                       "peer reaches it",
      skipped.empty()
          ? ""
          : absl::StrCat(" (brokers already on the document's trace are not "
                         "used again: ",
                         absl::StrJoin(skipped, ", "), ")")));
}

bool Router::KnownUnreachable(const std::string& org, absl::Time now) const {
  return !Route(org, {}, now).ok() || !MayBeServed(org);
}

bool Router::MayBeServed(const std::string& org) const {
  if (ConfigRoute(org, {})) return true;
  absl::MutexLock lock(&mu_);
  for (const PeerRoute& p : peers_) {
    auto it = learned_.find(p.name);
    if (it == learned_.end()) return true;  // never heard: benefit of doubt
    if (it->second.entries.contains(org)) return true;
  }
  for (const auto& [peer, patterns] : patterns_) {
    for (const std::string& p : patterns.provinces)
      if (TopLevelGroup(org) == p) return true;
    for (const std::string& u : patterns.under)
      if (IsUnder(org, u)) return true;
  }
  return false;
}

Router::Patterns Router::PatternsFor(const std::string& peer) const {
  Patterns out;
  for (const PeerRoute& p : peers_) {
    if (p.name == peer) continue;
    out.provinces.insert(out.provinces.end(), p.provinces.begin(),
                         p.provinces.end());
    out.under.insert(out.under.end(), p.under.begin(), p.under.end());
  }
  std::sort(out.provinces.begin(), out.provinces.end());
  out.provinces.erase(std::unique(out.provinces.begin(), out.provinces.end()),
                      out.provinces.end());
  std::sort(out.under.begin(), out.under.end());
  out.under.erase(std::unique(out.under.begin(), out.under.end()),
                  out.under.end());
  return out;
}

void Router::LearnPatterns(const std::string& peer, Patterns patterns) {
  absl::MutexLock lock(&mu_);
  patterns_[peer] = std::move(patterns);
}

bool Router::Learn(const std::string& peer, std::vector<DirectoryEntry> entries,
                   absl::Time now) {
  Learned learned;
  learned.heard_at = now;
  for (DirectoryEntry& e : entries) {
    e.path.push_back(peer);
    std::string org = e.org;
    auto [it, inserted] = learned.entries.emplace(org, e);
    if (!inserted && e.distance < it->second.distance) it->second = e;
  }
  absl::MutexLock lock(&mu_);
  Learned& slot = learned_[peer];
  const bool changed = slot.entries != learned.entries;
  slot = std::move(learned);
  return changed;
}

std::vector<DirectoryEntry> Router::AnnounceTo(
    const std::string& peer, const std::vector<DirectoryEntry>& own,
    uint32_t max_distance, absl::Time now) const {
  absl::flat_hash_map<std::string, DirectoryEntry> best;
  for (const DirectoryEntry& e : own) best[e.org] = e;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [from, learned] : learned_) {
      if (from == peer) continue;  // split horizon
      for (const auto& [org, e] : learned.entries) {
        if (e.broker == peer) continue;
        if (std::find(e.path.begin(), e.path.end(), peer) != e.path.end())
          continue;  // it came through `peer`
        uint32_t distance = e.distance + 1;
        if (distance >= max_distance) continue;
        auto it = best.find(org);
        if (it != best.end() && it->second.distance <= distance) continue;
        DirectoryEntry copy = e;
        copy.distance = distance;
        best[org] = std::move(copy);
      }
    }
  }
  std::vector<DirectoryEntry> out;
  out.reserve(best.size());
  for (auto& [org, e] : best) out.push_back(std::move(e));
  std::sort(out.begin(), out.end(),
            [](const DirectoryEntry& a, const DirectoryEntry& b) {
              return a.org < b.org;
            });
  return out;
}

std::optional<DirectoryEntry> Router::Find(const std::string& org,
                                           absl::Time now) const {
  absl::MutexLock lock(&mu_);
  const DirectoryEntry* best = nullptr;
  std::tuple<bool, uint32_t, std::string> best_key;
  for (const auto& [peer, learned] : learned_) {
    auto it = learned.entries.find(org);
    if (it == learned.entries.end()) continue;
    auto key = std::make_tuple(now - learned.heard_at > stale_after_,
                               it->second.distance, peer);
    if (best == nullptr || key < best_key) {
      best = &it->second;
      best_key = std::move(key);
    }
  }
  if (best == nullptr) return std::nullopt;
  return *best;
}

std::vector<PeerDirectory> Router::Directory(absl::Time now) const {
  std::vector<PeerDirectory> out;
  absl::MutexLock lock(&mu_);
  for (const PeerRoute& p : peers_) {
    PeerDirectory& d = out.emplace_back();
    d.peer = p.name;
    auto it = learned_.find(p.name);
    if (it == learned_.end()) continue;
    d.heard_at = it->second.heard_at;
    d.stale = now - it->second.heard_at > stale_after_;
    for (const auto& [org, e] : it->second.entries) d.entries.push_back(e);
    std::sort(d.entries.begin(), d.entries.end(),
              [](const DirectoryEntry& a, const DirectoryEntry& b) {
                return a.org < b.org;
              });
  }
  return out;
}

}  // namespace lienthong::broker
