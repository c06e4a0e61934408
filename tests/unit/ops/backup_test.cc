// The backup container and restore (incident I05) on a fake data directory; the database
// snapshot is a plain copy here (the real one is Store::snapshot_to, tested in store_test).
#include "ops/backup.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <random>
#include <thread>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <zstd.h>

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

// The database is stored in 64 KiB chunks; an incremental holds only the chunks that
// changed, and a chain with growth and shrink restores byte for byte.
TEST_F(BackupTest, IncrementalsStoreOnlyChangedDatabaseChunksAndRestoreThroughAChain) {
  constexpr std::size_t kChunkBytes = 64 << 10;
  std::string db(16 * kChunkBytes, '\0');
  std::mt19937 random(7);  // incompressible, like a database's pages after zstd
  for (auto& c : db) c = static_cast<char>(random());
  put(data_ / "hearth.db", db);
  auto full = backup("0.bak");
  ASSERT_TRUE(full) << full.error().describe();
  EXPECT_EQ(full->database_chunks, 16u);
  EXPECT_EQ(full->database_chunks_included, 16u);
  std::vector<std::string> states{db};
  std::vector<BackupManifest> chain{full->manifest};
  struct Step {
    const char* what;
    std::function<void(std::string&)> change;
    std::uint64_t chunks_stored;
  };
  const std::vector<Step> steps = {
      {"one byte in chunk 3", [](std::string& d) { d[3 * kChunkBytes + 100] ^= 1; }, 1},
      {"growth by 1.5 chunks", [](std::string& d) { d += std::string(kChunkBytes + kChunkBytes / 2, 'g'); }, 2},
      {"shrink into chunk 7, and a byte of chunk 0", [](std::string& d) { d.resize(7 * kChunkBytes + 10); d[5] ^= 1; }, 2},
      {"growth again past the old end", [](std::string& d) { d += std::string(3 * kChunkBytes, 'h'); }, 4},
  };
  for (std::size_t i = 0; i < steps.size(); ++i) {
    std::string next = states.back();
    steps[i].change(next);
    put(data_ / "hearth.db", next);
    auto incr = backup(std::to_string(i + 1) + ".bak", chain.back());
    ASSERT_TRUE(incr) << steps[i].what << ": " << incr.error().describe();
    EXPECT_EQ(incr->database_chunks_included, steps[i].chunks_stored) << steps[i].what;
    EXPECT_EQ(incr->database_chunks, (next.size() + kChunkBytes - 1) / kChunkBytes) << steps[i].what;
    EXPECT_EQ(incr->manifest.sequence, i + 1);
    EXPECT_LT(fs::file_size(root_ / (std::to_string(i + 1) + ".bak")), fs::file_size(root_ / "0.bak") / 2) << steps[i].what;
    states.push_back(next);
    chain.push_back(incr->manifest);
  }
  // Every prefix of the chain restores the database as it was at that backup.
  for (std::size_t upto = 0; upto < chain.size(); ++upto) {
    std::vector<std::string> inputs;
    for (std::size_t i = 0; i <= upto; ++i) inputs.push_back((root_ / (std::to_string(i) + ".bak")).string());
    std::vector<std::size_t> verified;
    const auto target = root_ / ("restored" + std::to_string(upto));
    auto r = restore_backup(inputs, target.string(), [&](std::size_t i) { verified.push_back(i); });
    ASSERT_TRUE(r) << upto << ": " << r.error().describe();
    EXPECT_EQ(get(target / "hearth.db"), states[upto]) << "restored up to " << upto;
    EXPECT_EQ(verified.size(), upto + 1);
  }
  // A link left out: refused, nothing left.
  auto gap = restore_backup({(root_ / "0.bak").string(), (root_ / "2.bak").string()}, (root_ / "gap").string());
  ASSERT_FALSE(gap);
  EXPECT_FALSE(fs::exists(root_ / "gap"));
}

TEST_F(BackupTest, NothingChangedWritesNoIncremental) {
  auto full = backup("full.bak");
  ASSERT_TRUE(full);
  BackupOptions o;
  o.data_dir = data_.string();
  o.output = (root_ / "same.bak").string();
  o.since = full->manifest;
  o.discard_if_unchanged = true;
  o.scratch_dir = (root_ / "scratch").string();
  o.snapshot_database = [this](const std::string& path) -> Result<void> {
    fs::copy_file(data_ / "hearth.db", path);
    return ok();
  };
  auto same = create_backup(o);
  ASSERT_TRUE(same) << same.error().describe();
  EXPECT_TRUE(same->unchanged);
  EXPECT_FALSE(fs::exists(root_ / "same.bak"));
  EXPECT_FALSE(fs::exists(root_ / "same.bak.partial"));
  EXPECT_FALSE(fs::exists(root_ / "scratch")) << "the scratch space is removed";
  EXPECT_FALSE(fs::exists(data_ / ".backup-tmp")) << "the snapshot went to the scratch directory";
  // A removed file or a shrunk database is a change even with no bytes to store.
  fs::remove(data_ / "tls" / "localhost.key");
  auto removed = create_backup(o);
  ASSERT_TRUE(removed);
  EXPECT_FALSE(removed->unchanged);
  EXPECT_TRUE(fs::exists(root_ / "same.bak"));
}

// The other files go into the stream while the snapshot runs: a blob written during the
// snapshot (before the row naming it, as the blob store does) is in the backup all the same.
TEST_F(BackupTest, FileWrittenWhileTheSnapshotRunsIsInTheBackup) {
  BackupOptions o;
  o.data_dir = data_.string();
  o.output = (root_ / "full.bak").string();
  o.snapshot_database = [this](const std::string& path) -> Result<void> {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the first listing is done
    put(data_ / "blobs" / "bb" / "bb1", "written during the snapshot");
    put(data_ / "hearth.db", "database naming bb1");
    fs::copy_file(data_ / "hearth.db", path);
    return ok();
  };
  auto full = create_backup(o);
  ASSERT_TRUE(full) << full.error().describe();
  auto r = restore_backup({o.output}, (root_ / "new").string());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(get(root_ / "new" / "hearth.db"), "database naming bb1");
  EXPECT_EQ(get(root_ / "new" / "blobs" / "bb" / "bb1"), "written during the snapshot");
  EXPECT_EQ(get(root_ / "new" / "blobs" / "aa" / "aa1"), std::string(100000, 'x'));

  // A failed snapshot fails the backup and leaves no file, even with files already streamed.
  o.output = (root_ / "failed.bak").string();
  o.snapshot_database = [](const std::string&) -> Result<void> { return fail(Errc::io, "disk on fire"); };
  auto failed = create_backup(o);
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message.find("database snapshot failed: disk on fire"), std::string::npos);
  EXPECT_FALSE(fs::exists(root_ / "failed.bak"));
  EXPECT_FALSE(fs::exists(root_ / "failed.bak.partial"));
  EXPECT_FALSE(fs::exists(data_ / ".backup-tmp"));
}

TEST(BackupManifestTest, ChunkListMustMatchTheSizeAndFormatIsChecked) {
  BackupManifest m;
  m.backup_id = m.base_id = "x";
  m.files.push_back({"hearth.db", 70000, 0600, std::string(64, 'a'), true, 65536, {std::string(64, 'b')}});
  auto r = BackupManifest::parse(m.to_json());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("70000 bytes but 1 chunks"), std::string::npos) << r.error().message;
  m.files.back().chunks.push_back(std::string(64, 'c'));
  auto good = BackupManifest::parse(m.to_json());
  ASSERT_TRUE(good) << good.error().describe();
  EXPECT_EQ(good->files[0].chunks.size(), 2u);
  EXPECT_EQ(good->files[0].chunk_size, 65536u);
  std::string json = m.to_json();
  json.replace(json.find("hearth-backup/2"), 15, "hearth-backup/9");
  auto newer = BackupManifest::parse(json);
  ASSERT_FALSE(newer);
  EXPECT_NE(newer.error().message.find("unsupported backup format hearth-backup/9"), std::string::npos);
}

std::string sha256_hex(const std::string& bytes) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr);
  std::string out;
  for (unsigned i = 0; i < len; ++i) out += "0123456789abcdef"[md[i] >> 4], out += "0123456789abcdef"[md[i] & 15];
  return out;
}

// A backup as hearthctl wrote it before the chunked database (format 1: the database whole
// in a `file` record) still restores, alone and as the start of a chain continued in
// format 2 (whose first incremental then stores every chunk of the database).
TEST_F(BackupTest, Format1BackupRestoresAloneAndUnderAFormat2Incremental) {
  const std::string db1 = std::string(150000, 'd') + "v1", key = "key";
  std::string files_json;
  std::string body = "HEARTH-BACKUP 1\n";
  for (const auto& [path, bytes] : {std::pair<std::string, std::string>{"hearth.db", db1}, {"tls/localhost.key", key}}) {
    body += "file " + std::to_string(bytes.size()) + " 600 " + path + "\n" + bytes + "sha256 " + sha256_hex(bytes) + "\n";
    files_json += std::string(files_json.empty() ? "" : ",") + R"({"path":")" + path + R"(","size":)" +
                  std::to_string(bytes.size()) + R"(,"mode":384,"sha256":")" + sha256_hex(bytes) + R"(","included":true})";
  }
  const std::string manifest = R"({"format":"hearth-backup/1","backup_id":"b1","parent_id":"","base_id":"b1","sequence":0,)"
                               R"("created_at_ms":1,"files":[)" + files_json + "]}";
  body += "manifest " + std::to_string(manifest.size()) + "\n" + manifest + "sha256 " + sha256_hex(manifest) + "\nend b1\n";
  std::string compressed(ZSTD_compressBound(body.size()), '\0');
  compressed.resize(ZSTD_compress(compressed.data(), compressed.size(), body.data(), body.size(), 3));
  put(root_ / "v1.bak", compressed);

  auto alone = restore_backup({(root_ / "v1.bak").string()}, (root_ / "alone").string());
  ASSERT_TRUE(alone) << alone.error().describe();
  EXPECT_EQ(get(root_ / "alone" / "hearth.db"), db1);
  EXPECT_EQ(get(root_ / "alone" / "tls" / "localhost.key"), key);

  auto parent = read_backup_manifest((root_ / "v1.bak").string());
  ASSERT_TRUE(parent) << parent.error().describe();
  EXPECT_EQ(parent->format, 1);
  const std::string db2 = std::string(90000, 'e') + "v2";  // shrunk and changed
  put(data_ / "hearth.db", db2);
  put(data_ / "tls" / "localhost.key", key);
  fs::remove_all(data_ / "blobs");
  auto incr = backup("v2.bak", *parent);
  ASSERT_TRUE(incr) << incr.error().describe();
  EXPECT_EQ(incr->database_chunks_included, 2u) << "no chunk hashes in a format-1 parent: every chunk";
  EXPECT_EQ(incr->files_unchanged, 1);  // the key
  auto chain = restore_backup({(root_ / "v1.bak").string(), (root_ / "v2.bak").string()}, (root_ / "chain").string());
  ASSERT_TRUE(chain) << chain.error().describe();
  EXPECT_EQ(get(root_ / "chain" / "hearth.db"), db2);
  EXPECT_EQ(get(root_ / "chain" / "tls" / "localhost.key"), key);
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
