#include "cryptpad/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "blobs/blobs.h"
#include "core/clock.h"
#include "core/json.h"
#include "core/random.h"
#include "cryptpad/protocol.h"
#include "store/store.h"

namespace hearth::cryptpad {

namespace {
constexpr std::int64_t kCookieMs = 5 * 60 * 1000;
constexpr std::int64_t kIdleUploadMs = 60 * 60 * 1000;
constexpr std::size_t kSweepAbove = 64;  // entries before a lookup sweeps the table
tl::unexpected<std::string> err(std::string code) { return tl::unexpected<std::string>(std::move(code)); }
// Read-only mode (disk reserve reached, I02) has its own code: the client may try later.
std::string storage_code(const Error& e) { return e.code == Errc::read_only ? "E_READ_ONLY" : "E_STORAGE"; }

std::string owners_json(const std::vector<std::string>& owners) {
  JsonWriter w;
  w.begin_array();
  for (const auto& o : owners) w.value(o);
  w.end_array();
  return w.take();
}
}  // namespace

CryptpadFiles::CryptpadFiles(store::Store& store, Clock& clock, blobs::BlobStore* blobs, std::int64_t max_upload_bytes)
    : store_(store), clock_(clock), blobs_(blobs), max_upload_bytes_(max_upload_bytes) {}

bool CryptpadFiles::is_file_id(std::string_view id) {
  if (id.size() != 48) return false;
  for (char c : id)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::shared_ptr<CryptpadFiles::Upload> CryptpadFiles::upload_of(const std::string& key) {
  std::lock_guard lock(mu_);
  const std::int64_t now = clock_.now_ms();
  if (uploads_.size() > kSweepAbove) {
    for (auto it = uploads_.begin(); it != uploads_.end();) {
      auto& u = it->second;
      std::unique_lock ulock(u->mu, std::try_to_lock);
      bool forget = false;
      if (ulock.owns_lock() && u.use_count() == 1 && now - u->last_ms > kCookieMs) {
        if (!u->stage.empty() && now - u->last_ms > kIdleUploadMs) drop_locked(*u);
        forget = u->stage.empty();
      }
      if (ulock.owns_lock()) ulock.unlock();
      it = forget ? uploads_.erase(it) : std::next(it);
    }
  }
  auto& u = uploads_[key];
  if (!u) u = std::make_shared<Upload>();
  u->last_ms = now;
  return u;
}

void CryptpadFiles::drop_locked(Upload& u) {
  if (!u.stage.empty()) ::unlink(u.stage.c_str());
  u.stage.clear();
  u.received = 0;
  u.declared = -1;
}

tl::expected<bool, std::string> CryptpadFiles::status(const std::string& key, std::int64_t size, std::int64_t free) {
  if (size < 0) return err("E_INVALID_SIZE");
  if (size > max_upload_bytes_) return err("TOO_LARGE");
  if (auto w = store_.read_only_mode().check_writable(); !w) return err(storage_code(w.error()));
  auto u = upload_of(key);
  std::lock_guard lock(u->mu);
  if (!u->stage.empty()) return true;  // an unfinished upload: the client may cancel it
  if (size >= free) return err("NOT_ENOUGH_SPACE");
  u->declared = size;
  u->received = 0;
  return false;
}

void CryptpadFiles::cancel(const std::string& key) {
  auto u = upload_of(key);
  std::lock_guard lock(u->mu);
  drop_locked(*u);
}

std::string CryptpadFiles::new_cookie(const std::string& key) {
  auto u = upload_of(key);
  std::lock_guard lock(u->mu);
  u->cookie = random_hex(16);
  u->cookie_ms = clock_.now_ms();
  return u->cookie;
}

tl::expected<std::int64_t, std::string> CryptpadFiles::append_locked(Upload& u, std::string_view bytes) {
  if (!blobs_) return err("E_NO_STORAGE");
  if (u.declared < 0) return err("NOT_READY");  // no UPLOAD_STATUS before
  // Staged chunks are files: in read-only mode they would eat the disk reserve.
  if (auto w = store_.read_only_mode().check_writable(); !w) {
    drop_locked(u);
    return err(storage_code(w.error()));
  }
  if (u.received + static_cast<std::int64_t>(bytes.size()) > u.declared) {
    drop_locked(u);
    return err("E_OVER_LIMIT");
  }
  if (u.stage.empty()) u.stage = blobs_->staging_dir() + "/cp-" + random_hex(12);
  int fd = ::open(u.stage.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    drop_locked(u);
    return err(errno == ENOSPC ? "E_NO_SPACE" : "E_STORAGE");
  }
  std::size_t done = 0;
  bool failed = false;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      failed = true;
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  if (!failed && ::fsync(fd) != 0) failed = true;
  ::close(fd);
  if (failed) {
    drop_locked(u);
    return err("E_STORAGE");
  }
  u.received += static_cast<std::int64_t>(bytes.size());
  return static_cast<std::int64_t>(bytes.size());
}

tl::expected<std::string, std::string> CryptpadFiles::append_chunk(const std::string& key, const std::string& cookie,
                                                                   std::string_view bytes) {
  auto u = upload_of(key);
  std::lock_guard lock(u->mu);
  if (u->cookie.empty() || clock_.now_ms() - u->cookie_ms > kCookieMs || !secrets_equal(u->cookie, cookie))
    return err("INVALID_COOKIE");
  u->cookie.clear();  // one use
  auto a = append_locked(*u, bytes);
  if (!a) return err(a.error());
  u->cookie = random_hex(16);
  u->cookie_ms = clock_.now_ms();
  return u->cookie;
}

tl::expected<std::int64_t, std::string> CryptpadFiles::append_ws(const std::string& key, std::string_view bytes) {
  auto u = upload_of(key);
  std::lock_guard lock(u->mu);
  return append_locked(*u, bytes);
}

tl::expected<std::string, std::string> CryptpadFiles::complete(const std::string& key, const std::string& id, bool owned) {
  if (!blobs_) return err("E_NO_STORAGE");
  auto u = upload_of(key);
  std::lock_guard lock(u->mu);
  struct Drop {
    CryptpadFiles* self;
    Upload& u;
    ~Drop() { self->drop_locked(u); }  // whatever happens, nothing staged is left
  } drop{this, *u};
  if (!is_file_id(id)) return err(owned ? "EINVAL_ID" : "RENAME_ERR");
  if (u->stage.empty() || u->declared < 0) return err("E_NO_UPLOAD");
  if (u->received != u->declared) return err("E_SIZE_MISMATCH");
  auto existing = find(id);
  if (!existing) return err("E_STORAGE");
  if (*existing) return err(owned ? "EEXISTS" : "RENAME_ERR");
  const std::string stage = u->stage;
  u->stage.clear();  // put_file consumes it
  auto blob = blobs_->put_file("cryptpad:" + key, id, "application/octet-stream", stage, 0);
  if (!blob) return err(blob.error().code == Errc::resource_exhausted ? "NOT_ENOUGH_SPACE" : storage_code(blob.error()));
  std::vector<std::string> owners;
  if (owned) owners.push_back(key);
  auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto there = tx.query_one("SELECT 1 FROM cryptpad_blobs WHERE id = ?", {id});
    if (!there) return tl::unexpected(there.error());
    if (*there) return false;
    auto r = tx.exec("INSERT INTO cryptpad_blobs(id, ref, uploader, owners, size, created) VALUES (?, ?, ?, ?, ?, ?)",
                     {id, blob->id, key, owners_json(owners), blob->size, blob->created_ms});
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  if (!w || !*w) {
    (void)blobs_->remove(blob->id);
    return err(w ? "EEXISTS" : storage_code(w.error()));
  }
  return id;
}

Result<std::optional<StoredFile>> CryptpadFiles::find(const std::string& id) {
  return store_.read_sync([&](store::Transaction& tx) -> Result<std::optional<StoredFile>> {
    auto row = tx.query_one("SELECT ref, uploader, owners, size, created, archived FROM cryptpad_blobs WHERE id = ?", {id});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<StoredFile>();
    StoredFile f;
    f.id = id;
    f.ref = std::string((*row)->text(0));
    f.uploader = std::string((*row)->text(1));
    ParseLimits limits;
    if (auto arr = parse_array((*row)->text(2), limits))
      for (auto& v : *arr)
        if (v.is_string()) f.owners.push_back(v.text);
    f.size = (*row)->integer(3);
    f.created = (*row)->integer(4);
    if (!(*row)->is_null(5)) f.archived = std::string((*row)->text(5));
    return std::optional<StoredFile>(std::move(f));
  });
}

tl::expected<void, std::string> CryptpadFiles::set_archived(const std::string& id, std::optional<std::string> reason) {
  auto f = find(id);
  if (!f) return err("E_STORAGE");
  if (!*f) return err("ENOENT");
  if (reason.has_value() == (*f)->archived.has_value()) return err(reason ? "EEXISTS" : "ENOENT");
  auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto r = tx.exec("UPDATE cryptpad_blobs SET archived = ? WHERE id = ?", {reason, id});
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  if (!w) return err("E_STORAGE");
  return {};
}

Result<std::string> CryptpadFiles::read(const StoredFile& f) {
  if (!blobs_) return fail(Errc::unavailable, "no file store");
  auto b = blobs_->get(f.ref);
  if (!b) return tl::unexpected(b.error());
  if (!*b) return fail(Errc::not_found, "blob reference gone");
  return blobs_->read(**b);
}

Result<std::string> CryptpadFiles::path_of(const StoredFile& f) {
  if (!blobs_) return fail(Errc::unavailable, "no file store");
  auto b = blobs_->get(f.ref);
  if (!b) return tl::unexpected(b.error());
  if (!*b) return fail(Errc::not_found, "blob reference gone");
  return blobs_->path_of((*b)->hash);
}

tl::expected<void, std::string> CryptpadFiles::remove_owned(const std::string& key, const std::string& id) {
  auto f = find(id);
  if (!f) return err("E_STORAGE");
  if (!*f) return err("ENOENT");
  bool owner = false;
  for (const auto& o : (*f)->owners) owner |= o == key;
  if (!owner) return err("INSUFFICIENT_PERMISSIONS");
  auto d = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto r = tx.exec("DELETE FROM cryptpad_blobs WHERE id = ?", {id});
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  if (!d) return err("E_STORAGE");
  if (blobs_) (void)blobs_->remove((*f)->ref);
  return {};
}

}  // namespace hearth::cryptpad
