// e2e storage on a real SQLite store: claims hand out each one-time key once even when
// they run concurrently, then the fallback key; to-device queues acknowledge by id; the
// device-list change computation follows shared rooms (changed, newly shared, left).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <set>
#include <thread>

#include "core/log.h"
#include "core/metrics.h"
#include "matrix/e2e_store.h"
#include "matrix/room_store.h"

namespace hearth::matrix {
namespace {

std::string fmt_key(bool verified, int fmi, int fc) {
  return std::string(R"({"is_verified":)") + (verified ? "true" : "false") + R"(,"first_message_index":)" +
         std::to_string(fmi) + R"(,"forwarded_count":)" + std::to_string(fc) + R"(,"session_data":{}})";
}

struct E2eStoreTest : ::testing::Test {
  std::string dir = (std::filesystem::temp_directory_path() /
                     ("hearth-e2e-" + std::to_string(::getpid()) + "-" +
                      ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                        .string();
  Logger log{LogLevel::error, LogFormat::text};
  MetricsRegistry metrics;
  std::unique_ptr<store::Store> db;

  void SetUp() override {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    auto s = store::Store::open_sqlite({dir + "/db.sqlite", 2, 64, 1000}, log, metrics);
    ASSERT_TRUE(s) << s.error().describe();
    db = std::move(*s);
    ASSERT_TRUE(db->migrate("matrix", matrix_migrations()));
  }
  void TearDown() override {
    db.reset();
    std::filesystem::remove_all(dir);
  }
  template <typename F>
  auto write(F f) {
    auto r = db->write_sync(f);
    EXPECT_TRUE(r) << r.error().describe();
    return *r;
  }
  // Sets a membership row as RoomStore would (stream = the event's position).
  void member(const std::string& room, const std::string& user, const std::string& m, std::int64_t stream) {
    write([&](store::Transaction& tx) {
      return tx.exec(
          "INSERT INTO matrix_members(room_id, user_id, membership, stream) VALUES (?, ?, ?, ?) "
          "ON CONFLICT(room_id, user_id) DO UPDATE SET membership = excluded.membership, stream = excluded.stream",
          {room, user, m, stream});
    });
  }
  e2e::DeviceListChanges changes(const std::string& user, std::int64_t since_stream, std::int64_t since_pos) {
    auto r = db->read_sync(
        [&](store::Transaction& tx) { return e2e::device_list_changes(tx, user, since_stream, since_pos); });
    EXPECT_TRUE(r);
    return *r;
  }
};

TEST_F(E2eStoreTest, ConcurrentClaimsTakeEachOneTimeKeyOnceThenTheFallbackKey) {
  constexpr int kKeys = 20, kThreads = 4, kClaimsPerThread = 6;  // 24 claims > 20 keys
  JsonValue otks = JsonValue::object();
  for (int i = 0; i < kKeys; ++i) otks.set("signed_curve25519:K" + std::to_string(100 + i), JsonValue::string("v"));
  JsonValue fallback = JsonValue::object();
  fallback.set("signed_curve25519:FB", JsonValue::string("fb"));
  write([&](store::Transaction& tx) -> Result<bool> {
    if (auto a = e2e::add_one_time_keys(tx, "@a:hs", "D", otks); !a) return tl::unexpected(a.error());
    if (auto f = e2e::set_fallback_keys(tx, "@a:hs", "D", fallback); !f) return tl::unexpected(f.error());
    return true;
  });
  std::mutex mu;
  std::vector<std::string> got;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < kClaimsPerThread; ++i) {
        auto k = db->write_sync(
            [&](store::Transaction& tx) { return e2e::claim_key(tx, "@a:hs", "D", "signed_curve25519"); });
        ASSERT_TRUE(k && *k);
        std::lock_guard lock(mu);
        got.push_back((*k)->key_id);
      }
    });
  for (auto& t : threads) t.join();
  std::multiset<std::string> all(got.begin(), got.end());
  EXPECT_EQ(all.count("signed_curve25519:FB"), std::size_t{kThreads * kClaimsPerThread - kKeys});
  std::set<std::string> distinct(got.begin(), got.end());
  EXPECT_EQ(distinct.size(), std::size_t{kKeys + 1});  // every one-time key once, plus the fallback
  auto counts = db->read_sync([&](store::Transaction& tx) { return e2e::one_time_key_counts(tx, "@a:hs", "D"); });
  ASSERT_TRUE(counts);
  EXPECT_TRUE(counts->empty());
  auto unused = db->read_sync([&](store::Transaction& tx) { return e2e::unused_fallback_key_types(tx, "@a:hs", "D"); });
  ASSERT_TRUE(unused);
  EXPECT_TRUE(unused->empty());  // used, still handed out until replaced
  // Re-uploading the same fallback key keeps it used; a new one is unused.
  write([&](store::Transaction& tx) -> Result<bool> {
    if (auto f = e2e::set_fallback_keys(tx, "@a:hs", "D", fallback); !f) return tl::unexpected(f.error());
    return true;
  });
  unused = db->read_sync([&](store::Transaction& tx) { return e2e::unused_fallback_key_types(tx, "@a:hs", "D"); });
  EXPECT_TRUE(unused->empty());
  JsonValue fresh = JsonValue::object();
  fresh.set("signed_curve25519:FB2", JsonValue::string("fb2"));
  write([&](store::Transaction& tx) -> Result<bool> {
    if (auto f = e2e::set_fallback_keys(tx, "@a:hs", "D", fresh); !f) return tl::unexpected(f.error());
    return true;
  });
  unused = db->read_sync([&](store::Transaction& tx) { return e2e::unused_fallback_key_types(tx, "@a:hs", "D"); });
  EXPECT_EQ(*unused, std::vector<std::string>{"signed_curve25519"});
  // No keys at all: nothing.
  auto none = db->write_sync([&](store::Transaction& tx) { return e2e::claim_key(tx, "@a:hs", "OTHER", "signed_curve25519"); });
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
}

TEST_F(E2eStoreTest, ToDeviceTransactionsAreIdempotentAndAcknowledgedById) {
  auto first = write([&](store::Transaction& tx) { return e2e::claim_to_device_txn(tx, "@s:hs", "SD", "t1"); });
  auto again = write([&](store::Transaction& tx) { return e2e::claim_to_device_txn(tx, "@s:hs", "SD", "t1"); });
  auto other_device = write([&](store::Transaction& tx) { return e2e::claim_to_device_txn(tx, "@s:hs", "SD2", "t1"); });
  EXPECT_TRUE(first);
  EXPECT_FALSE(again);
  EXPECT_TRUE(other_device);
  for (auto c : {"1", "2", "3"})
    write([&](store::Transaction& tx) -> Result<bool> {
      if (auto q = e2e::enqueue_to_device(tx, "@r:hs", "RD", "@s:hs", "m.test", c); !q) return tl::unexpected(q.error());
      return true;
    });
  auto pending = db->read_sync([&](store::Transaction& tx) { return e2e::pending_to_device(tx, "@r:hs", "RD", 0, 2); });
  ASSERT_TRUE(pending);
  ASSERT_EQ(pending->size(), 2u);
  auto deleted = write([&](store::Transaction& tx) { return e2e::ack_to_device(tx, "@r:hs", "RD", (*pending)[1].id); });
  EXPECT_EQ(deleted, 2);
  auto rest = db->read_sync([&](store::Transaction& tx) { return e2e::pending_to_device(tx, "@r:hs", "RD", 0, 10); });
  ASSERT_EQ(rest->size(), 1u);
  EXPECT_EQ((*rest)[0].content, "3");
}

TEST_F(E2eStoreTest, DeviceListChangesFollowSharedRooms) {
  member("!r:hs", "@me:hs", "join", 1);
  member("!r:hs", "@friend:hs", "join", 2);
  member("!other:hs", "@stranger:hs", "join", 3);
  // Keys change for a room mate and a stranger: only the room mate (and oneself) count.
  std::int64_t pos0 = write([&](store::Transaction& tx) { return e2e::device_list_position(tx); });
  write([&](store::Transaction& tx) { return e2e::bump_device_list(tx, "@friend:hs"); });
  write([&](store::Transaction& tx) { return e2e::bump_device_list(tx, "@stranger:hs"); });
  auto c = changes("@me:hs", 3, pos0);
  EXPECT_EQ(c.changed, (std::set<std::string>{"@friend:hs"}));
  EXPECT_TRUE(c.left.empty());
  std::int64_t pos1 = write([&](store::Transaction& tx) { return e2e::device_list_position(tx); });
  EXPECT_TRUE(changes("@me:hs", 3, pos1).changed.empty());
  // The stranger joins my room: newly shared, so "changed" without any key change.
  member("!r:hs", "@stranger:hs", "join", 4);
  c = changes("@me:hs", 3, pos1);
  EXPECT_EQ(c.changed, (std::set<std::string>{"@stranger:hs"}));
  // I join a room where a third user is: they are newly shared too.
  member("!third:hs", "@third:hs", "join", 5);
  member("!third:hs", "@me:hs", "join", 6);
  c = changes("@me:hs", 5, pos1);
  EXPECT_EQ(c.changed, (std::set<std::string>{"@third:hs"}));
  // The friend leaves the only room we shared: "left".
  member("!r:hs", "@friend:hs", "leave", 7);
  c = changes("@me:hs", 6, pos1);
  EXPECT_EQ(c.left, (std::set<std::string>{"@friend:hs"}));
  EXPECT_TRUE(c.changed.empty());
  // I leave !third: the third user left my device lists; the stranger (still in !r) did not.
  member("!third:hs", "@me:hs", "leave", 8);
  c = changes("@me:hs", 7, pos1);
  EXPECT_EQ(c.left, (std::set<std::string>{"@third:hs"}));
  // My own key changes are reported to me.
  write([&](store::Transaction& tx) { return e2e::bump_device_list(tx, "@me:hs"); });
  EXPECT_TRUE(changes("@me:hs", 8, pos1).changed.count("@me:hs"));
}

TEST(BackupKeys, VerifiedThenLowerFirstIndexThenFewerForwardsWins) {
  auto k = [](bool verified, int fmi, int fc) {
    return *parse_json(fmt_key(verified, fmi, fc));
  };
  EXPECT_TRUE(e2e::backup_key_is_better(k(true, 9, 9), k(false, 0, 0)));
  EXPECT_FALSE(e2e::backup_key_is_better(k(false, 0, 0), k(true, 9, 9)));
  EXPECT_TRUE(e2e::backup_key_is_better(k(false, 1, 9), k(false, 2, 0)));
  EXPECT_FALSE(e2e::backup_key_is_better(k(false, 3, 0), k(false, 2, 0)));
  EXPECT_TRUE(e2e::backup_key_is_better(k(true, 2, 0), k(true, 2, 1)));
  EXPECT_FALSE(e2e::backup_key_is_better(k(true, 2, 1), k(true, 2, 1)));  // equal: keep the stored one
}

}  // namespace
}  // namespace hearth::matrix
