#include "ops/health.h"

#include <filesystem>
#include <fstream>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace hearth::ops {
namespace {

struct HealthTest : ::testing::Test {
  Logger log{LogLevel::error, LogFormat::text};
  MetricsRegistry metrics;
};

TEST_F(HealthTest, OverallIsTheWorstCheck) {
  HealthMonitor mon(log, metrics, std::chrono::hours(1));
  mon.add_check("a", [] { return CheckResult{HealthStatus::ok, "fine", "", {}}; });
  mon.add_check("b", [] { return CheckResult{HealthStatus::warning, "80%", "disk filling", {{"used", 80, "%", 80, 95}}}; });
  auto snap = mon.run_now();
  EXPECT_EQ(snap.overall, HealthStatus::warning);
  EXPECT_EQ(snap.nagios_exit_code(), 1);
  EXPECT_EQ(snap.to_nagios_line(), "HEARTH WARNING - b warning: disk filling | used=80%;80;95");
  auto json = snap.to_json();
  EXPECT_NE(json.find(R"("status":"warning")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("a":{"status":"ok","value":"fine"})"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("message":"disk filling")"), std::string::npos) << json;
  EXPECT_NE(metrics.render().find("hearth_health_status{check=\"b\"} 1"), std::string::npos);
}

TEST_F(HealthTest, ThrowingCheckIsUnknownNotACrash) {
  HealthMonitor mon(log, metrics, std::chrono::hours(1));
  mon.add_check("boom", []() -> CheckResult { throw std::runtime_error("nope"); });
  auto snap = mon.run_now();
  EXPECT_EQ(snap.overall, HealthStatus::unknown);
  EXPECT_EQ(snap.nagios_exit_code(), 3);
  EXPECT_NE(snap.to_nagios_line().find("HEARTH UNKNOWN"), std::string::npos);
}

TEST_F(HealthTest, AllOkLineCountsChecks) {
  HealthMonitor mon(log, metrics, std::chrono::hours(1));
  mon.add_check("x", [] { return CheckResult{HealthStatus::ok, "", "", {}}; });
  mon.add_check("y", [] { return CheckResult{HealthStatus::ok, "", "", {}}; });
  mon.start();
  auto snap = mon.snapshot();  // start() ran the checks once before returning
  EXPECT_EQ(snap.to_nagios_line(), "HEARTH OK - 2 checks ok");
  EXPECT_EQ(snap.nagios_exit_code(), 0);
  mon.stop();
}

TEST_F(HealthTest, MonitorThreadPublishesRecoveries) {
  std::atomic<int> state{2};
  HealthMonitor mon(log, metrics, std::chrono::milliseconds(5));
  mon.add_check("flip", [&] { return CheckResult{static_cast<HealthStatus>(state.load()), "", "", {}}; });
  mon.start();
  EXPECT_EQ(mon.snapshot().overall, HealthStatus::critical);
  state = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (mon.snapshot().overall != HealthStatus::ok && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  EXPECT_EQ(mon.snapshot().overall, HealthStatus::ok);
}

TEST(DiskCheck, ThresholdsDecideStatus) {
  auto dir = std::filesystem::temp_directory_path().string();
  auto lenient = disk_space_check(dir, {99, 99, 100})();
  // This test machine is not 99 % full; if it ever is, the critical branch below still holds.
  EXPECT_NE(lenient.status, HealthStatus::unknown);
  EXPECT_EQ(lenient.perf.size(), 3u);
  auto strict = disk_space_check(dir, {0, 0, 0})();
  EXPECT_EQ(strict.status, HealthStatus::critical);
  EXPECT_NE(strict.message.find("critical at 0%"), std::string::npos) << strict.message;
  auto missing = disk_space_check("/nonexistent/hearth", {80, 90, 95})();
  EXPECT_EQ(missing.status, HealthStatus::critical);
}

TEST(PathCheck, WritableDirIsOkAndLeavesNoProbe) {
  auto dir = std::filesystem::temp_directory_path() / ("hearth-path-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto r = path_writable_check(dir.string())();
  EXPECT_EQ(r.status, HealthStatus::ok) << r.message;
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  std::filesystem::remove_all(dir);
}

TEST(PathCheck, UnusablePathIsCriticalAndNamed) {
  auto file = std::filesystem::temp_directory_path() / ("hearth-notadir-" + std::to_string(::getpid()));
  std::ofstream(file) << "x";
  auto r = path_writable_check(file.string())();
  EXPECT_EQ(r.status, HealthStatus::critical);
  EXPECT_NE(r.message.find(file.string()), std::string::npos);
  std::filesystem::remove(file);
}

TEST(OpenFiles, ReportsCount) {
  MetricsRegistry metrics;
  auto r = open_files_check(metrics)();
  EXPECT_EQ(r.status, HealthStatus::ok);
  EXPECT_NE(r.value.find("descriptors open"), std::string::npos);
  const std::string text = metrics.render();
  EXPECT_NE(text.find("\nhearth_open_files "), std::string::npos) << text;
  EXPECT_NE(text.find("\nhearth_open_files_limit "), std::string::npos) << text;
}

TEST(OpenFiles, WarnsAtTheConfiguredShareOfTheLimit) {
  struct rlimit rl {};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur > 200000) GTEST_SKIP() << "open-files limit too high to fill 1 % of it here";
  // Hold 1 % of the limit (plus one) so that the 1 % warning threshold is certainly passed.
  std::vector<int> held;
  for (rlim_t i = 0; i <= rl.rlim_cur / 100; ++i) held.push_back(::dup(STDERR_FILENO));
  MetricsRegistry metrics;
  auto r = open_files_check(metrics, 1, 100)();
  for (int fd : held) ::close(fd);
  EXPECT_EQ(r.status, HealthStatus::warning);
  EXPECT_NE(r.message.find("warning at 1%"), std::string::npos) << r.message;
}

}  // namespace
}  // namespace hearth::ops
