#include "blobs/blobs.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/store.h"

namespace hearth::blobs {
namespace {

struct BlobStoreTest : ::testing::Test {
  std::string dir = (std::filesystem::temp_directory_path() /
                     ("hearth-blobs-" + std::to_string(::getpid()) + "-" +
                      ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                        .string();
  Logger log{LogLevel::error, LogFormat::text};
  MetricsRegistry metrics;
  ManualClock clock;
  std::unique_ptr<store::Store> db;
  std::unique_ptr<BlobStore> blobs;

  void SetUp() override {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    auto s = store::Store::open_sqlite({dir + "/db.sqlite", 1, 64, 1000}, log, metrics);
    ASSERT_TRUE(s);
    db = std::move(*s);
    blobs = std::make_unique<BlobStore>(*db, clock, BlobOptions{dir + "/blobs", 1000, 2500});
    ASSERT_TRUE(blobs->open());
  }
  void TearDown() override {
    blobs.reset();
    db.reset();
    std::filesystem::remove_all(dir);
  }
};

TEST_F(BlobStoreTest, StoresDurablyByContentAndReadsBack) {
  auto a = blobs->put("alice@x", "a.txt", "text/plain", "same bytes", 0);
  auto b = blobs->put("bob@x", "b.txt", "text/plain", "same bytes", 0);
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->id, b->id) << "two references";
  EXPECT_EQ(a->hash, b->hash) << "one file";
  EXPECT_TRUE(std::filesystem::exists(blobs->path_of(a->hash)));
  auto got = blobs->get(a->id);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(*blobs->read(**got), "same bytes");
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/blobs/tmp"));
}

TEST_F(BlobStoreTest, FileLimitAndDailyQuota) {
  EXPECT_EQ(blobs->put("alice@x", "big", "", std::string(1001, 'x'), 0).error().code, Errc::invalid_argument);
  ASSERT_TRUE(blobs->put("alice@x", "1", "", std::string(1000, 'a'), 0));
  ASSERT_TRUE(blobs->put("alice@x", "2", "", std::string(1000, 'b'), 0));
  auto third = blobs->put("alice@x", "3", "", std::string(1000, 'c'), 0);
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, Errc::resource_exhausted);
  EXPECT_EQ(*blobs->used_today("alice@x"), 2000);
  // The refused file did not stay on disk.
  int files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir + "/blobs")) files += e.is_regular_file();
  EXPECT_EQ(files, 2) << "only the two stored files";
  clock.advance_ms(86'400'001);
  EXPECT_TRUE(blobs->put("alice@x", "3", "", std::string(1000, 'c'), 0)) << "a day later the quota is free again";
}

TEST_F(BlobStoreTest, PurgeDropsExpiredReferencesAndOrphanedFilesOnly) {
  auto kept = blobs->put("alice@x", "k", "", "shared", 0);
  auto expiring = blobs->put("bob@x", "e", "", "shared", clock.now_ms() + 1000);
  auto alone = blobs->put("bob@x", "a", "", "alone", clock.now_ms() + 1000);
  ASSERT_TRUE(kept && expiring && alone);
  clock.advance_ms(2000);
  EXPECT_FALSE(*blobs->get(expiring->id)) << "expired references are not served";
  EXPECT_EQ(*blobs->purge_expired(clock.now_ms(), 1), 1) << "batches are honoured";
  EXPECT_EQ(*blobs->purge_expired(clock.now_ms(), 10), 1);
  EXPECT_TRUE(std::filesystem::exists(blobs->path_of(kept->hash))) << "still referenced by alice";
  EXPECT_FALSE(std::filesystem::exists(blobs->path_of(alone->hash)));
  ASSERT_TRUE(blobs->forget_owner("alice@x"));
  EXPECT_FALSE(std::filesystem::exists(blobs->path_of(kept->hash)));
}

namespace {
std::string stage(BlobStore& blobs, const std::string& name, const std::string& bytes) {
  std::string path = blobs.staging_dir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  return path;
}
}  // namespace

TEST_F(BlobStoreTest, PutFileAdoptsAStagedFileAndRemoveDropsIt) {
  auto a = blobs->put_file("carol@x", "c", "application/octet-stream", stage(*blobs, "s1", "staged bytes"), 0);
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->size, 12);
  EXPECT_FALSE(std::filesystem::exists(blobs->staging_dir() + "/s1"));
  EXPECT_EQ(blobs->read(*a).value(), "staged bytes");
  // Same bytes again: one file, two references; the second staged file is dropped.
  auto b = blobs->put_file("carol@x", "d", "application/octet-stream", stage(*blobs, "s2", "staged bytes"), 0);
  ASSERT_TRUE(b);
  EXPECT_EQ(a->hash, b->hash);
  EXPECT_FALSE(std::filesystem::exists(blobs->staging_dir() + "/s2"));
  ASSERT_TRUE(blobs->remove(a->id));
  EXPECT_TRUE(std::filesystem::exists(blobs->path_of(a->hash))) << "b still names it";
  ASSERT_TRUE(blobs->remove(b->id));
  EXPECT_FALSE(std::filesystem::exists(blobs->path_of(a->hash)));
  // Over the per-file limit: refused, and the staged file is gone anyway.
  auto big = blobs->put_file("carol@x", "e", "x", stage(*blobs, "s3", std::string(1001, 'x')), 0);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, Errc::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(blobs->staging_dir() + "/s3"));
}

TEST_F(BlobStoreTest, ImportKeepsTheOriginalTimeIgnoresLimitsAndIsIdempotent) {
  const std::int64_t long_ago = clock.now_ms() - 30 * 86'400'000LL;
  // Bigger than the per-file limit (1000) and the daily quota (2500): an import is not a
  // new upload.
  std::string big(3000, 'm');
  auto a = blobs->import_file("matrix-media-abc", "dave@x", "old.bin", "image/png", stage(*blobs, "i1", big), long_ago, 0);
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->id, "matrix-media-abc");
  EXPECT_EQ(a->created_ms, long_ago);
  EXPECT_EQ(*blobs->used_today("dave@x"), 0) << "old bytes do not count against today's quota";
  EXPECT_FALSE(std::filesystem::exists(blobs->staging_dir() + "/i1"));
  // Run again (a migration interrupted after the import): the same reference, nothing new.
  auto again = blobs->import_file("matrix-media-abc", "dave@x", "old.bin", "image/png", stage(*blobs, "i2", big), long_ago, 0);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->hash, a->hash);
  EXPECT_FALSE(std::filesystem::exists(blobs->staging_dir() + "/i2"));
  auto got = blobs->get("matrix-media-abc");
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(*blobs->read(**got), big);
  // The owner's new uploads still see the full daily quota.
  EXPECT_TRUE(blobs->put("dave@x", "new", "", std::string(1000, 'n'), 0));
}

}  // namespace
}  // namespace hearth::blobs
