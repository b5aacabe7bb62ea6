#include "lienthong/common/metrics.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace lienthong {
namespace {

std::string Number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15)
    return absl::StrFormat("%.0f", v);
  return absl::StrFormat("%.15g", v);
}

std::string Escape(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

Counter& CounterVec::With(absl::string_view label_value) {
  absl::MutexLock lock(&mu_);
  auto it = counters_.find(label_value);
  if (it == counters_.end()) {
    it =
        counters_.emplace(std::string(label_value), std::make_unique<Counter>())
            .first;
  }
  return *it->second;
}

std::vector<std::pair<std::string, uint64_t>> CounterVec::Read() const {
  std::vector<std::pair<std::string, uint64_t>> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [label, counter] : counters_)
    out.emplace_back(label, counter->value());
  return out;
}

std::vector<double> Histogram::LatencyBounds() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
}

std::vector<double> Histogram::SizeBounds() {
  std::vector<double> b;
  for (double v = 1; v <= 4096; v *= 2) b.push_back(v);
  return b;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(new std::atomic<uint64_t>[bounds_.size()]) {
  for (size_t i = 0; i < bounds_.size(); ++i) buckets_[i] = 0;
}

void Histogram::Observe(double value) {
  auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  if (it != bounds_.end())
    buckets_[it - bounds_.begin()].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<uint64_t>(std::max(0.0, value) * 1e6 + 0.5),
                        std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.bounds = bounds_;
  uint64_t running = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.buckets.push_back(running);
  }
  // Count last, so that every bucket is at most the count even while
  // observations race with the read.
  s.count = std::max(running, count_.load(std::memory_order_relaxed));
  s.sum = sum_micros_.load(std::memory_order_relaxed) / 1e6;
  return s;
}

void PrometheusText::Header(absl::string_view name, absl::string_view help,
                            absl::string_view type) {
  if (std::find(declared_.begin(), declared_.end(), name) != declared_.end())
    return;
  declared_.emplace_back(name);
  absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ",
                  type, "\n");
}

void PrometheusText::Sample(absl::string_view name, const Labels& labels,
                            double value) {
  absl::StrAppend(&out_, name);
  if (!labels.empty()) {
    out_.push_back('{');
    for (size_t i = 0; i < labels.size(); ++i) {
      absl::StrAppend(&out_, i ? "," : "", labels[i].first, "=\"",
                      Escape(labels[i].second), "\"");
    }
    out_.push_back('}');
  }
  absl::StrAppend(&out_, " ", Number(value), "\n");
}

void PrometheusText::Counter(absl::string_view name, absl::string_view help,
                             double value, const Labels& labels) {
  Header(name, help, "counter");
  Sample(name, labels, value);
}

void PrometheusText::Gauge(absl::string_view name, absl::string_view help,
                           double value, const Labels& labels) {
  Header(name, help, "gauge");
  Sample(name, labels, value);
}

void PrometheusText::Histogram(absl::string_view name, absl::string_view help,
                               const Histogram::Snapshot& s,
                               const Labels& labels) {
  Header(name, help, "histogram");
  std::string bucket = absl::StrCat(name, "_bucket");
  for (size_t i = 0; i < s.bounds.size(); ++i) {
    Labels l = labels;
    l.emplace_back("le", Number(s.bounds[i]));
    Sample(bucket, l, static_cast<double>(s.buckets[i]));
  }
  Labels inf = labels;
  inf.emplace_back("le", "+Inf");
  Sample(bucket, inf, static_cast<double>(s.count));
  Sample(absl::StrCat(name, "_sum"), labels, s.sum);
  Sample(absl::StrCat(name, "_count"), labels, static_cast<double>(s.count));
}

}  // namespace lienthong
