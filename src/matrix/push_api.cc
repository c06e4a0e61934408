// Push rules (GET/PUT/DELETE /pushrules/...) and pushers (GET /pushers, POST /pushers/set).
// A user's rules are stored as their difference to the defaults (push_rules.h); every
// change also writes the whole rule set as the m.push_rules account data, so that clients
// learn it from /sync.
#include <fmt/format.h>

#include "core/json.h"
#include "matrix/push_gateway.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

Result<PushRuleSet> MatrixService::Impl::load_push_rules(store::Transaction& tx, const std::string& user_id) {
  auto row = tx.query_one("SELECT json FROM matrix_push_rules WHERE user_id = ?", {user_id});
  if (!row) return tl::unexpected(row.error());
  JsonValue stored;
  if (*row)
    if (auto v = parse_json((*row)->text(0), {std::size_t{1} << 22, 64}); v) stored = std::move(*v);
  return PushRuleSet::for_user(user_id, stored);
}

ApiResult<std::string> MatrixService::Impl::pushrules(Ctx& ctx) {
  auto set = store.read_sync([&](store::Transaction& tx) { return load_push_rules(tx, ctx.user_id); });
  if (!set) return tl::unexpected(to_api_error(set.error()));
  JsonValue all = set->client_json();
  if (ctx.http.path.ends_with("/global/")) return canonical_json(*all.get("global"));
  return canonical_json(all);
}

ApiResult<std::string> MatrixService::Impl::pushrule_get(Ctx& ctx) {
  if (ctx.params[0] != "global") return api_error(400, "M_INVALID_PARAM", "Only the global scope exists");
  auto kind = parse_push_rule_kind(ctx.params[1]);
  if (!kind) return api_error(400, "M_INVALID_PARAM", "Unknown push rule kind");
  auto set = store.read_sync([&](store::Transaction& tx) { return load_push_rules(tx, ctx.user_id); });
  if (!set) return tl::unexpected(to_api_error(set.error()));
  // GET /pushrules/global/{kind}/ (trailing slash, no rule id): that kind's rules, as
  // Synapse answers and SyTest expects.
  if (ctx.params[2].empty() && ctx.http.path.ends_with("/")) {
    JsonValue all = set->client_json();
    const JsonValue* rules = all.get("global") ? all.get("global")->get(ctx.params[1]) : nullptr;
    return rules ? canonical_json(*rules) : std::string("[]");
  }
  auto rule = set->rule(*kind, ctx.params[2]);
  if (!rule) return api_error(404, "M_NOT_FOUND", "No such push rule");
  if (ctx.http.path.ends_with("/enabled")) return fmt::format("{{\"enabled\":{}}}", rule->get("enabled")->as_bool());
  if (ctx.http.path.ends_with("/actions")) return "{\"actions\":" + canonical_json(*rule->get("actions")) + "}";
  return canonical_json(*rule);
}

ApiResult<std::string> MatrixService::Impl::pushrule_change(Ctx& ctx) {
  if (ctx.params[0] != "global") return api_error(400, "M_INVALID_PARAM", "Only the global scope exists");
  auto kind = parse_push_rule_kind(ctx.params[1]);
  if (!kind) return api_error(400, "M_INVALID_PARAM", "Unknown push rule kind");
  const std::string& rule_id = ctx.params[2];
  JsonValue body = JsonValue::object();
  if (ctx.http.method != "DELETE") {
    auto b = ctx.body(options.max_event_bytes);
    if (!b) return tl::unexpected(b.error());
    body = std::move(*b);
  }
  bool enabled_path = ctx.http.path.ends_with("/enabled"), actions_path = ctx.http.path.ends_with("/actions");
  if (enabled_path && (!body.get("enabled") || !body.get("enabled")->is_bool()))
    return api_error(400, "M_BAD_JSON", "enabled must be a boolean");
  if (actions_path && !body.get("actions")) return api_error(400, "M_BAD_JSON", "actions is required");
  std::string before = ctx.query_param("before"), after = ctx.query_param("after");
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto set = load_push_rules(tx, ctx.user_id);
    if (!set) return tl::unexpected(set.error());
    Result<void> changed = ok();
    if (ctx.http.method == "DELETE") changed = set->remove(*kind, rule_id);
    else if (enabled_path) changed = set->set_enabled(*kind, rule_id, body.get("enabled")->as_bool());
    else if (actions_path) changed = set->set_actions(*kind, rule_id, *body.get("actions"));
    else changed = set->put(*kind, rule_id, body, before, after);
    if (!changed) return tl::unexpected(changed.error());
    auto up = tx.exec("INSERT INTO matrix_push_rules(user_id, json) VALUES (?, ?) "
                      "ON CONFLICT(user_id) DO UPDATE SET json = excluded.json",
                      {ctx.user_id, canonical_json(set->stored())});
    if (!up) return tl::unexpected(up.error());
    auto pos = tx.exec(
        "INSERT INTO matrix_positions(name, value) VALUES ('account_data', 1) "
        "ON CONFLICT(name) DO UPDATE SET value = value + 1");
    if (!pos) return tl::unexpected(pos.error());
    auto ad = tx.exec(
        "INSERT INTO matrix_account_data(user_id, room_id, type, content, position) "
        "VALUES (?, '', 'm.push_rules', ?, (SELECT value FROM matrix_positions WHERE name = 'account_data')) "
        "ON CONFLICT(user_id, room_id, type) DO UPDATE SET content = excluded.content, position = excluded.position",
        {ctx.user_id, canonical_json(set->client_json())});
    if (!ad) return tl::unexpected(ad.error());
    return true;
  });
  if (!r) {
    if (r.error().code == Errc::not_found) return api_error(404, "M_NOT_FOUND", r.error().message);
    if (r.error().code == Errc::invalid_argument) return api_error(400, "M_INVALID_PARAM", r.error().message);
    if (r.error().code == Errc::resource_exhausted) return api_error(400, "M_LIMIT_EXCEEDED", r.error().message);
    return tl::unexpected(to_api_error(r.error()));
  }
  notify(0, {ctx.user_id});
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::pushers_get(Ctx& ctx) {
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
    std::string out;
    auto q = tx.query("SELECT json FROM matrix_pushers WHERE user_id = ? ORDER BY app_id, pushkey", {ctx.user_id},
                      [&](const store::Row& row) { out += (out.empty() ? "" : ",") + std::string(row.text(0)); });
    if (!q) return tl::unexpected(q.error());
    return out;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  return "{\"pushers\":[" + *r + "]}";
}

ApiResult<std::string> MatrixService::Impl::pushers_set(Ctx& ctx) {
  auto body = ctx.body(options.max_event_bytes);
  if (!body) return tl::unexpected(body.error());
  auto text = [&](std::string_view key, std::size_t max) -> std::optional<std::string> {
    const JsonValue* v = body->get(key);
    if (!v || !v->is_string() || v->as_string().size() > max) return std::nullopt;
    return v->as_string();
  };
  auto app_id = text("app_id", 64), pushkey = text("pushkey", 512);
  if (!app_id || !pushkey || app_id->empty() || pushkey->empty())
    return api_error(400, "M_MISSING_PARAM", "app_id (at most 64 bytes) and pushkey (at most 512 bytes) are required");
  const JsonValue* kind = body->get("kind");
  bool remove = kind && kind->is_null();
  JsonValue pusher = JsonValue::object();
  if (!remove) {
    if (!kind || !kind->is_string() || (kind->as_string() != "http" && kind->as_string() != "email"))
      return api_error(400, "M_INVALID_PARAM", "kind must be http, email or null");
    for (auto key : {"app_display_name", "device_display_name", "lang"})
      if (!text(key, 256)) return api_error(400, "M_MISSING_PARAM", fmt::format("{} is required", key));
    const JsonValue* data = body->get("data");
    if (!data || !data->is_object()) return api_error(400, "M_MISSING_PARAM", "data is required");
    if (kind->as_string() == "http") {
      if (auto url = parse_gateway_url(data->string_at("url")); !url)
        return api_error(400, "M_INVALID_PARAM", url.error().message);
    }
    for (auto key : {"app_id", "pushkey", "kind", "app_display_name", "device_display_name", "lang", "data",
                     "profile_tag"})
      if (const JsonValue* v = body->get(key)) pusher.set(key, *v);
  }
  const JsonValue* append = body->get("append");
  bool keep_others = append && append->is_bool() && append->as_bool();
  std::string json = canonical_json(pusher);
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    if (remove) {
      auto d = tx.exec("DELETE FROM matrix_pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                       {ctx.user_id, *app_id, *pushkey});
      if (!d) return tl::unexpected(d.error());
      return true;
    }
    // Without append, this pushkey under this app id belongs to this user only.
    if (!keep_others) {
      auto d = tx.exec("DELETE FROM matrix_pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ?",
                       {*app_id, *pushkey, ctx.user_id});
      if (!d) return tl::unexpected(d.error());
    }
    auto n = tx.query_one("SELECT COUNT(*) FROM matrix_pushers WHERE user_id = ?", {ctx.user_id});
    if (!n) return tl::unexpected(n.error());
    auto exists = tx.query_one("SELECT 1 FROM matrix_pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                               {ctx.user_id, *app_id, *pushkey});
    if (!exists) return tl::unexpected(exists.error());
    if (!*exists && *n && (*n)->integer(0) >= options.max_pushers_per_user)
      return fail(Errc::resource_exhausted, "Too many pushers");
    auto up = tx.exec(
        "INSERT INTO matrix_pushers(user_id, app_id, pushkey, json, updated_ms) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(app_id, pushkey, user_id) DO UPDATE SET json = excluded.json, updated_ms = excluded.updated_ms",
        {ctx.user_id, *app_id, *pushkey, json, clock.now_ms()});
    if (!up) return tl::unexpected(up.error());
    return true;
  });
  if (!r) {
    if (r.error().code == Errc::resource_exhausted) return api_error(400, "M_LIMIT_EXCEEDED", r.error().message);
    return tl::unexpected(to_api_error(r.error()));
  }
  return std::string("{}");
}

}  // namespace hearth::matrix
