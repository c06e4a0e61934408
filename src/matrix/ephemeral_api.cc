// Typing notifications (in memory) and read receipts / read markers (stored), delivered in
// /sync's per-room "ephemeral" section.
#include <fmt/format.h>

#include "core/json.h"
#include "matrix/auth_rules.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

std::int64_t TypingRooms::serial() {
  std::lock_guard lock(mu_);
  return serial_;
}

std::int64_t TypingRooms::set(const std::string& room_id, const std::string& user_id, bool typing,
                              std::int64_t expires_ms) {
  std::lock_guard lock(mu_);
  Room& room = rooms_[room_id];
  bool was = room.typers.count(user_id) > 0;
  if (typing) {
    room.typers[user_id] = expires_ms;
  } else {
    room.typers.erase(user_id);
  }
  if (was == typing) return 0;  // a refresh of the timeout is not a change
  serial_ = std::max(serial_ + 1, clock_.now_ms());
  room.serial = serial_;
  return serial_;
}

std::vector<std::string> TypingRooms::expire(std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  std::vector<std::string> changed;
  for (auto it = rooms_.begin(); it != rooms_.end();) {
    bool any = false;
    for (auto t = it->second.typers.begin(); t != it->second.typers.end();) {
      if (t->second <= now_ms) {
        t = it->second.typers.erase(t);
        any = true;
      } else {
        ++t;
      }
    }
    if (any) {
      serial_ = std::max(serial_ + 1, now_ms);
      it->second.serial = serial_;
      changed.push_back(it->first);
    }
    // Rooms nobody types in are kept until their last change is older than a minute
    // (so a sync that is behind still sees "nobody types" once).
    if (it->second.typers.empty() && serial_ - it->second.serial > 60'000) {
      it = rooms_.erase(it);
    } else {
      ++it;
    }
  }
  return changed;
}

std::optional<std::vector<std::string>> TypingRooms::changed(const std::string& room_id, std::int64_t since) {
  std::lock_guard lock(mu_);
  auto it = rooms_.find(room_id);
  if (it == rooms_.end() || (since >= 0 && it->second.serial <= since)) return std::nullopt;
  std::vector<std::string> users;
  for (const auto& [user, expiry] : it->second.typers) users.push_back(user);
  return users;
}

void MatrixService::Impl::expire_typing() {
  auto rooms_changed = typing.expire(clock.now_ms());
  if (!rooms_changed.empty()) notify(0, std::move(rooms_changed));
}

ApiResult<std::string> MatrixService::Impl::typing_put(Ctx& ctx) {
  if (ctx.params[1] != ctx.user_id) return api_error(403, "M_FORBIDDEN", "Cannot set typing for other users");
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* typing_flag = body->get("typing");
  if (!typing_flag || !typing_flag->is_bool()) return api_error(400, "M_BAD_JSON", "typing must be true or false");
  const std::string room_id = ctx.params[0];
  auto m = store.read_sync([&](store::Transaction& tx) { return rooms.membership(tx, room_id, ctx.user_id); });
  if (!m) return tl::unexpected(to_api_error(m.error()));
  if (!*m || **m != "join") return api_error(403, "M_FORBIDDEN", "You are not in this room");
  std::int64_t timeout = 30000;
  if (const JsonValue* t = body->get("timeout"); t && t->is_int()) timeout = std::clamp<std::int64_t>(t->as_int(), 1000, 120000);
  std::int64_t serial = typing.set(room_id, ctx.user_id, typing_flag->as_bool(), clock.now_ms() + timeout);
  if (typing_flag->as_bool()) {
    std::weak_ptr<Impl> weak = weak_from_this();
    run_after(std::chrono::milliseconds(timeout + 50), [weak] {
      if (auto self = weak.lock()) self->expire_typing();
    });
  }
  if (serial) {
    notify(0, {room_id});
    JsonValue content = JsonValue::object();
    content.set("room_id", JsonValue::string(room_id));
    content.set("user_id", JsonValue::string(ctx.user_id));
    content.set("typing", JsonValue::boolean(typing_flag->as_bool()));
    federation_edu(room_id, "m.typing", content);
  }
  return std::string("{}");
}

ApiResult<void> MatrixService::Impl::store_receipt(const std::string& room_id, const std::string& user_id,
                                                   const std::string& type, const std::string& event_id,
                                                   const std::string& thread_id, bool federate) {
  std::int64_t now = clock.now_ms();
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto m = rooms.membership(tx, room_id, user_id);
    if (!m) return tl::unexpected(m.error());
    if (!*m || **m != "join") return fail(Errc::permission_denied, "You are not in this room");
    auto e = rooms.event(tx, event_id);
    if (!e) return tl::unexpected(e.error());
    if (!*e || (*e)->room_id != room_id) return fail(Errc::not_found, "Event not found");
    if (!thread_id.empty()) {
      // The event must be in that thread: the root or a reply ("main": in no thread).
      auto row = tx.query_one("SELECT parent_id FROM matrix_relations WHERE event_id = ? AND rel_type = 'm.thread'",
                              {event_id});
      if (!row) return tl::unexpected(row.error());
      std::string thread = *row ? std::string((*row)->text(0)) : std::string("main");
      if (thread != thread_id && !(thread == "main" && event_id == thread_id))
        return fail(Errc::invalid_argument, "The event is not in the thread thread_id names");
    }
    // Positions come from a counter bumped inside the write, so a reader's snapshot
    // never sees a later position without every earlier one.
    auto pos = tx.exec(
        "INSERT INTO matrix_positions(name, value) VALUES ('receipts', 1) "
        "ON CONFLICT(name) DO UPDATE SET value = value + 1");
    if (!pos) return tl::unexpected(pos.error());
    auto up = tx.exec(
        "INSERT INTO matrix_receipts(room_id, user_id, type, thread_id, event_id, ts, serial) "
        "VALUES (?,?,?,?,?,?,(SELECT value FROM matrix_positions WHERE name = 'receipts')) "
        "ON CONFLICT(room_id, user_id, type, thread_id) DO UPDATE SET event_id = excluded.event_id, "
        "ts = excluded.ts, serial = excluded.serial",
        {room_id, user_id, type, thread_id, event_id, now});
    if (!up) return tl::unexpected(up.error());
    return true;
  });
  if (!r) {
    if (r.error().code == Errc::not_found) return api_error(404, "M_NOT_FOUND", r.error().message);
    if (r.error().code == Errc::invalid_argument) return api_error(400, "M_INVALID_PARAM", r.error().message);
    return tl::unexpected(to_api_error(r.error()));
  }
  push_receipt(user_id);
  // A private receipt concerns only its owner's syncs.
  notify(0, {type == "m.read.private" ? user_id : room_id});
  if (federate && type == "m.read") {
    JsonValue receipt = JsonValue::object();
    receipt.set("event_ids", JsonValue::array({JsonValue::string(event_id)}));
    JsonValue data = JsonValue::object();
    data.set("ts", JsonValue::integer(now));
    receipt.set("data", std::move(data));
    JsonValue users = JsonValue::object();
    users.set(user_id, std::move(receipt));
    JsonValue by_type = JsonValue::object();
    by_type.set("m.read", std::move(users));
    JsonValue content = JsonValue::object();
    content.set(room_id, std::move(by_type));
    federation_edu(room_id, "m.receipt", content);
  }
  return {};
}

ApiResult<std::string> MatrixService::Impl::receipt(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const std::string& type = ctx.params[1];
  if (type == "m.fully_read") {
    ctx.http.body = fmt::format(R"({{"m.fully_read":{}}})", json_quote(ctx.params[2]));
    return read_markers(ctx);
  }
  if (type != "m.read" && type != "m.read.private") return api_error(400, "M_INVALID_PARAM", "Unknown receipt type");
  std::string thread_id;
  if (const JsonValue* t = body->get("thread_id")) {
    if (!t->is_string() || t->as_string().empty() || t->as_string().size() > 255 ||
        (t->as_string() != "main" && t->as_string()[0] != '$'))
      return api_error(400, "M_INVALID_PARAM", "thread_id must be \"main\" or a thread root's event id");
    thread_id = t->as_string();
  }
  if (auto r = store_receipt(ctx.params[0], ctx.user_id, type, ctx.params[2], thread_id); !r)
    return tl::unexpected(r.error());
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::read_markers(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const std::string room_id = ctx.params[0];
  for (auto type : {"m.read", "m.read.private"}) {
    std::string_view id = body->string_at(type);
    if (id.empty()) continue;
    if (auto r = store_receipt(room_id, ctx.user_id, type, std::string(id)); !r) return tl::unexpected(r.error());
  }
  if (std::string_view fully = body->string_at("m.fully_read"); !fully.empty()) {
    // The fully-read marker is room account data of type m.fully_read.
    std::string content = fmt::format(R"({{"event_id":{}}})", json_quote(fully));
    auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
      auto m = rooms.membership(tx, room_id, ctx.user_id);
      if (!m) return tl::unexpected(m.error());
      if (!*m || **m != "join") return fail(Errc::permission_denied, "You are not in this room");
      auto up = upsert_account_data(tx, ctx.user_id, room_id, "m.fully_read", content);
      if (!up) return tl::unexpected(up.error());
      return true;
    });
    if (!r) return tl::unexpected(to_api_error(r.error()));
    notify(0, {ctx.user_id});
  }
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::presence_put(Ctx& ctx) {
  if (ctx.params[0] != ctx.user_id) return api_error(403, "M_FORBIDDEN", "Cannot set other users' presence");
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  std::string_view state = body->string_at("presence");
  if (state != "online" && state != "offline" && state != "unavailable")
    return api_error(400, "M_INVALID_PARAM", "presence must be online, offline or unavailable");
  const JsonValue* msg = body->get("status_msg");
  if (msg && !msg->is_null() && (!msg->is_string() || msg->as_string().size() > 1024))
    return api_error(400, "M_INVALID_PARAM", "status_msg must be a string of at most 1024 bytes");
  if (!set_presence(ctx.user_id, state, msg && msg->is_string() ? std::optional<std::string>(msg->as_string()) : std::string()))
    return api_error(503, "M_UNKNOWN", "Too many presences");
  return std::string("{}");
}

bool MatrixService::Impl::set_presence(const std::string& user_id, std::string_view state,
                                       std::optional<std::string> status_msg) {
  {
    std::lock_guard lock(presence_mu);
    if (presence.size() > 1'000'000 && !presence.count(user_id)) return false;
    Presence& p = presence[user_id];
    if (!status_msg && p.state == state) return true;  // /sync's set_presence: only changes count
    p.state = std::string(state);
    if (status_msg) p.status_msg = std::move(*status_msg);
    p.last_active_ms = clock.now_ms();
    presence_serial = std::max(presence_serial + 1, p.last_active_ms);
    p.serial = presence_serial;
  }
  // Wake the syncs of everyone sharing a room (their /sync `presence` section).
  auto keys = store.read_sync(
      [&](store::Transaction& tx) -> Result<std::vector<std::string>> { return joined_rooms_and_self(tx, user_id); });
  if (keys) notify(0, std::move(*keys));
  return true;
}

ApiResult<std::string> MatrixService::Impl::presence_get(Ctx& ctx) {
  const std::string& user = ctx.params[0];
  if (user.size() < 4 || user[0] != '@' || server_of(user) != options.server_name ||
      !accounts.get_user(options.server_name, user.substr(1, user.find(':') - 1)))
    return api_error(404, "M_NOT_FOUND", "Unknown user");
  Presence p;
  {
    std::lock_guard lock(presence_mu);
    if (auto it = presence.find(user); it != presence.end()) p = it->second;
  }
  JsonWriter w;
  w.begin_object().key("presence").value(p.state);
  if (p.last_active_ms > 0) {
    std::int64_t ago = std::max<std::int64_t>(0, clock.now_ms() - p.last_active_ms);
    w.key("last_active_ago").value(ago);
    w.key("currently_active").value(p.state == "online");
  }
  if (!p.status_msg.empty()) w.key("status_msg").value(p.status_msg);
  w.end_object();
  return w.take();
}

}  // namespace hearth::matrix
