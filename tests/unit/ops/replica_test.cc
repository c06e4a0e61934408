// The continuous replica (incident I05) on a fake data directory: rounds, chains, pruning,
// failures on /health, and the one-command restore (with a damaged newest incremental).
#include "ops/replica.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

namespace hearth::ops {
namespace {

namespace fs = std::filesystem;

void put(const fs::path& p, const std::string& content) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
}

std::string get(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 random(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(random());
  return s;
}

class ReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "hearth-replica-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    data_ = root_ / "data";
    replica_ = root_ / "replica";
    fs::create_directories(replica_);
    put(data_ / "hearth.db", random_bytes(8 << 16, 1));
    put(data_ / "tls" / "localhost.key", "key");
  }
  void TearDown() override { fs::remove_all(root_); }

  std::unique_ptr<ReplicaWriter> writer(int rebase_percent = 50, int keep_chains = 2) {
    ReplicaOptions o;
    o.data_dir = data_.string();
    o.replica_dir = replica_.string();
    o.interval = std::chrono::seconds(60);
    o.rebase_percent = rebase_percent;
    o.keep_chains = keep_chains;
    o.snapshot_database = [this](const std::string& path) -> Result<void> {
      fs::copy_file(data_ / "hearth.db", path);
      return ok();
    };
    return std::make_unique<ReplicaWriter>(std::move(o), clock_, log_, metrics_);
  }

  std::string metric(std::string_view line_start) {
    std::istringstream in(metrics_.render());
    for (std::string line; std::getline(in, line);)
      if (line.rfind(line_start, 0) == 0 && line.size() > line_start.size() && line[line_start.size()] == ' ')
        return line.substr(line_start.size() + 1);
    return "";
  }

  void change_database(std::size_t offset, unsigned seed) {
    std::string db = get(data_ / "hearth.db");
    std::string patch = random_bytes(100, seed);
    db.replace(offset, patch.size(), patch);
    put(data_ / "hearth.db", db);
  }

  fs::path root_, data_, replica_;
  ManualClock clock_;
  Logger log_{LogLevel::error, LogFormat::text};
  MetricsRegistry metrics_;
};

TEST_F(ReplicaTest, FullThenIncrementalsThenOneCommandRestore) {
  auto w = writer();
  auto first = w->run_round();
  ASSERT_TRUE(first) << first.error().describe();
  EXPECT_EQ(*first, ReplicaRound::full);
  clock_.advance_ms(60'000);
  EXPECT_EQ(w->run_round().value(), ReplicaRound::unchanged);
  change_database(70000, 2);
  EXPECT_EQ(w->run_round().value(), ReplicaRound::incremental);
  put(data_ / "blobs" / "ab" / "ab1", "a new blob");
  EXPECT_EQ(w->run_round().value(), ReplicaRound::incremental);
  EXPECT_EQ(metric("hearth_replica_rounds_total{result=\"unchanged\"}"), "1");
  EXPECT_EQ(metric("hearth_replica_last_success_timestamp_seconds"), std::to_string(clock_.now_ms() / 1000));
  EXPECT_EQ(w->check().status, HealthStatus::ok);

  auto chains = list_replica_chains(replica_.string());
  ASSERT_TRUE(chains) << chains.error().describe();
  ASSERT_EQ(chains->size(), 1u);
  ASSERT_EQ((*chains)[0].links.size(), 3u);
  EXPECT_LT((*chains)[0].links[1].bytes, (*chains)[0].links[0].bytes / 4) << "one changed chunk, not the database";
  for (const auto& e : fs::recursive_directory_iterator(replica_))
    EXPECT_NE(e.path().extension(), ".partial") << "only finished files: " << e.path();
  EXPECT_FALSE(fs::exists(replica_ / ".scratch"));

  // A writer restarted on the same directory continues the chain.
  auto again = writer();
  change_database(1000, 3);
  EXPECT_EQ(again->run_round().value(), ReplicaRound::incremental);
  chains = list_replica_chains(replica_.string());
  ASSERT_EQ((*chains)[0].links.size(), 4u);

  ReplicaRestoreOptions ro;
  ro.replica_dir = replica_.string();
  ro.data_dir = (root_ / "new").string();
  auto r = restore_from_replica(ro);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->backups, 4u);
  EXPECT_EQ(get(root_ / "new" / "hearth.db"), get(data_ / "hearth.db"));
  EXPECT_EQ(get(root_ / "new" / "blobs" / "ab" / "ab1"), "a new blob");
  EXPECT_EQ(get(root_ / "new" / "tls" / "localhost.key"), "key");
}

TEST_F(ReplicaTest, DamagedNewestIncrementalIsRefusedNamingItAndAnEarlierPointRestores) {
  auto w = writer();
  ASSERT_TRUE(w->run_round());
  change_database(0, 4);
  ASSERT_TRUE(w->run_round());
  std::string before_last = get(data_ / "hearth.db");
  change_database(300000, 5);
  ASSERT_EQ(w->run_round().value(), ReplicaRound::incremental);
  auto chains = list_replica_chains(replica_.string());
  ASSERT_TRUE(chains);
  const std::string newest = (*chains)[0].links.back().file;
  std::string bytes = get(newest);
  bytes[bytes.size() / 2] ^= 0x10;
  put(newest, bytes);

  ReplicaRestoreOptions ro;
  ro.replica_dir = replica_.string();
  ro.data_dir = (root_ / "new").string();
  auto r = restore_from_replica(ro);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find(newest), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("--up-to 1"), std::string::npos) << r.error().message;
  EXPECT_FALSE(fs::exists(root_ / "new"));
  ro.up_to = 1;
  auto earlier = restore_from_replica(ro);
  ASSERT_TRUE(earlier) << earlier.error().describe();
  EXPECT_EQ(get(root_ / "new" / "hearth.db"), before_last);
}

TEST_F(ReplicaTest, LargeIncrementalsStartANewChainAndOldChainsArePruned) {
  auto w = writer(/*rebase_percent=*/10, /*keep_chains=*/2);
  std::vector<std::string> fulls;
  ASSERT_EQ(w->run_round().value(), ReplicaRound::full);
  for (unsigned i = 0; i < 6; ++i) {
    clock_.advance_ms(60'000);
    // Two of eight chunks change each round: 25% of the full, over the 10% threshold.
    change_database(10, 10 + i);
    change_database(400000, 20 + i);
    auto r = w->run_round();
    ASSERT_TRUE(r) << r.error().describe();
    EXPECT_EQ(*r, i % 2 == 0 ? ReplicaRound::incremental : ReplicaRound::full) << i;
  }
  auto chains = list_replica_chains(replica_.string());
  ASSERT_TRUE(chains);
  ASSERT_EQ(chains->size(), 2u) << "the newest two complete chains are kept";
  EXPECT_GT((*chains)[0].links.front().manifest.created_at_ms, (*chains)[1].links.front().manifest.created_at_ms);
  ReplicaRestoreOptions ro;
  ro.replica_dir = replica_.string();
  ro.data_dir = (root_ / "new").string();
  ASSERT_TRUE(restore_from_replica(ro));
  EXPECT_EQ(get(root_ / "new" / "hearth.db"), get(data_ / "hearth.db"));
}

TEST_F(ReplicaTest, FailuresAndStalenessAreWarningsAndAHeldLockSkipsTheRound) {
  auto w = writer();
  ASSERT_TRUE(w->run_round());
  EXPECT_EQ(w->check().status, HealthStatus::ok);
  {
    auto held = BackupLock::acquire(data_.string());
    ASSERT_TRUE(held);
    change_database(5, 6);
    EXPECT_EQ(w->run_round().value(), ReplicaRound::skipped);
    EXPECT_EQ(w->check().status, HealthStatus::ok);
  }
  fs::rename(replica_, root_ / "elsewhere");  // the mount went away
  auto failed = w->run_round();
  ASSERT_FALSE(failed);
  auto c = w->check();
  EXPECT_EQ(c.status, HealthStatus::warning);
  EXPECT_NE(c.message.find("the last replica round failed"), std::string::npos) << c.message;
  EXPECT_NE(c.message.find(replica_.string()), std::string::npos) << c.message;
  EXPECT_EQ(metric("hearth_replica_failing"), "1");
  EXPECT_EQ(metric("hearth_replica_rounds_total{result=\"failed\"}"), "1");

  fs::rename(root_ / "elsewhere", replica_);
  ASSERT_EQ(w->run_round().value(), ReplicaRound::incremental);
  EXPECT_EQ(w->check().status, HealthStatus::ok);
  EXPECT_EQ(metric("hearth_replica_failing"), "0");
  clock_.advance_ms(3 * 60'000 + 1000);
  c = w->check();
  EXPECT_EQ(c.status, HealthStatus::warning);
  EXPECT_NE(c.message.find("stale"), std::string::npos) << c.message;
}

}  // namespace
}  // namespace hearth::ops
