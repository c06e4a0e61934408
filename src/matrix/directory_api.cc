// Room aliases (delete, list), the public room directory, and /context.
#include <fmt/format.h>

#include "core/json.h"
#include "matrix/auth_rules.h"
#include "matrix/relations.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

namespace {

ApiError as_api(const Error& e) {
  if (e.code == Errc::permission_denied) return {403, "M_FORBIDDEN", e.message};
  if (e.code == Errc::not_found) return {404, "M_NOT_FOUND", e.message};
  return to_api_error(e);
}

}  // namespace

ApiResult<std::string> MatrixService::Impl::alias_delete(Ctx& ctx) {
  const std::string& alias = ctx.params[0];
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<std::string> {
    auto row = tx.query_one("SELECT room_id, creator FROM matrix_aliases WHERE alias = ?", {alias});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::not_found, "Room alias not found");
    std::string room_id((*row)->text(0));
    if ((*row)->text(1) != ctx.user_id) {
      // Someone else's alias: needs the level to change the room's canonical alias.
      auto room = rooms.load_room(tx, room_id);
      if (!room) return tl::unexpected(room.error());
      PowerLevels pl = power_levels_from([&](std::string_view t, std::string_view k) { return room->lookup(t, k); },
                                         room->version);
      auto m = rooms.membership(tx, room_id, ctx.user_id);
      if (!m) return tl::unexpected(m.error());
      if (!*m || **m != "join" || pl.user_level(ctx.user_id) < pl.event_level("m.room.canonical_alias", true))
        return fail(Errc::permission_denied, "Not allowed to remove this alias");
    }
    auto del = tx.exec("DELETE FROM matrix_aliases WHERE alias = ?", {alias});
    if (!del) return tl::unexpected(del.error());
    return room_id;
  });
  if (!r) return tl::unexpected(as_api(r.error()));
  // The room's canonical alias event stops naming the deleted alias (as the spec allows),
  // sent by the deleting user; without the level for it the event stays as it is.
  auto current = store.read_sync([&](store::Transaction& tx) { return rooms.state_event(tx, *r, "m.room.canonical_alias", ""); });
  if (current && *current) {
    JsonValue content = stored_event_content(**current);
    bool changed = false;
    if (content.string_at("alias") == alias) changed = content.erase("alias");
    if (JsonValue* alt = content.get("alt_aliases"); alt && alt->is_array()) {
      auto& items = alt->items();
      auto before = items.size();
      std::erase_if(items, [&](const JsonValue& v) { return v.is_string() && v.as_string() == alias; });
      changed = changed || items.size() != before;
    }
    if (changed) {
      auto sent = append_one(*r, NewEvent{"m.room.canonical_alias", std::string(), ctx.user_id, std::move(content), {}, {}, {}});
      if (!sent) log.info("matrix.canonical_alias_kept", {{"room", *r}, {"alias", alias}});
    }
  }
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::room_aliases(Ctx& ctx) {
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
    auto m = require_member(tx, ctx.params[0], ctx.user_id, true, true);
    if (!m) return fail(Errc::permission_denied, m.error().error);
    JsonWriter w;
    w.begin_object().key("aliases").begin_array();
    auto q = tx.query("SELECT alias FROM matrix_aliases WHERE room_id = ? ORDER BY alias", {ctx.params[0]},
                      [&](const store::Row& row) { w.value(row.text(0)); });
    if (!q) return tl::unexpected(q.error());
    w.end_array().end_object();
    return w.take();
  });
  if (!r) return tl::unexpected(as_api(r.error()));
  return *r;
}

ApiResult<std::string> MatrixService::Impl::context(Ctx& ctx) {
  int limit = 10;
  if (std::string l = ctx.query_param("limit"); !l.empty()) limit = std::clamp(std::atoi(l.c_str()), 0, options.max_timeline_limit);
  std::int64_t now = clock.now_ms();
  const std::string room_id = ctx.params[0];
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto m = require_member(tx, room_id, ctx.user_id, false, true);
    if (!m) return fail(Errc::permission_denied, m.error().error);
    auto e = rooms.event(tx, ctx.params[1]);
    if (!e) return tl::unexpected(e.error());
    if (!*e || (*e)->room_id != room_id) return std::optional<std::string>();
    auto max = rooms.max_stream(tx);
    if (!max) return tl::unexpected(max.error());
    std::int64_t upto = *max;
    if (*m != "join") {
      auto mine = rooms.state_event(tx, room_id, "m.room.member", ctx.user_id);
      if (!mine) return tl::unexpected(mine.error());
      if (*mine) upto = (*mine)->stream;
    }
    auto filter = VisibilityFilter::load(tx, room_id, ctx.user_id);
    if (!filter) return tl::unexpected(filter.error());
    if ((*e)->stream > upto || !filter->visible(**e)) return std::optional<std::string>();
    std::int64_t at = (*e)->stream;
    auto before = rooms.paginate(tx, room_id, at - 1, true, limit / 2 + limit % 2, upto);
    if (!before) return tl::unexpected(before.error());
    auto after = rooms.paginate(tx, room_id, at, false, limit / 2, upto);
    if (!after) return tl::unexpected(after.error());
    filter->apply(*before);
    filter->apply(*after);
    StoredEvent target = **e;
    if (auto b = bundle_aggregations(tx, target, ctx.user_id, now); !b) return tl::unexpected(b.error());
    if (auto b = bundle_aggregations(tx, *before, ctx.user_id, now); !b) return tl::unexpected(b.error());
    if (auto b = bundle_aggregations(tx, *after, ctx.user_id, now); !b) return tl::unexpected(b.error());
    auto state = rooms.current_state(tx, room_id);
    if (!state) return tl::unexpected(state.error());
    JsonWriter w;
    w.begin_object().key("event").raw(render_event(target, ctx.user_id, ctx.device_id, now));
    w.key("events_before").begin_array();
    for (const auto& b : *before) w.raw(render_event(b, ctx.user_id, ctx.device_id, now));
    w.end_array().key("events_after").begin_array();
    for (const auto& a : *after) w.raw(render_event(a, ctx.user_id, ctx.device_id, now));
    w.end_array();
    w.key("start").value(fmt::format("s{}", before->empty() ? at - 1 : before->back().stream - 1));
    w.key("end").value(fmt::format("s{}", after->empty() ? at : after->back().stream));
    w.key("state").begin_array();
    for (const auto& s : *state) w.raw(render_event(s, ctx.user_id, ctx.device_id, now));
    w.end_array().end_object();
    return std::optional<std::string>(w.take());
  });
  if (!r) return tl::unexpected(as_api(r.error()));
  if (!*r) return api_error(404, "M_NOT_FOUND", "Event not found");
  return **r;
}

ApiResult<std::string> MatrixService::Impl::visibility_get(Ctx& ctx) {
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<bool>> {
    auto room = tx.query_one("SELECT 1 FROM matrix_rooms WHERE room_id = ?", {ctx.params[0]});
    if (!room) return tl::unexpected(room.error());
    if (!*room) return std::optional<bool>();
    auto row = tx.query_one("SELECT 1 FROM matrix_directory WHERE room_id = ?", {ctx.params[0]});
    if (!row) return tl::unexpected(row.error());
    return std::optional<bool>(row->has_value());
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (!*r) return api_error(404, "M_NOT_FOUND", "Unknown room");
  return std::string(**r ? R"({"visibility":"public"})" : R"({"visibility":"private"})");
}

ApiResult<std::string> MatrixService::Impl::visibility_put(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  std::string_view visibility = body->string_at("visibility");
  if (visibility != "public" && visibility != "private")
    return api_error(400, "M_INVALID_PARAM", "visibility must be public or private");
  const std::string room_id = ctx.params[0];
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto room = rooms.load_room(tx, room_id);
    if (!room) return tl::unexpected(room.error());
    auto m = rooms.membership(tx, room_id, ctx.user_id);
    if (!m) return tl::unexpected(m.error());
    PowerLevels pl = power_levels_from([&](std::string_view t, std::string_view k) { return room->lookup(t, k); },
                                       room->version);
    // Publishing a room is a room-level decision: the level to change its canonical alias.
    if (!*m || **m != "join" || pl.user_level(ctx.user_id) < pl.event_level("m.room.canonical_alias", true))
      return fail(Errc::permission_denied, "Not allowed to change the room's directory visibility");
    auto q = visibility == "public"
                 ? tx.exec("INSERT INTO matrix_directory(room_id, added_ms) VALUES (?, ?) ON CONFLICT DO NOTHING",
                           {room_id, clock.now_ms()})
                 : tx.exec("DELETE FROM matrix_directory WHERE room_id = ?", {room_id});
    if (!q) return tl::unexpected(q.error());
    return true;
  });
  if (!r) return tl::unexpected(as_api(r.error()));
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::public_rooms(Ctx& ctx) {
  int limit = 50;
  std::int64_t offset = 0;
  std::string term;
  if (ctx.http.method == "POST") {
    auto body = ctx.body(options.max_body_bytes);
    if (!body) return tl::unexpected(body.error());
    if (const JsonValue* l = body->get("limit"); l && l->is_int()) limit = static_cast<int>(std::clamp<std::int64_t>(l->as_int(), 1, 500));
    if (std::string_view since = body->string_at("since"); since.size() > 1) offset = std::atoll(std::string(since.substr(1)).c_str());
    if (const JsonValue* f = body->get("filter"); f && f->is_object()) term = std::string(f->string_at("generic_search_term"));
    if (std::string_view server = body->string_at("server"); !server.empty() && server != options.server_name)
      return api_error(403, "M_FORBIDDEN", "Federation is not supported yet");
  } else {
    if (std::string l = ctx.query_param("limit"); !l.empty()) limit = std::clamp(std::atoi(l.c_str()), 1, 500);
    if (std::string since = ctx.query_param("since"); since.size() > 1) offset = std::atoll(since.c_str() + 1);
  }
  for (auto& c : term) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
    std::vector<std::string> ids;
    auto q = tx.query("SELECT room_id FROM matrix_directory ORDER BY added_ms, room_id", {},
                      [&](const store::Row& row) { ids.emplace_back(row.text(0)); });
    if (!q) return tl::unexpected(q.error());
    std::vector<std::string> chunk;
    std::int64_t matched = 0;
    for (const auto& id : ids) {
      JsonWriter w;
      w.begin_object().key("room_id").value(id);
      std::string haystack;
      auto field = [&](const char* type, const char* key, const char* out) -> Result<void> {
        auto e = rooms.state_event(tx, id, type, "");
        if (!e) return tl::unexpected(e.error());
        if (!*e) return ok();
        JsonValue c = stored_event_content(**e);
        if (const JsonValue* v = c.get(key); v && v->is_string()) {
          w.key(out).value(v->as_string());
          haystack += v->as_string() + "\n";
        }
        return ok();
      };
      for (auto [type, key, out] : {std::tuple{"m.room.name", "name", "name"}, {"m.room.topic", "topic", "topic"},
                                    {"m.room.canonical_alias", "alias", "canonical_alias"},
                                    {"m.room.avatar", "url", "avatar_url"}, {"m.room.join_rules", "join_rule", "join_rule"}})
        if (auto f = field(type, key, out); !f) return tl::unexpected(f.error());
      for (auto& c : haystack) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (!term.empty() && haystack.find(term) == std::string::npos) continue;
      auto joined = tx.query_one("SELECT COUNT(*) FROM matrix_members WHERE room_id = ? AND membership = 'join'", {id});
      if (!joined) return tl::unexpected(joined.error());
      auto hv = rooms.state_event(tx, id, "m.room.history_visibility", "");
      if (!hv) return tl::unexpected(hv.error());
      bool world_readable = *hv && stored_event_content(**hv).string_at("history_visibility") == "world_readable";
      auto ga = rooms.state_event(tx, id, "m.room.guest_access", "");
      if (!ga) return tl::unexpected(ga.error());
      bool guests = *ga && stored_event_content(**ga).string_at("guest_access") == "can_join";
      w.key("num_joined_members").value((*joined)->integer(0)).key("world_readable").value(world_readable);
      w.key("guest_can_join").value(guests).end_object();
      if (matched++ >= offset && static_cast<int>(chunk.size()) < limit) chunk.push_back(w.take());
    }
    std::string out = "{\"chunk\":[";
    for (std::size_t i = 0; i < chunk.size(); ++i) out += (i ? "," : "") + chunk[i];
    out += fmt::format("],\"total_room_count_estimate\":{}", matched);
    if (offset + static_cast<std::int64_t>(chunk.size()) < matched)
      out += fmt::format(",\"next_batch\":\"p{}\"", offset + static_cast<std::int64_t>(chunk.size()));
    if (offset > 0) out += fmt::format(",\"prev_batch\":\"p{}\"", std::max<std::int64_t>(0, offset - limit));
    return out + "}";
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  return *r;
}

}  // namespace hearth::matrix
