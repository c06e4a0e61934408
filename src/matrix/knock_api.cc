// POST /knock/{roomIdOrAlias}: asking to join a room whose join rule is knock (or, in
// room versions 10 and 11, knock_restricted). The auth rules decide (auth_rules.cc); a
// member with the invite level accepts by inviting, one with the kick level rejects by
// kicking, and the knocker withdraws by leaving. Knocks reach the knocker's /sync in
// rooms.knock with the room's stripped state (sync_api.cc).
#include "core/json.h"
#include "matrix/auth_rules.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

ApiResult<std::string> MatrixService::Impl::knock(Ctx& ctx) {
  const std::string& target = ctx.params[0];
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* reason = body->get("reason");
  if (reason && !reason->is_string()) return api_error(400, "M_BAD_JSON", "reason must be a string");
  if (reason && reason->as_string().size() > 1024) return api_error(400, "M_INVALID_PARAM", "reason is limited to 1024 bytes");
  auto resolved = resolve_room_id(target);
  if (!resolved) return tl::unexpected(resolved.error());
  std::string room_id = std::move(*resolved);
  if (server_of(room_id) != options.server_name)
    return api_error(403, "M_FORBIDDEN", "Knocking on rooms of other servers is not supported");
  auto content = store.read_sync([&](store::Transaction& tx) { return member_content(tx, ctx.user_id, "knock"); });
  if (!content) return tl::unexpected(to_api_error(content.error()));
  if (reason && !reason->as_string().empty()) content->set("reason", *reason);
  auto r = append_one(room_id, NewEvent{"m.room.member", ctx.user_id, ctx.user_id, std::move(*content), {}, {}, {}});
  if (!r) return tl::unexpected(r.error());
  JsonWriter w;
  w.begin_object().key("room_id").value(room_id).end_object();
  return w.take();
}

}  // namespace hearth::matrix
