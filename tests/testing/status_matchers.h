// gMock matchers and assertions for absl::Status and absl::StatusOr<T>, which
// the installed Abseil (20220623) does not ship.
//
//   using ::lienthong::testing_util::IsOk;
//   using ::lienthong::testing_util::StatusIs;
//   using ::lienthong::testing_util::IsOkAndHolds;
//
//   EXPECT_THAT(store->GetDocument("x"),
//   StatusIs(absl::StatusCode::kNotFound)); EXPECT_THAT(Send(doc),
//   StatusIs(absl::StatusCode::kInvalidArgument,
//                                   HasSubstr("document.recipients[1]")));
//   EXPECT_THAT(store->LookupIdempotencyKey(sender, key),
//   IsOkAndHolds(Optional(id))); ASSERT_OK(options.Validate());
//   ASSERT_OK_AND_ASSIGN(v1::Document doc, store->GetDocument(id));
//
// The namespace is not `lienthong::testing` so that `testing::` inside
// namespace lienthong keeps meaning gMock's.
#ifndef LIENTHONG_TESTS_TESTING_STATUS_MATCHERS_H_
#define LIENTHONG_TESTS_TESTING_STATUS_MATCHERS_H_

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lienthong::testing_util {
namespace internal {

inline absl::Status GetStatus(const absl::Status& status) { return status; }

template <typename T>
absl::Status GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

}  // namespace internal

// Matches an OK absl::Status or an absl::StatusOr<T> holding a value.
MATCHER(IsOk, negation ? "is not OK" : "is OK") {
  absl::Status status = internal::GetStatus(arg);
  if (!status.ok()) *result_listener << "whose status is " << status;
  return status.ok();
}

// Matches a status (or StatusOr's status) with the given code.
MATCHER_P(StatusIs, code,
          std::string(negation ? "does not have" : "has") + " status code " +
              absl::StatusCodeToString(code)) {
  absl::Status status = internal::GetStatus(arg);
  *result_listener << "whose status is " << status;
  return status.code() == code;
}

// Matches a status with the given code whose message matches
// `message_matcher` (a string, or a matcher such as HasSubstr("...")).
MATCHER_P2(
    StatusIs, code, message_matcher,
    std::string(negation ? "does not have" : "has") + " status code " +
        absl::StatusCodeToString(code) + " and a message that " +
        ::testing::DescribeMatcher<const std::string&>(message_matcher)) {
  absl::Status status = internal::GetStatus(arg);
  *result_listener << "whose status is " << status;
  return status.code() == code &&
         ::testing::ExplainMatchResult(
             message_matcher, std::string(status.message()), result_listener);
}

// Matches an absl::StatusOr<T> that holds a value matching `value_matcher`.
MATCHER_P(IsOkAndHolds, value_matcher,
          negation ? "is not OK or holds a value that does not match"
                   : "is OK and holds a matching value") {
  if (!arg.ok()) {
    *result_listener << "whose status is " << arg.status();
    return false;
  }
  return ::testing::ExplainMatchResult(value_matcher, *arg, result_listener);
}

}  // namespace lienthong::testing_util

// Both print the status (not the StatusOr's bytes) when they fail.
#define EXPECT_OK(expr)                                             \
  EXPECT_THAT(::lienthong::testing_util::internal::GetStatus(expr), \
              ::lienthong::testing_util::IsOk())
#define ASSERT_OK(expr)                                             \
  ASSERT_THAT(::lienthong::testing_util::internal::GetStatus(expr), \
              ::lienthong::testing_util::IsOk())

// Evaluates `expr` (an absl::StatusOr<T>), fails the test if it is not OK,
// otherwise moves its value into `lhs`, which may be a declaration:
//   ASSERT_OK_AND_ASSIGN(auto store, OpenRocksDbStore(options));
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  LIENTHONG_ASSERT_OK_AND_ASSIGN_IMPL_( \
      LIENTHONG_TEST_CONCAT_(lienthong_statusor_, __LINE__), lhs, expr)

#define LIENTHONG_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                         \
  ASSERT_OK(tmp) << "from " #expr;                           \
  lhs = std::move(tmp).value()

#define LIENTHONG_TEST_CONCAT_INNER_(a, b) a##b
#define LIENTHONG_TEST_CONCAT_(a, b) LIENTHONG_TEST_CONCAT_INNER_(a, b)

#endif  // LIENTHONG_TESTS_TESTING_STATUS_MATCHERS_H_
