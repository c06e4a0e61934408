// The backup container and restore (incident I05) on a fake data directory; the database
// snapshot is a plain copy here (the real one is Store::snapshot_to, tested in store_test).
#include "ops/backup.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
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

class BackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "hearth-backup-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    data_ = root_ / "data";
    put(data_ / "hearth.db", "database v1");
    put(data_ / "hearth.db-wal", "live wal: never backed up");
    put(data_ / "tls" / "localhost.key", "key");
    put(data_ / "blobs" / "aa" / "aa1", std::string(100000, 'x'));
    put(data_ / "status" / "index.html", "regenerated, not backed up");
  }
  void TearDown() override { fs::remove_all(root_); }

  Result<BackupReport> backup(const std::string& name, std::optional<BackupManifest> since = std::nullopt) {
    BackupOptions o;
    o.data_dir = data_.string();
    o.output = (root_ / name).string();
    o.since = std::move(since);
    o.snapshot_database = [this](const std::string& path) -> Result<void> {
      fs::copy_file(data_ / "hearth.db", path);
      return ok();
    };
    return create_backup(o);
  }

  fs::path root_, data_;
};

TEST_F(BackupTest, FullAndIncrementalRestoreTheDataDirectory) {
  auto full = backup("full.bak");
  ASSERT_TRUE(full) << full.error().describe();
  EXPECT_TRUE(full->manifest.full());
  EXPECT_EQ(full->manifest.sequence, 0u);
  EXPECT_FALSE(fs::exists(root_ / "full.bak.partial"));
  EXPECT_FALSE(fs::exists(data_ / ".backup-tmp"));
  std::vector<std::string> paths;
  for (const auto& f : full->manifest.files) paths.push_back(f.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"blobs/aa/aa1", "hearth.db", "tls/localhost.key"}));

  put(data_ / "hearth.db", "database v2");
  put(data_ / "blobs" / "bb" / "bb1", "new blob");
  fs::remove(data_ / "tls" / "localhost.key");
  auto incr = backup("incr.bak", full->manifest);
  ASSERT_TRUE(incr) << incr.error().describe();
  EXPECT_EQ(incr->manifest.sequence, 1u);
  EXPECT_EQ(incr->manifest.parent_id, full->manifest.backup_id);
  EXPECT_EQ(incr->manifest.base_id, full->manifest.backup_id);
  EXPECT_EQ(incr->files_unchanged, 1);  // blobs/aa/aa1
  EXPECT_EQ(incr->files_included, 2);   // the database (always) and the new blob

  auto m = read_backup_manifest((root_ / "incr.bak").string());
  ASSERT_TRUE(m) << m.error().describe();
  EXPECT_EQ(m->backup_id, incr->manifest.backup_id);
  auto parsed = BackupManifest::parse(m->to_json());
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->files.size(), m->files.size());

  auto r = restore_backup({(root_ / "full.bak").string(), (root_ / "incr.bak").string()}, (root_ / "new").string());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(get(root_ / "new" / "hearth.db"), "database v2");
  EXPECT_EQ(get(root_ / "new" / "blobs" / "aa" / "aa1"), std::string(100000, 'x'));
  EXPECT_EQ(get(root_ / "new" / "blobs" / "bb" / "bb1"), "new blob");
  EXPECT_FALSE(fs::exists(root_ / "new" / "tls" / "localhost.key")) << "deleted before the incremental";
  EXPECT_FALSE(fs::exists(root_ / "new" / "hearth.db-wal"));
  EXPECT_FALSE(fs::exists(root_ / "new" / "status"));

  // Out of order, an incremental alone, a non-empty target: refused.
  EXPECT_FALSE(restore_backup({(root_ / "incr.bak").string()}, (root_ / "x").string()));
  EXPECT_FALSE(restore_backup({(root_ / "full.bak").string()}, (root_ / "new").string()));
  auto again = backup("again.bak");
  ASSERT_TRUE(again);
  EXPECT_FALSE(restore_backup({(root_ / "full.bak").string(), (root_ / "again.bak").string()}, (root_ / "y").string()));
  EXPECT_FALSE(fs::exists(root_ / "x"));
  EXPECT_FALSE(fs::exists(root_ / "y"));
}

TEST_F(BackupTest, TruncatedOrDamagedBackupIsRefusedAndNothingIsLeft) {
  ASSERT_TRUE(backup("full.bak"));
  std::string bytes = get(root_ / "full.bak");
  for (std::size_t cut : {std::size_t{0}, std::size_t{10}, bytes.size() / 2, bytes.size() - 1}) {
    put(root_ / "cut.bak", bytes.substr(0, cut));
    auto r = restore_backup({(root_ / "cut.bak").string()}, (root_ / "new").string());
    ASSERT_FALSE(r) << "cut at " << cut;
    EXPECT_EQ(r.error().code, Errc::corrupt);
  }
  std::string damaged = bytes;
  damaged[damaged.size() / 2] ^= 0x40;
  put(root_ / "bad.bak", damaged);
  auto r = restore_backup({(root_ / "bad.bak").string()}, (root_ / "new").string());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("bad.bak"), std::string::npos) << r.error().message;
  for (const auto& e : fs::directory_iterator(root_))
    EXPECT_EQ(e.path().filename().string().find(".new.restore-"), std::string::npos) << "temporary directory left";
  EXPECT_FALSE(fs::exists(root_ / "new"));
}

TEST_F(BackupTest, SecondBackupIsRefusedWhileOneRuns) {
  auto held = BackupLock::acquire(data_.string());
  ASSERT_TRUE(held);
  auto r = backup("second.bak");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::unavailable);
  EXPECT_NE(r.error().message.find("a backup is already running"), std::string::npos);
  EXPECT_FALSE(fs::exists(root_ / "second.bak"));
  held = BackupLock();
  EXPECT_TRUE(backup("second.bak"));
}

TEST(BackupManifestTest, RefusesUnsafePaths) {
  BackupManifest m;
  m.backup_id = m.base_id = "x";
  m.files.push_back({"../etc/passwd", 1, 0600, "00", true});
  auto r = BackupManifest::parse(m.to_json());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::corrupt);
}

}  // namespace
}  // namespace hearth::ops
