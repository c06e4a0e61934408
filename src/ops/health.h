// Health checks: what /health, /metrics and `hearthctl check` report.
//
// A HealthMonitor owns a list of named checks and runs them on its own thread every
// interval; /health and the admin socket read the last snapshot, so serving them costs no
// I/O and cannot hang on a stuck disk (incident I17). A check returns its status as data,
// never throws, and must finish quickly; one that fails to run reports `unknown`.
//
// Lifecycle: construct, add checks, start(); stop() (or the destructor) joins the thread.
// snapshot() and run_now() are thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/log.h"
#include "core/metrics.h"

namespace hearth::ops {

// Ordered by severity; the overall status is the worst check's.
enum class HealthStatus { ok = 0, warning = 1, critical = 2, unknown = 3 };
std::string_view health_status_name(HealthStatus s);

// Nagios/Icinga performance data: label=value[unit];warn;crit
struct PerfData {
  std::string label;
  double value = 0;
  std::string unit;  // "", "%", "B", ...
  double warn = -1;  // -1: none
  double crit = -1;
};

struct CheckResult {
  HealthStatus status = HealthStatus::unknown;
  std::string value;    // the measured value as people read it ("17% of 80 GiB used")
  std::string message;  // what is wrong and what to do, empty when ok
  std::vector<PerfData> perf;
};

struct NamedResult {
  std::string name;
  CheckResult result;
};

struct HealthSnapshot {
  HealthStatus overall = HealthStatus::unknown;
  std::int64_t checked_at_ms = 0;
  std::vector<NamedResult> checks;

  // {"status":"ok","checked_at":...,"checks":{"disk":{"status":..,"value":..,"message":..}}}
  std::string to_json() const;
  // One Nagios plugin line: "HEARTH OK - 4 checks ok | disk_bytes=17%;80;95 ..."
  std::string to_nagios_line() const;
  // 0 ok, 1 warning, 2 critical, 3 unknown.
  int nagios_exit_code() const;
};

using HealthCheck = std::function<CheckResult()>;

class HealthMonitor {
 public:
  HealthMonitor(Logger& log, MetricsRegistry& metrics, std::chrono::milliseconds interval);
  ~HealthMonitor();
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;

  // Before start() only.
  void add_check(std::string name, HealthCheck check);
  // Before start() only: called with every new snapshot, on the thread that ran the
  // checks (the status page uses it). Must be quick and must not call run_now().
  void on_snapshot(std::function<void(const HealthSnapshot&)> listener) { listener_ = std::move(listener); }

  // Runs every check once synchronously, then every interval on the monitor's thread.
  void start();
  void stop();

  HealthSnapshot snapshot() const;
  // Runs all checks now on the calling thread and publishes the result.
  HealthSnapshot run_now();

 private:
  void loop();

  Logger& log_;
  MetricsRegistry& metrics_;
  std::chrono::milliseconds interval_;
  std::vector<std::pair<std::string, HealthCheck>> checks_;
  std::vector<Gauge*> status_gauges_;
  std::function<void(const HealthSnapshot&)> listener_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  HealthSnapshot snapshot_;
  std::mutex run_mutex_;  // one run at a time
  std::thread thread_;
};

// ---- Built-in checks ------------------------------------------------------------------

struct DiskThresholds {
  int warning_percent = 80;
  int high_percent = 90;
  int critical_percent = 95;
};

// Bytes AND inodes of the filesystem holding `path` (incidents I02, I03).
HealthCheck disk_space_check(std::string path, DiskThresholds thresholds);
// Creates, writes, fsyncs, reads back and removes a probe file in `dir` as the running
// user (incident I01). Critical, naming the path and the errno, on any failure.
HealthCheck path_writable_check(std::string dir);
// Open descriptors against the soft limit (RLIMIT_NOFILE): warning at warning_percent,
// critical at critical_percent (incidents I03, I16). Each run also sets the gauges
// hearth_open_files and hearth_open_files_limit in `metrics`, which must outlive the check.
HealthCheck open_files_check(MetricsRegistry& metrics, int warning_percent = 80, int critical_percent = 95);

}  // namespace hearth::ops
