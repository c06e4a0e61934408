#include "core/metrics.h"

#include <thread>

#include <gtest/gtest.h>

namespace hearth {
namespace {

TEST(Metrics, RendersPrometheusText) {
  MetricsRegistry reg;
  reg.counter("hearth_things_total", "Things.", {{"kind", "a"}}).inc(3);
  reg.counter("hearth_things_total", "Things.", {{"kind", "b\"q"}}).inc();
  reg.gauge("hearth_level", "Level.").set(2.5);
  reg.callback_gauge("hearth_cb", "Callback.", [] { return 7.0; });
  auto& h = reg.histogram("hearth_lat_seconds", "Latency.", {0.1, 1});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(5);
  std::string text = reg.render();
  EXPECT_NE(text.find("# HELP hearth_things_total Things.\n# TYPE hearth_things_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("hearth_things_total{kind=\"a\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("hearth_things_total{kind=\"b\\\"q\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("hearth_level 2.5\n"), std::string::npos);
  EXPECT_NE(text.find("hearth_cb 7\n"), std::string::npos);
  EXPECT_NE(text.find("hearth_lat_seconds_bucket{le=\"0.1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("hearth_lat_seconds_bucket{le=\"1\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("hearth_lat_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("hearth_lat_seconds_count 3\n"), std::string::npos);
}

TEST(Metrics, SameNameAndLabelsIsTheSameSeries) {
  MetricsRegistry reg;
  auto& a = reg.counter("c_total", "c");
  auto& b = reg.counter("c_total", "c");
  EXPECT_EQ(&a, &b);
}

TEST(Metrics, ConcurrentIncrementsAreCounted) {
  MetricsRegistry reg;
  auto& c = reg.counter("n_total", "n");
  auto& g = reg.gauge("g", "g");
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i)
    ts.emplace_back([&] {
      for (int j = 0; j < 10000; ++j) {
        c.inc();
        g.add(1);
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(c.value(), 40000u);
  EXPECT_DOUBLE_EQ(g.value(), 40000.0);
}

TEST(MetricsDeathTest, KindClashAbortsAtRegistration) {
  MetricsRegistry reg;
  reg.counter("x_total", "x");
  EXPECT_DEATH(reg.gauge("x_total", "x"), "two kinds");
}

}  // namespace
}  // namespace hearth
