// Key layout shared by the RocksDB and in-memory stores.
//   documents      <document id>                   -> Document
//   idempotency    <sender> 0x00 <key>              -> document id
//   queues         <recipient> 0x00 <priority> <seq BE64>
//                                                   -> document id 0x00 sender
//                                                      [0x00 payload]
//   events         <document id> 0x00 <seq BE64>    -> StatusEvent
//   sender_events  <sender> 0x00 <seq BE64>         -> StatusEvent
//   default (meta) meta/last_sequence, record/<key> -> Record value
//                  meta/audit_head                  -> size BE64, hash (32)
//   audit          'e' <index BE64>                 -> StoredAuditEntry
//                  'c' <tree size BE64>             -> AuditCheckpoint
//                  'd' <document id> 0x00 <index BE64> -> "" (by document)
// Events are stored without their sequence: it is the key's last 8 bytes.
#ifndef LIENTHONG_STORAGE_SRC_KEYS_H_
#define LIENTHONG_STORAGE_SRC_KEYS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"
#include "lienthong/storage/store.h"

namespace lienthong::storage::keys {

inline void AppendBigEndian64(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i)
    out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

inline uint64_t ReadBigEndian64(absl::string_view s) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(s[i]);
  return v;
}

inline std::string Idempotency(absl::string_view sender,
                               absl::string_view key) {
  std::string k(sender);
  k.push_back('\0');
  k.append(key.data(), key.size());
  return k;
}

inline std::string Queue(absl::string_view recipient, int priority,
                         uint64_t seq) {
  std::string k(recipient);
  k.push_back('\0');
  k.push_back(static_cast<char>('0' + priority));
  AppendBigEndian64(&k, seq);
  return k;
}

// document id 0x00 sender [0x00 payload]; senders never hold 0x00.
inline std::string QueueValue(absl::string_view document_id,
                              absl::string_view sender,
                              absl::string_view payload) {
  std::string v(document_id);
  v.push_back('\0');
  v.append(sender.data(), sender.size());
  if (!payload.empty()) {
    v.push_back('\0');
    v.append(payload.data(), payload.size());
  }
  return v;
}

inline std::optional<QueueEntry> ParseQueue(absl::string_view key,
                                            absl::string_view value) {
  size_t zero = key.find('\0');
  if (zero == key.npos || key.size() != zero + 1 + 1 + 8) return std::nullopt;
  QueueEntry e;
  e.recipient = std::string(key.substr(0, zero));
  e.priority = key[zero + 1] - '0';
  if (e.priority < 0 || e.priority >= kPriorityLevels) return std::nullopt;
  e.sequence = ReadBigEndian64(key.substr(zero + 2));
  size_t sep = value.find('\0');
  if (sep == value.npos) return std::nullopt;
  e.document_id = std::string(value.substr(0, sep));
  absl::string_view rest = value.substr(sep + 1);
  size_t sep2 = rest.find('\0');
  e.sender = std::string(rest.substr(0, sep2));
  if (sep2 != rest.npos) e.payload = std::string(rest.substr(sep2 + 1));
  return e;
}

// <prefix> 0x00 <seq BE64>, for events and sender_events.
inline std::string Sequenced(absl::string_view prefix, uint64_t seq) {
  std::string k(prefix);
  k.push_back('\0');
  AppendBigEndian64(&k, seq);
  return k;
}

inline std::string SequencedPrefix(absl::string_view prefix) {
  std::string k(prefix);
  k.push_back('\0');
  return k;
}

inline constexpr absl::string_view kLastSequence = "meta/last_sequence";
inline constexpr absl::string_view kAuditHead = "meta/audit_head";
inline constexpr char kAuditEntryTag = 'e';
inline constexpr char kAuditCheckpointTag = 'c';

inline std::string Audit(char tag, uint64_t n) {
  std::string k(1, tag);
  AppendBigEndian64(&k, n);
  return k;
}

inline constexpr char kAuditDocumentTag = 'd';
inline std::string AuditByDocument(absl::string_view document_id,
                                   uint64_t index) {
  std::string k(1, kAuditDocumentTag);
  k.append(document_id.data(), document_id.size());
  k.push_back('\0');
  AppendBigEndian64(&k, index);
  return k;
}

// Records (Store::ScanRecords) live in the meta column family under this.
inline constexpr absl::string_view kRecordPrefix = "record/";

}  // namespace lienthong::storage::keys

#endif  // LIENTHONG_STORAGE_SRC_KEYS_H_
