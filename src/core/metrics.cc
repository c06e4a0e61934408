#include "core/metrics.h"

#include <algorithm>
#include <cstdlib>
#include <map>

#include <fmt/format.h>

namespace hearth {

void Gauge::add(double d) {
  double cur = value_.load(std::memory_order_relaxed);
  while (!value_.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
  }
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<std::uint64_t>[bounds_.size()]) {
  std::sort(bounds_.begin(), bounds_.end());
  for (std::size_t i = 0; i < bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double v) {
  auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  if (it != bounds_.end()) buckets_[it - bounds_.begin()].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  double cur = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

namespace {
enum Kind { kCounter = 0, kGauge = 1, kHistogram = 2 };

bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string escape_label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string render_labels(const MetricLabels& labels, std::string_view extra_key = {},
                          std::string_view extra_value = {}) {
  if (labels.empty() && extra_key.empty()) return {};
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    out += fmt::format("{}=\"{}\"", k, escape_label(v));
  }
  if (!extra_key.empty()) {
    if (!first) out += ',';
    out += fmt::format("{}=\"{}\"", extra_key, extra_value);
  }
  out += '}';
  return out;
}

std::string format_value(double v) {
  if (v == static_cast<double>(static_cast<std::int64_t>(v)) && v < 9e15 && v > -9e15)
    return fmt::format("{}", static_cast<std::int64_t>(v));
  return fmt::format("{}", v);
}
}  // namespace

struct MetricsRegistry::Family {
  std::string name;
  std::string help;
  int kind;
  struct Series {
    MetricLabels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::function<double()> callback;
  };
  std::vector<Series> series;

  Series* find(const MetricLabels& labels) {
    for (auto& s : series)
      if (s.labels == labels) return &s;
    return nullptr;
  }
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

MetricsRegistry::Family& MetricsRegistry::family(std::string_view name, std::string_view help, int kind) {
  if (!valid_name(name)) {
    fmt::print(stderr, "BUG: invalid metric name '{}'\n", name);
    std::abort();
  }
  for (auto& f : families_) {
    if (f->name == name) {
      if (f->kind != kind) {
        fmt::print(stderr, "BUG: metric '{}' registered with two kinds\n", name);
        std::abort();
      }
      return *f;
    }
  }
  auto f = std::make_unique<Family>();
  f->name = std::string(name);
  f->help = std::string(help);
  f->kind = kind;
  families_.push_back(std::move(f));
  return *families_.back();
}

Counter& MetricsRegistry::counter(std::string_view name, std::string_view help, MetricLabels labels) {
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, kCounter);
  if (auto* s = f.find(labels); s && s->counter) return *s->counter;
  f.series.push_back({std::move(labels), std::make_unique<Counter>(), nullptr, nullptr, nullptr});
  return *f.series.back().counter;
}

Gauge& MetricsRegistry::gauge(std::string_view name, std::string_view help, MetricLabels labels) {
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, kGauge);
  if (auto* s = f.find(labels); s && s->gauge) return *s->gauge;
  f.series.push_back({std::move(labels), nullptr, std::make_unique<Gauge>(), nullptr, nullptr});
  return *f.series.back().gauge;
}

Histogram& MetricsRegistry::histogram(std::string_view name, std::string_view help,
                                      std::vector<double> bounds, MetricLabels labels) {
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, kHistogram);
  if (auto* s = f.find(labels); s && s->histogram) return *s->histogram;
  f.series.push_back(
      {std::move(labels), nullptr, nullptr, std::make_unique<Histogram>(std::move(bounds)), nullptr});
  return *f.series.back().histogram;
}

void MetricsRegistry::callback_gauge(std::string_view name, std::string_view help,
                                     std::function<double()> fn, MetricLabels labels) {
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, kGauge);
  if (auto* s = f.find(labels)) {
    s->callback = std::move(fn);
    s->gauge.reset();
    return;
  }
  f.series.push_back({std::move(labels), nullptr, nullptr, nullptr, std::move(fn)});
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  out.reserve(4096);
  static constexpr const char* kind_names[] = {"counter", "gauge", "histogram"};
  for (const auto& f : families_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", f->name, f->help, f->name, kind_names[f->kind]);
    for (const auto& s : f->series) {
      if (s.counter) {
        out += fmt::format("{}{} {}\n", f->name, render_labels(s.labels), s.counter->value());
      } else if (s.gauge) {
        out += fmt::format("{}{} {}\n", f->name, render_labels(s.labels), format_value(s.gauge->value()));
      } else if (s.callback) {
        out += fmt::format("{}{} {}\n", f->name, render_labels(s.labels), format_value(s.callback()));
      } else if (s.histogram) {
        const auto& h = *s.histogram;
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i < h.bounds().size(); ++i) {
          cumulative += h.bucket(i);
          out += fmt::format("{}_bucket{} {}\n", f->name,
                             render_labels(s.labels, "le", format_value(h.bounds()[i])), cumulative);
        }
        out += fmt::format("{}_bucket{} {}\n", f->name, render_labels(s.labels, "le", "+Inf"), h.count());
        out += fmt::format("{}_sum{} {}\n", f->name, render_labels(s.labels), format_value(h.sum()));
        out += fmt::format("{}_count{} {}\n", f->name, render_labels(s.labels), h.count());
      }
    }
  }
  return out;
}

std::vector<double> latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

}  // namespace hearth
