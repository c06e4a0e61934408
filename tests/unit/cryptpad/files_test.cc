// CryptpadFiles on a real store and file store in a temporary directory, with a manual
// clock: the upload steps, what a failure leaves behind (nothing), cookie and idle expiry.
#include "cryptpad/files.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "blobs/blobs.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "cryptpad/channel_store.h"
#include "store/store.h"

namespace hearth::cryptpad {
namespace {

class CryptpadFilesTest : public ::testing::Test {
 protected:
  std::string dir = (std::filesystem::temp_directory_path() / ("hearth-cpf-" + std::to_string(::getpid()))).string();
  Logger log{LogLevel::error, LogFormat::text};
  MetricsRegistry metrics;
  ManualClock clock;
  std::unique_ptr<store::Store> db;
  std::unique_ptr<blobs::BlobStore> blob_store;
  std::unique_ptr<CryptpadFiles> files;
  const std::string key = std::string(43, 'k') + "=";
  const std::string id = std::string(48, 'a');

  void SetUp() override {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    auto s = store::Store::open_sqlite({dir + "/db.sqlite", 1, 64, 1000}, log, metrics);
    ASSERT_TRUE(s) << s.error().describe();
    db = std::move(*s);
    ASSERT_TRUE(ChannelStore(*db).migrate());
    blob_store = std::make_unique<blobs::BlobStore>(*db, clock, blobs::BlobOptions{dir + "/blobs"});
    ASSERT_TRUE(blob_store->open());
    files = std::make_unique<CryptpadFiles>(*db, clock, blob_store.get(), 1000);
  }
  void TearDown() override {
    files.reset();
    blob_store.reset();
    db.reset();
    std::filesystem::remove_all(dir);
  }
  std::size_t staged() {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(blob_store->staging_dir())) ++n;
    return n;
  }
};

TEST_F(CryptpadFilesTest, ChunksBecomeOneStoredFile) {
  ASSERT_EQ(files->status(key, 10, 100), false);
  std::string cookie = files->new_cookie(key);
  auto next = files->append_chunk(key, cookie, "hello");
  ASSERT_TRUE(next) << next.error();
  EXPECT_EQ(files->append_chunk(key, cookie, "again").error(), "INVALID_COOKIE");  // one use
  ASSERT_TRUE(files->append_chunk(key, *next, "world"));
  EXPECT_EQ(staged(), 1u);
  EXPECT_EQ(files->status(key, 10, 100), true);  // pending
  auto done = files->complete(key, id, true);
  ASSERT_TRUE(done) << done.error();
  auto f = files->find(id);
  ASSERT_TRUE(f && *f);
  EXPECT_EQ((*f)->owners, std::vector<std::string>{key});
  EXPECT_EQ((*f)->size, 10);
  EXPECT_EQ(files->read(**f).value(), "helloworld");
  EXPECT_EQ(staged(), 0u);
  // The same id again.
  ASSERT_EQ(files->status(key, 1, 100), false);
  ASSERT_TRUE(files->append_ws(key, "x"));
  EXPECT_EQ(files->complete(key, id, true).error(), "EEXISTS");
  EXPECT_EQ(staged(), 0u);
}

TEST_F(CryptpadFilesTest, SizeChecksLeaveNothingBehind) {
  EXPECT_EQ(files->status(key, -1, 100).error(), "E_INVALID_SIZE");
  EXPECT_EQ(files->status(key, 1001, 5000).error(), "TOO_LARGE");
  EXPECT_EQ(files->status(key, 100, 100).error(), "NOT_ENOUGH_SPACE");
  EXPECT_EQ(files->append_ws(key, "x").error(), "NOT_READY");
  ASSERT_EQ(files->status(key, 4, 100), false);
  ASSERT_TRUE(files->append_ws(key, "abc"));
  EXPECT_EQ(files->append_ws(key, "de").error(), "E_OVER_LIMIT");
  EXPECT_EQ(staged(), 0u);
  EXPECT_EQ(files->complete(key, id, false).error(), "E_NO_UPLOAD");
  ASSERT_EQ(files->status(key, 4, 100), false);
  ASSERT_TRUE(files->append_ws(key, "abc"));
  EXPECT_EQ(files->complete(key, id, false).error(), "E_SIZE_MISMATCH");
  EXPECT_EQ(staged(), 0u);
  auto f = files->find(id);
  ASSERT_TRUE(f);
  EXPECT_FALSE(*f);
}

TEST_F(CryptpadFilesTest, CookiesExpireAndIdleUploadsAreDropped) {
  ASSERT_EQ(files->status(key, 10, 100), false);
  std::string cookie = files->new_cookie(key);
  ASSERT_TRUE(files->append_chunk(key, cookie, "abc"));
  std::string stale = files->new_cookie(key);
  clock.advance_ms(5 * 60 * 1000 + 1);
  EXPECT_EQ(files->append_chunk(key, stale, "def").error(), "INVALID_COOKIE");
  EXPECT_EQ(staged(), 1u);
  // An hour later, other users' lookups sweep the table: the abandoned stage goes.
  clock.advance_ms(60 * 60 * 1000 + 1);
  for (int i = 0; i < 70; ++i) (void)files->new_cookie("other" + std::to_string(i));
  EXPECT_EQ(staged(), 0u);
  EXPECT_EQ(files->status(key, 10, 100), false);  // not pending any more
}

TEST_F(CryptpadFilesTest, ReadOnlyModeRefusesUploadsAndDropsTheStage) {
  ASSERT_EQ(files->status(key, 10, 100), false);
  ASSERT_TRUE(files->append_ws(key, "abc"));
  ASSERT_EQ(staged(), 1u);
  db->read_only_mode().enter("test: disk reserve reached");
  EXPECT_EQ(files->append_ws(key, "def").error(), "E_READ_ONLY");
  EXPECT_EQ(staged(), 0u);
  EXPECT_EQ(files->status(key, 10, 100).error(), "E_READ_ONLY");
  db->read_only_mode().leave();
  ASSERT_EQ(files->status(key, 3, 100), false);
  ASSERT_TRUE(files->append_ws(key, "ghi"));
  ASSERT_TRUE(files->complete(key, id, false));
}

}  // namespace
}  // namespace hearth::cryptpad
