// Reproducible pseudo-random bytes for tests: the same (n, seed), the same
// bytes.
#ifndef LIENTHONG_TESTS_TESTING_RANDOM_BYTES_H_
#define LIENTHONG_TESTS_TESTING_RANDOM_BYTES_H_

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>

namespace lienthong::testing_util {

inline std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 random(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(random());
  return out;
}

}  // namespace lienthong::testing_util

#endif  // LIENTHONG_TESTS_TESTING_RANDOM_BYTES_H_
