// The set of document ids this application has already handled, so that a
// redelivered document (delivery is at least once) is acknowledged without
// being handed to the application again. Internal to the SDK.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<DedupSet> seen,
//                    DedupSet::Open(1'000'000, "/var/lib/app/seen-ids"));
//   if (seen->Contains(id)) { /* ack, skip */ }
//   seen->Insert(id);                  // handled: remember it in memory
//   RETURN_IF_ERROR(seen->Persist({id}));  // and on disk, before the ack
//
// Bounded: it remembers the last `capacity` ids (first in, first out).
// In memory an id is kept as a 128-bit digest (SHA-256 prefix), about 40
// bytes an id, so the default million ids take some 40 MB.
//
// With a state file, ids are appended one per line and synced once per
// Persist call; Open loads the file, keeping its last `capacity` ids, and the
// file is rewritten (compacted) when it holds more than twice as many lines.
//
// Thread-safe. Contains and Insert never wait for file I/O.
#ifndef LIENTHONG_CLIENT_SDK_SRC_DEDUP_SET_H_
#define LIENTHONG_CLIENT_SDK_SRC_DEDUP_SET_H_

#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace lienthong::client_internal {

class DedupSet {
 public:
  // An in-memory set of at most `capacity` ids (> 0).
  explicit DedupSet(size_t capacity);

  // A set backed by `state_file` (created when missing; empty means memory
  // only). INVALID_ARGUMENT when capacity is 0; NOT_FOUND, PERMISSION_DENIED
  // or another errno-derived code naming the file when it cannot be read,
  // created or rewritten.
  static absl::StatusOr<std::unique_ptr<DedupSet>> Open(
      size_t capacity, const std::string& state_file);

  ~DedupSet();
  DedupSet(const DedupSet&) = delete;
  DedupSet& operator=(const DedupSet&) = delete;

  // True when `id` is among the remembered ids.
  bool Contains(absl::string_view id) const;

  // Remembers `id` in memory, forgetting the oldest id when full. Returns
  // false (and changes nothing) when `id` was already remembered.
  bool Insert(absl::string_view id);

  // Appends `ids` to the state file and syncs it once; a no-op without a
  // state file. Ids that are empty or contain a line break are skipped. On
  // a write or sync failure returns the errno-derived status naming the
  // file; the ids stay remembered in memory.
  absl::Status Persist(const std::vector<std::string>& ids);

  // Insert for each id, then Persist.
  absl::Status Add(const std::vector<std::string>& ids);

  size_t size() const;
  size_t capacity() const { return capacity_; }
  const std::string& state_file() const { return state_file_; }

 private:
  using Digest = absl::uint128;

  DedupSet(size_t capacity, std::string state_file);
  static Digest DigestOf(absl::string_view id);

  // Loads the file and opens it for appending; compacts it when needed.
  absl::Status Load() ABSL_LOCKS_EXCLUDED(file_mu_, mu_);
  // Rewrites the state file with its last `capacity_` complete lines.
  absl::Status CompactLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(file_mu_);
  bool InsertLocked(Digest digest) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FileError(absl::string_view what, int error_number) const;

  const size_t capacity_;
  const std::string state_file_;

  // Lock order: file_mu_ before mu_.
  absl::Mutex file_mu_;
  int fd_ ABSL_GUARDED_BY(file_mu_) = -1;
  size_t lines_in_file_ ABSL_GUARDED_BY(file_mu_) = 0;

  mutable absl::Mutex mu_ ABSL_ACQUIRED_AFTER(file_mu_);
  std::deque<Digest> order_ ABSL_GUARDED_BY(mu_);  // oldest first
  absl::flat_hash_set<Digest> digests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lienthong::client_internal

#endif  // LIENTHONG_CLIENT_SDK_SRC_DEDUP_SET_H_
