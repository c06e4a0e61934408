#include "ops/storage_watch.h"

#include <gtest/gtest.h>

#include "store/read_only.h"

namespace hearth::ops {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

struct StorageWatchTest : ::testing::Test {
  Logger log{LogLevel::error, LogFormat::text};
  MetricsRegistry metrics;
  store::ReadOnlyMode mode;
  StorageWatchOptions options() {
    StorageWatchOptions o;
    o.data_dir = "/data";
    o.thresholds = {80, 90, 95};
    o.reserve_bytes = 100 * (1 << 20);
    o.reserve_inodes = 100;
    o.wal_warning_bytes = 64 << 20;
    return o;
  }
  // A 10 GiB filesystem with `free_mib` free and `free_inodes` of 100000 inodes free.
  static StorageSample sample(double free_mib, double free_inodes = 90000) {
    return {10240 * kMiB, free_mib * kMiB, 100000, free_inodes, 50 * kMiB, 1 * kMiB};
  }
};

TEST_F(StorageWatchTest, ThresholdsOnBytesAndInodes) {
  StorageWatcher w(options(), mode, log, metrics);
  EXPECT_EQ(w.evaluate(sample(5000), 0).status, HealthStatus::ok);
  auto warn = w.evaluate(sample(1500), 1000);  // 85 % used
  EXPECT_EQ(warn.status, HealthStatus::warning);
  EXPECT_NE(warn.message.find("warning at 80%"), std::string::npos);
  auto high = w.evaluate(sample(800), 2000);  // 92 %
  EXPECT_EQ(high.status, HealthStatus::warning);
  EXPECT_NE(high.message.find("high at 90%"), std::string::npos);
  EXPECT_EQ(w.evaluate(sample(400), 3000).status, HealthStatus::critical);  // 96 %
  auto inodes = w.evaluate(sample(5000, 4000), 4000);  // 96 % of inodes
  EXPECT_EQ(inodes.status, HealthStatus::critical);
  EXPECT_NE(inodes.message.find("inodes"), std::string::npos);
  EXPECT_FALSE(mode.active());
}

TEST_F(StorageWatchTest, GrowthRateAndDaysUntilFull) {
  StorageWatcher w(options(), mode, log, metrics);
  w.evaluate(sample(5000), 0);
  EXPECT_EQ(metrics.gauge("hearth_disk_days_until_full", "").value(), -1);
  w.evaluate(sample(5000 - 864), 86'400'000);  // 864 MiB in a day
  EXPECT_NEAR(w.growth_bytes_per_second(), 864 * kMiB / 86400, 1);
  EXPECT_NEAR(metrics.gauge("hearth_disk_days_until_full", "").value(), (5000.0 - 864) / 864, 0.01);
  w.evaluate(sample(5000), 2 * 86'400'000);  // shrank back: not growing
  EXPECT_EQ(metrics.gauge("hearth_disk_days_until_full", "").value(), -1);
}

TEST_F(StorageWatchTest, ReadOnlyBelowTheReserveAndBackWithHysteresis) {
  StorageWatcher w(options(), mode, log, metrics);
  w.evaluate(sample(150), 0);
  EXPECT_FALSE(mode.active());
  auto r = w.evaluate(sample(90), 1000);
  EXPECT_TRUE(mode.active());
  EXPECT_EQ(r.status, HealthStatus::critical);
  EXPECT_NE(mode.reason().find("90.0 MiB free"), std::string::npos);
  EXPECT_EQ(w.read_only_check().status, HealthStatus::critical);
  w.evaluate(sample(110), 2000);  // above the floor but within the hysteresis
  EXPECT_TRUE(mode.active());
  w.evaluate(sample(130), 3000);
  EXPECT_FALSE(mode.active());
  EXPECT_EQ(w.read_only_check().status, HealthStatus::ok);
  w.evaluate(sample(5000, 50), 4000);  // inodes under their floor
  EXPECT_TRUE(mode.active());
  EXPECT_NE(mode.reason().find("inodes"), std::string::npos);
}

TEST_F(StorageWatchTest, DefenceOffOnlyWarns) {
  auto o = options();
  o.read_only_at_reserve = false;
  StorageWatcher w(o, mode, log, metrics);
  EXPECT_EQ(w.evaluate(sample(10), 0).status, HealthStatus::critical);
  EXPECT_FALSE(mode.active());
}

TEST_F(StorageWatchTest, LargeWalWarns) {
  StorageWatcher w(options(), mode, log, metrics);
  auto s = sample(5000);
  s.wal_bytes = 100 * kMiB;
  auto r = w.evaluate(s, 0);
  EXPECT_EQ(r.status, HealthStatus::warning);
  EXPECT_NE(r.message.find("WAL"), std::string::npos);
}

TEST_F(StorageWatchTest, DatabaseCapWarnsThenGoesReadOnlyWithBytesFree) {
  auto o = options();
  o.database_max_bytes = 100 * (1 << 20);
  StorageWatcher w(o, mode, log, metrics);
  auto s = sample(5000);  // half the disk free throughout
  s.database_bytes = 70 * kMiB;
  s.wal_bytes = 0;
  EXPECT_EQ(w.evaluate(s, 0).status, HealthStatus::ok);
  EXPECT_NEAR(metrics.gauge("hearth_disk_used_ratio", "", {{"resource", "database"}}).value(), 0.70, 1e-9);
  EXPECT_EQ(metrics.gauge("hearth_database_max_bytes", "").value(), 100 * kMiB);
  s.wal_bytes = 12 * kMiB;  // file + WAL: 82 %
  auto warn = w.evaluate(s, 1000);
  EXPECT_EQ(warn.status, HealthStatus::warning);
  EXPECT_NE(warn.message.find("the database (82.0 of 100.0 MiB"), std::string::npos) << warn.message;
  EXPECT_FALSE(mode.active());
  s.database_bytes = 84 * kMiB;  // 96 %
  auto full = w.evaluate(s, 2000);
  EXPECT_EQ(full.status, HealthStatus::critical);
  EXPECT_TRUE(mode.active());
  EXPECT_NE(mode.reason().find("ops.database_max_mib"), std::string::npos) << mode.reason();
  s.database_bytes = 80 * kMiB;  // 92 %: under the cap's critical share, not under high
  w.evaluate(s, 3000);
  EXPECT_TRUE(mode.active());
  s.database_bytes = 70 * kMiB;  // 82 %
  w.evaluate(s, 4000);
  EXPECT_FALSE(mode.active());
}

TEST_F(StorageWatchTest, NoDatabaseCapByDefault) {
  StorageWatcher w(options(), mode, log, metrics);
  auto s = sample(5000);
  s.database_bytes = 4000 * kMiB;
  EXPECT_EQ(w.evaluate(s, 0).status, HealthStatus::ok);
  EXPECT_EQ(metrics.gauge("hearth_database_max_bytes", "").value(), 0);
}

TEST_F(StorageWatchTest, EveryResourcePastAThresholdIsNamed) {
  auto o = options();
  o.database_max_bytes = 60 * (1 << 20);
  StorageWatcher w(o, mode, log, metrics);
  auto s = sample(1500, 15000);  // bytes 85 %, inodes 85 %
  s.wal_bytes = 100 * kMiB;      // WAL over its warning, database 150 of 60 MiB
  auto r = w.evaluate(s, 0);
  EXPECT_EQ(r.status, HealthStatus::critical);
  for (const char* what : {"space on /data", "inodes on /data", "the database is", "WAL"})
    EXPECT_NE(r.message.find(what), std::string::npos) << what << " in " << r.message;
  EXPECT_LT(r.message.find("the database is"), r.message.find("space on /data")) << "critical first: " << r.message;
}

}  // namespace
}  // namespace hearth::ops
