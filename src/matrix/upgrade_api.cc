// POST /rooms/{roomId}/upgrade on room_upgrade.h: the tombstone and restricted power
// levels in the old room, the new room with its predecessor and the transferred state,
// local aliases and the directory entry moved, all in one write job.
#include <fmt/format.h>

#include "core/json.h"
#include "core/random.h"
#include "matrix/room_upgrade.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

ApiResult<std::string> MatrixService::Impl::upgrade_room(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* v = body->get("new_version");
  if (!v || !v->is_string()) return api_error(400, "M_BAD_JSON", "new_version must be a string");
  auto version = parse_room_version(v->as_string());
  if (!version) return api_error(400, "M_UNSUPPORTED_ROOM_VERSION", "Supported room versions: 10, 11");
  const std::string old_id = ctx.params[0], me = ctx.user_id, version_id = v->as_string();
  const std::string new_id = fmt::format("!{}:{}", random_token(18), options.server_name);
  std::int64_t now = clock.now_ms();
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    auto m = rooms.membership(tx, old_id, me);
    if (!m) return tl::unexpected(m.error());
    if (!*m || **m != "join") return fail(Errc::permission_denied, "You are not in this room");
    auto old_room = rooms.load_room(tx, old_id);
    if (!old_room) return tl::unexpected(old_room.error());
    auto state = rooms.current_state(tx, old_id);
    if (!state) return tl::unexpected(state.error());
    std::vector<StateEventContent> old_state;
    JsonValue old_create = JsonValue::object(), old_levels = JsonValue::object();
    bool had_levels = false, had_alias = false;
    for (const auto& e : *state) {
      if (!e.state_key) continue;
      JsonValue c = stored_event_content(e);
      if (e.type == "m.room.create") old_create = c;
      if (e.type == "m.room.power_levels" && e.state_key->empty()) {
        old_levels = c;
        had_levels = true;
      }
      if (e.type == "m.room.canonical_alias" && e.state_key->empty() && !c.members().empty()) had_alias = true;
      old_state.push_back({e.type, *e.state_key, std::move(c)});
    }
    if (!had_levels) {  // the spec's defaults: the creator alone has 100
      JsonValue users = JsonValue::object();
      users.set(me, JsonValue::integer(100));
      old_levels.set("users", std::move(users));
    }
    std::int64_t stream = 0;
    auto add = [&](RoomAppender& room, std::string type, std::string key, JsonValue content) -> Result<std::string> {
      auto a = rooms.append(tx, room, NewEvent{std::move(type), std::move(key), me, std::move(content), {}, {}, {}}, now);
      if (!a) return tl::unexpected(a.error());
      stream = a->stream;
      return a->event_id;
    };
    // The old room: tombstone (needs its power level: this is the permission check).
    JsonValue tombstone = JsonValue::object();
    tombstone.set("body", JsonValue::string("This room has been replaced"));
    tombstone.set("replacement_room", JsonValue::string(new_id));
    auto tombstone_id = add(*old_room, "m.room.tombstone", "", std::move(tombstone));
    if (!tombstone_id) return tl::unexpected(tombstone_id.error());

    RoomAppender room = rooms.new_room(new_id, *version);
    auto created = add(room, "m.room.create", "",
                       upgraded_create_content(old_create, *version, version_id, old_id, *tombstone_id, me));
    if (!created) return tl::unexpected(created.error());
    auto join = member_content(tx, me, "join");
    if (!join) return tl::unexpected(join.error());
    if (auto a = add(room, "m.room.member", me, std::move(*join)); !a) return tl::unexpected(a.error());
    auto bootstrap = bootstrap_power_levels(old_levels, me);
    if (auto a = add(room, "m.room.power_levels", "", bootstrap ? *bootstrap : old_levels); !a)
      return tl::unexpected(a.error());
    auto moved = tx.exec("UPDATE matrix_aliases SET room_id = ? WHERE room_id = ?", {new_id, old_id});
    if (!moved) return tl::unexpected(moved.error());
    for (auto& s : transferable_state(old_state))
      if (auto a = add(room, s.type, s.state_key, std::move(s.content)); !a) return tl::unexpected(a.error());
    if (bootstrap)
      if (auto a = add(room, "m.room.power_levels", "", old_levels); !a) return tl::unexpected(a.error());
    auto listed = tx.query_one("SELECT 1 FROM matrix_directory WHERE room_id = ?", {old_id});
    if (!listed) return tl::unexpected(listed.error());
    if (*listed) {
      auto d = tx.exec("UPDATE matrix_directory SET room_id = ?, added_ms = ? WHERE room_id = ?", {new_id, now, old_id});
      if (!d) return tl::unexpected(d.error());
    }

    // The old room: its aliases now point to the new room, and members may no longer talk.
    if (had_alias)
      if (auto a = add(*old_room, "m.room.canonical_alias", "", JsonValue::object()); !a) return tl::unexpected(a.error());
    if (auto a = add(*old_room, "m.room.power_levels", "", restricted_power_levels(old_levels)); !a)
      return tl::unexpected(a.error());
    return stream;
  });
  if (!r) {
    const Error& e = r.error();
    if (e.code == Errc::permission_denied) return api_error(403, "M_FORBIDDEN", e.message);
    if (e.code == Errc::not_found) return api_error(404, "M_NOT_FOUND", "Unknown room");
    if (e.code == Errc::invalid_argument) return api_error(400, "M_INVALID_PARAM", e.message);
    return tl::unexpected(to_api_error(e));
  }
  notify(*r, {old_id, new_id, me});
  log.info("matrix.room_upgraded", {{"room", old_id}, {"replacement", new_id}, {"version", version_id}, {"by", me}});
  JsonWriter w;
  w.begin_object().key("replacement_room").value(new_id).end_object();
  return w.take();
}

}  // namespace hearth::matrix
