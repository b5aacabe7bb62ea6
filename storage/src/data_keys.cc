#include "storage/src/data_keys.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/status_macros.h"
#include "storage/src/keys.h"

namespace lienthong::storage {
namespace {

// Starts every sealed value. A serialized protobuf message never starts with
// a zero byte, so a plaintext value cannot be mistaken for a sealed one.
constexpr absl::string_view kMarker("\0LTE1", 5);
constexpr size_t kIdBytes = 8;
constexpr size_t kMasterIdHex = 16;
constexpr absl::string_view kKeyRecord = "datakey/";
constexpr absl::string_view kCurrentRecord = "datakey-current";

// Names a master key without revealing anything about it.
std::string MasterKeyId(absl::string_view master) {
  return sealing::Sha256Hex(absl::StrCat("lienthong-master-key-id\n", master))
      .substr(0, kMasterIdHex);
}

std::string WrapAad(absl::string_view id_hex) {
  return absl::StrCat("lienthong-data-key ", id_hex);
}

absl::Status CheckMaster(absl::string_view key, absl::string_view what) {
  if (key.size() != 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("storage: ", what, " must be 32 bytes, got ", key.size()));
  }
  return absl::OkStatus();
}

struct Loaded {
  std::string id;  // raw
  std::string key;
  std::string wrapped_by;  // master key id hex
};

// Every data key record, unwrapped with whichever master key wrapped it.
absl::StatusOr<std::vector<Loaded>> ReadKeys(KvEngine& engine,
                                             const EncryptionOptions& options,
                                             std::string* current_hex) {
  absl::flat_hash_map<std::string, std::string> masters;  // id -> key
  if (!options.master_key.empty())
    masters[MasterKeyId(options.master_key)] = options.master_key;
  for (const std::string& m : options.previous_master_keys)
    masters[MasterKeyId(m)] = m;
  std::vector<Loaded> out;
  absl::Status bad;
  const std::string prefix = absl::StrCat(keys::kRecordPrefix, kKeyRecord);
  RETURN_IF_ERROR(engine.Scan(
      Cf::kMeta, prefix, prefix, [&](absl::string_view k, absl::string_view v) {
        const std::string id_hex(k.substr(prefix.size()));
        if (id_hex.size() != 2 * kIdBytes || v.size() <= kMasterIdHex) {
          bad = absl::DataLossError(
              absl::StrCat("storage: malformed data key record ", id_hex));
          return false;
        }
        const std::string master_id(v.substr(0, kMasterIdHex));
        auto m = masters.find(master_id);
        if (m == masters.end()) {
          bad = absl::FailedPreconditionError(absl::StrCat(
              "storage: data key ", id_hex, " is wrapped by master key ",
              master_id,
              ", which is not configured (storage.master_key_file, or "
              "storage.previous_master_key_files while rotating)"));
          return false;
        }
        absl::StatusOr<std::string> key = sealing::AeadOpen(
            m->second, v.substr(kMasterIdHex), WrapAad(id_hex));
        if (!key.ok()) {
          bad = absl::DataLossError(absl::StrCat(
              "storage: data key ", id_hex, " does not open with master key ",
              master_id, ": ", key.status().message()));
          return false;
        }
        out.push_back(
            {absl::HexStringToBytes(id_hex), *std::move(key), master_id});
        return true;
      }));
  RETURN_IF_ERROR(bad);
  ASSIGN_OR_RETURN(std::optional<std::string> current,
                   engine.GetLatest(Cf::kMeta, absl::StrCat(keys::kRecordPrefix,
                                                            kCurrentRecord)));
  *current_hex = current.value_or("");
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DataKeys>> DataKeys::Load(
    KvEngine& engine, const EncryptionOptions& options) {
  if (!options.master_key.empty())
    RETURN_IF_ERROR(CheckMaster(options.master_key, "the master key"));
  for (const std::string& m : options.previous_master_keys)
    RETURN_IF_ERROR(CheckMaster(m, "a previous master key"));
  std::string current_hex;
  ASSIGN_OR_RETURN(std::vector<Loaded> loaded,
                   ReadKeys(engine, options, &current_hex));
  std::unique_ptr<DataKeys> keys(new DataKeys());
  if (options.master_key.empty()) {
    if (!loaded.empty() || !current_hex.empty()) {
      return absl::FailedPreconditionError(
          "storage: the store holds documents encrypted at rest and no master "
          "key is configured (storage.master_key_file)");
    }
    return keys;  // encryption off
  }
  // Re-wrap what a previous master key wrapped; make the first key.
  Rotation r;
  r.master_key_id = MasterKeyId(options.master_key);
  bool changed = false;
  for (Loaded& l : loaded) {
    if (l.wrapped_by != r.master_key_id) changed = true;
    r.keys[l.id] = std::move(l.key);
  }
  r.current_id = absl::HexStringToBytes(current_hex);
  if (r.keys.empty() || !r.keys.contains(r.current_id)) {
    r.current_id = sealing::RandomKey().substr(0, kIdBytes);
    r.keys[r.current_id] = sealing::RandomKey();
    changed = true;
  }
  if (changed) {
    std::vector<std::string> owned;  // KvOp views point here
    owned.reserve(2 * r.keys.size() + 2);
    std::vector<KvOp> ops;
    for (const auto& [id, key] : r.keys) {
      const std::string id_hex = absl::BytesToHexString(id);
      ASSIGN_OR_RETURN(
          std::string wrapped,
          sealing::AeadSeal(options.master_key, key, WrapAad(id_hex)));
      owned.push_back(absl::StrCat(keys::kRecordPrefix, kKeyRecord, id_hex));
      owned.push_back(absl::StrCat(r.master_key_id, wrapped));
    }
    owned.push_back(absl::StrCat(keys::kRecordPrefix, kCurrentRecord));
    owned.push_back(absl::BytesToHexString(r.current_id));
    for (size_t i = 0; i < owned.size(); i += 2)
      ops.push_back(KvOp{Cf::kMeta, false, owned[i], owned[i + 1]});
    RETURN_IF_ERROR(engine.Commit(ops, 256 * ops.size()));
    RETURN_IF_ERROR(engine.Sync(/*durable=*/true));
  }
  keys->Install(std::move(r));
  return keys;
}

bool DataKeys::enabled() const {
  absl::ReaderMutexLock lock(&mu_);
  return !current_id_.empty();
}

bool DataKeys::IsOwnRecord(absl::string_view key) {
  return absl::StartsWith(key, kKeyRecord) || key == kCurrentRecord;
}

bool DataKeys::IsSealed(absl::string_view stored) {
  return absl::StartsWith(stored, kMarker);
}

absl::StatusOr<std::string> DataKeys::Seal(absl::string_view plaintext,
                                           absl::string_view key) const {
  absl::ReaderMutexLock lock(&mu_);
  if (current_id_.empty()) return std::string(plaintext);
  ASSIGN_OR_RETURN(std::string sealed,
                   sealing::AeadSeal(keys_.at(current_id_), plaintext, key));
  return absl::StrCat(kMarker, current_id_, sealed);
}

absl::StatusOr<std::string> DataKeys::Open(std::string stored,
                                           absl::string_view key) const {
  if (!absl::StartsWith(stored, kMarker)) return stored;  // from before
  absl::string_view rest(stored);
  rest.remove_prefix(kMarker.size());
  if (rest.size() < kIdBytes) {
    return absl::DataLossError(
        absl::StrCat("storage: the value of ", key, " is truncated"));
  }
  const std::string id(rest.substr(0, kIdBytes));
  absl::ReaderMutexLock lock(&mu_);
  auto it = keys_.find(id);
  if (it == keys_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "storage: ", key, " is encrypted at rest with data key ",
        absl::BytesToHexString(id),
        ", which is not loaded (is storage.master_key_file set?)"));
  }
  absl::StatusOr<std::string> plain =
      sealing::AeadOpen(it->second, rest.substr(kIdBytes), key);
  if (!plain.ok()) {
    return absl::Status(
        plain.status().code(),
        absl::StrCat("storage: ", key, ": ", plain.status().message()));
  }
  return plain;
}

absl::StatusOr<DataKeys::Rotation> DataKeys::PrepareRotation(
    const EncryptionOptions& options) const {
  RETURN_IF_ERROR(CheckMaster(options.master_key, "the master key"));
  for (const std::string& m : options.previous_master_keys)
    RETURN_IF_ERROR(CheckMaster(m, "a previous master key"));
  Rotation r;
  r.master_key_id = MasterKeyId(options.master_key);
  {
    absl::ReaderMutexLock lock(&mu_);
    // The keys in use were unwrapped at load or made since: a master key
    // that no longer matches them is simply the new wrapper.
    r.keys = keys_;
  }
  r.current_id = sealing::RandomKey().substr(0, kIdBytes);
  r.keys[r.current_id] = sealing::RandomKey();
  for (const auto& [id, key] : r.keys) {
    const std::string id_hex = absl::BytesToHexString(id);
    ASSIGN_OR_RETURN(
        std::string wrapped,
        sealing::AeadSeal(options.master_key, key, WrapAad(id_hex)));
    r.records.push_back(Record{absl::StrCat(kKeyRecord, id_hex),
                               absl::StrCat(r.master_key_id, wrapped)});
  }
  r.records.push_back(Record{std::string(kCurrentRecord),
                             absl::BytesToHexString(r.current_id)});
  return r;
}

void DataKeys::Install(Rotation rotation) {
  absl::MutexLock lock(&mu_);
  master_key_id_ = std::move(rotation.master_key_id);
  current_id_ = std::move(rotation.current_id);
  keys_ = std::move(rotation.keys);
}

EncryptionInfo DataKeys::Info() const {
  absl::ReaderMutexLock lock(&mu_);
  EncryptionInfo info;
  info.enabled = !current_id_.empty();
  info.master_key_id = master_key_id_;
  info.data_key_id = absl::BytesToHexString(current_id_);
  info.data_keys = keys_.size();
  return info;
}

}  // namespace lienthong::storage
