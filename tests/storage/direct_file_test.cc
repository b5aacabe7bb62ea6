// Attachment files written and read past the page cache: whatever the
// records' sizes and wherever a sync falls, the file holds exactly the bytes
// appended, no padding survives a sync, and an upload that goes on from an
// earlier end (after a restart, or going back before a damaged chunk) keeps
// what came before it. Run with O_DIRECT (where this file system takes it)
// and with ordinary writes, the fallback.
#include "storage/src/direct_file.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tests/testing/random_bytes.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::storage {
namespace {

using ::lienthong::testing_util::StatusIs;
using ::lienthong::testing_util::TempDir;
using ::testing::HasSubstr;

std::string Bytes(size_t n, uint32_t seed) {
  return testing_util::RandomBytes(n, seed);
}

std::string FileContent(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream all;
  all << in.rdbuf();
  return all.str();
}

class DirectFileTest : public ::testing::TestWithParam<bool> {
 protected:
  int Open() {
    int fd = OpenMaybeDirect(path_, O_RDWR | O_CREAT | O_CLOEXEC, GetParam());
    EXPECT_GE(fd, 0) << path_;
    return fd;
  }

  TempDir dir_;
  const std::string path_ = dir_.path() + "/file";
};

TEST_P(DirectFileTest, RecordsOfAnySizeLandExactlyWhateverTheSyncs) {
  int fd = Open();
  DirectAppender out(fd, path_);
  if (!GetParam()) {
    EXPECT_FALSE(out.direct());
  }
  std::string expected;
  // Sealed chunks are a block plus a little; the last one is short.
  const size_t sizes[] = {4096 + 28, 1, 3 * 4096, 4095, 70000, 4096, 5, 0, 12};
  uint32_t seed = 1;
  for (size_t size : sizes) {
    std::string record = Bytes(size, seed++);
    ASSERT_OK(out.Append(expected.size(), record));
    expected += record;
    if (seed % 3 == 0) {
      ASSERT_OK(out.Sync());
      EXPECT_EQ(FileContent(path_), expected) << "after record " << seed;
    }
  }
  ASSERT_OK(out.Sync());
  EXPECT_EQ(out.end(), expected.size());
  EXPECT_EQ(FileContent(path_), expected);

  ASSERT_OK_AND_ASSIGN(SharedBytes got, ReadShared(fd, 5000, 4000, path_));
  EXPECT_EQ(got.data, expected.substr(4000, 5000));
  ASSERT_OK_AND_ASSIGN(got, ReadShared(fd, 12, expected.size() - 12, path_));
  EXPECT_EQ(got.data, expected.substr(expected.size() - 12));
  ::close(fd);
}

TEST_P(DirectFileTest, RecordsOfWholeBlocksAndMoreLandExactly) {
  int fd = Open();
  DirectAppender out(fd, path_);
  AlignedBuffer aligned;
  aligned.Reserve(3 * 4096 + 100);
  // Whole blocks go to the disk in the background, the rest is held back.
  std::string record = Bytes(3 * 4096 + 100, 7);
  std::copy(record.begin(), record.end(), aligned.data());
  ASSERT_OK(out.Append(0, absl::string_view(aligned.data(), record.size())));
  ASSERT_OK(out.Append(record.size(), "tail"));
  ASSERT_OK(out.Sync());
  EXPECT_EQ(FileContent(path_), record + "tail");
  ::close(fd);
}

TEST_P(DirectFileTest, PiecesLandAsTheirConcatenation) {
  // A chunk as gRPC received it: pieces of any size, one write for all.
  int fd = Open();
  DirectAppender out(fd, path_);
  const std::string content = Bytes(5 * 4096 + 3333, 8);
  std::vector<absl::string_view> pieces;
  for (size_t at = 0, n = 1; at < content.size(); at += n, n = n * 3 + 7) {
    pieces.push_back(absl::string_view(content).substr(at, n));
  }
  ASSERT_GT(pieces.size(), 5u);
  ASSERT_OK(out.Append(0, pieces));
  ASSERT_OK(out.Append(content.size(), std::vector<absl::string_view>{}));
  ASSERT_OK(out.Append(content.size(), pieces));
  ASSERT_OK(out.Sync());
  EXPECT_EQ(FileContent(path_), content + content);
  ::close(fd);
}

TEST_P(DirectFileTest, GoingOnFromAnEarlierEndKeepsWhatCameBefore) {
  std::string first = Bytes(10000, 1);
  {
    int fd = Open();
    DirectAppender out(fd, path_);
    ASSERT_OK(out.Append(0, first));
    ASSERT_OK(out.Append(first.size(), Bytes(3000, 2)));  // not kept below
    ASSERT_OK(out.Sync());
    ::close(fd);
  }
  // A restart: the durable part ends inside a block.
  int fd = Open();
  DirectAppender out(fd, path_, first.size());
  std::string second = Bytes(6000, 3);
  ASSERT_OK(out.Append(first.size(), second));
  ASSERT_OK(out.Sync());
  EXPECT_EQ(FileContent(path_), first + second);

  // Back before a damaged record: what followed is dropped.
  std::string again = Bytes(100, 4);
  ASSERT_OK(out.Append(5000, again));
  ASSERT_OK(out.Sync());
  EXPECT_EQ(FileContent(path_), first.substr(0, 5000) + again);
  ::close(fd);
}

TEST_P(DirectFileTest, GoingBackInsideTheHeldBlockKeepsWhatPrecedesIt) {
  int fd = Open();
  DirectAppender out(fd, path_);
  std::string first = Bytes(10000, 5);
  ASSERT_OK(out.Append(0, first));
  // No sync between: the block from 8192 is still only in memory.
  std::string again = Bytes(700, 6);
  ASSERT_OK(out.Append(9000, again));
  ASSERT_OK(out.Sync());
  EXPECT_EQ(FileContent(path_), first.substr(0, 9000) + again);
  ::close(fd);
}

TEST_P(DirectFileTest, ASyncAtAReopenedEndCutsWhatFollowsAndKeepsTheRest) {
  std::string all = Bytes(13000, 8);
  {
    int fd = Open();
    DirectAppender out(fd, path_);
    ASSERT_OK(out.Append(0, all));
    ASSERT_OK(out.Sync());
    ::close(fd);
  }
  // Reopened where the durable part ends (inside a block), synced at once.
  int fd = Open();
  DirectAppender out(fd, path_, 10000);
  ASSERT_OK(out.Sync());
  EXPECT_EQ(FileContent(path_), all.substr(0, 10000));
  ASSERT_OK(out.Append(10000, "more"));
  ASSERT_OK(out.Sync());
  EXPECT_EQ(FileContent(path_), all.substr(0, 10000) + "more");
  ::close(fd);
}

TEST_P(DirectFileTest, StagedBytesLandOnlyWhenCommitted) {
  // An upload copies a chunk in as it checks it: appended if it matches,
  // dropped by whatever comes next if it does not.
  int fd = Open();
  DirectAppender out(fd, path_);
  const std::string first = Bytes(6000, 9);
  ASSERT_OK_AND_ASSIGN(char* into, out.Stage(0, first.size()));
  first.copy(into, first.size());
  ASSERT_OK(out.Commit());
  EXPECT_EQ(out.end(), first.size());

  // Staged, then dropped by the next stage at the same place.
  const std::string damaged = Bytes(5000, 10);
  ASSERT_OK_AND_ASSIGN(into, out.Stage(first.size(), damaged.size()));
  damaged.copy(into, damaged.size());
  EXPECT_EQ(out.end(), first.size());
  const std::string second = Bytes(5000, 11);
  ASSERT_OK_AND_ASSIGN(into, out.Stage(first.size(), second.size()));
  second.copy(into, second.size());
  ASSERT_OK(out.Commit());

  // Staged, then dropped by a sync; a commit after it has nothing to take.
  ASSERT_OK_AND_ASSIGN(into, out.Stage(out.end(), 100));
  damaged.copy(into, 100);
  ASSERT_OK(out.Sync());
  EXPECT_EQ(FileContent(path_), first + second);
  EXPECT_THAT(out.Commit(), StatusIs(absl::StatusCode::kInternal,
                                     HasSubstr("nothing staged")));
  // An Append stages nothing a Commit could take again.
  ASSERT_OK(out.Append(out.end(), "more"));
  EXPECT_THAT(out.Commit(), StatusIs(absl::StatusCode::kInternal,
                                     HasSubstr("nothing staged")));
  ASSERT_OK(out.Sync());
  EXPECT_EQ(FileContent(path_), first + second + "more");
  ::close(fd);
}

TEST_P(DirectFileTest, AfterAWriteErrorEveryCallFailsWithIt) {
  // A descriptor that cannot write: the error shows at once, or (written in
  // the background) at the next call, and never goes away.
  int fd = OpenMaybeDirect(path_, O_RDONLY | O_CREAT | O_CLOEXEC, GetParam());
  ASSERT_GE(fd, 0);
  DirectAppender out(fd, path_);
  absl::Status append = out.Append(0, Bytes(3 * 4096, 1));
  absl::Status sync = append.ok() ? out.Sync() : append;
  EXPECT_FALSE(sync.ok());
  EXPECT_THAT(sync.message(), HasSubstr(path_));
  EXPECT_EQ(out.Append(3 * 4096, "more"), sync);
  EXPECT_EQ(out.Sync(), sync);
  ::close(fd);
}

TEST_P(DirectFileTest, AReadPastTheEndIsDataLossNamingTheFile) {
  int fd = Open();
  DirectAppender out(fd, path_);
  ASSERT_OK(out.Append(0, Bytes(5000, 9)));
  ASSERT_OK(out.Sync());
  absl::Status status = ReadShared(fd, 100, 4950, path_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr(path_));
  EXPECT_THAT(status.message(), HasSubstr("5000 bytes where at least 5050"));
  ::close(fd);
}

INSTANTIATE_TEST_SUITE_P(DirectAndOrdinary, DirectFileTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Direct" : "Ordinary";
                         });

}  // namespace
}  // namespace lienthong::storage
