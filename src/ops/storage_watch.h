// StorageWatcher: every resource that can run out under the data directory (incidents
// I02, I03, I07), and read-only mode at the reserve floor.
//
// Each check() takes one sample — the filesystem's free bytes AND free inodes (statvfs),
// the database file and its WAL — and:
//   * reports it as a health check ("disk"): warning at thresholds.warning_percent,
//     high at high_percent (still a warning), critical at critical_percent, of bytes or
//     inodes, whichever is worse; a WAL over wal_warning_bytes is a warning too (a
//     checkpoint that cannot keep up, e.g. behind a long-running reader, grows it without
//     bound); with database_max_bytes set, the database (file + WAL) against that cap
//     counts with the same percentages;
//   * exports gauges on /metrics: free/total bytes and inodes, used ratios, database and
//     WAL sizes, the growth rate of used bytes over the last hour and the days until the
//     disk is full at that rate (-1 when it is not growing);
//   * enters read-only mode (store/read_only.h) when free bytes fall under reserve_bytes
//     or free inodes under reserve_inodes, or the database reaches critical_percent of
//     database_max_bytes, and leaves it by itself once free bytes and inodes are back
//     above the floor plus a quarter, free bytes at least 8 MiB above the floor, and the
//     database under high_percent of its cap (hysteresis, so it does not flap).
// Every resource is judged on its own; the check reports the worst, and its message lists
// every resource past a threshold (incident I03: not only bytes).
// The "read_only" check reports the mode as its own line (critical while active), whoever
// set it: the watcher, or the store when a commit hit a full disk.
//
// Threads: check() runs on the HealthMonitor's thread; the object is not otherwise shared.
// evaluate() is the pure part (a sample and a time in, a result out) for unit tests.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <utility>

#include "core/log.h"
#include "core/metrics.h"
#include "ops/health.h"

namespace hearth::store {
class ReadOnlyMode;
}

namespace hearth::ops {

struct StorageWatchOptions {
  std::string data_dir;        // the filesystem that is watched
  std::string database_path;   // its WAL is database_path + "-wal"
  DiskThresholds thresholds;
  std::uint64_t reserve_bytes = 256ull << 20;  // read-only below this many free bytes
  std::uint64_t reserve_inodes = 1000;         // ... or this many free inodes
  std::uint64_t wal_warning_bytes = 256ull << 20;
  std::uint64_t database_max_bytes = 0;        // 0: no cap but the disk
  bool read_only_at_reserve = true;            // false: only warn (the defence off)
};

struct StorageSample {
  double total_bytes = 0, avail_bytes = 0;
  double total_inodes = 0, avail_inodes = 0;  // total 0: the filesystem has no inode limit
  double database_bytes = 0, wal_bytes = 0;
};

class StorageWatcher {
 public:
  StorageWatcher(StorageWatchOptions options, store::ReadOnlyMode& mode, Logger& log, MetricsRegistry& metrics);

  // Samples the filesystem and evaluates it (see the header comment).
  CheckResult check();
  // The read-only mode as a health check.
  CheckResult read_only_check() const;

  // Evaluates one sample taken at `now_ms` (wall clock): updates the growth estimate,
  // the gauges and read-only mode, and returns the "disk" check's result.
  CheckResult evaluate(const StorageSample& sample, std::int64_t now_ms);

  // Bytes per second of growth over the window (0 with fewer than two samples).
  double growth_bytes_per_second() const { return growth_; }

 private:
  StorageWatchOptions options_;
  store::ReadOnlyMode& mode_;
  Logger& log_;
  std::deque<std::pair<std::int64_t, double>> used_history_;  // (ms, used bytes), last hour
  double growth_ = 0;
  Gauge& bytes_total_;
  Gauge& bytes_free_;
  Gauge& inodes_total_;
  Gauge& inodes_free_;
  Gauge& bytes_used_ratio_;
  Gauge& inodes_used_ratio_;
  Gauge& database_bytes_;
  Gauge& wal_bytes_;
  Gauge& database_max_;
  Gauge& database_used_ratio_;
  Gauge& growth_gauge_;
  Gauge& days_until_full_;
};

}  // namespace hearth::ops
