#include "lienthong/common/ids.h"

#include <array>

#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"

namespace lienthong {
namespace {

constexpr char kCrockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

}  // namespace

std::string NewDocumentId(int64_t unix_millis) {
  std::array<unsigned char, 16> raw{};
  uint64_t ms = static_cast<uint64_t>(unix_millis);
  for (int i = 0; i < 6; ++i) raw[i] = (ms >> (8 * (5 - i))) & 0xff;
  // Ids must be unique, not secret (every access is authorized by org), so
  // the random part comes from a per-thread generator seeded from the OS
  // rather than from OpenSSL's DRBG, which costs a lock per call.
  thread_local absl::BitGen gen;
  uint64_t hi = absl::Uniform<uint64_t>(gen);
  uint16_t lo = absl::Uniform<uint16_t>(gen);
  for (int i = 0; i < 8; ++i) raw[6 + i] = (hi >> (8 * i)) & 0xff;
  raw[14] = lo & 0xff;
  raw[15] = lo >> 8;
  // 128 bits -> 26 base32 digits, most significant first (2 leading pad bits).
  std::string out(26, '0');
  unsigned __int128 v = 0;
  for (unsigned char b : raw) v = (v << 8) | b;
  for (int i = 25; i >= 0; --i) {
    out[i] = kCrockford[static_cast<int>(v & 31)];
    v >>= 5;
  }
  return out;
}

bool IsDocumentId(absl::string_view id) {
  if (id.size() != 26) return false;
  if (id[0] > '7') return false;
  for (char c : id) {
    if (absl::string_view(kCrockford).find(c) == absl::string_view::npos) {
      return false;
    }
  }
  return true;
}

std::string RandomToken() {
  // 128 bits from a per-thread generator seeded by the OS: unique with
  // overwhelming probability, which is all an idempotency key needs.
  thread_local absl::BitGen gen;
  std::array<unsigned char, 16> raw{};
  for (int half = 0; half < 2; ++half) {
    uint64_t v = absl::Uniform<uint64_t>(gen);
    for (int i = 0; i < 8; ++i) raw[8 * half + i] = (v >> (8 * i)) & 0xff;
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(raw.data()), raw.size()));
}

}  // namespace lienthong
