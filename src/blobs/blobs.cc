#include "blobs/blobs.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "core/clock.h"
#include "core/durable_file.h"
#include "core/random.h"
#include "store/store.h"

namespace hearth::blobs {
namespace {

constexpr std::int64_t kDayMs = 86'400'000;

const std::vector<store::Migration> kMigrations = {
    {1, "blob references", R"sql(
CREATE TABLE blobs_ref (
  id TEXT PRIMARY KEY,
  hash TEXT NOT NULL,
  owner TEXT NOT NULL,
  name TEXT NOT NULL,
  content_type TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX blobs_ref_hash ON blobs_ref(hash);
CREATE INDEX blobs_ref_owner ON blobs_ref(owner, created_ms);
CREATE INDEX blobs_ref_expiry ON blobs_ref(expires_ms) WHERE expires_ms > 0;
)sql"},
};

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr);
  std::string out;
  for (unsigned i = 0; i < len; ++i) out += fmt::format("{:02x}", digest[i]);
  return out;
}

Error io_error(std::string_view what, const std::string& path) {
  int err = errno;
  Errc code = (err == ENOSPC || err == EDQUOT) ? Errc::resource_exhausted : Errc::io;
  return Error{code, fmt::format("{} {}: {}", what, path, std::strerror(err))};
}

// Writes bytes to a new file and fsyncs it.
Result<void> write_file(const std::string& path, std::string_view bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (fd < 0) return tl::unexpected(io_error("create", path));
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      auto e = io_error("write", path);
      ::close(fd);
      ::unlink(path.c_str());
      return tl::unexpected(e);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    auto e = io_error("fsync", path);
    ::close(fd);
    ::unlink(path.c_str());
    return tl::unexpected(e);
  }
  ::close(fd);
  return ok();
}

Blob blob_from_row(const store::Row& r) {
  Blob b;
  b.id = std::string(r.text(0));
  b.hash = std::string(r.text(1));
  b.owner = std::string(r.text(2));
  b.name = std::string(r.text(3));
  b.content_type = std::string(r.text(4));
  b.size = r.integer(5);
  b.created_ms = r.integer(6);
  b.expires_ms = r.integer(7);
  return b;
}

}  // namespace

BlobStore::BlobStore(store::Store& store, Clock& clock, BlobOptions options)
    : store_(store), clock_(clock), options_(std::move(options)) {}

Result<void> BlobStore::open() {
  std::error_code ec;
  std::filesystem::create_directories(options_.dir + "/tmp", ec);
  if (ec) return fail(Errc::io, fmt::format("cannot create {}: {}", options_.dir, ec.message()));
  // Temporary files of uploads cut short by a crash are never referenced: drop them.
  for (const auto& entry : std::filesystem::directory_iterator(options_.dir + "/tmp", ec)) std::filesystem::remove(entry.path(), ec);
  return store_.migrate("blobs", kMigrations);
}

std::string BlobStore::path_of(std::string_view hash) const {
  return fmt::format("{}/{}/{}", options_.dir, hash.substr(0, 2), hash.substr(2));
}

Result<std::int64_t> BlobStore::used_today(std::string_view owner) {
  std::int64_t since = clock_.now_ms() - kDayMs;
  return store_.read_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    auto row = tx.query_one("SELECT coalesce(sum(size), 0) FROM blobs_ref WHERE owner = ? AND created_ms > ?",
                            {std::string(owner), since});
    if (!row) return tl::unexpected(row.error());
    return (*row)->integer(0);
  });
}

Result<Blob> BlobStore::put(std::string_view owner, std::string_view name, std::string_view content_type,
                            std::string_view bytes, std::int64_t expires_ms) {
  if (static_cast<std::int64_t>(bytes.size()) > options_.max_file_bytes)
    return fail(Errc::invalid_argument, fmt::format("a file may hold at most {} bytes", options_.max_file_bytes));
  Blob b;
  b.id = random_token(24);
  b.hash = sha256_hex(bytes);
  b.owner = owner;
  b.name = name;
  b.content_type = content_type;
  b.size = static_cast<std::int64_t>(bytes.size());
  b.created_ms = clock_.now_ms();
  b.expires_ms = expires_ms;

  std::string final_path = path_of(b.hash);
  std::error_code ec;
  if (!std::filesystem::exists(final_path, ec)) {
    std::string tmp = fmt::format("{}/tmp/{}", options_.dir, random_hex(12));
    if (auto w = write_file(tmp, bytes); !w) return tl::unexpected(w.error());
    std::string shard = options_.dir + "/" + b.hash.substr(0, 2);
    std::filesystem::create_directories(shard, ec);
    if (std::rename(tmp.c_str(), final_path.c_str()) != 0) {
      auto e = io_error("rename", final_path);
      ::unlink(tmp.c_str());
      return tl::unexpected(e);
    }
    if (auto s = fsync_directory(shard); !s) return tl::unexpected(s.error());
  }
  return add_reference(std::move(b), true);
}

Result<Blob> BlobStore::put_file(std::string_view owner, std::string_view name, std::string_view content_type,
                                 const std::string& staged_path, std::int64_t expires_ms) {
  Blob b;
  b.id = random_token(24);
  b.owner = owner;
  b.name = name;
  b.content_type = content_type;
  b.created_ms = clock_.now_ms();
  b.expires_ms = expires_ms;
  if (auto s = store_staged(b, staged_path, true); !s) return tl::unexpected(s.error());
  return add_reference(std::move(b), true);
}

Result<Blob> BlobStore::import_file(std::string_view id, std::string_view owner, std::string_view name,
                                    std::string_view content_type, const std::string& staged_path,
                                    std::int64_t created_ms, std::int64_t expires_ms) {
  auto existing = store_.read_sync([&](store::Transaction& tx) -> Result<std::optional<Blob>> {
    auto row = tx.query_one(
        "SELECT id, hash, owner, name, content_type, size, created_ms, expires_ms FROM blobs_ref WHERE id = ?",
        {std::string(id)});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<Blob>();
    return std::optional<Blob>(blob_from_row(**row));
  });
  if (!existing) return tl::unexpected(existing.error());
  if (*existing) {
    ::unlink(staged_path.c_str());
    return std::move(**existing);
  }
  Blob b;
  b.id = id;
  b.owner = owner;
  b.name = name;
  b.content_type = content_type;
  b.created_ms = created_ms;
  b.expires_ms = expires_ms;
  if (auto s = store_staged(b, staged_path, false); !s) return tl::unexpected(s.error());
  return add_reference(std::move(b), false);
}

Result<void> BlobStore::store_staged(Blob& b, const std::string& staged_path, bool metered) {
  struct Unlink {
    const std::string& path;
    ~Unlink() { ::unlink(path.c_str()); }
  } unlink_staged{staged_path};
  std::error_code ec;
  const auto size = std::filesystem::file_size(staged_path, ec);
  if (ec) return fail(Errc::io, fmt::format("cannot stat {}: {}", staged_path, ec.message()));
  if (metered && static_cast<std::int64_t>(size) > options_.max_file_bytes)
    return fail(Errc::invalid_argument, fmt::format("a file may hold at most {} bytes", options_.max_file_bytes));
  int fd = ::open(staged_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return tl::unexpected(io_error("open", staged_path));
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(md, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 16);
  std::uint64_t total = 0;
  bool read_failed = false;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) read_failed = true;
    if (n <= 0) break;
    EVP_DigestUpdate(md, buf.data(), static_cast<std::size_t>(n));
    total += static_cast<std::uint64_t>(n);
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(md, digest, &len);
  EVP_MD_CTX_free(md);
  // Durable before it is renamed into place (the caller may not have fsynced it: a body
  // streamed by net/ is not).
  std::optional<Error> sync_error;
  if (!read_failed && ::fsync(fd) != 0) sync_error = io_error("fsync", staged_path);
  ::close(fd);
  if (read_failed) return fail(Errc::io, fmt::format("cannot read {}", staged_path));
  if (sync_error) return tl::unexpected(*sync_error);
  if (total != size) return fail(Errc::io, fmt::format("{} changed while it was read", staged_path));
  b.hash.clear();
  for (unsigned i = 0; i < len; ++i) b.hash += fmt::format("{:02x}", digest[i]);
  b.size = static_cast<std::int64_t>(size);
  std::string final_path = path_of(b.hash);
  if (!std::filesystem::exists(final_path, ec)) {
    std::string shard = options_.dir + "/" + b.hash.substr(0, 2);
    std::filesystem::create_directories(shard, ec);
    if (std::rename(staged_path.c_str(), final_path.c_str()) != 0) return tl::unexpected(io_error("rename", final_path));
    if (auto s = fsync_directory(shard); !s) return tl::unexpected(s.error());
  }
  return ok();
}

Result<Blob> BlobStore::add_reference(Blob b, bool metered) {
  bool over_quota = false;
  auto r = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto used = tx.query_one("SELECT coalesce(sum(size), 0) FROM blobs_ref WHERE owner = ? AND created_ms > ?",
                             {b.owner, b.created_ms - kDayMs});
    if (!used) return tl::unexpected(used.error());
    if (metered && (*used)->integer(0) + b.size > options_.daily_quota_bytes) {
      over_quota = true;
      return false;
    }
    auto w = tx.exec(
        "INSERT INTO blobs_ref(id, hash, owner, name, content_type, size, created_ms, expires_ms) VALUES(?, ?, ?, ?, ?, "
        "?, ?, ?)",
        {b.id, b.hash, b.owner, b.name, b.content_type, b.size, b.created_ms, b.expires_ms});
    if (!w) return tl::unexpected(w.error());
    return true;
  });
  if (!r || over_quota) {
    (void)drop_unreferenced(b.hash);
    if (over_quota)
      return fail(Errc::resource_exhausted, fmt::format("the daily upload quota of {} bytes is used up", options_.daily_quota_bytes));
    return tl::unexpected(r.error());
  }
  return b;
}

Result<std::optional<Blob>> BlobStore::get(std::string_view id) {
  std::int64_t now = clock_.now_ms();
  return store_.read_sync([&](store::Transaction& tx) -> Result<std::optional<Blob>> {
    auto row = tx.query_one(
        "SELECT id, hash, owner, name, content_type, size, created_ms, expires_ms FROM blobs_ref WHERE id = ?",
        {std::string(id)});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<Blob>();
    Blob b = blob_from_row(**row);
    if (b.expires_ms > 0 && b.expires_ms <= now) return std::optional<Blob>();
    return std::optional<Blob>(std::move(b));
  });
}

Result<std::string> BlobStore::read(const Blob& blob) {
  std::string path = path_of(blob.hash);
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(Errc::io, fmt::format("cannot read {}", path));
  std::string out(static_cast<std::size_t>(blob.size), '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  if (in.gcount() != static_cast<std::streamsize>(out.size())) return fail(Errc::io, fmt::format("{} is short", path));
  return out;
}

Result<void> BlobStore::drop_unreferenced(const std::string& hash) {
  auto refs = store_.read_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    auto row = tx.query_one("SELECT count(*) FROM blobs_ref WHERE hash = ?", {hash});
    if (!row) return tl::unexpected(row.error());
    return (*row)->integer(0);
  });
  if (!refs) return tl::unexpected(refs.error());
  if (*refs > 0) return ok();
  std::error_code ec;
  std::filesystem::remove(path_of(hash), ec);
  return ok();
}

Result<std::int64_t> BlobStore::purge_expired(std::int64_t now_ms, int batch) {
  std::vector<std::string> hashes;
  auto n = store_.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    std::vector<std::string> ids;
    auto q = tx.query("SELECT id, hash FROM blobs_ref WHERE expires_ms > 0 AND expires_ms <= ? LIMIT ?",
                      {now_ms, std::int64_t{batch}}, [&](const store::Row& r) {
                        ids.emplace_back(r.text(0));
                        hashes.emplace_back(r.text(1));
                      });
    if (!q) return tl::unexpected(q.error());
    for (const auto& id : ids)
      if (auto d = tx.exec("DELETE FROM blobs_ref WHERE id = ?", {id}); !d) return tl::unexpected(d.error());
    return static_cast<std::int64_t>(ids.size());
  });
  if (!n) return n;
  // Files go only after the rows are gone (a crash in between leaves an orphan file, never
  // a row without its file); a file another reference still names stays.
  for (const auto& h : hashes) (void)drop_unreferenced(h);
  return n;
}

Result<void> BlobStore::remove(std::string_view id) {
  std::string hash;
  auto r = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto row = tx.query_one("SELECT hash FROM blobs_ref WHERE id = ?", {std::string(id)});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return false;
    hash = std::string((*row)->text(0));
    if (auto d = tx.exec("DELETE FROM blobs_ref WHERE id = ?", {std::string(id)}); !d) return tl::unexpected(d.error());
    return true;
  });
  if (!r) return tl::unexpected(r.error());
  if (*r) (void)drop_unreferenced(hash);
  return ok();
}

Result<void> BlobStore::forget_owner(std::string_view owner) {
  std::vector<std::string> hashes;
  auto r = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto q = tx.query("SELECT hash FROM blobs_ref WHERE owner = ?", {std::string(owner)},
                      [&](const store::Row& row) { hashes.emplace_back(row.text(0)); });
    if (!q) return tl::unexpected(q.error());
    if (auto d = tx.exec("DELETE FROM blobs_ref WHERE owner = ?", {std::string(owner)}); !d) return tl::unexpected(d.error());
    return true;
  });
  if (!r) return tl::unexpected(r.error());
  for (const auto& h : hashes) (void)drop_unreferenced(h);
  return ok();
}

}  // namespace hearth::blobs
