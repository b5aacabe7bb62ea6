#include "lienthong/common/org_code.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace lienthong {
namespace {

using ::lienthong::testing_util::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(ValidateOrgCodeTest, AcceptsWellFormedCodes) {
  for (const char* code : {"000.00.00.H49",  // a provincial people's committee
                           "000.00.23.H49",  // a unit under it
                           "000.01.23.H49",  // a unit under that
                           "001.01.23.H49",  // and one more level down
                           "000.00.00.G22", "123.45.67.A00"}) {
    EXPECT_OK(ValidateOrgCode(code)) << code;
  }
}

struct MalformedCode {
  std::string code;
  std::string problem;  // what the message must say
};

TEST(ValidateOrgCodeTest, RejectsMalformedCodesNamingTheProblem) {
  const MalformedCode cases[] = {
      {"", "empty"},
      {"000.00.00.H4", "wrong length"},
      {"000.00.00.H490", "wrong length"},
      {"000.00.00.H49 ", "wrong length"},
      {"000-00-00.H49", "separated by dots"},
      {"000.00.00-H49", "separated by dots"},
      {"0a0.00.00.H49", "first three groups must be digits"},
      {"000.0x.00.H49", "first three groups must be digits"},
      {"000.00. 0.H49", "first three groups must be digits"},
      {"000.00.00.h49", "upper-case letter and two digits"},
      {"000.00.00.4H9", "upper-case letter and two digits"},
      {"000.00.00.HH9", "upper-case letter and two digits"},
      {"000.01.00.H49", "level-3 group is set under an empty level-2 group"},
      {"001.00.23.H49", "level-4 group is set under an empty level-3 group"},
  };
  for (const MalformedCode& c : cases) {
    SCOPED_TRACE(c.code);
    EXPECT_THAT(
        ValidateOrgCode(c.code),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 AllOf(StartsWith("org code: "),
                       HasSubstr("\"" + c.code + "\""), HasSubstr(c.problem))));
  }
}

TEST(ValidateOrgCodeTest, MessageNamesTheField) {
  EXPECT_THAT(
      ValidateOrgCode("H49", "document.recipients[1]"),
      StatusIs(
          absl::StatusCode::kInvalidArgument,
          StartsWith(
              "document.recipients[1]: \"H49\" is not an organization code")));
}

TEST(TopLevelGroupTest, IsTheLastGroup) {
  EXPECT_EQ(TopLevelGroup("000.00.00.H49"), "H49");
  EXPECT_EQ(TopLevelGroup("000.01.23.H49"), "H49");
  EXPECT_EQ(TopLevelGroup("000.00.00.G22"), "G22");
}

TEST(ParentOrgCodeTest, ClimbsOneLevelAtATime) {
  EXPECT_EQ(ParentOrgCode("001.01.23.H49"), "000.01.23.H49");
  EXPECT_EQ(ParentOrgCode("000.01.23.H49"), "000.00.23.H49");
  EXPECT_EQ(ParentOrgCode("000.00.23.H49"), "000.00.00.H49");
  EXPECT_EQ(ParentOrgCode("000.00.00.H49"), "");
}

TEST(ParentOrgCodeTest, ParentsOfValidCodesAreValid) {
  for (std::string code = "001.01.23.H49"; !code.empty();
       code = ParentOrgCode(code)) {
    EXPECT_OK(ValidateOrgCode(code)) << code;
  }
}

TEST(IsUnderTest, CodeIsUnderItselfAndEveryAncestor) {
  EXPECT_TRUE(IsUnder("000.00.00.H49", "000.00.00.H49"));
  EXPECT_TRUE(IsUnder("000.00.23.H49", "000.00.00.H49"));
  EXPECT_TRUE(IsUnder("000.01.23.H49", "000.00.00.H49"));
  EXPECT_TRUE(IsUnder("000.01.23.H49", "000.00.23.H49"));
  EXPECT_TRUE(IsUnder("001.01.23.H49", "000.00.00.H49"));
}

TEST(IsUnderTest, FalseForDescendantsSiblingsAndOtherGroups) {
  EXPECT_FALSE(
      IsUnder("000.00.00.H49", "000.00.23.H49"));  // the other way round
  EXPECT_FALSE(IsUnder("000.00.24.H49", "000.00.23.H49"));  // sibling
  EXPECT_FALSE(IsUnder("000.01.24.H49", "000.00.23.H49"));  // sibling's child
  EXPECT_FALSE(
      IsUnder("000.00.23.H50", "000.00.00.H49"));  // same number, other group
  EXPECT_FALSE(IsUnder("000.00.00.G22", "000.00.00.H49"));
}

}  // namespace
}  // namespace lienthong
