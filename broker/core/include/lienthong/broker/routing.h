// Where a document goes next when its recipient is served by another
// broker: the configured route table first (exact organizations, then the
// deepest `under` node, then the province), then what peers announced in
// the federation directory, then the default peer. Brokers already on a
// document's trace are never chosen again, so a document cannot loop.
//
//   Router router({{.name = "central", .is_default = true},
//                  {.name = "h50", .provinces = {"H50"}}});
//   ASSIGN_OR_RETURN(std::string peer,
//                    router.Route("000.01.23.H50", /*excluded=*/{}));  // "h50"
//   router.Learn("central", announce_entries, now);
//
// Thread-safe.
#ifndef LIENTHONG_BROKER_ROUTING_H_
#define LIENTHONG_BROKER_ROUTING_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace lienthong::broker {

// Whether `p` is a province group of an organization code ("H49", "G22").
bool ValidProvince(absl::string_view p);

// A peer broker and the recipients the route table sends to it.
struct PeerRoute {
  std::string name;  // broker name: spiffe://<trust domain>/broker/<name>
  std::vector<std::string> orgs;       // exact organization codes
  std::vector<std::string> under;      // a node and everything below it
  std::vector<std::string> provinces;  // last group of the code ("H50")
  bool is_default = false;             // where everything else goes

  // INVALID_ARGUMENT naming the field (`where` prefixes it).
  absl::Status Validate(absl::string_view where) const;
};

// An organization some broker serves, as a peer announced it.
struct DirectoryEntry {
  std::string org;
  std::string name;
  std::string broker;     // the broker that serves it
  uint32_t distance = 0;  // hops from the announcing peer
  // Brokers the entry passed through, the serving broker first, up to the
  // one that announced it to us (Learn appends the announcing peer).
  // An entry is never announced to a broker on its path, so announcements
  // cannot loop.
  std::vector<std::string> path;
  // The organization's published encryption certificate (DER); empty: none.
  std::string encryption_certificate;

  friend bool operator==(const DirectoryEntry&,
                         const DirectoryEntry&) = default;
};

// What the directory knows through one peer.
struct PeerDirectory {
  std::string peer;
  std::optional<absl::Time> heard_at;  // last announce; nullopt: never
  bool stale = false;                  // not heard for the stale period
  std::vector<DirectoryEntry> entries;
};

class Router {
 public:
  // `stale_after`: a peer not heard from for this long is stale; its entries
  // still route (a stale peer may come back) but rank after fresh ones.
  Router(std::vector<PeerRoute> peers, absl::Duration stale_after);

  // The peer for `org`, avoiding the `excluded` brokers; NOT_FOUND saying
  // why when none can take it.
  absl::StatusOr<std::string> Route(
      const std::string& org, const absl::flat_hash_set<std::string>& excluded,
      absl::Time now) const;

  // Whether a send to `org` should be refused at once as unknown: nothing
  // routes it, or the directory has heard from every peer, none of them
  // announced `org` or a pattern (province, node) covering it, and no
  // explicit route names it. While some peer has never
  // announced (after a restart, during an outage) a routable org is given
  // the benefit of the doubt: the far end decides.
  bool KnownUnreachable(const std::string& org, absl::Time now) const;
  // KnownUnreachable without the routing half: for a caller that has
  // already routed `org`.
  bool MayBeServed(const std::string& org) const;

  bool IsPeer(absl::string_view name) const;
  const std::vector<PeerRoute>& peers() const { return peers_; }

  // Replaces what `peer` announced (appending `peer` to each entry's path).
  // A peer's entries stay until it announces again, even when it goes stale.
  // Returns whether they differ from what `peer` announced before.
  bool Learn(const std::string& peer, std::vector<DirectoryEntry> entries,
             absl::Time now);

  // What to announce to `peer`: `own` (distance 0) and the best entry for
  // every org learned from other peers (distance + 1, below `max_distance`),
  // leaving out entries `peer` serves or already passed through. Entries of
  // stale peers are announced too: an outage does not make organizations
  // unknown.
  std::vector<DirectoryEntry> AnnounceTo(const std::string& peer,
                                         const std::vector<DirectoryEntry>& own,
                                         uint32_t max_distance,
                                         absl::Time now) const;

  std::vector<PeerDirectory> Directory(absl::Time now) const;

  // The best entry any peer announced for `org` (fresh before stale, then
  // fewest hops), or nullopt.
  std::optional<DirectoryEntry> Find(const std::string& org,
                                     absl::Time now) const;

  // Route patterns: the provinces and hierarchy nodes this broker's route
  // table sends to peers other than `peer` (what `peer` may send here even
  // for organizations nobody has announced, e.g. behind a broker that is
  // down), and what `peer` announced of its own.
  struct Patterns {
    std::vector<std::string> provinces;
    std::vector<std::string> under;
  };
  Patterns PatternsFor(const std::string& peer) const;
  void LearnPatterns(const std::string& peer, Patterns patterns);

 private:
  struct Learned {
    absl::Time heard_at;
    absl::flat_hash_map<std::string, DirectoryEntry> entries;  // by org
  };
  // Config route: the peer whose route matches `org` most specifically.
  std::optional<std::string> ConfigRoute(
      const std::string& org,
      const absl::flat_hash_set<std::string>& excluded) const;
  std::optional<std::string> DirectoryRoute(
      const std::string& org, const absl::flat_hash_set<std::string>& excluded,
      absl::Time now) const;

  const std::vector<PeerRoute> peers_;
  const absl::Duration stale_after_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Learned> learned_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Patterns> patterns_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_ROUTING_H_
