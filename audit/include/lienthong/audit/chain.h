// The audit log's rules: how entries chain, what a checkpoint signs, and how
// a log (the broker's store, or an export) is verified. No storage, no gRPC:
// the broker and the offline `lienthong audit verify-export` share this.
//
//   // Signing (the broker, with its TLS key):
//   ASSIGN_OR_RETURN(auto signer, CheckpointSigner::FromPem(cert, key));
//   v1::AuditCheckpoint c = ...;  // broker, tree_size, head_hash, time
//   RETURN_IF_ERROR(signer->Sign(&c));
//
//   // Verifying (anyone with the CA):
//   AuditVerifier verifier({.broker = "spiffe://lienthong.local/broker/x",
//                           .trust_root_pem = ca_pem});
//   for (each stored checkpoint) verifier.AddCheckpoint(size, raw);
//   for (each stored entry, in index order) verifier.AddEntry(index, raw);
//   AuditVerification v = verifier.Finish(head_record);
//   if (!v.ok()) std::cout << v.problems[0];  // "entry 17: ..."
#ifndef LIENTHONG_AUDIT_CHAIN_H_
#define LIENTHONG_AUDIT_CHAIN_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lienthong/v1/audit.pb.h"

namespace lienthong::audit {

inline constexpr size_t kHashBytes = 32;

// head(i) = SHA-256(head(i-1) || BE64(i) || entry_bytes); head(0) is 32 zero
// bytes. `previous` must be kHashBytes long. Thread-safe.
std::string AuditChainHash(absl::string_view previous, uint64_t index,
                           absl::string_view entry_bytes);

// The exact bytes a checkpoint's signature covers (see audit.proto).
std::string CheckpointText(const v1::AuditCheckpoint& checkpoint);

// Signs checkpoints with the broker's TLS key. Thread-safe.
class CheckpointSigner {
 public:
  // `certificate_pem` and `key_pem` are the broker's TLS certificate and
  // private key (EC P-256). INVALID_ARGUMENT saying which is unreadable,
  // not P-256, or when the key is not the certificate's.
  static absl::StatusOr<std::unique_ptr<CheckpointSigner>> FromPem(
      std::string certificate_pem, absl::string_view key_pem);
  ~CheckpointSigner();

  // Fills `checkpoint`'s signature and certificate_pem over
  // CheckpointText(). INTERNAL if the crypto library fails.
  absl::Status Sign(v1::AuditCheckpoint* checkpoint) const;
  const std::string& certificate_pem() const { return certificate_pem_; }

 private:
  struct Key;
  CheckpointSigner(std::string certificate_pem, std::unique_ptr<Key> key);
  std::string certificate_pem_;
  std::unique_ptr<Key> key_;
};

// Checks a checkpoint's signature against the certificate it carries, that
// the certificate names `checkpoint.broker` (its one URI SAN) and, when
// `trust_root_pem` is not empty, that it chains to one of those CA
// certificates at the checkpoint's time. INVALID_ARGUMENT saying which
// check failed.
absl::Status VerifyCheckpointSignature(const v1::AuditCheckpoint& checkpoint,
                                       absl::string_view trust_root_pem);

struct VerifierOptions {
  // SPIFFE id of the broker whose log this is; checkpoints must be its.
  std::string broker;
  // CA certificates (PEM) the checkpoints' certificates must chain to.
  // Empty: signatures are checked against the certificates they carry only.
  std::string trust_root_pem;
  // Most problems listed (the first is always kept). Default 20.
  size_t max_problems = 20;
};

// What a verification found.
struct AuditVerification {
  uint64_t entries = 0;      // entries read
  uint64_t checkpoints = 0;  // checkpoints read
  // Largest tree size covered by a checkpoint that verified (signature and
  // chain); 0: none.
  uint64_t verified_size = 0;
  std::string head_hash;  // the recomputed head after the last entry
  // Index of the first entry found edited, removed or misplaced, or where
  // the log was cut; 0 when none is (a bad checkpoint signature alone).
  uint64_t first_bad_index = 0;
  // What is wrong, in the order found, each naming the index or tree size:
  // "entry 17: its content does not match its recorded hash (edited)".
  std::vector<std::string> problems;

  bool ok() const { return problems.empty(); }
};

// Verifies a log fed to it: all checkpoints first (any order), then every
// stored entry in key order. Not thread-safe.
class AuditVerifier {
 public:
  explicit AuditVerifier(VerifierOptions options);

  // `size` is the tree size the checkpoint is stored under; `raw` a
  // serialized AuditCheckpoint.
  void AddCheckpoint(uint64_t size, absl::string_view raw);
  // `index` is the index the entry is stored under; `raw` a serialized
  // StoredAuditEntry.
  void AddEntry(uint64_t index, absl::string_view raw);
  // Ends the walk: checks for checkpoints (and the head record the store
  // keeps, when given: size, hash) beyond the last entry — a truncated log.
  AuditVerification Finish(
      std::optional<std::pair<uint64_t, std::string>> head_record);

 private:
  void Problem(uint64_t index, std::string what);

  VerifierOptions options_;
  std::map<uint64_t, v1::AuditCheckpoint> checkpoints_;  // by tree size
  AuditVerification result_;
  uint64_t expected_ = 1;  // next index
  // Recomputed from the first entry: what checkpoints must match.
  std::string computed_;
  // The previous entry's recorded hash: where an edit is found.
  std::string recorded_;
};

// Lower-case hex.
std::string Hex(absl::string_view bytes);

}  // namespace lienthong::audit

#endif  // LIENTHONG_AUDIT_CHAIN_H_
