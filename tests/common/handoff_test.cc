#include "lienthong/common/handoff.h"

#include <atomic>
#include <optional>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace lienthong {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

TEST(HandoffTest, ItemsArriveInOrderThenTheEnd) {
  Handoff<std::string> h(2);
  std::thread producer([&] {
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(h.Put(std::to_string(i)));
    h.Close();
  });
  for (int i = 0; i < 100; ++i) {
    std::optional<std::string> item = h.Take();
    ASSERT_TRUE(item.has_value()) << "item " << i;
    EXPECT_EQ(*item, std::to_string(i));
  }
  EXPECT_FALSE(h.Take().has_value());
  producer.join();
}

TEST(HandoffTest, APutWaitsForRoom) {
  Handoff<int> h(2);
  ASSERT_TRUE(h.Put(1));
  ASSERT_TRUE(h.Put(2));
  absl::Notification third_put;
  std::thread producer([&] {
    EXPECT_TRUE(h.Put(3));
    third_put.Notify();
  });
  EXPECT_FALSE(
      third_put.WaitForNotificationWithTimeout(absl::Milliseconds(200)))
      << "a third item went in while two waited";
  EXPECT_EQ(h.Take(), 1);
  EXPECT_TRUE(third_put.WaitForNotificationWithTimeout(kWait));
  producer.join();
  EXPECT_EQ(h.Take(), 2);
  EXPECT_EQ(h.Take(), 3);
}

TEST(HandoffTest, ClosedItemsAreStillTaken) {
  Handoff<int> h(4);
  ASSERT_TRUE(h.Put(7));
  ASSERT_TRUE(h.Put(8));
  h.Close();
  EXPECT_EQ(h.Take(), 7);
  EXPECT_EQ(h.Take(), 8);
  EXPECT_FALSE(h.Take().has_value());
}

TEST(HandoffTest, StopReleasesAWaitingProducerAndDropsWhatWaits) {
  Handoff<int> h(1);
  ASSERT_TRUE(h.Put(1));
  std::atomic<int> put_result{-1};
  absl::Notification returned;
  std::thread producer([&] {
    put_result = h.Put(2) ? 1 : 0;
    returned.Notify();
  });
  EXPECT_FALSE(
      returned.WaitForNotificationWithTimeout(absl::Milliseconds(100)));
  h.Stop();
  ASSERT_TRUE(returned.WaitForNotificationWithTimeout(kWait))
      << "Put still waits after Stop";
  producer.join();
  EXPECT_EQ(put_result.load(), 0);
  EXPECT_FALSE(h.Put(3));
  EXPECT_FALSE(h.Take().has_value()) << "an item taken after Stop";
}

TEST(HandoffTest, TakeWaitsForAnItemOrTheEnd) {
  Handoff<int> h(1);
  std::atomic<int> got{-1};
  absl::Notification taken;
  std::thread consumer([&] {
    std::optional<int> item = h.Take();
    got = item.value_or(0);
    taken.Notify();
  });
  EXPECT_FALSE(taken.WaitForNotificationWithTimeout(absl::Milliseconds(100)));
  ASSERT_TRUE(h.Put(5));
  ASSERT_TRUE(taken.WaitForNotificationWithTimeout(kWait));
  consumer.join();
  EXPECT_EQ(got.load(), 5);
}

}  // namespace
}  // namespace lienthong
