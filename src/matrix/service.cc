// MatrixService: construction, the route table and the dispatcher.
#include <cctype>
#include <charconv>
#include <filesystem>
#include <set>

#include <fmt/format.h>

#include "core/json.h"
#include "matrix/auth_rules.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

ApiError to_api_error(const Error& e) {
  switch (e.code) {
    case Errc::permission_denied: return {403, "M_FORBIDDEN", e.message};
    case Errc::not_found: return {404, "M_NOT_FOUND", e.message};
    case Errc::invalid_argument: return {400, "M_INVALID_PARAM", e.message};
    case Errc::already_exists: return {409, "M_UNKNOWN", e.message};
    case Errc::unauthenticated: return {401, "M_UNKNOWN_TOKEN", e.message};
    case Errc::expired: return {401, "M_UNKNOWN_TOKEN", e.message};
    case Errc::resource_exhausted: return {429, "M_LIMIT_EXCEEDED", e.message};
    case Errc::unavailable:
    case Errc::read_only: return {503, "M_UNKNOWN", "The server is busy; try again later"};
    default: return {500, "M_UNKNOWN", "Internal server error"};
  }
}

net::HttpResponse json_response(int status, std::string body) {
  auto r = net::HttpResponse::json(status, std::move(body));
  r.headers.push_back({"Access-Control-Allow-Origin", "*"});
  r.headers.push_back({"Cache-Control", "no-store"});
  return r;
}

net::HttpResponse error_response(const ApiError& e) {
  JsonWriter w;
  w.begin_object().key("errcode").value(e.errcode).key("error").value(e.error);
  if (e.errcode == "M_UNKNOWN_TOKEN") w.key("soft_logout").value(false);
  if (e.retry_after_ms > 0) w.key("retry_after_ms").value(e.retry_after_ms);
  w.end_object();
  auto r = json_response(e.status, w.take());
  if (e.status == 429)
    r.headers.push_back({"Retry-After", std::to_string(std::max<std::int64_t>(1, (e.retry_after_ms + 999) / 1000))});
  return r;
}

std::int64_t LoginThrottle::retry_after_ms(const std::string& user, const std::string& ip, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  std::int64_t wait = 0;
  for (auto [key, limit] : {std::pair{"u:" + user, kPerUser}, std::pair{"i:" + ip, kPerIp}}) {
    auto it = windows_.find(key);
    if (it == windows_.end() || now_ms - it->second.start_ms >= kWindowMs) continue;
    if (it->second.failures >= limit) wait = std::max(wait, it->second.start_ms + kWindowMs - now_ms);
  }
  return wait;
}

void LoginThrottle::failed(const std::string& user, const std::string& ip, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  if (windows_.size() > 100'000) {  // bounded: drop expired windows
    for (auto it = windows_.begin(); it != windows_.end();)
      it = (now_ms - it->second.start_ms >= kWindowMs) ? windows_.erase(it) : std::next(it);
  }
  for (const auto& key : {"u:" + user, "i:" + ip}) {
    Window& w = windows_[key];
    if (now_ms - w.start_ms >= kWindowMs) w = {now_ms, 0};
    ++w.failures;
  }
}

void LoginThrottle::succeeded(const std::string& user) {
  std::lock_guard lock(mu_);
  windows_.erase("u:" + user);
}

namespace {

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else if (s[i] == '+') {
      out += '+';
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string query_decode(std::string_view s) {
  std::string plus;
  for (char c : s) plus += (c == '+') ? ' ' : c;
  return percent_decode(plus);
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    auto pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

}  // namespace

std::string Ctx::query_param(std::string_view key) const {
  for (auto part : split(http.query, '&')) {
    auto eq = part.find('=');
    if (query_decode(part.substr(0, eq)) == key) return eq == std::string_view::npos ? "" : query_decode(part.substr(eq + 1));
  }
  return {};
}

ApiResult<JsonValue> Ctx::body(std::int64_t max_bytes) const {
  if (static_cast<std::int64_t>(http.body.size()) > max_bytes) return api_error(413, "M_TOO_LARGE", "Request body too large");
  if (http.body.find_first_not_of(" \t\r\n") == std::string::npos) return JsonValue::object();
  auto v = parse_json(http.body, {static_cast<std::size_t>(max_bytes), 64});
  if (!v) {
    if (v.error().kind == JsonError::not_json) return api_error(400, "M_NOT_JSON", "Content not JSON");
    return api_error(400, "M_BAD_JSON", v.error().message);
  }
  if (!v->is_object()) return api_error(400, "M_BAD_JSON", "The body must be a JSON object");
  return std::move(*v);
}

// ---- waiters

std::uint64_t SyncHub::generation() {
  std::lock_guard lock(mu_);
  return generation_;
}

bool SyncHub::park(std::shared_ptr<Waiter> w, std::uint64_t seen) {
  std::lock_guard lock(mu_);
  if (generation_ != seen) return false;
  for (const auto& k : w->keys) by_key_.emplace(k, w->id);
  waiters_[w->id] = std::move(w);
  return true;
}

namespace {
void unlink_keys(std::unordered_multimap<std::string, std::uint64_t>& by_key, const SyncHub::Waiter& w) {
  for (const auto& k : w.keys) {
    auto [b, e] = by_key.equal_range(k);
    for (auto it = b; it != e; ++it)
      if (it->second == w.id) {
        by_key.erase(it);
        break;
      }
  }
}
}  // namespace

std::shared_ptr<SyncHub::Waiter> SyncHub::take(std::uint64_t id) {
  std::lock_guard lock(mu_);
  auto it = waiters_.find(id);
  if (it == waiters_.end()) return nullptr;
  auto w = std::move(it->second);
  waiters_.erase(it);
  unlink_keys(by_key_, *w);
  return w;
}

std::vector<std::shared_ptr<SyncHub::Waiter>> SyncHub::wake(const std::vector<std::string>& keys) {
  std::lock_guard lock(mu_);
  ++generation_;
  std::vector<std::uint64_t> ids;
  for (const auto& k : keys) {
    auto [b, e] = by_key_.equal_range(k);
    for (auto it = b; it != e; ++it) ids.push_back(it->second);
  }
  std::vector<std::shared_ptr<Waiter>> out;
  for (auto id : ids) {
    auto it = waiters_.find(id);
    if (it == waiters_.end()) continue;
    out.push_back(std::move(it->second));
    waiters_.erase(it);
    unlink_keys(by_key_, *out.back());
  }
  return out;
}

std::vector<std::shared_ptr<SyncHub::Waiter>> SyncHub::take_all() {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Waiter>> out;
  for (auto& [id, w] : waiters_) out.push_back(std::move(w));
  waiters_.clear();
  by_key_.clear();
  return out;
}

std::size_t SyncHub::size() {
  std::lock_guard lock(mu_);
  return waiters_.size();
}

void MatrixService::Impl::notify(std::int64_t stream, std::vector<std::string> keys) {
  (void)stream;
  if (federation) federation_pump();
  if (push) push_pump();
  for (auto& w : hub.wake(keys)) {
    auto self = shared_from_this();
    if (!offload([self, w] { self->finish_waiter(w); }))
      w->respond(error_response({503, "M_UNKNOWN", "The server is busy; try again later"}));
  }
}

// ---- service

MatrixService::MatrixService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MatrixService::~MatrixService() = default;

Result<std::unique_ptr<MatrixService>> MatrixService::create(MatrixOptions options, accounts::Accounts& accounts,
                                                             store::Store& store, Clock& clock, Logger& log,
                                                             MetricsRegistry& metrics, Offload offload,
                                                             RunAfter run_after) {
  if (!parse_room_version(options.default_room_version))
    return fail(Errc::invalid_argument, "matrix: unsupported default room version");
  if (!options.blobs) return fail(Errc::invalid_argument, "matrix: media need the blob store");
  options.max_upload_bytes = std::min(options.max_upload_bytes, options.blobs->options().max_file_bytes);
  auto key = SigningKey::load_or_create(options.signing_key_path);
  if (!key) return tl::unexpected(key.error());
  auto impl = std::make_unique<Impl>(std::move(options), accounts, store, clock, log, metrics, std::move(offload),
                                     std::move(run_after), std::move(*key));
  if (impl->options.federation)
    if (auto r = impl->init_federation(); !r) return tl::unexpected(r.error());
  if (auto r = impl->init_push(); !r) return tl::unexpected(r.error());
  std::unique_ptr<MatrixService> service(new MatrixService(std::move(impl)));
  std::weak_ptr<Impl> weak = service->impl_;
  metrics.callback_gauge("hearth_matrix_sync_waiting", "Matrix /sync requests parked until an event arrives",
                         [weak] {
                           auto self = weak.lock();
                           return self ? static_cast<double>(self->hub.size()) : 0.0;
                         });
  metrics.callback_gauge("hearth_matrix_media_downloads_waiting",
                         "Matrix media downloads parked until a pending asynchronous upload arrives", [weak] {
                           auto self = weak.lock();
                           return self ? static_cast<double>(self->media_waiting()) : 0.0;
                         });
  return service;
}

Result<void> MatrixService::migrate() {
  if (auto r = impl_->store.migrate("matrix", matrix_migrations()); !r) return r;
  if (auto r = impl_->migrate_push(); !r) return r;
  if (auto r = impl_->migrate_media(); !r) return r;
  if (auto r = impl_->store.migrate("matrix_federation", federation_migrations()); !r) return r;
  // Sweep: Matrix users whose account was deleted while the daemon was stopped.
  auto users = impl_->accounts.list_users(impl_->options.server_name);
  if (!users) return tl::unexpected(users.error());
  std::set<std::string> live;
  for (const auto& u : *users) live.insert(impl_->user_id(u.localpart));
  auto known = impl_->store.read_sync([](store::Transaction& tx) -> Result<std::vector<std::string>> {
    std::vector<std::string> out;
    auto r = tx.query(
        "SELECT user_id FROM matrix_members WHERE membership IN ('join', 'invite', 'knock') "
        "UNION SELECT user_id FROM matrix_profiles UNION SELECT user_id FROM matrix_account_data",
        {}, [&](const store::Row& row) { out.emplace_back(row.text(0)); });
    if (!r) return tl::unexpected(r.error());
    return out;
  });
  if (!known) return tl::unexpected(known.error());
  for (const auto& user : *known) {
    if (live.count(user) || server_of(user) != impl_->options.server_name) continue;
    impl_->log.info("matrix.forgot_deleted_account", {{"user", user}});
    if (auto r = forget_account(user.substr(1, user.find(':') - 1) + "@" + impl_->options.server_name); !r) return r;
  }
  return ok();
}

Result<void> MatrixService::forget_account(const std::string& bare) {
  auto at = bare.find('@');
  if (at == std::string::npos || bare.substr(at + 1) != impl_->options.server_name) return ok();
  const std::string user = impl_->user_id(bare.substr(0, at));
  std::vector<std::string> keys{user};
  std::int64_t last = 0;
  auto r = impl_->store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto memberships = impl_->rooms.memberships_of(tx, user);
    if (!memberships) return tl::unexpected(memberships.error());
    for (const auto& m : *memberships) {
      if (m.membership != "join" && m.membership != "invite" && m.membership != "knock") continue;
      auto room = impl_->rooms.load_room(tx, m.room_id);
      if (!room) return tl::unexpected(room.error());
      JsonValue content = JsonValue::object();
      content.set("membership", JsonValue::string("leave"));
      content.set("reason", JsonValue::string("account deleted"));
      auto a = impl_->rooms.append(tx, *room, NewEvent{"m.room.member", user, user, std::move(content), {}, {}, {}},
                                   impl_->clock.now_ms());
      if (!a) return tl::unexpected(a.error());
      last = a->stream;
      keys.push_back(m.room_id);
    }
    for (auto sql : {"DELETE FROM matrix_profiles WHERE user_id = ?", "DELETE FROM matrix_account_data WHERE user_id = ?",
                     "DELETE FROM matrix_receipts WHERE user_id = ?", "DELETE FROM matrix_filters WHERE user_id = ?",
                     "DELETE FROM matrix_device_keys WHERE user_id = ?", "DELETE FROM matrix_one_time_keys WHERE user_id = ?",
                     "DELETE FROM matrix_fallback_keys WHERE user_id = ?", "DELETE FROM matrix_to_device WHERE user_id = ?",
                     "DELETE FROM matrix_cross_signing WHERE user_id = ?", "DELETE FROM matrix_backup_keys WHERE user_id = ?",
                     "DELETE FROM matrix_backup_versions WHERE user_id = ?",
                     "DELETE FROM matrix_push_rules WHERE user_id = ?", "DELETE FROM matrix_pushers WHERE user_id = ?",
                     "DELETE FROM matrix_login_tokens WHERE user_id = ?",
                     "DELETE FROM matrix_positions WHERE name = 'backup_version:' || ?"})
      if (auto d = tx.exec(sql, {user}); !d) return tl::unexpected(d.error());
    return true;
  });
  if (!r) return tl::unexpected(r.error());
  if (auto m = impl_->forget_media(user); !m) return m;
  impl_->notify(last, std::move(keys));
  return ok();
}

void MatrixService::set_account_deleted_hook(std::function<Result<void>(const std::string&)> hook) {
  std::lock_guard lock(impl_->mu);
  impl_->account_deleted = std::move(hook);
}

void MatrixService::start_background() {
  impl_->search_backfill();
  std::weak_ptr<Impl> weak = impl_;
  impl_->run_after(std::chrono::milliseconds(0), [weak] {
    if (auto s = weak.lock()) s->media_housekeeping();
  });
  impl_->run_after(std::chrono::milliseconds(0), [weak] {
    if (auto s = weak.lock()) {
      if (s->federation) s->federation_pump();
      if (s->push) s->push_pump();
    }
  });
}

void MatrixService::set_public_url(std::string url) {
  std::lock_guard lock(impl_->mu);
  impl_->public_url = std::move(url);
}

void MatrixService::release_waiters() {
  for (auto& w : impl_->hub.take_all()) impl_->finish_waiter(w);
  impl_->release_media_downloads();
}

std::string MatrixService::signing_key_id() const { return impl_->key.key_id(); }
std::string MatrixService::signing_public_key() const { return impl_->key.public_key_base64(); }

void MatrixService::install_routes(net::Router& router) {
  std::shared_ptr<Impl> impl = impl_;
  net::RouteOptions blocking;
  blocking.blocking = true;
  blocking.max_body_bytes = impl->options.max_body_bytes;
  router.add("GET", "/_matrix/client/versions",
             [impl](net::HttpRequest&&, net::Respond respond) { respond(impl->versions()); });
  router.add("GET", "/.well-known/matrix/client",
             [impl](net::HttpRequest&&, net::Respond respond) { respond(impl->well_known()); });
  // The server's signing key, self-signed (server-server API "Publishing Keys"), so that
  // other servers can verify this server's events once federation is enabled.
  router.add("GET", "/_matrix/key/v2/server", [impl](net::HttpRequest&&, net::Respond respond) {
    JsonValue keys = JsonValue::object();
    keys.set("server_name", JsonValue::string(impl->options.server_name));
    keys.set("valid_until_ts", JsonValue::integer(impl->clock.now_ms() + 7LL * 24 * 3600 * 1000));
    JsonValue verify = JsonValue::object();
    JsonValue key = JsonValue::object();
    key.set("key", JsonValue::string(impl->key.public_key_base64()));
    verify.set(impl->key.key_id(), std::move(key));
    keys.set("verify_keys", std::move(verify));
    keys.set("old_verify_keys", JsonValue::object());
    sign_json(keys, impl->options.server_name, impl->key);
    respond(json_response(200, canonical_json(keys)));
  });
  net::RouteOptions media_route = blocking;
  router.add_prefix("*", "/_matrix/media/",
                    [impl](net::HttpRequest&& req, net::Respond respond) { impl->legacy_media(std::move(req), std::move(respond)); },
                    media_route);
  // Every upload path streams its body to blobs' staging directory (never whole in
  // memory); the token, the declared length and the quotas are checked before any body
  // byte is read (admit_upload), and refused in Matrix's format.
  net::RouteOptions upload_route = media_route;
  upload_route.max_body_bytes = impl->options.max_upload_bytes + 1;  // one byte more: answered M_TOO_LARGE in JSON
  upload_route.body_staging_dir = impl->options.blobs->staging_dir();
  upload_route.check_body = [impl](const net::HttpRequest& head) { return impl->admit_upload(head); };
  auto legacy = [impl](net::HttpRequest&& req, net::Respond respond) { impl->legacy_media(std::move(req), std::move(respond)); };
  for (const char* version : {"v3", "r0", "v1"}) {
    router.add("POST", fmt::format("/_matrix/media/{}/upload", version), legacy, upload_route);
    router.add_prefix("PUT", fmt::format("/_matrix/media/{}/upload/", version), legacy, upload_route);
  }
  router.add("POST", "/_matrix/client/v1/media/upload",
             [impl](net::HttpRequest&& req, net::Respond respond) { impl->dispatch(std::move(req), std::move(respond)); },
             upload_route);
  if (impl->federation) impl->install_media_federation_routes(router);
  if (impl->federation) impl->install_federation_routes(router);
  // Federation paths not served (all of them while matrix.federation is off): Matrix's
  // error format (M_UNRECOGNIZED).
  for (const char* prefix : {"/_matrix/federation/", "/_matrix/key/"})
    router.add_prefix("*", prefix, [](net::HttpRequest&&, net::Respond respond) {
      respond(error_response({404, "M_UNRECOGNIZED", "Unrecognized request"}));
    });
  router.add_prefix("*", "/_matrix/client/",
                    [impl](net::HttpRequest&& req, net::Respond respond) { impl->dispatch(std::move(req), std::move(respond)); },
                    blocking);
}

namespace {

struct Route {
  std::string_view method;
  std::string_view pattern;  // segments after /_matrix/client/<version>/, "{}" = parameter
  bool auth;
  std::function<std::optional<ApiResult<std::string>>(MatrixService::Impl&, Ctx&)> handler;
};

template <typename F>
auto plain(F f) {
  return [f](MatrixService::Impl& impl, Ctx& ctx) -> std::optional<ApiResult<std::string>> { return (impl.*f)(ctx); };
}

const std::vector<Route>& routes() {
  using I = MatrixService::Impl;
  static const std::vector<Route> table = {
      {"GET", "login", false, plain(&I::login_flows)},
      {"POST", "login", false, plain(&I::login)},
      {"POST", "login/get_token", true, plain(&I::get_login_token)},
      {"POST", "register", false, plain(&I::do_register)},
      {"GET", "register/available", false, plain(&I::register_available)},
      {"GET", "register/m.login.registration_token/validity", false, plain(&I::token_validity)},
      {"GET", "account/whoami", true, plain(&I::whoami)},
      {"POST", "account/password", true, plain(&I::password_change)},
      {"POST", "account/deactivate", true, plain(&I::deactivate)},
      {"POST", "logout", true, plain(&I::logout)},
      {"POST", "logout/all", true, plain(&I::logout_all)},
      {"GET", "capabilities", true, plain(&I::capabilities)},
      {"GET", "pushrules", true, plain(&I::pushrules)},
      {"GET", "pushrules/", true, plain(&I::pushrules)},
      {"GET", "pushrules/global/", true, plain(&I::pushrules)},
      {"GET", "pushrules/{}/{}/{}", true, plain(&I::pushrule_get)},
      {"PUT", "pushrules/{}/{}/{}", true, plain(&I::pushrule_change)},
      {"DELETE", "pushrules/{}/{}/{}", true, plain(&I::pushrule_change)},
      {"GET", "pushrules/{}/{}/{}/enabled", true, plain(&I::pushrule_get)},
      {"PUT", "pushrules/{}/{}/{}/enabled", true, plain(&I::pushrule_change)},
      {"GET", "pushrules/{}/{}/{}/actions", true, plain(&I::pushrule_get)},
      {"PUT", "pushrules/{}/{}/{}/actions", true, plain(&I::pushrule_change)},
      {"GET", "pushers", true, plain(&I::pushers_get)},
      {"POST", "pushers/set", true, plain(&I::pushers_set)},
      {"POST", "user/{}/filter", true, plain(&I::filter_upload)},
      {"GET", "user/{}/filter/{}", true, plain(&I::filter_get)},
      {"POST", "createRoom", true, plain(&I::create_room)},
      {"POST", "join/{}", true,
       [](I& impl, Ctx& ctx) -> std::optional<ApiResult<std::string>> { return impl.join(ctx, ctx.params[0]); }},
      {"POST", "rooms/{}/join", true,
       [](I& impl, Ctx& ctx) -> std::optional<ApiResult<std::string>> { return impl.join(ctx, ctx.params[0]); }},
      {"POST", "rooms/{}/leave", true,
       [](I& impl, Ctx& ctx) -> std::optional<ApiResult<std::string>> {
         return impl.membership_change(ctx, ctx.params[0], "leave", false);
       }},
      {"POST", "rooms/{}/invite", true,
       [](I& impl, Ctx& ctx) -> std::optional<ApiResult<std::string>> {
         return impl.membership_change(ctx, ctx.params[0], "invite", true);
       }},
      {"POST", "rooms/{}/kick", true,
       [](I& impl, Ctx& ctx) -> std::optional<ApiResult<std::string>> {
         return impl.membership_change(ctx, ctx.params[0], "leave", true);
       }},
      {"POST", "rooms/{}/ban", true,
       [](I& impl, Ctx& ctx) -> std::optional<ApiResult<std::string>> {
         return impl.membership_change(ctx, ctx.params[0], "ban", true);
       }},
      {"POST", "rooms/{}/unban", true,
       [](I& impl, Ctx& ctx) -> std::optional<ApiResult<std::string>> {
         return impl.membership_change(ctx, ctx.params[0], "unban", true);
       }},
      {"POST", "rooms/{}/forget", true,
       [](I&, Ctx&) -> std::optional<ApiResult<std::string>> { return std::string("{}"); }},
      {"PUT", "rooms/{}/send/{}/{}", true, plain(&I::send_event)},
      {"PUT", "rooms/{}/redact/{}/{}", true, plain(&I::redact)},
      {"PUT", "rooms/{}/state/{}", true, plain(&I::put_state)},
      {"PUT", "rooms/{}/state/{}/{}", true, plain(&I::put_state)},
      {"GET", "rooms/{}/state", true, plain(&I::get_state)},
      {"GET", "rooms/{}/state/{}", true, plain(&I::get_state_event)},
      {"GET", "rooms/{}/state/{}/{}", true, plain(&I::get_state_event)},
      {"GET", "rooms/{}/messages", true, plain(&I::messages)},
      {"GET", "rooms/{}/members", true, plain(&I::members)},
      {"GET", "rooms/{}/joined_members", true, plain(&I::joined_members)},
      {"GET", "rooms/{}/event/{}", true, plain(&I::get_event)},
      {"GET", "joined_rooms", true, plain(&I::joined_rooms)},
      {"GET", "directory/room/{}", false, plain(&I::alias_get)},
      {"PUT", "directory/room/{}", true, plain(&I::alias_put)},
      {"DELETE", "directory/room/{}", true, plain(&I::alias_delete)},
      {"GET", "rooms/{}/aliases", true, plain(&I::room_aliases)},
      {"GET", "rooms/{}/context/{}", true, plain(&I::context)},
      {"GET", "rooms/{}/relations/{}", true, plain(&I::relations)},
      {"GET", "rooms/{}/relations/{}/{}", true, plain(&I::relations)},
      {"GET", "rooms/{}/relations/{}/{}/{}", true, plain(&I::relations)},
      {"GET", "rooms/{}/threads", true, plain(&I::threads)},
      {"POST", "search", true, plain(&I::search)},
      {"POST", "rooms/{}/upgrade", true, plain(&I::upgrade_room)},
      {"POST", "knock/{}", true, plain(&I::knock)},
      {"GET", "directory/list/room/{}", false, plain(&I::visibility_get)},
      {"PUT", "directory/list/room/{}", true, plain(&I::visibility_put)},
      {"GET", "publicRooms", false, plain(&I::public_rooms)},
      {"POST", "publicRooms", true, plain(&I::public_rooms)},
      {"GET", "profile/{}", false, plain(&I::profile_get)},
      {"GET", "profile/{}/displayname", false, plain(&I::profile_field_get)},
      {"GET", "profile/{}/avatar_url", false, plain(&I::profile_field_get)},
      {"PUT", "profile/{}/displayname", true, plain(&I::profile_field_put)},
      {"PUT", "profile/{}/avatar_url", true, plain(&I::profile_field_put)},
      {"GET", "user/{}/account_data/{}", true, plain(&I::account_data_get)},
      {"PUT", "user/{}/account_data/{}", true, plain(&I::account_data_put)},
      {"GET", "user/{}/rooms/{}/account_data/{}", true, plain(&I::account_data_get)},
      {"PUT", "user/{}/rooms/{}/account_data/{}", true, plain(&I::account_data_put)},
      {"GET", "user/{}/rooms/{}/tags", true, plain(&I::tags_get)},
      {"PUT", "user/{}/rooms/{}/tags/{}", true,
       [](I& impl, Ctx& ctx) -> std::optional<ApiResult<std::string>> { return impl.tag_change(ctx, false); }},
      {"DELETE", "user/{}/rooms/{}/tags/{}", true,
       [](I& impl, Ctx& ctx) -> std::optional<ApiResult<std::string>> { return impl.tag_change(ctx, true); }},
      {"PUT", "rooms/{}/typing/{}", true, plain(&I::typing_put)},
      {"GET", "presence/{}/status", true, plain(&I::presence_get)},
      {"PUT", "presence/{}/status", true, plain(&I::presence_put)},
      {"POST", "rooms/{}/receipt/{}/{}", true, plain(&I::receipt)},
      {"POST", "rooms/{}/read_markers", true, plain(&I::read_markers)},
      {"GET", "devices", true, plain(&I::devices)},
      {"GET", "devices/{}", true, plain(&I::device)},
      {"PUT", "devices/{}", true, plain(&I::device_put)},
      {"POST", "user_directory/search", true, plain(&I::user_directory_search)},
      {"DELETE", "devices/{}", true, plain(&I::device_delete)},
      {"POST", "delete_devices", true, plain(&I::delete_devices)},
      {"POST", "keys/upload", true, plain(&I::keys_upload)},
      {"POST", "keys/query", true, plain(&I::keys_query)},
      {"POST", "keys/claim", true, plain(&I::keys_claim)},
      {"GET", "keys/changes", true, plain(&I::keys_changes)},
      {"POST", "keys/device_signing/upload", true, plain(&I::device_signing_upload)},
      {"POST", "keys/signatures/upload", true, plain(&I::signatures_upload)},
      {"PUT", "sendToDevice/{}/{}", true, plain(&I::send_to_device)},
      {"GET", "media/config", true, plain(&I::media_config)},
      {"POST", "media/upload", true, plain(&I::media_upload)},
      {"POST", "media/create", true, plain(&I::media_create)},
      {"PUT", "media/upload/{}/{}", true, plain(&I::media_upload_to)},
      {"GET", "media/download/{}/{}", true, plain(&I::media_download)},
      {"GET", "media/download/{}/{}/{}", true, plain(&I::media_download)},
      {"GET", "media/thumbnail/{}/{}", true, plain(&I::media_thumbnail)},
      {"POST", "room_keys/version", true, plain(&I::backup_version_create)},
      {"GET", "room_keys/version", true, plain(&I::backup_version_get)},
      {"GET", "room_keys/version/{}", true, plain(&I::backup_version_get)},
      {"PUT", "room_keys/version/{}", true, plain(&I::backup_version_put)},
      {"DELETE", "room_keys/version/{}", true, plain(&I::backup_version_delete)},
      {"PUT", "room_keys/keys", true, plain(&I::backup_keys)},
      {"PUT", "room_keys/keys/{}", true, plain(&I::backup_keys)},
      {"PUT", "room_keys/keys/{}/{}", true, plain(&I::backup_keys)},
      {"GET", "room_keys/keys", true, plain(&I::backup_keys)},
      {"GET", "room_keys/keys/{}", true, plain(&I::backup_keys)},
      {"GET", "room_keys/keys/{}/{}", true, plain(&I::backup_keys)},
      {"DELETE", "room_keys/keys", true, plain(&I::backup_keys)},
      {"DELETE", "room_keys/keys/{}", true, plain(&I::backup_keys)},
      {"DELETE", "room_keys/keys/{}/{}", true, plain(&I::backup_keys)},
      {"GET", "sync", true, [](I& impl, Ctx& ctx) { return impl.sync(ctx); }},
  };
  return table;
}

bool match(std::string_view pattern, const std::vector<std::string_view>& segs, std::vector<std::string>& params) {
  auto pat = split(pattern, '/');
  if (pat.size() != segs.size()) return false;
  params.clear();
  for (std::size_t i = 0; i < pat.size(); ++i) {
    if (pat[i] == "{}") {
      params.push_back(percent_decode(segs[i]));
    } else if (pat[i] != segs[i]) {
      return false;
    }
  }
  return true;
}

}  // namespace

ApiResult<accounts::TokenOwner> MatrixService::Impl::authenticate(const Ctx& ctx) {
  std::string token;
  std::string_view authz = ctx.http.header("authorization");
  if (authz.size() > 7 && (authz.substr(0, 7) == "Bearer " || authz.substr(0, 7) == "bearer ")) {
    token = std::string(authz.substr(7));
  } else {
    token = ctx.query_param("access_token");
  }
  if (token.empty()) return api_error(401, "M_MISSING_TOKEN", "Missing access token");
  auto owner = accounts.lookup_token(token);
  if (!owner || owner->domain != options.server_name) {
    if (owner || owner.error().code == Errc::unauthenticated || owner.error().code == Errc::expired)
      return api_error(401, "M_UNKNOWN_TOKEN", "Unknown or expired access token");
    return tl::unexpected(to_api_error(owner.error()));
  }
  return std::move(*owner);
}

void MatrixService::Impl::dispatch(net::HttpRequest&& req, net::Respond respond, bool skip_auth) {
  std::string_view path = req.path;
  constexpr std::string_view prefix = "/_matrix/client/";
  path.remove_prefix(prefix.size());
  auto slash = path.find('/');
  std::string_view version = path.substr(0, slash);
  // "unstable": the prefix older clients (and SyTest) still use for endpoints that were
  // unstable once (cross-signing, key backup); served like the stable ones.
  if (slash == std::string_view::npos ||
      (version != "r0" && version != "v3" && version != "v1" && version != "unstable")) {
    respond(error_response({404, "M_UNRECOGNIZED", "Unrecognized request"}));
    return;
  }
  auto segs = split(path.substr(slash + 1), '/');
  if (req.method == "OPTIONS") {
    auto r = json_response(200, "{}");
    r.headers.push_back({"Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS"});
    r.headers.push_back({"Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization"});
    respond(std::move(r));
    return;
  }
  Ctx ctx;
  const Route* found = nullptr;
  bool path_matched = false;
  for (const auto& r : routes()) {
    if (!match(r.pattern, segs, ctx.params)) continue;
    path_matched = true;
    if (r.method == req.method) {
      found = &r;
      break;
    }
  }
  if (!found) {
    respond(error_response(path_matched ? ApiError{405, "M_UNRECOGNIZED", "Method not allowed"}
                                        : ApiError{404, "M_UNRECOGNIZED", "Unrecognized request"}));
    return;
  }
  auto params = std::move(ctx.params);
  ctx = Ctx{std::move(req), std::move(respond), std::move(params)};
  if (found->auth && !skip_auth) {
    auto owner = authenticate(ctx);
    if (!owner) {
      ctx.respond(error_response(owner.error()));
      return;
    }
    ctx.localpart = owner->localpart;
    ctx.user_id = user_id(owner->localpart);
    ctx.device_id = owner->device_id;
  }
  auto result = found->handler(*this, ctx);
  if (!result) return;  // parked (long-poll); answered later
  if (*result) {
    ctx.respond(json_response(200, std::move(**result)));
  } else if (result->error().status != 0) {  // 0: the handler already answered
    ctx.respond(error_response(result->error()));
  }
}

}  // namespace hearth::matrix
