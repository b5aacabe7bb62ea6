#include "lienthong/common/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace lienthong {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTest, CountersAddUpAcrossThreads) {
  Counter c;
  CounterVec v;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        c.Add();
        v.With(i % 2 ? "odd" : "even").Add(2);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.value(), 4000u);
  auto read = v.Read();
  ASSERT_EQ(read.size(), 2u);
  EXPECT_EQ(read[0], (std::pair<std::string, uint64_t>{"even", 4000}));
  EXPECT_EQ(read[1], (std::pair<std::string, uint64_t>{"odd", 4000}));
}

TEST(MetricsTest, HistogramBucketsAreCumulativeAndCountEverything) {
  Histogram h({1, 10, 100});
  for (double v : {0.5, 1.0, 5.0, 50.0, 500.0}) h.Observe(v);
  Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.buckets, (std::vector<uint64_t>{2, 3, 4}));  // le is inclusive
  EXPECT_EQ(s.count, 5u);
  EXPECT_DOUBLE_EQ(s.sum, 556.5);
}

TEST(MetricsTest, PrometheusTextFormat) {
  PrometheusText t;
  t.Counter("x_total", "Things.", 3);
  t.Gauge("depth", "Depth.", 1.5, {{"org", "000.00.00.H49"}});
  t.Gauge("depth", "Depth.", 2, {{"org", "a\"b\\c\nd"}});
  Histogram h({0.1, 1});
  h.Observe(0.05);
  h.Observe(2);
  t.Histogram("lat_seconds", "Latency.", h.Read());
  std::string page = t.Take();
  EXPECT_THAT(page, HasSubstr("# HELP x_total Things.\n# TYPE x_total counter\n"
                              "x_total 3\n"));
  // HELP and TYPE once per name, however many samples.
  EXPECT_THAT(page, HasSubstr("# TYPE depth gauge\n"
                              "depth{org=\"000.00.00.H49\"} 1.5\n"
                              "depth{org=\"a\\\"b\\\\c\\nd\"} 2\n"));
  EXPECT_THAT(page, HasSubstr("lat_seconds_bucket{le=\"0.1\"} 1\n"
                              "lat_seconds_bucket{le=\"1\"} 1\n"
                              "lat_seconds_bucket{le=\"+Inf\"} 2\n"
                              "lat_seconds_sum 2.05\n"
                              "lat_seconds_count 2\n"));
  EXPECT_THAT(page, Not(HasSubstr("e+")));
}

}  // namespace
}  // namespace lienthong
