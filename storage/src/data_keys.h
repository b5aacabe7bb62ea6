// Encryption at rest: the data keys that seal stored documents, kept in the
// meta column family wrapped by the master key.
//
//   record/datakey/<id hex>   -> <master key id hex (16)> <AeadSeal(master,
//                                data key, "lienthong-data-key " + id)>
//   record/datakey-current    -> <id hex>: the key new documents use
//
// A sealed value is kMarker, the 8-byte data key id, then AeadSeal(data key,
// value, associated data). The associated data is the key a document or a
// record is stored under, so such a value moved to another key does not
// open; a status event or a queue payload is bound to its document (one
// moved within its document still opens: the audit chain, not encryption,
// shows what happened), an audit entry to the log (its place is bound by the
// chain's hash). Values without the marker were written before encryption
// was turned on and read as they are. Internal to storage.
#ifndef LIENTHONG_STORAGE_SRC_DATA_KEYS_H_
#define LIENTHONG_STORAGE_SRC_DATA_KEYS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "lienthong/storage/store.h"
#include "storage/src/kv_engine.h"

namespace lienthong::storage {

class DataKeys {
 public:
  // Reads the data keys from `engine`, re-wraps those wrapped by a previous
  // master key and, with a master key but no data key yet, makes the first;
  // what changed is written and synced before it returns. Call before the
  // store serves (it commits to the engine directly). FAILED_PRECONDITION
  // when the store holds data keys and no master key is given, or a key was
  // wrapped by a master key not given; INVALID_ARGUMENT for a master key
  // that is not 32 bytes.
  static absl::StatusOr<std::unique_ptr<DataKeys>> Load(
      KvEngine& engine, const EncryptionOptions& options);

  bool enabled() const;
  // Whether the record `key` (without the store's record prefix) is one of
  // the data keys' own records, which the master key wraps instead.
  static bool IsOwnRecord(absl::string_view key);
  // Whether `stored` is a sealed value (starts with the marker).
  static bool IsSealed(absl::string_view stored);

  // The value to store for `plaintext` under `key`.
  absl::StatusOr<std::string> Seal(absl::string_view plaintext,
                                   absl::string_view key) const;
  // The plaintext of a stored value. DATA_LOSS when it fails
  // authentication (altered, or moved from another key); FAILED_PRECONDITION
  // when it is sealed and no key for it is loaded.
  absl::StatusOr<std::string> Open(std::string stored,
                                   absl::string_view key) const;

  // A new data key for new documents and every key re-wrapped under
  // `options.master_key`: the records to write (Record keys without the
  // store's record prefix). Install after they are durable.
  struct Rotation {
    std::vector<Record> records;
    std::string master_key_id;
    std::string current_id;
    absl::flat_hash_map<std::string, std::string> keys;  // id -> data key
  };
  absl::StatusOr<Rotation> PrepareRotation(
      const EncryptionOptions& options) const;
  void Install(Rotation rotation);

  EncryptionInfo Info() const;

 private:
  DataKeys() = default;

  mutable absl::Mutex mu_;
  std::string master_key_id_ ABSL_GUARDED_BY(mu_);  // hex
  std::string current_id_ ABSL_GUARDED_BY(mu_);     // raw 8 bytes
  // raw id -> data key
  absl::flat_hash_map<std::string, std::string> keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lienthong::storage

#endif  // LIENTHONG_STORAGE_SRC_DATA_KEYS_H_
