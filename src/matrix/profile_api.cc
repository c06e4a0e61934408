// Profiles (display name, avatar), account data (global and per room) and the device list.
#include <fmt/format.h>
#include <simdjson.h>

#include <map>

#include "core/json.h"
#include "matrix/auth_rules.h"
#include "matrix/e2e_store.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

namespace {

struct Profile {
  std::optional<std::string> displayname, avatar_url;
};

Result<Profile> read_profile(store::Transaction& tx, const std::string& user_id) {
  Profile p;
  auto row = tx.query_one("SELECT displayname, avatar_url FROM matrix_profiles WHERE user_id = ?", {user_id});
  if (!row) return tl::unexpected(row.error());
  if (*row) {
    if (!(*row)->is_null(0)) p.displayname = std::string((*row)->text(0));
    if (!(*row)->is_null(1)) p.avatar_url = std::string((*row)->text(1));
  } else {
    p.displayname = user_id.substr(1, user_id.find(':') - 1);  // default: the localpart
  }
  return p;
}

bool is_local_user_id(std::string_view id, std::string_view server) {
  return id.size() > 3 && id[0] == '@' && server_of(id) == server;
}


// Room tags live in the room's m.tag account data, {"tags": {name: content}}. A tag's
// `order` is a number in [0, 1], usually a fraction, which the canonical-JSON parser
// refuses: tag contents are kept as the client sent them (validated, minified).
std::optional<std::map<std::string, std::string>> parse_tags(std::string_view json) {
  std::map<std::string, std::string> out;
  if (json.empty()) return out;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(simdjson::padded_string(json)).get(doc) != simdjson::SUCCESS) return std::nullopt;
  simdjson::dom::object tags;
  if (doc["tags"].get(tags) != simdjson::SUCCESS) return out;
  for (auto field : tags) out[std::string(field.key)] = simdjson::minify(field.value);
  return out;
}

std::string tags_json(const std::map<std::string, std::string>& tags) {
  JsonWriter w;
  w.begin_object().key("tags").begin_object();
  for (const auto& [name, content] : tags) w.key(name).raw(content);
  w.end_object().end_object();
  return w.take();
}

}  // namespace

// Stores account data (global when room is "") at the next account-data position.
Result<void> upsert_account_data(store::Transaction& tx, const std::string& user_id, const std::string& room,
                                 std::string_view type, const std::string& content) {
  auto pos = tx.exec(
      "INSERT INTO matrix_positions(name, value) VALUES ('account_data', 1) "
      "ON CONFLICT(name) DO UPDATE SET value = value + 1");
  if (!pos) return tl::unexpected(pos.error());
  auto up = tx.exec(
      "INSERT INTO matrix_account_data(user_id, room_id, type, content, position) "
      "VALUES (?, ?, ?, ?, (SELECT value FROM matrix_positions WHERE name = 'account_data')) "
      "ON CONFLICT(user_id, room_id, type) DO UPDATE SET content = excluded.content, position = excluded.position",
      {user_id, room, std::string(type), content});
  if (!up) return tl::unexpected(up.error());
  return ok();
}

ApiResult<std::string> MatrixService::Impl::tags_get(Ctx& ctx) {
  if (ctx.params[0] != ctx.user_id) return api_error(403, "M_FORBIDDEN", "Cannot read other users' tags");
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
    auto row = tx.query_one("SELECT content FROM matrix_account_data WHERE user_id = ? AND room_id = ? AND type = 'm.tag'",
                            {ctx.user_id, ctx.params[1]});
    if (!row) return tl::unexpected(row.error());
    return *row ? std::string((*row)->text(0)) : std::string();
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  auto tags = parse_tags(*r);
  return tags_json(tags ? *tags : std::map<std::string, std::string>{});
}

ApiResult<std::string> MatrixService::Impl::tag_change(Ctx& ctx, bool remove) {
  if (ctx.params[0] != ctx.user_id) return api_error(403, "M_FORBIDDEN", "Cannot change other users' tags");
  const std::string room = ctx.params[1], tag = ctx.params[2];
  if (tag.empty() || tag.size() > 255) return api_error(400, "M_INVALID_PARAM", "Invalid tag");
  std::string content;
  if (!remove) {
    if (static_cast<std::int64_t>(ctx.http.body.size()) > options.max_event_bytes)
      return api_error(413, "M_TOO_LARGE", "Request body too large");
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    if (parser.parse(simdjson::padded_string(ctx.http.body)).get(doc) != simdjson::SUCCESS)
      return api_error(400, "M_NOT_JSON", "Content not JSON");
    if (!doc.is_object()) return api_error(400, "M_BAD_JSON", "The body must be a JSON object");
    if (auto order = doc["order"]; order.error() == simdjson::SUCCESS && !order.is_number())
      return api_error(400, "M_BAD_JSON", "order must be a number");
    content = simdjson::minify(doc);
  }
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto m = rooms.membership(tx, room, ctx.user_id);
    if (!m) return tl::unexpected(m.error());
    if (!*m) return fail(Errc::permission_denied, "You are not in this room");
    auto row = tx.query_one("SELECT content FROM matrix_account_data WHERE user_id = ? AND room_id = ? AND type = 'm.tag'",
                            {ctx.user_id, room});
    if (!row) return tl::unexpected(row.error());
    auto tags = parse_tags(*row ? (*row)->text(0) : std::string_view());
    if (!tags) tags.emplace();
    if (remove) {
      if (!tags->erase(tag)) return false;
    } else {
      (*tags)[tag] = content;
    }
    auto up = upsert_account_data(tx, ctx.user_id, room, "m.tag", tags_json(*tags));
    if (!up) return tl::unexpected(up.error());
    return true;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (*r) notify(0, {ctx.user_id});
  return std::string("{}");
}

Result<JsonValue> MatrixService::Impl::member_content(store::Transaction& tx, const std::string& user_id,
                                                      std::string_view membership) {
  auto p = read_profile(tx, user_id);
  if (!p) return tl::unexpected(p.error());
  JsonValue c = JsonValue::object();
  c.set("membership", JsonValue::string(std::string(membership)));
  if (p->displayname) c.set("displayname", JsonValue::string(*p->displayname));
  if (p->avatar_url) c.set("avatar_url", JsonValue::string(*p->avatar_url));
  return c;
}

ApiResult<std::string> MatrixService::Impl::profile_get(Ctx& ctx) {
  const std::string& user = ctx.params[0];
  if (!is_local_user_id(user, options.server_name) ||
      !accounts.get_user(options.server_name, user.substr(1, user.find(':') - 1)))
    return api_error(404, "M_NOT_FOUND", "Profile not found");
  auto p = store.read_sync([&](store::Transaction& tx) { return read_profile(tx, user); });
  if (!p) return tl::unexpected(to_api_error(p.error()));
  JsonWriter w;
  w.begin_object();
  if (p->displayname) w.key("displayname").value(*p->displayname);
  if (p->avatar_url) w.key("avatar_url").value(*p->avatar_url);
  w.end_object();
  return w.take();
}

ApiResult<std::string> MatrixService::Impl::profile_field_get(Ctx& ctx) {
  bool name = ctx.http.path.ends_with("/displayname");
  auto all = profile_get(ctx);
  if (!all) return all;
  auto v = parse_json(*all);
  const char* key = name ? "displayname" : "avatar_url";
  const JsonValue* field = v ? v->get(key) : nullptr;
  if (!field) return api_error(404, "M_NOT_FOUND", "Profile field not set");
  return fmt::format("{{\"{}\":{}}}", key, canonical_json(*field));
}

ApiResult<std::string> MatrixService::Impl::profile_field_put(Ctx& ctx) {
  if (ctx.params[0] != ctx.user_id) return api_error(403, "M_FORBIDDEN", "Cannot change other users' profiles");
  bool name = ctx.http.path.ends_with("/displayname");
  const char* field = name ? "displayname" : "avatar_url";
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* value = body->get(field);
  if (!value || !value->is_string() || value->as_string().size() > 256)
    return api_error(400, "M_BAD_JSON", fmt::format("{} must be a string of at most 256 bytes", field));
  std::vector<std::string> rooms_touched;
  std::int64_t last = 0;
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto current = read_profile(tx, ctx.user_id);
    if (!current) return tl::unexpected(current.error());
    if (name) current->displayname = value->as_string();
    else current->avatar_url = value->as_string();
    auto up = tx.exec(
        "INSERT INTO matrix_profiles(user_id, displayname, avatar_url) VALUES (?, ?, ?) "
        "ON CONFLICT(user_id) DO UPDATE SET displayname = excluded.displayname, avatar_url = excluded.avatar_url",
        {ctx.user_id, current->displayname, current->avatar_url});
    if (!up) return tl::unexpected(up.error());
    // Joined rooms get an updated member event (spec: "Events on change of profile information").
    auto memberships = rooms.memberships_of(tx, ctx.user_id);
    if (!memberships) return tl::unexpected(memberships.error());
    for (const auto& m : *memberships) {
      if (m.membership != "join") continue;
      auto room = rooms.load_room(tx, m.room_id);
      if (!room) return tl::unexpected(room.error());
      auto content = member_content(tx, ctx.user_id, "join");
      if (!content) return tl::unexpected(content.error());
      auto a = rooms.append(tx, *room, NewEvent{"m.room.member", ctx.user_id, ctx.user_id, std::move(*content), {}, {}, {}},
                            clock.now_ms());
      if (!a) return tl::unexpected(a.error());
      rooms_touched.push_back(m.room_id);
      last = a->stream;
    }
    return true;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (!rooms_touched.empty()) notify(last, std::move(rooms_touched));
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::account_data_get(Ctx& ctx) {
  if (ctx.params[0] != ctx.user_id) return api_error(403, "M_FORBIDDEN", "Cannot read other users' account data");
  std::string room = ctx.params.size() == 3 ? ctx.params[1] : "";
  const std::string& type = ctx.params.back();
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto row = tx.query_one("SELECT content FROM matrix_account_data WHERE user_id = ? AND room_id = ? AND type = ?",
                            {ctx.user_id, room, type});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<std::string>();
    return std::optional<std::string>(std::string((*row)->text(0)));
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (!*r) return api_error(404, "M_NOT_FOUND", "Account data not found");
  return **r;
}

ApiResult<std::string> MatrixService::Impl::account_data_put(Ctx& ctx) {
  if (ctx.params[0] != ctx.user_id) return api_error(403, "M_FORBIDDEN", "Cannot change other users' account data");
  std::string room = ctx.params.size() == 3 ? ctx.params[1] : "";
  const std::string& type = ctx.params.back();
  if (type.empty()) return api_error(400, "M_INVALID_PARAM", "Missing type");
  if (type == "m.fully_read" || type == "m.push_rules")
    return api_error(405, "M_BAD_JSON", "This type is managed by the server");
  auto body = ctx.body(options.max_event_bytes);
  if (!body) return tl::unexpected(body.error());
  std::string content = canonical_json(*body);
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    if (!room.empty()) {
      auto m = rooms.membership(tx, room, ctx.user_id);
      if (!m) return tl::unexpected(m.error());
      if (!*m) return fail(Errc::permission_denied, "You are not in this room");
    }
    auto up = upsert_account_data(tx, ctx.user_id, room, type, content);
    if (!up) return tl::unexpected(up.error());
    return true;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  std::vector<std::string> keys{ctx.user_id};
  notify(0, std::move(keys));
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::devices(Ctx& ctx) {
  auto list = accounts.list_devices(options.server_name, ctx.localpart);
  if (!list) return tl::unexpected(to_api_error(list.error()));
  JsonWriter w;
  w.begin_object().key("devices").begin_array();
  for (const auto& d : *list) {
    w.begin_object().key("device_id").value(d.device_id);
    if (!d.display_name.empty()) w.key("display_name").value(d.display_name);
    w.end_object();
  }
  w.end_array().end_object();
  return w.take();
}

ApiResult<std::string> MatrixService::Impl::device(Ctx& ctx) {
  auto list = accounts.list_devices(options.server_name, ctx.localpart);
  if (!list) return tl::unexpected(to_api_error(list.error()));
  for (const auto& d : *list) {
    if (d.device_id != ctx.params[0]) continue;
    JsonWriter w;
    w.begin_object().key("device_id").value(d.device_id);
    if (!d.display_name.empty()) w.key("display_name").value(d.display_name);
    w.end_object();
    return w.take();
  }
  return api_error(404, "M_NOT_FOUND", "No such device");
}

ApiResult<std::string> MatrixService::Impl::device_put(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* name = body->get("display_name");
  if (!name) return std::string("{}");  // nothing to change
  if (!name->is_string() || name->as_string().size() > 256)
    return api_error(400, "M_INVALID_PARAM", "display_name must be a string of at most 256 bytes");
  if (auto r = accounts.rename_device(options.server_name, ctx.localpart, ctx.params[0], name->as_string()); !r) {
    if (r.error().code == Errc::not_found) return api_error(404, "M_NOT_FOUND", "No such device");
    return tl::unexpected(to_api_error(r.error()));
  }
  // keys/query shows the name (unsigned.device_display_name): others' device lists change.
  auto keys = store.write_sync([&](store::Transaction& tx) -> Result<std::vector<std::string>> {
    if (auto b = e2e::bump_device_list(tx, ctx.user_id); !b) return tl::unexpected(b.error());
    return joined_rooms_and_self(tx, ctx.user_id);
  });
  if (!keys) return tl::unexpected(to_api_error(keys.error()));
  notify(0, std::move(*keys));
  return std::string("{}");
}

// The user directory: users who share a joined room with the searcher, or who are joined
// to a room published in the room directory, whose user id or display name contains the
// search term (case-insensitive for ASCII). Ordered by user id; `limited` when more match.
ApiResult<std::string> MatrixService::Impl::user_directory_search(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* term = body->get("search_term");
  if (!term || !term->is_string() || term->as_string().size() > 256)
    return api_error(400, "M_INVALID_PARAM", "search_term must be a string of at most 256 bytes");
  std::int64_t limit = 10;
  if (const JsonValue* l = body->get("limit")) {
    if (!l->is_int() || l->as_int() < 1) return api_error(400, "M_INVALID_PARAM", "limit must be a positive integer");
    limit = std::min<std::int64_t>(l->as_int(), 50);
  }
  std::string like = "%";
  for (char c : term->as_string()) {
    if (c == '%' || c == '_' || c == '\\') like += '\\';
    like += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  like += '%';
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::pair<std::string, bool>> {
    std::string results;
    std::int64_t n = 0;
    auto q = tx.query(
        "SELECT u.user_id, p.displayname, p.avatar_url FROM ("
        "  SELECT DISTINCT m.user_id FROM matrix_members m WHERE m.membership = 'join' AND ("
        "    m.room_id IN (SELECT room_id FROM matrix_members WHERE user_id = ? AND membership = 'join')"
        "    OR m.room_id IN (SELECT room_id FROM matrix_directory))) u "
        "LEFT JOIN matrix_profiles p ON p.user_id = u.user_id "
        "WHERE lower(u.user_id) LIKE ? ESCAPE '\\' OR lower(COALESCE(p.displayname, '')) LIKE ? ESCAPE '\\' "
        "ORDER BY u.user_id LIMIT ?",
        {ctx.user_id, like, like, limit + 1}, [&](const store::Row& row) {
          if (++n > limit) return;
          JsonWriter w;
          std::string user(row.text(0));
          w.begin_object().key("user_id").value(user);
          if (!row.is_null(1)) w.key("display_name").value(row.text(1));
          else if (row.is_null(2)) w.key("display_name").value(user.substr(1, user.find(':') - 1));
          if (!row.is_null(2)) w.key("avatar_url").value(row.text(2));
          w.end_object();
          results += (results.empty() ? "" : ",") + w.take();
        });
    if (!q) return tl::unexpected(q.error());
    return std::pair{results, n > limit};
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  return fmt::format("{{\"limited\":{},\"results\":[{}]}}", r->second, r->first);
}

}  // namespace hearth::matrix
