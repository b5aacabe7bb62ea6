#include "lienthong/common/ids.h"

#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lienthong {
namespace {

using ::testing::MatchesRegex;

constexpr int64_t kSomeMillis = 1'800'000'000'123;
constexpr int64_t kMaxMillis = (int64_t{1} << 48) - 1;

TEST(NewDocumentIdTest, IsA26CharacterCrockfordUlid) {
  for (int64_t ms : {int64_t{0}, int64_t{1}, kSomeMillis, kMaxMillis}) {
    std::string id = NewDocumentId(ms);
    SCOPED_TRACE(id);
    EXPECT_THAT(id, MatchesRegex("[0-7][0-9A-HJKMNP-TV-Z]{25}"));
    EXPECT_TRUE(IsDocumentId(id));
  }
}

TEST(NewDocumentIdTest, EncodesTheTimeLikeTheUlidSpec) {
  // The reference example of the ULID specification.
  EXPECT_EQ(NewDocumentId(1469918176385).substr(0, 10), "01ARYZ6S41");
  EXPECT_EQ(NewDocumentId(0).substr(0, 10), "0000000000");
  EXPECT_EQ(NewDocumentId(kMaxMillis).substr(0, 10), "7ZZZZZZZZZ");
}

TEST(NewDocumentIdTest, UniqueWithinOneMillisecondAcrossThreads) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 5000;
  absl::Mutex mu;
  std::set<std::string> ids;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      std::vector<std::string> mine;
      for (int i = 0; i < kPerThread; ++i) {
        mine.push_back(NewDocumentId(kSomeMillis));
      }
      absl::MutexLock lock(&mu);
      ids.insert(mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ids.size(), size_t{kThreads * kPerThread});
}

TEST(NewDocumentIdTest, SortsByMillisecond) {
  // Neighbouring milliseconds, including carries across bytes and digits.
  for (int64_t ms : {int64_t{0}, int64_t{31}, int64_t{255}, int64_t{1023},
                     int64_t{65535}, kSomeMillis, kMaxMillis - 1}) {
    for (int i = 0; i < 20;
         ++i) {  // the random part must never outweigh the time
      EXPECT_LT(NewDocumentId(ms), NewDocumentId(ms + 1)) << ms;
    }
  }
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<int64_t> millis(0, kMaxMillis);
  for (int i = 0; i < 10000; ++i) {
    int64_t a = millis(rng), b = millis(rng);
    if (a == b) continue;
    EXPECT_EQ(NewDocumentId(a) < NewDocumentId(b), a < b) << a << " " << b;
  }
}

TEST(IsDocumentIdTest, RejectsWhatNewDocumentIdCannotProduce) {
  const std::string good = NewDocumentId(kSomeMillis);
  ASSERT_TRUE(IsDocumentId(good));
  EXPECT_FALSE(IsDocumentId(""));
  EXPECT_FALSE(IsDocumentId(good.substr(0, 25)));
  EXPECT_FALSE(IsDocumentId(good + "0"));
  EXPECT_FALSE(IsDocumentId("8" + good.substr(1)));  // more than 128 bits
  for (char c : {'I', 'L', 'O', 'U', 'a', '-', ' '}) {
    std::string bad = good;
    bad[13] = c;
    EXPECT_FALSE(IsDocumentId(bad)) << bad;
  }
}

TEST(RandomTokenTest, Is128RandomBitsInHex) {
  std::set<std::string> tokens;
  for (int i = 0; i < 1000; ++i) {
    std::string t = RandomToken();
    EXPECT_THAT(t, MatchesRegex("[0-9a-f]{32}"));
    tokens.insert(t);
  }
  EXPECT_EQ(tokens.size(), 1000u);
}

}  // namespace
}  // namespace lienthong
