// The matchers every other test relies on: each must be able to fail.
#include "tests/testing/status_matchers.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"

namespace lienthong {
namespace {

using ::lienthong::testing_util::IsOk;
using ::lienthong::testing_util::IsOkAndHolds;
using ::lienthong::testing_util::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

absl::StatusOr<int> Seven() { return 7; }
absl::StatusOr<int> Missing() {
  return absl::NotFoundError("document 42 not found");
}

TEST(StatusMatchersTest, IsOk) {
  EXPECT_THAT(absl::OkStatus(), IsOk());
  EXPECT_THAT(Seven(), IsOk());
  EXPECT_THAT(absl::InternalError("x"), Not(IsOk()));
  EXPECT_THAT(Missing(), Not(IsOk()));
}

TEST(StatusMatchersTest, StatusIsCode) {
  EXPECT_THAT(Missing(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Missing(), Not(StatusIs(absl::StatusCode::kInternal)));
  EXPECT_THAT(Seven(), StatusIs(absl::StatusCode::kOk));
  EXPECT_THAT(Seven(), Not(StatusIs(absl::StatusCode::kNotFound)));
  EXPECT_THAT(absl::DataLossError("x"), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(StatusMatchersTest, StatusIsCodeAndMessage) {
  EXPECT_THAT(Missing(),
              StatusIs(absl::StatusCode::kNotFound, "document 42 not found"));
  EXPECT_THAT(Missing(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("42")));
  EXPECT_THAT(Missing(),
              Not(StatusIs(absl::StatusCode::kNotFound, HasSubstr("43"))));
  EXPECT_THAT(Missing(),
              Not(StatusIs(absl::StatusCode::kInternal, HasSubstr("42"))));
  EXPECT_THAT(
      absl::InvalidArgumentError("document.recipients[1]: bad"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("recipients[1]")));
}

TEST(StatusMatchersTest, IsOkAndHolds) {
  EXPECT_THAT(Seven(), IsOkAndHolds(7));
  EXPECT_THAT(Seven(), IsOkAndHolds(::testing::Gt(6)));
  EXPECT_THAT(Seven(), Not(IsOkAndHolds(8)));
  EXPECT_THAT(Missing(), Not(IsOkAndHolds(::testing::_)));
}

TEST(StatusMatchersTest, DescribesAndExplains) {
  auto m = ::testing::Matcher<absl::Status>(
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("42")));
  EXPECT_EQ(
      ::testing::DescribeMatcher<absl::Status>(m),
      "has status code NOT_FOUND and a message that has substring \"42\"");
  ::testing::StringMatchResultListener listener;
  EXPECT_FALSE(m.MatchAndExplain(absl::InternalError("boom"), &listener));
  EXPECT_THAT(listener.str(), HasSubstr("INTERNAL: boom"));
}

TEST(StatusMatchersTest, AssertOkAndAssignMovesTheValue) {
  ASSERT_OK_AND_ASSIGN(int seven, Seven());
  EXPECT_EQ(seven, 7);
  ASSERT_OK_AND_ASSIGN(auto owned, absl::StatusOr<std::unique_ptr<int>>(
                                       std::make_unique<int>(3)));
  EXPECT_EQ(*owned, 3);
  ASSERT_OK(absl::OkStatus());
  EXPECT_OK(Seven());
}

void AssignFromError() {
  ASSERT_OK_AND_ASSIGN(int value, Missing());
  (void)value;
}

TEST(StatusMatchersTest, AssertionsFailOnError) {
  EXPECT_FATAL_FAILURE(AssignFromError(), "document 42 not found");
  EXPECT_NONFATAL_FAILURE(EXPECT_OK(Missing()),
                          "NOT_FOUND: document 42 not found");
}

}  // namespace
}  // namespace lienthong
