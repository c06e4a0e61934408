// Account endpoints: versions, discovery, login, registration (UIA with registration
// tokens backed by accounts/ invitations), whoami, logout, capabilities, filters.
#include <cctype>

#include <fmt/format.h>

#include "core/json.h"
#include "core/random.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

net::HttpResponse MatrixService::Impl::versions() {
  // v1.11+ would make clients use authenticated media, which is not served yet.
  return json_response(200,
                       R"({"versions":["r0.5.0","r0.6.0","r0.6.1","v1.1","v1.2","v1.3","v1.4","v1.5","v1.6"],)"
                       R"("unstable_features":{}})");
}

net::HttpResponse MatrixService::Impl::well_known() {
  std::string url;
  {
    std::lock_guard lock(mu);
    url = public_url;
  }
  if (url.empty()) return error_response({404, "M_NOT_FOUND", "No public URL configured"});
  JsonWriter w;
  w.begin_object().key("m.homeserver").begin_object().key("base_url").value(url).end_object().end_object();
  return json_response(200, w.take());
}

ApiResult<std::string> MatrixService::Impl::login_flows(Ctx&) {
  return std::string(R"({"flows":[{"type":"m.login.password"},{"type":"m.login.token","get_login_token":true}]})");
}

namespace {

// Matrix user id localparts (spec: "User Identifiers").
bool valid_localpart(std::string_view s) {
  if (s.empty() || s.size() > 200) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '=' || c == '-' ||
              c == '/' || c == '+';
    if (!ok) return false;
  }
  return true;
}

std::string session_reply(const std::string& user_id, const accounts::Session& s, const std::string& server) {
  JsonWriter w;
  w.begin_object()
      .key("user_id").value(user_id)
      .key("access_token").value(s.access_token)
      .key("device_id").value(s.device_id)
      .key("home_server").value(server)
      .end_object();
  return w.take();
}

}  // namespace

ApiResult<std::string> MatrixService::Impl::login(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  if (body->string_at("type") == "m.login.token") return login_with_token(ctx, *body);
  if (body->string_at("type") != "m.login.password")
    return api_error(400, "M_UNKNOWN", "Only m.login.password and m.login.token are supported");
  std::string user;
  if (const JsonValue* id = body->get("identifier"); id && id->is_object()) {
    if (id->string_at("type") != "m.id.user") return api_error(400, "M_UNKNOWN", "Only m.id.user identifiers are supported");
    user = std::string(id->string_at("user"));
  } else {
    user = std::string(body->string_at("user"));
  }
  const JsonValue* password = body->get("password");
  if (user.empty() || !password || !password->is_string()) return api_error(400, "M_MISSING_PARAM", "user and password are required");
  std::string localpart = user;
  if (!user.empty() && user[0] == '@') {
    auto colon = user.find(':');
    if (colon == std::string::npos || user.substr(colon + 1) != options.server_name)
      return api_error(403, "M_FORBIDDEN", "Invalid username or password");
    localpart = user.substr(1, colon - 1);
  }
  for (auto& c : localpart) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::int64_t now = clock.now_ms();
  if (std::int64_t wait = login_throttle.retry_after_ms(localpart, ctx.http.remote_ip, now))
    return tl::unexpected(ApiError{429, "M_LIMIT_EXCEEDED", "Too many failed logins; try again later", wait});
  auto verified = accounts.verify_password(options.server_name, localpart, password->as_string());
  if (!verified) {
    if (verified.error().code == Errc::unauthenticated || verified.error().code == Errc::not_found ||
        verified.error().code == Errc::invalid_argument) {
      login_throttle.failed(localpart, ctx.http.remote_ip, now);
      log.info("matrix.login_failed", {{"user", user_id(localpart)}, {"ip", ctx.http.remote_ip}});
      return api_error(403, "M_FORBIDDEN", "Invalid username or password");
    }
    return tl::unexpected(to_api_error(verified.error()));
  }
  auto session = accounts.create_session(options.server_name, localpart, body->string_at("device_id"),
                                         body->string_at("initial_device_display_name"));
  if (!session) return tl::unexpected(to_api_error(session.error()));
  login_throttle.succeeded(localpart);
  log.info("matrix.login", {{"user", user_id(localpart)}, {"device", session->device_id}});
  return session_reply(user_id(localpart), *session, options.server_name);
}

namespace {
constexpr std::int64_t kLoginTokenTtlMs = 120'000;
std::string token_hash(std::string_view token) { return base64_unpadded(sha256(token)); }
}  // namespace

// POST /v1/login/get_token (UIA with the password): a single-use token, valid two
// minutes, for logging in another device (m.login.token). Only its hash is stored.
ApiResult<std::string> MatrixService::Impl::get_login_token(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  if (auto a = require_password(ctx, *body); !a) return tl::unexpected(a.error());
  std::string token = random_token(24);
  std::int64_t now = clock.now_ms();
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    if (auto d = tx.exec("DELETE FROM matrix_login_tokens WHERE expires_ms < ?", {now}); !d)
      return tl::unexpected(d.error());
    auto n = tx.query_one("SELECT COUNT(*) FROM matrix_login_tokens WHERE user_id = ?", {ctx.user_id});
    if (!n) return tl::unexpected(n.error());
    if (*n && (*n)->integer(0) >= 10) return fail(Errc::resource_exhausted, "Too many login tokens; try again later");
    auto up = tx.exec("INSERT INTO matrix_login_tokens(token_hash, user_id, expires_ms) VALUES (?, ?, ?)",
                      {token_hash(token), ctx.user_id, now + kLoginTokenTtlMs});
    if (!up) return tl::unexpected(up.error());
    return true;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  return fmt::format(R"({{"expires_in_ms":{},"login_token":{}}})", kLoginTokenTtlMs, json_quote(token));
}

ApiResult<std::string> MatrixService::Impl::login_with_token(Ctx& ctx, const JsonValue& body) {
  std::string token(body.string_at("token"));
  if (token.empty() || token.size() > 256) return api_error(400, "M_MISSING_PARAM", "token is required");
  std::int64_t now = clock.now_ms();
  const std::string& ip = ctx.http.remote_ip;
  if (std::int64_t wait = login_throttle.retry_after_ms("", ip, now))
    return tl::unexpected(ApiError{429, "M_LIMIT_EXCEEDED", "Too many failed logins; try again later", wait});
  // Single use: the row is deleted in the same write that reads it.
  auto found = store.write_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto row = tx.query_one("SELECT user_id, expires_ms FROM matrix_login_tokens WHERE token_hash = ?", {token_hash(token)});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<std::string>();
    std::string u((*row)->text(0));
    bool valid = (*row)->integer(1) >= now;
    if (auto d = tx.exec("DELETE FROM matrix_login_tokens WHERE token_hash = ?", {token_hash(token)}); !d)
      return tl::unexpected(d.error());
    return valid ? std::optional<std::string>(u) : std::nullopt;
  });
  if (!found) return tl::unexpected(to_api_error(found.error()));
  if (!*found) {
    login_throttle.failed("", ip, now);
    return api_error(403, "M_FORBIDDEN", "Invalid or expired login token");
  }
  const std::string user = **found;
  std::string localpart = user.substr(1, user.find(':') - 1);
  auto session = accounts.create_session(options.server_name, localpart, body.string_at("device_id"),
                                         body.string_at("initial_device_display_name"));
  if (!session) return tl::unexpected(to_api_error(session.error()));
  log.info("matrix.login_token", {{"user", user}, {"device", session->device_id}});
  return session_reply(user, *session, options.server_name);
}

namespace {
std::string uia_reply(std::string_view flows_json, const std::string& session, std::string_view errcode = {},
                      std::string_view error = {}) {
  // Single-stage flows: no stage is ever completed when this is answered.
  std::string out = fmt::format("{{\"flows\":{},\"params\":{{}},\"session\":{},\"completed\":[]", flows_json,
                                json_quote(session));
  if (!errcode.empty()) out += fmt::format(",\"errcode\":{},\"error\":{}", json_quote(errcode), json_quote(error));
  return out + "}";
}
}  // namespace

ApiResult<std::string> MatrixService::Impl::do_register(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  std::string kind = ctx.query_param("kind");
  if (!kind.empty() && kind != "user") return api_error(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled");
  auto policy = accounts.registration_policy(options.server_name);
  if (!policy) return tl::unexpected(to_api_error(policy.error()));
  if (*policy == accounts::RegistrationPolicy::closed) return api_error(403, "M_FORBIDDEN", "Registration is disabled");

  std::string localpart(body->string_at("username"));
  if (localpart.empty()) localpart = "u" + random_hex(6);
  // User ids are lower case: "Alice" registers @alice (as XMPP's nodeprep does too).
  for (char& c : localpart) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (!valid_localpart(localpart))
    return api_error(400, "M_INVALID_USERNAME", "User names may contain only a-z, 0-9 and . _ = - / +");
  if (auto existing = accounts.get_user(options.server_name, localpart); existing)
    return api_error(400, "M_USER_IN_USE", "That user name is taken");

  std::string_view flows = *policy == accounts::RegistrationPolicy::open
                               ? R"([{"stages":["m.login.dummy"]},{"stages":["m.login.registration_token"]}])"
                               : R"([{"stages":["m.login.registration_token"]}])";
  const JsonValue* auth = body->get("auth");
  // A request without auth asks for the flows (clients send {} first): answer the 401
  // before requiring the password.
  const JsonValue* password = body->get("password");
  bool has_password = password && password->is_string() && !password->as_string().empty();
  // Our flows have one stage each, so a session carries no server-side state: the
  // client's session id is echoed (or a new one made) and nothing is stored, which also
  // leaves nothing for a flood of unauthenticated requests to fill.
  std::string session(auth ? auth->string_at("session") : std::string_view());
  if (session.empty() || session.size() > 64) session = random_token(18);
  auto unauthorized = [&](std::string_view errcode, std::string_view error) -> ApiResult<std::string> {
    // 401 with the UIA body (the spec's "User-Interactive Authentication API").
    ctx.respond(json_response(401, uia_reply(flows, session, errcode, error)));
    return api_error(0, "", "");  // already answered
  };
  if (!auth || !auth->is_object() || auth->string_at("type").empty()) return unauthorized({}, {});
  if (!has_password) return api_error(400, "M_MISSING_PARAM", "A password is required");
  std::string_view type = auth->string_at("type");
  std::optional<std::string> token;
  if (type == "m.login.registration_token") {
    token = std::string(auth->string_at("token"));
    auto invite = accounts.check_invite(*token);
    if (!invite || invite->domain != options.server_name)
      return unauthorized("M_FORBIDDEN", "Invalid or used registration token");
  } else if (type != "m.login.dummy" || *policy != accounts::RegistrationPolicy::open) {
    return unauthorized("M_FORBIDDEN", "Unsupported authentication stage");
  }
  auto user = accounts.register_user(options.server_name, localpart, password->as_string(),
                                     token ? std::optional<std::string_view>(*token) : std::nullopt);
  if (!user) {
    switch (user.error().code) {
      case Errc::already_exists: return api_error(400, "M_USER_IN_USE", "That user name is taken");
      case Errc::invalid_argument: return api_error(400, "M_INVALID_USERNAME", user.error().message);
      case Errc::not_found:
      case Errc::expired:
      case Errc::permission_denied: return unauthorized("M_FORBIDDEN", "Invalid or used registration token");
      default: return tl::unexpected(to_api_error(user.error()));
    }
  }
  log.info("matrix.registered", {{"user", user_id(localpart)}});
  const JsonValue* inhibit = body->get("inhibit_login");
  if (inhibit && inhibit->is_bool() && inhibit->as_bool()) {
    JsonWriter w;
    w.begin_object().key("user_id").value(user_id(localpart)).end_object();
    return w.take();
  }
  auto s = accounts.create_session(options.server_name, localpart, body->string_at("device_id"),
                                   body->string_at("initial_device_display_name"));
  if (!s) return tl::unexpected(to_api_error(s.error()));
  return session_reply(user_id(localpart), *s, options.server_name);
}

ApiResult<std::string> MatrixService::Impl::register_available(Ctx& ctx) {
  std::string name = ctx.query_param("username");
  if (!valid_localpart(name)) return api_error(400, "M_INVALID_USERNAME", "Invalid user name");
  if (accounts.get_user(options.server_name, name)) return api_error(400, "M_USER_IN_USE", "That user name is taken");
  return std::string(R"({"available":true})");
}

ApiResult<std::string> MatrixService::Impl::token_validity(Ctx& ctx) {
  auto invite = accounts.check_invite(ctx.query_param("token"));
  bool valid = invite && invite->domain == options.server_name;
  return std::string(valid ? R"({"valid":true})" : R"({"valid":false})");
}

ApiResult<std::string> MatrixService::Impl::whoami(Ctx& ctx) {
  JsonWriter w;
  w.begin_object().key("user_id").value(ctx.user_id).key("device_id").value(ctx.device_id).key("is_guest").value(false).end_object();
  return w.take();
}

ApiResult<std::string> MatrixService::Impl::logout(Ctx& ctx) {
  auto r = accounts.delete_device(options.server_name, ctx.localpart, ctx.device_id);
  if (!r && r.error().code != Errc::not_found) return tl::unexpected(to_api_error(r.error()));
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::logout_all(Ctx& ctx) {
  auto devices = accounts.list_devices(options.server_name, ctx.localpart);
  if (!devices) return tl::unexpected(to_api_error(devices.error()));
  for (const auto& d : *devices) {
    auto r = accounts.delete_device(options.server_name, ctx.localpart, d.device_id);
    if (!r && r.error().code != Errc::not_found) return tl::unexpected(to_api_error(r.error()));
  }
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::capabilities(Ctx&) {
  return fmt::format(
      R"({{"capabilities":{{"m.room_versions":{{"default":{},"available":{{"10":"stable","11":"stable"}}}},)"
      R"("m.change_password":{{"enabled":true}},"m.get_login_token":{{"enabled":true}},"m.set_displayname":{{"enabled":false}},)"
      R"("m.set_avatar_url":{{"enabled":false}},"m.3pid_changes":{{"enabled":false}}}}}})",
      json_quote(options.default_room_version));
}

ApiResult<std::string> MatrixService::Impl::filter_upload(Ctx& ctx) {
  if (ctx.params[0] != ctx.user_id) return api_error(403, "M_FORBIDDEN", "Cannot create filters for other users");
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  if (auto f = SyncFilter::parse(*body); !f) return api_error(400, "M_BAD_JSON", f.error().message);
  std::string json = canonical_json(*body);
  auto id = store.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    auto r = tx.exec("INSERT INTO matrix_filters(user_id, json) VALUES (?, ?)", {ctx.user_id, json});
    if (!r) return tl::unexpected(r.error());
    return tx.last_insert_id();
  });
  if (!id) return tl::unexpected(to_api_error(id.error()));
  return fmt::format(R"({{"filter_id":"{}"}})", *id);
}

ApiResult<std::string> MatrixService::Impl::filter_get(Ctx& ctx) {
  if (ctx.params[0] != ctx.user_id) return api_error(403, "M_FORBIDDEN", "Cannot read other users' filters");
  auto json = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto row = tx.query_one("SELECT json FROM matrix_filters WHERE filter_id = ? AND user_id = ?",
                            {std::atoll(ctx.params[1].c_str()), ctx.user_id});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<std::string>();
    return std::optional<std::string>(std::string((*row)->text(0)));
  });
  if (!json) return tl::unexpected(to_api_error(json.error()));
  if (!*json) return api_error(404, "M_NOT_FOUND", "No such filter");
  return **json;
}

}  // namespace hearth::matrix

namespace hearth::matrix {

// POST /account/password (UIA m.login.password): new password for XMPP and Matrix alike;
// with logout_devices (default true) every other device is logged out (its keys go too).
ApiResult<std::string> MatrixService::Impl::password_change(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* pw = body->get("new_password");
  if (!pw || !pw->is_string() || pw->as_string().empty() || pw->as_string().size() > 1024)
    return api_error(400, "M_MISSING_PARAM", "new_password is required");
  if (auto a = require_password(ctx, *body); !a) return tl::unexpected(a.error());
  if (auto r = accounts.set_password(options.server_name, ctx.localpart, pw->as_string()); !r)
    return tl::unexpected(to_api_error(r.error()));
  const JsonValue* logout = body->get("logout_devices");
  if (!logout || !logout->is_bool() || logout->as_bool()) {
    auto list = accounts.list_devices(options.server_name, ctx.localpart);
    if (!list) return tl::unexpected(to_api_error(list.error()));
    std::vector<std::string> others;
    for (const auto& d : *list)
      if (d.device_id != ctx.device_id) others.push_back(d.device_id);
    if (!others.empty())
      if (auto d = delete_devices_of(ctx.user_id, ctx.localpart, others); !d) return tl::unexpected(d.error());
  }
  log.info("matrix.password_changed", {{"user", ctx.user_id}});
  return std::string("{}");
}

// POST /account/deactivate (UIA m.login.password): deletes the hearth account (XMPP too)
// through accounts/, then the account-deleted hook makes the user leave its rooms and
// drops its Matrix data, as `hearthctl user del` does.
ApiResult<std::string> MatrixService::Impl::deactivate(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  if (auto a = require_password(ctx, *body); !a) return tl::unexpected(a.error());
  if (auto r = accounts.delete_user(options.server_name, ctx.localpart); !r)
    return tl::unexpected(to_api_error(r.error()));
  std::string bare = ctx.localpart + "@" + options.server_name;
  std::function<Result<void>(const std::string&)> hook;
  {
    std::lock_guard lock(mu);
    hook = account_deleted;
  }
  // A failure here is swept at the next start (migrate() forgets deleted accounts).
  if (hook) {
    if (auto r = hook(bare); !r) log.warn("matrix.deactivate_cleanup_failed", {{"user", ctx.user_id}, {"error", r.error().describe()}});
  }
  log.info("matrix.deactivated", {{"user", ctx.user_id}});
  return std::string(R"({"id_server_unbind_result":"no-support"})");
}

}  // namespace hearth::matrix
