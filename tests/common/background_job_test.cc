#include "lienthong/common/background_job.h"

#include <pthread.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace lienthong {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

std::string ThisThreadsName() {
  char name[16] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return name;
}

TEST(BackgroundJobTest, JobsRunOneAfterAnotherOnOneNamedThread) {
  BackgroundJob<std::thread::id> job("lt-test-job");
  EXPECT_FALSE(job.pending());
  std::thread::id first;
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(job.Start([] { return std::this_thread::get_id(); }));
    EXPECT_TRUE(job.pending());
    std::thread::id ran_on = job.Take();
    EXPECT_FALSE(job.pending());
    EXPECT_NE(ran_on, std::this_thread::get_id());
    if (i == 0) first = ran_on;
    EXPECT_EQ(ran_on, first) << "job " << i << " had a thread of its own";
  }
  std::string name;
  ASSERT_TRUE(job.Start([&name] {
    name = ThisThreadsName();
    return std::this_thread::get_id();
  }));
  job.Take();
  EXPECT_EQ(name, "lt-test-job");
}

TEST(BackgroundJobTest, TakeWaitsForTheJobAndReturnsItsResult) {
  BackgroundJob<int> job("lt-test-job");
  absl::Notification go;
  ASSERT_TRUE(job.Start([&go] {
    go.WaitForNotificationWithTimeout(kWait);
    return 42;
  }));
  std::atomic<bool> taken{false};
  std::thread taker([&] {
    EXPECT_EQ(job.Take(), 42);
    taken = true;
  });
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(taken.load()) << "Take returned before the job ended";
  go.Notify();
  taker.join();
  EXPECT_TRUE(taken.load());
}

TEST(BackgroundJobTest, WhatAJobThrowsComesOutOfTakeAndTheThreadGoesOn) {
  BackgroundJob<int> job("lt-test-job");
  ASSERT_TRUE(job.Start([]() -> int { throw std::runtime_error("no disk"); }));
  EXPECT_THROW(job.Take(), std::runtime_error);
  EXPECT_FALSE(job.pending());
  ASSERT_TRUE(job.Start([] { return 7; }));
  EXPECT_EQ(job.Take(), 7);
}

TEST(BackgroundJobTest, TheDestructorWaitsForAJobStillRunning) {
  auto finished = std::make_shared<std::atomic<bool>>(false);
  {
    BackgroundJob<bool> job("lt-test-job");
    ASSERT_TRUE(job.Start([finished] {
      absl::SleepFor(absl::Milliseconds(100));
      *finished = true;
      return true;
    }));
  }
  EXPECT_TRUE(finished->load());
}

}  // namespace
}  // namespace lienthong
