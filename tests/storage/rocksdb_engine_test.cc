// The RocksDB engine's read view: what readers see is only what a sync has
// made durable, so nobody reads a status or document a crash could still
// take away.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "storage/src/kv_engine.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::storage {
namespace {

using ::lienthong::testing_util::TempDir;
using ::testing::Optional;

TEST(RocksDbEngineTest, ReadsSeeOnlyWhatASyncCovered) {
  TempDir dir;
  RocksDbOptions options;
  options.path = dir.path() + "/db";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<KvEngine> engine,
                       OpenRocksDbEngine(options));

  std::vector<KvOp> first = {{Cf::kDocuments, false, "doc-1", "one"}};
  ASSERT_OK(engine->Commit(first, 64));
  ASSERT_OK(engine->Sync(/*durable=*/true));

  std::vector<KvOp> second = {{Cf::kDocuments, false, "doc-2", "two"}};
  ASSERT_OK(engine->Commit(second, 64));
  // Written, not yet synced: the committer sees it, readers do not.
  EXPECT_THAT(
      engine->GetLatest(Cf::kDocuments, "doc-2"),
      ::lienthong::testing_util::IsOkAndHolds(Optional(std::string("two"))));
  EXPECT_THAT(engine->Get(Cf::kDocuments, "doc-2"),
              ::lienthong::testing_util::IsOkAndHolds(std::nullopt));
  int scanned = 0;
  ASSERT_OK(engine->Scan(Cf::kDocuments, "", "",
                         [&](absl::string_view, absl::string_view) {
                           ++scanned;
                           return true;
                         }));
  EXPECT_EQ(scanned, 1);
  EXPECT_THAT(
      engine->Get(Cf::kDocuments, "doc-1"),
      ::lienthong::testing_util::IsOkAndHolds(Optional(std::string("one"))));

  ASSERT_OK(engine->Sync(/*durable=*/true));
  EXPECT_THAT(
      engine->Get(Cf::kDocuments, "doc-2"),
      ::lienthong::testing_util::IsOkAndHolds(Optional(std::string("two"))));
}

}  // namespace
}  // namespace lienthong::storage
