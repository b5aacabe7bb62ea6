// OpenSSL 3 deprecates the low-level SHA-256 API, but only it exposes the
// chaining value; it runs the same (SHA-NI) block function as EVP.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "lienthong/common/sha256_chain.h"

#include <openssl/sha.h>

#include <cstdlib>
#include <cstring>

namespace lienthong::sealing {
namespace {

static_assert(sizeof(SHA256_CTX) <= 128, "SHA256_CTX does not fit");
static_assert(alignof(SHA256_CTX) <= 8, "SHA256_CTX is aligned otherwise");

SHA256_CTX* Ctx(unsigned char* raw) {
  return reinterpret_cast<SHA256_CTX*>(raw);
}
const SHA256_CTX* Ctx(const unsigned char* raw) {
  return reinterpret_cast<const SHA256_CTX*>(raw);
}

}  // namespace

Sha256Chain::Sha256Chain() {
  std::memset(ctx_, 0, sizeof(ctx_));
  SHA256_Init(Ctx(ctx_));
}

std::optional<Sha256Chain> Sha256Chain::Resume(absl::string_view state,
                                               uint64_t bytes) {
  if (state.size() != kStateBytes || bytes % kBlockBytes != 0) {
    return std::nullopt;
  }
  Sha256Chain chain;
  SHA256_CTX* c = Ctx(chain.ctx_);
  const auto* s = reinterpret_cast<const unsigned char*>(state.data());
  for (int i = 0; i < 8; ++i) {
    c->h[i] = (uint32_t{s[4 * i]} << 24) | (uint32_t{s[4 * i + 1]} << 16) |
              (uint32_t{s[4 * i + 2]} << 8) | uint32_t{s[4 * i + 3]};
  }
  // The length in bits, as two 32-bit halves.
  c->Nl = static_cast<SHA_LONG>(bytes << 3);
  c->Nh = static_cast<SHA_LONG>(bytes >> 29);
  c->num = 0;
  chain.bytes_ = bytes;
  return chain;
}

void Sha256Chain::Update(absl::string_view piece) {
  SHA256_Update(Ctx(ctx_), piece.data(), piece.size());
  bytes_ += piece.size();
}

std::string Sha256Chain::State() const {
  const SHA256_CTX* c = Ctx(ctx_);
  if (bytes_ % kBlockBytes != 0 || c->num != 0) std::abort();
  std::string out(kStateBytes, '\0');
  for (int i = 0; i < 8; ++i) {
    out[4 * i] = static_cast<char>(c->h[i] >> 24);
    out[4 * i + 1] = static_cast<char>(c->h[i] >> 16);
    out[4 * i + 2] = static_cast<char>(c->h[i] >> 8);
    out[4 * i + 3] = static_cast<char>(c->h[i]);
  }
  return out;
}

std::string Sha256Chain::Digest() const {
  SHA256_CTX copy = *Ctx(ctx_);
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  SHA256_Final(reinterpret_cast<unsigned char*>(out.data()), &copy);
  return out;
}

}  // namespace lienthong::sealing
