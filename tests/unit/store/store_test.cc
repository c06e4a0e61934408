#include "store/store.h"

#include <sqlite3.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/log.h"
#include "core/metrics.h"

namespace hearth::store {
namespace {

using namespace std::chrono_literals;
constexpr auto kDeadline = 30s;

struct NullSink : LogSink {
  void write_line(std::string_view) override {}
};

// A one-shot latch that a test opens; waiting on it has a deadline so a bug fails the
// test instead of hanging it.
class Gate {
 public:
  void open() {
    std::lock_guard lock(m_);
    open_ = true;
    cv_.notify_all();
  }
  bool wait() {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, kDeadline, [this] { return open_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Counts completions and lets the test wait for a number of them.
class Completions {
 public:
  void add(Result<void> r) {
    std::lock_guard lock(m_);
    results_.push_back(std::move(r));
    cv_.notify_all();
  }
  bool wait_for(std::size_t n) {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, kDeadline, [&] { return results_.size() >= n; });
  }
  std::vector<Result<void>> results() {
    std::lock_guard lock(m_);
    return results_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<Result<void>> results_;
};

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "hearth-store-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = (dir_ / "test.db").string();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  Store& open(StoreOptions options = {}) {
    store_.reset();
    options.path = path_;
    auto s = Store::open_sqlite(options, logger_, metrics_);
    EXPECT_TRUE(s) << s.error().describe();
    store_ = std::move(*s);
    return *store_;
  }

  void create_table(Store& s) {
    auto r = s.migrate("test", {{1, "items", "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)"}});
    ASSERT_TRUE(r) << r.error().describe();
  }

  std::int64_t count_items(Store& s) {
    auto n = s.read_sync([](Transaction& tx) -> Result<std::int64_t> {
      auto row = tx.query_one("SELECT count(*) FROM items");
      if (!row) return tl::unexpected(row.error());
      return (*row)->integer(0);
    });
    EXPECT_TRUE(n) << n.error().describe();
    return n ? *n : -1;
  }

  // Enqueues a write that signals when it runs and then blocks until `release` opens, so
  // that everything enqueued meanwhile lands in the next batch.
  void block_writer(Store& s, Gate& started, Gate& release, Completions& done) {
    s.write(
        [&](Transaction& tx) -> Result<void> {
          auto r = tx.exec("INSERT INTO items (v) VALUES ('blocker')");
          started.open();
          release.wait();
          if (!r) return tl::unexpected(r.error());
          return ok();
        },
        [&](Result<void> r) { done.add(std::move(r)); });
    ASSERT_TRUE(started.wait());
  }

  std::uint64_t counter(std::string_view name) { return metrics_.counter(name, "").value(); }

  std::filesystem::path dir_;
  std::string path_;
  Logger logger_{std::make_shared<NullSink>(), LogLevel::error, LogFormat::text};
  MetricsRegistry metrics_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, MigrationsAppliedOnceAndRecorded) {
  Store& s = open();
  std::vector<Migration> ms = {{1, "a", "CREATE TABLE a (x INTEGER)"},
                               {2, "b", "CREATE TABLE b (y INTEGER); INSERT INTO b VALUES (7)"}};
  ASSERT_TRUE(s.migrate("mod", ms));
  ASSERT_TRUE(s.migrate("mod", ms));
  auto rows = s.read_sync([](Transaction& tx) -> Result<std::string> {
    std::string out;
    auto r = tx.query("SELECT version, name FROM schema_migrations WHERE module = 'mod' ORDER BY version", {},
                      [&](const Row& row) { out += std::to_string(row.integer(0)) + std::string(row.text(1)) + ";"; });
    if (!r) return tl::unexpected(r.error());
    auto b = tx.query_one("SELECT count(*) FROM b");
    if (!b) return tl::unexpected(b.error());
    out += std::to_string((*b)->integer(0));
    return out;
  });
  ASSERT_TRUE(rows) << rows.error().describe();
  EXPECT_EQ(*rows, "1a;2b;1");  // the INSERT of migration 2 ran exactly once
}

TEST_F(StoreTest, ReopenIsIdempotentAndDataSurvives) {
  std::vector<Migration> ms = {{1, "items", "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)"}};
  {
    Store& s = open();
    ASSERT_TRUE(s.migrate("test", ms));
    auto id = s.write_sync([](Transaction& tx) -> Result<std::int64_t> {
      auto r = tx.exec("INSERT INTO items (v) VALUES (?)", {"kept"});
      if (!r) return tl::unexpected(r.error());
      return tx.last_insert_id();
    });
    ASSERT_TRUE(id);
    EXPECT_EQ(*id, 1);
    s.close();
  }
  Store& s = open();
  ASSERT_TRUE(s.migrate("test", ms));
  auto v = s.read_sync([](Transaction& tx) -> Result<std::string> {
    auto row = tx.query_one("SELECT v FROM items WHERE id = 1");
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::not_found, "row");
    return std::string((*row)->text(0));
  });
  ASSERT_TRUE(v) << v.error().describe();
  EXPECT_EQ(*v, "kept");
}

TEST_F(StoreTest, GapInMigrationListIsCorrupt) {
  Store& s = open();
  auto r = s.migrate("gappy", {{1, "a", "CREATE TABLE a (x)"}, {3, "c", "CREATE TABLE c (x)"}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::corrupt);
  EXPECT_NE(r.error().message.find("gappy"), std::string::npos) << r.error().message;
}

TEST_F(StoreTest, DatabaseNewerThanCodeIsCorrupt) {
  Store& s = open();
  std::vector<Migration> ms = {{1, "a", "CREATE TABLE a (x)"}, {2, "b", "CREATE TABLE b (x)"},
                               {3, "c", "CREATE TABLE c (x)"}};
  ASSERT_TRUE(s.migrate("mod", ms));
  ms.pop_back();
  auto r = s.migrate("mod", ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::corrupt);
  EXPECT_NE(r.error().message.find("mod"), std::string::npos);
  EXPECT_NE(r.error().message.find("version 3"), std::string::npos) << r.error().message;
}

TEST_F(StoreTest, GapInRecordedVersionsIsCorrupt) {
  Store& s = open();
  std::vector<Migration> ms = {{1, "a", "CREATE TABLE a (x)"}, {2, "b", "CREATE TABLE b (x)"}};
  ASSERT_TRUE(s.migrate("mod", ms));
  ASSERT_TRUE(s.write_sync<std::int64_t>(
      [](Transaction& tx) { return tx.exec("DELETE FROM schema_migrations WHERE module = 'mod' AND version = 1"); }));
  auto r = s.migrate("mod", ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::corrupt);
  EXPECT_NE(r.error().message.find("mod"), std::string::npos) << r.error().message;
}

TEST_F(StoreTest, FailingMigrationLeavesNoTrace) {
  Store& s = open();
  auto r = s.migrate("mod", {{1, "a", "CREATE TABLE a (x)"},
                             {2, "broken", "CREATE TABLE half (x); THIS IS NOT SQL"}});
  ASSERT_FALSE(r);
  auto state = s.read_sync([](Transaction& tx) -> Result<std::int64_t> {
    auto v = tx.query_one("SELECT max(version) FROM schema_migrations WHERE module = 'mod'");
    if (!v) return tl::unexpected(v.error());
    auto t = tx.query_one("SELECT count(*) FROM sqlite_master WHERE name = 'half'");
    if (!t) return tl::unexpected(t.error());
    return (*v)->integer(0) * 10 + (*t)->integer(0);
  });
  ASSERT_TRUE(state);
  EXPECT_EQ(*state, 10);  // at version 1, table `half` rolled back
}

TEST_F(StoreTest, GroupCommitBatchesConcurrentWrites) {
  Store& s = open();
  create_table(s);
  const auto commits_before = counter("hearth_store_commits_total");
  const auto writes_before = counter("hearth_store_writes_total");
  Gate started, release;
  Completions blocker_done;
  block_writer(s, started, release, blocker_done);

  constexpr int kThreads = 8, kPerThread = 50, kTotal = kThreads * kPerThread;
  std::vector<std::atomic<int>> calls(kTotal);
  Completions done;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        int id = t * kPerThread + i;
        s.write([id](Transaction& tx) -> Result<void> {
                  auto r = tx.exec("INSERT INTO items (id, v) VALUES (?, 'x')", {id + 1000});
                  if (!r) return tl::unexpected(r.error());
                  return ok();
                },
                [&, id](Result<void> r) {
                  calls[id]++;
                  done.add(std::move(r));
                });
      }
    });
  }
  for (auto& t : threads) t.join();
  release.open();
  ASSERT_TRUE(done.wait_for(kTotal));
  ASSERT_TRUE(blocker_done.wait_for(1));
  for (auto& r : done.results()) EXPECT_TRUE(r) << r.error().describe();
  for (auto& c : calls) EXPECT_EQ(c.load(), 1);
  EXPECT_EQ(count_items(s), kTotal + 1);
  const auto commits = counter("hearth_store_commits_total") - commits_before;
  const auto writes = counter("hearth_store_writes_total") - writes_before;
  EXPECT_EQ(writes, static_cast<std::uint64_t>(kTotal + 1));
  // The blocker alone, then 400 queued jobs in batches of at most 256.
  EXPECT_EQ(commits, 3u);
  EXPECT_LT(commits, writes);
}

TEST_F(StoreTest, FailingJobRollsBackOnlyItself) {
  Store& s = open();
  create_table(s);
  Gate started, release;
  Completions blocker_done;
  block_writer(s, started, release, blocker_done);

  std::vector<std::promise<Result<void>>> results(4);
  auto done = [&](int i) { return [&, i](Result<void> r) { results[i].set_value(std::move(r)); }; };
  s.write([](Transaction& tx) -> Result<void> {
            auto r = tx.exec("INSERT INTO items (id, v) VALUES (101, 'a')");
            if (!r) return tl::unexpected(r.error());
            return ok();
          },
          done(0));
  s.write([](Transaction& tx) -> Result<void> {
            auto r = tx.exec("INSERT INTO items (id, v) VALUES (102, 'b')");
            if (!r) return tl::unexpected(r.error());
            return fail(Errc::invalid_argument, "job b changed its mind");
          },
          done(1));
  s.write([](Transaction& tx) -> Result<void> {
            auto r = tx.exec("INSERT INTO items (id, v) VALUES (103, 'c')");
            if (!r) return tl::unexpected(r.error());
            auto dup = tx.exec("INSERT INTO items (id, v) VALUES (101, 'dup')");
            if (!dup) return tl::unexpected(dup.error());
            return ok();
          },
          done(2));
  s.write([](Transaction& tx) -> Result<void> {
            auto r = tx.exec("INSERT INTO items (id, v) VALUES (104, 'd')");
            if (!r) return tl::unexpected(r.error());
            return ok();
          },
          done(3));
  const auto commits_before = counter("hearth_store_commits_total");
  release.open();
  std::vector<Result<void>> got;
  for (auto& p : results) {
    auto f = p.get_future();
    ASSERT_EQ(f.wait_for(kDeadline), std::future_status::ready);
    got.push_back(f.get());
  }
  EXPECT_TRUE(got[0]);
  ASSERT_FALSE(got[1]);
  EXPECT_EQ(got[1].error().code, Errc::invalid_argument);
  ASSERT_FALSE(got[2]);
  EXPECT_EQ(got[2].error().code, Errc::already_exists);
  EXPECT_TRUE(got[3]);
  EXPECT_EQ(counter("hearth_store_commits_total") - commits_before, 2u);  // blocker's batch + one batch
  auto ids = s.read_sync([](Transaction& tx) -> Result<std::string> {
    std::string out;
    auto r = tx.query("SELECT id FROM items WHERE v != 'blocker' ORDER BY id", {},
                      [&](const Row& row) { out += std::to_string(row.integer(0)) + ","; });
    if (!r) return tl::unexpected(r.error());
    return out;
  });
  ASSERT_TRUE(ids);
  EXPECT_EQ(*ids, "101,104,");
}

// Read-only mode (incident I02): writes are refused at once with read_only, reads work,
// and writes work again once the mode is left.
TEST_F(StoreTest, ReadOnlyModeRefusesWritesAndKeepsReads) {
  Store& s = open();
  create_table(s);
  auto insert = [&] {
    return s.write_sync([](Transaction& tx) -> Result<std::int64_t> { return tx.exec("INSERT INTO items (v) VALUES ('x')"); });
  };
  ASSERT_TRUE(insert());
  EXPECT_TRUE(s.read_only_mode().enter("test: disk below the reserve"));
  EXPECT_FALSE(s.read_only_mode().enter("a second reason"));
  auto refused = insert();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::read_only);
  EXPECT_NE(refused.error().message.find("test: disk below the reserve"), std::string::npos);
  EXPECT_EQ(count_items(s), 1);
  EXPECT_TRUE(s.read_only_mode().leave());
  EXPECT_FALSE(s.read_only_mode().leave());
  ASSERT_TRUE(insert());
  EXPECT_EQ(count_items(s), 2);
  EXPECT_EQ(s.read_only_mode().times_entered(), 1u);
}

TEST_F(StoreTest, SizeCapFailsTheWriteAndEntersReadOnlyMode) {
  StoreOptions options;
  options.max_database_bytes = 256 << 10;
  Store& s = open(options);
  create_table(s);
  const std::string row(16 << 10, 'x');
  Result<std::int64_t> last = 0;
  int written = 0;
  for (; written < 64 && last; ++written)  // 1 MiB of rows would be four times the cap
    last = s.write_sync([&](Transaction& tx) -> Result<std::int64_t> { return tx.exec("INSERT INTO items (v) VALUES (?)", {row}); });
  ASSERT_FALSE(last) << "the cap never stopped a write";
  EXPECT_GT(written, 4);
  EXPECT_TRUE(s.read_only_mode().active());
  EXPECT_NE(s.read_only_mode().reason().find("size limit"), std::string::npos) << s.read_only_mode().reason();
  // Reads keep working, and what was acknowledged is there.
  EXPECT_EQ(count_items(s), written - 1);
}

TEST_F(StoreTest, WriteQueueLimitRejectsImmediately) {
  StoreOptions options;
  options.queue_limit = 2;
  Store& s = open(options);
  create_table(s);
  Gate started, release;
  Completions blocker_done;
  block_writer(s, started, release, blocker_done);

  Completions accepted;
  auto insert = [](Transaction& tx) -> Result<void> {
    auto r = tx.exec("INSERT INTO items (v) VALUES ('q')");
    if (!r) return tl::unexpected(r.error());
    return ok();
  };
  s.write(insert, [&](Result<void> r) { accepted.add(std::move(r)); });
  s.write(insert, [&](Result<void> r) { accepted.add(std::move(r)); });
  std::optional<Result<void>> rejected;
  s.write(insert, [&](Result<void> r) { rejected.emplace(std::move(r)); });
  // `done` ran on this thread, before write() returned.
  ASSERT_TRUE(rejected.has_value());
  ASSERT_FALSE(*rejected);
  EXPECT_EQ(rejected->error().code, Errc::unavailable);

  release.open();
  ASSERT_TRUE(accepted.wait_for(2));
  for (auto& r : accepted.results()) EXPECT_TRUE(r);
  EXPECT_EQ(count_items(s), 3);
}

TEST_F(StoreTest, ReadQueueLimitRejectsImmediately) {
  StoreOptions options;
  options.readers = 1;
  options.queue_limit = 1;
  Store& s = open(options);
  create_table(s);
  Gate started, release;
  Completions done;
  s.read(
      [&](Transaction&) -> Result<void> {
        started.open();
        release.wait();
        return ok();
      },
      [&](Result<void> r) { done.add(std::move(r)); });
  ASSERT_TRUE(started.wait());
  s.read([](Transaction&) -> Result<void> { return ok(); }, [&](Result<void> r) { done.add(std::move(r)); });
  std::optional<Result<void>> rejected;
  s.read([](Transaction&) -> Result<void> { return ok(); }, [&](Result<void> r) { rejected.emplace(std::move(r)); });
  ASSERT_TRUE(rejected.has_value());
  ASSERT_FALSE(*rejected);
  EXPECT_EQ(rejected->error().code, Errc::unavailable);
  release.open();
  ASSERT_TRUE(done.wait_for(2));
}

TEST_F(StoreTest, WriteIsDurableBeforeDone) {
  Store& s = open();
  create_table(s);
  std::promise<std::string> seen;
  const std::string path = path_;
  s.write(
      [](Transaction& tx) -> Result<void> {
        auto r = tx.exec("INSERT INTO items (id, v) VALUES (42, 'durable')");
        if (!r) return tl::unexpected(r.error());
        return ok();
      },
      [&seen, path](Result<void> r) {
        if (!r) {
          seen.set_value("error: " + r.error().describe());
          return;
        }
        // A brand-new connection, outside the store, must already see the row.
        sqlite3* db = nullptr;
        std::string out = "missing";
        if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
          sqlite3_stmt* st = nullptr;
          if (sqlite3_prepare_v2(db, "SELECT v FROM items WHERE id = 42", -1, &st, nullptr) == SQLITE_OK &&
              sqlite3_step(st) == SQLITE_ROW) {
            out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
          }
          sqlite3_finalize(st);
        }
        sqlite3_close(db);
        seen.set_value(out);
      });
  auto f = seen.get_future();
  ASSERT_EQ(f.wait_for(kDeadline), std::future_status::ready);
  EXPECT_EQ(f.get(), "durable");
}

TEST_F(StoreTest, ReadsRunWhileAWriteIsInProgress) {
  Store& s = open();
  create_table(s);
  ASSERT_TRUE(s.write_sync<std::int64_t>([](Transaction& tx) { return tx.exec("INSERT INTO items (v) VALUES ('a')"); }));
  Gate started, release;
  Completions write_done;
  block_writer(s, started, release, write_done);  // holds the write transaction open
  // Readers see the last committed state, without waiting for the writer.
  EXPECT_EQ(count_items(s), 1);
  EXPECT_TRUE(s.ping());
  release.open();
  ASSERT_TRUE(write_done.wait_for(1));
  EXPECT_EQ(count_items(s), 2);
}

TEST_F(StoreTest, WritesFailOnReadTransactions) {
  Store& s = open();
  create_table(s);
  auto r = s.read_sync<std::int64_t>([](Transaction& tx) { return tx.exec("INSERT INTO items (v) VALUES ('no')"); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::internal);
  auto script = s.read_sync<void>([](Transaction& tx) { return tx.exec_script("DELETE FROM items"); });
  EXPECT_FALSE(script);
  EXPECT_EQ(count_items(s), 0);
}

TEST_F(StoreTest, IntegrityCheckAndPing) {
  Store& s = open();
  create_table(s);
  auto ic = s.integrity_check();
  ASSERT_TRUE(ic) << ic.error().describe();
  EXPECT_EQ(*ic, "ok");
  EXPECT_TRUE(s.ping());
}

TEST_F(StoreTest, ValuesRoundTripWithTheirTypes) {
  Store& s = open();
  ASSERT_TRUE(s.migrate("t", {{1, "v", "CREATE TABLE v (i INTEGER, r REAL, t TEXT, b BLOB, n TEXT)"}}));
  const std::string bytes("a\0b\xff", 4);
  ASSERT_TRUE(s.write_sync<std::int64_t>([&](Transaction& tx) {
    return tx.exec("INSERT INTO v VALUES (?, ?, ?, ?, ?)",
                   {std::int64_t{1} << 40, 2.5, std::string_view("text"), Blob{bytes}, std::nullopt});
  }));
  auto row = s.read_sync([](Transaction& tx) { return tx.query_one("SELECT i, r, t, b, n FROM v"); });
  ASSERT_TRUE(row);
  ASSERT_TRUE(row->has_value());
  const OwnedRow& r = **row;
  EXPECT_EQ(r.integer(0), std::int64_t{1} << 40);
  EXPECT_DOUBLE_EQ(r.real(1), 2.5);
  EXPECT_EQ(r.text(2), "text");
  EXPECT_EQ(r.blob(3), bytes);
  EXPECT_TRUE(r.is_null(4));
  EXPECT_FALSE(r.is_null(0));
  auto none = s.read_sync([](Transaction& tx) { return tx.query_one("SELECT i FROM v WHERE i = 0"); });
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  auto wrong = s.read_sync([](Transaction& tx) { return tx.query_one("SELECT i FROM v WHERE i = ?"); });
  ASSERT_FALSE(wrong);  // parameter count mismatch is a bug, not a silent NULL
}

TEST_F(StoreTest, ConstraintViolationsMapToErrc) {
  Store& s = open();
  ASSERT_TRUE(s.migrate("t", {{1, "fk", "CREATE TABLE p (id INTEGER PRIMARY KEY);"
                                       "CREATE TABLE c (p INTEGER NOT NULL REFERENCES p(id))"}}));
  ASSERT_TRUE(s.write_sync<std::int64_t>([](Transaction& tx) { return tx.exec("INSERT INTO p VALUES (1)"); }));
  auto dup = s.write_sync<std::int64_t>([](Transaction& tx) { return tx.exec("INSERT INTO p VALUES (1)"); });
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, Errc::already_exists);
  auto fk = s.write_sync<std::int64_t>([](Transaction& tx) { return tx.exec("INSERT INTO c VALUES (9)"); });
  ASSERT_FALSE(fk);
  EXPECT_EQ(fk.error().code, Errc::invalid_argument);
}

TEST_F(StoreTest, BlockingCallFromStoreThreadIsRefused) {
  Store& s = open();
  create_table(s);
  auto r = s.write_sync<void>([&s](Transaction&) -> Result<void> {
    auto inner = s.read_sync<void>([](Transaction&) { return ok(); });
    if (inner) return fail(Errc::internal, "nested blocking call was allowed");
    EXPECT_EQ(inner.error().code, Errc::internal);
    return ok();
  });
  EXPECT_TRUE(r) << r.error().describe();
}

TEST_F(StoreTest, CloseDrainsQueuedJobsAndRejectsLaterOnes) {
  Store& s = open();
  create_table(s);
  Gate started, release;
  Completions blocker_done;
  block_writer(s, started, release, blocker_done);
  Completions done;
  constexpr int kJobs = 100;
  for (int i = 0; i < kJobs; ++i) {
    s.write([](Transaction& tx) -> Result<void> {
              auto r = tx.exec("INSERT INTO items (v) VALUES ('drained')");
              if (!r) return tl::unexpected(r.error());
              return ok();
            },
            [&](Result<void> r) { done.add(std::move(r)); });
  }
  release.open();
  s.close();
  auto results = done.results();
  ASSERT_EQ(results.size(), static_cast<std::size_t>(kJobs));  // all ran before close() returned
  for (auto& r : results) EXPECT_TRUE(r);
  std::optional<Result<void>> late;
  s.write([](Transaction&) { return ok(); }, [&](Result<void> r) { late.emplace(std::move(r)); });
  ASSERT_TRUE(late.has_value());
  EXPECT_EQ(late->error().code, Errc::unavailable);
  std::optional<Result<void>> late_read;
  s.read([](Transaction&) { return ok(); }, [&](Result<void> r) { late_read.emplace(std::move(r)); });
  ASSERT_TRUE(late_read.has_value());
  EXPECT_EQ(late_read->error().code, Errc::unavailable);

  Store& reopened = open();
  EXPECT_EQ(count_items(reopened), kJobs + 1);
}

}  // namespace
}  // namespace hearth::store


namespace hearth::store {
namespace {

// Backups (incident I05): a snapshot is one committed state, taken while writes go on.
TEST_F(StoreTest, SnapshotIsConsistentWhileWritesContinue) {
  Store& s = open();
  create_table(s);
  for (int i = 0; i < 100; ++i)
    ASSERT_TRUE(s.write_sync([i](Transaction& tx) -> Result<void> {
      auto r = tx.exec("INSERT INTO items (v) VALUES (?)", {fmt::format("before {}", i)});
      if (!r) return tl::unexpected(r.error());
      return ok();
    }));
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    while (!stop)
      (void)s.write_sync([](Transaction& tx) -> Result<void> {
        auto r = tx.exec("INSERT INTO items (v) VALUES ('during')");
        if (!r) return tl::unexpected(r.error());
        return ok();
      });
  });
  std::string copy = (dir_ / "copy.db").string();
  auto r = s.snapshot_to(copy);
  stop = true;
  writer.join();
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_FALSE(s.snapshot_to(copy)) << "an existing target is refused";
  StoreOptions o;
  o.path = copy;
  auto c = Store::open_sqlite(o, logger_, metrics_);
  ASSERT_TRUE(c) << c.error().describe();
  auto check = (*c)->integrity_check();
  ASSERT_TRUE(check);
  EXPECT_EQ(*check, "ok");
  auto n = (*c)->read_sync([](Transaction& tx) -> Result<std::int64_t> {
    auto row = tx.query_one("SELECT count(*) FROM items WHERE v LIKE 'before %'");
    if (!row) return tl::unexpected(row.error());
    return (*row)->integer(0);
  });
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 100);
}

}  // namespace
}  // namespace hearth::store

namespace hearth::store {
namespace {

// The writer joins its WAL writes into runs (coalescing_vfs.h). Commits of every size, from
// one small row to runs far past one write call's limit and rows that spill onto overflow
// pages, must be visible to an outside connection as soon as they are acknowledged, and
// must read back byte for byte after the store is closed and opened again.
TEST_F(StoreTest, CommitsOfEverySizeAreVisibleAtOnceAndSurviveReopen) {
  Store& s = open();
  create_table(s);
  auto value = [](int id, std::size_t size) {
    std::string v(size, '\0');
    for (std::size_t i = 0; i < size; ++i) v[i] = static_cast<char>('a' + (id * 31 + i * 7) % 26);
    return v;
  };
  auto outside_sum = [&](int from, int to) {  // length of the rows' values, by a fresh connection
    sqlite3* db = nullptr;
    std::int64_t sum = -1;
    if (sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v2(db, "SELECT total(length(v)) FROM items WHERE id BETWEEN ? AND ?", -1, &st, nullptr) ==
          SQLITE_OK) {
        sqlite3_bind_int(st, 1, from);
        sqlite3_bind_int(st, 2, to);
        if (sqlite3_step(st) == SQLITE_ROW) sum = sqlite3_column_int64(st, 0);
      }
      sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return sum;
  };
  struct Batch {
    int first, rows;
    std::size_t size;
  };
  const std::vector<Batch> batches = {{1, 1, 10}, {100, 400, 3000}, {1000, 1, 200'000}, {2000, 3, 50}};
  for (const auto& b : batches) {
    auto w = s.write_sync([&](Transaction& tx) -> Result<bool> {
      for (int id = b.first; id < b.first + b.rows; ++id) {
        auto r = tx.exec("INSERT INTO items (id, v) VALUES (?, ?)", {id, value(id, b.size)});
        if (!r) return tl::unexpected(r.error());
      }
      return true;
    });
    ASSERT_TRUE(w) << w.error().describe();
    EXPECT_EQ(outside_sum(b.first, b.first + b.rows - 1), static_cast<std::int64_t>(b.rows * b.size));
  }
  Store& again = open();
  for (const auto& b : batches) {
    for (int id = b.first; id < b.first + b.rows; ++id) {
      auto v = again.read_sync([&](Transaction& tx) -> Result<std::string> {
        auto row = tx.query_one("SELECT v FROM items WHERE id = ?", {id});
        if (!row) return tl::unexpected(row.error());
        return *row ? std::string((*row)->text(0)) : std::string("missing");
      });
      ASSERT_TRUE(v);
      ASSERT_EQ(*v, value(id, b.size)) << "row " << id;
    }
  }
}

}  // namespace
}  // namespace hearth::store
