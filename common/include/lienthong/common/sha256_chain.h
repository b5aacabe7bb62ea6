// SHA-256 over content given in pieces, whose intermediate state can be
// taken and picked up again at any 64-byte boundary: the chaining value
// after a chunk of an attachment (Chunk.sha256_state in attachments.proto).
// One pass over the content then checks every chunk and the whole: a chunk
// is right when hashing it from the state before it gives the state after
// it, and the last state is the SHA-256 of the whole.
//
//   Sha256Chain chain;                      // or Resume(state, at)
//   chain.Update(chunk);
//   if (chain.State() != expected) ...      // bytes() % 64 == 0
//   std::string digest = chain.Digest();    // of everything so far
//
// Copyable (a copy is a fork of the hash), thread-compatible.
#ifndef LIENTHONG_COMMON_SHA256_CHAIN_H_
#define LIENTHONG_COMMON_SHA256_CHAIN_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace lienthong::sealing {

class Sha256Chain {
 public:
  // Bytes of a state and of a digest.
  static constexpr size_t kStateBytes = 32;
  // States exist only at multiples of this.
  static constexpr uint64_t kBlockBytes = 64;

  Sha256Chain();

  // The hash of content whose first `bytes` bytes (a multiple of
  // kBlockBytes) left `state` (kStateBytes, as State() gives it). nullopt
  // when either is malformed.
  static std::optional<Sha256Chain> Resume(absl::string_view state,
                                           uint64_t bytes);

  void Update(absl::string_view piece);
  // Bytes hashed so far.
  uint64_t bytes() const { return bytes_; }
  // The chaining value after bytes() (kStateBytes, big-endian words). Only
  // when bytes() is a multiple of kBlockBytes: crashes otherwise.
  std::string State() const;
  // SHA-256 (raw, 32 bytes) of everything hashed so far; the chain goes on.
  std::string Digest() const;

 private:
  // An OpenSSL SHA256_CTX (its low-level API is the one that exposes the
  // chaining value), kept opaque here.
  alignas(8) unsigned char ctx_[128];
  uint64_t bytes_ = 0;
};

}  // namespace lienthong::sealing

#endif  // LIENTHONG_COMMON_SHA256_CHAIN_H_
