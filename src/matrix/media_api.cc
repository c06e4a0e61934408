// Media repository (client-server API "Content repository") on the shared file store
// (src/blobs): upload (POST .../upload, and the asynchronous POST /_matrix/media/v1/create
// + PUT .../upload/{server}/{id}), authenticated download (/_matrix/client/v1/media/...),
// the legacy /_matrix/media/v3 paths, config, thumbnails.
//
// Every upload is one blobs reference owned by "<localpart>@<server name>", the owner
// XMPP uploads of the same account use, so the daily quota of upload.daily_quota_bytes is
// one budget for both; matrix.media_quota_bytes bounds a user's Matrix media in total.
// The matrix_media table maps a media id to its reference (column `blob`), type and name.
// A row with neither blob nor sha256 is a pending asynchronous upload until
// pending_until_ms; a row with sha256 but no blob is a file of the old <data>/media store
// not yet moved into blobs (migrate_legacy_media, at start-up).
//
// Bodies are streamed to blobs' staging directory; admit_upload checks the token, the
// declared size and the quotas from the request head, before any body byte is staged.
// Downloads are sent from the file in chunks (net's HttpResponse::body_file, with Range).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>

#include <fmt/format.h>

#include "blobs/blobs.h"
#include "core/json.h"
#include "core/random.h"
#include "matrix/media_multipart.h"
#include "matrix/service_internal.h"
#include "net/https_client.h"
#include "thumbnail/thumbnail.h"

namespace hearth::matrix {

namespace {

constexpr std::int64_t kDayMs = 86'400'000;
// Pending asynchronous uploads expire after the spec's recommended 24 hours.
constexpr std::int64_t kUnusedExpiryMs = kDayMs;

const std::vector<store::Migration> kMediaMigrations = {
    {1, "media on the shared blob store; asynchronous uploads", R"sql(
ALTER TABLE matrix_media ADD COLUMN blob TEXT NOT NULL DEFAULT '';
ALTER TABLE matrix_media ADD COLUMN pending_until_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX matrix_media_pending ON matrix_media(user_id, pending_until_ms) WHERE pending_until_ms > 0;
)sql"},
    {2, "remote media cached as blobs", R"sql(
CREATE TABLE matrix_remote_media(
  server TEXT NOT NULL,
  media_id TEXT NOT NULL,
  blob TEXT NOT NULL,
  content_type TEXT NOT NULL,
  filename TEXT NOT NULL,
  fetched_ms INTEGER NOT NULL,
  PRIMARY KEY(server, media_id)) WITHOUT ROWID;
)sql"},
};

std::string safe_header_value(std::string_view s) {
  std::string out;
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x20 && c != '"' && c != '\\' && c != 0x7f) out += c;
  return out.substr(0, 200);
}

std::string new_media_id() {
  std::string id = random_token(18);
  for (char& c : id)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = 'x';
  return id;
}

struct MediaRow {
  std::string user_id, sha256, content_type, filename, blob;
  std::int64_t size = 0, created_ms = 0, pending_until_ms = 0;
  bool pending() const { return blob.empty() && sha256.empty(); }
};

Result<std::optional<MediaRow>> load_media(store::Store& store, const std::string& media_id) {
  return store.read_sync([&](store::Transaction& tx) -> Result<std::optional<MediaRow>> {
    auto row = tx.query_one(
        "SELECT user_id, sha256, content_type, filename, blob, size, created_ms, pending_until_ms FROM matrix_media "
        "WHERE media_id = ?",
        {media_id});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<MediaRow>();
    const auto& r = **row;
    return std::optional<MediaRow>(MediaRow{std::string(r.text(0)), std::string(r.text(1)), std::string(r.text(2)),
                                            std::string(r.text(3)), std::string(r.text(4)), r.integer(5), r.integer(6),
                                            r.integer(7)});
  });
}

ApiResult<void> check_pending_target(const std::optional<MediaRow>& row, const std::string& user, std::int64_t now) {
  if (!row) return api_error(404, "M_NOT_FOUND", "Unknown media ID");
  if (!row->pending()) return api_error(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded");
  if (row->user_id != user) return api_error(403, "M_FORBIDDEN", "This media ID was created by another user");
  if (row->pending_until_ms <= now) return api_error(404, "M_NOT_FOUND", "This media ID has expired");
  return {};
}

std::int64_t declared_length(const net::HttpRequest& head) {
  std::string_view cl = head.header("content-length");
  std::int64_t declared = -1;
  std::from_chars(cl.data(), cl.data() + cl.size(), declared);
  return declared;
}

}  // namespace

Result<void> MatrixService::Impl::migrate_media() {
  if (auto r = store.migrate("matrix_media", kMediaMigrations); !r) return r;
  return migrate_legacy_media();
}

std::string MatrixService::Impl::media_owner(std::string_view localpart) const {
  return std::string(localpart) + "@" + options.server_name;
}

std::int64_t MatrixService::Impl::media_expiry(std::int64_t created_ms) const {
  return options.media_retention_days > 0 ? created_ms + std::int64_t{options.media_retention_days} * kDayMs : 0;
}

// Files of the old <data>/media store become blobs references, keeping their owner and
// upload time (they do not count against today's quota). Crash-safe and idempotent: the
// old file is hard-linked (or copied) into staging, never moved; the reference id is
// derived from the media id, so a run interrupted between the reference and the row
// update finds its reference again; an old file is deleted only once no unmigrated row
// names it.
Result<void> MatrixService::Impl::migrate_legacy_media() {
  if (options.media_dir.empty() || !std::filesystem::exists(options.media_dir)) return ok();
  struct Legacy {
    std::string media_id, user_id, sha256, content_type, filename;
    std::int64_t created_ms;
  };
  auto rows = store.read_sync([&](store::Transaction& tx) -> Result<std::vector<Legacy>> {
    std::vector<Legacy> out;
    auto q = tx.query(
        "SELECT media_id, user_id, sha256, content_type, filename, created_ms FROM matrix_media "
        "WHERE blob = '' AND sha256 != ''",
        {}, [&](const store::Row& r) {
          out.push_back({std::string(r.text(0)), std::string(r.text(1)), std::string(r.text(2)),
                         std::string(r.text(3)), std::string(r.text(4)), r.integer(5)});
        });
    if (!q) return tl::unexpected(q.error());
    return out;
  });
  if (!rows) return tl::unexpected(rows.error());
  std::int64_t moved = 0, missing = 0;
  for (const auto& m : *rows) {
    std::string old_path = fmt::format("{}/{}/{}", options.media_dir, m.sha256.substr(0, 2), m.sha256);
    std::string staged = fmt::format("{}/{}", options.blobs->staging_dir(), random_hex(12));
    if (::link(old_path.c_str(), staged.c_str()) != 0) {
      if (errno == ENOENT) {
        ++missing;
        log.warn("matrix.media_migration_file_missing", {{"media_id", m.media_id}, {"sha256", m.sha256}});
        continue;
      }
      std::error_code ec;  // another filesystem: copy
      if (!std::filesystem::copy_file(old_path, staged, ec))
        return fail(Errc::io, fmt::format("cannot stage {} for the blob store: {}", old_path, ec.message()));
    }
    auto colon = m.user_id.find(':');
    std::string localpart = m.user_id.substr(1, colon == std::string::npos ? std::string::npos : colon - 1);
    auto blob = options.blobs->import_file("matrix-media-" + m.media_id, media_owner(localpart), m.filename,
                                           m.content_type, staged, m.created_ms, media_expiry(m.created_ms));
    if (!blob) return tl::unexpected(blob.error());
    auto w = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
      auto u = tx.exec("UPDATE matrix_media SET blob = ? WHERE media_id = ? AND blob = ''", {blob->id, m.media_id});
      if (!u) return tl::unexpected(u.error());
      return true;
    });
    if (!w) return tl::unexpected(w.error());
    ++moved;
  }
  // Old files no unmigrated row names any more go, then the empty directories.
  std::error_code ec;
  std::int64_t removed = 0;
  for (const auto& shard : std::filesystem::directory_iterator(options.media_dir, ec)) {
    if (!shard.is_directory(ec)) continue;
    for (const auto& file : std::filesystem::directory_iterator(shard.path(), ec)) {
      std::string name = file.path().filename().string();
      auto still = store.read_sync([&](store::Transaction& tx) -> Result<bool> {
        auto row = tx.query_one("SELECT 1 FROM matrix_media WHERE sha256 = ? AND blob = ''", {name});
        if (!row) return tl::unexpected(row.error());
        return row->has_value();
      });
      if (!still) return tl::unexpected(still.error());
      if (*still && shard.path().filename() != "tmp") continue;
      if (std::filesystem::remove(file.path(), ec)) ++removed;
    }
    std::filesystem::remove(shard.path(), ec);  // only when empty
  }
  std::filesystem::remove(options.media_dir, ec);
  if (moved || missing || removed)
    log.info("matrix.media_migrated", {{"moved", moved}, {"missing", missing}, {"files_removed", removed}});
  return ok();
}

Result<std::int64_t> MatrixService::Impl::purge_media(int batch) {
  const std::int64_t now = clock.now_ms();
  std::vector<std::string> blob_ids;
  auto n = store.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    std::int64_t gone = 0;
    auto p = tx.exec("DELETE FROM matrix_media WHERE media_id IN (SELECT media_id FROM matrix_media "
                     "WHERE blob = '' AND sha256 = '' AND pending_until_ms > 0 AND pending_until_ms <= ? LIMIT ?)",
                     {now, std::int64_t{batch}});
    if (!p) return tl::unexpected(p.error());
    gone += *p;
    if (options.media_retention_days > 0) {
      std::vector<std::string> ids;
      auto q = tx.query("SELECT media_id, blob FROM matrix_media WHERE blob != '' AND created_ms <= ? LIMIT ?",
                        {now - std::int64_t{options.media_retention_days} * kDayMs, std::int64_t{batch}},
                        [&](const store::Row& r) {
                          ids.emplace_back(r.text(0));
                          blob_ids.emplace_back(r.text(1));
                        });
      if (!q) return tl::unexpected(q.error());
      for (const auto& id : ids)
        if (auto d = tx.exec("DELETE FROM matrix_media WHERE media_id = ?", {id}); !d) return tl::unexpected(d.error());
      gone += static_cast<std::int64_t>(ids.size());
    }
    return gone;
  });
  if (!n) return n;
  // References go after their rows (a crash in between leaves a reference that its own
  // expiry purges; never a row without its file).
  for (const auto& id : blob_ids) (void)options.blobs->remove(id);
  if (auto b = options.blobs->purge_expired(now, batch); !b) return tl::unexpected(b.error());
  return n;
}

// Every 10 minutes on the worker pool (sooner while a batch came back full).
void MatrixService::Impl::media_housekeeping() {
  constexpr int kBatch = 500;
  std::weak_ptr<Impl> weak = weak_from_this();
  auto again = [weak](std::chrono::milliseconds delay) {
    if (auto self = weak.lock())
      self->run_after(delay, [weak] {
        if (auto s = weak.lock()) s->media_housekeeping();
      });
  };
  bool queued = offload([weak, again] {
    auto self = weak.lock();
    if (!self) return;
    auto n = self->purge_media(kBatch);
    if (!n) self->log.warn("matrix.media_purge_failed", {{"error", n.error().describe()}});
    again(n && *n >= kBatch ? std::chrono::milliseconds(100) : std::chrono::minutes(10));
  });
  if (!queued) again(std::chrono::seconds(30));
}

Result<void> MatrixService::Impl::forget_media(const std::string& user) {
  std::vector<std::string> blob_ids;
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto q = tx.query("SELECT blob FROM matrix_media WHERE user_id = ? AND blob != ''", {user},
                      [&](const store::Row& row) { blob_ids.emplace_back(row.text(0)); });
    if (!q) return tl::unexpected(q.error());
    if (auto d = tx.exec("DELETE FROM matrix_media WHERE user_id = ?", {user}); !d) return tl::unexpected(d.error());
    return true;
  });
  if (!r) return tl::unexpected(r.error());
  for (const auto& id : blob_ids) (void)options.blobs->remove(id);
  return ok();
}

ApiResult<std::string> MatrixService::Impl::media_config(Ctx&) {
  return fmt::format(R"({{"m.upload.size":{}}})", options.max_upload_bytes);
}

// Quotas before `size` more bytes: Matrix media in total, then the daily budget shared
// with XMPP uploads. Both answered 403 M_FORBIDDEN, as the spec says for quotas.
ApiResult<void> MatrixService::Impl::check_media_quota(const std::string& user_id, std::string_view localpart,
                                                       std::int64_t size) {
  if (size > options.max_upload_bytes)
    return api_error(413, "M_TOO_LARGE", fmt::format("Uploads are limited to {} bytes", options.max_upload_bytes));
  auto used = store.read_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    auto row = tx.query_one("SELECT COALESCE(SUM(size), 0) FROM matrix_media WHERE user_id = ?", {user_id});
    if (!row) return tl::unexpected(row.error());
    return (*row)->integer(0);
  });
  if (!used) return tl::unexpected(to_api_error(used.error()));
  if (*used + size > options.media_quota_bytes)
    return api_error(403, "M_FORBIDDEN", fmt::format("Your media quota of {} bytes is used up", options.media_quota_bytes));
  auto today = options.blobs->used_today(media_owner(localpart));
  if (!today) return tl::unexpected(to_api_error(today.error()));
  if (*today + size > options.blobs->options().daily_quota_bytes)
    return api_error(403, "M_FORBIDDEN",
                     fmt::format("Your upload quota of {} bytes per day (shared with XMPP uploads) is used up",
                                 options.blobs->options().daily_quota_bytes));
  return {};
}

// Runs on the worker pool before any byte of an upload body is read.
net::BodyAdmission MatrixService::Impl::admit_upload(const net::HttpRequest& head) {
  net::BodyAdmission a;
  Ctx probe{head, {}, {}};
  auto owner = authenticate(probe);
  if (!owner) {
    a.refuse = error_response(owner.error());
    return a;
  }
  std::string user = user_id(owner->localpart);
  // PUT .../upload/{server}/{id}: the pending id must be this user's.
  if (head.method == "PUT") {
    std::string_view path = head.path;
    std::string media_id(path.substr(path.rfind('/') + 1));
    auto row = load_media(store, media_id);
    if (!row) {
      a.refuse = error_response(to_api_error(row.error()));
      return a;
    }
    if (auto refusal = check_pending_target(*row, user, clock.now_ms()); !refusal) {
      a.refuse = error_response(refusal.error());
      return a;
    }
  }
  std::int64_t declared = declared_length(head);
  if (declared >= 0)
    if (auto q = check_media_quota(user, owner->localpart, declared); !q) a.refuse = error_response(q.error());
  return a;
}

// Stores the request body (staged file, or the body in memory) as a blob of this user.
ApiResult<blobs::Blob> MatrixService::Impl::store_upload(Ctx& ctx, const std::string& content_type,
                                                         const std::string& filename) {
  const bool staged = !ctx.http.body_file.empty();
  const std::int64_t size = staged ? ctx.http.body_file_bytes : static_cast<std::int64_t>(ctx.http.body.size());
  if (auto q = check_media_quota(ctx.user_id, ctx.localpart, size); !q) return tl::unexpected(q.error());
  const std::string owner = media_owner(ctx.localpart);
  const std::int64_t expires = media_expiry(clock.now_ms());
  auto blob = staged ? options.blobs->put_file(owner, filename, content_type, ctx.http.body_file, expires)
                     : options.blobs->put(owner, filename, content_type, ctx.http.body, expires);
  if (blob) return std::move(*blob);
  const Error& e = blob.error();
  if (e.code == Errc::invalid_argument) return api_error(413, "M_TOO_LARGE", e.message);
  if (e.code == Errc::resource_exhausted) {
    // The daily quota (checked again in the reference's transaction), or a full disk.
    auto today = options.blobs->used_today(owner);
    if (today && *today + size > options.blobs->options().daily_quota_bytes)
      return api_error(403, "M_FORBIDDEN", e.message);
    return api_error(507, "M_UNKNOWN", "The server has no room for this upload");
  }
  log.error("matrix.media_write_failed", {{"error", e.describe()}});
  return tl::unexpected(to_api_error(e));
}

namespace {
std::string upload_content_type(const Ctx& ctx) {
  std::string content_type(ctx.http.header("content-type"));
  if (content_type.empty() || content_type.size() > 255) content_type = "application/octet-stream";
  return content_type;
}
}  // namespace

ApiResult<std::string> MatrixService::Impl::media_upload(Ctx& ctx) {
  std::string content_type = upload_content_type(ctx);
  std::string filename = ctx.query_param("filename").substr(0, 255);
  auto blob = store_upload(ctx, content_type, filename);
  if (!blob) return tl::unexpected(blob.error());
  std::string media_id = new_media_id();
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto in = tx.exec(
        "INSERT INTO matrix_media(media_id, user_id, sha256, content_type, filename, size, created_ms, blob) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        {media_id, ctx.user_id, blob->hash, content_type, filename, blob->size, blob->created_ms, blob->id});
    if (!in) return tl::unexpected(in.error());
    return true;
  });
  if (!r) {
    (void)options.blobs->remove(blob->id);
    return tl::unexpected(to_api_error(r.error()));
  }
  return fmt::format(R"({{"content_uri":{}}})", json_quote("mxc://" + options.server_name + "/" + media_id));
}

ApiResult<std::string> MatrixService::Impl::media_create(Ctx& ctx) {
  const std::int64_t now = clock.now_ms();
  const std::int64_t expires = now + kUnusedExpiryMs;
  std::string media_id = new_media_id();
  bool over_limit = false;
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto pending = tx.query_one(
        "SELECT count(*) FROM matrix_media WHERE user_id = ? AND pending_until_ms > ? AND blob = '' AND sha256 = ''",
        {ctx.user_id, now});
    if (!pending) return tl::unexpected(pending.error());
    if ((*pending)->integer(0) >= options.max_pending_uploads) {
      over_limit = true;
      return false;
    }
    auto in = tx.exec(
        "INSERT INTO matrix_media(media_id, user_id, sha256, content_type, filename, size, created_ms, blob, "
        "pending_until_ms) VALUES (?, ?, '', '', '', 0, ?, '', ?)",
        {media_id, ctx.user_id, now, expires});
    if (!in) return tl::unexpected(in.error());
    return true;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (over_limit) {
    ApiError e{429, "M_LIMIT_EXCEEDED",
               fmt::format("At most {} media uploads may be pending at once", options.max_pending_uploads)};
    e.retry_after_ms = 60'000;
    return tl::unexpected(e);
  }
  return fmt::format(R"({{"content_uri":{},"unused_expires_at":{}}})",
                     json_quote("mxc://" + options.server_name + "/" + media_id), expires);
}

ApiResult<std::string> MatrixService::Impl::media_upload_to(Ctx& ctx) {
  const std::string& server = ctx.params[0];
  const std::string& media_id = ctx.params[1];
  if (server != options.server_name) return api_error(404, "M_NOT_FOUND", "Unknown media ID");
  auto row = load_media(store, media_id);
  if (!row) return tl::unexpected(to_api_error(row.error()));
  if (auto allowed = check_pending_target(*row, ctx.user_id, clock.now_ms()); !allowed)
    return tl::unexpected(allowed.error());
  std::string content_type = upload_content_type(ctx);
  std::string filename = ctx.query_param("filename").substr(0, 255);
  auto blob = store_upload(ctx, content_type, filename);
  if (!blob) return tl::unexpected(blob.error());
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    return tx.exec(
        "UPDATE matrix_media SET sha256 = ?, content_type = ?, filename = ?, size = ?, blob = ?, pending_until_ms = 0 "
        "WHERE media_id = ? AND blob = '' AND sha256 = ''",
        {blob->hash, content_type, filename, blob->size, blob->id, media_id});
  });
  if (!r || *r == 0) {
    (void)options.blobs->remove(blob->id);
    if (!r) return tl::unexpected(to_api_error(r.error()));
    return api_error(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded");
  }
  wake_media_downloads(media_id);
  return std::string("{}");
}

// What a download or thumbnail serves: local media, or remote media from the cache (fetched
// over federation first when it is not there, for authenticated requests).
ApiResult<MediaFile> MatrixService::Impl::find_media(Ctx& ctx, const std::string& server, const std::string& media_id) {
  if (server != options.server_name) {
    if (!federation) return api_error(404, "M_NOT_FOUND", "Remote media is not served");
    auto cached = load_remote_media(server, media_id);
    if (!cached) return tl::unexpected(to_api_error(cached.error()));
    if (*cached) return std::move(**cached);
    // The legacy unauthenticated paths serve what is cached only (spec v1.11 freeze).
    if (ctx.user_id.empty() || ctx.query_param("allow_remote") == "false")
      return api_error(404, "M_NOT_FOUND", "Remote media is not cached here");
    if (auto fetched = fetch_remote_media(server, media_id); !fetched) return tl::unexpected(fetched.error());
    cached = load_remote_media(server, media_id);
    if (!cached) return tl::unexpected(to_api_error(cached.error()));
    if (!*cached) return api_error(404, "M_NOT_FOUND", "No such media");
    return std::move(**cached);
  }
  auto meta = load_media(store, media_id);
  if (!meta) return tl::unexpected(to_api_error(meta.error()));
  if (!*meta) return api_error(404, "M_NOT_FOUND", "No such media");
  if ((*meta)->pending()) {
    if ((*meta)->pending_until_ms > clock.now_ms())
      return api_error(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded");
    return api_error(404, "M_NOT_FOUND", "No such media");
  }
  auto blob = (*meta)->blob.empty() ? Result<std::optional<blobs::Blob>>() : options.blobs->get((*meta)->blob);
  if (!blob) return tl::unexpected(to_api_error(blob.error()));
  if (!*blob) return api_error(404, "M_NOT_FOUND", "No such media (or it expired)");
  return MediaFile{std::move(**blob), (*meta)->content_type, (*meta)->filename};
}

ApiResult<std::string> MatrixService::Impl::media_download(Ctx& ctx) {
  auto file = find_media(ctx, ctx.params[0], ctx.params[1]);
  if (!file && file.error().errcode == "M_NOT_YET_UPLOADED" && park_media_download(ctx, ctx.params[1]))
    return api_error(0, "", "");  // answered when the upload arrives or the wait is over
  if (!file) return tl::unexpected(file.error());
  net::HttpResponse resp;
  resp.status = 200;
  resp.content_type = safe_header_value(file->content_type);
  resp.body_file = options.blobs->path_of(file->blob.hash);
  std::string name = ctx.params.size() > 2 && !ctx.params[2].empty() ? ctx.params[2] : file->filename;
  // Served as an attachment in a sandbox: uploaded HTML or SVG cannot run in our origin.
  std::string disposition = "attachment";
  if (!name.empty()) disposition += "; filename=\"" + safe_header_value(name) + "\"";
  resp.headers.push_back({"Content-Disposition", disposition});
  resp.headers.push_back({"Content-Security-Policy", "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"});
  resp.headers.push_back({"X-Content-Type-Options", "nosniff"});
  resp.headers.push_back({"Access-Control-Allow-Origin", "*"});
  resp.headers.push_back({"Cache-Control", "private, max-age=86400"});
  ctx.respond(std::move(resp));
  return api_error(0, "", "");
}

std::size_t MatrixService::Impl::media_waiting() {
  std::lock_guard lock(media_waiters_mu);
  return media_waiters.size();
}

// timeout_ms (spec default 20 s, at most 20 s here; 0: answer at once). The handler's
// worker thread is not held: the waiter keeps the request's Respond; a timer answers it
// 504 M_NOT_YET_UPLOADED unless the upload's PUT took it first.
bool MatrixService::Impl::park_media_download(Ctx& ctx, const std::string& media_id) {
  constexpr std::int64_t kMaxWaitMs = 20'000;
  std::string asked = ctx.query_param("timeout_ms");
  std::int64_t wait_ms = asked.empty() ? kMaxWaitMs : std::atoll(asked.c_str());
  wait_ms = std::min(wait_ms, kMaxWaitMs);
  if (wait_ms <= 0) return false;
  auto waiter = std::make_shared<MediaWaiter>(MediaWaiter{Ctx{ctx.http, ctx.respond, ctx.params}});
  waiter->ctx.user_id = ctx.user_id;
  waiter->ctx.localpart = ctx.localpart;
  waiter->ctx.device_id = ctx.device_id;
  {
    std::lock_guard lock(media_waiters_mu);
    media_waiters.emplace(media_id, waiter);
  }
  std::weak_ptr<Impl> weak = weak_from_this();
  run_after(std::chrono::milliseconds(wait_ms), [weak, media_id, waiter] {
    auto self = weak.lock();
    if (!self) return;
    {
      std::lock_guard lock(self->media_waiters_mu);
      auto [first, last] = self->media_waiters.equal_range(media_id);
      auto it = std::find_if(first, last, [&](const auto& e) { return e.second == waiter; });
      if (it == last) return;  // woken by the upload
      self->media_waiters.erase(it);
    }
    waiter->ctx.respond(error_response({504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded"}));
  });
  // The PUT may have committed between the lookup and the parking.
  auto row = load_media(store, media_id);
  if (!row || !*row || !(*row)->pending()) wake_media_downloads(media_id);
  return true;
}

void MatrixService::Impl::wake_media_downloads(const std::string& media_id) {
  std::vector<std::shared_ptr<MediaWaiter>> woken;
  {
    std::lock_guard lock(media_waiters_mu);
    auto [first, last] = media_waiters.equal_range(media_id);
    for (auto it = first; it != last; ++it) woken.push_back(it->second);
    media_waiters.erase(first, last);
  }
  std::weak_ptr<Impl> weak = weak_from_this();
  for (auto& w : woken) {
    bool queued = offload([weak, w] {
      auto self = weak.lock();
      if (!self) return;
      auto r = self->media_download(w->ctx);
      if (!r && r.error().status != 0) w->ctx.respond(error_response(r.error()));
    });
    if (!queued) w->ctx.respond(error_response({503, "M_UNKNOWN", "The server is busy; try again later"}));
  }
}

void MatrixService::Impl::release_media_downloads() {
  std::multimap<std::string, std::shared_ptr<MediaWaiter>> all;
  {
    std::lock_guard lock(media_waiters_mu);
    all.swap(media_waiters);
  }
  for (auto& [id, w] : all)
    w->ctx.respond(error_response({504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded"}));
}

Result<std::optional<MediaFile>> MatrixService::Impl::load_remote_media(const std::string& server,
                                                                       const std::string& media_id) {
  struct Row {
    std::string blob, type, name;
  };
  auto row = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<Row>> {
    auto r = tx.query_one("SELECT blob, content_type, filename FROM matrix_remote_media WHERE server = ? AND media_id = ?",
                          {server, media_id});
    if (!r) return tl::unexpected(r.error());
    if (!*r) return std::optional<Row>();
    return std::optional<Row>(Row{std::string((*r)->text(0)), std::string((*r)->text(1)), std::string((*r)->text(2))});
  });
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<MediaFile>();
  auto blob = options.blobs->get((*row)->blob);
  if (!blob) return tl::unexpected(blob.error());
  if (!*blob) {  // expired from the cache: forget the row, fetch again
    auto d = store.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
      return tx.exec("DELETE FROM matrix_remote_media WHERE server = ? AND media_id = ? AND blob = ?",
                     {server, media_id, (*row)->blob});
    });
    if (!d) return tl::unexpected(d.error());
    return std::optional<MediaFile>();
  }
  return std::optional<MediaFile>(MediaFile{std::move(**blob), (*row)->type, (*row)->name});
}

// Thumbnails of PNG and JPEG uploads, made by the sandboxed worker process (src/thumbnail)
// at the spec's recommended sizes (a request is served the smallest preset of its method
// that covers it), shared through an LRU like full room states.
ApiResult<std::string> MatrixService::Impl::media_thumbnail(Ctx& ctx) {
  const std::string& server = ctx.params[0];
  const std::string& media_id = ctx.params[1];
  int want_w = std::atoi(ctx.query_param("width").c_str()), want_h = std::atoi(ctx.query_param("height").c_str());
  if (want_w <= 0 || want_h <= 0) return api_error(400, "M_INVALID_PARAM", "width and height must be positive integers");
  std::string method = ctx.query_param("method");
  if (method.empty()) method = "scale";
  if (method != "scale" && method != "crop") return api_error(400, "M_INVALID_PARAM", "method must be scale or crop");
  struct Preset {
    int w, h;
    const char* method;
  };
  static constexpr Preset kPresets[] = {{32, 32, "crop"},     {96, 96, "crop"},     {320, 240, "scale"},
                                        {640, 480, "scale"},  {800, 600, "scale"}};
  const Preset* chosen = nullptr;
  for (const auto& p : kPresets) {
    if (method != p.method) continue;
    chosen = &p;
    if (p.w >= want_w && p.h >= want_h) break;
  }
  auto file = find_media(ctx, server, media_id);
  if (!file) return tl::unexpected(file.error());
  const blobs::Blob* blob = &file->blob;
  std::string key = blob->hash + "/" + std::to_string(chosen->w) + "x" + std::to_string(chosen->h) + "/" + method;
  auto made = thumbnails.get(key, [&]() -> Result<std::string> {
    auto bytes = options.blobs->read(*blob);
    if (!bytes) return tl::unexpected(bytes.error());
    auto t = thumbnail::make_thumbnail("/proc/self/exe", *bytes, chosen->w, chosen->h,
                                       method == "crop" ? thumbnail::Method::crop : thumbnail::Method::scale);
    if (!t) return tl::unexpected(t.error());
    return t->content_type + "\n" + t->bytes;
  });
  if (!made) {
    if (made.error().code == Errc::invalid_argument)  // not an image we decode: clients show the original
      return api_error(404, "M_NOT_FOUND", "This media cannot be thumbnailed: " + made.error().message);
    return tl::unexpected(to_api_error(made.error()));
  }
  const std::string& value = **made;
  auto nl = value.find('\n');
  net::HttpResponse resp;
  resp.status = 200;
  resp.content_type = value.substr(0, nl);
  resp.body = value.substr(nl + 1);
  resp.headers.push_back({"Content-Disposition", "inline; filename=\"thumbnail\""});
  resp.headers.push_back({"Content-Security-Policy", "sandbox; default-src 'none'; script-src 'none'; object-src 'none';"});
  resp.headers.push_back({"X-Content-Type-Options", "nosniff"});
  resp.headers.push_back({"Access-Control-Allow-Origin", "*"});
  resp.headers.push_back({"Cache-Control", "private, max-age=86400"});
  ctx.respond(std::move(resp));
  return api_error(0, "", "");
}

// /_matrix/media/{v3,r0,v1}/...: the legacy media API (download unauthenticated as it was;
// upload, create and config with an access token).
void MatrixService::Impl::legacy_media(net::HttpRequest&& req, net::Respond respond) {
  std::string_view path = req.path;
  path.remove_prefix(std::string_view("/_matrix/media/").size());
  auto slash = path.find('/');
  std::string_view version = path.substr(0, slash);
  std::string_view rest = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
  if (version != "v3" && version != "r0" && version != "v1") {
    respond(error_response({404, "M_UNRECOGNIZED", "Unrecognized request"}));
    return;
  }
  std::string client_path = "/_matrix/client/v1/media/" + std::string(rest);
  bool download = rest.starts_with("download/") || rest.starts_with("thumbnail/");
  if (download && req.method == "GET") {
    // Legacy download needs no token: run the handler without authentication.
    req.path = client_path;
    dispatch(std::move(req), std::move(respond), /*skip_auth=*/true);
    return;
  }
  req.path = client_path;
  dispatch(std::move(req), std::move(respond));
}

namespace {

bool valid_media_id(std::string_view id) {
  return !id.empty() && id.size() <= 255 && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

bool valid_server_name(std::string_view s) {
  return !s.empty() && s.size() <= 255 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
  });
}

std::string_view header_of(const std::vector<std::pair<std::string, std::string>>& headers, std::string_view name) {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return {};
}

}  // namespace

// Fetches another server's media over federation (signed GET, v1.11 multipart response)
// and caches it as a blob owned by "matrix-remote:<server>" (so the daily quota bounds
// what one remote server can make us store).
ApiResult<std::string> MatrixService::Impl::fetch_remote_media(const std::string& server, const std::string& media_id) {
  if (!valid_server_name(server) || !valid_media_id(media_id)) return api_error(404, "M_NOT_FOUND", "No such media");
  const std::string target = "/_matrix/federation/v1/media/download/" + media_id;
  auto r = federation_get(server, target, static_cast<std::size_t>(options.max_upload_bytes) + (64 << 10));
  if (!r) {
    log.warn("matrix.remote_media_failed", {{"server", server}, {"media_id", media_id}, {"error", r.error().describe()}});
    if (r.error().code == Errc::resource_exhausted) return api_error(502, "M_TOO_LARGE", "The remote media is too large");
    return api_error(502, "M_UNKNOWN", "The remote server could not be reached");
  }
  if (r->status == 404) return api_error(404, "M_NOT_FOUND", "No such media on " + server);
  if (r->status != 200) return api_error(502, "M_UNKNOWN", fmt::format("The remote server answered {}", r->status));
  auto part = parse_media_multipart(header_of(r->headers, "content-type"), r->body);
  if (!part) return api_error(502, "M_UNKNOWN", "The remote server's answer is malformed: " + part.error().message);
  if (!part->location.empty()) return api_error(502, "M_UNKNOWN", "Redirected remote media is not fetched yet");
  std::string type = part->content_type.empty() || part->content_type.size() > 255 ? "application/octet-stream"
                                                                                   : part->content_type;
  std::string name = part->filename.substr(0, 255);
  auto blob = options.blobs->put("matrix-remote:" + server, name, type, part->bytes, media_expiry(clock.now_ms()));
  if (!blob) {
    if (blob.error().code == Errc::invalid_argument) return api_error(502, "M_TOO_LARGE", blob.error().message);
    if (blob.error().code == Errc::resource_exhausted)
      return api_error(502, "M_UNKNOWN", "This server caches no more of " + server + "'s media today");
    return tl::unexpected(to_api_error(blob.error()));
  }
  auto in = store.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    return tx.exec(
        "INSERT INTO matrix_remote_media(server, media_id, blob, content_type, filename, fetched_ms) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        {server, media_id, blob->id, type, name, clock.now_ms()});
  });
  if (!in || *in == 0) (void)options.blobs->remove(blob->id);  // fetched by another request meanwhile
  if (!in) return tl::unexpected(to_api_error(in.error()));
  return blob->id;
}

void MatrixService::Impl::install_media_federation_routes(net::Router& router) {
  std::shared_ptr<Impl> self = shared_from_this();
  net::RouteOptions o;
  o.blocking = true;
  router.add_prefix("GET", "/_matrix/federation/v1/media/download/",
                    [self](net::HttpRequest&& req, net::Respond respond) {
                      self->federation_media_download(std::move(req), std::move(respond));
                    },
                    o);
}

// GET /_matrix/federation/v1/media/download/{mediaId}: our own media to another server,
// as the spec's multipart/mixed (metadata part, then the bytes, sent from the file).
void MatrixService::Impl::federation_media_download(net::HttpRequest&& req, net::Respond respond) {
  auto origin = federation_origin(req);
  if (!origin) return respond(error_response(origin.error()));
  std::string media_id = req.path.substr(std::string_view("/_matrix/federation/v1/media/download/").size());
  if (!valid_media_id(media_id)) return respond(error_response({404, "M_NOT_FOUND", "No such media"}));
  Ctx ctx{std::move(req), {}, {}};
  auto file = find_media(ctx, options.server_name, media_id);
  if (!file) return respond(error_response(file.error()));
  const std::string boundary = random_hex(16);
  net::HttpResponse resp;
  resp.status = 200;
  std::string disposition = "attachment";
  if (!file->filename.empty()) disposition += "; filename=\"" + safe_header_value(file->filename) + "\"";
  auto envelope = media_multipart_envelope(boundary, safe_header_value(file->content_type), disposition);
  resp.content_type = std::move(envelope.content_type);
  resp.body_file = options.blobs->path_of(file->blob.hash);
  resp.body_file_prefix = std::move(envelope.prefix);
  resp.body_file_suffix = std::move(envelope.suffix);
  respond(std::move(resp));
}

}  // namespace hearth::matrix
