// Metrics registry with Prometheus text exposition.
//
// Modules register their metrics once at construction (registration takes a lock) and
// keep the returned references; updating a Counter, Gauge or Histogram afterwards is a
// relaxed atomic operation, safe from any thread and cheap on the hot path. References
// stay valid for the registry's lifetime. A metric family is identified by its name; a
// family may hold several label sets (`counter("http_requests_total", help,
// {{"code","200"}})`).
//
// Callback gauges are evaluated at scrape time, on the scraping thread; the callback must
// be thread-safe and quick (no I/O).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hearth {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double d);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Cumulative histogram over fixed upper bounds (e.g. seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  std::uint64_t bucket(std::size_t i) const { return buckets_[i].load(std::memory_order_relaxed); }
  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // one per bound, non-cumulative
  std::atomic<std::uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Names must match [a-zA-Z_:][a-zA-Z0-9_:]*; a name used with two kinds is a bug and
  // aborts at registration (start-up), never at scrape time.
  Counter& counter(std::string_view name, std::string_view help, MetricLabels labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, MetricLabels labels = {});
  Histogram& histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                       MetricLabels labels = {});
  void callback_gauge(std::string_view name, std::string_view help, std::function<double()> fn,
                      MetricLabels labels = {});

  // Prometheus text format 0.0.4.
  std::string render() const;

 private:
  struct Family;
  Family& family(std::string_view name, std::string_view help, int kind);
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Family>> families_;
};

// Default latency buckets in seconds, 0.5 ms .. 10 s.
std::vector<double> latency_buckets();

}  // namespace hearth
