// Counters and histograms the broker keeps for operators, and the
// Prometheus text format they are scraped in (/metrics).
//
//   Counter accepted;
//   accepted.Add();
//   CounterVec denied;                   // one label, e.g. reason
//   denied.With("policy").Add();
//   Histogram latency(Histogram::LatencyBounds());
//   latency.Observe(0.0012);             // seconds
//   PrometheusText text;
//   text.Counter("lienthong_documents_accepted_total", "Documents accepted.",
//                accepted.value());
//   text.Histogram("lienthong_delivery_seconds", "...", latency.Read());
//   std::string page = text.Take();
//
// Counter, CounterVec and Histogram are thread-safe and cheap to update
// (atomics; CounterVec takes a lock only to find its label value).
#ifndef LIENTHONG_COMMON_METRICS_H_
#define LIENTHONG_COMMON_METRICS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace lienthong {

class Counter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// Counters told apart by the value of one label.
class CounterVec {
 public:
  Counter& With(absl::string_view label_value);
  // (label value, count), sorted by label value.
  std::vector<std::pair<std::string, uint64_t>> Read() const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Counter>, std::less<>> counters_
      ABSL_GUARDED_BY(mu_);
};

class Histogram {
 public:
  struct Snapshot {
    std::vector<double> bounds;     // upper bounds, ascending
    std::vector<uint64_t> buckets;  // cumulative counts per bound
    uint64_t count = 0;
    double sum = 0;
  };
  // 100 µs .. 60 s, for latencies in seconds.
  static std::vector<double> LatencyBounds();
  // 1 .. 4096, powers of two, for batch sizes.
  static std::vector<double> SizeBounds();

  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  Snapshot Read() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // not cumulative
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_micros_{0};  // sum in millionths
};

// Builds a page in the Prometheus text exposition format (version 0.0.4).
// Each metric name is written once with its HELP and TYPE lines; label
// values are escaped.
class PrometheusText {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;

  void Counter(absl::string_view name, absl::string_view help, double value,
               const Labels& labels = {});
  void Gauge(absl::string_view name, absl::string_view help, double value,
             const Labels& labels = {});
  void Histogram(absl::string_view name, absl::string_view help,
                 const Histogram::Snapshot& snapshot,
                 const Labels& labels = {});
  std::string Take() { return std::move(out_); }

 private:
  void Header(absl::string_view name, absl::string_view help,
              absl::string_view type);
  void Sample(absl::string_view name, const Labels& labels, double value);

  std::string out_;
  std::vector<std::string> declared_;
};

}  // namespace lienthong

#endif  // LIENTHONG_COMMON_METRICS_H_
