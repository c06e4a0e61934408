// Room endpoints: createRoom, joining and membership changes, sending messages and state,
// reading state, history (/messages), members, events, aliases.
#include <algorithm>

#include <fmt/format.h>

#include "core/json.h"
#include "core/random.h"
#include "matrix/auth_rules.h"
#include "matrix/relations.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

namespace {

ApiError store_error(const Error& e) {
  if (e.code == Errc::permission_denied) return {403, "M_FORBIDDEN", e.message};
  if (e.code == Errc::resource_exhausted && e.message == kEventTooLarge) return {413, "M_TOO_LARGE", "Event too large"};
  if (e.code == Errc::invalid_argument) return {400, "M_INVALID_PARAM", e.message};
  if (e.code == Errc::not_found) return {404, "M_NOT_FOUND", "Unknown room"};
  return to_api_error(e);
}

JsonValue content_of(const StoredEvent& e) {
  auto v = parse_json(e.client_json, {std::size_t{1} << 24, 128});
  if (!v) return JsonValue::object();
  const JsonValue* c = v->get("content");
  return c ? *c : JsonValue::object();
}

ApiResult<std::int64_t> parse_token(std::string_view t) {
  if (t.size() < 2 || t[0] != 's') return api_error(400, "M_INVALID_PARAM", "Invalid pagination token");
  std::int64_t n = 0;
  t.remove_prefix(1);
  if (auto underscore = t.find('_'); underscore != std::string_view::npos) t = t.substr(0, underscore);  // sync's "sN_M"
  bool negative = !t.empty() && t[0] == '-';  // history backfilled over federation lies below 0
  if (negative) t.remove_prefix(1);
  if (t.empty()) return api_error(400, "M_INVALID_PARAM", "Invalid pagination token");
  for (char c : t) {
    if (c < '0' || c > '9' || n > kMaxSafeInteger / 10) return api_error(400, "M_INVALID_PARAM", "Invalid pagination token");
    n = n * 10 + (c - '0');
  }
  return negative ? -n : n;
}

JsonValue default_power_levels(const std::string& creator) {
  JsonValue pl = JsonValue::object();
  JsonValue users = JsonValue::object();
  users.set(creator, JsonValue::integer(100));
  pl.set("users", std::move(users));
  pl.set("users_default", JsonValue::integer(0));
  JsonValue events = JsonValue::object();
  for (auto [type, level] : std::initializer_list<std::pair<const char*, int>>{
           {"m.room.name", 50}, {"m.room.power_levels", 100}, {"m.room.history_visibility", 100},
           {"m.room.canonical_alias", 50}, {"m.room.avatar", 50}, {"m.room.tombstone", 100},
           {"m.room.server_acl", 100}, {"m.room.encryption", 100}, {"m.room.topic", 50}})
    events.set(type, JsonValue::integer(level));
  pl.set("events", std::move(events));
  pl.set("events_default", JsonValue::integer(0));
  pl.set("state_default", JsonValue::integer(50));
  pl.set("ban", JsonValue::integer(50));
  pl.set("kick", JsonValue::integer(50));
  pl.set("redact", JsonValue::integer(50));
  pl.set("invite", JsonValue::integer(0));
  return pl;
}

JsonValue content_with(std::initializer_list<std::pair<const char*, JsonValue>> members) {
  JsonValue c = JsonValue::object();
  for (const auto& [k, v] : members) c.set(k, v);
  return c;
}

}  // namespace

ApiResult<std::string> MatrixService::Impl::require_member(store::Transaction& tx, const std::string& room_id,
                                                           const std::string& user, bool must_be_joined,
                                                           bool world_readable_ok) {
  auto m = rooms.membership(tx, room_id, user);
  if (!m) return tl::unexpected(to_api_error(m.error()));
  if (!*m || (must_be_joined && **m != "join") || (!must_be_joined && **m != "join" && **m != "leave" && **m != "ban")) {
    if (world_readable_ok) {
      auto hv = rooms.state_event(tx, room_id, "m.room.history_visibility", "");
      if (!hv) return tl::unexpected(to_api_error(hv.error()));
      if (*hv && content_of(**hv).string_at("history_visibility") == "world_readable") return std::string();
    }
    return api_error(403, "M_FORBIDDEN", "You are not in this room");
  }
  return **m;
}

ApiResult<std::string> MatrixService::Impl::create_room(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  std::string version_id = options.default_room_version;
  if (const JsonValue* v = body->get("room_version")) {
    if (!v->is_string() || !parse_room_version(v->as_string()))
      return api_error(400, "M_UNSUPPORTED_ROOM_VERSION", "Supported room versions: 10, 11");
    version_id = v->as_string();
  }
  RoomVersion version = *parse_room_version(version_id);
  std::string preset(body->string_at("preset"));
  if (preset.empty()) preset = body->string_at("visibility") == "public" ? "public_chat" : "private_chat";
  if (preset != "public_chat" && preset != "private_chat" && preset != "trusted_private_chat")
    return api_error(400, "M_INVALID_PARAM", "Unknown preset");
  std::vector<std::string> invites;
  if (const JsonValue* inv = body->get("invite")) {
    if (!inv->is_array()) return api_error(400, "M_INVALID_PARAM", "invite must be a list of user ids");
    for (const auto& u : inv->items()) {
      if (!u.is_string() || u.as_string().size() < 3 || u.as_string()[0] != '@')
        return api_error(400, "M_INVALID_PARAM", "invite must be a list of user ids");
      if (server_of(u.as_string()) != options.server_name)
        return api_error(403, "M_FORBIDDEN", "Federation is not supported yet");
      std::string lp = u.as_string().substr(1, u.as_string().find(':') - 1);
      if (!accounts.get_user(options.server_name, lp)) return api_error(404, "M_NOT_FOUND", "Unknown user " + u.as_string());
      if (u.as_string() == ctx.user_id || std::find(invites.begin(), invites.end(), u.as_string()) != invites.end())
        continue;  // the creator joins anyway; each invitee once
      invites.push_back(u.as_string());
    }
  }
  std::optional<std::string> alias;
  if (std::string_view name = body->string_at("room_alias_name"); !name.empty()) {
    if (name.find_first_of(":# \t") != std::string_view::npos) return api_error(400, "M_INVALID_PARAM", "Invalid alias name");
    alias = fmt::format("#{}:{}", name, options.server_name);
  }
  const JsonValue* initial_state = body->get("initial_state");
  if (initial_state && !initial_state->is_array()) return api_error(400, "M_INVALID_PARAM", "initial_state must be a list");
  const JsonValue* creation = body->get("creation_content");
  if (creation && !creation->is_object()) return api_error(400, "M_INVALID_PARAM", "creation_content must be an object");
  const JsonValue* pl_override = body->get("power_level_content_override");
  if (pl_override && !pl_override->is_object())
    return api_error(400, "M_INVALID_PARAM", "power_level_content_override must be an object");
  bool is_direct = body->get("is_direct") && body->get("is_direct")->is_bool() && body->get("is_direct")->as_bool();

  std::string room_id = fmt::format("!{}:{}", random_token(18), options.server_name);
  const std::string me = ctx.user_id;
  std::int64_t now = clock.now_ms();
  bool alias_taken = false;
  auto last = store.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    RoomAppender room = rooms.new_room(room_id, version);
    std::int64_t stream = 0;
    auto add = [&](std::string type, std::optional<std::string> key, JsonValue content) -> Result<void> {
      auto r = rooms.append(tx, room, NewEvent{std::move(type), std::move(key), me, std::move(content), {}, {}, {}}, now);
      if (!r) return tl::unexpected(r.error());
      stream = r->stream;
      return ok();
    };
    JsonValue create = creation ? *creation : JsonValue::object();
    create.set("room_version", JsonValue::string(version_id));
    if (version == RoomVersion::v10) create.set("creator", JsonValue::string(me));
    else create.erase("creator");
    if (auto r = add("m.room.create", "", std::move(create)); !r) return tl::unexpected(r.error());
    auto join = member_content(tx, me, "join");
    if (!join) return tl::unexpected(join.error());
    if (auto r = add("m.room.member", me, std::move(*join)); !r) return tl::unexpected(r.error());
    JsonValue pl = default_power_levels(me);
    if (preset == "trusted_private_chat")
      for (const auto& u : invites) pl.get("users")->set(u, JsonValue::integer(100));
    if (pl_override)
      for (const auto& [k, v] : pl_override->members()) pl.set(k, v);
    if (auto r = add("m.room.power_levels", "", std::move(pl)); !r) return tl::unexpected(r.error());
    if (alias) {
      auto ins = tx.exec("INSERT INTO matrix_aliases(alias, room_id, creator) VALUES (?, ?, ?)", {*alias, room_id, me});
      if (!ins) {
        if (ins.error().code == Errc::already_exists) alias_taken = true;
        return tl::unexpected(ins.error());
      }
      if (auto r = add("m.room.canonical_alias", "", content_with({{"alias", JsonValue::string(*alias)}})); !r)
        return tl::unexpected(r.error());
    }
    bool is_public = preset == "public_chat";
    if (auto r = add("m.room.join_rules", "", content_with({{"join_rule", JsonValue::string(is_public ? "public" : "invite")}}));
        !r)
      return tl::unexpected(r.error());
    if (auto r = add("m.room.history_visibility", "", content_with({{"history_visibility", JsonValue::string("shared")}}));
        !r)
      return tl::unexpected(r.error());
    if (auto r = add("m.room.guest_access", "",
                     content_with({{"guest_access", JsonValue::string(is_public ? "forbidden" : "can_join")}}));
        !r)
      return tl::unexpected(r.error());
    if (initial_state) {
      for (const auto& s : initial_state->items()) {
        const JsonValue* c = s.get("content");
        if (!s.is_object() || s.string_at("type").empty() || !c || !c->is_object())
          return fail(Errc::invalid_argument, "initial_state entries need type and content");
        if (auto r = add(std::string(s.string_at("type")), std::string(s.string_at("state_key")), *c); !r)
          return tl::unexpected(r.error());
      }
    }
    if (const JsonValue* name = body->get("name"); name && name->is_string())
      if (auto r = add("m.room.name", "", content_with({{"name", *name}})); !r) return tl::unexpected(r.error());
    if (const JsonValue* topic = body->get("topic"); topic && topic->is_string())
      if (auto r = add("m.room.topic", "", content_with({{"topic", *topic}})); !r) return tl::unexpected(r.error());
    if (body->string_at("visibility") == "public") {
      auto d = tx.exec("INSERT INTO matrix_directory(room_id, added_ms) VALUES (?, ?)", {room_id, now});
      if (!d) return tl::unexpected(d.error());
    }
    for (const auto& u : invites) {
      JsonValue c = content_with({{"membership", JsonValue::string("invite")}});
      if (is_direct) c.set("is_direct", JsonValue::boolean(true));
      if (auto r = add("m.room.member", u, std::move(c)); !r) return tl::unexpected(r.error());
    }
    return stream;
  });
  if (!last) {
    if (alias_taken) return api_error(400, "M_ROOM_IN_USE", "That room alias is taken");
    if (last.error().code == Errc::invalid_argument) return api_error(400, "M_INVALID_PARAM", last.error().message);
    return tl::unexpected(store_error(last.error()));
  }
  std::vector<std::string> keys = invites;
  keys.push_back(room_id);
  keys.push_back(me);
  notify(*last, std::move(keys));
  log.info("matrix.room_created", {{"room", room_id}, {"version", version_id}, {"creator", me}});
  JsonWriter w;
  w.begin_object().key("room_id").value(room_id).end_object();
  return w.take();
}

ApiResult<AppendedEvent> MatrixService::Impl::append_one(const std::string& room_id, NewEvent ev) {
  std::string target = ev.type == "m.room.member" && ev.state_key ? *ev.state_key : std::string();
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<AppendedEvent> {
    if (!ev.txn_id.empty()) {
      auto prior = rooms.find_txn(tx, room_id, ev.sender, ev.txn_device, ev.txn_id);
      if (!prior) return tl::unexpected(prior.error());
      if (*prior) return AppendedEvent{**prior, 0};
    }
    auto room = rooms.load_room(tx, room_id);
    if (!room) return tl::unexpected(room.error());
    if (ev.state_key && (ev.type != "m.room.member" || ev.content.string_at("membership") == "join")) {
      // Setting state to what it already is (same sender, same content), joining twice:
      // the current event is the answer, no new event. (Leaving twice stays an error.)
      auto current = rooms.state_event(tx, room_id, ev.type, *ev.state_key);
      if (!current) return tl::unexpected(current.error());
      if (*current && (*current)->sender == ev.sender && canonical_json(content_of(**current)) == canonical_json(ev.content))
        return AppendedEvent{(*current)->event_id, 0};
    }
    return rooms.append(tx, *room, std::move(ev), clock.now_ms());
  });
  if (!r) return tl::unexpected(store_error(r.error()));
  if (r->stream > 0) {
    std::vector<std::string> keys{room_id};
    if (!target.empty()) keys.push_back(target);
    notify(r->stream, std::move(keys));
  }
  return *r;
}

namespace {
std::string event_id_reply(const std::string& id) {
  JsonWriter w;
  w.begin_object().key("event_id").value(id).end_object();
  return w.take();
}
}  // namespace

ApiResult<std::string> MatrixService::Impl::resolve_room_id(const std::string& room_or_alias) {
  if (!room_or_alias.empty() && room_or_alias[0] == '!') return room_or_alias;
  if (room_or_alias.empty() || room_or_alias[0] != '#')
    return api_error(400, "M_INVALID_PARAM", "Expected a room id or alias");
  auto found = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto row = tx.query_one("SELECT room_id FROM matrix_aliases WHERE alias = ?", {room_or_alias});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<std::string>();
    return std::optional<std::string>(std::string((*row)->text(0)));
  });
  if (!found) return tl::unexpected(to_api_error(found.error()));
  if (!*found) return api_error(404, "M_NOT_FOUND", "Unknown room alias");
  return **found;
}

ApiResult<std::string> MatrixService::Impl::join(Ctx& ctx, const std::string& room_or_alias) {
  auto resolved = resolve_room_id(room_or_alias);
  if (!resolved) return tl::unexpected(resolved.error());
  std::string room_id = std::move(*resolved);
  if (server_of(room_id) != options.server_name) {
    auto known = store.read_sync([&](store::Transaction& tx) -> Result<bool> {
      auto row = tx.query_one("SELECT 1 FROM matrix_rooms WHERE room_id = ?", {room_id});
      if (!row) return tl::unexpected(row.error());
      return bool(*row);
    });
    if (!known) return tl::unexpected(to_api_error(known.error()));
    if (!*known) {
      if (!federation) return api_error(403, "M_FORBIDDEN", "Federation is not enabled");
      return join_remote(ctx, room_id);
    }
  }
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  auto content = store.read_sync([&](store::Transaction& tx) { return member_content(tx, ctx.user_id, "join"); });
  if (!content) return tl::unexpected(to_api_error(content.error()));
  if (std::string_view reason = body->string_at("reason"); !reason.empty())
    content->set("reason", JsonValue::string(std::string(reason)));
  auto r = append_one(room_id, NewEvent{"m.room.member", ctx.user_id, ctx.user_id, std::move(*content), {}, {}, {}});
  if (!r) return tl::unexpected(r.error());
  JsonWriter w;
  w.begin_object().key("room_id").value(room_id).end_object();
  return w.take();
}

ApiResult<std::string> MatrixService::Impl::membership_change(Ctx& ctx, const std::string& room_id,
                                                              std::string membership, bool target_in_body) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  std::string target = ctx.user_id;
  if (target_in_body) {
    target = std::string(body->string_at("user_id"));
    if (target.empty() || target[0] != '@') return api_error(400, "M_MISSING_PARAM", "user_id is required");
  }
  if (membership == "invite" && server_of(target) != options.server_name) {
    if (!federation) return api_error(403, "M_FORBIDDEN", "Federation is not enabled");
    return invite_remote(ctx, room_id, target, std::string(body->string_at("reason")));
  }
  if (membership == "leave" && !target_in_body && federation) {
    auto known = store.read_sync([&](store::Transaction& tx) -> Result<bool> {
      auto row = tx.query_one("SELECT 1 FROM matrix_rooms WHERE room_id = ?", {room_id});
      if (!row) return tl::unexpected(row.error());
      return bool(*row);
    });
    if (!known) return tl::unexpected(to_api_error(known.error()));
    if (!*known) return reject_remote_invite(ctx, room_id);
  }
  if (membership == "invite") {
    if (!accounts.get_user(options.server_name, target.substr(1, target.find(':') - 1)))
      return api_error(404, "M_NOT_FOUND", "Unknown user");
  }
  bool unban = membership == "unban";
  bool kick = membership == "leave" && target_in_body;
  if (unban || kick) {
    // The auth rules let a moderator turn a ban into "leave": only /unban may do that; a
    // kick applies to members, invitees and knockers only.
    membership = "leave";
    auto m = store.read_sync([&](store::Transaction& tx) { return rooms.membership(tx, room_id, target); });
    if (!m) return tl::unexpected(to_api_error(m.error()));
    if (unban && (!*m || **m != "ban")) return api_error(403, "M_FORBIDDEN", "The user is not banned");
    if (kick && (!*m || (**m != "join" && **m != "invite" && **m != "knock")))
      return api_error(403, "M_FORBIDDEN", "The user is not in the room");
  }
  JsonValue content = content_with({{"membership", JsonValue::string(membership)}});
  if (std::string_view reason = body->string_at("reason"); !reason.empty())
    content.set("reason", JsonValue::string(std::string(reason)));
  auto r = append_one(room_id, NewEvent{"m.room.member", target, ctx.user_id, std::move(content), {}, {}, {}});
  if (!r) return tl::unexpected(r.error());
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::send_event(Ctx& ctx) {
  auto body = ctx.body(options.max_event_bytes);
  if (!body) return tl::unexpected(body.error());
  if (ctx.params[1].empty() || ctx.params[2].empty()) return api_error(400, "M_INVALID_PARAM", "Missing type or txnId");
  auto r = append_one(ctx.params[0],
                      NewEvent{ctx.params[1], std::nullopt, ctx.user_id, std::move(*body), ctx.device_id, ctx.params[2], {}});
  if (!r) return tl::unexpected(r.error());
  return event_id_reply(r->event_id);
}

ApiResult<std::string> MatrixService::Impl::redact(Ctx& ctx) {
  auto body = ctx.body(options.max_event_bytes);
  if (!body) return tl::unexpected(body.error());
  const std::string room_id = ctx.params[0], target = ctx.params[1];
  JsonValue content = JsonValue::object();
  if (std::string_view reason = body->string_at("reason"); !reason.empty())
    content.set("reason", JsonValue::string(std::string(reason)));
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<AppendedEvent> {
    auto prior = rooms.find_txn(tx, room_id, ctx.user_id, ctx.device_id, "redact:" + ctx.params[2]);
    if (!prior) return tl::unexpected(prior.error());
    if (*prior) return AppendedEvent{**prior, 0};
    auto room = rooms.load_room(tx, room_id);
    if (!room) return tl::unexpected(room.error());
    auto original = rooms.event(tx, target);
    if (!original) return tl::unexpected(original.error());
    if (!*original || (*original)->room_id != room_id) return fail(Errc::not_found, "Event not found");
    // Room versions 3+: the auth rules accept the redaction event by power level; it is
    // applied only when the redactor has the redact level or sent the original.
    PowerLevels pl = power_levels_from([&](std::string_view t, std::string_view k) { return room->lookup(t, k); },
                                       room->version);
    if ((*original)->sender != ctx.user_id && pl.user_level(ctx.user_id) < pl.named("redact"))
      return fail(Errc::permission_denied, "Not allowed to redact other people's events");
    JsonValue c = content;
    if (room->version == RoomVersion::v11) c.set("redacts", JsonValue::string(target));
    auto appended = rooms.append(tx, *room, NewEvent{"m.room.redaction", std::nullopt, ctx.user_id, std::move(c),
                                                     ctx.device_id, "redact:" + ctx.params[2], target},
                                 clock.now_ms());
    if (!appended) return tl::unexpected(appended.error());
    if (auto a = rooms.apply_redaction(tx, *room, target, appended->event_id); !a) return tl::unexpected(a.error());
    return appended;
  });
  if (!r) {
    if (r.error().code == Errc::not_found) return api_error(404, "M_NOT_FOUND", r.error().message);
    return tl::unexpected(store_error(r.error()));
  }
  if (r->stream > 0) notify(r->stream, {room_id});
  return event_id_reply(r->event_id);
}

ApiResult<void> MatrixService::Impl::check_canonical_alias(const std::string& room_id, const JsonValue& content) {
  // Spec (PUT /state, m.room.canonical_alias): aliases the event adds must be valid and
  // point to this room, else 400 M_INVALID_PARAM (syntax) or M_BAD_ALIAS; aliases already in the current event are not
  // checked again. Other servers' aliases cannot be resolved without federation: refused.
  auto aliases_of = [](const JsonValue& c) {
    std::vector<std::string> out;
    if (const JsonValue* a = c.get("alias"); a && a->is_string()) out.push_back(a->as_string());
    if (const JsonValue* alt = c.get("alt_aliases"); alt && alt->is_array())
      for (const auto& v : alt->items()) out.push_back(v.is_string() ? v.as_string() : std::string());
    return out;
  };
  if (const JsonValue* alt = content.get("alt_aliases"); alt && !alt->is_array())
    return api_error(400, "M_INVALID_PARAM", "alt_aliases must be a list");
  using Problem = std::pair<std::string, std::string>;  // errcode, message; empty: fine
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<Problem> {
    auto current = rooms.state_event(tx, room_id, "m.room.canonical_alias", "");
    if (!current) return tl::unexpected(current.error());
    std::vector<std::string> known;
    if (*current) known = aliases_of(content_of(**current));
    for (const auto& alias : aliases_of(content)) {
      if (std::find(known.begin(), known.end(), alias) != known.end()) continue;
      if (alias.size() < 3 || alias[0] != '#' || alias.find(':') == std::string::npos)
        return Problem{"M_INVALID_PARAM", "Invalid alias: " + alias};
      if (server_of(alias) != options.server_name) return Problem{"M_BAD_ALIAS", "Cannot check another server's alias: " + alias};
      auto row = tx.query_one("SELECT room_id FROM matrix_aliases WHERE alias = ?", {alias});
      if (!row) return tl::unexpected(row.error());
      if (!*row || (*row)->text(0) != room_id) return Problem{"M_BAD_ALIAS", "The alias does not point to this room: " + alias};
    }
    return Problem{};
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (!r->first.empty()) return api_error(400, r->first, r->second);
  return {};
}

ApiResult<std::string> MatrixService::Impl::put_state(Ctx& ctx) {
  auto body = ctx.body(options.max_event_bytes);
  if (!body) return tl::unexpected(body.error());
  std::string key = ctx.params.size() > 2 ? ctx.params[2] : "";
  if (ctx.params[1] == "m.room.member") {
    // Only a joined member's own event, staying "join" (a per-room display name or
    // avatar), may be set here; membership changes go through their endpoints.
    bool own_profile = key == ctx.user_id && body->string_at("membership") == "join";
    if (own_profile) {
      auto m = store.read_sync([&](store::Transaction& tx) { return rooms.membership(tx, ctx.params[0], ctx.user_id); });
      if (!m) return tl::unexpected(to_api_error(m.error()));
      own_profile = *m && **m == "join";
    }
    if (!own_profile) return api_error(403, "M_FORBIDDEN", "Use the membership endpoints (join, invite, leave, kick, ban)");
  }
  if (ctx.params[1] == "m.room.canonical_alias" && key.empty()) {
    if (auto checked = check_canonical_alias(ctx.params[0], *body); !checked) return tl::unexpected(checked.error());
  }
  auto r = append_one(ctx.params[0], NewEvent{ctx.params[1], key, ctx.user_id, std::move(*body), {}, {}, {}});
  if (!r) return tl::unexpected(r.error());
  return event_id_reply(r->event_id);
}

Result<std::vector<StoredEvent>> MatrixService::Impl::state_for(store::Transaction& tx, const std::string& room_id,
                                                               const std::string& user_id) {
  // Spec (GET /state): members and readers of world_readable rooms get the current state;
  // a user who left (or was banned) the state as it was when they left.
  auto m = require_member(tx, room_id, user_id, false, true);
  if (!m) return fail(Errc::permission_denied, m.error().error);
  if (*m != "leave" && *m != "ban") return rooms.current_state(tx, room_id);
  auto mine = rooms.state_event(tx, room_id, "m.room.member", user_id);
  if (!mine) return tl::unexpected(mine.error());
  if (!*mine) return fail(Errc::permission_denied, "You are not in this room");
  return rooms.state_at(tx, room_id, (*mine)->stream);
}

ApiResult<std::string> MatrixService::Impl::get_state(Ctx& ctx) {
  const std::string& room_id = ctx.params[0];
  auto render_events = [&](const std::vector<StoredEvent>& events) {
    std::int64_t now = clock.now_ms();
    std::string out = "[";
    for (const auto& e : events) out += (out.size() > 1 ? "," : "") + render_event(e, "", "", now);
    return out + "]";
  };
  auto render = [&]() -> Result<std::string> {
    full_state_computed.inc();
    return store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
      auto events = rooms.current_state(tx, room_id);
      if (!events) return tl::unexpected(events.error());
      return render_events(*events);
    });
  };
  // Members and readers of a world_readable room see the current state; a user who left
  // (or was banned) sees the state as it was then, rendered for that request alone.
  struct Access {
    std::int64_t depth = 0;
    std::optional<std::string> as_when_left;
  };
  auto access = store.read_sync([&](store::Transaction& tx) -> Result<Access> {
    auto m = require_member(tx, room_id, ctx.user_id, false, true);
    if (!m) return fail(Errc::permission_denied, m.error().error);
    if (*m == "leave" || *m == "ban") {
      auto events = state_for(tx, room_id, ctx.user_id);
      if (!events) return tl::unexpected(events.error());
      return Access{0, render_events(*events)};
    }
    auto row = tx.query_one("SELECT depth FROM matrix_rooms WHERE room_id = ?", {room_id});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::not_found, "Unknown room");
    return Access{(*row)->integer(0), std::nullopt};
  });
  if (!access) return tl::unexpected(store_error(access.error()));
  if (access->as_when_left) return *access->as_when_left;
  // The rendering is shared: every current member sees the same current state and state
  // events carry no transaction ids, so requests for the same room at the same depth share
  // one rendering (incident I15). A rendering that started later than a request's check may
  // show newer state, never older.
  if (!options.coalesce_requests) {
    auto r = render();
    if (!r) return tl::unexpected(store_error(r.error()));
    return *r;
  }
  bool computed = false;
  auto shared = full_state.get(room_id + "@" + std::to_string(access->depth), render, &computed);
  if (!shared) return tl::unexpected(store_error(shared.error()));
  if (!computed) full_state_shared.inc();
  return std::string(**shared);
}

ApiResult<std::string> MatrixService::Impl::get_state_event(Ctx& ctx) {
  std::string key = ctx.params.size() > 2 ? ctx.params[2] : "";
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<StoredEvent>> {
    auto m = require_member(tx, ctx.params[0], ctx.user_id, false, true);
    if (!m) return fail(Errc::permission_denied, m.error().error);
    if (*m != "leave" && *m != "ban") return rooms.state_event(tx, ctx.params[0], ctx.params[1], key);
    auto events = state_for(tx, ctx.params[0], ctx.user_id);
    if (!events) return tl::unexpected(events.error());
    for (auto& e : *events)
      if (e.type == ctx.params[1] && e.state_key == key) return std::optional<StoredEvent>(std::move(e));
    return std::optional<StoredEvent>();
  });
  if (!r) return tl::unexpected(store_error(r.error()));
  if (!*r) return api_error(404, "M_NOT_FOUND", "No such state event");
  // `format=event` (spec 1.16): the whole client-format event instead of its content.
  if (ctx.query_param("format") == "event") return render_event(**r, ctx.user_id, ctx.device_id, clock.now_ms());
  return canonical_json(content_of(**r));
}

ApiResult<std::string> MatrixService::Impl::messages(Ctx& ctx) {
  std::string dir = ctx.query_param("dir");
  if (dir.empty()) dir = "b";
  if (dir != "b" && dir != "f") return api_error(400, "M_INVALID_PARAM", "dir must be b or f");
  int limit = options.default_timeline_limit;
  if (std::string l = ctx.query_param("limit"); !l.empty()) {
    limit = std::atoi(l.c_str());
    if (limit <= 0) limit = options.default_timeline_limit;
  }
  limit = std::min(limit, options.max_timeline_limit);
  std::optional<std::int64_t> from;
  if (std::string f = ctx.query_param("from"); !f.empty()) {
    auto t = parse_token(f);
    if (!t) return tl::unexpected(t.error());
    from = *t;
  }
  std::int64_t now = clock.now_ms();
  const std::string room_id = ctx.params[0];
  std::size_t page_size = 0;  // before the visibility filter
  auto page = [&] { return store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
    auto m = require_member(tx, room_id, ctx.user_id, false, true);
    if (!m) return fail(Errc::permission_denied, m.error().error);
    auto max = rooms.max_stream(tx);
    if (!max) return tl::unexpected(max.error());
    std::int64_t upto = *max;
    if (*m != "join") {  // a former member sees history up to when they left
      auto mine = rooms.state_event(tx, room_id, "m.room.member", ctx.user_id);
      if (!mine) return tl::unexpected(mine.error());
      if (*mine) upto = (*mine)->stream;
    }
    std::int64_t start = from ? *from : (dir == "b" ? upto : 0);
    if (dir == "b") start = std::min(start, upto);
    auto events = rooms.paginate(tx, room_id, start, dir == "b", limit, upto);
    if (!events) return tl::unexpected(events.error());
    auto filter = VisibilityFilter::load(tx, room_id, ctx.user_id);
    if (!filter) return tl::unexpected(filter.error());
    std::optional<std::int64_t> last;  // the page's end follows the unfiltered page
    if (!events->empty()) last = events->back().stream;
    page_size = events->size();
    filter->apply(*events);
    if (auto b = bundle_aggregations(tx, *events, ctx.user_id, now); !b) return tl::unexpected(b.error());
    JsonWriter w;
    w.begin_object().key("start").value(fmt::format("s{}", start)).key("chunk").begin_array();
    for (const auto& e : *events) w.raw(render_event(e, ctx.user_id, ctx.device_id, now));
    w.end_array();
    if (last) w.key("end").value(fmt::format("s{}", dir == "b" ? *last - 1 : *last));
    w.end_object();
    return w.take();
  }); };
  auto r = page();
  // The start of our copy of a remote room: older history comes from backfill.
  if (r && federation && dir == "b" && static_cast<int>(page_size) < limit)
    if (auto more = backfill_room(room_id, limit - static_cast<int>(page_size)); more && *more > 0) r = page();
  if (!r) return tl::unexpected(store_error(r.error()));
  return *r;
}

ApiResult<std::string> MatrixService::Impl::members(Ctx& ctx) {
  std::int64_t now = clock.now_ms();
  std::string want = ctx.query_param("membership"), not_want = ctx.query_param("not_membership");
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
    auto m = require_member(tx, ctx.params[0], ctx.user_id, false, true);
    if (!m) return fail(Errc::permission_denied, m.error().error);
    auto events = rooms.members(tx, ctx.params[0]);
    if (!events) return tl::unexpected(events.error());
    JsonWriter w;
    w.begin_object().key("chunk").begin_array();
    for (const auto& e : *events) {
      if (!want.empty() || !not_want.empty()) {
        std::string membership(content_of(e).string_at("membership"));
        if ((!want.empty() && membership != want) || (!not_want.empty() && membership == not_want)) continue;
      }
      w.raw(render_event(e, ctx.user_id, ctx.device_id, now));
    }
    w.end_array().end_object();
    return w.take();
  });
  if (!r) return tl::unexpected(store_error(r.error()));
  return *r;
}

ApiResult<std::string> MatrixService::Impl::joined_members(Ctx& ctx) {
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
    auto m = require_member(tx, ctx.params[0], ctx.user_id, true, true);
    if (!m) return fail(Errc::permission_denied, m.error().error);
    auto events = rooms.members(tx, ctx.params[0]);
    if (!events) return tl::unexpected(events.error());
    JsonWriter w;
    w.begin_object().key("joined").begin_object();
    for (const auto& e : *events) {
      JsonValue c = content_of(e);
      if (c.string_at("membership") != "join" || !e.state_key) continue;
      w.key(*e.state_key).begin_object();
      if (const JsonValue* d = c.get("displayname"); d && d->is_string()) w.key("display_name").value(d->as_string());
      if (const JsonValue* a = c.get("avatar_url"); a && a->is_string()) w.key("avatar_url").value(a->as_string());
      w.end_object();
    }
    w.end_object().end_object();
    return w.take();
  });
  if (!r) return tl::unexpected(store_error(r.error()));
  return *r;
}

ApiResult<std::string> MatrixService::Impl::joined_rooms(Ctx& ctx) {
  auto r = store.read_sync([&](store::Transaction& tx) { return rooms.memberships_of(tx, ctx.user_id); });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  JsonWriter w;
  w.begin_object().key("joined_rooms").begin_array();
  for (const auto& m : *r)
    if (m.membership == "join") w.value(m.room_id);
  w.end_array().end_object();
  return w.take();
}

ApiResult<std::string> MatrixService::Impl::get_event(Ctx& ctx) {
  std::int64_t now = clock.now_ms();
  // Spec: 404 when the event does not exist or the user may not see it (no 403: that
  // would confirm the event exists). History visibility decides, so non-members see the
  // events of world_readable rooms.
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto e = rooms.event(tx, ctx.params[1]);
    if (!e) return tl::unexpected(e.error());
    if (!*e || (*e)->room_id != ctx.params[0]) return std::optional<std::string>();
    auto filter = VisibilityFilter::load(tx, ctx.params[0], ctx.user_id);
    if (!filter) return tl::unexpected(filter.error());
    if (!filter->visible(**e)) return std::optional<std::string>();
    if (auto b = bundle_aggregations(tx, **e, ctx.user_id, now); !b) return tl::unexpected(b.error());
    return std::optional<std::string>(render_event(**e, ctx.user_id, ctx.device_id, now));
  });
  if (!r) return tl::unexpected(store_error(r.error()));
  if (!*r) return api_error(404, "M_NOT_FOUND", "Event not found");
  return **r;
}

ApiResult<std::string> MatrixService::Impl::alias_get(Ctx& ctx) {
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto row = tx.query_one("SELECT room_id FROM matrix_aliases WHERE alias = ?", {ctx.params[0]});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<std::string>();
    return std::optional<std::string>(std::string((*row)->text(0)));
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (!*r) return api_error(404, "M_NOT_FOUND", "Room alias not found");
  JsonWriter w;
  w.begin_object().key("room_id").value(**r).key("servers").begin_array().value(options.server_name).end_array().end_object();
  return w.take();
}

ApiResult<std::string> MatrixService::Impl::alias_put(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  std::string room_id(body->string_at("room_id"));
  const std::string& alias = ctx.params[0];
  if (alias.size() < 3 || alias[0] != '#' || server_of(alias) != options.server_name)
    return api_error(400, "M_INVALID_PARAM", "The alias must be #name:" + options.server_name);
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto m = require_member(tx, room_id, ctx.user_id, true);
    if (!m) return fail(Errc::permission_denied, m.error().error);
    auto ins = tx.exec("INSERT INTO matrix_aliases(alias, room_id, creator) VALUES (?, ?, ?)", {alias, room_id, ctx.user_id});
    if (!ins) return tl::unexpected(ins.error());
    return true;
  });
  if (!r) {
    if (r.error().code == Errc::already_exists) return api_error(409, "M_UNKNOWN", "Room alias already exists");
    return tl::unexpected(store_error(r.error()));
  }
  return std::string("{}");
}

}  // namespace hearth::matrix
