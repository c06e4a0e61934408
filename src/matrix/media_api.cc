// Media repository (client-server API "Content repository"): upload, authenticated download
// (/_matrix/client/v1/media/...), the legacy /_matrix/media/v3 download, config. Files live
// in MediaStore (content-addressed under <data>/media); the matrix_media table maps media
// ids to them with their uploader, type, name and size (for the per-user quota).
// Thumbnails of PNG/JPEG uploads come from the sandboxed worker process (src/thumbnail).
#include <fmt/format.h>

#include "core/json.h"
#include "core/random.h"
#include "matrix/service_internal.h"
#include "thumbnail/thumbnail.h"

namespace hearth::matrix {

namespace {

std::string safe_header_value(std::string_view s) {
  std::string out;
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x20 && c != '"' && c != '\\' && c != 0x7f) out += c;
  return out.substr(0, 200);
}

}  // namespace

ApiResult<std::string> MatrixService::Impl::media_config(Ctx&) {
  return fmt::format(R"({{"m.upload.size":{}}})", options.max_upload_bytes);
}

ApiResult<std::string> MatrixService::Impl::media_upload(Ctx& ctx) {
  // Streamed uploads (the legacy /_matrix/media/*/upload routes) arrive as a staged file.
  const bool staged = !ctx.http.body_file.empty();
  const std::int64_t size = staged ? ctx.http.body_file_bytes : static_cast<std::int64_t>(ctx.http.body.size());
  if (size > options.max_upload_bytes)
    return api_error(413, "M_TOO_LARGE", fmt::format("Uploads are limited to {} bytes", options.max_upload_bytes));
  std::string content_type(ctx.http.header("content-type"));
  if (content_type.empty() || content_type.size() > 255) content_type = "application/octet-stream";
  std::string filename = ctx.query_param("filename").substr(0, 255);
  auto used = store.read_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    auto row = tx.query_one("SELECT COALESCE(SUM(size), 0) FROM matrix_media WHERE user_id = ?", {ctx.user_id});
    if (!row) return tl::unexpected(row.error());
    return (*row)->integer(0);
  });
  if (!used) return tl::unexpected(to_api_error(used.error()));
  if (*used + size > options.media_quota_bytes)
    return api_error(413, "M_TOO_LARGE", "Your media quota is used up");
  // Durable before the row that names it.
  auto hex = staged ? media.put_file(ctx.http.body_file) : media.put(ctx.http.body);
  if (!hex) {
    log.error("matrix.media_write_failed", {{"error", hex.error().describe()}});
    return tl::unexpected(to_api_error(hex.error()));
  }
  std::string media_id = random_token(18);
  for (char& c : media_id)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = 'x';
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto in = tx.exec(
        "INSERT INTO matrix_media(media_id, user_id, sha256, content_type, filename, size, created_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        {media_id, ctx.user_id, *hex, content_type, filename, size, clock.now_ms()});
    if (!in) return tl::unexpected(in.error());
    return true;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  return fmt::format(R"({{"content_uri":{}}})", json_quote("mxc://" + options.server_name + "/" + media_id));
}

ApiResult<std::string> MatrixService::Impl::media_download(Ctx& ctx) {
  const std::string& server = ctx.params[0];
  const std::string& media_id = ctx.params[1];
  if (server != options.server_name) return api_error(404, "M_NOT_FOUND", "Remote media is not served");
  struct Meta {
    std::string sha, type, name;
  };
  auto meta = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<Meta>> {
    auto row = tx.query_one("SELECT sha256, content_type, filename FROM matrix_media WHERE media_id = ?", {media_id});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<Meta>();
    return std::optional<Meta>(Meta{std::string((*row)->text(0)), std::string((*row)->text(1)), std::string((*row)->text(2))});
  });
  if (!meta) return tl::unexpected(to_api_error(meta.error()));
  if (!*meta) return api_error(404, "M_NOT_FOUND", "No such media");
  auto bytes = media.get((*meta)->sha);
  if (!bytes) return tl::unexpected(to_api_error(bytes.error()));
  net::HttpResponse resp;
  resp.status = 200;
  resp.content_type = safe_header_value((*meta)->type);
  resp.body = std::move(*bytes);
  std::string name = ctx.params.size() > 2 ? ctx.params[2] : (*meta)->name;
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

// Thumbnails of PNG and JPEG uploads, made by the sandboxed worker process (src/thumbnail)
// at the spec's recommended sizes (a request is served the smallest preset of its method
// that covers it), shared through an LRU like full room states.
ApiResult<std::string> MatrixService::Impl::media_thumbnail(Ctx& ctx) {
  const std::string& server = ctx.params[0];
  const std::string& media_id = ctx.params[1];
  if (server != options.server_name) return api_error(404, "M_NOT_FOUND", "Remote media is not served");
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
  auto meta = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto row = tx.query_one("SELECT sha256 FROM matrix_media WHERE media_id = ?", {media_id});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<std::string>();
    return std::optional<std::string>(std::string((*row)->text(0)));
  });
  if (!meta) return tl::unexpected(to_api_error(meta.error()));
  if (!*meta) return api_error(404, "M_NOT_FOUND", "No such media");
  std::string key = **meta + "/" + std::to_string(chosen->w) + "x" + std::to_string(chosen->h) + "/" + method;
  auto made = thumbnails.get(key, [&]() -> Result<std::string> {
    auto bytes = media.get(**meta);
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
// upload and config with an access token).
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

}  // namespace hearth::matrix
