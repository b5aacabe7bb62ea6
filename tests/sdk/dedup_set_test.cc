#include "client-sdk/src/dedup_set.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lienthong::client_internal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh temporary directory, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "dedup_set_test.XXXXXX")
            .string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const {
    return (std::filesystem::path(path_) / name).string();
  }

 private:
  std::string path_;
};

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string Id(int i) { return absl::StrCat("01HZZDOC", i); }

TEST(DedupSetTest, RemembersInsertedIds) {
  DedupSet set(10);
  EXPECT_FALSE(set.Contains("a"));
  EXPECT_TRUE(set.Insert("a"));
  EXPECT_TRUE(set.Contains("a"));
  EXPECT_FALSE(set.Contains("b"));
  EXPECT_EQ(set.size(), 1u);
}

TEST(DedupSetTest, InsertingAKnownIdChangesNothing) {
  DedupSet set(2);
  ASSERT_TRUE(set.Insert("a"));
  ASSERT_TRUE(set.Insert("b"));
  EXPECT_FALSE(set.Insert("a"));  // not re-queued: "a" stays the oldest
  ASSERT_TRUE(set.Insert("c"));
  EXPECT_FALSE(set.Contains("a"));
  EXPECT_TRUE(set.Contains("b"));
  EXPECT_TRUE(set.Contains("c"));
  EXPECT_EQ(set.size(), 2u);
}

TEST(DedupSetTest, ForgetsTheOldestWhenFull) {
  DedupSet set(3);
  for (int i = 0; i < 5; ++i) set.Insert(Id(i));
  EXPECT_EQ(set.size(), 3u);
  EXPECT_FALSE(set.Contains(Id(0)));
  EXPECT_FALSE(set.Contains(Id(1)));
  EXPECT_TRUE(set.Contains(Id(2)));
  EXPECT_TRUE(set.Contains(Id(3)));
  EXPECT_TRUE(set.Contains(Id(4)));
}

TEST(DedupSetTest, PersistedIdsSurviveAReopen) {
  TempDir dir;
  const std::string file = dir.File("seen");
  {
    absl::StatusOr<std::unique_ptr<DedupSet>> set = DedupSet::Open(100, file);
    ASSERT_TRUE(set.ok()) << set.status();
    ASSERT_TRUE((*set)->Add({Id(1), Id(2)}).ok());
    (*set)->Insert(Id(3));  // in memory only: not persisted
  }
  EXPECT_THAT(Lines(file), ElementsAre(Id(1), Id(2)));
  absl::StatusOr<std::unique_ptr<DedupSet>> reopened =
      DedupSet::Open(100, file);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_TRUE((*reopened)->Contains(Id(1)));
  EXPECT_TRUE((*reopened)->Contains(Id(2)));
  EXPECT_FALSE((*reopened)->Contains(Id(3)));
}

TEST(DedupSetTest, ReopenKeepsOnlyTheNewestCapacityIdsAndCompactsTheFile) {
  TempDir dir;
  const std::string file = dir.File("seen");
  {
    std::ofstream out(file);
    for (int i = 0; i < 10; ++i) out << Id(i) << "\n";
  }
  absl::StatusOr<std::unique_ptr<DedupSet>> set = DedupSet::Open(4, file);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ((*set)->size(), 4u);
  EXPECT_FALSE((*set)->Contains(Id(5)));
  EXPECT_TRUE((*set)->Contains(Id(6)));
  EXPECT_TRUE((*set)->Contains(Id(9)));
  EXPECT_THAT(Lines(file), ElementsAre(Id(6), Id(7), Id(8), Id(9)));
}

TEST(DedupSetTest, FileStaysBoundedWhileAppending) {
  TempDir dir;
  const std::string file = dir.File("seen");
  absl::StatusOr<std::unique_ptr<DedupSet>> set = DedupSet::Open(5, file);
  ASSERT_TRUE(set.ok()) << set.status();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE((*set)->Add({Id(i)}).ok());
  std::vector<std::string> lines = Lines(file);
  EXPECT_LE(lines.size(), 10u);  // compacted past twice the capacity
  EXPECT_EQ(lines.back(), Id(99));
  // The newest five are in the file, so a restart still knows them.
  absl::StatusOr<std::unique_ptr<DedupSet>> reopened = DedupSet::Open(5, file);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  for (int i = 95; i < 100; ++i) EXPECT_TRUE((*reopened)->Contains(Id(i)));
}

TEST(DedupSetTest, TornLastLineFromACrashIsDropped) {
  TempDir dir;
  const std::string file = dir.File("seen");
  {
    std::ofstream out(file);
    out << Id(1) << "\n"
        << Id(2) << "\n"
        << "01HZZD";  // no newline
  }
  absl::StatusOr<std::unique_ptr<DedupSet>> set = DedupSet::Open(100, file);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_TRUE((*set)->Contains(Id(1)));
  EXPECT_TRUE((*set)->Contains(Id(2)));
  EXPECT_FALSE((*set)->Contains("01HZZD"));
  // Later appends start on a line of their own.
  ASSERT_TRUE((*set)->Add({Id(3)}).ok());
  EXPECT_THAT(Lines(file), ElementsAre(Id(1), Id(2), Id(3)));
}

TEST(DedupSetTest, SkipsIdsThatWouldBreakTheFileFormat) {
  TempDir dir;
  const std::string file = dir.File("seen");
  absl::StatusOr<std::unique_ptr<DedupSet>> set = DedupSet::Open(100, file);
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_TRUE((*set)->Persist({"", "a\nb", Id(1)}).ok());
  EXPECT_THAT(Lines(file), ElementsAre(Id(1)));
}

TEST(DedupSetTest, UnusableStateFileIsNamedInTheError) {
  TempDir dir;
  const std::string file = dir.File("missing-dir/seen");
  absl::StatusOr<std::unique_ptr<DedupSet>> set = DedupSet::Open(100, file);
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(set.status().message(), HasSubstr(file));
}

TEST(DedupSetTest, ZeroCapacityIsRefused) {
  absl::StatusOr<std::unique_ptr<DedupSet>> set = DedupSet::Open(0, "");
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(set.status().message(), HasSubstr("dedup_capacity"));
}

TEST(DedupSetTest, WithoutAStateFilePersistIsANoOp) {
  absl::StatusOr<std::unique_ptr<DedupSet>> set = DedupSet::Open(10, "");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_TRUE((*set)->Add({Id(1)}).ok());
  EXPECT_TRUE((*set)->Contains(Id(1)));
}

TEST(DedupSetTest, ConcurrentUseKeepsTheBound) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<DedupSet>> opened =
      DedupSet::Open(1000, dir.File("seen"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  DedupSet& set = **opened;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&set, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::string id = Id(t * 10000 + i);
        set.Insert(id);
        set.Contains(id);
        if (i % 100 == 0) {
          EXPECT_TRUE(set.Persist({id}).ok());
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(set.size(), 1000u);
}

}  // namespace
}  // namespace lienthong::client_internal
